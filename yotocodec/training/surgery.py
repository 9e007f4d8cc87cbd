"""Model surgery: change a trained model's λ range, reopen its switched-off latent channels, or give it more
channels, so that a run can start from it instead of from scratch (which costs this project days of CPU).

Widening follows "Net2Net" (Chen, Goodfellow & Shlens 2016): every old weight is copied, the new channels get fresh
random incoming weights and zero outgoing ones, so the old network's outputs are unchanged and the new channels start
learning from the first step (their outgoing weights get a gradient because their activations are not zero).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.layers import GDN
from torch import Tensor, nn

from ..config import ModelConfig
from ..model import FiLM, YotoHyperprior

LATENT_OFF_SCALE = 1e-3  # a latent channel whose FiLM scale is below this is switched off (y stays at its mean)


@torch.no_grad()
def set_lambda_range(model: YotoHyperprior, lmbda_min: float, lmbda_max: float) -> None:
    """Move the trained λ range to [lmbda_min, lmbda_max] without changing what the model computes.

    The conditioning network sees log λ normalised over the range, so its first layer is re-parameterised to give
    every λ the embedding it had before.  Training can then go on over a wider range from where it was (a fixed-λ
    model becomes a conditional one that starts out the same at every λ).
    """
    new = replace(model.config, lmbda_min=lmbda_min, lmbda_max=lmbda_max)
    (a_old, b_old), (a_new, b_new) = model.config.normalisation(), new.normalisation()
    if a_new == 0 and a_old != 0:
        raise ValueError("cannot narrow a λ-conditioned model to a single λ")
    if a_new != 0:  # old input u = r·v + s in terms of the new input v
        r = a_old / a_new
        first = model.cond[0]
        first.bias += first.weight[:, 0] * (b_old - r * b_new)
        first.weight *= r
    model.config = new


def latent_scales(model: YotoHyperprior, lmbda: Tensor) -> Tensor:
    """The per-channel scale (its size) of the FiLM after g_a's last convolution, shape ``(len(lmbda), M)``."""
    return model.g_a[-1].scale_and_shift(model.embed(lmbda))[0].abs()


@torch.no_grad()
def revive_latent_channels(model: YotoHyperprior) -> Tensor:
    """Reopen the latent channels that g_a's last FiLM has switched off at every λ; returns their mask ``(M,)``.

    Loss-conditional training switches channels off early (docs/experiments.md: the shipped model codes with 86 of
    192) and they cannot come back by themselves: at a scale of ~1e-5 their gradient is ~1e-5 of the usual.  The
    FiLM heads of g_a's last layer and g_s's first give them the live channels' median scale at the middle λ,
    constant in λ.  Training must then spare them the rate for a while (``forward``'s ``rate_gradient``), or
    the rate term closes them again before the synthesis has learned to use them.
    """
    lo, hi = model.config.lmbda_min, model.config.lmbda_max
    grid = torch.tensor([lo * (hi / lo) ** (i / 8) for i in range(9)])
    off = (latent_scales(model, grid) < LATENT_OFF_SCALE).all(dim=0)
    if off.all():  # no live channel to take a scale from
        return torch.zeros_like(off)
    middle = torch.tensor([math.sqrt(lo * hi)])
    for film in (model.g_a[-1], model.g_s[0]):
        raw, _ = film.head(model.embed(middle)).chunk(2, dim=1)
        rows = off.nonzero()[:, 0]  # the head's first M outputs are the (log-)scales
        film.head.weight[rows] = 0
        film.head.bias[rows] = raw[0][~off].median()
    return off


@torch.no_grad()
def revive_partly_closed_channels(model: YotoHyperprior, points: int = 65) -> Tensor:
    """Reopen the latent channels that g_a's last FiLM switches off at some λ, only where they are low; returns
    their mask ``(M,)``.

    A model trained on, in this project's runs, closes channels from the top of the range as well (the wide model:
    18 channels off at every λ, 83 at λ_max), which :func:`revive_latent_channels` leaves shut.  Here each such
    channel's g_a scale is raised to the live channels' median at the middle λ wherever it is below it, and its g_s
    scale is raised likewise where g_a had it switched off; elsewhere both stay.  Each head row is the
    least-squares fit of that target over ``points`` values of λ (as :func:`linearise` fits), which smooths the step
    in g_s's target.  Training must spare them the rate for a while, as for :func:`revive_latent_channels`.
    """
    emb = _embeddings(model, points)
    films = (model.g_a[-1], model.g_s[0])
    raw_a, raw_s = (film.head(emb).chunk(2, dim=1)[0] for film in films)  # log-scales, (points, M)
    closed = raw_a < math.log(LATENT_OFF_SCALE)
    revived = closed.any(dim=0)
    if revived.all() or not revived.any():  # nothing to take a scale from, or nothing to reopen
        return torch.zeros_like(revived)
    middle = points // 2
    med_a, med_s = raw_a[middle, ~revived].median(), raw_s[middle, ~revived].median()
    targets = (torch.maximum(raw_a, med_a), torch.where(closed, torch.maximum(raw_s, med_s), raw_s))
    for film, target in zip(films, targets, strict=True):
        _fit_head_rows(film, emb, target[:, revived], revived.nonzero()[:, 0])
    return revived


