"""Which latent channels a model uses: how y's bits spread over its channels at λ_min, the middle and λ_max.

``python -m benchmarks.channels WEIGHTS_OR_CHECKPOINT [--ema] [--images DIR] [--limit N]`` reads a weights file or
a training checkpoint and prints, per λ, how many channels carry at least 0.1 % of y's bits (rate from the
likelihoods, summed over the images), how many hold 99 % of them, and how many the FiLM after the analysis
transform's last convolution switches off (scale below 10⁻³).  The model card's finding that the shipped model
codes with 86 of its 192 channels is measured with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import click
import torch
import torch.nn.functional as F
from compressai.ops import compute_padding

from yotocodec.data import image_to_tensor
from yotocodec.model import LATENT_OFF_SCALE, YotoHyperprior, load_weights
from yotocodec.train import model_from_checkpoint

from . import images as images_mod

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
    lmbdas = torch.tensor([lmbda])
    for array in arrays:
        x = image_to_tensor(array)
        pad, _ = compute_padding(*x.shape[-2:], min_div=model.downsampling_factor)
        likelihoods = model(F.pad(x, pad, mode="replicate"), lmbdas)["likelihoods"]["y"]
        bits += (-torch.log2(likelihoods)).sum((0, 2, 3)).double()
    return bits


@torch.no_grad()
def channel_use(model: YotoHyperprior, arrays: tuple) -> list[ChannelUse]:
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
                switched_off=int((model.latent_scales(torch.tensor([lmbda]))[0] < LATENT_OFF_SCALE).sum()),
            )
        )
    return rows


def load_any(path: Path, ema: bool) -> tuple[YotoHyperprior, str]:
    """A weights file or a training checkpoint, with a label saying which and after how many steps.

    Anything else is a one-line ``click.ClickException`` (the benchmarks' commands load their model through this).
    """
    try:
        try:
            model, meta = load_weights(path)
            return model.float(), f"{path.name} ({model.model_id}, {meta.get('steps', '?')} steps)"
        except ValueError:
            model, ckpt = model_from_checkpoint(path, ema)
            return model, f"{path} (step {ckpt['step']}{', weight average' if ema else ''})"
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise click.ClickException(f"{path}: not a weights file or training checkpoint of this model ({exc})") from None


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--ema", is_flag=True, help="Of a training checkpoint: its weight average.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=images_mod.DEFAULT_DIR,
              show_default=True)  # fmt: skip
@click.option("--limit", type=int, default=4, show_default=True, help="Use the first N images.")
def main(path: Path, ema: bool, images: Path, limit: int) -> None:
    model, label = load_any(path, ema)
    image_set = images_mod.load_folder(images, limit=limit)
    click.echo(f"{label}, M = {model.config.M}, {len(image_set.names)} images from {image_set.source}")
    click.echo("| λ | channels with ≥ 0.1 % of y's bits | channels holding 99 % | switched off (scale < 10⁻³) |")
    click.echo("|---|---|---|---|")
    for row in channel_use(model, image_set.arrays):
        click.echo(f"| {row.lmbda:.4g} | {row.live} | {row.hold_99} | {row.switched_off} |")


if __name__ == "__main__":
    main()
