"""The RD benchmark: ``python -m benchmarks.rd [--quick] [--codecs ...]`` measures, merges, tabulates and plots.

Results accumulate in ``rd.json``: a run with ``--codecs`` replaces only those codecs, so the slow classic sweeps need
not be rerun when only the model changes.  Results for a different image set are never mixed in.  A full run over the
default images rewrites the results table of the README (:mod:`benchmarks.readme`), so that it cannot go stale.
"""

from __future__ import annotations

import glob
import json
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

import yotocodec

from . import anchors as anchors_mod
from . import images as images_mod
from .bd import METHOD
from .codecs import CODECS, measure, ssimulacra2_missing
from .common import (
    environment,
    load_images,
    measure_learned,
    over_images,
    package_version,
    results_dir,
    set_threads,
    warm_up,
    write_json,
)
from .options import images_option, model_option, out_option, threads_option
from .plots import plot_rd
from .readme import check_markers, update_readme
from .report import AVERAGING, average, bd_table, write_summary

LEARNED = ("model", "baselines")
ALL_KEYS = (*CODECS, *LEARNED)
QUICK_KEYS = ("jpeg420", "webp", "model")
MODEL_QUALITIES = tuple(float(q) for q in np.linspace(0, 100, 16))
QUICK_MODEL_QUALITIES = tuple(float(q) for q in np.linspace(0, 100, 4))
BASELINE_QUALITY = 50.0  # a per-λ model ignores quality: its single λ is both ends of its range
README = Path(__file__).resolve().parents[1] / "README.md"


def run_classic(keys: list[str], image_set: images_mod.ImageSet, quick: bool, jobs: int, threads: int) -> dict:
    """Measure the classic codecs, one (codec, image) pair per task, in a process pool when ``jobs`` > 1."""
    tasks = [(key, name, array) for key in keys for name, array in zip(image_set.names, image_set.arrays, strict=True)]
    sweeps = {key: CODECS[key].quick_sweep if quick else CODECS[key].sweep for key in keys}
    done: dict[tuple[str, str], list[dict]] = {}
    with tqdm(total=len(tasks), desc="classic codecs", unit="image") as bar:
        if jobs <= 1:
            for key, name, array in tasks:
                bar.set_postfix_str(f"{key} {name}")
                done[key, name] = measure(key, array, sweeps[key])
                bar.update()
        else:  # spawn: forking a process that has started torch's thread pool can hang the children
            with ProcessPoolExecutor(jobs, get_context("spawn"), initializer=set_threads, initargs=(threads,)) as pool:
                futures = {pool.submit(measure, key, array, sweeps[key]): (key, name) for key, name, array in tasks}
                for future in as_completed(futures):
                    done[futures[future]] = future.result()
                    bar.update()
    return {
        key: {
            "label": CODECS[key].label,
            "kind": "classic",
            "parameter": CODECS[key].parameter,
            "settings": CODECS[key].settings,
            "library": CODECS[key].library(),
            "per_image": {name: done[key, name] for name in image_set.names},
        }
        for key in keys
    }


def _steps(metas: list[dict]) -> str:
    """' (N steps)' for a label, when the weights files record one common training length."""
    steps = {meta.get("steps") for meta in metas}
    return f" ({steps.pop():,} steps)" if len(steps) == 1 and None not in steps else ""


def run_model(
    model: Any, model_path: Path | None, image_set: images_mod.ImageSet, qualities: tuple[float, ...]
) -> dict:
    """The single variable-rate model over a dense quality sweep, through the public API only."""
    per_image = {}
    for name, array, bar in over_images(model, image_set, len(qualities), "single model", "point"):
        per_image[name] = []
        for quality in qualities:
            per_image[name].append(measure_learned(model, array, quality))
            bar.update()
    return {
        "label": f"yotocodec, single model {model.model_id}{_steps([model.meta])}",
        "kind": "learned",
        "parameter": "quality",
        "settings": f"λ {model.config.lmbda_min:g}–{model.config.lmbda_max:g} mapped log-linearly onto quality",
        "library": f"yotocodec {package_version('yotocodec')}, {model_path or 'shipped model'}",
        "model_id": model.model_id,
        "lmbda_min": model.config.lmbda_min,
        "lmbda_max": model.config.lmbda_max,
        "per_image": per_image,
    }


