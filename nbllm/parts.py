"""The parts of a prompt: text, and images sent as images (never as their bytes in text).

A prompt is a tuple of parts: `str` for text and `ImagePart` for an image. Everything that
shows or stores a prompt (the call log, `Answer.request`, the replay cache's key, reprs)
uses `prompt_text(parts)`, where each image is a placeholder such as
`<image 800×600 png, 41 KB>`; only the model layer sees the bytes (`to_user_content`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = ["ImagePart", "Part", "prompt_text", "images_in", "to_user_content", "join_text", "content_text"]


@dataclass(frozen=True)
class ImagePart:
    """One image, already encoded (PNG or JPEG) and downscaled, with its size for messages."""

    data: bytes = field(repr=False)
    media_type: str
    width: int
    height: int

    @property
    def format(self) -> str:
        """"png", "jpeg", … (the media type's subtype)."""
        return self.media_type.split("/", 1)[-1]

    @property
    def digest(self) -> str:
        """A short content hash: two images of the same size are different prompts (the replay cache's key)."""
        return hashlib.sha256(self.data).hexdigest()[:16]

    def __str__(self) -> str:
        return f"<image {self.width}×{self.height} {self.format}, {_size(len(self.data))}>"

    def __repr__(self) -> str:
        return f"ImagePart({self})"


Part = Union[str, ImagePart]


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{round(count / 1024)} KB"
    return f"{count / (1024 * 1024):.1f} MB"


def join_text(parts: Sequence[Part]) -> tuple[Part, ...]:
    """`parts` with neighbouring text joined and empty text dropped."""
    out: list[Part] = []
    for part in parts:
        if isinstance(part, str):
            if not part:
                continue
            if out and isinstance(out[-1], str):
                out[-1] = out[-1] + part
                continue
        out.append(part)
    return tuple(out)


def prompt_text(parts: Sequence[Part]) -> str:
    """The prompt as text, each image as its placeholder: what logs, reprs and cache keys show."""
    return "".join(str(part) for part in parts)


def images_in(parts: Sequence[Part]) -> list[ImagePart]:
    return [part for part in parts if isinstance(part, ImagePart)]


def to_user_content(parts: Sequence[Part]) -> list[Any]:
    """The parts as pydantic-ai user-prompt content: text as str, images as `BinaryContent`."""
    from pydantic_ai.messages import BinaryContent

    return [part if isinstance(part, str) else BinaryContent(data=part.data, media_type=part.media_type)
            for part in parts]


def content_text(content: Any, image: Callable[[bytes, str], str] | None = None) -> str:
    """A pydantic-ai user prompt's content as text: for people (chat memory's turns) each image is a
    `<image png, 41 KB>` placeholder (the message no longer knows its size in pixels); `image(data,
    media_type)` renders it otherwise (the replay cache: by its hash)."""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(content_text(item, image) for item in content)
    data = getattr(content, "data", None)
    if isinstance(data, bytes):
        kind = str(getattr(content, "media_type", "file"))
        if image is not None:
            return image(data, kind)
        return f"<{kind.split('/')[0]} {kind.split('/')[-1]}, {_size(len(data))}>"
    return str(content)
