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
file) and shows in status, health, `--list` and the panel. Keys never go in this file:
an `api_key` entry is ignored with a warning. A bad entry is one warning naming the file,
the entry and what is wrong, and that entry is ignored; a file that is not valid TOML is
one warning with its line and column, and the whole file is ignored.

This module is the config layer: it reads and writes files and checks entries; the
registry registers the specs and keeps the aliases, routing resolves them.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import AUTO, ProviderSpec, all_specs, parse_chain
from .config import config_warning, user_config_path
from .errors import ConfigurationError, scrub
from .settings_values import BadValue, decode, os_reason, to_urls

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "FILE_NAME", "KINDS", "PROTOCOLS", "ON_CHOICES", "Alias", "Endpoints", "endpoints_paths", "read_endpoints",
    "endpoint_spec", "check_endpoint", "check_alias_name", "alias_cycle", "holds", "write_endpoint",
    "delete_endpoint", "write_alias", "delete_alias",
]

FILE_NAME = "nbllm.toml"
KINDS = ("local", "cloud")
PROTOCOLS = ("openai", "anthropic")
ON_CHOICES = ("transient", "any")
ENDPOINT_KEYS = ("base_url", "kind", "protocol", "key_env", "model", "label")
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
    """The files read, user file first (whether or not they exist)."""


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
                  source: str = "") -> ProviderSpec:
    """The catalog entry of a checked endpoint (probed like an OpenAI-compatible server when local)."""
    return ProviderSpec(
        name=name, label=label or name, kind=kind,  # type: ignore[arg-type]
        default_model=model or "default", base_url=base_url,
        builder="anthropic" if protocol == "anthropic" else "openai_compatible",
        probe="openai" if kind == "local" else "key", key_env=key_env, auto_priority=50, origin="file",
        extra={"file": source} if source else {},
    )


def check_endpoint(name: str, entry: Mapping[str, Any], source: str = "",
                   reserved: Iterable[str] | None = None) -> tuple[ProviderSpec | None, list[str]]:
    """An entry's spec (None when it cannot be used) and what is wrong with it, one phrase each.

    Phrases say what to do; the caller puts the file and entry in front. An unknown key or
    an `api_key` is a problem that leaves the rest usable; anything else makes it unusable.
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
    fatal = fatal or base_url is None
    kind = text("kind", KINDS) or "local"
    protocol = text("protocol", PROTOCOLS) or "openai"
    model, label = text("model"), text("label")
    key_env = _key_env(entry.get("key_env"), problems)
    fatal = fatal or key_env is None
    if kind == "cloud" and model is None and "model" not in entry:
        problems.append('a cloud endpoint needs a model: model = "..." in the file, --model on a command line '
                        '(nbllm does not ask a paid service which to use)')
        fatal = True
    if fatal or base_url is None or key_env is None:
        return None, problems
    return endpoint_spec(name, base_url, kind, protocol, key_env, model, label, source), problems


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
    try:
        return ",".join(to_urls(value))
    except BadValue as bad:
        problems.append(f"base_url: {bad}")
        return None


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


def read_endpoints(env: Mapping[str, str], origin: Mapping[str, str] | None = None,
                   cwd: str | os.PathLike[str] | None = None) -> Endpoints:
    """Both endpoints files, checked; never raises. Each bad entry is one warning (and in `.problems`)."""
    paths = endpoints_paths(env, origin, cwd)
    files = [paths[0]] + ([paths[1]] if not _same(*paths) else [])
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
            spec, wrong = check_endpoint(name, entry, str(path), reserved)
            if wrong:
                tail = "this entry is ignored" if spec is None else "the rest of the entry is used"
                warn(f"{where}: {'; '.join(wrong)}; {tail}.")
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
    return Endpoints(tuple(specs.values()), found, tuple(problems), tuple(paths))


def _loop_files(loop: list[str], raw: list[tuple[Path, str, Any]]) -> str:
    """The file(s) holding the aliases of a loop, for its warning."""
    return " and ".join(dict.fromkeys(str(p) for p, n, _ in raw if n in loop))


def holds(path: Path, section: str, name: str) -> bool:
    """Whether the file has an entry `name` in `section` ("providers" or "aliases"), valid or not."""
    data, _ = _load(path)
    entries = (data or {}).get(section)
    return isinstance(entries, dict) and name in entries


# ---- writing (tomlkit keeps comments and order) ----------------------------------------

def _document(path: Path) -> Any:
    import tomlkit

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return tomlkit.document()
    except (OSError, UnicodeDecodeError) as exc:
        reason = os_reason(exc) if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigurationError(f"Cannot change {path}: {reason}; nothing was changed.") from None
    try:
        return tomlkit.parse(text)
    except Exception as exc:  # tomlkit's ParseError says line and column
        raise ConfigurationError(f"Cannot change {path}: it is not valid TOML ({exc}); fix it first, "
                                 "nothing was changed.") from None


def _save(path: Path, doc: Any) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of either."""
    import tomlkit

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".nbllm-", suffix=".toml", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(tomlkit.dumps(doc))
            if path.exists():
                os.chmod(tmp, path.stat().st_mode & 0o7777)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigurationError(f"Cannot save {path}: {os_reason(exc)}; nothing was changed.") from None


