#!/usr/bin/env bash
# The prepared GPU check (issue 28): one command from the repository root of a fresh copy, on one GPU.
#   bash bench/gpu_check.sh [--out DIR] [--dry-run] [--only STAGES] ...   (options: bench/gpu_check.py --help)
# Report: gpu_check.json, gpu_check.md, gpu_check.log in --out (default $OUT, else bench/out/gpu_check).
# Wheels carried in .whl/ (a machine without a registry; bench/README.md says how to prepare them) are
# installed into a scratch folder first; the package runs from src/ (no editable install needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "" 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  site=${TMPDIR:-/tmp}/dfrobust-gpu-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" bench/gpu_check.py "$@"
