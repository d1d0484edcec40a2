"""A llama.cpp server that dies from a signal: named, with the fix, and never restarted in a loop.

No crashing build is needed: `server_command` is replaced by a tiny Python HTTP server
that answers `GET /v1/models` and kills itself with SIGSEGV on the first chat request
(or while starting). Everything else — launching, waiting until ready, health, calls —
is nbllm's real code, so these tests need neither llama_cpp nor the model.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import nbllm
from nbllm import embedded
from nbllm.errors import ModelError, ServerCrashed

from conftest import reset_nbllm

FAKE_SERVER = textwrap.dedent(
    """
    import json, os, resource, signal, socket, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    port, mode = int(sys.argv[1]), sys.argv[2]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core files from the deliberate crash
    print("llama_model_loader: loaded meta data", flush=True)
    if mode == "crash-on-start":
        os.kill(os.getpid(), signal.SIGSEGV)
    if mode == "exit-on-start":
        print("error: failed to load model", flush=True)
        sys.exit(3)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if mode == "slow-crash-on-call":  # stops listening and drops the call a moment before it dies
                self.server.socket.shutdown(socket.SHUT_RDWR)
                self.connection.shutdown(socket.SHUT_RDWR)
                time.sleep(0.25)
            if mode != "answer":
                os.kill(os.getpid(), signal.SIGSEGV)  # what a native build does on the first decode
                time.sleep(30)  # the signal arrives asynchronously: answer nothing meanwhile
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Hello!"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)

VERSION = "0.3.99"
FIX = (f'CMAKE_ARGS="-DGGML_NATIVE=OFF" {shlex.quote(sys.executable)} -m pip install --no-cache-dir '
       f'--force-reinstall --no-deps "llama-cpp-python[server]=={VERSION}"')


class Fake:
    """The patched launcher: which mode the next server runs in, and how many were launched."""

    def __init__(self) -> None:
        self.mode = "crash-on-call"
        self.launches: list[int] = []


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Fake:
    script = tmp_path / "fake_llama_server.py"
    script.write_text(FAKE_SERVER)
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF")
    state = Fake()
    embedded.stop_server()
    monkeypatch.delenv("EMBEDDED_BASE_URL", raising=False)
    monkeypatch.setenv("NBLLM_EMBEDDED_MODEL", str(model))
    monkeypatch.setenv("NBLLM_EMBEDDED_START_TIMEOUT", "15")
    monkeypatch.setattr(embedded, "missing_requirement", lambda env=None: None)
    monkeypatch.setattr(embedded, "llama_version", lambda: VERSION)
    monkeypatch.setattr(
        embedded, "server_command",
        lambda model, alias, port, log_path, env=None: [sys.executable, str(script), str(port), state.mode],
    )
    real_launch = embedded._launch

    def counting_launch(*args, **kwargs):
        server = real_launch(*args, **kwargs)
        state.launches.append(server.pid)
        return server

    monkeypatch.setattr(embedded, "_launch", counting_launch)
    reset_nbllm()
    yield state
    embedded.stop_server()


def _prepare(start: bool):
    return asyncio.run(nbllm.get_registry().prepare("embedded", start=start))


def _assert_names_crash_and_fix(error: BaseException) -> None:
    text = str(error)
    assert isinstance(error, ServerCrashed) and isinstance(error, ModelError)
    assert text.startswith("embedded: the llama.cpp server crashed (SIGSEGV, signal 11) — ")
    assert "built for another CPU" in text and text.endswith(f"rebuild it portably: {FIX}")
    assert "\n" not in text


def test_a_crash_during_a_call_is_named_and_not_restarted(fake):
    settings = _prepare(start=True)
    assert fake.launches and settings.base_url == embedded.server_info()["base_url"]
    assert nbllm.health_check(["embedded"])["embedded"].status == "available"
    request = urllib.request.Request(settings.base_url + "/chat/completions", data=b'{"messages": []}',
                                     headers={"Content-Type": "application/json"})
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(request, timeout=10)  # the server dies answering it

    # What the call pipeline asks right after the failed call: did it crash?
    with pytest.raises(ServerCrashed) as after_call:
        _prepare(start=False)
    _assert_names_crash_and_fix(after_call.value)

    with pytest.raises(ServerCrashed) as next_call:  # the next call starts nothing
        _prepare(start=True)
    _assert_names_crash_and_fix(next_call.value)
    with pytest.raises(ServerCrashed):
        nbllm.ask("hi", provider="embedded")
    assert len(fake.launches) == 1 and embedded.server_info() is None

    health = nbllm.health_check(["embedded"])["embedded"]
    assert (health.status, health.available, health.connected, health.crashed) == ("crashed", False, False, True)
    assert "SIGSEGV" in health.error and FIX in health.error
    from nbllm.tables import health_rows

    assert health_rows({"embedded": health})[0]["status"] == "crashed"


