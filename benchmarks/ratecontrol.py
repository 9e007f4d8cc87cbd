"""Rate control on real images: how close ``--target-bpp`` and ``--target-psnr`` land, and in how many trial encodings.

``python -m benchmarks.ratecontrol [--images DIR] [--limit N] [--bpp 0.25,0.5,1] [--psnr 28,30,32] [--quick]`` runs
the public rate-control API on every image.  A size target counts as inside the model's range for an image when it
lies between that image's quality-0 and quality-100 file sizes; there the promise is a file within 2 % below the
target.  Likewise a PSNR target is inside when it lies above the image's quality-0 PSNR and at most its quality-100
PSNR; there the promise is a decoded image that reaches it by at most 0.1 dB more than asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
from PIL import Image

import yotocodec
from yotocodec.metrics import psnr
from yotocodec.ratecontrol import PSNR_TOLERANCE_DB, SIZE_TOLERANCE, encode_to_bpp, encode_to_psnr

from . import images as images_mod
from .common import environment, over_images, prepare, results_dir, write_results
from .options import images_option, limit_option, model_option, out_option, threads_option

BPP_TARGETS = (0.25, 0.5, 1.0)  # inside every shipped model's Kodak range (benchmarks/results/rd.json)
PSNR_TARGETS = (28.0, 30.0, 32.0)


def size_trial(model: yotocodec.YotoHyperprior, image: Image.Image, target_bpp: float, range_bytes: tuple) -> dict:
    """One ``encode_to_bpp`` call, classified against this image's range of file sizes."""
    target = math.floor(target_bpp * image.width * image.height / 8)
    smallest, largest = range_bytes
    inside = smallest <= target < largest
    try:
        data, trials = encode_to_bpp(image, target_bpp, model=model)
    except yotocodec.YotoError:
        return {"target_bpp": target_bpp, "target_bytes": target, "inside": inside, "bytes": None, "trials": None}
    return {
        "target_bpp": target_bpp,
        "target_bytes": target,
        "inside": inside,
        "bytes": len(data),
        "trials": trials,
        "within_tolerance": target * (1 - SIZE_TOLERANCE) <= len(data) <= target,
        "error_pct": (len(data) / target - 1) * 100,
    }


def psnr_trial(
    model: yotocodec.YotoHyperprior, image: Image.Image, array: np.ndarray, target: float, range_psnr: tuple
) -> dict:
    """One ``encode_to_psnr`` call, checked by decoding its result and classified against this image's PSNR range."""
    inside = range_psnr[0] < target <= range_psnr[1]
    try:
        data, trials = encode_to_psnr(image, target, model=model)
    except yotocodec.YotoError:
        return {"target_psnr": target, "inside": inside, "reached": False, "psnr": None, "trials": None}
    achieved = psnr(array, np.asarray(yotocodec.decode(data, model=model).convert("RGB")))
    return {
        "target_psnr": target,
        "inside": inside,
        "reached": achieved >= target,
        "psnr": achieved,
        "bpp": len(data) * 8 / (image.width * image.height),
        "trials": trials,
        "within_tolerance": target <= achieved <= target + PSNR_TOLERANCE_DB,
    }


def run(
    model: yotocodec.YotoHyperprior,
    image_set: images_mod.ImageSet,
    bpp_targets: tuple[float, ...],
    psnr_targets: tuple[float, ...],
) -> dict[str, dict]:
    """Every target on every image, with the image's quality-0 and quality-100 ends that classify them."""
    per_image = {}
    steps = len(bpp_targets) + len(psnr_targets)
    for name, array, bar in over_images(model, image_set, steps, "rate control", "target"):
        image = Image.fromarray(array, "RGB")
        ends = [yotocodec.encode(image, q, model=model) for q in (0.0, 100.0)]
        sizes = tuple(len(data) for data in ends)
        psnrs = tuple(psnr(array, np.asarray(yotocodec.decode(d, model=model).convert("RGB"))) for d in ends)
        record = {"quality_0": {"bytes": sizes[0], "psnr": psnrs[0]},
                  "quality_100": {"bytes": sizes[1], "psnr": psnrs[1]}, "size": [], "psnr": []}  # fmt: skip
        for target in bpp_targets:
            record["size"].append(size_trial(model, image, target, sizes))
            bar.update()
        for target in psnr_targets:
            record["psnr"].append(psnr_trial(model, image, array, target, psnrs))
            bar.update()
        per_image[name] = record
    return per_image


def _stat(function: Callable[[list], float], values: list) -> float | None:
    """A statistic of the images a target applied to; None when it applied to none."""
    return float(function(values)) if values else None


def _target_rows(
    per_image: dict[str, dict], kind: str, targets: tuple, target_key: str, measures: Callable[[float, list], dict]
) -> list[dict]:
    """One row per target of ``kind`` ("size" or "psnr"), over the images it was inside the range for.

    Every row counts those images and the trials their encodings took; ``measures`` adds what the kind promises.
    """
    rows = []
    for i, target in enumerate(targets):
        inside = [r[kind][i] for r in per_image.values() if r[kind][i]["inside"]]
        rows.append(
            {
                target_key: target,
                "images_inside_range": len(inside),
                **measures(target, inside),
                "mean_trials": _stat(np.mean, [t["trials"] for t in inside]),
                "max_trials": max(t["trials"] for t in inside) if inside else None,
            }
        )
    return rows


