#!/usr/bin/env bash
# up.sh - idempotent bring-up of a real single-machine SLURM cluster that is
# reachable over OpenSSH on 127.0.0.1, for cluster-slurm's end-to-end tests.
#
# Runs as root, needs no systemd. Starts (each tracked by a PID file in $TB/run):
#   munged (own key + socket), mariadbd + slurmdbd (so plain `sacct` works),
#   slurmctld, slurmd c1 (partition cpu, default), slurmd g1 (partition gpu,
#   one fake gres/gpu), sshd on 127.0.0.1:$SSH_PORT for the key-only user slurmtest.
# Re-running while everything is up is a cheap no-op (it still regenerates the
# client files and re-checks that the cluster answers).
#
# stdout carries exactly one line, the absolute path of the generated
# cluster-slurm.json, so `cluster-slurm --config "$(up.sh | tail -1)"` works.
# Everything else goes to stderr.
#
# Environment:
#   CLUSTER_SLURM_TESTBED_DIR       state directory (default /var/tmp/cluster-slurm-testbed)
#   CLUSTER_SLURM_TESTBED_SSH_PORT  sshd port on 127.0.0.1 (default 2222)
#   CLUSTER_SLURM_TESTBED_DB_PORT   MariaDB port on 127.0.0.1 (default 6821)
set -eEuo pipefail

# Keep the real stdout on fd 3 for the final line; everything else -> stderr.
exec 3>&1 1>&2

LOG_TAG=up
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"
T_START=$(date +%s%N)
trap 'rc=$?; log "ERROR: unexpected failure (exit $rc) at line $LINENO: $BASH_COMMAND"; exit $rc' ERR

elapsed_ms() { echo $(( ($(date +%s%N) - T_START) / 1000000 )); }

# fail_with_logs MSG LOGFILE... -> print MSG and the tail of each log, exit 1
fail_with_logs() {
  local f
  log "ERROR: $1"
  for f in "${@:2}"; do
    printf -- '----- last lines of %s -----\n' "$f" >&2
    tail -n 25 "$f" >&2 2>/dev/null || echo "(no such file)" >&2
  done
  exit 1
}

