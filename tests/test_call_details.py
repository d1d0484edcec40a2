"""Details of a call that users notice over many calls: what is probed again, what is
sent by default, what a local server with authentication gets, how usage reads."""

from __future__ import annotations

import warnings

import nbllm
from nbllm.config import NbllmConfigWarning
from nbllm.factory import model_settings
from nbllm import routing
from nbllm.registry import get_registry


def probes(server) -> list[str]:
    return [r["path"] for r in server.requests if r["method"] == "GET"]


def test_auto_is_decided_once_then_reused(fake_server, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    nbllm.reinit()
    for _ in range(3):
        assert nbllm.ask("hi", provider="auto").provider == "lmstudio"
    assert len(probes(fake_server)) == 1, probes(fake_server)
    assert len(fake_server.chat_requests()) == 3


def test_a_failed_call_makes_auto_look_again(fake_server, make_server, monkeypatch):
    ollama = make_server(models=["llama3.2"], loaded="llama3.2")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    monkeypatch.setenv("OLLAMA_BASE_URL", ollama.url)
    monkeypatch.setenv("LMSTUDIO_MAX_RETRIES", "0")
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.3")
    nbllm.reinit()
    assert nbllm.ask("one", provider="auto").provider == "lmstudio"
    fake_server.set(mode="error", status=500)
    try:
        nbllm.ask("two", provider="auto")
    except nbllm.ModelError:
        pass
    fake_server.set(mode="hang")  # LM Studio now never answers its probe: auto moves on
    answer = nbllm.ask("three", provider="auto")
    assert answer.provider == "ollama" and "Ollama answered" in answer.reason


def test_named_local_provider_is_probed_once_for_its_model(fake_server, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    nbllm.reinit()
    nbllm.health_check(["lmstudio"])
    before = len(probes(fake_server))
    nbllm.ask("hi", provider="lmstudio")
    assert len(probes(fake_server)) == before, "the health check's detection was reused"


def test_default_temperature_is_not_sent_to_reasoning_models(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-notreal-000000")
    nbllm.reinit()
    registry = get_registry()
    reasoning = nbllm.get_model("openai", "gpt-5-mini")
    plain = nbllm.get_model("lmstudio")
    assert "temperature" not in model_settings(registry.settings("openai"), reasoning)
    assert model_settings(registry.settings("lmstudio"), plain)["temperature"] == 0.7
    assert model_settings(registry.settings("openai"), reasoning, temperature=0.2)["temperature"] == 0.2
    monkeypatch.setenv("OPENAI_TEMPERATURE", "0.3")
    nbllm.reinit()
    assert model_settings(get_registry().settings("openai"), reasoning)["temperature"] == 0.3


def test_local_probe_sends_the_key_when_one_is_set(httpx2_mock, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", "http://lms.test:1234/v1")
    monkeypatch.setenv("LMSTUDIO_API_KEY", "lm-secret-123456")
    nbllm.reinit()
    # The route matches only with the right header; the router refuses any other request.
    route = httpx2_mock.get(
        "http://lms.test:1234/api/v0/models", headers={"Authorization": "Bearer lm-secret-123456"}
    ).respond(200, json={"data": [{"id": "m", "type": "llm", "state": "loaded"}]})
    h = nbllm.health_check(["lmstudio"])["lmstudio"]
    assert route.called and h.connected and h.model_id == "m"


def test_stream_without_usage_reports_unknown_tokens(fake_server, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    nbllm.reinit()
    fake_server.set(send_usage=False)
    stream = nbllm.stream("a b", provider="lmstudio")
    assert "".join(stream) == "Echo: a b"
    assert stream.answer.input_tokens is None and stream.answer.output_tokens is None


def test_reinit_in_a_fresh_process_warns_once(monkeypatch):
    monkeypatch.setenv("OLLAMA_TEMPERATURE", "hot")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nbllm.reinit()
    mine = [w for w in caught if issubclass(w.category, NbllmConfigWarning)]
    assert len(mine) == 1 and "OLLAMA_TEMPERATURE='hot'" in str(mine[0].message)


def test_auto_probes_local_servers_at_the_same_time(make_server, monkeypatch):
    """Each server answers its first probe only when the other's probe has arrived too:
    probed one after the other, the barrier breaks and both would be reported down."""
    import threading

    barrier = threading.Barrier(2, timeout=1.0)
    lms = make_server(barrier=barrier, models=["a"], loaded="a")
    oll = make_server(barrier=barrier, models=["b"], loaded="b")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", lms.url + "/v1")
    monkeypatch.setenv("OLLAMA_BASE_URL", oll.url)
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "3")
    nbllm.reinit()
    choice = nbllm.ask("x", provider="auto")
    assert choice.provider == "lmstudio" and not barrier.broken


def test_offline_auto_prefers_a_cloud_key_over_an_unprobed_server(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0000000000")
    nbllm.reinit()
    choice = routing.choose_offline("auto")
    assert choice.provider == "anthropic" and "ANTHROPIC key is set" in choice.reason
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    nbllm.reinit()
    choice = routing.choose_offline("auto")
    assert choice.provider == "lmstudio" and "not probed" in choice.reason


def test_auto_without_model_detection_is_not_served_from_the_cache(fake_server, monkeypatch):
    import asyncio

    fake_server.set(models=["detected-model"], loaded="detected-model")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    nbllm.reinit()
    assert asyncio.run(nbllm.resolve("auto")).model == "detected-model"
    plain = asyncio.run(nbllm.resolve("auto", auto_detect_model=False))
    assert plain.provider == "lmstudio" and plain.model == "local-model"


def test_reinit_says_when_the_default_is_no_longer_usable(monkeypatch):
    nbllm.use("ollama")
    monkeypatch.setenv("OLLAMA_ENABLED", "false")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nbllm.reinit()
    assert nbllm.current().provider == "auto"
    mine = [str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)]
    assert any("'ollama' is no longer usable" in m and "disabled" in m for m in mine), mine
