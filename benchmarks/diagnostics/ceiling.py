"""How far a model's transforms reach: PSNR of g_s(g_a(x)) with no quantisation at all, beside the coded latent.

``python -m benchmarks.diagnostics.ceiling WEIGHTS_OR_CHECKPOINT [--ema] [--images DIR] [--limit N] [--lambda L ...]``
prints, per λ (default λ_min, the middle and λ_max), the mean PSNR of the autoencoder without quantisation, with the
latent rounded around its predicted means as the codec decodes it, and the rate estimated from the likelihoods.  Where
the unquantised PSNR stops rising with λ, more bits cannot buy more quality: the transforms are the limit, not the
entropy model.  The model card's ceiling figures are measured with it (first 4 Kodak images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F

from yotocodec.model import YotoHyperprior
from yotocodec.training.data import image_to_tensor
from yotocodec.training.evaluate import forward_image, padded, psnr_8bit

from .. import images as images_mod
from .inputs import load_any, model_and_images_options


@dataclass(frozen=True)
class Ceiling:
    lmbda: float
    psnr_unquantised: float  # g_s(g_a(x))
    psnr_rounded: float  # g_s(ŷ), ŷ the latent rounded around its predicted means
    bpp: float  # from the likelihoods of the rounded latent


@torch.no_grad()
def ceiling(model: YotoHyperprior, arrays: tuple, lmbda: float) -> Ceiling:
    """Mean PSNR (unquantised, rounded) and likelihood bpp over the images at one λ."""
    model.eval()
    lmbdas = torch.tensor([lmbda])
    plain, rounded, rates = [], [], []
    emb = model.embed(lmbdas)
    for array in arrays:
        x = image_to_tensor(array)
        x_padded, unpad = padded(x, model.downsampling_factor)
        plain.append(float(psnr_8bit(x, F.pad(model.g_s(model.g_a(x_padded, emb), emb), unpad))))
        out = forward_image(model, x, lmbda)  # in eval mode the latent is rounded around the predicted means
        rounded.append(float(psnr_8bit(x, out["x_hat"])))
        rates.append(float(out["bpp"]))
    return Ceiling(lmbda, float(np.mean(plain)), float(np.mean(rounded)), float(np.mean(rates)))


@click.command()
@model_and_images_options
@click.option("--lambda", "lambdas", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="λ to measure at (repeatable); default λ_min, the middle and λ_max.")  # fmt: skip
def main(path: Path, ema: bool, images: Path, limit: int, lambdas: tuple[float, ...]) -> None:
    """Per λ: PSNR without quantisation, PSNR with the latent rounded, and the likelihood rate."""
    model, label = load_any(path, ema)
    lo, hi = model.config.lmbda_min, model.config.lmbda_max
    outside = [lmbda for lmbda in lambdas if not lo <= lmbda <= hi]
    if outside:
        raise click.ClickException(f"λ {outside[0]:g} is outside the model's range [{lo:g}, {hi:g}]")
    image_set = images_mod.load_folder(images, limit=limit)
    click.echo(f"{label}, {len(image_set.names)} images from {image_set.source}")
    click.echo("| λ | PSNR, no quantisation | PSNR, latent rounded | bpp (likelihoods) |")
    click.echo("|---|---|---|---|")
    for lmbda in sorted(set(lambdas) or {lo, math.sqrt(lo * hi), hi}):
        row = ceiling(model, image_set.arrays, lmbda)
        click.echo(f"| {lmbda:.4g} | {row.psnr_unquantised:.2f} dB | {row.psnr_rounded:.2f} dB | {row.bpp:.3f} |")


if __name__ == "__main__":
    main()
