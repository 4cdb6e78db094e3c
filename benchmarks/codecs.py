"""Registry of codecs for the RD benchmark, each with a quality sweep.

Every codec turns an 8-bit RGB array (H, W, 3) into the bytes of a complete file and back:

    codec = make_codec("jpeg")
    data = codec.encode(rgb, quality=75)      # bytes of the whole .jpg
    rgb2 = codec.decode(data)                 # uint8 (H, W, 3)

``codec.qualities`` is the sweep, ordered from the lowest to the highest rate. ``codec.version``
names the library versions and settings; the RD cache keys on it, so upgrading a library (or
aecodec's weights) invalidates old results.

A codec whose library is missing raises :class:`CodecUnavailable` from :func:`make_codec` with a
note on how to get it; the RD runner reports and skips it.
"""

from __future__ import annotations

import io
import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aecodec.files import sha256_file

__all__ = [
    "DEFAULT_CODECS",
    "BenchCodec",
    "CodecUnavailable",
    "codec_names",
    "make_codec",
]

#: What ``python -m benchmarks.rd`` runs by default.
DEFAULT_CODECS = ("aecodec", "jpeg", "jpeg444", "webp", "jpeg2000", "avif", "jxl")

Quality = int | float


class CodecUnavailable(RuntimeError):
    """The codec cannot run here (library missing, no weights, ...); the message says why."""


