"""The command-line options the benchmarks share, defined once so that they mean the same in every command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import images as images_mod
from .common import DEFAULT_OUT

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def images_option(help: str = "Folder of test images.", file_okay: bool = True) -> Decorator:
    """``--images DIR`` (parameter ``image_dir``), the Kodak folder by default."""
    return click.option("--images", "image_dir", type=click.Path(file_okay=file_okay, path_type=Path),
                        default=images_mod.DEFAULT_DIR, show_default=True, help=help)  # fmt: skip


def limit_option() -> Decorator:
    """``--limit N``: only the first N images, to trade coverage for time."""
    return click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N images.")


def model_option(help: str = "Weights file (default: the shipped model).") -> Decorator:
    """``--model FILE`` (parameter ``model_path``), None for the shipped model."""
    return click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help=help)  # fmt: skip


def threads_option(help: str = "torch threads.") -> Decorator:
    """``--threads N``, one by default: timings then compare with the single-threaded classic codecs."""
    return click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help=help)


def out_option(files: str) -> Decorator:
    """``--out DIR`` for the ``files`` a benchmark writes; None picks :func:`results_dir`'s default."""
    return click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help=f"Where {files} go [default: {DEFAULT_OUT}, or {DEFAULT_OUT}/quick].")  # fmt: skip
