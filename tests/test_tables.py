"""The one renderer for provider tables: text that fits a terminal and keeps the hint, HTML that is
left-aligned, colours the status and shortens long cells without breaking words."""

from __future__ import annotations

import html
import re

from nbllm import tables
from nbllm.health import ProviderHealth

HINT = "start LM Studio (lms server start)"
LONG = ("connection refused (nothing is listening) at http://127.0.0.1:1234/v1/models; also tried "
        "http://127.0.0.1:1234/api/v0/models and http://localhost:1234/v1/models — " + HINT)


def _health() -> dict[str, ProviderHealth]:
    return {
        "lmstudio": ProviderHealth("lmstudio", True, False, model_id="local-model",
                                   base_url="http://127.0.0.1:1234/v1", error=LONG),
        "openai": ProviderHealth("openai", True, None, kind="cloud", configured=False, model_id="gpt-5-mini",
                                 base_url="https://api.openai.com/v1", error="no API key: set OPENAI_API_KEY"),
        "ollama": ProviderHealth("ollama", True, True, model_id="llama3.2", models=["llama3.2", "qwen3"],
                                 base_url="http://localhost:11434", latency_ms=12.4),
    }


def _words(text: str) -> set[str]:
    return set(text.split())


def test_text_fits_the_width_and_keeps_the_hint():
    for width in (100, 200):
        text = tables.to_text(tables.health_table(_health(), tables.STATUS_COLUMNS), width=width)
        lines = text.splitlines()
        assert max(map(len, lines)) <= width, (width, lines)
        row = next(line for line in lines if line.startswith("lmstudio"))
        assert row.endswith(HINT) and "…" in row, row  # shortened in the middle, the hint kept
        assert "not configured" in text and "available" in text  # statuses are never shortened
        # Never a broken word: every word shown is a word of the error (or the mark of a cut).
        error = row[lines[0].index("error"):]
        assert _words(error) - {"…"} <= _words(LONG), error
    wide = tables.to_text(tables.health_table(_health(), tables.STATUS_COLUMNS), width=200)
    narrow = tables.to_text(tables.health_table(_health(), tables.STATUS_COLUMNS), width=100)
    assert len(next(l for l in wide.splitlines() if l.startswith("lmstudio"))) > \
        len(next(l for l in narrow.splitlines() if l.startswith("lmstudio")))  # a wider terminal shows more


def test_text_is_left_aligned_and_numbers_right_aligned():
    lines = tables.to_text(tables.health_table(_health(), tables.HEALTH_TABLE_COLUMNS), width=200).splitlines()
    head = lines[0]
    openai = next(line for line in lines if line.startswith("openai"))
    assert openai[head.index("status"):].startswith("not configured")
    assert openai[head.index("error"):].startswith("no API key: set OPENAI_API_KEY")
    ollama = next(line for line in lines if line.startswith("ollama"))
    end = head.index("latency_ms") + len("latency_ms")
    assert ollama[:end].endswith(" 12")  # right-aligned under its heading
    assert "yes" in openai.split() and "True" not in openai  # booleans in words


def test_shorten_cuts_between_words():
    assert tables.shorten("short", 10) == "short"
    cut = tables.shorten("connection refused at http://127.0.0.1:9/v1/models", 40)
    assert cut == "connection refused at …" and len(cut) <= 40
    assert tables.shorten("x" * 50, 10) == "x" * 9 + "…"  # one word longer than the room is the only cut inside


def test_html_is_left_aligned_with_a_coloured_status_and_a_title_for_long_cells():
    body = tables.to_html(tables.health_table(_health(), tables.STATUS_COLUMNS))
    cells = re.findall(r"<td style='([^']*)'[^>]*>", body)
    assert cells and all("text-align:left" in style and "white-space:nowrap" in style for style in cells)
    assert re.search(r"<span style='color:#[0-9a-f]{6}; font-weight:bold'>not configured</span>", body)
    assert re.search(r"<span style='color:#[0-9a-f]{6}; font-weight:bold'>down</span>", body)
    long_cell = re.search(r'<td [^>]*title="([^"]*)"><details><summary>([^<]*)</summary>', body)
    assert long_cell, body
    title, summary = long_cell.groups()
    assert html.unescape(title) == LONG  # the whole text on hover
    summary = html.unescape(summary)
    assert len(summary) <= tables.HTML_CELL_CHARS and "…" in summary and summary.endswith(HINT)
    assert _words(summary) - {"…"} <= _words(LONG)  # shortened between words, the hint kept
    assert "overflow-wrap:anywhere" not in body and "word-break:break-all" not in body


def test_html_escapes_what_servers_send():
    script = "<script>alert(1)</script>"
    health = {"x": ProviderHealth("x", True, False, model_id=script, error=f"server said {script} " + "y " * 40)}
    body = tables.to_html(tables.health_table(health))
    assert "<script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_a_dataframe_is_drawn_by_the_same_renderer():
    import pandas as pd

    df = tables.health_frame(_health(), tables.STATUS_COLUMNS)
    assert isinstance(df, pd.DataFrame) and list(df.index) == ["lmstudio", "openai", "ollama"]
    same = tables.health_table(_health(), tables.STATUS_COLUMNS)
    assert tables.to_text(df, width=120) == tables.to_text(same, width=120)
    assert tables.to_html(df) == tables.to_html(same)