class BenchCodec(ABC):
    """One codec configuration and its quality sweep.

    Attributes:
        name: Registry name (``jpeg``, ``aecodec``, ...); also the results file stem.
        label: Human-readable name for tables and plots.
        description: Library versions and settings (goes into the results JSON).
        version: Cache key part; changes whenever results could change.
        qualities: The sweep, lowest rate first.
    """

    name: str
    label: str
    description: str
    version: str
    qualities: list[Quality]

    @abstractmethod
    def encode(self, rgb: np.ndarray, quality: Quality) -> bytes:
        """Encode uint8 (H, W, 3) RGB into the bytes of a complete file."""

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decode a file into uint8 (H, W, 3) RGB."""

    def warmup(self) -> None:  # noqa: B027 (optional hook)
        """Run once per process before timing (load models, JIT, lazy imports)."""


# --------------------------------------------------------------------------------------------
# Pillow codecs


class PillowCodec(BenchCodec):
    """A codec reachable through ``PIL.Image.save(format=...)`` / ``Image.open``."""

    def __init__(
        self,
        name: str,
        label: str,
        fmt: str,
        qualities: Sequence[Quality],
        options: Callable[[Quality], dict[str, Any]],
        library: str,
        settings: str,
    ) -> None:
        import PIL

        self.name = name
        self.label = label
        self.fmt = fmt
        self.qualities = list(qualities)
        self._options = options
        self.description = f"{label}, Pillow {PIL.__version__} ({library}), {settings}"
        self.version = self.description

    def encode(self, rgb: np.ndarray, quality: Quality) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(_as_rgb(rgb), "RGB").save(buf, format=self.fmt, **self._options(quality))
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


def _pil_feature(feature: str, what: str) -> str:
    from PIL import features

    if not features.check(feature):
        raise CodecUnavailable(f"{what}: this Pillow was built without {feature!r} support")
    return f"{feature} {features.version(feature)}"


def _jpeg(subsampling: int) -> Callable[[], BenchCodec]:
    def make() -> BenchCodec:
        from PIL import features

        lib = _pil_feature("jpg", "JPEG")
        if features.check("libjpeg_turbo"):
            lib = f"libjpeg-turbo {features.version('libjpeg_turbo')}"
        chroma = {2: "4:2:0", 0: "4:4:4"}[subsampling]
        return PillowCodec(
            name="jpeg" if subsampling == 2 else "jpeg444",
            label=f"JPEG {chroma}",
            fmt="JPEG",
            qualities=range(5, 96, 5),
            options=lambda q: {"quality": int(q), "subsampling": subsampling},
            library=lib,
            settings=f"quality 5..95, {chroma}, no optimize",
        )

    return make


def _webp() -> BenchCodec:
    lib = _pil_feature("webp", "WebP")
    return PillowCodec(
        name="webp",
        label="WebP",
        fmt="WEBP",
        qualities=range(5, 96, 5),
        options=lambda q: {"quality": int(q), "method": 4},
        library=f"lib{lib}",
        settings="quality 5..95, method 4",
    )


#: JPEG 2000 compression ratios (24 bpp / ratio = target bpp), lowest rate first.
JPEG2000_RATIOS = tuple(range(190, 9, -10))


def _jpeg2000() -> BenchCodec:
    lib = _pil_feature("jpg_2000", "JPEG 2000")
    return PillowCodec(
        name="jpeg2000",
        label="JPEG 2000",
        fmt="JPEG2000",
        qualities=JPEG2000_RATIOS,
        options=lambda r: {
            "quality_mode": "rates",
            "quality_layers": [float(r)],
            "irreversible": True,
            "mct": 1,
            "no_jp2": False,
        },
        library=f"OpenJPEG {lib.split()[-1]}",
        settings="quality = compression ratio 190..10 (quality_mode='rates'), 9/7 wavelet, ICT",
    )


#: AVIF quality sweep (libavif quality 0..100).
AVIF_QUALITIES = tuple(range(20, 91, 10))


def _avif(subsampling: str, speed: int) -> Callable[[], BenchCodec]:
    def make() -> BenchCodec:
        from PIL import features

        if not features.check("avif"):
            raise CodecUnavailable(
                "AVIF: this Pillow has no AVIF support (needs Pillow >= 11.3 built with "
                "libavif); install a Pillow wheel with AVIF or skip it"
            )
        from PIL import AvifImagePlugin

        AvifImagePlugin.DEFAULT_MAX_THREADS = 1  # single thread, like the other codecs
        aom = AvifImagePlugin.get_codec_version("aom") or "?"
        name = "avif" if subsampling == "4:4:4" else "avif420"
        return PillowCodec(
            name=name,
            label=f"AVIF {subsampling}",
            fmt="AVIF",
            qualities=AVIF_QUALITIES,
            options=lambda q: {
                "quality": int(q),
                "subsampling": subsampling,
                "speed": speed,
                "max_threads": 1,
            },
            library=f"libavif {features.version('avif')}, aom {aom}",
            settings=f"quality 20..90, {subsampling}, speed {speed}, 1 thread",
        )

    return make


# --------------------------------------------------------------------------------------------
# JPEG XL (optional: imagecodecs)

#: JPEG XL Butteraugli distances, lowest rate first (as in measured-jxl.json).
JXL_DISTANCES = (15.0, 11.0, 8.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.75, 0.5)


class ImagecodecsJxl(BenchCodec):
    """JPEG XL through ``imagecodecs`` (libjxl), VarDCT, effort 7, distance sweep."""

    def __init__(self) -> None:
        try:
            import imagecodecs
        except ImportError as exc:
            raise CodecUnavailable(
                "JPEG XL: no encoder available (pip install imagecodecs, which bundles libjxl)"
            ) from exc
        if not getattr(imagecodecs, "JPEGXL", None) or not imagecodecs.JPEGXL.available:
            raise CodecUnavailable("JPEG XL: this imagecodecs build has no libjxl")
        self._ic = imagecodecs
        self.name = "jxl"
        self.label = "JPEG XL"
        self.qualities = list(JXL_DISTANCES)
        self.description = (
            f"JPEG XL, imagecodecs {imagecodecs.__version__} (libjxl "
            f"{imagecodecs.jpegxl_version()}), VarDCT, effort 7, distance 15..0.5, 1 thread"
        )
        self.version = self.description

    def encode(self, rgb: np.ndarray, quality: Quality) -> bytes:
        return bytes(
            self._ic.jpegxl_encode(_as_rgb(rgb), effort=7, distance=float(quality), numthreads=1)
        )

    def decode(self, data: bytes) -> np.ndarray:
        return np.asarray(self._ic.jpegxl_decode(data, numthreads=1))


# --------------------------------------------------------------------------------------------
# aecodec


class AecodecBench(BenchCodec):
    """aecodec through its public API: ``aecodec.Codec(model).compress(rgb, quality=q)``."""

    def __init__(self, model: str | None = None) -> None:
        try:
            import aecodec

            qualities: list[Quality] = list(aecodec.qualities(model))
            models = list(aecodec.models())
        except Exception as exc:
            raise CodecUnavailable(
                f"aecodec: not usable yet ({type(exc).__name__}: {exc})"
            ) from exc
        if not qualities:
            raise CodecUnavailable("aecodec: qualities() is empty")
        entry = next(
            (m for m in models if (m.get("name") == model if model else m.get("default"))),
            None,
        )
        self._aecodec = aecodec
        self._model = model
        self._codec: Any = None
        self.name = "aecodec"
        mname = entry.get("name", model or "default") if entry else (model or "default")
        sha = str(entry.get("sha256", "unknown")) if entry else "unknown"
        version = getattr(aecodec, "__version__", "unknown")
        self.label = "aecodec" if model is None else f"aecodec ({mname})"
        self.qualities = qualities
        desc = entry.get("description", "") if entry else ""
        self.description = f"aecodec {version}, model {mname} (sha256 {sha[:16]}) {desc}".strip()
        from aecodec.codec import ENCODER_REVISION

        self.version = f"aecodec {version} encoder {ENCODER_REVISION} model {mname} sha256 {sha}"

    def _get(self) -> Any:
        if self._codec is None:
            self._codec = self._aecodec.Codec(self._model)
        return self._codec

    def encode(self, rgb: np.ndarray, quality: Quality) -> bytes:
        return self._get().compress(_as_rgb(rgb), quality=int(quality))

    def decode(self, data: bytes) -> np.ndarray:
        return np.asarray(self._get().decompress(data).convert("RGB"))

    def warmup(self) -> None:
        rgb = np.full((64, 64, 3), 128, np.uint8)
        self.decode(self.encode(rgb, self.qualities[0]))


# --------------------------------------------------------------------------------------------
# CompressAI bmshj2018-factorized from user-supplied checkpoints (optional, never bundled)


class CompressAIFactorized(BenchCodec):
    """CompressAI ``FactorizedPrior`` (bmshj2018-factorized), one checkpoint per quality.

    File layout (so bpp counts everything needed to decode): ``<HHI`` height, width, payload
    length, then the payload; the latent shape follows from height and width.
    """

    _HEADER = struct.Struct("<HHI")

    def __init__(self, checkpoints: Sequence[str | os.PathLike[str]]) -> None:
        if not checkpoints:
            raise CodecUnavailable(
                "compressai-factorized: pass --compressai-checkpoint PATH (one per quality, "
                "lowest rate first); checkpoints are not bundled"
            )
        paths = [Path(p) for p in checkpoints]
        for p in paths:
            if not p.is_file():
                raise CodecUnavailable(f"compressai-factorized: checkpoint {p} not found")
        try:
            import compressai
        except ImportError as exc:
            raise CodecUnavailable("compressai-factorized: compressai is not installed") from exc
        digests = [sha256_file(p)[:16] for p in paths]
        self._paths = paths
        self._nets: dict[int, Any] = {}
        self.name = "compressai-factorized"
        self.label = "bmshj2018-factorized (CompressAI)"
        self.qualities = list(range(1, len(paths) + 1))
        self.description = (
            f"CompressAI {compressai.__version__} bmshj2018-factorized, checkpoints "
            + ", ".join(p.name for p in paths)
        )
        self.version = f"compressai {compressai.__version__} " + ",".join(digests)

    def _net(self, quality: int) -> Any:
        if quality not in self._nets:
            import torch
            from compressai.models import FactorizedPrior

            state = torch.load(self._paths[quality - 1], map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            net = FactorizedPrior.from_state_dict(state).eval()
            net.update(force=True)
            self._nets[quality] = net
        return self._nets[quality]

    def encode(self, rgb: np.ndarray, quality: Quality) -> bytes:
        import torch
        import torch.nn.functional as F

        rgb = _as_rgb(rgb)
        h, w = rgb.shape[:2]
        x = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float()[None] / 255.0
        ph, pw = (-h) % 64, (-w) % 64
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        with torch.no_grad():
            out = self._net(int(quality)).compress(x)
        payload = out["strings"][0][0]
        return self._HEADER.pack(h, w, len(payload)) + bytes([int(quality)]) + payload

    def decode(self, data: bytes) -> np.ndarray:
        import torch

        h, w, n = self._HEADER.unpack_from(data)
        quality = data[self._HEADER.size]
        payload = data[self._HEADER.size + 1 : self._HEADER.size + 1 + n]
        H, W = h + (-h) % 64, w + (-w) % 64
        with torch.no_grad():
            x_hat = self._net(quality).decompress([[payload]], (H // 16, W // 16))["x_hat"]
        top, left = ((-h) % 64) // 2, ((-w) % 64) // 2
        x_hat = x_hat[0, :, top : top + h, left : left + w].clamp(0, 1)
        return (x_hat.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------
# registry

_REGISTRY: dict[str, Callable[..., BenchCodec]] = {
    "aecodec": lambda model=None, **_: AecodecBench(model),
    "jpeg": lambda **_: _jpeg(2)(),
    "jpeg444": lambda **_: _jpeg(0)(),
    "webp": lambda **_: _webp(),
    "jpeg2000": lambda **_: _jpeg2000(),
    "avif": lambda **_: _avif("4:4:4", 6)(),
    "avif420": lambda **_: _avif("4:2:0", 6)(),
    "jxl": lambda **_: ImagecodecsJxl(),
    "compressai-factorized": lambda compressai_checkpoints=(), **_: CompressAIFactorized(
        compressai_checkpoints
    ),
}


def codec_names() -> list[str]:
    """All registered codec names."""
    return list(_REGISTRY)


def make_codec(name: str, **options: Any) -> BenchCodec:
    """Build a codec by registry name.

    Args:
        name: One of :func:`codec_names`.
        **options: ``model`` (aecodec model name), ``compressai_checkpoints`` (list of paths).

    Returns:
        The codec.

    Raises:
        KeyError: Unknown name.
        CodecUnavailable: The codec cannot run in this environment (message says why).
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}; choose from {', '.join(_REGISTRY)}") from None
    return factory(**options)
