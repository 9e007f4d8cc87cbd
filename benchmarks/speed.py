"""Encode and decode speed: yotocodec beside CompressAI's mean-scale hyperprior and the classic codecs, same run.

``python -m benchmarks.speed [--images DIR] [--limit N] [--threads 1,2] [--quality 50] [--large] [--out DIR]``
times, per image, the public ``yotocodec.encode``/``decode``, CompressAI's ``MeanScaleHyperprior(N, M)`` with the
model's widths ``compress``/``decompress`` (the same architecture and size, so the ratio isolates yotocodec's own
overhead) and JPEG,
WebP, AVIF and JPEG XL through the adapters of :mod:`benchmarks.codecs`.  Each torch thread count runs in its own
fresh (spawned) process whose thread count is set before anything is timed.  ``--large`` adds time and peak memory
of a 6000×4000 photo, through :mod:`benchmarks.large`'s one-step-per-process runner.  Writes ``speed.json`` and
``speed.md`` to ``--out``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import yotocodec

from . import images as images_mod
from .codecs import CODECS
from .common import DEFAULT_OUT, environment, set_threads, write_results
from .large import DEFAULT_IMAGE, big_photo, parse_size, run_step
from .options import images_option, limit_option

REPEATS = 3
CLASSIC_KEYS = ("jpeg420", "webp", "avif", "jpegxl")
REFERENCE = "compressai"
BAR_RATIO = 1.0  # yotocodec's mean seconds over CompressAI's, encode and decode each
BAR_SECONDS = 0.5  # mean seconds per Kodak image, encode and decode each
BAR_LARGE_SECONDS = 60.0
BAR_LARGE_MB = 2e9 / 2**20  # 2 GB (10⁹ bytes) in MiB, the unit of ru_maxrss / 1024
LARGE_SIZE = "6000x4000"
WEIGHTS_NOTE = (
    "CompressAI's model has untrained (seeded) weights: its timing covers the same transforms and entropy coders, "
    "but its bit rate, and with it the rANS share of the time, is not that of a trained model"
)

# A coder takes one image and returns (encode: () -> payload, decode: payload -> image, size: payload -> bytes).
Coder = Callable[[np.ndarray], tuple[Callable[[], Any], Callable[[Any], Any], Callable[[Any], int]]]


def yotocodec_coder(model: yotocodec.YotoHyperprior, quality: float) -> Coder:
    """The public API, as a user calls it: a Pillow image in, ``.yoto`` bytes out, and back."""

    def coder(array: np.ndarray) -> tuple[Callable[[], Any], Callable[[Any], Any], Callable[[Any], int]]:
        image = Image.fromarray(array, "RGB")

        def encode() -> bytes:
            return yotocodec.encode(image, quality, model=model)

        def decode(data: bytes) -> Image.Image:
            return yotocodec.decode(data, model=model)

        return encode, decode, len

    return coder


def compressai_model(N: int, M: int) -> torch.nn.Module:
    """CompressAI's ``MeanScaleHyperprior(N, M)``, float32, eval mode, CDF tables built: ready to compress.

    Its weights are untrained (seeded): the shipped model's weights without their FiLM layers give latents far out
    of range: with them the 64×64 smoke test ran for over 5 minutes without finishing.
    """
    from compressai.models import MeanScaleHyperprior

    torch.manual_seed(0)
    net = MeanScaleHyperprior(N, M).eval()
    net.update(force=True)
    return net


def compressai_coder(net: torch.nn.Module) -> Coder:
    """``compress(x)`` and ``decompress(strings, shape)`` on the image padded (zeros) to a multiple of 64.

    Conversion and padding happen outside the clock, as in CompressAI's own evaluation: if anything this flatters
    CompressAI, since yotocodec's time includes its conversions, header and container.
    """
    from compressai.ops import compute_padding

    def coder(array: np.ndarray) -> tuple[Callable[[], Any], Callable[[Any], Any], Callable[[Any], int]]:
        pad, _ = compute_padding(*array.shape[:2], min_div=64)
        x = torch.nn.functional.pad(torch.tensor(array).permute(2, 0, 1)[None].float().div(255), pad)

        def encode() -> dict:
            with torch.inference_mode():
                return net.compress(x)

        def decode(out: dict) -> dict:
            with torch.inference_mode():
                return net.decompress(out["strings"], out["shape"])

        return encode, decode, lambda out: sum(len(s) for strings in out["strings"] for s in strings)

    return coder


def classic_coder(key: str, quality: float) -> Coder:
    """A classic codec's adapter (single-threaded by construction) at ``quality``."""
    codec = CODECS[key]
    return lambda array: ((lambda: codec.encode(array, quality)), codec.decode, len)


