"""What `{fig}` in a prompt becomes: the objects a notebook user holds, as `ImagePart`s.

The prompt renderer asks `is_image_like`/`as_image` about *every* value it fills in, so
recognising a value never imports matplotlib, PIL, numpy or IPython: a library is
consulted only when it is already in `sys.modules` (a value of its type cannot exist
otherwise). Pillow itself is imported only once an image is really encoded.

Accepted: a matplotlib `Figure`/`SubFigure` or `Axes` (its whole figure), a PIL image, an
`IPython.display.Image`, a numpy `uint8` array H×W×3/H×W×4, PNG/JPEG `bytes`/`bytearray`/
`memoryview` (by magic number), and a `pathlib.Path` to an image file (by content: PNG,
JPEG, GIF, WEBP; BMP/TIFF when the name says so and Pillow reads them). Plain strings are
never paths here: a prompt's text stays text.

Encoding, so what is sent is small, valid and what the user sees:
- the longest side is at most `max_side` (Pillow's `thumbnail`, LANCZOS; never upscaled);
- PNG or JPEG bytes already small enough are sent untouched (after checking they decode);
- photos stay JPEG (JPEG input, or a PIL image read from a JPEG, re-encoded at quality 90
  when resized): as PNG a downscaled photo is 3-5x larger for the same pixels;
- everything else (figures, arrays, GIF/WEBP/BMP, screenshots) is PNG: lossless for text and lines;
- a JPEG/file with an EXIF rotation is turned upright (browsers show it upright, so the
  user does), a CMYK JPEG becomes RGB (not every provider decodes CMYK).
The user's objects are never changed (a figure is only saved; a PIL image is copied).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, display_url
from .parts import ImagePart
from .settings_values import MAX_IMAGE_SIDE

__all__ = ["as_image", "is_image_like", "DEFAULT_MAX_SIDE", "IMAGE_SUFFIXES"]

DEFAULT_MAX_SIDE = MAX_IMAGE_SIDE  # NBLLM_MAX_IMAGE_SIDE's default

# File names that say "image": a missing one is an error rather than the text of the path.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".gif", ".webp", ".bmp", ".tif", ".tiff"})

_MEDIA = {"PNG": "image/png", "JPEG": "image/jpeg"}
_KEPT_MODES = frozenset({"RGB", "RGBA", "L", "LA"})  # modes PNG stores as they are
_EXIF_ORIENTATION = 0x0112
_JPEG_QUALITY = 90


def _sniff(head: bytes) -> str | None:
    """The format a file or buffer starts like, from its magic number (no decoding)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _head(buffer: bytes | bytearray | memoryview) -> bytes:
    """The first 16 bytes of any buffer (a memoryview may be multi-dimensional or of wider items)."""
    if not isinstance(buffer, memoryview):
        return bytes(buffer[:16])
    try:
        return bytes(buffer.cast("B")[:16])
    except (TypeError, ValueError):  # not C-contiguous: rare enough to copy
        return buffer.tobytes()[:16]


def _loaded(module: str, attr: str) -> type | None:
    """`module.attr` if that module is already imported (never imports it)."""
    mod = sys.modules.get(module)
    found = getattr(mod, attr, None) if mod is not None else None
    return found if isinstance(found, type) else None


def _path_kind(path: Path) -> str | None:
    """"path" when `path` names an image (by content, or by a name that says image), else None."""
    suffix_says_image = path.suffix.lower() in IMAGE_SUFFIXES
    try:
        if not path.is_file():
            return "path" if suffix_says_image and not path.exists() else None
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return "path" if suffix_says_image else None
    return "path" if _sniff(head) or suffix_says_image else None


