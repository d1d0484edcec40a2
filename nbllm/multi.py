"""Many providers at once: `compare` (a side-by-side table) and weighted `consensus`.

Both ask every *available* provider (health-checked concurrently through the
registry) or the ones named, all at once on nbllm's loop, so the wall time is
about the slowest provider's, not the sum. A provider that fails or times out is
a row with its error; it never turns the whole call into an exception.

Consensus normalises each answer (see `normalise`), gives each distinct answer
the sum of the `{P}_WEIGHT`s of the providers that gave it, and picks the
heaviest. `confidence` is the winning weight divided by the weight of the
providers that *answered* (agreement among answers); `confidence_asked` divides
by the weight of all providers *asked*, so every failure or timeout lowers it.
With no answer at all the result has `decision=None`, both confidences 0 and a
`message` that says why; it does not raise.

With `output_type=X` (a typed answer, see nbllm.typed) `compare` adds `output` (the validated
value) and `valid` (False when the answer did not validate or the provider failed; `error` says
why; `answer` is then the raw text) and `answer` is the value's JSON. `consensus` votes on the
values — their JSON with sorted keys, exactly: validation already settled the form, and casefolding
a name or a label would merge answers that differ — and only valid answers vote; `output` holds
the winning value.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
import unicodedata
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import bridge, budgets, pipeline, routing
from .context import Prompt, prepared
from .errors import ConfigurationError, OutputInvalid
from .pipeline import Answer, Call
from .health import NOT_STARTED
from .catalog import AUTO
from .registry import get_registry

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "compare", "compare_async", "consensus", "consensus_async", "ConsensusResult", "normalise", "COMPARE_COLUMNS",
    "TYPED_COLUMNS", "value_json", "invalid_answer",
]

COMPARE_COLUMNS = ["provider", "model", "answer", "latency_ms", "input_tokens", "output_tokens", "cost_usd", "error"]
TYPED_COLUMNS = ["provider", "model", "answer", "output", "valid", "latency_ms", "input_tokens", "output_tokens",
                 "cost_usd", "error"]
"""`compare(..., output_type=X)`'s columns: `output` is the validated value, `valid` whether there is one."""


# ---- fan-out ---------------------------------------------------------------------------


