"""Coding many files: what ``encode`` and ``decode`` do to one file, and running that over several files, in worker
processes if asked, so that one bad file is reported and skipped instead of stopping the rest."""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import click
import torch
from tqdm import tqdm

from .codec import decode, encode
from .errors import YotoError
from .files import (
    STDIO,
    check_output,
    error_message,
    open_output,
    output_format,
    read_bytes,
    read_image,
    shown,
    writable_format,
)
from .inspection import inspect
from .loading import load_model
from .metadata import INFO_KEYS, without_exif
from .ratecontrol import encode_to_bpp, encode_to_psnr, encode_to_size


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
    effort: int = 0
    strip_exif: bool = False

    def __post_init__(self) -> None:
        settings = ("quality", "lmbda", "target_size", "target_bpp", "target_psnr")
        given = ["--" + name.replace("_", "-") for name in settings if getattr(self, name) is not None]
        if len(given) == 2:
            raise YotoError(f"give {given[0]} or {given[1]}, not both")
        if len(given) > 2:
            raise YotoError(f"give only one of {', '.join(given)}")
        if self.effort and given and given[0].startswith("--target"):
            raise YotoError("--effort cannot be combined with a rate target (each trial would pay the effort)")

    def __call__(self, source: Path, output: Path, timer: Timer) -> str:
        check_output(output, self.force)
        with timer("load model"):
            model = load_model(self.model_path)
        with timer("read image"):
            image = read_image(source)
            if self.strip_exif:
                image = without_exif(image)
        trials = None
        with timer("encode"):
            if self.target_size is not None:
                data, trials = encode_to_size(image, self.target_size, model=model)
            elif self.target_bpp is not None:
                data, trials = encode_to_bpp(image, self.target_bpp, model=model)
            elif self.target_psnr is not None:
                data, trials = encode_to_psnr(image, self.target_psnr, model=model)
            else:
                data = encode(image, self.quality, lmbda=self.lmbda, model=model, effort=self.effort)
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
        check_output(output, self.force)
        with timer("read"):
            data = read_bytes(source)
        with timer("load model"):  # without --model, decode loads the model the file names
            model = load_model(self.model_path) if self.model_path is not None else None
        with timer("decode"):
            image = decode(data, model=model)
        metadata = {key: value for key in INFO_KEYS if (value := image.info.get(key))}
        with timer("write"), open_output(output, self.force) as f:  # not every Pillow writer looks in image.info
            image.save(f, format=fmt, **metadata)
        line = f"{shown(output, 'stdout')}: {image.width}×{image.height} {image.mode}"
        return f"{line}\n{timer.report()}" if self.verbose else line


def code_files(task: Task, inputs: Sequence[Path], output: Path | None, suffix: str, jobs: int) -> int:
    """One input: to ``output`` (default: the input with ``suffix``). Several: into the directory ``output``.

    Returns how many files failed (each already reported); a single file's failure is raised instead.
    """
    if len(inputs) == 1:
        source = inputs[0]
        if output is None:
            if source == STDIO:
                raise YotoError("reading from stdin needs -o/--output (a file, or - for stdout)")
            output = source.with_suffix(suffix)
        click.echo(task(source, output, Timer()), err=output == STDIO)
        return 0
    return code_batch(task, batch_outputs(inputs, output, suffix), jobs)


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


def code_batch(task: Task, pairs: list[tuple[Path, Path]], jobs: int) -> int:
    """Code every file, a line each and a progress bar on stderr; a failed file is reported and skipped.

    Returns the number of failed files. Ctrl-C raises a KeyboardInterrupt whose message says how far it got.
    """
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
            raise KeyboardInterrupt(
                f"interrupted after {done} of {len(pairs)} files (the rest were not written)"
            ) from None
    return failures
