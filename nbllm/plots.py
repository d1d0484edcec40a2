"""Pictures of nbllm's tables: `compare(...).plot()`, `history(plot=True)`, `spend(plot=True)`.

Why one module: every chart follows the same rules — one bar per row of the table, a value
nbllm does not know (a cost no price list has, a provider that failed) drawn as an empty,
hatched bar named in words ("unknown", "failed"), never as a bar of 0 — and matplotlib is
imported here only, when a chart is asked for (`import nbllm` and the tables stay without it).
Charts are drawn with pyplot, so a notebook shows each once, as any matplotlib figure; like
pandas' `.plot()`, `Comparison.plot()` returns its Axes (a returned Figure would be shown twice:
as the cell's value and by the inline backend); `axes[0].figure.savefig(...)` saves it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from .errors import ConfigurationError

__all__ = ["Comparison", "compare_chart", "history_chart", "spend_chart", "bars"]

BAR = "#4c72b0"
FAILED = "#c44e52"
UNKNOWN_HATCH = "//"
_BUCKETS = ("1min", "10min", "1h", "6h", "1D", "7D", "30D")
"""Widths of a bar in the calls-over-time chart: the narrowest that gives at most `MAX_BUCKETS` bars."""
MAX_BUCKETS = 60


class Comparison(pd.DataFrame):
    """`nbllm.compare`'s table: a DataFrame whose `.plot()` draws latency and cost per provider.

    A copy or a slice of it is a plain DataFrame again (its `.plot` is pandas' own).
    """

    @property
    def _constructor(self) -> Callable[..., pd.DataFrame]:
        return pd.DataFrame

    @property
    def plot(self) -> "_ComparisonPlot":  # type: ignore[override]
        """`.plot()`: latency and cost per provider, one bar each (a cost nobody knows says "unknown"),
        returning the two Axes. With arguments, and as `.plot.bar(...)` etc., it is pandas' own."""
        return _ComparisonPlot(self)


class _ComparisonPlot:
    """`Comparison.plot`: called bare, nbllm's chart; otherwise pandas' plot accessor, unchanged."""

    def __init__(self, frame: Comparison) -> None:
        self._frame = frame

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return pd.DataFrame(self._frame).plot(*args, **kwargs)
        return compare_chart(self._frame).axes

    def __getattr__(self, name: str) -> Any:
        return getattr(pd.DataFrame(self._frame).plot, name)


def _pyplot() -> Any:
    """matplotlib's pyplot, imported now; not installed is one line saying how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigurationError("Charts need matplotlib, which is not installed: pip install matplotlib "
                                 '(in a clone of nbllm: pip install ".[plots]").') from None
    return plt


def _known(value: Any) -> bool:
    return value is not None and value is not pd.NA and not (isinstance(value, float) and math.isnan(value))


def bars(ax: Any, labels: Sequence[str], values: Sequence[Any], show: Callable[[float], str],
         missing: Sequence[str], failed: Sequence[bool] = ()) -> list[Any]:
    """One bar per label on `ax`, its value written above it; a missing value is an empty hatched bar
    named by `missing[i]` ("unknown", "failed"); a failed row's bar is drawn in red. Returns the bars."""
    heights = [float(v) if _known(v) else 0.0 for v in values]
    failed = list(failed) or [False] * len(labels)
    colors = [FAILED if bad else BAR for bad in failed]
    drawn = ax.bar(list(labels), heights, color=colors, edgecolor=colors)
    top = max(heights, default=0.0) or 1.0
    for patch, value, word in zip(drawn, values, missing):
        if not _known(value):
            patch.set_hatch(UNKNOWN_HATCH)
            patch.set_facecolor("none")
        text = show(float(value)) if _known(value) else word
        ax.annotate(text, (patch.get_x() + patch.get_width() / 2, patch.get_height()), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, top * 1.25)
    if len(labels) > 4:
        ax.tick_params(axis="x", rotation=30)
    return list(drawn)


def _usd(value: float) -> str:
    return "$0" if value == 0 else f"${value:.4f}" if value >= 0.0001 else f"${value:.2g}"


def compare_chart(frame: pd.DataFrame) -> Any:
    """Two bar charts side by side, one bar per provider: latency (ms) and cost (USD)."""
    plt = _pyplot()
    labels = [str(p) for p in frame["provider"]]
    errors = [bool(e) if _known(e) else False for e in frame["error"]]
    fig, (latency, cost) = plt.subplots(1, 2, figsize=(max(6.0, 1.6 * len(labels) + 2), 3.4))
    bars(latency, labels, list(frame["latency_ms"]), lambda v: f"{v:,.0f} ms",
         ["failed" if bad else "unknown" for bad in errors], errors)
    latency.set_title("latency")
    latency.set_ylabel("ms")
    bars(cost, labels, list(frame["cost_usd"]), _usd, ["failed" if bad else "unknown" for bad in errors], errors)
    cost.set_title("cost")
    cost.set_ylabel("USD")
    failed = sum(errors)
    fig.suptitle(f"nbllm.compare: {len(labels)} providers" + (f", {failed} failed" if failed else ""))
    fig.tight_layout()
    return fig


def _bucket(times: pd.Series) -> str:
    """The narrowest bar width (`_BUCKETS`) that shows the span of `times` in at most MAX_BUCKETS bars."""
    span = times.max() - times.min() if len(times) else pd.Timedelta(0)
    for width in _BUCKETS:
        if span / pd.Timedelta(width) < MAX_BUCKETS:
            return width
    return _BUCKETS[-1]


def history_chart(frame: pd.DataFrame) -> Any:
    """Calls over time: one bar per time bucket (UTC), stacked by provider; failed calls counted in the title."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 3.4))
    times = frame["time"].dt.tz_convert(None) if len(frame) else pd.Series([], dtype="datetime64[ns]")
    width = _bucket(times)
    failed = int(frame["outcome"].isin(["error", "interrupted"]).sum()) if len(frame) else 0
    ax.set_title(f"nbllm calls over time ({len(frame)} calls" + (f", {failed} failed" if failed else "") +
                 f"; a bar is {width})")
    ax.set_ylabel("calls")
    ax.set_xlabel("time (UTC)")
    if len(frame):
        buckets = times.dt.floor(width)
        counts = pd.crosstab(buckets, frame["provider"].fillna("?").to_numpy())
        days = pd.Timedelta(width) / pd.Timedelta("1D") * 0.85  # matplotlib's date axis counts in days
        bottom = [0] * len(counts)
        for provider in counts.columns:
            column = [int(n) for n in counts[provider]]
            ax.bar(counts.index.to_pydatetime(), column, width=days, bottom=bottom, label=str(provider))
            bottom = [b + n for b, n in zip(bottom, column)]
        ax.legend(fontsize=8, loc="upper left")
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # calls are counted: no 2.5
        fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def spend_chart(frame: pd.DataFrame, by: str) -> Any:
    """A bar of USD per group (`nbllm.spend`); calls with an unknown cost are named in the title."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(frame) + 2), 3.2))
    ax.bar([str(i) for i in frame.index], frame["cost_usd"], color=BAR)
    ax.set_ylabel("USD")
    unknown = int(frame["unknown_cost"].sum())
    ax.set_title(f"nbllm spend by {by}" + (f" ({unknown} calls of unknown cost not counted)" if unknown else ""))
    ax.tick_params(axis="x", rotation=30 if len(frame) > 4 else 0)
    fig.tight_layout()
    return fig
