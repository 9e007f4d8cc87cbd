"""The checkerboard context model (He et al. 2021): the latent is coded in two halves of a checkerboard.

The anchors, half of the positions, are coded with the hyperprior's scales and means alone; every other position is
then coded with those parameters refined from the decoded anchors around it (a masked 5×5 convolution, CompressAI's
``CheckerboardMaskedConv2d``, and a point-wise network).  Two passes instead of one per position as in a serial
context model (Minnen et al. 2018), so decoding stays parallel.  The refinement's last layer starts at zero: a model
given a context starts out coding exactly as it did without one (:func:`yotocodec.training.surgery.add_context`).

Positions are anchors where row + column is even.  For coding, each half is packed into a tensor of half the width
(:func:`split`), as in CompressAI's ``CheckerboardLatentCodec``, so that the coder and the point-wise network see only
the positions of their pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from compressai.layers import CheckerboardMaskedConv2d
from torch import Tensor, nn

from .bands import in_bands

KERNEL = 5


def anchors(shape: torch.Size | tuple[int, ...], device: torch.device | None = None) -> Tensor:
    """The anchor positions of a latent of ``shape`` (``(..., H, W)``), as a boolean ``(H, W)`` map."""
    rows = torch.arange(shape[-2], device=device)[:, None]
    cols = torch.arange(shape[-1], device=device)[None, :]
    return (rows + cols) % 2 == 0


def split(t: Tensor) -> tuple[Tensor, Tensor]:
    """``(anchors, others)`` of ``t`` (``(B, C, H, W)``, H and W even), each packed to ``(B, C, H, W/2)``."""
    return (
        torch.stack((t[..., 0::2, 0::2], t[..., 1::2, 1::2]), dim=-2).flatten(-3, -2),
        torch.stack((t[..., 0::2, 1::2], t[..., 1::2, 0::2]), dim=-2).flatten(-3, -2),
    )


def merge(anchor_half: Tensor, other_half: Tensor) -> Tensor:
    """The inverse of :func:`split`."""
    b, c, h, half = anchor_half.shape
    out = anchor_half.new_empty((b, c, h, 2 * half))
    out[..., 0::2, 0::2], out[..., 1::2, 1::2] = anchor_half[..., 0::2, :], anchor_half[..., 1::2, :]
    out[..., 0::2, 1::2], out[..., 1::2, 0::2] = other_half[..., 0::2, :], other_half[..., 1::2, :]
    return out


class CheckerboardContext(nn.Module):
    """Refines the hyperprior's parameters (scales and means, ``2M`` channels) of the non-anchor positions from the
    decoded anchors."""

    def __init__(self, M: int) -> None:
        super().__init__()
        self.prediction = CheckerboardMaskedConv2d(M, M, kernel_size=KERNEL, padding=KERNEL // 2)
        self.refinement = nn.Sequential(nn.Conv2d(3 * M, 2 * M, 1), nn.LeakyReLU(), nn.Conv2d(2 * M, 2 * M, 1))
        nn.init.zeros_(self.refinement[-1].weight)
        nn.init.zeros_(self.refinement[-1].bias)

    def forward(self, params: Tensor, anchor_latent: Tensor) -> Tensor:
        """Training: refined parameters at every position (those of anchors are to be ignored), from the latent with
        its non-anchor positions zeroed."""
        return params + self.refinement(torch.cat((params, self.prediction(anchor_latent)), dim=1))

    def other_params(self, params: Tensor, anchor_half: Tensor) -> Tensor:
        """Coding: the refined parameters of the non-anchor half, packed, from the packed decoded anchors.

        The masked convolution is evaluated only where its output is used — on rows of one parity at a time, every
        other column (stride 2) — and in bands of rows (:mod:`yotocodec.bands`), so large images stay in memory.
        """
        pad = KERNEL // 2
        padded = F.pad(merge(anchor_half, torch.zeros_like(anchor_half)), (pad, pad, pad, pad))
        conv = nn.Sequential(self._strided_prediction())
        even_rows = in_bands(conv, padded[..., :, 1:], _call)  # outputs at (2i, 2j + 1)
        odd_rows = in_bands(conv, padded[..., 1:, :], _call)  # outputs at (2i + 1, 2j)
        del padded
        context = torch.stack((even_rows, odd_rows), dim=-2).flatten(-3, -2)
        del even_rows, odd_rows
        return params + in_bands(self.refinement, torch.cat((params, context), dim=1), _call)

    @torch.no_grad()
    def _strided_prediction(self) -> nn.Conv2d:
        """The masked convolution as a plain one (mask applied) with stride 2 and no padding."""
        weight = self.prediction.weight * self.prediction.mask
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], KERNEL, stride=2, device="meta")
        conv.weight, conv.bias = nn.Parameter(weight, False), nn.Parameter(self.prediction.bias.clone(), False)
        return conv


def _call(layer: nn.Module, x: Tensor) -> Tensor:
    return layer(x)


def refined(context: CheckerboardContext, params: Tensor, latent: Tensor) -> Tensor:
    """Training: ``params`` (``(B, 2M, H, W)``) with the non-anchor positions' refined from ``latent``'s anchors."""
    mask = anchors(latent.shape, latent.device)
    out = context(params, torch.where(mask, latent, 0.0))
    return torch.where(mask, params, out)


def coding_order(
    context: CheckerboardContext, y: Tensor, scales: Tensor, means: Tensor
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Encoder: (values, scales, means) of the anchors, then of the other half with its parameters refined from the
    anchors as the decoder will have them (rounded around their means), all in the precision of ``scales``."""
    anchor_params, other_params = split(torch.cat((scales, means), dim=1))
    anchor_y, other_y = split(y.to(scales.dtype))
    anchor_scales, anchor_means = anchor_params.chunk(2, dim=1)
    anchor_hat = torch.round(anchor_y - anchor_means) + anchor_means
    other_scales, other_means = context.other_params(other_params, anchor_hat).chunk(2, dim=1)
    return [(anchor_y, anchor_scales, anchor_means), (other_y, other_scales, other_means)]


def decode(
    context: CheckerboardContext, read: Callable[[Tensor], Tensor], indexes_of: Callable[[Tensor], Tensor],
    scales: Tensor, means: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Decoder: ``(y_hat, indexes, symbols)`` of the latent whose halves ``read(indexes)`` returns in the order of
    :func:`coding_order`; ``indexes_of(scales)`` are the scale indexes."""
    anchor_params, other_params = split(torch.cat((scales, means), dim=1))
    anchor_scales, anchor_means = anchor_params.chunk(2, dim=1)
    anchor_indexes = indexes_of(anchor_scales)
    anchor_symbols = read(anchor_indexes)
    anchor_hat = anchor_symbols.to(anchor_means.dtype) + anchor_means
    other_scales, other_means = context.other_params(other_params, anchor_hat).chunk(2, dim=1)
    other_indexes = indexes_of(other_scales)
    other_symbols = read(other_indexes)
    y_hat = merge(anchor_hat, other_symbols.to(other_means.dtype) + other_means)
    return y_hat, merge(anchor_indexes, other_indexes), merge(anchor_symbols, other_symbols)