# wait_until TIMEOUT_S CMD... -> poll CMD every 0.1 s until it succeeds
wait_until() {
  local deadline=$(( $(date +%s%N) + $1 * 1000000000 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s%N)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# wait_ready TIMEOUT_S PIDFILE CMD... -> like wait_until, but give up at once
# if the daemon has written its PID file and that process is gone again.
wait_ready() {
  local deadline=$(( $(date +%s%N) + $1 * 1000000000 )) pidf=$2 pid; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ -s "$pidf" ]; then
      pid=$(tr -d '[:space:]' <"$pidf" 2>/dev/null || true)
      [[ "$pid" =~ ^[0-9]+$ ]] && ! running "$pid" && return 1
    fi
    [ "$(date +%s%N)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# check_port_free PORT WHAT -> die if anything listens on PORT. Only called
# when our daemon WHAT is not running, so a listener there is not ours.
check_port_free() {
  local who=""
  who=$(ss -Htlnp "sport = :$1" 2>/dev/null || true)
  if [ -n "$who" ] || (exec 4<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    die "port $1 (needed for $2) is already in use by a process that is not ours: ${who:-(unknown listener)}"
  fi
}

# spawn LOGFILE CMD... -> run a (self-daemonising) daemon with a clean
# environment and with none of our fds: an inherited stdout/stderr pipe would
# keep `$(up.sh)` or a test harness waiting forever, an inherited fd 9 would
# hold the up/down lock.
spawn() {
  local lf=$1; shift
  "${DAEMON_ENV[@]}" "$@" </dev/null >>"$lf" 2>&1 3>&- 9>&-
}

# put FILE MODE -> write stdin to FILE atomically; returns 0 if the content
# changed (or the file is new), 1 if it was already identical.
put() {
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  chmod "$2" "$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$1"
}

take_lock
install -d -m 755 "$TB" "$ETC" "$RUN" "$LOGD" "$TB/home" "$TB/state" \
  "$TB/spool" "$TB/spool/c1" "$TB/spool/g1" "$TB/mysql"
install -d -m 700 "$TB/munge" "$TB/ssh" "$TB/state/ctld"
log "testbed dir $TB (ssh port $SSH_PORT, db port $DB_PORT)"

# ================================================================ packages
PKGS=(slurmctld slurmd slurm-client munge openssh-server openssh-client
      slurmdbd mariadb-server
      python3)   # jobs run `python3` as slurmtest; root's pyenv is not visible to it
missing=()
for p in "${PKGS[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]} (log: $LOGD/apt.log)"
  t0=$(date +%s)
  # Without systemd the postinst scripts would run /etc/init.d/{munge,ssh,
  # mariadb,slurm*} and start system-wide daemons (e.g. an sshd on :22).
  # A policy-rc.d that exits 101 forbids that; add one only for this install.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    own_policy=1
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT   # also if we are interrupted
  fi
  apt_ok=1
  {
    # a failing update (one unreachable mirror) need not be fatal by itself
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -q || true
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
      --no-install-recommends "${missing[@]}"
  } >"$LOGD/apt.log" 2>&1 3>&- 9>&- || apt_ok=0
  if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  [ "$apt_ok" = 1 ] || fail_with_logs "apt-get install ${missing[*]} failed" "$LOGD/apt.log"
  log "installed in $(( $(date +%s) - t0 )) s"
fi

# Check every port we are about to take before starting anything, so a
# conflict neither leaves a half-started cluster behind nor touches the user.
alive mariadbd "$RUN/mysqld.pid" || check_port_free "$DB_PORT" mariadbd
alive slurmdbd "$RUN/slurmdbd.pid" || check_port_free "$DBD_PORT" slurmdbd
alive slurmctld "$RUN/slurmctld.pid" || check_port_free "$CTLD_PORT" slurmctld
alive slurmd "$RUN/slurmd-c1.pid" || check_port_free "$C1_PORT" "slurmd c1"
alive slurmd "$RUN/slurmd-g1.pid" || check_port_free "$G1_PORT" "slurmd g1"
alive sshd "$RUN/sshd.pid" || check_port_free "$SSH_PORT" sshd

# =============================================================== test user
install -d -m 755 /run/sshd   # sshd's compiled-in privilege separation directory
if ! getent passwd "$TUSER" >/dev/null; then
  # No -m: no /etc/skel rc files, so the non-interactive ssh shells stay fast.
  if getent group "$TUSER" >/dev/null; then grp=(-g "$TUSER"); else grp=(--user-group); fi
  useradd --no-create-home --home-dir "$THOME" --shell /bin/bash "${grp[@]}" "$TUSER"
  log "created user $TUSER"
fi
IFS=: read -r _ _ _ _ _ cur_home cur_shell < <(getent passwd "$TUSER")
if [ "$cur_home" != "$THOME" ] || [ "$cur_shell" != /bin/bash ]; then
  usermod -d "$THOME" -s /bin/bash "$TUSER"
  log "set $TUSER's home to $THOME"
fi
# useradd leaves the account locked ('!'); with `UsePAM no` sshd then refuses
# even public-key logins. '*' = no password, but not locked.
case "$(getent shadow "$TUSER" | cut -d: -f2)" in '!'* | '') usermod -p '*' "$TUSER" ;; esac
TGROUP=$(id -gn "$TUSER")
install -d -m 755 -o "$TUSER" -g "$TGROUP" "$THOME" "$THOME/cluster-runs"
install -d -m 700 -o "$TUSER" -g "$TGROUP" "$THOME/.ssh"

# ==================================================================== keys
[ -s "$TB/munge/munge.key" ] || mungekey --create --bits=1024 --keyfile="$TB/munge/munge.key"
chmod 600 "$TB/munge/munge.key"
[ -s "$TB/ssh/ssh_host_ed25519_key" ] ||
  ssh-keygen -q -t ed25519 -N '' -C cluster-slurm-testbed-host -f "$TB/ssh/ssh_host_ed25519_key"
[ -s "$TB/ssh/id_ed25519" ] ||
  ssh-keygen -q -t ed25519 -N '' -C cluster-slurm-testbed-client -f "$TB/ssh/id_ed25519"
put "$THOME/.ssh/authorized_keys" 600 <"$TB/ssh/id_ed25519.pub" || true
chown "$TUSER:$TGROUP" "$THOME/.ssh/authorized_keys"

# ================================================================= configs
# Node shape = what slurmd detects; a larger configured shape makes the node INVAL.
read -r CPUS SOCKETS CORES THREADS MEM < <(slurmd -C | awk '
  /^NodeName=/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
  END { print v["CPUs"], v["SocketsPerBoard"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"] }')
[[ "${MEM:-}" =~ ^[0-9]+$ ]] || die "slurmd -C reported no node shape"
NODE_MEM=$(( MEM / 2 < 4096 ? MEM / 2 : 4096 ))   # two nodes share this box
HOST=$(hostname)
# Slurm daemons bind INADDR_ANY unless CommunicationParameters has
# No(Ctld)InAddrAny; then they bind to the address `hostname` resolves to
# (here /etc/hosts maps it to 127.0.0.1). Only use that when it is loopback.
case "$(getent ahostsv4 "$HOST" | awk 'NR == 1 { print $1 }')" in
  127.*) CTLD_COMM="CommunicationParameters=NoCtldInAddrAny,NoInAddrAny"
         DBD_COMM="CommunicationParameters=NoInAddrAny" ;;
  *) log "WARNING: hostname $HOST does not resolve to 127.x: Slurm daemons will listen on all addresses"
     CTLD_COMM="# (hostname not on loopback: binding to all addresses)" DBD_COMM=$CTLD_COMM ;;
esac

slurm_changed=0 dbd_changed=0 db_changed=0 sshd_changed=0
put "$ETC/slurm.conf" 644 <<EOF && slurm_changed=1 || true
# Generated by tests/testbed/up.sh - single-machine test cluster. Do not edit.
ClusterName=testbed
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$RUN/munge.socket
SlurmctldPort=$CTLD_PORT
SlurmdPort=$C1_PORT
StateSaveLocation=$TB/state/ctld
SlurmdSpoolDir=$TB/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOGD/slurmctld.log
SlurmdLogFile=$LOGD/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# Listen on loopback only (see up.sh)
$CTLD_COMM
MpiDefault=none
# No cgroup confinement: works on cgroup v1 hybrid hosts without systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# The default batch_sched_delay=3 holds every batch job ~3 s before scheduling.
SchedulerParameters=batch_sched_delay=0,sched_interval=10,bf_interval=5
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# For the slurmdbd connection (and sacct/sacctmgr) this names the MUNGE socket;
# AuthInfo above is not used there.
AccountingStoragePass=$RUN/munge.socket
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
# Also keep a plain-text completion log (what sacct -c reads).
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGD/jobcomp.txt
GresTypes=gpu
NodeName=c1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$C1_PORT CPUs=$CPUS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$NODE_MEM State=UNKNOWN
NodeName=g1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$G1_PORT CPUs=$CPUS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$NODE_MEM Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=c1 Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=g1 Default=NO MaxTime=INFINITE State=UP
EOF
# slurmd 22.05 drops a GPU without File= ("Removing file-less GPU") and the
# node goes INVAL; /dev/null is a harmless stand-in (no device cgroup in use).
put "$ETC/gres.conf" 644 <<EOF && slurm_changed=1 || true
NodeName=g1 Name=gpu File=/dev/null
EOF
# Only read by slurmd's cgroup plugin init; nothing is confined.
put "$ETC/cgroup.conf" 644 <<EOF && slurm_changed=1 || true
CgroupPlugin=autodetect
IgnoreSystemd=yes
EOF
# slurmdbd insists on mode 600 for its config (it holds the DB password).
put "$ETC/slurmdbd.conf" 600 <<EOF && dbd_changed=1 || true
AuthType=auth/munge
AuthInfo=socket=$RUN/munge.socket
DbdHost=localhost
DbdPort=$DBD_PORT
$DBD_COMM
SlurmUser=root
DebugLevel=info
LogFile=$LOGD/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=testbedpw
StorageLoc=slurm_acct_db
EOF
put "$ETC/mariadb.cnf" 644 <<EOF && db_changed=1 || true
[mysqld]
user=root
datadir=$TB/mysql/data
socket=$RUN/mysqld.sock
pid-file=$RUN/mysqld.pid
bind-address=127.0.0.1
port=$DB_PORT
skip-name-resolve
log-error=$LOGD/mariadb.log
# (re)creates slurmdbd's DB user at every start: no separate setup step
init-file=$ETC/mariadb-init.sql
# below 512M slurmdbd logs "Database settings not recommended values"
innodb_buffer_pool_size=512M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
innodb_flush_log_at_trx_commit=2
EOF
put "$ETC/mariadb-init.sql" 600 <<'EOF' && db_changed=1 || true
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'testbedpw';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'testbedpw';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'testbedpw';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY 'testbedpw';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
put "$TB/ssh/sshd_config" 600 <<EOF && sshd_changed=1 || true
# Generated by tests/testbed/up.sh. Do not edit.
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $TB/ssh/ssh_host_ed25519_key
PidFile $RUN/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $TUSER
# No PAM: no session modules, no logind; the account must not be locked.
UsePAM no
StrictModes yes
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 64:30:128
MaxSessions 64
Subsystem sftp internal-sftp
# Debian ships no /etc/slurm/slurm.conf: without this every Slurm command in
# a session fails with "DNS SRV lookup failed".
SetEnv SLURM_CONF=$SLURM_CONF
LogLevel VERBOSE
EOF

# A changed config only takes effect on restart: stop what is running with
# an old one, the start sequence below brings it back.
if [ "$db_changed" = 1 ] && alive mariadbd "$RUN/mysqld.pid"; then
  log "MariaDB config changed: restarting mariadbd"
  stop_daemon mariadbd "$RUN/mysqld.pid" 60
fi
if [ "$dbd_changed" = 1 ] && alive slurmdbd "$RUN/slurmdbd.pid"; then
  log "slurmdbd.conf changed: restarting slurmdbd"
  stop_daemon slurmdbd "$RUN/slurmdbd.pid" 30
fi
if [ "$slurm_changed" = 1 ]; then
  for n in g1 c1; do
    if alive slurmd "$RUN/slurmd-$n.pid"; then
      log "Slurm config changed: restarting slurmd $n"
      stop_daemon slurmd "$RUN/slurmd-$n.pid" 15
    fi
  done
  if alive slurmctld "$RUN/slurmctld.pid"; then
    log "Slurm config changed: restarting slurmctld"
    stop_daemon slurmctld "$RUN/slurmctld.pid" 30
  fi
fi
if [ "$sshd_changed" = 1 ] && alive sshd "$RUN/sshd.pid"; then
  log "sshd_config changed: restarting sshd"
  stop_daemon sshd "$RUN/sshd.pid" 10
fi

# ================================================================= daemons
MUNGE_SOCK=$RUN/munge.socket
munge_ok() { munge -n -S "$MUNGE_SOCK" | unmunge -S "$MUNGE_SOCK"; }
if ! alive munged "$RUN/munged.pid"; then
  rm -f "$RUN/munged.pid"
  spawn "$LOGD/munged.log" /usr/sbin/munged --key-file="$TB/munge/munge.key" \
    --socket="$MUNGE_SOCK" --pid-file="$RUN/munged.pid" --log-file="$LOGD/munged.log" \
    --seed-file="$TB/munge/munged.seed" --num-threads=4 \
    || fail_with_logs "munged failed to start" "$LOGD/munged.log"
  wait_ready 10 "$RUN/munged.pid" munge_ok || fail_with_logs "munged did not come up" "$LOGD/munged.log"
  log "munged up (pid $(cat "$RUN/munged.pid"))"
fi

if ! alive mariadbd "$RUN/mysqld.pid"; then
  if [ ! -d "$TB/mysql/data/mysql" ]; then
    rm -rf "$TB/mysql/data"   # leftovers of an interrupted first initialisation
    log "initialising MariaDB datadir (first start only)"
    "${DAEMON_ENV[@]}" mariadb-install-db --no-defaults --user=root --datadir="$TB/mysql/data" \
      --auth-root-authentication-method=socket --skip-test-db \
      </dev/null >"$LOGD/mariadb-install.log" 2>&1 3>&- 9>&- \
      || fail_with_logs "mariadb-install-db failed" "$LOGD/mariadb-install.log"
  fi
  check_port_free "$DB_PORT" mariadbd
  rm -f "$RUN/mysqld.pid"
  # mariadbd does not daemonise itself: detach it into its own session.
  setsid "${DAEMON_ENV[@]}" /usr/sbin/mariadbd --defaults-file="$ETC/mariadb.cnf" \
    </dev/null >>"$LOGD/mariadb.log" 2>&1 3>&- 9>&- &
  wait_ready 60 "$RUN/mysqld.pid" mariadb-admin --no-defaults -S "$RUN/mysqld.sock" -uroot ping \
    || fail_with_logs "mariadbd did not come up" "$LOGD/mariadb.log"
  wait_until 10 alive mariadbd "$RUN/mysqld.pid" || fail_with_logs "mariadbd wrote no PID file" "$LOGD/mariadb.log"
  log "mariadbd up on 127.0.0.1:$DB_PORT (pid $(cat "$RUN/mysqld.pid"))"
fi

if ! alive slurmdbd "$RUN/slurmdbd.pid"; then
  check_port_free "$DBD_PORT" slurmdbd
  rm -f "$RUN/slurmdbd.pid"
  spawn "$LOGD/slurmdbd.log" /usr/sbin/slurmdbd || fail_with_logs "slurmdbd failed to start" "$LOGD/slurmdbd.log"
  # answers only once slurmdbd is up and talking to MariaDB (creates its tables on first start)
  wait_ready 60 "$RUN/slurmdbd.pid" timeout 10 sacctmgr -n -P list cluster format=cluster \
    || fail_with_logs "slurmdbd did not come up" "$LOGD/slurmdbd.log" "$LOGD/mariadb.log"
  log "slurmdbd up (pid $(cat "$RUN/slurmdbd.pid"))"
fi

ctld_up() { timeout 10 scontrol ping | grep -q 'is UP'; }
if ! alive slurmctld "$RUN/slurmctld.pid"; then
  check_port_free "$CTLD_PORT" slurmctld
  rm -f "$RUN/slurmctld.pid"
  spawn "$LOGD/slurmctld.log" /usr/sbin/slurmctld || fail_with_logs "slurmctld failed to start" "$LOGD/slurmctld.log"
  wait_ready 60 "$RUN/slurmctld.pid" ctld_up || fail_with_logs "slurmctld did not come up" "$LOGD/slurmctld.log"
  log "slurmctld up (pid $(cat "$RUN/slurmctld.pid"))"
fi
# slurmctld re-creates the completion log 0644 at every start, but `sacct -c`
# opens it read-write, so users need write access too.
[ ! -e "$LOGD/jobcomp.txt" ] || chmod 666 "$LOGD/jobcomp.txt"

for n in c1 g1; do
  if ! alive slurmd "$RUN/slurmd-$n.pid"; then
    if [ "$n" = c1 ]; then check_port_free "$C1_PORT" "slurmd c1"; else check_port_free "$G1_PORT" "slurmd g1"; fi
    rm -f "$RUN/slurmd-$n.pid"
    # two slurmd on one host: -N picks the node name (port, spool dir, PID file)
    spawn "$LOGD/slurmd-$n.log" /usr/sbin/slurmd -N "$n" \
      || fail_with_logs "slurmd $n failed to start" "$LOGD/slurmd-$n.log"
    wait_ready 20 "$RUN/slurmd-$n.pid" alive slurmd "$RUN/slurmd-$n.pid" \
      || fail_with_logs "slurmd $n did not start" "$LOGD/slurmd-$n.log"
    log "slurmd $n up (pid $(cat "$RUN/slurmd-$n.pid"))"
  fi
done

# Both nodes registered and usable (idle, or busy with jobs kept from before).
nodes_ready() {
  local out
  out=$(timeout 10 sinfo -h -N -o '%N %t' | sort -u) || return 1
  [ "$(grep -cE '^(c1|g1) (idle|mix|alloc|comp)$' <<<"$out")" = 2 ]
}
if ! wait_until 30 nodes_ready; then
  # A DRAIN/DOWN recorded in the saved state survives restarts: resume once.
  log "nodes not ready ($(sinfo -h -N -o '%N=%t' | tr '\n' ' ')), resuming them"
  scontrol update nodename=c1,g1 state=resume >/dev/null 2>&1 || true
  wait_until 30 nodes_ready || {
    sinfo -N -l -R >&2 || true
    fail_with_logs "nodes c1/g1 did not become idle" "$LOGD/slurmctld.log" "$LOGD/slurmd-c1.log" "$LOGD/slurmd-g1.log"
  }
fi

# slurmctld registers the cluster in slurmdbd by itself; jobs are only
# recorded once it has, so wait for that as well as for sacct answering.
acct_ready() {
  timeout 10 sacctmgr -n -P list cluster format=cluster | grep -qx testbed &&
    timeout 10 sacct -n -a -X -S now -o JobID >/dev/null
}
wait_until 60 acct_ready || fail_with_logs "accounting (sacct/slurmdbd) not answering" \
  "$LOGD/slurmdbd.log" "$LOGD/slurmctld.log"

if ! alive sshd "$RUN/sshd.pid"; then
  /usr/sbin/sshd -t -f "$TB/ssh/sshd_config" || die "sshd rejects $TB/ssh/sshd_config"
  check_port_free "$SSH_PORT" sshd
  rm -f "$RUN/sshd.pid"
  spawn "$LOGD/sshd.log" /usr/sbin/sshd -f "$TB/ssh/sshd_config" -E "$LOGD/sshd.log" \
    || fail_with_logs "sshd failed to start" "$LOGD/sshd.log"
  wait_ready 10 "$RUN/sshd.pid" alive sshd "$RUN/sshd.pid" || fail_with_logs "sshd did not start" "$LOGD/sshd.log"
  log "sshd up on 127.0.0.1:$SSH_PORT (pid $(cat "$RUN/sshd.pid"))"
fi

# ============================================================ client files
# Regenerated on every run from the current settings (cheap).
if [ "$SSH_PORT" = 22 ]; then KH_HOST=127.0.0.1; else KH_HOST="[127.0.0.1]:$SSH_PORT"; fi
printf '%s %s\n' "$KH_HOST" "$(cut -d' ' -f1,2 "$TB/ssh/ssh_host_ed25519_key.pub")" \
  | put "$TB/ssh/known_hosts" 644 || true
put "$TB/ssh/ssh_config" 644 <<EOF || true
Host slurm-testbed
  HostName 127.0.0.1
  Port $SSH_PORT
  User $TUSER
  IdentityFile $TB/ssh/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $TB/ssh/known_hosts
EOF
put "$TB/cluster-slurm.json" 644 <<EOF || true
{
  "host": { "sshConfig": "$TB/ssh/ssh_config", "connectionsPerMinute": 1000 },
  "defaultCluster": "local-cpu",
  "localRunsDir": ".openclaw/cluster-runs",
  "routing": { "defaultProfile": "local-cpu", "gpuProfile": "local-gpu" },
  "clusters": {
    "local-cpu": {
      "sshTarget": "slurm-testbed",
      "remoteRoot": "$THOME/cluster-runs",
      "slurmDefaults": { "partition": "cpu", "time": "00:10:00", "nodes": 1, "ntasks": 1, "cpusPerTask": 1, "mem": "256M", "output": "slurm-%j.out", "error": "slurm-%j.err" }
    },
    "local-gpu": {
      "sshTarget": "slurm-testbed",
      "remoteRoot": "$THOME/cluster-runs",
      "slurmDefaults": { "partition": "gpu", "time": "00:10:00", "nodes": 1, "ntasks": 1, "cpusPerTask": 1, "gpusPerNode": 1, "mem": "256M", "output": "slurm-%j.out", "error": "slurm-%j.err" }
    }
  }
}
EOF
# For Slurm commands run locally as root (not over ssh).
printf 'export SLURM_CONF=%s\n' "$SLURM_CONF" | put "$TB/env.sh" 644 || true

# ============================================ end-to-end check through ssh
# Exactly what a client does: the generated ssh_config, strict host key
# checking against the generated known_hosts, no prompts.
ssh_check() {
  local out
  out=$(timeout 20 ssh -F "$TB/ssh/ssh_config" -o BatchMode=yes -o StrictHostKeyChecking=yes \
          -o ConnectTimeout=10 slurm-testbed \
          'sinfo -h -o %R | sort | tr "\n" " "; python3 -c "print(\"python3-ok\")"' 2>&1 3>&- 9>&-) \
    || { SSH_ERR=$out; return 1; }
  [ "$out" = "cpu gpu python3-ok" ] || { SSH_ERR="unexpected output: $out"; return 1; }
}
SSH_ERR=""
tries=0
until ssh_check; do
  tries=$((tries + 1))
  [ "$tries" -lt 20 ] || fail_with_logs "ssh -F $TB/ssh/ssh_config slurm-testbed sinfo failed: $SSH_ERR" "$LOGD/sshd.log"
  sleep 0.5
done

log "ready in $(elapsed_ms) ms: $(sinfo -h -o '%R/%t' | tr '\n' ' ')"
log "try: ssh -F $TB/ssh/ssh_config slurm-testbed sinfo"
printf '%s\n' "$TB/cluster-slurm.json" >&3
