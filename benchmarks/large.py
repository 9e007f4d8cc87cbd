"""Large-image benchmark: peak memory and time to code a 6000×4000 photo, and seams along the tile borders.

Runs encode and decode each in a fresh process so that ``ru_maxrss`` is the peak of that step alone, then compares
PSNR in bands along the tile borders with PSNR everywhere else.  Usage:
``python -m benchmarks.large [--image PATH] [--size 6000x4000] [--quality 50] [--out benchmarks/results/large.json]``.
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

import click
import numpy as np
from PIL import Image

from yotocodec import tiling
from yotocodec.metrics import psnr

DEFAULT_IMAGE = Path("../shared/data/kodak/kodim23.png")
BAND = 8  # pixels on each side of a tile border

STEP = """
import resource, sys, time
from PIL import Image
import torch, yotocodec
torch.set_num_threads(int(sys.argv[4]))
start = time.perf_counter()
if sys.argv[1] == "encode":
    open(sys.argv[3], "wb").write(yotocodec.encode(Image.open(sys.argv[2]), float(sys.argv[5])))
else:
    yotocodec.decode(open(sys.argv[2], "rb").read()).save(sys.argv[3])
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run_step(step: str, source: Path, target: Path, threads: int, quality: float) -> tuple[float, float]:
    """(seconds, peak resident MB) of one encode or decode in a fresh process."""
    args = [sys.executable, "-c", STEP, step, str(source), str(target), str(threads), str(quality)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1]) / 1024


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

    width, height = (int(v) for v in size.lower().split("x"))
    if image.exists():
        source = Image.open(image).convert("RGB")
    else:
        from skimage import data

        source = Image.fromarray(data.astronaut())
    big = source.resize((width, height), Image.LANCZOS)
    with tempfile.TemporaryDirectory() as tmp:
        png, yoto, back = Path(tmp, "big.png"), Path(tmp, "big.yoto"), Path(tmp, "back.png")
        big.save(png)
        enc_s, enc_mb = run_step("encode", png, yoto, threads, quality)
        dec_s, dec_mb = run_step("decode", yoto, back, threads, quality)
        num_bytes = yoto.stat().st_size
        decoded = np.asarray(Image.open(back).convert("RGB"))
    original = np.asarray(big)
    (pad_left, _, pad_top, _), _ = compute_padding(height, width, min_div=64)
    mask = band_mask(height, width, pad_top, pad_left, 0)
    control = band_mask(height, width, pad_top, pad_left, tiling.TILE // 2)
    result = {
        "image": str(image) if image.exists() else "skimage astronaut",
        "size": [width, height],
        "quality": quality,
        "threads": threads,
        "tile": tiling.TILE,
        "halo": tiling.HALO,
        "bytes": num_bytes,
        "bpp": num_bytes * 8 / (width * height),
        "encode_seconds": round(enc_s, 1),
        "decode_seconds": round(dec_s, 1),
        "encode_peak_mb": round(enc_mb),
        "decode_peak_mb": round(dec_mb),
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
