#!/usr/bin/env bash
# Recipe R's five-fold CV (plan: reports/segmentation/cv_plan_v0.6.md): three runs side by side, one thread each;
# rerun after an interruption to resume (finished folds are read back from their checkpoints).
cd /work/main
run() { OMP_NUM_THREADS=1 .venv/bin/strokescan -v train segmenter --out "/root/strokescan-runs/cv_r_$1" --test-folds "$2" \
        --max-epochs 6 --steps-per-epoch 100 --patience 6 --threads 1 >> "/root/strokescan-runs/cv_r_$1.out" 2>&1; }
run a 0,2 & run b 1,3 & run c 4 &
wait
