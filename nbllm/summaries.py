"""DataFrames and Series as text a model reads well, within a token budget.

`{df}` in a prompt sends `summary(df)`: the shape, the index, one dtype per column,
NA counts (only of columns that have some), the first rows as a markdown table and,
when they fit, `describe()` statistics of the numeric columns. Its `tokens.estimate`
never exceeds `max_tokens`. What gives way, in order: the statistics, then rows (down
to one), then long cells (80 characters, then 40, 20, 10), then columns (the first
ones are kept); a closing note says what was cut with the real counts. `{df!full}`
sends `full(df)`: every row and column, cells never shortened.

Neither imports pandas: a value can only be a DataFrame if pandas is already imported.
The table renderer is our own (pandas' `to_markdown` needs `tabulate`, not a dependency).
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .tokens import estimate

__all__ = ["summary", "full", "is_frame"]

HEAD_ROWS = 10
"""The most rows a summary shows: beyond that a model learns more from the statistics."""
CELL_WIDTHS = (80, 40, 20, 10)
"""Longest cell text, in characters, tried in turn when rows alone do not make it fit."""
MAX_STATS_COLUMNS = 20
MAX_CATEGORIES = 5
"""Categories listed on a categorical column's dtype line (the rest are counted)."""
COMPACT_DTYPES = 12
"""Above this many shown columns the dtypes go on one line instead of one line each."""
ELLIPSIS = "…"


def _pandas() -> Any:
    """pandas if the user already imported it, else None (a summary never pays its import)."""
    return sys.modules.get("pandas")


def is_frame(value: Any) -> bool:
    """Whether `value` is a pandas DataFrame or Series (False without importing pandas)."""
    pd = _pandas()
    return pd is not None and isinstance(value, (pd.DataFrame, pd.Series))


# ---- cells and tables ----------------------------------------------------------


