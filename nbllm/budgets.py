"""Budgets: once what is left cannot cover the next request, nothing more is sent.

Before each request the pipeline reserves its worst case — the prompt's tokens (`tokens.estimate`,
which counts high) plus `max_tokens` of answer, twice for a typed answer (one validation retry),
at the target's price (`prices.price_for`) — from every budget in force: the kernel's
(`nbllm.budget(2.00)`) and the scope of a `map` / `compare(..., budget=0.50)`. When one cannot
cover it, `BudgetExhausted` is raised and nothing is sent (`map` then sends nothing more: its own
rule; a cheaper or free request later still fits, and a fallback chain moves on to its next link,
a free local one included). When the answer arrives its
reservation becomes what it really cost, so the overshoot is at most the requests already in
flight. A local server costs 0 and always fits; a model whose price is unknown cannot be bounded,
so with a budget in force it is refused (declare `{P}_PRICE_INPUT` / `_PRICE_OUTPUT`).

Everything here runs on nbllm's loop thread; the lock only guards reads from the kernel's thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import BudgetExhausted, ConfigurationError

if TYPE_CHECKING:
    from .request import Call, Target

__all__ = ["Budget", "budget", "scoped", "reserve", "Hold", "check_limit", "worst_case", "usd"]

class Budget:
    """A limit in USD, what has been spent against it and what is reserved by requests in flight."""

    def __init__(self, limit: float, label: str):
        check_limit(limit)
        self.limit = float(limit)
        self.label = label
        self.spent = 0.0
        self.reserved = 0.0
        self.in_flight = 0
        self.requests = 0
        self.refused = 0
        self._lock = threading.Lock()

    @property
    def left(self) -> float:
        return max(0.0, self.limit - self.spent - self.reserved)

    def take(self, amount: float) -> bool:
        """Reserve `amount` if what is left covers it (a free request always fits)."""
        with self._lock:
            if amount > 0 and amount > self.limit - self.spent - self.reserved + 1e-12:
                self.refused += 1
                return False
            self.reserved += amount
            self.in_flight += 1
            return True

    def release(self, reserved: float) -> None:
        """Give back a reservation whose request was never sent."""
        with self._lock:
            self.in_flight -= 1
            self.reserved = max(0.0, self.reserved - reserved) if self.in_flight else 0.0

    def settle(self, reserved: float, actual: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.reserved = max(0.0, self.reserved - reserved) if self.in_flight else 0.0  # no float dust
            self.spent += actual
            self.requests += 1

    def __repr__(self) -> str:
        flight = f", {self.in_flight} request(s) in flight" if self.in_flight else ""
        refused = f", {self.refused} refused" if self.refused else ""
        return (f"<{self.label} {usd(self.limit)}: spent ${self.spent:.4f} in {self.requests} request(s), "
                f"left ${self.left:.4f}{flight}{refused}>")


def usd(amount: float) -> str:
    """Dollars as people write them: cents for a budget of a dollar or more, else four decimals."""
    return f"${amount:,.2f}" if amount >= 1 or amount == 0 else f"${amount:.4f}".rstrip("0").rstrip(".")


def check_limit(limit: Any) -> None:
    """A budget is a finite number of USD, at least 0 (not a bool, not text)."""
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit >= 0 or limit == float("inf"):
        raise ConfigurationError(f"budget={limit!r}: give the most to spend in USD, a number of at least 0 "
                                 "(e.g. 2.00), or None for no budget.")


_kernel: Budget | None = None
_scopes: contextvars.ContextVar[tuple[Budget, ...]] = contextvars.ContextVar("nbllm_budgets", default=())


def budget(limit: float | None | type[Ellipsis] = ...) -> Budget | None:
    """`nbllm.budget(2.00)` sets the kernel's budget (spending counts from now); `nbllm.budget()` shows
    it (spent, left, in flight); `nbllm.budget(None)` removes it."""
    global _kernel
    if limit is ...:
        return _kernel
    if limit is None:
        _kernel = None
        return None
    check_limit(limit)  # before any conversion: budget("two") and budget(True) are one clear error
    _kernel = Budget(float(limit), "kernel budget")  # type: ignore[arg-type]
    return _kernel


@contextlib.contextmanager
def scoped(limit: float | None, label: str = "budget") -> Iterator[Budget | None]:
    """A budget for the requests started inside (tasks created inside inherit it); None: no extra budget."""
    if limit is None:
        yield None
        return
    scope = Budget(limit, label)
    token = _scopes.set((*_scopes.get(), scope))
    try:
        yield scope
    finally:
        _scopes.reset(token)


@dataclass
class Hold:
    """A request's reservation in each budget in force; `settle` it with what the request cost."""

    budgets: tuple[Budget, ...]
    amount: float

    def settle(self, actual: float | None) -> None:
        for each in self.budgets:
            each.settle(self.amount, self.amount if actual is None else actual)


def worst_case(call: "Call", target: "Target") -> tuple[float | None, int, int]:
    """The most this request may cost (None: its price is unknown), and the tokens it assumes: the same
    count `nbllm.estimate` gives (`tokens.request_tokens`: the prompt, system prompt, chat turns, images
    and the chat framing; the output type's schema), plus `max_tokens` of answer — twice for a typed
    answer, whose reply is asked once more when it does not validate."""
    from .prices import price_for
    from .counting import schema_tokens
    from .tokens import request_tokens

    request = call.request
    history = ()
    if request.chat is not None:
        from .parts import content_text

        history = [content_text(getattr(part, "content", ""))
                   for message in request.chat.messages for part in getattr(message, "parts", [])]
    prompt_tokens = request_tokens(request.prompt, request.system, history, len(request.images))
    output_tokens = request.max_tokens or target.settings.max_tokens
    if request.output_type is not None:
        prompt_tokens += schema_tokens(request.output_type, target)
        prompt_tokens, output_tokens = 2 * prompt_tokens + output_tokens, 2 * output_tokens
    price = price_for(target.spec, target.settings, target.model)
    return (None if price is None else price.cost(prompt_tokens, output_tokens)), prompt_tokens, output_tokens


def reserve(call: "Call", target: "Target") -> Hold | None:
    """Reserve `call`'s worst case in every budget in force (None when there is none); raises
    `BudgetExhausted` — nothing is sent — when one cannot cover it."""
    budgets = (*((_kernel,) if _kernel is not None else ()), *_scopes.get())
    if not budgets:
        return None
    amount, prompt_tokens, output_tokens = worst_case(call, target)
    what = f"{target.provider}:{target.model}"
    if amount is None:
        raise BudgetExhausted(f"{what} has no known price, so the {budgets[0].label} cannot bound it: nothing was "
                              f"sent. Declare {target.spec.env_prefix}_PRICE_INPUT and _PRICE_OUTPUT (USD per "
                              "million tokens), or ask without a budget.")
    taken: list[Budget] = []
    for each in budgets:
        if not each.take(amount):
            for done in taken:  # give back what this request took from the others
                done.release(amount)
            raise BudgetExhausted(
                f"the {each.label} of {usd(each.limit)} has ${each.left:.4f} left and the next request may cost up to "
                f"${amount:.4f} ({what}, ~{prompt_tokens:,} input and {output_tokens:,} output tokens): nothing more "
                "is sent. Raise the budget or lower max_tokens.")
        taken.append(each)
    return Hold(tuple(taken), amount)

