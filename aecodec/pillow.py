"""Pillow plugin for ``.aec`` files, in the shape of Pillow's own WebP and QOI plugins.

``import aecodec`` registers it, after which::

    from PIL import Image
    with Image.open("photo.aec") as img:          # header only; pixels decode on load()
        img.load()
    img.save("copy.aec", quality=75)              # Pillow's 0-100; aec_quality=5 for 1..levels

``_accept`` checks the magic, ``AecImageFile._open`` parses the header (size and mode, no pixel
decoding), ``load()`` decodes the whole image with the model named in the file, and ``_save``
encodes. Save options: ``quality`` (a level of :func:`aecodec.qualities` or a fine quality
between two levels, e.g. 5.5),
``model``, ``metadata`` (``"all"``, ``"icc"``, ``"exif"``, ``"none"``), ``target_bpp``,
``target_size`` and ``target_psnr``; ``icc_profile=`` and ``exif=`` replace the image's own, as
in Pillow's other plugins.
"""

from __future__ import annotations

from typing import IO, Any

from PIL import Image, ImageFile, UnidentifiedImageError

from aecodec import container, files
from aecodec.output import AEC_SUFFIX

__all__ = ["FORMAT", "AecImageFile", "register"]

FORMAT = "AEC"
MIME = "image/x-aec"

_SAVE_OPTIONS = ("model", "metadata", "target_bpp", "target_size", "target_psnr")


def _accept(prefix: bytes) -> bool:
    return prefix[: len(container.MAGIC)] == container.MAGIC


class AecImageFile(ImageFile.ImageFile):
    """An ``.aec`` file opened by Pillow: modes L, LA, RGB and RGBA; ICC and EXIF in ``info``."""

    format = FORMAT
    format_description = "aecodec learned image codec"

    def _open(self) -> None:
        if self.fp is None:
            raise SyntaxError("no file to read")
        try:
            # header first, never past a regular file's size (aecodec.files: one home)
            bs = container.unpack(files.read_aec_stream(self.fp))
            self._bitstream: container.Bitstream | None = bs
        except ValueError as exc:  # FormatError: the magic matched, so it is a broken .aec
            # Pillow callers catch OSError; SyntaxError would be swallowed into "cannot
            # identify image file", losing the reason.
            raise UnidentifiedImageError(f"broken .aec file: {exc}") from exc
        header = bs.header
        self._size = (header.width, header.height)
        self._mode = header.mode
        if bs.icc:
            self.info["icc_profile"] = bs.icc
        if bs.exif:
            self.info["exif"] = bs.exif
        self.info["quality"] = header.quality
        self.info["model"] = header.model
        self._decoded = False

    def load(self) -> Any:
        """Decode the pixels (once) with the model named in the file."""
        if not self._decoded:
            import aecodec

            try:
                assert self._bitstream is not None
                decoded = aecodec.decompress(self._bitstream)  # parsed once, in _open
            except aecodec.AecodecError as exc:  # what Pillow callers catch, with the reason
                raise OSError(f"cannot decode .aec file: {exc}") from exc
            if self.fp is not None and self._exclusive_fp:
                self.fp.close()
            self.fp = None
            # The decoded image's own pixel buffer becomes this image's: no raw copy of it.
            self.im = decoded.im
            self.tile = []
            self._bitstream = None  # the compressed data is not needed any more
            self._decoded = True
        return Image.Image.load(self)


def quality_from_pillow(quality: object, levels: int) -> float:
    """Pillow's ``quality`` convention (0-100, as for JPEG/WebP/AVIF) on aecodec's fine scale:
    ``1 + (levels - 1) * quality / 100`` in steps of 0.01, so 0 is the lowest level, 100 the
    highest, and a higher number never gives a smaller file.

    Raises:
        ValueError: not a number in 0..100.
    """
    if isinstance(quality, bool) or not isinstance(quality, (int, float)):
        raise ValueError(f"quality must be a number in 0..100 (Pillow's scale), got {quality!r}")
    if not 0 <= quality <= 100:
        raise ValueError(
            f"quality {quality} is outside Pillow's 0..100; for aecodec's own levels "
            f"(1..{levels}) pass aec_quality="
        )
    return round(1 + (levels - 1) * float(quality) / 100, 2)


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    import aecodec

    options = {k: im.encoderinfo[k] for k in _SAVE_OPTIONS if k in im.encoderinfo}
    quality = im.encoderinfo.get("aec_quality")
    if quality is None and im.encoderinfo.get("quality") is not None:
        levels = len(aecodec.qualities(options.get("model")))
        quality = quality_from_pillow(im.encoderinfo["quality"], levels)
    icc = im.encoderinfo.get("icc_profile")
    exif = im.encoderinfo.get("exif")
    if icc is not None or exif is not None:
        im = im.copy()
        if icc is not None:
            im.info["icc_profile"] = icc
        if exif is not None:
            im.info["exif"] = exif.tobytes() if isinstance(exif, Image.Exif) else exif
    fp.write(aecodec.compress(im, quality, **options))


def register() -> None:
    """Register the format with Pillow (``import aecodec`` does it; a second call is harmless)."""
    Image.register_open(FORMAT, AecImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, AEC_SUFFIX)
    Image.register_mime(FORMAT, MIME)


register()
