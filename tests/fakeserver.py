"""A real HTTP server on 127.0.0.1 that speaks like the local LLM servers nbllm probes.

It answers the OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`, with
SSE streaming), Ollama's native endpoints (`/`, `/api/tags`, `/api/ps`,
`/api/version`), llama.cpp's (`/health`, `/props`) and LM Studio's
(`/api/v0/models`), and can misbehave on purpose: fail with 500 or 429
(Retry-After), accept and never answer, send malformed JSON, or cut a stream.
`slots=N` processes at most N chat requests at once and queues the rest (like
llama.cpp's `--parallel N` or a GPU's batch); `die()` (or `die_after=N`) makes it stop
like a machine that went away: connections in use are dropped, new ones refused.

Use as a context manager in tests, or run `python tests/fakeserver.py --port N`.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from typing import Any

__all__ = ["FakeLLMServer", "Behaviour"]


@dataclass
class Behaviour:
    """How the server answers; tests change it between calls with `server.set(...)`.

    mode: "ok" | "error" (HTTP `status`) | "hang" (never answers) | "bad_json" |
    "cut_stream" (sends `cut_after` chunks, then drops the connection) |
    "loading" (llama.cpp /health → 503).
    Chat-only faults (GET endpoints answer normally): "echo_auth" (401 whose message
    echoes the request's Authorization header and its credential as `x-api-key`),
    "empty" (200 with an empty body), "cut" (a non-streamed body cut in the middle; a
    stream is cut like "cut_stream"), "trickle" (a non-streamed body sent 8 bytes at a
    time, `chunk_delay` seconds apart; a stream sends its first chunk at once, then one
    per `chunk_delay`).
    `fail_first`: the first N chat requests fail with `status` (then "ok"), e.g.
    429 with `retry_after` seconds.
    `fail_rate` / `hang_rate`: each chat request fails (500 or 429, alternating at
    random; 429 carries `retry_after`) or hangs with that probability, drawn from
    a RNG seeded with `seed`, so fault tests are repeatable.
    `slots`: at most this many chat requests are processed at once (their `latency`
    included), the rest wait their turn; 0 means no limit.
    `die_after`: the server dies (see `FakeLLMServer.die`) when its Nth chat request
    arrives, which is dropped unanswered; 0 means never.
    `replies`: the answer text per chat request instead of the echo — a function of the
    request's user messages joined by blank lines (the prompt alone on a first request; a
    validation retry adds its feedback after it) or a list cycled in arrival order. `reply`
    wins when both are set.
    `text_only`: a chat request with an image part is refused with llama.cpp's 500 ("image input is
    not supported …"), as a server without a vision projector does.
    `tool_calls`: a request that offers tools is answered with a call of the tool named by
    its `tool_choice` (else its first tool), the reply text as the call's arguments — as a
    server does when a client asks for tool output.
    """

    mode: str = "ok"
    text_only: bool = False
    status: int = 500
    fail_first: int = 0
    retry_after: float | None = None
    latency: float = 0.0
    probe_latency: float | None = None
    """Latency of GET endpoints (health, model lists); None: the same as `latency`."""
    chunk_delay: float = 0.0
    reply: str | None = None
    cut_after: int = 2
    send_usage: bool = True
    barrier: threading.Barrier | None = None
    """The first GET request waits here for the other parties (e.g. other servers' probes)."""
    models: list[str] = field(default_factory=lambda: ["fake-model"])
    loaded: str | None = "fake-model"
    fail_rate: float = 0.0
    hang_rate: float = 0.0
    seed: int = 0
    slots: int = 0
    die_after: int = 0
    replies: Callable[[str], str] | list[str] | None = None
    tool_calls: bool = False


class _Server(ThreadingHTTPServer):
    request_queue_size = 512  # the default backlog of 5 drops connections when many clients arrive at once


class FakeLLMServer:
    """Threaded HTTP server; `.url` is its root, `.requests` what it was sent."""

    def __init__(self, port: int = 0, **behaviour: Any):
        self.behaviour = Behaviour(**behaviour)
        self._rng = random.Random(self.behaviour.seed)
        self.requests: list[dict[str, Any]] = []
        self._chat_count = 0
        self._replied = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.dead = threading.Event()
        """Set by `die()`: the server has gone away."""
        self._slots = _slots(self.behaviour.slots)
        self._busy = 0
        self.peak_busy = 0
        """The most chat requests it processed at the same time (to check `slots`)."""
        handler = _make_handler(self)
        self.httpd = _Server(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def set(self, **changes: Any) -> "FakeLLMServer":
        with self._lock:
            for key, value in changes.items():
                if not hasattr(self.behaviour, key):
                    raise AttributeError(key)
                setattr(self.behaviour, key, value)
            if "fail_first" in changes:
                self._chat_count = 0
            if "replies" in changes:
                self._replied = 0
            if "seed" in changes:
                self._rng = random.Random(self.behaviour.seed)
            if "slots" in changes:
                self._slots = _slots(self.behaviour.slots)
        return self

    def reset(self) -> None:
        with self._lock:
            self.behaviour = Behaviour()
            self._rng = random.Random(self.behaviour.seed)
            self.requests.clear()
            self._chat_count = 0
            self._replied = 0
            self._slots = None
            self.peak_busy = 0

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def start(self) -> "FakeLLMServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def die(self) -> None:
        """Go away mid-test, like a machine that crashed: the listening socket closes (new
        connections are refused), every request in progress or arriving on a kept-alive
        connection is dropped without an answer. Safe to call from a handler thread."""
        self.dead.set()
        self._stop.set()  # requests hanging on purpose give up too
        threading.Thread(target=self._close, daemon=True).start()

    def _close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def chat_slot(self) -> "_Slot":
        """`with server.chat_slot():` one chat request being processed (waits for a free slot)."""
        return _Slot(self)

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- answers --------------------------------------------------------------
    def next_chat_failure(self) -> bool:
        with self._lock:
            self._chat_count += 1
            if self.behaviour.die_after and self._chat_count >= self.behaviour.die_after:
                self.die()
            return self._chat_count <= self.behaviour.fail_first

    def random_fault(self) -> int | str | None:
        """None, "hang", or an HTTP status (500/429) per `fail_rate`/`hang_rate`."""
        b = self.behaviour
        if not (b.fail_rate or b.hang_rate):
            return None
        with self._lock:
            draw, pick = self._rng.random(), self._rng.random()
        if draw < b.fail_rate:
            return 429 if pick < 0.5 else 500
        if draw < b.fail_rate + b.hang_rate:
            return "hang"
        return None

    def reply_for(self, body: dict[str, Any]) -> str:
        if self.behaviour.reply is not None:
            return self.behaviour.reply
        messages = body.get("messages") or []
        last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        content = last.get("content", "")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        replies = self.behaviour.replies
        if callable(replies):
            return replies("\n\n".join(_text(m.get("content")) for m in messages if m.get("role") == "user"))
        if replies:
            with self._lock:
                turn, self._replied = self._replied, self._replied + 1
            return replies[turn % len(replies)]
        return f"Echo: {content}"


def _tool_called(body: dict[str, Any]) -> str | None:
    """The tool a request asks to be called: the one its `tool_choice` names, else its first; None without tools."""
    tools = body.get("tools") or []
    if not tools:
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("function", {}).get("name"):
        return choice["function"]["name"]
    return tools[0].get("function", {}).get("name")


def _has_image(body: dict[str, Any]) -> bool:
    return any(isinstance(part, dict) and part.get("type") == "image_url"
               for message in body.get("messages") or [] if isinstance(message.get("content"), list)
               for part in message["content"])


def image_parts(body: dict[str, Any]) -> list[bytes]:
    """The images of a recorded chat request, decoded (OpenAI's `image_url` data URLs)."""
    import base64

    found = []
    for message in body.get("messages") or []:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = part["image_url"]["url"]
                found.append(base64.b64decode(url.split(",", 1)[1]))
    return found


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _slots(count: int) -> threading.Semaphore | None:
    return threading.Semaphore(count) if count > 0 else None


class _Slot:
    """One chat request holding one of the server's `slots` (none to hold when unlimited)."""

    def __init__(self, server: FakeLLMServer):
        self.server = server
        self.semaphore = server._slots

    def __enter__(self) -> None:
        if self.semaphore is not None:
            self.semaphore.acquire()
        with self.server._lock:
            self.server._busy += 1
            self.server.peak_busy = max(self.server.peak_busy, self.server._busy)

    def __exit__(self, *exc: Any) -> None:
        with self.server._lock:
            self.server._busy -= 1
        if self.semaphore is not None:
            self.semaphore.release()


def _make_handler(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else keep-alive requests stall ~40 ms (FACTS.md)

        def log_message(self, *args: Any) -> None:
            pass

        # -- helpers ---------------------------------------------------------------
        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _hang(self) -> None:
            server._stop.wait(120)
            self.close_connection = True

        def _drop_if_dead(self) -> bool:
            """A dead server answers nothing: the connection is cut."""
            if not server.dead.is_set():
                return False
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True

        def _record(self, body: Any) -> None:
            with server._lock:
                server.requests.append({"method": self.command, "path": self.path, "body": body,
                                        "headers": dict(self.headers)})

        def _common_failure(self) -> bool:
            b = server.behaviour
            latency = b.probe_latency if self.command == "GET" and b.probe_latency is not None else b.latency
            if latency:
                time.sleep(latency)
            if b.mode == "hang":
                self._hang()
                return True
            if b.mode == "error":
                self._send(b.status, {"error": {"message": f"fake failure {b.status}"}})
                return True
            if b.mode == "bad_json":
                self._send(200, b"{not json")
                return True
            return False

        # -- GET ---------------------------------------------------------------
        def do_GET(self) -> None:
            if self._drop_if_dead():
                return
            self._record(None)
            b = server.behaviour
            with server._lock:  # only the first GET waits (a probe may send several)
                barrier, b.barrier = b.barrier, None
            if barrier is not None:  # proves concurrency: passes only if the peers arrive too
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    return self._send(504, {"error": {"message": "barrier broken: requests were not concurrent"}})
            path = self.path.split("?")[0].rstrip("/") or "/"
            if path == "/health":
                if b.mode == "loading":
                    return self._send(503, {"error": {"code": 503, "message": "Loading model"}})
            if self._common_failure():
                return
            models = list(b.models)
            if path in ("/v1/models", "/models"):
                return self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]})
            if path == "/health":
                return self._send(200, {"status": "ok"})
            if path == "/props":
                return self._send(200, {"model_path": f"/models/{models[0] if models else 'none'}.gguf"})
            if path == "/api/tags":
                return self._send(200, {"models": [{"name": m, "model": m} for m in models]})
            if path == "/api/ps":
                return self._send(200, {"models": [{"name": b.loaded, "model": b.loaded}] if b.loaded else []})
            if path == "/api/version":
                return self._send(200, {"version": "0.12.0"})
            if path == "/api/v0/models":
                data = [{"id": m, "type": "llm", "state": "loaded" if m == b.loaded else "not-loaded"} for m in models]
                return self._send(200, {"object": "list", "data": data})
            if path == "/":
                return self._send(200, b"Ollama is running")
            return self._send(404, {"error": {"message": f"no route {path}"}})

        # -- POST ---------------------------------------------------------------
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self._drop_if_dead():
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                body = {"_raw": raw.decode(errors="replace")}
            self._record(body)
            path = self.path.split("?")[0]
            if not path.endswith("/chat/completions"):
                return self._send(404, {"error": {"message": f"no route {path}"}})
            with server.chat_slot():
                self._chat(body)

        def _chat(self, body: dict[str, Any]) -> None:
            b = server.behaviour
            failing = server.next_chat_failure()
            if self._drop_if_dead():  # its death came with this request (`die_after`)
                return
            if failing:
                headers = {"Retry-After": f"{b.retry_after:g}"} if b.retry_after is not None else None
                return self._send(b.status, {"error": {"message": f"fake failure {b.status}"}}, headers)
            fault = server.random_fault()
            if fault == "hang":
                return self._hang()
            if fault is not None:
                headers = {"Retry-After": f"{b.retry_after:g}"} if fault == 429 and b.retry_after is not None else None
                return self._send(fault, {"error": {"message": f"fake failure {fault}"}}, headers)
            if self._common_failure() or self._drop_if_dead():  # it may have died during `latency`
                return
            if b.mode == "echo_auth":
                auth = self.headers.get("Authorization", "")
                credential = auth.split(" ", 1)[-1]
                return self._send(401, {"error": {"message": f"rejected Authorization: {auth}; x-api-key: "
                                                             f"{credential}", "type": "invalid_request_error"}})
            if b.mode == "empty":
                return self._send(200, b"")
            if b.text_only and _has_image(body):
                return self._send(500, {"error": {"code": 500, "type": "server_error", "message":
                                                  "image input is not supported - hint: if this is unexpected, "
                                                  "you may need to provide the mmproj"}})
            text = server.reply_for(body)
            model = body.get("model") or "fake-model"
            if body.get("stream"):
                return self._stream(text, model)
            words = text.split(" ")
            message: dict[str, Any] = {"role": "assistant", "content": text}
            tool = _tool_called(body) if b.tool_calls else None
            if tool is not None:
                message = {"role": "assistant", "content": None, "tool_calls": [
                    {"id": f"call_{len(server.requests)}", "type": "function",
                     "function": {"name": tool, "arguments": text}}]}
            payload = {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)},
            }
            if b.mode in ("cut", "trickle"):
                return self._slow_body(json.dumps(payload).encode())
            self._send(200, payload)

        def _slow_body(self, data: bytes) -> None:
            """"cut": half the body, then the connection drops; "trickle": 8 bytes per `chunk_delay`."""
            b = server.behaviour
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.close_connection = True
            try:
                if b.mode == "cut":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                for i in range(0, len(data), 8):
                    if server._stop.is_set():
                        return
                    self.wfile.write(data[i:i + 8])
                    self.wfile.flush()
                    time.sleep(b.chunk_delay)
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass

        def _stream(self, text: str, model: str) -> None:
            b = server.behaviour
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            words = text.split(" ")
            pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]

            def event(payload: dict[str, Any]) -> None:
                self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
                self.wfile.flush()

            def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

            try:
                event(chunk({"role": "assistant", "content": ""}))
                for i, piece in enumerate(pieces):
                    if b.mode in ("cut_stream", "cut") and i >= b.cut_after:
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if b.chunk_delay and not (b.mode == "trickle" and i == 0):  # trickle: the first at once
                        time.sleep(b.chunk_delay)
                    event(chunk({"content": piece}))
                final = chunk({}, "stop")
                if b.send_usage:
                    final["usage"] = {"prompt_tokens": 7, "completion_tokens": len(words),
                                      "total_tokens": 7 + len(words)}
                event(final)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply", default=None)
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--probe-latency", type=float, default=None, help="GET latency (default: --latency)")
    parser.add_argument("--slots", type=int, default=0, help="chat requests processed at once (default: no limit)")
    args = parser.parse_args()
    server = FakeLLMServer(args.port, reply=args.reply, models=[args.model], loaded=args.model, latency=args.latency,
                           probe_latency=args.probe_latency, slots=args.slots)
    print(server.url, flush=True)
    try:
        server.httpd.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
