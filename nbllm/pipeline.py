"""One call, described once: what was asked → where it goes → the answer, logged.

    describe(prompt, **options)   → Call     what was asked, validated once, no network:
                                              the provider and model as asked (or the kernel
                                              default), per-call numbers, the cache mode
    await route(call)             → Target   which provider, model and settings answer it
                                              (routing: `auto`, detection; the embedded
                                              server is started here)
    await answer(call)            → Answer   cache → model → answer → call log, retried
                                              by one policy (`retry.RetryPolicy`)
    events(call)                  → str… Notice… Answer   the same, streamed

Every caller — `ask`, streams, `map`, `compare`/`consensus`, the magics — builds a
`Call` with `describe` and reads it; the replay cache keys on it and the call log
writes it, so "asked, else the default" is decided in exactly one place.

Timeouts (`{P}_TIMEOUT` or `timeout=`, seconds): a non-streamed attempt is bounded as
a whole — the complete reply must arrive within it (pydantic-ai's `request_timeout`).
A stream must deliver its first chunk within it (`first_event_timeout`), and after that
may pause at most that long between chunks (the transport's read timeout). A stream is
retried only before its first chunk; once text has arrived a failure keeps that text.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import calllog, replay, routing
from .catalog import AUTO, ProviderSpec
from .config import FIELDS, ProviderSettings, openai_base
from .errors import ConfigurationError, ModelError, NbllmError, detached, display_url
from .failures import describe_failure
from .health import self_hosted
from .registry import get_registry
from .retry import RetryPolicy
from .session import Conversation, current

if TYPE_CHECKING:
    from pydantic_ai.models import Model

__all__ = [
    "Answer", "Request", "Call", "Target", "Notice", "describe", "for_provider", "route", "answer", "events", "OPTIONS",
]

OPTIONS = ("model", "system", "temperature", "max_tokens", "timeout", "chat", "cache")
"""The per-call options every asking function takes (besides `provider`)."""

_NUMBERS = {fld.attr: fld for fld in FIELDS if fld.attr in ("temperature", "max_tokens", "timeout", "max_retries")}


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
    cached: bool = False
    """True when the answer came from the replay cache (see replay.py), not the provider."""
    messages: list[Any] = field(default_factory=list, repr=False)
    failure: NbllmError | None = field(default=None, repr=False, compare=False)
    attempts: int = 1

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
            "cost_usd": self.cost_usd, "error": self.error,
        }


@dataclass(frozen=True)
class Request:
    """One prompt and its options as the caller gave them; None means 'the provider's configured value'."""

    prompt: str
    provider: str | None = None
    model: str | None = None
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    chat: Conversation | None = field(default=None, compare=False)
    cache: str | None = None
    """Replay-cache mode for this call ("record" | "replay" | "off"); None: the global mode."""
    retry: RetryPolicy = RetryPolicy()

    def numbers(self, settings: ProviderSettings) -> dict[str, Any]:
        """The temperature, max_tokens and timeout this call uses with `settings`: its own, else the provider's."""
        return {name: getattr(settings, name) if getattr(self, name) is None else getattr(self, name)
                for name in ("temperature", "max_tokens", "timeout")}

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

    @property
    def prompt(self) -> str:
        return self.request.prompt

    def with_prompt(self, prompt: str) -> "Call":
        """The same call for another prompt (`map`: one description, many inputs)."""
        return replace(self, request=replace(self.request, prompt=prompt))

    def settings(self) -> ProviderSettings | None:
        """The named provider's settings (None for `auto`, which only routing can resolve)."""
        return None if self.provider == AUTO else get_registry().settings(self.provider)


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

    @property
    def priced(self) -> bool:
        """Whether the vendor's prices apply: not for local or self-hosted servers."""
        return self.spec.kind == "cloud" and not self_hosted(self.spec, self.settings)


@dataclass(frozen=True)
class Notice:
    """Something worth showing while a call waits (e.g. "starting the embedded model…"); not answer text."""

    text: str


# ---- describing a call -------------------------------------------------------------------


def check_prompt(prompt: Any) -> None:
    """An empty prompt is one clear error before anything is sent."""
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


