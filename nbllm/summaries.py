"""DataFrames and Series as text a model reads well, within a token budget.

`{df}` in a prompt sends `summary(df)`: the shape, the index, one dtype per column,
NA counts (only of columns that have some), the first rows as a markdown table and,
when they fit, `describe()` statistics of the numeric columns. Its `tokens.estimate`
never exceeds `max_tokens`. What gives way, in order: the statistics, then rows (down
to one), then long cells (80 characters, then 40, 20, 10), then columns (the first
ones are kept); a closing note says what was cut with the real counts. `{df!full}`
sends `full(df)`: every row and column, cells never shortened; `full_size_floor` says
cheaply how large that is at least, and `full(df, max_tokens)` stops early.
`describe_frame` is a one-line description that never shows a value (for `%llm_fix`).

Speed: the summary search renders up to ~20 candidates, so the first rows are read
once as text cells, each table line is built and estimated once, and a candidate is
abandoned as soon as its lines exceed the budget (`estimate` is additive over lines:
estimate(a + "\\n" + b) == estimate(a) + 1 + estimate(b)).

Neither imports pandas: a value can only be a DataFrame if pandas is already imported.
The table renderer is our own (pandas' `to_markdown` needs `tabulate`, not a dependency).
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .tokens import estimate

__all__ = ["summary", "full", "full_size_floor", "describe_frame", "is_frame", "DEFAULT_MAX_TOKENS"]

DEFAULT_MAX_TOKENS = 2000
"""The budget of one summary when the caller gives none."""
HEAD_ROWS = 10
"""The most rows a summary shows: beyond that a model learns more from the statistics."""
CELL_WIDTHS = (80, 40, 20, 10)
"""Longest cell text, in characters, tried in turn when rows alone do not make it fit."""
MAX_STATS_COLUMNS = 20
MAX_CATEGORIES = 5
"""Categories listed on a categorical column's dtype line (the rest are counted)."""
COMPACT_DTYPES = 12
"""Above this many shown columns the dtypes go on one line instead of one line each."""
DESCRIBE_COLUMNS = 40
"""Columns named by `describe_frame` (the rest are counted)."""
FULL_CHUNK = 2000
"""Rows `full` renders at a time, so a budget stops it after one chunk too many at most."""
ELLIPSIS = "…"


def _pandas() -> Any:
    """pandas if the user already imported it, else None (a summary never pays its import)."""
    return sys.modules.get("pandas")


def is_frame(value: Any) -> bool:
    """Whether `value` is a pandas DataFrame or Series (False without importing pandas)."""
    pd = _pandas()
    return pd is not None and isinstance(value, (pd.DataFrame, pd.Series))


def _as_frame(value: Any) -> Any:
    """A Series as a one-column frame (named "value" when unnamed); a DataFrame as it is."""
    pd = _pandas()
    if isinstance(value, pd.Series):
        return value.to_frame(name="value" if value.name is None else value.name)
    return value


def _plain_index(index: Any) -> bool:
    """Whether the row labels are just 0..n-1 (then neither shown nor described)."""
    pd = _pandas()
    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1 and index.name is None


# ---- cells and tables ----------------------------------------------------------


def _text(value: Any) -> str:
    """A cell's text: floats short (6 significant digits, as pandas shows them, when the exact form is long).
    A value whose str() raises is named by its type: one odd object never loses the whole summary."""
    try:
        kind = type(value)
        if kind is str:  # the common cases first: the abstract checks below are slow
            return value
        if kind is int:
            return str(value)
        if kind is float or (isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)):
            number = float(value)
            if number != number:
                return "NaN"
            exact = repr(number)
            return exact if len(exact) <= 10 else f"{number:.6g}"
        if isinstance(value, tuple):
            return "/".join(_text(v) for v in value)  # a MultiIndex label
        return str(value)
    except Exception:  # noqa: BLE001 - any user __str__/__float__ may fail
        return f"<unprintable {type(value).__name__}>"


def _clean(value: Any) -> str:
    """A cell's text on one line (newlines shown as `\\n`), not yet shortened or escaped."""
    return _text(value).replace("\r\n", "\n").replace("\n", "\\n").replace("\t", " ")


def _cut(text: str, width: int | None) -> tuple[str, bool]:
    """A clean text shortened to `width` and escaped, and whether it was shortened (before
    escaping, so `\\|` is never split)."""
    cut = width is not None and len(text) > width
    if cut:
        text = text[: max(width - 1, 1)] + ELLIPSIS
    return text.replace("|", "\\|"), cut


