"""The λ-conditioned hyperprior: analysis/synthesis transforms, hyper transforms and FiLM conditioning.

One set of weights serves every rate: a small conditioning network maps the normalised log λ of each example to a
per-channel scale and shift (FiLM) applied after every conv block, as in loss-conditional training ("You Only Train
Once", Dosovitskiy & Djolonga 2020).  The FiLM heads start at zero, so an untrained model is exactly the
unconditioned Ballé et al. (2018) hyperprior.  Entropy models and layers come from CompressAI.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from compressai import layers
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from . import checkerboard, slices
from .bands import in_bands
from .config import ModelConfig
from .padding import pad_to_multiple


class FiLM(nn.Module):
    """Per-channel scale and shift β(λ) from a linear head on the λ embedding; it starts as the identity.

    The scale is exp(γ(λ)) (``"exp"``, the models up to 0.2.0) or γ(λ) itself (``"linear"``, as SFT's x·(1+γ)+β).
    Through exp the gradient of a channel's scale is exp(γ)·x, which vanishes once training has closed the channel,
    so a closed channel never reopens; a linear scale's gradient is x whatever its value.
    """

    def __init__(self, channels: int, cond_dim: int, scale: str = "exp") -> None:
        super().__init__()
        self.linear = scale == "linear"
        self.head = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if self.linear:
            nn.init.ones_(self.head.bias[:channels])

    def scale_and_shift(self, emb: Tensor) -> tuple[Tensor, Tensor]:
        """Per-channel scale and shift, shape ``(B, C)`` each."""
        scale, shift = self.head(emb).chunk(2, dim=1)
        return (scale if self.linear else torch.exp(scale)), shift

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.scale_and_shift(emb)
        scale, shift = scale[:, :, None, None], shift[:, :, None, None]
        if x.dtype == torch.float64:  # the hyper-synthesis, which rebuilds a file's scale indexes: op for op as ever
            return x * scale + shift
        return torch.addcmul(shift, x, scale)  # one pass over x instead of two: 2.5× faster on a Kodak-sized map


class GDN(layers.GDN):
    """CompressAI's GDN (or IGDN with ``inverse=True``), the same parameters; without autograd it overwrites its own
    temporaries, the same values bit for bit, 35 % faster on a Kodak-sized feature map."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        channels = x.shape[1]
        gamma = self.gamma_reparam(self.gamma).reshape(channels, channels, 1, 1)
        norm = F.conv2d(x * x, gamma, self.beta_reparam(self.beta))
        return (norm.sqrt_() if self.inverse else norm.rsqrt_()).mul_(x)


class ConditionalSequential(nn.Sequential):
    """A Sequential whose FiLM layers also receive the conditioning embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = self.run(layer, x, emb)
        return x

    @staticmethod
    def run(layer: nn.Module, x: Tensor, emb: Tensor) -> Tensor:
        """One layer of the stack: FiLM layers also take the embedding."""
        return layer(x, emb) if isinstance(layer, FiLM) else layer(x)


class LatentShapes(NamedTuple):
    """Height and width of the latent ``y`` and of the hyper-latent ``z``: what decoding needs besides the strings."""

    y: tuple[int, int]
    z: tuple[int, int]


class YotoHyperprior(CompressionModel):
    """Scale or mean-scale hyperprior whose transforms are FiLM-conditioned on λ."""

    downsampling_factor = 64  # 2**4 in g_a times 2**2 in h_a
    hyper_stride = 4  # h_a's: a latent of another size is padded to a multiple of it (hyper_input)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        N, M, C, F = config.N, config.M, config.cond_dim, config.film
        mean_scale = config.arch == "mean-scale"

        self.cond = nn.Sequential(nn.Linear(1, C), nn.ReLU(), nn.Linear(C, C), nn.ReLU())
        self.g_a = ConditionalSequential(
            conv(3, N), GDN(N), FiLM(N, C, F),
            conv(N, N), GDN(N), FiLM(N, C, F),
            conv(N, N), GDN(N), FiLM(N, C, F),
            conv(N, M), FiLM(M, C, F),
        )  # fmt: skip
        self.g_s = ConditionalSequential(
            FiLM(M, C, F),
            deconv(M, N), GDN(N, inverse=True), FiLM(N, C, F),
            deconv(N, N), GDN(N, inverse=True), FiLM(N, C, F),
            deconv(N, N), GDN(N, inverse=True), FiLM(N, C, F),
            deconv(N, 3),
        )  # fmt: skip
        act = nn.LeakyReLU if mean_scale else nn.ReLU
        self.h_a = ConditionalSequential(
            conv(M, N, stride=1, kernel_size=3), act(), FiLM(N, C, F),
            conv(N, N), act(), FiLM(N, C, F),
            conv(N, N),
        )  # fmt: skip
        if mean_scale:
            H = M * 3 // 2
            self.h_s = ConditionalSequential(
                deconv(N, M), act(), FiLM(M, C, F),
                deconv(M, H), act(), FiLM(H, C, F),
                conv(H, 2 * M, stride=1, kernel_size=3),
            )  # fmt: skip
        else:
            self.h_s = ConditionalSequential(
                deconv(N, N), act(), FiLM(N, C, F),
                deconv(N, N), act(), FiLM(N, C, F),
                conv(N, M, stride=1, kernel_size=3), act(),
            )  # fmt: skip
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)
        self.context = checkerboard.CheckerboardContext(M) if config.context == "checkerboard" else None

    def embed(self, lmbda: Tensor) -> Tensor:
        """Conditioning embedding for a batch of λ values (shape ``(B,)``)."""
        return self.cond(self.config.normalise(lmbda)[:, None])

    def for_coding(self) -> YotoHyperprior:
        """This model set up for the codec: the hyper-synthesis path in float64, the other transforms in float32.

        A file decodes only if the decoder rebuilds exactly the encoder's scale indexes, so the path from ``z_hat``
        through ``h_s`` to the indexes (and the entropy models, and the λ embedding it is conditioned on) runs in
        float64, where thread counts and kernels change results by ~1e-15 at most.  ``g_a``, ``h_a`` and ``g_s``
        only decide what is coded and how it looks: float32 (2.9× faster) may move a coded value or a decoded pixel
        by one step, never whether a file decodes.
        """
        self.double()
        for transform in (self.g_a, self.h_a, self.g_s):  # channels-last: oneDNN's faster kernels (g_s −27 %)
            transform.float().to(memory_format=torch.channels_last)
        return self.eval()

    def hyper_input(self, y: Tensor) -> Tensor:
        """What ``h_a`` reads: ``y`` (``|y|`` for the scale hyperprior), edge-replicated at the bottom and right to a
        multiple of ``h_a``'s stride.  An image padded only to ``g_a``'s stride (format 3) gives a latent of any size,
        and its padding then costs the rate of a few latent rows, not of up to 48 rows of pixels."""
        y = pad_to_multiple(y, self.hyper_stride)
        return y if self.config.arch == "mean-scale" else torch.abs(y)

    def gaussian_params(
        self, z_hat: Tensor, emb: Tensor, shape: tuple[int, ...] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Scales (and means) of y from ``h_s``, computed in bands of rows so that memory stays bounded on large
        images (:mod:`yotocodec.bands`); on small ones, and in training, in one piece.  ``shape``: y's height and
        width, if smaller than ``h_s``'s output (see :meth:`hyper_input`)."""
        params = in_bands(self.h_s, z_hat, lambda layer, x: ConditionalSequential.run(layer, x, emb))
        if shape is not None:
            params = params[..., : shape[0], : shape[1]]
        if self.config.arch == "mean-scale":
            scales, means = params.chunk(2, dim=1)
            return scales, means
        return params, None

    def forward(self, x: Tensor, lmbda: Tensor, ste: bool = False, rate_gradient: Tensor | None = None) -> dict:
        """Training/evaluation pass with additive-noise (or rounding, in eval) proxies for quantisation.

        With ``ste`` the synthesis transform is trained on the latent it will really decode — rounded around the
        predicted means, gradients passed straight through — while the rate keeps the noise relaxation
        ("mixed quantisation", Minnen & Singh 2020).

        ``rate_gradient`` (shape ``(M,)``) scales, per latent channel, the gradient the rate of y sends straight back
        into y; the values and the synthesis's gradient stay as they are (see :meth:`revive_latent_channels`).

        Under ``torch.autocast`` (mixed-precision training) only the transforms run in the lower precision: their
        outputs are cast back to the input's dtype and the entropy models, whose likelihoods are the rate, run in it.
        """
        dtype = x.dtype
        emb = self.embed(lmbda)
        y = self.g_a(x, emb).to(dtype)
        z = self.h_a(self.hyper_input(y), emb).to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = (None if p is None else p.to(dtype) for p in self.y_params(y, z_hat, emb))
        with torch.autocast(x.device.type, enabled=False):
            y_rate = y if rate_gradient is None else scale_gradient(y, rate_gradient.to(dtype)[None, :, None, None])
            y_hat, y_likelihoods = self.gaussian_conditional(y_rate, scales, means=means)
            y_hat = y_hat if rate_gradient is None else y + (y_hat - y_rate).detach()  # the synthesis's path in full
            if ste and self.training:
                y_hat = self.straight_through_latent(y, means)
        return {"x_hat": self.g_s(y_hat, emb).to(dtype), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    def y_params(self, y: Tensor, z_hat: Tensor, emb: Tensor) -> tuple[Tensor, Tensor | None]:
        """Training and encoder effort: scales (and means) of ``y``; with a context model, those of the non-anchor
        positions refined from the anchors of ``y`` rounded around their means, as the decoder will have them."""
        scales, means = self.gaussian_params(z_hat, emb, y.shape[-2:])
        if self.context is None:
            return scales, means
        symbols = self.straight_through_latent(y, means) - means  # round(y − means), gradients straight through
        return checkerboard.refined(self.context, scales, means, symbols.to(scales.dtype))

    def straight_through_latent(self, y: Tensor, means: Tensor | None) -> Tensor:
        """``y`` rounded around ``means`` as the decoder will see it; the gradient passes straight through to ``y``."""
        return y + (self.gaussian_conditional.quantize(y, "dequantize", means) - y).detach()

    def compress_latent(self, y: Tensor, emb: Tensor) -> tuple[list[bytes], LatentShapes]:
        """Entropy-code one latent ``y`` (from ``g_a``) into its rANS strings [y, z] and the shapes of ``y`` and ``z``.

        Needs :meth:`update` to have built the CDF tables.  The transforms stay outside so that the codec can run
        ``g_a`` and ``g_s`` in tiles on large images.
        """
        exact = precision(self.entropy_bottleneck)  # the hyper path's precision (see for_coding)
        z = in_own_precision(self.h_a, self.hyper_input(y), emb).to(exact)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        scales, means = self.gaussian_params(z_hat, emb, y.shape[-2:])
        if self.context is None:
            parts = [(y, scales, means)]
        else:
            parts = checkerboard.coding_order(self.context, y, scales, means)
        y_string = slices.compress(self.gaussian_conditional, parts)  # y quantised in float64
        return [y_string, z_strings[0]], LatentShapes(tuple(y.shape[-2:]), tuple(z.shape[-2:]))

    def decompress_latent(
        self, strings: list[bytes], shapes: LatentShapes, emb: Tensor, entropy_coder: object = None
    ) -> Tensor:
        """Inverse of :meth:`compress_latent`: the quantised latent ``y_hat``, ready for ``g_s``."""
        return self.decode_latent(strings, shapes, emb, entropy_coder)[0]

    def decode_latent(
        self, strings: list[bytes], shapes: LatentShapes, emb: Tensor, entropy_coder: object = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``y_hat`` and what it is made of: the integer symbols of z and y and y's scale indexes.

        The indexes are what decoder and encoder must agree on exactly (golden-file tests compare all three).
        ``entropy_coder`` replaces the entropy models' rANS decoder (:class:`~yotocodec.isolation.DecoderProcess`).
        """
        bottleneck = _with_coder(self.entropy_bottleneck, entropy_coder)
        z_hat = bottleneck.decompress([strings[1]], shapes.z)
        scales, means = self.gaussian_params(z_hat, emb, shapes.y)
        stream = None if entropy_coder is None else entropy_coder.stream
        with slices.reading(self.gaussian_conditional, strings[0], stream) as read:
            if self.context is None:
                indexes = slices.build_indexes(self.gaussian_conditional, scales)
                del scales
                y_symbols = read(indexes)
                y_hat = y_symbols.to(z_hat.dtype)
                if means is not None:
                    y_hat += means
            else:
                indexes_of = partial(slices.build_indexes, self.gaussian_conditional)
                y_hat, indexes, y_symbols = checkerboard.decode(self.context, read, indexes_of, scales, means)
        medians = bottleneck._get_medians().to(z_hat.dtype)
        return y_hat, {"z": torch.round(z_hat - medians).int(), "indexes": indexes, "y": y_symbols}


def _with_coder(entropy_model: nn.Module, entropy_coder: object) -> nn.Module:
    """A shallow copy of an entropy model (same tables) that codes with ``entropy_coder``; the model itself if None.

    A copy, not an attribute swap, so that threads decoding with the same cached model do not see each other's coder.
    """
    if entropy_coder is None:
        return entropy_model
    twin = copy.copy(entropy_model)
    twin.entropy_coder = entropy_coder
    return twin


def precision(module: nn.Module) -> torch.dtype:
    """The dtype ``module`` computes in: in a coding model (:meth:`YotoHyperprior.for_coding`) parts differ."""
    return next(module.parameters()).dtype


def in_own_precision(transform: ConditionalSequential, x: Tensor, emb: Tensor) -> Tensor:
    """``transform(x, emb)`` computed in the dtype of the transform's weights (a mixed-precision coding model)."""
    dtype = precision(transform)
    return transform(x.to(dtype, memory_format=torch.channels_last), emb.to(dtype))


def scale_gradient(t: Tensor, factor: Tensor) -> Tensor:
    """``t`` itself, with the gradient flowing back through it multiplied by ``factor``."""
    return t.detach() + factor * (t - t.detach())