def describe(prompt: str, where: str = "ask", provider: str | None = None, retry: RetryPolicy | None = None,
             kind: str = "ask", max_retries: int | None = None, **options: Any) -> Call:
    """Validate one call's prompt and options and say what it asks for; nothing is sent.

    An unknown or disabled provider, an unknown option or a number out of range is a
    `ConfigurationError` naming the valid choices. `max_retries` overrides the
    provider's `{P}_MAX_RETRIES` for this call.
    """
    check_prompt(prompt)
    check_options(options, where)
    if max_retries is not None:
        check_options({"max_retries": max_retries}, where, ("max_retries",))
        retry = replace(retry or RetryPolicy(), retries=max_retries)
    request = Request(prompt=prompt, provider=provider, retry=retry or RetryPolicy(), **options)
    selection = current()
    name = (provider or selection.provider or AUTO).strip().lower()
    model = request.model or (selection.model if provider is None else None)
    if name != AUTO:
        name = get_registry().require(name)[0].name
    return Call(request, name, model, replay.mode_for(request.cache), kind)


def for_provider(call: Call, provider: str, model: str | None = None) -> Call:
    """The same call asked of another provider (`compare`: described once, sent to each)."""
    name = get_registry().spec(provider).name  # unknown: an error now; disabled: that call's own failure
    return replace(call, request=replace(call.request, provider=name, model=model), provider=name, model=model)


# ---- routing -----------------------------------------------------------------------------


async def route(call: Call) -> Target:
    """The provider and model that answer `call` (probing local servers for `auto`); a
    provider whose server nbllm runs (the embedded model) is started here."""
    target = None
    async for item in _routed(call):
        target = item
    assert isinstance(target, Target)
    return target


async def _routed(call: Call) -> AsyncIterator[Target | Notice]:
    """`route`, announcing a server that has to start first (a process and a model load)."""
    registry = get_registry()
    choice = await routing.choose(call.provider, call.model)
    spec = registry.require(choice.provider)[0]
    # Only a provider whose server nbllm runs (a `prepare` hook) may need starting; once a call has
    # found it running, later calls skip that look (for the embedded model, a local connect).
    running = _running.setdefault(registry, set())
    if spec.prepare and spec.name not in running and await registry.prepare(spec.name, start=False) is None:
        yield Notice(f"starting the {spec.label} model…")
    prepared = await registry.prepare(spec.name)  # the settings themselves for a provider without a hook
    if spec.prepare:
        running.add(spec.name)
    assert prepared is not None
    yield Target(spec, prepared, choice.model, choice.reason)


_running: "weakref.WeakKeyDictionary[Any, set[str]]" = weakref.WeakKeyDictionary()
"""Per registry: the providers with a `prepare` hook whose server a call has found running or started."""


# ---- one attempt ---------------------------------------------------------------------------


def _request_messages(call: Call) -> list[Any]:
    from pydantic_ai.messages import ModelRequest, UserPromptPart

    history = list(call.request.chat.messages) if call.request.chat is not None else []
    return [*history, ModelRequest(parts=[UserPromptPart(call.prompt)], instructions=call.request.system or None)]


def _model_and_options(call: Call, target: Target, streamed: bool) -> tuple["Model", dict[str, Any]]:
    """The shared pydantic-ai model of the target and this call's model settings."""
    from .factory import model_settings, shared_model

    model = shared_model(target.spec, target.settings, target.model)
    request = call.request
    options = model_settings(target.settings, model, temperature=request.temperature, max_tokens=request.max_tokens,
                             timeout=request.timeout)
    # The whole reply (non-streamed) or the first chunk (streamed) must come within the timeout;
    # pydantic-ai enforces both clocks, the transport's `timeout` bounds each wait for data.
    options["first_event_timeout" if streamed else "request_timeout"] = options["timeout"]
    return model, options


def _failed(exc: BaseException, target: Target, timeout: float | None) -> ModelError:
    """A failed attempt as one ModelError; `auto`/model detection look again next time."""
    routing.invalidate(target.provider)
    return describe_failure(exc, target.provider, target.url, target.spec, timeout, target.settings.base_url_is_default)


