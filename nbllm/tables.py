"""Tables for people: one renderer for provider tables (status, health, the panel, the CLI).

A `Table` is plain rows; `to_text` draws it for terminals (fits the width, text
left-aligned, long cells shortened at a word boundary keeping an error's hint) and
`to_html` for notebooks (left-aligned, the status a coloured word, long cells
shortened with the whole text on hover and behind a "details" toggle, never broken
mid-word). Drawing needs only the standard library: the first `%llm_providers
--status` must not pay for pandas. The API still returns DataFrames
(`health_frame`, `variables_frame`), and the renderers accept a DataFrame too.

Keys never reach a table: rows are built from `ProviderHealth` and the masked
variable listing, which hold no secrets.
"""

from __future__ import annotations

import html
import shutil
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .health import ProviderHealth

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "HEALTH_COLUMNS", "HEALTH_TABLE_COLUMNS", "STATUS_COLUMNS", "VARIABLE_COLUMNS", "ALIAS_COLUMNS", "Table",
    "health_rows", "health_table", "table", "terminal_width", "health_frame", "server_label", "variable_rows", "variables_frame",
    "alias_rows", "frame", "shorten", "to_text", "to_html", "display_bundle",
]

HEALTH_COLUMNS = ["provider", "status", "enabled", "connected", "model", "latency_ms", "base_url", "error", "note"]
"""One row of health facts per provider (`health_frame`'s default columns)."""
HEALTH_TABLE_COLUMNS = [*HEALTH_COLUMNS[:5], "models", *HEALTH_COLUMNS[5:]]
"""What `--health-check`, `--test` and `health_table()` show: the health columns plus every model listed."""
STATUS_COLUMNS = ["provider", "kind", "status", "model", "base_url", "error", "note"]
"""The compact table of `--status`."""
VARIABLE_COLUMNS = ["provider", "variable", "set", "source", "value"]
ALIAS_COLUMNS = ["alias", "target", "on", "note", "file"]
"""The aliases under `--status` and `--list`: what each stands for and whether it can answer."""

_STATUS_COLOURS = {
    "available": "#1a7f37",
    "down": "#cf222e",
    "crashed": "#cf222e",
    "disabled": "#6e7781",
    "not configured": "#9a6700",
    "not installed": "#9a6700",
}


@dataclass
class Table:
    """Rows to draw: `columns` are the keys, `headings` optional labels (key → label)."""

    columns: list[str]
    rows: list[list[Any]]
    headings: dict[str, str] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts (JSON-able when the values are)."""
        return [dict(zip(self.columns, row)) for row in self.rows]

    def column(self, name: str) -> list[Any]:
        at = self.columns.index(name)
        return [row[at] for row in self.rows]

    def to_frame(self) -> "pd.DataFrame":
        """The same rows as a DataFrame indexed by the first column (imports pandas)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.columns).set_index(self.columns[0])


def table(rows: list[dict[str, Any]], columns: list[str], headings: dict[str, str] | None = None) -> Table:
    """A Table of `columns` from dict rows (a missing key is an empty cell)."""
    return Table(list(columns), [[row.get(c) for c in columns] for row in rows], dict(headings or {}))


def server_label(provider: str, number: int) -> str:
    """The row name of server `number` (1-based) of a fleet: `└ vllm 2`, shown under the provider's row."""
    return f"└ {provider} {number}"


def health_rows(health: dict[str, ProviderHealth]) -> list[dict[str, Any]]:
    """One plain dict per provider, in catalog order, with every column a table may show.

    A fleet (several servers behind one name) is its provider's row (the note says how
    many servers answer) followed by one row per server (`server_label`), each with its
    own status, latency and error.
    """
    rows = []
    for h in health.values():
        rows.append(_row(h, h.provider))
        rows += [_row(server, server_label(h.provider, i)) for i, server in enumerate(h.servers, 1)]
    return rows


