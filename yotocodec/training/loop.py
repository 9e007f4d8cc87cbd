"""The training loop of loss-conditional training (and of its fixed-λ special case).

Every example gets its own λ drawn log-uniformly from the model's range, the model is conditioned on it, and the loss
is that example's own λ·255²·MSE + bpp (:mod:`.recipe`).  Runs are made to be killed: checkpoints are written
atomically every few minutes and a resumed run continues the same run (model, optimisers, step, RNG state).  Under
``torchrun`` each rank trains on its own shard with its own λ draws and DistributedDataParallel keeps the weights
identical.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import ModelConfig
from ..metrics import bpp_from_likelihoods, mse_per_example
from ..model import FiLM, YotoHyperprior
from ..weights import load_weights
from .checkpoint import CHECKPOINT_NAME, LOG_NAME, load_checkpoint, save_checkpoint
from .data import PatchSampler, list_images, load_rgb
from .evaluate import validate
from .recipe import TrainConfig, bf16_is_native, learning_rate, loss_weights, rate_gradient, sample_lambdas
from .surgery import (
    add_context,
    inherited_entries,
    revive_latent_channels,
    revive_partly_closed_channels,
    same_network,
    set_lambda_range,
    starting_model,
)


@dataclass
class Run:
    """Everything a run carries from step to step and keeps in its checkpoint."""

    cfg: TrainConfig
    model: YotoHyperprior
    ema: YotoHyperprior | None  # the weight average (cfg.ema_decay), on the main rank only
    optimizer: torch.optim.Adam
    aux_optimizer: torch.optim.Adam  # the entropy bottleneck's quantiles
    rng: np.random.Generator
    before: dict  # the training behind the starting model: it counts towards the run's own (exports report the sum)
    revived: Tensor | None  # latent channels on a rate holiday (see recipe.rate_gradient)
    frozen: dict[str, Tensor] | None  # per parameter, the entries that do not train (cfg.freeze_inherited)
    step: int = 0
    wall: float = 0.0  # seconds spent in steps

    def state(self) -> dict:
        return {
            "config": asdict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "aux_optimizer": self.aux_optimizer.state_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "step": self.step,
            "wall_seconds": self.wall,
            "before": self.before,
            **({"revived": self.revived} if self.revived is not None else {}),
            **({"frozen": self.frozen} if self.frozen is not None else {}),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        }


def train(cfg: TrainConfig, progress: bool = True) -> tuple[YotoHyperprior, dict]:
    """Run (or resume) training until ``cfg.steps`` or ``cfg.max_minutes``; returns the model and last log record."""
    rank, world, local_rank = _distributed()
    device = _device(local_rank)
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
    new_run = not (run_dir / CHECKPOINT_NAME).exists()
    run = start_run(cfg, rank, world, device)
    shard = {"rank": rank, "world_size": world, "progress": progress and is_main, "device": device}
    sampler = PatchSampler(cfg.data, cfg.patch_size, candidates=cfg.detail_candidates, **shard)
    val_images = []
    if is_main and cfg.val_dir and Path(cfg.val_dir).is_dir():
        val_images = [load_rgb(p) for p in list_images(cfg.val_dir)[: cfg.val_images]]
    net = _training_network(run.model, cfg, world, device)

    def checkpoint() -> None:
        if is_main:
            save_checkpoint(run.state(), run_dir / CHECKPOINT_NAME)

    log = Log(run_dir / LOG_NAME if is_main else None, run.step, cfg, progress and is_main)
    if new_run and run.revived is not None:
        log.write({"step": 0, "revived_channels": run.revived.nonzero()[:, 0].tolist()})
    deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    last_checkpoint = time.monotonic()
    run.model.train()
    with _stop_cleanly_on_signals():
        try:
            while run.step < cfg.steps and time.monotonic() < deadline:
                x = sampler.sample(cfg.batch_size, run.rng).to(device, memory_format=torch.channels_last)
                log.add(train_step(run, net, x, world), run)
                if val_images and run.step % cfg.val_every == 0:
                    log.validation(run, val_images, device)
                if time.monotonic() - last_checkpoint > cfg.checkpoint_minutes * 60:
                    checkpoint()
                    last_checkpoint = time.monotonic()
        finally:  # also on Ctrl-C: keep everything up to the last completed step
            checkpoint()
            log.close()
    return run.model, log.record | {"step": run.step}


def start_run(cfg: TrainConfig, rank: int, world: int, device: torch.device) -> Run:
    """A new run (from scratch or from ``cfg.init_from``), or the one saved in the run directory, on ``device``."""
    torch.manual_seed(cfg.seed + rank)  # seeds the initial weights; a resumed run restores its saved state below
    ckpt_path = Path(cfg.run_dir) / CHECKPOINT_NAME
    ckpt = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    model, revived, frozen, before = _resumed_model(cfg, ckpt, ckpt_path) if ckpt is not None else _new_model(cfg)
    set_lambda_range(model, cfg.model.lmbda_min, cfg.model.lmbda_max)  # a resumed run may widen its range
    # Channels-last convolutions: measured 0.241 s against 0.265 s a compiled step on the 2-core CPU (batch 8 of 128²).
    model = model.to(device, memory_format=torch.channels_last)
    if frozen is not None:  # once, not on every step
        frozen = {name: mask.to(device) for name, mask in frozen.items()}
    ema = None
    if cfg.ema_decay and rank == 0:
        ema = _ema_model(model, ckpt).to(device, memory_format=torch.channels_last)
    run = Run(
        cfg, model, ema, _adam(_parameter_groups(model, cfg), cfg.lr), _adam(_aux_parameters(model), cfg.aux_lr),
        np.random.default_rng([cfg.seed, rank]), before, revived, frozen,
    )  # fmt: skip
    if ckpt is not None:
        _restore_progress(run, ckpt, rank, world)
    return run


def _new_model(cfg: TrainConfig) -> tuple[YotoHyperprior, Tensor | None, dict[str, Tensor] | None, dict]:
    """(model, revived channels, frozen entries, training behind it) of a new run: fresh, or from a weights file."""
    if not cfg.init_from:
        return YotoHyperprior(cfg.model), None, None, {"steps": 0, "train_hours": 0.0}
    init, meta = load_weights(cfg.init_from)
    before = {"steps": meta.get("steps", 0), "train_hours": meta.get("train_hours", 0.0)}
    model, added = starting_model(init, cfg.model, cfg.seed, source=cfg.init_from)
    frozen = None
    if cfg.freeze_inherited:
        if not added.any():
            raise ValueError("--freeze-inherited trains only new channels: give a larger --N/--M than the start's")
        # the quantiles train on their own auxiliary loss (_aux_step), whatever the channel
        frozen = {n: m for n, m in inherited_entries(init, cfg.model).items() if not n.endswith(".quantiles")}
    # Reviving the inherited channels would change the frozen part: with it frozen only the new ones get the holiday.
    revive = revive_partly_closed_channels if cfg.revive_partly_closed else revive_latent_channels
    revived = (added if frozen is not None else revive(model) | added) if cfg.revive_steps else None
    return model, revived, frozen, before


def _resumed_model(
    cfg: TrainConfig, ckpt: dict, path: Path
) -> tuple[YotoHyperprior, Tensor | None, dict[str, Tensor] | None, dict]:
    saved = ModelConfig.from_dict(ckpt["config"]["model"], path)
    same = same_network(replace(saved, context=cfg.model.context), cfg.model)  # a context may be added (recipe)
    if not same or ckpt["config"]["fixed_lambda"] != cfg.fixed_lambda:
        raise ValueError(f"{path} belongs to a run with another model or λ; use another --run-dir")
    model = YotoHyperprior(saved)
    model.load_state_dict(ckpt["model"])
    if saved.context != cfg.model.context:
        model = add_context(model, cfg.model.context)
    return model, ckpt.get("revived"), ckpt.get("frozen"), ckpt.get("before", {})


def _restore_progress(run: Run, ckpt: dict, rank: int, world: int) -> None:
    """Optimiser moments, step, time and random streams of a resumed run."""
    saved_main = _regrouped(ckpt["optimizer"], _grouping(run.model, ckpt["config"]), _grouping(run.model, run.cfg))
    for opt, saved in ((run.optimizer, saved_main), (run.aux_optimizer, ckpt["aux_optimizer"])):
        factors = [group.get("lr_factor", 1.0) for group in opt.param_groups]
        opt.load_state_dict(saved)
        # Loading restores the saved group settings; this run's flags and lr factors replace them (older runs saved
        # unfused flags and no factors).
        for group, factor in zip(opt.param_groups, factors, strict=True):
            group.update(fused=True, foreach=None, lr_factor=factor)
        _match_state_layout(opt)
    run.step, run.wall = ckpt["step"], ckpt["wall_seconds"]
    if world == 1:
        run.rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        random.setstate(ckpt["python_rng"])
    else:  # other ranks' streams were not saved: derive fresh, distinct ones
        run.rng = np.random.default_rng([run.cfg.seed, rank, run.step])


def _regrouped(saved: dict, before: list[tuple[list[str], float]], now: list[tuple[list[str], float]]) -> dict:
    """A saved state of the main optimiser laid out for this run's parameter groups (``now``; ``before``: the groups
    it was saved with), matched by parameter name: a parameter may have moved to a group of its own (a new
    ``--context-lr-factor``), and parameters added since (a context model, :func:`~.surgery.add_context`) start
    without moments."""
    saved_ids = {name: i for i, name in enumerate(n for names, _ in before for n in names)}
    settings = {k: v for k, v in saved["param_groups"][0].items() if k != "params"}
    state, groups, first = {}, [], 0
    for names, factor in now:
        ids = list(range(first, first + len(names)))
        state |= {i: saved["state"][saved_ids[n]] for i, n in zip(ids, names, strict=True) if saved_ids.get(n) in
                  saved["state"]}  # fmt: skip
        groups.append(settings | {"params": ids, "lr_factor": factor})
        first += len(ids)
    return {"state": state, "param_groups": groups}


def train_step(run: Run, net: torch.nn.Module, x: Tensor, world: int) -> dict[str, Tensor]:
    """One optimisation step on the batch ``x``, each example at its own λ; returns the step's loss terms."""
    cfg, t0 = run.cfg, time.monotonic()
    lmbda = sample_lambdas(cfg, cfg.batch_size, run.rng).to(x.device)
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(cfg, run.step) * group["lr_factor"]
    # bfloat16 transforms (the entropy models stay in float32, YotoHyperprior.forward; validation in float32): on
    # the 2-core Intel Xeon with AMX a step took 0.17 s against 0.37 s.
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        factor = rate_gradient(cfg, run.revived, run.step)
        factor = None if factor is None else factor.to(x.device)
        out = net(x, lmbda, ste=cfg.decoder_quantizer == "ste", rate_gradient=factor)
    mse = mse_per_example(x, out["x_hat"])
    bpp = bpp_from_likelihoods(out["likelihoods"], x.shape[-2] * x.shape[-1])
    loss = (loss_weights(cfg, lmbda) * (lmbda * 255**2 * mse + bpp)).mean()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    _drop_frozen_gradients(run)
    torch.nn.utils.clip_grad_norm_(_main_parameters(run.model), cfg.clip_norm)
    run.optimizer.step()
    aux_loss = _aux_step(run, world)
    if run.ema is not None:
        _average_into(run.ema, run.model, cfg.ema_decay)
    run.step += 1
    run.wall += time.monotonic() - t0
    return {"loss": loss, "bpp": bpp.mean(), "mse": mse.mean(), "aux": aux_loss}


