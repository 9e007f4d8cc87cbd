"""The equal-size visual comparison: every classic codec stays within yotocodec's bytes, and the files are written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import synthetic

import yotocodec
from benchmarks.codecs import CODECS
from benchmarks.images import sample_images
from benchmarks.visual import CROPS, compare, crop_box, draw, main, match_size, record


@pytest.fixture(scope="module")
def shipped() -> yotocodec.YotoHyperprior:
    try:
        return yotocodec.load_model()
    except yotocodec.YotoError as exc:
        pytest.skip(f"no shipped model: {exc}")


def available() -> list[str]:
    return [key for key in CODECS if CODECS[key].missing() is None]


def test_crop_box_is_the_documented_one_and_stays_inside_the_image():
    assert crop_box("kodim23.png", (512, 768, 3)) == (*CROPS["kodim23"], 192)
    assert crop_box("kodim23", (768, 512, 3)) == (320, 120, 192)  # portrait: moved inside
    assert crop_box("other.png", (100, 300, 3), 64) == (118, 18, 64)  # unknown image: the centre
    assert crop_box("other.png", (50, 40, 3), 64) == (0, 5, 40)  # narrower than the crop: its width, centred


def test_match_size_finds_the_largest_fitting_setting():
    array = sample_images(128).arrays[0]
    budget = len(CODECS["jpeg420"].encode(array, 50))
    coded = match_size("jpeg420", array, budget)
    assert coded.fits and coded.num_bytes == budget and coded.setting == 50  # sizes rise with quality
    assert len(CODECS["jpeg420"].encode(array, 51)) > budget
    assert coded.trials <= 8
    tiny = match_size("jpeg420", array, 10)  # below any JPEG: the smallest file, flagged
    assert not tiny.fits and tiny.setting == 1


def test_every_classic_codec_stays_within_yotocodec_size(shipped, tmp_path):
    images = sample_images(128)
    keys = available()
    rows = compare(shipped, images.names[:2], images.arrays[:2], 0.75, keys, crop=48)
    for row in rows:
        ours, *classic = row.coded
        assert ours.key == "yotocodec" and ours.bpp <= 0.75
        assert [c.key for c in classic] == keys
        for coded in classic:
            assert coded.fits and coded.num_bytes <= row.budget, coded.label
            assert coded.decoded.shape == row.original.shape and 10 < coded.psnr < 60
    draw(rows, 0.75, tmp_path / "visual.png")
    assert (tmp_path / "visual.png").stat().st_size > 0
    numbers = json.loads(json.dumps(record(rows, 0.75, shipped.model_id)))  # JSON-ready: no pixels
    assert set(numbers["images"]) == set(images.names[:2])
    assert numbers["images"]["astronaut"]["codecs"]["yotocodec"]["num_bytes"] == rows[0].budget


def test_command_writes_the_figure_and_its_numbers(shipped, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    synthetic(96, 80, seed=3).save(folder / "a.png")
    out = tmp_path / "out" / "fig.png"
    args = ["--images", str(folder), "--names", "a", "--bpp", "1", "--codecs", "jpeg420,webp", "--out", str(out)]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    assert out.stat().st_size > 0
    results = json.loads(out.with_suffix(".json").read_text())
    codecs = results["images"]["a.png"]["codecs"]
    assert list(codecs) == ["yotocodec", "jpeg420", "webp"]
    assert all(c["num_bytes"] <= codecs["yotocodec"]["num_bytes"] for c in codecs.values())
    assert np.isclose(codecs["webp"]["bpp"], codecs["webp"]["num_bytes"] * 8 / (96 * 80))
    missing = CliRunner().invoke(main, ["--images", str(folder), "--names", "a,b", "--out", str(out)])
    assert missing.exit_code == 2 and "not in" in missing.output
