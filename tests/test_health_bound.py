"""Bounded health checks, the one place that orchestrates them (`ProviderRegistry.check(bound=...)`)."""

from __future__ import annotations

import asyncio

import pytest

from nbllm import bridge, health
from nbllm.registry import get_registry

SECRET = "sk-nbllm-BOUND-SECRET-777"


@pytest.fixture
def lmstudio(make_server, monkeypatch):
    server = make_server(models=["alpha-7b"], loaded="alpha-7b")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", server.url + "/v1")
    return server


def test_an_unfinished_check_becomes_a_timed_out_row_and_the_others_keep_theirs(lmstudio, monkeypatch):
    real_check = health.check_provider

    async def stuck_for_ollama(spec, settings, timeout, prepare=None):
        if spec.name == "ollama":
            await asyncio.sleep(60)  # beyond any probe bound: only the whole-check bound ends it
        return await real_check(spec, settings, timeout, prepare)

    monkeypatch.setattr(health, "check_provider", stuck_for_ollama)
    results = bridge.run(get_registry().check(None, 0.5, bound=0.8))
    assert set(results) == set(get_registry().names())
    assert results["lmstudio"].connected is True and results["lmstudio"].models == ["alpha-7b"]
    stuck = results["ollama"]
    assert stuck.connected is False and stuck.status == "down"
    assert stuck.error == "timed out after 0.8 s (the check did not finish)"
    assert "refused" in (results["llamacpp"].error or "")  # a real probe of a closed port, finished in time


def test_a_check_that_raises_is_a_row_saying_so_without_the_key(lmstudio, monkeypatch):
    monkeypatch.setenv("LMSTUDIO_API_KEY", SECRET)

    async def broken(spec, settings, timeout, prepare=None):
        raise RuntimeError(f"the probe broke while sending {SECRET}")

    monkeypatch.setattr(health, "check_provider", broken)
    results = bridge.run(get_registry().check(["lmstudio"], 0.5, bound=2.0))
    row = results["lmstudio"]
    assert row.connected is False
    assert row.error.startswith("check failed: RuntimeError: the probe broke while sending")
    assert SECRET not in row.error


def test_without_a_bound_a_check_waits_for_every_probe(lmstudio, monkeypatch):
    lmstudio.set(probe_latency=0.6)
    results = bridge.run(get_registry().check(["lmstudio"], 5.0))
    assert results["lmstudio"].connected is True
    lmstudio.set(probe_latency=1.5)
    results = bridge.run(get_registry().check(["lmstudio"], 5.0, bound=0.3))
    assert results["lmstudio"].error == "timed out after 0.3 s (the check did not finish)"
