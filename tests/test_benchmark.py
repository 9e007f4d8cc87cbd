"""The RD benchmark: hand-checkable BD metrics, codec adapters, and a quick end-to-end run with consistent outputs."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import synthetic
from PIL import Image

import yotocodec
from benchmarks import codecs as codecs_mod
from benchmarks.anchors import load_anchors
from benchmarks.baselines import baseline_lambdas, claim
from benchmarks.baselines import main as baselines_main
from benchmarks.bd import bd_psnr, bd_rate, msssim_db
from benchmarks.codecs import CODECS, measure, ssimulacra2, ssimulacra2_missing
from benchmarks.common import finite_json
from benchmarks.diagnostics.ceiling import ceiling
from benchmarks.diagnostics.ceiling import main as ceiling_main
from benchmarks.diagnostics.channels import channel_bits, channel_use
from benchmarks.diagnostics.channels import main as channels_main
from benchmarks.diagnostics.gap import main as gap_main
from benchmarks.diagnostics.gap import measure_gap, rate_at_psnr
from benchmarks.images import DEFAULT_DIR, sample_images
from benchmarks.rd import _readme_plan, main
from benchmarks.readme import END, START, update_readme
from benchmarks.report import average, bd_table, rd_cost, summary_markdown
from yotocodec.config import ModelConfig
from yotocodec.model import FiLM, YotoHyperprior
from yotocodec.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]

RATES = [0.15, 0.3, 0.55, 0.9, 1.4, 2.1]
PSNRS = [27.0, 29.5, 31.8, 34.0, 36.1, 38.5]


def test_bd_rate_of_scaled_rates_is_the_scale():
    assert bd_rate(RATES, PSNRS, [0.8 * r for r in RATES], PSNRS) == pytest.approx(-20, abs=1e-6)
    assert bd_rate([0.8 * r for r in RATES], PSNRS, RATES, PSNRS) == pytest.approx(25, abs=1e-6)


def test_bd_psnr_of_shifted_curve_is_the_shift():
    assert bd_psnr(RATES, PSNRS, RATES, [p + 1 for p in PSNRS]) == pytest.approx(1, abs=1e-9)


def test_bd_of_a_curve_against_itself_is_zero_whatever_the_order():
    order = [3, 0, 5, 1, 4, 2]
    assert bd_rate(RATES, PSNRS, [RATES[i] for i in order], [PSNRS[i] for i in order]) == pytest.approx(0, abs=1e-12)


def test_bd_uses_only_the_overlap():
    # PSNR linear in log-rate, which PCHIP reproduces exactly; the test curve covers only the upper half, 10 % dearer
    rates, psnrs = [0.1 * 2**k for k in range(6)], [25 + 6 * k for k in range(6)]
    assert bd_rate(rates, psnrs, [1.1 * r for r in rates[3:]], psnrs[3:]) == pytest.approx(10, abs=1e-6)


def test_bd_is_nan_without_overlap_or_points():
    assert math.isnan(bd_rate(RATES[:3], PSNRS[:3], RATES[3:], PSNRS[3:]))
    assert math.isnan(bd_psnr([0.1, 0.2], [20, 22], [3.0, 4.0], [40, 42]))
    assert math.isnan(bd_rate(RATES, PSNRS, [0.5], [30.0]))
    assert math.isnan(bd_rate(RATES, PSNRS, [0.5, 0.6], [math.nan, math.nan]))


def test_msssim_db():
    assert msssim_db(0.99) == pytest.approx(20)
    assert msssim_db(1.0) == math.inf


def test_sample_images_are_small_rgb_photos():
    images = sample_images()
    assert len(images.names) == 3
    assert all(a.shape == (256, 256, 3) and a.dtype == np.uint8 for a in images.arrays)


@pytest.mark.parametrize("key", list(CODECS))
def test_classic_codec_round_trip(key):
    codec = CODECS[key]
    if codec.missing():
        pytest.skip(codec.missing())
    array = sample_images(192).arrays[0]
    low, high = measure(key, array, [codec.quick_sweep[0], codec.quick_sweep[-1]])
    assert 0 < low["bpp"] < high["bpp"]
    assert 20 < low["psnr"] < high["psnr"]
    assert 0 < low["ms_ssim"] < high["ms_ssim"] <= 1
    if not ssimulacra2_missing():
        assert low["ssimulacra2"] < high["ssimulacra2"] <= 100


def test_ssimulacra2_is_100_for_identical_images_and_falls_with_distortion(monkeypatch):
    if ssimulacra2_missing():
        pytest.skip(ssimulacra2_missing())
    array = sample_images(64).arrays[1]
    noisy = [np.clip(array + np.random.default_rng(0).normal(0, s, array.shape), 0, 255).astype(np.uint8)
             for s in (2, 8)]  # fmt: skip
    assert ssimulacra2(array, array) == 100
    assert 100 > ssimulacra2(array, noisy[0]) > ssimulacra2(array, noisy[1])
    assert math.isnan(ssimulacra2(array[:7], array[:7]))  # below the metric's smallest scale
    monkeypatch.setattr(codecs_mod, "ssimulacra2_missing", lambda: "not installed")
    assert math.isnan(ssimulacra2(array, array))


def test_published_curves_load_and_a_missing_folder_is_a_note(tmp_path):
    results = {"bpp": [0.5, 0.2], "psnr-rgb": [30.0, 27.0], "ms-ssim-rgb": [0.96, 0.9]}
    (tmp_path / "jpeg.json").write_text(json.dumps({"name": "JPEG", "results": results}))
    anchors, notes = load_anchors(tmp_path)
    assert [a.label for a in anchors] == ["JPEG (Pillow 7.1.2) (published)"]
    assert list(anchors[0].bpp) == [0.2, 0.5]  # sorted by rate
    assert len(notes) == 5  # the other published files are missing
    assert load_anchors(tmp_path / "nope") == ([], [f"published curves skipped: {tmp_path / 'nope'} not found"])


def test_unknown_codec_is_rejected():
    result = CliRunner().invoke(main, ["--quick", "--codecs", "jpeg420,bpg"])
    assert result.exit_code == 2
    assert "unknown codec 'bpg'" in result.output


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.rd", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Path, Path]:
    """The documented quick run on scikit-image photographs written to a folder: (image folder, output folder)."""
    images = tmp_path_factory.mktemp("images")
    samples = sample_images()
    for name, array in zip(samples.names, samples.arrays, strict=True):
        Image.fromarray(array).save(images / f"{name}.png")
    out = tmp_path_factory.mktemp("results")
    run = _run("--quick", "--images", str(images), "--out", str(out))
    assert run.returncode == 0, run.stderr
    return images, out


def _means(results: dict, key: str) -> dict[str, np.ndarray]:
    rows = results["codecs"][key]["mean"]
    return {name: np.array([r[name] for r in rows], dtype=float) for name in ("setting", "bpp", "psnr")}


def test_quick_run_writes_consistent_outputs(quick):
    _, out = quick
    for name in ("rd.json", "summary.md", "rd_psnr.png", "rd_msssim.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "rd.json").read_text())
    assert {"jpeg420", "webp"} <= set(results["codecs"])
    assert len(results["dataset"]["images"]) == 3
    assert results["meta"]["libraries"]["pillow"]
    assert re.fullmatch(r"[0-9a-f]{12}(\+dirty)?|n/a", results["meta"]["commit"])  # the code that ran
    assert f"commit {results['meta']['commit']})" in (out / "summary.md").read_text()
    for key, entry in results["codecs"].items():
        assert set(entry["per_image"]) == {"astronaut.png", "chelsea.png", "coffee.png"}
        means = _means(results, key)
        assert len(means["setting"]) == 4
        assert np.all(np.diff(means["setting"]) > 0)
        assert np.all(np.diff(means["bpp"]) > 0), f"{key}: bpp must rise with quality"
        per_image_bpp = [[p["bpp"] for p in points] for points in entry["per_image"].values()]
        np.testing.assert_allclose(means["bpp"], np.mean(per_image_bpp, axis=0))
    assert np.all(np.diff(_means(results, "jpeg420")["psnr"]) > 0)
    same = 0.0 if ssimulacra2_missing() is None else None  # None: not measured, n/a
    assert results["bd"]["jpeg420"]["vs_jpeg420"] == {"bd_rate_psnr": 0.0, "bd_rate_msssim": 0.0,
                                                      "bd_rate_ssimulacra2": same, "bd_psnr": 0.0}  # fmt: skip
    points = [p for entry in results["codecs"].values() for ps in entry["per_image"].values() for p in ps]
    assert all((p["ssimulacra2"] is None) == (same is None) for p in points)
    summary = (out / "summary.md").read_text()
    assert "BD-rate SSIMULACRA2 vs JPEG 4:2:0" in summary
    for entry in results["codecs"].values():
        assert f"| {entry['label']} |" in summary
    assert "mean over images of per-image bpp and of per-image PSNR" in summary


def test_quick_run_measures_the_single_model(quick):
    try:
        model = yotocodec.load_model()
    except yotocodec.YotoError as exc:
        pytest.skip(f"no shipped model, so the quick run left the learned codec out: {exc}")
    results = json.loads((quick[1] / "rd.json").read_text())
    entry = results["codecs"]["model"]
    assert entry["model_id"] == model.model_id
    assert list(_means(results, "model")["setting"]) == pytest.approx([0, 100 / 3, 200 / 3, 100])
    assert results["bd"]["model"]["vs_model"]["bd_rate_psnr"] == 0.0
    assert all(p["enc_s"] > 0 and p["dec_s"] > 0 for points in entry["per_image"].values() for p in points)


def test_results_for_other_images_are_never_overwritten(quick):
    _, out = quick
    before = (out / "rd.json").read_text()
    run = _run("--quick", "--images", "/nonexistent", "--out", str(out), "--codecs", "jpeg444")
    assert run.returncode == 1
    assert "holds results for other images" in run.stderr
    assert (out / "rd.json").read_text() == before


def test_codecs_option_merges_and_the_pool_matches_in_process(quick, tmp_path):
    images, out = quick
    for lmbda in (0.01, 0.003):  # tiny untrained per-λ models: only the bookkeeping is under test
        config = ModelConfig(N=16, M=16, lmbda_min=lmbda, lmbda_max=lmbda)
        save_weights(YotoHyperprior(config), tmp_path / f"{lmbda}.pt")
    before = json.loads((out / "rd.json").read_text())
    run = _run(
        "--quick",
        "--images",
        str(images),
        "--out",
        str(out),
        "--codecs",
        "jpeg444,baselines",
        "--jobs",
        "2",
        "--baselines",
        str(tmp_path),
    )
    assert run.returncode == 0, run.stderr
    after = json.loads((out / "rd.json").read_text())
    assert set(after["codecs"]) == set(before["codecs"]) | {"jpeg444", "baselines"}
    assert [r["setting"] for r in after["codecs"]["baselines"]["mean"]] == [0.003, 0.01]
    assert after["codecs"]["jpeg420"] == before["codecs"]["jpeg420"]
    expected = measure("jpeg444", sample_images().arrays[0], CODECS["jpeg444"].quick_sweep)
    assert [p["bpp"] for p in after["codecs"]["jpeg444"]["per_image"]["astronaut.png"]] == [p["bpp"] for p in expected]


def test_single_model_is_compared_with_each_baseline_at_its_own_lambda(quick, tmp_path):
    images, _ = quick
    save_weights(YotoHyperprior(ModelConfig(N=16, M=16, lmbda_min=0.003, lmbda_max=0.01)), tmp_path / "single.pt")
    for lmbda in (0.01, 0.003, 0.05):  # 0.05 lies outside the single model's range: no paired point there
        save_weights(YotoHyperprior(ModelConfig(N=16, M=16, lmbda_min=lmbda, lmbda_max=lmbda)),
                     tmp_path / f"lambda-{lmbda}.pt")  # fmt: skip
    out = tmp_path / "out"
    common = ("--quick", "--images", str(images), "--out", str(out), "--model", str(tmp_path / "single.pt"))
    for codecs in ("model", "baselines"):  # measured apart: the baselines still pair with the single model
        run = _run(*common, "--codecs", codecs, "--baselines", str(tmp_path / "lambda-*.pt"))
        assert run.returncode == 0, run.stderr
    entry = json.loads((out / "rd.json").read_text())["codecs"]["baselines"]
    paired = entry["single_at_lambda"]
    assert paired["model_id"] == yotocodec.load_model(tmp_path / "single.pt").model_id
    assert all([p["setting"] for p in points] == [0.003, 0.01] for points in paired["per_image"].values())
    summary = (out / "summary.md").read_text()
    assert "BD-rate of the single model against the per-λ curve" in summary
    rows = [line for line in summary.splitlines() if line.startswith("| 0.0")]
    assert [row.split(" | ")[0] for row in rows] == ["| 0.003", "| 0.01"]
    own = next(p for p in entry["per_image"]["astronaut.png"] if p["setting"] == 0.01)
    assert rd_cost(own) == pytest.approx(0.01 * 255**2 * 10 ** (-own["psnr"] / 10) + own["bpp"])


def test_re_measuring_the_single_model_pairs_it_with_the_baselines_kept_from_before(quick, tmp_path):
    images, _ = quick
    for lmbda in (0.003, 0.01):
        save_weights(YotoHyperprior(ModelConfig(N=16, M=16, lmbda_min=lmbda, lmbda_max=lmbda)),
                     tmp_path / f"lambda-{lmbda}.pt")  # fmt: skip
    for name in ("old", "new"):
        save_weights(YotoHyperprior(ModelConfig(N=16, M=16, lmbda_min=0.002, lmbda_max=0.02)), tmp_path / f"{name}.pt")
    out = tmp_path / "out"
    common = ("--quick", "--images", str(images), "--out", str(out))
    first = _run(*common, "--codecs", "model,baselines", "--model", str(tmp_path / "old.pt"),
                 "--baselines", str(tmp_path / "lambda-*.pt"))  # fmt: skip
    assert first.returncode == 0, first.stderr
    again = _run(*common, "--codecs", "model", "--model", str(tmp_path / "new.pt"))  # the per-λ weights are gone
    assert again.returncode == 0, again.stderr
    entry = json.loads((out / "rd.json").read_text())["codecs"]["baselines"]
    new = yotocodec.load_model(tmp_path / "new.pt")
    assert new.model_id != yotocodec.load_model(tmp_path / "old.pt").model_id
    assert entry["single_at_lambda"]["model_id"] == new.model_id
    paired = entry["single_at_lambda"]["per_image"].values()
    assert all([p["setting"] for p in points] == [0.003, 0.01] for points in paired)
    assert f"the single model `{new.model_id}` encoded with that λ" in (out / "summary.md").read_text()


def _run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True)


def _shipped_model_or_skip() -> None:
    try:
        yotocodec.load_model()
    except yotocodec.YotoError as exc:
        pytest.skip(f"no shipped model: {exc}")


def test_quick_effort_benchmark_is_consistent(quick, tmp_path):
    _shipped_model_or_skip()
    run = _run_module("benchmarks.effort", "--quick", "--images", str(quick[0]), "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "effort.json").read_text())
    base, refined = results["levels"]
    assert (base["effort"], refined["effort"]) == (0, 1)
    assert base["bd_rate_psnr"] == 0 and base["size_change_pct"] == 0 and base["psnr_change_db"] == 0
    assert refined["gradient_steps"] == 10 and refined["enc_s"] > base["enc_s"]
    points = results["per_level"]["1"]["per_image"]["astronaut.png"]
    baseline = results["per_level"]["0"]["per_image"]["astronaut.png"]
    assert [p["setting"] for p in points] == [p["setting"] for p in baseline] == [0, 50, 100]
    ratio = np.mean([p["num_bytes"] / b["num_bytes"] for name, pts in results["per_level"]["1"]["per_image"].items()
                     for p, b in zip(pts, results["per_level"]["0"]["per_image"][name], strict=True)])  # fmt: skip
    assert refined["size_change_pct"] == pytest.approx((ratio - 1) * 100)
    assert "| 1 | 10 |" in (tmp_path / "effort.md").read_text()
    assert results["meta"]["command"].startswith("python -m benchmarks.effort --quick")  # how to reproduce it


def test_quick_rate_control_benchmark_keeps_its_promises(quick, tmp_path):
    _shipped_model_or_skip()
    run = _run_module("benchmarks.ratecontrol", "--quick", "--images", str(quick[0]), "--out", str(tmp_path),
                      "--bpp", "0.5,9", "--psnr", "27,99")  # fmt: skip
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "ratecontrol.json").read_text())
    for record in results["per_image"].values():
        low, high = record["size"]
        assert high["inside"] is False and high["bytes"] == record["quality_100"]["bytes"]  # 9 bpp: best there is
        if low["inside"]:
            assert low["within_tolerance"] and low["bytes"] <= low["target_bytes"] and low["trials"] <= 32
        assert record["psnr"][1] == {"target_psnr": 99.0, "inside": False, "reached": False, "psnr": None,
                                     "trials": None}  # fmt: skip
    size_rows = results["summary"]["size"]
    assert size_rows[1]["images_inside_range"] == 0
    assert "| 0.5 |" in (tmp_path / "ratecontrol.md").read_text()
    assert results["meta"]["command"].startswith("python -m benchmarks.ratecontrol --quick")


def test_baselines_train_matched_models_and_continue_when_rerun(tmp_path):
    assert baseline_lambdas(0.0015, 0.2, 5) == [0.0015, 0.005097, 0.01732, 0.05886, 0.2]
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        synthetic(160, 150, seed=i).save(data / f"{i}.png")
    args = ["--runs", str(tmp_path / "runs"), "--data", str(data), "--steps", "2", "--count", "2", "--N", "16",
            "--M", "16", "--batch-size", "2", "--patch-size", "64", "--out", str(tmp_path / "out")]  # fmt: skip
    first = CliRunner().invoke(baselines_main, args)
    assert first.exit_code == 0, first.output
    exported = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert exported == ["lambda-0.0015.pt", "lambda-0.2.pt", "single.pt"]
    single = yotocodec.load_model(tmp_path / "out" / "single.pt")
    low = yotocodec.load_model(tmp_path / "out" / "lambda-0.0015.pt")
    assert (single.config.lmbda_min, single.config.lmbda_max) == (0.0015, 0.2)
    assert low.config.lmbda_min == low.config.lmbda_max == 0.0015
    assert single.meta["steps"] == low.meta["steps"] == 2 and low.meta["fixed_lambda"] == 0.0015
    again = CliRunner().invoke(baselines_main, args)  # everything is done: nothing retrains, ids stay
    assert again.exit_code == 0, again.output
    assert yotocodec.load_model(tmp_path / "out" / "single.pt").model_id == single.model_id


def test_baselines_give_the_single_model_its_own_budget_in_its_own_run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    synthetic(160, 150, seed=0).save(data / "0.png")
    args = ["--runs", str(tmp_path / "runs"), "--data", str(data), "--steps", "1", "--single-steps", "2",
            "--count", "2", "--N", "16", "--M", "16", "--batch-size", "2", "--patch-size", "64",
            "--out", str(tmp_path / "out"), "--precision", "bf16"]  # fmt: skip
    run = CliRunner().invoke(baselines_main, args)
    assert run.exit_code == 0, run.output
    assert "single-2: 2 steps, exported" in run.output
    saved = torch.load(tmp_path / "runs" / "single-2" / "checkpoint.pt", weights_only=False)
    assert saved["config"]["precision"] == "bf16"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["lambda-0.0015.pt", "lambda-0.2.pt", "single-2.pt"]
    assert yotocodec.load_model(tmp_path / "out" / "single-2.pt").meta["steps"] == 2
    assert yotocodec.load_model(tmp_path / "out" / "lambda-0.2.pt").meta["steps"] == 1
    assert not (tmp_path / "runs" / "single").exists()  # a run planned for other steps is not the one extended


def test_staged_baselines_fine_tune_one_starting_model_at_each_lambda_and_export_its_average(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    synthetic(160, 150, seed=0).save(data / "0.png")
    start = YotoHyperprior(ModelConfig(N=16, M=16, lmbda_min=0.001, lmbda_max=0.1))
    save_weights(start, tmp_path / "stage1.pt", {"steps": 7, "fixed_lambda": 0.1})
    args = ["--runs", str(tmp_path / "runs"), "--data", str(data), "--steps", "1", "--count", "2",
            "--init-from", str(tmp_path / "stage1.pt"), "--ema-decay", "0.5", "--decoder-quantizer", "ste",
            "--batch-size", "2", "--patch-size", "64", "--out", str(tmp_path / "out")]  # fmt: skip
    run = CliRunner().invoke(baselines_main, args)
    assert run.exit_code == 0, run.output
    single = yotocodec.load_model(tmp_path / "out" / "single.pt")
    low = yotocodec.load_model(tmp_path / "out" / "lambda-0.001.pt")
    for model in (single, low):  # each keeps the starting model's networks and conditioning range
        assert (model.config.N, model.config.lmbda_min, model.config.lmbda_max) == (16, 0.001, 0.1)
        assert model.meta["steps"] == 7 + 1 and model.meta["ema_decay"] == 0.5
    assert low.meta["fixed_lambda"] == 0.001 and single.meta["fixed_lambda"] is None
    saved = torch.load(tmp_path / "runs" / "lambda-0.1" / "checkpoint.pt", weights_only=False)
    assert saved["config"]["init_from"] == str(tmp_path / "stage1.pt")
    assert saved["config"]["decoder_quantizer"] == "ste"
    others = CliRunner().invoke(baselines_main, [*args, "--runs", str(tmp_path / "runs2"), "--out",
                                                 str(tmp_path / "out2"), "--no-single"])  # fmt: skip
    assert others.exit_code == 0, others.output  # the single model trained elsewhere: only the per-λ ones here
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["lambda-0.001.pt", "lambda-0.1.pt"]


def test_a_second_baselines_invocation_skips_the_run_another_one_holds(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    synthetic(160, 150, seed=0).save(data / "0.png")
    args = ["--runs", str(tmp_path / "runs"), "--data", str(data), "--steps", "1", "--count", "2", "--N", "16",
            "--M", "16", "--batch-size", "2", "--patch-size", "64", "--out", str(tmp_path / "out")]  # fmt: skip
    with claim(tmp_path / "runs" / "lambda-0.2") as mine:  # as if another process were training it
        assert mine
        run = CliRunner().invoke(baselines_main, args)
    assert run.exit_code == 0, run.output
    assert "lambda-0.2: being trained by another invocation when reached" in run.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["lambda-0.0015.pt", "single.pt"]
    assert not (tmp_path / "runs" / "lambda-0.2" / "checkpoint.pt").exists()
    run = CliRunner().invoke(baselines_main, args)  # the lock went with its holder
    assert run.exit_code == 0, run.output
    assert (tmp_path / "out" / "lambda-0.2.pt").exists()


def one_image_folder(tmp_path: Path) -> Path:
    """A folder of one small synthetic photo, for the benchmark commands' --images."""
    folder = tmp_path / "images"
    folder.mkdir()
    synthetic(96, 80, seed=5).save(folder / "a.png")
    return folder


