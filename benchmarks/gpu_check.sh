#!/usr/bin/env bash
# The first thing to run on a machine with a CUDA GPU (see benchmarks/RESULTS.md, "GPU check").
# Extra arguments go to gpu_check.py (e.g. --out FILE, --skip-study, --allow-download, --device cpu --tiny).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
args=("$@")
case " $* " in *" --out "* | *" --out="*) ;; *) args+=(--out runs/gpu_check.json) ;; esac
exec timeout 660 "$PY" benchmarks/gpu_check.py "${args[@]}"
