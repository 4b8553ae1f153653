#!/usr/bin/env bash
# The device check (docs/device-check.md): on the lent GPU machine (one H200, 16 cores, no network; Python 3.12 with
# torch and transformers preinstalled, without gymnasium, mujoco, gguf or backbone weights), within one global
# deadline (DEADLINE_S, default 480 s), the steps in order of value, each under `timeout -k`:
#   1. versions (python, torch, CUDA, cuDNN, transformers, numpy, nvidia-smi, the GPU); install-wheels (.whl/, from
#      bench/device_prepare.sh) and install-package (frozen_dt/ with baselines/ envs/ eval/ inside, into SITE);
#      imports (frozen_dt.envs.registry, eval.rollout, baselines.iql, one Walker2d-v5 step, gguf); the full dataset
#      generation starts in the background; generate-smoke (a 20-episode file for the smokes);
#   2. import-slice (.carry/*.gguf, the gemma3-270m 0:5 slice); peak (measured bf16 matmul); attention (a left-padded
#      batch through the frozen slice, default attention backend against math, forward and backward);
#   3. bench-training (steps/s, TFLOP/s, MFU, 1 and 3 stacked seeds) and bench-stacking, on the training path;
#   4. smoke: every algorithm on the device in one process (train, save, resume, train, 2-episode evaluation);
#   5. headline-pretrained, headline-random, headline-dt: a bounded stacked 3-seed run and a 10-episode evaluation
#      each (a test of the path, not a score); then headline-rates (steps/s per arm, extrapolated to 100k);
#   6. compile: a --compile smoke under a hard timeout (compile time and steps/s after it).
# Everything is written under a work dir; after every step $OUT/results.tgz (temp name, then renamed),
# $OUT/summary.json and $OUT/status.jsonl are refreshed (3 files, no folders: the device returns at most 8 files,
# 2 folders deep) and one line per step goes to stdout (the last 12,000 characters of output come back).
#
# Every Python command runs as `python3 -P` (or as a script in bench/): no command puts the repository root on
# sys.path, so the repository's own frozen_dt/ (which has no envs/, eval/ or baselines/ inside) never shadows the
# package laid out in SITE. tests/test_device_check.py checks this on the layout this script builds.
#
#   bash bench/device_check.sh                       # on the device machine (carry .whl and .carry)
#   bash bench/device_check.sh --steps smoke,compile # a rerun of some steps (their prerequisites run too)
#   bash bench/device_check.sh --rehearse            # here, on CPU: the device's run in an environment like its own
#   bash bench/device_check.sh --dry-run             # here, on CPU, in the development environment, tiny sizes
# Options: --deadline SECONDS (or DEADLINE_S; default 480 on the device, 3000 on CPU); OUT (default results/bench/device_check); HEADLINE_SECONDS.
set -uo pipefail
{  # the whole script is read before it runs: editing this file during a run cannot change that run
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=device
STEPS=""
DEADLINE_S=${DEADLINE_S:-}
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) MODE=dry-run ;;
    --rehearse) MODE=rehearse ;;
    --steps) STEPS=${2:-}; shift ;;
    --steps=*) STEPS=${1#*=} ;;
    --deadline) DEADLINE_S=${2:-}; shift ;;
    --deadline=*) DEADLINE_S=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "device_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -z "$DEADLINE_S" ] && { [ $MODE = device ] && DEADLINE_S=480 || DEADLINE_S=3000; }  # CPU modes: one slow thread
case $DEADLINE_S in ''|*[!0-9]*) echo "device_check.sh: --deadline takes whole seconds, got '$DEADLINE_S'" >&2; exit 2 ;; esac
ALL_STEPS="versions install-wheels install-package imports generate-full generate-smoke import-slice peak attention
  bench-training bench-stacking smoke headline-pretrained headline-random headline-dt headline-rates compile"
for s in ${STEPS//,/ }; do
  case " $(echo $ALL_STEPS) " in *" $s "*) ;; *) echo "device_check.sh: unknown step '$s'; steps: $(echo $ALL_STEPS)" >&2
    exit 2 ;; esac
done

