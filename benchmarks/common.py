"""What every benchmark shares: threads, the images, the learned codec's RD point, the environment record, results.

Each benchmark command (``rd``, ``effort``, ``ratecontrol``, ``speed``, ``visual``) builds on these, so that they
load images, time the model, describe the machine and write their files the same way; none of them imports another.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import yotocodec

from . import images as images_mod
from .codecs import CODECS, rd_point

DEFAULT_OUT = Path("benchmarks/results")
PACKAGES = ("yotocodec", "torch", "compressai", "numpy", "scipy", "pillow", "imagecodecs", "matplotlib", "ssimulacra2")
PILLOW_LIBRARIES = (
    ("libjpeg-turbo", "libjpeg_turbo"),
    ("libwebp", "webp"),
    ("libavif", "avif"),
    ("openjpeg", "jpg_2000"),
)  # (name in the record, Pillow feature)


def set_threads(threads: int) -> None:
    """torch's intra-op threads; a top-level function so that spawned worker processes can run it first."""
    torch.set_num_threads(threads)


def package_version(name: str) -> str:
    """The installed version of a distribution, or 'not installed': the record must not fail for a missing extra."""
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


def _libraries() -> dict[str, str]:
    """Versions of the Python packages and of the codec libraries behind them (what the numbers depend on)."""
    from PIL import features

    libraries = {name: package_version(name) for name in PACKAGES}
    libraries.update({lib: features.version(feature) or "n/a" for lib, feature in PILLOW_LIBRARIES})
    if CODECS["jpegxl"].missing() is None:
        import imagecodecs

        libraries["libjxl"] = imagecodecs.jpegxl_version().removeprefix("libjxl ")
    return libraries


def _source_commit() -> str:
    """The commit of the code that ran, "+dirty" with uncommitted changes outside the results, "n/a" outside git.

    The package version alone can mislead: an editable install keeps the version it was installed with.
    """
    git = ["git", "-C", str(Path(__file__).resolve().parent.parent)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10)
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", ".",
                                  f":!{DEFAULT_OUT}"], capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "n/a"
    if head.returncode or changed.returncode:
        return "n/a"
    return head.stdout.strip() + ("+dirty" if changed.stdout.strip() else "")


def environment(module: str, threads: int) -> dict:
    """What produced the numbers: versions, machine, date and the command, stored with every benchmark's results.

    ``module`` is the benchmark run with ``python -m`` (e.g. ``benchmarks.rd``): with the arguments it is the command
    that reproduces the results.
    """
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": f"python -m {module} " + shlex.join(sys.argv[1:]),
        "commit": _source_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "libraries": _libraries(),
    }


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


def over_images(
    model: Any, image_set: images_mod.ImageSet, steps_per_image: int, desc: str, unit: str
) -> Iterator[tuple[str, np.ndarray, tqdm]]:
    """Every image with a progress bar of ``steps_per_image`` steps each, after warming the model up.

    How the single-model benchmarks go over their images; the caller advances the bar after each step it measures.
    """
    warm_up(model, image_set)
    with tqdm(total=len(image_set.names) * steps_per_image, desc=desc, unit=unit) as bar:
        for name, array in zip(image_set.names, image_set.arrays, strict=True):
            yield name, array, bar


def finite_json(value: object) -> object:
    """JSON without NaN/Infinity tokens (not valid JSON): non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def write_json(path: Path, value: object) -> None:
    """``value`` as valid JSON (non-finite numbers become null), one space indents, non-ASCII kept readable."""
    path.write_text(json.dumps(finite_json(value), indent=1, ensure_ascii=False) + "\n")


def results_dir(out: Path | None, quick: bool) -> Path:
    """Where a benchmark writes: ``--out``, else ``benchmarks/results`` (``…/quick`` for smoke runs)."""
    return out or (DEFAULT_OUT / "quick" if quick else DEFAULT_OUT)


def write_results(out: Path, stem: str, results: dict, markdown: str) -> None:
    """``stem.json`` (valid JSON: non-finite numbers become null) and ``stem.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{stem}.json", results)
    (out / f"{stem}.md").write_text(markdown)
    click.echo(f"wrote {out / f'{stem}.json'} and {out / f'{stem}.md'}", err=True)
