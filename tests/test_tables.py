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
    assert cells and all("text-align:left" in style for style in cells)
    # Each cell is one line, or wraps only between words (sentences): never inside a word.
    assert all("white-space:nowrap" in style or "overflow-wrap:normal; word-break:normal" in style
               for style in cells)
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


def _eight() -> dict[str, ProviderHealth]:
    """Eight providers as a new user sees them: cloud keys missing, local servers down, the
    embedded model not started (its note the only one), one server answering."""
    health = dict(_health())
    for name in ("anthropic", "gemini", "grok"):
        health[name] = ProviderHealth(name, True, None, kind="cloud", configured=False, model_id=f"{name}-model",
                                      base_url=f"https://api.{name}.example/v1",
                                      error=f"no API key: set {name.upper()}_API_KEY")
    health["llamacpp"] = ProviderHealth("llamacpp", True, False, model_id="default", base_url="http://localhost:8080",
                                        error="connection refused (nothing is listening) at http://localhost:8080/health"
                                              " — start llama-server (llama-server -m MODEL.gguf)")
    health["embedded"] = ProviderHealth("embedded", True, None, model_id="smollm2", note="starts on first use")
    return health


def test_a_terminal_table_wastes_no_width_on_empty_columns():
    no_notes = {k: v for k, v in _health().items()}  # no row has a note
    for width in (100, 200):
        head = tables.to_text(tables.health_table(no_notes, tables.HEALTH_TABLE_COLUMNS), width=width).splitlines()[0]
        assert "note" not in head.split(), (width, head)
    # Without a width (a notebook's text/plain, a pipe) every column stays, as asked for.
    assert "note" in tables.to_text(tables.health_table(no_notes, tables.HEALTH_TABLE_COLUMNS)).splitlines()[0]


def test_at_100_columns_the_hint_and_the_note_survive_and_what_is_left_out_is_named():
    text = tables.to_text(tables.health_table(_eight(), tables.STATUS_COLUMNS), width=100)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 100, lines
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert set(rows) == set(_eight())  # eight providers, one line each
    assert rows["lmstudio"].endswith(HINT)
    assert rows["llamacpp"].endswith("start llama-server (llama-server -m MODEL.gguf)")
    assert rows["embedded"].rstrip().endswith("starts on first use")  # the note shown, not a cut "sta…"
    assert rows["openai"].rstrip().endswith("no API key: set OPENAI_API_KEY")
    # Columns that cannot have a readable width are left out whole, and the last line says so.
    assert lines[-1].startswith("(left out to fit 100 columns: ") and "base_url" in lines[-1]
    assert "base_url" not in lines[0].split() and lines[0].endswith("error / note")  # the note joined the error
    for line in lines[1:-1]:
        assert not any(w.endswith("…") and len(w) > 1 for w in line.split()), line  # no word cut in two


def test_at_200_columns_everything_is_shown_and_the_hint_survives():
    text = tables.to_text(tables.health_table(_eight(), tables.STATUS_COLUMNS), width=200)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 200
    assert "left out" not in text
    assert lines[0].split() == ["provider", "kind", "status", "model", "base_url", "error", "note"]
    lmstudio = next(line for line in lines if line.startswith("lmstudio"))
    assert lmstudio.endswith(HINT) and "http://127.0.0.1:1234/v1 " in lmstudio  # the base URL whole


def test_the_health_table_at_100_columns_keeps_every_hint():
    lines = tables.to_text(tables.health_table(_eight(), tables.HEALTH_TABLE_COLUMNS), width=100).splitlines()
    assert max(map(len, lines)) <= 100
    for name, h in _eight().items():
        row = next(line for line in lines if line.startswith(name + " "))
        if h.error and " — " in h.error:
            assert row.endswith(h.error.rpartition(" — ")[2]), row
        elif h.error:
            assert h.error in row, row
    assert lines[-1].startswith("(left out to fit 100 columns:")


def test_html_leaves_out_columns_no_row_fills():
    body = tables.to_html(tables.health_table(_health(), tables.HEALTH_TABLE_COLUMNS))
    headings = re.findall(r"<th [^>]*>([^<]*)</th>", body)
    assert "note" not in headings and "error" in headings and "models" in headings


def test_html_shortens_urls_and_model_paths_only_at_a_slash_with_the_whole_on_hover():
    health = {"fireworks": ProviderHealth("fireworks", True, None, kind="cloud", configured=False,
                                          model_id="accounts/fireworks/models/gpt-oss-20b",
                                          base_url="https://api.fireworks.ai/inference/v1/extra",
                                          error="no API key: set FIREWORKS_API_KEY")}
    body = tables.to_html(tables.health_table(health, tables.STATUS_COLUMNS))
    cells = dict(re.findall(r'<td [^>]*title="([^"]*)">([^<]*)</td>', body))
    assert cells["accounts/fireworks/models/gpt-oss-20b"] == "…/models/gpt-oss-20b"  # the model's own name kept
    assert cells["https://api.fireworks.ai/inference/v1/extra"] == "api.fireworks.ai/inference/…"
    assert all(len(shown) <= tables.HTML_NAME_CHARS for shown in cells.values())