def _cell(value: Any, width: int | None) -> tuple[str, bool]:
    return _cut(_clean(value), width)


def _line(texts: Sequence[str], width: int | None) -> tuple[str, bool]:
    """One markdown table line of clean texts, and whether any was shortened."""
    shortened = False
    cells = []
    for text in texts:
        cell, cut = _cut(text, width)
        shortened |= cut
        cells.append(cell)
    return "| " + " | ".join(cells) + " |", shortened


def _separator(n: int) -> str:
    return "|" + "---|" * n


def _index_header(frame: Any) -> list[str]:
    """Header cells for the row labels: none for a plain 0..n-1 index."""
    if _plain_index(frame.index):
        return []
    return ["" if name is None else str(name) for name in frame.index.names]


def _values(part: Any) -> Iterator[Sequence[Any]]:
    """The rows of `part` as sequences of Python values (one numpy conversion when it works)."""
    try:
        yield from part.to_numpy(dtype=object)
    except Exception:  # noqa: BLE001 - an extension dtype that cannot become object
        yield from part.itertuples(index=False, name=None)


def _raw(frame: Any, start: int, stop: int) -> Iterator[list[Any]]:
    """The values of rows start..stop, row labels first when the index is shown."""
    part = frame.iloc[start:stop]
    with_index = not _plain_index(frame.index)
    for label, values in zip(part.index, _values(part)):
        keys = (list(label) if isinstance(label, tuple) else [label]) if with_index else []
        yield [*keys, *values]


def _body(frame: Any, start: int, stop: int) -> Iterator[list[str]]:
    """Clean texts of rows start..stop, row labels first when the index is shown."""
    for values in _raw(frame, start, stop):
        yield [_clean(v) for v in values]


# ---- the summary -----------------------------------------------------------------


def _dtype(dtype: Any, categories: bool = True) -> str:
    """A dtype's name; a categorical one lists its first categories unless `categories` is False."""
    if getattr(dtype, "name", "") != "category":
        return str(dtype)
    if not categories:
        return "category"
    listed = [_cell(c, 20)[0] for c in dtype.categories[:MAX_CATEGORIES]]
    more = len(dtype.categories) - len(listed)
    text = ", ".join(listed) + (f", +{more:,} more" if more > 0 else "")
    return f"category ({len(dtype.categories):,}: {text})"


def _count(n: int, things: str) -> str:
    """"1 row", "10,000 rows" (`things` is plural)."""
    return f"{n:,} {things[:-1] if n == 1 else things}"


@dataclass(frozen=True)
class _Facts:
    """What the summary says about the frame, computed once (the budget search renders many times)."""

    kind: str
    title: str
    frame: Any
    na: list[int]
    dtypes: list[str]
    header: list[str]
    """Clean texts of the index names then every column label."""
    keys: int
    """How many of `header` (and of each head row) are row labels."""
    head: list[list[Any]]
    """The values of the first HEAD_ROWS rows, all columns (made text when a candidate shows them)."""


def _facts(value: Any) -> _Facts:
    pd = _pandas()
    frame = _as_frame(value)
    if isinstance(value, pd.Series):
        name = "" if value.name is None else f" {_cell(value.name, 80)[0]!r}"
        title = f"pandas Series{name}: {_count(len(value), 'values')}, dtype {_dtype(value.dtype)}"
        kind = "values"
    else:
        title = f"pandas DataFrame: {_count(frame.shape[0], 'rows')}, {_count(frame.shape[1], 'columns')}"
        kind = "rows"
    index = frame.index
    if isinstance(index, pd.MultiIndex):
        names = ", ".join("?" if n is None else str(n) for n in index.names)
        title += f"\nindex: MultiIndex ({index.nlevels} levels: {names})"
    elif not _plain_index(index):
        label = "" if index.name is None else f" {_cell(index.name, 80)[0]!r}"
        title += f"\nindex: {type(index).__name__}{label}, dtype {index.dtype}"
    na = [int(n) for n in frame.isna().sum().to_numpy()] if frame.shape[1] else []
    named: dict[Any, str] = {}  # 2,000 columns usually share a dtype or two
    dtypes = [named[d] if d in named else named.setdefault(d, _dtype(d)) for d in frame.dtypes]
    labels = _index_header(frame)
    header = [_clean(label) for label in (*labels, *frame.columns)]
    head = list(_raw(frame, 0, HEAD_ROWS)) if frame.shape[1] else []
    return _Facts(kind, title, frame, na, dtypes, header, len(labels), head)