def _kind(value: Any) -> str | None:
    """Which accepted kind `value` is, or None: the cheap half of `as_image`."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes" if _sniff(_head(value)) in _MEDIA else None
    if isinstance(value, Path):
        return _path_kind(value)
    if isinstance(value, (str, int, float, list, tuple, dict, set)) or value is None:
        return None  # the common case, answered without looking at any library
    for module, name, kind in _LIBRARY_KINDS:
        cls = _loaded(module, name)
        if cls is not None and isinstance(value, cls):
            return kind
    ndarray = _loaded("numpy", "ndarray")
    if ndarray is not None and isinstance(value, ndarray):
        shape = value.shape
        if value.dtype == "uint8" and len(shape) == 3 and shape[2] in (3, 4) and shape[0] > 0 and shape[1] > 0:
            return "array"
    return None


_LIBRARY_KINDS = (("matplotlib.figure", "FigureBase", "figure"), ("matplotlib.axes", "Axes", "axes"),
                  ("PIL.Image", "Image", "pil"), ("IPython.core.display", "Image", "ipython"))
"""The image classes of libraries, asked about only when the library is already loaded."""


def is_image_like(value: Any) -> bool:
    """Whether `as_image(value)` would send an image (or fail saying why): no encoding, no imports.

    True also for a missing `*.png`-style path or a corrupt image, which `as_image` refuses
    in one line: the caller must not quietly send their text instead.
    """
    return _kind(value) is not None


def as_image(value: Any, max_side: int = DEFAULT_MAX_SIDE, *, name: str | None = None) -> ImagePart | None:
    """`value` as an image part, downscaled to `max_side`; None when it is not image-like (use `str()`).

    `name` is how messages refer to the value (e.g. "{fig}"). Raises `ConfigurationError`
    (one line) for a missing image file, an image that cannot be decoded, or an
    `IPython.display.Image` that only links to a URL (nbllm never fetches URLs for you).
    """
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise ConfigurationError(f"the longest image side must be a whole number of pixels ≥ 1, not {max_side!r}")
    kind = _kind(value)
    if kind is None:
        return None
    prefix = f"{name}: " if name else ""
    if kind == "bytes":
        data = bytes(value)
        return _from_encoded(data, max_side, f"{prefix}the {_sniff(data[:16])} bytes")
    if kind == "path":
        return _from_path(value, max_side, prefix)
    if kind in ("figure", "axes"):
        return _from_figure(_root_figure(value), max_side, f"{prefix}the figure")
    if kind == "pil":
        return _from_pil(value, max_side, f"{prefix}the PIL image")
    if kind == "ipython":
        return _from_ipython(value, max_side, prefix)
    # kind == "array": the shape and dtype were checked by `_kind`
    import numpy as np

    image = _pillow().fromarray(np.ascontiguousarray(value))
    return _encode(image, max_side, jpeg=False, what=f"{prefix}the {value.shape[1]}×{value.shape[0]} array")


def _pillow() -> Any:
    from PIL import Image

    return Image


def _reason(exc: BaseException) -> str:
    """Pillow's reason in a few words (its "cannot identify <_io.BytesIO object at 0x…>" says nothing)."""
    if type(exc).__name__ == "UnidentifiedImageError":
        return "Pillow does not recognise its data"
    text = " ".join(str(exc).split())
    return text if text and "<_io." not in text else type(exc).__name__


def _unreadable(what: str, exc: BaseException) -> ConfigurationError:
    return ConfigurationError(f"{what} could not be read as an image ({_reason(exc)}): "
                              "it is corrupt or truncated; re-save or re-export it")


def _from_path(path: Path, max_side: int, prefix: str) -> ImagePart:
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative to the working directory {os.getcwd()})"
        raise ConfigurationError(f"{prefix}image file not found: {path}{where}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{prefix}image file {path} cannot be read: {exc.strerror or exc}") from None
    fmt = _sniff(data[:16])
    if fmt is None and path.suffix.lower() not in (".bmp", ".tif", ".tiff"):
        raise ConfigurationError(f"{prefix}{path} is not a PNG, JPEG, GIF or WEBP image (its content does not "
                                 "start like one); pass an image file or its text with path.read_text()")
    return _from_encoded(data, max_side, f"{prefix}{path}")


