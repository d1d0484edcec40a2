"""What `--list` shows: the variables nbllm reads, set ones first, with the defaults used otherwise.

Why a module of its own: a list of every variable of every provider (17 providers × 11
variables) answered "no" in almost every row and never said what would be used instead.
Here each variable becomes a `Setting` (its value when set — keys masked, never the key —,
where it came from, and its default), and `shown` picks what a person needs: per provider
the key, the model and the base URL (set or defaulted) and whatever else is set; the
defaults every provider shares once; the `NBLLM_*` variables that are set. `everything=True`
(`--list --all`) shows every variable with its default. The rows are plain data for the
one table renderer (`nbllm.tables`) and for `--json`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .catalog import ProviderSpec, key_env_names
from .config import GLOBALS, GlobalSettings, ProviderSettings, global_variable_rows
from .errors import display_url
from .registry import ProviderRegistry, get_registry
from .settings_values import FIELDS

__all__ = ["Setting", "provider_settings", "global_settings", "shared_defaults", "shown", "SHARED", "KEPT"]

SHARED = ("ENABLED", "WEIGHT", "MAX_TOKENS", "TEMPERATURE", "TIMEOUT", "MAX_RETRIES", "PRICE_INPUT", "PRICE_OUTPUT")
"""Suffixes whose default is the same for every provider: said once, not in every provider's block."""
KEPT = ("MODEL", "BASE_URL")
"""Suffixes each provider's block always shows (their defaults differ per provider)."""
NOT_SET = "not set"
_SOURCES = {"file": "nbllm.toml"}
"""Where a set value came from, as the `from` column says it (env, .env and config are shown as they are)."""


@dataclass
class Setting:
    """One variable: `value` as set (masked; "" when not set), `source` (env, .env, config, file;
    "" when not set), `default` (what is used when it is not set, in words; "" for nothing) and
    `problem` (why a set value was not used, and what is used instead)."""

    provider: str
    variable: str
    set: bool
    source: str
    value: str
    default: str
    problem: str = ""
    key: bool = False

    def row(self) -> dict[str, Any]:
        """The row `--list` draws: the value used (set or default), where it came from, a note."""
        if self.set:
            note = self.problem or (f"default {self.default}" if self.default and self.default != self.value else "")
            return {"provider": self.provider, "variable": self.variable, "value": self.value,
                    "from": _SOURCES.get(self.source, self.source), "note": note}
        value = self.default or NOT_SET
        return {"provider": self.provider, "variable": self.variable, "value": value,
                "from": "default" if self.default else "", "note": ""}


def _word(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)  # as it is typed in a variable: 1024, not 1,024
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


_BLANK = ProviderSettings(provider="")


def _default(spec: ProviderSpec, suffix: str, attr: str) -> str:
    """What a provider uses when `{P}_{suffix}` is not set, in words."""
    if suffix == "MODEL":
        if spec.kind != "local" or spec.prepare or spec.extra.get("model_chosen") == "true":
            return spec.default_model
        placeholder = spec.default_model in ("", "default", "local-model")
        return "detected from the server" + ("" if placeholder else f" (else {spec.default_model})")
    if suffix == "BASE_URL":
        if spec.prepare:
            return "started by nbllm"
        return display_url(spec.base_url) if spec.base_url else ""
    if suffix.startswith("PRICE_"):
        return "genai-prices' data" if spec.kind == "cloud" else "0 (local)"
    return _word(getattr(_BLANK, attr))


def _problem(settings_problems: tuple[str, ...], variable: str) -> str:
    """The warning about `variable` as the row's note: "not valid; using the default 0.7" (the
    whole sentence, with the accepted form, is the warning and the `--list` message above the table)."""
    for text in settings_problems:
        if f"{variable}=" in text:
            _, _, instead = text.rpartition("; using ")
            return f"not valid; using {instead.rstrip('.')}" if instead else "not valid (see the warning above)"
    return ""


def provider_settings(name: str, registry: ProviderRegistry | None = None) -> list[Setting]:
    """Every variable provider `name` reads, each with its value (masked), source and default."""
    registry = registry or get_registry()
    spec = registry.spec(name)
    settings = registry.settings(spec.name)
    read = {row["variable"]: row for row in registry.variables(spec.name)}
    keys = key_env_names(spec)
    suffixes = {f"{spec.env_prefix}_{f.suffix}": (f.suffix, f.attr) for f in FIELDS}
    found = []
    for variable, row in read.items():
        source = row.get("source") or ""
        is_set = bool(row.get("set")) or source == "config"
        value = str(row.get("value") or "")
        default = ""
        if variable in suffixes:
            suffix, attr = suffixes[variable]
            default = _default(spec, suffix, attr)
            if source == "config" and not value:  # a saved --disable
                value = _word(getattr(settings, attr))
            in_file = _from_file(spec, suffix)
            if in_file and not is_set:  # an endpoint's own base URL (or chosen model) in nbllm.toml
                is_set, source, value, default = True, "file", in_file, ""
        found.append(Setting(spec.name, variable, is_set, source, value, default,
                             _problem(settings.problems, variable) if is_set else "", variable in keys))
    return found


