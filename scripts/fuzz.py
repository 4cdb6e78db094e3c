"""Structure-aware fuzzing of the decoder, the command line and the image readers (documented
in docs/SECURITY.md).

    PYTHONPATH=. .venv/bin/python scripts/fuzz.py --seconds 170 --workers 2            # .aec, API
    PYTHONPATH=. .venv/bin/python scripts/fuzz.py --mode cli --examples 2000            # .aec, CLI
    PYTHONPATH=. .venv/bin/python scripts/fuzz.py --mode image --examples 100000        # images

Modes:

* ``api`` (default): ``Codec.decompress`` of mutated ``.aec`` files.
* ``cli``: the same inputs through ``aecodec decompress IN -o OUT.png`` in the worker (the
  command's own code path: its error lines, its warning lines, the PNG writer). Besides an
  unexpected exception, a failure is an exit status other than 0 or 1, a traceback, a line of
  stderr that is not an ``aecodec:`` line, or a warning that escapes the command (warnings are
  errors around it).
* ``image``: ``aecodec.imageio.load`` of mutated image files that Pillow itself wrote (PNG,
  JPEG, TIFF, WebP, AVIF, ICO, GIF, BMP; PNG chunk CRCs recomputed after a mutation so that it
  reaches the decoder), under the pixel limit. ``ImageError`` is the expected refusal.

Seeds (``.aec`` modes) are valid files made with the bundled default model from small images
(the bundled sample photo, downscaled, in modes L, RGB, RGBA and LA, one or several tiles,
whole and fine qualities, so container versions 1 and 2, with and without an ICC profile and
EXIF). Each input is a seed with one structure-aware mutation -- a header field, the length
table, the bytes of a tile, alpha, ICC or EXIF payload (with its length kept consistent), the
image geometry (with the tile count and length table rebuilt; sides up to 65535 and strips
one pixel thin), or generic byte edits -- and then a recomputed CRC, so the mutation reaches the
parser and the decoder; a few inputs keep a broken CRC or are random bytes, for the early checks.

Inputs run in worker processes (spawned, the model loaded once per worker) with per-input
limits: a 25 s wall timeout (the worker is killed and replaced) and 2.5 GB of memory: peak
RSS above 2.5 GB is a failure, and ``RLIMIT_AS`` caps the address space at the worker's own
after loading the model + 2.5 GB (an absolute 2.5 GB ``RLIMIT_AS`` is impossible: the CUDA
build of torch maps ~3.2 GB of shared libraries at import). The decoder runs with
``--max-pixels`` (default 2^24, the pixel limit docs/SECURITY.md recommends for this budget).

Counts how many inputs reached each stage (magic/version, CRC, header validation, entropy
decoder, all tiles entropy-decoded, full decode; image mode: input, full decode) and records
the worst time and peak RSS. Any exception other than FormatError / ModelError / ImageError,
any timeout, memory kill or crash of a worker is a failure, saved to ``--crash-dir`` (the input
and a ``.txt`` saying what happened; by default ``aecodec-fuzz-crashes`` in the system's
temporary folder, never inside the checkout). Exit status 1 if there was a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MAGIC = b"\x89AEC"
MIN_FILE_SIZE = 43
TIMEOUT = 25.0
MEMORY = 2_500_000_000
MAX_PIXELS = 1 << 24
STAGES = (
    "input",
    "magic/version",
    "crc",
    "header",
    "entropy decoder",
    "tiles decoded",
    "full decode",
)
EXPECTED_ERRORS = ("FormatError", "ModelError", "ImageError", "CliRefused")
MODES = ("api", "cli", "image")
CRASH_DIR = Path(tempfile.gettempdir()) / "aecodec-fuzz-crashes"


# ---------------------------------------------------------------- file layout and mutators


@dataclass
class Layout:
    """Where the fields of a valid file are (offsets in bytes)."""

    name_len: int
    fields: int  # offset of the weights hash (first field after the name)
    table: int  # offset of the length table
    lengths: list[int]
    num_tiles: int
    extra: int = 0  # 1 in format version 2: the quality hundredths byte after the quality

    def at(self, off: int) -> int:
        """Offset of the field ``off`` bytes after the name in version 1 (of HEADER_FIELDS)."""
        return self.fields + off + (self.extra if off > 8 else 0)

    @property
    def payloads(self) -> int:
        return self.table + 4 * len(self.lengths)

    def payload_span(self, k: int) -> tuple[int, int]:
        start = self.payloads + sum(self.lengths[:k])
        return start, start + self.lengths[k]


# (name, offset after the model name in version 1, struct format); Layout.at() places them
HEADER_FIELDS = (
    ("quality", 8, "<B"),
    ("width", 9, "<I"),
    ("height", 13, "<I"),
    ("mode", 17, "<B"),
    ("bit depth", 18, "<B"),
    ("tile width", 19, "<H"),
    ("tile height", 21, "<H"),
    ("tile count", 23, "<I"),
)


def layout(data: bytes) -> Layout:
    """Parse the layout of a *valid* file (seeds only; the decoder checks everything else)."""
    flags, n = data[5], data[6]
    extra = 1 if data[4] == 2 else 0  # version 2: the quality hundredths byte
    fields = 7 + n
    num_tiles = struct.unpack_from("<I", data, fields + 23 + extra)[0]
    count = num_tiles + bin(flags).count("1")
    table = fields + 27 + extra
    lengths = list(struct.unpack_from(f"<{count}I", data, table))
    return Layout(n, fields, table, lengths, num_tiles, extra)


def with_crc(body: bytes | bytearray) -> bytes:
    """``body`` + its CRC32 (little-endian)."""
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def _interesting(fmt: str, old: int, rng: np.random.Generator) -> int:
    top = 2 ** (8 * struct.calcsize(fmt)) - 1
    pool = [0, 1, 2, 3, 15, 16, 17, 31, 32, 48, 255, 256, 2047, 2048, 2064, 4096, 65520, top]
    pool += [old + d for d in (-16, -1, 1, 16)] + [old * 2, old // 2, int(rng.integers(0, top + 1))]
    return int(np.clip(pool[int(rng.integers(len(pool)))], 0, top))


def mutate_header(seed: bytes, rng: np.random.Generator) -> bytes:
    """One or two header fields (or flags, name, hash, version) set to boundary values."""
    lay, body = layout(seed), bytearray(seed[:-4])
    for _ in range(int(rng.integers(1, 3))):
        pick = int(rng.integers(len(HEADER_FIELDS) + 4))
        if pick < len(HEADER_FIELDS):
            _, off, fmt = HEADER_FIELDS[pick]
            pos = lay.at(off)
            if off == 8 and lay.extra and rng.random() < 0.5:
                pos += 1  # version 2: the quality hundredths
            old = struct.unpack_from(fmt, body, pos)[0]
            struct.pack_into(fmt, body, pos, _interesting(fmt, old, rng))
        elif pick == len(HEADER_FIELDS):  # flags, model-name length or version
            pos = int(rng.choice([4, 5, 6]))
            body[pos] = _interesting("<B", body[pos], rng)
        elif pick == len(HEADER_FIELDS) + 1:  # a byte of the model name
            body[7 + int(rng.integers(lay.name_len))] = int(rng.integers(256))
        elif pick == len(HEADER_FIELDS) + 2:  # a byte of the weights hash
            body[lay.fields + int(rng.integers(8))] ^= 1 << int(rng.integers(8))
        else:
            body[int(rng.integers(4))] ^= 1 << int(rng.integers(8))  # magic
    return with_crc(body)


def mutate_lengths(seed: bytes, rng: np.random.Generator) -> bytes:
    """The length table: move bytes between payloads (sum kept), swap, or set one length."""
    lay, body = layout(seed), bytearray(seed[:-4])
    lengths = list(lay.lengths)
    a, b = (int(x) for x in rng.integers(len(lengths), size=2))
    op = int(rng.integers(3))
    if op == 0:  # move k bytes from a to b: the container stays valid, the split is wrong
        k = min(lengths[a], int(rng.choice([1, 4, 8, int(rng.integers(1, 64))])))
        lengths[a] -= k
        lengths[b] += k
    elif op == 1:
        lengths[a], lengths[b] = lengths[b], lengths[a]
    else:
        lengths[a] = _interesting("<I", lengths[a], rng)
    struct.pack_into(f"<{len(lengths)}I", body, lay.table, *lengths)
    return with_crc(body)


def _edit_words(payload: bytes, rng: np.random.Generator, others: list[bytes]) -> bytes:
    """One edit of an ANS payload (a sequence of u32 words)."""
    raw = bytearray(payload)
    op = int(rng.integers(8))
    if op == 0 and raw:  # flip a bit
        raw[int(rng.integers(len(raw)))] ^= 1 << int(rng.integers(8))
    elif op == 1 and raw:  # a word to an extreme value
        w = 4 * int(rng.integers(max(1, len(raw) // 4)))
        raw[w : w + 4] = struct.pack("<I", int(rng.choice([0, 1, 0xFFFFFFFF, 0x80000000])))
    elif op == 2 and len(raw) >= 4:  # delete words from the top or the bottom of the stack
        k = 4 * int(rng.integers(1, len(raw) // 4 + 1))
        raw = raw[k:] if rng.integers(2) else raw[:-k]
    elif op == 3:  # insert random words
        w = 4 * int(rng.integers(len(raw) // 4 + 1))
        raw[w:w] = rng.integers(0, 256, 4 * int(rng.integers(1, 4)), dtype=np.uint8).tobytes()
    elif op == 4:  # empty payload
        raw = bytearray()
    elif op == 5 and others:  # another tile's payload
        raw = bytearray(others[int(rng.integers(len(others)))])
    elif op == 6:  # length not a multiple of 4
        raw = raw[:-1] if raw and rng.integers(2) else raw + b"\x01"
    else:  # random words of the same length
        raw = bytearray(rng.integers(0, 256, len(raw), dtype=np.uint8).tobytes())
    return bytes(raw)


def mutate_payload(seed: bytes, rng: np.random.Generator) -> bytes:
    """The bytes of one tile payload (or the alpha payload), its length entry kept right."""
    lay = layout(seed)
    spans = [lay.payload_span(k) for k in range(len(lay.lengths))]
    payloads = [seed[s:e] for s, e in spans]
    k = int(rng.integers(len(payloads)))
    if k >= lay.num_tiles:  # alpha (zlib), ICC or EXIF
        new = _edit_bytes(payloads[k], rng)
    else:
        new = payloads[k]
        for _ in range(int(rng.integers(1, 3))):
            new = _edit_words(new, rng, payloads[: lay.num_tiles])
    payloads[k] = new
    lengths = [len(p) for p in payloads]
    head = bytearray(seed[: lay.table]) + struct.pack(f"<{len(lengths)}I", *lengths)
    return with_crc(head + b"".join(payloads))


def _side(rng: np.random.Generator) -> int:
    r = rng.random()
    if r < 0.85:
        return int(rng.integers(1, 300))
    if r < 0.95:
        return int(rng.integers(300, 4097))
    extremes = [1, 2, 4097, 16384, 65535, 1 << 20, 1 << 21, int(rng.integers(1, 1 << 24))]
    return int(rng.choice(extremes))


def mutate_geometry(seed: bytes, rng: np.random.Generator) -> bytes:
    """New width/height (and sometimes tile size), with a consistent tile count and length
    table: the payloads kept (or emptied), missing ones empty, so the decoder gets the file."""
    lay = layout(seed)
    fields = bytearray(seed[lay.fields : lay.table])
    x = lay.extra  # the fields after the quality are one byte later in version 2
    width, height = _side(rng), _side(rng)
    if rng.random() < 0.05:  # a strip one pixel thin and up to 2^21 long
        width, height = (1, 1 << 21) if rng.random() < 0.5 else (1 << 21, 1)
    tw, th = struct.unpack_from("<HH", fields, 19 + x)
    if rng.random() < 0.3:
        tw = th = 16 * int(rng.choice([1, 2, 3, 8, 64, 128, 129, 4095]))
    cols, rows = -(-width // tw), -(-height // th)
    mode_depth = fields[17 + x : 19 + x]
    struct.pack_into("<IIBBHHI", fields, 9 + x, width, height, *mode_depth, tw, th, cols * rows)
    old = [seed[s:e] for s, e in (lay.payload_span(k) for k in range(len(lay.lengths)))]
    keep = rng.random() < 0.5
    tiles = [old[k] if keep and k < lay.num_tiles else b"" for k in range(cols * rows)]
    payloads = tiles + old[lay.num_tiles :]
    lengths = struct.pack(f"<{len(payloads)}I", *(len(p) for p in payloads))
    return with_crc(seed[: lay.fields] + fields + lengths + b"".join(payloads))


def _edit_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    raw = bytearray(data)
    for _ in range(int(rng.integers(1, 6))):
        op, pos = int(rng.integers(3)), int(rng.integers(len(raw) + 1))
        if op == 0 and pos < len(raw):
            raw[pos] = int(rng.integers(256))
        elif op == 1:
            del raw[pos : pos + int(rng.integers(1, 9))]
        else:
            raw[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    return bytes(raw)


def mutate_bytes(seed: bytes, rng: np.random.Generator) -> bytes:
    """Generic byte edits anywhere before the CRC, then a recomputed CRC."""
    return with_crc(_edit_bytes(seed[:-4], rng))


def mutate_raw(seed: bytes, rng: np.random.Generator) -> bytes:
    """Random bytes, or byte edits with the CRC left broken (the early checks)."""
    if rng.random() < 0.5:
        return rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
    return _edit_bytes(seed, rng)


MUTATORS: dict[str, tuple[float, Callable[[bytes, np.random.Generator], bytes]]] = {
    "header": (0.2, mutate_header),
    "lengths": (0.15, mutate_lengths),
    "payload": (0.35, mutate_payload),
    "geometry": (0.12, mutate_geometry),
    "bytes": (0.13, mutate_bytes),
    "raw": (0.05, mutate_raw),
}


def mutate(seeds: list[bytes], rng: np.random.Generator) -> tuple[str, bytes]:
    """One fuzz input: ``(mutator name, bytes)``."""
    names = list(MUTATORS)
    weights = np.array([MUTATORS[n][0] for n in names])
    name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    seed = seeds[int(rng.integers(len(seeds)))]
    for _ in range(10):  # a mutation may happen to be a no-op (e.g. a field set to its value)
        data = MUTATORS[name][1](seed, rng)
        if data != seed:
            break
    return name, data


# ---------------------------------------------------------------- image inputs

IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "AVIF", "ICO", "GIF", "BMP")


def image_seeds() -> list[bytes]:
    """Small images that Pillow itself writes, one or more per format of
    :data:`IMAGE_FORMATS` (RGBA where the format has alpha; a 2-page TIFF and a 2-frame GIF;
    a PNG with an ICC profile and EXIF; formats this Pillow cannot write are skipped)."""
    from PIL import Image, ImageCms

    from aecodec.data import sample_image

    photo = Image.open(sample_image()).convert("RGB").resize((24, 16))
    rgba = photo.copy()
    rgba.putalpha(Image.linear_gradient("L").resize((24, 16)))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    seeds = []
    for fmt in IMAGE_FORMATS:
        img = photo if fmt in ("JPEG", "BMP") else rgba
        variants: list[dict[str, Any]] = [{}]
        if fmt == "PNG":
            variants.append({"icc_profile": icc, "exif": exif})
        if fmt in ("TIFF", "GIF"):
            variants.append({"save_all": True, "append_images": [photo.rotate(90)]})
        for kw in variants:
            buf = io.BytesIO()
            try:
                img.save(buf, format=fmt, **kw)
            except (KeyError, OSError, ValueError):
                continue  # no encoder for this format here
            seeds.append(buf.getvalue())
    return seeds


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute the CRC of every whole chunk of a PNG (so a mutation inside a chunk reaches
    the decoder instead of Pillow's CRC check); anything else is returned unchanged."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    raw, pos = bytearray(data), 8
    while pos + 12 <= len(raw):
        (length,) = struct.unpack_from(">I", raw, pos)
        end = pos + 8 + length
        if end + 4 > len(raw):
            break
        struct.pack_into(">I", raw, end, zlib.crc32(raw[pos + 4 : end]))
        pos = end + 4
    return bytes(raw)


def mutate_image(seed: bytes, rng: np.random.Generator) -> bytes:
    """Byte edits, or a 16/32-bit field in the first 64 bytes (sizes, offsets, counts) set to a
    boundary value; PNG chunk CRCs recomputed most of the time."""
    raw = bytearray(seed)
    if rng.random() < 0.5 and len(raw) > 8:
        fmt = str(rng.choice(["<H", ">H", "<I", ">I"]))
        pos = int(rng.integers(0, min(64, len(raw) - struct.calcsize(fmt)) + 1))
        old = struct.unpack_from(fmt, raw, pos)[0]
        struct.pack_into(fmt, raw, pos, _interesting(fmt, old, rng))
        out = bytes(raw)
    else:
        out = _edit_bytes(seed, rng)
    return fix_png_crcs(out) if rng.random() < 0.8 else out


# ---------------------------------------------------------------- running one input


class _Probe:
    """Wraps ``container.unpack`` and the entropy decoder as the codec calls them, to see
    how far an input got (test instrumentation; the codec itself is unchanged)."""

    def __init__(self) -> None:
        import aecodec.codec as codec_module
        from aecodec import container

        self.tiles = -1
        self.decoded = 0
        self.calls = 0
        unpack, decode = container.unpack, codec_module.decode_tiles

        def counting_unpack(*args: Any, **kwargs: Any) -> Any:
            bs = unpack(*args, **kwargs)
            self.tiles = bs.header.num_tiles
            return bs

        def counting_decode(
            payloads: Sequence[bytes | memoryview], *args: Any, **kwargs: Any
        ) -> Any:
            self.calls += len(payloads)  # tiles whose decoding started (a batch at a time)
            out = decode(payloads, *args, **kwargs)
            self.decoded += len(payloads)
            return out

        container.unpack = counting_unpack
        codec_module.decode_tiles = counting_decode

    def reset(self) -> None:
        self.tiles, self.decoded, self.calls = -1, 0, 0


def prefix_stage(data: bytes) -> int:
    """Stages passed before the container parses fields: 1 magic/version, 2 CRC."""
    if data[:4] != MAGIC or len(data) < 5 or data[4] not in (1, 2):  # format versions
        return 0
    if len(data) < MIN_FILE_SIZE or zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        return 1
    return 2


def run_one(
    codec: Any, probe: _Probe, data: bytes, max_pixels: int, mode: str = "api"
) -> dict[str, Any]:
    """Decode (or, in image mode, read) one input; returns its stage, outcome, error, time."""
    probe.reset()
    t0 = time.perf_counter()
    outcome, error = "decoded", ""
    try:
        if mode == "image":
            from aecodec import imageio

            imageio.load(io.BytesIO(data), max_pixels=max_pixels)
        elif mode == "cli":
            _run_cli(data, max_pixels)
        else:
            image = codec.decompress(data, max_pixels=max_pixels)
            if image.size != _header_size(data, max_pixels):
                raise AssertionError(f"decoded size {image.size} is not the header's")
    except Exception as exc:  # the harness classifies every exception
        outcome, error = type(exc).__name__, f"{type(exc).__name__}: {exc}"[:2000]
        if outcome not in EXPECTED_ERRORS:
            import traceback

            error += "\n" + traceback.format_exc()
    seconds = time.perf_counter() - t0
    if mode == "image":  # stages: input, then read whole ("full decode")
        stage = len(STAGES) if outcome == "decoded" else 1
        return {"stage": stage, "outcome": outcome, "error": error, "seconds": seconds}
    stage = prefix_stage(data) + 1
    if probe.tiles >= 0:
        stage = 4
    if probe.calls:
        stage = 5
    if probe.tiles > 0 and probe.decoded == probe.tiles:
        stage = 6
    if outcome == "decoded":
        stage = 7
    return {"stage": stage, "outcome": outcome, "error": error, "seconds": seconds}


class CliFailure(Exception):
    """The command line misbehaved on an input (see the module docstring)."""


class CliRefused(Exception):
    """The command line refused an input the way it should: one ``aecodec: error:`` line and
    exit status 1 (counted like the API's expected errors)."""


def _run_cli(data: bytes, max_pixels: int) -> None:
    """``aecodec decompress IN.aec -o OUT.png`` in this process, warnings turned into errors
    around it; raises :class:`CliRefused` for a clean refusal, :class:`CliFailure` else."""
    import contextlib as ctx
    import warnings

    import click

    from aecodec.cli.main import main as cli_main

    folder = Path(tempfile.mkdtemp(prefix="aecodec-fuzz-"))
    src, dst = folder / "in.aec", folder / "out.png"
    src.write_bytes(data)
    err = io.StringIO()
    try:
        quiet = ctx.redirect_stdout(io.StringIO())
        with warnings.catch_warnings(), ctx.redirect_stderr(err), quiet:
            warnings.simplefilter("error")
            args = ["decompress", str(src), "-o", str(dst), "--max-pixels", str(max_pixels)]
            try:
                code = cli_main(args, standalone_mode=False)
            except click.exceptions.Exit as exc:
                code = exc.exit_code
            except SystemExit as exc:
                code = exc.code
        lines = err.getvalue().splitlines()
        if code not in (0, 1, None) or any(not line.startswith("aecodec:") for line in lines):
            raise CliFailure(f"exit status {code}, stderr: {err.getvalue()[:1500]!r}")
        if code == 1:
            if not any(line.startswith("aecodec: error:") for line in lines):
                raise CliFailure(f"exit status 1 without an error line: {lines!r}")
            raise CliRefused(lines[-1])
    finally:
        for p in (src, dst):
            p.unlink(missing_ok=True)
        folder.rmdir()


def _header_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    from aecodec import container

    h = container.read_header(data, max_pixels=max_pixels)
    return h.width, h.height


def _rss(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)


def _worker(conn: Any, model: str | None, max_pixels: int, memory: int, mode: str) -> None:
    """Worker process: load the model once, then decode inputs until told to stop."""
    import os
    import resource
    import warnings

    from aecodec import runtime

    runtime.set_threads(1)
    warnings.simplefilter("ignore")
    from aecodec.codec import Codec

    codec = Codec(model) if mode == "api" else None
    probe = _Probe()
    run_one(codec, probe, b"", max_pixels, mode)  # warm up imports
    space = _rss("VmSize") + memory
    resource.setrlimit(resource.RLIMIT_AS, (space, resource.RLIM_INFINITY))
    conn.send({"pid": os.getpid(), "baseline_rss": _rss("VmRSS")})
    while (data := conn.recv()) is not None:
        _reset_peak_rss()
        result = run_one(codec, probe, data, max_pixels, mode)
        result["peak_rss"] = _rss("VmHWM")
        conn.send(result)


# ---------------------------------------------------------------- the pool and the run


@dataclass
class Stats:
    """What a run saw: inputs per stage, per mutator, failures, worst time and memory."""

    inputs: int = 0
    stages: Counter[str] = field(default_factory=Counter)
    mutators: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    worst_seconds: float = 0.0
    worst_rss: int = 0
    baseline_rss: int = 0

    def add(self, mutator: str, result: dict[str, Any], memory: int = MEMORY) -> bool:
        """Count one result; returns True if it is a failure."""
        self.inputs += 1
        self.mutators[mutator] += 1
        self.outcomes[result["outcome"]] += 1
        for name in STAGES[: result["stage"]]:
            self.stages[name] += 1
        self.worst_seconds = max(self.worst_seconds, result["seconds"])
        self.worst_rss = max(self.worst_rss, result.get("peak_rss", 0))
        failed = result["outcome"] not in (*EXPECTED_ERRORS, "decoded")
        if result.get("peak_rss", 0) > memory:
            failed = True
            result["error"] += f"\npeak RSS {result['peak_rss']} bytes > {memory}"
        if failed:
            self.failures.append(result)
        return failed

    def summary(self, image_mode: bool = False) -> dict[str, Any]:
        names = (STAGES[0], STAGES[-1]) if image_mode else STAGES
        return {
            "inputs": self.inputs,
            "stages": {name: self.stages[name] for name in names},
            "mutators": dict(self.mutators),
            "outcomes": dict(self.outcomes),
            "failures": len(self.failures),
            "worst_seconds": round(self.worst_seconds, 2),
            "worst_peak_rss_mb": self.worst_rss >> 20,
            "worker_baseline_rss_mb": self.baseline_rss >> 20,
        }


class Worker:
    """A spawned worker process and its pipe; killed by its own pid on timeout."""

    def __init__(self, model: str | None, max_pixels: int, memory: int, mode: str = "api") -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker, args=(child, model, max_pixels, memory, mode), daemon=True
        )
        self.proc.start()
        child.close()
        try:
            if not self.conn.poll(120):
                raise EOFError
            self.hello = self.conn.recv()
        except (EOFError, OSError):
            self.kill()
            raise RuntimeError(
                f"fuzz worker did not start within 120 s (exit code {self.proc.exitcode})"
            ) from None
        self.job: tuple[int, str, bytes, float] | None = None

    def submit(self, i: int, mutator: str, data: bytes) -> None:
        self.job = (i, mutator, data, time.monotonic())
        self.conn.send(data)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(10)
        if self.proc.is_alive():
            self.kill()


