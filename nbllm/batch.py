"""`nbllm.map`: one prompt per value of a list or Series, concurrently, nothing lost.

- Template: `{value}` or `{}` stands for the value; `{{` / `}}` are literal braces;
  any other brace is left as it is. The value is inserted once and never parsed,
  so a value full of braces (code, JSON) is sent exactly as it is.
- Concurrency: `concurrency` workers on nbllm's loop take the inputs in order, so
  at most that many requests are in flight and memory does not grow with the input.
- Retries: map retries an input itself on HTTP 429 and 5xx, timeouts and refused or
  dropped connections (the SDK's own retries are off for map's calls, so attempts
  do not multiply). `retries=None` uses the provider's `{P}_MAX_RETRIES`. Between
  attempts it waits what `Retry-After` asks (at most `max_wait` seconds), else
  `backoff * 2**attempt` with jitter (also at most `max_wait`).
- Results: a pandas Series with the input's index (a list gets a RangeIndex), in
  input order. An answer is its text; a failure is a `Failed` value carrying the
  error — never dropped, never stopping the rest. `failures(result)` lists them.
  `result.attrs["nbllm"]` has counts, tokens, cost and elapsed time.
- Ctrl-C: in-flight requests are cancelled and `MapInterrupted` (a
  KeyboardInterrupt) is raised; its `.partial` is the Series with every finished
  result, the unfinished ones marked `Failed(kind="interrupted")`. `last_partial()`
  returns the same Series afterwards, for a notebook cell that was interrupted.
- Progress: `tqdm.auto` (a widget bar in notebooks, a text bar in terminals).
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import bridge
from .calls import check_options
from .errors import ConfigurationError
from .registry import get_registry

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["map", "map_async", "Failed", "MapInterrupted", "failures", "last_partial", "render"]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{value\}|\{\}")


@dataclass(frozen=True)
class Failed:
    """An input whose answer could not be had: what went wrong, after how many attempts.

    `kind`: "error" (the provider failed), "missing" (the input was None/NaN; nothing
    was sent) or "interrupted" (Ctrl-C came first). Falsy, so `result[result.map(bool)]`
    keeps the answers.
    """

    error: str
    attempts: int = 0
    kind: str = "error"

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"<failed: {self.error}>"

    __repr__ = __str__


class MapInterrupted(KeyboardInterrupt):
    """Ctrl-C during `map`; `.partial` holds every finished result, in input order."""

    def __init__(self, partial: "pd.Series"):
        done = int(sum(1 for v in partial if not (isinstance(v, Failed) and v.kind == "interrupted")))
        super().__init__(f"nbllm.map interrupted: {done} of {len(partial)} finished; "
                         "get them from this exception's .partial or nbllm.batch.last_partial()")
        self.partial = partial


_last_partial: "pd.Series | None" = None


def last_partial() -> "pd.Series | None":
    """The partial result of the last interrupted `map` (None if none was interrupted)."""
    return _last_partial


def render(template: str, value: Any) -> str:
    """The prompt for one value: `{value}`/`{}` replaced, `{{`/`}}` made single, the rest untouched."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        return {"{{": "{", "}}": "}"}.get(token, str(value))

    return _PLACEHOLDER.sub(substitute, template)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return isinstance(value, float) and math.isnan(value) or value is getattr(_pd(), "NA", object())
    except Exception:
        return False


def _pd() -> Any:
    import pandas as pd

    return pd


# ---- retry policy --------------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it (ModelError keeps the SDK error as __context__)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def retry_delay(exc: BaseException, attempt: int, backoff: float, max_wait: float) -> float | None:
    """Seconds to wait before trying again, or None if this failure is not worth retrying."""
    from pydantic_ai.exceptions import (
        ModelAPIError, ModelConnectionError, ModelHTTPError, ModelRateLimitError, ModelRequestTimeout,
        ModelServerError, ModelUnavailableError,
    )

    retryable = False
    retry_after: float | None = None
    for error in _chain(exc):
        if isinstance(error, (ModelRateLimitError, ModelServerError, ModelUnavailableError, ModelConnectionError,
                              ModelRequestTimeout)):
            retryable = True
        elif isinstance(error, ModelHTTPError):
            retryable = error.status_code == 429 or error.status_code >= 500
        elif isinstance(error, ModelAPIError):
            retryable = False
        else:
            continue
        retry_after = getattr(error, "retry_after", None)
        if retry_after is None and isinstance(error, ModelHTTPError) and error.headers:
            retry_after = _parse_retry_after(error.headers.get("retry-after"))
        break
    else:  # no pydantic-ai error in the chain: only plain timeouts are worth a retry
        retryable = any(isinstance(e, (TimeoutError, asyncio.TimeoutError)) for e in _chain(exc))
    if not retryable:
        return None
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, max_wait)
    return min(backoff * (2 ** attempt) * (0.5 + random.random()), max_wait)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


