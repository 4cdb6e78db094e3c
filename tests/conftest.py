"""Shared fixtures: the tiny test model, sample images, paths to ../shared data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"

sys.path.insert(0, str(GOLDEN))

# Tests share 2 cores with whatever else runs; keep torch from oversubscribing.
torch.set_num_threads(1)


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


def smooth_image(width: int, height: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A photo-like test image: gradients plus mild noise, ``uint8 [H, W, C]``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = [128 + 100 * np.sin(xx / 17.0 + c) * np.cos(yy / 23.0 - c) for c in range(channels)]
    img = np.stack(base, -1) + rng.normal(0, 6, (height, width, channels))
    return np.clip(img, 0, 255).astype(np.uint8)


def kodak_path(name: str) -> Path:
    """A verified Kodak image (kodak/images, then ../shared/kodak), or skip the test."""
    from kodak.fetch import find_image

    p = find_image(name)
    if p is None:
        pytest.skip(f"{name} not in kodak/images or ../shared/kodak; run python -m kodak.fetch")
    return p
