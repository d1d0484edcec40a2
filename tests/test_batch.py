"""nbllm.map against real local test servers: order, alignment, failures kept as values,
retries with Retry-After, Ctrl-C, and a 1,000-prompt fault run."""

from __future__ import annotations

import asyncio
import signal
import threading

import pandas as pd
import pytest

import nbllm
from nbllm import batch
from nbllm.batch import Failed, MapInterrupted, failures, render
from nbllm import retry
from nbllm.retry import retry_delay
from nbllm.errors import ConfigurationError

from conftest import execute_in_kernel, reset_nbllm
from fakeserver import FakeLLMServer


@pytest.fixture
def lms(fake_server, monkeypatch):
    """lmstudio → the session's fake server, quick to give up on a hung request."""
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    monkeypatch.setenv("LMSTUDIO_TIMEOUT", "2")
    reset_nbllm()
    return fake_server


def sent_prompts(server) -> list[str]:
    return [r["body"]["messages"][-1]["content"] for r in server.chat_requests()]


def fault_schedule(requests: int, **behaviour) -> list[int | str | None]:
    """What the server's seeded fault schedule gives its first `requests` chat requests, in
    arrival order (429, 500, "hang" or None): the same RNG, drawn once per request."""
    schedule = FakeLLMServer(**behaviour)  # never started: only its seeded draws are used
    try:
        return [schedule.random_fault() for _ in range(requests)]
    finally:
        schedule.httpd.server_close()


# ---- templates -------------------------------------------------------------------------------


def test_render_inserts_the_value_once_and_never_parses_it():
    assert render("Summarise: {value}", "x") == "Summarise: x"
    assert render("Q: {}", 3) == "Q: 3"
    assert render('JSON {{"k": {value}}} {other}', "{value} {}") == 'JSON {"k": {value} {}} {other}'
    assert render("{value} and {value}", "a") == "a and a"


def test_template_without_a_placeholder_and_other_bad_input(lms):
    with pytest.raises(ConfigurationError, match="placeholder"):
        nbllm.map(["a"], "no slot here", provider="lmstudio")
    with pytest.raises(ConfigurationError, match="placeholder"):
        nbllm.map(["a"], "escaped {{value}} only", provider="lmstudio")
    with pytest.raises(ConfigurationError, match="concurrency"):
        nbllm.map(["a"], "{}", provider="lmstudio", concurrency=0)
    with pytest.raises(ConfigurationError, match="retries"):
        nbllm.map(["a"], "{}", provider="lmstudio", retries=-1)
    with pytest.raises(ConfigurationError, match="list or a pandas Series"):
        nbllm.map("abc", "{}", provider="lmstudio")
    with pytest.raises(ConfigurationError, match="unknown option"):
        nbllm.map(["a"], "{}", provider="lmstudio", temprature=1)
    assert lms.chat_requests() == []


# ---- results ------------------------------------------------------------------------------------


def test_list_gives_series_in_input_order(lms):
    values = [f"item {i}" for i in range(20)]
    result = nbllm.map(values, "Q: {value}", provider="lmstudio", concurrency=5, progress=False)
    assert isinstance(result, pd.Series) and isinstance(result.index, pd.RangeIndex)
    assert list(result) == [f"Echo: Q: item {i}" for i in range(20)]
    assert result.attrs["nbllm"]["ok"] == 20 and result.attrs["nbllm"]["failed"] == 0
    assert result.attrs["nbllm"]["output_tokens"] == 20 * 4
    assert sorted(sent_prompts(lms)) == sorted(f"Q: item {i}" for i in range(20))


def test_series_keeps_its_index(lms):
    values = pd.Series(["b", "a", "c"], index=["z", "x", "y"])
    result = nbllm.map(values, "{}", provider="lmstudio", progress=False)
    assert list(result.index) == ["z", "x", "y"]
    assert result.to_dict() == {"z": "Echo: b", "x": "Echo: a", "y": "Echo: c"}


def test_values_with_braces_are_sent_exactly(lms):
    code = 'def f(): return {"a": {value}} # {}'
    result = nbllm.map([code], "Explain:\n{value}", provider="lmstudio", progress=False)
    assert sent_prompts(lms) == ["Explain:\n" + code]
    assert result[0] == "Echo: Explain:\n" + code


