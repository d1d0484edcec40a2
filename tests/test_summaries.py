"""DataFrame summaries within a token budget, the token estimate and context lengths.

The estimate is checked against the real embedded model's tokenizer (marker `embedded`).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import nbllm
from nbllm import embedded, summaries
from nbllm.summaries import full, summary
from nbllm.tokens import context_window, estimate

from conftest import reset_nbllm

NOTE = re.compile(r"^… (?:(?P<rows>[\d,]+) more (?:rows?|values?))?(?: and )?(?:(?P<cols>[\d,]+) more columns?)?")


def _frame(rows: int = 10_000) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "id": np.arange(rows),
        "price": rng.normal(100, 20, rows).round(2),
        "city": rng.choice(["Paris", "Oslo", "São Paulo"], rows),
        "when": pd.date_range("2024-01-01", periods=rows, freq="h"),
        "kind": pd.Categorical(rng.choice(list("abc"), rows)),
    })
    frame.loc[frame.index[::7], "price"] = np.nan
    return frame


def _shapes() -> dict[str, object]:
    rng = np.random.default_rng(2)
    long = _frame()
    multi_rows = long.head(40).set_index(["city", "kind"])
    multi_cols = pd.DataFrame(rng.random((30, 6)), columns=pd.MultiIndex.from_product([["a", "b"], ["x", "y", "z"]]))
    by_time = long.set_index("when")
    texts = pd.DataFrame({"text": ["line one\nline two | with a pipe " * 20, "é" * 300, "short"] * 50})
    return {
        "long": long,
        "wide": pd.DataFrame(rng.random((50, 500)), columns=[f"column_{i}" for i in range(500)]),
        "multiindex rows": multi_rows,
        "multiindex columns": multi_cols,
        "datetime index": by_time,
        "texts": texts,
        "empty": pd.DataFrame(),
        "no rows": pd.DataFrame(columns=["a", "b"]),
        "no columns": pd.DataFrame(index=range(5)),
        "series": long["price"],
        "unnamed series": pd.Series(range(3000)),
        "categorical series": long["kind"],
    }


SHAPES = _shapes()


def _table_rows(text: str) -> list[str]:
    """The data rows of the first markdown table in `text`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    rows = []
    for line in lines[start + 1:]:
        if not line.startswith("| "):
            break
        rows.append(line)
    return rows