async def _crash_report(target: Target, error: ModelError) -> ModelError:
    """For a server nbllm runs itself, what became of it explains a failed call better
    ("the llama.cpp server crashed (SIGSEGV) …") than the broken connection does."""
    if not target.spec.prepare or error.status is not None:
        return error
    try:
        await get_registry().prepare(target.provider, start=False)
    except ModelError as crashed:
        return crashed
    except Exception:  # what it says about itself is only a better message; never a new failure
        return error
    return error


def _finish(answer: Answer, response: Any, call: Call, sent: list[Any], target: Target) -> Answer:
    usage = getattr(response, "usage", None)
    if usage is not None and (usage.input_tokens or usage.output_tokens):  # 0/0: the server sent no usage
        answer.input_tokens = usage.input_tokens
        answer.output_tokens = usage.output_tokens
    answer.cost_usd = None
    if target.priced:  # a self-hosted server behind OPENAI_BASE_URL is not charged OpenAI's prices
        try:
            answer.cost_usd = float(response.cost().total_price)
        except Exception:  # prices are unknown for this model
            answer.cost_usd = None
    answer.messages = [sent[-1], response]
    if call.request.chat is not None and answer.ok:
        call.request.chat.extend(answer.messages)
    return answer


async def _attempt(call: Call, target: Target) -> Answer:
    """One request, no retry; raises a described ModelError."""
    from pydantic_ai.direct import model_request

    model, options = _model_and_options(call, target, streamed=False)
    messages = _request_messages(call)
    started = time.perf_counter()
    failure: ModelError | None = None
    try:
        response = await model_request(model, messages, model_settings=options)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        failure = _failed(exc, target, options["timeout"])
    if failure is not None:  # raised outside the except: the SDK's exception is not chained
        raise await _crash_report(target, failure)
    text = "".join(part.content for part in response.parts if getattr(part, "part_kind", "") == "text")
    answer = Answer(text, target.provider, target.model, (time.perf_counter() - started) * 1000,
                    reason=target.reason)
    return _finish(answer, response, call, messages, target)


async def _retrying(call: Call, target: Target) -> Answer:
    """`_attempt` under the retry policy; the last error carries how many attempts were made."""
    attempt = 0
    while True:
        try:
            answer = await _attempt(call, target)
            answer.attempts = attempt + 1
            return answer
        except ModelError as exc:
            error = exc
        delay = _retry_wait(call, target, error, attempt)
        if delay is None:
            error.attempts = attempt + 1  # type: ignore[attr-defined]
            raise detached(error)
        attempt += 1
        await asyncio.sleep(delay)


def _retry_wait(call: Call, target: Target, error: ModelError, attempt: int) -> float | None:
    """Seconds before attempt `attempt + 1`, or None: out of retries, or not worth one."""
    if attempt >= call.request.retries(target.settings):
        return None
    return call.request.retry.delay(error, attempt)


# ---- the whole call ---------------------------------------------------------------------------


def _replayed(hit: replay.Recording, call: Call, started: float) -> Answer:
    """An Answer from the replay cache; chat memory gets the same turn a live answer adds."""
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart
    from pydantic_ai.usage import RequestUsage

    answer = Answer(hit.text, hit.provider, hit.model, (time.perf_counter() - started) * 1000,
                    hit.input_tokens, hit.output_tokens, reason="replayed from the cache", cost_usd=hit.cost_usd,
                    cached=True)
    usage = RequestUsage(input_tokens=hit.input_tokens or 0, output_tokens=hit.output_tokens or 0)
    answer.messages = [ModelRequest(parts=[UserPromptPart(call.prompt)], instructions=call.request.system or None),
                       ModelResponse(parts=[TextPart(hit.text)], usage=usage, model_name=hit.model)]
    if call.request.chat is not None:
        call.request.chat.extend(answer.messages)
    return answer


