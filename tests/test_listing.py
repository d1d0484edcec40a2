"""`--list`: per provider what is set (masked) and what is defaulted (with the default), the defaults
every provider shares once, then the NBLLM_* variables that are set; `--list --all` every variable."""

from __future__ import annotations

import json

import pytest
from conftest import cli, nbllm_shell, run_cell

import nbllm
from nbllm import tables
from nbllm.settings_listing import listing, provider_settings, shown

KEY = "sk-listing-0123456789abcdef"


def block(out: str, provider: str) -> list[str]:
    """The lines of `provider`'s block in the text table (its name on the first, blank after)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [provider])
    rest = lines[start + 1:]
    end = next((i for i, line in enumerate(rest) if not line.startswith(" ")), len(rest))
    return [lines[start], *rest[:end]]


def row(lines: list[str], variable: str) -> list[str]:
    """The words of `variable`'s row from the variable on (a block's first row starts with the provider)."""
    words = next(line for line in lines if variable in line.split()).split()
    return words[words.index(variable):]


def test_a_set_key_is_masked_and_the_defaults_are_said(monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_MODEL", "gpt-test")
    nbllm.reinit()
    code, out, err = cli(capsys, "--list")
    assert code == 0 and err == "" and KEY not in out
    openai = block(out, "openai")
    assert row(openai, "OPENAI_API_KEY")[-2:] == ["********", "env"]
    assert row(openai, "OPENAI_MODEL")[1:] == ["gpt-test", "env", "default", "gpt-5-mini"]  # and what it replaces
    assert row(openai, "OPENAI_BASE_URL")[1:] == ["https://api.openai.com/v1", "default"]
    # A provider with nothing set: its key is "not set", its model and URL are the defaults.
    anthropic = block(out, "anthropic")
    assert " ".join(row(anthropic, "ANTHROPIC_API_KEY")[1:]) == "not set"
    assert row(anthropic, "ANTHROPIC_MODEL")[1:] == ["claude-haiku-4-5", "default"]
    # No rows of "no": variables neither set nor with a default are left to --all.
    assert "ANTHROPIC_PRICE_INPUT" not in out and "ANTHROPIC_TEMPERATURE" not in out
    assert " no " not in out.replace("no extra", "")
    # The shared defaults, once.
    assert "unless set, every provider uses:" in out
    shared = out.split("unless set, every provider uses:")[1].splitlines()
    assert row(shared, "{P}_TEMPERATURE")[1] == "0.7" and row(shared, "{P}_MAX_TOKENS")[1] == "1024"


def test_a_bad_value_says_what_is_used_instead(monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_TEMPERATURE", "hot")
    code, out, err = cli(capsys, "--list")
    assert code == 0
    line = " ".join(row(block(out, "openai"), "OPENAI_TEMPERATURE"))
    assert "hot" in line and "not valid; using the default 0.7" in line


def test_nbllm_variables_set_with_their_defaults_and_all_with_all(monkeypatch, capsys):
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "5")
    nbllm.reinit()
    code, out, _ = cli(capsys, "--list")
    section = out.split("NBLLM_* variables:")[1].splitlines()
    assert row(section, "NBLLM_HEALTH_TIMEOUT")[1:] == ["5", "env", "default", "2"]
    assert "NBLLM_CACHE_MODE" not in out  # not set: only with --all
    code, out, _ = cli(capsys, "--list", "--all")
    section = out.split("NBLLM_* variables:")[1].splitlines()
    assert row(section, "NBLLM_CACHE_MODE")[1:] == ["off", "default"]
    assert row(section, "NBLLM_MAX_IMAGE_SIDE")[1:] == ["1568", "default"]
    from nbllm.config import GLOBALS

    assert all(name in out for name in GLOBALS)


def test_no_nbllm_variable_set_says_so(monkeypatch, capsys):
    for name in ("NBLLM_CONFIG", "NBLLM_HISTORY", "NBLLM_CACHE", "NBLLM_JOBS"):
        monkeypatch.delenv(name)
    nbllm.reinit()
    data = listing()
    caption, table = data["more"][-1]
    assert caption == "NBLLM_* variables:" and table.records()[0]["variable"] == "(none set)"
    assert "--list --all" in table.records()[0]["note"]


def test_all_shows_every_variable_of_every_provider(capsys):
    code, out, _ = cli(capsys, "--list", "--all")
    assert code == 0 and "unless set, every provider uses:" not in out
    records = json.loads(cli(capsys, "--list", "--json")[1])["variables"]
    every = {r["variable"] for r in records if r["provider"] != "nbllm"}
    assert len(every) > 100 and all(variable in out for variable in every)
    temperature = row(block(out, "grok"), "GROK_TEMPERATURE")
    assert temperature[1:] == ["0.7", "default"]
    assert " ".join(row(block(out, "grok"), "XAI_API_KEY")[1:]) == "not set"


def test_all_goes_with_list(capsys):
    code, _, err = cli(capsys, "--status", "--all")
    assert code == 2 and err.strip() == "nbllm: --all goes with --list (--list --all shows every variable)."


def test_json_keeps_every_variable_with_its_default(monkeypatch, capsys):
    monkeypatch.setenv("GROQ_API_KEY", KEY)
    nbllm.reinit()
    code, out, _ = cli(capsys, "--list", "--json")
    assert code == 0 and KEY not in out
    rows = {r["variable"]: r for r in json.loads(out)["variables"]}
    assert rows["GROQ_API_KEY"] == {"provider": "groq", "variable": "GROQ_API_KEY", "set": True, "source": "env",
                                       "value": "********", "default": "", "problem": ""}
    assert rows["GROQ_TIMEOUT"]["set"] is False and rows["GROQ_TIMEOUT"]["default"] == "30"


def test_a_disabled_provider_and_a_local_model_say_so(monkeypatch, capsys):
    monkeypatch.setenv("OLLAMA_ENABLED", "no")
    nbllm.reinit()
    code, out, _ = cli(capsys, "--list")
    ollama = block(out, "ollama")
    assert ollama[0].startswith("ollama (disabled)") and row(ollama, "OLLAMA_ENABLED")[1:3] == ["no", "env"]
    assert "detected from the server" in " ".join(row(block(out, "lmstudio"), "LMSTUDIO_MODEL"))


def test_an_endpoint_shows_its_file(endpoint_files, capsys):
    nbllm.add_provider("gpu", base_url="http://127.0.0.1:9/v1", model="m1")
    gpu = {s.variable: s for s in shown(provider_settings("gpu"))}
    assert gpu["GPU_BASE_URL"].source == "file" and gpu["GPU_BASE_URL"].value == "http://127.0.0.1:9/v1"
    code, out, _ = cli(capsys, "--list")
    assert row(block(out, "gpu"), "GPU_BASE_URL")[1:] == ["http://127.0.0.1:9/v1", "nbllm.toml"]


@pytest.mark.parametrize("width", [100, 200])
def test_the_text_table_fits_the_width(width, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_TEMPERATURE", "hot")
    nbllm.reinit()
    text = tables.to_text(listing()["providers"], width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "OPENAI_TEMPERATURE" in text and KEY not in text


def test_the_magic_shows_html_tables_without_the_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    nbllm.reinit()
    with nbllm_shell() as shell:
        result, outputs, text = run_cell(shell, "%llm_providers --list --all")
    assert result.success and "user config file" in text
    html = outputs[0]["data"]["text/html"]
    assert "<table" in html and "OPENAI_API_KEY" in html and "OPENAI_PRICE_OUTPUT" in html
    assert "NBLLM_* variables:" in outputs[-1]["data"]["text/plain"]
    assert all(KEY not in json.dumps(o["data"]) for o in outputs) and KEY not in text
