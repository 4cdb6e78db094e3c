"""The ``.aec`` bitstream container, versions 1 and 2.

This module turns a :class:`Bitstream` (a :class:`Header` plus opaque payloads) into
bytes and back. It knows nothing about neural networks or entropy coding and imports
only the standard library, so it loads in milliseconds and can inspect files without
torch.

Layout (little-endian, byte by byte; see ``docs/FORMAT.md`` for the full specification)::

    offset  size  field
    0       4     magic b"\\x89AEC"
    4       1     format version: 1, or 2 for a fine (fractional) quality
    5       1     flags: bit0 alpha, bit1 ICC, bit2 EXIF; other bits must be 0
    6       1     n = length of the model name (1..64)
    7       n     model name, ASCII [a-z0-9._-]
    ..      8     weights hash (first 8 bytes of the sha256 of the weights file)
    ..      1     quality (1..255); its whole part in version 2
    ..      1     version 2 only: quality hundredths (1..99); quality = whole + hundredths/100
    ..      4     width (u32, >= 1)
    ..      4     height (u32, >= 1)
    ..      1     mode: 0 = L, 1 = RGB, 2 = RGBA, 3 = LA
    ..      1     bit depth (8)
    ..      2     tile width (u16, multiple of 16, >= 16)
    ..      2     tile height (u16, multiple of 16, >= 16)
    ..      4     number of tiles T = ceil(width / tile_w) * ceil(height / tile_h)
    ..      4*T   payload length of each tile (u32), raster order
    ..      4     alpha payload length (only if flag bit0)
    ..      4     ICC payload length (only if flag bit1)
    ..      4     EXIF payload length (only if flag bit2)
    ..            tile payloads, then alpha, ICC, EXIF payloads
    end-4   4     CRC32 (zlib.crc32) of every byte before it

The reader checks the magic, then the version, then the CRC, then every field and
every length before it slices or allocates anything. Every problem with the data
raises :class:`aecodec.errors.FormatError` whose message names the field and the
problem.
"""

from __future__ import annotations

import math
import numbers
import operator
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from aecodec import errors
from aecodec.errors import FormatError, LargeImageWarning

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_PIXELS",
    "MODES",
    "PREFIX_SIZE",
    "QUALITY_STEPS",
    "WARN_PIXELS",
    "Bitstream",
    "Header",
    "check_pixels",
    "check_prefix",
    "pack",
    "quality_from_steps",
    "quality_steps",
    "read_header",
    "unpack",
]

MAGIC: bytes = b"\x89AEC"
"""The first four bytes of every ``.aec`` file."""

FORMAT_VERSION: int = 2
"""The newest container version this module reads and writes; it reads every version from 1.

A file is written in the lowest version that holds its header: version 1 for a whole quality
(the same bytes as before version 2 existed), version 2 for a fine quality such as 5.37."""

QUALITY_STEPS: int = 100
"""Fine qualities are stored in steps of ``1 / QUALITY_STEPS`` (hundredths): 5.37 is level 5
plus 37 hundredths. See :func:`quality_steps`."""

MODES: tuple[str, ...] = ("L", "RGB", "RGBA", "LA")
"""Image modes, indexed by their code in the header (0 = L, 1 = RGB, 2 = RGBA, 3 = LA)."""

MAX_PIXELS: int = 2**28
"""Default limit on ``width * height`` (268,435,456 pixels): larger images are refused.

It applies to decoding ``.aec`` files and to images given to the encoder (checked from the
image header, before any pixel is decoded). Readers given ``max_pixels=None`` use the value of
this global at call time, so ``aecodec.container.MAX_PIXELS = 2**30`` raises the limit
process-wide. See ``docs/SECURITY.md`` for the memory and time this allows.
"""

WARN_PIXELS: int = 2**26
"""Default warning threshold on ``width * height`` (67,108,864 pixels, 8192x8192).

Above it, decoding and encoding issue :class:`aecodec.errors.LargeImageWarning` (as Pillow
warns with ``DecompressionBombWarning``); ``warn_pixels=None`` reads this global at call time.
"""