def test_missing_inputs_are_marked_and_not_sent(lms):
    result = nbllm.map(pd.Series(["a", None, float("nan"), "b"]), "{}", provider="lmstudio", progress=False)
    assert result[0] == "Echo: a" and result[3] == "Echo: b"
    assert isinstance(result[1], Failed) and result[1].kind == "missing" and isinstance(result[2], Failed)
    assert sorted(sent_prompts(lms)) == ["a", "b"]


def test_empty_input(lms):
    assert len(nbllm.map([], "{}", provider="lmstudio")) == 0


def test_uses_the_kernel_default(lms):
    nbllm.use("lmstudio")
    assert list(nbllm.map(["x"], "{}", progress=False)) == ["Echo: x"]


def test_progress_bar_counts_every_input(lms, capsys):
    nbllm.map(list(range(7)), "{}", provider="lmstudio")
    err = capsys.readouterr().err
    assert "nbllm.map" in err and "7/7" in err


# ---- failures and retries -------------------------------------------------------------------


def test_a_failure_is_a_value_and_the_rest_go_on(lms):
    lms.set(fail_rate=0.5, seed=3)
    expected = sum(fault is not None for fault in fault_schedule(40, fail_rate=0.5, seed=3))
    assert 0 < expected < 40  # the schedule has both kinds of answer
    result = nbllm.map([f"p{i}" for i in range(40)], "{}", provider="lmstudio", retries=0, progress=False)
    failed = [i for i, v in enumerate(result) if isinstance(v, Failed)]
    assert len(failed) == expected and len(lms.chat_requests()) == 40
    for i, value in enumerate(result):
        assert isinstance(value, Failed) or value == f"Echo: p{i}"
    assert all(("HTTP 500" in result[i].error or "HTTP 429" in result[i].error) for i in failed)
    view = failures(result)
    assert list(view.index) == failed and set(view["kind"]) == {"error"}
    assert not result[failed[0]] and str(result[failed[0]]).startswith("<failed: lmstudio")


def test_map_turns_the_sdk_retries_off_and_retries_itself(lms, monkeypatch):
    lms.set(mode="error", status=500)
    delays: list[float] = []
    real = retry.retry_delay
    monkeypatch.setattr(retry, "retry_delay", lambda *a: delays.append(real(*a)) or delays[-1])
    result = nbllm.map(["x"], "{}", provider="lmstudio", retries=2, backoff=0.01, progress=False)
    assert isinstance(result[0], Failed) and result[0].attempts == 3
    assert len(lms.chat_requests()) == 3  # not 3 × (1 + LMSTUDIO_MAX_RETRIES)
    assert len(delays) == 2 and all(0 < d <= 0.04 for d in delays)


def test_retries_default_to_the_providers_max_retries(lms, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "1")
    reset_nbllm()
    lms.set(mode="error", status=503)
    result = nbllm.map(["x"], "{}", provider="lmstudio", backoff=0.01, progress=False)
    assert result[0].attempts == 2 and len(lms.chat_requests()) == 2


def test_retry_after_is_honoured(lms, monkeypatch):
    lms.set(fail_first=2, status=429, retry_after=0.2)
    waits: list[float] = []
    real_sleep = asyncio.sleep
    monkeypatch.setattr(batch.asyncio, "sleep", lambda s: waits.append(s) or real_sleep(s))
    result = nbllm.map(["x"], "{}", provider="lmstudio", retries=3, backoff=5, progress=False)
    assert list(result) == ["Echo: x"]
    assert waits == [0.2, 0.2]  # what the server asked, not the 5 s backoff


def test_client_errors_are_not_retried(lms):
    lms.set(mode="error", status=400)
    result = nbllm.map(["x"], "{}", provider="lmstudio", retries=3, progress=False)
    assert result[0].attempts == 1 and "HTTP 400" in result[0].error and len(lms.chat_requests()) == 1