def _drop_frozen_gradients(run: Run) -> None:
    """Zero the gradient of every frozen entry: Adam then leaves it exactly where it is (both moments stay 0)."""
    if run.frozen is None:
        return
    for name, p in run.model.named_parameters():
        if name in run.frozen and p.grad is not None:
            p.grad.masked_fill_(run.frozen[name], 0.0)


def _aux_step(run: Run, world: int) -> Tensor:
    """A step of the entropy bottleneck's quantiles on their own loss."""
    run.aux_optimizer.zero_grad(set_to_none=True)
    aux_loss = run.model.aux_loss()
    aux_loss.backward()
    if world > 1:  # the quantiles are outside DDP's forward graph: average their gradients by hand
        for p in _aux_parameters(run.model):
            dist.all_reduce(p.grad)
            p.grad /= world
    run.aux_optimizer.step()
    return aux_loss


class Log:
    """The run's log: mean loss terms every ``log_every`` steps and validation results, as JSON lines (main rank
    only), and the progress bar."""

    def __init__(self, path: Path | None, step: int, cfg: TrainConfig, progress: bool) -> None:
        self.file = path.open("a") if path is not None else None
        self.cfg = cfg
        self.sums: dict[str, float] = dict.fromkeys(("loss", "bpp", "mse", "aux"), 0.0)
        self.count = 0
        self.record: dict = {}
        self.bar = tqdm(total=cfg.steps, initial=step, disable=not progress, dynamic_ncols=True)
        lo, hi = cfg.lambda_range()
        self.val_lambdas = sorted({lo, math.sqrt(lo * hi), hi})

    def write(self, record: dict) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def add(self, terms: dict[str, Tensor], run: Run) -> None:
        """One step's loss terms; every ``log_every`` steps (and at the last) their means become a record."""
        for key, value in terms.items():
            self.sums[key] += value.item()
        self.count += 1
        self.bar.update(1)
        step = run.step
        if step % self.cfg.log_every and step != self.cfg.steps:
            return
        record = {k: v / self.count for k, v in self.sums.items()}
        record.update(step=step, wall_seconds=round(run.wall, 1), lr=learning_rate(self.cfg, step - 1))
        record["psnr"] = -10 * math.log10(max(record["mse"], 1e-12))
        self.write(record)
        self.record = record
        self.bar.set_postfix(loss=f"{record['loss']:.3f}", bpp=f"{record['bpp']:.3f}", psnr=f"{record['psnr']:.2f}")
        self.sums = dict.fromkeys(self.sums, 0.0)
        self.count = 0

    def validation(self, run: Run, images: list[np.ndarray], device: torch.device) -> None:
        """Validate the model (and its weight average) and log the results."""
        val: dict = {"step": run.step, "wall_seconds": round(run.wall, 1)}
        for key, model in (("val", run.model), ("val_ema", run.ema)):
            if model is None:
                continue
            val[key] = validate(model, images, self.val_lambdas, device)
            results = (f"λ={v['lmbda']:.4g}: {v['bpp']:.3f} bpp {v['psnr']:.2f} dB" for v in val[key])
            self.bar.write(f"{key} " + ", ".join(results))
        self.write(val)

    def close(self) -> None:
        self.bar.close()
        if self.file:
            self.file.close()


