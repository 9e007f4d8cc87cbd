"""Which latent channels a model uses: how y's bits spread over its channels at λ_min, the middle and λ_max.

``python -m benchmarks.diagnostics.channels WEIGHTS_OR_CHECKPOINT [--ema] [--images DIR] [--limit N]`` reads a
weights file or a training checkpoint and prints, per λ, how many channels carry at least 0.1 % of y's bits (rate
from the likelihoods, summed over the images), how many hold 99 % of them, and how many the FiLM after the analysis
transform's last convolution switches off (scale below 10⁻³).  The model card's finding that the shipped model
codes with 86 of its 192 channels is measured with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from yotocodec.model import YotoHyperprior
from yotocodec.training.data import image_to_tensor
from yotocodec.training.evaluate import forward_image
from yotocodec.training.surgery import LATENT_OFF_SCALE, latent_scales

from .. import images as images_mod
from .inputs import load_any, model_and_images_options

LIVE_SHARE = 1e-3  # a channel is live if it carries at least this share of y's bits


@dataclass(frozen=True)
class ChannelUse:
    lmbda: float
    live: int  # channels with at least LIVE_SHARE of the bits
    hold_99: int  # the fewest channels that together hold 99 % of the bits
    switched_off: int  # channels whose latent FiLM scale is below LATENT_OFF_SCALE


@torch.no_grad()
def channel_bits(model: YotoHyperprior, arrays: tuple, lmbda: float) -> torch.Tensor:
    """Bits of y per latent channel, summed over the images (rate from the likelihoods, latent rounded)."""
    model.eval()
    bits = torch.zeros(model.config.M, dtype=torch.float64)
    for array in arrays:
        likelihoods = forward_image(model, image_to_tensor(array), lmbda)["likelihoods"]["y"]
        bits += (-torch.log2(likelihoods)).sum((0, 2, 3)).double()
    return bits


@torch.no_grad()
def channel_use(model: YotoHyperprior, arrays: tuple) -> list[ChannelUse]:
    """At λ_min, the geometric middle and λ_max: live channels, those holding 99 % of the bits, those switched off."""
    lo, hi = model.config.lmbda_min, model.config.lmbda_max
    rows = []
    for lmbda in sorted({lo, math.sqrt(lo * hi), hi}):
        share = channel_bits(model, arrays, lmbda)
        share /= share.sum()
        cumulative = share.sort(descending=True).values.cumsum(0)
        rows.append(
            ChannelUse(
                lmbda=lmbda,
                live=int((share >= LIVE_SHARE).sum()),
                hold_99=int((cumulative < 0.99).sum()) + 1,
                switched_off=int((latent_scales(model, torch.tensor([lmbda]))[0] < LATENT_OFF_SCALE).sum()),
            )
        )
    return rows


@click.command()
@model_and_images_options
def main(path: Path, ema: bool, images: Path, limit: int) -> None:
    """Per λ: the latent channels that carry y's bits, and those the FiLM switches off."""
    model, label = load_any(path, ema)
    image_set = images_mod.load_folder(images, limit=limit)
    click.echo(f"{label}, M = {model.config.M}, {len(image_set.names)} images from {image_set.source}")
    click.echo("| λ | channels with ≥ 0.1 % of y's bits | channels holding 99 % | switched off (scale < 10⁻³) |")
    click.echo("|---|---|---|---|")
    for row in channel_use(model, image_set.arrays):
        click.echo(f"| {row.lmbda:.4g} | {row.live} | {row.hold_99} | {row.switched_off} |")


if __name__ == "__main__":
    main()
