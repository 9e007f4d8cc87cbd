"""Pillow integration, registered by ``import yotocodec``: ``Image.open("x.yoto")`` and ``img.save("x.yoto")``.

Opening validates the whole file (header, length, CRC32) and fills ``info`` with quality, λ, bpp, model id and
the stored ICC profile and EXIF block, if any (``icc_profile``, ``exif``: where Pillow's writers look for them);
pixels are decoded, with the default model (or ``$YOTOCODEC_MODEL``), only when Pillow loads the image.
Saving takes ``quality=`` (0–100) or ``lmbda=``, and ``model=`` (a path or a loaded model).
"""

from __future__ import annotations

from typing import IO

from PIL import Image, ImageFile

from .container import MAGIC
from .inspection import inspect

FORMAT = "YOTO"
MIME = "image/x-yoto"


def _accept(prefix: bytes) -> bool:
    return prefix[: len(MAGIC)] == MAGIC


class YotoImageFile(ImageFile.ImageFile):
    """A ``.yoto`` file: size, mode and ``info`` from the header at open, pixels on ``load()``."""

    format = FORMAT
    format_description = "yotocodec learned image"

    def _open(self) -> None:
        assert self.fp is not None
        info = inspect(self.fp.read())  # a damaged file raises its YotoError here, before any decoding
        self._size = (info.width, info.height)
        self._mode = info.mode
        self.info.update(quality=info.quality, lmbda=info.lmbda, bpp=info.bpp, model_id=info.model_id)
        self.info.update(info.metadata.info())
        self.tile = [ImageFile._Tile("yoto", (0, 0, *self.size), 0)]


class YotoDecoder(ImageFile.PyDecoder):
    """Decodes the whole file in one go: the learned transforms are not tiled."""

    _pulls_fd = True

    def decode(self, buffer: Image.DecoderInput) -> tuple[int, int]:
        from .codec import decode  # torch, only once pixels are wanted

        assert self.fd is not None
        image = decode(self.fd.read())
        self.set_as_raw(image.tobytes(), image.mode)
        return -1, 0


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    from .codec import encode

    options = im.encoderinfo
    fp.write(encode(im, options.get("quality"), lmbda=options.get("lmbda"), model=options.get("model")))


Image.register_open(FORMAT, YotoImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_decoder("yoto", YotoDecoder)
Image.register_extension(FORMAT, ".yoto")
Image.register_mime(FORMAT, MIME)
