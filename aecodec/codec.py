"""The codec: model + integer tables + entropy coder + container, loaded once and reused.

::

    image --imageio.load--> Picture (uint8 RGB [H, W, 3], mode, alpha, ICC, EXIF)
      -> tiles (raster order), each edge-padded to a multiple of 16
      -> VQVAE.analyse (tile + 64 px margin) -> VQVAE.quantize -> int [G, h, w]
      -> entropy.encode_indices -> tile payload
      -> container.pack (header, tile payloads, zlib alpha, ICC, EXIF, CRC32) -> bytes

Decoding reverses it; the indices it decodes depend only on integers (the file and the
model's integer tables), never on floating-point results.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import weakref
import zlib
from collections import OrderedDict
from typing import Any

import numpy as np

from aecodec import container, imageio
from aecodec import runtime as _runtime
from aecodec.entropy import EntropyTables, decode_tiles, encode_indices
from aecodec.errors import FormatError, ImageError, ModelError
from aecodec.weightsfile import load_weights, network

DEFAULT_TILE = 1024
# Pixels of neighbouring tiles the transforms see around each tile (a multiple of 16).
MARGIN = 64
MAX_TILE_SIDE = 2048
"""Largest tile side the encoder writes and the decoder accepts (after clipping to the image).

The entropy decoder's buffers grow with the tile's area, so this bounds them whatever a
file's header claims; the format itself allows tile sides up to
:data:`aecodec.container.MAX_TILE_SIDE` (65520).
"""
MAX_TILES = 256
"""Most tiles per image the encoder writes and the decoder accepts (an image of 2^28 pixels,
the default pixel limit, needs 256 tiles of 1024x1024; longer sides need larger tiles).

Every tile has a fixed entropy-decoding cost (one ``decode`` call per coding run of each of
its channel groups; the numpy work per group is shared by the tiles of a batch,
:data:`DECODE_BATCH_POSITIONS`): about 5 ms per tile on the 384-group default model
(256 tiles of 128x128 on a 16384x160 image: +1.2 s over 16 tiles), so this and
:func:`max_tiles` keep a small file of tiny tiles from multiplying it.
"""
MEAN_TILE_AREA = 4096
"""Pixels per tile, on average, that an image's tile count may not go below (plus a tile per
64 pixels of each side for the clipped tiles at the edges): see :func:`max_tiles`."""
MIN_TILE_ALLOWANCE = 16
"""Tiles any image may have, however small (small tiles on small images are cheap)."""
DECODE_BATCH_POSITIONS = 4096
"""Latent positions of the same-size tiles the entropy decoder decodes together (those of one
1024x1024 tile): the fixed per-group numpy work is paid once per batch instead of once per
tile (256 tiles of 128x128: 5x faster), and the buffers stay those of one default tile."""
FINE_CACHE = 2
"""Fine (between-level) qualities whose mixed tables and code lengths a codec keeps, least
recently used dropped first (about 80 MB each for the default model: 13 MB of rows, 63 MB of
code lengths; making them takes about 0.1 s); whole levels are kept as before."""
ENCODER_REVISION = 2
"""Bumped whenever the encoder's choices change for the same model (same file format, other
bytes): 2 = three assignment passes for 1-D codebooks. Benchmarks key cached results on it."""

SYNTHESIS_WINDOW = DEFAULT_TILE
"""Side of the windows the synthesis transform decodes, whatever the file's tile size (the
encoder's default tile size, so a file written with default tiles is synthesized tile by tile
with no extra margins: 512 made a 768x512 decode ~25 % slower).