def test_the_look_after_a_failed_call_waits_for_a_server_that_is_dying(fake):
    """Its connection may drop a moment before its exit status can be read: a health check
    that finds it alive but no longer listening gives it a moment (SETTLE_SECONDS) to be reaped."""
    fake.mode = "slow-crash-on-call"
    settings = _prepare(start=True)
    request = urllib.request.Request(settings.base_url + "/chat/completions", data=b"{}")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(request, timeout=10)
    assert embedded.server_info() is not None  # still alive when the call has failed
    with pytest.raises(ServerCrashed) as info:
        _prepare(start=False)
    _assert_names_crash_and_fix(info.value)


@pytest.mark.parametrize("how", ["ask", "stream"])
def test_a_call_during_which_the_server_crashes_names_the_crash(fake, how):
    """Not "connection failed" (and a restart): the call pipeline asks the hook what became of it."""
    for prompt in ("hi", "hi again"):
        if how == "ask":
            with pytest.raises(ServerCrashed) as info:
                nbllm.ask(prompt, provider="embedded")
            _assert_names_crash_and_fix(info.value)
        else:
            stream = nbllm.stream(prompt, provider="embedded", raise_errors=False)
            assert list(stream) == [] and not stream.answer.ok
            assert "crashed (SIGSEGV, signal 11)" in stream.answer.error and FIX in stream.answer.error
    assert len(fake.launches) == 1


def test_a_crash_while_starting_is_named_and_not_restarted(fake):
    fake.mode = "crash-on-start"
    with pytest.raises(ServerCrashed) as first:
        nbllm.ask("hi", provider="embedded")
    _assert_names_crash_and_fix(first.value)
    with pytest.raises(ServerCrashed) as second:
        nbllm.ask("hi", provider="embedded")
    _assert_names_crash_and_fix(second.value)
    assert len(fake.launches) == 1
    health = nbllm.health_check(["embedded"])["embedded"]
    assert (health.status, health.available) == ("crashed", False) and "SIGSEGV" in health.error


def test_after_a_crash_a_rebuild_new_arguments_or_forgetting_allow_a_new_start(fake, monkeypatch):
    fake.mode = "crash-on-start"
    with pytest.raises(ServerCrashed):
        _prepare(start=True)
    assert len(fake.launches) == 1

    fake.mode = "crash-on-call"
    monkeypatch.setenv("NBLLM_EMBEDDED_ARGS", "--n_threads 1")  # other arguments: worth a try
    reset_nbllm()
    assert _prepare(start=True).base_url == embedded.server_info()["base_url"]
    assert len(fake.launches) == 2

    embedded.stop_server()
    fake.mode = "crash-on-start"
    with pytest.raises(ServerCrashed):
        _prepare(start=True)
    stamp = embedded._install_stamp()
    monkeypatch.setattr(embedded, "_install_stamp", lambda: (*stamp, (1, 1)))  # llama-cpp-python reinstalled
    with pytest.raises(ServerCrashed):  # it crashes again, but it was tried
        _prepare(start=True)
    assert len(fake.launches) == 4

    with pytest.raises(ServerCrashed):
        _prepare(start=True)
    assert len(fake.launches) == 4
    embedded.forget_crash()  # what nbllm.reinit() does
    fake.mode = "crash-on-call"
    assert _prepare(start=False) is None  # health again says "starts on first use"
    assert nbllm.health_check(["embedded"])["embedded"].status == "available"
    assert _prepare(start=True).base_url == embedded.server_info()["base_url"]
    assert len(fake.launches) == 5