def _row(h: ProviderHealth, label: str) -> dict[str, Any]:
    return {
        "provider": label,
        "kind": h.kind,
        "status": h.status,
        "enabled": h.enabled,
        "connected": {True: "yes", False: "no", None: "—"}[h.connected],
        "model": h.model_id or "",
        "models": ", ".join(h.models),
        "latency_ms": h.latency_ms,
        "base_url": h.base_url or "",
        "error": h.error or "",
        "note": h.note or "",  # not a fault: e.g. the embedded server "starts on first use"
    }


def health_table(health: dict[str, ProviderHealth], columns: list[str] | None = None) -> Table:
    """The health facts as a Table (no pandas): what `--status`, `--health-check` and `--test` draw."""
    return table(health_rows(health), columns or HEALTH_COLUMNS)


def frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def health_frame(health: dict[str, ProviderHealth], columns: list[str] | None = None) -> "pd.DataFrame":
    """The health table as a DataFrame indexed by provider (the API's `health_table()`)."""
    return frame(health_rows(health), columns or HEALTH_COLUMNS).set_index("provider")


def variable_rows(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Every variable each provider reads, whether it is set and from where (keys masked);
    without `names`, then the NBLLM_* variables, which are nobody's provider."""
    from .config import global_variable_rows
    from .registry import get_registry

    registry = get_registry()
    rows = [row for name in (names or registry.names()) for row in registry.variables(name)]
    if names is None:
        rows += global_variable_rows(registry.global_settings, registry.environment)
    return rows


def variables_frame(names: list[str] | None = None) -> "pd.DataFrame":
    """`variable_rows` as a DataFrame."""
    return frame(variable_rows(names), VARIABLE_COLUMNS)


def alias_rows() -> list[dict[str, Any]]:
    """One row per alias, by name: its target, when it falls back, why it cannot answer (if so), its file."""
    from .registry import get_registry
    from .routing import alias_problem

    registry = get_registry()
    return [{"alias": name, "target": a.target, "on": a.on, "note": alias_problem(name) or "",
             "file": a.source or "(this process only)"} for name, a in sorted(registry.aliases.items())]


# ---- shortening ------------------------------------------------------------------------

_HINT = " — "
"""Where a `ModelError` puts what to do: the part of an error a shortened cell keeps."""


def shorten(text: str, width: int) -> str:
    """`text` in at most `width` characters, ending in "…" when cut.

    Cut at a word boundary (a URL is one word: kept whole or left out, never halved); an
    error's hint (after " — ") is kept and its start shortened instead (or left out when
    the hint alone needs the room). A single word
    longer than `width` is the only thing cut inside.
    """
    if len(text) <= width:
        return text
    if width < 2:
        return "…"[:width]
    head, sep, hint = text.rpartition(_HINT)
    if sep and len(hint) + len(sep) + 1 <= width:
        room = width - len(sep) - len(hint)
        return _cut_words(head, room, whole=True) + sep + hint
    if sep and width >= _MIN_CELL_WIDTH:  # no room for both: what to do matters more than what happened
        return "… " + _cut_words(hint, width - 2)
    return _cut_words(text, width)


def _cut_words(text: str, width: int, whole: bool = False) -> str:
    """`text` cut to `width` at a word boundary; with `whole`, "…" alone rather than part of a word."""
    if len(text) <= width:
        return text
    room = text[: width - 1]
    space = room.rfind(" ")
    if space >= max(1, width // 3) or (whole and space > 0):  # a boundary not too far back: cut there
        room = room[:space].rstrip(" ,;:—-")
        return room + " …" if room and len(room) + 2 <= width else "…"
    return "…" if whole else room + "…"


# ---- text ----------------------------------------------------------------------------------

TEXT_CELL_WIDTH = 60
"""Longest a short-text column (provider, model, URL…) gets in a text table."""
TEXT_TABLE_WIDTH = 120
"""The width a text table fits when it is not printed to a terminal (a terminal's own width is used there)."""
_LONG = ("error", "note", "models")
"""Columns of sentences: uncapped (they take what the width leaves); the error narrows last."""
_WHOLE = ("provider", "kind", "status", "enabled", "connected")
"""Short words that name the row and its state: never shortened."""
_MIN_CELL_WIDTH = 24
_MIN_ERROR_WIDTH = 48
"""The error column says what to do (e.g. which key to set): it narrows last and least."""
_GAP = "  "


def terminal_width() -> int | None:
    """The terminal's width when printing to one; None for notebooks, pipes and captures."""
    try:
        if sys.stdout is not None and sys.stdout.isatty():
            return max(40, shutil.get_terminal_size((TEXT_TABLE_WIDTH, 24)).columns)
    except (AttributeError, ValueError, OSError):
        pass
    return None


def to_text(data: Any, width: int | None = None) -> str:
    """A plain-text rendering for terminals: every column, text left-aligned, numbers
    right-aligned, long cells shortened (`shorten`) so each line fits `width` (default: the
    terminal's). A width given or a terminal's is a hard limit: columns no row fills go, the
    note joins the error column, then the least useful columns are left out (a last line names
    them) rather than squeezed into fragments, and the rest narrows to fit. Without either,
    TEXT_TABLE_WIDTH is a goal that keeps URLs and model names readable."""
    t = as_table(data)
    strict = width is not None or terminal_width() is not None
    width = width or terminal_width() or TEXT_TABLE_WIDTH
    left_out: list[str] = []
    if strict:
        t, left_out = _fit_columns(_without_empty(t), width)
    columns = [t.headings.get(c, c) for c in t.columns]
    numeric = [_numeric(t.column(c)) for c in t.columns]
    cells = [[_text_cell(value) for value in row] for row in t.rows]
    natural = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    floors = [_floor(c) for c in t.columns]
    long = [c in _LONG for c in t.columns]
    numeric = [right or c in _WHOLE for right, c in zip(numeric, t.columns)]  # kept whole, like numbers
    aligned = [_numeric(t.column(c)) for c in t.columns]
    widths = _fit(natural, [len(name) for name in columns], numeric, long, floors, width, strict)

    def line(values: list[str]) -> str:
        parts = [shorten(v, w).rjust(w) if right else shorten(v, w).ljust(w)
                 for v, w, right in zip(values, widths, aligned)]
        return _GAP.join(parts).rstrip()

    lines = [line(columns), *(line(row) for row in cells)]
    if left_out:
        lines.append(shorten(f"(left out to fit {width} columns: {', '.join(left_out)})", width))
    return "\n".join(lines)


_LEAVE_OUT = ("models", "enabled", "connected", "kind", "base_url", "latency_ms")
"""Columns a narrow terminal drops first to last: each is said elsewhere (the status word, the
error) or by `--json`; the row's name, status, model and error stay."""


def _floor(column: str) -> int:
    return _MIN_ERROR_WIDTH if column == "error" else _MIN_CELL_WIDTH


def _cell_empty(value: Any) -> bool:
    return _text_cell(value) == ""


def _without_empty(t: Table) -> Table:
    """`t` without the columns no row fills (the first, naming the rows, always stays)."""
    if not t.rows:
        return t
    return _dropping(t, [c for i, c in enumerate(t.columns) if i and all(_cell_empty(row[i]) for row in t.rows)])


def _needed(t: Table) -> int:
    """The width `t` takes with every column at its floor (whole columns and numbers at their own width)."""
    total = len(_GAP) * (len(t.columns) - 1)
    for c in t.columns:
        values = t.column(c)
        own = max([len(t.headings.get(c, c)), *(len(_text_cell(v)) for v in values)])
        whole = c in _WHOLE or _numeric(values)
        total += own if whole else max(len(t.headings.get(c, c)), min(own, _floor(c)))
    return total


def _fit_columns(t: Table, width: int) -> tuple[Table, list[str]]:
    """`t` narrowed by columns for a `width`-wide terminal: the note into the error column, then
    `_LEAVE_OUT` in turn until every column gets its floor (those that fit again afterwards come
    back); the headings of those left out."""
    if _needed(t) > width and "note" in t.columns and "error" in t.columns:
        t = _note_into_error(t)
    dropped: list[str] = []
    for name in _LEAVE_OUT:
        if _needed(_dropping(t, dropped)) <= width:
            break
        if name in t.columns:
            dropped.append(name)
    for name in reversed(dropped[:-1]):  # a narrow column dropped early may fit beside the rest
        if _needed(_dropping(t, [d for d in dropped if d != name])) <= width:
            dropped.remove(name)
    return _dropping(t, dropped), [t.headings.get(name, name) for name in t.columns if name in dropped]


def _dropping(t: Table, names: list[str]) -> Table:
    keep = [i for i, c in enumerate(t.columns) if c not in names]
    return Table([t.columns[i] for i in keep], [[row[i] for i in keep] for row in t.rows], t.headings)


def _note_into_error(t: Table) -> Table:
    """One column for what to know about a row: its error and its note ("starts on first use")."""
    error, note = t.columns.index("error"), t.columns.index("note")
    rows = [[" · ".join(p for p in (_text_cell(row[error]), _text_cell(row[note])) if p) if i == error else v
             for i, v in enumerate(row) if i != note] for row in t.rows]
    headings = {**t.headings, "error": t.headings.get("error", "error") + " / note"}
    return Table([c for c in t.columns if c != "note"], rows, headings)


def _fit(natural: list[int], headings: list[int], numeric: list[bool], long: list[bool], least: list[int],
         width: int, strict: bool = True) -> list[int]:
    """Column widths: short-text columns capped at TEXT_CELL_WIDTH, then narrowed (the widest first)
    until the table fits `width`: to their usual floors, then (`strict`) the other columns down to
    their headings, then the error column too — it says what to do, so it gives last."""
    widths = [w if right or wide else min(w, max(TEXT_CELL_WIDTH, head))
              for w, head, right, wide in zip(natural, headings, numeric, long)]
    excess = sum(widths) + len(_GAP) * (len(widths) - 1) - width
    usual = [w if right else max(head, min(w, low)) for w, head, right, low in zip(widths, headings, numeric, least)]
    error = [low == _MIN_ERROR_WIDTH for low in least]
    tight = [u if right or err else min(u, max(head, 3))
             for u, head, right, err in zip(usual, headings, numeric, error)]
    tightest = [t if right else min(t, max(head, 3)) for t, head, right in zip(tight, headings, numeric)]
    for floors in (usual, tight, tightest) if strict else (usual,):
        excess = _shrink(widths, floors, excess)
    return widths


def _shrink(widths: list[int], floors: list[int], excess: int) -> int:
    """Narrow the widest columns above their floors by `excess` characters in all; what is left over."""
    while excess > 0:
        shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        others = [widths[i] for i in shrinkable if i != widest]
        step = max(1, min(excess, widths[widest] - max(floors[widest], max(others, default=0))))
        widths[widest] -= step
        excess -= step
    return excess


def _numeric(values: list[Any]) -> bool:
    present = [v for v in values if v is not None and not (isinstance(v, float) and v != v)]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def _text_cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = f"{value:.0f}" if isinstance(value, float) else str(value)
    return " ".join(text.split())  # one line per row, whatever a server's message held


# ---- HTML ----------------------------------------------------------------------------------

HTML_CELL_CHARS = 48
"""Characters a cell shows in HTML before it is shortened (the whole text on hover and in "details")."""
HTML_NAME_CHARS = 28
"""Characters a URL or model name shows in HTML: the scheme and then the path go first, a model
path keeps its last part (the model's own name)."""
_CELL = "text-align:left; padding:2px 6px; vertical-align:top; white-space:nowrap"
_NUMBER = "text-align:right; padding:2px 6px; vertical-align:top; white-space:nowrap"
_WRAP = ("text-align:left; padding:2px 6px; vertical-align:top; white-space:normal; overflow-wrap:normal;"
         " word-break:normal; min-width:14em")
"""Sentences (errors, notes) wrap between words when the page is narrow, never inside a word."""
_NAMES = ("model", "base_url", "target")
"""One-word cells (a URL, a model path): never wrapped, shortened at a "/" or the scheme."""
_DETAILS = "white-space:normal; word-break:normal; overflow-wrap:normal; max-width:40em"


def to_html(data: Any, caption: str | None = None, *, table_class: str = "nbllm-table") -> str:
    """HTML for notebooks: text left-aligned, the status a coloured word, long cells shortened
    (the whole text in `title` and behind a "details" toggle), no column that no row fills;
    every text escaped."""
    t = _without_empty(as_table(data))
    numeric = [_numeric(t.column(c)) for c in t.columns]
    head = "".join(f"<th style='{_NUMBER if right else _CELL}'>{_escape(t.headings.get(c, c))}</th>"
                   for c, right in zip(t.columns, numeric))
    body = "".join("<tr>" + "".join(_td(c, v, right) for c, v, right in zip(t.columns, row, numeric)) + "</tr>"
                   for row in t.rows)
    top = f"<caption style='text-align:left; caption-side:top'>{_escape(caption)}</caption>" if caption else ""
    return (f"<table class='{table_class}' style='border-collapse:collapse; font-size:0.9em; line-height:1.3'>"
            f"{top}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _td(column: str, value: Any, right: bool) -> str:
    text = _text_cell(value)
    if column == "status":
        colour = _STATUS_COLOURS.get(text.split(" (")[0])
        inner = f"<span style='color:{colour}; font-weight:bold'>{_escape(text)}</span>" if colour else _escape(text)
        return f"<td style='{_CELL}'>{inner}</td>"
    if right or column in _WHOLE:
        return f"<td style='{_NUMBER if right else _CELL}'>{_escape(text)}</td>"
    if column in _NAMES and " " not in text:
        short = _short_name(text, column == "base_url")
        if short == text:
            return f"<td style='{_CELL}'>{_escape(text)}</td>"
        return f"<td style='{_CELL}' title=\"{_escape(text)}\">{_escape(short)}</td>"
    if len(text) <= HTML_CELL_CHARS:
        return f"<td style='{_WRAP}'>{_escape(text)}</td>"
    short = _escape(shorten(text, HTML_CELL_CHARS))
    full = _escape(text)
    return (f"<td style='{_WRAP}' title=\"{full}\"><details><summary>{short}</summary>"
            f"<div style='{_DETAILS}'>{full}</div></details></td>")


def _short_name(text: str, url: bool) -> str:
    """A URL or model path in at most HTML_NAME_CHARS, cut only at its "/" (the whole on hover):
    a URL loses its scheme, then its path from the end (its host stays whole); a model path keeps
    its last parts, the model's own name."""
    if len(text) <= HTML_NAME_CHARS:
        return text
    if url:
        rest = text.split("://", 1)[-1]
        parts = rest.split("/")
        kept = parts[0]
        for part in parts[1:]:
            if len(kept) + len(part) + 3 > HTML_NAME_CHARS:
                return kept + "/…" if len(kept) < len(rest) else kept
            kept += "/" + part
        return kept
    parts = text.split("/")
    kept = parts[-1]
    for part in reversed(parts[:-1]):
        if len(kept) + len(part) + 3 > HTML_NAME_CHARS:
            return "…/" + kept
        kept = part + "/" + kept
    return kept


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


# ---- both ----------------------------------------------------------------------------------

def as_table(data: Any) -> Table:
    """A Table as it is; a DataFrame (e.g. `compare`'s) as a Table, its index first when it has one."""
    if isinstance(data, Table):
        return data
    if hasattr(data, "itertuples") and hasattr(data, "columns"):  # a DataFrame: pandas is loaded already
        import pandas as pd

        keep_index = data.index.name is not None or not isinstance(data.index, pd.RangeIndex)
        df = data.reset_index() if keep_index else data
        return Table([str(c) for c in df.columns], [list(row) for row in df.itertuples(index=False, name=None)])
    raise TypeError(f"expected a nbllm.tables.Table or a DataFrame, got {type(data).__name__}")


def display_bundle(data: Any, caption: str | None = None) -> dict[str, str]:
    """A MIME bundle: HTML for notebooks, plain text for terminals (both from the same rows)."""
    t = as_table(data)
    text = to_text(t)
    body = to_html(t)
    if caption:
        text = f"{caption}\n{text}"
        body = f"<p>{_escape(caption)}</p>\n{body}"
    return {"text/plain": text, "text/html": body}
