"""The ship bar: does a candidate model beat the shipped one?

A new default model must beat the one it replaces by BD-rate (PSNR) without being more than ``--max-loss`` dB worse
at any rate the two curves share.  Measure the candidate with the RD benchmark into a folder of its own, then compare:

    python -m benchmarks.rd --codecs model --model CANDIDATE.pt --out OUT --no-readme
    python -m benchmarks.shipbar OUT/rd.json                    # against benchmarks/results/rd.json's model

Both curves must come from the same images.  The PSNR gap is read at every measured rate of either curve inside the
shared range (each curve interpolated in log rate, as the BD metrics are); MS-SSIM and SSIMULACRA2 BD-rates are
reported beside it, since a model can win on PSNR and lose on the perceptual measures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from .bd import bd_psnr, bd_rate, quality_gaps
from .common import DEFAULT_OUT
from .report import METRICS, curve

METRIC_NAMES = {"psnr": "PSNR", "ms_ssim_db": "MS-SSIM", "ssimulacra2": "SSIMULACRA2"}


def model_entry(path: Path, key: str) -> dict:
    """The ``key`` codec of an ``rd.json`` (or of the one in a folder), checked to exist."""
    path = path / "rd.json" if path.is_dir() else path
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path}: not a readable rd.json ({exc.__class__.__name__})") from None
    if key not in results.get("codecs", {}):
        raise click.ClickException(f"{path} holds no {key!r} curve")
    return {**results["codecs"][key], "fingerprint": results.get("dataset", {}).get("fingerprint")}


def compare(reference: dict, candidate: dict, max_loss: float) -> dict:
    """BD-rate on every measure, BD-PSNR, the PSNR gaps at equal rate, the worst of them, and the verdict."""
    rates = {m: bd_rate(*curve(reference, m), *curve(candidate, m)) for m in METRICS}
    gaps = quality_gaps(*curve(reference, "psnr"), *curve(candidate, "psnr"))
    worst = min(gaps, key=lambda g: g[1]) if gaps else (math.nan, math.nan)
    passed = bool(gaps) and rates["psnr"] < 0 and worst[1] >= -max_loss
    return {
        "bd_rate": rates,
        "bd_psnr": bd_psnr(*curve(reference, "psnr"), *curve(candidate, "psnr")),
        "gaps": gaps,
        "worst_gap": worst,
        "passes": passed,
    }


def report(reference: dict, candidate: dict, result: dict, max_loss: float) -> str:
    """The comparison as markdown, ending with the verdict."""
    names = reference.get("model_id", "reference"), candidate.get("model_id", "candidate")
    lines = [f"Candidate `{names[1]}` against `{names[0]}` (negative BD-rate: the candidate needs fewer bits)", ""]
    for metric in METRICS:
        value = result["bd_rate"][metric]
        lines.append(f"- BD-rate, {METRIC_NAMES[metric]}: " + ("n/a" if math.isnan(value) else f"{value:+.2f} %"))
    lines += [f"- BD-PSNR: {result['bd_psnr']:+.3f} dB", "", "| bpp | PSNR gap (dB) |", "|---|---|"]
    lines += [f"| {rate:.3f} | {gap:+.3f} |" for rate, gap in result["gaps"]]
    rate, gap = result["worst_gap"]
    verdict = "PASSES" if result["passes"] else "FAILS"
    lines += ["", f"Worst gap {gap:+.3f} dB at {rate:.3f} bpp: {verdict} the bar (BD-rate < 0, no gap below "
              f"−{max_loss:g} dB)."]  # fmt: skip
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("candidate", type=click.Path(exists=True, path_type=Path))
@click.option("--reference", type=click.Path(exists=True, path_type=Path), default=DEFAULT_OUT / "rd.json",
              show_default=True, help="rd.json (or its folder) of the model to beat.")  # fmt: skip
@click.option("--max-loss", type=float, default=0.1, show_default=True, help="Largest PSNR loss allowed at any rate.")
def main(candidate: Path, reference: Path, max_loss: float) -> None:
    """Compare a candidate model's RD curve with the shipped model's: BD-rates, PSNR gaps, verdict."""
    ref, cand = model_entry(reference, "model"), model_entry(candidate, "model")
    if ref["fingerprint"] != cand["fingerprint"]:
        raise click.ClickException("the two curves were measured on different image sets")
    click.echo(report(ref, cand, compare(ref, cand, max_loss), max_loss))


if __name__ == "__main__":
    main()