def _collect(w: Worker, timeout: float) -> dict[str, Any] | None:
    """The finished job's result, a failure result if the worker died or timed out, or None
    if it is still running."""
    assert w.job is not None
    elapsed = time.monotonic() - w.job[3]
    try:
        if w.conn.poll(0):
            return dict(w.conn.recv())
    except (EOFError, OSError):
        pass
    if w.proc.is_alive() and elapsed < timeout:
        return None
    if w.proc.is_alive():
        w.kill()
        why = f"timeout: no result within {timeout:.0f} s"
    else:
        why = f"worker died (exit code {w.proc.exitcode}): memory kill or crash"
    stage = prefix_stage(w.job[2]) + 1
    return {"stage": stage, "outcome": "killed", "error": why, "seconds": elapsed}


def run(
    seeds: list[bytes],
    examples: int,
    seconds: float,
    seed: int = 0,
    workers: int = 2,
    model: str | None = None,
    max_pixels: int = MAX_PIXELS,
    timeout: float = TIMEOUT,
    memory: int = MEMORY,
    crash_dir: Path = CRASH_DIR,
    mode: str = "api",
) -> Stats:
    """Fuzz until ``examples`` inputs or ``seconds`` have passed; failures go to crash_dir."""
    rng = np.random.default_rng(seed)
    stats = Stats()
    pool = [Worker(model, max_pixels, memory, mode) for _ in range(workers)]
    stats.baseline_rss = max(w.hello["baseline_rss"] for w in pool)
    deadline, submitted = time.monotonic() + seconds, 0
    try:
        while pool:
            for k, w in enumerate(pool):
                if w.job is not None:
                    result = _collect(w, timeout)
                    if result is None:
                        continue
                    i, mutator, data, _ = w.job
                    w.job = None
                    if stats.add(mutator, result, memory):
                        _save(crash_dir, i, mutator, data, result)
                    if not w.proc.is_alive():
                        pool[k] = w = Worker(model, max_pixels, memory, mode)
                if submitted < examples and time.monotonic() < deadline:
                    job = ("image", mutate_image(pick(seeds, rng), rng))
                    w.submit(submitted, *(job if mode == "image" else mutate(seeds, rng)))
                    submitted += 1
            if all(w.job is None for w in pool):
                break
            time.sleep(0.002)
    finally:
        for w in pool:
            w.stop()
    return stats


