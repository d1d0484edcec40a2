"""The presets (issue 10, point 1): one catalog entry each, built with pydantic-ai's own provider class.

Groq's SDK speaks legacy httpx (mocked with `respx.mock`); OpenAI's and Mistral's speak httpx2
(the `httpx2_mock` fixture). Every test gets a clean environment (conftest.py).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import respx

import nbllm
from nbllm.catalog import get_spec
from nbllm.errors import ConfigurationError, ModelError
from nbllm.factory import _load

CLOUD = ["openrouter", "groq", "mistral", "deepseek", "together", "fireworks", "cerebras"]
LOCAL = ["vllm", "litellm"]
PRESETS = CLOUD + LOCAL

# Where each preset's chat request goes (the SDK's path under the catalog's base URL).
CHAT_URL = {
    "openrouter": "https://openrouter.ai/api/v1/chat/completions",
    "groq": "https://api.groq.com/openai/v1/chat/completions",
    "mistral": "https://api.mistral.ai/v1/chat/completions",
    "deepseek": "https://api.deepseek.com/chat/completions",
    "together": "https://api.together.xyz/v1/chat/completions",
    "fireworks": "https://api.fireworks.ai/inference/v1/chat/completions",
    "cerebras": "https://api.cerebras.ai/v1/chat/completions",
    "vllm": "http://localhost:8000/v1/chat/completions",
    "litellm": "http://gateway.test:4000/v1/chat/completions",
}
# An override of {P}_BASE_URL, and where the request must then go (Groq's and Mistral's SDKs add their
# own paths to a host; a local server's API is under /v1).
OTHER_URL = {name: ("https://proxy.test/v1", "https://proxy.test/v1/chat/completions") for name in PRESETS} | {
    "groq": ("https://groq-proxy.test", "https://groq-proxy.test/openai/v1/chat/completions"),
    "mistral": ("https://mistral-proxy.test", "https://mistral-proxy.test/v1/chat/completions"),
    "vllm": ("http://gpu.test:8000", "http://gpu.test:8000/v1/chat/completions"),
}


def _chat_reply(text: str = "Hi from the mock") -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": "served",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}


class _Http:
    """One face over both mocks: routes and the requests they saw, whichever HTTP library the SDK uses."""

    def __init__(self, router: Any):
        self.router = router

    def post(self, url: str, status: int = 200, **kwargs: Any) -> Any:
        return self.router.post(url).respond(status, **kwargs)

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.router.get(url).respond(200, **kwargs)

    def requests(self) -> list[Any]:
        return [call.request for call in self.router.calls]


@pytest.fixture
def http(httpx2_mock) -> Iterator[Any]:
    """`http(name)` → a mock for the library that preset's SDK speaks (groq: httpx; the rest: httpx2)."""
    with respx.mock(assert_all_called=False) as legacy:
        yield lambda name: _Http(legacy if name == "groq" else httpx2_mock)


def _configure(monkeypatch: pytest.MonkeyPatch, name: str, **variables: str) -> str:
    """Give the preset what it needs (a key; for litellm its address) plus `variables`; returns the key."""
    prefix = name.upper()
    key = f"key-{name}-0123456789"
    monkeypatch.setenv(f"{prefix}_API_KEY", key)
    if name == "vllm":
        monkeypatch.delenv("VLLM_BASE_URL", raising=False)  # conftest points it at a closed port
    if name == "litellm":
        monkeypatch.setenv("LITELLM_BASE_URL", "http://gateway.test:4000")
    for suffix, value in variables.items():
        monkeypatch.setenv(f"{prefix}_{suffix}", value)
    nbllm.reinit()
    return key


def _models_route(mock: _Http, name: str, served: str) -> None:
    """A local preset's probe: `nbllm.ask` detects the served model from /v1/models."""
    root = CHAT_URL[name].removesuffix("/chat/completions")
    mock.get(f"{root}/models", json={"object": "list", "data": [{"id": served, "object": "model"}]})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- catalog data --------------------------------------------------------------------------


