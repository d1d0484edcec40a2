"""Turn whatever a model call raised into one `ModelError` that carries its facts.

Each failure gets its own words and hint, and says whether a retry may help:

| what happened                           | words                                   | retryable |
|-----------------------------------------|-----------------------------------------|-----------|
| connection refused (nothing listens)    | "connection refused …"                  | no: fail fast, the server is not there |
| other connect failures (DNS, TLS)       | "cannot connect …"                      | no        |
| a timeout (connect, read, whole reply)  | "timed out after N s …"                 | yes       |
| the reply was cut mid-body / reset      | "the reply was cut off …"               | yes       |
| HTTP 429 / 5xx                          | "HTTP 429: rate limited …"              | yes (with the server's Retry-After) |
| HTTP 401/403, 404, 400                  | "HTTP 401: the server refused …"        | no        |
| a malformed answer                      | "the server sent a malformed answer"    | no        |

An HTTP failure is one sentence: the status and what it means, the server's own message
quoted from its JSON error body (shortened, keys masked), then what to do, once
("openai at https://api.openai.com/v1: HTTP 401: the server refused the credentials (the
server says: "Incorrect API key provided: ***") — check OPENAI_API_KEY").

pydantic-ai 2.x already sorts provider errors into categories (`ModelConnectionError`
with its `phase`, `ModelTimeoutError`, `ModelHTTPError` with `status_code`, `headers`,
`retry_after`); the transport's own exception is its `__cause__`, which is the only
place that says "refused" from "reset". The ModelError built here chains nothing: what
nbllm raises never carries the SDK's exception (whose text may echo a header).

An HTTP status is described from (status, body, headers) by `http_failure`, the one function
both paths use: pydantic-ai's `ModelHTTPError` and nbllm's own wire path (wire.py), which
never imports pydantic-ai — so nothing here imports it either unless it is loaded already
(an exception cannot be one of its classes otherwise).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from typing import Any

from .catalog import ProviderSpec, key_names
from .errors import ModelError, scrub

__all__ = ["describe_failure", "http_failure", "malformed", "timed_out", "server_said", "server_message",
           "status_words", "what_to_do"]


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what it was raised from inside the SDK (bounded, cycle-safe)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen) and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _pydantic_ai_errors() -> Any:
    """pydantic-ai's exceptions module when it is loaded, else None (then no exception can be one of them)."""
    return sys.modules.get("pydantic_ai.exceptions")


def _http_error(chain: list[BaseException]) -> Any:
    """The `ModelHTTPError` in `chain`, or None."""
    errors = _pydantic_ai_errors()
    if errors is None:
        return None
    return next((e for e in chain if isinstance(e, errors.ModelHTTPError)), None)


def server_said(exc: BaseException) -> str:
    """The message in the error body of the HTTP reply behind `exc` (any status), scrubbed; "" without one."""
    http = _http_error(_chain(exc))
    return server_message(getattr(http, "body", None), 300) if http is not None else ""


def _names(chain: list[BaseException]) -> str:
    return " ".join(f"{type(e).__name__} {e}" for e in chain).lower()


def timed_out(provider: str, url: str | None, seconds: float, what: str, spec: ProviderSpec | None) -> ModelError:
    """A request that took longer than its timeout (`what`: which bound it was)."""
    return ModelError(provider, f"timed out after {seconds:g} s ({what})", url=url, retryable=True,
                      hint=f"raise {_prefix(provider, spec)}_TIMEOUT (or timeout=) or check the server")


def _prefix(provider: str, spec: ProviderSpec | None) -> str:
    return spec.env_prefix if spec is not None else provider.upper()


def _http(exc: Any, provider: str, url: str | None, spec: ProviderSpec | None) -> ModelError:
    """pydantic-ai's `ModelHTTPError` (its `retry_after` reads whole seconds; the header is read again)."""
    error = http_failure(int(exc.status_code), getattr(exc, "body", None), getattr(exc, "headers", None) or {},
                         provider, url, spec)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None and error.retryable:
        error.retry_after = retry_after
    return error


_WHAT = {
    400: "the request was rejected",
    401: "the server refused the credentials",
    403: "access is forbidden",
    404: "not found",
    408: "the server gave up waiting for the request",
    413: "the request is too large",
    422: "the request was rejected",
    429: "rate limited",
    502: "bad gateway (a proxy got no answer from the server behind it)",
    503: "service unavailable (the server may still be loading its model)",
    504: "gateway timeout (a proxy waited too long for the server behind it)",
}
"""What each status means, in a few words (no advice: that is the hint, said once)."""
SERVER_SAID_CHARS = 160
"""The longest part of a server's own message an error quotes (cut at a word, with "…")."""


