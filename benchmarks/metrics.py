"""Image quality metrics on 8-bit RGB arrays, computed the way CompressAI reports them."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MS_SSIM_MIN_SIDE", "bpp", "ms_ssim", "ms_ssim_db", "psnr_rgb"]

#: pytorch_msssim's 5-scale MS-SSIM with an 11-tap window needs the smaller side > 160 px.
MS_SSIM_MIN_SIDE = 161


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {a.dtype} and {b.dtype}")
    if a.ndim not in (2, 3) or a.size == 0:
        raise ValueError(f"expected a non-empty HxW or HxWxC image, got shape {a.shape}")
    return a, b


def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR over all pixels and channels of two 8-bit images (peak 255).

    Args:
        a: Reference, uint8, shape (H, W, C) or (H, W).
        b: Distorted, same shape and dtype.

    Returns:
        PSNR in dB; ``math.inf`` for identical images.

    Raises:
        ValueError: Shapes or dtypes differ, or the arrays are not uint8 images.
    """
    a, b = _check_pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


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
