#!/usr/bin/env bash
# The quickstart: what an agent does with the cluster_slurm tool, from the
# command line. Uploads analyse.py and data/numbers.csv, runs them as a SLURM
# job (routed, rendered and checked by the wasm guest), waits, then fetches
# the log and the job's result.json.
#   examples/quickstart/run.sh CONFIG   (CONFIG: e.g. the testbed's, printed by tests/testbed/up.sh)
set -euo pipefail
config=${1:?usage: run.sh CONFIG}
here=$(cd "$(dirname "$0")" && pwd)
bin=${CLUSTER_SLURM_BIN:-$here/../../target/release/cluster-slurm}
cs() { "$bin" --config "$config" --workspace "$here" "$@"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

echo "== run_workload" >&2
run=$(cs call run_workload '{
  "prefix": "quickstart",
  "workload": "summarise a CSV of numbers",
  "command": "python3 analyse.py data/numbers.csv",
  "localPaths": ["analyse.py", "data/numbers.csv"]
}')
echo "$run"
run_id=$(field runId <<<"$run")

echo "== waiting for run $run_id" >&2
cs wait "$run_id" >/dev/null

echo "== fetch_workload_logs" >&2
cs call fetch_workload_logs "{\"runId\": \"$run_id\"}" | field log

echo "== download_workload_outputs" >&2
out=$(cs call download_workload_outputs "{\"runId\": \"$run_id\"}")
echo "$out"
echo "== result ($here/$(field localPath <<<"$out"))" >&2
cat "$here/$(field localPath <<<"$out")"
echo
