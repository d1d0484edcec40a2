"""What one call asks for, described once and checked before anything is sent.

`describe(prompt, **options)` validates the prompt, the options and the name (a provider,
`provider:model`, an alias or a fallback chain, resolved offline by `routing.resolve`) and
returns a `Call`; `for_provider` asks the same of another name (`compare`). The types a
call's life passes through live here too — `Request`, `Call`, `Target` (where it goes),
`Notice`, `Answer` and `Fallback` — so the pipeline, the replay cache, the call log and the
faces share one definition. Nothing here touches the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from . import replay, routing
from .catalog import AUTO, Link, ProviderSpec
from .config import FIELDS, ProviderSettings, openai_base
from .parts import ImagePart, Part, images_in
from .errors import ConfigurationError, NbllmError, detached, display_url
from .registry import get_registry
from .retry import RetryPolicy
from .context import Prompt
from .session import Conversation, current

__all__ = [
    "Answer", "Fallback", "Request", "Call", "Target", "Notice", "OPTIONS", "check_prompt", "check_options",
    "describe", "for_provider", "link_call",
]

OPTIONS = ("model", "system", "temperature", "max_tokens", "timeout", "chat", "cache", "output_type")
"""The per-call options every asking function takes (besides `provider`)."""

_NUMBERS = {fld.attr: fld for fld in FIELDS if fld.attr in ("temperature", "max_tokens", "timeout", "max_retries")}


@dataclass(frozen=True)
class Fallback:
    """A link of a chain that did not answer, and why (skipped without a request, or its failure)."""

    provider: str
    reason: str

    def __str__(self) -> str:
        return f"{self.provider}: {self.reason}"


@dataclass
class Answer:
    """The text of an answer and what it cost; `str(answer)` is the text."""

    text: str
    provider: str
    model: str
    latency_ms: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    reason: str = ""
    cost_usd: float | None = None
    """USD; 0 for a local server; None when unknown (never 0 for unknown)."""
    cost_source: str = "unknown"
    """Where `cost_usd` comes from: "local", "declared" ({P}_PRICE_*), "genai-prices", "cached" (a replay
    costs 0) or "unknown"."""
    cached: bool = False
    """True when the answer came from the replay cache (see replay.py), not the provider."""
    messages: list[Any] = field(default_factory=list, repr=False)
    failure: NbllmError | None = field(default=None, repr=False, compare=False)
    attempts: int = 1
    fallbacks: list[Fallback] = field(default_factory=list)
    """The links of a fallback chain passed over before `provider` answered (or before it failed)."""
    output: Any = None
    """With `output_type=`: the validated value (`text` keeps the JSON it came as); else None."""
    request: "Request | None" = field(default=None, repr=False, compare=False)
    """What was asked: `request.prompt` is the text sent, each image as `<image 800×600 png, 41 KB>`;
    `request.parts` the parts themselves."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def __str__(self) -> str:
        return self.text

    def metadata(self) -> dict[str, Any]:
        """What a notebook display records alongside the text."""
        return {
            "provider": self.provider, "model": self.model, "latency_ms": round(self.latency_ms, 1),
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
            "cost_usd": self.cost_usd, "cost_source": self.cost_source, "error": self.error,
            **({"fallbacks": [str(f) for f in self.fallbacks]} if self.fallbacks else {}),
        }


@dataclass(frozen=True)
class Request:
    """One prompt and its options as the caller gave them; None means 'the provider's configured value'.

    `prompt` is the text (each image as its placeholder); `parts` the prompt's parts when it holds
    images (else empty: the text is the prompt)."""

    prompt: str
    parts: tuple[Part, ...] = field(default=(), compare=False)
    whole_tokens: int | None = field(default=None, compare=False)
    """When a `{df!full}` put a whole table in the prompt: its estimated tokens, checked against the model's
    context length before sending."""
    provider: str | None = None
    model: str | None = None
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    chat: Conversation | None = field(default=None, compare=False)
    cache: str | None = None
    """Replay-cache mode for this call ("record" | "replay" | "off"); None: the global mode."""
    output_type: Any = field(default=None, compare=False)
    """A type the answer must validate as (pydantic model, dataclass, TypedDict, Literal, list, scalar)."""
    retry: RetryPolicy = RetryPolicy()

    def numbers(self, settings: ProviderSettings) -> dict[str, Any]:
        """The temperature, max_tokens and timeout this call uses with `settings`: its own, else the provider's."""
        return {name: getattr(settings, name) if getattr(self, name) is None else getattr(self, name)
                for name in ("temperature", "max_tokens", "timeout")}

    @property
    def images(self) -> list[ImagePart]:
        return images_in(self.parts)

    def retries(self, settings: ProviderSettings) -> int:
        """How many times this call may be retried: its policy's count, else `{P}_MAX_RETRIES`."""
        return settings.max_retries if self.retry.retries is None else self.retry.retries


@dataclass(frozen=True)
class Call:
    """What one call asks for, resolved without the network: the request, the provider and
    model *as asked* (the kernel default when none was named, possibly `auto`), and the
    replay-cache mode. The replay cache keys on this, the call log writes it."""

    request: Request
    provider: str
    model: str | None
    cache_mode: str
    kind: str = "ask"
    route: routing.Route | None = field(default=None, compare=False)
    """The links to try when the name is a chain (or an alias of one, or had links skipped); else None."""
    asked: str = ""
    """The name as the caller wrote it (`fast`, `openai,embedded`, `ollama:qwen3:8b`), for the call log."""

    @property
    def prompt(self) -> str:
        return self.request.prompt

    def with_prompt(self, prompt: str) -> "Call":
        """The same call for another (text) prompt (`map`: one description, many inputs)."""
        return replace(self, request=replace(self.request, prompt=prompt, parts=(), whole_tokens=None))

    def settings(self) -> ProviderSettings | None:
        """The named provider's settings (None for `auto` or a chain, which only routing can resolve)."""
        return None if self.provider == AUTO or self.route is not None else get_registry().settings(self.provider)


