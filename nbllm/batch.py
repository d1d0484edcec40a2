"""`nbllm.map`: one prompt per value of a list or Series (or row of a DataFrame), concurrently, nothing lost.

- Template: `{value}` or `{}` stands for the value, `{index}` for the row label; `{{` /
  `}}` are literal braces; any other brace is left as it is. For a DataFrame, `{column}`
  is the row's value of that column and a name that is no column is one error before
  anything is sent (frames.py has the rules, NaN included). Values are inserted once and
  never parsed, so a value full of braces (code, JSON) is sent exactly as it is.
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
  `result.attrs["nbllm"]` has counts, tokens, cost and elapsed time: `cost_usd` sums the known
  costs of this run's answers and `unknown_cost` counts those of unknown cost (never 0 for unknown);
  a resumed job's rows from its file cost nothing now (the job's total is under `["job"]`).
- Typed results (`output_type=X`): a DataFrame with the input's index, one typed column
  per field of X (a pydantic model, dataclass or TypedDict; `output` for any other type)
  and `_error` — None, or why that row has no value (its fields are NA). Its
  `attrs["nbllm"]` has rows, ok, failed, skipped, interrupted, invalid, tokens, cost,
  elapsed and `valid_rate` (ok / rows sent). `classify` and `extract` are built on it.
- Ctrl-C: in-flight requests are cancelled and `MapInterrupted` (a
  KeyboardInterrupt) is raised; its `.partial` is the Series with every finished
  result, the unfinished ones marked `Failed(kind="interrupted")`. `last_partial()`
  returns the same Series afterwards, for a notebook cell that was interrupted.
- Progress: `tqdm.auto` (a widget bar in notebooks, a text bar in terminals), with the cost so far.
- Durable jobs (`job="name"`): every result is kept in SQLite as it arrives, and running
  the same call again sends only the inputs without a result (jobstore.py has the rules).
- Budgets (`budget=0.50`, and the kernel's `nbllm.budget`): once the budget cannot cover
  the next request nothing more is sent; the rest are `Failed(kind="budget")` and the
  finished part is returned. `dry_run=True` returns `nbllm.estimate(...)`: nothing is sent.
- Provider batches (`job="name", batch=True`): submitted through the provider's batch API, the
  call returns at once with the job's state (rows not answered yet: `Failed(kind="pending")`);
  running it again collects (batch_jobs.py has the rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import bridge, pipeline, wire
from .errors import BudgetExhausted, ConfigurationError, MapInterrupted
from .frames import ERROR, Ask as _Ask, Shape, Slot, Template, as_literal, checked_labels, frame, record_template
from .frames import rows_of as _rows, template_for as _template
from .outcomes import INTERRUPTED as _INTERRUPTED, MISSING as _MISSING, Answered, Failed, failed as _failed
from .pipeline import Call
from .retry import RetryPolicy

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["map", "map_async", "classify", "classify_async", "extract", "extract_async", "Answered", "Failed",
           "MapInterrupted", "failures", "last_partial", "render"]


_last_partial: "pd.Series | pd.DataFrame | None" = None

def last_partial() -> "pd.Series | pd.DataFrame | None":
    """The partial result of the last interrupted `map` (None if none was interrupted)."""
    return _last_partial


def render(template: str, value: Any, label: Any = None) -> str:
    """The prompt for one value: `{value}`/`{}` replaced (and `{index}` by `label`), `{{`/`}}` made single,
    the rest untouched."""
    return Template.parse(template).fill(value, label)


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
    todo: list[int] | None = None  # the positions to run (a job's stored results are not); None: all
    budget: float | None = None  # USD for this run (`nbllm.budgets.scoped`); the kernel's budget applies anyway
    stopped: Failed | None = None  # set when a budget ran out: every input not sent yet gets this
    job: Any = None  # the durable job (jobstore.Job): each whole Answer is handed to it the moment it arrives

    @property
    def positions(self) -> "list[int] | range":
        return range(len(self.prompts)) if self.todo is None else self.todo


class _Prompted:
    """`call.with_prompt(prompt)` for every input of a run, at a fraction of the cost: `dataclasses.replace`
    runs both frozen dataclasses' `__init__` again (~15 µs a prompt); only the prompt differs, so the
    instances are copied field for field (neither class has a `__post_init__` to run)."""

    def __init__(self, call: Call):
        self.call = call.with_prompt(call.prompt)  # parts and a whole table's tokens dropped, once
        self.request = self.call.request

    def __call__(self, prompt: str) -> Call:
        request = object.__new__(type(self.request))
        request.__dict__.update(self.request.__dict__, prompt=prompt)
        call = object.__new__(type(self.call))
        call.__dict__.update(self.call.__dict__, request=request)
        return call


async def _attempts(plan: _Plan, position: int, prompt: str, prompted: _Prompted) -> Any:
    """What `map` keeps of the answer (`Answered`), or Failed (with the attempts made), for one prompt;
    the pipeline retries what is worth it. A durable job gets the whole Answer (it stores provider, model
    and latency too)."""
    try:
        answer = await pipeline.answer(prompted(prompt), plan.target)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if not isinstance(exc, BudgetExhausted):
            failed = _failed(exc)
            if plan.job is not None:
                plan.job.record(position, failed)
            return failed
        message = " ".join((str(exc) or "the budget ran out").split())
        if plan.stopped is None:  # nothing more is sent: the inputs not started yet get this
            plan.stopped = Failed(f"not sent: {message}", 0, "budget", f"not sent: {message}")
        return Failed(message, 0, "budget", message)  # (a job keeps no budget row: sent on a re-run)
    if plan.job is not None:
        plan.job.record(position, answer)
    return Answered(answer)


async def _results(plan: _Plan) -> AsyncIterator[list[tuple[int, Any]]]:
    """Yield lists of (position, Answered | Failed) as inputs finish; runs on nbllm's loop.

    Lists, not items: everything finished since the consumer last looked crosses to its thread at once
    (one wake-up of the consumer per burst, not per prompt)."""
    todo = plan.positions
    positions = iter(todo)
    prompted = _Prompted(plan.call) if plan.call is not None else None
    ready: list[tuple[int, Any]] = []
    arrived = asyncio.Event()

    def done(position: int, result: Any) -> None:
        ready.append((position, result))
        arrived.set()

    pool = wire.Pool()  # the map's own connections (closed below): later asks keep a small pool

    async def worker() -> None:
        pool.use()
        for position in positions:  # a shared iterator: each position is taken once
            prompt = plan.prompts[position]
            if prompt is None:
                done(position, _MISSING)
            elif plan.stopped is not None:
                done(position, plan.stopped)
            else:
                assert prompted is not None
                done(position, await _attempts(plan, position, prompt, prompted))

    # The run's budget scope (`_run` enters it around the iteration) is in this task's context, and each
    # worker copies it.
    workers = [asyncio.ensure_future(worker()) for _ in range(min(plan.concurrency, len(todo)) or 1)]
    try:
        left = len(todo)
        while left:
            if not ready:
                arrived.clear()
                await arrived.wait()
            finished = ready[:]
            del ready[:]
            left -= len(finished)
            yield finished
    finally:
        for task in workers:
            task.cancel()
        try:
            await asyncio.gather(*workers, return_exceptions=True)
        finally:  # (also when that wait is itself cancelled)
            await pool.aclose()


def _budget_scope(limit: float | None) -> Any:
    """`nbllm.budgets.scoped(limit)` for this run, or nothing (the kernel's budget applies either way).

    Entered around the whole iteration by `_run` / `_run_async`, in the caller's context: the bridge starts
    the producer task from there, so the task (and its workers) inherit the scope, and it is closed in the
    context that opened it."""
    if limit is None:
        return contextlib.nullcontext()
    from .budgets import scoped

    return scoped(limit)


def _plan(values: Any, ask: _Ask, provider: str | None, concurrency: int, retry: RetryPolicy,
          options: dict[str, Any]) -> tuple[_Plan, Any]:
    """Check the arguments (one clear error each, before anything is sent) and render the prompts."""
    data = _rows(values, ask.where)
    template = _template(data, ask)
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency={concurrency!r}: give a whole number of at least 1.")
    if retry.retries is not None and (not isinstance(retry.retries, int) or retry.retries < 0):
        raise ConfigurationError(f"retries={retry.retries!r}: give a whole number of at least 0, or None.")
    for name in ("chat", "max_retries"):
        if name in options:
            raise ConfigurationError(f"{ask.where}() does not take {name}=: each input is its own call (use retries=).")
    if ask.output_type is not None:
        options = {**options, "output_type": ask.output_type}
    prompts, index = template.prompts(data)
    first = next((p for p in prompts if p), None)
    # Described once (options checked once), with the first real prompt; every input reuses it.
    call = pipeline.describe(first or "(no prompt)", ask.where, provider, retry, **options) if prompts else None
    return _Plan(prompts, call, concurrency), index


async def _route(plan: _Plan) -> _Plan:
    """Pick the provider once, so 1,000 inputs do not probe servers 1,000 times.

    With the replay cache on, calls stay exactly as asked (like `ask`): a replay must
    work with no server reachable, so routing waits until an input misses the cache. A
    fallback chain is routed per input (links known to be down are skipped without a request).
    """
    if plan.call is not None and plan.call.cache_mode == "off" and plan.call.route is None \
            and any(plan.prompts[p] is not None for p in plan.positions):  # a chain is routed per input
        plan.target = await pipeline.route(plan.call)
    return plan


_SKIP = {"missing": "skipped", "interrupted": "interrupted", "budget": "budget", "pending": "pending"}


def _tally(results: list[Any], stored: "Collection[int]" = ()) -> tuple[list[Any], dict[str, Any]]:
    """Each input's answer or `Failed` (an unfinished one: interrupted), and the counts, tokens and cost.

    `cost_usd` is what this run's results are known to cost (the positions in `stored` came from a job's
    file: they cost nothing now) and `unknown_cost` how many of them have no known cost — never 0 for unknown.
    """
    stats = {"rows": len(results), "ok": 0, "failed": 0, "skipped": 0, "interrupted": 0, "budget": 0, "pending": 0,
             "invalid": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "unknown_cost": 0}
    items = []
    for position, item in enumerate(results):
        item = _INTERRUPTED if item is None else item
        if isinstance(item, Failed):
            stats[_SKIP.get(item.kind, "failed")] += 1
            stats["invalid"] += item.kind == "invalid"
        else:
            stats["ok"] += 1
        stats["input_tokens"] += item.input_tokens or 0
        stats["output_tokens"] += item.output_tokens or 0
        items.append(item)
    stats["cost_usd"], stats["unknown_cost"] = _costs(item for position, item in enumerate(items)
                                                     if position not in stored)
    return items, stats


def _costs(results: "Iterable[Any]") -> tuple[float, int]:
    """The sum of the known costs of `results` (answers and `Failed`), and how many have no known cost."""
    known, unknown = 0.0, 0
    for item in results:
        if item.cost_usd is None:
            unknown += 1
        else:
            known += item.cost_usd
    return known, unknown


def _series(index: Any, results: list[Any], started: float, interrupted: bool,
            stored: "Collection[int]" = ()) -> "pd.Series":
    pd = _pd()
    items, stats = _tally(results, stored)
    values = [item if isinstance(item, Failed) else item.text for item in items]
    series = pd.Series(values, index=index, dtype=object, name="answer")
    counts = {key: stats[key] for key in ("ok", "failed", "interrupted", "budget", "pending", "input_tokens",
                                          "output_tokens")}
    counts["failed"] += stats["skipped"]  # a text map counts a skipped (missing) input among the failed
    series.attrs["nbllm"] = {**counts, "cost_usd": stats["cost_usd"], "unknown_cost": stats["unknown_cost"],
                             "elapsed_s": round(time.perf_counter() - started, 3), "was_interrupted": interrupted}
    return series


def _typed(shape: Shape, index: Any, results: list[Any], started: float, interrupted: bool,
           stored: "Collection[int]" = ()) -> "pd.DataFrame":
    """A typed run's DataFrame: the fields of each answer in its row, NA and `_error` where there is none."""
    items, stats = _tally(results, stored)
    outputs = [None if isinstance(item, Failed) else item.output for item in items]
    errors = [(item.reason or item.error) if isinstance(item, Failed) else None for item in items]
    result = frame(shape, index, outputs, errors)
    sent = stats["ok"] + stats["failed"]
    result.attrs["nbllm"] = {**stats, "cost_usd": round(stats["cost_usd"], 6),
                             "elapsed_s": round(time.perf_counter() - started, 3),
                             "valid_rate": round(stats["ok"] / sent, 4) if sent else None,
                             "was_interrupted": interrupted}
    return result


