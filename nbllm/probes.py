"""The HTTP conversations that tell whether a local server is up and what it serves.

One function per server dialect (OpenAI-compatible, LM Studio, Ollama, llama.cpp);
the catalog says which dialect a provider speaks. Failures become `ProbeError`
with a sentence a notebook user can act on.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from .catalog import ProviderSpec
from .clients import shared_client
from .config import ProviderSettings, openai_base, server_root
from .errors import ProbeError

__all__ = ["Found", "ProbeError", "probe", "get_json", "describe_http_error"]


@dataclass
class Found:
    base_url: str
    models: list[str] = field(default_factory=list)
    loaded: str | None = None
    note: str | None = None


_STATUS_WORDS = {
    401: "unauthorized — check the API key",
    403: "forbidden — check the API key and its permissions",
    404: "not found — is this the right server and path?",
    429: "rate limited — wait and retry",
    503: "service unavailable (the server may still be loading its model)",
}


def describe_http_error(status: int) -> str:
    words = _STATUS_WORDS.get(status) or ("server error" if status >= 500 else "request rejected")
    return f"HTTP {status}: {words}"


async def get_json(url: str, timeout: float, headers: dict[str, str] | None = None) -> Any:
    """GET `url` and decode JSON, turning every failure into a ProbeError in words."""
    import httpx2

    client = shared_client()
    try:
        response = await client.get(url, timeout=timeout, headers=headers)
    except httpx2.ConnectError as exc:
        text = str(exc).lower()
        refused = not text or "refused" in text or "all connection attempts failed" in text
        reason = "connection refused (nothing is listening)" if refused else f"cannot connect ({exc})"
        raise ProbeError(f"{reason} at {url}", url) from None
    except httpx2.TimeoutException:
        raise ProbeError(f"timed out after {timeout:g} s at {url}", url) from None
    except httpx2.HTTPError as exc:
        raise ProbeError(f"{type(exc).__name__} at {url}: {exc}", url) from None
    if response.status_code >= 400:
        raise ProbeError(f"{describe_http_error(response.status_code)} at {url}", url, response.status_code)
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise ProbeError(f"answered with invalid JSON at {url}", url, response.status_code) from None


def _model_ids(payload: Any, list_key: str = "data", id_keys: tuple[str, ...] = ("id",)) -> list[str]:
    """Model names out of `{"data": [{"id": ...}]}` style payloads; garbage → ProbeError."""
    if not isinstance(payload, dict) or not isinstance(payload.get(list_key, []), list):
        raise ProbeError(f"unexpected answer: no '{list_key}' list of models")
    names: list[str] = []
    for item in payload.get(list_key, []):
        if isinstance(item, dict):
            for key in id_keys:
                if isinstance(item.get(key), str):
                    names.append(item[key])
                    break
    return names


async def _openai_models(root: str, timeout: float, headers: dict[str, str] | None = None) -> Found:
    url = openai_base(root)
    payload = await get_json(f"{url}/models", timeout, headers)
    return Found(base_url=url, models=_model_ids(payload))


def _auth(settings: ProviderSettings) -> dict[str, str] | None:
    """A local server may have authentication turned on: send its key when one is set."""
    return {"Authorization": f"Bearer {settings.api_key.get()}"} if settings.api_key else None


async def _probe_openai(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> Found:
    return await _openai_models(settings.base_url, timeout, _auth(settings))


async def _probe_lmstudio(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> Found:
    """LM Studio's /api/v0/models says which model is loaded; fall back to /v1/models."""
    root = server_root(settings.base_url)
    try:
        payload = await get_json(f"{root}/api/v0/models", timeout, _auth(settings))
    except ProbeError as exc:
        if exc.status is None or exc.status >= 500:
            raise
        return await _openai_models(root, timeout, _auth(settings))
    models = _model_ids(payload)
    chat = [m for m in payload.get("data", []) if isinstance(m, dict) and m.get("type", "llm") in ("llm", "vlm")]
    loaded = next((m.get("id") for m in chat if m.get("state") == "loaded"), None)
    # Nothing loaded: LM Studio loads on demand, so offer a chat model, never an embedding model.
    loaded = loaded or next((m.get("id") for m in chat if isinstance(m.get("id"), str)), None)
    return Found(base_url=openai_base(root), models=models, loaded=loaded)


async def _probe_ollama(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> Found:
    """Ollama's native /api/tags lists pulled models and /api/ps the loaded ones."""
    root = server_root(settings.base_url)
    tags, running = await asyncio.gather(
        get_json(f"{root}/api/tags", timeout, _auth(settings)), get_json(f"{root}/api/ps", timeout, _auth(settings)),
        return_exceptions=True,
    )
    if isinstance(tags, BaseException):
        raise tags
    models = _model_ids(tags, "models", ("name", "model"))
    loaded = None
    if not isinstance(running, BaseException) and isinstance(running, dict):
        loaded_names = _model_ids(running, "models", ("name", "model"))
        loaded = loaded_names[0] if loaded_names else None
    note = None if models else "no models pulled: run `ollama pull llama3.2`"
    return Found(base_url=root, models=models, loaded=loaded, note=note)


async def _probe_llamacpp_at(root: str, timeout: float, headers: dict[str, str] | None = None) -> Found:
    """llama-server has /health (503 while loading); llama-cpp-python's server has none."""
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
    found = await _openai_models(root, timeout, headers)
    found.base_url = root
    found.loaded = found.models[0] if found.models else None
    return found


async def _probe_llamacpp(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> Found:
    """Probe the configured address, or every default port at once (first in order wins)."""
    roots = [server_root(settings.base_url)]
    if settings.base_url_is_default:
        roots += [server_root(u) for u in spec.alt_base_urls]
    results = await asyncio.gather(*(_probe_llamacpp_at(r, timeout, _auth(settings)) for r in roots), return_exceptions=True)
    for result in results:
        if isinstance(result, Found):
            return result
    errors = [r for r in results if isinstance(r, BaseException)]
    if len(errors) == 1:
        raise errors[0]
    # Prefer the most informative failure (an HTTP answer beats a refusal).
    best = next((e for e in errors if isinstance(e, ProbeError) and e.status), errors[0])
    if isinstance(best, ProbeError) and not best.status:
        raise ProbeError("; ".join(str(e) for e in errors), best.url)
    raise best


_DIALECTS = {
    "openai": _probe_openai,
    "lmstudio": _probe_lmstudio,
    "ollama": _probe_ollama,
    "llamacpp": _probe_llamacpp,
}


async def probe(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> Found:
    """Ask the server what it serves, in the dialect the catalog names."""
    # A cloud provider is probed only when it points at a self-hosted server, which speaks OpenAI's API.
    dialect = _DIALECTS.get("openai" if spec.probe == "key" else spec.probe)
    if dialect is None:
        raise ProbeError(f"no probe for style {spec.probe!r}")
    return await dialect(spec, settings, timeout)
