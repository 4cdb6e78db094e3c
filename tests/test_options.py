"""The encode options every front end shares (aecodec.options): one set of rules, one message.

What users rely on: a quality and a target together, or several targets, are refused with the
same sentence by the API, the batch API, rate control and the command line (there with the
option names); absurd targets are a ``ValueError`` with a clear message (never an
``OverflowError``); numpy scalars are numbers like any other.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import aecodec
from aecodec import batch
from aecodec.cli.main import main
from aecodec.options import MAX_TARGET, EncodeOptions, Quality, Target
from aecodec.ratecontrol import compress_to_target

BOTH = "give either quality or target_bpp, not both"
SEVERAL = "give at most one of target_bpp, target_size and target_psnr, got target_bpp, target_psnr"
ABSURD = "a rate target must be a positive finite number"
IMAGE = np.zeros((16, 16, 3), np.uint8)


def _cli(tmp_path: Path, *args: object) -> tuple[int, str]:
    """Run ``aecodec compress a.png ARGS`` in ``tmp_path``; its exit status and stderr."""
    Image.fromarray(IMAGE).save(tmp_path / "a.png")
    argv = ["compress", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.aec"), *map(str, args)]
    result = CliRunner().invoke(main, argv)
    return result.exit_code, " ".join(result.stderr.split())


def test_a_quality_or_a_target_not_both_in_every_front_end() -> None:
    front_ends = [
        lambda **keywords: EncodeOptions.build(**keywords),
        lambda **keywords: aecodec.compress(IMAGE, **keywords),  # before a model is loaded
        lambda **keywords: batch.compress_files([], **keywords),  # before any job
    ]
    for front_end in front_ends:
        with pytest.raises(ValueError, match=BOTH):
            front_end(quality=3, target_bpp=0.5)
        with pytest.raises(ValueError, match=SEVERAL):
            front_end(target_bpp=1.0, target_psnr=30.0)
    with pytest.raises(ValueError, match=BOTH):
        EncodeOptions(Quality(300), Target("bpp", 0.5))  # direct construction checks it too


def test_the_command_line_says_the_same_with_its_option_names(tmp_path: Path) -> None:
    code, err = _cli(tmp_path, "-q", 3, "--target-bpp", 1)
    assert code == 2
    assert BOTH.replace("quality", "-q").replace("target_bpp", "--target-bpp") in err
    code, err = _cli(tmp_path, "--target-bpp", 1, "--target-psnr", 30)
    assert code == 2
    assert SEVERAL.replace("target_", "--target-") in err
    for option, value in (("--target-bpp", "1e308"), ("--target-psnr", "inf")):
        code, err = _cli(tmp_path, option, value)
        assert code == 2 and f"{ABSURD} (at most {MAX_TARGET:g}), got {option}=" in err, err
    code, err = _cli(tmp_path, "--target-size", "1e20")
    assert code == 2 and ABSURD in err and "--target-size=" in err
    assert not (tmp_path / "a.aec").exists()


@pytest.mark.parametrize("kind", ["bpp", "size", "psnr"])
@pytest.mark.parametrize(
    "value", [1e308, 10**400, -(10**400), math.inf, math.nan, -1, 0, True, "1", 2 * MAX_TARGET]
)
def test_absurd_targets_are_value_errors_never_overflow(kind: str, value: object) -> None:
    keywords = {f"target_{kind}": value}
    with pytest.raises(ValueError, match=rf"{ABSURD} \(at most 1e\+12\), got target_{kind}="):
        EncodeOptions.build(**keywords)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=ABSURD):
        aecodec.compress(IMAGE, **keywords)  # type: ignore[arg-type]


def test_absurd_targets_are_refused_by_rate_control_before_any_encode(tiny_codec) -> None:
    for keywords in ({"target_bpp": 1e308}, {"target_size": 10**400}, {"target_psnr": 1e308}):
        with pytest.raises(ValueError, match=ABSURD):
            compress_to_target(tiny_codec, IMAGE, **keywords)
    with pytest.raises(ValueError, match="give one of target_bpp"):
        compress_to_target(tiny_codec, IMAGE)
    # The largest target accepted is searched without overflow: met at the top quality.
    top = compress_to_target(tiny_codec, IMAGE, target_bpp=MAX_TARGET, fine=False)
    assert top.met and top.quality == tiny_codec.qualities[-1]


def test_numpy_scalars_are_numbers() -> None:
    options = EncodeOptions.build(target_bpp=np.float32(1.5))
    assert options.target == Target("bpp", 1.5) and type(options.target.value) is float
    assert EncodeOptions.build(target_psnr=np.float64(30)).target == Target("psnr", 30.0)
    size = EncodeOptions.build(target_size=np.int64(40_000)).target
    assert size == Target("size", 40_000) and type(size.value) is int
    assert EncodeOptions.build(target_size=40_000.0).target == Target("size", 40_000)
    assert EncodeOptions.build(np.float32(5.5)).quality == Quality(550)
    assert EncodeOptions.build(np.int64(5)).quality_value == 5
    with pytest.raises(ValueError, match=r"target_size must be a whole number of bytes, got 1\.5"):
        EncodeOptions.build(target_size=1.5)


def test_quality_in_hundredths_and_its_checks() -> None:
    q = Quality.of(5.37)
    assert q.steps == 537 and q.value == 5.37 and str(q) == "5.37"
    assert Quality.of(5.0).value == 5 and type(Quality.of(5.0).value) is int
    assert Quality(500) < Quality(537)
    assert Quality.scale(2)[:3] == [1, 1.01, 1.02] and Quality.scale(2)[-1] == 2
    assert len(Quality.scale(8)) == 701
    with pytest.raises(ValueError, match="give at most two decimals"):
        EncodeOptions.build(5.375)
    with pytest.raises(ValueError, match="finite"):
        EncodeOptions.build(math.nan)
    with pytest.raises(ValueError, match="out of range"):
        EncodeOptions.build(1e308)
    with pytest.raises(TypeError, match="quality must be a number"):
        EncodeOptions.build("5")


def test_options_are_checked_frozen_and_travel_to_workers() -> None:
    with pytest.raises(ValueError, match="metadata must be one of"):
        EncodeOptions.build(metadata="everything")  # type: ignore[arg-type]
    options = EncodeOptions.build(target_size=40_000, metadata="icc", max_pixels=10**6)
    assert pickle.loads(pickle.dumps(options)) == options
    assert options.limits == {"max_pixels": 10**6, "warn_pixels": None}
    assert options.target is not None and options.target.max_bytes(10**6) == 40_000
    assert Target("bpp", 2.0).max_bytes(1001) == 250 and Target("psnr", 30.0).max_bytes(9) is None
    with pytest.raises(AttributeError):
        options.metadata = "all"  # type: ignore[misc]


def test_batch_checks_the_quality_against_the_codec_before_any_job(tiny_codec) -> None:
    with pytest.raises(ValueError, match=r"quality 9 is not available; choose 1\.\.2"):
        batch.compress_files([(Path("never.png"), Path("never.aec"))], codec=tiny_codec, quality=9)
