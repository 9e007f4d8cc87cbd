"""What equal file sizes look like: the same crop of a few images coded by yotocodec and classic codecs.

``python -m benchmarks.visual [--images DIR] [--names kodim23,kodim05,kodim15] [--bpp 0.25] [--codecs jpeg420,webp,avif]
[--out benchmarks/results/visual.png]`` encodes each whole image with yotocodec's rate control at the target bpp, then
gives every classic codec the largest file that is not above yotocodec's (a bisection over the adapter's own rate
parameter, :data:`SEARCH`), and draws one row per image: the original and each codec on the same fixed crop
(:data:`CROPS`), labelled with bpp and PSNR of the whole image.  The numbers go to a ``.json`` beside the figure.
PSNR alone hides what the eye sees (blocking, ringing, blur, smeared texture); the figure shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

import yotocodec
from yotocodec.metrics import psnr
from yotocodec.ratecontrol import encode_to_bpp

from . import images as images_mod
from .codecs import CODECS
from .common import DEFAULT_OUT, environment, set_threads, write_json
from .options import images_option, model_option, threads_option

DEFAULT_NAMES = ("kodim23", "kodim05", "kodim15")
DEFAULT_KEYS = ("jpeg420", "webp", "avif")
DEFAULT_BPP = 0.25  # low enough that every codec's artefacts show, inside the shipped model's Kodak range
CROP = 192
CROPS: dict[str, tuple[int, int]] = {  # (left, top) of the crop in the 768×512 Kodak image: chosen by eye
    "kodim23": (400, 120),  # the red macaw's eye, white face stripes and beak edge against red feathers
    "kodim05": (290, 220),  # spokes, tyre tread and the "CR 250" lettering: fine edges and text
    "kodim15": (372, 64),  # the painted ring, eye and eyelashes on smooth skin
}
SEARCH: dict[str, tuple[float, float, float]] = {  # (lowest, highest, step) of each adapter's parameter
    "jpeg420": (1, 100, 1),
    "jpeg444": (1, 100, 1),
    "webp": (0, 100, 1),
    "avif": (0, 100, 1),
    "avif444": (0, 100, 1),
    "jpeg2000": (15, 55, 0.1),  # target PSNR in dB
    "jpegxl": (1, 100, 1),
}
"""Settings searched per codec: the whole range of each quality parameter, so low targets stay reachable."""


@dataclass(frozen=True)
class Coded:
    """One codec's file for one whole image, and how it was found."""

    key: str
    label: str
    setting: float | None  # the codec's parameter; None for yotocodec (rate control picks its quality)
    num_bytes: int
    bpp: float
    psnr: float
    trials: int  # encodings the search took
    fits: bool  # False: even the lowest setting is larger than the budget, so this is the smallest file there is
    decoded: np.ndarray = field(repr=False, compare=False)

    def numbers(self) -> dict:
        """Everything but the key and the pixels: one codec's entry in the JSON."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("key", "decoded")}


@dataclass(frozen=True)
class Row:
    """One image of the figure: its crop box, yotocodec's size (the budget) and every codec's file."""

    name: str
    original: np.ndarray = field(repr=False, compare=False)
    box: tuple[int, int, int]  # left, top, size
    coded: tuple[Coded, ...]  # yotocodec first

    @property
    def budget(self) -> int:
        return self.coded[0].num_bytes


def crop_box(name: str, shape: tuple[int, ...], size: int = CROP) -> tuple[int, int, int]:
    """The documented crop of a known image, else the centre; clamped inside the image (portrait Kodak too)."""
    h, w = shape[:2]
    size = min(size, h, w)
    left, top = CROPS.get(Path(name).stem, ((w - size) // 2, (h - size) // 2))
    return min(max(left, 0), w - size), min(max(top, 0), h - size), size


def match_size(key: str, array: np.ndarray, max_bytes: int) -> Coded:
    """The largest file of a classic codec not above ``max_bytes``: bisection over its parameter's grid.

    File size rises with the parameter, so about log2(grid) encodings (7 for a 0–100 quality) find the boundary;
    the largest fitting file among the trials is kept in case the size is not strictly monotonic.
    """
    codec = CODECS[key]
    lowest, highest, step = SEARCH[key]
    grid = np.round(np.arange(lowest, highest + step / 2, step), 6)
    trials: dict[int, bytes] = {}
    lo, hi = -1, len(grid)  # invariant: grid[lo] fits (or lo is off the grid), grid[hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        trials[mid] = codec.encode(array, float(grid[mid]))
        lo, hi = (mid, hi) if len(trials[mid]) <= max_bytes else (lo, mid)
    fitting = [i for i, data in trials.items() if len(data) <= max_bytes]
    index = max(fitting, key=lambda i: len(trials[i])) if fitting else min(trials, key=lambda i: len(trials[i]))
    data = trials[index]
    decoded = codec.decode(data)
    h, w = array.shape[:2]
    label = f"{codec.label}, {codec.parameter} {grid[index]:g}"
    return Coded(key, label, float(grid[index]), len(data), len(data) * 8 / (w * h), psnr(array, decoded),
                 len(trials), bool(fitting), decoded)  # fmt: skip


def code_yotocodec(model: yotocodec.YotoHyperprior, array: np.ndarray, bpp: float) -> Coded:
    """yotocodec's whole-image file at the target bpp through the public rate control: the budget for the rest."""
    image = Image.fromarray(array, "RGB")
    data, trials = encode_to_bpp(image, bpp, model=model)
    decoded = np.array(yotocodec.decode(data, model=model).convert("RGB"))
    h, w = array.shape[:2]
    return Coded("yotocodec", "yotocodec", None, len(data), len(data) * 8 / (w * h), psnr(array, decoded), trials,
                 len(data) <= bpp * w * h / 8, decoded)  # fmt: skip


