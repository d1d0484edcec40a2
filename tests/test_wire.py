"""The wire path (nbllm/wire.py): text-only calls to local OpenAI-compatible servers, straight on httpx2.

Reply shapes come from respx routes (`httpx2_mock`); the last test runs a real ask and stream in a
fresh process against the fake server and checks that pydantic-ai was never imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from conftest import reset_nbllm
from pydantic import BaseModel

import nbllm
from nbllm import wire
from nbllm.errors import ModelError
from nbllm.registry import get_registry
from nbllm.request import Target, describe

BASE = "http://lms.test:1234/v1"
URL = BASE + "/chat/completions"
KEY = "sk-wire-secret-0123456789"


@pytest.fixture
def lms(monkeypatch: pytest.MonkeyPatch, httpx2_mock: Any) -> Any:
    """lmstudio at a respx-mocked address, its model named (no detection), one retry, a key."""
    for key, value in {"LMSTUDIO_BASE_URL": BASE, "LMSTUDIO_MODEL": "m1", "LMSTUDIO_MAX_RETRIES": "1",
                       "LMSTUDIO_API_KEY": KEY, "LMSTUDIO_TIMEOUT": "2", "NBLLM_PROVIDER": "lmstudio"}.items():
        monkeypatch.setenv(key, value)
    reset_nbllm()
    return httpx2_mock


def completion(content: Any = "Paris.", usage: dict[str, int] | None = None, finish: str = "stop") -> dict[str, Any]:
    body: dict[str, Any] = {"id": "c1", "object": "chat.completion", "created": 1, "model": "server-name",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                         "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return body


def sse(*events: Any, done: bool = True) -> bytes:
    lines = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    return b"".join(lines) + (b"data: [DONE]\n\n" if done else b"")


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"id": "c1", "object": "chat.completion.chunk", "model": "server-name",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def sent(route: Any, index: int = -1) -> tuple[dict[str, Any], httpx2.Headers]:
    request = route.calls[index].request
    return json.loads(request.content), request.headers


# ---- what is sent, what comes back ---------------------------------------------------------------


def test_a_reply_becomes_the_same_answer(lms):
    route = lms.post(URL).respond(200, json=completion(usage={"prompt_tokens": 9, "completion_tokens": 2}))
    answer = nbllm.ask("capital of France?", system="be brief", temperature=0.2, max_tokens=30)
    assert (answer.text, answer.provider, answer.model) == ("Paris.", "lmstudio", "m1")
    assert (answer.input_tokens, answer.output_tokens, answer.cost_usd, answer.cost_source) == (9, 2, 0.0, "local")
    assert answer.attempts == 1 and answer.ok and answer.latency_ms > 0 and answer.messages == []
    body, headers = sent(route)
    assert body == {"model": "m1", "stream": False, "max_tokens": 30, "temperature": 0.2, "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "capital of France?"}]}
    assert headers["authorization"] == f"Bearer {KEY}" and KEY not in str(route.calls[-1].request.url)


def test_no_key_sends_no_authorization(lms, monkeypatch):
    monkeypatch.delenv("LMSTUDIO_API_KEY")
    reset_nbllm()
    route = lms.post(URL).respond(200, json=completion())
    assert nbllm.ask("hi").text == "Paris."
    assert "authorization" not in sent(route)[1]
    assert "system" not in json.dumps(sent(route)[0]["messages"])  # no system prompt: no system message


def test_thinking_is_not_text_and_missing_usage_is_unknown(lms):
    lms.post(URL).respond(200, json=completion("<think>hmm</think>\n\nParis."))
    answer = nbllm.ask("hi")
    assert answer.text == "\n\nParis." and answer.input_tokens is None and answer.output_tokens is None


# ---- failures: the same words as the pydantic-ai path ----------------------------------------------


def test_401_names_the_key_and_never_shows_it(lms):
    route = lms.post(URL).respond(401, json={"error": {"message": f"bad key Bearer {KEY}"}})
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi")
    text = str(info.value)
    assert "HTTP 401: the server refused the credentials" in text and "check LMSTUDIO_API_KEY" in text
    assert KEY not in text and info.value.status == 401 and not info.value.retryable
    assert route.call_count == 1  # not retried


def test_404_points_at_the_model_and_url(lms):
    lms.post(URL).respond(404, json={"error": {"message": "model m1 not loaded"}})
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi")
    assert "HTTP 404" in str(info.value) and "model m1 not loaded" in str(info.value)
    assert info.value.hint == "check the model name (LMSTUDIO_MODEL) and base URL (LMSTUDIO_BASE_URL)"


@pytest.mark.parametrize("header,expected", [("0.25", 0.25), (formatdate(usegmt=True), 0.0)])
def test_429_carries_retry_after_and_is_retried(lms, header, expected):
    limited = httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"Retry-After": header})
    route = lms.post(URL).mock(side_effect=[limited, httpx.Response(200, json=completion())])
    answer = nbllm.ask("hi")
    assert answer.text == "Paris." and answer.attempts == 2 and route.call_count == 2
    lms.post(URL).respond(429, json={"error": {"message": "slow down"}}, headers={"Retry-After": header})
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi", max_retries=0)
    assert "HTTP 429: rate limited" in str(info.value) and "slow down" in str(info.value)
    assert info.value.retry_after == pytest.approx(expected, abs=1.5) and info.value.retryable


def test_500_is_retryable(lms):
    route = lms.post(URL).respond(500, json={"error": {"message": "boom"}})
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi", max_retries=0)
    assert "HTTP 500: server error" in str(info.value) and info.value.retryable and info.value.status == 500
    # The server's own message is quoted once (issue 15: an HTTP failure says what the server said).
    assert str(info.value).count('(the server says: "boom")') == 1 and route.call_count == 1


def test_a_timeout_says_which_clock(lms):
    lms.post(URL).mock(side_effect=httpx2.ReadTimeout("read timed out"))
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi", max_retries=0, timeout=2)
    assert "timed out after 2 s (the whole reply must arrive within the timeout)" in str(info.value)
    assert "LMSTUDIO_TIMEOUT" in str(info.value) and info.value.retryable
    stream = nbllm.stream("hi", max_retries=0, timeout=2)
    with pytest.raises(ModelError) as info:
        list(stream)
    assert "timed out after 2 s (no first chunk arrived in time)" in str(info.value)


def test_refused_is_refused(lms):
    lms.post(URL).mock(side_effect=httpx2.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi")
    assert "connection refused (nothing is listening)" in str(info.value) and not info.value.retryable


@pytest.mark.parametrize("content,words", [
    (b"{not json", "Failed to decode response as JSON"),
    (b"", "Failed to decode response as JSON"),
    (b'{"object": "chat.completion"}', "no choices in the reply"),
])
def test_a_malformed_reply(lms, content, words):
    lms.post(URL).respond(200, content=content, headers={"Content-Type": "application/json"})
    with pytest.raises(ModelError) as info:
        nbllm.ask("hi")
    assert "the server sent a malformed answer" in str(info.value) and words in str(info.value)
    assert not info.value.retryable


# ---- streams ---------------------------------------------------------------------------------------


def test_a_stream_yields_deltas_and_its_usage(lms):
    body = sse(chunk(""), chunk("Par"), chunk("is."), chunk(finish="stop"),
               {"id": "c1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
    route = lms.post(URL).respond(200, content=body, headers={"Content-Type": "text/event-stream"})
    stream = nbllm.stream("hi")
    assert list(stream) == ["Par", "is."]
    answer = stream.answer
    assert answer.text == "Paris." and (answer.input_tokens, answer.output_tokens) == (5, 3)
    assert answer.cost_usd == 0.0 and answer.ok
    request, _ = sent(route)
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}


def test_a_stream_skips_thinking_deltas(lms):
    body = sse(chunk("<think>"), chunk("hmm"), chunk("</think>"), chunk("Paris"), chunk(finish="stop"))
    lms.post(URL).respond(200, content=body, headers={"Content-Type": "text/event-stream"})
    assert list(nbllm.stream("hi")) == ["Paris"]


def test_a_stream_cut_before_its_finish_keeps_its_text(lms):
    route = lms.post(URL).respond(200, content=sse(chunk("Par"), chunk("is"), done=False),
                                  headers={"Content-Type": "text/event-stream"})
    stream = nbllm.stream("hi")
    with pytest.raises(ModelError) as info:
        list(stream)
    assert "cut off before it was complete (the stream ended without a finish reason)" in str(info.value)
    assert stream.answer.text == "Paris" and route.call_count == 1  # text had arrived: never sent twice


class _Dropped(httpx.AsyncByteStream):
    """One event, then the connection drops."""

    async def __aiter__(self):
        yield sse(chunk("Hello"), done=False)
        raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")


def test_a_dropped_stream_keeps_its_text(lms):
    lms.post(URL).mock(return_value=httpx.Response(200, stream=_Dropped(),
                                                    headers={"Content-Type": "text/event-stream"}))
    stream = nbllm.stream("hi")
    with pytest.raises(ModelError) as info:
        list(stream)
    assert "cut off before it was complete (the connection closed mid-reply)" in str(info.value)
    assert stream.answer.text == "Hello" and info.value.retryable


@pytest.mark.parametrize("content,words", [
    (b"", "no valid stream events"), (b"{not json", "no valid stream events"),
    (b"data: {oops\n\n", "a stream event is not JSON"),
])
def test_a_garbled_stream_is_malformed(lms, content, words):
    lms.post(URL).respond(200, content=content, headers={"Content-Type": "text/event-stream"})
    with pytest.raises(ModelError) as info:
        list(nbllm.stream("hi"))
    assert "the server sent a malformed answer" in str(info.value) and words in str(info.value)


# ---- which calls take the wire path --------------------------------------------------------------


class City(BaseModel):
    name: str


def _target(provider: str, model: str = "m1") -> Target:
    registry = get_registry()
    return Target(registry.require(provider)[0], registry.settings(provider), model)


def test_only_text_calls_to_local_openai_compatible_servers(lms, monkeypatch):
    text = describe("hi", provider="lmstudio")
    assert wire.serves(text, _target("lmstudio")) and wire.serves(text, _target("ollama"))
    assert not wire.serves(describe("hi", provider="lmstudio", output_type=City), _target("lmstudio"))
    assert not wire.serves(describe("hi", provider="lmstudio", chat=nbllm.conversation()), _target("lmstudio"))
    assert not wire.serves(text, _target("lmstudio", "gpt-5-mini"))  # a reasoning profile: pydantic-ai's rules
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-0123456789abc")
    reset_nbllm()
    assert not wire.serves(text, _target("openai", "gpt-4o"))  # the cloud: pydantic-ai
    monkeypatch.setenv("OPENAI_BASE_URL", "http://gpu:8000/v1")
    reset_nbllm()
    assert wire.serves(text, _target("openai", "qwen3"))  # your own machine: the wire


def test_chat_memory_still_works_on_a_local_server(lms):
    lms.post(URL).mock(side_effect=[httpx.Response(200, json=completion("One.")),
                                    httpx.Response(200, json=completion("Two."))])
    chat = nbllm.conversation()
    chat.reset()
    assert nbllm.ask("first", chat=chat).text == "One."
    assert nbllm.ask("second", chat=chat).text == "Two."
    body = json.loads(lms.calls[-1].request.content)
    assert [m["content"] for m in body["messages"]] == ["first", "One.", "second"]


def test_the_wire_path_imports_no_pydantic_ai(fake_server):
    """A fresh process: an ask, a stream and a map to a local server never import pydantic-ai or openai
    (importing them is what made the first `%%llm` wait ~660 ms)."""
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["LMSTUDIO_BASE_URL"] = {fake_server.url!r}
        os.environ["LMSTUDIO_MODEL"] = "fake-model"
        import nbllm
        assert nbllm.ask("one", provider="lmstudio").text == "Echo: one"
        assert "".join(nbllm.stream("two", provider="lmstudio")) == "Echo: two"
        assert list(nbllm.map(["a"], "{{value}}", provider="lmstudio", progress=False)) == ["Echo: a"]
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic_ai", "openai")))
    """)
    env = {k: v for k, v in __import__("os").environ.items()}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env,
                          cwd=str(Path(__file__).parent.parent))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _idle_connections(client: Any) -> int:
    """How many connections an httpx2 client's pool holds (httpx2/httpcore2 internals: a test's view only)."""
    return len(client._transport._pool.connections)


def test_a_map_brings_its_own_connections_and_closes_them(local_provider, monkeypatch):
    """A map's requests go through a pool of their own, closed at its end: the shared pool that single asks
    use is no bigger after a map at c=16 (httpcore2 checks every idle connection on each request)."""
    from nbllm import bridge, clients

    assert nbllm.ask("warm").ok
    shared = clients._per_loop[bridge.get_loop()][("wire",)]
    built: list[Any] = []
    new_client = wire._new_client
    monkeypatch.setattr(wire, "_new_client", lambda: built.append(new_client()) or built[-1])
    before = _idle_connections(shared)
    result = nbllm.map([f"p{i}" for i in range(48)], "{}", concurrency=16, progress=False)
    assert result.attrs["nbllm"]["failed"] == 0 and len(local_provider.chat_requests()) == 49
    assert _idle_connections(shared) == before <= 1
    assert nbllm.ask("after").ok and _idle_connections(shared) == before
    assert len(built) == 1 and built[0].is_closed  # the map's own pool, closed at its end
