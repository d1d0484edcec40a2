"""The one reader of settings: typed, validated values per provider and for nbllm itself.

Sources, strongest first: real environment variables, a `.env` file in the working
directory (python-dotenv), the user config file (JSON at `user_config_path()`: what
`--enable/--disable/--use --save` persist), then the defaults. Nothing else in nbllm reads
`os.environ`; other modules ask the registry (`get_registry().global_settings`), so `.env`
and `nbllm.reinit()` reach them. A bad value never raises: it is one `NbllmConfigWarning`
per variable and value per process (an explicit re-read, `nbllm.reinit()`, says it again)
naming the variable, the value (keys masked), the accepted form and what is used instead,
and it is kept in `.problems` for `--list`. Keys and URL passwords never show in a repr.

Per provider (`{P}` is the catalog's prefix: OPENAI, LMSTUDIO, …):
    {P}_API_KEY       the key (also the usual names: GOOGLE_API_KEY, XAI_API_KEY)
    {P}_ENABLED       boolean: true/false, yes/no, on/off, 1/0 (also y/n, t/f)
    {P}_MODEL         a model id                      {P}_BASE_URL   an http:// or https:// URL, or a comma
                                                                     list of them: a fleet of servers
    {P}_WEIGHT        number 0..1                     {P}_MAX_TOKENS whole number 1..1,000,000
    {P}_TEMPERATURE   number 0..2                     {P}_TIMEOUT    seconds, 0.001..3,600
    {P}_MAX_RETRIES   whole number 0..20              OLLAMA_HOST    host, host:port or URL
nbllm itself (`GlobalSettings`, field in brackets):
    NBLLM_PROVIDER [provider]   initial default: a provider name or auto (else the saved default)
    NBLLM_MODEL [model]         its model (else the saved default's)
    NBLLM_HEALTH_TIMEOUT [health_timeout]  seconds per probe, above 0 and at most 120 (default 2)
    NBLLM_LOG [log]             boolean: keep the call log (default on)
    NBLLM_HISTORY [history]     path of the call log file (default: user data dir/history.sqlite)
    NBLLM_CACHE [cache]         path of the replay cache (default: user data dir/cache.sqlite)
    NBLLM_JOBS [jobs]           path of the durable jobs store (default: user data dir/jobs.sqlite)
    NBLLM_CACHE_MODE [cache_mode]          record | replay | off: initial replay mode (default off)
    NBLLM_EMBEDDED_MODEL [embedded_model]  path of a GGUF file (default: the bundled SmolLM2)
    NBLLM_EMBEDDED_ARGS [embedded_args]    extra llama-cpp server options, as on a command line
    NBLLM_EMBEDDED_START_TIMEOUT [embedded_start_timeout]  seconds, above 0 (default 30)
    EMBEDDED_SEED [embedded_seed]          the embedded server's sampling seed (default: random per start)
    NBLLM_CONFIG [config]       path of the user config file (environment or .env)
    NBLLM_MAX_CONTEXT_TOKENS [max_context_tokens]  token cap of a `{df}` summary in a prompt (default 2000)
    NBLLM_MAX_IMAGE_SIDE [max_image_side]  longest side of an image sent in a prompt, pixels (default 1568)
The user config file: `{"disabled": [names], "default": {"provider": name, "model": name or
null}}`; entries of another shape are ignored (one warning), unknown keys are kept.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

from .catalog import ProviderSpec, all_specs, key_env_names
from .errors import scrub
from .warning_lines import NbllmWarning, install as plain_warning_lines
from .settings_values import (
    FIELDS, GLOBALS, MAX_CONTEXT_TOKENS, MAX_IMAGE_SIDE, BadValue, Secret, decode, host_to_url, is_name, openai_base,
    os_reason, server_root, split_urls, to_path, validate_user_config,
)

__all__ = [
    "Secret", "ProviderSettings", "GlobalSettings", "NbllmConfigWarning", "FIELDS", "GLOBALS", "Snapshot",
    "read_environment", "read_settings", "key_values", "load_provider_settings", "load_global_settings",
    "global_variable_rows", "user_config_path", "read_user_config", "validate_user_config", "write_user_config",
    "config_warning", "forget_warnings", "server_root", "openai_base",
]

log = logging.getLogger("nbllm")


class NbllmConfigWarning(NbllmWarning):
    """A configuration value was invalid and a default is used instead (printed as one plain line)."""


# ---- the settings --------------------------------------------------------------------

_ARG_KEYS = re.compile(r"(?i)(--api[_-]key[=\s]\s*)(\S+)")


def _masked_repr(obj: Any) -> str:
    """The dataclass repr without keys (`masks`), key shapes, URL passwords or `--api_key X`."""
    text = ", ".join(f"{f.name}={getattr(obj, f.name)!r}" for f in fields(obj) if f.repr)
    secrets = tuple(m.get() for m in obj.masks)
    return _ARG_KEYS.sub(r"\1***", scrub(f"{type(obj).__name__}({text})", secrets))


@dataclass(frozen=True, repr=False)
class ProviderSettings:
    """The effective configuration of one provider (keys and URL passwords masked in repr;
    `.base_url` keeps the real URL for requests)."""

    provider: str
    api_key: Secret | None = None
    enabled: bool = True
    model: str = ""
    weight: float = 1.0
    max_tokens: int = 1024
    temperature: float = 0.7
    timeout: float = 30.0
    max_retries: int = 3
    price_input: float | None = None
    """Declared USD per million input tokens (`{P}_PRICE_INPUT`); None: genai-prices' data, or 0 when local."""
    price_output: float | None = None
    base_url: str = ""
    """The address requests go to: the first of `servers` (or, in a Target, the one picked)."""
    servers: tuple[str, ...] = ()
    """Every server of the provider (`{P}_BASE_URL=http://a/v1,http://b/v1`: a fleet); just `base_url` normally."""
    model_is_default: bool = True
    base_url_is_default: bool = True
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    """Variable name → 'env' | '.env' | 'config' for every variable that was set."""
    problems: tuple[str, ...] = ()
    masks: tuple[Secret, ...] = field(default=(), compare=False, repr=False)
    """Every key value of the environment it was read from: masked in repr (a key pasted as a model)."""

    def __post_init__(self) -> None:
        # One rule keeps `base_url` and `servers` in step, whoever builds or replaces them:
        # `with_(base_url=X)` for an X outside the fleet means "this one server now";
        # an X inside it (a Target for one server of the fleet) keeps the fleet.
        if not self.servers:
            object.__setattr__(self, "servers", (self.base_url,) if self.base_url else ())
        elif not self.base_url:
            object.__setattr__(self, "base_url", self.servers[0])
        elif self.base_url not in self.servers:
            object.__setattr__(self, "servers", (self.base_url,))

    @property
    def has_key(self) -> bool:
        return bool(self.api_key)

    def secrets(self) -> tuple[str, ...]:
        return (self.api_key.get(),) if self.api_key else ()

    def with_(self, **changes: Any) -> "ProviderSettings":
        return replace(self, **changes)

    def __repr__(self) -> str:
        return _masked_repr(self)


