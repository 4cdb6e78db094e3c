"""Hostile and unusual input images (issue 10, item 6): limits before decoding, clean errors,
bit depths by what the file declares, colour profiles, frames, one-line warnings."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import smooth_image
from PIL import Image, ImageCms, ImageFile

from aecodec import ImageError, imageio
from aecodec.errors import AecodecWarning, LargeImageWarning


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(
    width: int, height: int, depth: int, colour: int, rows: bytes, extra: bytes = b""
) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + extra
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def _rows(arr: np.ndarray) -> bytes:
    return b"".join(b"\0" + row.tobytes() for row in arr)


def _aec_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, AecodecWarning)]


# --- the pixel limit is applied before decoding -------------------------------------------------


def test_pixel_limit_refuses_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bilevel.png"
    Image.new("1", (3000, 2000)).save(path)  # 6 Mpx in a few KB
    assert path.stat().st_size < 10_000
    decoded: list[str] = []
    real_load = ImageFile.ImageFile.load

    def load(self: Any) -> Any:
        decoded.append(self.mode)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(ImageError, match=r"3000 x height 2000 = 6000000 pixels exceeds the limit"):
        imageio.load(path, max_pixels=5_000_000)
    assert decoded == []
    with pytest.warns(LargeImageWarning, match="3000x2000 = 6000000 pixels"):
        pic = imageio.load(path, warn_pixels=5_000_000)
    assert pic.mode == "L" and decoded  # decoded only once the limit allowed it


def test_pixel_limit_applies_to_arrays_and_pil_images() -> None:
    with pytest.raises(ImageError, match="exceeds the limit of 100 pixels"):
        imageio.load(np.zeros((20, 10), np.uint8), max_pixels=100)
    with pytest.warns(LargeImageWarning):
        imageio.load(Image.new("RGB", (20, 10)), warn_pixels=100)


def test_compress_passes_the_limits(tiny_codec, tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(smooth_image(40, 30)).save(path)
    with pytest.raises(ImageError, match="exceeds the limit of 1000 pixels"):
        tiny_codec.compress(path, quality=1, max_pixels=1000)


# --- Pillow failures become ImageError ----------------------------------------------------------

_ICCP_BOMB = _png(
    4,
    4,
    8,
    0,
    _rows(np.zeros((4, 4), np.uint8)),
    _chunk(b"iCCP", b"icc\0\0" + zlib.compress(bytes(4 << 20))),
)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("iccp-bomb.png", _ICCP_BOMB),
        ("maxval.ppm", b"P6 4 4 65536\n" + bytes(96)),
        ("maxval0.pgm", b"P5 4 4 0\n" + bytes(16)),
        ("text.pgm", b"P2 4 4 255\n1 2 x\n"),
    ],
)
def test_pillow_failures_are_image_errors(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError, match=rf"{name}: cannot decode image \(.+\)"):
        imageio.load(path)


def test_devices_are_not_read_as_images() -> None:
    with pytest.raises(ImageError, match="is a character device, not a regular file"):
        imageio.load("/dev/zero")


# --- bit depths ---------------------------------------------------------------------------------


def test_mode_i_is_scaled_by_its_declared_depth_not_its_maximum(tmp_path: Path) -> None:
    dark = np.full((4, 6), 1000, np.int32)
    brighter = dark.copy()
    brighter[0, 0] = 256 * 257
    outs = []
    for arr in (dark, brighter):
        with pytest.warns(AecodecWarning, match="16-bit image reduced to 8 bits per channel"):
            outs.append(imageio.load(Image.fromarray(arr, "I")).rgb[..., 0])
    assert outs[0][1, 1] == outs[1][1, 1] == round(1000 / 257)
    tif = tmp_path / "i32.tif"
    Image.fromarray(np.full((4, 6), 2**31 - 1, np.int32), "I").save(tif)  # declares 32 bits
    with pytest.warns(AecodecWarning, match="32-bit image reduced"):
        assert imageio.load(tif).rgb[0, 0, 0] == round((2**31 - 1) * 255 / (2**32 - 1))


def test_float_images_map_zero_one_to_the_8_bit_range(tmp_path: Path) -> None:
    path = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0]], np.float32), "F").save(path)
    with pytest.warns(AecodecWarning, match=r"float image mapped from \[0, 1\]"):
        assert imageio.load(path).rgb[0, :, 0].tolist() == [0, 128, 255, 255]


def test_16_bit_rgb_png_warns_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "rgb16.png"
    arr = (np.arange(4 * 6 * 3) * 900).astype(">u2").reshape(4, 6, 3)
    path.write_bytes(_png(6, 4, 16, 2, _rows(arr)))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pic = imageio.load(path)
    assert _aec_warnings(record) == ["16-bit image reduced to 8 bits per channel for coding"]
    assert pic.mode == "RGB"  # Pillow keeps the high byte: within 1 of v / 257
    assert np.abs(pic.rgb.astype(float) - arr / 257.0).max() <= 1


def test_16_bit_grey_png_has_the_same_warning(tmp_path: Path) -> None:
    path = tmp_path / "grey16.png"
    path.write_bytes(_png(6, 4, 16, 0, _rows(np.full((4, 6), 4000, ">u2"))))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert imageio.load(path).rgb[0, 0, 0] == round(4000 / 257)
    assert _aec_warnings(record) == ["16-bit image reduced to 8 bits per channel for coding"]
    assert all(w.filename == __file__ for w in record)  # points at the caller, not aecodec


# --- colour profiles and frames -----------------------------------------------------------------


def test_cmyk_profile_is_never_carried_into_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("CMYK", (8, 8), (10, 20, 30, 40)).save(path, icc_profile=srgb)  # mismatched
    with pytest.warns(
        AecodecWarning, match="CMYK image converted to RGB without colour management"
    ):
        pic = imageio.load(path)
    assert pic.mode == "RGB" and pic.icc is None


def test_cmyk_profile_is_applied_when_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a usable profile, ImageCms converts to sRGB (no CMYK profile on test machines:
    the transform is stubbed to check the call and the result)."""
    calls = []

    def fake(im, src, dst, outputMode):
        calls.append(outputMode)
        return Image.new("RGB", im.size, (1, 2, 3))

    monkeypatch.setattr(ImageCms, "profileToProfile", fake)
    monkeypatch.setattr(ImageCms, "ImageCmsProfile", lambda f: object())
    im = Image.new("CMYK", (5, 3))
    im.info["icc_profile"] = b"cmyk profile"
    with pytest.warns(AecodecWarning, match="converted to sRGB with its ICC profile"):
        pic = imageio.load(im)
    assert calls == ["RGB"] and pic.icc is None and pic.rgb[0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "PNG", "WEBP"])
