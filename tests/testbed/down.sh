#!/usr/bin/env bash
# down.sh - stop exactly what up.sh started. Every PID comes from a PID file
# in $TB/run (or, for leftovers of jobs and ssh sessions, from the process
# tree of those daemons, the test user's uid, or the owner of a job step
# socket in our spool dir); /proc/PID/comm is checked before a daemon is
# signalled. Nothing is ever killed by name.
# Running jobs are cancelled first. All state (jobs, accounting DB, keys,
# user) is kept, so the next up.sh is a warm start. Idempotent.
set -uo pipefail
# A reader that goes away (e.g. `down.sh | head`) must not kill us half-way
# and leave daemons behind. Deliberately not done in up.sh: an ignored
# SIGPIPE would be inherited by the daemons and by every job they start.
trap '' PIPE

LOG_TAG=down
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"
T_START=$(date +%s%N)
if [ ! -d "$RUN" ]; then log "nothing to stop ($RUN does not exist)"; exit 0; fi
take_lock

# children_of PID -> PIDs whose parent is PID (zombies excluded)
children_of() {
  cat /proc/[0-9]*/stat 2>/dev/null |
    awk -v pp="$1" '{ pid = $1; sub(/^.*\) /, ""); if ($2 == pp && $1 != "Z") print pid }'
}
# pids_of_uid UID -> live processes whose real uid is UID
pids_of_uid() {
  local f pid
  for f in $(grep -l "^Uid:[[:space:]]*$1[[:space:]]" /proc/[0-9]*/status 2>/dev/null); do
    pid=${f#/proc/}; pid=${pid%/status}
    running "$pid" && echo "$pid"
  done
}
# step_sockets -> the unix socket of every job step still alive on our nodes
# (slurmd spool dir: <node>_<jobid>.<stepid>)
step_sockets() { find "$TB/spool" -mindepth 2 -maxdepth 2 -type s -name '*_*.*' 2>/dev/null; }
# socket_holders PATH... -> PIDs with an open fd on one of these unix sockets
socket_holders() {
  local ino
  for ino in $(awk -v want=" $* " 'NR > 1 && NF >= 8 && index(want, " " $8 " ") { print $7 }' /proc/net/unix); do
    find /proc/[0-9]*/fd -maxdepth 1 -lname "socket:\[$ino\]" 2>/dev/null | cut -d/ -f3
  done | sort -u
}
# kill_pids WHAT PID... -> TERM, then KILL whatever is left after 3 s
kill_pids() {
  local what=$1; shift
  [ $# -gt 0 ] || return 0
  log "stopping $what: $*"
  kill -TERM "$@" 2>/dev/null
  wait_gone 3 "$@" || { kill -KILL "$@" 2>/dev/null; wait_gone 5 "$@"; }
}

# 1. cancel every job and wait until no job step is left on the nodes
if alive slurmctld "$RUN/slurmctld.pid"; then
  ids=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${ids// /}" ]; then
    log "cancelling jobs: $ids"
    # shellcheck disable=SC2086
    timeout 10 scancel $ids 2>/dev/null
  fi
  for _ in $(seq 200); do   # <= 20 s; KillWait=5
    [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ] && [ -z "$(step_sockets)" ] && break
    sleep 0.1
  done
fi

# 2. sshd: the live sessions (children of the listener) first, then the listener
if spid=$(daemon_pid sshd "$RUN/sshd.pid"); then
  # shellcheck disable=SC2046
  kill_pids "ssh sessions" $(children_of "$spid")
fi
stop_daemon sshd "$RUN/sshd.pid" 10

# 3. anything still running as the test user (a job that ignored the
#    cancel, a process an ssh session left behind); the user exists only for
#    this testbed.
if uid=$(id -u "$TUSER" 2>/dev/null); then
  # shellcheck disable=SC2046
  kill_pids "leftover $TUSER processes" $(pids_of_uid "$uid")
fi

# 4. Slurm daemons, then accounting, then munge
stop_daemon slurmd "$RUN/slurmd-g1.pid" 15 &
stop_daemon slurmd "$RUN/slurmd-c1.pid" 15 &
wait
# slurmstepd outlives slurmd by design; if a step is still there, end it via
# the process holding its socket in our spool dir.
if [ -n "$(step_sockets)" ]; then
  # shellcheck disable=SC2046
  kill_pids "leftover job steps" $(socket_holders $(step_sockets))
fi
stop_daemon slurmctld "$RUN/slurmctld.pid" 30
stop_daemon slurmdbd "$RUN/slurmdbd.pid" 30
stop_daemon mariadbd "$RUN/mysqld.pid" 60
stop_daemon munged "$RUN/munged.pid" 10

log "down in $(( ($(date +%s%N) - T_START) / 1000000 )) ms (state kept in $TB)"
exit 0
