"""One background event loop, owned by nbllm, on which all network work runs.

Why: a Jupyter kernel's cell already runs inside an event loop, so `asyncio.run`
and `run_sync` fail there. Every coroutine nbllm runs is handed to this loop's
thread; sync callers block on a future (Ctrl-C cancels it), async callers on
another loop await a wrapped future, and streams cross threads through a queue.
Keeping all HTTP clients on one loop also lets them be built once and reused.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["get_loop", "run", "run_async", "iterate", "aiterate", "shutdown", "on_loop_thread", "IDLE"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """nbllm's loop, started on first use in a daemon thread."""
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def _serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=_serve, name="nbllm-loop", daemon=True)
            thread.start()
            ready.wait()
            _loop, _thread = loop, thread
        return _loop


def on_loop_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run `coro` on nbllm's loop and wait for it; KeyboardInterrupt cancels it."""
    if on_loop_thread():
        coro.close()
        raise RuntimeError("nbllm.bridge.run() called from nbllm's own loop; await the coroutine instead")
    future = asyncio.run_coroutine_threadsafe(coro, get_loop())
    try:
        return future.result(timeout)
    except (KeyboardInterrupt, concurrent.futures.TimeoutError):
        future.cancel()
        raise
    except concurrent.futures.CancelledError:
        raise KeyboardInterrupt("nbllm request cancelled") from None


async def run_async(coro: Awaitable[T]) -> T:
    """Await `coro` on nbllm's loop from any loop (cancelling here cancels it there)."""
    loop = get_loop()
    if asyncio.get_running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_as_coro(coro), loop))


async def _as_coro(aw: Awaitable[T]) -> T:
    return await aw


_DONE = object()


IDLE: Any = object()
"""Yielded by `iterate(..., idle=s)` when no item arrived for `s` seconds."""


def iterate(agen: AsyncIterator[T], idle: float | None = None) -> Iterator[T]:
    """Consume an async iterator on nbllm's loop, yielding its items in this thread.

    Items arrive through a queue as soon as they are produced; closing the iterator
    (or Ctrl-C while waiting) cancels the producer. With `idle`, `IDLE` is yielded
    whenever nothing arrived for that long, so a consumer can refresh a display
    between slow chunks without a thread of its own.
    """
    items: queue.Queue[Any] = queue.Queue()

    async def pump() -> None:
        try:
            async for item in agen:
                items.put((True, item))
        except BaseException as exc:  # handed to the consumer, who re-raises it
            items.put((False, exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            items.put((True, _DONE))
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()

    future = asyncio.run_coroutine_threadsafe(pump(), get_loop())
    try:
        while True:
            try:
                ok, item = items.get(timeout=idle)
            except queue.Empty:
                yield IDLE
                continue
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        if not future.done():
            future.cancel()


async def aiterate(agen: AsyncIterator[T]) -> AsyncIterator[T]:
    """Consume an async iterator on nbllm's loop from another loop."""
    loop = get_loop()
    if asyncio.get_running_loop() is loop:
        async for item in agen:
            yield item
        return
    it = agen.__aiter__()
    try:
        while True:
            try:
                item = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_as_coro(it.__anext__()), loop))
            except StopAsyncIteration:
                return
            yield item
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            asyncio.run_coroutine_threadsafe(aclose(), loop)


def shutdown(timeout: float = 2.0) -> None:
    """Stop the loop thread (on interpreter exit or `%unload_ext`)."""
    global _loop, _thread
    with _lock:
        loop, thread = _loop, _thread
        _loop, _thread = None, None
    if loop is None or loop.is_closed():
        return

    async def _cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout)
    except Exception:
        pass
    loop.call_soon_threadsafe(loop.stop)
    if thread is not None:
        thread.join(timeout)
    if not loop.is_running():
        loop.close()


atexit.register(shutdown)