def pick(seeds: list[bytes], rng: np.random.Generator) -> bytes:
    return seeds[int(rng.integers(len(seeds)))]


def _save(crash_dir: Path, i: int, mutator: str, data: bytes, result: dict[str, Any]) -> None:
    crash_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".bin" if mutator == "image" else ".aec"
    (crash_dir / f"crash-{i}-{mutator}{suffix}").write_bytes(data)
    (crash_dir / f"crash-{i}-{mutator}.txt").write_text(json.dumps(result, indent=1) + "\n")
    print(f"input {i} ({mutator}): {result['error'].splitlines()[0]}", file=sys.stderr)


def make_seeds(model: str | None = None) -> list[bytes]:
    """Valid files from the bundled sample photo, downscaled: modes L, RGB, RGBA, LA; one
    tile, and several tiles (32x32 tiles); a whole and a fine quality (container versions 1
    and 2); the RGB ones also with an ICC profile and EXIF."""
    import torch
    from PIL import Image, ImageCms

    from aecodec.codec import Codec
    from aecodec.data import sample_image

    torch.set_num_threads(1)
    photo = Image.open(sample_image()).convert("RGB")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "fuzz"  # Make
    seeds = []
    for (w, h), tile, mode in (
        ((40, 24), 1024, "RGB"),
        ((72, 40), 32, "RGB"),
        ((33, 50), 32, "L"),
        ((48, 20), 1024, "RGBA"),
        ((20, 36), 16, "LA"),
    ):
        img = photo.resize((w, h), Image.Resampling.LANCZOS).convert(mode)
        if mode in ("RGBA", "LA"):
            alpha = Image.linear_gradient("L").resize((w, h))
            img.putalpha(alpha)
        codec = Codec(model, tile_size=tile)
        for quality in (1, codec.default_quality + 0.37):
            seeds.append(codec.compress(img, quality=quality))
            if mode == "RGB":
                buf = io.BytesIO()
                img.save(buf, format="PNG", icc_profile=icc, exif=exif)
                seeds.append(codec.compress(io.BytesIO(buf.getvalue()), quality=quality))
    return seeds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000, help="stop after N inputs")
    ap.add_argument("--seconds", type=float, default=170.0, help="stop after S seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default=None, help="default: the bundled default model")
    ap.add_argument("--max-pixels", type=int, default=MAX_PIXELS)
    ap.add_argument("--mode", choices=MODES, default="api", help="see the module docstring")
    ap.add_argument("--crash-dir", type=Path, default=CRASH_DIR, help="where failures go")
    args = ap.parse_args()
    t0 = time.time()
    seeds = image_seeds() if args.mode == "image" else make_seeds(args.model)
    stats = run(
        seeds,
        args.examples,
        args.seconds,
        args.seed,
        args.workers,
        args.model,
        args.max_pixels,
        crash_dir=args.crash_dir,
        mode=args.mode,
    )
    summary = stats.summary(image_mode=args.mode == "image")
    summary["seeds"] = len(seeds)
    summary["mode"] = args.mode
    summary["crash_dir"] = str(args.crash_dir)
    summary["wall_seconds"] = round(time.time() - t0, 1)
    print(json.dumps(summary, indent=1))
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
