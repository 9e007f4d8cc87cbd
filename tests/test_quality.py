"""The quality ↔ header code ↔ λ mapping, and atomic writes: small pieces every other part relies on."""

from __future__ import annotations

import math
import os
import stat

import pytest

from yotocodec.atomic import atomic_write
from yotocodec.config import ModelConfig
from yotocodec.container import LAMBDA_CODE_MAX
from yotocodec.errors import YotoError
from yotocodec.quality import LambdaRange, code_for_lambda, code_for_quality, lambda_of, quality_of

RANGE = LambdaRange(0.0008, 2.0)


def test_codes_span_the_range_log_linearly():
    assert lambda_of(0, RANGE) == pytest.approx(0.0008) and lambda_of(LAMBDA_CODE_MAX, RANGE) == pytest.approx(2.0)
    middle = lambda_of(round(LAMBDA_CODE_MAX / 2), RANGE)
    assert middle == pytest.approx(math.sqrt(0.0008 * 2.0), rel=1e-4)
    for code in (0, 1, 12345, LAMBDA_CODE_MAX):
        assert code_for_lambda(lambda_of(code, RANGE), RANGE) == code
        assert code_for_quality(quality_of(code)) == code


def test_lambda_of_a_code_is_the_float_every_version_computed():
    """Decoders condition the hyper-synthesis on this float: it must stay bit-identical to the 0.1 formula."""
    lo, hi = math.log(0.0008), math.log(2.0)
    for code in (0, 7, 32768, 49151, LAMBDA_CODE_MAX):
        assert lambda_of(code, RANGE) == math.exp(lo + (hi - lo) * code / LAMBDA_CODE_MAX)


def test_the_network_input_is_the_same_position_stretched_onto_minus_one_to_one():
    config = ModelConfig(lmbda_min=0.0008, lmbda_max=2.0)
    a, b = config.normalisation()
    lo, hi = math.log(0.0008), math.log(2.0)
    assert (a, b) == (2.0 / (hi - lo), -2.0 * lo / (hi - lo) - 1.0)  # the weights were trained on exactly these
    assert ModelConfig(lmbda_min=0.05, lmbda_max=0.05).normalisation() == (0.0, 0.0)


def test_out_of_range_requests_are_refused():
    with pytest.raises(YotoError, match="outside this model's trained range"):
        code_for_lambda(3.0, RANGE)
    for quality in (-1, 101, float("nan")):
        with pytest.raises(YotoError, match="quality must be between 0 and 100"):
            code_for_quality(quality)
    assert code_for_quality(None) == round(0.5 * LAMBDA_CODE_MAX)


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path):
    target = tmp_path / "weights.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["weights.pt"]
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["weights.pt"]


def test_atomic_write_gives_files_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "out.yoto") as f:
            f.write(b"x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.yoto").stat().st_mode) == 0o644
