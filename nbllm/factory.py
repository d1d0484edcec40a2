"""Build pydantic-ai model objects from catalog facts and settings.

`build_model` makes a fresh model (for users who want to drive pydantic-ai
themselves; the SDK retries `{P}_MAX_RETRIES` times); `shared_model` returns one
cached per event loop and settings, so nbllm's own calls pay the ~45 ms of building
a provider and its HTTP client once. Shared models are built with the SDK's retries
off: nbllm retries by one policy of its own (retry.py), so attempts never multiply
and the client is never copied per request.

Every model is built the same way: nbllm makes the SDK client (key, base URL,
timeout, retries from settings), hands it to the provider class (the catalog's
`provider_class` when pydantic-ai has one for the service, so its model profiles
apply; else the builder's generic class) and puts the model class on top. Only
Gemini, whose provider takes no client, has its own path.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .catalog import ProviderSpec, key_names
from .clients import cached_per_loop
from .config import ProviderSettings, openai_base
from .errors import ConfigurationError

if TYPE_CHECKING:
    from pydantic_ai.models import Model

__all__ = ["build_model", "shared_model", "model_settings"]

_LOCAL_PLACEHOLDER_KEY = "nbllm-local"  # OpenAI's SDK insists on a non-empty key


def _api_base(spec: ProviderSpec, settings: ProviderSettings) -> str:
    return openai_base(settings.base_url) if spec.kind == "local" else settings.base_url


def _key(spec: ProviderSpec, settings: ProviderSettings) -> str:
    if settings.api_key:
        return settings.api_key.get()
    from .health import self_hosted

    if spec.needs_key and not self_hosted(spec, settings):  # a self-hosted server may need no key
        raise ConfigurationError(
            f"{spec.name} is not configured: set {key_names(spec)} (in the environment or a .env file)."
        )
    return _LOCAL_PLACEHOLDER_KEY


def _load(path: str) -> Any:
    """`"module:Name"` → the object (imported only when a provider is first built)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


# ---- SDK clients: nbllm's settings, each SDK's spelling -------------------------------------


def _stainless(sdk_class: str, openai_api: bool = False) -> Callable[[ProviderSpec, ProviderSettings, int], Any]:
    """The OpenAI, Anthropic and Groq SDKs share one constructor (and `max_retries` counts retries);
    only OpenAI's API lives under a local server's `/v1`."""
    def make(spec: ProviderSpec, settings: ProviderSettings, retries: int) -> Any:
        base_url = _api_base(spec, settings) if openai_api else settings.base_url
        return _load(sdk_class)(api_key=_key(spec, settings), base_url=base_url, max_retries=retries,
                                timeout=settings.timeout)
    return make


def _mistral_client(spec: ProviderSpec, settings: ProviderSettings, retries: int) -> Any:
    """Mistral's SDK bounds retries by elapsed time, not count: `retries` backoffs' worth (0.5 s doubling, at most
    8 s each); 0 turns them off (its default is none either)."""
    from mistralai.client import Mistral
    from mistralai.client.utils import BackoffStrategy, RetryConfig

    retry = None
    if retries > 0:
        budget_ms = sum(min(500 * 2 ** i, 8000) for i in range(retries))
        retry = RetryConfig("backoff", BackoffStrategy(500, 8000, 2.0, budget_ms), retry_connection_errors=True)
    return Mistral(api_key=_key(spec, settings), server_url=settings.base_url, retry_config=retry,
                   timeout_ms=round(settings.timeout * 1000))


@dataclass(frozen=True)
class _Sdk:
    """How one builder turns settings into a model: its client, the provider argument taking it, its classes."""

    client: Callable[[ProviderSpec, ProviderSettings, int], Any]
    client_arg: str
    provider: str
    """The provider class used when the catalog names none ("module:Class")."""
    model: str
    openai_api: bool = False
    """Speaks OpenAI's chat API: a server nbllm probes (local, self-hosted) gets the local profile tweaks."""
    named: bool = False
    """The generic provider takes the service's name first (`OpenAICompatibleProvider(name, …)`)."""


_OPENAI_CLIENT = _stainless("openai:AsyncOpenAI", openai_api=True)
_CHAT = "pydantic_ai.models.openai:OpenAIChatModel"
_SDKS: dict[str, _Sdk] = {
    "openai": _Sdk(_OPENAI_CLIENT, "openai_client", "pydantic_ai.providers.openai:OpenAIProvider", _CHAT,
                   openai_api=True),
    "openai_compatible": _Sdk(_OPENAI_CLIENT, "openai_client",
                              "pydantic_ai.providers.openai_compatible:OpenAICompatibleProvider", _CHAT,
                              openai_api=True, named=True),
    "anthropic": _Sdk(_stainless("anthropic:AsyncAnthropic"), "anthropic_client",
                      "pydantic_ai.providers.anthropic:AnthropicProvider", "pydantic_ai.models.anthropic:AnthropicModel"),
    "groq": _Sdk(_stainless("groq:AsyncGroq"), "groq_client", "pydantic_ai.providers.groq:GroqProvider",
                 "pydantic_ai.models.groq:GroqModel"),
    "mistral": _Sdk(_mistral_client, "mistral_client", "pydantic_ai.providers.mistral:MistralProvider",
                    "pydantic_ai.models.mistral:MistralModel"),
}


