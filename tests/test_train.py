"""The training pipeline on tiny models and generated images: loss-conditional steps, resume, export, two-rank DDP."""

from __future__ import annotations

import copy
import json
import math
import socket
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from click.testing import CliRunner
from conftest import synthetic

import yotocodec
from yotocodec.cli import main
from yotocodec.config import ModelConfig
from yotocodec.model import YotoHyperprior
from yotocodec.training import loop
from yotocodec.training.checkpoint import CHECKPOINT_NAME, LOG_NAME, export, model_from_checkpoint
from yotocodec.training.loop import train
from yotocodec.training.recipe import (
    TrainConfig,
    config_from_checkpoint,
    learning_rate,
    loss_weights,
    rate_gradient,
    sample_lambdas,
)
from yotocodec.training.surgery import (
    LATENT_OFF_SCALE,
    latent_scales,
    revive_latent_channels,
    revive_partly_closed_channels,
    set_lambda_range,
    widen,
)
from yotocodec.weights import save_weights

TINY = ModelConfig(N=16, M=16, lmbda_min=0.002, lmbda_max=0.2)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i in range(4):
        synthetic(200 + 20 * i, 180, seed=i).save(root / f"img{i}.png")
    return root


def tiny_config(image_dir: Path, run_dir: Path, **kw) -> TrainConfig:
    base = dict(model=TINY, batch_size=2, patch_size=64, steps=6, log_every=2, warmup_steps=2, val_every=4,
                val_dir=str(image_dir), val_images=1)  # fmt: skip
    return TrainConfig(data=str(image_dir), run_dir=str(run_dir), **(base | kw))


def test_lambdas_are_log_uniform_over_the_range():
    cfg = TrainConfig(data="", run_dir="", model=TINY)
    lmbda = sample_lambdas(cfg, 20000, np.random.default_rng(0)).numpy()
    assert lmbda.min() >= 0.002 and lmbda.max() <= 0.2
    median = np.exp(np.median(np.log(lmbda)))
    assert median == pytest.approx(np.sqrt(0.002 * 0.2), rel=0.05)


def test_fixed_lambda_samples_one_value():
    cfg = TrainConfig(data="", run_dir="", model=ModelConfig(lmbda_min=0.01, lmbda_max=0.01), fixed_lambda=0.01)
    assert torch.allclose(sample_lambdas(cfg, 8, np.random.default_rng(0)), torch.full((8,), 0.01))


def test_loss_weights_even_out_the_range_and_leave_fixed_lambda_alone():
    lmbda = torch.tensor([0.002, 0.02, 0.2])
    plain = TrainConfig(data="", run_dir="", model=TINY, lambda_weighting=0.0)
    assert torch.equal(loss_weights(plain, lmbda), torch.ones(3))
    weights = loss_weights(TrainConfig(data="", run_dir="", model=TINY), lmbda)  # the default p = 0.5
    assert weights.tolist() == pytest.approx([10**0.5, 1.0, 10**-0.5])  # λ_ref = 0.02, the geometric middle
    fixed = TrainConfig(data="", run_dir="", model=ModelConfig(lmbda_min=0.05, lmbda_max=0.05), fixed_lambda=0.05,
                        lambda_weighting=0.5)  # fmt: skip
    assert torch.equal(loss_weights(fixed, torch.full((4,), 0.05)), torch.ones(4))


def test_learning_rate_schedule():
    cfg = TrainConfig(data="", run_dir="", lr=1e-3, warmup_steps=100, steps=1000, decay_fraction=0.2)
    assert learning_rate(cfg, 0) == pytest.approx(1e-5)
    assert learning_rate(cfg, 500) == pytest.approx(1e-3)
    assert learning_rate(cfg, 999) == pytest.approx(1e-5, rel=0.01)


def test_train_resume_and_export(image_dir, tmp_path):
    cfg = tiny_config(image_dir, tmp_path / "run", steps=4)
    assert train(cfg, progress=False)[1]["step"] == 4
    state_after_4 = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)["model"]
    cfg.steps = 6
    assert train(cfg, progress=False)[1]["step"] == 6
    records = [json.loads(line) for line in (tmp_path / "run" / LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6]
    assert all(np.isfinite(r["loss"]) and r["bpp"] > 0 for r in records if "loss" in r)
    assert [len(r["val"]) for r in records if "val" in r] == [3]  # at step 4: λ_min, geometric middle, λ_max
    resumed = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)["model"]
    assert any(not torch.equal(state_after_4[k], resumed[k]) for k in state_after_4)

    weights = tmp_path / "tiny.pt"
    model_id = export(tmp_path / "run" / CHECKPOINT_NAME, weights)
    model = yotocodec.load_model(weights)
    assert model.model_id == model_id and model.meta["steps"] == 6 and model.meta["provisional"] is False
    stored = torch.load(weights, weights_only=True)["state_dict"]
    assert stored["g_a.0.weight"].dtype == torch.float16  # parameters in half precision, ...
    assert stored["entropy_bottleneck._quantized_cdf"].dtype == torch.int32  # ... entropy-coder tables exact
    assert weights.stat().st_size < 2e6  # model only: no optimiser state
    decoded = yotocodec.decode(yotocodec.encode(synthetic(70, 50), 50, model=model), model=model)
    assert decoded.size == (70, 50)


