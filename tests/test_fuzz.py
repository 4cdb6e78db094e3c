"""scripts/fuzz.py: its mutations reach the stages they aim at, and the stage accounting."""

from __future__ import annotations

import struct
import sys
import zlib

import numpy as np
import pytest
from helpers import GOLDEN, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import fuzz


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    """Golden files of the tiny model: 2x2 tiles of 32x32, modes L, RGB and RGBA."""
    return [p.read_bytes() for p in sorted(GOLDEN.glob("*.aec"))]


@pytest.fixture(scope="module")
def probe() -> fuzz._Probe:
    return fuzz._Probe()


def _run(tiny_codec, probe, data: bytes) -> dict:
    return fuzz.run_one(tiny_codec, probe, data, fuzz.MAX_PIXELS)


def test_layout_finds_the_length_table_and_payloads(seeds: list[bytes]) -> None:
    for data in seeds:
        lay = fuzz.layout(data)
        assert lay.num_tiles == 4
        assert lay.payloads + sum(lay.lengths) == len(data) - 4
        assert struct.unpack_from("<I", data, lay.table)[0] == lay.lengths[0]


@pytest.mark.parametrize("name", sorted(fuzz.MUTATORS))
def test_mutators_are_deterministic_and_change_the_file(seeds: list[bytes], name: str) -> None:
    mutator = fuzz.MUTATORS[name][1]
    for k in range(20):
        a = mutator(seeds[k % len(seeds)], np.random.default_rng(k))
        assert a == mutator(seeds[k % len(seeds)], np.random.default_rng(k))
    outs = [mutator(seeds[0], np.random.default_rng(k)) for k in range(20)]
    assert len(set(outs)) >= 15 and outs.count(seeds[0]) <= 2


def test_mutate_picks_every_mutator_and_never_returns_a_seed(seeds: list[bytes]) -> None:
    rng = np.random.default_rng(0)
    picked = []
    for _ in range(200):
        name, data = fuzz.mutate(seeds, rng)
        assert data not in seeds
        picked.append(name)
    assert set(picked) == set(fuzz.MUTATORS)


def test_structure_aware_mutations_pass_the_crc_and_reach_their_stage(
    tiny_codec, probe, seeds: list[bytes]
) -> None:
    """Header/length/payload/geometry mutations keep a valid CRC; payload and geometry
    mutations also keep a valid container, so they reach the entropy decoder (but for a
    damaged alpha plane, refused by the cheaper check before it)."""
    reached: dict[str, list[int]] = {}
    for k in range(40):
        for name in ("header", "lengths", "payload", "geometry"):
            data = fuzz.MUTATORS[name][1](seeds[k % len(seeds)], np.random.default_rng(k))
            assert zlib.crc32(data[:-4]) == struct.unpack("<I", data[-4:])[0]
            result = _run(tiny_codec, probe, data)
            assert result["outcome"] in (*fuzz.EXPECTED_ERRORS, "decoded"), result["error"]
            reached.setdefault(name, []).append(result["stage"])
            if name == "payload" and result["stage"] <= fuzz.STAGES.index("entropy decoder"):
                assert "alpha" in result["error"], result
    assert max(reached["payload"]) >= fuzz.STAGES.index("entropy decoder") + 1
    # Most geometries pass the header; the extreme ones (sides up to 2^24) are refused there.
    past_header = [s >= fuzz.STAGES.index("header") + 1 for s in reached["geometry"]]
    assert sum(past_header) >= 0.8 * len(past_header)
    assert max(reached["header"]) == len(fuzz.STAGES)  # some header mutations still decode
    assert max(reached["payload"]) == len(fuzz.STAGES)  # e.g. an alpha edit that inflates


