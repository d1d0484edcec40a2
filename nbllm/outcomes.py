"""What `map` keeps per input: an `Answered` record, or a `Failed` value saying why there is none.

Their own module because the durable jobs store, the provider-batch runner and `map` itself all
make and read them (`map` depends on those two, so the values live below all three).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ModelError, OutputInvalid, Unsuitable

__all__ = ["Failed", "Answered", "failed", "MISSING", "INTERRUPTED"]


@dataclass(frozen=True)
class Failed:
    """An input whose answer could not be had: what went wrong, after how many attempts.

    `kind`: "error" (the provider failed), "invalid" (a typed answer did not validate;
    `text` keeps what was sent back), "missing" (the input was None/NaN; nothing was
    sent), "interrupted" (Ctrl-C came first), "budget" (not sent: the budget ran out) or
    "pending" (`batch=True`: submitted in a provider batch not collected yet; run the cell again).
    Falsy, so `result[result.map(bool)]` keeps the answers. `reason` is the one line a typed result's `_error` shows.
    """

    error: str
    attempts: int = 0
    kind: str = "error"
    reason: str = ""
    text: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    """What the failed attempt still spent (an invalid typed answer was generated, and retried once; None:
    unknown)."""
    lasting: bool = False
    """Whether another try would fail the same way because of this input (a 400 about the prompt, an invalid
    typed answer): a durable job keeps only these as done; any other failure is sent again on a re-run."""

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"<failed: {self.error}>"

    __repr__ = __str__


MISSING = Failed("the input is missing (None/NaN); nothing was sent", 0, "missing",
                  "the input is missing (None/NaN); nothing was sent")
INTERRUPTED = Failed("interrupted before it finished", 0, "interrupted", "interrupted before it finished")


_INPUT_STATUSES = (400, 413, 422)
"""HTTP statuses that say this request's content is wrong (too long, malformed): the same input fails again."""


def _lasting(exc: Exception) -> bool:
    """Whether `exc` is tied to the input, so another try would fail the same way. Not: a retryable failure
    (429, 5xx, a timeout), nothing answered, 401/403/404 (configuration), `Unsuitable`, a budget."""
    if isinstance(exc, OutputInvalid):
        return True
    return (isinstance(exc, ModelError) and not isinstance(exc, Unsuitable) and not exc.retryable
            and exc.status in _INPUT_STATUSES)


def failed(exc: Exception) -> Failed:
    """A call's failure as a value: the full message, and the one line a typed result's `_error` shows."""
    attempts = getattr(exc, "attempts", 1)
    if isinstance(exc, OutputInvalid):
        return Failed(str(exc), attempts, "invalid", f"invalid output: {exc.problem}", exc.text,
                      exc.input_tokens or 0, exc.output_tokens or 0, exc.cost_usd, lasting=True)
    message = str(exc) or type(exc).__name__
    return Failed(message, attempts, "error", " ".join(message.split()), lasting=_lasting(exc))


class Answered:
    """What `map` keeps of one answer: its text (or typed output), tokens, cost and attempts. Why not the
    `Answer`: that keeps pydantic-ai's messages and the request (~2.5 KB a prompt); this is ~0.15 KB with
    its text, taken the moment the answer arrives (a durable job gets the whole Answer first)."""

    __slots__ = ("text", "output", "input_tokens", "output_tokens", "cost_usd", "attempts")

    error = None
    ok = True

    def __init__(self, answer: Any):
        self.text, self.output, self.attempts = answer.text, answer.output, answer.attempts
        self.input_tokens, self.output_tokens = answer.input_tokens, answer.output_tokens
        cost = answer.cost_usd
        self.cost_usd = cost if cost else (None if cost is None else 0.0)  # one shared 0.0 for every free answer

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Answered({self.text!r})"
