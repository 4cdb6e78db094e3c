"""Image quality metrics on 8-bit RGB arrays, computed the way CompressAI reports them."""

from __future__ import annotations

import math

import numpy as np

# PSNR has one home, in the library; re-exported here for the benchmarks.
from aecodec.metrics import check_pair as _check_pair
from aecodec.metrics import psnr_rgb

__all__ = ["MS_SSIM_MIN_SIDE", "bpp", "ms_ssim", "ms_ssim_db", "psnr_rgb"]

#: pytorch_msssim's 5-scale MS-SSIM with an 11-tap window needs the smaller side > 160 px.
MS_SSIM_MIN_SIDE = 161


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM (pytorch_msssim, 5 scales, Gaussian window 11, data_range 1) on RGB in [0, 1].

    Args:
        a: Reference, uint8, shape (H, W, C) or (H, W).
        b: Distorted, same shape and dtype.

    Returns:
        MS-SSIM in [0, 1]; ``nan`` when the smaller side is below 161 px, where 5-scale MS-SSIM
        is undefined.

    Raises:
        ValueError: Shapes or dtypes differ.
    """
    a, b = _check_pair(a, b)
    if min(a.shape[0], a.shape[1]) < MS_SSIM_MIN_SIDE:
        return math.nan
    import torch  # heavy: only when actually needed
    from pytorch_msssim import ms_ssim as _ms_ssim

    def to_tensor(x: np.ndarray) -> torch.Tensor:
        if x.ndim == 2:
            x = x[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).float()[None] / 255.0

    with torch.no_grad():
        return float(_ms_ssim(to_tensor(a), to_tensor(b), data_range=1.0, size_average=True))


def ms_ssim_db(value: float) -> float:
    """MS-SSIM expressed in dB, ``-10 log10(1 - ms_ssim)`` (``inf`` at 1)."""
    if math.isnan(value):
        return math.nan
    if value >= 1.0:
        return math.inf
    return -10.0 * math.log10(1.0 - value)


def bpp(num_bytes: int, width: int, height: int) -> float:
    """Bits per pixel of a whole file: ``8 * num_bytes / (width * height)``.

    Raises:
        ValueError: Non-positive dimensions or negative byte count.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if num_bytes < 0:
        raise ValueError(f"byte count must be >= 0, got {num_bytes}")
    return 8.0 * num_bytes / (width * height)
