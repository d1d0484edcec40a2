"""nbllm.images: the objects a notebook user holds, turned into image parts of the right size."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from IPython.display import Image as IPythonImage  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from nbllm.errors import ConfigurationError  # noqa: E402
from nbllm.images import as_image, is_image_like  # noqa: E402
from nbllm.parts import ImagePart  # noqa: E402


def decoded(part: ImagePart) -> Image.Image:
    """The bytes that would be sent, decoded: their size must be the part's size."""
    image = Image.open(io.BytesIO(part.data))
    image.load()
    assert (image.width, image.height) == (part.width, part.height)
    assert image.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[part.media_type]
    return image


def full_figure(width_in: float, height_in: float, dpi: int = 100) -> Figure:
    """A figure whose tight bounding box is the whole figure plus savefig's 0.1 in pad on each side."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(np.arange(12).reshape(3, 4), aspect="auto")
    return fig


def encoded(size: tuple[int, int], fmt: str = "PNG", mode: str = "RGB", **save: object) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, "orange" if mode != "CMYK" else (0, 128, 255, 0)).save(buf, format=fmt, **save)
    return buf.getvalue()


def one_line_error(excinfo: pytest.ExceptionInfo[ConfigurationError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message and message
    return message


# --- matplotlib -----------------------------------------------------------------------------

def test_figure_is_a_png_of_its_own_dpi() -> None:
    part = as_image(full_figure(4, 3, dpi=100))
    assert part is not None and part.media_type == "image/png"
    assert decoded(part).size == (420, 320)  # 400×300 px + 10 px pad each side
    half = as_image(full_figure(8, 6, dpi=50))
    assert half is not None and decoded(half).size == (410, 310)


def test_figure_ignores_the_users_savefig_dpi() -> None:
    with matplotlib.rc_context({"savefig.dpi": 300}):
        part = as_image(full_figure(4, 3, dpi=100))
    assert part is not None and (part.width, part.height) == (420, 320)


def test_wide_figure_is_downscaled_keeping_its_aspect() -> None:
    fig = full_figure(39.8, 9.8)  # renders 4000×1000 with the pad
    assert (as_image(fig, max_side=10_000).width, as_image(fig, max_side=10_000).height) == (4000, 1000)
    part = as_image(fig)
    assert part is not None and decoded(part).size == (1568, 392)
    smaller = as_image(fig, max_side=800)
    assert smaller is not None and decoded(smaller).size == (800, 200)


def test_axes_sends_its_whole_figure() -> None:
    fig = Figure(figsize=(6, 2), dpi=100)
    left, right = fig.subplots(1, 2)
    left.plot([1, 2, 3])
    right.plot([3, 2, 1])
    from_axes, from_figure = as_image(right), as_image(fig)
    assert from_axes is not None and from_figure is not None
    assert from_axes.data == from_figure.data
    assert decoded(from_axes).width > 500  # both axes, not one


def test_subfigure_sends_its_figure() -> None:
    fig = Figure(figsize=(4, 2), dpi=100)
    sub = fig.subfigures(1, 2)[0]
    sub.add_subplot().plot([1, 2])
    part = as_image(sub)
    assert part is not None and part.data == as_image(fig).data


def test_the_users_figure_is_unchanged() -> None:
    fig = Figure(figsize=(39.8, 9.8), dpi=100)
    ax = fig.add_subplot()
    ax.plot([1, 2, 3])
    canvas, facecolor = fig.canvas, fig.get_facecolor()
    before = (tuple(fig.get_size_inches()), fig.dpi, tuple(fig.bbox.size), ax.get_position().bounds, len(fig.axes))
    assert as_image(fig) is not None and as_image(ax) is not None
    after = (tuple(fig.get_size_inches()), fig.dpi, tuple(fig.bbox.size), ax.get_position().bounds, len(fig.axes))
    assert after == before
    assert fig.canvas is canvas and fig.get_facecolor() == facecolor


class _Broken(Artist):
    def draw(self, renderer: object) -> None:
        raise RuntimeError("cannot draw this")


def test_a_figure_that_fails_to_draw_is_one_line() -> None:
    fig = Figure()
    fig.add_artist(_Broken())
    with pytest.raises(ConfigurationError) as excinfo:
        as_image(fig, name="{fig}")
    message = one_line_error(excinfo)
    assert message.startswith("{fig}: the figure could not be drawn") and "cannot draw this" in message


# --- PIL ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, expected", [("RGB", {"RGB"}), ("RGBA", {"RGBA"}), ("L", {"L"}), ("LA", {"LA"}),
                                            ("P", {"RGB"}), ("1", {"RGB"}), ("CMYK", {"RGB"}), ("I;16", {"RGB"}),
                                            ("F", {"RGB"}), ("YCbCr", {"RGB"})])
def test_pil_image_of_any_mode_becomes_a_png(mode: str, expected: set[str]) -> None:
    image = Image.new(mode, (30, 20))
    part = as_image(image)
    assert part is not None and part.media_type == "image/png"
    assert decoded(part).size == (30, 20) and decoded(part).mode in expected


def test_pil_palette_with_transparency_keeps_its_alpha() -> None:
    image = Image.new("P", (10, 10), 0)
    image.info["transparency"] = 0
    part = as_image(image)
    assert part is not None and decoded(part).mode == "RGBA"
    assert decoded(part).getpixel((0, 0))[3] == 0


def test_large_pil_image_is_downscaled_and_the_users_image_kept() -> None:
    image = Image.new("RGB", (1000, 4000), "navy")
    part = as_image(image)
    assert part is not None and decoded(part).size == (392, 1568)
    assert image.size == (1000, 4000) and image.mode == "RGB"


def test_pil_image_read_from_a_jpeg_stays_jpeg() -> None:
    photo = Image.open(io.BytesIO(encoded((2000, 1500), "JPEG")))
    part = as_image(photo)
    assert part is not None and part.media_type == "image/jpeg" and decoded(part).size == (1568, 1176)
    assert photo.size == (2000, 1500)


# --- numpy ----------------------------------------------------------------------------------

def test_uint8_arrays_rgb_and_rgba() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    part = as_image(rgb)
    assert part is not None and part.media_type == "image/png"
    assert np.array_equal(np.asarray(decoded(part)), rgb)  # small: lossless, untouched pixels
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    part = as_image(rgba)
    assert part is not None and np.array_equal(np.asarray(decoded(part)), rgba)


def test_wide_array_is_downscaled() -> None:
    part = as_image(np.zeros((1000, 4000, 3), dtype=np.uint8))
    assert part is not None and decoded(part).size == (1568, 392)


def test_non_contiguous_array_is_sent_as_seen() -> None:
    base = np.random.default_rng(1).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    view = base[:, ::2]  # every other column: a strided view
    part = as_image(view)
    assert part is not None and np.array_equal(np.asarray(decoded(part)), view)


@pytest.mark.parametrize("array", [np.zeros((10, 10, 3), dtype=np.float64), np.zeros((10, 10), dtype=np.uint8),
                                   np.zeros((10, 10, 2), dtype=np.uint8), np.zeros((2, 10, 10, 3), dtype=np.uint8),
                                   np.zeros((0, 10, 3), dtype=np.uint8), np.zeros((10, 10, 3), dtype=np.int64)],
                         ids=["float", "2d", "two-channels", "4d", "empty", "int64"])
def test_other_arrays_are_not_images(array: np.ndarray) -> None:
    assert as_image(array) is None and not is_image_like(array)


# --- bytes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_small_png_bytes_are_sent_untouched(wrap: type) -> None:
    data = encoded((64, 48))
    part = as_image(wrap(data))
    assert part is not None and part.data == data and part.media_type == "image/png"
    assert (part.width, part.height) == (64, 48) and isinstance(part.data, bytes)


def test_small_jpeg_bytes_are_sent_untouched() -> None:
    data = encoded((64, 48), "JPEG")
    part = as_image(data)
    assert part is not None and part.data == data and part.media_type == "image/jpeg"
    assert decoded(part).size == (64, 48)


def test_large_jpeg_stays_jpeg_and_large_png_stays_png() -> None:
    jpeg = as_image(encoded((3000, 1000), "JPEG"))
    assert jpeg is not None and jpeg.media_type == "image/jpeg" and decoded(jpeg).size == (1568, 523)
    png = as_image(encoded((1000, 3000)))
    assert png is not None and png.media_type == "image/png" and decoded(png).size == (523, 1568)


def test_cmyk_jpeg_is_sent_as_rgb_jpeg() -> None:
    part = as_image(encoded((40, 30), "JPEG", mode="CMYK"))
    assert part is not None and part.media_type == "image/jpeg" and decoded(part).mode == "RGB"


def test_exif_rotated_jpeg_is_sent_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    part = as_image(encoded((80, 40), "JPEG", exif=exif))
    assert part is not None and part.media_type == "image/jpeg"
    assert decoded(part).size == (40, 80) and decoded(part).getexif().get(0x0112, 1) == 1


def test_never_upscaled() -> None:
    part = as_image(encoded((10, 5)), max_side=5000)
    assert part is not None and (part.width, part.height) == (10, 5)


def test_memoryview_of_wider_items_is_recognised() -> None:
    data = encoded((8, 8))
    padded = data + b"\0" * (-len(data) % 4)
    view = memoryview(padded).cast("I")
    assert is_image_like(view)
    part = as_image(view)
    assert part is not None and decoded(part).size == (8, 8)


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n" + b"garbage" * 10,
                                  encoded((200, 200), optimize=False)[:-300]], ids=["garbage", "truncated"])
def test_corrupt_png_bytes_are_one_line(data: bytes) -> None:
    assert is_image_like(data)
    with pytest.raises(ConfigurationError) as excinfo:
        as_image(data, name="{img}")
    message = one_line_error(excinfo)
    assert message.startswith("{img}: the PNG bytes could not be read as an image") and "corrupt" in message
    assert "_io." not in message and "0x" not in message


def test_corrupt_jpeg_bytes_are_one_line() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        as_image(b"\xff\xd8\xff\xe0" + os.urandom(200))
    assert "the JPEG bytes could not be read" in one_line_error(excinfo)


# --- pathlib.Path ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, suffix, media", [("PNG", ".png", "image/png"), ("JPEG", ".jpg", "image/jpeg"),
                                                ("GIF", ".gif", "image/png"), ("WEBP", ".webp", "image/png"),
                                                ("BMP", ".bmp", "image/png")])
def test_image_files(tmp_path: Path, fmt: str, suffix: str, media: str) -> None:
    path = tmp_path / f"picture{suffix}"
    path.write_bytes(encoded((50, 40), fmt))
    assert is_image_like(path)
    part = as_image(path)
    assert part is not None and part.media_type == media and decoded(part).size == (50, 40)


def test_large_gif_file_is_downscaled_png(tmp_path: Path) -> None:
    path = tmp_path / "wide.gif"
    path.write_bytes(encoded((4000, 1000), "GIF"))
    part = as_image(path)
    assert part is not None and part.media_type == "image/png" and decoded(part).size == (1568, 392)


def test_image_file_is_found_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "plot.data"
    path.write_bytes(encoded((12, 10)))
    part = as_image(path)
    assert part is not None and (part.width, part.height) == (12, 10)


def test_paths_that_are_not_images(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, not an image\n")
    for path in (text, tmp_path, tmp_path / "missing.txt", tmp_path / "missing"):
        assert as_image(path) is None and not is_image_like(path)


def test_missing_image_file_is_one_line(tmp_path: Path) -> None:
    missing = Path("plots") / "fig.png"
    assert is_image_like(missing)
    with pytest.raises(ConfigurationError) as excinfo:
        as_image(missing)
    message = one_line_error(excinfo)
    assert "image file not found" in message and str(missing) in message and str(tmp_path) in message


def test_image_named_file_that_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "fig.png"
    path.write_text("not a png")
    with pytest.raises(ConfigurationError) as excinfo:
        as_image(path)
    message = one_line_error(excinfo)
    assert str(path) in message and "is not a PNG, JPEG, GIF or WEBP image" in message


def test_corrupt_image_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    with pytest.raises(ConfigurationError) as excinfo:
        as_image(path)
    message = one_line_error(excinfo)
    assert message.startswith(f"{path} could not be read as an image")


# --- IPython.display.Image ------------------------------------------------------------------

def test_ipython_image_from_data_and_from_file(tmp_path: Path) -> None:
    data = encoded((33, 22))
    part = as_image(IPythonImage(data=data))
    assert part is not None and part.data == data and (part.width, part.height) == (33, 22)
    path = tmp_path / "shot.jpg"
    path.write_bytes(encoded((2000, 100), "JPEG"))
    part = as_image(IPythonImage(filename=str(path)))
    assert part is not None and part.media_type == "image/jpeg" and decoded(part).size == (1568, 78)


def test_ipython_image_of_a_url_is_not_fetched() -> None:
    image = IPythonImage(url="https://alice:s3cret-pass@example.com/plot.png")
    assert is_image_like(image)
    with pytest.raises(ConfigurationError) as excinfo:
        as_image(image, name="{img}")
    message = one_line_error(excinfo)
    assert "does not fetch URLs" in message and "example.com/plot.png" in message
    assert "s3cret" not in message and "alice" not in message


# --- everything else ------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["a string", "plot.png", 42, 3.5, None, [1, 2, 3], (encoded((4, 4)),),
                                   {"a": 1}, b"", b"random bytes that are no image", os.urandom(64),
                                   b"GIF89a" + b"\0" * 20, object(), Image])
def test_non_images_are_none(value: object) -> None:
    assert as_image(value) is None and not is_image_like(value)


@pytest.mark.parametrize("max_side", [0, -5, 2.5, True, "1568"])
def test_bad_max_side_is_one_line(max_side: object) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        as_image(encoded((4, 4)), max_side=max_side)  # type: ignore[arg-type]
    assert "longest image side" in one_line_error(excinfo)


def test_part_placeholder_never_shows_bytes() -> None:
    part = as_image(encoded((800, 600)))
    assert part is not None and str(part).startswith("<image 800×600 png,") and "PNG" not in repr(part)


def test_recognising_values_imports_no_heavy_library(tmp_path: Path) -> None:
    """A prompt with `{x}` of plain values must not pay for matplotlib/PIL/numpy/IPython imports."""
    text = tmp_path / "notes.txt"
    text.write_text("text")
    png = tmp_path / "a.png"
    png.write_bytes(encoded((4, 4)))
    script = f"""
import sys
import nbllm.images as images
heavy = ("matplotlib", "PIL", "numpy", "IPython")
before = {{m for m in heavy if m in sys.modules}}
from pathlib import Path
for value in ("text", 3, [1], b"random", Path({str(text)!r}), object()):
    assert images.as_image(value) is None and not images.is_image_like(value)
assert images.is_image_like(Path({str(png)!r}))
after = {{m for m in heavy if m in sys.modules}}
assert after == before, after - before
part = images.as_image(Path({str(png)!r}))
assert part.width == 4
print(sorted(m for m in ("matplotlib", "numpy", "IPython") if m in sys.modules and m not in before))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # encoding a PNG needed Pillow only
