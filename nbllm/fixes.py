"""`nbllm.fix()`: ask a model why a cell failed and for the corrected cell.

What the model gets is one prompt: the failed cell's source, its traceback (plain
text, from `nbllm.cells`) and, for the names the cell uses, their type and
shape/length/dtypes/columns — never their values: a notebook's data may be large or
private, and the structure is what a fix needs. DataFrames and Series are described by
`summaries.describe_frame`; nothing here imports pandas or numpy: other objects are
described by duck typing (`shape`, `dtype`, `len`).
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
from .errors import ConfigurationError, NbllmError, detached, scrub
from .summaries import describe_frame

__all__ = ["Fix", "fix", "build_prompt", "parse_reply", "describe_value", "used_names", "SYSTEM", "SYSTEM_EXPLAIN"]

SYSTEM = ("You fix failing Jupyter notebook cells. Answer with one short paragraph that explains the cause, "
          "then the whole corrected cell in one ```python code block. Change only what the fix needs; "
          "do not repeat the traceback.")
SYSTEM_EXPLAIN = ("You explain why Jupyter notebook cells fail. Answer with one short paragraph that explains "
                  "the cause and how to fix it; do not write the corrected cell.")

MAX_NAMES = 30
_PYTHON = {"python", "py", "python3", "ipython", "ipython3", "py3"}
_SCALARS = (bool, int, float, complex, type(None))
_MAGIC_CALLS = ("run_line_magic", "run_cell_magic")
_SEQUENCES = (list, tuple, set, frozenset)
_IPYTHON_NAME = re.compile(r"_+|_i{1,3}|_i?\d+|_[iod]h|__\w+__")
_LIST_ITEM = re.compile(r"\s*(?:\d+[.)]|[-*+•])\s")
_INTRO_WORDS = re.compile(r"(?i)\b(?:code|cell|fix(?:ed)?|correct(?:ed|ion)?|version|solution|here)\b")
MIN_EXPLANATION = 80  # characters outside the code blocks an explain-only reply needs to be shown without them
_FENCE_OPEN = re.compile(r" {0,3}(`{3,})[ \t]*([^\s`]*)[^`\n]*$")


@dataclass(frozen=True, repr=False)
class Fix:
    """A model's answer about a failed cell: the explanation, the corrected cell (None with
    `explain_only` or when the answer had no code block: `note` says which), the nbllm Answer.

    A cell's last value is shown by Jupyter through `_repr_markdown_` (the explanation and the
    code, readable); `repr()` stays one short line: the prompt and the answer can be pages long.
    """

    explanation: str
    code: str | None
    answer: Any
    cell: int | None
    note: str | None = None
    prompt: str = ""

    def __str__(self) -> str:
        return self.explanation if self.code is None else f"{self.explanation}\n\n{_fenced(self.code, 'python')}"

    def __repr__(self) -> str:
        where = f"cell [{self.cell}]" if self.cell is not None else "a cell"
        first = next((line.strip() for line in self.explanation.splitlines() if line.strip()), "")
        first = first if len(first) <= 70 else first[:69].rstrip() + "…"
        if self.code is None:
            code = "no code"
        else:
            n = len(self.code.splitlines())
            code = f"{n} line{'' if n == 1 else 's'} of code"
        return f"<Fix for {where}: {first!r}, {code}>" if first else f"<Fix for {where}: {code}>"

    def _repr_markdown_(self) -> str:
        parts = [self.explanation or "*(the model gave no explanation)*"]
        if self.code is not None:
            parts += [_fenced(self.code, "python"),
                      "*Copy it into a cell, or use `%llm_fix` to get it in a new cell below.*"]
        elif self.note:
            parts.append(f"*nbllm: {self.note}.*")
        return "\n\n".join(parts)


# --- what the cell uses -------------------------------------------------------------------


def used_names(source: str, shell: Any = None) -> list[str]:
    """The names a cell reads before it binds them, in order of first use.

    A name whose first occurrence binds it (`x = 1`, `def x`, `import … as x`, `for x in`)
    is the cell's own: an unrelated variable of that name in the notebook says nothing
    about the failure. Magics are turned into Python by IPython's transformer first; a
    cell that does not parse (a SyntaxError) falls back to its name tokens, less the names
    it visibly defines.
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
    seen: dict[str, bool] = {}  # name -> used (True) or bound by the cell first (False)
    _first_uses(tree, seen)
    return [name for name, used in seen.items() if used]


