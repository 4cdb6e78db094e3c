"""Large images: a 24-megapixel photo codes in bounded memory (peak RSS under 3 GB)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import ROOT

_SCRIPT = r"""
import sys, numpy as np, torch
torch.set_num_threads(2)
import aecodec
h, w = 4000, 6000
yy = np.arange(h, dtype=np.int32)[:, None]
xx = np.arange(w, dtype=np.int32)[None, :]
img = np.empty((h, w, 3), dtype=np.uint8)
img[:, :, 0] = ((xx // 7 + yy // 11) % 256).astype(np.uint8)
img[:, :, 1] = ((xx * yy // 4096) % 256).astype(np.uint8)
img[:, :, 2] = (128 + 100 * np.sin(xx / 50.0)).astype(np.uint8)
data = aecodec.compress(img, quality=aecodec.qualities()[0])
out = aecodec.decompress(data)
assert out.size == (w, h) and out.mode == "RGB", out
# VmHWM: this process's own peak (ru_maxrss would include the parent's RSS at the fork: a
# pytest process holding gigabytes made this test fail with 5.6 GB it never used).
with open("/proc/self/status") as f:
    peak_mb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
print(f"{len(data)} {peak_mb:.0f}")
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_24_megapixel_image_in_bounded_memory() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    res = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=1200,
        check=True,
    )
    size, peak_mb = (float(v) for v in res.stdout.split())
    assert size > 0
    assert peak_mb < 3000, f"peak RSS {peak_mb:.0f} MB"
