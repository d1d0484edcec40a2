"""`nbllm.map(values, template, provider=..., job="x", batch=True)`: a durable job answered through the
provider's batch API (half the price at OpenAI and Anthropic, results within 24 h). provider_batches.py
talks to the providers; this is the job's side. Every run of the cell returns at once:

1. Each batch of the job not collected yet is polled (one request). One that has ended is collected: every
   request's answer or error is stored in the job under its row (custom_id = the row's key), the batch is
   marked collected in the same transaction, then each outcome is logged once in the call log (kind
   "batch"; `nbllm.spend` counts batch costs from there).
2. The inputs with no result that are in no open batch (the first run: all of them) are submitted as one
   new batch — after `provider_batches.check` refused nothing, before anything is written — and its ticket
   is written to the job as soon as the provider accepted it.
3. The result comes back in input order: finished rows filled, the others `Failed(kind="pending")` (falsy,
   like every `Failed`; `failures(result)` lists them), `attrs["nbllm"]["job"]["batch"]` the batch id and
   state, and one line says what happened ("submitted 500 prompts as batch batch_abc to openai …"),
   unless `progress=False`.

Choices:
- A request the batch never ran (it expired after 24 h, or was cancelled at the provider) is submitted
  again, in a new batch, on the run that collects. A request the provider answered with an error tied to
  the input (a 400) is kept as `Failed` (as map keeps it: `retry_failed=True` sends it again, in a batch);
  any other error (5xx, 429, a failed batch) is shown this run and submitted again on the next.
- Budgets: the whole batch's worst case (every prompt's tokens plus max_tokens of answer, at the batch
  price: half the live price at OpenAI and Anthropic) must fit in the kernel's budget and in `budget=`
  before anything is submitted; it stays reserved until this kernel collects the batch, and then the real
  cost is charged. A batch cannot be stopped half way, so when it does not fit nothing is submitted and
  its inputs are `Failed(kind="budget")`; a model whose price is unknown is refused under a budget.
- Rows are keyed as the job keys them (a hash of the prompt), so rows may be appended or reordered between
  runs; a row added while a batch runs goes into a batch of its own.
- A kernel restart between submit and collect loses nothing: the ticket (no key in it) is in SQLite. Only
  a crash in the instant between the provider's reply to the submit and that write would leave a batch the
  job does not know (a re-run would then submit those rows again); Ctrl-C does not (that step is shielded).
- The same job run without batch=True while a batch is open is refused (its rows would be answered twice);
  `restart=True` and `nbllm.jobs.drop(name)` cancel the open batches first, best effort, and say so.
- One provider per batch: a fallback chain is refused; the replay cache is not consulted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from . import bridge, jobstore, pipeline, provider_batches
from .outcomes import MISSING as _MISSING, Failed, failed as _failed
from .errors import BudgetExhausted, ConfigurationError, NotRun
from .provider_batches import BatchTicket, cancel_record, notice
from .request import Answer

if TYPE_CHECKING:
    import pandas as pd

    from .request import Call, Target

__all__ = ["PENDING", "run", "run_async", "custom_id"]

Run = Any
"""`batch._Run`, the map run this works for (named loosely: `batch` calls in here, never the other way)."""
Durable = Any
"""`batch._Durable`, the job options of that run."""

PENDING = "pending"
"""`Failed.kind` of a row submitted in a batch that has not been collected yet."""
NEEDS_JOB = "batch=True needs job= (the batch id is kept in the job, so a restart loses nothing)"

_holds: dict[tuple[str, str], Any] = {}
"""(job, batch id) → the budgets' reservation of a batch this kernel submitted, until it collects it."""


def custom_id(key: str) -> str:
    """A job row's key as a batch custom_id (`#` is not allowed there; the rest is hex)."""
    return key.replace("#", "-")


# ---- one run ---------------------------------------------------------------------------------------


def run(state: Run, durable: Durable) -> "pd.Series | pd.DataFrame":
    """`map(..., batch=True)`: collect what has ended, submit what is left, return the job's state at once."""
    lines = bridge.run(_go(state, durable))
    return _finish(state, lines)


async def run_async(state: Run, durable: Durable) -> "pd.Series | pd.DataFrame":
    lines = await bridge.run_async(_go(state, durable))
    return _finish(state, lines)


