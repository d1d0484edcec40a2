"""Fill `{name}`, `{obj.attr}` and `{obj[key]}` in a prompt from the user's namespace.

Why not `str.format_map`: prompts often contain code (JSON, dict and set
literals, f-strings), and format_map raises on most of it. Here a placeholder
is filled only when it is a simple reference that resolves; anything else —
an unknown name, a failing attribute, an expression, a format spec — is left
exactly as written. Nothing is evaluated beyond attribute and item access on
values already in the namespace.

`fill` returns parts instead of text: a renderer (nbllm.context) turns a figure into an
image part and a DataFrame into a capped summary; `{df!full}` asks the renderer for the
whole value (the only conversion; any other `!x` is left as written).

Braces: `{{` and `}}` are literal braces (`{{name}}` sends `{name}`). A `}}`
that closes braces opened literally (the end of nested JSON such as
`{"a": {"b": 1}}`) is left as written, so pasted JSON arrives unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["interpolate", "fill", "Renderer"]

Renderer = Callable[[Any, str, str], Any]
"""`(value, conversion, reference) -> part`: the text (or image part) a placeholder such as `{df!full}`
(reference "df", conversion "full") becomes; None leaves it as written."""
_CONVERSIONS = ("full",)

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_KEY = r"-?\d+|'[^'\\]*'|\"[^\"\\]*\"|" + _NAME
# A reference: a name, then any number of `.attr` or `[key]` steps, and nothing else.
_REFERENCE = re.compile(rf"({_NAME})((?:\.{_NAME}|\[(?:{_KEY})\])*)")
_STEP = re.compile(rf"\.({_NAME})|\[({_KEY})\]")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

_MISSING = object()
_BROKEN = object()
"""The name exists but a step after it does not (`{In[999]}`, `{Err[3]}` for a cell that did not fail)."""


def _key(token: str, namespace: Mapping[str, Any]) -> Any:
    """An index key: an int or quoted string literal, or a name's value (else the name itself)."""
    if token[0] in "'\"":
        return token[1:-1]
    if token.lstrip("-").isdigit():
        return int(token)
    value = namespace.get(token, _MISSING)
    return token if value is _MISSING else value


def _resolve(reference: str, namespace: Mapping[str, Any]) -> Any:
    """The value a reference names, or `_MISSING` if it is not a simple reference that resolves."""
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        return _MISSING
    value = namespace.get(match.group(1), _MISSING)
    if value is _MISSING:
        return _MISSING
    for step in _STEP.finditer(match.group(2)):
        attribute, key = step.groups()
        try:
            if attribute is not None:
                if attribute.startswith("__"):  # no walking into interpreter internals
                    return _MISSING
                value = getattr(value, attribute)
            else:
                value = value[_key(key, namespace)]
        except Exception:
            return _BROKEN
    return value


def _text(value: Any) -> str | None:
    try:
        return str(value)
    except Exception:
        return None


def _text_of(value: Any, conversion: str, reference: str) -> str | None:
    return _text(value) if not conversion else None


def interpolate(template: str, namespace: Mapping[str, Any]) -> str:
    """Return `template` with resolvable `{reference}` placeholders filled as text; never raises."""
    return "".join(str(part) for part in fill(template, namespace, _text_of))


def fill(template: str, namespace: Mapping[str, Any], render: Renderer, missed: list[str] | None = None) -> list[Any]:
    """`template` as parts: literal text, and what `render` makes of each resolvable placeholder.
    `render` may raise (an image that cannot be read): that is the caller's one clear error.
    `missed` collects placeholders left as written although their name exists (`{In[999]}`): worth a note."""
    out: list[Any] = []
    literal_depth = 0  # braces opened literally (e.g. JSON) and not yet closed
    i, n = 0, len(template)
    while i < n:
        char = template[i]
        if char == "{":
            if template.startswith("{{", i):
                out.append("{")
                i += 2
                continue
            match = _PLACEHOLDER.match(template, i)
            if match is not None:
                reference, _, conversion = match.group(1).partition("!")
                value = _resolve(reference, namespace) if not conversion or conversion in _CONVERSIONS else _MISSING
                if value is _BROKEN and missed is not None:
                    missed.append(match.group(0))
                part = None if value is _MISSING or value is _BROKEN else render(value, conversion, reference)
                if part is not None:
                    out.append(part)
                    i = match.end()
                    continue
            out.append("{")
            literal_depth += 1
            i += 1
        elif char == "}":
            if template.startswith("}}", i) and literal_depth == 0:
                out.append("}")
                i += 2
                continue
            out.append("}")
            literal_depth = max(0, literal_depth - 1)
            i += 1
        else:
            j = i
            while j < n and template[j] not in "{}":
                j += 1
            out.append(template[i:j])
            i = j
    return out

