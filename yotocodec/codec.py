"""Image in, bytes out and back: the public codec API used by the CLI, the benchmarks and Python users.

Quality (0–100) maps log-linearly onto the λ range the model was trained on.  λ travels in the header as a 16-bit
code and both encoder and decoder condition on the λ decoded from that code, so they always agree bit for bit.
The hyper-synthesis path runs in float64, so the scale indexes that decide whether a file decodes at all differ
between thread counts by ~1e-15 at most; the analysis and synthesis transforms run in float32
(:meth:`~yotocodec.model.YotoHyperprior.for_coding`).
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from compressai.ops import compute_padding
from PIL import Image, ImageOps

from . import registry
from .container import LAMBDA_CODE_MAX, MAX_PIXELS, MAX_SIDE, Header, pack, unpack
from .errors import YotoError
from .isolation import run_isolated
from .metadata import Metadata, read_metadata, stored_metadata
from .model import YotoHyperprior, load_weights, precision
from .refine import refine_latent
from .tiling import analysis, synthesis

DEFAULT_QUALITY = 75.0
MODEL_ENV = "YOTOCODEC_MODEL"
ModelLike = YotoHyperprior | str | os.PathLike | None


def default_model_path() -> Path:
    """The registry's default model (:mod:`yotocodec.registry`), or ``$YOTOCODEC_MODEL``."""
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    return registry.default_model().path


@lru_cache(maxsize=4)
@torch.inference_mode(False)  # often first called from encode/decode: cached weights must stay usable by autograd
def _load_cached(path: str, mtime_ns: int) -> YotoHyperprior:
    """Load once per file version; the weights are ordinary tensors so that ``effort`` can differentiate through
    them (inference-mode tensors cannot be saved for backward)."""
    try:
        model, meta = load_weights(path)
    except FileNotFoundError:
        raise YotoError(f"model file not found: {path}") from None
    except ValueError as exc:
        raise YotoError(str(exc)) from None
    model.meta = meta
    model.path = path
    return model.for_coding()


def load_model(path: str | os.PathLike | None = None) -> YotoHyperprior:
    """Load (once, then from cache) a weights file; ``None`` means the shipped default model."""
    path = Path(path) if path is not None else default_model_path()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise YotoError(f"model file not found: {path}") from None
    return _load_cached(str(path.resolve()), mtime)


def _model(model: ModelLike) -> YotoHyperprior:
    return model if isinstance(model, YotoHyperprior) else load_model(model)


def model_for_file(model_id: str, model: ModelLike = None) -> YotoHyperprior:
    """The model that wrote a file: ``model`` (or ``$YOTOCODEC_MODEL``) when it is that one, else the registered one.

    Decoding never needs a weights file for a model the registry carries; a file whose model is neither given nor
    carried gets one line naming the model and where its weights are.
    """
    given = None
    if model is not None or os.environ.get(MODEL_ENV):
        given = _model(model)
        if given.model_id == model_id:
            return given
    entry = registry.find(model_id)
    if entry is not None and entry.path is not None:
        return load_model(entry.path)
    message = registry.missing_model_message(model_id)
    if given is not None:
        message += f" (the model given is {given.model_id})"
    raise YotoError(message)


def lambda_from_code(model: YotoHyperprior, code: int) -> float:
    """λ for a header code: code 0 is the model's λ_min, code 65535 its λ_max, log-linear in between."""
    return _lambda(model.config.lmbda_min, model.config.lmbda_max, code)


def _lambda(lmbda_min: float, lmbda_max: float, code: int) -> float:
    lo, hi = math.log(lmbda_min), math.log(lmbda_max)
    return math.exp(lo + (hi - lo) * code / LAMBDA_CODE_MAX)


def _embedding(net: YotoHyperprior, code: int) -> torch.Tensor:
    dtype = precision(net.cond)  # float64 in a coding model: h_s must see exactly the same embedding
    return net.embed(torch.tensor([lambda_from_code(net, code)], dtype=dtype))


