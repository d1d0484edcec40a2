"""`nbllm providers …`: the console script, one face of the provider commands.

It builds the parser from `nbllm.commands`' shared options, runs
`commands.run_providers` and prints the `Outcome` (text or --json) with an exit
status. What the options mean lives in `nbllm.commands`; `%llm_providers` is the other
face of the same engine. Only the standard library is imported at module level, so
`nbllm --help` stays quick.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import replace
from typing import Any

from .commands import PROVIDERS_DESCRIPTION, Outcome, add_provider_arguments, run_providers
from .errors import scrub

__all__ = ["build_providers_parser", "build_parser", "exit_status", "main"]

EXIT_STATUS = (
    "Exit status: 0 done; 1 the command ran but failed (a --test that gets no answer or finds no key, "
    "--health-check with no provider available); 2 a usage mistake (an unknown option, options that do "
    "not go together, an unknown or disabled NAME); 130 interrupted."
)


class _CommandParser(argparse.ArgumentParser):
    """A sub-command's parser that rejects unknown options itself, so the error shows the
    sub-command's usage (argparse otherwise passes them up to `nbllm`'s usage)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_providers_parser() -> argparse.ArgumentParser:
    """The parser of `nbllm providers` on its own (the magic builds its own through `magic_arguments`)."""
    parser = argparse.ArgumentParser(prog="nbllm providers", description=PROVIDERS_DESCRIPTION, epilog=EXIT_STATUS)
    add_provider_arguments(parser, "cli")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The `nbllm` console script: one sub-command, `providers`."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="nbllm", description="Every LLM a notebook can reach.", epilog=EXIT_STATUS)
    parser.add_argument("--version", action="version", version=f"nbllm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser)
    providers = commands.add_parser("providers", help="see, test and choose providers",
                                    description=PROVIDERS_DESCRIPTION, epilog=EXIT_STATUS)
    add_provider_arguments(providers, "cli")
    return parser


def exit_status(outcome: Outcome) -> int:
    """0 done, 1 ran but failed, 2 a usage mistake (argparse's code for its own errors)."""
    if outcome.error is None:
        return 0
    return 2 if outcome.mistake else 1


def _print_outcome(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        payload = {"ok": outcome.error is None, **({"error": outcome.error} if outcome.error else {}),
                   **outcome.data}
        print(scrub(json.dumps(payload, indent=2, default=str)))
    else:
        if outcome.message:
            print(scrub(outcome.message))
        shown = ([("", outcome.table)] if outcome.table is not None else []) + list(outcome.more)
        if shown:
            from . import tables

            for caption, frame in shown:
                print(f"\n{caption}\n{scrub(tables.to_text(frame))}" if caption else scrub(tables.to_text(frame)))
    if outcome.error:
        print(f"nbllm: {scrub(outcome.error)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """`nbllm providers …`; returns the exit status.

    0: done. 1: the command ran but failed (a --test whose server does not answer or
    whose key is missing, --health-check with no provider available). 2: a usage
    mistake — argparse's own errors (unknown option, two actions, a bad --timeout) print
    its usage; the command's (options that do not go together, an unknown or disabled
    NAME) print one line `nbllm: …`. With --json, stdout also holds `{"ok": false,
    "error": …}` for 1 and 2. 130: interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage (or --help/--version)
        return int(exc.code or 0)
    from .config import NbllmConfigWarning

    with warnings.catch_warnings(record=True) as caught:
        # A bad setting is one plain line on stderr (no Python warning header) in a terminal.
        warnings.simplefilter("always", NbllmConfigWarning)
        try:
            outcome = run_providers(args, persist=True)
        except KeyboardInterrupt:
            print("nbllm: interrupted", file=sys.stderr)
            return 130
    warned = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, NbllmConfigWarning)))
    for message in warned:
        print(scrub(message), file=sys.stderr)
    if warned and outcome.message:  # (--list lists the problems too: each is said once, on stderr)
        outcome = replace(outcome, message="\n".join(line for line in outcome.message.splitlines()
                                                     if line not in warned))
    try:
        _print_outcome(outcome, bool(args.json))
    except BrokenPipeError:  # `nbllm providers --list | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return exit_status(outcome)


if __name__ == "__main__":
    sys.exit(main())
