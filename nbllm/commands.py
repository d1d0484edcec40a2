"""The provider commands behind `nbllm providers` and `%llm_providers`: one engine, two faces.

`add_provider_arguments` declares the options once; the console script's parser
(`nbllm.cli`) and the magic's `magic_arguments` parser (`nbllm.magics.providers`) are
both built from it. `run_providers` turns parsed options into calls of nbllm's API and
returns an `Outcome` (a message, a table, JSON-able data, or an error and whether it
was a usage mistake); it prints nothing, so each face only decides how to show it.
Neither face imports the other. Only the standard library is imported at module
level, so `%load_ext nbllm` and `nbllm --help` stay cheap.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "PROVIDERS_DESCRIPTION", "Outcome", "add_provider_arguments", "positive_seconds", "has_action", "run_providers",
]

Face = Literal["cli", "magic"]

PROVIDERS_DESCRIPTION = (
    "See which LLM providers are reachable, test one, enable or disable providers, choose "
    "the default, add your own endpoints and aliases. With no option, --status is shown."
)
_ACTIONS = ("status", "list", "enable", "disable", "test", "health_check", "reinit", "use", "add", "remove", "alias",
            "unalias")
_CHANGES = ("add", "remove", "alias", "unalias")
"""Actions that change the endpoints file (nbllm.toml); every face saves them."""
_ADD_OPTIONS = (("--base-url", "base_url"), ("--key-env", "key_env"), ("--kind", "kind"), ("--protocol", "protocol"),
                ("--label", "label"))
_ADD_EXAMPLE = "e.g. --add gpu --base-url http://gpu:8000/v1"


def add_provider_arguments(parser: argparse.ArgumentParser, face: Face = "cli") -> None:
    """Declare the provider options on `parser` (the CLI's and the magic's are built here)."""
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--status", action="store_true",
                         help="probe every provider and show the default, a summary and a table (the default action)")
    actions.add_argument("--list", action="store_true",
                         help="show, per provider, what is set (keys masked) and the defaults used otherwise, "
                              "then the NBLLM_* variables that are set; --all: every variable")
    actions.add_argument("--enable", metavar="NAME", help="enable provider NAME")
    actions.add_argument("--disable", metavar="NAME", help="disable provider NAME (the default falls back to auto)")
    actions.add_argument("--test", metavar="NAME",
                         help="check that NAME answers (local server) or has a key (cloud; no paid call); "
                              "fails with one line saying why not")
    actions.add_argument("--health-check", action="store_true",
                         help="probe every provider concurrently and show models, latency and errors; "
                              "fails when no provider is available")
    actions.add_argument("--reinit", action="store_true",
                         help="re-read the environment, the .env file and the user config file")
    actions.add_argument("--use", metavar="NAME", help="make NAME (or auto) the default provider")
    actions.add_argument("--add", metavar="NAME",
                         help="add your own provider NAME, an OpenAI- or Anthropic-compatible server at --base-url; "
                              "saved to nbllm.toml (replaces an endpoint of that name); it reads NAME_API_KEY, "
                              "NAME_MODEL, NAME_BASE_URL… like the built-in providers")
    actions.add_argument("--remove", metavar="NAME",
                         help="remove your own provider NAME from every nbllm.toml holding it (a built-in one "
                              "is disabled instead)")
    actions.add_argument("--alias", metavar="NAME=TARGET",
                         help="let NAME stand for TARGET anywhere a provider is named: a provider, provider:model, "
                              "auto, another alias or a chain like openai,embedded (one word: NAME=TARGET); "
                              "saved to nbllm.toml")
    actions.add_argument("--unalias", metavar="NAME", help="remove alias NAME (from every nbllm.toml holding it)")
    parser.add_argument("--model", "-m", metavar="MODEL",
                        help="with --use: the default model; with --add: the endpoint's model (else detected for "
                             "a local server; a cloud endpoint needs one)")
    parser.add_argument("--base-url", metavar="URL",
                        help="with --add: the server's address, e.g. http://gpu:8000/v1 (a comma list is a fleet)")
    parser.add_argument("--key-env", metavar="VAR",
                        help="with --add: another variable holding its key (NAME_API_KEY is always read); "
                             "keys never go in nbllm.toml")
    parser.add_argument("--kind", metavar="{local,cloud}",
                        help="with --add: local (default: probed, model detected) or cloud (needs a key and --model)")
    parser.add_argument("--protocol", metavar="{openai,anthropic}",
                        help="with --add: the API it speaks (default openai)")
    parser.add_argument("--label", metavar="TEXT", help="with --add: the name tables show (default NAME)")
    parser.add_argument("--on", metavar="{transient,any}",
                        help="with --alias: which failures move down its chain: transient (default: connection "
                             "failures, timeouts, 429, 5xx) or any")
    parser.add_argument("--all", action="store_true",
                        help="with --list: every variable of every provider and every NBLLM_* variable, each "
                             "with its default")
    parser.add_argument("--timeout", type=positive_seconds, metavar="SECONDS",
                        help="with --status, --health-check or --test: the probe timeout "
                             "(default NBLLM_HEALTH_TIMEOUT, else 2 s)")
    if face == "cli":
        parser.add_argument("--save", action="store_true",
                            help="accepted for symmetry with the magic: the command line always saves "
                                 "--enable/--disable/--use to the user config file (and --add/--remove/--alias/"
                                 "--unalias to nbllm.toml)")
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    else:
        parser.add_argument("--save", action="store_true",
                            help="also save --enable/--disable/--use to the user config file (environment "
                                 "variables still win over it); --add/--remove/--alias/--unalias always save")
        parser.add_argument("--panel", action="store_true", help="show the interactive provider panel")


def positive_seconds(text: str) -> float:
    """`--timeout`'s type: a finite number of seconds above zero (argparse reports anything else)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return seconds


