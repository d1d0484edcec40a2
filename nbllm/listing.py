"""What models an endpoint lists, in each dialect nbllm speaks.

Local servers are asked through `probes`, the one speaker of their dialects (the
requests health makes, less llama.cpp's `/health`); cloud providers by their own list endpoint with the key in a
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
from .config import ProviderSettings
from .errors import ConfigurationError, ModelError, NbllmError, ProbeError, display_url
from .health import base_url_advice, probed, self_hosted
from .probes import Found, Listed, auth, entries, get_json, integer, nonempty, openai_listed, openai_models
from .registry import get_registry

__all__ = ["COLUMNS", "Listed", "Listing", "list_models", "target"]

COLUMNS = ["provider", "server", "model", "default", "loaded", "owned_by", "context_length", "size",
           "parameter_size", "quantization"]
"""The columns of `nbllm.models()`, always all of them (None where the endpoint does not say)."""

ANTHROPIC_VERSION = "2023-06-01"
_MAX_PAGES = 20
"""Anthropic and Gemini page their lists; a bound so a server that keeps paging cannot loop forever."""


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


async def _list_cloud_openai(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> Found:
    url = _openai_list_url(spec, settings.base_url)
    return Found(settings.base_url.rstrip("/"), openai_listed(await get_json(url, timeout, auth(settings)), url))


async def _list_anthropic(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> Found:
    """`GET /v1/models`, paged by `after_id` while `has_more`."""
    base = settings.base_url.rstrip("/").removesuffix("/v1")
    headers = {"x-api-key": settings.api_key.get() if settings.api_key else "", "anthropic-version": ANTHROPIC_VERSION}
    models: list[Listed] = []
    query: dict[str, str] = {"limit": "1000"}
    for _ in range(_MAX_PAGES):
        url = f"{base}/v1/models?{urlencode(query)}"
        payload = await get_json(url, timeout, headers)
        models += [Listed(model=item["id"], owned_by="anthropic") for item in entries(payload, "data", url)
                   if nonempty(item.get("id"))]
        last = nonempty(payload.get("last_id"))
        if not payload.get("has_more") or last is None:
            break
        query["after_id"] = last
    return Found(base, models)


async def _list_gemini(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> Found:
    """`GET /v1beta/models` with the key in `x-goog-api-key` (a `?key=` would land in logs), paged by token."""
    base = settings.base_url.rstrip("/").removesuffix("/v1beta")
    headers = {"x-goog-api-key": settings.api_key.get() if settings.api_key else ""}
    models: list[Listed] = []
    query: dict[str, str] = {"pageSize": "1000"}
    for _ in range(_MAX_PAGES):
        url = f"{base}/v1beta/models?{urlencode(query)}"
        payload = await get_json(url, timeout, headers)
        for item in entries(payload, "models", url):
            name = nonempty(item.get("name"))
            if name:
                models.append(Listed(model=name.removeprefix("models/"), owned_by="google",
                                     context_length=integer(item.get("inputTokenLimit"))))
        token = nonempty(payload.get("nextPageToken"))
        if token is None:
            break
        query["pageToken"] = token
    return Found(base, models)


_CLOUD = {"anthropic": _list_anthropic, "google": _list_gemini}


async def _list_server(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> Found:
    if self_hosted(spec, settings):  # a cloud name pointed at a server of one's own speaks OpenAI's API
        return await openai_models(settings.base_url.rstrip("/"), timeout, auth(settings))
    if spec.kind == "cloud":
        return await _CLOUD.get(spec.builder, _list_cloud_openai)(spec, settings, timeout)
    return await probes.probe(spec, settings, timeout, ready=False)  # health's dialects, less llama.cpp's /health


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
    return settings.servers or (settings.base_url,)  # (none: a gateway without its address yet)


def _hint(spec: ProviderSpec, error: ProbeError) -> str | None:
    if error.status is not None and error.status >= 400:
        from .failures import what_to_do

        return what_to_do(error.status, spec)
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
    local = probed(spec, settings)
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
        configured = settings.model if not settings.model_is_default or not local else None
        default = asked or configured or (result.detected if local else None)
        for m in result.listed:
            listing.rows.append({"provider": spec.name, "server": display_url(result.base_url),
                                 "default": m.model == default, **asdict(m)})
    if failures and not listing.rows and len(failures) == len(servers):
        if len(failures) == 1:
            raise failures[0]
        raise ModelError(spec.name, "no server answered: " + "; ".join(listing.failed.values()))
    return listing
