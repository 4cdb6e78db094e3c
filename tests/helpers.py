"""What several test modules share (``from helpers import ...``): paths, the tiny model's
config, a photo-like image maker and the golden-file tools.

Fixtures live in ``conftest.py``; importable helpers live here, since a ``conftest`` is not
meant to be imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"


def _load_make_golden() -> ModuleType:
    """``tests/golden/make_golden.py``, a script (run it to regenerate the golden files) that
    is also the home of the tiny model's config and of the golden-file tools."""
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {GOLDEN / 'make_golden.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _load_make_golden()

#: The small model config of the tests (the one tests/golden/tiny.safetensors was made with):
#: the shipped path in miniature (1-D codebooks, checkerboard and activity contexts, linear path,
#: post-filter).
TINY: dict[str, Any] = dict(make_golden.TINY)

#: The same model in its plainest form (2-D codebooks, channel contexts only, no linear path or
#: post-filter): the 2-D quantizer path (aecodec-vq-small's), and the starting point of the
#: training tests that grow, widen or re-context a model.
TINY_PLAIN: dict[str, Any] = {
    **TINY,
    "group_dim": 2,
    "spatial_contexts": 0,
    "activity_edges": (),
    "linear_path": False,
    "refine_channels": 0,
}


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
