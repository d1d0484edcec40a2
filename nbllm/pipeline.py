"""One call, described once: what was asked → where it goes → the answer, logged.

    describe(prompt, **options)   → Call     (request.py) what was asked, validated once, no network:
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

A name may be a fallback chain (`openai,ollama,embedded`, or an alias naming one): the
links are tried in order. A link known to be down (a probe or a call found nothing
listening in the last `routing.DOWN_TTL` s) is skipped without a request. A failure that
another provider may not share (`ModelError.moves_on`: nothing answered, a timeout, 429,
5xx) moves on at once — a 429 does not wait out its backoff while another link could
answer; only the last link retries under the policy. A 400/401/403/404 stops the chain
with that error (an alias with `on="any"` moves on after any failure). A stream moves on
only before its first chunk. `Answer.provider` says who answered, `Answer.fallbacks` who
was passed over and why.

A provider whose `{P}_BASE_URL` lists several servers is a fleet: each attempt goes to the
least-busy server that is in (`fleet.pick`); one that fails that way is taken out for a
while and the request goes at once to another, without counting as a retry.

Timeouts (`{P}_TIMEOUT` or `timeout=`, seconds): a non-streamed attempt is bounded as
a whole — the complete reply must arrive within it (pydantic-ai's `request_timeout`).
A stream must deliver its first chunk within it (`first_event_timeout`), and after that
may pause at most that long between chunks (the transport's read timeout). A stream is
retried only before its first chunk; once text has arrived a failure keeps that text.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from . import budgets, calllog, fits, replay, routing, typed, wire
from .catalog import AUTO, Link
from .errors import BudgetExhausted, ModelError, NbllmError, NotValid, OutputInvalid, detached
from .failures import describe_failure
from .registry import get_registry
from .request import OPTIONS, Answer, Call, Fallback, Notice, Request, Target, describe, for_provider, link_call

if TYPE_CHECKING:
    from pydantic_ai.models import Model

__all__ = [
    "Answer", "Fallback", "Request", "Call", "Target", "Notice", "describe", "for_provider", "route", "answer", "events",
    "OPTIONS",
]


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
    if call.request.parts and fits.known_text_only(spec, choice.model):  # refused before sending: nothing to start
        yield Target(spec, registry.settings(spec.name), choice.model, choice.reason)
        return
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


def _user_request(call: Call) -> Any:
    """The question as pydantic-ai's message: the text, or its parts with images as `BinaryContent`."""
    from pydantic_ai.messages import ModelRequest, UserPromptPart

    from .parts import to_user_content

    content = to_user_content(call.request.parts) if call.request.parts else call.prompt
    return ModelRequest(parts=[UserPromptPart(content)], instructions=call.request.system or None)


def _request_messages(call: Call) -> list[Any]:
    history = list(call.request.chat.messages) if call.request.chat is not None else []
    return [*history, _user_request(call)]


def _unsuitable(call: Call, target: Target) -> ModelError | None:
    """Why `call` cannot go to `target` as it is (images to a text-only model, a whole table beyond its
    context), before anything is sent; None when it fits."""
    if not call.request.parts and call.request.whole_tokens is None:
        return None
    from .errors import Unsuitable
    from .factory import shared_model

    try:
        fits.check(call.request, target, shared_model(target.spec, target.settings, target.model))
    except Unsuitable as exc:
        return exc
    return None


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


def _failed(exc: BaseException, target: Target, timeout: float | None, request: Request) -> ModelError:
    """A failed attempt as one ModelError (a refused image in words); `auto`/model detection look again next time."""
    routing.invalidate(target.provider)
    error = describe_failure(exc, target.provider, target.url, target.spec, timeout, target.settings.base_url_is_default)
    if not request.parts:
        return error
    from .failures import server_said

    return fits.explain(error, server_said(exc), request, target)


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


