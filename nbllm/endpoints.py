"""The user's own endpoints and aliases: a hand-editable `nbllm.toml`, read and written here.

Two files are read: `nbllm.toml` beside the user config file (the user config
directory, or beside `NBLLM_CONFIG`), then `./nbllm.toml` in the working directory; for
the same entry the working-directory one wins (a project can point `fast` at its own
server). Why TOML: people edit it by hand, and nbllm's own changes (`--add`, `--alias`,
`nbllm.add_provider`…) go through tomlkit, so their comments and order survive.

    # ~/.config/nbllm/nbllm.toml  (or ./nbllm.toml)
    [providers.gpu]                         # a name: lower-case letters, digits and _
    base_url = "http://gpu:8000/v1"         # required; a comma list or an array is a fleet:
                                            #   base_url = ["http://a:8000/v1", "http://b:8000/v1"]
    kind = "local"                          # "local" (default: probed, model detected) or "cloud"
    protocol = "openai"                     # "openai" (default) or "anthropic"
    key_env = "LAB_TOKEN"                   # optional: another variable holding the key
                                            #   (read only from the user's file, not ./nbllm.toml)
    model = "qwen3-8b"                      # optional for local (detected); required for cloud
    label = "Lab GPU"                       # optional: the name tables show

    [aliases]
    fast = "groq:llama-3.1-8b-instant"      # provider:model
    local = "ollama,llamacpp,embedded"      # a fallback chain
    [aliases.robust]
    target = "openai,embedded"
    on = "any"                              # fall back on any error; default "transient"
                                            # (connection, timeout, 429, 5xx)

An endpoint is a provider like the built-in ones: it reads its `{NAME}_*` variables
(`GPU_API_KEY`, `GPU_MODEL`, `GPU_BASE_URL`, …; the environment and `.env` win over the
file) and shows in status, health, `--list` and the panel. A `model` written here is a
choice like `GPU_MODEL`: it wins over the model a local server reports. Keys and passwords
never go in this file: an `api_key` entry, or a `user:password@` in base_url, is ignored
with a warning (the URL is used without it), and nbllm refuses to write one.

`key_env` is read only from the user's own file: a `./nbllm.toml` comes with whatever
project is in the working directory (a cloned repository), and `key_env = "OPENAI_API_KEY"`
there would send that key to a host of the project's choice at the first probe. There it
is one warning and ignored (the endpoint still reads its own `{NAME}_API_KEY`). For the
same reason no endpoint may take a name whose `{NAME}_API_KEY` is another provider's key
(`xai`, `google`).

A bad entry is one warning naming the file, the entry and what is wrong, and that entry is
ignored; a fleet list with a bad URL in it is as lenient as `{NAME}_BASE_URL`: that URL is
named in the warning and left out, and the entry is ignored only when no URL is left. A
file that is not valid TOML is one warning with its line and column, and the whole file
is ignored.

This module is the config layer: it reads and writes files and checks entries; the
registry registers the specs and keeps the aliases, routing resolves them.
"""

from __future__ import annotations

import copy
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .catalog import AUTO, ProviderSpec, all_specs, key_env_names, parse_chain
from .config import config_warning, user_config_path
from .errors import ConfigurationError, display_url, scrub
from .settings_values import decode, os_reason, split_urls

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "FILE_NAME", "KINDS", "PROTOCOLS", "ON_CHOICES", "Alias", "Endpoints", "endpoints_paths", "read_endpoints",
    "endpoint_spec", "check_endpoint", "has_credentials", "borrowed_keys", "check_alias_name", "alias_cycle", "holds",
    "write_endpoint", "write_alias", "delete_entry",
]

FILE_NAME = "nbllm.toml"
KINDS = ("local", "cloud")
PROTOCOLS = ("openai", "anthropic")
ON_CHOICES = ("transient", "any")
ENDPOINT_KEYS = ("base_url", "kind", "protocol", "key_env", "model", "label", "price_input", "price_output")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME_FORM = "use a lower-case name of letters, digits and _ (not starting with a digit), such as gpu or lab_vllm"


