"""Thread counts and tiling never change whether a file decodes, and move decoded pixels by one step at most."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic
from PIL import Image

import yotocodec
from yotocodec import bands, isolation, slices, tiling
from yotocodec.metrics import psnr

CODE_IN_A_FRESH_PROCESS = """
import sys, torch
from PIL import Image
import yotocodec
torch.set_num_threads(int(sys.argv[1]))
image, out = Image.open(sys.argv[2]), sys.argv[3]
data = open(sys.argv[4], "rb").read() if len(sys.argv) > 4 else yotocodec.encode(image, 55)
open(out + ".yoto", "wb").write(data)
yotocodec.decode(data).save(out + ".png")
"""


def run_fresh(threads: int, image_path: Path, out: Path, foreign: Path | None = None) -> tuple[bytes, np.ndarray]:
    """Encode (or take ``foreign``) and decode in a fresh process with ``threads`` threads: (file, decoded pixels)."""
    args = [sys.executable, "-c", CODE_IN_A_FRESH_PROCESS, str(threads), str(image_path), str(out)]
    subprocess.run(args + ([str(foreign)] if foreign else []), capture_output=True, text=True, check=True)
    return out.with_suffix(".yoto").read_bytes(), np.asarray(Image.open(out.with_suffix(".png")), dtype=np.int16)


def test_thread_counts_never_change_whether_a_file_decodes(tmp_path, photo, model):
    """The transforms run in float32, so 1 and 2 threads may move a coded value or a decoded pixel by one step; the
    hyper path runs in float64, so a file made with either thread count decodes with the other to pixels within one
    step (test_golden checks that the symbols are identical)."""
    path = tmp_path / "photo.png"
    photo.save(path)
    file_one, pixels_one = run_fresh(1, path, tmp_path / "one")
    file_two, pixels_two = run_fresh(2, path, tmp_path / "two")
    assert abs(len(file_one) - len(file_two)) <= 0.01 * len(file_one)
    assert np.abs(pixels_one - pixels_two).max() <= 1
    for name, own_pixels in (("one", pixels_one), ("two", pixels_two)):  # decoded by the other thread count
        other = 2 if name == "one" else 1
        _, pixels = run_fresh(other, path, tmp_path / f"{name}-by-{other}", tmp_path / f"{name}.yoto")
        assert np.abs(pixels - own_pixels).max() <= 1


def test_tiles_are_invisible(model, monkeypatch):
    """Coding in 128-pixel tiles instead of one piece leaves no seams: the same file decodes to pixels within one
    step, and a file encoded in tiles has the same size within 0.5 % and the same PSNR within 0.05 dB (float32
    rounding may move a coded value, never the picture)."""
    image = synthetic(333, 250, seed=3)
    reference = np.asarray(image, dtype=np.int16)
    whole = yotocodec.encode(image, 40, model=model)
    whole_pixels = np.asarray(yotocodec.decode(whole, model=model), dtype=np.int16)
    monkeypatch.setattr(tiling, "TILE", 128)
    assert len(tiling.spans(336, tiling.TILE, tiling.HALO)) == 3
    assert np.abs(np.asarray(yotocodec.decode(whole, model=model), dtype=np.int16) - whole_pixels).max() <= 1
    tiled = yotocodec.encode(image, 40, model=model)
    assert abs(len(tiled) - len(whole)) <= 0.005 * len(whole)
    tiled_pixels = np.asarray(yotocodec.decode(tiled, model=model), dtype=np.int16)
    assert psnr(reference, tiled_pixels) == pytest.approx(psnr(reference, whole_pixels), abs=0.05)


@pytest.mark.parametrize(("length", "tile"), [(64, 1024), (1024, 1024), (1040, 1024), (3000, 512)])
def test_spans_cover_the_axis_once(length, tile):
    spans = tiling.spans(length, tile, 64)
    assert [s[0] for s in spans] == list(range(0, length, tile))
    assert spans[-1][1] == length
    assert all(c0 <= r0 < r1 <= c1 and r0 - c0 <= 64 and c1 - r1 <= 64 for r0, r1, c0, c1 in spans)


def test_hyper_synthesis_in_bands_matches_one_piece(model, monkeypatch):
    """On large images h_s computes each layer in bands of rows (memory): the same scale indexes and means as one
    piece, up to float64 rounding, whatever the band height."""
    torch.manual_seed(0)
    with torch.inference_mode():
        z_hat = torch.round(torch.randn(1, model.config.N, 13, 11, dtype=torch.float64) * 3)
        emb = model.embed(torch.tensor([0.05], dtype=torch.float64))
        whole_scales, whole_means = model.h_s(z_hat, emb).chunk(2, dim=1)
        for budget in (1, 40_000, 300_000):  # one row a band, a few rows, two bands
            monkeypatch.setattr(bands, "UNFOLD_BYTES", budget)
            scales, means = model.gaussian_params(z_hat, emb)
            assert torch.allclose(means, whole_means, rtol=0, atol=1e-12)
            assert torch.allclose(scales, whole_scales, rtol=0, atol=1e-12)
            indexes = model.gaussian_conditional.build_indexes
            assert torch.equal(indexes(scales), indexes(whole_scales))


@pytest.mark.parametrize(
    "layer",
    [
        torch.nn.Conv2d(3, 4, kernel_size=5, stride=2, padding=2),
        torch.nn.Conv2d(3, 4, kernel_size=3, stride=1, padding=1),
        torch.nn.ConvTranspose2d(3, 4, kernel_size=5, stride=2, padding=2, output_padding=1),
        torch.nn.ConvTranspose2d(3, 4, kernel_size=3, stride=1, padding=1),
    ],
)
@pytest.mark.parametrize("rows", [1, 2, 7, 12])
def test_each_band_of_a_convolution_reads_exactly_the_rows_it_needs(layer, rows, monkeypatch):
    monkeypatch.setattr(bands, "UNFOLD_BYTES", 1)  # one output row (two for a stride-2 transposed conv) a band
    x = torch.randn(1, 3, rows, 6, dtype=torch.float64)
    layer = layer.double()
    with torch.inference_mode():
        assert torch.allclose(bands.in_bands(torch.nn.Sequential(layer), x, lambda f, t: f(t)), layer(x), atol=1e-12)


def test_the_latent_coded_a_slice_at_a_time_is_the_same_file(model, monkeypatch):
    """slices.compress / build_indexes bound memory on large images; the bytes and indexes are CompressAI's."""
    torch.manual_seed(1)
    conditional = model.gaussian_conditional
    y = torch.randn(1, 8, 9, 7) * 6
    scales = torch.rand(1, 8, 9, 7, dtype=torch.float64) * 20
    means = torch.randn(1, 8, 9, 7, dtype=torch.float64)
    whole = conditional.compress(y.double(), conditional.build_indexes(scales), means=means)[0]
    for size in (1, 100, 10_000):
        monkeypatch.setattr(slices, "SLICE", size)
        assert slices.compress(conditional, [(y, scales, means)]) == whole
        assert torch.equal(slices.build_indexes(conditional, scales), conditional.build_indexes(scales))


