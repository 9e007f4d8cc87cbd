"""Distortion and rate measures, shared by training, tests and benchmarks."""

from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _ms_ssim
from torch import Tensor


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB between two uint8 arrays of the same shape (inf if identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """RGB MS-SSIM of two ``(H, W, 3)`` uint8 arrays; images under 161 px a side are too small and give nan."""
    if min(a.shape[:2]) < 161:
        return math.nan
    ta, tb = (torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].double() for x in (a, b))
    return float(_ms_ssim(ta, tb, data_range=255))


def bpp_from_likelihoods(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Per-example rate estimate ``(B,)`` in bits per pixel, for training and quick validation only."""
    return sum(-torch.log2(v).flatten(1).sum(1) for v in likelihoods.values()) / num_pixels


def mse_per_example(x: Tensor, x_hat: Tensor) -> Tensor:
    """``(B,)`` mean squared error over channels and pixels, on the [0, 1] scale."""
    return (x - x_hat).pow(2).flatten(1).mean(1)