def _labelled(typed: "pd.DataFrame") -> "pd.Series":
    """classify's result: the label column alone (Categorical), its failures listed in attrs."""
    series = typed["output"].rename("label")
    errors = typed[ERROR]
    failed = errors.notna()
    series.attrs["nbllm"] = {**typed.attrs["nbllm"],
                             "errors": list(zip(errors.index[failed], errors[failed]))}
    return series


@dataclass(frozen=True)
class _Durable:
    """A run's job options (`job=`, `restart=`, `retry_failed=`, `batch=`) and its budget (`budget=`), checked once."""

    job: str | None = None
    restart: bool = False
    retry_failed: bool = False
    budget: float | None = None
    batch: bool = False

    def __post_init__(self) -> None:
        if self.batch and self.job is None:
            from .batch_jobs import NEEDS_JOB

            raise ConfigurationError(NEEDS_JOB + ".")
        if self.job is None and (self.restart or self.retry_failed):
            flag = "restart=True" if self.restart else "retry_failed=True"
            raise ConfigurationError(f"{flag} works on a durable job: give it one with job='name'.")
        if self.budget is not None:
            from .budgets import check_limit

            check_limit(self.budget)


class _Run:
    """The bookkeeping `map` and `map_async` share: results by position, progress bar, and
    (as a context around the consuming loop) the partial result when Ctrl-C or a cancel stops it."""

    def __init__(self, values: Any, ask: _Ask, provider: str | None, concurrency: int, retry: RetryPolicy,
                 options: dict[str, Any], progress: bool, durable: _Durable = _Durable()):
        self.started = time.perf_counter()
        self.ask = ask
        self.shape = ask.shape  # a type that cannot be columns: one error before anything is sent
        self.plan, self.index = _plan(values, ask, provider, concurrency, retry, options)
        self.plan.budget = durable.budget
        self.results: list[Any] = [None] * len(self.plan.prompts)
        self.progress = progress
        self.bar: Any = None
        self.cost: float | None = None
        self.unknown = 0
        """This run's known cost so far (None until one is known) and how many answers had no known cost."""
        self.job: Any = None
        if not durable.batch:  # a batch job opens its job once the provider is known (batch_jobs.py)
            self.open_job(durable)

    def open_job(self, durable: _Durable) -> None:
        """Open the run's durable job (if any): the fingerprint checked, the stored results loaded."""
        if durable.job is None or self.plan.call is None:
            return
        from . import jobstore

        self.job = jobstore.start(durable.job, self.plan.call, self.ask.template, self.ask.output_type,
                                  self.plan.prompts, durable.restart, durable.retry_failed)
        if self.job.dropped_batches and not durable.batch:  # restart=True: the old batches stop first
            from .provider_batches import cancel_open, notice

            for line in cancel_open(self.job.dropped_batches):
                notice(f"job {self.job.name!r}: {line}")
        open_ = [b["ticket"]["batch_id"] for b in self.job.batches if not b.get("collected")]
        if open_ and not durable.batch:
            raise ConfigurationError(f"Job {self.job.name!r} has batch {', '.join(open_)} open at "
                                     f"{self.job.batches[-1]['ticket']['provider']}: run it with batch=True to "
                                     "collect, or restart=True to cancel it and start over.")
        self.plan.job = self.job
        for position, stored in self.job.stored.items():
            # from the file: costs nothing now (the bar counts this run)
            self.results[position] = stored if isinstance(stored, Failed) else Answered(stored)
        self.plan.todo = [p for p, r in enumerate(self.results) if r is None]

    @property
    def todo(self) -> int:
        """How many inputs this run still has to finish (sent, or missing)."""
        return len(self.plan.positions)

    def _count(self, result: Any) -> None:
        """The cost so far, for the bar (None until some answer's cost is known; a failure's 0 says nothing;
        an unknown cost is counted apart, never as 0)."""
        cost = result.cost_usd
        if cost is None:
            self.unknown += 1
        elif cost or not isinstance(result, Failed):
            self.cost = (self.cost or 0.0) + cost

    def add_all(self, finished: list[tuple[int, Any]]) -> None:
        """Results that arrived together: kept, handed to the job, counted; the bar moves once."""
        results = self.results
        for position, result in finished:  # (a job got each result as it arrived: `_attempts`)
            results[position] = result
            self._count(result)
        if self.bar is not None:
            postfix = _postfix(self.cost, self.unknown)
            if postfix is not None:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(len(finished))

    def result(self, interrupted: bool = False) -> "pd.Series | pd.DataFrame":
        """The Series/DataFrame a fresh run returns; `cost_usd` is this run's, a job's total is under "job"."""
        stored = self.job.stored if self.job is not None else ()
        if self.shape is None:
            result = _series(self.index, self.results, self.started, interrupted, stored)
        else:
            typed = _typed(self.shape, self.index, self.results, self.started, interrupted, stored)
            result = _labelled(typed) if self.ask.labels else typed
        if self.job is not None:
            total, unknown = _costs(_INTERRUPTED if r is None else r for r in self.results)
            result.attrs["nbllm"]["job"] = {"name": self.job.name, "stored": len(self.job.stored),
                                            "kept_failures": self.job.kept_failures,
                                            "cost_usd": round(total, 6), "unknown_cost": unknown}
        return result

    def __enter__(self) -> "_Run":
        self.bar = _progress(len(self.results), self.progress, f"nbllm.{self.ask.where}",
                             len(self.results) - self.todo, self.cost)
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        global _last_partial
        if self.bar is not None:
            self.bar.close()
        if self.job is not None:
            self.job.finish()  # what arrived is in the file before the cell ends (or Ctrl-C surfaces)
        if exc is None or not isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError, bridge.Cancelled)):
            return
        _last_partial = self.result(interrupted=True)
        if isinstance(exc, KeyboardInterrupt):
            stopped = MapInterrupted([_INTERRUPTED if r is None else r for r in self.results])  # counts per row
            stopped.partial = _last_partial
            raise stopped from None
        # a cancelled task stays cancelled; last_partial() keeps what finished