@dataclass(frozen=True, repr=False)
class GlobalSettings:
    """The `NBLLM_*` settings (see the module docstring); a path of None means the default file."""

    provider: str = "auto"
    model: str | None = None
    health_timeout: float = 2.0
    log: bool = True
    history: Path | None = None
    cache: Path | None = None
    jobs: Path | None = None
    cache_mode: str = "off"
    embedded_model: Path | None = None
    embedded_args: str = ""
    embedded_start_timeout: float = 30.0
    embedded_seed: int | None = None
    config: Path | None = None
    max_context_tokens: int = MAX_CONTEXT_TOKENS
    max_image_side: int = MAX_IMAGE_SIDE
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    """Variable name → 'env' | '.env' | 'config' for every variable that was set."""
    problems: tuple[str, ...] = ()
    provider_source: str = ""
    """Where `provider` came from, for messages: "NBLLM_PROVIDER", "the saved default" or ""."""
    masks: tuple[Secret, ...] = field(default=(), compare=False, repr=False)

    def value(self, variable: str) -> Any:
        """The typed value of an `NBLLM_*` variable (`value("NBLLM_HISTORY")` is `.history`)."""
        return getattr(self, GLOBALS[variable].attr)

    def __repr__(self) -> str:
        return _masked_repr(self)


# ---- warnings ------------------------------------------------------------------------

_warned: set[tuple[str, ...]] = set()
_warned_lock = threading.Lock()


