"""Shared fixtures: an isolated environment and real local test servers."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakeserver import FakeLLMServer  # noqa: E402

_PROVIDER_PREFIXES = ("OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "GROK_", "XAI_", "LMSTUDIO_", "OLLAMA_",
                      "LLAMACPP_", "NBLLM_", "EMBEDDED_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts from an environment with no provider variables, no .env and
    its own user config file, and with nbllm's process-wide state reset."""
    for key in list(os.environ):
        if key.startswith(_PROVIDER_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NBLLM_CONFIG", str(tmp_path / "nbllm-config.json"))
    # The call log and the replay cache write to files of this test, never the user's.
    monkeypatch.setenv("NBLLM_HISTORY", str(tmp_path / "history.sqlite"))
    monkeypatch.setenv("NBLLM_CACHE", str(tmp_path / "cache.sqlite"))
    monkeypatch.chdir(tmp_path)
    # Nothing of ours listens on the default local ports in tests; point them at a
    # closed port so a developer's own LM Studio/Ollama never leaks into results.
    # The embedded provider then uses that address too instead of starting its
    # server (tests/test_embedded.py unsets it to get the real model).
    closed = _closed_port_url()
    for prefix in ("LMSTUDIO", "OLLAMA", "LLAMACPP", "EMBEDDED"):
        monkeypatch.setenv(f"{prefix}_BASE_URL", closed)
    reset_nbllm()
    yield
    reset_nbllm()


def reset_nbllm() -> None:
    from nbllm import registry, session

    registry.reset_registry()
    session.reset_default()
    from nbllm import calllog, clients, replay

    calllog.history.reset()
    replay.cache.reset()

    clients.clear()


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def _server_pool() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def fake_server(_server_pool: FakeLLMServer) -> Iterator[FakeLLMServer]:
    """A running fake LLM server, reset to good behaviour for each test."""
    _server_pool.reset()
    yield _server_pool
    _server_pool.reset()


@pytest.fixture
def make_server() -> Iterator:
    """Factory for extra servers (different latencies, failures); all stopped after the test."""
    servers: list[FakeLLMServer] = []

    def make(**behaviour) -> FakeLLMServer:
        server = FakeLLMServer(**behaviour).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def local_provider(fake_server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch):
    """Point `lmstudio` at the fake server and make it the default provider."""
    monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    monkeypatch.setenv("NBLLM_PROVIDER", "lmstudio")
    reset_nbllm()
    return fake_server
