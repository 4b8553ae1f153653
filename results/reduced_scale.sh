#!/usr/bin/env bash
# Reduced-scale comparison on hopper-medium-v2 (data generated here from the shipped SAC policy), CPU only:
# frozen-dt on a gemma3-270m slice (layers 0:2, pretrained and --init random) vs the DT baseline, 2 seeds each,
# STEPS gradient steps at batch 32 under bf16 autocast, then `frozen-dt eval` (EPISODES episodes per target) and
# the leaderboard. Full scale is 100k steps at batch 64 and 100 evaluation episodes: these numbers are not that.
#
#   bash results/reduced_scale.sh            # ~1 hour on a 2-core CPU
set -euo pipefail
STEPS=${STEPS:-1500}
EPISODES=${EPISODES:-10}
TASK=hopper-medium-v2
ROOT=${ROOT:-runs/reduced}
COMMON=(--steps "$STEPS" --batch-size 32 --warmup-steps 150 --precision bf16 --eval-every 500 --eval-episodes 5
        --log-every 100 --save-every 500)
for seed in 0 1; do
  frozen-dt train $TASK --algo dt --seed $seed --run-dir $ROOT/$TASK/dt/seed$seed "${COMMON[@]}"
  frozen-dt train $TASK --algo frozen-dt --backbone gemma3-270m --layers 0:2 --seed $seed \
    --run-dir $ROOT/$TASK/frozen-dt-gemma3-0-2/seed$seed "${COMMON[@]}"
  frozen-dt train $TASK --algo frozen-dt --backbone gemma3-270m --layers 0:2 --init random --seed $seed \
    --run-dir $ROOT/$TASK/frozen-dt-gemma3-0-2-random/seed$seed "${COMMON[@]}"
done
frozen-dt eval $ROOT/$TASK/*/seed* --episodes "$EPISODES" --num-envs "$EPISODES"
