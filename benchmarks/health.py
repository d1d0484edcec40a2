"""How long the health table costs, and proof that the probes run concurrently.

Prints, in one run, the median wall time of `check_all_providers` next to the sum of
probing each provider on its own, for: every local server down (closed ports), one
server that accepts connections and never answers, and every local server hanging.
A ratio (sum / concurrent) well above 1 means the probes overlap; with hanging
servers the table should cost about one health timeout, not one per provider.

    .venv/bin/python benchmarks/health.py [--runs 5] [--timeout 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakeserver import FakeLLMServer  # noqa: E402

LOCAL = ("lmstudio", "ollama", "llamacpp")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def isolate(timeout: float) -> None:
    """No keys, no .env, a throw-away config file: only what this script sets counts."""
    for key in list(os.environ):
        if key.split("_")[0] in {"OPENAI", "ANTHROPIC", "GEMINI", "GOOGLE", "GROK", "XAI", "LMSTUDIO", "OLLAMA",
                                 "LLAMACPP", "NBLLM", "EMBEDDED"}:
            del os.environ[key]
    os.environ["NBLLM_CONFIG"] = str(Path(tempfile.mkdtemp()) / "config.json")
    os.environ["NBLLM_HEALTH_TIMEOUT"] = str(timeout)
    os.chdir(tempfile.mkdtemp())


def point(urls: dict[str, str]) -> None:
    import nbllm

    for provider, url in urls.items():
        os.environ[f"{provider.upper()}_BASE_URL"] = url
    nbllm.reinit()


async def median_ms(action: Callable[[], Awaitable[object]], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def on_nbllm_loop() -> float:
    """The same check timed on nbllm's own loop: without handing the result to the caller's thread."""
    from nbllm.registry import get_registry

    started = time.perf_counter()
    await get_registry().check(None)
    return (time.perf_counter() - started) * 1000


async def measure(runs: int) -> tuple[float, float, float, dict[str, str]]:
    """Medians (ms): `await check_all_providers()`, the same on nbllm's loop, and the sum of
    `await check_provider(name)` one provider at a time; plus each local provider's error."""
    import nbllm
    from nbllm import bridge

    names = nbllm.providers()
    await nbllm.check_all_providers()  # warm-up: `reinit` dropped the shared HTTP client (~40 ms to rebuild)
    concurrent = await median_ms(nbllm.check_all_providers, runs)
    inside = statistics.median([await bridge.run_async(on_nbllm_loop()) for _ in range(runs)])
    single = 0.0
    for name in names:
        single += await median_ms(lambda n=name: nbllm.check_provider(n), runs)
    errors = {name: h.error or "ok" for name, h in (await nbllm.check_all_providers()).items() if name in LOCAL}
    return concurrent, inside, single, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (medians are printed)")
    parser.add_argument("--timeout", type=float, default=0.5, help="health timeout in seconds")
    args = parser.parse_args()
    isolate(args.timeout)

    import nbllm

    rows = []
    with asyncio.Runner() as caller:  # the caller's own loop, as in a notebook cell's top-level await
        caller.run(nbllm.check_all_providers())  # start nbllm's loop and build the shared client once
        point({name: closed_port_url() for name in (*LOCAL, "embedded")})
        rows.append(("all local servers down (refused)", *caller.run(measure(args.runs))))
        with FakeLLMServer(mode="hang") as hang:
            point({"lmstudio": hang.url + "/v1"})
            rows.append(("one server never answers (lmstudio)", *caller.run(measure(args.runs))))
            point({"lmstudio": hang.url + "/v1", "ollama": hang.url, "llamacpp": hang.url})
            rows.append(("every local server never answers", *caller.run(measure(args.runs))))

    print(f"check_all_providers: {len(nbllm.providers())} providers, health timeout {args.timeout:g} s, "
          f"medians of {args.runs} runs")
    print(f"{'scenario':38} {'concurrent':>11} {'(on loop)':>10} {'sum of singles':>15} {'ratio':>6}")
    for label, concurrent, inside, single, _ in rows:
        print(f"{label:38} {concurrent:>8.1f} ms {inside:>7.1f} ms {single:>12.1f} ms {single / concurrent:>5.1f}x")
    print(f"{'(one health timeout)':38} {args.timeout * 1000:>8.1f} ms")
    print("ratio = sum of singles / concurrent; '(on loop)' excludes handing the result to the caller's thread")
    for label, *_, errors in rows:
        print(f"  {label}: " + "; ".join(f"{n}: {e[:48]}" for n, e in errors.items()))


if __name__ == "__main__":
    main()
