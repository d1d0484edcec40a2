"""HTTP clients built once per event loop and reused (building one costs ~40 ms).

Each client belongs to the loop it was built on: its connections can only be used
and closed there. `clear()` (after `reinit`, on `%unload_ext`) forgets them and
closes them on their loop; `close_clients()` is what `bridge.shutdown` awaits
before stopping nbllm's loop, so no connection outlives it.
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from typing import TYPE_CHECKING, Any

from .errors import scrub_library_logs

if TYPE_CHECKING:
    import ssl

    import httpx2

__all__ = ["shared_client", "http_client", "cached_per_loop", "clear", "close_clients"]

_per_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, Any]]" = weakref.WeakKeyDictionary()


def cached_per_loop(key: Any, build: Any) -> Any:
    """`build()` once per (running loop, key); clients must not cross loops."""
    loop = asyncio.get_running_loop()
    cache = _per_loop.setdefault(loop, {})
    if key not in cache:
        cache[key] = build()
        scrub_library_logs()  # the clients' log lines carry URLs: scrub them (their SDKs are imported now)
    return cache[key]


def shared_client() -> "httpx2.AsyncClient":
    """A plain client for probes and model lists (each request passes its own timeout)."""
    return cached_per_loop(("probe",), lambda: http_client(timeout=5.0, follow_redirects=True))


def http_client(**options: Any) -> "httpx2.AsyncClient":
    """`httpx2.AsyncClient(**options)` whose TLS setup waits for its first https request.

    Why: building the TLS context loads the system's CA certificates (25–50 ms here), which was a
    fifth of the first `--status` and of the first local answer, and a local server speaks plain
    http. So http goes through a transport whose TLS context trusts nothing (it fails closed, never
    open: a redirect to https still goes to the https mount), and https through one built with
    httpx2's own defaults on first use. With any proxy setting (`config.proxy_configured`: a
    `*_proxy` variable, `no_proxy` included, or the system's proxies) the client is built as usual:
    httpx2 mounts proxies and exceptions per host, and a proxy may itself be https."""
    import httpx2

    from .config import proxy_configured

    if proxy_configured():
        return httpx2.AsyncClient(**options)
    https = _TLSOnFirstUse({"limits": options["limits"]} if "limits" in options else {})
    return httpx2.AsyncClient(verify=_trusting_nothing(), mounts={"https://": https}, **options)


_NO_CA: "ssl.SSLContext | None" = None


def _trusting_nothing() -> "ssl.SSLContext":
    """A TLS client context with certificate and host checks on and no CA loaded: every handshake fails."""
    global _NO_CA
    if _NO_CA is None:
        import ssl

        _NO_CA = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return _NO_CA


class _TLSOnFirstUse:
    """An httpx2 transport that builds the real https transport (httpx2's defaults) on its first request."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options  # the client's `limits`, if it was given any (else httpx2's default)
        self._transport: Any = None

    async def handle_async_request(self, request: Any) -> Any:
        if self._transport is None:
            import httpx2

            self._transport = httpx2.AsyncHTTPTransport(**self._options)
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()

    async def __aenter__(self) -> "_TLSOnFirstUse":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def clear() -> None:
    """Forget every cached client (so new settings take effect) and close it on its own loop."""
    for loop, cache in list(_per_loop.items()):
        objects = list(cache.values())
        cache.clear()
        if objects and loop.is_running() and not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(_close_all(objects), loop)
            except RuntimeError:  # the loop closed meanwhile: nothing can close them now
                pass


async def close_clients() -> None:
    """Close and forget the clients of the running loop (before that loop stops)."""
    cache = _per_loop.pop(asyncio.get_running_loop(), {})
    await _close_all(list(cache.values()))


async def _close_all(objects: list[Any]) -> None:
    for thing in objects:
        try:
            await _close(thing)
        except Exception:  # cleanup never raises: a client that cannot close is dropped anyway
            pass


async def _close(thing: Any) -> None:
    """httpx2 clients have `aclose()`, most SDK clients an async `close()`; a pydantic-ai model
    holds an SDK client (`.client`) and may own an HTTP client through its provider."""
    for target in (thing, getattr(thing, "client", None)):
        for name in ("aclose", "close"):
            method = getattr(target, name, None)
            if method is not None and inspect.iscoroutinefunction(method):
                await method()
                break
        else:  # Mistral's SDK client has no close(): leaving its context closes its HTTP client
            if target is not thing and hasattr(target, "__aexit__"):
                await target.__aexit__(None, None, None)
    provider = getattr(thing, "provider", None)
    if provider is not None and hasattr(provider, "__aexit__"):
        async with provider:  # leaving the provider's context closes a client it created itself
            pass
