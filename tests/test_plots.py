"""Charts: `compare(...).plot()` (latency and cost per provider), `history(plot=True)` (calls over time),
`spend(plot=True)`; drawn headless (Agg) and read back from the figure; matplotlib only when asked."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import nbllm  # noqa: E402
from nbllm.plots import UNKNOWN_HATCH, Comparison  # noqa: E402

from conftest import reset_nbllm  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def two_servers(make_server, monkeypatch):
    """lmstudio answers at once, ollama after 150 ms, llamacpp is down."""
    fast, slow = make_server(reply="fast one"), make_server(latency=0.15, reply="slow one")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fast.url + "/v1")
    monkeypatch.setenv("OLLAMA_BASE_URL", slow.url)
    monkeypatch.setenv("LLAMACPP_BASE_URL", "http://127.0.0.1:9")
    for name in ("LMSTUDIO", "OLLAMA", "LLAMACPP"):
        monkeypatch.setenv(f"{name}_MAX_RETRIES", "0")
    monkeypatch.setenv("EMBEDDED_ENABLED", "0")
    reset_nbllm()
    return fast, slow


def _labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def _notes(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


# ---- compare ----------------------------------------------------------------------------------
def test_compare_plot_draws_one_bar_per_provider_for_latency_and_cost(two_servers):
    result = nbllm.compare("hi", providers=["lmstudio", "ollama", "llamacpp"])
    assert isinstance(result, pd.DataFrame) and isinstance(result, Comparison)
    latency, cost = result.plot()
    providers = ["lmstudio", "ollama", "llamacpp"]
    for ax in (latency, cost):
        assert len(ax.patches) == 3 and _labels(ax) == providers
    heights = {p: bar.get_height() for p, bar in zip(providers, latency.patches)}
    assert heights["ollama"] >= 150 > heights["lmstudio"]  # the bars are the latencies
    assert heights == pytest.approx(dict(zip(providers, result["latency_ms"])))
    # local servers cost $0; the one that failed has no cost: a hatched empty bar saying so, not a 0
    assert [bar.get_height() for bar in cost.patches] == [0, 0, 0]
    assert _notes(cost) == ["$0", "$0", "failed"]
    assert cost.patches[2].get_hatch() == UNKNOWN_HATCH and cost.patches[0].get_hatch() is None
    assert (latency.get_title(), cost.get_title(), cost.get_ylabel()) == ("latency", "cost", "USD")
    assert "1 failed" in latency.figure.get_suptitle()


def test_an_unknown_cost_is_shown_as_unknown_not_as_zero():
    rows = [{"provider": "openai", "latency_ms": 420.0, "cost_usd": 0.0021, "error": None, "answer": "a"},
            {"provider": "mycloud", "latency_ms": 380.0, "cost_usd": None, "error": None, "answer": "b"}]
    frame = Comparison(pd.DataFrame(rows))
    latency, cost = frame.plot()
    assert len(cost.patches) == 2 and _labels(cost) == ["openai", "mycloud"]
    assert cost.patches[0].get_height() == pytest.approx(0.0021)
    assert _notes(cost) == ["$0.0021", "unknown"] and cost.patches[1].get_hatch() == UNKNOWN_HATCH
    assert _notes(latency) == ["420 ms", "380 ms"]


def test_plot_with_arguments_is_pandas_plot_and_slices_are_plain_frames():
    frame = Comparison(pd.DataFrame({"provider": ["a", "b"], "latency_ms": [1.0, 2.0], "cost_usd": [0.0, 0.0]}))
    ax = frame.plot(kind="bar", x="provider", y="latency_ms")
    assert [p.get_height() for p in ax.patches] == [1.0, 2.0]
    ax = frame.plot.bar(x="provider", y="latency_ms")  # pandas' accessor methods too
    assert [p.get_height() for p in ax.patches] == [1.0, 2.0]
    assert type(frame[["provider"]]) is pd.DataFrame and type(frame.copy()) is pd.DataFrame


# ---- history --------------------------------------------------------------------------------
def test_history_plot_draws_the_calls_over_time_stacked_by_provider(two_servers):
    for _ in range(3):
        nbllm.ask("one", provider="lmstudio")
    for _ in range(2):
        nbllm.ask("two", provider="ollama")
    with pytest.raises(nbllm.ModelError):
        nbllm.ask("three", provider="llamacpp")
    frame = nbllm.history(limit=None, plot=True)
    assert len(frame) == 6 and list(frame.columns) == list(nbllm.history(limit=None).columns)
    (ax,) = plt.gcf().axes
    assert sum(bar.get_height() for bar in ax.patches) == 6  # every call is in a bar
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["llamacpp", "lmstudio", "ollama"]
    assert "6 calls, 1 failed" in ax.get_title() and "a bar is 1min" in ax.get_title()


def test_history_plot_of_an_empty_log_is_an_empty_chart():
    frame = nbllm.history(plot=True)
    assert frame.empty
    (ax,) = plt.gcf().axes
    assert len(ax.patches) == 0 and "0 calls" in ax.get_title()


def test_history_buckets_widen_with_the_span():
    from nbllm.plots import _bucket

    start = pd.Timestamp("2026-12-01")
    assert _bucket(pd.Series([start, start + pd.Timedelta("30min")])) == "1min"
    assert _bucket(pd.Series([start, start + pd.Timedelta("5h")])) == "10min"
    assert _bucket(pd.Series([start, start + pd.Timedelta("20D")])) == "1D"


def test_spend_plot_still_draws_a_bar_per_provider(two_servers):
    nbllm.ask("one", provider="lmstudio")
    nbllm.ask("two", provider="ollama")
    frame = nbllm.spend(plot=True)
    (ax,) = plt.gcf().axes
    assert len(ax.patches) == len(frame) == 2 and sorted(_labels(ax)) == ["lmstudio", "ollama"]


def test_a_chart_without_matplotlib_is_one_line_saying_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # import fails as if it were not installed
    frame = Comparison(pd.DataFrame({"provider": ["a"], "latency_ms": [1.0], "cost_usd": [0.0], "error": [None]}))
    with pytest.raises(nbllm.ConfigurationError, match=r"not installed: pip install matplotlib"):
        frame.plot()


# ---- cost of loading ------------------------------------------------------------------------
def test_matplotlib_is_imported_only_when_a_chart_is_asked_for():
    code = ("import sys, json, nbllm, pandas as pd\nfrom nbllm.plots import Comparison\n"
            "frame = Comparison(pd.DataFrame({'provider': ['a'], 'latency_ms': [1.0], 'cost_usd': [math.nan],"
            " 'error': [None]}))\nnbllm.history(); nbllm.spend()\nbefore = 'matplotlib' in sys.modules\n"
            "import matplotlib; matplotlib.use('Agg')\nframe.plot()\n"
            "print(json.dumps([before, 'matplotlib.pyplot' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import math\n" + code], capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, True], out.stderr
