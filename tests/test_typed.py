"""Typed answers (`output_type=`): the request each provider gets, the check of what came back,
the one validation retry, `OutputInvalid`, the mode per provider, replay, and the embedded
model constrained by the schema.

Cloud shapes are mocked with respx (`httpx2_mock`); the local servers are the real
`tests/fakeserver.py` (`replies=[...]` answers request N with the Nth reply, `tool_calls=True`
answers a request that offers tools with a tool call).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import typing
from typing import Any, Literal

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict

import nbllm
from nbllm import typed
from nbllm.errors import ConfigurationError, ModelError, OutputInvalid

from conftest import reset_nbllm


class Person(BaseModel):
    name: str
    age: int


@dataclasses.dataclass
class Place:
    city: str
    people: int


class Book(TypedDict):
    title: str
    year: int


# type, the reply's JSON, the value it validates as, the top-level properties of the schema sent
CASES: list[tuple[Any, str, Any, set[str]]] = [
    (Person, '{"name":"Ann","age":3}', Person(name="Ann", age=3), {"name", "age"}),
    (Place, '{"city":"Oslo","people":7}', Place("Oslo", 7), {"city", "people"}),
    (Book, '{"title":"Dune","year":1965}', {"title": "Dune", "year": 1965}, {"title", "year"}),
    (Literal["pos", "neg"], '{"response":"neg"}', "neg", {"response"}),
    (list[Person], '{"response":[{"name":"A","age":1},{"name":"B","age":2}]}',
     [Person(name="A", age=1), Person(name="B", age=2)], {"response"}),
    (list[str], '{"response":["a","b"]}', ["a", "b"], {"response"}),
    (int, '{"response":42}', 42, {"response"}),
    (float, '{"response":2.5}', 2.5, {"response"}),
    (bool, '{"response":true}', True, {"response"}),
]
CASE_IDS = ["model", "dataclass", "typeddict", "literal", "list-model", "list-str", "int", "float", "bool"]

KEYS = {"OPENAI_API_KEY": "sk-test-typed-openai-0000", "ANTHROPIC_API_KEY": "sk-ant-test-typed-0000",
        "GEMINI_API_KEY": "gemini-test-typed-0000"}


# ---- cloud shapes (respx) -----------------------------------------------------------------


def _openai_reply(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-5-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}


def _anthropic_reply(text: str) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 11, "output_tokens": 5}}


def _gemini_reply(text: str) -> dict[str, Any]:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 5, "totalTokenCount": 16},
            "modelVersion": "gemini-2.5-flash"}


CLOUD = {
    "openai": (r"https://api\.openai\.com/v1/chat/completions", _openai_reply),
    "anthropic": (r"https://api\.anthropic\.com/v1/messages.*", _anthropic_reply),
    "gemini": (r"https://generativelanguage\.googleapis\.com/v1beta/models/gemini-2\.5-flash:generateContent",
               _gemini_reply),
}


def _sent_schema(provider: str, body: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema in the request, checking it is where that provider's API expects it."""
    if provider == "openai":  # Chat Completions: response_format json_schema, strict
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        assert "tools" not in body
        return fmt["json_schema"]["schema"]
    if provider == "anthropic":  # Messages API: output_config.format (structured outputs), no tool
        assert set(body["output_config"]) == {"format"} and body["output_config"]["format"]["type"] == "json_schema"
        assert "tools" not in body and "tool_choice" not in body
        return body["output_config"]["format"]["schema"]
    config = body["generationConfig"]  # Gemini: the JSON mime type and responseJsonSchema
    assert config["responseMimeType"] == "application/json" and "tools" not in body
    return config["responseJsonSchema"]


