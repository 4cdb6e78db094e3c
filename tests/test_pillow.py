"""The Pillow plugin and the API's inputs: Image.open/save of .aec, paths and file objects."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import smooth_image
from PIL import Image, ImageCms, UnidentifiedImageError

import aecodec
from aecodec import container


@pytest.fixture(scope="module")
def aec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pil") / "x.aec"
    path.write_bytes(aecodec.compress(smooth_image(70, 45, 4), quality=2))
    return path


def test_image_open_decodes_like_the_api(aec_file: Path) -> None:
    expected = aecodec.decompress(aec_file.read_bytes())
    with Image.open(aec_file) as img:
        assert (img.format, img.mode, img.size) == ("AEC", "RGBA", (70, 45))
        assert img.info["quality"] == 2
        np.testing.assert_array_equal(np.asarray(img), np.asarray(expected))
    with Image.open(io.BytesIO(aec_file.read_bytes())) as img:
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), np.asarray(expected)[..., :3])


def test_open_reads_only_the_header_until_load(
    aec_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = aecodec.decompress

    def counting(data: Any) -> Any:
        calls.append(1)
        return real(data)

    monkeypatch.setattr(aecodec, "decompress", counting)
    with Image.open(aec_file) as img:
        assert img.size == (70, 45)
        assert calls == []
        img.load()
        img.load()
    assert calls == [1]


def test_open_holds_a_large_file_once(aec_file: Path, tmp_path: Path) -> None:
    """Image.open() of an 8 MB file allocates about the file once (the payloads stay views
    of the bytes read, not copies)."""
    import tracemalloc

    bs = container.unpack(aec_file.read_bytes())
    n = 8_000_000
    big = tmp_path / "big.aec"
    big.write_bytes(container.pack(dataclasses.replace(bs, tiles=(bytes(n),))))
    tracemalloc.start()
    try:
        with Image.open(big) as img:
            assert img.size == (70, 45)
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.2 * n, peak / n


def test_save_encodes_with_options(tmp_path: Path) -> None:
    img = Image.fromarray(smooth_image(64, 48))
    img.save(tmp_path / "a.aec", aec_quality=1)  # aecodec's own levels
    img.save(tmp_path / "b.aec", aec_quality=4)
    a, b = (aecodec.info(tmp_path / n) for n in ("a.aec", "b.aec"))
    assert (a["quality"], b["quality"]) == (1, 4)
    assert a["bytes"] < b["bytes"]
    img.save(tmp_path / "c.aec", aec_quality=3.5)  # a fine quality
    with Image.open(tmp_path / "c.aec") as c:
        assert c.info["quality"] == 3.5 and c.size == (64, 48)
    buf = io.BytesIO()
    img.save(buf, format="AEC")  # no extension: the format name works too
    assert aecodec.info(buf.getvalue())["quality"] == aecodec.DEFAULT_QUALITY
    assert Image.registered_extensions()[".aec"] == "AEC"
    assert Image.MIME["AEC"] == "image/x-aec"


def test_save_metadata_options(tmp_path: Path) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = Image.fromarray(smooth_image(32, 32))
    img.save(tmp_path / "icc.aec", icc_profile=icc)
    with Image.open(tmp_path / "icc.aec") as back:
        assert back.info["icc_profile"] == icc
    img.info["icc_profile"] = icc
    img.save(tmp_path / "none.aec", metadata="none")
    assert not aecodec.info(tmp_path / "none.aec")["has_icc"]


def test_other_files_are_not_claimed(tmp_path: Path) -> None:
    (tmp_path / "fake.aec").write_bytes(b"\x89AEC" + b"\x01" * 40)  # magic, then garbage
    with pytest.raises(UnidentifiedImageError, match=r"broken \.aec file: "):  # with the reason
        Image.open(tmp_path / "fake.aec")
    Image.fromarray(smooth_image(8, 8)).save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as img:
        assert img.format == "PNG"


def test_decompress_and_info_take_bytes_paths_and_files(aec_file: Path) -> None:
    data = aec_file.read_bytes()
    ref = np.asarray(aecodec.decompress(data))
    with aec_file.open("rb") as fh:
        assert aecodec.info(fh) == aecodec.info(data)
    for source in (aec_file, str(aec_file), bytearray(data), io.BytesIO(data)):
        np.testing.assert_array_equal(np.asarray(aecodec.decompress(source)), ref)
    with aec_file.open("r", encoding="latin-1") as text, pytest.raises(TypeError, match="'rb'"):
        aecodec.decompress(text)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        aecodec.info(aec_file.with_name("missing.aec"))


def test_compress_takes_a_binary_file(tmp_path: Path) -> None:
    arr = smooth_image(40, 30)
    Image.fromarray(arr).save(tmp_path / "x.png")
    with (tmp_path / "x.png").open("rb") as fh:
        assert aecodec.compress(fh, quality=1) == aecodec.compress(arr, quality=1)


@pytest.mark.parametrize(
    ("metadata", "icc", "exif"),
    [("all", True, True), ("icc", True, False), ("exif", False, True), ("none", False, False)],
)
def test_metadata_choice(tmp_path: Path, metadata: str, icc: bool, exif: bool) -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tags = Image.Exif()
    tags[0x010F] = "aecodec test camera"  # Make
    tags[0x0112] = 6  # orientation: rotate, applied to the pixels whatever is kept
    src = tmp_path / "m.jpg"
    Image.fromarray(smooth_image(30, 20)).save(src, icc_profile=profile, exif=tags.tobytes())
    data = aecodec.compress(src, quality=1, metadata=metadata)  # type: ignore[arg-type]
    header = aecodec.info(data)
    assert (header["has_icc"], header["has_exif"]) == (icc, exif)
    assert (header["width"], header["height"]) == (20, 30)
    if exif:
        assert b"aecodec test camera" in (container.unpack(data).exif or b"")
    with pytest.raises(ValueError, match="metadata must be one of"):
        aecodec.compress(src, quality=1, metadata="xmp")  # type: ignore[arg-type]


def test_save_quality_follows_pillows_0_to_100_convention(tmp_path: Path) -> None:
    """``save(..., quality=Q)`` as for JPEG/WebP/AVIF: 0 the lowest level, 100 the highest,
    monotone in between; outside 0..100 an error that names aec_quality."""
    from aecodec.pillow import quality_from_pillow

    levels = len(aecodec.qualities())
    assert quality_from_pillow(0, levels) == 1 and quality_from_pillow(100, levels) == levels
    steps = [quality_from_pillow(q, levels) for q in range(0, 101)]
    assert steps == sorted(steps) and len(set(steps)) > 90
    img = Image.fromarray(smooth_image(64, 48))
    img.save(tmp_path / "q75.aec", quality=75)
    assert aecodec.info(tmp_path / "q75.aec")["quality"] == quality_from_pillow(75, levels)
    with pytest.raises(ValueError, match="aec_quality"):
        img.save(tmp_path / "bad.aec", quality=150)


def test_load_errors_are_oserrors_with_the_reason(aec_file: Path, tmp_path: Path) -> None:
    """Pillow callers catch OSError: a file of weights that are not bundled fails in load()
    with aecodec's reason in the message."""
    from aecodec import container

    bs = container.unpack(aec_file.read_bytes())
    header = dataclasses.replace(bs.header, weights_hash=b"12345678")
    (tmp_path / "other.aec").write_bytes(container.pack(dataclasses.replace(bs, header=header)))
    with Image.open(tmp_path / "other.aec") as img, pytest.raises(OSError, match="other weights"):
        img.load()
