"""Model surgery: give a trained model more channels without changing what it computes.

Training from scratch costs this project days of CPU, so a wider model starts from a trained narrower one
("Net2Net", Chen, Goodfellow & Shlens 2016): every old weight is copied, the new channels get fresh random incoming
weights and zero outgoing ones, so the old network's outputs are unchanged and the new channels start learning
from the first step (their outgoing weights get a gradient because their activations are not zero).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.layers import GDN
from torch import Tensor, nn

from .model import FiLM, YotoHyperprior


@torch.no_grad()
def widen(model: YotoHyperprior, N: int, M: int, seed: int = 0) -> tuple[YotoHyperprior, Tensor]:
    """A copy of ``model`` with ``N`` transform and ``M`` latent channels (at least its own) computing the same image.

    The reconstruction and the old channels' likelihoods are unchanged; the new latent and hyper-latent channels are
    coded too, so the rate grows until training puts them to use or closes them.  Returns the wider model (train
    mode) and the mask of its new latent channels, shape ``(M,)``, for a rate holiday (``train --revive-channels``).
    """
    old = model.config
    if N < old.N or M < old.M:
        raise ValueError(f"cannot narrow a model: ({old.N}, {old.M}) to ({N}, {M})")
    torch.manual_seed(seed)
    wide = YotoHyperprior(replace(old, N=N, M=M))
    modules = dict(model.named_modules())
    for name, new in wide.named_modules():
        _copy_module(modules[name], new, split=2 if name == _last_hyper_synthesis(wide) else 1)
    new_channels = torch.zeros(M, dtype=torch.bool)
    new_channels[old.M :] = True
    return wide.train(), new_channels


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
