"""A stack of convolutions computed a band of output rows at a time: the whole-image result in bounded memory.

PyTorch's float64 convolutions (the coding model's hyper-synthesis, see ``YotoHyperprior.for_coding``) unfold their
input into a matrix k² times its size: 1.3 GB for ``h_s`` on a 24-megapixel photo.  Here each convolution computes
its output in bands of rows, each band reading only the input rows it depends on, so the unfolded matrix stays under
``UNFOLD_BYTES`` and nothing is computed twice (overlapping bands of the whole stack cost 1.5× the arithmetic).
The element-wise layers after a convolution (activations, FiLM) run on its band before the next band is computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

Apply = Callable[[nn.Module, Tensor], Tensor]  # runs one layer of a stack (FiLM layers also take λ)
UNFOLD_BYTES = 32 * 2**20  # the most a band's unfolded input (or a transposed convolution's columns) may take


def in_bands(stack: nn.Sequential, x: Tensor, apply: Apply) -> Tensor:
    """``stack`` applied to ``x``, where ``apply(layer, x)`` runs one layer; every layer after the first convolution
    that is not itself a convolution is taken to be element-wise."""
    stages: list[tuple[nn.Module, list[nn.Module]]] = []
    for layer in stack:
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            stages.append((layer, []))
        elif stages:
            stages[-1][1].append(layer)
        else:
            x = apply(layer, x)
    for conv, pointwise in stages:
        x = _stage_in_bands(conv, pointwise, x, apply)
    return x


def _stage_in_bands(conv: nn.Module, pointwise: list[nn.Module], x: Tensor, apply: Apply) -> Tensor:
    rows, step = _output_rows(conv, x.shape[-2]), _band_rows(conv, x)
    if step >= rows:
        return _pointwise(pointwise, conv(x), apply)
    out = None
    for start in range(0, rows, step):
        band = _pointwise(pointwise, _rows_of(conv, x, start, min(rows, start + step)), apply)
        if out is None:  # filled band by band, so that no band outlives its step
            out = band.new_empty((*band.shape[:2], rows, band.shape[-1]))
        out[..., start : start + band.shape[-2], :] = band
    return out


def _pointwise(layers: list[nn.Module], x: Tensor, apply: Apply) -> Tensor:
    for layer in layers:
        x = apply(layer, x)
    return x


def _output_rows(conv: nn.Module, rows: int) -> int:
    (k, s, p) = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    if isinstance(conv, nn.ConvTranspose2d):
        return (rows - 1) * s - 2 * p + k + conv.output_padding[0]
    return (rows + 2 * p - k) // s + 1


def _band_rows(conv: nn.Module, x: Tensor) -> int:
    """Output rows per band: the unfolded input of Conv2d is (C_in·k², rows·W_out), the columns of ConvTranspose2d
    (C_out·k², rows_in·W_in)."""
    k2, itemsize = conv.kernel_size[0] * conv.kernel_size[1], x.element_size()
    if isinstance(conv, nn.ConvTranspose2d):
        per_input_row = conv.out_channels * k2 * x.shape[-1] * itemsize
        return max(1, UNFOLD_BYTES // per_input_row) * conv.stride[0]
    width = (x.shape[-1] + 2 * conv.padding[1] - conv.kernel_size[1]) // conv.stride[1] + 1
    return max(1, UNFOLD_BYTES // (conv.in_channels * k2 * width * itemsize))


def _rows_of(conv: nn.Module, x: Tensor, first: int, end: int) -> Tensor:
    """Output rows ``first:end`` of ``conv(x)``, from the input rows they depend on."""
    (k, s, p), rows = (conv.kernel_size[0], conv.stride[0], conv.padding[0]), x.shape[-2]
    if isinstance(conv, nn.ConvTranspose2d):  # output row o = i·s − p + j (0 ≤ j < k) gathers input row i
        lo, hi = max(0, math.ceil((first + p - k + 1) / s)), min(rows, (end - 1 + p) // s + 1)
        out = F.conv_transpose2d(
            x[..., lo:hi, :], conv.weight, conv.bias, stride=conv.stride, padding=(0, conv.padding[1]),
            output_padding=(0, conv.output_padding[1]),
        )  # fmt: skip
        offset = first + p - lo * s  # row of `out` that is output row `first`
        if offset + end - first > out.shape[-2]:
            raise ValueError("a band reaches past its transposed convolution's output")
        return out[..., offset : offset + end - first, :]
    lo, hi = first * s - p, (end - 1) * s - p + k  # output row o reads input rows o·s − p … o·s − p + k − 1
    band = F.pad(x[..., max(0, lo) : min(rows, hi), :], (0, 0, max(0, -lo), max(0, hi - rows)))
    return F.conv2d(band, conv.weight, conv.bias, stride=conv.stride, padding=(0, conv.padding[1]))