def test_channel_use_counts_the_channels_a_film_switches_off(tmp_path):
    torch.manual_seed(0)
    model = YotoHyperprior(ModelConfig(N=16, M=16, lmbda_min=0.002, lmbda_max=0.2)).eval()
    arrays = tuple(np.array(synthetic(96, 80, seed=i)) for i in range(2))
    before = channel_use(model, arrays)
    assert [r.lmbda for r in before] == pytest.approx([0.002, 0.02, 0.2])
    assert [r.switched_off for r in before] == [0, 0, 0]
    assert all(1 <= r.hold_99 <= 16 and 0 <= r.live <= 16 for r in before)
    assert channel_bits(model, arrays, 0.02).shape == (16,)
    with torch.no_grad():
        model.g_a[-1].head.bias[:5] = -20.0  # switch off latent channels 0-4 at every λ
    assert [r.switched_off for r in channel_use(model, arrays)] == [5, 5, 5]
    # The command reads weights files and training checkpoints alike.
    save_weights(model, tmp_path / "w.pt")
    folder = one_image_folder(tmp_path)
    run = CliRunner().invoke(channels_main, [str(tmp_path / "w.pt"), "--images", str(folder)])
    assert run.exit_code == 0, run.output
    assert "M = 16, 1 images" in run.output and run.output.count(" 5 |\n") == 3
    checkpoint = {"config": {"model": asdict(model.config)}, "model": model.state_dict(), "step": 7}
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    run = CliRunner().invoke(channels_main, [str(tmp_path / "checkpoint.pt"), "--images", str(folder)])
    assert run.exit_code == 0, run.output
    assert "(step 7)" in run.output and run.output.count(" 5 |\n") == 3
    run = CliRunner().invoke(channels_main, [str(tmp_path / "checkpoint.pt"), "--ema", "--images", str(folder)])
    assert run.exit_code == 1 and "no weight average" in run.output