def _progress(total: int, enabled: bool, desc: str = "nbllm.map", initial: int = 0, cost: float | None = None) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm
    from tqdm.notebook import tqdm as notebook_tqdm

    postfix = _postfix(cost, 0)
    if issubclass(tqdm, notebook_tqdm):
        return _NotebookBar(tqdm(total=total, desc=desc, unit="prompt", display=False, initial=initial,
                                 postfix=postfix))
    return tqdm(total=total, desc=desc, unit="prompt", initial=initial, postfix=postfix)


def _postfix(cost: float | None, unknown: int) -> str | None:
    """The bar's cost so far: "$0.0123", "+?" added when some answers' cost is unknown (None: nothing yet)."""
    if cost is None and not unknown:
        return None
    return f"${cost or 0.0:.4f}" + ("+?" if unknown else "")


class _NotebookBar:
    """tqdm's widget bar, shown through a display handle: a notebook saves the text the
    output had when displayed (0/N), so closing the bar rewrites it with the final count."""

    def __init__(self, bar: Any):
        from IPython.display import display

        self.bar = bar
        self.handle = display(bar.container, display_id=True)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.bar.set_postfix_str(text, refresh=refresh)

    def close(self) -> None:
        self.bar.close()
        if self.handle is not None:
            self.handle.update(self.bar.container)


