"""`%llm_providers` in an IPython shell: help, rich tables, kernel-wide changes, errors."""

from __future__ import annotations

import json
import os

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import nbllm
from nbllm.config import user_config_path
from nbllm.magics.providers import ProviderMagics


@pytest.fixture
def shell(monkeypatch):
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    shell = InteractiveShell.instance()
    shell.register_magics(ProviderMagics)
    return shell


def magic(shell, line: str = ""):
    with capture_output() as captured:
        result = shell.run_line_magic("llm_providers", line)
    assert result is None  # tables are displayed, not returned (no duplicate Out[])
    return captured


def cell(shell, line: str):
    """Run like a notebook cell does (errors are shown, not raised)."""
    with capture_output() as captured:
        shell.run_cell(f"%llm_providers {line}")
    return captured


def test_help_lists_every_option(shell):
    doc = shell.find_line_magic("llm_providers").__doc__
    assert doc.lstrip().startswith("::")
    for option in ("--status", "--list", "--enable NAME", "--disable NAME", "--test NAME", "--health-check",
                   "--reinit", "--use NAME", "--model MODEL", "--save", "--panel"):
        assert option in doc
    assert "--json" not in doc


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_option_prints_the_magics_help(shell, flag):
    captured = cell(shell, flag)
    assert "UsageError" not in captured.stderr
    assert captured.stdout.strip() == shell.find_line_magic("llm_providers").__doc__.strip()
    assert "--health-check" in captured.stdout and not captured.outputs  # nothing was checked


@pytest.mark.parametrize("value", ["-1", "0", "nan"])
def test_timeout_must_be_positive(shell, value):
    with pytest.raises(UsageError, match="argument --timeout"):
        shell.run_line_magic("llm_providers", f"--health-check --timeout {value}")


def test_status_is_the_default_and_displays_html_and_text(shell, fake_server, monkeypatch):
    monkeypatch.setenv("OLLAMA_BASE_URL", fake_server.url)
    nbllm.reinit()
    captured = magic(shell)
    assert captured.stdout.splitlines()[0] == "default: auto"
    assert len(captured.outputs) == 1
    data = captured.outputs[0].data
    assert set(data) == {"text/plain", "text/html"}
    assert "<table" in data["text/html"] and "ollama" in data["text/html"] and "available" in data["text/html"]
    assert "ollama" in data["text/plain"] and "<" not in data["text/plain"]
    assert "status" in magic(shell, "--status").outputs[0].data["text/plain"]


def test_health_check_and_list_tables(shell):
    health = magic(shell, "--health-check")
    assert "models" in health.outputs[0].data["text/plain"] and "latency_ms" in health.outputs[0].data["text/html"]
    assert "no provider is available" in health.stderr
    listing = magic(shell, "--list")
    assert "OPENAI_API_KEY" in listing.outputs[0].data["text/plain"] and "user config file" in listing.stdout


def test_use_changes_this_kernel_and_tells_observers(shell):
    seen = []
    unsubscribe = nbllm.observe(seen.append)
    try:
        captured = magic(shell, "--use ollama --model qwen3")
    finally:
        unsubscribe()
    assert (nbllm.current().provider, nbllm.current().model) == ("ollama", "qwen3")
    assert seen and seen[-1].provider == "ollama"
    assert "add --save to keep it" in captured.stdout
    assert not user_config_path().exists()


def test_save_persists(shell):
    magic(shell, "--use lmstudio --save")
    magic(shell, "--disable gemini --save")
    saved = json.loads(user_config_path().read_text())
    assert saved["default"]["provider"] == "lmstudio" and saved["disabled"] == ["gemini"]


def test_enable_disable_apply_to_this_kernel(shell):
    magic(shell, "--disable ollama")
    assert not nbllm.get_registry().settings("ollama").enabled
    magic(shell, "--enable ollama")
    assert nbllm.get_registry().settings("ollama").enabled
    assert not user_config_path().exists()


def test_reinit(shell, monkeypatch):
    monkeypatch.setenv("XAI_API_KEY", "k-x")
    captured = magic(shell, "--reinit")
    assert "re-read the environment" in captured.stdout and nbllm.get_registry().is_configured("grok")


def test_test_success(shell, fake_server, monkeypatch):
    monkeypatch.setenv("LLAMACPP_BASE_URL", fake_server.url)
    nbllm.reinit()
    captured = magic(shell, "--test llamacpp")
    assert captured.stdout.startswith(f"llamacpp: answering at {fake_server.url}") and captured.stderr == ""


