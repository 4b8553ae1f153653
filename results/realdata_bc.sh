#!/usr/bin/env bash
# Real-data check of the env mapping: behaviour cloning on the real D4RL expert subsets in shared/realdata
# (observations and actions only), evaluated through the harness in the registry's env, v4 (D4RL's) and v5.
#
#   REALDATA=../shared/realdata bash results/realdata_bc.sh     # ~3 minutes on a 2-core CPU
set -euo pipefail
REALDATA=${REALDATA:-../shared/realdata}
ROOT=${ROOT:-runs/realdata}
for spec in walker2d:20 hopper:25; do
  env=${spec%%:*}; n=${spec##*:}
  frozen-dt train $env-expert-v2 --algo bc --dataset "$REALDATA/$env-expert-v2_$n.pkl" --steps 20000 \
    --eval-every 5000 --eval-episodes 10 --run-dir $ROOT/$env-bc
  frozen-dt eval $ROOT/$env-bc --episodes 100 --num-envs 20                      # eval-last.json (v4)
  frozen-dt eval $ROOT/$env-bc --episodes 100 --num-envs 20 --env-version v5     # eval-last-v5.json
done
