"""`--schema`: the quick form (parsed, never run), schema names from the notebook, the table an
answer is shown as, and `%%llm --schema NAME -o var` end to end against the real fake server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import types
from typing import Literal

import pytest
from conftest import nbllm_shell, reset_nbllm, run_cell
from pydantic import BaseModel, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from nbllm.display import CELL_WIDTH, typed
from nbllm.errors import ConfigurationError
from nbllm.magics.llm import LLMMagics
from nbllm.schemas import quick_model, quick_type, resolve_schema

SECRET = "sk-test-secret-abcdef123456"


class Person(BaseModel):
    name: str
    age: int


@dataclasses.dataclass
class Point:
    x: float
    y: float


class Movie(TypedDict):
    title: str
    year: int


# ---- the quick form ------------------------------------------------------------------------


def test_quick_model_builds_each_type():
    model = quick_model("name: str, age: int, score: float, ok: bool, tags: list[str], "
                        "mood: Literal['pos', 'neg'], note: str | None, scores: dict[str, int], "
                        "born: date, seen: Optional[datetime]")
    props = model.model_json_schema()["properties"]
    assert [props[k]["type"] for k in ("name", "age", "score", "ok")] == ["string", "integer", "number", "boolean"]
    assert props["tags"] == {"items": {"type": "string"}, "title": "Tags", "type": "array"}
    assert props["mood"]["enum"] == ["pos", "neg"]
    assert {"type": "null"} in props["note"]["anyOf"] and {"type": "null"} in props["seen"]["anyOf"]
    assert props["scores"]["additionalProperties"] == {"type": "integer"}
    assert props["born"]["format"] == "date"
    value = model.model_validate({"name": "Ann", "age": "31", "score": 1, "ok": True, "tags": ["a"], "mood": "pos",
                                  "note": None, "scores": {"x": 2}, "born": "2001-02-03", "seen": None})
    assert value.age == 31 and value.born == dt.date(2001, 2, 3)
    with pytest.raises(ValidationError):
        model.model_validate({**value.model_dump(), "mood": "meh"})


def test_fields_without_defaults_are_required_and_defaults_are_kept():
    model = quick_model("name: str, age: int = 0, tags: list[str] = [], nick: str | None = None, "
                        "kind: Literal['a', 'b'] = 'b', rate: float = -1.5e2, on: bool = True")
    assert model.model_json_schema()["required"] == ["name"]
    one, two = model(name="A"), model(name="B")
    assert (one.age, one.tags, one.nick, one.kind, one.rate, one.on) == (0, [], None, "b", -150.0, True)
    one.tags.append("x")
    assert two.tags == []  # an empty list default is a new list each time


def test_names_pydantic_cannot_hold_keep_their_json_name():
    model = quick_model("from: str, json: int, 'first name': str, _id: str, model_name: str")
    schema = model.model_json_schema()
    assert list(schema["properties"]) == ["from", "json", "first name", "_id", "model_name"]
    value = model.model_validate({"from": "a", "json": 1, "first name": "Ann", "_id": "x", "model_name": "m"})
    assert value.model_dump() == {"from": "a", "json": 1, "first name": "Ann", "_id": "x", "model_name": "m"}


def test_quick_type_gives_single_types():
    assert quick_type("list[str]") == list[str]
    assert quick_type("Literal['pos', 'neg', 3]") == Literal["pos", "neg", 3]
    assert quick_type("int | None") == int | None
    assert quick_type("list[Person]", {"Person": Person}) == list[Person]
    assert quick_type("bool") is bool


def test_quoted_values_keep_escapes_and_separators_inside():
    model = quick_model(r"""label: Literal['a, b: c', "it's", 'tab\there'] = 'a, b: c'""")
    assert model.model_json_schema()["properties"]["label"]["enum"] == ["a, b: c", "it's", "tab\there"]


@pytest.mark.parametrize("text, expected", [
    ("name: str, age: integr", "unknown type 'integr' for field age (did you mean int?); known: str, int, float"),
    ("age int", "expected ':' after the field name 'age'"),
    ("age: int,, x: str", "expected a field name, found ','"),
    ("tags: list[str", "field tags: expected ']' after list's item type, found the end"),
    ("mood: Literal['a", "an unclosed quote at position 15"),
    ("mood: Literal[]", "field mood: expected a literal value"),
    ("age: int = 'old'", "field age: the default 'old' does not fit int"),
    ("tags: list[str] = ['a']", "a default list can only be empty"),
    ("m: dict[int, str]", "field m: dict keys must be str (JSON object keys), not 'int'"),
    ("a: int, a: str", "field a: the field is given twice"),
    ("a: int; b: str", "an unexpected ';' at position 7"),
    ("a: int = 3 4", "expected ',' before '4'"),
    ("   ", "The schema is empty"),
    ("x: Persn", "unknown type 'Persn' for field x (did you mean Person?)"),
])
def test_mistakes_are_one_line_naming_what_is_wrong(text, expected):
    with pytest.raises(ConfigurationError) as caught:
        quick_type(text, {"Person": Person})
    message = str(caught.value)
    assert expected in message and "\n" not in message, message


def test_nothing_in_the_text_is_run(tmp_path):
    marker = tmp_path / "ran"
    code = f"__import__('os').system('touch {marker}')"
    calls: list[str] = []

    class Spy:
        @property
        def Model(self) -> type:  # would run if the reader read attributes of an instance
            calls.append("read")
            return Person

    namespace = {"os": __import__("os"), "spy": Spy()}
    for text in (code, f"x: str = {code}", f"x: {code}", "x: os.system", "x: spy.Model", f"x: Literal[{code}]"):
        with pytest.raises(ConfigurationError):
            quick_type(text, namespace)
    assert not marker.exists() and calls == []


# ---- schema names --------------------------------------------------------------------------


def test_resolve_schema_finds_classes_and_forms_in_the_namespace():
    Sentiment = Literal["pos", "neg"]
    namespace = {"Person": Person, "Point": Point, "Movie": Movie, "Sentiment": Sentiment,
                 "models": types.SimpleNamespace(), "mod": types.ModuleType("mod")}
    namespace["mod"].Person = Person
    assert resolve_schema("Person", namespace) is Person
    assert resolve_schema(" Point ", namespace) is Point
    assert resolve_schema("Movie", namespace) is Movie
    assert resolve_schema("Sentiment", namespace) == Sentiment
    assert resolve_schema("mod.Person", namespace) is Person
    assert resolve_schema("int", namespace) is int
    assert resolve_schema(Person, {}) is Person
    quick = resolve_schema("name: str, friend: Person", namespace)
    assert quick.model_validate({"name": "A", "friend": {"name": "B", "age": 2}}).friend == Person(name="B", age=2)


@pytest.mark.parametrize("name, expected", [
    ("Persn", "unknown schema 'Persn' (did you mean Person?): give a class defined in the notebook, or fields"),
    ("count", "'count' is a value of type int, not a type"),
    ("person", "'person' is a value of type Person, not a type"),
])
def test_resolve_schema_names_what_a_name_is(name, expected):
    namespace = {"Person": Person, "count": 3, "person": Person(name="A", age=1)}
    with pytest.raises(ConfigurationError) as caught:
        resolve_schema(name, namespace)
    assert str(caught.value).startswith(expected) and "Person" in str(caught.value)


def test_resolve_schema_refuses_objects_that_are_not_types():
    with pytest.raises(ConfigurationError, match="is not a schema"):
        resolve_schema(Person(name="A", age=1), {})


# ---- the table -----------------------------------------------------------------------------


def test_one_object_is_a_field_value_table():
    shown = typed(Person(name="Ann <b>", age=31), title="Person")
    assert shown.value == Person(name="Ann <b>", age=31)
    assert shown.bundle["text/plain"].splitlines() == ["field  value", "-----  -------", "name   Ann <b>", "age    31"]
    html = shown.bundle["text/html"]
    assert "<caption>Person</caption>" in html and "<td>Ann &lt;b&gt;</td>" in html and "<b>" not in html
    assert html.count("<tr>") == 3  # the header and two fields


def test_a_list_of_objects_is_one_row_each():
    shown = typed([Point(1.0, 2.0), Point(3.5, -1.0)])
    assert shown.bundle["text/plain"].splitlines() == ["x    y", "---  ----", "1.0  2.0", "3.5  -1.0"]
    assert shown.bundle["text/html"].count("<tr>") == 3
    movies = typed([Movie(title="Alien", year=1979), {"title": "Heat", "year": 1995}]).bundle["text/plain"]
    assert movies.splitlines()[2:] == ["Alien  1979", "Heat   1995"]


def test_nested_values_are_json_and_long_cells_are_cut_only_in_plain_text():
    model = quick_model("tags: list[str], text: str, friend: Person | None", {"Person": Person})
    long = "word " * 40
    shown = typed(model(tags=["a", "b"], text=long, friend=None))
    plain = shown.bundle["text/plain"].splitlines()
    assert plain[2] == 'tags    ["a", "b"]' and plain[4] == "friend  null"
    assert plain[3].endswith("…") and len(plain[3]) == len("text    ") + CELL_WIDTH
    assert long.strip() in shown.bundle["text/html"]


def test_plain_values_and_text_format():
    assert typed("pos").bundle == {"text/plain": "pos", "text/html": "<code>pos</code>"}
    assert typed(["a", "b"]).bundle["text/plain"].splitlines() == ["#  value", "-  -----", "0  a", "1  b"]
    assert set(typed(Person(name="A", age=1), "text").bundle) == {"text/plain"}


# ---- %%llm --schema against the fake server ---------------------------------------------------


@pytest.fixture
def ip(local_provider, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    monkeypatch.setenv("LMSTUDIO_API_KEY", SECRET)
    reset_nbllm()
    with nbllm_shell() as shell:
        shell.user_ns.update(Person=Person, Point=Point)
        yield shell


def sent(server) -> list[dict]:
    return [r["body"] for r in server.chat_requests()]


def test_schema_cell_stores_the_object_and_shows_a_table(ip, local_provider):
    local_provider.set(reply='{"name": "Ann", "age": 31}')
    result, outputs, text = run_cell(ip, "%%llm --schema Person -o p\nWho is Ann?")
    assert result.success and text == ""
    assert ip.user_ns["p"] == Person(name="Ann", age=31)
    (shown,) = outputs  # not streamed: one display
    assert shown["data"]["text/plain"].splitlines()[2:] == ["name   Ann", "age    31"]
    assert "<caption>Person</caption>" in shown["data"]["text/html"]
    meta = shown["metadata"]["nbllm"]
    assert (meta["provider"], meta["model"], meta["schema"], meta["error"]) == ("lmstudio", "fake-model", "Person", None)
    assert meta["usage"] == {"input_tokens": 7, "output_tokens": 4}
    (body,) = sent(local_provider)
    assert not body.get("stream")
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["name", "age"]


def test_quick_form_and_a_list_of_objects(ip, local_provider):
    local_provider.set(reply=json.dumps({"response": [{"title": "Alien", "year": 1979}, {"title": "Heat", "year": 1995}]}))
    result, outputs, _ = run_cell(ip, '%%llm --schema "list[Film]" -o films\nTwo films')
    assert not result.success  # Film is not defined yet: one line, nothing sent
    assert sent(local_provider) == []
    run_cell(ip, 'from typing_extensions import TypedDict\nclass Film(TypedDict):\n    title: str\n    year: int')
    result, outputs, _ = run_cell(ip, '%%llm --schema "list[Film]" -o films\nTwo films')
    assert result.success
    assert ip.user_ns["films"] == [{"title": "Alien", "year": 1979}, {"title": "Heat", "year": 1995}]
    assert outputs[-1]["data"]["text/plain"].splitlines() == ["title  year", "-----  ----", "Alien  1979", "Heat   1995"]
    local_provider.set(reply='{"name": "Bo", "tags": ["x"]}')
    result, outputs, _ = run_cell(ip, '%%llm --schema "name: str, tags: list[str], nick: str | None = None" -o q\nBo')
    assert result.success
    q = ip.user_ns["q"]
    assert (q.name, q.tags, q.nick) == ("Bo", ["x"], None)
    assert "<caption>" not in outputs[-1]["data"]["text/html"]  # a quick form has no class name to show


def test_a_literal_schema_gives_the_label(ip, local_provider):
    local_provider.set(reply='{"response": "neg"}')
    result, outputs, _ = run_cell(ip, "%%llm --schema \"Literal['pos', 'neg']\" -o label\nI hated it")
    assert result.success and ip.user_ns["label"] == "neg"
    assert outputs[-1]["data"]["text/plain"] == "neg"


def test_line_form_returns_the_object(ip, local_provider):
    local_provider.set(reply='{"x": 1, "y": 2.5}')
    result, outputs, _ = run_cell(ip, "pt = %llm --schema Point a point, please")
    assert result.success and outputs == []
    assert ip.user_ns["pt"] == Point(1.0, 2.5)
    assert sent(local_provider)[-1]["messages"][-1]["content"] == "a point, please"


def test_an_answer_that_stays_invalid_is_one_line_and_keeps_the_text(ip, local_provider):
    local_provider.set(reply='{"name": "Ann", "age": "old"}')
    ip.user_ns["p"] = Person(name="Old", age=1)  # an earlier cell's value must not pass for this one's
    result, outputs, text = run_cell(ip, "%%llm --schema Person -o p\nWho is Ann?")
    assert not result.success
    (line,) = text.strip().splitlines()
    assert line.startswith(f"nbllm: lmstudio at {local_provider.url}/v1: the answer is not a valid Person (age: ")
    assert line.endswith("; p is None; its text is shown above") and SECRET not in text and "Traceback" not in text
    assert ip.user_ns["p"] is None  # never the raw text: p.name would fail far from here
    assert outputs[-1]["data"] == {"text/plain": '{"name": "Ann", "age": "old"}'}
    meta = outputs[-1]["metadata"]["nbllm"]
    assert meta["error"].startswith("lmstudio at ")
    assert meta["model"] == "fake-model" and meta["latency_ms"] > 0 and meta["schema"] == "Person"
    assert meta["usage"] == {"input_tokens": 14, "output_tokens": 8}  # both replies, as the valid case's 7 and 4
    first, second = sent(local_provider)  # the problem was fed back once
    assert "age" in second["messages"][-1]["content"]


def test_invalid_then_valid_answers(ip, local_provider):
    replies = iter(['{"name": "Ann"}', '{"name": "Ann", "age": 31}'])
    local_provider.reply_for = lambda body: next(replies)
    try:
        result, outputs, text = run_cell(ip, "%%llm --schema Person -o p\nWho is Ann?")
    finally:
        del local_provider.reply_for
    assert result.success and text == "" and ip.user_ns["p"] == Person(name="Ann", age=31)
    assert len(sent(local_provider)) == 2


def test_invalid_without_o_says_where_the_text_is(ip, local_provider):
    local_provider.set(reply="I cannot say.")
    result, outputs, text = run_cell(ip, "%%llm --schema Person\nWho?")
    assert not result.success and text.strip().endswith("; its text is shown above")
    assert outputs[-1]["data"]["text/plain"] == "I cannot say."
    result, outputs, text = run_cell(ip, "x = %llm --schema Person who")
    assert not result.success and text.strip().endswith("; its text is shown above") and "x" not in ip.user_ns
    assert outputs[-1]["data"]["text/plain"] == "I cannot say."  # the line form shows only an invalid answer
    result, outputs, text = run_cell(ip, "%llm --schema Person -o y who")
    assert text.strip().endswith("; y is None; its text is shown above") and ip.user_ns["y"] is None


@pytest.mark.parametrize("cell, expected", [
    ("%%llm --schema Person -f json\nhi", "UsageError: --schema validates the answer into an object: leave out -f json"),
    ("%%llm --schema Person -f code\nhi", "UsageError: --schema validates the answer into an object: leave out -f code"),
    ('%%llm --schema "name: str, age: integr"\nhi',
     "nbllm: unknown type 'integr' for field age (did you mean int?); known: str, int,"),
    ("%%llm --schema count\nhi", "nbllm: 'count' is a value of type int, not a type"),
    ("%%llm --schema Persn\nhi", "nbllm: unknown schema 'Persn' (did you mean Person?)"),
    ("%%llm --schema\nhi", "UsageError: argument --schema: expected one argument"),
])
def test_schema_mistakes_are_one_line_and_send_nothing(ip, local_provider, cell, expected):
    ip.user_ns["count"] = 3
    result, outputs, text = run_cell(ip, cell)
    assert not result.success and outputs == []
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), text
    assert sent(local_provider) == []


def test_text_format_and_a_json_default_format(ip, local_provider):
    local_provider.set(reply='{"name": "Ann", "age": 31}')
    result, outputs, _ = run_cell(ip, "%%llm --schema Person -f text\nWho?")
    assert result.success and set(outputs[-1]["data"]) == {"text/plain"}
    run_cell(ip, '%config LLMMagics.default_format = "json"')  # a default, not asked for: the table wins
    result, outputs, _ = run_cell(ip, "%%llm --schema Person -o p\nWho?")
    assert result.success and "text/html" in outputs[-1]["data"] and ip.user_ns["p"].age == 31


def test_terminal_prints_the_table(ip, local_provider, capsys):
    local_provider.set(reply='{"name": "Ann", "age": 31}')
    ip.run_cell("%%llm --schema Person -o p\nWho?")
    assert capsys.readouterr().out.splitlines() == ["field  value", "-----  -----", "name   Ann", "age    31"]


def test_compare_with_a_schema(ip, local_provider):
    local_provider.set(reply='{"name": "Ann", "age": 31}')
    result, _, _ = run_cell(ip, "%%llm --schema Person --compare lmstudio -o table\nWho?")
    assert result.success
    table = ip.user_ns["table"]
    assert list(table["valid"]) == [True] and table["output"][0] == Person(name="Ann", age=31)


def test_help_documents_schema():
    doc = LLMMagics.llm.__doc__
    assert "--schema NAME" in doc and "TypedDict" in doc and "Literal['a', 'b']" in doc
