"""What a batch (or one prompt) will cost before anything is sent: `estimate`, `estimate_prompt`.

Why here and not in `map`: the same numbers serve `map(..., dry_run=True)`, `%%llm --estimate`
and a user deciding whether to send 10,000 prompts at all; nothing here sends a prompt to a model.

- Prompts are rendered exactly as `map` renders them (`batch._rows`, `batch._template`, the
  template's `prompts`), so a missing input (None/NaN) is skipped — never sent, never counted.
- The provider is resolved as `ask` resolves it (`pipeline.describe`, then `pipeline.route` on
  nbllm's loop): routing may probe local servers, and it starts the embedded model.
- Input tokens, in order of trust: the server's own tokenizer (llama.cpp `POST /tokenize`,
  llama-cpp-python `POST /extras/tokenize/count`, vLLM `POST /tokenize`) plus the chat template's
  per-request overhead, measured once per server from the template itself (llama.cpp's
  `/apply-template`, vLLM's chat tokenize, the embedded model's GGUF template); pydantic-ai's
  `Model.count_tokens` where a cloud model has it (Anthropic, Gemini, Bedrock: the vendor's free
  count endpoint); else `nbllm.tokens.estimate`, which is conservative. `Estimate.input_method` says which.
  Above `EXACT_LIMIT` prompts a spread sample is counted exactly and the rest scaled by it.
- Output tokens: the observed mean of this provider+model in the call log once it has
  `OBSERVED_MIN` answers, else `max_tokens`; at most `max_tokens`.
- USD: `prices.price_for`; low = inputs + expected outputs, high = inputs + max outputs; None when
  the price is unknown (never 0), 0 for local servers.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import tokens as _tokens
from .errors import ProbeError

if TYPE_CHECKING:
    import pandas as pd

    from .pipeline import Call, Target

__all__ = ["Estimate", "estimate", "estimate_prompt", "estimate_async", "EXACT_LIMIT", "OBSERVED_MIN"]

EXACT_LIMIT = {"local": 500, "cloud": 100}
"""At most this many prompts are counted one by one by a server (local) or a vendor's count endpoint (cloud)."""
OBSERVED_MIN = 5
"""Logged answers of a provider+model needed before their mean output replaces max_tokens."""
CONCURRENCY = 16
"""Tokenize requests in flight at once (local servers answer them in about a millisecond each)."""
_SENTINEL = "Hello"
"""The user text of the chat used to measure a template's overhead (one token in common tokenizers)."""


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
    from .batch import _Ask, _rows, _template
    from .errors import ConfigurationError

    for name in ("chat", "max_retries"):
        if name in options:
            raise ConfigurationError(f"estimate() does not take {name}=: each input is its own call.")
    ask = _Ask("estimate", template, output_type)
    data = _rows(values, "estimate")
    prompts, index = _template(data, ask).prompts(data)
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
    counted = await _count_inputs(target, call, sent, system)
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