_Pos = tuple[int, int]


def _end(node: ast.AST) -> _Pos:
    return (getattr(node, "end_lineno", None) or node.lineno, getattr(node, "end_col_offset", None) or 0)


def _start(node: ast.AST) -> _Pos:
    return (node.lineno, node.col_offset)


def _bind_positions(tree: ast.AST) -> tuple[dict[int, _Pos], set[int], list[tuple[_Pos, str]]]:
    """When each stored Name is bound: `x = x + 1` reads x before it binds it.

    Returns the binding position per Name node id, the ids of augmented-assignment
    targets (`x += 1` reads x) and the other bindings (def, class, import, except … as).
    """
    at: dict[int, _Pos] = {}
    reads: set[int] = set()
    others: list[tuple[_Pos, str]] = []

    def targets(target: ast.AST, pos: _Pos) -> None:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                at[id(node)] = pos

    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                targets(target, _end(node.value))
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            reads.add(id(node.target))
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            targets(node.target, _end(node.iter))
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    targets(item.optional_vars, _end(item.context_expr))
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            for generator in node.generators:  # the comprehension's own variables
                targets(generator.target, _start(node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            others.append((_start(node), node.name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    others.append((_start(node), alias.asname or alias.name.split(".")[0]))
        elif isinstance(node, ast.ExceptHandler) and node.name:
            others.append((_start(node), node.name))
    return at, reads, others


def _first_uses(tree: ast.AST, seen: dict[str, bool], depth: int = 0) -> None:
    """Each name's first occurrence, in source order: a read or a binding. The code a magic
    runs (`%time x + y`, `%%timeit` bodies) counts too, where the magic is."""
    at, reads, others = _bind_positions(tree)
    events: list[tuple[_Pos, int, Any]] = [(pos, 1, name) for pos, name in others]
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store) and id(node) not in reads:
                events.append((at.get(id(node), _start(node)), 1, node.id))
            else:  # Load, Del, and the target of `x += 1`
                events.append((_start(node), 0, node.id))
        elif (depth < 2 and isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in _MAGIC_CALLS):
            events.append((_start(node), 0, node))
    for _, kind, item in sorted(events, key=lambda e: (e[0], e[1])):
        if isinstance(item, ast.Call):
            for arg in item.args[1:]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    try:
                        _first_uses(ast.parse(arg.value), seen, depth + 1)
                    except (SyntaxError, ValueError):
                        pass  # options of a magic, not code
        else:
            seen.setdefault(item, kind == 0)


_NAMES = r"\(?\s*\w+(?:\s*,\s*\w+)*\s*,?\s*\)?"
_DEFINES = [re.compile(pattern, re.MULTILINE) for pattern in (
    r"^\s*(?:async\s+)?def\s+(\w+)",
    r"^\s*class\s+(\w+)",
    rf"^\s*({_NAMES})\s*(?::[^=\n]*)?=(?!=)",  # x = …, a, b = …, n: int = …
    rf"^\s*(?:async\s+)?for\s+({_NAMES})\s+in\b",
    r"\bas\s+(\w+)",  # import … as x, with … as x, except … as x
)]


def _defined_in(source: str) -> set[str]:
    """The names a cell that does not parse visibly binds, read line by line."""
    defined: set[str] = set()
    for pattern in _DEFINES:
        for match in pattern.finditer(source):
            defined.update(re.findall(r"\w+", match.group(1)))
    return defined


def _name_tokens(source: str) -> list[str]:
    names: dict[str, None] = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.NAME:
                names.setdefault(token.string, None)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    defined = _defined_in(source)
    return [n for n in names if not _is_keyword(n) and n not in defined]


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
    frame = describe_frame(value)  # DataFrames and Series: the same words as `{df}` summaries use
    if frame is not None:
        return frame
    module = (type(value).__module__ or "").split(".")[0]
    shape = _shape(value)
    dtype = getattr(value, "dtype", None) if shape is not None else None
    if module == "pandas" and dtype is not None:  # an Index, a Categorical: length and dtype only
        n = _length(value)
        return f"pandas {type(value).__name__}, length {n if n is not None else '?'}, dtype {dtype}"
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


def _is_code_intro(line: str) -> bool:
    """A last line such as "Here is the corrected cell:" that only announced the code block.

    Only such a line is dropped: a list item ("3. Change the cell to:"), a heading or any
    other sentence that ran into the block is part of the explanation and is kept.
    """
    text = line.strip().strip("*_").strip()
    if not text.endswith(":") or len(text) > 60 or _LIST_ITEM.match(line) or line.lstrip().startswith("#"):
        return False
    return re.fullmatch(r"\w+:", text) is not None or _INTRO_WORDS.search(text) is not None  # "Then:"


def _explanation(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    if len(lines) > 1 and _is_code_intro(lines[-1]):
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
        # without its code blocks a short reply ("The error:" + a block) says nothing: keep all of it
        explanation = _explanation(outside)
        return (explanation if len(explanation) >= MIN_EXPLANATION else reply.strip()), None, None
    chosen = next((b for b in blocks if b.info in _PYTHON and b.code.strip()), None)
    chosen = chosen or next((b for b in blocks if not b.info and b.code.strip()), None)
    if chosen is None:
        other = next((b.info for b in blocks if b.code.strip()), None)
        why = f"its code block is {other}, not Python" if other else "it has no ```python block"
        return _explanation(outside) or reply.strip(), None, f"no corrected cell: {why}"
    note = None if chosen.closed else "the code block was not closed: the answer may be cut off (raise max_tokens)"
    return _explanation(outside), chosen.code.strip("\n"), note


# --- the API ----------------------------------------------------------------------------------


def _refusal(message: str) -> BaseException:
    """nbllm's one-line answer that there is nothing to fix here: the failed-cell hook does not keep it."""
    return cells.not_a_cell_error(ConfigurationError(message))


def _shell(shell: Any) -> Any:
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython is a dependency
            get_ipython = None  # type: ignore[assignment]
        shell = get_ipython() if get_ipython is not None else None
    if shell is None:
        raise _refusal("nbllm.fix() reads the failed cells of a notebook: run it in Jupyter or "
                       "IPython, after %load_ext nbllm.")
    return shell


def _cell_to_fix(cell: int | None, shell: Any) -> cells.FailedCell:
    """The cell to fix: cell `cell`, or the last that failed; one clear error when there is none."""
    recording = cells.registered(shell)
    history = cells.history_for(shell)
    if cell is not None and (isinstance(cell, bool) or not isinstance(cell, int)):
        raise _refusal(f"cell must be a cell number such as 3, not {cell!r}.")
    if not recording:
        cells.register(shell)  # from now on; what failed before is gone
        raise _refusal("nbllm was not keeping failed cells in this kernel (it does after "
                       "%load_ext nbllm): run the failing cell again, then %llm_fix.")
    if cell is None:
        if history.last is None:
            raise _refusal("No cell has failed yet in this kernel: run the cell, then %llm_fix.")
        return history.last
    found = history.get(cell)
    if found is None:
        kept = history.numbers()
        listed = (f"the failed cells kept are {', '.join(f'[{n}]' for n in kept[-10:])}" if kept
                  else "no cell has failed yet in this kernel")
        raise _refusal(f"cell {cell} did not fail ({listed}): give the number of a failed cell, "
                       "or none for the last one.")
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

    failure: NbllmError | None = None
    try:
        answer = ask(prompt, **_ask_options(provider, model, SYSTEM_EXPLAIN if explain_only else SYSTEM))
        failure = getattr(answer, "failure", None)
    except NbllmError as exc:  # a provider that is down or unknown: nothing in the user's cell to fix
        failure = exc
    if failure is not None:
        raise cells.not_a_cell_error(detached(failure))
    explanation, code, note = parse_reply(answer.text, explain_only)
    return Fix(explanation=explanation, code=code, answer=answer, cell=failed.number, note=note, prompt=prompt)
