"""Files that appear whole or not at all: outputs, weights and checkpoints are written beside their target and then
renamed over it, so an interrupted write never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A temporary file beside ``path`` that replaces it only if the block succeeds.

    The temporary file is created like any other (mode from the umask), not private like ``mkstemp``'s.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
