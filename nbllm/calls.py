"""Send one prompt to one provider: `ask`, `ask_async`, `stream`, `astream`.

All work runs on nbllm's background loop (see bridge.py), so these work inside a
Jupyter kernel, in plain Python and under uvloop. A failure becomes a `ModelError`
that names the provider and URL; a stream that breaks keeps the text that arrived
(`Answer.text`) and says what failed (`Answer.error`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import bridge, calllog, replay
from .errors import ConfigurationError, ModelError, NbllmError, redact
from .factory import model_settings, shared_model
from .registry import get_registry
from .session import Conversation, current

__all__ = ["Answer", "Request", "ask", "ask_async", "stream", "astream", "TextStream", "describe_failure"]


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


@dataclass
class Request:
    """One prompt and its options; None means 'the provider's configured value'."""

    prompt: str
    provider: str | None = None
    model: str | None = None
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    chat: Conversation | None = None
    cache: str | None = None
    """Replay-cache mode for this call ("record" | "replay" | "off"); None: the global mode."""
    max_retries: int | None = None
    """SDK retries for this call; None: the provider's {P}_MAX_RETRIES (`map` sets 0 and retries itself)."""

    def __post_init__(self) -> None:
        check_numbers(vars(self))


def check_numbers(values: dict[str, Any]) -> None:
    """Per-call numbers follow the rules of their `{P}_...` variables (temperature 0..2, …)."""
    from .config import FIELDS

    for fld in FIELDS:
        value = values.get(fld.attr) if fld.attr in _CHECKED else None
        if value is not None:
            try:
                fld.check(value)
            except ValueError as exc:
                raise ConfigurationError(f"{fld.attr}={value!r} is invalid: it {exc}.") from None


_CHECKED = ("temperature", "max_tokens", "timeout", "max_retries")


def describe_failure(
    exc: BaseException, provider: str, url: str | None, secrets: tuple[str, ...] = (), spec: Any = None
) -> ModelError:
    """Turn any exception from a model call into one readable ModelError (hints from the catalog)."""
    if isinstance(exc, ModelError):
        return exc
    from pydantic_ai.exceptions import ModelHTTPError

    from .probes import describe_http_error

    hint = None
    if isinstance(exc, ModelHTTPError):
        message = describe_http_error(exc.status_code)
        body = exc.body if isinstance(exc.body, str) else (str(exc.body) if exc.body else "")
        if body and exc.status_code < 500:
            message += f" ({body[:200]})"
        if exc.status_code in (401, 403):
            hint = f"check {provider.upper()}_API_KEY"
        elif exc.status_code == 404:
            hint = f"check the model name ({provider.upper()}_MODEL) and base URL"
    else:
        name = type(exc).__name__
        text = str(exc) or name
        low = (name + " " + text).lower()
        cloud = spec is not None and spec.kind == "cloud"
        if "timeout" in low or "timed out" in low:
            message, hint = "timed out", f"raise {provider.upper()}_TIMEOUT or check the server"
        elif ("connect" in low or "refused" in low) and cloud:
            message, hint = "could not connect", f"check your network (or {provider.upper()}_BASE_URL)"
        elif "connect" in low or "refused" in low:
            message = "connection failed (is the server running?)"
            hint = f"check {provider.upper()}_BASE_URL"
            if spec is not None and spec.prepare:  # a server nbllm runs itself
                hint = "nbllm restarts its server on the next call"
            elif spec is not None and spec.install_hint:
                hint = spec.install_hint
        elif "json" in low or "decode" in low or "validation" in low:
            message = f"the server sent a malformed answer ({name})"
        elif "incomplete" in low or "peer closed" in low or "remoteprotocol" in low or "stream" in low:
            message = f"the stream was cut off ({text[:160]})"
        else:
            message = f"{name}: {text[:300]}"
    return ModelError(provider, redact(message, secrets), url=url, hint=hint)