Piece = tuple[str, int]
"""A block of lines of a summary and its token estimate."""


def _piece(text: str) -> Piece:
    return text, estimate(text)


class _Summary:
    """Renders candidate summaries of one frame, each line built and estimated once."""

    def __init__(self, value: Any, name: str | None):
        self.facts = _facts(value)
        self.name = name
        self.n_rows, self.n_cols = self.facts.frame.shape
        self.title = _piece(self.facts.title)
        self._lines: dict[tuple[Any, ...], tuple[str, int, bool]] = {}
        self._estimates: dict[str, int] = {}
        """Token counts by text: many candidates share a block (names shorter than any width)."""
        self._columns: dict[tuple[int, int], Piece | None] = {}
        self._stats: dict[int, tuple[list[str], list[list[str]]] | None] = {}
        self._head: list[list[str]] = [[] for _ in self.facts.head]
        with_na = [0]
        for n in self.facts.na:
            with_na.append(with_na[-1] + (1 if n else 0))
        self._with_na = with_na
        """How many of the first j columns have NAs (so hidden ones are counted in O(1))."""

    def _table_line(self, key: tuple[Any, ...], texts: Sequence[str], width: int) -> tuple[str, int, bool]:
        found = self._lines.get(key)
        if found is None:
            text, shortened = _line(texts, width)
            found = self._lines[key] = (text, self._estimate(text), shortened)
        return found

    def _cells(self, row: int, count: int) -> list[str]:
        """Clean texts of the first `count` cells of a head row, each made once (of 2,000 columns
        a summary usually shows a few hundred)."""
        texts = self._head[row]
        if len(texts) < count:
            texts.extend(_clean(v) for v in self.facts.head[row][len(texts):count])
        return texts[:count]

    def _column_lines(self, columns: int, width: int) -> Piece | None:
        key = (columns, width)
        if key not in self._columns:
            lines = self._describe_columns(columns, width)
            self._columns[key] = self._piece("\n".join(lines)) if lines else None
        return self._columns[key]

    def _estimate(self, text: str) -> int:
        if text not in self._estimates:
            self._estimates[text] = estimate(text)
        return self._estimates[text]

    def _piece(self, text: str) -> Piece:
        return text, self._estimate(text)

    def _describe_columns(self, columns: int, width: int) -> list[str]:
        facts = self.facts
        names = [_cut(facts.header[facts.keys + j], width)[0] for j in range(columns)]
        lines = []
        if columns < self.n_cols:
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
        hidden = self._with_na[-1] - self._with_na[columns]
        if facts.kind == "values" and missing:
            lines.append(f"missing values (NA): {missing[0][1]:,}")
        elif missing or hidden:
            text = "missing values (NA): " + ", ".join(f"{name} {n:,}" for name, n in missing)
            if hidden:
                some = "column not shown has some" if hidden == 1 else "columns not shown have some"
                text += ("; " if missing else "") + f"{hidden:,} {some}"
            lines.append(text)
        return lines

    def _described(self, columns: int) -> tuple[list[str], list[list[str]]] | None:
        """`describe()` of the shown numeric columns as clean texts, computed once (None when
        there are none, or fewer than 2 rows: a std of NaN tells nothing)."""
        if columns in self._stats:
            return self._stats[columns]
        frame = self.facts.frame
        positions = [j for j in range(columns) if frame.dtypes.iloc[j].kind in "iuf"][:MAX_STATS_COLUMNS]
        result = None
        if positions and self.n_rows >= 2:
            try:
                described = frame.iloc[:, positions].describe().T
            except Exception:  # noqa: BLE001 - an exotic extension dtype: the rows say enough
                described = None
            if described is not None:
                header = [_clean(c) for c in ("column", *described.columns)]
                rows = [[_clean(label), *(_clean(v) for v in values)]
                        for label, values in zip(described.index, described.itertuples(index=False, name=None))]
                result = (header, rows)
        self._stats[columns] = result
        return result

    def _note(self, rows: int, columns: int, shortened: bool, width: int) -> str | None:
        kind = self.facts.kind
        cut = []
        if rows < self.n_rows:
            cut.append(_count(self.n_rows - rows, f"more {kind}" if rows else kind))
        if columns < self.n_cols:
            cut.append(_count(self.n_cols - columns, "more columns" if columns else "columns"))
        if not cut and not shortened:
            return None
        what = " and ".join(cut) + " not shown" if cut else ""
        if shortened:
            what += ("; " if what else "") + f"cells longer than {width} characters shortened"
        return f"{ELLIPSIS} {what}; {{{self.name or '…'}!full}} sends all of it"

    def pieces(self, rows: int, width: int, columns: int, stats: bool = False) -> Iterator[Piece]:
        """The blocks of one candidate in order; a caller may stop as soon as they exceed its budget."""
        facts = self.facts
        yield self.title
        described = self._column_lines(columns, width)
        if described:
            yield described
        shortened = False
        cells = facts.keys + columns
        if columns and rows:
            if rows < self.n_rows:
                yield _piece(f"first {rows:,} {facts.kind}:" if rows > 1 else f"first {facts.kind[:-1]}:")
            text, tokens, cut = self._table_line(("header", width, columns), facts.header[:cells], width)
            shortened |= cut
            separator = _separator(cells)
            yield text + "\n" + separator, tokens + 1 + self._estimate(separator)
            for i in range(rows):
                text, tokens, cut = self._table_line((i, width, columns), self._cells(i, cells), width)
                shortened |= cut
                yield text, tokens
        elif not self.n_rows:
            yield _piece(f"(no {facts.kind})")
        elif not self.n_cols:
            yield _piece("(no columns)")
        if stats:
            table = self._described(columns)
            if table:
                header, body = table
                lines = [_line(header, width)[0], _separator(len(header)), *(_line(r, width)[0] for r in body)]
                yield self._piece("statistics of numeric columns:\n" + "\n".join(lines))
        note = self._note(rows, columns, shortened, width)
        if note:
            yield _piece(note)

    def fits(self, max_tokens: int, *candidate: Any) -> bool:
        total = -1  # n pieces are joined by n - 1 newlines
        for _, tokens in self.pieces(*candidate):
            total += tokens + 1
            if total > max_tokens:
                return False
        return True

    def text(self, *candidate: Any) -> str:
        return "\n".join(text for text, _ in self.pieces(*candidate))


