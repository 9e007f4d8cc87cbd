"""Loss-conditional training (and its fixed-λ special case), checkpointing, validation and export.

Every example gets its own λ drawn log-uniformly from the model's range, the model is conditioned on it, and the loss
is that example's own λ·255²·MSE + bpp.  ``fixed_lambda`` trains an ordinary single-λ model with the same code.
Runs are made to be killed: checkpoints are written atomically every few minutes and ``resume`` continues the same
run (model, optimisers, step, RNG state).  Under ``torchrun`` each rank trains on its own shard with its own λ draws
and DistributedDataParallel keeps the weights identical.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from compressai.ops import compute_padding
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .data import PatchSampler, image_to_tensor, list_images, load_rgb
from .metrics import bpp_from_likelihoods, mse_per_example
from .model import ModelConfig, YotoHyperprior, load_weights, save_weights
from .surgery import widen

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"


PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    data: str
    run_dir: str
    model: ModelConfig = field(default_factory=ModelConfig)
    fixed_lambda: float | None = None
    batch_size: int = 8
    patch_size: int = 128
    lr: float = 1e-3
    aux_lr: float = 1e-3
    warmup_steps: int = 500
    steps: int = 300_000  # planned length: the cosine decay to lr/100 runs over its last `decay_fraction`
    decay_fraction: float = 0.2
    clip_norm: float = 1.0
    lambda_weighting: float = 0.5  # p in the per-example weight (λ_ref/λ)^p; see loss_weights
    seed: int = 0
    checkpoint_minutes: float = 5.0
    log_every: int = 50
    val_dir: str | None = None
    val_every: int = 2500
    val_images: int = 24
    max_minutes: float | None = None
    init_from: str | None = None  # start a new run from a weights file (e.g. the shipped model)
    ema_decay: float = 0.0  # > 0: also keep an exponential moving average of the weights (see _average_into)
    decoder_quantizer: str = "noise"  # "ste": g_s trains on the rounded latent (YotoHyperprior.forward)
    compile: bool = False  # run the training forward and backward through torch.compile (see train)
    precision: str = "fp32"  # one of PRECISIONS; "bf16": the transforms run under bfloat16 autocast (see train)
    revive_steps: int = 0  # > 0 with init_from: reopen switched-off latent channels (see rate_gradient)

    def lambda_range(self) -> tuple[float, float]:
        if self.fixed_lambda is not None:
            return self.fixed_lambda, self.fixed_lambda
        return self.model.lmbda_min, self.model.lmbda_max


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, constant, then a cosine decay to 1 % over the last part of the planned steps."""
    lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    decay_start = cfg.steps * (1 - cfg.decay_fraction)
    if step > decay_start:
        t = min(1.0, (step - decay_start) / max(1.0, cfg.steps - decay_start))
        lr *= 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))
    return lr


def sample_lambdas(cfg: TrainConfig, n: int, rng: np.random.Generator) -> torch.Tensor:
    """λ per example, log-uniform over the training range."""
    lo, hi = cfg.lambda_range()
    return torch.from_numpy(np.exp(rng.uniform(math.log(lo), math.log(hi), n))).float()


def loss_weights(cfg: TrainConfig, lmbda: torch.Tensor) -> torch.Tensor:
    """Per-example weights (λ_ref/λ)^p, λ_ref the geometric middle of the range.

    λ·255²·MSE + bpp grows with λ, so without weights (p = 0) the largest λ dominate the gradient of the shared
    weights and the low-rate end learns slowly.  A positive weight per λ leaves each λ's optimum where it is; p = 0.5
    roughly evens out the loss sizes across the range (measured: −3 to −9 % rate at equal or better PSNR on Kodak after
    2,100 paired steps, docs/experiments.md).  A fixed-λ run always gets weight 1.
    """
    lo, hi = cfg.lambda_range()
    return (math.sqrt(lo * hi) / lmbda) ** cfg.lambda_weighting


