"""Typed answers: an `output_type` as pydantic-ai request parameters, and the check of what came back.

`plan_for(X)` turns a pydantic model, dataclass, TypedDict, `Literal[...]`, `list[...]` or a
scalar into an `OutputPlan`: its JSON schema (a type whose schema is not an object is wrapped
as `{"response": ...}`, as pydantic-ai does, because servers only take object schemas) and a
pydantic `TypeAdapter` that validates the answer. `OutputPlan.parameters` picks the provider's
strongest mode — pydantic-ai's `ModelRequestParameters`:

- **native** (`response_format: json_schema`) where the model's profile says the server
  supports JSON schema output (OpenAI, Gemini, Anthropic's newer models, LM Studio, vLLM,
  Ollama);
- **grammar**: servers built on llama.cpp's grammar engine (the `llamacpp` provider and the
  embedded model) get pydantic-ai's prompted mode plus `response_format: {"type":
  "json_object", "schema": …}`, which llama.cpp and llama-cpp-python turn into a grammar
  that constrains every token — so even SmolLM2 can only produce a valid object;
- **tool** output where tools are supported, else **prompted** (the schema in the instructions).

Why not `pydantic_ai.Agent(output_type=...)`: measured here, an agent run costs ~10 ms of CPU
per call against ~4 ms for `pydantic_ai.direct.model_request` with the same parameters; on a
500-row `map` that is the difference between 1.0× and 1.6× the text map. The validation retry
the agent would do (feed the error back once) is done in the pipeline with pydantic-ai's own
retry parts.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import NotValid

if TYPE_CHECKING:
    from pydantic_ai.messages import ModelRequest, ModelResponse
    from pydantic_ai.models import Model, ModelRequestParameters

    from .catalog import ProviderSpec

__all__ = ["OutputPlan", "plan_for", "schema_key", "GRAMMAR_PROBES"]

GRAMMAR_PROBES = ("llamacpp",)
"""Probe dialects of servers whose `json_object` + `schema` becomes a grammar (llama.cpp, llama-cpp-python)."""

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


@dataclass(frozen=True)
class OutputPlan:
    """How one output type is asked for and checked (built once per type)."""

    output_type: Any
    name: str
    schema: dict[str, Any]
    wrapped: bool
    adapter: Any

    def mode(self, model: "Model", spec: "ProviderSpec") -> str:
        """"native", "grammar", "tool" or "prompted" (see the module docstring)."""
        if spec.probe in GRAMMAR_PROBES or spec.prepare:
            return "grammar"
        profile = model.profile  # a TypedDict of capability facts (pydantic-ai's profiles)
        if profile.get("supports_json_schema_output", False):
            return "native"
        return "tool" if profile.get("supports_tools", True) else "prompted"

    def parameters(self, model: "Model", spec: "ProviderSpec") -> tuple["ModelRequestParameters", dict[str, Any]]:
        """pydantic-ai's request parameters for this type, and model settings to add (the grammar's)."""
        from pydantic_ai.models import ModelRequestParameters
        from pydantic_ai.output import OutputObjectDefinition
        from pydantic_ai.tools import ToolDefinition

        mode = self.mode(model, spec)
        definition = OutputObjectDefinition(json_schema=self.schema, name=self.name, strict=True)
        if mode == "tool":
            tool = ToolDefinition(name=_TOOL, parameters_json_schema=self.schema, kind="output",
                                  description=f"Give the answer as {self.name}.")
            return ModelRequestParameters(output_mode="tool", output_tools=[tool], allow_text_output=False), {}
        if mode == "grammar":
            grammar = {"extra_body": {"response_format": {"type": "json_object", "schema": self.schema}}}
            return ModelRequestParameters(output_mode="prompted", output_object=definition), grammar
        return ModelRequestParameters(output_mode=mode, output_object=definition), {}

    def parse(self, response: "ModelResponse") -> tuple[Any, str]:
        """The validated value and the text it came as; `NotValid` says what is wrong, keeping the text."""
        text = _answer_text(response)
        return self.parse_text(text), text

    def parse_text(self, text: str) -> Any:
        """`text` (a JSON answer, maybe in a ``` fence) validated; `NotValid` in one line otherwise."""
        from pydantic import ValidationError

        body = _FENCE.sub(r"\1", text) if "```" in text else text
        if not body.strip():
            raise NotValid("the answer was empty, not JSON", text)
        try:
            value = self.adapter.validate_json(body)
        except ValidationError as exc:
            problem: str | None = _problem(exc, self.wrapped)
        else:
            return value.response if self.wrapped else value
        try:  # a raw newline inside a string (llama.cpp's grammar lets one through) is still the answer
            loose = json.loads(body, strict=False)
        except ValueError:
            raise NotValid(problem, text) from None
        try:
            value = self.adapter.validate_python(loose)
        except ValidationError as exc:
            raise NotValid(_problem(exc, self.wrapped), text) from None
        return value.response if self.wrapped else value

    def retry_request(self, response: "ModelResponse", problem: str) -> "ModelRequest":
        """The message that feeds `problem` back once: pydantic-ai's retry parts (a tool return marked
        "retried" when the answer came as a tool call, else retry feedback for a validation error)."""
        from pydantic_ai.messages import ModelRequest, RetryFeedbackPart, RetryInfo, ToolCallPart, ToolReturnPart

        call = next((p for p in response.parts if isinstance(p, ToolCallPart)), None)
        message = f"Your answer was not valid: {problem}. Answer again with only valid JSON for {self.name}."
        if call is not None:
            return ModelRequest(parts=[ToolReturnPart(tool_name=call.tool_name, content=message,
                                                      tool_call_id=call.tool_call_id, outcome="retried",
                                                      retry=RetryInfo(cause="validation_error"))])
        return ModelRequest(parts=[RetryFeedbackPart(content=message, retry=RetryInfo(cause="validation_error"))])

    def dump(self, value: Any) -> str:
        """`value` as the JSON text a replay parses back."""
        return self.adapter.dump_json(self._wrap(value)).decode()

    def _wrap(self, value: Any) -> Any:
        return self.adapter.validate_python({"response": value}) if self.wrapped else value


_TOOL = "final_result"


def _answer_text(response: "ModelResponse") -> str:
    """A tool call's arguments, else the text parts."""
    from pydantic_ai.messages import TextPart, ToolCallPart

    for part in response.parts:
        if isinstance(part, ToolCallPart):
            return part.args_as_json_str()
    return "".join(p.content for p in response.parts if isinstance(p, TextPart))


def _problem(exc: Any, wrapped: bool = False) -> str:
    """A validation error in one line: the first few fields and what each lacked."""
    errors = exc.errors(include_url=False)
    parts = []
    for error in errors[:3]:
        loc = tuple(error.get("loc", ()))
        if wrapped and loc == ("response",) and error.get("type") == "missing":
            parts.append('expected a JSON object {"response": ...}')
            continue
        where = ".".join(str(x) for x in (loc[1:] if wrapped else loc))
        message = error.get("msg", "invalid")
        parts.append(f"{where}: {message}" if where else message)
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _pydantic_ready(output_type: Any) -> Any:
    """`typing.TypedDict` as the `typing_extensions` one pydantic needs before Python 3.12 (the
    values are plain dicts either way), also as the item of a `list[...]`; any other type as it is."""
    import sys
    import typing

    if sys.version_info >= (3, 12):
        return output_type
    if typing.get_origin(output_type) is list and len(typing.get_args(output_type)) == 1:
        item = typing.get_args(output_type)[0]
        ready = _pydantic_ready(item)
        return output_type if ready is item else list[ready]  # type: ignore[valid-type]
    if not typing.is_typeddict(output_type) or type(output_type).__module__ != "typing":
        return output_type
    import typing_extensions

    hints = typing.get_type_hints(output_type, include_extras=True)
    return typing_extensions.TypedDict(output_type.__name__, hints, total=output_type.__total__)


@functools.lru_cache(maxsize=128)
def _plan(output_type: Any) -> OutputPlan:
    from pydantic import TypeAdapter, create_model
    from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError

    import inspect

    from .errors import ConfigurationError

    if inspect.isroutine(output_type) or inspect.isclass(output_type) and output_type.__module__ == "builtins" \
            and output_type not in (str, int, float, bool, list, dict):
        raise ConfigurationError(f"output_type={output_type!r} is not a type an answer can be: give a pydantic "
                                 "model, a dataclass, a TypedDict, Literal[...], list[...], int, float, bool or str.")
    try:
        ready = _pydantic_ready(output_type)
        adapter = TypeAdapter(ready)
        schema = adapter.json_schema()
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError, NameError) as exc:
        raise ConfigurationError(f"output_type={output_type!r} cannot be used: pydantic cannot describe it "
                                 f"({str(exc).splitlines()[0]}). Give a pydantic model, a dataclass, a TypedDict, "
                                 "Literal[...], list[...], int, float, bool or str.") from None
    name = getattr(output_type, "__name__", None) or "answer"
    if schema.get("type") == "object" and schema.get("properties") == {}:  # e.g. pydantic's BaseModel itself
        raise ConfigurationError(f"output_type={name} has no fields, so no answer can fill it: give a class "
                                 "with the fields you want, e.g. class Person(BaseModel): name: str.")
    if schema.get("type") == "object" and "properties" in schema:
        return OutputPlan(output_type, name, schema, False, adapter)
    wrapper = create_model("Answer", response=(ready, ...))
    wrapper_adapter = TypeAdapter(wrapper)
    return OutputPlan(output_type, name, wrapper_adapter.json_schema(), True, wrapper_adapter)


def plan_for(output_type: Any) -> OutputPlan:
    """The plan for `output_type`, built once (types that cannot be hashed are built each time)."""
    try:
        return _plan(output_type)
    except TypeError as exc:
        if "unhashable" not in str(exc):
            raise
        return _plan.__wrapped__(output_type)


def schema_key(output_type: Any) -> str:
    """The schema as stable text, for the replay cache's key."""
    return json.dumps(plan_for(output_type).schema, sort_keys=True)