def _largest(low: int, high: int, fits: Callable[[int], bool]) -> int | None:
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


def summary(value: Any, max_tokens: int = DEFAULT_MAX_TOKENS, name: str | None = None) -> str | None:
    """A compact text of a DataFrame or Series whose `tokens.estimate` is at most `max_tokens`;
    None for anything else. `name` (the prompt's `{df}`) is used in the note on what was cut."""
    if not is_frame(value):
        return None
    s = _Summary(value, name)
    n_rows, n_cols = s.n_rows, s.n_cols
    rows = min(n_rows, HEAD_ROWS)

    def fits(*candidate: Any) -> bool:
        return s.fits(max_tokens, *candidate)

    first = CELL_WIDTHS[0]
    for candidate in ((rows, first, n_cols, True), (rows, first, n_cols)):
        if fits(*candidate):
            return s.text(*candidate)
    kept = _largest(1, rows - 1, lambda r: fits(r, first, n_cols))
    if kept is not None:
        return s.text(kept, first, n_cols)
    least = min(rows, 1)
    for width in CELL_WIDTHS[1:]:
        if fits(least, width, n_cols):
            return s.text(least, width, n_cols)
    narrow = CELL_WIDTHS[-1]
    # Every column costs at least 2 tokens (its name and a separator), so the search starts lower.
    widest = max(1, max_tokens // 2)
    for r in dict.fromkeys((least, 0)):
        # Every column first: it has no "dtypes of all columns" line and a shorter note, so it
        # can fit where fewer columns do not (the search below assumes fewer always fit better).
        if n_cols and fits(r, narrow, n_cols):
            kept = n_cols
        else:
            kept = _largest(1, min(n_cols - 1, widest), lambda c: fits(r, narrow, c))
        if kept is not None:  # fewer columns may leave room for wider cells again
            width = next(w for w in CELL_WIDTHS if fits(r, w, kept))
            return s.text(r, width, kept)
    bare = s.text(0, narrow, 0)
    return bare if estimate(bare) <= max_tokens else _clip(bare, max_tokens)


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


# ---- the whole frame ----------------------------------------------------------------


def full_size_floor(value: Any) -> int:
    """A lower bound of `estimate(full(value))`, from the shape and dtypes alone (0 for a non-frame).

    Cheap whatever the size, so a caller can refuse a huge `{df!full}` before anything is
    rendered. Every line of the table has a `|` per cell plus one and a newline; the
    separator costs 4 a column; a numeric, boolean or datetime cell is at least one token
    (digits, NaN, True, NaT) while a text cell may be empty."""
    if not is_frame(value):
        return 0
    frame = _as_frame(value)
    n_rows = frame.shape[0]
    labels = len(_index_header(frame))
    cells = labels + frame.shape[1]
    dense = sum(1 for dtype in frame.dtypes if getattr(dtype, "kind", "O") in "biufcmM")
    if labels and not isinstance(frame.index, _pandas().MultiIndex):
        dense += 1 if getattr(frame.index.dtype, "kind", "O") in "biufcmM" else 0
    lines = n_rows + 1  # the header and the rows (the separator apart)
    return lines * (cells + 1) + (1 + 4 * cells) + (lines) + n_rows * dense


_LETTERS = bytes(range(65, 91)) + bytes(range(97, 123))


def _estimate_floor(text: str) -> int:
    """A lower bound of `tokens.estimate(text)` at C speed: every byte that is not an ASCII
    letter, space or tab is at least one token, and a run of letters one per four at least."""
    data = text.encode("utf-8", "surrogatepass")
    letters = len(data) - len(data.translate(None, _LETTERS))
    blanks = data.count(b" ") + data.count(b"\t")
    return len(data) - letters - blanks + letters // 4


def full(value: Any, max_tokens: int | None = None) -> str | None:
    """Every row and column of a DataFrame or Series as a markdown table (None for anything else).

    With `max_tokens`, None as well when the table's `tokens.estimate` would exceed it: the
    rendering stops as soon as a cheap lower bound of the part rendered so far does (at once
    when `full_size_floor` does), so refusing a 200,000-row frame never renders all of it."""
    if not is_frame(value):
        return None
    if max_tokens is not None and full_size_floor(value) > max_tokens:
        return None
    frame = _as_frame(value)
    labels = _index_header(frame)
    header = _line([_clean(c) for c in (*labels, *frame.columns)], None)[0]
    blocks = [header + "\n" + _separator(len(labels) + frame.shape[1])]
    floor = _estimate_floor(blocks[0])
    for start in range(0, frame.shape[0], FULL_CHUNK):
        block = "\n".join(_line(texts, None)[0] for texts in _body(frame, start, start + FULL_CHUNK))
        blocks.append(block)
        if max_tokens is not None:
            floor += 1 + _estimate_floor(block)
            if floor > max_tokens:
                return None
    text = "\n".join(blocks)
    if max_tokens is not None and estimate(text) > max_tokens:
        return None
    return text


# ---- one line, no values ----------------------------------------------------------------


def _label(label: Any) -> str:
    """A column label or Series name: plain ones (text, numbers, tuples of them) as text up to 40
    characters, others by type (a label that is an object might carry data)."""
    if isinstance(label, tuple) and all(isinstance(p, (str, int, float, bool)) or p is None for p in label):
        return _cell(label, 40)[0]
    if isinstance(label, (str, int, float, bool)) or label is None:
        return _cell(label, 40)[0]
    return f"<{type(label).__name__}>"


def describe_frame(value: Any) -> str | None:
    """One line on a DataFrame or Series — shape, column names and dtypes — that never shows
    a value, not even a category (None for anything else). For `%llm_fix`, which must not
    send a notebook's data: "pandas DataFrame: 6 rows, 3 columns: month (str), units (int64)"."""
    if not is_frame(value):
        return None
    pd = _pandas()
    if isinstance(value, pd.Series):
        name = "" if value.name is None else f" {_label(value.name)}"
        return f"pandas Series{name}: {_count(len(value), 'values')}, dtype {_dtype(value.dtype, categories=False)}"
    text = f"pandas DataFrame: {_count(value.shape[0], 'rows')}, {_count(value.shape[1], 'columns')}"
    shown = [f"{_label(label)} ({_dtype(dtype, categories=False)})"
             for label, dtype in zip(value.columns[:DESCRIBE_COLUMNS], value.dtypes.iloc[:DESCRIBE_COLUMNS])]
    more = value.shape[1] - len(shown)
    if shown:
        text += ": " + ", ".join(shown) + (f", {ELLIPSIS} {more:,} more" if more > 0 else "")
    return text