def rate_gradient(cfg: TrainConfig, revived: torch.Tensor | None, step: int) -> torch.Tensor | None:
    """Per latent channel, the factor on the rate's gradient into y: 0 on revived channels for the first half of
    ``cfg.revive_steps``, then rising linearly to 1 (None, ordinary training, from there on and without revived ones).

    Reopened channels first carry noise; charged for their bits at once, the rate term closes them again before the
    synthesis learns to use them (measured: in 1,140 steps, docs/experiments.md).
    """
    if step >= cfg.revive_steps or revived is None or not revived.any():  # the step test first: every step asks
        return None
    half = cfg.revive_steps / 2
    return torch.where(revived, min(1.0, max(0.0, step / half - 1)), 1.0)


@torch.no_grad()
def validate(model: YotoHyperprior, images: list[np.ndarray], lambdas: list[float], device: torch.device) -> list:
    """Mean estimated bpp (from likelihoods, not real files) and PSNR over ``images`` at each λ."""
    model.eval()
    results = []
    for lmbda in lambdas:
        bpps, psnrs = [], []
        for img in images:
            x = image_to_tensor(img).to(device)
            h, w = x.shape[-2:]
            pad, unpad = compute_padding(h, w, min_div=model.downsampling_factor)
            out = model(F.pad(x, pad, mode="replicate"), torch.tensor([lmbda], device=device))
            x_hat = F.pad(out["x_hat"], unpad).clamp(0, 1)
            bpps.append(float(bpp_from_likelihoods(out["likelihoods"], h * w)))
            psnrs.append(float(-10 * torch.log10(mse_per_example(x, torch.round(x_hat * 255) / 255))))
        results.append({"lmbda": lmbda, "bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs))})
    model.train()
    return results


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _same_network(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether weights of ``a`` fit ``b``: the same networks, perhaps over another λ range."""
    return replace(a, lmbda_min=b.lmbda_min, lmbda_max=b.lmbda_max) == b


def _starting_model(init: YotoHyperprior, cfg: TrainConfig) -> tuple[YotoHyperprior, torch.Tensor]:
    """The model a run starts from ``--init-from``: the same, or widened to more channels (see surgery.widen).

    Returns it with the mask of its new latent channels (none unless widened).
    """
    if _same_network(init.config, cfg.model):
        return init.train(), torch.zeros(init.config.M, dtype=torch.bool)
    if _same_network(replace(init.config, N=cfg.model.N, M=cfg.model.M), cfg.model):
        if cfg.model.N >= init.config.N and cfg.model.M >= init.config.M:
            return widen(init, cfg.model.N, cfg.model.M, seed=cfg.seed)
    raise ValueError(f"{cfg.init_from} has configuration {init.config}, not {cfg.model}")


def _main_parameters(model: YotoHyperprior) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]


def _aux_parameters(model: YotoHyperprior) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if n.endswith(".quantiles")]


def bf16_is_native(device: torch.device) -> bool:
    """Whether bfloat16 convolutions run in hardware: on GPUs, and on CPUs with AVX512-BF16 or AMX (oneDNN's test).

    Elsewhere they are emulated: on a 2-core AMD EPYC with only AVX2 a compiled step took 11 s instead of 1.1 s.
    """
    return device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def train(cfg: TrainConfig, progress: bool = True) -> tuple[YotoHyperprior, dict]:
    """Run (or resume) training until ``cfg.steps`` or ``cfg.max_minutes``; returns the model and last log record."""
    rank, world, local_rank = _distributed()
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":  # TF32 convolutions are safe here; the entropy models stay in float32
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    is_main = rank == 0
    if cfg.precision == "bf16" and not bf16_is_native(device) and is_main:
        warnings.warn(
            "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX), so --precision bf16 is emulated and "
            "several times slower than fp32",
            RuntimeWarning,
            stacklevel=2,
        )
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT_NAME

    torch.manual_seed(cfg.seed + rank)  # seeds the initial weights; a resumed run restores its saved state below
    ckpt = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    init, init_meta = load_weights(cfg.init_from) if ckpt is None and cfg.init_from else (None, {})
    # The training behind a starting model counts towards the run's own (its exports report the sum).
    before = (
        ckpt.get("before", {})
        if ckpt is not None
        else {"steps": init_meta.get("steps", 0), "train_hours": init_meta.get("train_hours", 0.0)}
    )
    if ckpt is not None:
        saved = ModelConfig.from_dict(ckpt["config"]["model"], ckpt_path)
        if not _same_network(saved, cfg.model) or ckpt["config"]["fixed_lambda"] != cfg.fixed_lambda:
            raise ValueError(f"{ckpt_path} belongs to a run with another model or λ; use another --run-dir")
        model = YotoHyperprior(saved)
        model.load_state_dict(ckpt["model"])
    elif init is not None:
        model, added = _starting_model(init, cfg)
    else:
        model = YotoHyperprior(cfg.model)
    model.set_lambda_range(cfg.model.lmbda_min, cfg.model.lmbda_max)  # a resumed run may widen its range
    revived = ckpt.get("revived") if ckpt is not None else None
    if ckpt is None and init is not None and cfg.revive_steps:
        revived = model.revive_latent_channels() | added
    # Channels-last convolutions: measured 0.241 s against 0.265 s a compiled step on the 2-core CPU (batch 8 of 128²).
    model = model.to(device, memory_format=torch.channels_last)
    ema = _ema_model(model, ckpt).to(device, memory_format=torch.channels_last) if cfg.ema_decay and is_main else None
    main_parameters = _main_parameters(model)
    optimizer = _adam(main_parameters, cfg.lr)
    aux_optimizer = _adam(_aux_parameters(model), cfg.aux_lr)
    step, wall = 0, 0.0
    rng = np.random.default_rng([cfg.seed, rank])
    if ckpt is not None:
        for opt, key in ((optimizer, "optimizer"), (aux_optimizer, "aux_optimizer")):
            opt.load_state_dict(ckpt[key])
            for group in opt.param_groups:  # loading restores the saved flags; older runs saved the unfused ones
                group.update(fused=True, foreach=None)
            _match_state_layout(opt)
        step, wall = ckpt["step"], ckpt["wall_seconds"]
        if world == 1:
            rng.bit_generator.state = ckpt["numpy_rng"]
            torch.set_rng_state(ckpt["torch_rng"])
            random.setstate(ckpt["python_rng"])
        else:  # other ranks' streams were not saved: derive fresh, distinct ones
            rng = np.random.default_rng([cfg.seed, rank, step])

    sampler = PatchSampler(
        cfg.data, cfg.patch_size, rank=rank, world_size=world, progress=progress and is_main, device=device
    )
    val_images = []
    if is_main and cfg.val_dir and Path(cfg.val_dir).is_dir():
        val_images = [load_rgb(p) for p in list_images(cfg.val_dir)[: cfg.val_images]]
    lo, hi = cfg.lambda_range()
    val_lambdas = sorted({lo, math.sqrt(lo * hi), hi})

    net = model
    if world > 1:
        net = DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None, find_unused_parameters=True
        )
    # bfloat16 transforms (the entropy models stay in float32, YotoHyperprior.forward; validation in float32): on
    # the 2-core Intel Xeon with AMX a step took 0.17 s against 0.37 s.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    if cfg.compile:  # fused kernels: measured 1.17x the steps/s on the 2-core CPU, after about a minute of compiling
        net = torch.compile(net)

    def save_checkpoint() -> None:
        if not is_main:
            return
        _atomic_save(
            {
                "config": asdict(cfg),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "aux_optimizer": aux_optimizer.state_dict(),
                **({"ema": ema.state_dict()} if ema is not None else {}),
                "step": step,
                "wall_seconds": wall,
                "before": before,
                **({"revived": revived} if revived is not None else {}),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(),
            },
            ckpt_path,
        )

    _stop_cleanly_on_signals()
    log = (run_dir / LOG_NAME).open("a") if is_main else None
    if log and ckpt is None and revived is not None:
        log.write(json.dumps({"step": step, "revived_channels": revived.nonzero()[:, 0].tolist()}) + "\n")
    deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    last_ckpt = time.monotonic()
    sums = {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "aux": 0.0}
    count, record = 0, {}
    bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and is_main), dynamic_ncols=True)
    model.train()
    try:
        while step < cfg.steps and time.monotonic() < deadline:
            t0 = time.monotonic()
            x = sampler.sample(cfg.batch_size, rng).to(device, memory_format=torch.channels_last)
            lmbda = sample_lambdas(cfg, cfg.batch_size, rng).to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step)

            with autocast:
                factor = rate_gradient(cfg, revived, step)
                factor = None if factor is None else factor.to(device)
                out = net(x, lmbda, ste=cfg.decoder_quantizer == "ste", rate_gradient=factor)
            mse = mse_per_example(x, out["x_hat"])
            bpp = bpp_from_likelihoods(out["likelihoods"], x.shape[-2] * x.shape[-1])
            loss = (loss_weights(cfg, lmbda) * (lmbda * 255**2 * mse + bpp)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(main_parameters, cfg.clip_norm)
            optimizer.step()

            aux_optimizer.zero_grad(set_to_none=True)
            aux_loss = model.aux_loss()
            aux_loss.backward()
            if world > 1:  # the quantiles are outside DDP's forward graph: average their gradients by hand
                for p in _aux_parameters(model):
                    dist.all_reduce(p.grad)
                    p.grad /= world
            aux_optimizer.step()
            if ema is not None:
                _average_into(ema, model, cfg.ema_decay)

            step += 1
            wall += time.monotonic() - t0
            for key, value in (("loss", loss), ("bpp", bpp.mean()), ("mse", mse.mean()), ("aux", aux_loss)):
                sums[key] += value.item()
            count += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                record = {k: v / count for k, v in sums.items()}
                record.update(step=step, wall_seconds=round(wall, 1), lr=learning_rate(cfg, step - 1))
                record["psnr"] = -10 * math.log10(max(record["mse"], 1e-12))
                if log:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                bar.set_postfix(loss=f"{record['loss']:.3f}", bpp=f"{record['bpp']:.3f}", psnr=f"{record['psnr']:.2f}")
                sums = dict.fromkeys(sums, 0.0)
                count = 0
            if val_images and step % cfg.val_every == 0:
                val = {"step": step, "wall_seconds": round(wall, 1)}
                for key, net_ in (("val", model), ("val_ema", ema)):
                    if net_ is None:
                        continue
                    val[key] = validate(net_, val_images, val_lambdas, device)
                    bar.write(
                        f"{key} "
                        + ", ".join(f"λ={v['lmbda']:.4g}: {v['bpp']:.3f} bpp {v['psnr']:.2f} dB" for v in val[key])
                    )
                log.write(json.dumps(val) + "\n")
                log.flush()
            if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60:
                save_checkpoint()
                last_ckpt = time.monotonic()
            bar.update(1)
    finally:  # also on Ctrl-C: keep everything up to the last completed step
        save_checkpoint()
        bar.close()
        if log:
            log.close()
    return model, record | {"step": step}


def _adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with its fused kernel: one step for the shipped model took 5 ms instead of 20 ms (1 CPU thread)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def _match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded moment estimates their parameter's memory layout.

    Checkpoints written before training went channels-last hold contiguous moments, and Adam's fused CPU kernel pairs
    the elements of a parameter, its gradient and its moments by memory order, not by index: with mismatched layouts
    it silently applies another element's moments (a resumed run lost 1.8 dB at λ_max within 12 steps).
    """
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _ema_model(model: YotoHyperprior, ckpt: dict | None) -> YotoHyperprior:
    """The run's weight average: restored from the checkpoint, else started from the current weights."""
    if ckpt is None or "ema" not in ckpt:
        ema = YotoHyperprior(model.config)
        ema.load_state_dict(model.state_dict())
    else:
        ema = YotoHyperprior(ModelConfig(**ckpt["config"]["model"]))
        ema.load_state_dict(ckpt["ema"])
        ema.set_lambda_range(model.config.lmbda_min, model.config.lmbda_max)
    return ema.eval().requires_grad_(False)


@torch.no_grad()
def _average_into(ema: YotoHyperprior, model: YotoHyperprior, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·weights, after every step.

    An average over the last ~1/(1 − decay) steps removes much of the noise that a constant learning rate leaves in
    the weights, which otherwise only an anneal of the learning rate removes, and the run can go on at full rate.
    """
    for average, current in zip(ema.parameters(), model.parameters(), strict=True):
        average.lerp_(current, 1 - decay)


def _stop_cleanly_on_signals() -> None:
    """Ctrl-C, ``kill -INT`` and ``kill -TERM`` all end the run through the final checkpoint.

    A job started with ``&`` from a non-interactive shell inherits SIGINT as *ignored*, so it is restored here.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def export(checkpoint: str | Path, output: str | Path, provisional: bool = False, ema: bool = False) -> str:
    """Write the shipped weights file (model only, CDF tables built) from a training checkpoint; returns the id.

    ``provisional`` marks an early checkpoint shipped before the model meets its quality bar (shown by ``info``);
    ``ema`` exports the run's weight average (``ema_decay``) instead of its current weights.
    """
    model, ckpt = model_from_checkpoint(checkpoint, ema)
    cfg = ckpt["config"]
    before = ckpt.get("before", {})  # what the weights a run started from (--init-from) had been trained for
    meta = {
        "steps": before.get("steps", 0) + ckpt["step"],
        "train_hours": round(before.get("train_hours", 0.0) + ckpt["wall_seconds"] / 3600, 2),
        "fixed_lambda": cfg["fixed_lambda"],
        "batch_size": cfg["batch_size"],
        "patch_size": cfg["patch_size"],
        "provisional": provisional,
        **({"ema_decay": cfg["ema_decay"]} if ema else {}),
    }
    return save_weights(model, output, meta)


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint's contents; anything unreadable is a one-line ValueError, not torch's traceback."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many types for files that are not checkpoints
        raise ValueError(f"{path}: not a training checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict):
        raise ValueError(f"{path}: not a training checkpoint")
    return ckpt


def model_from_checkpoint(checkpoint: str | Path, ema: bool = False) -> tuple[YotoHyperprior, dict]:
    """The model (eval mode; its weight average with ``ema``) of a training checkpoint, and the checkpoint."""
    ckpt = load_checkpoint(checkpoint)
    if ema and "ema" not in ckpt:
        raise ValueError(f"{checkpoint} has no weight average: train with --ema-decay to keep one")
    model = YotoHyperprior(ModelConfig.from_dict(ckpt["config"]["model"], checkpoint))
    model.load_state_dict(ckpt["ema" if ema else "model"])
    return model.eval(), ckpt


def config_from_checkpoint(checkpoint: str | Path, **overrides: object) -> TrainConfig:
    """The TrainConfig a checkpoint was written with, with some fields changed (e.g. ``max_minutes``)."""
    saved = load_checkpoint(checkpoint)["config"]
    saved["model"] = ModelConfig.from_dict(saved["model"], checkpoint)
    saved.setdefault("lambda_weighting", 0.0)  # runs started before the option existed trained unweighted
    return replace(TrainConfig(**saved), **overrides)
