"""Shared fixtures: the shipped model, a foreign model, and synthetic images with photo-like structure."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import yotocodec
from yotocodec.config import ModelConfig
from yotocodec.model import YotoHyperprior
from yotocodec.weights import save_weights


@pytest.fixture(scope="session")
def model():
    """The shipped default model (the tests exercise what users get)."""
    return yotocodec.load_model()


@pytest.fixture(scope="session")
def other_model_path(tmp_path_factory) -> Path:
    """A tiny untrained model with a different id, for 'file from another model' cases."""
    path = tmp_path_factory.mktemp("other") / "other.pt"
    save_weights(YotoHyperprior(ModelConfig(N=16, M=16)), path)
    return path


def synthetic(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Smooth colour gradients, a few edges and mild noise: compressible like a photo, deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = np.stack(
        [
            128 + 90 * np.sin(xx / 23 + seed),
            128 + 90 * np.cos(yy / 31),
            128 + 60 * np.sin((xx + yy) / 41) + 40 * ((xx // 16 + yy // 16) % 2),
        ],
        axis=-1,
    )
    rgb += rng.normal(0, 4, rgb.shape)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    if mode in ("RGBA", "LA"):
        alpha = Image.fromarray(np.clip(xx * 255 / max(width - 1, 1), 0, 255).astype(np.uint8), "L")
        image = image.convert(mode[:-1])
        image.putalpha(alpha)
        return image
    return image.convert(mode)


def sane_psnr(original: np.ndarray) -> float:
    """The PSNR a decode must beat to count as sane: 6 dB above the image's own flat per-channel mean.

    Independent of how far training has got, yet a broken codec (wrong crop, swapped channels, garbage) fails it.
    """
    flat = np.broadcast_to(original.reshape(-1, original.shape[-1]).mean(0) if original.ndim == 3 else original.mean(),
                           original.shape).round()  # fmt: skip
    mse = np.mean((original.astype(np.float64) - flat) ** 2)
    return 10 * np.log10(255**2 / mse) + 6


def photo_crop(width: int, height: int) -> Image.Image:
    """The top-left ``width``×``height`` of a real photograph shipped with scikit-image (NASA, public domain)."""
    from skimage import data

    return Image.fromarray(data.astronaut()).crop((0, 0, width, height))


@pytest.fixture
def photo() -> Image.Image:
    """A real photograph shipped with scikit-image (cropped to keep the tests quick)."""
    from skimage import data

    return Image.fromarray(data.astronaut()).crop((96, 0, 352, 256))


@functools.cache
def srgb_profile() -> bytes:
    """A real ICC profile: littleCMS's sRGB, made through Pillow's ImageCms (once: it carries its creation time)."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def bare_profile(colour_space: bytes) -> bytes:
    """The smallest well-formed ICC profile header for a colour space (empty tag table)."""
    data = bytearray(132)
    data[:4] = len(data).to_bytes(4, "big")
    data[16:20] = colour_space
    data[36:40] = b"acsp"
    return bytes(data)
