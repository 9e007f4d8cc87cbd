"""The ``.yoto`` bitstream container: a small checksummed header in front of the entropy-coded strings.

Pure Python on purpose (no torch), so files can be inspected and validated without loading a model.
The byte layout is documented in ``docs/FORMAT.md``; any change to it must bump :data:`FORMAT_VERSION`.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import YotoError

MAGIC = b"YOTO"
FORMAT_VERSION = 3
# Version 1 is version 2 without the flags byte (no metadata); version 3 has version 2's layout and pads the image
# only to a multiple of 16 (the codec's latent geometry, docs/FORMAT.md).
READABLE_VERSIONS = (1, 2, 3)
FLAG_ICC_PROFILE = 0x01  # an ICC colour profile follows the coded strings
FLAG_EXIF = 0x02  # an EXIF block follows them (after the profile, if both)
MODES = ("L", "RGB", "LA", "RGBA")
MAX_PIXELS = 1 << 26
MAX_SIDE = 65535
LAMBDA_CODE_MAX = 65535
MAX_STRINGS = 8

_FIXED = struct.Struct(">4sB4sHB")  # magic, version, model id, λ code, mode code
_SIDE_VARINT_BYTES = 3  # enough for MAX_SIDE; longer encodings are rejected before decoding further
_LENGTH_VARINT_BYTES = 5  # enough for any length below 2**32
_MAX_LENGTH = (1 << 32) - 1
_CRC = struct.Struct(">I")
_MODEL_ID = re.compile(r"[0-9a-f]{8}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_size(width: int, height: int) -> None:
    """Shared by the constructor and the reader, so a file can never declare a size we would refuse to write."""
    for name, side in (("width", width), ("height", height)):
        if side == 0:
            raise YotoError(f"invalid header: zero {name}")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise YotoError(
            f"invalid header: declared size {width}x{height} exceeds the limit of {MAX_SIDE} pixels per side"
        )
    if width * height > MAX_PIXELS:
        raise YotoError(f"invalid header: declared size {width}x{height} exceeds the limit of {MAX_PIXELS} pixels")


@dataclass(frozen=True)
class Header:
    """Everything the decoder needs besides the strings: which model, which rate point, the image geometry, and
    which metadata strings (ICC profile, EXIF block) end the list."""

    model_id: str
    lmbda_code: int
    width: int
    height: int
    mode: str
    has_icc_profile: bool = False
    has_exif: bool = False
    version: int = FORMAT_VERSION  # the format version a file was read in (the codec's geometry depends on it)

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not _MODEL_ID.fullmatch(self.model_id):
            raise YotoError(f"invalid header: model id must be 8 lowercase hex characters, got {self.model_id!r}")
        if not _is_int(self.lmbda_code) or not 0 <= self.lmbda_code <= LAMBDA_CODE_MAX:
            raise YotoError(
                f"invalid header: λ code must be an integer in 0..{LAMBDA_CODE_MAX}, got {self.lmbda_code!r}"
            )
        if not _is_int(self.width) or not _is_int(self.height) or self.width < 0 or self.height < 0:
            raise YotoError(f"invalid header: size must be two positive integers, got {self.width!r}x{self.height!r}")
        _check_size(self.width, self.height)
        if self.mode not in MODES:
            raise YotoError(f"invalid header: unknown image mode {self.mode!r} (expected one of {', '.join(MODES)})")
        for name in ("has_icc_profile", "has_exif"):
            if not isinstance(getattr(self, name), bool):
                raise YotoError(f"invalid header: {name} must be a bool, got {getattr(self, name)!r}")
        if self.version not in READABLE_VERSIONS:
            raise YotoError(f"invalid header: unknown format version {self.version!r}")

    def optional_strings(self) -> tuple[bool, bool, bool]:
        """Which of the optional strings (alpha, ICC profile, EXIF block) a file with this header holds."""
        return self.mode in ("LA", "RGBA"), self.has_icc_profile, self.has_exif


def _varint(value: int) -> bytes:
    """Unsigned LEB128, minimal: small images and short strings cost one or two bytes instead of four."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: memoryview, pos: int, max_bytes: int, what: str) -> tuple[int, int]:
    """Decode one varint at ``pos``; returns (value, next position). Rejects every encoding `_varint` cannot produce."""
    value = 0
    for i in range(max_bytes):
        if pos + i >= len(data):
            raise YotoError(f"truncated header: file ends inside the {what} field")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise YotoError(f"invalid header: bad varint for {what} (non-minimal encoding)")
            return value, pos + i + 1
    raise YotoError(f"invalid header: bad varint for {what} (longer than {max_bytes} bytes)")


