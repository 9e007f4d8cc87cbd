"""Averaged curves, BD tables and ``summary.md``: everything derived from the per-image points in ``rd.json``."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .anchors import Anchor
from .bd import METHOD, bd_psnr, bd_rate, msssim_db, rate_changes

REFERENCES = {"jpeg420": "JPEG 4:2:0", "model": "single model"}
AVERAGING = (
    "mean over images of per-image bpp and of per-image PSNR (and of per-image MS-SSIM, then converted to dB, and of "
    "per-image SSIMULACRA2), at each codec setting, as in CompressAI's published results"
)
METRICS = ("psnr", "ms_ssim_db", "ssimulacra2")
COLUMNS = {
    "bd_rate_psnr": "BD-rate PSNR",
    "bd_rate_msssim": "BD-rate MS-SSIM",
    "bd_rate_ssimulacra2": "BD-rate SSIMULACRA2",
    "bd_psnr": "BD-PSNR",
}
RATE_COLUMNS = {"psnr": "bd_rate_psnr", "ms_ssim_db": "bd_rate_msssim", "ssimulacra2": "bd_rate_ssimulacra2"}
MODEL_QUALITIES = (0.0, 20.0, 40.0, 60.0, 80.0, 100.0)
SSIMULACRA2_NOTE = (
    "SSIMULACRA2 is libjxl's perceptual score (100: identical, higher is better), computed by the pure-Python "
    "`ssimulacra2` package (its version is in rd.json's meta; its scores were not checked against libjxl's own tool); "
    "n/a where a curve was measured without it (published curves, older results)."
)


def average(per_image: dict[str, list[dict]]) -> list[dict]:
    """Mean of each measure over the images at each setting, in setting order."""
    by_setting: dict[float, list[dict]] = defaultdict(list)
    for points in per_image.values():
        for point in points:
            by_setting[point["setting"]].append(point)
    rows = []
    for setting in sorted(by_setting):
        points = by_setting[setting]
        row = {"setting": setting, "num_images": len(points)}
        for name in ("bpp", "psnr", "ms_ssim", "ssimulacra2", "enc_s", "dec_s"):  # results older than a measure: nan
            row[name] = float(np.mean([np.nan if p.get(name) is None else p[name] for p in points]))
        row["ms_ssim_db"] = float(msssim_db(row["ms_ssim"]))
        rows.append(row)
    return rows


def curve(entry: dict, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(bpp, quality) of the averaged curve of one codec, sorted by rate."""
    rows = sorted(entry["mean"], key=lambda r: r["bpp"])
    quality = np.array([r.get(metric) for r in rows], dtype=float)  # None (JSON null) or absent: nan, left out
    return np.array([r["bpp"] for r in rows], dtype=float), quality


def _nan_to_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def bd_table(codecs: dict[str, dict], anchors: Sequence[Anchor] = ()) -> dict[str, dict]:
    """BD-rate (%, on PSNR, MS-SSIM and SSIMULACRA2) and BD-PSNR (dB) of each codec and published curve per reference.

    None where a curve lacks the measure: published curves and results older than SSIMULACRA2 have none.
    """
    curves = {key: {m: curve(entry, m) for m in METRICS} for key, entry in codecs.items()}
    for a in anchors:  # published curves carry no SSIMULACRA2
        unmeasured = (a.bpp, np.full_like(a.bpp, np.nan))
        curves[a.key] = {"psnr": (a.bpp, a.psnr), "ms_ssim_db": (a.bpp, a.ms_ssim_db), "ssimulacra2": unmeasured}
    table = {}
    for key, own in curves.items():
        table[key] = {
            f"vs_{ref}": {
                **{column: _nan_to_none(bd_rate(*curves[ref][m], *own[m])) for m, column in RATE_COLUMNS.items()},
                "bd_psnr": _nan_to_none(bd_psnr(*curves[ref]["psnr"], *own["psnr"])),
            }
            for ref in REFERENCES
            if ref in codecs
        }
    return table


def _cell(column: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.2f} dB" if column == "bd_psnr" else f"{value:+.1f} %"


