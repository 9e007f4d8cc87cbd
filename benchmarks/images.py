"""The image set under test, with a fingerprint so that results from different sets are never merged."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_DIR = Path("../shared/data/kodak")
SUFFIXES = {".png", ".ppm", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".webp"}
QUICK_COUNT = 3
QUICK_SIZE = 256


@dataclass(frozen=True)
class ImageSet:
    """RGB uint8 images with their names and where they came from."""

    source: str
    names: tuple[str, ...]
    arrays: tuple[np.ndarray, ...]

    @property
    def fingerprint(self) -> str:
        """SHA-256 of names and pixels: equal fingerprints mean results can be merged and compared."""
        digest = hashlib.sha256()
        for name, array in zip(self.names, self.arrays, strict=True):
            digest.update(f"{name}:{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def describe(self) -> dict:
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "images": [
                {"name": n, "width": a.shape[1], "height": a.shape[0]}
                for n, a in zip(self.names, self.arrays, strict=True)
            ],
        }


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """The central ``size``×``size`` pixels (or fewer along a shorter side)."""
    h, w = array.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.array(array[top : top + size, left : left + size])


def load_folder(folder: Path, limit: int | None = None, crop: int | None = None) -> ImageSet:
    """The images of ``folder`` in name order, as RGB, optionally only the first ``limit`` and centre-cropped."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)[:limit]
    if not paths:
        raise FileNotFoundError(f"no images in {folder}")
    arrays = []
    for path in paths:
        with Image.open(path) as image:
            array = np.array(image.convert("RGB"))
        arrays.append(center_crop(array, crop) if crop else array)
    source = str(folder) + (f" (first {len(paths)}, centre {crop}×{crop} crops)" if crop else "")
    return ImageSet(source, tuple(p.name for p in paths), tuple(arrays))


def sample_images(size: int = QUICK_SIZE) -> ImageSet:
    """Three photographs shipped with scikit-image, scaled and cropped to ``size`` px: quick mode without a folder."""
    from skimage import data

    arrays = []
    names = ("astronaut", "chelsea", "coffee")
    for name in names:
        image = Image.fromarray(getattr(data, name)())
        scale = size / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        arrays.append(center_crop(np.asarray(image.convert("RGB")), size))
    return ImageSet(f"scikit-image samples, {size}×{size}", names, tuple(arrays))
