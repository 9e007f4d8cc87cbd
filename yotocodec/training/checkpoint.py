"""What a training run keeps on disk: a checkpoint to resume from (written atomically every few minutes), and the
weights file exported from it."""

from __future__ import annotations

from pathlib import Path

import torch

from ..atomic import atomic_write
from ..config import ModelConfig
from ..model import YotoHyperprior
from ..weights import save_weights

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write a checkpoint so that a run killed at any moment leaves the previous one intact."""
    with atomic_write(path) as f:
        torch.save(state, f)


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
    fit_quantiles(model)
    return save_weights(model, output, meta)


def fit_quantiles(model: YotoHyperprior, steps: int = 8000) -> None:
    """Fit the entropy bottleneck's quantiles (the range of z's coding tables) to its density.

    Training moves them about 10⁻³ a step, which leaves the channels a widened model adds far from converged (run P:
    auxiliary loss 666 at export against 5.5 in `12f43393`).  The fit needs no data: four seconds of Adam bring it
    to 0.15, saving 0–0.2 % of the bytes (docs/experiments.md).
    """
    quantiles = model.entropy_bottleneck.quantiles
    optimizer = torch.optim.Adam([quantiles], lr=0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=1e-4)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = model.aux_loss()
            loss.backward()
            optimizer.step()
            schedule.step()
