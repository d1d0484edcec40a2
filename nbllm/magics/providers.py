"""`%llm_providers`: see, test, enable/disable and choose LLM providers from a notebook.

The options are the command line's (`nbllm.commands.add_provider_arguments`), so
`nbllm providers --status` and `%llm_providers --status` mean the same thing; this
file only parses, calls `nbllm.commands.run_providers` and displays. Changes apply to
this kernel; `--save` keeps them in the user config file. Endpoints and aliases
(`--add`, `--remove`, `--alias`, `--unalias`) are always saved, to `nbllm.toml`.

The line is never expanded by IPython (`@no_var_expand`): `{expr}` and `$name` would
otherwise be evaluated before the magic sees them, and a provider NAME is no place
to run code.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import ArgDecorator, magic_arguments

from ..commands import Outcome, add_provider_arguments, has_action, run_providers
from ..errors import scrub

__all__ = ["ProviderMagics"]


class provider_arguments(ArgDecorator):
    """Adds the shared provider options to the magic's parser (so `%llm_providers?` lists them)."""

    def add_to_parser(self, parser: argparse.ArgumentParser, group: Any) -> None:
        add_provider_arguments(parser, "magic")


@magics_class
class ProviderMagics(Magics):
    """Magics that show and change which LLM providers this kernel uses."""

    @magic_arguments()
    @provider_arguments()
    @no_var_expand
    @line_magic
    def llm_providers(self, line: str = "") -> None:
        """See which LLM providers are reachable, test one, enable or disable providers and
        choose the kernel-wide default. With no option, --status is shown.

        Changes apply to this kernel; add --save to keep them for new kernels and the
        `nbllm` command line (environment variables still win over saved choices).
        Your own endpoints and aliases (--add NAME --base-url URL, --remove NAME,
        --alias NAME=TARGET, --unalias NAME) apply to this kernel and are always saved
        to nbllm.toml (see `nbllm.endpoints` for its format).
        Tables are HTML in a notebook and plain text in a terminal; keys are never shown.
        The line is taken as written: `{...}` and `$name` are not expanded.
        """
        if _asks_for_help(line):  # the magic's parser has no -h: show what `%llm_providers?` shows
            print(self.llm_providers.__doc__)
            return
        try:  # like a shell (and %%llm): quotes group words and are not kept (--label 'Lab vLLM')
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"Cannot read the options {line.strip()!r}: {exc}.") from None
        args = self.llm_providers.parser.parse_args(argv)
        if args.panel:
            _show_panel()
            if not has_action(args):
                return
        _show(run_providers(args, persist=args.save))


def _asks_for_help(line: str) -> bool:
    try:
        words = shlex.split(line)
    except ValueError:  # unbalanced quotes: the parser reports them
        return False
    return any(word in ("-h", "--help") for word in words)


def _show_panel() -> None:
    from IPython.display import display

    from ..widgets import panel

    widget = panel()
    if widget is not None:
        display(widget)


def _show(outcome: Outcome) -> None:
    """A usage mistake is IPython's one-line UsageError; a failure (e.g. a --test that got no
    answer) is one line on stderr after whatever the command did show, and the kernel goes on."""
    from IPython.display import display

    from ..tables import display_bundle

    if outcome.mistake:
        raise UsageError(scrub(outcome.error or ""))
    if outcome.message:
        print(scrub(outcome.message))
    if outcome.table is not None:
        bundle = {mime: scrub(text) for mime, text in display_bundle(outcome.table).items()}
        display(bundle, raw=True)
    for caption, table in outcome.more:
        display({mime: scrub(text) for mime, text in display_bundle(table, caption).items()}, raw=True)
    if outcome.error:
        print(f"nbllm: {scrub(outcome.error)}", file=sys.stderr)
