"""The providers' batch APIs: submit many prompts at once (half the price, results within 24 h), then poll
and collect — from another kernel if need be.

    ticket = await submit(call, target, {"r0": "prompt", ...})   # returns once the batch exists
    await status(ticket)  → BatchStatus("running", done=0, failed=0, total=2)
    await collect(ticket) → {"r0": Answer, "r1": ModelError, ...}  ({} while it runs)
    await cancel(ticket)

`call` is described once (`pipeline.describe`, as `map` does) and `target` routed once
(`pipeline.route`); every request carries the settings of a live call — model, system
prompt, temperature, max_tokens, and `output_type` where pydantic-ai encodes the request.
`BatchTicket` is plain JSON (`to_json`/`from_json`): the provider, model, API address
(without credentials), the batch id and pydantic-ai's batch handle with its credential hash
blanked — nothing secret, and enough to poll and collect after a kernel restart.

Which API, and why:
- **OpenAI** (api.openai.com): pydantic-ai's `OpenAIResponsesModel.batch_*` on the client nbllm
  already built. pydantic-ai batches OpenAI only through the Responses API (`/v1/responses`
  lines); its Chat Completions model has no batch methods.
- **Anthropic**: pydantic-ai's `AnthropicModel.batch_*` (Message Batches).
- **OpenAI-compatible servers** that implement `/v1/files` + `/v1/batches` (`OPENAI_BASE_URL`
  pointed at your own server, a LiteLLM proxy, an endpoint of your nbllm.toml): these batch
  `/v1/chat/completions` lines (the only endpoint Groq, Together or LiteLLM batch), which
  pydantic-ai cannot encode, so nbllm writes the JSONL itself (the request nbllm sends live:
  model, messages, max_tokens or max_completion_tokens as the model's profile says, temperature)
  and uses the documented files/batches endpoints through the OpenAI SDK client nbllm already
  built (on httpx2; multipart, auth and errors as for live calls). `output_type=` is refused there.
- `status` reads the provider's batch object through that same SDK client: pydantic-ai's
  `batch_status` handle keeps no request counts and cannot tell an expired or cancelled
  Anthropic batch from a finished one.

Price: pydantic-ai marks each batch response `processing="batch"`, and genai-prices' bundled
data has the 50% batch tiers of OpenAI's and Anthropic's models, so `cost_usd` is the batch
price. Where genai-prices has no batch tier for a model, or the price is declared
(`{P}_PRICE_INPUT/_OUTPUT`, the live price), OpenAI and Anthropic get 0.5× — their published
batch discount; other servers are charged what is declared (0 when self-hosted).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from . import bridge
from .errors import ConfigurationError, ModelError, NbllmError, NotRun, NotValid, OutputInvalid, scrub
from .request import Answer, Call, Target

if TYPE_CHECKING:
    from pydantic_ai.messages import ModelResponse

__all__ = ["BatchTicket", "BatchStatus", "NotRun", "submit", "status", "collect", "cancel", "check", "protocol_for", "cancel_open", "cancel_record", "notice",
           "BATCH_DISCOUNT", "State"]

State = Literal["submitted", "running", "done", "failed", "expired", "cancelled"]
Protocol = Literal["openai-responses", "anthropic", "openai-files"]

BATCH_DISCOUNT = 0.5
"""OpenAI's and Anthropic's published batch price, as a fraction of the live price (used where
genai-prices has no batch tier for the model, and for declared prices)."""
_DISCOUNTED = ("openai", "anthropic")
_COMPATIBLE = ("openai", "litellm")
"""Providers that may point at an OpenAI-compatible server with `/v1/batches` (besides nbllm.toml endpoints)."""
_WITH_BATCHES = ("openai, anthropic, and OpenAI-compatible servers that implement /v1/files and /v1/batches "
                 "(OPENAI_BASE_URL, litellm, or an endpoint of your nbllm.toml)")
_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENDED: tuple[State, ...] = ("done", "failed", "expired", "cancelled")
_OPENAI_STATES: dict[str, State] = {
    "validating": "submitted", "in_progress": "running", "finalizing": "running", "cancelling": "running",
    "completed": "done", "failed": "failed", "expired": "expired", "cancelled": "cancelled",
}


@dataclass(frozen=True)
class BatchTicket:
    """What it takes to poll, collect or cancel a submitted batch later, in JSON (never a key)."""

    provider: str
    model: str
    batch_id: str
    protocol: Protocol
    base_url: str
    """The API address it was submitted to, without credentials: collecting refuses another one."""
    total: int
    submitted_at: float
    """Unix time of the submission (a batch expires 24 h later)."""
    handle: dict[str, Any] | None = None
    """pydantic-ai's `Batch` handle as JSON (its group's credential hash removed); None for `openai-files`."""
    typed: str | None = None
    """The schema key of the `output_type` asked for (collect checks the call it is given has the same)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BatchTicket":
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise ConfigurationError(f"This is not a batch ticket ({exc}): pass what BatchTicket.to_json() gave.") \
                from None

    @classmethod
    def from_json(cls, text: str) -> "BatchTicket":
        try:
            data = json.loads(text)
        except ValueError:
            raise ConfigurationError("This is not a batch ticket (not JSON): pass what BatchTicket.to_json() gave.") \
                from None
        return cls.from_dict(data)


