"""Every exception nbllm raises, in one module, and the one scrubber all output goes through.

    NbllmError
    ├── ConfigurationError (also ValueError)  bad configuration, an unknown name, a usage
    │                                          mistake; the message names the valid choices
    ├── ModelError (also RuntimeError)        a provider failed: which provider, which URL,
    │   │                                      what happened, whether a retry may help
    │   └── ReplayMiss                         strict replay found no recorded answer
    ├── ProbeError                             a health probe failed (health turns it into a row)
    │   └── ServerCrashed                      a server nbllm runs itself died from a signal
    ├── Cancelled                              the request was cancelled on nbllm's loop
    └── CellError                              a magic's failure, shown as one line
    KeyboardInterrupt (not NbllmError: `except Exception` must never swallow Ctrl-C)
    ├── Interrupted                            Ctrl-C during a magic's request, shown as one line
    └── MapInterrupted                         Ctrl-C during `map`; `.partial` keeps what finished
    ValueError
    └── BadValue                               a setting's text is not in the accepted form (never escapes config)

Why one scrubber here: errors are the lowest layer, so everything above can pass its
output through `scrub` — messages, reprs, tables, call-log and cache rows, widget
state. It masks the keys this process knows (`remember_secrets`, fed by the settings
reader), key-shaped tokens, `Bearer`/`Basic`/`Token` credentials, `x-api-key`/`api-key`
style headers and `?key=` parameters, and the `user:password@` of any URL. Every
NbllmError scrubs its own message, so no face can forget to.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

__all__ = [
    "NbllmError", "ConfigurationError", "ModelError", "OutputInvalid", "ReplayMiss", "ProbeError", "Cancelled", "CellError",
    "Interrupted", "MapInterrupted", "ServerCrashed", "BadValue", "BudgetExhausted", "Unsuitable", "scrub", "display_url",
    "remember_secrets", "detached", "scrub_library_logs", "server_failed", "might_hold_secret",
]

MASK = "***"

# The `user:password@` part of any URL in a text (up to the last `@` before the path,
# since a password may itself contain an unescaped `@`).
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#]*@")

# One pass for every shape of secret that may reach a message without nbllm knowing its value.
_SHAPES = re.compile(
    r"(?P<scheme>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=\-]{4,}"  # Authorization credentials
    r"|(?P<header>\b(?:x-api-key|api-key|x-goog-api-key|api_key|apikey|x-auth-token)[\"']?\s*[:=]\s*[\"']?)"
    r"[^\s\"',;&}\])]{4,}"  # header or parameter with its value
    r"|(?P<param>[?&]key=)[^&\s\"']+"  # Google-style ?key=
    r"|\b(?:sk-[A-Za-z0-9_\-]{8,}|xai-[A-Za-z0-9_\-]{8,}|AIza[A-Za-z0-9_\-]{20,}|gsk_[A-Za-z0-9]{8,}"
    r"|hf_[A-Za-z0-9]{8,})",  # well-known key shapes
    re.IGNORECASE,
)

_lock = threading.Lock()
_known: tuple[str, ...] = ()
_known_pattern: re.Pattern[str] | None = None


def remember_secrets(values: Iterable[str]) -> None:
    """The keys this process knows (every `*_API_KEY` value): `scrub` masks them wherever they appear.

    The settings reader calls this each time it reads the environment; values shorter
    than 4 characters are ignored (masking them would shred ordinary text).
    """
    global _known, _known_pattern
    found = sorted({v.strip() for v in values if v and len(v.strip()) >= 4}, key=len, reverse=True)
    with _lock:
        _known = tuple(found)
        _known_pattern = re.compile("|".join(re.escape(v) for v in found)) if found else None


# What every secret `scrub` masks contains, lowercased: one of `_SHAPES`' literal parts (each alternative
# has one), or the "://" of a URL. Kept beside `_SHAPES`: a new shape there needs its word here
# (tests/test_calllog.py checks every shape against this list).
_HINTS = ("bearer", "basic", "token", "api-key", "api_key", "apikey", "key=", "sk-", "xai-", "aiza", "gsk_",
          "hf_", "://")


def might_hold_secret(text: str) -> bool:
    """Whether `scrub` could change `text`; False means `scrub(text) == text` for sure.

    Why: scrubbing is four regular-expression passes over a call-log row (~10 µs); most rows hold
    no key, no credential and no URL, which a few substring checks show at once. Only ASCII text is
    decided here (re's IGNORECASE folds some non-ASCII letters, `ſ` → `s`, that `lower()` does not):
    any other text answers True."""
    if not text.isascii():
        return True
    if any(secret in text for secret in _known):
        return True
    lowered = text.lower()
    return any(hint in lowered for hint in _HINTS)


def _shape(match: re.Match[str]) -> str:
    prefix = match.group("scheme") or match.group("header") or match.group("param") or ""
    return prefix + MASK


def display_url(url: str) -> str:
    """`url` without `user:password@`: what messages and tables show (requests keep the real URL)."""
    return _URL_CREDENTIALS.sub(r"\1", url)


def scrub(text: Any, secrets: Iterable[str] = ()) -> str:
    """`text` with every known key, key-shaped token, credential header and URL password masked."""
    text = text if isinstance(text, str) else str(text)
    extra = [s for s in secrets if s and len(s) >= 4]
    for secret in sorted(extra, key=len, reverse=True):
        text = text.replace(secret, MASK)
    pattern = _known_pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = display_url(text)
    return _SHAPES.sub(_shape, text)


class ScrubLogs(logging.Filter):
    """Scrubs every record of the HTTP libraries' loggers (httpx2 logs request URLs, user:password@ included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_LOGGERS = ("httpx2", "httpx", "httpcore2", "httpcore", "openai", "anthropic", "google_genai", "groq", "mistralai")


def scrub_library_logs() -> None:
    """Put `ScrubLogs` on the loggers of the libraries nbllm drives and on each of their module
    loggers (`openai._base_client`): a logger's filter never sees records of its children, which
    propagate straight to the handlers. Cheap to call again; call it after the SDKs are imported."""
    existing = list(logging.Logger.manager.loggerDict)
    for name in _LOGGERS:
        for child in [name, *(n for n in existing if n.startswith(name + "."))]:
            logger = logging.getLogger(child)
            if not any(isinstance(f, ScrubLogs) for f in logger.filters):
                logger.addFilter(ScrubLogs())


def detached(exc: BaseException) -> BaseException:
    """`exc` with no chained exceptions or traceback: what nbllm raises must not carry an
    SDK error (whose text may echo a header) as `__context__`/`__cause__`.

    Raise the result outside any `except` block, or Python chains the handled one again.
    """
    exc.__cause__ = None
    exc.__context__ = None
    exc.__suppress_context__ = True
    return exc.with_traceback(None)


def server_failed(status: int | None) -> bool:
    """Whether an HTTP outcome says the server itself failed — nothing answered (None), 408 or a
    5xx — rather than that the request was wrong (400/401/403/404) or too many (429). The one rule
    behind fallback chains (`ModelError.moves_on`), health's "down" and fleet failover."""
    return status is None or status == 408 or status >= 500


class BadValue(ValueError):
    """A setting's text is not in the accepted form; `str()` is the explanation ("expected …").
    Internal to the settings reader, which turns it into one warning and uses the default."""


class NotValid(ValueError):
    """A typed answer does not validate (`problem` in one line, `text` as it came). Internal to the
    check of typed answers (`typed.py`), which the pipeline turns into `OutputInvalid`."""

    def __init__(self, problem: str, text: str):
        super().__init__(problem)
        self.problem, self.text = problem, text


class PlainHTTPFailed(Exception):
    """A plain-http exchange failed (`kind`: "refused", "connect" or "protocol"). Internal to
    `plainhttp`, whose caller (`probes`) turns it into a `ProbeError` in httpx2's words."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


class NotPlainHTTP(Exception):
    """The request needs what only httpx2 does (a redirect to https, say). Internal to `plainhttp`:
    `probes` asks again through httpx2."""


class NbllmError(Exception):
    """Base class of every error nbllm raises on purpose; its message is always scrubbed."""

    def __init__(self, message: Any = "", *args: Any):
        super().__init__(scrub(message), *args)


class ConfigurationError(NbllmError, ValueError):
    """Bad configuration, an unknown/disabled provider or a usage mistake; the message names valid choices."""


class ModelError(NbllmError, RuntimeError):
    """A provider failed: says which provider, which URL and what happened.

    `retryable` says whether the same request may succeed later (429, 5xx, a timeout,
    a reply cut off); `retry_after` is the wait the server asked for, in seconds;
    `status` the HTTP status when there was one. Retry loops read these, nothing else.
    """

    def __init__(self, provider: str, message: str, url: str | None = None, hint: str | None = None, *,
                 retryable: bool = False, retry_after: float | None = None, status: int | None = None):
        self.provider = provider
        self.url = display_url(url) if url else url
        self.reason = scrub(message)
        self.hint = hint
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        super().__init__(self._sentence())

    def _sentence(self) -> str:
        where = f" at {self.url}" if self.url else ""
        return f"{self.provider}{where}: {self.reason}" + (f" — {self.hint}" if self.hint else "")

    def with_note(self, note: str) -> "ModelError":
        """A copy whose hint ends with `note` (e.g. which links of a chain were tried first), every
        other fact and the class kept."""
        import copy

        again = copy.copy(self)
        again.hint = f"{self.hint} {note}" if self.hint else note
        again.args = (scrub(again._sentence()),)
        return again

    @property
    def moves_on(self) -> bool:
        """Whether another provider (a fallback chain) or another server (a fleet) may answer instead:
        nothing answered, a timeout, a cut reply, 408, 429 or 5xx. A 400/401/403/404 means the request
        itself is wrong for this provider: trying elsewhere would hide that."""
        return server_failed(self.status) or self.status == 429

    @property
    def nothing_answered(self) -> bool:
        """No usable reply came at all (refused, unreachable, garbage): a chain skips the provider a while."""
        return self.status is None and not self.retryable

    def __reduce__(self) -> Any:  # picklable (multiprocessing, nbclient) with every fact kept
        return (_rebuild_model_error, (type(self), self.provider, self.reason, self.url, self.hint,
                                       self.retryable, self.retry_after, self.status))


def _rebuild_model_error(cls: type[ModelError], provider: str, reason: str, url: str | None, hint: str | None,
                         retryable: bool, retry_after: float | None, status: int | None) -> ModelError:
    return cls(provider, reason, url, hint, retryable=retryable, retry_after=retry_after, status=status)


class OutputInvalid(ModelError):
    """A typed answer (`output_type=`) did not validate, even after the error was fed back once.
    `.problem` says what was wrong in one line, `.text` keeps what the provider sent."""

    def __init__(self, provider: str, what: str, problem: str, url: str | None = None, text: str = "",
                 input_tokens: int | None = None, output_tokens: int | None = None, cost_usd: float | None = None,
                 model: str = "", hint: str | None = None):
        self.what = what
        self.problem = scrub(problem)
        self.text = scrub(text)
        # What the replies spent (an invalid answer costs tokens too) and which model sent them.
        self.input_tokens, self.output_tokens, self.cost_usd, self.model = input_tokens, output_tokens, cost_usd, model
        super().__init__(provider, f"the answer is not a valid {what} ({self.problem})", url,
                         hint or "make the prompt clearer, the type simpler, or try a stronger model")

    @property
    def moves_on(self) -> bool:  # the server answered; what it said was wrong: another provider or
        return False              # server would not make the question clearer, and none is taken out

    @property
    def nothing_answered(self) -> bool:
        return False

    def __reduce__(self) -> Any:
        return (type(self), (self.provider, self.what, self.problem, self.url, self.text, self.input_tokens,
                             self.output_tokens, self.cost_usd, self.model, self.hint))


class Unsuitable(ModelError):
    """The request cannot go to this provider as it is (images to a text-only model, a whole table
    beyond its context): refused before anything is sent. A fallback chain's next link may take it;
    the provider itself is fine (never marked down)."""

    @property
    def moves_on(self) -> bool:
        return True

    @property
    def nothing_answered(self) -> bool:
        return False


class BudgetExhausted(NbllmError):
    """A budget in force cannot cover the next request: nothing was sent (`map` marks the row
    `Failed(kind="budget")`; a re-run of a durable job sends it once the budget allows)."""

    kind = "budget"


class NotRun(ModelError):
    """A request a provider's batch never ran (it expired after 24 h, or was cancelled): sending it again
    may work. A durable job submits these again in a new batch (batch_jobs.py)."""


class ReplayMiss(ModelError):
    """Strict replay found no recorded answer for this call; nothing was sent."""


class ProbeError(NbllmError):
    """A probe failed; `url` never carries the base URL's `user:password@`, `status` the HTTP status if any."""

    def __init__(self, message: str, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url = display_url(url) if url else url
        self.status = status


class Cancelled(NbllmError):
    """A request was cancelled on nbllm's loop (e.g. the loop was shut down), not by Ctrl-C here."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message or "the request was cancelled before it finished (nbllm's loop was stopped, "
                                    "e.g. by %unload_ext); run it again")


class CellError(NbllmError):
    """A failure a magic reports as one readable line; IPython shows `_render_traceback_`, not a traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"nbllm: {self}"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C / kernel interrupt during a request: still an interrupt, shown as one line."""

    def _render_traceback_(self) -> list[str]:
        return [f"nbllm: {self}"]


class MapInterrupted(KeyboardInterrupt):
    """Ctrl-C during `map`; `.partial` holds every finished result, in input order."""

    def __init__(self, partial: Any):
        done = int(sum(1 for v in partial if getattr(v, "kind", None) != "interrupted"))
        super().__init__(f"nbllm.map interrupted: {done} of {len(partial)} finished; "
                         "get them from this exception's .partial or nbllm.batch.last_partial()")
        self.partial = partial


class ServerCrashed(ModelError):
    """A server nbllm runs itself (the embedded llama.cpp) died from a signal (SIGSEGV, SIGILL…).

    Restarting would crash again (a build for another CPU), so nbllm stops restarting it
    until the model, its arguments or the llama-cpp-python installation change; the hint
    is the command that fixes it.
    """
