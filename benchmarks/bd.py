"""Bjøntegaard delta metrics: the average gap between two rate–distortion curves over their common range.

The original method fits a cubic polynomial, which overshoots on the dense, slightly noisy sweeps measured here; a
piecewise-cubic monotone (PCHIP) interpolant passes through every point without oscillating.  Each interpolant is
integrated numerically over the overlapping interval (exact integral of the piecewise polynomial).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

METHOD = (
    "PCHIP (monotone piecewise-cubic, scipy) interpolation of log-rate against quality (and of quality against "
    "log-rate for BD-PSNR), integrated over the overlapping quality range; n/a where the curves do not overlap"
)


def msssim_db(value: float | np.ndarray) -> float | np.ndarray:
    """MS-SSIM on a dB scale, -10·log10(1 - MS-SSIM), which spreads the crowded high-quality end of the curve."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -10 * np.log10(1 - np.asarray(value, dtype=float))


def _curve(x: Sequence[float], y: Sequence[float]) -> PchipInterpolator | None:
    """Interpolant of y(x) through the finite points, sorted by x, with repeated x averaged; None under two points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    xs, inverse = np.unique(x[keep], return_inverse=True)
    if len(xs) < 2:
        return None
    ys = np.bincount(inverse, weights=y[keep]) / np.bincount(inverse)
    return PchipInterpolator(xs, ys)


def _mean_gap(
    x_ref: Sequence[float], y_ref: Sequence[float], x_test: Sequence[float], y_test: Sequence[float]
) -> float:
    """Mean of y_test(x) - y_ref(x) over the x range both curves cover; nan without overlap."""
    ref, test = _curve(x_ref, y_ref), _curve(x_test, y_test)
    if ref is None or test is None:
        return math.nan
    lo, hi = max(ref.x[0], test.x[0]), min(ref.x[-1], test.x[-1])
    if not hi > lo:
        return math.nan
    return float((test.integrate(lo, hi) - ref.integrate(lo, hi)) / (hi - lo))


def _log(rate: Sequence[float]) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.asarray(rate, dtype=float))


def bd_rate(
    rate_ref: Sequence[float], dist_ref: Sequence[float], rate_test: Sequence[float], dist_test: Sequence[float]
) -> float:
    """Average rate change of the test curve at equal quality, in percent (negative: the test codec needs fewer bits).

    ``dist_*`` is a quality where higher is better (PSNR, or MS-SSIM in dB); nan when the quality ranges do not overlap.
    """
    gap = _mean_gap(dist_ref, _log(rate_ref), dist_test, _log(rate_test))
    return math.expm1(gap) * 100 if math.isfinite(gap) else math.nan


def bd_psnr(
    rate_ref: Sequence[float], dist_ref: Sequence[float], rate_test: Sequence[float], dist_test: Sequence[float]
) -> float:
    """Average quality gain of the test curve at equal rate, in the unit of ``dist`` (dB for PSNR)."""
    return _mean_gap(_log(rate_ref), dist_ref, _log(rate_test), dist_test)


def quality_gaps(
    rate_ref: Sequence[float], dist_ref: Sequence[float], rate_test: Sequence[float], dist_test: Sequence[float]
) -> list[tuple[float, float]]:
    """The test curve's quality minus the reference's at equal rate, at every measured rate of either curve inside the
    rate range both cover, as ``(rate, gap)`` pairs in rate order (each curve interpolated as in :func:`bd_psnr`)."""
    ref, test = _curve(_log(rate_ref), dist_ref), _curve(_log(rate_test), dist_test)
    if ref is None or test is None:
        return []
    lo, hi = max(ref.x[0], test.x[0]), min(ref.x[-1], test.x[-1])
    rates = np.unique(np.concatenate([ref.x, test.x]))
    return [(float(np.exp(x)), float(test(x) - ref(x))) for x in rates[(rates >= lo) & (rates <= hi)]]


def rate_changes(
    rate_ref: Sequence[float], dist_ref: Sequence[float], rate_test: Sequence[float], dist_test: Sequence[float]
) -> list[float]:
    """At each test point, its rate against the reference curve's at the same quality, in percent; nan where the
    point's quality lies outside the reference's range.  Where a BD-rate averages, this shows where a codec wins."""
    ref = _curve(dist_ref, _log(rate_ref))
    changes = []
    for rate, dist in zip(rate_test, dist_test, strict=True):
        inside = ref is not None and math.isfinite(dist) and ref.x[0] <= dist <= ref.x[-1]
        changes.append(math.expm1(math.log(rate) - float(ref(dist))) * 100 if inside else math.nan)
    return changes
