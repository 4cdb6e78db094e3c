"""Fixtures: the tiny test model and codecs; the slow marker of tests/test_train.py.

Importable helpers (paths, ``smooth_image``, the tiny config, golden-file tools) live in
``tests/helpers.py``.
"""

from __future__ import annotations

import pytest
import torch
from helpers import GOLDEN, ROOT, smooth_image

# Re-exported for tests/test_train.py, which still imports them from here.
__all__ = ["ROOT", "smooth_image"]

# Tests share 2 cores with whatever else runs; keep torch from oversubscribing.
torch.set_num_threads(1)

# Slow tests in modules maintained elsewhere (their own @pytest.mark.slow once they move there).
_SLOW_ELSEWHERE = frozenset(
    {"tests/test_train.py::test_torchrun_two_processes_then_single_process_resume"}
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("[")[0] in _SLOW_ELSEWHERE:
            item.add_marker(pytest.mark.slow)


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
