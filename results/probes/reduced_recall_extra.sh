#!/usr/bin/env bash
# Supplementary runs, reduced scale (CPU, one thread), seed 0 only, after reduced_recall.sh (about 16 minutes):
# 1. the frozen random standard transformer (1/sqrt(d_k)) arm on the same recall protocol (1000 steps);
# 2. recall in the "pair" format (one key||value token per item, then the query: a single content-addressed
#    attention read suffices), pretrained vs random-init slice vs from-scratch, 600 steps; summaries in
#    results/probes/pair/.
set -euo pipefail
export OMP_NUM_THREADS=1
frozen-dt probe recall --arm random-transformer --lr 3e-3 --seed 0 --backbone gemma3-270m --layers 4:6 --steps 1000 \
  --batch-size 32 --precision bf16 --eval-every 200 --log-every 50 --lengths 5,10,20,30 --n-test 256 \
  --run-dir runs/probes/recall/random-transformer/seed0
python -m frozen_dt.probes.report --results results/probes --task recall
COMMON="--format pair --backbone gemma3-270m --layers 4:6 --steps 600 --batch-size 32 --precision bf16 --eval-every 200 --log-every 50 --lengths 5,10,20,30 --n-test 256 --summary-dir results/probes/pair --seed 0"
frozen-dt probe recall --arm pretrained  --lr 3e-3 $COMMON --run-dir runs/probes/recall-pair/pretrained/seed0
frozen-dt probe recall --arm random-init --lr 3e-3 $COMMON --run-dir runs/probes/recall-pair/random-init/seed0
frozen-dt probe recall --arm scratch     --lr 1e-3 $COMMON --run-dir runs/probes/recall-pair/scratch/seed0
python -m frozen_dt.probes.report --results results/probes/pair --task recall
