#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install probe_lens with everything its main job and tests need.
# On a machine without an NVIDIA GPU, torch is installed as the CPU build first, so pip never pulls a
# multi-GB CUDA build. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  # On this machine kind the CPU build of torch 2.13.0 lies on disk and pip takes it from there.
  # Elsewhere, on a CPU-only machine, set PIP_INDEX_URL to a CPU wheel index before running this.
  python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet -e ".[test]"
python -c "import probe_lens, torch; print(f'probe_lens {probe_lens.__version__} with torch {torch.__version__} in .venv')"
