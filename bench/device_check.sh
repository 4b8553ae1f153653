#!/usr/bin/env bash
# The device check (issue 15): on the lent GPU machine (one H200, 16 cores, no network; Python 3.12 with torch and
# transformers, without gymnasium, mujoco, gguf or backbone weights), in about 8 minutes:
#   1. install the carried wheels (.whl/, from bench/device_prepare.sh) and this package into /tmp/site;
#      import the carried gemma3-270m slice (.carry/*.gguf, quantized) into the backbone cache;
#      generate walker2d-medium-v2 there from the shipped behaviour policy;
#   2. a CUDA smoke of every algorithm: train, checkpoint, resume, evaluate 10 episodes;
#   3. bench/bench_training.py (steps/s, TFLOP/s, MFU against the measured bf16 matmul peak, 1 and 3 stacked seeds)
#      and bench/bench_stacking.py on cuda; after the headline, bench/bench_eval.py (harness vs batch-1 rollouts);
#   4. the headline: walker2d-medium, frozen-dt gemma3-270m 0:5 pretrained and --init random, and dt, 3 seeds each
#      stacked, each arm for at most HEADLINE_SECONDS (100k steps the goal; headline_rates.json extrapolates the
#      measured rate to 100k), 100 evaluation episodes, leaderboard rows;
#   5. the recall probe's four arms side by side on the device, PROBE_STEPS steps each.
# Results go to $OUT (the device tool's folder; default results/bench/device_check): *.json, logs, leaderboard.
#
#   bash bench/device_check.sh            # on the device machine (carry .whl and .carry)
#   bash bench/device_check.sh --dry-run  # here, on CPU, tiny sizes, same steps (tests/test_device_check.py)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-$ROOT/results/bench/device_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MUJOCO_GL=egl
WORK=$(mktemp -d)
export FROZEN_DT_DATA=$WORK/data FROZEN_DT_CACHE=$WORK/backbones
mkdir -p "$FROZEN_DT_DATA" "$FROZEN_DT_CACHE"
if [ $DRY = 1 ]; then
  DEVICE=cpu LAYERS=0:1 SMOKE_STEPS=4 EVAL_EPISODES=1 EVAL_CUT="--max-steps 5" EPISODES_DATA="--episodes 4"
  HEADLINE_STEPS=${HEADLINE_STEPS:-6} HEADLINE_EPISODES=1 PROBE_STEPS=${PROBE_STEPS:-4} BATCH="--batch-size 8"
  PROBE_LAYERS=0:1
  BENCH="--steps 1 --warmup 1" STACK_BENCH="--steps 1 --warmup 1 --algos iql" BENCH_LAYERS="1" PROBE_THREADS=1
else
  DEVICE=cuda LAYERS=0:5 SMOKE_STEPS=100 EVAL_EPISODES=10 EVAL_CUT="" EPISODES_DATA=""
  HEADLINE_STEPS=${HEADLINE_STEPS:-100000} HEADLINE_EPISODES=100 PROBE_STEPS=${PROBE_STEPS:-2000} BATCH=""
  PROBE_LAYERS=0:2  # a part of the imported 0:5 slice
  BENCH="--steps 10 --warmup 3 --bf16" STACK_BENCH="--steps 20 --warmup 5" BENCH_LAYERS="1 2 5" PROBE_THREADS=4
fi
# Each headline arm trains for at most HEADLINE_SECONDS (SIGINT then: the trainer stops at its last checkpoint, every
# SAVE_EVERY steps, and that checkpoint is evaluated); headline_rates.json extrapolates the measured rate to 100k.
HEADLINE_SECONDS=${HEADLINE_SECONDS:-$([ $DRY = 1 ] && echo 600 || echo 75)}
SAVE_EVERY=$([ $DRY = 1 ] && echo 3 || echo 250)
START=$(date +%s)
log() { echo "[device_check +$(( $(date +%s) - START ))s] $*"; }
STATUS=$OUT/status.jsonl
: > "$STATUS"
record() {  # name rc seconds
  printf '{"step": "%s", "rc": %s, "seconds": %s, "device": "%s", "dry_run": %s}\n' "$1" "$2" "$3" "$DEVICE" "$DRY" >> "$STATUS"
}
step() {  # name command...: run, log to $OUT/<name>.log, record its exit status and time; never stop the script
  local name=$1; shift
  local t0; t0=$(date +%s)
  log "$name: $*"
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  record "$name" "$rc" "$(( $(date +%s) - t0 ))"
  [ $rc = 0 ] || { log "$name failed (rc $rc); tail of $OUT/$name.log:"; tail -5 "$OUT/$name.log"; }
  return $rc
}

# --- 1. environment ------------------------------------------------------------------------------------------------
if [ $DRY = 0 ]; then
  step install python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
  # the package as pyproject installs it (baselines, envs and eval inside frozen_dt), without a build step
  step install-package bash -c "cp -r frozen_dt /tmp/site/ && cp -r baselines envs eval /tmp/site/frozen_dt/" || exit 1
  SLICE=$(ls .carry/gemma3-270m-*.gguf | head -1)
else
  SLICE=$WORK/gemma3-270m-${LAYERS/:/-}.gguf
  step export python3 -m frozen_dt backbone export gemma3-270m --layers "$LAYERS" --out "$SLICE" || exit 1