@dataclass(frozen=True)
class Alias:
    """A name for a provider, `provider:model` or a chain; `on` says which failures move down a chain."""

    name: str
    target: str
    on: str = "transient"
    source: str = ""
    """The file it came from ("" when set for this process only)."""

    def __str__(self) -> str:
        return self.target


@dataclass(frozen=True)
class Endpoints:
    """What the endpoints files hold: the usable specs and aliases, and one sentence per ignored entry."""

    specs: tuple[ProviderSpec, ...] = ()
    aliases: dict[str, Alias] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    paths: tuple[Path, ...] = ()
    """The files read, user file first (whether or not they exist); one when the working directory is the
    user config directory."""


# ---- where ---------------------------------------------------------------------------

def endpoints_paths(env: Mapping[str, str], origin: Mapping[str, str] | None = None,
                    cwd: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """The user file (beside the user config file) and the working directory's file."""
    user = user_config_path(env, origin).with_name(FILE_NAME)
    here = Path(cwd) if cwd is not None else Path.cwd()
    return user, here / FILE_NAME


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


# ---- checking entries ----------------------------------------------------------------

def _reserved() -> set[str]:
    """Names an endpoint or alias may not take: built-in and plug-in providers, and `auto`."""
    return {spec.name for spec in all_specs() if spec.origin != "file"} | {AUTO}


def _name_problem(name: str, what: str) -> str | None:
    if not (name.isidentifier() and name == name.lower() and name.isascii()):
        return f"{name!r} cannot name {what}: {_NAME_FORM}"
    return None


def endpoint_spec(name: str, base_url: str, kind: str = "local", protocol: str = "openai",
                  key_env: tuple[str, ...] = (), model: str | None = None, label: str | None = None,
                  source: str = "", prices: Mapping[str, float] | None = None) -> ProviderSpec:
    """The catalog entry of a checked endpoint (probed like an OpenAI-compatible server when local).

    A `model` the user wrote is a choice, like `{NAME}_MODEL`: `extra["model_chosen"]` tells the
    settings reader, so a local server's detected model does not win over it.
    """
    extra = {"file": source} if source else {}
    if model:
        extra["model_chosen"] = "true"
    extra.update({key: str(value) for key, value in (prices or {}).items()})  # read by nbllm.prices
    return ProviderSpec(
        name=name, label=label or name, kind=kind,  # type: ignore[arg-type]
        default_model=model or "default", base_url=base_url,
        builder="anthropic" if protocol == "anthropic" else "openai_compatible",
        probe="openai" if kind == "local" else "key", key_env=key_env, auto_priority=50, origin="file",
        extra=extra,
    )


def check_endpoint(name: str, entry: Mapping[str, Any], source: str = "",
                   reserved: Iterable[str] | None = None,
                   credentials: bool = False) -> tuple[ProviderSpec | None, list[str]]:
    """An entry's spec (None when it cannot be used) and what is wrong with it, one phrase each.

    Phrases say what to do; the caller puts the file and entry in front. An unknown key, an
    `api_key` or a `user:password@` in base_url is a problem that leaves the rest usable (the
    URL without them); anything else makes it unusable. `credentials=True` keeps a URL's
    `user:password@` (an endpoint set for this process only, never written to a file).
    """
    reserved = _reserved() if reserved is None else set(reserved)
    problems: list[str] = []
    fatal = False
    bad_name = _name_problem(name, "an endpoint")
    if bad_name:
        problems.append(bad_name)
        fatal = True
    elif name in reserved:
        problems.append(f"{name!r} is already a provider of nbllm: choose another name "
                        f"(to move {name} elsewhere, set {name.upper()}_BASE_URL)")
        fatal = True
    else:
        own = f"{name.upper()}_API_KEY"
        owner = _key_owners().get(own)
        if owner is not None:
            problems.append(f"an endpoint named {name!r} would read {own}, {owner}'s key, as its own: choose "
                            f"another name")
            fatal = True
    for key in entry:
        if key == "api_key":
            problems.append(f"api_key is not read from this file (anyone who sees it sees the key): set "
                            f"{name.upper()}_API_KEY in the environment or .env instead")
        elif key not in ENDPOINT_KEYS:
            problems.append(f"unknown key {key!r} is ignored (known: {', '.join(ENDPOINT_KEYS)})")

    def text(key: str, choices: tuple[str, ...] | None = None) -> str | None:
        nonlocal fatal
        value = entry.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{key} must be a non-empty string" + (f" ({' or '.join(choices)})" if choices else ""))
            fatal = True
            return None
        value = value.strip()
        if choices is not None and value.lower() not in choices:
            problems.append(f"{key} = {value!r} is not one of {', '.join(choices)}")
            fatal = True
            return None
        return value.lower() if choices else value

    base_url = _base_url(entry.get("base_url"), problems)
    if base_url is not None and not credentials and has_credentials(base_url):
        problems.append(f"base_url has a user:password@, which is not read from this file (anyone who sees it "
                        f"sees the password): give the URL without it and set {name.upper()}_API_KEY, or put the "
                        f"whole URL in {name.upper()}_BASE_URL in the environment or .env")
        base_url = ",".join(dict.fromkeys(display_url(url) for url in base_url.split(",")))
    fatal = fatal or base_url is None
    kind = text("kind", KINDS) or "local"
    protocol = text("protocol", PROTOCOLS) or "openai"
    model, label = text("model"), text("label")
    prices = _prices(entry, problems)
    key_env = _key_env(entry.get("key_env"), problems)
    fatal = fatal or key_env is None
    if kind == "cloud" and model is None and "model" not in entry:
        problems.append('a cloud endpoint needs a model: model = "..." in the file, --model on a command line '
                        '(nbllm does not ask a paid service which to use)')
        fatal = True
    if fatal or base_url is None or key_env is None:
        return None, problems
    return endpoint_spec(name, base_url, kind, protocol, key_env, model, label, source, prices), problems


def _prices(entry: Mapping[str, Any], problems: list[str]) -> dict[str, float]:
    """`price_input` / `price_output`: USD per million tokens, a number from 0 (a bad one is left out, said why)."""
    prices: dict[str, float] = {}
    for key in ("price_input", "price_output"):
        value = entry.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100_000:
            problems.append(f"{key} = {value!r} is left out: give USD per million tokens as a number, e.g. "
                            f"{key} = 0.15")
            continue
        prices[key] = float(value)
    return prices


def _key_owners(but: str = "") -> dict[str, str]:
    """Each key variable of nbllm's built-in and plug-in providers → that provider (`but` left out)."""
    owners: dict[str, str] = {}
    for spec in all_specs():
        if spec.origin != "file" and spec.name != but:
            for var in key_env_names(spec):
                owners.setdefault(var, spec.name)
    return owners


def borrowed_keys(spec: ProviderSpec) -> list[tuple[str, str]]:
    """The key variables `spec` reads that belong to another provider, each with that provider
    (`key_env = "OPENAI_API_KEY"`: this endpoint is sent the OpenAI key — worth saying aloud)."""
    owners = _key_owners(but=spec.name)
    return [(var, owners[var]) for var in key_env_names(spec) if var in owners]


def has_credentials(url: str) -> bool:
    """Whether a URL (or a comma list of them) carries a `user:password@`, which never goes in a file."""
    return display_url(url) != url


def _base_url(value: Any, problems: list[str]) -> str | None:
    """One URL or a fleet (a comma list or an array of URLs) → the comma-joined text."""
    if value is None:
        problems.append('base_url is missing: add base_url = "http://host:8000/v1"')
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    if not isinstance(value, str):
        problems.append('base_url must be a URL or a list of URLs, such as "http://host:8000/v1"')
        return None
    good, bad = split_urls(value)  # lenient like {P}_BASE_URL: one typo does not take the fleet down
    if not good:
        if len(bad) == 1:
            problems.append(f"base_url: {bad[0][1]}")
        else:
            problems.append("base_url: none of its entries is an http:// or https:// URL such as "
                            "http://host:8000/v1")
        return None
    for entry, why in bad:
        problems.append(f"base_url lists {entry!r}, which is not a URL ({why}): it is left out")
    return ",".join(good)


def _key_env(value: Any, problems: list[str]) -> tuple[str, ...] | None:
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and _ENV_NAME.match(n.strip())
                                                           for n in names):
        problems.append("key_env must name an environment variable, such as key_env = \"LAB_TOKEN\"")
        return None
    return tuple(n.strip() for n in names)


