"""The registry: enable/disable at run time, reinit, status summary, and what is saved."""

from __future__ import annotations

import json

import pytest

import nbllm
from nbllm.config import user_config_path
from nbllm.errors import ConfigurationError
from nbllm.registry import get_registry, reset_registry


def saved() -> dict:
    return json.loads(user_config_path().read_text())


def fresh_process() -> None:
    """What a new kernel or CLI process sees: everything re-read from scratch."""
    reset_registry()
    from nbllm import session

    session.reset_default()


def test_disable_and_enable_apply_to_this_process_only():
    nbllm.disable("ollama")
    assert not get_registry().settings("ollama").enabled
    assert not user_config_path().exists()
    fresh_process()
    assert get_registry().settings("ollama").enabled
    nbllm.disable("ollama")
    nbllm.enable("OLLAMA")
    assert get_registry().settings("ollama").enabled


def test_disabled_provider_is_refused_by_name_with_a_way_out():
    nbllm.disable("grok")
    with pytest.raises(ConfigurationError) as info:
        get_registry().require("grok")
    message = str(info.value)
    assert "disabled" in message and "--enable grok" in message and "GROK_ENABLED" in message
    with pytest.raises(ConfigurationError, match="disabled"):
        nbllm.use("grok")


def test_unknown_provider_everywhere_lists_valid_names():
    for call in (lambda: nbllm.enable("nope"), lambda: nbllm.disable("nope"), lambda: nbllm.use("nope"),
                 lambda: get_registry().settings("nope")):
        with pytest.raises(ConfigurationError, match="Invalid LLM provider 'nope'.*openai.*llamacpp"):
            call()


def test_save_writes_the_user_config_file_and_a_new_process_reads_it():
    nbllm.disable("lmstudio", save=True)
    nbllm.disable("gemini", save=True)
    assert saved()["disabled"] == ["gemini", "lmstudio"]
    fresh_process()
    registry = get_registry()
    assert not registry.settings("lmstudio").enabled and registry.settings("lmstudio").sources["LMSTUDIO_ENABLED"] == "config"
    nbllm.enable("lmstudio", save=True)
    assert saved()["disabled"] == ["gemini"]
    fresh_process()
    assert get_registry().settings("lmstudio").enabled and not get_registry().settings("gemini").enabled


def test_environment_wins_over_the_user_config_file(monkeypatch):
    nbllm.disable("ollama", save=True)
    monkeypatch.setenv("OLLAMA_ENABLED", "true")
    fresh_process()
    assert get_registry().settings("ollama").enabled


def test_saved_default_is_the_initial_default_unless_the_environment_says_otherwise(monkeypatch):
    nbllm.use("ollama", "qwen3", save=True)
    assert saved()["default"] == {"provider": "ollama", "model": "qwen3"}
    fresh_process()
    assert (nbllm.current().provider, nbllm.current().model) == ("ollama", "qwen3")
    monkeypatch.setenv("NBLLM_PROVIDER", "lmstudio")
    fresh_process()
    assert (nbllm.current().provider, nbllm.current().model) == ("lmstudio", None)


def test_config_file_that_is_not_json_warns_and_is_ignored():
    user_config_path().write_text("{broken")
    with pytest.warns(UserWarning, match="unreadable config file"):
        fresh_process()
        get_registry()
    assert get_registry().settings("ollama").enabled


def test_disabling_the_default_falls_back_to_auto():
    nbllm.use("ollama")
    nbllm.disable("ollama")
    assert nbllm.current().provider == "auto"


def test_reinit_rereads_the_environment_and_keeps_a_valid_default(monkeypatch):
    nbllm.use("lmstudio", "m1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k-new")
    monkeypatch.setenv("LMSTUDIO_TEMPERATURE", "0.2")
    assert not get_registry().is_configured("anthropic")
    nbllm.reinit()
    assert get_registry().is_configured("anthropic") and get_registry().settings("lmstudio").temperature == 0.2
    assert (nbllm.current().provider, nbllm.current().model) == ("lmstudio", "m1")


def test_reinit_drops_a_default_that_became_disabled(monkeypatch):
    nbllm.use("lmstudio")
    monkeypatch.setenv("LMSTUDIO_ENABLED", "off")
    with pytest.warns(nbllm.NbllmConfigWarning, match="'lmstudio' is no longer usable"):
        nbllm.reinit()
    assert nbllm.current().provider == "auto"


def test_reinit_forgets_runtime_enable_disable():
    nbllm.disable("ollama")
    nbllm.reinit()
    assert get_registry().settings("ollama").enabled


def test_summary_counts_enabled_and_configured(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k-1")
    monkeypatch.setenv("GOOGLE_API_KEY", "k-2")
    nbllm.reinit()
    nbllm.disable("anthropic")
    nbllm.disable("ollama")
    total = len(nbllm.providers())
    summary = nbllm.status()
    # enabled: all but two; configured: enabled clouds with keys (2) + enabled locals with an address
    # (litellm has none until LITELLM_BASE_URL is set)
    local_enabled = sum(1 for n in nbllm.providers() if get_registry().spec(n).kind == "local") - 1
    assert (summary.total, summary.enabled, summary.configured, summary.available) == (
        total, total - 2, 2 + local_enabled - 1, None)
    monkeypatch.setenv("LITELLM_BASE_URL", "http://gateway.test:4000")
    nbllm.reinit()
    nbllm.disable("anthropic")
    nbllm.disable("ollama")
    assert nbllm.status().configured == 2 + local_enabled


def test_update_changes_one_setting():
    updated = get_registry().update("ollama", model="phi4")
    assert updated.model == "phi4" and get_registry().settings("ollama").model == "phi4"


def test_variables_lists_every_variable_and_masks_keys(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("XAI_API_KEY=k-grok-secret-value\n")
    monkeypatch.setenv("GROK_MODEL", "grok-4")
    nbllm.reinit()
    rows = {r["variable"]: r for r in get_registry().variables("grok")}
    expected = {"GROK_API_KEY", "XAI_API_KEY", "GROK_ENABLED", "GROK_MODEL", "GROK_WEIGHT", "GROK_MAX_TOKENS",
                "GROK_TEMPERATURE", "GROK_TIMEOUT", "GROK_MAX_RETRIES", "GROK_BASE_URL"}
    assert expected <= set(rows)
    assert rows["XAI_API_KEY"]["set"] and rows["XAI_API_KEY"]["source"] == ".env"
    assert rows["XAI_API_KEY"]["value"] == "********"
    assert rows["GROK_MODEL"] == {"provider": "grok", "variable": "GROK_MODEL", "set": True, "source": "env",
                                  "value": "grok-4"}
    assert not rows["GROK_TIMEOUT"]["set"]
    assert "OLLAMA_HOST" in {r["variable"] for r in get_registry().variables("ollama")}
