"""Many files per command: into a directory, one error line per bad file, the rest still coded, exit code 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import synthetic
from PIL import Image

import yotocodec
from yotocodec.cli import main


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def images(tmp_path) -> list[Path]:
    """Three good images of different modes and formats, and one file that is not an image."""
    paths = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.jpg", tmp_path / "bad.png"]
    synthetic(80, 60).save(paths[0])
    synthetic(64, 48, "RGBA", seed=1).save(paths[1])
    synthetic(48, 48, "L").save(paths[2])
    paths[3].write_bytes(b"not an image")
    return paths


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_encode_many_into_a_new_directory(images, tmp_path, model, jobs):
    out = tmp_path / "new" / "dir"
    result = run("encode", *images, "-q", "40", "-o", out, "--jobs", jobs)
    assert result.exit_code == 1
    assert result.stderr == f"error: {images[3]}: not an image file Pillow can read\n"
    assert sorted(p.name for p in out.iterdir()) == ["a.yoto", "b.yoto", "c.yoto"]
    for source in images[:3]:
        data = (out / source.with_suffix(".yoto").name).read_bytes()
        assert data == yotocodec.encode(Image.open(source), 40, model=model)
        assert f"{out / source.with_suffix('.yoto').name}: " in result.stdout


def test_decode_many(images, tmp_path):
    assert run("encode", *images[:3], "-q", "30").exit_code == 0  # no -o: each beside its input
    yotos = [p.with_suffix(".yoto") for p in images[:3]]
    result = run("decode", *yotos, "-o", tmp_path / "decoded", "--format", "bmp")
    assert result.exit_code == 0 and result.stderr == "", result.output
    for source in images[:3]:
        with Image.open(tmp_path / "decoded" / source.with_suffix(".bmp").name) as decoded:
            assert decoded.format == "BMP" and decoded.size == Image.open(source).size
    result = run("decode", *yotos, "-o", tmp_path / "png")
    assert result.exit_code == 0 and len(list((tmp_path / "png").glob("*.png"))) == 3


def test_existing_outputs_are_reported_and_kept(images, tmp_path):
    out = tmp_path / "out"
    assert run("encode", *images[:2], "-q", "10", "-o", out).exit_code == 0
    before = {p: p.read_bytes() for p in out.iterdir()}
    result = run("encode", *images[:2], "-q", "90", "-o", out)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {images[0]}: {out / 'a.yoto'} exists (use --force to overwrite it)",
        f"error: {images[1]}: {out / 'b.yoto'} exists (use --force to overwrite it)",
    ]
    assert {p: p.read_bytes() for p in out.iterdir()} == before
    assert run("encode", *images[:2], "-q", "90", "-o", out, "--force").exit_code == 0
    assert all(p.read_bytes() != before[p] for p in out.iterdir())


def test_corrupt_file_among_many(images, tmp_path):
    assert run("encode", *images[:2], "-o", tmp_path / "y").exit_code == 0
    bad = tmp_path / "y" / "b.yoto"
    bad.write_bytes(bad.read_bytes()[:-1])
    result = run("decode", tmp_path / "y" / "a.yoto", bad, "-o", tmp_path / "z")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {bad}: truncated") and result.stderr.count("\n") == 1
    assert [p.name for p in (tmp_path / "z").iterdir()] == ["a.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "{file}"], "is not a directory (with several inputs, -o names a directory)"),
        (["-o", "-"], "-o - (stdout) takes a single input"),
        (["-", "-o", "{dir}"], "- (stdin) must be the only input"),
        (["{same}", "-o", "{dir}"], "would both be written to"),
    ],
)
def test_refused_before_any_work(images, tmp_path, args, message):
    names = {"file": images[0], "dir": tmp_path / "out", "same": tmp_path / "sub" / "a.png"}
    (tmp_path / "sub").mkdir()
    synthetic(16, 16).save(names["same"])
    result = run("encode", *images[:2], *[a.format(**names) for a in args])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists() and not images[0].with_suffix(".yoto").exists()


def test_bad_model_is_one_error(images, tmp_path):
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"not weights")
    result = run("encode", *images[:2], "--model", fake, "-o", tmp_path / "out")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "not a yotocodec weights file" in result.stderr
