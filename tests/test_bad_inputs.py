"""The matrix of bad inputs (issue 9): every fault, through every face that can meet it.

Each fault — server replies (401, 404, 429, 500, garbage, empty, cut, trickle, hang,
refused, a crashed server process), bad environment values, bad magic flags, bad files
on disk — must give exactly one clear line (provider, URL, what happened, a hint),
leave the kernel usable and the kernel-wide default as it was, and the next good call
must work. Faces: `nbllm.ask`, `nbllm.stream`, `%%llm` (streamed and not), `x = %llm`,
`nbllm.map` and `nbllm.compare`.

Every fault gets its own server (so a refused connection is a server really stopped,
and a hanging handler never blocks another test); `ollama` answers from the shared
good server, for `compare`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import nbllm_shell, reset_nbllm, run_cell
from fakeserver import FakeLLMServer

import nbllm
from nbllm.config import NbllmConfigWarning
from nbllm.errors import ModelError
from nbllm.registry import get_registry
from nbllm.session import Selection

KEY = "sk-test-abcdefgh12345678"
PROMPT = "hello one two three four five"
RETRIES = 3
TIMEOUT = 0.5


# ---- the faults --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One way a server can fail, and what the one line about it must say.

    `requests`: chat requests the server sees for one non-streamed call (`stream_requests`
    for a stream, when it differs); `kept`: a stream keeps the text that arrived first.
    """

    name: str
    behaviour: dict[str, Any]
    words: tuple[str, ...]
    requests: int
    retryable: bool
    hint: tuple[str, ...] = ()
    status: int | None = None
    retries: int = RETRIES
    stream_requests: int | None = None
    kept: bool = False
    refused: bool = False
    env: dict[str, str] = field(default_factory=dict)


FAULTS = [
    Fault("401", {"mode": "error", "status": 401}, ("HTTP 401", "refused the credentials"), 1, False,
          hint=("check LMSTUDIO_API_KEY",), status=401),
    Fault("404", {"mode": "error", "status": 404}, ("HTTP 404", "not found"), 1, False,
          hint=("LMSTUDIO_MODEL", "LMSTUDIO_BASE_URL"), status=404),
    Fault("429", {"fail_first": 999, "status": 429, "retry_after": 0.01}, ("HTTP 429", "rate limited"),
          1 + RETRIES, True, status=429),
    Fault("500", {"fail_first": 999, "status": 500, "retry_after": 0.01}, ("HTTP 500", "server error"),
          1 + RETRIES, True, status=500),
    # Not retryable, so one request; one retry allowed only bounds the time if it were retried.
    Fault("garbage", {"mode": "bad_json"}, ("malformed",), 1, False, retries=1),
    Fault("empty", {"mode": "empty"}, ("malformed",), 1, False, retries=1),
    Fault("cut", {"mode": "cut", "cut_after": 2}, ("cut off",), 2, True, retries=1, stream_requests=1, kept=True),
    Fault("trickle", {"mode": "trickle", "chunk_delay": 0.8}, (f"timed out after {TIMEOUT:g} s",), 1, True,
          hint=("LMSTUDIO_TIMEOUT",), retries=0, kept=True),
    Fault("hang", {"mode": "hang"}, (f"timed out after {TIMEOUT:g} s",), 1, True, hint=("LMSTUDIO_TIMEOUT",),
          retries=0),
    Fault("refused", {}, ("connection refused",), 0, False, refused=True),
]

FACES = ["ask", "stream", "cell", "cell-no-stream", "line", "map", "compare"]
STREAMED = {"stream", "cell"}


