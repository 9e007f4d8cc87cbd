"""Encoder effort: refine the latent of the one image being coded on its own rate–distortion loss.

The analysis transform is amortised over all images; a few gradient steps on this image's loss
λ·255²·MSE + bpp at the chosen λ find a better latent for it (Campos et al. 2019; Yang, Bamler & Mandt 2020).  Rates use
the additive-noise relaxation of training, the distortion a straight-through rounded latent, so the optimised
quantity is close to what the coder will produce.  Only the encoder changes: the file decodes with the plain decoder.
"""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
from torch import Tensor

from .errors import YotoError
from .model import YotoHyperprior

EFFORT_STEPS = (0, 10, 30, 100)  # gradient steps per effort level 0–3
MAX_EFFORT_PIXELS = 2_000_000  # gradients through g_s need the whole image's activations in memory
LEARNING_RATE = 0.01
CHECK_EVERY = 5  # steps between checks of the real loss (a check costs about a third of a step)


def refine_latent(net: YotoHyperprior, image: Tensor, y: Tensor, emb: Tensor, lmbda: float, effort: int) -> Tensor:
    """A better latent than ``y = g_a(image)`` for this image at this λ; ``image`` is ``(1, 3, H, W)`` in [0, 1]."""
    if not 0 <= effort < len(EFFORT_STEPS):
        raise YotoError(f"effort must be an integer from 0 to {len(EFFORT_STEPS) - 1}, got {effort}")
    if effort and image.shape[-2] * image.shape[-1] > MAX_EFFORT_PIXELS:
        raise YotoError(f"effort above 0 is limited to images of at most {MAX_EFFORT_PIXELS:,} pixels")
    if effort == 0:
        return y
    num_pixels = image.shape[-2] * image.shape[-1]
    with torch.inference_mode(False), torch.enable_grad():  # the codec runs in inference mode: leave it here
        net32 = _float32_twin(net)
        image, emb32, y0 = image.float(), emb.detach().float().clone(), y.detach().float().clone()
        latent = y0.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([latent], lr=LEARNING_RATE)
        with torch.no_grad():
            best, best_loss = y, float(rd_loss(net32, image, y0, emb32, lmbda, num_pixels, noise=False))
        for step in range(1, EFFORT_STEPS[effort] + 1):
            optimizer.zero_grad()
            rd_loss(net32, image, latent, emb32, lmbda, num_pixels, noise=True).backward()
            optimizer.step()
            if step % CHECK_EVERY == 0 or step == EFFORT_STEPS[effort]:
                # The relaxed loss can mislead and a constant step size can wander off a good latent: keep the
                # latent with the lowest real (hard-quantised) loss seen, so more effort is never worse.
                with torch.no_grad():
                    loss = float(rd_loss(net32, image, latent, emb32, lmbda, num_pixels, noise=False))
                if loss < best_loss:
                    best, best_loss = latent.detach().to(y.dtype, copy=True), loss  # not a view of `latent`
    return best


@lru_cache(maxsize=2)
def _float32_twin(net: YotoHyperprior) -> YotoHyperprior:
    """Gradient steps in float32 (twice as fast as the codec's float64); the final coding stays in float64."""
    return copy.deepcopy(net).float()


def rd_loss(net: YotoHyperprior, image: Tensor, y: Tensor, emb: Tensor, lmbda: float, num_pixels: int,
            noise: bool) -> Tensor:  # fmt: skip
    """λ·255²·MSE + bpp for latent ``y``: relaxed (noisy rates) for gradients, hard-quantised for selection."""
    z = net.h_a(net.hyper_input(y), emb)
    z_hat, z_likelihoods = net.entropy_bottleneck(z, training=False)
    if noise:  # noisy rate for z; h_s sees the rounded z straight-through, so gradients still reach y
        _, z_likelihoods = net.entropy_bottleneck(z, training=True)
        z_hat = z + (z_hat - z).detach()
    scales, means = net.y_params(y, z_hat, emb)
    _, y_likelihoods = net.gaussian_conditional(y, scales, means=means, training=noise)
    x_hat = net.g_s(net.straight_through_latent(y, means), emb)
    bits = -(torch.log2(y_likelihoods).sum() + torch.log2(z_likelihoods).sum())
    return lmbda * 255**2 * (x_hat - image).pow(2).mean() + bits / num_pixels
