"""Bounded decoding (issue 10, item 1): the file never decides how much memory or time it takes.

Hostile files here are valid containers (right CRC, right model) with empty tile payloads:
an empty payload decodes to all-zero indices, so a few bytes can claim any size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from helpers import ROOT, smooth_image

import aecodec
from aecodec import FormatError, ImageError, container
from aecodec.codec import MARGIN, MAX_TILE_SIDE, MAX_TILES, SYNTHESIS_WINDOW, Codec
from aecodec.errors import LargeImageWarning


def empty_file(codec: Codec, width: int, height: int, tile_w: int, tile_h: int) -> bytes:
    """A valid file for ``codec`` whose tiles are all empty payloads."""
    h = container.Header(codec.name, codec.weights_hash, 1, width, height, "RGB", tile_w, tile_h)
    return container.pack(container.Bitstream(h, (b"",) * h.num_tiles))


@pytest.fixture
def synthesis_calls(tiny_codec, monkeypatch) -> list[tuple[int, ...]]:
    """Record the latent shape of every synthesis call of ``tiny_codec``."""
    calls: list[tuple[int, ...]] = []
    original = tiny_codec.net.decode_indices

    def spy(idx, q):
        calls.append(tuple(idx.shape))
        return original(idx, q)

    monkeypatch.setattr(tiny_codec.net, "decode_indices", spy)
    return calls


def test_a_57_byte_file_cannot_claim_a_4096_pixel_tile(tiny_codec) -> None:
    data = empty_file(tiny_codec, 4096, 4096, 4096, 4096)
    assert len(data) < 100
    with pytest.raises(FormatError, match=r"tile size 4096x4096 exceeds the decoder's limit"):
        tiny_codec.decompress(data)


def test_tile_side_limit_applies_to_the_tile_as_clipped_to_the_image(tiny_codec) -> None:
    # The format allows 65520-pixel tiles; on a 40x24 image the tile really is 48x32.
    img = tiny_codec.decompress(empty_file(tiny_codec, 40, 24, 65520, 65520))
    assert img.size == (40, 24)


def test_tile_count_is_bounded(tiny_codec) -> None:
    side = 16 * 17  # 17 x 17 = 289 tiles of 16x16 in a small file
    data = empty_file(tiny_codec, side, side, 16, 16)
    with pytest.raises(FormatError, match=rf"289 tiles exceed the decoder's limit of {MAX_TILES}"):
        tiny_codec.decompress(data)


def test_synthesis_runs_in_fixed_windows_whatever_the_tile_size(
    tiny_codec, synthesis_calls
) -> None:
    data = empty_file(tiny_codec, 2048, 48, 2048, 48)  # one 2048x48 tile
    assert tiny_codec.decompress(data).size == (2048, 48)
    s = tiny_codec.config.downsampling
    biggest = (SYNTHESIS_WINDOW + 2 * MARGIN) // s
    assert synthesis_calls and max(c[-1] for c in synthesis_calls) <= biggest
    assert len(synthesis_calls) == -(-2048 // SYNTHESIS_WINDOW) > 1  # windows, not one tile


def test_tiny_tiles_do_not_multiply_synthesis_work(tiny_codec, synthesis_calls) -> None:
    data = empty_file(tiny_codec, 256, 64, 32, 32)  # 16 tiles of 32x32
    assert tiny_codec.decompress(data).size == (256, 64)
    assert len(synthesis_calls) == 1


def test_many_small_tiles_are_refused_from_the_header(tiny_codec, tiny_model) -> None:
    """Each tile has a fixed entropy-decoding cost: one tile per 4096 pixels (at least 16)."""
    from aecodec.codec import max_tiles

    assert max_tiles(64, 48) == 16 and max_tiles(512, 512) == 80 and max_tiles(9000, 9000) == 256
    data = empty_file(tiny_codec, 512, 512, 32, 32)  # 256 tiles of 32x32
    with pytest.raises(FormatError, match=r"256 tiles of 32x32 for a 512x512 image exceed the "):
        tiny_codec.decompress(data)
    with pytest.raises(ImageError, match=r"needs 256 tiles, over the limit of 80"):
        Codec(tiny_model, tile_size=32).compress(np.zeros((512, 512, 3), np.uint8), quality=1)


def test_thin_images_are_synthesized_in_few_windows(tiny_codec, synthesis_calls) -> None:
    from aecodec.codec import synthesis_windows

    assert len(synthesis_windows(1, 2_097_152)) == 32  # not 2,048 windows of 1x1024
    assert synthesis_windows(768, 512) == [(0, 0, 768, 512)]
    data = empty_file(tiny_codec, 16, 4096, 16, 1024)
    assert tiny_codec.decompress(data).size == (16, 4096)
    assert len(synthesis_calls) == 1


def test_windowed_synthesis_matches_whole_image_synthesis(tiny_codec) -> None:
    """Windows with a margin join exactly: the same pixels as one whole-image synthesis."""
    import torch

    arr = smooth_image(600, 40)  # two synthesis windows, several tiles
    data = tiny_codec.compress(arr, quality=2)
    out = np.asarray(tiny_codec.decompress(data), dtype=np.int16)
    bs = container.unpack(data)
    h = bs.header
    s = tiny_codec.config.downsampling
    from aecodec.entropy import decode_indices
    from aecodec.imageio import tiles

    grid = np.zeros((tiny_codec.config.num_groups, -(-h.height // s), -(-h.width // s)), np.int64)
    for (x, y, w, th), payload in zip(
        tiles(h.width, h.height, h.tile_width, h.tile_height), bs.tiles, strict=True
    ):
        level = int(h.quality) - 1
        idx = decode_indices(payload, tiny_codec.tables, level, -(-th // s), -(-w // s))
        grid[:, y // s : y // s + idx.shape[1], x // s : x // s + idx.shape[2]] = idx
    with torch.inference_mode():
        whole = tiny_codec.net.decode_indices(torch.from_numpy(grid[None]), h.quality - 1)
    ref = whole[0, :, : h.height, : h.width].mul(255).round().to(torch.uint8).permute(1, 2, 0)
    assert np.abs(out - ref.numpy().astype(np.int16)).max() <= 1


def test_pixel_limit_warns_then_refuses(tiny_codec) -> None:
    data = empty_file(tiny_codec, 64, 32, 64, 32)  # 2048 pixels
    with pytest.warns(LargeImageWarning, match=r"64x32 = 2048 pixels is over the warning"):
        tiny_codec.decompress(data, warn_pixels=2047)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tiny_codec.decompress(data, warn_pixels=2048).size == (64, 32)
    with pytest.raises(FormatError, match=r"exceeds the limit of 2047 pixels.*max_pixels=N"):
        tiny_codec.decompress(data, max_pixels=2047)


def test_pixel_limit_defaults_and_module_globals(tiny_codec, monkeypatch) -> None:
    assert container.WARN_PIXELS == 2**26 < container.MAX_PIXELS == 2**28
    data = empty_file(tiny_codec, 64, 32, 64, 32)
    monkeypatch.setattr(container, "WARN_PIXELS", 100)
    with pytest.warns(LargeImageWarning):
        tiny_codec.decompress(data)
    with pytest.raises(ValueError, match="warn_pixels must be a positive int"):
        tiny_codec.decompress(data, warn_pixels=0)


def test_public_decompress_passes_the_limits() -> None:
    codec = aecodec.get_codec()
    data = empty_file(codec, 32, 32, 32, 32)
    with pytest.warns(LargeImageWarning):
        aecodec.decompress(data, warn_pixels=1000)
    with pytest.raises(FormatError, match="exceeds the limit of 1000 pixels"):
        aecodec.decompress(data, max_pixels=1000)


def test_encoder_writes_only_what_the_decoder_accepts(tiny_model) -> None:
    with pytest.raises(
        ValueError, match=rf"tile_size must be a multiple of 16 in 16..{MAX_TILE_SIDE}"
    ):
        Codec(tiny_model, tile_size=MAX_TILE_SIDE + 16)
    codec = Codec(tiny_model, tile_size=16)
    with pytest.raises(ImageError, match=r"needs 1089 tiles, over the limit of 87"):
        codec.compress(np.zeros((528, 528, 3), np.uint8), quality=1)


_PEAK_SCRIPT = r"""
import resource, sys, time
import aecodec
from aecodec import container
codec = aecodec.get_codec()
h = container.Header(codec.name, codec.weights_hash, 1, 4096, 4096, "RGB", 2048, 2048)
data = container.pack(container.Bitstream(h, (b"",) * h.num_tiles))
t = time.perf_counter()
img = aecodec.decompress(data)
assert img.size == (4096, 4096)
print(len(data), time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


@pytest.mark.hostile
def test_worst_tiling_decodes_in_bounded_memory() -> None:
    """A 69-byte file claiming 4096x4096 in the largest tiles allowed: peak RSS < 1.5 GB.


    Before windowed synthesis, a 4096x4096 tile peaked at 4.7 GB (issue 10)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
        check=True,
    )
    size, seconds, peak_mb = (float(v) for v in res.stdout.split())
    assert size < 100
    assert peak_mb < 1500, f"peak RSS {peak_mb:.0f} MB"
    assert seconds < 120, f"{seconds:.0f} s"  # measured 18 s on a loaded 2-core machine


def test_hostile_tiling_is_refused_before_loading_a_model() -> None:
    """aecodec.decompress checks the tiling from the header: no torch, no weights, ~ms."""
    out = _torch_free(
        "h = container.Header(name, sha, 1, 4096, 4096, 'RGB', 4096, 4096)\n"
        "data = container.pack(container.Bitstream(h, (b'',)))\n"
        "try:\n"
        "    aecodec.decompress(data)\n"
        "except aecodec.FormatError as exc:\n"
        "    print(exc)\n"
    )
    assert "tile size 4096x4096 exceeds the decoder's limit" in out


def _torch_free(body: str) -> str:
    """Run ``body`` in a fresh interpreter after binding ``name`` and ``sha`` (the default
    model and its stream hash), assert it never imported torch, and return its stdout."""
    script = (
        "import sys, aecodec\n"
        "from aecodec import container\n"
        "from aecodec.weightsfile import default_model_name, read_manifest\n"
        "name = default_model_name()\n"
        "sha = bytes.fromhex(read_manifest()['models'][name]['sha256'][:16])\n"
        + body
        + "assert 'torch' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_other_weights_and_impossible_qualities_are_refused_before_loading_a_model() -> None:
    """A file naming other weights of a bundled model, or a quality beyond its levels, is
    refused from the manifest and metadata alone: no torch, no weights."""
    lines = _torch_free(
        "for weights, quality in ((b'12345678', 1), (sha, 200)):\n"
        "    h = container.Header(name, weights, quality, 64, 64, 'RGB', 64, 64)\n"
        "    try:\n"
        "        aecodec.decompress(container.pack(container.Bitstream(h, (b'',))))\n"
        "    except (aecodec.FormatError, aecodec.ModelError) as exc:\n"
        "        print(type(exc).__name__ + ': ' + str(exc))\n"
    ).splitlines()
    assert lines[0].startswith("ModelError: the file was made by other weights of model")
    assert lines[1].startswith("FormatError: quality 200 is out of range for model")
