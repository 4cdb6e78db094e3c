"""Images in and out: loading, mode normalisation, alpha, metadata, padding and tiling.

Every input becomes a :class:`Picture`: an ``uint8 [H, W, 3]`` RGB array for the networks,
the original mode (``L``, ``RGB``, ``RGBA`` or ``LA``), the alpha plane if any (coded
losslessly), and the ICC profile / EXIF bytes to carry through.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from aecodec import container, errors, files
from aecodec.errors import ImageError

if TYPE_CHECKING:
    import torch

ImageInput = Union[Image.Image, np.ndarray, str, os.PathLike, IO[bytes], "torch.Tensor"]
"""What the encoder reads: a PIL image, a numpy array, a torch tensor (``[C, H, W]`` float in
[0, 1] or uint8, torchvision's layout), a path, or a binary file object of an
image file (read from its current position; a stream that is not a regular file at most
:data:`aecodec.files.MAX_STREAM_BYTES`)."""

_ARRAY_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}

Metadata = Literal["all", "icc", "exif", "none"]
#: Values of the ``metadata=`` argument / ``--metadata`` option (as ``cwebp -metadata``).
METADATA_CHOICES: tuple[str, ...] = ("all", "icc", "exif", "none")


@dataclass(frozen=True)
class Picture:
    """A normalised input image.

    Attributes:
        rgb: ``uint8 [H, W, 3]`` colour planes (grey images are replicated).
        mode: the mode to restore on decoding: ``L``, ``RGB``, ``RGBA`` or ``LA``.
        alpha: ``uint8 [H, W]`` alpha plane for ``RGBA``/``LA``, else ``None``.
        icc: ICC profile bytes or ``None``.
        exif: EXIF bytes (orientation already applied to the pixels) or ``None``.
    """

    rgb: np.ndarray
    mode: str
    alpha: np.ndarray | None = None
    icc: bytes | None = None
    exif: bytes | None = None

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.rgb.shape[0])


def check_metadata(metadata: object) -> None:
    """Raise ``ValueError`` unless ``metadata`` is one of :data:`METADATA_CHOICES`."""
    if metadata not in METADATA_CHOICES:
        raise ValueError(f"metadata must be one of {', '.join(METADATA_CHOICES)}; got {metadata!r}")


def keep_metadata(pic: Picture, metadata: Metadata) -> Picture:
    """Drop the metadata a ``metadata=`` choice does not keep (as ``cwebp -metadata``).

    Args:
        pic: the loaded image.
        metadata: ``"all"``, ``"icc"``, ``"exif"`` or ``"none"``.

    Raises:
        ValueError: an unknown choice.
    """
    check_metadata(metadata)
    return replace(
        pic,
        icc=pic.icc if metadata in ("all", "icc") else None,
        exif=pic.exif if metadata in ("all", "exif") else None,
    )


def load(
    image: ImageInput, *, max_pixels: int | None = None, warn_pixels: int | None = None
) -> Picture:
    """Normalise a PIL image, a numpy array, a path or a binary file into a :class:`Picture`.

    Palette images become RGB (RGBA if they have transparency), 1-bit images L, 16-bit and
    float images are reduced to 8 bits with a warning, CMYK/YCbCr/LAB become RGB, and the EXIF
    orientation is applied.

    The pixel limits are applied to the size in the image's header, before any pixel is
    decoded.

    Args:
        image: the input.
        max_pixels: refuse images with more pixels; ``None`` reads
            :data:`aecodec.container.MAX_PIXELS`.
        warn_pixels: warn (:class:`~aecodec.errors.LargeImageWarning`) above this many pixels;
            ``None`` reads :data:`aecodec.container.WARN_PIXELS`.

    Raises:
        ImageError: the input cannot be read, has no pixels or exceeds the pixel limit.
        FileNotFoundError / IsADirectoryError / PermissionError: for paths, as the OS reports.
        TypeError: a file object open in text mode, or an unsupported input type.
    """
    limits = {"max_pixels": max_pixels, "warn_pixels": warn_pixels}
    if _is_torch_tensor(image):
        image = _tensor_to_array(image)
    if isinstance(image, np.ndarray):
        if image.ndim >= 2:
            _check_pixels(int(image.shape[1]), int(image.shape[0]), limits)
        return _from_array(image)
    if isinstance(image, (str, os.PathLike)):
        return _load_path(Path(image), limits)
    if isinstance(image, Image.Image):
        _check_pixels(image.width, image.height, limits)
        return _from_pil(image)
    if hasattr(image, "read"):
        return _load_stream(image, limits)  # type: ignore[arg-type]  # (not a tensor: above)
    raise TypeError(
        "expected a PIL.Image, a numpy uint8 array, a torch tensor, a path or a binary file "
        "object, "
        f"got {type(image).__name__}"
    )


def _is_torch_tensor(obj: object) -> bool:
    """Whether ``obj`` is a torch tensor (checked without importing torch)."""
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def _tensor_to_array(tensor: Any) -> np.ndarray:
    """A torch image tensor as the ``uint8 [H, W, C]`` array :func:`load` takes: ``[C, H, W]``
    (C = 1-4, torchvision's layout) or ``[H, W]``; float in [0, 1] (clipped, rounded to
    0..255) or uint8."""
    t = tensor.detach().cpu()
    if t.ndim == 3 and t.shape[0] in _ARRAY_MODES:
        t = t.permute(1, 2, 0)
    elif t.ndim != 2:
        raise ImageError(
            f"a tensor image must be [C, H, W] with C in 1..4 or [H, W], got {tuple(t.shape)}"
        )
    if t.is_floating_point():
        arr = np.rint(np.clip(t.float().numpy(), 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        arr = t.numpy()
        if arr.dtype != np.uint8:
            raise ImageError(f"a tensor image must be float in [0, 1] or uint8, got {t.dtype}")
    return np.ascontiguousarray(arr)


def _check_pixels(width: int, height: int, limits: dict[str, int | None]) -> None:
    container.check_pixels(width, height, error=ImageError, **limits)


# Exceptions Pillow's decoders are known to raise on malformed input, besides OSError.
_PILLOW_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    struct.error,
    # Pillow's AVIF plugin raises RuntimeError ("Failed to decode image: Not implemented") on
    # damaged files, DDS NotImplementedError (a subclass); found by scripts/fuzz.py --mode image.
    RuntimeError,
)


def _load_path(path: Path, limits: dict[str, int | None]) -> Picture:
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not an image")
    try:
        with files.open_input(path, ImageError) as fh:
            return _decode(fh, f"{path}: ", limits)
    except (ImageError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except OSError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(f"{path}: cannot decode image ({reason})") from exc


def _load_stream(stream: IO[bytes], limits: dict[str, int | None]) -> Picture:
    """An image from a binary file object; a stream Pillow cannot seek is read (bounded) first."""
    files.check_stream(stream, ImageError)
    seekable = getattr(stream, "seekable", None)
    if callable(seekable) and seekable():
        return _decode(stream, "", limits)
    return _decode(io.BytesIO(files.read_stream(stream, ImageError)), "", limits)


def _decode(fh: IO[bytes], prefix: str, limits: dict[str, int | None]) -> Picture:
    """Open an image file with Pillow: pixel limits from its header, failures as ImageError."""
    try:
        _check_icon_entries(fh, limits)  # Pillow's ICO plugin decodes inside open()
        with warnings.catch_warnings():
            # aecodec's own LargeImageWarning replaces Pillow's, with the same thresholds.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im_cm = Image.open(fh)
        with im_cm as im:
            _check_pixels(im.width, im.height, limits)  # from the header: no pixels yet
            deep = _has_16bit_samples(im)
            im.load()
            return _from_pil(im, deep)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"{prefix}not an image file Pillow can read") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{prefix}{exc}") from exc
    except _PILLOW_FAILURES as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(f"{prefix}cannot decode image ({reason})") from exc


# ICO/CUR: reserved 0, type 1 (icon) or 2 (cursor), entry count; 16-byte directory entries.
_ICON_MAGICS = (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_icon_entries(fh: IO[bytes], limits: dict[str, int | None]) -> None:
    """Apply the pixel limits to every image embedded in an ICO/CUR file, read from the
    embedded PNG's IHDR or BMP info header, before Pillow opens it: Pillow's ICO plugin
    decodes the largest entry inside ``Image.open`` and trusts the directory's sizes, which a
    hostile file can make disagree with the embedded image (16x16 holding 12000x12000).
    Other files are left untouched (``fh`` is rewound to where it was)."""
    start = fh.tell()
    try:
        head = fh.read(6)
        if len(head) < 6 or head[:4] not in _ICON_MAGICS:
            return
        count = struct.unpack("<H", head[4:6])[0]
        directory = fh.read(16 * count)
        for i in range(len(directory) // 16):
            offset = struct.unpack("<I", directory[16 * i + 12 : 16 * i + 16])[0]
            fh.seek(start + offset)
            data = fh.read(24)
            if data[:8] == _PNG_MAGIC and len(data) >= 24:
                width, height = struct.unpack(">II", data[16:24])
            elif len(data) >= 12 and struct.unpack("<I", data[:4])[0] >= 12:
                width, height = struct.unpack("<ii", data[4:12])
                width, height = abs(width), abs(height) // 2  # XOR and AND masks stacked
            else:
                continue
            _check_pixels(width, height, limits)
    finally:
        fh.seek(start)


def _has_16bit_samples(im: Image.Image) -> bool:
    """Whether a not-yet-loaded image stores 16-bit samples (e.g. a 16-bit RGB PNG, which
    Pillow opens as 8-bit ``RGB``); read from its raw mode, before decoding."""
    for tile in getattr(im, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else args[0] if args else ""
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _declared_bits(im: Image.Image) -> int:
    """Bits per sample a mode ``I`` image declares (TIFF BitsPerSample; PNG ``I`` is 16-bit)."""
    tags = getattr(im, "tag_v2", None)
    if tags is not None:
        bits = tags.get(258)
        if isinstance(bits, tuple):
            bits = bits[0] if bits else None
        if isinstance(bits, int) and 1 <= bits <= 32:
            return bits
    return 16


def _to_srgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """Convert a CMYK/YCbCr/LAB/HSV image to RGB; its ICC profile describes the old colour
    space, so it is applied (ImageCms, to sRGB) or else dropped, never carried."""
    if not icc:
        return im.convert("RGB"), None
    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        rgb = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split())
        errors.warn(
            f"{im.mode} image converted to RGB without colour management: its ICC profile "
            f"cannot be applied ({reason}); the profile is dropped"
        )
        return im.convert("RGB"), None
    if rgb is None:  # profileToProfile(inPlace=True) returns None; not used here
        rgb = im.convert("RGB")
    errors.warn(f"{im.mode} image converted to sRGB with its ICC profile (the profile is dropped)")
    return rgb, None


def _to_grey8(im: Image.Image, bits: int) -> Image.Image:
    """Reduce a 16/32-bit integer or float grey image to 8 bits, by its declared range."""
    arr = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        errors.warn("32-bit float image mapped from [0, 1] to 8 bits for coding")
        scaled = arr * 255.0
    else:
        bits = 16 if im.mode.startswith("I;16") else bits
        errors.warn(f"{bits}-bit image reduced to 8 bits per channel for coding")
        scaled = arr * (255.0 / (2.0**bits - 1.0))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


#: Largest ICC profile kept: what Pillow reads back from a PNG (``MAX_TEXT_CHUNK``, 1 MiB),
#: so every decoded image opens again. Real profiles are 0.5-60 KB.
MAX_ICC_BYTES = 1 << 20
#: Largest EXIF block kept: what one JPEG APP1 segment holds (65,535 bytes less the length
#: field and the ``Exif\0\0`` header), the limit every writer of EXIF shares.
MAX_EXIF_BYTES = 65_527


def _bounded_metadata(data: bytes | None, what: str, limit: int) -> bytes | None:
    """``data``, or ``None`` with a warning when it is larger than ``limit`` bytes."""
    if data is not None and len(data) > limit:
        errors.warn(f"{what} of {len(data):,} bytes dropped (larger than {limit:,} bytes)")
        return None
    return data


def _from_pil(im: Image.Image, deep: bool = False) -> Picture:
    if im.width < 1 or im.height < 1:
        raise ImageError(f"image has no pixels ({im.width}x{im.height})")
    # ``is_animated`` looks one frame ahead; ``n_frames`` walks every frame (quadratic for a
    # TIFF of 100,000 pages) and can be whatever an APNG header claims.
    if getattr(im, "is_animated", False):
        errors.warn("only the first frame is coded (animated or multi-page image)")
    icc = _bounded_metadata(im.info.get("icc_profile") or None, "ICC profile", MAX_ICC_BYTES)
    bits = _declared_bits(im)  # before exif_transpose, which may return a copy without tags
    im = ImageOps.exif_transpose(im) or im
    exif_obj = im.getexif()
    exif = _bounded_metadata(
        exif_obj.tobytes() if len(exif_obj) else None, "EXIF block", MAX_EXIF_BYTES
    )
    mode = im.mode
    if deep and mode in ("L", "LA", "RGB", "RGBA"):
        errors.warn("16-bit image reduced to 8 bits per channel for coding")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im = _to_grey8(im, bits)
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode == "La":
        im = im.convert("LA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im, icc = _to_srgb(im, icc)
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    pic = _from_array(arr)
    return Picture(pic.rgb, pic.mode, pic.alpha, icc=icc, exif=exif)


def _from_array(arr: np.ndarray) -> Picture:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in _ARRAY_MODES:
        raise ImageError(
            f"array must be HxW, HxWx1, HxWx2, HxWx3 or HxWx4, got shape {tuple(arr.shape)}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"image has no pixels ({arr.shape[1]}x{arr.shape[0]})")
    if arr.dtype == np.uint16:
        errors.warn("16-bit image reduced to 8 bits per channel for coding")
        arr = np.rint(arr.astype(np.float64) / 257.0).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        raise ImageError(f"array dtype must be uint8 (or uint16), got {arr.dtype}")
    mode = _ARRAY_MODES[arr.shape[2]]
    colour = arr[:, :, :1] if mode in ("L", "LA") else arr[:, :, :3]
    rgb = np.ascontiguousarray(np.broadcast_to(colour, (*arr.shape[:2], 3)))
    alpha = np.ascontiguousarray(arr[:, :, -1]) if mode in container.ALPHA_MODES else None
    return Picture(rgb=rgb, mode=mode, alpha=alpha)


def to_pil(
    rgb: np.ndarray,
    mode: str,
    alpha: np.ndarray | None = None,
    icc: bytes | None = None,
    exif: bytes | None = None,
) -> Image.Image:
    """Build the output image in the original ``mode`` from decoded planes.

    Args:
        rgb: ``uint8 [H, W, 3]`` decoded colour.
        mode: ``L``, ``RGB``, ``RGBA`` or ``LA``.
        alpha: ``uint8 [H, W]`` for modes with alpha.
    """
    im = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if mode in ("L", "LA"):
        im = im.convert("L")
    if mode in container.ALPHA_MODES:
        if alpha is None:
            raise ValueError(f"mode {mode} needs an alpha plane")
        im.putalpha(Image.fromarray(alpha, "L"))
    if icc:
        im.info["icc_profile"] = icc
    if exif:
        im.info["exif"] = exif
    return im


def tiles(width: int, height: int, tile_w: int, tile_h: int) -> list[tuple[int, int, int, int]]:
    """Raster-order tile rectangles ``(x0, y0, w, h)`` covering a ``width x height`` image."""
    return [
        (x, y, min(tile_w, width - x), min(tile_h, height - y))
        for y in range(0, height, tile_h)
        for x in range(0, width, tile_w)
    ]


def pad_to_multiple(arr: np.ndarray, multiple: int) -> np.ndarray:
    """Edge-replicate ``uint8 [H, W, C]`` up to the next multiple of ``multiple`` on both axes."""
    h, w = arr.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return arr
    return np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode="edge")