def _from_file(spec: ProviderSpec, suffix: str) -> str:
    """What the endpoints file says for `suffix` of one of its endpoints (base URL, a chosen model), else ""."""
    if spec.origin != "file":
        return ""
    if suffix == "BASE_URL":
        return ",".join(display_url(url) for url in spec.base_url.split(","))
    if suffix == "MODEL" and spec.extra.get("model_chosen") == "true":
        return spec.default_model
    return ""


def _global_default(name: str, settings: GlobalSettings, registry: ProviderRegistry) -> str:
    from .store import data_file

    attr = GLOBALS[name].attr
    special = {"NBLLM_MODEL": "each provider's own", "NBLLM_EMBEDDED_MODEL": "the bundled SmolLM2",
               "NBLLM_EMBEDDED_ARGS": "no extra options"}
    if name in special:
        return special[name]
    if name == "NBLLM_CONFIG":
        from .config import user_config_path

        return str(user_config_path({}, {}))
    files = {"NBLLM_HISTORY": "history.sqlite", "NBLLM_CACHE": "cache.sqlite", "NBLLM_JOBS": "jobs.sqlite"}
    if name in files:
        return str(data_file(None, files[name]))
    default = next(f.default for f in fields(GlobalSettings) if f.name == attr)
    return _word(default)


def global_settings(registry: ProviderRegistry | None = None) -> list[Setting]:
    """Every `NBLLM_*` variable with its value (masked), source and default."""
    registry = registry or get_registry()
    settings = registry.global_settings
    found = []
    for row in global_variable_rows(settings, registry.environment):
        name = row["variable"]
        is_set = bool(row["set"]) or row["source"] == "config"
        found.append(Setting("nbllm", name, is_set, row["source"], str(row["value"] or ""),
                             _global_default(name, settings, registry),
                             _problem(settings.problems, name) if is_set else ""))
    return found


def shared_defaults() -> list[dict[str, Any]]:
    """The defaults every provider uses unless its own variable is set: one row each."""
    rows = []
    for f in FIELDS:
        if f.suffix in SHARED:
            default = "genai-prices' data (0 for local servers)" if f.suffix.startswith("PRICE_") \
                else _word(getattr(_BLANK, f.attr))
            rows.append({"variable": f"{{P}}_{f.suffix}", "value": default, "means": f.doc})
    return rows


def shown(settings: list[Setting], everything: bool = False) -> list[Setting]:
    """What `--list` shows of one provider's (or nbllm's) variables.

    Without `everything`: whatever is set; the provider's first key variable, model and base
    URL (a cloud provider without a key says so); for `NBLLM_*`, only what is set.
    """
    if everything:
        return settings
    kept = []
    for s in settings:
        own_key = s.key and s.variable == f"{s.provider.upper()}_API_KEY"
        always = s.provider != "nbllm" and s.variable.endswith(("_MODEL", "_BASE_URL"))
        if s.set or own_key or always:
            kept.append(s)
    return kept


def records(settings: list[Setting]) -> list[dict[str, Any]]:
    """The JSON of `--list --json`: every field of each setting (the value masked)."""
    return [{k: v for k, v in asdict(s).items() if k != "key"} for s in settings]


PROVIDER_COLUMNS = ["provider", "variable", "value", "from", "note"]
NBLLM_COLUMNS = ["variable", "value", "from", "note"]


def _rows(settings: list[Setting], caption: bool) -> list[dict[str, Any]]:
    """Rows of one block; with `caption` the provider's name only on its first row (the block reads as one)."""
    rows = [s.row() for s in settings]
    if caption:
        for row in rows[1:]:
            row["provider"] = ""
    return rows


def _table(rows: list[dict[str, Any]], columns: list[str]) -> Any:
    """A Table of `columns`, less the note column when no row has a note."""
    from . import tables

    return tables.table(rows, [c for c in columns if c != "note" or any(row.get("note") for row in rows)])


def _label(name: str, registry: ProviderRegistry) -> str:
    return name if registry.settings(name).enabled else f"{name} (disabled)"


def listing(everything: bool = False, registry: ProviderRegistry | None = None) -> dict[str, Any]:
    """What `--list` (`everything`: `--list --all`) shows, as Tables and as data.

    Returns `providers` (one table, a block of rows per provider), `more` (captioned tables:
    the defaults every provider shares — only without `everything`, where rows leave them
    out — and the `NBLLM_*` variables) and `records` (every variable, for --json).
    """
    from . import tables

    registry = registry or get_registry()
    every: list[Setting] = []
    rows: list[dict[str, Any]] = []
    for name in registry.names():
        found = provider_settings(name, registry)
        every += found
        block = _rows(shown(found, everything), caption=True)
        if block:
            block[0]["provider"] = _label(name, registry)
        rows += block
    nbllm_settings = global_settings(registry)
    every += nbllm_settings
    more: list[tuple[str, Any]] = []
    if not everything:
        more.append(("unless set, every provider uses:",
                     tables.table(shared_defaults(), ["variable", "value", "means"])))
    picked = shown(nbllm_settings, everything)
    if picked:
        more.append(("NBLLM_* variables:", _table(_rows(picked, caption=False), NBLLM_COLUMNS)))
    else:
        none = {"variable": "(none set)", "value": "", "from": "",
                "note": f"--list --all shows all {len(nbllm_settings)} with their defaults"}
        more.append(("NBLLM_* variables:", tables.table([none], NBLLM_COLUMNS)))
    return {"providers": _table(rows, PROVIDER_COLUMNS), "more": more, "records": records(every)}
