"""What the notebook as context costs per prompt: `{name}` filling, a `{df}` summary, a `{fig}` image.

One run, interleaved, medians of `--repeat`: `nbllm.ask` against a local server answering at
once (its own process), with
- the floor: a prompt with no braces (the plain-text path, nothing filled);
- a text variable (`{city}`), a 10,000×5 DataFrame (`{df}`, capped at 2,000 tokens), a
  1000×2000 DataFrame, an 800×600 matplotlib figure (`{fig}`, sent as a PNG part);
and the pieces alone, without the request: `summaries.summary`, `images.as_image` and
matplotlib's own `savefig` to PNG (what Jupyter's inline backend does to show the figure,
the peer any image sending pays).

Measured on 2 cores (median of 15, interleaved): ask floor 5.9 ms, `{city}` 4.5 ms (within the noise);
`{df}` 10k×5 18.5 ms (summary alone 12.9); `{df}` 1000×2000 49.9 ms (summary 42.9); `{fig}` 124.8 ms
(as_image 115.1, savefig itself 109.2: as_image is 1.05× what showing the figure costs).

Run: .venv/bin/python benchmarks/context.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from magics import isolated_env  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from servers import start_server, stop  # noqa: E402


def median_ms(run: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    home, env = isolated_env()
    proc, url = start_server(0.0, reply="ok")
    os.environ.clear()
    closed = "http://127.0.0.1:9"
    os.environ.update(env, LMSTUDIO_BASE_URL=url + "/v1", NBLLM_PROVIDER="lmstudio", NBLLM_LOG="0",
                      OLLAMA_BASE_URL=closed, LLAMACPP_BASE_URL=closed, EMBEDDED_BASE_URL=closed, MPLBACKEND="Agg")
    try:
        import matplotlib.pyplot as plt
        import numpy as np
        import pandas as pd

        import nbllm
        from nbllm import images, summaries

        # module globals, as a notebook's variables are (nbllm.ask reads them from the calling frame)
        df = pd.DataFrame(np.random.default_rng(1).random((10_000, 5)), columns=list("abcde"))
        fig, ax = plt.subplots(figsize=(8, 6), dpi=100)
        ax.plot(np.random.default_rng(3).random(200))
        globals().update(city="Lyon", df=df, fig=fig, wide=pd.DataFrame(np.random.default_rng(2).random((1000, 2000))))
        nbllm.ask("warm up")
        assert "<image" in nbllm.ask("Describe {fig}").request.prompt  # the placeholders are really filled

        def savefig() -> None:
            fig.savefig(io.BytesIO(), format="png", bbox_inches="tight", dpi=fig.dpi)

        rows = {
            "ask, no braces (floor)": lambda: nbllm.ask("Hello there"),
            "ask {city}": lambda: nbllm.ask("Hello {city}"),
            "ask {df} 10,000×5": lambda: nbllm.ask("Sum up {df}"),
            "ask {wide} 1000×2000": lambda: nbllm.ask("Sum up {wide}"),
            "ask {fig} 800×600": lambda: nbllm.ask("Describe {fig}"),
            "summary(df) alone": lambda: summaries.summary(df),
            "summary(wide) alone": lambda: summaries.summary(globals()["wide"]),
            "as_image(fig) alone": lambda: images.as_image(fig),
            "matplotlib savefig PNG (peer)": savefig,
        }
        results = {name: [] for name in rows}
        for _ in range(args.repeat):  # interleaved: each round runs every row once
            for name, run in rows.items():
                results[name].append(median_ms(run, 1))
        medians = {name: statistics.median(values) for name, values in results.items()}
        floor = medians["ask, no braces (floor)"]
        print(f"{'work':34} {'median ms':>10} {'vs floor':>10}")
        for name, value in medians.items():
            extra = f"{value - floor:+9.1f}" if name.startswith("ask") else ""
            print(f"{name:34} {value:10.1f} {extra:>10}")
        print(f"as_image ÷ savefig: {medians['as_image(fig) alone'] / medians['matplotlib savefig PNG (peer)']:.2f}×")
    finally:
        stop([proc])


if __name__ == "__main__":
    main()
