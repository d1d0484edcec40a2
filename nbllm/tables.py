"""Tables for people: health and configuration as pandas DataFrames, text or HTML.

Keys never reach a table: rows are built from `ProviderHealth` and the masked
variable listing, which hold no secrets. Styling (a pandas Styler) is only for
display; every function that returns data returns a plain DataFrame.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from .health import ProviderHealth

if TYPE_CHECKING:
    import pandas as pd
    from pandas.io.formats.style import Styler

__all__ = [
    "HEALTH_COLUMNS", "HEALTH_TABLE_COLUMNS", "STATUS_COLUMNS", "VARIABLE_COLUMNS",
    "health_rows", "health_frame", "server_label",
    "variables_frame", "frame", "to_text", "to_html", "styled", "display_bundle",
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


def frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def health_frame(health: dict[str, ProviderHealth], columns: list[str] | None = None) -> "pd.DataFrame":
    """The health table as a DataFrame indexed by provider."""
    return frame(health_rows(health), columns or HEALTH_COLUMNS).set_index("provider")


def variables_frame(names: list[str] | None = None) -> "pd.DataFrame":
    """Every variable each provider reads, whether it is set and from where (keys masked)."""
    from .registry import get_registry

    from .config import global_variable_rows

    registry = get_registry()
    rows = [row for name in (names or registry.names()) for row in registry.variables(name)]
    if names is None:  # then the NBLLM_* variables, which are nobody's provider
        rows += global_variable_rows(registry.global_settings, registry.environment)
    return frame(rows, VARIABLE_COLUMNS)


def alias_rows() -> list[dict[str, Any]]:
    """One row per alias, by name: its target, when it falls back, why it cannot answer (if so), its file."""
    from .registry import get_registry
    from .routing import alias_problem

    registry = get_registry()
    return [{"alias": name, "target": a.target, "on": a.on, "note": alias_problem(name) or "",
             "file": a.source or "(this process only)"} for name, a in sorted(registry.aliases.items())]


TEXT_CELL_WIDTH = 60
"""Longest cell a text table shows; longer ones end in "…" (the HTML view keeps the full text)."""
TEXT_TABLE_WIDTH = 120
"""Text tables narrow their widest text columns (not below `_MIN_CELL_WIDTH`) to fit this."""
_MIN_CELL_WIDTH = 24
_MIN_ERROR_WIDTH = 48
"""The error column says what to do (e.g. which key to set): it narrows last and least."""
_GAP = "  "


def to_text(df: "pd.DataFrame", width: int = TEXT_TABLE_WIDTH) -> str:
    """A plain-text rendering for terminals: every column, text left-aligned, numbers
    right-aligned, and long text cells cut with "…" so the table fits about `width` columns."""
    import pandas as pd

    keep_index = df.index.name is not None or not isinstance(df.index, pd.RangeIndex)
    table = df.reset_index() if keep_index else df
    columns = [str(c) for c in table.columns]
    numeric = [pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
               for c in table.columns]
    cells = [[_text_cell(value) for value in row] for row in table.itertuples(index=False, name=None)]
    natural = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    floors = [_MIN_ERROR_WIDTH if name == "error" else _MIN_CELL_WIDTH for name in columns]
    widths = _fit(natural, [len(name) for name in columns], numeric, floors, width)

    def line(values: list[str]) -> str:
        parts = [_cut(v, w).rjust(w) if right else _cut(v, w).ljust(w) for v, w, right in zip(values, widths, numeric)]
        return _GAP.join(parts).rstrip()

    return "\n".join([line(columns), *(line(row) for row in cells)])


def _fit(natural: list[int], headings: list[int], numeric: list[bool], least: list[int], width: int) -> list[int]:
    """Column widths: text columns capped at TEXT_CELL_WIDTH, then the widest narrowed one
    character at a time until the table fits `width` (or none can give more)."""
    widths = [w if right else min(w, max(TEXT_CELL_WIDTH, head)) for w, head, right in zip(natural, headings, numeric)]
    floors = [w if right else max(head, min(w, low)) for w, head, right, low in zip(widths, headings, numeric, least)]
    while sum(widths) + len(_GAP) * (len(widths) - 1) > width:
        shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def _text_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = f"{value:.0f}" if isinstance(value, float) else str(value)
    return " ".join(text.split())  # one line per row, whatever a server's message held


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def styled(df: "pd.DataFrame") -> "Styler":
    """The DataFrame with its `status` column coloured (display only).

    Cells are HTML-escaped: model names and error texts come from servers, and the
    Styler would otherwise put them into the page as markup.
    """

    def colour(value: Any) -> str:
        code = _STATUS_COLOURS.get(str(value))
        return f"color: {code}; font-weight: bold" if code else ""

    formats = None
    if "latency_ms" in df.columns:
        formats = {"latency_ms": lambda v: "" if v is None or v != v else f"{v:.0f}"}
    styler = df.style.format(formats, escape="html").format_index(escape="html")
    if "status" in df.columns:
        styler = styler.map(colour, subset=["status"])
    return styler


def to_html(df: "pd.DataFrame") -> str:
    """HTML for notebooks: the styled table, or pandas' plain HTML if styling is unavailable."""
    try:
        return styled(df).to_html()
    except ImportError:  # Styler needs jinja2
        return df.to_html()


def display_bundle(df: "pd.DataFrame", caption: str | None = None) -> dict[str, str]:
    """A MIME bundle: HTML for notebooks, plain text for terminals."""
    text = to_text(df)
    body = to_html(df)
    if caption:
        text = f"{caption}\n{text}"
        body = f"<p>{html.escape(caption)}</p>\n{body}"
    return {"text/plain": text, "text/html": body}
