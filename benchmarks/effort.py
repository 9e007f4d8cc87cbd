"""Encoder effort on real images: what each ``effort`` level saves against effort 0, and what it costs in encode time.

``python -m benchmarks.effort [--images DIR] [--limit N] [--crop PX] [--efforts 0,1,2,3] [--quick]`` encodes every
image at the same qualities with each effort level through the public API, decodes with the plain decoder, and reports
the BD-rate of each level against effort 0 (same model, same qualities), the mean change in file size and PSNR at
equal quality, and the mean encode and decode seconds.  Effort runs gradient steps through the synthesis transform,
so it is slow on a CPU: ``--limit`` and ``--crop`` trade coverage for time, and the results say what was used.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import numpy as np

import yotocodec
from yotocodec.refine import EFFORT_STEPS

from . import images as images_mod
from .bd import METHOD, bd_rate
from .common import environment, measure_learned, over_images, prepare, results_dir, write_results
from .options import images_option, limit_option, model_option, out_option, threads_option
from .report import METRICS, average, curve

QUALITIES = tuple(float(q) for q in np.linspace(0, 100, 5))
QUICK_QUALITIES = (0.0, 50.0, 100.0)


def run(
    model: yotocodec.YotoHyperprior,
    image_set: images_mod.ImageSet,
    efforts: tuple[int, ...],
    qualities: tuple[float, ...],
) -> dict[int, dict]:
    """Per-image RD points (setting = quality) of every effort level, and their averages."""
    levels: dict[int, dict] = {e: {"per_image": {}} for e in efforts}
    for name, array, bar in over_images(model, image_set, len(efforts) * len(qualities), "effort levels", "point"):
        for effort in efforts:
            bar.set_postfix_str(f"{name} effort {effort}")
            points = []
            for quality in qualities:
                points.append(measure_learned(model, array, quality, effort))
                bar.update()
            levels[effort]["per_image"][name] = points
    for entry in levels.values():
        entry["mean"] = average(entry["per_image"])
    return levels


def compare(levels: dict[int, dict], reference: int = 0) -> list[dict]:
    """Each level against ``reference``: BD-rates, mean size and PSNR change at equal quality, mean codec seconds."""
    base = levels[reference]
    rows = []
    for effort, entry in sorted(levels.items()):
        ratios, gains = [], []
        for name, points in entry["per_image"].items():
            for point, ref in zip(points, base["per_image"][name], strict=True):
                ratios.append(point["num_bytes"] / ref["num_bytes"])
                gains.append(point["psnr"] - ref["psnr"])
        row = {
            "effort": effort,
            "gradient_steps": EFFORT_STEPS[effort],
            "size_change_pct": (float(np.mean(ratios)) - 1) * 100,
            "psnr_change_db": float(np.mean(gains)),
            "enc_s": float(np.mean([r["enc_s"] for r in entry["mean"]])),
            "dec_s": float(np.mean([r["dec_s"] for r in entry["mean"]])),
        }
        for metric in METRICS:
            row[f"bd_rate_{metric}"] = bd_rate(*curve(base, metric), *curve(entry, metric))
        rows.append(row)
    return rows


def _pct(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.2f} %"


def summary_markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        f"# Encoder effort, model `{results['model_id']}`",
        "",
        f"{len(results['dataset']['images'])} images from {results['dataset']['source']}; qualities "
        f"{', '.join(f'{q:g}' for q in results['qualities'])}; {meta['torch_threads']} torch thread(s) on "
        f"{meta['cpu']}. BD-rate against effort 0 over the overlapping range ({results['bd_method']}); size and "
        "PSNR changes are means over every (image, quality) pair at equal quality.",
        "",
        "| effort | gradient steps | BD-rate PSNR | BD-rate MS-SSIM | size at equal quality | PSNR at equal quality "
        "| encode s | decode s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["levels"]:
        lines.append(
            f"| {r['effort']} | {r['gradient_steps']} | {_pct(r['bd_rate_psnr'])} | {_pct(r['bd_rate_ms_ssim_db'])} "
            f"| {_pct(r['size_change_pct'])} | {r['psnr_change_db']:+.3f} dB | {r['enc_s']:.2f} | {r['dec_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _efforts(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        efforts = tuple(sorted({int(v) for v in value.split(",")}))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not efforts or efforts[0] != 0 or efforts[-1] >= len(EFFORT_STEPS):
        raise click.BadParameter(f"efforts must include 0 and lie in 0–{len(EFFORT_STEPS) - 1}")
    return efforts


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@images_option()
@limit_option()
@click.option("--crop", type=click.IntRange(min=16), default=None, help="Centre crops of this many pixels a side.")
@click.option("--efforts", default=",".join(str(e) for e in range(len(EFFORT_STEPS))), callback=_efforts,
              show_default=True, help="Effort levels to measure (0 is the reference and always included).")  # fmt: skip
@click.option("--quick", is_flag=True, help="Three 256×256 crops, three qualities, efforts 0 and 1: a smoke run.")
@model_option()
@threads_option()
@out_option("effort.json and effort.md")
def main(
    image_dir: Path,
    limit: int | None,
    crop: int | None,
    efforts: tuple[int, ...],
    quick: bool,
    model_path: Path | None,
    threads: int,
    out: Path | None,
) -> None:
    """BD-rate gain and encode time of each encoder effort level against effort 0."""
    model, image_set, notes = prepare(threads, model_path, image_dir, quick, limit, crop)
    if quick:
        efforts, qualities = (0, 1), QUICK_QUALITIES
    else:
        qualities = QUALITIES
    levels = run(model, image_set, efforts, qualities)
    results = {
        "format": 1,
        "model_id": model.model_id,
        "dataset": image_set.describe(),
        "qualities": list(qualities),
        "bd_method": METHOD,
        "meta": environment("benchmarks.effort", threads),
        "notes": notes,
        "levels": compare(levels),
        "per_level": {str(e): entry for e, entry in levels.items()},
    }
    write_results(results_dir(out, quick), "effort", results, summary_markdown(results))


if __name__ == "__main__":
    main()
