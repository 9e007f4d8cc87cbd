"""RD plots: measured curves solid, the single model's dense sweep bold, published curves dashed."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np

from .anchors import Anchor
from .report import curve

MAX_BPP = 2.0
YLABELS = {"psnr": "RGB PSNR (dB)", "ms_ssim_db": "RGB MS-SSIM (dB), -10·log10(1 - MS-SSIM)"}


def plot_rd(codecs: dict[str, dict], anchors: list[Anchor], metric: str, title: str, path: Path) -> None:
    """One curve per codec against bpp in [0, 2], y range fitted to what is visible."""
    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=120)
    visible: list[np.ndarray] = []
    for key, entry in codecs.items():
        bpp, quality = curve(entry, metric)
        if key == "model":
            ax.plot(bpp, quality, "-", color="black", lw=2.2, marker=".", ms=5, label=entry["label"], zorder=5)
        elif key == "baselines":
            ax.plot(bpp, quality, ":", color="black", marker="s", ms=5, label=entry["label"], zorder=4)
            for rate, value, row in zip(bpp, quality, sorted(entry["mean"], key=lambda r: r["bpp"]), strict=True):
                ax.annotate(
                    f"λ={row['setting']:g}", (rate, value), textcoords="offset points", xytext=(4, -10), fontsize=7
                )
        else:
            ax.plot(bpp, quality, "-", marker="o", ms=3, lw=1.2, label=entry["label"])
        visible.append(quality[bpp <= MAX_BPP])
    published_colours = plt.get_cmap("Dark2").colors  # apart from the measured curves' default cycle
    for anchor, colour in zip(anchors, published_colours, strict=False):
        values = anchor.psnr if metric == "psnr" else anchor.ms_ssim_db
        ax.plot(anchor.bpp, values, "--", lw=1, color=colour, label=anchor.label)
        visible.append(values[anchor.bpp <= MAX_BPP])
    finite = np.concatenate(visible) if visible else np.array([])
    finite = finite[np.isfinite(finite)]
    if finite.size:
        margin = 0.03 * (finite.max() - finite.min() or 1)
        ax.set_ylim(finite.min() - margin, finite.max() + margin)
    ax.set_xlim(0, MAX_BPP)
    ax.set_xlabel("bits per pixel (whole file)")
    ax.set_ylabel(YLABELS[metric])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