def _names(providers: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """Validate the names (a provider, `provider:model` or an alias each; unknown → ConfigurationError naming
    valid ones); keep order, drop repeats. In a string, commas and spaces separate the names to compare."""
    if providers is None:
        return None
    if isinstance(providers, str):
        providers = [p for p in re.split(r"[,\s]+", providers) if p]
    names: list[str] = []
    for name in providers:
        canonical = routing.resolve(name, check_enabled=False).expanded  # an alias of a provider counts once
        if canonical not in names:
            names.append(canonical)
    if not names:
        raise ConfigurationError("providers=[] names no provider: give names such as ['lmstudio', 'ollama'], "
                                 "or None for every available one.")
    return names


async def _targets(names: list[str] | None) -> list[tuple[str, str | None]]:
    """(provider, detected model or None) for the named providers, or every available one."""
    if names is not None:
        return [(name, None) for name in names]
    health = await routing.check()
    available = [(h.provider, h.model_id if h.model_detected else None) for h in health.values() if h.available]
    # The embedded server is not started for this (a process and a model load) unless nothing else answers.
    available = [t for t in available if health[t[0]].note != NOT_STARTED] or available
    if not available:
        reasons = "; ".join(f"{h.provider}: {h.error or h.status}" for h in health.values() if h.enabled)
        raise ConfigurationError(
            f"No provider is available to ask ({reasons or 'all are disabled'}). Start a local server or set "
            "an API key, or name providers=[...]."
        )
    return available


def value_json(value: Any, sort_keys: bool = False) -> str:
    """A validated value as JSON text (its fields by their JSON names); what cannot be JSON, as text."""
    import json

    from pydantic_core import to_jsonable_python

    return json.dumps(to_jsonable_python(value, by_alias=True, serialize_unknown=True), ensure_ascii=False,
                      sort_keys=sort_keys)


def invalid_answer(exc: OutputInvalid, call: Call, latency_ms: float, error: str | None = None) -> Answer:
    """An answer that stayed invalid, as a failed Answer: the text it sent, the model that sent it and
    what its replies spent (they cost tokens too). compare's row and `%%llm --schema` both read it."""
    return Answer(exc.text, exc.provider, exc.model or call.model or "", latency_ms=latency_ms,
                  input_tokens=exc.input_tokens, output_tokens=exc.output_tokens,
                  cost_usd=exc.cost_usd, error=error or str(exc), failure=exc,
                  attempts=getattr(exc, "attempts", 1))


async def _one(call: Call) -> dict[str, Any]:
    started = time.perf_counter()
    typed = call.request.output_type is not None
    row: dict[str, Any] = dict.fromkeys(TYPED_COLUMNS if typed else COMPARE_COLUMNS)
    row.update(provider=call.provider, model=call.model or "", answer="")
    if typed:
        row["valid"] = False
    try:
        answer = await pipeline.answer(call)
    except asyncio.CancelledError:
        raise
    except OutputInvalid as exc:  # it answered, but not with a valid value: its text, usage and reason are kept
        answer = invalid_answer(exc, call, (time.perf_counter() - started) * 1000,
                                f"not a valid {exc.what}: {exc.problem}")
    except Exception as exc:  # a failure is a row, never an exception
        row.update(latency_ms=round((time.perf_counter() - started) * 1000, 1), error=str(exc) or type(exc).__name__)
        return row
    row.update(
        provider=answer.provider, model=answer.model, answer=answer.text, latency_ms=round(answer.latency_ms, 1),
        input_tokens=answer.input_tokens, output_tokens=answer.output_tokens, cost_usd=answer.cost_usd,
        error=answer.error,
    )
    if typed and answer.ok:
        row.update(answer=value_json(answer.output), output=answer.output, valid=True)
    return row


async def _fan_out(prompt: "str | Prompt", providers: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per provider, in order; runs on nbllm's loop. `budget=` in options: a budget for these
    requests together (a provider it cannot cover gets a row saying so; nothing is sent to it)."""
    limit = options.pop("budget", None)
    if limit is not None:
        budgets.check_limit(limit)  # a bad budget: one error before anything is probed
    if options.get("chat") is not None:
        raise ConfigurationError("compare/consensus do not take chat memory: each provider would add its own turn "
                                 "to one conversation. Ask them without --chat / chat=.")
    # Checked once, before anything is sent; each target is named below, so the kernel default plays no part.
    call = pipeline.describe(prompt, "compare/consensus", provider=AUTO, **options)
    targets = await _targets(_names(providers))
    calls = [pipeline.for_provider(call, name, call.request.model or model) for name, model in targets]
    with budgets.scoped(limit, "budget of this comparison"):
        return list(await asyncio.gather(*(_one(c) for c in calls)))


def _frame(rows: list[dict[str, Any]]) -> "pd.DataFrame":
    """The rows as a `plots.Comparison`: a DataFrame whose `.plot()` draws latency and cost per provider."""
    import pandas as pd

    from .plots import Comparison
    from .store import cast_usage

    typed = bool(rows) and "valid" in rows[0]
    frame = cast_usage(pd.DataFrame(rows, columns=TYPED_COLUMNS if typed else COMPARE_COLUMNS))
    if typed:
        frame["valid"] = frame["valid"].astype(bool)
    return Comparison(frame)


# ---- compare -----------------------------------------------------------------------------


def compare(prompt: "str | Sequence[Any]", providers: str | list[str] | None = None,
            **options: Any) -> "pd.DataFrame":
    """Ask several providers at once; one row each: provider, model, answer, latency_ms, tokens, cost_usd, error.

    `providers`: names (a list, or "a,b"); None asks every available provider.
    `options` are those of `nbllm.ask` (system, temperature, max_tokens, timeout, model, cache, output_type),
    and `budget=` (USD for these requests together; with the kernel's `nbllm.budget`, both must cover each).
    With `output_type=X` there are two more columns, `output` (the validated value) and `valid`
    (which providers produced a valid X); `answer` is the value's JSON, or the raw text when invalid.
    `.plot()` on the result draws latency and cost per provider (matplotlib).
    """
    return _frame(bridge.run(_fan_out(prepared(prompt, options, 2), providers, options)))


def compare_async(prompt: "str | Sequence[Any]", providers: str | list[str] | None = None,
                  **options: Any) -> "Awaitable[pd.DataFrame]":
    """`compare` for `await` (e.g. top-level await in a notebook); the prompt is read when called."""
    return _framed(_fan_out(prepared(prompt, options, 2), providers, options))


async def _framed(rows: Awaitable[list[dict[str, Any]]]) -> "pd.DataFrame":
    return _frame(await bridge.run_async(rows))


# ---- consensus --------------------------------------------------------------------------

_TRAILING = ".,;:!?。！？…"
_QUOTES = "\"'`“”‘’"


def normalise(text: str) -> str:
    """The form answers are compared in: Unicode NFKC, case-folded, runs of whitespace as
    one space, no surrounding whitespace or quotes, no trailing punctuation (. , ; : ! ? …).

    So "Paris.", " paris ", "PARIS!" and '"Paris"' are one vote; "Paris, France" is another.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = " ".join(text.split())
    previous = None
    while previous != text:
        previous = text
        text = text.strip().strip(_QUOTES).rstrip(_TRAILING)
    return text


@dataclass
class ConsensusResult:
    """A weighted vote among providers.

    `decision`: the winning answer as the first provider that gave it wrote it (None when
    nobody answered). `confidence`: winning weight / weight of providers that answered.
    `confidence_asked`: winning weight / weight of all providers asked (failures lower it).
    `answers`: provider → answer text; `failed`: provider → error. `votes`: normalised
    answer → summed weight. `tie`: another answer had the same weight (the one given by
    the provider asked first wins). `rows`: the per-provider table (`to_frame()`).
    """

    prompt: str
    decision: str | None
    confidence: float
    confidence_asked: float
    answers: dict[str, str]
    failed: dict[str, str]
    votes: dict[str, float]
    weight_answered: float
    weight_asked: float
    message: str
    tie: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)
    output: Any = None
    """With `output_type=`: the winning validated value (`decision` is its JSON); else None."""

    @property
    def ok(self) -> bool:
        """Some provider answered, so there is a decision."""
        return self.decision is not None

    def __str__(self) -> str:
        return self.message

    def to_frame(self) -> "pd.DataFrame":
        """One row per provider asked: answer, normalised form, weight, whether it voted for the decision."""
        import pandas as pd

        columns = ["provider", "model", "weight", "answer", "normalised", "agrees", "latency_ms", "error"]
        return pd.DataFrame(self.rows, columns=columns)

    def _summary(self) -> str:
        if self.decision is None:
            return self.message
        failed = f"; failed: {', '.join(self.failed)}" if self.failed else ""
        tie = " (tie)" if self.tie else ""
        return (f"confidence {self.confidence:.2f}{tie} — weight {_w(max(self.votes.values()))} of "
                f"{_w(self.weight_answered)} that answered; {self.confidence_asked:.2f} of all "
                f"{_w(self.weight_asked)} asked{failed}")

    def _repr_markdown_(self) -> str:
        head = f"**Decision:** {self.decision}\n\n{self._summary()}\n\n" if self.ok else f"**{self.message}**\n\n"
        lines = ["| provider | weight | answer | agrees | error |", "|---|---|---|---|---|"]
        for row in self.rows:
            cells = [row["provider"], _w(row["weight"]), _cell(row["answer"]), "✓" if row["agrees"] else "",
                     _cell(row["error"] or "")]
            lines.append("| " + " | ".join(cells) + " |")
        return head + "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        if self.ok:
            head = f"<p><b>Decision:</b> {esc(self.decision or '')}<br><small>{esc(self._summary())}</small></p>"
        else:
            head = f"<p><b>{esc(self.message)}</b></p>"
        body = "".join(
            f"<tr><td>{esc(r['provider'])}</td><td>{_w(r['weight'])}</td><td>{esc(r['answer'] or '')}</td>"
            f"<td>{'✓' if r['agrees'] else ''}</td><td>{esc(r['error'] or '')}</td></tr>"
            for r in self.rows
        )
        return (head + "<table><thead><tr><th>provider</th><th>weight</th><th>answer</th><th>agrees</th>"
                "<th>error</th></tr></thead><tbody>" + body + "</tbody></table>")


def _w(value: float) -> str:
    return f"{value:g}"


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _vote(prompt: str, rows: list[dict[str, Any]]) -> ConsensusResult:
    registry = get_registry()
    votes: dict[str, float] = {}
    first_text: dict[str, str] = {}
    answers: dict[str, str] = {}
    failed: dict[str, str] = {}
    table: list[dict[str, Any]] = []
    outputs: dict[str, Any] = {}
    weight_asked = weight_answered = 0.0
    for row in rows:
        weight = registry.settings(row["provider"]).weight
        weight_asked += weight
        text = row["answer"] or ""
        if "valid" in row:  # typed: the value votes, exactly; an invalid answer does not
            key = value_json(row["output"], sort_keys=True) if row["valid"] else ""
            if key:
                outputs.setdefault(key, row["output"])
        else:
            key = normalise(text) if not row["error"] else ""
        if row["error"] or not key:
            failed[row["provider"]] = row["error"] or "empty answer"
        else:
            weight_answered += weight
            answers[row["provider"]] = text
            votes[key] = votes.get(key, 0.0) + weight
            first_text.setdefault(key, text.strip())
        table.append({"provider": row["provider"], "model": row["model"], "weight": weight, "answer": text,
                      "normalised": key or None, "agrees": False, "latency_ms": row["latency_ms"],
                      "error": failed.get(row["provider"])})
    if not votes:
        reasons = "; ".join(f"{name}: {error}" for name, error in failed.items())
        return ConsensusResult(prompt, None, 0.0, 0.0, answers, failed, votes, weight_answered, weight_asked,
                               f"No consensus: no provider answered ({reasons}).", rows=table)
    best = max(votes.values())
    winner = next(key for key in votes if votes[key] == best)  # dicts keep order: first provider asked wins a tie
    tie = sum(1 for value in votes.values() if value == best) > 1
    for entry in table:
        entry["agrees"] = entry["normalised"] == winner
    confidence = best / weight_answered if weight_answered else 0.0
    confidence_asked = best / weight_asked if weight_asked else 0.0
    result = ConsensusResult(prompt, first_text[winner], confidence, confidence_asked, answers, failed, votes,
                             weight_answered, weight_asked, "", tie, table, outputs.get(winner))
    result.message = f"{result.decision} ({result._summary()})"
    return result


def consensus(prompt: "str | Sequence[Any]", providers: str | list[str] | None = None,
              **options: Any) -> "ConsensusResult":
    """Ask several providers at once and take a vote weighted by each provider's `{P}_WEIGHT`.

    Answers are compared after `normalise`; with `output_type=X`, the validated values are
    compared exactly (invalid answers do not vote) and `.output` is the winning value. Never raises for a provider that fails;
    with no answer at all, `decision` is None and `message` says why.
    """
    asked = prepared(prompt, options, 2)
    return _vote(str(getattr(asked, "text", asked)), bridge.run(_fan_out(asked, providers, options)))


def consensus_async(prompt: "str | Sequence[Any]", providers: str | list[str] | None = None,
                    **options: Any) -> "Awaitable[ConsensusResult]":
    """`consensus` for `await`; the prompt is read when called."""
    asked = prepared(prompt, options, 2)
    return _voted(str(getattr(asked, "text", asked)), _fan_out(asked, providers, options))


async def _voted(prompt: str, rows: Awaitable[list[dict[str, Any]]]) -> "ConsensusResult":
    return _vote(prompt, await bridge.run_async(rows))