def status_words(status: int) -> str:
    """`HTTP 401: the server refused the credentials`: the status and what it means, nothing to do yet."""
    words = _WHAT.get(status) or ("server error" if status >= 500 else "the request was rejected")
    return f"HTTP {status}: {words}"


def what_to_do(status: int, spec: ProviderSpec, retry_after: float | None = None) -> str:
    """The hint for an HTTP `status` from `spec`'s server: the one rule calls and model listings share."""
    return _what_to_do(status, spec.env_prefix, key_names(spec), retry_after, spec.kind == "local")


def _what_to_do(status: int, prefix: str, keys: str, retry_after: float | None, local: bool) -> str:
    """The one thing to try for `status` (the hint after " — ")."""
    if status == 401:
        return f"check {keys}"
    if status == 403:
        return f"check {keys} and what it is allowed to use"
    if status == 404:
        return f"check the model name ({prefix}_MODEL) and base URL ({prefix}_BASE_URL)"
    if status == 413:
        return "send a shorter prompt or smaller images"
    if status == 429:
        wait = f"wait {retry_after:g} s" if retry_after else "wait a little"
        return f"{wait} and try again, or send fewer requests at once"
    if status in (408, 503):
        return "try again in a moment"
    if status >= 500:
        return "try again later; if it keeps failing, look at the server's log" if local else "try again later"
    return f"check the model ({prefix}_MODEL) and the options sent (max_tokens, temperature)"


def http_failure(status: int, body: Any, headers: Any, provider: str, url: str | None,
                 spec: ProviderSpec | None) -> ModelError:
    """An HTTP error status as one ModelError whose text is one sentence: the status and what it means,
    the server's own message when its body has one (shortened, keys masked), then what to do, once.

    `body` is the reply's text, bytes or parsed JSON; `headers` any mapping (its `retry-after` read, in
    seconds or as an HTTP date). Both paths use it: pydantic-ai's `ModelHTTPError` and nbllm's wire path.
    """
    said = server_message(body)
    message = status_words(status) + (f' (the server says: "{said}")' if said else "")
    prefix = _prefix(provider, spec)
    keys = key_names(spec) if spec is not None else f"{prefix}_API_KEY"  # key_env's too
    retryable = status == 429 or status >= 500
    retry_after = _retry_after(headers.get("retry-after") or headers.get("Retry-After")) if retryable else None
    hint = _what_to_do(status, prefix, keys, retry_after, spec is not None and spec.kind == "local")
    return ModelError(provider, message, url=url, hint=hint, retryable=retryable, retry_after=retry_after,
                      status=status)


_ECHOED_KEY = re.compile(r"[\w\-]*\*{3,}[\w\-*]*")
"""A key a server echoes back in part (`Incorrect API key provided: sk-abc12*****wxyz`): masked whole.
Only a run of asterisks marks one (a model named `hf-internal-testing/…` is no key); whole keys are
`scrub`'s."""


def server_message(body: Any, limit: int = SERVER_SAID_CHARS) -> str:
    """The server's own words in an error body, on one line, keys masked and cut at a word to `limit`:
    `error.message` (OpenAI, Anthropic, Gemini, vLLM), `message`, `detail` (FastAPI), `error` as text;
    a plain-text body as it is; "" for nothing, or for an HTML page (a proxy's, no message to quote)."""
    text = _body_text(body)
    if not text or text.lstrip().startswith("<"):
        return ""
    text = _ECHOED_KEY.sub("***", scrub(text)).rstrip(". ")
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"


def malformed(provider: str, url: str | None, detail: str) -> ModelError:
    """A 200 whose body is not the answer's shape (not JSON, no choices)."""
    return ModelError(provider, f"the server sent a malformed answer ({detail})", url=url)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: a number ("0.5" too), or an HTTP date from now."""
    seconds = _seconds(value)
    if seconds is not None or not value:
        return seconds
    import email.utils
    import time

    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - time.time())


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def _body_text(body: Any) -> str:
    """A server's error body in one line: its message when it has one (see `server_message`), else its text."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.lstrip()[:1] in ("{", "["):  # Mistral's SDK and the wire path keep the raw JSON
        try:
            body = json.loads(body)
        except ValueError:
            pass
    message = _message_in(body)
    text = message if message is not None else (body if isinstance(body, str) else "")
    return " ".join(text.split())