def _device(local_rank: int) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    # TF32 convolutions are safe here; the entropy models stay in float32
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    return torch.device(f"cuda:{local_rank}")


def _training_network(model: YotoHyperprior, cfg: TrainConfig, world: int, device: torch.device) -> torch.nn.Module:
    """The model as the steps call it: wrapped for DistributedDataParallel, and compiled if asked."""
    net: torch.nn.Module = model
    if world > 1:
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    if cfg.compile:  # fused kernels: measured 1.17x the steps/s on the 2-core CPU, after about a minute of compiling
        net = torch.compile(net)
    return net


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def _main_parameters(model: YotoHyperprior) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]


def _main_names(model: YotoHyperprior) -> list[str]:
    return [n for n, _ in model.named_parameters() if not n.endswith(".quantiles")]


def _parameter_groups(model: YotoHyperprior, cfg: TrainConfig) -> list[dict]:
    """The main optimiser's parameter groups, each with its ``lr_factor`` on the schedule (see :func:`_grouping`)."""
    parameters = dict(model.named_parameters())
    return [{"params": [parameters[n] for n in names], "lr_factor": factor} for names, factor in _grouping(model, cfg)]


def _grouping(model: YotoHyperprior, cfg: TrainConfig | dict) -> list[tuple[list[str], float]]:
    """Names of the main parameters in each optimiser group, with the group's lr factor, for a run's settings
    (``cfg`` may be those saved in a checkpoint): one group, then with a ``film_lr_factor`` the conditioning (λ
    embedding and FiLM heads) and with a ``context_lr_factor`` the context model, each apart from the rest; the
    context's parameters only if the run's model had one.

    Adam moves every weight by about its learning rate a step whatever the gradient's size: for an exp(γ) scale that
    is a small relative change, for a linear scale of 0.01 a large one (the first linear-FiLM run diverged); a context
    model added to a trained one starts at zero and has far to go (docs/experiments.md).
    """
    settings = cfg if isinstance(cfg, dict) else asdict(cfg)
    with_context = settings["model"].get("context", "none") != "none"
    names = [n for n in _main_names(model) if with_context or not n.startswith("context.")]
    film = {f"{m}.{n}" for m, module in model.named_modules() if isinstance(module, FiLM) for n, _ in
            module.named_parameters()} | {n for n in names if n.startswith("cond.")}  # fmt: skip
    apart = [(film, settings.get("film_lr_factor", 1.0))]
    apart.append(({n for n in names if n.startswith("context.")}, settings.get("context_lr_factor", 1.0)))
    apart = [(members, factor) for members, factor in apart if factor != 1.0 and members]
    taken = set().union(*(members for members, _ in apart))
    return [([n for n in names if n not in taken], 1.0)] + [([n for n in names if n in m], f) for m, f in apart]


