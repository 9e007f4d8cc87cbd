"""The benchmark driver: ``python -m benchmarks.rd [--quick] [--codecs ...]`` measures, merges, tabulates and plots.

Results accumulate in ``rd.json``: a run with ``--codecs`` replaces only those codecs, so the slow classic sweeps need
not be rerun when only the model changes.  Results for a different image set are never mixed in.
"""

from __future__ import annotations

import glob
import json
import math
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import yotocodec

from . import anchors as anchors_mod
from . import images as images_mod
from .bd import METHOD
from .codecs import CODECS, measure, rd_point, ssimulacra2_missing
from .plots import plot_rd
from .report import AVERAGING, average, bd_table, write_summary

LEARNED = ("model", "baselines")
ALL_KEYS = (*CODECS, *LEARNED)
QUICK_KEYS = ("jpeg420", "webp", "model")
MODEL_QUALITIES = tuple(float(q) for q in np.linspace(0, 100, 16))
QUICK_MODEL_QUALITIES = tuple(float(q) for q in np.linspace(0, 100, 4))
DEFAULT_OUT = Path("benchmarks/results")
PACKAGES = ("yotocodec", "torch", "compressai", "numpy", "scipy", "pillow", "imagecodecs", "matplotlib", "ssimulacra2")
BASELINE_QUALITY = 50.0  # a per-λ model ignores quality: its single λ is both ends of its range


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _entry_module() -> str:
    """The module run with ``python -m`` (effort and rate control share this metadata), else benchmarks.rd."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return spec.name if spec is not None and spec.name.startswith("benchmarks.") else "benchmarks.rd"


def environment(threads: int) -> dict:
    """What produced the numbers: versions, machine, date and the command, stored with every codec's results."""
    from PIL import features

    libraries = {name: _package_version(name) for name in PACKAGES}
    libraries.update(
        {
            lib: features.version(feature) or "n/a"
            for lib, feature in (
                ("libjpeg-turbo", "libjpeg_turbo"),
                ("libwebp", "webp"),
                ("libavif", "avif"),
                ("openjpeg", "jpg_2000"),
            )
        }
    )
    if CODECS["jpegxl"].missing() is None:
        import imagecodecs

        libraries["libjxl"] = imagecodecs.jpegxl_version().removeprefix("libjxl ")
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": f"python -m {_entry_module()} " + shlex.join(sys.argv[1:]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "libraries": libraries,
    }


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


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


def measure_learned(
    model: Any, array: np.ndarray, quality: float | None, effort: int = 0, lmbda: float | None = None
) -> dict:
    """One RD point of a yotocodec model through the public API: real file size, decoded pixels, codec seconds.

    The point's setting is ``lmbda`` when given (it then overrides the quality), else the quality.
    """
    image = Image.fromarray(array, "RGB")
    start = time.perf_counter()
    data = yotocodec.encode(image, quality, lmbda=lmbda, model=model, effort=effort)
    encoded = time.perf_counter()
    decoded = np.array(yotocodec.decode(data, model=model).convert("RGB"))
    setting = quality if lmbda is None else lmbda
    return rd_point(setting, len(data), array, decoded, encoded - start, time.perf_counter() - encoded)


def warm_up(model: Any, image_set: images_mod.ImageSet) -> None:
    """One untimed round trip, so that lazy initialisation is not billed to the first image."""
    measure_learned(model, images_mod.center_crop(image_set.arrays[0], 64), 50.0)


def _steps(metas: list[dict]) -> str:
    """' (N steps)' for a label, when the weights files record one common training length."""
    steps = {meta.get("steps") for meta in metas}
    return f" ({steps.pop():,} steps)" if len(steps) == 1 and None not in steps else ""