def _section(doc: Any, name: str, super_table: bool) -> Any:
    import tomlkit

    if name not in doc:
        doc[name] = tomlkit.table(is_super_table=super_table)
    return doc[name]


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


def _delete(container: Any, key: str, doc: Any, parent_key: str) -> None:
    """Remove an entry with the comment lines right above its header (they are about it), and keep
    the comments after its last line (in the file they introduce the next entry).

    tomlkit keeps a table's trailing comments in that table, and indexes its body by position:
    lines are only replaced in place (by `Null`, which renders as nothing) or appended at an end.
    """
    from tomlkit.items import Comment, Null, Table, Trivia

    body = container.value.body
    at = next(i for i, (k, _) in enumerate(body) if k is not None and k.key == key)
    item = body[at][1]
    trailing = ""
    if isinstance(item, Table):
        for k, v in reversed(item.value.body):
            if k is not None:
                break
            trailing = v.as_string() + trailing
    previous = next((v for k, v in reversed(body[:at]) if k is not None), None)
    first_child = isinstance(container, Table) and container.is_super_table() and previous is None
    if isinstance(previous, Table):  # the lines above the header end the previous entry
        above, end = previous.value.body, len(previous.value.body)
    elif first_child:  # the first [parent.name]: the lines above it are the document's
        above = doc.body
        end = next(i for i, (k, _) in enumerate(doc.body) if k is not None and k.key == parent_key)
    else:
        above, end = body, at
    start = end
    while start > 0 and above[start - 1][0] is None and isinstance(above[start - 1][1], Comment):
        start -= 1
    if above is doc.body and start == 0:  # the file's own opening comment is about the file
        start = end
    for i in range(start, end):
        above[i] = (None, Null())
    del container[key]
    if "#" not in trailing:
        return
    kept = (None, Comment(Trivia(comment_ws="", comment=trailing[:-1] if trailing.endswith("\n") else trailing,
                                 trail="\n")))
    if isinstance(previous, Table):
        previous.value.body.append(kept)
    elif first_child:  # a line in a [parent] of only [parent.x] tables would print [parent]: put it above
        doc.body.insert(end, kept)  # shifts positions tomlkit indexes; the document is only written after this
    else:
        body[at] = kept


def write_endpoint(path: Path, name: str, entry: Mapping[str, Any]) -> bool:
    """Add or replace `[providers.NAME]` (keys with value None are removed); True if it was new."""
    import tomlkit

    doc = _document(path)
    providers = _section(doc, "providers", True)
    new = name not in providers
    if new:
        table = tomlkit.table()
        for key, value in entry.items():
            if value is not None:
                table[key] = value
        providers[name] = table
    else:
        table = providers[name]
        for key, value in entry.items():
            if value is None:
                if key in table:
                    del table[key]
            else:
                _set(table, key, value)
    _save(path, doc)
    return new


def delete_endpoint(path: Path, name: str) -> bool:
    """Remove `[providers.NAME]` from the file; False if it was not there."""
    if not path.exists():
        return False
    doc = _document(path)
    providers = doc.get("providers")
    if providers is None or name not in providers:
        return False
    _delete(providers, name, doc, "providers")
    _save(path, doc)
    return True


def write_alias(path: Path, name: str, target: str, on: str = "transient") -> None:
    """`name = "target"` in `[aliases]`, or an `[aliases.NAME]` table when `on` is not the default."""
    import tomlkit

    doc = _document(path)
    aliases = _section(doc, "aliases", False)
    if on == "transient":
        if name in aliases and isinstance(aliases[name], (tomlkit.items.Table, tomlkit.items.InlineTable)):
            del aliases[name]
        _set(aliases, name, target)
    else:
        value = aliases.get(name)
        if isinstance(value, (tomlkit.items.Table, tomlkit.items.InlineTable)):
            value["target"], value["on"] = target, on
        else:
            if name in aliases:
                del aliases[name]
            table = tomlkit.table()
            table["target"], table["on"] = target, on
            aliases[name] = table
    _save(path, doc)


def delete_alias(path: Path, name: str) -> bool:
    """Remove alias `name` from the file; False if it was not there."""
    if not path.exists():
        return False
    doc = _document(path)
    aliases = doc.get("aliases")
    if aliases is None or name not in aliases:
        return False
    _delete(aliases, name, doc, "aliases")
    _save(path, doc)
    return True
