"""Probe providers: one, or all concurrently, each bounded by the health timeout.

Never raises for a provider that is down: the reason goes into
`ProviderHealth.error` in words (refused, timed out, HTTP 503 loading, bad JSON).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import math
import sys
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from .catalog import ProviderSpec, how_to_enable, key_names
from .config import ProviderSettings
from .errors import ConfigurationError, ServerCrashed, display_url, scrub, server_failed
from . import fleet, plainhttp, probes

NOT_STARTED = "starts on first use"
"""The note of a server nbllm runs itself (the embedded model) that is not running yet."""
NOT_CONFIGURED = "not configured"
"""The status (and how the error starts) of a provider missing a setting: a cloud key, a gateway's address."""


class Prepare(Protocol):
    """Runs a provider's `prepare` hook (the registry's `prepare`): updated settings, or None
    with `start=False` while the server nbllm runs for it is not running."""

    def __call__(self, name: str, start: bool = True) -> Awaitable[ProviderSettings | None]: ...

__all__ = ["NOT_CONFIGURED", "NOT_STARTED", "ProviderHealth", "base_url_advice", "base_url_missing", "check_provider",
           "check_providers", "known_without_probe", "probed", "self_hosted", "unfinished"]


@dataclass
class ProviderHealth:
    """What one probe found. `connected` is None for a cloud provider (no paid call is made)."""

    provider: str
    enabled: bool
    connected: bool | None
    model_detected: bool = False
    model_id: str | None = None
    models: list[str] = field(default_factory=list)
    base_url: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    kind: str = "local"
    configured: bool = True
    note: str | None = None
    """Something worth knowing that is not a fault (e.g. "starts on first use")."""
    crashed: bool = False
    """The server nbllm runs itself died from a signal; nbllm will not restart it (`error` says the fix)."""
    http_status: int | None = None
    """The HTTP status of a probe the server refused (401, 404, 503…); None if it answered or nothing did."""
    servers: list["ProviderHealth"] = field(default_factory=list)
    """A fleet (`{P}_BASE_URL` lists several servers): one entry per server, its own error and latency.
    Empty for a provider with one server."""

    @property
    def available(self) -> bool:
        """Usable now: enabled, configured, and (for local servers) answering."""
        return self.enabled and self.configured and self.connected is not False

    @property
    def down(self) -> bool:
        """Nothing usable answered (refused, timed out, 408 or 5xx): a fallback chain may skip it. A 401,
        404 or 429 is not "down": the server is there and says what is wrong, which a call should report
        (or, for a 429, move on from at once)."""
        return self.enabled and self.configured and self.connected is False and server_failed(self.http_status)

    @property
    def status(self) -> str:
        """One word for tables and selectors."""
        if not self.enabled:
            return "disabled"
        if not self.configured:  # a local server with nothing missing but its address is not "not installed"
            missing_setting = self.kind == "cloud" or (self.error or "").startswith(NOT_CONFIGURED)
            return NOT_CONFIGURED if missing_setting else "not installed"
        if self.crashed:
            return "crashed"
        if self.connected is False:
            return "down"
        return "available"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status, "servers": [s.as_dict() for s in self.servers]}


def _blank(spec: ProviderSpec, settings: ProviderSettings) -> ProviderHealth:
    return ProviderHealth(
        provider=spec.name, enabled=settings.enabled, connected=None,
        model_id=settings.model, base_url=display_url(settings.base_url), kind=spec.kind,
    )


def self_hosted(spec: ProviderSpec, settings: ProviderSettings) -> bool:
    """A cloud provider pointed at a server that is not its vendor's (`OPENAI_BASE_URL=http://gpu:8000/v1`):
    it is probed, its model detected and it is not priced as the vendor, like any local server."""
    if spec.kind != "cloud" or settings.base_url_is_default or spec.builder not in ("openai", "openai_compatible"):
        return False
    return _host(settings.base_url) != _host(spec.base_url)


@functools.lru_cache(maxsize=64)
def _host(url: str) -> str | None:
    """A URL's host name, parsed once per URL (asked on every answer, to know whether it is priced)."""
    return urlsplit(url).hostname


def base_url_missing(spec: ProviderSpec, settings: ProviderSettings) -> bool:
    """A provider with no default address (a LiteLLM proxy) whose `{P}_BASE_URL` is not set."""
    return spec.needs_base_url and not settings.base_url.strip()


def base_url_advice(spec: ProviderSpec) -> str:
    """What health, status and a call say about a missing address (one sentence everywhere)."""
    return f"{NOT_CONFIGURED}: set {spec.env_prefix}_BASE_URL"


