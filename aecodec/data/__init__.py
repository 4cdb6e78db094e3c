"""Data shipped with aecodec: one small real photograph for the demo, examples and tests.

``kodim23-384x256.png`` is ``kodim23.png`` ("two macaws") of the Kodak Lossless True Color Image
Suite (http://r0k.us/graphics/kodak/, released by the Eastman Kodak Company for unrestricted
use), downscaled from 768x512 to 384x256 with Pillow's Lanczos filter::

    Image.open("kodim23.png").convert("RGB").resize((384, 256), Image.Resampling.LANCZOS)
        .save("kodim23-384x256.png", optimize=True)
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAMPLE_SIZE", "sample_image"]

#: ``(width, height)`` of the bundled sample photograph.
SAMPLE_SIZE = (384, 256)

_SAMPLE = Path(__file__).resolve().with_name("kodim23-384x256.png")


def sample_image() -> Path:
    """Path of the bundled sample photograph (RGB PNG, 384x256, Kodak's kodim23).

    Example:
        >>> data = aecodec.compress(aecodec.data.sample_image())
    """
    return _SAMPLE
