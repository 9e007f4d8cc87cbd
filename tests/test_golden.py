"""Files outlive models: every golden file of every released model decodes, and the registry finds its model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic
from golden import GOLDEN, MANIFEST, PIXEL_TOLERANCE, symbols_digest
from PIL import Image

import yotocodec
from yotocodec import registry
from yotocodec.config import ModelConfig
from yotocodec.model import YotoHyperprior
from yotocodec.weights import load_weights, save_weights

CASES = sorted(
    (folder.name, name)
    for folder in GOLDEN.iterdir()
    if folder.is_dir()
    for name in json.loads((folder / MANIFEST).read_text())
)


def expected(model_id: str, name: str) -> dict:
    return json.loads((GOLDEN / model_id / MANIFEST).read_text())[name]


@pytest.mark.parametrize(("model_id", "name"), CASES)
def test_golden_file_decodes(model_id: str, name: str) -> None:
    """Decoded with no model named: the registry supplies it; pixels within one step of those recorded."""
    data = (GOLDEN / model_id / f"{name}.yoto").read_bytes()
    image = yotocodec.decode(data)
    want = expected(model_id, name)
    assert (image.mode, list(image.size)) == (want["mode"], want["size"])
    reference = np.asarray(Image.open(GOLDEN / model_id / f"{name}.png"), dtype=np.int16)
    assert np.abs(np.asarray(image, dtype=np.int16) - reference).max() <= PIXEL_TOLERANCE
    assert yotocodec.inspect(data).model_id == model_id


@pytest.mark.parametrize(("threads", "onednn"), [(1, True), (2, True), (1, False), (2, False)])
def test_golden_symbols_are_portable(threads: int, onednn: bool) -> None:
    """The decoded symbols and scale indexes are bit-identical with 1 or 2 threads and with oneDNN on or off."""
    before = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = onednn
    try:
        for model_id, name in CASES:
            data = (GOLDEN / model_id / f"{name}.yoto").read_bytes()
            assert symbols_digest(data) == expected(model_id, name)["symbols_sha256"], (model_id, name)
    finally:
        torch.set_num_threads(before[0])
        torch.backends.mkldnn.enabled = before[1]


def test_every_carried_model_has_golden_files() -> None:
    """A model enters the registry with its golden set: RGB at several qualities, greyscale, RGBA, an odd size."""
    for entry in registry.registered_models():
        if entry.path is None:
            continue
        manifest = json.loads((GOLDEN / entry.model_id / MANIFEST).read_text())
        modes = {case["mode"] for case in manifest.values()}
        assert {"RGB", "L", "RGBA"} <= modes
        assert len({case["quality"] for case in manifest.values()}) >= 3
        assert any(size % 16 for case in manifest.values() for size in case["size"])


def test_registry_matches_the_weights() -> None:
    """Each carried file is the model its id names, over the λ range the registry states (``info`` uses it)."""
    ids = [entry.model_id for entry in registry.registered_models()]
    assert len(ids) == len(set(ids))
    for entry in registry.registered_models():
        if entry.path is None:
            continue
        model, _ = load_weights(entry.path)
        assert model.model_id == entry.model_id
        assert (model.config.lmbda_min, model.config.lmbda_max) == (entry.lmbda_min, entry.lmbda_max)


def _tiny_model(path: Path, seed: int) -> str:
    torch.manual_seed(seed)
    model = YotoHyperprior(ModelConfig(N=8, M=8, lmbda_min=0.001, lmbda_max=0.1, cond_dim=4))
    return save_weights(model, path)


def _registry(folder: Path, default: str, carried: dict[str, str | None]) -> Path:
    rows = [
        {"id": i, "file": f, "released": "2026-12-03", "version": "9.9", "commit": "abc1234",
         "lambda_range": [0.001, 0.1], "steps": 0}
        for i, f in carried.items()
    ]  # fmt: skip
    path = folder / "registry.json"
    path.write_text(json.dumps({"format": "yotocodec-registry", "version": 1, "default": default, "models": rows}))
    return path


def test_file_decodes_after_a_new_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoded with the default model, the file still decodes, unchanged, once another model becomes the default;
    once its model is no longer carried, the error names it and the version that shipped it."""
    old = _tiny_model(tmp_path / "old.pt", 0)
    new = _tiny_model(tmp_path / "new.pt", 1)
    monkeypatch.setenv(registry.REGISTRY_ENV, str(_registry(tmp_path, old, {old: "old.pt"})))
    data = yotocodec.encode(synthetic(40, 24), 50)
    before = np.asarray(yotocodec.decode(data))

    monkeypatch.setenv(registry.REGISTRY_ENV, str(_registry(tmp_path, new, {new: "new.pt", old: "old.pt"})))
    assert yotocodec.load_model().model_id == new
    assert yotocodec.inspect(data).model_id == old
    np.testing.assert_array_equal(np.asarray(yotocodec.decode(data)), before)
    np.testing.assert_array_equal(np.asarray(yotocodec.decode(data, model=tmp_path / "new.pt")), before)

    monkeypatch.setenv(registry.REGISTRY_ENV, str(_registry(tmp_path, new, {new: "new.pt", old: None})))
    with pytest.raises(yotocodec.YotoError, match=rf"written by model {old} \(the default of yotocodec 9.9.*abc1234"):
        yotocodec.decode(data)
    np.testing.assert_array_equal(np.asarray(yotocodec.decode(data, model=tmp_path / "old.pt")), before)


def test_bad_registry_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "registry.json"
    path.write_text("{not json")
    monkeypatch.setenv(registry.REGISTRY_ENV, str(path))
    with pytest.raises(yotocodec.YotoError, match="not a yotocodec model registry"):
        registry.registered_models()
    _registry(tmp_path, "0badc0de", {"0badc0de": None})
    with pytest.raises(yotocodec.YotoError, match="default model 0badc0de is not listed with a weights file"):
        registry.registered_models()
