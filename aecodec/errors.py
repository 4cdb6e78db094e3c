"""The exceptions and warnings aecodec raises. One home, so every module raises the same types."""

from __future__ import annotations

import contextvars
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

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


_collector: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "aecodec_warnings", default=None
)


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Collect the messages of aecodec's warnings instead of issuing them, in this context only.

    Unlike ``warnings.catch_warnings`` (process-wide), this is safe in threads: a batch worker
    running several files at once in one process (a Dask worker with several threads) gets
    each file's warnings, and only those.

    Yields:
        The list the messages are appended to, in order.
    """
    messages: list[str] = []
    token = _collector.set(messages)
    try:
        yield messages
    finally:
        _collector.reset(token)


def warn(message: str, category: type[Warning] | None = None) -> None:
    """Issue an aecodec warning, attributed to the first caller outside the aecodec package.

    Inside :func:`collect_warnings` the message is collected instead.

    Args:
        message: one line saying what happened and what it means for the user.
        category: the warning class; :class:`AecodecWarning` by default.
    """
    sink = _collector.get()
    if sink is not None:
        sink.append(message)
        return
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    warnings.warn(message, category or AecodecWarning, stacklevel=level)