def test_presets_are_in_the_catalog_after_the_built_ins():
    names = nbllm.providers()
    assert names[:8] == ["openai", "anthropic", "gemini", "grok", "lmstudio", "ollama", "llamacpp", "embedded"]
    assert [n for n in names if n in PRESETS] == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_names_a_pydantic_ai_provider_class(name):
    spec = get_spec(name)
    cls = _load(spec.provider_class)
    assert cls.__module__.startswith("pydantic_ai.providers.") and cls.__name__.endswith("Provider")
    assert spec.kind == ("cloud" if name in CLOUD else "local") and spec.default_model.strip() and spec.label
    assert spec.probe == ("key" if name in CLOUD else "openai")


@pytest.mark.parametrize("name", CLOUD)
def test_cloud_base_urls_are_the_provider_classes_own(name):
    """Written in the catalog (loading it imports no pydantic-ai), checked here against the class."""
    spec = get_spec(name)
    provider = _load(spec.provider_class)(api_key="dummy-key")
    assert provider.base_url.rstrip("/") == spec.base_url


@pytest.mark.parametrize("name", LOCAL)
def test_local_classes_have_no_default_address_to_drift_from(monkeypatch, name):
    """vLLM's and LiteLLM's classes take the address from the caller: vLLM's default is its server's port."""
    from pydantic_ai.exceptions import UserError

    cls = _load(get_spec(name).provider_class)
    if name == "vllm":
        monkeypatch.delenv("VLLM_BASE_URL", raising=False)  # the class reads it (conftest sets it)
        with pytest.raises(UserError, match="VLLM_BASE_URL"):
            cls(api_key="dummy-key")
        assert get_spec("vllm").base_url == "http://localhost:8000/v1" and get_spec("vllm").default_port == 8000
    else:
        # Without an address it falls back to OpenAI's own SDK default: no LiteLLM proxy lives there.
        assert cls(api_key="dummy-key").base_url.rstrip("/") == "https://api.openai.com/v1"
        assert get_spec("litellm").needs_base_url and get_spec("litellm").base_url == ""


def test_vllm_takes_part_in_auto_and_litellm_only_with_an_address():
    vllm, litellm = get_spec("vllm"), get_spec("litellm")
    priorities = [get_spec(n).auto_priority for n in ("lmstudio", "ollama", "llamacpp")]
    assert max(priorities) < vllm.auto_priority < get_spec("embedded").auto_priority
    assert "vllm serve" in vllm.install_hint and "LITELLM_BASE_URL" in litellm.install_hint


# ---- a request through nbllm.ask ----------------------------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_ask_reaches_the_preset_with_its_key(http, monkeypatch, name):
    key = _configure(monkeypatch, name)
    mock = http(name)
    if name in LOCAL:
        _models_route(mock, name, "Qwen/Qwen3-8B")
    mock.post(CHAT_URL[name], json=_chat_reply())
    answer = nbllm.ask("hello", provider=name)
    assert answer.ok and answer.text == "Hi from the mock" and answer.provider == name
    chats = [r for r in mock.requests() if r.method == "POST"]
    assert [str(r.url) for r in chats] == [CHAT_URL[name]]
    assert all(r.headers["authorization"] == f"Bearer {key}" for r in mock.requests())  # the probe too
    sent = json.loads(chats[0].content)
    expected = "Qwen/Qwen3-8B" if name in LOCAL else get_spec(name).default_model  # local: detected
    assert sent["model"] == expected and answer.model == expected
    assert sent["messages"][-1]["content"] == "hello"


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_reads_its_own_variables(http, monkeypatch, name):
    """`{P}_MODEL`, `{P}_MAX_TOKENS`, `{P}_BASE_URL` (elsewhere: the request goes there, with the key,
    built with the same class) and `{P}_API_KEY`."""
    base, url = OTHER_URL[name]
    key = _configure(monkeypatch, name, MODEL="vendor/chosen-model", MAX_TOKENS="77", BASE_URL=base)
    mock = http(name)
    mock.post(url, json=_chat_reply())
    answer = nbllm.ask("hello", provider=name)
    assert answer.ok and answer.model == "vendor/chosen-model"
    (request,) = mock.requests()  # a chosen model: no probe to detect one
    sent = json.loads(request.content)
    assert str(request.url) == url and sent["model"] == "vendor/chosen-model"
    assert request.headers["authorization"] == f"Bearer {key}"
    assert sent.get("max_tokens", sent.get("max_completion_tokens")) == 77
    assert type(nbllm.get_model(name).provider) is _load(get_spec(name).provider_class)


