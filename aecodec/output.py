"""Where outputs go and how decoded images are written: default names, image formats.

The rules, shared by the command line and the batch API:

- ``photo.png`` compresses to ``photo.aec`` (an input that already ends in ``.aec`` gets
  ``.aec`` appended, so the default output is never the input).
- ``photo.aec`` decompresses to ``photo.aec.png``: a default that can never be the image the
  file was made from (that one is ``photo.<ext>``), so ``compress photo.png`` followed by
  ``decompress photo.aec`` never touches ``photo.png``.
- Decoded images are written losslessly unless a lossy format is asked for together with an
  explicit quality (like ``cwebp``/``avifenc``, which never pick a lossy setting silently):
  PNG, TIFF, BMP, PPM, TGA, QOI and WebP (lossless) are exact; JPEG, AVIF and lossy WebP need
  ``quality``; formats that cannot hold the pixels exactly and have no quality (GIF's 256-colour
  palette, ...) are refused.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from aecodec.container import ALPHA_MODES
from aecodec.errors import ImageError

__all__ = [
    "AEC_SUFFIX",
    "DECODED_SUFFIX",
    "ImageFormat",
    "check_mode",
    "compressed_name",
    "decompressed_name",
    "image_format",
    "is_image_name",
    "save_options",
]

AEC_SUFFIX = ".aec"
DECODED_SUFFIX = ".png"


# Pillow formats that store 8-bit L/LA/RGB/RGBA pixels exactly.
_LOSSLESS = frozenset({"PNG", "TIFF", "BMP", "PPM", "TGA", "QOI", "WEBP"})
# Lossy formats written only with an explicit quality (1..100, Pillow's scale).
_WITH_QUALITY = frozenset({"JPEG", "WEBP", "AVIF"})
_ICC_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "TIFF", "AVIF"})
_EXIF_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "AVIF"})
_NO_ALPHA = frozenset({"JPEG"})


@dataclass(frozen=True)
class ImageFormat:
    """How a decoded image is written.

    Attributes:
        name: Pillow format name (``"PNG"``, ``"JPEG"``, ...).
        quality: lossy quality 1..100, or ``None`` for an exact (lossless) file.
    """

    name: str
    quality: int | None = None

    @property
    def lossless(self) -> bool:
        """Whether the written file holds the decoded pixels exactly."""
        return self.quality is None


def compressed_name(src: Path) -> Path:
    """Default ``.aec`` output beside ``src``: ``photo.png`` -> ``photo.aec``.

    An input named ``x.aec`` gives ``x.aec.aec``, so the result is never ``src`` itself.
    """
    if src.suffix.lower() == AEC_SUFFIX:
        return src.with_name(src.name + AEC_SUFFIX)
    return src.with_suffix(AEC_SUFFIX)


def decompressed_name(src: Path) -> Path:
    """Default decoded image beside ``src``: ``photo.aec`` -> ``photo.aec.png``.

    Keeping the ``.aec`` in the name means the default can never be the original image the
    file was compressed from (``photo.png``), which is usually still beside it.
    """
    return src.with_name(src.name + DECODED_SUFFIX)


def image_format(path: Path, quality: int | None = None) -> ImageFormat:
    """The format that writes ``path``, chosen from its extension.

    Args:
        path: output image path; its extension picks the format.
        quality: 1..100 to allow a lossy format (JPEG, AVIF, lossy WebP); ``None`` for exact
            output only.

    Raises:
        ImageError: no or unknown extension; a lossy format without ``quality``; a format that
            cannot hold the pixels exactly and has no quality setting (e.g. GIF).
    """
    ext = path.suffix.lower()
    if not ext and _is_device(path):
        return ImageFormat("PNG")  # ``-o /dev/null`` (timing a decode, as with dwebp)
    if not ext:
        raise ImageError("no file extension to choose the image format from (e.g. use .png)")
    Image.init()
    name = Image.registered_extensions().get(ext)
    if name is None or name not in Image.SAVE:
        raise ImageError(f"cannot write '{ext}' images; use .png, .tiff or .webp for example")
    if quality is not None:
        if isinstance(quality, bool) or not 1 <= int(quality) <= 100:
            raise ImageError(f"output quality must be in 1..100, got {quality}")
        if name in _WITH_QUALITY:
            return ImageFormat(name, int(quality))
    if name in _LOSSLESS:
        return ImageFormat(name)
    if name in _WITH_QUALITY:
        raise ImageError(
            f"{name} is lossy and would change the decoded pixels; give an output quality "
            "(output_quality=1..100, e.g. 90) or write .png, .tiff or .webp (lossless)"
        )
    raise ImageError(
        f"{name} cannot hold the decoded pixels exactly (GIF keeps at most 256 colours); "
        "write .png, .tiff or .webp instead"
    )


def is_image_name(path: Path) -> bool:
    """Whether ``path``'s extension names an image format Pillow can write (``.png``,
    ``.jpg``, ...; not ``.aec``)."""
    ext = path.suffix.lower()
    if not ext or ext == AEC_SUFFIX:
        return False
    Image.init()
    name = Image.registered_extensions().get(ext)
    return name is not None and name in Image.SAVE


def _is_device(path: Path) -> bool:
    """Whether ``path`` is a character device or a pipe (``/dev/null``, ``/dev/stdout``): an
    output without a name to take a format from, written as PNG."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_mode(fmt: ImageFormat, mode: str) -> None:
    """Refuse an image mode the format cannot store (alpha in JPEG).

    Raises:
        ImageError: the message names a format that can store it.
    """
    if fmt.name in _NO_ALPHA and mode in ALPHA_MODES:
        raise ImageError(
            f"{fmt.name} cannot store the alpha channel of this {mode} image; "
            "write .png, .webp or .tiff instead"
        )


def save_options(fmt: ImageFormat, img: Image.Image) -> dict[str, Any]:
    """Keyword arguments of ``img.save(fp, format=fmt.name, **options)``.

    Carries the image's ICC profile and EXIF where the format stores them.

    Raises:
        ImageError: the format cannot store the image's alpha channel (JPEG).
    """
    check_mode(fmt, img.mode)
    params: dict[str, Any] = {}
    if fmt.name == "WEBP":
        params = {"lossless": True, "exact": True} if fmt.lossless else {"quality": fmt.quality}
    elif fmt.name == "JPEG":
        params = {"quality": fmt.quality, "subsampling": 0}
    elif fmt.name == "AVIF":
        params = {"quality": fmt.quality, "subsampling": "4:4:4"}
    icc = img.info.get("icc_profile")
    if icc and fmt.name in _ICC_FORMATS:
        params["icc_profile"] = icc
    exif = img.info.get("exif")
    if exif and fmt.name in _EXIF_FORMATS:
        params["exif"] = exif
    return params