FLAG_ALPHA: int = 0x01
FLAG_ICC: int = 0x02
FLAG_EXIF: int = 0x04
KNOWN_FLAGS: int = FLAG_ALPHA | FLAG_ICC | FLAG_EXIF

MAX_MODEL_NAME: int = 64
"""Longest model name in bytes."""

TILE_ALIGN: int = 16
"""Tile sides must be positive multiples of this: the one home of "a multiple of 16" (the
models downsample by 16, so tiles, their padding and training crops are multiples of it)."""

MAX_TILE_SIDE: int = 0xFFFF - 0xFFFF % TILE_ALIGN
"""Largest tile side the format can describe (65520: the largest multiple of
:data:`TILE_ALIGN` in a u16); decoders may accept less (``aecodec.codec.MAX_TILE_SIDE``)."""

ALPHA_MODES: frozenset[str] = frozenset({"RGBA", "LA"})
"""The modes of :data:`MODES` with an alpha channel (coded losslessly, as its own payload)."""

MAX_PAYLOAD_BYTES: int = 2**32 - 1
"""Largest single payload (a u32 length field)."""

_NAME_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789._-")
_U8 = 0xFF
_U32 = 0xFFFFFFFF
_PREFIX = struct.Struct("<4sBBB")  # magic, version, flags, name length
_FIXED = struct.Struct("<8sBIIBBHHI")  # hash .. tile count, after the model name (version 1)
_FIXED_V2 = struct.Struct("<8sBBIIBBHHI")  # the same with the quality hundredths after quality
_U32_STRUCT = struct.Struct("<I")
_CRC_SIZE = 4
MIN_FILE_SIZE: int = _PREFIX.size + 1 + _FIXED.size + 4 + _CRC_SIZE
"""Smallest possible valid file: 1-byte model name, one empty tile, no extras (version 1;
a version-2 file is one byte longer)."""