def test_an_ordinary_exit_while_starting_keeps_its_message_and_is_retried(fake):
    fake.mode = "exit-on-start"
    with pytest.raises(ModelError) as info:
        _prepare(start=True)
    assert not isinstance(info.value, ServerCrashed)
    assert "exited with code 3 while starting (error: failed to load model)" in str(info.value)
    assert nbllm.health_check(["embedded"])["embedded"].status == "down"
    with pytest.raises(ModelError):
        _prepare(start=True)
    assert len(fake.launches) == 2  # not a crash: the next use tries again


def test_a_server_killed_from_outside_is_restarted(fake):
    first = _prepare(start=True).base_url
    pid = fake.launches[-1]
    os.kill(pid, signal.SIGKILL)  # e.g. the user or the OOM killer, not a broken build
    deadline = time.monotonic() + 5
    while embedded.server_info() is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _prepare(start=False) is None  # health: starts on first use
    second = _prepare(start=True).base_url
    assert len(fake.launches) == 2 and fake.launches[-1] != pid and second != first


def test_crash_signals_and_the_fix_command(monkeypatch):
    assert embedded.crash_signal(-signal.SIGSEGV) == "SIGSEGV, signal 11"
    assert embedded.crash_signal(-signal.SIGILL) == "SIGILL, signal 4"
    assert embedded.crash_signal(-signal.SIGBUS) == f"SIGBUS, signal {int(signal.SIGBUS)}"
    assert [embedded.crash_signal(code) for code in (None, 0, 1, 3, -signal.SIGKILL, -signal.SIGTERM)] == [None] * 6
    abort = embedded.crash_error(-signal.SIGABRT, "GGML_ASSERT(n_tokens > 0) failed")
    assert str(abort).startswith("embedded: the llama.cpp server crashed (SIGABRT, signal 6: GGML_ASSERT(n_tokens")
    monkeypatch.setattr(embedded, "llama_version", lambda: None)  # unknown version: no pin
    assert embedded.rebuild_command().endswith('--force-reinstall --no-deps "llama-cpp-python[server]"')
    assert embedded.rebuild_command("1.2.3").endswith('"llama-cpp-python[server]==1.2.3"')


def _check_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "check_embedded.py"
    spec = importlib.util.spec_from_file_location("check_embedded", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", ["crash-on-call", "crash-on-start"])
def test_the_setup_check_rebuilds_a_crashing_build_once_and_then_fails_loudly(fake, monkeypatch, capsys, mode):
    script = _check_script()
    rebuilds = []
    monkeypatch.setattr(script, "rebuild", lambda: rebuilds.append(fake.mode))
    fake.mode = mode
    assert script.main([]) == 2 and rebuilds == []  # without --repair: say what to run
    assert capsys.readouterr().out == (
        f"embedded model: the llama.cpp server crashed (SIGSEGV, signal 11) — rebuild it portably: {FIX}\n"
    )
    assert script.main(["--repair"]) == 2 and rebuilds == [mode]  # one rebuild, still crashing: fail
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("embedded model: the llama.cpp server crashed (SIGSEGV, signal 11); rebuilding")
    assert lines[1:] == ["embedded model: FAILED: the llama.cpp server still crashes after a portable rebuild "
                         "(SIGSEGV, signal 11)"]

    def rebuild_fixes_it():
        rebuilds.append("fixed")
        fake.mode = "answer"

    monkeypatch.setattr(script, "rebuild", rebuild_fixes_it)
    fake.mode = mode
    assert script.main(["--repair"]) == 0 and rebuilds[-1] == "fixed"
    assert re.fullmatch(r"embedded model: ok \(ready in \d+\.\d s, answered in \d+\.\d s\)",
                        capsys.readouterr().out.splitlines()[-1])


def test_the_setup_check_passes_on_an_answer_and_reports_other_failures(fake, monkeypatch, capsys):
    script = _check_script()
    monkeypatch.setattr(script, "rebuild", lambda: pytest.fail("a working build must not be rebuilt"))
    fake.mode = "answer"
    assert script.main(["--repair"]) == 0
    assert capsys.readouterr().out.startswith("embedded model: ok (ready in ")
    fake.mode = "exit-on-start"
    assert script.main(["--repair"]) == 1
    assert capsys.readouterr().out == (
        "embedded model: FAILED: the server exited with code 3 (error: failed to load model)\n"
    )