def run_baselines(loaded: dict[Path, Any], image_set: images_mod.ImageSet, single: Any = None) -> dict:
    """One point per per-λ model (quality is irrelevant to them), labelled by its λ: together a per-λ curve.

    With the ``single`` model, also that model at each baseline's λ: the per-point comparison at equal λ.
    """
    per_image: dict[str, list[dict]] = {name: [] for name in image_set.names}
    models = []
    with tqdm(total=len(loaded) * len(image_set.names), desc="per-λ baselines", unit="image") as bar:
        for path, model in loaded.items():
            lmbda = model.config.lmbda_min
            models.append({"path": str(path), "model_id": model.model_id, "lmbda": lmbda, "meta": model.meta})
            warm_up(model, image_set)
            for name, array in zip(image_set.names, image_set.arrays, strict=True):
                per_image[name].append({**measure_learned(model, array, BASELINE_QUALITY), "setting": lmbda})
                bar.update()
    entry = {
        "label": f"yotocodec, per-λ models{_steps([m['meta'] for m in models])}",
        "kind": "learned per-λ",
        "parameter": "λ",
        "settings": f"one weights file per λ, encoded at quality {BASELINE_QUALITY:g} (ignored)",
        "library": f"yotocodec {package_version('yotocodec')}",
        "models": models,
        "per_image": per_image,
    }
    if single is not None:
        entry["single_at_lambda"] = run_single_at_lambdas(single, [m["lmbda"] for m in models], image_set)
    return entry


def run_single_at_lambdas(single: Any, lambdas: list[float], image_set: images_mod.ImageSet) -> dict:
    """The single model encoded with each baseline's λ that lies in its range: the comparison at equal λ."""
    inside = [lmbda for lmbda in lambdas if single.config.lmbda_min <= lmbda <= single.config.lmbda_max]
    per_image: dict[str, list[dict]] = {}
    for name, array, bar in over_images(single, image_set, len(inside), "single model at each λ", "image"):
        per_image[name] = []
        for lmbda in inside:
            per_image[name].append(measure_learned(single, array, None, lmbda=lmbda))
            bar.update()
    return {"model_id": single.model_id, "meta": single.meta, "per_image": per_image}


def _previous(path: Path, fingerprint: str) -> dict[str, dict]:
    """Codec results of an earlier run on the same images, to merge with; results for other images are kept safe."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if old.get("dataset", {}).get("fingerprint") != fingerprint:
        raise click.ClickException(
            f"{path} holds results for other images ({old.get('dataset', {}).get('source')}); "
            "choose another --out or delete it"
        )
    return old["codecs"]


def _split_codecs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """``--codecs``: keys comma- or space-separated, or the option repeated; ``classic`` stands for all seven."""
    keys = []
    for value in values:
        for key in filter(None, value.replace(",", " ").split()):
            if key == "classic":
                keys += CODECS
            elif key in ALL_KEYS:
                keys.append(key)
            else:
                raise click.BadParameter(f"unknown codec {key!r}; choose from classic, {', '.join(ALL_KEYS)}")
    return tuple(dict.fromkeys(keys))


def _baseline_paths(patterns: tuple[str, ...], notes: list[str]) -> list[Path]:
    """Weights files named by files, folders (their *.pt) or globs; ones that match nothing are noted, not fatal."""
    paths: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        matches = (
            sorted(path.glob("*.pt"))
            if path.is_dir()
            else [path]
            if path.is_file()
            else sorted(Path(p) for p in glob.glob(pattern))
        )
        if not matches:
            notes.append(f"--baselines {pattern}: no weights files found")
        paths += matches
    return list(dict.fromkeys(paths))


def _keys(codecs: tuple[str, ...], quick: bool, baselines: bool) -> list[str]:
    """What to measure: the ``--codecs`` named, else the default set (with the baselines when weights are given)."""
    return list(codecs or (QUICK_KEYS if quick else [*CODECS, "model", *(["baselines"] if baselines else [])]))


def _load_learned(
    keys: list[str], explicit: set[str], model_path: Path | None, baseline_paths: list[Path], notes: list[str]
) -> tuple[Any, dict[Path, Any]]:
    """The single model (None when left out) and the per-λ models, loaded before anything is measured.

    A bad weights file should fail before the long classic sweeps.  The single model is loaded for the baselines too:
    they are paired with it at their own λ.  Unless it was named in ``--codecs``, a single model that does not load
    is only a note.
    """
    model = None
    if "model" in keys or "baselines" in keys:
        try:
            model = yotocodec.load_model(model_path)
        except yotocodec.YotoError as exc:
            if "model" in explicit:
                raise click.ClickException(f"single model: {exc}") from None
            notes.append(f"single model left out: {exc}")
    try:
        loaded = {path: yotocodec.load_model(path) for path in baseline_paths if "baselines" in keys}
    except yotocodec.YotoError as exc:
        raise click.ClickException(f"per-λ baseline: {exc}") from None
    return model, loaded


def _runnable_classic(keys: list[str], notes: list[str]) -> list[str]:
    """The classic codecs among ``keys`` that can run here; notes say what is left out and why (SSIMULACRA2 too)."""
    if reason := ssimulacra2_missing():  # a note, not a failure: its column reads n/a
        notes.append(reason)
    classic = []
    for key in (k for k in keys if k in CODECS):
        reason = CODECS[key].missing()
        if reason:
            notes.append(reason)
        else:
            classic.append(key)
    return classic


def _run_learned(
    keys: list[str],
    model: Any,
    model_path: Path | None,
    loaded: dict[Path, Any],
    image_set: images_mod.ImageSet,
    quick: bool,
    notes: list[str],
) -> dict[str, dict]:
    """The single model's sweep and the per-λ baselines, those of them asked for and available."""
    measured = {}
    if model is not None and "model" in keys:
        qualities = QUICK_MODEL_QUALITIES if quick else MODEL_QUALITIES
        measured["model"] = run_model(model, model_path, image_set, qualities)
    if "baselines" in keys:
        if loaded:
            measured["baselines"] = run_baselines(loaded, image_set, model)
        else:
            notes.append("per-λ baselines left out: no weights files (--baselines)")
    return measured


