"""What streaming a long answer costs on screen: `%%llm` streamed vs `--no-stream`.

A streamed answer is one display updated in place, and every update resends the whole
text so far. Against the local fake server this prints, for a long answer (5 MB by
default), the wall time of `%%llm --no-stream`, of `%%llm` streamed, and of `%%llm`
streamed with the large-text rule turned off (`display.LARGE` = infinity: what every
update cost before it), with the characters each one published and the ratios. The
display publisher JSON-encodes each bundle as a kernel's would, then drops it.

The last line is pydantic-ai's own stream of the same answer with nothing displayed
(`pydantic_ai.direct.model_request_stream`): the part of a streamed call that is not
nbllm's. Measured Dec 2026 it is most of it for long answers — pydantic-ai rebuilds
the accumulated text on every delta (`TextPartDelta.apply`: `part.content + delta`),
so its cost grows with the square of the answer.

Run: `.venv/bin/python benchmarks/stream_display.py [--mb 5] [--word 512] [--runs 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakeserver import FakeLLMServer  # noqa: E402
from IPython.core.displaypub import DisplayPublisher  # noqa: E402
from magics import isolated_env, serve_lmstudio_from  # noqa: E402  (benchmarks/ is on sys.path when run as a script)



class EncodingPublisher(DisplayPublisher):
    """Encodes what is published as a kernel would (JSON), counts it, keeps nothing.
    Not the plain `DisplayPublisher`, so the magic treats it as a rich front end."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chars = 0
        self.count = 0

    def publish(self, data: dict[str, Any], metadata: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> None:
        self.chars += len(json.dumps(data))
        self.count += 1


def answer(megabytes: float, word: int) -> str:
    """About `megabytes` MB of words of `word` characters (the fake server streams one word per chunk)."""
    unit = ("x" * (word - 1)) + " "
    return (unit * math.ceil(megabytes * 1024 * 1024 / word)).rstrip()


def run_cell(shell: Any, source: str) -> tuple[float, EncodingPublisher]:
    publisher = EncodingPublisher(shell=shell)
    saved, shell.display_pub = shell.display_pub, publisher
    try:
        started = time.perf_counter()
        result = shell.run_cell(source)
        elapsed = time.perf_counter() - started
    finally:
        shell.display_pub = saved
    assert result.success, result.error_in_exec
    return elapsed, publisher


async def pydantic_ai_stream(url: str) -> float:
    """Seconds for pydantic-ai alone to stream the server's answer, nothing displayed."""
    from pydantic_ai.direct import model_request_stream
    from pydantic_ai.messages import ModelRequest, UserPromptPart
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider

    model = OpenAIChatModel("fake-model", provider=OpenAICompatibleProvider("bench", base_url=url, api_key="none"))
    started = time.perf_counter()
    async with model_request_stream(model, [ModelRequest(parts=[UserPromptPart("run")])]) as stream:
        async for _event in stream:
            pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=5.0, help="answer size in MB (default 5)")
    parser.add_argument("--word", type=int, default=512, help="characters per streamed chunk (default 512)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home, env = isolated_env()
    text = answer(args.mb, args.word)
    with FakeLLMServer(reply=text) as server:
        serve_lmstudio_from(server, home, env, LMSTUDIO_TIMEOUT="600")
        from IPython.core.interactiveshell import InteractiveShell

        from nbllm import display

        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "nbllm")
        run_cell(shell, "%%llm --no-stream\nwarm up")  # imports and clients, not measured
        large = display.LARGE
        cases = {"--no-stream": ("--no-stream", large), "streamed": ("", large),
                 "streamed, every update whole (old)": ("", math.inf)}
        times: dict[str, list[float]] = {name: [] for name in cases}
        published: dict[str, EncodingPublisher] = {}
        alone: list[float] = []
        for i in range(args.runs):  # interleaved, so machine noise hits every case alike
            for name, (flags, limit) in cases.items():
                display.LARGE = limit
                elapsed, publisher = run_cell(shell, f"%%llm {flags}\nrun {i}")
                times[name].append(elapsed)
                published[name] = publisher
            alone.append(asyncio.run(pydantic_ai_stream(server.url + "/v1")))
        display.LARGE = large
    size = len(json.dumps({"text/markdown": text, "text/plain": text}))
    base = statistics.median(times["--no-stream"])
    print(f"%%llm with a {len(text) / 1e6:.1f} MB answer in {len(text) // args.word:,} chunks of {args.word} "
          f"characters (median of {args.runs}, interleaved)")
    for name, values in times.items():
        p = published[name]
        med = statistics.median(values)
        print(f"   {name:<36} {med:7.2f} s  ({med / base:5.2f}x --no-stream) | {p.count:4d} displays, "
              f"{p.chars / 1e6:8.1f} MB published ({p.chars / size:5.1f}x the answer)")
    med = statistics.median(alone)
    print(f"   {'pydantic-ai stream alone, no display':<36} {med:7.2f} s  ({med / base:5.2f}x --no-stream)")
    streamed, old = statistics.median(times["streamed"]), statistics.median(times["streamed, every update whole (old)"])
    print(f"   => beyond pydantic-ai's stream: streamed {streamed - med:+.2f} s, every update whole {old - med:+.2f} s")


if __name__ == "__main__":
    main()