Each window is decoded with a margin of :data:`MARGIN` pixels of latents around it, which
covers the synthesis transform's receptive field (under 2 latents), so windows join exactly
as tiles do. Memory for the networks is therefore bounded by a constant of the decoder's
choosing, and tiny tiles cost no more synthesis than large ones.
"""

# Codecs alive in this process, and codecs rebuilt here from a pickle (kept: a worker process
# loads each model once, however many tasks it runs). Keyed by (model, tile_size, runtime).
_alive_codecs: weakref.WeakValueDictionary[tuple[str | None, int, str], Codec] = (
    weakref.WeakValueDictionary()
)
_unpickled_codecs: dict[tuple[str | None, int, str], Codec] = {}
_registry_lock = threading.RLock()
_fork_hook_installed = False
# Every codec of this process, so that a forked child can make their locks and sessions anew.
_every_codec: weakref.WeakSet[Codec] = weakref.WeakSet()


def _never_destroy(session: Any) -> None:
    """Keep an ONNX Runtime session a forked child inherited alive for good, past the
    interpreter's finalization: its destructor joins the session's intra-op threads, which did
    not survive the fork, and would wait forever (at the latest when the child exits)."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(session))


def _after_fork_in_child() -> None:
    """In a forked child: locks a parent thread may have held are made anew, every codec makes
    its ONNX Runtime sessions again on first use, and torch (whose OpenMP pool does not survive
    fork()) runs single-threaded."""
    global _registry_lock
    _registry_lock = threading.RLock()
    for codec in list(_every_codec):
        codec._drop_inherited_state()
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(1)


def _install_fork_hook() -> None:
    """Make forked workers (Linux's default ``multiprocessing`` start method) safe.

    A forked child inherits the parent's threads' state but not the threads: OpenMP's pool is
    broken (the first multi-threaded torch operation hangs forever), ONNX Runtime sessions
    cannot run or even be destroyed, and a lock another thread held stays held. After a fork
    the child therefore starts these afresh (:func:`_after_fork_in_child`); torch runs with one
    thread (results are identical: the arithmetic does not depend on the thread count).
    """
    global _fork_hook_installed
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True


def _restore(model: str | None, tile_size: int, sha256: str, rt: str = "auto") -> Codec:
    """Unpickle a :class:`Codec`: reuse one of this process's codecs, else load it once."""
    key = (model, tile_size, rt)
    with _registry_lock:
        codec = _alive_codecs.get(key) or _unpickled_codecs.get(key)
        if codec is None or codec.sha256 != sha256:
            codec = Codec(model, tile_size, runtime=rt)
            if codec.sha256 != sha256:
                raise ModelError(
                    f"model {codec.name!r} here has other weights (sha256 {codec.sha256[:12]}) "
                    f"than the pickled codec ({sha256[:12]}); install the same aecodec everywhere"
                )
            _unpickled_codecs[key] = codec
        return codec