def _bd_rows(keys: list[str], labels: dict[str, str], codecs: dict, table: dict) -> list[str]:
    refs = [ref for ref in REFERENCES if ref in codecs]
    header = "| codec | " + " | ".join(f"{COLUMNS[c]} vs {REFERENCES[r]}" for r in refs for c in COLUMNS) + " |"
    lines = [header, "|---" * (1 + len(refs) * len(COLUMNS)) + "|"]
    for key in keys:
        cells = [_cell(c, table[key][f"vs_{r}"][c]) for r in refs for c in COLUMNS]
        lines.append(f"| {labels[key]} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(results: dict, anchors: list[Anchor], notes: list[str]) -> str:
    """The human-readable report: what was measured, on what, and the BD-rates between the curves."""
    codecs, meta, dataset = results["codecs"], results["meta"], results["dataset"]
    table = results["bd"]
    lines = [
        "# Rate–distortion benchmark",
        "",
        f"Images: {len(dataset['images'])} from {dataset['source']} (fingerprint {dataset['fingerprint'][:12]}). "
        f"Last run {meta['date']} on {meta['cpu']} with `{meta['command']}` (code at commit "
        f"{meta.get('commit', 'n/a')}); full metadata in `rd.json`.",
        "",
        "## Bjøntegaard deltas (BD-rate < 0 or BD-PSNR > 0: better than the reference)",
        "",
    ]
    if not any(ref in codecs for ref in REFERENCES):
        lines.append("No reference curve (JPEG 4:2:0 or the single model) has been measured yet.")
    else:
        labels = {key: entry["label"] for key, entry in codecs.items()}
        lines += _bd_rows(list(codecs), labels, codecs, table)
    lines += [
        "",
        f"Points: {AVERAGING}. bpp counts every byte of the encoded file, header included. "
        f"MS-SSIM is RGB MS-SSIM in dB, -10·log10(1 - MS-SSIM). {SSIMULACRA2_NOTE} BD method: {METHOD}.",
        "",
        *_codecs_section(codecs),
    ]
    if "model" in codecs:
        lines += _model_section(codecs["model"])
        lines += _model_against_codecs(codecs)
    if "baselines" in codecs:
        lines += _baselines_section(codecs)
    if anchors and any(ref in codecs for ref in REFERENCES):
        labels = {a.key: a.label for a in anchors}
        lines += [
            "",
            "## Published curves (CompressAI's Kodak results, measured elsewhere, not by this benchmark)",
            "",
            "Only comparable when the images above are the 24 Kodak images; published learned-model rates exclude "
            "any file header.",
            "",
            *_bd_rows([a.key for a in anchors], labels, codecs, table),
        ]
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def _codecs_section(codecs: dict[str, dict]) -> list[str]:
    """What each curve is (library, settings, sweep), the rates it spans and its mean codec seconds."""
    lines = [
        "## Codecs",
        "",
        "| codec | library | settings | sweep | bpp range | enc s / image | dec s / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in codecs.values():
        rows = entry["mean"]
        bpps = [r["bpp"] for r in rows]
        enc, dec = np.mean([r["enc_s"] for r in rows]), np.mean([r["dec_s"] for r in rows])
        lines.append(
            f"| {entry['label']} | {entry['library']} | {entry['settings']} | {_sweep(entry)} | "
            f"{min(bpps):.3f}–{max(bpps):.3f} | {enc:.3f} | {dec:.3f} |"
        )
    lines.append("")
    lines.append(
        "Seconds: mean over images and settings of one encode and one decode call; classic codecs single-threaded, "
        "learned ones with the torch threads recorded in each codec's `meta` in rd.json."
    )
    return lines


def score(value: float | None) -> str:
    """A score to two decimals, or n/a where it was not measured (null in rd.json, nan in memory)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _sweep(entry: dict) -> str:
    settings = [r["setting"] for r in entry["mean"]]
    return f"{entry['parameter']} {min(settings):g}–{max(settings):g}, {len(settings)} points"


def model_rows(entry: dict) -> list[dict]:
    """The single model's averaged points to tabulate: those at MODEL_QUALITIES when the sweep is denser."""
    rows = entry["mean"]
    if len(rows) > len(MODEL_QUALITIES):
        rows = [r for r in rows if any(abs(r["setting"] - q) < 1e-6 for q in MODEL_QUALITIES)]
    return rows


def _model_section(entry: dict) -> list[str]:
    rows = model_rows(entry)
    lines = [
        "",
        f"## Single model `{entry['model_id']}` (λ {entry['lmbda_min']:g}–{entry['lmbda_max']:g})",
        "",
        f"Timed with {entry['meta']['torch_threads']} torch thread(s) on {entry['meta']['cpu']}.",
        "",
        "| quality | bpp | PSNR (dB) | MS-SSIM | MS-SSIM (dB) | SSIMULACRA2 | enc s | dec s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']:g} | {r['bpp']:.4f} | {r['psnr']:.2f} | {r['ms_ssim']:.4f} | {r['ms_ssim_db']:.2f} | "
            f"{score(r.get('ssimulacra2'))} | {r['enc_s']:.3f} | {r['dec_s']:.3f} |"
        )
    return lines


def _model_against_codecs(codecs: dict[str, dict]) -> list[str]:
    """Bits of the single model against each measured codec at the same PSNR, quality by quality."""
    others = [key for key in codecs if key not in ("model", "baselines")]
    if not others:
        return []
    rows = model_rows(codecs["model"])
    changes = {
        key: rate_changes(*curve(codecs[key], "psnr"), [r["bpp"] for r in rows], [r["psnr"] for r in rows])
        for key in others
    }
    lines = [
        "",
        "Bits of the single model against each codec for the same PSNR, at the model's qualities (each codec's curve "
        "interpolated as for the BD-rates; n/a outside its range). A BD-rate averages over the shared range; this "
        "shows where along it each codec wins.",
        "",
        "| quality | PSNR (dB) | " + " | ".join(codecs[key]["label"] for key in others) + " |",
        "|---" * (2 + len(others)) + "|",
    ]
    for i, r in enumerate(rows):
        cells = [_cell("rate", _nan_to_none(changes[key][i])) for key in others]
        lines.append(f"| {r['setting']:g} | {r['psnr']:.2f} | " + " | ".join(cells) + " |")
    return lines


def rd_cost(point: dict) -> float:
    """λ·255²·MSE + bpp at a point whose setting is λ: the loss both kinds of model were trained to minimise."""
    return point["setting"] * 255**2 * 10 ** (-point["psnr"] / 10) + point["bpp"]


def _mean_cost(per_image: dict[str, list[dict]], lmbda: float) -> float:
    return float(np.mean([rd_cost(p) for points in per_image.values() for p in points if p["setting"] == lmbda]))


def _budget(meta: dict) -> str:
    if "steps" not in meta:
        return "budget not recorded"
    return f"{meta['steps']:,} steps of batch {meta['batch_size']} × {meta['patch_size']}², {meta['train_hours']:g} h"


def _baselines_section(codecs: dict) -> list[str]:
    """The single model against the per-λ curve: BD over the curves and the difference at each baseline's λ."""
    baselines = codecs["baselines"]
    lines = ["", "## Single model against the per-λ models", ""]
    lines += [f"- per-λ model λ = {m['lmbda']:g}: `{m['model_id']}`, {_budget(m.get('meta', {}))}"
              for m in baselines["models"]]  # fmt: skip
    if "model" in codecs:
        single = codecs["model"]
        lines.append(f"- single model `{single['model_id']}` (λ {single['lmbda_min']:g}–{single['lmbda_max']:g})")
        rate = {m: bd_rate(*curve(baselines, m), *curve(single, m)) for m in METRICS}
        gain = bd_psnr(*curve(baselines, "psnr"), *curve(single, "psnr"))
        lines += [
            "",
            f"BD-rate of the single model against the per-λ curve: {_cell('bd_rate_psnr', _nan_to_none(rate['psnr']))} "
            f"(PSNR), {_cell('bd_rate_msssim', _nan_to_none(rate['ms_ssim_db']))} (MS-SSIM), "
            f"{_cell('bd_rate_ssimulacra2', _nan_to_none(rate['ssimulacra2']))} (SSIMULACRA2); BD-PSNR "
            f"{_cell('bd_psnr', _nan_to_none(gain))} (negative rate or positive dB: the single model is better).",
        ]
    paired = baselines.get("single_at_lambda")
    if not paired or ("model" in codecs and paired["model_id"] != codecs["model"]["model_id"]):
        return lines
    lines += [
        "",
        f"At each baseline's own λ, the single model `{paired['model_id']}` encoded with that λ (means over images; "
        "J = λ·255²·MSE + bpp, the training loss, per image then averaged; Δ = single − per-λ):",
        "",
        "| λ | per-λ bpp | per-λ PSNR | single bpp | single PSNR | Δ bpp | Δ PSNR | per-λ J | single J | Δ J |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    own = {row["setting"]: row for row in baselines["mean"]}
    theirs = {row["setting"]: row for row in average(paired["per_image"])}
    for lmbda in sorted(set(own) & set(theirs)):
        a, b = own[lmbda], theirs[lmbda]
        j_own, j_single = (_mean_cost(per_image, lmbda) for per_image in (baselines["per_image"], paired["per_image"]))
        lines.append(
            f"| {lmbda:g} | {a['bpp']:.4f} | {a['psnr']:.2f} | {b['bpp']:.4f} | {b['psnr']:.2f} | "
            f"{100 * (b['bpp'] / a['bpp'] - 1):+.1f} % | {b['psnr'] - a['psnr']:+.2f} dB | {j_own:.4f} | "
            f"{j_single:.4f} | {100 * (j_single / j_own - 1):+.1f} % |"
        )
    return lines


def write_summary(results: dict, anchors: list[Anchor], notes: list[str], path: Path) -> None:
    path.write_text(summary_markdown(results, anchors, notes))
