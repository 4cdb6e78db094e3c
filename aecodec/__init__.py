"""aecodec: a learned image codec with a VQ latent and deterministic integer entropy coding.

Public API::

    data = aecodec.compress(image, quality=5)      # PIL.Image, numpy array, path, file -> bytes
    data = aecodec.compress(image, quality=5.5)    # between two levels, in steps of 0.01
    data = aecodec.compress(image, target_size=40_000)   # or target_bpp= / target_psnr=
    image = aecodec.decompress(data)               # bytes, path or file -> PIL.Image
    aecodec.qualities()                            # [1, 2, ...], lowest rate first
    codec = aecodec.Codec()                        # load once, reuse (thread-safe, picklable)

Importing this package is cheap (torch is loaded when the first codec is built) and registers
the ``.aec`` format with Pillow: ``Image.open("x.aec")``, ``img.save("x.aec", quality=75)``
(Pillow's 0-100 scale).
"""

from __future__ import annotations

import os
import threading
from typing import IO, TYPE_CHECKING, Any

from aecodec import container, errors
from aecodec import pillow as pillow  # registers the .aec format with Pillow
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
    from aecodec.imageio import ImageInput, Metadata

#: What :func:`decompress` and :func:`info` read: the bytes, a path, or a binary file object.
BytesSource = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]

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
        from aecodec.weightsfile import default_model_name, read_manifest

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


