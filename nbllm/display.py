"""How an answer looks: one display that grows while the answer streams, then a final one.

In a front end that renders displays (Jupyter, VS Code, Colab) the answer is a
single display updated in place — re-rendered Markdown, at most one update per
`interval` but always the last — whose final version carries the answer's
metadata (provider, model, usage, latency). In a terminal the text is printed as
it arrives. Failures are shown as one line, never a traceback.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pprint import pformat
from typing import Any

from .errors import CellError, Interrupted

__all__ = [
    "FORMATS", "AnswerView", "CellError", "Interrupted", "Converted", "convert", "extract_code", "footer", "rich_frontend",
    "typed", "table_rows",
]

FORMATS = ("markdown", "text", "code", "json", "html")


def rich_frontend(shell: Any) -> bool:
    """True when displays reach something that renders them (a kernel's front end, a capture)."""
    if shell is None:
        return False
    from IPython.core.displaypub import DisplayPublisher

    return type(getattr(shell, "display_pub", None)) is not DisplayPublisher


_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str:
    """The code in an answer: its fenced blocks joined, or the whole text if it has none."""
    blocks = [block.strip("\n") for block in _FENCE.findall(text)]
    blocks = [block for block in blocks if block.strip()]
    return "\n\n".join(blocks) if blocks else text.strip("\n")


@dataclass
class Converted:
    """An answer in its requested format: the value to store, how to show it, and any problem."""

    value: Any
    bundle: dict[str, Any]
    problem: str | None = None


def _plain_bundle(text: str, fmt: str) -> dict[str, Any]:
    if fmt == "text":
        return {"text/plain": text}
    if fmt == "html":
        return {"text/html": text, "text/plain": text}
    return {"text/markdown": text, "text/plain": text}


def convert(text: str, fmt: str) -> Converted:
    """Turn the answer's text into the value and display bundle of format `fmt`."""
    if fmt == "code":
        code = extract_code(text)
        return Converted(code, {"text/markdown": f"```python\n{code}\n```", "text/plain": code})
    if fmt == "json":
        source = extract_code(text) if "```" in text else text.strip()
        try:
            value = json.loads(source)
        except ValueError as exc:
            problem = f"the answer is not valid JSON ({exc}); its text is kept"
            return Converted(text, {"text/plain": text}, problem)
        return Converted(value, {"application/json": value, "text/plain": pformat(value)})
    return Converted(text, _plain_bundle(text, fmt))


CELL_WIDTH = 60
"""Characters of one cell in a typed answer's text/plain table (the HTML table and the value keep all)."""


def _cell_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def table_rows(value: Any) -> tuple[list[str], list[list[str]]] | None:
    """A typed answer as (header, rows): `field | value` for one object, one row per item (a column
    per field) for a list of objects, `# | value` for a list of plain values; None for a plain value."""
    from pydantic_core import to_jsonable_python

    data = to_jsonable_python(value, by_alias=True, serialize_unknown=True)
    if isinstance(data, dict):
        return ["field", "value"], [[str(key), _cell_text(item)] for key, item in data.items()]
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        header: list[str] = []
        for item in data:
            header.extend(str(key) for key in item if str(key) not in header)
        return header, [[_cell_text(item.get(key)) if key in item else "" for key in header] for item in data]
    if isinstance(data, list):
        return ["#", "value"], [[str(i), _cell_text(item)] for i, item in enumerate(data)]
    return None


def _plain_table(header: list[str], rows: list[list[str]]) -> str:
    def fit(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"

    cells = [[fit(c) for c in header], *[[fit(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]], title: str | None) -> str:
    import html

    esc = html.escape
    caption = f"<caption>{esc(title)}</caption>" if title else ""
    head = "".join(f"<th>{esc(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<table class="nbllm-typed">{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def typed(value: Any, fmt: str = "markdown", title: str | None = None) -> Converted:
    """A validated answer (`--schema`) shown as a small table; `fmt` "text" sends only text/plain."""
    table = table_rows(value)
    if table is None:
        import html

        plain = value if isinstance(value, str) else pformat(value)
        bundle = {"text/plain": plain, "text/html": f"<code>{html.escape(plain)}</code>"}
    else:
        bundle = {"text/plain": _plain_table(*table), "text/html": _html_table(*table, title)}
    if fmt == "text":
        bundle = {"text/plain": bundle["text/plain"]}
    return Converted(value, bundle)


def footer(meta: dict[str, Any]) -> str:
    """`provider · model · tokens · latency` for the optional line under an answer; after a fallback
    also who was passed over and why (`instead of openai: connection refused`)."""
    parts = [str(meta.get("provider") or "?"), str(meta.get("model") or "?")]
    if meta.get("fallbacks"):
        parts.append("instead of " + "; ".join(str(f) for f in meta["fallbacks"]))
    usage = meta.get("usage") or {}
    if usage.get("input_tokens") is not None or usage.get("output_tokens") is not None:
        parts.append(f"{usage.get('input_tokens') or 0}→{usage.get('output_tokens') or 0} tokens")
    if meta.get("latency_ms"):
        parts.append(f"{meta['latency_ms']:.0f} ms")
    if meta.get("cost_usd"):
        parts.append(f"${meta['cost_usd']:.4f}")
    return " · ".join(parts)


def _with_footer(bundle: dict[str, Any], line: str) -> dict[str, Any]:
    import html

    bundle, line = dict(bundle), html.escape(line, quote=False)  # a failure's words may hold "<" or "&"
    if "text/markdown" in bundle:
        bundle["text/markdown"] = f"{bundle['text/markdown']}\n\n<sub>{line}</sub>"
    if "text/html" in bundle:
        bundle["text/html"] = f"{bundle['text/html']}<br><sub>{line}</sub>"
    return bundle


LARGE = 64 * 1024
"""Characters of live text beyond which an update also waits for the text to grow by GROWTH."""
GROWTH = 0.25
"""Growth (a fraction of the text last shown) a large answer needs before its next live update.

With growth g the live updates of an n-character answer send at most n·(1+g)/g
characters (5n here) plus the final display's n, however the text arrives."""


class AnswerView:
    """One answer on screen: `add()` text while it streams, `finish()` once at the end.

    Rich front ends get one display (created with the first text) updated in place,
    throttled to one update per `interval` seconds; call `tick()` when idle so the
    last throttled text still appears. Every update resends the whole text, so once
    it passes `LARGE` characters an update also waits until the text has grown by
    `GROWTH` since the last one: the sizes sent then grow geometrically and a long
    answer costs a few times its size in total, not its size per update (5 MB took
    ten times longer streamed than not). Terminals get the text printed as it comes.
    """

    def __init__(self, fmt: str = "markdown", *, rich: bool, interval: float = 0.05, show_footer: bool = False,
                 clock: Callable[[], float] = time.perf_counter):
        self.fmt = fmt
        self.rich = rich
        self.interval = interval
        self.show_footer = show_footer
        self.clock = clock
        self.parts: list[str] = []
        self.updates = 0
        self._handle: Any = None
        self._last = -math.inf
        self._pending = False
        self._size = 0  # characters so far, without joining the parts
        self._shown = 0  # characters in the last live update

    @property
    def text(self) -> str:
        if len(self.parts) > 1:  # join once: later reads and updates start from one string
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def _live_bundle(self) -> dict[str, Any]:
        text = self.text
        return {"text/plain": text} if self.fmt in ("text", "json") else _plain_bundle(text, "markdown")

    def _publish(self, bundle: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display(bundle, raw=True, metadata=metadata, display_id=True)
        else:
            self._handle.update(bundle, raw=True, metadata=metadata)
        self.updates += 1

    def _refresh(self) -> None:
        now = self.clock()
        if now - self._last < self.interval or not self._grown_enough():
            self._pending = True
            return
        self._publish(self._live_bundle())
        self._last = now
        self._shown = self._size
        self._pending = False

    def _grown_enough(self) -> bool:
        """Small text: always. Large: only once it grew by GROWTH since the last update."""
        return self._shown < LARGE or self._size - self._shown >= GROWTH * self._shown

    def add(self, delta: str) -> None:
        """Show one more piece of the answer."""
        if not delta:
            return
        self.parts.append(delta)
        self._size += len(delta)
        if self.rich:
            self._refresh()
        else:
            sys.stdout.write(delta)
            sys.stdout.flush()

    def notice(self, text: str) -> None:
        """Show what the call is waiting for (e.g. "starting the embedded model…") until text arrives."""
        if self.rich:
            self._publish({"text/plain": text, "text/markdown": f"*{text}*"})
        else:
            sys.stderr.write(f"nbllm: {text}\n")
            sys.stderr.flush()

    def tick(self) -> None:
        """Nothing new arrived for a while: show text held back by the throttle."""
        if self.rich and self._pending:
            self._refresh()

    def finish(self, converted: Converted | None, metadata: dict[str, Any], streamed: bool = True) -> None:
        """Show the final answer with its metadata (`converted` None: keep the text as it is)."""
        if converted is None:
            converted = Converted(self.text, _plain_bundle(self.text, "text" if self.fmt == "json" else "markdown"))
        # A fallback is always said: the user asked one provider and another answered.
        line = footer(metadata) if self.show_footer or metadata.get("fallbacks") else None
        if self.rich:
            if not converted.bundle.get("text/plain") and self._handle is None:
                return  # nothing arrived: the error line says why, an empty display would not
            bundle = _with_footer(converted.bundle, line) if line else converted.bundle
            self._publish(bundle, {"nbllm": metadata})
            return
        text = self.text if streamed else str(converted.bundle.get("text/plain", ""))
        if not streamed and text:
            sys.stdout.write(text)
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        if line:
            sys.stdout.write(f"[{line}]\n")
        sys.stdout.flush()
