"""Test servers for benchmarks, each in its own process (no shared GIL or memory accounting with nbllm)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_server(latency: float, **options: object) -> tuple[subprocess.Popen, str]:
    """tests/fakeserver.py answering chats after `latency` s (health and model lists at once);
    `options` are its other flags (`slots=4` → `--slots 4`, `reply="ok"` → `--reply ok`)."""
    flags = [item for name, value in options.items() for item in (f"--{name.replace('_', '-')}", str(value))]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fakeserver.py"), "--port", "0", "--latency", str(latency),
         "--probe-latency", "0", *flags],
        stdout=subprocess.PIPE, text=True,
    )
    return proc, proc.stdout.readline().strip()


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
        proc.wait(5)