def test_the_ceiling_is_the_autoencoder_without_quantisation(model, tmp_path):
    shipped = copy.deepcopy(model).float().eval()
    arrays = (np.array(synthetic(64, 64, seed=1)),)
    lmbda = shipped.config.lmbda_min
    base = ceiling(shipped, arrays, lmbda)
    assert base.psnr_rounded < base.psnr_unquantised - 1  # at λ_min rounding costs dB
    M = shipped.config.M
    with torch.no_grad():  # a latent e⁵ times finer, undone by the synthesis: the same autoencoder, rounding negligible
        shipped.g_a[-1].head.bias[:M] += 5.0  # scale exp(γ) ...
        shipped.g_a[-1].head.weight[M:] *= math.exp(5.0)  # ... and shift β
        shipped.g_a[-1].head.bias[M:] *= math.exp(5.0)
        shipped.g_s[0].head.bias[:M] -= 5.0
    fine = ceiling(shipped, arrays, lmbda)
    assert fine.psnr_unquantised == pytest.approx(base.psnr_unquantised, abs=1e-3)
    assert fine.psnr_rounded == pytest.approx(fine.psnr_unquantised, abs=0.05)
    assert fine.bpp > base.bpp + 1

    tiny = YotoHyperprior(ModelConfig(N=16, M=16, lmbda_min=0.002, lmbda_max=0.2))
    save_weights(tiny, tmp_path / "w.pt")
    folder = one_image_folder(tmp_path)
    run = CliRunner().invoke(ceiling_main, [str(tmp_path / "w.pt"), "--images", str(folder)])
    assert run.exit_code == 0, run.output
    assert [line.split(" | ")[0] for line in run.output.splitlines()[-3:]] == ["| 0.002", "| 0.02", "| 0.2"]
    run = CliRunner().invoke(ceiling_main, [str(tmp_path / "w.pt"), "--images", str(folder), "--lambda", "0.5"])
    assert run.exit_code == 1 and "λ 0.5 is outside the model's range [0.002, 0.2]" in run.output