def _merge(
    merged: dict[str, dict], measured: dict[str, dict], meta: dict, model: Any, image_set: images_mod.ImageSet
) -> dict[str, dict]:
    """The codecs just measured (with this run's metadata) over those of earlier runs, each with its averaged curve.

    Baselines kept from an earlier run are re-paired with a single model measured now, at their recorded λ.
    """
    for key, entry in measured.items():
        merged[key] = {**entry, "meta": meta}
    if "model" in measured and "baselines" not in measured and "baselines" in merged:  # kept from an earlier run
        lambdas = [m["lmbda"] for m in merged["baselines"]["models"]]  # re-pair them with the model just measured
        merged["baselines"]["single_at_lambda"] = run_single_at_lambdas(model, lambdas, image_set)
    for entry in merged.values():
        entry["mean"] = average(entry["per_image"])
    return {key: merged[key] for key in ALL_KEYS if key in merged}


def _published(quick: bool, anchor_dir: Path, notes: list[str]) -> list[anchors_mod.Anchor]:
    """CompressAI's published Kodak curves, except in quick mode, whose images differ."""
    if quick:
        notes.append("published Kodak curves not drawn in quick mode: the images differ")
        return []
    published, anchor_notes = anchors_mod.load_anchors(anchor_dir)
    notes += anchor_notes
    return published


def _write_outputs(results: dict, published: list[anchors_mod.Anchor], notes: list[str], out: Path) -> None:
    """``rd.json``, ``summary.md`` and the two plots in ``out``; the notes and what was written on stderr."""
    results_path = out / "rd.json"
    write_json(results_path, results)
    write_summary(results, published, notes, out / "summary.md")
    title = f"Rate–distortion on {results['dataset']['source']}"
    for metric, name in (("psnr", "rd_psnr.png"), ("ms_ssim_db", "rd_msssim.png")):
        plot_rd(results["codecs"], published, metric, title, out / name)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {results_path}, {out / 'summary.md'}, {out / 'rd_psnr.png'}, {out / 'rd_msssim.png'}", err=True)


def _readme_plan(
    readme: Path | None, no_readme: bool, quick: bool, image_dir: Path, out: Path | None
) -> tuple[Path, bool] | None:
    """The README to rewrite at the end and whether only with the shipped model's results; None: leave it alone.

    ``--readme PATH`` always gets the table.  Without it, the repository's README is rewritten only by a run made the
    way its figures are: not ``--quick``, the default ``--images`` and ``--out``, and (checked at the end) the shipped
    model.  The markers are checked now, before hours of measuring.
    """
    if no_readme:
        return None
    if readme is None:
        if quick or out is not None or image_dir.resolve() != images_mod.DEFAULT_DIR.resolve():
            return None
        readme, shipped_only = README, True
    else:
        shipped_only = False
    check_markers(readme)
    return readme, shipped_only


