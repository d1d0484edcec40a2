"""The call log: every call nbllm makes, kept in a SQLite file users can query.

Each call that reached a provider (or the replay cache) is one row of the `calls`
table. `nbllm.history(limit=20)` shows the latest rows as a DataFrame;
`nbllm.history.disable()` / `.enable()` turn logging off and on for this process,
and `NBLLM_LOG=0` turns it off from the environment. The file lives in the user
data directory (`platformdirs.user_data_dir("nbllm")/history.sqlite`);
`NBLLM_HISTORY=/path/file.sqlite` puts it elsewhere.

Why a writer thread: a call hands its row to a queue and returns at once; one
daemon thread batches the rows into the file (WAL mode), so logging never adds
disk latency to a call. `history()` waits for pending rows before it reads.

Keys never reach the file: rows are built from prompts, answers and settings, and
every text is scrubbed of every key the process knows (`ProviderRegistry.scrub`).

Schema (table `calls`, `PRAGMA user_version = 1`)::

    id INTEGER PRIMARY KEY, time TEXT (ISO 8601, UTC), kind TEXT ('ask' | 'stream'),
    provider TEXT, model TEXT, prompt TEXT, system TEXT, settings TEXT (JSON:
    temperature, max_tokens, timeout, chat_turns), answer TEXT, input_tokens INTEGER,
    output_tokens INTEGER, latency_ms REAL, cost_usd REAL,
    outcome TEXT ('ok' | 'cached' | 'error' | 'partial' | 'interrupted'), error TEXT

'interrupted': Ctrl-C or a cancellation stopped the call; `answer` holds the text
that had arrived. A file that cannot be written costs one warning, never a call.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .registry import get_registry

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["history", "CallLog", "record", "history_path", "connect", "COLUMNS"]

log = logging.getLogger("nbllm")

COLUMNS = [
    "id", "time", "kind", "provider", "model", "prompt", "system", "settings", "answer",
    "input_tokens", "output_tokens", "latency_ms", "cost_usd", "outcome", "error",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    provider TEXT,
    model TEXT,
    prompt TEXT,
    system TEXT,
    settings TEXT,
    answer TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    latency_ms REAL,
    cost_usd REAL,
    outcome TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS calls_time ON calls (time);
PRAGMA user_version = 1;
"""

_OFF = {"0", "false", "no", "off"}


def data_file(variable: str, filename: str) -> Path:
    """A file in nbllm's user data directory, unless `variable` names another path."""
    override = os.environ.get(variable)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("nbllm")) / filename


