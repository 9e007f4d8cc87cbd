"""What a ``.yoto`` file says about itself, read from its header without decoding the image.

Needs neither torch nor a model (unless one is given for its λ), so ``yotocodec info`` and Pillow's ``Image.open``
answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import registry
from .container import read
from .metadata import Metadata, stored_metadata
from .quality import LambdaRange, lambda_of, quality_of

if TYPE_CHECKING:
    from .loading import ModelLike


@dataclass(frozen=True)
class Info:
    """What a ``.yoto`` file says about itself (λ only when the model that wrote it is at hand)."""

    width: int
    height: int
    mode: str
    quality: float
    lmbda: float | None
    model_id: str
    num_bytes: int
    metadata: Metadata
    format_version: int  # of the container (docs/FORMAT.md): 3 since 0.7.0

    @property
    def bpp(self) -> float:
        return self.num_bytes * 8 / (self.width * self.height)


def inspect(data: bytes, *, model: ModelLike = None) -> Info:
    """Validate a ``.yoto`` file and describe it without decoding the image (nor loading a registered model)."""
    header, payload = read(bytes(data))
    metadata = stored_metadata(payload.icc_profile, payload.exif)
    lmbda = None
    if model is not None:  # a model given is loaded (a bad one is an error), and used if it wrote the file
        from .loading import resolve  # torch and the model only when asked for

        net = resolve(model)
        if net.model_id == header.model_id:
            lmbda = lambda_of(header.lmbda_code, net.config.lambda_range())
    entry = registry.find(header.model_id)
    if lmbda is None and entry is not None:
        lmbda = lambda_of(header.lmbda_code, LambdaRange(entry.lmbda_min, entry.lmbda_max))
    quality = quality_of(header.lmbda_code)
    return Info(
        header.width, header.height, header.mode, quality, lmbda, header.model_id, len(data), metadata, header.version
    )
