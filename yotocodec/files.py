"""Files as the commands read and write them: ``-`` for stdin/stdout, outputs that appear whole or not at all, input
images checked against the size limits before their pixels are decoded, and a one-line message for each way this
can fail."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from .atomic import atomic_write
from .container import MAX_PIXELS, MAX_SIDE
from .errors import YotoError
from .pillow_plugin import FORMAT as YOTO_FORMAT

STDIO = Path("-")


def shown(path: Path, stream: str) -> str:
    """A path as messages name it: ``-`` by the stream it stands for."""
    return f"<{stream}>" if path == STDIO else str(path)


@contextlib.contextmanager
def atomic_output(path: Path, force: bool) -> Iterator[BinaryIO]:
    """:func:`~yotocodec.atomic.atomic_write` to an output path checked first (:func:`check_output`)."""
    check_output(path, force)
    with atomic_write(path) as f:
        yield f


def check_output(path: Path, force: bool) -> None:
    """Refuse an output path that cannot or must not be written, before any work is spent on it."""
    if path == STDIO:
        return
    if path.exists() and not force:
        raise YotoError(f"{path} exists (use --force to overwrite it)")
    if path.is_dir():
        raise YotoError(f"{path} is a directory")
    if not path.parent.is_dir():  # else mkstemp's error would name the temporary file, not the missing directory
        raise YotoError(f"no such directory: {path.parent}")


@contextlib.contextmanager
def open_output(path: Path, force: bool) -> Iterator[BinaryIO]:
    """:func:`atomic_output`, or for ``-`` a buffer that goes to stdout only once it is complete."""
    if path != STDIO:
        with atomic_output(path, force) as f:
            yield f
        return
    stdout = sys.stdout.buffer
    if stdout.isatty():
        raise YotoError("refusing to write image data to a terminal (redirect stdout, or give -o FILE)")
    buffer = io.BytesIO()
    yield buffer
    stdout.write(buffer.getvalue())
    stdout.flush()


def read_bytes(path: Path) -> bytes:
    """A file's bytes; ``-`` is stdin."""
    return sys.stdin.buffer.read() if path == STDIO else path.read_bytes()


def read_image(path: Path) -> Image.Image:
    """Open and fully decode an image file (``-``: stdin), so a truncated or non-image file fails here, clearly.

    The size comes from the file's header and is checked before any pixel is decoded: a file of a few bytes can
    declare an image that would take gigabytes.
    """
    name = shown(path, "stdin")
    try:
        with warnings.catch_warnings():  # Pillow's looser limit warns; check_size refuses all those images, by size
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(read_bytes(path)) if path == STDIO else path)
        try:
            check_size(name, image.width, image.height)
            image.load()
        except BaseException:
            image.close()
            raise
    except YotoError:
        raise
    except Image.DecompressionBombError as exc:  # too large even for Pillow, which then gives only the pixel count
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" of {declared[1]} pixels" if declared else ""
        raise YotoError(f"{name}: image{size} exceeds the limit of {MAX_PIXELS} pixels") from None
    except Image.UnidentifiedImageError:
        raise YotoError(f"{name}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
            raise
        raise YotoError(
            f"{name}: cannot decode image ({str(exc).splitlines()[0] if str(exc) else 'corrupt'})"
        ) from None
    return image


def check_size(name: str, width: int, height: int) -> None:
    """Refuse an image the ``.yoto`` format cannot hold, before any work is spent on it."""
    if width * height > MAX_PIXELS:
        raise YotoError(f"{name}: image of {width}×{height} pixels exceeds the limit of {MAX_PIXELS} pixels")
    if max(width, height) > MAX_SIDE:
        raise YotoError(f"{name}: image of {width}×{height} pixels exceeds the limit of {MAX_SIDE} pixels per side")


def writable_format(extension: str) -> str | None:
    """The Pillow format that writes files with this extension (``.png``), if any; never .yoto itself."""
    fmt = Image.registered_extensions().get(extension.lower())
    return fmt if fmt in Image.SAVE and fmt != YOTO_FORMAT else None


def output_format(path: Path) -> str:
    """The Pillow format for an output path's extension (PNG for stdout), checked before any work is done."""
    if path == STDIO:
        return "PNG"
    fmt = writable_format(path.suffix)
    if fmt is None:
        raise YotoError(f"{path}: unknown output image type {path.suffix!r} (use e.g. .png, .bmp, .tif, .webp)")
    return fmt


def error_message(exc: Exception) -> str | None:
    """The one-line message for an expected failure; None for anything else (a bug keeps its traceback)."""
    if isinstance(exc, YotoError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, IsADirectoryError):
        return f"is a directory: {exc.filename}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}"
    if isinstance(exc, OSError | Image.DecompressionBombError):
        return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return None
