"""Example workload: summarise a CSV of numbers and write result.json.

Runs inside a SLURM job on the cluster; records where it ran so the result
proves it went through the scheduler.
"""
import csv
import json
import os
import socket
import statistics
import sys

source = sys.argv[1] if len(sys.argv) > 1 else "data/numbers.csv"
with open(source, newline="") as f:
    values = [float(row["value"]) for row in csv.DictReader(f)]

result = {
    "count": len(values),
    "sum": sum(values),
    "mean": statistics.fmean(values),
    "max": max(values),
    "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    "partition": os.environ.get("SLURM_JOB_PARTITION"),
    "host": socket.gethostname(),
}
with open("result.json", "w") as f:
    json.dump(result, f, indent=2, sort_keys=True)
print(f"summarised {len(values)} values from {source}: mean={result['mean']}")