BytesLike = bytes | bytearray | memoryview
# A payload of a Bitstream: bytes, or a read-only view into the one buffer of a parsed file
# (:func:`unpack` does not copy the payloads out of it).
Payload = bytes | memoryview


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def align_up(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`TILE_ALIGN`."""
    return _ceil_div(n, TILE_ALIGN) * TILE_ALIGN


def _as_int(value: Any, field: str) -> int:
    """Return ``value`` as a plain int (accepts numpy integers, rejects bool/float)."""
    if isinstance(value, bool):
        raise TypeError(f"{field} must be an integer, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{field} must be an integer, got {type(value).__name__} {value!r}"
        ) from None


def _as_bytes(value: Any, field: str) -> bytes:
    """Return a bytes-like ``value`` as ``bytes`` (no copy when it already is)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{field} must be bytes, got {type(value).__name__}")


def _as_payload(value: Any, field: str) -> Payload:
    """A payload as given where nobody can change it (``bytes``, a read-only byte
    ``memoryview``: no copy); anything writable is copied to ``bytes``."""
    if isinstance(value, memoryview) and value.readonly and value.format == "B" and value.ndim == 1:
        return value
    return _as_bytes(value, field)


# Larger magnitudes are refused before any arithmetic (1e308 * 100 overflows to infinity);
# every model's range is far inside this.
MAX_QUALITY_MAGNITUDE = 1e6


def quality_steps(quality: Any, field: str = "quality") -> int:
    """A quality as an integer number of :data:`QUALITY_STEPS` (hundredths): 5 -> 500, 5.37 -> 537.

    Accepts ints (also numpy integers) and real numbers with at most two decimals (floats,
    numpy floats). Range checks are the caller's.

    Raises:
        TypeError: not a number (or a bool).
        ValueError: not finite, or finer than a hundredth (e.g. 5.375).
    """
    if isinstance(quality, bool):
        raise TypeError(f"{field} must be a number, got bool {quality!r}")
    try:
        return operator.index(quality) * QUALITY_STEPS
    except TypeError:
        pass
    if not isinstance(quality, numbers.Real):
        raise TypeError(f"{field} must be a number, got {type(quality).__name__} {quality!r}")
    value = float(quality)
    if not math.isfinite(value):
        raise ValueError(f"{field} {value} is invalid; it must be a finite number")
    if abs(value) > MAX_QUALITY_MAGNITUDE:
        raise ValueError(f"{field} {value:g} is out of range")
    steps = round(value * QUALITY_STEPS)
    # A hundredth within float rounding (float32 included); 5.375 is refused, not rounded.
    if abs(value * QUALITY_STEPS - steps) > 0.01:
        raise ValueError(
            f"{field} {value} is finer than the format stores; give at most two decimals "
            f"(steps of 1/{QUALITY_STEPS}, e.g. {steps / QUALITY_STEPS:g})"
        )
    return steps


def quality_from_steps(steps: int) -> float:
    """Inverse of :func:`quality_steps`: an ``int`` for a whole level (537 -> 5.37, 500 -> 5)."""
    whole, fraction = divmod(steps, QUALITY_STEPS)
    return whole if fraction == 0 else steps / QUALITY_STEPS


def _check_model_name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    raw = name.encode("utf-8", "replace")
    if not 1 <= len(raw) <= MAX_MODEL_NAME:
        raise ValueError(f"model name {name!r} has length {len(raw)}; must be 1..{MAX_MODEL_NAME}")
    if not set(raw) <= _NAME_CHARS:
        raise ValueError(f"model name {name!r} has invalid characters; allowed are a-z 0-9 . _ -")
    return name


@dataclass(frozen=True)
class Header:
    """The decoded header of an ``.aec`` file.

    Construction validates every field and raises ``ValueError`` on a bad value
    (``TypeError`` on a wrong type).
    Integer fields accept any integer-like value (e.g. numpy integers) and are stored
    as plain ``int``; ``weights_hash`` accepts any bytes-like value and is stored as
    ``bytes``.

    Attributes:
        model: Model name, 1..64 characters from ``[a-z0-9._-]``.
        weights_hash: First 8 bytes of the sha256 of the model's weights file.
        quality: Quality, 1..255 in steps of 0.01 (:data:`QUALITY_STEPS`): an ``int`` for
            a whole level (stored as a version-1 file), a ``float`` between levels such as
            5.37 (stored as version 2). Any number with at most two decimals is accepted
            and normalised (``5.0`` becomes ``5``).
        width: Image width in pixels, 1..2**32-1.
        height: Image height in pixels, 1..2**32-1.
        mode: Image mode, one of :data:`MODES`.
        tile_width: Tile width in pixels, a multiple of :data:`TILE_ALIGN` (16) in
            16..:data:`MAX_TILE_SIDE` (65520).
        tile_height: Tile height in pixels, likewise.
        bit_depth: Bits per sample; only 8 is supported.
    """

    model: str
    weights_hash: bytes
    quality: float
    width: int
    height: int
    mode: str
    tile_width: int
    tile_height: int
    bit_depth: int = 8

    def __post_init__(self) -> None:
        _check_model_name(self.model)
        weights_hash = _as_bytes(self.weights_hash, "weights_hash")
        if len(weights_hash) != 8:
            raise ValueError(f"weights_hash must be 8 bytes, got {len(weights_hash)} bytes")
        object.__setattr__(self, "weights_hash", weights_hash)
        steps = quality_steps(self.quality)
        if not QUALITY_STEPS <= steps < (_U8 + 1) * QUALITY_STEPS:
            raise ValueError(
                f"quality {quality_from_steps(steps)} is invalid; must be 1..{_U8} "
                f"(whole levels, or up to two decimals below {_U8 + 1})"
            )
        object.__setattr__(self, "quality", quality_from_steps(steps))
        for field, lo, hi in (
            ("width", 1, _U32),
            ("height", 1, _U32),
            ("bit_depth", 8, 8),
        ):
            value = _as_int(getattr(self, field), field)
            if not lo <= value <= hi:
                raise ValueError(f"{field} {value} is invalid; must be {lo}..{hi}")
            object.__setattr__(self, field, value)
        for field in ("tile_width", "tile_height"):
            value = _as_int(getattr(self, field), field)
            if not (TILE_ALIGN <= value <= MAX_TILE_SIDE and value % TILE_ALIGN == 0):
                raise ValueError(
                    f"{field} {value} is invalid; must be a multiple of {TILE_ALIGN} "
                    f"in {TILE_ALIGN}..{MAX_TILE_SIDE}"
                )
            object.__setattr__(self, field, value)
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is unknown; must be one of {MODES}")
        if self.num_tiles > _U32:
            raise ValueError(
                f"{self.width}x{self.height} image with {self.tile_width}x"
                f"{self.tile_height} tiles needs {self.num_tiles} tiles; "
                f"the format allows at most {_U32}"
            )

    @property
    def quality_steps(self) -> int:
        """The quality in hundredths (:data:`QUALITY_STEPS`): 537 for 5.37, 500 for 5."""
        return quality_steps(self.quality)

    @property
    def format_version(self) -> int:
        """The container version this header is written in: 1 for a whole quality, else 2."""
        return 1 if self.quality_steps % QUALITY_STEPS == 0 else 2

    @property
    def tile_grid(self) -> tuple[int, int]:
        """``(cols, rows)`` of the tile grid; tiles are stored in raster order."""
        return (
            _ceil_div(self.width, self.tile_width),
            _ceil_div(self.height, self.tile_height),
        )

    @property
    def num_tiles(self) -> int:
        """Number of tiles, ``cols * rows``."""
        cols, rows = self.tile_grid
        return cols * rows

    def bpp(self, file_size: int) -> float:
        """Bits per pixel of a file of ``file_size`` bytes with this header (the whole file)."""
        return 8 * file_size / (self.width * self.height)


@dataclass(frozen=True)
class Bitstream:
    """A header plus its payloads: everything an ``.aec`` file holds.

    Construction validates the payloads against the header and raises ``ValueError``
    if they disagree (``TypeError`` on a wrong type). ``tiles`` may be given as any
    sequence of bytes-like objects; it is stored as a tuple of payloads: ``bytes``, or
    read-only ``memoryview`` slices of the parsed file (:func:`unpack`: the file's bytes are
    held once). ``icc`` and ``exif`` are always ``bytes``.

    Attributes:
        header: The image header.
        tiles: One payload per tile, in raster order (``header.num_tiles`` of them).
        alpha: The alpha payload; present (not None) exactly when the mode is RGBA
            or LA.
        icc: ICC profile bytes, or None.
        exif: EXIF bytes, or None.
    """

    header: Header
    tiles: tuple[Payload, ...]
    alpha: Payload | None = None
    icc: bytes | None = None
    exif: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.header, Header):
            raise TypeError(f"header must be a Header, got {type(self.header).__name__}")
        if isinstance(self.tiles, (bytes, bytearray, memoryview, str)):
            raise TypeError("tiles must be a sequence of bytes payloads, not one payload")
        try:
            tiles = tuple(self.tiles)
        except TypeError:
            raise TypeError(
                f"tiles must be a sequence of bytes, got {type(self.tiles).__name__}"
            ) from None
        expected = self.header.num_tiles
        if len(tiles) != expected:
            cols, rows = self.header.tile_grid
            raise ValueError(
                f"wrong number of tiles: got {len(tiles)}, the header's geometry "
                f"({self.header.width}x{self.header.height} in "
                f"{self.header.tile_width}x{self.header.tile_height} tiles = "
                f"{cols}x{rows}) needs {expected}"
            )
        tiles = tuple(_as_payload(t, f"tiles[{i}]") for i, t in enumerate(tiles))
        for i, tile in enumerate(tiles):
            _check_payload_size(len(tile), f"tiles[{i}]")
        object.__setattr__(self, "tiles", tiles)
        for field in ("alpha", "icc", "exif"):
            value = getattr(self, field)
            if value is not None:
                value = _as_payload(value, field) if field == "alpha" else _as_bytes(value, field)
                _check_payload_size(len(value), field)
                object.__setattr__(self, field, value)
        wants_alpha = self.header.mode in ALPHA_MODES
        if wants_alpha and self.alpha is None:
            raise ValueError(f"mode {self.header.mode} needs an alpha payload")
        if not wants_alpha and self.alpha is not None:
            raise ValueError(
                f"mode {self.header.mode} has no alpha channel but an alpha payload was given"
            )


