"""Build pydantic-ai model objects from catalog facts and settings.

`build_model` makes a fresh model (for users who want to drive pydantic-ai
themselves; the SDK retries `{P}_MAX_RETRIES` times); `shared_model` returns one
cached per event loop and settings, so nbllm's own calls pay the ~45 ms of building
a provider and its HTTP client once. Shared models are built with the SDK's retries
off: nbllm retries by one policy of its own (retry.py), so attempts never multiply
and the client is never copied per request.
"""

from __future__ import annotations

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


def _openai_client(spec: ProviderSpec, settings: ProviderSettings, retries: int) -> Any:
    from openai import AsyncOpenAI

    return AsyncOpenAI(
        api_key=_key(spec, settings), base_url=_api_base(spec, settings), max_retries=retries, timeout=settings.timeout,
    )


def _build_openai(spec: ProviderSpec, settings: ProviderSettings, model_id: str, retries: int) -> "Model":
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel(model_id, provider=OpenAIProvider(openai_client=_openai_client(spec, settings, retries)))


def _build_openai_compatible(spec: ProviderSpec, settings: ProviderSettings, model_id: str, retries: int) -> "Model":
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.profiles.openai import OpenAIModelProfile
    from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider

    # Local servers ignore `max_completion_tokens`: send the classic `max_tokens`. A
    # stream that ends without a finish reason was cut off: report it, don't hide it.
    profile = OpenAIModelProfile(
        openai_chat_supports_max_completion_tokens=False, openai_chat_streaming_requires_finish_reason=True
    )
    provider = OpenAICompatibleProvider(spec.name, openai_client=_openai_client(spec, settings, retries),
                                        profile=profile)
    return OpenAIChatModel(model_id, provider=provider)


def _build_anthropic(spec: ProviderSpec, settings: ProviderSettings, model_id: str, retries: int) -> "Model":
    from anthropic import AsyncAnthropic
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    client = AsyncAnthropic(
        api_key=_key(spec, settings), base_url=settings.base_url, max_retries=retries, timeout=settings.timeout,
    )
    return AnthropicModel(model_id, provider=AnthropicProvider(anthropic_client=client))


def _build_google(spec: ProviderSpec, settings: ProviderSettings, model_id: str, retries: int) -> "Model":
    from google.genai.types import HttpRetryOptions
    from pydantic_ai.models.google import GoogleModel
    from pydantic_ai.providers.google import GoogleProvider

    provider = GoogleProvider(
        api_key=_key(spec, settings), base_url=settings.base_url,
        retry_options=HttpRetryOptions(attempts=retries + 1),
    )
    return GoogleModel(model_id, provider=provider)


_BUILDERS: dict[str, Callable[[ProviderSpec, ProviderSettings, str, int], "Model"]] = {
    "openai": _build_openai,
    "openai_compatible": _build_openai_compatible,
    "anthropic": _build_anthropic,
    "google": _build_google,
}


def build_model(spec: ProviderSpec, settings: ProviderSettings, model_id: str | None = None,
                retries: int | None = None) -> "Model":
    """A new pydantic-ai model for `spec` (no network is touched); `retries`: the SDK's, default `{P}_MAX_RETRIES`.

    A cloud provider pointed at a self-hosted server (`OPENAI_BASE_URL=http://gpu:8000/v1`)
    is built like any OpenAI-compatible local server.
    """
    from .health import self_hosted

    name = "openai_compatible" if self_hosted(spec, settings) else spec.builder
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ConfigurationError(f"Provider {spec.name!r} names unknown builder {spec.builder!r}.")
    return builder(spec, settings, model_id or settings.model, settings.max_retries if retries is None else retries)


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