def config_warning(problem: str, key: tuple[str, ...] | None = None) -> None:
    """One `NbllmConfigWarning`, attributed to the first caller outside nbllm and IPython
    (a user's cell or script: filters and the once-per-place rule see that place); it prints
    as the sentence alone (`nbllm.warning_lines`).

    With a `key` (variable and value, or a file's problem) it is said once per process
    until `forget_warnings()`: re-reading the same bad value must not repeat it each call.
    """
    if key is not None:
        with _warned_lock:
            if key in _warned:
                return
            _warned.add(key)
    skipped = (os.path.dirname(os.path.abspath(__file__)), os.sep + "IPython" + os.sep)
    frame, level = sys._getframe(0), 1
    while frame is not None and any(part in os.path.abspath(frame.f_code.co_filename) for part in skipped):
        frame, level = frame.f_back, level + 1
    plain_warning_lines()  # printed as the sentence alone, without the cell file's name and line
    warnings.warn(problem, NbllmConfigWarning, stacklevel=level)
    log.debug(problem)  # shown once, as a warning; not again through logging


def forget_warnings() -> None:
    """Let every problem be said again (an explicit re-read: `nbllm.reinit()`, `--reinit`)."""
    with _warned_lock:
        _warned.clear()


def _bad(name: str, raw: str, bad: BadValue, instead: str, origin: Mapping[str, str], masks: tuple[str, ...],
         warn: bool) -> str:
    """The one sentence about a bad value (warned once), returned for `.problems`."""
    where = " (from .env)" if origin.get(name) == ".env" else ""
    problem = scrub(f"nbllm: {name}={raw.strip()!r}{where} is not valid: {bad}; using {instead}.", masks)
    if warn:
        config_warning(problem, key=(name, raw))
    return problem


# ---- the environment and .env --------------------------------------------------------


def _environment(dotenv_path: str | os.PathLike[str] | None) -> tuple[dict[str, str], dict[str, str], str | None]:
    """Merged variables, where each came from, and what is wrong with the `.env` file (if anything)."""
    merged: dict[str, str] = {}
    origin: dict[str, str] = {}
    problem = None
    path = Path(dotenv_path) if dotenv_path else None
    if path is not None and path.is_file():
        try:
            text, problem = decode(path.read_bytes(), f"the .env file {path.resolve()}")
        except OSError as exc:
            text, problem = None, f"nbllm: the .env file {path.resolve()} cannot be read ({os_reason(exc)}); ignoring it."
        if text is not None:
            from dotenv import dotenv_values

            for key, value in dotenv_values(stream=io.StringIO(text)).items():
                if value is not None:
                    merged[key] = value
                    origin[key] = ".env"
    for key, value in os.environ.items():  # the one place nbllm reads the process environment
        merged[key] = value
        origin[key] = "env"
    return merged, origin, problem


def proxy_configured() -> bool:
    """Whether httpx2 would see proxy settings: a `*_proxy` variable (any case, `no_proxy` included:
    httpx2 turns its hosts into mounts of their own) or, on macOS and Windows, the system's proxies
    (`urllib.request.getproxies`, as httpx2 reads them). nbllm's shortcuts past httpx2 step aside
    then (`clients.http_client`, `plainhttp`)."""
    if sys.platform in ("darwin", "win32"):
        import urllib.request

        return bool(urllib.request.getproxies())
    return any(value and name.lower().endswith("_proxy") for name, value in os.environ.items())


def read_environment(dotenv_path: str | os.PathLike[str] | None = ".env") -> tuple[dict[str, str], dict[str, str]]:
    """Merged variables and where each came from; real environment wins over `.env`.

    A `.env` that cannot be read (not UTF-8, no permission) is one warning and is ignored.
    """
    merged, origin, problem = _environment(dotenv_path)
    if problem:
        config_warning(problem, key=("file", problem))
    return merged, origin


def key_values(env: Mapping[str, str]) -> tuple[str, ...]:
    """The value of every key variable in `env` (any `*_API_KEY`, and each provider's key names).

    Messages about a bad value are masked with all of them: a key pasted into
    another provider's variable must not be echoed either.
    """
    names = {name for spec in all_specs() for name in key_env_names(spec)}
    values = {v.strip() for k, v in env.items() if (k.endswith("_API_KEY") or k in names) and v and v.strip()}
    return tuple(sorted(values, key=len, reverse=True))  # a key inside a longer one is masked after it


# ---- the user config file ------------------------------------------------------------

