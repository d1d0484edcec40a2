"""What a fallback chain costs when its primary is down, measured against asking the
secondary directly (the floor).

`lmstudio` points at a port nothing listens on (refused, like a laptop whose LM Studio
is closed); `llamacpp` is a test server answering in `--latency` seconds. Printed side
by side, medians over `--runs`:

- direct:      `ask(provider="llamacpp")`                                   the floor
- first call:  `ask(provider="lmstudio,llamacpp")` — lmstudio is tried and refused
- later calls: the same — lmstudio is now known down and skipped without a request
- the health timeout (`NBLLM_HEALTH_TIMEOUT`), which the issue says a fallback may add
  at most; and a hanging primary (shown for contrast): routing's model-detection probe
  gives up after the health timeout and the chain moves on without sending the prompt.

Run: .venv/bin/python benchmarks/fallback.py [--runs 30] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakeserver import FakeLLMServer  # noqa: E402
from magics import isolated_env  # noqa: E402


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--latency", type=float, default=0.02, help="the secondary's answer time (s)")
    args = parser.parse_args()
    home, env = isolated_env()
    with FakeLLMServer(latency=args.latency, probe_latency=0) as secondary, FakeLLMServer(mode="hang") as hanging:
        os.environ.clear()
        os.environ.update(env, LLAMACPP_BASE_URL=secondary.url, LMSTUDIO_BASE_URL=closed_url(),
                          OLLAMA_BASE_URL=hanging.url, OLLAMA_TIMEOUT="1", EMBEDDED_ENABLED="0",
                          NBLLM_HEALTH_TIMEOUT="2")
        os.chdir(home)
        import nbllm
        from nbllm import routing

        health_timeout = nbllm.get_registry().global_settings.health_timeout
        nbllm.ask("warm up", provider="llamacpp")
        direct = [timed(lambda: nbllm.ask("q", provider="llamacpp")) for _ in range(args.runs)]
        first, later = [], []
        for _ in range(args.runs):
            routing.invalidate()
            routing.mark_down("lmstudio", None)  # forget that it is down: the first call of a session
            first.append(timed(lambda: nbllm.ask("q", provider="lmstudio,llamacpp")))
            later.append(timed(lambda: nbllm.ask("q", provider="lmstudio,llamacpp")))
        routing.invalidate()
        routing.mark_down("ollama", None)
        hang = timed(lambda: nbllm.ask("q", provider="ollama,llamacpp"))
        assert nbllm.history(1)["provider"].iloc[-1] == "llamacpp"

    floor = statistics.median(direct)
    rows = [
        ("direct to llamacpp (floor)", floor),
        ("chain, primary refused (first call)", statistics.median(first)),
        ("chain, primary known down (later calls)", statistics.median(later)),
        ("chain, primary hanging (first call)", hang),
    ]
    print(f"Fallback from a down primary, median of {args.runs} (secondary answers in {args.latency * 1000:.0f} ms)")
    print(f"{'case':<44}{'ms':>9}{'added ms':>10}")
    for name, value in rows:
        print(f"{name:<44}{value:>9.1f}{value - floor:>10.1f}")
    added = statistics.median(first) - floor
    print(f"added by a refused primary: {added:.1f} ms = {added / (health_timeout * 1000):.3f}× the health timeout "
          f"({health_timeout:g} s; the issue allows at most 1×)")


if __name__ == "__main__":
    main()
