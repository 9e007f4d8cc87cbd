"""The training recipe: a run's settings, what follows from them at every step (the λ draws, each example's weight,
the learning rate, the rate holiday of revived channels), and how the settings of a new or a resumed run are
resolved from what was asked for on the command line."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ModelConfig
from ..weights import load_weights
from .checkpoint import CHECKPOINT_NAME, load_checkpoint


@dataclass
class TrainConfig:
    data: str
    run_dir: str
    model: ModelConfig = field(default_factory=ModelConfig)
    fixed_lambda: float | None = None
    batch_size: int = 8
    patch_size: int = 128
    detail_candidates: int = 1  # > 1: each patch is the most detailed of this many crops (data.PatchSampler)
    lr: float = 1e-3
    aux_lr: float = 1e-3
    warmup_steps: int = 500
    steps: int = 300_000  # planned length: the cosine decay to lr/100 runs over its last `decay_fraction`
    decay_fraction: float = 0.2
    clip_norm: float = 1.0
    lambda_weighting: float = 0.5  # p in the per-example weight (λ_ref/λ)^p; see loss_weights
    film_lr_factor: float = 1.0  # the conditioning's (λ embedding, FiLM heads) learning rate, as a factor of lr
    context_lr_factor: float = 1.0  # the context model's learning rate, as a factor of lr
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
    revive_partly_closed: bool = False  # with revive_steps: also those off at some λ only (surgery)
    freeze_inherited: bool = False  # with init_from widened: train only the new channels (surgery.inherited_entries)

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


def bf16_is_native(device: torch.device) -> bool:
    """Whether bfloat16 convolutions run in hardware: on GPUs, and on CPUs with AVX512-BF16 or AMX (oneDNN's test).

    Elsewhere they are emulated: on a 2-core AMD EPYC with only AVX2 a compiled step took 11 s instead of 1.1 s.
    """
    return device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def config_from_checkpoint(checkpoint: str | Path, **overrides: object) -> TrainConfig:
    """The TrainConfig a checkpoint was written with, with some fields changed (e.g. ``max_minutes``)."""
    saved = load_checkpoint(checkpoint)["config"]
    saved["model"] = ModelConfig.from_dict(saved["model"], checkpoint)
    saved.setdefault("lambda_weighting", 0.0)  # runs started before the option existed trained unweighted
    return replace(TrainConfig(**saved), **overrides)


class ConflictingOptionsError(ValueError):
    """Options that cannot go together: a malformed command line rather than a failed run."""


# Settings that only steer optimisation: a resumed run may change them for the rest of the run (a copied run with
# other crops, e.g. 256² × 2 against 128² × 8, is a paired run that keeps the optimiser's state).
RESUMABLE = (
    "lr", "lambda_weighting", "ema_decay", "decoder_quantizer", "compile", "precision", "steps", "batch_size",
    "patch_size", "detail_candidates", "context_lr_factor",
)  # fmt: skip
# Command-line options of the model's own configuration, by the ModelConfig field they set.
MODEL_OPTIONS = {
    "arch": "arch", "N": "N", "M": "M", "lambda_min": "lmbda_min", "lambda_max": "lmbda_max", "film": "film",
    "context": "context",
}  # fmt: skip


def resolve(options: dict[str, Any], given: set[str]) -> TrainConfig:
    """The settings of the run ``yotocodec train`` asks for: ``options`` are its option values by parameter name,
    ``given`` the names of those given on the command line (the rest are defaults)."""
    return _resumed(options, given) if options["resume"] else _new_run(options, given)


def _resumed(options: dict[str, Any], given: set[str]) -> TrainConfig:
    """A run's own settings, with the optimisation settings and the λ range changed where given.

    The run lives where it is now: a copied run directory must not write back into the original.
    """
    run_dir = Path(options["run_dir"])
    checkpoint = run_dir / CHECKPOINT_NAME
    if not checkpoint.exists():
        raise ValueError(f"{checkpoint}: no checkpoint to resume")
    for name, flag in (
        ("revive_steps", "--revive-channels"),
        ("revive_partly_closed", "--revive-partly-closed"),
        ("freeze_inherited", "--freeze-inherited"),
    ):
        if name in given:
            raise ConflictingOptionsError(f"{flag} starts a run from --init-from; a resumed run keeps its own")
    changed = {name: options[name] for name in RESUMABLE if name in given}
    cfg = config_from_checkpoint(checkpoint, run_dir=str(run_dir), max_minutes=options["max_minutes"], **changed)
    new_range = {MODEL_OPTIONS[name]: options[name] for name in ("lambda_min", "lambda_max") if name in given}
    if new_range and cfg.fixed_lambda is not None:
        raise ConflictingOptionsError("a fixed-λ run has no λ range to change")
    if "context" in given and options["context"] != cfg.model.context:
        if cfg.model.context != "none":
            raise ConflictingOptionsError("a resumed run may add a context model, not remove or change one")
        new_range["context"] = options["context"]  # a copied run that adds one is a paired run (surgery)
    return replace(cfg, model=replace(cfg.model, **new_range))


def _new_run(options: dict[str, Any], given: set[str]) -> TrainConfig:
    checkpoint = Path(options["run_dir"]) / CHECKPOINT_NAME
    if checkpoint.exists():
        raise ValueError(f"{checkpoint} exists: pass --resume to continue it, or pick another --run-dir")
    if options["revive_steps"] and not options["init_from"]:
        raise ConflictingOptionsError("--revive-channels needs --init-from: a trained model whose channels are off")
    if options["revive_partly_closed"] and not options["revive_steps"]:
        raise ConflictingOptionsError("--revive-partly-closed widens what --revive-channels STEPS reopens: give both")
    if options["freeze_inherited"] and not options["init_from"]:
        raise ConflictingOptionsError("--freeze-inherited needs --init-from: the model whose channels it keeps")
    settings = {f.name: options[f.name] for f in fields(TrainConfig) if f.name in options}
    for name in ("data", "run_dir", "val_dir", "init_from"):
        settings[name] = None if options[name] is None else str(options[name])
    return TrainConfig(model=_model_config(options, given), **settings)


def _model_config(options: dict[str, Any], given: set[str]) -> ModelConfig:
    """The model a new run trains: as given, or by default the starting model's networks and λ range.

    With --init-from and --fixed-lambda a run fine-tunes that conditional model at one λ of its range (the
    specialisation gap of loss-conditional training).
    """
    if options["init_from"]:
        start = load_weights(options["init_from"])[0].config
        return replace(start, **{MODEL_OPTIONS[name]: options[name] for name in MODEL_OPTIONS if name in given})
    fixed = options["fixed_lambda"]
    lo, hi = (fixed, fixed) if fixed else (options["lambda_min"], options["lambda_max"])
    return ModelConfig(
        arch=options["arch"], N=options["N"], M=options["M"], lmbda_min=lo, lmbda_max=hi, film=options["film"],
        context=options["context"],
    )  # fmt: skip
