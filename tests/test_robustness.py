"""Hostile inputs: mutated bitstreams through the whole decoder, bad images, safe loading."""

from __future__ import annotations

import ast
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, smooth_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from aecodec import FormatError, ImageError, ModelError, container


@pytest.fixture(scope="module")
def valid_file(tiny_codec) -> bytes:
    return tiny_codec.compress(smooth_image(70, 50, 4), quality=2)


def _fix_crc(data: bytes) -> bytes:
    body = data[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def _decode_or_clean_error(codec, data: bytes) -> None:
    try:
        img = codec.decompress(data, max_pixels=1 << 20)
    except (FormatError, ModelError):
        return
    h = container.read_header(data, max_pixels=1 << 20)
    assert img.size == (h.width, h.height) and img.mode == h.mode


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_payloads_with_valid_crc_never_crash(tiny_codec, valid_file, data) -> None:
    """Corruption that slips past the CRC (recomputed) reaches the entropy decoder: it must
    give FormatError or a well-formed image, never another exception."""
    raw = bytearray(valid_file)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 5))
        raw[pos] = data.draw(st.integers(0, 255))
    _decode_or_clean_error(tiny_codec, _fix_crc(bytes(raw)))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(max_size=300))
def test_arbitrary_bytes_give_format_error(tiny_codec, blob) -> None:
    with pytest.raises((FormatError, ModelError)):
        tiny_codec.decompress(blob)
    with pytest.raises((FormatError, ModelError)):
        tiny_codec.decompress(container.MAGIC + blob)