# ---- the class's model profile applies -----------------------------------------------------------


def test_openrouter_gets_the_upstream_labs_profile(monkeypatch):
    _configure(monkeypatch, "openrouter")
    from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider

    claude = nbllm.get_model("openrouter", model="anthropic/claude-sonnet-4.5")
    gpt = nbllm.get_model("openrouter", model="openai/gpt-5-mini")
    assert type(claude.provider).__name__ == "OpenRouterProvider" and claude.system == "openrouter"
    # Anthropic routes cache with at most four breakpoints; OpenAI routes do not; a generic
    # OpenAI-compatible provider knows neither.
    assert claude.profile["supports_cache"] is True and claude.profile["openrouter_max_cache_points"] == 4
    assert gpt.profile.get("supports_cache") is not True and gpt.profile.get("openrouter_max_cache_points") is None
    generic = OpenAICompatibleProvider.model_profile("anthropic/claude-sonnet-4.5") or {}
    assert "openrouter_max_cache_points" not in generic
    assert claude.profile["openai_chat_supports_max_completion_tokens"] is False  # OpenRouter's own rule


@pytest.mark.parametrize("name, model", [
    ("openrouter", "anthropic/claude-sonnet-4.5"), ("groq", "openai/gpt-oss-20b"), ("mistral", "magistral-medium-latest"),
    ("deepseek", "deepseek-flash"), ("together", "deepseek-ai/deepseek-v4-pro"),
    ("fireworks", "accounts/fireworks/models/gpt-oss-20b"), ("cerebras", "gpt-oss-120b"),
    ("vllm", "Qwen/Qwen3-8B"), ("litellm", "anthropic/claude-sonnet-4.5"),
])
def test_every_preset_model_carries_its_classs_profile(monkeypatch, name, model):
    from pydantic_ai.profiles import DEFAULT_PROFILE

    _configure(monkeypatch, name)
    built = nbllm.get_model(name, model=model)
    cls = _load(get_spec(name).provider_class)
    assert type(built.provider) is cls and built.model_name == model
    own = cls.model_profile(model) or {}
    # Every trait the class sets apart from the defaults is in the built model's profile (the local
    # tweaks aside, and what the model class itself narrows: its native tools and file inputs).
    narrowed = {"supported_native_tools", "openai_chat_supports_max_completion_tokens",
                "openai_chat_streaming_requires_finish_reason"}
    distinct = {k: v for k, v in own.items() if DEFAULT_PROFILE.get(k) != v and k not in narrowed
                and "document" not in k and "file" not in k and not callable(v) and not isinstance(v, type)}
    assert distinct, "the class's profile says nothing of its own for this model: pick another"
    assert {k: built.profile.get(k) for k in distinct} == distinct


@pytest.mark.parametrize("name", LOCAL)
def test_local_presets_keep_the_local_server_tweaks(monkeypatch, name):
    _configure(monkeypatch, name)
    built = nbllm.get_model(name, model="Qwen/Qwen3-8B")
    assert built.profile["openai_chat_supports_max_completion_tokens"] is False
    assert built.profile["openai_chat_streaming_requires_finish_reason"] is True
    if name == "vllm":  # and the class's own traits with them
        assert built.profile["openai_chat_supports_multiple_system_messages"] is False


