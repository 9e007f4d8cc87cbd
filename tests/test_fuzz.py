"""Corrupt bitstreams through the public decoder: each case ends in a YotoError or an image of the declared size.

The normal run makes over 2,000 cases; set ``YOTOCODEC_FUZZ_SCALE=20`` (or more) for the longer run documented in
the README.  Cases whose CRC is recomputed reach the entropy decoder itself, not just the container checks.
"""

from __future__ import annotations

import os
import random
import struct
import zlib

import pytest
from conftest import synthetic

import yotocodec
from yotocodec.container import MODES, Header, pack, unpack

SCALE = int(os.environ.get("YOTOCODEC_FUZZ_SCALE", "1"))


def outcome(data: bytes, model) -> str:
    """'error' or 'image'; anything else (another exception type, a wrong size) fails the test."""
    try:
        image = yotocodec.decode(data, model=model)
    except yotocodec.YotoError as exc:
        assert str(exc) and "\n" not in str(exc)
        return "error"
    header, _ = unpack(data)
    assert image.size == (header.width, header.height)
    return "image"


def with_valid_crc(data: bytes) -> bytes:
    """Recompute the CRC so that a damaged file gets past the checksum and into the decoder."""
    crc_end = len(data) - sum(len(s) for s in unpack_lengths(data))
    body = data[: crc_end - 4] + data[crc_end:]
    return data[: crc_end - 4] + struct.pack(">I", zlib.crc32(body)) + data[crc_end:]


def unpack_lengths(data: bytes) -> list[bytes]:
    return unpack(data)[1]


@pytest.fixture(scope="module")
def files(model) -> list[bytes]:
    return [
        yotocodec.encode(synthetic(40, 30, seed=1), 50, model=model),
        yotocodec.encode(synthetic(24, 20, "RGBA", seed=2), 80, model=model),
    ]


def test_byte_level_damage(files, model):
    """Flipped bits, every truncation, spliced and appended bytes: all caught, almost all by the CRC."""
    rng = random.Random(0)
    counts = {"error": 0, "image": 0}
    for data in files:
        for cut in range(len(data)):
            counts[outcome(data[:cut], model)] += 1
        for _ in range(500 * SCALE):
            damaged = bytearray(data)
            position = rng.randrange(len(damaged))
            damaged[position] ^= 1 << rng.randrange(8)
            counts[outcome(bytes(damaged), model)] += 1
        for _ in range(200 * SCALE):
            at = rng.randrange(len(data))
            splice = rng.randbytes(rng.randrange(1, 16))
            counts[outcome(data[:at] + splice + data[at + rng.randrange(0, 16) :], model)] += 1
        for _ in range(50 * SCALE):
            counts[outcome(data + rng.randbytes(rng.randrange(1, 9)), model)] += 1
    assert sum(counts.values()) >= 1400 * SCALE
    assert counts["image"] == 0  # CRC32 catches every single-burst corruption of these short files


def test_damage_behind_a_valid_crc(files, model):
    """Garbage payloads and rewritten strings with a recomputed CRC reach the rANS decoder: image or YotoError."""
    rng = random.Random(1)
    counts = {"error": 0, "image": 0}
    for data in files:
        header, strings = unpack(data)
        for _ in range(120 * SCALE):
            damaged = [bytearray(s) for s in strings]
            k = rng.randrange(len(damaged))
            action = rng.randrange(4)
            if action == 0 and damaged[k]:
                damaged[k][rng.randrange(len(damaged[k]))] ^= 1 << rng.randrange(8)
            elif action == 1:
                damaged[k] = damaged[k][: rng.randrange(len(damaged[k]) + 1)]
            elif action == 2:
                damaged[k] = bytearray(rng.randbytes(rng.randrange(0, 80)))
            else:
                damaged[k] += rng.randbytes(rng.randrange(1, 40))
            counts[outcome(pack(header, [bytes(s) for s in damaged]), model)] += 1
    assert sum(counts.values()) >= 240 * SCALE
    assert counts["image"] > 0  # most of these decode to (garbage) pictures of the declared size


def test_extreme_header_fields(files, model):
    """Every header field rewritten to extreme or inconsistent values, with a valid CRC."""
    counts = {"error": 0, "image": 0}
    for data in files:
        header, strings = unpack(data)
        variants = []
        for width, height in [(1, 1), (1, 2000), (2000, 1), (64, 64), (header.height, header.width)]:
            variants.append(Header(header.model_id, header.lmbda_code, width, height, header.mode))
        for code in (0, 1, 32768, 65535):
            variants.append(Header(header.model_id, code, header.width, header.height, header.mode))
        for mode in MODES:
            variants.append(Header(header.model_id, header.lmbda_code, header.width, header.height, mode))
        variants.append(Header("00000000", header.lmbda_code, header.width, header.height, header.mode))
        for variant in variants:
            for candidate in (strings, strings[::-1], strings[:2], [*strings, b"x"], [b""] * len(strings)):
                counts[outcome(pack(variant, candidate), model)] += 1
    assert sum(counts.values()) >= 140
    assert counts["error"] > 0 and counts["image"] > 0


def test_unknown_model_is_named(files, model):
    header, strings = unpack(files[0])
    foreign = pack(Header("0badc0de", header.lmbda_code, header.width, header.height, header.mode), strings)
    with pytest.raises(yotocodec.YotoError, match="written by model 0badc0de"):
        yotocodec.decode(foreign, model=model)
