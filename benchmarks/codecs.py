"""Classic codecs through their real libraries: encode to the actual file bytes, decode them with the same library.

Every adapter is single-threaded so that timings compare like with like, and sweeps span roughly 0.1–3 bpp on Kodak.
"""

from __future__ import annotations

import importlib.util
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import PIL
from PIL import Image, features

from yotocodec.metrics import ms_ssim, psnr

JXL_REQUIREMENT = "imagecodecs>=2024.1,<2026.3"  # the last releases that still accept numpy<2
SSIMULACRA2_REQUIREMENT = "ssimulacra2>=0.3,<0.4"  # pure Python (numpy, scipy, Pillow): no numpy>=2


@dataclass(frozen=True)
class ClassicCodec:
    """One codec configuration and the sweep of its rate parameter."""

    key: str
    label: str
    parameter: str
    sweep: tuple[float, ...]
    quick_sweep: tuple[float, ...]
    settings: str
    encode: Callable[[np.ndarray, float], bytes]
    decode: Callable[[bytes], np.ndarray]
    library: Callable[[], str]
    missing: Callable[[], str | None] = lambda: None  # why it cannot run on this machine, or None


def _pillow_encode(array: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, fmt, **options)
    return buffer.getvalue()


def _pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.array(image.convert("RGB"))  # writable: torch warns on read-only arrays


def _avif_library() -> str:
    from PIL import _avif  # the only place Pillow reports which AV1 encoder libavif was built with

    return f"Pillow {PIL.__version__}, libavif {features.version('avif')} ({_avif.codec_versions()})"


def _jxl_missing() -> str | None:
    try:
        import imagecodecs
    except ImportError:
        return f"JPEG XL left out: imagecodecs is not installed (pip install '{JXL_REQUIREMENT}')"
    if not imagecodecs.JPEGXL.available:
        return f"JPEG XL left out: imagecodecs {imagecodecs.__version__} was built without libjxl"
    return None


def _jxl_encode(array: np.ndarray, quality: float) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpegxl_encode(array, level=quality, numthreads=1))


def _jxl_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpegxl_decode(data, numthreads=1)


def _jxl_library() -> str:
    import imagecodecs

    return f"imagecodecs {imagecodecs.__version__}, {imagecodecs.jpegxl_version()}"


def _jpeg_library() -> str:
    return f"Pillow {PIL.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}"


_STEP5 = tuple(float(q) for q in range(5, 100, 5))


def _jpeg(key: str, label: str, subsampling: int, chroma: str) -> ClassicCodec:
    """JPEG through Pillow: its configurations differ only in chroma subsampling."""
    return ClassicCodec(
        key,
        label,
        "quality",
        _STEP5,
        (10, 30, 60, 90),
        f"Pillow, {chroma}, standard Huffman tables",
        lambda a, q: _pillow_encode(a, "JPEG", quality=round(q), subsampling=subsampling),
        _pillow_decode,
        _jpeg_library,
    )


def _avif(key: str, label: str, subsampling: str, speed: int, speed_note: str) -> ClassicCodec:
    """AVIF through Pillow (libavif with libaom), one thread: its configurations differ in chroma and speed."""
    return ClassicCodec(
        key,
        label,
        "quality",
        tuple(float(q) for q in range(0, 95, 5)),
        (10, 30, 50, 70),
        f"Pillow, aom encoder, chroma {subsampling}, {speed_note}, 1 thread",
        lambda a, q: _pillow_encode(a, "AVIF", quality=round(q), subsampling=subsampling, speed=speed, max_threads=1),
        _pillow_decode,
        _avif_library,
    )


