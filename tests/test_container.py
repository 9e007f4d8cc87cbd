"""The .yoto container: round trips, the documented layout, and refusal of every malformed input with YotoError."""

from __future__ import annotations

import re
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yotocodec.container import (
    FORMAT_VERSION,
    LAMBDA_CODE_MAX,
    MAGIC,
    MAX_PIXELS,
    MAX_SIDE,
    MODES,
    Header,
    Payload,
    pack,
    read,
    read_header,
    unpack,
    write,
)
from yotocodec.errors import YotoError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def leb128(value: int) -> bytes:
    """Independent varint encoder, so the tests do not trust the module's own."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def raw_file(
    *,
    magic: bytes = MAGIC,
    version: int = FORMAT_VERSION,
    model_id: bytes = bytes.fromhex("0123abcd"),
    code: int = 1234,
    mode_code: int = 1,
    flags: bytes = b"\x00",  # version 2's flags byte; b"" for a version 1 file
    width: bytes = b"\x80\x06",  # 768
    height: bytes = b"\x80\x04",  # 512
    count: int | None = None,
    lengths: list[bytes] | None = None,
    payload: Sequence[bytes] = (b"y" * 20, b"z" * 5),
    crc: int | None = None,
    extra: bytes = b"",
) -> bytes:
    """Assemble a file field by field, so each test can break exactly one thing (the CRC is right unless given)."""
    head = magic + struct.pack(">B4sHB", version, model_id, code, mode_code) + flags + width + height
    head += bytes([len(payload) if count is None else count])
    head += b"".join(lengths if lengths is not None else [leb128(len(s)) for s in payload])
    body = b"".join(payload)
    if crc is None:
        crc = zlib.crc32(head + body)
    return head + struct.pack(">I", crc) + body + extra


HEADER = Header("0123abcd", 1234, 768, 512, "RGB")
SMALL = pack(Header("deadbeef", 7, 3, 2, "RGBA"), [b"abc", b"", b"\x00\xff"])


@st.composite
def headers(draw: st.DrawFn) -> Header:
    width = draw(st.integers(1, MAX_SIDE))
    height = draw(st.integers(1, min(MAX_SIDE, MAX_PIXELS // width)))
    return Header(
        model_id=draw(st.text("0123456789abcdef", min_size=8, max_size=8)),
        lmbda_code=draw(st.integers(0, LAMBDA_CODE_MAX)),
        width=width,
        height=height,
        mode=draw(st.sampled_from(MODES)),
        has_icc_profile=draw(st.booleans()),
        has_exif=draw(st.booleans()),
    )


string_lists = st.lists(st.binary(max_size=300), min_size=1, max_size=8)


def valid_files() -> st.SearchStrategy[bytes]:
    return st.builds(pack, headers(), string_lists)


def unpack_or_yoto_error(data: bytes) -> None:
    """The fuzz contract: any input either decodes or raises YotoError (pytest reports anything else)."""
    try:
        unpack(data)
    except YotoError as exc:
        assert "\n" not in str(exc)


# --- round trips and layout -------------------------------------------------------------------------------------


@FUZZ
@given(headers(), string_lists)
def test_round_trip(header: Header, strings: list[bytes]) -> None:
    data = pack(header, strings)
    got_header, got_strings = unpack(data)
    assert got_header == header
    assert got_strings == strings
    assert read_header(data) == (header, len(data) - sum(map(len, strings)))


def test_round_trip_accepts_bytes_like() -> None:
    data = pack(HEADER, [bytearray(b"ab"), memoryview(b"cd")])
    assert unpack(bytearray(data)) == (HEADER, [b"ab", b"cd"])
    assert unpack(memoryview(data)) == (HEADER, [b"ab", b"cd"])


def test_layout_matches_the_spec() -> None:
    data = pack(HEADER, [b"y" * 20, b"z" * 5])
    assert data == raw_file()
    assert data[:13] == b"YOTO\x03\x01\x23\xab\xcd\x04\xd2\x01\x00"


@pytest.mark.parametrize(
    ("icc", "exif", "flags"), [(True, False, b"\x01"), (False, True, b"\x02"), (True, True, b"\x03")]
)
def test_the_flags_byte_says_which_metadata_is_stored(icc: bool, exif: bool, flags: bytes) -> None:
    header = Header("0123abcd", 1234, 768, 512, "RGB", has_icc_profile=icc, has_exif=exif)
    strings = [b"y" * 20, b"z" * 5] + [b"profile"] * icc + [b"exif"] * exif
    data = pack(header, strings)
    assert data == raw_file(flags=flags, payload=strings)
    assert unpack(data) == (header, strings)


def test_version_1_files_still_read() -> None:
    """Version 1 is version 2 without the flags byte: files written before colour profiles existed still decode."""
    data = raw_file(version=1, flags=b"")
    assert unpack(data) == (replace(HEADER, version=1), [b"y" * 20, b"z" * 5])
    assert read_header(data) == (replace(HEADER, version=1), len(data) - 25)


def test_version_2_files_read_as_version_2() -> None:
    """Version 3 has version 2's layout; the header says which one a file is, since the codec's geometry differs."""
    data = raw_file(version=2)
    assert unpack(data) == (replace(HEADER, version=2), [b"y" * 20, b"z" * 5])
    with pytest.raises(ValueError, match="writes format version 3 only"):
        pack(replace(HEADER, version=2), [b"y"])
    with pytest.raises(YotoError, match="unknown format version 4"):
        replace(HEADER, version=4)


def test_the_examples_in_the_format_document() -> None:
    """docs/FORMAT.md's example headers parse to what the text says, and their CRCs are those of the bytes shown."""
    text = (Path(__file__).parents[1] / "docs" / "FORMAT.md").read_text()
    examples = [bytes.fromhex(block) for block in re.findall(r"```\n(59 4f 54 4f [0-9a-f ]+)\n```", text)]
    rgb = Header("3f9c2a71", 32768, 768, 512, "RGB")
    expected = [rgb, replace(rgb, mode="RGBA"), replace(rgb, has_icc_profile=True)]
    assert len(examples) == len(expected)
    assert [read_header(example) for example in examples] == [
        (h, len(e)) for h, e in zip(expected, examples, strict=True)
    ]
    assert all(zlib.crc32(example[:-4]) == int.from_bytes(example[-4:], "big") for example in examples)