@dataclass(frozen=True)
class BatchStatus:
    """Where a batch is: `state`, and how many of its `total` requests have an answer (`done`) or failed."""

    state: State
    done: int
    failed: int
    total: int

    @property
    def ended(self) -> bool:
        """Nothing more will happen: what it has is collectable (part of it for "expired"/"cancelled")."""
        return self.state in _ENDED


# ---- which API ----------------------------------------------------------------------------------


def protocol_for(target: Target) -> Protocol:
    """The batch API `target` is reached through; a provider without one is one `ConfigurationError`."""
    from .health import self_hosted

    spec = target.spec
    if spec.builder == "anthropic":
        return "anthropic"
    if spec.name == "openai" and spec.builder == "openai" and not self_hosted(spec, target.settings):
        return "openai-responses"
    if spec.builder in ("openai", "openai_compatible") and (spec.name in _COMPATIBLE or spec.origin == "file"):
        return "openai-files"
    raise ConfigurationError(f"{spec.name} has no batch API: batch=True works with {_WITH_BATCHES}; "
                             "use map() without batch=True for it.")


def check(call: Call, target: Target, prompts: dict[str, str] | None = None) -> Protocol:
    """Everything `submit` refuses, without the network: the provider, output_type, the custom ids."""
    protocol = protocol_for(target)
    if len(target.settings.servers) > 1:
        raise ConfigurationError(f"{target.provider} is a fleet of {len(target.settings.servers)} servers; a batch "
                                 f"goes to one: set {target.spec.env_prefix}_BASE_URL to one server for batch=True.")
    if protocol == "openai-files" and call.request.output_type is not None:
        raise ConfigurationError(f"output_type= cannot go through {target.provider}'s batch API (nbllm writes its "
                                 "requests itself, without typed output): drop batch=True or output_type=.")
    if call.request.parts:
        raise ConfigurationError("A batch takes text prompts only (this one holds images): drop batch=True.")
    if prompts is not None:
        if not prompts:
            raise ConfigurationError("A batch needs at least one prompt.")
        bad = next((cid for cid in prompts if not isinstance(cid, str) or not _CUSTOM_ID.fullmatch(cid)), None)
        if bad is not None:
            raise ConfigurationError(f"Batch custom_id {bad!r} is not 1-64 letters, digits, '_' or '-' (what "
                                     "every batch API accepts): use ids like 'r0', 'r1'.")
    return protocol


# ---- submit ---------------------------------------------------------------------------------------


async def submit(call: Call, target: Target, prompts: dict[str, str]) -> BatchTicket:
    """Send `prompts` (custom_id → prompt) as one batch and return at once with its ticket."""
    protocol = check(call, target, prompts)
    typed = None
    if call.request.output_type is not None:
        from .typed import schema_key

        typed = schema_key(call.request.output_type)
    try:
        if protocol == "openai-files":
            batch_id, total = await _files_submit(call, target, prompts)
            handle = None
        else:
            handle = await _pydantic_submit(call, target, prompts, protocol)
            batch_id, total = handle["id"], handle["request_count"] or len(prompts)
    except NbllmError:
        raise
    except Exception as exc:
        raise _failure(exc, target, submitting=True) from None
    return BatchTicket(target.provider, target.model, batch_id, protocol, target.url, total, time.time(), handle,
                       typed)


def _model_settings(call: Call | None, target: Target, model: Any) -> dict[str, Any]:
    """A live call's model settings, without `timeout` (a batch has none; the client's applies to its requests)."""
    from .factory import model_settings

    request = call.request if call is not None else None
    options = model_settings(target.settings, model, temperature=request.temperature if request else None,
                             max_tokens=request.max_tokens if request else None)
    options.pop("timeout", None)
    return options


