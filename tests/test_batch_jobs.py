"""`nbllm.map(..., job=..., batch=True)` (nbllm/batch_jobs.py) against the fake server's files/batches endpoints.

The fake server is an OpenAI-compatible server (`OPENAI_BASE_URL`): nbllm writes Chat Completions lines
into the uploaded JSONL, and the server answers them when a poll ends the batch (`batch_polls`).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from typing import Any

import pandas as pd
import pytest
from conftest import reset_nbllm

import nbllm
from nbllm import batch_jobs, bridge, clients, jobstore
from nbllm.batch import Failed
from nbllm.errors import ConfigurationError

VALUES = ["alpha", "beta", "gamma", "delta"]
ANSWERS = [f"Echo: Q {v}" for v in VALUES]


@pytest.fixture
def server(fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server.url + "/v1")
    monkeypatch.setenv("OPENAI_MODEL", "fake-model")
    reset_nbllm()
    batch_jobs._holds.clear()
    return fake_server


def run(values: Any = VALUES, job: str = "b", **options: Any) -> Any:
    options.setdefault("progress", False)
    return nbllm.map(values, "Q {value}", provider="openai", job=job, batch=True, **options)


def uploaded(server) -> list[dict[str, Any]]:
    """Every JSONL line of every batch input file the server received."""
    return [line for r in server.requests if r["method"] == "POST" and r["path"].rstrip("/").endswith("/files")
            for line in r["body"]["lines"]]


def created(server) -> list[dict[str, Any]]:
    return [r for r in server.requests if r["method"] == "POST" and r["path"] == "/v1/batches"]


def stored_batches(tmp_path, job: str = "b") -> list[dict[str, Any]]:
    conn = sqlite3.connect(tmp_path / "jobs.sqlite")
    try:
        (raw,) = conn.execute("SELECT batch FROM jobs WHERE name = ?", (job,)).fetchone()
    finally:
        conn.close()
    return json.loads(raw) if raw else []


def user_prompts(lines: list[dict[str, Any]]) -> list[str]:
    return [line["body"]["messages"][-1]["content"] for line in lines]


def test_batch_needs_a_job():
    with pytest.raises(ConfigurationError) as info:
        nbllm.map(VALUES, "Q {value}", provider="openai", batch=True)
    assert str(info.value) == ("batch=True needs job= (the batch id is kept in the job, so a restart loses "
                               "nothing).")


def test_submit_returns_at_once_with_pending_rows_and_the_batch_stored(server, tmp_path, capsys):
    result = run(progress=True)
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["nbllm: submitted 4 prompts as batch batch_0001 to openai (results within 24 h); "
                   "run this cell again to collect"]
    assert list(result.index) == [0, 1, 2, 3] and all(isinstance(v, Failed) for v in result)
    assert {v.kind for v in result} == {"pending"} and not any(map(bool, result))
    assert "batch_0001" in result[0].error
    info = result.attrs["nbllm"]
    assert info["pending"] == 4 and info["ok"] == 0 and info["failed"] == 0
    assert info["job"]["batch"]["id"] == "batch_0001" and info["job"]["batch"]["state"] == "submitted"
    assert info["job"]["batch"]["pending"] == 4
    assert server.chat_requests() == [] and len(created(server)) == 1  # submitted, nothing answered live
    assert [r["path"] for r in server.requests if r["path"].startswith("/v1/batches/")] == []  # not even polled
    assert sorted(user_prompts(uploaded(server))) == sorted(f"Q {v}" for v in VALUES)
    batches = stored_batches(tmp_path)
    assert len(batches) == 1 and batches[0]["ticket"]["batch_id"] == "batch_0001"
    keys = jobstore.input_keys([f"Q {v}" for v in VALUES])
    assert batches[0]["keys"] == keys
    assert [line["custom_id"] for line in uploaded(server)] == [batch_jobs.custom_id(k) for k in keys]
    listed = nbllm.jobs()
    assert listed.loc["b", "batch"] == "batch_0001 submitted" and listed.loc["b", "left"] == 4


def test_a_rerun_while_running_is_still_pending_and_submits_nothing(server, capsys):
    server.set(batch_polls=100)
    run()
    again = run(progress=True)
    assert capsys.readouterr().out.startswith("nbllm: batch batch_0001 at openai: submitted, 0 of 4 done, 0 failed; run")
    third = run()
    assert {v.kind for v in third} == {"pending"} and third.attrs["nbllm"]["job"]["batch"]["state"] == "running"
    assert {v.kind for v in again} == {"pending"}
    assert len(created(server)) == 1 and len(uploaded(server)) == 4 and server.chat_requests() == []
    assert nbllm.jobs().loc["b", "batch"] == "batch_0001 running"


def test_a_rerun_after_completion_collects_everything_once_in_order(server):
    nbllm.history.clear()
    values = ["alpha", "beta", "alpha", None, "delta"]  # a repeat is its own input; a missing one is not sent
    run(values)
    assert {v.kind for v in run(values)} == {"pending", "missing"}  # first poll: "validating"
    result = run(values)
    assert list(result[[0, 1, 2, 4]]) == ["Echo: Q alpha", "Echo: Q beta", "Echo: Q alpha", "Echo: Q delta"]
    assert result[3].kind == "missing"
    assert result.attrs["nbllm"]["ok"] == 4 and result.attrs["nbllm"]["pending"] == 0
    assert result.attrs["nbllm"]["input_tokens"] > 0
    assert result.attrs["nbllm"]["job"]["batch"] == {
        "id": "batch_0001", "provider": "openai", "state": "done", "done": 4, "failed": 0, "total": 4,
        "collected": True, "pending": 0}
    # each input answered exactly once at the server: one line each in the batch, no live request
    assert Counter(user_prompts(uploaded(server))) == Counter({"Q alpha": 2, "Q beta": 1, "Q delta": 1})
    assert server.chat_requests() == []
    logged = nbllm.history(limit=None)
    assert list(logged["kind"]) == ["batch"] * 4 and set(logged["provider"]) == {"openai"}
    assert sorted(logged["answer"]) == sorted(result[[0, 1, 2, 4]])
    spent = nbllm.spend()
    assert spent.loc["openai", "calls"] == 4 and spent.loc["openai", "cost_usd"] == 0.0  # self-hosted: 0
    # once more: from the store, without a request, and nothing logged twice
    before = len(server.requests)
    again = run(values)
    pd.testing.assert_series_equal(again, result)
    assert len(server.requests) == before
    assert len(nbllm.history(limit=None)) == 4
    assert nbllm.jobs().loc["b", "batch"] == "batch_0001 done, collected"


def test_a_restart_between_submit_and_collect_loses_nothing(server):
    server.set(batch_polls=0)
    first = run()
    assert {v.kind for v in first} == {"pending"}
    # the kernel dies: every client, setting, budget reservation and the loop nbllm held are gone
    reset_nbllm()
    clients.clear()
    bridge.shutdown()
    batch_jobs._holds.clear()
    jobstore._writer.flush()
    result = run()
    assert list(result) == ANSWERS
    assert len(created(server)) == 1 and len(uploaded(server)) == 4 and server.chat_requests() == []
    assert len(nbllm.history(limit=None)) == 4


def test_per_request_errors_are_kept_and_retry_failed_sends_them_in_a_new_batch(server):
    keys = jobstore.input_keys([f"Q {v}" for v in VALUES])
    server.set(batch_polls=0, batch_fail_ids=(batch_jobs.custom_id(keys[1]),))
    run()
    result = run()
    assert result[0] == ANSWERS[0] and result[2] == ANSWERS[2] and result[3] == ANSWERS[3]
    failed = result[1]
    assert isinstance(failed, Failed) and failed.kind == "error" and "fake failure 400" in failed.error
    assert result.attrs["nbllm"]["failed"] == 1
    listed = nbllm.jobs().loc["b"]
    assert (listed["done"], listed["failed"], listed["left"]) == (3, 1, 0)
    kept = run()  # a kept failure is not submitted again
    assert kept[1].kind == "error" and len(created(server)) == 1
    server.set(batch_fail_ids=())
    retried = run(retry_failed=True)
    assert retried[1].kind == "pending" and len(created(server)) == 2
    assert user_prompts(server.batch_lines()) == ["Q beta"]
    assert list(run()) == ANSWERS


def test_requests_an_expired_batch_never_ran_are_submitted_again(server, capsys):
    server.set(batch_polls=0, batch_outcome="expired", batch_expire_after=1)
    run()
    result = run(progress=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "nbllm: collected batch batch_0001 from openai (expired): 1 answered, 0 failed, 3 never ran " \
                       "and are submitted again"
    assert lines[1].startswith("nbllm: submitted 3 prompts as batch batch_0002 to openai")
    assert result[0] == ANSWERS[0] and [v.kind for v in result[1:]] == ["pending"] * 3
    assert result.attrs["nbllm"]["job"]["batch"]["id"] == "batch_0002"
    server.set(batch_outcome="completed")
    assert list(run()) == ANSWERS
    assert Counter(user_prompts(uploaded(server))) == Counter(
        {"Q alpha": 1, "Q beta": 2, "Q gamma": 2, "Q delta": 2})  # the 3 that never ran, sent once more


def test_a_provider_without_a_batch_api_is_refused_before_anything_is_written(local_provider, tmp_path):
    with pytest.raises(ConfigurationError) as info:
        nbllm.map(VALUES, "Q {value}", provider="lmstudio", job="b", batch=True, progress=False)
    assert str(info.value).startswith("lmstudio has no batch API") and "\n" not in str(info.value)
    assert not (tmp_path / "jobs.sqlite").exists()
    assert not [r for r in local_provider.requests if "/files" in r["path"] or "/batches" in r["path"]]
    assert local_provider.chat_requests() == []


def test_the_same_job_without_batch_true_is_refused_while_its_batch_is_open(server):
    server.set(batch_polls=100)
    run()
    with pytest.raises(ConfigurationError, match=r"has batch batch_0001 open at openai: run it with batch=True"):
        nbllm.map(VALUES, "Q {value}", provider="openai", job="b", progress=False)
    assert server.chat_requests() == []


def test_drop_cancels_a_running_batch_and_says_so(server, capsys):
    server.set(batch_polls=100)
    run()
    assert nbllm.jobs.drop("b") == 0
    assert "nbllm: job 'b': cancelled batch batch_0001 at openai" in capsys.readouterr().out
    assert any(r["path"] == "/v1/batches/batch_0001/cancel" for r in server.requests)
    assert nbllm.jobs().empty


def test_restart_cancels_the_open_batch_and_submits_anew(server, capsys, tmp_path):
    server.set(batch_polls=100)
    run()
    result = run(restart=True, progress=True)
    out = capsys.readouterr().out
    assert "cancelled batch batch_0001" in out and "submitted 4 prompts as batch batch_0002" in out
    assert any(r["path"] == "/v1/batches/batch_0001/cancel" for r in server.requests)
    assert result.attrs["nbllm"]["job"]["batch"]["id"] == "batch_0002"
    assert [b["ticket"]["batch_id"] for b in stored_batches(tmp_path)] == ["batch_0002"]


def test_a_batch_must_fit_the_budget_at_the_batch_price(server, monkeypatch):
    monkeypatch.setenv("OPENAI_PRICE_INPUT", "1000")  # USD per million tokens: a few prompts cost cents
    monkeypatch.setenv("OPENAI_PRICE_OUTPUT", "1000")
    reset_nbllm()
    server.set(batch_polls=0)
    refused = run(budget=0.001, max_tokens=20)
    assert [v.kind for v in refused] == ["budget"] * 4 and "not submitted" in refused[0].error
    assert "this batch of 4 prompts may cost up to" in refused[0].error
    assert created(server) == [] and uploaded(server) == []
    kernel = nbllm.budget(5.00)
    pending = run(max_tokens=20)
    assert {v.kind for v in pending} == {"pending"} and kernel.reserved > 0 and kernel.spent == 0
    result = run(max_tokens=20)
    assert list(result) == ANSWERS
    cost = result.attrs["nbllm"]["cost_usd"]
    assert cost > 0 and kernel.spent == pytest.approx(cost) and kernel.reserved == 0


def test_a_version_1_jobs_file_is_migrated_in_place(server, tmp_path):
    path = tmp_path / "jobs.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE jobs (name TEXT PRIMARY KEY, created TEXT NOT NULL, updated TEXT NOT NULL, provider TEXT,
            model TEXT, fingerprint TEXT NOT NULL, asked TEXT NOT NULL);
        CREATE TABLE results (job TEXT NOT NULL, key TEXT NOT NULL, position INTEGER, status TEXT NOT NULL,
            text TEXT, error TEXT, reason TEXT, attempts INTEGER, provider TEXT, model TEXT, input_tokens INTEGER,
            output_tokens INTEGER, cost_usd REAL, cost_source TEXT, latency_ms REAL, time TEXT,
            PRIMARY KEY (job, key)) WITHOUT ROWID;
        INSERT INTO jobs VALUES ('old', '2026-11-01T10:00:00.000+00:00', '2026-11-01T10:00:00.000+00:00',
            'lmstudio', 'm', '{}', '{}');
        INSERT INTO results VALUES ('old', 'k1', 0, 'ok', 'kept', NULL, NULL, 1, 'lmstudio', 'm', 3, 2, 0.0,
            'local', 5.0, '2026-11-01T10:00:00.000+00:00');
        PRAGMA user_version = 1;
    """)
    conn.close()
    listed = nbllm.jobs()
    assert listed.loc["old", "done"] == 1 and listed.loc["old", "batch"] == ""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert "batch" in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        assert conn.execute("SELECT text FROM results WHERE job = 'old'").fetchall() == [("kept",)]
    finally:
        conn.close()
    run(job="new")  # a batch job in the migrated file
    assert nbllm.jobs().loc["new", "batch"] == "batch_0001 submitted" and nbllm.jobs().loc["old", "done"] == 1


def test_a_newer_jobs_file_is_one_line(server, tmp_path):
    conn = sqlite3.connect(tmp_path / "jobs.sqlite")
    conn.execute("PRAGMA user_version = 9")
    conn.close()
    with pytest.raises(ConfigurationError, match=r"written by a newer nbllm \(schema 9"):
        run()
    assert created(server) == []


def test_map_async_submits_and_collects_too(server):
    import asyncio

    server.set(batch_polls=0)

    async def cell():
        return await nbllm.map_async(VALUES, "Q {value}", provider="openai", job="b", batch=True, progress=False)

    first = asyncio.run(cell())
    assert {v.kind for v in first} == {"pending"}
    assert list(asyncio.run(cell())) == ANSWERS
    assert len(created(server)) == 1 and server.chat_requests() == []


def test_typed_output_is_refused_where_nbllm_writes_the_lines_before_anything_is_written(server, tmp_path):
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str

    with pytest.raises(ConfigurationError, match="output_type= cannot go through"):
        run(output_type=Person)
    assert not (tmp_path / "jobs.sqlite").exists() and not server.requests