def test_retry_delay_policy():
    from pydantic_ai.exceptions import ModelHTTPError, ModelTimeoutError

    def http(status: int, headers: dict | None = None) -> Exception:
        return ModelHTTPError(status, "m", headers=headers)

    assert retry_delay(http(429, {"retry-after": "7"}), 0, 0.5, 60) == 7
    assert retry_delay(http(429, {"retry-after": "7000"}), 0, 0.5, 60) == 60  # bounded
    assert retry_delay(http(400), 0, 0.5, 60) is None
    assert retry_delay(http(401), 0, 0.5, 60) is None
    assert 0.25 <= retry_delay(http(502), 0, 0.5, 60) <= 0.75
    assert 1 <= retry_delay(http(500), 2, 0.5, 60) <= 3  # doubles per attempt, with jitter
    assert retry_delay(ModelTimeoutError("m", "timed out"), 0, 0.5, 60) is not None
    assert retry_delay(ValueError("bad json"), 0, 0.5, 60) is None
    # A ModelError carries its facts; nothing reads the exception chain to decide.
    assert retry_delay(nbllm.ModelError("lmstudio", "HTTP 503", retryable=True), 0, 0.5, 60) is not None
    assert retry_delay(nbllm.ModelError("lmstudio", "HTTP 429", retryable=True, retry_after=3), 0, 0.5, 60) == 3
    try:
        try:
            raise http(503)
        except Exception:
            raise nbllm.ModelError("lmstudio", "HTTP 400 after all") from None
    except nbllm.ModelError as wrapped:
        assert retry_delay(wrapped, 0, 0.5, 60) is None  # a 503 hidden in __context__ is not read