@pytest.mark.parametrize("name", ["openrouter", "groq", "deepseek"])
def test_cloud_presets_do_not_get_the_local_tweaks(monkeypatch, name):
    _configure(monkeypatch, name)
    built = nbllm.get_model(name, model="qwen/qwen3-32b" if name != "deepseek" else "deepseek-flash")
    assert built.profile.get("openai_chat_streaming_requires_finish_reason", False) is False


def test_a_model_name_the_class_rejects_is_one_configuration_error(monkeypatch):
    _configure(monkeypatch, "openrouter", MODEL="gpt-5-mini")
    with pytest.raises(ConfigurationError, match=r"openrouter: model 'gpt-5-mini' is not valid.*openai/gpt-5-mini"):
        nbllm.get_model("openrouter")


# ---- not configured: no key, no address ------------------------------------------------------------


def test_status_and_health_show_presets_without_a_key_as_not_configured(http):
    nbllm.reinit()
    names = [*CLOUD, "litellm"]
    health = nbllm.health_check(names, timeout=0.5)
    for name in CLOUD:
        assert health[name].status == "not configured" and not health[name].available
        assert health[name].error == f"no API key: set {name.upper()}_API_KEY"
    assert health["litellm"].status == "not configured"
    assert health["litellm"].error == "not configured: set LITELLM_BASE_URL"
    assert http("groq").requests() == [] and http("openrouter").requests() == []  # no request made
    assert not any(nbllm.get_registry().is_configured(n) for n in names)
    assert nbllm.get_registry().is_configured("vllm")  # local: answering or not is for a probe


@pytest.mark.parametrize("name", CLOUD)
def test_calling_a_preset_without_its_key_says_which_variable(http, name):
    with pytest.raises(ConfigurationError, match=f"{name} is not configured: set {name.upper()}_API_KEY"):
        nbllm.ask("hello", provider=name)
    assert http(name).requests() == []


def test_calling_litellm_without_an_address_is_one_configuration_error(http, monkeypatch):
    monkeypatch.setenv("LITELLM_API_KEY", "key-litellm-0123456789")
    nbllm.reinit()
    with pytest.raises(ConfigurationError) as info:
        nbllm.ask("hello", provider="litellm")
    assert "not configured: set LITELLM_BASE_URL" in str(info.value)
    assert "0123456789" not in str(info.value)
    with pytest.raises(ConfigurationError, match="not configured: set LITELLM_BASE_URL"):
        nbllm.get_model("litellm")
    assert http("litellm").requests() == []


def test_litellm_with_an_address_is_probed_like_a_local_server(http, monkeypatch):
    key = _configure(monkeypatch, "litellm")
    mock = http("litellm")
    _models_route(mock, "litellm", "gpt-4o-mini")
    health = nbllm.health_check(["litellm"], timeout=0.5)["litellm"]
    assert health.status == "available" and health.model_id == "gpt-4o-mini" and health.kind == "local"
    assert [r.headers["authorization"] for r in mock.requests()] == [f"Bearer {key}"]


def test_vllm_down_says_how_to_start_it(monkeypatch):
    monkeypatch.setenv("VLLM_BASE_URL", f"http://127.0.0.1:{_closed_port()}/v1")
    monkeypatch.setenv("VLLM_MODEL", "served")
    monkeypatch.setenv("VLLM_MAX_RETRIES", "0")
    nbllm.reinit()
    assert nbllm.health_check(["vllm"], timeout=0.5)["vllm"].status == "down"
    with pytest.raises(ModelError, match="connection refused.*vllm serve"):
        nbllm.ask("hello", provider="vllm")


# ---- failures through each SDK read the same ------------------------------------------------------

FAILING = ["groq", "mistral", "deepseek"]  # Groq's SDK, Mistral's SDK, and OpenAI's for comparison