def test_stage_of_a_valid_file_garbage_and_a_bad_crc(tiny_codec, probe, seeds) -> None:
    assert _run(tiny_codec, probe, seeds[0]) == {
        "stage": 7,
        "outcome": "decoded",
        "error": "",
        "seconds": pytest.approx(0, abs=30),
    }
    assert _run(tiny_codec, probe, b"hello")["stage"] == 1
    bad_crc = seeds[0][:-1] + bytes([seeds[0][-1] ^ 1])
    assert _run(tiny_codec, probe, bad_crc)["stage"] == 2
    assert _run(tiny_codec, probe, bad_crc)["outcome"] == "FormatError"


def test_stats_count_each_stage_cumulatively_and_flag_failures() -> None:
    stats = fuzz.Stats()
    assert not stats.add(
        "payload", {"stage": 5, "outcome": "FormatError", "error": "", "seconds": 1.0}
    )
    assert not stats.add("raw", {"stage": 1, "outcome": "FormatError", "error": "", "seconds": 0.5})
    assert stats.add("bytes", {"stage": 4, "outcome": "IndexError", "error": "x", "seconds": 2.0})
    big = {"stage": 7, "outcome": "decoded", "error": "", "seconds": 0.1, "peak_rss": 3 << 30}
    assert stats.add("geometry", big)
    s = stats.summary()
    assert s["stages"] == {
        "input": 4,
        "magic/version": 3,
        "crc": 3,
        "header": 3,
        "entropy decoder": 2,
        "tiles decoded": 1,
        "full decode": 1,
    }
    assert s["failures"] == 2 and s["worst_seconds"] == 2.0 and s["worst_peak_rss_mb"] == 3072


def test_image_seeds_cover_the_formats_and_mutations_reach_the_decoders() -> None:
    """Image mode: Pillow-written seeds of several formats; mutated PNGs keep valid chunk CRCs
    (so they reach Pillow's decoder); every outcome is a read image or an ImageError."""
    from PIL import Image

    seeds = fuzz.image_seeds()
    formats = {Image.open(__import__("io").BytesIO(s)).format for s in seeds}
    assert {"PNG", "JPEG", "TIFF", "GIF", "ICO", "BMP"} <= formats
    png = next(s for s in seeds if s.startswith(b"\x89PNG"))
    broken = bytearray(png)
    broken[40] ^= 0xFF  # inside the IHDR or the next chunk: its CRC no longer matches
    fixed = fuzz.fix_png_crcs(bytes(broken))
    assert fixed != bytes(broken) and fuzz.fix_png_crcs(fixed) == fixed
    probe = fuzz._Probe()
    outcomes = set()
    for k in range(150):
        data = fuzz.mutate_image(seeds[k % len(seeds)], np.random.default_rng(k))
        result = fuzz.run_one(None, probe, data, fuzz.MAX_PIXELS, "image")
        assert result["outcome"] in ("decoded", "ImageError"), result["error"]
        outcomes.add(result["outcome"])
    assert outcomes == {"decoded", "ImageError"}


def test_cli_mode_refuses_cleanly_and_decodes(default_codec) -> None:
    """CLI mode: a valid file decodes (exit 0); garbage is one `aecodec: error:` line and exit
    1 (an expected refusal, not a failure)."""
    from helpers import smooth_image

    valid = default_codec.compress(smooth_image(40, 24, seed=1), quality=1)
    ok = fuzz.run_one(None, fuzz._Probe(), valid, fuzz.MAX_PIXELS, "cli")
    assert ok["outcome"] == "decoded" and ok["stage"] == len(fuzz.STAGES), ok["error"]
    bad = fuzz.run_one(None, fuzz._Probe(), b"\x89AEC\x02garbage", fuzz.MAX_PIXELS, "cli")
    assert bad["outcome"] == "CliRefused", bad["error"]
    assert "CliRefused" in fuzz.EXPECTED_ERRORS


def test_crashes_go_outside_the_checkout_by_default() -> None:
    assert fuzz.ROOT not in fuzz.CRASH_DIR.resolve().parents
