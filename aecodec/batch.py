"""Batches of files on any :class:`concurrent.futures.Executor`: local processes or a cluster.

::

    from aecodec import batch
    jobs = batch.plan(paths, "out/")                        # [(src, dst)], dst = out/NAME.aec
    for r in batch.compress_files(jobs, quality=5, workers=2):   # local spawn process pool
        print(r.src, r.status, r.bytes, r.error)
    batch.compress_files(jobs, target_size=40_000)          # or target_bpp= / target_psnr=

    from distributed import Client                          # a Dask cluster
    with Client("tcp://scheduler:8786") as client:
        results = list(batch.compress_files(jobs, executor=client.get_executor()))

The codec travels to the workers as a pickle of its model name and weights hash, so each
worker process loads the weights once and reuses them for all its files. Workers read their
inputs by path (on a cluster: a filesystem the workers share) with the same checks as the rest
of aecodec (regular files only, ``.aec`` files header first, the pixel limits ``max_pixels`` /
``warn_pixels``) and send the bytes back; the caller's process writes every output with
:func:`aecodec.files.write_atomic` (atomic, never over an existing file). Jobs whose output
exists are skipped, so an interrupted batch resumes where it stopped. Every file gets a
:class:`FileResult`, failures and warnings included; one bad file never stops the batch.
``workers=0`` runs the jobs in the calling process, one after the other (the command line's
``-j 1``): the same code, and the same results, as a pool; there the jobs may also read their
input from a hook (``read=``: the command line's stdin) and their output be written by one
(``write=``: its stdout).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from aecodec import container, files, output
from aecodec.errors import AecodecError, ImageError, collect_warnings
from aecodec.options import EncodeOptions

if TYPE_CHECKING:
    from PIL import Image

    from aecodec.codec import Codec
    from aecodec.container import Header
    from aecodec.imageio import ImageInput, Metadata

__all__ = [
    "FileResult",
    "RunOptions",
    "compress_files",
    "decompress_files",
    "encode_files",
    "plan",
]

StrPath = str | os.PathLike[str]
Job = tuple[Path, Path]


@dataclass(frozen=True)
class FileResult:
    """What happened to one file of a batch.

    Attributes:
        src: the input.
        dst: the output.
        status: ``"done"``, ``"skipped"`` (the output existed) or ``"failed"``.
        bytes: size of the ``.aec`` file (compressed or read); ``None`` if failed or skipped.
        bpp: bits per pixel of the ``.aec`` file.
        quality: quality of the ``.aec`` file (an int for a level, e.g. 5 or 5.37).
        seconds: coding time in the worker.
        psnr: PSNR (dB, RGB) of the decoding, when asked for (or the target was a PSNR; or
            against a decompression's ``reference``).
        target_met: with a ``target_*``: whether the file meets it (if not, it is the closest
            quality); ``None`` without a target.
        trials: with a ``target_*``: the encodes the search ran.
        error: one-line reason of a failure.
        warnings: the one-line :class:`aecodec.AecodecWarning` messages the worker issued for
            this file (a large image, a 16-bit image reduced to 8 bits, ...).
        width: a decompression's image width (``None`` for a compression).
        height: a decompression's image height.
        mode: a decompression's image mode (``"RGB"``, ``"L"``, ...).
    """

    src: Path
    dst: Path
    status: Literal["done", "skipped", "failed"]
    bytes: int | None = None
    bpp: float | None = None
    quality: float | None = None
    seconds: float | None = None
    psnr: float | None = None
    target_met: bool | None = None
    trials: int | None = None
    error: str | None = None
    warnings: tuple[str, ...] = ()
    width: int | None = None
    height: int | None = None
    mode: str | None = None


def plan(
    sources: Iterable[StrPath],
    output_dir: StrPath | None = None,
    *,
    name: Callable[[Path], Path] = output.compressed_name,
) -> list[Job]:
    """Pair inputs with outputs: the default name, beside the input or in ``output_dir``.

    Args:
        sources: input paths.
        output_dir: folder for the outputs; ``None`` writes each beside its input.
        name: the naming rule (:func:`aecodec.output.compressed_name` or
            :func:`aecodec.output.decompressed_name`).
    """
    jobs = []
    for s in sources:
        src = Path(s)
        dst = name(src)
        jobs.append((src, dst if output_dir is None else Path(output_dir) / dst.name))
    return jobs


def _set_threads(threads: int | None) -> None:
    from aecodec import runtime

    runtime.set_threads(threads)


def _psnr(codec: Codec, reference: Any, data: bytes, limits: dict[str, Any]) -> float:
    from aecodec import imageio

    decoded = codec.decompress(data, **limits)
    return _psnr_of(imageio.load(reference, **limits).rgb, decoded)


def _psnr_of(reference: Any, decoded: Image.Image) -> float:
    """PSNR (dB, RGB) of ``decoded`` against a reference's ``uint8 [H, W, 3]``."""
    import numpy as np

    from aecodec.metrics import psnr_rgb

    return psnr_rgb(reference, np.asarray(decoded.convert("RGB")))


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        name = f"{exc.filename}: " if exc.filename else ""
        return " ".join(f"{name}{exc.strerror}".split())
    return " ".join(str(exc).split()) or type(exc).__name__


def _write_error(dst: Path, exc: OSError) -> str:
    """The error of an output that cannot be written, led by its path (the file at fault)."""
    reason = " ".join((exc.strerror or str(exc)).split()) or type(exc).__name__
    if isinstance(exc, FileExistsError):  # "exists; not overwritten without force=True"
        return f"{dst}: {reason}"
    return f"{dst}: cannot write: {reason}"


def _once(messages: list[str]) -> tuple[str, ...]:
    """Each message once, in order (measuring the PSNR reads the image again and repeats
    its warnings)."""
    return tuple(dict.fromkeys(messages))


_Fields = dict[str, Any]
"""What a task found: the :class:`FileResult` fields besides ``src``, ``dst`` and ``status``."""


def _attempt(work: Callable[[], tuple[bytes, _Fields]]) -> tuple[bytes | None, _Fields]:
    """Worker side: run one task's ``work``; returns ``(data, fields)``, or ``(None, fields)``
    with the one-line ``error`` of a file that failed; ``warnings`` are those aecodec issued
    meanwhile (collected per task, also in a multi-threaded worker), each once."""
    data: bytes | None
    with collect_warnings() as caught:
        try:
            data, fields = work()
        except (AecodecError, OSError, ValueError, TypeError) as exc:
            data, fields = None, {"error": _error_message(exc)}
    return data, {**fields, "warnings": _once(caught)}


def _compress_task(
    codec: Codec,
    src: Path,
    options: EncodeOptions,
    with_psnr: bool,
    read: Callable[[Path], ImageInput] | None = None,
) -> tuple[bytes | None, _Fields]:
    """Worker side: code one file (with a target, the quality is searched for it)."""

    def work() -> tuple[bytes, _Fields]:
        import aecodec
        from aecodec.ratecontrol import compress_with

        start = time.perf_counter()
        data, reached = compress_with(codec, src if read is None else read(src), options)
        seconds = time.perf_counter() - start
        header = aecodec.info(data, max_pixels=options.max_pixels)
        psnr = None if reached is None else reached.psnr
        if with_psnr and psnr is None:
            psnr = _psnr(codec, src if read is None else read(src), data, options.limits)
        found = {} if reached is None else {"target_met": reached.met, "trials": reached.trials}
        fields = {"bpp": header["bpp"], "quality": header["quality"], "seconds": seconds}
        return data, {"bytes": len(data), **fields, "psnr": psnr, **found}

    return _attempt(work)


@dataclass(frozen=True)
class _DecodeOptions:
    """What every job of :func:`decompress_files` does besides decoding (picklable)."""

    output_quality: int | None
    reference: Path | None
    max_pixels: int | None
    warn_pixels: int | None

    @property
    def limits(self) -> dict[str, Any]:
        return {"max_pixels": self.max_pixels, "warn_pixels": self.warn_pixels}


@contextmanager
def _making(dst: Path) -> Iterator[None]:
    """A failure to make the output (its format, its mode, its encoding) is about ``dst``:
    its message is led by the output's path, as a failed write's is (:func:`_write_error`)."""
    try:
        yield
    except OSError as exc:
        raise ImageError(_write_error(dst, exc)) from None
    except ValueError as exc:  # ImageError included
        raise ImageError(f"{dst}: {_error_message(exc)}") from None


def _reference(path: Path, header: Header, limits: dict[str, Any]) -> Any:
    """The ``uint8 [H, W, 3]`` of the image a decoding is compared with (read as a compressed
    input is), checked against the file's size before anything is decoded; a failure names
    the reference."""
    from aecodec import imageio

    try:
        ref = imageio.load(path, **limits)
    except (ImageError, OSError) as exc:
        raise ImageError(f"{path}: cannot read the PSNR reference: {exc}") from None
    if (ref.width, ref.height) != (header.width, header.height):
        raise ImageError(
            f"{path}: the PSNR reference is {ref.width}x{ref.height} but the decoded image "
            f"is {header.width}x{header.height}"
        )
    return ref.rgb


def _decompress_task(
    codec: Codec | None,
    src: Path,
    dst: Path,
    options: _DecodeOptions,
    read: Callable[[Path], bytes] | None = None,
) -> tuple[bytes | None, _Fields]:
    """Worker side: decode and encode the output image in memory (and measure the PSNR
    against the reference). The file is parsed once, and the output's format and mode, and
    the reference, are checked before the expensive decode."""

    def work() -> tuple[bytes, _Fields]:
        import io

        import aecodec

        start = time.perf_counter()
        limits = options.limits
        with _making(dst):
            fmt = output.image_format(dst, options.output_quality)
        data = files.read_aec(src) if read is None else read(src)  # regular files, header first
        bitstream = container.unpack(data, max_pixels=options.max_pixels)  # parsed once
        header = bitstream.header
        ref = None if options.reference is None else _reference(options.reference, header, limits)
        with _making(dst):
            output.check_mode(fmt, header.mode)
        if codec is not None and header.model == codec.name:
            img = codec.decompress(bitstream, **limits)
        else:  # the model the file names (loaded once per process)
            img = aecodec.decompress(bitstream, **limits)
        buf = io.BytesIO()
        with _making(dst):
            img.save(buf, format=fmt.name, **output.save_options(fmt, img))
        seconds = time.perf_counter() - start
        return buf.getvalue(), {
            "bytes": len(data),
            "bpp": header.bpp(len(data)),
            "quality": header.quality,
            "width": img.width,
            "height": img.height,
            "mode": img.mode,
            "seconds": seconds,
            "psnr": None if ref is None else _psnr_of(ref, img),
        }

    return _attempt(work)


class _InProcess(Executor):
    """``workers=0``: each task runs in this process as it is submitted, so the results come
    in order, each before the next file is read. An exception a task does not report
    propagates (a bug keeps its traceback; Ctrl-C stops the batch), and the warnings other
    libraries issue meanwhile (Pillow's on a corrupt EXIF block) join the result's, as
    ``Category: message``."""

    def submit(  # type: ignore[override]
        self, fn: Callable[..., tuple[bytes | None, _Fields]], /, *args: Any, **kwargs: Any
    ) -> Future[tuple[bytes | None, _Fields]]:
        with warnings.catch_warnings(record=True) as caught:  # this thread only runs tasks
            data, fields = fn(*args, **kwargs)
        others = [f"{w.category.__name__}: {w.message}" for w in caught]
        future: Future[tuple[bytes | None, _Fields]] = Future()
        future.set_result((data, {**fields, "warnings": _once([*fields["warnings"], *others])}))
        return future


def _write_new(dst: Path, data: bytes) -> None:
    """Default writer: :func:`aecodec.files.write_atomic` without ``force``: creates ``dst``
    atomically (temporary file, fsync, ``link()``), never over an existing file.

    Raises:
        FileExistsError: ``dst`` exists.
        OSError: ``dst`` cannot be written (a directory, a full disk, ...).
    """
    files.write_atomic(dst, lambda fh: fh.write(data), force=False)


class RunOptions(TypedDict, total=False):
    """Where and how a batch runs: the keywords of :func:`compress_files` and
    :func:`decompress_files` after the coding options (documented there)."""

    executor: Executor | None
    workers: int | None
    threads: int | None
    skip_existing: bool
    write: Callable[[Path, bytes], None]


def _run(
    jobs: Iterable[Job],
    submit: Callable[[Executor, Path, Path], Future[Any]],
    *,
    executor: Executor | None = None,
    workers: int | None = None,
    threads: int | None = None,
    skip_existing: bool = True,
    write: Callable[[Path, bytes], None] = _write_new,
) -> Iterator[FileResult]:
    own = executor is None
    if executor is None:
        executor = _InProcess() if workers == 0 else _pool(workers, threads)
    try:
        pending: dict[Future[Any], Job] = {}
        for src, dst in jobs:
            if skip_existing and dst.is_file():  # done by an earlier run: resume
                yield FileResult(src, dst, "skipped")
                continue
            future = submit(executor, src, dst)
            if future.done():  # in this process (workers=0): reported before the next job
                yield _finish(src, dst, future, skip_existing, write)
            else:
                pending[future] = (src, dst)
        for future in as_completed(pending):
            src, dst = pending.pop(future)
            yield _finish(src, dst, future, skip_existing, write)
    finally:
        if own:
            executor.shutdown(cancel_futures=True)


def _pool(workers: int | None, threads: int | None) -> Executor:
    """The local pool: ``workers`` spawned processes, ``threads`` inference threads each
    (imported here: ``workers=0``, the command line's ``-j 1``, starts faster without)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_set_threads,
        initargs=(threads,),
    )


def _finish(
    src: Path,
    dst: Path,
    future: Future[Any],
    skip_existing: bool,
    write: Callable[[Path, bytes], None],
) -> FileResult:
    """The result of a finished job, its output written."""
    try:
        data, fields = future.result()
    except Exception as exc:  # a worker died or the cluster failed: report, go on
        return FileResult(src, dst, "failed", error=f"{type(exc).__name__}: {exc}")
    if data is None:
        return FileResult(src, dst, "failed", **fields)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        write(dst, data)
    except OSError as exc:
        seen = fields["warnings"]
        if isinstance(exc, FileExistsError) and skip_existing:
            return FileResult(src, dst, "skipped", warnings=seen)  # appeared meanwhile
        return FileResult(src, dst, "failed", error=_write_error(dst, exc), warnings=seen)
    return FileResult(src, dst, "done", **fields)


def compress_files(
    jobs: Sequence[Job],
    *,
    codec: Codec | None = None,
    quality: float | None = None,
    target_bpp: float | None = None,
    target_size: int | None = None,
    target_psnr: float | None = None,
    metadata: Metadata = "all",
    psnr: bool = False,
    max_pixels: int | None = None,
    warn_pixels: int | None = None,
    executor: Executor | None = None,
    workers: int | None = None,
    threads: int | None = None,
    skip_existing: bool = True,
    write: Callable[[Path, bytes], None] = _write_new,
) -> Iterator[FileResult]:
    """Compress ``(src, dst)`` jobs in parallel; yields one result per job as they finish.

    The options are checked once (:class:`aecodec.options.EncodeOptions`), before any job.

    Args:
        jobs: pairs of input image and output ``.aec`` paths (see :func:`plan`).
        codec: the codec; ``None`` for the default model.
        quality: quality (a level, or up to two decimals between levels); ``None`` for the
            model's default.
        target_bpp: instead of ``quality``: for each file the highest quality whose file has
            at most this many bits per pixel (:func:`aecodec.ratecontrol.compress_to_target`;
            each result says whether it was met and in how many encodes).
        target_size: likewise, at most this many bytes per file.
        target_psnr: likewise, the lowest quality whose decoding reaches this PSNR (dB, RGB).
        metadata: ``"all"``, ``"icc"``, ``"exif"`` or ``"none"``.
        psnr: also decode each file and report its PSNR.
        max_pixels: refuse larger images (``None``: :data:`aecodec.container.MAX_PIXELS`).
        warn_pixels: report a warning above this many pixels (``None``:
            :data:`aecodec.container.WARN_PIXELS`).
        executor: where to run: any :class:`concurrent.futures.Executor`, e.g. a Dask
            ``Client(...).get_executor()``. ``None``: a local pool of spawned processes, shut
            down at the end.
        workers: processes of the local pool (``None``: one per CPU; ``0``: no pool, each job
            in this process in turn, its result yielded before the next starts).
        threads: inference threads per process of the local pool (``None``: the runtime's
            default).
        skip_existing: skip jobs whose output file exists (resume an interrupted batch),
            including one that appears while the job runs.
        write: ``write(dst, data)`` publishes an output; the default,
            :func:`aecodec.files.write_atomic` without ``force``, creates it atomically and
            never overwrites (``FileExistsError``).

    Raises:
        ValueError: several targets, a target together with ``quality``, or a quality or
            target that is not valid (:class:`aecodec.options.EncodeOptions`): before any job
            runs.
    """
    options = EncodeOptions.build(
        quality,
        target_bpp=target_bpp,
        target_size=target_size,
        target_psnr=target_psnr,
        metadata=metadata,
        max_pixels=max_pixels,
        warn_pixels=warn_pixels,
    )
    run = RunOptions(
        executor=executor,
        workers=workers,
        threads=threads,
        skip_existing=skip_existing,
        write=write,
    )
    return encode_files(jobs, options, codec=codec, psnr=psnr, **run)


def encode_files(
    jobs: Iterable[Job],
    options: EncodeOptions,
    *,
    codec: Codec | None = None,
    psnr: bool = False,
    read: Callable[[Path], ImageInput] | None = None,
    **run: Unpack[RunOptions],
) -> Iterator[FileResult]:
    """:func:`compress_files` with the encode options already built and checked
    (:meth:`aecodec.options.EncodeOptions.build`): the command line's way in, for ``-j 1``
    (``workers=0``) as for ``-j N``.

    Args:
        jobs: as for :func:`compress_files`; any iterable, taken one job at a time.
        options: what to code.
        codec: the codec; ``None`` for the default model.
        psnr: also decode each file and report its PSNR.
        read: what the worker codes for a job's input (default: the path, read by aecodec's
            checks), e.g. ``"-"`` -> a fresh stream of stdin's bytes; called again for the
            PSNR's reference. Across processes it must pickle.
        run: ``executor``, ``workers``, ``threads``, ``skip_existing`` and ``write``, as for
            :func:`compress_files`.

    Raises:
        ValueError: a quality the codec does not have: before any job runs.
    """
    if codec is None:
        import aecodec

        codec = aecodec.get_codec()
    if options.quality is not None:  # the codec's own check, once rather than in every job
        codec._check_quality(options.quality.value)
    shipped = codec

    def submit(ex: Executor, src: Path, dst: Path) -> Future[Any]:
        return ex.submit(_compress_task, shipped, src, options, psnr, read)

    return _run(jobs, submit, **run)


def decompress_files(
    jobs: Iterable[Job],
    *,
    codec: Codec | None = None,
    output_quality: int | None = None,
    reference: StrPath | None = None,
    max_pixels: int | None = None,
    warn_pixels: int | None = None,
    read: Callable[[Path], bytes] | None = None,
    executor: Executor | None = None,
    workers: int | None = None,
    threads: int | None = None,
    skip_existing: bool = True,
    write: Callable[[Path, bytes], None] = _write_new,
) -> Iterator[FileResult]:
    """Decompress ``(src, dst)`` jobs in parallel; ``dst``'s extension picks the image format.

    Arguments as for :func:`compress_files`, but ``jobs`` may be any iterable, taken one job
    at a time. ``output_quality`` allows a lossy output format (see
    :func:`aecodec.output.image_format`). Files of ``codec``'s model are decoded with it, any
    other file (every file with ``codec=None``) with the bundled model it names, loaded once
    per process. A failure to make an output (its format, its mode, its encoding) is an
    ``error`` led by the output's path, as a failed write's is. The results carry the decoded
    image's ``width``, ``height`` and ``mode``.

    Args:
        reference: an image every decoding is compared with (the command line's
            ``decompress --psnr REF``): read as :func:`compress_files` reads its inputs and
            checked against the file's size before the file is decoded; the results carry
            the PSNR (dB, RGB).
        read: the ``.aec`` bytes of a job's input (default: read by path, a regular file
            only, header first: :func:`aecodec.files.read_aec`), e.g. ``"-"`` -> stdin's.
            Across processes it must pickle.
    """
    options = _DecodeOptions(
        output_quality=output_quality,
        reference=None if reference is None else Path(reference),
        max_pixels=max_pixels,
        warn_pixels=warn_pixels,
    )

    def submit(ex: Executor, src: Path, dst: Path) -> Future[Any]:
        return ex.submit(_decompress_task, codec, src, dst, options, read)

    run = RunOptions(
        executor=executor,
        workers=workers,
        threads=threads,
        skip_existing=skip_existing,
        write=write,
    )
    return _run(jobs, submit, **run)
