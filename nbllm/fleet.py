"""A fleet of servers behind one provider name: which URL gets the next request.

`{P}_BASE_URL=http://a:8000/v1,http://b:8000/v1` gives a provider several servers
(`ProviderSettings.servers`). This module is the only scheduler, deliberately tiny:
the least-busy server that is not taken out, ties to the one used least recently so
load spreads evenly. Nothing more — no weights, no queues, no cluster: a user who
needs more puts a gateway (LiteLLM, a load balancer) behind one URL.

    url = fleet.pick(settings.servers)            # least busy, not out
    with fleet.lease(url):                        # counts it as in flight
        ...send the request to url...
    fleet.take_out(url, "connection refused")     # failed: not picked for OUT_SECONDS

State is per process, keyed by URL, and thread-safe (calls run on nbllm's loop thread,
health checks and tests on others).

Each take-out records its `Cause`, because a health probe (`GET /v1/models`) proves
only that something listens, not that chat works:
- "unreachable" (a call got no answer: refused, reset, timed out) and "probe" (a health
  probe found it down: refused, timed out, 408, 5xx) — a probe that gets an answer puts
  the server back at once (`probe_answered`): whatever was missing is back.
- "backoff" (the server asked to wait: `seconds`, a 429's or 503's Retry-After) and
  "error" (a call got an HTTP error from it, e.g. a 500, with no Retry-After) — the server
  itself answered, so a probe's answer proves nothing new: it stays out its full time
  (`seconds`, or `OUT_SECONDS` for an error); only `put_back`, expiry or `reset` end it.
A take-out never shortens one already running: the one that ends later wins, with its cause.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from .errors import display_url, scrub

__all__ = ["OUT_SECONDS", "Cause", "ServerState", "pick", "lease", "take_out", "put_back", "probe_answered",
           "is_out", "state", "reset"]

OUT_SECONDS = 30.0
"""How long a server that failed is left out (unless nothing else is left)."""

Cause = Literal["unreachable", "probe", "error", "backoff"]
"""How a server was taken out (see the module docstring for what a probe may undo)."""
_PROBE_UNDOES: frozenset[str] = frozenset({"unreachable", "probe"})


@dataclass(frozen=True)
class ServerState:
    """What the fleet knows about one server; health's per-server rows show it (their note)."""

    url: str
    """The server, without `user:password@` (safe to show)."""
    in_flight: int = 0
    out_until: float | None = None
    """`time.monotonic()` at which a taken-out server may be picked again; None when it is in."""
    reason: str | None = None
    """Why it was taken out (scrubbed), while it is out."""
    cause: Cause | None = None
    """How it was taken out, while it is out."""

    @property
    def out(self) -> bool:
        return self.out_until is not None

    @property
    def out_for(self) -> float:
        """Seconds until it is back (0 when it is in)."""
        return 0.0 if self.out_until is None else max(0.0, self.out_until - time.monotonic())


class _Server:
    __slots__ = ("in_flight", "out_until", "reason", "cause", "used")

    def __init__(self) -> None:
        self.in_flight = 0
        self.out_until: float | None = None
        self.reason: str | None = None
        self.cause: Cause | None = None
        self.used = 0
        """The tick of its last pick or lease (0: never): ties go to the smallest."""


_lock = threading.Lock()
_servers: dict[str, _Server] = {}
_tick = 0


def _key(url: str) -> str:
    return url.rstrip("/")


def _get(url: str) -> _Server:
    """The state of `url` (created on first sight); call with `_lock` held."""
    server = _servers.get(_key(url))
    if server is None:
        server = _servers[_key(url)] = _Server()
    return server


def _out(server: _Server, now: float) -> bool:
    """Whether it is out now; an expired take-out is cleared on the way (call with `_lock` held)."""
    if server.out_until is None:
        return False
    if server.out_until <= now:
        _clear(server)
        return False
    return True


def _clear(server: _Server) -> None:
    server.out_until = server.reason = server.cause = None


