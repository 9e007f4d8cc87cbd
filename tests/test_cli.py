"""The command line: round trips, info, and a one-line error with exit code 1 for every bad input."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import photo_crop, sane_psnr, srgb_profile, synthetic
from PIL import Image

import yotocodec
from yotocodec.cli import main
from yotocodec.loading import default_model_path
from yotocodec.metrics import psnr


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture
def png(tmp_path) -> Path:
    path = tmp_path / "in.png"
    photo_crop(120, 90).save(path)
    return path


@pytest.fixture
def yoto(png, tmp_path) -> Path:
    out = tmp_path / "in.yoto"
    code, output = run("encode", png, "-q", "70", "-o", out)
    assert code == 0, output
    return out


def assert_fails(args: list, message: str, tmp_path: Path | None = None) -> None:
    before = set(tmp_path.iterdir()) if tmp_path else set()
    code, output = run(*args)
    assert code == 1, output
    assert output.startswith("error: ") and output.count("\n") == 1, output
    assert message in output, output
    assert "Traceback" not in output
    if tmp_path:  # nothing half-written is left behind
        assert set(tmp_path.iterdir()) == before


def assert_usage_error(args: list, message: str, tmp_path: Path) -> None:
    """A malformed command line: exit code 2 and click's usage message, before any file is touched."""
    before = set(tmp_path.iterdir())
    code, output = run(*args)
    assert code == 2 and f"Error: {message}" in output and "Traceback" not in output, output
    assert set(tmp_path.iterdir()) == before


def test_encode_decode_info(png, tmp_path):
    out, back = tmp_path / "a.yoto", tmp_path / "a.png"
    code, output = run("encode", png, "-q", "80", "-o", out, "-v")
    assert code == 0 and "bpp" in output and "timings:" in output, output
    code, output = run("decode", out, "-o", back)
    assert code == 0, output
    original, decoded = np.asarray(Image.open(png)), np.asarray(Image.open(back))
    assert decoded.shape == original.shape and psnr(original, decoded) > sane_psnr(original)
    code, output = run("info", out)
    assert code == 0
    assert "120×90 RGB" in output and "quality:  80.00" in output and "λ = " in output and "bpp" in output
    assert "(format version 3)" in output


@pytest.mark.parametrize("extension", [".png", ".jpg", ".webp", ".tif"])
def test_colour_profile_reaches_the_decoded_file(tmp_path, extension):
    source, coded, back = tmp_path / "p3.png", tmp_path / "p3.yoto", tmp_path / f"back{extension}"
    photo_crop(48, 40).save(source, icc_profile=srgb_profile())
    assert run("encode", source, "-o", coded)[0] == 0
    code, output = run("info", coded)
    assert code == 0 and f"ICC profile, {len(srgb_profile())} bytes" in output, output
    assert run("decode", coded, "-o", back)[0] == 0
    assert Image.open(back).info.get("icc_profile") == srgb_profile()