def test_rate_at_psnr_interpolates_log_rate_and_extends_the_end_segments():
    curve = [(0.1 * 2 ** ((p - 25) / 6), p) for p in (31.0, 25.0, 37.0)]  # log rate linear in PSNR; any order
    for psnr in (22.0, 25.0, 28.0, 34.5, 40.0):
        assert rate_at_psnr(curve, psnr) == pytest.approx(0.1 * 2 ** ((psnr - 25) / 6), rel=1e-12)
    with pytest.raises(ValueError):
        rate_at_psnr(curve[:1], 30.0)


def test_the_gap_of_a_model_to_itself_is_zero_and_the_command_finds_the_finetunes_lambda(tmp_path):
    torch.manual_seed(0)
    model = YotoHyperprior(ModelConfig(N=16, M=16, lmbda_min=0.002, lmbda_max=0.2)).eval()
    with torch.no_grad():  # FiLM heads start at zero: make the model's output depend on λ
        for film in (m for m in model.modules() if isinstance(m, FiLM)):
            film.head.weight.normal_(std=0.5)
    arrays = [np.array(synthetic(96, 80, seed=1))]
    with pytest.raises(ValueError, match="does not change with λ"):
        rate_at_psnr([(0.5, 30.0), (0.7, 30.0)], 30.0)
    gap = measure_gap(model, model, arrays, 0.02)
    assert gap.finetune == gap.model and gap.model_bpp_at_psnr == pytest.approx(gap.finetune[0], rel=1e-9)
    assert gap.rate_gap == pytest.approx(0, abs=1e-9)
    save_weights(model, tmp_path / "model.pt")
    save_weights(model, tmp_path / "tuned.pt", meta={"fixed_lambda": 0.02})
    folder = one_image_folder(tmp_path)
    args = [str(tmp_path / "model.pt"), str(tmp_path / "tuned.pt"), "--images", str(folder)]
    run = CliRunner().invoke(gap_main, args)
    assert run.exit_code == 0, run.output
    assert run.output.splitlines()[-1].startswith("| 0.02 |") and run.output.endswith("| +0.0 % |\n")
    run = CliRunner().invoke(gap_main, [*args[:1], str(tmp_path / "model.pt"), *args[2:]])
    assert run.exit_code == 1 and "give --lambda" in run.output
    run = CliRunner().invoke(gap_main, [*args, "--lambda", "0.5"])
    assert run.exit_code == 1 and "outside the model's range" in run.output