@dataclass(frozen=True)
class Payload:
    """What a file carries after its header, named: the strings are stored in this order, the optional ones only
    when the header says so (alpha for the modes LA and RGBA, the profile and EXIF by the header's flags)."""

    y: bytes  # the coded latent
    z: bytes  # the coded hyper-latent
    alpha: bytes | None = None  # the alpha plane, zlib-compressed (lossless)
    icc_profile: bytes | None = None
    exif: bytes | None = None

    def strings(self) -> list[bytes]:
        optional = (self.alpha, self.icc_profile, self.exif)
        return [self.y, self.z, *(string for string in optional if string is not None)]

    @classmethod
    def from_strings(cls, header: Header, strings: Sequence[bytes]) -> Payload:
        """Name a file's strings after its header, which says how many there must be."""
        optional = header.optional_strings()
        expected = 2 + sum(optional)
        if len(strings) != expected:
            raise YotoError(f"invalid file: {len(strings)} strings for a {header.mode} image, expected {expected}")
        rest = list(strings[2:])
        alpha, icc_profile, exif = (rest.pop(0) if present else None for present in optional)
        return cls(strings[0], strings[1], alpha, icc_profile, exif)


def write(header: Header, payload: Payload) -> bytes:
    """A complete file; the header's mode and flags must match the payload's optional strings."""
    present = (payload.alpha is not None, payload.icc_profile is not None, payload.exif is not None)
    if header.optional_strings() != present:
        raise ValueError("the header's mode and flags do not match the payload")
    return pack(header, payload.strings())


def read(data: bytes) -> tuple[Header, Payload]:
    """Fully validate a file (:func:`unpack`) and name its strings."""
    header, strings = unpack(data)
    return header, Payload.from_strings(header, strings)


def pack(header: Header, strings: Sequence[bytes]) -> bytes:
    """Serialise a header and its 1–8 strings into one self-checking file."""
    if header.version != FORMAT_VERSION:
        raise ValueError(f"this yotocodec writes format version {FORMAT_VERSION} only, not {header.version}")
    if not 1 <= len(strings) <= MAX_STRINGS:
        raise YotoError(f"a yotocodec file holds 1 to {MAX_STRINGS} strings, got {len(strings)}")
    for i, string in enumerate(strings):
        if not isinstance(string, (bytes, bytearray, memoryview)):
            raise TypeError(f"string {i + 1} must be bytes, got {type(string).__name__}")
        if len(string) > _MAX_LENGTH:
            raise YotoError(f"string {i + 1} is too long for a yotocodec file ({len(string)} bytes)")
    head = bytearray(
        _FIXED.pack(MAGIC, FORMAT_VERSION, bytes.fromhex(header.model_id), header.lmbda_code, MODES.index(header.mode))
    )
    head.append(FLAG_ICC_PROFILE * header.has_icc_profile | FLAG_EXIF * header.has_exif)
    head += _varint(header.width)
    head += _varint(header.height)
    head.append(len(strings))
    for string in strings:
        head += _varint(len(string))
    payload = b"".join(strings)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return bytes(head) + _CRC.pack(crc) + payload


