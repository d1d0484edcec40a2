"""Typed answers over DataFrames: row templates, typed columns with failures kept in place,
classify and extract — the pure parts directly, then end to end against a real local server."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from dataclasses import dataclass
from typing import Literal, Optional

import pandas as pd
import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

import nbllm
from nbllm import batch
from nbllm.batch import failures
from nbllm.errors import ConfigurationError
from nbllm.frames import Shape, Template, checked_labels, frame

from conftest import reset_nbllm


class Review(BaseModel):
    title: str
    stars: int
    score: float
    spam: bool
    mood: Literal["happy", "angry", "meh"]
    tags: list[str]


@dataclass
class Point:
    x: int
    label: Optional[str] = None


class Contact(TypedDict):
    name: str
    age: int


@pytest.fixture
def lms(fake_server, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    monkeypatch.setenv("LMSTUDIO_TIMEOUT", "5")
    reset_nbllm()
    return fake_server


def first_prompts(server) -> list[str]:
    """The first user message of every chat request (a validation retry repeats its row's)."""
    return [r["body"]["messages"][0]["content"] for r in server.chat_requests()]


def review_json(title: str, stars: int = 4) -> str:
    return json.dumps({"title": title, "stars": stars, "score": stars / 2, "spam": stars == 1,
                       "mood": "happy" if stars > 3 else "meh", "tags": [title, "x"]})


# ---- row templates (pure) ---------------------------------------------------------------------


def test_a_row_template_fills_columns_and_the_index_verbatim():
    df = pd.DataFrame({"title": ["Dune {value}", "Emma"], "author": ["Herbert", "{author}"], "n": [3, 12]},
                      index=["a", "b"])
    template = Template.parse('#{index}: {title} by {author} ({n}) {{literal}} {"json": 1}', list(df.columns))
    prompts, index = template.prompts(df)
    assert list(index) == ["a", "b"]
    assert prompts == ['#a: Dune {value} by Herbert (3) {literal} {"json": 1}',
                       '#b: Emma by {author} (12) {literal} {"json": 1}']


def test_ints_stay_ints_and_odd_column_names_work():
    df = pd.DataFrame({0: [1, 2], "unit price": [2.5, None], "first-name": ["a", "b"]})
    prompts, _ = Template.parse("{0}|{unit price}|{first-name}", list(df.columns)).prompts(df)
    assert prompts == ["1|2.5|a", "2||b"]  # a row is not one dtype: 1 stays "1", not "1.0"


def test_a_series_template_is_as_before_plus_index():
    series = pd.Series(["x {} y", None], index=[10, 11])
    prompts, _ = Template.parse("{index}: {value} {other} {{v}}").prompts(series)
    assert prompts == ["10: x {} y {other} {v}", None]
    assert batch.render("Q: {}", 3) == "Q: 3"


@pytest.mark.parametrize("template, expected", [
    ("{titel} by {author}", r"\{titel\}, which is no column \(did you mean \{title\}\?\)\. Columns: title, author"),
    ("{Author}", r"did you mean \{author\}"),
    ("{value}", r"A DataFrame's template names its columns, e\.g\. \{title\}"),
    ("{}", r"names its columns"),
    ("{a} and {b c}", r"\{a\}, \{b c\}, which are no columns"),
])
def test_a_missing_column_is_one_error_naming_the_columns(template, expected):
    with pytest.raises(ConfigurationError, match=expected):
        Template.parse(template, ["title", "author"])


@pytest.mark.parametrize("template, columns, expected", [
    ("cost {price:.2f} {t!r}", ["price", "t"], r"write \{price\} for \{price:\.2f\}, \{t\} for \{t!r\}"),
    ("{price!s:>10}", ["price"], r"write \{price\} for \{price!s:>10\}"),
    ("{unit price:,}", ["unit price"], r"write \{unit price\} for \{unit price:,\}"),
    ("{other:.1%}", ["price"], r"write \{other\} for \{other:\.1%\}"),
    ("{:.2f}", None, r"write \{value\} for \{:\.2f\}"),
    ("{index!r} {value}", None, r"write \{index\} for \{index!r\}"),
])
def test_a_format_spec_is_one_error_naming_the_plain_placeholder(template, columns, expected):
    with pytest.raises(ConfigurationError, match="Format specs are not supported in templates: " + expected):
        Template.parse(template, columns)


def test_braces_that_are_no_format_spec_stay_as_written():
    template = Template.parse('{x: 1} {"a": 2} {a:b} {price}', ["price", "a:b"])
    assert template.fill(row={"price": 3, "a:b": "col"}) == '{x: 1} {"a": 2} col 3'  # a column named a:b wins
    assert Template.parse("{foo:.2f} {}").fill("v") == "{foo:.2f} v"  # a Series' unknown names stay as always


def test_missing_values_skip_a_row_only_when_all_its_used_values_are():
    df = pd.DataFrame({"title": ["A", None, float("nan"), None], "body": ["b", "c", None, pd.NA],
                       "unused": [1, 2, 3, 4]}, index=list("wxyz"))
    df["when"] = pd.to_datetime(["2024-01-01", None, None, None])
    prompts, _ = Template.parse("{title}/{body}/{when}", list(df.columns)).prompts(df)
    assert prompts[0] == "A/b/2024-01-01 00:00:00"
    assert prompts[1] == "/c/"  # NaN and NaT render as nothing
    assert prompts[2:] == [None, None]  # every used value missing: not sent (the unused column does not count)


# ---- typed columns (pure) ---------------------------------------------------------------------


def test_columns_are_typed_and_a_failed_row_keeps_its_place_with_na():
    good = Review(title="t", stars=5, score=2.5, spam=False, mood="angry", tags=["a", "b"])
    result = frame(Shape.of(Review), pd.Index(["r1", "r2", "r3"]), [good, None, good],
                   [None, "invalid output: x", None])
    assert list(result.columns) == ["title", "stars", "score", "spam", "mood", "tags", "_error"]
    assert {c: str(t) for c, t in result.dtypes.items()} == {
        "title": "string", "stars": "Int64", "score": "float64", "spam": "boolean", "mood": "category",
        "tags": "object", "_error": "string"}
    assert list(result["mood"].cat.categories) == ["happy", "angry", "meh"]
    assert result.loc["r1", "stars"] == 5 and result.loc["r3", "tags"] == ["a", "b"]
    assert result.loc["r2"].drop("_error").isna().all() and result.loc["r2", "_error"] == "invalid output: x"
    assert result["_error"].isna().tolist() == [True, False, True]


def test_dtypes_come_from_the_annotations_never_from_the_data():
    result = frame(Shape.of(Point), pd.RangeIndex(2), [Point(1), Point(2, "b")], [None, None])
    assert str(result["x"].dtype) == "Int64" and str(result["label"].dtype) == "string"
    assert result["label"].isna().tolist() == [True, False]  # Optional[str] None is NA
    good = Review(title="t", stars=5, score=2.5, spam=False, mood="meh", tags=[])
    all_valid = frame(Shape.of(Review), pd.RangeIndex(2), [good, good], [None, None])
    one_failed = frame(Shape.of(Review), pd.RangeIndex(2), [good, None], [None, "boom"])
    assert dict(all_valid.dtypes) == dict(one_failed.dtypes)  # one run's dtypes are every run's
    both = pd.concat([all_valid, one_failed], ignore_index=True)
    assert dict(both.dtypes) == dict(all_valid.dtypes)
    assert str(both["stars"].dtype) == "Int64" and str(both["_error"].dtype) == "string"


def test_dates_and_datetimes_are_datetime64_columns():
    import datetime as dt

    class Event(BaseModel):
        day: dt.date
        at: Optional[dt.datetime]
        utc: dt.datetime

    zone = dt.timezone(dt.timedelta(hours=2))
    events = [Event(day=dt.date(2024, 5, 1), at=dt.datetime(2024, 5, 1, 9, 30), utc=dt.datetime(2024, 5, 1, 9, tzinfo=zone)),
              None]
    result = frame(Shape.of(Event), pd.RangeIndex(2), events, [None, "boom"])
    assert {c: str(t) for c, t in result.dtypes.items()} == {
        "day": "datetime64[us]", "at": "datetime64[us]", "utc": "datetime64[us, UTC]", "_error": "string"}
    assert result.loc[0, "day"] == pd.Timestamp("2024-05-01") and result.loc[0, "at"].minute == 30
    assert result.loc[0, "utc"] == pd.Timestamp("2024-05-01 07:00", tz="UTC")
    assert result.loc[1, ["day", "at", "utc"]].isna().all()


def test_a_quick_form_alias_is_the_column_name_as_written():
    from nbllm.display import table_rows
    from nbllm.schemas import quick_model

    model = quick_model("class: str, 'first name': int")
    value = model.model_validate({"class": "A", "first name": 1})
    result = frame(Shape.of(model), pd.RangeIndex(2), [value, None], [None, "boom"])
    assert list(result.columns) == ["class", "first name", "_error"]
    assert result.loc[0, "class"] == "A" and result.loc[0, "first name"] == 1
    assert [row[0] for row in table_rows(value)[1]] == ["class", "first name"]  # the display's names too


def test_typed_dicts_and_scalars():
    result = frame(Shape.of(Contact), pd.RangeIndex(2), [{"name": "Ann", "age": 40}, None], [None, "boom"])
    assert result["age"].tolist()[0] == 40 and str(result["age"].dtype) == "Int64"
    scalar = frame(Shape.of(list[int]), pd.RangeIndex(3), [[1, 2], [3, 4], None], [None, None, "boom"])
    assert list(scalar.columns) == ["output", "_error"]
    assert scalar["output"].tolist() == [[1, 2], [3, 4], None]  # lists stay one per cell
    labels = frame(Shape.of(Literal["b", "a"]), pd.RangeIndex(2), ["a", None], [None, "x"])
    assert list(labels["output"].cat.categories) == ["b", "a"]


def test_a_field_named_like_the_error_column_is_refused():
    @dataclass
    class Odd:
        _error: str

    with pytest.raises(ConfigurationError, match="_error"):
        Shape.of(Odd)


@pytest.mark.parametrize("labels, expected", [
    ("positive", "list of labels"), (["a"], "at least two"), (["a", "a"], "more than once"),
    (["a", ""], "non-empty strings"), (["a", 1], "non-empty strings"),
])
def test_bad_labels(labels, expected):
    with pytest.raises(ConfigurationError, match=expected):
        checked_labels(labels)


# ---- end to end against a real local server -----------------------------------------------------


def test_map_over_rows_with_an_output_type_gives_typed_columns_and_keeps_failures(lms):
    def reply(prompt: str) -> str:
        if "broken" in prompt:
            return "I think it is good"  # not JSON, twice: the row fails
        if "wrong" in prompt:
            return json.dumps({"title": "w", "stars": "many"})  # JSON, not a Review
        return review_json(prompt.split("|")[0], stars=int(prompt.split("|")[1]))

    lms.set(replies=reply)
    df = pd.DataFrame({"title": ["good", "broken", "fine", "wrong", None],
                       "n": pd.array([5, 2, 1, 3, None], dtype="Int64")},
                      index=[100, 101, 102, 103, 104])
    result = nbllm.map(df, "{title}|{n}", provider="lmstudio", output_type=Review, progress=False)
    assert list(result.index) == [100, 101, 102, 103, 104]
    assert result.loc[100, "title"] == "good" and result.loc[100, "stars"] == 5 and result.loc[102, "spam"]
    assert str(result["stars"].dtype) == "Int64" and str(result["mood"].dtype) == "category"
    assert list(result["mood"].cat.categories) == ["happy", "angry", "meh"]
    assert result["_error"][[100, 102]].isna().all() and str(result["_error"].dtype) == "string"
    assert result.loc[101, "_error"].startswith("invalid output: ") and "JSON" in result.loc[101, "_error"]
    assert "stars" in result.loc[103, "_error"] and "integer" in result.loc[103, "_error"]
    assert "missing" in result.loc[104, "_error"]
    assert result.loc[[101, 103, 104]].drop(columns="_error").isna().all().all()
    stats = result.attrs["nbllm"]
    assert {k: stats[k] for k in ("rows", "ok", "failed", "skipped", "invalid", "interrupted")} == \
        {"rows": 5, "ok": 2, "failed": 2, "skipped": 1, "invalid": 2, "interrupted": 0}
    assert stats["valid_rate"] == 0.5 and stats["input_tokens"] > 0 and stats["output_tokens"] > 0
    assert "elapsed_s" in stats and "cost_usd" in stats
    # the invalid rows had their one validation retry; the missing row was never sent
    assert sorted(first_prompts(lms)) == sorted(["good|5", "broken|2", "broken|2", "fine|1", "wrong|3", "wrong|3"])
    assert list(failures(result).index) == [101, 103, 104]


def test_invalid_then_valid_is_one_good_row(lms):
    lms.set(replies=lambda p: review_json("second") if "not valid" in p else '{"title": "first"}')
    result = nbllm.map(["a"], "{value}", provider="lmstudio", output_type=Review, progress=False)
    assert result["_error"].isna().all() and result.loc[0, "title"] == "second"
    assert str(result["stars"].dtype) == "Int64"  # no failed row: the same dtype as a run with one
    assert len(lms.chat_requests()) == 2 and result.attrs["nbllm"]["valid_rate"] == 1.0


def test_a_provider_failure_is_a_row_error_and_text_map_is_unchanged(lms):
    lms.set(mode="error", status=500)
    result = nbllm.map(pd.Series(["a"]), "{}", provider="lmstudio", output_type=int, retries=0, progress=False)
    assert list(result.columns) == ["output", "_error"] and result["output"].isna().all()
    assert "HTTP 500" in result.loc[0, "_error"] and "\n" not in result.loc[0, "_error"]
    assert result.attrs["nbllm"]["invalid"] == 0 and result.attrs["nbllm"]["failed"] == 1
    lms.set(mode="ok")
    text = nbllm.map(pd.DataFrame({"q": ["hi {x}"]}), "Q: {q}", provider="lmstudio", progress=False)
    assert isinstance(text, pd.Series) and text.tolist() == ["Echo: Q: hi {x}"]


def test_a_scalar_output_type_is_one_typed_column(lms):
    lms.set(replies=lambda p: json.dumps({"response": len(p)}))
    result = nbllm.map(["a", "bbb"], "{value}", provider="lmstudio", output_type=int, progress=False)
    assert result["output"].tolist() == [1, 3] and str(result["output"].dtype) == "Int64"


def test_a_bad_template_is_one_error_before_anything_is_sent(lms):
    df = pd.DataFrame({"title": ["a"], "body": ["b"]})
    with pytest.raises(ConfigurationError, match="more than one column named 'title'"):
        nbllm.map(pd.concat([df, df], axis=1), "{title}", provider="lmstudio")
    with pytest.raises(ConfigurationError, match=r"\{titl\}.*did you mean \{title\}.*Columns: title, body"):
        nbllm.map(df, "{titl}: {body}", provider="lmstudio", output_type=Review)
    with pytest.raises(ConfigurationError, match="names no column"):
        nbllm.map(df, "Row {index}", provider="lmstudio")
    with pytest.raises(ConfigurationError, match=r"Format specs are not supported.*write \{body\} for \{body!r\}"):
        nbllm.map(df, "{title} {body!r}", provider="lmstudio", output_type=Review)
    with pytest.raises(ConfigurationError, match=r"write \{value\} for \{value:>5\}"):
        nbllm.map(["a"], "{value:>5}", provider="lmstudio")
    with pytest.raises(ConfigurationError, match="list or a pandas Series"):
        nbllm.classify("text", ["a", "b"], provider="lmstudio")
    with pytest.raises(ConfigurationError, match="pydantic model, a dataclass or a TypedDict"):
        nbllm.extract(["a"], int, provider="lmstudio")
    with pytest.raises(ConfigurationError, match=r"classify\(\) got unknown option"):
        nbllm.classify(["a"], ["x", "y"], provider="lmstudio", temprature=1)
    assert lms.chat_requests() == []


def test_classify_a_series_gives_a_categorical_of_exactly_the_labels(lms):
    answers = {"I love it": "positive", "Awful": "negative", "Hmm": "maybe"}
    lms.set(replies=lambda p: json.dumps({"response": next((a for t, a in answers.items() if t in p), "?")}))
    reviews = pd.Series(["I love it", "Awful", "Hmm", None], index=["r1", "r2", "r3", "r4"])
    result = nbllm.classify(reviews, labels=["positive", "negative", "neutral"], provider="lmstudio", progress=False)
    assert isinstance(result.dtype, pd.CategoricalDtype) and result.name == "label"
    assert list(result.cat.categories) == ["positive", "negative", "neutral"]  # "maybe" never became a label
    assert list(result.index) == ["r1", "r2", "r3", "r4"]
    assert result["r1"] == "positive" and result["r2"] == "negative" and result[["r3", "r4"]].isna().all()
    errors = dict(result.attrs["nbllm"]["errors"])
    assert set(errors) == {"r3", "r4"} and errors["r3"].startswith("invalid output: ")
    assert "'positive', 'negative' or 'neutral'" in errors["r3"] and "missing" in errors["r4"]
    assert list(failures(result).index) == ["r3", "r4"]
    assert "Classify this text as exactly one of: positive, negative, neutral.\n\nI love it" in first_prompts(lms)
    schema = lms.chat_requests()[0]["body"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["response"]["enum"] == ["positive", "negative", "neutral"]


def test_classify_a_dataframe_shows_every_column_or_uses_the_template(lms):
    lms.set(replies=lambda p: json.dumps({"response": "bug" if "crash" in p else "idea"}))
    tickets = pd.DataFrame({"title": ["It crashes", "Dark mode"], "votes": [3, 10]})
    result = nbllm.classify(tickets, ["bug", "idea"], provider="lmstudio", progress=False)
    assert result.tolist() == ["bug", "idea"]
    assert "Classify this record as exactly one of: bug, idea.\n\ntitle: It crashes\nvotes: 3" in first_prompts(lms)
    lms.reset()
    lms.set(replies=lambda p: json.dumps({"response": "idea"}))
    nbllm.classify(tickets, ["bug", "idea"], template="{title} ({votes}) is {labels}?", provider="lmstudio",
                   progress=False)
    assert sorted(first_prompts(lms)) == ["Dark mode (10) is bug, idea?", "It crashes (3) is bug, idea?"]


def test_extract_gives_the_typed_frame(lms):
    lms.set(replies=lambda p: json.dumps({"name": p.split("\n")[-1], "age": 30}))
    result = nbllm.extract(pd.Series(["Ann", "Bob"], index=["x", "y"]), Contact, provider="lmstudio", progress=False)
    assert result.drop(columns="_error").to_dict("index") == {"x": {"name": "Ann", "age": 30},
                                                              "y": {"name": "Bob", "age": 30}}
    assert result["_error"].isna().all()
    assert str(result["name"].dtype) == "string" and str(result["age"].dtype) == "Int64"
    assert "Extract the fields of Contact from this text.\n\nAnn" in first_prompts(lms)


def test_classify_async_and_a_cancelled_typed_map_keeps_what_finished(lms):
    lms.set(replies=lambda p: json.dumps({"response": "a"}))
    result = asyncio.run(nbllm.classify_async(["x", "y"], ["a", "b"], provider="lmstudio", progress=False))
    assert result.tolist() == ["a", "a"]
    lms.set(latency=0.05, replies=lambda p: json.dumps({"x": 1}))

    async def cancel_midway():
        task = asyncio.ensure_future(nbllm.map_async([str(i) for i in range(40)], "{}", provider="lmstudio",
                                                     output_type=Point, concurrency=2, progress=False))
        while len(lms.chat_requests()) < 8:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    partial = batch.last_partial()
    assert isinstance(partial, pd.DataFrame) and len(partial) == 40 and partial.attrs["nbllm"]["was_interrupted"]
    done = partial["_error"].isna()
    assert 0 < done.sum() < 40 and (partial.loc[done, "x"] == 1).all()
    assert set(partial.loc[~done, "_error"]) == {"interrupted before it finished"}
    assert partial.attrs["nbllm"]["interrupted"] == 40 - done.sum()


def test_ctrl_c_during_a_typed_map_keeps_the_finished_rows(lms):
    lms.set(latency=0.1, replies=lambda p: json.dumps({"x": int(p)}))
    timer = threading.Timer(0.6, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    with pytest.raises(batch.MapInterrupted) as info:
        nbllm.map([str(i) for i in range(40)], "{}", provider="lmstudio", output_type=Point, concurrency=2,
                  progress=False)
    partial = info.value.partial
    assert isinstance(partial, pd.DataFrame) and batch.last_partial() is partial and len(partial) == 40
    done = partial["_error"].isna()
    assert 0 < done.sum() < 40 and (partial.loc[done, "x"] == partial.index[done]).all()
    assert f"{done.sum()} of 40 finished" in str(info.value)


def test_an_invalid_row_still_counts_the_tokens_it_spent(lms):
    from pydantic import BaseModel

    class Item(BaseModel):
        name: str
        price: int

    lms.set(reply='{"name": "x"}')  # never valid: two replies per row, each with usage
    result = nbllm.map(["a", "b"], "Price of {}", provider="lmstudio", output_type=Item)
    stats = result.attrs["nbllm"]
    assert stats["invalid"] == 2 and stats["ok"] == 0
    assert stats["input_tokens"] > 0 and stats["output_tokens"] > 0
    assert len(lms.chat_requests()) == 4


def test_classify_reads_an_iterator_once(lms):
    lms.set(reply='{"response": "x"}')
    result = nbllm.classify(iter(["a", "b"]), ["x", "y"], provider="lmstudio")
    assert list(result) == ["x", "x"] and len(lms.chat_requests()) == 2
