"""aecodec: a learned image codec with a VQ latent and deterministic integer entropy coding.

Public API::

    data = aecodec.compress(image, quality=5)      # PIL.Image, numpy uint8 array or path -> bytes
    image = aecodec.decompress(data)               # -> PIL.Image, original size and mode
    aecodec.qualities()                            # [1, 2, ...], lowest rate first
    codec = aecodec.Codec()                        # load once, reuse (thread-safe, picklable)

Importing this package is cheap; torch is loaded when the first codec is built.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from aecodec import container
from aecodec.errors import (
    AecodecError,
    AecodecWarning,
    FormatError,
    ImageError,
    LargeImageWarning,
    ModelError,
)

if TYPE_CHECKING:
    from PIL import Image

    from aecodec.codec import Codec
    from aecodec.imageio import ImageInput

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_QUALITY",
    "AecodecError",
    "AecodecWarning",
    "Codec",
    "FormatError",
    "ImageError",
    "LargeImageWarning",
    "ModelError",
    "compress",
    "container",
    "decompress",
    "info",
    "models",
    "qualities",
]

_codecs: dict[str | None, Codec] = {}
_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    if name == "Codec":
        from aecodec.codec import Codec

        return Codec
    if name == "DEFAULT_QUALITY":
        from aecodec.model.registry import default_model_name, read_manifest

        return read_manifest()["models"][default_model_name()]["default_quality"]
    raise AttributeError(f"module 'aecodec' has no attribute {name!r}")


def get_codec(model: str | None = None) -> Codec:
    """The shared :class:`Codec` for ``model`` (built on first use, then cached)."""
    with _lock:
        codec = _codecs.get(model)
        if codec is None:
            from aecodec.codec import Codec

            codec = Codec(model)
            _codecs[model] = codec
        return codec


def compress(
    image: ImageInput,
    quality: int | None = None,
    *,
    model: str | None = None,
    max_pixels: int | None = None,
    warn_pixels: int | None = None,
) -> bytes:
    """Compress an image to ``.aec`` bytes.

    Args:
        image: ``PIL.Image``, numpy ``uint8`` array (``[H, W]`` or ``[H, W, 1|2|3|4]``), or a path.
        quality: one of :func:`qualities`; ``None`` uses the model's default.
        model: bundled model name; ``None`` for the default model.
        max_pixels: refuse larger images (checked before any pixel is decoded); ``None``
            reads :data:`aecodec.container.MAX_PIXELS` (2**28).
        warn_pixels: warn (:class:`aecodec.errors.LargeImageWarning`) above this many pixels;
            ``None`` reads :data:`aecodec.container.WARN_PIXELS` (2**26).

    Raises:
        ImageError: the image cannot be read or is over a limit.
    """
    return get_codec(model).compress(image, quality, max_pixels=max_pixels, warn_pixels=warn_pixels)


def decompress(
    data: bytes, *, max_pixels: int | None = None, warn_pixels: int | None = None
) -> Image.Image:
    """Decode ``.aec`` bytes to a ``PIL.Image`` (same size and mode as the original).

    The model is chosen by the name written in the file.

    Args:
        data: the complete file.
        max_pixels: refuse larger images; ``None`` reads :data:`aecodec.container.MAX_PIXELS`.
        warn_pixels: warn (:class:`aecodec.errors.LargeImageWarning`) above this many pixels;
            ``None`` reads :data:`aecodec.container.WARN_PIXELS`.

    Raises:
        FormatError: the data is not a valid ``.aec`` file or exceeds a decoding limit.
        ModelError: the model that made the file is not bundled with this aecodec.
    """
    header = container.read_header(data, max_pixels=max_pixels)
    from aecodec.codec import check_tiling
    from aecodec.model.registry import read_manifest

    check_tiling(header)  # before loading a model: a hostile file is refused in milliseconds

    if header.model not in read_manifest()["models"]:
        known = ", ".join(sorted(read_manifest()["models"])) or "none"
        raise ModelError(
            f"the file was made by model {header.model!r}, which is not bundled "
            f"(bundled: {known}); install a version of aecodec that has it"
        )
    return get_codec(header.model).decompress(data, max_pixels=max_pixels, warn_pixels=warn_pixels)


def qualities(model: str | None = None) -> list[int]:
    """Quality levels of a model, ascending (lowest rate first)."""
    from aecodec.model.registry import read_config

    return list(range(1, read_config(model).num_qualities + 1))


def info(data: bytes, *, max_pixels: int | None = None) -> dict[str, Any]:
    """Header fields of an ``.aec`` file as JSON-able values (validates the whole container).

    Args:
        data: the complete file.
        max_pixels: as for :func:`decompress`.
    """
    bs = container.unpack(data, max_pixels=max_pixels)
    h = bs.header
    return {
        "format_version": container.FORMAT_VERSION,
        "model": h.model,
        "weights_hash": h.weights_hash.hex(),
        "quality": h.quality,
        "width": h.width,
        "height": h.height,
        "mode": h.mode,
        "bit_depth": h.bit_depth,
        "tile_width": h.tile_width,
        "tile_height": h.tile_height,
        "num_tiles": h.num_tiles,
        "bytes": len(data),
        "bpp": 8 * len(data) / (h.width * h.height),
        "has_icc": bs.icc is not None,
        "has_exif": bs.exif is not None,
    }


def models() -> list[dict[str, Any]]:
    """Bundled models: name, default flag, qualities, sha256, size, description."""
    from aecodec.model.registry import read_manifest

    manifest = read_manifest()
    return [
        {
            "name": name,
            "default": name == manifest.get("default"),
            "qualities": qualities(name),
            "default_quality": e.get("default_quality"),
            "sha256": e["sha256"],
            "bytes": e["bytes"],
            "description": e.get("description", ""),
        }
        for name, e in sorted(manifest.get("models", {}).items())
    ]