if [ $MODE = rehearse ]; then
  # What the device gets, built here: .whl/ and .carry/ (and the 64 MiB check) as for the device, then a fresh
  # environment with only the device's preinstalled packages and the cp311 builds of the same pinned wheels.
  bash bench/device_prepare.sh || { echo "device_check.sh: bench/device_prepare.sh failed" >&2; exit 1; }
  paths=$(bash bench/device_rehearse.sh) || { echo "device_check.sh: bench/device_rehearse.sh failed" >&2; exit 1; }
  REHEARSE_VENV=$(echo "$paths" | sed -n 's/^VENV=//p')
  REHEARSE_WHEELS=$(echo "$paths" | sed -n 's/^WHEELS=//p')
  export PATH=$REHEARSE_VENV/bin:$PATH PYTHONNOUSERSITE=1
  unset VIRTUAL_ENV PYTHONPATH PYTHONHOME
fi

START=$(date +%s)  # the deadline counts from here (the rehearsal's preparation above is not the device's run)
OUT=${OUT:-$ROOT/results/bench/device_check}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
RES=$WORK/results  # everything measured; packed into $OUT/results.tgz after every step
STEP_PID=""
trap 'rm -rf "$WORK"' EXIT
trap '[ -n "$STEP_PID" ] && kill -TERM $STEP_PID 2>/dev/null; wait; exit 143' TERM INT  # no step outlives the script
mkdir -p "$RES"
export PYTHONUNBUFFERED=1 MUJOCO_GL=disable PYTHONDONTWRITEBYTECODE=1
export FROZEN_DT_DATA=$WORK/data FROZEN_DT_CACHE=$WORK/backbones
mkdir -p "$FROZEN_DT_DATA" "$FROZEN_DT_CACHE" "$WORK/data-full"
PY=${DEVICE_CHECK_PYTHON:-python3}  # the interpreter (a test gives one without the editable install)
FDT="$PY -P -m frozen_dt"
SLICE=.carry/gemma3-270m-0-5.gguf
LAYERS=0:5
if [ $MODE = device ]; then
  DEVICE=cuda SITE=${DEVICE_CHECK_SITE:-/tmp/site} WHEELS=.whl
  SMOKE_STEPS=100 SMOKE_EPISODES=2 SMOKE_DATA="--episodes 20" FULL_DATA="" NUM_ENVS=8 EVAL_CUT="" BATCH=""
  HEADLINE_STEPS=100000 HEADLINE_EPISODES=10 SAVE_EVERY=250 HEADLINE_SECONDS=${HEADLINE_SECONDS:-45}
  BENCH="--steps 10 --warmup 3 --only-bf16" BENCH_LAYERS=5 STACK_BENCH="--steps 20 --warmup 5" ATTENTION="--bf16"
  PEAK="" COMPILE_BUDGET=240 BUDGET_SCALE=1
else  # dry-run and rehearse: CPU, tiny sizes
  DEVICE=cpu SITE=$WORK/site
  SMOKE_STEPS=4 SMOKE_EPISODES=1 SMOKE_DATA="--episodes 3" FULL_DATA="--episodes 6" NUM_ENVS=2
  EVAL_CUT="--max-steps 5 --env-processes on" BATCH="--batch-size 4"  # env workers as on cuda
  HEADLINE_STEPS=4 HEADLINE_EPISODES=1 SAVE_EVERY=2 HEADLINE_SECONDS=${HEADLINE_SECONDS:-300}
  BENCH="--steps 1 --warmup 1 --batch-size 4" STACK_BENCH="--steps 1 --warmup 1 --algos iql" ATTENTION="--batch 4"
  # the steps' budgets are the device's, times 4 here (one CPU thread, often shared); the deadline still bounds all
  PEAK="--size 256 --reps 3" BENCH_LAYERS=5 COMPILE_BUDGET=240 BUDGET_SCALE=4
  if [ $MODE = rehearse ]; then
    WHEELS=$REHEARSE_WHEELS
  else  # the development environment already holds the wheels' packages; a 0:1 slice exported here is enough
    WHEELS="" LAYERS=0:1 BENCH_LAYERS=1 SLICE=$WORK/gemma3-270m-0-1.gguf
  fi