def _check_payload_size(size: int, field: str) -> None:
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"{field} payload is {size} bytes; a payload may be at most {MAX_PAYLOAD_BYTES} bytes"
        )


def pack(bs: Bitstream) -> bytes:
    """Serialise a bitstream into the bytes of an ``.aec`` file.

    Args:
        bs: The bitstream to write.

    Returns:
        The complete file, ending in its CRC32.

    Raises:
        ValueError: ``bs`` is not a valid bitstream (wrong number of tiles, a payload
            over 2**32-1 bytes, an alpha payload that disagrees with the mode, ...).
        TypeError: ``bs`` or one of its fields has the wrong type.
    """
    if not isinstance(bs, Bitstream):
        raise TypeError(f"pack() needs a Bitstream, got {type(bs).__name__}")
    # Re-validate: a frozen dataclass can still be mutated via object.__setattr__.
    h = Header(
        bs.header.model,
        bs.header.weights_hash,
        bs.header.quality,
        bs.header.width,
        bs.header.height,
        bs.header.mode,
        bs.header.tile_width,
        bs.header.tile_height,
        bs.header.bit_depth,
    )
    bs = Bitstream(h, bs.tiles, bs.alpha, bs.icc, bs.exif)
    extras = [p for p in (bs.alpha, bs.icc, bs.exif) if p is not None]
    flags = (
        (FLAG_ALPHA if bs.alpha is not None else 0)
        | (FLAG_ICC if bs.icc is not None else 0)
        | (FLAG_EXIF if bs.exif is not None else 0)
    )
    name = h.model.encode("ascii")
    whole, hundredths = divmod(h.quality_steps, QUALITY_STEPS)
    version = h.format_version
    quality_fields = (whole,) if version == 1 else (whole, hundredths)
    parts: list[Payload] = [
        _PREFIX.pack(MAGIC, version, flags, len(name)),
        name,
        (_FIXED if version == 1 else _FIXED_V2).pack(
            h.weights_hash,
            *quality_fields,
            h.width,
            h.height,
            MODES.index(h.mode),
            h.bit_depth,
            h.tile_width,
            h.tile_height,
            len(bs.tiles),
        ),
        struct.pack(f"<{len(bs.tiles) + len(extras)}I", *map(len, bs.tiles + tuple(extras))),
        *bs.tiles,
        *extras,
    ]
    body = b"".join(parts)
    return body + _U32_STRUCT.pack(zlib.crc32(body))


