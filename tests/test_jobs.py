"""Durable jobs (`nbllm.map(..., job=...)`), budgets and dry runs of map, against the real local test server.

The kill -9 test runs a map in a real Jupyter kernel, kills the kernel at about half way and
runs the same cell in a new kernel: every input answered exactly once at the server.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import BaseModel

import nbllm
from nbllm import jobstore
from nbllm.batch import Failed, MapInterrupted
from nbllm.errors import ConfigurationError

from conftest import _PROVIDER_PREFIXES, reset_nbllm
from fakeserver import FakeLLMServer

SECRET = "sk-jobs-secret-0123456789abcdef"


@pytest.fixture
def lms(fake_server, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    monkeypatch.setenv("LMSTUDIO_TIMEOUT", "5")
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    reset_nbllm()
    return fake_server


def sent(server: FakeLLMServer, since: int = 0) -> list[str]:
    """The user prompts of the chat requests the server received (from request number `since` on)."""
    return [r["body"]["messages"][-1]["content"] for r in server.chat_requests()[since:]]


def run(values: Any, template: str = "Q {value}", **options: Any) -> Any:
    return nbllm.map(values, template, provider="lmstudio", progress=False, **options)


def same_attrs(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Two results' attrs agree on everything but time and where the rows came from."""
    drop = ("elapsed_s", "job")
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


# ---- resuming ----------------------------------------------------------------------------------


def test_a_finished_job_is_returned_from_the_store_without_a_request(lms):
    values = ["a", "b", "a", "c"]  # a repeated prompt is an input of its own
    first = run(values, job="j")
    assert list(first) == ["Echo: Q a", "Echo: Q b", "Echo: Q a", "Echo: Q c"]
    assert sorted(sent(lms)) == ["Q a", "Q a", "Q b", "Q c"]
    lms.set(mode="error", status=500)  # a request now would fail: the second run must not make one
    again = run(values, job="j")
    assert len(lms.chat_requests()) == 4
    pd.testing.assert_series_equal(again, first)
    same_attrs(again.attrs["nbllm"], first.attrs["nbllm"])
    assert first.attrs["nbllm"]["input_tokens"] == 28 and again.attrs["nbllm"]["job"]["stored"] == 4


