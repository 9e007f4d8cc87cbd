"""Hostile and unusual input files through the command line.

Each one is either coded correctly (it decodes back to the right size and mode) or refused with one ``error:`` line
and exit code 1, never a traceback; either way the input file is left untouched and no partial output is left behind.
(test_cli.py covers the zero-byte, text and half-truncated PNG and JPEG inputs and the corrupt ``.yoto`` headers.)
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from conftest import synthetic
from PIL import Image, ImageFile

import yotocodec
from yotocodec.cli import main
from yotocodec.container import MAX_PIXELS, MAX_SIDE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def run(*args: object, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """The signature and IHDR chunk of a PNG (colour type 0: grey, 2: RGB)."""
    return PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))


def png_file(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written byte by byte, for what Pillow will not write (16-bit RGB) or what no sane writer makes."""
    return png_header(width, height, bit_depth, colour_type) + png_chunk(b"IDAT", zlib.compress(rows)) + IEND


def sixteen_bit_png(path: Path, channels: int) -> None:
    """A 16-bit greyscale (1 channel) or RGB (3) PNG that spans the whole 16-bit range."""
    rng = np.random.default_rng(7)
    height, width = 30, 40
    pixels = np.linspace(0, 65535, height * width * channels).reshape(height, width, channels)
    pixels = (pixels + rng.normal(0, 500, pixels.shape)).clip(0, 65535).astype(">u2")
    rows = b"".join(b"\0" + row.tobytes() for row in pixels)  # filter type 0 before each row
    path.write_bytes(png_file(width, height, 16, 0 if channels == 1 else 2, rows))


def round_trip(source: Path, tmp_path: Path) -> Image.Image:
    """Encode and decode ``source`` with the CLI, checking that neither step touches its input; the decoded image."""
    encoded, decoded = tmp_path / "out.yoto", tmp_path / "out.png"
    source_digest = digest(source)
    result = run("encode", source, "-q", "50", "-o", encoded)
    assert result.exit_code == 0 and result.stderr == "", result.output
    encoded_digest = digest(encoded)
    result = run("decode", encoded, "-o", decoded)
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert digest(source) == source_digest and digest(encoded) == encoded_digest
    with Image.open(decoded) as image:
        image.load()
    return image


def assert_refused(args: list[object], message: str, directory: Path, stdin: bytes | None = None) -> None:
    """One ``error:`` line with ``message``, exit code 1, no traceback; nothing in ``directory`` written or changed."""
    before = {path: digest(path) for path in directory.rglob("*") if path.is_file()}
    result = run(*args, stdin=stdin)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == "" and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr
    assert {path: digest(path) for path in directory.rglob("*") if path.is_file()} == before


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("signature-only.png", PNG_SIGNATURE, "not an image file Pillow can read"),
        ("cut-in-header.png", png_header(40, 30)[:20], "cannot decode image"),
        ("no-pixel-data.png", png_header(40, 30) + IEND, "cannot decode image"),
        ("short-pixel-data.png", png_file(40, 30, 8, 2, bytes(50)), "cannot decode image"),
        ("zero-width.png", png_file(0, 30, 8, 2, b""), "not an image file Pillow can read"),
        ("soi-only.jpg", b"\xff\xd8\xff", "not an image file Pillow can read"),
        ("header-only.gif", b"GIF89a", "not an image file Pillow can read"),
        ("bad-header.bmp", b"BM" + bytes(60), "cannot decode image"),
    ],
)
def test_broken_image_files(tmp_path, name, content, message):
    source = tmp_path / name
    source.write_bytes(content)
    assert_refused(["encode", source, "-o", tmp_path / "out.yoto"], f"{source}: {message}", tmp_path)


def test_corrupt_pixel_data(tmp_path):
    """A valid PNG header over a deflate stream that is not one: refused while decoding the pixels."""
    source = tmp_path / "bad.png"
    source.write_bytes(png_header(40, 30) + png_chunk(b"IDAT", b"garbage, not zlib") + IEND)
    assert_refused(["encode", source, "-o", tmp_path / "out.yoto"], "cannot decode image", tmp_path)


