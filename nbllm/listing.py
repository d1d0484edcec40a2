"""What models an endpoint lists, in each dialect nbllm speaks.

Local servers are asked the way health asks them (OpenAI-compatible `/v1/models`,
LM Studio `/api/v0/models` with its loaded state, Ollama `/api/tags` + `/api/ps`,
llama.cpp `/v1/models`); cloud providers by their own list endpoint with the key in a
header (OpenAI-compatible `GET {base}/models` with Bearer, Anthropic `GET /v1/models`
with `x-api-key`, Gemini `GET /v1beta/models` with `x-goog-api-key` — never the key in
the URL). Why a module apart from health: a cloud list is a network call with the key,
made only when someone asks (`nbllm.models()`, the panel's "list models" button), never
by status or health. A fleet (`{P}_BASE_URL` with several URLs) lists the union, each
row naming its server. Every failure is one `NbllmError` line (provider, URL, what to do).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

from . import probes
from .catalog import AUTO, ProviderSpec, key_names
from .config import ProviderSettings, openai_base, server_root
from .errors import ConfigurationError, ModelError, NbllmError, ProbeError, display_url
from .health import base_url_advice, self_hosted
from .registry import get_registry

__all__ = ["COLUMNS", "Listed", "Listing", "list_models", "target"]

COLUMNS = ["provider", "server", "model", "default", "loaded", "owned_by", "context_length", "size",
           "parameter_size", "quantization"]
"""The columns of `nbllm.models()`, always all of them (None where the endpoint does not say)."""

ANTHROPIC_VERSION = "2023-06-01"
_MAX_PAGES = 20
"""Anthropic and Gemini page their lists; a bound so a server that keeps paging cannot loop forever."""


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
class _Served:
    """What one server listed, and the model it would use by default (loaded, else first)."""

    server: str
    models: list[Listed]
    detected: str | None = None


@dataclass
class Listing:
    """Rows (dicts with `COLUMNS`) of every server that answered; `failed` maps a fleet's
    servers that did not answer to why (a single server that fails raises instead)."""

    provider: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Model ids in listing order, each once (a fleet's servers often serve the same)."""
        return list(dict.fromkeys(row["model"] for row in self.rows))


# ---- payload shapes -----------------------------------------------------------------


def _items(payload: Any, key: str, url: str) -> list[dict[str, Any]]:
    if not isinstance(payload, dict) or not isinstance(payload.get(key), list):
        raise ProbeError(f"unexpected answer at {url}: no '{key}' list of models", url)
    return [item for item in payload[key] if isinstance(item, dict)]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _openai_listed(item: dict[str, Any]) -> Listed | None:
    """An OpenAI-style model entry; the context length goes by many names (OpenRouter, vLLM,
    Groq, Mistral, llama-server's `meta`)."""
    name = _text(item.get("id"))
    if name is None:
        return None
    meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
    context = next((_int(v) for v in (item.get("context_length"), item.get("max_model_len"),
                                      item.get("context_window"), item.get("max_context_length"),
                                      meta.get("n_ctx_train")) if _int(v) is not None), None)
    status = item.get("status")
    loaded = status.get("value") == "loaded" if isinstance(status, dict) and "value" in status else None
    return Listed(model=name, owned_by=_text(item.get("owned_by")), context_length=context,
                  size=_int(meta.get("size")), loaded=loaded)


def _openai_models(payload: Any, url: str) -> list[Listed]:
    return [m for m in map(_openai_listed, _items(payload, "data", url)) if m is not None]


# ---- local dialects -----------------------------------------------------------------


def _bearer(settings: ProviderSettings) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {settings.api_key.get()}"} if settings.api_key else None


async def _list_openai_at(base: str, settings: ProviderSettings, timeout: float) -> _Served:
    url = f"{base}/models"
    models = _openai_models(await probes.get_json(url, timeout, _bearer(settings)), url)
    return _Served(base, models, models[0].model if models else None)


