"""Bjontegaard delta rate (BD-rate) and delta PSNR (BD-PSNR), cubic-polynomial variant.

The classic method of Bjontegaard (VCEG-M33, 2001), as used by CompressAI and most learned-codec
papers: fit ``log(rate)`` as a cubic polynomial of the quality metric (PSNR) for each curve,
integrate both fits over the interval where the curves overlap, and turn the mean log-rate
difference into a percentage. BD-PSNR is the dual: fit quality as a cubic of ``log(rate)`` and
average the quality difference over the overlapping log-rate interval.

Negative BD-rate = the test codec needs fewer bits than the anchor at equal quality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["BDResult", "bd_psnr", "bd_rate"]

MIN_POINTS = 4


@dataclass(frozen=True)
class BDResult:
    """One Bjontegaard number and the interval it was integrated over.

    Attributes:
        value: BD-rate in percent (for :func:`bd_rate`) or BD-PSNR in dB (for :func:`bd_psnr`).
        low: Lower end of the overlap interval (quality units for BD-rate, bpp for BD-PSNR).
        high: Upper end of the overlap interval.
    """

    value: float
    low: float
    high: float


def _clean(rate: ArrayLike, dist: ArrayLike, label: str) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64).ravel()
    d = np.asarray(dist, dtype=np.float64).ravel()
    if r.shape != d.shape:
        raise ValueError(f"{label}: rate and quality have different lengths ({r.size} vs {d.size})")
    if r.size < MIN_POINTS:
        raise ValueError(
            f"{label}: BD metrics need at least {MIN_POINTS} rate-distortion points, got {r.size}"
        )
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(d))):
        raise ValueError(f"{label}: rates and qualities must be finite (drop lossless points)")
    if np.any(r <= 0):
        raise ValueError(f"{label}: rates must be > 0")
    if np.unique(d).size < MIN_POINTS or np.unique(r).size < MIN_POINTS:
        raise ValueError(f"{label}: need at least {MIN_POINTS} distinct points for a cubic fit")
    return r, d


def _mean_of_fit(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Mean value of the cubic least-squares fit y(x) over [lo, hi]."""
    poly = np.polyint(np.polyfit(x, y, 3))
    return float((np.polyval(poly, hi) - np.polyval(poly, lo)) / (hi - lo))


def _overlap(a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, float]:
    lo = max(float(a.min()), float(b.min()))
    hi = min(float(a.max()), float(b.max()))
    if not hi > lo:
        raise ValueError(
            f"the two curves do not overlap in {what} "
            f"(anchor {a.min():.4g}..{a.max():.4g}, test {b.min():.4g}..{b.max():.4g})"
        )
    return lo, hi


def bd_rate(
    anchor_rate: ArrayLike,
    anchor_psnr: ArrayLike,
    test_rate: ArrayLike,
    test_psnr: ArrayLike,
) -> BDResult:
    """Bjontegaard delta rate of ``test`` against ``anchor``, in percent.

    Args:
        anchor_rate: Rates of the anchor curve (bpp or bytes; any positive unit, same for both).
        anchor_psnr: Quality of the anchor curve (PSNR in dB, or another metric such as MS-SSIM
            in dB), same length as ``anchor_rate``.
        test_rate: Rates of the tested curve.
        test_psnr: Quality of the tested curve.

    Returns:
        ``BDResult(value=percent, low=q_lo, high=q_hi)`` where ``[q_lo, q_hi]`` is the overlapping
        quality interval the fits were integrated over. ``-50`` means half the bits.

    Raises:
        ValueError: Fewer than 4 points, non-finite or non-positive values, or no overlap.
    """
    ra, da = _clean(anchor_rate, anchor_psnr, "anchor")
    rt, dt = _clean(test_rate, test_psnr, "test")
    lo, hi = _overlap(da, dt, "quality")
    diff = _mean_of_fit(dt, np.log(rt), lo, hi) - _mean_of_fit(da, np.log(ra), lo, hi)
    return BDResult(value=(math.exp(diff) - 1.0) * 100.0, low=lo, high=hi)


def bd_psnr(
    anchor_rate: ArrayLike,
    anchor_psnr: ArrayLike,
    test_rate: ArrayLike,
    test_psnr: ArrayLike,
) -> BDResult:
    """Bjontegaard delta PSNR of ``test`` against ``anchor``, in dB (positive = better).

    Args:
        anchor_rate: Rates of the anchor curve (positive).
        anchor_psnr: Quality of the anchor curve.
        test_rate: Rates of the tested curve.
        test_psnr: Quality of the tested curve.

    Returns:
        ``BDResult(value=dB, low=rate_lo, high=rate_hi)`` with the overlapping rate interval
        (in the rate unit given, not in log).

    Raises:
        ValueError: Fewer than 4 points, non-finite or non-positive values, or no overlap.
    """
    ra, da = _clean(anchor_rate, anchor_psnr, "anchor")
    rt, dt = _clean(test_rate, test_psnr, "test")
    la, lt = np.log(ra), np.log(rt)
    lo, hi = _overlap(la, lt, "rate")
    diff = _mean_of_fit(lt, dt, lo, hi) - _mean_of_fit(la, da, lo, hi)
    return BDResult(value=diff, low=math.exp(lo), high=math.exp(hi))
