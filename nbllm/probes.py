"""The HTTP conversations with a local server: is it up, and what does it serve.

One function per server dialect (OpenAI-compatible, LM Studio, Ollama, llama.cpp);
the catalog says which dialect a provider speaks. Health and `nbllm.models()` both
ask through here, so the endpoints, the alternate ports and the parsing of each
dialect live in one place; `Found.listed` keeps all a server says of each model
(health reads the names, a listing the rest). Failures become `ProbeError` with a
sentence a notebook user can act on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import plainhttp
from .catalog import ProviderSpec
from .clients import shared_client
from .config import ProviderSettings, openai_base, server_root
from .errors import ProbeError

__all__ = ["Found", "Listed", "ProbeError", "probe", "openai_models", "openai_listed", "auth", "get_json", "request_json",
           "describe_http_error", "entries", "integer", "nonempty"]


@dataclass
class Listed:
    """One model as an endpoint describes it (only what it says; the rest None)."""

    model: str
    loaded: bool | None = None
    owned_by: str | None = None
    context_length: int | None = None
    size: int | None = None
    """Bytes on disk (Ollama, llama.cpp)."""
    parameter_size: str | None = None
    quantization: str | None = None


@dataclass
class Found:
    """What one server answered: its models and the one it has loaded (or would use)."""

    base_url: str
    listed: list[Listed] = field(default_factory=list)
    loaded: str | None = None
    note: str | None = None

    @property
    def models(self) -> list[str]:
        return [m.model for m in self.listed]

    @property
    def detected(self) -> str | None:
        """The model a call would use when none is configured: the loaded one, else the first."""
        return self.loaded or next(iter(self.models), None)


def describe_http_error(status: int) -> str:
    """The status in the words every HTTP failure uses (`failures.status_words`); what to do is the caller's hint."""
    from .failures import status_words

    return status_words(status)


def auth(settings: ProviderSettings) -> dict[str, str] | None:
    """A server may have authentication turned on (local ones too): send its key as Bearer when one is set."""
    return {"Authorization": f"Bearer {settings.api_key.get()}"} if settings.api_key else None


async def get_json(url: str, timeout: float, headers: dict[str, str] | None = None) -> Any:
    """GET `url` and decode JSON, turning every failure into a ProbeError in words."""
    return await request_json("GET", url, None, timeout, headers)


async def request_json(method: str, url: str, body: Any, timeout: float,
                       headers: dict[str, str] | None = None) -> Any:
    """`method url` with `body` as JSON (None: no body) and the answer decoded: every conversation with a
    local server (probes, listings, tokenizers) goes through here, so a failure reads the same everywhere.
    A GET on plain http goes by `plainhttp` (no httpx2 import for a first `--status`); the rest by httpx2."""
    if method == "GET" and body is None and plainhttp.eligible(url, headers):
        try:
            return _decoded(*await _plain_get(url, timeout, headers), url)
        except plainhttp.NotPlain:  # (redirected to https, say): httpx2 asks again from the start
            pass
    import httpx2

    client = shared_client()
    failure: ProbeError | None = None
    try:
        response = await client.request(method, url, json=body, timeout=timeout, headers=headers)
    except httpx2.ConnectError as exc:
        text = str(exc).lower()
        refused = not text or "refused" in text or "all connection attempts failed" in text
        failure = _failed("refused" if refused else "connect", exc, url, timeout)
    except httpx2.TimeoutException as exc:
        failure = _failed("timeout", exc, url, timeout)
    except httpx2.HTTPError as exc:
        failure = _failed(type(exc).__name__, exc, url, timeout)
    if failure is not None:  # raised outside the except: the transport's exception is not chained
        raise failure
    return _decoded(response.status_code, response.content, url)


async def _plain_get(url: str, timeout: float, headers: dict[str, str] | None) -> tuple[int, bytes]:
    """`plainhttp.get` within `timeout`, its failures in the words httpx2's get (`_failed`)."""
    failure: ProbeError | None = None
    try:
        async with asyncio.timeout(timeout):
            return await plainhttp.get(url, headers)
    except TimeoutError as exc:
        failure = _failed("timeout", exc, url, timeout)
    except plainhttp.Failed as exc:
        failure = _failed("RemoteProtocolError" if exc.kind == "protocol" else exc.kind, exc, url, timeout)
    raise failure


