"""The README's results: the shipped model's points and its BD-rates, written by ``python -m benchmarks.rd``.

Hand-copied figures go stale when the model or a codec is re-measured; this block is rewritten from ``rd.json`` by the
run that produces it.  Only the text between the two marker comments is replaced, the rest of the file is left as is.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from .bd import bd_rate
from .codecs import CODECS
from .report import METRICS, curve, model_rows, score

START = "<!-- rd-results:start -->"
END = "<!-- rd-results:end -->"
METRIC_NAMES = {"psnr": "PSNR", "ms_ssim_db": "MS-SSIM", "ssimulacra2": "SSIMULACRA2"}


def _row(name: str, cells: list[str]) -> str:
    return f"| {name} | " + " | ".join(cells) + " |"


def _measured(values: list[float | None]) -> bool:
    return any(v is not None and math.isfinite(v) for v in values)


def quality_table(entry: dict) -> list[str]:
    """bpp, PSNR, MS-SSIM (and SSIMULACRA2 where measured) of the single model, one column per quality."""
    rows = model_rows(entry)
    lines = [
        _row("quality", [f"{r['setting']:g}" for r in rows]),
        "|---" * (1 + len(rows)) + "|",
        _row("bpp", [f"{r['bpp']:.3f}" for r in rows]),
        _row("PSNR (dB)", [f"{r['psnr']:.2f}" for r in rows]),
        _row("MS-SSIM", [f"{r['ms_ssim']:.4f}" for r in rows]),
    ]
    if _measured([r.get("ssimulacra2") for r in rows]):
        lines.append(_row("SSIMULACRA2", [score(r.get("ssimulacra2")) for r in rows]))
    return lines


def _percent(value: float) -> str:
    """A signed percentage with a typographic minus, as the README writes them; n/a without an overlap."""
    return "n/a" if not math.isfinite(value) else f"{value:+.1f} %".replace("-", "−")


def bd_rate_table(codecs: dict[str, dict]) -> list[str]:
    """BD-rate of the single model against each classic codec, one row per quality measure (none: no codecs)."""
    model = codecs["model"]
    others = [key for key in codecs if key in CODECS]
    if not others:
        return []
    rates = {m: [bd_rate(*curve(codecs[key], m), *curve(model, m)) for key in others] for m in METRICS}
    lines = [
        _row(f"BD-rate of `{model['model_id']}` against", [codecs[key]["label"] for key in others]),
        "|---" * (1 + len(others)) + "|",
    ]
    for metric, values in rates.items():
        if metric == "psnr" or _measured(values):
            lines.append(_row(f"bits for the same {METRIC_NAMES[metric]}", [_percent(v) for v in values]))
    return lines


def results_block(results: dict) -> str:
    """The markdown between the markers: the single model's points, then its BD-rates against the classic codecs."""
    codecs = results["codecs"]
    bd_lines = bd_rate_table(codecs)
    return "\n".join([*quality_table(codecs["model"]), *(["", *bd_lines] if bd_lines else [])]) + "\n"


def _marker_positions(text: str, path: Path) -> tuple[int, int]:
    """Where the block starts (after the start marker) and ends (at the end marker); a clear error otherwise."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(END) < text.index(START):
        raise click.ClickException(
            f"{path} needs exactly one {START} line followed by one {END} line around the results table "
            "(or pass --no-readme)"
        )
    return text.index(START) + len(START), text.index(END)


def check_markers(path: Path) -> None:
    """Fail now, before hours of measuring, if the README cannot be rewritten at the end."""
    if not path.is_file():
        raise click.ClickException(f"{path} not found (pass --readme PATH or --no-readme)")
    _marker_positions(path.read_text(), path)


def replace_block(text: str, block: str, path: Path) -> str:
    """``text`` with everything between the markers replaced by ``block``; both markers and all else kept."""
    start, end = _marker_positions(text, path)
    return f"{text[:start]}\n\n{block.strip()}\n\n{text[end:]}"


def update_readme(path: Path, results: dict) -> None:
    """Rewrite the results block of ``path`` from the benchmark's results (they must include the single model)."""
    path.write_text(replace_block(path.read_text(), results_block(results), path))
    click.echo(f"rewrote the results table in {path}", err=True)