def test_exif_reaches_the_decoded_file_unless_stripped(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90° counter-clockwise on display
    exif[0x010F] = "Yoto Camera Co."
    source = tmp_path / "photo.jpg"
    photo_crop(48, 40).save(source, exif=exif, quality=95)
    for flags, make in (((), "Yoto Camera Co."), (("--strip-exif",), None)):
        coded, back = tmp_path / "photo.yoto", tmp_path / "back.jpg"
        assert run("encode", source, "-o", coded, "-f", *flags)[0] == 0
        assert ("EXIF," in run("info", coded)[1]) == (make is not None)
        assert run("decode", coded, "-o", back, "-f")[0] == 0
        decoded = Image.open(back)
        assert decoded.size == (40, 48)  # upright either way
        assert decoded.getexif().get(0x010F) == make and 0x0112 not in decoded.getexif()


def test_default_output_names(png):
    assert run("encode", png)[0] == 0
    assert png.with_suffix(".yoto").exists()
    png.unlink()
    assert run("decode", png.with_suffix(".yoto"))[0] == 0
    assert png.exists()


def test_lambda_option(png, tmp_path, model):
    code, output = run("encode", png, "--lmbda", str(model.config.lmbda_min * 2), "-o", tmp_path / "l.yoto")
    assert code == 0, output


def test_existing_output_needs_force(png, yoto, tmp_path):
    original = yoto.read_bytes()
    assert_fails(["encode", png, "-q", "10", "-o", yoto], "exists (use --force", tmp_path)
    assert yoto.read_bytes() == original
    assert run("encode", png, "-q", "10", "-o", yoto, "--force")[0] == 0
    assert yoto.read_bytes() != original


def test_missing_input(tmp_path):
    assert_fails(["encode", tmp_path / "nope.png", "-o", tmp_path / "x.yoto"], "no such file", tmp_path)
    assert_fails(["decode", tmp_path / "nope.yoto", "-o", tmp_path / "x.png"], "no such file", tmp_path)
    assert_fails(["info", tmp_path / "nope.yoto"], "no such file", tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello, I am not an image\n"])
def test_non_image_input(tmp_path, content):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    assert_fails(["encode", bad, "-o", tmp_path / "x.yoto"], "not an image file", tmp_path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_input(tmp_path, fmt):
    path = tmp_path / f"t.{fmt.lower()}"
    synthetic(200, 150).save(path, format=fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_fails(["encode", path, "-o", tmp_path / "x.yoto"], "cannot decode image", tmp_path)


def test_bad_quality_and_both_settings(png, tmp_path):
    code, output = run("encode", png, "-q", "101", "-o", tmp_path / "x.yoto")
    assert code == 2 and "101" in output  # click's own usage error
    assert_usage_error(["encode", png, "-q", "5", "--lmbda", "0.01", "-o", tmp_path / "x.yoto"], "give", tmp_path)
    assert_fails(["encode", png, "--lmbda", "5", "-o", tmp_path / "x.yoto"], "outside this model's trained range")


def test_unknown_output_type(yoto, tmp_path):
    assert_fails(["decode", yoto, "-o", tmp_path / "x.unknown"], "unknown output image type", tmp_path)


def corrupt(data: bytes, how: str) -> bytes:
    if how == "magic":
        return b"JUNK" + data[4:]
    if how == "version":
        return data[:4] + bytes([9]) + data[5:]
    if how == "truncated":
        return data[: len(data) - 10]
    if how == "crc":
        return data[:-1] + bytes([data[-1] ^ 0x55])
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("magic", "not a yotocodec file"),
        ("version", "unsupported format version 9"),
        ("truncated", "truncated"),
        ("crc", "CRC32 mismatch"),
    ],
)
def test_corrupt_bitstreams(yoto, tmp_path, how, message):
    bad = tmp_path / "bad.yoto"
    bad.write_bytes(corrupt(yoto.read_bytes(), how))
    assert_fails(["decode", bad, "-o", tmp_path / "x.png"], message, tmp_path)
    assert_fails(["info", bad], message, tmp_path)


def test_oversized_declared_image(tmp_path):
    """A header that declares a huge image is refused before anything is allocated."""
    fields = b"YOTO" + bytes([1]) + bytes(4) + struct.pack(">H", 0) + bytes([1]) + b"\xff\xff\x03" * 2 + b"\x01\x00"
    path = tmp_path / "huge.yoto"
    path.write_bytes(fields + struct.pack(">I", zlib.crc32(fields)))
    assert_fails(["decode", path, "-o", tmp_path / "x.png"], "exceeds the limit", tmp_path)


def test_file_from_another_model(png, tmp_path, other_model_path, model):
    out = tmp_path / "other.yoto"
    assert run("encode", png, "--model", other_model_path, "-o", out)[0] == 0
    assert_fails(["decode", out, "-o", tmp_path / "x.png"], "written by model", tmp_path)
    code, output = run("info", out)
    assert code == 0 and "not known to this version" in output and "λ unknown" in output
    code, output = run("info", out, "--model", other_model_path)
    assert code == 0 and "λ = " in output


def test_info_with_a_bad_model_fails_instead_of_falling_back(png, tmp_path):
    """A --model that cannot be loaded is an error even when the file's own model is registered."""
    out, bad = tmp_path / "a.yoto", tmp_path / "bad.pt"
    assert run("encode", png, "-q", "10", "-o", out)[0] == 0
    bad.write_bytes(b"not weights")
    assert_fails(["info", out, "--model", bad], "not a yotocodec weights file")
    assert_fails(["info", out, "--model", tmp_path / "missing.pt"], "model file not found")
    code, output = run("info", out)
    assert code == 0 and "λ = " in output, output


def test_ratecontrol_is_reachable_after_import_yotocodec():
    """The README's `yotocodec.ratecontrol.encode_to_size(...)` works after a plain `import yotocodec`."""
    code = "import yotocodec; print(yotocodec.ratecontrol.encode_to_size is yotocodec.encode_to_size)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "True\n", result.stderr


def test_models_lists_the_registry(png, tmp_path, model):
    """`models` lists what this version carries, the default marked; `info` names a file's model and its status."""
    code, output = run("models")
    assert code == 0 and f"{model.model_id}" in output and "default" in output and "not carried" not in output
    code, output = run("models", "--all")
    assert code == 0 and "88beb1d9" in output and "not carried (commit 4b5f032)" in output
    out = tmp_path / "a.yoto"
    assert run("encode", png, "-o", out)[0] == 0
    code, output = run("info", out)
    assert code == 0 and f"model:    {model.model_id} (default; yotocodec" in output


def test_bad_model_file(png, tmp_path):
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"not weights")
    assert_fails(["encode", png, "--model", fake, "-o", tmp_path / "x.yoto"], "not a yotocodec weights file", tmp_path)
    # A weights file whose model has a setting this version does not know (one from a newer yotocodec).
    payload = torch.load(default_model_path(), weights_only=True)
    payload["config"]["new_setting"] = 1
    newer = tmp_path / "newer.pt"
    torch.save(payload, newer)
    assert_fails(["encode", png, "--model", newer, "-o", tmp_path / "x.yoto"], "written by a newer yotocodec", tmp_path)


def test_console_script_reports_without_traceback(tmp_path):
    """The installed entry point itself (not just click's runner) exits 1 with one line."""
    proc = subprocess.run(
        [sys.executable, "-m", "yotocodec", "decode", str(tmp_path / "missing.yoto")], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: no such file") and "Traceback" not in proc.stderr


def test_target_size(png, tmp_path, model):
    image = Image.open(png)
    smallest, largest = (len(yotocodec.encode(image, q, model=model)) for q in (0, 100))
    target = (smallest + largest) // 2
    out = tmp_path / "t.yoto"
    for spelled in (f"{target}", f"{target}B", f"{target / 1000}KB"):
        code, output = run("encode", png, "--target-size", spelled, "-o", out, "-f")
        assert code == 0, output
        assert 0.98 * target <= out.stat().st_size <= target
        assert "trial encodings)" in output and f"{out.stat().st_size} bytes" in output
    too_small = smallest // 2
    code, output = run("encode", png, "--target-size", f"{too_small}B", "-o", out, "-f")
    assert (
        code == 1
        and f"a target of {too_small} bytes is below the smallest encoding of this image ({smallest}" in output
    )


def test_target_bpp_and_psnr(png, tmp_path):
    out = tmp_path / "t.yoto"
    code, output = run("encode", png, "--target-bpp", "50", "-o", out)  # above the range: quality 100, 1 trial
    assert code == 0 and "quality 100.0" in output and "(1 trial encoding)" in output, output
    code, output = run("encode", png, "--target-psnr", "1", "-o", out, "-f")  # below: quality 0, 1 trial
    assert code == 0 and "quality 0.0" in output and "(1 trial encoding)" in output, output
    assert_fails(["encode", png, "--target-psnr", "99", "-o", tmp_path / "x.yoto"], "out of reach", tmp_path)
    assert_fails(["encode", png, "--target-bpp", "0.01", "-o", tmp_path / "x.yoto"], "below the smallest", tmp_path)


def test_target_options_are_exclusive_and_checked(png, tmp_path):
    out = tmp_path / "x.yoto"
    assert_usage_error(
        ["encode", png, "-q", "5", "--target-size", "4KB", "-o", out],
        "give --quality or --target-size, not both",
        tmp_path,
    )
    assert_usage_error(
        ["encode", png, "--lmbda", "0.01", "--target-bpp", "1", "--target-psnr", "30", "-o", out],
        "give only one of --lmbda, --target-bpp, --target-psnr",
        tmp_path,
    )
    assert_usage_error(
        ["encode", png, "--effort", "1", "--target-size", "4KB", "-o", out], "--effort cannot be combined", tmp_path
    )
    for args in (["--target-size", "12XB"], ["--target-bpp", "0"], ["--target-psnr", "high"]):
        code, output = run("encode", png, *args, "-o", out)
        assert code == 2 and "Invalid value" in output, output


def yotocodec_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "yotocodec", *args], input=stdin, capture_output=True)


