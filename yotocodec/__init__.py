"""yotocodec: a variable-rate learned image codec — one λ-conditioned model for every quality.

>>> import yotocodec
>>> data = yotocodec.encode(Image.open("photo.png"), quality=60)   # bytes
>>> image = yotocodec.decode(data)                                   # PIL.Image
>>> data, trials = yotocodec.encode_to_size(image, 40_000)            # the best quality within 40 kB

Importing the package registers the ``.yoto`` format with Pillow and loads neither torch nor CompressAI: they are
imported on first use of what needs them (coding, a model), so ``Image.open`` of a file's header and the command
line's help and ``info`` answer at once.
"""

import importlib
import importlib.util
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# CompressAI 1.2.8 calls torch.jit.script at import time, which torch ≥ 2.10 flags as deprecated: noise for users.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

from . import pillow_plugin  # noqa: E402, F401  (registers the .yoto format with Pillow)
from .errors import YotoError  # noqa: E402
from .inspection import Info, inspect  # noqa: E402
from .metadata import Metadata, without_exif  # noqa: E402

_LAZY = {
    "decode": "codec",
    "encode": "codec",
    "load_model": "loading",
    "encode_to_bpp": "ratecontrol",
    "encode_to_psnr": "ratecontrol",
    "encode_to_size": "ratecontrol",
}

try:
    __version__ = version("yotocodec")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    """The coding functions, imported (with torch) on first use; also any submodule, e.g. ``yotocodec.ratecontrol``."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


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