@dataclass(frozen=True)
class _Layout:
    header: Header
    flags: int
    offset: int  # first payload byte
    lengths: tuple[int, ...]  # tiles, then present extras in alpha/icc/exif order


def _resolve_limit(max_pixels: int | None, name: str = "max_pixels") -> int:
    if name == "max_pixels":
        limit, glob = (MAX_PIXELS if max_pixels is None else max_pixels), "MAX_PIXELS"
    else:
        limit, glob = (WARN_PIXELS if max_pixels is None else max_pixels), "WARN_PIXELS"
    source = f"aecodec.container.{glob}" if max_pixels is None else name
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"{source} must be a positive int, got {limit!r}")
    return limit


def _too_large(width: int, height: int, limit: int) -> str:
    return (
        f"image too large: width {width} x height {height} = {width * height} "
        f"pixels exceeds the limit of {limit} pixels; to code it anyway raise the limit "
        "(max_pixels=N, or aecodec.container.MAX_PIXELS)"
    )


def check_pixels(
    width: int,
    height: int,
    *,
    max_pixels: int | None = None,
    warn_pixels: int | None = None,
    error: type[Exception] = FormatError,
) -> None:
    """Apply the pixel limits to a ``width x height`` image before any pixel work.

    Args:
        width: Image width in pixels.
        height: Image height in pixels.
        max_pixels: Largest ``width * height`` accepted; None reads :data:`MAX_PIXELS`.
        warn_pixels: Above this ``width * height``, warn; None reads :data:`WARN_PIXELS`.
        error: The exception class raised above ``max_pixels`` (``ImageError`` for inputs).

    Raises:
        FormatError: (or ``error``) the image has more than ``max_pixels`` pixels.
        ValueError: a limit is not a positive int.

    Warns:
        LargeImageWarning: the image has more than ``warn_pixels`` pixels.
    """
    limit = _resolve_limit(max_pixels)
    warn = _resolve_limit(warn_pixels, "warn_pixels")
    pixels = width * height
    if pixels > limit:
        raise error(_too_large(width, height, limit))
    if pixels > warn:
        errors.warn(
            f"large image: {width}x{height} = {pixels} pixels is over the warning threshold "
            f"of {warn} pixels (limit {limit}); coding it takes minutes and GBs of memory "
            "(see max_pixels=N)",
            LargeImageWarning,
        )


