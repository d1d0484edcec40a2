"""The factory: `get_model` for every provider (sync, no network) and `get_model_async`."""

from __future__ import annotations

import asyncio

import pytest

import nbllm
from nbllm.errors import ConfigurationError, ModelError

KEYS = {"OPENAI_API_KEY": "k-openai", "ANTHROPIC_API_KEY": "k-anthropic", "GEMINI_API_KEY": "k-gemini",
        "XAI_API_KEY": "k-xai"}


@pytest.fixture
def keys(monkeypatch):
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    nbllm.reinit()


@pytest.mark.parametrize("provider, cls, model, url", [
    ("openai", "OpenAIChatModel", "gpt-5-mini", "https://api.openai.com/v1"),
    ("grok", "OpenAIChatModel", "grok-4-1-fast-non-reasoning", "https://api.x.ai/v1"),
    ("anthropic", "AnthropicModel", "claude-haiku-4-5", "https://api.anthropic.com"),
    ("gemini", "GoogleModel", "gemini-2.5-flash", "https://generativelanguage.googleapis.com"),
])
def test_cloud_models(httpx2_mock, keys, provider, cls, model, url):
    built = nbllm.get_model(provider)
    assert type(built).__name__ == cls and built.model_name == model
    assert built.base_url.rstrip("/") == url
    assert httpx2_mock.calls.call_count == 0  # building touches no network


@pytest.mark.parametrize("provider, url", [("lmstudio", "http://localhost:1234/v1"),
                                           ("ollama", "http://localhost:11434/v1"),
                                           ("llamacpp", "http://localhost:8080/v1")])
def test_local_models_are_openai_chat_models_sending_max_tokens(httpx2_mock, monkeypatch, provider, url):
    monkeypatch.delenv(f"{provider.upper()}_BASE_URL")
    nbllm.reinit()
    built = nbllm.get_model(provider)  # nothing is running on these ports
    from pydantic_ai.models.openai import OpenAIChatModel

    assert isinstance(built, OpenAIChatModel) and built.system == provider
    assert built.base_url.rstrip("/") == url
    assert built.profile["openai_chat_supports_max_completion_tokens"] is False
    assert built.model_name == nbllm.get_registry().spec(provider).default_model
    assert httpx2_mock.calls.call_count == 0


def test_settings_reach_the_client(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k-1")
    monkeypatch.setenv("OPENAI_TIMEOUT", "7")
    monkeypatch.setenv("OPENAI_MAX_RETRIES", "1")
    monkeypatch.setenv("OPENAI_MODEL", "gpt-5")
    nbllm.reinit()
    built = nbllm.get_model("openai")
    assert built.model_name == "gpt-5" and built.client.timeout == 7.0 and built.client.max_retries == 1
    assert nbllm.get_model("openai", model="gpt-5-nano").model_name == "gpt-5-nano"


def test_openai_local_models_never_use_the_openai_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k-openai-only")
    nbllm.reinit()
    assert nbllm.get_model("lmstudio").client.api_key != "k-openai-only"


@pytest.mark.parametrize("provider, variable", [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY"),
                                                ("gemini", "GEMINI_API_KEY"), ("grok", "GROK_API_KEY")])
def test_cloud_without_key_is_a_clear_configuration_error(provider, variable):
    with pytest.raises(ConfigurationError, match=f"{provider} is not configured: set {variable}"):
        nbllm.get_model(provider)


def test_unknown_provider():
    with pytest.raises(ConfigurationError) as info:
        nbllm.get_model("gpt")
    message = str(info.value)
    assert "Invalid LLM provider 'gpt'" in message
    for name in ("openai", "anthropic", "gemini", "grok", "lmstudio", "ollama", "llamacpp", "auto"):
        assert name in message


def test_disabled_provider_is_refused(keys):
    nbllm.disable("anthropic")
    with pytest.raises(ConfigurationError, match="'anthropic' is disabled"):
        nbllm.get_model("anthropic")
    with pytest.raises(ConfigurationError, match="disabled"):
        asyncio.run(nbllm.get_model_async("anthropic"))


def test_get_model_uses_the_kernel_default(keys):
    nbllm.use("grok", "grok-4")
    built = nbllm.get_model()
    assert built.system == "grok" and built.model_name == "grok-4"
    assert nbllm.get_model("openai").model_name == "gpt-5-mini"  # a named provider ignores the default's model


# ---- get_model_async ---------------------------------------------------------------------


def test_async_uses_the_detected_model(fake_server, monkeypatch):
    fake_server.set(models=["qwen3-4b", "gemma"], loaded="gemma")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    nbllm.reinit()
    built = asyncio.run(nbllm.get_model_async("lmstudio"))
    assert built.model_name == "gemma" and built.base_url.rstrip("/") == fake_server.url + "/v1"
    assert asyncio.run(nbllm.get_model_async("lmstudio", auto_detect_model=False)).model_name == "local-model"
    assert nbllm.get_model("lmstudio").model_name == "local-model"  # sync never asks the server


def test_async_detected_model_from_mocked_ollama(httpx2_mock, monkeypatch):
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://ollama.test:11434")
    nbllm.reinit()
    httpx2_mock.get("http://ollama.test:11434/api/tags").respond(200, json={"models": [{"name": "qwen3:8b"}]})
    httpx2_mock.get("http://ollama.test:11434/api/ps").respond(200, json={"models": []})
    built = asyncio.run(nbllm.get_model_async("ollama"))
    assert built.model_name == "qwen3:8b" and built.base_url.rstrip("/") == "http://ollama.test:11434/v1"


def test_async_configured_model_is_not_replaced(fake_server, monkeypatch):
    monkeypatch.setenv("OLLAMA_BASE_URL", fake_server.url)
    monkeypatch.setenv("OLLAMA_MODEL", "mine")
    nbllm.reinit()
    assert asyncio.run(nbllm.get_model_async("ollama")).model_name == "mine"
    assert asyncio.run(nbllm.get_model_async("ollama", model="other")).model_name == "other"


def test_async_test_connection_names_provider_and_url(monkeypatch):
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    nbllm.reinit()
    url = nbllm.get_registry().settings("ollama").base_url
    with pytest.raises(ModelError) as info:
        asyncio.run(nbllm.get_model_async("ollama", test_connection=True))
    error = info.value
    assert error.provider == "ollama" and error.url == url
    assert str(error).startswith(f"ollama at {url}") and "connection refused" in str(error)
    assert "ollama serve" in str(error)  # what to do


def test_async_test_connection_to_a_hanging_server(make_server, monkeypatch):
    hang = make_server(mode="hang")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.3")
    monkeypatch.setenv("LLAMACPP_BASE_URL", hang.url)
    nbllm.reinit()
    with pytest.raises(ModelError, match=f"llamacpp at {hang.url}.*timed out"):
        asyncio.run(nbllm.get_model_async("llamacpp", test_connection=True))


def test_async_test_connection_succeeds(fake_server, monkeypatch):
    monkeypatch.setenv("LLAMACPP_BASE_URL", fake_server.url)
    nbllm.reinit()
    built = asyncio.run(nbllm.get_model_async("llamacpp", test_connection=True))
    assert built.model_name == "fake-model"


def test_async_test_connection_for_cloud_checks_the_key_only(httpx2_mock, keys):
    built = asyncio.run(nbllm.get_model_async("anthropic", test_connection=True))
    assert built.model_name == "claude-haiku-4-5" and httpx2_mock.calls.call_count == 0
