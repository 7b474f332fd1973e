#!/usr/bin/env bash
# Issue 29's training and evaluation plan, resumable: the detector with hospital augmentation under every protocol
# (patient CV on all sources, and leave-one-source-out), then each run's report. Rerun the same command to resume.
#   bash scripts/generalisation_plan.sh [RUNS_DIR]         (default runs/generalisation; 2 protocols at a time)
# The first protocol builds the cached trunk features of the 5 views (about 15 min on 2 cores); the others reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/generalisation}"
mkdir -p "$runs"
py=.venv/bin/python
train() {  # protocol threads
    .venv/bin/strokescan train classifier --protocol "$1" --threads "$2" --run-dir "$runs/detector_$1" \
        > "$runs/detector_$1.log" 2>&1
    .venv/bin/strokescan evaluate --run-dir "$runs/detector_$1" --report "$runs/detector_$1/report" \
        >> "$runs/detector_$1.log" 2>&1 || true
}
train all 2                          # builds the feature cache
train ctich 1 & train no-ctich 1 & wait
echo "plan done: $runs"
