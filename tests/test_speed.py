"""The speed benchmark on tiny synthetic images: its structure, not its numbers (those need an idle machine)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import synthetic

from benchmarks import speed
from benchmarks.codecs import CODECS


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Time in this process with one torch thread, and leave the session's setting as it was."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_time_codecs_structure(model, one_thread: None) -> None:
    """Every codec is timed on every image with positive times, or skipped with a reason; the verdict is computed."""
    images = [(f"s{seed}", np.asarray(synthetic(64, 64, seed=seed))) for seed in (0, 1)]
    result = speed.time_codecs(images, 50.0, model, repeats=1)
    assert result["torch_threads"] == 1
    codecs, skipped = result["codecs"], result["skipped"]
    assert {"yotocodec", speed.REFERENCE} <= codecs.keys()
    assert set(speed.CLASSIC_KEYS) == (codecs.keys() - {"yotocodec", speed.REFERENCE}) | skipped.keys()
    for key, reason in skipped.items():
        assert reason == CODECS[key].missing()
    for entry in codecs.values():
        assert entry["per_image"].keys() == {"s0", "s1"}
        for point in entry["per_image"].values():
            assert point["enc_s"] > 0 and point["dec_s"] > 0 and point["bpp"] > 0
        assert entry["enc_s"] == pytest.approx(np.mean([p["enc_s"] for p in entry["per_image"].values()]))
    verdict = result["verdict"]
    assert verdict["enc_ratio"] == pytest.approx(codecs["yotocodec"]["enc_s"] / codecs[speed.REFERENCE]["enc_s"])
    assert verdict["dec_ratio"] > 0 and isinstance(verdict["dec_meets_bar"], bool)


def test_cli_writes_json_and_markdown(tmp_path: Path) -> None:
    """The whole command on one tiny image and one thread (in its spawned process): both files, sane contents."""
    folder = tmp_path / "images"
    folder.mkdir()
    synthetic(64, 48).save(folder / "a.png")
    synthetic(64, 48, seed=1).save(folder / "b.png")
    args = ["--images", str(folder), "--limit", "1", "--threads", "1", "--repeats", "1", "--out", str(tmp_path)]
    result = CliRunner().invoke(speed.main, args)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "speed.json").read_text())
    assert data["meta"]["torch_threads"] == [1]
    assert [image["name"] for image in data["dataset"]["images"]] == ["a.png"]
    run = data["threads"]["1"]
    assert run["torch_threads"] == 1 and run["codecs"]["yotocodec"]["enc_s"] > 0
    assert "| yotocodec" in (tmp_path / "speed.md").read_text()


def test_time_large_on_a_small_photo(tmp_path: Path) -> None:
    """The --large path (benchmarks.large's one step per process) on a 96×64 'large' photo: times and peaks."""
    synthetic(64, 48).save(tmp_path / "a.png")
    large = speed.time_large([1], 50.0, tmp_path / "a.png", "96x64")
    assert large["size"] == [96, 64] and large["bytes"] > 0
    run = large["runs"]["1"]
    assert run["enc_s"] > 0 and run["dec_s"] > 0
    assert run["enc_peak_mb"] > 0 and run["dec_peak_mb"] > 0 and run["dec_helper_peak_mb"] > 0
    assert "Large photo, 96×64" in "\n".join(speed._large_table(large))
