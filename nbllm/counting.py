"""How many input tokens a request takes, by the best counter its target has; nothing is sent to a model.

In order of trust:
- a local server's own tokenizer (llama.cpp `POST /tokenize`, llama-cpp-python
  `POST /extras/tokenize/count`, vLLM `POST /tokenize`) plus the chat template's per-request
  overhead, measured once per server from the template itself (llama.cpp's `/apply-template`,
  vLLM's chat tokenize, the embedded model's GGUF template);
- pydantic-ai's `Model.count_tokens` where a cloud model has it (Anthropic, Gemini, Bedrock: the
  vendor's free count endpoint), which counts the schema, system prompt and earlier turns itself;
- else `tokens.request_tokens`, conservative — the rule budgets reserve by too.
Above `EXACT_LIMIT` prompts an evenly spread sample is counted exactly and the rest scaled by it.
HTTP to local servers goes through `probes.request_json` (one place, one set of error words).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import tokens as _tokens
from .errors import ProbeError

if TYPE_CHECKING:
    from .request import Call, Target

__all__ = ["Counted", "count_inputs", "output_schema", "schema_forms", "schema_tokens", "EXACT_LIMIT", "CONCURRENCY"]

EXACT_LIMIT = {"local": 500, "cloud": 100}
"""At most this many prompts are counted one by one by a server (local) or a vendor's count endpoint (cloud)."""
CONCURRENCY = 16
"""Tokenize requests in flight at once (local servers answer them in about a millisecond each)."""
_SENTINEL = "Hello"
"""The user text of the chat used to measure a template's overhead (one token in common tokenizers)."""
ESTIMATED = "tokenizer estimate, conservative"


@dataclass(frozen=True)
class Counted:
    """Input tokens per prompt, how they were counted, and what the count could not do exactly."""

    counts: list[int]
    method: str
    notes: tuple[str, ...] = ()


async def count_inputs(target: "Target", call: "Call", prompts: list[str], system: str) -> Counted:
    """Each prompt's input tokens with the best counter this target has (see the module docstring)."""
    if not prompts:
        return Counted([], "nothing to count")
    request = call.request
    local = _is_local(target)
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
        extra_system, approximate = output_schema(target, request.output_type)
        notes.append("the output schema's tokens are approximate" if approximate else
                     "the output schema is counted as the instructions it adds")
    full_system = "\n\n".join(s for s in (system, extra_system) if s)
    history = [_message_text(m) for m in request.chat.messages] if request.chat is not None else []
    counted = None
    if local:
        try:
            counted = await _server_counts(target, prompts, full_system)
        except ProbeError as exc:
            notes.append(str(exc))
    extra = _tokens.estimate(approximate) if approximate else 0
    if counted is None:
        counts = [_tokens.request_tokens(p, full_system, history) + extra for p in prompts]
        return Counted(counts, ESTIMATED, tuple(notes))
    extra += sum(_tokens.estimate(text) for text in history)
    counts = [c + extra for c in counted.counts] if extra else counted.counts
    return Counted(counts, counted.method, counted.notes + tuple(notes))


def _is_local(target: "Target") -> bool:
    """A server nbllm counts with its own tokenizer and never asks a vendor about: the rule prices use."""
    from .prices import is_local

    return is_local(target.spec, target.settings)


def _message_text(message: Any) -> str:
    return " ".join(str(getattr(part, "content", "")) for part in getattr(message, "parts", ()))


def _estimates(prompts: Sequence[str], system: str) -> list[int]:
    """`tokens.request_tokens` of each prompt: what sampled counts are scaled against."""
    return [_tokens.request_tokens(p, system) for p in prompts]


async def _sampled(prompts: list[str], count: Callable[[str], Awaitable[int]], limit: int, method: str,
                   estimates: Callable[[Sequence[str]], list[int]]) -> Counted:
    """Every prompt counted by `count` (CONCURRENCY at once), or above `limit` an evenly spread sample,
    the others scaled by the sample's count ÷ estimate."""
    n = len(prompts)
    if n <= limit:
        return Counted(await _gathered(prompts, count), method)
    step = n / limit
    chosen = sorted({int(i * step) for i in range(limit)})
    exact = dict(zip(chosen, await _gathered([prompts[i] for i in chosen], count)))
    guessed = estimates(prompts)
    ratio = sum(exact.values()) / max(1, sum(guessed[i] for i in chosen))
    counts = [exact[i] if i in exact else max(1, round(guessed[i] * ratio)) for i in range(n)]
    return Counted(counts, f"{method}: {len(chosen):,} of {n:,} counted, the rest scaled")


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


