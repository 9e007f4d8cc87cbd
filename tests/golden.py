"""Golden files: small ``.yoto`` files written by each released model, with what they must decode to.

``python tests/golden.py`` writes the set for the current default model into ``tests/golden/<model id>/`` (once, when
a model is released; the files are then never rewritten).  ``tests/test_golden.py`` decodes every set on every CI run,
so no later change to the model code, the inference precision, torch or CompressAI can silently break an old file.

Each file comes with the SHA-256 of its decoded symbols (z, y and y's scale indexes: these must match exactly, or the
file would not decode at all) and its decoded pixels as a PNG (to match within one step, see ``PIXEL_TOLERANCE``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as photos

import yotocodec
from yotocodec.codec import embedding, latent_shapes
from yotocodec.container import unpack
from yotocodec.loading import model_for_file

GOLDEN = Path(__file__).parent / "golden"
MANIFEST = "manifest.json"
PIXEL_TOLERANCE = 1  # decoded pixels may move by one step (e.g. float32 transforms); symbols never may


def sources() -> dict[str, tuple[Image.Image, float]]:
    """The images and qualities of a golden set: several qualities; RGB, greyscale and RGBA; an awkward size."""
    astronaut = Image.fromarray(photos.astronaut()[40:104, 180:276])  # 96×64: a face, fine detail and flat areas
    coffee = photos.coffee()[100:164, 200:264]
    alpha = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    rgba = Image.fromarray(np.dstack([coffee, alpha]), "RGBA")
    return {
        "rgb-q0": (astronaut, 0),
        "rgb-q50": (astronaut, 50),
        "rgb-q100": (astronaut, 100),
        "grey-q60": (Image.fromarray(photos.camera()[100:156, 200:280], "L"), 60),
        "rgba-q40": (rgba, 40),
        "odd-67x45-q75": (Image.fromarray(photos.chelsea()[80:125, 120:187]), 75),
    }


def symbols_digest(data: bytes, model: yotocodec.codec.ModelLike = None) -> str:
    """SHA-256 over the decoded symbols of z and y and y's scale indexes, computed in this process (not forked)."""
    header, strings = unpack(data)
    net = model_for_file(header.model_id, model)
    with torch.inference_mode():
        _, symbols = net.decode_latent(strings[:2], latent_shapes(net, header), embedding(net, header.lmbda_code))
    digest = hashlib.sha256()
    for name in ("z", "indexes", "y"):
        digest.update(name.encode())
        digest.update(symbols[name].contiguous().numpy().astype("<i4").tobytes())
    return digest.hexdigest()


def write_set() -> Path:
    """Encode the golden images with the default model and record what they decode to."""
    model_id = yotocodec.load_model().model_id
    folder = GOLDEN / model_id
    if folder.exists():
        raise SystemExit(f"{folder} exists: golden files are written once and never replaced")
    folder.mkdir(parents=True)
    manifest = {}
    for name, (image, quality) in sources().items():
        data = yotocodec.encode(image, quality)
        assert unpack(data)[0].model_id == model_id
        (folder / f"{name}.yoto").write_bytes(data)
        decoded = yotocodec.decode(data)
        decoded.save(folder / f"{name}.png")
        manifest[name] = {
            "mode": decoded.mode,
            "size": list(decoded.size),
            "quality": quality,
            "file_sha256": hashlib.sha256(data).hexdigest(),
            "symbols_sha256": symbols_digest(data),
        }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return folder


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(write_set())
