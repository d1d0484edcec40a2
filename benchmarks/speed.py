"""Speed beside the HTTP floor and the peers (issue 14): every row of its table in one interleaved run.

Contenders, each in its own long-lived worker process so CPU time is its own:
  floor     `asyncio.gather` over one `httpx2.AsyncClient` with a semaphore, posting the chat body
  openai    the openai SDK's `AsyncOpenAI` (one client)
  pydantic  `pydantic_ai.direct.model_request` with one `OpenAIChatModel` built once
  nbllm     nbllm as it is in this working tree (`nbllm.map`, `nbllm.ask`, `nbllm.stream`)
  litellm   `litellm.acompletion`
The servers are tests/fakeserver.py, each in its own process (benchmarks/servers.py). Rounds
interleave the contenders (the order rotates each round); figures are medians of >= 15 rounds.
Peers live in a benchmark environment only (.venv-bench, never the project's .venv):

    python benchmarks/speed.py --setup      # create .venv-bench (pip, from PyPI)
    python benchmarks/speed.py [--rounds 15] # runs itself in .venv-bench

No figure here is asserted: the "goal" column only reads pass or miss.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / ".venv-bench"
BENCH_PYTHON = BENCH_VENV / "bin" / "python"
JUPYTER_AI_PYTHON = ROOT / ".venv-bench-jupyter-ai" / "bin" / "python"
REPLY = "bench-ok"
sys.path.insert(0, str(Path(__file__).resolve().parent))

PEERS = ("floor", "openai", "pydantic", "nbllm", "litellm")
TITLES = {"floor": "floor", "openai": "openai SDK", "pydantic": "pydantic-ai direct", "nbllm": "nbllm now",
          "litellm": "litellm"}
MODEL = "fake-model"
PREFIXES = ("OPENAI", "ANTHROPIC", "GEMINI", "GOOGLE", "GROK", "XAI", "LMSTUDIO", "OLLAMA", "LLAMACPP", "NBLLM",
            "EMBEDDED", "VLLM", "LITELLM", "OPENROUTER", "GROQ", "MISTRAL", "DEEPSEEK", "TOGETHER", "FIREWORKS",
            "CEREBRAS", "JUPYTER")
CLOSED = "http://127.0.0.1:9"


# ----------------------------------------------------------------------------------------------
# Workers: one process per contender; JSON lines in on stdin, out on a private copy of stdout.
# ----------------------------------------------------------------------------------------------

def chat_body(prompt: str, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    return body


class Contender:
    """One way of asking: `one(prompt)` (fast server), `one_slow(prompt)` (50 ms server), `first(prompt)`
    (stream server: returns the monotonic time the first text delta reached the caller)."""

    def __init__(self, urls: dict[str, str]):
        self.urls = urls

    async def gather(self, prompts: list[str], concurrency: int, slow: bool) -> None:
        gate = asyncio.Semaphore(concurrency)
        ask = self.one_slow if slow else self.one

        async def bounded(prompt: str) -> None:
            async with gate:
                await ask(prompt)

        await asyncio.gather(*(bounded(p) for p in prompts))

    def map(self, runner: asyncio.Runner, prompts: list[str], concurrency: int, slow: bool) -> None:
        runner.run(self.gather(prompts, concurrency, slow))

    def ask(self, runner: asyncio.Runner, prompt: str) -> float:
        async def timed() -> float:  # timed inside the loop, as a notebook cell's `await` would be
            started = time.perf_counter()
            await self.alone(prompt)
            return time.perf_counter() - started

        return runner.run(timed())

    async def _ask(self, which: str, prompt: str) -> str:
        """The answer's text from server `which` of `urls` ("fast", "slow", or "single": the fast one on a
        client of its own)."""
        raise NotImplementedError

    async def one(self, prompt: str) -> str:
        return await self._ask("fast", prompt)

    async def one_slow(self, prompt: str) -> str:
        return await self._ask("slow", prompt)

    async def alone(self, prompt: str) -> str:
        """One request on its own: a client that the map rounds did not use (its pool holds one connection,
        as nbllm's shared pool does now that a map brings its own; 32 idle connections left by a map
        make each request check them all, 0.8 → 1.9 ms with httpx2 alone)."""
        return await self._ask("single", prompt)

    def first_chunk(self, runner: asyncio.Runner, prompt: str) -> float:
        return runner.run(self.first(prompt))


class Floor(Contender):
    def __init__(self, urls: dict[str, str]):
        import httpx2

        super().__init__(urls)
        self.client = httpx2.AsyncClient(timeout=60, limits=httpx2.Limits(max_connections=None,
                                                                          max_keepalive_connections=64))
        self.single = httpx2.AsyncClient(timeout=60)

    async def _ask(self, which: str, prompt: str) -> str:
        client = self.single if which == "single" else self.client
        response = await client.post(self.urls[which] + "/chat/completions", json=chat_body(prompt))
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]

    async def first(self, prompt: str) -> float:
        seen = 0.0
        async with self.client.stream("POST", self.urls["stream"] + "/chat/completions",
                                      json=chat_body(prompt, True)) as response:
            async for line in response.aiter_lines():
                if not seen and line.startswith("data: {"):
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    if delta.get("content"):
                        seen = time.monotonic()
        return seen


class OpenAISDK(Contender):
    def __init__(self, urls: dict[str, str]):
        from openai import AsyncOpenAI

        super().__init__(urls)
        self.clients = {k: AsyncOpenAI(base_url=u, api_key="none") for k, u in urls.items()}

    async def _ask(self, which: str, prompt: str) -> str:
        done = await self.clients[which].chat.completions.create(model=MODEL, messages=chat_body(prompt)["messages"])
        return done.choices[0].message.content or ""

    async def first(self, prompt: str) -> float:
        seen = 0.0
        chunks = await self.clients["stream"].chat.completions.create(
            model=MODEL, messages=chat_body(prompt)["messages"], stream=True)
        async for chunk in chunks:
            if not seen and chunk.choices and chunk.choices[0].delta.content:
                seen = time.monotonic()
        return seen


class PydanticDirect(Contender):
    def __init__(self, urls: dict[str, str]):
        from pydantic_ai.direct import model_request, model_request_stream
        from pydantic_ai.messages import ModelRequest
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.profiles.openai import OpenAIModelProfile
        from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider

        super().__init__(urls)
        profile = OpenAIModelProfile(openai_chat_supports_max_completion_tokens=False)
        self.models = {k: OpenAIChatModel(MODEL, provider=OpenAICompatibleProvider(k, base_url=u, api_key="none"),
                                          profile=profile) for k, u in urls.items()}
        self.request, self.request_stream, self.message = model_request, model_request_stream, ModelRequest

    async def _ask(self, which: str, prompt: str) -> str:
        response = await self.request(self.models[which], [self.message.user_text_prompt(prompt)])
        return response.text or ""

    async def first(self, prompt: str) -> float:
        from pydantic_ai.messages import PartDeltaEvent, PartStartEvent, TextPart, TextPartDelta

        seen = 0.0
        async with self.request_stream(self.models["stream"], [self.message.user_text_prompt(prompt)]) as stream:
            async for event in stream:
                text = ""
                if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                    text = event.part.content
                elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                    text = event.delta.content_delta
                if text and not seen:
                    seen = time.monotonic()
        return seen


class LiteLLM(Contender):
    def __init__(self, urls: dict[str, str]):
        import litellm

        super().__init__(urls)
        litellm.telemetry = False
        litellm.suppress_debug_info = True
        self.litellm = litellm

    async def _completion(self, which: str, prompt: str, **extra: Any) -> Any:
        return await self.litellm.acompletion(model=f"openai/{MODEL}", api_base=self.urls[which], api_key="none",
                                              messages=chat_body(prompt)["messages"], **extra)

    async def _ask(self, which: str, prompt: str) -> str:
        return (await self._completion(which, prompt)).choices[0].message.content

    async def first(self, prompt: str) -> float:
        seen = 0.0
        async for chunk in await self._completion("stream", prompt, stream=True):
            if not seen and chunk.choices and chunk.choices[0].delta.content:
                seen = time.monotonic()
        return seen


class Nbllm(Contender):
    """nbllm's own sync entry points, called as a notebook cell calls them (its loop runs in its thread).
    Providers: lmstudio = the fast server, vllm = the 50 ms one, ollama = the streaming one."""

    def __init__(self, urls: dict[str, str]):
        import nbllm

        super().__init__(urls)
        self.nbllm = nbllm

    def map(self, runner: asyncio.Runner, prompts: list[str], concurrency: int, slow: bool) -> None:
        result = self.nbllm.map(prompts, "{}", provider="vllm" if slow else "lmstudio", concurrency=concurrency,
                                progress=False)
        failed = result.attrs["nbllm"]["failed"]
        if failed:
            raise RuntimeError(f"nbllm.map: {failed} of {len(prompts)} prompts failed")

    def ask(self, runner: asyncio.Runner, prompt: str) -> float:
        started = time.perf_counter()
        answer = self.nbllm.ask(prompt, provider="lmstudio")
        elapsed = time.perf_counter() - started
        if answer.error:
            raise RuntimeError(f"nbllm.ask: {answer.error}")
        return elapsed

    def first_chunk(self, runner: asyncio.Runner, prompt: str) -> float:
        seen = 0.0
        for delta in self.nbllm.stream(prompt, provider="ollama"):
            if delta and not seen:
                seen = time.monotonic()
        return seen

    def memory(self, count: int, runs: int, mode: str) -> list[float]:
        """Bytes kept after each map of `count` prompts (result kept, gc run): the first run from before
        it, later runs from after the previous one (whose result was dropped first). `mode` "rss": the
        process's resident memory after gc and malloc_trim; "tracemalloc": Python's allocations only
        (exact, but it makes a map ~3x slower)."""
        import ctypes
        import gc
        import tracemalloc

        def level() -> int:
            gc.collect()
            if mode == "tracemalloc":
                return tracemalloc.get_traced_memory()[0]
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except (OSError, AttributeError):
                pass
            return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

        values = [f"memory prompt {i}" for i in range(count)]
        self.nbllm.map(values[:256], "{}", provider="lmstudio", concurrency=32, progress=False)  # warm
        if mode == "tracemalloc":
            tracemalloc.start()
        before = level()
        growth, result = [], None
        for _ in range(runs):
            result = None
            result = self.nbllm.map(values, "{}", provider="lmstudio", concurrency=32, progress=False)
            now = level()
            growth.append(now - before)
            before = now
        tracemalloc.stop()
        if result is None or len(result) != count or result.attrs["nbllm"]["failed"]:
            raise RuntimeError("the memory map did not answer every prompt")
        return growth

    def health(self, runs: int) -> list[float]:
        async def once() -> tuple[float, int]:
            started = time.perf_counter()
            found = await self.nbllm.check_all_providers()
            return time.perf_counter() - started, sum(1 for h in found.values() if h.latency_ms is not None)

        with asyncio.Runner() as runner:
            probed = runner.run(once())[1]  # warm-up: clients, imports
            times = [runner.run(once())[0] for _ in range(runs)]
        return [float(probed), *times]

    def compare(self, names: list[str]) -> dict[str, float]:
        found = {}
        for name in names:
            started = time.perf_counter()
            answer = self.nbllm.ask("capital?", provider=name)
            found[name] = time.perf_counter() - started
            if answer.error:
                raise RuntimeError(f"{name}: {answer.error}")
        started = time.perf_counter()
        frame = self.nbllm.compare("capital?", providers=names)
        found["compare"] = time.perf_counter() - started
        if len(frame) != len(names):
            raise RuntimeError(f"compare gave {len(frame)} rows")
        return found


KINDS: dict[str, type[Contender]] = {"floor": Floor, "openai": OpenAISDK, "pydantic": PydanticDirect,
                                     "nbllm": Nbllm, "litellm": LiteLLM}


def worker(kind: str) -> None:
    """Serve requests from the orchestrator until stdin closes; libraries' prints go to stderr."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    urls = json.loads(os.environ["SPEED_URLS"])
    contender = KINDS[kind](urls)
    with asyncio.Runner() as runner:
        for line in sys.stdin:
            order = json.loads(line)
            op = order.pop("op")
            try:
                if op == "map":
                    prompts = [f"{order['tag']} prompt {i}" for i in range(order["n"])]
                    cpu, wall = time.process_time(), time.perf_counter()
                    contender.map(runner, prompts, order["c"], order["slow"])
                    value: Any = {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}
                elif op == "ask":
                    value = [contender.ask(runner, f"{order['tag']} question {i}") for i in range(order["k"])]
                elif op == "first":
                    value = []
                    for i in range(order["k"]):
                        before = _stamps(order["stamps"])
                        seen = contender.first_chunk(runner, f"{order['tag']} stream {i}")
                        stamps = _stamps(order["stamps"])
                        if len(stamps) != len(before) + 1 or not seen:
                            raise RuntimeError("no stamped first chunk")
                        value.append(seen - stamps[-1])
                else:
                    value = getattr(contender, op)(**order)
                out.write(json.dumps({"value": value}) + "\n")
            except Exception as exc:  # reported, the run goes on
                out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}) + "\n")


