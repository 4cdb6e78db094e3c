"""Rate control: the quality chosen for a size, bpp or PSNR target, and what is reported."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from PIL import Image

import aecodec
from aecodec.data import sample_image
from aecodec.metrics import psnr_rgb
from aecodec.ratecontrol import compress_to_target, parse_size, search

SIZES = [100, 180, 260, 400, 600, 900, 1300, 1800]  # a fake codec: bytes per quality 1..8
QUALITIES = list(range(1, 9))


def _fake(q: float) -> bytes:
    return bytes(SIZES[int(q) - 1])


@pytest.mark.parametrize("max_bytes", [100, 101, 399, 400, 401, 1799, 1800, 10**6])
def test_size_target_picks_the_highest_quality_that_fits(max_bytes: int) -> None:
    r = search(_fake, QUALITIES, pixels=100, max_bytes=max_bytes)
    fitting = [q for q, n in zip(QUALITIES, SIZES, strict=True) if n <= max_bytes]
    assert r.quality == max(fitting)
    assert r.met and r.bytes <= max_bytes and r.bpp == 8 * r.bytes / 100
    assert r.trials <= math.ceil(math.log2(len(QUALITIES))) + 1


def test_unreachable_targets_give_the_closest_quality_and_say_so() -> None:
    r = search(_fake, QUALITIES, pixels=100, max_bytes=99)
    assert (r.quality, r.met) == (1, False)
    r = search(_fake, QUALITIES, pixels=100, target_psnr=99.0, measure_psnr=lambda d: len(d) / 50)
    assert (r.quality, r.met, r.psnr) == (8, False, 36.0)


def test_psnr_target_picks_the_lowest_quality_that_reaches_it() -> None:
    r = search(_fake, QUALITIES, pixels=100, target_psnr=8.0, measure_psnr=lambda d: len(d) / 50)
    assert (r.quality, r.met, r.psnr) == (4, True, 8.0)  # 400 bytes -> "8 dB"
    with pytest.raises(ValueError, match="exactly one target"):
        search(_fake, QUALITIES, pixels=100, max_bytes=10, target_psnr=1.0)


FINE = [q / 100 if q % 100 else q // 100 for q in range(100, 801)]  # 1, 1.01, ..., 8


def _fine_size(q: float) -> int:
    return round(100 * 1.5 ** (q - 1))  # about 1.5x per level, like the bundled models


@pytest.mark.parametrize("max_bytes", [100, 101, 149, 150, 151, 760, 1000, 1708, 1709, 10**6])
def test_fine_scale_finds_the_highest_hundredth_that_fits_in_few_encodes(max_bytes: int) -> None:
    calls: list[float] = []

    def encode(q: float) -> bytes:
        calls.append(q)
        return bytes(_fine_size(q))

    r = search(encode, FINE, pixels=100, max_bytes=max_bytes, levels=QUALITIES)
    fitting = [q for q in FINE if _fine_size(q) <= max_bytes]
    assert r.quality == (max(fitting) if fitting else 1) and r.met == bool(fitting)
    assert len(calls) == len(set(calls)) == r.trials <= 9  # 3-4 on the levels, the rest between


@pytest.mark.parametrize("seed", range(20))
def test_fine_search_is_exact_on_any_monotone_scale(seed: int) -> None:
    """Steps of any size (interpolation guesses badly): still the exact answer, and the bracket
    halves at least every second encode."""
    rng = np.random.default_rng(seed)
    sizes = np.cumsum(rng.integers(0, 50, len(FINE)) * (rng.random(len(FINE)) < 0.3)) + 10
    size = dict(zip(FINE, sizes.tolist(), strict=True))
    goal = int(rng.integers(5, sizes[-1] + 10))
    r = search(lambda q: bytes(size[q]), FINE, pixels=1, max_bytes=goal, levels=QUALITIES)
    fitting = [q for q in FINE if size[q] <= goal]
    assert r.quality == (max(fitting) if fitting else 1)
    assert r.trials <= 4 + 2 * math.ceil(math.log2(101)) + 1
    r = search(
        lambda q: bytes(size[q]),
        FINE,
        pixels=1,
        target_psnr=goal,
        measure_psnr=len,
        levels=QUALITIES,
    )
    reaching = [q for q in FINE if size[q] >= goal]
    assert r.quality == (min(reaching) if reaching else 8) and r.met == bool(reaching)


def test_parse_size() -> None:
    assert [parse_size(s) for s in ("40000", "40K", "40k", "1.5M", "2KiB")] == [
        40000,
        40960,
        40960,
        1572864,
        2048,
    ]
    for bad in ("", "K", "-3", "12X", "0"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


def test_real_encodes_meet_size_bpp_and_psnr_targets() -> None:
    codec = aecodec.get_codec()
    ref = np.asarray(Image.open(sample_image()).convert("RGB"))
    pixels = ref.shape[0] * ref.shape[1]
    sizes = {q: len(codec.compress(ref, q)) for q in (3, 4, 6)}
    target = (sizes[3] + sizes[4]) // 2
    # the levels only: as before fine qualities existed
    r = compress_to_target(codec, sample_image(), target_size=target, fine=False)
    assert (r.quality, r.bytes, r.met) == (3, sizes[3], True)
    # the fine scale: the highest hundredth that fits, within 1 % of the target
    r = compress_to_target(codec, sample_image(), target_size=target)
    assert 3 < r.quality < 4 and r.met and 0.99 * target <= r.bytes <= target
    assert r.data == codec.compress(ref, r.quality)
    assert len(codec.compress(ref, round(r.quality + 0.01, 2))) > target
    assert r.trials <= 9
    assert aecodec.compress(sample_image(), target_size=target) == r.data
    r = compress_to_target(codec, sample_image(), target_bpp=8 * sizes[6] / pixels)
    assert r.quality >= 6 and r.bytes <= sizes[6]
    psnrs = {q: psnr_rgb(ref, np.asarray(codec.decompress(codec.compress(ref, q)))) for q in (4, 5)}
    goal = (psnrs[4] + psnrs[5]) / 2
    r = compress_to_target(codec, sample_image(), target_psnr=goal, fine=False)
    assert r.quality == 5 and r.psnr == pytest.approx(psnrs[5]) and r.met
    r = compress_to_target(codec, sample_image(), target_psnr=goal)
    assert r.psnr is not None and 4 < r.quality < 5 and r.met and goal <= r.psnr < goal + 0.1
    below = codec.compress(ref, round(r.quality - 0.01, 2))
    assert psnr_rgb(ref, np.asarray(codec.decompress(below))) < goal
    with pytest.warns(UserWarning, match="cannot be met"):
        assert aecodec.info(aecodec.compress(sample_image(), target_size=50))["quality"] == 1
    with pytest.raises(ValueError, match="not both"):
        aecodec.compress(sample_image(), 3, target_bpp=0.5)


def test_targets_apply_the_pixel_limits_once(tiny_codec) -> None:
    import warnings

    from aecodec.errors import LargeImageWarning

    arr = np.asarray(Image.open(sample_image()).convert("RGB"))[:64, :96]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = compress_to_target(tiny_codec, arr, target_psnr=99.0, warn_pixels=1000)
    assert r.trials >= 2 and not r.met  # several encodes and decodes, one warning
    assert [w.category for w in caught] == [LargeImageWarning]
    with pytest.raises(aecodec.ImageError, match="exceeds the limit of 1000 pixels"):
        compress_to_target(tiny_codec, arr, target_size=500, max_pixels=1000)
    with pytest.raises(aecodec.ImageError, match="exceeds the limit of 1000 pixels"):
        aecodec.compress(arr, target_bpp=1.0, max_pixels=1000)


@pytest.mark.parametrize("target", [10**400, float("inf"), -1, 0, True, "1"])
def test_absurd_targets_are_value_errors(tiny_codec, target: object) -> None:
    arr = np.asarray(Image.open(sample_image()).convert("RGB"))[:32, :32]
    with pytest.raises(ValueError, match="a rate target must be a positive finite number"):
        compress_to_target(tiny_codec, arr, target_size=target)  # type: ignore[arg-type]


def test_numpy_float_targets_are_accepted(tiny_codec) -> None:
    arr = np.asarray(Image.open(sample_image()).convert("RGB"))[:32, :32]
    bpp: Any = np.float32(2.0)  # not a float to mypy: what a numpy pipeline passes
    assert compress_to_target(tiny_codec, arr, target_bpp=bpp).trials >= 1