def _finish(answer: Answer, responses: Any, call: Call, sent: list[Any], target: Target) -> Answer:
    """Usage and cost of the reply (or replies: a typed answer's retry counts too), and chat memory."""
    responses = responses if isinstance(responses, list) else [responses]
    usages = [r.usage for r in responses if getattr(r, "usage", None) is not None]
    if any(u.input_tokens or u.output_tokens for u in usages):  # 0/0: the server sent no usage
        answer.input_tokens = sum(u.input_tokens or 0 for u in usages)
        answer.output_tokens = sum(u.output_tokens or 0 for u in usages)
    from .prices import answer_cost

    answer.cost_usd, answer.cost_source = answer_cost(target.spec, target.settings, target.model, responses,
                                                      answer.input_tokens, answer.output_tokens)
    answer.messages = [sent[-1], responses[-1]]
    if call.request.chat is not None and answer.ok:
        call.request.chat.extend(answer.messages)
    return answer


def _finish_wire(answer: Answer, reply: wire.Reply, target: Target) -> Answer:
    """Usage and cost of a reply that came over the wire path (a local or declared price: no response
    objects needed). No pydantic-ai messages: the wire path never serves a call with chat memory."""
    from .prices import answer_cost

    if reply.input_tokens is not None or reply.output_tokens is not None:
        answer.input_tokens, answer.output_tokens = reply.input_tokens, reply.output_tokens
    answer.cost_usd, answer.cost_source = answer_cost(target.spec, target.settings, target.model, [],
                                                      answer.input_tokens, answer.output_tokens)
    return answer


async def _wire_attempt(call: Call, target: Target) -> Answer:
    """`_attempt` for a text-only call to a local OpenAI-compatible server: straight on httpx2 (wire.py)."""
    started = time.perf_counter()
    failure: ModelError | None = None
    try:
        reply = await wire.request(call, target)
    except ModelError as exc:
        failure = exc
    if failure is not None:
        routing.invalidate(target.provider)  # as `_failed`: `auto`/model detection look again next time
        raise await _crash_report(target, failure)
    answer = Answer(reply.text, target.provider, target.model, (time.perf_counter() - started) * 1000,
                    reason=target.reason)
    return _finish_wire(answer, reply, target)


async def _attempt(call: Call, target: Target) -> Answer:
    """One request (two for a typed answer whose first reply did not validate: the problem is fed
    back once), no retry; raises a described ModelError (`OutputInvalid` for a reply that stays invalid)."""
    if wire.serves(call, target):
        return await _wire_attempt(call, target)
    from pydantic_ai.direct import model_request

    model, options = _model_and_options(call, target, streamed=False)
    messages = asked = _request_messages(call)
    plan = typed.plan_for(call.request.output_type) if call.request.output_type is not None else None
    parameters = None
    if plan is not None:
        parameters, extra = plan.parameters(model, target.spec)
        options.update(extra)
    started = time.perf_counter()
    responses: list[Any] = []
    output = None
    while True:
        failure: ModelError | None = None
        try:
            response = await model_request(model, messages, model_settings=options,
                                           model_request_parameters=parameters)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = _failed(exc, target, options["timeout"], call.request)
        if failure is not None:  # raised outside the except: the SDK's exception is not chained
            raise await _crash_report(target, failure)
        responses.append(response)
        if plan is None:
            text = "".join(part.content for part in response.parts if getattr(part, "part_kind", "") == "text")
            break
        invalid: NotValid | None = None
        try:
            output, text = plan.parse(response)
            break
        except NotValid as exc:
            invalid = exc
        cut = getattr(response, "finish_reason", None) == "length"  # a retry would be cut off the same way
        if len(responses) == 2 or cut:
            spent = _finish(Answer("", target.provider, target.model, error="invalid"), responses, call, asked,
                            target)  # (an answer with an error adds nothing to chat memory)
            problem = (f"it was cut off at max_tokens={options['max_tokens']} before the JSON was complete"
                       if cut else invalid.problem)
            hint = "raise max_tokens (or max_tokens=)" if cut else None
            raise OutputInvalid(target.provider, plan.name, problem, target.url, invalid.text, spent.input_tokens,
                                spent.output_tokens, spent.cost_usd, target.model, hint)
        messages = [*messages, response, plan.retry_request(response, invalid.problem)]
    answer = Answer(text, target.provider, target.model, (time.perf_counter() - started) * 1000,
                    reason=target.reason, output=output)
    answer.attempts = len(responses)
    if plan is not None:  # memory keeps the question and the answer as text (a tool call would need its return)
        responses[-1] = _as_text(responses[-1], text)
    return _finish(answer, responses, call, asked, target)


