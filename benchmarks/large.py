"""Large-image benchmark: peak memory and time to code a 6000×4000 photo, and seams along the tile borders.

Runs encode and decode each in a fresh process so that ``ru_maxrss`` is the peak of that step alone, then compares
PSNR in bands along the tile borders with PSNR everywhere else.  Usage:
``python -m benchmarks.large [--image PATH] [--size 6000x4000] [--quality 50] [--out benchmarks/results/large.json]``.
The seconds are the codec call alone (the model loaded, the PNG read or written outside the clock); the peak is the
whole process's.  ``benchmarks.speed --large`` reuses :func:`big_photo` and :func:`run_step` for its time bars.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import click
import numpy as np
from PIL import Image

from yotocodec import tiling
from yotocodec.metrics import psnr

DEFAULT_IMAGE = Path("../shared/data/kodak/kodim23.png")
BAND = 8  # pixels on each side of a tile border

STEP = """
import resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[4]))
import yotocodec
from PIL import Image
yotocodec.load_model()  # a long-running caller has loaded it already: not billed to the step
if sys.argv[1] == "encode":
    image = Image.open(sys.argv[2])
    image.load()
    start = time.perf_counter()
    data = yotocodec.encode(image, float(sys.argv[5]))
    seconds = time.perf_counter() - start
    open(sys.argv[3], "wb").write(data)
else:
    data = open(sys.argv[2], "rb").read()
    start = time.perf_counter()
    image = yotocodec.decode(data)
    seconds = time.perf_counter() - start
    image.save(sys.argv[3], compress_level=1)
helper_kib = 0
if sys.argv[1] == "decode":  # the helper's own high-water mark (its ru_maxrss inherits the caller's at the spawn)
    status = open(f"/proc/{yotocodec.isolation.decoder().process.pid}/status").read()
    helper_kib = int(status.split("VmHWM:")[1].split()[0])
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, helper_kib)
"""


class Step(NamedTuple):
    """One step's codec seconds and peak resident MiB: of its process, and of the entropy decoder's helper process.

    The decoder runs rANS decoding in a helper process (``yotocodec.isolation``), whose peak is reported beside the
    caller's: together they are what the decode needs.
    """

    seconds: float
    peak_mb: float
    helper_peak_mb: float


def run_step(step: str, source: Path, target: Path, threads: int, quality: float) -> Step:
    """One encode or decode of ``source`` into ``target`` in a fresh process, so its ``ru_maxrss`` is this step's."""
    args = [sys.executable, "-c", STEP, step, str(source), str(target), str(threads), str(quality)]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise click.ClickException(f"{step} of {source.name} failed: {tail[0]}")
    seconds, peak_kib, helper_kib = done.stdout.split()
    return Step(float(seconds), float(peak_kib) / 1024, float(helper_kib) / 1024)


def big_photo(image: Path, width: int, height: int) -> tuple[Image.Image, str]:
    """``image`` (scikit-image's astronaut when missing) resized with Lanczos to ``width``×``height``, and its name.

    Upscaling a real photo keeps photo-like statistics at a size no shipped test image has.
    """
    if image.exists():
        source, name = Image.open(image).convert("RGB"), str(image)
    else:
        from skimage import data

        source, name = Image.fromarray(data.astronaut()), "skimage astronaut"
    return source.resize((width, height), Image.LANCZOS), name


def band_mask(height: int, width: int, pad_top: int, pad_left: int, offset: int) -> np.ndarray:
    """Pixels within BAND of the lines ``offset`` pixels after each tile start (0: the tile borders themselves).

    Bands half a tile away from the borders are the control: the same kind of pixels, but no border nearby.
    """
    mask = np.zeros((height, width), dtype=bool)
    for edge in range(tiling.TILE + offset, height + pad_top, tiling.TILE):
        mask[max(0, edge - pad_top - BAND) : max(0, edge - pad_top + BAND), :] = True
    for edge in range(tiling.TILE + offset, width + pad_left, tiling.TILE):
        mask[:, max(0, edge - pad_left - BAND) : max(0, edge - pad_left + BAND)] = True
    return mask


def parse_size(size: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` as integers, or a clean CLI error."""
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{size!r} is not WIDTHxHEIGHT", param_hint="--size") from None
    return width, height


@click.command()
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_IMAGE, show_default=True,
              help="Photo resized (Lanczos) to --size; scikit-image's astronaut when the file is missing.")  # fmt: skip
@click.option("--size", default="6000x4000", show_default=True)
@click.option("--quality", type=float, default=50, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("benchmarks/results/large.json"))
def main(image: Path, size: str, quality: float, threads: int, out: Path) -> None:
    """Measure peak memory, time and seams for one large image."""
    from compressai.ops import compute_padding

    width, height = parse_size(size)
    big, name = big_photo(image, width, height)
    with tempfile.TemporaryDirectory() as tmp:
        png, yoto, back = Path(tmp, "big.png"), Path(tmp, "big.yoto"), Path(tmp, "back.png")
        big.save(png, compress_level=1)
        enc = run_step("encode", png, yoto, threads, quality)
        dec = run_step("decode", yoto, back, threads, quality)
        num_bytes = yoto.stat().st_size
        decoded = np.asarray(Image.open(back).convert("RGB"))
    original = np.asarray(big)
    (pad_left, _, pad_top, _), _ = compute_padding(height, width, min_div=tiling.STRIDE)  # format 3's padding
    mask = band_mask(height, width, pad_top, pad_left, 0)
    control = band_mask(height, width, pad_top, pad_left, tiling.TILE // 2)
    result = {
        "image": name,
        "size": [width, height],
        "quality": quality,
        "threads": threads,
        "tile": tiling.TILE,
        "halo": tiling.HALO,
        "bytes": num_bytes,
        "bpp": num_bytes * 8 / (width * height),
        "encode_seconds": round(enc.seconds, 1),
        "decode_seconds": round(dec.seconds, 1),
        "encode_peak_mb": round(enc.peak_mb),
        "decode_peak_mb": round(dec.peak_mb),
        "decode_helper_peak_mb": round(dec.helper_peak_mb),
        "psnr": psnr(original, decoded),
        "psnr_tile_border_bands": psnr(original[mask], decoded[mask]),
        "psnr_mid_tile_bands": psnr(original[control], decoded[control]),
        "psnr_elsewhere": psnr(original[~mask], decoded[~mask]),
        "band_pixels": BAND,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "date": time.strftime("%Y-%m-%d"),
        "peak_rss_of_this_driver_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
