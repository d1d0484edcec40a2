"""Provider batch APIs (nbllm/provider_batches.py): submit → status → collect, through a restart.

OpenAI's files/batches protocol is played by the fake server (tests/fakeserver.py), both as an
OpenAI-compatible server (`OPENAI_BASE_URL`: nbllm writes Chat Completions lines) and as
api.openai.com itself (pydantic-ai's Responses API batch); Anthropic's Message Batches by respx.
"""

from __future__ import annotations

import json

import pytest
from conftest import reset_nbllm

from nbllm import bridge, clients, pipeline
from nbllm import provider_batches as pb
from nbllm.errors import ConfigurationError, ModelError

SECRET = "sk-test-batch-secret-0000000000000000"


def _openai_on(server, monkeypatch, model="fake-model", key=None):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_MODEL", model)
    if key:
        monkeypatch.setenv("OPENAI_API_KEY", key)
    reset_nbllm()


def _submitted(prompts, **options):
    call = pipeline.describe("x", provider=options.pop("provider", "openai"), **options)
    target = bridge.run(pipeline.route(call))
    return call, bridge.run(pb.submit(call, target, prompts))


def _poll_until_ended(ticket, limit=10):
    for _ in range(limit):
        state = bridge.run(pb.status(ticket))
        if state.ended:
            return state
    raise AssertionError(f"the batch never ended: {state}")


def test_submit_status_collect_against_a_files_batches_server(fake_server, monkeypatch):
    _openai_on(fake_server, monkeypatch)
    call, ticket = _submitted({"r0": "first", "r1": "second"}, system="Be brief.", max_tokens=40, temperature=0.3)
    assert ticket.protocol == "openai-files" and ticket.total == 2
    lines = fake_server.batch_lines()
    assert [line["custom_id"] for line in lines] == ["r0", "r1"]
    assert {line["url"] for line in lines} == {"/v1/chat/completions"} and {line["method"] for line in lines} == {"POST"}
    body = lines[1]["body"]
    assert body["model"] == "fake-model" and body["max_tokens"] == 40 and body["temperature"] == 0.3
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "second"}]
    created = [r for r in fake_server.requests if r["path"] == "/v1/batches"]
    assert created[0]["body"]["endpoint"] == "/v1/chat/completions" and created[0]["body"]["completion_window"] == "24h"

    first = bridge.run(pb.status(ticket))
    assert (first.state, first.total, first.ended) == ("submitted", 2, False)
    state = _poll_until_ended(ticket)
    assert (state.state, state.done, state.failed, state.total) == ("done", 2, 0, 2)
    results = bridge.run(pb.collect(ticket))
    assert {k: v.text for k, v in results.items()} == {"r0": "Echo: first", "r1": "Echo: second"}
    answer = results["r0"]
    assert (answer.input_tokens, answer.output_tokens) == (7, 2)
    assert (answer.cost_usd, answer.cost_source) == (0.0, "local")  # a self-hosted server costs nothing


def test_collect_while_running_returns_nothing_yet(fake_server, monkeypatch):
    _openai_on(fake_server, monkeypatch)
    fake_server.set(batch_polls=100)
    _, ticket = _submitted({"r0": "a"})
    assert bridge.run(pb.collect(ticket)) == {}
    assert bridge.run(pb.status(ticket)).state == "running"


def test_a_restart_between_submit_and_collect_loses_nothing(fake_server, monkeypatch):
    _openai_on(fake_server, monkeypatch)
    fake_server.set(batch_polls=3)
    _, ticket = _submitted({f"r{i}": f"prompt {i}" for i in range(5)})
    saved = ticket.to_json()
    assert "sk-" not in saved and "Authorization" not in saved
    # the kernel dies: every client, model and setting nbllm held is gone
    del ticket
    reset_nbllm()
    clients.clear()
    bridge.shutdown()
    again = pb.BatchTicket.from_json(saved)
    state = _poll_until_ended(again)
    assert state.state == "done" and state.done == 5
    results = bridge.run(pb.collect(again))
    assert [results[f"r{i}"].text for i in range(5)] == [f"Echo: prompt {i}" for i in range(5)]
    assert len([r for r in fake_server.requests if r["path"] == "/v1/batches"]) == 1  # submitted once


