"""The replay cache: answer a repeated call from SQLite, so a notebook re-runs free.

Modes (global with `nbllm.cache(mode)`, per call with `cache=` / `%%llm --cache`):

- ``"off"``: every call goes to the provider (the default; `NBLLM_CACHE_MODE` sets
  another initial mode).
- ``"record"``: a call seen before is answered from the store; a new one goes to
  the provider and its successful answer is stored.
- ``"replay"``: strict — answers come only from the store; a call that was never
  recorded raises `ReplayMiss` (a `ModelError`) and nothing is sent.

A call is "the same" when the provider and model *as asked* (a name, or the
kernel default such as ``auto``), the prompt, the system prompt, temperature,
max_tokens and the chat history before it are equal. Keying on what was asked
(not on what `auto` picked or a local server reported) is what lets a replay run
with no provider reachable. Temperature and max_tokens are the values the call
would use (the provider's configured ones unless the call overrides them). A
replayed answer has the recorded text, provider, model, tokens and cost, and
`Answer.cached` is True.

The store is `platformdirs.user_data_dir("nbllm")/cache.sqlite`; `NBLLM_CACHE`
overrides the path. Key-shaped text is masked before it is written. A store that
cannot be read or written costs one warning, never an answer: a lookup that fails
is a miss (strict replay: a `ConfigurationError`), a save that fails is skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .store import connect, data_file, shortened
from .errors import ConfigurationError, ReplayMiss, scrub

__all__ = ["cache", "ReplayCache", "ReplayMiss", "Recording", "Recorder", "recorder", "mode_for", "cache_path", "MODES"]

MODES = ("record", "replay", "off")

log = logging.getLogger("nbllm")

_STORAGE_ERRORS = (OSError, sqlite3.Error)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT,
    asked TEXT,
    prompt TEXT,
    system TEXT,
    text TEXT NOT NULL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost_usd REAL,
    latency_ms REAL
);
PRAGMA user_version = 1;
"""


def cache_path() -> Path:
    """Where recorded answers live (`NBLLM_CACHE` overrides the user data directory)."""
    from .registry import get_registry

    return data_file(get_registry().global_settings.value("NBLLM_CACHE"), "cache.sqlite")


def _check_mode(mode: Any, where: str) -> str:
    if mode is True:
        return "record"
    if mode is False:
        return "off"
    text = str(mode).strip().lower() if mode is not None else ""
    if text not in MODES:
        raise ConfigurationError(f"{where}: {mode!r} is not a cache mode; use 'record', 'replay' or 'off'.")
    return text


# ---- the store ---------------------------------------------------------------------


class _Store:
    """One connection per path, used from worker threads under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: tuple[Path, Any] | None = None

    def _connection(self, path: Path) -> Any:
        if self._conn is None or self._conn[0] != path:
            if self._conn is not None:
                self._conn[1].close()
                self._conn = None  # a failed connect below must not leave the closed one in place
            self._conn = (path, connect(path, _SCHEMA))
        return self._conn[1]

    def get(self, path: Path, key: str) -> tuple[Any, ...] | None:
        if not path.exists():
            return None
        with self._lock:
            return self._connection(path).execute(
                "SELECT provider, model, text, input_tokens, output_tokens, cost_usd, latency_ms "
                "FROM answers WHERE key = ?", (key,)
            ).fetchone()

    def put(self, path: Path, row: tuple[Any, ...]) -> None:
        with self._lock:
            self._connection(path).execute(
                "INSERT OR REPLACE INTO answers (key, created, provider, model, asked, prompt, system, text, "
                "input_tokens, output_tokens, cost_usd, latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row
            )

    def count(self, path: Path) -> int:
        if not path.exists():
            return 0
        with self._lock:
            return self._connection(path).execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def clear(self, path: Path) -> int:
        if not path.exists():
            return 0
        with self._lock:
            return self._connection(path).execute("DELETE FROM answers").rowcount

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn[1].close()
                self._conn = None


_store = _Store()


# ---- per call ------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """A stored answer, as the call layer turns it back into an `Answer`."""

    provider: str
    model: str
    text: str
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    latency_ms: float | None


def _transcript(messages: list[Any]) -> list[list[str]]:
    """Chat history as (kind, part kind, content), without timestamps or ids that change per run."""
    out: list[list[str]] = []
    for message in messages:
        instructions = getattr(message, "instructions", None)
        if instructions:
            out.append([getattr(message, "kind", ""), "instructions", str(instructions)])
        for part in getattr(message, "parts", []):
            content = getattr(part, "content", "")
            out.append([getattr(message, "kind", ""), getattr(part, "part_kind", ""), _content_key(content)])
    return out


def _content_key(content: Any) -> str:
    """A message's content for the key: text as is, an image by its hash (never its bytes)."""
    from .parts import content_text

    return content_text(content, lambda data, kind: f"<{kind} {hashlib.sha256(data).hexdigest()[:16]}>")


