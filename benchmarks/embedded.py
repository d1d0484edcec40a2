"""What the embedded provider costs: its start, the per-call hook, and a call next to a raw POST.

Prints, in one run:
- a health check before the server runs (it never starts it), the first use (which
  starts the server and waits for it), and a health check once it runs;
- the `prepare` hook every embedded call awaits once the server runs (the fast path);
- the median of `nbllm.ask` next to a raw HTTP POST of the same request to the same
  server (interleaved), and their ratio — the model's own time dominates both.

    .venv/bin/python benchmarks/embedded.py [--runs 7] [--tokens 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def isolate() -> None:
    """No keys, no .env, throw-away nbllm files: only what this script sets counts."""
    for key in list(os.environ):
        if key.split("_")[0] in {"OPENAI", "ANTHROPIC", "GEMINI", "GOOGLE", "GROK", "XAI", "LMSTUDIO", "OLLAMA",
                                 "LLAMACPP", "NBLLM", "EMBEDDED"}:
            del os.environ[key]
    state = Path(tempfile.mkdtemp())
    os.environ.update(NBLLM_CONFIG=str(state / "config.json"), NBLLM_HISTORY=str(state / "history.sqlite"),
                      NBLLM_CACHE=str(state / "cache.sqlite"))
    os.chdir(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=8, help="max_tokens of each answer")
    args = parser.parse_args()
    isolate()

    import httpx2

    import nbllm
    from nbllm import bridge, embedded
    from nbllm.registry import get_registry

    started = time.perf_counter()
    idle = nbllm.health_check(["embedded"])["embedded"]
    unstarted = time.perf_counter() - started
    if not idle.available:
        sys.exit(f"embedded is {idle.status}: {idle.error}")
    started = time.perf_counter()
    bridge.run(get_registry().prepare("embedded"))  # what the first call pays
    cold = time.perf_counter() - started
    started = time.perf_counter()
    nbllm.health_check(["embedded"])
    warm = time.perf_counter() - started
    print(f"health check, server not started (no start): {unstarted * 1000:8.1f} ms")
    print(f"first use: start the server and wait for it: {cold * 1000:8.1f} ms")
    print(f"health check, server running (a real probe): {warm * 1000:8.1f} ms")

    async def hooks(n: int) -> float:
        registry = get_registry()
        t = time.perf_counter()
        for _ in range(n):
            await registry.prepare("embedded")
        return (time.perf_counter() - t) / n

    per_hook = bridge.run(hooks(2000))
    print(f"prepare hook per call (fast path):           {per_hook * 1e6:8.1f} µs")

    url = embedded.server_info()["base_url"] + "/chat/completions"
    prompt = "Name a colour."
    body = {"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": args.tokens}
    client = httpx2.Client(timeout=60)
    nbllm.ask(prompt, provider="embedded", temperature=0, max_tokens=args.tokens)  # warm both paths
    client.post(url, json=body).raise_for_status()
    raw, ours = [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        client.post(url, json=body).raise_for_status()
        raw.append(time.perf_counter() - t)
        t = time.perf_counter()
        nbllm.ask(prompt, provider="embedded", temperature=0, max_tokens=args.tokens)
        ours.append(time.perf_counter() - t)
    r, o = statistics.median(raw) * 1000, statistics.median(ours) * 1000
    print(f"ask, {args.tokens} tokens, median of {args.runs}: raw POST {r:7.1f} ms | nbllm.ask {o:7.1f} ms | "
          f"ratio {o / r:.2f}x")
    embedded.stop_server()


if __name__ == "__main__":
    main()