@torch.no_grad()
def linearise(model: YotoHyperprior, points: int = 257) -> YotoHyperprior:
    """A copy of an ``"exp"`` model whose FiLM scales are linear in the λ embedding (``ModelConfig.film``).

    Every weight is copied; each FiLM's scale head becomes the least-squares fit of its exp(γ(λ)) on [embedding, 1]
    at ``points`` values of λ log-spaced over the range, so the copy computes nearly the same images at every λ (a
    single-λ model: exactly), and its closed channels can reopen (see :class:`~yotocodec.model.FiLM`).
    """
    if model.config.film != "exp":
        raise ValueError(f"only an exp-FiLM model can be linearised, not {model.config.film!r}")
    new = YotoHyperprior(replace(model.config, film="linear"))
    new.load_state_dict(model.state_dict())
    emb = _embeddings(model, points)
    films = [m for m in model.modules() if isinstance(m, FiLM)]
    for old, film in zip(films, [m for m in new.modules() if isinstance(m, FiLM)], strict=True):
        scale = old.scale_and_shift(emb)[0]
        _fit_head_rows(film, emb, scale, torch.arange(scale.shape[1]))
    return new.train(model.training)


def _embeddings(model: YotoHyperprior, points: int) -> Tensor:
    """The conditioning embeddings of ``points`` values of λ log-spaced over the model's range, ``(points, dim)``."""
    lo, hi = model.config.lmbda_min, model.config.lmbda_max
    return model.embed(torch.exp(torch.linspace(math.log(lo), math.log(hi), points)))


def _fit_head_rows(film: FiLM, emb: Tensor, target: Tensor, rows: Tensor) -> None:
    """Set the head rows ``rows`` to the least-squares fit of ``target`` ``(points, len(rows))`` on [emb, 1]."""
    design = torch.cat([emb, torch.ones(len(emb), 1)], dim=1).double()
    fit = torch.linalg.lstsq(design, target.double()).solution  # (dim + 1, len(rows))
    film.head.weight[rows] = fit[:-1].T.float()
    film.head.bias[rows] = fit[-1].float()


