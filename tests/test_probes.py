"""Health probes of every server dialect and every failure shape, with HTTP mocked by respx.

The `httpx2_mock` router refuses any request it has no route for, so these tests
also prove that a probe asks exactly the endpoints it should.
"""

from __future__ import annotations

import httpx2
import pytest

import nbllm

LMS = "http://lms.test:1234"
OLLAMA = "http://ollama.test:11434"
LLAMA = "http://llama.test:8080"


def point(monkeypatch, **urls: str) -> None:
    """Set `{PROVIDER}_BASE_URL`s and re-read the environment."""
    for provider, url in urls.items():
        monkeypatch.setenv(f"{provider.upper()}_BASE_URL", url)
    nbllm.reinit()


def probe(name: str, timeout: float = 1.0) -> nbllm.ProviderHealth:
    return nbllm.health_check([name], timeout=timeout)[name]


def v0_models(*items: tuple[str, str, str]) -> dict:
    return {"object": "list", "data": [{"id": i, "type": t, "state": s} for i, t, s in items]}


# ---- LM Studio ----------------------------------------------------------------------------


def test_lmstudio_reports_the_loaded_model(httpx2_mock, monkeypatch):
    point(monkeypatch, lmstudio=LMS + "/v1")
    route = httpx2_mock.get(LMS + "/api/v0/models").respond(200, json=v0_models(
        ("qwen3-8b", "llm", "not-loaded"), ("nomic-embed", "embeddings", "loaded"), ("gemma-3", "llm", "loaded")))
    h = probe("lmstudio")
    assert route.called
    assert h.connected is True and h.model_detected and h.model_id == "gemma-3"
    assert h.models == ["qwen3-8b", "nomic-embed", "gemma-3"]
    assert h.base_url == LMS + "/v1" and h.error is None and h.latency_ms is not None and h.status == "available"


def test_lmstudio_without_a_loaded_model_offers_the_first(httpx2_mock, monkeypatch):
    point(monkeypatch, lmstudio=LMS + "/v1")
    httpx2_mock.get(LMS + "/api/v0/models").respond(200, json=v0_models(("a", "llm", "not-loaded"),
                                                                       ("b", "llm", "not-loaded")))
    h = probe("lmstudio")
    assert h.connected and h.model_id == "a"


def test_lmstudio_never_offers_an_embedding_model(httpx2_mock, monkeypatch):
    point(monkeypatch, lmstudio=LMS + "/v1")
    httpx2_mock.get(LMS + "/api/v0/models").respond(200, json=v0_models(("nomic-embed", "embeddings", "not-loaded"),
                                                                       ("qwen3-8b", "llm", "not-loaded")))
    h = probe("lmstudio")
    assert h.connected and h.model_id == "qwen3-8b" and h.models == ["nomic-embed", "qwen3-8b"]


def test_lmstudio_falls_back_to_v1_models(httpx2_mock, monkeypatch):
    point(monkeypatch, lmstudio=LMS + "/v1")
    httpx2_mock.get(LMS + "/api/v0/models").respond(404, json={"error": "no such route"})
    fallback = httpx2_mock.get(LMS + "/v1/models").respond(200, json={"data": [{"id": "m1"}, {"id": "m2"}]})
    h = probe("lmstudio")
    assert fallback.called and h.connected and h.models == ["m1", "m2"] and h.model_id == "m1"


