"""Image quality metrics on 8-bit arrays: the one home of PSNR (the CLI, rate control and the
benchmarks all use it)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_pair", "psnr_rgb"]


def check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check that two arrays are comparable 8-bit images.

    Args:
        a: uint8, shape (H, W, C) or (H, W).
        b: same shape and dtype.

    Returns:
        Both as numpy arrays.

    Raises:
        ValueError: Shapes or dtypes differ, or the arrays are not non-empty uint8 images.
    """
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
    a, b = check_pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)