def has_action(args: argparse.Namespace) -> bool:
    """Whether any action option was given (else --status is implied)."""
    return any(getattr(args, name, None) for name in _ACTIONS)


@dataclass
class Outcome:
    """What a providers command produced; the CLI prints it, the magic displays it."""

    message: str = ""
    table: Any = None
    """A `nbllm.tables.Table` (plain rows: drawing it needs no pandas), or None."""
    data: Any = field(default_factory=dict)
    """The same facts as plain JSON-able values (for --json)."""
    error: str | None = None
    """One line; set when the command did not succeed."""
    mistake: bool = False
    """The error is a usage mistake (options that make no sense together, an unknown or
    disabled NAME; the CLI exits 2, the magic raises UsageError), not a command that ran
    and failed (a --test that gets no answer; the CLI exits 1)."""
    more: list[tuple[str, Any]] = field(default_factory=list)
    """Further tables shown after `table`, each with its caption (the aliases under --status)."""


def run_providers(args: argparse.Namespace, persist: bool = False) -> Outcome:
    """Carry out parsed provider options through nbllm's API; errors come back in the Outcome.

    The options are checked before anything runs, so a mistake changes nothing.
    `persist` saves --enable/--disable/--use to the user config file.
    """
    from .errors import NbllmError

    try:
        mistake = _usage_mistake(args)
    except NbllmError as exc:  # an unknown or disabled NAME
        mistake = str(exc)
    if mistake:
        return Outcome(error=mistake, mistake=True)
    try:
        return _run(args, persist)
    except NbllmError as exc:  # the command ran and failed (e.g. a --test that got no answer)
        from .errors import ConfigurationError

        # A change refused for what it asked (a bad URL, an unknown alias target) is a usage mistake.
        changing = any(getattr(args, name, None) for name in _CHANGES)
        return Outcome(error=str(exc), mistake=changing and isinstance(exc, ConfigurationError))


