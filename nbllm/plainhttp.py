"""GET over plain HTTP/1.1 on asyncio's streams: how health probes ask a local server.

Why by hand (the one HTTP piece nbllm writes itself; see DESIGN.md): a probe is a GET of a
small JSON document from a server on this machine or the LAN, and `%llm_providers --status`
is often the first thing a notebook runs. Importing httpx2 for it (httpx2, httpcore2, anyio,
h11, and `importlib.metadata` for httpx2's version) was ~60 ms of the first status, more than
the probes themselves. What this module does not do it leaves to httpx2, which `eligible`
and `NotPlain` send the request to: TLS, proxies, credentials in the URL, anything but GET.
Each request has its own connection (`Connection: close`); probes are few and concurrent.
"""

from __future__ import annotations

import asyncio
import errno
from urllib.parse import urljoin, urlsplit

from .errors import NotPlainHTTP as NotPlain
from .errors import PlainHTTPFailed as Failed

__all__ = ["eligible", "get", "Failed", "NotPlain", "enabled"]

enabled = True
"""False sends every request through httpx2 (tests that mock httpx2 with respx turn this off)."""

_REDIRECTS = {301, 302, 303, 307, 308}
_MAX_REDIRECTS = 5
_MAX_BODY = 8 * 1024 * 1024
"""A model list is kilobytes (Ollama's with a hundred models ~100 KB); more is not an answer to a probe."""
_MAX_HEADERS = 100


def eligible(url: str, headers: dict[str, str] | None = None) -> bool:
    """Whether `url` can be asked here: http, a host, no credentials, no proxy configured, clean headers."""
    if not enabled:
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    if parts.scheme != "http" or not parts.hostname or parts.username is not None or parts.password is not None:
        return False
    from .config import proxy_configured

    if proxy_configured():
        return False
    return not any(_unsafe(k) or _unsafe(v) for k, v in (headers or {}).items())


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or 80


def _unsafe(text: str) -> bool:
    return any(c in text for c in "\r\n\0")


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET `url`, following redirects on plain http: the final status and body. The caller bounds the
    time (`asyncio.timeout`). Raises `Failed`, or `NotPlain` for what httpx2 must do."""
    headers = headers or {}
    for _ in range(_MAX_REDIRECTS + 1):
        status, location, body = await _exchange(url, headers)
        if status not in _REDIRECTS or not location:
            return status, body
        target = urljoin(url, location)
        if not eligible(target, headers):
            raise NotPlain(target)
        if _origin(target) != _origin(url):  # a key for one server is never sent to another
            headers = {}
        url = target
    raise Failed("protocol", f"more than {_MAX_REDIRECTS} redirects")


async def _exchange(url: str, headers: dict[str, str]) -> tuple[int, str | None, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: application/json",
             "Accept-Encoding: identity", "Connection: close", "User-Agent: nbllm"]
    lines += [f"{name}: {value}" for name, value in headers.items()
              if name.lower() not in ("host", "connection", "accept-encoding")]
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except (OSError, ValueError) as exc:  # (a name that cannot be encoded is a UnicodeError, a ValueError)
        kind = "refused" if isinstance(exc, OSError) and _refused(exc) else "connect"
        raise Failed(kind, str(exc) or type(exc).__name__) from None
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))
        await writer.drain()
        return await _response(reader)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise Failed("protocol", _cut(exc)) from None
    finally:
        writer.close()


def _refused(exc: OSError) -> bool:
    """Refused, also when every address of a name was (asyncio joins those into one OSError)."""
    return isinstance(exc, ConnectionRefusedError) or f"[Errno {errno.ECONNREFUSED}]" in str(exc)


def _cut(exc: BaseException) -> str:
    """In words: a body cut short or a reset connection (the OS's text says little), else what went wrong."""
    if isinstance(exc, asyncio.IncompleteReadError) or (isinstance(exc, OSError) and exc.errno):
        return "server disconnected before the whole answer arrived"
    return str(exc) or type(exc).__name__


async def _response(reader: asyncio.StreamReader) -> tuple[int, str | None, bytes]:
    while True:
        status, fields = await _head(reader)
        if not 100 <= status < 200:  # (an interim 1xx answer is followed by the real one)
            break
    if status in (204, 304):
        return status, fields.get("location"), b""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = await _chunked(reader)
    elif "content-length" in fields:
        length = int(fields["content-length"])
        if not 0 <= length <= _MAX_BODY:
            raise ValueError(f"a body of {length} bytes")
        body = await reader.readexactly(length)
    else:
        body = await reader.read(_MAX_BODY + 1)
        while len(body) <= _MAX_BODY and not reader.at_eof():
            more = await reader.read(_MAX_BODY + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > _MAX_BODY:
            raise ValueError(f"a body of more than {_MAX_BODY} bytes")
    return status, fields.get("location"), body


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    line = await reader.readline()
    if not line:
        raise ConnectionError("server disconnected without sending a response")
    version, _, rest = line.decode("latin-1").strip().partition(" ")
    code = rest.partition(" ")[0]
    if not version.startswith("HTTP/1.") or not (code.isdigit() and len(code) == 3):
        raise ValueError(f"not an HTTP response: {line[:60]!r}")
    fields: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError("cut in the headers")
        if line in (b"\r\n", b"\n"):
            return int(code), fields
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise ValueError(f"a malformed header line: {line[:60]!r}")
        fields[name.strip().lower()] = value.strip()
    raise ValueError(f"more than {_MAX_HEADERS} header lines")


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readline()
        if not size_line.endswith(b"\n"):
            raise ConnectionError("cut in a chunk")
        size = int(size_line.split(b";")[0].strip() or b"x", 16)
        if size == 0:
            for _ in range(_MAX_HEADERS):  # trailers, then the blank line
                if (await reader.readline()) in (b"\r\n", b"\n", b""):
                    return bytes(body)
            raise ValueError(f"more than {_MAX_HEADERS} trailer lines")
        if len(body) + size > _MAX_BODY:
            raise ValueError(f"a body of more than {_MAX_BODY} bytes")
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # the CRLF after each chunk
