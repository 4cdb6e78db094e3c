"""The codec path end to end: sizes, modes, alpha, determinism, errors, the public API."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import ROOT, kodak_path, smooth_image
from PIL import Image

import aecodec
from aecodec import FormatError, ModelError, container


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (61, 47), (769, 513)])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_round_trip_keeps_size_mode_and_exact_alpha(tiny_codec, size, mode) -> None:
    w, h = size
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = smooth_image(w, h, channels)
    img = Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode)
    out = tiny_codec.decompress(tiny_codec.compress(img, quality=2))
    assert out.size == (w, h)
    assert out.mode == mode
    if mode == "RGBA":
        np.testing.assert_array_equal(np.asarray(out)[:, :, 3], arr[:, :, 3])


def test_default_model_round_trip_quality(default_codec) -> None:
    arr = smooth_image(96, 80)
    data = default_codec.compress(arr)
    out = np.asarray(default_codec.decompress(data))
    assert out.shape == arr.shape
    assert psnr(arr, out) > 20.0


def test_kodim23_default_quality_above_26db() -> None:
    path = kodak_path("kodim23.png")
    data = aecodec.compress(path)
    out = aecodec.decompress(data)
    ref = np.asarray(Image.open(path).convert("RGB"))
    assert out.size == (768, 512) and out.mode == "RGB"
    assert psnr(ref, np.asarray(out)) > 26.0


def test_bundled_sample_photo_rate_and_quality_increase_with_quality() -> None:
    """The shipped photo (no Kodak download needed): every step up in quality costs bytes and
    buys PSNR, and the default quality lands where the README's results say."""
    from aecodec.data import SAMPLE_SIZE, sample_image

    ref = np.asarray(Image.open(sample_image()).convert("RGB"))
    assert ref.shape == (SAMPLE_SIZE[1], SAMPLE_SIZE[0], 3)
    sizes, psnrs = [], []
    for q in (1, aecodec.DEFAULT_QUALITY, aecodec.qualities()[-1]):
        data = aecodec.compress(sample_image(), q)
        sizes.append(len(data))
        psnrs.append(psnr(ref, np.asarray(aecodec.decompress(data))))
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    assert psnrs == sorted(psnrs)
    assert psnrs[1] > 30.0


def test_inputs_numpy_pil_and_path_agree(tiny_codec, tmp_path) -> None:
    arr = smooth_image(40, 30)
    p = tmp_path / "x.png"
    Image.fromarray(arr).save(p)
    a = tiny_codec.compress(arr, quality=1)
    assert tiny_codec.compress(Image.fromarray(arr), quality=1) == a
    assert tiny_codec.compress(p, quality=1) == a
    assert tiny_codec.compress(str(p), quality=1) == a


def test_mode_conversions(tiny_codec) -> None:
    pal = Image.fromarray(smooth_image(20, 10)).convert("P")
    assert tiny_codec.decompress(tiny_codec.compress(pal, quality=1)).mode == "RGB"
    la = Image.fromarray(smooth_image(20, 10, 2), "LA")
    out = tiny_codec.decompress(tiny_codec.compress(la, quality=1))
    assert out.mode == "LA"
    np.testing.assert_array_equal(np.asarray(out)[:, :, 1], np.asarray(la)[:, :, 1])
    with pytest.warns(UserWarning, match="16-bit"):
        data = tiny_codec.compress(np.full((8, 8), 40000, dtype=np.uint16), quality=1)
    assert tiny_codec.decompress(data).mode == "L"


def test_exif_orientation_applied(tiny_codec, tmp_path) -> None:
    img = Image.fromarray(smooth_image(30, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif.tobytes())
    out = tiny_codec.decompress(tiny_codec.compress(p, quality=1))
    assert out.size == (20, 30)


def test_icc_profile_carried(tiny_codec) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = Image.fromarray(smooth_image(16, 16))
    img.info["icc_profile"] = icc
    assert tiny_codec.decompress(tiny_codec.compress(img, quality=1)).info["icc_profile"] == icc


def test_compress_is_byte_identical_across_calls_and_threads(tiny_codec) -> None:
    arr = smooth_image(90, 70)
    first = tiny_codec.compress(arr, quality=2)
    assert tiny_codec.compress(arr, quality=2) == first
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: tiny_codec.compress(arr, quality=2), range(8)))
    assert all(r == first for r in results)


_DECODE_SCRIPT = """
import sys, hashlib, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
import aecodec
data = open(sys.argv[2], 'rb').read()
if sys.argv[3] == 'decode':
    print(hashlib.sha256(np.asarray(aecodec.decompress(data)).tobytes()).hexdigest())
else:
    from PIL import Image
    print(hashlib.sha256(aecodec.compress(Image.open(sys.argv[2]))).hexdigest())
"""


