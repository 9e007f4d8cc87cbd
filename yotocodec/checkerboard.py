"""The checkerboard context model (He et al. 2021): the latent is coded in two halves of a checkerboard.

The anchors, half of the positions, are coded with the hyperprior's scales and means alone; every other position is
then coded with those parameters refined from the decoded anchors around it (a masked 5×5 convolution, CompressAI's
``CheckerboardMaskedConv2d``, and a point-wise network).  Two passes instead of one per position as in a serial
context model (Minnen et al. 2018), so decoding stays parallel.  The refinement's last layer starts at zero: a model
given a context starts out coding exactly as it did without one (:func:`yotocodec.training.surgery.add_context`).

What the convolution sees of an anchor is its integer symbol, the value less the hyperprior's mean: the part the
hyperprior did not predict, which is what a neighbour's value can still tell something about.

Positions are anchors where row + column is even.  For coding, each half is packed into a tensor of half the width
(:func:`split`), as in CompressAI's ``CheckerboardLatentCodec``, so that the coder and the point-wise network see only
the positions of their pass.  A latent with an odd side is packed as if edge-padded to even sides; the padded
positions are not coded, and a padded anchor counts as symbol 0 for its neighbours.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from compressai.layers import CheckerboardMaskedConv2d
from torch import Tensor, nn

from .bands import in_bands
from .padding import pad_to_multiple

KERNEL = 5
SCALE_FLOOR = 0.11  # the least scale of CompressAI's GaussianConditional (scale_bound): below it every scale is it


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


class MaskedPrediction(CheckerboardMaskedConv2d):
    """CompressAI's checkerboard-masked convolution, its mask rebuilt on construction rather than stored: a full-size
    float32 copy of the kernel's shape in every weights file (10 MB at M = 320) for a fixed pattern."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, kernel_size=KERNEL, padding=KERNEL // 2)
        mask = self._buffers.pop("mask")
        self.register_buffer("mask", mask, persistent=False)