def _parse_header(data: memoryview) -> tuple[Header, list[int], int]:
    """Validate and decode everything up to the CRC field; returns (header, string lengths, CRC offset).

    Checks run in the documented order and only ever read bytes that exist, so any input ends in a YotoError.
    """
    if len(data) < _FIXED.size:
        raise YotoError(f"truncated: {len(data)} bytes is too short for a yotocodec header")
    magic, version, model_id, lmbda_code, mode_code = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise YotoError("not a yotocodec file (bad magic bytes)")
    if version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS[:-1])) + f" and {READABLE_VERSIONS[-1]}"
        newer = "; it was written by a newer yotocodec: upgrade to read it" if version > FORMAT_VERSION else ""
        raise YotoError(f"unsupported format version {version} (this yotocodec reads versions {readable}){newer}")
    if mode_code >= len(MODES):
        raise YotoError(f"invalid header: unknown image mode code {mode_code}")
    flags, pos = 0, _FIXED.size
    if version >= 2:
        if pos >= len(data):
            raise YotoError("truncated header: file ends before the flags")
        flags, pos = data[pos], pos + 1
        if flags & ~(FLAG_ICC_PROFILE | FLAG_EXIF):
            raise YotoError(f"invalid header: unknown flags 0x{flags:02x}")
    width, pos = _read_varint(data, pos, _SIDE_VARINT_BYTES, "width")
    height, pos = _read_varint(data, pos, _SIDE_VARINT_BYTES, "height")
    _check_size(width, height)
    if pos >= len(data):
        raise YotoError("truncated header: file ends before the number of strings")
    count = data[pos]
    pos += 1
    if not 1 <= count <= MAX_STRINGS:
        raise YotoError(f"invalid header: number of strings is {count}, must be 1 to {MAX_STRINGS}")
    lengths = []
    for i in range(count):
        length, pos = _read_varint(data, pos, _LENGTH_VARINT_BYTES, f"string {i + 1} length")
        if length > _MAX_LENGTH:
            raise YotoError(f"invalid header: bad varint for string {i + 1} length (value exceeds 32 bits)")
        lengths.append(length)
    if pos + _CRC.size > len(data):
        raise YotoError("truncated header: file ends inside the CRC32 field")
    has_icc_profile, has_exif = bool(flags & FLAG_ICC_PROFILE), bool(flags & FLAG_EXIF)
    header = Header(model_id.hex(), lmbda_code, width, height, MODES[mode_code], has_icc_profile, has_exif, version)
    return header, lengths, pos


def read_header(data: bytes) -> tuple[Header, int]:
    """Decode just the header, e.g. to describe a file; returns (header, header size = offset of the payload).

    Checks magic, version and fields against the caps, but not the payload lengths or the CRC32.
    """
    header, _, crc_pos = _parse_header(memoryview(data).cast("B"))
    return header, crc_pos + _CRC.size


def unpack(data: bytes) -> tuple[Header, list[bytes]]:
    """Fully validate a file (structure, exact length, CRC32) and return its header and strings.

    Raises only YotoError on bad input, allocates no more than the input's size and runs in linear time.
    """
    view = memoryview(data).cast("B")
    header, lengths, crc_pos = _parse_header(view)
    start = crc_pos + _CRC.size
    expected = start + sum(lengths)
    if len(view) < expected:
        raise YotoError(f"truncated: file has {len(view)} bytes, header declares {expected}")
    if len(view) > expected:
        raise YotoError(f"invalid file: {len(view) - expected} unexpected trailing bytes")
    (stored_crc,) = _CRC.unpack_from(view, crc_pos)
    if zlib.crc32(view[start:], zlib.crc32(view[:crc_pos])) != stored_crc:
        raise YotoError("corrupt: CRC32 mismatch (the file is damaged)")
    strings = []
    for length in lengths:
        strings.append(bytes(view[start : start + length]))
        start += length
    return header, strings
