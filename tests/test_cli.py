"""Tests of the ``aecodec`` command line: in-process with CliRunner, and via subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

import aecodec
from aecodec.cli.main import main

REPO = Path(__file__).resolve().parents[1]
W, H = 48, 40
RERUN = "exists; pass --force to overwrite it, or --skip-existing to leave it (a rerun)"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    """A training run shares the CPU: keep torch to one thread."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in its own directory so messages use short relative names."""
    monkeypatch.chdir(tmp_path)


def _pixels(mode: str, seed: int = 0) -> np.ndarray:
    """A small smooth image plus a little noise (cheap to code, not trivial)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    base = (x * 255 // (W - 1) + y * 3) % 256
    channels = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2}[mode]
    planes = [(base + 40 * c + rng.integers(0, 8, (H, W))) % 256 for c in range(channels)]
    if mode in ("RGBA", "LA"):
        planes[-1] = rng.integers(0, 256, (H, W))  # arbitrary alpha: must survive exactly
    arr = np.stack(planes, axis=-1).astype(np.uint8)
    return arr[..., 0] if channels == 1 else arr


def _make_png(path: Path, mode: str = "RGB", seed: int = 0) -> Path:
    Image.fromarray(_pixels(mode, seed), mode).save(path)
    return path


def run(*args: object) -> Result:
    """Invoke the CLI in-process; never lets a traceback through."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def _leftovers(directory: Path) -> list[str]:
    """Temporary files the atomic writer might have left behind."""
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".tmp"))


# --- round trips and output names -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_round_trip_keeps_mode_size_and_alpha(tmp_path: Path, mode: str) -> None:
    src = _make_png(tmp_path / f"img_{mode}.png", mode)
    before = src.read_bytes()

    result = run("compress", src.name)
    assert result.exit_code == 0, result.output
    assert result.output == ""
    aec = tmp_path / f"img_{mode}.aec"
    assert aec.read_bytes()[:4] == b"\x89AEC"
    assert src.read_bytes() == before  # the input is never modified

    result = run("decompress", aec.name, "-o", "out.png")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out.png") as img:
        assert img.mode == mode
        assert img.size == (W, H)
        if mode == "RGBA":
            np.testing.assert_array_equal(np.asarray(img)[..., 3], _pixels(mode)[..., 3])
    assert _leftovers(tmp_path) == []


def test_default_output_names_never_touch_the_original(tmp_path: Path) -> None:
    """`compress photo.png && decompress photo.aec` succeeds and leaves photo.png alone."""
    original = _make_png(tmp_path / "photo.png").read_bytes()
    assert run("compress", "photo.png").exit_code == 0
    assert (tmp_path / "photo.aec").is_file()

    result = run("decompress", "photo.aec")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "photo.png").read_bytes() == original
    with Image.open(tmp_path / "photo.aec.png") as img:
        assert img.format == "PNG"
        assert img.size == (W, H)


def test_compressing_an_aec_named_input_never_overwrites_it(tmp_path: Path) -> None:
    Image.fromarray(_pixels("RGB")).save(tmp_path / "odd.aec", format="PNG")  # misleading name
    before = (tmp_path / "odd.aec").read_bytes()
    assert run("compress", "odd.aec").exit_code == 0
    assert (tmp_path / "odd.aec").read_bytes() == before
    assert (tmp_path / "odd.aec.aec").read_bytes()[:4] == b"\x89AEC"


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_trailing_slash_means_a_new_folder(tmp_path: Path, command: str) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    src = "a.png" if command == "compress" else "a.aec"
    result = run(command, src, "-o", "new/deeper/")
    assert result.exit_code == 0, result.output
    name = "a.aec" if command == "compress" else "a.aec.png"
    assert [p.name for p in (tmp_path / "new" / "deeper").iterdir()] == [name]


def test_output_file(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    assert run("compress", "a.png", "-o", "sub/custom.bin").exit_code == 0
    assert (tmp_path / "sub" / "custom.bin").is_file()
    assert not (tmp_path / "a.aec").exists()

    assert run("decompress", "sub/custom.bin", "-o", "sub/back.png").exit_code == 0
    assert (tmp_path / "sub" / "back.png").is_file()


def test_output_directory_single_input(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    assert run("compress", "a.png", "-o", "out").exit_code == 0
    assert (tmp_path / "out" / "a.aec").is_file()


def test_output_directory_several_inputs(tmp_path: Path) -> None:
    for i, name in enumerate(["a", "b", "c"]):
        _make_png(tmp_path / f"{name}.png", seed=i)
    (tmp_path / "enc").mkdir()
    (tmp_path / "dec").mkdir()

    result = run("compress", "a.png", "b.png", "c.png", "-o", "enc")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["a.aec", "b.aec", "c.aec"]

    result = run("decompress", "enc/a.aec", "enc/b.aec", "enc/c.aec", "-o", "dec")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "dec").iterdir())
    assert names == ["a.aec.png", "b.aec.png", "c.aec.png"]


