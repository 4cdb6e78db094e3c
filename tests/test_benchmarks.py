"""Tests for benchmarks/ (BD-rate, metrics, codec registry, RD runner) and kodak/fetch.py."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import smooth_image
from PIL import Image

from benchmarks import bdrate, metrics
from benchmarks.codecs import CodecUnavailable, codec_names, make_codec
from kodak import fetch

ROOT = Path(__file__).resolve().parent.parent
ANCHORS = ROOT / "benchmarks" / "anchors" / "kodak"  # in the repository (its README: sources)


def _need_kodak() -> Path:
    kodak = fetch.find_kodak()
    if kodak is None:
        pytest.skip("Kodak not in kodak/images or ../shared/kodak; run python -m kodak.fetch")
    return kodak


def _anchor(stem: str) -> tuple[list[float], list[float]]:
    res = json.loads((ANCHORS / f"{stem}.json").read_text())["results"]
    return res["bpp"], res["psnr-rgb"]


def _smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 90 * np.sin(xx / 11 + c) * np.cos(yy / 7 - c) for c in range(3)], -1)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


# A synthetic, slightly curved RD curve (rate in bpp, PSNR in dB).
RATE = np.array([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
PSNR = 24 + 4.5 * np.log2(RATE / 0.1) - 0.15 * np.log2(RATE / 0.1) ** 2


# ---------------------------------------------------------------------------------- BD-rate


def test_bd_rate_of_a_curve_against_itself_is_zero():
    res = bdrate.bd_rate(RATE, PSNR, RATE, PSNR)
    assert res.value == pytest.approx(0.0, abs=1e-9)
    assert (res.low, res.high) == pytest.approx((PSNR.min(), PSNR.max()))
    assert bdrate.bd_psnr(RATE, PSNR, RATE, PSNR).value == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("factor", "expected"), [(0.5, -50.0), (2.0, 100.0), (0.8, -20.0)])
def test_bd_rate_of_scaled_rates_is_the_scale(factor, expected):
    assert bdrate.bd_rate(RATE, PSNR, RATE * factor, PSNR).value == pytest.approx(expected)


def test_bd_psnr_of_a_shifted_curve_is_the_shift_and_overlap_is_in_bpp():
    res = bdrate.bd_psnr(RATE, PSNR, RATE, PSNR + 1.25)
    assert res.value == pytest.approx(1.25)
    assert (res.low, res.high) == pytest.approx((0.1, 3.2))
    # Better curve = fewer bits: BD-rate negative.
    assert bdrate.bd_rate(RATE, PSNR, RATE, PSNR + 1.25).value < -10


def test_bd_rate_overlap_is_the_intersection():
    res = bdrate.bd_rate(RATE, PSNR, RATE[1:] * 0.5, PSNR[1:])
    assert res.low == pytest.approx(PSNR[1])
    assert res.high == pytest.approx(PSNR[-1])
    assert res.value == pytest.approx(-50.0, abs=0.05)  # refit on 5 points: nearly exact


def test_bd_rate_rejects_too_few_points_and_disjoint_curves():
    with pytest.raises(ValueError, match="at least 4"):
        bdrate.bd_rate(RATE[:3], PSNR[:3], RATE, PSNR)
    with pytest.raises(ValueError, match="overlap"):
        bdrate.bd_rate(RATE, PSNR, RATE, PSNR + 100)
    with pytest.raises(ValueError, match="overlap"):
        bdrate.bd_psnr(RATE, PSNR, RATE * 1000, PSNR)
    with pytest.raises(ValueError, match="finite"):
        bdrate.bd_rate(RATE, [*PSNR[:-1], math.inf], RATE, PSNR)
    with pytest.raises(ValueError, match="> 0"):
        bdrate.bd_rate([0.0, *RATE[1:]], PSNR, RATE, PSNR)


@pytest.mark.parametrize(
    ("stem", "published"),
    [
        # BD-rate vs jpeg.json (PSNR-RGB) of CompressAI's curves, as the project's reference
        # notes give them (an independent computation), to within 1 %
        ("webp", -36.6),
        ("jpeg2000", -36.6),
        ("compressai-bmshj2018-factorized_mse_cuda", -45.0),
        ("compressai-bmshj2018-hyperprior_mse_cuda", -55.3),
        ("bpg_444_x265_ycbcr", -59.1),
        ("vtm", -67.8),
    ],
)
def test_bd_rate_reproduces_published_values(stem, published):
    jpeg = _anchor("jpeg")
    assert bdrate.bd_rate(*jpeg, *_anchor(stem)).value == pytest.approx(published, abs=1.0)


# ---------------------------------------------------------------------------------- metrics


def test_psnr_known_values():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert metrics.psnr_rgb(a, a) == math.inf
    assert metrics.psnr_rgb(a, a + 1) == pytest.approx(20 * math.log10(255))  # MSE 1: 48.13 dB
    assert metrics.psnr_rgb(np.zeros_like(a), np.full_like(a, 255)) == pytest.approx(0.0)
    b = a.copy()
    b[0, 0, 0] += 16  # MSE = 256 / 192
    assert metrics.psnr_rgb(a, b) == pytest.approx(10 * math.log10(255**2 * 192 / 256))


def test_psnr_rejects_mismatched_inputs():
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr_rgb(a, a[:4])
    with pytest.raises(ValueError, match="uint8"):
        metrics.psnr_rgb(a, a.astype(np.float32))


def test_ms_ssim_small_images_give_nan_and_identical_gives_one():
    small = _smooth(160, 200)
    assert math.isnan(metrics.ms_ssim(small, small))
    img = _smooth(161, 170)
    assert metrics.ms_ssim(img, img) == pytest.approx(1.0, abs=1e-6)
    noisy = np.clip(img.astype(int) + np.random.default_rng(1).integers(-20, 21, img.shape), 0, 255)
    value = metrics.ms_ssim(img, noisy.astype(np.uint8))
    assert 0.5 < value < 0.999
    assert metrics.ms_ssim_db(value) == pytest.approx(-10 * math.log10(1 - value))


def test_bpp_counts_whole_bytes():
    assert metrics.bpp(1000, 100, 80) == 1.0
    assert metrics.bpp(49152, 768, 512) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        metrics.bpp(10, 0, 5)


# ---------------------------------------------------------------------------------- codecs


@pytest.mark.parametrize("name", ["jpeg", "jpeg444", "webp", "jpeg2000", "avif", "jxl"])
def test_standard_codecs_round_trip_and_rate_grows_with_quality(name):
    try:
        codec = make_codec(name)
    except CodecUnavailable as exc:
        pytest.skip(str(exc))
    img = _smooth(48, 64)
    lo, hi = codec.qualities[0], codec.qualities[-1]
    data_lo, data_hi = codec.encode(img, lo), codec.encode(img, hi)
    out = codec.decode(data_hi)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert len(data_lo) < len(data_hi)
    assert metrics.psnr_rgb(img, out) > metrics.psnr_rgb(img, codec.decode(data_lo))
    assert metrics.psnr_rgb(img, out) > 30
    assert codec.version and codec.description


def test_codec_registry_errors():
    with pytest.raises(KeyError, match="unknown codec"):
        make_codec("nope")
    with pytest.raises(CodecUnavailable, match="--compressai-checkpoint"):
        make_codec("compressai-factorized")
    assert {"aecodec", "jpeg", "jpeg444", "webp", "jpeg2000", "avif", "jxl"} <= set(codec_names())


# ---------------------------------------------------------------------------------- kodak.fetch


def _fake_set(tmp_path: Path, n: int = 3) -> tuple[Path, dict[str, str]]:
    src = tmp_path / "src"
    src.mkdir()
    sums = {}
    for i in range(1, n + 1):
        data = f"image {i}".encode()
        (src / f"kodim{i:02d}.png").write_bytes(data)
        sums[f"kodim{i:02d}.png"] = hashlib.sha256(data).hexdigest()
    return src, sums


def test_fetch_copies_verifies_and_is_idempotent(tmp_path):
    src, sums = _fake_set(tmp_path)
    dest = tmp_path / "dest"
    log: list[str] = []
    assert fetch.ensure_kodak(dest, src, sums=sums, log=log.append) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(sums)
    assert len(log) == 3
    log.clear()
    fetch.ensure_kodak(dest, src, sums=sums, log=log.append)
    assert log == []  # nothing copied the second time
    (dest / "kodim02.png").write_bytes(b"corrupted")  # a bad local copy is replaced
    fetch.ensure_kodak(dest, src, sums=sums, log=log.append)
    assert len(log) == 1 and (dest / "kodim02.png").read_bytes() == b"image 2"


def test_fetch_refuses_a_mismatching_source(tmp_path):
    src, sums = _fake_set(tmp_path)
    (src / "kodim03.png").write_bytes(b"not kodak")
    dest = tmp_path / "dest"
    with pytest.raises(fetch.KodakError, match=r"checksum mismatch.*kodim03"):
        fetch.ensure_kodak(dest, src, sums=sums)
    assert not (dest / "kodim03.png").exists()
    assert not [p for p in dest.iterdir() if p.suffix == ".part"]


def test_fetch_without_any_source_says_to_pass_from(tmp_path):
    src, sums = _fake_set(tmp_path)
    (src / "kodim01.png").unlink()
    with pytest.raises(fetch.KodakError, match="--from"):
        fetch.ensure_kodak(tmp_path / "d1", src, sums=sums)
    # A name that no local directory has: falls through to the download, which fails here.
    with pytest.raises(fetch.KodakError, match=r"download .* failed.*--from"):
        fetch.ensure_kodak(
            tmp_path / "d2", sums={"kodim99.png": "0" * 64}, url="http://127.0.0.1:9/{name}"
        )
    with pytest.raises(fetch.KodakError, match=r"downloading is disabled.*--from"):
        fetch.ensure_kodak(tmp_path / "d3", sums={"kodim99.png": "0" * 64}, download=False)


def test_fetch_cli_reports_mismatch(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "kodim01.png").write_bytes(b"nope")
    result = CliRunner().invoke(fetch.main, ["--from", str(bad), "--dest", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert "checksum mismatch" in result.output


def test_sha256sums_lists_the_24_images():
    sums = fetch.read_sums()
    assert list(sums) == [f"kodim{i:02d}.png" for i in range(1, 25)]


def test_fetch_from_shared_kodak_verifies_all_24(tmp_path):
    kodak = _need_kodak()
    dest = fetch.ensure_kodak(tmp_path / "k", kodak)
    assert len(list(dest.glob("kodim*.png"))) == 24
    assert fetch.find_kodak(dest) == dest


# ---------------------------------------------------------------------------------- RD runner


def _run_rd(args: list[str]):
    from benchmarks import rd

    result = CliRunner().invoke(rd.main, [*args, "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_task_key_changes_with_codec_version():
    from benchmarks.rd import Task

    a = Task("x.png", "x.png", "ab" * 32, "jpeg", "Pillow 1", 50)
    assert a.key != Task("x.png", "x.png", "ab" * 32, "jpeg", "Pillow 2", 50).key
    assert a.key != Task("x.png", "x.png", "cd" * 32, "jpeg", "Pillow 1", 50).key
    assert a.key == Task("y/x.png", "x.png", "ab" * 32, "jpeg", "Pillow 1", 50).key


def test_rd_smoke_jpeg_two_kodak_images_and_resume(tmp_path):
    kodak = _need_kodak()
    out = tmp_path / "results"
    args = ["--images", str(kodak), "--limit", "2", "--codecs", "jpeg", "--out", str(out)]
    first = _run_rd([*args, "--workers", "1"])  # through the process pool
    assert "38 to run" in first.output

    res = json.loads((out / "jpeg.json").read_text())
    assert res["name"] == "JPEG 4:2:0" and "Pillow" in res["description"]
    r = res["results"]
    keys = {"bpp", "psnr-rgb", "ms-ssim-rgb", "ms-ssim", "encoding_time", "decoding_time"}
    assert keys <= set(r)
    assert all(len(r[k]) == 19 for k in keys)
    assert r["bpp"] == sorted(r["bpp"]) and r["psnr-rgb"] == sorted(r["psnr-rgb"])
    assert 0.1 < r["bpp"][0] < 0.5 and 2.0 < r["bpp"][-1] < 6.0
    assert 20 < r["psnr-rgb"][0] < r["psnr-rgb"][-1] < 50
    assert 0.7 < r["ms-ssim-rgb"][0] < r["ms-ssim-rgb"][-1] < 1.0
    assert all(t > 0 for t in r["encoding_time"] + r["decoding_time"])

    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 38 and {row["image"] for row in rows} == {"kodim01.png", "kodim02.png"}
    q50 = [row for row in rows if row["quality"] == "50"]
    mean_bpp = np.mean([float(row["bpp"]) for row in q50])
    assert mean_bpp == pytest.approx(r["bpp"][r["quality"].index(50)])
    for row in q50:  # bpp from the whole file
        assert float(row["bpp"]) == pytest.approx(8 * int(row["bytes"]) / (768 * 512))

    table = (out / "rd.md").read_text()
    assert "| JPEG 4:2:0 | 19 |" in table and "0 % (ref)" in table
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Resume: everything cached; then drop some lines and only those are measured again.
    cache = out / "cache.jsonl"
    lines = cache.read_text().splitlines()
    assert len(lines) == 38
    assert "38 cached, 0 to run" in _run_rd([*args, "--workers", "0", "--no-plot"]).output
    cache.write_text("\n".join(lines[:30]) + "\n" + lines[30][:10])  # torn last line
    again = _run_rd([*args, "--workers", "0", "--no-plot"])
    assert "30 cached, 8 to run" in again.output
    assert json.loads((out / "jpeg.json").read_text())["results"]["bpp"] == r["bpp"]


def test_rd_smoke_aecodec_and_bd_table(tmp_path):
    kodak = _need_kodak()
    import aecodec

    qualities = list(aecodec.qualities())  # a failure here is a failure of the core, not a skip
    out = tmp_path / "results"
    result = _run_rd(
        [
            *("--images", str(kodak), "--limit", "2", "--crop", "176x176"),
            *("--codecs", "aecodec,jpeg,jpeg444", "--workers", "0", "--out", str(out)),
            "--no-plot",
        ]
    )
    assert "aecodec" in result.output
    r = json.loads((out / "aecodec.json").read_text())["results"]
    assert sorted(r["quality"]) == qualities
    assert all(b > 0 for b in r["bpp"])
    table = (out / "rd.md").read_text()
    assert "| aecodec |" in table
    # JPEG 4:4:4 vs JPEG 4:2:0 always overlaps: a numeric BD-rate with its PSNR interval.
    row = next(line for line in table.splitlines() if line.startswith("| JPEG 4:4:4 |"))
    assert " % | " in row and " dB |" in row


def test_fine_quality_chord_and_rate_control_smoke(tmp_path):
    """benchmarks.fine_quality: the chord arithmetic, and a run on generated images."""
    from PIL import Image

    from benchmarks import fine_quality

    points = {
        2: (0.2, 27.0, [(0.2, 27.0)]),
        3: (0.4, 29.0, [(0.4, 29.0)]),
        2.5: (0.3, 28.5, [(0.3, 28.5)]),
    }
    [row] = fine_quality.rd_table(points, [2.5])
    assert row["chord_psnr"] == pytest.approx(28.0)
    assert row["db_over_chord"] == pytest.approx(0.5)
    assert row["rate_vs_chord"] == pytest.approx(0.3 / 0.35 - 1)
    assert row["images_on_or_above"] == 1

    train = tmp_path / "train"
    train.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):  # 16 become the validation split; every second one is measured
        arr = np.clip(rng.normal(128, 40, (40, 56, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(train / f"img{i:02d}.png")
    out = tmp_path / "fine.json"
    args = ["--qualities", "1.5", "--bpp-targets", "2", "--train", str(train), "--images", "2"]
    args += ["--model", str(ROOT / "tests" / "golden" / "tiny.safetensors"), "--threads", "1"]
    result = CliRunner().invoke(fine_quality.main, [*args, "--crop", "32", "--json", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert [r["quality"] for r in record["rd"]] == [1.5]
    assert {r["scale"] for r in record["rate_control"]} == {"levels", "fine (0.01)"}
    assert "| 1.5 |" in result.output


def test_rd_defaults_never_write_the_committed_results_and_missing_anchors_fail(
    tmp_path, monkeypatch
):
    from benchmarks import rd

    assert not rd.DEFAULT_OUT.is_absolute() and rd.DEFAULT_OUT.parts[0] != "benchmarks"
    kodak = _need_kodak()
    monkeypatch.chdir(tmp_path)
    args = ["--images", str(kodak), "--limit", "1", "--crop", "64x64", "--codecs", "jpeg"]
    result = CliRunner().invoke(
        rd.main, [*args, "--overlay-anchors", "--anchors", str(tmp_path / "none"), "--quiet"]
    )
    assert result.exit_code == 2 and "no anchor folder" in result.output
    _run_rd([*args, "--workers", "0", "--no-plot"])
    assert (tmp_path / "rd-results" / "jpeg.json").is_file()


# ---------------------------------------------------------------------------------- compare


def test_largest_fitting_finds_the_highest_setting_under_the_size():
    from benchmarks.compare import largest_fitting

    def encode(q: float) -> bytes:
        return b"x" * int(100 + 10 * q)

    found = largest_fitting(encode, 1, 95, True, 555)
    assert found is not None and (found[0], len(found[1])) == (45, 550)
    assert largest_fitting(encode, 1, 95, True, 50) is None
    found = largest_fitting(lambda r: b"x" * int(10_000 / r), 400.0, 2.0, False, 1000)
    assert found is not None
    ratio, data = found
    assert len(data) <= 1000 and ratio == pytest.approx(10.0, rel=0.01)


def test_compare_writes_a_labelled_picture_at_one_size(tmp_path):
    from benchmarks import compare

    src = tmp_path / "a.png"
    Image.fromarray(smooth_image(96, 64, seed=3)).save(src)
    out = tmp_path / "cmp.png"
    args = [str(src), "--size", "2K", "--codecs", "aecodec,jpeg", "--crop", "64x48+8+8"]
    result = CliRunner().invoke(
        compare.main, [*args, "-o", str(out), "--html", str(tmp_path / "h")]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if " B  PSNR" in line]
    assert [line.split()[0] for line in lines] == ["aecodec", "JPEG"]
    assert all(int(line.split(" B ")[0].split()[-1].replace(",", "")) <= 2048 for line in lines)
    picture = Image.open(out)
    assert picture.size == (
        3 * (64 + compare.GAP) + compare.GAP,
        48 + compare.LABEL_HEIGHT + 2 * compare.GAP,
    )
    assert (tmp_path / "h" / "index.html").is_file()
    again = CliRunner().invoke(compare.main, [*args, "-o", str(out)])
    assert again.exit_code == 1 and "--force" in again.output
    bad = CliRunner().invoke(compare.main, [str(src), "--bpp", "1", "--crop", "200x10"])
    assert bad.exit_code == 2 and "not inside the 96x64 image" in bad.output


def test_plot_colours_are_fixed_per_codec_family_and_published_curves_lighter():
    """Issue 20: a codec keeps its colour whatever the order of --codecs; a published curve is
    a lighter, dashed shade of its family's; aecodec is the strongest line."""
    from matplotlib.colors import to_rgb

    from benchmarks.plot import Curve, curve_style

    def style(label: str, published: bool = False) -> dict:
        return curve_style(Curve(label, [0.1, 0.2], [30.0, 31.0], [0.9, 0.95], published))

    assert to_rgb(style("JPEG 4:2:0")["color"]) == to_rgb(style("jpeg")["color"])
    assert style("AVIF 4:4:4")["color"] != style("JPEG 4:4:4")["color"]
    measured, published = style("JPEG 2000"), style("JPEG2000", published=True)
    assert published["linestyle"] == "--" and "linestyle" not in measured
    assert sum(published["color"]) > sum(to_rgb(measured["color"]))  # lighter
    aec = style("aecodec (aecodec-vq-base4z)")
    assert aec["linewidth"] > max(style(n)["linewidth"] for n in ("WebP", "JPEG XL", "AVIF 4:4:4"))
    colours = {to_rgb(style(n)["color"]) for n in ("aecodec", "JPEG", "WebP", "JPEG 2000", "AVIF")}
    assert len(colours) == 5


def test_compare_labels_fit_their_panel():
    """A long file name is shortened in the middle so that it never runs into the next
    panel's label (the committed picture had that)."""
    from PIL import Image, ImageDraw, ImageFont

    from benchmarks.compare import _fit

    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = ImageFont.load_default(size=13)
    text = "a-very-long-photo-file-name-from-a-camera-roll.png @ 6,144 B"
    short = _fit(draw, text, font, 192)
    assert draw.textlength(short, font=font) <= 192 < draw.textlength(text, font=font)
    assert short.startswith("a-very") and short.endswith("6,144 B") and "…" in short
    assert _fit(draw, "aecodec (q 5)", font, 192) == "aecodec (q 5)"
