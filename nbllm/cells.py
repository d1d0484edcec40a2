"""The errors of notebook cells, kept for prompts (`{Err}`, `{Err[3]}`) and `%llm_fix`.

Why `post_run_cell` and not `set_custom_exc`: only one handler can own
`set_custom_exc`, and other extensions (and IPython's own display of errors) need it.
The event hands every cell's `ExecutionResult` to us after IPython has shown its
error, so nbllm only reads what happened and changes nothing.

A failure is kept as text a model can read: the cell's source, the exception's type and
message, and its traceback formatted by the `traceback` module (no ANSI colours), starting
at the user's cell (IPython's own frames left out). Everything passes through
`errors.scrub` (when kept and again when read), so a key in a message or a source line never
reaches a prompt or a log. Ctrl-C, `exit()` and nbllm's own failures are not kept (`is_kept`).
Importing this module is cheap (no pandas, no pydantic-ai): the hook is set at `%load_ext`.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .errors import NbllmError, scrub

__all__ = ["FailedCell", "ErrorHistory", "register", "registered", "unregister", "history_for", "notebook_names", "MAX_KEPT",
           "NOT_A_CELL_ERROR", "not_a_cell_error", "is_kept"]

MAX_KEPT = 50
"""How many failed cells each shell keeps (the oldest are forgotten first)."""

NOT_A_CELL_ERROR = "_nbllm_not_a_cell_error"
"""An exception carrying this attribute (set True) is nbllm's own answer about a failure
(e.g. `%llm_fix` with nothing to fix), not a cell's error worth fixing: it is not kept."""

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_FIX_MAGIC = re.compile(r"\s*%+llm_fix\b")
_CELL_MAGIC = re.compile(r"\s*%%llm\w*\b")
_LINE_MAGIC = re.compile(r"\s*%llm\w*\b")


def _ipython_dir() -> str:
    import IPython  # already imported wherever a shell exists

    return os.path.dirname(os.path.abspath(IPython.__file__)) + os.sep


@dataclass(frozen=True)
class FailedCell:
    """One cell that failed: its number (None if IPython gave it none), source and error, as plain text."""

    number: int | None
    source: str
    type: str
    message: str
    traceback: str

    @property
    def headline(self) -> str:
        where = f"cell [{self.number}]" if self.number is not None else "a cell"
        return f"{where} raised {self.type}: {self.message}" if self.message else f"{where} raised {self.type}"

    def __str__(self) -> str:
        """The text a model reads: what was raised, then the traceback. Scrubbed again: a key
        registered after the cell failed must not show in an older `{Err}`."""
        return scrub(f"{self.headline}\n{self.traceback}".rstrip("\n"))


class ErrorHistory:
    """`Err` in prompts: `str(Err)` is the last failed cell, `Err[3]` cell 3's failure, `Err.last`.

    `Err[n]` for a cell that did not fail raises `KeyError`, so a `{Err[7]}` placeholder
    that names no failure is left as written.
    """

    def __init__(self, limit: int = MAX_KEPT):
        self.limit = limit
        self._cells: OrderedDict[int | None, FailedCell] = OrderedDict()
        self._last: FailedCell | None = None

    def add(self, failed: FailedCell) -> None:
        self._cells.pop(failed.number, None)  # a number reused (store_history off) keeps its latest failure
        self._cells[failed.number] = failed
        self._last = failed
        while len(self._cells) > self.limit:
            self._cells.popitem(last=False)

    @property
    def last(self) -> FailedCell | None:
        return self._last

    def numbers(self) -> list[int]:
        """The numbers of the failed cells kept, oldest first."""
        return [n for n in self._cells if n is not None]

    def __getitem__(self, number: int) -> FailedCell:
        if isinstance(number, bool) or not isinstance(number, int) or number not in self._cells:
            raise KeyError(number)
        return self._cells[number]

    def get(self, number: int) -> FailedCell | None:
        try:
            return self[number]
        except KeyError:
            return None

    def __contains__(self, number: object) -> bool:
        return isinstance(number, int) and not isinstance(number, bool) and number in self._cells

    def __iter__(self) -> Iterator[FailedCell]:
        return iter(list(self._cells.values()))

    def __len__(self) -> int:
        return len(self._cells)

    def __bool__(self) -> bool:
        return self._last is not None

    def __str__(self) -> str:
        return str(self._last) if self._last is not None else "(no cell has failed yet in this kernel)"

    def __repr__(self) -> str:
        kept = ", ".join(f"[{n}]" for n in self.numbers())
        return f"<Err: {len(self)} failed cell(s) kept{': ' + kept if kept else ''}>"


# --- formatting -------------------------------------------------------------------------


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """`tb` without IPython's leading frames (run_code, compile): it starts at the user's cell."""
    ipython = _ipython_dir()
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(ipython):
        tb = tb.tb_next
    return tb


def _cell_names(shell: Any) -> dict[str, str]:
    """IPython's cell file names → `In[n]` (what its own tracebacks call them)."""
    names = getattr(getattr(shell, "compile", None), "_filename_map", None)
    return {name: f"In[{n}]" for name, n in names.items()} if isinstance(names, dict) else {}


def _chained(te: traceback.TracebackException) -> Iterator[traceback.TracebackException]:
    """`te` and every exception chained to it (causes, contexts), each once."""
    seen: set[int] = set()
    todo = [te]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(t for t in (current.__cause__, current.__context__) if t is not None)


def _rename(te: traceback.TracebackException, names: dict[str, str]) -> None:
    """Cell file names (`/tmp/ipykernel_1/2736.py`) shown as `In[3]`, through the chain."""
    for current in _chained(te):
        for frame in current.stack:
            frame.line  # noqa: B018 - read the source line while the real file name still finds it
            frame.filename = names.get(frame.filename, frame.filename)
        if getattr(current, "filename", None) in names:  # a SyntaxError's own location
            current.filename = names[current.filename]