def _run(values: Any, ask: _Ask, provider: str | None, concurrency: int, retries: int | None, progress: bool,
         backoff: float, max_wait: float, options: dict[str, Any], durable: _Durable = _Durable()) -> Any:
    run = _Run(values, ask, provider, concurrency, RetryPolicy(retries, backoff, max_wait), options, progress, durable)
    if durable.batch:
        from . import batch_jobs

        return batch_jobs.run(run, durable)
    if run.todo:  # a finished job is answered from its store: nothing is routed or sent
        run.plan = bridge.run(_route(run.plan))
        with run, _budget_scope(run.plan.budget):
            for finished in bridge.iterate(_results(run.plan)):
                run.add_all(finished)
    return run.result()


async def _run_async(values: Any, ask: _Ask, provider: str | None, concurrency: int, retries: int | None,
                     progress: bool, backoff: float, max_wait: float, options: dict[str, Any],
                     durable: _Durable = _Durable()) -> Any:
    run = _Run(values, ask, provider, concurrency, RetryPolicy(retries, backoff, max_wait), options, progress, durable)
    if durable.batch:
        from . import batch_jobs

        return await batch_jobs.run_async(run, durable)
    if run.todo:
        run.plan = await bridge.run_async(_route(run.plan))
        with run, _budget_scope(run.plan.budget):
            async for finished in bridge.aiterate(_results(run.plan)):
                run.add_all(finished)
    return run.result()