def probed(spec: ProviderSpec, settings: ProviderSettings) -> bool:
    """Whether health asks the server (local servers and self-hosted ones) rather than only checking a key."""
    return spec.kind == "local" or self_hosted(spec, settings)


def known_without_probe(spec: ProviderSpec, settings: ProviderSettings) -> ProviderHealth | None:
    """The health of a disabled, cloud or unaddressed provider (no request is made for those); None for
    an enabled local or self-hosted server, which only a probe can tell about."""
    base = _blank(spec, settings)
    if not settings.enabled:
        base.connected = None if spec.kind == "cloud" else False
        base.error = f"disabled: {how_to_enable(spec.name)}"
        return base
    if base_url_missing(spec, settings):  # nowhere to send a probe
        base.configured, base.base_url, base.error = False, None, base_url_advice(spec)
        return base
    if spec.kind == "cloud" and not self_hosted(spec, settings):
        base.configured = settings.has_key
        if not settings.has_key:
            base.error = f"no API key: set {key_names(spec)}"
        return base
    return None


async def check_provider(
    spec: ProviderSpec, settings: ProviderSettings, timeout: float, prepare: Prepare | None = None
) -> ProviderHealth:
    """Probe one provider within `timeout` seconds; always returns a ProviderHealth.

    A provider with a `prepare` hook (the embedded server) is probed only if its server
    is running: a health check never starts it (that costs a process and a model load).
    Not running yet, it is reported available without a probe (`connected=None`) and
    the note "starts on first use".
    """
    known = known_without_probe(spec, settings)
    if known is not None:
        return known
    base = _blank(spec, settings)
    if spec.prepare and prepare is not None:
        try:
            prepared = await prepare(spec.name, start=False)
        except ConfigurationError as exc:  # e.g. an optional extra is missing
            base.configured, base.base_url, base.error = False, None, str(exc)
            return base
        except ServerCrashed as exc:  # nbllm will not restart it until it is rebuilt
            base.connected, base.crashed, base.error = False, True, str(exc)
            return base
        except Exception as exc:  # e.g. its last start failed
            base.connected, base.error = False, str(exc)
            return base
        if prepared is None:
            base.base_url, base.note = None, NOT_STARTED
            return base
        settings = prepared
        base.base_url = display_url(settings.base_url)
    elif len(settings.servers) > 1:
        return await _check_fleet(spec, settings, timeout)
    return await _probe_one(spec, settings, timeout, base)