async def _list_openai(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> _Served:
    return await _list_openai_at(openai_base(settings.base_url), settings, timeout)


async def _list_lmstudio(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> _Served:
    """`/api/v0/models` says which model is loaded; a server without it (a custom endpoint
    probed like LM Studio) answers `/v1/models`."""
    root = server_root(settings.base_url)
    url = f"{root}/api/v0/models"
    try:
        payload = await probes.get_json(url, timeout, _bearer(settings))
    except ProbeError as exc:
        if exc.status is None or exc.status >= 500:
            raise
        return await _list_openai_at(openai_base(root), settings, timeout)
    items = _items(payload, "data", url)
    models = [Listed(model=item["id"], loaded=item.get("state") == "loaded" if "state" in item else None,
                     owned_by=_text(item.get("publisher")), context_length=_int(item.get("max_context_length")),
                     quantization=_text(item.get("quantization")))
              for item in items if _text(item.get("id"))]
    chat = [item["id"] for item in items if _text(item.get("id")) and item.get("type", "llm") in ("llm", "vlm")]
    loaded = [item["id"] for item in items if item.get("id") in chat and item.get("state") == "loaded"]
    return _Served(openai_base(root), models, (loaded or chat or [None])[0])


async def _list_ollama(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> _Served:
    """Pulled models from `/api/tags` (with size and parameter size), loaded ones from `/api/ps`."""
    root = server_root(settings.base_url)
    tags_url = f"{root}/api/tags"
    tags, running = await asyncio.gather(probes.get_json(tags_url, timeout, _bearer(settings)),
                                         probes.get_json(f"{root}/api/ps", timeout, _bearer(settings)),
                                         return_exceptions=True)
    if isinstance(tags, BaseException):
        raise tags
    loaded: set[str] | None = None
    if isinstance(running, dict) and isinstance(running.get("models"), list):
        loaded = {m.get("name") or m.get("model") for m in running["models"] if isinstance(m, dict)}
    models = []
    for item in _items(tags, "models", tags_url):
        name = _text(item.get("name")) or _text(item.get("model"))
        if name is None:
            continue
        details = item.get("details") if isinstance(item.get("details"), dict) else {}
        models.append(Listed(model=name, loaded=None if loaded is None else name in loaded, size=_int(item.get("size")),
                             parameter_size=_text(details.get("parameter_size")),
                             quantization=_text(details.get("quantization_level"))))
    first_loaded = next((m.model for m in models if m.loaded), None)
    return _Served(root, models, first_loaded or (models[0].model if models else None))


async def _list_llamacpp_at(root: str, settings: ProviderSettings, timeout: float) -> _Served:
    served = await _list_openai_at(openai_base(root), settings, timeout)
    for m in served.models:
        if m.loaded is None:  # llama-server serves what it lists (its router mode says per model)
            m.loaded = True
    served.server = root
    served.detected = next((m.model for m in served.models if m.loaded), served.detected)
    return served


async def _list_llamacpp(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> _Served:
    """The configured address, or every default port at once (the first in order that answers)."""
    roots = [server_root(settings.base_url)]
    if settings.base_url_is_default:
        roots += [server_root(u) for u in spec.alt_base_urls]
    results = await asyncio.gather(*(_list_llamacpp_at(r, settings, timeout) for r in roots), return_exceptions=True)
    found = next((r for r in results if isinstance(r, _Served)), None)
    if found is not None:
        return found
    errors = [r for r in results if isinstance(r, BaseException)]
    answered = next((e for e in errors if isinstance(e, ProbeError) and e.status), None)
    if answered is not None or len(errors) == 1:
        raise answered or errors[0]
    raise ProbeError("; ".join(str(e) for e in errors))


# ---- cloud dialects -------------------------------------------------------------------


def _openai_list_url(spec: ProviderSpec, base: str) -> str:
    """pydantic-ai's Groq and Mistral classes take the host (`https://api.groq.com`) and their
    SDKs add the path; the OpenAI-compatible list lives under it."""
    base = base.rstrip("/")
    if spec.builder == "groq" and not base.endswith("/v1"):
        return f"{base}/openai/v1/models"
    if spec.builder == "mistral" and not base.endswith("/v1"):
        return f"{base}/v1/models"
    return f"{base}/models"


async def _list_cloud_openai(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> _Served:
    url = _openai_list_url(spec, settings.base_url)
    models = _openai_models(await probes.get_json(url, timeout, _bearer(settings)), url)
    return _Served(settings.base_url.rstrip("/"), models)


async def _list_anthropic(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> _Served:
    """`GET /v1/models`, paged by `after_id` while `has_more`."""
    base = settings.base_url.rstrip("/").removesuffix("/v1")
    headers = {"x-api-key": settings.api_key.get() if settings.api_key else "", "anthropic-version": ANTHROPIC_VERSION}
    models: list[Listed] = []
    query: dict[str, str] = {"limit": "1000"}
    for _ in range(_MAX_PAGES):
        url = f"{base}/v1/models?{urlencode(query)}"
        payload = await probes.get_json(url, timeout, headers)
        items = _items(payload, "data", url)
        models += [Listed(model=item["id"], owned_by="anthropic") for item in items if _text(item.get("id"))]
        last = _text(payload.get("last_id"))
        if not payload.get("has_more") or last is None:
            break
        query["after_id"] = last
    return _Served(base, models)


async def _list_gemini(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> _Served:
    """`GET /v1beta/models` with the key in `x-goog-api-key` (a `?key=` would land in logs), paged by token."""
    base = settings.base_url.rstrip("/").removesuffix("/v1beta")
    headers = {"x-goog-api-key": settings.api_key.get() if settings.api_key else ""}
    models: list[Listed] = []
    query: dict[str, str] = {"pageSize": "1000"}
    for _ in range(_MAX_PAGES):
        url = f"{base}/v1beta/models?{urlencode(query)}"
        payload = await probes.get_json(url, timeout, headers)
        for item in _items(payload, "models", url):
            name = _text(item.get("name"))
            if name:
                models.append(Listed(model=name.removeprefix("models/"), owned_by="google",
                                     context_length=_int(item.get("inputTokenLimit"))))
        token = _text(payload.get("nextPageToken"))
        if token is None:
            break
        query["pageToken"] = token
    return _Served(base, models)


_LOCAL = {"openai": _list_openai, "lmstudio": _list_lmstudio, "ollama": _list_ollama, "llamacpp": _list_llamacpp}
_CLOUD = {"anthropic": _list_anthropic, "google": _list_gemini}


async def _list_server(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> _Served:
    if self_hosted(spec, settings):  # a cloud name pointed at a server of one's own speaks OpenAI's API
        return await _list_openai_at(settings.base_url.rstrip("/"), settings, timeout)
    if spec.kind == "cloud":
        return await _CLOUD.get(spec.builder, _list_cloud_openai)(spec, settings, timeout)
    lister = _LOCAL.get(spec.probe)
    if lister is None:
        raise ConfigurationError(f"{spec.name}: no way to list the models of a {spec.probe!r} server.")
    return await lister(spec, settings, timeout)


# ---- the one entry point --------------------------------------------------------------


def target(text: str | None) -> tuple[str, str | None]:
    """The provider (and model) a name means for listing: an alias or chain lists its first usable link."""
    from . import routing, session

    if text is None:
        selection = session.current()
        text, model = selection.provider, selection.model
    else:
        model = None
    link = routing.resolve(text, model).links[0]
    return link.provider, link.model


def _servers(settings: ProviderSettings) -> tuple[str, ...]:
    servers = tuple(getattr(settings, "servers", None) or (settings.base_url,))
    return servers or (settings.base_url,)


def _hint(spec: ProviderSpec, error: ProbeError) -> str | None:
    if error.status in (401, 403):
        return f"{key_names(spec)} was refused"
    if error.status is None and spec.kind == "local":
        return spec.install_hint
    return None


def _failure(spec: ProviderSpec, error: BaseException) -> NbllmError:
    """One line for one server's failure (the URL is in the probe's own words)."""
    if isinstance(error, ProbeError):
        return ModelError(spec.name, str(error), hint=_hint(spec, error), status=error.status)
    if isinstance(error, NbllmError):
        return error
    return ModelError(spec.name, f"listing models failed: {type(error).__name__}: {error}")


async def list_models(provider: str | None = None, timeout: float | None = None) -> Listing:
    """The models `provider` lists (None: the kernel-wide default), the default one marked.

    Local servers are asked within the health timeout, cloud providers within `{P}_TIMEOUT`.
    A provider nbllm runs itself (embedded) that is not running is not started: its one
    model is listed as not loaded. Raises one `NbllmError` line on failure.
    """
    registry = get_registry()
    name, asked = target(provider)
    if name == AUTO:
        from . import routing

        name = (await routing.choose(AUTO, asked, detect_model=False)).provider
    spec, settings = registry.require(name)
    if spec.kind == "cloud" and not self_hosted(spec, settings) and not settings.has_key:
        raise ConfigurationError(f"{spec.name} has no API key: set {key_names(spec)} (in the environment or a .env "
                                 "file) to list its models.")
    if not settings.base_url.strip():  # a gateway with no default address (LiteLLM) that was not given one
        raise ConfigurationError(f"{spec.name} is {base_url_advice(spec)} to list its models.")
    if spec.prepare:
        prepared = await registry.prepare(spec.name, start=False)  # never starts a server to list its models
        if prepared is None:
            row = asdict(Listed(model=asked or settings.model, loaded=False))
            return Listing(spec.name, [{"provider": spec.name, "server": None, "default": True, **row}])
        settings = prepared
    local = spec.kind == "local" or self_hosted(spec, settings)
    wait = timeout or (registry.health_timeout if local else settings.timeout)
    servers = _servers(settings)
    many = len(servers) > 1
    results = await asyncio.gather(
        *(_list_server(spec, settings.with_(base_url=s, servers=(s,), base_url_is_default=False) if many else settings,
                       wait) for s in servers),
        return_exceptions=True)
    listing = Listing(spec.name)
    failures: list[NbllmError] = []
    for server, result in zip(servers, results):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result  # cancelled, Ctrl-C
            failures.append(_failure(spec, result))
            listing.failed[display_url(server)] = str(failures[-1])
            continue
        default = asked or (settings.model if not settings.model_is_default or not local else None) or result.detected
        for m in result.models:
            listing.rows.append({"provider": spec.name, "server": display_url(result.server),
                                 "default": m.model == default, **asdict(m)})
    if failures and not listing.rows and len(failures) == len(servers):
        if len(failures) == 1:
            raise failures[0]
        raise ModelError(spec.name, "no server answered: " + "; ".join(listing.failed.values()))
    return listing
