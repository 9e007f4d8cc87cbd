"""Rate control: size and bpp budgets met from below within 2 %, PSNR targets reached, in few trial encodings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import synthetic
from PIL import Image

import yotocodec
from yotocodec import ratecontrol
from yotocodec.metrics import psnr
from yotocodec.ratecontrol import encode_to_bpp, encode_to_psnr, encode_to_size, parse_size

MAX_TRIALS = 12


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return synthetic(128, 96)


@pytest.fixture(scope="module")
def extremes(image, model) -> tuple[int, int]:
    """Sizes at quality 0 and 100: the range a size target can be met inside."""
    return len(yotocodec.encode(image, 0, model=model)), len(yotocodec.encode(image, 100, model=model))


@pytest.mark.parametrize(
    ("text", "size"),
    [("1200", 1200), ("900B", 900), ("40KB", 40_000), ("40 kb", 40_000), ("64KiB", 65_536), ("1.5MB", 1_500_000),
     ("2MiB", 2 << 20), (".5KB", 500)],
)  # fmt: skip
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "KB", "12XB", "-5KB", "0", "1e3", "40 K B"])
def test_parse_size_refuses(text):
    with pytest.raises(yotocodec.YotoError, match="size"):
        parse_size(text)


@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.85])
def test_size_inside_range(image, model, extremes, fraction):
    smallest, largest = extremes
    target = round(smallest * (largest / smallest) ** fraction)
    data, trials = encode_to_size(image, target, model=model)
    assert 0.98 * target <= len(data) <= target
    assert trials <= MAX_TRIALS
    info = yotocodec.inspect(data, model=model)
    assert yotocodec.encode(image, info.quality, model=model) == data  # an ordinary encoding at that quality
    assert yotocodec.decode(data, model=model).size == image.size


def test_size_at_the_ends_of_the_range(image, model, extremes):
    smallest, largest = extremes
    best = yotocodec.encode(image, 100, model=model)
    assert encode_to_size(image, largest, model=model) == (best, 1)
    assert encode_to_size(image, largest * 10, model=model) == (best, 1)
    data, _ = encode_to_size(image, smallest, model=model)
    assert data == yotocodec.encode(image, 0, model=model)


def test_size_below_range(image, model, extremes):
    smallest, _ = extremes
    with pytest.raises(yotocodec.YotoError, match=f"below the smallest encoding of this image \\({smallest} bytes"):
        encode_to_size(image, smallest - 1, model=model)
    with pytest.raises(yotocodec.YotoError, match="number of bytes"):
        encode_to_size(image, -5, model=model)


def test_bpp(image, model, extremes):
    pixels = image.width * image.height
    target = math.sqrt(extremes[0] * extremes[1]) * 8 / pixels
    data, trials = encode_to_bpp(image, target, model=model)
    assert 0.98 * target <= yotocodec.inspect(data).bpp <= target and trials <= MAX_TRIALS
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(yotocodec.YotoError, match="bpp"):
            encode_to_bpp(image, bad, model=model)


@pytest.mark.parametrize(
    "curve",
    [
        lambda x: 600 * 40 ** (x**1.2),  # log size a little convex in quality
        lambda x: 600 * 40 ** (x**0.8),  # … or a little concave
        lambda x: 400 + 40_000 * x,  # size itself linear: log size strongly concave
    ],
)
def test_size_search_over_a_trained_models_range(monkeypatch, model, curve):
    """The shipped checkpoint spans only ~15 % in size; a trained model spans ~50×. Few trials there too."""

    def fake_encode(image, quality, *, model):
        return bytes(int(curve(quality / 100)))

    monkeypatch.setattr(ratecontrol, "encode", fake_encode)
    smallest, largest = int(curve(0)), int(curve(1))
    for target in np.geomspace(smallest / 0.98, largest, 40).astype(int):
        data, trials = encode_to_size(Image.new("RGB", (8, 8)), int(target), model=model)
        assert 0.98 * target <= len(data) <= target and trials <= MAX_TRIALS, (target, len(data), trials)


def test_psnr_search_over_a_trained_models_range(monkeypatch, model):
    """PSNR rising from 24 to 42 dB: the smallest file reaching each target, within 0.1 dB, in few trials."""

    def quality(data: bytes) -> float:
        return int.from_bytes(data[:2], "big") / 65535 * 100

    def fake_encode(image, q, *, model):
        code = round(q / 100 * 65535)
        return code.to_bytes(2, "big") + bytes(int(600 * 40 ** (q / 100)))

    def fake_decode(data, *, model):
        return Image.new("RGB", (1, 1), (data[0], data[1], 0))

    def fake_psnr(reference, decoded):
        return 24 + 18 * (quality(bytes(decoded[0, 0, :2])) / 100) ** 0.8

    monkeypatch.setattr(ratecontrol, "encode", fake_encode)
    monkeypatch.setattr(ratecontrol, "decode", fake_decode)
    monkeypatch.setattr(ratecontrol, "psnr", fake_psnr)
    for target in np.linspace(24.2, 41.9, 30):
        data, trials = encode_to_psnr(Image.new("RGB", (8, 8)), float(target), model=model)
        reached = 24 + 18 * (quality(data) / 100) ** 0.8
        assert target <= reached <= target + ratecontrol.PSNR_TOLERANCE_DB and trials <= MAX_TRIALS


@pytest.fixture(scope="module")
def photo_psnr(model) -> tuple[Image.Image, float, float]:
    """A small real photo and its PSNR at quality 0 and 100."""
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((128, 128))
    reference = np.asarray(photo)
    scores = [psnr(reference, np.asarray(yotocodec.decode(yotocodec.encode(photo, q, model=model)))) for q in (0, 100)]
    return photo, scores[0], scores[1]


def test_psnr_targets(model, photo_psnr):
    photo, at_0, at_100 = photo_psnr
    assert encode_to_psnr(photo, at_0 - 1, model=model) == (yotocodec.encode(photo, 0, model=model), 1)
    with pytest.raises(yotocodec.YotoError, match="out of reach for this image: quality 100 gives"):
        encode_to_psnr(photo, max(at_0, at_100) + 5, model=model)
    with pytest.raises(yotocodec.YotoError, match="finite"):
        encode_to_psnr(photo, math.nan, model=model)
    if at_100 <= at_0:
        pytest.skip("this checkpoint's PSNR does not rise with quality on the photo")
    target = (at_0 + at_100) / 2
    data, trials = encode_to_psnr(photo, target, model=model)
    reached = psnr(np.asarray(photo), np.asarray(yotocodec.decode(data, model=model)))
    assert reached >= target and trials <= MAX_TRIALS
    assert len(data) <= len(yotocodec.encode(photo, 100, model=model))