def test_a_thousand_prompts_against_a_faulty_server(make_server, monkeypatch):
    """~20% of requests fail (500/429), ~5% never answer: every input still gets a
    result or an error, in order, and nothing escapes as an exception."""
    faults = dict(fail_rate=0.2, hang_rate=0.05, seed=7)
    server = make_server(retry_after=0.01, **faults)
    monkeypatch.setenv("LMSTUDIO_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("LMSTUDIO_TIMEOUT", "2")  # generous: a good answer must never time out under load
    reset_nbllm()
    values = pd.Series([f"prompt {i}" for i in range(1000)], index=range(5000, 6000))
    result = nbllm.map(values, "{value}", provider="lmstudio", concurrency=64, retries=2, backoff=0.01,
                       progress=False)
    assert len(result) == 1000 and list(result.index) == list(values.index)
    ok = failed = 0
    for position, value in enumerate(result):
        if isinstance(value, Failed):
            failed += 1
            assert value.kind == "error" and value.error and value.attempts == 3  # every fault is retried
        else:
            ok += 1
            assert value == f"Echo: prompt {position}"
    assert ok + failed == 1000
    # Each request drew one fault (or none) from the seeded schedule. Every input that
    # answered was answered by exactly one good request, so: requests - faults == answers.
    sent = len(server.chat_requests())
    drawn = fault_schedule(sent, **faults)
    assert sent - sum(fault is not None for fault in drawn) == ok
    assert sent > 1000 and "hang" in drawn and 429 in drawn and 500 in drawn  # the faults happened and were retried
    stats = result.attrs["nbllm"]
    assert (stats["ok"], stats["failed"], stats["interrupted"]) == (ok, failed, 0)


def test_without_retries_the_faults_show_as_values(make_server, monkeypatch):
    faults = dict(fail_rate=0.2, hang_rate=0.05, seed=11)
    server = make_server(**faults)
    monkeypatch.setenv("LMSTUDIO_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("LMSTUDIO_TIMEOUT", "2")  # generous: a good answer must never time out under load
    reset_nbllm()
    result = nbllm.map([str(i) for i in range(400)], "{}", provider="lmstudio", concurrency=64, retries=0,
                       progress=False)
    drawn = fault_schedule(400, **faults)  # one request per input: exactly these faults
    errors = [v.error for v in result if isinstance(v, Failed)]
    assert len(server.chat_requests()) == 400
    assert len(errors) == sum(fault is not None for fault in drawn)
    assert sum("timed out" in e for e in errors) == drawn.count("hang") > 0
    assert sum("HTTP 429" in e for e in errors) == drawn.count(429) > 0
    assert sum("HTTP 500" in e for e in errors) == drawn.count(500) > 0
    for i, value in enumerate(result):
        assert isinstance(value, Failed) or value == f"Echo: {i}"


# ---- interruption --------------------------------------------------------------------------


def test_ctrl_c_keeps_what_finished(lms):
    lms.set(latency=0.1)
    main = threading.main_thread().ident
    timer = threading.Timer(0.6, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    with pytest.raises(MapInterrupted) as info:
        nbllm.map([f"v{i}" for i in range(40)], "{}", provider="lmstudio", concurrency=2, progress=False)
    partial = info.value.partial
    assert isinstance(info.value, KeyboardInterrupt) and batch.last_partial() is partial
    assert len(partial) == 40
    done = [i for i, v in enumerate(partial) if isinstance(v, str)]
    assert 0 < len(done) < 40
    for i, value in enumerate(partial):
        assert value == f"Echo: v{i}" or (isinstance(value, Failed) and value.kind == "interrupted")
    assert partial.attrs["nbllm"]["was_interrupted"] and "finished" in str(info.value)
    lms.set(latency=0)
    assert nbllm.ask("still alive?").text == "Echo: still alive?"  # the loop is usable afterwards


def test_map_async(lms):
    result = asyncio.run(nbllm.map_async(["a", "b"], "{}", provider="lmstudio", progress=False))
    assert list(result) == ["Echo: a", "Echo: b"]


def test_a_cancelled_map_async_keeps_what_finished(lms):
    lms.set(latency=0.05)

    async def cancel_midway():
        task = asyncio.ensure_future(nbllm.map_async([f"v{i}" for i in range(40)], "{}", provider="lmstudio",
                                                     concurrency=2, progress=False))
        while len(lms.chat_requests()) < 6:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    partial = batch.last_partial()
    assert partial is not None and len(partial) == 40 and partial.attrs["nbllm"]["was_interrupted"]
    done = [i for i, v in enumerate(partial) if isinstance(v, str)]
    assert 0 < len(done) < 40
    assert all(partial[i] == f"Echo: v{i}" for i in done)


def test_a_saved_notebook_keeps_the_final_progress(tmp_path):
    """tqdm's notebook bar stores its text when displayed (0/3); the output a saved
    notebook keeps must show where map ended, with map's results unchanged."""
    import os

    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from conftest import _PROVIDER_PREFIXES

    env = {k: v for k, v in os.environ.items() if not k.startswith(_PROVIDER_PREFIXES)}
    with FakeLLMServer() as server:
        env.update(LMSTUDIO_BASE_URL=server.url + "/v1", LMSTUDIO_MAX_RETRIES="0", LMSTUDIO_TIMEOUT="5",
                   NBLLM_CONFIG=str(tmp_path / "config.json"), NBLLM_HISTORY=str(tmp_path / "h.sqlite"),
                   NBLLM_CACHE=str(tmp_path / "c.sqlite"))
        nb = new_notebook(cells=[new_code_cell(
            "import nbllm\nresult = nbllm.map(['a', 'b', 'c'], 'Q: {value}', provider='lmstudio')\nprint(list(result))"
        )])
        execute_in_kernel(nb, env, tmp_path)
    nbformat.validate(nb)
    outputs = nb.cells[0].outputs
    bars = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(bars) == 1, outputs
    text = bars[0]["data"]["text/plain"]
    assert "nbllm.map" in text and "3/3" in text and "100%" in text, text
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "['Echo: Q: a', 'Echo: Q: b', 'Echo: Q: c']" in printed


# ---- what a map keeps per prompt (issue 14) ---------------------------------------------------------


def test_a_map_keeps_no_answer_object_once_it_is_counted(lms, monkeypatch):
    """Each result keeps its text, tokens, cost and attempts, never the whole Answer (pydantic-ai messages,
    the request): when each answer arrives, the earlier ones are already gone."""
    import gc
    import weakref

    from nbllm import pipeline

    seen: list[weakref.ref] = []
    alive: list[int] = []
    real = pipeline.answer

    async def spied(call, target=None):
        answer = await real(call, target)
        gc.collect()
        alive.append(sum(ref() is not None for ref in seen))
        seen.append(weakref.ref(answer))
        return answer

    monkeypatch.setattr(pipeline, "answer", spied)
    result = nbllm.map([f"p{i}" for i in range(20)], "{}", provider="lmstudio", concurrency=1, progress=False)
    assert len(alive) == 20 and max(alive) <= 1  # (kept: one for 19 answers, before)
    assert list(result) == [f"Echo: p{i}" for i in range(20)]
    info = result.attrs["nbllm"]
    assert info["ok"] == 20 and info["input_tokens"] > 0 and info["output_tokens"] > 0 and info["cost_usd"] == 0.0
