"""Streams as people see them: `%llm` in a real terminal IPython, and the token counts of streamed answers.

The terminal test runs `python -m IPython` under a pseudo-terminal (pexpect) against the fake server,
which sends a chunk every few tenths of a second: the first words must be on screen long before the
prompt comes back, and no quoted repr of the answer may follow them.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
from conftest import execute_in_kernel, nbllm_shell, reset_nbllm, run_cell

pexpect = pytest.importorskip("pexpect")


@pytest.fixture
def ip(local_provider, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    reset_nbllm()
    with nbllm_shell() as shell:
        yield shell


# --- %llm in a terminal ------------------------------------------------------------------
def _terminal(env: dict[str, str]) -> "pexpect.spawn":
    child = pexpect.spawn(sys.executable, ["-m", "IPython", "--simple-prompt", "--no-banner", "--colors=nocolor",
                                           "--HistoryManager.enabled=False"], env=env, encoding="utf-8", timeout=60)
    child.expect(r"In \[1\]: ")
    child.sendline("%load_ext nbllm")
    child.expect(r"In \[2\]: ")
    return child


def test_llm_line_streams_in_a_terminal_and_prints_no_repr(local_provider):
    local_provider.set(chunk_delay=0.4)
    env = dict(os.environ, TERM="dumb", NBLLM_LOG="0")
    child = _terminal(env)
    try:
        child.sendline("%llm one two three four five six")
        started = time.monotonic()
        child.expect("Echo:")
        first = time.monotonic() - started
        child.expect(r"In \[3\]: ")
        whole = time.monotonic() - started
        shown = child.before
        # seven words, 0.4 s apart after the first: the first is on screen well before the last
        assert whole - first > 1.5, (first, whole)
        assert " one two three four five six" in shown
        assert "Out[" not in shown and "'Echo" not in shown and "\\n" not in shown, shown

        child.sendline("reply = %llm seven eight")  # assigned: returned, not shown
        child.expect(r"In \[4\]: ")
        assert "Echo" not in child.before.split("\n", 1)[-1], child.before
        child.sendline("print(type(reply).__name__, reply)")
        child.expect(r"In \[5\]: ")
        assert "str Echo: seven eight" in child.before
    finally:
        child.sendline("exit")
        child.close(force=True)


# --- %llm in a shell whose displays are rendered (a notebook) ---------------------------------
def test_llm_line_alone_is_shown_like_the_cell_form_with_metadata(ip, local_provider):
    local_provider.set(chunk_delay=0.02)
    result, outputs, printed = run_cell(ip, "%llm one two three four")
    assert result.success and result.result is None  # nothing left for Out[n] to show as a repr
    assert "Out[" not in printed and "'Echo" not in printed
    assert len(outputs) >= 3 and len({o["transient"]["display_id"] for o in outputs}) == 1  # one display, streamed
    final = outputs[-1]
    assert final["data"]["text/markdown"] == "Echo: one two three four"
    assert final["metadata"]["nbllm"]["usage"] == {"input_tokens": 7, "output_tokens": 5}
    assert local_provider.chat_requests()[-1]["body"]["stream"] is True


def test_llm_line_before_other_statements_is_shown_too(ip, local_provider):
    """Its value would be dropped: it is shown instead of lost."""
    result, outputs, _ = run_cell(ip, "%llm first\nafter = 1")
    assert result.success and ip.user_ns["after"] == 1
    assert outputs[-1]["data"]["text/markdown"] == "Echo: first"


def test_llm_line_used_by_code_returns_the_value_without_display(ip, local_provider):
    result, outputs, _ = run_cell(ip, "reply = %llm a b\nwords = reply.split()")
    assert result.success and outputs == []
    assert ip.user_ns["words"] == ["Echo:", "a", "b"]
    assert ip.run_line_magic("llm", "called from Python") == "Echo: called from Python"


def test_a_semicolon_after_the_line_is_part_of_the_question(ip, local_provider):
    """A line magic's line is its own: `%llm question;` asks "question;" and shows the answer (IPython's
    `;` silencing reads Python's last token, which here is inside the magic's argument)."""
    result, outputs, _ = run_cell(ip, "%llm not quiet;", store_history=True)
    assert result.success and local_provider.chat_requests()[-1]["body"]["messages"][-1]["content"] == "not quiet;"
    assert outputs[-1]["data"]["text/markdown"] == "Echo: not quiet;"


def test_llm_line_alone_with_no_stream_shows_once(ip, local_provider):
    result, outputs, _ = run_cell(ip, "%llm --no-stream -f text hi there")
    assert result.success and result.result is None
    (only,) = outputs
    assert only["data"] == {"text/plain": "Echo: hi there"}
    assert "stream" not in local_provider.chat_requests()[-1]["body"] or \
        not local_provider.chat_requests()[-1]["body"]["stream"]


# --- token counts of streamed answers -------------------------------------------------------------
@pytest.mark.parametrize("cell, path", [
    ("%%llm\ncount these words", "wire"),  # a text-only call to a local server: straight on httpx2
    ("%%llm --chat\ncount these words", "pydantic-ai"),  # chat memory goes through pydantic-ai
])
def test_streamed_metadata_has_the_token_counts_the_server_reports(ip, local_provider, cell, path):
    result, outputs, _ = run_cell(ip, cell)
    assert result.success
    body = local_provider.chat_requests()[-1]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}, path
    assert outputs[-1]["metadata"]["nbllm"]["usage"] == {"input_tokens": 7, "output_tokens": 4}, path


@pytest.mark.parametrize("cell", ["%%llm\nno usage here", "%%llm --chat\nno usage here"])
def test_a_stream_without_usage_has_no_made_up_counts(ip, local_provider, cell):
    local_provider.set(send_usage=False)
    ip.run_line_magic("config", "LLMMagics.show_footer = True")
    result, outputs, _ = run_cell(ip, cell)
    assert result.success
    final = outputs[-1]
    assert final["metadata"]["nbllm"]["usage"] == {"input_tokens": None, "output_tokens": None}
    assert "tokens" not in final["data"]["text/markdown"] and "lmstudio · fake-model" in final["data"]["text/markdown"]


@pytest.mark.kernel
def test_llm_line_in_a_real_kernel_is_a_rendered_display_not_an_execute_result(local_provider, tmp_path):
    """ipykernel runs cells its own way (async-capable): the line form still shows, and returns when assigned."""
    from nbformat.v4 import new_code_cell, new_notebook

    local_provider.set(chunk_delay=0.02)
    nb = new_notebook(cells=[new_code_cell("%load_ext nbllm"), new_code_cell("%llm hello kernel"),
                             new_code_cell("kept = %llm again\nprint(repr(kept))")])
    env = dict(os.environ, NBLLM_LOG="0")
    execute_in_kernel(nb, env, tmp_path)
    shown = nb.cells[1].outputs
    assert [o.output_type for o in shown if o.output_type != "display_data"] == []  # no Out[n] repr
    assert shown[-1].data["text/markdown"] == "Echo: hello kernel"
    assert shown[-1].metadata["nbllm"]["provider"] == "lmstudio"
    printed = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert printed == "'Echo: again'\n" and all(o.output_type == "stream" for o in nb.cells[2].outputs)