def test_multi_byte_length_varint() -> None:
    big = bytes(range(256)) * (((1 << 21) + 1) // 256 + 1)  # needs a 4-byte varint
    data = pack(HEADER, [big, b""])
    assert read_header(data)[1] == 12 + 1 + 2 + 2 + 1 + 4 + 1 + 4
    assert unpack(data) == (HEADER, [big, b""])


def test_extreme_header_fields() -> None:
    for header in (
        Header("00000000", 0, 1, 1, "L"),
        Header("ffffffff", LAMBDA_CODE_MAX, MAX_SIDE, MAX_PIXELS // MAX_SIDE, "LA"),
        Header("abcdef01", 5, 8192, 8192, "RGBA"),
    ):
        assert unpack(pack(header, [b"x"])) == (header, [b"x"])


def test_header_is_small_for_a_normal_photo() -> None:
    strings = [bytes(20000), bytes(500)]
    data = pack(HEADER, strings)
    header, size = read_header(data)
    assert header == HEADER
    assert size == len(data) - 20500
    assert size <= 32


# --- Header constructor ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model_id": "0123ABCD"}, "model id"),
        ({"model_id": "0123abc"}, "model id"),
        ({"model_id": "0123abcd0"}, "model id"),
        ({"model_id": "0123abcg"}, "model id"),
        ({"model_id": "0123abc\n"}, "model id"),
        ({"model_id": b"0123abcd"}, "model id"),
        ({"lmbda_code": LAMBDA_CODE_MAX + 1}, "λ code"),
        ({"lmbda_code": -1}, "λ code"),
        ({"lmbda_code": 1.0}, "λ code"),
        ({"lmbda_code": True}, "λ code"),
        ({"width": 0}, "zero width"),
        ({"height": 0}, "zero height"),
        ({"width": -5}, "positive integers"),
        ({"width": 2.0}, "positive integers"),
        ({"width": MAX_SIDE + 1, "height": 1}, "exceeds the limit"),
        ({"width": 8193, "height": 8193}, "exceeds the limit"),
        ({"mode": "CMYK"}, "unknown image mode"),
        ({"mode": "rgb"}, "unknown image mode"),
        ({"has_icc_profile": 1}, "has_icc_profile must be a bool"),
        ({"has_exif": None}, "has_exif must be a bool"),
    ],
)
def test_header_rejects_bad_fields(kwargs: dict, match: str) -> None:
    fields = {"model_id": "0123abcd", "lmbda_code": 1, "width": 4, "height": 4, "mode": "RGB"} | kwargs
    with pytest.raises(YotoError, match=match):
        Header(**fields)