async def answer(call: Call, target: Target | None = None) -> Answer:
    """Answer one call: replay cache, then the provider (`target`: already routed, as `map` does once)."""
    started = time.perf_counter()
    recorder = replay.recorder(call)  # None when the replay cache is off
    if recorder is not None and (hit := await recorder.lookup()) is not None:
        result = _replayed(hit, call, started)
        calllog.record(call, result)
        return result
    target = target or await route(call)
    started = time.perf_counter()
    error: ModelError | None = None
    try:
        result = await _retrying(call, target)
    except asyncio.CancelledError:  # Ctrl-C or a cancelled task: the call still gets its row
        _log_interrupted(call, Answer("", target.provider, target.model), started)
        raise
    except ModelError as exc:
        error = exc
    if error is not None:
        failed = Answer("", target.provider, target.model, (time.perf_counter() - started) * 1000, error=str(error))
        calllog.record(call, failed, _logged_options(call, target))
        raise detached(error)
    if recorder is not None:
        await recorder.save(result)
    calllog.record(call, result, _logged_options(call, target))
    return result


def _logged_options(call: Call, target: Target) -> dict[str, Any]:
    """The numbers the call really used, for the call log's `settings` column."""
    return call.request.numbers(target.settings)


def _log_interrupted(call: Call, answer: Answer, started: float, text: str = "",
                     options: dict[str, Any] | None = None) -> None:
    answer.text, answer.error = text, "interrupted"
    answer.latency_ms = (time.perf_counter() - started) * 1000
    calllog.record(call, answer, options, outcome="interrupted")


# ---- streaming -------------------------------------------------------------------------------


def _delta(event: Any) -> str | None:
    from pydantic_ai.messages import PartDeltaEvent, PartStartEvent, TextPart, TextPartDelta

    if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
        return event.part.content
    if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
        return event.delta.content_delta
    return None


async def events(call: Call) -> AsyncIterator[str | Notice | Answer]:
    """Yield notices and text deltas, then one final Answer (`error` set if the stream broke).

    Never raises for a failure of the call: it becomes the final Answer's `failure`, with
    the text that had arrived kept in `text`.
    """
    started = time.perf_counter()
    target: Target | None = None
    problem: NbllmError | None = None
    hit = None
    try:
        recorder = replay.recorder(call)
        hit = await recorder.lookup() if recorder is not None else None
        if hit is None:
            async for item in _routed(call):
                if isinstance(item, Notice):
                    yield item
                else:
                    target = item
    except NbllmError as exc:
        problem = exc
    if problem is not None or target is None and hit is None:
        yield Answer("", call.provider, call.model or "", error=str(problem), failure=problem)
        return
    if hit is not None:  # a cached answer arrives as one chunk
        result = _replayed(hit, call, started)
        calllog.record(call, result)
        if result.text:
            yield result.text
        yield result
        return
    assert target is not None
    async for item in _stream_target(call, target, recorder):
        yield item


async def _stream_target(call: Call, target: Target, recorder: replay.Recorder | None
                         ) -> AsyncIterator[str | Answer]:
    from pydantic_ai.direct import model_request_stream

    model, options = _model_and_options(call, target, streamed=True)
    messages = _request_messages(call)
    chunks: list[str] = []
    result = Answer("", target.provider, target.model, reason=target.reason)
    started = time.perf_counter()
    logged = False
    attempt = 0
    try:
        while True:
            response = None
            error: ModelError | None = None
            try:
                async with model_request_stream(model, messages, model_settings=options) as streamed:
                    async for event in streamed:
                        delta = _delta(event)
                        if delta:
                            chunks.append(delta)
                            yield delta
                    response = streamed.get()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = _failed(exc, target, options["timeout"])
            if error is None:
                break
            delay = None if chunks else _retry_wait(call, target, error, attempt)
            if delay is None:  # out of retries, or text has arrived: keep it and say what failed
                result.failure = await _crash_report(target, error)
                result.error = str(result.failure)
                break
            attempt += 1
            await asyncio.sleep(delay)
        result.text = "".join(chunks)
        result.attempts = attempt + 1
        result.latency_ms = (time.perf_counter() - started) * 1000
        if response is not None:
            _finish(result, response, call, messages, target)
            if recorder is not None and result.ok:
                await recorder.save(result)
        calllog.record(call, result, _logged_options(call, target))
        logged = True
        yield result
    finally:
        if not logged:  # Ctrl-C, a cancelled task or a consumer that stopped early: keep what arrived
            _log_interrupted(call, result, started, "".join(chunks), _logged_options(call, target))
