"""The call log: every call nbllm makes, kept in a SQLite file users can query.

Each call that reached a provider (or the replay cache) is one row of the `calls`
table. `nbllm.history(limit=20)` shows the latest rows as a DataFrame;
`nbllm.history.disable()` / `.enable()` turn logging off and on for this process,
and `NBLLM_LOG=0` turns it off from the environment. The file lives in the user
data directory (`platformdirs.user_data_dir("nbllm")/history.sqlite`);
`NBLLM_HISTORY=/path/file.sqlite` puts it elsewhere.

Why a writer thread: a call hands its row to a queue and returns at once; one
daemon thread (`store.BatchedWriter`) batches the rows into the file (WAL mode), so
logging never adds disk latency to a call; a row SQLite refuses is skipped alone.
`history()` waits for pending rows before it reads.

Keys never reach the file: rows are built from prompts, answers and settings, and
every text is scrubbed of every key the process knows (`errors.scrub`) — unless one
look at the row's texts together shows scrubbing would change nothing
(`errors.might_hold_secret`: ASCII, no known key, no key-like word, no URL), which
saves its regular-expression passes on most rows.

Schema (table `calls`, `PRAGMA user_version = 2`; a version-1 file is migrated in place)::

    id INTEGER PRIMARY KEY, time TEXT (ISO 8601, UTC), kind TEXT ('ask' | 'stream'),
    provider TEXT, model TEXT, prompt TEXT, system TEXT, settings TEXT (JSON:
    temperature, max_tokens, timeout, chat_turns), answer TEXT, input_tokens INTEGER,
    output_tokens INTEGER, latency_ms REAL, cost_usd REAL,
    outcome TEXT ('ok' | 'cached' | 'error' | 'partial' | 'interrupted'), error TEXT,
    asked TEXT (the name asked: `fast`, `openai,embedded`; `provider` is who answered),
    fallbacks TEXT (the links of a chain passed over, one "provider: why" per line)

'interrupted': Ctrl-C or a cancellation stopped the call; `answer` holds the text
that had arrived. A file that cannot be written costs one warning, never a call.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import call_events
from .errors import might_hold_secret, scrub
from .store import BatchedWriter, cast_usage, connect, data_file, read_file, shortened

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["history", "CallLog", "record", "history_path", "connect", "COLUMNS", "query"]

log = logging.getLogger("nbllm")

COLUMNS = [
    "id", "time", "kind", "provider", "model", "prompt", "system", "settings", "answer",
    "input_tokens", "output_tokens", "latency_ms", "cost_usd", "outcome", "error", "asked", "fallbacks",
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
"""

_MIGRATIONS = (
    # 2 (nbllm 0.2): the name asked (`asked`: an alias or a chain, where `provider` is who answered) and the
    # links of a chain passed over, one "provider: why" per line (`fallbacks`).
    "ALTER TABLE calls ADD COLUMN asked TEXT; ALTER TABLE calls ADD COLUMN fallbacks TEXT;",
)
"""Schema changes, applied in order to an older file (`PRAGMA user_version` counts them from 1)."""


def _open(path: Path) -> sqlite3.Connection:
    """The log file with the current schema (an older file is migrated in place, its rows kept)."""
    conn = connect(path, _SCHEMA)
    version = conn.execute("PRAGMA user_version").fetchone()[0] or 1
    columns = {row[1] for row in conn.execute("PRAGMA table_info(calls)")}
    for number, step in enumerate(_MIGRATIONS, start=2):
        if version < number:
            if number != 2 or "asked" not in columns:  # a racing writer may have just done it
                try:
                    conn.executescript(step)
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise
            conn.execute(f"PRAGMA user_version = {number}")
    return conn

_SURROGATE = re.compile("[\ud800-\udfff]")
_INSERT = f"INSERT INTO calls ({', '.join(COLUMNS[1:])}) VALUES ({', '.join('?' for _ in COLUMNS[1:])})"


_path_for: tuple[Any, Path] | None = None
"""The settings `history_path` last read and the path they gave (every call asks: it is read once per settings)."""


def history_path() -> Path:
    """Where the call log lives (`NBLLM_HISTORY` overrides the user data directory)."""
    global _path_for
    from .registry import get_registry

    settings = get_registry().global_settings
    known = _path_for
    if known is not None and known[0] is settings:
        return known[1]
    path = data_file(settings.value("NBLLM_HISTORY"), "history.sqlite")
    _path_for = (settings, path)
    return path


# ---- the writer ------------------------------------------------------------------


class _Writer(BatchedWriter):
    """The call log's writer thread: rows appended to `calls`; an unusable file is one warning with the fix."""

    def __init__(self) -> None:
        super().__init__("nbllm-calllog", _open, _insert, _warning)

    def warn_once(self, problem: str, fix: bool = True) -> None:  # type: ignore[override]
        """One warning per process; `fix` adds the advice for an unusable file (not for one bad row)."""
        super().warn_once(problem + (_ADVICE if fix else ""))


_ADVICE = ("; point NBLLM_HISTORY at a writable file or turn logging off with NBLLM_LOG=0 "
           "(or nbllm.history.disable())")


def _insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany(_INSERT, rows)