def _messages(call: Call | None, prompt: str) -> list[Any]:
    """The question as pydantic-ai's messages, as the pipeline sends it live."""
    from pydantic_ai.messages import ModelRequest, UserPromptPart

    system = call.request.system if call is not None else None
    return [ModelRequest(parts=[UserPromptPart(prompt)], instructions=system or None)]


def _batch_model(target: Target, protocol: Protocol) -> Any:
    """The pydantic-ai model whose `batch_*` methods reach this target (built once per loop)."""
    from .clients import cached_per_loop
    from .factory import shared_model

    shared = shared_model(target.spec, target.settings, target.model)
    if protocol != "openai-responses":
        return shared  # AnthropicModel batches itself; `openai-files` uses its SDK client

    def build() -> Any:
        from pydantic_ai.models.openai import OpenAIResponsesModel
        from pydantic_ai.providers.openai import OpenAIProvider

        return OpenAIResponsesModel(target.model, provider=OpenAIProvider(openai_client=shared.client))

    settings = target.settings
    return cached_per_loop(("batch-responses", target.provider, target.model, settings.api_key, settings.base_url,
                            settings.timeout), build)


def _parameters(call: Call | None, model: Any, target: Target) -> tuple[Any, dict[str, Any]]:
    from pydantic_ai.models import ModelRequestParameters

    if call is None or call.request.output_type is None:
        return ModelRequestParameters(), {}
    from .typed import plan_for

    return plan_for(call.request.output_type).parameters(model, target.spec)


async def _pydantic_submit(call: Call, target: Target, prompts: dict[str, str], protocol: Protocol) -> dict[str, Any]:
    from pydantic import TypeAdapter
    from pydantic_ai.models.batch import Batch, BatchRequest

    model = _batch_model(target, protocol)
    if model.batch_max_requests is None:
        raise ConfigurationError(f"{target.provider} model {target.model!r} has no batch API (pydantic-ai: "
                                 f"{scrub(model._no_batch_api_message())}).")
    if len(prompts) > model.batch_max_requests:
        raise ConfigurationError(f"{len(prompts):,} prompts are more than the {model.batch_max_requests:,} one "
                                 f"{target.provider} batch takes: split the input.")
    settings = _model_settings(call, target, model)
    parameters, extra = _parameters(call, model, target)
    settings.update(extra)
    encoded = [await model.batch_encode(BatchRequest(custom_id=cid, messages=_messages(call, prompt),
                                                     model_settings=settings, model_request_parameters=parameters))
               for cid, prompt in prompts.items()]
    batch = await model.batch_create(encoded)
    handle = TypeAdapter(Batch).dump_python(batch, mode="json")
    group = json.loads(handle["group"])
    if "credential" in group:  # a hash of the key: not needed to poll or collect (pydantic-ai ignores it then)
        group["credential"] = ""
    handle["group"] = json.dumps(group, sort_keys=True)
    return handle


def _chat_body(call: Call, target: Target, model: Any, prompt: str) -> dict[str, Any]:
    """The Chat Completions request nbllm sends live (OpenAI's spelling of max tokens as the profile says)."""
    options = _model_settings(call, target, model)
    messages: list[dict[str, Any]] = []
    if call.request.system:
        messages.append({"role": "system", "content": call.request.system})
    messages.append({"role": "user", "content": prompt})
    body: dict[str, Any] = {"model": target.model, "messages": messages}
    if options.get("max_tokens") is not None:
        modern = model.profile.get("openai_chat_supports_max_completion_tokens", True)
        body["max_completion_tokens" if modern else "max_tokens"] = options["max_tokens"]
    if options.get("temperature") is not None:
        body["temperature"] = options["temperature"]
    return body


async def _files_submit(call: Call, target: Target, prompts: dict[str, str]) -> tuple[str, int]:
    from .factory import shared_model

    model = shared_model(target.spec, target.settings, target.model)
    client = model.client.with_options(max_retries=0)
    lines = [json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                         "body": _chat_body(call, target, model, prompt)}) for cid, prompt in prompts.items()]
    upload = await client.files.create(file=("batch.jsonl", "\n".join(lines).encode()), purpose="batch")
    batch = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    return batch.id, len(lines)


# ---- status, cancel ----------------------------------------------------------------------------------