@pytest.mark.parametrize("size", [1, 100, 10_000])
def test_the_latent_decoded_a_slice_at_a_time_gives_compressais_symbols(model, monkeypatch, size):
    """slices.decompress reads the string a slice of indexes at a time, in this process or in the helper, and gets
    what CompressAI's decompress gets from it in one piece."""
    torch.manual_seed(2)
    conditional = model.gaussian_conditional
    y, scales = torch.randn(1, 8, 9, 7) * 6, torch.rand(1, 8, 9, 7, dtype=torch.float64) * 20
    indexes = conditional.build_indexes(scales)
    string = conditional.compress(y.double(), indexes)[0]
    whole = conditional.decompress([string], indexes, torch.float64).int()
    assert torch.equal(whole, torch.round(y.double()).int())  # no means: the symbols are the rounded latent
    monkeypatch.setattr(slices, "SLICE", size)
    assert torch.equal(slices.decompress(conditional, string, indexes), whole)
    assert torch.equal(slices.decompress(conditional, string, indexes, isolation.decoder().stream), whole)


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_without_autograd_is_compressai_gdn_bit_for_bit(inverse):
    from compressai import layers

    from yotocodec.model import GDN

    torch.manual_seed(0)
    ours, theirs = GDN(8, inverse=inverse), layers.GDN(8, inverse=inverse)
    with torch.no_grad():
        ours.gamma.add_(torch.rand_like(ours.gamma) * 0.1)
        ours.beta.add_(torch.rand_like(ours.beta))
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 9, 7).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.equal(ours(x), theirs(x))
    x.requires_grad_(True)
    assert torch.equal(ours(x), theirs(x))  # training keeps CompressAI's own forward