def test_configured_model_wins_over_detected(httpx2_mock, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_MODEL", "my-choice")
    point(monkeypatch, lmstudio=LMS + "/v1")
    httpx2_mock.get(LMS + "/api/v0/models").respond(200, json=v0_models(("gemma-3", "llm", "loaded")))
    h = probe("lmstudio")
    assert h.connected and h.model_id == "my-choice" and h.models == ["gemma-3"]


# ---- Ollama ----------------------------------------------------------------------------------


def test_ollama_lists_tags_and_prefers_the_running_model(httpx2_mock, monkeypatch):
    point(monkeypatch, ollama=OLLAMA)
    tags = httpx2_mock.get(OLLAMA + "/api/tags").respond(200, json={"models": [
        {"name": "llama3.2:latest", "model": "llama3.2:latest"}, {"name": "qwen3:8b", "model": "qwen3:8b"}]})
    ps = httpx2_mock.get(OLLAMA + "/api/ps").respond(200, json={"models": [{"name": "qwen3:8b"}]})
    h = probe("ollama")
    assert tags.called and ps.called
    assert h.connected and h.models == ["llama3.2:latest", "qwen3:8b"] and h.model_id == "qwen3:8b"
    assert h.base_url == OLLAMA


def test_ollama_with_nothing_running_uses_first_tag(httpx2_mock, monkeypatch):
    point(monkeypatch, ollama=OLLAMA)
    httpx2_mock.get(OLLAMA + "/api/tags").respond(200, json={"models": [{"model": "phi4"}]})
    httpx2_mock.get(OLLAMA + "/api/ps").respond(500)
    h = probe("ollama")
    assert h.connected and h.model_id == "phi4" and h.model_detected


def test_ollama_with_no_models_pulled_says_what_to_do(httpx2_mock, monkeypatch):
    point(monkeypatch, ollama=OLLAMA)
    httpx2_mock.get(OLLAMA + "/api/tags").respond(200, json={"models": []})
    httpx2_mock.get(OLLAMA + "/api/ps").respond(200, json={"models": []})
    h = probe("ollama")
    assert h.connected is True and not h.model_detected and h.model_id == "llama3.2"
    assert "ollama pull" in h.error


def test_ollama_host_is_probed(httpx2_mock, monkeypatch):
    monkeypatch.delenv("OLLAMA_BASE_URL")
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box.test:11500")
    nbllm.reinit()
    httpx2_mock.get("http://gpu-box.test:11500/api/tags").respond(200, json={"models": [{"name": "m"}]})
    httpx2_mock.get("http://gpu-box.test:11500/api/ps").respond(200, json={"models": []})
    assert probe("ollama").connected


# ---- llama.cpp ---------------------------------------------------------------------------------


def test_llamacpp_health_ok_then_models(httpx2_mock, monkeypatch):
    point(monkeypatch, llamacpp=LLAMA)
    httpx2_mock.get(LLAMA + "/health").respond(200, json={"status": "ok"})
    httpx2_mock.get(LLAMA + "/v1/models").respond(200, json={"data": [{"id": "smollm2.gguf"}]})
    h = probe("llamacpp")
    assert h.connected and h.model_id == "smollm2.gguf" and h.base_url == LLAMA


def test_llamacpp_503_means_loading(httpx2_mock, monkeypatch):
    point(monkeypatch, llamacpp=LLAMA)
    httpx2_mock.get(LLAMA + "/health").respond(503, json={"error": {"message": "Loading model"}})
    h = probe("llamacpp")
    assert h.connected is False and "503" in h.error and "loading" in h.error


def test_llamacpp_without_health_endpoint_falls_back(httpx2_mock, monkeypatch):
    """llama-cpp-python's server has no /health: a 404 there is not a failure."""
    point(monkeypatch, llamacpp=LLAMA)
    httpx2_mock.get(LLAMA + "/health").respond(404)
    httpx2_mock.get(LLAMA + "/v1/models").respond(200, json={"data": [{"id": "smollm2"}]})
    h = probe("llamacpp")
    assert h.connected and h.model_id == "smollm2"


def test_llamacpp_bad_health_status(httpx2_mock, monkeypatch):
    point(monkeypatch, llamacpp=LLAMA)
    httpx2_mock.get(LLAMA + "/health").respond(200, json={"status": "error"})
    h = probe("llamacpp")
    assert h.connected is False and "'error'" in h.error


@pytest.mark.parametrize("port", [8080, 9931])
def test_llamacpp_default_probes_both_ports(httpx2_mock, monkeypatch, port):
    monkeypatch.delenv("LLAMACPP_BASE_URL")
    nbllm.reinit()
    other = 9931 if port == 8080 else 8080
    refused = httpx2_mock.get(f"http://localhost:{other}/health").mock(
        side_effect=httpx2.ConnectError("[Errno 111] Connection refused"))
    httpx2_mock.get(f"http://localhost:{port}/health").respond(200, json={"status": "ok"})
    httpx2_mock.get(f"http://localhost:{port}/v1/models").respond(200, json={"data": [{"id": f"on-{port}"}]})
    h = probe("llamacpp")
    assert refused.called
    assert h.connected and h.base_url == f"http://localhost:{port}" and h.model_id == f"on-{port}"


def test_llamacpp_both_ports_down_names_both(httpx2_mock, monkeypatch):
    monkeypatch.delenv("LLAMACPP_BASE_URL")
    nbllm.reinit()
    for port in (8080, 9931):
        httpx2_mock.get(f"http://localhost:{port}/health").mock(side_effect=httpx2.ConnectError("Connection refused"))
    h = probe("llamacpp")
    assert h.connected is False and ":8080" in h.error and ":9931" in h.error and "refused" in h.error


def test_llamacpp_prefers_an_http_answer_over_a_refusal(httpx2_mock, monkeypatch):
    monkeypatch.delenv("LLAMACPP_BASE_URL")
    nbllm.reinit()
    httpx2_mock.get("http://localhost:8080/health").mock(side_effect=httpx2.ConnectError("Connection refused"))
    httpx2_mock.get("http://localhost:9931/health").respond(503)
    h = probe("llamacpp")
    assert h.connected is False and "loading" in h.error and ":9931" in h.error


def test_llamacpp_configured_url_probes_only_that_address(httpx2_mock, monkeypatch):
    point(monkeypatch, llamacpp="http://localhost:9931")
    httpx2_mock.get("http://localhost:9931/health").respond(200, json={"status": "ok"})
    httpx2_mock.get("http://localhost:9931/v1/models").respond(200, json={"data": []})
    h = probe("llamacpp")  # an unmocked request to :8080 would fail the probe
    assert h.connected and h.base_url == "http://localhost:9931" and h.models == [] and not h.model_detected


# ---- the generic OpenAI-compatible dialect (the vLLM preset, plug-ins) -------------------------


@pytest.fixture
def vllm(monkeypatch):
    monkeypatch.setenv("VLLM_BASE_URL", "http://vllm.test:8000/v1")
    return "http://vllm.test:8000"


def test_openai_dialect_lists_v1_models_with_key(httpx2_mock, monkeypatch, vllm):
    monkeypatch.setenv("VLLM_API_KEY", "k-vllm-secret")
    nbllm.reinit()
    route = httpx2_mock.get(vllm + "/v1/models").respond(200, json={"data": [{"id": "Qwen/Qwen3-8B"}]})
    h = probe("vllm")
    assert h.connected and h.model_id == "Qwen/Qwen3-8B" and h.base_url == vllm + "/v1"
    assert route.calls.last.request.headers["Authorization"] == "Bearer k-vllm-secret"


# ---- every failure shape, for every dialect ----------------------------------------------------

FAILURES = {
    "refused": (dict(side_effect=httpx2.ConnectError("[Errno 111] Connection refused")), "connection refused"),
    "timeout": (dict(side_effect=httpx2.ReadTimeout("timed out")), "timed out"),
    "401": (dict(status_code=401, json={"error": "no"}), "HTTP 401"),
    "404": (dict(status_code=404), "HTTP 404"),
    "503": (dict(status_code=503), "HTTP 503"),
    "500": (dict(status_code=500, text="boom"), "HTTP 500"),
    "bad_json": (dict(status_code=200, content=b"{not json"), "invalid JSON"),
    "garbage_shape": (dict(status_code=200, json=["not", "an", "object"]), "unexpected answer"),
    "wrong_list": (dict(status_code=200, json={"data": "x", "models": 3}), "unexpected answer"),
}

DIALECTS = {"lmstudio": "http://lms.test:1234/v1", "ollama": "http://ollama.test:11434",
            "llamacpp": "http://llama.test:8080", "vllm": "http://vllm.test:8000/v1"}


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("provider", list(DIALECTS))
def test_failure_shapes_are_reported_in_words(httpx2_mock, monkeypatch, vllm, provider, failure):
    mock, words = FAILURES[failure]
    point(monkeypatch, **{provider: DIALECTS[provider]})
    host = DIALECTS[provider].split("//")[1].split(":")[0]
    route = httpx2_mock.route(host=host)
    route.mock(**mock) if "side_effect" in mock else route.respond(**mock)
    h = probe(provider)  # never raises
    assert route.called
    assert h.connected is False and h.status == "down" and not h.model_detected
    assert words in h.error, h.error
    if failure == "503" and provider == "llamacpp":
        assert "loading" in h.error
    assert h.latency_ms is not None and h.latency_ms >= 0


def test_unexpected_exception_in_a_probe_is_reported_not_raised(httpx2_mock, monkeypatch):
    point(monkeypatch, ollama=OLLAMA)
    httpx2_mock.route(host="ollama.test").mock(side_effect=RuntimeError("surprise"))
    h = probe("ollama")
    assert h.connected is False and "surprise" in h.error


def test_disabled_provider_is_not_probed(httpx2_mock, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_ENABLED", "false")
    point(monkeypatch, lmstudio=LMS + "/v1")
    h = probe("lmstudio")
    assert httpx2_mock.calls.call_count == 0
    assert h.status == "disabled" and "--enable lmstudio" in h.error


def test_cloud_providers_are_never_called(httpx2_mock, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k-1")
    monkeypatch.setenv("XAI_API_KEY", "k-2")
    nbllm.reinit()
    health = nbllm.health_check(["openai", "grok", "anthropic"])
    assert httpx2_mock.calls.call_count == 0
    assert health["openai"].configured and health["openai"].connected is None and health["openai"].available
    assert health["grok"].status == "available" and health["anthropic"].status == "not configured"


# ---- what health and nbllm.models() share (one parser per dialect) ------------------------------


def test_llamacpp_router_mode_detects_the_loaded_model_not_the_first(httpx2_mock, monkeypatch):
    point(monkeypatch, llamacpp=LLAMA)
    httpx2_mock.get(LLAMA + "/health").respond(200, json={"status": "ok"})
    httpx2_mock.get(LLAMA + "/v1/models").respond(200, json={"data": [
        {"id": "idle.gguf", "status": {"value": "unloaded"}}, {"id": "busy.gguf", "status": {"value": "loaded"}}]})
    h = probe("llamacpp")
    assert h.connected and h.models == ["idle.gguf", "busy.gguf"] and h.model_id == "busy.gguf"


def test_ollama_garbled_ps_leaves_the_server_up(httpx2_mock, monkeypatch):
    point(monkeypatch, ollama=OLLAMA)
    httpx2_mock.get(OLLAMA + "/api/tags").respond(200, json={"models": [{"name": "phi4"}, {"name": "qwen3:8b"}]})
    httpx2_mock.get(OLLAMA + "/api/ps").respond(200, json={"models": 3})
    h = probe("ollama")
    assert h.connected is True and h.error is None and h.model_id == "phi4" and h.models == ["phi4", "qwen3:8b"]