PREFIX_SIZE: int = 5
"""Bytes :func:`check_prefix` looks at: the magic and the version."""


def check_prefix(head: BytesLike) -> None:
    """Check the first bytes of a file (magic, then version, as far as ``head`` goes).

    Lets a reader refuse a file that is not ``.aec`` after :data:`PREFIX_SIZE` bytes,
    before reading the rest. A short ``head`` passes as far as it matches.

    Raises:
        FormatError: ``head`` is empty, has a bad magic or an unsupported version.
    """
    if len(head) == 0:
        raise FormatError("empty input: not an aecodec file")
    magic = bytes(head[:4])
    if magic != MAGIC[: len(magic)]:
        raise FormatError(f"not an aecodec file (bad magic): starts with {magic.hex(' ')}")
    if len(head) < 5:
        return
    version = head[4]
    if version > FORMAT_VERSION:
        raise FormatError(
            f"unsupported format version {version}; this aecodec reads versions "
            f"1..{FORMAT_VERSION} -- upgrade aecodec"
        )
    if version == 0:
        raise FormatError(
            f"invalid format version 0; this aecodec reads versions 1..{FORMAT_VERSION} "
            "(versions start at 1)"
        )


def _parse(data: Any, max_pixels: int | None) -> tuple[bytes | memoryview, _Layout]:
    """Validate ``data`` completely and return it with its layout. Raises FormatError.

    In file order, each field checked before anything depending on it is read: the prefix
    and the CRC, the model name, the fixed fields (as a :class:`Header`, which validates
    itself), then the length table against the payload bytes present.
    """
    limit = _resolve_limit(max_pixels)
    data = _byte_view(data)
    end = _check_size_and_crc(data)
    fixed = _FIXED if data[4] == 1 else _FIXED_V2
    flags, model, pos = _read_prefix(data, end, fixed.size)
    header, num_tiles = _read_fixed(data, pos, model, limit)
    pos += len(model) + fixed.size
    _check_layout(header, num_tiles, flags)
    lengths = _read_lengths(data, pos, end, num_tiles + flags.bit_count(), num_tiles)
    return data, _Layout(header, flags, pos + 4 * len(lengths), lengths)


def _byte_view(data: Any) -> bytes | bytearray | memoryview:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"expected bytes, got {type(data).__name__}")
    if isinstance(data, memoryview) and (data.format != "B" or data.ndim != 1):
        try:
            return data.cast("B")
        except TypeError:  # not C-contiguous
            return data.tobytes()
    return data


def _check_size_and_crc(data: BytesLike) -> int:
    """Magic, version, minimum size and CRC32; returns where the CRC starts."""
    size = len(data)
    check_prefix(data)
    if size < 4:
        raise FormatError(
            f"truncated file: {size} bytes, an aecodec file is at least {MIN_FILE_SIZE} bytes"
        )
    if size < 5:
        raise FormatError("truncated file: the format version byte is missing")
    if size < MIN_FILE_SIZE:
        raise FormatError(
            f"truncated file: {size} bytes, an aecodec file is at least {MIN_FILE_SIZE} bytes"
        )
    end = size - _CRC_SIZE
    (stored_crc,) = _U32_STRUCT.unpack_from(data, end)
    computed_crc = zlib.crc32(memoryview(data)[:end])
    if stored_crc != computed_crc:
        raise FormatError(
            "CRC32 mismatch: the file is corrupt or truncated "
            f"(stored 0x{stored_crc:08x}, computed 0x{computed_crc:08x})"
        )
    return end


