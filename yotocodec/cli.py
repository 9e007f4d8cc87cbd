"""The ``yotocodec`` command line: parse, call the public API, report."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import click
import torch
from PIL import Image
from tqdm import tqdm

from .codec import DEFAULT_QUALITY, decode, encode, inspect, load_model
from .errors import YotoError
from .model import ModelConfig
from .pillow_plugin import FORMAT as YOTO_FORMAT
from .ratecontrol import encode_to_bpp, encode_to_psnr, encode_to_size, parse_size

DEFAULT_TRAIN_DATA = Path("../shared/data/train")
DEFAULT_KODAK = Path("../shared/data/kodak")
STDIO = Path("-")


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


def shown(path: Path, stream: str) -> str:
    """A path as messages name it: ``-`` by the stream it stands for."""
    return f"<{stream}>" if path == STDIO else str(path)


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


@contextlib.contextmanager
def open_output(path: Path, force: bool) -> Iterator[BinaryIO]:
    """:func:`atomic_output`, or for ``-`` a buffer that goes to stdout only once it is complete."""
    if path != STDIO:
        with atomic_output(path, force) as f:
            yield f
        return
    stdout = sys.stdout.buffer
    if stdout.isatty():
        raise YotoError("refusing to write image data to a terminal (redirect stdout, or give -o FILE)")
    buffer = io.BytesIO()
    yield buffer
    stdout.write(buffer.getvalue())
    stdout.flush()


def read_bytes(path: Path) -> bytes:
    """A file's bytes; ``-`` is stdin."""
    return sys.stdin.buffer.read() if path == STDIO else path.read_bytes()


def error_message(exc: Exception) -> str | None:
    """The one-line message for an expected failure; None for anything else (a bug keeps its traceback)."""
    if isinstance(exc, YotoError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, IsADirectoryError):
        return f"is a directory: {exc.filename}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}"
    if isinstance(exc, OSError | Image.DecompressionBombError):
        return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return None


