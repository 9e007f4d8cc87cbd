"""What describes a model — its architecture, widths, λ range and FiLM scale, stored in every weights file — and the
precisions it can train in: plain settings, so that the command line can list its options without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from .quality import LambdaRange

if TYPE_CHECKING:
    from torch import Tensor

PRECISIONS = ("fp32", "bf16")  # training: "bf16" runs the transforms under bfloat16 autocast (training.loop)
ARCHITECTURES = ("mean-scale", "scale")
FILM_SCALES = ("exp", "linear")  # how a FiLM head's output becomes a channel's scale (see FiLM)
CONTEXTS = ("none", "checkerboard")  # how y's entropy parameters are predicted: hyperprior alone, or + checkerboard


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored inside every weights file."""

    arch: str = "mean-scale"
    N: int = 128
    M: int = 192
    lmbda_min: float = 0.0015
    lmbda_max: float = 0.2
    cond_dim: int = 64
    film: str = "exp"  # one of FILM_SCALES; weights files from before the setting existed are "exp"
    context: str = "none"  # one of CONTEXTS (yotocodec.checkerboard); weights files from before it are "none"

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; expected one of {ARCHITECTURES}")
        if self.film not in FILM_SCALES:
            raise ValueError(f"unknown FiLM scale {self.film!r}; expected one of {FILM_SCALES}")
        if self.context not in CONTEXTS:
            raise ValueError(f"unknown context model {self.context!r}; expected one of {CONTEXTS}")
        if self.context != "none" and self.arch != "mean-scale":
            raise ValueError("a context model refines means and scales: it needs the mean-scale architecture")
        if not 0 < self.lmbda_min <= self.lmbda_max:
            raise ValueError(f"bad λ range [{self.lmbda_min}, {self.lmbda_max}]")

    @classmethod
    def from_dict(cls, settings: dict, source: str | Path) -> ModelConfig:
        """The settings stored in a weights file or checkpoint; ones this version does not know are an error."""
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{source}: written by a newer yotocodec (unknown model settings {unknown})")
        return cls(**settings)

    def lambda_range(self) -> LambdaRange:
        return LambdaRange(self.lmbda_min, self.lmbda_max)

    def normalisation(self) -> tuple[float, float]:
        """(a, b) of the map log λ ↦ a·log λ + b onto [-1, 1] over the trained range (a single-λ model: a = b = 0).

        The position of λ on the range (:mod:`yotocodec.quality`), stretched: the same floats as ever, bit for bit.
        """
        a, b = self.lambda_range().affine()
        return (2 * a, 2 * b - 1) if a else (0.0, 0.0)

    def normalise(self, lmbda: Tensor) -> Tensor:
        """Map λ log-linearly onto [-1, 1] over the trained range (a single-λ model maps everything to 0)."""
        a, b = self.normalisation()
        return a * lmbda.log() + b