def _as_text(response: Any, text: str) -> Any:
    """`response` with its parts replaced by the answer's JSON as one text part (usage and model kept)."""
    from dataclasses import replace as replaced

    from pydantic_ai.messages import TextPart

    return replaced(response, parts=[TextPart(text)])


class _Attempts:
    """The attempts of one call on one target, under one rule for asks and streams.

    Each attempt goes to the least-busy server of a fleet that this call has not tried yet
    (`fleet.pick`); a server that fails in a way another may not share is taken out for a
    while and the next server is tried at once, without counting as a retry. Once every
    server has been tried, retries follow the policy, one request each (to the server back
    soonest). Giving up on a failure where nothing answered marks the provider down, so a
    fallback chain skips it for `routing.DOWN_TTL` seconds.
    """

    def __init__(self, call: Call, target: Target):
        self.call, self.target = call, target
        self.servers = target.settings.servers
        self.tried: set[str] = set()
        self.retries = 0
        self.requests = 0
        self.url: str | None = None

    def next(self) -> tuple[Target, Any]:
        """The target of the next attempt (on a fleet's chosen server) and the lease to hold during it."""
        self.requests += 1
        if len(self.servers) <= 1:  # (none: a provider with no address yet, whose call says so)
            return self.target, contextlib.nullcontext()
        from . import fleet

        self.url = fleet.pick(self.servers, exclude=self.tried)
        return self.target.on_server(self.url), fleet.lease(self.url)

    def answered(self) -> None:
        routing.mark_down(self.target.provider, None)

    async def again(self, error: ModelError, retry: bool = True) -> bool:
        """After `error`: True to try again (on another server at once, or after the policy's delay);
        False to give up (`retry=False`: a stream whose text has arrived is never sent twice)."""
        if self.url is not None and error.moves_on:
            from . import fleet

            fleet.take_out(self.url, error.reason, error.retry_after, status=error.status)
            self.tried.add(self.url)
            if retry and len(self.tried) < len(self.servers):
                return True
        delay = _retry_wait(self.call, self.target, error, self.retries) if retry else None
        if delay is None:
            if retry and error.nothing_answered:  # a chain skips it for a while
                routing.mark_down(self.target.provider, error.reason)
            return False
        self.retries += 1
        await asyncio.sleep(delay)
        return True


async def _retrying(call: Call, target: Target) -> Answer:
    """`_attempt` under `_Attempts`' rule; the last error carries how many requests were made."""
    refused = _unsuitable(call, target)
    if refused is not None:
        raise refused
    plan = _Attempts(call, target)
    while True:
        sent, lease = plan.next()
        try:
            with lease:
                answer = await _attempt(call, sent)
        except ModelError as exc:
            error = exc
        else:
            answer.attempts += plan.requests - 1  # (a typed answer's validation retry is a request too)
            plan.answered()
            return answer
        if not await plan.again(error):
            error.attempts = plan.requests  # type: ignore[attr-defined]
            raise detached(error)


def _retry_wait(call: Call, target: Target, error: ModelError, attempt: int) -> float | None:
    """Seconds before retry `attempt + 1`, or None: out of retries, or not worth one."""
    if attempt >= call.request.retries(target.settings):
        return None
    return call.request.retry.delay(error, attempt)


# ---- the whole call ---------------------------------------------------------------------------


def _replayed(hit: replay.Recording, call: Call, started: float) -> Answer:
    """An Answer from the replay cache; chat memory gets the same turn a live answer adds."""
    answer = Answer(hit.text, hit.provider, hit.model, (time.perf_counter() - started) * 1000,
                    hit.input_tokens, hit.output_tokens, reason="replayed from the cache", cost_usd=0.0,
                    cost_source="cached", cached=True)  # a replay costs nothing (the recording's cost is its own)
    if call.request.output_type is not None:  # the recorded JSON, validated again as the type asked for
        answer.output = typed.plan_for(call.request.output_type).parse_text(hit.text)
    if call.request.chat is not None:  # only chat memory reads the messages (a replay without chat: no import)
        from pydantic_ai.messages import ModelResponse, TextPart
        from pydantic_ai.usage import RequestUsage

        usage = RequestUsage(input_tokens=hit.input_tokens or 0, output_tokens=hit.output_tokens or 0)
        answer.messages = [_user_request(call),
                           ModelResponse(parts=[TextPart(hit.text)], usage=usage, model_name=hit.model)]
        call.request.chat.extend(answer.messages)
    return answer