def _stamps(path: str) -> list[float]:
    try:
        return [float(x) for x in Path(path).read_text().split()]
    except FileNotFoundError:
        return []


class Worker:
    def __init__(self, kind: str, env: dict[str, str]):
        self.kind = kind
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", kind], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                     cwd=env.get("SPEED_HOME"))

    def __call__(self, op: str, **order: Any) -> Any:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"op": op, **order}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.kind} worker died")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.kind}: {answer['error']}")
        return answer["value"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ----------------------------------------------------------------------------------------------
# The orchestrator
# ----------------------------------------------------------------------------------------------

def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without provider variables; nbllm's files in `home`."""
    env = {k: v for k, v in os.environ.items() if k.split("_")[0] not in PREFIXES}
    env.update(NBLLM_CONFIG=str(home / "config.json"), NBLLM_HISTORY=str(home / "history.sqlite"),
               NBLLM_CACHE=str(home / "cache.sqlite"), NBLLM_JOBS=str(home / "jobs.sqlite"),
               EMBEDDED_ENABLED="0", SPEED_HOME=str(home), **extra)
    return env


def home_dir(name: str, base: Path) -> Path:
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def rotated(items: tuple[str, ...] | list[str], shift: int) -> list[str]:
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in ("pydantic-ai-slim", "openai", "httpx2", "litellm", "ipykernel"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} -")
    code = ("from importlib.metadata import version as v; "
            "print(f\"jupyter-ai-magics {v('jupyter-ai-magics')} (langchain-openai {v('langchain-openai')}, "
            "openai {v('openai')}, in .venv-bench-jupyter-ai)\")")
    found = subprocess.run([str(JUPYTER_AI_PYTHON), "-c", code], capture_output=True, text=True)
    parts.append(found.stdout.strip() or "jupyter-ai-magics -")
    return ", ".join(parts)


def commit() -> str:
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "nbllm"], capture_output=True,
                           text=True)
    return head.stdout.strip() + (" + uncommitted changes in nbllm/" if dirty.stdout.strip() else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# -- fresh kernels --------------------------------------------------------------------------------

def kernel_first_answer(python: Path | str, env: dict[str, str], cells: list[str], expect: str) -> float:
    """Start a real ipykernel; once it is ready, send `cells` back to back and time until the last one's
    reply (seconds). `expect` must appear in what the kernel printed or displayed."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    specs = Path(env["SPEED_HOME"]) / "kernels"
    (specs / "bench").mkdir(parents=True, exist_ok=True)
    (specs / "bench" / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "bench",
        "language": "python"}))
    manager = KernelManager(kernel_name="bench", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
    manager.start_kernel(env=env, cwd=env["SPEED_HOME"], stderr=subprocess.DEVNULL)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        started = time.perf_counter()
        ids = [client.execute(cell) for cell in cells]
        replies = {}
        while len(replies) < len(ids):
            msg = client.get_shell_msg(timeout=60)
            if msg["parent_header"].get("msg_id") in ids:
                replies[msg["parent_header"]["msg_id"]] = msg["content"]
        elapsed = time.perf_counter() - started
        shown = []
        while True:
            try:
                msg = client.get_iopub_msg(timeout=0.5)
            except Exception:
                break
            content = msg["content"]
            shown.append(json.dumps(content.get("data") or content.get("text") or content.get("evalue") or ""))
        for content in replies.values():
            if content["status"] != "ok":
                raise RuntimeError(f"cell failed: {content.get('ename')}: {content.get('evalue')}"[:300])
        if expect not in "".join(shown):
            raise RuntimeError(f"{expect!r} not in the kernel's output: {''.join(shown)[:300]}")
        return elapsed
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def first_status(env: dict[str, str]) -> float:
    code = ("from IPython.core.interactiveshell import InteractiveShell\n"
            "from IPython.utils.capture import capture_output\n"
            "import time\nip = InteractiveShell.instance()\nip.run_line_magic('load_ext', 'nbllm')\n"
            "with capture_output() as shown:\n    t = time.perf_counter()\n"
            "    ip.run_line_magic('llm_providers', '--status')\n    t = time.perf_counter() - t\n"
            "assert 'lmstudio' in shown.stdout + ''.join(str(o.data) for o in shown.outputs), 'no status shown'\n"
            "print(t)\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=env["SPEED_HOME"])
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1][:300])
    return float(done.stdout.strip().splitlines()[-1])


# -- the run --------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> None:
    from servers import start_server, stop

    base = Path(tempfile.mkdtemp(prefix="nbllm-speed-"))
    stamps = str(base / "stamps.txt")
    procs = []
    began = time.perf_counter()

    def server(latency: float, **options: Any) -> str:
        proc, url = start_server(latency, **options)
        procs.append(proc)
        return url

    rows: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    try:
        fast, slow = server(0, reply=REPLY), server(args.latency, reply=REPLY)
        streaming = server(0, reply="one two three four", chunk_delay=0.02, stamp_file=stamps)
        urls = {"fast": fast + "/v1", "slow": slow + "/v1", "stream": streaming + "/v1", "single": fast + "/v1"}
        peer_home = home_dir("peers", base)
        nb_env = clean_env(home_dir("nbllm", base), SPEED_URLS=json.dumps(urls), LMSTUDIO_BASE_URL=urls["fast"],
                           VLLM_BASE_URL=urls["slow"], OLLAMA_BASE_URL=streaming, LLAMACPP_BASE_URL=CLOSED,
                           LITELLM_BASE_URL=CLOSED, NBLLM_PROVIDER="lmstudio")
        workers = {kind: Worker(kind, nb_env if kind == "nbllm" else clean_env(peer_home, SPEED_URLS=json.dumps(urls)))
                   for kind in PEERS}
        for kind, w in workers.items():  # warm up: imports, clients, detected models
            w("map", tag="warm", n=64, c=32, slow=False)
            w("map", tag="warm", n=32, c=32, slow=True)
            w("ask", tag="warm", k=3)
            w("first", tag="warm", k=1, stamps=stamps)

        def each_round(label: str, op: str, pick, **order: Any) -> dict[str, list[float]]:
            found: dict[str, list[float]] = {kind: [] for kind in PEERS}
            failed: dict[str, str] = {}
            for r in range(args.rounds):
                for kind in rotated(PEERS, r):
                    if kind in failed:
                        continue
                    try:
                        found[kind] += pick(workers[kind](op, tag=f"{label}{r}", **order))
                    except RuntimeError as exc:
                        failed[kind] = str(exc)
            for kind, why in failed.items():
                notes.append(f"{label}: {TITLES[kind]} failed: {why}")
                found[kind] = []
            return found

        print(f"[{time.perf_counter() - began:5.0f} s] map, CPU per request ...", file=sys.stderr)
        n = args.cpu_requests
        cpu = each_round("cpu", "map", lambda v: [v["cpu"] / n * 1000], n=n, c=32, slow=False)
        rows["cpu"] = {k: med(v) for k, v in cpu.items()}
        print(f"[{time.perf_counter() - began:5.0f} s] map at {args.latency * 1000:.0f} ms ...", file=sys.stderr)
        ideal = args.prompts / 32 * args.latency
        wall = each_round("wall", "map", lambda v: [v["wall"] / ideal], n=args.prompts, c=32, slow=True)
        rows["wall"] = {k: med(v) for k, v in wall.items()}
        print(f"[{time.perf_counter() - began:5.0f} s] one ask ...", file=sys.stderr)
        ask = each_round("ask", "ask", lambda v: [med(v) * 1000], k=args.asks)
        rows["ask"] = {k: med(v) for k, v in ask.items()}
        print(f"[{time.perf_counter() - began:5.0f} s] first streamed chunk ...", file=sys.stderr)
        first = each_round("first", "first", lambda v: [x * 1000 for x in v], k=3, stamps=stamps)
        rows["first"] = {k: med(v) for k, v in first.items()}

        print(f"[{time.perf_counter() - began:5.0f} s] memory per map prompt ...", file=sys.stderr)
        try:
            growth = workers["nbllm"]("memory", count=args.memory_prompts, runs=3, mode=args.memory_mode)
            rows["memory"] = [g / args.memory_prompts for g in growth]
        except RuntimeError as exc:
            notes.append(f"memory: {exc}")
        for w in workers.values():
            w.close()

        print(f"[{time.perf_counter() - began:5.0f} s] health and compare ...", file=sys.stderr)
        hang = server(0, mode="hang")
        health_env = clean_env(home_dir("health", base), SPEED_URLS=json.dumps(urls), NBLLM_HEALTH_TIMEOUT="0.5",
                               LMSTUDIO_BASE_URL=hang + "/v1", OLLAMA_BASE_URL=fast, LLAMACPP_BASE_URL=fast,
                               VLLM_BASE_URL=urls["fast"], LITELLM_BASE_URL=urls["fast"], OPENAI_API_KEY="sk-bench",
                               OPENAI_BASE_URL=urls["fast"], GROK_API_KEY="bench", GROK_BASE_URL=urls["fast"])
        health = Worker("nbllm", health_env)
        try:
            probed, *times = health("health", runs=args.rounds)
            rows["health"] = (int(probed), med(times) / 0.5)
        except RuntimeError as exc:
            notes.append(f"health: {exc}")
        health.close()
        latencies = {"lmstudio": 0.05, "ollama": 0.1, "llamacpp": 0.2}
        multi_urls = {name: server(latency, reply="Paris.") for name, latency in latencies.items()}
        compare_env = clean_env(home_dir("compare", base), SPEED_URLS=json.dumps(urls),
                                LMSTUDIO_BASE_URL=multi_urls["lmstudio"] + "/v1", OLLAMA_BASE_URL=multi_urls["ollama"],
                                LLAMACPP_BASE_URL=multi_urls["llamacpp"], VLLM_BASE_URL=CLOSED,
                                LITELLM_BASE_URL=CLOSED)
        compare = Worker("nbllm", compare_env)
        try:
            compare("compare", names=list(latencies))  # warm up
            found = [compare("compare", names=list(latencies)) for _ in range(args.rounds)]
            singles = {name: med([f[name] for f in found]) for name in latencies}
            rows["compare"] = (med([f["compare"] for f in found]) / max(singles.values()), max(singles.values()))
        except RuntimeError as exc:
            notes.append(f"compare: {exc}")
        compare.close()

        print(f"[{time.perf_counter() - began:5.0f} s] fresh kernels ...", file=sys.stderr)
        kernel_env = clean_env(home_dir("kernel", base), LMSTUDIO_BASE_URL=urls["fast"], NBLLM_PROVIDER="lmstudio",
                               OLLAMA_BASE_URL=CLOSED, LLAMACPP_BASE_URL=CLOSED, VLLM_BASE_URL=CLOSED,
                               LITELLM_BASE_URL=CLOSED)
        # jupyter-ai's OpenAI-compatible provider reads its base URL from OPENAI_API_BASE (langchain-openai)
        ai_env = clean_env(home_dir("jupyter-ai", base), OPENAI_API_KEY="sk-bench", OPENAI_API_BASE=urls["fast"])
        cases = {
            "nbllm": (sys.executable, kernel_env, ["%load_ext nbllm", "%%llm\nsay ok"], REPLY),
            "jupyter-ai": (JUPYTER_AI_PYTHON, ai_env, ["%load_ext jupyter_ai_magics",
                                                       f"%%ai openai-chat-custom:{MODEL}\nsay ok"], REPLY),
        }
        kernels: dict[str, list[float]] = {name: [] for name in cases}
        broken: dict[str, str] = {}
        for r in range(args.kernel_rounds):
            for name in rotated(list(cases), r):
                if name in broken:
                    continue
                try:
                    kernels[name].append(kernel_first_answer(*cases[name]) * 1000)
                except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
                    broken[name] = f"{type(exc).__name__}: {exc}"[:300]
        for name, why in broken.items():
            notes.append(f"fresh kernel: {name} failed: {why}")
            kernels[name] = []
        rows["kernel"] = {name: med(v) for name, v in kernels.items()}
        status_env = clean_env(home_dir("status", base), LMSTUDIO_BASE_URL=urls["fast"], OLLAMA_BASE_URL=CLOSED,
                               LLAMACPP_BASE_URL=CLOSED, VLLM_BASE_URL=CLOSED, LITELLM_BASE_URL=CLOSED)
        try:
            rows["status"] = med([first_status(status_env) * 1000 for _ in range(args.kernel_rounds)])
        except RuntimeError as exc:
            notes.append(f"status: {exc}")
    finally:
        stop(procs)
    report(args, rows, notes, time.perf_counter() - began)


def cell(value: float | None, floor: float | None, unit: str) -> str:
    if value is None or value != value:
        return "–"
    text = f"{value:.2f}{unit}" if unit != "×" else f"{value:.2f}×"
    if floor and floor == floor and unit != "×":
        text += f" ({value / floor:.2f}×)"
    return text


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("pass" if ok else "MISS")


def report(args: argparse.Namespace, rows: dict[str, Any], notes: list[str], seconds: float) -> None:
    print(f"# nbllm speed beside the HTTP floor and its peers (issue 14) — one interleaved run, {seconds:.0f} s")
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}; Python {platform.python_version()}")
    print(f"nbllm commit {commit()}; {versions()}")
    print(f"memory read as {args.memory_mode}; medians of {args.rounds} rounds (kernels and status: {args.kernel_rounds}); contenders' order rotates "
          f"each round; servers: tests/fakeserver.py in their own processes\n")
    head = ["work", *[TITLES[k] for k in PEERS], "goal", ""]
    table: list[list[str]] = []

    def peer_row(label: str, key: str, unit: str, goal: str, test) -> None:
        found = rows.get(key) or {}
        floor = found.get("floor")
        values = [cell(found.get(k), floor if k != "floor" else None, unit) for k in PEERS]
        nb = found.get("nbllm")
        ok = None if nb is None or nb != nb or floor is None or floor != floor else test(nb, floor)
        table.append([label, *values, goal, verdict(ok)])

    peer_row("`map`, CPU per request, c=32 (ms)", "cpu", " ms", "≤ 1.5× floor", lambda v, f: v <= 1.5 * f)
    peer_row(f"`map` {args.prompts} prompts at {args.latency * 1000:.0f} ms, c=32, wall ÷ ideal", "wall", "×",
             "≤ 1.18× ideal", lambda v, f: v <= 1.18)
    peer_row("one `ask`, server answering at once, wall (ms)", "ask", " ms", "≤ 1.6× floor",
             lambda v, f: v <= 1.6 * f)
    kernel = rows.get("kernel") or {}
    nb, ai = kernel.get("nbllm"), kernel.get("jupyter-ai")
    ok = None if nb is None or ai is None or nb != nb or ai != ai else nb <= 0.35 * ai
    ratio = f" ({nb / ai:.2f}× jupyter-ai)" if ok is not None else ""
    table.append([f"fresh kernel: `%load_ext` + first `%%llm` (jupyter-ai {cell(ai, None, ' ms')})", "–", "–", "–",
                  cell(nb, None, " ms") + ratio, "–", "≤ 0.35× jupyter-ai", verdict(ok)])
    status = rows.get("status")
    table.append(["first `%llm_providers --status` in a process", "–", "–", "–", cell(status, None, " ms"), "–",
                  "≤ 100 ms", verdict(None if status is None else status <= 100)])
    memory = rows.get("memory")
    if memory:
        first_kb, later = memory[0] / 1024, [m / 1024 for m in memory[1:]]
        table.append([f"memory kept per `map` prompt ({args.memory_prompts:,} prompts)", "–", "–", "–",
                      f"{first_kb:.2f} KB", "–", "≤ 0.5 KB", verdict(first_kb <= 0.5)])
        table.append(["  growth per prompt, 2nd and 3rd map (previous result dropped)", "–", "–", "–",
                      ", ".join(f"{g:+.3f} KB" for g in later), "–", "flat (≤ 0.05 KB)",
                      verdict(all(abs(g) <= 0.05 for g in later))])
    else:
        table.append(["memory kept per `map` prompt", "–", "–", "–", "–", "–", "≤ 0.5 KB", "–"])
    health = rows.get("health")
    table.append([f"P2 health ({health[0] if health else '?'} probes, one never answering) ÷ one timeout (0.5 s)",
                  "–", "–", "–", cell(health[1] if health else None, None, "×"), "–", "≤ 1.05×",
                  verdict(None if not health else health[1] <= 1.05)])
    compare = rows.get("compare")
    table.append([f"compare (3 servers, 50/100/200 ms) ÷ the slowest provider"
                  f"{f' ({compare[1] * 1000:.0f} ms)' if compare else ''}", "–", "–", "–",
                  cell(compare[0] if compare else None, None, "×"), "–", "≤ 1.05×",
                  verdict(None if not compare else compare[0] <= 1.05)])
    peer_row("first streamed chunk, after the server sent it (ms)", "first", " ms", "≤ 2 ms",
             lambda v, f: v <= 2.0)

    widths = [max(len(r[i]) for r in [head, *table]) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in table:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    print("\nfloor = asyncio.gather over one httpx2.AsyncClient with a semaphore (one request for `ask`); "
          "(n×) = the ratio to the floor.")
    print("`ask`: every contender sends it on a client the map rounds did not use (a map's 32 idle connections "
          "slow each later request of their pool), as nbllm's map keeps its own pool.")
    print(f"ideal = {args.prompts}/32 × {args.latency * 1000:.0f} ms = {args.prompts / 32 * args.latency:.3f} s; "
          f"CPU = the worker process's CPU time ÷ {args.cpu_requests} requests per round.")
    for note in notes:
        print(f"note: {note}")


def setup() -> None:
    """Create .venv-bench with nbllm (editable) and the peers, and say how long it took."""
    base = getattr(sys, "_base_executable", sys.executable)
    started = time.perf_counter()
    subprocess.run(["bash", str(ROOT / "benchmarks" / "speed_setup.sh")], check=True,
                   env={**os.environ, "PYTHON": base})
    print(f"setup took {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="create the benchmark environment .venv-bench")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per row (default 15)")
    parser.add_argument("--kernel-rounds", type=int, default=15, help="fresh kernels / processes per case")
    parser.add_argument("--cpu-requests", type=int, default=320, help="requests per round for CPU per request")
    parser.add_argument("--prompts", type=int, default=500, help="prompts of the 50 ms map (default 500)")
    parser.add_argument("--latency", type=float, default=0.05, help="server latency of that map (s)")
    parser.add_argument("--asks", type=int, default=10, help="asks per round (the round's median counts)")
    parser.add_argument("--memory-prompts", type=int, default=10_000)
    parser.add_argument("--memory-mode", choices=("rss", "tracemalloc"), default="rss",
                        help="how kept memory is read (default rss: tracemalloc makes 10,000 prompts take minutes)")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    if args.setup:
        return setup()
    if Path(sys.prefix).resolve() != BENCH_VENV.resolve():
        if not BENCH_PYTHON.exists():
            sys.exit(f"no benchmark environment at {BENCH_VENV}: create it with "
                     f"`python benchmarks/speed.py --setup` (or `bash benchmarks/speed_setup.sh`), then run again")
        os.execv(str(BENCH_PYTHON), [str(BENCH_PYTHON), __file__, *sys.argv[1:]])
    if args.rounds < 15 or args.kernel_rounds < 15:
        print("note: fewer than 15 rounds: a trial run, not the issue's figures", file=sys.stderr)
    run(args)


if __name__ == "__main__":
    main()
