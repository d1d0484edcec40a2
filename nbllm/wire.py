"""A text-only chat call to a server on your own machine, straight on httpx2 (no pydantic-ai).

Why: for a local OpenAI-compatible server (LM Studio, Ollama, llama.cpp, vLLM, a LiteLLM
proxy, the embedded model, an `nbllm.toml` endpoint speaking OpenAI, a cloud provider's
client pointed at your own machine) the call is one `POST {base}/chat/completions`. Through
pydantic-ai it costs ~1.7 ms of CPU per request instead of ~0.7 ms, and the first call
imports `pydantic_ai.direct` and `pydantic_ai.models.openai` (~660 ms). Here it is one small
module on one `httpx2.AsyncClient` per event loop (`clients.cached_per_loop`).

Only a call that is text and nothing else takes this path (`serves`): no images, no
`output_type`, no chat memory (a conversation keeps pydantic-ai messages), and a model whose
pydantic-ai profile would not change the request (OpenAI's reasoning names `o1`/`o3`/`o4`/
`gpt-5*`/`gpt-6*` drop the sampling settings there). Everything else — cloud APIs, Anthropic,
Gemini, typed output, images — stays on pydantic-ai.

The request is what pydantic-ai sends such a server (checked against the fake server):
`model`, `stream`, `messages` (the system prompt as a leading system message), `max_tokens`
(not `max_completion_tokens`), `stream_options: {"include_usage": true}` for a stream, and
`temperature`; the key as `Authorization: Bearer` when the provider has one. The reply is read
as pydantic-ai reads it: `<think>…</think>` is thinking, not text (in a stream: a delta that is
exactly the tag), leading whitespace-only deltas of a stream are kept, a stream without a
finish reason was cut off. Failures get the same words as the pydantic-ai path
(`failures.http_failure`, `describe_failure`); timeouts are the same two clocks: the whole
reply (non-streamed), the first chunk then the gap between chunks (streamed).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .clients import cached_per_loop, http_client
from .errors import ModelError
from .failures import describe_failure, http_failure, malformed, timed_out

if TYPE_CHECKING:
    import httpx2

    from .request import Call, Target

__all__ = ["serves", "Reply", "request", "stream", "client", "Pool"]

_REASONING = re.compile(r"^(?:o[134]|gpt-5(?!-chat)|gpt-6)")
"""Model names pydantic-ai's OpenAI profile treats as reasoning models (their default temperature is dropped,
o1-mini's system prompt goes as a user message): those calls stay on pydantic-ai, which knows the rules."""

_THINK = ("<think>", "</think>")
_WHOLE = "the whole reply must arrive within the timeout"
_FIRST = "no first chunk arrived in time"
_POOL = 128
"""Connections kept per loop: a `map` at c=64 to two servers reuses every one of them."""


@dataclass
class Reply:
    """What a reply said: its text, token counts (None when the server sent no usage) and finish reason."""

    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None


def serves(call: "Call", target: "Target") -> bool:
    """Whether `call` to `target` goes straight to the wire (text only, a local OpenAI-compatible server)."""
    request = call.request
    if request.parts or request.output_type is not None or request.chat is not None:
        return False
    spec, settings = target.spec, target.settings
    if spec.kind == "local":
        if spec.builder != "openai_compatible":
            return False
    else:
        from .prices import is_local  # a cloud provider pointed at your own machine (self-hosted, private address)

        if spec.builder not in ("openai", "openai_compatible") or not is_local(spec, settings):
            return False
    return not _REASONING.match(target.model) and bool(settings.base_url)


def client() -> "httpx2.AsyncClient":
    """The client for wire calls: this task's `Pool` (a `map`'s), else the running loop's shared one
    (every provider: keys travel per request, in headers)."""
    pool = _pool.get()
    return pool.client() if pool is not None else cached_per_loop(("wire",), _new_client)


def _new_client() -> "httpx2.AsyncClient":
    import httpx2

    return http_client(limits=httpx2.Limits(max_connections=_POOL, max_keepalive_connections=_POOL),
                       follow_redirects=True)


class Pool:
    """Connections of their own for one batch of requests (a `map`), closed when it ends (`aclose`).

    Why: on every request httpcore2 checks each idle connection of its pool (twice, ~6 µs each), so the
    32 connections a map at c=32 leaves behind made every later single request slower: one request
    with httpx2 alone went from 0.83 to 1.89 ms after such a map (see DESIGN.md). With its own pool,
    a map leaves the shared one (asks, streams: one request at a time in a notebook) as small as it was.
    The client is built on the first wire request: a map served by pydantic-ai never builds one."""

    def __init__(self) -> None:
        self._client: "httpx2.AsyncClient | None" = None

    def client(self) -> "httpx2.AsyncClient":
        if self._client is None:
            self._client = _new_client()
        return self._client

    def use(self) -> None:
        """Send the running task's wire requests (and those of tasks it starts) through this pool."""
        _pool.set(self)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