# ---- the run ------------------------------------------------------------------------------


@dataclass
class _Plan:
    prompts: list[str | None]  # None: a missing input, not sent
    provider: str
    model: str
    retries: int
    concurrency: int
    backoff: float
    max_wait: float
    options: dict[str, Any]


async def _attempts(plan: _Plan, prompt: str) -> Any:
    """An Answer, or Failed (with the attempts made), for one prompt; retries what is worth retrying."""
    from .calls import Request, _ask

    attempt = 0
    while True:
        attempt += 1
        try:
            request = Request(prompt=prompt, provider=plan.provider or None, model=plan.model or None, max_retries=0,
                              **plan.options)
            return await _ask(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = retry_delay(exc, attempt - 1, plan.backoff, plan.max_wait) if attempt <= plan.retries else None
            if delay is None:
                return Failed(str(exc) or type(exc).__name__, attempt)
            await asyncio.sleep(delay)


async def _results(plan: _Plan) -> AsyncIterator[tuple[int, Any]]:
    """Yield (position, Answer | Failed) as inputs finish; runs on nbllm's loop."""
    done: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    positions = iter(range(len(plan.prompts)))

    async def worker() -> None:
        for position in positions:  # a shared iterator: each position is taken once
            prompt = plan.prompts[position]
            if prompt is None:
                await done.put((position, Failed("the input is missing (None/NaN); nothing was sent", 0, "missing")))
                continue
            await done.put((position, await _attempts(plan, prompt)))

    workers = [asyncio.ensure_future(worker()) for _ in range(min(plan.concurrency, len(plan.prompts)) or 1)]
    try:
        for _ in range(len(plan.prompts)):
            yield await done.get()
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


def _plan(values: Any, template: str, provider: str | None, concurrency: int, retries: int | None,
          backoff: float, max_wait: float, options: dict[str, Any]) -> tuple[_Plan, Any]:
    """Check the arguments (one clear error each, before anything is sent) and render the prompts."""
    pd = _pd()
    if isinstance(values, pd.Series):
        index = values.index
        items = list(values)
    elif hasattr(values, "__iter__") and not isinstance(values, (str, bytes, dict)):
        items = list(values)
        index = pd.RangeIndex(len(items))
    else:
        raise ConfigurationError(f"map() takes a list or a pandas Series of values, not {type(values).__name__}.")
    if not isinstance(template, str) or not _PLACEHOLDER.search(template.replace("{{", "").replace("}}", "")):
        raise ConfigurationError("The template needs a {value} (or {}) placeholder where each value goes, "
                                 "e.g. 'Summarise: {value}'. Write {{ and }} for literal braces.")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency={concurrency!r}: give a whole number of at least 1.")
    if retries is not None and (not isinstance(retries, int) or retries < 0):
        raise ConfigurationError(f"retries={retries!r}: give a whole number of at least 0, or None.")
    for name in ("chat", "max_retries"):
        if name in options:
            raise ConfigurationError(f"map() does not take {name}=: each input is its own call (use retries=).")
    check_options(options, "map")
    prompts = [None if _is_missing(v) else render(template, v) for v in items]
    plan = _Plan(prompts, provider or "", options.pop("model", None) or "", retries if retries is not None else -1,
                 concurrency, backoff, max_wait, options)
    return plan, index


async def _resolve(plan: _Plan) -> _Plan:
    """Pick the provider once, so 1,000 inputs do not probe servers 1,000 times.

    With the replay cache on, calls stay exactly as asked (like `ask`), because the
    cache is keyed on what was asked and a replay must work with no server reachable.
    """
    from .replay import for_request
    from .calls import Request
    from .session import current

    registry = get_registry()
    selection = current()
    caching = for_request(Request("", plan.provider or None, plan.model or None, cache=plan.options.get("cache")))
    if caching is None:
        choice = await registry.choose(plan.provider or selection.provider,
                                       plan.model or (selection.model if not plan.provider else None))
        if not plan.provider:
            plan.model = plan.model or choice.model  # the default's model goes with the default's provider
        plan.provider = choice.provider
        name = choice.provider
    else:
        name = caching.asked["provider"]
        if name == "auto":
            try:
                name = registry.choose_offline(name).provider
            except ConfigurationError:  # nothing configured: only the cache can answer
                name = None
    if plan.retries < 0:
        plan.retries = registry.settings(name).max_retries if name else 0
    return plan


def _series(index: Any, results: list[Any], started: float, interrupted: bool) -> "pd.Series":
    pd = _pd()
    values: list[Any] = []
    stats = {"ok": 0, "failed": 0, "interrupted": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
    for item in results:
        if item is None:
            item = Failed("interrupted before it finished", 0, "interrupted")
        if isinstance(item, Failed):
            stats["interrupted" if item.kind == "interrupted" else "failed"] += 1
            values.append(item)
            continue
        stats["ok"] += 1
        stats["input_tokens"] += item.input_tokens or 0
        stats["output_tokens"] += item.output_tokens or 0
        stats["cost_usd"] += item.cost_usd or 0.0
        values.append(item.text)
    series = pd.Series(values, index=index, dtype=object, name="answer")
    series.attrs["nbllm"] = {**stats, "elapsed_s": round(time.perf_counter() - started, 3),
                             "was_interrupted": interrupted}
    return series


class _Run:
    """The bookkeeping `map` and `map_async` share: results by position, progress bar, and
    (as a context around the consuming loop) the partial Series when Ctrl-C or a cancel stops it."""

    def __init__(self, values: Any, template: str, provider: str | None, concurrency: int, retries: int | None,
                 backoff: float, max_wait: float, options: dict[str, Any], progress: bool):
        self.started = time.perf_counter()
        self.plan, self.index = _plan(values, template, provider, concurrency, retries, backoff, max_wait, options)
        self.results: list[Any] = [None] * len(self.plan.prompts)
        self.progress = progress
        self.bar: Any = None

    def add(self, position: int, result: Any) -> None:
        self.results[position] = result
        if self.bar is not None:
            self.bar.update(1)

    def series(self, interrupted: bool = False) -> "pd.Series":
        return _series(self.index, self.results, self.started, interrupted)

    def __enter__(self) -> "_Run":
        self.bar = _progress(len(self.results), self.progress)
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        global _last_partial
        if self.bar is not None:
            self.bar.close()
        if exc is None or not isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError, bridge.Cancelled)):
            return
        _last_partial = self.series(interrupted=True)
        if isinstance(exc, KeyboardInterrupt):
            raise MapInterrupted(_last_partial) from None
        # a cancelled task stays cancelled; last_partial() keeps what finished


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm
    from tqdm.notebook import tqdm as notebook_tqdm

    if issubclass(tqdm, notebook_tqdm):
        return _NotebookBar(tqdm(total=total, desc="nbllm.map", unit="prompt", display=False))
    return tqdm(total=total, desc="nbllm.map", unit="prompt")


