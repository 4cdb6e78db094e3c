"""The exceptions and warnings aecodec raises. One home, so every module raises the same types."""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class AecodecError(Exception):
    """Base class of every aecodec error."""


class FormatError(AecodecError, ValueError):
    """A bitstream is not a valid ``.aec`` file (truncated, corrupt, unsupported, too large).

    The message says what is wrong, e.g. ``"CRC32 mismatch: the file is corrupt"``.
    """


class ModelError(AecodecError, LookupError):
    """A model is unknown, missing, or its weights fail their sha256 check."""


class ImageError(AecodecError, ValueError):
    """An input image cannot be read or is not supported (empty, too large, not an image)."""


class AecodecWarning(UserWarning):
    """Base class of every warning aecodec issues; the message is one line a user can act on."""


class LargeImageWarning(AecodecWarning):
    """An image is above the warning threshold of the pixel limit (like Pillow's
    ``DecompressionBombWarning``): coding it takes a lot of memory and time.

    The threshold is :data:`aecodec.container.WARN_PIXELS` or the ``warn_pixels=`` argument.
    """


def warn(message: str, category: type[Warning] | None = None) -> None:
    """Issue an aecodec warning, attributed to the first caller outside the aecodec package.

    Args:
        message: one line saying what happened and what it means for the user.
        category: the warning class; :class:`AecodecWarning` by default.
    """
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    warnings.warn(message, category or AecodecWarning, stacklevel=level)