_pool: "contextvars.ContextVar[Pool | None]" = contextvars.ContextVar("nbllm_wire_pool", default=None)


def _url(target: "Target") -> str:
    """`{base}/chat/completions`; a local server's base is its `/v1` (credentials in the URL become Basic auth)."""
    from .settings_values import openai_base

    settings = target.settings
    base = openai_base(settings.base_url) if target.spec.kind == "local" else settings.base_url
    return base.rstrip("/") + "/chat/completions"


def _headers(target: "Target") -> dict[str, str]:
    key = target.settings.api_key
    headers = {"content-type": "application/json", "accept": "application/json"}  # lower case, as the SDK's
    if key:
        headers["authorization"] = f"Bearer {key.get()}"
    return headers


def _encoded(body: dict[str, Any]) -> bytes:
    """JSON with non-ASCII escaped, as the OpenAI SDK sends it: a lone surrogate in a prompt (text pasted
    from a broken file) still encodes, and the server decides what it means."""
    return json.dumps(body).encode()


def _body(call: "Call", target: "Target", streamed: bool) -> tuple[dict[str, Any], float]:
    """The JSON pydantic-ai would send, and the timeout in seconds."""
    from .factory import model_settings

    request = call.request
    options = model_settings(target.settings, None, temperature=request.temperature, max_tokens=request.max_tokens,
                             timeout=request.timeout)
    messages = [{"role": "user", "content": call.prompt}]
    if request.system:
        messages.insert(0, {"role": "system", "content": request.system})
    body: dict[str, Any] = {"model": target.model, "stream": streamed, "messages": messages,
                            "max_tokens": options["max_tokens"]}
    if streamed:
        body["stream_options"] = {"include_usage": True}
    if "temperature" in options:
        body["temperature"] = options["temperature"]
    return body, float(options["timeout"])


def _described(exc: BaseException, target: "Target", timeout: float) -> ModelError:
    return describe_failure(exc, target.provider, target.url, target.spec, timeout,
                            target.settings.base_url_is_default)


def _usage(data: Any) -> tuple[int | None, int | None]:
    """Prompt and completion tokens; (None, None) when the server sent none (or 0/0, as pydantic-ai reads it)."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None, None
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    if not (isinstance(prompt, int) and isinstance(completion, int)) or not (prompt or completion):
        return None, None
    return prompt, completion


def _without_thinking(content: str) -> str:
    """The text of `content` with each `<think>…</think>` taken out (an unclosed tag: the rest is text)."""
    start, end = _THINK
    if start not in content:
        return content
    kept: list[str] = []
    index = content.find(start)
    while index >= 0:
        kept.append(content[:index])
        content = content[index + len(start):]
        close = content.find(end)
        if close < 0:
            break
        content = content[close + len(end):]
        index = content.find(start)
    kept.append(content)
    return "".join(kept)


def _reply(data: Any) -> Reply:
    """A chat completion's JSON as a Reply; raises ValueError when it is not one."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("no choices in the reply")
    message = choices[0].get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    content = _joined(content)
    input_tokens, output_tokens = _usage(data)
    return Reply(_without_thinking(content), input_tokens, output_tokens, choices[0].get("finish_reason"))


