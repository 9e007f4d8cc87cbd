"""Run CompressAI's native rANS decoder where a crash cannot take the caller down.

The decoder reads its input without bounds checks: a crafted payload that passes the CRC can make it read past its
buffer and segfault.  On platforms with ``fork`` the decode runs in a forked child (copy-on-write, a few milliseconds)
that sends its result back through a pipe; if the child dies, the caller gets a one-line ``YotoError`` instead.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import signal
from collections.abc import Callable
from typing import TypeVar

import torch

from .errors import YotoError

T = TypeVar("T")


def run_isolated(function: Callable[[], T], what: str) -> T:
    """``function()`` in a forked child where available (in-process elsewhere); ``what`` names it in errors."""
    if not hasattr(os, "fork"):
        return function()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: compute, send, and leave without running the parent's cleanup handlers
        status = 1
        try:
            os.close(read_end)
            faulthandler.disable()  # a crash here is an expected outcome, reported by the parent: no dump
            torch.set_num_threads(1)
            payload = pickle.dumps(function(), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise YotoError(f"corrupt: {what} failed ({name} in the entropy decoder); the file is damaged or forged")
    if os.WEXITSTATUS(status) != 0 or not payload:
        raise YotoError(f"corrupt: {what} failed; the file is damaged or forged")
    return pickle.loads(payload)