def _core(schema: Any) -> Any:
    """A schema without what providers add or drop on the way (titles, additionalProperties, an
    enum's redundant type), so the one sent can be compared with the one the type describes."""
    if isinstance(schema, list):
        return [_core(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _core(v) for k, v in schema.items() if k not in ("title", "additionalProperties")}
    if "enum" in out:
        out.pop("type", None)
    if "required" in out:
        out["required"] = sorted(out["required"])
    return out


@pytest.fixture
def cloud_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    reset_nbllm()


@pytest.mark.parametrize("provider", list(CLOUD))
@pytest.mark.parametrize("output_type, reply, expected, properties", CASES, ids=CASE_IDS)
def test_each_type_through_each_cloud_shape(httpx2_mock, cloud_keys, provider, output_type, reply, expected,
                                            properties):
    url, shape = CLOUD[provider]
    route = httpx2_mock.post(url__regex=url).respond(200, json=shape(reply))
    answer = nbllm.ask("Tell me.", provider=provider, output_type=output_type)
    assert answer.ok and answer.output == expected and type(answer.output) is type(expected)
    assert answer.text == reply and json.loads(answer.text) == json.loads(reply)
    assert (answer.input_tokens, answer.output_tokens) == (11, 5)
    assert route.call_count == 1
    schema = _sent_schema(provider, json.loads(route.calls.last.request.content))
    assert schema["type"] == "object" and set(schema["properties"]) == properties
    assert sorted(schema["required"]) == sorted(properties)
    assert _core(schema) == _core(typed.plan_for(output_type).schema)


def test_a_literal_sends_its_labels_and_rejects_others(httpx2_mock, cloud_keys):
    route = httpx2_mock.post(url__regex=CLOUD["openai"][0]).respond(200, json=_openai_reply('{"response":"maybe"}'))
    with pytest.raises(OutputInvalid) as info:
        nbllm.ask("Sentiment?", provider="openai", output_type=Literal["pos", "neg"])
    schema = json.loads(route.calls.last.request.content)["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["response"]["enum"] == ["pos", "neg"]
    assert route.call_count == 2  # the one validation retry, then the failure
    assert info.value.text == '{"response":"maybe"}' and "'pos' or 'neg'" in info.value.problem


def test_a_cloud_retry_carries_the_problem_in_that_api_s_shape(httpx2_mock, cloud_keys):
    route = httpx2_mock.post(url__regex=CLOUD["anthropic"][0])
    route.side_effect = [_respond(_anthropic_reply('{"name":"Ann"}')), _respond(_anthropic_reply('{"name":"Ann","age":3}'))]
    answer = nbllm.ask("Ann is 3.", provider="anthropic", output_type=Person)
    assert answer.output == Person(name="Ann", age=3) and route.call_count == 2
    second = json.loads(route.calls[1].request.content)
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["user", "assistant", "user"]
    feedback = json.dumps(second["messages"][-1]["content"])
    assert "age: Field required" in feedback
    assert second["output_config"] == json.loads(route.calls[0].request.content)["output_config"]
    assert (answer.input_tokens, answer.output_tokens) == (22, 10)  # both replies are counted


def _respond(payload: dict[str, Any]) -> Any:
    import httpx  # respx's side effects are answered with its own (legacy httpx) Response

    return httpx.Response(200, json=payload)


# ---- a real local server ---------------------------------------------------------------------


@pytest.fixture
def lmstudio(fake_server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    reset_nbllm()
    return fake_server


def test_a_valid_reply_from_a_local_server(lmstudio):
    lmstudio.set(reply='{"name": "Ann", "age": 3}')
    answer = nbllm.ask("Ann is 3.", provider="lmstudio", output_type=Person)
    assert answer.output == Person(name="Ann", age=3) and answer.text == '{"name": "Ann", "age": 3}'
    assert str(answer) == answer.text and len(lmstudio.chat_requests()) == 1


def test_invalid_then_valid_is_two_requests_and_the_second_says_what_was_wrong(lmstudio):
    lmstudio.set(replies=['{"name": "Ann", "age": "three"}', '{"name": "Ann", "age": 3}'])
    answer = nbllm.ask("Ann is 3.", provider="lmstudio", output_type=Person)
    assert answer.ok and answer.output == Person(name="Ann", age=3) and answer.text == '{"name": "Ann", "age": 3}'
    sent = lmstudio.chat_requests()
    assert len(sent) == 2
    first, second = (r["body"]["messages"] for r in sent)
    assert first == [{"role": "user", "content": "Ann is 3."}]
    assert second[:2] == [first[0], {"role": "assistant", "content": '{"name": "Ann", "age": "three"}'}]
    feedback = second[-1]
    assert feedback["role"] == "user" and "age: Input should be a valid integer" in feedback["content"]
    assert sent[1]["body"]["response_format"] == sent[0]["body"]["response_format"]  # still constrained
    assert answer.input_tokens == 14 and answer.attempts == 2  # both replies counted: two requests were made


@pytest.mark.parametrize("reply, problem", [
    ('{"name": "Ann"}', "age: Field required"),
    ("Sure! Ann is three years old.", "Invalid JSON"),
    ("", "the answer was empty, not JSON"),
])
def test_always_invalid_is_output_invalid_with_the_raw_text(lmstudio, reply, problem):
    lmstudio.set(reply=reply)
    with pytest.raises(OutputInvalid) as info:
        nbllm.ask("Ann is 3.", provider="lmstudio", output_type=Person)
    error = info.value
    assert isinstance(error, ModelError) and error.provider == "lmstudio"
    assert error.text == reply and problem in error.problem
    assert "\n" not in error.problem and "\n" not in str(error)
    assert str(error).startswith("lmstudio at ") and "not a valid Person" in str(error)
    assert len(lmstudio.chat_requests()) == 2  # one retry fed back, never the policy's retries on top


def test_a_failed_typed_answer_keeps_nothing_secret(lmstudio, monkeypatch):
    secret = "sk-live-typed-0123456789abcdef0123"
    monkeypatch.setenv("LMSTUDIO_API_KEY", secret)
    reset_nbllm()
    lmstudio.set(reply=f'{{"name": "Bearer {secret}", "age": "{secret}"}}')
    with pytest.raises(OutputInvalid) as info:
        nbllm.ask("Ann is 3.", provider="lmstudio", output_type=Person)
    error = info.value
    headers = {k.lower(): v for k, v in lmstudio.chat_requests()[0]["headers"].items()}
    assert headers["authorization"] == f"Bearer {secret}"  # it was sent
    for shown in (str(error), error.text, error.problem, repr(error.args)):
        assert secret not in shown and "0123456789abcdef" not in shown
    assert "age: Input should be a valid integer" in error.problem


def test_tool_mode_answers_with_a_tool_call_and_a_retry_returns_to_it(lmstudio, monkeypatch):
    """A server without JSON-schema output gets the schema as an output tool (`tool_choice` required)."""
    monkeypatch.setattr(typed.OutputPlan, "mode", lambda self, model, spec: "tool")
    lmstudio.set(replies=['{"name": "Ann"}', '{"name": "Ann", "age": 3}'], tool_calls=True)
    answer = nbllm.ask("Ann is 3.", provider="lmstudio", output_type=Person)
    assert answer.output == Person(name="Ann", age=3) and json.loads(answer.text) == {"name": "Ann", "age": 3}
    first, second = (r["body"] for r in lmstudio.chat_requests())
    assert "response_format" not in first and first["tool_choice"] == "required"
    (tool,) = first["tools"]
    assert tool["function"]["name"] == "final_result"
    assert set(tool["function"]["parameters"]["properties"]) == {"name", "age"}
    call, back = second["messages"][-2:]
    assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {"name": "Ann"}
    assert back["role"] == "tool" and back["tool_call_id"] == call["tool_calls"][0]["id"]
    assert "age: Field required" in back["content"]


def test_prompted_mode_puts_the_schema_in_the_instructions(lmstudio, monkeypatch):
    monkeypatch.setattr(typed.OutputPlan, "mode", lambda self, model, spec: "prompted")
    lmstudio.set(reply='```json\n{"name": "Ann", "age": 3}\n```')  # a fenced answer is accepted
    answer = nbllm.ask("Ann is 3.", provider="lmstudio", output_type=Person)
    assert answer.output == Person(name="Ann", age=3)
    (body,) = (r["body"] for r in lmstudio.chat_requests())
    assert body["response_format"] == {"type": "json_object"} and "tools" not in body  # JSON, no schema
    system = body["messages"][0]
    assert system["role"] == "system" and '"age": {"type": "integer"}' in system["content"]


class _Profiled:
    def __init__(self, **profile: Any):
        self.profile = profile


@pytest.mark.parametrize("profile, mode", [
    ({"supports_json_schema_output": True, "supports_tools": True}, "native"),
    ({"supports_json_schema_output": False, "supports_tools": True}, "tool"),
    ({"supports_json_schema_output": False, "supports_tools": False}, "prompted"),
])
def test_the_strongest_mode_the_profile_allows(profile, mode):
    spec = nbllm.get_registry().spec("lmstudio")
    assert typed.plan_for(Person).mode(_Profiled(**profile), spec) == mode


# ---- the mode per provider ------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["llamacpp", "embedded"])
def test_llama_cpp_servers_get_the_schema_as_a_grammar(fake_server, monkeypatch, provider):
    monkeypatch.setenv(f"{provider.upper()}_BASE_URL", fake_server.url + "/v1")
    reset_nbllm()
    fake_server.set(reply='{"response": ["a", "b"]}')
    answer = nbllm.ask("Two letters.", provider=provider, output_type=list[str])
    assert answer.output == ["a", "b"]
    (body,) = (r["body"] for r in fake_server.chat_requests())
    assert body["response_format"] == {"type": "json_object", "schema": typed.plan_for(list[str]).schema}
    assert body["response_format"]["schema"]["properties"]["response"]["items"] == {"type": "string"}
    assert "tools" not in body
    assert body["messages"][0]["role"] == "system" and "schema" in body["messages"][0]["content"]


@pytest.mark.parametrize("provider", ["lmstudio", "vllm", "ollama", "openai"])
def test_servers_with_json_schema_get_it_natively(fake_server, monkeypatch, provider):
    variable = "OPENAI_BASE_URL" if provider == "openai" else f"{provider.upper()}_BASE_URL"
    monkeypatch.setenv(variable, fake_server.url + "/v1")
    if provider == "openai":
        monkeypatch.setenv("OPENAI_API_KEY", KEYS["OPENAI_API_KEY"])
    reset_nbllm()
    fake_server.set(reply='{"name": "Ann", "age": 3}')
    assert nbllm.ask("Ann is 3.", provider=provider, output_type=Person).output == Person(name="Ann", age=3)
    (body,) = (r["body"] for r in fake_server.chat_requests())
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Person" and fmt["json_schema"]["strict"]
    assert set(fmt["json_schema"]["schema"]["properties"]) == {"name", "age"} and "tools" not in body


# ---- replay -----------------------------------------------------------------------------------


def test_a_recorded_typed_answer_replays_as_the_same_value(lmstudio):
    lmstudio.set(reply='{"response": [{"name": "A", "age": 1}]}')
    recorded = nbllm.ask("People?", provider="lmstudio", output_type=list[Person], cache="record")
    lmstudio.set(mode="error", status=500)  # a replay must not need the server
    replayed = nbllm.ask("People?", provider="lmstudio", output_type=list[Person], cache="replay")
    assert replayed.cached and not recorded.cached
    assert replayed.output == recorded.output == [Person(name="A", age=1)]
    assert type(replayed.output[0]) is Person and replayed.text == recorded.text
    assert len(lmstudio.chat_requests()) == 1


def test_another_output_type_is_another_key(lmstudio):
    lmstudio.set(reply='{"name": "Ann", "age": 3}')
    nbllm.ask("Ann is 3.", provider="lmstudio", output_type=Person, cache="record")
    with pytest.raises(nbllm.errors.ReplayMiss):
        nbllm.ask("Ann is 3.", provider="lmstudio", output_type=Place, cache="replay")
    with pytest.raises(nbllm.errors.ReplayMiss):
        nbllm.ask("Ann is 3.", provider="lmstudio", cache="replay")  # the text question is another one too
    lmstudio.set(reply='{"response": 3}')
    assert nbllm.ask("Ann is 3.", provider="lmstudio", output_type=int, cache="record").output == 3
    assert nbllm.ask("Ann is 3.", provider="lmstudio", output_type=Person, cache="replay").output == Person(
        name="Ann", age=3)
    assert len(lmstudio.chat_requests()) == 2


# ---- usage mistakes ---------------------------------------------------------------------------


def test_a_typed_stream_is_one_configuration_error(lmstudio):
    with pytest.raises(ConfigurationError) as info:
        nbllm.stream("Ann is 3.", provider="lmstudio", output_type=Person)
    message = str(info.value)
    assert "\n" not in message and "cannot stream" in message and "nbllm.ask(" in message
    assert lmstudio.chat_requests() == []


class _Opaque:
    """A plain class: pydantic has no schema for it."""


class _Holder(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    thing: _Opaque


@pytest.mark.parametrize("bad", [_Opaque, _Holder, list[_Opaque], dict[str, _Opaque]], ids=str)
def test_a_type_pydantic_cannot_describe_is_one_configuration_error(lmstudio, bad):
    with pytest.raises(ConfigurationError) as info:
        nbllm.ask("Ann is 3.", provider="lmstudio", output_type=bad)
    message = str(info.value)
    assert "\n" not in message and f"output_type={bad!r} cannot be used" in message
    assert "Give a pydantic model" in message
    assert lmstudio.chat_requests() == []


class _PlainTypedDict(typing.TypedDict):  # pydantic itself takes only typing_extensions' before 3.12
    title: str
    year: int


@pytest.mark.parametrize("output_type, reply, expected", [
    (_PlainTypedDict, '{"title": "Dune", "year": 1965}', {"title": "Dune", "year": 1965}),
    (list[_PlainTypedDict], '{"response": [{"title": "Dune", "year": 1965}]}', [{"title": "Dune", "year": 1965}]),
], ids=["typeddict", "list-of-typeddict"])
def test_typing_s_own_typed_dict_works_on_every_python(lmstudio, output_type, reply, expected):
    lmstudio.set(reply=reply)
    assert nbllm.ask("Dune?", provider="lmstudio", output_type=output_type).output == expected
    (body,) = (r["body"] for r in lmstudio.chat_requests())
    assert "year" in json.dumps(body["response_format"]["json_schema"]["schema"])


# ---- the embedded model, constrained by the schema ------------------------------------------


class Review(BaseModel):
    sentiment: Literal["positive", "negative"]
    stars: int


REVIEWS = [
    "Loved it, five stars, would buy again.",
    "Terrible. Broke after one day. One star.",
    "Great sound and the battery lasts forever.",
    "Awful customer service, never again.",
    "Works perfectly, very happy with it.",
    "The worst purchase I have made this year.",
    "Fantastic value for the price.",
    "It arrived broken and smelled of smoke.",
    "My kids adore it, excellent quality.",
    "Cheap plastic, fell apart in a week.",
]


@pytest.mark.embedded
def test_the_embedded_model_extracts_a_model_from_ten_texts(monkeypatch):
    from nbllm import embedded

    monkeypatch.delenv("EMBEDDED_BASE_URL", raising=False)  # let it start its own server
    reset_nbllm()

    async def extract_all() -> list[Any]:
        return await asyncio.gather(*(
            nbllm.ask_async(f"Read this review and rate it.\nReview: {text}", provider="embedded",
                            output_type=Review, temperature=0, max_tokens=40)
            for text in REVIEWS))

    try:
        answers = asyncio.run(extract_all())
    finally:
        embedded.stop_server()
    assert [type(a.output) for a in answers] == [Review] * len(REVIEWS)  # every row valid
    for answer in answers:
        assert answer.ok and answer.provider == "embedded"
        assert Review.model_validate_json(answer.text) == answer.output
        assert answer.output.sentiment in ("positive", "negative") and isinstance(answer.output.stars, int)


# ---- what a trial found ------------------------------------------------------------------------


def test_chat_memory_keeps_the_question_and_the_answer_after_a_validation_retry(lmstudio):
    lmstudio.set(replies=['{"name": "Ann", "age": "three"}', '{"name": "Ann", "age": 3}'])
    chat = nbllm.conversation("typed")
    chat.reset()
    nbllm.ask("who is Ann?", provider="lmstudio", output_type=Person, chat=chat)
    assert chat.turns() == [("user", "who is Ann?"), ("assistant", '{"name": "Ann", "age": 3}')]
    lmstudio.set(replies=None, reply="three")
    nbllm.ask("and how old?", provider="lmstudio", chat=chat)
    sent = lmstudio.chat_requests()[-1]["body"]["messages"]
    assert [m["content"] for m in sent] == ["who is Ann?", '{"name": "Ann", "age": 3}', "and how old?"]


def test_an_answer_cut_off_by_max_tokens_says_so_and_is_not_retried(httpx2_mock, cloud_keys):
    cut = _openai_reply('{"name": "Ann", "a')
    cut["choices"][0]["finish_reason"] = "length"
    route = httpx2_mock.post("https://api.openai.com/v1/chat/completions").respond(200, json=cut)
    with pytest.raises(OutputInvalid) as caught:
        nbllm.ask("Ann is 3.", provider="openai", output_type=Person, max_tokens=7)
    error = caught.value
    assert "cut off at max_tokens=7" in str(error) and "raise max_tokens" in str(error)
    assert route.call_count == 1  # a retry would be cut off the same way
    assert error.model == "gpt-5-mini" and error.input_tokens == 11


def test_a_chain_whose_last_link_is_invalid_says_what_was_tried_first(lmstudio, monkeypatch):
    from conftest import _closed_port_url

    monkeypatch.setenv("LLAMACPP_BASE_URL", _closed_port_url())
    monkeypatch.setenv("LLAMACPP_MODEL", "m")
    reset_nbllm()
    lmstudio.set(reply='{"name": "Ann"}')
    with pytest.raises(OutputInvalid) as caught:
        nbllm.ask("who?", provider="llamacpp,lmstudio", output_type=Person)
    assert "tried first: llamacpp: connection refused" in str(caught.value)
    assert caught.value.text == '{"name": "Ann"}' and caught.value.problem == "age: Field required"
    row = nbllm.history().iloc[-1]
    assert row["answer"] == '{"name": "Ann"}' and row["input_tokens"] > 0


def test_a_raw_newline_inside_a_string_is_still_the_answer(lmstudio):
    lmstudio.set(reply='{"name": "Ann\nLee", "age": 3}')  # what llama.cpp's string grammar lets through
    assert nbllm.ask("who?", provider="lmstudio", output_type=Person).output == Person(name="Ann\nLee", age=3)


@pytest.mark.parametrize("bad", [lambda: 1, print, object])
def test_a_function_or_a_bare_object_is_not_an_output_type(bad):
    with pytest.raises(ConfigurationError, match="is not a type an answer can be"):
        nbllm.ask("x", output_type=bad)


def test_a_model_without_fields_is_one_error_before_anything_is_sent(lmstudio):
    with pytest.raises(ConfigurationError, match="has no fields"):
        nbllm.ask("x", provider="lmstudio", output_type=BaseModel)
    assert lmstudio.chat_requests() == []