async def _prepare(request: Request) -> tuple[Any, Any, list[Any], dict[str, Any], Any]:
    from pydantic_ai.messages import ModelRequest, UserPromptPart

    registry = get_registry()
    selection = current()
    provider = request.provider or selection.provider
    wanted_model = request.model or (selection.model if request.provider is None else None)
    choice = await registry.choose(provider, wanted_model)
    spec, settings = registry.require(choice.provider)
    settings = await registry.prepare(spec.name)  # e.g. start the embedded server
    # A per-call timeout travels in the model settings (pydantic-ai applies it per request),
    # so the shared client, keyed on the provider's settings, is reused for every timeout.
    model = shared_model(spec, settings, choice.model)
    history = list(request.chat.messages) if request.chat is not None else []
    new_request = ModelRequest(parts=[UserPromptPart(request.prompt)], instructions=request.system or None)
    options = model_settings(
        settings, model, temperature=request.temperature, max_tokens=request.max_tokens, timeout=request.timeout,
        max_retries=request.max_retries,
    )
    return choice, model, [*history, new_request], options, settings


def _finish(answer: Answer, response: Any, request: Request, sent: list[Any]) -> Answer:
    usage = getattr(response, "usage", None)
    if usage is not None and (usage.input_tokens or usage.output_tokens):  # 0/0: the server sent no usage
        answer.input_tokens = usage.input_tokens
        answer.output_tokens = usage.output_tokens
    try:
        price = response.cost()
        answer.cost_usd = float(price.total_price)
    except Exception:  # prices are unknown for local models
        answer.cost_usd = None
    answer.messages = [sent[-1], response]
    if request.chat is not None and answer.ok:
        request.chat.extend(answer.messages)
    return answer


def _failed(exc: BaseException, choice: Any, model: Any) -> ModelError:
    """The call failed: one readable error, and `auto`/model detection look again next time."""
    registry = get_registry()
    registry.invalidate(choice.provider)
    return describe_failure(exc, choice.provider, str(model.base_url).rstrip("/"), registry.secrets(),
                            registry.spec(choice.provider))


def _replayed(hit: replay.Recording, request: Request, started: float) -> Answer:
    """An Answer from the replay cache; chat memory gets the same turn a live answer adds."""
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart
    from pydantic_ai.usage import RequestUsage

    answer = Answer(hit.text, hit.provider, hit.model, (time.perf_counter() - started) * 1000,
                    hit.input_tokens, hit.output_tokens, reason="replayed from the cache", cost_usd=hit.cost_usd,
                    cached=True)
    usage = RequestUsage(input_tokens=hit.input_tokens or 0, output_tokens=hit.output_tokens or 0)
    answer.messages = [ModelRequest(parts=[UserPromptPart(request.prompt)], instructions=request.system or None),
                       ModelResponse(parts=[TextPart(hit.text)], usage=usage, model_name=hit.model)]
    if request.chat is not None:
        request.chat.extend(answer.messages)
    return answer


async def _ask(request: Request) -> Answer:
    from pydantic_ai.direct import model_request

    started = time.perf_counter()
    recorder = replay.for_request(request)  # None when the replay cache is off
    if recorder is not None and (hit := await recorder.lookup()) is not None:
        answer = _replayed(hit, request, started)
        calllog.record(request, answer)
        return answer
    choice, model, messages, options, settings = await _prepare(request)
    started = time.perf_counter()
    try:
        response = await model_request(model, messages, model_settings=options)
    except asyncio.CancelledError:  # Ctrl-C or a cancelled task: the call still gets its row
        _log_interrupted(request, Answer("", choice.provider, choice.model), started, options, "ask")
        raise
    except Exception as exc:
        failure = _failed(exc, choice, model)
        failed = Answer("", choice.provider, choice.model, (time.perf_counter() - started) * 1000, error=str(failure))
        calllog.record(request, failed, options)
        raise failure from None  # the SDK's exception stays reachable as __context__ (batch.py reads it)
    text = "".join(part.content for part in response.parts if getattr(part, "part_kind", "") == "text")
    answer = Answer(text, choice.provider, choice.model, (time.perf_counter() - started) * 1000, reason=choice.reason)
    _finish(answer, response, request, messages)
    if recorder is not None:
        await recorder.save(answer)
    calllog.record(request, answer, options)
    return answer


