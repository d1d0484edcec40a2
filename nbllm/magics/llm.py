"""`%%llm` and `%llm`: send a cell (or a line) as a prompt and show the answer.

These magics only parse options, call nbllm's Python API (`nbllm.calls`,
`nbllm.session`, `nbllm.multi`) and display what comes back; the look of an
answer lives in `nbllm.display`, prompt filling in `nbllm.interpolate`.
"""

from __future__ import annotations

import keyword
import re
import shlex
import sys
import time
from argparse import ArgumentParser, Namespace
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Enum, Float, Int, observe

from ..display import FORMATS, AnswerView, convert, rich_frontend
from ..errors import CellError, Interrupted, NbllmError
from ..interpolate import interpolate
from ..settings_values import MAX_CONTEXT_TOKENS, MAX_IMAGE_SIDE, option_number

__all__ = ["LLMMagics", "split_line"]

_TOKEN = re.compile(r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'])+""")
_PROVIDER_LIST = re.compile(r"[\w.\-]+(?:,[\w.\-]+)+")


def _unquote(token: str) -> str:
    return shlex.split(token)[0] if ('"' in token or "'" in token) else token


def _option(parser: ArgumentParser, name: str) -> Any:
    """The argparse action an option names (unique `--prefix`es allowed, as argparse does)."""
    actions = parser._option_string_actions
    if name in actions:
        return actions[name]
    matches = {actions[o] for o in actions if name.startswith("--") and o.startswith(name)}
    return matches.pop() if len(matches) == 1 else None


def _next_token(line: str, i: int) -> re.Match[str] | None:
    while i < len(line) and line[i].isspace():
        i += 1
    return _TOKEN.match(line, i) if i < len(line) else None


def split_line(line: str, parser: ArgumentParser) -> tuple[list[str], str]:
    """Split `%llm [options] question` into option arguments and the question, kept verbatim.

    Options are read from the start of the line; the question is the rest (after
    `--` if given), so apostrophes and dashes inside it need no quoting. An option
    with an optional value (`--compare a,b`) takes the next word only if it is a
    comma-separated list (or use `--compare=a`).
    """
    argv: list[str] = []
    i = 0
    wants_value = False
    while (match := _next_token(line, i)) is not None:
        token = match.group()
        if wants_value:
            argv.append(_unquote(token))
            wants_value = False
        elif token == "--":
            i = match.end()
            break
        elif token.startswith("-") and len(token) > 1 and not token[1].isdigit():
            argv.append(_unquote(token))
            action = None if "=" in token else _option(parser, token)
            attached = not token.startswith("--") and len(token) > 2  # -t0.2
            if action is not None and not attached:
                if action.nargs is None:
                    wants_value = True
                elif action.nargs == "?":
                    following = _next_token(line, match.end())
                    wants_value = following is not None and bool(_PROVIDER_LIST.fullmatch(following.group()))
        else:
            break
        i = match.end()
    return argv, line[i:].strip()


@magics_class
class LLMMagics(Magics):
    """Ask a language model from a notebook: `%%llm` sends the cell, `%llm` one line.

    Settings (`%config LLMMagics.<name> = value`, or ipython_config.py):
    default_format, stream, show_footer, update_interval, interpolate, max_context_tokens, max_image_side.
    """

    default_format = Enum(FORMATS, default_value="markdown", help="Format when -f is not given.").tag(config=True)
    stream = Bool(True, help="Stream answers into the display as they are generated.").tag(config=True)
    show_footer = Bool(False, help="Show 'provider · model · tokens · latency' under each answer.").tag(config=True)
    update_interval = Float(0.05, min=0.0, help="Least seconds between two updates of a streaming display.").tag(
        config=True
    )
    interpolate = Bool(True, help="Fill {name} placeholders from the namespace (per cell: --raw).").tag(config=True)
    max_context_tokens = Int(None, allow_none=True, min=50, help=(
        f"Token cap of a {{df}} summary in a prompt, here and in nbllm.ask (None: NBLLM_MAX_CONTEXT_TOKENS, "
        f"default {MAX_CONTEXT_TOKENS}).")).tag(config=True)
    max_image_side = Int(None, allow_none=True, min=64, help=(
        f"Longest side of an image sent, pixels, here and in nbllm.ask (None: NBLLM_MAX_IMAGE_SIDE, "
        f"default {MAX_IMAGE_SIDE}).")).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        self._limits_changed()

    @observe("max_context_tokens", "max_image_side")
    def _limits_changed(self, change: Any = None) -> None:
        """`%config` reaches the Python API too: one kernel, one limit."""
        from ..context import configure

        configure(self.max_context_tokens, self.max_image_side)

    last_answer: Any = None

    @no_var_expand  # IPython would evaluate {expr} and $name in the line: nbllm fills them itself
    @magic_arguments("%llm")  # help shows it as %%llm
    @argument("-p", "--provider", help="provider to ask (default: the kernel-wide default, see %%llm_providers)")
    @argument("-m", "--model", help="model id (default: the provider's configured model)")
    @argument("-s", "--system", help="system prompt")
    @argument("-t", "--temperature", type=option_number(0, 2), help="sampling temperature, 0..2")
    @argument("--max-tokens", type=option_number(1, 1_000_000, whole=True), metavar="N",
              help="largest answer, in tokens")
    @argument("--timeout", type=option_number(0, 3600, low_open=True, unit="seconds"), metavar="SECONDS",
              help="seconds allowed for this request")
    @argument("-f", "--format", choices=FORMATS, default=None,
              help="markdown (default), text, code (into the next cell), json (parsed object), html")
    @argument("-o", "--out", metavar="NAME", help="store the answer (text, or parsed object) in variable NAME")
    @argument("--schema", metavar="NAME",
              help="validate the answer into NAME, a pydantic model, dataclass or TypedDict of the notebook, or a "
                   "quick form such as \"name: str, age: int, tags: list[str]\" (also list[str], "
                   "Literal['a', 'b']); -o gets the object (None if the answer stays invalid; its text is "
                   "shown), shown as a table; not streamed, no -f json/code")
    @argument("--chat", action="store_true", help="continue the kernel's conversation (nbllm.conversation())")
    @argument("--reset", action="store_true", help="clear the conversation first (alone: just clear it)")
    @argument("--no-stream", action="store_true", help="wait for the whole answer instead of streaming it")
    @argument("--raw", action="store_true", help="send the text exactly; no {name} interpolation")
    @argument("--cache", action="store_true", help="record the answer in the replay cache")
    @argument("--compare", nargs="?", const="", metavar="PROVIDERS",
              help="ask several providers (comma-separated; default: all usable) and show them side by side")
    @argument("--consensus", nargs="?", const="", metavar="PROVIDERS",
              help="ask several providers and show their weighted consensus")
    @argument("--estimate", action="store_true",
              help="show what the prompt would cost (input tokens, output tokens, USD); nothing is sent")
    @argument("question", nargs="*", help="the prompt, for the one-line %%llm form")
    @line_cell_magic
    def llm(self, line: str, cell: str | None = None) -> Any:
        """Send the cell (or, as `%llm`, the rest of the line) to a model and show the answer.

        `{name}`, `{obj.attr}` and `{obj[key]}` are filled from the notebook's variables;
        `{{` and `}}` are literal braces; anything that does not resolve (JSON, code) is
        sent as written. The answer streams into one display whose metadata records the
        provider, model, token usage and latency. `%llm question` as a statement is shown
        the same way (streamed: in a terminal the text prints as it arrives); `x = %llm question`
        returns the answer (a parsed object with -f json, the validated object with --schema)
        instead of displaying it. With `--schema NAME` the answer is asked for as that type and
        validated whole (one retry feeds the error back); `-o` gets the object, the display
        is a table; an answer that stays invalid is one line, its text is shown and -o's
        variable is set to None. (IPython reads a line with
        an apostrophe that ends in `?` as a help request: use the cell form for those.)
        """
        args, prompt = self._arguments(line, cell)
        fmt = args.format or self.default_format
        if args.out is not None and (not args.out.isidentifier() or keyword.iskeyword(args.out)):
            raise UsageError(f"-o needs a variable name, not {args.out!r}.")
        if args.schema is not None and args.format in ("code", "json"):
            raise UsageError(f"--schema validates the answer into an object: leave out -f {args.format} "
                             "(-f text shows its table as plain text).")
        from ..session import conversation

        if args.reset:
            conversation().reset()
        if not prompt.strip():
            if args.reset:
                print("nbllm: the conversation is cleared.")
                return None
            where = "cell below %%llm" if cell is not None else "line after %llm"
            raise UsageError(f"The prompt is empty: write it in the {where} (see %llm? for options).")
        prompt = prompt.lstrip("\n").rstrip()
        if self.interpolate and not args.raw:
            prompt = self._filled(prompt)
        options = self._call_options(args, conversation() if args.chat else None)
        if args.schema is not None:
            options["output_type"] = self._schema(args.schema)
        if args.estimate:
            return _estimate(self.shell, args, prompt, options, show=cell is not None)
        if args.compare is not None or args.consensus is not None:
            return _many(self.shell, args, prompt, options, show=cell is not None)
        # `%llm question` as a statement is shown as %%llm shows it (streamed, rendered), not as the quoted
        # repr of a str after a silent wait; `x = %llm question` returns the value.
        returns = cell is None and not _shown_by_shell()
        if args.schema is not None:
            fmt = fmt if fmt in ("markdown", "text", "html") else "markdown"
            return self._ask_typed(self._describe(prompt, options, "ask"), fmt, args, line=returns)
        streaming = not returns and self.stream and not args.no_stream
        call = self._describe(prompt, options, "stream" if streaming else "ask")
        if returns:
            return self._ask_line(call, fmt, args.out)
        self._ask_cell(call, fmt, args.out, stream=streaming)
        return None

    def _namespace(self) -> dict[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    def _filled(self, prompt: str) -> Any:
        """The cell with `{name}` filled: figures as images, DataFrames as capped summaries, `{Err}`."""
        from ..context import build, with_notebook

        try:
            built = build(prompt, with_notebook(self._namespace()))
        except NbllmError as exc:  # an image that cannot be read
            raise CellError(str(exc)) from None
        if built.note:
            import sys

            print(built.note, file=sys.stderr)
        return built

    @staticmethod
    def _describe(prompt: Any, options: dict[str, Any], kind: str) -> Any:
        """The call, checked once by the API (an unknown provider, `-t 5`): one line, nothing sent."""
        from ..pipeline import describe

        try:
            return describe(prompt, "%%llm", kind=kind, **options)
        except NbllmError as exc:
            raise CellError(str(exc)) from None

    # --- parsing -----------------------------------------------------------------
    def _arguments(self, line: str, cell: str | None) -> tuple[Namespace, str]:
        parser = self.llm.parser
        if cell is None:
            argv, prompt = split_line(line, parser)
        else:
            try:
                argv = shlex.split(line)
            except ValueError as exc:
                raise UsageError(f"Cannot read the options {line.strip()!r}: {exc}.") from None
            prompt = cell
        if self.interpolate and "--raw" not in argv:  # options are filled like the prompt: never evaluated
            argv = [interpolate(token, self._namespace()) for token in argv]
        args = parser.parse_args(argv)
        if args.question:  # only the cell form can get here: the line form keeps its question apart
            raise UsageError(f"Unexpected {' '.join(args.question)!r} after %%llm: the prompt goes in the cell.")
        return args, prompt

    @staticmethod
    def _call_options(args: Namespace, chat: Any) -> dict[str, Any]:
        options = {
            "provider": args.provider, "model": args.model, "system": args.system,
            "temperature": args.temperature, "max_tokens": args.max_tokens, "timeout": args.timeout,
            "chat": chat, "cache": "record" if args.cache else None,
        }
        return {key: value for key, value in options.items() if value is not None}

    def _schema(self, text: str) -> Any:
        """The output type `--schema` names: a class of the notebook or a quick form (read, never run)."""
        from ..schemas import resolve_schema

        try:
            return resolve_schema(text, self._namespace())
        except NbllmError as exc:
            raise CellError(str(exc)) from None

    # --- one provider --------------------------------------------------------------
    @staticmethod
    def _ask(call: Any) -> Any:
        """The whole answer at once; failures and Ctrl-C become one-line errors."""
        from ..calls import ask

        try:
            return ask(call)
        except NbllmError as exc:
            raise CellError(str(exc)) from None
        except KeyboardInterrupt:
            raise Interrupted("interrupted, the request was cancelled") from None

    def _ask_typed(self, call: Any, fmt: str, args: Namespace, line: bool) -> Any:
        """`--schema`: the validated object into -o and a table. An invalid answer sets -o to None (never
        the text: `p.name` would then fail far from here) and its text is shown, with what it cost."""
        from ..calls import ask
        from ..display import Converted, typed
        from ..errors import OutputInvalid
        from ..multi import invalid_answer
        from ..schemas import is_name, schema_name

        invalid: OutputInvalid | None = None
        started = time.perf_counter()
        try:
            answer = ask(call)
        except OutputInvalid as exc:
            invalid = exc
            answer = invalid_answer(exc, call, (time.perf_counter() - started) * 1000)
        except NbllmError as exc:
            raise CellError(str(exc)) from None
        except KeyboardInterrupt:
            raise Interrupted("interrupted, the request was cancelled") from None
        self.last_answer = answer
        output_type = call.request.output_type
        metadata = {**answer.metadata(), "format": fmt, "schema": args.schema}
        if invalid is None:
            named = isinstance(output_type, type) and is_name(args.schema.strip())
            shown = typed(answer.output, fmt, title=schema_name(output_type) if named else None)
        else:
            shown = Converted(answer.text, {"text/plain": answer.text})
        if not line or (invalid is not None and answer.text):  # the line form shows only an invalid text
            view = AnswerView(fmt, rich=rich_frontend(self.shell), show_footer=self.show_footer)
            view.finish(shown, metadata, streamed=False)
        self._keep(answer.output if invalid is None else None, args.out, fmt, invalid is None)
        if invalid is not None:
            kept = f"; {args.out} is None" if args.out else ""
            kept += "; its text is shown above" if answer.text else "; it sent no text"
            raise CellError(f"{invalid}{kept}")
        return answer.output if line else None

    def _ask_line(self, call: Any, fmt: str, out: str | None) -> Any:
        answer = self._ask(call)
        self.last_answer = answer
        converted = convert(answer.text, fmt)
        self._keep(converted.value, out, fmt, answer.ok)
        if converted.problem:
            raise CellError(converted.problem)
        return converted.value

    def _ask_cell(self, call: Any, fmt: str, out: str | None, stream: bool) -> None:
        view = AnswerView(fmt, rich=rich_frontend(self.shell), interval=self.update_interval,
                          show_footer=self.show_footer)
        answer = self._stream(call, view, fmt, out) if stream else self._ask(call)
        self.last_answer = answer
        metadata = {**answer.metadata(), "format": fmt}
        if answer.failure is not None and not answer.text:
            raise CellError(answer.error)
        converted = convert(answer.text, fmt) if answer.ok else None
        view.finish(converted, metadata, streamed=stream)
        value = converted.value if converted is not None else answer.text
        self._keep(value, out, fmt, answer.ok)
        if answer.failure is not None:
            kept = f"; the text that arrived is kept{f' in {out}' if out else ''}"
            raise CellError(f"{answer.error}{kept}")
        if converted is not None and converted.problem:
            raise CellError(converted.problem + (f" in {out}" if out else ""))

    def _stream(self, call: Any, view: AnswerView, fmt: str, out: str | None) -> Any:
        from .. import bridge
        from ..calls import Answer, TextStream
        from ..pipeline import Notice

        text_stream = TextStream(call, raise_errors=False)
        answer = None
        # The pipeline's events run on nbllm's loop; `idle` wakes us to flush throttled text.
        try:
            for item in bridge.iterate(text_stream.items(), idle=max(self.update_interval, 0.01)):
                if item is bridge.IDLE:
                    view.tick()
                elif isinstance(item, Notice):
                    view.notice(item.text)
                elif isinstance(item, Answer):
                    answer = item
                else:
                    view.add(item)
        except (KeyboardInterrupt, bridge.Cancelled) as stopped:  # Ctrl-C, or nbllm's loop stopped under it
            partial = Answer(view.text, call.provider, call.model or "", error="interrupted")
            self.last_answer = partial
            if view.text:
                view.finish(None, {**partial.metadata(), "format": fmt})
                self._keep(view.text, out, fmt, ok=False)
            kept = f"; the text that arrived is kept{f' in {out}' if out else ''}" if view.text else ""
            if isinstance(stopped, bridge.Cancelled):
                raise CellError(f"{stopped}{kept}") from None
            raise Interrupted(f"interrupted, the request was cancelled{kept}") from None
        return answer

    def _keep(self, value: Any, out: str | None, fmt: str, ok: bool) -> None:
        """Store the result in the namespace; code also goes into the next cell."""
        if self.shell is None:
            return
        if out:
            self.shell.user_ns[out] = value
        if fmt == "code" and ok and isinstance(value, str) and value.strip():
            self.shell.set_next_input(value, replace=False)


def _shown_by_shell() -> bool:
    """Whether the value of the `%llm` line being run goes to the display (`%llm question` as a cell's last
    statement) or nowhere (a statement before others), not to code (`x = %llm question`, a call from Python).

    Why ask: an answer on screen is better shown the way `%%llm` shows one — streamed as it arrives,
    Markdown in a notebook, text in a terminal — than as a str's quoted repr after a silent wait (or not
    at all); a value that is used must be returned. The instruction after the call, in the code that
    called `run_line_magic`, tells: IPython compiles the statement whose value it displays in "single"
    mode, where it is the one that prints it; a statement's value that is dropped is popped. Anything
    else reads as "returned".
    """
    import dis

    from IPython.core.interactiveshell import InteractiveShell

    frame = sys._getframe(1)
    magic = InteractiveShell.run_line_magic.__code__
    while frame is not None and frame.f_code is not magic:
        frame = frame.f_back
    caller = frame.f_back if frame is not None else None
    if caller is None:
        return False
    # The first instruction past the running call (f_lasti may point at the call or at its inline caches).
    following = next((i for i in dis.get_instructions(caller.f_code) if i.offset > caller.f_lasti), None)
    # (A `;` after `%llm question` is part of the question: the line is the magic's, IPython never sees it.)
    return following is not None and (following.opname in ("PRINT_EXPR", "POP_TOP") or (  # 3.12+: INTRINSIC_PRINT
        following.opname == "CALL_INTRINSIC_1" and following.argrepr == "INTRINSIC_PRINT"))


def _estimate(shell: Any, args: Namespace, prompt: Any, options: dict[str, Any], show: bool) -> Any:
    """`--estimate`: the prompt as it would be sent, estimated (`nbllm.estimate_prompt`) and shown; nothing is sent."""
    from ..estimates import estimate_prompt

    if args.compare is not None or args.consensus is not None:
        raise UsageError("--estimate is for one provider: leave out --compare/--consensus (or use -p NAME).")
    try:  # a str here was not to be filled (--raw, or interpolation off); a Prompt is filled already
        result = estimate_prompt(prompt, raw=True, **options) if isinstance(prompt, str) else \
            estimate_prompt(prompt, **options)
    except NbllmError as exc:
        raise CellError(str(exc)) from None
    except KeyboardInterrupt:
        raise Interrupted("interrupted; nothing was sent") from None
    return _shown(shell, args, result, show)


def _shown(shell: Any, args: Namespace, result: Any, show: bool) -> Any:
    """A result stored in `-o`'s variable, then shown (the cell form) or returned (the line form)."""
    if args.out and shell is not None:
        shell.user_ns[args.out] = result
    if not show:
        return result
    from IPython.display import display

    display(result)
    return None


def _many(shell: Any, args: Namespace, prompt: Any, options: dict[str, Any], show: bool) -> Any:
    """`--compare` / `--consensus`: the API's function, its result stored (-o) and shown."""
    from .. import multi

    kind = "compare" if args.compare is not None else "consensus"
    names = args.compare if args.compare is not None else args.consensus
    function = getattr(multi, kind)
    if "provider" in options:
        raise UsageError(f"--{kind} takes the providers itself: --{kind} a,b instead of -p.")
    providers = [name.strip() for name in names.split(",") if name.strip()] or None
    try:
        result = function(prompt, providers=providers, **options)
    except NbllmError as exc:
        raise CellError(str(exc)) from None
    except KeyboardInterrupt:
        raise Interrupted("interrupted, the requests were cancelled") from None
    return _shown(shell, args, result, show)
