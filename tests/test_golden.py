"""Golden files: bitstreams written by earlier versions must keep decoding bit-exactly."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from helpers import GOLDEN, make_golden
from PIL import Image

from aecodec.codec import Codec

EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(str(GOLDEN / "tiny.safetensors"), tile_size=32)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_golden_file_decodes_to_the_same_indices_and_pixels(codec: Codec, stem: str) -> None:
    want = EXPECTED[stem]
    data = (GOLDEN / f"{stem}.aec").read_bytes()
    assert hashlib.sha256(data).hexdigest() == want["sha256_file"], "golden file was modified"
    got = make_golden.tile_index_hashes(codec, data)
    assert got == want["tile_indices_sha256"], "decoded indices changed: format break"
    image = codec.decompress(data)
    assert image.mode == want["mode"] and list(image.size) == want["size"]
    ref = np.asarray(Image.open(GOLDEN / f"{stem}.png"), dtype=np.int16)
    # Indices are exact; pixels come from float convolutions and may differ by 1 on other CPUs.
    assert np.abs(np.asarray(image, dtype=np.int16) - ref).max() <= 1


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_encoder_still_writes_the_golden_bytes(codec: Codec, stem: str) -> None:
    name = stem.rsplit("_q", 1)[0]
    quality = float(stem.rsplit("_q", 1)[1])  # e.g. 1.37: format version 2
    arr = make_golden.sample_images()[name]
    assert codec.compress(arr, quality=quality) == (GOLDEN / f"{stem}.aec").read_bytes()