class Bench:
    """The faulty server behind the default provider `lmstudio`, and how to heal it."""

    def __init__(self, make_server: Callable[..., FakeLLMServer], monkeypatch: pytest.MonkeyPatch,
                 good: FakeLLMServer, retries: int = RETRIES, timeout: float = TIMEOUT, warm: bool = False,
                 **env: str):
        self.make_server = make_server
        self.server = make_server()
        self.good = good
        self.url = f"{self.server.url}/v1"
        for key, value in {
            "LMSTUDIO_BASE_URL": self.url, "NBLLM_PROVIDER": "lmstudio", "LMSTUDIO_MODEL": "fake-model",
            "LMSTUDIO_MAX_RETRIES": str(retries), "LMSTUDIO_TIMEOUT": f"{timeout:g}", "LMSTUDIO_API_KEY": KEY,
            "OLLAMA_BASE_URL": good.url, "OLLAMA_MODEL": "fake-model", "OLLAMA_MAX_RETRIES": "0",
            "NBLLM_HEALTH_TIMEOUT": "0.5", **env,
        }.items():
            monkeypatch.setenv(key, value)
        reset_nbllm()
        if warm:  # imports are paid before anything is timed; through ollama, so that no
            # keep-alive connection to this server outlives its stop() (a refused port is refused)
            assert nbllm.ask("warm up", provider="ollama").text == "Echo: warm up"

    def break_(self, fault: Fault) -> None:
        if fault.refused:
            self.server.stop()  # nothing listens on the port any more
        else:
            self.server.set(**fault.behaviour)

    def heal(self, fault: Fault) -> None:
        if fault.refused:
            self.server = self.make_server(port=self.server.port)
        else:
            self.server.reset()

    def requests(self) -> int:
        return len(self.server.chat_requests())


@pytest.fixture
def shell() -> Iterator[Any]:
    """An IPython shell with nbllm loaded (as test_llm_magic.py's `ip`)."""
    with nbllm_shell() as ip:
        yield ip


run = run_cell


def lines_of(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()]


def assert_clear_line(line: str, fault: Fault, url: str) -> None:
    """One line: the provider and its URL, what happened in the table's words, the hint."""
    assert "\n" not in line.strip() and "Traceback" not in line, line
    assert f"lmstudio at {url}" in line, line
    for word in fault.words + fault.hint:
        assert word in line, f"{word!r} missing from: {line}"
    assert KEY not in line


# ---- the matrix ----------------------------------------------------------------------------


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_gives_one_clear_line_and_leaves_the_default(fault: Fault, face: str, make_server, monkeypatch,
                                                          fake_server, request) -> None:
    bench = Bench(make_server, monkeypatch, fake_server, retries=fault.retries, warm=True, **fault.env)
    ip = request.getfixturevalue("shell") if face in ("cell", "cell-no-stream", "line") else None
    before = nbllm.current()
    assert before == Selection("lmstudio", None)
    bench.break_(fault)
    streamed = face in STREAMED
    started = time.perf_counter()
    kept = ""

    if face == "ask":
        with pytest.raises(ModelError) as info:
            nbllm.ask(PROMPT)
        error = info.value
        assert_clear_line(str(error), fault, bench.url)
        assert (error.retryable, error.status, error.provider) == (fault.retryable, fault.status, "lmstudio")
    elif face == "stream":
        stream = nbllm.stream(PROMPT)
        received: list[str] = []
        with pytest.raises(ModelError) as info:
            for delta in stream:
                received.append(delta)
        assert_clear_line(str(info.value), fault, bench.url)
        assert stream.answer is not None and stream.answer.text == "".join(received)
        assert stream.answer.error == str(info.value)
        kept = stream.answer.text
    elif face in ("cell", "cell-no-stream"):
        flag = "" if face == "cell" else " --no-stream"
        result, outputs, text = run(ip, f"%%llm -o out{flag}\n{PROMPT}")
        assert not result.success
        (line,) = lines_of(text)
        assert line.startswith("nbllm: ")
        assert_clear_line(line, fault, bench.url)
        if streamed and fault.kept:
            kept = outputs[-1]["data"]["text/markdown"]
            assert ip.user_ns["out"] == kept and line.endswith("the text that arrived is kept in out")
            assert outputs[-1]["metadata"]["nbllm"]["error"]
        else:
            assert outputs == [] and "out" not in ip.user_ns
        assert ip.run_cell("alive = 1 + 1").success and ip.user_ns["alive"] == 2  # the kernel goes on
    elif face == "line":
        result, outputs, text = run(ip, f"x = %llm {PROMPT}")
        assert not result.success and outputs == [] and "x" not in ip.user_ns
        (line,) = lines_of(text)
        assert line.startswith("nbllm: ")
        assert_clear_line(line, fault, bench.url)
    elif face == "map":
        series = nbllm.map(["a", "b"], "say {value}", progress=False)
        assert len(series) == 2 and not any(series.map(bool))
        for failed in series:
            assert isinstance(failed, nbllm.Failed) and failed.kind == "error"
            assert_clear_line(failed.error, fault, bench.url)
            assert failed.attempts == max(fault.requests, 1)
        assert bench.requests() == 2 * fault.requests
    elif face == "compare":
        table = nbllm.compare(PROMPT, providers=["lmstudio", "ollama"]).set_index("provider")
        assert_clear_line(table.loc["lmstudio", "error"], fault, bench.url)
        assert table.loc["lmstudio", "answer"] in ("", None)
        assert table.loc["ollama", "answer"] == f"Echo: {PROMPT}"  # one failure is a row, not the table's end
    elapsed = time.perf_counter() - started

    if face != "map":
        expected = fault.stream_requests if streamed and fault.stream_requests is not None else fault.requests
        assert bench.requests() == expected, f"{bench.requests()} chat requests, expected {expected}"
    if streamed and fault.kept:
        assert kept.startswith("Echo:") and len(kept) < len(f"Echo: {PROMPT}"), kept
    elif face in ("stream", "cell"):
        assert kept == ""
    if fault.refused:
        assert elapsed < 1.0, f"a refused connection took {elapsed:.2f} s: it must not be retried"

    assert nbllm.current() == before
    bench.heal(fault)
    if ip is not None:
        result, outputs, _ = run(ip, "%%llm --no-stream\nagain")
        assert result.success and outputs[-1]["data"]["text/plain"] == "Echo: again"
    else:
        assert nbllm.ask("again").text == "Echo: again"
    assert nbllm.current() == before