def _local_tweaks() -> Any:
    """Local servers ignore `max_completion_tokens`: send the classic `max_tokens`. A stream
    that ends without a finish reason was cut off: report it, don't hide it."""
    from pydantic_ai.profiles.openai import OpenAIModelProfile

    return OpenAIModelProfile(openai_chat_supports_max_completion_tokens=False,
                              openai_chat_streaming_requires_finish_reason=True)


def _build_google(spec: ProviderSpec, settings: ProviderSettings, model_id: str, retries: int) -> "Model":
    from google.genai.types import HttpRetryOptions
    from pydantic_ai.models.google import GoogleModel
    from pydantic_ai.providers.google import GoogleProvider

    provider = GoogleProvider(
        api_key=_key(spec, settings), base_url=settings.base_url,
        retry_options=HttpRetryOptions(attempts=retries + 1),
    )
    return GoogleModel(model_id, provider=provider)


def _build_sdk(spec: ProviderSpec, settings: ProviderSettings, model_id: str, retries: int, builder: str) -> "Model":
    """Client → provider class → model class, for every builder that takes an SDK client."""
    from pydantic_ai.exceptions import UserError

    from .health import probed

    sdk = _SDKS[builder]
    client = sdk.client(spec, settings, retries)
    generic = spec.provider_class is None and sdk.named  # an OpenAI-compatible service with no class of its own
    provider_class = _load(spec.provider_class or sdk.provider)
    provider = (provider_class(spec.name, **{sdk.client_arg: client}) if generic
                else provider_class(**{sdk.client_arg: client}))
    # The class's own profile for the model, with the local tweaks merged on top for a server nbllm
    # probes and for a service without a class of its own (what the tweaks were made for).
    tweaks = _local_tweaks() if sdk.openai_api and (generic or probed(spec, settings)) else None
    try:
        return _load(sdk.model)(model_id, provider=provider, profile=tweaks)
    except UserError as exc:  # the class's profile rejects the name (OpenRouter wants vendor/model)
        raise ConfigurationError(f"{spec.name}: model {model_id!r} is not valid here: {exc} "
                                 f"(set {spec.env_prefix}_MODEL or pass model=).") from None


def build_model(spec: ProviderSpec, settings: ProviderSettings, model_id: str | None = None,
                retries: int | None = None) -> "Model":
    """A new pydantic-ai model for `spec` (no network is touched); `retries`: the SDK's, default `{P}_MAX_RETRIES`.

    A cloud provider pointed at a self-hosted server (`OPENAI_BASE_URL=http://gpu:8000/v1`)
    is built like any OpenAI-compatible local server (a preset keeps its class).
    """
    from .health import base_url_advice, base_url_missing, self_hosted

    if base_url_missing(spec, settings):
        raise ConfigurationError(f"{spec.name} is {base_url_advice(spec)} (the address of your {spec.label}, "
                                 "in the environment or a .env file).")
    name = "openai_compatible" if self_hosted(spec, settings) else spec.builder
    model_id = model_id or settings.model
    retries = settings.max_retries if retries is None else retries
    if name == "google":
        return _build_google(spec, settings, model_id, retries)
    if name not in _SDKS:
        raise ConfigurationError(f"Provider {spec.name!r} names unknown builder {spec.builder!r}.")
    return _build_sdk(spec, settings, model_id, retries, name)


def shared_model(spec: ProviderSpec, settings: ProviderSettings, model_id: str | None = None) -> "Model":
    """The model for these settings, built once per running event loop.

    Keyed on what the client is built from (key, URL, client timeout) and
    nothing else, so per-call options, which travel in `model_settings`, reuse it.
    The key is a `Secret`: it hashes by value and never shows in a repr.
    """
    model_id = model_id or settings.model
    key = ("model", spec.name, model_id, settings.api_key, settings.base_url, settings.timeout)
    return cached_per_loop(key, lambda: build_model(spec, settings, model_id, retries=0))


def _reasoning(model: "Model | None") -> bool:
    """Whether the model reasons by default (then it rejects sampling settings)."""
    profile = getattr(model, "profile", None)
    return bool(profile.get("openai_supports_reasoning", False)) if isinstance(profile, dict) else False


def model_settings(settings: ProviderSettings, model: "Model | None" = None, **overrides: Any) -> dict[str, Any]:
    """pydantic-ai `ModelSettings` from provider settings plus per-call overrides.

    The default temperature is left out for reasoning models (e.g. gpt-5-mini), which
    refuse it with a warning on every call; one set on purpose (env or per call) is sent.
    """
    values: dict[str, Any] = {"max_tokens": settings.max_tokens, "timeout": settings.timeout}
    if f"{settings.provider.upper()}_TEMPERATURE" in settings.sources or not _reasoning(model):
        values["temperature"] = settings.temperature
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values