def test_only_first_frame_is_coded_with_a_warning(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"anim.{fmt.lower()}"
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    with pytest.warns(AecodecWarning, match="only the first frame is coded"):
        pic = imageio.load(path)
    assert pic.rgb[0, 0].tolist()[0] > 200  # red: the first frame


def test_single_frame_images_do_not_warn(tmp_path: Path) -> None:
    path = tmp_path / "one.png"
    Image.fromarray(smooth_image(8, 8)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        imageio.load(path)


def test_cli_prints_warnings_as_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from aecodec.cli.main import main

    monkeypatch.chdir(tmp_path)
    Path("g.png").write_bytes(_png(6, 4, 16, 0, _rows(np.full((4, 6), 4000, ">u2"))))
    result = CliRunner().invoke(main, ["compress", "g.png", "--warn-pixels", "10"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "aecodec: warning: g.png: large image: 6x4 = 24 pixels is over the warning threshold "
        "of 10 pixels (limit 268435456); coding it takes minutes and GBs of memory "
        "(see --max-pixels N)",
        "aecodec: warning: g.png: 16-bit image reduced to 8 bits per channel for coding",
    ]
    result = CliRunner().invoke(main, ["compress", "g.png", "-o", "h.aec", "--max-pixels", "10"])
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert "g.png: image too large: width 6 x height 4 = 24 pixels" in result.stderr
    assert not Path("h.aec").exists()


def test_bytes_io_profile_helper_round_trip() -> None:
    """The sRGB profile ImageCms makes is readable back (guards the helper's assumptions)."""
    data = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert ImageCms.ImageCmsProfile(io.BytesIO(data)).profile.xcolor_space.strip() == "RGB"


def _icon(png: bytes, side: int = 16) -> bytes:
    """An ICO file with one entry whose directory says ``side`` x ``side``, holding ``png``."""
    entry = struct.pack("<BBBBHHII", side % 256, side % 256, 0, 0, 1, 32, len(png), 22)
    return b"\x00\x00\x01\x00" + struct.pack("<H", 1) + entry + png


def test_icon_entries_meet_the_pixel_limit_before_pillow_decodes_them(tmp_path: Path) -> None:
    """The directory says 16x16 but the embedded PNG is 400x300: refused from the PNG header
    (Pillow's ICO plugin would decode it inside Image.open)."""
    buf = io.BytesIO()
    Image.new("RGB", (400, 300)).save(buf, "PNG")
    path = tmp_path / "lie.ico"
    path.write_bytes(_icon(buf.getvalue()))
    with pytest.raises(ImageError, match="width 400 x height 300"):
        imageio.load(path, max_pixels=65_536)
    small = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 99, 199)).save(small, "PNG")
    (tmp_path / "ok.ico").write_bytes(_icon(small.getvalue()))
    assert imageio.load(tmp_path / "ok.ico", max_pixels=65_536).rgb.shape == (16, 16, 3)


def test_oversized_icc_profile_is_dropped_with_a_warning(tmp_path: Path) -> None:
    """A 2 MB ICC profile would make a decoded PNG that Pillow cannot open again."""
    path = tmp_path / "big-icc.tif"
    Image.new("RGB", (8, 8)).save(path, icc_profile=b"\x00" * (2 << 20))
    with pytest.warns(AecodecWarning, match="ICC profile of 2,097,152 bytes dropped"):
        pic = imageio.load(path)
    assert pic.icc is None


def test_torch_tensors_in_torchvisions_layout_are_images() -> None:
    """``[C, H, W]`` float in [0, 1] or uint8 (torchvision's ToTensor / PILToTensor)."""
    import torch

    arr = smooth_image(48, 40)
    as_float = torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0
    assert np.array_equal(imageio.load(as_float).rgb, arr)
    assert np.array_equal(imageio.load(torch.from_numpy(arr).permute(2, 0, 1)).rgb, arr)
    grey = imageio.load(torch.zeros(1, 40, 48))
    assert grey.mode == "L" and grey.rgb.shape == (40, 48, 3)
    with pytest.raises(ImageError, match=r"must be \[C, H, W\]"):
        imageio.load(torch.zeros(2, 3, 40, 48))
