"""nbllm's own files: where they live, how they are opened, how their rows come back typed.

The call log (`calllog.py`) and the replay cache (`replay.py`) are SQLite files in
the user data directory (`platformdirs.user_data_dir("nbllm")`) unless a path
variable (`NBLLM_HISTORY`, `NBLLM_CACHE`, read by `config`) names another; both are
opened in WAL mode so a writer thread and readers never block each other.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["data_file", "connect", "cast_usage", "shortened", "MAX_STORED_PROMPT"]

MAX_STORED_PROMPT = 100_000
"""The most characters of a prompt a store keeps (a `{df!full}` of a big table must not add megabytes per call)."""


def data_file(override: Path | None, filename: str) -> Path:
    """`override` (a path variable's value, as `config` read it), else `filename` in nbllm's user data directory."""
    if override:
        return override
    from platformdirs import user_data_dir

    return Path(user_data_dir("nbllm")) / filename


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """Open (and create) a SQLite file in WAL mode; shared by the call log and the replay cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(schema)
    return conn


def cast_usage(frame: "pd.DataFrame") -> "pd.DataFrame":
    """Token counts as nullable integers, latency and cost as floats, so None cells keep their column's type."""
    for column in ("input_tokens", "output_tokens"):
        if column in frame.columns:
            frame[column] = frame[column].astype("Int64")
    for column in ("latency_ms", "cost_usd"):
        if column in frame.columns:
            frame[column] = frame[column].astype("float64")
    return frame


def shortened(text: str | None, limit: int = MAX_STORED_PROMPT) -> str | None:
    """`text` as a store keeps it: at most `limit` characters, saying how many more there were."""
    if not text or len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters not kept)"