def _target(ticket: BatchTicket) -> Target:
    """The ticket's provider as configured now; it must still point where the batch went."""
    from .registry import get_registry

    spec, settings = get_registry().require(ticket.provider)
    target = Target(spec, settings, ticket.model, "batch")
    if target.url != ticket.base_url:
        raise ConfigurationError(f"Batch {ticket.batch_id} was submitted to {ticket.base_url}, but {ticket.provider} "
                                 f"now points at {target.url}: set {spec.env_prefix}_BASE_URL back to collect it.")
    return target


def _client(ticket: BatchTicket, target: Target) -> Any:
    """The SDK client of the target (OpenAI's or Anthropic's), as nbllm built it for live calls."""
    from .factory import shared_model

    return shared_model(target.spec, target.settings, target.model).client


async def status(ticket: BatchTicket) -> BatchStatus:
    """The batch's state and counts, as the provider says now (one request)."""
    return await _batch_call(ticket, "retrieve")


async def cancel(ticket: BatchTicket) -> BatchStatus:
    """Ask the provider to stop the batch (what already ran stays collectable); its status after asking."""
    return await _batch_call(ticket, "cancel")


async def _batch_call(ticket: BatchTicket, action: str) -> BatchStatus:
    """`retrieve` or `cancel` the batch through the provider's SDK; its status, or one described failure."""
    target = _target(ticket)
    try:
        if ticket.protocol == "anthropic":
            raw = await getattr(_client(ticket, target).beta.messages.batches, action)(ticket.batch_id)
            return _anthropic_status(raw)
        raw = await getattr(_client(ticket, target).batches, action)(ticket.batch_id)
    except NbllmError:
        raise
    except Exception as exc:
        raise _failure(exc, target) from None
    return _openai_status(raw, ticket.total)


def _openai_status(raw: Any, total: int) -> BatchStatus:
    counts = raw.request_counts
    state = _OPENAI_STATES.get(raw.status, "running")  # a status added later is one it has not ended in
    return BatchStatus(state, counts.completed if counts else 0, counts.failed if counts else 0,
                       (counts.total if counts else 0) or total)


def _anthropic_status(raw: Any) -> BatchStatus:
    counts = raw.request_counts
    total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
    failed = counts.errored + counts.canceled + counts.expired
    if raw.processing_status != "ended":
        return BatchStatus("running", counts.succeeded, failed, total)
    state: State = ("cancelled" if raw.cancel_initiated_at is not None else
                    "expired" if counts.expired else "done")
    return BatchStatus(state, counts.succeeded, failed, total)


# ---- collect -------------------------------------------------------------------------------------------


async def collect(ticket: BatchTicket, call: Call | None = None) -> dict[str, "Answer | NbllmError"]:
    """Every request's outcome once the batch has ended: an `Answer` (text, tokens, batch-price cost), or the
    error that request got (`ModelError`; `OutputInvalid` for a typed answer that does not validate); a
    request the batch never ran (expired, cancelled) is a `NotRun` (a retryable `ModelError`). `{}` while it still runs.
    `call`: the call it was submitted for; needed when it asked for an `output_type`."""
    target = _target(ticket)
    if ticket.typed is not None:
        from .typed import schema_key

        if call is None or call.request.output_type is None or schema_key(call.request.output_type) != ticket.typed:
            raise ConfigurationError(f"Batch {ticket.batch_id} asked for a typed answer: collect it with the call "
                                     "it was submitted for (the same output_type=).")
    try:
        if ticket.protocol == "openai-files":
            return await _files_collect(ticket, target)
        return await _pydantic_collect(ticket, target, call)
    except NbllmError:
        raise
    except Exception as exc:
        raise _failure(exc, target) from None


async def _pydantic_collect(ticket: BatchTicket, target: Target, call: Call | None) -> dict[str, Any]:
    from pydantic import TypeAdapter
    from pydantic_ai.models.batch import Batch, BatchRequest

    assert ticket.handle is not None
    model = _batch_model(target, ticket.protocol)
    batch = await model.batch_status(TypeAdapter(Batch).validate_python(ticket.handle))
    if batch.status != "ended":
        return {}
    settings = _model_settings(call, target, model)
    parameters, extra = _parameters(call, model, target)
    settings.update(extra)
    plan = _plan(call)
    outcomes: dict[str, Any] = {}
    for result in await model.batch_results(batch):
        request = BatchRequest(custom_id=result.custom_id, messages=_messages(call, ""), model_settings=settings,
                               model_request_parameters=parameters)
        try:
            response = model.batch_decode(result, request)
        except Exception as exc:  # the request's own error (HTTP status and message), or it never ran
            outcomes[result.custom_id] = _request_failure(exc, target, result.status)
            continue
        outcomes[result.custom_id] = _answer(response, target, ticket, plan)
    return outcomes


