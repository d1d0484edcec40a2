"""`%%llm` / `%llm` in an IPython InteractiveShell against the real fake server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import nbllm_shell, reset_nbllm, run_cell

from nbllm.magics.llm import LLMMagics, split_line

SECRET = "sk-test-secret-abcdef123456"


@pytest.fixture
def ip(local_provider, monkeypatch):
    """A shell with the extension loaded, lmstudio on the fake server, no retries."""
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    monkeypatch.setenv("LMSTUDIO_TIMEOUT", "5")
    monkeypatch.setenv("LMSTUDIO_API_KEY", SECRET)
    reset_nbllm()
    with nbllm_shell() as shell:
        yield shell


run = run_cell


def last_body(server):
    return server.chat_requests()[-1]["body"]


def user_text(server):
    return last_body(server)["messages"][-1]["content"]


# --- the happy path ----------------------------------------------------------------------
def test_cell_streams_into_one_display_with_metadata(ip, local_provider):
    local_provider.set(chunk_delay=0.02)
    ip.user_ns["topic"] = "tides"
    result, outputs, text = run(ip, "%%llm -o answer\nExplain {topic} in one two three four")
    assert result.success and text == ""
    assert user_text(local_provider) == "Explain tides in one two three four"
    assert len({o["transient"]["display_id"] for o in outputs}) == 1
    assert outputs[0]["update"] is False and all(o["update"] for o in outputs[1:])
    assert len(outputs) >= 3  # shown while it streamed, then final
    final = outputs[-1]
    assert final["data"]["text/markdown"] == "Echo: Explain tides in one two three four"
    meta = final["metadata"]["nbllm"]
    assert (meta["provider"], meta["model"], meta["format"]) == ("lmstudio", "fake-model", "markdown")
    assert meta["usage"] == {"input_tokens": 7, "output_tokens": 8} and meta["latency_ms"] > 0
    assert ip.user_ns["answer"] == "Echo: Explain tides in one two three four"
    assert local_provider.chat_requests()[-1]["body"]["stream"] is True


def test_no_stream_makes_one_final_display(ip, local_provider):
    result, outputs, _ = run(ip, "%%llm --no-stream\nhello")
    assert result.success
    (only,) = outputs
    assert only["data"]["text/plain"] == "Echo: hello" and only["metadata"]["nbllm"]["provider"] == "lmstudio"
    assert "stream" not in last_body(local_provider) or not last_body(local_provider)["stream"]


def test_options_reach_the_request(ip, local_provider):
    result, _, _ = run(ip, '%%llm -s "Be brief, please" -t 0.3 --max-tokens 12 -m other-model\nhi')
    assert result.success
    body = last_body(local_provider)
    assert body["messages"][0] == {"role": "system", "content": "Be brief, please"}
    assert (body["temperature"], body["max_tokens"], body["model"]) == (0.3, 12, "other-model")


def test_raw_sends_braces_as_written(ip, local_provider):
    ip.user_ns["name"] = "Ann"
    run(ip, "%%llm --raw\nhi {name} {{x}}")
    assert user_text(local_provider) == "hi {name} {{x}}"


def test_code_and_json_in_a_prompt_do_not_crash(ip, local_provider):
    ip.user_ns["n"] = 3
    cell = '%%llm\nFix: def f(d):\n    return {"a": {"b": d[0]}, **{k: v for k, v in d}}  # n={n} f"{n!r}" {1, 2}'
    result, _, _ = run(ip, cell)
    assert result.success
    assert user_text(local_provider) == cell.split("\n", 1)[1].replace("n={n}", "n=3")


def test_line_magic_returns_the_text(ip, local_provider):
    result, outputs, _ = run(ip, "reply = %llm -t 0.1 what's 2+2 -- really, 4?!")
    assert result.success and outputs == []
    assert ip.user_ns["reply"] == "Echo: what's 2+2 -- really, 4?!"
    assert last_body(local_provider)["temperature"] == 0.1


def test_line_magic_json_returns_the_parsed_object(ip, local_provider):
    local_provider.set(reply='{"cities": ["Paris", "Rome"]}')
    run(ip, "data = %llm -f json list two cities")
    assert ip.user_ns["data"] == {"cities": ["Paris", "Rome"]}


@pytest.mark.parametrize("line, argv, question", [
    ("what is it?", [], "what is it?"),
    ("-p lmstudio -t 0.2 what's up", ["-p", "lmstudio", "-t", "0.2"], "what's up"),
    ('-s "be brief" -- -1 or 1?', ["-s", "be brief"], "-1 or 1?"),
    ("--max-tok 5 --no-stream a - b", ["--max-tok", "5", "--no-stream"], "a - b"),
    ("-t0.5 --format=json x", ["-t0.5", "--format=json"], "x"),
    ("--compare lmstudio,ollama which?", ["--compare", "lmstudio,ollama"], "which?"),
    ("--compare which is best?", ["--compare"], "which is best?"),
    ("-1 is negative", [], "-1 is negative"),
])
def test_split_line(line, argv, question):
    assert split_line(line, LLMMagics.llm.parser) == (argv, question)


# --- formats -----------------------------------------------------------------------------
def test_json_format_displays_and_stores_the_parsed_object(ip, local_provider):
    local_provider.set(reply='```json\n{"k": [1, 2]}\n```')
    result, outputs, _ = run(ip, "%%llm -f json -o data\ngive json")
    assert result.success
    assert ip.user_ns["data"] == {"k": [1, 2]}
    assert outputs[-1]["data"]["application/json"] == {"k": [1, 2]}
    assert outputs[-1]["metadata"]["nbllm"]["format"] == "json"


def test_json_format_failure_is_one_line_and_keeps_the_text(ip, local_provider):
    local_provider.set(reply="Sure, here it is")
    result, outputs, text = run(ip, "%%llm -f json -o data\ngive json")
    assert not result.success
    assert ip.user_ns["data"] == "Sure, here it is"
    assert outputs[-1]["data"]["text/plain"] == "Sure, here it is"
    assert text.strip().splitlines() == [
        "nbllm: the answer is not valid JSON (Expecting value: line 1 column 1 (char 0)); its text is kept in data"]


def test_code_format_fills_the_next_cell(ip, local_provider):
    local_provider.set(reply="Here you go:\n```python\nprint('hi')\n```\nEnjoy.")
    result, outputs, _ = run(ip, "%%llm -f code -o code\nwrite hello world")
    assert result.success
    assert ip.rl_next_input == "print('hi')" and ip.user_ns["code"] == "print('hi')"
    assert outputs[-1]["data"]["text/markdown"] == "```python\nprint('hi')\n```"


@pytest.mark.parametrize("fmt, mime", [("html", "text/html"), ("text", "text/plain"), ("markdown", "text/markdown")])
def test_other_formats_choose_the_mime_type(ip, local_provider, fmt, mime):
    result, outputs, _ = run(ip, f"%%llm -f {fmt}\nhello")
    assert result.success and outputs[-1]["data"][mime] == "Echo: hello"
    if fmt == "text":
        assert set(outputs[-1]["data"]) == {"text/plain"}


def test_config_traitlets_change_the_defaults(ip, local_provider):
    run(ip, '%config LLMMagics.default_format = "text"')
    run(ip, "%config LLMMagics.stream = False")
    result, outputs, _ = run(ip, "%%llm\nhello")
    assert result.success
    (only,) = outputs
    assert set(only["data"]) == {"text/plain"}
    assert "stream" not in last_body(local_provider) or not last_body(local_provider)["stream"]


# --- chat memory ---------------------------------------------------------------------------
def test_chat_continues_and_reset_clears(ip, local_provider):
    import nbllm

    run(ip, "%%llm --chat\nfirst")
    run(ip, "%%llm --chat --no-stream\nsecond")
    assert [m["content"] for m in last_body(local_provider)["messages"]] == ["first", "Echo: first", "second"]
    run(ip, "%%llm\nwithout memory")
    assert len(last_body(local_provider)["messages"]) == 1
    result, outputs, text = run(ip, "%llm --reset")
    assert result.success and outputs == [] and text.strip() == "nbllm: the conversation is cleared."
    assert len(nbllm.conversation()) == 0
    run(ip, "%%llm --chat\nagain")
    assert len(last_body(local_provider)["messages"]) == 1


# --- errors: one line, never a traceback or a key -------------------------------------------
@pytest.mark.parametrize("cell, expected", [
    ("%%llm\n   \n", "UsageError: The prompt is empty: write it in the cell below %%llm"),
    ("%llm", "UsageError: The prompt is empty: write it in the line after %llm"),
    ("%%llm --bogus\nhi", "UsageError: unrecognized arguments: --bogus"),
    ("%%llm -f yaml\nhi", "UsageError: argument -f/--format: invalid choice: 'yaml'"),
    ("%%llm -t warm\nhi", "UsageError: argument -t/--temperature: expected a number between 0 and 2, got 'warm'"),
    ("%%llm --max-tokens lots\nhi",
     "UsageError: argument --max-tokens: expected a whole number between 1 and 1,000,000, got 'lots'"),
    ("%%llm -o 2x\nhi", "UsageError: -o needs a variable name, not '2x'."),
    ("%%llm what is this\nhi", "UsageError: Unexpected 'what is this' after %%llm"),
    ('%%llm -s "unclosed\nhi', "UsageError: Cannot read the options"),
])
def test_user_mistakes_are_one_usage_line(ip, local_provider, cell, expected):
    result, outputs, text = run(ip, cell)
    assert not result.success and outputs == []
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), text
    assert local_provider.chat_requests() == []


def test_unknown_provider_names_the_valid_ones(ip, local_provider):
    result, outputs, text = run(ip, "%%llm -p nope\nhi")
    assert not result.success and outputs == []
    (line,) = text.strip().splitlines()
    assert line.startswith("nbllm: ") and "'nope'" in line and "lmstudio" in line and "Traceback" not in text


@pytest.mark.parametrize("cell", ["%%llm\nhi", "%%llm --no-stream\nhi", "x = %llm hi"])
def test_provider_failure_is_one_line_with_provider_and_url_and_no_key(ip, local_provider, cell):
    local_provider.set(mode="error", status=500)
    result, outputs, text = run(ip, cell)
    assert not result.success and outputs == []
    (line,) = text.strip().splitlines()
    assert line.startswith("nbllm: lmstudio at " + local_provider.url) and "HTTP 500" in line
    assert SECRET not in text and "Traceback" not in text


def test_a_stream_cut_in_the_middle_keeps_the_text_and_adds_one_line(ip, local_provider):
    local_provider.set(mode="cut_stream", cut_after=3)
    result, outputs, text = run(ip, "%%llm -o partial\none two three four five")
    assert not result.success
    assert outputs[-1]["data"]["text/markdown"] == "Echo: one two"
    assert outputs[-1]["metadata"]["nbllm"]["error"].startswith("lmstudio at ")
    assert ip.user_ns["partial"] == "Echo: one two"
    (line,) = text.strip().splitlines()
    assert line.startswith("nbllm: lmstudio at ") and "cut off" in line and line.endswith("kept in partial")


def test_never_answering_server_times_out_in_one_line(ip, local_provider):
    local_provider.set(mode="hang")
    result, _, text = run(ip, "%%llm --timeout 0.3\nhello?")
    assert not result.success
    (line,) = text.strip().splitlines()
    assert "timed out" in line and "LMSTUDIO_TIMEOUT" in line


def test_interrupt_cancels_the_stream_and_keeps_the_text(ip, local_provider):
    local_provider.set(chunk_delay=0.2)
    main = threading.main_thread().ident

    def interrupt_after_first_chunk():
        deadline = time.monotonic() + 10
        while not local_provider.chat_requests() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt_after_first_chunk, daemon=True).start()
    result, outputs, text = run(ip, "%%llm -o partial\none two three four five six seven eight nine ten")
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert text.strip() == "nbllm: interrupted, the request was cancelled; the text that arrived is kept in partial"
    assert ip.user_ns["partial"].startswith("Echo:") and ip.user_ns["partial"] != "Echo: one two three four five six"
    assert outputs[-1]["metadata"]["nbllm"]["error"] == "interrupted"
    local_provider.set(chunk_delay=0)
    result, outputs, _ = run(ip, "%%llm\nnext cell")
    assert result.success and outputs[-1]["data"]["text/plain"] == "Echo: next cell"


# --- retries (the openai SDK's, configured by {P}_MAX_RETRIES / {P}_TIMEOUT) ------------------
def test_429_with_retry_after_is_retried_then_answers(ip, local_provider, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "2")
    reset_nbllm()
    local_provider.set(fail_first=2, status=429, retry_after=0.05)
    result, outputs, _ = run(ip, "%%llm --no-stream\nagain")
    assert result.success and outputs[-1]["data"]["text/plain"] == "Echo: again"
    assert len(local_provider.chat_requests()) == 3


def test_500_is_retried_max_retries_times_then_reported(ip, local_provider, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "1")
    reset_nbllm()
    local_provider.set(mode="error", status=500, retry_after=0.01)
    result, _, text = run(ip, "%%llm\nfail")
    assert not result.success and "HTTP 500" in text
    assert len(local_provider.chat_requests()) == 2  # the first try and one retry


def test_each_attempt_is_bounded_by_the_timeout(ip, local_provider, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "1")
    monkeypatch.setenv("LMSTUDIO_TIMEOUT", "0.2")
    reset_nbllm()
    local_provider.set(mode="hang")
    result, _, text = run(ip, "%%llm --no-stream\nhello?")
    assert not result.success and "timed out" in text
    assert len(local_provider.chat_requests()) == 2  # a timeout is retried like a 5xx


# --- many providers, the cache --------------------------------------------------------------
def test_compare_shows_a_table_and_stores_it(ip, local_provider):
    result, outputs, _ = run(ip, "%%llm --compare lmstudio,ollama -o table\nwhich?")
    assert result.success
    table = ip.user_ns["table"]
    assert list(table["provider"]) == ["lmstudio", "ollama"]
    assert table.set_index("provider").loc["lmstudio", "answer"] == "Echo: which?"
    assert any("text/html" in o["data"] for o in outputs)


def test_consensus_is_displayed(ip, local_provider):
    result, outputs, _ = run(ip, "%%llm --consensus lmstudio -o vote\nyes or no?")
    assert result.success and outputs
    assert ip.user_ns["vote"].decision is not None


def test_compare_refuses_a_single_provider_option(ip, local_provider):
    result, _, text = run(ip, "%%llm --compare -p lmstudio\nx")
    assert not result.success and text.strip().startswith("UsageError: --compare takes the providers itself")


def test_cache_records_then_answers_without_the_provider(ip, local_provider):
    run(ip, "%%llm --cache --no-stream\nremember me")
    result, outputs, _ = run(ip, "%%llm --cache --no-stream\nremember me")
    assert result.success and outputs[-1]["data"]["text/plain"] == "Echo: remember me"
    assert len(local_provider.chat_requests()) == 1


@pytest.mark.parametrize("stream", ["", " --no-stream"])
def test_an_unwritable_cache_keeps_the_answer_and_says_so_once(ip, local_provider, monkeypatch, tmp_path, caplog,
                                                                 stream):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("NBLLM_CACHE", str(blocker / "cache.sqlite"))
    result, outputs, text = run(ip, f"%%llm --cache -o r{stream}\nkeep me")
    assert result.success and "Traceback" not in text
    assert ip.user_ns["r"] == "Echo: keep me" and outputs[-1]["data"]["text/plain"] == "Echo: keep me"
    (line,) = [r.getMessage() for r in caplog.records if r.name == "nbllm"]
    assert "replay cache" in line and "NBLLM_CACHE" in line


# --- terminal, help, loading ----------------------------------------------------------------
def test_terminal_prints_the_stream(ip, local_provider, capsys):
    ip.run_cell("%%llm -o t\nplain terminal")
    assert capsys.readouterr().out == "Echo: plain terminal\n"
    assert ip.user_ns["t"] == "Echo: plain terminal"


def test_help_lists_every_option(ip):
    doc = LLMMagics.llm.__doc__
    for option in ("--provider", "--model", "--system", "--temperature", "--max-tokens", "--timeout", "--format",
                   "--out", "--chat", "--reset", "--no-stream", "--raw", "--cache", "--compare", "--consensus"):
        assert option in doc
    assert "%%llm [-p PROVIDER]" in doc


def test_reload_and_unload_leave_nothing_behind(ip, local_provider):
    run(ip, "%%llm\nwarm up")
    for _ in range(3):
        ip.run_line_magic("reload_ext", "nbllm")
    assert sum(isinstance(c, LLMMagics) for c in ip.configurables) == 1
    assert list(ip.magics_manager.registry).count("LLMMagics") == 1
    result, outputs, _ = run(ip, "%%llm\nafter reload")
    assert result.success and outputs[-1]["data"]["text/plain"] == "Echo: after reload"
    assert [t.name for t in threading.enumerate()].count("nbllm-loop") == 1
    ip.run_line_magic("unload_ext", "nbllm")
    assert "llm" not in ip.magics_manager.magics["cell"] and "llm" not in ip.magics_manager.magics["line"]
    assert not any(isinstance(c, LLMMagics) for c in ip.configurables)
    assert "nbllm-loop" not in [t.name for t in threading.enumerate()]
    ip.run_line_magic("load_ext", "nbllm")  # the fixture unloads it again


def test_load_ext_imports_nothing_heavy():
    code = ("import sys\nfrom IPython.core.interactiveshell import InteractiveShell\n"
            "InteractiveShell.instance().run_line_magic('load_ext', 'nbllm')\n"
            "heavy = ('pydantic_ai', 'pandas', 'ipywidgets', 'openai', 'anthropic', 'google.genai', 'httpx2')\n"
            "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                         timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
