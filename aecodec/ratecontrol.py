"""Rate control: the quality that meets a file-size, bpp or PSNR target (as ``cwebp -size/-psnr``).

The search runs real encodes over the fine quality scale (the levels and every hundredth
between them): for a size (or bpp) target it returns the highest quality whose file fits; for a
PSNR target the lowest quality that reaches it. Both rely only on size and PSNR growing with
quality::

    quality scale q[0] < q[1] < ... < q[n-1]        (1, 1.01, ..., 8 for 8 levels)
    size target:  highest i with bytes(q[i]) <= max_bytes     (else q[0], not met)
    PSNR target:  lowest  i with psnr(q[i])  >= target_psnr   (else q[n-1], not met)

It first bisects the levels (3-4 encodes for 8 levels), then searches the hundredths between
the two levels that bracket the target, guessing by linear interpolation (of log bytes, or of
PSNR, in the quality) and bisecting whenever a guess did not halve the bracket: about 3 more
encodes (6 in all on held-out images, landing 0.2-0.5 % under a size target on average;
docs/MODELS.md). ``fine=False`` searches the levels only, as before fine qualities existed.
The file returned was always encoded and checked, so a met size target is never exceeded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from aecodec import imageio
from aecodec.metrics import psnr_rgb
from aecodec.options import EncodeOptions, Quality

if TYPE_CHECKING:
    from aecodec.codec import Codec
    from aecodec.imageio import Metadata

__all__ = ["RateResult", "compress_to_target", "compress_with", "parse_size", "reach", "search"]

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


def _first_reaching(
    n: int,
    reached: Callable[[int], bool],
    key: Callable[[int], float],
    goal: float,
    known: Sequence[int] = (),
) -> int:
    """Smallest i in [0, n) with ``reached(i)`` (false...false true...true); n if none.

    Points in ``known`` cost nothing and narrow the bracket first. Between two probed points the
    next probe is where ``key`` (ascending in i, ``reached`` about when ``key >= goal``), linear
    between them, meets ``goal``; after a guess that did not halve the bracket, the midpoint.
    So the bracket halves at least every second probe.
    """
    lo, hi = -1, n  # reached(lo) is false, reached(hi) true; -1 and n are virtual
    for i in sorted(known):
        if reached(i):
            hi = min(hi, i)
    below = [i for i in known if i < hi and not reached(i)]
    lo = max(below, default=-1)
    interpolate = True
    while hi - lo > 1:
        width = hi - lo
        i = (lo + hi) // 2
        if interpolate and lo >= 0 and hi < n:
            k_lo, k_hi = key(lo), key(hi)
            if k_hi > k_lo:
                guess = lo + (goal - k_lo) / (k_hi - k_lo) * width
                i = min(max(round(guess), lo + 1), hi - 1)
        if reached(i):
            hi = i
        else:
            lo = i
        interpolate = not interpolate or hi - lo <= width // 2
    return hi


def search(
    encode: Callable[[float], bytes],
    qualities: Sequence[float],
    pixels: int,
    *,
    max_bytes: int | None = None,
    target_psnr: float | None = None,
    measure_psnr: Callable[[bytes], float] | None = None,
    levels: Sequence[float] = (),
) -> RateResult:
    """Search an ascending quality scale with real encodes (see the module docstring).

    Args:
        encode: quality -> ``.aec`` bytes.
        qualities: the scale, ascending (any numbers, e.g. 1, 1.01, ..., 8).
        pixels: width * height, for bpp.
        max_bytes: size target: the highest quality whose file has at most this many bytes.
        target_psnr: PSNR target (dB): the lowest quality whose decoded image reaches it.
        measure_psnr: ``.aec`` bytes -> PSNR of their decoding; needed with ``target_psnr``.
        levels: qualities of the scale bisected first (the model's levels); empty: none.

    Raises:
        ValueError: not exactly one target, an empty scale, or no ``measure_psnr`` for a PSNR
            target.
    """
    if not qualities:
        raise ValueError("the quality scale is empty")
    probe = _Probe(encode, qualities, measure_psnr)
    n = len(qualities)
    reached, key, goal = _criterion(probe, max_bytes, target_psnr)
    position = {q: i for i, q in enumerate(qualities)}
    coarse = [position[q] for q in levels]
    if coarse:  # bisect the levels, then search the whole scale knowing them
        j = _first_reaching(len(coarse), lambda j: reached(coarse[j]), lambda j: 0.0, 0.0)
        probed = [coarse[k] for k in (j - 1, j) if 0 <= k < len(coarse)]
        first = _first_reaching(n, reached, key, goal, known=probed)
    else:
        first = _first_reaching(n, reached, key, goal)
    if max_bytes is not None:
        best, met = max(first - 1, 0), first > 0
    else:
        best, met = min(first, n - 1), first < n
    data = probe.coded(best)
    return RateResult(
        data=data,
        quality=qualities[best],
        bytes=len(data),
        bpp=8 * len(data) / pixels,
        psnr=probe.psnr_at(best) if target_psnr is not None else None,
        met=met,
        trials=len(probe.files),
    )


class _Probe:
    """The encodes (and PSNRs) of a search, each made once, by index on the quality scale."""

    def __init__(
        self,
        encode: Callable[[float], bytes],
        qualities: Sequence[float],
        measure_psnr: Callable[[bytes], float] | None,
    ) -> None:
        self.encode, self.qualities, self.measure_psnr = encode, qualities, measure_psnr
        self.files: dict[int, bytes] = {}
        self.scores: dict[int, float] = {}

    def coded(self, i: int) -> bytes:
        if i not in self.files:
            self.files[i] = self.encode(self.qualities[i])
        return self.files[i]

    def psnr_at(self, i: int) -> float:
        if i not in self.scores:
            if self.measure_psnr is None:
                raise ValueError("a PSNR target needs measure_psnr")
            self.scores[i] = self.measure_psnr(self.coded(i))
        return self.scores[i]


def _criterion(
    probe: _Probe, max_bytes: int | None, target_psnr: float | None
) -> tuple[Callable[[int], bool], Callable[[int], float], float]:
    """``(reached, key, goal)`` of the one target: whether index i reaches it (a size: the
    file is over it; a PSNR: at or above it), a quantity that grows with i, and its goal.

    Raises:
        ValueError: not exactly one target.
    """
    if max_bytes is not None and target_psnr is None:
        limit = max_bytes
        size_key = lambda i: math.log(len(probe.coded(i)))  # noqa: E731
        return (lambda i: len(probe.coded(i)) > limit), size_key, math.log(limit + 1)
    if target_psnr is not None and max_bytes is None:
        goal = target_psnr
        return (lambda i: probe.psnr_at(i) >= goal), probe.psnr_at, goal
    raise ValueError("give exactly one target: a size (bytes or bpp) or a PSNR")


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
    fine: bool = True,
) -> RateResult:
    """Compress ``image`` with the quality that meets one target.

    Args:
        codec: the codec to use; its qualities from the first to the last level are searched.
        image: as for :meth:`aecodec.Codec.compress` (read and normalised once).
        target_bpp: at most this many bits per pixel (whole file).
        target_size: at most this many bytes (whole file).
        target_psnr: at least this PSNR in dB (RGB, decoded 8-bit).
        metadata: as for :meth:`aecodec.Codec.compress`.
        max_pixels: as for :meth:`aecodec.Codec.compress`.
        warn_pixels: as for :meth:`aecodec.Codec.compress` (warned once, not per trial).
        fine: search every hundredth between the levels (the file lands within about 0.5 %
            of a size target); False: only the levels (each about 1.5x the rate of the last).

    Returns:
        The chosen file and what it reached.

    Raises:
        ValueError: not exactly one target, or a target that is not positive (the rules of
            :class:`aecodec.options.EncodeOptions`).
        ImageError: the image cannot be read or is over the pixel limit.
    """
    options = EncodeOptions.build(
        target_bpp=target_bpp,
        target_size=target_size,
        target_psnr=target_psnr,
        metadata=metadata,
        max_pixels=max_pixels,
        warn_pixels=warn_pixels,
    )
    return reach(codec, image, options, fine=fine)


def reach(
    codec: Codec, image: imageio.ImageInput, options: EncodeOptions, *, fine: bool = True
) -> RateResult:
    """:func:`compress_to_target` with checked options (their target is required)."""
    target = options.require_target()
    pic = imageio.load(image, **options.limits)
    # Code a PIL image built once from the normalised picture (orientation already applied).
    img = imageio.to_pil(pic.rgb, pic.mode, pic.alpha, icc=pic.icc, exif=pic.exif)
    pixels = pic.width * pic.height
    # The limits were applied (and any warning issued) above; the trials code the same pixels.
    quiet = {"max_pixels": options.max_pixels, "warn_pixels": max(pixels, 1)}

    def measure(data: bytes) -> float:
        decoded = codec.decompress(data, **quiet)
        return psnr_rgb(pic.rgb, np.asarray(decoded.convert("RGB")))

    levels = codec.qualities
    return search(
        lambda q: codec.compress(img, q, metadata=options.metadata, **quiet),
        Quality.scale(levels[-1]) if fine else list(levels),
        pixels,
        max_bytes=target.max_bytes(pixels),
        target_psnr=target.psnr,
        measure_psnr=measure,
        levels=levels if fine else (),
    )


def compress_with(
    codec: Codec, image: imageio.ImageInput, options: EncodeOptions
) -> tuple[bytes, RateResult | None]:
    """Compress ``image`` as ``options`` ask: at their quality, or at the quality searched for
    their target; returns the file and, for a target, what the search reached."""
    if options.target is None:
        data = codec.compress(
            image, options.quality_value, metadata=options.metadata, **options.limits
        )
        return data, None
    reached = reach(codec, image, options)
    return reached.data, reached
