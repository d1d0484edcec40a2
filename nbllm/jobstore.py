"""Durable jobs: `nbllm.map(..., job="reviews-v1")` keeps every result in SQLite as it arrives.

Why: a kernel that dies at row 7,000 of 10,000 must not take 7,000 paid answers with it.
Running the same cell again sends only the inputs that have no result yet and returns the
whole result in input order, as a fresh run would (text Series or typed DataFrame, tokens
and cost in `attrs` included).

- A job is keyed by its name. Its fingerprint is what decides the answers: the template
  text, the provider and model as asked (the kernel default when none was named; a named
  provider's configured model), the output type's schema, the system prompt, temperature
  and max_tokens (the values the call uses). A job run again with another fingerprint is
  refused in one line naming what changed; `restart=True` starts it over, a new name keeps both.
- Inputs are keyed by a hash of their rendered prompt (the k-th repeat of the same prompt is
  its own input), so rows may be appended, removed or reordered: only prompts without a
  result are sent, a changed row is a new input, a removed one is not returned (its result
  stays stored and is used again if it comes back).
- Done: an answer ("ok"), or a failure the provider gave ("error", "invalid"): a re-run does
  not send a failed row again unless `retry_failed=True` (one warning says how many were kept).
  Interrupted and budget-stopped rows are never done: they are "left".
- Writes: one daemon thread batches results into the file (one transaction per ~20 ms batch,
  WAL mode): a `kill -9` loses at most the answers of the last batch, never the file. `map`
  waits for its rows to be written before it returns.
- Keys never reach the file: texts are scrubbed of every key the process knows (`errors.scrub`);
  prompts are stored only as hashes.

`nbllm.jobs()` lists the jobs (rows, done, failed, left, cost, age); `nbllm.jobs.drop(name)`
removes one. The file is `platformdirs.user_data_dir("nbllm")/jobs.sqlite`; `NBLLM_JOBS` moves it.

Schema (`PRAGMA user_version = 1`)::

    jobs(name TEXT PRIMARY KEY, created TEXT, updated TEXT (ISO 8601, UTC), provider TEXT, model TEXT,
         fingerprint TEXT (JSON: field → hash), asked TEXT (JSON: field → the value, scrubbed, shortened))
    results(job TEXT, key TEXT (hash of the prompt[#k]), position INTEGER (in the job's last run; NULL: not in
         it), status TEXT ('left' | 'ok' | 'error' | 'invalid'), text TEXT, error TEXT, reason TEXT,
         attempts INTEGER, provider TEXT, model TEXT, input_tokens INTEGER, output_tokens INTEGER,
         cost_usd REAL, cost_source TEXT, latency_ms REAL, time TEXT; PRIMARY KEY (job, key))
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .store import connect, data_file

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["jobs", "Jobs", "Job", "start", "jobs_path", "fingerprint"]

log = logging.getLogger("nbllm")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    provider TEXT,
    model TEXT,
    fingerprint TEXT NOT NULL,
    asked TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    job TEXT NOT NULL,
    key TEXT NOT NULL,
    position INTEGER,
    status TEXT NOT NULL,
    text TEXT,
    error TEXT,
    reason TEXT,
    attempts INTEGER,
    provider TEXT,
    model TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost_usd REAL,
    cost_source TEXT,
    latency_ms REAL,
    time TEXT,
    PRIMARY KEY (job, key)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""

DONE = ("ok", "error", "invalid")
"""The statuses a re-run does not send again (failures only without `retry_failed=True`)."""

_FIELDS = {"template": "template", "provider": "provider", "model": "model", "output": "output type",
           "system": "system prompt", "temperature": "temperature", "max_tokens": "max_tokens"}
"""The fingerprint's fields, as a refusal names them."""

_RESULT_COLUMNS = ("job", "key", "position", "status", "text", "error", "reason", "attempts", "provider", "model",
                   "input_tokens", "output_tokens", "cost_usd", "cost_source", "latency_ms", "time")
