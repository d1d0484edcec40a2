"""The ask layer against a real local server: answers, streams, failures."""

from __future__ import annotations

import asyncio

import pytest

import nbllm
from nbllm.errors import ConfigurationError, ModelError


def test_ask_returns_text_and_usage(local_provider):
    answer = nbllm.ask("hello there")
    assert answer.text == "Echo: hello there"
    assert (answer.provider, answer.model) == ("lmstudio", "fake-model")
    assert answer.output_tokens == 3 and answer.latency_ms > 0
    sent = local_provider.chat_requests()[-1]["body"]
    assert sent["max_tokens"] == 1024 and "max_completion_tokens" not in sent


def test_ask_passes_options(local_provider):
    nbllm.ask("hi", system="be brief", temperature=0.1, max_tokens=12)
    body = local_provider.chat_requests()[-1]["body"]
    assert body["temperature"] == 0.1 and body["max_tokens"] == 12
    assert body["messages"][0] == {"role": "system", "content": "be brief"}


def test_ask_async_works_from_another_loop(local_provider):
    answer = asyncio.run(nbllm.ask_async("from a loop"))
    assert answer.text == "Echo: from a loop"


def test_stream_yields_chunks_in_order(local_provider):
    stream = nbllm.stream("one two three")
    chunks = list(stream)
    assert len(chunks) >= 3 and "".join(chunks) == "Echo: one two three"
    assert stream.answer.ok and stream.answer.text == "Echo: one two three"


def test_cut_stream_keeps_partial_text(local_provider):
    local_provider.set(mode="cut_stream", cut_after=2)
    stream = nbllm.stream("one two three four", raise_errors=False)
    chunks = list(stream)
    assert "".join(chunks) == "Echo: one"
    assert stream.answer.text == "Echo: one" and stream.answer.error
    assert "lmstudio" in stream.answer.error


def test_server_error_is_one_model_error(local_provider, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    nbllm.reinit()
    local_provider.set(mode="error", status=500)
    with pytest.raises(ModelError) as info:
        nbllm.ask("x")
    assert "HTTP 500" in str(info.value) and "lmstudio" in str(info.value)
    assert local_provider.url in str(info.value)


def test_429_is_retried_then_succeeds(local_provider):
    local_provider.set(fail_first=2, status=429, retry_after=0.05)
    assert nbllm.ask("again").text == "Echo: again"
    assert len(local_provider.chat_requests()) == 3


def test_empty_prompt_is_a_clear_error(local_provider):
    with pytest.raises(ConfigurationError, match="empty"):
        nbllm.ask("   ")


def test_chat_memory_sends_history(local_provider):
    chat = nbllm.conversation("t")
    chat.reset()
    nbllm.ask("first", chat=chat)
    nbllm.ask("second", chat=chat)
    messages = local_provider.chat_requests()[-1]["body"]["messages"]
    assert [m["content"] for m in messages] == ["first", "Echo: first", "second"]


def test_conversation_shows_its_messages(local_provider):
    chat = nbllm.conversation("shown")
    chat.reset()
    nbllm.ask("my name is Zoe", chat=chat)
    assert chat.turns() == [("user", "my name is Zoe"), ("assistant", "Echo: my name is Zoe")]
    assert repr(chat).splitlines() == [
        "Conversation with 2 messages", "  user: my name is Zoe", "  assistant: Echo: my name is Zoe"]


@pytest.mark.parametrize("option, words", [
    ({"temperature": 5}, "temperature=5 is invalid: it must be between 0 and 2"),
    ({"max_tokens": -3}, "max_tokens=-3 is invalid: it must be between 1 and 1,000,000"),
    ({"timeout": 0}, "timeout=0 is invalid"),
    ({"temperature": "hot"}, "must be a number"),
    ({"colour": "red"}, "unknown option(s) colour"),
])
def test_bad_per_call_options_are_refused_before_sending(local_provider, option, words):
    with pytest.raises(ConfigurationError) as info:
        nbllm.ask("hi", **option)
    assert words in str(info.value)
    assert local_provider.chat_requests() == []


def test_api_errors_carry_no_frames_of_the_loop_thread(monkeypatch):
    import traceback

    with pytest.raises(ModelError) as info:
        nbllm.ask("hi", provider="ollama")
    frames = traceback.extract_tb(info.value.__traceback__)
    assert all("bridge.py" not in f.filename or f.name == "run" for f in frames)
    assert not any("concurrent" in f.filename for f in frames)
    assert "ollama serve" in str(info.value)
