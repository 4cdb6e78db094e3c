"""Golden files: bitstreams written by earlier versions must keep decoding bit-exactly."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from conftest import GOLDEN
from PIL import Image

from aecodec import container, imageio
from aecodec.codec import Codec
from aecodec.entropy import decode_indices

EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(str(GOLDEN / "tiny.safetensors"), tile_size=32)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_golden_file_decodes_to_the_same_indices_and_pixels(codec: Codec, stem: str) -> None:
    want = EXPECTED[stem]
    data = (GOLDEN / f"{stem}.aec").read_bytes()
    assert hashlib.sha256(data).hexdigest() == want["sha256_file"], "golden file was modified"
    bs = container.unpack(data)
    h = bs.header
    got = []
    for (_, _, w, th), payload in zip(
        imageio.tiles(h.width, h.height, h.tile_width, h.tile_height), bs.tiles, strict=True
    ):
        idx = decode_indices(payload, codec.tables, h.quality - 1, -(-th // 16), -(-w // 16))
        got.append(hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest())
    assert got == want["tile_indices_sha256"], "decoded indices changed: format break"
    image = codec.decompress(data)
    assert image.mode == want["mode"] and list(image.size) == want["size"]
    ref = np.asarray(Image.open(GOLDEN / f"{stem}.png"), dtype=np.int16)
    # Indices are exact; pixels come from float convolutions and may differ by 1 on other CPUs.
    assert np.abs(np.asarray(image, dtype=np.int16) - ref).max() <= 1


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_encoder_still_writes_the_golden_bytes(codec: Codec, stem: str) -> None:
    import make_golden

    name = stem.rsplit("_q", 1)[0]
    quality = int(stem.rsplit("_q", 1)[1])
    arr = make_golden.sample_images()[name]
    assert codec.compress(arr, quality=quality) == (GOLDEN / f"{stem}.aec").read_bytes()
