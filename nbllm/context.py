"""The notebook as context: what `{name}` in a prompt becomes, and prompts given as lists.

A figure, an image, an image array or image bytes becomes an image part (`nbllm.images`),
a DataFrame or Series a summary capped at `NBLLM_MAX_CONTEXT_TOKENS` (`nbllm.summaries`;
`{df!full}` sends all of it), anything else its `str()`. `{Err}` / `{Err[3]}` are the
errors of failed cells (`nbllm.cells`); `{In[3]}`, `{Out[3]}` and `{_}` are IPython's own
names in the namespace. The caller's own variable of the same name always wins.
"""

from __future__ import annotations

import sys
from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .interpolate import fill
from .parts import ImagePart, Part, join_text

__all__ = ["Limits", "Prompt", "build", "render", "caller_namespace", "prepared", "with_notebook"]


@dataclass(frozen=True)
class Limits:
    """How much of the notebook one prompt may carry."""

    max_context_tokens: int = 2000
    max_image_side: int = 1568

    @classmethod
    def current(cls, max_context_tokens: int | None = None, max_image_side: int | None = None) -> "Limits":
        """The given limits, else `NBLLM_MAX_CONTEXT_TOKENS` / `NBLLM_MAX_IMAGE_SIDE`."""
        from .registry import get_registry

        settings = get_registry().global_settings
        return cls(max_context_tokens or settings.max_context_tokens, max_image_side or settings.max_image_side)


@dataclass(frozen=True)
class Prompt:
    """A prompt's parts; `whole_frames` when a `{df!full}` asked for a whole table (checked against the
    model's context length before sending)."""

    parts: tuple[Part, ...]
    whole_frames: bool = False

    @property
    def text(self) -> str:
        return "".join(str(part) for part in self.parts)

    @property
    def has_images(self) -> bool:
        return any(isinstance(part, ImagePart) for part in self.parts)


class _Renderer:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.whole_frames = False

    def __call__(self, value: Any, conversion: str = "", reference: str = "") -> Part | None:
        from . import images, summaries

        name = "{" + reference + "}" if reference else None
        if conversion == "full":
            whole = summaries.full(value)
            if whole is not None:
                self.whole_frames = True
                return whole
            return _text(value)
        if isinstance(value, str):
            return value
        image = images.as_image(value, self.limits.max_image_side, name=name)
        if image is not None:
            return image
        summary = summaries.summary(value, self.limits.max_context_tokens, name=reference or None)
        return summary if summary is not None else _text(value)


def _text(value: Any) -> str | None:
    try:
        return str(value)
    except Exception:  # a value whose str() fails stays as written
        return None


def render(value: Any, limits: Limits | None = None) -> Part:
    """One value as a prompt part (an image, a frame summary, or its text)."""
    part = _Renderer(limits or Limits.current())(value)
    return "" if part is None else part


def build(prompt: str | Sequence[Any], namespace: Mapping[str, Any] | None, limits: Limits | None = None) -> Prompt:
    """A prompt's parts: a text with `{name}` filled from `namespace` (None: sent as written), or a
    list whose text items are sent as written and whose other items are rendered, text items
    separated by a newline."""
    renderer = _Renderer(limits or Limits.current())
    if isinstance(prompt, str):
        parts = fill(prompt, namespace, renderer) if namespace is not None else [prompt]
        return Prompt(join_text(parts), renderer.whole_frames)
    items: list[Part] = []
    for item in prompt:
        part = item if isinstance(item, str) else renderer(item)
        if part is None or part == "":
            continue
        if isinstance(part, str) and items and isinstance(items[-1], str):
            items.append("\n")
        items.append(part)
    return Prompt(join_text(items), renderer.whole_frames)


def notebook_names() -> Mapping[str, Any]:
    """Names nbllm adds to a notebook's prompts (`Err`), when IPython runs and nbllm is loaded."""
    if "IPython" not in sys.modules:
        return {}
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return {}
    from .cells import notebook_names as names

    return names(shell)


def with_notebook(namespace: Mapping[str, Any]) -> Mapping[str, Any]:
    """`namespace` first, then nbllm's notebook names."""
    extra = notebook_names()
    return ChainMap(namespace, extra) if extra else namespace  # type: ignore[arg-type]


def caller_namespace(depth: int) -> Mapping[str, Any]:
    """The variables a caller `depth` frames up sees (its locals, then its globals), then `Err`."""
    frame = sys._getframe(depth + 1)
    try:
        return with_notebook(ChainMap(frame.f_locals, frame.f_globals))  # type: ignore[arg-type]
    finally:
        del frame


def prepared(prompt: "str | Sequence[Any] | Prompt", options: dict[str, Any], depth: int) -> "str | Prompt":
    """What the API's asking functions send: a text with `{name}` filled from the variables of the
    user's frame `depth` levels above this call (`raw=True` in `options`, removed here: as written),
    or a list's parts. A text with nothing to fill stays a plain string (the fast path)."""
    raw = options.pop("raw", False)
    if isinstance(prompt, Prompt) or (isinstance(prompt, str) and (raw or "{" not in prompt)):
        return prompt
    from .errors import NbllmError, detached

    problem: NbllmError | None = None
    try:
        return build(prompt, caller_namespace(depth) if isinstance(prompt, str) else None)
    except NbllmError as exc:  # an image that cannot be read: one line, nothing sent
        problem = exc
    raise detached(problem)
