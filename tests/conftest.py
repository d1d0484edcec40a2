"""Shared fixtures: an isolated environment and real local test servers."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakeserver import FakeLLMServer  # noqa: E402

_PROVIDER_PREFIXES = ("OPENAI_", "ANTHROPIC_", "GEMINI_", "GOOGLE_", "GROK_", "XAI_", "LMSTUDIO_", "OLLAMA_",
                      "LLAMACPP_", "NBLLM_", "EMBEDDED_", "OPENROUTER_", "GROQ_", "MISTRAL_", "DEEPSEEK_",
                      "TOGETHER_", "FIREWORKS_", "CEREBRAS_", "VLLM_", "LITELLM_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts from an environment with no provider variables, no .env and
    its own user config file, and with nbllm's process-wide state reset."""
    for key in list(os.environ):
        if key.startswith(_PROVIDER_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NBLLM_CONFIG", str(tmp_path / "nbllm-config.json"))
    # The call log and the replay cache write to files of this test, never the user's.
    monkeypatch.setenv("NBLLM_HISTORY", str(tmp_path / "history.sqlite"))
    monkeypatch.setenv("NBLLM_CACHE", str(tmp_path / "cache.sqlite"))
    monkeypatch.setenv("NBLLM_JOBS", str(tmp_path / "jobs.sqlite"))
    monkeypatch.chdir(tmp_path)
    # Nothing of ours listens on the default local ports in tests; point them at a
    # closed port so a developer's own LM Studio/Ollama never leaks into results.
    # The embedded provider then uses that address too instead of starting its
    # server (tests/test_embedded.py unsets it to get the real model).
    closed = _closed_port_url()
    for prefix in ("LMSTUDIO", "OLLAMA", "LLAMACPP", "VLLM", "EMBEDDED"):
        monkeypatch.setenv(f"{prefix}_BASE_URL", closed)
    if {"httpx2_mock", "respx_mock"} & set(request.fixturenames):
        # respx sees httpx2's requests only: a test that mocks it sends probes through httpx2 too
        # (nbllm.plainhttp's own path is tested against real servers).
        from nbllm import plainhttp

        monkeypatch.setattr(plainhttp, "enabled", False)
    reset_nbllm()
    yield
    reset_nbllm()


def reset_nbllm() -> None:
    from nbllm import registry, session

    registry.reset_registry()
    session.reset_default()
    from nbllm import calllog, clients, fleet, replay

    calllog.history.reset()
    replay.cache.reset()
    fleet.reset()
    from nbllm import budgets

    budgets.budget(None)  # a kernel budget a test set never limits the next one

    clients.clear()


@contextmanager
def nbllm_shell() -> Iterator[Any]:
    """An IPython InteractiveShell with nbllm loaded and a fresh conversation; afterwards the
    extension is unloaded, its settings dropped and the names the test's cells made removed."""
    from IPython.core.interactiveshell import InteractiveShell

    import nbllm

    shell = InteractiveShell.instance()
    before = set(shell.user_ns)
    shell.extension_manager.load_extension("nbllm")
    nbllm.conversation().reset()
    try:
        yield shell
    finally:
        shell.extension_manager.unload_extension("nbllm")
        shell.config.pop("LLMMagics", None)
        shell.rl_next_input = None
        for name in set(shell.user_ns) - before:
            shell.user_ns.pop(name, None)


def execute_in_kernel(nb: Any, env: dict[str, str], cwd: Path, timeout: int = 60, allow_errors: bool = False) -> None:
    """Run notebook `nb` in place in a fresh ipykernel (this interpreter) with `env`, then shut the kernel down."""
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(cwd))
    try:
        NotebookClient(nb, km=km, timeout=timeout, allow_errors=allow_errors).execute()
    finally:
        km.shutdown_kernel(now=True)


def run_cell(shell: Any, cell: str, store_history: bool = False) -> tuple[Any, list[dict[str, Any]], str]:
    """Run a cell as a rich front end would see it: its result, its displays, and all it printed
    (`store_history`: as a notebook runs it, numbered and in `In`)."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        publisher = shell.display_pub
        result = shell.run_cell(cell, store_history=store_history)
    return result, publisher.outputs, captured.stdout + captured.stderr


def reread() -> list[str]:
    """`nbllm.reinit()`, returning the nbllm warnings it gave."""
    import warnings

    import nbllm
    from nbllm.config import NbllmConfigWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nbllm.reinit()
    return [str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`nbllm providers ARGV` in this process: its exit code, stdout and stderr."""
    from nbllm.cli import main

    code = main(["providers", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def endpoint_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The user's endpoints file and the working directory's, in directories of their own
    (`clean_env` puts the config file and the working directory both in tmp_path)."""
    user_dir, work = tmp_path / "config", tmp_path / "work"
    user_dir.mkdir()
    work.mkdir()
    monkeypatch.setenv("NBLLM_CONFIG", str(user_dir / "config.json"))
    monkeypatch.chdir(work)
    monkeypatch.setenv("NBLLM_HEALTH_TIMEOUT", "0.5")
    for name in ("GPU_API_KEY", "GPU_MODEL", "GPU_BASE_URL", "GPU_ENABLED", "LAB_TOKEN", "LAB_API_KEY", "BOX_MODEL"):
        monkeypatch.delenv(name, raising=False)
    reset_nbllm()
    return user_dir / "nbllm.toml", work / "nbllm.toml"


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