def _read_source(source: BytesSource) -> bytes:
    """The bytes of an ``.aec`` given as bytes, a path or a binary file object.

    Paths and file objects are read by :mod:`aecodec.files`: regular files only for paths,
    magic and version checked before the rest is read, never past a file's size (a stream
    that is not a regular file: at most :data:`aecodec.files.MAX_STREAM_BYTES`).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    from aecodec import files

    if isinstance(source, (str, os.PathLike)):
        return files.read_aec(source)
    if hasattr(source, "read"):
        return files.read_aec_stream(source)
    raise TypeError(f"expected bytes, a path or a binary file object, got {type(source).__name__}")


def compress(
    image: ImageInput,
    quality: float | None = None,
    *,
    model: str | None = None,
    metadata: Metadata = "all",
    target_bpp: float | None = None,
    target_size: int | None = None,
    target_psnr: float | None = None,
    max_pixels: int | None = None,
    warn_pixels: int | None = None,
) -> bytes:
    """Compress an image to ``.aec`` bytes.

    Args:
        image: ``PIL.Image``, numpy ``uint8`` array (``[H, W]`` or ``[H, W, 1|2|3|4]``), a path,
            or a binary file object of an image file.
        quality: a level of :func:`qualities`, or a number with up to two decimals between the
            first and the last level (5.5, 5.37: the gains and probability tables of the two
            levels around it, mixed); ``None`` uses the model's default (or the target's).
        model: bundled model name; ``None`` for the default model.
        metadata: carry ``"all"`` (ICC and EXIF), ``"icc"``, ``"exif"`` or ``"none"``.
        target_bpp: choose the highest quality (in steps of 0.01) whose file has at most this
            many bits per pixel.
        target_size: choose the highest quality whose file has at most this many bytes.
        target_psnr: choose the lowest quality whose decoding reaches this PSNR (dB, RGB).
        max_pixels: refuse larger images (checked before any pixel is decoded); ``None``
            reads :data:`aecodec.container.MAX_PIXELS` (2**28).
        warn_pixels: warn (:class:`aecodec.errors.LargeImageWarning`) above this many pixels;
            ``None`` reads :data:`aecodec.container.WARN_PIXELS` (2**26).

    Only one target may be given, and not together with ``quality``. A target that cannot be
    met gives the closest file (lowest quality for a size, highest for a PSNR) and an
    :class:`AecodecWarning`; :func:`aecodec.ratecontrol.compress_to_target` returns what was
    reached.

    Raises:
        ValueError: an invalid quality, several targets, a quality with a target, or a target
            that is not a positive number (:class:`aecodec.options.EncodeOptions`).
        ImageError: the input is not an image aecodec can code, or is over a limit.
    """
    from aecodec.options import EncodeOptions
    from aecodec.ratecontrol import compress_with

    options = EncodeOptions.build(
        quality,
        target_bpp=target_bpp,
        target_size=target_size,
        target_psnr=target_psnr,
        metadata=metadata,
        max_pixels=max_pixels,
        warn_pixels=warn_pixels,
    )
    data, reached = compress_with(get_codec(model), image, options)
    if reached is not None and not reached.met:
        target = options.require_target()
        errors.warn(
            f"{target.name}={target.value} cannot be met; returning quality {reached.quality} "
            f"({reached.bytes} bytes, {reached.bpp:.3f} bpp)"
        )
    return data


def _check_before_loading(header: container.Header, manifest: dict[str, Any]) -> None:
    """Refuse, from the manifest and the weights' metadata alone (no torch, no weights), a file
    that no bundled model can decode: an unknown model, other weights, a quality out of range.

    Raises:
        ModelError: the model or its weights are not bundled.
        FormatError: the quality is beyond the model's levels.
    """
    from aecodec.weightsfile import read_config

    entry = manifest["models"].get(header.model)
    if entry is None:
        known = ", ".join(sorted(manifest["models"])) or "none"
        raise ModelError(
            f"the file was made by model {header.model!r}, which is not bundled "
            f"(bundled: {known}); install a version of aecodec that has it"
        )
    bundled = entry.get("stream_hash", entry["sha256"][:16])
    if header.weights_hash.hex() != bundled:
        raise ModelError(
            f"the file was made by other weights of model {header.model!r} "
            f"(hash {header.weights_hash.hex()}, bundled {bundled})"
        )
    levels = read_config(header.model).num_qualities
    if header.quality_steps > levels * container.QUALITY_STEPS:
        raise FormatError(
            f"quality {header.quality} is out of range for model {header.model!r} (1..{levels})"
        )


def decompress(
    source: BytesSource | container.Bitstream,
    *,
    max_pixels: int | None = None,
    warn_pixels: int | None = None,
) -> Image.Image:
    """Decode an ``.aec`` file to a ``PIL.Image`` (same size and mode as the original).

    The model is chosen by the name written in the file. The file is parsed and checked once.

    Args:
        source: the file's bytes, its path, a binary file object (read to the end), or the
            file already parsed by :func:`aecodec.container.unpack` (to read its header first,
            as the command line does, without parsing it again).
        max_pixels: refuse larger images; ``None`` reads :data:`aecodec.container.MAX_PIXELS`.
        warn_pixels: warn (:class:`aecodec.errors.LargeImageWarning`) above this many pixels;
            ``None`` reads :data:`aecodec.container.WARN_PIXELS`.

    Raises:
        FormatError: the data is not a valid ``.aec`` file or exceeds a decoding limit.
        ModelError: the model that made the file is not bundled with this aecodec.
    """
    if isinstance(source, container.Bitstream):
        bitstream = source
    else:
        bitstream = container.unpack(_read_source(source), max_pixels=max_pixels)
    header = bitstream.header
    from aecodec.codec import check_tiling
    from aecodec.weightsfile import read_manifest

    check_tiling(header)  # before loading a model: a hostile file is refused in milliseconds

    _check_before_loading(header, read_manifest())
    codec = get_codec(header.model)
    return codec.decompress(bitstream, max_pixels=max_pixels, warn_pixels=warn_pixels)


def qualities(model: str | None = None) -> list[int]:
    """Quality levels of a model, ascending (lowest rate first); any quality from the first to
    the last in steps of 0.01 codes too."""
    from aecodec.weightsfile import read_config

    return list(range(1, read_config(model).num_qualities + 1))


def info(source: BytesSource, *, max_pixels: int | None = None) -> dict[str, Any]:
    """Header fields of an ``.aec`` file as JSON-able values (validates the whole container).

    Args:
        source: the file's bytes, its path, or a binary file object (read to the end).
        max_pixels: as for :func:`decompress`.
    """
    data = _read_source(source)
    bs = container.unpack(data, max_pixels=max_pixels)
    h = bs.header
    return {
        "format_version": h.format_version,
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
        "bpp": h.bpp(len(data)),
        "has_icc": bs.icc is not None,
        "has_exif": bs.exif is not None,
    }


def models() -> list[dict[str, Any]]:
    """Bundled models: name, default flag, qualities, sha256, size, description."""
    from aecodec.weightsfile import read_manifest

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
