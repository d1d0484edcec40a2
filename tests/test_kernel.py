"""The magics in a REAL Jupyter kernel (nbclient executing nbformat notebooks) against the fake server.

One kernel serves the module (starting one costs ~1.5 s); the server's behaviour is
set before each notebook. The kernel gets the server's URL through its environment.
"""

from __future__ import annotations

import ast
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import nbformat
import pytest
from fakeserver import FakeLLMServer
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from conftest import _PROVIDER_PREFIXES

pytestmark = pytest.mark.kernel

SECRET = "sk-kernel-secret-0123456789"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def kernel(server: FakeLLMServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelManager]:
    home = tmp_path_factory.mktemp("kernel")
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PROVIDER_PREFIXES)}
    closed = "http://127.0.0.1:9"
    env.update(
        LMSTUDIO_BASE_URL=server.url + "/v1", NBLLM_PROVIDER="lmstudio", LMSTUDIO_MAX_RETRIES="0",
        LMSTUDIO_TIMEOUT="5", LMSTUDIO_API_KEY=SECRET, OLLAMA_BASE_URL=closed, LLAMACPP_BASE_URL=closed,
        EMBEDDED_BASE_URL=closed, NBLLM_CONFIG=str(home / "config.json"), NBLLM_HISTORY=str(home / "h.sqlite"),
        NBLLM_CACHE=str(home / "c.sqlite"),
    )
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(home))
    yield km
    km.shutdown_kernel(now=True)


