"""Prove the embedded model works here: one real completion, through the server nbllm runs.

    python scripts/check_embedded.py [--repair]

Starts the llama.cpp server exactly as nbllm does (`nbllm.embedded.server_command`),
asks for 8 tokens at temperature 0 and checks the answer is not empty; about 2–5 s.
A health check cannot tell this: it never starts the model, and a llama-cpp-python
built for another CPU only crashes once it decodes (SIGSEGV on CPUs with AMX).

With `--repair`, a crash (the server dies from a signal) triggers one portable rebuild
of llama-cpp-python past pip's wheel cache (which ignores CMAKE_ARGS and would hand
back the crashing build), then the check runs again.

Prints one line per outcome. Exit status: 0 answered; 2 the server crashed (still,
after `--repair`); 1 anything else (not installed, no answer, timed out).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from nbllm import embedded
from nbllm.errors import NbllmError

READY_TIMEOUT = 60.0
PORTABLE = "-DGGML_NATIVE=OFF"


class Crashed(Exception):
    """The server died from a signal: the message is "SIGSEGV, signal 11"."""


def _get(url: str, timeout: float) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status


def _post(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _why_dead(process: subprocess.Popen, log_path: Path, settle: float = 1.0) -> str | None:
    """Crashed(...) if the server died from a signal; its exit reason if it exited; None if running."""
    deadline = time.monotonic() + settle
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if process.returncode is None:
        return None
    crash = embedded.crash_signal(process.returncode)
    if crash:
        raise Crashed(crash)
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return f"the server exited with code {process.returncode} ({lines[-1].strip()[:200] if lines else 'no output'})"


def check() -> str:
    """One completion; the success line. Raises Crashed, or RuntimeError saying what failed."""
    env = dict(os.environ)
    model = embedded.model_file(env)
    alias = embedded.DEFAULT_ALIAS
    port = embedded._free_port()
    handle, name = tempfile.mkstemp(prefix="nbllm-check-", suffix=".log")
    log_path = Path(name)
    started = time.monotonic()
    with os.fdopen(handle, "wb") as log_file:
        process = subprocess.Popen(embedded.server_command(model, alias, port, log_path, env),
                                   stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            reason = _why_dead(process, log_path, settle=0)
            if reason:
                raise RuntimeError(reason)
            try:
                if _get(f"{base}/models", timeout=1.0) == 200:
                    break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() - started > READY_TIMEOUT:
                raise RuntimeError(f"the server did not answer within {READY_TIMEOUT:g} s")
            time.sleep(0.1)
        ready = time.monotonic() - started
        asked = time.monotonic()
        try:
            reply = _post(f"{base}/chat/completions", {
                "model": alias, "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 8, "temperature": 0,
            }, timeout=60.0)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise RuntimeError(_why_dead(process, log_path) or f"the completion failed: {exc}") from None
        text = (reply.get("choices") or [{}])[0].get("message", {}).get("content") or ""
        if not text.strip():
            raise RuntimeError(f"the model answered with no text: {json.dumps(reply)[:200]}")
        return f"embedded model: ok (ready in {ready:.1f} s, answered in {time.monotonic() - asked:.1f} s)"
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log_path.unlink(missing_ok=True)


def rebuild() -> None:
    """Reinstall this version of llama-cpp-python, compiled portably and past pip's cache."""
    version = embedded.llama_version()
    requirement = "llama-cpp-python[server]" + (f"=={version}" if version else "")
    flags = os.environ.get("CMAKE_ARGS", "")
    env = {**os.environ, "CMAKE_ARGS": flags if PORTABLE in flags else f"{flags} {PORTABLE}".strip()}
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-cache-dir", "--force-reinstall", "--no-deps",
               requirement]
    subprocess.run(command, env=env, check=True)


def main(argv: list[str]) -> int:
    repair = "--repair" in argv
    try:
        try:
            print(check(), flush=True)
            return 0
        except Crashed as crash:
            if not repair:
                print(f"embedded model: the llama.cpp server crashed ({crash}) — rebuild it portably: "
                      f"{embedded.rebuild_command()}", flush=True)
                return 2
            print(f"embedded model: the llama.cpp server crashed ({crash}); rebuilding llama-cpp-python "
                  f"portably, without pip's cache (about 5-10 min)...", flush=True)
        try:
            rebuild()
        except subprocess.CalledProcessError as exc:
            print(f"embedded model: FAILED: the portable rebuild failed (pip exit code {exc.returncode})")
            return 1
        try:
            print(check(), flush=True)
            return 0
        except Crashed as crash:
            print(f"embedded model: FAILED: the llama.cpp server still crashes after a portable rebuild ({crash})")
            return 2
    except (RuntimeError, NbllmError) as exc:
        print(f"embedded model: FAILED: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
