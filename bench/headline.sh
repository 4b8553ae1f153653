#!/usr/bin/env bash
# The seeds' headline across device leases (docs/gpu.md): one lease's chunk. On the lent GPU machine (carry .whl, and
# .carry while a frozen arm is unfinished: `bash bench/headline.sh --plan` says which, and whether the tree fits):
#   1. lay out the package as bench/device_check.sh does (bench/device_site.sh: the carried wheels, the package copy);
#   2. import the carried gemma3-270m 0:5 slice if a frozen arm still trains or evaluates;
#   3. regenerate walker2d-medium-v2 from the shipped behaviour policy into a fresh data dir;
#   4. bench/headline.py run: train what results/headline/ still needs (exact resume from its packed checkpoints)
#      with --stop-after, evaluate what is finished, pack the arms it touched into $OUT (headline-<arm>.tgz,
#      headline-summary.json), all before the deadline.
# Back here: `bash bench/headline.sh --unpack DIR` puts the returned packs under results/headline/ (and writes the
# leaderboard once all nine members are done); commit results/headline/.
#
#   bash bench/headline.sh [--deadline S] [--arms a,b] [--train-flag=--cuda-graph]   # on the device (default 480 s)
#   bash bench/headline.sh --rehearse [--fresh-state]  # here, on CPU, in the device-like environment, tiny protocol:
#                                                      # chunk 1 cut at its first checkpoint, unpacked, chunk 2 to the end
#   bash bench/headline.sh --unpack DIR                # a returned pack into results/headline/
#   bash bench/headline.sh --plan                      # state, what the next lease carries, the travel size
# OUT defaults to results/bench/headline_out (git-ignored); STATE to results/headline (runs/headline-tiny rehearsing).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=device
DEADLINE_S=${DEADLINE_S:-480}
PASS=()
ARMS=""
FRESH=false
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --rehearse) MODE=rehearse ;;
    --fresh-state) FRESH=true ;;
    --deadline) DEADLINE_S=${2:-}; shift ;;
    --arms) ARMS=${2:-}; PASS+=(--arms "$ARMS"); shift ;;
    --train-flag=*) PASS+=("$1") ;;
    --unpack) exec python3 bench/headline.py unpack "${2:?--unpack DIR}" --state "${STATE:-results/headline}" ;;
    --plan) exec python3 bench/headline.py plan --state "${STATE:-results/headline}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "headline.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case $DEADLINE_S in ''|*[!0-9]*) echo "headline.sh: --deadline takes whole seconds, got '$DEADLINE_S'" >&2; exit 2 ;; esac

if [ $MODE = rehearse ]; then  # what the device gets, built here (as bench/device_check.sh --rehearse does)
  bash bench/device_prepare.sh >&2 || { echo "headline.sh: bench/device_prepare.sh failed" >&2; exit 1; }
  paths=$(bash bench/device_rehearse.sh) || { echo "headline.sh: bench/device_rehearse.sh failed" >&2; exit 1; }
  export PATH=$(echo "$paths" | sed -n 's/^VENV=//p')/bin:$PATH PYTHONNOUSERSITE=1
  unset VIRTUAL_ENV PYTHONPATH PYTHONHOME
  WHEELS=$(echo "$paths" | sed -n 's/^WHEELS=//p') DEVICE=cpu STATE=${STATE:-runs/headline-tiny} SCALE="--scale tiny"
  [ $FRESH = true ] && rm -rf "$STATE"
else
  WHEELS=.whl DEVICE=cuda STATE=${STATE:-results/headline} SCALE=""
fi
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/headline.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SITE=$WORK/site
export PY=python3 PYTHONUNBUFFERED=1 MUJOCO_GL=disable PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=$WORK/site
export FROZEN_DT_DATA=$WORK/data FROZEN_DT_CACHE=$WORK/backbones
mkdir -p "$FROZEN_DT_DATA" "$FROZEN_DT_CACHE"
OUT=${OUT:-$ROOT/results/bench/headline_out}
mkdir -p "$OUT"
say() { echo "[headline.sh +$(( $(date +%s) - START ))s] $*"; }
say "mode $MODE, device $DEVICE, deadline ${DEADLINE_S}s, state $STATE, out $OUT"
bash bench/device_site.sh wheels "$SITE" "$WHEELS" || { say "wheel install failed"; exit 1; }
bash bench/device_site.sh package "$SITE" || { say "package copy failed"; exit 1; }
[ -f "$STATE/headline.json" ] || [ -n "$SCALE" ] || { say "no protocol at $STATE/headline.json"; exit 1; }

chunk() {  # one lease's chunk: DEADLINE seconds from now
  local deadline_at=$(( $(date +%s) + $1 ))
  shift
  if [ ! -f "$STATE/headline.json" ] || python3 -P bench/headline.py needs-slice --state "$STATE" ${ARMS:+--arms "$ARMS"}; then
    python3 -P -m frozen_dt backbone import .carry/gemma3-270m-0-5.gguf || { say "slice import failed"; return 1; }
  fi
  python3 -P -m frozen_dt data generate walker2d-medium-v2 $GENERATE --num-envs 16 || { say "generation failed"; return 1; }
  python3 bench/headline.py run --state "$STATE" --out "$OUT" --deadline-at "$deadline_at" --device $DEVICE \
    $SCALE "$@"
}
if [ $MODE = device ]; then
  GENERATE=""
  chunk $(( DEADLINE_S - ($(date +%s) - START) )) "${PASS[@]}"
  exit $?
fi
# the rehearsal: chunk 1 stops at its first checkpoint (deadline 0), its pack goes back into the state as a
# returned pack would, chunk 2 resumes from it to the end, evaluates and is unpacked: the leaderboard follows
GENERATE="--episodes 3"
rm -f "$OUT"/headline-*
chunk 0 "${PASS[@]}" || exit 1
python3 bench/headline.py unpack "$OUT" --state "$STATE" || exit 1
rm -f "$OUT"/headline-*
chunk "$DEADLINE_S" "${PASS[@]}" || exit 1
python3 bench/headline.py unpack "$OUT" --state "$STATE" || exit 1
say "rehearsal done"