fi
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}

# --- bookkeeping: status.jsonl, summary.json, results.tgz after every step --------------------------------------------
STATUS=$OUT/status.jsonl
: > "$STATUS"
elapsed() { echo $(( $(date +%s) - START )); }
remaining() { echo $(( START + DEADLINE_S - $(date +%s) )); }
say() { echo "[device_check +$(elapsed)s] $*"; }
record() {  # step rc seconds budget timed_out skipped
  printf '{"step": "%s", "rc": %s, "seconds": %s, "budget": %s, "timed_out": %s, "skipped": %s, "elapsed": %s}\n' \
    "$1" "$2" "$3" "$4" "$5" "$6" "$(elapsed)" >> "$STATUS"
}
publish() {  # refresh $OUT/results.tgz and $OUT/summary.json from the work dir
  cp "$STATUS" "$RES/status.jsonl"
  tar -czf "$OUT/results.tgz.tmp" -C "$WORK" results 2>/dev/null && mv -f "$OUT/results.tgz.tmp" "$OUT/results.tgz"
  timeout -k 5 30 $PY -P "$ROOT/bench/device_probe.py" summary "$OUT/summary.json" --results "$RES" \
    --status "$STATUS" --mode "$MODE" --device "$DEVICE" --deadline "$DEADLINE_S" > /dev/null 2>>"$RES/summary.log"
}

