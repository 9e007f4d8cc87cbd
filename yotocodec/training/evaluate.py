"""A model on whole images, as validation and the diagnostics see it: padded to the model's stride, run with the
noise-free proxies of quantisation (eval mode rounds the latent), cropped back."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from compressai.ops import compute_padding
from torch import Tensor

from ..metrics import bpp_from_likelihoods, mse_per_example
from ..model import YotoHyperprior
from .data import image_to_tensor


def padded(x: Tensor, min_div: int) -> tuple[Tensor, tuple[int, ...]]:
    """``x`` padded by edge replication to a multiple of ``min_div``, as the codec pads, and the padding that undoes it
    (for ``F.pad``)."""
    pad, unpad = compute_padding(*x.shape[-2:], min_div=min_div)
    return F.pad(x, pad, mode="replicate"), unpad


def forward_image(model: YotoHyperprior, x: Tensor, lmbda: float | Tensor) -> dict:
    """``model``'s forward pass on images ``x`` ``(B, 3, H, W)`` of any size: ``x_hat`` cropped back to ``(H, W)``,
    the likelihoods, and the estimated bpp of each image (from the likelihoods, not a real file)."""
    h, w = x.shape[-2:]
    x_padded, unpad = padded(x, model.downsampling_factor)
    lmbdas = torch.as_tensor(lmbda, dtype=x.dtype, device=x.device).expand(x.shape[0])
    out = model(x_padded, lmbdas)
    return {
        "x_hat": F.pad(out["x_hat"], unpad),
        "likelihoods": out["likelihoods"],
        "bpp": bpp_from_likelihoods(out["likelihoods"], h * w),
    }


def psnr_8bit(x: Tensor, x_hat: Tensor) -> Tensor:
    """PSNR per image of ``x_hat`` rounded to 8 bits, as a decoded file would hold it (both in [0, 1])."""
    return -10 * torch.log10(mse_per_example(x, torch.round(x_hat.clamp(0, 1) * 255) / 255))


@torch.no_grad()
def validate(model: YotoHyperprior, images: list[np.ndarray], lambdas: list[float], device: torch.device) -> list:
    """Mean estimated bpp and PSNR (of the 8-bit reconstruction) over ``images`` at each λ."""
    model.eval()
    results = []
    for lmbda in lambdas:
        bpps, psnrs = [], []
        for img in images:
            x = image_to_tensor(img).to(device)
            out = forward_image(model, x, lmbda)
            bpps.append(float(out["bpp"]))
            psnrs.append(float(psnr_8bit(x, out["x_hat"])))
        results.append({"lmbda": lmbda, "bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs))})
    model.train()
    return results
