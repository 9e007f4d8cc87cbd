"""The ``yotocodec`` command line: parse, call the public API, report."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import click
from PIL import Image

from .codec import DEFAULT_QUALITY, decode, encode, inspect, load_model
from .errors import YotoError
from .model import ModelConfig

DEFAULT_TRAIN_DATA = Path("../shared/data/train")
DEFAULT_KODAK = Path("../shared/data/kodak")


class Timer:
    """Collects named wall-clock timings for ``-v``."""

    def __init__(self) -> None:
        self.laps: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.laps.append((name, time.perf_counter() - start))

    def report(self) -> str:
        return "timings: " + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in self.laps)


@contextlib.contextmanager
def atomic_output(path: Path, force: bool) -> Iterator[BinaryIO]:
    """A temporary file beside ``path`` that replaces it only if the block succeeds, so nothing half-written stays."""
    if path.exists() and not force:
        raise YotoError(f"{path} exists (use --force to overwrite it)")
    if path.is_dir():
        raise YotoError(f"{path} is a directory")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def run_reporting_errors(action: Callable[[], None]) -> None:
    """Turn every expected failure into a one-line message and exit code 1 (130 on Ctrl-C); never a traceback."""
    try:
        action()
    except YotoError as exc:
        fail(str(exc))
    except FileNotFoundError as exc:
        fail(f"no such file: {exc.filename}")
    except IsADirectoryError as exc:
        fail(f"is a directory: {exc.filename}")
    except PermissionError as exc:
        fail(f"permission denied: {exc.filename}")
    except (OSError, Image.DecompressionBombError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
    except KeyboardInterrupt:
        click.echo("error: interrupted; no output written", err=True)
        sys.exit(130)


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def read_image(path: Path) -> Image.Image:
    """Open and fully decode an image file, so that a truncated or non-image file fails here with a clear message."""
    try:
        image = Image.open(path)
        image.load()
    except Image.UnidentifiedImageError:
        raise YotoError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
            raise
        raise YotoError(
            f"{path}: cannot decode image ({str(exc).splitlines()[0] if str(exc) else 'corrupt'})"
        ) from None
    return image


def output_format(path: Path) -> str:
    """The Pillow format for an output path's extension, checked before any work is done."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise YotoError(f"{path}: unknown output image type {path.suffix!r} (use e.g. .png, .bmp, .tif, .webp)")
    return fmt


model_option = click.option(
    "--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Weights file (default: the shipped model).",
)  # fmt: skip
force_option = click.option("-f", "--force", is_flag=True, help="Overwrite an existing output file.")
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Print timings.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="yotocodec")
def main() -> None:
    """Variable-rate learned image codec: one model, every quality."""


@main.command("encode")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Default: INPUT with .yoto.")
@click.option(
    "-q",
    "--quality",
    type=click.FloatRange(0, 100),
    default=None,
    help=f"0 (smallest) to 100 (best), any real number  [default: {DEFAULT_QUALITY:g}]",
)
@click.option("--lmbda", type=float, default=None, help="Rate–distortion trade-off λ instead of --quality.")
@model_option
@force_option
@verbose_option
def encode_command(
    input_path: Path,
    output: Path | None,
    quality: float | None,
    lmbda: float | None,
    model_path: Path | None,
    force: bool,
    verbose: bool,
) -> None:
    """Compress an image file to a .yoto file."""
    output = output or input_path.with_suffix(".yoto")

    def action() -> None:
        if quality is not None and lmbda is not None:
            raise YotoError("give --quality or --lmbda, not both")
        timer = Timer()
        with timer("load model"):
            model = load_model(model_path)
        with timer("read image"):
            image = read_image(input_path)
        with timer("encode"):
            data = encode(image, quality, lmbda=lmbda, model=model)
        with timer("write"), atomic_output(output, force) as f:
            f.write(data)
        info = inspect(data, model=model)
        click.echo(
            f"{output}: {info.width}×{info.height} {info.mode}, quality {info.quality:.1f}, "
            f"{info.num_bytes} bytes, {info.bpp:.3f} bpp"
        )
        if verbose:
            click.echo(timer.report())

    run_reporting_errors(action)


@main.command("decode")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Default: INPUT with .png.")
@model_option
@force_option
@verbose_option
def decode_command(input_path: Path, output: Path | None, model_path: Path | None, force: bool, verbose: bool) -> None:
    """Decompress a .yoto file to an image (format from the output's extension)."""
    output = output or input_path.with_suffix(".png")

    def action() -> None:
        fmt = output_format(output)
        timer = Timer()
        with timer("read"):
            data = input_path.read_bytes()
        with timer("load model"):
            model = load_model(model_path)
        with timer("decode"):
            image = decode(data, model=model)
        with timer("write"), atomic_output(output, force) as f:
            image.save(f, format=fmt)
        click.echo(f"{output}: {image.width}×{image.height} {image.mode}")
        if verbose:
            click.echo(timer.report())

    run_reporting_errors(action)


