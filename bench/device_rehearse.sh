#!/usr/bin/env bash
# Build, here (online to PyPI), what the CPU rehearsal of the device check runs in, and print the two paths it needs:
#   $REHEARSE_DIR/venv      a fresh Python environment holding only the lent machine's preinstalled packages that the
#                           device run touches (bench/device_rehearse_env.txt; torch is this machine's 2.13.0+cpu
#                           build, linked in, as 2.11 has no CPU build here), nothing of frozen-dt's own dependencies
#                           that the machine lacks (gymnasium, mujoco, gguf, minari, ogbench, ...);
#   $REHEARSE_DIR/wheels    the cp311 builds of exactly the pinned wheels in bench/device_wheels.txt (the device gets
#                           their cp312 builds from bench/device_prepare.sh), installed by the check with --no-index.
# Both are rebuilt when their list changes (or with --fresh); $REHEARSE_DIR defaults to ~/.cache/frozen-dt/rehearsal.
#
#   bash bench/device_rehearse.sh [--fresh]     # prints: VENV=... and WHEELS=...
# Used by `bash bench/device_check.sh --rehearse`; the outer python3 (the one holding torch) supplies the torch build.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${REHEARSE_DIR:-$HOME/.cache/frozen-dt/rehearsal}
[ "${1:-}" = "--fresh" ] && rm -rf "$DIR"
mkdir -p "$DIR"
HOST_PY=${REHEARSE_HOST_PYTHON:-python3}
TORCH_SITE=$("$HOST_PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
TORCH_VERSION=$("$HOST_PY" -c 'import torch; print(torch.__version__)')
spec=$(cat bench/device_rehearse_env.txt; echo "torch $TORCH_VERSION $TORCH_SITE")
wanted=$(printf '%s' "$spec" | sha256sum | cut -c1-16)

VENV=$DIR/venv
if [ "$(cat "$VENV/.spec" 2>/dev/null)" != "$wanted" ]; then
  rm -rf "$VENV"
  "$HOST_PY" -m venv "$VENV"
  # torch as the machine would hold it: only torch's own folders from the host environment, through a .pth file
  # (its pure-Python needs, sympy, networkx, jinja2 ..., are installed below from PyPI)
  mkdir -p "$VENV/torch-site"
  for entry in "$TORCH_SITE"/torch "$TORCH_SITE"/torchgen "$TORCH_SITE"/functorch "$TORCH_SITE"/torch-*.dist-info; do
    [ -e "$entry" ] && ln -s "$entry" "$VENV/torch-site/"
  done
  site=$("$VENV/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$VENV/torch-site" > "$site/device-torch.pth"
  grep -v '^#' bench/device_rehearse_env.txt | grep -v '^$' > "$DIR/requirements.txt"
  "$VENV/bin/python3" -m pip install -q --disable-pip-version-check -r "$DIR/requirements.txt" >&2
  "$VENV/bin/python3" -c 'import torch, transformers, numpy; print("rehearsal venv:", torch.__version__,
    transformers.__version__, numpy.__version__)' >&2
  echo "$wanted" > "$VENV/.spec"
fi

WHEELS=$DIR/wheels
wanted_wheels=$(grep -v '^#' bench/device_wheels.txt | sha256sum | cut -c1-16)
if [ "$(cat "$WHEELS/.spec" 2>/dev/null)" != "$wanted_wheels" ]; then
  rm -rf "$WHEELS"
  mkdir -p "$WHEELS"
  platforms=""
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms="$platforms --platform $p"
  done
  grep -v '^#' bench/device_wheels.txt | grep -v '^$' | while read -r pkg; do
    "$HOST_PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.11 \
      --implementation cp $platforms -d "$WHEELS" "$pkg" >&2
  done
  echo "$wanted_wheels" > "$WHEELS/.spec"
fi
echo "VENV=$VENV"
echo "WHEELS=$WHEELS"