def check_alias_name(name: str, providers: Iterable[str]) -> str | None:
    """What is wrong with `name` as an alias (it must not name a provider or `auto`), or None."""
    problem = _name_problem(name, "an alias")
    if problem:
        return problem
    if name == AUTO or name in set(providers):
        return f"{name!r} is a provider's name: an alias needs a name of its own"
    return None


def _check_alias(name: str, value: Any, providers: set[str], source: str) -> tuple[Alias | None, list[str]]:
    problems: list[str] = []
    on = "transient"
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in ("target", "on")]
        if unknown:
            problems.append(f"unknown key {unknown[0]!r} is ignored (known: target, on)")
        raw_on = value.get("on", "transient")
        if not isinstance(raw_on, str) or raw_on.strip().lower() not in ON_CHOICES:
            problems.append(f"on must be one of {', '.join(ON_CHOICES)}")
            return None, problems
        on, value = raw_on.strip().lower(), value.get("target")
    bad_name = check_alias_name(name, providers)
    if bad_name:
        return None, [bad_name, *problems]
    if not isinstance(value, str):
        return None, [*problems, 'the target must be a string such as "openai,embedded" or "groq:MODEL"']
    try:
        links = parse_chain(value)
    except ConfigurationError as exc:
        return None, [*problems, str(exc).rstrip(".")]
    return Alias(name, ",".join(str(link) for link in links), on, source), problems