def test_export_fits_the_quantiles_of_z_to_its_density(image_dir, tmp_path):
    """Training leaves the quantiles near their initial ±10; the exported model's are fitted to its density."""
    train(tiny_config(image_dir, tmp_path, steps=2), progress=False)
    trained, _ = model_from_checkpoint(tmp_path / CHECKPOINT_NAME)
    before = trained.aux_loss().item()
    export(tmp_path / CHECKPOINT_NAME, tmp_path / "tiny.pt")
    stored = torch.load(tmp_path / "tiny.pt", weights_only=True)["state_dict"]
    trained.entropy_bottleneck.quantiles.data = stored["entropy_bottleneck.quantiles"].float()
    after = trained.aux_loss().item()
    assert after < before / 20


def test_a_checkpoint_with_contiguous_adam_moments_resumes_exactly(image_dir, tmp_path):
    # Runs checkpointed before training went channels-last hold contiguous moments; Adam's fused CPU kernel would
    # pair them with the wrong elements of the channels-last weights unless they are given the weights' layout.
    train(tiny_config(image_dir, tmp_path / "a", steps=2), progress=False)
    ckpt = torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=False)
    moments = [v for state in ckpt["optimizer"]["state"].values() for v in state.values() if v.dim() == 4]
    assert moments and all(v.is_contiguous(memory_format=torch.channels_last) for v in moments)
    for state in ckpt["optimizer"]["state"].values():
        state.update({k: v.contiguous() for k, v in state.items()})
    (tmp_path / "b").mkdir()
    torch.save(ckpt, tmp_path / "b" / CHECKPOINT_NAME)
    for run in "ab":
        train(tiny_config(image_dir, tmp_path / run, steps=3), progress=False)
    a, b = (torch.load(tmp_path / run / CHECKPOINT_NAME, weights_only=False)["model"] for run in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_conditioning_can_learn_at_its_own_rate_and_such_a_run_resumes(image_dir, tmp_path):
    cfg = tiny_config(image_dir, tmp_path / "run", steps=3, film_lr_factor=0.1, model=replace(TINY, film="linear"))
    train(cfg, progress=False)
    ckpt = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)
    assert ckpt["config"]["film_lr_factor"] == 0.1
    main_group, conditioning = ckpt["optimizer"]["param_groups"]
    model = YotoHyperprior(cfg.model)
    names = [n for n, _ in model.named_parameters() if not n.endswith(".quantiles")]
    expected = [n for n in names if n.startswith("cond.") or ".head." in n]  # the λ embedding and FiLM heads
    assert len(conditioning["params"]) == len(expected) > 0
    assert len(main_group["params"]) == len(names) - len(expected)
    assert conditioning["lr"] == pytest.approx(0.1 * main_group["lr"])  # the same schedule, scaled
    for group in ckpt["optimizer"]["param_groups"]:  # as written before the groups carried their factor
        del group["lr_factor"]
    torch.save(ckpt, tmp_path / "run" / CHECKPOINT_NAME)
    cfg.steps = 5
    assert train(cfg, progress=False)[1]["step"] == 5
    main_group, conditioning = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)["optimizer"][
        "param_groups"
    ]
    assert conditioning["lr"] == pytest.approx(0.1 * main_group["lr"])  # the run's factor, not the saved groups'


def test_resume_refuses_a_different_model(image_dir, tmp_path):
    train(tiny_config(image_dir, tmp_path, steps=1), progress=False)
    with pytest.raises(ValueError, match="another model"):
        train(tiny_config(image_dir, tmp_path, steps=2, model=ModelConfig(N=16, M=24)), progress=False)


def test_cli_train_fixed_lambda_and_export(image_dir, tmp_path):
    run = CliRunner().invoke(main, ["train", "--data", str(image_dir), "--run-dir", str(tmp_path), "--N", "16",
                                    "--M", "16", "--fixed-lambda", "0.01", "--steps", "2", "--batch-size", "2",
                                    "--patch-size", "64", "--val-dir", str(image_dir),
                                    "--lambda-weighting", "0.25"])  # fmt: skip
    assert run.exit_code == 0, run.output
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert saved["config"]["lambda_weighting"] == 0.25
    del saved["config"]["lambda_weighting"]  # a run from before the option: it resumes unweighted, as it trained
    torch.save(saved, tmp_path / "old.pt")
    assert config_from_checkpoint(tmp_path / "old.pt").lambda_weighting == 0.0
    again = CliRunner().invoke(main, ["train", "--data", str(image_dir), "--run-dir", str(tmp_path)])
    assert again.exit_code == 1 and "--resume" in again.output
    out = CliRunner().invoke(
        main, ["export", str(tmp_path / CHECKPOINT_NAME), "-o", str(tmp_path / "b.pt"), "--provisional"]
    )
    assert out.exit_code == 0, out.output
    model = yotocodec.load_model(tmp_path / "b.pt")
    assert model.config.lmbda_min == model.config.lmbda_max == 0.01
    assert model.meta["provisional"] is True