def _aux_parameters(model: YotoHyperprior) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if n.endswith(".quantiles")]


def _adam(params: list, lr: float) -> torch.optim.Adam:
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
        if ema.config.context != model.config.context:  # added on resuming: the average starts from the model's
            ema = add_context(ema, model.config.context)
            ema.context.load_state_dict(model.context.state_dict())
        set_lambda_range(ema, model.config.lmbda_min, model.config.lmbda_max)
    return ema.eval().requires_grad_(False)


@torch.no_grad()
def _average_into(ema: YotoHyperprior, model: YotoHyperprior, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·weights, after every step.

    An average over the last ~1/(1 − decay) steps removes much of the noise that a constant learning rate leaves in
    the weights, which otherwise only an anneal of the learning rate removes, and the run can go on at full rate.
    """
    for average, current in zip(ema.parameters(), model.parameters(), strict=True):
        average.lerp_(current, 1 - decay)


@contextmanager
def _stop_cleanly_on_signals() -> Iterator[None]:
    """Ctrl-C, ``kill -INT`` and ``kill -TERM`` all end the run through the final checkpoint.

    A job started with ``&`` from a non-interactive shell inherits SIGINT as *ignored*, so it is restored here; the
    caller's own handlers come back when the run ends, so a later signal is not mistaken for one meant for training.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