def _usage_mistake(args: argparse.Namespace) -> str | None:
    """What in `args` makes no sense, or None; unknown or disabled NAMEs raise `ConfigurationError`."""
    from .catalog import AUTO
    from .registry import get_registry

    if args.model and not (args.use or args.add):
        return "--model goes with --use NAME or --add NAME, e.g. --use ollama --model llama3.2."
    for option, attr in _ADD_OPTIONS:
        if getattr(args, attr, None) is not None and not args.add:
            return f"{option} goes with --add NAME, {_ADD_EXAMPLE}."
    if args.add and not args.base_url:
        return f"--add NAME needs --base-url URL, {_ADD_EXAMPLE}."
    if args.on is not None and not args.alias:
        return "--on goes with --alias NAME=TARGET, e.g. --alias robust=openai,embedded --on any."
    if args.alias and not _split_alias(args.alias)[1]:
        return "--alias takes NAME=TARGET in one word, e.g. --alias fast=groq:llama-3.1-8b-instant."
    if getattr(args, "all", False) and not args.list:
        return "--all goes with --list (--list --all shows every variable)."
    probes = args.status or args.health_check or args.test or not has_action(args)
    if args.timeout is not None and not probes:
        return "--timeout goes with --status, --health-check or --test NAME (it bounds their probes)."
    if getattr(args, "save", False) and not (args.enable or args.disable or args.use
                                             or any(getattr(args, name) for name in _CHANGES)):
        return "--save goes with --enable, --disable or --use (nothing else is saved)."
    registry = get_registry()
    for name in (args.enable, args.disable):
        if name:
            registry.spec(name)
    if args.use:
        from .session import selection_for

        selection_for(args.use, args.model)  # a provider, provider:model, an alias, a chain or auto
    if args.test and args.test.strip().lower() != AUTO:
        from .routing import resolve

        resolve(args.test)
    if args.test and args.test.strip().lower() == AUTO:
        return "--test takes a provider NAME, not auto; --health-check probes them all."
    return None


def _split_alias(text: str) -> tuple[str, str]:
    """`fast=groq:llama-3.1-8b-instant` → name and target (the first `=` splits)."""
    name, _, target = text.partition("=")
    return name.strip(), target.strip()


def _run(args: argparse.Namespace, persist: bool) -> Outcome:
    if args.add:
        return _add(args)
    if args.remove:
        return _remove(args.remove)
    if args.alias:
        return _alias(*_split_alias(args.alias), args.on or "transient")
    if args.unalias:
        return _unalias(args.unalias)
    if args.enable:
        return _set_enabled(args.enable, True, persist)
    if args.disable:
        return _set_enabled(args.disable, False, persist)
    if args.use:
        return _use(args.use, args.model, persist)
    if args.test:
        return _test(args.test, args.timeout)
    if args.list:
        return _list(bool(getattr(args, "all", False)))
    if args.reinit:
        return _reinit()
    if args.health_check:
        return _health(args.timeout)
    return _status(args.timeout)


def _checked(timeout: float | None) -> tuple[Any, Any, dict[str, Any]]:
    """Every provider probed: the health rows, the summary and the data both --status and --health-check give."""
    from . import api

    health = api.health_check(timeout=timeout)
    summary = api.status(health)
    return health, summary, {"summary": asdict(summary),
                             "providers": {name: h.as_dict() for name, h in health.items()}}


def _status(timeout: float | None) -> Outcome:
    from . import session, tables

    health, summary, checked = _checked(timeout)
    selection = session.current()
    message = f"default: {selection}\n{summary}"
    aliases, more = _aliases()
    data = {"default": {"provider": selection.provider, "model": selection.model}, **checked, "aliases": aliases}
    return Outcome(message, tables.health_table(health, tables.STATUS_COLUMNS), data, more=more)


def _aliases(files: bool = False) -> tuple[dict[str, dict[str, str]], list[tuple[str, Any]]]:
    """The aliases as data, and as the table under status (without their files) and --list (no table when
    there are none); the rows, each resolved to say what it cannot answer, are built once."""
    from . import tables

    rows = tables.alias_rows()
    if not rows:
        return {}, []
    columns = tables.ALIAS_COLUMNS if files else [c for c in tables.ALIAS_COLUMNS if c != "file"]
    table = tables.table(rows, columns)
    return {row["alias"]: {k: v for k, v in row.items() if k != "alias"} for row in rows}, [("aliases:", table)]


def _health(timeout: float | None) -> Outcome:
    from . import tables
    from .catalog import NOTHING_USABLE_ADVICE

    health, summary, data = _checked(timeout)
    error = None if summary.available else f"no provider is available. {NOTHING_USABLE_ADVICE}"
    return Outcome(str(summary), tables.health_table(health, tables.HEALTH_TABLE_COLUMNS), data, error)


