"""Rate control: the quality chosen for a size, bpp or PSNR target, and what is reported."""

from __future__ import annotations

import math

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
    sizes = {q: len(codec.compress(ref, q)) for q in codec.qualities}
    target = (sizes[3] + sizes[4]) // 2
    r = compress_to_target(codec, sample_image(), target_size=target)
    assert (r.quality, r.bytes, r.met) == (3, sizes[3], True)
    r = compress_to_target(codec, sample_image(), target_bpp=8 * sizes[6] / pixels)
    assert (r.quality, r.bytes) == (6, sizes[6])
    psnrs = {q: psnr_rgb(ref, np.asarray(codec.decompress(codec.compress(ref, q)))) for q in (4, 5)}
    r = compress_to_target(codec, sample_image(), target_psnr=(psnrs[4] + psnrs[5]) / 2)
    assert r.quality == 5 and r.psnr == pytest.approx(psnrs[5]) and r.met
    assert aecodec.compress(sample_image(), target_size=target) == codec.compress(ref, 3)
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
        r = compress_to_target(tiny_codec, arr, target_psnr=1.0, warn_pixels=1000)
    assert r.trials >= 2  # several encodes and decodes, one warning
    assert [w.category for w in caught] == [LargeImageWarning]
    with pytest.raises(aecodec.ImageError, match="exceeds the limit of 1000 pixels"):
        compress_to_target(tiny_codec, arr, target_size=500, max_pixels=1000)
    with pytest.raises(aecodec.ImageError, match="exceeds the limit of 1000 pixels"):
        aecodec.compress(arr, target_bpp=1.0, max_pixels=1000)