def _estimate(values: Any, template: str, provider: str | None, output_type: Any, options: dict[str, Any]) -> Any:
    """`map(..., dry_run=True)`: what the run would cost (`nbllm.estimate`); nothing is sent."""
    from .estimates import estimate

    return estimate(values, template, provider, output_type=output_type, **options)


def map(values: Any, template: str, provider: str | None = None, concurrency: int = 8, retries: int | None = None,
        *, progress: bool = True, backoff: float = 0.5, max_wait: float = 60.0, output_type: Any = None,
        job: str | None = None, restart: bool = False, retry_failed: bool = False, budget: float | None = None,
        dry_run: bool = False, batch: bool = False, **options: Any) -> "pd.Series | pd.DataFrame":
    """Ask once per value (or DataFrame row), `concurrency` at a time, aligned with the input.

    Without `output_type`: a Series of answers (or `Failed`). With it: a DataFrame of typed
    columns plus `_error` (see the module docstring). `options` are those of `nbllm.ask`
    (model, system, temperature, max_tokens, timeout, cache).

    `job="name"` keeps every result in SQLite as it arrives: the same call run again (after
    Ctrl-C, a restart or a crash) sends only the inputs without a result; `restart=True`
    starts the job over, `retry_failed=True` sends its failed inputs again. `budget=0.50`
    stops sending once 50 cents cannot cover the next request. `dry_run=True` returns the
    estimate (`nbllm.estimate`) instead; nothing is sent.

    `batch=True` (with `job=`) sends the inputs through the provider's batch API (half price at
    OpenAI and Anthropic, results within 24 h) and returns at once: rows not answered yet are
    `Failed(kind="pending")`; run the cell again to collect (batch_jobs.py has the rules).
    """
    if dry_run:
        return _estimate(values, template, provider, output_type, options)
    return _run(values, _Ask("map", template, output_type), provider, concurrency, retries, progress, backoff,
                max_wait, options, _Durable(job, restart, retry_failed, budget, batch))