def test_several_inputs_need_an_existing_directory(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    _make_png(tmp_path / "b.png", seed=1)
    result = run("compress", "a.png", "b.png", "-o", "nodir")
    assert result.exit_code == 2
    assert "must be a folder" in result.stderr
    assert "-o nodir/" in result.stderr
    assert not (tmp_path / "nodir").exists()
    assert not (tmp_path / "a.aec").exists()


def test_same_output_twice_in_one_run(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "out").mkdir()
    _make_png(tmp_path / "one" / "x.png")
    _make_png(tmp_path / "two" / "x.png", seed=1)
    result = run("compress", "one/x.png", "two/x.png", "-o", "out", "--force")
    assert result.exit_code == 1
    assert _error_lines(result) == [
        "aecodec: error: out/x.aec: already written from another input in this run; "
        "not overwriting it"
    ]
    first = (tmp_path / "out" / "x.aec").read_bytes()
    assert run("compress", "one/x.png", "-o", "single.aec").exit_code == 0
    assert (tmp_path / "single.aec").read_bytes() == first


@pytest.mark.parametrize(
    ("suffix", "fmt"),
    [(".png", "PNG"), (".webp", "WEBP"), (".tiff", "TIFF"), (".bmp", "BMP"), (".qoi", "QOI")],
)
def test_decompress_format_follows_extension(tmp_path: Path, suffix: str, fmt: str) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    assert run("decompress", "a.aec", "-o", "ref.png").exit_code == 0
    result = run("decompress", "a.aec", "-o", f"out{suffix}")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / f"out{suffix}") as img, Image.open(tmp_path / "ref.png") as ref:
        assert img.format == fmt
        assert img.size == (W, H)
        # every format chosen without --output-quality is exact: the same pixels as the PNG
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), np.asarray(ref))


@pytest.mark.parametrize(("suffix", "fmt"), [(".jpg", "JPEG"), (".avif", "AVIF")])
def test_lossy_output_needs_an_explicit_quality(tmp_path: Path, suffix: str, fmt: str) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    result = run("decompress", "a.aec", "-o", f"out{suffix}")
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 1
    assert lines[0].startswith(f"aecodec: error: out{suffix}: {fmt} is lossy")
    assert "--output-quality" in lines[0]
    assert not (tmp_path / f"out{suffix}").exists()

    result = run("decompress", "a.aec", "-o", f"out{suffix}", "--output-quality", 90)
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / f"out{suffix}") as img:
        assert (img.format, img.size) == (fmt, (W, H))