class Codec:
    """A loaded model, ready to compress and decompress; thread-safe and picklable.

    Pickling sends only the model's name (and weights hash): a worker process loads the
    weights on the first task and reuses them for the next ones. Worker processes may be
    spawned (``multiprocessing.get_context("spawn")``, :mod:`aecodec.batch`) or forked (Linux's
    default): forked children run torch single-threaded, since its thread pool does not survive
    ``fork()``, and make their own ONNX Runtime sessions. A child of a bare ``os.fork()`` must
    end with ``os._exit()``, as ``multiprocessing``'s and DataLoader's workers do: ONNX
    Runtime's exit handlers wait for the parent's threads.

    Args:
        model: bundled model name, path to a ``.safetensors`` weights file, or ``None`` for
            the default bundled model.
        tile_size: tile side in pixels (multiple of 16, at most :data:`MAX_TILE_SIDE`);
            larger images are coded as independent tiles so memory stays bounded.
        runtime: the decoder's networks: ``"auto"`` (ONNX Runtime where the model ships a
            graph and ``onnxruntime`` is installed, so decoding never imports torch; else
            torch), ``"onnx"`` or ``"torch"`` (see :mod:`aecodec.runtime`). Encoding always
            runs in torch, imported on the first :meth:`compress`.

    Example:
        >>> codec = Codec()
        >>> data = codec.compress("photo.png", quality=codec.default_quality)
        >>> codec.decompress(data).save("photo.decoded.png")
    """

    def __init__(
        self, model: str | None = None, tile_size: int = DEFAULT_TILE, runtime: str = "auto"
    ) -> None:
        align = container.TILE_ALIGN
        if tile_size < align or tile_size % align or tile_size > MAX_TILE_SIDE:
            raise ValueError(
                f"tile_size must be a multiple of {align} in {align}..{MAX_TILE_SIDE}, "
                f"got {tile_size}"
            )
        if runtime not in _runtime.RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}: choose auto, onnx or torch")
        _install_fork_hook()
        self._model_arg = model
        self.tile_size = tile_size
        self.runtime = runtime
        weights = load_weights(model)
        if weights.config.downsampling != container.TILE_ALIGN:
            raise ModelError(
                f"model {weights.name!r} downsamples by {weights.config.downsampling}, but the "
                f"file format aligns tiles to {container.TILE_ALIGN}: it cannot code .aec files"
            )
        self._weights = weights
        self._net: Any = None
        self._net_lock = threading.Lock()
        self._synthesis: Any = None  # the ONNX decoder, made on the first decode
        self._synthesis_ready = 0  # the process it was made in (0: not made yet)
        self._analysis: Any = None  # the ONNX encoder, made on the first encode
        self._analysis_ready = 0
        self.name = weights.name
        self.config = weights.config
        self.sha256 = weights.sha256
        self._stream_hash = weights.stream_hash
        self.tables = weights.tables
        self.default_quality = weights.default_quality
        # Code lengths the encoder's entropy-constrained assignment uses, built per quality on
        # first use ([G, C, K] float32: 63 MB each for 240 contexts; decoding needs none).
        self._bits: dict[int, Any] = {}
        # Fine qualities: (mixed tables, code lengths or None) by hundredths, least recent first.
        self._fine: OrderedDict[int, list[Any]] = OrderedDict()
        self._fine_lock = threading.Lock()
        if runtime == "onnx":  # asked for explicitly: fail now if it cannot be had
            self._onnx_synthesis()
        with _registry_lock:
            _alive_codecs.setdefault((model, tile_size, runtime), self)
            _every_codec.add(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (self._model_arg, self.tile_size, self.sha256, self.runtime))

    @property
    def net(self) -> Any:
        """The model's torch network (:class:`aecodec.model.vqvae.VQVAE`), built on first use:
        the encoder always needs it, the decoder only without an ONNX graph."""
        with self._net_lock:
            if self._net is None:
                self._net = network(self._weights)
                threads = _runtime.threads()
                if threads:
                    import torch

                    torch.set_num_threads(threads)
            return self._net

    @property
    def decodes_with(self) -> str:
        """``"onnx"`` or ``"torch"``: what this codec's decoder runs its networks on."""
        return "torch" if self._onnx_synthesis() is None else "onnx"

    @property
    def encodes_with(self) -> str:
        """``"onnx"`` or ``"torch"``: what this codec's encoder runs its analysis on."""
        return "torch" if self._onnx_analysis() is None else "onnx"

    def _onnx_analysis(self) -> Any:
        """The ONNX Runtime encoder (:func:`aecodec.runtime.load_analysis`), or ``None`` for
        torch; made on first use, and again in a forked child."""
        with self._net_lock:
            if self._analysis_ready != os.getpid():
                if self._analysis is not None:  # a child forked without the hook: keep it
                    _never_destroy(self._analysis)
                self._analysis = _runtime.load_analysis(self._weights, self.runtime)
                self._analysis_ready = os.getpid()
            return self._analysis

    def _onnx_synthesis(self) -> Any:
        """The ONNX Runtime decoder (:func:`aecodec.runtime.load_synthesis`), or ``None`` for
        torch; made on first use (an encoder never pays for it), and again in a forked child
        (a DataLoader worker): an ONNX Runtime session does not survive a fork."""
        with self._net_lock:
            if self._synthesis_ready != os.getpid():
                if self._synthesis is not None:  # a child forked without the hook: keep it
                    _never_destroy(self._synthesis)
                self._synthesis = _runtime.load_synthesis(self._weights, self.runtime)
                self._synthesis_ready = os.getpid()
            return self._synthesis

    def _drop_inherited_state(self) -> None:
        """In a forked child (:func:`_after_fork_in_child`): new locks; the parent's ONNX
        Runtime sessions set aside (never destroyed here), to be made again on first use."""
        self._net_lock = threading.Lock()
        self._fine_lock = threading.Lock()
        for session in (self._synthesis, self._analysis):
            if session is not None:
                _never_destroy(session)
        self._synthesis = self._analysis = None
        self._synthesis_ready = self._analysis_ready = 0

    @property
    def qualities(self) -> list[int]:
        """The trained quality levels, ascending (lowest rate first). Any quality from the first
        to the last in steps of 0.01 codes too (between two levels: see :meth:`tables_at`)."""
        return list(range(1, self.config.num_qualities + 1))

    @property
    def weights_hash(self) -> bytes:
        """The 8 bytes of the weights' sha256 written into every bitstream (of the file the
        weights were first bundled as, for models re-written in weights format 2)."""
        return self._stream_hash

    def _check_quality(self, quality: float | None) -> float:
        """The quality as the header stores it (an int for a whole level, e.g. 5 or 5.37)."""
        if quality is None:
            return self.default_quality
        steps = container.quality_steps(quality)
        top = self.config.num_qualities
        if not container.QUALITY_STEPS <= steps <= top * container.QUALITY_STEPS:
            raise ValueError(
                f"quality {container.quality_from_steps(steps)} is not available; choose 1..{top} "
                "(a level, or a number with up to two decimals between two levels)"
            )
        return container.quality_from_steps(steps)

    def tables_at(self, quality: float) -> tuple[EntropyTables, int]:
        """The integer tables that code ``quality`` and the quality index into them.

        A whole level q uses the model's tables at index q - 1. A quality between the levels a
        and a + 1 (a fraction of ``n`` hundredths) uses :meth:`EntropyTables.between` (a - 1,
        n / 100): rows mixed from the two levels' by integer arithmetic, index 0; they are
        cached for the last :data:`FINE_CACHE` fine qualities.
        """
        steps = container.quality_steps(quality)
        whole, fraction = divmod(steps, container.QUALITY_STEPS)
        if fraction == 0:
            return self.tables, whole - 1
        return self._fine_entry(steps)[0], 0

    def _fine_entry(self, steps: int) -> list[Any]:
        """``[tables, code lengths or None]`` of a fine quality (LRU of :data:`FINE_CACHE`)."""
        with self._fine_lock:
            entry = self._fine.get(steps)
            if entry is not None:
                self._fine.move_to_end(steps)
                return entry
        whole, fraction = divmod(steps, container.QUALITY_STEPS)
        tables = self.tables.between(whole - 1, fraction, container.QUALITY_STEPS)
        with self._fine_lock:
            entry = self._fine.setdefault(steps, [tables, None])
            while len(self._fine) > FINE_CACHE:
                self._fine.popitem(last=False)
        return entry

    @staticmethod
    def _gain_index(quality: float) -> float:
        """The (fine) quality index of the gains, quality - 1 (exact for whole levels)."""
        steps = container.QUALITY_STEPS
        return (container.quality_steps(quality) - steps) / steps

    # ------------------------------------------------------------------------ encode
    def compress(
        self,
        image: imageio.ImageInput,
        quality: float | None = None,
        *,
        metadata: imageio.Metadata = "all",
        max_pixels: int | None = None,
        warn_pixels: int | None = None,
    ) -> bytes:
        """Compress an image to ``.aec`` bytes.

        Args:
            image: ``PIL.Image``, numpy ``uint8`` array ``[H, W]``, ``[H, W, 1|2|3|4]``, a path,
                or a binary file object of an image file.
            quality: a level of :attr:`qualities`, or a number with up to two decimals between
                the first and the last (e.g. 5.37); ``None`` = :attr:`default_quality`.
            metadata: what to carry: ``"all"`` (ICC profile and EXIF), ``"icc"``, ``"exif"``
                or ``"none"``. The EXIF orientation is applied to the pixels either way.
            max_pixels: refuse images with more pixels (checked from the image header before
                decoding a file); ``None`` reads :data:`aecodec.container.MAX_PIXELS`.
            warn_pixels: warn above this many pixels; ``None`` reads
                :data:`aecodec.container.WARN_PIXELS`.

        Returns:
            The complete file (header, payloads, CRC32).

        Raises:
            ImageError: the image cannot be read, is over the pixel limit, or would need more
                than :data:`MAX_TILES` tiles at this codec's ``tile_size``.
        """
        q = self._check_quality(quality)
        imageio.check_metadata(metadata)  # a bad choice fails before the image is read
        pic = imageio.keep_metadata(
            imageio.load(image, max_pixels=max_pixels, warn_pixels=warn_pixels), metadata
        )
        tw = min(self.tile_size, container.align_up(pic.width))
        th = min(self.tile_size, container.align_up(pic.height))
        rects = imageio.tiles(pic.width, pic.height, tw, th)
        if len(rects) > max_tiles(pic.width, pic.height):
            raise ImageError(
                f"a {pic.width}x{pic.height} image in {tw}x{th} tiles needs {len(rects)} tiles, "
                f"over the limit of {max_tiles(pic.width, pic.height)}; use a larger tile_size"
            )
        payloads = [self._encode_tile(pic.rgb, rect, q) for rect in rects]
        alpha = zlib.compress(pic.alpha.tobytes(), 9) if pic.alpha is not None else None
        header = container.Header(
            model=self.name,
            weights_hash=self.weights_hash,
            quality=q,
            width=pic.width,
            height=pic.height,
            mode=pic.mode,
            tile_width=tw,
            tile_height=th,
        )
        bs = container.Bitstream(header, tuple(payloads), alpha=alpha, icc=pic.icc, exif=pic.exif)
        return container.pack(bs)

    def encode_tile_indices(
        self, rgb: np.ndarray, rect: tuple[int, int, int, int], quality: float
    ) -> np.ndarray:
        """VQ indices of one tile of an image.

        The analysis transform sees the tile plus a margin of :data:`MARGIN` pixels of its
        neighbours (clipped to the image), so tiles join without seams; only the tile's own
        latent positions are kept.

        Args:
            rgb: ``uint8 [H, W, 3]``, the whole image.
            rect: ``(x, y, w, h)`` of the tile; x and y multiples of 16.
            quality: quality (a level, or between two levels).

        Returns:
            ``int64 [G, ceil(h/16), ceil(w/16)]``.
        """
        q = self._check_quality(quality)
        x, y, w, h = rect
        s = self.config.downsampling
        x0, y0 = max(0, x - MARGIN), max(0, y - MARGIN)
        x1 = min(rgb.shape[1], x + w + MARGIN)
        y1 = min(rgb.shape[0], y + h + MARGIN)
        region = imageio.pad_to_multiple(rgb[y0:y1, x0:x1], s)
        ly, lx = (y - y0) // s, (x - x0) // s
        keep = (slice(ly, ly + -(-h // s)), slice(lx, lx + -(-w // s)))
        bits, mean_bits = self._code_lengths(q)
        analysis = self._onnx_analysis()
        if analysis is not None:  # no torch
            lat = analysis.analyse(region, self._gain_index(q))[:, keep[0], keep[1]]
            return analysis.assign(lat, bits, mean_bits)
        import torch

        t = torch.tensor(region).permute(2, 0, 1)[None].float() / 255.0
        with torch.inference_mode():
            lat = self.net.analyse(t, self._gain_index(q))[:, :, keep[0], keep[1]]
            lut = torch.from_numpy(self.tables.level_lut)
            idx = self.net.quantize(lat, torch.from_numpy(bits), lut)
        return idx[0].numpy()

    def _code_lengths(self, quality: float) -> tuple[np.ndarray, np.ndarray]:
        """``float32 [G, C, K]`` code lengths of the tables of ``quality`` and their average
        over the contexts ``[G, K]`` (cached; thread-safe: a race only computes them twice)."""
        tables, q = self.tables_at(quality)
        if tables is not self.tables:  # a fine quality: kept with its tables
            entry = self._fine_entry(container.quality_steps(quality))
            if entry[1] is None:
                entry[1] = _with_mean(tables.code_lengths(q))
            return entry[1]
        bits = self._bits.get(q)
        if bits is None:
            bits = self._bits[q] = _with_mean(self.tables.code_lengths(q))
        return bits

    def _encode_tile(self, rgb: np.ndarray, rect: tuple[int, int, int, int], q: float) -> bytes:
        return encode_indices(self.encode_tile_indices(rgb, rect, q), *self.tables_at(q))

    # ------------------------------------------------------------------------ decode
    def decompress(
        self,
        data: bytes | container.Bitstream,
        max_pixels: int | None = None,
        warn_pixels: int | None = None,
    ) -> Any:
        """Decode ``.aec`` bytes to a ``PIL.Image`` of the original size and mode.

        Args:
            data: the complete file, or the file already parsed by
                :func:`aecodec.container.unpack` (not parsed again).
            max_pixels: refuse images with more pixels; ``None`` reads
                :data:`aecodec.container.MAX_PIXELS`.
            warn_pixels: warn (:class:`~aecodec.errors.LargeImageWarning`) above this many
                pixels; ``None`` reads :data:`aecodec.container.WARN_PIXELS`.

        Raises:
            FormatError: the data is not a valid file, or exceeds a decoding limit (pixels,
                tile size, tile count); the message says what is wrong.
            ModelError: the file was made by another model or other weights.
        """
        rgb, bs, alpha = self._decode(data, max_pixels, warn_pixels)
        return imageio.to_pil(rgb, bs.header.mode, alpha, icc=bs.icc, exif=bs.exif)

    def decompress_array(
        self,
        data: bytes | container.Bitstream,
        max_pixels: int | None = None,
        warn_pixels: int | None = None,
    ) -> tuple[np.ndarray, container.Bitstream]:
        """Decode the colour planes: ``uint8 [H, W, 3]`` and the parsed bitstream.

        ``data`` is the file, or the file already parsed by :func:`aecodec.container.unpack`.

        Memory beyond the output is bounded by constants of the decoder (the index grid of
        ``H*W/256`` bytes per group, one tile of :data:`MAX_TILE_SIDE` for the entropy decoder,
        one window of :data:`SYNTHESIS_WINDOW` for the networks), never by the file's tile size.
        """
        rgb, bs, _ = self._decode(data, max_pixels, warn_pixels)
        return rgb, bs

    def _decode(
        self,
        data: bytes | container.Bitstream,
        max_pixels: int | None,
        warn_pixels: int | None,
    ) -> tuple[np.ndarray, container.Bitstream, np.ndarray | None]:
        """``(colour uint8 [H, W, 3], bitstream, alpha uint8 [H, W] or None)``: every cheap
        check (model, quality, tiling, pixels, the alpha plane inflated) before the colour
        planes' decoding, so a file that cannot decode is refused in milliseconds."""
        bs = data if isinstance(data, container.Bitstream) else container.unpack(data, max_pixels)
        h = bs.header
        self.check_model(h)
        if h.quality_steps > self.config.num_qualities * container.QUALITY_STEPS:
            raise FormatError(
                f"quality {h.quality} is out of range for model {self.name!r} "
                f"(1..{self.config.num_qualities})"
            )
        check_tiling(h)
        container.check_pixels(h.width, h.height, max_pixels=max_pixels, warn_pixels=warn_pixels)
        alpha = None
        if h.mode in container.ALPHA_MODES:
            if bs.alpha is None:
                raise FormatError(f"mode {h.mode} but the file has no alpha plane")
            alpha = _inflate_alpha(bs.alpha, h.width, h.height)
        elif bs.alpha is not None:
            raise FormatError(f"mode {h.mode} has no alpha, but the file carries an alpha plane")
        return self._decode_colour(bs), bs, alpha

    def _decode_colour(self, bs: container.Bitstream) -> np.ndarray:
        """The colour planes ``uint8 [H, W, 3]`` of a checked bitstream."""
        h = bs.header
        s = self.config.downsampling
        # 1. Entropy-decode every tile's indices (integers only) into one latent grid.
        dtype = np.uint8 if self.config.codebook_size <= 256 else np.int16
        tables, q = self.tables_at(h.quality)
        grid = np.empty((self.config.num_groups, -(-h.height // s), -(-h.width // s)), dtype)
        rects = imageio.tiles(h.width, h.height, h.tile_width, h.tile_height)
        for batch in _tile_batches(rects, s):
            lh, lw = -(-rects[batch[0]][3] // s), -(-rects[batch[0]][2] // s)
            idx = decode_tiles([bs.tiles[i] for i in batch], tables, q, lh, lw)
            for i, tile_idx in zip(batch, idx, strict=True):
                x, y = rects[i][0] // s, rects[i][1] // s
                grid[:, y : y + lh, x : x + lw] = tile_idx
        # 2. Synthesize in fixed windows (not the file's tiles), each with a margin of
        #    neighbouring latents, so there are no seams and memory does not depend on the file.
        out = np.empty((h.height, h.width, 3), dtype=np.uint8)
        m = MARGIN // s
        for x, y, w, th in synthesis_windows(h.width, h.height):
            ly0, lx0 = max(0, y // s - m), max(0, x // s - m)
            ly1 = min(grid.shape[1], -(-(y + th) // s) + m)
            lx1 = min(grid.shape[2], -(-(x + w) // s) + m)
            x_hat = self._synthesize(grid[:, ly0:ly1, lx0:lx1], self._gain_index(h.quality))
            oy, ox = y - ly0 * s, x - lx0 * s
            tile = np.round(x_hat[:, oy : oy + th, ox : ox + w] * np.float32(255.0))
            out[y : y + th, x : x + w] = tile.astype(np.uint8).transpose(1, 2, 0)
            del x_hat, tile
        return out

    def _synthesize(self, idx: np.ndarray, q: float) -> np.ndarray:
        """``int [G, h, w]`` indices at fine quality index ``q`` -> ``float32 [3, 16h, 16w]``
        in ``[0, 1]``, on ONNX Runtime or torch (:attr:`decodes_with`)."""
        synthesis = self._onnx_synthesis()
        if synthesis is not None:
            return synthesis(idx, q)
        import torch

        window = torch.from_numpy(idx[None].astype(np.int64))
        with torch.inference_mode():
            return self.net.decode_indices(window, q)[0].numpy()

    def check_model(self, header: container.Header) -> None:
        """Raise :class:`ModelError` unless the file was made by this model's weights."""
        if header.model != self.name:
            raise ModelError(
                f"the file was made by model {header.model!r}, which this codec does not hold "
                f"(loaded: {self.name!r}); install a version of aecodec that bundles it"
            )
        if header.weights_hash != self.weights_hash:
            raise ModelError(
                f"the file was made by other weights of model {header.model!r} "
                f"(hash {header.weights_hash.hex()}, loaded {self.weights_hash.hex()})"
            )


def max_tiles(width: int, height: int) -> int:
    """Most tiles an image of ``width`` x ``height`` may be coded in:
    ``ceil(W * H / MEAN_TILE_AREA) + ceil(W / 64) + ceil(H / 64)`` (tiles of 64x64 or larger,
    with their clipped edges), at least :data:`MIN_TILE_ALLOWANCE`, at most :data:`MAX_TILES`.
    """
    by_area = -(-width * height // MEAN_TILE_AREA) + -(-width // 64) + -(-height // 64)
    return min(MAX_TILES, max(MIN_TILE_ALLOWANCE, by_area))


def _with_mean(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Code lengths ``[G, C, K]`` as float32 and their float32 mean over the contexts."""
    bits = lengths.astype(np.float32)
    return bits, bits.mean(axis=1, dtype=np.float32)


def _tile_batches(rects: list[tuple[int, int, int, int]], s: int) -> list[list[int]]:
    """The tiles ``(x, y, w, h)`` decoded together (:func:`aecodec.entropy.decode_tiles`):
    runs of tiles of one latent size, of at most :data:`DECODE_BATCH_POSITIONS` latent
    positions in all (a tile larger than that alone)."""
    batches: list[list[int]] = []
    size, total = None, 0
    for i, (_, _, w, h) in enumerate(rects):
        shape = (-(-h // s), -(-w // s))
        area = shape[0] * shape[1]
        if shape != size or total + area > DECODE_BATCH_POSITIONS:
            batches.append([])
            size, total = shape, 0
        batches[-1].append(i)
        total += area
    return batches


def synthesis_windows(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The windows ``(x, y, w, h)`` the synthesis decodes: at most
    :data:`SYNTHESIS_WINDOW` wide and of about ``SYNTHESIS_WINDOW ** 2`` pixels, so a thin
    image (1 x 2,097,152) takes a few tall windows instead of thousands of 1 x 1024 ones."""
    align = container.TILE_ALIGN
    ww = min(SYNTHESIS_WINDOW, container.align_up(width))
    wh = min(container.align_up(height), SYNTHESIS_WINDOW * SYNTHESIS_WINDOW // ww // align * align)
    return imageio.tiles(width, height, ww, max(wh, align))


def check_tiling(header: container.Header) -> None:
    """Refuse tilings this decoder does not accept, before any decoding work.

    The container allows tile sides up to :data:`aecodec.container.MAX_TILE_SIDE` and any
    tile count the geometry implies; the decoder accepts what the encoder writes: tiles
    (clipped to the image) of at most :data:`MAX_TILE_SIDE` pixels a side and at most
    :data:`MAX_TILES` tiles.

    Raises:
        FormatError: the tile size or the tile count exceeds the decoder's limit.
    """
    tw = min(header.tile_width, container.align_up(header.width))
    th = min(header.tile_height, container.align_up(header.height))
    if max(tw, th) > MAX_TILE_SIDE:
        raise FormatError(
            f"tile size {tw}x{th} exceeds the decoder's limit of {MAX_TILE_SIDE} pixels a side "
            "(aecodec encoders write at most that); the file was not made by aecodec"
        )
    if header.num_tiles > MAX_TILES:
        raise FormatError(
            f"{header.num_tiles} tiles exceed the decoder's limit of {MAX_TILES} tiles "
            "(aecodec encoders write at most that); the file was not made by aecodec"
        )
    allowed = max_tiles(header.width, header.height)
    if header.num_tiles > allowed:
        raise FormatError(
            f"{header.num_tiles} tiles of {tw}x{th} for a {header.width}x{header.height} image "
            f"exceed the decoder's limit of {allowed} (tiles of 64x64 or larger on average; "
            "aecodec encoders write at most that); the file was not made by aecodec"
        )


def _inflate_alpha(payload: container.Payload, width: int, height: int) -> np.ndarray:
    """zlib-inflate the alpha plane, never producing more than ``width*height`` bytes."""
    size = width * height
    d = zlib.decompressobj()
    try:
        raw = d.decompress(payload, size)
        if d.unconsumed_tail or not d.eof or d.unused_data:
            raise FormatError("alpha plane is longer than width*height or has trailing data")
    except zlib.error as exc:
        raise FormatError(f"alpha plane does not inflate: {exc}") from exc
    if len(raw) != size:
        raise FormatError(f"alpha plane has {len(raw)} bytes, expected {size}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, width)