def _header_cells(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    return lines[start - 1].strip("| ").split(" | ")


# ---- the estimate ------------------------------------------------------------------


def test_estimate_counts_letters_by_four_digits_one_by_one_and_spaces_before_digits():
    assert estimate("") == 0
    assert estimate("hello world") == 2 + 2  # ceil(5/4) each; the space joins " world"
    assert estimate("a") == estimate(" a") == 1
    assert estimate(" 7") == 2 and estimate("1234567890") == 10
    assert estimate("| a |\n") == 4  # |, a, " |", newline
    assert estimate("é") == 2 and estimate("…") == 3  # one per UTF-8 byte
    assert estimate("x" * 400) == 100
    assert estimate("if x:\n        return 1") == estimate("if x:\n return 1") + 2  # 7 more spaces: 2


@pytest.mark.embedded
def test_estimate_is_at_least_the_real_count_and_at_most_twice_it(monkeypatch: pytest.MonkeyPatch):
    """Against SmolLM2's tokenizer, from the server nbllm starts (`/extras/tokenize`)."""
    import httpx2

    monkeypatch.delenv("EMBEDDED_BASE_URL", raising=False)
    reset_nbllm()
    table = "| id | price | qty | when |\n|---|---|---|---|\n" + "".join(
        f"| {i} | {i * 3.14159:.4f} | {i * 17} | 2024-01-{i % 28 + 1:02d} |\n" for i in range(30)
    )
    prose = ("In a notebook the things worth asking about are already on screen: a plot, an image, a "
             "DataFrame, the cell that just failed. The summary tells the model what the data looks like.")
    code = textwrap.dedent('''
        def estimate(text: str) -> int:
            count = 0
            for match in PIECES.finditer(text):
                piece = match.group()
                count += (len(piece) + 3) // 4
            return count
    ''')
    texts = {"table": table, "prose": prose, "code": code, "summary": summary(SHAPES["long"], 2000, "df"),
             "wide summary": summary(SHAPES["wide"], 1000, "wide"), "full": full(SHAPES["long"].head(40))}
    try:
        settings = asyncio.run(nbllm.get_registry().prepare("embedded"))
        root = settings.base_url.removesuffix("/v1")
        ratios = {}
        for name, text in texts.items():
            response = httpx2.post(f"{root}/extras/tokenize", json={"input": text}, timeout=30)
            assert response.status_code == 200, response.text
            real = len(response.json()["tokens"])
            ratios[name] = estimate(text) / real
            assert real <= estimate(text) <= 2 * real, (name, real, estimate(text))
        print({name: round(ratio, 2) for name, ratio in ratios.items()})
    finally:
        embedded.stop_server()


# ---- context lengths -----------------------------------------------------------------


def _embedded_window(monkeypatch: pytest.MonkeyPatch, args: str | None) -> int | None:
    monkeypatch.delenv("EMBEDDED_BASE_URL", raising=False)
    if args is None:
        monkeypatch.delenv("NBLLM_EMBEDDED_ARGS", raising=False)
    else:
        monkeypatch.setenv("NBLLM_EMBEDDED_ARGS", args)
    reset_nbllm()
    return context_window("embedded", "smollm2", nbllm.get_registry().settings("embedded"))


@pytest.mark.parametrize("args, expected", [
    (None, 2048), ("--n_ctx 4096", 4096), ("--n_ctx=8192 --n_threads 2 --n_ctx 1024", 1024), ("--n_ctx 0", None),
])
def test_the_embedded_context_is_the_n_ctx_its_server_gets(monkeypatch, args, expected):
    assert _embedded_window(monkeypatch, args) == expected
    if expected is not None:  # the same options the server is started with
        command = embedded.server_command(embedded.Path("m.gguf"), "a", 1, embedded.Path("log"))
        given = [command[i + 1] for i, arg in enumerate(command) if arg == "--n_ctx"]
        given += [arg.split("=", 1)[1] for arg in command if arg.startswith("--n_ctx=")]
        assert str(expected) in given


def test_an_embedded_server_the_user_runs_has_no_known_context():
    settings = nbllm.get_registry().settings("embedded")  # conftest sets EMBEDDED_BASE_URL
    assert not settings.base_url_is_default
    assert context_window("embedded", "smollm2", settings) is None


def test_cloud_context_comes_from_genai_prices_offline_data():
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    for provider, prices_id, model in [("openai", "openai", "gpt-4o-mini"), ("gemini", "google", "gemini-2.5-flash"),
                                       ("grok", "x-ai", "grok-4"), ("anthropic", "anthropic", "claude-sonnet-4-5")]:
        expected = snapshot.find_provider_model(model, None, prices_id, None)[1].context_window
        assert isinstance(expected, int) and expected > 10_000
        assert context_window(provider, model, nbllm.get_registry().settings(provider)) == expected
    assert context_window("openai", "no-such-model-anywhere") is None
    assert context_window("ollama", "llama3.2") is None  # the local server decides at load time
    assert context_window("no-such-provider", "gpt-4o") is None


# ---- summaries -----------------------------------------------------------------------


@pytest.mark.parametrize("cap", [2000, 500, 200, 40])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_cap_holds_for_every_shape(shape, cap):
    text = summary(SHAPES[shape], cap, "df")
    assert text is not None and estimate(text) <= cap, (shape, cap, estimate(text))
    if cap >= 200:
        assert text.startswith("pandas ")


def test_a_small_frame_is_whole_with_stats_and_no_note():
    frame = _frame(6)
    text = summary(frame)
    assert "…" not in text and "!full" not in text
    assert len(_table_rows(text)) == 6
    assert "statistics of numeric columns" in text
    assert f"| price | {frame['price'].count()}.0 |" in text  # describe()'s count of non-NA prices
    assert text.splitlines()[0] == "pandas DataFrame: 6 rows, 5 columns"
    assert "- when: datetime64[us]" in text and "- kind: category (3: a, b, c)" in text


def test_rows_go_first_and_the_note_has_the_real_counts():
    frame = _frame()
    text = summary(frame, 200, "sales")
    shown = _table_rows(text)
    assert 1 <= len(shown) < 10 and "statistics" not in text
    note = text.splitlines()[-1]
    assert note.endswith("{sales!full} sends all of it")
    assert NOTE.match(note)["rows"] == f"{len(frame) - len(shown):,}" and NOTE.match(note)["cols"] is None
    assert len(_header_cells(text)) == 5  # all columns kept


def test_the_first_rows_values_appear_in_order():
    frame = _frame()
    rows = _table_rows(summary(frame, 2000))
    assert len(rows) == 10
    for i, row in enumerate(rows):
        cells = row.strip("| ").split(" | ")
        price = frame["price"].iloc[i]
        assert cells[0] == str(frame["id"].iloc[i]) and cells[2] == frame["city"].iloc[i]
        assert cells[1] == ("NaN" if np.isnan(price) else repr(float(price)))
        assert cells[3] == str(frame["when"].iloc[i]) and cells[4] == frame["kind"].iloc[i]


def test_na_counts_only_for_columns_that_have_some():
    frame = pd.DataFrame({"a": [1.0, None, None, 4.0, None], "b": [1, 2, 3, 4, 5], "c": ["x", None, "z", "w", "v"],
                          "d": pd.array([1, None, 3, 4, 5], dtype="Int64")})
    line = next(line for line in summary(frame).splitlines() if line.startswith("missing values"))
    assert line == "missing values (NA): a 3, c 1, d 1"
    assert not any(line.startswith("missing") for line in summary(frame[["b"]]).splitlines())
    series = pd.Series([1.0, np.nan, 3.0, np.nan], name="x")
    assert "missing values (NA): 2" in summary(series)


def test_a_wide_frame_keeps_the_first_columns_and_says_how_many_are_hidden():
    frame = SHAPES["wide"]
    text = summary(frame, 2000, "wide")
    header = _header_cells(text)
    assert header == [f"column_{i}" for i in range(len(header))] and 1 <= len(header) < 500
    note = NOTE.match(text.splitlines()[-1])
    assert note["cols"] == f"{500 - len(header):,}" and note["rows"] == f"{len(frame) - len(_table_rows(text)):,}"
    assert "dtypes of all columns: float64 ×500" in text
    first = _table_rows(text)[0].strip("| ").split(" | ")
    assert first[0] == f"{frame.iloc[0, 0]:.6g}"


def test_long_cells_are_shortened_and_pipes_escaped():
    frame = pd.DataFrame({"text": ["a|b " * 40, "one\ntwo"], "n": [1, 2]})
    text = summary(frame)
    first, second = _table_rows(text)
    cell = first.removeprefix("| ").split(" | ")[0]
    assert cell.endswith("…") and len(cell.replace("\\|", "|")) == 80 and cell.startswith("a\\|b a\\|b")
    assert second.startswith("| one\\ntwo | 2 |")
    assert "cells longer than 80 characters shortened" in text.splitlines()[-1]


def test_multiindex_datetime_categorical_series_and_empty():
    multi = SHAPES["multiindex rows"]
    text = summary(multi)
    assert "index: MultiIndex (2 levels: city, kind)" in text
    assert _header_cells(text)[:3] == ["city", "kind", "id"]
    assert _table_rows(text)[0].startswith(f"| {multi.index[0][0]} | {multi.index[0][1]} | 0 |")
    assert _header_cells(summary(SHAPES["multiindex columns"]))[:2] == ["a/x", "a/y"]
    by_time = summary(SHAPES["datetime index"])
    assert "index: DatetimeIndex 'when', dtype datetime64[us]" in by_time
    assert _table_rows(by_time)[0].startswith("| 2024-01-01 00:00:00 | 0 |")
    series = summary(SHAPES["series"], 2000, "p")
    assert series.splitlines()[0] == "pandas Series 'price': 10,000 values, dtype float64"
    assert NOTE.match(series.splitlines()[-1])["rows"] == "9,990"
    assert summary(SHAPES["categorical series"]).splitlines()[0].endswith("dtype category (3: a, b, c)")
    assert summary(SHAPES["empty"]) == "pandas DataFrame: 0 rows, 0 columns\n(no rows)"
    assert summary(SHAPES["no rows"]).endswith("(no rows)")
    assert summary(SHAPES["no columns"]).endswith("(no columns)")


def test_full_has_every_row_and_column():
    frame = _frame(300)
    text = full(frame)
    lines = text.splitlines()
    assert len(lines) == 302 and lines[0] == "| id | price | city | when | kind |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [f"| {i}" for i in range(300)]
    assert "…" not in full(pd.DataFrame({"t": ["x" * 500]}))
    assert full(pd.Series([1, 2], name="n")) == "| n |\n|---|\n| 1 |\n| 2 |"


def test_anything_else_is_none_and_never_imports_pandas():
    assert summary([1, 2]) is None and full({"a": 1}) is None and summary(np.arange(3)) is None
    script = textwrap.dedent("""
        import sys
        from nbllm.summaries import full, summary
        assert summary([1, 2, 3]) is None and full("text") is None and summary(object()) is None
        print("pandas" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_cap_below_any_table_keeps_whole_facts_of_the_title():
    frame = SHAPES["long"]
    assert summary(frame, 40) == "pandas DataFrame: 10,000 rows, 5 columns"
    assert summary(frame, 60, "df") == ("pandas DataFrame: 10,000 rows, 5 columns\n"
                                        "… 10,000 rows and 5 columns not shown; {df!full} sends all of it")
    whole = {"", "pandas DataFrame", "pandas DataFrame: 10,000 rows", "pandas DataFrame: 10,000 rows, 5 columns"}
    for cap in range(0, 40):
        text = summary(frame, cap)
        assert estimate(text) <= cap and text in whole, (cap, text)


def test_every_column_with_no_rows_is_tried_when_fewer_columns_do_not_fit():
    """All columns need no "dtypes of all columns" line and a shorter note, so they can fit where one does not."""
    frame = pd.DataFrame({"name": ["x" * 300] * 3, "notes": ["y" * 300] * 3})
    for cap in (60, 80):
        text = summary(frame, cap, "df")
        assert estimate(text) <= cap
        assert "columns (all str): name, notes" in text, (cap, text)
        assert NOTE.match(text.splitlines()[-1])["cols"] is None and "columns not shown" not in text


def test_a_wide_frame_estimates_each_line_once(monkeypatch):
    wide = pd.DataFrame(np.random.default_rng(3).random((1000, 2000)), columns=[f"c{i}" for i in range(2000)])
    text = summary(wide, 2000, "wide")
    assert estimate(text) <= 2000 and 1 <= len(_header_cells(text)) < 2000
    # (speed: benchmarks/context.py; here the work itself is counted)
    estimated = []
    monkeypatch.setattr(summaries, "estimate", lambda t: estimated.append(len(t)) or estimate(t))
    assert summary(wide, 2000, "wide") == text
    assert sum(estimated) < 10 * 40_000  # the 2,000 column names and one row; never 10 rows of 2,000 cells


def test_a_value_whose_str_fails_is_named_by_its_type():
    class Broken:
        def __str__(self):
            raise RuntimeError("no text")

    frame = pd.DataFrame({"thing": [Broken(), "fine"], "n": [1, 2]})
    text = summary(frame)
    assert _table_rows(text)[0] == "| <unprintable Broken> | 1 |"
    assert "| <unprintable Broken> | 1 |" in full(frame)
    labelled = pd.DataFrame({"a": [1]}, index=pd.Index([Broken()], dtype=object))
    assert "<unprintable Broken>" in summary(labelled)


def test_a_single_row_has_no_statistics_of_nan_spreads():
    one = _frame(1)
    text = summary(one)
    assert "statistics" not in text and len(_table_rows(text)) == 1
    assert "statistics of numeric columns" in summary(_frame(2))


def test_full_size_floor_is_cheap_and_below_the_real_size():
    for name, value in SHAPES.items():
        if len(value) <= 10_000:
            assert summaries.full_size_floor(value) <= estimate(full(value)), name
    huge = pd.DataFrame(np.random.default_rng(4).random((200_000, 10)))
    assert summaries.full_size_floor(huge) >= 200_000 * 10 * 2
    assert summaries.full_size_floor([1, 2]) == 0


def test_the_floor_of_an_estimate_is_never_above_it():
    texts = ["", "hello world", "| 1.5 | NaN |\n|---|", "é…\tx  y    z", "abcdefghi" * 7 + " 123", full(SHAPES["texts"])]
    for text in texts:
        assert summaries._estimate_floor(text) <= estimate(text), text[:40]
    assert summaries._estimate_floor("| 1 |") == 3  # the pipes and the digit; spaces are free


def test_full_with_a_budget_is_whole_or_none_and_stops_early(monkeypatch):
    frame = _frame(300)
    whole = full(frame)
    size = estimate(whole)
    assert full(frame, max_tokens=size) == whole and full(frame, max_tokens=size - 1) is None
    assert full(frame, max_tokens=None) == whole
    huge = pd.DataFrame(np.random.default_rng(5).random((200_000, 10)))
    lines = []
    real_line = summaries._line
    monkeypatch.setattr(summaries, "_line", lambda *a: lines.append(1) or real_line(*a))
    assert full(huge, max_tokens=summaries.full_size_floor(huge) + 1) is None
    assert 0 < len(lines) < 100_000  # stopped once the part rendered was over the budget
    lines.clear()
    assert full(huge, max_tokens=1_000) is None and lines == []  # refused on the floor alone


def test_the_default_budget_is_one_exported_constant():
    assert summaries.DEFAULT_MAX_TOKENS == 2000 and "DEFAULT_MAX_TOKENS" in summaries.__all__
    assert inspect.signature(summary).parameters["max_tokens"].default is summaries.DEFAULT_MAX_TOKENS


def test_describe_frame_is_one_line_of_structure_and_never_a_value():
    describe = summaries.describe_frame
    frame = pd.DataFrame({"month": ["jan", "feb"] * 3, "units": range(6), "returns": np.linspace(0, 1, 6)})
    assert describe(frame) == "pandas DataFrame: 6 rows, 3 columns: month (str), units (int64), returns (float64)"
    secret = pd.DataFrame({"code": ["SECRET-1", "SECRET-2"], "kind": pd.Categorical(["SECRET-A", "SECRET-B"]),
                           "when": pd.to_datetime(["2031-05-06", "2031-05-07"])}, index=["SECRET-X", "SECRET-Y"])
    text = describe(secret)
    assert text == "pandas DataFrame: 2 rows, 3 columns: code (str), kind (category), when (datetime64[us])"
    assert "SECRET" not in describe(secret["kind"]) and "2031" not in text
    assert describe(secret["kind"]) == "pandas Series kind: 2 values, dtype category"
    wide = pd.DataFrame(np.zeros((1, 45)), columns=[f"c{i}" for i in range(45)])
    line = describe(wide)
    assert "\n" not in line and line.endswith("c39 (float64), … 5 more") and "c40" not in line
    odd = pd.DataFrame({object(): [1]})
    assert describe(odd) == "pandas DataFrame: 1 row, 1 column: <object> (int64)"
    assert describe(pd.DataFrame()) == "pandas DataFrame: 0 rows, 0 columns"
    assert describe(np.arange(3)) is None and describe([1]) is None
