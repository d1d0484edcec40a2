"""The call log: a real SQLite file per test (conftest points NBLLM_HISTORY into tmp_path)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import nbllm
from nbllm import calllog
from nbllm.errors import ConfigurationError, ModelError

from conftest import reset_nbllm


def test_every_call_is_a_row(local_provider, tmp_path):
    nbllm.ask("hello log", system="be brief", temperature=0.3, max_tokens=20)
    df = nbllm.history()
    assert nbllm.history.path == tmp_path / "history.sqlite" and nbllm.history.path.exists()
    assert len(df) == 1
    row = df.iloc[-1]
    assert (row["kind"], row["provider"], row["model"], row["outcome"]) == ("ask", "lmstudio", "fake-model", "ok")
    assert (row["prompt"], row["system"], row["answer"]) == ("hello log", "be brief", "Echo: hello log")
    assert (row["input_tokens"], row["output_tokens"]) == (7, 3) and row["latency_ms"] > 0
    assert json.loads(row["settings"]) == {"temperature": 0.3, "max_tokens": 20, "timeout": 30.0}
    assert isinstance(row["time"], pd.Timestamp) and str(row["time"].tz) == "UTC"
    assert row["cost_usd"] == 0 and row["error"] is None  # a local server costs 0 (issue 13)


def test_failures_and_broken_streams_are_logged(local_provider, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    nbllm.reinit()
    local_provider.set(mode="error", status=500)
    with pytest.raises(ModelError):
        nbllm.ask("will fail")
    local_provider.set(mode="cut_stream", cut_after=2)
    list(nbllm.stream("one two three four", raise_errors=False))
    local_provider.set(mode="ok")
    "".join(nbllm.stream("streamed fine"))
    df = nbllm.history()
    assert list(df["outcome"]) == ["error", "partial", "ok"]
    assert list(df["kind"]) == ["ask", "stream", "stream"]
    assert "HTTP 500" in df.iloc[0]["error"] and df.iloc[0]["answer"] == ""
    assert df.iloc[1]["answer"] == "Echo: one" and df.iloc[1]["error"]
    assert df.iloc[2]["answer"] == "Echo: streamed fine"


def test_limit_and_provider_filter(local_provider):
    for i in range(5):
        nbllm.ask(f"n{i}")
    last = nbllm.history(limit=2)
    assert list(last["prompt"]) == ["n3", "n4"]  # the latest, oldest first
    assert len(nbllm.history(limit=None)) == 5
    assert len(nbllm.history(provider="ollama")) == 0 and len(nbllm.history(provider="LMStudio")) == 5
    with pytest.raises(ConfigurationError, match="positive whole number"):
        nbllm.history(limit=0)


def test_empty_history_is_an_empty_frame():
    df = nbllm.history()
    assert len(df) == 0 and list(df.columns) == calllog.COLUMNS[1:]


def test_logging_can_be_turned_off(local_provider, monkeypatch):
    nbllm.history.disable()
    assert not nbllm.history.enabled
    nbllm.ask("not logged")
    nbllm.history.enable()
    nbllm.ask("logged")
    monkeypatch.setenv("NBLLM_LOG", "0")
    nbllm.reinit()  # config reads NBLLM_LOG (from the environment or .env) when settings are re-read
    nbllm.history.reset()
    nbllm.ask("not logged either")
    assert list(nbllm.history()["prompt"]) == ["logged"]
    assert "off" in repr(nbllm.history)


def test_clear(local_provider):
    nbllm.ask("a")
    nbllm.ask("b")
    assert nbllm.history.clear() == 2 and len(nbllm.history()) == 0


def test_keys_never_reach_the_file(fake_server, monkeypatch, tmp_path):
    key = "sk-test-DO-NOT-STORE-0123456789"
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    monkeypatch.setenv("LMSTUDIO_API_KEY", key)
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    reset_nbllm()
    nbllm.ask(f"my key is {key}", provider="lmstudio")
    fake_server.set(mode="error", status=401)
    with pytest.raises(ModelError):
        nbllm.ask("again", provider="lmstudio", system=f"key {key}")
    assert fake_server.chat_requests()[0]["headers"].get("authorization") == f"Bearer {key}"  # it was really used
    nbllm.history.flush()
    files = list(tmp_path.glob("history.sqlite*"))
    assert files and all(key.encode() not in f.read_bytes() for f in files)
    assert "***" in nbllm.history()["prompt"].iloc[0]


def test_writes_do_not_wait_for_the_disk(local_provider, monkeypatch):
    """A call returns while the writer is still blocked: the row is written afterwards."""
    gate = threading.Event()
    real_write = calllog._Writer._write
    monkeypatch.setattr(calllog._Writer, "_write",
                        lambda self, path, rows: (gate.wait(10), real_write(self, path, rows)))
    answer = nbllm.ask("quick")
    assert answer.text == "Echo: quick"
    assert not nbllm.history.path.exists()  # a synchronous write would have waited for the gate, then written
    gate.set()
    assert list(nbllm.history()["prompt"]) == ["quick"]


def test_the_file_is_sqlite_in_wal_mode(local_provider, tmp_path):
    nbllm.ask("x")
    nbllm.history.flush()
    with sqlite3.connect(tmp_path / "history.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("SELECT prompt FROM calls").fetchall() == [("x",)]


def test_a_version_1_file_is_migrated_and_keeps_its_rows(local_provider, tmp_path):
    old = tmp_path / "history.sqlite"
    with sqlite3.connect(old) as conn:  # the 0.1 schema, with one row
        conn.executescript("""CREATE TABLE calls (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL,
            kind TEXT NOT NULL, provider TEXT, model TEXT, prompt TEXT, system TEXT, settings TEXT, answer TEXT,
            input_tokens INTEGER, output_tokens INTEGER, latency_ms REAL, cost_usd REAL, outcome TEXT NOT NULL,
            error TEXT); PRAGMA user_version = 1;""")
        conn.execute("INSERT INTO calls (time, kind, provider, model, prompt, outcome) VALUES "
                     "('2026-01-01T00:00:00.000+00:00', 'ask', 'openai', 'gpt', 'old question', 'ok')")
    nbllm.ask("new question")
    frame = nbllm.history()
    assert list(frame["prompt"]) == ["old question", "new question"]
    assert frame["asked"].isna().iloc[0] and frame["asked"].iloc[1] == "lmstudio"
    with sqlite3.connect(old) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_default_path_is_the_user_data_dir(monkeypatch):
    from platformdirs import user_data_dir

    monkeypatch.delenv("NBLLM_HISTORY")
    assert calllog.history_path() == Path(user_data_dir("nbllm")) / "history.sqlite"


def test_map_and_compare_are_logged_too(local_provider):
    nbllm.map(["a", "b", "c"], "{}", provider="lmstudio", progress=False)
    nbllm.compare("cmp", providers=["lmstudio"])
    df = nbllm.history(limit=None)
    assert sorted(df["prompt"]) == ["a", "b", "c", "cmp"]


# ---- interrupted calls ---------------------------------------------------------------------


def _last_row_when(condition) -> "pd.Series":
    """The row is written when the cancel reaches nbllm's loop, just after the caller moved on."""
    for _ in range(200):
        df = nbllm.history()
        if len(df) and condition(df.iloc[-1]):
            return df.iloc[-1]
        time.sleep(0.02)
    raise AssertionError(f"no such row in {nbllm.history()}")


