#!/usr/bin/env bash
# The benchmark environments for benchmarks/speed.py — never the project's .venv:
#   .venv-bench             nbllm (editable) beside its peers: the openai SDK, litellm, ipykernel
#   .venv-bench-jupyter-ai  jupyter-ai's `%%ai` magics (the jupyter-ai-magics package, 2.x) with
#                           langchain-openai for its openai-chat-custom provider, and ipykernel.
# Two environments because they cannot share one: jupyter-ai-magics needs langchain < 0.4, whose
# langchain-openai needs openai < 3, while pydantic-ai 2.x needs openai >= 3.
# Usage: bash benchmarks/speed_setup.sh   (or: python benchmarks/speed.py --setup)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
quiet() { grep -v "^WARNING: Location" || true; }
started=$(date +%s)
[ -x "$ROOT/.venv-bench/bin/python" ] || "$PY" -m venv "$ROOT/.venv-bench"
"$ROOT/.venv-bench/bin/python" -m pip install --quiet -e "$ROOT" litellm openai ipykernel jupyter_client 2>&1 | quiet
echo "nbllm and peers ready in $(( $(date +%s) - started )) s: $ROOT/.venv-bench"
started=$(date +%s)
[ -x "$ROOT/.venv-bench-jupyter-ai/bin/python" ] || "$PY" -m venv "$ROOT/.venv-bench-jupyter-ai"
"$ROOT/.venv-bench-jupyter-ai/bin/python" -m pip install --quiet jupyter-ai-magics "langchain-openai<0.4" ipykernel \
    2>&1 | quiet
echo "jupyter-ai ready in $(( $(date +%s) - started )) s: $ROOT/.venv-bench-jupyter-ai"
