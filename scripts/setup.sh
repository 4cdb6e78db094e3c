#!/usr/bin/env bash
# Set up aecodec from nothing: a virtual environment in .venv with everything installed.
# Idempotent: a second run only checks that the install is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import aecodec.cli, torch, torchvision, compressai, constriction, pytest, distributed, importlinter, onnxruntime, onnx" 2>/dev/null; then
  echo "[setup] installing aecodec and its dependencies (torch from the local wheel, ~2 min)"
  .venv/bin/pip install --quiet --disable-pip-version-check \
    -c scripts/constraints.txt "torch==2.14.1" "torchvision==0.29.1" -e ".[dev]"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import aecodec, torch; print("aecodec", aecodec.__version__, "torch", torch.__version__)')"