def _message_in(body: Any, depth: int = 0) -> str | None:
    """The message text inside a parsed error body, or None when it holds none."""
    if depth > 3:
        return None
    if isinstance(body, str):
        return body
    if isinstance(body, list):  # Gemini: [{"error": {...}}]; FastAPI: "detail": [{"msg": ...}]
        found = [m for m in (_message_in(item, depth + 1) for item in body[:3]) if m]
        return "; ".join(found) if found else None
    if isinstance(body, dict):
        for key in ("error", "message", "detail", "msg", "error_description", "title"):
            if key in body:
                found = _message_in(body[key], depth + 1)
                if found:
                    return found
    return None


def describe_failure(exc: BaseException, provider: str, url: str | None, spec: ProviderSpec | None = None,
                     timeout: float | None = None, default_url: bool = True) -> ModelError:
    """One readable ModelError (with `retryable`, `retry_after`, `status`) for any exception of a model call."""
    if isinstance(exc, ModelError):
        return exc
    errors = _pydantic_ai_errors()
    chain = _chain(exc)
    http = _http_error(chain)
    if http is not None:
        return _http(http, provider, url, spec)
    low = _names(chain)
    local = spec is not None and spec.kind == "local"
    prefix = _prefix(provider, spec)
    deadline = next((e for e in chain if type(e).__name__ == "ModelRequestTimeout"), None)
    if deadline is not None:  # pydantic-ai's own clocks: the whole reply, or a stream's first chunk
        seconds = float(getattr(deadline, "timeout", None) or timeout or 0)
        first = getattr(deadline, "setting", "") == "first_event_timeout"
        return timed_out(provider, url, seconds, "no first chunk arrived in time" if first else
                         "the whole reply must arrive within the timeout", spec)
    if any(isinstance(e, (TimeoutError, asyncio.TimeoutError)) for e in chain) or "timeout" in low or "timed out" in low:
        return timed_out(provider, url, timeout or 0, "the server sent nothing for that long", spec) if timeout \
            else ModelError(provider, "timed out", url=url, retryable=True,
                            hint=f"raise {prefix}_TIMEOUT or check the server")
    if "refused" in low or "all connection attempts failed" in low or "errno 111" in low:
        # "start the server" helps where nbllm looked by default; elsewhere the variable pointing there comes first
        start = spec.install_hint if local and spec and spec.install_hint else None
        hint = start if start and default_url else f"check {prefix}_BASE_URL" + (f", or {start}" if start else "")
        if not local:
            hint = f"check your network (or {prefix}_BASE_URL)"
        return ModelError(provider, "connection refused (nothing is listening)", url=url, hint=hint)
    if "ended without content" in low:  # 200, but no event at all: garbage or an empty body
        return ModelError(provider, "the server sent a malformed answer (no valid stream events: an empty or "
                                    "garbled body)", url=url, hint="check that the server speaks OpenAI's API")
    if "ended without" in low:  # events, then no finish reason: the stream was cut mid-way
        return ModelError(provider, "the reply was cut off before it was complete (the stream ended without a "
                                    "finish reason)", url=url, retryable=True,
                          hint="try again; if it keeps happening the server is crashing")
    if any(word in low for word in ("peer closed", "incomplete chunked", "remoteprotocolerror", "incomplete",
                                    "connection reset", "readerror", "server disconnected")):
        return ModelError(provider, "the reply was cut off before it was complete (the connection closed "
                                    "mid-reply)", url=url, retryable=True, hint="try again; if it keeps happening "
                                    "the server is crashing or a proxy is dropping long replies")
    if "connecterror" in low or "connect" in low or "name or service not known" in low or "getaddrinfo" in low:
        hint = f"check your network (or {prefix}_BASE_URL)" if not local else f"check {prefix}_BASE_URL"
        detail = next((str(e) for e in reversed(chain) if str(e)), "")
        return ModelError(provider, f"cannot connect ({detail[:160]})" if detail else "cannot connect", url=url,
                          hint=hint)
    unexpected = errors is not None and isinstance(exc, errors.UnexpectedModelBehavior)
    if unexpected or any(w in low for w in ("json", "decode", "validation")):
        return malformed(provider, url, f"{type(exc).__name__}: {scrub(str(exc))[:160]}")
    if errors is not None and isinstance(exc, errors.ModelAPIError):
        return ModelError(provider, scrub(str(exc))[:300], url=url, retryable=False)
    return ModelError(provider, f"{type(exc).__name__}: {scrub(str(exc))[:300]}", url=url)
