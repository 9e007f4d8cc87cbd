"""Published Kodak results from CompressAI's repository, to draw (dashed, labelled "published") beside our curves.

They were measured elsewhere, with other software versions and, for learned models, without the container header:
they show where the field stands, never a result of this benchmark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bd import msssim_db

DEFAULT_DIR = Path("../shared/anchors/compressai-kodak")

# file name -> label; learned-model bpp counts only the entropy-coded strings (CompressAI's README).
PUBLISHED = {
    "compressai-bmshj2018-hyperprior_mse_cuda.json": "bmshj2018-hyperprior, per-λ models",
    "bmshj2018-hyperprior-vbr-ans.json": "bmshj2018-hyperprior, variable rate",
    "jpeg.json": "JPEG (Pillow 7.1.2)",
    "webp.json": "WebP (Pillow 7.1.2)",
    "bpg_444_x265_ycbcr.json": "BPG 4:4:4 (x265)",
    "vtm.json": "VTM",
}


@dataclass(frozen=True)
class Anchor:
    """One published curve, points sorted by rate."""

    key: str
    label: str
    bpp: np.ndarray
    psnr: np.ndarray
    ms_ssim_db: np.ndarray


def load_anchors(folder: Path) -> tuple[list[Anchor], list[str]]:
    """The published curves found in ``folder`` and notes on what is missing (a missing folder is not an error)."""
    if not folder.is_dir():
        return [], [f"published curves skipped: {folder} not found"]
    anchors, notes = [], []
    for name, label in PUBLISHED.items():
        path = folder / name
        if not path.is_file():
            notes.append(f"published curve skipped: {path} not found")
            continue
        results = json.loads(path.read_text())["results"]
        order = np.argsort(results["bpp"])
        anchors.append(
            Anchor(
                key=path.stem,
                label=f"{label} (published)",
                bpp=np.asarray(results["bpp"], dtype=float)[order],
                psnr=np.asarray(results["psnr-rgb"], dtype=float)[order],
                ms_ssim_db=msssim_db(np.asarray(results["ms-ssim-rgb"], dtype=float)[order]),
            )
        )
    return anchors, notes
