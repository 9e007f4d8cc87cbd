"""Loading a model: from a weights file once per process, the registry's default, or the one a file names.

Every part of the package that needs a model given as a path, a loaded model or nothing (the default) goes through
:func:`resolve`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

from . import registry
from .errors import YotoError
from .model import YotoHyperprior
from .weights import load_weights

MODEL_ENV = "YOTOCODEC_MODEL"
ModelLike = YotoHyperprior | str | os.PathLike | None


def default_model_path() -> Path:
    """The registry's default model (:mod:`yotocodec.registry`), or ``$YOTOCODEC_MODEL``."""
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    return registry.default_model().path


@lru_cache(maxsize=4)
@torch.inference_mode(False)  # often first called from encode/decode: cached weights must stay usable by autograd
def _load_cached(path: str, mtime_ns: int) -> YotoHyperprior:
    """Load once per file version; the weights are ordinary tensors so that ``effort`` can differentiate through
    them (inference-mode tensors cannot be saved for backward)."""
    try:
        model, meta = load_weights(path)
    except FileNotFoundError:
        raise YotoError(f"model file not found: {path}") from None
    except ValueError as exc:
        raise YotoError(str(exc)) from None
    model.meta = meta
    model.path = path
    return model.for_coding()


def load_model(path: str | os.PathLike | None = None) -> YotoHyperprior:
    """Load (once, then from cache) a weights file; ``None`` means the shipped default model."""
    path = Path(path) if path is not None else default_model_path()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise YotoError(f"model file not found: {path}") from None
    return _load_cached(str(path.resolve()), mtime)


def resolve(model: ModelLike) -> YotoHyperprior:
    """A loaded model as it is; a path, or ``None`` for the default model, loaded (:func:`load_model`)."""
    return model if isinstance(model, YotoHyperprior) else load_model(model)


def model_for_file(model_id: str, model: ModelLike = None) -> YotoHyperprior:
    """The model that wrote a file: ``model`` (or ``$YOTOCODEC_MODEL``) when it is that one, else the registered one.

    Decoding never needs a weights file for a model the registry carries; a file whose model is neither given nor
    carried gets one line naming the model and where its weights are.
    """
    given = None
    if model is not None or os.environ.get(MODEL_ENV):
        given = resolve(model)
        if given.model_id == model_id:
            return given
    entry = registry.find(model_id)
    if entry is not None and entry.path is not None:
        return load_model(entry.path)
    message = registry.missing_model_message(model_id)
    if given is not None:
        message += f" (the model given is {given.model_id})"
    raise YotoError(message)