# ---- timeouts and Retry-After, measured ------------------------------------------------------


def test_a_trickling_reply_is_cut_at_the_timeout_as_a_whole(make_server, monkeypatch, fake_server):
    """8 bytes every 0.2 s never leaves the connection idle for 1 s, yet the reply takes ~8 s:
    the whole non-streamed attempt is bounded by LMSTUDIO_TIMEOUT=1."""
    bench = Bench(make_server, monkeypatch, fake_server, retries=0, timeout=1, warm=True)
    bench.server.set(mode="trickle", chunk_delay=0.2)
    started = time.perf_counter()
    with pytest.raises(ModelError) as info:
        nbllm.ask(PROMPT)
    elapsed = time.perf_counter() - started
    assert 0.9 <= elapsed < 1.5, f"took {elapsed:.2f} s"
    assert "timed out after 1 s" in str(info.value) and "LMSTUDIO_TIMEOUT" in str(info.value)


def test_a_stream_slower_than_the_timeout_fails_and_keeps_its_text(make_server, monkeypatch, fake_server):
    bench = Bench(make_server, monkeypatch, fake_server, retries=RETRIES, timeout=1, warm=True)
    bench.server.set(mode="trickle", chunk_delay=1.6, reply="first second third")
    stream = nbllm.stream(PROMPT)
    received: list[str] = []
    started = time.perf_counter()
    with pytest.raises(ModelError) as info:
        for delta in stream:
            received.append(delta)
    elapsed = time.perf_counter() - started
    assert received == ["first"] and stream.answer.text == "first"
    assert "timed out after 1 s" in str(info.value)
    assert 0.9 <= elapsed < 1.5, f"took {elapsed:.2f} s"
    assert bench.requests() == 1  # text had arrived: not retried