def test_rate_changes_are_read_at_each_test_point_on_the_reference_curve():
    from benchmarks.bd import rate_changes

    rates, psnrs = [0.1, 0.2, 0.4, 0.8], [26.0, 29.0, 32.0, 34.0]
    changes = rate_changes(rates, psnrs, [0.09, 0.3, 1.2], [25.0, 29.0, 34.0])
    assert math.isnan(changes[0])  # 25 dB: below the reference's range
    assert changes[1:] == pytest.approx([50.0, 50.0])  # 1.5x the reference's rate at the same PSNR


def test_summary_tabulates_the_single_models_bits_against_each_codec_per_quality():
    results = _rd_results()
    results.update(meta={"date": "-", "cpu": "-", "command": "-"}, bd=bd_table(results["codecs"]))
    results["dataset"]["fingerprint"] = "0" * 64
    results["codecs"]["model"].update(lmbda_min=0.001, lmbda_max=1.0, meta={"torch_threads": 1, "cpu": "-"})
    for entry in results["codecs"].values():
        entry.update(library="-", settings="-", parameter="quality")
    rows = summary_markdown(results, [], []).splitlines()
    assert "| quality | PSNR (dB) | JPEG 4:2:0 | WebP |" in rows
    assert "| 40 | 31.80 | -20.0 % | -11.1 % |" in rows  # 0.8x JPEG's rates and 0.8/0.9x WebP's at the same PSNR


