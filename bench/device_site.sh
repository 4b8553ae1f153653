#!/usr/bin/env bash
# Lay frozen-dt out as the lent GPU machine runs it (bench/device_check.sh and bench/headline.sh share this):
#   bash bench/device_site.sh wheels SITE WHEELS_DIR  # the carried wheels: pip install --no-index --no-deps --target SITE
#   bash bench/device_site.sh package SITE            # frozen_dt/ copied into SITE with baselines/ envs/ eval/ inside it
#                                                     # (as pyproject installs them), without a build step
# Commands then run as `python3 -P -m frozen_dt` with PYTHONPATH=SITE: the repository root is never on sys.path, so
# the repository's own frozen_dt/ (no envs/, eval/, baselines/ inside) cannot shadow the copy. PY: the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
case ${1:-} in
  wheels)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --upgrade \
      --target "$2" "$3"/*.whl ;;
  package)
    mkdir -p "$2" && rm -rf "$2/frozen_dt" && cp -r frozen_dt "$2/" && cp -r baselines envs eval "$2/frozen_dt/"
    find "$2/frozen_dt" -name __pycache__ -prune -exec rm -rf {} + ;;
  *) echo "device_site.sh: wheels SITE WHEELS_DIR | package SITE" >&2; exit 2 ;;
esac
