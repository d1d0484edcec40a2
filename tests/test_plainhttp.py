"""nbllm.plainhttp, the plain-http GET that probes use, against real servers: the fake LLM server, and
raw sockets answering in the ways a broken server does (cut, garbage, silent, chunked, redirected)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

from nbllm import plainhttp
from nbllm.errors import ProbeError
from nbllm.probes import get_json

Answer = Callable[[bytes], bytes | None]


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine's proxy variables turn the shortcut off (httpx2 decides then): these tests run without."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


class RawServer:
    """A TCP server on 127.0.0.1 answering each request with `answer(request_bytes)` (None: never answers)."""

    def __init__(self, answer: Answer, host: str = "127.0.0.1") -> None:
        self.answer, self.host = answer, host
        self.seen: list[bytes] = []

    async def __aenter__(self) -> "RawServer":
        self.server = await asyncio.start_server(self._serve, self.host, 0)
        self.url = f"http://{self.host}:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        self.seen.append(request)
        reply = self.answer(request)
        if reply is None:
            await asyncio.sleep(30)
        else:
            writer.write(reply)
            await writer.drain()
        writer.close()


def ask(answer: Answer, path: str = "/v1/models", timeout: float = 2.0, headers: dict[str, str] | None = None):
    async def go():
        async with RawServer(answer) as server:
            try:
                return await get_json(server.url + path, timeout, headers), server
            except ProbeError as exc:
                return exc, server

    return asyncio.run(go())


def http(status: str, body: bytes, *fields: str) -> bytes:
    head = "\r\n".join([f"HTTP/1.1 {status}", *fields]) + "\r\n\r\n"
    return head.encode() + body


MODELS = json.dumps({"data": [{"id": "qwen3"}]}).encode()


def test_a_content_length_body_is_read_and_the_request_is_plain_http():
    found, server = ask(lambda _: http("200 OK", MODELS, f"Content-Length: {len(MODELS)}"),
                        headers={"Authorization": "Bearer sk-local"})
    assert found == {"data": [{"id": "qwen3"}]}
    request = server.seen[0].decode()
    assert request.startswith("GET /v1/models HTTP/1.1\r\n")
    assert f"Host: {server.url.removeprefix('http://')}" in request and "Authorization: Bearer sk-local" in request


def test_chunked_and_until_close_bodies():
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (MODELS[:7], MODELS[7:])) + b"0\r\n\r\n"
    assert ask(lambda _: http("200 OK", chunked, "Transfer-Encoding: chunked"))[0] == json.loads(MODELS)
    assert ask(lambda _: http("200 OK", MODELS))[0] == json.loads(MODELS)  # no length: read until close


@pytest.mark.parametrize("reply, words", [
    (http("200 OK", MODELS[:10], f"Content-Length: {len(MODELS)}"), "server disconnected before the whole answer"),
    (b"", "server disconnected without sending a response"),
    (b"hello there\r\n\r\n", "not an HTTP response"),
    (http("200 OK", b"zz\r\nabc", "Transfer-Encoding: chunked"), "RemoteProtocolError"),
])
def test_a_cut_or_garbled_answer_is_one_probe_error(reply, words):
    error, _ = ask(lambda _: reply)
    assert isinstance(error, ProbeError) and words in str(error)
    assert "/v1/models" in str(error)


def test_a_status_and_invalid_json_read_as_httpx2s_do():
    error, _ = ask(lambda _: http("404 Not Found", b"{}", "Content-Length: 2"))
    assert isinstance(error, ProbeError) and error.status == 404
    error, _ = ask(lambda _: http("200 OK", b"<html>", "Content-Length: 6"))
    assert isinstance(error, ProbeError) and "invalid JSON" in str(error)


def test_a_silent_server_times_out_and_a_closed_port_is_refused(unused_port: int):
    error, _ = ask(lambda _: None, timeout=0.3)
    assert isinstance(error, ProbeError) and "timed out after 0.3 s" in str(error)
    refused = asyncio.run(_refused(unused_port))
    assert isinstance(refused, ProbeError) and "connection refused (nothing is listening)" in str(refused)


async def _refused(port: int) -> ProbeError | None:
    try:
        await get_json(f"http://127.0.0.1:{port}/v1/models", 1.0)
    except ProbeError as exc:
        return exc
    return None


def test_redirects_are_followed_on_plain_http():
    def answer(request: bytes) -> bytes:
        if request.startswith(b"GET /old "):
            return http("307 Temporary Redirect", b"", "Location: /v1/models", "Content-Length: 0")
        return http("200 OK", MODELS, f"Content-Length: {len(MODELS)}")

    found, server = ask(answer, path="/old")
    assert found == json.loads(MODELS) and len(server.seen) == 2


def test_a_redirect_to_another_server_does_not_carry_the_key():
    """As httpx2 does: credentials for one origin are never sent to another one a redirect names."""
    async def go():
        async with RawServer(lambda _: http("200 OK", MODELS, f"Content-Length: {len(MODELS)}"),
                             host="127.0.0.2") as other:
            moved = other.url + "/v1/models"
            async with RawServer(lambda _: http("302 Found", b"", f"Location: {moved}", "Content-Length: 0")) as first:
                found = await get_json(first.url + "/v1/models", 2.0, {"Authorization": "Bearer sk-local-secret"})
                return found, first.seen, other.seen

    found, asked_first, asked_other = asyncio.run(go())
    assert found == json.loads(MODELS)
    assert b"sk-local-secret" in asked_first[0] and b"sk-local-secret" not in asked_other[0]


def test_a_name_that_cannot_be_looked_up_is_one_probe_error():
    url = "http://" + "a" * 70 + ".example:1234/v1/models"  # a DNS label over 63 characters cannot be encoded
    error = asyncio.run(_failure(url))
    assert isinstance(error, ProbeError) and "cannot connect" in str(error)


async def _failure(url: str) -> ProbeError | None:
    try:
        await get_json(url, 2.0)
    except ProbeError as exc:
        return exc
    return None


def test_what_plain_http_does_not_do_goes_to_httpx2(monkeypatch):
    assert plainhttp.eligible("http://127.0.0.1:1234/v1/models")
    assert not plainhttp.eligible("https://api.openai.com/v1/models")
    assert not plainhttp.eligible("http://user:pw@127.0.0.1:1234/v1")
    assert not plainhttp.eligible("http://127.0.0.1:1234/v1", {"X-Bad": "a\r\nInjected: yes"})
    assert not plainhttp.eligible("http://127.0.0.1:notaport/v1")
    monkeypatch.setenv("NO_PROXY", "localhost")  # httpx2 mounts its hosts: it decides
    assert not plainhttp.eligible("http://127.0.0.1:1234/v1/models")
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert not plainhttp.eligible("http://127.0.0.1:1234/v1/models")


def test_tls_waits_for_https_and_fails_closed_until_then(monkeypatch):
    """The probe/wire client's http transport trusts no certificate (a TLS handshake through it fails,
    never passes unchecked); with any proxy setting the client is httpx2's usual one (CAs loaded)."""
    from nbllm.clients import http_client

    context = http_client()._transport._pool._ssl_context  # (httpx2/httpcore2 internals: a test's view)
    assert context.cert_store_stats()["x509_ca"] == 0 and context.check_hostname
    monkeypatch.setenv("NO_PROXY", "example.com")
    assert http_client()._transport._pool._ssl_context.cert_store_stats()["x509_ca"] > 0


