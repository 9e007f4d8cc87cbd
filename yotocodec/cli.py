"""The ``yotocodec`` command line: parse, call the public API, report."""

from __future__ import annotations

from pathlib import Path

import click

from .model import ModelConfig

DEFAULT_TRAIN_DATA = Path("../shared/data/train")
DEFAULT_KODAK = Path("../shared/data/kodak")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="yotocodec")
def main() -> None:
    """Variable-rate learned image codec: one model, every quality."""


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
        final = training.train(cfg)
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
