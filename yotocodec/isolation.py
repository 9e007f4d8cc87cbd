"""Run CompressAI's native rANS decoder where a crash cannot take the caller down.

The decoder reads its input without bounds checks: a crafted payload that passes the CRC can make it read past its
buffer and segfault (its bypass mode can read many times the string's length past its end, so no practical padding
bounds it).  For each file, one forked child (copy-on-write, a few milliseconds) runs only the rANS calls and answers
them through a pipe; everything else — the hyper-synthesis between the two strings included — stays in the caller
with all its threads.  If the child dies, the caller gets a one-line ``YotoError`` instead.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import signal
from typing import BinaryIO

from compressai import ans

from .errors import YotoError


class IsolatedDecoder:
    """A stand-in for an entropy model's ``entropy_coder`` whose ``decode_with_indexes`` runs in a forked child.

    Use it as a context manager around one file's decoding; on platforms without ``fork`` it decodes in-process.
    """

    def __init__(self, what: str = "entropy decoding") -> None:
        self.what = what
        self.pid: int | None = None
        self._requests: BinaryIO | None = None
        self._answers: BinaryIO | None = None

    def __enter__(self) -> IsolatedDecoder:
        if not hasattr(os, "fork"):
            return self
        request_r, request_w = os.pipe()
        answer_r, answer_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(request_w)
            os.close(answer_r)
            _serve(request_r, answer_w)  # never returns
        os.close(request_r)
        os.close(answer_w)
        self._requests, self._answers = os.fdopen(request_w, "wb"), os.fdopen(answer_r, "rb")
        return self

    def decode_with_indexes(self, *args: object) -> list[int]:
        """CompressAI's ``RansDecoder.decode_with_indexes(string, indexes, cdfs, cdf_lengths, offsets)``."""
        if self.pid is None:
            return ans.RansDecoder().decode_with_indexes(*args)
        try:
            pickle.dump(args, self._requests, protocol=pickle.HIGHEST_PROTOCOL)
            self._requests.flush()
            return pickle.load(self._answers)
        except (OSError, EOFError, pickle.UnpicklingError):  # the child died on this string
            raise self._failure() from None

    def __exit__(self, *exc: object) -> None:
        if self.pid is None:
            return
        for pipe in (self._requests, self._answers):
            try:
                pipe.close()  # the child sees the end of its requests and exits
            except OSError:
                pass
        os.waitpid(self.pid, 0)
        self.pid = None

    def _failure(self) -> YotoError:
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        cause = ""
        if os.WIFSIGNALED(status):
            cause = f" ({signal.Signals(os.WTERMSIG(status)).name} in the entropy decoder)"
        return YotoError(f"corrupt: {self.what} failed{cause}; the file is damaged or forged")


def _serve(request_fd: int, answer_fd: int) -> None:
    """The child: decode each request with a fresh ``RansDecoder`` until the parent closes the pipe, then leave
    without running the parent's cleanup handlers."""
    status = 1
    try:
        faulthandler.disable()  # a crash here is an expected outcome, reported by the parent: no dump
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        with os.fdopen(request_fd, "rb") as requests, os.fdopen(answer_fd, "wb") as answers:
            while True:
                try:
                    args = pickle.load(requests)
                except EOFError:
                    break
                pickle.dump(ans.RansDecoder().decode_with_indexes(*args), answers, protocol=pickle.HIGHEST_PROTOCOL)
                answers.flush()
        status = 0
    finally:
        os._exit(status)
