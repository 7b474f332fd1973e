#!/usr/bin/env bash
# Recipe R's five-fold CV (plan: reports/segmentation/cv_plan_v0.6.md): three runs side by side, one thread each,
# in $RUNS (default /root/strokescan-runs, outside the repository); rerun after an interruption to resume.
cd "$(dirname "$0")/../../.."
RUNS="${RUNS:-/root/strokescan-runs}"
run() { mkdir -p "$RUNS/cv_r_$1" && cp -n reports/segmentation/folds_v0.4.0.json "$RUNS/cv_r_$1/folds.json"
        OMP_NUM_THREADS=1 .venv/bin/strokescan -v train segmenter --out "$RUNS/cv_r_$1" --test-folds "$2" \
        --max-epochs 6 --steps-per-epoch 100 --patience 6 --threads 1 >> "$RUNS/cv_r_$1.out" 2>&1; }
run a 0,2 & run b 1,3 & run c 4 &
wait
