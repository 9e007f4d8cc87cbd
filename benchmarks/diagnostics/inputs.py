"""What every diagnostic takes: a weights file or training checkpoint, and the first few images of a folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from yotocodec.model import YotoHyperprior
from yotocodec.training.checkpoint import model_from_checkpoint
from yotocodec.weights import load_weights

from .. import images as images_mod


def model_and_images_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``PATH [--ema] [--images DIR] [--limit N]``: the model under study and the first images it is run on."""
    command = click.option("--limit", type=int, default=4, show_default=True, help="Use the first N images.")(command)
    command = click.option("--images", type=click.Path(file_okay=False, path_type=Path),
                           default=images_mod.DEFAULT_DIR, show_default=True)(command)  # fmt: skip
    command = click.option("--ema", is_flag=True, help="Of a training checkpoint: its weight average.")(command)
    return click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))(command)


def load_any(path: Path, ema: bool) -> tuple[YotoHyperprior, str]:
    """A weights file or a training checkpoint, with a label saying which and after how many steps.

    Anything else is a one-line ``click.ClickException`` (the diagnostics load their model through this).
    """
    return load_trained(path, ema)[:2]


def load_trained(path: Path, ema: bool) -> tuple[YotoHyperprior, str, float | None]:
    """:func:`load_any`, and the single λ the model was trained at (``--fixed-lambda``; None for a variable rate)."""
    try:
        try:
            model, meta = load_weights(path)
            label = f"{path.name} ({model.model_id}, {meta.get('steps', '?')} steps)"
            return model.float(), label, meta.get("fixed_lambda")
        except ValueError:
            model, ckpt = model_from_checkpoint(path, ema)
            label = f"{path} (step {ckpt['step']}{', weight average' if ema else ''})"
            return model, label, ckpt["config"].get("fixed_lambda")
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise click.ClickException(f"{path}: not a weights file or training checkpoint of this model ({exc})") from None
