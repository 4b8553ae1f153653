#!/usr/bin/env bash
# Reduced-scale associative recall (CPU): frozen pretrained gemma3-270m slice vs frozen random-init slice vs the
# same-shaped standard transformer trained from scratch, 2 seeds each, run one after another on one CPU thread.
# Measured on a 2-core CPU (one core busy with another job): about 40 minutes in all.
# Slice 4:6: the 2-layer slice holding the heads with the highest text copy score (L5.3, L5.2; see heads.sh).
# Learning rates: 3e-3 for the linear interface of the frozen arms, 1e-3 for the from-scratch transformer
# (no sweep at this scale).
set -euo pipefail
export OMP_NUM_THREADS=1
COMMON="--backbone gemma3-270m --layers 4:6 --steps 1000 --batch-size 32 --precision bf16 --eval-every 200 --log-every 50 --lengths 5,10,20,30 --n-test 256"
for seed in 0 1; do
  frozen-dt probe recall --arm pretrained  --lr 3e-3 --seed $seed $COMMON --run-dir runs/probes/recall/pretrained/seed$seed
  frozen-dt probe recall --arm random-init --lr 3e-3 --seed $seed $COMMON --run-dir runs/probes/recall/random-init/seed$seed
  frozen-dt probe recall --arm scratch     --lr 1e-3 --seed $seed $COMMON --run-dir runs/probes/recall/scratch/seed$seed
done