def test_per_request_errors_stay_errors(fake_server, monkeypatch):
    _openai_on(fake_server, monkeypatch)
    fake_server.set(batch_fail_ids=("r1",))
    _, ticket = _submitted({"r0": "ok", "r1": "refused", "r2": "ok too"})
    state = _poll_until_ended(ticket)
    assert (state.done, state.failed) == (2, 1)
    results = bridge.run(pb.collect(ticket))
    assert results["r0"].text == "Echo: ok" and results["r2"].text == "Echo: ok too"
    error = results["r1"]
    assert isinstance(error, ModelError) and error.status == 400 and not error.retryable
    assert "fake failure 400 for r1" in str(error)


def test_an_expired_batch_keeps_what_ran_and_marks_the_rest(fake_server, monkeypatch):
    _openai_on(fake_server, monkeypatch)
    fake_server.set(batch_outcome="expired", batch_expire_after=1)
    _, ticket = _submitted({"r0": "ran", "r1": "never", "r2": "never either"})
    assert _poll_until_ended(ticket).state == "expired"
    results = bridge.run(pb.collect(ticket))
    assert results["r0"].text == "Echo: ran"
    for key in ("r1", "r2"):
        assert isinstance(results[key], ModelError) and results[key].retryable
        assert "expired" in str(results[key])


def test_cancel(fake_server, monkeypatch):
    _openai_on(fake_server, monkeypatch)
    fake_server.set(batch_polls=100)
    _, ticket = _submitted({"r0": "a", "r1": "b"})
    bridge.run(pb.cancel(ticket))
    assert bridge.run(pb.status(ticket)).state == "cancelled"
    results = bridge.run(pb.collect(ticket))
    assert set(results) == {"r0", "r1"} and all("cancelled" in str(e) for e in results.values())
    assert any(r["path"] == "/v1/batches/batch_0001/cancel" for r in fake_server.requests)


def test_openai_itself_goes_through_pydantic_ais_responses_batch(fake_server, monkeypatch):
    """The fake server plays api.openai.com (nbllm must not treat it as a self-hosted server)."""
    import nbllm.health
    import nbllm.request

    monkeypatch.setattr(nbllm.health, "self_hosted", lambda spec, settings: False)
    monkeypatch.setattr(nbllm.request, "self_hosted", lambda spec, settings: False, raising=False)
    _openai_on(fake_server, monkeypatch, model="gpt-4o-mini", key=SECRET)
    _, ticket = _submitted({"r0": "hello", "r1": "two"}, system="Be brief.", max_tokens=30)
    assert ticket.protocol == "openai-responses"
    saved = ticket.to_json()
    assert SECRET not in saved and json.loads(json.loads(saved)["handle"]["group"])["credential"] == ""
    line = fake_server.batch_lines()[0]
    assert line["url"] == "/v1/responses" and line["body"]["model"] == "gpt-4o-mini"
    assert line["body"]["max_output_tokens"] == 30 and line["body"]["instructions"] == "Be brief."
    reset_nbllm()
    clients.clear()
    again = pb.BatchTicket.from_json(saved)
    assert _poll_until_ended(again).state == "done"
    results = bridge.run(pb.collect(again))
    answer = results["r1"]
    assert answer.text == "Echo: two" and (answer.input_tokens, answer.output_tokens) == (7, 2)
    live = (7 * 0.15 + 2 * 0.60) / 1e6  # gpt-4o-mini's live price per token, USD
    assert answer.cost_source == "genai-prices" and answer.cost_usd == pytest.approx(live / 2)


def test_a_provider_without_a_batch_api_is_one_line(local_provider):
    call = pipeline.describe("x", provider="lmstudio")
    target = bridge.run(pipeline.route(call))
    with pytest.raises(ConfigurationError) as info:
        bridge.run(pb.submit(call, target, {"r0": "a"}))
    message = str(info.value)
    assert "\n" not in message and message.startswith("lmstudio has no batch API")
    assert "openai" in message and "anthropic" in message
    assert not [r for r in local_provider.requests if "/files" in r["path"] or "/batches" in r["path"]]


def test_a_server_that_lacks_the_endpoints_is_one_line(fake_server, monkeypatch):
    _openai_on(fake_server, monkeypatch)
    fake_server.set(mode="error", status=404)
    with pytest.raises(ConfigurationError) as info:
        _submitted({"r0": "a"})
    assert "has no batch API" in str(info.value) and "\n" not in str(info.value)


def test_output_type_is_refused_where_nbllm_writes_the_lines(fake_server, monkeypatch):
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str

    _openai_on(fake_server, monkeypatch)
    with pytest.raises(ConfigurationError, match="output_type= cannot go through"):
        _submitted({"r0": "a"}, output_type=Person)
    assert not fake_server.requests


