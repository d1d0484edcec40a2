"""The notebook as context: what `{name}` in a prompt becomes, and prompts given as lists.

A figure, an image, an image array or image bytes becomes an image part (`nbllm.images`),
a DataFrame or Series a summary capped at `NBLLM_MAX_CONTEXT_TOKENS` (`nbllm.summaries`;
`{df!full}` sends all of it), anything else its `str()`. `{Err}` / `{Err[3]}` are the
errors of failed cells (`nbllm.cells`); `{In[3]}`, `{Out[3]}` and `{_}` are IPython's own
names in the namespace. The caller's own variable of the same name always wins.

The caller's variables are read when the asking function is called (never when a coroutine
starts later in a task, whose frame is asyncio's).
"""

from __future__ import annotations

import sys
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, NbllmError, detached
from .interpolate import fill
from .parts import Part, images_in, join_text, prompt_text
from .settings_values import MAX_CONTEXT_TOKENS, MAX_IMAGE_SIDE
from .warning_lines import NbllmWarning

__all__ = ["Limits", "Prompt", "build", "caller_namespace", "prepared", "with_notebook", "configure", "WHOLE_LIMIT", "PromptWarning"]

WHOLE_LIMIT = 2_000_000
"""No model's context holds more tokens than this: a `{df!full}` beyond it is refused before it is rendered."""

_configured: dict[str, int | None] = {}
"""Limits a face set for this process (`%config LLMMagics.max_context_tokens`): they win over the settings."""


def configure(max_context_tokens: int | None = None, max_image_side: int | None = None) -> None:
    """Set (or with None, unset) the process-wide limits; the magics' traits call this, so `%config` reaches
    `nbllm.ask` too."""
    _configured.update(max_context_tokens=max_context_tokens, max_image_side=max_image_side)


@dataclass(frozen=True)
class Limits:
    """How much of the notebook one prompt may carry."""

    max_context_tokens: int = MAX_CONTEXT_TOKENS
    max_image_side: int = MAX_IMAGE_SIDE

    @classmethod
    def current(cls) -> "Limits":
        """`configure`'s limits, else `NBLLM_MAX_CONTEXT_TOKENS` / `NBLLM_MAX_IMAGE_SIDE`."""
        from .registry import get_registry

        settings = get_registry().global_settings
        return cls(_configured.get("max_context_tokens") or settings.max_context_tokens,
                   _configured.get("max_image_side") or settings.max_image_side)


@dataclass(frozen=True)
class Prompt:
    """A prompt's parts; `whole_tokens` (an estimate) when a `{df!full}` put a whole table in it, checked
    against the model's context length before sending."""

    parts: tuple[Part, ...]
    whole_tokens: int | None = None
    missed: tuple[str, ...] = ()
    """Placeholders left as written although their name exists (`{In[999]}`, `{Err[3]}` for a cell that
    did not fail): the faces say so in one line."""

    @property
    def note(self) -> str | None:
        """One line about `missed`, or None."""
        if not self.missed:
            return None
        return (f"nbllm: sent as written, nothing there: {', '.join(dict.fromkeys(self.missed))} "
                "(no such item or attribute; {{ }} sends braces on purpose)")

    @property
    def text(self) -> str:
        return prompt_text(self.parts)

    @property
    def has_images(self) -> bool:
        return bool(images_in(self.parts))


class _Renderer:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.whole = False

    def __call__(self, value: Any, conversion: str = "", reference: str = "") -> Part | None:
        name = "{" + reference + "}" if reference else "a value"
        try:
            return self._render(value, conversion, reference)
        except NbllmError:
            raise
        except Exception as exc:  # a value that breaks while being read: one line naming it
            problem = f"{name} could not be put in the prompt ({type(exc).__name__}: {exc})"
        raise ConfigurationError(f"{problem}; pass it as text, or send the prompt as written with raw=True / --raw.")

    def _render(self, value: Any, conversion: str, reference: str) -> Part | None:
        from . import images, summaries

        if isinstance(value, str):
            return value
        if conversion == "full" and summaries.is_frame(value):
            return self._whole(value, reference)
        image = images.as_image(value, self.limits.max_image_side, name="{" + reference + "}" if reference else None)
        if image is not None:
            return image
        summary = summaries.summary(value, self.limits.max_context_tokens, name=reference or None)
        return summary if summary is not None else _text(value)

    def _whole(self, frame: Any, reference: str) -> str:
        """All of a table, refused before rendering when no model could take it."""
        from . import summaries

        floor = summaries.full_size_floor(frame)
        text = summaries.full(frame, max_tokens=WHOLE_LIMIT) if floor <= WHOLE_LIMIT else None
        if text is None:
            raise ConfigurationError(f"{{{reference}!full}} is at least {floor:,} tokens, more than any model takes "
                                     f"({WHOLE_LIMIT:,}): send {{{reference}}} (a capped summary) or a slice of it.")
        self.whole = True
        return text