def _plan(call: Call | None) -> Any:
    if call is None or call.request.output_type is None:
        return None
    from .typed import plan_for

    return plan_for(call.request.output_type)


async def _files_collect(ticket: BatchTicket, target: Target) -> dict[str, Any]:
    client = _client(ticket, target)
    raw = await client.batches.retrieve(ticket.batch_id)
    state = _openai_status(raw, ticket.total).state
    if state not in _ENDED:
        return {}
    outcomes: dict[str, Any] = {}
    for file_id in (raw.output_file_id, raw.error_file_id):
        if file_id:
            for line in (await client.files.content(file_id)).text.splitlines():
                if line.strip():
                    custom_id, outcome = _files_outcome(json.loads(line), target, ticket)
                    outcomes[custom_id] = outcome
    if len(outcomes) < ticket.total:  # requests the batch never ran have no line: the input file lists them
        why = _unrun_reason(raw)
        for line in (await client.files.content(raw.input_file_id)).text.splitlines():
            custom_id = json.loads(line).get("custom_id") if line.strip() else None
            if custom_id and custom_id not in outcomes:
                outcomes[custom_id] = (ModelError(target.provider, why, target.url) if raw.status == "failed" else
                                       NotRun(target.provider, why, target.url, retryable=True))
    return outcomes


def _unrun_reason(raw: Any) -> str:
    if raw.status == "failed":
        errors = getattr(raw.errors, "data", None) or []
        said = "; ".join(scrub(e.message) for e in errors if getattr(e, "message", None))
        return f"the batch failed before running this request ({said or 'no reason given'})"
    if raw.status == "expired":
        return "the batch expired (24 h) before this request ran"
    return "the batch was cancelled before this request ran"


