"""The panel in a real kernel, spoken to as JupyterLab 4.6 speaks to it: the kernel's
status stays busy while a cell runs, even when the panel is used meanwhile.

JupyterLab shows one kernel status, the `execution_state` of the last iopub `status`
message, whatever request it belongs to (only a few message types are exempt; comm
messages are not). It sends widget messages with the `subshell_id` of a subshell it
opens for widgets; ipykernel 7 runs a widget's messages in that subshell, beside a
running cell, once the widget has replied under such a message — and that handling
publishes busy/idle. Here the page is played with jupyter_client: a subshell like
JupyterLab's, a Refresh click or a pick while the kernel is idle, then a pick in the
provider selector while a cell sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeserver import FakeLLMServer
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager

from conftest import _PROVIDER_PREFIXES

pytestmark = pytest.mark.kernel

SLEEP = 3.0
WAIT = 30.0  # generous upper bound for any reply; never a timing assertion


@pytest.fixture
def client(tmp_path: Path) -> Iterator[BlockingKernelClient]:
    with FakeLLMServer(models=["status-model"], loaded="status-model") as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_PROVIDER_PREFIXES)}
        closed = "http://127.0.0.1:9"
        env.update(LMSTUDIO_BASE_URL=server.url + "/v1", OLLAMA_BASE_URL=closed, LLAMACPP_BASE_URL=closed,
                   EMBEDDED_BASE_URL=closed, NBLLM_PROVIDER="ollama", NBLLM_CONFIG=str(tmp_path / "config.json"),
                   NBLLM_HISTORY=str(tmp_path / "h.sqlite"), NBLLM_CACHE=str(tmp_path / "c.sqlite"))
        km = KernelManager(kernel_name="python3")
        km.start_kernel(env=env, cwd=str(tmp_path), extra_arguments=["--IPKernelApp.log_level=ERROR"])
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=WAIT)
            yield kc
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def _until(kc: BlockingKernelClient, done: Any, seen: list[dict[str, Any]]) -> None:
    """Collect iopub messages into `seen` until `done(seen)` holds."""
    deadline = time.monotonic() + WAIT
    while not done(seen):
        assert time.monotonic() < deadline, f"gave up waiting; last messages: {_summary(seen[-8:])}"
        try:
            seen.append(kc.get_iopub_msg(timeout=0.5))
        except queue.Empty:
            pass


def _idle_of(msg_id: str) -> Any:
    return lambda seen: any(_is_status(m, "idle") and m["parent_header"].get("msg_id") == msg_id for m in seen)


def _is_status(message: dict[str, Any], state: str | None = None) -> bool:
    return message["msg_type"] == "status" and state in (None, message["content"]["execution_state"])


def _summary(messages: list[dict[str, Any]]) -> list[str]:
    return [f"{m['msg_type']}:{m['content'].get('execution_state', '')} <- "
            f"{m['parent_header'].get('msg_type')}:{m['parent_header'].get('msg_id', '')[-6:]}" for m in messages]


def _run(kc: BlockingKernelClient, code: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    msg_id = kc.execute(code)
    _until(kc, _idle_of(msg_id), seen)
    errors = [m["content"] for m in seen if m["msg_type"] == "error"]
    assert not errors, errors
    return seen


def _stdout(messages: list[dict[str, Any]]) -> str:
    return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")


def _subshell(kc: BlockingKernelClient) -> str:
    """A subshell, created the way JupyterLab creates the one it sends widget messages to."""
    request = kc.session.msg("create_subshell_request", {})
    kc.control_channel.send(request)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        reply = kc.get_control_msg(timeout=WAIT)
        if reply["parent_header"].get("msg_id") == request["header"]["msg_id"]:
            return reply["content"]["subshell_id"]
    raise AssertionError("no create_subshell_reply")


def _send_widget_message(kc: BlockingKernelClient, comm_id: str, data: dict[str, Any], subshell: str) -> str:
    """A comm message from the page, as JupyterLab 4.6 sends one (its header names the widget subshell)."""
    message = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
    message["header"]["subshell_id"] = subshell
    kc.shell_channel.send(message)
    return message["header"]["msg_id"]


@pytest.mark.parametrize("first", ["refresh", "pick"])
def test_using_the_panel_while_a_cell_runs_never_reports_the_kernel_idle(client: BlockingKernelClient, first: str):
    kc = client
    subshell = _subshell(kc)
    shown = _run(kc, "import json, nbllm\npanel = nbllm.panel()\ndisplay(panel)\nassert panel.wait(20)\n"
                     "print(json.dumps({'refresh': panel.refresh_button.model_id,"
                     " 'provider': panel.provider_select.model_id,"
                     " 'lmstudio': [v for _, v in panel.provider_select.options].index('lmstudio'),"
                     " 'llamacpp': [v for _, v in panel.provider_select.options].index('llamacpp')}))")
    ids = json.loads(_stdout(shown).strip().splitlines()[-1])

    # First use while the kernel is idle: Refresh (the panel updates every widget in
    # reply), or a pick (the selector replies to it).
    seen: list[dict[str, Any]] = []
    if first == "refresh":
        data: dict[str, Any] = {"method": "custom", "content": {"event": "click"}}
        used = _send_widget_message(kc, ids["refresh"], data, subshell)
    else:
        data = {"method": "update", "state": {"index": ids["llamacpp"]}, "buffer_paths": []}
        used = _send_widget_message(kc, ids["provider"], data, subshell)
    _until(kc, _idle_of(used), seen)
    _run(kc, "assert panel.wait(20)")

    # A cell sleeps; meanwhile the user picks LM Studio in the panel.
    seen = []
    cell = kc.execute(f"import time; time.sleep({SLEEP})")
    _until(kc, lambda s: any(_is_status(m, "busy") and m["parent_header"].get("msg_id") == cell for m in s), seen)
    pick = _send_widget_message(
        kc, ids["provider"], {"method": "update", "state": {"index": ids["lmstudio"]}, "buffer_paths": []}, subshell)
    _until(kc, lambda s: _idle_of(cell)(s) and _idle_of(pick)(s), seen)

    start = next(i for i, m in enumerate(seen) if _is_status(m, "busy") and m["parent_header"].get("msg_id") == cell)
    end = next(i for i, m in enumerate(seen) if _is_status(m, "idle") and m["parent_header"].get("msg_id") == cell)
    during = [m for m in seen[start + 1:end] if _is_status(m)]
    assert not during, f"status messages while the cell ran: {_summary(during)}"
    # The pick was not lost: handled once the cell was done, and it became the kernel's default.
    handled = [i for i, m in enumerate(seen) if _is_status(m, "busy") and m["parent_header"].get("msg_id") == pick]
    assert handled and handled[0] > end
    assert _stdout(_run(kc, "print(nbllm.current().provider)")).strip() == "lmstudio"
