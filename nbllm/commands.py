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
    "See which LLM providers are reachable, test one, enable or disable providers and choose "
    "the default. With no option, --status is shown."
)
_ACTIONS = ("status", "list", "enable", "disable", "test", "health_check", "reinit", "use")


def add_provider_arguments(parser: argparse.ArgumentParser, face: Face = "cli") -> None:
    """Declare the provider options on `parser` (the CLI's and the magic's are built here)."""
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--status", action="store_true",
                         help="probe every provider and show the default, a summary and a table (the default action)")
    actions.add_argument("--list", action="store_true",
                         help="show every environment variable each provider reads, whether it is set and where "
                              "from (keys masked)")
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
    parser.add_argument("--model", "-m", metavar="MODEL", help="with --use: the default model")
    parser.add_argument("--timeout", type=positive_seconds, metavar="SECONDS",
                        help="with --status, --health-check or --test: the probe timeout "
                             "(default NBLLM_HEALTH_TIMEOUT, else 2 s)")
    if face == "cli":
        parser.add_argument("--save", action="store_true",
                            help="accepted for symmetry with the magic: the command line always saves "
                                 "--enable/--disable/--use to the user config file")
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    else:
        parser.add_argument("--save", action="store_true",
                            help="also save --enable/--disable/--use to the user config file (environment "
                                 "variables still win over it)")
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
    """A pandas DataFrame, or None."""
    data: Any = field(default_factory=dict)
    """The same facts as plain JSON-able values (for --json)."""
    error: str | None = None
    """One line; set when the command did not succeed."""
    mistake: bool = False
    """The error is a usage mistake (options that make no sense together, an unknown or
    disabled NAME; the CLI exits 2, the magic raises UsageError), not a command that ran
    and failed (a --test that gets no answer; the CLI exits 1)."""


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
        return Outcome(error=str(exc))


def _usage_mistake(args: argparse.Namespace) -> str | None:
    """What in `args` makes no sense, or None; unknown or disabled NAMEs raise `ConfigurationError`."""
    from .catalog import AUTO
    from .registry import get_registry

    if args.model and not args.use:
        return "--model goes with --use NAME, e.g. --use ollama --model llama3.2."
    probes = args.status or args.health_check or args.test or not has_action(args)
    if args.timeout is not None and not probes:
        return "--timeout goes with --status, --health-check or --test NAME (it bounds their probes)."
    if getattr(args, "save", False) and not (args.enable or args.disable or args.use):
        return "--save goes with --enable, --disable or --use (nothing else is saved)."
    registry = get_registry()
    for name in (args.enable, args.disable):
        if name:
            registry.spec(name)
    for name in (args.use, args.test):
        if name and name.strip().lower() != AUTO:
            registry.require(name)
    if args.test and args.test.strip().lower() == AUTO:
        return "--test takes a provider NAME, not auto; --health-check probes them all."
    return None


def _run(args: argparse.Namespace, persist: bool) -> Outcome:
    if args.enable:
        return _set_enabled(args.enable, True, persist)
    if args.disable:
        return _set_enabled(args.disable, False, persist)
    if args.use:
        return _use(args.use, args.model, persist)
    if args.test:
        return _test(args.test, args.timeout)
    if args.list:
        return _list()
    if args.reinit:
        return _reinit()
    if args.health_check:
        return _health(args.timeout)
    return _status(args.timeout)


def _status(timeout: float | None) -> Outcome:
    from . import api, session, tables

    health = api.health_check(timeout=timeout)
    summary = api.status(health)
    selection = session.current()
    message = f"default: {selection}\n{summary}"
    data = {
        "default": {"provider": selection.provider, "model": selection.model},
        "summary": asdict(summary),
        "providers": {name: h.as_dict() for name, h in health.items()},
    }
    return Outcome(message, tables.health_frame(health, tables.STATUS_COLUMNS), data)


def _health(timeout: float | None) -> Outcome:
    from . import api, tables
    from .catalog import NOTHING_USABLE_ADVICE

    health = api.health_check(timeout=timeout)
    summary = api.status(health)
    data = {"summary": asdict(summary), "providers": {name: h.as_dict() for name, h in health.items()}}
    error = None if summary.available else f"no provider is available. {NOTHING_USABLE_ADVICE}"
    return Outcome(str(summary), tables.health_frame(health, tables.HEALTH_TABLE_COLUMNS), data, error)


def _list() -> Outcome:
    from . import tables
    from .registry import get_registry

    registry = get_registry()
    df = tables.variables_frame()
    problems = [p for name in registry.names() for p in registry.settings(name).problems]
    problems += list(registry.global_settings.problems)
    message = "\n".join([f"user config file: {registry.config_path}", *problems])
    data = {"config_file": str(registry.config_path), "variables": df.to_dict("records"), "problems": problems}
    return Outcome(message, df, data)


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
    """Cloud: a key is set (no paid call). Local: one probe, which must answer."""
    from . import api, bridge, tables
    from .errors import ModelError
    from .registry import get_registry

    registry = get_registry()
    spec = registry.spec(name)
    if spec.kind == "cloud":
        choice = bridge.run(api.resolve(spec.name, test_connection=True))
        message = f"{spec.name}: configured (key set; no request made, cloud calls cost money); model {choice.model}"
        return Outcome(message, data={"provider": spec.name, "ok": True, "model": choice.model})
    registry.require(spec.name)
    if spec.prepare:  # a server nbllm runs itself is started for the test
        bridge.run(registry.prepare(spec.name))
    health = api.health_check([spec.name], timeout=timeout)
    h = health[spec.name]
    if not h.connected:
        raise ModelError(spec.name, h.error or "not answering", url=h.base_url, hint=spec.install_hint)
    message = f"{spec.name}: answering at {h.base_url} in {h.latency_ms:.0f} ms; model {h.model_id}"
    data = {"provider": spec.name, "ok": True, "model": h.model_id, "health": h.as_dict()}
    return Outcome(message, tables.health_frame(health, tables.HEALTH_TABLE_COLUMNS), data)


def _reinit() -> Outcome:
    from . import api, session
    from .registry import get_registry

    api.reinit()
    summary = api.status()
    message = f"re-read the environment, .env and {get_registry().config_path}\n{summary}\ndefault: {session.current()}"
    return Outcome(message, data={"summary": asdict(summary)})


def _saved_note(persist: bool) -> str:
    if not persist:
        return " (this kernel; add --save to keep it)"
    from .registry import get_registry

    return f" (saved to {get_registry().config_path})"