@pytest.mark.parametrize("name", FAILING)
@pytest.mark.parametrize("status, retryable", [(401, False), (429, True), (500, True)])
def test_http_failures_read_the_same_through_every_sdk(http, monkeypatch, name, status, retryable):
    key = _configure(monkeypatch, name, MAX_RETRIES="0")
    error_body = {"error": {"message": "bad things"}} if name != "mistral" else {"message": "bad things"}
    http(name).post(CHAT_URL[name], status, json=error_body, headers={"retry-after": "7"})
    with pytest.raises(ModelError) as info:
        nbllm.ask("hello", provider=name)
    error, text = info.value, str(info.value)
    assert (error.provider, error.status, error.retryable) == (name, status, retryable)
    assert text.startswith(f"{name} at {get_spec(name).base_url}: HTTP {status}")
    assert f"HTTP {status}" in text and key not in text and "Traceback" not in text
    if status == 401:
        assert error.hint == f"check {name.upper()}_API_KEY" and "bad things" in text
    if status == 429:
        assert error.retry_after == 7.0 and "rate limited" in text and "bad things" in text
    if status == 500:
        assert "server error" in text


@pytest.mark.parametrize("name", FAILING)
def test_connection_refused_reads_the_same_through_every_sdk(monkeypatch, name):
    url = f"http://127.0.0.1:{_closed_port()}"
    _configure(monkeypatch, name, MAX_RETRIES="0", BASE_URL=url, MODEL="vendor/m")
    with pytest.raises(ModelError) as info:
        nbllm.ask("hello", provider=name)
    error = info.value
    assert "connection refused (nothing is listening)" in str(error) and error.status is None
    assert not error.retryable and f"{name.upper()}_BASE_URL" in error.hint


@pytest.mark.parametrize("name", FAILING)
def test_only_nbllm_retries_never_the_sdk_as_well(http, monkeypatch, name):
    """Shared models are built with the SDK's retries off: MAX_RETRIES=2 is three requests, not nine."""
    _configure(monkeypatch, name, MAX_RETRIES="2")
    route = http(name).post(CHAT_URL[name], 429, json={"error": {"message": "slow down"}},
                            headers={"retry-after": "0.01"})
    with pytest.raises(ModelError, match="HTTP 429"):
        nbllm.ask("hello", provider=name)
    assert route.call_count == 3


@pytest.mark.parametrize("name, cls, arg", [("groq", "AsyncGroq", "max_retries"), ("deepseek", "AsyncOpenAI",
                                                                                      "max_retries")])
def test_build_model_gives_the_sdk_the_configured_retries(monkeypatch, name, cls, arg):
    _configure(monkeypatch, name, MAX_RETRIES="4", TIMEOUT="9")
    client = nbllm.get_model(name).client
    assert type(client).__name__ == cls and client.max_retries == 4 and client.timeout == 9.0


def test_mistral_sdk_retries_are_time_bounded_and_off_at_zero(monkeypatch):
    from nbllm.factory import _mistral_client

    spec = get_spec("mistral")
    _configure(monkeypatch, "mistral", TIMEOUT="9")
    settings = nbllm.get_registry().settings("mistral")
    assert _mistral_client(spec, settings, 0).sdk_configuration.retry_config is None
    config = _mistral_client(spec, settings, 3).sdk_configuration
    assert config.retry_config.strategy == "backoff" and config.retry_config.backoff.max_elapsed_time == 3500
    assert config.timeout_ms == 9000


def test_a_shared_mistral_model_closes_its_http_client_with_the_others(monkeypatch):
    """Mistral's SDK client has no close(): nbllm still closes its connections before its loop stops."""
    import asyncio

    from nbllm import clients
    from nbllm.factory import shared_model

    _configure(monkeypatch, "mistral")
    registry = nbllm.get_registry()

    async def build_then_close() -> tuple[Any, Any]:
        model = shared_model(get_spec("mistral"), registry.settings("mistral"))
        http_client = model.client.sdk_configuration.async_client
        await clients.close_clients()
        return model, http_client

    model, http_client = asyncio.run(build_then_close())
    assert http_client is not None and http_client.is_closed
    assert model.client.sdk_configuration.async_client is None