async def _probe_one(spec: ProviderSpec, settings: ProviderSettings, timeout: float,
                     base: ProviderHealth) -> ProviderHealth:
    """Probe the server at `settings.base_url`, filling in `base`."""
    started = time.perf_counter()
    try:
        found = await asyncio.wait_for(probes.probe(spec, settings, timeout), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        base.connected = False
        base.error = f"timed out after {timeout:g} s (the server did not answer in time)"
    except probes.ProbeError as exc:
        base.connected = False
        base.error = str(exc)
        base.http_status = exc.status
    except Exception as exc:  # never raise for a provider that is down
        base.connected = False
        base.error = f"probe failed: {type(exc).__name__}: {exc}"
    else:
        base.connected = True
        base.base_url = display_url(found.base_url)  # tables show it; requests use settings
        base.models = found.models
        detected = found.detected
        if not settings.model_is_default:
            base.model_id = settings.model
        elif detected:
            base.model_id = detected
        base.model_detected = detected is not None
        if not found.models and found.note:
            base.error = found.note
    base.latency_ms = round((time.perf_counter() - started) * 1000, 1)
    if base.error:  # a server or SDK may echo what it was sent
        base.error = scrub(base.error, settings.secrets())
    return base


async def _check_fleet(spec: ProviderSpec, settings: ProviderSettings, timeout: float) -> ProviderHealth:
    """Probe every server of a fleet at once (same timeout): one row for the provider, one per server.

    The provider is connected if any server answered; its models are the union, its model
    the configured one or the first answering server's, its latency the fastest answer.
    Each probe also tells the fleet scheduler (`_tell_fleet`), and each server's row notes
    whether it is taken out, for how long and why.
    """
    each = [settings.with_(base_url=url, servers=(url,)) for url in settings.servers]
    rows = await asyncio.gather(*(_probe_one(spec, one, timeout, _blank(spec, one)) for one in each))
    for url, row in zip(settings.servers, rows):
        _tell_fleet(url, row)
        row.note = _out_note(fleet.state(url), row.error)
    up = [row for row in rows if row.connected]
    base = _blank(spec, settings)
    base.servers = list(rows)
    base.base_url = ", ".join(display_url(url) for url in settings.servers)
    base.connected = bool(up)
    base.models = list(dict.fromkeys(m for row in rows for m in row.models))
    detected = next((row for row in up if row.model_detected), None)
    base.model_detected = detected is not None
    if settings.model_is_default and detected is not None:
        base.model_id = detected.model_id
    latencies = [row.latency_ms for row in (up or rows) if row.latency_ms is not None]
    base.latency_ms = (min(latencies) if up else max(latencies)) if latencies else None
    base.note = f"{len(up)}/{len(rows)} servers answering"
    if not up:
        base.error = "no server answered: " + "; ".join(row.error or "no answer" for row in rows)
    return base


def _tell_fleet(url: str, row: ProviderHealth) -> None:
    """An answer puts a server back if nothing answering was why it was out (`fleet.probe_answered`:
    a Retry-After or a call's 5xx keeps it out); a probe that found it down (refused, timed out, 408,
    5xx) takes it out. A 401, 404 or 429 changes nothing: the server is there and says what is wrong."""
    if row.connected:
        fleet.probe_answered(url)
    elif row.down:
        fleet.take_out(url, row.error or "did not answer its health check", status=row.http_status, probe=True)


def _out_note(server: fleet.ServerState, error: str | None) -> str | None:
    """A server row's note while the fleet passes it over, `taken out for 25 s: <why>` (the why left
    off when the row's error already says it); None while it is in."""
    if not server.out:
        return None
    note = f"taken out for {math.ceil(server.out_for):d} s"
    return note if server.reason in (None, error) else f"{note}: {server.reason}"


async def check_providers(
    items: list[tuple[ProviderSpec, ProviderSettings]], timeout: float, prepare: Prepare | None = None,
    bound: float | None = None,
) -> dict[str, ProviderHealth]:
    """Probe all concurrently: the whole table costs about one timeout, not the sum.

    Each probe is already bounded by `timeout`; `bound` (seconds) also bounds each whole
    check, `prepare` hook included: one still unfinished then gets a "timed out after
    `bound` s" row and the others keep their results (the panel, which must never show
    a row stuck on "checking…", asks for this).
    """
    # Import what the probes need off this loop, then build the HTTP client, before any
    # clock starts: in a fresh kernel an import can wait seconds on the main thread's
    # (Run All importing pydantic-ai for %%llm), and that wait is no provider's fault.
    missing = _modules_to_import(items)
    if missing:
        await asyncio.to_thread(_import_all, missing)
    if "httpx2" in sys.modules:
        probes.shared_client()
    if bound is None:
        results = await asyncio.gather(*(check_provider(spec, st, timeout, prepare) for spec, st in items))
        return {health.provider: health for health in results}
    tasks = [asyncio.ensure_future(check_provider(spec, st, timeout, prepare)) for spec, st in items]
    try:
        if tasks:
            await asyncio.wait(tasks, timeout=bound)
    finally:
        for task in tasks:
            task.cancel()  # a no-op for finished ones; also when this whole check is dropped
    found: dict[str, ProviderHealth] = {}
    for (spec, settings), task in zip(items, tasks):
        if task.done() and not task.cancelled() and task.exception() is None:
            found[spec.name] = task.result()
        else:
            failure = None if task.cancelled() or not task.done() else task.exception()
            found[spec.name] = unfinished(spec, settings, bound, failure)
    return found


def unfinished(spec: ProviderSpec, settings: ProviderSettings, bound: float,
               failure: BaseException | None = None) -> ProviderHealth:
    """The row of a provider whose check did not finish within `bound` seconds (`failure`
    None or a timeout) or raised `failure`."""
    base = _blank(spec, settings)
    base.connected = False
    if failure is None or isinstance(failure, (asyncio.TimeoutError, TimeoutError)):
        base.error = f"timed out after {bound:g} s (the check did not finish)"
    else:
        base.error = scrub(f"check failed: {type(failure).__name__}: {failure}", settings.secrets())
    return base


def _modules_to_import(items: list[tuple[ProviderSpec, ProviderSettings]]) -> list[str]:
    """The modules of `prepare` hooks, and httpx2 when a probe needs more than plain http
    (`plainhttp`), if not imported yet."""
    plain = all(spec.probe == "key" or plainhttp.eligible(settings.base_url or "http://localhost", probes.auth(settings))
                for spec, settings in items)
    names = ([] if plain else ["httpx2"]) + [spec.prepare.partition(":")[0] for spec, _ in items if spec.prepare]
    return [name for name in dict.fromkeys(names) if name not in sys.modules]


def _import_all(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:  # e.g. an optional extra: its check says so in its own row
            pass