async def map_async(values: Any, template: str, provider: str | None = None, concurrency: int = 8,
                    retries: int | None = None, *, progress: bool = True, backoff: float = 0.5,
                    max_wait: float = 60.0, output_type: Any = None, job: str | None = None, restart: bool = False,
                    retry_failed: bool = False, budget: float | None = None, dry_run: bool = False,
                    batch: bool = False, **options: Any) -> "pd.Series | pd.DataFrame":
    """`map` for `await`; if the task is cancelled, `last_partial()` keeps what finished (and a job what arrived)."""
    if dry_run:
        from .estimates import estimate_async

        return await estimate_async(values, template, provider, output_type=output_type, **options)
    return await _run_async(values, _Ask("map", template, output_type), provider, concurrency, retries, progress,
                            backoff, max_wait, options, _Durable(job, restart, retry_failed, budget, batch))


# ---- classify and extract -----------------------------------------------------------------------


def _classify_ask(data: Any, labels: Any, template: str | None) -> _Ask:
    labels = checked_labels(labels)
    if template is None:
        template = _default(data, lambda kind: f"Classify this {kind} as exactly one of: {', '.join(labels)}.")
    return _Ask("classify", template, as_literal(labels), tuple(labels))


def _extract_ask(data: Any, output_type: Any, template: str | None) -> _Ask:
    shape = Shape.of(output_type) if output_type is not None else None
    if shape is None or not shape.structured:
        raise ConfigurationError(f"extract() takes a pydantic model, a dataclass or a TypedDict, not {output_type!r}; "
                                 "for one value per row use map(..., output_type=...).")
    if template is None:
        template = _default(data, lambda kind: f"Extract the fields of {output_type.__name__} from this {kind}.")
    return _Ask("extract", template, output_type, shape=shape)


