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
- Done: an answer ("ok"), or a failure tied to the input ("error": a 400/413/422 about this
  prompt; "invalid": a typed answer that did not validate): a re-run does not send such a row
  again unless `retry_failed=True` (one warning says how many were kept). A failure another try
  may not share — retryable (429, 5xx, a timeout), nothing answered (refused, unreachable),
  401/403/404 (the key or the model: configuration), `Unsuitable` — is stored "left" with its
  error, as interrupted and budget-stopped rows are: fix the server or the key and run it again.
- Writes: one daemon thread (`store.BatchedWriter`) batches results into the file (one transaction
  per ~20 ms batch, WAL mode): a `kill -9` loses at most the answers of the last batch, never the
  file. A row SQLite refuses is skipped alone (the batch is written row by row). `map` waits for its
  rows to be written before it returns, and one warning per run says how many could not be.
- Keys never reach the file: texts are scrubbed of every key the process knows (`errors.scrub`);
  prompts are stored only as hashes.

`nbllm.jobs()` lists the jobs (rows, done, failed, left, cost, age, and a `batch=True` job's provider
batch with its state); `nbllm.jobs.drop(name)` removes one (cancelling an open batch first). The file is `platformdirs.user_data_dir("nbllm")/jobs.sqlite`; `NBLLM_JOBS` moves it.