fi
FDT="python3 -m frozen_dt"
# several frozen-dt commands in one python process (one torch import instead of one per command)
fdt_seq() {
  python3 - "$@" <<'PY'
import shlex, sys
from frozen_dt.cli import main
for command in sys.argv[1:]:
    print(f"+ frozen-dt {command}", flush=True)
    code = main(shlex.split(command))
    if code:
        sys.exit(code)
PY
}
step import-slice $FDT backbone import "$SLICE" || exit 1
step generate $FDT data generate walker2d-medium-v2 $EPISODES_DATA --num-envs 16 || exit 1
python3 - "$OUT/hardware.json" "$DEVICE" <<'PY'
import json, os, sys, torch
name = torch.cuda.get_device_name(0) if sys.argv[2] == "cuda" else "cpu"
json.dump({"device": name, "cpus": os.cpu_count(), "torch": torch.__version__}, open(sys.argv[1], "w"), indent=2)
PY

# --- 2. smoke: every algorithm trains, checkpoints, resumes and evaluates on the device -----------------------------
RUNS=$WORK/runs
for algo in dt frozen-dt bc iql cql td3bc; do
  extra=""
  [ "$algo" = frozen-dt ] && extra="--backbone gemma3-270m --layers $LAYERS"
  half=$(( SMOKE_STEPS / 2 ))
  step "smoke-$algo" fdt_seq "train walker2d-medium-v2 --algo $algo $extra --device $DEVICE --steps $half \
      --save-every $half --log-every $half --eval-episodes 0 $BATCH --run-dir $RUNS/smoke/$algo" \
    "train walker2d-medium-v2 --resume $RUNS/smoke/$algo --steps $SMOKE_STEPS" \
    "eval $RUNS/smoke/$algo --episodes $EVAL_EPISODES --device $DEVICE $EVAL_CUT" || true
done
step smoke-frozen-dt-compile $FDT train walker2d-medium-v2 --algo frozen-dt --backbone gemma3-270m --layers $LAYERS \
  --compile --device $DEVICE --steps $SMOKE_STEPS --log-every $SMOKE_STEPS --eval-episodes 0 $BATCH \
  --run-dir $RUNS/smoke/frozen-dt-compile || true

# --- 3. throughput --------------------------------------------------------------------------------------------------
(cd bench && step bench-training python3 bench_training.py --device $DEVICE --backbones gemma3-270m \
   --layers $BENCH_LAYERS $BENCH --json "$OUT/training_$DEVICE.json") || true
(cd bench && step bench-stacking python3 bench_stacking.py --device $DEVICE --layers $LAYERS $STACK_BENCH \
   --json "$OUT/stacking_$DEVICE.json") || true

# --- 4. the headline: 3 seeds stacked per arm -------------------------------------------------------------------------
HEAD=$WORK/runs/headline
for arm in pretrained random dt; do
  if [ $arm = dt ]; then args="--algo dt"; else args="--algo frozen-dt --backbone gemma3-270m --layers $LAYERS --init $arm"; fi
  step "headline-$arm" bash -c "timeout -s INT -k 60 $HEADLINE_SECONDS $FDT train walker2d-medium-v2 $args \
    --seeds 0,1,2 --steps $HEADLINE_STEPS --device $DEVICE --eval-episodes 0 --log-every $SAVE_EVERY \
    --save-every $SAVE_EVERY $BATCH --run-dir $HEAD/$arm; rc=\$?; [ \$rc = 0 ] || [ \$rc = 124 ]" || true
  step "headline-eval-$arm" $FDT eval "$HEAD/$arm" --episodes $HEADLINE_EPISODES --num-envs 50 --device $DEVICE \
    $EVAL_CUT || true
done
step leaderboard $FDT leaderboard "$HEAD"/*/seed* --out "$OUT/headline_leaderboard.csv" || true
python3 - "$HEAD" "$OUT/headline_rates.json" "$HEADLINE_STEPS" <<'PY'
import glob, json, sys
rates = {}
for path in sorted(glob.glob(f"{sys.argv[1]}/*/seed*/metrics.jsonl")):
    rows = [json.loads(line) for line in open(path)]
    arm = path.split("/")[-3]
    if rows:
        rates.setdefault(arm, []).append(rows[-1].get("steps_per_s"))
summary = {}
for arm, r in rates.items():
    steps = max(json.loads(line)["step"] for line in open(f"{sys.argv[1]}/{arm}/seed0/metrics.jsonl"))
    summary[arm] = {"stack_steps_per_s": r[0], "measured_steps": steps,
                    "extrapolated_minutes_for_100k": 100_000 / r[0] / 60 if r[0] else None}
json.dump({"note": "steps/s of each stack (3 seeds per step); 100k-step times extrapolated from this rate",
           "arms": summary}, open(sys.argv[2], "w"), indent=2)
print(json.dumps(summary))
PY

# the harness against sequential batch-1 rollouts, with a headline DT policy
(cd bench && step bench-eval python3 bench_eval.py --run-dir "$HEAD/dt/seed0" --device $DEVICE \
   --episodes $HEADLINE_EPISODES --sequential-episodes $(( HEADLINE_EPISODES < 10 ? HEADLINE_EPISODES : 10 )) \
   --num-envs 50 --out "$OUT/eval_$DEVICE.json") || true

# --- 5. the recall probe's four arms, side by side ---------------------------------------------------------------------
pids=()
for arm in pretrained random-init random-transformer scratch; do
  OMP_NUM_THREADS=$PROBE_THREADS $FDT probe recall --arm $arm --layers $PROBE_LAYERS --steps $PROBE_STEPS --eval-every $PROBE_STEPS \
    --device $DEVICE \
    --run-dir "$WORK/probe/$arm" --summary-dir "$OUT/probe" > "$OUT/probe-$arm.log" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do wait "${pids[$i]}"; record "probe-$i" $? 0; done

log "done in $(( $(date +%s) - START )) s; results in $OUT"
failed=$(grep -c '"rc": [1-9]' "$STATUS" || true)
rm -rf "$WORK"
[ "$failed" = 0 ]
