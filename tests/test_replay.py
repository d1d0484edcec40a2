"""The replay cache: a real SQLite file per test (conftest points NBLLM_CACHE into tmp_path)."""

from __future__ import annotations

import pytest

import nbllm
from nbllm.errors import ConfigurationError, ModelError
from nbllm.replay import ReplayMiss

from conftest import _closed_port_url, reset_nbllm


def test_cache_mode_is_global_and_checked():
    assert nbllm.cache() == "off"
    assert nbllm.cache("record") == "record" and nbllm.cache() == "record"
    with pytest.raises(ConfigurationError, match="not a cache mode"):
        nbllm.cache("sometimes")
    assert nbllm.cache() == "record"


def test_initial_mode_from_the_environment(monkeypatch):
    monkeypatch.setenv("NBLLM_CACHE_MODE", "replay")
    assert nbllm.cache() == "replay"
    monkeypatch.setenv("NBLLM_CACHE_MODE", "bogus")  # read again by reinit (config is the one reader)
    with pytest.warns(nbllm.NbllmConfigWarning, match="NBLLM_CACHE_MODE='bogus' is not valid: expected one of "
                      "record, replay, off; using 'off'"):
        nbllm.reinit()
    assert nbllm.cache() == "off"


def test_record_then_answer_from_the_store(local_provider):
    nbllm.cache("record")
    first = nbllm.ask("what is 2+2?", temperature=0)
    second = nbllm.ask("what is 2+2?", temperature=0)
    assert len(local_provider.chat_requests()) == 1
    assert not first.cached and second.cached
    assert (second.text, second.provider, second.model) == (first.text, first.provider, first.model)
    assert (second.input_tokens, second.output_tokens) == (first.input_tokens, first.output_tokens)
    assert len(nbllm.cache) == 1
    assert list(nbllm.history()["outcome"]) == ["ok", "cached"]


def test_replay_runs_with_no_provider_reachable(local_provider, monkeypatch):
    nbllm.cache("record")
    recorded = nbllm.ask("offline tomorrow?", system="short")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", _closed_port_url())  # the server is gone
    reset_nbllm()
    nbllm.cache("replay")
    replayed = nbllm.ask("offline tomorrow?", system="short")
    assert replayed.cached and replayed.text == recorded.text and replayed.model == "fake-model"


def test_strict_replay_miss_is_a_clear_error_and_sends_nothing(local_provider):
    nbllm.cache("replay")
    with pytest.raises(ReplayMiss) as info:
        nbllm.ask("never recorded")
    assert isinstance(info.value, ModelError)
    message = str(info.value)
    assert "replay miss" in message and "lmstudio" in message and "nbllm.cache('record')" in message
    assert local_provider.chat_requests() == []


@pytest.mark.parametrize("change", [
    {"temperature": 0.9}, {"max_tokens": 5}, {"system": "other"}, {"model": "other-model"}, {"provider": "ollama"},
])
def test_a_different_setting_is_a_different_call(local_provider, change):
    nbllm.cache("record")
    nbllm.ask("same prompt", provider="lmstudio", temperature=0.1)
    nbllm.cache("replay")
    assert nbllm.ask("same prompt", provider="lmstudio", temperature=0.1).cached
    options = {"provider": "lmstudio", "temperature": 0.1, **change}
    with pytest.raises(ReplayMiss):
        nbllm.ask("same prompt", **options)


def test_chat_history_is_part_of_the_key_and_replays_into_memory(local_provider):
    nbllm.cache("record")
    chat = nbllm.conversation("replay-test")
    chat.reset()
    nbllm.ask("first", chat=chat)
    nbllm.ask("second", chat=chat)
    assert len(local_provider.chat_requests()) == 2
    # Re-running the same conversation from the start replays both turns, memory included.
    nbllm.cache("replay")
    chat.reset()
    assert nbllm.ask("first", chat=chat).cached
    assert nbllm.ask("second", chat=chat).text == "Echo: second"
    assert len(chat) == 4 and len(local_provider.chat_requests()) == 2
    # "second" after a different history is a different call.
    chat.reset()
    with pytest.raises(ReplayMiss):
        nbllm.ask("second", chat=chat)


def test_per_call_cache_option(local_provider):
    assert nbllm.cache() == "off"
    nbllm.ask("per call", cache="record")
    assert nbllm.ask("per call", cache="replay").cached
    assert not nbllm.ask("per call").cached  # the global mode is off
    assert len(local_provider.chat_requests()) == 2
    with pytest.raises(ConfigurationError, match="not a cache mode"):
        nbllm.ask("x", cache="maybe")


