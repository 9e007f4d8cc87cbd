"""Image in, bytes out and back: the public codec API used by the CLI, the benchmarks and Python users.

Quality (0–100) maps log-linearly onto the λ range the model was trained on (:mod:`yotocodec.quality`).  λ travels in
the header as a 16-bit code and both encoder and decoder condition on the λ decoded from that code, so they always
agree bit for bit.
The hyper-synthesis path runs in float64, so the scale indexes that decide whether a file decodes at all differ
between thread counts by ~1e-15 at most; the analysis and synthesis transforms run in float32
(:meth:`~yotocodec.model.YotoHyperprior.for_coding`).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from compressai.ops import compute_padding
from PIL import Image

from . import isolation
from .container import FORMAT_VERSION, Header, Payload, read, write
from .errors import YotoError
from .loading import ModelLike, model_for_file, resolve
from .metadata import stored_metadata
from .model import LatentShapes, YotoHyperprior, precision
from .pixels import split_image
from .quality import code_for_lambda, code_for_quality, lambda_of
from .refine import refine_latent
from .tiling import STRIDE, analysis, synthesis


def lambda_from_code(model: YotoHyperprior, code: int) -> float:
    """λ for a header code on this model's trained range (:func:`yotocodec.quality.lambda_of`)."""
    return lambda_of(code, model.config.lambda_range())


def embedding(net: YotoHyperprior, code: int) -> torch.Tensor:
    """The conditioning embedding for a header code, in the hyper path's float64: h_s must see exactly this."""
    dtype = precision(net.cond)
    return net.embed(torch.tensor([lambda_from_code(net, code)], dtype=dtype))


def code_for(model: YotoHyperprior, quality: float | None = None, lmbda: float | None = None) -> int:
    """Header code for a quality in [0, 100] or, if given, a λ inside the model's trained range."""
    if lmbda is not None:
        return code_for_lambda(lmbda, model.config.lambda_range())
    return code_for_quality(quality)


@torch.inference_mode()
def encode(
    image: Image.Image,
    quality: float | None = None,
    *,
    lmbda: float | None = None,
    model: ModelLike = None,
    effort: int = 0,
) -> bytes:
    """Compress a Pillow image to ``.yoto`` bytes at ``quality`` (0–100, default 50) or at an explicit λ.

    ``effort`` 1–3 refines the latent of this image by gradient steps on its own rate–distortion loss (slower
    encoding, smaller files at the same quality); files decode the same way whatever the effort.  The image's ICC
    profile and EXIF block travel with it (:mod:`yotocodec.metadata`; ``yotocodec.without_exif`` leaves the EXIF out).
    """
    net = resolve(model)
    code = code_for(net, quality, lmbda)
    rgb, alpha, mode, metadata = split_image(image)
    h, w = rgb.shape[:2]
    emb = embedding(net, code)
    y = _latent(net, rgb, emb, code, effort, pixel_multiple(net, FORMAT_VERSION))
    del rgb  # not needed past g_a: 72 MB of the peak on a 24-megapixel photo
    (y_string, z_string), _ = net.compress_latent(y, emb)
    alpha_string = None if alpha is None else zlib.compress(alpha.tobytes(), 9)
    payload = Payload(y_string, z_string, alpha_string, metadata.icc_profile, metadata.exif)
    header = Header(net.model_id, code, w, h, mode, metadata.icc_profile is not None, metadata.exif is not None)
    return write(header, payload)


def _latent(
    net: YotoHyperprior, rgb: np.ndarray, emb: torch.Tensor, code: int, effort: int, multiple: int
) -> torch.Tensor:
    """``g_a`` of the pixels padded to ``multiple`` (edge-replicated, centred), refined at ``effort``."""
    h, w = rgb.shape[:2]
    left, right, top, bottom = compute_padding(h, w, min_div=multiple)[0]
    padded = np.pad(rgb, ((top, bottom), (left, right), (0, 0)), mode="edge")
    y = analysis(net, padded, emb)
    if effort:
        x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255
        y = refine_latent(net, x, y, emb, lambda_from_code(net, code), effort)
    return y


@torch.inference_mode()
def decode(data: bytes, *, model: ModelLike = None) -> Image.Image:
    """Decompress ``.yoto`` bytes to a Pillow image of the original size and mode (L, RGB, LA or RGBA).

    The model is the one the file names (:func:`model_for_file`): ``model`` is needed only for a model that this
    version does not carry.

    A stored ICC profile and EXIF block come back in ``image.info`` (``icc_profile``, ``exif``), where Pillow's
    writers find them.
    """
    header, payload = read(bytes(data))
    metadata = stored_metadata(payload.icc_profile, payload.exif)
    net = model_for_file(header.model_id, model)
    multiple = pixel_multiple(net, header.version)
    left, _, top, _ = compute_padding(header.height, header.width, min_div=multiple)[0]
    emb = embedding(net, header.lmbda_code)
    y_hat = net.decompress_latent([payload.y, payload.z], latent_shapes(net, header), emb, isolation.decoder())
    rgb = synthesis(net, y_hat, emb)[top : top + header.height, left : left + header.width]
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if header.mode in ("L", "LA"):
        image = image.convert("L")
    if payload.alpha is not None:
        image.putalpha(Image.fromarray(_inflate_alpha(payload.alpha, header.width, header.height), "L"))
    image.info.update(metadata.info())
    return image


def pixel_multiple(net: YotoHyperprior, version: int) -> int:
    """What each side of an image is padded to before ``g_a``, in a file of this format version.

    Up to version 2, to the stride of ``g_a`` and ``h_a`` together (64): a 640×480 photo was coded as 640×512.  From
    version 3 only to ``g_a``'s (16), and the latent is padded for ``h_a`` instead (``hyper_input`` in
    :mod:`yotocodec.model`): padded rows and columns cost bits, and this way there are at most 15 of them, not 63.
    """
    return net.downsampling_factor if version <= 2 else STRIDE


def latent_shapes(net: YotoHyperprior, header: Header) -> LatentShapes:
    """Heights and widths of ``y`` and ``z`` in a file with this header."""
    multiple, hyper = pixel_multiple(net, header.version), net.hyper_stride
    y = tuple(-(-side // multiple) * multiple // STRIDE for side in (header.height, header.width))
    return LatentShapes(y, tuple(-(-side // hyper) for side in y))


def _inflate_alpha(data: bytes, width: int, height: int) -> np.ndarray:
    expected = width * height
    inflater = zlib.decompressobj()
    try:
        plane = inflater.decompress(data, expected + 1)
    except zlib.error:
        raise YotoError("corrupt: the alpha plane does not decompress") from None
    if len(plane) != expected or not inflater.eof:
        raise YotoError("corrupt: the alpha plane has the wrong size")
    return np.frombuffer(plane, np.uint8).reshape(height, width)