def test_bad_custom_ids_and_tickets(fake_server, monkeypatch):
    _openai_on(fake_server, monkeypatch)
    with pytest.raises(ConfigurationError, match="custom_id 'row 1'"):
        _submitted({"row 1": "a"})
    with pytest.raises(ConfigurationError, match="not a batch ticket"):
        pb.BatchTicket.from_json("{nope")


def test_a_ticket_is_refused_where_the_provider_now_points_elsewhere(fake_server, make_server, monkeypatch):
    _openai_on(fake_server, monkeypatch)
    _, ticket = _submitted({"r0": "a"})
    other = make_server()
    _openai_on(other, monkeypatch)
    with pytest.raises(ConfigurationError, match="set OPENAI_BASE_URL back"):
        bridge.run(pb.status(ticket))
    assert not other.requests


# ---- Anthropic's Message Batches, mocked -------------------------------------------------------


_API = "https://api.anthropic.com/v1/messages/batches"


def _anthropic_batch(status="in_progress", succeeded=0, errored=0, processing=2, results=False):
    return {"id": "msgbatch_01", "type": "message_batch", "processing_status": status,
            "request_counts": {"processing": processing, "succeeded": succeeded, "errored": errored,
                               "canceled": 0, "expired": 0},
            "created_at": "2026-12-01T10:00:00Z", "expires_at": "2026-12-02T10:00:00Z",
            "ended_at": "2026-12-01T10:05:00Z" if status == "ended" else None, "cancel_initiated_at": None,
            "archived_at": None, "results_url": f"{_API}/msgbatch_01/results" if results else None}


def test_anthropic_message_batches(httpx2_mock, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_MODEL", "claude-haiku-4-5")
    reset_nbllm()
    created = httpx2_mock.post(url__startswith=_API).respond(200, json=_anthropic_batch())
    call, ticket = _submitted({"r0": "hello", "r1": "fail"}, provider="anthropic", system="Be brief.", max_tokens=64)
    assert ticket.protocol == "anthropic" and ticket.batch_id == "msgbatch_01"
    sent = json.loads(created.calls.last.request.content)
    assert [r["custom_id"] for r in sent["requests"]] == ["r0", "r1"]
    params = sent["requests"][0]["params"]
    assert params["model"] == "claude-haiku-4-5" and params["max_tokens"] == 64
    assert params["messages"][0]["role"] == "user" and "hello" in json.dumps(params["messages"][0]["content"])
    assert "Be brief." in json.dumps(params["system"])
    saved = ticket.to_json()
    assert SECRET not in saved

    httpx2_mock.get(f"{_API}/msgbatch_01").mock(side_effect=[
        httpx2_response(_anthropic_batch()),
        httpx2_response(_anthropic_batch("ended", succeeded=1, errored=1, processing=0, results=True)),
        httpx2_response(_anthropic_batch("ended", succeeded=1, errored=1, processing=0, results=True)),
        httpx2_response(_anthropic_batch("ended", succeeded=1, errored=1, processing=0, results=True)),
    ])
    lines = [
        {"custom_id": "r0", "result": {"type": "succeeded", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "Hi there."}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 1000, "output_tokens": 100}}}},
        {"custom_id": "r1", "result": {"type": "errored", "error": {"type": "error", "error": {
            "type": "invalid_request_error", "message": "prompt is too long"}}}},
    ]
    httpx2_mock.get(f"{_API}/msgbatch_01/results").respond(
        200, content="\n".join(json.dumps(line) for line in lines).encode())
    reset_nbllm()
    clients.clear()
    again = pb.BatchTicket.from_json(saved)
    assert bridge.run(pb.status(again)).state == "running"
    state = bridge.run(pb.status(again))
    assert (state.state, state.done, state.failed, state.total) == ("done", 1, 1, 2)
    results = bridge.run(pb.collect(again))
    assert results["r0"].text == "Hi there." and (results["r0"].input_tokens, results["r0"].output_tokens) == (1000, 100)
    live = (1000 * 1.0 + 100 * 5.0) / 1e6  # claude-haiku-4-5: $1 / $5 per million tokens live
    assert results["r0"].cost_usd == pytest.approx(live / 2)
    assert isinstance(results["r1"], ModelError) and results["r1"].status == 400
    assert "prompt is too long" in str(results["r1"])


def httpx2_response(payload):
    import httpx  # respx builds its side effects' responses with httpx's class; pytest-httpx2 converts them

    return httpx.Response(200, json=payload)
