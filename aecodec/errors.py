"""The exceptions and warnings aecodec raises. One home, so every module raises the same types."""

from __future__ import annotations


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
