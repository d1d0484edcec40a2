"""`nbllm.models(provider)`: what each endpoint lists, in its own dialect.

Cloud shapes are mocked with respx (`httpx2_mock` refuses any request it has no route
for, so these tests also prove which endpoint is asked, with which headers, and that the
key never travels in the URL). Local dialects are asked of real fake servers.
"""

from __future__ import annotations

import httpx2
import pandas as pd
import pytest

import nbllm
from nbllm.listing import COLUMNS

SECRET = "sk-nbllm-LIST-SECRET-7777"


def listed(frame) -> list[str]:
    return frame["model"].tolist()


def default_of(frame) -> list[str]:
    return frame.loc[frame["default"], "model"].tolist()


def only_request(route) -> httpx2.Request:
    assert route.call_count == 1
    return route.calls.last.request


def assert_key_not_in_url(route) -> None:
    for call in route.calls:
        assert SECRET not in str(call.request.url)


# ---- cloud: OpenAI-compatible ---------------------------------------------------------------

OPENAI_COMPATIBLE = {
    "openai": ("OPENAI_API_KEY", "https://api.openai.com/v1/models"),
    "grok": ("XAI_API_KEY", "https://api.x.ai/v1/models"),
    "openrouter": ("OPENROUTER_API_KEY", "https://openrouter.ai/api/v1/models"),
    "groq": ("GROQ_API_KEY", "https://api.groq.com/openai/v1/models"),
    "mistral": ("MISTRAL_API_KEY", "https://api.mistral.ai/v1/models"),
    "deepseek": ("DEEPSEEK_API_KEY", "https://api.deepseek.com/models"),
    "together": ("TOGETHER_API_KEY", "https://api.together.xyz/v1/models"),
    "fireworks": ("FIREWORKS_API_KEY", "https://api.fireworks.ai/inference/v1/models"),
    "cerebras": ("CEREBRAS_API_KEY", "https://api.cerebras.ai/v1/models"),
}


@pytest.mark.parametrize("provider", list(OPENAI_COMPATIBLE))
def test_openai_compatible_cloud_lists_with_bearer(httpx2_mock, monkeypatch, provider):
    variable, url = OPENAI_COMPATIBLE[provider]
    monkeypatch.setenv(variable, SECRET)
    monkeypatch.setenv(f"{provider.upper()}_MODEL", "model-b")
    nbllm.reinit()
    route = httpx2_mock.get(url).respond(200, json={"object": "list", "data": [
        {"id": "model-a", "object": "model", "owned_by": "vendor-a", "context_length": 131072},
        {"id": "model-b", "object": "model", "owned_by": "vendor-b", "context_window": 8192},
        {"object": "model"},  # no id: skipped, not a crash
    ]})
    frame = nbllm.models(provider)
    request = only_request(route)
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert_key_not_in_url(route)
    assert list(frame.columns) == COLUMNS
    assert listed(frame) == ["model-a", "model-b"]
    assert set(frame["provider"]) == {provider}
    assert frame["owned_by"].tolist() == ["vendor-a", "vendor-b"]
    assert frame["context_length"].tolist() == [131072, 8192]
    assert default_of(frame) == ["model-b"]  # the configured model is marked


