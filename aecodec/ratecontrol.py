"""Rate control: the quality that meets a file-size, bpp or PSNR target (as ``cwebp -size/-psnr``).

The search runs real encodes, bisecting over the model's quality scale: for a size (or bpp)
target it returns the highest quality whose file fits; for a PSNR target the lowest quality that
reaches it. Both rely only on size and PSNR growing with quality. The scale is any ascending
sequence handed to :func:`search`, so a finer (e.g. fractional) quality scale plugs in by passing
its values and an ``encode`` that accepts them::

    quality scale q[0] < q[1] < ... < q[n-1]
    size target:  highest i with bytes(q[i]) <= max_bytes     (else q[0], not met)
    PSNR target:  lowest  i with psnr(q[i])  >= target_psnr   (else q[n-1], not met)

About log2(n) + 1 encodes (4 for the 8 qualities of the bundled models).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from aecodec import imageio
from aecodec.metrics import psnr_rgb

if TYPE_CHECKING:
    from aecodec.codec import Codec
    from aecodec.output import Metadata

__all__ = ["RateResult", "compress_to_target", "parse_size", "search"]

_SUFFIXES = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2}


@dataclass(frozen=True)
class RateResult:
    """The outcome of a rate-controlled encode.

    Attributes:
        data: the chosen ``.aec`` file.
        quality: the quality it was coded at.
        bytes: ``len(data)``.
        bpp: bits per pixel of the whole file.
        psnr: PSNR (dB, RGB) of the decoded image; ``None`` unless the target was a PSNR.
        met: whether the target is met (if not, ``data`` is the closest quality: the lowest for
            a size target, the highest for a PSNR target).
        trials: number of encodes the search ran.
    """

    data: bytes
    quality: float
    bytes: int
    bpp: float
    psnr: float | None
    met: bool
    trials: int


def parse_size(text: str) -> int:
    """Parse a byte count with an optional suffix: ``"40000"``, ``"40K"``, ``"1.5M"`` (K = 1024).

    Raises:
        ValueError: not a positive size.
    """
    s = text.strip().upper()
    num = s.rstrip("KMIB")
    suffix = s[len(num) :]
    if suffix not in _SUFFIXES:
        raise ValueError(f"size {text!r}: unknown suffix; use bytes, K or M (e.g. 40K)")
    try:
        value = float(num) * _SUFFIXES[suffix]
    except ValueError:
        msg = f"size {text!r} is not a number of bytes (e.g. 40000, 40K, 1.5M)"
        raise ValueError(msg) from None
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"size {text!r} must be at least 1 byte")
    return int(value)


def _first_true(n: int, pred: Callable[[int], bool]) -> int:
    """Smallest i in [0, n) with pred(i), for pred false...false true...true; n if none."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def search(
    encode: Callable[[float], bytes],
    qualities: Sequence[float],
    pixels: int,
    *,
    max_bytes: int | None = None,
    target_psnr: float | None = None,
    measure_psnr: Callable[[bytes], float] | None = None,
) -> RateResult:
    """Bisect an ascending quality scale with real encodes.

    Args:
        encode: quality -> ``.aec`` bytes.
        qualities: the scale, ascending (any numbers; integers for today's models).
        pixels: width * height, for bpp.
        max_bytes: size target: the highest quality whose file has at most this many bytes.
        target_psnr: PSNR target (dB): the lowest quality whose decoded image reaches it.
        measure_psnr: ``.aec`` bytes -> PSNR of their decoding; needed with ``target_psnr``.

    Raises:
        ValueError: not exactly one target, an empty scale, or no ``measure_psnr`` for a PSNR
            target.
    """
    if not qualities:
        raise ValueError("the quality scale is empty")
    cache: dict[int, bytes] = {}
    scores: dict[int, float] = {}

    def coded(i: int) -> bytes:
        if i not in cache:
            cache[i] = encode(qualities[i])
        return cache[i]

    def psnr_at(i: int) -> float:
        if i not in scores:
            if measure_psnr is None:
                raise ValueError("a PSNR target needs measure_psnr")
            scores[i] = measure_psnr(coded(i))
        return scores[i]

    n = len(qualities)
    if max_bytes is not None and target_psnr is None:
        limit = max_bytes
        too_big = _first_true(n, lambda i: len(coded(i)) > limit)
        best, met = max(too_big - 1, 0), too_big > 0
    elif target_psnr is not None and max_bytes is None:
        goal = target_psnr
        reached = _first_true(n, lambda i: psnr_at(i) >= goal)
        best, met = min(reached, n - 1), reached < n
    else:
        raise ValueError("give exactly one target: a size (bytes or bpp) or a PSNR")
    data = coded(best)
    return RateResult(
        data=data,
        quality=qualities[best],
        bytes=len(data),
        bpp=8 * len(data) / pixels,
        psnr=psnr_at(best) if target_psnr is not None else None,
        met=met,
        trials=len(cache),
    )


def compress_to_target(
    codec: Codec,
    image: imageio.ImageInput,
    *,
    target_bpp: float | None = None,
    target_size: int | None = None,
    target_psnr: float | None = None,
    metadata: Metadata = "all",
    max_pixels: int | None = None,
    warn_pixels: int | None = None,
) -> RateResult:
    """Compress ``image`` with the quality that meets one target.

    Args:
        codec: the codec to use; its :attr:`~aecodec.Codec.qualities` are searched.
        image: as for :meth:`aecodec.Codec.compress` (read and normalised once).
        target_bpp: at most this many bits per pixel (whole file).
        target_size: at most this many bytes (whole file).
        target_psnr: at least this PSNR in dB (RGB, decoded 8-bit).
        metadata: as for :meth:`aecodec.Codec.compress`.
        max_pixels: as for :meth:`aecodec.Codec.compress`.
        warn_pixels: as for :meth:`aecodec.Codec.compress` (warned once, not per trial).

    Returns:
        The chosen file and what it reached.

    Raises:
        ValueError: not exactly one target, or a target that is not positive.
        ImageError: the image cannot be read or is over the pixel limit.
    """
    given = [t for t in (target_bpp, target_size, target_psnr) if t is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of target_bpp, target_size and target_psnr")
    if not (isinstance(given[0], (int, float)) and math.isfinite(given[0]) and given[0] > 0):
        raise ValueError(f"a rate target must be a positive number, got {given[0]!r}")
    pic = imageio.load(image, max_pixels=max_pixels, warn_pixels=warn_pixels)
    # Code a PIL image built once from the normalised picture (orientation already applied).
    img = imageio.to_pil(pic.rgb, pic.mode, pic.alpha, icc=pic.icc, exif=pic.exif)
    pixels = pic.width * pic.height
    # The limits were applied (and any warning issued) above; the trials code the same pixels.
    quiet = max(pixels, 1)
    max_bytes = None
    if target_size is not None:
        max_bytes = int(target_size)
    elif target_bpp is not None:
        max_bytes = math.floor(target_bpp * pixels / 8)

    def measure(data: bytes) -> float:
        decoded = codec.decompress(data, max_pixels=max_pixels, warn_pixels=quiet)
        return psnr_rgb(pic.rgb, np.asarray(decoded.convert("RGB")))

    return search(
        lambda q: codec.compress(
            img, int(q), metadata=metadata, max_pixels=max_pixels, warn_pixels=quiet
        ),
        codec.qualities,
        pixels,
        max_bytes=max_bytes,
        target_psnr=target_psnr,
        measure_psnr=measure,
    )