async def answer(call: Call, target: Target | None = None) -> Answer:
    """Answer one call: replay cache, then the provider — or the links of a chain in turn —
    (`target`: already routed, as `map` does once for a single provider)."""
    started = time.perf_counter()
    recorder = replay.recorder(call)  # None when the replay cache is off
    if recorder is not None and (hit := await recorder.lookup()) is not None:
        result = _replayed(hit, call, started)
        result.request = call.request
        calllog.record(call, result)
        return result
    if call.route is not None and target is None:
        result = await _chain(call)
    else:
        result = await _answer_one(call, target or await route(call), call)
    assert isinstance(result, Answer)
    result.request = call.request
    if recorder is not None:
        await recorder.save(result)
    return result


async def _answer_one(call: Call, target: Target, logged: Call, fallbacks: list[Fallback] | None = None,
                      may_move_on: str | None = None) -> "Answer | Fallback":
    """One provider's answer, logged under `logged` (the whole call, when this is a link of a chain).
    `may_move_on` ("transient" or "any", for a link before the last): a failure the next link
    may not share is returned as a `Fallback` instead of raised (nothing logged: the chain's row
    lists it)."""
    started = time.perf_counter()
    fallbacks = fallbacks or []
    error: ModelError | None = None
    over: BudgetExhausted | None = None
    try:
        hold = budgets.reserve(call, target)
    except BudgetExhausted as exc:  # nothing is sent; a chain's next link may be cheaper (or free)
        over = exc
    if over is not None:
        if may_move_on is not None:
            return Fallback(target.provider, "over budget")
        raise detached(_after(over, fallbacks))
    try:
        result = await _retrying(call, target)
    except asyncio.CancelledError:  # Ctrl-C or a cancelled task: the call still gets its row
        _settle(hold, None)  # it may have been charged: its worst case stays spent
        _log_interrupted(logged, Answer("", target.provider, target.model, fallbacks=list(fallbacks)), started)
        raise
    except ModelError as exc:
        error = exc
    if error is not None:
        _settle(hold, getattr(error, "cost_usd", None) or 0.0)  # (an invalid typed answer was generated: charged)
        if _moves_on(error, may_move_on):
            return Fallback(target.provider, _reason(error))
        error = _after(error, fallbacks)
        failed = Answer(getattr(error, "text", ""), target.provider, target.model,  # an invalid answer's text
                        (time.perf_counter() - started) * 1000, getattr(error, "input_tokens", None),
                        getattr(error, "output_tokens", None), error=str(error), fallbacks=list(fallbacks),
                        cost_usd=getattr(error, "cost_usd", None))
        calllog.record(logged, failed, _logged_options(call, target))
        raise detached(error)
    _settle(hold, result.cost_usd)
    result.fallbacks = list(fallbacks)
    calllog.record(logged, result, _logged_options(call, target))
    return result


def _settle(hold: budgets.Hold | None, cost: float | None) -> None:
    """A reservation becomes what the request cost (None: unknown, its worst case is kept)."""
    if hold is not None:
        hold.settle(cost)


def _moves_on(error: NbllmError, may_move_on: str | None) -> bool:
    """Whether a chain goes on to its next link after `error` (None: this is the last link)."""
    if may_move_on is None:
        return False
    return may_move_on == "any" or not isinstance(error, ModelError) or error.moves_on


def _after(error: NbllmError, fallbacks: list[Fallback]) -> NbllmError:
    """The last link's error, saying which links were passed over before it, and why."""
    if not fallbacks:
        return error
    note = f"(tried first: {'; '.join(str(f) for f in fallbacks)})"
    if isinstance(error, ModelError):
        return error.with_note(note)
    return type(error)(f"{error} {note}")


