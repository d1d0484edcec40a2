"""nbllm's warnings print as one plain line: `nbllm: OPENAI_TEMPERATURE='hot' is not valid: …`.

Why: Python prints a warning as `file:line: Category: message` followed by that source line.
In a notebook the file is the kernel's temporary cell file (`ipykernel_7919/1229562132.py:2:
NbllmConfigWarning: …`), which tells the reader nothing: the problem is a setting or a
placeholder, not a line of their cell. So nbllm's own categories (subclasses of `NbllmWarning`)
are formatted as their message alone, while every other library's warning is handed to the
`warnings.formatwarning` that was there before, and prints exactly as it did.

They stay ordinary warnings: filters, `warnings.catch_warnings(record=True)` and `pytest.warns`
see the category and message as ever (recording never formats). The formatter is put in place
the first time nbllm warns (`warn`), not on import: `import nbllm` changes nothing global.
Only the standard library is imported.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

__all__ = ["NbllmWarning", "install", "one_line", "warn"]

_PREFIX = "nbllm: "
_lock = threading.Lock()


class NbllmWarning(UserWarning):
    """The base of nbllm's warning categories: printed as one line starting `nbllm:`."""


def one_line(message: Any) -> str:
    """The message on one line, starting with `nbllm: ` (said once)."""
    text = " ".join(str(message).split())
    return text if text.startswith(_PREFIX) else _PREFIX + text


def _ours(category: Any) -> bool:
    return isinstance(category, type) and issubclass(category, NbllmWarning)


def install() -> None:
    """Wrap `warnings.formatwarning` so nbllm's categories print as `one_line` (idempotent:
    nothing happens while the current formatter is already one of these wrappers)."""
    with _lock:
        previous = warnings.formatwarning
        if getattr(previous, "nbllm_plain", False):
            return

        def formatwarning(message: Any, category: Any, filename: str, lineno: int, line: str | None = None) -> str:
            if _ours(category):
                return one_line(message) + "\n"
            return previous(message, category, filename, lineno, line)

        formatwarning.nbllm_plain = True  # type: ignore[attr-defined]
        formatwarning.__doc__ = "nbllm's warnings as one line; every other warning as `previous` formats it."
        warnings.formatwarning = formatwarning


def warn(message: str, category: type[NbllmWarning] = NbllmWarning, stacklevel: int = 1) -> None:
    """`warnings.warn` for nbllm's categories, with the one-line formatter in place."""
    install()
    warnings.warn(message, category, stacklevel=stacklevel + 1)