CODECS: dict[str, ClassicCodec] = {
    codec.key: codec
    for codec in (
        _jpeg("jpeg420", "JPEG 4:2:0", 2, "chroma 4:2:0 (subsampling=2, the default)"),
        _jpeg("jpeg444", "JPEG 4:4:4", 0, "no chroma subsampling (subsampling=0)"),
        ClassicCodec(
            "webp",
            "WebP",
            "quality",
            _STEP5,
            (10, 30, 60, 90),
            "Pillow, lossy, method 4 (default)",
            lambda a, q: _pillow_encode(a, "WEBP", quality=q, method=4),
            _pillow_decode,
            lambda: f"Pillow {PIL.__version__}, libwebp {features.version('webp')}",
        ),
        _avif("avif", "AVIF", "4:2:0", 6, "speed 6 (default)"),
        _avif("avif444", "AVIF 4:4:4 speed 4", "4:4:4", 4, "speed 4 (slower, about 10 % fewer bits than the default)"),
        ClassicCodec(
            "jpeg2000",
            "JPEG 2000",
            "target PSNR (dB)",
            tuple(24 + 1.5 * i for i in range(16)),
            (26, 30, 34, 38),
            "Pillow, quality_mode='dB' with one quality layer at the target PSNR, irreversible 9/7 wavelet and "
            "colour transform (mct=1; Pillow's default mct=0 codes R, G, B separately and loses ~3 dB)",
            lambda a, q: _pillow_encode(a, "JPEG2000", quality_mode="dB", quality_layers=[q], irreversible=True, mct=1),
            _pillow_decode,
            lambda: f"Pillow {PIL.__version__}, OpenJPEG {features.version('jpg_2000')}",
        ),
        ClassicCodec(
            "jpegxl",
            "JPEG XL",
            "quality",
            _STEP5,
            (20, 50, 75, 90),
            "imagecodecs, level = cjxl quality (libjxl maps it to a distance), effort 7 (default), 1 thread",
            _jxl_encode,
            _jxl_decode,
            _jxl_library,
            _jxl_missing,
        ),
    )
}


def ssimulacra2_missing() -> str | None:
    """Why SSIMULACRA2 cannot be measured on this machine, or None."""
    if importlib.util.find_spec("ssimulacra2") is None:
        return f"SSIMULACRA2 left out: the ssimulacra2 package is missing (pip install '{SSIMULACRA2_REQUIREMENT}')"
    return None


def _png(array: np.ndarray) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, "PNG", compress_level=0)  # lossless; the package reads only files
    buffer.seek(0)
    return buffer


def ssimulacra2(original: np.ndarray, decoded: np.ndarray) -> float:
    """SSIMULACRA2 of two RGB uint8 arrays (100: identical, lower: worse); nan without the package or under 8 px.

    A perceptual score (libjxl's metric, through the pure-Python port on PyPI) that sees blur, ringing and blocking
    the way PSNR does not; the visual comparison shows why that matters.
    """
    if ssimulacra2_missing() or min(original.shape[:2]) < 8:  # the metric's smallest scale is 8×8
        return math.nan
    from ssimulacra2 import compute_ssimulacra2

    return float(compute_ssimulacra2(_png(original), _png(decoded)))


def rd_point(
    setting: float, num_bytes: int, original: np.ndarray, decoded: np.ndarray, enc_s: float, dec_s: float
) -> dict[str, float]:
    """One measured point: bpp of the real file (header included), RGB PSNR, MS-SSIM and SSIMULACRA2, codec seconds."""
    if decoded.shape != original.shape:
        raise ValueError(f"decoded image has shape {decoded.shape}, expected {original.shape}")
    h, w = original.shape[:2]
    return {
        "setting": float(setting),
        "num_bytes": num_bytes,
        "bpp": num_bytes * 8 / (w * h),
        "psnr": psnr(original, decoded),
        "ms_ssim": ms_ssim(original, decoded),
        "ssimulacra2": ssimulacra2(original, decoded),
        "enc_s": enc_s,
        "dec_s": dec_s,
    }


def measure(key: str, array: np.ndarray, sweep: Sequence[float]) -> list[dict[str, float]]:
    """Every setting of one codec on one image: the unit of work of the process pool (so it takes a codec key)."""
    codec = CODECS[key]
    points = []
    for setting in sweep:
        start = time.perf_counter()
        data = codec.encode(array, setting)
        encoded = time.perf_counter()
        decoded = codec.decode(data)
        points.append(rd_point(setting, len(data), array, decoded, encoded - start, time.perf_counter() - encoded))
    return points