def run_model(
    model: Any, model_path: Path | None, image_set: images_mod.ImageSet, qualities: tuple[float, ...]
) -> dict:
    """The single variable-rate model over a dense quality sweep, through the public API only."""
    warm_up(model, image_set)
    per_image = {}
    with tqdm(total=len(image_set.names) * len(qualities), desc="single model", unit="point") as bar:
        for name, array in zip(image_set.names, image_set.arrays, strict=True):
            per_image[name] = []
            for quality in qualities:
                per_image[name].append(measure_learned(model, array, quality))
                bar.update()
    return {
        "label": f"yotocodec, single model {model.model_id}{_steps([model.meta])}",
        "kind": "learned",
        "parameter": "quality",
        "settings": f"λ {model.config.lmbda_min:g}–{model.config.lmbda_max:g} mapped log-linearly onto quality",
        "library": f"yotocodec {_package_version('yotocodec')}, {model_path or 'shipped model'}",
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
        "library": f"yotocodec {_package_version('yotocodec')}",
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
    warm_up(single, image_set)
    with tqdm(total=len(inside) * len(image_set.names), desc="single model at each λ", unit="image") as bar:
        for name, array in zip(image_set.names, image_set.arrays, strict=True):
            per_image[name] = []
            for lmbda in inside:
                per_image[name].append(measure_learned(single, array, None, lmbda=lmbda))
                bar.update()
    return {"model_id": single.model_id, "meta": single.meta, "per_image": per_image}


def finite_json(value: object) -> object:
    """JSON without NaN/Infinity tokens (not valid JSON): non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def results_dir(out: Path | None, quick: bool) -> Path:
    """Where a benchmark writes: ``--out``, else ``benchmarks/results`` (``…/quick`` for smoke runs)."""
    return out or (DEFAULT_OUT / "quick" if quick else DEFAULT_OUT)


def prepare(
    threads: int,
    model_path: Path | None,
    image_dir: Path,
    quick: bool,
    limit: int | None = None,
    crop: int | None = None,
) -> tuple[Any, images_mod.ImageSet, list[str]]:
    """Shared set-up of the single-model benchmarks: threads, the model (a bad file is a clean error), the images."""
    set_threads(threads)
    try:
        model = yotocodec.load_model(model_path)
    except yotocodec.YotoError as exc:
        raise click.ClickException(str(exc)) from None
    notes: list[str] = []
    image_set = load_images(image_dir, quick, notes, limit, crop)
    click.echo(f"{len(image_set.names)} images from {image_set.source}", err=True)
    return model, image_set, notes


def write_results(out: Path, stem: str, results: dict, markdown: str) -> None:
    """``stem.json`` (valid JSON: non-finite numbers become null) and ``stem.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(finite_json(results), indent=1, ensure_ascii=False) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    click.echo(f"wrote {out / f'{stem}.json'} and {out / f'{stem}.md'}", err=True)


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


def load_images(
    folder: Path, quick: bool, notes: list[str], limit: int | None = None, crop: int | None = None
) -> images_mod.ImageSet:
    """The benchmark's images: all of ``folder`` (or its first ``limit``, centre-cropped), or quick-mode crops."""
    if folder.is_dir():
        if quick:
            return images_mod.load_folder(folder, images_mod.QUICK_COUNT, images_mod.QUICK_SIZE)
        return images_mod.load_folder(folder, limit, crop)
    if not quick:
        raise click.BadParameter(f"{folder} is not a folder (pass --images DIR, or --quick)", param_hint="--images")
    notes.append(f"{folder} not found: quick mode used scikit-image's sample photographs")
    return images_mod.sample_images()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--images",
    "image_dir",
    type=click.Path(path_type=Path),
    default=images_mod.DEFAULT_DIR,
    show_default=True,
    help="Folder of test images (all of them; --quick takes crops of the first three).",
)
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
@click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Weights of the single variable-rate model (default: the shipped model); the per-λ baselines are paired "
    "with it at their own λ.",
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
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where rd.json, summary.md and the plots go [default: {DEFAULT_OUT}, or {DEFAULT_OUT}/quick].",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch threads (MS-SSIM and the learned codec); 1 keeps timings comparable with the classic codecs.",
)
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
) -> None:
    """Rate–distortion benchmark: bpp, RGB PSNR and MS-SSIM of every codec, BD-rates, plots."""
    set_threads(threads)
    notes: list[str] = []
    explicit = set(codecs)
    keys = list(codecs or (QUICK_KEYS if quick else [*CODECS, "model", *(["baselines"] if baselines else [])]))
    baseline_paths = _baseline_paths(baselines, notes)
    image_set = load_images(image_dir, quick, notes)
    click.echo(f"{len(image_set.names)} images from {image_set.source}", err=True)
    out = results_dir(out, quick)
    results_path = out / "rd.json"
    merged = _previous(results_path, image_set.fingerprint)  # fail before measuring, not after

    model = None  # load the learned codecs first: a bad weights file should fail before the long classic sweeps
    if "model" in keys or "baselines" in keys:  # the baselines are also paired with the single model at their λ
        try:
            model = yotocodec.load_model(model_path)
        except yotocodec.YotoError as exc:
            if "model" in explicit:
                raise click.ClickException(f"single model: {exc}") from None
            notes.append(f"single model left out: {exc}")
    try:
        loaded_baselines = {path: yotocodec.load_model(path) for path in baseline_paths if "baselines" in keys}
    except yotocodec.YotoError as exc:
        raise click.ClickException(f"per-λ baseline: {exc}") from None

    if reason := ssimulacra2_missing():  # a note, not a failure: its column reads n/a
        notes.append(reason)
    classic = []
    for key in (k for k in keys if k in CODECS):
        reason = CODECS[key].missing()
        if reason:
            notes.append(reason)
        else:
            classic.append(key)
    measured = run_classic(classic, image_set, quick, jobs, threads)
    if model is not None and "model" in keys:
        qualities = QUICK_MODEL_QUALITIES if quick else MODEL_QUALITIES
        measured["model"] = run_model(model, model_path, image_set, qualities)
    if "baselines" in keys:
        if loaded_baselines:
            measured["baselines"] = run_baselines(loaded_baselines, image_set, model)
        else:
            notes.append("per-λ baselines left out: no weights files (--baselines)")

    out.mkdir(parents=True, exist_ok=True)
    meta = environment(threads)
    for key, entry in measured.items():
        merged[key] = {**entry, "meta": meta}
    if "model" in measured and "baselines" not in measured and "baselines" in merged:  # kept from an earlier run
        lambdas = [m["lmbda"] for m in merged["baselines"]["models"]]  # re-pair them with the model just measured
        merged["baselines"]["single_at_lambda"] = run_single_at_lambdas(model, lambdas, image_set)
    for entry in merged.values():
        entry["mean"] = average(entry["per_image"])
    codec_results = {key: merged[key] for key in ALL_KEYS if key in merged}

    if quick:
        published = []
        notes.append("published Kodak curves not drawn in quick mode: the images differ")
    else:
        published, anchor_notes = anchors_mod.load_anchors(anchor_dir)
        notes += anchor_notes
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
    results_path.write_text(json.dumps(finite_json(results), indent=1, ensure_ascii=False) + "\n")
    write_summary(results, published, notes, out / "summary.md")
    for metric, name in (("psnr", "rd_psnr.png"), ("ms_ssim_db", "rd_msssim.png")):
        plot_rd(codec_results, published, metric, f"Rate–distortion on {image_set.source}", out / name)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {results_path}, {out / 'summary.md'}, {out / 'rd_psnr.png'}, {out / 'rd_msssim.png'}", err=True)


if __name__ == "__main__":
    main()