@dataclass(frozen=True)
class Target:
    """Where a call goes: the provider's catalog entry and settings, the model, and why."""

    spec: ProviderSpec
    settings: ProviderSettings
    model: str
    reason: str = ""

    @property
    def provider(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        """The API base the request goes to, without credentials (for messages)."""
        base = openai_base(self.settings.base_url) if self.spec.kind == "local" else self.settings.base_url
        return display_url(base.rstrip("/"))

    def on_server(self, url: str) -> "Target":
        """The same target, sent to one server of its fleet."""
        return replace(self, settings=self.settings.with_(base_url=url))



@dataclass(frozen=True)
class Notice:
    """Something worth showing while a call waits (e.g. "starting the embedded model…"); not answer text."""

    text: str


# ---- describing a call -------------------------------------------------------------------


def check_prompt(prompt: Any) -> None:
    """An empty prompt is one clear error before anything is sent."""
    if isinstance(prompt, Prompt):
        if prompt.has_images:
            return
        prompt = prompt.text
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigurationError("The prompt is empty: give some text to send.")


def check_options(options: dict[str, Any], where: str, allowed: tuple[str, ...] = OPTIONS) -> None:
    """Unknown keyword options and out-of-range numbers: one clear error each, before anything is sent."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigurationError(f"{where}() got unknown option(s) {', '.join(unknown)}; "
                                 f"valid: {', '.join(sorted(allowed))}.")
    problem = None
    for name, fld in _NUMBERS.items():
        value = options.get(name)
        if value is None:
            continue
        try:
            fld.check(value)
        except ValueError as exc:
            problem = f"{name}={value!r} is invalid: it {exc}."
            break
    if problem:  # raised outside the except: nothing chained
        raise ConfigurationError(problem)


def describe(prompt: "str | Prompt", where: str = "ask", provider: str | None = None, retry: RetryPolicy | None = None,
             kind: str = "ask", max_retries: int | None = None, **options: Any) -> Call:
    """Validate one call's prompt and options and say what it asks for; nothing is sent.

    An unknown or disabled provider, an unknown option or a number out of range is a
    `ConfigurationError` naming the valid choices. `max_retries` overrides the
    provider's `{P}_MAX_RETRIES` for this call. The error is raised from here, without the
    frames of nbllm's resolver below it: a user's traceback shows their own line and this one.
    """
    problem: NbllmError | None = None
    try:
        return _described(prompt, where, provider, retry, kind, max_retries, options)
    except NbllmError as exc:
        problem = exc
    raise detached(problem)


def _described(prompt: str, where: str, provider: str | None, retry: RetryPolicy | None, kind: str,
               max_retries: int | None, options: dict[str, Any]) -> Call:
    check_prompt(prompt)
    check_options(options, where)
    if options.get("output_type") is not None:
        from .typed import plan_for

        plan_for(options["output_type"])  # a type pydantic cannot describe: one error now
        if kind == "stream":
            raise ConfigurationError("A typed answer (output_type=) is validated whole, so it cannot stream: "
                                     "use nbllm.ask(..., output_type=...).")
    if max_retries is not None:
        check_options({"max_retries": max_retries}, where, ("max_retries",))
        retry = replace(retry or RetryPolicy(), retries=max_retries)
    if isinstance(prompt, Prompt):
        parts = prompt.parts if prompt.has_images else ()
        request = Request(prompt=prompt.text, parts=parts, whole_tokens=prompt.whole_tokens, provider=provider,
                          retry=retry or RetryPolicy(), **options)
    else:
        request = Request(prompt=prompt, provider=provider, retry=retry or RetryPolicy(), **options)
    selection = current()
    name = provider or selection.provider or AUTO
    model = request.model or (selection.model if provider is None else None)
    return _named(Call(request, AUTO, None, replay.mode_for(request.cache), kind), name, model)


def _named(call: Call, name: str, model: str | None, check_enabled: bool = True) -> Call:
    """`call` asked of `name` (a provider, provider:model, an alias or a chain), resolved offline."""
    route = routing.resolve(name, model, check_enabled)
    asked = f"{route.name}:{model}" if model and ":" not in route.name and not route.chain else route.name
    if len(route.links) == 1 and not route.skipped:
        link = route.links[0]
        return replace(call, provider=link.provider, model=link.model, route=None, asked=asked)
    return replace(call, provider=route.expanded, model=None, route=route, asked=asked)


def for_provider(call: Call, provider: str, model: str | None = None) -> Call:
    """The same call asked of another name (`compare`: described once, sent to each)."""
    named = _named(call, provider, model, check_enabled=False)  # disabled: that call's own failure
    return replace(named, request=replace(call.request, provider=provider, model=named.model))


def link_call(call: Call, link: Link, last: bool) -> Call:
    """One link of a chain as a call of its own; links before the last are not retried (the next one is)."""
    request = replace(call.request, provider=link.provider, model=link.model)
    if not last:
        request = replace(request, retry=replace(request.retry, retries=0))
    return replace(call, request=request, provider=link.provider, model=link.model, route=None)