def _from_ipython(image: Any, max_side: int, prefix: str) -> ImagePart:
    data = getattr(image, "data", None)
    if isinstance(data, (bytes, bytearray, memoryview)) and len(data):
        return _from_encoded(bytes(data), max_side, f"{prefix}the IPython Image")
    filename = getattr(image, "filename", None)
    if filename:
        return _from_path(Path(filename), max_side, prefix)
    url = getattr(image, "url", None)
    if url:
        raise ConfigurationError(f"{prefix}the IPython Image only links to {display_url(str(url))}: nbllm does not "
                                 "fetch URLs; use Image(url=..., embed=True) or pass the file's bytes or Path")
    raise ConfigurationError(f"{prefix}the IPython Image holds no image data")


def _root_figure(value: Any) -> Any:
    """The figure that can be saved: an Axes' or a SubFigure's top-level `Figure`."""
    try:
        return value.get_figure(root=True)  # matplotlib ≥ 3.10
    except TypeError:  # older matplotlib: `.figure` is the root already
        figure = value.figure if hasattr(value, "figure") else value
        return getattr(figure, "figure", None) or figure


def _from_figure(figure: Any, max_side: int, what: str) -> ImagePart:
    buf = io.BytesIO()
    try:
        # An explicit dpi: `savefig.dpi` in the user's rcParams must not change what is sent.
        figure.savefig(buf, format="png", bbox_inches="tight", dpi=figure.dpi)
    except Exception as exc:  # an artist of the user's failed to draw
        raise ConfigurationError(f"{what} could not be drawn as PNG ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:200]}); draw it in a cell first to see why") from None
    return _from_encoded(buf.getvalue(), max_side, what)


def _from_encoded(data: bytes, max_side: int, what: str) -> ImagePart:
    """Encoded image bytes: sent untouched when PNG/JPEG, small enough and upright; else re-encoded."""
    Image = _pillow()
    fmt = _sniff(data[:16])
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decode now: a truncated file is refused here, not by the provider
    except Exception as exc:
        raise _unreadable(what, exc) from None
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    upright = orientation in (None, 1)
    jpeg = fmt == "JPEG"
    if fmt in _MEDIA and max(image.size) <= max_side and upright and (not jpeg or image.mode in ("L", "RGB")):
        return ImagePart(data=data, media_type=_MEDIA[fmt], width=image.width, height=image.height)
    if not upright:
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)
    return _encode(image, max_side, jpeg=jpeg, what=what)


def _from_pil(image: Any, max_side: int, what: str) -> ImagePart:
    try:
        image.load()  # a lazily opened file may be closed or truncated
    except Exception as exc:
        raise _unreadable(what, exc) from None
    return _encode(image, max_side, jpeg=image.format in ("JPEG", "MPO"), what=what)


def _encode(image: Any, max_side: int, *, jpeg: bool, what: str) -> ImagePart:
    """`image` (never modified) in a mode the format stores, downscaled, as PNG or JPEG bytes."""
    Image = _pillow()
    original = image
    try:
        if jpeg:
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB")
        elif image.mode not in _KEPT_MODES or "transparency" in image.info:
            has_alpha = "A" in image.mode or "a" in image.mode or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
    except ValueError as exc:  # a mode Pillow cannot convert (rare: "La", …)
        raise ConfigurationError(f"{what} has pixel mode {image.mode!r}, which cannot be converted to RGB "
                                 f"({_reason(exc)}); convert it first, e.g. img.convert('RGB')") from None
    if max(image.size) > max_side:
        if image is original:
            image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if jpeg:
        image.save(buf, format="JPEG", quality=_JPEG_QUALITY)
    else:
        image.save(buf, format="PNG")
    fmt = "JPEG" if jpeg else "PNG"
    return ImagePart(data=buf.getvalue(), media_type=_MEDIA[fmt], width=image.width, height=image.height)
