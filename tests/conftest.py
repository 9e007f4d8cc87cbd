"""Shared fixtures: the shipped model, a foreign model, and synthetic images with photo-like structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import yotocodec
from yotocodec.model import ModelConfig, YotoHyperprior, save_weights


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


@pytest.fixture
def photo() -> Image.Image:
    """A real photograph shipped with scikit-image (cropped to keep the tests quick)."""
    from skimage import data

    return Image.fromarray(data.astronaut()).crop((96, 0, 352, 256))
