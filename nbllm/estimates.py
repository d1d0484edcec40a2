"""What a batch (or one prompt) will cost before anything is sent: `estimate`, `estimate_prompt`.

Why here and not in `map`: the same numbers serve `map(..., dry_run=True)`, `%%llm --estimate`
and a user deciding whether to send 10,000 prompts at all; nothing here sends a prompt to a model.

- Prompts are rendered exactly as `map` renders them (`frames.rows_of`, `frames.template_for`, the
  template's `prompts`), so a missing input (None/NaN) is skipped — never sent, never counted.
- The provider is resolved as `ask` resolves it (`pipeline.describe`, then `pipeline.route` on
  nbllm's loop): routing may probe local servers, and it starts the embedded model.
- Input tokens: `counting.count_inputs`, the best counter the target has (its server's tokenizer,
  the vendor's count endpoint, else `tokens.request_tokens`, conservative — what budgets reserve by);
  `Estimate.input_method` says which.
- Output tokens: the observed mean of this provider+model in the call log once it has
  `OBSERVED_MIN` answers, else `max_tokens`; at most `max_tokens`.
- USD: `prices.price_for`; low = inputs + expected outputs, high = inputs + max outputs; None when
  the price is unknown (never 0), 0 for local servers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .counting import EXACT_LIMIT, count_inputs

if TYPE_CHECKING:
    import pandas as pd

    from .request import Call

__all__ = ["Estimate", "estimate", "estimate_prompt", "estimate_async", "EXACT_LIMIT", "OBSERVED_MIN"]

OBSERVED_MIN = 5
"""Logged answers of a provider+model needed before their mean output replaces max_tokens."""


@dataclass(frozen=True)
class Estimate:
    """What sending these prompts would cost, and how each number was had; nothing was sent."""

    provider: str
    model: str
    prompts: int
    """Prompts that would be sent (missing inputs are not)."""
    input_tokens: int
    input_method: str
    output_tokens_expected: int
    """Per prompt."""
    output_tokens_max: int
    """Per prompt (max_tokens)."""
    output_basis: str
    usd_low: float | None
    usd_high: float | None
    price_source: str
    """"local", "declared", "genai-prices" or "unknown" (then both USD bounds are None)."""
    skipped: int = 0
    """Missing inputs (None/NaN): not sent, not counted."""
    notes: tuple[str, ...] = ()
    counts: tuple[int | None, ...] = field(default=(), repr=False, compare=False)
    """Input tokens per input, in input order (None for a skipped input)."""
    labels: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    @property
    def cost_source(self) -> str:
        return self.price_source

    def _cost(self) -> str:
        if self.usd_low is None or self.usd_high is None:
            return "cost unknown (no price known for this model)"
        if self.price_source == "local":
            return "$0 (local)"
        low, high = _usd(self.usd_low), _usd(self.usd_high)
        return f"{low} ({self.price_source})" if low == high else f"{low}–{high} ({self.price_source})"

    def _outputs(self, unit: str = " output tokens") -> str:
        low, high = self.output_tokens_expected, self.output_tokens_max
        span = f"{low:,}" if low == high else f"{low:,}–{high:,}"
        return f"{span}{unit} each ({self.output_basis})"

    def __str__(self) -> str:
        noun = "prompt" if self.prompts == 1 else "prompts"
        parts = [f"{self.prompts:,} {noun}" + (f" ({self.skipped:,} missing, skipped)" if self.skipped else ""),
                 f"~{self.input_tokens:,} input tokens ({self.input_method})", self._outputs(), self._cost()]
        return f"{self.provider}:{self.model} · " + " · ".join(parts)

    def __repr__(self) -> str:
        notes = "".join(f"\n  note: {note}" for note in self.notes)
        return f"<nbllm estimate, nothing sent: {self}>{notes}"

    def _repr_markdown_(self) -> str:
        rows = [("provider", f"{self.provider} · {self.model}"),
                ("prompts", f"{self.prompts:,}" + (f" ({self.skipped:,} missing, skipped)" if self.skipped else "")),
                ("input tokens", f"~{self.input_tokens:,} ({self.input_method})"),
                ("output tokens", self._outputs("")), ("cost", self._cost())]
        rows += [("note", note) for note in self.notes]
        lines = ["| estimate (nothing sent) | |", "|---|---|"]
        lines += [f"| {name} | {_cell(value)} |" for name, value in rows]
        return "\n".join(lines)

    def frame(self) -> "pd.DataFrame":
        """One row per input: its input tokens (NA when skipped), expected and max output tokens."""
        import pandas as pd

        counts = pd.array(list(self.counts), dtype="Int64")
        sent = [c is not None for c in self.counts]
        data = {"input_tokens": counts,
                "output_tokens_expected": pd.array([self.output_tokens_expected if s else None for s in sent],
                                                   dtype="Int64"),
                "output_tokens_max": pd.array([self.output_tokens_max if s else None for s in sent], dtype="Int64")}
        return pd.DataFrame(data, index=list(self.labels) if self.labels else None)


def _usd(value: float) -> str:
    if value == 0:
        return "$0"
    return f"${value:.2g}" if value < 0.01 else f"${value:,.2f}"


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


# ---- the public functions ------------------------------------------------------------------


def estimate(values: Any, template: Any, provider: str | None = None, output_type: Any = None,
             **options: Any) -> Estimate:
    """The cost of `map(values, template, provider, output_type=..., **options)`, without sending anything.

    `values` and `template` follow map's rules (a list/Series with `{value}`, a DataFrame with
    `{column}`); options are ask's (model, system, max_tokens, temperature, ...)."""
    from . import bridge

    prompts, labels, call = _described_batch(values, template, provider, output_type, options)
    return bridge.run(_estimated(call, prompts, labels))


