"""A real HTTP server on 127.0.0.1 that speaks like the local LLM servers nbllm probes.

It answers the OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`, with
SSE streaming), Ollama's native endpoints (`/`, `/api/tags`, `/api/ps`,
`/api/version`), llama.cpp's (`/health`, `/props`) and LM Studio's
(`/api/v0/models`), and can misbehave on purpose: fail with 500 or 429
(Retry-After), accept and never answer, send malformed JSON, or cut a stream.
`slots=N` processes at most N chat requests at once and queues the rest (like
llama.cpp's `--parallel N` or a GPU's batch); `die()` (or `die_after=N`) makes it stop
like a machine that went away: connections in use are dropped, new ones refused.

It also speaks OpenAI's Batch API (`POST /v1/files` multipart with `purpose=batch`, `POST
/v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`, `GET /v1/files/{id}` and
`/content`, `DELETE /v1/files/{id}`): each JSONL line of an input file is answered like a chat
request (`/v1/chat/completions` lines, and `/v1/responses` lines in the Responses API's shape).
A batch reads "validating" on its first poll, then "in_progress" until `batch_polls` polls and
`batch_delay` seconds have passed, then ends as `batch_outcome` ("completed", "expired":
only the first `batch_expire_after` requests ran, "failed": the input was refused).
`batch_fail_ids` are answered with HTTP 400 in the error file. Batches and files live on the
server, so a new client (a restarted kernel) can poll and collect them later.

Use as a context manager in tests, or run `python tests/fakeserver.py --port N`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
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
    batch_polls: int = 1
    """Polls of `GET /v1/batches/{id}` that still see the batch unfinished ("validating" first)."""
    batch_delay: float = 0.0
    """Seconds after its creation before a batch may finish (as well as `batch_polls`)."""
    batch_outcome: str = "completed"
    """How a batch ends: "completed", "expired" (only `batch_expire_after` requests ran) or "failed"."""
    batch_expire_after: int = 1
    batch_fail_ids: tuple[str, ...] = ()
    """custom_ids answered with HTTP 400 (in the batch's error file)."""
    stamp_file: str | None = None
    """A stream appends `time.monotonic()` here just before it writes its first text chunk (benchmarks:
    the clock is shared by processes on one machine, so a client can time that chunk's way to the user)."""


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
        self._lock = threading.RLock()  # re-entered when a batch's requests are answered under it
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
        self.files: dict[str, dict[str, Any]] = {}
        """Uploaded and written files: id → {"bytes", "purpose", "filename"} (kept across clients)."""
        self.batches: dict[str, dict[str, Any]] = {}
        """Batches by id: their OpenAI object, as the last poll saw it, and their poll count."""

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
            self.files.clear()
            self.batches.clear()

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def batch_lines(self) -> list[dict[str, Any]]:
        """The JSONL lines of the last batch input file uploaded (as recorded: a client may delete the file)."""
        uploads = [r for r in self.requests if r["method"] == "POST" and r["path"].rstrip("/").endswith("/files")]
        return uploads[-1]["body"]["lines"] if uploads else []

    # --- OpenAI's Batch API ---------------------------------------------------
    def add_file(self, data: bytes, purpose: str, filename: str) -> dict[str, Any]:
        with self._lock:
            file_id = f"file-{len(self.files) + 1:04d}"
            self.files[file_id] = {"bytes": data, "purpose": purpose, "filename": filename,
                                   "created_at": int(time.time())}
        return self.file_object(file_id)

    def file_object(self, file_id: str) -> dict[str, Any]:
        f = self.files[file_id]
        return {"id": file_id, "object": "file", "bytes": len(f["bytes"]), "created_at": f["created_at"],
                "filename": f["filename"], "purpose": f["purpose"], "status": "processed"}

    def create_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file_id = body.get("input_file_id")
        if file_id not in self.files:
            return 400, {"error": {"message": f"No such File object: {file_id}", "type": "invalid_request_error"}}
        if body.get("completion_window") != "24h" or not body.get("endpoint"):
            return 400, {"error": {"message": "endpoint and completion_window='24h' are required",
                                   "type": "invalid_request_error"}}
        total = len([line for line in self.files[file_id]["bytes"].splitlines() if line.strip()])
        with self._lock:
            batch_id = f"batch_{len(self.batches) + 1:04d}"
            batch = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                     "input_file_id": file_id, "completion_window": "24h", "status": "validating",
                     "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                     "metadata": body.get("metadata"),
                     "request_counts": {"total": total, "completed": 0, "failed": 0}}
            self.batches[batch_id] = {"batch": batch, "polls": 0, "created": time.monotonic()}
        return 200, dict(batch)

    def poll_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch as a client polling it now sees it (finishing it once its polls and delay are over)."""
        b = self.behaviour
        with self._lock:
            state = self.batches[batch_id]
            state["polls"] += 1
            batch = state["batch"]
            if batch["status"] == "cancelling":
                self._end_batch(batch, "cancelled", ran=0)
            elif batch["status"] in ("validating", "in_progress"):
                due = state["polls"] > b.batch_polls and time.monotonic() - state["created"] >= b.batch_delay
                if due:
                    ran = b.batch_expire_after if b.batch_outcome == "expired" else None
                    self._end_batch(batch, b.batch_outcome, ran)
                else:
                    batch["status"] = "validating" if state["polls"] == 1 else "in_progress"
            return json.loads(json.dumps(batch))

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self.batches[batch_id]["batch"]
            if batch["status"] in ("validating", "in_progress", "finalizing"):
                batch["status"] = "cancelling"
                batch["cancelling_at"] = int(time.time())
            return json.loads(json.dumps(batch))

    def _end_batch(self, batch: dict[str, Any], outcome: str, ran: int | None) -> None:
        """Run the batch's requests (the first `ran` of them; None: all) and write its output/error files."""
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]]["bytes"].decode().splitlines()
                 if line.strip()]
        batch["status"] = outcome
        now = int(time.time())
        if outcome == "failed":
            batch["errors"] = {"object": "list", "data": [
                {"code": "invalid_request", "message": "the input file was refused (fake failure)", "line": 1}]}
            batch["failed_at"] = now
            return
        ran = len(lines) if ran is None else min(ran, len(lines))
        output, errors = [], []
        for number, line in enumerate(lines):
            custom_id = line.get("custom_id")
            if number >= ran:  # never run: the window expired or the batch was cancelled
                code = "batch_expired" if outcome == "expired" else "batch_cancelled"
                errors.append({"id": f"batch_req_{number}", "custom_id": custom_id, "response": None,
                               "error": {"code": code, "message": f"This request was not executed ({code})."}})
                continue
            if custom_id in self.behaviour.batch_fail_ids:
                body = {"error": {"message": f"fake failure 400 for {custom_id}", "type": "invalid_request_error",
                                  "code": "invalid_value"}}
                errors.append({"id": f"batch_req_{number}", "custom_id": custom_id, "error": None,
                               "response": {"status_code": 400, "request_id": f"req_{number}", "body": body}})
                continue
            output.append({"id": f"batch_req_{number}", "custom_id": custom_id, "error": None,
                           "response": {"status_code": 200, "request_id": f"req_{number}",
                                        "body": self._batch_answer(line.get("url", ""), line.get("body") or {})}})
        counts = batch["request_counts"]
        counts["completed"] = len(output)
        counts["failed"] = len([e for e in errors if e["response"] is not None])
        batch[{"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[outcome]] = now
        for key, rows in (("output_file_id", output), ("error_file_id", errors)):
            if rows:
                data = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
                file_id = f"file-{len(self.files) + 1:04d}"
                self.files[file_id] = {"bytes": data, "purpose": "batch_output", "created_at": now,
                                       "filename": f"{batch['id']}_{key.split('_')[0]}.jsonl"}
                batch[key] = file_id

    def _batch_answer(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """One batch line answered as the chat endpoint would (or in the Responses API's shape)."""
        model = body.get("model") or "fake-model"
        if url.endswith("/responses"):
            given = body.get("input")
            messages = given if isinstance(given, list) else [{"role": "user", "content": given or ""}]
            text = self.reply_for({"messages": [m for m in messages if isinstance(m, dict)]})
            words = len(text.split(" "))
            return {"id": f"resp_{random.randrange(10**8)}", "object": "response", "created_at": int(time.time()),
                    "model": model, "status": "completed", "output": [
                        {"type": "message", "id": "msg_fake", "role": "assistant", "status": "completed",
                         "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                    "usage": {"input_tokens": 7, "output_tokens": words, "total_tokens": 7 + words,
                              "input_tokens_details": {"cached_tokens": 0},
                              "output_tokens_details": {"reasoning_tokens": 0}}}
        text = self.reply_for(body)
        words = len(text.split(" "))
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": words, "total_tokens": 7 + words}}

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


_BATCHES = re.compile(r"^(?:/v1)?/batches/?$")
_BATCH_PATH = re.compile(r"^(?:/v1)?/batches/(?P<id>[^/]+)(?:/(?P<action>[a-z]+))?/?$")
_FILE_PATH = re.compile(r"^(?:/v1)?/files/(?P<id>[^/]+)(?P<content>/content)?/?$")


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
            if _BATCH_PATH.match(path) or _FILE_PATH.match(path):
                return self._batch_get(path)
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
            path = self.path.split("?")[0]
            if path.rstrip("/").endswith("/files") and "multipart/form-data" in (self.headers.get("Content-Type") or ""):
                return self._upload(raw)
            self._record(body)
            if _BATCHES.match(path) or _BATCH_PATH.match(path):
                return self._batch_post(path, body)
            if not path.endswith("/chat/completions"):
                return self._send(404, {"error": {"message": f"no route {path}"}})
            with server.chat_slot():
                self._chat(body)

        # -- OpenAI's Batch API ------------------------------------------------------
        def _upload(self, raw: bytes) -> None:
            """`POST /v1/files` (multipart): `purpose` and `file` fields; recorded with the file's JSONL lines."""
            from email.parser import BytesParser
            from email.policy import HTTP

            message = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + (self.headers.get("Content-Type") or "").encode() + b"\r\n\r\n" + raw)
            fields: dict[str, Any] = {}
            filename = "upload.jsonl"
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if part.get_filename():
                    filename = part.get_filename()
                fields[name] = part.get_payload(decode=True) or b""
            data, purpose = fields.get("file", b""), fields.get("purpose", b"").decode()
            lines = []
            for line in data.decode(errors="replace").splitlines():
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    lines.append({"_raw": line})
            self._record({"purpose": purpose, "filename": filename, "lines": lines})
            if self._common_failure():
                return
            if purpose != "batch" or "file" not in fields:
                return self._send(400, {"error": {"message": "a file and purpose=batch are required",
                                                  "type": "invalid_request_error"}})
            self._send(200, server.add_file(data, purpose, filename))

        def _batch_post(self, path: str, body: dict[str, Any]) -> None:
            if self._common_failure():
                return
            if _BATCHES.match(path):
                return self._send(*server.create_batch(body))
            found = _BATCH_PATH.match(path)
            assert found is not None
            if found["action"] != "cancel" or found["id"] not in server.batches:
                return self._send(404, {"error": {"message": f"no route {path}"}})
            self._send(200, server.cancel_batch(found["id"]))

        def _batch_get(self, path: str) -> None:
            batch, file = _BATCH_PATH.match(path), _FILE_PATH.match(path)
            if batch is not None and not batch["action"] and batch["id"] in server.batches:
                return self._send(200, server.poll_batch(batch["id"]))
            if file is not None and file["id"] in server.files:
                if file["content"]:
                    return self._send(200, server.files[file["id"]]["bytes"])
                return self._send(200, server.file_object(file["id"]))
            return self._send(404, {"error": {"message": f"no such object at {path}",
                                              "type": "invalid_request_error"}})

        def do_DELETE(self) -> None:
            if self._drop_if_dead():
                return
            self._record(None)
            found = _FILE_PATH.match(self.path.split("?")[0])
            if found is None or found["content"] or found["id"] not in server.files:
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            with server._lock:
                del server.files[found["id"]]
            self._send(200, {"id": found["id"], "object": "file", "deleted": True})

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
                    if i == 0 and b.stamp_file:
                        with open(b.stamp_file, "a") as stamps:
                            stamps.write(f"{time.monotonic()!r}\n")
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
    parser.add_argument("--mode", default="ok", help="ok | hang | error | ... (see Behaviour)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds before each streamed text chunk")
    parser.add_argument("--stamp-file", default=None, help="append the monotonic time of each stream's first chunk")
    args = parser.parse_args()
    server = FakeLLMServer(args.port, reply=args.reply, models=[args.model], loaded=args.model, latency=args.latency,
                           probe_latency=args.probe_latency, slots=args.slots, mode=args.mode,
                           chunk_delay=args.chunk_delay, stamp_file=args.stamp_file)
    print(server.url, flush=True)
    try:
        server.httpd.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