@main.command("info")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@model_option
def info_command(input_path: Path, model_path: Path | None) -> None:
    """Describe a .yoto file: size, quality and λ, bytes, bpp, model."""

    def action() -> None:
        data = input_path.read_bytes()
        try:
            model = load_model(model_path)
        except YotoError:
            model = None
        info = inspect(data, model=model)
        lmbda = f"λ = {info.lmbda:.5g}" if info.lmbda is not None else "λ unknown: written by another model"
        click.echo(f"file:     {input_path}")
        click.echo(f"image:    {info.width}×{info.height} {info.mode}")
        click.echo(f"quality:  {info.quality:.2f} ({lmbda})")
        click.echo(f"size:     {info.num_bytes} bytes, {info.bpp:.4f} bpp")
        if model is not None and model.model_id == info.model_id:
            status = " (provisional model)" if model.meta.get("provisional") else ""
            click.echo(f"model:    {info.model_id}{status}, {model.path}")
        else:
            click.echo(f"model:    {info.model_id} (not the loaded model)")

    run_reporting_errors(action)


@main.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_TRAIN_DATA,
    show_default=True,
    help="Directory of training images.",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where checkpoints and the log go (keep it outside the repository).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir with the settings it was started with.")
@click.option("--arch", type=click.Choice(["mean-scale", "scale"]), default=ModelConfig.arch, show_default=True)
@click.option("--N", "N", type=int, default=ModelConfig.N, show_default=True, help="Channels of the transforms.")
@click.option("--M", "M", type=int, default=ModelConfig.M, show_default=True, help="Channels of the latent y.")
@click.option("--lambda-min", type=float, default=ModelConfig.lmbda_min, show_default=True)
@click.option("--lambda-max", type=float, default=ModelConfig.lmbda_max, show_default=True)
@click.option("--fixed-lambda", type=float, default=None, help="Train an ordinary single-λ model at this λ.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--patch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--steps", type=int, default=300_000, show_default=True, help="Planned length (sets the lr decay).")
@click.option("--max-minutes", type=float, default=None, help="Stop cleanly (checkpoint written) after this long.")
@click.option("--checkpoint-minutes", type=float, default=5.0, show_default=True)
@click.option(
    "--val-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Validation images (default {DEFAULT_KODAK} when it exists).",
)
@click.option("--val-every", type=int, default=2500, show_default=True)
@click.option(
    "--init-from",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Start a new run from a weights file (e.g. the shipped model).",
)
@click.option("--seed", type=int, default=0, show_default=True)
def train(
    data: Path,
    run_dir: Path,
    resume: bool,
    arch: str,
    N: int,
    M: int,
    lambda_min: float,
    lambda_max: float,
    fixed_lambda: float | None,
    batch_size: int,
    patch_size: int,
    lr: float,
    steps: int,
    max_minutes: float | None,
    checkpoint_minutes: float,
    val_dir: Path | None,
    val_every: int,
    init_from: Path | None,
    seed: int,
) -> None:
    """Train a λ-conditioned model (or, with --fixed-lambda, a per-λ baseline)."""
    from . import train as training

    checkpoint = run_dir / training.CHECKPOINT_NAME
    if resume:
        if not checkpoint.exists():
            raise click.ClickException(f"{checkpoint}: no checkpoint to resume")
        cfg = training.config_from_checkpoint(checkpoint, max_minutes=max_minutes)
    else:
        if checkpoint.exists():
            raise click.ClickException(f"{checkpoint} exists: pass --resume to continue it, or pick another --run-dir")
        if val_dir is None and DEFAULT_KODAK.is_dir():
            val_dir = DEFAULT_KODAK
        lo, hi = (fixed_lambda, fixed_lambda) if fixed_lambda else (lambda_min, lambda_max)
        cfg = training.TrainConfig(
            data=str(data),
            run_dir=str(run_dir),
            model=ModelConfig(arch=arch, N=N, M=M, lmbda_min=lo, lmbda_max=hi),
            fixed_lambda=fixed_lambda,
            batch_size=batch_size,
            patch_size=patch_size,
            lr=lr,
            steps=steps,
            max_minutes=max_minutes,
            checkpoint_minutes=checkpoint_minutes,
            val_dir=str(val_dir) if val_dir else None,
            val_every=val_every,
            init_from=str(init_from) if init_from else None,
            seed=seed,
        )
    try:
        _, final = training.train(cfg)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"stopped at step {final['step']}; checkpoint in {checkpoint}")


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def export(checkpoint: Path, output: Path) -> None:
    """Write a shippable weights file (model only) from a training checkpoint."""
    from .train import export as export_weights

    model_id = export_weights(checkpoint, output)
    click.echo(f"wrote {output} (model id {model_id}, {output.stat().st_size / 1e6:.1f} MB)")
