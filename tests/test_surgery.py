"""Model surgery: a widened or linearised model computes what the original did, and its channels can learn."""

from __future__ import annotations

import pytest
import torch

from yotocodec.config import ModelConfig
from yotocodec.model import YotoHyperprior
from yotocodec.training.surgery import linearise, starting_model, widen
from yotocodec.weights import load_weights, save_weights


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


def test_a_fresh_linear_film_model_is_the_fresh_exp_one() -> None:
    """Both start as the unconditioned hyperprior: scale 1, shift 0 at every λ."""
    outputs = []
    for film in ("exp", "linear"):
        torch.manual_seed(0)
        model = YotoHyperprior(ModelConfig(N=8, M=12, cond_dim=4, film=film)).eval()
        with torch.no_grad():
            outputs.append(model(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)),
                                 torch.tensor([0.01]))["x_hat"])  # fmt: skip
    torch.testing.assert_close(outputs[1], outputs[0], atol=0, rtol=0)


def test_linearised_model_computes_nearly_the_same_image_at_every_lambda(narrow: YotoHyperprior, tmp_path) -> None:
    linear = linearise(narrow).eval()
    assert linear.config.film == "linear" and narrow.config.film == "exp"
    x, lmbda = torch.rand(3, 3, 64, 64), torch.tensor([0.001, 0.01, 0.1])
    with torch.no_grad():
        a, b = narrow(x, lmbda), linear(x, lmbda)
    torch.testing.assert_close(b["x_hat"], a["x_hat"], atol=2e-3, rtol=0)
    save_weights(linear, tmp_path / "linear.pt")
    assert load_weights(tmp_path / "linear.pt")[0].config.film == "linear"
    started, new = starting_model(narrow, ModelConfig(N=8, M=12, lmbda_min=0.001, lmbda_max=0.1, cond_dim=4,
                                                      film="linear"), seed=0)  # fmt: skip
    assert started.config.film == "linear" and not new.any()


def test_a_closed_channel_gets_a_gradient_only_with_a_linear_scale(narrow: YotoHyperprior) -> None:
    """exp(γ)'s gradient is exp(γ)·x: a closed channel stays closed. A linear scale's gradient is x."""
    with torch.no_grad():
        narrow.g_a[-1].head.weight[0] = 0
        narrow.g_a[-1].head.bias[0] = -15.0  # latent channel 0 scaled by exp(−15) ≈ 3e−7 at every λ
    gradients = []
    for model in (narrow, linearise(narrow)):
        model.train()
        out = model(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)), torch.tensor([0.01]))
        ((out["x_hat"] - 0.5) ** 2).mean().backward()
        gradients.append(model.g_a[-1].head.bias.grad[0].abs().item())
    assert gradients[1] > 1e4 * gradients[0]