def _failed(kind: str, exc: BaseException, url: str, timeout: float) -> ProbeError:
    """A request that got no answer, in the words every probe uses: `kind` "refused", "connect", "timeout",
    or the name of the protocol error."""
    if kind == "refused":
        return ProbeError(f"connection refused (nothing is listening) at {url}", url)
    if kind == "connect":
        return ProbeError(f"cannot connect ({exc}) at {url}", url)
    if kind == "timeout":
        return ProbeError(f"timed out after {timeout:g} s at {url}", url)
    return ProbeError(f"{kind} at {url}: {exc}", url)


def _decoded(status: int, content: bytes, url: str) -> Any:
    """An answer's JSON; a failure status or a body that is not JSON is a ProbeError."""
    if status >= 400:
        raise ProbeError(f"{describe_http_error(status)} at {url}", url, status)
    try:
        return json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise ProbeError(f"answered with invalid JSON at {url}", url, status) from None


# ---- payload shapes -----------------------------------------------------------------


def entries(payload: Any, key: str, url: str) -> list[dict[str, Any]]:
    """The entries of `{key: [...]}`; a missing list is an empty one, anything else a ProbeError."""
    listed = payload.get(key, []) if isinstance(payload, dict) else None
    if not isinstance(listed, list):
        raise ProbeError(f"unexpected answer at {url}: no '{key}' list of models", url)
    return [item for item in listed if isinstance(item, dict)]


def integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def nonempty(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _openai_listed(item: dict[str, Any]) -> Listed | None:
    """An OpenAI-style model entry; the context length goes by many names (OpenRouter, vLLM,
    Groq, Mistral, llama-server's `meta`)."""
    name = nonempty(item.get("id"))
    if name is None:
        return None
    meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
    context = next((integer(v) for v in (item.get("context_length"), item.get("max_model_len"),
                                         item.get("context_window"), item.get("max_context_length"),
                                         meta.get("n_ctx_train")) if integer(v) is not None), None)
    status = item.get("status")
    loaded = status.get("value") == "loaded" if isinstance(status, dict) and "value" in status else None
    return Listed(model=name, owned_by=nonempty(item.get("owned_by")), context_length=context,
                  size=integer(meta.get("size")), loaded=loaded)


def openai_listed(payload: Any, url: str) -> list[Listed]:
    """The models of an OpenAI-style `{"data": [{"id": ...}]}` list (cloud lists parse it too)."""
    return [m for m in map(_openai_listed, entries(payload, "data", url)) if m is not None]


async def openai_models(base: str, timeout: float, headers: dict[str, str] | None = None) -> Found:
    """`GET {base}/models`, the list every OpenAI-compatible server answers."""
    url = f"{base}/models"
    return Found(base_url=base, listed=openai_listed(await get_json(url, timeout, headers), url))


# ---- the dialects -------------------------------------------------------------------


async def _probe_openai(spec: ProviderSpec, settings: ProviderSettings, timeout: float, ready: bool) -> Found:
    return await openai_models(openai_base(settings.base_url), timeout, auth(settings))


async def _probe_lmstudio(spec: ProviderSpec, settings: ProviderSettings, timeout: float, ready: bool) -> Found:
    """LM Studio's /api/v0/models says which model is loaded; a server without it answers /v1/models."""
    root = server_root(settings.base_url)
    url = f"{root}/api/v0/models"
    try:
        payload = await get_json(url, timeout, auth(settings))
    except ProbeError as exc:
        if exc.status is None or exc.status >= 500:
            raise
        return await openai_models(openai_base(root), timeout, auth(settings))
    models = [item for item in entries(payload, "data", url) if nonempty(item.get("id"))]
    listed = [Listed(model=m["id"], loaded=m.get("state") == "loaded" if "state" in m else None,
                     owned_by=nonempty(m.get("publisher")), context_length=integer(m.get("max_context_length")),
                     quantization=nonempty(m.get("quantization"))) for m in models]
    chat = [m for m in models if m.get("type", "llm") in ("llm", "vlm")]
    loaded = next((m["id"] for m in chat if m.get("state") == "loaded"), None)
    # Nothing loaded: LM Studio loads on demand, so offer a chat model, never an embedding model.
    loaded = loaded or next((m["id"] for m in chat), None)
    return Found(base_url=openai_base(root), listed=listed, loaded=loaded)


def _ollama_names(item: dict[str, Any]) -> str | None:
    return nonempty(item.get("name")) or nonempty(item.get("model"))


async def _probe_ollama(spec: ProviderSpec, settings: ProviderSettings, timeout: float, ready: bool) -> Found:
    """Ollama's native /api/tags lists pulled models (size, parameters) and /api/ps the loaded ones
    (a /api/ps that fails leaves the loaded state unknown, not the server down)."""
    root = server_root(settings.base_url)
    tags_url, ps_url = f"{root}/api/tags", f"{root}/api/ps"
    tags, running = await asyncio.gather(get_json(tags_url, timeout, auth(settings)),
                                         get_json(ps_url, timeout, auth(settings)), return_exceptions=True)
    if isinstance(tags, BaseException):
        raise tags
    running_names: list[str] | None = None
    if isinstance(running, dict) and isinstance(running.get("models", []), list):
        running_names = [n for n in map(_ollama_names, entries(running, "models", ps_url)) if n]
    listed = []
    for item in entries(tags, "models", tags_url):
        name = _ollama_names(item)
        if name is None:
            continue
        details = item.get("details") if isinstance(item.get("details"), dict) else {}
        listed.append(Listed(model=name, loaded=None if running_names is None else name in running_names,
                             size=integer(item.get("size")), parameter_size=nonempty(details.get("parameter_size")),
                             quantization=nonempty(details.get("quantization_level"))))
    note = None if listed else "no models pulled: run `ollama pull llama3.2`"
    return Found(base_url=root, listed=listed, loaded=next(iter(running_names or ()), None), note=note)


async def _llamacpp_at(root: str, timeout: float, headers: dict[str, str] | None, ready: bool) -> Found:
    """llama-server has /health (503 while loading; asked when `ready`); llama-cpp-python's server has none."""
    if ready:
        try:
            health = await get_json(f"{root}/health", timeout, headers)
        except ProbeError as exc:
            if exc.status == 503:
                raise ProbeError(f"HTTP 503: llama.cpp is still loading its model at {root}", exc.url, 503) from None
            if exc.status != 404:
                raise
        else:
            if isinstance(health, dict) and health.get("status") not in (None, "ok", "no slot available"):
                raise ProbeError(f"llama.cpp reports status {health.get('status')!r} at {root}", root)
    found = await openai_models(openai_base(root), timeout, headers)
    for m in found.listed:
        if m.loaded is None:  # llama-server serves what it lists (its router mode says per model)
            m.loaded = True
    found.base_url = root
    found.loaded = next((m.model for m in found.listed if m.loaded), None)
    return found


async def _first_answer(roots: list[str], ask: Callable[[str], Awaitable[Found]]) -> Found:
    """Ask every address at once; the first in order that answers wins, else the most informative failure."""
    results = await asyncio.gather(*(ask(root) for root in roots), return_exceptions=True)
    found = next((r for r in results if isinstance(r, Found)), None)
    if found is not None:
        return found
    errors = [r for r in results if isinstance(r, BaseException)]
    answered = next((e for e in errors if isinstance(e, ProbeError) and e.status), None)  # an HTTP answer
    if answered is not None or len(errors) == 1:                                          # beats a refusal
        raise answered or errors[0]
    first = errors[0]
    raise ProbeError("; ".join(str(e) for e in errors), first.url if isinstance(first, ProbeError) else None)


async def _probe_llamacpp(spec: ProviderSpec, settings: ProviderSettings, timeout: float, ready: bool) -> Found:
    """The configured address, or every default port at once."""
    roots = [server_root(settings.base_url)]
    if settings.base_url_is_default:
        roots += [server_root(u) for u in spec.alt_base_urls]
    return await _first_answer(roots, lambda root: _llamacpp_at(root, timeout, auth(settings), ready))


_DIALECTS = {
    "openai": _probe_openai,
    "lmstudio": _probe_lmstudio,
    "ollama": _probe_ollama,
    "llamacpp": _probe_llamacpp,
}


async def probe(spec: ProviderSpec, settings: ProviderSettings, timeout: float, *, ready: bool = True) -> Found:
    """Ask the server what it serves, in the dialect the catalog names.

    `ready=False` (a listing of models) leaves out llama.cpp's /health: health asks whether
    the server can answer now; a list of what it serves does not need that extra request.
    """
    # A cloud provider is probed only when it points at a self-hosted server, which speaks OpenAI's API.
    dialect = _DIALECTS.get("openai" if spec.probe == "key" else spec.probe)
    if dialect is None:
        raise ProbeError(f"no probe for style {spec.probe!r}")
    return await dialect(spec, settings, timeout, ready)