def _read_prefix(data: BytesLike, end: int, fixed_size: int) -> tuple[int, str, int]:
    """Flags and model name; returns them and the offset of the name."""
    _, version, flags, name_len = _PREFIX.unpack_from(data, 0)
    if flags & ~KNOWN_FLAGS:
        raise FormatError(
            f"flags 0x{flags:02x} have unknown bits 0x{flags & ~KNOWN_FLAGS:02x} set; "
            f"version {version} defines only 0x{KNOWN_FLAGS:02x} "
            "(alpha, ICC, EXIF)"
        )
    if not 1 <= name_len <= MAX_MODEL_NAME:
        raise FormatError(f"model name length {name_len} is invalid; must be 1..{MAX_MODEL_NAME}")
    pos = _PREFIX.size
    if pos + name_len + fixed_size > end:
        raise FormatError(
            f"truncated header: the fixed fields end at byte "
            f"{pos + name_len + fixed_size} but the CRC starts at byte {end}"
        )
    raw_name = bytes(data[pos : pos + name_len])
    if not set(raw_name) <= _NAME_CHARS:
        raise FormatError(
            f"model name {raw_name!r} has invalid characters; allowed are a-z 0-9 . _ -"
        )
    return flags, raw_name.decode("ascii"), pos


def _read_fixed(data: BytesLike, pos: int, model: str, limit: int) -> tuple[Header, int]:
    """The fixed fields after the model name at ``pos``: the header and the tile count.

    The encodings the header cannot see (the quality hundredths of version 2, mode code, bit
    depth, tile alignment) and the pixel limit are checked here; every other rule is the
    :class:`Header`'s own.
    """
    version = data[4]
    hundredths = 0
    if version == 1:
        fields = _FIXED.unpack_from(data, pos + len(model))
    else:
        weights_hash, quality, hundredths, *rest = _FIXED_V2.unpack_from(data, pos + len(model))
        fields = (weights_hash, quality, *rest)
    weights_hash, quality, width, height, mode_code, bit_depth, tile_w, tile_h, num_tiles = fields
    if version > 1 and not 1 <= hundredths < QUALITY_STEPS:
        raise FormatError(
            f"quality hundredths {hundredths} is invalid in a version-{version} file; must be "
            f"1..{QUALITY_STEPS - 1} (a whole quality is written as a version-1 file)"
        )
    if quality == 0:
        raise FormatError(f"quality {quality} is invalid; must be 1..{_U8}")
    if width * height > limit:
        raise FormatError(_too_large(width, height, limit))
    if mode_code >= len(MODES):
        raise FormatError(
            f"mode code {mode_code} is unknown; must be 0 (L), 1 (RGB), 2 (RGBA) or 3 (LA)"
        )
    if bit_depth != 8:
        raise FormatError(f"bit depth {bit_depth} is unsupported; version {version} supports 8")
    for field, value in (("tile width", tile_w), ("tile height", tile_h)):
        if value == 0 or value % TILE_ALIGN:
            raise FormatError(
                f"{field} {value} is invalid; must be a positive multiple of {TILE_ALIGN}"
            )
    try:
        fine = quality_from_steps(quality * QUALITY_STEPS + hundredths)
        header = Header(model, weights_hash, fine, width, height, MODES[mode_code], tile_w, tile_h)
    except ValueError as exc:
        raise FormatError(str(exc)) from None
    return header, num_tiles