def _joined(content: Any) -> str:
    """Message content as text: a string, or a list of parts (some servers send `[{"type": "text", …}]`)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


async def request(call: "Call", target: "Target") -> Reply:
    """One non-streamed request; the whole reply must arrive within the timeout. Raises a described ModelError."""
    import httpx2

    body, timeout = _body(call, target, streamed=False)
    failure: ModelError | None = None
    try:
        async with asyncio.timeout(timeout):
            response = await client().post(_url(target), content=_encoded(body), headers=_headers(target),
                                           timeout=timeout)
    except (TimeoutError, httpx2.TimeoutException):
        failure = timed_out(target.provider, target.url, timeout, _WHOLE, target.spec)
    except Exception as exc:  # refused, reset, cut mid-body, anything else: the same words the SDK's errors get
        failure = _described(exc, target, timeout)
    if failure is not None:  # raised outside the except: the transport's exception is not chained
        raise failure
    if response.status_code >= 400:
        raise http_failure(response.status_code, response.text, response.headers, target.provider, target.url,
                           target.spec)
    try:
        return _reply(json.loads(response.content))
    except ValueError as exc:  # (json's JSONDecodeError is one)
        detail = f"ModelAPIError: Failed to decode response as JSON: {exc}" if isinstance(
            exc, json.JSONDecodeError) else str(exc)
        failure = malformed(target.provider, target.url, detail)
    raise failure


async def stream(call: "Call", target: "Target") -> AsyncIterator["str | Reply"]:
    """A streamed request: text deltas, then one Reply (its text the whole answer). The first event must come
    within the timeout, then at most that long between chunks. Raises a described ModelError."""
    import httpx2

    body, timeout = _body(call, target, streamed=True)
    failure: ModelError | None = None
    state = _Stream(target)
    try:
        async with asyncio.timeout(timeout) as first_clock:
            async with client().stream("POST", _url(target), content=_encoded(body), headers=_headers(target),
                                       timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    failure = http_failure(response.status_code, response.text, response.headers, target.provider,
                                           target.url, target.spec)
                else:
                    async for line in response.aiter_lines():
                        deltas = state.line(line)
                        if deltas is None:
                            continue
                        if state.events == 1:
                            first_clock.reschedule(None)  # from now on the transport's read timeout bounds each gap
                        for delta in deltas:
                            yield delta
                        if state.done:
                            break
    except TimeoutError:  # only the first-chunk clock raises this (the transport's are httpx2's)
        failure = timed_out(target.provider, target.url, timeout, _FIRST, target.spec)
    except httpx2.TimeoutException as exc:
        failure = (timed_out(target.provider, target.url, timeout, _FIRST, target.spec) if not state.events
                   else _described(exc, target, timeout))
    except Exception as exc:  # (a ModelError from a bad event is kept as it is)
        failure = _described(exc, target, timeout)
    if failure is None:
        failure = state.unfinished()
    if failure is not None:
        raise failure
    yield state.reply()


class _Stream:
    """The state of one SSE stream: events seen, text kept, thinking tags, usage, finish reason."""

    def __init__(self, target: "Target") -> None:
        self.target = target
        self.events = 0
        self.done = False
        self.chunks: list[str] = []
        self.thinking = False
        self.finish: str | None = None
        self.usage: tuple[int | None, int | None] = (None, None)

    def line(self, line: str) -> list[str] | None:
        """One line of the stream: the text deltas it carries ([] for none), None when it is no event."""
        if not line.startswith("data:"):
            return None
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.done = True
            return []
        problem = None
        try:
            data = json.loads(payload)
        except ValueError as exc:
            problem = f"a stream event is not JSON: {exc}"
        if problem is None and not isinstance(data, dict):
            problem = "a stream event is not a JSON object"
        if problem is not None:  # raised outside the except: nothing chained
            raise malformed(self.target.provider, self.target.url, problem[:160])
        self.events += 1
        if isinstance(data.get("error"), dict | str):  # an error reported mid-stream (the HTTP status was 200)
            error = data["error"]
            said = error.get("message", error) if isinstance(error, dict) else error
            raise ModelError(self.target.provider, f"the server reported an error mid-stream: {str(said)[:300]}",
                             url=self.target.url)
        if data.get("usage"):
            self.usage = _usage(data)
        choices = data.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return []
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]
        delta = choice.get("delta") or {}
        content = _joined(delta.get("content")) if isinstance(delta, dict) else ""
        return self._text(content) if content else []

    def _text(self, content: str) -> list[str]:
        """pydantic-ai's rule: a delta that is exactly `<think>` starts thinking, exactly `</think>` ends it."""
        if self.thinking:
            self.thinking = content != _THINK[1]
            return []
        if content == _THINK[0]:
            self.thinking = True
            return []
        self.chunks.append(content)
        return [content]

    def unfinished(self) -> ModelError | None:
        """A stream that ended without events (garbage, an empty body) or without a finish reason (cut off)."""
        target = self.target
        if not self.events:
            return ModelError(target.provider, "the server sent a malformed answer (no valid stream events: an "
                                               "empty or garbled body)", url=target.url,
                              hint="check that the server speaks OpenAI's API")
        if self.finish is None:
            return ModelError(target.provider, "the reply was cut off before it was complete (the stream ended "
                                               "without a finish reason)", url=target.url, retryable=True,
                              hint="try again; if it keeps happening the server is crashing")
        return None

    def reply(self) -> Reply:
        return Reply("".join(self.chunks), *self.usage, self.finish)
