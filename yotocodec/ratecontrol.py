"""Rate control: the encoding that fits a file-size budget, or the smallest one that reaches a PSNR.

One model covers every quality, so both are a one-dimensional search over the continuous quality with the ordinary
public encoder — no second implementation of coding. The search runs on the 16-bit λ codes the header can store
(quality = code / 65535 · 100), so no two trials ever produce the same file.

Log file size and PSNR are both close to linear in quality (quality is log λ), so the search interpolates
(regula falsi with the Illinois modification) and falls back to bisection whenever the bracket stops halving:
a handful of trial encodings, never more than about 2·16.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .codec import decode, encode
from .container import LAMBDA_CODE_MAX
from .errors import YotoError
from .loading import ModelLike, resolve
from .metrics import psnr
from .pixels import split_image
from .quality import quality_of

SIZE_TOLERANCE = 0.02
"""A target size inside the model's range is met from below to within this fraction."""
PSNR_TOLERANCE_DB = 0.1
"""A PSNR target is met from above to within this many dB (about 2 % of the rate at typical qualities)."""

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in a size such as ``40KB``, ``1.5 MB``, ``64KiB`` or ``1200`` (1 KB = 1000 B, 1 KiB = 1024 B)."""
    match = _SIZE.fullmatch(text)
    unit = match and _SIZE_UNITS.get(match[2].lower())
    if not unit:
        raise YotoError(f"{text!r} is not a size (use e.g. 40KB, 64KiB, 1.5MB or a number of bytes)")
    size = int(float(match[1]) * unit)
    if size < 1:
        raise YotoError(f"a target size must be at least 1 byte, got {text!r}")
    return size


@dataclass(frozen=True)
class _Trial:
    code: int
    data: bytes
    value: float  # rises with the code: log size, or PSNR


def _search(measure: Callable[[int], _Trial], lo: _Trial, hi: _Trial, low: float, high: float) -> _Trial | None:
    """A trial with ``low ≤ value ≤ high`` between ``lo`` (value below ``low``) and ``hi`` (above ``high``).

    Returns None when the bracket closes to adjacent codes first (the value jumps over the window there);
    ``lo`` and ``hi`` are then the best trials on either side, which the callers read from the closure's record.
    """
    aim = (low + high) / 2
    f_lo, f_hi = lo.value - aim, hi.value - aim
    kept = 0  # which end the last step replaced: -1 lo, +1 hi
    widths = [hi.code - lo.code]
    while hi.code - lo.code > 1:
        if len(widths) >= 3 and widths[-1] > widths[-3] / 2:  # interpolation is crawling: bisect
            code = (lo.code + hi.code) // 2
        else:
            code = lo.code + round((hi.code - lo.code) * -f_lo / (f_hi - f_lo))
        trial = measure(min(max(code, lo.code + 1), hi.code - 1))
        if low <= trial.value <= high:
            return trial
        if trial.value < low:
            lo, f_lo = trial, trial.value - aim
            if kept == -1:  # Illinois: the same end moved twice, so pull the stale one in
                f_hi /= 2
            kept = -1
        else:
            hi, f_hi = trial, trial.value - aim
            if kept == 1:
                f_lo /= 2
            kept = 1
        widths.append(hi.code - lo.code)
    return None


def encode_to_size(image: Image.Image, max_bytes: int, *, model: ModelLike = None) -> tuple[bytes, int]:
    """The highest-quality encoding of at most ``max_bytes`` bytes, and the number of trial encodings it took.

    Inside the model's range (between the sizes at quality 0 and 100) the result is within 2 % below the target,
    unless the size jumps across that whole window between two adjacent λ codes (only for tiny images);
    above it the result is the quality-100 encoding; below it, a YotoError.
    """
    if not isinstance(max_bytes, int) or max_bytes < 0:
        raise YotoError(f"the target size must be a number of bytes, got {max_bytes!r}")
    net = resolve(model)
    trials: list[_Trial] = []

    def measure(code: int) -> _Trial:
        data = encode(image, quality_of(code), model=net)
        trials.append(_Trial(code, data, math.log(len(data))))
        return trials[-1]

    best = measure(LAMBDA_CODE_MAX)
    if len(best.data) <= max_bytes:
        return best.data, len(trials)
    smallest = measure(0)
    if len(smallest.data) > max_bytes:
        raise YotoError(
            f"a target of {max_bytes} bytes is below the smallest encoding of this image "
            f"({len(smallest.data)} bytes at quality 0)"
        )
    low, high = math.log(max_bytes * (1 - SIZE_TOLERANCE)), math.log(max_bytes)
    if smallest.value < low:
        found = _search(measure, smallest, best, low, high)
        if found is not None:
            return found.data, len(trials)
    fitting = max((t for t in trials if len(t.data) <= max_bytes), key=lambda t: t.code)
    return fitting.data, len(trials)


def encode_to_bpp(image: Image.Image, max_bpp: float, *, model: ModelLike = None) -> tuple[bytes, int]:
    """:func:`encode_to_size` with the budget in bits per pixel (of the whole file, as every yotocodec bpp)."""
    if not isinstance(max_bpp, (int, float)) or not 0 < max_bpp < math.inf:
        raise YotoError(f"the target bpp must be a positive number, got {max_bpp!r}")
    return encode_to_size(image, math.floor(max_bpp * image.width * image.height / 8), model=model)


def encode_to_psnr(image: Image.Image, min_psnr: float, *, model: ModelLike = None) -> tuple[bytes, int]:
    """The smallest encoding whose RGB PSNR reaches ``min_psnr`` dB (to within 0.1 dB above it), and the trials.

    Each trial is an encode and a decode. A YotoError if even quality 100 stays below the target.
    """
    if not isinstance(min_psnr, (int, float)) or not math.isfinite(min_psnr):
        raise YotoError(f"the target PSNR must be a finite number of dB, got {min_psnr!r}")
    net = resolve(model)
    reference = split_image(image)[0]
    trials: list[_Trial] = []

    def measure(code: int) -> _Trial:
        data = encode(image, quality_of(code), model=net)
        decoded = np.asarray(decode(data, model=net).convert("RGB"))
        trials.append(_Trial(code, data, psnr(reference, decoded)))
        return trials[-1]

    smallest = measure(0)
    if smallest.value >= min_psnr:
        return smallest.data, len(trials)
    best = measure(LAMBDA_CODE_MAX)
    if best.value < min_psnr:
        raise YotoError(
            f"a PSNR of {min_psnr:g} dB is out of reach for this image: quality 100 gives {best.value:.2f} dB"
        )
    low, high = min_psnr, min_psnr + PSNR_TOLERANCE_DB
    if best.value > high:
        found = _search(measure, smallest, best, low, high)
        if found is not None:
            return found.data, len(trials)
    reaching = min((t for t in trials if t.value >= min_psnr), key=lambda t: len(t.data))
    return reaching.data, len(trials)
