"""Tests of the ``.aec`` container, versions 1 and 2 (aecodec/container.py)."""

from __future__ import annotations

import ast
import dataclasses
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aecodec import container
from aecodec.container import (
    FORMAT_VERSION,
    MAGIC,
    MODES,
    Bitstream,
    Header,
    pack,
    quality_from_steps,
    quality_steps,
    read_header,
    unpack,
)
from aecodec.errors import FormatError

HASH = bytes(range(8))
PAD = bytes(8)  # keeps crafted files without a length table above the 43-byte minimum
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_header(**kw: object) -> Header:
    fields: dict[str, object] = {
        "model": "ae-v1",
        "weights_hash": HASH,
        "quality": 3,
        "width": 20,
        "height": 17,
        "mode": "RGB",
        "tile_width": 16,
        "tile_height": 16,
    }
    fields.update(kw)
    return Header(**fields)  # type: ignore[arg-type]


def make_bitstream(**kw: object) -> Bitstream:
    """A valid bitstream; header fields and payloads can be overridden."""
    payload_keys = ("tiles", "alpha", "icc", "exif")
    payloads = {k: kw.pop(k) for k in payload_keys if k in kw}
    header = make_header(**kw)
    tiles = payloads.pop("tiles", None)
    if tiles is None:
        tiles = [bytes([i % 256]) * (i % 5) for i in range(header.num_tiles)]
    if "alpha" not in payloads and header.mode in ("RGBA", "LA"):
        payloads["alpha"] = zlib.compress(b"\xff" * (header.width * header.height), 9)
    return Bitstream(header, tuple(tiles), **payloads)  # type: ignore[arg-type]


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def recrc(data: bytes) -> bytes:
    """Replace the last four bytes of ``data`` with the CRC32 of the rest."""
    return with_crc(data[:-4])


def flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def craft(
    *,
    magic: bytes = MAGIC,
    version: int = 1,
    flags: int = 0,
    name: bytes = b"m",
    name_len: int | None = None,
    weights_hash: bytes = HASH,
    quality: int = 1,
    hundredths: int | None = None,
    width: int = 1,
    height: int = 1,
    mode: int = 0,
    bit_depth: int = 8,
    tile_w: int = 16,
    tile_h: int = 16,
    num_tiles: int | None = None,
    lengths: list[int] | None = None,
    payload: bytes = b"",
) -> bytes:
    """Build a file field by field with no validation, ending in a correct CRC.

    ``hundredths`` (the quality byte of version 2) is written when given, or when
    ``version == 2`` (then 50 by default).
    """
    if hundredths is None and version == 2:
        hundredths = 50
    quality_fields = (quality,) if hundredths is None else (quality, hundredths)
    if name_len is None:
        name_len = len(name)
    if num_tiles is None:
        num_tiles = (-(-width // tile_w)) * (-(-height // tile_h)) if tile_w and tile_h else 1
        num_tiles = min(num_tiles, 2**32 - 1)
    if lengths is None:
        count = num_tiles + bin(flags & 7).count("1")
        lengths = [0] * count if count <= 4096 else []
    body = (
        struct.pack("<4sBBB", magic, version, flags, name_len)
        + name
        + struct.pack(
            "<8s" + "B" * len(quality_fields) + "IIBBHHI",
            weights_hash,
            *quality_fields,
            width,
            height,
            mode,
            bit_depth,
            tile_w,
            tile_h,
            num_tiles,
        )
        + struct.pack(f"<{len(lengths)}I", *lengths)
        + payload
    )
    return with_crc(body)


SAMPLES = {
    "L-1x1": make_bitstream(mode="L", width=1, height=1, tiles=[b"x"]),
    "L-1x1-empty-tile": make_bitstream(mode="L", width=1, height=1, tiles=[b""]),
    "RGB-plain": make_bitstream(),
    "RGB-icc-exif": make_bitstream(icc=b"ICCPROFILE" * 3, exif=b"Exif\0\0MM"),
    "RGB-icc-only": make_bitstream(icc=b"\x00\x01"),
    "RGB-exif-only": make_bitstream(exif=b"E"),
    "RGB-empty-extras": make_bitstream(icc=b"", exif=b""),
    "RGBA": make_bitstream(mode="RGBA"),
    "LA-all": make_bitstream(mode="LA", icc=b"icc", exif=b"exif"),
    "many-tiles": make_bitstream(width=300, height=170),
    "wide-tiles": make_bitstream(width=70, height=3, tile_width=32, tile_height=48),
    "huge-tile": make_bitstream(width=5, height=5, tile_width=65520, tile_height=65520),
    "long-name": make_bitstream(model="a" * 64, quality=255),
    "odd-name": make_bitstream(model="0._-z"),
    "fine-quality": make_bitstream(quality=5.37),
    "fine-quality-RGBA": make_bitstream(quality=1.01, mode="RGBA", icc=b"i"),
    "fine-quality-max": make_bitstream(quality=255.99),
}


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_round_trip(key: str) -> None:
    bs = SAMPLES[key]
    data = pack(bs)
    assert data[:4] == MAGIC
    assert data[4] == (1 if isinstance(bs.header.quality, int) else 2)
    assert unpack(data) == bs
    assert read_header(data) == bs.header
    assert pack(unpack(data)) == data


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_unpack_accepts_bytes_like(wrap: type) -> None:
    bs = SAMPLES["LA-all"]
    data = pack(bs)
    result = unpack(wrap(data))
    assert result == bs
    # read-only views of one immutable copy of the data (never of the caller's buffer)
    for payload in (*result.tiles, result.alpha):
        assert isinstance(payload, memoryview) and payload.readonly
        assert type(payload.obj) is bytes and (payload.obj is data) == (wrap is bytes)
    assert type(result.icc) is bytes and type(result.exif) is bytes


def test_unpack_accepts_non_byte_memoryview() -> None:
    bs = SAMPLES["RGB-plain"]
    data = pack(bs)
    assert unpack(memoryview(data).cast("b")) == bs
    if len(data) % 4 == 0:
        assert unpack(memoryview(data).cast("I")) == bs


def test_many_tiles_order_and_count() -> None:
    bs = SAMPLES["many-tiles"]
    assert bs.header.tile_grid == (19, 11)
    assert bs.header.num_tiles == 209
    assert unpack(pack(bs)).tiles == bs.tiles


def test_absent_extras_are_none() -> None:
    bs = unpack(pack(SAMPLES["RGB-plain"]))
    assert bs.alpha is None and bs.icc is None and bs.exif is None
    both = unpack(pack(SAMPLES["RGB-empty-extras"]))
    assert both.icc == b"" and both.exif == b""


def test_flags_encode_presence() -> None:
    assert pack(SAMPLES["RGB-plain"])[5] == 0
    assert pack(SAMPLES["RGBA"])[5] == 0b001
    assert pack(SAMPLES["RGB-icc-only"])[5] == 0b010
    assert pack(SAMPLES["RGB-exif-only"])[5] == 0b100
    assert pack(SAMPLES["LA-all"])[5] == 0b111


def test_pinned_bytes() -> None:
    """Any change to the byte layout must fail here (and bump FORMAT_VERSION)."""
    bs = Bitstream(
        Header("ae-v1", bytes(range(8)), 3, 20, 17, "RGBA", 16, 16),
        (b"a", b"bc", b"", b"def"),
        alpha=b"xyz",
        icc=b"I",
        exif=b"E",
    )
    expected = bytes.fromhex(
        "89414543"  # magic
        "01"  # format version
        "07"  # flags: alpha | ICC | EXIF
        "05"  # model name length
        "61652d7631"  # "ae-v1"
        "0001020304050607"  # weights hash
        "03"  # quality
        "14000000"  # width 20
        "11000000"  # height 17
        "02"  # mode RGBA
        "08"  # bit depth
        "1000"  # tile width 16
        "1000"  # tile height 16
        "04000000"  # 4 tiles (2 x 2)
        "01000000"
        "02000000"
        "00000000"
        "03000000"  # tile lengths
        "03000000"  # alpha length
        "01000000"  # ICC length
        "01000000"  # EXIF length
        "61"
        "6263"
        ""
        "646566"  # tile payloads
        "78797a"  # alpha
        "49"  # ICC
        "45"  # EXIF
        "cca91228"  # CRC32
    )
    assert pack(bs) == expected
    assert unpack(expected) == bs


def test_pinned_bytes_of_a_fine_quality() -> None:
    """Version 2: the same layout with the quality hundredths after the quality byte."""
    bs = Bitstream(Header("ae-v1", bytes(range(8)), 3.25, 20, 17, "RGB", 32, 32), (b"ab",))
    expected = bytes.fromhex(
        "89414543"  # magic
        "02"  # format version 2
        "00"  # flags
        "05"  # model name length
        "61652d7631"  # "ae-v1"
        "0001020304050607"  # weights hash
        "03"  # quality, whole part
        "19"  # quality hundredths: 25 -> quality 3.25
        "14000000"  # width 20
        "11000000"  # height 17
        "01"  # mode RGB
        "08"  # bit depth
        "2000"  # tile width 32
        "2000"  # tile height 32
        "01000000"  # 1 tile
        "02000000"  # tile length
        "6162"  # tile payload
    )
    expected += struct.pack("<I", zlib.crc32(expected))
    assert pack(bs) == expected
    assert unpack(expected) == bs
    assert unpack(expected).header.quality == 3.25


@pytest.mark.parametrize(
    ("value", "steps", "normalised"),
    [
        (5, 500, 5),
        (5.0, 500, 5),
        (5.37, 537, 5.37),
        (5.5, 550, 5.5),
        (1.01, 101, 1.01),
        (255.99, 25599, 255.99),
        (np.float32(5.37), 537, 5.37),
        (np.int64(7), 700, 7),
    ],
)
def test_fine_quality_steps(value: object, steps: int, normalised: float) -> None:
    assert quality_steps(value) == steps
    assert quality_from_steps(steps) == normalised
    h = make_header(quality=value)
    assert h.quality == normalised and h.quality_steps == steps
    assert type(h.quality) is type(normalised)
    assert h.format_version == (1 if steps % 100 == 0 else 2)


def test_minimum_file_size() -> None:
    data = pack(make_bitstream(model="m", mode="L", width=1, height=1, tiles=[b""]))
    assert len(data) == container.MIN_FILE_SIZE == 43
    unpack(data)


# --------------------------------------------------------------------------- Header


def test_header_geometry() -> None:
    h = make_header(width=33, height=16, tile_width=16, tile_height=16)
    assert h.tile_grid == (3, 1)
    assert h.num_tiles == 3
    assert make_header(width=1, height=1).num_tiles == 1


def test_header_defaults_and_frozen() -> None:
    h = make_header()
    assert h.bit_depth == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.width = 5  # type: ignore[misc]


class _Index:
    """An integer-like object (like numpy.int64) that is not an int."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __index__(self) -> int:
        return self.v


def test_header_normalises_integers_and_bytes() -> None:
    h = make_header(width=_Index(20), quality=_Index(2), weights_hash=bytearray(HASH))
    assert type(h.width) is int and h.width == 20
    assert type(h.quality) is int
    assert type(h.weights_hash) is bytes
    assert h == make_header(quality=2)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("model", "", "model name .* length 0"),
        ("model", "a" * 65, "length 65"),
        ("model", "Model", "invalid characters"),
        ("model", "a b", "invalid characters"),
        ("model", "é", "invalid characters"),
        ("weights_hash", b"1234567", "weights_hash must be 8 bytes"),
        ("weights_hash", b"123456789", "weights_hash must be 8 bytes"),
        ("quality", 0, "quality 0"),
        ("quality", 256, "quality 256"),
        ("quality", 0.99, "quality 0.99 is invalid"),
        ("quality", 256.0, "quality 256 is invalid"),
        ("quality", 5.375, "quality 5.375 is finer than the format stores"),
        ("quality", float("nan"), "quality nan is invalid; it must be a finite number"),
        ("quality", 1e308, "quality 1e\\+308 is out of range"),
        ("width", 0, "width 0"),
        ("width", 2**32, "width"),
        ("height", 0, "height 0"),
        ("height", -1, "height -1"),
        ("mode", "CMYK", "mode 'CMYK'"),
        ("mode", "rgb", "mode 'rgb'"),
        ("tile_width", 0, "tile_width 0"),
        ("tile_width", 8, "tile_width 8"),
        ("tile_width", 17, "tile_width 17"),
        ("tile_width", 65536, "tile_width 65536"),
        ("tile_height", 24, "tile_height 24"),
        ("bit_depth", 16, "bit_depth 16"),
    ],
)
def test_header_rejects_bad_values(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        make_header(**{field: value})
    assert not isinstance(info.value, FormatError)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", b"ae"),
        ("weights_hash", "01234567"),
        ("quality", "2"),
        ("quality", None),
        ("quality", True),
        ("width", "20"),
    ],
)
def test_header_rejects_bad_types(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=field):
        make_header(**{field: value})


def test_header_rejects_too_many_tiles() -> None:
    with pytest.raises(ValueError, match="at most"):
        make_header(width=2**32 - 1, height=2**32 - 1)


# --------------------------------------------------------------------------- Bitstream / pack


def test_bitstream_normalises_tiles() -> None:
    h = make_header(width=1, height=1, mode="L")
    bs = Bitstream(h, [bytearray(b"ab")])  # type: ignore[arg-type]
    assert bs.tiles == (b"ab",)
    assert type(bs.tiles) is tuple and type(bs.tiles[0]) is bytes
    hash(bs)


@pytest.mark.parametrize("count", [0, 3, 5])
def test_pack_rejects_wrong_tile_count(count: int) -> None:
    h = make_header(width=20, height=17)  # 2 x 2 tiles
    with pytest.raises(ValueError, match=f"wrong number of tiles: got {count}.*needs 4"):
        Bitstream(h, (b"",) * count)


def test_alpha_must_match_mode() -> None:
    with pytest.raises(ValueError, match="mode RGBA needs an alpha payload"):
        Bitstream(make_header(mode="RGBA"), (b"",) * 4)
    with pytest.raises(ValueError, match="mode L has no alpha channel"):
        Bitstream(make_header(mode="L"), (b"",) * 4, alpha=b"a")


def test_payload_types_rejected() -> None:
    h = make_header(width=1, height=1)
    with pytest.raises(TypeError, match="tiles"):
        Bitstream(h, b"abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"tiles\[0\] must be bytes"):
        Bitstream(h, ("abc",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="icc must be bytes"):
        Bitstream(h, (b"",), icc="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="header must be a Header"):
        Bitstream("h", (b"",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a Bitstream"):
        pack(b"data")  # type: ignore[arg-type]


def test_pack_rejects_oversize_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-in for a > 2**32-1 byte payload without allocating 4 GiB.
    monkeypatch.setattr(container, "MAX_PAYLOAD_BYTES", 3)
    h = make_header(width=1, height=1)
    with pytest.raises(ValueError, match=r"tiles\[0\] payload is 4 bytes; .* at most 3"):
        Bitstream(h, (b"abcd",))
    with pytest.raises(ValueError, match="exif payload is 5 bytes"):
        Bitstream(h, (b"",), exif=b"12345")
    good = Bitstream(h, (b"abc",))
    object.__setattr__(good, "tiles", (b"abcd",))
    with pytest.raises(ValueError, match="at most 3") as info:
        pack(good)
    assert not isinstance(info.value, FormatError)


def test_pack_revalidates_tampered_objects() -> None:
    bs = make_bitstream()
    object.__setattr__(bs, "tiles", bs.tiles[:-1])
    with pytest.raises(ValueError, match="wrong number of tiles"):
        pack(bs)
    bs2 = make_bitstream()
    object.__setattr__(bs2.header, "quality", 0)
    with pytest.raises(ValueError, match="quality 0"):
        pack(bs2)


# --------------------------------------------------------------------------- corruption


def test_craft_helper_makes_valid_files() -> None:
    data = craft()
    assert unpack(data).header == Header("m", HASH, 1, 1, 1, "L", 16, 16)
    assert craft(flags=7, mode=2, lengths=[1, 2, 0, 1], payload=b"abcd") == pack(
        Bitstream(Header("m", HASH, 1, 1, 1, "RGBA", 16, 16), (b"a",), b"bc", b"", b"d")
    )


CORRUPTIONS: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "empty input"),
    "bad magic": (b"\x89PNG\r\n\x1a\n" + bytes(60), r"not an aecodec file \(bad magic\)"),
    "bad magic short": (b"AEC", r"bad magic"),
    "magic prefix only": (b"\x89AE", "truncated file: 3 bytes"),
    "magic only": (MAGIC, "format version byte is missing"),
    "magic + version": (MAGIC + b"\x01", "truncated file: 5 bytes.*at least 43"),
    "version 3": (craft(version=3), "unsupported format version 3;.*upgrade aecodec"),
    "version 7": (
        craft(version=7),
        "unsupported format version 7; this aecodec reads versions 1..2 -- upgrade aecodec",
    ),
    "version 2 hundredths 0": (
        craft(version=2, hundredths=0),
        "quality hundredths 0 is invalid in a version-2 file; must be 1..99 "
        r"\(a whole quality is written as a version-1 file\)",
    ),
    "version 2 hundredths 100": (
        craft(version=2, hundredths=100),
        "quality hundredths 100 is invalid",
    ),
    "version 2 hundredths 255": (craft(version=2, hundredths=255), "quality hundredths 255"),
    "version 2 quality 0": (craft(version=2, quality=0), "quality 0 is invalid"),
    "version-1 header labelled version 2": (
        recrc(MAGIC + b"\x02" + craft()[5:]),
        "mode code 8 is unknown",  # every field after the quality is read one byte later
    ),
    "version 255 short": (MAGIC + b"\xff", "unsupported format version 255"),
    "version 0": (craft(version=0), "invalid format version 0"),
    "bad crc": (flip_last(craft()), "CRC32 mismatch: the file is corrupt or truncated"),
    "appended bytes": (craft() + b"\x00", "CRC32 mismatch"),
    "unknown flag 0x08": (craft(flags=0x08), "flags 0x08 have unknown bits 0x08"),
    "unknown flag 0x80": (craft(flags=0x81, mode=2), "flags 0x81 have unknown bits 0x80"),
    "name length 0": (craft(name=b"", name_len=0, payload=PAD), "model name length 0"),
    "name length 65": (craft(name=b"a" * 65), "model name length 65"),
    "name length 255": (craft(name=b"", name_len=255, payload=PAD), "model name length 255"),
    "name uppercase": (craft(name=b"Model"), "model name b'Model' has invalid characters"),
    "name non-ascii": (craft(name=b"\xff\xfe"), "model name .* invalid characters"),
    "name nul": (craft(name=b"a\x00"), "model name .* invalid characters"),
    "name slash": (craft(name=b"../x"), "model name .* invalid characters"),
    "name past end": (
        craft(name=b"", name_len=64, payload=bytes(10)),
        "truncated header: the fixed fields end at byte 98",
    ),
    "quality 0": (craft(quality=0), "quality 0 is invalid"),
    "width 0": (craft(width=0, num_tiles=0, payload=PAD), "width 0 is invalid"),
    "height 0": (craft(height=0, num_tiles=0, payload=PAD), "height 0 is invalid"),
    "width 2**31-1": (
        craft(width=2**31 - 1, payload=PAD),
        "image too large: width 2147483647 x height 1",
    ),
    "height 2**32-1": (
        craft(height=2**32 - 1, payload=PAD),
        "image too large: width 1 x height 4294967295",
    ),
    "both 2**32-1": (
        craft(width=2**32 - 1, height=2**32 - 1, payload=PAD),
        "width 4294967295 x height 4294967295",
    ),
    "mode 4": (craft(mode=4), "mode code 4 is unknown"),
    "mode 255": (craft(mode=255), "mode code 255 is unknown"),
    "bit depth 16": (craft(bit_depth=16), "bit depth 16 is unsupported"),
    "bit depth 0": (craft(bit_depth=0), "bit depth 0 is unsupported"),
    "tile width 0": (craft(tile_w=0), "tile width 0 is invalid"),
    "tile width 8": (craft(tile_w=8), "tile width 8 is invalid.*multiple of 16"),
    "tile width 65535": (craft(tile_w=65535), "tile width 65535 is invalid"),
    "tile height 0": (craft(tile_h=0), "tile height 0 is invalid"),
    "tile height 17": (craft(tile_h=17), "tile height 17 is invalid"),
    "tile count 0": (craft(num_tiles=0, payload=PAD), "tile count 0 disagrees with the geometry"),
    "tile count 2": (craft(num_tiles=2), "tile count 2 disagrees.*1x1 = 1 tiles"),
    "tile count max": (
        craft(num_tiles=2**32 - 1, lengths=[0]),
        "tile count 4294967295 disagrees",
    ),
    "tile count for geometry": (
        craft(width=33, height=17, num_tiles=4),
        r"tile count 4 disagrees.*33x17 image in 16x16 tiles has 3x2 = 6",
    ),
    "RGBA without alpha flag": (craft(mode=2), "mode RGBA needs an alpha payload"),
    "LA without alpha flag": (craft(mode=3, flags=2), "mode LA needs an alpha payload"),
    "alpha flag on RGB": (craft(mode=1, flags=1), "alpha flag is set but mode RGB"),
    "length table short": (
        craft(width=16384, height=16384, payload=PAD),
        "truncated length table: 1048576 tile lengths",
    ),
    "extra length missing": (craft(flags=6, lengths=[0, 0]), "truncated length table"),
    "tile length huge": (
        craft(lengths=[2**32 - 1]),
        "payload lengths sum to 4294967295 bytes but only 0 bytes.*truncated",
    ),
    "tile length past end": (
        craft(lengths=[5], payload=b"abcd"),
        "payload lengths sum to 5 bytes but only 4",
    ),
    "icc length past end": (
        craft(flags=2, lengths=[1, 9], payload=b"abc"),
        "payload lengths sum to 10 bytes but only 3",
    ),
    "trailing bytes": (
        craft(lengths=[2], payload=b"abcd"),
        "trailing bytes: 2 bytes after the last payload",
    ),
    "trailing byte no payload": (craft(payload=b"\x00"), "trailing bytes: 1 bytes"),
}


@pytest.mark.parametrize("key", list(CORRUPTIONS))
def test_corruption_raises_format_error(key: str) -> None:
    data, match = CORRUPTIONS[key]
    with pytest.raises(FormatError, match=match):
        unpack(data)
    with pytest.raises(FormatError, match=match):
        read_header(data)


def test_format_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="bad magic"):
        unpack(b"GIF89a" + bytes(50))


@pytest.mark.parametrize("bad", ["not bytes", None, 12, [1, 2, 3]])
def test_non_bytes_input(bad: object) -> None:
    with pytest.raises(FormatError, match="expected bytes"):
        unpack(bad)  # type: ignore[arg-type]


def test_extreme_fields_do_not_allocate() -> None:
    """Huge declared sizes are rejected from the header alone, before any allocation."""
    cases = [
        craft(width=2**32 - 1, height=2**32 - 1, payload=PAD),
        craft(width=16384, height=16384, payload=PAD),  # 2**20 tiles declared, table missing
        craft(lengths=[2**32 - 1]),
        craft(flags=7, mode=2, lengths=[2**32 - 1] * 4),
        craft(num_tiles=2**32 - 1, lengths=[0]),
    ]
    for data in cases:
        tracemalloc.start()
        try:
            with pytest.raises(FormatError):
                unpack(data, max_pixels=2**62)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 256 * 1024, (data.hex(), peak)


def test_unpack_holds_the_file_once() -> None:
    """The payloads of an unpacked file are read-only views of its bytes, not copies (Pillow's
    open() held a large file twice); a writable buffer is copied, so changing it later
    changes nothing."""
    n = 8_000_000
    data = pack(make_bitstream(mode="LA", width=1, height=1, tiles=[bytes(n)], alpha=b"a"))
    tracemalloc.start()
    try:
        bs = unpack(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.05 * n, peak
    assert isinstance(bs.tiles[0], memoryview) and bs.tiles[0].readonly
    assert bs.tiles[0].obj is data and bs.tiles[0] == bytes(n) and bs.alpha == b"a"
    hash(bs)
    writable = bytearray(data)
    copied = unpack(writable)
    writable[len(writable) // 2] = 1
    assert copied == bs and pack(copied) == data


def test_every_truncation_raises() -> None:
    for key in ("LA-all", "L-1x1", "RGB-icc-exif"):
        data = pack(SAMPLES[key])
        for end in range(len(data)):
            with pytest.raises(FormatError, match=r"empty input|truncated|CRC32 mismatch"):
                unpack(data[:end])


@pytest.mark.parametrize("key", ["LA-all", "fine-quality-RGBA"])
def test_every_truncation_with_fixed_crc_raises(key: str) -> None:
    """Even if the CRC is recomputed, a cut file fails a length or field check."""
    data = pack(SAMPLES[key])
    for end in range(container.MIN_FILE_SIZE, len(data)):
        with pytest.raises(FormatError):
            unpack(recrc(data[:end]))


@pytest.mark.parametrize("key", ["LA-all", "fine-quality-RGBA"])
def test_every_single_bit_flip_raises(key: str) -> None:
    data = pack(SAMPLES[key])
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            if i < 4:
                match = "bad magic"
            elif i == 4:
                match = "format version"
            else:
                match = "CRC32 mismatch: the file is corrupt or truncated"
            with pytest.raises(FormatError, match=match):
                unpack(bytes(bad))


def test_random_bytes_raise() -> None:
    import random

    rng = random.Random(1234)
    for n in (0, 1, 3, 4, 5, 42, 43, 44, 100, 1000):
        for _ in range(20):
            blob = bytes(rng.randrange(256) for _ in range(n))
            with pytest.raises(FormatError):
                unpack(blob)
            with pytest.raises(FormatError):
                unpack(MAGIC + b"\x01" + blob)
            with pytest.raises(FormatError):
                unpack(MAGIC + b"\x02" + blob)


# --------------------------------------------------------------------------- max_pixels


@pytest.fixture
def restore_max_pixels() -> Iterator[None]:
    saved = container.MAX_PIXELS
    yield
    container.MAX_PIXELS = saved


def test_default_max_pixels() -> None:
    assert container.MAX_PIXELS == 2**28


def test_max_pixels_argument() -> None:
    data = pack(make_bitstream(width=20, height=17))  # 340 pixels
    assert unpack(data, max_pixels=340).header.width == 20
    assert read_header(data, max_pixels=340).height == 17
    msg = (
        r"width 20 x height 17 = 340 pixels exceeds the limit of 339 pixels; "
        r".*max_pixels=.*aecodec\.container\.MAX_PIXELS"
    )
    with pytest.raises(FormatError, match=msg):
        unpack(data, max_pixels=339)
    with pytest.raises(FormatError, match=msg):
        read_header(data, max_pixels=339)


def test_max_pixels_default_limit_applies() -> None:
    # Exactly at the default limit is fine as far as the pixel check goes.
    at_limit = craft(width=2**14, height=2**14, payload=PAD)
    with pytest.raises(FormatError, match="truncated length table"):
        unpack(at_limit)
    over = craft(width=2**14 + 1, height=2**14, payload=PAD)
    with pytest.raises(FormatError, match="exceeds the limit of 268435456"):
        unpack(over)
    # ... and an explicit argument raises it.
    with pytest.raises(FormatError, match="truncated length table"):
        unpack(over, max_pixels=2**29)


@pytest.mark.usefixtures("restore_max_pixels")
def test_max_pixels_module_global() -> None:
    data = pack(make_bitstream(width=20, height=17))
    container.MAX_PIXELS = 339
    with pytest.raises(FormatError, match="exceeds the limit of 339 pixels"):
        unpack(data)
    with pytest.raises(FormatError, match="exceeds the limit of 339 pixels"):
        read_header(data)
    assert unpack(data, max_pixels=340).header.width == 20  # argument wins
    container.MAX_PIXELS = 340
    assert unpack(data).header.width == 20
    over = craft(width=2**14 + 1, height=2**14, payload=PAD)
    container.MAX_PIXELS = 2**30
    with pytest.raises(FormatError, match="truncated length table"):
        unpack(over)


@pytest.mark.usefixtures("restore_max_pixels")
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_invalid_max_pixels(bad: object) -> None:
    data = pack(SAMPLES["L-1x1"])
    with pytest.raises(ValueError, match="max_pixels must be a positive int"):
        unpack(data, max_pixels=bad)  # type: ignore[arg-type]
    container.MAX_PIXELS = bad  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"aecodec\.container\.MAX_PIXELS must be"):
        unpack(data)


# --------------------------------------------------------------------------- hygiene


def test_module_imports_only_stdlib() -> None:
    tree = ast.parse(Path(container.__file__).read_text(encoding="utf-8"))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert modules <= {
        "__future__",
        "math",
        "numbers",
        "operator",
        "struct",
        "zlib",
        "dataclasses",
        "typing",
        "aecodec",
    }, modules


def test_modes_constant() -> None:
    assert MODES == ("L", "RGB", "RGBA", "LA")
    assert MAGIC == b"\x89AEC"
    assert FORMAT_VERSION == 2


# --------------------------------------------------------------------------- hypothesis

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=64)
tile_sides = st.sampled_from([16, 32, 48, 64, 65520])
small_payload = st.binary(max_size=12)


@st.composite
def bitstreams(draw: st.DrawFn) -> Bitstream:
    header = Header(
        model=draw(names),
        weights_hash=draw(st.binary(min_size=8, max_size=8)),
        quality=draw(st.integers(1, 255) | st.integers(100, 25599).map(quality_from_steps)),
        width=draw(st.integers(1, 100)),
        height=draw(st.integers(1, 100)),
        mode=draw(st.sampled_from(MODES)),
        tile_width=draw(tile_sides),
        tile_height=draw(tile_sides),
    )
    tiles = draw(st.lists(small_payload, min_size=header.num_tiles, max_size=header.num_tiles))
    alpha = draw(small_payload) if header.mode in ("RGBA", "LA") else None
    icc = draw(st.none() | small_payload)
    exif = draw(st.none() | small_payload)
    return Bitstream(header, tuple(tiles), alpha, icc, exif)


@FAST
@given(bitstreams())
def test_hypothesis_round_trip(bs: Bitstream) -> None:
    data = pack(bs)
    assert unpack(data) == bs
    assert read_header(data) == bs.header
    assert len(data) == (
        7
        + len(bs.header.model)
        + 27
        + (bs.header.format_version - 1)  # the quality hundredths of version 2
        + 4 * (len(bs.tiles) + sum(p is not None for p in (bs.alpha, bs.icc, bs.exif)))
        + sum(map(len, bs.tiles))
        + sum(len(p) for p in (bs.alpha, bs.icc, bs.exif) if p is not None)
        + 4
    )


def _check_only_format_error(data: bytes) -> None:
    try:
        bs = unpack(data)
    except FormatError:
        return
    # Anything accepted must be canonical: packing it again gives the same bytes.
    assert pack(bs) == data


@FAST
@given(st.binary(max_size=200))
def test_hypothesis_arbitrary_bytes(data: bytes) -> None:
    _check_only_format_error(data)


@FAST
@given(st.binary(max_size=120))
def test_hypothesis_arbitrary_bytes_after_magic(tail: bytes) -> None:
    for version in (b"\x01", b"\x02"):
        _check_only_format_error(MAGIC + version + tail)
        _check_only_format_error(recrc(MAGIC + version + tail + b"\0\0\0\0"))


@FAST
@given(
    st.sampled_from(sorted(k for k in SAMPLES if k not in ("many-tiles",))),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(-8, 8),
)
def test_hypothesis_mutations_with_valid_crc(
    key: str, edits: list[tuple[int, int]], resize: int
) -> None:
    """Overwrite bytes (mostly in the header), resize, fix the CRC: only FormatError."""
    data = bytearray(pack(SAMPLES[key])[:-4])
    for pos, value in edits:
        data[pos % min(len(data), 64)] = value
    if resize < 0:
        del data[resize:]
    else:
        data += bytes(resize)
    _check_only_format_error(with_crc(bytes(data)))
