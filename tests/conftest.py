"""Fixtures: the tiny test model and codecs.

Importable helpers (paths, ``smooth_image``, the tiny config, golden-file tools) live in
``tests/helpers.py``.
"""

from __future__ import annotations

import pytest
import torch
from helpers import GOLDEN

from aecodec import runtime

# Tests share 2 cores with whatever else runs; keep torch and ONNX Runtime from oversubscribing.
torch.set_num_threads(1)
runtime.set_threads(1)


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """Path of the committed tiny random model (tests/golden/tiny.safetensors)."""
    return str(GOLDEN / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_codec(tiny_model: str):
    from aecodec.codec import Codec

    return Codec(tiny_model, tile_size=64)


@pytest.fixture(scope="session")
def default_codec():
    import aecodec

    return aecodec.get_codec()