def _rank_main(rank: int, port: int, image_dir: str, run_dir: str, result: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    cfg = TrainConfig(data=image_dir, run_dir=run_dir, model=TINY, batch_size=2, patch_size=64, steps=3,
                      warmup_steps=1, log_every=1)  # fmt: skip
    model, record = train(cfg, progress=False)
    mine = {k: v.double().sum().item() for k, v in model.state_dict().items() if v.is_floating_point()}
    gathered: list = [None, None]
    dist.all_gather_object(gathered, {"params": mine, "loss": record["loss"]})
    if rank == 0:
        Path(result).write_text(json.dumps(gathered))
    dist.destroy_process_group()


def test_two_rank_ddp_stays_in_sync(image_dir, tmp_path):
    """Two CPU processes on the gloo backend: different data and λ per rank, identical weights after every step."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = tmp_path / "result.json"
    mp.spawn(_rank_main, args=(port, str(image_dir), str(tmp_path / "run"), str(result)), nprocs=2, join=True)
    rank0, rank1 = json.loads(result.read_text())
    assert rank0["params"] == rank1["params"]  # bit-identical weights, quantiles included
    assert rank0["loss"] != rank1["loss"]  # but each rank saw its own patches and λ
    assert torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)["step"] == 3


def test_sigterm_and_ignored_sigint_end_with_a_checkpoint(image_dir, tmp_path):
    """A run started in the background (SIGINT inherited as ignored) still stops cleanly on SIGINT and on SIGTERM."""
    import signal
    import subprocess
    import sys
    import time

    for signum in (signal.SIGINT, signal.SIGTERM):
        run_dir = tmp_path / signum.name
        args = [sys.executable, "-m", "yotocodec", "train", "--data", str(image_dir), "--run-dir", str(run_dir),
                "--N", "16", "--M", "16", "--batch-size", "2", "--patch-size", "64", "--steps", "100000"]  # fmt: skip
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
        log = run_dir / LOG_NAME
        deadline = time.monotonic() + 600  # generous: CI may share the machine with a training run
        while not (log.exists() and log.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.5)  # wait until it is really training
        assert log.exists() and log.stat().st_size, f"{signum.name}: no training step logged in 10 minutes"
        logged = json.loads(log.read_text().splitlines()[0])["step"]
        proc.send_signal(signum)
        proc.wait(timeout=120)
        state = torch.load(run_dir / CHECKPOINT_NAME, weights_only=False)
        assert state["step"] >= logged, signum.name  # nothing logged before the signal is lost


def test_seed_fixes_the_initial_weights(image_dir, tmp_path):
    """Two fresh runs with the same seed start (and, after one step, stay) identical."""
    first, _ = train(tiny_config(image_dir, tmp_path / "a", steps=1, val_dir=None), progress=False)
    second, _ = train(tiny_config(image_dir, tmp_path / "b", steps=1, val_dir=None), progress=False)
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


def test_the_callers_signal_handlers_come_back_when_training_returns(image_dir, tmp_path):
    """train() is a library call: its SIGINT/SIGTERM handling must not outlive the run (a later SIGTERM to the
    caller, e.g. a test runner, would otherwise surface as a KeyboardInterrupt in unrelated code)."""
    import signal

    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not called")

    before = {signum: signal.signal(signum, mine) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        train(tiny_config(image_dir, tmp_path / "run", steps=1, val_dir=None), progress=False)
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_a_copied_run_resumes_in_its_new_place_with_a_new_learning_rate(image_dir, tmp_path):
    import shutil

    common = ["--data", str(image_dir), "--batch-size", "2", "--patch-size", "64"]
    first = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path / "a"), "--N", "16", "--M", "16",
                                      "--steps", "2", *common])  # fmt: skip
    assert first.exit_code == 0, first.output
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    before = (tmp_path / "a" / CHECKPOINT_NAME).read_bytes()
    run = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path / "b"), "--resume", "--lr", "1e-4"])
    assert run.exit_code == 0, run.output
    assert (tmp_path / "a" / CHECKPOINT_NAME).read_bytes() == before  # the original run is untouched
    saved = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=False)["config"]
    assert (saved["run_dir"], saved["lr"], saved["model"]["N"]) == (str(tmp_path / "b"), 1e-4, 16)
    assert saved["lambda_weighting"] == 0.5  # not given: kept from the run


def test_a_resumed_run_can_train_on_other_crops(image_dir, tmp_path):
    common = ["--data", str(image_dir), "--run-dir", str(tmp_path)]
    first = CliRunner().invoke(main, ["train", *common, "--N", "16", "--M", "16", "--steps", "2", "--batch-size", "4",
                                      "--patch-size", "64"])  # fmt: skip
    assert first.exit_code == 0, first.output
    run = CliRunner().invoke(main, ["train", *common, "--resume", "--steps", "3", "--batch-size", "1",
                                    "--patch-size", "128", "--detail-candidates", "2"])  # fmt: skip
    assert run.exit_code == 0, run.output
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert (saved["step"], saved["config"]["batch_size"], saved["config"]["patch_size"]) == (3, 1, 128)
    assert saved["config"]["detail_candidates"] == 2


def test_a_resumed_run_can_add_a_context_model_keeping_its_optimiser_state(image_dir, tmp_path):
    common = ["--data", str(image_dir), "--run-dir", str(tmp_path), "--batch-size", "2", "--patch-size", "64"]
    first = CliRunner().invoke(main, ["train", *common, "--N", "16", "--M", "16", "--steps", "2", "--ema-decay", "0.9",
                                      "--film-lr-factor", "0.5"])  # fmt: skip
    assert first.exit_code == 0, first.output
    before = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    run = CliRunner().invoke(main, ["train", *common, "--resume", "--steps", "4", "--context", "checkerboard"])
    assert run.exit_code == 0, run.output
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert (saved["step"], saved["config"]["model"]["context"]) == (4, "checkerboard")
    assert any(name.startswith("context.") for name in saved["ema"])
    groups = [len(g["params"]) for g in saved["optimizer"]["param_groups"]]
    assert groups[0] == len(before["optimizer"]["param_groups"][0]["params"]) + 6  # conv, two 1×1 layers
    assert groups[1] == len(before["optimizer"]["param_groups"][1]["params"])  # the conditioning's group
    faster = CliRunner().invoke(main, ["train", *common, "--resume", "--steps", "5", "--context-lr-factor", "10"])
    assert faster.exit_code == 0, faster.output
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    groups = saved["optimizer"]["param_groups"]
    sizes_before = [len(g["params"]) for g in before["optimizer"]["param_groups"]]
    assert [len(g["params"]) for g in groups] == [*sizes_before, 6]  # the context's 6 moved to a group of their own
    assert [g["lr_factor"] for g in groups] == [1.0, 0.5, 10.0] and saved["config"]["context_lr_factor"] == 10
    assert all(len(saved["optimizer"]["state"][i]) for i in groups[2]["params"])  # the moved group kept its moments
    again = CliRunner().invoke(main, ["train", *common, "--resume", "--context", "none"])
    assert again.exit_code != 0 and "add a context model" in again.output


def test_a_run_from_a_model_without_a_context_can_add_one(image_dir, tmp_path):
    start = tmp_path / "start.pt"
    save_weights(YotoHyperprior(TINY), start)
    cfg = tiny_config(image_dir, tmp_path / "run", model=replace(TINY, context="checkerboard"), init_from=str(start),
                      steps=2)  # fmt: skip
    model, _ = train(cfg, progress=False)
    assert model.config.context == "checkerboard" and model.context is not None


def test_moving_the_lambda_range_keeps_what_the_model_computes():
    torch.manual_seed(0)
    model = YotoHyperprior(TINY).eval()
    for layer in model.modules():  # FiLM heads start at zero: give them something to carry
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=0.05)
    x, lmbda = torch.rand(3, 3, 64, 64), torch.tensor([0.002, 0.03, 0.2])
    before_emb, before = model.embed(lmbda), model(x, lmbda)["x_hat"]
    assert not torch.allclose(before_emb[0], before_emb[2]) and before.abs().max() < 100
    set_lambda_range(model, 0.0005, 0.8)
    assert (model.config.lmbda_min, model.config.lmbda_max) == (0.0005, 0.8)
    assert torch.allclose(model.embed(lmbda), before_emb, atol=1e-5)
    assert torch.allclose(model(x, lmbda)["x_hat"], before, rtol=1e-4, atol=1e-5)
    assert model.config.normalise(torch.tensor([0.0005, 0.8])).tolist() == pytest.approx([-1, 1])
    with pytest.raises(ValueError, match="single λ"):
        set_lambda_range(model, 0.01, 0.01)

    fixed = YotoHyperprior(ModelConfig(N=16, M=16, lmbda_min=0.01, lmbda_max=0.01))
    one = fixed.embed(torch.tensor([0.01]))
    set_lambda_range(fixed, 0.001, 0.1)  # a per-λ model becomes a conditional one that starts the same everywhere
    assert torch.allclose(fixed.embed(torch.tensor([0.001, 0.01, 0.1])), one.expand(3, -1), atol=1e-6)


def test_ste_decoder_input_is_the_rounded_latent_and_the_rate_keeps_the_noise():
    torch.manual_seed(0)
    model = YotoHyperprior(TINY).train()
    x, lmbda = torch.rand(2, 3, 64, 64), torch.tensor([0.002, 0.2])
    torch.manual_seed(1)
    noisy = model(x, lmbda)
    torch.manual_seed(1)
    ste = model(x, lmbda, ste=True)
    torch.manual_seed(1)  # the same draw of the hyper-latent's noise, then the decoder input by hand
    emb = model.embed(lmbda)
    y = model.g_a(x, emb)
    z_hat, _ = model.entropy_bottleneck(model.h_a(model.hyper_input(y), emb))
    _, means = model.gaussian_params(z_hat, emb)
    expected = model.g_s(torch.round(y - means) + means, emb)
    assert torch.allclose(ste["x_hat"], expected, atol=1e-6)
    assert not torch.allclose(ste["x_hat"], noisy["x_hat"], atol=1e-4)
    for key in ("y", "z"):
        assert torch.equal(ste["likelihoods"][key], noisy["likelihoods"][key])
    ((ste["x_hat"] - x) ** 2).mean().backward()  # the distortion still trains the analysis transform
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.g_a.parameters())
    model.eval()
    assert torch.equal(model(x, lmbda, ste=True)["x_hat"], model(x, lmbda)["x_hat"])  # inference always rounds


def test_a_run_trains_with_the_ste_decoder_input_and_can_switch_back_on_resume(image_dir, tmp_path):
    common = ["--data", str(image_dir), "--batch-size", "2", "--patch-size", "64"]
    first = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--N", "16", "--M", "16", "--steps", "2",
                                      "--decoder-quantizer", "ste", *common])  # fmt: skip
    assert first.exit_code == 0, first.output
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert (saved["step"], saved["config"]["decoder_quantizer"]) == (2, "ste")
    log = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert log and all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    run = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--resume", "--decoder-quantizer", "noise"])
    assert run.exit_code == 0, run.output
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)["config"]["decoder_quantizer"] == "noise"


def test_a_compiled_run_saves_the_plain_model_and_resumes_without_compiling(image_dir, tmp_path):
    common = ["--data", str(image_dir), "--batch-size", "2", "--patch-size", "64"]
    first = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--N", "16", "--M", "16", "--steps", "2",
                                      "--decoder-quantizer", "ste", "--compile", *common])  # fmt: skip
    assert first.exit_code == 0, first.output
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert (saved["step"], saved["config"]["compile"]) == (2, True)
    plain = YotoHyperprior(ModelConfig(**saved["config"]["model"])).state_dict()
    assert saved["model"].keys() == plain.keys()  # the model's own names, not torch.compile's wrapper
    log = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert log and all(np.isfinite(r["loss"]) and r["bpp"] > 0 for r in log if "loss" in r)
    run = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--resume", "--no-compile", "--steps", "3"])
    assert run.exit_code == 0, run.output
    resumed = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert (resumed["step"], resumed["config"]["compile"], resumed["config"]["steps"]) == (3, False, 3)
    # The compiled run's weights load into the plain model and train on: one more step changed them.
    assert any(not torch.equal(resumed["model"][k], saved["model"][k]) for k in saved["model"])


def test_a_resumed_run_can_widen_its_lambda_range(image_dir, tmp_path):
    common = ["--data", str(image_dir), "--batch-size", "2", "--patch-size", "64", "--val-dir", str(image_dir)]
    first = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--N", "16", "--M", "16", "--steps", "2",
                                      *common])  # fmt: skip
    assert first.exit_code == 0, first.output
    before = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    model = YotoHyperprior(ModelConfig(**before["config"]["model"]))
    model.load_state_dict(before["model"])
    embedding = model.embed(torch.tensor([0.0015, 0.2]))
    run = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--resume", "--lambda-max", "0.8",
                                    "--lambda-min", "0.0008", "--max-minutes", "0"])  # fmt: skip
    assert run.exit_code == 0, run.output
    after = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert after["step"] == 2 and after["config"]["model"]["lmbda_max"] == 0.8
    assert after["config"]["model"]["lmbda_min"] == 0.0008 and after["config"]["model"]["N"] == 16
    model = YotoHyperprior(ModelConfig(**after["config"]["model"]))
    model.load_state_dict(after["model"])
    assert torch.allclose(model.embed(torch.tensor([0.0015, 0.2])), embedding, atol=1e-5)  # same model, wider range

    export(tmp_path / CHECKPOINT_NAME, tmp_path / "wide.pt")  # a new run from it keeps its networks and range
    new = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path / "new"), "--init-from",
                                    str(tmp_path / "wide.pt"), "--steps", "1", *common])  # fmt: skip
    assert new.exit_code == 0, new.output
    saved = torch.load(tmp_path / "new" / CHECKPOINT_NAME, weights_only=False)["config"]["model"]
    assert (saved["N"], saved["lmbda_min"], saved["lmbda_max"]) == (16, 0.0008, 0.8)
    export(tmp_path / "new" / CHECKPOINT_NAME, tmp_path / "continued.pt")  # its training counts the starting model's
    assert yotocodec.load_model(tmp_path / "continued.pt").meta["steps"] == 2 + 1

    fixed = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path / "f"), "--N", "16", "--M", "16",
                                      "--fixed-lambda", "0.01", "--steps", "1", *common])  # fmt: skip
    assert fixed.exit_code == 0, fixed.output
    refused = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path / "f"), "--resume", "--lambda-max", "1"])
    assert refused.exit_code == 2 and "fixed-λ" in refused.output  # a malformed command line


def test_weight_average_is_kept_resumed_validated_and_exported(image_dir, tmp_path):
    """--ema-decay: after each step average ← d·average + (1 − d)·weights; it survives resume and `export --ema`."""
    ckpt = tmp_path / CHECKPOINT_NAME
    train(tiny_config(image_dir, tmp_path, steps=1, val_every=2), progress=False)
    start = torch.load(ckpt, weights_only=False)
    assert "ema" not in start  # off by default
    plain = CliRunner().invoke(main, ["export", str(ckpt), "-o", str(tmp_path / "x.pt"), "--ema"])
    assert plain.exit_code == 1 and "no weight average" in plain.output and not (tmp_path / "x.pt").exists()

    train(config_from_checkpoint(ckpt, ema_decay=0.75, steps=2), progress=False)  # switched on in a resumed run
    after = torch.load(ckpt, weights_only=False)
    names = dict(YotoHyperprior(TINY).named_parameters())
    for name in names:  # started from the step-1 weights, then one step of averaging
        expected = 0.75 * start["model"][name] + 0.25 * after["model"][name]
        assert torch.allclose(after["ema"][name], expected, atol=1e-6), name
    assert not torch.equal(after["ema"]["g_a.0.weight"], after["model"]["g_a.0.weight"])
    records = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert [len(r["val_ema"]) for r in records if "val_ema" in r] == [3]  # validated alongside the weights

    train(config_from_checkpoint(ckpt, steps=3), progress=False)
    final = torch.load(ckpt, weights_only=False)
    weight = "g_s.1.weight"
    expected = 0.75 * after["ema"][weight] + 0.25 * final["model"][weight]  # continued from the saved average
    assert torch.allclose(final["ema"][weight], expected, atol=1e-6)

    out = CliRunner().invoke(main, ["export", str(ckpt), "-o", str(tmp_path / "e.pt"), "--ema"])
    assert out.exit_code == 0, out.output
    model = yotocodec.load_model(tmp_path / "e.pt")
    assert model.meta["ema_decay"] == 0.75
    assert torch.allclose(model.state_dict()[weight].float(), final["ema"][weight].half().float())
    run = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--resume", "--ema-decay", "0.5"])
    assert run.exit_code == 0, run.output  # the decay may be changed for the rest of a run
    assert torch.load(ckpt, weights_only=False)["config"]["ema_decay"] == 0.5


def test_under_bf16_autocast_only_the_transforms_lose_precision():
    torch.manual_seed(0)
    model = YotoHyperprior(TINY).eval()
    x, lmbda = torch.rand(2, 3, 64, 64), torch.tensor([0.002, 0.2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, lmbda)
    assert out["x_hat"].dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in out["likelihoods"].values())  # the rate is computed in float32
    emb = model.embed(lmbda)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model.g_a(x, emb)
        z = model.h_a(model.hyper_input(y.float()), emb)
    assert y.dtype == torch.bfloat16  # ... the transforms did run in bfloat16
    # The entropy models saw float32 inputs: the hyper-latent's likelihoods are exactly those of float32 z.
    _, z_likelihoods = model.entropy_bottleneck(z.float())
    assert torch.equal(out["likelihoods"]["z"], z_likelihoods)
    reference = model(x, lmbda)
    assert torch.allclose(out["x_hat"], reference["x_hat"], atol=0.05)  # close to, not equal to, float32
    assert not torch.equal(out["x_hat"], reference["x_hat"])


def test_a_bf16_run_trains_records_its_precision_and_resumes_in_fp32(image_dir, tmp_path):
    common = ["--data", str(image_dir), "--batch-size", "2", "--patch-size", "64"]
    first = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--N", "16", "--M", "16", "--steps", "2",
                                      "--precision", "bf16", *common])  # fmt: skip
    assert first.exit_code == 0, first.output
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert (saved["step"], saved["config"]["precision"]) == (2, "bf16")
    assert all(v.dtype == torch.float32 for v in saved["model"].values() if v.is_floating_point())  # master weights
    log = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert log and all(np.isfinite(r["loss"]) and r["bpp"] > 0 for r in log if "loss" in r)
    run = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--resume", "--precision", "fp32",
                                    "--steps", "3"])  # fmt: skip
    assert run.exit_code == 0, run.output
    resumed = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert (resumed["step"], resumed["config"]["precision"]) == (3, "fp32")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_without_hardware_support_is_warned_about(image_dir, tmp_path, monkeypatch, native):
    monkeypatch.setattr(loop, "bf16_is_native", lambda device: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(replace(tiny_config(image_dir, tmp_path, steps=1), precision="bf16"), progress=False)
    slow = [w for w in caught if "emulated" in str(w.message)]
    assert len(slow) == (0 if native else 1)


def test_a_corrupt_checkpoint_is_refused_in_one_line(tmp_path):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    for args in (["export", str(tmp_path / CHECKPOINT_NAME), "-o", str(tmp_path / "w.pt")],
                 ["train", "--run-dir", str(tmp_path), "--resume"]):  # fmt: skip
        run = CliRunner().invoke(main, args)
        assert run.exit_code == 1 and run.exception.__class__ is SystemExit, run.output
        assert run.output == f"Error: {tmp_path / CHECKPOINT_NAME}: not a training checkpoint (UnpicklingError)\n"
    assert not (tmp_path / "w.pt").exists()


def test_a_checkpoint_from_a_newer_version_is_refused_in_one_line(image_dir, tmp_path):
    train(tiny_config(image_dir, tmp_path, steps=1), progress=False)
    checkpoint = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    checkpoint["config"]["model"]["new_setting"] = 1
    torch.save(checkpoint, tmp_path / CHECKPOINT_NAME)
    for args in (["train", "--run-dir", str(tmp_path), "--resume"],
                 ["export", str(tmp_path / CHECKPOINT_NAME), "-o", str(tmp_path / "w.pt")]):  # fmt: skip
        run = CliRunner().invoke(main, args)
        assert run.exit_code == 1 and "written by a newer yotocodec" in run.output, run.output
        assert not (tmp_path / "w.pt").exists()


def switched_off_model(off: list[int]) -> YotoHyperprior:
    """A tiny model whose latent FiLM gives the channels ``off`` a scale of e⁻¹² at every λ, the others ~e⁻¹."""
    torch.manual_seed(0)
    model = YotoHyperprior(TINY)
    with torch.no_grad():
        for film in (model.g_a[-1], model.g_s[0]):
            film.head.weight.normal_(0, 0.1)
            film.head.bias[: TINY.M].normal_(-1, 0.3)
        model.g_a[-1].head.weight[off] = 0
        model.g_a[-1].head.bias[off] = -12
    return model


def test_revival_reopens_only_the_switched_off_channels_at_the_live_median_scale():
    assert not revive_latent_channels(YotoHyperprior(TINY)).any()  # an untrained model has every channel open
    model = switched_off_model([0, 3, 5])
    middle = torch.tensor([(TINY.lmbda_min * TINY.lmbda_max) ** 0.5])
    lmbdas = torch.tensor([TINY.lmbda_min, 0.02, TINY.lmbda_max])

    def scales(film: torch.nn.Module, lmbda: torch.Tensor) -> torch.Tensor:
        return torch.exp(film.head(model.embed(lmbda)).chunk(2, dim=1)[0]).detach()

    before = {name: scales(film, lmbdas) for name, film in (("g_a", model.g_a[-1]), ("g_s", model.g_s[0]))}
    live = torch.tensor([i not in (0, 3, 5) for i in range(TINY.M)])
    medians = {name: scales(film, middle)[0, live].median() for name, film in
               (("g_a", model.g_a[-1]), ("g_s", model.g_s[0]))}  # fmt: skip
    off = revive_latent_channels(model)
    assert off.nonzero()[:, 0].tolist() == [0, 3, 5]
    for name, film in (("g_a", model.g_a[-1]), ("g_s", model.g_s[0])):
        after = scales(film, lmbdas)
        assert torch.allclose(after[:, off], medians[name].expand(3, 3), rtol=1e-5)  # the same at every λ
        assert torch.equal(after[:, ~off], before[name][:, ~off])


def partly_closed_model() -> YotoHyperprior:
    """:func:`switched_off_model` with channel 2 off at every λ, channel 7 open (e⁻¹) at λ_min and off at λ_max."""
    model = switched_off_model([2])
    with torch.no_grad():
        emb = model.embed(torch.exp(torch.linspace(math.log(TINY.lmbda_min), math.log(TINY.lmbda_max), 33)))
        target = torch.linspace(-1, -12, 33)[:, None].double()
        fit = torch.linalg.lstsq(torch.cat([emb, torch.ones(33, 1)], dim=1).double(), target).solution
        model.g_a[-1].head.weight[7], model.g_a[-1].head.bias[7] = fit[:-1, 0].float(), fit[-1, 0].float()
    return model


def test_partly_closed_channels_are_reopened_where_they_are_off_and_the_open_ones_are_untouched():
    model = partly_closed_model()
    lmbdas = torch.exp(torch.linspace(math.log(TINY.lmbda_min), math.log(TINY.lmbda_max), 33))
    assert (latent_scales(model, lmbdas)[:, 7] < LATENT_OFF_SCALE).any()
    films = (model.g_a[-1], model.g_s[0])
    before = [(film.head.weight.clone(), film.head.bias.clone()) for film in films]
    assert revive_latent_channels(copy.deepcopy(model)).nonzero()[:, 0].tolist() == [2]  # only the one off everywhere
    revived = revive_partly_closed_channels(model)
    assert revived.nonzero()[:, 0].tolist() == [2, 7]
    assert not (latent_scales(model, lmbdas) < LATENT_OFF_SCALE).any()
    kept = torch.cat([~revived, torch.ones_like(revived)])  # the other channels' scale rows and every shift row
    for film, (weight, bias) in zip(films, before, strict=True):
        assert torch.equal(film.head.weight[kept], weight[kept]) and torch.equal(film.head.bias[kept], bias[kept])


def test_rate_gradient_scales_only_the_rates_own_gradient_into_the_latent():
    torch.manual_seed(0)
    model = YotoHyperprior(TINY).train()
    x, lmbda = torch.rand(2, 3, 64, 64), torch.tensor([0.002, 0.2])
    mask = torch.arange(TINY.M) < 5
    latents = []

    def keep(module: torch.nn.Module, inputs: tuple, y: torch.Tensor) -> None:
        y.retain_grad()
        latents.append(y)

    model.g_a.register_forward_hook(keep)

    def run(factor: float | None, ste: bool, rate: bool) -> tuple[dict, torch.Tensor]:
        torch.manual_seed(1)
        r = None if factor is None else torch.where(mask, factor, 1.0)
        out = model(x, lmbda, ste=ste, rate_gradient=r)
        loss = ((out["x_hat"] - x) ** 2).mean() * 100
        if rate:
            loss = loss + sum(-torch.log2(v).sum() for v in out["likelihoods"].values()) / x[0, 0].numel()
        loss.backward()
        return out, latents[-1].grad

    for ste in (True, False):
        (o0, g0), (_, g5), (o1, g1) = (run(f, ste, rate=True) for f in (0.0, 0.5, 1.0))
        for key in ("y", "z"):
            assert torch.equal(o0["likelihoods"][key], o1["likelihoods"][key])
        assert torch.equal(o0["x_hat"], o1["x_hat"])
        assert torch.equal(g0[:, ~mask], g1[:, ~mask])  # other channels: untouched
        assert not torch.allclose(g0[:, mask], g1[:, mask])
        assert torch.allclose(g5, (g0 + g1) / 2, atol=1e-6)  # linear in the factor
        # without a rate term nothing changes: the synthesis's gradient reaches the revived channels in full
        assert torch.allclose(run(0.0, ste, rate=False)[1], run(None, ste, rate=False)[1], atol=1e-7)


def test_a_run_from_a_model_with_switched_off_channels_revives_and_phases_in_their_rate(image_dir, tmp_path):
    weights = tmp_path / "start.pt"
    save_weights(switched_off_model([1, 2]), weights)
    cfg = tiny_config(image_dir, tmp_path / "run", init_from=str(weights), revive_steps=4)
    mask = torch.arange(TINY.M) < 3
    assert [None if r is None else r[1].item() for r in (rate_gradient(cfg, mask, s) for s in range(5))] == [
        0.0, 0.0, 0.0, 0.5, None,
    ]  # fmt: skip
    assert rate_gradient(cfg, mask, 3)[5] == 1.0 and rate_gradient(replace(cfg, revive_steps=0), mask, 0) is None
    model, _ = train(cfg, progress=False)
    ckpt = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)
    assert ckpt["revived"].nonzero()[:, 0].tolist() == [1, 2]
    first = json.loads((tmp_path / "run" / LOG_NAME).read_text().splitlines()[0])
    assert first == {"step": 0, "revived_channels": [1, 2]}
    assert (latent_scales(model, torch.tensor([0.02]))[0, [1, 2]] > 1e-2).all()
    train(config_from_checkpoint(tmp_path / "run" / CHECKPOINT_NAME, steps=8), progress=False)
    assert torch.equal(torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)["revived"], ckpt["revived"])


def test_a_run_with_revive_partly_closed_gives_the_rate_holiday_to_the_partly_closed_channels(image_dir, tmp_path):
    weights = tmp_path / "start.pt"
    save_weights(partly_closed_model(), weights)
    cfg = tiny_config(image_dir, tmp_path / "run", init_from=str(weights), revive_steps=4, revive_partly_closed=True,
                      steps=1)  # fmt: skip
    train(cfg, progress=False)
    ckpt = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)
    assert ckpt["revived"].nonzero()[:, 0].tolist() == [2, 7]


def test_revive_channels_is_refused_without_a_starting_model_and_on_resume(image_dir, tmp_path):
    common = ["--data", str(image_dir), "--batch-size", "2", "--patch-size", "64", "--N", "16", "--M", "16"]
    run = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--revive-channels", "100", *common])
    assert run.exit_code == 2 and "needs --init-from" in run.output
    assert CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--steps", "1", *common]).exit_code == 0
    run = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--resume", "--revive-channels", "100"])
    assert run.exit_code == 2 and "a resumed run keeps its own" in run.output
    run = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path), "--resume", "--revive-partly-closed"])
    assert run.exit_code == 2 and "a resumed run keeps its own" in run.output
    weights = tmp_path / "start.pt"
    save_weights(switched_off_model([1]), weights)
    args = ["train", "--run-dir", str(tmp_path / "new"), "--init-from", str(weights), "--revive-partly-closed"]
    run = CliRunner().invoke(main, [*args, *common])
    assert run.exit_code == 2 and "give both" in run.output


def test_a_run_from_an_exp_film_model_can_train_it_with_linear_scales(image_dir, tmp_path):
    weights = tmp_path / "start.pt"
    save_weights(switched_off_model([1]), weights)
    args = ["train", "--data", str(image_dir), "--run-dir", str(tmp_path / "run"), "--init-from", str(weights),
            "--film", "linear", "--steps", "1", "--batch-size", "2", "--patch-size", "64"]  # fmt: skip
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    ckpt = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)
    assert ckpt["config"]["model"]["film"] == "linear"
    assert yotocodec.load_model(weights).config.film == "exp"


def test_a_widened_run_with_frozen_inherited_weights_trains_only_the_new_channels(image_dir, tmp_path):
    weights = tmp_path / "start.pt"
    start = switched_off_model([1])
    save_weights(start, weights)
    wide_config = replace(TINY, N=24, M=20)
    cfg = tiny_config(image_dir, tmp_path / "run", init_from=str(weights), model=wide_config, freeze_inherited=True,
                      revive_steps=4, ema_decay=0.9, steps=4)  # fmt: skip
    before, _ = widen(start, 24, 20)
    model, _ = train(cfg, progress=False)
    ckpt = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)
    assert ckpt["revived"].nonzero()[:, 0].tolist() == list(range(16, 20))  # the inherited channel 1 stays off
    trained, start_values = dict(model.named_parameters()), dict(before.named_parameters())
    moved = 0
    for name, keep in ckpt["frozen"].items():
        if name.endswith(".quantiles"):  # the entropy bottleneck's own auxiliary fit is not frozen
            continue
        assert torch.equal(trained[name][keep], start_values[name][keep]), name
        moved += int((trained[name][~keep] != start_values[name][~keep]).sum())
    assert moved > 0
    assert not ckpt["frozen"]["cond.0.weight"].logical_not().any()  # the λ embedding is all inherited
    train(config_from_checkpoint(tmp_path / "run" / CHECKPOINT_NAME, steps=6), progress=False)
    resumed = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)
    for name, keep in ckpt["frozen"].items():
        if not name.endswith(".quantiles"):
            assert torch.equal(resumed["model"][name][keep], start_values[name][keep]), name


def test_freeze_inherited_needs_a_wider_model_from_a_starting_one(image_dir, tmp_path):
    weights = tmp_path / "start.pt"
    save_weights(switched_off_model([1]), weights)
    common = ["--data", str(image_dir), "--batch-size", "2", "--patch-size", "64", "--steps", "1"]
    run = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path / "a"), "--freeze-inherited", *common])
    assert run.exit_code == 2 and "needs --init-from" in run.output
    run = CliRunner().invoke(
        main, ["train", "--run-dir", str(tmp_path / "b"), "--freeze-inherited", "--init-from", str(weights), *common]
    )
    assert run.exit_code == 1 and "larger --N/--M" in run.output
    assert CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path / "c"), *common]).exit_code == 0
    run = CliRunner().invoke(main, ["train", "--run-dir", str(tmp_path / "c"), "--resume", "--freeze-inherited"])
    assert run.exit_code == 2 and "a resumed run keeps its own" in run.output