@pytest.mark.parametrize("face", ["ask", "stream", "map"])
def test_429_waits_what_retry_after_says(face, make_server, monkeypatch, fake_server):
    """Two 429s then an answer: a short Retry-After is faster than the backoff would be
    (≥ 0.75 s for two retries), a long one is waited for."""
    bench = Bench(make_server, monkeypatch, fake_server, retries=RETRIES, warm=True)

    def timed() -> float:
        started = time.perf_counter()
        if face == "ask":
            assert nbllm.ask("again").text == "Echo: again"
        elif face == "stream":
            assert "".join(nbllm.stream("again")) == "Echo: again"
        else:
            assert list(nbllm.map(["again"], "{value}", progress=False)) == ["Echo: again"]
        return time.perf_counter() - started

    bench.server.set(fail_first=2, status=429, retry_after=0.02)
    assert timed() < 0.5
    assert bench.requests() == 3
    bench.server.reset()
    bench.server.set(fail_first=2, status=429, retry_after=0.4)
    assert timed() >= 0.8
    assert bench.requests() == 3


def test_a_refused_connection_names_the_variable_that_points_there(make_server, monkeypatch, fake_server):
    """LMSTUDIO_BASE_URL points at a port where nothing listens: the hint must say to check it,
    not to start LM Studio "on port 1234" (which is not where nbllm looked)."""
    bench = Bench(make_server, monkeypatch, fake_server)
    bench.server.stop()
    with pytest.raises(ModelError) as info:
        nbllm.ask(PROMPT)
    line = str(info.value)
    assert "connection refused" in line and bench.url in line
    assert "LMSTUDIO_BASE_URL" in line, line


# ---- a server process that dies mid-request ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("face", ["ask", "stream", "cell"])
def test_a_crashed_server_is_one_line_and_the_next_server_works(face, make_server, monkeypatch, fake_server,
                                                               request):
    """A real server process killed (SIGKILL) while it holds the request."""
    port = _free_port()
    script = Path(__file__).with_name("fakeserver.py")
    process = subprocess.Popen([sys.executable, str(script), "--port", str(port), "--latency", "10"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == f"http://127.0.0.1:{port}"
        url = f"http://127.0.0.1:{port}/v1"
        Bench(make_server, monkeypatch, fake_server, retries=0, timeout=5, LMSTUDIO_BASE_URL=url)
        ip = request.getfixturevalue("shell") if face == "cell" else None
        before = nbllm.current()
        threading.Timer(0.4, process.kill).start()
        crash = Fault("crash", {}, ("cut off",), 1, True)
        if face == "ask":
            with pytest.raises(ModelError) as info:
                nbllm.ask(PROMPT)
            assert_clear_line(str(info.value), crash, url)
        elif face == "stream":
            with pytest.raises(ModelError) as info:
                list(nbllm.stream(PROMPT))
            assert_clear_line(str(info.value), crash, url)
        else:
            result, outputs, text = run(ip, f"%%llm\n{PROMPT}")
            assert not result.success and outputs == []
            (line,) = lines_of(text)
            assert_clear_line(line, crash, url)
        assert process.wait(5) is not None
        assert nbllm.current() == before
        make_server(port=port)  # a server is back on the same port
        assert nbllm.ask("again").text == "Echo: again"
    finally:
        process.kill()
        process.wait(5)


# ---- bad environment values -----------------------------------------------------------------


def config_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)]


@pytest.mark.parametrize("variable, value, check", [
    ("NBLLM_LOG", "maybe", lambda: nbllm.history.enabled and len(nbllm.history()) == 2),
    ("LMSTUDIO_TIMEOUT", "soon", lambda: get_registry().settings("lmstudio").timeout == 30.0),
    ("LMSTUDIO_TEMPERATURE", "hot", lambda: get_registry().settings("lmstudio").temperature == 0.7),
    ("NBLLM_PROVIDER", "nope", lambda: nbllm.current() == Selection("auto", None)),
    ("LMSTUDIO_MAX_RETRIES", "lots", lambda: get_registry().settings("lmstudio").max_retries == 3),
    ("NBLLM_CACHE_MODE", "sometimes", lambda: nbllm.cache() == "off" and len(nbllm.cache) == 0),
])
def test_a_bad_environment_value_is_one_warning_and_calls_work(variable, value, check, make_server, monkeypatch,
                                                               fake_server):
    bench = Bench(make_server, monkeypatch, fake_server, **{variable: value})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answer = nbllm.ask("hi")
        assert nbllm.ask("hi again").text == "Echo: hi again"  # said once, not on every call
    assert answer.text == "Echo: hi" and answer.provider == "lmstudio"
    (message,) = config_warnings(caught)
    assert variable in message and repr(value) in message and "\n" not in message
    assert "using" in message  # says what is used instead
    assert check()
    if variable == "LMSTUDIO_TEMPERATURE":
        assert bench.server.chat_requests()[-1]["body"]["temperature"] == 0.7