def history_path() -> Path:
    """Where the call log lives (`NBLLM_HISTORY` overrides the user data directory)."""
    return data_file("NBLLM_HISTORY", "history.sqlite")


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """Open (and create) a SQLite file in WAL mode; shared by the call log and the replay cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(schema)
    return conn


# ---- the writer ------------------------------------------------------------------


class _Writer:
    """One daemon thread that batches queued rows into the file of each row's path."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Path, tuple[Any, ...]] | threading.Event] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._conn: tuple[Path, sqlite3.Connection] | None = None
        self._warned = False

    def put(self, path: Path, row: tuple[Any, ...]) -> None:
        self._ensure_thread()
        self._queue.put((path, row))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every row queued so far is in the file."""
        if self._thread is None or not self._thread.is_alive():
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="nbllm-calllog", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            if not isinstance(batch[0], threading.Event):
                time.sleep(0.02)  # let rows gather: one wake-up and one transaction per batch, not per call
            while len(batch) < 1000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows: dict[Path, list[tuple[Any, ...]]] = {}
            waiters = []
            for item in batch:
                if isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    rows.setdefault(item[0], []).append(item[1])
            for path, items in rows.items():
                self._write(path, items)
            for event in waiters:
                event.set()

    def _write(self, path: Path, rows: list[tuple[Any, ...]]) -> None:
        try:
            if self._conn is None or self._conn[0] != path:
                if self._conn is not None:
                    self._conn[1].close()
                    self._conn = None
                self._conn = (path, connect(path, _SCHEMA))
            conn = self._conn[1]
            placeholders = ", ".join("?" for _ in COLUMNS[1:])
            conn.execute("BEGIN")
            conn.executemany(f"INSERT INTO calls ({', '.join(COLUMNS[1:])}) VALUES ({placeholders})", rows)
            conn.execute("COMMIT")
        except Exception as exc:  # the log must never break a call; say so once
            if self._conn is not None:
                try:
                    self._conn[1].close()
                except Exception:
                    pass
                self._conn = None
            self.warn_once(f"could not write the call log {path} ({exc})")

    def warn_once(self, problem: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("nbllm: %s; point NBLLM_HISTORY at a writable file or turn logging off with NBLLM_LOG=0 "
                        "(or nbllm.history.disable())", problem)


_writer = _Writer()
atexit.register(_writer.flush, 2.0)


# ---- recording -------------------------------------------------------------------


def _settings_json(request: Any, options: dict[str, Any] | None) -> str:
    options = options or {}
    chat = getattr(request, "chat", None)
    values = {
        "temperature": options.get("temperature", getattr(request, "temperature", None)),
        "max_tokens": options.get("max_tokens", getattr(request, "max_tokens", None)),
        "timeout": options.get("timeout", getattr(request, "timeout", None)),
        "chat_turns": len(chat.messages) // 2 if chat is not None else None,
    }
    return json.dumps({k: v for k, v in values.items() if v is not None}, sort_keys=True)


def _outcome(answer: Any) -> str:
    if getattr(answer, "error", None):
        return "partial" if getattr(answer, "text", "") else "error"
    return "cached" if getattr(answer, "cached", False) else "ok"


def record(request: Any, answer: Any, options: dict[str, Any] | None = None, kind: str = "ask",
           outcome: str | None = None) -> None:
    """Queue one row for the log (returns at once; does nothing when logging is off; never raises).

    `outcome` overrides the one read from the answer (the call layer passes "interrupted").
    """
    if not history.enabled:
        return

    def clean(text: str | None) -> str | None:  # every key this process knows, not only this provider's
        return get_registry().scrub(text) if text else text

    try:
        row = (
            datetime.now(timezone.utc).isoformat(timespec="milliseconds"), kind,
            answer.provider, answer.model, clean(request.prompt), clean(request.system),
            _settings_json(request, options), clean(answer.text), answer.input_tokens, answer.output_tokens,
            round(answer.latency_ms, 2), answer.cost_usd, outcome or _outcome(answer), clean(answer.error),
        )
        _writer.put(history_path(), row)
    except Exception as exc:  # logging must never fail the call it logs
        _writer.warn_once(f"could not log a call ({exc})")


# ---- reading: nbllm.history ---------------------------------------------------------


class CallLog:
    """`nbllm.history(limit=20)` → the latest calls as a DataFrame (oldest first).

    `nbllm.history.disable()` / `.enable()` switch logging for this process (they win
    over `NBLLM_LOG`), `.enabled` says whether calls are logged, `.path` where,
    and `.clear()` deletes every row.
    """

    def __init__(self) -> None:
        self._override: bool | None = None

    def __call__(self, limit: int | None = 20, provider: str | None = None) -> "pd.DataFrame":
        import pandas as pd

        if limit is not None and (not isinstance(limit, int) or limit < 1):
            from .errors import ConfigurationError

            raise ConfigurationError(f"history(limit={limit!r}): give a positive whole number, or None for all.")
        path = self.path
        _writer.flush()
        if not path.exists():
            return _typed(pd.DataFrame(columns=COLUMNS).set_index("id"))
        query = f"SELECT {', '.join(COLUMNS)} FROM calls"
        params: list[Any] = []
        if provider:
            query += " WHERE provider = ?"
            params.append(provider.strip().lower())
        query += " ORDER BY id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        rows = _read(path, lambda conn: conn.execute(query, params).fetchall())
        frame = pd.DataFrame(list(reversed(rows)), columns=COLUMNS).set_index("id")
        return _typed(frame)

    @property
    def enabled(self) -> bool:
        if self._override is not None:
            return self._override
        return os.environ.get("NBLLM_LOG", "1").strip().lower() not in _OFF

    def enable(self) -> None:
        self._override = True

    def disable(self) -> None:
        self._override = False

    def reset(self) -> None:
        """Forget enable()/disable() (`NBLLM_LOG` decides again) and warn again about an unusable file."""
        self._override = None
        _writer._warned = False

    @property
    def path(self) -> Path:
        return history_path()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until queued rows are written."""
        _writer.flush(timeout)

    def clear(self) -> int:
        """Delete every logged call; returns how many rows were removed."""
        path = self.path
        _writer.flush()
        if not path.exists():
            return 0
        return _read(path, lambda conn: conn.execute("DELETE FROM calls").rowcount)

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"<nbllm call log ({state}) at {self.path}; call history(limit=20) for a DataFrame>"


def _read(path: Path, use: Any) -> Any:
    """`use(connection)` on the log file; a file SQLite cannot use is one ConfigurationError."""
    try:
        conn = connect(path, _SCHEMA)
        try:
            return use(conn)
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        from .errors import ConfigurationError

        raise ConfigurationError(f"The call log {path} cannot be read ({exc}): point NBLLM_HISTORY at another "
                                 "file.") from None


def _typed(frame: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd

    from .tables import cast_usage

    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return cast_usage(frame)


history = CallLog()