def test_a_redirect_to_https_is_asked_again_through_httpx2():
    """The plain path gives up (NotPlain) and httpx2 follows the redirect itself: a TLS handshake with a
    server that speaks none fails as one ProbeError, never as a crash."""
    def answer(request: bytes) -> bytes:
        return http("302 Found", b"", "Location: https://127.0.0.1:1/v1/models", "Content-Length: 0")

    error, server = ask(answer)
    assert isinstance(error, ProbeError) and "127.0.0.1" in str(error)
    assert len(server.seen) == 2  # asked once by plainhttp, once by httpx2


def test_a_fresh_status_against_a_real_server_does_not_import_httpx2(fake_server, tmp_path):
    """The first `--status` in a process asks a local server without httpx2 (the point of plainhttp)."""
    code = textwrap.dedent("""
        import sys
        import nbllm
        health = nbllm.health_check()
        print(health["lmstudio"].available, health["lmstudio"].models, "httpx2" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PROXY") and not k.endswith("_proxy")}
    env.update(LMSTUDIO_BASE_URL=fake_server.url + "/v1", EMBEDDED_ENABLED="0")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    available, models, imported = done.stdout.split(" ", 1)[0], done.stdout, done.stdout.split()[-1]
    assert available == "True" and "fake-model" in models, done.stdout
    assert imported == "False"


@pytest.fixture
def unused_port() -> Iterator[int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port