def user_config_path(env: Mapping[str, str] | None = None, origin: Mapping[str, str] | None = None) -> Path:
    """Where persisted choices live: `NBLLM_CONFIG` (environment or `.env`), else the user config directory."""
    if env is None:
        env, origin = read_environment()
    raw = env.get("NBLLM_CONFIG", "")
    if raw.strip():
        try:
            return to_path(raw)
        except BadValue as bad:
            _bad("NBLLM_CONFIG", raw, bad, GLOBALS["NBLLM_CONFIG"].instead, origin or {}, key_values(env), True)
    from platformdirs import user_config_dir

    return Path(user_config_dir("nbllm")) / "config.json"


def _read_user_config(path: Path) -> tuple[dict[str, Any], str | None]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, f"nbllm: ignoring unreadable config file {path}: {os_reason(exc)}."
    text, problem = decode(data, f"the config file {path}")
    if text is None:
        return {}, problem
    try:
        parsed = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        return {}, (f"nbllm: ignoring unreadable config file {path}: it is not valid JSON (line {exc.lineno}, "
                    f"column {exc.colno}); fix it, or delete it and save your choices again.")
    return validate_user_config(parsed, path)


def read_user_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The user config file, checked (`validate_user_config`); a bad file or entry is one warning."""
    data, problem = _read_user_config(user_config_path(env))
    if problem:
        config_warning(problem, key=("file", problem))
    return data


def write_user_config(data: Mapping[str, Any], path: Path | None = None) -> Path:
    """Write the user config file (`path`: where the caller already knows it is) atomically."""
    path = path or user_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(data), indent=2, sort_keys=True))
    tmp.replace(path)
    return path


# ---- building settings ---------------------------------------------------------------


class Snapshot(NamedTuple):
    """Everything read in one pass (`read_settings`): what a registry keeps."""

    env: dict[str, str]
    origin: dict[str, str]
    user_config: dict[str, Any]
    global_settings: GlobalSettings


def read_settings(dotenv_path: str | os.PathLike[str] | None = ".env") -> Snapshot:
    """Re-read the environment, `.env` and the user config file (every problem is said again)."""
    forget_warnings()
    env, origin, problem = _environment(dotenv_path)
    problems = [problem] if problem else []
    user_config, problem = _read_user_config(user_config_path(env, origin))
    problems += [problem] if problem else []
    for problem in problems:
        config_warning(problem, key=("file", problem))
    return Snapshot(env, origin, user_config, load_global_settings(env, user_config, origin=origin,
                                                                  file_problems=problems))


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
    values: dict[str, Any] = {"enabled": True, "model": spec.default_model, "base_url": spec.base_url}
    sources: dict[str, str] = {}
    problems: list[str] = []
    masks = key_values(env)
    servers, wrong = split_urls(spec.base_url)  # a catalog or endpoints-file entry may list a fleet too
    if servers:
        values["base_url"], values["servers"] = servers[0], servers
        if wrong:
            problems.append(_left_out(f"the base URL of provider {spec.name!r}", spec.base_url, wrong, servers, masks,
                                      warn))

    disabled = user_config.get("disabled")  # persisted --disable; the environment wins below
    if isinstance(disabled, list) and spec.name in disabled:
        values["enabled"] = False
        sources[f"{prefix}_ENABLED"] = "config"

    api_key = None
    for name in key_env_names(spec):
        if env.get(name, "").strip():
            api_key = Secret(env[name].strip())
            sources[name] = origin.get(name, "env")
            break

    # A model written in an endpoints file is a choice like {P}_MODEL (see nbllm.endpoints.endpoint_spec).
    model_default, url_default = spec.extra.get("model_chosen") != "true", True
    if spec.host_env and env.get(spec.host_env, "").strip():
        sources[spec.host_env] = origin.get(spec.host_env, "env")
        try:
            values["base_url"], url_default = host_to_url(env[spec.host_env], spec.default_port), False
            values["servers"] = (values["base_url"],)  # OLLAMA_HOST names one server
        except BadValue as bad:
            problems.append(_bad(spec.host_env, env[spec.host_env], bad, f"the default {spec.base_url!r}", origin,
                                 masks, warn))

    for fld in FIELDS:
        name = f"{prefix}_{fld.suffix}"
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            continue
        previous = sources.get(f"{prefix}_ENABLED") if fld.attr == "enabled" else None
        sources[name] = origin.get(name, "env")
        try:
            if fld.kind == "urls":  # a fleet: keep the good servers, say which were left out
                values["base_url"], values["servers"] = _servers(name, raw, origin, masks, warn, problems)
            else:
                values[fld.attr] = fld.parse(raw)
        except BadValue as bad:
            kept = values.get(fld.attr, getattr(ProviderSettings, fld.attr, None))
            if previous == "config":
                instead = f"{kept!r} from the user config file"
            elif fld.attr == "base_url" and not url_default:
                instead = f"{kept!r} from {spec.host_env}"
            else:
                instead = f"the default {kept!r}"
            problems.append(_bad(name, raw, bad, instead, origin, masks, warn))
            continue
        model_default = model_default and fld.attr != "model"
        url_default = url_default and fld.attr != "base_url"

    return ProviderSettings(
        provider=spec.name, api_key=api_key, model_is_default=model_default, base_url_is_default=url_default,
        sources=sources, problems=tuple(problems), masks=tuple(Secret(m) for m in masks), **values,
    )


def _servers(name: str, raw: str, origin: Mapping[str, str], masks: tuple[str, ...], warn: bool,
             problems: list[str]) -> tuple[str, tuple[str, ...]]:
    """`{P}_BASE_URL` as (first URL, every URL); bad entries are one warning and left out,
    `BadValue` when none is left (then the default stays, as for any bad value)."""
    good, wrong = split_urls(raw)
    if not good:
        if len(wrong) == 1:
            raise wrong[0][1]
        raise BadValue("none of its entries is an http:// or https:// URL such as http://localhost:1234/v1")
    if wrong:
        where = " (from .env)" if origin.get(name) == ".env" else ""
        problems.append(_left_out(f"{name}={raw.strip()!r}{where}", raw, wrong, good, masks, warn, key=name))
    return good[0], good


def _left_out(what: str, raw: str, wrong: tuple[tuple[str, BadValue], ...], good: tuple[str, ...],
              masks: tuple[str, ...], warn: bool, key: str = "") -> str:
    """The one sentence about entries of a URL list that are not URLs (warned once)."""
    entries = ", ".join(repr(entry) for entry, _ in wrong)
    verb = "is" if len(wrong) == 1 else "are"
    problem = scrub(f"nbllm: {what} lists {entries}, which {verb} not valid ({wrong[0][1]}); leaving "
                    f"{'it' if len(wrong) == 1 else 'them'} out and using {', '.join(good)}.", masks)
    if warn:
        config_warning(problem, key=(key or what, raw))
    return problem


def load_global_settings(
    env: Mapping[str, str], user_config: Mapping[str, Any] | None = None, warn: bool = True,
    origin: Mapping[str, str] | None = None, file_problems: tuple[str, ...] | list[str] = (),
) -> GlobalSettings:
    """Every `NBLLM_*` variable (`GLOBALS`), then the saved default for provider and model."""
    origin = origin or {}
    masks = key_values(env)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems = list(file_problems)
    for var in GLOBALS.values():
        raw = env.get(var.name)
        if raw is None or not raw.strip():
            continue
        sources[var.name] = origin.get(var.name, "env")
        try:
            values[var.attr] = var.parse(raw)
        except BadValue as bad:
            problems.append(_bad(var.name, raw, bad, var.instead, origin, masks, warn))
    source = "NBLLM_PROVIDER" if "provider" in values else ""
    saved = (user_config or {}).get("default")
    if not source and isinstance(saved, dict) and is_name(saved.get("provider")):
        values["provider"], source = saved["provider"].strip(), "the saved default"
        sources["NBLLM_PROVIDER"] = "config"
        if "model" not in values and is_name(saved.get("model")):
            values["model"] = saved["model"].strip()
            sources["NBLLM_MODEL"] = "config"
    return GlobalSettings(**values, sources=sources, problems=tuple(problems), provider_source=source,
                          masks=tuple(Secret(m) for m in masks))


def global_variable_rows(settings: GlobalSettings, env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The `NBLLM_*` variables for `--list`, shaped like `ProviderRegistry.variables()` rows
    (provider 'nbllm'); values shown without keys or URL passwords."""
    masks = key_values(env)
    rows = []
    for var in GLOBALS.values():
        raw = (env.get(var.name) or "").strip()
        source = settings.sources.get(var.name, "")
        shown = raw if raw else (str(settings.value(var.name) or "") if source == "config" else "")
        shown = _ARG_KEYS.sub(r"\1***", scrub(shown, masks)) if shown else ""
        rows.append({"provider": "nbllm", "variable": var.name, "set": bool(raw), "source": source, "value": shown})
    return rows