def test_every_truncation_and_bit_flip_is_detected(tiny_codec, valid_file) -> None:
    for cut in range(len(valid_file)):
        with pytest.raises(FormatError):
            tiny_codec.decompress(valid_file[:cut])
    for i in range(0, len(valid_file) * 8, 7):
        raw = bytearray(valid_file)
        raw[i // 8] ^= 1 << (i % 8)
        with pytest.raises(FormatError):
            tiny_codec.decompress(bytes(raw))
    with pytest.raises(FormatError, match=r"trailing|CRC"):
        tiny_codec.decompress(valid_file + b"\0")


def test_alpha_bomb_is_refused(tiny_codec, valid_file) -> None:
    bs = container.unpack(valid_file)
    bomb = zlib.compress(b"\0" * (70 * 50 * 1000), 9)  # inflates far past width*height
    evil = container.Bitstream(bs.header, bs.tiles, alpha=bomb)
    with pytest.raises(FormatError, match="alpha"):
        tiny_codec.decompress(container.pack(evil))


def test_a_bad_alpha_plane_is_refused_before_the_colour_is_decoded(
    tiny_codec, valid_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cheap checks first: a 10 Mpx file with a 960-byte alpha plane (found by the fuzzer)
    took 17 s to decode its colour before the alpha was found wrong."""
    bs = container.unpack(valid_file)
    short = container.Bitstream(bs.header, bs.tiles, alpha=zlib.compress(b"\0" * 10))

    def colour(*args: object) -> None:
        raise AssertionError("the colour planes were decoded first")

    monkeypatch.setattr(tiny_codec, "_decode_colour", colour)
    with pytest.raises(FormatError, match="alpha plane has 10 bytes"):
        tiny_codec.decompress(container.pack(short))


def test_unknown_model_is_named(tiny_codec, valid_file) -> None:
    import aecodec

    bs = container.unpack(valid_file)
    h = bs.header
    other = container.Header(
        model="someone-elses-model",
        weights_hash=h.weights_hash,
        quality=h.quality,
        width=h.width,
        height=h.height,
        mode=h.mode,
        tile_width=h.tile_width,
        tile_height=h.tile_height,
    )
    data = container.pack(container.Bitstream(other, bs.tiles, alpha=bs.alpha))
    with pytest.raises(ModelError, match="someone-elses-model"):
        aecodec.decompress(data)
    with pytest.raises(ModelError, match="someone-elses-model"):
        tiny_codec.decompress(data)


def test_hostile_images(tiny_codec, tmp_path) -> None:
    png = tmp_path / "ok.png"
    Image.fromarray(smooth_image(40, 30)).save(png)
    jpg = tmp_path / "ok.jpg"
    Image.fromarray(smooth_image(40, 30)).save(jpg)
    trunc_png = tmp_path / "trunc.png"
    trunc_png.write_bytes(png.read_bytes()[:60])
    trunc_jpg = tmp_path / "trunc.jpg"
    trunc_jpg.write_bytes(jpg.read_bytes()[:200])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for bad in (trunc_png, trunc_jpg, text, empty):
        with pytest.raises(ImageError):
            tiny_codec.compress(bad, quality=1)
    with pytest.raises(IsADirectoryError):
        tiny_codec.compress(tmp_path, quality=1)
    with pytest.raises(FileNotFoundError):
        tiny_codec.compress(tmp_path / "missing.png", quality=1)


def test_decompression_bomb_image_is_refused(tiny_codec, tmp_path, monkeypatch) -> None:
    p = tmp_path / "big.png"
    Image.new("RGB", (200, 200)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 200x200 > 2x the limit
    with pytest.raises(ImageError, match=r"pixels|bomb"):
        tiny_codec.compress(p, quality=1)


# Every package pyproject.toml ships, plus the scripts next to them.
SHIPPED = ("aecodec", "benchmarks", "kodak", "scripts")  # aecodec includes aecodec/cli


def _unsafe_loads(tree: ast.AST) -> list[tuple[int, str]]:
    """Calls that can unpickle: torch.load without weights_only=True, pickle/dill/joblib loads,
    numpy loads with allow_pickle=True."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        kwargs = {k.arg: k.value for k in node.keywords}
        safe = kwargs.get("weights_only")
        if func.endswith("torch.load") or (func == "load" and "weights_only" in kwargs):
            if not (isinstance(safe, ast.Constant) and safe.value is True):
                found.append((node.lineno, func))
        elif re.fullmatch(r"(c?pickle|dill|joblib|marshal|shelve)\.(load|loads|open)", func):
            found.append((node.lineno, func))
        elif func in ("np.load", "numpy.load"):
            allow = kwargs.get("allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value is True:
                found.append((node.lineno, func))
    return found


def test_no_unpickling_in_any_shipped_module() -> None:
    """Pickle runs code: no module may load a user-supplied file with it (issue 10, item 5)."""
    offenders = []
    for package in SHIPPED:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            offenders += [f"{path.relative_to(ROOT)}:{n}: {f}" for n, f in _unsafe_loads(tree)]
    assert offenders == []


def test_unsafe_load_detector_finds_what_it_must() -> None:
    bad = [
        "torch.load(p)",
        "torch.load(p, weights_only=False)",
        "torch.load(p, map_location='cpu', weights_only=flag)",
        "pickle.load(fh)",
        "pickle.loads(b)",
        "np.load(p, allow_pickle=True)",
    ]
    for src in bad:
        assert _unsafe_loads(ast.parse(src)), src
    for src in ("torch.load(p, weights_only=True)", "np.load(p)", "json.load(fh)"):
        assert not _unsafe_loads(ast.parse(src)), src


def test_weights_sha256_is_checked_for_bundled_models(tmp_path) -> None:
    import json
    import shutil

    from aecodec.weightsfile import WEIGHTS_DIR, load_weights

    manifest = json.loads((WEIGHTS_DIR / "manifest.json").read_text())
    name = next(n for n, e in manifest["models"].items() if "file" in e)  # a file of its own
    entry = manifest["models"][name]
    shutil.copy(WEIGHTS_DIR / entry["file"], tmp_path / entry["file"])
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert load_weights(name, weights_dir=tmp_path).sha256 == entry["sha256"]
    with open(tmp_path / entry["file"], "r+b") as fh:
        fh.seek(-3, 2)
        fh.write(b"\x01\x02\x03")
    with pytest.raises(ModelError, match="sha256"):
        load_weights(name, weights_dir=tmp_path)


def test_assembled_model_is_rebuilt_byte_for_byte_and_checked(tmp_path) -> None:
    """A bundled model stored as tensors of other bundled files (aecodec-vq-base2) loads with
    the sha256 of its original file, and any change to its parts fails that check."""
    import json
    import shutil

    from aecodec.weightsfile import WEIGHTS_DIR, load_weights

    manifest = json.loads((WEIGHTS_DIR / "manifest.json").read_text())
    assembled = [n for n, e in manifest["models"].items() if "assembled" in e]
    if not assembled:
        pytest.skip("no assembled model is bundled")
    # One with a part file of its own tensors (aecodec-vq-base4z) if there is one.
    name = next(
        (n for n in assembled if "part" in manifest["models"][n]["assembled"]), assembled[0]
    )
    entry = manifest["models"][name]
    for source in entry["assembled"]["tensors"]:
        file = manifest["models"][source]["file"]
        shutil.copy(WEIGHTS_DIR / file, tmp_path / file)
    if "part" in entry["assembled"]:
        part = entry["assembled"]["part"]["file"]
        shutil.copy(WEIGHTS_DIR / part, tmp_path / part)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    weights = load_weights(name, weights_dir=tmp_path)
    assert weights.sha256 == entry["sha256"] and weights.name == name
    meta = json.loads(entry["assembled"]["metadata"])
    meta["default_quality"] = "1"
    entry["assembled"]["metadata"] = json.dumps(meta, sort_keys=True)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="sha256"):
        load_weights(name, weights_dir=tmp_path)


def test_load_model_is_ready_to_code_and_refuses_tensors_that_miss_the_config(
    tiny_model, tmp_path
) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from aecodec.weightsfile import load_model

    net, weights = load_model(tiny_model)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert weights.name == "aecodec-test-tiny" and "entropy.freqs" not in weights.tensors
    with safe_open(tiny_model, framework="numpy") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys() if k != "log_gain"}  # noqa: SIM118
    save_file(tensors, str(tmp_path / "partial.safetensors"), metadata=meta)
    with pytest.raises(ModelError, match=r"'aecodec-test-tiny' do not match .*log_gain"):
        load_model(str(tmp_path / "partial.safetensors"))


def test_input_is_never_modified(tiny_codec, tmp_path) -> None:
    arr = smooth_image(33, 21)
    before = arr.copy()
    tiny_codec.compress(arr, quality=1)
    np.testing.assert_array_equal(arr, before)
    p = tmp_path / "in.png"
    Image.fromarray(arr).save(p)
    raw = p.read_bytes()
    tiny_codec.compress(p, quality=1)
    assert p.read_bytes() == raw
    assert Path(p).stat().st_size == len(raw)


def test_bundled_weights_fit_the_60_mb_budget_and_every_model_loads_its_config() -> None:
    """The package ships at most 60 MB of weights (issue 16), and every bundled model, stored
    as a file or assembled from others, has a readable config."""
    import json

    from aecodec.weightsfile import WEIGHTS_DIR, read_config

    total = sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.safetensors"))
    assert total <= 60_000_000, f"bundled weights take {total:,} bytes"
    manifest = json.loads((WEIGHTS_DIR / "manifest.json").read_text())
    for name in manifest["models"]:
        assert read_config(name).name == name