def _text(value: Any) -> str | None:
    try:
        return str(value)
    except Exception:  # a value whose str() fails stays as written
        return None


def build(prompt: Any, namespace: Mapping[str, Any] | None, limits: Limits | None = None) -> Prompt:
    """A prompt's parts: a text with `{name}` filled from `namespace` (None: sent as written); a list or
    tuple whose text items are sent as written and whose other items are rendered (text items separated
    by a newline); any other single object (a figure, a DataFrame) rendered as the whole prompt."""
    renderer = _Renderer(limits or Limits.current())
    missed: list[str] = []
    if isinstance(prompt, str):
        parts = join_text(fill(prompt, namespace, renderer, missed) if namespace is not None else [prompt])
    else:
        items: list[Part] = []
        for item in prompt if isinstance(prompt, (list, tuple)) else [prompt]:
            part = item if isinstance(item, str) else renderer(item)
            if not part:
                continue
            if isinstance(part, str) and items and isinstance(items[-1], str):
                items.append("\n")
            items.append(part)
        parts = join_text(items)
    if not renderer.whole:
        return Prompt(parts, missed=tuple(missed))
    from .tokens import estimate

    return Prompt(parts, estimate(prompt_text(parts)), tuple(missed))


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


def _raw_inputs(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """`{In[3]}` as the user typed it (`%llm_fix`, not IPython's `get_ipython().run_line_magic(...)`),
    while `In` is IPython's own list (a variable of the user's named In wins)."""
    if "IPython" not in sys.modules:
        return {}
    from IPython import get_ipython

    shell = get_ipython()
    history = getattr(shell, "history_manager", None)
    parsed, raw = getattr(history, "input_hist_parsed", None), getattr(history, "input_hist_raw", None)
    if parsed is None or raw is None or namespace.get("In") is not parsed:
        return {}
    return {"In": raw}


def with_notebook(namespace: Mapping[str, Any]) -> Mapping[str, Any]:
    """`namespace` first (but `In` as typed), then nbllm's notebook names."""
    extra = notebook_names()
    raw = _raw_inputs(namespace)
    maps = [m for m in (raw, namespace, extra) if m]
    return ChainMap(*maps) if len(maps) > 1 else namespace  # type: ignore[arg-type]


def caller_namespace(depth: int) -> Mapping[str, Any]:
    """The variables a caller `depth` frames up sees (its locals, then its globals), then `Err`."""
    frame = sys._getframe(depth + 1)
    try:
        return with_notebook(ChainMap(frame.f_locals, frame.f_globals))  # type: ignore[arg-type]
    finally:
        del frame


def prepared(prompt: Any, options: dict[str, Any], depth: int) -> Any:
    """What the API's asking functions send: a text with `{name}` filled from the variables of the
    user's frame `depth` levels above this call (`raw=True` in `options`, removed here: as written),
    a list's parts, or one object's. A text with nothing to fill stays a plain string (the fast path);
    None stays None (the prompt is empty: one error from `describe`)."""
    raw = options.pop("raw", False)
    if prompt is None or isinstance(prompt, Prompt) or (isinstance(prompt, str) and (raw or "{" not in prompt)):
        return prompt
    problem: NbllmError | None = None
    try:
        built = build(prompt, caller_namespace(depth) if isinstance(prompt, str) else None)
    except NbllmError as exc:  # an image that cannot be read: one line, nothing sent
        problem = exc
    if problem is not None:
        raise detached(problem)
    if built.note:
        from .warning_lines import warn

        warn(built.note, PromptWarning, stacklevel=depth + 1)
    return built


class PromptWarning(NbllmWarning):
    """A placeholder that names something that is not there (`{In[999]}`), sent as written."""