class Recorder:
    """The cache's view of one call: its key, and lookup/save on worker threads."""

    def __init__(self, mode: str, asked: dict[str, Any]):
        self.mode = mode
        self.asked = asked
        self.key = hashlib.sha256(json.dumps(asked, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        self.path = cache_path()

    async def lookup(self) -> Recording | None:
        """The recorded answer, or None; in strict replay a miss raises `ReplayMiss`.

        A store that cannot be read is a miss (one warning); in strict replay, where
        a miss would be silent data loss, it is a `ConfigurationError` instead.
        """
        try:
            row = await asyncio.to_thread(_store.get, self.path, self.key)
        except _STORAGE_ERRORS as exc:
            if self.mode == "replay":
                raise ConfigurationError(f"The replay cache {self.path} cannot be read ({exc}): {_FIX}.") from None
            _warn_once(self.path, f"cannot be read ({exc}); asking the provider instead")
            return None
        if row is not None:
            return Recording(*row)
        if self.mode == "replay":
            model = f" ({self.asked['model']})" if self.asked.get("model") else ""
            raise ReplayMiss(
                self.asked["provider"], f"replay miss: no recorded answer for this prompt and settings{model}",
                url=str(self.path), hint="run it once with nbllm.cache('record') (or %%llm --cache), "
                "or switch replay off with nbllm.cache('off')",
            )
        return None

    async def save(self, answer: Any) -> None:
        """Store a successful answer (record mode only); a store that fails is one warning, not an error."""
        if self.mode != "record" or getattr(answer, "error", None):
            return

        def clean(text: str | None) -> str | None:
            return scrub(text) if text else text  # every key this process knows

        asked = {k: v for k, v in self.asked.items() if k not in ("prompt", "system", "history")}
        row = (
            self.key, datetime.now(timezone.utc).isoformat(timespec="seconds"), answer.provider, answer.model,
            json.dumps(asked, sort_keys=True), clean(shortened(self.asked["prompt"])), clean(self.asked["system"]),
            clean(answer.text), answer.input_tokens, answer.output_tokens, answer.cost_usd, answer.latency_ms,
        )
        try:
            await asyncio.to_thread(_store.put, self.path, row)
        except Exception as exc:  # the answer is already paid for: never lose it to the cache
            _warn_once(self.path, f"cannot be written ({exc}); this answer was not cached")


_FIX = "point NBLLM_CACHE at a writable file, or turn the cache off with nbllm.cache('off')"
_warned_paths: set[Path] = set()


def _warn_once(path: Path, problem: str) -> None:
    """One line per unusable store and process, saying what failed and how to fix it."""
    if path not in _warned_paths:
        _warned_paths.add(path)
        log.warning("nbllm: the replay cache %s %s; %s.", path, problem, _FIX)


def mode_for(option: Any) -> str:
    """The cache mode of one call: its own `cache=` option, else the global mode."""
    return cache.mode if option is None else _check_mode(option, "cache option")


def recorder(call: Any) -> Recorder | None:
    """A `Recorder` for this call (a `pipeline.Call`), or None when caching is off for it (no disk is touched).

    The key is what was asked: `call.provider`/`call.model` as named (or the kernel
    default, possibly `auto`), so a replay needs no provider to be reachable.
    """
    if call.cache_mode == "off":
        return None
    request = call.request
    model, temperature, max_tokens = call.model, request.temperature, request.max_tokens
    settings = call.settings()
    if settings is not None:  # a named provider: the values the call will use (`auto` keys on what was asked)
        model = model or settings.model
        used = request.numbers(settings)
        temperature, max_tokens = used["temperature"], used["max_tokens"]
    asked = {
        "v": 1, "provider": call.provider, "model": model, "prompt": request.prompt,
        "system": request.system or None, "temperature": temperature, "max_tokens": max_tokens,
        "history": _transcript(list(request.chat.messages)) if request.chat is not None else [],
    }
    if request.output_type is not None:  # a typed answer is another question: its schema is part of the key
        from .typed import schema_key

        asked["output"] = schema_key(request.output_type)
    if request.images:  # two images of the same size are different questions: their content is the key
        asked["images"] = [image.digest for image in request.images]
    return Recorder(call.cache_mode, asked)


# ---- nbllm.cache ----------------------------------------------------------------------


class ReplayCache:
    """`nbllm.cache("record" | "replay" | "off")` sets the global mode; `nbllm.cache()` returns it.

    `.path` is the SQLite file, `len(nbllm.cache)` how many answers it holds,
    `.clear()` empties it.
    """

    def __init__(self) -> None:
        self._mode: str | None = None

    def __call__(self, mode: str | bool | None = None) -> str:
        if mode is not None:
            self._mode = _check_mode(mode, "nbllm.cache()")
        return self.mode

    @property
    def mode(self) -> str:
        if self._mode is not None:
            return self._mode
        from .registry import get_registry

        return get_registry().global_settings.cache_mode  # NBLLM_CACHE_MODE as config read it (bad: 'off')

    def reset(self) -> None:
        """Forget the mode set in this process (`NBLLM_CACHE_MODE` decides again)."""
        self._mode = None
        _store.close()
        _warned_paths.clear()

    @property
    def path(self) -> Path:
        return cache_path()

    def __len__(self) -> int:
        return self._use(_store.count)

    def clear(self) -> int:
        """Delete every recorded answer; returns how many were removed."""
        return self._use(_store.clear)

    def _use(self, action: Any) -> int:
        try:
            return action(self.path)
        except _STORAGE_ERRORS as exc:
            raise ConfigurationError(f"The replay cache {self.path} cannot be used ({exc}): {_FIX}.") from None

    def __repr__(self) -> str:
        return f"<nbllm replay cache: mode {self.mode!r}, file {self.path}>"


cache = ReplayCache()