def _within(inside: list[dict]) -> int:
    return sum(bool(t.get("within_tolerance")) for t in inside)


def _size_measures(target: float, inside: list[dict]) -> dict:
    """How many files kept the size promise and how far they fell below the target."""
    return {
        "within_tolerance": _within(inside),
        "mean_abs_error_pct": _stat(np.mean, [abs(t["error_pct"]) for t in inside]),
        "worst_error_pct": _stat(min, [t["error_pct"] for t in inside]),
    }


def _psnr_measures(target: float, inside: list[dict]) -> dict:
    """How many decoded images reached the PSNR target, kept the promise, and by how much they overshot."""
    return {
        "reached": sum(t["reached"] for t in inside),
        "within_tolerance": _within(inside),
        "mean_excess_db": _stat(np.mean, [t["psnr"] - target for t in inside]),
    }


def summarise(per_image: dict[str, dict], bpp_targets: tuple, psnr_targets: tuple) -> dict[str, list[dict]]:
    """Per target: how many images it was inside the range for, how many met the promise, error and trials."""
    return {
        "size": _target_rows(per_image, "size", bpp_targets, "target_bpp", _size_measures),
        "psnr": _target_rows(per_image, "psnr", psnr_targets, "target_psnr", _psnr_measures),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def summary_markdown(results: dict) -> str:
    meta, n = results["meta"], len(results["dataset"]["images"])
    lines = [
        f"# Rate control, model `{results['model_id']}`",
        "",
        f"{n} images from {results['dataset']['source']}; {meta['torch_threads']} torch thread(s) on {meta['cpu']}.",
        "A size target is inside the range for an image when it lies between its quality-0 and quality-100 sizes; "
        f"the promise there is a file at most the target and within {SIZE_TOLERANCE:.0%} of it. "
        "A PSNR target is inside when it lies above the quality-0 PSNR and at most the quality-100 PSNR.",
        "",
        "| target bpp | images inside range | within 2 % | mean abs. error | worst error | mean trials | max trials |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["summary"]["size"]:
        lines.append(
            f"| {r['target_bpp']:g} | {r['images_inside_range']}/{n} | {r['within_tolerance']}/"
            f"{r['images_inside_range']} | {_fmt(r['mean_abs_error_pct'], '.2f')} % | "
            f"{_fmt(r['worst_error_pct'], '+.2f')} % | {_fmt(r['mean_trials'], '.1f')} | {_fmt(r['max_trials'], 'd')} |"
        )
    lines += [
        "",
        f"| target PSNR | images inside range | reached | within +{PSNR_TOLERANCE_DB:g} dB | mean excess "
        "| mean trials | max trials |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["summary"]["psnr"]:
        lines.append(
            f"| {r['target_psnr']:g} dB | {r['images_inside_range']}/{n} | {r['reached']}/{r['images_inside_range']} "
            f"| {r['within_tolerance']}/{r['images_inside_range']} | {_fmt(r['mean_excess_db'], '.3f')} dB "
            f"| {_fmt(r['mean_trials'], '.1f')} | {_fmt(r['max_trials'], 'd')} |"
        )
    return "\n".join(lines) + "\n"


def _floats(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise click.BadParameter("targets must be positive numbers")
    return values


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@images_option()
@limit_option()
@click.option("--bpp", "bpp_targets", default=",".join(map(str, BPP_TARGETS)), callback=_floats, show_default=True,
              help="Size targets in bits per pixel.")  # fmt: skip
@click.option("--psnr", "psnr_targets", default=",".join(map(str, PSNR_TARGETS)), callback=_floats,
              show_default=True, help="PSNR targets in dB.")  # fmt: skip
@click.option("--quick", is_flag=True, help="Three 256×256 crops: a smoke run.")
@model_option()
@threads_option()
@out_option("ratecontrol.json/.md")
def main(
    image_dir: Path,
    limit: int | None,
    bpp_targets: tuple[float, ...],
    psnr_targets: tuple[float, ...],
    quick: bool,
    model_path: Path | None,
    threads: int,
    out: Path | None,
) -> None:
    """Accuracy and trial count of size and PSNR targets."""
    model, image_set, notes = prepare(threads, model_path, image_dir, quick, limit)
    per_image = run(model, image_set, bpp_targets, psnr_targets)
    results = {
        "format": 1,
        "model_id": model.model_id,
        "dataset": image_set.describe(),
        "meta": environment("benchmarks.ratecontrol", threads),
        "notes": notes,
        "summary": summarise(per_image, bpp_targets, psnr_targets),
        "per_image": per_image,
    }
    write_results(results_dir(out, quick), "ratecontrol", results, summary_markdown(results))


if __name__ == "__main__":
    main()