def codec_entries(
    model: yotocodec.YotoHyperprior, quality: float, keys: Sequence[str]
) -> tuple[dict[str, dict], dict[str, str]]:
    """What to time, each with its label and settings, and the classic codecs that cannot run here with the reason."""
    entries = {
        "yotocodec": {
            "label": f"yotocodec {yotocodec.__version__}, model {model.model_id}",
            "settings": f"public API, quality {quality:g}, effort 0",
            "coder": yotocodec_coder(model, quality),
        },
        REFERENCE: {
            "label": f"CompressAI MeanScaleHyperprior({model.config.N}, {model.config.M})",
            "settings": "float32, eval, update(force=True), untrained weights; compress/decompress, padded to 64",
            "coder": compressai_coder(compressai_model(model.config.N, model.config.M)),
        },
    }
    skipped = {}
    for key in keys:
        codec = CODECS[key]
        if reason := codec.missing():
            skipped[key] = reason
            continue
        entries[key] = {
            "label": codec.label,
            "settings": f"{codec.parameter} {quality:g}; {codec.settings}",
            "library": codec.library(),
            "coder": classic_coder(key, quality),
        }
    return entries, skipped


def best_of(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The fastest of ``repeats`` calls (the least disturbed by everything else on the machine) and its result."""
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def time_image(coder: Coder, array: np.ndarray, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` encode and decode seconds of one image, and the bits per pixel of the payload."""
    encode, decode, size = coder(array)
    enc_s, payload = best_of(encode, repeats)
    dec_s, _ = best_of(lambda: decode(payload), repeats)
    height, width = array.shape[:2]
    return {"enc_s": enc_s, "dec_s": dec_s, "bpp": size(payload) * 8 / (width * height)}


def time_codecs(
    images: Sequence[tuple[str, np.ndarray]],
    quality: float,
    model: yotocodec.YotoHyperprior,
    repeats: int = REPEATS,
    keys: Sequence[str] = CLASSIC_KEYS,
) -> dict:
    """Every codec on every image in this process, at its current torch thread count.

    One untimed round trip per codec on the first image first (lazy initialisation, thread pools); then the codecs
    take turns image by image, so a change in the machine's load falls on all of them alike.
    """
    entries, skipped = codec_entries(model, quality, keys)
    coders = {key: entry.pop("coder") for key, entry in entries.items()}
    for coder in coders.values():
        time_image(coder, images[0][1], 1)
    for entry in entries.values():
        entry["per_image"] = {}
    with tqdm(total=len(images) * len(coders), desc=f"{torch.get_num_threads()} thread(s)", unit="pair") as bar:
        for name, array in images:
            for key, coder in coders.items():
                entries[key]["per_image"][name] = time_image(coder, array, repeats)
                bar.update()
    for entry in entries.values():
        for field in ("enc_s", "dec_s", "bpp"):
            entry[field] = float(np.mean([point[field] for point in entry["per_image"].values()]))
    return {
        "torch_threads": torch.get_num_threads(),
        "codecs": entries,
        "skipped": skipped,
        "verdict": verdict(entries),
    }


def verdict(entries: dict[str, dict]) -> dict[str, float | bool]:
    """yotocodec against the issue's bar: at most CompressAI's time and at most 0.5 s, encode and decode each."""
    ours, theirs = entries["yotocodec"], entries[REFERENCE]
    result: dict[str, float | bool] = {}
    for step in ("enc", "dec"):
        ratio = ours[f"{step}_s"] / theirs[f"{step}_s"]
        result[f"{step}_ratio"] = ratio
        result[f"{step}_meets_bar"] = bool(ratio <= BAR_RATIO and ours[f"{step}_s"] <= BAR_SECONDS)
    return result


def _time_in_child(arrays: list[tuple[str, np.ndarray]], quality: float, repeats: int) -> dict:
    """The pool's task: the thread count was set by the initializer, before torch did any work in this process."""
    return time_codecs(arrays, quality, yotocodec.load_model(), repeats)


def time_threads(
    image_set: images_mod.ImageSet, threads: Sequence[int], quality: float, repeats: int
) -> dict[str, dict]:
    """``time_codecs`` once per thread count, each in a fresh spawned process (no thread pool carried over)."""
    arrays = list(zip(image_set.names, image_set.arrays, strict=True))
    runs = {}
    for count in threads:
        with ProcessPoolExecutor(1, get_context("spawn"), initializer=set_threads, initargs=(count,)) as pool:
            runs[str(count)] = pool.submit(_time_in_child, arrays, quality, repeats).result()
    return runs


def time_large(threads: Sequence[int], quality: float, image: Path, size: str) -> dict:
    """Seconds and peak RSS of encoding and decoding one upscaled photo, each step in a fresh process."""
    width, height = parse_size(size)
    big, name = big_photo(image, width, height)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        png, yoto, back = Path(tmp, "big.png"), Path(tmp, "big.yoto"), Path(tmp, "back.png")
        big.save(png, compress_level=1)
        del big
        for count in threads:
            click.echo(f"large photo {width}×{height}, {count} thread(s)…", err=True)
            enc = run_step("encode", png, yoto, count, quality)
            dec = run_step("decode", yoto, back, count, quality)
            runs[str(count)] = {
                "enc_s": enc.seconds,
                "dec_s": dec.seconds,
                "enc_peak_mb": enc.peak_mb,
                "dec_peak_mb": dec.peak_mb,
                "dec_helper_peak_mb": dec.helper_peak_mb,
                "meets_bar": max(enc.seconds, dec.seconds) <= BAR_LARGE_SECONDS
                and max(enc.peak_mb, dec.peak_mb) <= BAR_LARGE_MB,
            }
        num_bytes = yoto.stat().st_size
    return {"image": name, "size": [width, height], "quality": quality, "bytes": num_bytes,
            "bpp": num_bytes * 8 / (width * height), "runs": runs}  # fmt: skip


def _s(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}×" if value >= 0.1 else f"{value:.2g}×"


def _met(flag: bool) -> str:
    return "met" if flag else "**not met**"


def _thread_table(run: dict) -> list[str]:
    """One markdown table: every codec's mean seconds, bpp and its ratio to CompressAI's model."""
    reference = run["codecs"][REFERENCE]
    lines = [
        f"## {run['torch_threads']} torch thread(s)",
        "",
        "| codec | encode s | decode s | bpp | encode × CompressAI | decode × CompressAI |",
        "|---|---|---|---|---|---|",
    ]
    for entry in run["codecs"].values():
        lines.append(
            f"| {entry['label']} | {_s(entry['enc_s'])} | {_s(entry['dec_s'])} | {entry['bpp']:.3f} "
            f"| {_ratio(entry['enc_s'] / reference['enc_s'])} | {_ratio(entry['dec_s'] / reference['dec_s'])} |"
        )
    v = run["verdict"]
    lines += [
        "",
        f"Bar (≤ {BAR_RATIO:g}× CompressAI and ≤ {BAR_SECONDS:g} s per image): encode {_met(v['enc_meets_bar'])} "
        f"({v['enc_ratio']:.2f}×), decode {_met(v['dec_meets_bar'])} ({v['dec_ratio']:.2f}×).",
        *(f"- {reason}" for reason in run["skipped"].values()),
        "",
    ]
    return lines


def _large_table(large: dict) -> list[str]:
    width, height = large["size"]
    lines = [
        f"## Large photo, {width}×{height} ({large['image']}, upscaled), quality {large['quality']:g}, "
        f"{large['bpp']:.3f} bpp",
        "",
        f"Each step in a fresh process; peak = its RSS high-water mark (MiB). Bar: ≤ {BAR_LARGE_SECONDS:g} s and "
        "≤ 2 GB (1907 MiB) each.",
        "",
        "| threads | encode s | encode peak MiB | decode s | decode peak MiB | decoder's rANS helper peak MiB | bar |",
        "|---|---|---|---|---|---|---|",
    ]
    for count, r in large["runs"].items():
        lines.append(
            f"| {count} | {r['enc_s']:.1f} | {r['enc_peak_mb']:.0f} | {r['dec_s']:.1f} | {r['dec_peak_mb']:.0f} "
            f"| {r['dec_helper_peak_mb']:.0f} | {_met(r['meets_bar'])} |"
        )
    return [*lines, ""]


def summary_markdown(results: dict) -> str:
    """``speed.md``: what was measured and how, then one table per thread count (and the large photo)."""
    meta = results["meta"]
    lines = [
        "# Speed",
        "",
        f"{len(results['dataset']['images'])} images from {results['dataset']['source']}; quality "
        f"{results['quality']:g} for yotocodec and the classic codecs; mean over images of the best of "
        f"{results['repeats']} runs per image, after one untimed round trip per codec. {meta['cpu']} "
        f"({meta['cpu_count']} CPUs), torch {meta['libraries']['torch']}, CompressAI "
        f"{meta['libraries']['compressai']}; load average {meta['load_average_start']:.2f} at the start, "
        f"{meta['load_average_end']:.2f} at the end; {meta['date']}. Classic codecs are single-threaded whatever the "
        f"torch thread count. {WEIGHTS_NOTE}.",
        "",
    ]
    for run in results["threads"].values():
        lines += _thread_table(run)
    if "large" in results:
        lines += _large_table(results["large"])
    return "\n".join(lines).rstrip() + "\n"


def _thread_counts(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[int, ...]:
    """``--threads 1,2``, ``--threads "1 2"`` or ``--threads 1 --threads 2``: positive integers, in order given."""
    try:
        counts = [int(v) for value in values for v in value.replace(",", " ").split()]
    except ValueError:
        raise click.BadParameter(f"{values!r} are not integers") from None
    if not counts or min(counts) < 1:
        raise click.BadParameter("thread counts must be positive integers")
    return tuple(dict.fromkeys(counts))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@images_option(file_okay=False)
@limit_option()
@click.option("--threads", multiple=True, default=("1,2",), callback=_thread_counts, show_default=True,
              help="torch thread counts, e.g. 1,2; each runs in its own fresh process.")  # fmt: skip
@click.option("--quality", type=click.FloatRange(0, 100), default=50.0, show_default=True,
              help="Quality of yotocodec and of the classic codecs (a mid setting).")  # fmt: skip
@click.option("--repeats", type=click.IntRange(min=1), default=REPEATS, show_default=True,
              help="Runs per image and step; the fastest counts.")  # fmt: skip
@click.option("--large", is_flag=True, help="Also time and measure the peak memory of a 6000×4000 photo.")
@click.option("--large-image", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_IMAGE,
              show_default=True, help="Photo upscaled for --large (skimage's astronaut when missing).")  # fmt: skip
@click.option("--large-size", default=LARGE_SIZE, show_default=True, help="WIDTHxHEIGHT of the --large photo.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Where speed.json and speed.md go.")  # fmt: skip
def main(
    image_dir: Path,
    limit: int | None,
    threads: tuple[int, ...],
    quality: float,
    repeats: int,
    large: bool,
    large_image: Path,
    large_size: str,
    out: Path,
) -> None:
    """Mean encode and decode seconds per image of yotocodec, CompressAI's hyperprior and the classic codecs."""
    if not image_dir.is_dir():
        raise click.BadParameter(f"{image_dir} is not a folder", param_hint="--images")
    image_set = images_mod.load_folder(image_dir, limit)
    click.echo(f"{len(image_set.names)} images from {image_set.source}", err=True)
    meta = environment("benchmarks.speed", threads[0])
    meta.update(torch_threads=list(threads), load_average_start=os.getloadavg()[0])
    results: dict[str, Any] = {
        "format": 1,
        "quality": quality,
        "repeats": repeats,
        "bars": {"ratio": BAR_RATIO, "seconds": BAR_SECONDS, "large_s": BAR_LARGE_SECONDS, "large_mb": BAR_LARGE_MB},
        "dataset": image_set.describe(),
        "meta": meta,
        "compressai_weights": WEIGHTS_NOTE,
        "threads": time_threads(image_set, threads, quality, repeats),
    }
    if large:
        results["large"] = time_large(threads, quality, large_image, large_size)
    meta["load_average_end"] = os.getloadavg()[0]
    write_results(out, "speed", results, summary_markdown(results))
    click.echo(summary_markdown(results))


if __name__ == "__main__":
    main()
