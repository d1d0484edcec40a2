"""`nbllm.fix()`: ask a model why a cell failed and for the corrected cell.

What the model gets is one prompt: the failed cell's source, its traceback (plain
text, from `nbllm.cells`) and, for the names the cell uses, their type and
shape/length/dtypes/columns — never their values: a notebook's data may be large or
private, and the structure is what a fix needs. Nothing here imports pandas or numpy:
objects are described by duck typing (`shape`, `dtype`, `columns`, `len`).
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import tokenize
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import cells
from .errors import ConfigurationError, scrub

__all__ = ["Fix", "fix", "build_prompt", "parse_reply", "describe_value", "used_names", "SYSTEM", "SYSTEM_EXPLAIN"]

SYSTEM = ("You fix failing Jupyter notebook cells. Answer with one short paragraph that explains the cause, "
          "then the whole corrected cell in one ```python code block. Change only what the fix needs; "
          "do not repeat the traceback.")
SYSTEM_EXPLAIN = ("You explain why Jupyter notebook cells fail. Answer with one short paragraph that explains "
                  "the cause and how to fix it; do not write the corrected cell.")

MAX_NAMES = 30
MAX_COLUMNS = 40
_PYTHON = {"python", "py", "python3", "ipython", "ipython3", "py3"}
_SCALARS = (bool, int, float, complex, type(None))
_MAGIC_CALLS = ("run_line_magic", "run_cell_magic")
_SEQUENCES = (list, tuple, set, frozenset)
_IPYTHON_NAME = re.compile(r"_+|_i{1,3}|_i?\d+|_[iod]h|__\w+__")
_FENCE_OPEN = re.compile(r" {0,3}(`{3,})[ \t]*([^\s`]*)[^`\n]*$")


@dataclass(frozen=True)
class Fix:
    """A model's answer about a failed cell: the explanation, the corrected cell (None with
    `explain_only` or when the answer had no code block: `note` says which), the nbllm Answer."""

    explanation: str
    code: str | None
    answer: Any
    cell: int | None
    note: str | None = None
    prompt: str = ""

    def __str__(self) -> str:
        return self.explanation if self.code is None else f"{self.explanation}\n\n```python\n{self.code}\n```"


# --- what the cell uses -------------------------------------------------------------------


def used_names(source: str, shell: Any = None) -> list[str]:
    """The names a cell reads (ast Name loads; attribute bases are Name loads too), in order of appearance.

    Magics are turned into Python by IPython's transformer first; a cell that does not
    parse (a SyntaxError) falls back to its name tokens.
    """
    code = source
    if shell is not None:
        try:
            code = shell.transform_cell(source)
        except Exception:  # noqa: BLE001 - a cell IPython cannot transform is read as written
            code = source
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return _name_tokens(source)
    names: dict[str, None] = {}
    _loads(tree, names)
    return list(names)


def _loads(tree: ast.AST, names: dict[str, None], depth: int = 0) -> None:
    """Name loads in order; the code a magic runs (`%time x + y`, `%%timeit` bodies) counts too."""
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, (ast.Name, ast.Call))),
                   key=lambda n: (n.lineno, n.col_offset))
    for node in nodes:
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                names.setdefault(node.id, None)
        elif depth < 2 and isinstance(node.func, ast.Attribute) and node.func.attr in _MAGIC_CALLS:
            for arg in node.args[1:]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    try:
                        _loads(ast.parse(arg.value), names, depth + 1)
                    except (SyntaxError, ValueError):
                        pass  # options of a magic, not code


def _name_tokens(source: str) -> list[str]:
    names: dict[str, None] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NAME:
                names.setdefault(token.string, None)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return [n for n in names if not _is_keyword(n)]


def _is_keyword(name: str) -> bool:
    import keyword

    return keyword.iskeyword(name) or keyword.issoftkeyword(name)


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__ or ""
    if module == "builtins":
        return kind.__qualname__
    return f"{module.split('.')[0]}.{kind.__qualname__}"


def _length(value: Any) -> int | None:
    try:
        n = len(value)
    except Exception:  # noqa: BLE001 - a broken __len__ is just not reported
        return None
    return n if isinstance(n, int) else None


def _shape(value: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in value.shape)
    except Exception:  # noqa: BLE001
        return None


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(x) for x in shape) + ("," if len(shape) == 1 else "") + ")"


def _item_types(items: Any, limit: int = 200) -> str:
    """The distinct type names among the first items (never the items themselves)."""
    seen: dict[str, None] = {}
    for i, item in enumerate(items):
        if i >= limit:
            break
        seen.setdefault(_type_name(item), None)
    shown = list(seen)[:4]
    return ", ".join(shown) + (", …" if len(seen) > 4 else "")


def _label(label: Any) -> str:
    """A column label as text: labels are structure, but only plain ones are shown in full."""
    if isinstance(label, (str, int, float, bool)) or label is None:
        return str(label)
    if isinstance(label, tuple):
        return "(" + ", ".join(_label(part) for part in label) + ")"
    return f"<{_type_name(label)}>"


def _frame(value: Any) -> str:
    shape = _shape(value)
    text = f"{_type_name(value).replace('pandas.', 'pandas ')}, shape {_shape_text(shape) if shape else '?'}"
    try:
        dtypes = list(value.dtypes.items())
    except Exception:  # noqa: BLE001
        return text
    columns = ", ".join(f"{_label(name)} ({dtype})" for name, dtype in dtypes[:MAX_COLUMNS])
    more = f", … and {len(dtypes) - MAX_COLUMNS} more" if len(dtypes) > MAX_COLUMNS else ""
    return f"{text}, columns: {columns}{more}" if dtypes else f"{text}, no columns"


def describe_value(value: Any) -> str | None:
    """What a fix needs to know of `value` without its value; None for a module (not worth a line)."""
    if isinstance(value, types.ModuleType):
        return None
    if isinstance(value, type):
        return "class"
    if inspect.isroutine(value) or isinstance(value, types.BuiltinFunctionType):
        return "function"
    if isinstance(value, _SCALARS):
        return _type_name(value)
    if isinstance(value, (str, bytes, bytearray)):
        return f"{type(value).__name__}, len {len(value)}"
    if isinstance(value, _SEQUENCES):
        inside = _item_types(value) if value else ""
        return f"{type(value).__name__}, len {len(value)}" + (f", items: {inside}" if inside else "")
    if isinstance(value, Mapping):
        n = _length(value)
        text = f"{_type_name(value)}, len {n if n is not None else '?'}"
        try:
            if n:
                text += f", keys: {_item_types(value.keys())}, values: {_item_types(value.values())}"
        except Exception:  # noqa: BLE001
            pass
        return text
    module = (type(value).__module__ or "").split(".")[0]
    kind = type(value).__name__
    if module == "pandas" and kind == "DataFrame":
        return _frame(value)
    shape = _shape(value)
    dtype = getattr(value, "dtype", None) if shape is not None else None
    if module == "pandas" and (kind in ("Series", "Index") or dtype is not None):
        n = _length(value)
        text = f"pandas {kind}, length {n if n is not None else '?'}, dtype {dtype}"
        name = getattr(value, "name", None) if kind == "Series" else None
        return text + (f", name {_label(name)}" if name is not None else "")
    if shape is not None and dtype is not None:
        return _type_name(value) if shape == () else f"{_type_name(value)}, shape {_shape_text(shape)}, dtype {dtype}"
    n = _length(value)
    return _type_name(value) + (f", len {n}" if n is not None else "")


def _hidden(shell: Any) -> set[str]:
    hidden = getattr(shell, "user_ns_hidden", None)
    return set(hidden) if isinstance(hidden, Mapping) else set()


def describe_names(source: str, namespace: Mapping[str, Any], shell: Any = None) -> list[str]:
    """One line per name the cell uses that the namespace holds: `name: type, shape …`."""
    hidden = _hidden(shell)
    lines: list[str] = []
    for name in used_names(source, shell):
        if name in hidden or name not in namespace or _IPYTHON_NAME.fullmatch(name):
            continue
        try:
            text = describe_value(namespace[name])
        except Exception:  # noqa: BLE001 - an object that fails to describe itself is named by its type
            text = _type_name(namespace[name])
        if text is not None:
            lines.append(f"- {name}: {text}")
        if len(lines) >= MAX_NAMES:
            lines.append("- … (more names not listed)")
            break
    return lines


# --- the prompt and the reply ---------------------------------------------------------------


def _fenced(text: str, info: str = "") -> str:
    """`text` in a fence longer than any run of backticks inside it."""
    runs = [len(run) for run in re.findall(r"`{3,}", text)]
    fence = "`" * max([3, *(n + 1 for n in runs)])
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


def build_prompt(failed: cells.FailedCell, namespace: Mapping[str, Any], shell: Any = None,
                 explain_only: bool = False) -> str:
    """The one text the model reads: the cell, its error, the names it uses (types and shapes only)."""
    where = f"cell [{failed.number}]" if failed.number is not None else "A cell"
    ask = ("Explain in one short paragraph why it failed and how to fix it." if explain_only else
           "Explain the cause in one short paragraph, then give the whole corrected cell in one ```python block.")
    parts = [f"The notebook {where} failed. {ask}" if failed.number is not None else f"{where} failed. {ask}",
             "The cell:", _fenced(failed.source, "python"),
             "The error:", _fenced(f"{failed.headline}\n{failed.traceback}".rstrip())]
    names = describe_names(failed.source, namespace, shell)
    if names:
        parts += ["The variables it uses (types and shapes only, not their values):", "\n".join(names)]
    return scrub("\n\n".join(parts))


@dataclass(frozen=True)
class _Block:
    info: str
    code: str
    closed: bool


def _blocks(reply: str) -> tuple[list[_Block], str]:
    """The fenced blocks of a reply and the text outside them."""
    blocks: list[_Block] = []
    outside: list[str] = []
    fence: str | None = None
    info = ""
    inside: list[str] = []
    for line in reply.splitlines():
        if fence is None:
            match = _FENCE_OPEN.match(line)
            if match:
                fence, info, inside = match.group(1), match.group(2).lower(), []
            else:
                outside.append(line)
        elif line.strip().startswith(fence) and not line.strip().strip("`"):
            blocks.append(_Block(info, "\n".join(inside), True))
            fence = None
        else:
            inside.append(line)
    if fence is not None:
        blocks.append(_Block(info, "\n".join(inside), False))
    return blocks, "\n".join(outside)


def _explanation(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    if len(lines) > 1 and lines[-1].endswith(":"):  # "Here is the corrected cell:" before the block
        lines.pop()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def parse_reply(reply: str, explain_only: bool = False) -> tuple[str, str | None, str | None]:
    """(explanation, code, note) from a model's reply: the first python block is the code.

    No fence: the whole reply is the explanation and there is no code (`note` says so).
    """
    blocks, outside = _blocks(reply or "")
    if not (reply or "").strip():
        return "", None, "the model sent an empty answer"
    if explain_only:
        return _explanation(outside) or reply.strip(), None, None
    chosen = next((b for b in blocks if b.info in _PYTHON and b.code.strip()), None)
    chosen = chosen or next((b for b in blocks if not b.info and b.code.strip()), None)
    if chosen is None:
        other = next((b.info for b in blocks if b.code.strip()), None)
        why = f"its code block is {other}, not Python" if other else "it has no ```python block"
        return _explanation(outside) or reply.strip(), None, f"no corrected cell: {why}"
    note = None if chosen.closed else "the code block was not closed: the answer may be cut off (raise max_tokens)"
    return _explanation(outside), chosen.code.strip("\n"), note


# --- the API ----------------------------------------------------------------------------------


def _shell(shell: Any) -> Any:
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython is a dependency
            get_ipython = None  # type: ignore[assignment]
        shell = get_ipython() if get_ipython is not None else None
    if shell is None:
        raise _own(ConfigurationError("nbllm.fix() reads the failed cells of a notebook: run it in Jupyter or "
                                      "IPython, after %load_ext nbllm."))
    return shell


def _own(error: Exception) -> Exception:
    """Mark nbllm's answer about a failure so the failed-cell hook does not keep it as a cell to fix."""
    setattr(error, cells.NOT_A_CELL_ERROR, True)
    return error