async def _go(state: Run, durable: Durable) -> list[str]:
    call = state.plan.call
    if call is None:  # no input: nothing to submit
        return []
    if call.route is not None:
        raise ConfigurationError(f"batch=True sends every input to one provider, and {call.asked or call.provider!r} "
                                 "is a fallback chain: name one provider.")
    target = await pipeline.route(call)
    keys = jobstore.input_keys(state.plan.prompts)
    prompts = {custom_id(k): p for k, p in zip(keys, state.plan.prompts) if k is not None and p is not None}
    provider_batches.check(call, target, prompts or None)  # before anything is written
    state.open_job(durable)  # the fingerprint checked, the stored results loaded
    job = state.job
    lines = [await cancel_record(record) for record in job.dropped_batches]
    lines += await _collect(state, call, target)
    waiting = _open_keys(job.batches)
    todo = []
    for position in range(len(state.results)):
        if state.results[position] is not None:
            continue
        if state.plan.prompts[position] is None:
            state.results[position] = _MISSING
        elif job.keys[position] not in waiting:
            todo.append(position)
    if todo:
        submitting = asyncio.ensure_future(_submit(state, call, target, todo, durable.budget))
        lines.append(await asyncio.shield(submitting))  # Ctrl-C here must not lose the ticket of a batch made
    _mark_pending(state)
    return lines


def _pruned(batches: list[dict[str, Any]], keep: int = 10) -> list[dict[str, Any]]:
    """The open batches and the last `keep` collected ones (older ones only fill the job's row)."""
    collected = [b for b in batches if b.get("collected")][-keep:]
    return [b for b in batches if not b.get("collected") or b in collected]


def _open_keys(batches: list[dict[str, Any]]) -> set[str]:
    return {key for record in batches if not record.get("collected") for key in record["keys"]}


def _mark_pending(state: Run) -> None:
    """Each row still waiting in an open batch: `Failed(kind="pending")` naming the batch."""
    job = state.job
    where = {key: record for record in job.batches if not record.get("collected") for key in record["keys"]}
    for position, result in enumerate(state.results):
        record = where.get(job.keys[position]) if result is None else None
        if record is not None:
            ticket = record["ticket"]
            message = (f"waiting in batch {ticket['batch_id']} at {ticket['provider']} ({record['state']}): "
                       "run the cell again to collect")
            state.results[position] = Failed(message, 0, PENDING, message)


# ---- collect ------------------------------------------------------------------------------------------


async def _collect(state: Run, call: "Call", target: "Target") -> list[str]:
    """Poll the job's open batches; store, log and settle the ones that have ended. One line per batch."""
    job = state.job
    position_of = {key: position for position, key in enumerate(job.keys) if key is not None}
    lines = []
    polled = False
    for record in job.batches:
        if record.get("collected"):
            continue
        ticket = BatchTicket.from_dict(record["ticket"])
        status = await provider_batches.status(ticket)
        record.update(state=status.state, done=status.done, failed=status.failed, checked=time.time())
        if not status.ended:
            polled = True
            lines.append(f"batch {ticket.batch_id} at {ticket.provider}: {status.state}, {status.done:,} of "
                         f"{status.total:,} done, {status.failed:,} failed; run this cell again to collect")
            continue
        outcomes = await provider_batches.collect(ticket, call)
        key_of = {custom_id(key): key for key in record["keys"]}
        stored: list[tuple[str, int | None, Any, Any]] = []
        again = 0
        for cid, outcome in outcomes.items():
            key = key_of.get(cid)
            if key is None:
                continue
            if isinstance(outcome, NotRun):  # never ran: no result, so it is submitted again below
                again += 1
                continue
            result = outcome if isinstance(outcome, Answer) else _failed(outcome)
            stored.append((key, position_of.get(key), result, outcome))
        record["collected"] = time.time()
        jobstore.save_batches(job, job.batches, [(k, p, r) for k, p, r, _ in stored])
        for key, position, result, outcome in stored:
            if position is not None:
                state.results[position] = result
            _log(call, target, ticket, state.plan.prompts[position] if position is not None else None, outcome)
        _settle(job.name, ticket.batch_id, [o for *_, o in stored])
        answered = sum(isinstance(o, Answer) for *_, o in stored)
        line = (f"collected batch {ticket.batch_id} from {ticket.provider} ({status.state}): {answered:,} answered, "
                f"{len(stored) - answered:,} failed")
        lines.append(line + (f", {again:,} never ran and are submitted again" if again else ""))
    if polled:  # the last known state, for nbllm.jobs()
        jobstore.save_batches(job, job.batches)
    return lines


def _log(call: "Call", target: "Target", ticket: BatchTicket, prompt: str | None, outcome: Any) -> None:
    """One call-log row per collected request, as the pipeline writes a live call's."""
    from . import calllog

    logged = dataclasses.replace(call.with_prompt(prompt if prompt is not None else f"(batch {ticket.batch_id})"),
                                 kind="batch")
    if not isinstance(outcome, Answer):
        outcome = Answer(getattr(outcome, "text", "") or "", ticket.provider, ticket.model, 0.0,
                         getattr(outcome, "input_tokens", None), getattr(outcome, "output_tokens", None),
                         error=str(outcome), cost_usd=getattr(outcome, "cost_usd", None))
    calllog.record(logged, outcome, call.request.numbers(target.settings))