def _warning(path: Path, problem: Exception, one_row: bool) -> str:
    if one_row:
        return (f"one call's row could not be written to {path} ({type(problem).__name__}: {problem}) "
                "and was skipped; the other rows are kept")
    return f"could not write the call log {path} ({problem}){_ADVICE}"


_writer = _Writer()


# ---- recording -------------------------------------------------------------------


_SETTINGS_KEYS = ("temperature", "max_tokens", "timeout", "chat_turns")
_settings_texts: dict[tuple[Any, ...], str] = {}
"""The settings column for each combination of values seen (a map's rows all share one: json once, not per row)."""


def _settings_json(call: Any, options: dict[str, Any] | None) -> str:
    request = call.request
    options = options or {}
    chat = request.chat
    values = (options.get("temperature", request.temperature), options.get("max_tokens", request.max_tokens),
              options.get("timeout", request.timeout), len(chat.messages) // 2 if chat is not None else None)
    key = tuple((type(v), v) for v in values)  # 1 and 1.0 and True are different JSON
    text = _settings_texts.get(key)
    if text is None:
        text = json.dumps({k: v for k, v in zip(_SETTINGS_KEYS, values) if v is not None}, sort_keys=True)
        if len(_settings_texts) > 256:
            _settings_texts.clear()
        _settings_texts[key] = text
    return text


def _outcome(answer: Any) -> str:
    if getattr(answer, "error", None):
        return "partial" if getattr(answer, "text", "") else "error"
    return "cached" if getattr(answer, "cached", False) else "ok"


def clean(text: str | None) -> str | None:
    """Text as the log stores it: scrubbed of every key this process knows and URL
    credentials, and writable (a lone surrogate, which SQLite cannot encode, becomes U+FFFD)."""
    if not text:
        return text
    return _SURROGATE.sub("\ufffd", scrub(text))


def _cleaned(texts: list[str | None]) -> list[str | None]:
    """`clean` of each text, skipped when one look at them all shows it would change nothing (the usual row:
    ASCII, no key, no credential, no URL — `errors.might_hold_secret`)."""
    try:
        joined = "\n".join(t for t in texts if t)
    except TypeError:  # not all text: `clean` makes it text
        return [clean(t) for t in texts]
    return [clean(t) for t in texts] if might_hold_secret(joined) else texts


def record(call: Any, answer: Any, options: dict[str, Any] | None = None, outcome: str | None = None) -> None:
    """Queue one row for the log (returns at once; does nothing when logging is off; never raises).

    `call` is the `pipeline.Call` that was answered; `outcome` overrides the one read
    from the answer (the pipeline passes "interrupted").
    """
    call_events.ended(answer)  # every call ends here: faces (the panel) update what they show
    if not history.enabled:
        return
    try:
        request = call.request
        fallbacks = getattr(answer, "fallbacks", ())
        prompt, system, text, error, passed = _cleaned([
            shortened(request.prompt), request.system, answer.text, answer.error,
            "\n".join(str(f) for f in fallbacks) if fallbacks else None])
        row = (
            datetime.now(timezone.utc).isoformat(timespec="milliseconds"), call.kind,
            answer.provider, answer.model, prompt, system,
            _settings_json(call, options), text, answer.input_tokens, answer.output_tokens,
            round(answer.latency_ms, 2), answer.cost_usd, outcome or _outcome(answer), error,
            getattr(call, "asked", "") or call.provider + (f":{call.model}" if call.model else ""),
            passed or None,
        )
        _writer.put(history_path(), row)
    except Exception as exc:  # logging must never fail the call it logs
        _writer.warn_once(f"could not log a call ({type(exc).__name__}: {exc}); that call's row was skipped",
                          fix=False)


# ---- reading: nbllm.history ---------------------------------------------------------


class CallLog:
    """`nbllm.history(limit=20)` → the latest calls as a DataFrame (oldest first); `plot=True` charts them.

    `nbllm.history.disable()` / `.enable()` switch logging for this process (they win
    over `NBLLM_LOG`), `.enabled` says whether calls are logged, `.path` where,
    and `.clear()` deletes every row.
    """

    def __init__(self) -> None:
        self._override: bool | None = None

    def __call__(self, limit: int | None = 20, provider: str | None = None, plot: bool = False) -> "pd.DataFrame":
        """The latest `limit` calls (None: all), of one `provider` if given; `plot=True` also draws them
        over time (`plots.history_chart`, matplotlib imported only then)."""
        if plot:
            from .plots import history_chart

            frame = self(limit, provider)
            history_chart(frame)
            return frame
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
        from .registry import get_registry

        return get_registry().global_settings.log  # NBLLM_LOG, as config read it

    def enable(self) -> None:
        self._override = True

    def disable(self) -> None:
        self._override = False

    def reset(self) -> None:
        """Forget enable()/disable() (`NBLLM_LOG` decides again) and warn again about an unusable file."""
        self._override = None
        _writer.warned = False

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


def query(sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the log (queued rows written first); none when there is no log yet."""
    path = history_path()
    _writer.flush()
    if not path.exists():
        return []
    return _read(path, lambda conn: conn.execute(sql, params).fetchall())


def _read(path: Path, use: Any) -> Any:
    """`use(connection)` on the log file; a file SQLite cannot use is one ConfigurationError."""
    return read_file(path, _open, use, "call log", "NBLLM_HISTORY")


def _typed(frame: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd

    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    return cast_usage(frame)


history = CallLog()
