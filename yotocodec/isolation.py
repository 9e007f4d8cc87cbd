"""Run CompressAI's native rANS decoder where a crash cannot take the caller down.

The decoder reads its input without bounds checks: a crafted payload that passes the CRC can make it read past its
buffer and segfault (its bypass mode can read many times the string's length past its end, so no practical padding
bounds it).  The rANS calls therefore run in a helper process (:mod:`yotocodec.rans_server`): a bare interpreter
that loads only CompressAI's ``ans`` extension, started on first use and kept for the files that follow, so a decode
costs two pipe round trips instead of a fork of the caller (tens of milliseconds with torch loaded).  Everything
else — the hyper-synthesis between the two strings included — stays in the caller with all its threads.  If the
helper dies, the caller gets a one-line ``YotoError`` and the next file starts a fresh helper.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
from compressai import ans

from .errors import YotoError

SERVER = Path(__file__).with_name("rans_server.py")


class DecoderProcess:
    """A stand-in for an entropy model's ``entropy_coder`` whose ``decode_with_indexes`` runs in the helper, and a
    ``stream`` for :func:`yotocodec.slices.decompress`."""

    def __init__(self) -> None:
        self.owner = os.getpid()  # a forked child of the caller must not talk through the caller's pipes
        self.lock = threading.Lock()  # one request and its answer, or one stream (see stream), at a time
        args = [sys.executable, "-I", "-S", str(SERVER), ans.__file__]
        try:
            self.process = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
            )  # fmt: skip
        except OSError as exc:
            raise YotoError(f"cannot start the entropy decoder process: {exc.strerror or exc}") from None
        if self.process.stdout.read(1) != b"R":
            self.close()
            raise YotoError("cannot start the entropy decoder process: it exited before it was ready")

    def decode_with_indexes(self, *args: object) -> np.ndarray:
        """CompressAI's ``RansDecoder.decode_with_indexes(string, indexes, cdfs, cdf_lengths, offsets)``; the values
        come back as an int32 array (CompressAI makes a tensor of them)."""
        with self.lock:
            return self._ask("decode_with_indexes", *args)

    @contextmanager
    def stream(self, string: bytes) -> Iterator[Callable[..., np.ndarray]]:
        """Read one rANS string a slice at a time: yields ``RansDecoder.decode_stream(indexes, cdfs, cdf_lengths,
        offsets)`` for it; the helper serves no other request until the block ends (threads cannot interleave)."""
        with self.lock:
            self._ask("set_stream", string)
            yield partial(self._ask, "decode_stream")

    def _ask(self, method: str, *args: object) -> np.ndarray:
        """One request to the helper and its answer."""
        try:
            pickle.dump((method, args), self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.flush()
            return np.frombuffer(pickle.load(self.process.stdout), dtype=np.int32)
        except (OSError, EOFError, pickle.UnpicklingError):  # the helper died on this string
            raise self._failure() from None
        except BaseException:  # interrupted mid-request: its answer must not reach the next request
            self.close(kill=True)
            raise

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def close(self, kill: bool = False) -> None:
        """End the helper (it exits when its input closes, or at once with ``kill``) and reap it."""
        if self.owner != os.getpid():
            return
        if kill:
            self.process.kill()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _failure(self) -> YotoError:
        self.close()
        status, cause = self.process.returncode, ""
        if status is not None and status < 0:
            cause = f" ({signal.Signals(-status).name} in the entropy decoder)"
        return YotoError(f"corrupt: entropy decoding failed{cause}; the file is damaged or forged")


_helper: DecoderProcess | None = None
_start_lock = threading.Lock()


def decoder() -> DecoderProcess:
    """The helper of this process, started if there is none (or the last one died)."""
    global _helper
    with _start_lock:
        if _helper is None or not _helper.alive():
            _helper = DecoderProcess()
        return _helper


@atexit.register
def stop() -> None:
    """End this process's helper now (a later decode starts a new one)."""
    global _helper
    with _start_lock:
        if _helper is not None:
            _helper.close()
            _helper = None
