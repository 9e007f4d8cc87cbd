"""The self-describing weights file: a model's configuration, its tensors and its id, in one file.

The model id is a hash of the stored tensors, written into every bitstream: a decoder checks it names the model that
wrote the file (:mod:`yotocodec.registry` keeps every released one).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from .atomic import atomic_write
from .config import ModelConfig
from .model import YotoHyperprior

WEIGHTS_FORMAT = "yotocodec-weights"
WEIGHTS_VERSION = 1


def state_hash(state_dict: dict[str, Tensor]) -> str:
    """Short content hash of a state dict: the model id written into every bitstream."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:8]


def save_weights(model: YotoHyperprior, path: str | Path, meta: dict | None = None) -> str:
    """Write a self-describing weights file (config + state with entropy-coder tables); returns its model id.

    Parameters are stored in float16 to halve the file; the model is rounded to those values *before* the CDF tables
    are built, so tables, encoder and decoder all see exactly the weights in the file.  Buffers stay exact.
    """
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    model.update(force=True)
    parameters = {name for name, _ in model.named_parameters()}
    state = {
        k: (v.detach().cpu().half() if k in parameters else v.detach().cpu()) for k, v in model.state_dict().items()
    }
    model_id = state_hash(state)
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "config": asdict(model.config),
        "model_id": model_id,
        "meta": meta or {},
        "state_dict": state,
    }
    with atomic_write(path) as f:
        torch.save(payload, f)
    return model_id


def load_weights(path: str | Path) -> tuple[YotoHyperprior, dict]:
    """Load a weights file written by :func:`save_weights`; returns the model (eval mode) and its metadata."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many types for non-checkpoint files
        raise ValueError(f"{path}: not a yotocodec weights file ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: not a yotocodec weights file")
    if payload.get("version") != WEIGHTS_VERSION:
        raise ValueError(f"{path}: unsupported weights version {payload.get('version')!r}")
    model = YotoHyperprior(ModelConfig.from_dict(payload["config"], path))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    model.model_id = state_hash(payload["state_dict"])
    return model, payload.get("meta", {})