_UPSERT = (f"INSERT INTO results ({', '.join(_RESULT_COLUMNS)}) VALUES ({', '.join('?' for _ in _RESULT_COLUMNS)}) "
           "ON CONFLICT(job, key) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in _RESULT_COLUMNS[3:]))
_FIX = "point NBLLM_JOBS at a writable file, or run without job="


def jobs_path() -> Path:
    """Where jobs live (`NBLLM_JOBS` overrides the user data directory)."""
    from .registry import get_registry

    return data_file(get_registry().global_settings.jobs, "jobs.sqlite")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def input_keys(prompts: list[str | None]) -> list[str | None]:
    """One key per input: its prompt's hash, `#k` added for the k-th repeat of the same prompt (None: missing)."""
    seen: dict[str, int] = {}
    keys: list[str | None] = []
    for prompt in prompts:
        if prompt is None:
            keys.append(None)
            continue
        digest = _digest(prompt)
        count = seen.get(digest, 0)
        seen[digest] = count + 1
        keys.append(f"{digest}#{count}" if count else digest)
    return keys


def _shown(value: Any, limit: int = 60) -> str:
    """A fingerprint value as a refusal shows it: scrubbed, on one line, at most `limit` characters."""
    from .calllog import clean

    text = repr(clean(value) if isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fingerprint(call: Any, template: Any, output_type: Any) -> dict[str, Any]:
    """What decides a job's answers (see the module docstring): field → value, as asked."""
    request = call.request
    model, temperature, max_tokens = call.model, request.temperature, request.max_tokens
    settings = call.settings()
    if settings is not None:  # a named provider: the values the call uses (like the replay cache's key)
        model = model or settings.model
        used = request.numbers(settings)
        temperature, max_tokens = used["temperature"], used["max_tokens"]
    output = None
    if output_type is not None:
        from .typed import schema_key

        output = schema_key(output_type)
    return {"template": template if isinstance(template, str) else repr(template), "provider": call.provider,
            "model": model, "output": output, "system": request.system or None, "temperature": temperature,
            "max_tokens": max_tokens}


def _hashes(values: dict[str, Any]) -> dict[str, str]:
    return {name: _digest(json.dumps(value, sort_keys=True, default=str)) for name, value in values.items()}


def _refusal(name: str, stored: dict[str, str], shown: dict[str, str], values: dict[str, Any],
             count: int) -> str | None:
    """The one line that refuses a changed job, or None when nothing that decides the answers changed."""
    hashes = _hashes(values)
    changed = [f for f in _FIELDS if stored.get(f) != hashes[f]]
    if not changed:
        return None
    details = "; ".join(_change(f, shown.get(f, "?"), values[f], len(changed) > 1) for f in changed)
    return (f"Job {name!r} was made with another {' and '.join(_FIELDS[f] for f in changed)} ({details}): "
            f"pass restart=True to start it over ({count:,} stored results are dropped), or give the job a new name.")


def _change(name: str, was: str, now: Any, named: bool) -> str:
    """One changed field: `'A {value}' → 'B {value}'`, after its name when several changed (an output type
    by kind: its schema is long)."""
    if name == "output":
        before, after = ("text" if was == "None" else "typed"), ("text" if now is None else "typed")
        change = f"{before} → {after}" if before != after else "another schema"
    else:
        change = f"{was} → {_shown(now)}"
    return f"{_FIELDS[name]} {change}" if named else change


def _checked_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ConfigurationError(f"job={name!r}: give the job a name (text of 1 to 200 characters), "
                                 "e.g. job='reviews-v1'.")
    return name.strip()


# ---- one run of a job --------------------------------------------------------------------------


@dataclass
class Job:
    """A job as one run of `map` uses it: the stored result of each input, and where new ones go."""

    name: str
    path: Path
    keys: list[str | None]
    stored: dict[int, Any] = field(default_factory=dict)
    """Position → the stored `Answer` or `Failed` this run returns without sending."""
    kept_failures: int = 0

    def record(self, position: int, result: Any) -> None:
        """Queue a finished input's result for the file (returns at once; interrupted/budget/missing: nothing)."""
        kind = getattr(result, "kind", None)
        if kind is None or kind in ("error", "invalid"):
            _writer.put(self.path, (self.name, self.keys[position], position, result))

    def finish(self, timeout: float = 5.0) -> None:
        """Wait until this run's results are in the file."""
        _writer.flush(timeout)


def start(name: Any, call: Any, template: Any, output_type: Any, prompts: list[str | None], restart: bool = False,
          retry_failed: bool = False) -> Job:
    """Open (or create) job `name` for these inputs: refuse a changed fingerprint, load what is done.

    Everything here happens before a request is sent; an unusable file is one ConfigurationError.
    """
    name = _checked_name(name)
    path = jobs_path()
    values = fingerprint(call, template, output_type)
    keys = input_keys(prompts)
    _writer.flush()  # rows of an earlier run (e.g. just interrupted) land before this one reads
    try:
        conn = connect(path, _SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigurationError(f"The jobs store {path} cannot be used ({exc}): {_FIX}.") from None
    problem: str | None = None
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = _prepare(conn, name, values, keys, restart)
            if isinstance(rows, str):
                problem = rows
                conn.execute("ROLLBACK")
            else:
                conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise ConfigurationError(f"The jobs store {path} cannot be used ({exc}): {_FIX}.") from None
    finally:
        conn.close()
    if problem is not None:
        raise ConfigurationError(problem)
    job = Job(name, path, keys)
    _revive_into(job, rows, output_type, retry_failed)
    if job.kept_failures:
        log.warning("nbllm: job %r: %d input(s) failed in an earlier run and were not sent again "
                    "(retry_failed=True sends them again).", name, job.kept_failures)
    return job


def _prepare(conn: sqlite3.Connection, name: str, values: dict[str, Any], keys: list[str | None],
             restart: bool) -> dict[str, tuple[Any, ...]] | str:
    """In one transaction: the job's row (checked, or created), this run's positions, and the stored results
    by key — or the refusal's text."""
    row = conn.execute("SELECT fingerprint, asked FROM jobs WHERE name = ?", (name,)).fetchone()
    now = _now()
    if row is not None and restart:
        conn.execute("DELETE FROM results WHERE job = ?", (name,))
        conn.execute("DELETE FROM jobs WHERE name = ?", (name,))
        row = None
    if row is not None:
        count = conn.execute("SELECT COUNT(*) FROM results WHERE job = ? AND status != 'left'", (name,)).fetchone()[0]
        refusal = _refusal(name, json.loads(row[0]), json.loads(row[1]), values, count)
        if refusal is not None:
            return refusal
        conn.execute("UPDATE jobs SET updated = ? WHERE name = ?", (now, name))
    else:
        asked = {f: _shown(v) for f, v in values.items()}
        conn.execute("INSERT INTO jobs (name, created, updated, provider, model, fingerprint, asked) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (name, now, now, values["provider"], values["model"], json.dumps(_hashes(values)),
                      json.dumps(asked, ensure_ascii=False)))
    conn.execute("UPDATE results SET position = NULL WHERE job = ? AND position IS NOT NULL", (name,))
    conn.executemany("INSERT INTO results (job, key, position, status) VALUES (?, ?, ?, 'left') "
                     "ON CONFLICT(job, key) DO UPDATE SET position = excluded.position",
                     [(name, key, position) for position, key in enumerate(keys) if key is not None])
    stored = conn.execute(f"SELECT key, {', '.join(_RESULT_COLUMNS[3:15])} FROM results "
                          "WHERE job = ? AND position IS NOT NULL AND status != 'left'", (name,)).fetchall()
    return {r[0]: r[1:] for r in stored}


def _revive_into(job: Job, rows: dict[str, tuple[Any, ...]], output_type: Any, retry_failed: bool) -> None:
    """The stored rows of this run's inputs as the values a fresh run returns (`Answer`, `Failed`)."""
    from .batch import Failed
    from .errors import NotValid
    from .request import Answer

    plan = None
    if output_type is not None:
        from .typed import plan_for

        plan = plan_for(output_type)
    for position, key in enumerate(job.keys):
        row = rows.get(key) if key is not None else None
        if row is None:
            continue
        (status, text, error, reason, attempts, provider, model, input_tokens, output_tokens, cost, source,
         latency) = row
        if status != "ok":
            if retry_failed:
                continue
            job.stored[position] = Failed(error or "", attempts or 0, status, reason or "", text, input_tokens or 0,
                                          output_tokens or 0, cost or 0.0)
            job.kept_failures += 1
            continue
        output = None
        if plan is not None:
            try:
                output = plan.parse_text(text or "")
            except NotValid:  # cannot be read back as the type: sent again
                continue
        answer = Answer(text or "", provider or "", model or "", latency or 0.0, input_tokens, output_tokens,
                        cost_usd=cost, output=output, attempts=attempts or 1)
        if source is not None and hasattr(answer, "cost_source"):
            answer.cost_source = source
        job.stored[position] = answer


# ---- the writer ------------------------------------------------------------------------------


class _Writer:
    """One daemon thread that batches results into the jobs file (one transaction per batch)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Path, tuple[Any, ...]] | threading.Event] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._conn: tuple[Path, sqlite3.Connection] | None = None
        self._warned = False

    def put(self, path: Path, item: tuple[Any, ...]) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._start()
        self._queue.put((path, item))

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every result queued so far is in the file."""
        if self._thread is None or not self._thread.is_alive():
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="nbllm-jobs", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            if not isinstance(batch[0], threading.Event):
                time.sleep(0.02)  # let results gather: one transaction per batch, not per answer
            while len(batch) < 5000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items: dict[Path, list[tuple[Any, ...]]] = {}
            waiters = []
            for entry in batch:
                if isinstance(entry, threading.Event):
                    waiters.append(entry)
                else:
                    items.setdefault(entry[0], []).append(entry[1])
            for path, results in items.items():
                self._write(path, results)
            for event in waiters:
                event.set()

    def _write(self, path: Path, items: list[tuple[Any, ...]]) -> None:
        try:
            now = _now()
            rows = [_row(item, now) for item in items]
            conn = self._connect(path)
            conn.execute("BEGIN")
            try:
                conn.executemany(_UPSERT, rows)
                conn.executemany("UPDATE jobs SET updated = ? WHERE name = ?", [(now, n) for n in {r[0] for r in rows}])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # the answers are still returned; only a re-run would send them again
            self._close()
            self.warn_once(f"could not write {len(items)} job result(s) to {path} ({type(exc).__name__}: {exc}); "
                           f"the answers are returned, but a re-run sends those inputs again; {_FIX}")

    def _connect(self, path: Path) -> sqlite3.Connection:
        if self._conn is None or self._conn[0] != path:
            self._close()
            self._conn = (path, connect(path, _SCHEMA))
        return self._conn[1]

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn[1].close()
            except Exception:
                pass
            self._conn = None

    def warn_once(self, problem: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("nbllm: %s", problem)


def _row(item: tuple[Any, ...], now: str) -> tuple[Any, ...]:
    """A result as its row: texts scrubbed of every key the process knows (done here, off the loop)."""
    from .calllog import clean

    name, key, position, result = item
    kind = getattr(result, "kind", None)
    if kind is None:  # an Answer
        return (name, key, position, "ok", clean(result.text), None, None, result.attempts, result.provider,
                result.model, result.input_tokens, result.output_tokens, result.cost_usd,
                getattr(result, "cost_source", None), round(result.latency_ms or 0.0, 2), now)
    return (name, key, position, kind, clean(result.text), clean(result.error), clean(result.reason), result.attempts,
            None, None, result.input_tokens, result.output_tokens, result.cost_usd, None, None, now)


_writer = _Writer()
atexit.register(_writer.flush, 2.0)


# ---- nbllm.jobs ---------------------------------------------------------------------------------

_LIST_COLUMNS = ["name", "provider", "model", "rows", "done", "failed", "left", "cost_usd", "created", "updated", "age"]


class Jobs:
    """`nbllm.jobs()` → a DataFrame of the jobs, oldest first; `nbllm.jobs.drop(name)` removes one.

    rows: the inputs of the job's last run (missing ones not counted); done: answered;
    failed: failed or invalid (not sent again without `retry_failed=True`); left: not
    answered yet (never sent, interrupted or stopped by a budget); cost_usd: what all its
    stored results cost (NaN when unknown); age: the time since the job last ran or wrote.
    """

    def __call__(self) -> "pd.DataFrame":
        import pandas as pd

        rows = self._use(lambda conn: conn.execute(
            "SELECT j.name, j.provider, j.model, "
            "COALESCE(SUM(r.position IS NOT NULL), 0), "
            "COALESCE(SUM(r.position IS NOT NULL AND r.status = 'ok'), 0), "
            "COALESCE(SUM(r.position IS NOT NULL AND r.status IN ('error', 'invalid')), 0), "
            "SUM(r.cost_usd), j.created, j.updated "
            "FROM jobs j LEFT JOIN results r ON r.job = j.name GROUP BY j.name ORDER BY j.created").fetchall(),
            [])
        frame = pd.DataFrame([(*r[:6], r[3] - r[4] - r[5], *r[6:]) for r in rows],
                             columns=_LIST_COLUMNS[:-1])
        for column in ("rows", "done", "failed", "left"):
            frame[column] = frame[column].astype("int64")
        frame["cost_usd"] = frame["cost_usd"].astype("float64")
        for column in ("created", "updated"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        frame["age"] = (pd.Timestamp.now(tz="UTC") - frame["updated"]).dt.round("s")
        return frame.set_index("name")

    def drop(self, name: str) -> int:
        """Remove job `name` and its results; returns how many results were removed."""
        names = self._use(lambda conn: [r[0] for r in conn.execute("SELECT name FROM jobs ORDER BY created")], [])
        if name not in names:
            known = ", ".join(repr(n) for n in names) if names else "none yet"
            raise ConfigurationError(f"There is no job named {name!r}; jobs: {known}.")

        def remove(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            removed = conn.execute("DELETE FROM results WHERE job = ? AND status != 'left'", (name,)).rowcount
            conn.execute("DELETE FROM results WHERE job = ?", (name,))
            conn.execute("DELETE FROM jobs WHERE name = ?", (name,))
            conn.execute("COMMIT")
            return removed

        return self._use(remove, 0)

    @property
    def path(self) -> Path:
        return jobs_path()

    def _use(self, action: Any, empty: Any) -> Any:
        """`action(connection)` on the jobs file after pending writes (`empty` when there is no file yet)."""
        path = self.path
        _writer.flush()
        if not path.exists():
            return empty
        try:
            conn = connect(path, _SCHEMA)
            try:
                return action(conn)
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"The jobs store {path} cannot be read ({exc}): point NBLLM_JOBS at "
                                     "another file.") from None

    def __repr__(self) -> str:
        return f"<nbllm jobs at {self.path}; call jobs() for a DataFrame, jobs.drop(name) to remove one>"


jobs = Jobs()