def same_network(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether weights of ``a`` fit ``b``: the same networks, perhaps over another λ range."""
    return replace(a, lmbda_min=b.lmbda_min, lmbda_max=b.lmbda_max) == b


def starting_model(
    init: YotoHyperprior, config: ModelConfig, seed: int, source: str = "the starting model"
) -> tuple[YotoHyperprior, Tensor]:
    """The model a run starts from a trained one: the same, linearised (:func:`linearise`), or widened to
    ``config``'s channels (:func:`widen`).

    Returns it (train mode) with the mask of its new latent channels (none unless widened).
    """
    if init.config.film == "exp" and config.film == "linear":
        init = linearise(init)
    if init.config.context == "none" and config.context != "none":
        init = add_context(init, config.context)
    if same_network(init.config, config):
        return init.train(), torch.zeros(init.config.M, dtype=torch.bool)
    if same_network(replace(init.config, N=config.N, M=config.M), config):
        if config.N >= init.config.N and config.M >= init.config.M:
            return widen(init, config.N, config.M, seed=seed)
    raise ValueError(f"{source} has configuration {init.config}, not {config}")


def add_context(model: YotoHyperprior, context: str) -> YotoHyperprior:
    """A copy of ``model`` (which has none) with a ``context`` model that starts out changing nothing: its last
    layer is zero (:mod:`yotocodec.checkerboard`, whose starting weights are fixed, not drawn), so the copy codes
    exactly as ``model`` until training moves it."""
    given = YotoHyperprior(replace(model.config, context=context))
    missing, unexpected = given.load_state_dict(model.state_dict(), strict=False)
    if unexpected or not all(name.startswith("context.") for name in missing):
        raise ValueError(f"cannot add a context model to {model.config}")
    return given.train(model.training)


@torch.no_grad()
def widen(model: YotoHyperprior, N: int, M: int, seed: int = 0) -> tuple[YotoHyperprior, Tensor]:
    """A copy of ``model`` with ``N`` transform and ``M`` latent channels (at least its own) computing the same image.

    The reconstruction and the old channels' likelihoods are unchanged; the new latent and hyper-latent channels are
    coded too, so the rate grows until training puts them to use or closes them.  Returns the wider model (train
    mode) and the mask of its new latent channels, shape ``(M,)``, for a rate holiday (``train --revive-channels``).
    """
    old = model.config
    if old.context != "none":
        raise ValueError("widening a model with a context model is not supported: widen it first, then add one")
    if N < old.N or M < old.M:
        raise ValueError(f"cannot narrow a model: ({old.N}, {old.M}) to ({N}, {M})")
    torch.manual_seed(seed)
    wide = YotoHyperprior(replace(old, N=N, M=M))
    _copy_into(model, wide)
    new_channels = torch.zeros(M, dtype=torch.bool)
    new_channels[old.M :] = True
    return wide.train(), new_channels


@torch.no_grad()
def inherited_entries(model: YotoHyperprior, config: ModelConfig) -> dict[str, Tensor]:
    """For each parameter of ``model`` widened to ``config``, the mask of the entries :func:`widen` copies from it.

    Training only the other entries (``train --freeze-inherited``) keeps the starting model inside the wider one:
    whatever the new channels learn, they can only add to it, and where they stay closed the wider model computes
    exactly the starting model's images.
    """
    marks = YotoHyperprior(model.config)
    for p in marks.parameters():
        p.fill_(1.0)
    wide = YotoHyperprior(config)
    for p in wide.parameters():
        p.zero_()
    _copy_into(marks, wide)
    return {name: p == 1.0 for name, p in wide.named_parameters()}


def _copy_into(model: YotoHyperprior, wide: YotoHyperprior) -> None:
    modules = dict(model.named_modules())
    for name, new in wide.named_modules():
        _copy_module(modules[name], new, split=2 if name == _last_hyper_synthesis(wide) else 1)


def _last_hyper_synthesis(model: YotoHyperprior) -> str:
    """The layer whose output channels are two blocks (scales, then means) in the mean-scale model."""
    return f"h_s.{len(model.h_s) - 1}" if model.config.arch == "mean-scale" else ""


def _copy_module(old: nn.Module, new: nn.Module, split: int) -> None:
    if isinstance(new, (nn.Conv2d, nn.ConvTranspose2d)):
        out_dim = 1 if isinstance(new, nn.ConvTranspose2d) else 0
        _zero_new_inputs(new.weight, old.weight.shape[1 - out_dim], in_dim=1 - out_dim)
        _copy_blocks(new.weight, old.weight, out_dim, split)
        _copy_blocks(new.bias, old.bias, 0, split)
    elif isinstance(new, GDN):
        _copy_blocks(new.beta, old.beta, 0, 1)
        new.gamma[: old.gamma.shape[0], : old.gamma.shape[1]] = old.gamma
        new.gamma[: old.gamma.shape[0], old.gamma.shape[1] :] = new.gamma_reparam.init(torch.tensor(0.0))
    elif isinstance(new, FiLM):  # rows: log-scales, then shifts; new channels get scale 1 and shift 0
        _copy_blocks(new.head.weight, old.head.weight, 0, 2)
        _copy_blocks(new.head.bias, old.head.bias, 0, 2)
    elif isinstance(new, EntropyBottleneck):
        for (_, p_new), (_, p_old) in zip(new.named_parameters(), old.named_parameters(), strict=True):
            p_new[: p_old.shape[0]] = p_old
    elif isinstance(new, nn.Linear) and new.weight.shape == old.weight.shape:  # the conditioning network
        new.load_state_dict(old.state_dict())


def _zero_new_inputs(weight: Tensor, old_inputs: int, in_dim: int) -> None:
    """New input channels of a layer get zero weights, so the old outputs do not see them."""
    index = [slice(None)] * weight.dim()
    index[in_dim] = slice(old_inputs, None)
    weight[tuple(index)] = 0


def _copy_blocks(new: Tensor, old: Tensor, dim: int, blocks: int) -> None:
    """Copy ``old`` into the leading part of each of ``blocks`` equal blocks of ``new`` along ``dim`` (and the
    leading part of every other dimension)."""
    old_size, new_size = old.shape[dim] // blocks, new.shape[dim] // blocks
    for b in range(blocks):
        dst = [slice(0, s) for s in old.shape]
        src = [slice(None)] * old.dim()
        dst[dim] = slice(b * new_size, b * new_size + old_size)
        src[dim] = slice(b * old_size, (b + 1) * old_size)
        new[tuple(dst)] = old[tuple(src)]
