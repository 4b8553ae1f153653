#!/usr/bin/env bash
# Gather, here (online to PyPI), what bench/device_check.sh needs on the lent GPU machine and that machine lacks:
#   .whl/    wheels for its Python 3.12 (gymnasium, mujoco and their needs, gguf), installed there with --no-index;
#   .carry/  the gemma3-270m 0:5 slice, still quantized (frozen-dt backbone export: ~19 MB, not the 253 MB package).
# Both are git-ignored; name them in the device tool's carry (with the tree they stay under its 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=${LAYERS:-0:5}
mkdir -p .whl .carry
platforms=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms="$platforms --platform $p"
done
# What the device machine lacks (its torch, transformers, h5py, safetensors, scipy, tqdm, matplotlib are there).
# mujoco 4 is split: mujoco (python) + mujoco-core (bindings); mujoco-studio (the viewer, 13 MB) is left out.
for pkg in gymnasium==1.4.0 mujoco==4.0.0 mujoco-core==4.0.0 farama-notifications==0.0.4 cloudpickle==3.1.3 \
           gguf==0.19.0 absl-py==2.3.1 glfw==2.10.0 etils==1.13.0 pyyaml==6.0.3 imageio==2.37.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
    -d .whl "$pkg"
done
python3 -m frozen_dt backbone export gemma3-270m --layers "$LAYERS" --out ".carry/gemma3-270m-${LAYERS/:/-}.gguf"
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