def _settle(job: str, batch_id: str, outcomes: list[Any]) -> None:
    """This kernel's budget reservation for the batch becomes what it cost (its worst case if unknown)."""
    hold = _holds.pop((job, batch_id), None)
    if hold is None:
        return
    total = 0.0
    for outcome in outcomes:
        cost = getattr(outcome, "cost_usd", None)
        if cost is None and isinstance(outcome, Answer):  # an answer of unknown cost: its worst case stays spent
            hold.settle(None)
            return
        total += cost or 0.0
    hold.settle(total)


# ---- submit -------------------------------------------------------------------------------------------


async def _submit(state: Run, call: "Call", target: "Target", todo: list[int], limit: float | None) -> str:
    job = state.job
    chosen = {custom_id(job.keys[p]): state.plan.prompts[p] for p in todo}
    protocol = provider_batches.protocol_for(target)
    try:
        hold = _reserve(call, target, list(chosen.values()), limit, protocol)
    except BudgetExhausted as exc:
        message = f"not submitted: {' '.join(str(exc).split())}"
        for position in todo:
            state.results[position] = Failed(message, 0, "budget", message)
        return message
    try:
        ticket = await provider_batches.submit(call, target, chosen)
    except BaseException:
        for each in hold.budgets if hold is not None else ():
            each.release(hold.amount)  # nothing was submitted: give the reservation back
        raise
    job.batches[:] = _pruned(job.batches)
    job.batches.append({"ticket": ticket.to_dict(), "keys": [job.keys[p] for p in todo], "state": "submitted",
                        "done": 0, "failed": 0, "submitted": ticket.submitted_at, "collected": None})
    jobstore.save_batches(job, job.batches)
    if hold is not None:
        _holds[(job.name, ticket.batch_id)] = hold
    price = ", half price" if protocol != "openai-files" else ""
    return (f"submitted {len(chosen):,} prompts as batch {ticket.batch_id} to {target.provider} (results within "
            f"24 h{price}); run this cell again to collect")


def _reserve(call: "Call", target: "Target", prompts: list[str], limit: float | None, protocol: str) -> Any:
    """Reserve the whole batch's worst case (at the batch price) in every budget in force; BudgetExhausted
    when one cannot cover it (nothing is taken then: nothing was submitted)."""
    from . import budgets

    in_force = [b for b in (budgets.budget(), budgets.Budget(limit, "budget") if limit is not None else None) if b]
    if not in_force:
        return None
    what = f"{target.provider}:{target.model}"
    amount = 0.0
    for prompt in prompts:
        worst, _, _ = budgets.worst_case(call.with_prompt(prompt), target)
        if worst is None:
            raise BudgetExhausted(f"{what} has no known price, so the {in_force[0].label} cannot bound this batch. "
                                  f"Declare {target.spec.env_prefix}_PRICE_INPUT and _PRICE_OUTPUT (USD per million "
                                  "tokens), or submit without a budget.")
        amount += worst
    if protocol != "openai-files":
        amount *= provider_batches.BATCH_DISCOUNT
    taken: list[Any] = []
    for each in in_force:
        if not each.take(amount):
            for done in taken:  # give back what the others reserved
                done.release(amount)
            raise BudgetExhausted(f"the {each.label} of ${each.limit:.2f} has ${each.left:.4f} left and this batch of "
                                  f"{len(prompts):,} prompts may cost up to ${amount:.4f} ({what}, batch price). "
                                  "Raise the budget, lower max_tokens or submit fewer rows.")
        taken.append(each)
    return budgets.Hold(tuple(taken), amount)


# ---- cancel ------------------------------------------------------------------------------------------


# ---- the result --------------------------------------------------------------------------------------


def _summary(record: dict[str, Any], pending: int) -> dict[str, Any]:
    ticket = record["ticket"]
    return {"id": ticket["batch_id"], "provider": ticket["provider"], "state": record.get("state"),
            "done": record.get("done", 0), "failed": record.get("failed", 0), "total": ticket["total"],
            "collected": bool(record.get("collected")), "pending": pending}


def _finish(state: Run, lines: list[str]) -> "pd.Series | pd.DataFrame":
    result = state.result()
    if state.job is not None:
        pending_in: dict[str, int] = {}
        where = {key: record["ticket"]["batch_id"] for record in state.job.batches if not record.get("collected")
                 for key in record["keys"]}
        for position, item in enumerate(state.results):
            if isinstance(item, Failed) and item.kind == PENDING:
                batch_id = where[state.job.keys[position]]
                pending_in[batch_id] = pending_in.get(batch_id, 0) + 1
        summaries = [_summary(r, pending_in.get(r["ticket"]["batch_id"], 0)) for r in state.job.batches]
        info = result.attrs["nbllm"]["job"]
        open_ = [s for s in summaries if not s["collected"]]
        info["batch"] = (open_ or summaries or [None])[-1]
        info["batches"] = summaries
    if state.progress:
        for line in lines:
            notice(line)
    return result
