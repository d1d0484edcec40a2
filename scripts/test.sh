#!/usr/bin/env bash
# The README's test command: set up from nothing and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
NBLLM_EXTRAS="test,embedded,browser" bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