def run_reporting_errors(action: Callable[[], None]) -> None:
    """Turn every expected failure into a one-line message and exit code 1 (130 on Ctrl-C); never a traceback."""
    try:
        action()
    except KeyboardInterrupt:
        click.echo("error: interrupted; no output written", err=True)
        sys.exit(130)
    except Exception as exc:
        message = error_message(exc)
        if message is None:
            raise
        fail(message)


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def read_image(path: Path) -> Image.Image:
    """Open and fully decode an image file (``-``: stdin), so a truncated or non-image file fails here, clearly."""
    name = shown(path, "stdin")
    try:
        image = Image.open(io.BytesIO(read_bytes(path)) if path == STDIO else path)
        image.load()
    except Image.UnidentifiedImageError:
        raise YotoError(f"{name}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
            raise
        raise YotoError(
            f"{name}: cannot decode image ({str(exc).splitlines()[0] if str(exc) else 'corrupt'})"
        ) from None
    return image


def writable_format(extension: str) -> str | None:
    """The Pillow format that writes files with this extension (``.png``), if any; never .yoto itself."""
    fmt = Image.registered_extensions().get(extension.lower())
    return fmt if fmt in Image.SAVE and fmt != YOTO_FORMAT else None


def output_format(path: Path) -> str:
    """The Pillow format for an output path's extension (PNG for stdout), checked before any work is done."""
    if path == STDIO:
        return "PNG"
    fmt = writable_format(path.suffix)
    if fmt is None:
        raise YotoError(f"{path}: unknown output image type {path.suffix!r} (use e.g. .png, .bmp, .tif, .webp)")
    return fmt


class ByteSize(click.ParamType):
    """``--target-size``: 40KB, 64KiB, 1.5MB or a plain number of bytes."""

    name = "size"

    def convert(self, value: str | int, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except YotoError as exc:
            self.fail(str(exc), param, ctx)


class ImageType(click.ParamType):
    """``--format``: an extension Pillow can write (png, bmp, tif, webp, jpg…), returned as ``.png``."""

    name = "type"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        extension = "." + value.lower().lstrip(".")
        if writable_format(extension) is None:
            self.fail(f"{value!r} is not an image type Pillow can write (use e.g. png, bmp, tif, webp)", param, ctx)
        return extension


class Task(Protocol):
    """What ``encode`` or ``decode`` does to one file; picklable, so worker processes can run it."""

    @property
    def model_path(self) -> Path | None: ...

    def __call__(self, source: Path, output: Path, timer: Timer) -> str: ...


@dataclass(frozen=True)
class EncodeTask:
    """Encode one image at a quality or λ, or by rate control to a size, bpp or PSNR target."""

    model_path: Path | None
    force: bool
    verbose: bool
    quality: float | None = None
    lmbda: float | None = None
    target_size: int | None = None
    target_bpp: float | None = None
    target_psnr: float | None = None

    def __post_init__(self) -> None:
        settings = ("quality", "lmbda", "target_size", "target_bpp", "target_psnr")
        given = ["--" + name.replace("_", "-") for name in settings if getattr(self, name) is not None]
        if len(given) == 2:
            raise YotoError(f"give {given[0]} or {given[1]}, not both")
        if len(given) > 2:
            raise YotoError(f"give only one of {', '.join(given)}")

    def __call__(self, source: Path, output: Path, timer: Timer) -> str:
        with timer("load model"):
            model = load_model(self.model_path)
        with timer("read image"):
            image = read_image(source)
        trials = None
        with timer("encode"):
            if self.target_size is not None:
                data, trials = encode_to_size(image, self.target_size, model=model)
            elif self.target_bpp is not None:
                data, trials = encode_to_bpp(image, self.target_bpp, model=model)
            elif self.target_psnr is not None:
                data, trials = encode_to_psnr(image, self.target_psnr, model=model)
            else:
                data = encode(image, self.quality, lmbda=self.lmbda, model=model)
        with timer("write"), open_output(output, self.force) as f:
            f.write(data)
        info = inspect(data, model=model)
        line = (
            f"{shown(output, 'stdout')}: {info.width}×{info.height} {info.mode}, quality {info.quality:.1f}, "
            f"{info.num_bytes} bytes, {info.bpp:.3f} bpp"
        )
        if trials is not None:
            line += f" ({trials} trial encoding{'s' if trials != 1 else ''})"
        return f"{line}\n{timer.report()}" if self.verbose else line


@dataclass(frozen=True)
class DecodeTask:
    """Decode one file into the image type of ``extension``, or else of the output's own extension."""

    model_path: Path | None
    force: bool
    verbose: bool
    extension: str | None = None

    def __call__(self, source: Path, output: Path, timer: Timer) -> str:
        fmt = writable_format(self.extension) if self.extension else output_format(output)
        with timer("read"):
            data = read_bytes(source)
        with timer("load model"):
            model = load_model(self.model_path)
        with timer("decode"):
            image = decode(data, model=model)
        with timer("write"), open_output(output, self.force) as f:
            image.save(f, format=fmt)
        line = f"{shown(output, 'stdout')}: {image.width}×{image.height} {image.mode}"
        return f"{line}\n{timer.report()}" if self.verbose else line


def code_files(task: Task, inputs: Sequence[Path], output: Path | None, suffix: str, jobs: int) -> None:
    """One input: to ``output`` (default: the input with ``suffix``). Several: into the directory ``output``."""
    if len(inputs) == 1:
        source = inputs[0]
        if output is None:
            if source == STDIO:
                raise YotoError("reading from stdin needs -o/--output (a file, or - for stdout)")
            output = source.with_suffix(suffix)
        click.echo(task(source, output, Timer()), err=output == STDIO)
        return
    code_batch(task, batch_outputs(inputs, output, suffix), jobs)


def batch_outputs(inputs: Sequence[Path], output: Path | None, suffix: str) -> list[tuple[Path, Path]]:
    """Where each of several inputs goes: into the directory ``output`` (created if missing), or beside itself."""
    if STDIO in inputs:
        raise YotoError("- (stdin) must be the only input")
    if output == STDIO:
        raise YotoError("-o - (stdout) takes a single input")
    if output is not None and output.exists() and not output.is_dir():
        raise YotoError(f"{output} is not a directory (with several inputs, -o names a directory)")
    pairs = [(source, (output / source.name if output else source).with_suffix(suffix)) for source in inputs]
    first: dict[Path, Path] = {}
    for source, target in pairs:
        if target in first:
            raise YotoError(f"{first[target]} and {source} would both be written to {target}")
        first[target] = source
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    return pairs


def code_one(task: Task, source: Path, output: Path) -> tuple[bool, str]:
    """One file of a batch: (True, its status line) or (False, ``file: message``) for an expected failure."""
    try:
        return True, task(source, output, Timer())
    except Exception as exc:
        message = error_message(exc)
        if message is None:
            raise
        return False, f"{source}: {message.removeprefix(f'{source}: ')}"


def start_worker(model_path: Path | None, threads: int) -> None:
    """A worker takes its share of the cores, leaves Ctrl-C to the parent, and loads the model once (it is cached)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    load_model(model_path)


def code_batch(task: Task, pairs: list[tuple[Path, Path]], jobs: int) -> None:
    """Code every file, a line each and a progress bar on stderr; a failed file is reported and skipped (exit 1)."""
    load_model(task.model_path)  # a bad --model is one error for the whole command, not one per file
    failures = done = 0
    with tqdm(total=len(pairs), unit="file", file=sys.stderr, disable=None) as bar:

        def report(ok: bool, line: str) -> None:
            nonlocal failures, done
            with bar.external_write_mode():
                click.echo(line if ok else f"error: {line}", err=not ok)
            failures += not ok
            done += 1
            bar.update()

        try:
            if jobs == 1:
                for source, output in pairs:
                    report(*code_one(task, source, output))
            else:
                workers = min(jobs, len(pairs))
                pool = ProcessPoolExecutor(
                    workers,
                    mp_context=multiprocessing.get_context("spawn"),  # fork would copy torch's thread pools
                    initializer=start_worker,
                    initargs=(task.model_path, max(1, torch.get_num_threads() // workers)),
                )
                try:
                    futures = [pool.submit(code_one, task, source, output) for source, output in pairs]
                    for future in as_completed(futures):
                        report(*future.result())
                finally:
                    pool.shutdown(cancel_futures=True)
        except KeyboardInterrupt:
            click.echo(f"error: interrupted after {done} of {len(pairs)} files (the rest were not written)", err=True)
            sys.exit(130)
    if failures:
        sys.exit(1)


model_option = click.option(
    "--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Weights file (default: the shipped model).",
)  # fmt: skip
force_option = click.option("-f", "--force", is_flag=True, help="Overwrite an existing output file.")
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Print timings.")
inputs_argument = click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, type=click.Path(path_type=Path))
jobs_option = click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
    help="Worker processes for several inputs.",
)  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="yotocodec")
def main() -> None:
    """Variable-rate learned image codec: one model, every quality."""


@main.command("encode")
@inputs_argument
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=None,
    help="Default: INPUT with .yoto. - is stdout; with several inputs, a directory.",
)  # fmt: skip
@click.option(
    "-q",
    "--quality",
    type=click.FloatRange(0, 100),
    default=None,
    help=f"0 (smallest) to 100 (best), any real number  [default: {DEFAULT_QUALITY:g}]",
)
@click.option("--lmbda", type=float, default=None, help="Rate–distortion trade-off λ instead of --quality.")
@click.option("--target-size", type=ByteSize(), default=None, help="Best quality that fits: 40KB, 64KiB, 1.5MB, 900B.")
@click.option(
    "--target-bpp", type=click.FloatRange(0, min_open=True), default=None,
    help="Best quality within this many bits per pixel.",
)  # fmt: skip
@click.option("--target-psnr", type=float, default=None, help="Smallest file whose RGB PSNR reaches this many dB.")
@jobs_option
@model_option
@force_option
@verbose_option
def encode_command(
    inputs: tuple[Path, ...],
    output: Path | None,
    quality: float | None,
    lmbda: float | None,
    target_size: int | None,
    target_bpp: float | None,
    target_psnr: float | None,
    jobs: int,
    model_path: Path | None,
    force: bool,
    verbose: bool,
) -> None:
    """Compress image files to .yoto files (INPUT - reads stdin)."""

    def action() -> None:
        task = EncodeTask(model_path, force, verbose, quality, lmbda, target_size, target_bpp, target_psnr)
        code_files(task, inputs, output, ".yoto", jobs)

    run_reporting_errors(action)


@main.command("decode")
@inputs_argument
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=None,
    help="Default: INPUT with .png. - is stdout; with several inputs, a directory.",
)  # fmt: skip
@click.option(
    "--format", "extension", type=ImageType(), default=None,
    help="Output type (png, bmp, tif, webp…) instead of -o's extension; default PNG for - and several inputs.",
)  # fmt: skip
@jobs_option
@model_option
@force_option
@verbose_option
def decode_command(
    inputs: tuple[Path, ...],
    output: Path | None,
    extension: str | None,
    jobs: int,
    model_path: Path | None,
    force: bool,
    verbose: bool,
) -> None:
    """Decompress .yoto files to images (format from the output's extension or --format; INPUT - reads stdin)."""
    task = DecodeTask(model_path, force, verbose, extension)
    run_reporting_errors(lambda: code_files(task, inputs, output, extension or ".png", jobs))


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