def test_pack_rejects_bad_string_counts() -> None:
    with pytest.raises(YotoError, match="1 to 8 strings"):
        pack(HEADER, [])
    with pytest.raises(YotoError, match="1 to 8 strings"):
        pack(HEADER, [b""] * 9)
    with pytest.raises(TypeError, match="must be bytes"):
        pack(HEADER, ["text"])  # type: ignore[list-item]


# --- one test per validation step, in the documented order ----------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"Y", b"YOTO", SMALL[:11]])
def test_too_short(data: bytes) -> None:
    with pytest.raises(YotoError, match=rf"^truncated: {len(data)} bytes is too short for a yotocodec header$"):
        unpack(data)


@pytest.mark.parametrize("magic", [b"YOT0", b"\x89PNG", b"yoto"])
def test_bad_magic(magic: bytes) -> None:
    with pytest.raises(YotoError, match=r"not a yotocodec file \(bad magic bytes\)"):
        unpack(raw_file(magic=magic))


@pytest.mark.parametrize("version", [0, 4, 255])
def test_unsupported_version(version: int) -> None:
    match = rf"unsupported format version {version} \(this yotocodec reads versions 1, 2 and 3\)"
    with pytest.raises(YotoError, match=match) as error:
        unpack(raw_file(version=version))
    assert ("written by a newer yotocodec: upgrade to read it" in str(error.value)) == (version > 3)


@pytest.mark.parametrize("mode_code", [4, 255])
def test_unknown_mode_code(mode_code: int) -> None:
    with pytest.raises(YotoError, match=f"invalid header: unknown image mode code {mode_code}"):
        unpack(raw_file(mode_code=mode_code))


@pytest.mark.parametrize("flags", [0x04, 0x80, 0xFF])
def test_unknown_flags(flags: int) -> None:
    with pytest.raises(YotoError, match=f"^invalid header: unknown flags 0x{flags:02x}$"):
        unpack(raw_file(flags=bytes([flags])))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"width": b"\x81\x00"}, r"bad varint for width \(non-minimal encoding\)"),
        ({"height": b"\x80\x80\x00"}, r"bad varint for height \(non-minimal encoding\)"),
        ({"width": b"\xff\xff\xff\x01"}, r"bad varint for width \(longer than 3 bytes\)"),
        ({"lengths": [b"\x94\x00", b"\x05"]}, r"bad varint for string 1 length \(non-minimal encoding\)"),
        ({"lengths": [b"\x14", b"\x85\x80\x80\x80\x80\x00"]}, r"string 2 length \(longer than 5 bytes\)"),
        ({"lengths": [b"\x14", leb128(1 << 32)]}, r"string 2 length \(value exceeds 32 bits\)"),
    ],
)
def test_bad_varint(fields: dict, match: str) -> None:
    with pytest.raises(YotoError, match=match):
        unpack(raw_file(**fields))


def test_header_cut_inside_a_field() -> None:
    data = raw_file()
    header_size = read_header(data)[1]
    with pytest.raises(YotoError, match="truncated header: file ends before the flags"):
        unpack(data[:12])
    with pytest.raises(YotoError, match="truncated header: file ends inside the width"):
        unpack(data[:14])
    with pytest.raises(YotoError, match="truncated header: file ends inside the height"):
        unpack(data[:16])
    with pytest.raises(YotoError, match="truncated header: file ends inside the string 2 length"):
        unpack(data[: header_size - 5])
    with pytest.raises(YotoError, match="truncated header: file ends inside the CRC32"):
        unpack(data[: header_size - 1])
    with pytest.raises(YotoError, match="truncated header: file ends before the number of strings"):
        unpack(data[:17])


@pytest.mark.parametrize(
    ("width", "height", "match"),
    [
        (0, 5, "invalid header: zero width"),
        (5, 0, "invalid header: zero height"),
        (MAX_SIDE + 1, 1, rf"declared size {MAX_SIDE + 1}x1 exceeds the limit of {MAX_SIDE} pixels per side"),
        ((1 << 21) - 1, 1, "exceeds the limit"),
        (8193, 8193, rf"declared size 8193x8193 exceeds the limit of {MAX_PIXELS} pixels"),
    ],
)
def test_declared_size_caps(width: int, height: int, match: str) -> None:
    with pytest.raises(YotoError, match=match):
        unpack(raw_file(width=leb128(width), height=leb128(height)))


