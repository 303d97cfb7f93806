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
  if command -v nvidia-smi >/dev/null 2>&1; then
    python -m pip install --quiet "torch==2.13.0"
  else
    # the CPU build (lies on this machine kind's disk; elsewhere from the PyTorch CPU index)
    python -m pip install --quiet "torch==2.13.0" 2>/dev/null \
      || python -m pip install --quiet "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
python -m pip install --quiet -e ".[test]"
python -c "import probe_lens, torch; print(f'probe_lens {probe_lens.__version__} with torch {torch.__version__} in .venv')"