def _links(call: Call, fallbacks: list[Fallback]) -> Iterator[tuple[Link, Call, str | None]]:
    """The links of `call.route` to try, each as a call of its own with how it may move on (None: the
    last link, whose failure is the call's). A link known to be down is passed over while a later
    one may answer; the last one is always tried."""
    assert call.route is not None
    links = call.route.links
    fallbacks.extend(Fallback(name, why) for name, why in call.route.skipped)
    for index, link in enumerate(links):
        last = index == len(links) - 1
        down = None if last or link.provider == AUTO else routing.known_down(link.provider)
        if down:
            fallbacks.append(Fallback(str(link), f"known to be down: {_brief(down)}"))
            continue
        rule = None if last else ("any" if call.route.moves_on_any_error(link) else "transient")
        yield link, link_call(call, link, last), rule


def _found_down(target: Target, may_move_on: str | None) -> Fallback | None:
    """A link routing's own probe has just found down is passed over without sending the prompt."""
    down = routing.known_down(target.provider) if may_move_on else None
    return Fallback(target.provider, f"found down: {_brief(down)}") if down else None


def _brief(reason: str) -> str:
    """A probe's failure without the probed address (the footer names the provider already)."""
    return re.sub(r" at https?://\S+", "", reason)


async def _chain(call: Call) -> Answer:
    """The links of `call.route` in turn until one answers; the last link's failure is raised."""
    fallbacks: list[Fallback] = []
    for link, one, rule in _links(call, fallbacks):
        problem: NbllmError | None = None
        try:
            target = await route(one)
        except NbllmError as exc:  # not installed, no key, crashed: the next link may answer
            problem = exc
        if problem is not None:
            if not _moves_on(problem, rule):
                problem = _after(problem, fallbacks)
                calllog.record(call, Answer("", link.provider, link.model or "", error=str(problem),
                                            fallbacks=fallbacks))
                raise detached(problem)
            fallbacks.append(Fallback(str(link), _reason(problem)))
            continue
        skipped = _found_down(target, rule)
        if skipped is not None:
            fallbacks.append(skipped)
            continue
        result = await _answer_one(one, target, call, fallbacks, rule)
        if isinstance(result, Answer):
            return result
        fallbacks.append(Fallback(str(link), result.reason))
    raise AssertionError("unreachable: the last link answers or raises")