def _check_layout(header: Header, num_tiles: int, flags: int) -> None:
    """The tile count and the alpha flag agree with the header's geometry and mode."""
    if num_tiles != header.num_tiles:
        cols, rows = header.tile_grid
        raise FormatError(
            f"tile count {num_tiles} disagrees with the geometry: a {header.width}x"
            f"{header.height} image in {header.tile_width}x{header.tile_height} tiles has "
            f"{cols}x{rows} = {cols * rows} tiles"
        )
    has_alpha = bool(flags & FLAG_ALPHA)
    if header.mode in ALPHA_MODES and not has_alpha:
        raise FormatError(f"mode {header.mode} needs an alpha payload but the alpha flag is 0")
    if header.mode not in ALPHA_MODES and has_alpha:
        raise FormatError(f"alpha flag is set but mode {header.mode} has no alpha channel")


def _read_lengths(
    data: BytesLike, pos: int, end: int, count: int, num_tiles: int
) -> tuple[int, ...]:
    """The ``count`` payload lengths at ``pos``; they must fill the file up to the CRC."""
    if pos + 4 * count > end:
        raise FormatError(
            f"truncated length table: {num_tiles} tile lengths and "
            f"{count - num_tiles} extra lengths need {4 * count} bytes "
            f"but only {end - pos} remain before the CRC"
        )
    lengths = struct.unpack_from(f"<{count}I", data, pos)
    declared = sum(lengths)
    available = end - pos - 4 * count
    if declared > available:
        raise FormatError(
            f"payload lengths sum to {declared} bytes but only {available} bytes of "
            "payload remain before the CRC: the file is truncated"
        )
    if declared < available:
        raise FormatError(
            f"trailing bytes: {available - declared} bytes after the last payload "
            f"(payload lengths sum to {declared}, {available} bytes present)"
        )
    return lengths


def read_header(data: BytesLike, max_pixels: int | None = None) -> Header:
    """Validate an ``.aec`` file and return its header without copying payloads.

    This does all the checks :func:`unpack` does (magic, version, CRC, every field and
    every length) but skips materialising the payloads.

    Args:
        data: The complete file contents.
        max_pixels: Largest ``width * height`` accepted; None means use
            :data:`MAX_PIXELS` (read at call time).

    Returns:
        The file's header.

    Raises:
        FormatError: The data is not a valid ``.aec`` file, or the image
            exceeds the pixel limit.
        ValueError: ``max_pixels`` (or :data:`MAX_PIXELS`) is not a positive int.
    """
    return _parse(data, max_pixels)[1].header


def unpack(data: BytesLike, max_pixels: int | None = None) -> Bitstream:
    """Parse and validate the bytes of an ``.aec`` file.

    Args:
        data: The complete file contents (bytes, bytearray or memoryview).
        max_pixels: Largest ``width * height`` accepted; None means use
            :data:`MAX_PIXELS` (read at call time).

    Returns:
        The bitstream; its ``alpha``/``icc``/``exif`` are None when absent.

    Raises:
        FormatError: The data is not a valid ``.aec`` file (bad magic,
            unsupported version, CRC mismatch, truncated, trailing bytes, a field out
            of range, ...), or the image exceeds the pixel limit.
        ValueError: ``max_pixels`` (or :data:`MAX_PIXELS`) is not a positive int.
    """
    data, layout = _parse(data, max_pixels)
    # The payloads are read-only views of one immutable buffer, never copies: the file is held
    # once (a caller's writable buffer is copied first, so that changing it changes nothing).
    whole = memoryview(data if isinstance(data, bytes) else bytes(data)).toreadonly()
    payloads: list[memoryview] = []
    pos = layout.offset
    for length in layout.lengths:
        payloads.append(whole[pos : pos + length])
        pos += length
    n = layout.header.num_tiles
    tiles, extras = tuple(payloads[:n]), iter(payloads[n:])
    alpha = next(extras) if layout.flags & FLAG_ALPHA else None
    icc, exif = (
        bytes(next(extras)) if layout.flags & flag else None for flag in (FLAG_ICC, FLAG_EXIF)
    )
    try:
        return Bitstream(layout.header, tiles, alpha, icc, exif)
    except ValueError as exc:  # defensive: _parse already enforced every rule
        raise FormatError(f"invalid bitstream: {exc}") from None
