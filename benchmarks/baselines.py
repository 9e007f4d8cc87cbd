"""Per-λ baselines at a matched budget: five fixed-λ models and one loss-conditional model, all trained alike.

``python -m benchmarks.baselines --steps 5000 --runs ~/yoto-runs/baselines`` trains, with the ordinary training
pipeline, one fixed-λ model per λ (log-spaced over the single model's range) and one loss-conditional model over the
whole range, each for the same number of steps with the same architecture, data, patch and batch size, learning
rate and schedule; then exports them to ``models/baselines/`` (``lambda-*.pt`` and ``single.pt``).  Interrupted runs
continue where they stopped when the command is run again (``--max-minutes`` bounds one invocation).  To use more
cores, start the command more than once: each run directory is locked while one invocation trains it, so the others
take the next free run instead (each exports what it trained).  ``--single-steps`` gives the single model its own
budget, e.g. five times ``--steps`` to match the five per-λ models' budget in all (run and file ``single-N``).  The
exported files are not committed (git ignores ``models/baselines/``): this command reproduces them.  Compare with::

    python -m benchmarks.rd --codecs model,baselines --model models/baselines/single.pt \\
        --baselines 'models/baselines/lambda-*.pt' --out benchmarks/results/matched
"""

from __future__ import annotations

import fcntl
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from yotocodec.cli import recipe_options
from yotocodec.model import ModelConfig
from yotocodec.training.checkpoint import CHECKPOINT_NAME, export
from yotocodec.training.loop import train
from yotocodec.training.recipe import PRECISIONS, TrainConfig

DEFAULT_DATA = Path("../shared/data/train")
DEFAULT_OUT = Path("models/baselines")


def baseline_lambdas(lmbda_min: float, lmbda_max: float, count: int) -> list[float]:
    """``count`` values log-spaced over the range, ends included, rounded to 4 significant digits for file names."""
    return [float(f"{v:.4g}") for v in np.geomspace(lmbda_min, lmbda_max, count)]


def plan(
    base: TrainConfig, runs: Path, lambdas: list[float], single_steps: int | None = None
) -> dict[str, TrainConfig]:
    """Run configurations keyed by output name: the single model and one fixed-λ model per λ, otherwise identical.

    A single model with its own number of steps gets its own run (``single-N``): a finished run extended to more
    steps would not be the same as one planned for them, whose learning-rate decay comes at the end.
    """
    name = "single" if single_steps in (None, base.steps) else f"single-{single_steps}"
    configs = {name: replace(base, run_dir=str(runs / name), steps=single_steps or base.steps)}
    for lmbda in lambdas:
        model = replace(base.model, lmbda_min=lmbda, lmbda_max=lmbda)
        configs[f"lambda-{lmbda:g}"] = replace(base, run_dir=str(runs / f"lambda-{lmbda:g}"), model=model,
                                               fixed_lambda=lmbda)  # fmt: skip
    return configs


@contextmanager
def claim(run_dir: Path) -> Iterator[bool]:
    """Whether this process may train the run: False while another invocation holds it (the lock dies with it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True


def train_and_export(name: str, cfg: TrainConfig, minutes_left: float, out: Path) -> str:
    """Train one run to its steps and export it: "exported", "stopped" (out of time) or "busy" (another has it)."""
    with claim(Path(cfg.run_dir)) as mine:
        if not mine:
            return "busy"
        try:
            _, record = train(replace(cfg, max_minutes=None if math.isinf(minutes_left) else minutes_left))
        except (ValueError, FileNotFoundError) as exc:
            raise click.ClickException(f"{name}: {exc}") from None
        if record["step"] < cfg.steps:
            click.echo(f"{name} stopped at step {record['step']} of {cfg.steps}: run again to continue", err=True)
            return "stopped"
        model_id = export(Path(cfg.run_dir) / CHECKPOINT_NAME, out / f"{name}.pt")
    click.echo(f"{name}: {cfg.steps} steps, exported {out / f'{name}.pt'} ({model_id})", err=True)
    return "exported"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Parent folder of the run directories (keep it outside the repository).")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), required=True, help="Training steps of every model.")
@click.option("--single-steps", type=click.IntRange(min=1), default=None,
              help="Training steps of the single model (default: --steps).")  # fmt: skip
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA, show_default=True)
@click.option("--count", type=click.IntRange(min=2), default=5, show_default=True, help="Number of per-λ models.")
@recipe_options
@click.option("--max-minutes", type=float, default=None, help="Stop (checkpoints written) after this long in all.")
@click.option("--compile/--no-compile", default=False, show_default=True, help="As `yotocodec train --compile`.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="As `yotocodec train --precision`.")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True)
def main(
    runs: Path,
    steps: int,
    single_steps: int | None,
    data: Path,
    count: int,
    arch: str,
    N: int,
    M: int,
    lambda_min: float,
    lambda_max: float,
    batch_size: int,
    patch_size: int,
    lr: float,
    lambda_weighting: float,
    max_minutes: float | None,
    compile: bool,
    precision: str,
    out: Path,
) -> None:
    """Train and export the per-λ baselines and a single model with exactly their budget."""
    base = TrainConfig(
        data=str(data),
        run_dir="",
        model=ModelConfig(arch=arch, N=N, M=M, lmbda_min=lambda_min, lmbda_max=lambda_max),
        batch_size=batch_size,
        patch_size=patch_size,
        lr=lr,
        lambda_weighting=lambda_weighting,
        steps=steps,
        compile=compile,
        precision=precision,
    )
    deadline = time.monotonic() + max_minutes * 60 if max_minutes else math.inf
    out.mkdir(parents=True, exist_ok=True)
    busy = []
    for name, cfg in plan(base, runs, baseline_lambdas(lambda_min, lambda_max, count), single_steps).items():
        left = (deadline - time.monotonic()) / 60
        if left <= 0:
            click.echo(f"time is up before {name}: run the same command again to continue", err=True)
            return
        outcome = train_and_export(name, cfg, left, out)
        if outcome == "busy":
            busy.append(name)
        elif outcome == "stopped":
            return
    if busy:
        click.echo(f"{', '.join(busy)}: being trained by another invocation when reached (it exports them)", err=True)


if __name__ == "__main__":
    main()