@pytest.fixture
def notebook(kernel: KernelManager, server: FakeLLMServer):
    """Run cells in the shared kernel; returns (cells, execute replies)."""
    server.reset()

    def execute(*sources: str, allow_errors: bool = False) -> tuple[list[Any], list[dict[str, Any]]]:
        nb = new_notebook(cells=[new_code_cell(source) for source in sources])
        nbformat.validate(nb)
        replies: list[dict[str, Any]] = []

        def keep(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
            replies.append(execute_reply)

        client = NotebookClient(nb, km=kernel, timeout=60, allow_errors=allow_errors, on_cell_executed=keep)
        client.execute()
        nbformat.validate(nb)  # the outputs are valid notebook outputs (e.g. application/json)
        return nb.cells, replies

    execute("%load_ext nbllm\nimport nbllm\nnbllm.conversation().reset()")
    yield execute
    server.reset()


def displays(cell: Any) -> list[Any]:
    return [o for o in cell.outputs if o.output_type == "display_data"]


def errors(cell: Any) -> list[Any]:
    return [o for o in cell.outputs if o.output_type == "error"]


def stdout(cell: Any) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def stderr(cell: Any) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")


def test_cell_magic_displays_stores_and_interpolates(notebook, server):
    cells, _ = notebook(
        "city = {'name': 'Paris'}",
        "%%llm -o answer\nTell me about {city[name]} as JSON like {\"a\": {\"b\": 1}}",
        "print(repr(answer))",
    )
    (shown,) = displays(cells[1])  # the streamed updates replaced this one display in place
    assert shown.data["text/markdown"] == 'Echo: Tell me about Paris as JSON like {"a": {"b": 1}}'
    meta = shown.metadata["nbllm"]
    assert meta["provider"] == "lmstudio" and meta["model"] == "fake-model"
    assert meta["usage"]["output_tokens"] == 11 and meta["latency_ms"] > 0 and meta["error"] is None
    assert stdout(cells[2]).strip() == repr('Echo: Tell me about Paris as JSON like {"a": {"b": 1}}')
    assert server.chat_requests()[-1]["body"]["stream"] is True


def test_json_code_and_line_forms(notebook, server):
    server.set(reply='```json\n{"k": [1, 2]}\n```')
    cells, replies = notebook("%%llm -f json -o data\ngive json", "print(type(data).__name__, data)",
                              "line = %llm -f json give json\nprint(line['k'])")
    assert displays(cells[0])[-1].data["application/json"] == {"k": [1, 2]}
    assert stdout(cells[1]).strip() == "dict {'k': [1, 2]}"
    assert stdout(cells[2]).strip() == "[1, 2]"
    server.set(reply="Sure:\n```python\nprint('hi')\n```")
    cells, replies = notebook("%%llm -f code\nwrite code")
    payloads = replies[-1]["content"]["payload"]
    assert {"source": "set_next_input", "text": "print('hi')", "replace": False} in payloads


def test_top_level_await_and_chat_memory(notebook, server):
    cells, _ = notebook(
        "answer = await nbllm.ask_async('awaited')\nprint(answer.text)",
        "%%llm --chat\nfirst",
        "%%llm --chat --no-stream\nsecond",
    )
    assert stdout(cells[0]).strip() == "Echo: awaited"
    messages = server.chat_requests()[-1]["body"]["messages"]
    assert [m["content"] for m in messages] == ["first", "Echo: first", "second"]
    cells, _ = notebook("%llm --reset", "print(len(nbllm.conversation()))")
    assert stdout(cells[0]).strip() == "nbllm: the conversation is cleared."
    assert stdout(cells[1]).strip() == "0"


def test_errors_are_one_line_without_traceback_or_key(notebook, server):
    server.set(mode="error", status=500)
    cells, replies = notebook("%%llm\nfail please", "%%llm --bogus\nx", "%%llm\n  \n", "print('still running')",
                        allow_errors=True)
    (failure,) = errors(cells[0])
    assert len(failure.traceback) == 1
    assert failure.traceback[0].startswith(f"nbllm: lmstudio at {server.url}/v1: HTTP 500")
    assert displays(cells[0]) == []
    assert stderr(cells[1]) == "UsageError: unrecognized arguments: --bogus\n"
    assert stderr(cells[2]).startswith("UsageError: The prompt is empty") and stderr(cells[2]).count("\n") == 1
    assert [r["content"]["status"] for r in replies[:3]] == ["error"] * 3  # Run All stops at a failed magic
    assert stdout(cells[3]).strip() == "still running"
    everything = nbformat.writes(nbformat.v4.new_notebook(cells=cells))
    assert SECRET not in everything and "Traceback" not in everything


def test_a_stream_cut_in_the_middle_keeps_the_text(notebook, server):
    server.set(mode="cut_stream", cut_after=3)
    cells, _ = notebook("%%llm -o partial\none two three four five", "print(partial)", allow_errors=True)
    (shown,) = displays(cells[0])
    assert shown.data["text/markdown"] == "Echo: one two"
    assert "cut off" in shown.metadata["nbllm"]["error"]
    (failure,) = errors(cells[0])
    assert len(failure.traceback) == 1 and "kept in partial" in failure.traceback[0]
    assert stdout(cells[1]).strip() == "Echo: one two"


def test_interrupting_the_kernel_cancels_the_request_and_the_next_cell_works(notebook, server, kernel):
    words = " ".join(f"w{i}" for i in range(30))
    server.set(chunk_delay=0.3)  # the whole answer would take ~9 s

    def interrupt_once_text_arrived() -> None:
        deadline = time.monotonic() + 20
        while not server.chat_requests() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)
        kernel.interrupt_kernel()

    # Right after the interrupt, nothing may still run on nbllm's loop (the stream would
    # need ~8 s more if it had not been cancelled), and the call log has its partial row.
    after = ("import asyncio, time\nfrom nbllm import bridge\n"
             "async def pending():\n    await asyncio.sleep(0.1)\n"
             "    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]\n"
             "print(len(bridge.run(pending())))\n"
             "for _ in range(100):\n    row = nbllm.history(1).iloc[-1]\n"
             "    if row['outcome'] == 'interrupted':\n        break\n    time.sleep(0.05)\n"
             "print(row['kind'], row['outcome'], repr(row['answer']))")
    threading.Thread(target=interrupt_once_text_arrived, daemon=True).start()
    nb = new_notebook(cells=[new_code_cell(f"%%llm -o partial\n{words}"), new_code_cell(after),
                             new_code_cell("print(repr(partial))"),
                             new_code_cell("%%llm --no-stream\nafter the interrupt")])
    NotebookClient(nb, km=kernel, timeout=60, allow_errors=True).execute()
    (stopped,) = errors(nb.cells[0])
    assert stopped.ename == "Interrupted" and stopped.traceback == [
        "nbllm: interrupted, the request was cancelled; the text that arrived is kept in partial"]
    shown = displays(nb.cells[0])[-1]
    assert shown.metadata["nbllm"]["error"] == "interrupted"
    partial = shown.data["text/plain"]
    assert partial.startswith("Echo: w0") and len(partial) < len("Echo: " + words)
    left, logged = stdout(nb.cells[1]).splitlines()
    assert left == "0"
    kind, outcome, answer = logged.split(" ", 2)
    answer = ast.literal_eval(answer)
    assert (kind, outcome) == ("stream", "interrupted") and answer.startswith(partial)
    assert len(answer) < len("Echo: " + words)
    assert stdout(nb.cells[2]).strip() == repr(partial)
    assert displays(nb.cells[3])[-1].data["text/plain"] == "Echo: after the interrupt"


def test_reload_and_unload_leave_no_duplicates(notebook, server):
    check = ("import threading\nip = get_ipython()\nfrom nbllm.magics.llm import LLMMagics\n"
             "print(sum(isinstance(c, LLMMagics) for c in ip.configurables),"
             " [t.name for t in threading.enumerate()].count('nbllm-loop'),"
             " 'llm' in ip.magics_manager.magics['cell'])")
    cells, _ = notebook("%%llm\nwarm up", "%reload_ext nbllm", "%reload_ext nbllm", check,
                        "%%llm\nafter reload", "%unload_ext nbllm", check, "%load_ext nbllm", "%%llm\nback")
    assert stdout(cells[3]).split() == ["1", "0", "True"]  # the loop thread restarts on first use
    assert displays(cells[4])[-1].data["text/plain"] == "Echo: after reload"
    assert stdout(cells[6]).split() == ["0", "0", "False"]
    assert displays(cells[8])[-1].data["text/plain"] == "Echo: back"


def test_config_magic_sets_the_default_format(notebook, server):
    cells, _ = notebook('%config LLMMagics.default_format = "text"', "%%llm\nplain please",
                        '%config LLMMagics.default_format = "markdown"')
    assert set(displays(cells[1])[-1].data) == {"text/plain"}