def test_interrupted_rows_are_sent_again_and_nothing_else(lms):
    lms.set(latency=0.1)
    values = [f"v{i}" for i in range(30)]
    main = threading.main_thread().ident
    timer = threading.Timer(0.55, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    with pytest.raises(MapInterrupted) as info:
        run(values, job="ctrl-c", concurrency=2)
    partial = info.value.partial
    finished = [v for v, result in zip(values, partial) if isinstance(result, str)]
    assert 0 < len(finished) < 30
    before = len(lms.chat_requests())
    lms.set(latency=0)
    result = run(values, job="ctrl-c", concurrency=2)
    assert list(result) == [f"Echo: Q {v}" for v in values]
    assert sorted(sent(lms, before)) == sorted(f"Q {v}" for v in values if v not in finished)
    assert result.attrs["nbllm"]["job"]["stored"] == len(finished)


def test_map_async_resumes_too(lms):
    import asyncio

    asyncio.run(nbllm.map_async(["a", "b"], "Q {value}", provider="lmstudio", progress=False, job="async"))
    result = asyncio.run(nbllm.map_async(["a", "b", "c"], "Q {value}", provider="lmstudio", progress=False,
                                         job="async"))
    assert list(result) == ["Echo: Q a", "Echo: Q b", "Echo: Q c"]
    assert sorted(sent(lms)) == ["Q a", "Q b", "Q c"]  # each once (the first two arrive in either order)


def test_appended_changed_removed_and_reordered_rows(lms):
    frame = pd.DataFrame({"title": ["t1", "t2", "t3"], "body": ["b1", "b2", "b3"]}, index=[10, 11, 12])
    template = "{title}: {body}"
    run(frame, template, job="rows")
    assert len(lms.chat_requests()) == 3
    grown = pd.concat([frame, pd.DataFrame({"title": ["t4", "t5"], "body": ["b4", "b5"]}, index=[13, 14])])
    grown.loc[11, "body"] = "b2 edited"  # a changed input is a new input
    result = run(grown, template, job="rows")
    assert sorted(sent(lms, 3)) == ["t2: b2 edited", "t4: b4", "t5: b5"]
    assert list(result.index) == [10, 11, 12, 13, 14]
    assert list(result) == ["Echo: t1: b1", "Echo: t2: b2 edited", "Echo: t3: b3", "Echo: t4: b4", "Echo: t5: b5"]
    shuffled = grown.drop(index=12).iloc[::-1]  # removed rows are not returned; order is the input's
    again = run(shuffled, template, job="rows")
    assert len(lms.chat_requests()) == 6
    assert list(again.index) == [14, 13, 11, 10]
    assert list(again) == ["Echo: t5: b5", "Echo: t4: b4", "Echo: t2: b2 edited", "Echo: t1: b1"]
    listed = nbllm.jobs().loc["rows"]
    assert (listed["rows"], listed["done"], listed["left"]) == (4, 4, 0)
    # the removed row's result is kept: it comes back without a request
    run(grown, template, job="rows")
    assert len(lms.chat_requests()) == 6


class Item(BaseModel):
    name: str
    price: int


def test_a_typed_job_comes_back_as_the_same_frame(lms):
    lms.set(reply='{"name": "x", "price": 3}')
    first = run(["a", None, "b"], output_type=Item, job="typed")
    assert len(lms.chat_requests()) == 2
    again = run(["a", None, "b"], output_type=Item, job="typed")
    assert len(lms.chat_requests()) == 2
    pd.testing.assert_frame_equal(again, first)  # values and dtypes (Int64, string, _error) alike
    assert str(again["price"].dtype) == "Int64" and again.loc[1, "_error"].startswith("the input is missing")
    same_attrs(again.attrs["nbllm"], first.attrs["nbllm"])
    with pytest.raises(ConfigurationError) as info:
        run(["a", None, "b"], job="typed")
    message = str(info.value)
    assert "\n" not in message and "another output type (typed → text)" in message and "restart=True" in message


def test_restart_sends_everything_again(lms):
    run(["a", "b"], job="r")
    result = run(["a", "b"], "Other {value}", job="r", restart=True)
    assert sorted(sent(lms)[:2]) == ["Q a", "Q b"] and sorted(sent(lms)[2:]) == ["Other a", "Other b"]
    assert list(result) == ["Echo: Other a", "Echo: Other b"]
    assert nbllm.jobs().loc["r", "done"] == 2


def test_a_changed_template_model_or_provider_is_refused_in_one_line(lms, monkeypatch):
    run(["a"], job="same")
    with pytest.raises(ConfigurationError) as info:
        run(["a"], "Summarise {value}", job="same")
    message = str(info.value)
    assert message == ("Job 'same' was made with another template ('Q {value}' → 'Summarise {value}'): pass "
                       "restart=True to start it over (1 stored results are dropped), or give the job a new name.")
    with pytest.raises(ConfigurationError, match=r"another model \('local-model' → 'other'\)"):
        run(["a"], job="same", model="other")
    with pytest.raises(ConfigurationError, match=r"another system prompt and max_tokens \(system prompt None → "
                                                 r"'be brief'; max_tokens \d+ → 7\)"):
        run(["a"], job="same", system="be brief", max_tokens=7)
    monkeypatch.setenv("OLLAMA_BASE_URL", lms.url)
    reset_nbllm()
    with pytest.raises(ConfigurationError, match="another provider and model"):
        nbllm.map(["a"], "Q {value}", provider="ollama", progress=False, job="same")
    assert len(lms.chat_requests()) == 1  # nothing was sent by the refused runs
    with pytest.raises(ConfigurationError, match="restart=True works on a durable job"):
        run(["a"], restart=True)
    with pytest.raises(ConfigurationError, match=r"job='': give the job a name"):
        run(["a"], job="")


def test_failed_rows_are_kept_unless_retry_failed(lms, caplog):
    lms.set(fail_first=2, status=400)
    first = run(["a", "b", "c"], job="f", concurrency=1)
    assert [isinstance(v, Failed) for v in first] == [True, True, False]
    with caplog.at_level(logging.WARNING, logger="nbllm"):
        again = run(["a", "b", "c"], job="f", concurrency=1)
    assert len(lms.chat_requests()) == 3
    assert [v.kind if isinstance(v, Failed) else v for v in again] == ["error", "error", "Echo: Q c"]
    assert again[0].error == first[0].error and again.attrs["nbllm"]["failed"] == 2
    assert "2 input(s) failed in an earlier run and were not sent again (retry_failed=True" in caplog.text
    listed = nbllm.jobs().loc["f"]
    assert (listed["rows"], listed["done"], listed["failed"], listed["left"]) == (3, 1, 2, 0)
    fixed = run(["a", "b", "c"], job="f", retry_failed=True)
    assert sorted(sent(lms, 3)) == ["Q a", "Q b"] and list(fixed) == ["Echo: Q a", "Echo: Q b", "Echo: Q c"]
    assert nbllm.jobs().loc["f", "failed"] == 0


def test_jobs_lists_and_drop_removes(lms):
    assert nbllm.jobs().empty and list(nbllm.jobs().columns) == [
        "provider", "model", "rows", "done", "failed", "left", "cost_usd", "created", "updated", "age", "batch"]
    run(["a", "b"], job="one")
    run(["x"], job="two")
    listed = nbllm.jobs()
    assert list(listed.index) == ["one", "two"]
    assert listed.loc["one", "provider"] == "lmstudio" and listed.loc["one", "rows"] == 2
    assert listed.loc["one", "cost_usd"] == 0.0  # a local server costs 0
    assert str(listed["updated"].dtype).startswith("datetime64") and listed.loc["one", "age"] >= pd.Timedelta(0)
    assert nbllm.jobs.drop("one") == 2
    assert list(nbllm.jobs().index) == ["two"]
    with pytest.raises(ConfigurationError) as info:
        nbllm.jobs.drop("nope")
    assert str(info.value) == "There is no job named 'nope'; jobs: 'two'."
    run(["a", "b"], job="one")  # a dropped job starts afresh
    assert len(lms.chat_requests()) == 5


def test_keys_never_reach_the_store(lms, monkeypatch, tmp_path):
    monkeypatch.setenv("LMSTUDIO_API_KEY", SECRET)
    reset_nbllm()
    lms.set(reply=f"your key is {SECRET}")
    result = run(["a"], "Q {value} with " + SECRET, job="secret")
    assert result[0] == f"your key is {SECRET}"  # the answer as it came
    jobstore._writer.flush()
    files = list(tmp_path.glob("jobs.sqlite*"))
    assert tmp_path / "jobs.sqlite" in files
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path.name
    again = run(["a"], "Q {value} with " + SECRET, job="secret")  # from the store: masked, as the call log keeps it
    assert SECRET not in again[0] and again[0].startswith("your key is ") and len(lms.chat_requests()) == 1
    with pytest.raises(ConfigurationError) as info:
        run(["a"], "Q {value} with sk-another-key-0123456789abcdef", job="secret")
    assert SECRET not in str(info.value) and "another template" in str(info.value)


def test_an_unusable_store_is_one_error_before_anything_is_sent(lms, monkeypatch, tmp_path):
    (tmp_path / "plain-file").write_text("not a directory")
    monkeypatch.setenv("NBLLM_JOBS", str(tmp_path / "plain-file" / "jobs.sqlite"))  # its folder cannot exist
    reset_nbllm()
    with pytest.raises(ConfigurationError, match=r"^The jobs store .* cannot be used .*: point NBLLM_JOBS at a "
                                                 r"writable file, or run without job=\.$"):
        run(["a"], job="x")
    assert lms.chat_requests() == []


def test_a_write_survives_the_process_only_once_committed(lms, tmp_path):
    """The file is WAL-mode SQLite and every batch one transaction: another connection sees whole rows."""
    run([f"p{i}" for i in range(50)], job="wal", concurrency=8)
    conn = sqlite3.connect(tmp_path / "jobs.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = conn.execute("SELECT status, text FROM results WHERE job = 'wal' ORDER BY position").fetchall()
    assert rows == [("ok", f"Echo: Q p{i}") for i in range(50)]


# ---- budgets, progress and dry runs ---------------------------------------------------------------


@pytest.fixture
def priced(lms, monkeypatch):
    """lmstudio at a declared (absurd) price, so a few requests cost cents."""
    monkeypatch.setenv("LMSTUDIO_PRICE_INPUT", "1000")
    monkeypatch.setenv("LMSTUDIO_PRICE_OUTPUT", "1000")
    reset_nbllm()
    return lms


def test_a_budget_stops_the_map_and_a_job_resumes_the_rest(priced):
    values = [f"v{i}" for i in range(200)]
    result = run(values, job="b", budget=0.15, max_tokens=10, concurrency=8)
    kinds = [v.kind if isinstance(v, Failed) else "ok" for v in result]
    done = kinds.count("ok")
    assert 0 < done < 200 and set(kinds) == {"ok", "budget"}
    assert "ok" not in kinds[kinds.index("budget") + 8:]  # after the stop only those in flight may finish
    assert len(priced.chat_requests()) == done  # nothing was sent after the stop
    stats = result.attrs["nbllm"]
    assert stats["budget"] == 200 - done and stats["ok"] == done and 0 < stats["cost_usd"] <= 0.15
    failed = next(v for v in result if isinstance(v, Failed))
    assert "budget" in failed.error and failed.attempts == 0
    listed = nbllm.jobs().loc["b"]
    assert (listed["done"], listed["left"]) == (done, 200 - done) and listed["cost_usd"] == pytest.approx(
        stats["cost_usd"])
    rest = run(values, job="b", max_tokens=10, concurrency=8)  # no budget this time: the rest is sent
    assert list(rest) == [f"Echo: Q {v}" for v in values]
    assert Counter(sent(priced)) == Counter(f"Q {v}" for v in values)  # each input answered once


def test_the_kernel_budget_stops_a_map_too(priced):
    nbllm.budget(0.05)
    try:
        result = run([f"v{i}" for i in range(20)], job="kernel-budget", max_tokens=10, concurrency=1)
    finally:
        nbllm.budget(None)
    stats = result.attrs["nbllm"]
    assert 0 < stats["ok"] < 20 and stats["budget"] == 20 - stats["ok"] == nbllm.jobs().loc["kernel-budget", "left"]
    assert len(priced.chat_requests()) == stats["ok"] and "kernel budget" in result[19].error


def test_a_typed_run_counts_budget_rows_apart(priced):
    priced.set(reply='{"name": "x", "price": 3}')
    result = run([f"v{i}" for i in range(20)], output_type=Item, budget=0.3, max_tokens=10, concurrency=1)
    stats = result.attrs["nbllm"]
    assert stats["budget"] > 0 and stats["ok"] > 0 and stats["failed"] == 0
    assert stats["ok"] + stats["budget"] == 20 and stats["valid_rate"] == 1.0
    assert result["_error"].dropna().str.contains("budget").all()


def test_the_progress_bar_shows_the_cost_so_far(priced, capsys):
    nbllm.map(["a", "b"], "Q {value}", provider="lmstudio", max_tokens=10)
    shown = capsys.readouterr().err
    assert re.search(r"2/2 .*\$0\.0\d{3}", shown), shown


def test_dry_run_sends_nothing(lms):
    estimate = nbllm.map(["a", "b", None], "Q {value}", provider="lmstudio", dry_run=True, job="never")
    assert estimate.prompts == 2 and estimate.price_source == "local" and estimate.input_tokens > 0
    assert lms.chat_requests() == [] and nbllm.jobs().empty


def test_nbllm_jobs_loads_nothing_heavy():
    from test_load_cost import loaded_after

    assert loaded_after("import nbllm\nnbllm.jobs; repr(nbllm.jobs)") == []


# ---- a real kernel killed with SIGKILL ------------------------------------------------------------


@pytest.mark.kernel
def test_a_job_survives_kill_minus_9(tmp_path):
    """200 prompts, the kernel SIGKILLed at about half; the same cell in a new kernel finishes the job.

    "Answered" means the server produced the reply (its `replies` hook ran and counted it). When
    the kill is due the server stops answering first: the requests in flight wait and die with
    the kernel unanswered, so every answer given was one the dead kernel received. The new kernel
    must send each of the others once and return all 200 in order: every input answered exactly once.
    """
    answered: Counter[str] = Counter()
    gate = threading.Event()
    gate.set()
    lock = threading.Lock()
    kernel = [1]  # which kernel's requests are being answered

    def reply(prompt: str) -> str:
        asked_by = kernel[0]
        gate.wait(60)  # closed: the request waits, unanswered
        if asked_by != kernel[0]:  # a request of the killed kernel: nobody reads its reply
            return "unread"
        with lock:
            answered[prompt] += 1
        return f"A: {prompt}"

    cell = ("import nbllm\n"
            "r = nbllm.map([f'p{i}' for i in range(200)], 'Q {value}', job='k', concurrency=8, progress=False)\n"
            "print(len(r), list(r) == [f'A: Q p{i}' for i in range(200)], r.attrs['nbllm']['job']['stored'])")
    with FakeLLMServer(latency=0.03, replies=reply) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_PROVIDER_PREFIXES)}
        closed = "http://127.0.0.1:9"
        env.update(LMSTUDIO_BASE_URL=server.url + "/v1", NBLLM_PROVIDER="lmstudio", LMSTUDIO_MAX_RETRIES="0",
                   OLLAMA_BASE_URL=closed, LLAMACPP_BASE_URL=closed, EMBEDDED_BASE_URL=closed,
                   NBLLM_CONFIG=str(tmp_path / "config.json"), NBLLM_HISTORY=str(tmp_path / "h.sqlite"),
                   NBLLM_CACHE=str(tmp_path / "c.sqlite"), NBLLM_JOBS=str(tmp_path / "jobs.sqlite"))
        first, client = _kernel(env, tmp_path)
        try:
            client.execute(cell)
            deadline = time.monotonic() + 60
            while sum(answered.values()) < 100 and time.monotonic() < deadline:
                time.sleep(0.005)
            gate.clear()  # from here nothing more is answered: the requests in flight hang
            time.sleep(0.5)  # well past the writer's batch window (~20 ms): what was answered is in the file
            with lock:
                before = Counter(answered)
            assert 100 <= sum(before.values()) < 200 and set(before.values()) == {1}
            os.kill(first.provisioner.process.pid, signal.SIGKILL)
            first.provisioner.process.wait(10)
            client.stop_channels()
        finally:
            first.cleanup_resources()
        received_first = len(server.chat_requests())
        assert received_first > sum(before.values())  # some were in flight, unanswered, at the kill
        kernel[0] = 2
        gate.set()
        second, client = _kernel(env, tmp_path)
        try:
            printed = _run_and_print(client, cell)
            client.stop_channels()
        finally:
            second.shutdown_kernel(now=True)
    # complete and in order; the part answered before the kill came from the file
    assert printed.split() == ["200", "True", str(sum(before.values()))]
    later = [r["body"]["messages"][-1]["content"] for r in server.chat_requests()[received_first:]]
    assert Counter(later) == Counter(f"Q p{i}" for i in range(200) if f"Q p{i}" not in before)
    assert answered == Counter(f"Q p{i}" for i in range(200))  # every input answered exactly once