def compare(
    model: yotocodec.YotoHyperprior,
    names: Sequence[str],
    arrays: Sequence[np.ndarray],
    bpp: float,
    keys: Sequence[str] = DEFAULT_KEYS,
    crop: int = CROP,
) -> list[Row]:
    """Every image at equal file size: yotocodec at ``bpp``, then each classic codec at most yotocodec's bytes."""
    rows = []
    for name, array in zip(names, arrays, strict=True):
        ours = code_yotocodec(model, array, bpp)
        coded = [ours, *(match_size(key, array, ours.num_bytes) for key in keys)]
        rows.append(Row(name, array, crop_box(name, array.shape, crop), tuple(coded)))
    return rows


def _panel(ax: plt.Axes, pixels: np.ndarray, box: tuple[int, int, int], title: str) -> None:
    left, top, size = box
    ax.imshow(pixels[top : top + size, left : left + size], interpolation="nearest")  # pixels as coded, no smoothing
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def draw(rows: Sequence[Row], bpp: float, path: Path) -> None:
    """One row per image: the original crop, then each codec's crop titled with its whole-image bpp and PSNR."""
    columns = 1 + max(len(row.coded) for row in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.6 * columns, 2.95 * len(rows) + 0.5), dpi=100,
                             squeeze=False)  # fmt: skip
    for ax_row, row in zip(axes, rows, strict=True):
        left, top, size = row.box
        _panel(ax_row[0], row.original, row.box, f"{Path(row.name).stem}, original\ncrop at ({left}, {top}), {size} px")
        for ax, coded in zip(ax_row[1:], row.coded, strict=False):
            over = "" if coded.fits else " (over budget: smallest file)"
            _panel(ax, coded.decoded, row.box, f"{coded.label}\n{coded.bpp:.3f} bpp, {coded.psnr:.2f} dB{over}")
        for ax in ax_row[1 + len(row.coded) :]:
            ax.axis("off")
    fig.suptitle(
        f"Equal file size: yotocodec's rate control at ≤ {bpp:g} bpp, each classic codec at its largest file not above "
        "yotocodec's.\nbpp and PSNR are of the whole image (RGB); the panels show a crop, pixels enlarged without "
        "smoothing.",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def record(rows: Sequence[Row], bpp: float, model_id: str) -> dict:
    """The figure's numbers, without the pixels: what the JSON beside it holds."""
    return {
        "target_bpp": bpp,
        "model_id": model_id,
        "search": {key: dict(zip(("lowest", "highest", "step"), SEARCH[key], strict=True)) for key in SEARCH},
        "images": {
            row.name: {
                "crop": dict(zip(("left", "top", "size"), row.box, strict=True)),
                "budget_bytes": row.budget,
                "codecs": {c.key: c.numbers() for c in row.coded},
            }
            for row in rows
        },
    }


def load_named(folder: Path, names: Sequence[str]) -> images_mod.ImageSet:
    """The named images of ``folder`` (by stem or file name), in the order given."""
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in images_mod.SUFFIXES}
    files.update({p.name: p for p in files.values()})
    missing = [name for name in names if name not in files]
    if missing:
        raise click.BadParameter(f"not in {folder}: {', '.join(missing)}", param_hint="--names")
    arrays = []
    for name in names:
        with Image.open(files[name]) as image:
            arrays.append(np.array(image.convert("RGB")))
    return images_mod.ImageSet(str(folder), tuple(files[n].name for n in names), tuple(arrays))