def _cell_to_fix(cell: int | None, shell: Any) -> cells.FailedCell:
    """The cell to fix: cell `cell`, or the last that failed; one clear error when there is none."""
    recording = cells.registered(shell)
    history = cells.history_for(shell)
    if cell is not None and (isinstance(cell, bool) or not isinstance(cell, int)):
        raise _own(ConfigurationError(f"cell must be a cell number such as 3, not {cell!r}."))
    if not recording:
        cells.register(shell)  # from now on; what failed before is gone
        raise _own(ConfigurationError("nbllm was not keeping failed cells in this kernel (it does after "
                                      "%load_ext nbllm): run the failing cell again, then %llm_fix."))
    if cell is None:
        if history.last is None:
            raise _own(ConfigurationError("No cell has failed yet in this kernel: run the cell, then %llm_fix."))
        return history.last
    found = history.get(cell)
    if found is None:
        kept = history.numbers()
        listed = (f"the failed cells kept are {', '.join(f'[{n}]' for n in kept[-10:])}" if kept
                  else "no cell has failed yet in this kernel")
        raise _own(ConfigurationError(f"cell {cell} did not fail ({listed}): give the number of a failed cell, "
                                      "or none for the last one."))
    return found


def _ask_options(provider: str | None, model: str | None, system: str) -> dict[str, Any]:
    # raw: the prompt holds code and braces; it must be sent as written, never {name}-filled
    options: dict[str, Any] = {"system": system, "raw": True}
    if provider is not None:
        options["provider"] = provider
    if model is not None:
        options["model"] = model
    return options


def fix(cell: int | None = None, *, provider: str | None = None, model: str | None = None,
        explain_only: bool = False, shell: Any = None) -> Fix:
    """Ask a model why the last failed cell (or cell `cell`) failed and for the corrected cell.

    The prompt holds the cell's source, its traceback and the types and shapes of the names
    it uses (never their values). Raises `ConfigurationError` when no such cell failed and
    `ModelError` when the provider fails.
    """
    shell = _shell(shell)
    failed = _cell_to_fix(cell, shell)
    prompt = build_prompt(failed, getattr(shell, "user_ns", {}) or {}, shell, explain_only)
    from .calls import ask

    answer = ask(prompt, **_ask_options(provider, model, SYSTEM_EXPLAIN if explain_only else SYSTEM))
    if getattr(answer, "failure", None) is not None:
        raise answer.failure
    explanation, code, note = parse_reply(answer.text, explain_only)
    return Fix(explanation=explanation, code=code, answer=answer, cell=failed.number, note=note, prompt=prompt)