class _NotebookBar:
    """tqdm's widget bar, shown through a display handle: a notebook saves the text the
    output had when displayed (0/N), so closing the bar rewrites it with the final count."""

    def __init__(self, bar: Any):
        from IPython.display import display

        self.bar = bar
        self.handle = display(bar.container, display_id=True)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()
        if self.handle is not None:
            self.handle.update(self.bar.container)


def map(values: Any, template: str, provider: str | None = None, concurrency: int = 8, retries: int | None = None,
        *, progress: bool = True, backoff: float = 0.5, max_wait: float = 60.0, **options: Any) -> "pd.Series":
    """Ask once per value, `concurrency` at a time; a Series of answers (or `Failed`) aligned with the input.

    `options` are those of `nbllm.ask` (model, system, temperature, max_tokens, timeout, cache).
    """
    run = _Run(values, template, provider, concurrency, retries, backoff, max_wait, options, progress)
    if run.results:
        run.plan = bridge.run(_resolve(run.plan))
        with run:
            for position, result in bridge.iterate(_results(run.plan)):
                run.add(position, result)
    return run.series()


async def map_async(values: Any, template: str, provider: str | None = None, concurrency: int = 8,
                    retries: int | None = None, *, progress: bool = True, backoff: float = 0.5,
                    max_wait: float = 60.0, **options: Any) -> "pd.Series":
    """`map` for `await`; if the task is cancelled, `last_partial()` keeps what finished."""
    run = _Run(values, template, provider, concurrency, retries, backoff, max_wait, options, progress)
    if run.results:
        run.plan = await bridge.run_async(_resolve(run.plan))
        with run:
            async for position, result in bridge.aiterate(_results(run.plan)):
                run.add(position, result)
    return run.series()


def failures(result: "pd.Series") -> "pd.DataFrame":
    """The failed inputs of a `map` result: index, kind, attempts, error."""
    pd = _pd()
    rows = [{"index": i, "kind": v.kind, "attempts": v.attempts, "error": v.error}
            for i, v in result.items() if isinstance(v, Failed)]
    return pd.DataFrame(rows, columns=["index", "kind", "attempts", "error"]).set_index("index")
