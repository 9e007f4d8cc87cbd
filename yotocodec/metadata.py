"""What travels beside the pixels, byte for byte: the ICC colour profile and the EXIF block.

The learned code holds only pixel values.  A wide-gamut photo (Display P3, Adobe RGB) shows the right colours only
with its profile, and a photo's EXIF block holds its capture date, camera and exposure, so both are stored as they
came (the EXIF block with its orientation already applied to the pixels) and handed back in ``image.info``, where
Pillow's writers find them.  Pillow's ``info`` keys are kept: ``icc_profile`` and ``exif``.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageOps

from .errors import YotoError

EXIF_PREFIX = b"Exif\x00\x00"  # how JPEG's APP1 segment and Pillow spell an EXIF block; PNG and WebP omit it
_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")
INFO_KEYS = ("icc_profile", "exif")  # Pillow's names, in image.info and as writer options


@dataclass(frozen=True)
class Metadata:
    """An image's ICC profile and EXIF block, each None when absent."""

    icc_profile: bytes | None = None
    exif: bytes | None = None

    def info(self) -> dict[str, bytes]:
        """The entries for a Pillow image's ``info`` (or a Pillow writer's options)."""
        return {key: value for key, value in zip(INFO_KEYS, (self.icc_profile, self.exif), strict=True) if value}


def read_metadata(image: Image.Image, mode: str) -> Metadata:
    """The metadata of an image (orientation already applied) that is coded as ``mode``.

    The profile is kept only when it describes the coded colours (RGB, or grey for L/LA): a CMYK or Lab profile no
    longer fits once the pixels are converted to RGB.  Bytes that are not a profile or an EXIF block are left out.
    """
    profile = image.info.get("icc_profile")
    colour_space = b"GRAY" if mode in ("L", "LA") else b"RGB "
    if not (isinstance(profile, bytes) and is_icc_profile(profile) and profile[16:20] == colour_space):
        profile = None
    exif = image.info.get("exif")
    if isinstance(exif, bytes) and not exif.startswith(EXIF_PREFIX):
        exif = EXIF_PREFIX + exif
    return Metadata(profile, exif if isinstance(exif, bytes) and is_exif_block(exif) else None)


def without_exif(image: Image.Image) -> Image.Image:
    """A copy of ``image`` turned upright by its EXIF orientation, without the EXIF block: encode this to keep
    capture details (date, camera, GPS position) out of the file."""
    upright = ImageOps.exif_transpose(image)
    upright.info.pop("exif", None)
    return upright


def stored_metadata(icc_profile: bytes | None, exif: bytes | None) -> Metadata:
    """Check what a file stored (a forged file can hold anything with a valid CRC) and return it."""
    if icc_profile is not None and not is_icc_profile(icc_profile):
        raise YotoError("corrupt: the stored ICC profile is not a valid profile")
    if exif is not None and not is_exif_block(exif):
        raise YotoError("corrupt: the stored EXIF block is not a valid EXIF block")
    return Metadata(icc_profile, exif)


def is_icc_profile(data: bytes) -> bool:
    """The ICC header's own checks: a profile states its length at offset 0 and carries ``acsp`` at offset 36."""
    return len(data) >= 132 and int.from_bytes(data[:4], "big") == len(data) and data[36:40] == b"acsp"


def is_exif_block(data: bytes) -> bool:
    """``Exif\\0\\0`` and a TIFF header (byte order and magic 42): the start of every EXIF block."""
    return data.startswith(EXIF_PREFIX) and data[6:10] in _TIFF_HEADERS