def test_lossy_webp_only_with_quality(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    assert run("decompress", "a.aec", "-o", "exact.webp").exit_code == 0
    assert run("decompress", "a.aec", "-o", "lossy.webp", "--output-quality", 5).exit_code == 0
    exact = (tmp_path / "exact.webp").stat().st_size
    assert (tmp_path / "lossy.webp").stat().st_size < exact


def test_gif_output_is_refused(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    for extra in ((), ("--output-quality", 90)):
        result = run("decompress", "a.aec", "-o", "out.gif", *extra)
        assert result.exit_code == 1
        assert "256 colours" in result.stderr
        assert ".png" in result.stderr
    assert not (tmp_path / "out.gif").exists()


def test_rgba_to_jpeg_is_a_clear_error(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png", "RGBA")
    assert run("compress", "a.png").exit_code == 0
    result = run("decompress", "a.aec", "-o", "out.jpg", "--output-quality", 90)
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 1
    assert lines[0].startswith("aecodec: error: out.jpg: ")
    assert "alpha" in lines[0]
    assert not (tmp_path / "out.jpg").exists()


def test_unknown_output_extension(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    result = run("decompress", "a.aec", "-o", "out.nosuchformat")
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 1
    assert lines[0].startswith("aecodec: error: out.nosuchformat: ")
    assert not (tmp_path / "out.nosuchformat").exists()


# --- overwriting ------------------------------------------------------------------------------


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    existing = tmp_path / "a.aec"
    existing.write_bytes(b"precious")

    result = run("compress", "a.png")
    assert result.exit_code == 1
    assert _error_lines(result) == [f"aecodec: error: a.aec: {RERUN}"]
    assert existing.read_bytes() == b"precious"

    result = run("compress", "a.png", "--force")
    assert result.exit_code == 0, result.output
    assert existing.read_bytes()[:4] == b"\x89AEC"
    assert _leftovers(tmp_path) == []


def test_decompress_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    before = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.aec.png").write_bytes(b"precious")
    result = run("decompress", "a.aec")
    assert result.exit_code == 1
    assert _error_lines(result) == [f"aecodec: error: a.aec.png: {RERUN}"]
    assert (tmp_path / "a.aec.png").read_bytes() == b"precious"
    assert run("decompress", "a.aec", "--force").exit_code == 0
    with Image.open(tmp_path / "a.aec.png") as img:
        assert img.size == (W, H)
    assert (tmp_path / "a.png").read_bytes() == before


def test_refuses_output_equal_to_input(tmp_path: Path) -> None:
    src = _make_png(tmp_path / "a.png")
    before = src.read_bytes()
    result = run("compress", "a.png", "-o", "a.png", "--force")
    assert result.exit_code == 1
    assert "input" in result.stderr
    assert src.read_bytes() == before


# --- errors -----------------------------------------------------------------------------------


def test_batch_with_bad_files_keeps_going(tmp_path: Path) -> None:
    _make_png(tmp_path / "good1.png")
    (tmp_path / "x.png").write_text("this is not an image\n")
    (tmp_path / "dir.png").mkdir()
    _make_png(tmp_path / "good2.png", seed=1)

    result = run("compress", "good1.png", "x.png", "missing.png", "dir.png", "good2.png")
    assert result.exit_code == 1
    assert (tmp_path / "good1.aec").is_file()
    assert (tmp_path / "good2.aec").is_file()
    for bad in ("x", "missing", "dir"):
        assert not (tmp_path / f"{bad}.aec").exists()
    lines = _error_lines(result)
    assert len(lines) == 3
    for line, name in zip(lines, ["x.png", "missing.png", "dir.png"], strict=True):
        assert line.startswith(f"aecodec: error: {name}: ")
    assert result.stdout == ""
    assert _leftovers(tmp_path) == []


def test_decompress_batch_with_bad_files(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    (tmp_path / "junk.aec").write_bytes(b"not an aec file at all")
    (tmp_path / "folder.aec").mkdir()
    (tmp_path / "dec").mkdir()
    result = run("decompress", "junk.aec", "missing.aec", "folder.aec", "a.aec", "-o", "dec")
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 3
    for line, name in zip(lines, ["junk.aec", "missing.aec", "folder.aec"], strict=True):
        assert line.startswith(f"aecodec: error: {name}: ")
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["a.aec.png"]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_aec(tmp_path: Path, damage: str) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    data = bytearray((tmp_path / "a.aec").read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x55
    else:
        del data[len(data) - 7 :]
    (tmp_path / "a.aec").write_bytes(bytes(data))

    result = run("decompress", "a.aec", "-o", "out.png")
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 1
    assert lines[0].startswith("aecodec: error: a.aec: ")
    assert not (tmp_path / "out.png").exists()

    result = run("info", "a.aec")
    assert result.exit_code == 1
    assert len(_error_lines(result)) == 1
    assert result.stdout == ""
    assert _leftovers(tmp_path) == []


def test_invalid_quality_lists_valid_values(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    valid = aecodec.qualities()
    for bad in (0, 0.5, max(valid) + 1, max(valid) + 0.01):
        result = run("compress", "-q", str(bad), "a.png")
        assert result.exit_code == 2
        assert ", ".join(str(q) for q in valid) in result.stderr
        assert f"up to two decimals between 1 and {max(valid)}" in result.stderr
        assert not (tmp_path / "a.aec").exists()
    for text, message in (("4.555", "give at most two decimals"), ("nan", "finite")):
        result = run("compress", "-q", text, "a.png")
        assert result.exit_code == 2 and message in result.stderr


def test_fine_quality_from_the_command_line(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    result = run("compress", "a.png", "-q", "4.5", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["quality"] == 4.5
    data = (tmp_path / "a.aec").read_bytes()
    assert data == aecodec.compress(tmp_path / "a.png", quality=4.5)
    assert aecodec.compress(tmp_path / "a.png", quality=4.5) != aecodec.compress(
        tmp_path / "a.png", quality=4
    )
    result = run("info", "a.aec")
    fields = dict(re.split(r":\s+", line, maxsplit=1) for line in result.stdout.splitlines())
    assert fields["quality"] == "4.5 (between levels 4 and 5)"
    assert fields["format"] == "aecodec container v2"
    assert json.loads(run("info", "a.aec", "--json").stdout)["format_version"] == 2
    assert run("compress", "a.png", "-q", "4.0", "-o", "b.aec").exit_code == 0
    assert (tmp_path / "b.aec").read_bytes() == aecodec.compress(tmp_path / "a.png", quality=4)


def test_unknown_model(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    result = run("compress", "--model", "no-such-model", "a.png")
    assert result.exit_code == 2
    assert "no-such-model" in result.stderr
    for m in aecodec.models():
        assert m["name"] in result.stderr


def test_write_failure_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_png(tmp_path / "a.png")
    existing = tmp_path / "a.aec"
    existing.write_bytes(b"precious")

    def broken_replace(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    result = run("compress", "a.png", "--force")
    assert result.exit_code == 1
    lines = _error_lines(result)
    assert len(lines) == 1
    assert lines[0].startswith("aecodec: error: a.aec: ")
    assert "No space left on device" in lines[0]
    assert existing.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.aec", "a.png"]


def test_failure_mid_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png", "-o", "a.aec").exit_code == 0
    (tmp_path / "old.png").write_bytes(b"precious")

    def half_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        fp.write(b"\x89PNG partial")  # type: ignore[attr-defined]
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Image.Image, "save", half_save)
    result = run("decompress", "a.aec", "-o", "new.png")
    assert result.exit_code == 1
    assert "Input/output error" in result.stderr
    assert not (tmp_path / "new.png").exists()

    result = run("decompress", "a.aec", "-o", "old.png", "--force")
    assert result.exit_code == 1
    assert (tmp_path / "old.png").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.aec", "a.png", "old.png"]


def test_keyboard_interrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_png(tmp_path / "a.png")
    _make_png(tmp_path / "b.png", seed=1)
    assert run("compress", "a.png", "-o", "a.aec").exit_code == 0

    def interrupted_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        fp.write(b"\x89PNG partial")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    (tmp_path / "dec").mkdir()
    result = run("decompress", "a.aec", "a.aec", "-o", "dec")
    assert result.exit_code == 130
    assert _error_lines(result) == ["aecodec: interrupted"]
    assert list((tmp_path / "dec").iterdir()) == []
    assert _leftovers(tmp_path) == []


# --- verbose, info, models, version -----------------------------------------------------------


def test_verbose_lines(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    _make_png(tmp_path / "b.png", "L", seed=1)
    result = run("-v", "compress", "a.png", "b.png")
    assert result.exit_code == 0, result.output
    lines = _error_lines(result)
    assert len(lines) == 2
    for line, name in zip(lines, ["a", "b"], strict=True):
        m = re.fullmatch(
            rf"{name}\.png -> {name}\.aec: (\d+) bytes, (\d+\.\d{{3}}) bpp, q\d, \d+\.\d\d s",
            line,
        )
        assert m, line
        size = (tmp_path / f"{name}.aec").stat().st_size
        assert int(m.group(1)) == size
        assert float(m.group(2)) == pytest.approx(8 * size / (W * H), abs=1e-3)

    (tmp_path / "dec").mkdir()
    result = run("-v", "decompress", "a.aec", "b.aec", "-o", "dec")
    assert result.exit_code == 0, result.output
    lines = _error_lines(result)
    assert re.fullmatch(rf"a\.aec -> dec/a\.aec\.png: {W}x{H} RGB, \d+\.\d\d s", lines[0]), lines
    assert re.fullmatch(rf"b\.aec -> dec/b\.aec\.png: {W}x{H} L, \d+\.\d\d s", lines[1]), lines


def test_info_text_and_json(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png", "RGBA")
    quality = aecodec.qualities()[0]
    assert run("compress", "-q", quality, "a.png").exit_code == 0
    size = (tmp_path / "a.aec").stat().st_size

    result = run("info", "a.aec")
    assert result.exit_code == 0, result.output
    fields = dict(re.split(r":\s+", line, maxsplit=1) for line in result.stdout.splitlines())
    assert fields["size"] == f"{W}x{H}"
    assert fields["mode"].startswith("RGBA")
    assert fields["quality"] == str(quality)
    assert fields["bytes"] == str(size)
    assert float(fields["bpp"]) == pytest.approx(8 * size / (W * H), abs=1e-3)
    assert fields["model"].startswith(aecodec.models()[0]["name"])
    assert "tiles" in fields

    result = run("info", "--json", "a.aec")
    assert result.exit_code == 0, result.output
    header = json.loads(result.stdout)
    assert header["width"] == W
    assert header["height"] == H
    assert header["mode"] == "RGBA"
    assert header["quality"] == quality
    assert header["bytes"] == size


def test_info_missing_file() -> None:
    result = run("info", "nope.aec")
    assert result.exit_code == 1
    assert _error_lines(result) == ["aecodec: error: nope.aec: No such file or directory"]


def test_models() -> None:
    result = run("models")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "QUALITIES", "SIZE"]
    entries = aecodec.models()
    assert len(lines) == 1 + len(entries)
    for entry, line in zip(entries, lines[1:], strict=True):
        cells = line.split()
        assert cells[0] == entry["name"]
        assert ("*" in cells) == bool(entry["default"])
        assert entry["sha256"][:12] in cells
        q = entry["qualities"]
        assert f"{min(q)}-{max(q)}" in cells or ",".join(map(str, q)) in cells

    result = run("models", "--json")
    assert [m["name"] for m in json.loads(result.stdout)] == [m["name"] for m in entries]


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"aecodec {aecodec.__version__}"


# --- real subprocesses ------------------------------------------------------------------------


def _subprocess(*args: object) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_import_is_cheap() -> None:
    code = "import sys, aecodec.cli.main; assert 'torch' not in sys.modules, 'torch'"
    proc = _subprocess("-c", code)
    assert proc.returncode == 0, proc.stderr


def test_subprocess_compress(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    proc = _subprocess("-m", "aecodec", "compress", "a.png")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert (tmp_path / "a.aec").read_bytes()[:4] == b"\x89AEC"


def test_subprocess_decompress(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png", "RGBA")
    assert run("compress", "a.png").exit_code == 0
    proc = _subprocess("-m", "aecodec", "-v", "decompress", "a.aec", "-o", "b.png")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("a.aec -> b.png: 48x40 RGBA")
    with Image.open(tmp_path / "b.png") as img:
        assert (img.mode, img.size) == ("RGBA", (W, H))


def test_subprocess_error(tmp_path: Path) -> None:
    (tmp_path / "bad.aec").write_bytes(b"\x89AEC garbage")
    proc = _subprocess("-m", "aecodec", "decompress", "bad.aec")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("aecodec: error: bad.aec: ")
    assert not (tmp_path / "bad.aec.png").exists()


def test_demo_codes_the_bundled_photograph() -> None:
    """A fresh clone's first run codes a real photo (not a flattering synthetic gradient)."""
    result = run("demo")
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["image"].endswith("kodim23-384x256.png (384x256)")
    bpp = float(re.search(r"([\d.]+) bpp", lines["size"]).group(1))  # type: ignore[union-attr]
    psnr = float(lines["PSNR-RGB"].split()[0])
    # the default model at its default quality on this photo: ~0.54 bpp, ~32.5 dB
    assert 0.3 < bpp < 0.8
    assert 30.0 < psnr < 36.0


# --- per-file numbers, rate targets, metadata, pipes, parallel batches ------------------------


def test_json_and_psnr_per_file(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    result = run("compress", "a.png", "--json", "--psnr")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    size = (tmp_path / "a.aec").stat().st_size
    assert (record["input"], record["output"], record["bytes"]) == ("a.png", "a.aec", size)
    assert record["bpp"] == pytest.approx(8 * size / (W * H))
    decoded = np.asarray(aecodec.decompress(tmp_path / "a.aec"))
    from aecodec.metrics import psnr_rgb

    assert record["psnr"] == pytest.approx(psnr_rgb(_pixels("RGB"), decoded))
    result = run("-v", "compress", "a.png", "-o", "b.aec", "--psnr")
    assert re.fullmatch(
        r"a\.png -> b\.aec: \d+ bytes, [\d.]+ bpp, q\d, [\d.]+ dB, [\d.]+ s\n", result.stderr
    )
    result = run("decompress", "a.aec", "--json")
    record = json.loads(result.stdout)
    assert (record["output"], record["width"], record["mode"]) == ("a.aec.png", W, "RGB")


def test_target_size_reports_and_meets(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    sizes = {q: len(aecodec.compress(_pixels("RGB"), q)) for q in aecodec.qualities()}
    target = sizes[4] + (sizes[5] - sizes[4]) // 2
    result = run("compress", "a.png", "--target-size", target, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert 4 <= record["quality"] < 5 and record["target_met"]  # a fine quality (hundredths)
    assert sizes[4] <= record["bytes"] == (tmp_path / "a.aec").stat().st_size <= target
    result = run("compress", "a.png", "-o", "tiny.aec", "--target-size", "10")
    assert result.exit_code == 0
    assert "cannot be met" in result.stderr
    assert run("compress", "a.png", "-q", 3, "--target-bpp", 1).exit_code == 2
    assert run("compress", "a.png", "--target-size", "12X").exit_code == 2


def test_metadata_option(tmp_path: Path) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_pixels("RGB")).save(tmp_path / "a.png", icc_profile=icc)
    assert run("compress", "a.png", "-o", "all.aec").exit_code == 0
    assert run("compress", "a.png", "-o", "none.aec", "--metadata", "none").exit_code == 0
    assert aecodec.info(tmp_path / "all.aec")["has_icc"]
    assert not aecodec.info(tmp_path / "none.aec")["has_icc"]


def test_stdin_and_stdout(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    png = (tmp_path / "a.png").read_bytes()
    result = CliRunner().invoke(main, ["compress", "-"], input=png)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == aecodec.compress(tmp_path / "a.png")
    result = CliRunner().invoke(main, ["decompress", "-", "-o", "-"], input=result.stdout_bytes)
    assert result.exit_code == 0, result.output
    with Image.open(__import__("io").BytesIO(result.stdout_bytes)) as img:
        assert (img.format, img.size) == ("PNG", (W, H))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_info_several_files(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    _make_png(tmp_path / "b.png", "L")
    assert run("compress", "a.png", "b.png").exit_code == 0
    result = run("info", "a.aec", "b.aec", "--json")
    assert [h["mode"] for h in json.loads(result.stdout)] == ["RGB", "L"]
    result = run("info", "a.aec", "missing.aec", "b.aec")
    assert result.exit_code == 1
    assert result.stdout.count("size:") == 2
    assert "missing.aec" in result.stderr


def test_parallel_jobs_match_serial(tmp_path: Path) -> None:
    for i in range(3):
        _make_png(tmp_path / f"{i}.png", seed=i)
    result = run("compress", "0.png", "1.png", "2.png", "-j", 2, "--threads", 1, "-o", "par/")
    assert result.exit_code == 0, result.output
    for i in range(3):
        serial = aecodec.compress(tmp_path / f"{i}.png")
        assert (tmp_path / "par" / f"{i}.aec").read_bytes() == serial


def test_parallel_jobs_apply_pixel_limits_warnings_and_safe_writes(tmp_path: Path) -> None:
    """-j N (aecodec.batch) keeps --max-pixels, one-line warnings and no-overwrite writes."""
    _make_png(tmp_path / "a.png")
    Image.fromarray(_pixels("L").astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(tmp_path / "big.png")
    (tmp_path / "sub").mkdir()
    _make_png(tmp_path / "sub" / "a.png", seed=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept.aec").write_bytes(b"precious")
    _make_png(tmp_path / "kept.png")
    inputs = ["a.png", "deep.png", "big.png", "sub/a.png", "kept.png"]
    result = run("compress", *inputs, "-j", 2, "--threads", 1, "-o", "out", "--max-pixels", 4000)
    assert result.exit_code == 1
    lines = sorted(_error_lines(result))
    assert lines == sorted(
        [
            "aecodec: error: out/a.aec: already written from another input in this run; "
            "not overwriting it",
            f"aecodec: error: out/kept.aec: {RERUN}",
            "aecodec: error: big.png: image too large: width 80 x height 80 = 6400 pixels "
            "exceeds the limit of 4000 pixels; to code it anyway raise the limit "
            "(--max-pixels N)",
            "aecodec: warning: deep.png: 16-bit image reduced to 8 bits per channel for coding",
        ]
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.aec", "deep.aec", "kept.aec"]
    assert (tmp_path / "out" / "kept.aec").read_bytes() == b"precious"
    assert (tmp_path / "out" / "a.aec").read_bytes() == aecodec.compress(tmp_path / "a.png")


def test_parallel_jobs_with_rate_targets_match_serial(tmp_path: Path) -> None:
    """-j N with --target-*: each worker searches the quality of its file, as serially."""
    for i in range(3):
        _make_png(tmp_path / f"{i}.png", seed=i)
    names = ["0.png", "1.png", "2.png"]
    result = run("compress", *names, "-j", 2, "--threads", 1, "-o", "par/", "--target-bpp", 1.5)
    assert result.exit_code == 0, result.output
    result = run("compress", *names, "-o", "ser/", "--target-bpp", 1.5, "--json")
    serial = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["target_met"] and r["bpp"] <= 1.5 for r in serial)
    for i in range(3):
        assert (tmp_path / "par" / f"{i}.aec").read_bytes() == (
            tmp_path / "ser" / f"{i}.aec"
        ).read_bytes()
    # The PSNR a --target-psnr search measured is reported without --psnr, as serially.
    result = run("compress", *names, "-j", 2, "-o", "psnr/", "--target-psnr", 30, "--json")
    assert result.exit_code == 0, result.output
    records = {r["input"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert sorted(records) == names
    for r in records.values():
        assert r["target_met"] == (r["psnr"] >= 30) and r["trials"] >= 2
        assert aecodec.info(tmp_path / r["output"])["quality"] == r["quality"]
    result = run("compress", *names, "-j", 2, "-o", "small/", "--target-size", 10)
    assert result.exit_code == 0, result.output
    assert sorted(_error_lines(result)) == [
        f"aecodec: warning: {n}: --target-size 10 cannot be met; wrote quality 1" for n in names
    ]


def test_decompress_reports_psnr_against_a_reference(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    _make_png(tmp_path / "b.png", "L")
    assert run("compress", "a.png", "b.png", "-q", 4.25).exit_code == 0
    from aecodec.metrics import psnr_rgb

    want = psnr_rgb(_pixels("RGB"), np.asarray(aecodec.decompress(tmp_path / "a.aec")))
    result = run("decompress", "a.aec", "--psnr", "a.png", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["psnr"] == pytest.approx(want) and record["quality"] == 4.25
    result = run("decompress", "a.aec", "-o", "x.png", "--psnr", "a.png")
    assert result.exit_code == 0, result.output  # --psnr implies -v
    assert re.fullmatch(
        rf"a\.aec -> x\.png: {W}x{H} RGB, {want:.2f} dB, \d+\.\d\d s\n", result.stderr
    )
    result = run("decompress", "b.aec", "-o", "y.png", "--psnr", "b.png", "--json")
    grey = np.repeat(_pixels("L")[..., None], 3, -1)
    decoded = np.asarray(Image.open(tmp_path / "y.png").convert("RGB"))
    assert json.loads(result.stdout)["psnr"] == pytest.approx(psnr_rgb(grey, decoded))
    Image.fromarray(_pixels("RGB")[:20]).save(tmp_path / "small.png")
    result = run("decompress", "a.aec", "-o", "z.png", "--psnr", "small.png")
    assert result.exit_code == 1
    assert _error_lines(result) == [
        f"aecodec: error: small.png: the --psnr reference is {W}x20 but the decoded image is "
        f"{W}x{H}"
    ]
    assert not (tmp_path / "z.png").exists()  # checked before decoding
    assert run("decompress", "a.aec", "b.aec", "--psnr", "a.png").exit_code == 2
    assert run("decompress", "a.aec", "--psnr", "missing.png").exit_code == 2


def test_target_and_psnr_keep_pixel_limits_and_warn_once(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    result = run("compress", "a.png", "--target-size", "2K", "--psnr", "--warn-pixels", 100)
    assert result.exit_code == 0, result.output
    warnings_ = [line for line in _error_lines(result) if ": warning: " in line]
    assert warnings_ == [
        f"aecodec: warning: a.png: large image: {W}x{H} = {W * H} pixels is over the warning "
        f"threshold of 100 pixels (limit {2**28}); coding it takes minutes and GBs of memory "
        "(see --max-pixels N)"
    ]
    result = run("compress", "a.png", "-o", "b.aec", "--target-psnr", 20, "--max-pixels", 100)
    assert result.exit_code == 1
    assert "exceeds the limit of 100 pixels" in result.stderr
    assert not (tmp_path / "b.aec").exists()


def test_train_options_come_from_train_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from aecodec.cli import train as train_cli
    from aecodec.train import loop

    fields = {f.name for f in dataclasses.fields(loop.TrainConfig)}
    assert fields == set(train_cli.TRAIN_OPTIONS) | set(train_cli.NOT_OPTIONS)
    seen: list[tuple[loop.TrainConfig, bool, bool]] = []
    calls: list[dict[str, object]] = []

    def fake_train(cfg: loop.TrainConfig, resume: bool, progress: bool, **kw: object) -> str:
        seen.append((cfg, resume, progress))
        calls.append(kw)
        return "RUN"

    monkeypatch.setattr(loop, "train", fake_train)
    result = run(
        "train",
        "--run-dir",
        "r",
        "--steps",
        7,
        "--no-bf16",
        "--channels",
        8,
        "--lambdas",
        "0.01,0.05",
        "--no-linear-path",
        "--resume",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "run folder: RUN\n"
    cfg, resume, progress = seen[0]
    model = {"channels": 8, "linear_path": False, "lambdas": [0.01, 0.05]}
    expected = loop.TrainConfig(run="r", steps=7, bf16=False, model=model)
    assert (cfg, resume, progress) == (expected, True, False)
    assert calls[0] == {"new_steps": True, "minutes": None}  # --steps given: a new schedule
    run("train", "--resume", "--minutes", "2.5")
    assert seen[1][0] == loop.TrainConfig()  # every default is TrainConfig's
    assert calls[1] == {"new_steps": False, "minutes": 2.5}  # --resume keeps the run's steps


def test_bench_runs_from_the_checkout_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from aecodec.cli import bench

    result = run("bench", "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: aecodec bench" in result.stdout
    monkeypatch.setattr(bench, "CHECKOUT", Path("/nonexistent"))
    result = run("bench", "--help")
    assert result.exit_code == 1
    assert "not installed" in result.stderr and "pip install -e" in result.stderr


def test_library_does_not_import_the_cli() -> None:
    code = (
        "import sys, aecodec, aecodec.train; "
        "assert not {'cli', 'aecodec.cli'} & set(sys.modules), sorted(sys.modules)"
    )
    proc = _subprocess("-c", code)
    assert proc.returncode == 0, proc.stderr


def test_decompress_parses_the_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aecodec import container

    _make_png(tmp_path / "a.png", "RGBA")
    assert run("compress", "a.png").exit_code == 0
    parse = container._parse
    calls: list[int] = []

    def counting(data: object, max_pixels: int | None) -> object:
        calls.append(1)
        return parse(data, max_pixels)

    monkeypatch.setattr(container, "_parse", counting)
    result = run("decompress", "a.aec", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bytes"] == (tmp_path / "a.aec").stat().st_size
    assert len(calls) == 1
    aecodec.decompress(tmp_path / "a.aec")
    assert len(calls) == 2


# A PNG whose EXIF block is truncated: Pillow warns "Corrupt EXIF data" while reading it.
_CORRUPT_EXIF = b"MM\x00*\x00\x00\x00\x08\x00\x05" + b"\x00" * 3


def test_third_party_warning_is_one_line_and_the_batch_goes_on(tmp_path: Path) -> None:
    """A warning from another library (Pillow on a corrupt EXIF block) is reported as one
    line, once, and the next file of the batch is still coded (it used to loop forever)."""
    Image.fromarray(_pixels("RGB")).save(tmp_path / "a.png", exif=_CORRUPT_EXIF)
    _make_png(tmp_path / "b.png", seed=1)
    result = run("compress", "a.png", "b.png")
    assert result.exit_code == 0, result.output
    warnings_ = [line for line in _error_lines(result) if ": warning: " in line]
    assert len(warnings_) == 1, warnings_
    assert warnings_[0].startswith("aecodec: warning: a.png: UserWarning: Corrupt EXIF data.")
    assert (tmp_path / "a.aec").is_file() and (tmp_path / "b.aec").is_file()


def test_decompress_reports_each_warning_once_per_file_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warning issued while a file is decoded (here by another library, twice) is one line
    about that file, and the next file of the batch is still decoded."""
    import warnings

    from aecodec import output as outputs

    _make_png(tmp_path / "a.png")
    _make_png(tmp_path / "b.png", "L", seed=1)
    assert run("compress", "a.png", "b.png").exit_code == 0
    real = outputs.save_options

    def warning(fmt: object, img: Image.Image) -> object:
        for _ in range(2):
            warnings.warn("from elsewhere", RuntimeWarning, stacklevel=1)
        return real(fmt, img)  # type: ignore[arg-type]

    monkeypatch.setattr(outputs, "save_options", warning)
    result = run("decompress", "a.aec", "b.aec")
    assert result.exit_code == 0, result.output
    assert _error_lines(result) == [
        f"aecodec: warning: {name}.aec: RuntimeWarning: from elsewhere" for name in "ab"
    ]
    assert (tmp_path / "a.aec.png").is_file() and (tmp_path / "b.aec.png").is_file()


def test_output_as_the_last_argument_like_cjxl_and_djxl(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png", "out.aec").exit_code == 0
    assert (tmp_path / "out.aec").is_file() and not (tmp_path / "a.aec").exists()
    assert run("decompress", "out.aec", "back.png").exit_code == 0
    assert Image.open(tmp_path / "back.png").size == (W, H)
    result = run("compress", "a.png", "out.aec")  # an existing output is never overwritten
    assert result.exit_code == 1 and "--force" in result.stderr
    _make_png(tmp_path / "b.png", seed=1)
    result = run("compress", "a.png", "b.png", "new.aec")
    assert result.exit_code == 2 and "-o FOLDER/" in result.stderr
    assert not (tmp_path / "new.aec").exists()


def test_decompress_to_dev_null_decodes_and_discards(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    result = run("decompress", "a.aec", "-o", os.devnull)
    assert result.exit_code == 0, result.output


def test_rerun_with_skip_existing_leaves_finished_files_and_exits_0(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    _make_png(tmp_path / "b.png", seed=1)
    assert run("compress", "a.png").exit_code == 0
    before = (tmp_path / "a.aec").read_bytes()
    plain = run("compress", "a.png", "b.png")
    assert plain.exit_code == 1 and "--skip-existing" in plain.stderr
    result = run("compress", "a.png", "b.png", "--skip-existing")
    assert result.exit_code == 0, result.output
    assert "aecodec: skipped: a.aec: exists (--skip-existing)" in result.stderr
    assert (tmp_path / "a.aec").read_bytes() == before and (tmp_path / "b.aec").is_file()
    assert run("decompress", "a.aec", "--skip-existing").exit_code == 0
    again = run("decompress", "a.aec", "--skip-existing")
    assert again.exit_code == 0 and "skipped" in again.stderr


def test_aec_inputs_and_decoded_outputs_are_not_coded_again(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    assert run("decompress", "a.aec").exit_code == 0  # -> a.aec.png
    result = run("compress", "a.png", "a.aec.png", "-o", "out/", "--skip-existing")
    assert result.exit_code == 0, result.output
    assert "aecodec: skipped: a.aec.png: decoded from a.aec" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.aec"]
    (tmp_path / "copy.bin").write_bytes((tmp_path / "a.aec").read_bytes())
    refused = run("compress", "copy.bin", "-o", "c.aec")
    assert refused.exit_code == 1 and "is an .aec file: decompress it" in refused.stderr


def test_folders_as_inputs_mirror_their_tree_under_o(tmp_path: Path) -> None:
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    _make_png(tmp_path / "photos" / "a.png")
    _make_png(tmp_path / "photos" / "sub" / "b.png", seed=1)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    assert run("compress", "photos", "-o", "flat/").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "flat").iterdir()) == ["a.aec"]
    assert run("compress", "photos", "-r", "-o", "tree/").exit_code == 0
    assert (tmp_path / "tree" / "a.aec").is_file() and (
        tmp_path / "tree" / "sub" / "b.aec"
    ).is_file()
    assert run("decompress", "tree", "-r", "-o", "back/").exit_code == 0
    assert Image.open(tmp_path / "back" / "sub" / "b.aec.png").size == (W, H)
    (tmp_path / "empty").mkdir()
    result = run("compress", "empty")
    assert result.exit_code == 1 and "a folder with no images in it" in result.stderr


def test_quiet_reports_errors_only(tmp_path: Path) -> None:
    Image.fromarray(_pixels("RGB")).save(tmp_path / "a.png", exif=_CORRUPT_EXIF)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    result = run("compress", "a.png", "bad.png", "--quiet")
    assert result.exit_code == 1
    assert [line.split(":")[1].strip() for line in _error_lines(result)] == ["error"]
    loud = run("compress", "a.png", "-o", "b.aec")
    assert any(": warning: " in line for line in _error_lines(loud))


def test_target_psnr_json_reports_the_psnr_reached(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    result = run("compress", "a.png", "--target-psnr", 30, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["psnr"] >= 30 or record["target_met"] is False


def test_parallel_decompress_writes_what_the_serial_path_writes(tmp_path: Path) -> None:
    """`aecodec decompress -j 2`: each file decoded in a worker process, the same images and
    the same per-file numbers as one by one; an output that exists is reported and the rest
    of the batch is decoded."""
    for i in range(3):
        _make_png(tmp_path / f"{i}.png", "RGBA" if i == 1 else "RGB", seed=i)
    assert run("compress", "0.png", "1.png", "2.png", "-o", "aec/", "-q", 2).exit_code == 0
    names = [f"aec/{i}.aec" for i in range(3)]
    serial = run("decompress", *names, "-o", "ser/", "--json")
    assert serial.exit_code == 0, serial.output
    (tmp_path / "par").mkdir()
    (tmp_path / "par" / "2.aec.png").write_bytes(b"precious")
    result = run("decompress", *names, "-o", "par/", "-j", 2, "--threads", 1, "--json")
    assert result.exit_code == 1
    assert sorted(r["input"] for r in map(json.loads, result.stdout.splitlines())) == names[:2]
    assert "2.aec.png" in result.stderr and "--force" in result.stderr

    def numbers(output: str) -> dict[str, dict[str, object]]:
        records = (json.loads(line) for line in output.splitlines())
        return {
            r.pop("input"): {k: v for k, v in r.items() if k not in ("output", "seconds")}
            for r in records
        }

    want = numbers(serial.stdout)
    assert want["aec/1.aec"] == {
        "bytes": (tmp_path / "aec" / "1.aec").stat().st_size,
        "bpp": pytest.approx(8 * (tmp_path / "aec" / "1.aec").stat().st_size / (W * H)),
        "quality": 2,
        "width": W,
        "height": H,
        "mode": "RGBA",
    }
    assert numbers(result.stdout) == {n: want[n] for n in names[:2]}
    for i in range(2):
        ser = Image.open(tmp_path / "ser" / f"{i}.aec.png")
        par = Image.open(tmp_path / "par" / f"{i}.aec.png")
        assert par.mode == ser.mode and np.array_equal(np.asarray(par), np.asarray(ser))
    assert (tmp_path / "par" / "2.aec.png").read_bytes() == b"precious"


def test_decompress_j1_runs_the_batch_code_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-j 1 (the default), stdin and stdout go through aecodec.batch.decompress_files in this
    process (workers=0), as -j N goes through it in worker processes."""
    from aecodec import batch

    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    calls: list[object] = []
    real = batch.decompress_files

    def spy(jobs: object, **kwargs: object) -> object:
        calls.append(kwargs["workers"])
        return real(jobs, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(batch, "decompress_files", spy)
    assert run("decompress", "a.aec").exit_code == 0
    data = (tmp_path / "a.aec").read_bytes()
    result = CliRunner().invoke(main, ["decompress", "-", "--json"], input=data)
    assert result.exit_code == 0, result.output
    with Image.open(__import__("io").BytesIO(result.stdout_bytes)) as img:
        assert (img.format, img.size) == ("PNG", (W, H))
        decoded = np.asarray(img)
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(tmp_path / "a.aec.png")))
    record = json.loads(result.stderr)  # stdout carries the image
    assert (record["input"], record["output"], record["bytes"]) == ("-", "-", len(data))
    assert (record["width"], record["height"], record["mode"]) == (W, H, "RGB")
    assert calls == [0, 0]


def test_decompress_psnr_reference_errors_name_the_reference(tmp_path: Path) -> None:
    _make_png(tmp_path / "a.png")
    assert run("compress", "a.png").exit_code == 0
    (tmp_path / "notes.png").write_text("not an image")
    result = run("decompress", "a.aec", "-o", "x.png", "--psnr", "notes.png")
    assert result.exit_code == 1
    (line,) = _error_lines(result)
    assert line.startswith("aecodec: error: notes.png: cannot read the --psnr reference: ")
    assert not (tmp_path / "x.png").exists()


def test_the_library_speaks_python_and_the_cli_its_options() -> None:
    """Library messages name keyword arguments; the command line shows its options instead
    (cli.common.in_option_terms, applied where it prints)."""
    from aecodec import output
    from aecodec.cli.common import in_option_terms

    with pytest.raises(aecodec.ImageError, match=r"output_quality=1\.\.100") as info:
        output.image_format(Path("x.jpg"))
    assert "--output-quality 1..100" in in_option_terms(str(info.value))
    with pytest.raises(aecodec.FormatError, match=r"max_pixels=N") as too_big:
        aecodec.container.check_pixels(100, 100, max_pixels=10)
    shown = in_option_terms(str(too_big.value))
    assert "--max-pixels N" in shown and "max_pixels=" not in shown