def _message_text(message: Any) -> str:
    return " ".join(str(getattr(part, "content", "")) for part in getattr(message, "parts", ()))


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
    from .calllog import history, history_path

    path = history_path()
    history.flush()
    if not path.exists():
        return None
    query = ("SELECT COUNT(*), AVG(output_tokens) FROM (SELECT output_tokens FROM calls WHERE provider = ? "
             "AND model = ? AND outcome = 'ok' AND output_tokens IS NOT NULL ORDER BY id DESC LIMIT ?)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            count, mean = conn.execute(query, (provider, model, recent)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:  # an unreadable log: no observations
        return None
    return (int(count), float(mean)) if count else None


# ---- input tokens --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Counted:
    counts: list[int]
    method: str
    notes: tuple[str, ...] = ()


async def _count_inputs(target: "Target", call: "Call", prompts: list[str], system: str) -> _Counted:
    """Each prompt's input tokens with the best counter this target has (see the module docstring)."""
    from .health import self_hosted

    if not prompts:
        return _Counted([], "nothing to count")
    request = call.request
    local = target.spec.kind == "local" or self_hosted(target.spec, target.settings)
    problem = None
    if not local:  # the vendor counts the schema, the system prompt and earlier turns itself
        try:
            counted = await _vendor_counts(target, call, prompts)
        except ProbeError as exc:
            counted, problem = None, str(exc)
        if counted is not None:
            return counted
    notes: list[str] = [problem] if problem else []
    extra_system, approximate = "", ""
    if request.output_type is not None:
        extra_system, approximate = _output_schema(target, request.output_type)
        notes.append("the output schema's tokens are approximate" if approximate else
                     "the output schema is counted as the instructions it adds")
    full_system = "\n\n".join(s for s in (system, extra_system) if s)
    counted = None
    if local:
        try:
            counted = await _server_counts(target, prompts, full_system)
        except ProbeError as exc:
            notes.append(str(exc))
    if counted is None:
        counted = _Counted(_estimates(prompts, full_system), "tokenizer estimate, conservative")
    extra = _tokens.estimate(approximate) if approximate else 0
    if request.chat is not None and request.chat.messages:
        extra += sum(_tokens.estimate(_message_text(m)) for m in request.chat.messages)
    counts = [c + extra for c in counted.counts] if extra else counted.counts
    return _Counted(counts, counted.method, counted.notes + tuple(notes))


def _estimates(prompts: Sequence[str], system: str) -> list[int]:
    """nbllm's conservative estimate, with a chat's framing (a few tokens per message) and the system prompt."""
    overhead = 7 + (_tokens.estimate(system) + 4 if system else 0)
    return [_tokens.estimate(p) + overhead for p in prompts]


async def _sampled(prompts: list[str], count: Callable[[str], Awaitable[int]], limit: int, method: str,
                   estimates: Callable[[Sequence[str]], list[int]]) -> _Counted:
    """Every prompt counted by `count` (CONCURRENCY at once), or above `limit` an evenly spread sample,
    the others scaled by the sample's count ÷ estimate."""
    n = len(prompts)
    if n <= limit:
        return _Counted(await _gathered(prompts, count), method)
    step = n / limit
    chosen = sorted({int(i * step) for i in range(limit)})
    exact = dict(zip(chosen, await _gathered([prompts[i] for i in chosen], count)))
    guessed = estimates(prompts)
    ratio = sum(exact.values()) / max(1, sum(guessed[i] for i in chosen))
    counts = [exact[i] if i in exact else max(1, round(guessed[i] * ratio)) for i in range(n)]
    return _Counted(counts, f"{method}: {len(chosen):,} of {n:,} counted, the rest scaled")


async def _gathered(texts: list[str], count: Callable[[str], Awaitable[int]]) -> list[int]:
    """`count(text)` for each text, at most CONCURRENCY in flight; results in order."""
    results: list[int] = [0] * len(texts)
    positions = iter(range(len(texts)))

    async def worker() -> None:
        for position in positions:  # shared: each position taken once
            results[position] = await count(texts[position])

    workers = [asyncio.ensure_future(worker()) for _ in range(min(CONCURRENCY, len(texts)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
    return results


# ---- a local server's own tokenizer ----------------------------------------------------------


@dataclass
class _Tokenizer:
    """One server's tokenize endpoint, in its dialect: "llama.cpp", "llama-cpp-python" or "vLLM"."""

    dialect: str
    root: str
    model: str
    headers: dict[str, str] | None
    timeout: float
    template: str | None = None
    """llama-cpp-python: the chat template of the model file (the embedded model's GGUF), when known."""

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx2

        from .clients import shared_client

        try:
            response = await shared_client().post(self.root + path, json=body, headers=self.headers,
                                                  timeout=self.timeout)
        except httpx2.HTTPError as exc:
            raise ProbeError(f"{self.dialect} tokenize at {self.root}{path} failed ({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise ProbeError(f"{self.root}{path} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise ProbeError(f"{self.root}{path} answered with something that is not JSON") from None

    async def count(self, text: str, special: bool = False) -> int:
        """Tokens of `text` as the server's tokenizer splits it (`special`: with BOS and the like)."""
        if self.dialect == "llama.cpp":
            payload = await self._post("/tokenize", {"content": text, "add_special": special, "parse_special": True})
        elif self.dialect == "vLLM":
            payload = await self._post("/tokenize", {"model": self.model, "prompt": text,
                                                     "add_special_tokens": special})
        else:
            payload = await self._post("/extras/tokenize/count", {"input": text})
        return _token_count(payload, self.root)

    async def overhead(self, system: str) -> tuple[int, str | None]:
        """The tokens a chat request adds around its user text (the template, the system prompt), and a
        note when the template had to be guessed."""
        messages = ([{"role": "system", "content": system}] if system else []) + \
            [{"role": "user", "content": _SENTINEL}]
        bare = await self.count(_SENTINEL)
        if self.dialect == "llama.cpp":
            rendered = await self._post("/apply-template", {"messages": messages})
            if not isinstance(rendered, dict) or not isinstance(rendered.get("prompt"), str):
                raise ProbeError(f"{self.root}/apply-template did not answer with a prompt")
            return await self.count(rendered["prompt"], special=True) - bare, None
        if self.dialect == "vLLM":
            payload = await self._post("/tokenize", {"model": self.model, "messages": messages,
                                                     "add_generation_prompt": True})
            return _token_count(payload, self.root) - bare, None
        note = None
        text = _rendered(self.template, messages) if self.template else None
        if text is None:  # the usual ChatML framing: a guess, said so
            note = "the server does not say its chat template: ChatML assumed for the per-request overhead"
            text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + \
                "<|im_start|>assistant\n"
        return await self.count(text) - bare, note


def _token_count(payload: Any, root: str) -> int:
    """`{"count": n}` or `{"tokens": [...]}` (ids, or llama.cpp's `with_pieces` objects)."""
    if isinstance(payload, dict):
        if isinstance(payload.get("count"), int):
            return payload["count"]
        if isinstance(payload.get("tokens"), list):
            return len(payload["tokens"])
    raise ProbeError(f"{root} answered its tokenize request without a count")


_DIALECTS = {"llamacpp": ("llama.cpp", "llama-cpp-python", "vLLM"), "embedded": ("llama-cpp-python",),
             "vllm": ("vLLM", "llama.cpp")}
_LABELS = {"llama.cpp": "llama.cpp tokenizer", "vLLM": "vLLM tokenizer", "llama-cpp-python": "llama-cpp-python tokenizer"}


async def _server_counts(target: "Target", prompts: list[str], system: str) -> _Counted | None:
    """The server's own counts, or None when it has no tokenize endpoint (LM Studio, Ollama, a proxy)."""
    from .probes import auth
    from .settings_values import server_root

    settings = target.settings
    root = server_root(settings.base_url)
    timeout = min(float(settings.timeout or 10.0), 10.0)
    template = _embedded_template(target)
    for dialect in _DIALECTS.get(target.spec.name, ("llama.cpp", "llama-cpp-python", "vLLM")):
        tokenizer = _Tokenizer(dialect, root, target.model, auth(settings), timeout, template)
        try:
            overhead, note = await tokenizer.overhead(system)
        except ProbeError:
            continue  # not this dialect: try the next
        label = "embedded tokenizer" if target.spec.name == "embedded" else _LABELS[dialect]

        async def count(text: str) -> int:
            return await tokenizer.count(text) + overhead

        def guessed(texts: Sequence[str]) -> list[int]:
            return _estimates(texts, system)

        counted = await _sampled(prompts, count, EXACT_LIMIT["local"], label, guessed)
        return _Counted(counted.counts, counted.method, (note,) if note else ())
    return None


def _embedded_template(target: "Target") -> str | None:
    """The chat template in the GGUF file of the embedded server nbllm runs at this address, if any."""
    if target.spec.name != "embedded":
        return None
    from .embedded import server_info
    from .settings_values import server_root

    info = server_info()
    if info is None or server_root(info["base_url"]) != server_root(target.settings.base_url):
        return None
    return gguf_chat_template(info["model"])


def gguf_chat_template(path: str) -> str | None:
    """`tokenizer.chat_template` from a GGUF file's header (read without loading the model), or None."""
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    try:
        with open(path, "rb") as f:
            def number(fmt: str) -> int:
                return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

            def skip(kind: int) -> None:
                if kind in sizes:
                    f.seek(sizes[kind], 1)
                elif kind == 8:
                    f.seek(number("Q"), 1)
                elif kind == 9:
                    item, length = number("I"), number("Q")
                    if item in sizes:
                        f.seek(sizes[item] * length, 1)
                    else:
                        for _ in range(length):
                            skip(item)
                else:
                    raise ValueError(f"unknown GGUF value type {kind}")

            if f.read(4) != b"GGUF":
                return None
            number("I"), number("Q")  # version, tensor count
            for _ in range(number("Q")):
                key = f.read(number("Q")).decode("utf-8", "replace")
                kind = number("I")
                if key == "tokenizer.chat_template" and kind == 8:
                    return f.read(number("Q")).decode("utf-8", "replace")
                skip(kind)
    except (OSError, ValueError, struct.error):
        return None
    return None


def _rendered(template: str, messages: list[dict[str, str]]) -> str | None:
    """The chat as llama-cpp-python renders it (jinja2, sandboxed, as its formatter does), or None."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return environment.from_string(template).render(messages=messages, add_generation_prompt=True,
                                                        bos_token="", eos_token="")
    except Exception:  # jinja2 missing, or a template that needs more than this
        return None


# ---- a cloud vendor's count endpoint ------------------------------------------------------------


_COUNTING_BUILDERS = ("anthropic", "google")
"""nbllm's builders whose pydantic-ai model implements `count_tokens` (OpenAI's Chat model does not)."""


async def _vendor_counts(target: "Target", call: "Call", prompts: list[str]) -> _Counted | None:
    """pydantic-ai's `Model.count_tokens` (the vendor's free count endpoint) where the model has it."""
    from .factory import model_settings, shared_model

    if target.spec.builder not in _COUNTING_BUILDERS:  # known not to count: no SDK import (~1-3 s) to find out
        return None
    try:
        model = shared_model(target.spec, target.settings, target.model)
    except Exception as exc:  # no key, an SDK not installed: the estimate instead
        from .errors import scrub

        why = " ".join(scrub(str(exc)).split())[:160] or type(exc).__name__
        raise ProbeError(f"{target.provider}'s own counting is not available: {why}") from None
    from pydantic_ai.messages import ModelRequest, UserPromptPart
    from pydantic_ai.models import Model, ModelRequestParameters

    if type(model).count_tokens is Model.count_tokens:
        return None
    request = call.request
    settings = model_settings(target.settings, model, temperature=request.temperature, max_tokens=request.max_tokens,
                              timeout=request.timeout)
    parameters = ModelRequestParameters()
    if request.output_type is not None:
        from .typed import plan_for

        parameters, extra = plan_for(request.output_type).parameters(model, target.spec)
        settings.update(extra)
    history = list(request.chat.messages) if request.chat is not None else []
    label = f"{target.provider} count_tokens"

    async def count(text: str) -> int:
        messages = [*history, ModelRequest(parts=[UserPromptPart(text)], instructions=request.system or None)]
        try:
            usage = await model.count_tokens(messages, settings, parameters)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            from .errors import scrub

            raise ProbeError(f"{label} failed ({type(exc).__name__}: {scrub(str(exc))[:160]})") from None
        return int(usage.input_tokens)

    def guessed(texts: Sequence[str]) -> list[int]:
        return _estimates(texts, request.system or "")

    return await _sampled(prompts, count, EXACT_LIMIT["cloud"], label, guessed)


def _output_schema(target: "Target", output_type: Any) -> tuple[str, str]:
    """What an output type adds to the request: (instructions appended to the system prompt — exact text for
    the prompted and grammar modes, None otherwise —, text counted approximately — a tool's or a native
    schema, which servers frame in their own way)."""
    from .factory import shared_model
    from .typed import plan_for

    plan = plan_for(output_type)
    try:
        model = shared_model(target.spec, target.settings, target.model)
        parameters, _ = plan.parameters(model, target.spec)
        _, prepared = model.prepare_request(None, parameters)
        instructions = prepared.prompted_output_instructions
    except Exception:  # a model pydantic-ai cannot prepare offline: count the schema's text
        return "", json.dumps(plan.schema)
    if instructions:
        return instructions, ""
    if parameters.output_tools:
        tool = parameters.output_tools[0]
        return "", json.dumps({"name": tool.name, "description": tool.description,
                               "parameters": tool.parameters_json_schema})
    return "", json.dumps(plan.schema)