def _list(everything: bool = False) -> Outcome:
    from .registry import get_registry
    from .settings_listing import listing

    registry = get_registry()
    shown = listing(everything, registry)
    aliases, more = _aliases(files=True)
    problems = [p for name in registry.names() for p in registry.settings(name).problems]
    problems += [*registry.global_settings.problems, *registry.endpoint_problems]
    files = registry.endpoint_files()
    listed = ", ".join(f"{path} ({'exists' if exists else 'not found'})" for path, exists in files)
    message = "\n".join([f"user config file: {registry.config_path}", f"endpoints files: {listed}", *problems])
    data = {"config_file": str(registry.config_path), "variables": shown["records"], "problems": problems,
            "endpoints_files": [{"path": str(path), "exists": exists} for path, exists in files],
            "aliases": aliases}
    return Outcome(message, shown["providers"], data, more=[*shown["more"], *more])


def _set_enabled(name: str, enabled: bool, persist: bool) -> Outcome:
    from . import api
    from .registry import get_registry

    registry = get_registry()
    spec = registry.spec(name)
    (api.enable if enabled else api.disable)(spec.name, save=persist)
    word = "enabled" if enabled else "disabled"
    lines = [f"{spec.name} {word}" + _saved_note(persist)]
    override = registry.env_value(f"{spec.env_prefix}_ENABLED")
    if override is not None:
        lines.append(f"note: {spec.env_prefix}_ENABLED={override} in the environment wins over the saved choice "
                     "in new processes")
    return Outcome("\n".join(lines), data={"provider": spec.name, "enabled": enabled, "saved": persist})


def _use(name: str, model: str | None, persist: bool) -> Outcome:
    from . import session
    from .registry import get_registry

    selection = session.use(name, model, save=persist)
    lines = [f"default: {selection}" + _saved_note(persist)]
    override = get_registry().env_value("NBLLM_PROVIDER")
    if persist and override is not None:
        lines.append(f"note: NBLLM_PROVIDER={override} in the environment wins over the saved default "
                     "in new processes")
    return Outcome("\n".join(lines), data={"provider": selection.provider, "model": selection.model,
                                            "saved": persist})


def _test(name: str, timeout: float | None) -> Outcome:
    """Each provider `name` stands for (an alias or a chain may name several): cloud, a key is set
    (no paid call); local, one probe, which must answer. Fails when none of them can answer."""
    from .errors import NbllmError
    from .routing import resolve

    route = resolve(name)
    if len(route.links) == 1 and not route.skipped:
        return _test_one(route.links[0].provider, route.links[0].model, timeout)
    lines, data, failures = [], [], []
    for link, why in route.skipped:
        lines.append(f"{link}: cannot answer ({why})")
    for link in route.links:
        try:
            outcome = _test_one(link.provider, link.model, timeout)
        except NbllmError as exc:
            failures.append(str(exc))
            lines.append(f"{link}: {exc}")
            continue
        lines.append(outcome.message)
        data.append(outcome.data)
    if not data:
        from .errors import ModelError

        raise ModelError(name, "nothing it names answers: " + "; ".join(failures))
    return Outcome("\n".join(lines), data={"name": route.name, "ok": True, "answering": data})


def _test_one(name: str, model: str | None, timeout: float | None) -> Outcome:
    from . import api, bridge, tables
    from .errors import ModelError
    from .registry import get_registry

    registry = get_registry()
    spec = registry.spec(name)
    if spec.kind == "cloud":
        choice = bridge.run(api.resolve(spec.name, model, test_connection=True))
        message = f"{spec.name}: configured (key set; no request made, cloud calls cost money); model {choice.model}"
        return Outcome(message, data={"provider": spec.name, "ok": True, "model": choice.model})
    registry.require(spec.name)
    if spec.prepare:  # a server nbllm runs itself is started for the test
        bridge.run(registry.prepare(spec.name))
    health = api.health_check([spec.name], timeout=timeout)
    h = health[spec.name]
    if not h.connected:
        raise ModelError(spec.name, h.error or "not answering", url=h.base_url, hint=spec.install_hint)
    shown = model or h.model_id
    message = f"{spec.name}: answering at {h.base_url} in {h.latency_ms:.0f} ms; model {shown}"
    data = {"provider": spec.name, "ok": True, "model": shown, "health": h.as_dict()}
    return Outcome(message, tables.health_table(health, tables.HEALTH_TABLE_COLUMNS), data)