def test_jpeg_cut_before_its_pixels(tmp_path):
    data = io.BytesIO()
    synthetic(40, 30).save(data, "JPEG")
    source = tmp_path / "cut.jpg"
    source.write_bytes(data.getvalue()[: data.getvalue().index(b"\xff\xda")])  # everything up to the scan
    assert_refused(["encode", source, "-o", tmp_path / "out.yoto"], "cannot decode image", tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.yoto", b"", "truncated: 0 bytes"),
        ("text.yoto", b"hello\n", "truncated: 6 bytes"),
        ("magic-only.yoto", b"YOTO", "truncated: 4 bytes"),
        ("image.yoto", png_file(40, 30, 8, 2, bytes(30 * 121)), "not a yotocodec file"),
    ],
)
def test_broken_yoto_files(tmp_path, name, content, message):
    source = tmp_path / name
    source.write_bytes(content)
    assert_refused(["decode", source, "-o", tmp_path / "out.png"], message, tmp_path)


def test_missing_output_directory_and_directory_input(tmp_path):
    source = tmp_path / "in.png"
    synthetic(20, 10).save(source)
    assert_refused(
        ["encode", source, "-o", tmp_path / "nope" / "out.yoto"], f"no such directory: {tmp_path / 'nope'}", tmp_path
    )
    assert_refused(["encode", tmp_path, "-o", tmp_path / "out.yoto"], f"is a directory: {tmp_path}", tmp_path)


def test_jpeg_named_png(tmp_path):
    source = tmp_path / "photo.png"
    synthetic(40, 30).save(source, "JPEG")
    image = round_trip(source, tmp_path)
    assert (image.size, image.mode) == ((40, 30), "RGB")


@pytest.mark.parametrize(("channels", "pillow_mode", "mode"), [(3, "RGB", "RGB"), (1, "I;16", "L")])
def test_sixteen_bit_png(tmp_path, channels, pillow_mode, mode):
    source = tmp_path / "deep.png"
    sixteen_bit_png(source, channels)
    with Image.open(source) as original:
        assert original.mode == pillow_mode  # Pillow keeps 16-bit grey, and reads 16-bit RGB as 8-bit RGB
    image = round_trip(source, tmp_path)
    assert (image.size, image.mode) == ((40, 30), mode)


def test_palette_png(tmp_path):
    source = tmp_path / "palette.png"
    synthetic(40, 30).quantize(16).save(source)
    with Image.open(source) as original:
        assert original.mode == "P" and "transparency" not in original.info
    image = round_trip(source, tmp_path)
    assert (image.size, image.mode) == ((40, 30), "RGB")


def test_palette_png_with_transparency(tmp_path):
    source = tmp_path / "palette.png"
    synthetic(40, 30).quantize(16).save(source, transparency=3)
    with Image.open(source) as original:
        assert original.mode == "P"
        alpha = np.asarray(original.convert("RGBA"))[:, :, 3]
    assert 0 < np.count_nonzero(alpha == 0) < alpha.size
    image = round_trip(source, tmp_path)
    assert (image.size, image.mode) == ((40, 30), "RGBA")
    assert np.array_equal(np.asarray(image)[:, :, 3], alpha)


def test_cmyk_jpeg(tmp_path):
    source = tmp_path / "cmyk.jpg"
    synthetic(40, 30).convert("CMYK").save(source, "JPEG")
    with Image.open(source) as original:
        assert original.mode == "CMYK"
    image = round_trip(source, tmp_path)
    assert (image.size, image.mode) == ((40, 30), "RGB")


def test_grey_with_alpha_keeps_alpha_exactly(tmp_path):
    source = tmp_path / "la.png"
    synthetic(40, 30, "LA").save(source)
    with Image.open(source) as original:
        assert original.mode == "LA"
        alpha = np.asarray(original)[:, :, 1]
    image = round_trip(source, tmp_path)
    assert (image.size, image.mode) == ((40, 30), "LA")
    assert np.array_equal(np.asarray(image)[:, :, 1], alpha)