@pytest.mark.parametrize("count", [0, 9, 255])
def test_bad_string_count(count: int) -> None:
    with pytest.raises(YotoError, match=f"invalid header: number of strings is {count}, must be 1 to 8"):
        unpack(raw_file(count=count))


def test_truncated_payload() -> None:
    data = raw_file()
    with pytest.raises(YotoError, match=rf"^truncated: file has {len(data) - 3} bytes, header declares {len(data)}$"):
        unpack(data[:-3])


def test_huge_declared_lengths_fail_fast() -> None:
    """Eight maximal lengths in a tiny file: refused from the header alone, without allocating 32 GiB."""
    data = raw_file(lengths=[leb128((1 << 32) - 1)] * 8, count=8, payload=[b"xy"])
    start = time.perf_counter()
    with pytest.raises(YotoError, match=rf"truncated: file has {len(data)} bytes, header declares"):
        unpack(data)
    assert time.perf_counter() - start < 1.0


def test_trailing_bytes() -> None:
    with pytest.raises(YotoError, match="invalid file: 3 unexpected trailing bytes"):
        unpack(raw_file(extra=b"abc"))


def test_crc_mismatch() -> None:
    good = raw_file()
    with pytest.raises(YotoError, match=r"corrupt: CRC32 mismatch \(the file is damaged\)"):
        unpack(raw_file(crc=zlib.crc32(b"something else")))
    for position in (5, 9, len(good) - 1):  # model id, λ code and payload are only protected by the CRC
        damaged = bytearray(good)
        damaged[position] ^= 0x40
        with pytest.raises(YotoError, match="CRC32 mismatch"):
            unpack(bytes(damaged))


def test_read_header_skips_payload_checks() -> None:
    data = raw_file(crc=0, extra=b"junk")
    assert read_header(data)[0] == HEADER
    assert read_header(data[: read_header(data)[1]])[0] == HEADER
    with pytest.raises(YotoError, match="bad magic"):
        read_header(b"JUNK" + data[4:])


# --- fuzzing ---------------------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    unpack_or_yoto_error(data)


@FUZZ
@given(st.binary(max_size=60))
def test_fuzz_bytes_after_a_valid_prefix(tail: bytes) -> None:
    unpack_or_yoto_error(MAGIC + bytes([FORMAT_VERSION]) + tail)
    unpack_or_yoto_error(SMALL[:12] + tail)


@FUZZ
@given(valid_files(), st.data())
def test_fuzz_flipped_byte_is_rejected(data: bytes, draw: st.DataObject) -> None:
    position = draw.draw(st.integers(0, len(data) - 1))
    damaged = bytearray(data)
    damaged[position] ^= draw.draw(st.integers(1, 255))
    with pytest.raises(YotoError):
        unpack(bytes(damaged))


@FUZZ
@given(valid_files(), st.data())
def test_fuzz_truncation_is_rejected(data: bytes, draw: st.DataObject) -> None:
    with pytest.raises(YotoError):
        unpack(data[: draw.draw(st.integers(0, len(data) - 1))])


@FUZZ
@given(valid_files(), st.data(), st.binary(min_size=1, max_size=40))
def test_fuzz_spliced_bytes(data: bytes, draw: st.DataObject, junk: bytes) -> None:
    position = draw.draw(st.integers(0, len(data)))
    unpack_or_yoto_error(data[:position] + junk + data[position:])


def test_every_truncation_is_rejected() -> None:
    for size in range(len(SMALL)):
        with pytest.raises(YotoError):
            unpack(SMALL[:size])
    assert unpack(SMALL)[1] == [b"abc", b"", b"\x00\xff"]


def test_payload_names_the_strings_in_their_order():
    header = Header("0123abcd", 5, 10, 10, "RGBA", has_icc_profile=False, has_exif=True)
    payload = Payload(b"y", b"z", alpha=b"a", exif=b"e")
    header_back, back = read(write(header, payload))
    assert header_back == header and back == payload and back.strings() == [b"y", b"z", b"a", b"e"]
    with pytest.raises(ValueError, match="do not match"):
        write(header, Payload(b"y", b"z", alpha=b"a"))  # the header promises an EXIF block
    with pytest.raises(YotoError, match="3 strings for a RGBA image, expected 4"):
        read(pack(header, [b"y", b"z", b"a"]))
