#!/usr/bin/env bash
# The README's test command: set up from nothing and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
NBLLM_EXTRAS="test,embedded,browser" bash scripts/setup.sh
# The browser test drives Debian's chromium through Playwright (never a downloaded browser).
if [ ! -x /usr/lib/chromium/chromium ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
fi
# The example notebooks are checked too: nbval re-runs notebooks/*.ipynb on the embedded
# model and compares every stored output not tagged nbval-ignore-output (model text).
exec .venv/bin/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg \
    --ignore-glob='tests/*.ipynb' "$@"
