"""The ``yotocodec`` command line: parse, call the public API, report."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from . import registry
from .config import ARCHITECTURES, CONTEXTS, FILM_SCALES, PRECISIONS, ModelConfig
from .errors import YotoError
from .files import error_message, writable_format
from .inspection import inspect
from .quality import DEFAULT_QUALITY

# The coding, training and export commands import what they run (and torch with it) when they run: the help, `info`
# and `models` answer without it.

DEFAULT_TRAIN_DATA = Path("../shared/data/train")
DEFAULT_KODAK = Path("../shared/data/kodak")


def run_reporting_errors(action: Callable[[], None]) -> None:
    """Turn every expected failure into a one-line message and exit code 1 (130 on Ctrl-C); never a traceback."""
    try:
        action()
    except KeyboardInterrupt as exc:
        # a batch's interrupt says how far it got; a single file was not written at all
        click.echo(f"error: {str(exc) or 'interrupted; no output written'}", err=True)
        sys.exit(130)
    except Exception as exc:
        message = error_message(exc)
        if message is None:
            raise
        fail(message)


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class ByteSize(click.ParamType):
    """``--target-size``: 40KB, 64KiB, 1.5MB or a plain number of bytes."""

    name = "size"

    def convert(self, value: str | int, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from .ratecontrol import parse_size

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


model_option = click.option(
    "--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Weights file (default: the shipped model).",
)  # fmt: skip
force_option = click.option("-f", "--force", is_flag=True, help="Overwrite an existing output file.")
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Print timings.")
inputs_argument = click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, type=click.Path(path_type=Path))


def output_option(suffix: str) -> Callable:
    return click.option(
        "-o", "--output", type=click.Path(path_type=Path), default=None,
        help=f"Default: INPUT with {suffix}. - is stdout; with several inputs, a directory.",
    )  # fmt: skip


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
@output_option(".yoto")
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
@click.option(
    "--effort", type=click.IntRange(0, 3), default=0, show_default=True,
    help="Refine the latent of each image by gradient steps on its own loss: smaller files, slower encoding.",
)  # fmt: skip
@click.option(
    "--strip-exif", is_flag=True,
    help="Leave the EXIF block (capture date, camera, GPS position) out; its orientation is still applied.",
)  # fmt: skip
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
    effort: int,
    strip_exif: bool,
    jobs: int,
    model_path: Path | None,
    force: bool,
    verbose: bool,
) -> None:
    """Compress image files to .yoto files (INPUT - reads stdin)."""

    def action() -> None:
        from .batch import EncodeTask, code_files  # torch: seconds, inside the Ctrl-C handling

        try:  # options that cannot go together are a malformed command line
            task = EncodeTask(
                model_path, force, verbose, quality, lmbda, target_size, target_bpp, target_psnr, effort, strip_exif
            )
        except YotoError as exc:
            raise click.UsageError(str(exc)) from None
        if code_files(task, inputs, output, ".yoto", jobs):
            sys.exit(1)

    run_reporting_errors(action)


@main.command("decode")
@inputs_argument
@output_option(".png")
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

    def action() -> None:
        from .batch import DecodeTask, code_files  # torch: seconds, inside the Ctrl-C handling

        task = DecodeTask(model_path, force, verbose, extension)
        if code_files(task, inputs, output, extension or ".png", jobs):
            sys.exit(1)

    run_reporting_errors(action)


@main.command("info")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option(
    "--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Weights file of a model this version does not carry (for its λ).",
)  # fmt: skip
def info_command(input_path: Path, model_path: Path | None) -> None:
    """Describe a .yoto file: size, quality and λ, bytes, bpp, model."""

    def action() -> None:
        info = inspect(input_path.read_bytes(), model=model_path)
        lmbda = f"λ = {info.lmbda:.5g}" if info.lmbda is not None else "λ unknown: written by a model not at hand"
        click.echo(f"file:     {input_path}")
        click.echo(f"image:    {info.width}×{info.height} {info.mode}")
        click.echo(f"quality:  {info.quality:.2f} ({lmbda})")
        click.echo(f"size:     {info.num_bytes} bytes, {info.bpp:.4f} bpp (format version {info.format_version})")
        stored = {"ICC profile": info.metadata.icc_profile, "EXIF": info.metadata.exif}
        if any(stored.values()):
            click.echo(
                "metadata: " + "; ".join(f"{name}, {len(value)} bytes" for name, value in stored.items() if value)
            )
        entry = registry.find(info.model_id)
        if entry is None:
            click.echo(f"model:    {info.model_id} (not known to this version)")
        else:
            click.echo(f"model:    {info.model_id} ({entry.status}; yotocodec {entry.version}, {entry.released})")

    run_reporting_errors(action)


@main.command("models")
@click.option("--all", "show_all", is_flag=True, help="Also list earlier models that this version does not carry.")
def models_command(show_all: bool) -> None:
    """List the models this version carries (any of them decodes its own files) and which one encodes."""

    def action() -> None:
        click.echo(f"{'id':<9} {'released':<11} {'version':<8} {'λ range':<15} {'steps':>8} {'size':>8}  status")
        for entry in registry.registered_models():
            if entry.path is None and not show_all:
                continue
            size = f"{entry.num_bytes / 1e6:.1f} MB" if entry.path is not None else "-"
            status = entry.status if entry.path is not None else f"not carried (commit {entry.commit})"
            click.echo(
                f"{entry.model_id:<9} {entry.released:<11} {entry.version:<8} "
                f"{f'{entry.lmbda_min:g}–{entry.lmbda_max:g}':<15} {entry.steps:>8,} {size:>8}  {status}"
            )

    run_reporting_errors(action)


def recipe_options(command: Callable) -> Callable:
    """The model and recipe options of `yotocodec train`, shared with the per-λ baselines benchmark."""
    options = [
        click.option("--arch", type=click.Choice(ARCHITECTURES), default=ModelConfig.arch,
                     show_default=True),
        click.option("--N", "N", type=int, default=ModelConfig.N, show_default=True,
                     help="Channels of the transforms."),
        click.option("--M", "M", type=int, default=ModelConfig.M, show_default=True, help="Channels of the latent y."),
        click.option("--film", type=click.Choice(FILM_SCALES), default=ModelConfig.film, show_default=True,
                     help="FiLM scale: exp(γ) (every model up to 0.2.0) or linear γ (experimental), whose closed "
                     "channels can reopen; --init-from an exp model converts it (fitted over its λ range)."),
        click.option("--context", type=click.Choice(CONTEXTS), default=ModelConfig.context, show_default=True,
                     help="Context model of the latent: none, or checkerboard (two-pass, He et al. 2021).  With "
                     "--init-from or --resume of a model without one, it is added so as to change nothing at first."),
        click.option("--context-lr-factor", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
                     help="The context model's learning rate as a factor of --lr: above 1 for one added to a trained "
                     "model, which starts at zero and has far to go."),
        click.option("--lambda-min", type=float, default=ModelConfig.lmbda_min, show_default=True),
        click.option("--lambda-max", type=float, default=ModelConfig.lmbda_max, show_default=True),
        click.option("--batch-size", type=int, default=8, show_default=True),
        click.option("--patch-size", type=int, default=128, show_default=True),
        click.option("--detail-candidates", type=click.IntRange(1), default=1, show_default=True,
                     help="Train each patch on the most detailed of this many random crops (2: about as busy as "
                     "Kodak; the training photos are smoother)."),
        click.option("--lr", type=float, default=1e-3, show_default=True),
        click.option("--lambda-weighting", type=float, default=0.5, show_default=True,
                     help="Weight each example's loss by (λ_ref/λ)^P so low-rate examples are not drowned out."),
        click.option("--film-lr-factor", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
                     help="Learning rate of the conditioning (λ embedding and FiLM heads) as a factor of --lr; "
                     "below 1 for --film linear, whose small scales a full-rate Adam step overshoots."),
        click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
                     help="Also keep a moving average of the weights (e.g. 0.999; 0: off), validated alongside; "
                     "`export --ema`."),
        click.option("--decoder-quantizer", type=click.Choice(["noise", "ste"]), default="noise", show_default=True,
                     help="What the synthesis transform trains on: the noisy latent, or the rounded one "
                     "(straight-through)."),
        click.option("--compile/--no-compile", default=False, show_default=True,
                     help="Run training through torch.compile: faster steps after a minute or so of compiling."),
        click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
                     help="bf16: run the transforms in bfloat16 (mixed precision; the entropy models stay in "
                     "float32). Faster on GPUs and on CPUs with AMX or AVX512-BF16."),
        click.option("--seed", type=int, default=0, show_default=True),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


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
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --run-dir with its own settings; only --lr, --lambda-weighting, --ema-decay, "
    "--decoder-quantizer, --compile, --precision, --batch-size, --patch-size, --detail-candidates, "
    "--context (to add one), --context-lr-factor, --steps (e.g. to extend a finished run), --max-minutes and the "
    "λ range (--lambda-min/--lambda-max, e.g. to widen it) may be changed.",
)
@recipe_options
@click.option("--fixed-lambda", type=float, default=None, help="Train an ordinary single-λ model at this λ.")
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
    help="Start a new run from a weights file (e.g. the shipped model); its networks and λ range unless given. "
    "A larger --N/--M widens it, computing the same images at first.",
)
@click.option(
    "--revive-channels",
    "revive_steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="STEPS",
    help="With --init-from: reopen the latent channels the starting model has switched off (and, with a larger "
    "--N/--M, the new ones), sparing them the rate for the first half of STEPS and phasing it in over the second "
    "(0: off).",
)
@click.option(
    "--revive-partly-closed",
    is_flag=True,
    help="With --revive-channels: also reopen the latent channels switched off at some λ only (a trained model "
    "also closes channels from the top of its range), raising their scale where it is low and keeping it elsewhere.",
)
@click.option(
    "--freeze-inherited",
    is_flag=True,
    help="With --init-from and a larger --N/--M: train only the weights of the new channels, so the starting model "
    "stays inside the wider one unchanged (the new channels can only add to it).",
)
def train(**options: Any) -> None:
    """Train a λ-conditioned model (or, with --fixed-lambda, a per-λ baseline)."""
    from .training import loop, recipe
    from .training.checkpoint import CHECKPOINT_NAME

    ctx = click.get_current_context()
    given = {name for name in options if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    if options["val_dir"] is None and DEFAULT_KODAK.is_dir():
        options["val_dir"] = DEFAULT_KODAK
    try:
        _, final = loop.train(recipe.resolve(options, given))
    except recipe.ConflictingOptionsError as exc:
        raise click.UsageError(str(exc)) from None
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"stopped at step {final['step']}; checkpoint in {options['run_dir'] / CHECKPOINT_NAME}")


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--provisional", is_flag=True, help="Mark an early checkpoint shipped before it meets its quality bar.")
@click.option("--ema", is_flag=True, help="Export the run's moving average of the weights (train --ema-decay).")
def export(checkpoint: Path, output: Path, provisional: bool, ema: bool) -> None:
    """Write a shippable weights file (model only, float16 parameters) from a training checkpoint."""
    from .training.checkpoint import export as export_weights

    try:
        model_id = export_weights(checkpoint, output, provisional, ema=ema)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {output} (model id {model_id}, {output.stat().st_size / 1e6:.1f} MB)")
