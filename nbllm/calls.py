"""Send one prompt to one provider: `ask`, `ask_async`, `stream`, `astream`.

All work runs on nbllm's background loop (see bridge.py), so these work inside a
Jupyter kernel, in plain Python and under uvloop. Each call is described once by
`pipeline.describe` (bad options fail here, before anything is sent) and answered by
the pipeline. A failure becomes a `ModelError` that names the provider and URL; a
stream that breaks keeps the text that arrived (`Answer.text`) and says what failed
(`Answer.error`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from typing import Any

from . import bridge, pipeline
from .context import prepared
from .pipeline import Answer, Call, Notice, Request

__all__ = ["Answer", "Request", "ask", "ask_async", "stream", "astream", "TextStream"]


class TextStream:
    """Iterate to receive text as it is generated; `.answer` holds the result afterwards.

    With `raise_errors=True` (the default) a failure raises `ModelError` after the
    text that arrived was yielded; `.answer` keeps that partial text either way.
    `.call` says what was asked; `.notices` what was announced while waiting
    (e.g. "starting the embedded model…"); `on_notice` is called with each.
    """

    def __init__(self, call: Call, raise_errors: bool = True, on_notice: Any = None):
        self.call = call
        self.raise_errors = raise_errors
        self.answer: Answer | None = None
        self.notices: list[str] = []
        self.on_notice = on_notice

    def _take(self, item: str | Notice | Answer) -> str | None:
        if isinstance(item, Answer):
            self.answer = item
            if item.failure is not None and self.raise_errors:
                raise item.failure
            return None
        if isinstance(item, Notice):
            self.notices.append(item.text)
            if self.on_notice is not None:
                self.on_notice(item.text)
            return None
        return item

    def __iter__(self) -> Iterator[str]:
        for item in bridge.iterate(pipeline.events(self.call)):
            delta = self._take(item)
            if delta is not None:
                yield delta

    async def __aiter__(self) -> AsyncIterator[str]:
        async for item in bridge.aiterate(pipeline.events(self.call)):
            delta = self._take(item)
            if delta is not None:
                yield delta

    def items(self) -> AsyncIterator[str | Notice | Answer]:
        """Every event unfiltered (text, notices, the final Answer), for faces that show them all."""
        return pipeline.events(self.call)

    @property
    def text(self) -> str:
        return self.answer.text if self.answer else ""


def _call(prompt: "str | Sequence[Any] | Call", options: dict[str, Any], where: str = "ask") -> Call:
    """`prompt` and its options described (a `Call` a face has already described passes as is).

    A text's `{name}` placeholders are filled from the caller's variables (as `%%llm` fills them
    from the notebook): a figure or image becomes an image part, a DataFrame a capped summary
    (`nbllm.context`); `raw=True` sends the text as written. A list mixes text and such objects."""
    if isinstance(prompt, Call):
        return prompt
    return pipeline.describe(prepared(prompt, options, 3), where, kind="stream" if where == "stream" else "ask",
                             **options)


def ask_async(prompt: "str | Sequence[Any] | Call", **options: Any) -> Awaitable[Answer]:
    """Ask and await the whole answer (works with top-level await in a notebook); options as `ask`.

    A plain function returning the awaitable: the prompt is read (and checked) when you call it, so
    `{name}` comes from your variables even when the awaitable runs later in a task or `gather`."""
    return bridge.run_async(pipeline.answer(_call(prompt, options)))


def ask(prompt: "str | Sequence[Any] | Call", **options: Any) -> Answer:
    """Ask and wait: `provider`, `model`, `system`, `temperature`, `max_tokens`, `timeout`, `chat`, `cache`,
    `output_type`, `raw`.

    `{name}` in the text is filled from your variables (a figure → an image, a DataFrame → a capped
    summary, `{df!full}` → all of it, `{Err}` → the last failed cell); `raw=True` sends it as written.
    A list prompt mixes text and objects: `ask(["What is odd here?", fig, df])`."""
    return bridge.run(pipeline.answer(_call(prompt, options)))


def stream(prompt: "str | Sequence[Any]", *, raise_errors: bool = True, **options: Any) -> TextStream:
    """A stream of text deltas; iterate it (sync) or `async for` it. Prompts as `ask`."""
    return TextStream(_call(prompt, options, "stream"), raise_errors=raise_errors)


astream = stream