def test_a_stream_left_early_is_logged_with_the_text_that_arrived(local_provider):
    local_provider.set(chunk_delay=0.05)
    full = "Echo: one two three four five six seven eight"
    received: list[str] = []
    for chunk in nbllm.stream(full[len("Echo: "):]):
        received.append(chunk)
        if len(received) == 2:
            break
    row = _last_row_when(lambda row: row["outcome"] == "interrupted")
    assert (row["kind"], row["error"], row["prompt"]) == ("stream", "interrupted", full[len("Echo: "):])
    assert row["answer"].startswith("".join(received)) and len(row["answer"]) < len(full)
    assert len(nbllm.history()) == 1


def test_a_cancelled_ask_is_logged(local_provider):
    local_provider.set(mode="hang")

    async def cancel_while_waiting():
        task = asyncio.ensure_future(nbllm.ask_async("never answered"))
        while not local_provider.chat_requests():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_waiting())
    row = _last_row_when(lambda row: True)
    assert (row["kind"], row["outcome"], row["prompt"], row["answer"]) == ("ask", "interrupted", "never answered", "")


def test_an_unwritable_log_never_fails_a_call(local_provider, monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("NBLLM_HISTORY", str(blocker / "history.sqlite"))
    assert nbllm.ask("one").text == "Echo: one" and nbllm.ask("two").text == "Echo: two"
    nbllm.history.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "nbllm" and "call log" in r.getMessage()]
    (line,) = lines
    assert str(blocker / "history.sqlite") in line and "NBLLM_HISTORY" in line and "NBLLM_LOG=0" in line


