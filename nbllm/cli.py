"""`nbllm providers …`: the command line, and the options `%llm_providers` shares with it.

`add_provider_arguments` declares the options once; the console script's parser
and the magic's `magic_arguments` parser are both built from it. `run_providers`
turns parsed options into calls of nbllm's API and returns an `Outcome` (a
message, a table, JSON-able data); each face only decides how to show it. Only
the standard library is imported at module level, so `%load_ext nbllm` stays cheap.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "Outcome", "add_provider_arguments", "build_providers_parser", "build_parser", "has_action",
    "run_providers", "main",
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
                        help="health probe timeout (default NBLLM_HEALTH_TIMEOUT, else 2 s)")
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


class _CommandParser(argparse.ArgumentParser):
    """A sub-command's parser that rejects unknown options itself, so the error shows the
    sub-command's usage (argparse otherwise passes them up to `nbllm`'s usage)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_providers_parser(face: Face = "cli") -> argparse.ArgumentParser:
    """The parser of `nbllm providers` (the magic builds the same options through `magic_arguments`)."""
    parser = argparse.ArgumentParser(prog="nbllm providers", description=PROVIDERS_DESCRIPTION)
    add_provider_arguments(parser, face)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The `nbllm` console script: one sub-command, `providers`."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="nbllm", description="Every LLM a notebook can reach.")
    parser.add_argument("--version", action="version", version=f"nbllm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser)
    providers = commands.add_parser("providers", help="see, test and choose providers",
                                    description=PROVIDERS_DESCRIPTION)
    add_provider_arguments(providers, "cli")
    return parser


def has_action(args: argparse.Namespace) -> bool:
    """Whether any action option was given (else --status is implied)."""
    return any(getattr(args, name, None) for name in _ACTIONS)


# ---- running the options -------------------------------------------------------


@dataclass
class Outcome:
    """What a providers command produced; the CLI prints it, the magic displays it."""

    message: str = ""
    table: Any = None
    """A pandas DataFrame, or None."""
    data: Any = field(default_factory=dict)
    """The same facts as plain JSON-able values (for --json)."""
    error: str | None = None
    """One line; set when the command ran but did not succeed (the CLI exits 1)."""


def run_providers(args: argparse.Namespace, persist: bool = False) -> Outcome:
    """Carry out parsed provider options through nbllm's API.

    `persist` saves --enable/--disable/--use to the user config file. Unknown or
    disabled providers raise `ConfigurationError`; a failed --test raises `ModelError`.
    """
    from .errors import ConfigurationError

    if args.model and not args.use:
        raise ConfigurationError("--model goes with --use NAME, e.g. --use ollama --model llama3.2.")
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

    health = api.health_check(timeout=timeout)
    summary = api.status(health)
    data = {"summary": asdict(summary), "providers": {name: h.as_dict() for name, h in health.items()}}
    error = None if summary.available else (
        "no provider is available: start LM Studio, Ollama or llama.cpp, or set an API key such as OPENAI_API_KEY"
    )
    return Outcome(str(summary), tables.health_frame(health, tables.HEALTH_TABLE_COLUMNS), data, error)


def _list() -> Outcome:
    from . import tables
    from .registry import get_registry

    registry = get_registry()
    df = tables.variables_frame()
    problems = [p for name in registry.names() for p in registry.settings(name).problems]
    problems += list(registry.global_settings.problems)
    from .config import user_config_path

    message = "\n".join([f"user config file: {user_config_path()}", *problems])
    data = {"config_file": str(user_config_path()), "variables": df.to_dict("records"), "problems": problems}
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
    from .config import user_config_path

    api.reinit()
    summary = api.status()
    message = f"re-read the environment, .env and {user_config_path()}\n{summary}\ndefault: {session.current()}"
    return Outcome(message, data={"summary": asdict(summary)})


def _saved_note(persist: bool) -> str:
    if not persist:
        return " (this kernel; add --save to keep it)"
    from .config import user_config_path

    return f" (saved to {user_config_path()})"


def scrub(text: str) -> str:
    """The registry's scrub: no key or URL credential reaches the terminal."""
    from .registry import get_registry

    return get_registry().scrub(text)


# ---- the console script -----------------------------------------------------------


def _print_outcome(outcome: Outcome, as_json: bool) -> None:
    from . import tables

    if as_json:
        payload = {"ok": outcome.error is None, **({"error": outcome.error} if outcome.error else {}),
                   **outcome.data}
        print(scrub(json.dumps(payload, indent=2, default=str)))
        return
    if outcome.message:
        print(scrub(outcome.message))
    if outcome.table is not None:
        print(scrub(tables.to_text(outcome.table)))


def main(argv: list[str] | None = None) -> int:
    """`nbllm providers …`; returns the exit code (0 ok, 1 failed, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage (or --help/--version)
        return int(exc.code or 0)
    from .config import NbllmConfigWarning
    from .errors import NbllmError

    as_json = bool(getattr(args, "json", False))
    with warnings.catch_warnings(record=True) as caught:
        # A bad setting is one plain line on stderr (no Python warning header) in a terminal.
        warnings.simplefilter("always", NbllmConfigWarning)
        failure = None
        try:
            outcome = run_providers(args, persist=True)
        except NbllmError as exc:
            failure = str(exc)
        except KeyboardInterrupt:
            print("nbllm: interrupted", file=sys.stderr)
            return 130
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)):
        print(scrub(message), file=sys.stderr)
    if failure is not None:
        message = scrub(failure)
        print(f"nbllm: {message}", file=sys.stderr)
        if as_json:
            print(json.dumps({"ok": False, "error": message}))
        return 1
    try:
        _print_outcome(outcome, as_json)
    except BrokenPipeError:  # `nbllm providers --list | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if outcome.error:
        print(f"nbllm: {scrub(outcome.error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
