"""`nbllm.map`: one prompt per value of a list or Series, concurrently, nothing lost.

- Template: `{value}` or `{}` stands for the value; `{{` / `}}` are literal braces;
  any other brace is left as it is. The value is inserted once and never parsed,
  so a value full of braces (code, JSON) is sent exactly as it is.
- Concurrency: `concurrency` workers on nbllm's loop take the inputs in order, so
  at most that many requests are in flight and memory does not grow with the input.
- Retries: each input is retried on HTTP 429 and 5xx, timeouts and replies cut off,
  by the one policy every call uses (retry.py; the SDKs' own retries are off, so
  attempts never multiply); a refused connection fails at once. `retries=None` uses
  the provider's `{P}_MAX_RETRIES`. Between attempts it waits what `Retry-After` asks
  (at most `max_wait` seconds), else `backoff * 2**attempt` with jitter (also at most
  `max_wait`).
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
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import bridge, pipeline
from .errors import ConfigurationError, MapInterrupted
from .pipeline import Call
from .retry import RetryPolicy

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


# ---- the run ------------------------------------------------------------------------------


@dataclass
class _Plan:
    prompts: list[str | None]  # None: a missing input, not sent
    call: Call | None  # the call, described once; each input is `call.with_prompt(prompt)`
    concurrency: int
    target: Any = None  # routed once (when the replay cache is off), shared by every input


async def _attempts(plan: _Plan, prompt: str) -> Any:
    """An Answer, or Failed (with the attempts made), for one prompt; the pipeline retries what is worth it."""
    assert plan.call is not None
    try:
        return await pipeline.answer(plan.call.with_prompt(prompt), plan.target)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return Failed(str(exc) or type(exc).__name__, getattr(exc, "attempts", 1))


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


def _plan(values: Any, template: str, provider: str | None, concurrency: int, retry: RetryPolicy,
          options: dict[str, Any]) -> tuple[_Plan, Any]:
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
    if retry.retries is not None and (not isinstance(retry.retries, int) or retry.retries < 0):
        raise ConfigurationError(f"retries={retry.retries!r}: give a whole number of at least 0, or None.")
    for name in ("chat", "max_retries"):
        if name in options:
            raise ConfigurationError(f"map() does not take {name}=: each input is its own call (use retries=).")
    prompts = [None if _is_missing(v) else render(template, v) for v in items]
    first = next((p for p in prompts if p), None)
    # Described once (options checked once), with the first real prompt; every input reuses it.
    call = pipeline.describe(first or template, "map", provider, retry, **options) if prompts else None
    return _Plan(prompts, call, concurrency), index


async def _route(plan: _Plan) -> _Plan:
    """Pick the provider once, so 1,000 inputs do not probe servers 1,000 times.

    With the replay cache on, calls stay exactly as asked (like `ask`): a replay must
    work with no server reachable, so routing waits until an input misses the cache. A
    fallback chain is routed per input (links known to be down are skipped without a request).
    """
    if plan.call is not None and plan.call.cache_mode == "off" and plan.call.route is None \
            and any(p is not None for p in plan.prompts):  # a chain is routed per input: a link may fail
        plan.target = await pipeline.route(plan.call)
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

    def __init__(self, values: Any, template: str, provider: str | None, concurrency: int, retry: RetryPolicy,
                 options: dict[str, Any], progress: bool):
        self.started = time.perf_counter()
        self.plan, self.index = _plan(values, template, provider, concurrency, retry, options)
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
    run = _Run(values, template, provider, concurrency, RetryPolicy(retries, backoff, max_wait), options, progress)
    if run.results:
        run.plan = bridge.run(_route(run.plan))
        with run:
            for position, result in bridge.iterate(_results(run.plan)):
                run.add(position, result)
    return run.series()


async def map_async(values: Any, template: str, provider: str | None = None, concurrency: int = 8,
                    retries: int | None = None, *, progress: bool = True, backoff: float = 0.5,
                    max_wait: float = 60.0, **options: Any) -> "pd.Series":
    """`map` for `await`; if the task is cancelled, `last_partial()` keeps what finished."""
    run = _Run(values, template, provider, concurrency, RetryPolicy(retries, backoff, max_wait), options, progress)
    if run.results:
        run.plan = await bridge.run_async(_route(run.plan))
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