def _reinit() -> Outcome:
    from . import api, session
    from .registry import get_registry

    api.reinit()
    summary = api.status()
    message = (f"re-read the environment, .env, {get_registry().config_path} and the endpoints files\n"
               f"{summary}\ndefault: {session.current()}")
    return Outcome(message, data={"summary": asdict(summary)})


def _saved_note(persist: bool) -> str:
    if not persist:
        return " (this kernel; add --save to keep it)"
    from .registry import get_registry

    return f" (saved to {get_registry().config_path})"


# ---- the user's endpoints and aliases (always saved: nbllm.toml) -------------------------

def _add(args: argparse.Namespace) -> Outcome:
    from . import api
    from .errors import display_url
    from .registry import get_registry

    registry = get_registry()
    name = args.add.strip()
    existed = name in registry.names()
    api.add_provider(name, args.base_url, key_env=args.key_env, kind=(args.kind or "local").strip().lower(),
                     protocol=(args.protocol or "openai").strip().lower(), model=args.model, label=args.label)
    spec = registry.spec(name)
    path = spec.extra.get("file", "")
    protocol = "Anthropic" if spec.builder == "anthropic" else "OpenAI"
    prefix = spec.env_prefix
    lines = [f"{spec.name} {'updated' if existed else 'added'}: {spec.kind}, {protocol}-compatible, at "
             f"{display_url(spec.base_url)} (saved to {path})",
             f"use it with -p {spec.name}; it reads {prefix}_API_KEY, {prefix}_MODEL, {prefix}_BASE_URL and the "
             f"other {prefix}_* variables"]
    from .endpoints import borrowed_keys

    borrowed = borrowed_keys(spec)
    for variable, owner in borrowed:  # the user may mean it; they should see it said
        lines.append(f"note: {spec.name} will receive {variable} ({owner}'s key) with every request and probe")
    for variable in (f"{prefix}_BASE_URL", f"{prefix}_MODEL"):
        if registry.env_value(variable) is not None:
            lines.append(f"note: {variable} in the environment wins over the file")
    data = {"provider": spec.name, "added": not existed, "file": path, "kind": spec.kind,
            "protocol": protocol.lower(), "base_url": display_url(spec.base_url),
            "receives_keys_of": {variable: owner for variable, owner in borrowed}}
    return Outcome("\n".join(lines), data=data)


def _remove(name: str) -> Outcome:
    from . import api, session

    key = name.strip().lower()
    was_saved = _saved_default_uses(key)
    files = api.remove_provider(name)
    where = f"removed from {' and '.join(files)}" if files else "removed from this process (no file held it)"
    lines = [f"{key} {where}", *_cleared_note(key, was_saved), f"default: {session.current()}"]
    return Outcome("\n".join(lines), data={"provider": key, "files": files, "saved_default_cleared": was_saved})


def _saved_default_uses(key: str) -> bool:
    """Asked before a removal: afterwards the saved default has been cleared and cannot say so."""
    from .registry import get_registry

    return get_registry().saved_default_uses(key)


def _cleared_note(key: str, was_saved: bool) -> list[str]:
    return [f"{key} was the saved default: cleared (choose another with --use NAME)"] if was_saved else []


def _alias(name: str, target: str, on: str) -> Outcome:
    from . import api
    from .registry import get_registry

    api.alias(name, target, on=on)
    registry = get_registry()
    alias = registry.aliases[name]
    falls = ", falling back on any error" if alias.on == "any" else ""
    lines = [f"alias {alias.name} → {alias.target}{falls} (saved to {alias.source})"]
    from .routing import alias_problem

    problem = alias_problem(alias.name)
    if problem:
        lines.append(f"note: {problem}")
    return Outcome("\n".join(lines), data={"alias": alias.name, "target": alias.target, "on": alias.on,
                                            "file": alias.source, "note": problem or ""})


def _unalias(name: str) -> Outcome:
    from . import api

    key = name.strip().lower()
    was_saved = _saved_default_uses(key)
    files = api.unalias(name)
    where = f"removed from {' and '.join(files)}" if files else "removed from this process (no file held it)"
    lines = [f"alias {key} {where}", *_cleared_note(key, was_saved)]
    return Outcome("\n".join(lines), data={"alias": key, "files": files, "saved_default_cleared": was_saved})
