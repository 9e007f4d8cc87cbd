"""The specialisation gap of loss-conditional training: the rate one model for every λ spends beyond a fine-tune of
itself at a single λ, for the same PSNR.

``python -m benchmarks.diagnostics.gap MODEL FINETUNE [--lambda L] [--ema] [--images DIR] [--limit N]`` measures the
fine-tune (``yotocodec train --init-from MODEL --fixed-lambda L``, exported or a checkpoint) at its λ, and MODEL at
five λ around it (L·2^(k/2), k = −2…2, inside its range); MODEL's rate at the fine-tune's PSNR is interpolated on log
bpp, piecewise linearly in PSNR, so the gap is a rate at equal quality, not a loss.  Rates come from the likelihoods,
as in validation.  The quality issue's bar: within +5 % at every λ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from yotocodec.model import YotoHyperprior
from yotocodec.training.evaluate import validate

from .. import images as images_mod
from .inputs import load_any, load_trained, model_and_images_options

OFFSETS = (-2, -1, 0, 1, 2)  # MODEL is measured at λ·2^(k/2) for these k


@dataclass(frozen=True)
class Gap:
    lmbda: float
    finetune: tuple[float, float]  # bpp, PSNR of the fine-tune at λ
    model: tuple[float, float]  # bpp, PSNR of the model at λ
    model_bpp_at_psnr: float  # the model's rate at the fine-tune's PSNR

    @property
    def rate_gap(self) -> float:
        """The model's extra rate at the fine-tune's PSNR, as a fraction of the fine-tune's (0.05: 5 % more)."""
        return self.model_bpp_at_psnr / self.finetune[0] - 1


def rate_at_psnr(points: list[tuple[float, float]], psnr: float) -> float:
    """The bpp a curve of ``(bpp, psnr)`` points needs for ``psnr``: log bpp piecewise linear in PSNR, extended along
    the end segments beyond the points."""
    lowest: dict[float, float] = {}  # the lowest rate seen at each PSNR
    for bpp, at in points:
        lowest[at] = min(bpp, lowest.get(at, bpp))
    if len(lowest) < 2:
        raise ValueError("the model's PSNR does not change with λ here: no curve to compare on")
    points = sorted(((bpp, at) for at, bpp in lowest.items()), key=lambda p: p[1])
    i = int(np.clip(np.searchsorted([p[1] for p in points], psnr), 1, len(points) - 1))
    (r0, p0), (r1, p1) = points[i - 1], points[i]
    t = (psnr - p0) / (p1 - p0)
    return math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0)))


def measure_gap(model: YotoHyperprior, finetune: YotoHyperprior, arrays: list, lmbda: float) -> Gap:
    """The specialisation gap at ``lmbda`` on ``arrays`` (``(H, W, 3)`` uint8 images)."""
    lo, hi = model.config.lmbda_min, model.config.lmbda_max
    lambdas = sorted({min(hi, max(lo, lmbda * 2 ** (k / 2))) for k in OFFSETS})
    cpu = torch.device("cpu")
    tuned = validate(finetune, arrays, [lmbda], cpu)[0]
    curve = {r["lmbda"]: (r["bpp"], r["psnr"]) for r in validate(model, arrays, lambdas, cpu)}
    at_psnr = rate_at_psnr(list(curve.values()), tuned["psnr"])
    return Gap(lmbda, (tuned["bpp"], tuned["psnr"]), curve[lmbda], at_psnr)


@click.command()
@model_and_images_options
@click.argument("finetune", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--lambda", "lmbda", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The λ to compare at; default the fine-tune's own (its --fixed-lambda).")  # fmt: skip
def main(path: Path, ema: bool, images: Path, limit: int, finetune: Path, lmbda: float | None) -> None:
    """MODEL's extra rate over FINETUNE (MODEL fine-tuned at one λ) at the fine-tune's PSNR."""
    model, label = load_any(path, ema)
    tuned, tuned_label, tuned_lambda = load_trained(finetune, ema)
    lmbda = lmbda or tuned_lambda
    if lmbda is None:
        raise click.ClickException(f"{finetune} was not trained at a single λ: give --lambda")
    lo, hi = model.config.lmbda_min, model.config.lmbda_max
    if not lo <= lmbda <= hi:
        raise click.ClickException(f"λ {lmbda:g} is outside the model's range [{lo:g}, {hi:g}]")
    image_set = images_mod.load_folder(images, limit=limit)
    click.echo(f"{label} against {tuned_label}, {len(image_set.names)} images from {image_set.source}")
    try:
        gap = measure_gap(model, tuned, list(image_set.arrays), lmbda)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("| λ | fine-tune | model at λ | model's rate at the fine-tune's PSNR | rate gap |")
    click.echo("|---|---|---|---|---|")
    (fb, fp), (mb, mp) = gap.finetune, gap.model
    at_psnr = gap.model_bpp_at_psnr
    click.echo(f"| {lmbda:.4g} | {fb:.4f} bpp, {fp:.2f} dB | {mb:.4f} bpp, {mp:.2f} dB | {at_psnr:.4f} bpp "
               f"| {100 * gap.rate_gap:+.1f} % |")  # fmt: skip


if __name__ == "__main__":
    main()