# ---- bad flags ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cell, words", [
    ("%%llm -t 5\nhi", ("temperature", "5")),
    ("%%llm -p nope\nhi", ("'nope'", "lmstudio")),
    ("%%llm --max-tokens 0\nhi", ("max_tokens", "0")),
    ("%%llm --timeout 0\nhi", ("timeout", "0")),
    ("x = %llm -t 5 hi", ("temperature", "5")),
])
def test_a_bad_flag_is_one_line_nothing_is_sent_and_the_next_cell_works(cell, words, shell, make_server,
                                                                       monkeypatch, fake_server):
    bench = Bench(make_server, monkeypatch, fake_server)
    before = nbllm.current()
    result, outputs, text = run(shell, cell)
    assert not result.success and outputs == []
    (line,) = lines_of(text)
    assert line.startswith("nbllm: ") and "Traceback" not in text, text
    for word in words:
        assert word in line, line
    assert bench.requests() == 0
    assert nbllm.current() == before
    result, outputs, _ = run(shell, "%%llm --no-stream\nnext")
    assert result.success and outputs[-1]["data"]["text/plain"] == "Echo: next"


# ---- bad files on disk ----------------------------------------------------------------------------


@pytest.mark.parametrize("content, words", [
    (b"LMSTUDIO_MODEL=fake-model\n\xff\xfe broken\n", ("not UTF-8", "0xff")),
    (b"LMSTUDIO_TEMPERATURE=hot\n", ("LMSTUDIO_TEMPERATURE", "'hot'", "from .env")),
], ids=["byte-0xff", "bad-value"])
def test_a_bad_dotenv_file_is_one_warning_and_calls_work(content, words, make_server, monkeypatch, fake_server,
                                                         tmp_path):
    (tmp_path / ".env").write_bytes(content)  # the working directory of the test
    Bench(make_server, monkeypatch, fake_server)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert nbllm.ask("hi").text == "Echo: hi"
        assert nbllm.ask("hi").text == "Echo: hi"
    (message,) = config_warnings(caught)
    for word in words:
        assert word in message, message
    assert nbllm.current() == Selection("lmstudio", None)


@pytest.mark.parametrize("content, words", [
    ('{"disabled": "ollama", "default": {"provider": 5}}', ('"disabled"', '"default"')),
    ('["lmstudio"]', ("a list",)),
    ('{"default": {"provider": "lmstudio", "model": 7}}', ('"model"',)),
    ("{not json", ("not valid JSON",)),
], ids=["wrong-types", "a-list", "model-number", "not-json"])
def test_a_user_config_with_wrong_types_is_one_warning_and_calls_work(content, words, make_server, monkeypatch,
                                                                      fake_server, tmp_path):
    config = tmp_path / "nbllm-config.json"  # NBLLM_CONFIG (conftest)
    config.write_text(content)
    Bench(make_server, monkeypatch, fake_server)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert nbllm.ask("hi").text == "Echo: hi"
        assert nbllm.compare("hi", providers=["lmstudio", "ollama"])["error"].isna().all()
    (message,) = config_warnings(caught)
    for word in words:
        assert word in message, message
    assert str(config) in message
    assert nbllm.current() == Selection("lmstudio", None)


def test_an_unwritable_history_path_is_one_warning_and_calls_work(make_server, monkeypatch, fake_server, tmp_path,
                                                                  caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    Bench(make_server, monkeypatch, fake_server, NBLLM_HISTORY=str(blocker / "history.sqlite"))
    with caplog.at_level(logging.WARNING, logger="nbllm"):
        assert nbllm.ask("one").text == "Echo: one"
        nbllm.history.flush()
        assert "".join(nbllm.stream("two")) == "Echo: two"
        assert list(nbllm.map(["three", "four"], "{value}", progress=False)) == ["Echo: three", "Echo: four"]
        nbllm.history.flush()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "nbllm"]
    assert "call log" in line and str(blocker) in line and "NBLLM_HISTORY" in line and "\n" not in line


