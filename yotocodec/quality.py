"""The one mapping between the quality a user asks for, the λ code a file stores and the λ a model is conditioned on.

Quality 0–100 is the position of λ on the model's trained range in log scale (0: λ_min, 100: λ_max).  The header
stores that position as a 16-bit code, and encoder and decoder both condition on the λ decoded from the code, so they
agree bit for bit.  The network's own input (:meth:`~yotocodec.config.ModelConfig.normalise`) is the same position,
stretched onto [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .container import LAMBDA_CODE_MAX
from .errors import YotoError

# Where the shipped curve is still efficient: from about quality 55 up, WebP needs fewer bits for the same PSNR.
DEFAULT_QUALITY = 50.0


@dataclass(frozen=True)
class LambdaRange:
    """A trained λ range, with positions on it measured log-linearly from 0 (``lo``) to 1 (``hi``)."""

    lo: float
    hi: float

    def position(self, lmbda: float) -> float:
        """Where ``lmbda`` lies on the range: 0 at ``lo``, 1 at ``hi`` (0 for a single-λ range)."""
        lo, hi = math.log(self.lo), math.log(self.hi)
        return 0.0 if hi == lo else (math.log(lmbda) - lo) / (hi - lo)

    def affine(self) -> tuple[float, float]:
        """(a, b) with position = a·log λ + b, for callers that map tensors of λ (a = b = 0 for a single λ)."""
        lo, hi = math.log(self.lo), math.log(self.hi)
        if hi == lo:
            return 0.0, 0.0
        return 1.0 / (hi - lo), -lo / (hi - lo)

    def contains(self, lmbda: float) -> bool:
        return self.lo * (1 - 1e-9) <= lmbda <= self.hi * (1 + 1e-9)


def lambda_of(code: int, lmbda_range: LambdaRange) -> float:
    """λ for a header code: code 0 is the range's λ_min, code 65535 its λ_max.

    Decoders of every version must compute exactly this float (it conditions the hyper-synthesis): keep the formula.
    """
    lo, hi = math.log(lmbda_range.lo), math.log(lmbda_range.hi)
    return math.exp(lo + (hi - lo) * code / LAMBDA_CODE_MAX)


def code_for_quality(quality: float | None) -> int:
    """Header code for a quality in [0, 100] (``None``: the default quality)."""
    quality = DEFAULT_QUALITY if quality is None else float(quality)
    if not 0 <= quality <= 100:  # also rejects nan
        raise YotoError(f"quality must be between 0 and 100, got {quality:g}")
    return round(quality / 100 * LAMBDA_CODE_MAX)


def code_for_lambda(lmbda: float, lmbda_range: LambdaRange) -> int:
    """Header code for a λ inside the trained range."""
    if not lmbda_range.contains(lmbda):
        raise YotoError(f"λ = {lmbda:g} is outside this model's trained range [{lmbda_range.lo:g}, {lmbda_range.hi:g}]")
    return round(lmbda_range.position(lmbda) * LAMBDA_CODE_MAX)


def quality_of(code: int) -> float:
    """The quality that maps onto exactly this header code."""
    return code * 100 / LAMBDA_CODE_MAX