@pytest.mark.parametrize("size", [(1, 1), (1, 50), (50, 1)])
def test_degenerate_sizes(tmp_path, size):
    source = tmp_path / "thin.png"
    synthetic(*size).save(source)
    image = round_trip(source, tmp_path)
    assert (image.size, image.mode) == (size, "RGB")


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg(tmp_path, orientation):
    """Orientations 6 and 8 are quarter turns: the camera's 40×30 pixels are a 30×40 picture."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    source = tmp_path / "rotated.jpg"
    synthetic(40, 30).save(source, "JPEG", exif=exif)
    image = round_trip(source, tmp_path)
    assert (image.size, image.mode) == ((30, 40), "RGB")


def declared_png(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares ``width``×``height``; its pixel data is a token."""
    return png_file(width, height, 8, 2, bytes(64))


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (8200, 8200, f"image of 8200×8200 pixels exceeds the limit of {MAX_PIXELS} pixels"),
        (10_000, 10_000, f"image of 10000×10000 pixels exceeds the limit of {MAX_PIXELS} pixels"),  # Pillow warns
        (20_000, 20_000, f"image of 400000000 pixels exceeds the limit of {MAX_PIXELS} pixels"),  # Pillow refuses
        (MAX_SIDE + 1, 1, f"image of {MAX_SIDE + 1}×1 pixels exceeds the limit of {MAX_SIDE} pixels per side"),
    ],
)
@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")  # a warning would be a second line
def test_image_over_the_limits_is_refused_before_decoding(tmp_path, model, monkeypatch, width, height, message):
    """The declared size is checked from the header: not one pixel is decoded (or allocated), so it is quick.

    (``model`` is loaded beforehand, so the time measured is the refusal's.)
    """

    def load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the pixels of an image over the limit were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    source = tmp_path / "huge.png"
    source.write_bytes(declared_png(width, height))
    start = time.perf_counter()
    assert_refused(["encode", source, "-o", tmp_path / "out.yoto"], f"{source}: {message}", tmp_path)
    assert time.perf_counter() - start < 5


def test_image_over_the_limit_on_stdin(tmp_path, model):
    message = f"<stdin>: image of 400000000 pixels exceeds the limit of {MAX_PIXELS} pixels"
    assert_refused(["encode", "-", "-o", tmp_path / "out.yoto"], message, tmp_path, stdin=declared_png(20_000, 20_000))


def start_cli(directory: Path, *args: str, ready: str = "yotocodec.batch") -> subprocess.Popen:
    """``python -m yotocodec ARGS`` in ``directory``, returned once the command is running (its imports are done).

    The coding commands import torch (seconds) when they start; the interpreter's own import-time report
    (PYTHONPROFILEIMPORTTIME) says when ``ready`` (by default ``yotocodec.batch``, which they import last) has been
    imported.
    """
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    command = [sys.executable, "-m", "yotocodec", *args]
    proc = subprocess.Popen(command, cwd=directory, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if re.search(rf"\|\s*{re.escape(ready)}$", line):
            return proc
    raise AssertionError(f"the CLI exited with code {proc.wait()} before it started")


def interrupt(proc: subprocess.Popen, after: float) -> tuple[int, list[str]]:
    """Send Ctrl-C ``after`` seconds into the command; its exit code and stderr lines (import report left out)."""
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, [line for line in stderr.splitlines() if not line.startswith("import time:")]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_while_encoding(tmp_path):
    source = tmp_path / "big.png"
    synthetic(1500, 1500).save(source)
    source_digest = digest(source)
    code, stderr = interrupt(start_cli(tmp_path, "encode", "big.png", "-o", "out.yoto"), after=1.0)
    assert code == 130 and stderr == ["error: interrupted; no output written"], stderr
    assert list(tmp_path.iterdir()) == [source] and digest(source) == source_digest


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_while_decoding(tmp_path, model):
    source = tmp_path / "big.yoto"
    source.write_bytes(yotocodec.encode(synthetic(1200, 1200), 50, model=model))
    source_digest = digest(source)
    code, stderr = interrupt(start_cli(tmp_path, "decode", "big.yoto", "-o", "out.png"), after=1.0)
    assert code == 130 and stderr == ["error: interrupted; no output written"], stderr
    assert list(tmp_path.iterdir()) == [source] and digest(source) == source_digest


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")
def test_ctrl_c_while_the_command_starts(tmp_path):
    """Ctrl-C while a coding command still imports torch is the same one-line message as later on."""
    source = tmp_path / "small.png"
    synthetic(64, 64).save(source)
    code, stderr = interrupt(start_cli(tmp_path, "encode", "small.png", "-o", "out.yoto", ready="yotocodec.cli"), 0.2)
    assert code == 130 and stderr == ["error: interrupted; no output written"], stderr
    assert list(tmp_path.iterdir()) == [source]