def test_streams_record_and_replay_as_one_chunk(local_provider):
    nbllm.cache("record")
    live = list(nbllm.stream("one two three"))
    assert len(live) >= 3
    stream = nbllm.stream("one two three")
    assert list(stream) == ["Echo: one two three"] and stream.answer.cached
    assert len(local_provider.chat_requests()) == 1


def test_a_broken_stream_is_not_recorded(local_provider):
    nbllm.cache("record")
    local_provider.set(mode="cut_stream", cut_after=2)
    list(nbllm.stream("one two three four", raise_errors=False))
    assert len(nbllm.cache) == 0
    nbllm.cache("replay")
    stream = nbllm.stream("one two three four", raise_errors=False)
    assert list(stream) == [] and "replay miss" in stream.answer.error


def test_failures_are_not_recorded(local_provider, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    nbllm.reinit()
    nbllm.cache("record")
    local_provider.set(mode="error", status=500)
    with pytest.raises(ModelError):
        nbllm.ask("fails")
    local_provider.set(mode="ok")
    assert not nbllm.ask("fails").cached and len(nbllm.cache) == 1


def test_map_and_compare_reuse_the_cache(local_provider):
    nbllm.cache("record")
    nbllm.map(["a", "b"], "{}", provider="lmstudio", progress=False)
    nbllm.compare("c", providers=["lmstudio"])
    before = len(local_provider.chat_requests())
    nbllm.cache("replay")
    assert list(nbllm.map(["a", "b"], "{}", provider="lmstudio", progress=False)) == ["Echo: a", "Echo: b"]
    assert nbllm.compare("c", providers=["lmstudio"])["answer"].tolist() == ["Echo: c"]
    assert len(local_provider.chat_requests()) == before


def test_keys_never_reach_the_cache_file(fake_server, monkeypatch, tmp_path):
    key = "sk-test-NEVER-ON-DISK-0123456789"
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    monkeypatch.setenv("LMSTUDIO_API_KEY", key)
    reset_nbllm()
    nbllm.cache("record")
    nbllm.ask(f"the key {key}", provider="lmstudio")
    files = list(tmp_path.glob("cache.sqlite*"))
    assert files and all(key.encode() not in f.read_bytes() for f in files)


def test_clear(local_provider):
    nbllm.cache("record")
    nbllm.ask("x")
    assert nbllm.cache.clear() == 1 and len(nbllm.cache) == 0
    assert "record" in repr(nbllm.cache)


def test_map_replays_with_no_provider_reachable(local_provider, monkeypatch):
    nbllm.use("lmstudio")
    nbllm.cache("record")
    recorded = nbllm.map(["a", "b"], "Q: {}", progress=False)
    monkeypatch.setenv("LMSTUDIO_BASE_URL", _closed_port_url())
    reset_nbllm()
    nbllm.cache("replay")
    nbllm.use("lmstudio")
    replayed = nbllm.map(["a", "b"], "Q: {}", progress=False)
    assert list(replayed) == list(recorded) == ["Echo: Q: a", "Echo: Q: b"]
    assert nbllm.ask("Q: a").cached  # map and ask share keys


# ---- a store that cannot be used ---------------------------------------------------------


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "nbllm" and r.levelname == "WARNING"]


def test_an_unwritable_cache_costs_one_warning_never_an_answer(local_provider, monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("NBLLM_CACHE", str(blocker / "cache.sqlite"))  # under a regular file: cannot exist
    nbllm.cache("record")
    assert nbllm.ask("paid for").text == "Echo: paid for"
    assert "".join(nbllm.stream("streamed too")) == "Echo: streamed too"
    assert nbllm.ask("and again").text == "Echo: and again"
    (line,) = _warnings(caplog)
    assert str(blocker / "cache.sqlite") in line and "NBLLM_CACHE" in line and "nbllm.cache('off')" in line
    assert "\n" not in line and "Traceback" not in caplog.text
    assert list(nbllm.history()["outcome"]) == ["ok", "ok", "ok"]


def test_a_corrupt_cache_is_a_miss_except_in_strict_replay(local_provider, monkeypatch, tmp_path, caplog):
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"this is not a SQLite database, not even close" * 100)
    monkeypatch.setenv("NBLLM_CACHE", str(broken))
    nbllm.cache("record")
    assert nbllm.ask("still answered").text == "Echo: still answered"
    assert len(_warnings(caplog)) == 1 and str(broken) in _warnings(caplog)[0]
    nbllm.cache("replay")
    with pytest.raises(ConfigurationError, match="cannot be read") as info:
        nbllm.ask("still answered")
    assert str(broken) in str(info.value) and "NBLLM_CACHE" in str(info.value)
    with pytest.raises(ConfigurationError, match="NBLLM_CACHE"):
        len(nbllm.cache)
    assert len(local_provider.chat_requests()) == 1  # strict replay sent nothing