def _names(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(filter(None, value.replace(",", " ").split()))
    if not names:
        raise click.BadParameter("name at least one image")
    return names


def _keys(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    keys = tuple(filter(None, value.replace(",", " ").split()))
    unknown = [key for key in keys if key not in CODECS]
    if unknown:
        raise click.BadParameter(f"unknown codec {unknown[0]!r}; choose from {', '.join(CODECS)}")
    return keys


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@images_option("Folder of the images (without it: scikit-image's photographs).")
@click.option("--names", default=",".join(DEFAULT_NAMES), callback=_names, show_default=True,
              help="Images of the folder, by stem or file name, one row each.")  # fmt: skip
@click.option("--bpp", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_BPP, show_default=True,
              help="yotocodec's target size in bits per pixel of the whole image.")  # fmt: skip
@click.option("--codecs", "keys", default=",".join(DEFAULT_KEYS), callback=_keys, show_default=True,
              help=f"Classic codecs, one column each: {', '.join(CODECS)}.")  # fmt: skip
@click.option("--crop", type=click.IntRange(min=16), default=CROP, show_default=True,
              help="Side of the crop shown, in pixels (known images keep their crop's top-left corner).")  # fmt: skip
@model_option()
@threads_option()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT / "visual.png",
              show_default=True, help="The figure (PNG); its numbers go beside it as .json.")  # fmt: skip
def main(image_dir: Path, names: tuple[str, ...], bpp: float, keys: tuple[str, ...], crop: int,
         model_path: Path | None, threads: int, out: Path) -> None:  # fmt: skip
    """The same crop of a few images coded by yotocodec and classic codecs at equal file size."""
    set_threads(threads)
    notes = []
    if image_dir.is_dir():
        image_set = load_named(image_dir, names)
    else:
        notes.append(f"{image_dir} not found: scikit-image's sample photographs used")
        image_set = images_mod.sample_images(512)
    for key in keys:
        if reason := CODECS[key].missing():
            notes.append(reason)
    keys = tuple(key for key in keys if CODECS[key].missing() is None)
    try:
        model = yotocodec.load_model(model_path)
        rows = compare(model, image_set.names, image_set.arrays, bpp, keys, crop)
    except yotocodec.YotoError as exc:
        raise click.ClickException(str(exc)) from None
    draw(rows, bpp, out)
    results = {**record(rows, bpp, model.model_id), "dataset": image_set.describe(), "notes": notes,
               "meta": environment("benchmarks.visual", threads)}  # fmt: skip
    write_json(out.with_suffix(".json"), results)
    for row in rows:
        click.echo(f"{row.name}: " + "; ".join(f"{c.label} {c.bpp:.3f} bpp {c.psnr:.2f} dB" for c in row.coded))
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {out} and {out.with_suffix('.json')}", err=True)


if __name__ == "__main__":
    main()