# The steps to run: all, or those asked for and what they need (a rerun on a fresh work dir).
needs() {
  case $1 in
    versions|install-wheels) echo "" ;;
    install-package) echo "install-wheels" ;;
    imports|generate-full|generate-smoke|peak) echo "install-wheels install-package" ;;
    import-slice) echo "install-wheels install-package" ;;
    attention|bench-training|bench-stacking) echo "install-wheels install-package import-slice" ;;
    smoke|compile|headline-*) echo "install-wheels install-package import-slice generate-smoke" ;;
  esac
}
WANTED=" "
for s in ${STEPS//,/ }; do WANTED="$WANTED$s $(needs "$s") "; done
[ "$STEPS" = "" ] && WANTED=" $(echo $ALL_STEPS) "
[ "$STEPS" != "" ] && case $STEPS in *headline-*) WANTED="$WANTED headline-rates " ;; esac
wanted() { case $WANTED in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# step NAME BUDGET -- COMMAND...: run under `timeout -k` (budget cut to what is left of the deadline), log to
# $RES/NAME.log, record, publish, print one line. Returns the command's status; never stops the script itself.
step() {
  local name=$1 budget=$2
  shift 2
  [ "$1" = "--" ] && shift
  wanted "$name" || return 0
  budget=$(( budget * BUDGET_SCALE ))
  local left; left=$(remaining)
  if [ "$left" -lt 2 ]; then
    record "$name" null 0 0 false true
    say "$name: skipped (deadline of ${DEADLINE_S}s reached)"
    return 1
  fi
  [ "$budget" -gt "$left" ] && budget=$left
  local t0; t0=$(date +%s)
  # in the background and waited for, so that a TERM or INT to this script reaches the step (timeout passes it on)
  timeout -k 10 "$budget" "$@" > "$RES/$name.log" 2>&1 < /dev/null &
  STEP_PID=$!
  wait $STEP_PID
  local rc=$? took=$(( $(date +%s) - t0 ))
  STEP_PID=""
  local timed_out=false
  if [ $rc = 124 ] || [ $rc = 137 ]; then timed_out=true; fi
  record "$name" "$rc" "$took" "$budget" "$timed_out" false
  publish
  local last; last=$(grep -v '^\s*$' "$RES/$name.log" | tail -1 | cut -c1-160)
  if [ $rc = 0 ]; then
    say "$name: ok in ${took}s (budget ${budget}s) | $last"
  else
    say "$name: FAILED rc $rc in ${took}s (budget ${budget}s, timed out: $timed_out); tail of its log:"
    tail -5 "$RES/$name.log" | cut -c1-300
  fi
  return $rc
}

say "mode $MODE, device $DEVICE, deadline ${DEADLINE_S}s, steps: ${STEPS:-all}; work dir $WORK; outputs in $OUT"
publish

# --- 1. environment ------------------------------------------------------------------------------------------------
# (a failed step never stops the script: what does not need it, the peak say, still runs and returns)
step versions 60 -- $PY -P bench/device_probe.py versions "$RES/versions.json"
export PY  # bench/device_site.sh installs with it
if [ -n "$WHEELS" ]; then
  step install-wheels 120 -- bash bench/device_site.sh wheels "$SITE" "$WHEELS"
fi
# the package as pyproject installs it (baselines, envs and eval inside frozen_dt), without a build step
step install-package 30 -- bash bench/device_site.sh package "$SITE"
IMPORTS="
import frozen_dt, frozen_dt.envs.registry, frozen_dt.eval.rollout, frozen_dt.baselines.iql, gguf, gymnasium as gym
import os
print('frozen_dt from', frozen_dt.__file__)
assert os.path.realpath(frozen_dt.__file__).startswith(os.path.realpath('$SITE') + os.sep), 'not from $SITE'
env = gym.make('Walker2d-v5'); env.reset(seed=0); print('Walker2d-v5 step:', env.step(env.action_space.sample())[1])
print('gguf', gguf.__file__)"
step imports 90 -- bash -c "$PY -P -c \"\$1\" && $FDT data list | grep -c . | sed 's/$/ tasks listed by frozen-dt data list/'" \
  _ "$IMPORTS"

# the full dataset, in the background (the headline trains on it if it is ready by then)
GEN_PID=""
if wanted generate-full; then
  ( timeout -k 10 "$(remaining)" $FDT data generate walker2d-medium-v2 $FULL_DATA --num-envs $NUM_ENVS \
      --out "$WORK/data-full/walker2d-medium-v2.hdf5" > "$RES/generate-full.log" 2>&1
    echo $? > "$WORK/generate-full.rc.tmp"; mv "$WORK/generate-full.rc.tmp" "$WORK/generate-full.rc"
    date +%s > "$WORK/generate-full.end" ) &
  GEN_PID=$!
  GEN_T0=$(date +%s)
  say "generate-full: started in the background (pid $GEN_PID)"
fi
step generate-smoke 120 -- $FDT data generate walker2d-medium-v2 $SMOKE_DATA --num-envs $NUM_ENVS

# --- 2. the slice, the peak, attention on a left-padded batch ----------------------------------------------------------
if [ $MODE = dry-run ]; then  # the development environment exports a 0:1 slice from the package on the spot
  step import-slice 240 -- bash -c "$FDT backbone export gemma3-270m --layers $LAYERS --out $SLICE \
    && $FDT backbone import $SLICE"
else
  step import-slice 90 -- $FDT backbone import "$SLICE"
fi
step peak 60 -- $PY -P bench/device_probe.py peak "$RES/peak.json" --device $DEVICE $PEAK
step attention 120 -- $PY -P bench/device_probe.py attention "$RES/attention.json" --device $DEVICE \
  --layers "$LAYERS" $ATTENTION

# --- 3. throughput through the training path -------------------------------------------------------------------------
# bench/ scripts run as scripts: sys.path[0] is bench/, never the repository root
step bench-training 150 -- $PY bench/bench_training.py --device $DEVICE --backbones gemma3-270m \
  --layers $BENCH_LAYERS --inits pretrained random --stack 3 $BENCH --json "$RES/training_$DEVICE.json"
step bench-stacking 120 -- $PY bench/bench_stacking.py --device $DEVICE --layers "$LAYERS" $STACK_BENCH \
  --json "$RES/stacking_$DEVICE.json"

# --- 4. every algorithm on the device, in one process ------------------------------------------------------------------
RUNS=$WORK/runs
SEQ='import shlex, sys
from frozen_dt.cli import main
failed = []
for command in sys.argv[1:]:
    print(f"+ frozen-dt {command}", flush=True)
    code = main(shlex.split(command))
    if code:
        failed.append(command[:100])
        print(f"  -> exit {code}", flush=True)
print("failed:", failed or "none")
sys.exit(1 if failed else 0)'
smoke=()
half=$(( SMOKE_STEPS / 2 ))
for algo in dt frozen-dt bc iql cql td3bc; do
  extra=""
  [ $algo = frozen-dt ] && extra="--backbone gemma3-270m --layers $LAYERS"
  smoke+=("train walker2d-medium-v2 --algo $algo $extra --device $DEVICE --steps $half --save-every $half \
--log-every $half --eval-episodes 0 $BATCH --run-dir $RUNS/smoke/$algo"
    "train walker2d-medium-v2 --resume $RUNS/smoke/$algo --steps $SMOKE_STEPS"
    "eval $RUNS/smoke/$algo --episodes $SMOKE_EPISODES --device $DEVICE $EVAL_CUT")
done
step smoke 180 -- $PY -P -c "$SEQ" "${smoke[@]}"

# --- 5. the headline path: each arm a bounded stacked run and a short evaluation ------------------------------------------
HEAD=$WORK/runs/headline
headline_data() {  # the full dataset if its background generation has finished, else the smoke file
  if [ -s "$WORK/generate-full.rc" ] && [ "$(cat "$WORK/generate-full.rc")" = 0 ]; then
    echo "--dataset $WORK/data-full/walker2d-medium-v2.hdf5"
  fi
}
for arm in pretrained random dt; do
  if [ $arm = dt ]; then args="--algo dt"; else args="--algo frozen-dt --backbone gemma3-270m --layers $LAYERS --init $arm"; fi
  data=$(headline_data)
  wanted "headline-$arm" && say "headline-$arm: dataset ${data:-the 20-episode smoke file (the full one is not ready)}"
  # SIGINT at HEADLINE_SECONDS: the trainer stops at its last checkpoint (every SAVE_EVERY steps), which is evaluated
  step "headline-$arm" $(( HEADLINE_SECONDS + 90 )) -- bash -c "timeout -s INT -k 20 $HEADLINE_SECONDS $FDT train \
    walker2d-medium-v2 $args $data --seeds 0,1,2 --steps $HEADLINE_STEPS --device $DEVICE --eval-episodes 0 \
    --log-every $SAVE_EVERY --save-every $SAVE_EVERY $BATCH --run-dir $HEAD/$arm; rc=\$?
    [ \$rc = 0 ] || [ \$rc = 124 ] || exit \$rc
    $FDT eval $HEAD/$arm --episodes $HEADLINE_EPISODES --device $DEVICE $EVAL_CUT"
done
step headline-rates 30 -- $PY -P bench/device_probe.py rates "$RES/headline_rates.json" --runs "$HEAD"

# --- 6. torch.compile under a hard timeout ----------------------------------------------------------------------------
step compile $COMPILE_BUDGET -- $PY -P -m frozen_dt train walker2d-medium-v2 --algo frozen-dt --backbone gemma3-270m \
  --layers "$LAYERS" --compile --device $DEVICE --steps $SMOKE_STEPS --log-every $(( SMOKE_STEPS / 2 )) \
  --eval-episodes 0 $BATCH --run-dir "$RUNS/compile"

# --- the background generation: its status, or stop it at the deadline -----------------------------------------------
if [ -n "$GEN_PID" ]; then
  wait "$GEN_PID"  # it runs under a timeout that ends at the deadline
  rc=$(cat "$WORK/generate-full.rc" 2>/dev/null || echo 1); out=false
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then out=true; fi
  took=$(( $(cat "$WORK/generate-full.end" 2>/dev/null || date +%s) - GEN_T0 ))
  record generate-full "$rc" "$took" "$DEADLINE_S" $out false
  say "generate-full: rc $rc in ${took}s in the background | $(tail -1 "$RES/generate-full.log" | cut -c1-160)"
fi
publish
failed=$(grep -c '"rc": [1-9]' "$STATUS" || true)
skipped=$(grep -c '"skipped": true' "$STATUS" || true)
say "done in $(elapsed)s: $failed step(s) failed, $skipped skipped at the deadline; $OUT/summary.json, results.tgz, status.jsonl"
[ "$failed" = 0 ] && [ "$skipped" = 0 ]  # a run cut short by its deadline is not a pass
exit; }