def test_the_catalog_default_model_is_marked_for_a_cloud_provider(httpx2_mock, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    nbllm.reinit()
    httpx2_mock.get("https://api.openai.com/v1/models").respond(200, json={"data": [
        {"id": "gpt-4.1"}, {"id": "gpt-5-mini"}]})
    assert default_of(nbllm.models("openai")) == ["gpt-5-mini"]


def test_provider_model_text_marks_that_model(httpx2_mock, monkeypatch):
    monkeypatch.setenv("GROQ_API_KEY", SECRET)
    nbllm.reinit()
    httpx2_mock.get("https://api.groq.com/openai/v1/models").respond(200, json={"data": [
        {"id": "llama-3.1-8b-instant"}, {"id": "openai/gpt-oss-20b"}]})
    frame = nbllm.models("groq:llama-3.1-8b-instant")
    assert default_of(frame) == ["llama-3.1-8b-instant"]


def test_an_alias_lists_what_it_names(httpx2_mock, monkeypatch):
    from nbllm.endpoints import Alias

    monkeypatch.setenv("GROQ_API_KEY", SECRET)
    nbllm.reinit()
    nbllm.get_registry().aliases["fast"] = Alias("fast", "groq:llama-3.1-8b-instant")  # as nbllm.alias() sets it
    route = httpx2_mock.get("https://api.groq.com/openai/v1/models").respond(200, json={"data": [
        {"id": "llama-3.1-8b-instant"}, {"id": "openai/gpt-oss-20b"}]})
    frame = nbllm.models("fast")
    assert route.call_count == 1
    assert set(frame["provider"]) == {"groq"} and default_of(frame) == ["llama-3.1-8b-instant"]


def test_auto_lists_the_provider_it_picks(make_server, monkeypatch):
    server = make_server(models=["picked"])
    monkeypatch.setenv("LMSTUDIO_BASE_URL", server.url + "/v1")
    nbllm.reinit()
    frame = nbllm.models("auto")
    assert set(frame["provider"]) == {"lmstudio"} and listed(frame) == ["picked"]


# ---- cloud: Anthropic and Gemini -------------------------------------------------------------


def test_anthropic_lists_with_its_headers_and_follows_pages(httpx2_mock, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    nbllm.reinit()
    url = "https://api.anthropic.com/v1/models"
    page_two = httpx2_mock.get(url, params={"after_id": "claude-sonnet-4-5"}).respond(200, json={
        "data": [{"id": "claude-haiku-4-5", "type": "model"}], "has_more": False, "last_id": "claude-haiku-4-5"})
    page_one = httpx2_mock.get(url).respond(200, json={
        "data": [{"id": "claude-sonnet-4-5", "type": "model"}], "has_more": True,
        "first_id": "claude-sonnet-4-5", "last_id": "claude-sonnet-4-5"})
    frame = nbllm.models("anthropic")
    first, second = only_request(page_one), only_request(page_two)
    for request in (first, second):
        assert request.headers["x-api-key"] == SECRET
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in request.headers
    assert "after_id" not in first.url.params
    assert_key_not_in_url(page_one)
    assert_key_not_in_url(page_two)
    assert listed(frame) == ["claude-sonnet-4-5", "claude-haiku-4-5"]
    assert default_of(frame) == ["claude-haiku-4-5"]


def test_gemini_lists_with_the_key_in_a_header_never_the_url(httpx2_mock, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    nbllm.reinit()
    url = "https://generativelanguage.googleapis.com/v1beta/models"
    page_two = httpx2_mock.get(url, params={"pageToken": "page-2"}).respond(200, json={
        "models": [{"name": "models/gemini-2.5-pro", "inputTokenLimit": 2097152}]})
    page_one = httpx2_mock.get(url).respond(200, json={
        "models": [{"name": "models/gemini-2.5-flash", "inputTokenLimit": 1048576}], "nextPageToken": "page-2"})
    frame = nbllm.models("gemini")
    for route in (page_one, page_two):
        request = only_request(route)
        assert request.headers["x-goog-api-key"] == SECRET
        assert "key" not in request.url.params
        assert_key_not_in_url(route)
    assert listed(frame) == ["gemini-2.5-flash", "gemini-2.5-pro"]
    assert frame["context_length"].tolist() == [1048576, 2097152]
    assert default_of(frame) == ["gemini-2.5-flash"]


# ---- cloud lists happen only when asked ---------------------------------------------------------


def test_status_and_health_never_list_cloud_models(httpx2_mock, monkeypatch):
    for variable, _url in OPENAI_COMPATIBLE.values():
        monkeypatch.setenv(variable, SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    nbllm.reinit()
    httpx2_mock.route(host="127.0.0.1").pass_through()  # local probes reach the closed test ports
    cloud = httpx2_mock.route(host__regex=r"^(?!127\.0\.0\.1$).*").respond(200, json={"data": []})
    str(nbllm.status(nbllm.health_check()))
    nbllm.health_table()
    assert cloud.call_count == 0
    nbllm.models("openai")  # the check above can fail: a listing is seen
    assert cloud.call_count == 1


# ---- failures: one line, no secret ------------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    assert SECRET not in text
    return text


def test_no_key_says_which_variable_and_sends_nothing(httpx2_mock, monkeypatch):
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    nbllm.reinit()
    with pytest.raises(nbllm.ConfigurationError) as caught:
        nbllm.models("groq")
    assert "set GROQ_API_KEY" in one_line(caught.value)
    assert httpx2_mock.calls.call_count == 0


def test_401_is_one_line_naming_the_key_variable(httpx2_mock, monkeypatch):
    monkeypatch.setenv("GROQ_API_KEY", SECRET)
    nbllm.reinit()
    httpx2_mock.get("https://api.groq.com/openai/v1/models").respond(
        401, json={"error": {"message": f"Invalid API Key {SECRET}"}})
    with pytest.raises(nbllm.ModelError) as caught:
        nbllm.models("groq")
    text = one_line(caught.value)
    assert text.startswith("groq")
    assert "HTTP 401" in text and "GROQ_API_KEY" in text
    assert "https://api.groq.com/openai/v1/models" in text
    assert caught.value.status == 401


@pytest.mark.parametrize("answer, words", [
    (dict(status_code=200, content=b"{not json"), "invalid JSON"),
    (dict(status_code=200, json=["not", "an", "object"]), "unexpected answer"),
    (dict(status_code=200, json={"data": "nope"}), "unexpected answer"),
    (dict(status_code=500, text="boom"), "HTTP 500"),
])
def test_garbage_answers_are_one_line(httpx2_mock, monkeypatch, answer, words):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    nbllm.reinit()
    httpx2_mock.get("https://api.openai.com/v1/models").respond(**answer)
    with pytest.raises(nbllm.NbllmError) as caught:
        nbllm.models("openai")
    assert words in one_line(caught.value)


def test_a_timeout_is_one_line(httpx2_mock, monkeypatch):
    monkeypatch.setenv("MISTRAL_API_KEY", SECRET)
    nbllm.reinit()
    httpx2_mock.get("https://api.mistral.ai/v1/models").mock(side_effect=httpx2.ReadTimeout("timed out"))
    with pytest.raises(nbllm.ModelError) as caught:
        nbllm.models("mistral", timeout=1.5)
    assert "timed out after 1.5 s" in one_line(caught.value)


def test_a_refused_local_server_names_the_url_and_the_fix():
    url = nbllm.get_registry().settings("ollama").base_url  # a closed port (conftest)
    with pytest.raises(nbllm.ModelError) as caught:
        nbllm.models("ollama")
    text = one_line(caught.value)
    assert "connection refused" in text and url in text and "ollama serve" in text


def test_unknown_and_disabled_names_are_one_line(monkeypatch):
    with pytest.raises(nbllm.ConfigurationError) as caught:
        nbllm.models("nosuchprovider")
    assert "Valid providers" in one_line(caught.value)
    monkeypatch.setenv("OLLAMA_ENABLED", "false")
    nbllm.reinit()
    with pytest.raises(nbllm.ConfigurationError) as caught:
        nbllm.models("ollama")
    assert "disabled" in one_line(caught.value)


def test_a_gateway_without_an_address_says_so():
    with pytest.raises(nbllm.ConfigurationError) as caught:
        nbllm.models("litellm")
    assert "LITELLM_BASE_URL" in one_line(caught.value)


def test_url_credentials_never_show_in_a_failure(make_server, monkeypatch):
    server = make_server(mode="error", status=401)
    monkeypatch.setenv("LMSTUDIO_BASE_URL", f"http://user:{SECRET}@127.0.0.1:{server.port}/v1")
    nbllm.reinit()
    with pytest.raises(nbllm.ModelError) as caught:
        nbllm.models("lmstudio")
    text = one_line(caught.value)
    assert "HTTP 401" in text and f"127.0.0.1:{server.port}" in text


# ---- local dialects, against real servers --------------------------------------------------------


def test_lmstudio_lists_with_loaded_state(make_server, monkeypatch):
    server = make_server(models=["alpha-7b", "beta-3b"], loaded="beta-3b")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", server.url + "/v1")
    nbllm.reinit()
    frame = nbllm.models("lmstudio")
    assert listed(frame) == ["alpha-7b", "beta-3b"]
    assert frame["loaded"].tolist() == [False, True]
    assert default_of(frame) == ["beta-3b"]  # detected: the loaded one
    assert frame["server"].tolist() == [server.url + "/v1"] * 2
    assert [r["path"] for r in server.requests] == ["/api/v0/models"]


def test_a_configured_local_model_is_the_marked_default(make_server, monkeypatch):
    server = make_server(models=["alpha-7b", "beta-3b"], loaded="beta-3b")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("LMSTUDIO_MODEL", "alpha-7b")
    nbllm.reinit()
    assert default_of(nbllm.models("lmstudio")) == ["alpha-7b"]


def test_ollama_lists_tags_with_loaded_from_ps(make_server, monkeypatch):
    server = make_server(models=["llama3.2:latest", "qwen3:8b"], loaded="qwen3:8b")
    monkeypatch.setenv("OLLAMA_BASE_URL", server.url)
    nbllm.reinit()
    frame = nbllm.models("ollama")
    assert listed(frame) == ["llama3.2:latest", "qwen3:8b"]
    assert frame["loaded"].tolist() == [False, True]
    assert default_of(frame) == ["qwen3:8b"]
    assert sorted(r["path"] for r in server.requests) == ["/api/ps", "/api/tags"]


def test_ollama_model_text_keeps_its_tag(make_server, monkeypatch):
    server = make_server(models=["llama3.2:latest", "qwen3:8b"], loaded=None)
    monkeypatch.setenv("OLLAMA_BASE_URL", server.url)
    nbllm.reinit()
    assert default_of(nbllm.models("ollama:qwen3:8b")) == ["qwen3:8b"]


def test_ollama_sizes_and_parameter_sizes(httpx2_mock, monkeypatch):
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://ollama.test:11434")
    nbllm.reinit()
    httpx2_mock.get("http://ollama.test:11434/api/tags").respond(200, json={"models": [
        {"name": "qwen3:8b", "model": "qwen3:8b", "size": 5225388164,
         "details": {"parameter_size": "8.2B", "quantization_level": "Q4_K_M"}},
        {"name": "phi4:latest", "size": 9053116391}]})
    httpx2_mock.get("http://ollama.test:11434/api/ps").respond(500)  # loaded state unknown, not a failure
    frame = nbllm.models("ollama")
    assert frame["size"].tolist() == [5225388164, 9053116391]
    assert frame["parameter_size"][0] == "8.2B" and pd.isna(frame["parameter_size"][1])
    assert frame["quantization"][0] == "Q4_K_M" and pd.isna(frame["quantization"][1])
    assert frame["loaded"].isna().all()
    assert default_of(frame) == ["qwen3:8b"]


def test_lmstudio_context_and_publisher(httpx2_mock, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_BASE_URL", "http://lms.test:1234/v1")
    nbllm.reinit()
    httpx2_mock.get("http://lms.test:1234/api/v0/models").respond(200, json={"data": [
        {"id": "nomic-embed", "type": "embeddings", "state": "loaded", "publisher": "nomic-ai",
         "max_context_length": 2048},
        {"id": "qwen3-8b", "type": "llm", "state": "not-loaded", "publisher": "qwen", "max_context_length": 32768,
         "quantization": "Q4_K_M"}]})
    frame = nbllm.models("lmstudio")
    assert frame["owned_by"].tolist() == ["nomic-ai", "qwen"]
    assert frame["context_length"].tolist() == [2048, 32768]
    assert default_of(frame) == ["qwen3-8b"]  # never an embedding model


def test_llamacpp_lists_its_model(make_server, monkeypatch):
    server = make_server(models=["smollm2.gguf"])
    monkeypatch.setenv("LLAMACPP_BASE_URL", server.url)
    nbllm.reinit()
    frame = nbllm.models("llamacpp")
    assert listed(frame) == ["smollm2.gguf"] and frame["loaded"].tolist() == [True]
    assert default_of(frame) == ["smollm2.gguf"] and frame["server"].tolist() == [server.url]


def test_llamacpp_meta_gives_context_and_size(httpx2_mock, monkeypatch):
    monkeypatch.setenv("LLAMACPP_BASE_URL", "http://llama.test:8080")
    nbllm.reinit()
    httpx2_mock.get("http://llama.test:8080/v1/models").respond(200, json={"data": [
        {"id": "smollm2", "meta": {"n_ctx_train": 8192, "size": 90000000}}]})
    frame = nbllm.models("llamacpp")
    assert frame["context_length"].tolist() == [8192] and frame["size"].tolist() == [90000000]


def test_a_local_openai_server_gets_its_key_as_bearer(make_server, monkeypatch):
    server = make_server(models=["Qwen/Qwen3-8B"])
    monkeypatch.setenv("VLLM_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("VLLM_API_KEY", SECRET)
    nbllm.reinit()
    frame = nbllm.models("vllm")
    assert listed(frame) == ["Qwen/Qwen3-8B"] and default_of(frame) == ["Qwen/Qwen3-8B"]
    assert server.requests[-1]["path"] == "/v1/models"
    assert server.requests[-1]["headers"]["Authorization"] == f"Bearer {SECRET}"


def test_a_self_hosted_cloud_name_is_listed_like_a_local_server(make_server, monkeypatch):
    server = make_server(models=["served-model"])
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    nbllm.reinit()  # no key needed for a server of one's own
    frame = nbllm.models("openai")
    assert listed(frame) == ["served-model"] and default_of(frame) == ["served-model"]


def test_the_kernel_default_is_listed_when_no_provider_is_named(make_server, monkeypatch):
    server = make_server(models=["m1", "m2"], loaded="m2")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", server.url + "/v1")
    nbllm.reinit()
    nbllm.use("lmstudio", "m1")
    frame = nbllm.models()
    assert set(frame["provider"]) == {"lmstudio"} and default_of(frame) == ["m1"]


def test_an_embedded_server_that_is_not_running_is_not_started(monkeypatch):
    import nbllm.embedded as embedded

    async def not_running(spec, settings, *, start, env):
        assert start is False, "listing must never start the embedded server"
        return None

    monkeypatch.setattr(embedded, "ensure_server", not_running)
    frame = nbllm.models("embedded")
    assert listed(frame) == ["smollm2"] and frame["loaded"].tolist() == [False] and default_of(frame) == ["smollm2"]


def test_models_async_from_another_event_loop(make_server, monkeypatch):
    import asyncio

    server = make_server(models=["m1"])
    monkeypatch.setenv("LLAMACPP_BASE_URL", server.url)
    nbllm.reinit()
    frame = asyncio.run(nbllm.models_async("llamacpp"))
    assert listed(frame) == ["m1"]


# ---- a fleet ---------------------------------------------------------------------------------------


def test_a_fleet_lists_the_union_with_a_server_column(make_server, monkeypatch):
    a = make_server(models=["shared", "only-a"], loaded="shared")
    b = make_server(models=["shared", "only-b"], loaded="only-b")
    monkeypatch.setenv("VLLM_BASE_URL", f"{a.url}/v1,{b.url}/v1")
    nbllm.reinit()
    frame = nbllm.models("vllm")
    rows = sorted(zip(frame["server"], frame["model"]))
    assert rows == sorted([(f"{a.url}/v1", "shared"), (f"{a.url}/v1", "only-a"),
                           (f"{b.url}/v1", "shared"), (f"{b.url}/v1", "only-b")])
    assert frame.attrs["failed"] == {}


def test_a_fleet_with_one_server_down_lists_the_others(make_server, monkeypatch):
    a = make_server(models=["m-a"])
    b = make_server(models=["m-b"])
    down = b.url
    b.stop()
    monkeypatch.setenv("VLLM_BASE_URL", f"{a.url}/v1,{down}/v1")
    nbllm.reinit()
    frame = nbllm.models("vllm")
    assert listed(frame) == ["m-a"]
    assert list(frame.attrs["failed"]) == [f"{down}/v1"]
    assert "connection refused" in frame.attrs["failed"][f"{down}/v1"]


def test_a_fleet_with_every_server_down_is_one_line(make_server, monkeypatch):
    a, b = make_server(), make_server()
    urls = [a.url, b.url]
    a.stop()
    b.stop()
    monkeypatch.setenv("VLLM_BASE_URL", ",".join(u + "/v1" for u in urls))
    nbllm.reinit()
    with pytest.raises(nbllm.ModelError) as caught:
        nbllm.models("vllm")
    text = one_line(caught.value)
    assert "no server answered" in text and all(u in text for u in urls)


# ---- health and the listing speak one dialect -------------------------------------------------------


def test_ollama_listing_marks_the_model_health_detects(httpx2_mock, monkeypatch):
    """Two models running: both are loaded, and the default is the one health (and so a call) uses."""
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://ollama.test:11434")
    nbllm.reinit()
    httpx2_mock.get("http://ollama.test:11434/api/tags").respond(200, json={"models": [
        {"name": "a:latest"}, {"name": "b:latest"}, {"name": "c:latest"}]})
    httpx2_mock.get("http://ollama.test:11434/api/ps").respond(200, json={"models": [
        {"name": "b:latest"}, {"name": "a:latest"}]})
    frame = nbllm.models("ollama")
    assert frame["loaded"].tolist() == [True, True, False]
    assert default_of(frame) == ["b:latest"] == [nbllm.health_check(["ollama"])["ollama"].model_id]


def test_llamacpp_router_mode_lists_per_model_state_without_asking_health(httpx2_mock, monkeypatch):
    monkeypatch.setenv("LLAMACPP_BASE_URL", "http://llama.test:8080")
    nbllm.reinit()
    models = httpx2_mock.get("http://llama.test:8080/v1/models").respond(200, json={"data": [
        {"id": "idle.gguf", "status": {"value": "unloaded"}}, {"id": "busy.gguf", "status": {"value": "loaded"}}]})
    frame = nbllm.models("llamacpp")  # an unmocked /health request would fail the listing
    assert models.call_count == 1
    assert frame["loaded"].tolist() == [False, True] and default_of(frame) == ["busy.gguf"]
