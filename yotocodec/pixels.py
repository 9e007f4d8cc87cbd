"""Any Pillow image as the codec codes it: 8-bit RGB pixels, an optional alpha plane, the mode to give back, and the
metadata that travels with it."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from .container import MAX_PIXELS, MAX_SIDE
from .errors import YotoError
from .metadata import Metadata, read_metadata


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Greyscale pixels of any depth as 8 bits: 16-bit (and 32-bit integer) data is rescaled, not clipped."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "b":
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "f":
        return np.clip(np.round(array), 0, 255).astype(np.uint8)
    if array.max(initial=0) > 255:
        return np.clip(np.round(array.astype(np.float64) / 257), 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def split_image(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, str, Metadata]:
    """Normalise any Pillow image into (RGB uint8 pixels, alpha plane or None, the mode to restore on decode, and
    the metadata that travels with it).

    EXIF orientation is applied; greyscale stays greyscale; palette images become RGB(A); CMYK and other colour
    spaces become RGB; transparency is kept as an alpha plane, which the codec stores losslessly.
    """
    try:
        image = ImageOps.exif_transpose(image)
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise YotoError(f"cannot read image: {exc}") from None
    if image.width * image.height > MAX_PIXELS or max(image.size) > MAX_SIDE:
        raise YotoError(
            f"image of {image.width}×{image.height} pixels exceeds the limit of {MAX_PIXELS} pixels "
            f"and {MAX_SIDE} a side"
        )
    rgb, alpha, mode = _pixels(image)
    return rgb, alpha, mode, read_metadata(image, mode)


def _pixels(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, str]:
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    if image.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        grey = _to_uint8(np.asarray(image))
        return np.repeat(grey[:, :, None], 3, axis=2), None, "L"
    if image.mode in ("LA", "La"):
        la = np.asarray(image.convert("LA"))
        return np.repeat(la[:, :, :1], 3, axis=2), np.ascontiguousarray(la[:, :, 1]), "LA"
    if image.mode in ("RGBA", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"))
        return np.ascontiguousarray(rgba[:, :, :3]), np.ascontiguousarray(rgba[:, :, 3]), "RGBA"
    return np.asarray(image.convert("RGB")), None, "RGB"
