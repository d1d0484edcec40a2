"""Many providers at once, measured: compare/consensus against the slowest single
provider, and map throughput against the ideal, with peak memory.

Run: .venv/bin/python benchmarks/multi.py [--prompts 500] [--latency 0.05]

The test servers (tests/fakeserver.py) run in their own processes so they do not
share this interpreter's GIL or memory accounting. The call log is on (written to a
temporary file), as it is for users.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import tracemalloc

from servers import start_server, stop  # noqa: E402  (benchmarks/ is on sys.path when run as a script)



def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.05, help="server latency for the map run (s)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="nbllm-bench-")
    os.environ.update(NBLLM_HISTORY=f"{tmp}/history.sqlite", NBLLM_CACHE=f"{tmp}/cache.sqlite",
                      NBLLM_CONFIG=f"{tmp}/config.json", EMBEDDED_ENABLED="0", NBLLM_HEALTH_TIMEOUT="2")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GROK_API_KEY",
                "XAI_API_KEY"):
        os.environ.pop(key, None)
    latencies = {"lmstudio": 0.05, "ollama": 0.1, "llamacpp": 0.2}
    procs = []
    try:
        for name, latency in latencies.items():
            proc, url = start_server(latency, reply="Paris.")
            procs.append(proc)
            os.environ[f"{name.upper()}_BASE_URL"] = url + ("/v1" if name == "lmstudio" else "")
        map_proc, map_url = start_server(args.latency, reply="ok")
        procs.append(map_proc)

        import nbllm

        names = list(latencies)
        for name in names:  # warm up: imports, clients, detected models
            nbllm.ask("warm up", provider=name)

        print(f"== compare / consensus: 3 servers at {', '.join(f'{n} {l*1000:.0f} ms' for n, l in latencies.items())}"
              f" (median of {args.repeat})")
        singles = {name: median_time(lambda name=name: nbllm.ask("capital?", provider=name), args.repeat)
                   for name in names}
        slowest = max(singles.values())
        for name, seconds in singles.items():
            print(f"  ask {name:<9} {seconds * 1000:8.1f} ms")
        rows = [
            ("compare(providers=[3 named])", lambda: nbllm.compare("capital?", providers=names)),
            ("consensus(providers=[3 named])", lambda: nbllm.consensus("capital?", providers=names)),
            ("compare() incl. health check", lambda: nbllm.compare("capital?")),
            ("consensus() incl. health check", lambda: nbllm.consensus("capital?")),
        ]
        for label, fn in rows:
            seconds = median_time(fn, args.repeat)
            print(f"  {label:<32} {seconds * 1000:8.1f} ms   {seconds / slowest:5.2f}× the slowest single "
                  f"({slowest * 1000:.1f} ms); sequential would be {sum(singles.values()) / slowest:.2f}×")

        os.environ["LMSTUDIO_BASE_URL"] = map_url + "/v1"
        nbllm.reinit()
        nbllm.ask("warm up", provider="lmstudio")
        values = [f"prompt {i}" for i in range(args.prompts)]
        print(f"\n== map: {args.prompts} prompts, server latency {args.latency * 1000:.0f} ms")
        for concurrency, log in ((8, True), (32, True), (32, False)):
            ideal = args.prompts / concurrency * args.latency
            nbllm.history.enable() if log else nbllm.history.disable()
            started = time.perf_counter()
            result = nbllm.map(values, "{}", provider="lmstudio", concurrency=concurrency, progress=False)
            seconds = time.perf_counter() - started
            failed = result.attrs["nbllm"]["failed"]
            print(f"  concurrency {concurrency:>3}, call log {'on ' if log else 'off'}: {seconds:6.2f} s, "
                  f"{args.prompts / seconds:7.1f} prompts/s; ideal {ideal:5.2f} s → "
                  f"{seconds / ideal:4.2f}× the ideal; failed {failed}")
        nbllm.history.enable()
        tracemalloc.start()
        nbllm.map(values, "{}", provider="lmstudio", concurrency=32, progress=False)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"  peak memory (tracemalloc, concurrency 32): {peak / 1e6:.1f} MB "
              f"({peak / args.prompts / 1e3:.1f} kB per prompt); still held after: {current / 1e6:.1f} MB")
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