def _touch(server: _Server) -> None:
    global _tick
    _tick += 1
    server.used = _tick


def pick(servers: Sequence[str], exclude: Collection[str] = ()) -> str:
    """The least-busy server of `servers` that is neither taken out nor in `exclude`; ties
    go to the one used least recently. If every one is out or excluded, the one that comes
    back soonest (an excluded one that is not out counts as back now). Never raises for a
    non-empty list; `ValueError` for an empty one."""
    if not servers:
        raise ValueError("a fleet needs at least one server URL")
    skip = {_key(u) for u in exclude}
    with _lock:
        now = time.monotonic()
        states = [(url, _get(url)) for url in servers]
        ready = [(url, s) for url, s in states if _key(url) not in skip and not _out(s, now)]
        if ready:
            url, chosen = min(ready, key=lambda item: (item[1].in_flight, item[1].used))
        else:
            pool = [(url, s) for url, s in states if _key(url) not in skip] or states
            url, chosen = min(pool, key=lambda item: (item[1].out_until or 0.0, item[1].in_flight, item[1].used))
        _touch(chosen)
        return url


class lease:
    """`with lease(url):` counts one request in flight on `url` for as long as it runs.

    A plain (not async) context manager on purpose: entering and leaving never wait, so
    it is safe inside coroutines, and a lock makes it safe across threads.
    """

    __slots__ = ("url",)

    def __init__(self, url: str):
        self.url = url

    def __enter__(self) -> str:
        with _lock:
            server = _get(self.url)
            server.in_flight += 1
            _touch(server)
        return self.url

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        with _lock:
            server = _get(self.url)
            server.in_flight = max(0, server.in_flight - 1)


def take_out(url: str, reason: str, seconds: float | None = None, *, status: int | None = None,
             probe: bool = False) -> None:
    """`url` failed: `pick` passes it over for `seconds` (default `OUT_SECONDS`) unless nothing else is left.

    `seconds` is the wait the server asked for (Retry-After); `status` the HTTP status it answered
    with (None: nothing answered); `probe` says a health probe found it down. Together they make
    the `Cause` that decides whether a probe's answer may put it back early."""
    cause: Cause = "probe" if probe else "backoff" if seconds is not None else "error" if status else "unreachable"
    text = scrub(reason)
    with _lock:
        now = time.monotonic()
        until = now + (OUT_SECONDS if seconds is None else max(0.0, seconds))
        server = _get(url)
        if _out(server, now) and server.out_until is not None and server.out_until >= until:
            return  # one that lasts longer is running (e.g. a Retry-After): a probe must not shorten it
        server.out_until, server.reason, server.cause = until, text, cause


def put_back(url: str) -> None:
    """`url` may be picked at once, however it was taken out (a user or test deciding so)."""
    with _lock:
        _clear(_get(url))


def probe_answered(url: str) -> bool:
    """A health probe got an answer from `url`: put it back if it was out only because nothing
    answered ("unreachable", "probe"); a server's own 429/5xx keeps it out its time. Returns
    whether it is in now."""
    with _lock:
        server = _get(url)
        if not _out(server, time.monotonic()):
            return True
        if server.cause in _PROBE_UNDOES:
            _clear(server)
            return True
        return False


def is_out(url: str) -> bool:
    """Whether `url` is taken out right now."""
    with _lock:
        server = _servers.get(_key(url))
        return server is not None and _out(server, time.monotonic())


def state(url: str) -> ServerState:
    """A snapshot of what the fleet knows about `url` (in flight, out until, why)."""
    with _lock:
        server = _servers.get(_key(url))
        shown = display_url(url)
        if server is None:
            return ServerState(shown)
        _out(server, time.monotonic())
        return ServerState(shown, server.in_flight, server.out_until, server.reason, server.cause)


def reset() -> None:
    """Forget every server (tests, `nbllm.reinit()`); requests still in flight finish uncounted."""
    global _tick
    with _lock:
        _servers.clear()
        _tick = 0
