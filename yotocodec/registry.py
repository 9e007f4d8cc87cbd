"""The models this version carries, found by the id that every ``.yoto`` header names.

Files outlive models: every model that becomes the default stays in the package (``models/<id>.pt``) in every later
version, so a file decodes with whatever version reads it, without naming a weights file.  ``models/registry.json``
also lists the defaults that came before this promise and are not carried, with the commit that shipped each, so a
file written by one of them gets an error that says where its weights are.  ``$YOTOCODEC_REGISTRY`` names another
registry file (a site's own models, or tests).

Pure Python (no torch): listing the models, or finding the one a file needs, loads no weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import YotoError

REGISTRY_ENV = "YOTOCODEC_REGISTRY"
REGISTRY_FORMAT = "yotocodec-registry"
REGISTRY_VERSION = 1


@dataclass(frozen=True)
class RegisteredModel:
    """One released model: where its weights are (``None``: not carried by this version) and what it is."""

    model_id: str
    released: str  # date it became the default
    version: str  # the yotocodec version that shipped it
    commit: str  # the commit that shipped it, where ``models/yoto.pt`` or ``models/<id>.pt`` holds its weights
    lmbda_min: float
    lmbda_max: float
    steps: int
    path: Path | None
    default: bool

    @property
    def status(self) -> str:
        return "default" if self.default else "carried" if self.path is not None else "not carried"

    @property
    def num_bytes(self) -> int | None:
        """Size of the weights file in the package (``None`` when not carried)."""
        return self.path.stat().st_size if self.path is not None else None


def registry_path() -> Path:
    """``$YOTOCODEC_REGISTRY``, else the registry installed with the package (``models/registry.json``)."""
    if os.environ.get(REGISTRY_ENV):
        return Path(os.environ[REGISTRY_ENV])
    return Path(str(resources.files("yotocodec.models") / "registry.json"))


def registered_models() -> tuple[RegisteredModel, ...]:
    """Every model the registry lists, newest first as written there."""
    path = registry_path()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise YotoError(f"model registry not found: {path}") from None
    return _read(str(path), mtime)


@lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int) -> tuple[RegisteredModel, ...]:
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        if payload["format"] != REGISTRY_FORMAT or payload["version"] != REGISTRY_VERSION:
            raise ValueError("unknown format")
        default = payload["default"]
        models = tuple(_entry(row, Path(path).parent, default) for row in payload["models"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise YotoError(f"{path}: not a yotocodec model registry ({exc})") from None
    if [m.model_id for m in models if m.default and m.path is not None] != [default]:
        raise YotoError(f"{path}: the default model {default} is not listed with a weights file")
    return models


def _entry(row: dict, root: Path, default: str) -> RegisteredModel:
    lo, hi = row["lambda_range"]
    return RegisteredModel(
        model_id=row["id"],
        released=row["released"],
        version=row["version"],
        commit=row["commit"],
        lmbda_min=float(lo),
        lmbda_max=float(hi),
        steps=int(row["steps"]),
        path=root / row["file"] if row["file"] else None,
        default=row["id"] == default,
    )


def default_model() -> RegisteredModel:
    """The model ``encode`` uses unless told otherwise."""
    return next(m for m in registered_models() if m.default)


def find(model_id: str) -> RegisteredModel | None:
    """The registry's entry for ``model_id``, carried or not; ``None`` for a model it has never listed."""
    return next((m for m in registered_models() if m.model_id == model_id), None)


def missing_model_message(model_id: str) -> str:
    """Why a file written by ``model_id`` cannot be decoded with the models at hand, and what to do about it."""
    entry = find(model_id)
    if entry is None:
        return (
            f"this file was written by model {model_id}, which this version of yotocodec does not know "
            f"(a newer version's model, or one trained elsewhere): decode it with that model's weights file (--model)"
        )
    return (
        f"this file was written by model {model_id} (the default of yotocodec {entry.version} from {entry.released}), "
        f"which this version does not carry: take its weights from commit {entry.commit} "
        f"(`git show {entry.commit}:models/yoto.pt > {model_id}.pt`) and pass --model {model_id}.pt"
    )