def _run(threads: int, path: str, what: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run(
        [sys.executable, "-c", _DECODE_SCRIPT, str(threads), path, what],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=True,
    )
    return res.stdout.strip()


def test_decoding_and_encoding_identical_across_processes_and_thread_counts(tmp_path) -> None:
    arr = smooth_image(200, 136)
    src = tmp_path / "src.png"
    Image.fromarray(arr).save(src)
    enc = {_run(t, str(src), "encode") for t in (1, 2, 4)}
    assert len(enc) == 1, "encoding differs between thread counts"
    aec = tmp_path / "x.aec"
    aec.write_bytes(aecodec.compress(arr))
    dec = {_run(t, str(aec), "decode") for t in (1, 2, 4)}
    assert len(dec) == 1, "decoded pixels differ between thread counts"


def test_invalid_quality_and_input_errors(tiny_codec) -> None:
    with pytest.raises(ValueError, match=r"quality 99 is not available; choose 1\.\.2"):
        tiny_codec.compress(smooth_image(8, 8), quality=99)
    with pytest.raises(ValueError, match=r"quality 2\.5 is not available; choose 1\.\.2"):
        tiny_codec.compress(smooth_image(8, 8), quality=2.5)
    with pytest.raises(ValueError, match=r"quality 0\.99 is not available"):
        tiny_codec.compress(smooth_image(8, 8), quality=0.99)
    with pytest.raises(ValueError, match="finer than the format stores; give at most two dec"):
        tiny_codec.compress(smooth_image(8, 8), quality=1.505)
    with pytest.raises(TypeError, match="quality must be a number"):
        tiny_codec.compress(smooth_image(8, 8), quality="1")
    with pytest.raises(aecodec.ImageError, match="shape"):
        tiny_codec.compress(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(aecodec.ImageError, match="no pixels"):
        tiny_codec.compress(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(TypeError):
        tiny_codec.compress(12345)


def test_fine_quality_round_trip_is_deterministic_and_whole_levels_unchanged(tiny_codec) -> None:
    arr = smooth_image(61, 47)
    data = tiny_codec.compress(arr, quality=1.37)
    header = container.read_header(data)
    assert (header.quality, header.format_version, data[4]) == (1.37, 2, 2)
    assert aecodec.info(data)["quality"] == 1.37
    assert tiny_codec.compress(arr, quality=1.37) == data
    out = tiny_codec.decompress(data)
    assert out.size == (61, 47) and out.mode == "RGB"
    whole = tiny_codec.compress(arr, quality=2)
    assert tiny_codec.compress(arr, quality=2.0) == whole and whole[4] == 1
    assert tiny_codec.compress(arr, quality=np.float32(2)) == whole


def test_fine_quality_out_of_the_models_range_is_refused_on_decode(tiny_codec) -> None:
    bs = container.unpack(tiny_codec.compress(smooth_image(20, 20), quality=1.5))
    header = dataclasses.replace(bs.header, quality=2.5)  # between level 2 and a level 3
    data = container.pack(dataclasses.replace(bs, header=header))
    with pytest.raises(FormatError, match=r"quality 2\.5 is out of range for model"):
        tiny_codec.decompress(data)


def test_fine_qualities_sit_between_their_levels(default_codec) -> None:
    from aecodec.data import sample_image

    ref = np.asarray(Image.open(sample_image()).convert("RGB"))[:128, :192]
    sizes, psnrs = [], []
    for q in (4, 4.3, 4.7, 5):
        data = default_codec.compress(ref, q)
        sizes.append(len(data))
        psnrs.append(psnr(ref, np.asarray(default_codec.decompress(data))))
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert psnrs == sorted(psnrs)


def test_file_from_another_model_names_it(tiny_codec, default_codec) -> None:
    data = tiny_codec.compress(smooth_image(16, 16), quality=1)
    with pytest.raises(ModelError, match="aecodec-test-tiny"):
        default_codec.decompress(data)
    with pytest.raises(ModelError, match="aecodec-test-tiny"):
        aecodec.decompress(data)


def test_corrupt_file_raises_format_error(tiny_codec) -> None:
    data = bytearray(tiny_codec.compress(smooth_image(16, 16), quality=1))
    data[len(data) // 2] ^= 0x10
    with pytest.raises(FormatError):
        tiny_codec.decompress(bytes(data))
    with pytest.raises(FormatError):
        aecodec.decompress(b"")


def test_pixel_limit_enforced_on_decode(tiny_codec) -> None:
    data = tiny_codec.compress(smooth_image(40, 40), quality=1)
    with pytest.raises(FormatError, match=r"max_pixels|MAX_PIXELS|limit"):
        tiny_codec.decompress(data, max_pixels=1000)


def test_public_api_surface() -> None:
    qs = aecodec.qualities()
    assert qs == sorted(qs) and len(qs) >= 6
    assert aecodec.DEFAULT_QUALITY in qs
    names = [m["name"] for m in aecodec.models()]
    assert any(m["default"] for m in aecodec.models())
    info = aecodec.info(aecodec.compress(smooth_image(33, 17), quality=qs[0]))
    assert info["width"] == 33 and info["height"] == 17 and info["model"] in names
    assert info["bpp"] == pytest.approx(8 * info["bytes"] / (33 * 17))


def test_codec_is_picklable(tiny_codec) -> None:
    clone = pickle.loads(pickle.dumps(tiny_codec))
    arr = smooth_image(20, 20)
    assert clone.compress(arr, quality=1) == tiny_codec.compress(arr, quality=1)


def test_container_header_matches_input(tiny_codec) -> None:
    data = tiny_codec.compress(smooth_image(70, 33, 4), quality=2)
    h = container.read_header(data)
    assert (h.width, h.height, h.mode, h.quality) == (70, 33, "RGBA", 2)
    assert h.model == "aecodec-test-tiny"


def test_tiles_join_without_seams() -> None:
    """PSNR in 16-pixel bands around tile borders is within 0.5 dB of the rest."""
    from aecodec.codec import Codec

    arr = smooth_image(384, 256, seed=5)
    tile = 128
    codec = Codec(tile_size=tile)
    out = np.asarray(codec.decompress(codec.compress(arr, quality=codec.qualities[-2])))
    assert aecodec.info(codec.compress(arr))["num_tiles"] == 6
    err = (arr.astype(np.float64) - out) ** 2
    band = np.zeros(arr.shape[:2], dtype=bool)
    for b in range(tile, arr.shape[1], tile):
        band[:, b - 8 : b + 8] = True
    for b in range(tile, arr.shape[0], tile):
        band[b - 8 : b + 8, :] = True

    def db(mask: np.ndarray) -> float:
        return 10 * np.log10(255.0**2 / err[mask].mean())

    assert abs(db(band) - db(~band)) < 0.5


def _compress_in_worker(args: tuple) -> bytes:
    codec, arr = args
    return codec.compress(arr, quality=2)


def test_codec_works_from_several_processes(tiny_codec) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    arrs = [smooth_image(30 + i, 20, seed=i) for i in range(4)]
    serial = [tiny_codec.compress(a, quality=2) for a in arrs]
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        parallel = list(pool.map(_compress_in_worker, [(tiny_codec, a) for a in arrs]))
    assert parallel == serial


@pytest.mark.parametrize("model", ["aecodec-vq-base", "aecodec-vq-small"])
def test_files_of_earlier_default_models_still_decode(model: str) -> None:
    """Files written by the earlier default models, with the code of 2026-11-25 before the
    entropy-model change (weights format 1), decode with today's default API to the same
    pixels (within 1: the synthesis is float arithmetic)."""
    data = (ROOT / "tests" / "golden" / "earlier-models" / f"{model}_q3.aec").read_bytes()
    assert aecodec.info(data)["model"] == model
    got = np.asarray(aecodec.decompress(data), dtype=np.int16)
    want = np.asarray(
        Image.open(ROOT / "tests" / "golden" / "earlier-models" / f"{model}_q3.png"), dtype=np.int16
    )
    assert got.shape == (64, 96, 3)
    assert np.abs(got - want).max() <= 1


@pytest.mark.parametrize("model", ["aecodec-vq-base", "aecodec-vq-small"])
def test_compacted_weights_keep_the_hash_their_files_carry(model: str) -> None:
    """aecodec-vq-base and -small were re-written in weights format 2 (no training logits,
    same floats and integers): their files carry the first bytes of the *original* file's
    sha256, which the manifest keeps as stream_hash, and new files carry it too."""
    from aecodec.codec import Codec
    from aecodec.weightsfile import read_manifest

    entry = read_manifest()["models"][model]
    codec = Codec(model)
    assert codec.weights_hash.hex() == entry["stream_hash"] != entry["sha256"][:16]
    old = (ROOT / "tests" / "golden" / "earlier-models" / f"{model}_q3.aec").read_bytes()
    assert container.read_header(old).weights_hash == codec.weights_hash
    assert container.read_header(
        codec.compress(smooth_image(32, 32, seed=1), quality=2)
    ).weights_hash == (codec.weights_hash)
