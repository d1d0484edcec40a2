"""Typed, validated settings per provider, read from the environment.

Sources, strongest first: real environment variables, a `.env` file in the working
directory, the user config file (what `--enable/--disable/--use --save` persist),
then the catalog's defaults. A bad value never raises: it becomes one
`NbllmConfigWarning` naming the variable, the value and the default used, and is
kept in `ProviderSettings.problems` for `--list` to show.
"""

from __future__ import annotations

import json
import math
import logging
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from .catalog import ProviderSpec, all_specs, key_env_names
from .errors import redact

__all__ = [
    "Secret", "ProviderSettings", "GlobalSettings", "NbllmConfigWarning", "FIELDS",
    "read_environment", "key_values", "load_provider_settings", "load_global_settings",
    "user_config_path", "read_user_config", "write_user_config", "server_root", "openai_base",
]

log = logging.getLogger("nbllm")


class NbllmConfigWarning(UserWarning):
    """A configuration value was invalid and a default is used instead."""


class Secret:
    """Holds a key so that repr/str/format never show it; `.get()` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # pickling would write the key to disk
        raise TypeError("nbllm Secret values cannot be pickled")


# ---- value parsing ---------------------------------------------------------

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def _to_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected true/false, yes/no, on/off or 1/0")


def _to_url(text: str) -> str:
    text = text.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return text


def _to_model(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError("expected a model name")
    return text


@dataclass(frozen=True)
class Field:
    """One `{PROVIDER}_{SUFFIX}` variable: how to convert it and what is allowed."""

    suffix: str
    attr: str
    convert: Callable[[str], Any]
    low: float | None = None
    high: float | None = None
    doc: str = ""

    def parse(self, text: str) -> Any:
        return self.check(self.convert(text.strip()))

    def check(self, value: Any) -> Any:
        """The value if it is allowed (a per-call option gets the same rules as the variable)."""
        if self.convert is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("must be a whole number")
        if self.convert is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError("must be a number")
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"must be between {_number(self.low)} and {_number(self.high)}")
        return value


def _number(x: float | None) -> str:
    return f"{int(x):,}" if x is not None and float(x).is_integer() else f"{x:g}"


FIELDS: tuple[Field, ...] = (
    Field("ENABLED", "enabled", _to_bool, doc="turn the provider on/off"),
    Field("MODEL", "model", _to_model, doc="model id"),
    Field("WEIGHT", "weight", float, 0.0, 1.0, doc="vote weight in consensus"),
    Field("MAX_TOKENS", "max_tokens", int, 1, 1_000_000, doc="answer length cap"),
    Field("TEMPERATURE", "temperature", float, 0.0, 2.0, doc="sampling temperature"),
    Field("TIMEOUT", "timeout", float, 0.001, 3600.0, doc="seconds per request"),
    Field("MAX_RETRIES", "max_retries", int, 0, 20, doc="retries on 429/5xx"),
    Field("BASE_URL", "base_url", _to_url, doc="server address"),
)


@dataclass(frozen=True)
class ProviderSettings:
    """The effective configuration of one provider (keys masked in repr)."""

    provider: str
    api_key: Secret | None = None
    enabled: bool = True
    model: str = ""
    weight: float = 1.0
    max_tokens: int = 1024
    temperature: float = 0.7
    timeout: float = 30.0
    max_retries: int = 3
    base_url: str = ""
    model_is_default: bool = True
    base_url_is_default: bool = True
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    """Variable name → 'env' | '.env' | 'config' for every variable that was set."""
    problems: tuple[str, ...] = ()

    @property
    def has_key(self) -> bool:
        return bool(self.api_key)

    def secrets(self) -> tuple[str, ...]:
        return (self.api_key.get(),) if self.api_key else ()

    def with_(self, **changes: Any) -> "ProviderSettings":
        return replace(self, **changes)


@dataclass(frozen=True)
class GlobalSettings:
    """Settings that are not about one provider."""

    provider: str = "auto"
    model: str | None = None
    health_timeout: float = 2.0
    problems: tuple[str, ...] = ()
    provider_source: str = ""
    """Where `provider` came from, for messages: "NBLLM_PROVIDER", "the saved default" or ""."""


# ---- sources ---------------------------------------------------------------


def user_config_path() -> Path:
    """Where persisted choices live (`NBLLM_CONFIG` overrides, for tests and CI)."""
    override = os.environ.get("NBLLM_CONFIG")
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("nbllm")) / "config.json"


def read_user_config() -> dict[str, Any]:
    path = user_config_path()
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        config_warning(f"nbllm: ignoring unreadable config file {path}: {exc}")
        return {}


def write_user_config(data: Mapping[str, Any]) -> Path:
    path = user_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(data), indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def read_environment(dotenv_path: str | os.PathLike[str] | None = ".env") -> tuple[dict[str, str], dict[str, str]]:
    """Merged variables and where each came from; real environment wins over `.env`."""
    merged: dict[str, str] = {}
    origin: dict[str, str] = {}
    if dotenv_path and Path(dotenv_path).is_file():
        from dotenv import dotenv_values

        for key, value in dotenv_values(dotenv_path).items():
            if value is not None:
                merged[key] = value
                origin[key] = ".env"
    for key, value in os.environ.items():
        merged[key] = value
        origin[key] = "env"
    return merged, origin


def key_values(env: Mapping[str, str]) -> tuple[str, ...]:
    """The value of every key variable in `env` (any `*_API_KEY`, and each provider's key names).

    Messages about a bad value are masked with all of them: a key pasted into
    another provider's variable must not be echoed either.
    """
    names = {name for spec in all_specs() for name in key_env_names(spec)}
    values = {v.strip() for k, v in env.items() if (k.endswith("_API_KEY") or k in names) and v and v.strip()}
    return tuple(sorted(values, key=len, reverse=True))  # a key inside a longer one is masked after it


def config_warning(problem: str) -> None:
    """One `NbllmConfigWarning`, attributed to the first caller outside nbllm and IPython
    (a user's cell or script), so the user sees their own line, not nbllm's source."""
    skipped = (os.path.dirname(os.path.abspath(__file__)), os.sep + "IPython" + os.sep)
    frame, level = sys._getframe(0), 1
    while frame is not None and any(part in os.path.abspath(frame.f_code.co_filename) for part in skipped):
        frame, level = frame.f_back, level + 1
    warnings.warn(problem, NbllmConfigWarning, stacklevel=level)
    log.debug(problem)  # shown once, as a warning; not again through logging



def server_root(url: str) -> str:
    """`http://host:1234/v1/` → `http://host:1234` (local servers are addressed both ways)."""
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


def openai_base(url: str) -> str:
    """The OpenAI-compatible API base (`…/v1`) of a local server."""
    return server_root(url) + "/v1"


def _host_to_url(value: str, default_port: int | None) -> str:
    """OLLAMA_HOST style values (`0.0.0.0`, `host:port`, `http://host`) → a URL."""
    value = value.strip()
    if "://" not in value:
        value = "http://" + value
    parts = urlsplit(value)
    host = parts.hostname or "localhost"
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    port = parts.port or default_port
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port else "")


def load_provider_settings(
    spec: ProviderSpec,
    env: Mapping[str, str],
    origin: Mapping[str, str] | None = None,
    user_config: Mapping[str, Any] | None = None,
    warn: bool = True,
) -> ProviderSettings:
    """Build one provider's settings; never raises for a bad value."""
    origin = origin or {}
    user_config = user_config or {}
    prefix = spec.env_prefix
    values: dict[str, Any] = {
        "enabled": True,
        "model": spec.default_model,
        "base_url": spec.base_url,
    }
    sources: dict[str, str] = {}
    problems: list[str] = []

    # Persisted enable/disable from the user config file (environment wins below).
    if spec.name in user_config.get("disabled", []):
        values["enabled"] = False
        sources[f"{prefix}_ENABLED"] = "config"

    api_key = None
    for name in key_env_names(spec):
        if env.get(name, "").strip():
            api_key = Secret(env[name].strip())
            sources[name] = origin.get(name, "env")
            break

    model_default, url_default = True, True
    if spec.host_env and env.get(spec.host_env, "").strip():
        values["base_url"] = _host_to_url(env[spec.host_env], spec.default_port)
        sources[spec.host_env] = origin.get(spec.host_env, "env")
        url_default = False

    for fld in FIELDS:
        name = f"{prefix}_{fld.suffix}"
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            continue
        sources[name] = origin.get(name, "env")
        try:
            values[fld.attr] = fld.parse(raw)
        except (ValueError, TypeError) as exc:
            default = values.get(fld.attr, getattr(ProviderSettings, fld.attr, None))
            problem = redact(  # a key pasted in the wrong place must not be echoed
                f"nbllm: {name}={raw.strip()!r} is invalid ({exc}); using the default {default!r}.",
                key_values(env),
            )
            problems.append(problem)
            if warn:
                config_warning(problem)
            continue
        if fld.attr == "model":
            model_default = False
        if fld.attr == "base_url":
            url_default = False

    return ProviderSettings(
        provider=spec.name,
        api_key=api_key,
        model_is_default=model_default,
        base_url_is_default=url_default,
        sources=sources,
        problems=tuple(problems),
        **values,
    )


def load_global_settings(
    env: Mapping[str, str], user_config: Mapping[str, Any] | None = None, warn: bool = True
) -> GlobalSettings:
    """`NBLLM_PROVIDER`, `NBLLM_MODEL`, `NBLLM_HEALTH_TIMEOUT`; then the saved default."""
    user_config = user_config or {}
    saved = user_config.get("default") or {}
    provider = (env.get("NBLLM_PROVIDER") or saved.get("provider") or "auto").strip().lower()
    source = "NBLLM_PROVIDER" if env.get("NBLLM_PROVIDER") else ("the saved default" if saved.get("provider") else "")
    model = env.get("NBLLM_MODEL") or (saved.get("model") if not env.get("NBLLM_PROVIDER") else None)
    problems: list[str] = []
    timeout = 2.0
    raw = env.get("NBLLM_HEALTH_TIMEOUT")
    if raw:
        try:
            timeout = float(raw)
            if not 0 < timeout <= 120:
                raise ValueError("must be in (0, 120]")
        except ValueError as exc:
            timeout = 2.0
            problems.append(redact(f"nbllm: NBLLM_HEALTH_TIMEOUT={raw!r} is invalid ({exc}); using the default 2.0.",
                                   key_values(env)))
    if warn:
        for problem in problems:
            config_warning(problem)
    return GlobalSettings(provider=provider, model=model or None, health_timeout=timeout, problems=tuple(problems),
                          provider_source=source)
