"""`auto`: OpenAI with a key, else the first local server that answers (probed together,
chosen by priority), else another cloud key; the sync version never touches the network."""

from __future__ import annotations

import asyncio
import logging

import pytest

import nbllm
from nbllm.errors import ConfigurationError


def resolve(**kwargs):
    return asyncio.run(nbllm.resolve("auto", **kwargs))


def point(monkeypatch, **urls: str) -> None:
    for provider, url in urls.items():
        monkeypatch.setenv(f"{provider.upper()}_BASE_URL", url)
    nbllm.reinit()


def test_openai_key_wins_without_probing(httpx2_mock, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", "k-1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k-2")
    nbllm.reinit()
    with caplog.at_level(logging.INFO, logger="nbllm"):
        choice = resolve()
    assert (choice.provider, choice.model) == ("openai", "gpt-5-mini") and "OPENAI_API_KEY" in choice.reason
    assert httpx2_mock.calls.call_count == 0
    assert any("openai" in r.getMessage() and "OPENAI_API_KEY is set" in r.getMessage() for r in caplog.records)
    assert nbllm.get_model("auto").system == "openai"


def test_only_ollama_up(fake_server, monkeypatch, caplog):
    fake_server.set(models=["qwen3:8b"], loaded="qwen3:8b")
    point(monkeypatch, ollama=fake_server.url)
    with caplog.at_level(logging.INFO, logger="nbllm"):
        choice = resolve()
    assert (choice.provider, choice.model) == ("ollama", "qwen3:8b")
    assert f"Ollama answered at {fake_server.url}" in choice.reason
    assert any("ollama" in r.getMessage() and "answered" in r.getMessage() for r in caplog.records)
    built = asyncio.run(nbllm.get_model_async("auto"))
    assert built.system == "ollama" and built.model_name == "qwen3:8b"


def test_lmstudio_and_ollama_both_up_prefers_lmstudio(fake_server, make_server, monkeypatch):
    ollama = make_server(models=["llama3.2"], loaded="llama3.2")
    fake_server.set(models=["gemma"], loaded="gemma")
    point(monkeypatch, lmstudio=fake_server.url + "/v1", ollama=ollama.url)
    choice = resolve()
    assert (choice.provider, choice.model) == ("lmstudio", "gemma")
    assert ollama.requests, "both were probed at once"


def test_priority_holds_even_when_the_preferred_server_is_slower(fake_server, make_server, monkeypatch):
    slow = make_server(latency=0.2)
    point(monkeypatch, lmstudio=slow.url + "/v1", ollama=fake_server.url)
    assert resolve().provider == "lmstudio"


def test_a_hanging_server_costs_a_timeout_then_the_next_is_chosen(make_server, fake_server, monkeypatch):
    hang = make_server(mode="hang")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.3")
    point(monkeypatch, lmstudio=hang.url + "/v1", llamacpp=fake_server.url)
    choice = resolve()
    assert choice.provider == "llamacpp" and "lmstudio" not in choice.provider


def test_nothing_up_but_an_anthropic_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k-a")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    nbllm.reinit()
    choice = resolve()
    assert (choice.provider, choice.model) == ("anthropic", "claude-haiku-4-5")
    assert "ANTHROPIC key is set" in choice.reason and "lmstudio" in choice.reason  # says what it tried


def test_nothing_at_all_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    nbllm.reinit()
    with pytest.raises(ConfigurationError) as info:
        resolve()
    message = str(info.value)
    assert message.startswith("auto found no usable provider")
    assert "OPENAI_API_KEY" in message and "lmstudio" in message and "ollama" in message
    assert "connection refused" in message


def test_disabled_providers_are_skipped(fake_server, make_server, monkeypatch):
    ollama = make_server()
    monkeypatch.setenv("OPENAI_API_KEY", "k-1")
    point(monkeypatch, lmstudio=fake_server.url + "/v1", ollama=ollama.url)
    nbllm.disable("openai")
    nbllm.disable("lmstudio")
    choice = resolve()
    assert choice.provider == "ollama"
    assert not fake_server.requests, "a disabled provider is not even probed"


def test_disabled_cloud_fallback_is_skipped(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k-a")
    monkeypatch.setenv("GEMINI_API_KEY", "k-g")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    nbllm.reinit()
    nbllm.disable("anthropic")
    assert resolve().provider == "gemini"


def test_model_given_with_auto_is_kept(fake_server, monkeypatch):
    point(monkeypatch, ollama=fake_server.url)
    assert resolve(model="chosen").model == "chosen"
    assert resolve(auto_detect_model=False).model == "llama3.2"


# ---- the sync version never touches the network -------------------------------------------------


def test_sync_auto_picks_the_first_local_server_offline(httpx2_mock):
    built = nbllm.get_model("auto")
    assert built.system == "lmstudio" and built.model_name == "local-model"
    assert httpx2_mock.calls.call_count == 0


def test_sync_auto_skips_disabled_and_never_probes(httpx2_mock, fake_server, monkeypatch):
    point(monkeypatch, ollama=fake_server.url)
    nbllm.disable("lmstudio")
    built = nbllm.get_model()  # the default is auto
    assert built.system == "ollama" and built.model_name == "llama3.2"
    assert httpx2_mock.calls.call_count == 0 and not fake_server.requests


def test_sync_auto_with_no_local_server_enabled_uses_a_cloud_key(monkeypatch):
    monkeypatch.setenv("GROK_API_KEY", "k-g")
    nbllm.reinit()
    for name in nbllm.providers():
        if nbllm.get_registry().spec(name).kind == "local":
            nbllm.disable(name)
    assert nbllm.get_model("auto").system == "grok"


def test_sync_auto_with_nothing_is_a_clear_error():
    for name in nbllm.providers():
        if nbllm.get_registry().spec(name).kind == "local":
            nbllm.disable(name)
    with pytest.raises(ConfigurationError, match="auto found no usable provider.*OPENAI_API_KEY"):
        nbllm.get_model("auto")