def test_pipes(png, model):
    """``encode - -o -`` and ``decode - -o -`` are filters: data on stdout, the status line on stderr."""
    encoded = yotocodec_cli("encode", "-", "-q", "50", "-o", "-", stdin=png.read_bytes())
    assert encoded.returncode == 0, encoded.stderr
    assert encoded.stdout == yotocodec.encode(Image.open(png), 50, model=model)
    assert encoded.stderr.decode().startswith("<stdout>: 120×90 RGB, quality 50.0")
    decoded = yotocodec_cli("decode", "-", "-o", "-", stdin=encoded.stdout)
    assert decoded.returncode == 0 and decoded.stderr.decode() == "<stdout>: 120×90 RGB\n", decoded.stderr
    with Image.open(io.BytesIO(decoded.stdout)) as image:
        assert image.format == "PNG" and np.array_equal(np.asarray(image), np.asarray(yotocodec.decode(encoded.stdout)))


def test_stdio_with_click_runner(png, yoto, tmp_path):
    result = CliRunner().invoke(main, ["decode", str(yoto), "-o", "-", "--format", "bmp", "-v"])
    assert result.exit_code == 0 and result.stdout_bytes[:2] == b"BM"
    assert result.stderr.startswith("<stdout>: 120×90 RGB\ntimings: ")
    result = CliRunner().invoke(main, ["encode", "-", "-o", str(tmp_path / "s.yoto")], input=png.read_bytes())
    assert result.exit_code == 0 and result.stdout.startswith(f"{tmp_path / 's.yoto'}: 120×90 RGB")
    result = CliRunner().invoke(main, ["encode", "-", "-o", str(tmp_path / "t.yoto")], input=b"junk")
    assert result.exit_code == 1 and result.stderr == "error: <stdin>: not an image file Pillow can read\n"


