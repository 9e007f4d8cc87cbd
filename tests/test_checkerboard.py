"""The checkerboard context model: its two coding passes agree with training's one, it starts out changing nothing,
and a file coded with it decodes to exactly the latent the encoder quantised."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import synthetic

import yotocodec
from yotocodec import checkerboard, isolation
from yotocodec.config import ModelConfig
from yotocodec.model import YotoHyperprior
from yotocodec.training.surgery import add_context
from yotocodec.weights import save_weights

TINY = ModelConfig(N=16, M=24, lmbda_min=0.002, lmbda_max=0.2, context="checkerboard")


def with_context_in_use(seed: int = 0) -> YotoHyperprior:
    """A tiny checkerboard model whose refinement is not zero (a new one changes nothing)."""
    torch.manual_seed(seed)
    model = YotoHyperprior(TINY)
    torch.nn.init.normal_(model.context.refinement[-1].weight, std=0.1)
    return model.eval()


def test_split_and_merge_are_inverse_and_anchors_are_the_even_squares():
    t = torch.arange(2 * 3 * 4 * 6.0).reshape(2, 3, 4, 6)
    anchor_half, other_half = checkerboard.split(t)
    assert anchor_half.shape == other_half.shape == (2, 3, 4, 3)
    assert torch.equal(checkerboard.merge(anchor_half, other_half), t)
    mask = checkerboard.anchors(t.shape)
    assert mask[0, 0] and not mask[0, 1] and mask[1, 1] and int(mask.sum()) == 12
    assert torch.equal(anchor_half.sort(dim=-1).values.flatten(-2).sort().values,
                       t[..., mask].sort().values)  # fmt: skip


def test_coding_pass_gives_the_training_pass_parameters():
    context = with_context_in_use().context.double()
    scales, means, latent = (torch.randn(1, 24, 8, 12, dtype=torch.float64) for _ in range(3))
    full = torch.cat(checkerboard.refined(context, scales, means, latent), dim=1)
    (anchor_scales, other_scales), (_, other_means) = checkerboard.split(scales), checkerboard.split(means)
    with torch.inference_mode():
        other = context.other_params(anchor_scales, other_scales, other_means, checkerboard.split(latent)[0])
    full_anchors, full_others = checkerboard.split(full)
    assert torch.equal(full_anchors, checkerboard.split(torch.cat((scales, means), dim=1))[0])  # anchors: hyperprior's
    assert not torch.allclose(full_others, torch.cat((other_scales, other_means), dim=1))  # the others are refined...
    assert torch.allclose(full_others, torch.cat(other, dim=1), rtol=0, atol=1e-12)  # ...the same way in both passes


def test_a_non_anchor_parameter_depends_only_on_neighbouring_anchors():
    context = with_context_in_use().context.double()
    scales, means, latent = (torch.zeros(1, 24, 8, 8, dtype=torch.float64) for _ in range(3))
    latent.requires_grad_(True)
    refined = torch.cat(checkerboard.refined(context, scales, means, latent), dim=1)
    refined[0, :, 4, 3].sum().backward()  # a non-anchor position
    reached = latent.grad.abs().sum(dim=(0, 1)) > 0
    assert reached.any() and not (reached & ~checkerboard.anchors(latent.shape)).any()
    assert not reached[:, :1].any() and not reached[:, 6:].any()  # 5×5 window only


def test_an_added_context_changes_nothing_until_trained():
    torch.manual_seed(1)
    plain = YotoHyperprior(ModelConfig(N=16, M=24)).eval()
    given = add_context(plain, "checkerboard").eval()
    assert given.config.context == "checkerboard" and not given.training
    x, lmbda = torch.rand(2, 3, 64, 64), torch.tensor([0.01, 0.1])
    with torch.no_grad():
        a, b = plain(x, lmbda), given(x, lmbda)
    assert torch.equal(a["x_hat"], b["x_hat"]) and torch.equal(a["likelihoods"]["y"], b["likelihoods"]["y"])


def test_a_context_needs_the_mean_scale_architecture():
    with pytest.raises(ValueError, match="mean-scale"):
        ModelConfig(arch="scale", context="checkerboard")
    with pytest.raises(ValueError, match="unknown context"):
        ModelConfig(context="serial")


@pytest.mark.parametrize("size", [(70, 90), (130, 64)])
def test_files_decode_to_the_latent_the_encoder_quantised(tmp_path, size):
    path = tmp_path / "cb.pt"
    save_weights(with_context_in_use(), path)
    image = synthetic(*size, seed=3)
    data = yotocodec.encode(image, 60, model=path)
    decoded = np.asarray(yotocodec.decode(data, model=path), dtype=np.float64)
    assert decoded.shape == (size[1], size[0], 3)

    net = yotocodec.load_model(path)
    y = torch.randn(1, 24, 6, 10, dtype=torch.float32) * 4  # not a multiple of h_a's stride: padded for it
    emb = net.embed(torch.tensor([0.02], dtype=torch.float64))
    strings, shapes = net.compress_latent(y, emb)
    assert shapes == ((6, 10), (2, 3))
    for coder in (None, isolation.decoder()):
        y_hat, parts = net.decode_latent(strings, shapes, emb, coder)
        z_hat = net.entropy_bottleneck.decompress([strings[1]], shapes.z)
        scales, means = net.gaussian_params(z_hat, emb, shapes.y)
        coded = checkerboard.coding_order(net.context, y, scales, means)
        expected = checkerboard.merge(*(torch.round(v - m) + m for v, _, m in coded))
        assert torch.equal(y_hat, expected)
        assert torch.equal(parts["y"].double(), torch.round(y_hat - checkerboard.merge(*(m for *_, m in coded))))


def test_a_latent_with_odd_sides_codes_only_its_own_positions(tmp_path):
    """Format 3 pads an image only to a multiple of 16, so the latent may have odd sides: the checkerboard packs it as
    if padded to even sides but codes only the real positions, each decoded within 0.5 of the encoder's value."""
    save_weights(with_context_in_use(), tmp_path / "cb.pt")
    net = yotocodec.load_model(tmp_path / "cb.pt")
    emb = net.embed(torch.tensor([0.02], dtype=torch.float64))
    y = torch.randn(1, 24, 7, 9, dtype=torch.float32) * 4
    strings, shapes = net.compress_latent(y, emb)
    even = torch.cat([y, y[..., -1:, :]], dim=-2)
    even = torch.cat([even, even[..., -1:]], dim=-1)  # the same latent padded to 8×10: more to code
    assert shapes.y == (7, 9) and len(strings[0]) < len(net.compress_latent(even, emb)[0][0])
    decoded = [net.decode_latent(strings, shapes, emb, coder) for coder in (None, isolation.decoder())]
    for y_hat, parts in decoded:
        assert y_hat.shape[-2:] == parts["y"].shape[-2:] == parts["indexes"].shape[-2:] == (7, 9)
        assert (y_hat - y.double()).abs().max() <= 0.5
    assert torch.equal(decoded[0][0], decoded[1][0])


def test_damaged_strings_of_a_checkerboard_file_end_in_an_image_or_an_error(tmp_path):
    """The second pass is computed from whatever the first decoded: garbage in, a garbage picture or a YotoError out."""
    import random

    from yotocodec.container import pack, unpack

    path = tmp_path / "cb.pt"
    save_weights(with_context_in_use(), path)
    header, strings = unpack(yotocodec.encode(synthetic(40, 30, seed=1), 50, model=path))
    rng, outcomes = random.Random(0), set()
    for _ in range(40):
        damaged = [bytearray(s) for s in strings]
        if rng.random() < 0.5:
            damaged[0] = bytearray(rng.randbytes(rng.randrange(0, 60)))
        else:
            damaged[0] = damaged[0][: rng.randrange(len(damaged[0]) + 1)]
        try:
            image = yotocodec.decode(pack(header, [bytes(s) for s in damaged]), model=path)
        except yotocodec.YotoError as exc:
            assert str(exc) and "\n" not in str(exc)
            outcomes.add("error")
        else:
            assert image.size == (40, 30)
            outcomes.add("image")
    assert "image" in outcomes