async def _events(request: Request) -> AsyncIterator[str | Answer]:
    """Yield text deltas, then one final Answer (with `error` set if the stream broke)."""
    from pydantic_ai.direct import model_request_stream
    from pydantic_ai.messages import PartDeltaEvent, PartStartEvent, TextPart, TextPartDelta

    started = time.perf_counter()
    try:
        recorder = replay.for_request(request)  # None when the replay cache is off
        hit = await recorder.lookup() if recorder is not None else None
        if hit is None:
            choice, model, messages, options, settings = await _prepare(request)
    except NbllmError as exc:
        yield Answer("", request.provider or current().provider, request.model or "", error=str(exc), failure=exc)
        return
    if hit is not None:  # a cached answer arrives as one chunk
        answer = _replayed(hit, request, started)
        calllog.record(request, answer, kind="stream")
        if answer.text:
            yield answer.text
        yield answer
        return
    started = time.perf_counter()
    chunks: list[str] = []
    answer = Answer("", choice.provider, choice.model, reason=choice.reason)
    response = None
    logged = False
    try:
        try:
            async with model_request_stream(model, messages, model_settings=options) as streamed:
                async for event in streamed:
                    delta = None
                    if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
                        delta = event.part.content
                    elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
                        delta = event.delta.content_delta
                    if delta:
                        chunks.append(delta)
                        yield delta
                response = streamed.get()
        except Exception as exc:
            answer.failure = _failed(exc, choice, model)
            answer.error = str(answer.failure)
        answer.text = "".join(chunks)
        answer.latency_ms = (time.perf_counter() - started) * 1000
        if response is not None:
            _finish(answer, response, request, messages)
            if recorder is not None and answer.ok:
                await recorder.save(answer)
        calllog.record(request, answer, options, kind="stream")
        logged = True
        yield answer
    finally:
        if not logged:  # Ctrl-C, a cancelled task or a consumer that stopped early: keep what arrived
            _log_interrupted(request, answer, started, options, "stream", "".join(chunks))


def _log_interrupted(request: Request, answer: Answer, started: float, options: dict[str, Any],
                     kind: str, text: str = "") -> None:
    answer.text, answer.error = text, "interrupted"
    answer.latency_ms = (time.perf_counter() - started) * 1000
    calllog.record(request, answer, options, kind=kind, outcome="interrupted")


class TextStream:
    """Iterate to receive text as it is generated; `.answer` holds the result afterwards.

    With `raise_errors=True` (the default) a failure raises `ModelError` after the
    text that arrived was yielded; `.answer` keeps that partial text either way.
    """

    def __init__(self, request: Request, raise_errors: bool = True):
        self.request = request
        self.raise_errors = raise_errors
        self.answer: Answer | None = None

    def _take(self, item: str | Answer) -> str | None:
        if isinstance(item, Answer):
            self.answer = item
            if item.failure is not None and self.raise_errors:
                raise item.failure
            return None
        return item

    def __iter__(self) -> Iterator[str]:
        for item in bridge.iterate(_events(self.request)):
            delta = self._take(item)
            if delta is not None:
                yield delta

    async def __aiter__(self) -> AsyncIterator[str]:
        async for item in bridge.aiterate(_events(self.request)):
            delta = self._take(item)
            if delta is not None:
                yield delta

    @property
    def text(self) -> str:
        return self.answer.text if self.answer else ""


def check_prompt(prompt: Any) -> None:
    """An empty prompt is one clear error before anything is sent."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigurationError("The prompt is empty: give some text to send.")


def check_options(options: dict[str, Any], where: str) -> None:
    """Unknown keyword options are one clear error up front, not one failure per provider or input."""
    from dataclasses import fields

    valid = sorted(f.name for f in fields(Request) if f.name not in ("prompt", "provider", "max_retries"))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigurationError(f"{where}() got unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}.")
    check_numbers(options)


def _request(prompt: str, options: dict[str, Any]) -> Request:
    check_prompt(prompt)
    check_options({k: v for k, v in options.items() if k not in ("provider", "max_retries")}, "ask")
    return Request(prompt=prompt, **options)


async def ask_async(prompt: str, **options: Any) -> Answer:
    """Ask and await the whole answer (works with top-level await in a notebook)."""
    return await bridge.run_async(_ask(_request(prompt, options)))


def ask(prompt: str, **options: Any) -> Answer:
    """Ask and wait: `provider`, `model`, `system`, `temperature`, `max_tokens`, `timeout`, `chat`."""
    return bridge.run(_ask(_request(prompt, options)))


def stream(prompt: str, *, raise_errors: bool = True, **options: Any) -> TextStream:
    """A stream of text deltas; iterate it (sync) or `async for` it."""
    return TextStream(_request(prompt, options), raise_errors=raise_errors)


astream = stream
