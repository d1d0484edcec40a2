#!/usr/bin/env bash
# Create .venv (if missing) and install nbllm with the extras named in $NBLLM_EXTRAS.
# Safe to run again: pip skips what is installed; llama-cpp-python's compiled wheel
# is kept in pip's cache, so only the first run on a machine pays the ~10 min build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
# Portable llama.cpp build: no -march=native, so a cached wheel runs on any x86-64.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
.venv/bin/python -m pip install -q -e ".[${NBLLM_EXTRAS:-test}]"