def _old_point(setting: float, bpp: float, psnr: float) -> dict:
    """An RD point as rd.json stored it before SSIMULACRA2 was measured."""
    return {"setting": setting, "num_bytes": 1, "bpp": bpp, "psnr": psnr, "ms_ssim": 1 - 10 ** (-psnr / 20),
            "enc_s": 0.1, "dec_s": 0.1}  # fmt: skip


def test_results_without_ssimulacra2_still_load_and_tabulate():
    codecs = {}
    for key, scale in (("jpeg420", 1.0), ("webp", 0.8)):
        per_image = {"a.png": [_old_point(q, scale * r, p) for q, r, p in zip(range(6), RATES, PSNRS, strict=True)]}
        codecs[key] = {"label": key, "library": "-", "settings": "-", "parameter": "quality", "per_image": per_image}
    meta = {"date": "-", "cpu": "-", "command": "-", "torch_threads": 1}
    dataset = {"images": [{"name": "a.png"}], "source": "-", "fingerprint": "0" * 64}
    for reloaded in (False, True):  # as measured, then through rd.json (nan written as null)
        for entry in codecs.values():
            entry["mean"] = average(entry["per_image"])
        if reloaded:
            codecs = json.loads(json.dumps(finite_json(codecs)))
            assert codecs["webp"]["mean"][0]["ssimulacra2"] is None
        table = bd_table(codecs)
        assert table["webp"]["vs_jpeg420"]["bd_rate_psnr"] == pytest.approx(-20, abs=1e-6)
        assert table["webp"]["vs_jpeg420"]["bd_rate_ssimulacra2"] is None
        results = {"codecs": codecs, "meta": meta, "dataset": dataset, "bd": table}
        assert "| webp | -20.0 % | -20.0 % | n/a | " in summary_markdown(results, [], [])