def _library(filename: str) -> bool:
    """A frame of installed code (the standard library, site-packages, a compiled module), not the user's."""
    if filename.startswith("In["):
        return False
    if not os.path.isabs(filename) or "site-packages" in filename:
        return True
    return any(filename.startswith(prefix + os.sep) for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix})


def _short(filename: str) -> str:
    """An installed module's path from its package on (`pandas/core/frame.py`): fewer tokens, and no home folder."""
    for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
        if marker in filename:
            return filename.split(marker, 1)[1]
    for prefix in sorted({sys.prefix, sys.base_prefix, sys.exec_prefix}, key=len, reverse=True):
        if filename.startswith(prefix + os.sep):
            return os.path.relpath(filename, prefix)
    return filename


def _tidy(te: traceback.TracebackException) -> None:
    """Library paths shortened; a chained exception raised wholly inside libraries (pandas' KeyError behind
    `df["x"]`) keeps its line and loses its frames: the model needs what was raised, not hashtable internals."""
    for current in _chained(te):
        if current is not te and all(_library(frame.filename) for frame in current.stack):
            current.stack = traceback.StackSummary()
        for frame in current.stack:
            if _library(frame.filename):
                frame.filename = _short(frame.filename)


def format_error(error: BaseException, shell: Any = None) -> str:
    """The traceback of `error` as plain text, from the user's cell on, scrubbed."""
    te = traceback.TracebackException(type(error), error, _user_frames(error.__traceback__), compact=True)
    _rename(te, _cell_names(shell))
    _tidy(te)
    text = "".join(te.format())
    return scrub(_ANSI.sub("", text))


def _message(error: BaseException) -> str:
    if isinstance(error, SyntaxError):
        text = error.msg or ""
    else:
        try:
            text = str(error)
        except Exception:
            text = "<the exception's message could not be read>"
    return scrub(_ANSI.sub("", text))


def failed_cell(number: int | None, source: str, error: BaseException, shell: Any = None) -> FailedCell:
    """One failure as plain text."""
    return FailedCell(number=number, source=scrub(source or ""), type=type(error).__name__,
                      message=_message(error), traceback=format_error(error, shell))


# --- the hook ---------------------------------------------------------------------------


def not_a_cell_error(error: BaseException) -> BaseException:
    """`error` marked as nbllm's own answer (no cell to fix, the provider failed): the hook skips it."""
    setattr(error, NOT_A_CELL_ERROR, True)
    return error


def _nbllms(error: BaseException) -> bool:
    from IPython.core.error import UsageError  # IPython is loaded wherever a cell runs

    return isinstance(error, (NbllmError, UsageError))


def is_kept(source: str, error: BaseException) -> bool:
    """Whether a cell that raised `error` is a cell to fix.

    Not kept: Ctrl-C and `exit()` (an interrupted loop is not broken code), errors nbllm marked as
    its own, `%llm_fix`'s own cell, a `%%llm…` cell (its body is a prompt, not code: a provider that
    is down is nothing to fix), and nbllm's or IPython's one-line refusal of a `%llm…` line magic at
    the top of a cell. Python after such a line magic that fails is kept.
    """
    if isinstance(error, (KeyboardInterrupt, SystemExit)) or getattr(error, NOT_A_CELL_ERROR, False):
        return False
    if _FIX_MAGIC.match(source) or _CELL_MAGIC.match(source):
        return False
    return not (_LINE_MAGIC.match(source) and _nbllms(error))

_histories: weakref.WeakKeyDictionary[Any, ErrorHistory] = weakref.WeakKeyDictionary()
_hooks: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def history_for(shell: Any) -> ErrorHistory:
    """The failed cells kept for `shell` (an empty history if the hook never saw one)."""
    history = _histories.get(shell)
    if history is None:
        history = _histories[shell] = ErrorHistory()
    return history


def _recorder(shell: Any) -> Any:
    ref = weakref.ref(shell)

    def post_run_cell(result: Any) -> None:
        """Keep the cell's error, if it has one; never raises (an event callback's error is shown to the user)."""
        try:
            error = result.error_before_exec or result.error_in_exec
            target = ref()
            if error is None or target is None:
                return
            source = getattr(getattr(result, "info", None), "raw_cell", None) or ""
            if not is_kept(source, error):
                return
            history_for(target).add(failed_cell(result.execution_count, source, error, target))
        except Exception:  # noqa: BLE001 - a notebook must never see nbllm's bookkeeping fail
            pass

    return post_run_cell


def register(shell: Any) -> None:
    """Start keeping `shell`'s failed cells (idempotent: loading twice adds one hook)."""
    if shell is None or shell in _hooks:
        return
    hook = _recorder(shell)
    shell.events.register("post_run_cell", hook)
    _hooks[shell] = hook


def registered(shell: Any) -> bool:
    """Whether `shell`'s failed cells are being kept."""
    return shell is not None and shell in _hooks


def unregister(shell: Any) -> None:
    """Stop keeping `shell`'s failed cells and forget those kept."""
    hook = _hooks.pop(shell, None) if shell is not None else None
    if hook is not None:
        try:
            shell.events.unregister("post_run_cell", hook)
        except ValueError:
            pass
    if shell is not None:
        _histories.pop(shell, None)


def notebook_names(shell: Any = None) -> dict[str, Any]:
    """The notebook's own names for prompt filling: `{"Err": ...}` (a user's variable of the same name wins);
    nothing while nbllm is not keeping the shell's failed cells (`{Err}` then stays as written)."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    return {"Err": history_for(shell)} if registered(shell) else {}