def _reason(error: NbllmError) -> str:
    """A failure in a few words for `Answer.fallbacks` (the provider is named beside it)."""
    return getattr(error, "reason", None) or str(error)


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
    the text that had arrived kept in `text`. A chain moves on only before the first chunk.
    """
    started = time.perf_counter()
    problem: NbllmError | None = None
    hit, recorder = None, None
    try:
        recorder = replay.recorder(call)
        hit = await recorder.lookup() if recorder is not None else None
    except NbllmError as exc:
        problem = exc
    if problem is not None:
        yield Answer("", call.provider, call.model or "", error=str(problem), failure=problem, request=call.request)
        return
    if hit is not None:  # a cached answer arrives as one chunk
        result = _replayed(hit, call, started)
        result.request = call.request
        calllog.record(call, result)
        if result.text:
            yield result.text
        yield result
        return
    if call.route is None:
        async for item in _stream_one(call, call, recorder, [], None):
            if not isinstance(item, Fallback):
                yield item
        return
    fallbacks: list[Fallback] = []
    for link, one, rule in _links(call, fallbacks):
        moved: Fallback | None = None
        async for item in _stream_one(one, call, recorder, fallbacks, rule):
            if isinstance(item, Fallback):
                moved = item
            else:
                yield item
        if moved is None:
            return
        fallbacks.append(Fallback(str(link), moved.reason))


async def _stream_one(call: Call, logged: Call, recorder: replay.Recorder | None, fallbacks: list[Fallback],
                      may_move_on: str | None) -> AsyncIterator[str | Notice | Answer | Fallback]:
    """One provider's stream (routed here, with notices), logged under `logged`; with `may_move_on`,
    a failure before the first chunk that the next link may not share ends it with a `Fallback`."""
    target: Target | None = None
    problem: NbllmError | None = None
    try:
        async for item in _routed(call):
            if isinstance(item, Notice):
                yield item
            else:
                target = item
    except NbllmError as exc:
        problem = exc
    if problem is not None or target is None:
        assert problem is not None
        if _moves_on(problem, may_move_on):
            yield Fallback(call.provider, _reason(problem))
            return
        problem = _after(problem, fallbacks)
        failed = Answer("", call.provider, call.model or "", error=str(problem), failure=problem,
                        fallbacks=list(fallbacks), request=logged.request)
        if fallbacks:  # a chain's last link: its row says who was passed over
            calllog.record(logged, failed)
        yield failed
        return
    skipped = _found_down(target, may_move_on)
    if skipped is not None:
        yield skipped
        return
    async for item in _stream_target(call, target, recorder, logged, fallbacks, may_move_on):
        yield item


async def _stream_target(call: Call, target: Target, recorder: replay.Recorder | None, logged: Call,
                         fallbacks: list[Fallback], may_move_on: str | None) -> AsyncIterator[str | Answer | Fallback]:
    messages: list[Any] = []  # pydantic-ai's, built only when a request goes through it
    chunks: list[str] = []
    result = Answer("", target.provider, target.model, reason=target.reason, fallbacks=list(fallbacks),
                    request=logged.request)
    started = time.perf_counter()
    logged_row = False
    plan = _Attempts(call, target)
    refused = _unsuitable(call, target)
    response = None
    try:
        hold = budgets.reserve(call, target)
    except BudgetExhausted as exc:  # a budget that cannot cover it: nothing is sent, nothing logged
        if may_move_on is not None:
            yield Fallback(target.provider, "over budget")
            return
        result.failure = _after(exc, fallbacks)
        result.error = str(result.failure)
        yield result
        return
    try:
        while refused is None:
            sent, lease = plan.next()
            on_wire = wire.serves(call, sent)
            if not on_wire:
                from pydantic_ai.direct import model_request_stream

                model, options = _model_and_options(call, sent, streamed=True)
                messages = messages or _request_messages(call)
            response = None
            error: ModelError | None = None
            try:
                with lease:
                    if on_wire:  # a text-only call to a local OpenAI-compatible server: straight on httpx2
                        async for item in wire.stream(call, sent):
                            if isinstance(item, str):
                                chunks.append(item)
                                yield item
                            else:
                                response = item
                    else:
                        async with model_request_stream(model, messages, model_settings=options) as streamed:
                            async for event in streamed:
                                delta = _delta(event)
                                if delta:
                                    chunks.append(delta)
                                    yield delta
                            response = streamed.get()
            except asyncio.CancelledError:
                raise
            except ModelError as exc:  # the wire path's failures come described
                routing.invalidate(sent.provider)
                error = exc
            except Exception as exc:
                error = _failed(exc, sent, options["timeout"], call.request)
            if error is None:
                plan.answered()
                break
            if not await plan.again(error, retry=not chunks):  # text has arrived: keep it, never send twice
                if not chunks and _moves_on(error, may_move_on):
                    logged_row = True  # nothing arrived: the next link answers instead; the chain's row lists this
                    yield Fallback(target.provider, _reason(error))
                    return
                result.failure = _after(await _crash_report(target, error), fallbacks)
                result.error = str(result.failure)
                break
        if refused is not None:  # nothing was sent
            if _moves_on(refused, may_move_on):
                logged_row = True
                yield Fallback(target.provider, _reason(refused))
                return
            result.failure = _after(refused, fallbacks)
            result.error = str(result.failure)
        result.text = "".join(chunks)
        result.attempts = plan.requests
        result.latency_ms = (time.perf_counter() - started) * 1000
        if response is not None:
            if isinstance(response, wire.Reply):
                _finish_wire(result, response, target)
            else:
                _finish(result, response, call, messages, target)
            if recorder is not None and result.ok:
                await recorder.save(result)
        calllog.record(logged, result, _logged_options(call, target))
        logged_row = True
        yield result
    finally:
        # what the stream cost: its answer's cost; text that arrived without one: its worst case; nothing: 0
        _settle(hold, result.cost_usd if response is not None else (None if chunks else 0.0))
        if not logged_row:  # Ctrl-C, a cancelled task or a consumer that stopped early: keep what arrived
            _log_interrupted(logged, result, started, "".join(chunks), _logged_options(call, target))
