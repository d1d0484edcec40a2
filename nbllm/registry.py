"""The live set of providers: settings from the environment, enable/disable, status.

One `ProviderRegistry` per process (`get_registry()`); `reinit()` re-reads the
environment, `.env` and the endpoints files (`nbllm.endpoints`: the user's own
providers, registered in the catalog with origin "file", and aliases). Choices made
with `save=True` go to the user config file, which environment variables override;
endpoints and aliases added with `save=True` go to an endpoints file, and those added or
removed with `save=False` last for the process (`reinit()` re-applies them). It holds
settings and does not choose: what a name means (`auto`, detected models, aliases)
is `routing`'s job, which watches `generation` to forget what it learnt under
older settings.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import catalog, endpoints
from .catalog import ProviderSpec
from .config import (
    FIELDS, GlobalSettings, ProviderSettings, key_values, load_provider_settings, read_settings, read_user_config,
    user_config_path, write_user_config,
)
from .endpoints import Alias
from .errors import ConfigurationError, remember_secrets, scrub
from .health import ProviderHealth, base_url_missing, check_providers

__all__ = ["ProviderRegistry", "get_registry", "StatusSummary", "has_registry", "reset_registry"]


@dataclass(frozen=True)
class StatusSummary:
    total: int
    enabled: int
    configured: int
    available: int | None

    def __str__(self) -> str:
        text = f"{self.total} providers: {self.enabled} enabled, {self.configured} configured"
        return text if self.available is None else f"{text}, {self.available} available"  # None: not probed


_PRICES = ("_PRICE_INPUT", "_PRICE_OUTPUT")


class ProviderRegistry:
    """Providers with their current settings; enable/disable apply to this process."""

    def __init__(self, dotenv_path: str | None = ".env"):
        self._dotenv_path = dotenv_path
        self._lock = threading.RLock()
        self._settings: dict[str, ProviderSettings] = {}
        self.global_settings = GlobalSettings()
        self.aliases: dict[str, Alias] = {}
        """Alias name → `Alias` (from the endpoints files, or set for this process); routing resolves them."""
        self.endpoints_paths: tuple[Path, ...] = ()
        """The endpoints files read: the user's (beside the config file), then the working directory's."""
        self.endpoint_problems: tuple[str, ...] = ()
        self._overlay = _Overlay()
        self._generation = 0
        self.reinit()

    # ---- loading ------------------------------------------------------------
    def reinit(self) -> None:
        """Re-read the environment, `.env`, the user config file and the endpoints files
        (bad values and entries are warned again)."""
        env, origin, user_config, global_settings = read_settings(self._dotenv_path)
        with self._lock:
            _forget_file_specs()
            found = endpoints.read_endpoints(env, origin)
            for spec in found.specs:
                catalog.register_provider(spec, replace=True)
            self.aliases = dict(found.aliases)
            self._overlay.apply(self.aliases)
            self.endpoints_paths = found.paths
            self.endpoint_problems = found.problems
            self._origin = origin
            self._env = env
            self._user_config = user_config
            self.global_settings = global_settings
            self._settings = {
                spec.name: load_provider_settings(spec, env, origin, user_config) for spec in catalog.all_specs()
            }
            self._remember_secrets()
            self._changed()

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
        """Cloud: a key is present. Local: its address is known (whether it answers is for health)."""
        spec, settings = self.spec(name), self.settings(name)
        return not base_url_missing(spec, settings) and (not spec.needs_key or settings.has_key)

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

    def saved_default_uses(self, name: str) -> bool:
        """Whether the default saved in the user config file names `name` (alone, with a model or in a chain)."""
        return _names_in_default(read_user_config(self._env), name)

    def forget_saved_default(self, name: str) -> bool:
        """Clear the saved default if it names `name` (an endpoint or alias just removed), so later
        processes do not warn that it is unknown; True if it did."""
        config = read_user_config(self._env)
        if not _names_in_default(config, name):
            return False
        config.pop("default", None)
        write_user_config(config, self.config_path)
        with self._lock:
            self._user_config = {k: v for k, v in self._user_config.items() if k != "default"}
            g = self.global_settings
            if g.provider_source == "the saved default":
                sources = {k: v for k, v in g.sources.items()
                           if not (k in ("NBLLM_PROVIDER", "NBLLM_MODEL") and v == "config")}
                model = None if g.sources.get("NBLLM_MODEL") == "config" else g.model
                self.global_settings = replace(g, provider=catalog.AUTO, model=model, provider_source="",
                                               sources=sources)
        return True

    @property
    def config_path(self) -> Path:
        """The user config file, as the last read of the environment and `.env` names it (no file is read)."""
        return user_config_path(self._env, self._origin)

    # ---- the user's endpoints and aliases ------------------------------------------
    def _changed(self) -> None:
        """After an endpoint or alias changed: routing and the cached clients forget what they knew."""
        self._generation += 1
        from .clients import clear

        clear()

    def _file_for(self, section: str, name: str) -> Path:
        """Where a change to `name` is saved: the file that already holds it (the working
        directory's first, as it wins), else the user file."""
        for path in reversed(self.endpoints_paths):
            if endpoints.holds(path, section, name):
                return path
        return self.endpoints_paths[0]

    def add_endpoint(self, name: str, base_url: str, key_env: str | None = None, kind: str = "local",
                     protocol: str = "openai", model: str | None = None, label: str | None = None,
                     save: bool = True, price_input: float | None = None,
                     price_output: float | None = None) -> ProviderSpec:
        """Add (or replace) one of the user's own providers; `save` writes it to an endpoints file."""
        name = (name or "").strip()
        entry: dict[str, Any] = {"base_url": base_url, "kind": kind, "protocol": protocol, "key_env": key_env,
                                 "model": model, "label": label, "price_input": price_input,
                                 "price_output": price_output}
        entry = {k: v for k, v in entry.items() if v is not None}
        spec, problems = endpoints.check_endpoint(name, entry, credentials=True)
        if problems:  # a face is strict: a typo in a fleet is refused, not saved without that server
            spec = None
        if spec is not None and save and endpoints.has_credentials(spec.base_url):
            prefix = spec.env_prefix
            spec, problems = None, [f"keys and passwords never go in nbllm.toml: give the base URL without "
                                    f"user:password@ and set {prefix}_API_KEY, or put the URL with them in "
                                    f"{prefix}_BASE_URL in the environment or .env"]
        if spec is not None and name in self.aliases:
            spec, problems = None, [f"{name!r} is an alias: remove it first with nbllm.unalias({name!r})"]
        if spec is None:
            raise ConfigurationError(f"Cannot add endpoint {name!r}: {'; '.join(problems)}.")
        with self._lock:
            if save:
                path = self._file_for("providers", name)
                if key_env and path != self.endpoints_paths[0]:
                    raise ConfigurationError(
                        f"Cannot save key_env for endpoint {name!r}: [providers.{name}] is in {path}, the working "
                        f"directory's file, where key_env is not read (a cloned project could send your keys "
                        f"anywhere). Move the entry to {self.endpoints_paths[0]}, set {spec.env_prefix}_API_KEY, "
                        f"or add it with save=False for this process.")
                urls = spec.base_url.split(",")
                written = {"base_url": urls[0] if len(urls) == 1 else urls, "kind": spec.kind,
                           "protocol": "anthropic" if spec.builder == "anthropic" else "openai",
                           "key_env": key_env.strip() if key_env else None, "model": model, "label": label,
                           "price_input": price_input, "price_output": price_output}
                endpoints.write_endpoint(path, name, written)
                spec = replace(spec, extra={**spec.extra, "file": str(path)})
            self._overlay.specs.set(name, None if save else spec)
            catalog.register_provider(spec, replace=True)
            self._settings[name] = load_provider_settings(spec, self._env, self._origin, self._user_config)
            self._remember_secrets()
            self._changed()
        return spec

    def remove_endpoint(self, name: str, save: bool = True) -> list[Path]:
        """Forget one of the user's own providers; `save` also removes it from every endpoints file holding it
        (returned). Built-in and plug-in providers cannot be removed: disable them."""
        key = (name or "").strip().lower()
        current = {spec.name: spec for spec in catalog.all_specs()}
        if key in current and current[key].origin != "file":
            where = "built in" if current[key].origin == "builtin" else "from a plug-in"
            raise ConfigurationError(f"{key!r} is {where} and cannot be removed: disable it instead with "
                                     f"nbllm.disable({key!r}), %llm_providers --disable {key} or "
                                     f"nbllm providers --disable {key}.")
        with self._lock:
            files = [p for p in self.endpoints_paths if endpoints.holds(p, "providers", key)] if save else []
            if key not in current and not files:
                mine = [s.name for s in current.values() if s.origin == "file"]
                valid = ", ".join(mine) if mine else "none yet (add one with nbllm.add_provider)"
                raise ConfigurationError(f"No endpoint named {name!r} to remove. Your endpoints: {valid}.")
            removed = [p for p in files if endpoints.delete_entry(p, "providers", key)]
            self._overlay.specs.remove(key, kept_in_files=not save)
            catalog.unregister_provider(key)
            self._settings.pop(key, None)
            self._changed()
        return removed

    def set_alias(self, name: str, target: str, on: str = "transient", save: bool = True) -> Alias:
        """Make `name` mean `target` (a provider, `provider:model`, `auto`, another alias or a chain)."""
        name = (name or "").strip()
        on_word = (on or "").strip().lower()
        if on_word not in endpoints.ON_CHOICES:
            raise ConfigurationError(f"on={on!r} is not one of {', '.join(endpoints.ON_CHOICES)}: "
                                     "'transient' falls back on connection failures, timeouts, 429 and 5xx, "
                                     "'any' on every error.")
        problem = endpoints.check_alias_name(name, self.names())
        if problem:
            raise ConfigurationError(f"Cannot make alias {name!r}: {problem}.")
        links = catalog.parse_chain(target)
        known = set(self.names()) | {catalog.AUTO} | set(self.aliases) | {name}  # itself: a loop, said below
        unknown = [link.provider for link in links if link.provider not in known]
        if unknown:
            others = sorted(set(self.aliases) - {name})
            valid = ", ".join([*self.names(), catalog.AUTO]) + (f"; aliases: {', '.join(others)}" if others else "")
            raise ConfigurationError(f"Alias {name!r} cannot point at {unknown[0]!r}: it is not a provider or an "
                                     f"alias. Valid names: {valid}.")
        alias = Alias(name, ",".join(str(link) for link in links), on_word)
        loop = endpoints.alias_cycle(name, {**self.aliases, name: alias})
        if loop:
            raise ConfigurationError(f"Alias {name!r} would make a loop ({' → '.join(loop)}): "
                                     "point it at a provider.")
        with self._lock:
            if save:
                path = self._file_for("aliases", name)
                endpoints.write_alias(path, name, alias.target, alias.on)
                alias = Alias(alias.name, alias.target, alias.on, str(path))
            self.aliases[name] = alias
            self._overlay.aliases.set(name, None if save else alias)
            self._changed()
        return alias

    def remove_alias(self, name: str, save: bool = True) -> list[Path]:
        """Forget alias `name`; `save` also removes it from every endpoints file holding it (returned)."""
        key = (name or "").strip().lower()
        with self._lock:
            files = [p for p in self.endpoints_paths if endpoints.holds(p, "aliases", key)] if save else []
            if key not in self.aliases and not files:
                valid = ", ".join(sorted(self.aliases)) or "none yet (make one with nbllm.alias)"
                raise ConfigurationError(f"No alias named {name!r} to remove. Aliases: {valid}.")
            users = self.aliases_naming(key)
            if users:
                raise ConfigurationError(
                    f"Cannot remove alias {key!r}: {', '.join(users)} {'names' if len(users) == 1 else 'name'} it; "
                    f"point {'it' if len(users) == 1 else 'them'} elsewhere or remove "
                    f"{'it' if len(users) == 1 else 'them'} first.")
            removed = [p for p in files if endpoints.delete_entry(p, "aliases", key)]
            self._overlay.aliases.remove(key, kept_in_files=not save)
            self.aliases.pop(key, None)
            self._changed()
        return removed

    def aliases_naming(self, name: str) -> list[str]:
        """The other aliases whose target names `name` (alone, with a model or in a chain), sorted."""
        found = []
        for other, alias in self.aliases.items():
            try:
                links = catalog.parse_chain(alias.target)
            except ConfigurationError:
                continue
            if other != name and any(link.provider == name for link in links):
                found.append(other)
        return sorted(found)

    def endpoint_files(self) -> list[tuple[Path, bool]]:
        """The endpoints files and whether each exists (for `--list`)."""
        return [(path, path.is_file()) for path in self.endpoints_paths]

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
            in_file = spec.extra.get(var[len(spec.env_prefix) + 1:].lower()) if var.endswith(_PRICES) else None
            if not raw and in_file is not None:  # a price declared in the endpoints file, where it was read
                rows.append({"provider": spec.name, "variable": var, "set": True, "source": "file", "value": in_file})
                continue
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


class _Kept:
    """One kind of thing (endpoints or aliases) this process set or removed with `save=False`."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}
        self.gone: set[str] = set()

    def set(self, name: str, value: Any | None) -> None:
        """`value` set for this process (None: a saved change, which the file now says)."""
        self.gone.discard(name)
        if value is None:
            self.items.pop(name, None)
        else:
            self.items[name] = value

    def remove(self, name: str, kept_in_files: bool) -> None:
        self.items.pop(name, None)
        if kept_in_files:
            self.gone.add(name)
        else:
            self.gone.discard(name)


class _Overlay:
    """What this process changed with `save=False`: endpoints and aliases added, and names removed.

    `reinit()` re-reads the files and then applies this on top, so a change "for this process"
    lasts for the process (a default naming it included), not only until the next re-read.
    A saved change of a name drops what the overlay held for it: the file says it now.
    """

    def __init__(self) -> None:
        self.specs = _Kept()
        self.aliases = _Kept()

    def apply(self, aliases: dict[str, Alias]) -> None:
        """Re-make this process's changes over what the files just gave (the catalog and `aliases`)."""
        for name in self.specs.gone:
            if name in catalog.provider_names() and catalog.get_spec(name).origin == "file":
                catalog.unregister_provider(name)
        for name, spec in self.specs.items.items():
            current = catalog.get_spec(name) if name in catalog.provider_names() else None
            if current is None or current.origin == "file":  # never over a built-in or plug-in provider
                catalog.register_provider(spec, replace=True)
                aliases.pop(name, None)
        for name in self.aliases.gone:
            aliases.pop(name, None)
        names = set(catalog.provider_names())
        aliases.update({n: a for n, a in self.aliases.items.items() if n not in names})
        for name in list(self.aliases.items):
            loop = endpoints.alias_cycle(name, aliases) if name in aliases else None
            if loop:  # the files now close a loop with it: the file's aliases stay, this one goes
                aliases.pop(name, None)
                self.aliases.items.pop(name, None)
                from .config import config_warning

                config_warning(f"nbllm: alias {name!r} (set for this process) would now make a loop with the "
                               f"endpoints files ({' → '.join(loop)}); it is dropped.")


def _names_in_default(config: dict[str, Any], name: str) -> bool:
    """Whether the saved default in `config` (the user config file) names `name`."""
    saved = config.get("default")
    provider = saved.get("provider") if isinstance(saved, dict) else None
    if not isinstance(provider, str):
        return False
    try:
        links = catalog.parse_chain(provider)
    except ConfigurationError:
        return False
    return any(link.provider == (name or "").strip().lower() for link in links)


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
    """Drop the registry so the next use re-reads everything (tests, `--reinit`), endpoints files included."""
    global _registry
    with _registry_lock:
        _registry = None
        _forget_file_specs()


def _forget_file_specs() -> None:
    """Take the providers read from endpoints files out of the catalog (they are read again)."""
    for spec in catalog.all_specs():
        if spec.origin == "file":
            catalog.unregister_provider(spec.name)