# ---- a local server's own tokenizer: the dialects ------------------------------------------------


_DIALECTS = {"llamacpp": ("llama.cpp", "llama-cpp-python", "vLLM"), "embedded": ("llama-cpp-python",),
             "vllm": ("vLLM", "llama.cpp")}
"""The dialects tried, in order, for each provider (any other local server: all three)."""
_LABELS = {"llama.cpp": "llama.cpp tokenizer", "vLLM": "vLLM tokenizer", "llama-cpp-python": "llama-cpp-python tokenizer"}


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
        from .probes import request_json

        return await request_json("POST", self.root + path, body, self.timeout, self.headers)

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


def _rendered(template: str, messages: list[dict[str, str]]) -> str | None:
    """The chat as llama-cpp-python renders it (jinja2, sandboxed, as its formatter does), or None."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return environment.from_string(template).render(messages=messages, add_generation_prompt=True,
                                                        bos_token="", eos_token="")
    except Exception:  # jinja2 missing, or a template that needs more than this
        return None


async def _server_counts(target: "Target", prompts: list[str], system: str) -> Counted | None:
    """The server's own counts, or None when it has no tokenize endpoint (LM Studio, Ollama, a proxy)."""
    from .probes import auth
    from .settings_values import server_root

    settings = target.settings
    root = server_root(settings.base_url)
    timeout = min(float(settings.timeout or 10.0), 10.0)
    template = None
    if target.spec.name == "embedded":
        from .embedded import served_chat_template

        template = served_chat_template(settings.base_url)
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
        return Counted(counted.counts, counted.method, (note,) if note else ())
    return None


# ---- a cloud vendor's count endpoint ------------------------------------------------------------


_COUNTING_BUILDERS = ("anthropic", "google")
"""nbllm's builders whose pydantic-ai model implements `count_tokens` (OpenAI's Chat model does not)."""


async def _vendor_counts(target: "Target", call: "Call", prompts: list[str]) -> Counted | None:
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


# ---- what an output type adds ---------------------------------------------------------------------


def output_schema(target: "Target", output_type: Any) -> tuple[str, str]:
    """What an output type adds to a request to `target`: (instructions appended to the system prompt —
    exact text for the prompted and grammar modes, "" otherwise —, text counted approximately — a tool's
    or a native schema, which servers frame in their own way)."""
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


def schema_forms(output_type: Any) -> list[tuple[str, str]]:
    """Every form `output_schema` can give for this type, whatever the target (pydantic-ai's default
    prompted template, the output tool, the bare schema): for a bound that holds for any target."""
    from pydantic_ai.profiles import DEFAULT_PROMPTED_OUTPUT_TEMPLATE

    from .typed import _TOOL, plan_for

    plan = plan_for(output_type)
    titled = json.dumps({**plan.schema, "title": plan.name} if plan.name else plan.schema)
    template = DEFAULT_PROMPTED_OUTPUT_TEMPLATE
    if "{schema}" not in template:
        template = f"{template}\n\n{{schema}}"
    tool = json.dumps({"name": _TOOL, "description": f"Give the answer as {plan.name}.", "parameters": plan.schema})
    return [(template.format(schema=titled), ""), ("", tool), ("", json.dumps(plan.schema))]


def schema_tokens(output_type: Any, target: "Target | None" = None) -> int:
    """The tokens an output type adds to a request by `estimate`: the instructions it appends to the system
    prompt (their framing too, as if there were no other system prompt), or the tool's / native schema.

    With `target`, the form that target's model is asked in (as the estimate counts it); without one the
    largest of the forms, so a bound that holds for any target. 0 for no output type."""
    if output_type is None:
        return 0
    forms = [output_schema(target, output_type)] if target is not None else schema_forms(output_type)
    return max(_schema_cost(instructions, approximate) for instructions, approximate in forms)


def _schema_cost(instructions: str, approximate: str) -> int:
    """Instructions join the system prompt after a blank line ("\n\n" is 2 tokens: `estimate` is additive
    across newlines, so this is never below what joining them adds)."""
    cost = _tokens.estimate(approximate) if approximate else 0
    if instructions:
        cost += _tokens.estimate("\n\n" + instructions) + _tokens.SYSTEM_FRAMING
    return cost
