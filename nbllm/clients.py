"""HTTP clients built once per event loop and reused (building one costs ~40 ms)."""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx2

__all__ = ["shared_client", "cached_per_loop", "clear"]

_per_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, Any]]" = weakref.WeakKeyDictionary()


def cached_per_loop(key: Any, build: Any) -> Any:
    """`build()` once per (running loop, key); clients must not cross loops."""
    loop = asyncio.get_running_loop()
    cache = _per_loop.setdefault(loop, {})
    if key not in cache:
        cache[key] = build()
    return cache[key]


def shared_client(timeout: float | None = None) -> "httpx2.AsyncClient":
    """A plain client for probes and model lists (per-request timeouts are passed at call time)."""
    import httpx2

    return cached_per_loop(("probe",), lambda: httpx2.AsyncClient(timeout=timeout or 5.0, follow_redirects=True))


def clear() -> None:
    """Forget every cached client (after `reinit`, so new settings take effect)."""
    for cache in list(_per_loop.values()):
        cache.clear()