def alias_cycle(name: str, aliases: Mapping[str, Any]) -> list[str] | None:
    """The loop of aliases `name` leads into (`["a", "b", "a"]`), or None; targets that do not parse are ends."""
    def walk(current: str, path: list[str]) -> list[str] | None:
        if current in path:
            return [*path[path.index(current):], current]
        alias = aliases.get(current)
        if alias is None:
            return None
        try:
            links = parse_chain(alias.target)
        except ConfigurationError:
            return None
        for link in links:
            loop = walk(link.provider, [*path, current])
            if loop:
                return loop
        return None

    return walk(name, [])


# ---- reading -------------------------------------------------------------------------

def _load(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed file (None if absent or unusable) and why it is unusable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"nbllm: ignoring the endpoints file {path}: {os_reason(exc)}."
    text, problem = decode(data, f"the endpoints file {path}")
    if text is None:
        return None, problem
    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as exc:
        return None, (f"nbllm: ignoring the endpoints file {path}: it is not valid TOML ({exc}); "
                      "fix that line (every entry in it is ignored until then).")


def _servers(spec: ProviderSpec) -> set[str]:
    """Where an endpoint's requests (and its key) go: scheme, host and port of each server."""
    return {f"{p.scheme}://{p.hostname}:{p.port}" for p in (urlsplit(u.strip()) for u in spec.base_url.split(","))}


def read_endpoints(env: Mapping[str, str], origin: Mapping[str, str] | None = None,
                   cwd: str | os.PathLike[str] | None = None) -> Endpoints:
    """Both endpoints files, checked; never raises. Each bad entry is one warning (and in `.problems`)."""
    user, here = endpoints_paths(env, origin, cwd)
    files = [user] + ([here] if not _same(user, here) else [])  # the working directory may be the config dir
    reserved = _reserved()
    problems: list[str] = []

    def warn(problem: str) -> None:
        problem = scrub(problem)
        problems.append(problem)
        config_warning(problem, key=("endpoints", problem))

    specs: dict[str, ProviderSpec] = {}
    raw_aliases: list[tuple[Path, str, Any]] = []
    for path in files:
        data, problem = _load(path)
        if problem:
            warn(problem)
        if not data:
            continue
        for section in data:
            if section not in ("providers", "aliases"):
                warn(f"nbllm: {path}: unknown section [{section}] is ignored (known: [providers.NAME], [aliases]).")
        providers = data.get("providers", {})
        if not isinstance(providers, dict):
            warn(f"nbllm: {path}: providers must be tables like [providers.gpu]; they are ignored.")
            providers = {}
        for name, entry in providers.items():
            where = f"nbllm: {path} [providers.{name}]"
            if not isinstance(entry, dict):
                warn(f'{where}: expected a table with base_url = "..."; this entry is ignored.')
                continue
            wrong_here: list[str] = []
            if path != user and "key_env" in entry:
                entry = {k: v for k, v in entry.items() if k != "key_env"}
                wrong_here.append(f"key_env is not read from the working directory's file (a project you cloned "
                                  f"could send any of your keys to a server of its choice): move this entry to "
                                  f"{user}, or set {name.upper()}_API_KEY")
            spec, wrong = check_endpoint(name, entry, str(path), reserved)
            wrong = wrong_here + wrong
            if wrong:
                tail = "this entry is ignored" if spec is None else "the rest of the entry is used"
                warn(f"{where}: {'; '.join(wrong)}; {tail}.")
            keyed = name in specs and [k for k in key_env_names(specs[name]) if (env.get(k) or "").strip()]
            if spec is not None and path != user and keyed and _servers(specs[name]) != _servers(spec):
                warn(f"{where}: it moves your endpoint {name!r} from {user} to other servers "
                     f"({display_url(spec.base_url)}), which would receive its key ({keyed[0]}); "
                     f"yours is kept. Change the address in {user} if you mean it.")
                continue
            if spec is not None:
                specs[name] = spec
        aliases = data.get("aliases", {})
        if not isinstance(aliases, dict):
            warn(f'nbllm: {path}: aliases must be a table, [aliases] with fast = "provider:model"; ignored.')
            aliases = {}
        raw_aliases += [(path, name, value) for name, value in aliases.items()]

    names = reserved | set(specs)
    found: dict[str, Alias] = {}
    for path, name, value in raw_aliases:
        alias, wrong = _check_alias(name, value, names, str(path))
        if wrong:
            tail = "this alias is ignored" if alias is None else "the rest is used"
            warn(f"nbllm: {path} [aliases] {name}: {'; '.join(wrong)}; {tail}.")
        if alias is not None:
            found[name] = alias  # the working directory's file comes last and wins
    for name in list(found):
        loop = alias_cycle(name, found) if name in found else None
        if loop:
            for member in set(loop):
                found.pop(member, None)
            warn(f"nbllm: {_loop_files(loop, raw_aliases)} [aliases]: {' → '.join(loop)} is a loop; "
                 f"these aliases are ignored until one of them names a provider.")
    return Endpoints(tuple(specs.values()), found, tuple(problems), tuple(files))


def _loop_files(loop: list[str], raw: list[tuple[Path, str, Any]]) -> str:
    """The file(s) holding the aliases of a loop, for its warning."""
    return " and ".join(dict.fromkeys(str(p) for p, n, _ in raw if n in loop))


def holds(path: Path, section: str, name: str) -> bool:
    """Whether the file has an entry `name` in `section` ("providers" or "aliases"), valid or not."""
    data, _ = _load(path)
    entries = (data or {}).get(section)
    return isinstance(entries, dict) and name in entries


# ---- writing (tomlkit keeps comments and order) ----------------------------------------
#
# A section may be in several places: `[providers.a]`, `[aliases]`, `[providers.b]` is what a
# user gets by appending an entry by hand. tomlkit shows such a section as a proxy over its
# tables; every change here is made to the one real table that holds the entry (or, for a
# new one, the last table of its section). tomlkit keeps the comment lines above a
# `[header]` at the end of the table before it, and indexes a table's body by position:
# lines are only replaced in place (by `Null`, which renders as nothing) or appended.
# Every change is read back before it is saved: a layout this code does not foresee
# gets one line saying so, and the file is left as it was.

def _document(path: Path) -> tuple[Any, dict[str, Any]]:
    """The file as a tomlkit document and as plain data ({} for a file not there yet)."""
    import tomlkit

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return tomlkit.document(), {}
    except (OSError, UnicodeDecodeError) as exc:
        reason = os_reason(exc) if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigurationError(f"Cannot change {path}: {reason}; nothing was changed.") from None
    try:
        return tomlkit.parse(text), tomllib.loads(text)
    except Exception as exc:  # tomlkit's ParseError and tomllib's say line and column
        raise ConfigurationError(f"Cannot change {path}: it is not valid TOML ({exc}); fix it first, "
                                 "nothing was changed.") from None


def _save(path: Path, text: str) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of either."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".nbllm-", suffix=".toml", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            if path.exists():
                os.chmod(tmp, path.stat().st_mode & 0o7777)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigurationError(f"Cannot save {path}: {os_reason(exc)}; nothing was changed.") from None


def _pruned(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without empty sections (a section whose last entry went renders as nothing)."""
    return {k: v for k, v in data.items() if not (k in ("providers", "aliases") and v == {})}


def _edit(path: Path, what: str, change: Callable[[Any], None], expect: Callable[[dict[str, Any]], None]) -> None:
    """Make `change` to the file's document and save it, only if it then reads as `expect` makes of the
    old data: anything else (a layout tomlkit or this code mishandles) is one line, and no change."""
    import tomlkit

    doc, before = _document(path)
    wanted = copy.deepcopy(before)
    expect(wanted)
    try:
        change(doc)
        text = tomlkit.dumps(doc).rstrip("\n")
        text = text + "\n" if text.strip() else ""
        ok = _pruned(tomllib.loads(text)) == _pruned(wanted)
    except Exception:
        ok = False
    if not ok:
        raise ConfigurationError(f"Cannot {what} {path}: nbllm cannot edit the way this file is laid out "
                                 "without risk to the rest, so nothing was changed; make the change by hand.")
    _save(path, text)


def _tables(doc: Any, section: str) -> list[Any]:
    """The real tables of `section` in file order (several when the section is split)."""
    from tomlkit.items import Table

    return [v for k, v in doc.body if k is not None and k.key == section and isinstance(v, Table)]


def _holder(doc: Any, section: str, name: str) -> Any:
    """The real table of `section` that holds entry `name`, or None."""
    return next((table for table in _tables(doc, section) if name in table), None)


def _index(body: list[Any], item: Any) -> int:
    return next(i for i, (_, v) in enumerate(body) if v is item)


def _last_key(body: list[Any], before: int) -> int | None:
    return next((i for i in range(before - 1, -1, -1) if body[i][0] is not None), None)


def _end_of(table: Any) -> tuple[list[Any], int]:
    """Where the lines after a table's last line are kept: the end of its last sub-table's body, if it ends with one."""
    from tomlkit.items import Null, Table

    body = table.value.body
    last = _last_key(body, len(body))
    if last is not None and isinstance(body[last][1], Table) and all(isinstance(v, Null) for _, v in body[last + 1:]):
        return _end_of(body[last][1])
    return body, len(body)


def _lines_above(doc: Any, holder: Any, at: int) -> tuple[list[Any], int]:
    """The body holding the lines right above entry `at` of `holder`, and the position they end at."""
    from tomlkit.items import Null, Table

    body = holder.value.body
    if not isinstance(body[at][1], Table):  # a key: its comments are just above it, in its table
        return body, at
    prev = _last_key(body, at)
    between = [v for _, v in body[(0 if prev is None else prev + 1):at] if not isinstance(v, Null)]
    if between or (prev is None and not holder.is_super_table()):
        return body, at
    if prev is not None:
        return _end_of(body[prev][1]) if isinstance(body[prev][1], Table) else (body, at)
    # The first [section.name] of its group: the lines above are the document's, or the end of the table before.
    index = _index(doc.body, holder)
    dprev = _last_key(doc.body, index)
    dbetween = [v for _, v in doc.body[(0 if dprev is None else dprev + 1):index] if not isinstance(v, Null)]
    if dbetween or dprev is None or not isinstance(doc.body[dprev][1], Table):
        return doc.body, index
    return _end_of(doc.body[dprev][1])


def _last_line(body: list[Any], end: int) -> Any:
    """The last item before `end` that renders (None if there is none)."""
    from tomlkit.items import Null

    return next((v for _, v in reversed(body[:end]) if not isinstance(v, Null)), None)


def _blank_before(doc: Any, holder: Any, body: list[Any], end: int) -> bool:
    """Whether the text before position `end` of `body` (a leaf of `holder`) is nothing or ends with a blank line."""
    from tomlkit.items import Table, Whitespace

    last = _last_line(body, end)
    if last is not None:
        return isinstance(last, Whitespace)
    if body is not holder.value.body or not holder.is_super_table():  # a [header] line is just above
        return False
    index = _index(doc.body, holder)
    last = _last_line(doc.body, index)
    if isinstance(last, Table):
        last = _last_line(*_end_of(last))
    return last is None or isinstance(last, Whitespace)


def _delete(doc: Any, section: str, name: str) -> None:
    """Remove an entry with the comment lines right above it (they are about it), and keep
    the comments after its last line (in the file they introduce the next entry)."""
    from tomlkit.items import Comment, Null, Table, Trivia, Whitespace

    holder = _holder(doc, section, name)
    body = holder.value.body
    at = next(i for i, (k, _) in enumerate(body) if k is not None and k.key == name)
    item = body[at][1]
    trailing = ""
    if isinstance(item, Table):
        for k, v in reversed(item.value.body):
            if k is not None:
                break
            trailing = v.as_string() + trailing
    above, end = _lines_above(doc, holder, at)
    start = end
    while start > 0 and above[start - 1][0] is None and isinstance(above[start - 1][1], (Comment, Null)):
        start -= 1
    if above is doc.body and start == 0:  # the file's own opening comment is about the file
        start = end
    for i in range(start, end):
        above[i] = (None, Null())
    del holder[name]
    if "#" not in trailing:
        return
    before = _last_line(above, start)
    if before is None or isinstance(before, Whitespace):  # one blank line is enough
        trailing = trailing.lstrip("\n")
    kept = (None, Comment(Trivia(comment_ws="", comment=trailing[:-1] if trailing.endswith("\n") else trailing,
                                 trail="\n")))
    if above is body:
        body[at] = kept  # the entry's own place, a Null since the `del`
    elif above is doc.body:  # a line in a [section] of only [section.x] tables would print [section]: put it above
        doc.body.insert(end, kept)  # shifts positions tomlkit indexes; the document is only written after this
    else:
        above.append(kept)


def _add_table(doc: Any, holder: Any, name: str, table: Any) -> None:
    """Append `[section.name]` to `holder` with one blank line before it, and one after it when more
    follows; the comment lines right above what follows (they are about it) move below the new table."""
    from tomlkit.items import Comment, Null, Whitespace

    body, end = _end_of(holder)
    index = _index(doc.body, holder)
    follows = any(not isinstance(v, Null) for _, v in doc.body[index + 1:])
    start = end
    while follows and start > 0 and body[start - 1][0] is None and isinstance(body[start - 1][1], (Comment, Null)):
        start -= 1
    moved = [v for _, v in body[start:end] if not isinstance(v, Null)]
    for i in range(start, end):
        body[i] = (None, Null())
    blank = _blank_before(doc, holder, body, start)
    holder[name] = table
    table.trivia.indent = "" if blank else "\n"
    if follows:
        table.value.append(None, Whitespace("\n"))
    for line in moved:
        table.value.append(None, line)


def _section(doc: Any, name: str, super_table: bool) -> Any:
    """The last real table of section `name`, made at the end of the file if there is none."""
    import tomlkit

    tables = _tables(doc, name)
    if tables:
        return tables[-1]
    doc[name] = tomlkit.table(is_super_table=super_table)
    table = _tables(doc, name)[-1]
    if super_table:
        table.trivia.indent = ""  # its first [name.x] carries the blank line
    return table


def _set(table: Any, key: str, value: Any) -> None:
    """Set `key`; a new key goes after the last one, before comments that belong to the next entry."""
    import tomlkit

    if key in table:
        table[key] = value
        return
    body = getattr(getattr(table, "value", None), "body", None)
    plain = [k.key for k, v in body or () if k is not None and not isinstance(v, tomlkit.items.Table)]
    try:
        if plain:
            table.value._insert_after(plain[-1], key, tomlkit.item(value))
            return
    except Exception:  # tomlkit's private helper changed: appending is still correct TOML
        pass
    table[key] = value


def write_endpoint(path: Path, name: str, entry: Mapping[str, Any]) -> bool:
    """Add or replace `[providers.NAME]` (keys with value None are removed); True if it was new."""
    import tomlkit

    new = not holds(path, "providers", name)

    def change(doc: Any) -> None:
        holder = _holder(doc, "providers", name)
        if holder is None:
            table = tomlkit.table()
            for key, value in entry.items():
                if value is not None:
                    table[key] = value
            _add_table(doc, _section(doc, "providers", True), name, table)
            return
        table = holder[name]
        for key, value in entry.items():
            if value is None:
                if key in table:
                    del table[key]
            else:
                _set(table, key, value)

    def expect(data: dict[str, Any]) -> None:
        providers = data.setdefault("providers", {})
        current = dict(providers.get(name) or {})
        for key, value in entry.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = list(value) if isinstance(value, (list, tuple)) else value
        providers[name] = current

    _edit(path, f"{'add' if new else 'change'} [providers.{name}] in", change, expect)
    return new


def delete_entry(path: Path, section: str, name: str) -> bool:
    """Remove `[providers.NAME]` or alias `NAME` (`section` "providers" or "aliases") from the file;
    False if it was not there."""
    if not holds(path, section, name):
        return False
    what = f"[providers.{name}]" if section == "providers" else f"alias {name}"
    _edit(path, f"remove {what} from", lambda doc: _delete(doc, section, name),
          lambda data: data[section].pop(name))
    return True


def write_alias(path: Path, name: str, target: str, on: str = "transient") -> None:
    """`name = "target"` in `[aliases]`, or an `[aliases.NAME]` table when `on` is not the default."""
    import tomlkit
    from tomlkit.items import InlineTable, Table

    def change(doc: Any) -> None:
        holder = _holder(doc, "aliases", name)
        value = holder[name] if holder is not None else None
        if on == "transient":
            if isinstance(value, (Table, InlineTable)):
                del holder[name]
                holder = None
            if holder is None:  # a key goes in the [aliases] table that has keys (the first), else is made
                tables = _tables(doc, "aliases")
                holder = next((t for t in tables if not t.is_super_table()), tables[0] if tables else None)
            if holder is None:
                holder = _section(doc, "aliases", False)
            _set(holder, name, target)
        elif isinstance(value, (Table, InlineTable)):
            value["target"], value["on"] = target, on
        else:
            if holder is not None:
                del holder[name]
            table = tomlkit.table()
            table["target"], table["on"] = target, on
            _add_table(doc, _section(doc, "aliases", False), name, table)

    def expect(data: dict[str, Any]) -> None:
        aliases = data.setdefault("aliases", {})
        current = aliases.get(name)
        if on == "transient":
            aliases[name] = target
        else:
            aliases[name] = {**(current if isinstance(current, dict) else {}), "target": target, "on": on}

    _edit(path, f"set alias {name} in", change, expect)


