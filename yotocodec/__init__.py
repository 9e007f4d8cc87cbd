"""yotocodec: a variable-rate learned image codec — one λ-conditioned model for every quality.

>>> import yotocodec
>>> data = yotocodec.encode(Image.open("photo.png"), quality=60)   # bytes
>>> image = yotocodec.decode(data)                                   # PIL.Image
>>> data, trials = yotocodec.encode_to_size(image, 40_000)            # the best quality within 40 kB
"""

import warnings
from importlib.metadata import PackageNotFoundError, version

# CompressAI 1.2.8 calls torch.jit.script at import time, which torch ≥ 2.10 flags as deprecated: noise for users.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

from . import pillow_plugin  # noqa: E402, F401  (registers the .yoto format with Pillow)
from .codec import Info, decode, encode, inspect  # noqa: E402
from .errors import YotoError  # noqa: E402
from .loading import load_model  # noqa: E402
from .metadata import Metadata, without_exif  # noqa: E402
from .ratecontrol import encode_to_bpp, encode_to_psnr, encode_to_size  # noqa: E402

try:
    __version__ = version("yotocodec")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Info",
    "Metadata",
    "YotoError",
    "__version__",
    "decode",
    "encode",
    "encode_to_bpp",
    "encode_to_psnr",
    "encode_to_size",
    "inspect",
    "load_model",
    "without_exif",
]
