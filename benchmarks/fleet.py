"""A fleet of servers behind one name, measured: `nbllm.map` over ONE server against a
FLEET of three identical ones (`VLLM_BASE_URL=a,b,c`), each answering in `--latency`
seconds and processing at most `--slots` requests at once (like llama.cpp's
`--parallel N` or a GPU's batch), the rest queueing.

With one server, throughput is capped at slots / latency; three servers triple that
cap, so the ideal ratio is 3.0×. The issue wants at least 2.7×: printed, not asserted.
`--concurrency` defaults to twice the fleet's slots (2 × 3 × slots), in both runs: every
server then always has requests waiting, so a slot that frees up starts the next one at
once. With exactly as many requests as slots, nbllm's own few ms between an answer and
the next request go unhidden on the fleet (about 2.6× here) but not on the one server,
which queues the rest anyway — a measurement of the client, not of the fleet.
Measured on 2 cores: 2.83× (4 slots: nbllm's ~4 ms CPU per request puts its ceiling near
the fleet's 240 req/s), 2.99× with `--slots 2`.

Run: .venv/bin/python benchmarks/fleet.py [--prompts 600] [--latency 0.05] [--slots 4]

The servers run in their own processes (no shared GIL with nbllm); the call log is on,
written to a throw-away file, as it is for users.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from magics import isolated_env  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from servers import start_server, stop  # noqa: E402  (benchmarks/ is on sys.path when run as a script)



def point(urls: list[str]) -> None:
    import nbllm

    os.environ["VLLM_BASE_URL"] = ",".join(url + "/v1" for url in urls)
    nbllm.reinit()
    nbllm.ask("warm up", provider="vllm")  # imports, the HTTP client, the model


def run_map(prompts: int, concurrency: int) -> tuple[float, float, int]:
    """Wall seconds, this process's CPU seconds, and how many answers were wrong or missing."""
    import nbllm

    values = [f"prompt {i}" for i in range(prompts)]
    cpu, started = time.process_time(), time.perf_counter()
    result = nbllm.map(values, "{}", provider="vllm", concurrency=concurrency, progress=False)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    wrong = sum(1 for i, text in enumerate(result) if str(text) != f"Echo: prompt {i}")
    return seconds, cpu, wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per chat answer")
    parser.add_argument("--slots", type=int, default=4, help="requests each server processes at once")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="map's concurrency (default 2 × 3 × slots: a queue at every server)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    parser.add_argument("--no-log", action="store_true", help="turn the call log off (NBLLM_LOG=0)")
    args = parser.parse_args()
    concurrency = args.concurrency or 2 * 3 * args.slots

    home, env = isolated_env()
    os.environ.clear()
    closed = "http://127.0.0.1:9"
    os.environ.update(env, NBLLM_PROVIDER="vllm", LMSTUDIO_BASE_URL=closed, OLLAMA_BASE_URL=closed,
                      LLAMACPP_BASE_URL=closed, EMBEDDED_BASE_URL=closed, NBLLM_LOG="0" if args.no_log else "1")
    os.chdir(home)

    procs, urls = [], []
    try:
        for _ in range(3):
            proc, url = start_server(args.latency, slots=args.slots)
            procs.append(proc)
            urls.append(url)
        print(f"== map of {args.prompts} prompts, {args.latency * 1000:.0f} ms per answer, {args.slots} slots per "
              f"server, concurrency {concurrency}, call log {'off' if args.no_log else 'on'} "
              f"(best of {args.repeat}; {os.cpu_count()} cores)")
        results, cpu_per_request = {}, []
        for label, fleet in (("one server", urls[:1]), ("fleet of 3", urls)):
            point(fleet)
            runs = [run_map(args.prompts, concurrency) for _ in range(args.repeat)]
            seconds, cpu, _ = min(runs)
            wrong = sum(w for *_, w in runs)
            cap = len(fleet) * args.slots / args.latency
            results[label] = seconds
            cpu_per_request.append(cpu / args.prompts * 1000)
            print(f"  {label:<11} {seconds:6.2f} s   {args.prompts / seconds:7.1f} req/s   (the servers' cap "
                  f"{cap:.0f} req/s; nbllm CPU {cpu_per_request[-1]:.1f} ms per request; wrong or missing: {wrong})")
        ratio = results["one server"] / results["fleet of 3"]
        print(f"  fleet / one server: {ratio:.2f}× the throughput (ideal 3.00×; the issue asks for ≥ 2.7×)")
        ceiling = 1000 / max(cpu_per_request)
        print(f"  nbllm's own ceiling here: about {ceiling:.0f} req/s (one event loop at "
              f"{max(cpu_per_request):.1f} ms CPU per request, the servers' processes sharing the cores); "
              f"when that is below the fleet's cap the fleet cannot reach 3×")
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