class CheckerboardContext(nn.Module):
    """Refines the hyperprior's parameters (scales and means, ``2M`` channels) of the non-anchor positions from the
    decoded anchors, in units of the hyperprior's own scales: one model codes λ over a range of 2,500, where the
    latent's values span a hundredfold, and what a neighbour's residual says is the same in those units."""

    def __init__(self, M: int) -> None:
        super().__init__()
        self.prediction = MaskedPrediction(M)
        self.refinement = nn.Sequential(nn.Conv2d(M, 2 * M, 1), nn.LeakyReLU(), nn.Conv2d(2 * M, 2 * M, 1))
        self._start_from_the_neighbours(M)

    @torch.no_grad()
    def _start_from_the_neighbours(self, M: int) -> None:
        """Start where the evidence points: each channel's context is the mean of its four nearest anchors' residuals
        (in a trained model's latent it correlates with the position's own residual, 0.4–0.6 over Kodak, and in
        magnitude 0.7), passed through the hidden layer as its positive and negative parts; the last layer is zero, so
        nothing changes until training weighs them."""
        for layer in (self.prediction, *self.refinement[::2]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        channels = torch.arange(M)
        centre = KERNEL // 2
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            self.prediction.weight[channels, channels, centre + dy, centre + dx] = 0.25
        first = self.refinement[0].weight[:, :, 0, 0]  # (2M hidden, M context)
        first[channels, channels] = 1.0
        first[M + channels, channels] = -1.0

    def forward(self, scales: Tensor, means: Tensor, anchor_symbols: Tensor) -> tuple[Tensor, Tensor]:
        """Training: refined scales and means at every position (those of anchors are to be ignored), from the
        symbols with the non-anchor positions' zeroed."""
        context = self.prediction(anchor_symbols / scales.clamp(min=SCALE_FLOOR))
        return _refined(self.refinement(context), scales, means)

    def other_params(
        self, anchor_scales: Tensor, scales: Tensor, means: Tensor, anchor_symbols: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Coding: the refined scales and means of the non-anchor half, packed, from the anchors' scales and symbols,
        packed."""
        context = self._context(anchor_symbols / anchor_scales.clamp(min=SCALE_FLOOR))
        return _refined(in_bands(self.refinement, context, _call), scales, means)

    def _context(self, anchor_half: Tensor) -> Tensor:
        """The masked convolution at the non-anchor positions only, packed, from its 12 live taps only.

        Anchors on even rows (E, at (2a, 2c)) and on odd rows (O, at (2a + 1, 2c + 1)) are two quarter-size grids; a
        non-anchor on an even row, at (2i, 2j + 1), sees E through the taps of even row and odd column offset (a 3×2
        kernel over E's rows i − 1…i + 1 and columns j…j + 1) and O through the others (2×3), and one on an odd row,
        at (2i + 1, 2j), likewise.  A quarter of the arithmetic of the full convolution, computed in bands of rows
        (:mod:`yotocodec.bands`) so that large images stay in memory.
        """
        weight, bias = self.prediction.weight, self.prediction.bias
        even, odd = anchor_half[..., 0::2, :], anchor_half[..., 1::2, :]
        even_taps, odd_taps = weight[:, :, 0::2, 1::2], weight[:, :, 1::2, 0::2]  # (3, 2) and (2, 3) kernels
        on_even_rows = _conv(even, even_taps, (0, 1, 1, 1), bias) + _conv(odd, odd_taps, (1, 1, 1, 0))
        on_odd_rows = _conv(even, odd_taps, (1, 1, 0, 1), bias) + _conv(odd, even_taps, (1, 0, 1, 1))
        return torch.stack((on_even_rows, on_odd_rows), dim=-2).flatten(-3, -2)


def _refined(change: Tensor, scales: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
    """Scales times exp of the first half of ``change``, means plus scales times the second."""
    log_factor, shift = change.chunk(2, dim=1)
    floor = scales.clamp(min=SCALE_FLOOR)
    return floor * torch.exp(log_factor), means + floor * shift


def _conv(x: Tensor, weight: Tensor, pad: tuple[int, int, int, int], bias: Tensor | None = None) -> Tensor:
    """An unpadded convolution of ``x`` padded by ``pad`` (left, right, top, bottom) with zeros, in bands of rows."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[-2:]), bias=bias is not None, device="meta")
    conv.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        conv.bias = nn.Parameter(bias, requires_grad=False)
    return in_bands(nn.Sequential(conv), F.pad(x, pad), _call)


def _call(layer: nn.Module, x: Tensor) -> Tensor:
    return layer(x)


def refined(context: CheckerboardContext, scales: Tensor, means: Tensor, symbols: Tensor) -> tuple[Tensor, Tensor]:
    """Training: ``scales`` and ``means`` (``(B, M, H, W)``) with the non-anchor positions' refined from the
    anchors' ``symbols`` (the latent rounded around the hyperprior's means, less those means)."""
    mask = anchors(symbols.shape, symbols.device)
    new_scales, new_means = context(scales, means, torch.where(mask, symbols, 0.0))
    return torch.where(mask, scales, new_scales), torch.where(mask, means, new_means)


def coding_order(
    context: CheckerboardContext, y: Tensor, scales: Tensor, means: Tensor
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Encoder: (values, scales, means) of the anchors, then of the other half with its parameters refined from the
    anchors as the decoder will have them (rounded around their means), all in the precision of ``scales``."""
    real = _real_halves(y.shape)
    (anchor_scales, other_scales), (anchor_means, other_means) = _halves(scales), _halves(means)
    anchor_y, other_y = _halves(y.to(scales.dtype))
    anchor_symbols = torch.round(anchor_y - anchor_means)
    if real is not None:
        anchor_symbols = torch.where(real[0], anchor_symbols, 0.0)
    other_scales, other_means = context.other_params(anchor_scales, other_scales, other_means, anchor_symbols)
    parts = [(anchor_y, anchor_scales, anchor_means), (other_y, other_scales, other_means)]
    if real is None:
        return parts
    return [tuple(t[..., mask] for t in part) for part, mask in zip(parts, real, strict=True)]


def decode(
    context: CheckerboardContext, read: Callable[[Tensor], Tensor], indexes_of: Callable[[Tensor], Tensor],
    scales: Tensor, means: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Decoder: ``(y_hat, indexes, symbols)`` of the latent whose halves ``read(indexes)`` returns in the order of
    :func:`coding_order`; ``indexes_of(scales)`` are the scale indexes."""
    height, width = scales.shape[-2:]
    real = _real_halves(scales.shape) or (None, None)
    (anchor_scales, other_scales), (anchor_means, other_means) = _halves(scales), _halves(means)
    anchor_indexes = indexes_of(anchor_scales)
    anchor_symbols = _read_real(read, anchor_indexes, real[0])
    anchor_values = anchor_symbols.to(anchor_means.dtype)
    other_scales, other_means = context.other_params(anchor_scales, other_scales, other_means, anchor_values)
    other_indexes = indexes_of(other_scales)
    other_symbols = _read_real(read, other_indexes, real[1])
    y_hat = merge(anchor_values + anchor_means, other_symbols.to(other_means.dtype) + other_means)
    indexes, symbols = merge(anchor_indexes, other_indexes), merge(anchor_symbols, other_symbols)
    return tuple(t[..., :height, :width] for t in (y_hat, indexes, symbols))


def _halves(t: Tensor) -> tuple[Tensor, Tensor]:
    """The anchors and the other half of ``t`` packed (:func:`split`), a side that is odd edge-padded to even."""
    return split(pad_to_multiple(t, 2))


def _real_halves(shape: torch.Size | tuple[int, ...]) -> tuple[Tensor, Tensor] | None:
    """For a latent with an odd side: which positions of each packed half (:func:`split` of it made even) are real,
    not padding; None if both sides are even."""
    height, width = shape[-2:]
    if height % 2 == 0 and width % 2 == 0:
        return None
    real = torch.zeros(height + height % 2, width + width % 2, dtype=torch.bool)
    real[:height, :width] = True
    return split(real)


def _read_real(read: Callable[[Tensor], Tensor], indexes: Tensor, real: Tensor | None) -> Tensor:
    """The symbols of a packed half: read where real, 0 at padded positions (which the encoder did not code)."""
    if real is None:
        return read(indexes)
    symbols = torch.zeros(indexes.shape, dtype=torch.int32)
    symbols[..., real] = read(indexes[..., real])
    return symbols
