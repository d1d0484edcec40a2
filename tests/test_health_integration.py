"""Health against real HTTP servers on 127.0.0.1 (tests/fakeserver.py), including one
that accepts connections and never answers."""

from __future__ import annotations

import asyncio

import pytest

import nbllm
from nbllm import ProviderHealth
from nbllm.catalog import get_spec

ORDER = ["openai", "anthropic", "gemini", "grok", "lmstudio", "ollama", "llamacpp"]
"""The issue's seven, first and in this order; providers registered later (embedded, plug-ins) follow."""


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")


def point(monkeypatch, **urls: str) -> None:
    for provider, url in urls.items():
        monkeypatch.setenv(f"{provider.upper()}_BASE_URL", url)
    nbllm.reinit()


def test_check_all_providers_returns_seven_in_order(fast):
    health = asyncio.run(nbllm.check_all_providers())
    assert list(health)[:7] == ORDER and list(health) == nbllm.providers()
    assert all(isinstance(h, ProviderHealth) and h.provider == name for name, h in health.items())
    for name in ORDER[4:]:  # every local server points at a closed port
        assert health[name].connected is False and "connection refused" in health[name].error
    for name in ORDER[:4]:
        assert health[name].connected is None and health[name].status == "not configured"


def test_every_dialect_against_a_real_server(fake_server, monkeypatch, fast):
    fake_server.set(models=["small", "big"], loaded="big")
    point(monkeypatch, lmstudio=fake_server.url + "/v1", ollama=fake_server.url, llamacpp=fake_server.url)
    health = nbllm.health_check()
    for name in ("lmstudio", "ollama"):
        assert health[name].connected and health[name].model_id == "big" and health[name].models == ["small", "big"]
    assert health["llamacpp"].connected and health["llamacpp"].model_id == "small"
    paths = {r["path"] for r in fake_server.requests}
    assert {"/api/v0/models", "/api/tags", "/api/ps", "/health", "/v1/models"} <= paths
    assert nbllm.status(health).available == 3


def test_one_server_that_never_answers(make_server, fake_server, monkeypatch, fast):
    hang = make_server(mode="hang")
    point(monkeypatch, lmstudio=hang.url + "/v1", ollama=fake_server.url, llamacpp=hang.url)
    health = asyncio.run(nbllm.check_all_providers())
    assert list(health)[:7] == ORDER
    for name in ("lmstudio", "llamacpp"):
        assert health[name].connected is False and "timed out" in health[name].error, health[name].error
    assert health["ollama"].connected is True and health["ollama"].model_id == "fake-model"
    assert hang.requests, "the hanging server was reached"


def test_llamacpp_loading(fake_server, monkeypatch, fast):
    fake_server.set(mode="loading")
    point(monkeypatch, llamacpp=fake_server.url)
    h = nbllm.health_check(["llamacpp"])["llamacpp"]
    assert h.connected is False and "503" in h.error and "loading" in h.error


@pytest.mark.parametrize("mode, status, words", [("error", 500, "HTTP 500"), ("error", 401, "HTTP 401"),
                                                 ("error", 404, "HTTP 404"), ("bad_json", 500, "invalid JSON")])
def test_failures_from_a_real_server(fake_server, monkeypatch, fast, mode, status, words):
    fake_server.set(mode=mode, status=status)
    point(monkeypatch, ollama=fake_server.url, llamacpp=fake_server.url)
    health = nbllm.health_check(["ollama", "llamacpp"])
    for h in health.values():
        assert h.connected is False and words in h.error and fake_server.url in h.error


def test_check_provider_one_by_name(fake_server, monkeypatch, fast):
    point(monkeypatch, ollama=fake_server.url)
    h = asyncio.run(nbllm.check_provider("Ollama"))
    assert h.provider == "ollama" and h.connected and h.base_url == fake_server.url


def test_health_table_is_a_dataframe(fake_server, monkeypatch, fast):
    point(monkeypatch, lmstudio=fake_server.url + "/v1")
    df = nbllm.health_table()
    assert list(df.index) == nbllm.providers() and list(df.index)[:7] == ORDER
    assert {"status", "connected", "model", "models", "latency_ms", "base_url", "error"} <= set(df.columns)
    assert df.loc["lmstudio", "status"] == "available" and df.loc["lmstudio", "model"] == "fake-model"
    assert df.loc["ollama", "status"] == "down" and df.loc["openai", "status"] == "not configured"


def test_summary_counts(fake_server, monkeypatch, fast):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k-a")
    monkeypatch.setenv("GEMINI_ENABLED", "false")
    point(monkeypatch, ollama=fake_server.url)
    summary = nbllm.status(nbllm.health_check())
    more = len(nbllm.providers()) - 7  # providers registered beyond the seven (down or without a key here)
    # configured beyond the seven: the local servers with an address (presets without a key, and
    # litellm without LITELLM_BASE_URL, are not)
    local = sum(1 for n in nbllm.providers()[7:] if get_spec(n).kind == "local" and not get_spec(n).needs_base_url)
    assert (summary.total, summary.enabled, summary.configured, summary.available) == (
        7 + more, 6 + more, 4 + local, 2)
    assert str(summary) == f"{7 + more} providers: {6 + more} enabled, {4 + local} configured, 2 available"
    assert nbllm.status().available is None
