"""Determinism across runs and thread counts, and tiled coding that is indistinguishable from whole-image coding."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import synthetic

import yotocodec
from yotocodec import tiling

CODE_IN_A_FRESH_PROCESS = """
import hashlib, json, sys, torch, numpy as np
from PIL import Image
import yotocodec
torch.set_num_threads(int(sys.argv[1]))
image = Image.open(sys.argv[2])
data = yotocodec.encode(image, 55)
foreign = open(sys.argv[3], "rb").read() if len(sys.argv) > 3 else data
pixels = np.asarray(yotocodec.decode(foreign)).tobytes()
print(json.dumps({"bytes": hashlib.sha256(data).hexdigest(), "pixels": hashlib.sha256(pixels).hexdigest()}))
"""


def run_fresh(threads: int, image_path, foreign=None) -> dict:
    args = [sys.executable, "-c", CODE_IN_A_FRESH_PROCESS, str(threads), str(image_path)]
    proc = subprocess.run(args + ([str(foreign)] if foreign else []), capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_identical_across_thread_counts(tmp_path, photo, model):
    """Same bytes with 1 and 2 threads, and a file made with 1 thread decodes to the same pixels with 2."""
    path = tmp_path / "photo.png"
    photo.save(path)
    one, two = run_fresh(1, path), run_fresh(2, path)
    assert one["bytes"] == two["bytes"]
    assert one["pixels"] == two["pixels"]
    file_from_one = tmp_path / "one.yoto"
    file_from_one.write_bytes(yotocodec.encode(photo, 55, model=model))
    assert hashlib.sha256(file_from_one.read_bytes()).hexdigest() == one["bytes"]
    assert run_fresh(2, path, file_from_one)["pixels"] == one["pixels"]


def test_tiles_are_invisible(model, monkeypatch):
    """Coding in 128-pixel tiles gives the very bytes and pixels of coding in one piece."""
    image = synthetic(333, 250, seed=3)
    whole = yotocodec.encode(image, 40, model=model)
    whole_pixels = np.asarray(yotocodec.decode(whole, model=model))
    monkeypatch.setattr(tiling, "TILE", 128)
    assert len(tiling.spans(336, tiling.TILE, tiling.HALO)) == 3
    tiled = yotocodec.encode(image, 40, model=model)
    assert tiled == whole
    assert np.array_equal(np.asarray(yotocodec.decode(tiled, model=model)), whole_pixels)


@pytest.mark.parametrize(("length", "tile"), [(64, 1024), (1024, 1024), (1040, 1024), (3000, 512)])
def test_spans_cover_the_axis_once(length, tile):
    spans = tiling.spans(length, tile, 64)
    assert [s[0] for s in spans] == list(range(0, length, tile))
    assert spans[-1][1] == length
    assert all(c0 <= r0 < r1 <= c1 and r0 - c0 <= 64 and c1 - r1 <= 64 for r0, r1, c0, c1 in spans)
