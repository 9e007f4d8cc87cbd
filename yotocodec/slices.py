"""The latent's entropy coding a slice at a time: the same bytes and indexes as CompressAI's, in bounded memory.

CompressAI's ``EntropyModel.compress`` quantises the whole latent in float64 and hands the rANS coder two Python
lists of all its symbols and scale indexes, and ``build_indexes`` compares every scale with each of the 64 table
entries in one piece: on a 24-megapixel photo these temporaries took about 0.7 GB.  Here the same functions run on
slices of ``SLICE`` values, and CompressAI's ``BufferedRansEncoder`` gathers the slices into one stream
(``RansEncoder.encode_with_indexes`` is that encoder given everything as one slice), so the file is byte for byte the
same.
"""

from __future__ import annotations

import torch
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import GaussianConditional
from torch import Tensor

SLICE = 1 << 20  # latent values coded at a time


def build_indexes(conditional: GaussianConditional, scales: Tensor) -> Tensor:
    """``conditional.build_indexes(scales)``, a slice at a time."""
    flat = scales.reshape(-1)
    indexes = torch.empty(flat.shape, dtype=torch.int32)
    for start in range(0, flat.numel(), SLICE):
        indexes[start : start + SLICE] = conditional.build_indexes(flat[start : start + SLICE])
    return indexes.reshape(scales.shape)


def compress(conditional: GaussianConditional, y: Tensor, scales: Tensor, means: Tensor | None) -> bytes:
    """The rANS string of one latent ``y`` (batch of one) given its scales and means, as
    ``conditional.compress(y, conditional.build_indexes(scales), means)[0]`` would write it; ``y`` is quantised in the
    precision of ``scales``."""
    tables = (
        conditional._quantized_cdf.tolist(),
        conditional._cdf_length.reshape(-1).int().tolist(),
        conditional._offset.reshape(-1).int().tolist(),
    )
    y, scales = y.reshape(-1), scales.reshape(-1)
    means = None if means is None else means.reshape(-1)
    encoder = BufferedRansEncoder()
    for start in range(0, y.numel(), SLICE):
        part = slice(start, start + SLICE)
        symbols = conditional.quantize(y[part].to(scales.dtype), "symbols", None if means is None else means[part])
        indexes = conditional.build_indexes(scales[part])
        encoder.encode_with_indexes(symbols.int().tolist(), indexes.int().tolist(), *tables)
    return encoder.flush()