async def estimate_async(values: Any, template: Any, provider: str | None = None, output_type: Any = None,
                         **options: Any) -> Estimate:
    """`estimate` for `await` (map_async's dry run)."""
    from . import bridge

    prompts, labels, call = _described_batch(values, template, provider, output_type, options)
    return await bridge.run_async(_estimated(call, prompts, labels))


def estimate_prompt(prompt: Any, provider: str | None = None, output_type: Any = None, **options: Any) -> Estimate:
    """The cost of `ask(prompt, ...)` without sending it: `{name}` is filled from your variables as ask
    fills it (`raw=True`: as written); a `Prompt` (what `%%llm` built) is taken as it is."""
    from . import bridge, pipeline
    from .context import Prompt, prepared

    built = prepared(prompt, options, 2)
    if output_type is not None:
        options["output_type"] = output_type
    call = pipeline.describe(built, "estimate_prompt", provider, **options)
    notes = []
    if isinstance(built, Prompt) and built.has_images:
        notes.append("images are not counted (text only)")
    if call.request.chat is not None and call.request.chat.messages:
        notes.append(f"includes the conversation's {len(call.request.chat.messages) // 2} earlier turn(s)")
    return bridge.run(_estimated(call, [call.prompt], [0], tuple(notes)))


def _described_batch(values: Any, template: Any, provider: str | None, output_type: Any,
                     options: dict[str, Any]) -> tuple[list[str | None], list[Any], "Call"]:
    """map's prompts for these inputs (None: a missing input) and the call described once."""
    from . import pipeline
    from .frames import Ask, rows_of, template_for
    from .errors import ConfigurationError

    for name in ("chat", "max_retries"):
        if name in options:
            raise ConfigurationError(f"estimate() does not take {name}=: each input is its own call.")
    ask = Ask("estimate", template, output_type)
    data = rows_of(values, "estimate")
    prompts, index = template_for(data, ask).prompts(data)
    if output_type is not None:
        options = {**options, "output_type": output_type}
    first = next((p for p in prompts if p), None)
    call = pipeline.describe(first or "(no prompt)", "estimate", provider, **options)
    return prompts, list(index), call


# ---- the estimate ---------------------------------------------------------------------------


async def _estimated(call: "Call", prompts: Sequence[str | None], labels: Sequence[Any],
                     notes: tuple[str, ...] = ()) -> Estimate:
    """Route, count, price; runs on nbllm's loop."""
    from . import pipeline, prices

    target = await pipeline.route(_first_link(call))
    sent = [p for p in prompts if p is not None]
    system = call.request.system or ""
    counted = await count_inputs(target, call, sent, system)
    notes = notes + counted.notes
    per_input = iter(counted.counts)
    counts = tuple(None if p is None else next(per_input) for p in prompts)
    total = sum(c for c in counts if c is not None)
    maximum = int(call.request.numbers(target.settings)["max_tokens"] or 0)
    expected, basis = _expected_output(target.provider, target.model, maximum)
    price = prices.price_for(target.spec, target.settings, target.model)
    low = high = None
    if price is not None:
        low = price.cost(total, expected * len(sent))
        high = price.cost(total, maximum * len(sent))
    return Estimate(target.provider, target.model, len(sent), total, counted.method, expected, maximum, basis,
                    low, high, price.source if price is not None else "unknown", len(prompts) - len(sent),
                    notes, counts, tuple(labels))


def _first_link(call: "Call") -> "Call":
    """A fallback chain is estimated for its first link (the one that answers when all is well)."""
    if call.route is None:
        return call
    from .request import link_call

    return link_call(call, call.route.links[0], last=True)


# ---- output tokens -------------------------------------------------------------------------


def _expected_output(provider: str, model: str, maximum: int) -> tuple[int, str]:
    """The observed mean output of this provider+model (≥ OBSERVED_MIN answers), else max_tokens."""
    observed = observed_output(provider, model)
    if observed is None or observed[0] < OBSERVED_MIN:
        return maximum, "max_tokens"
    count, mean = observed
    expected = round(mean) if maximum <= 0 else min(maximum, round(mean))
    return expected, f"observed mean of {count:,} answers"


def observed_output(provider: str, model: str, recent: int = 1000) -> tuple[int, float] | None:
    """(answers, mean output tokens) of the latest `recent` successful answers in the call log, or None."""
    from .calllog import query
    from .errors import ConfigurationError

    sql = ("SELECT COUNT(*), AVG(output_tokens) FROM (SELECT output_tokens FROM calls WHERE provider = ? "
           "AND model = ? AND outcome = 'ok' AND output_tokens IS NOT NULL ORDER BY id DESC LIMIT ?)")
    try:
        rows = query(sql, (provider, model, recent))
    except ConfigurationError:  # an unreadable log: no observations
        return None
    count, mean = rows[0] if rows else (0, None)
    return (int(count), float(mean)) if count else None
