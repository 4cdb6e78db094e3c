"""What one encode is asked for, checked once: a quality or a rate target, metadata, pixel limits.

Every front end takes the same keywords (``quality``, ``target_bpp`` / ``target_size`` /
``target_psnr``, ``metadata``, ``max_pixels``, ``warn_pixels``): :func:`aecodec.compress`,
:func:`aecodec.batch.compress_files`, :func:`aecodec.ratecontrol.compress_to_target` and
``aecodec compress``. Each builds one :class:`EncodeOptions` with :meth:`EncodeOptions.build`,
which applies the rules, and passes that object down::

    options = EncodeOptions.build(target_size=40_000, metadata="icc")
    options.target            # Target(kind='size', value=40000)
    EncodeOptions.build(5.5).quality                  # Quality(steps=550): integer hundredths
    EncodeOptions.build(3, target_bpp=0.5)            # ValueError: give either quality or ...

The rules: at most one target, and not together with a quality; a target is a finite positive
number up to :data:`MAX_TARGET` (a size a whole number of bytes); a quality has at most two
decimals (:func:`aecodec.container.quality_steps`; whether the model has it is the codec's
check, the one :meth:`aecodec.Codec.compress` runs); ``metadata`` is one of
:data:`aecodec.imageio.METADATA_CHOICES`. Messages name the parameters as the API does; the command
line passes its option names (``names=``), so the same sentence reads ``-q`` and
``--target-bpp`` there.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from aecodec import container
from aecodec.imageio import Metadata, check_metadata

__all__ = ["MAX_TARGET", "EncodeOptions", "Quality", "Target", "TargetKind"]

TargetKind = Literal["bpp", "size", "psnr"]
_KINDS: tuple[TargetKind, ...] = get_args(TargetKind)

MAX_TARGET = 1e12
"""The largest rate target: far beyond any image (a terabyte, a trillion bits per pixel or dB),
and small enough that no arithmetic on it overflows (``1e308`` bpp times the pixels would)."""


def _name(names: Mapping[str, str] | None, key: str) -> str:
    """How the caller calls parameter ``key`` (``quality``, ``target_bpp``, ...)."""
    return (names or {}).get(key, key)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True, order=True)
class Quality:
    """A quality in integer hundredths (:data:`aecodec.container.QUALITY_STEPS`): 550 is 5.5.

    Attributes:
        steps: the quality times 100.
    """

    steps: int

    @classmethod
    def of(cls, value: object, name: str = "quality") -> Quality:
        """The quality ``value`` (an int, a float or a numpy number with up to two decimals).

        Raises:
            TypeError: not a number.
            ValueError: not finite, absurdly large, or finer than a hundredth.
        """
        return cls(container.quality_steps(value, name))

    @property
    def value(self) -> float:
        """The number the codec and the header take: an ``int`` for a level (5), else 5.37."""
        return container.quality_from_steps(self.steps)

    def __str__(self) -> str:
        return str(self.value)

    @staticmethod
    def scale(top: int) -> list[float]:
        """Every quality from 1 to the level ``top`` in hundredths, ascending (1, 1.01, ...)."""
        steps = container.QUALITY_STEPS
        return [container.quality_from_steps(s) for s in range(steps, top * steps + 1)]


@dataclass(frozen=True)
class Target:
    """A rate target: the quality is searched per image (:mod:`aecodec.ratecontrol`).

    Attributes:
        kind: ``"bpp"`` (at most this many bits per pixel), ``"size"`` (at most this many
            bytes) or ``"psnr"`` (at least this PSNR in dB).
        value: the number, positive and finite; an ``int`` for a size.
    """

    kind: TargetKind
    value: float

    @property
    def name(self) -> str:
        """The keyword that gives it: ``target_bpp``, ``target_size`` or ``target_psnr``."""
        return f"target_{self.kind}"

    @classmethod
    def of(cls, kind: TargetKind, value: object, name: str | None = None) -> Target:
        """A checked target (``name``: the parameter, for the message).

        Raises:
            ValueError: not a real number, not finite and positive, over :data:`MAX_TARGET`,
                or a size that is not a whole number of bytes.
        """
        name = name or f"target_{kind}"
        number = math.nan
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond float's range
                number = math.inf
        if not (math.isfinite(number) and 0 < number <= MAX_TARGET):
            raise ValueError(
                f"a rate target must be a positive finite number (at most {MAX_TARGET:g}), "
                f"got {name}={_shown(value)}"
            )
        if kind != "size":
            return cls(kind, number)
        if not number.is_integer():
            raise ValueError(f"{name} must be a whole number of bytes, got {_shown(value)}")
        return cls(kind, int(number))

    @classmethod
    def from_keywords(
        cls,
        target_bpp: object = None,
        target_size: object = None,
        target_psnr: object = None,
        *,
        names: Mapping[str, str] | None = None,
    ) -> Target | None:
        """The one target given (``None`` for none), checked.

        Raises:
            ValueError: several targets, or one that :meth:`of` refuses.
        """
        given = {
            kind: value
            for kind, value in zip(_KINDS, (target_bpp, target_size, target_psnr), strict=True)
            if value is not None
        }
        if len(given) > 1:
            listed = ", ".join(_name(names, f"target_{k}") for k in given)
            raise ValueError(f"give at most {_one_of(names)}, got {listed}")
        if not given:
            return None
        ((kind, value),) = given.items()
        return cls.of(kind, value, _name(names, f"target_{kind}"))

    def max_bytes(self, pixels: int) -> int | None:
        """The size an image of ``pixels`` pixels may take (``None`` for a PSNR target)."""
        if self.kind == "size":
            return int(self.value)
        if self.kind == "bpp":
            return math.floor(self.value * pixels / 8)
        return None

    @property
    def psnr(self) -> float | None:
        """The PSNR to reach (dB), or ``None`` for a size or bpp target."""
        return self.value if self.kind == "psnr" else None


def _one_of(names: Mapping[str, str] | None) -> str:
    bpp, size, psnr = (_name(names, f"target_{k}") for k in _KINDS)
    return f"one of {bpp}, {size} and {psnr}"


@dataclass(frozen=True)
class EncodeOptions:
    """One encode's options, checked (build them with :meth:`build`).

    Attributes:
        quality: the quality; ``None`` for the model's default (or the target's search).
        target: a rate target, instead of a quality.
        metadata: ``"all"``, ``"icc"``, ``"exif"`` or ``"none"``.
        max_pixels: refuse larger images (``None``: :data:`aecodec.container.MAX_PIXELS`).
        warn_pixels: warn above this many pixels (``None``:
            :data:`aecodec.container.WARN_PIXELS`).
    """

    quality: Quality | None = None
    target: Target | None = None
    metadata: Metadata = "all"
    max_pixels: int | None = None
    warn_pixels: int | None = None

    def __post_init__(self) -> None:
        _refuse_both(self.quality, self.target, None)
        check_metadata(self.metadata)

    @classmethod
    def build(
        cls,
        quality: object = None,
        *,
        target_bpp: object = None,
        target_size: object = None,
        target_psnr: object = None,
        metadata: Metadata = "all",
        max_pixels: int | None = None,
        warn_pixels: int | None = None,
        names: Mapping[str, str] | None = None,
    ) -> EncodeOptions:
        """The options from the keywords every front end takes, checked once.

        Args:
            quality: a level or a number with up to two decimals; ``None``: the default.
            target_bpp: at most this many bits per pixel (whole file), instead of a quality.
            target_size: at most this many bytes.
            target_psnr: at least this PSNR (dB, RGB).
            metadata: ``"all"``, ``"icc"``, ``"exif"`` or ``"none"``.
            max_pixels: as for :meth:`aecodec.Codec.compress`.
            warn_pixels: as for :meth:`aecodec.Codec.compress`.
            names: how the caller names the parameters in messages (the command line:
                ``{"quality": "-q", "target_bpp": "--target-bpp", ...}``); default: as here.

        Raises:
            ValueError: several targets, a target with a quality, a target or quality that
                is not a valid number, an unknown ``metadata``.
            TypeError: a quality that is not a number.
        """
        target = Target.from_keywords(target_bpp, target_size, target_psnr, names=names)
        checked = None if quality is None else Quality.of(quality, _name(names, "quality"))
        _refuse_both(checked, target, names)
        return cls(checked, target, metadata, max_pixels, warn_pixels)

    @property
    def quality_value(self) -> float | None:
        """The quality as :meth:`aecodec.Codec.compress` takes it (``None``: the default)."""
        return None if self.quality is None else self.quality.value

    @property
    def limits(self) -> dict[str, int | None]:
        """``max_pixels`` and ``warn_pixels``, as keyword arguments."""
        return {"max_pixels": self.max_pixels, "warn_pixels": self.warn_pixels}

    def require_target(self) -> Target:
        """The target of a rate-controlled encode.

        Raises:
            ValueError: there is none.
        """
        if self.target is None:
            raise ValueError(f"give {_one_of(None)}")
        return self.target


def _refuse_both(
    quality: Quality | None, target: Target | None, names: Mapping[str, str] | None
) -> None:
    """The one home of "a quality or a target, not both"."""
    if quality is not None and target is not None:
        raise ValueError(
            f"give either {_name(names, 'quality')} or {_name(names, target.name)}, not both"
        )
