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

A staged recipe is matched from its own first stage: ``--init-from`` starts every run from the same trained model
(e.g. the top-λ model of stage 1), keeping its networks and, unless given, its λ range; each per-λ run then fine-tunes
that model at its λ, the single model trains the variable-rate stage, and with ``--ema-decay`` every run exports its
weight average, as the shipped model does.
"""

from __future__ import annotations

import fcntl
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import click
import numpy as np
from click.core import ParameterSource

from yotocodec.cli import recipe_options
from yotocodec.config import ModelConfig
from yotocodec.training.checkpoint import CHECKPOINT_NAME, export
from yotocodec.training.loop import train
from yotocodec.training.recipe import TrainConfig
from yotocodec.weights import load_weights

DEFAULT_DATA = Path("../shared/data/train")
DEFAULT_OUT = Path("models/baselines")


def baseline_lambdas(lmbda_min: float, lmbda_max: float, count: int) -> list[float]:
    """``count`` values log-spaced over the range, ends included, rounded to 4 significant digits for file names."""
    return [float(f"{v:.4g}") for v in np.geomspace(lmbda_min, lmbda_max, count)]


def plan(
    base: TrainConfig, runs: Path, lambdas: list[float], single_steps: int | None = None, single: bool = True
) -> dict[str, TrainConfig]:
    """Run configurations keyed by output name: the single model and one fixed-λ model per λ, otherwise identical.

    A single model with its own number of steps gets its own run (``single-N``): a finished run extended to more
    steps would not be the same as one planned for them, whose learning-rate decay comes at the end.
    """
    configs = {}
    if single:
        name = "single" if single_steps in (None, base.steps) else f"single-{single_steps}"
        configs[name] = replace(base, run_dir=str(runs / name), steps=single_steps or base.steps)
    for lmbda in lambdas:
        # A fine-tune keeps the starting model's λ range (its conditioning input); a fresh model is trained on λ alone.
        model = base.model if base.init_from else replace(base.model, lmbda_min=lmbda, lmbda_max=lmbda)
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
        model_id = export(Path(cfg.run_dir) / CHECKPOINT_NAME, out / f"{name}.pt", ema=cfg.ema_decay > 0)
    click.echo(f"{name}: {cfg.steps} steps, exported {out / f'{name}.pt'} ({model_id})", err=True)
    return "exported"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Parent folder of the run directories (keep it outside the repository).")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), required=True, help="Training steps of every model.")
@click.option("--single-steps", type=click.IntRange(min=1), default=None,
              help="Training steps of the single model (default: --steps).")  # fmt: skip
@click.option("--single/--no-single", default=True, show_default=True,
              help="Also train the single model; --no-single when it is trained elsewhere (a staged recipe's own "
              "variable-rate stage from the same --init-from model).")  # fmt: skip
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA, show_default=True)
@click.option("--count", type=click.IntRange(min=2), default=5, show_default=True, help="Number of per-λ models.")
@click.option("--init-from", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Start every run from this trained model (e.g. stage 1 of a staged recipe): its networks and, "
              "unless given, its λ range; the per-λ runs fine-tune it at their λ.")  # fmt: skip
@recipe_options
@click.option("--max-minutes", type=float, default=None, help="Stop (checkpoints written) after this long in all.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True)
def main(runs: Path, steps: int, single_steps: int | None, single: bool, count: int, max_minutes: float | None,
         out: Path, **recipe: Any) -> None:  # fmt: skip
    """Train and export the per-λ baselines and a single model with exactly their budget."""
    ctx = click.get_current_context()
    given = {name for name in recipe if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    base = base_config(recipe, given, steps)
    deadline = time.monotonic() + max_minutes * 60 if max_minutes else math.inf
    out.mkdir(parents=True, exist_ok=True)
    busy = []
    lambdas = baseline_lambdas(base.model.lmbda_min, base.model.lmbda_max, count)
    for name, cfg in plan(base, runs, lambdas, single_steps, single).items():
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


def base_config(recipe: dict[str, Any], given: set[str], steps: int) -> TrainConfig:
    """The settings every run shares; from --init-from, that model's networks and (unless given) its λ range."""
    model = ModelConfig(arch=recipe["arch"], N=recipe["N"], M=recipe["M"], lmbda_min=recipe["lambda_min"],
                        lmbda_max=recipe["lambda_max"], film=recipe["film"], context=recipe["context"])  # fmt: skip
    if recipe["init_from"] is not None:
        start = load_weights(recipe["init_from"])[0].config
        chosen = {f"lmbda_{end}": recipe[f"lambda_{end}"] for end in ("min", "max") if f"lambda_{end}" in given}
        chosen |= {name: recipe[name] for name in ("film", "context") if name in given}
        model = replace(start, **chosen)
    settings = {f.name: recipe[f.name] for f in fields(TrainConfig) if f.name in recipe}
    settings.update(data=str(recipe["data"]), init_from=recipe["init_from"] and str(recipe["init_from"]))
    return TrainConfig(run_dir="", model=model, steps=steps, **settings)


if __name__ == "__main__":
    main()
