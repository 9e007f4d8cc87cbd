"""The analysis and synthesis transforms run on overlapping tiles, so memory stays bounded on large images.

Tiles are aligned to the transforms' stride and carry a halo wider than their receptive field; only each tile's
centre is kept, so the result is the whole-image computation up to floating-point rounding — no seams — and the
bitstream does not depend on the tiling.  Images up to one tile are computed in one piece.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .model import YotoHyperprior, precision

STRIDE = 16  # total downsampling of g_a (and upsampling of g_s)
TILE = 768  # pixels of output per tile side, a multiple of STRIDE: a Kodak image is one piece (float32: ~0.7 GB a tile)
HALO = 64  # pixels of context around a tile: more than the receptive-field radius of g_a (30) and g_s (≈40)


def spans(length: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(core start, core end, context start, context end) of each tile along one axis."""
    return [
        (start, min(start + tile, length), max(0, start - halo), min(length, start + tile + halo))
        for start in range(0, length, tile)
    ]


def analysis(net: YotoHyperprior, image: np.ndarray, emb: Tensor) -> Tensor:
    """``g_a`` of an ``(H, W, 3)`` uint8 image with sides a multiple of the stride; returns ``(1, M, H/16, W/16)``."""
    height, width = image.shape[:2]
    dtype = precision(net.g_a)
    y = torch.empty((1, net.config.M, height // STRIDE, width // STRIDE), dtype=dtype)
    emb = emb.to(dtype)
    for r0, r1, R0, R1 in spans(height, TILE, HALO):
        for c0, c1, C0, C1 in spans(width, TILE, HALO):
            # (H, W, 3) pixels are already channels-last: the layout the coding model's convolutions run fastest in
            x = torch.from_numpy(image[R0:R1, C0:C1]).permute(2, 0, 1)[None].to(dtype) / 255
            out = net.g_a(x.contiguous(memory_format=torch.channels_last), emb)
            y[..., r0 // STRIDE : r1 // STRIDE, c0 // STRIDE : c1 // STRIDE] = out[
                ..., (r0 - R0) // STRIDE : (r1 - R0) // STRIDE, (c0 - C0) // STRIDE : (c1 - C0) // STRIDE
            ]
    return y


def synthesis(net: YotoHyperprior, y_hat: Tensor, emb: Tensor) -> np.ndarray:
    """``g_s`` of a quantised latent, rounded to an ``(H, W, 3)`` uint8 image."""
    height, width = y_hat.shape[-2] * STRIDE, y_hat.shape[-1] * STRIDE
    image = np.empty((height, width, 3), dtype=np.uint8)
    tile, halo = TILE // STRIDE, HALO // STRIDE
    y_hat, emb = y_hat.to(precision(net.g_s)), emb.to(precision(net.g_s))
    for r0, r1, R0, R1 in spans(y_hat.shape[-2], tile, halo):
        for c0, c1, C0, C1 in spans(y_hat.shape[-1], tile, halo):
            x_hat = net.g_s(y_hat[..., R0:R1, C0:C1].contiguous(memory_format=torch.channels_last), emb)
            core = x_hat[0, :, (r0 - R0) * STRIDE : (r1 - R0) * STRIDE, (c0 - C0) * STRIDE : (c1 - C0) * STRIDE]
            pixels = core.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            image[r0 * STRIDE : r1 * STRIDE, c0 * STRIDE : c1 * STRIDE] = pixels
    return image
