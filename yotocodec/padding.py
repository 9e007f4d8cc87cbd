"""Padding a latent to a multiple of a stride, at the bottom and right by edge replication.

Format 3 pads the image only to ``g_a``'s stride, so a latent can have any size: ``h_a`` reads it padded to a
multiple of its own stride, and the checkerboard packs it as if padded to even sides.  Both pad the same way: the
padded positions are copies of real ones, so h_a's padding costs z little, and the checkerboard's is never coded.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pad_to_multiple(t: Tensor, multiple: int) -> Tensor:
    """``t`` edge-replicated at the bottom and right to a height and width that are multiples of ``multiple``
    (``t`` itself if they are)."""
    rows, cols = (-side % multiple for side in t.shape[-2:])
    return F.pad(t, (0, cols, 0, rows), mode="replicate") if rows or cols else t