def _files_outcome(line: dict[str, Any], target: Target, ticket: BatchTicket) -> tuple[str, Any]:
    """One line of a batch's output or error file as an Answer or the request's error."""
    custom_id = line.get("custom_id") or ""
    response = line.get("response") or None
    if response is None:
        error = line.get("error") or {}
        code = error.get("code") or ""
        reason = {"batch_expired": "the batch expired (24 h) before this request ran",
                  "batch_cancelled": "the batch was cancelled before this request ran"}.get(code)
        if reason:
            return custom_id, NotRun(target.provider, reason, target.url, retryable=True)
        return custom_id, ModelError(target.provider, f"the batch request failed: {scrub(error.get('message'))}",
                                     target.url, retryable=True)
    code, body = int(response.get("status_code") or 500), response.get("body") or {}
    if not 200 <= code < 300:
        from .errors import server_failed

        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message") if isinstance(error, dict) else error
        return custom_id, ModelError(target.provider, f"HTTP {code}: {scrub(message or 'no message')}", target.url,
                                     retryable=server_failed(code) or code == 429, status=code)
    from pydantic_ai.messages import ModelResponse, TextPart
    from pydantic_ai.usage import RequestUsage

    choice = (body.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    usage = body.get("usage") or {}
    response_obj = ModelResponse(parts=[TextPart(text)], model_name=body.get("model") or ticket.model,
                                 provider_name=target.provider, finish_reason="stop",
                                 usage=RequestUsage(input_tokens=usage.get("prompt_tokens") or 0,
                                                    output_tokens=usage.get("completion_tokens") or 0),
                                 provider_details={"processing": "batch"})
    answer = _answer(response_obj, target, ticket, None)
    if not usage:
        answer.input_tokens = answer.output_tokens = None
        if answer.cost_source != "local":  # no usage: the cost cannot be known (a local server's is 0 anyway)
            answer.cost_usd, answer.cost_source = None, "unknown"
    return custom_id, answer


def _answer(response: "ModelResponse", target: Target, ticket: BatchTicket, plan: Any) -> "Answer | NbllmError":
    """A decoded batch response as nbllm's Answer (typed: validated, or `OutputInvalid`)."""
    text = "".join(p.content for p in response.parts if getattr(p, "part_kind", "") == "text")
    output = None
    tokens_in, tokens_out = response.usage.input_tokens, response.usage.output_tokens
    cost, source = _batch_cost(target, response, tokens_in, tokens_out)
    if plan is not None:
        try:
            output, text = plan.parse(response)
        except NotValid as exc:
            return OutputInvalid(target.provider, plan.name, exc.problem, target.url, exc.text, tokens_in, tokens_out,
                                 cost, target.model, None)
    answer = Answer(text, target.provider, target.model, 0.0, tokens_in, tokens_out,
                    reason=f"batch {ticket.batch_id}", cost_usd=cost, output=output)
    answer.cost_source = source
    answer.messages = [response]
    return answer


def _batch_cost(target: Target, response: "ModelResponse", input_tokens: int, output_tokens: int) -> tuple[float | None, str]:
    """The batch price of one response (see the module docstring for where the discount comes from)."""
    from .prices import answer_cost

    cost, source = answer_cost(target.spec, target.settings, target.model, [response], input_tokens, output_tokens)
    if not cost or target.spec.name not in _DISCOUNTED or source not in ("declared", "genai-prices"):
        return cost, source
    if source == "declared":
        return cost * BATCH_DISCOUNT, source
    live = dataclasses.replace(response, provider_details={
        k: v for k, v in (response.provider_details or {}).items() if k != "processing"})
    try:
        undiscounted = float(live.cost().total_price)
    except Exception:
        return cost, source
    return (cost * BATCH_DISCOUNT if abs(undiscounted - cost) < 1e-12 else cost), source


# ---- errors ------------------------------------------------------------------------------------------


def _failure(exc: BaseException, target: Target, submitting: bool = False) -> NbllmError:
    """A failed submit/poll/download as one line (pydantic-ai's UserError: a setting the batch API refuses;
    a 404 on submitting: the server has no such endpoints — later, it is an unknown batch id)."""
    from pydantic_ai.exceptions import UserError

    if isinstance(exc, UserError):
        return ConfigurationError(f"{target.provider}'s batch API refuses this request: {scrub(str(exc))}")
    from .failures import describe_failure

    status = getattr(exc, "status_code", None)
    if status == 404 and submitting:
        return ConfigurationError(f"{target.provider} at {target.url} has no batch API (404 from its batches/files "
                                  f"endpoints): batch=True works with {_WITH_BATCHES}.")
    return describe_failure(_as_http(exc, target), target.provider, target.url, target.spec,
                            default_url=target.settings.base_url_is_default)


def _as_http(exc: BaseException, target: Target) -> BaseException:
    """An SDK status error (OpenAI's/Anthropic's `APIStatusError`) as pydantic-ai's ModelHTTPError, which
    `describe_failure` reads (status, body, Retry-After)."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        return exc
    from pydantic_ai.exceptions import ModelHTTPError

    response = getattr(exc, "response", None)
    headers = dict(getattr(response, "headers", None) or {})
    http = ModelHTTPError(status, target.model, getattr(exc, "body", None), headers=headers)
    http.__cause__ = exc
    return http


def _request_failure(exc: BaseException, target: Target, result_status: str) -> ModelError:
    """One request's own failure in a batch; one the batch never ran (expired, cancelled) may be sent again."""
    if result_status in ("expired", "canceled"):
        what = "expired (24 h)" if result_status == "expired" else "was cancelled"
        return NotRun(target.provider, f"the batch {what} before this request ran", target.url, retryable=True)
    from .failures import describe_failure

    return describe_failure(exc, target.provider, target.url, target.spec)


# ---- cancelling a job's open batches (jobs.drop, restart=True) -------------------------------


def notice(text: str) -> None:
    """One line in the notebook's output (or the terminal)."""
    print(f"nbllm: {text}", flush=True)


async def cancel_record(record: dict[str, Any]) -> str:
    """Cancel one stored batch record (best effort): one line saying how it went."""
    ticket = BatchTicket.from_dict(record["ticket"])
    try:
        status = await cancel(ticket)
    except NbllmError as exc:
        return f"could not cancel batch {ticket.batch_id} at {ticket.provider} ({exc}): cancel it there"
    return f"cancelled batch {ticket.batch_id} at {ticket.provider} (it is {status.state})"


def cancel_open(batches: list[dict[str, Any]]) -> list[str]:
    """Cancel every batch not collected yet (best effort): one line each saying how it went."""
    lines = []
    for record in batches:
        if record.get("collected"):
            continue
        if bridge.on_loop_thread():
            lines.append(f"batch {record['ticket']['batch_id']} at {record['ticket']['provider']} was not "
                         "cancelled (called from nbllm's loop): cancel it there")
            continue
        lines.append(bridge.run(cancel_record(record)))
    return lines