def _rd_results() -> dict:
    """Results as rd.json holds them: JPEG 4:2:0, WebP at 0.9× its rates and the single model at 0.8× them."""
    codecs = {}
    for key, label, scale in (("jpeg420", "JPEG 4:2:0", 1.0), ("webp", "WebP", 0.9),
                              ("model", "yotocodec, single model abcd1234 (1,000 steps)", 0.8)):  # fmt: skip
        points = [{**_old_point(q, scale * r, p), "ssimulacra2": 50.0 + q / 2}
                  for q, r, p in zip(range(0, 101, 20), RATES, PSNRS, strict=True)]  # fmt: skip
        per_image = {"a.png": points}
        codecs[key] = {"label": label, "per_image": per_image, "mean": average(per_image)}
    codecs["model"]["model_id"] = "abcd1234"
    return {"codecs": codecs, "dataset": {"images": [{"name": "a.png"}], "source": "../shared/data/kodak"}}


def _between_markers(text: str) -> str:
    return text.split(START)[1].split(END)[0]


def test_readme_table_replaces_only_the_block_between_the_markers(tmp_path):
    before, after = "# yotocodec\n\n## Results\n\nHand-written intro.\n\n", "\n\nMore prose, kept.\n"
    readme = tmp_path / "README.md"
    readme.write_text(f"{before}{START}\n| quality | stale |\n{END}{after}")  # the markers as README.md has them
    update_readme(readme, _rd_results())
    text = readme.read_text()
    assert text.startswith(before + START) and text.endswith(END + after)
    block = _between_markers(text)
    assert "stale" not in block
    rows = block.strip().splitlines()
    for row in ("| quality | 0 | 20 | 40 | 60 | 80 | 100 |", "| bpp | 0.120 | 0.240 | 0.440 | 0.720 | 1.120 | 1.680 |",
                "| PSNR (dB) | 27.00 | 29.50 | 31.80 | 34.00 | 36.10 | 38.50 |",
                "| SSIMULACRA2 | 50.00 | 60.00 | 70.00 | 80.00 | 90.00 | 100.00 |",
                "| BD-rate of `abcd1234` against | JPEG 4:2:0 | WebP |",
                "| bits for the same PSNR | −20.0 % | −11.1 % |",
                "| bits for the same SSIMULACRA2 | −20.0 % | −11.1 % |"):  # fmt: skip
        assert row in rows
    update_readme(readme, _rd_results())  # rewriting the same results changes nothing
    assert readme.read_text() == text


def test_readme_without_markers_is_an_error_and_left_as_it_is(tmp_path):
    readme = tmp_path / "README.md"
    for text in ("# no markers\n", f"{END}\n{START}\n", f"{START}\n{START}\n{END}\n"):
        readme.write_text(text)
        with pytest.raises(click.ClickException, match="rd-results:start"):
            update_readme(readme, _rd_results())
        assert readme.read_text() == text