# ---- one bad prompt among good ones -----------------------------------------------------------------


def test_a_lone_surrogate_in_one_prompt_keeps_every_other_row(make_server, monkeypatch, fake_server, caplog):
    bench = Bench(make_server, monkeypatch, fake_server)
    with caplog.at_level(logging.WARNING, logger="nbllm"):
        result = nbllm.map(["ok", "bad \ud800"], "{value}", concurrency=2, progress=False)
        history = nbllm.history(None)
    assert result[0] == "Echo: ok"
    assert len(history) == 2, history
    rows = {row["prompt"].split(" ")[0]: row for _, row in history.iterrows()}
    assert rows["ok"]["outcome"] == "ok" and rows["ok"]["answer"] == "Echo: ok"
    assert rows["bad"]["prompt"].startswith("bad ") and "\ud800" not in rows["bad"]["prompt"]
    if isinstance(result[1], nbllm.Failed):
        assert rows["bad"]["outcome"] == "error" and rows["bad"]["error"]
    for record in caplog.records:
        assert "NBLLM_HISTORY" not in record.getMessage() and "NBLLM_LOG" not in record.getMessage()
    assert bench.requests() >= 1


def test_a_lone_surrogate_is_logged_as_one_replacement_character(make_server, monkeypatch, fake_server):
    """calllog.clean's docstring: "a lone surrogate … becomes U+FFFD" — one, not three."""
    Bench(make_server, monkeypatch, fake_server)
    nbllm.map(["bad \ud800 end"], "{value}", progress=False)
    (prompt,) = list(nbllm.history(None)["prompt"])
    assert prompt == "bad \ufffd end"


# ---- nothing in a magic's line is evaluated -----------------------------------------------------------


def test_braces_in_a_line_magic_run_nothing_and_are_sent_verbatim(shell, make_server, monkeypatch, fake_server,
                                                                 tmp_path):
    bench = Bench(make_server, monkeypatch, fake_server)
    marker = tmp_path / "pwned-nbllm"
    expression = f"{{__import__('os').system('touch {marker}')}}"
    result, _, _ = run(shell, f"reply = %llm explain {expression}")
    assert result.success
    assert not marker.exists()
    assert bench.server.chat_requests()[-1]["body"]["messages"][-1]["content"] == f"explain {expression}"
    assert shell.user_ns["reply"] == f"Echo: explain {expression}"


def test_braces_in_a_cell_magic_options_line_run_nothing(shell, make_server, monkeypatch, fake_server, tmp_path):
    bench = Bench(make_server, monkeypatch, fake_server)
    marker = tmp_path / "pwned-nbllm"
    expression = f"{{__import__('os').system('touch {marker}')}}"
    result, _, text = run(shell, f'%%llm --no-stream -s "{expression}"\nhi {expression}')
    assert result.success, text
    assert not marker.exists()
    messages = bench.server.chat_requests()[-1]["body"]["messages"]
    assert messages[0] == {"role": "system", "content": expression}
    assert messages[-1] == {"role": "user", "content": f"hi {expression}"}


def test_dollar_names_are_sent_literally(shell, make_server, monkeypatch, fake_server):
    bench = Bench(make_server, monkeypatch, fake_server)
    shell.user_ns["HOME"] = "/should/not/appear"
    result, _, _ = run(shell, "reply = %llm $HOME")
    assert result.success
    assert bench.server.chat_requests()[-1]["body"]["messages"][-1]["content"] == "$HOME"
    result, _, _ = run(shell, "%%llm --no-stream -s $HOME\nhi")
    assert result.success
    assert bench.server.chat_requests()[-1]["body"]["messages"][0] == {"role": "system", "content": "$HOME"}
    assert os.environ["HOME"] not in json.dumps(bench.server.chat_requests()[-1]["body"])