def code_for(model: YotoHyperprior, quality: float | None = None, lmbda: float | None = None) -> int:
    """Header code for a quality in [0, 100] or, if given, a λ inside the model's trained range."""
    if lmbda is not None:
        lo, hi = model.config.lmbda_min, model.config.lmbda_max
        if not (lo * (1 - 1e-9) <= lmbda <= hi * (1 + 1e-9)):
            raise YotoError(f"λ = {lmbda:g} is outside this model's trained range [{lo:g}, {hi:g}]")
        if hi == lo:
            return 0
        return round((math.log(lmbda) - math.log(lo)) / (math.log(hi) - math.log(lo)) * LAMBDA_CODE_MAX)
    quality = DEFAULT_QUALITY if quality is None else float(quality)
    if not 0 <= quality <= 100:  # also rejects nan
        raise YotoError(f"quality must be between 0 and 100, got {quality:g}")
    return round(quality / 100 * LAMBDA_CODE_MAX)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Greyscale pixels of any depth as 8 bits: 16-bit (and 32-bit integer) data is rescaled, not clipped."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "b":
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "f":
        return np.clip(np.round(array), 0, 255).astype(np.uint8)
    if array.max(initial=0) > 255:
        return np.clip(np.round(array.astype(np.float64) / 257), 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def split_image(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, str, Metadata]:
    """Normalise any Pillow image into (RGB uint8 pixels, alpha plane or None, the mode to restore on decode, and
    the metadata that travels with it).

    EXIF orientation is applied; greyscale stays greyscale; palette images become RGB(A); CMYK and other colour
    spaces become RGB; transparency is kept as an alpha plane, which the codec stores losslessly.
    """
    try:
        image = ImageOps.exif_transpose(image)
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise YotoError(f"cannot read image: {exc}") from None
    if image.width * image.height > MAX_PIXELS or max(image.size) > MAX_SIDE:
        raise YotoError(
            f"image of {image.width}×{image.height} pixels exceeds the limit of {MAX_PIXELS} pixels "
            f"and {MAX_SIDE} a side"
        )
    rgb, alpha, mode = _pixels(image)
    return rgb, alpha, mode, read_metadata(image, mode)


def _pixels(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, str]:
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    if image.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        grey = _to_uint8(np.asarray(image))
        return np.repeat(grey[:, :, None], 3, axis=2), None, "L"
    if image.mode in ("LA", "La"):
        la = np.asarray(image.convert("LA"))
        return np.repeat(la[:, :, :1], 3, axis=2), np.ascontiguousarray(la[:, :, 1]), "LA"
    if image.mode in ("RGBA", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"))
        return np.ascontiguousarray(rgba[:, :, :3]), np.ascontiguousarray(rgba[:, :, 3]), "RGBA"
    return np.asarray(image.convert("RGB")), None, "RGB"


@torch.inference_mode()
def encode(
    image: Image.Image,
    quality: float | None = None,
    *,
    lmbda: float | None = None,
    model: ModelLike = None,
    effort: int = 0,
) -> bytes:
    """Compress a Pillow image to ``.yoto`` bytes at ``quality`` (0–100, default 75) or at an explicit λ.

    ``effort`` 1–3 refines the latent of this image by gradient steps on its own rate–distortion loss (slower
    encoding, smaller files at the same quality); files decode the same way whatever the effort.  The image's ICC
    profile and EXIF block travel with it (:mod:`yotocodec.metadata`; ``yotocodec.without_exif`` leaves the EXIF out).
    """
    net = _model(model)
    code = code_for(net, quality, lmbda)
    rgb, alpha, mode, metadata = split_image(image)
    h, w = rgb.shape[:2]
    left, right, top, bottom = compute_padding(h, w, min_div=net.downsampling_factor)[0]
    padded = np.pad(rgb, ((top, bottom), (left, right), (0, 0)), mode="edge")
    emb = _embedding(net, code)
    y = analysis(net, padded, emb)
    if effort:
        x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255
        y = refine_latent(net, x, y, emb, lambda_from_code(net, code), effort)
    strings, _ = net.compress_latent(y, emb)
    if alpha is not None:
        strings.append(zlib.compress(alpha.tobytes(), 9))
    strings += [value for value in (metadata.icc_profile, metadata.exif) if value is not None]
    header = Header(net.model_id, code, w, h, mode, metadata.icc_profile is not None, metadata.exif is not None)
    return pack(header, strings)


@torch.inference_mode()
def decode(data: bytes, *, model: ModelLike = None) -> Image.Image:
    """Decompress ``.yoto`` bytes to a Pillow image of the original size and mode (L, RGB, LA or RGBA).

    The model is the one the file names (:func:`model_for_file`): ``model`` is needed only for a model that this
    version does not carry.

    A stored ICC profile and EXIF block come back in ``image.info`` (``icc_profile``, ``exif``), where Pillow's
    writers find them.
    """
    header, strings = unpack(bytes(data))
    metadata = _metadata(header, strings)
    net = model_for_file(header.model_id, model)
    has_alpha = header.mode in ("LA", "RGBA")
    left, _, top, _ = compute_padding(header.height, header.width, min_div=net.downsampling_factor)[0]
    emb = _embedding(net, header.lmbda_code)
    shape = hyper_latent_shape(net, header)
    y_hat = run_isolated(lambda: net.decompress_latent(strings[:2], shape, emb), "entropy decoding")
    rgb = synthesis(net, y_hat, emb)[top : top + header.height, left : left + header.width]
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if header.mode in ("L", "LA"):
        image = image.convert("L")
    if has_alpha:
        image.putalpha(Image.fromarray(_inflate_alpha(strings[2], header.width, header.height), "L"))
    image.info.update(metadata.info())
    return image


def hyper_latent_shape(net: YotoHyperprior, header: Header) -> tuple[int, int]:
    """Height and width of ``z`` for an image of the header's size (padded to the model's total stride)."""
    step = net.downsampling_factor
    return (header.height + step - 1) // step, (header.width + step - 1) // step


def _metadata(header: Header, strings: list[bytes]) -> Metadata:
    """Check that the file holds the strings its header promises; returns the metadata stored after the codes."""
    coded = 2 + (header.mode in ("LA", "RGBA"))
    expected = coded + header.has_icc_profile + header.has_exif
    if len(strings) != expected:
        raise YotoError(f"invalid file: {len(strings)} strings for a {header.mode} image, expected {expected}")
    extra = iter(strings[coded:])
    return stored_metadata(next(extra) if header.has_icc_profile else None, next(extra) if header.has_exif else None)


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


@dataclass(frozen=True)
class Info:
    """What a ``.yoto`` file says about itself (λ only when the model that wrote it is at hand)."""

    width: int
    height: int
    mode: str
    quality: float
    lmbda: float | None
    model_id: str
    num_bytes: int
    metadata: Metadata

    @property
    def bpp(self) -> float:
        return self.num_bytes * 8 / (self.width * self.height)


def inspect(data: bytes, *, model: ModelLike = None) -> Info:
    """Validate a ``.yoto`` file and describe it without decoding the image (nor loading a registered model)."""
    header, strings = unpack(bytes(data))
    metadata = _metadata(header, strings)
    lmbda = None
    entry = registry.find(header.model_id)
    if entry is not None:
        lmbda = _lambda(entry.lmbda_min, entry.lmbda_max, header.lmbda_code)
    elif model is not None:
        net = _model(model)
        lmbda = lambda_from_code(net, header.lmbda_code) if net.model_id == header.model_id else None
    quality = header.lmbda_code / LAMBDA_CODE_MAX * 100
    return Info(header.width, header.height, header.mode, quality, lmbda, header.model_id, len(data), metadata)
