"""The background loop: sync calls inside running loops, uvloop, Ctrl-C, streams, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import uvloop

import nbllm
from nbllm import bridge, clients
from nbllm.errors import NbllmError

from conftest import reset_nbllm


def _loop_threads() -> int:
    return [t.name for t in threading.enumerate()].count("nbllm-loop")


def test_sync_ask_works_inside_a_running_loop(local_provider):
    async def cell():  # what a kernel does: the cell's code runs inside the kernel's loop
        return nbllm.ask("inside a loop").text

    assert asyncio.run(cell()) == "Echo: inside a loop"


def test_uvloop_run_with_sync_and_async_calls(local_provider):
    async def main():
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        sync_text = nbllm.ask("sync under uvloop").text
        async_text = (await nbllm.ask_async("async under uvloop")).text
        chunks = [chunk async for chunk in nbllm.stream("streamed under uvloop")]
        return sync_text, async_text, "".join(chunks)

    assert uvloop.run(main()) == ("Echo: sync under uvloop", "Echo: async under uvloop", "Echo: streamed under uvloop")


def test_the_bridge_loop_itself_can_be_uvloop(local_provider):
    bridge.shutdown()
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        assert isinstance(bridge.get_loop(), uvloop.Loop)
        assert nbllm.ask("on uvloop").text == "Echo: on uvloop"
        assert "".join(nbllm.stream("a b c")) == "Echo: a b c"
    finally:
        asyncio.set_event_loop_policy(policy)
        bridge.shutdown()
    assert not isinstance(bridge.get_loop(), uvloop.Loop)


def _interrupt_main_when(condition, delay: float = 0.2) -> None:
    main = threading.main_thread().ident

    def wait_then_interrupt():
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=wait_then_interrupt, daemon=True).start()


def test_ctrl_c_cancels_a_waiting_request_and_the_next_one_works(local_provider):
    local_provider.set(mode="hang")
    cancelled = threading.Event()

    async def watched():
        try:
            return await nbllm.ask_async("hang")
        except asyncio.CancelledError:
            cancelled.set()
            raise

    _interrupt_main_when(lambda: local_provider.chat_requests())
    with pytest.raises(KeyboardInterrupt):
        bridge.run(watched())
    assert cancelled.wait(5), "the coroutine on nbllm's loop was not cancelled"
    local_provider.set(mode="ok")
    assert nbllm.ask("after").text == "Echo: after"


def test_ctrl_c_during_a_stream_cancels_the_producer(local_provider):
    local_provider.set(chunk_delay=0.2)
    received: list[str] = []
    _interrupt_main_when(lambda: received)
    with pytest.raises(KeyboardInterrupt):
        for chunk in nbllm.stream("one two three four five six seven eight"):
            received.append(chunk)
    pending = bridge.run(_other_tasks())
    assert pending == [], pending
    assert 0 < len(received) < 9


async def _other_tasks() -> list[str]:
    await asyncio.sleep(0.05)
    return [repr(t) for t in asyncio.all_tasks() if t is not asyncio.current_task()]


def test_iterate_reports_idle_time_and_stops_the_producer_when_left():
    finished = threading.Event()

    async def slow():
        try:
            yield 1
            await asyncio.sleep(0.25)
            yield 2
            await asyncio.sleep(30)
            yield 3
        finally:
            finished.set()

    items = []
    for item in bridge.iterate(slow(), idle=0.05):
        items.append(item)
        if item == 2:
            break
    assert items[0] == 1 and items[-1] == 2
    assert bridge.IDLE in items[1:-1]  # the 0.25 s pause was reported, not waited out silently
    assert finished.wait(2)


def test_run_async_cancellation_reaches_nbllm_loop():
    cancelled = threading.Event()

    async def sleeper():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def caller():
        task = asyncio.ensure_future(bridge.run_async(sleeper()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(caller())
    assert cancelled.wait(2)


def test_shutdown_stops_the_thread_and_it_restarts_on_use():
    bridge.get_loop()
    assert _loop_threads() == 1
    bridge.shutdown()
    assert _loop_threads() == 0
    assert bridge.run(asyncio.sleep(0, result="again")) == "again"
    assert _loop_threads() == 1


def test_run_from_nbllm_loop_is_refused():
    async def nested():
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="own loop"):
            bridge.run(coro)
        return True

    assert bridge.run(nested())


def _env(server) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LMSTUDIO_BASE_URL=server.url + "/v1", NBLLM_PROVIDER="lmstudio", LMSTUDIO_MAX_RETRIES="0")
    return env


def test_plain_python_asks_and_exits(local_provider):
    code = "import nbllm; print(nbllm.ask('from a script').text); print(''.join(nbllm.stream('and a stream')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(local_provider),
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["Echo: from a script", "Echo: and a stream"]


def test_terminal_ipython_runs_the_magics(local_provider, tmp_path: Path):
    script = tmp_path / "session.ipy"
    script.write_text("%%llm -o kept\nhello terminal\n")  # a file is one cell: the cell magic comes first
    follow = tmp_path / "follow.ipy"
    follow.write_text("%load_ext nbllm\nx = %llm -f json --no-stream give json\nprint(type(x).__name__, x)\n")
    ipython = str(Path(sys.executable).with_name("ipython"))
    out = subprocess.run([ipython, "--no-banner", "--colors=nocolor", "--ext=nbllm", str(script)],
                         capture_output=True, text=True, env=_env(local_provider), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Echo: hello terminal"
    local_provider.set(reply='{"a": 1}')
    out = subprocess.run([ipython, "--no-banner", "--colors=nocolor", str(follow)], capture_output=True, text=True,
                         env=_env(local_provider), timeout=60)
    assert out.stdout.strip() == "dict {'a': 1}", out.stderr


# ---- cancels that are not Ctrl-C --------------------------------------------------------


def _shutdown_when(event: threading.Event) -> None:
    threading.Thread(target=lambda: (event.wait(5), bridge.shutdown()), daemon=True).start()


def test_a_cancel_on_nbllms_loop_is_an_error_not_ctrl_c():
    started = threading.Event()

    async def waits():
        started.set()
        await asyncio.sleep(30)

    _shutdown_when(started)
    with pytest.raises(bridge.Cancelled, match="cancelled") as info:
        bridge.run(waits())
    assert isinstance(info.value, NbllmError) and not isinstance(info.value, KeyboardInterrupt)
    assert bridge.run(asyncio.sleep(0, result="usable")) == "usable"


def test_run_async_tells_its_own_cancel_from_one_over_there():
    started = threading.Event()

    async def waits():
        started.set()
        await asyncio.sleep(30)

    async def caller():
        _shutdown_when(started)
        with pytest.raises(bridge.Cancelled):
            await bridge.run_async(waits())

    asyncio.run(caller())


# ---- aiterate closes what it leaves ----------------------------------------------------


def test_aiterate_leaving_early_waits_until_the_producer_is_closed():
    closed = threading.Event()

    async def numbers():
        try:
            for i in range(100):
                yield i
                await asyncio.sleep(0.01)
        finally:
            await asyncio.sleep(0.1)  # closing takes a moment, on nbllm's loop
            closed.set()

    async def consumer():
        items = bridge.aiterate(numbers())
        async for item in items:
            if item == 2:
                break
        await items.aclose()
        return closed.is_set()

    assert asyncio.run(consumer()), "aclose() returned before the producer was closed"


def test_cancelling_the_consumer_mid_item_closes_the_producer_cleanly():
    closed = threading.Event()
    problems: list[dict] = []
    bridge.get_loop().set_exception_handler(lambda loop, context: problems.append(context))

    async def slow():
        try:
            yield 1
            await asyncio.sleep(30)
            yield 2
        finally:
            closed.set()

    async def consumer():
        seen = []

        async def consume():
            async for item in bridge.aiterate(slow()):
                seen.append(item)

        task = asyncio.ensure_future(consume())
        while not seen:
            await asyncio.sleep(0.01)
        task.cancel()  # while __anext__ waits on nbllm's loop
        with pytest.raises(asyncio.CancelledError):
            await task
        return closed.is_set()

    try:
        assert asyncio.run(consumer()), "the producer was not closed when the cancelled consumer returned"
        bridge.run(asyncio.sleep(0.05))
        assert problems == []  # e.g. "asynchronous generator is already running"
    finally:
        bridge.get_loop().set_exception_handler(None)


def test_a_producer_cancelled_over_there_is_an_error_for_both_consumers():
    started = threading.Event()

    async def slow():
        yield 1
        started.set()
        await asyncio.sleep(30)
        yield 2

    _shutdown_when(started)
    with pytest.raises(bridge.Cancelled):
        list(bridge.iterate(slow()))

    async def consumer():
        _shutdown_when(started)
        return [item async for item in bridge.aiterate(slow())]

    started.clear()
    with pytest.raises(bridge.Cancelled):
        asyncio.run(consumer())


# ---- clients: one per settings, closed when dropped ---------------------------------------


async def _cached() -> dict:
    return dict(clients._per_loop.get(asyncio.get_running_loop(), {}))


def test_per_call_timeouts_share_one_client_and_are_honoured(local_provider, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_TIMEOUT", "3600")
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    reset_nbllm()
    for timeout in (5, 6, 7, None):
        assert nbllm.ask("hi", timeout=timeout).text == "Echo: hi"
    shared = [key for key in bridge.run(_cached()) if key[0] in ("model", "wire")]  # (a local server: the wire path)
    assert shared == [("wire",)], shared
    assert "sk-" not in repr(shared)
    local_provider.set(mode="hang")
    with pytest.raises(nbllm.ModelError, match="timed out"):  # not the provider's hour
        bridge.run(nbllm.ask_async("hang", timeout=0.3), timeout=30)


async def _probe_client():
    return clients.shared_client()


def _wait(condition) -> bool:
    for _ in range(200):
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_clear_and_shutdown_close_the_cached_clients(local_provider):
    nbllm.ask("warm up")
    cached = bridge.run(_cached())
    probe = cached[("probe",)]
    wire = cached[("wire",)]  # the local server's client (wire.py)
    assert not probe.is_closed and not wire.is_closed
    clients.clear()
    assert _wait(lambda: probe.is_closed and wire.is_closed)
    assert bridge.run(_cached()) == {}

    nbllm.ask("again")  # new clients, closed by shutdown before the loop stops
    probe = bridge.run(_probe_client())
    wire = bridge.run(_cached())[("wire",)]
    bridge.shutdown()
    assert probe.is_closed and wire.is_closed
    assert nbllm.ask("after").text == "Echo: after"