Schema (`PRAGMA user_version = 2`; a version-1 file is migrated in place, its rows kept)::

    jobs(name TEXT PRIMARY KEY, created TEXT, updated TEXT (ISO 8601, UTC), provider TEXT, model TEXT,
         fingerprint TEXT (JSON: field → hash), asked TEXT (JSON: field → the value, scrubbed, shortened),
         batch TEXT (2: JSON list of the job's provider batches, batch_jobs.py; NULL: none))
    results(job TEXT, key TEXT (hash of the prompt[#k]), position INTEGER (in the job's last run; NULL: not in
         it), status TEXT ('left' | 'ok' | 'error' | 'invalid'), text TEXT, error TEXT, reason TEXT,
         attempts INTEGER, provider TEXT, model TEXT, input_tokens INTEGER, output_tokens INTEGER,
         cost_usd REAL, cost_source TEXT, latency_ms REAL, time TEXT; PRIMARY KEY (job, key))
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .store import BatchedWriter, connect, data_file, read_file

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
    asked TEXT NOT NULL,
    batch TEXT
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
"""

SCHEMA_VERSION = 2
_MIGRATIONS = {
    # 2: the job's provider batches (`map(..., batch=True)`): tickets, submitted keys, last known state.
    2: ("jobs", "batch", "ALTER TABLE jobs ADD COLUMN batch TEXT"),
}
"""Schema changes applied in order to an older file: version → (table, the column it adds, its SQL)."""

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


def _open(path: Path) -> sqlite3.Connection:
    """The jobs file with the current schema (a version-1 file is migrated in place, in one transaction, so
    two kernels opening it at once agree); a file of a newer nbllm is one ConfigurationError."""
    conn = connect(path, _SCHEMA)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return conn
        if version > SCHEMA_VERSION:
            raise ConfigurationError(f"The jobs store {path} was written by a newer nbllm (schema {version}, this "
                                     f"one reads {SCHEMA_VERSION}): upgrade nbllm, or point NBLLM_JOBS at another "
                                     "file.")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for number in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                table, column, sql = _MIGRATIONS[number]
                if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                    conn.execute(sql)  # a new file has it already; a racing kernel may have just added it
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except BaseException:
        conn.close()
        raise
    return conn


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
    batches: list[dict[str, Any]] = field(default_factory=list)
    """The job's provider batches (`batch=True`; batch_jobs.py reads and writes them)."""
    dropped_batches: list[dict[str, Any]] = field(default_factory=list)
    """Batches not collected yet that `restart=True` just dropped (the caller cancels them)."""

    def record(self, position: int, result: Any) -> None:
        """Queue a finished input's result for the file (returns at once; interrupted/budget/missing: nothing;
        a failure not tied to the input is stored as "left", so a re-run sends it again)."""
        kind = getattr(result, "kind", None)
        if kind is None or kind in ("error", "invalid"):
            _writer.put(self.path, (self.name, self.keys[position], position, result))

    lost: int = 0
    """How many results the writer had failed to put in this job's file when this run started."""

    def finish(self, timeout: float = 5.0) -> None:
        """Wait until this run's results are in the file; one warning per run says how many could not be."""
        _writer.flush(timeout)
        lost, self.lost = _writer.lost[self.path] - self.lost, _writer.lost[self.path]
        if lost:
            log.warning("nbllm: job %r: %d result(s) could not be written to %s (%s); they are returned, but a "
                        "re-run sends those inputs again; %s.", self.name, lost, self.path,
                        _problems.get(self.path, "?"), _FIX)


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
        conn = _open(path)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigurationError(f"The jobs store {path} cannot be used ({exc}): {_FIX}.") from None
    problem: str | None = None
    batches: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = _prepare(conn, name, values, keys, restart)
            if isinstance(rows, str):
                problem = rows
                conn.execute("ROLLBACK")
            else:
                rows, batches = rows
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
    job = Job(name, path, keys, batches=batches[0], dropped_batches=batches[1], lost=_writer.lost[path])
    _revive_into(job, rows, output_type, retry_failed)
    if job.kept_failures:
        log.warning("nbllm: job %r: %d input(s) failed in an earlier run and were not sent again "
                    "(retry_failed=True sends them again).", name, job.kept_failures)
    return job


def _prepare(conn: sqlite3.Connection, name: str, values: dict[str, Any], keys: list[str | None],
             restart: bool) -> "tuple[dict[str, tuple[Any, ...]], tuple[list[Any], list[Any]]] | str":
    """In one transaction: the job's row (checked, or created), this run's positions, the stored results
    by key and the job's batches (kept, dropped by a restart) — or the refusal's text."""
    row = conn.execute("SELECT fingerprint, asked, batch FROM jobs WHERE name = ?", (name,)).fetchone()
    now = _now()
    batches: list[dict[str, Any]] = json.loads(row[2]) if row is not None and row[2] else []
    dropped: list[dict[str, Any]] = []
    if row is not None and restart:
        dropped, batches = [b for b in batches if not b.get("collected")], []
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
    return {r[0]: r[1:] for r in stored}, (batches, dropped)


def _revive_into(job: Job, rows: dict[str, tuple[Any, ...]], output_type: Any, retry_failed: bool) -> None:
    """The stored rows of this run's inputs as the values a fresh run returns (`Answer`, `Failed`)."""
    from .outcomes import Failed
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
                                          output_tokens or 0, cost if status == "invalid" else cost or 0.0,
                                          lasting=True)
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
        if source is not None:
            answer.cost_source = source
        job.stored[position] = answer


# ---- the writer ------------------------------------------------------------------------------


def _write_results(conn: sqlite3.Connection, items: list[tuple[Any, ...]]) -> None:
    """Some results as rows (the writer thread's transaction is open): texts scrubbed off the loop."""
    now = _now()
    rows = [_row(item, now) for item in items]
    conn.executemany(_UPSERT, rows)
    conn.executemany("UPDATE jobs SET updated = ? WHERE name = ?", [(now, n) for n in {r[0] for r in rows}])


_problems: dict[Path, str] = {}
"""Path → the last reason a result could not be written there (`Job.finish` reports the losses of its run)."""


def _warning(path: Path, problem: Exception, one_row: bool) -> None:
    _problems[path] = f"{type(problem).__name__}: {problem}"
    return None


def _row(item: tuple[Any, ...], now: str) -> tuple[Any, ...]:
    """A result as its row: texts scrubbed of every key the process knows (done here, off the loop)."""
    from .calllog import clean

    name, key, position, result = item
    kind = getattr(result, "kind", None)
    if kind is None:  # an Answer
        return (name, key, position, "ok", clean(result.text), None, None, result.attempts, result.provider,
                result.model, result.input_tokens, result.output_tokens, result.cost_usd,
                getattr(result, "cost_source", None), round(result.latency_ms or 0.0, 2), now)
    status = kind if getattr(result, "lasting", False) else "left"  # another try may succeed: sent again
    return (name, key, position, status, clean(result.text), clean(result.error), clean(result.reason),
            result.attempts, None, None, result.input_tokens, result.output_tokens, result.cost_usd, None, None, now)


_writer = BatchedWriter("nbllm-jobs", _open, _write_results, _warning, max_batch=5000)


def save_batches(job: Job, batches: list[dict[str, Any]],
                 results: "list[tuple[str, int | None, Any]] | tuple[()]" = ()) -> None:
    """Write the job's batches and the results collected from them (key, position, Answer | Failed) in ONE
    transaction: after a crash a re-run has both, or neither and collects again (never half)."""
    _writer.flush()  # this run's earlier rows first
    now = _now()
    rows = [_row((job.name, key, position, result), now) for key, position, result in results]
    try:
        conn = _open(job.path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_UPSERT, rows)
                conn.execute("UPDATE jobs SET batch = ?, updated = ? WHERE name = ?",
                             (json.dumps(batches, sort_keys=True) if batches else None, now, job.name))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        raise ConfigurationError(f"The jobs store {job.path} cannot be used ({exc}): {_FIX}.") from None


def batch_summary(batches: list[dict[str, Any]]) -> str:
    """`nbllm.jobs()`'s batch column: each batch not collected yet as "id state", else the last one's
    ("id done, collected"); "" for a job without batches."""
    if not batches:
        return ""
    open_ = [b for b in batches if not b.get("collected")]
    shown = open_ or batches[-1:]
    return "; ".join(f"{b['ticket']['batch_id']} {b.get('state', '?')}" + (", collected" if b.get("collected") else "")
                     for b in shown)


# ---- nbllm.jobs ---------------------------------------------------------------------------------

_LIST_COLUMNS = ["name", "provider", "model", "rows", "done", "failed", "left", "cost_usd", "created", "updated", "age",
                 "batch"]


def _answering_models(conn: sqlite3.Connection) -> dict[str, str]:
    """Job → the model most of its answers came from (ties: the first by name)."""
    chosen: dict[str, str] = {}
    for job, model, _ in conn.execute(
            "SELECT job, model, COUNT(*) AS n FROM results WHERE status = 'ok' AND model IS NOT NULL AND model != '' "
            "GROUP BY job, model ORDER BY job, n DESC, model"):
        chosen.setdefault(job, model)
    return chosen


class Jobs:
    """`nbllm.jobs()` → a DataFrame of the jobs, oldest first; `nbllm.jobs.drop(name)` removes one.

    model: the model that answered (the most common among the job's answers; the model asked for
    until one answered — a server may answer with another model than configured);
    rows: the inputs of the job's last run (missing ones not counted); done: answered;
    failed: failed or invalid (not sent again without `retry_failed=True`); left: not
    answered yet (never sent, interrupted, stopped by a budget, or a failure another try may not
    share: 5xx, 429, unreachable, 401/403/404); cost_usd: what all its
    stored results cost (NaN when unknown); age: the time since the job last ran or wrote;
    batch: a `batch=True` job's provider batch and its state ("batch_abc running"; "" for none).
    """

    def __call__(self) -> "pd.DataFrame":
        import pandas as pd

        rows = self._use(lambda conn: conn.execute(
            "SELECT j.name, j.provider, j.model, "
            "COALESCE(SUM(r.position IS NOT NULL), 0), "
            "COALESCE(SUM(r.position IS NOT NULL AND r.status = 'ok'), 0), "
            "COALESCE(SUM(r.position IS NOT NULL AND r.status IN ('error', 'invalid')), 0), "
            "SUM(r.cost_usd), j.created, j.updated, j.batch "
            "FROM jobs j LEFT JOIN results r ON r.job = j.name GROUP BY j.name ORDER BY j.created").fetchall(),
            [])
        answered = self._use(_answering_models, {})
        frame = pd.DataFrame([(r[0], r[1], answered.get(r[0], r[2]), *r[3:6], r[3] - r[4] - r[5], *r[6:9])
                              for r in rows], columns=[c for c in _LIST_COLUMNS if c not in ("age", "batch")])
        for column in ("rows", "done", "failed", "left"):
            frame[column] = frame[column].astype("int64")
        frame["cost_usd"] = frame["cost_usd"].astype("float64")
        for column in ("created", "updated"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        frame["age"] = (pd.Timestamp.now(tz="UTC") - frame["updated"]).dt.round("s")
        frame["batch"] = pd.Series([batch_summary(json.loads(r[9]) if r[9] else []) for r in rows], dtype=object)
        return frame.set_index("name")

    def drop(self, name: str) -> int:
        """Remove job `name` and its results; returns how many results were removed. A provider batch of the
        job that has not ended is cancelled first (best effort; one line says how it went)."""
        listed = self._use(lambda conn: conn.execute("SELECT name, batch FROM jobs ORDER BY created").fetchall(), [])
        names = [r[0] for r in listed]
        if name not in names:
            known = ", ".join(repr(n) for n in names) if names else "none yet"
            raise ConfigurationError(f"There is no job named {name!r}; jobs: {known}.")
        batches = next((json.loads(r[1]) for r in listed if r[0] == name and r[1]), [])
        if any(not b.get("collected") for b in batches):
            from .provider_batches import cancel_open, notice

            for line in cancel_open(batches):
                notice(f"job {name!r}: {line}")

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
        return read_file(path, _open, action, "jobs store", "NBLLM_JOBS")

    def __repr__(self) -> str:
        return f"<nbllm jobs at {self.path}; call jobs() for a DataFrame, jobs.drop(name) to remove one>"


jobs = Jobs()
