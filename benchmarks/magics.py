"""What the magics cost: loading, per call, and from a streamed chunk to the screen.

Prints, in one run (medians; subprocess timings for start-up):
1. `%load_ext nbllm` next to bare IPython start-up and to `import pydantic_ai`;
2. `%%llm --no-stream` against a raw HTTP POST to the same local fake server, with the
   server answering at once and with ~50 ms latency (calls interleaved);
3. the time from the server writing its first streamed text chunk to the display
   publishing it (a hook on the display publisher).

Run: `.venv/bin/python benchmarks/magics.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakeserver import FakeLLMServer  # noqa: E402

PREFIXES = ("OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "GROK_", "XAI_", "LMSTUDIO_", "OLLAMA_", "LLAMACPP_",
            "NBLLM_", "EMBEDDED_")


def isolated_env() -> tuple[Path, dict[str, str]]:
    """A fresh folder, and this process's environment without provider variables, nbllm's files in that folder."""
    home = Path(tempfile.mkdtemp(prefix="nbllm-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    env.update(NBLLM_CONFIG=str(home / "config.json"), NBLLM_HISTORY=str(home / "history.sqlite"),
               NBLLM_CACHE=str(home / "cache.sqlite"))
    return home, env


def serve_lmstudio_from(server: FakeLLMServer, home: Path, env: dict[str, str], **extra: str) -> None:
    """This process as a kernel would be: `env`, lmstudio (the default) on `server`, other local servers closed."""
    closed = "http://127.0.0.1:9"
    os.environ.clear()
    os.environ.update(env, LMSTUDIO_BASE_URL=server.url + "/v1", NBLLM_PROVIDER="lmstudio",
                      OLLAMA_BASE_URL=closed, LLAMACPP_BASE_URL=closed, EMBEDDED_BASE_URL=closed, **extra)
    os.chdir(home)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def subprocess_seconds(code: str, runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def loading(runs: int, env: dict[str, str]) -> None:
    shell = "from IPython.core.interactiveshell import InteractiveShell; ip = InteractiveShell.instance()"
    cases = {
        "python -c pass": "pass",
        "bare IPython shell": shell,
        "IPython + %load_ext nbllm": shell + "; ip.run_line_magic('load_ext', 'nbllm')",
        "python + import pydantic_ai": "import pydantic_ai",
    }
    results = {name: [] for name in cases}
    for _ in range(runs):  # interleaved, so machine noise hits every case alike
        for name, code in cases.items():
            results[name] += subprocess_seconds(code, 1, env)
    med = {name: median_ms(values) for name, values in results.items()}
    print(f"1. Loading (median of {runs} subprocess runs)")
    for name, value in med.items():
        print(f"   {name:<30} {value:8.1f} ms")
    inside = []
    timer = (shell + "; import time; t = time.perf_counter(); ip.run_line_magic('load_ext', 'nbllm'); "
             "print(time.perf_counter() - t)")
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", timer], check=True, env=env, capture_output=True, text=True)
        inside.append(float(out.stdout.strip().splitlines()[-1]))
    print(f"   %load_ext nbllm itself, timed inside the process: {median_ms(inside):.1f} ms")
    ext = median_ms(inside)
    pyd = med["python + import pydantic_ai"] - med["python -c pass"]
    print(f"   => %load_ext nbllm costs {ext:.1f} ms next to IPython's {med['bare IPython shell']:.0f} ms start-up; "
          f"importing pydantic_ai alone adds {pyd:.0f} ms ({pyd / max(ext, 0.1):.0f}x the extension)")


def raw_post(conn: http.client.HTTPConnection, prompt: str) -> str:
    body = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": prompt}]})
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    return json.loads(conn.getresponse().read())["choices"][0]["message"]["content"]


def per_call(shell: Any, server: FakeLLMServer, runs: int) -> None:
    from IPython.utils.capture import capture_output

    print(f"2. Per call: %%llm --no-stream vs raw HTTP POST (median of {runs}, interleaved)")
    for latency in (0.0, 0.05):
        server.set(latency=latency)
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        magic, raw = [], []
        for i in range(runs + 3):
            started = time.perf_counter()
            with capture_output():
                result = shell.run_cell(f"%%llm --no-stream\nquestion {i}")
            elapsed_magic = time.perf_counter() - started
            assert result.success, result.error_in_exec
            started = time.perf_counter()
            assert raw_post(conn, f"question {i}") == f"Echo: question {i}"
            elapsed_raw = time.perf_counter() - started
            if i >= 3:  # the first calls build clients and import pydantic-ai
                magic.append(elapsed_magic)
                raw.append(elapsed_raw)
        conn.close()
        m, r = median_ms(magic), median_ms(raw)
        print(f"   server latency {latency * 1000:3.0f} ms: raw POST {r:6.2f} ms | %%llm {m:6.2f} ms | "
              f"overhead {m - r:5.2f} ms | ratio {m / r:4.2f}x")
    server.set(latency=0.0)


def first_chunk_to_display(shell: Any, server: FakeLLMServer, runs: int) -> None:
    from IPython.utils.capture import capture_output

    marks: dict[str, float] = {}
    base = server.httpd.RequestHandlerClass

    class TimedWrites:
        def __init__(self, raw: Any):
            self.raw = raw

        def write(self, data: bytes) -> Any:
            if data.startswith(b"data: ") and b'"content": "' in data and b'"content": ""' not in data:
                marks.setdefault("chunk", time.perf_counter())
            return self.raw.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.raw, name)

    class TimedHandler(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            super().setup()
            self.wfile = TimedWrites(self.wfile)

    server.httpd.RequestHandlerClass = TimedHandler
    server.set(chunk_delay=0.02)
    delays = []
    for i in range(runs + 2):
        marks.clear()
        with capture_output():
            publisher = shell.display_pub
            publish = publisher.publish

            def hooked(data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
                if data.get("text/plain"):
                    marks.setdefault("display", time.perf_counter())
                return publish(data, *args, **kwargs)

            publisher.publish = hooked
            result = shell.run_cell(f"%%llm\nstream number {i} with a few more words")
        assert result.success, result.error_in_exec
        if i >= 2:
            delays.append(marks["display"] - marks["chunk"])
    server.httpd.RequestHandlerClass = base
    server.set(chunk_delay=0.0)
    print(f"3. Server's first streamed text chunk -> its display (median of {runs}): {median_ms(delays):.2f} ms "
          f"(min {min(delays) * 1000:.2f}, max {max(delays) * 1000:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    home, env = isolated_env()
    loading(max(5, args.runs // 2), env)

    with FakeLLMServer() as server:
        serve_lmstudio_from(server, home, env)
        from IPython.core.interactiveshell import InteractiveShell

        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "nbllm")
        per_call(shell, server, args.runs * 2)
        first_chunk_to_display(shell, server, args.runs)
    print("Note: every %%llm call also appends a row to the call log (SQLite); that is part of the overhead.")


if __name__ == "__main__":
    main()