def test_failed_test_is_one_line_without_traceback(shell):
    captured = cell(shell, "--test ollama")
    assert captured.stderr.count("\n") == 1 and captured.stderr.startswith("nbllm: ollama at ")
    assert "connection refused" in captured.stderr
    assert "Traceback" not in captured.stdout + captured.stderr


@pytest.mark.parametrize("line, words", [
    ("--enable nope", "Invalid LLM provider 'nope'"),
    ("--use nope", "Invalid LLM provider 'nope'"),
    ("--model m", "--model goes with --use"),
    ("--list --timeout 1", "--timeout goes with --status, --health-check or --test"),
    ("--status --save", "--save goes with --enable, --disable or --use"),
    ("--bogus", "unrecognized arguments: --bogus"),
    ("--list --status", "not allowed with argument"),
])
def test_user_mistakes_are_usage_errors(shell, line, words):
    with pytest.raises(UsageError, match=words.replace("-", r"\-")):
        shell.run_line_magic("llm_providers", line)
    captured = cell(shell, line)
    assert "UsageError" in captured.stderr and words in captured.stderr
    assert "Traceback" not in captured.stdout + captured.stderr


def test_using_a_disabled_provider_is_a_usage_error(shell):
    magic(shell, "--disable grok")
    for line in ("--use grok", "--test grok"):
        with pytest.raises(UsageError, match="disabled: enable with"):
            shell.run_line_magic("llm_providers", line)
    assert nbllm.current().provider == "auto"


def test_braces_in_the_line_are_never_evaluated(shell):
    """IPython would run `{expr}` before the magic sees it; this magic takes its line as written."""
    calls = []

    def side_effect() -> str:
        calls.append(1)
        return "ollama"

    shell.user_ns["_side_effect"] = side_effect
    captured = cell(shell, "--use {_side_effect()}")
    assert calls == []  # expanded, it would have run and made ollama the default
    assert nbllm.current().provider == "auto"
    assert "Invalid LLM provider '{_side_effect()}'" in captured.stderr
    with pytest.raises(UsageError, match="Invalid LLM provider") as raised:
        shell.run_line_magic("llm_providers", "--use {__import__('os').getcwd()}")
    assert os.getcwd() not in str(raised.value)


def test_dollar_names_are_passed_literally(shell):
    shell.user_ns["name"] = "ollama"
    captured = cell(shell, "--use $name")
    assert nbllm.current().provider == "auto"
    lines = [line for line in captured.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "UsageError" in lines[0] and "Invalid LLM provider '$name'" in lines[0]
    assert "Traceback" not in captured.stdout + captured.stderr


def test_the_kernel_keeps_working_after_an_error(shell):
    cell(shell, "--use nope")
    magic(shell, "--use ollama")
    assert nbllm.current().provider == "ollama"


def test_panel_is_shown(shell, monkeypatch):
    shown = []

    class FakePanel:
        def _repr_html_(self):
            shown.append(True)
            return "<b>panel</b>"

    from nbllm import widgets

    monkeypatch.setattr(widgets, "panel", lambda: FakePanel())
    captured = magic(shell, "--panel")
    assert [o.data.get("text/html") for o in captured.outputs] == ["<b>panel</b>"] and captured.stdout == ""
    captured = magic(shell, "--panel --use ollama")
    assert nbllm.current().provider == "ollama" and len(captured.outputs) == 1


def test_load_ext_registers_the_magic(monkeypatch):
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbllm")
    try:
        with capture_output() as captured:
            shell.run_cell("%llm_providers --use ollama")
        assert nbllm.current().provider == "ollama" and "default: ollama" in captured.stdout
    finally:
        shell.run_line_magic("unload_ext", "nbllm")
    assert shell.find_line_magic("llm_providers") is None


def test_loading_the_magic_module_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, nbllm.magics.providers; "
            "print([m for m in ('pydantic_ai', 'pandas', 'ipywidgets', 'openai', 'anthropic', 'google.genai')"
            " if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_quotes_group_words_and_are_not_kept(shell):
    magic(shell, "--add lab --base-url http://127.0.0.1:9/v1 --label 'Lab vLLM'")
    assert nbllm.get_registry().spec("lab").label == "Lab vLLM"  # not "'Lab vLLM'", nor an error