def _text(value: Any) -> str:
    """A cell's text: floats short (6 significant digits, as pandas shows them, when the exact form is long)."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        if number != number:
            return "NaN"
        exact = repr(number)
        return exact if len(exact) <= 10 else f"{number:.6g}"
    if isinstance(value, tuple):
        return "/".join(_text(v) for v in value)  # a MultiIndex label
    return str(value)


def _cell(value: Any, width: int | None) -> tuple[str, bool]:
    """The escaped cell text and whether it was shortened (before escaping, so `\\|` is never split)."""
    text = _text(value).replace("\r\n", "\n").replace("\n", "\\n").replace("\t", " ")
    cut = width is not None and len(text) > width
    if cut:
        text = text[: max(width - 1, 1)] + ELLIPSIS
    return text.replace("|", "\\|"), cut


def _table(header: Sequence[Any], rows: Sequence[Sequence[Any]], width: int | None) -> tuple[str, bool]:
    """A markdown pipe table and whether any cell was shortened."""
    shortened = False
    lines = []
    for cells in (header, *rows):
        texts = []
        for value in cells:
            text, cut = _cell(value, width)
            shortened |= cut
            texts.append(text)
        lines.append("| " + " | ".join(texts) + " |")
        if len(lines) == 1:
            lines.append("|" + "---|" * len(texts))
    return "\n".join(lines), shortened


def _index_columns(frame: Any) -> tuple[list[str], bool]:
    """Header cells for the row labels, and whether to show them (not for a plain 0..n-1 index)."""
    pd = _pandas()
    index = frame.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1 and index.name is None:
        return [], False
    return ["" if name is None else str(name) for name in index.names], True


def _rows(frame: Any, count: int, columns: int) -> tuple[list[Any], list[list[Any]]]:
    """Header and the first `count` rows of the first `columns` columns, row labels first when shown."""
    part = frame.iloc[:count, :columns]
    labels, with_index = _index_columns(frame)
    header = [*labels, *part.columns]
    rows = []
    for label, values in zip(part.index, part.itertuples(index=False, name=None)):
        keys = (list(label) if isinstance(label, tuple) else [label]) if with_index else []
        rows.append([*keys, *values])
    return header, rows


def _markdown(frame: Any, width: int | None) -> tuple[str, bool]:
    header, rows = _rows(frame, len(frame), frame.shape[1])
    return _table(header, rows, width)


# ---- the summary -----------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    """What the summary says about the frame, computed once (the budget search renders many times)."""

    kind: str
    title: str
    frame: Any
    na: list[int]
    dtypes: list[str]


def _dtype(series: Any) -> str:
    dtype = series.dtype
    if getattr(dtype, "name", "") == "category":
        categories = [_cell(c, 20)[0] for c in dtype.categories[:MAX_CATEGORIES]]
        more = len(dtype.categories) - len(categories)
        listed = ", ".join(categories) + (f", +{more:,} more" if more > 0 else "")
        return f"category ({len(dtype.categories):,}: {listed})"
    return str(dtype)


def _facts(value: Any) -> _Facts:
    pd = _pandas()
    if isinstance(value, pd.Series):
        name = "" if value.name is None else f" {_cell(value.name, 80)[0]!r}"
        frame = value.to_frame(name="value" if value.name is None else value.name)
        title = f"pandas Series{name}: {_count(len(value), 'values')}, dtype {_dtype(value)}"
        kind = "values"
    else:
        frame = value
        title = f"pandas DataFrame: {_count(frame.shape[0], 'rows')}, {_count(frame.shape[1], 'columns')}"
        kind = "rows"
    index = frame.index
    if isinstance(index, pd.MultiIndex):
        names = ", ".join("?" if n is None else str(n) for n in index.names)
        title += f"\nindex: MultiIndex ({index.nlevels} levels: {names})"
    elif not isinstance(index, pd.RangeIndex) or index.start != 0 or index.step != 1 or index.name is not None:
        label = "" if index.name is None else f" {_cell(index.name, 80)[0]!r}"
        title += f"\nindex: {type(index).__name__}{label}, dtype {index.dtype}"
    na = [int(n) for n in frame.isna().sum().to_numpy()] if frame.shape[1] else []
    dtypes = [_dtype(frame.iloc[:, j]) for j in range(frame.shape[1])]
    return _Facts(kind, title, frame, na, dtypes)


def _stats(frame: Any, columns: int, width: int) -> str | None:
    """`describe()` of the shown numeric columns, one row per column (None when there are none)."""
    positions = [j for j in range(columns) if frame.dtypes.iloc[j].kind in "iuf"][:MAX_STATS_COLUMNS]
    if not positions or not len(frame):
        return None
    try:
        described = frame.iloc[:, positions].describe().T
    except Exception:  # an exotic extension dtype: the rows say enough
        return None
    header = ["column", *described.columns]
    rows = [[label, *values] for label, values in zip(described.index, described.itertuples(index=False, name=None))]
    return "statistics of numeric columns:\n" + _table(header, rows, width)[0]


def _column_lines(facts: _Facts, columns: int, width: int) -> list[str]:
    frame = facts.frame
    names = [_cell(frame.columns[j], width)[0] for j in range(columns)]
    lines = []
    if columns < frame.shape[1]:
        counts: dict[str, int] = {}
        for dtype in facts.dtypes:
            counts[dtype] = counts.get(dtype, 0) + 1
        lines.append("dtypes of all columns: " + ", ".join(f"{d} ×{n:,}" for d, n in counts.items()))
    if facts.kind == "rows" and columns:  # a Series' dtype is in its title
        pairs = [f"{name}: {facts.dtypes[j]}" for j, name in enumerate(names)]
        shown = set(facts.dtypes[:columns])
        if len(shown) == 1 and columns > 1:
            lines.append(f"columns (all {shown.pop()}): " + ", ".join(names))
        elif columns > COMPACT_DTYPES:
            lines.append("columns: " + ", ".join(pairs))
        else:
            lines.append("columns:\n" + "\n".join(f"- {p}" for p in pairs))
    missing = [(names[j], facts.na[j]) for j in range(columns) if facts.na[j]]
    hidden = sum(1 for j in range(columns, frame.shape[1]) if facts.na[j])
    if facts.kind == "values" and missing:
        lines.append(f"missing values (NA): {missing[0][1]:,}")
    elif missing or hidden:
        text = "missing values (NA): " + ", ".join(f"{name} {n:,}" for name, n in missing)
        if hidden:
            text += ("; " if missing else "") + f"{hidden:,} columns not shown have some"
        lines.append(text)
    return lines


def _count(n: int, things: str) -> str:
    """"1 row", "10,000 rows" (`things` is plural)."""
    return f"{n:,} {things[:-1] if n == 1 else things}"


def _note(facts: _Facts, rows: int, columns: int, shortened: bool, width: int, name: str | None) -> str | None:
    frame = facts.frame
    cut = []
    if rows < len(frame):
        cut.append(_count(len(frame) - rows, f"more {facts.kind}" if rows else facts.kind))
    if columns < frame.shape[1]:
        cut.append(_count(frame.shape[1] - columns, "more columns" if columns else "columns"))
    if not cut and not shortened:
        return None
    what = " and ".join(cut) + " not shown" if cut else ""
    if shortened:
        what += ("; " if what else "") + f"cells longer than {width} characters shortened"
    return f"{ELLIPSIS} {what}; {{{name or '…'}!full}} sends all of it"


def _render(facts: _Facts, rows: int, width: int, columns: int, stats: bool, name: str | None) -> str:
    parts = [facts.title, *_column_lines(facts, columns, width)]
    shortened = False
    if columns and rows:
        header, body = _rows(facts.frame, rows, columns)
        table, shortened = _table(header, body, width)
        if rows < len(facts.frame):
            table = (f"first {rows:,} {facts.kind}:" if rows > 1 else f"first {facts.kind[:-1]}:") + "\n" + table
        parts.append(table)
    elif not len(facts.frame):
        parts.append(f"(no {facts.kind})")
    elif not facts.frame.shape[1]:
        parts.append("(no columns)")
    if stats:
        described = _stats(facts.frame, columns, width)
        if described:
            parts.append(described)
    note = _note(facts, rows, columns, shortened, width, name)
    if note:
        parts.append(note)
    return "\n".join(parts)


def _largest(low: int, high: int, fits: Any) -> int | None:
    """The largest n in [low, high] with fits(n) (fits is monotone: True up to some n), or None."""
    if high < low or not fits(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def summary(value: Any, max_tokens: int = 2000, name: str | None = None) -> str | None:
    """A compact text of a DataFrame or Series whose `tokens.estimate` is at most `max_tokens`;
    None for anything else. `name` (the prompt's `{df}`) is used in the note on what was cut."""
    if not is_frame(value):
        return None
    facts = _facts(value)
    n_rows, n_cols = facts.frame.shape
    rows = min(n_rows, HEAD_ROWS)

    def fits(text: str) -> bool:
        return estimate(text) <= max_tokens

    def render(r: int, w: int, c: int, s: bool = False) -> str:
        return _render(facts, r, w, c, s, name)

    first = CELL_WIDTHS[0]
    for candidate in (render(rows, first, n_cols, True), render(rows, first, n_cols)):
        if fits(candidate):
            return candidate
    kept = _largest(1, rows - 1, lambda r: fits(render(r, first, n_cols)))
    if kept is not None:
        return render(kept, first, n_cols)
    least = min(rows, 1)
    for width in CELL_WIDTHS[1:]:
        if fits(text := render(least, width, n_cols)):
            return text
    narrow = CELL_WIDTHS[-1]
    for r in (least, 0):
        kept = _largest(1, n_cols - 1, lambda c: fits(render(r, narrow, c)))
        if kept is not None:  # fewer columns may leave room for wider cells again
            return next(t for w in CELL_WIDTHS if fits(t := render(r, w, kept)))
    bare = render(0, narrow, 0)
    return bare if fits(bare) else _clip(bare, max_tokens)


def _clip(text: str, max_tokens: int) -> str:
    """Whole lines of `text` that fit, the title first, then the note; only for budgets below any summary."""
    lines = text.split("\n")
    while len(lines) > 1 and estimate("\n".join(lines)) > max_tokens:
        lines.pop(-2 if len(lines) > 2 else -1)  # the middle lines go first, then the note
    if estimate("\n".join(lines)) <= max_tokens:
        return "\n".join(lines)
    pieces = lines[0].split(", ")  # never half a number: "150 rows" or nothing
    while len(pieces) > 1 and estimate(", ".join(pieces)) > max_tokens:
        pieces.pop()
    kept = ", ".join(pieces)
    if estimate(kept) > max_tokens:
        kept = kept.split(":")[0]
    return kept if estimate(kept) <= max_tokens else ""


def full(value: Any) -> str | None:
    """Every row and column of a DataFrame or Series as a markdown table (None for anything else)."""
    if not is_frame(value):
        return None
    pd = _pandas()
    frame = value.to_frame(name="value" if value.name is None else value.name) if isinstance(value, pd.Series) else value
    return _markdown(frame, None)[0]
