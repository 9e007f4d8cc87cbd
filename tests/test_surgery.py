"""Model surgery: a widened model computes what the narrow one did, and its new channels can learn."""

from __future__ import annotations

import pytest
import torch

from yotocodec.model import ModelConfig, YotoHyperprior
from yotocodec.training.surgery import widen


@pytest.fixture
def narrow() -> YotoHyperprior:
    torch.manual_seed(0)
    model = YotoHyperprior(ModelConfig(N=8, M=12, lmbda_min=0.001, lmbda_max=0.1, cond_dim=4))
    with torch.no_grad():  # a trained model's FiLM heads are not zero: give them values so their copy is tested
        for name, p in model.named_parameters():
            if "head" in name:
                p.normal_(0, 0.3)
    return model.eval()


def test_widened_model_computes_the_same_image(narrow: YotoHyperprior) -> None:
    wide, new = widen(narrow, 16, 20)
    wide.eval()
    assert (wide.config.N, wide.config.M) == (16, 20)
    assert new.tolist() == [False] * 12 + [True] * 8
    x, lmbda = torch.rand(2, 3, 64, 64), torch.tensor([0.002, 0.05])
    with torch.no_grad():
        a, b = narrow(x, lmbda), wide(x, lmbda)
    torch.testing.assert_close(b["x_hat"], a["x_hat"], atol=1e-5, rtol=0)
    torch.testing.assert_close(b["likelihoods"]["y"][:, :12], a["likelihoods"]["y"], atol=1e-5, rtol=0)
    torch.testing.assert_close(b["likelihoods"]["z"][:, :8], a["likelihoods"]["z"], atol=1e-5, rtol=0)


def test_new_channels_get_gradients(narrow: YotoHyperprior) -> None:
    """Zero outgoing weights still learn: the new channels' activations are not zero."""
    wide, _ = widen(narrow, 16, 20)
    out = wide(torch.rand(1, 3, 64, 64), torch.tensor([0.01]))
    ((out["x_hat"] - 0.5) ** 2).mean().backward()
    first_synthesis = wide.g_s[1].weight  # deconv(M, N): rows are input (latent) channels
    assert first_synthesis.grad[12:].abs().sum() > 0


def test_cannot_narrow(narrow: YotoHyperprior) -> None:
    with pytest.raises(ValueError, match="cannot narrow"):
        widen(narrow, 4, 12)
