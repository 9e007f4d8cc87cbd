"""Pillow integration: ``Image.open`` reads .yoto files lazily, ``save`` writes them, bad files fail as Pillow's do."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from conftest import srgb_profile, synthetic
from PIL import Image, UnidentifiedImageError

import yotocodec


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_save_open_load(tmp_path, model, mode):
    image = synthetic(72, 40, mode)
    path = tmp_path / "x.yoto"
    image.save(path, quality=60)
    data = path.read_bytes()
    assert data == yotocodec.encode(image, 60, model=model)
    with Image.open(path) as opened:
        assert opened.format == "YOTO" and opened.size == (72, 40) and opened.mode == mode
        assert opened.get_format_mimetype() == "image/x-yoto"
        assert opened.info["quality"] == pytest.approx(60, abs=0.01)
        assert opened.info["lmbda"] == pytest.approx(yotocodec.inspect(data, model=model).lmbda)
        assert opened.info["bpp"] == pytest.approx(len(data) * 8 / (72 * 40))
        assert opened.info["model_id"] == model.model_id
        pixels = np.asarray(opened)
    assert np.array_equal(pixels, np.asarray(yotocodec.decode(data, model=model)))


def test_colour_profile_is_in_info_before_loading(model):
    image = synthetic(40, 32)
    image.info["icc_profile"] = srgb_profile()
    buffer = io.BytesIO()
    image.save(buffer, format="YOTO", quality=50)
    buffer.seek(0)
    with Image.open(buffer) as opened:
        assert opened.info["icc_profile"] == srgb_profile()
        converted = opened.convert("RGB")
    assert converted.info["icc_profile"] == srgb_profile()


def test_save_with_lambda_to_a_stream(model):
    buffer = io.BytesIO()
    synthetic(64, 48).save(buffer, format="YOTO", lmbda=0.01)
    buffer.seek(0)
    with Image.open(buffer) as opened:
        assert opened.info["lmbda"] == pytest.approx(0.01, rel=1e-3)
        converted = opened.convert("L")  # any Pillow operation loads it first
    assert converted.size == (64, 48)


def test_registration():
    assert Image.registered_extensions()[".yoto"] == "YOTO"
    assert Image.MIME["YOTO"] == "image/x-yoto"
    assert "YOTO" in Image.SAVE


def test_plain_import_registers_the_plugin(tmp_path):
    """``import yotocodec`` alone is enough, in a fresh interpreter."""
    path = tmp_path / "x.yoto"
    synthetic(32, 32).save(path, quality=10)
    code = f"import yotocodec; from PIL import Image; im = Image.open({str(path)!r}); im.load(); print(im.size)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "(32, 32)", proc.stderr


def test_decoding_waits_for_load(tmp_path, other_model_path):
    """Open validates the file without decoding it, so a file from another model opens; its pixels then fail."""
    path = tmp_path / "other.yoto"
    synthetic(40, 30).save(path, model=other_model_path)
    with Image.open(path) as opened:
        assert opened.size == (40, 30) and opened.info["lmbda"] is None
        with pytest.raises(yotocodec.YotoError, match="written by model"):
            opened.load()


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (lambda data: b"JUNK" + data[4:], UnidentifiedImageError, "cannot identify image file"),
        (lambda data: data[:4] + bytes([9]) + data[5:], yotocodec.YotoError, "unsupported format version 9"),
        (lambda data: data[:-10], yotocodec.YotoError, "truncated"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 0x55]), yotocodec.YotoError, "CRC32 mismatch"),
    ],
)
def test_malformed_files(damage, error, message):
    data = yotocodec.encode(synthetic(48, 32), 50)
    with pytest.raises(error, match=message):
        Image.open(io.BytesIO(damage(data))).load()