def test_stdin_needs_an_output(png, yoto):
    for command, source in (("encode", png), ("decode", yoto)):
        result = CliRunner().invoke(main, [command, "-"], input=source.read_bytes())
        assert result.exit_code == 1
        assert result.stderr == "error: reading from stdin needs -o/--output (a file, or - for stdout)\n"


def test_existing_output_is_refused_before_any_coding(png, yoto, tmp_path, monkeypatch):
    """The --force check comes first: no seconds spent encoding or decoding for an output that cannot be written."""
    import yotocodec.batch

    def must_not_run(*args, **kwargs):
        raise AssertionError("coded although the output exists")

    monkeypatch.setattr(yotocodec.batch, "encode", must_not_run)
    monkeypatch.setattr(yotocodec.batch, "decode", must_not_run)
    assert_fails(["encode", png, "-o", yoto], "exists (use --force")
    existing_png = tmp_path / "exists.png"
    existing_png.write_bytes(b"x")
    assert_fails(["decode", yoto, "-o", existing_png], "exists (use --force")


def test_effort_option(png, tmp_path):
    code, output = run("encode", png, "-q", "50", "--effort", "1", "-o", tmp_path / "e.yoto")
    assert code == 0, output
    assert_usage_error(
        ["encode", png, "--target-bpp", "0.5", "--effort", "1", "-o", tmp_path / "f.yoto"], "--effort cannot", tmp_path
    )


def test_help_info_models_and_opening_a_file_header_do_not_load_torch(png, tmp_path):
    """Importing torch and CompressAI takes seconds: only coding (and training) may pay for it."""
    data = yotocodec.encode(Image.open(png), 40)
    path = tmp_path / "a.yoto"
    path.write_bytes(data)
    script = """if True:
        import sys
        from PIL import Image
        import yotocodec
        from yotocodec.cli import main
        for args in (["--help"], ["encode", "--help"], ["train", "--help"], ["models"], ["info", sys.argv[1]]):
            try:
                main(args)
            except SystemExit as exc:
                assert exc.code == 0, (args, exc.code)
        with Image.open(sys.argv[1]) as image:
            assert image.size == (120, 90)
        print("torch loaded" if "torch" in sys.modules else "torch not loaded")
    """
    run = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "torch not loaded"
    assert "quality:  40.00" in run.stdout
