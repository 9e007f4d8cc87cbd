"""The latent's entropy coding a slice at a time: the same bytes, indexes and symbols as CompressAI's, in bounded
memory.

CompressAI's ``EntropyModel.compress`` quantises the whole latent in float64 and hands the rANS coder two Python
lists of all its symbols and scale indexes, ``decompress`` does the same with the indexes and the decoded values, and
``build_indexes`` compares every scale with each of the 64 table entries in one piece: on a 24-megapixel photo these
temporaries took about 0.7 GB on each side.  Here the same functions run on slices of ``SLICE`` values.  CompressAI's
``BufferedRansEncoder`` gathers the slices into one stream (``RansEncoder.encode_with_indexes`` is that encoder given
everything as one slice), so the file is byte for byte the same; its ``RansDecoder`` reads such a stream a slice at a
time (``set_stream``, then ``decode_stream`` per slice), as ``decode_with_indexes`` reads it in one piece.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import numpy as np
import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import GaussianConditional
from torch import Tensor

SLICE = 1 << 20  # latent values coded at a time

StreamOpener = Callable[[bytes], AbstractContextManager[Callable[..., object]]]


def build_indexes(conditional: GaussianConditional, scales: Tensor) -> Tensor:
    """``conditional.build_indexes(scales)``, a slice at a time."""
    flat = scales.reshape(-1)
    indexes = torch.empty(flat.shape, dtype=torch.int32)
    for start in range(0, flat.numel(), SLICE):
        indexes[start : start + SLICE] = conditional.build_indexes(flat[start : start + SLICE])
    return indexes.reshape(scales.shape)


def compress(conditional: GaussianConditional, parts: Sequence[tuple[Tensor, Tensor, Tensor | None]]) -> bytes:
    """The rANS string of a latent given as ``parts`` coded one after the other, each ``(y, scales, means)`` (batch of
    one), as ``conditional.compress(y, conditional.build_indexes(scales), means)[0]`` would write a single part; ``y``
    is quantised in the precision of ``scales``.  A checkerboard model codes its latent in two parts
    (:func:`yotocodec.checkerboard.coding_order`)."""
    tables = _tables(conditional)
    encoder = BufferedRansEncoder()
    for y, scales, means in parts:
        y, scales = y.reshape(-1), scales.reshape(-1)
        means = None if means is None else means.reshape(-1)
        for start in range(0, y.numel(), SLICE):
            part = slice(start, start + SLICE)
            symbols = conditional.quantize(y[part].to(scales.dtype), "symbols", None if means is None else means[part])
            indexes = conditional.build_indexes(scales[part])
            encoder.encode_with_indexes(symbols.int().tolist(), indexes.int().tolist(), *tables)
    return encoder.flush()


def decompress(
    conditional: GaussianConditional, string: bytes, indexes: Tensor, stream: StreamOpener | None = None
) -> Tensor:
    """The integer symbols of y (int32, the shape of ``indexes``) that :func:`compress` wrote into ``string`` as one
    part, as ``conditional.decompress([string], indexes)`` reads them before dequantising."""
    with reading(conditional, string, stream) as read:
        return read(indexes)


@contextmanager
def reading(
    conditional: GaussianConditional, string: bytes, stream: StreamOpener | None = None
) -> Iterator[Callable[[Tensor], Tensor]]:
    """A reader of the parts :func:`compress` wrote into ``string``: ``read(indexes)`` returns the integer symbols
    (int32, the shape of ``indexes``) of the next part, whose indexes may depend on the parts before it.

    ``stream(string)`` reads the string (:meth:`yotocodec.isolation.DecoderProcess.stream`; by default CompressAI's
    ``RansDecoder`` in this process), one slice of indexes at a time.
    """
    tables = _tables(conditional)
    with (stream or in_process)(string) as decode_stream:

        def read(indexes: Tensor) -> Tensor:
            flat = indexes.reshape(-1)
            symbols = np.empty(flat.numel(), dtype=np.int32)
            for start in range(0, flat.numel(), SLICE):
                symbols[start : start + SLICE] = decode_stream(flat[start : start + SLICE].tolist(), *tables)
            return torch.from_numpy(symbols).reshape(indexes.shape)

        yield read


@contextmanager
def in_process(string: bytes) -> Iterator[Callable[..., list[int]]]:
    """CompressAI's ``RansDecoder.decode_stream`` on ``string``, in this process."""
    decoder = RansDecoder()
    decoder.set_stream(string)
    yield decoder.decode_stream


def _tables(conditional: GaussianConditional) -> tuple[list[list[int]], list[int], list[int]]:
    """The CDF tables as the rANS coder takes them: quantised CDFs, their lengths, their offsets."""
    return (
        conditional._quantized_cdf.tolist(),
        conditional._cdf_length.reshape(-1).int().tolist(),
        conditional._offset.reshape(-1).int().tolist(),
    )