def _kernel(env: dict[str, str], cwd: Path) -> tuple[Any, Any]:
    """A fresh ipykernel (this interpreter) with `env`, and its client, ready for cells."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(cwd))
    client = km.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return km, client


def _run_and_print(client: Any, code: str, timeout: float = 90) -> str:
    """Run `code` in the kernel and return what it printed (an error is raised here with its traceback)."""
    msg_id = client.execute(code)
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            out.append(content["text"])
        elif kind == "error":
            raise AssertionError("\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out)
    raise AssertionError("the cell did not finish")


# ---- what a job keeps as done, what it costs, which model answered -------------------------------------


@pytest.mark.parametrize("status", [503, 429, 401, 404])
def test_failures_another_try_may_not_share_are_sent_again(lms, status, caplog):
    """A 503 ("loading its model"), 429, a bad key or model: fixed, the re-run sends those rows again."""
    lms.set(fail_first=2, status=status)
    first = run(["a", "b", "c"], job="transient", concurrency=1)
    assert [v.kind if isinstance(v, Failed) else v for v in first] == ["error", "error", "Echo: Q c"]
    listed = nbllm.jobs().loc["transient"]
    assert (listed["done"], listed["failed"], listed["left"]) == (1, 0, 2)
    with caplog.at_level(logging.WARNING, logger="nbllm"):
        again = run(["a", "b", "c"], job="transient", concurrency=1)
    assert sorted(sent(lms, 3)) == ["Q a", "Q b"] and list(again) == ["Echo: Q a", "Echo: Q b", "Echo: Q c"]
    assert "failed in an earlier run" not in caplog.text and again.attrs["nbllm"]["job"]["kept_failures"] == 0


def test_nothing_answering_is_sent_again(lms, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", "http://127.0.0.1:9/v1")  # connection refused
    reset_nbllm()
    first = run(["a", "b"], job="refused")
    assert all(isinstance(v, Failed) and v.kind == "error" for v in first) and lms.chat_requests() == []
    monkeypatch.setenv("LMSTUDIO_BASE_URL", lms.url + "/v1")  # the server is up now
    reset_nbllm()
    again = run(["a", "b"], job="refused")
    assert list(again) == ["Echo: Q a", "Echo: Q b"] and sorted(sent(lms)) == ["Q a", "Q b"]


def test_an_invalid_typed_answer_is_tied_to_the_input_and_kept(lms):
    lms.set(reply="not json at all")
    first = run(["a"], output_type=Item, job="invalid")
    assert first.attrs["nbllm"]["invalid"] == 1
    count = len(lms.chat_requests())
    lms.set(reply='{"name": "x", "price": 3}')
    again = run(["a"], output_type=Item, job="invalid")
    assert len(lms.chat_requests()) == count and again.loc[0, "_error"] == first.loc[0, "_error"]


def test_a_resumed_job_reports_this_runs_cost_and_the_jobs_total(priced):
    values = [f"v{i}" for i in range(6)]
    fresh = run(values, job="fresh", max_tokens=10)
    first = run(values[:4], job="cost", max_tokens=10)
    again = run(values, job="cost", max_tokens=10)
    assert len(sent(priced)) == 6 + 4 + 2
    pd.testing.assert_series_equal(again, fresh)  # the values are those of a fresh run
    whole, part, now = (r.attrs["nbllm"]["cost_usd"] for r in (fresh, first, again))
    assert whole > 0 and now == pytest.approx(whole - part) and now < part  # only the 2 rows sent now
    assert again.attrs["nbllm"]["job"]["cost_usd"] == pytest.approx(whole)
    assert again.attrs["nbllm"]["unknown_cost"] == 0 and again.attrs["nbllm"]["job"]["unknown_cost"] == 0
    finished = run(values, job="cost", max_tokens=10)  # nothing sent: this run cost nothing
    assert finished.attrs["nbllm"]["cost_usd"] == 0.0 and finished.attrs["nbllm"]["job"]["cost_usd"] == (
        pytest.approx(whole))


def test_an_unknown_cost_is_never_summed_as_zero(priced, capsys, monkeypatch):
    """Answers of unknown cost (a model no price list knows): counted apart, never summed as 0."""
    from nbllm import prices

    known = prices.answer_cost
    unknown = lambda *args, **kwargs: (None, "unknown")  # noqa: E731
    monkeypatch.setattr(prices, "answer_cost", unknown)
    result = nbllm.map(["a", "b"], "Q {value}", provider="lmstudio", max_tokens=10)
    assert list(result) == ["Echo: Q a", "Echo: Q b"]
    stats = result.attrs["nbllm"]
    assert stats["unknown_cost"] == 2 and stats["cost_usd"] == 0.0  # the sum of the known costs: none
    assert re.search(r"2/2 .*\$0\.0000\+\?", capsys.readouterr().err)
    monkeypatch.setattr(prices, "answer_cost", known)
    mixed = run(["c", "d"], job="mixed", max_tokens=10, concurrency=1)
    assert mixed.attrs["nbllm"]["unknown_cost"] == 0 and mixed.attrs["nbllm"]["cost_usd"] > 0
    monkeypatch.setattr(prices, "answer_cost", unknown)
    more = run(["c", "d", "e"], job="mixed", max_tokens=10)
    assert more.attrs["nbllm"]["unknown_cost"] == 1 and more.attrs["nbllm"]["cost_usd"] == 0.0
    assert more.attrs["nbllm"]["job"]["unknown_cost"] == 1
    assert more.attrs["nbllm"]["job"]["cost_usd"] == pytest.approx(mixed.attrs["nbllm"]["cost_usd"])


def test_a_local_run_has_no_unknown_cost(lms):
    assert run(["a", "b"]).attrs["nbllm"]["unknown_cost"] == 0


def test_jobs_shows_the_model_that_answered(lms, tmp_path):
    """lmstudio is configured with "local-model"; the server answers with the model it has loaded."""
    result = run(["a", "b"], job="model")
    assert list(result) == ["Echo: Q a", "Echo: Q b"]
    listed = nbllm.jobs().loc["model"]
    assert listed["model"] == "fake-model" == lms.chat_requests()[0]["body"]["model"]
    assert listed["provider"] == "lmstudio"
    with sqlite3.connect(tmp_path / "jobs.sqlite") as conn:  # the fingerprint keeps the model as asked
        assert conn.execute("SELECT model FROM jobs WHERE name = 'model'").fetchone() == ("local-model",)
    run(["a", "b"], job="model")  # unchanged fingerprint: no refusal, nothing sent
    assert len(lms.chat_requests()) == 2


# ---- the writer ------------------------------------------------------------------------------------------


def test_a_row_that_cannot_be_written_loses_only_itself(lms, monkeypatch, caplog):
    real = jobstore._row

    def refusing(item: Any, now: str) -> Any:
        if getattr(item[3], "text", "") == "Echo: Q b":
            raise ValueError("cannot store this one")
        return real(item, now)

    monkeypatch.setattr(jobstore, "_row", refusing)
    with caplog.at_level(logging.WARNING, logger="nbllm"):
        first = run(["a", "b", "c"], job="one-bad", concurrency=3)
    assert list(first) == ["Echo: Q a", "Echo: Q b", "Echo: Q c"]  # returned all the same
    lines = [r.getMessage() for r in caplog.records if "could not be written" in r.getMessage()]
    assert len(lines) == 1 and "job 'one-bad': 1 result(s)" in lines[0] and "cannot store this one" in lines[0]
    monkeypatch.setattr(jobstore, "_row", real)
    run(["a", "b", "c"], job="one-bad")
    assert sent(lms, 3) == ["Q b"]  # its neighbours in the batch were stored


def test_the_batched_writer_skips_one_bad_row_and_counts_it(tmp_path, caplog):
    from nbllm.store import BatchedWriter, connect

    path = tmp_path / "rows.sqlite"
    warnings: list[tuple[bool, str]] = []
    writer = BatchedWriter("nbllm-test-writer", lambda p: connect(p, "CREATE TABLE IF NOT EXISTS t (x INTEGER);"),
                           lambda conn, rows: conn.executemany("INSERT INTO t VALUES (?)", [(r,) for r in rows]),
                           lambda p, exc, one: warnings.append((one, type(exc).__name__)) or "one row skipped")
    for value in (1, 2**70, 3):  # 2**70 does not fit SQLite's integer: that row only is lost
        writer.put(path, value)
    writer.flush()
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")] == [1, 3]
    assert writer.lost[path] == 1 and warnings == [(True, "OverflowError")]


def test_a_maps_budget_scope_ends_with_the_map_sync_and_async(priced):
    import asyncio

    from nbllm import bridge, budgets

    async def scopes_on_the_loop() -> tuple[Any, ...]:
        return budgets._scopes.get()

    result = run([f"v{i}" for i in range(20)], budget=0.05, max_tokens=10, concurrency=1)
    assert 0 < result.attrs["nbllm"]["ok"] < 20 and result.attrs["nbllm"]["budget"] > 0
    later = asyncio.run(nbllm.map_async([f"w{i}" for i in range(20)], "Q {value}", provider="lmstudio",
                                        progress=False, budget=0.05, max_tokens=10, concurrency=1))
    assert 0 < later.attrs["nbllm"]["ok"] < 20 and later.attrs["nbllm"]["budget"] > 0
    assert budgets._scopes.get() == () and bridge.run(scopes_on_the_loop()) == ()
    free = run(["x", "y"], max_tokens=10)  # no budget now: nothing is stopped
    assert list(free) == ["Echo: Q x", "Echo: Q y"]