def _shipped_model_id() -> str | None:
    """The id of the model users get, which the README describes; None when there is none."""
    try:
        return yotocodec.load_model().model_id
    except yotocodec.YotoError:
        return None


def _rewrite_readme(plan: tuple[Path, bool] | None, results: dict) -> None:
    """The README's results table from ``results``: it tabulates the single model, so it must be among them."""
    if plan is None:
        return
    path, shipped_only = plan
    model = results["codecs"].get("model")
    if model is None:
        reason = "the results hold no single model"
    elif shipped_only and model["model_id"] != _shipped_model_id():
        reason = f"the single model in the results, {model['model_id']}, is not the shipped model"
    else:
        update_readme(path, results)
        return
    if not shipped_only:
        raise click.ClickException(f"{path} not rewritten: {reason}")
    click.echo(f"note: {path} left alone: {reason}", err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@images_option("Folder of test images (all of them; --quick takes crops of the first three).")
@click.option(
    "--quick", is_flag=True, help="Three 256×256 crops, four settings, JPEG + WebP + the model: a one-minute smoke run."
)
@click.option(
    "--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes for the classic codecs."
)
@click.option(
    "--codecs",
    multiple=True,
    callback=_split_codecs,
    help=f"Subset to (re)measure, comma-separated or repeated: classic, {', '.join(ALL_KEYS)}. "
    "Others already in rd.json are kept. Default: all (quick: jpeg420, webp, model).",
)
@model_option(
    "Weights of the single variable-rate model (default: the shipped model); the per-λ baselines are paired "
    "with it at their own λ."
)
@click.option(
    "--baselines", multiple=True, help="Per-λ weights files: a file, a folder of *.pt or a quoted glob; repeatable."
)
@click.option(
    "--anchors",
    "anchor_dir",
    type=click.Path(path_type=Path),
    default=anchors_mod.DEFAULT_DIR,
    show_default=True,
    help="Folder of CompressAI's published Kodak curves (skipped if missing).",
)
@out_option("rd.json, summary.md and the plots")
@threads_option("torch threads (MS-SSIM and the learned codec); 1 keeps timings comparable with the classic codecs.")
@click.option(
    "--readme",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Markdown file whose block between <!-- rd-results:start --> and <!-- rd-results:end --> gets the single "
    "model's table and BD-rates [default: README.md of the repository, by a full run with the default --images and "
    "--out and the shipped model].",
)
@click.option("--no-readme", is_flag=True, help="Leave every README alone.")
def main(
    image_dir: Path,
    quick: bool,
    jobs: int,
    codecs: tuple[str, ...],
    model_path: Path | None,
    baselines: tuple[str, ...],
    anchor_dir: Path,
    out: Path | None,
    threads: int,
    readme: Path | None,
    no_readme: bool,
) -> None:
    """Rate–distortion benchmark: bpp, RGB PSNR and MS-SSIM of every codec, BD-rates, plots."""
    set_threads(threads)
    notes: list[str] = []
    keys = _keys(codecs, quick, bool(baselines))
    baseline_paths = _baseline_paths(baselines, notes)
    image_set = load_images(image_dir, quick, notes)
    click.echo(f"{len(image_set.names)} images from {image_set.source}", err=True)
    readme_plan = _readme_plan(readme, no_readme, quick, image_dir, out)
    out = results_dir(out, quick)
    merged = _previous(out / "rd.json", image_set.fingerprint)  # fail before measuring, not after
    model, loaded_baselines = _load_learned(keys, set(codecs), model_path, baseline_paths, notes)

    measured = run_classic(_runnable_classic(keys, notes), image_set, quick, jobs, threads)
    measured.update(_run_learned(keys, model, model_path, loaded_baselines, image_set, quick, notes))

    out.mkdir(parents=True, exist_ok=True)
    meta = environment("benchmarks.rd", threads)
    codec_results = _merge(merged, measured, meta, model, image_set)
    published = _published(quick, anchor_dir, notes)
    results = {
        "format": 1,
        "dataset": {**image_set.describe(), "quick": quick},
        "averaging": AVERAGING,
        "bd_method": METHOD,
        "meta": meta,
        "notes": notes,
        "codecs": codec_results,
        "bd": bd_table(codec_results, published),
    }
    _write_outputs(results, published, notes, out)
    _rewrite_readme(readme_plan, results)


if __name__ == "__main__":
    main()
