"""The rANS decoder's helper process: reused across files, replaced when it dies, never the caller's crash."""

from __future__ import annotations

import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import synthetic

import yotocodec
from yotocodec import isolation, slices


@pytest.fixture(scope="module")
def coded(model) -> tuple[bytes, np.ndarray]:
    data = yotocodec.encode(synthetic(70, 50, seed=4), 50, model=model)
    return data, np.asarray(yotocodec.decode(data, model=model))


def test_one_helper_serves_file_after_file(coded, model):
    data, pixels = coded
    first = isolation.decoder()
    for _ in range(3):
        assert np.array_equal(np.asarray(yotocodec.decode(data, model=model)), pixels)
    assert isolation.decoder() is first and first.alive()


@pytest.mark.skipif(sys.platform == "win32", reason="signals")
def test_a_helper_that_dies_is_a_one_line_error_and_the_next_file_gets_a_new_one(coded, model, monkeypatch):
    data, pixels = coded
    helper = isolation.decoder()
    real_dump = isolation.pickle.dump

    def crash_then_send(obj, file, **kwargs):  # the helper dies as it would on a forged string
        os.kill(helper.process.pid, signal.SIGSEGV)
        helper.process.wait()
        real_dump(obj, file, **kwargs)

    monkeypatch.setattr(isolation.pickle, "dump", crash_then_send)
    with pytest.raises(yotocodec.YotoError, match=r"^corrupt: entropy decoding failed \(SIGSEGV in the entropy"):
        yotocodec.decode(data, model=model)
    monkeypatch.undo()
    assert not helper.alive()
    assert np.array_equal(np.asarray(yotocodec.decode(data, model=model)), pixels)
    assert isolation.decoder() is not helper


def test_an_interrupted_request_leaves_no_answer_behind(coded, model, monkeypatch):
    """Ctrl-C between a request and its answer ends that helper: the next file cannot read the stale answer."""
    data, pixels = coded
    helper = isolation.decoder()
    real_load = isolation.pickle.load
    monkeypatch.setattr(isolation.pickle, "load", lambda file: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        yotocodec.decode(data, model=model)
    monkeypatch.setattr(isolation.pickle, "load", real_load)
    assert not helper.alive()
    assert np.array_equal(np.asarray(yotocodec.decode(data, model=model)), pixels)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_starts_its_own_helper(model):
    """A child forked from a process that has a helper must not share the parent's pipes.

    The child only entropy-decodes (no convolutions): torch's own thread pools are not safe to use after a fork.
    """
    conditional = model.gaussian_conditional
    indexes = torch.full((1, 4, 5, 6), 10, dtype=torch.int32)
    symbols = torch.randint(-3, 4, (1, 4, 5, 6), generator=torch.Generator().manual_seed(0))
    string = conditional.compress(symbols.double(), indexes)[0]
    parent_helper = isolation.decoder()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: decode through a helper of its own and report whether it got the symbols back
        ok = False
        try:
            helper = isolation.decoder()
            decoded = slices.decompress(conditional, string, indexes, helper.stream)
            ok = helper is not parent_helper and torch.equal(decoded, symbols.int())
            isolation.stop()
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert parent_helper.alive() and isolation.decoder() is parent_helper
    assert torch.equal(slices.decompress(conditional, string, indexes, parent_helper.stream), symbols.int())


def test_stop_ends_the_helper(coded, model):
    data, pixels = coded
    helper = isolation.decoder()
    isolation.stop()
    assert helper.process.returncode == 0
    assert np.array_equal(np.asarray(yotocodec.decode(data, model=model)), pixels)


def test_threads_sharing_the_helper_decode_their_own_files(coded, model):
    """A file's y string is read a slice at a time through the shared helper: one stream at a time, never mixed."""
    other = yotocodec.encode(synthetic(64, 80, seed=5), 20, model=model)
    expected = {coded[0]: coded[1], other: np.asarray(yotocodec.decode(other, model=model))}
    files = [coded[0], other] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(lambda data: np.asarray(yotocodec.decode(data, model=model)), files))
    assert all(np.array_equal(pixels, expected[data]) for data, pixels in zip(files, decoded, strict=True))
