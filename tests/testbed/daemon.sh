#!/usr/bin/env bash
# daemon.sh stop slurmctld|slurmdbd - stop one daemon of the running testbed,
# for the fault tests (tests/e2e_faults.rs). `up.sh` starts it again (it
# starts whatever is missing and waits until the cluster answers).
# Only the PID from the daemon's PID file is signalled, after checking its
# /proc/PID/comm, like down.sh.
set -euo pipefail
LOG_TAG=daemon
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

case "${1:-} ${2:-}" in
  "stop slurmctld") take_lock; stop_daemon slurmctld "$RUN/slurmctld.pid" 30 ;;
  "stop slurmdbd") take_lock; stop_daemon slurmdbd "$RUN/slurmdbd.pid" 30 ;;
  *) die "usage: daemon.sh stop slurmctld|slurmdbd" ;;
esac
