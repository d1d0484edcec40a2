"""One background event loop, owned by nbllm, on which all network work runs.

Why: a Jupyter kernel's cell already runs inside an event loop, so `asyncio.run`
and `run_sync` fail there. Every coroutine nbllm runs is handed to this loop's
thread; sync callers block on a future (Ctrl-C cancels it), async callers on
another loop await a wrapped future, and streams cross threads through a queue.
Keeping all HTTP clients on one loop also lets them be built once and reused.

Only a real Ctrl-C in the waiting thread becomes `KeyboardInterrupt`; a request
that nbllm itself cancelled (its loop shut down) is a `Cancelled` error, so callers
can tell "the user stopped it" from "it was stopped under them".
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from typing import Any, Callable, TypeVar

from . import clients
from .errors import Cancelled, NbllmError, detached

__all__ = ["get_loop", "run", "run_async", "iterate", "aiterate", "shutdown", "on_loop_thread", "IDLE", "Cancelled"]

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
    """Run `coro` on nbllm's loop and wait for it; Ctrl-C (KeyboardInterrupt) cancels it.

    A cancellation that did not come from this thread raises `Cancelled`.

    Why not `asyncio.run_coroutine_threadsafe`: its concurrent Future (a Condition, two chained
    futures and their callbacks) cost ~25 µs of the ~65 µs a hop took, on every `ask`; a task whose
    end releases a bare lock does the same handoff (see DESIGN.md's figures for one `ask`)."""
    if on_loop_thread():
        coro.close()
        raise RuntimeError("nbllm.bridge.run() called from nbllm's own loop; await the coroutine instead")
    loop = get_loop()
    hop = _Hop(coro)
    loop.call_soon_threadsafe(hop.start, loop)
    try:
        if not hop.done.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"no result within {timeout:g} s")
    except (KeyboardInterrupt, TimeoutError):
        loop.call_soon_threadsafe(hop.cancel)
        raise
    error: BaseException
    try:
        return hop.result()
    except asyncio.CancelledError:  # cancelled over there, not by Ctrl-C here
        error = Cancelled()
    except NbllmError as exc:  # nbllm's own errors say everything: no frames of the loop thread
        error = exc
    raise detached(error)  # outside the except: nothing (an SDK error, a header) is chained


class _Hop:
    """One coroutine handed to nbllm's loop: started there as a task whose end releases `done`."""

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.done = threading.Lock()
        self.done.acquire()
        self.task: asyncio.Task[Any] | None = None
        self.failure: BaseException | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self.task = loop.create_task(self.coro)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.coro.close()
            self.failure = exc
            self.done.release()
            return
        self.task.add_done_callback(self._ended)

    def _ended(self, task: "asyncio.Task[Any]") -> None:
        if not task.cancelled():
            task.exception()  # retrieved: a caller that gave up leaves no "never retrieved" log line
        self.done.release()

    def cancel(self) -> None:
        """(Queued after `start` on the same loop: the task exists unless starting it failed.)"""
        if self.task is not None:
            self.task.cancel()

    def result(self) -> Any:
        if self.failure is not None:
            raise self.failure
        assert self.task is not None
        return self.task.result()


async def run_async(coro: Awaitable[T]) -> T:
    """Await `coro` on nbllm's loop from any loop (cancelling here cancels it there).

    If this task was cancelled, CancelledError propagates; if only the work on nbllm's
    loop was, `Cancelled` is raised.
    """
    loop = get_loop()
    if asyncio.get_running_loop() is loop:
        return await coro
    try:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_as_coro(coro), loop))
    except asyncio.CancelledError:
        if _cancelled_here():
            raise
        error: NbllmError = Cancelled()
    except NbllmError as exc:
        error = exc
    raise detached(error)


def _cancelled_here() -> bool:
    """Whether the running task was asked to cancel (Python < 3.11 cannot tell: assume so)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


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
    future = asyncio.run_coroutine_threadsafe(_pump(agen, items.put), get_loop())
    try:
        while True:
            try:
                ok, item = items.get(timeout=idle)
            except queue.Empty:
                yield IDLE
                continue
            if not ok:
                raise _consumer_error(item)
            if item is _DONE:
                return
            yield item
    finally:
        if not future.done():
            future.cancel()


async def _pump(agen: AsyncIterator[Any], put: Callable[[tuple[bool, Any]], None]) -> None:
    """Drain `agen` on nbllm's loop, handing each item, the end or the error to `put`.

    One task owns the iterator from its first item to its `aclose()`, so closing it
    can never collide with a `__anext__` still running.
    """
    try:
        async for item in agen:
            put((True, item))
    except BaseException as exc:  # handed to the consumer, who re-raises it
        put((False, exc))
        if isinstance(exc, asyncio.CancelledError):
            raise
    else:
        put((True, _DONE))
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            await aclose()


def _consumer_error(exc: BaseException) -> BaseException:
    """What the consumer raises for the producer's error: a cancel it did not ask for is `Cancelled`."""
    return Cancelled() if isinstance(exc, asyncio.CancelledError) else exc


_CLOSED = object()


async def aiterate(agen: AsyncIterator[T]) -> AsyncIterator[T]:
    """Consume an async iterator on nbllm's loop from another loop.

    Items cross loops through a queue, as in `iterate`. Leaving early (break, error,
    cancellation) cancels the producer and waits until it has closed the iterator.
    """
    loop = get_loop()
    here = asyncio.get_running_loop()
    if here is loop:
        async for item in agen:
            yield item
        return
    items: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()

    def hand(entry: tuple[Any, Any]) -> None:  # runs on nbllm's loop
        try:
            here.call_soon_threadsafe(items.put_nowait, entry)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening
            pass

    tasks: list[asyncio.Task[None]] = []

    def start() -> None:  # callbacks run in order, so this always precedes `stop`
        task = loop.create_task(_pump(agen, hand))
        task.add_done_callback(lambda _task: hand((None, _CLOSED)))
        tasks.append(task)

    def stop() -> None:
        for task in tasks:
            task.cancel()

    loop.call_soon_threadsafe(start)
    closed = False
    try:
        while True:
            ok, item = await items.get()
            if ok is None:  # the producer ended without a last word: it was cancelled over there
                closed = True
                raise Cancelled()
            if not ok:
                raise _consumer_error(item)
            if item is _DONE:
                return
            yield item
    finally:
        if not closed:
            try:
                loop.call_soon_threadsafe(stop)
                await asyncio.wait_for(_until_closed(items), 5.0)
            except (RuntimeError, asyncio.TimeoutError):  # nbllm's loop is gone: nothing left to close
                pass


async def _until_closed(items: asyncio.Queue[tuple[Any, Any]]) -> None:
    while (await items.get())[0] is not None:
        pass


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
        await clients.close_clients()  # their connections belong to this loop: close them while it runs

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