# ---- cheap rows (issue 14): one look decides whether a row needs scrubbing ------------------------------


_SECRETS = ["sk-unknownKEY0123456789", "xai-abcdefgh12345", "AIzaSyA1234567890abcdefghij", "gsk_abcdefgh1234",
            "hf_abcdefgh1234"]
_CREDENTIALS = ["Bearer tok3nvalue99", "BASIC dXNlcjpwYXNz", "x-api-key: hdrsecret42", "api_key=paramsecret7",
                "https://bob:pw-s3cret@example.com/v1", "https://x.test/m?key=querysecret5"]
_PLAIN = ["summarise", "the", "tokens", "Key", "sk", "bear", "api", "hf", "://", "@", "-", "_", "=", "?", "\n",
          "42", "x", " ", "ſk-abcdefgh123", "é"]


def test_keys_unknown_to_the_process_never_reach_the_log_from_a_map(local_provider, tmp_path):
    """Rows of a map take the fast path when nothing looks like a secret: every shape `scrub` masks (no key
    in the environment) must still be masked in prompts and answers (the fake server echoes the prompt)."""
    prompts = [f"note {secret} end" for secret in _SECRETS + _CREDENTIALS] + ["nothing secret here"]
    nbllm.map(prompts, "{}", provider="lmstudio", progress=False)
    nbllm.history.flush()
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("history.sqlite*"))
    for needle in ["unknownKEY0123456789", "abcdefgh12345", "SyA1234567890", "abcdefgh1234", "tok3nvalue99",
                   "dXNlcjpwYXNz", "hdrsecret42", "paramsecret7", "pw-s3cret", "querysecret5"]:
        assert needle.encode() not in stored, needle
    df = nbllm.history(limit=None)
    assert (df["prompt"] == "nothing secret here").sum() == 1  # a plain row is stored as it was
    assert not set(df["prompt"]) & set(prompts[:-1]) and len(df) == len(prompts)  # each secret's row was scrubbed


def test_the_quick_look_never_misses_what_scrub_would_change(monkeypatch):
    """`might_hold_secret(t)` False must mean `scrub(t) == t`: seeded texts of near-misses, secrets and
    credentials, with a known key too."""
    import random

    from nbllm import errors

    monkeypatch.setattr(errors, "_known", ())
    errors.remember_secrets(["Known-Value-Zq9"])
    try:
        pieces = _PLAIN * 4 + _SECRETS + _CREDENTIALS + ["Known-Value-Zq9", "Known-Value"]
        rng = random.Random(14)
        changed = 0
        for _ in range(3000):
            text = "".join(rng.choice(pieces) + rng.choice(["", " ", "\n"]) for _ in range(rng.randint(1, 6)))
            if errors.scrub(text) != text:
                changed += 1
                assert errors.might_hold_secret(text), text
        assert changed > 500  # the check was exercised (secrets did turn up)
        for secret in _SECRETS + _CREDENTIALS + ["Known-Value-Zq9"]:
            assert errors.scrub(secret) != secret and errors.might_hold_secret(secret)
        assert not errors.might_hold_secret("summarise the text? x = 42, at home")  # the point: most rows skip scrubbing
    finally:
        errors.remember_secrets([])


def test_settings_of_a_row_keep_each_value_as_given(local_provider):
    """The settings column is built once per combination of values: 1 and 1.0 are still told apart."""
    nbllm.ask("a", temperature=1)
    nbllm.ask("b", temperature=1.0)
    nbllm.ask("c", temperature=1)
    temperatures = [json.loads(s)["temperature"] for s in nbllm.history()["settings"]]
    assert temperatures == [1, 1.0, 1] and [type(t) for t in temperatures] == [int, float, int]


def test_thousands_of_rows_queued_at_once_are_all_written_before_history_reads(local_provider):
    from nbllm.request import Answer, describe

    call = describe("row", provider="lmstudio")
    for number in range(2500):  # more than one writer batch (1000): the writer must not stop at one
        calllog.record(call.with_prompt(f"row {number}"), Answer(f"answer {number}", "lmstudio", "m"))
    df = nbllm.history(limit=None)
    assert len(df) == 2500 and df["prompt"].iloc[-1] == "row 2499" and df["answer"].iloc[0] == "answer 0"
