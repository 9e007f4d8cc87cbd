"""Training patches: shape and range, what a crop is made of, reproducibility, the device they are cut on, and the
preference for detail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import synthetic
from PIL import Image

from yotocodec.training.data import PatchSampler, detail, image_to_tensor


@pytest.fixture
def image_dir(tmp_path):
    for seed, size in enumerate([(200, 150), (96, 300), (64, 64)]):
        synthetic(*size, seed=seed).save(tmp_path / f"{seed}.png")
    return tmp_path


def test_patches_have_the_asked_shape_and_range(image_dir):
    batch = PatchSampler(image_dir, 64, progress=False).sample(5, np.random.default_rng(0))
    assert batch.shape == (5, 3, 64, 64) and batch.dtype == torch.float32
    assert 0 <= batch.min() and batch.max() <= 1 and batch.std() > 0.05


def test_images_smaller_than_a_patch_are_skipped(image_dir):
    assert len(PatchSampler(image_dir, 96, progress=False)) == 2
    with pytest.raises(ValueError, match="no images of at least 400×400 pixels"):
        PatchSampler(image_dir, 400, progress=False)


def test_an_image_the_size_of_a_patch_is_the_patch_or_its_mirror(tmp_path):
    image = synthetic(48, 48, seed=3)
    image.save(tmp_path / "only.png")
    sampler = PatchSampler(tmp_path, 48, scale_range=(1.0, 1.0), progress=False)
    expected = image_to_tensor(np.array(image))
    seen = {torch.equal(patch[None], expected) for patch in sampler.sample(16, np.random.default_rng(1))}
    mirrored = {torch.equal(patch[None], expected.flip(-1)) for patch in sampler.sample(16, np.random.default_rng(1))}
    assert seen == {True, False} and mirrored == {True, False}  # both orientations occur, nothing else


def test_the_same_generator_state_gives_the_same_batch(image_dir):
    sampler = PatchSampler(image_dir, 64, progress=False)
    first, second = (sampler.sample(4, np.random.default_rng(7)) for _ in range(2))
    assert torch.equal(first, second)
    assert not torch.equal(first, sampler.sample(4, np.random.default_rng(8)))


def test_patches_are_cut_on_the_device_that_keeps_the_images(image_dir):
    """A GPU run keeps its images on the GPU and never waits for the host to prepare a batch ("meta" stands in)."""
    sampler = PatchSampler(image_dir, 64, progress=False, device="meta")
    assert all(image.device.type == "meta" for image in sampler.images)
    assert sampler.sample(3, np.random.default_rng(0)).device.type == "meta"


def test_more_candidates_draw_busier_patches(tmp_path):
    """With several candidates a patch is the most detailed crop: a busy photo wins over a smooth one."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "busy.png")
    synthetic(64, 64, seed=1).resize((16, 16)).resize((64, 64)).save(tmp_path / "smooth.png")
    sampler = PatchSampler(tmp_path, 64, scale_range=(1.0, 1.0), progress=False)
    busy = detail(image_to_tensor(sampler.images[0].numpy()))  # the images are in sorted order: busy, smooth
    assert busy > 100 * detail(image_to_tensor(sampler.images[1].numpy()))

    def busy_share(candidates: int) -> float:
        sampler.candidates = candidates
        patches = sampler.sample(32, np.random.default_rng(3))
        return np.mean([detail(patch[None]) == pytest.approx(busy) for patch in patches])

    assert 0.25 < busy_share(1) < 0.75 and busy_share(2) > busy_share(1) and busy_share(6) > 0.95
    with pytest.raises(ValueError, match="candidates must be at least 1"):
        PatchSampler(tmp_path, 64, candidates=0, progress=False)