def _default(data: Any, instruction: Callable[[str], str]) -> Template:
    """The template when none is given: the text itself for a Series, every column as `name: value` for a DataFrame
    (built as parts, so braces in labels or column names are never read as placeholders)."""
    if isinstance(data, _pd().DataFrame):
        return record_template(list(data.columns), instruction("record"))
    return Template((instruction("text") + "\n\n", Slot("value")))


def classify(values: Any, labels: Any, template: str | None = None, provider: str | None = None,
             concurrency: int = 8, retries: int | None = None, *, progress: bool = True, backoff: float = 0.5,
             max_wait: float = 60.0, **options: Any) -> "pd.Series":
    """One of `labels` per value (or DataFrame row): a Categorical Series with exactly those categories.

    An answer outside the labels is a failure (NA), never a new label; `attrs["nbllm"]["errors"]`
    lists each failed row as (label, reason), `failures(result)` as a table. Without a template a
    Series value is sent after "Classify this text as exactly one of: …", a DataFrame row as
    `name: value` lines; a template of your own may use `{labels}` (the labels, comma-separated).
    """
    values = _rows(values, "classify")  # once: an iterator is read once, for the default template and the run
    return _run(values, _classify_ask(values, labels, template), provider, concurrency, retries, progress, backoff,
                max_wait, options)


async def classify_async(values: Any, labels: Any, template: str | None = None, provider: str | None = None,
                         concurrency: int = 8, retries: int | None = None, *, progress: bool = True,
                         backoff: float = 0.5, max_wait: float = 60.0, **options: Any) -> "pd.Series":
    """`classify` for `await`."""
    values = _rows(values, "classify")
    return await _run_async(values, _classify_ask(values, labels, template), provider, concurrency, retries,
                            progress, backoff, max_wait, options)


def extract(values: Any, output_type: Any, template: str | None = None, provider: str | None = None,
            concurrency: int = 8, retries: int | None = None, *, progress: bool = True, backoff: float = 0.5,
            max_wait: float = 60.0, **options: Any) -> "pd.DataFrame":
    """The fields of `output_type` (a pydantic model, dataclass or TypedDict) from each value or row:
    `map(..., output_type=...)`'s DataFrame (typed columns plus `_error`). Without a template the
    text (or every column as `name: value` lines) follows "Extract the fields of … from this …"."""
    values = _rows(values, "extract")
    return _run(values, _extract_ask(values, output_type, template), provider, concurrency, retries, progress,
                backoff, max_wait, options)


async def extract_async(values: Any, output_type: Any, template: str | None = None, provider: str | None = None,
                        concurrency: int = 8, retries: int | None = None, *, progress: bool = True,
                        backoff: float = 0.5, max_wait: float = 60.0, **options: Any) -> "pd.DataFrame":
    """`extract` for `await`."""
    values = _rows(values, "extract")
    return await _run_async(values, _extract_ask(values, output_type, template), provider, concurrency, retries,
                            progress, backoff, max_wait, options)


def failures(result: "pd.Series | pd.DataFrame") -> "pd.DataFrame":
    """The failed inputs of a result: index, kind, attempts, error for `map`'s text Series;
    index and error for a typed DataFrame (its `_error`) or a `classify` Series."""
    pd = _pd()
    if isinstance(result, pd.DataFrame) and ERROR in result.columns:
        errors = result[ERROR]
        return pd.DataFrame({"error": errors[errors.notna()]}).rename_axis("index")
    listed = result.attrs.get("nbllm", {}).get("errors") if isinstance(result, pd.Series) else None
    if listed is not None:
        return pd.DataFrame(listed, columns=["index", "error"]).set_index("index")
    rows = [{"index": i, "kind": v.kind, "attempts": v.attempts, "error": v.error}
            for i, v in result.items() if isinstance(v, Failed)]
    return pd.DataFrame(rows, columns=["index", "kind", "attempts", "error"]).set_index("index")
