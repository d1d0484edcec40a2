"""The live set of providers: settings from the environment, enable/disable, status.

One `ProviderRegistry` per process (`get_registry()`); `reinit()` re-reads the
environment and `.env`. Choices made with `save=True` go to the user config file,
which environment variables override. It holds settings and does not choose:
what a name means (`auto`, detected models) is `routing`'s job, which watches
`generation` to forget what it learnt under older settings.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import catalog
from .catalog import ProviderSpec
from .config import (
    FIELDS, GlobalSettings, ProviderSettings, key_values, load_provider_settings, read_settings, read_user_config,
    user_config_path, write_user_config,
)
from .errors import ConfigurationError, remember_secrets, scrub
from .health import ProviderHealth, check_providers

__all__ = ["ProviderRegistry", "get_registry", "StatusSummary", "has_registry", "reset_registry"]


@dataclass(frozen=True)
class StatusSummary:
    total: int
    enabled: int
    configured: int
    available: int | None

    def __str__(self) -> str:
        avail = "?" if self.available is None else self.available
        return f"{self.total} providers: {self.enabled} enabled, {self.configured} configured, {avail} available"


class ProviderRegistry:
    """Providers with their current settings; enable/disable apply to this process."""

    def __init__(self, dotenv_path: str | None = ".env"):
        self._dotenv_path = dotenv_path
        self._lock = threading.RLock()
        self._settings: dict[str, ProviderSettings] = {}
        self.global_settings = GlobalSettings()
        self.reinit()

    # ---- loading ------------------------------------------------------------
    def reinit(self) -> None:
        """Re-read the environment, `.env` and the user config file (bad values are warned again)."""
        env, origin, user_config, global_settings = read_settings(self._dotenv_path)
        with self._lock:
            self._origin = origin
            self._env = env
            self._user_config = user_config
            self.global_settings = global_settings
            self._generation = getattr(self, "_generation", 0) + 1
            self._settings = {
                spec.name: load_provider_settings(spec, env, origin, user_config) for spec in catalog.all_specs()
            }
            self._remember_secrets()
        from .clients import clear

        clear()

    @property
    def generation(self) -> int:
        """Bumped by every change of settings (reinit, update, enable/disable)."""
        return self._generation

    # ---- lookup -------------------------------------------------------------
    def names(self) -> list[str]:
        return catalog.provider_names()

    def spec(self, name: str) -> ProviderSpec:
        return catalog.get_spec(name)

    def settings(self, name: str) -> ProviderSettings:
        spec = self.spec(name)
        with self._lock:
            if spec.name not in self._settings:  # registered after the last reinit
                self._settings[spec.name] = load_provider_settings(spec, self._env, self._origin, self._user_config)
            return self._settings[spec.name]

    def require(self, name: str) -> tuple[ProviderSpec, ProviderSettings]:
        """Spec and settings of an enabled provider; unknown or disabled → ConfigurationError."""
        spec = self.spec(name)
        settings = self.settings(spec.name)
        if not settings.enabled:
            raise ConfigurationError(
                f"Provider {spec.name!r} is disabled: {catalog.how_to_enable(spec.name)} "
                f"(or unset {spec.env_prefix}_ENABLED)."
            )
        return spec, settings

    def is_configured(self, name: str) -> bool:
        """Cloud: a key is present. Local: always (whether it answers is for health)."""
        spec = self.spec(name)
        return not spec.needs_key or self.settings(name).has_key

    def update(self, name: str, **changes: Any) -> ProviderSettings:
        """Change settings of one provider for this process (e.g. `model=`).

        A new `model` or `base_url` is a choice like `{P}_MODEL`/`{P}_BASE_URL`: its
        `*_is_default` flag becomes False (so a local server's detected model no longer
        wins), unless the caller sets the flag itself.
        """
        spec = self.spec(name)
        with self._lock:
            settings = self.settings(spec.name)
            for attr in ("model", "base_url"):
                if attr in changes and changes[attr] != getattr(settings, attr):
                    changes.setdefault(f"{attr}_is_default", False)
            self._settings[spec.name] = settings.with_(**changes)
            if "api_key" in changes:
                self._remember_secrets()
            self._generation += 1
            return self._settings[spec.name]

    # ---- enable / disable ---------------------------------------------------
    def _set_enabled(self, name: str, enabled: bool, save: bool) -> ProviderSettings:
        spec = self.spec(name)
        updated = self.update(spec.name, enabled=enabled)
        if save:
            config = read_user_config(self._env)
            disabled = [n for n in config.get("disabled", []) if n != spec.name]
            config["disabled"] = sorted(disabled if enabled else [*disabled, spec.name])
            write_user_config(config, self.config_path)
        return updated

    def enable(self, name: str, save: bool = False) -> ProviderSettings:
        return self._set_enabled(name, True, save)

    def disable(self, name: str, save: bool = False) -> ProviderSettings:
        return self._set_enabled(name, False, save)

    def save_default(self, provider: str, model: str | None) -> None:
        config = read_user_config(self._env)
        config["default"] = {"provider": provider, "model": model}
        write_user_config(config, self.config_path)

    @property
    def config_path(self) -> Path:
        """The user config file, as the last read of the environment and `.env` names it (no file is read)."""
        return user_config_path(self._env, self._origin)

    # ---- variables (for --list) ------------------------------------------------
    def variables(self, name: str) -> list[dict[str, Any]]:
        """Every variable the provider reads, whether it is set and from where (never the key)."""
        spec = self.spec(name)
        settings = self.settings(name)
        names = catalog.key_env_names(spec) + [f"{spec.env_prefix}_{fld.suffix}" for fld in FIELDS]
        if spec.host_env:
            names.append(spec.host_env)
        rows = []
        for var in names:
            is_key = var.endswith("_API_KEY")
            source = settings.sources.get(var)
            raw = self._env.get(var)
            # Not a key variable: shown, but without URL credentials or a key pasted there by mistake.
            shown = "********" if is_key and raw else (scrub(raw) if raw is not None else "")
            rows.append({"provider": spec.name, "variable": var, "set": bool(raw), "source": source or "", "value": shown})
        return rows

    def _remember_secrets(self) -> None:
        """Hand every key this process knows (each provider's and any `*_API_KEY` value) to the
        one scrubber (`errors.scrub`), which masks them in every output."""
        values = {s for settings in self._settings.values() for s in settings.secrets()}
        values.update(key_values(self._env))
        remember_secrets(values)

    @property
    def environment(self) -> dict[str, str]:
        """The variables as last read (environment over `.env`); a copy, so callers cannot change them."""
        return dict(self._env)

    def env_value(self, name: str) -> str | None:
        """A variable as last read from the environment or `.env` (which beat the config file)."""
        value = self._env.get(name)
        return value if value and value.strip() else None

    # ---- health and status ---------------------------------------------------
    @property
    def health_timeout(self) -> float:
        return self.global_settings.health_timeout

    async def check(self, names: list[str] | None = None, timeout: float | None = None,
                    bound: float | None = None) -> dict[str, ProviderHealth]:
        """Probe the named providers (default: all) concurrently; never raises for a down one.
        `bound`: seconds after which a provider's unfinished check becomes a "timed out" row."""
        specs = [self.spec(n) for n in names] if names else catalog.all_specs()
        items = [(spec, self.settings(spec.name)) for spec in specs]
        return await check_providers(items, timeout or self.health_timeout, self.prepare, bound)

    async def prepare(self, name: str, start: bool = True) -> ProviderSettings | None:
        """Run the provider's `prepare` hook and adopt the base URL it returns; settings
        unchanged for providers without one.

        `start=True` (calls) may start the server nbllm runs (the embedded model).
        `start=False` (health checks) never does: None while that server is not running.
        """
        spec = self.spec(name)
        settings = self.settings(spec.name)
        if not spec.prepare or not settings.enabled:
            return settings
        module, _, function = spec.prepare.partition(":")
        hook = getattr(importlib.import_module(module), function)
        base_url = await hook(spec, settings, start=start, env=self._env)
        if base_url is None:
            return None
        if base_url == settings.base_url:
            return settings
        return self.update(spec.name, base_url=base_url, base_url_is_default=settings.base_url_is_default)

    def summary(self, health: dict[str, ProviderHealth] | None = None) -> StatusSummary:
        names = self.names()
        enabled = [n for n in names if self.settings(n).enabled]
        configured = [n for n in enabled if self.is_configured(n)]
        available = None if health is None else sum(1 for h in health.values() if h.available)
        return StatusSummary(len(names), len(enabled), len(configured), available)


_registry: ProviderRegistry | None = None
_registry_lock = threading.Lock()


def get_registry() -> ProviderRegistry:
    """The process-wide registry, created from the environment on first use."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = ProviderRegistry()
        return _registry


def has_registry() -> bool:
    """Whether the registry exists yet (creating it reads the environment)."""
    return _registry is not None


def reset_registry() -> None:
    """Drop the registry so the next use re-reads everything (tests, `--reinit`)."""
    global _registry
    with _registry_lock:
        _registry = None
