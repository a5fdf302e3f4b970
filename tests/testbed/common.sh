# shellcheck shell=bash
# common.sh - settings and helpers shared by up.sh and down.sh (sourced, not run).
#
# The caller sets LOG_TAG before sourcing.

# --------------------------------------------------------------- settings
umask 022   # homes, configs and logs must be readable by the test user / daemons
TB=${CLUSTER_SLURM_TESTBED_DIR:-/var/tmp/cluster-slurm-testbed}
SSH_PORT=${CLUSTER_SLURM_TESTBED_SSH_PORT:-2222}
# Not 3306, so a system MariaDB (the package is installed) can never collide.
DB_PORT=${CLUSTER_SLURM_TESTBED_DB_PORT:-6821}
TUSER=slurmtest
# Fixed Slurm ports (all on 127.0.0.1): slurmctld, slurmd c1, slurmdbd, slurmd g1.
CTLD_PORT=6817 C1_PORT=6818 DBD_PORT=6819 G1_PORT=6820

log() { printf '[%s %s] %s\n' "${LOG_TAG:-testbed}" "$(date +%T.%3N)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
# The path ends up unquoted in slurm.conf, sshd_config, ssh_config and JSON:
# keep it to a safe character set instead of escaping it everywhere.
TB=$(realpath -m -- "$TB")
[[ "$TB" =~ ^/[A-Za-z0-9._/+-]+$ ]] && [ "$TB" != / ] \
  || die "CLUSTER_SLURM_TESTBED_DIR must be an absolute path of [A-Za-z0-9._/+-] (got '$TB')"
for p in "$SSH_PORT" "$DB_PORT"; do
  [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || die "bad port '$p'"
done

RUN=$TB/run LOGD=$TB/log ETC=$TB/etc
THOME=$TB/home/$TUSER
export SLURM_CONF=$ETC/slurm.conf
# Daemons get a clean environment: nothing of the caller's (pyenv PATH, RUST_*,
# ...) leaks into slurmd and from there into jobs.
DAEMON_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SLURM_CONF="$SLURM_CONF")

# --------------------------------------------------------------- processes
# running PID -> true while PID exists and is not a zombie. PID 1 on this
# machine kind is not a real init and reaps orphans only after 1-2 s.
running() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]
}
# daemon_pid NAME PIDFILE -> prints the PID if the file names a live process
# whose comm is NAME (guards against stale PID files and PID reuse).
daemon_pid() {
  local pid
  [ -s "$2" ] || return 1
  pid=$(head -c 32 "$2" 2>/dev/null | tr -d '[:space:]') || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && running "$pid" && echo "$pid"
}
alive() { daemon_pid "$1" "$2" >/dev/null; }
# wait_gone TIMEOUT_S PID... -> true once none of the PIDs is running
wait_gone() {
  local deadline=$(( $(date +%s) + $1 )) p; shift
  for p in "$@"; do
    while running "$p" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
  done
  for p in "$@"; do ! running "$p" || return 1; done
}
# stop_daemon NAME PIDFILE [TIMEOUT_S] -> TERM, then KILL after the timeout
stop_daemon() {
  local pid
  if pid=$(daemon_pid "$1" "$2"); then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "${3:-15}" "$pid"; then
      log "$1 (pid $pid) ignored SIGTERM for ${3:-15}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone 5 "$pid" || log "WARNING: $1 (pid $pid) still running"
    fi
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$2"
}

# take_lock -> serialise up.sh/down.sh runs. The lock fd (9) must never be
# inherited by a daemon, or the lock would outlive the script (see spawn in up.sh).
take_lock() {
  mkdir -p "$TB"
  exec 9>"$TB/.lock"
  flock -w 600 9 || die "another up.sh/down.sh holds $TB/.lock"
}
