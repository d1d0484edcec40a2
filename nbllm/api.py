"""The provider-level Python API: models, health, enable/disable, the default.

Thin functions over the registry, session and bridge that every face (magics,
widgets, command line) calls; anything those faces do is one call here.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from . import bridge, routing, session
from .catalog import AUTO
from .config import config_warning
from .errors import ConfigurationError, ModelError
from .factory import build_model
from .health import ProviderHealth, probed
from .registry import StatusSummary, get_registry, has_registry
from .routing import Choice

if TYPE_CHECKING:
    import pandas as pd
    from pydantic_ai.models import Model

__all__ = [
    "get_model", "get_model_async", "resolve", "check_all_providers", "check_provider", "health_check",
    "enable", "disable", "reinit", "status", "providers", "health_table",
]


def get_model(provider: str | None = None, model: str | None = None) -> "Model":
    """A pydantic-ai model for `provider` (default: the kernel-wide default).

    Sync and without network calls to providers: `auto` resolves offline (a cloud
    key first, else the first local server by priority, not probed); use
    `get_model_async` to probe which local server answers. One exception: for
    `embedded`, get_model starts the local server if it is not running (a process
    and a model load, up to NBLLM_EMBEDDED_START_TIMEOUT), so the model works.
    """
    selection = session.current()
    choice = routing.choose_offline(provider or selection.provider, model or (None if provider else selection.model))
    spec, settings = get_registry().require(choice.provider)
    if spec.prepare:  # a provider nbllm runs itself (embedded) must be running for the model to work
        settings = bridge.run(get_registry().prepare(spec.name))
    return build_model(spec, settings, choice.model)


async def get_model_async(
    provider: str | None = None, test_connection: bool = False, auto_detect_model: bool = True, model: str | None = None
) -> "Model":
    """Like `get_model`, but `auto` probes local servers and local model ids are detected.

    `test_connection=True` raises `ModelError` (provider, URL, cause) when the
    provider does not answer.
    """
    choice = await resolve(provider, model, auto_detect_model=auto_detect_model, test_connection=test_connection)
    spec, settings = get_registry().require(choice.provider)
    settings = await bridge.run_async(get_registry().prepare(spec.name))
    return build_model(spec, settings, choice.model)


async def resolve(
    provider: str | None = None, model: str | None = None, auto_detect_model: bool = True, test_connection: bool = False
) -> Choice:
    """Which provider and model a call would use, and why.

    `test_connection=True`: a local (or self-hosted) server must answer a probe and a
    cloud provider must have a key, else `ModelError` says which and why.
    """
    selection = session.current()
    registry = get_registry()

    async def _test(name: str) -> None:
        spec, settings = registry.spec(name), registry.settings(name)
        if probed(spec, settings):
            if spec.prepare:  # a server nbllm runs (embedded): start it, as the call would
                await registry.prepare(name)
            h = (await routing.check([name]))[name]
            if not h.connected:
                raise ModelError(name, h.error or "not answering", url=h.base_url, hint=spec.install_hint)
        elif not settings.has_key:
            raise ModelError(name, "no API key configured", url=settings.base_url)

    async def _resolve() -> Choice:
        wanted = provider or selection.provider
        named = wanted.strip().lower() != AUTO
        if test_connection and named:  # probe first: the model detection then reuses this probe
            await _test(registry.require(wanted)[0].name)
        choice = await routing.choose(wanted, model or (None if provider else selection.model), auto_detect_model)
        if test_connection and not named:
            await _test(choice.provider)
        return choice

    return await bridge.run_async(_resolve())


async def check_all_providers(timeout: float | None = None) -> dict[str, ProviderHealth]:
    """Probe every provider concurrently (about one health timeout in all)."""
    return await bridge.run_async(routing.check(None, timeout))


async def check_provider(name: str, timeout: float | None = None) -> ProviderHealth:
    """Probe one provider; never raises for one that is down."""
    spec = get_registry().spec(name)
    return (await bridge.run_async(routing.check([spec.name], timeout)))[spec.name]


def health_check(names: list[str] | None = None, timeout: float | None = None) -> dict[str, ProviderHealth]:
    """Sync `check_all_providers` (safe inside a running kernel)."""
    return bridge.run(routing.check(names, timeout))


def enable(name: str, save: bool = False) -> None:
    get_registry().enable(name, save=save)


def disable(name: str, save: bool = False) -> None:
    """Disable a provider; if it was the default, the default falls back to auto."""
    registry = get_registry()
    spec = registry.spec(name)
    registry.disable(spec.name, save=save)
    if session.current().provider == spec.name:
        session.use(AUTO)


def reinit() -> None:
    """Re-read the environment, `.env` and the user config file; keep the default if still valid."""
    fresh = not has_registry()
    previous = session.current()  # creating the registry (if fresh) has just read everything
    registry = get_registry()
    if not fresh:
        registry.reinit()
    embedded = sys.modules.get("nbllm.embedded")
    if embedded is not None:  # a crashed embedded server may be tried again (e.g. after a rebuild)
        embedded.forget_crash()
    try:
        session.use(previous.provider, previous.model)
        return
    except ConfigurationError as exc:
        problem = exc
    fallback = registry.global_settings.provider or AUTO
    try:
        session.use(fallback)
    except ConfigurationError:
        fallback = AUTO
        session.use(AUTO)
    config_warning(f"nbllm: the default {previous.provider!r} is no longer usable ({problem}); using {fallback!r}.")


def status(health: dict[str, ProviderHealth] | None = None) -> StatusSummary:
    """Counts: total, enabled, configured, available (available needs a health dict)."""
    return get_registry().summary(health)


def providers() -> list[str]:
    """The registered provider names, in catalog order."""
    return get_registry().names()


def health_table(timeout: float | None = None) -> "pd.DataFrame":
    """Probe every provider now (concurrently) and return the table, models included.

    Safe inside a running kernel; costs about one health timeout in all.
    """
    from . import tables

    return tables.health_frame(health_check(timeout=timeout), tables.HEALTH_TABLE_COLUMNS)