def test_only_a_full_default_run_rewrites_the_repository_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{START}\n{END}\n")
    assert _readme_plan(readme, False, True, tmp_path, tmp_path) == (readme, False)  # named: always
    assert _readme_plan(readme, True, False, DEFAULT_DIR, None) is None  # --no-readme
    assert _readme_plan(None, False, True, DEFAULT_DIR, None) is None  # --quick
    assert _readme_plan(None, False, False, tmp_path, None) is None  # other images
    assert _readme_plan(None, False, False, DEFAULT_DIR, tmp_path) is None  # other --out
    with pytest.raises(click.ClickException, match="not found"):
        _readme_plan(tmp_path / "missing.md", False, False, DEFAULT_DIR, None)


def test_rd_run_writes_the_readme_table_and_checks_the_markers_first(quick, tmp_path):
    _shipped_model_or_skip()  # the quick run measured the single model: the table is of it
    images, results = quick
    out = shutil.copytree(results, tmp_path / "out")
    readme = tmp_path / "README.md"
    readme.write_text("# title\n")
    args = ("--quick", "--images", str(images), "--out", str(out), "--codecs", "jpeg420", "--readme", str(readme))
    early = _run(*args)
    assert early.returncode == 1 and "rd-results:start" in early.stderr
    assert "classic codecs" not in early.stderr  # failed before measuring
    readme.write_text(f"# title\n\n{START}\n{END}\n\nend\n")
    run = _run(*args)
    assert run.returncode == 0, run.stderr
    text = readme.read_text()
    assert text.startswith(f"# title\n\n{START}\n") and text.endswith(f"{END}\n\nend\n")
    codecs = json.loads((out / "rd.json").read_text())["codecs"]
    labels = " | ".join(entry["label"] for key, entry in codecs.items() if key in CODECS)  # those kept from before too
    rows = _between_markers(text).splitlines()
    assert f"| BD-rate of `{codecs['model']['model_id']}` against | {labels} |" in rows
    assert "| quality | 0 | 33.3333 | 66.6667 | 100 |" in rows
    assert sum(row.startswith("| bits for the same PSNR | ") and row.endswith(" % |") for row in rows) == 1


def _rd_json(path: Path, model_id: str, psnr_shift: list[float], fingerprint: str = "abc") -> Path:
    """An rd.json holding one single-model curve: the reference's points, PSNR moved per point by ``psnr_shift``."""
    bpps, psnrs = [0.1, 0.2, 0.4, 0.8, 1.6], [26.0, 29.0, 32.0, 34.5, 36.0]
    mean = [
        {"setting": 25.0 * i, "bpp": b, "psnr": p + s, "ms_ssim_db": p / 2 + s, "ssimulacra2": 2 * p + s}
        for i, (b, p, s) in enumerate(zip(bpps, psnrs, psnr_shift, strict=True))
    ]
    path.write_text(
        json.dumps({"dataset": {"fingerprint": fingerprint}, "codecs": {"model": {"model_id": model_id, "mean": mean}}})
    )
    return path


def test_ship_bar_passes_a_better_curve_and_fails_one_point_too_low(tmp_path):
    from benchmarks import shipbar

    reference = _rd_json(tmp_path / "ref.json", "old", [0] * 5)
    better = _rd_json(tmp_path / "better.json", "new", [0.05, 0.3, 0.3, 0.3, 0.3])
    dipped = _rd_json(tmp_path / "dipped.json", "new", [0.3, -0.15, 0.3, 0.3, 0.3])
    runner = CliRunner()
    passed = runner.invoke(shipbar.main, [str(better), "--reference", str(reference)])
    assert passed.exit_code == 0 and "Worst gap +0.050 dB at 0.100 bpp: PASSES" in passed.output
    assert "BD-rate, PSNR: -" in passed.output
    failed = runner.invoke(shipbar.main, [str(dipped), "--reference", str(reference)])
    assert "Worst gap -0.150 dB at 0.200 bpp: FAILS" in failed.output
    other_set = _rd_json(tmp_path / "other.json", "new", [0.3] * 5, fingerprint="xyz")
    refused = runner.invoke(shipbar.main, [str(other_set), "--reference", str(reference)])
    assert refused.exit_code == 1 and "different image sets" in refused.output


def test_quality_gaps_are_read_at_both_curves_points_inside_the_shared_range():
    from benchmarks.bd import quality_gaps

    rates, psnrs = [0.1, 0.2, 0.4, 0.8], [26.0, 29.0, 32.0, 34.0]
    gaps = quality_gaps(rates, psnrs, [r * 1.5 for r in rates], [p + 0.5 for p in psnrs])
    assert [round(rate, 3) for rate, _ in gaps] == [0.15, 0.2, 0.3, 0.4, 0.6, 0.8]  # 0.1 and 1.2: one curve only
    assert all(gap < 0.5 for _, gap in gaps)  # the same quality costs 1.5x the rate: less than +0.5 dB at equal rate
    same_rates = quality_gaps(rates, psnrs, rates, [p - 0.2 for p in psnrs])
    assert [gap for _, gap in same_rates] == pytest.approx([-0.2] * 4)
