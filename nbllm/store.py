"""nbllm's own files: where they live, how they are opened, how their rows come back typed.

The call log (`calllog.py`), the replay cache (`replay.py`) and the jobs (`jobstore.py`) are
SQLite files in the user data directory (`platformdirs.user_data_dir("nbllm")`) unless a path
variable (`NBLLM_HISTORY`, `NBLLM_CACHE`, `NBLLM_JOBS`, read by `config`) names another; all are
opened in WAL mode so a writer thread and readers never block each other. `BatchedWriter` is the
one writer thread the call log and the jobs share the shape of.
"""

from __future__ import annotations

import atexit
import logging
import queue
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["data_file", "connect", "cast_usage", "shortened", "read_file", "MAX_STORED_PROMPT", "BatchedWriter"]

log = logging.getLogger("nbllm")

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


class BatchedWriter:
    """One daemon thread that batches queued rows into the SQLite file of each row's path.

    Why: a caller hands its row to a queue and returns at once (no disk latency on a call); the thread
    waits ~20 ms so rows gather, then writes each file's rows in one transaction. While rows keep coming
    (a `map`), the wait doubles up to 0.25 s: a transaction costs ~25 µs a row for one row and ~5 µs a row
    for hundreds. `flush` cuts the wait short. A batch that fails
    because of one row (a value SQLite cannot bind, a constraint) is written again one row at a time,
    so only that row is lost; a file that cannot be used loses the batch. Either way `lost[path]` counts
    the rows and `warn` says it once per process (`warned = False` warns again).

    `open_file(path)` opens the file (schema and migrations included); `write_rows(conn, rows)` runs the
    statements for some rows inside a transaction the writer opens; `warn(path, exc, one_row)` returns the
    warning's text (`one_row`: a single row was skipped, the file is fine), or None when the caller reports
    losses itself (from `lost`)."""

    def __init__(self, thread_name: str, open_file: Callable[[Path], sqlite3.Connection],
                 write_rows: Callable[[sqlite3.Connection, list[Any]], None],
                 warn: Callable[[Path, Exception, bool], str | None], max_batch: int = 1000) -> None:
        self._name = thread_name
        self._open_file = open_file
        self._write_rows = write_rows
        self._warning = warn
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Path, Any] | threading.Event] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._conn: tuple[Path, sqlite3.Connection] | None = None
        self._hurry = threading.Event()
        """Set by `flush`: the writer stops waiting for more rows."""
        self.warned = False
        self.lost: Counter[Path] = Counter()
        """Path → how many rows this process could not write there."""
        atexit.register(self.flush, 2.0)

    def put(self, path: Path, row: Any) -> None:
        """Queue one row for `path` (returns at once)."""
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                    self._thread.start()
        self._queue.put((path, row))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every row queued so far is written (or given up)."""
        if self._thread is None or not self._thread.is_alive():
            return
        done = threading.Event()
        self._queue.put(done)
        self._hurry.set()
        done.wait(timeout)

    def warn_once(self, problem: str) -> None:
        """`problem` as one warning, unless this writer warned already."""
        if not self.warned:
            self.warned = True
            log.warning("nbllm: %s", problem)

    def _warn(self, text: str | None) -> None:
        if text:
            self.warn_once(text)

    def _serve(self) -> None:
        wait = _GATHER
        while True:
            batch = [self._queue.get()]
            if not isinstance(batch[0], threading.Event):
                # let rows gather: one wake-up and one transaction per batch, not per row
                self._hurry.wait(wait)
            self._hurry.clear()
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows: dict[Path, list[Any]] = {}
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
            written = len(batch) - len(waiters)
            if len(batch) >= self._max_batch:  # more are queued already: no wait
                wait = 0.0
            else:
                wait = min(max(wait, _GATHER) * 2, _GATHER_MOST) if written >= _BUSY and not waiters else _GATHER

    def _write(self, path: Path, rows: list[Any]) -> None:
        try:
            self._transaction(path, rows)
            return
        except Exception as exc:  # e.g. a value SQLite cannot bind: find the row, keep the others
            problem = exc
        self._rollback()
        if _unusable(problem):
            self._give_up(path, problem, len(rows))
            return
        self._write_one_by_one(path, rows)

    def _write_one_by_one(self, path: Path, rows: list[Any]) -> None:
        """A batch failed because of one row: write the others, skip that one and say so."""
        for number, row in enumerate(rows):
            try:
                self._transaction(path, [row])
            except Exception as exc:  # this row only; its neighbours are written
                self._rollback()
                if _unusable(exc):
                    self._give_up(path, exc, len(rows) - number)
                    return
                self.lost[path] += 1
                self._warn(self._warning(path, exc, True))

    def _give_up(self, path: Path, problem: Exception, count: int) -> None:
        """The file itself cannot be used: these rows are lost, the connection is opened afresh next time."""
        self._close()
        self.lost[path] += count
        self._warn(self._warning(path, problem, False))

    def _transaction(self, path: Path, rows: list[Any]) -> None:
        conn = self._connect(path)
        conn.execute("BEGIN")
        self._write_rows(conn, rows)
        conn.execute("COMMIT")

    def _connect(self, path: Path) -> sqlite3.Connection:
        if self._conn is None or self._conn[0] != path:
            self._close()
            self._conn = (path, self._open_file(path))
        return self._conn[1]

    def _rollback(self) -> None:
        if self._conn is not None:
            try:
                self._conn[1].execute("ROLLBACK")
            except Exception:  # no transaction was open
                pass

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn[1].close()
            except Exception:
                pass
            self._conn = None


_GATHER, _GATHER_MOST, _BUSY = 0.02, 0.25, 8
"""The writer's wait for rows to gather (seconds), the longest it grows to while rows keep coming, and the
batch size that counts as "rows keep coming"."""


def _unusable(problem: Exception) -> bool:
    """Whether a failed write says the file cannot be used (not that one row was wrong)."""
    row_level = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.DataError)
    return isinstance(problem, (OSError, sqlite3.DatabaseError)) and not isinstance(problem, row_level)


def read_file(path: Path, open_file: Callable[[Path], sqlite3.Connection], use: Callable[[sqlite3.Connection], Any],
              what: str, variable: str) -> Any:
    """`use(connection)` on a store's file; a file SQLite cannot use is one ConfigurationError naming the
    store (`what`) and the variable that moves it."""
    try:
        conn = open_file(path)
        try:
            return use(conn)
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        from .errors import ConfigurationError

        raise ConfigurationError(f"The {what} {path} cannot be read ({exc}): point {variable} at another "
                                 "file.") from None
