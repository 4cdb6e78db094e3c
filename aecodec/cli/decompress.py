"""``aecodec decompress``: ``.aec`` files to images (lossless formats unless asked otherwise)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from PIL import Image

import aecodec
from aecodec import container, files
from aecodec import output as outputs
from aecodec.cli.common import (
    INPUT_PATH,
    STDIO,
    FileError,
    batch_writer,
    check_destination,
    check_not_written,
    destination,
    emit,
    expand_folders,
    fail,
    force_option,
    handle_interrupt,
    is_verbose,
    jobs_option,
    output_as_last_argument,
    output_key,
    pixel_options,
    plan_batch,
    quiet_option,
    recursive_option,
    report_batch,
    resolve_output,
    run_batch,
    set_quiet,
    set_threads,
    skip_existing_option,
    threads_option,
    verbose_option,
    write_atomic,
)
from aecodec.errors import AecodecError


@dataclass(frozen=True)
class _Job:
    """What ``decompress`` was asked to do, the same for every input."""

    output_quality: int | None
    reference: Path | None
    max_pixels: int | None
    warn_pixels: int | None
    as_json: bool
    verbose: bool
    force: bool
    skip_existing: bool
    to_stdout: bool
    out: Path | None
    output_is_dir: bool
    relative: dict[Path, Path] = field(default_factory=dict)  # files found in folders
    written: set[str] = field(default_factory=set)  # outputs of this run (never written twice)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=INPUT_PATH)
@click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="Output image (one input; its extension picks the format: .png, .tiff, .webp "
    "(lossless), .bmp, ...) or folder (an existing one, or any path ending in /, which is "
    "created). Default: each input with .png appended (photo.aec -> photo.aec.png, so the "
    "original photo.png is never touched).",
)
@click.option(
    "--output-quality",
    type=click.IntRange(1, 100),
    metavar="Q",
    default=None,
    help="Allow a lossy output format (.jpg, .avif, or lossy .webp) at this quality, 1-100. "
    "Without it, only exact formats are written.",
)
@click.option(
    "--psnr",
    "reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="REF",
    default=None,
    help="Also report the PSNR (dB, RGB) of the decoded image against the reference image REF, "
    "e.g. the original (like cwebp -print_psnr; one input; implies -v).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object per file (bytes, bpp, quality, size, mode, time, PSNR).",
)
@threads_option
@jobs_option
@pixel_options
@force_option
@skip_existing_option
@recursive_option
@quiet_option
@verbose_option
@click.pass_context
@handle_interrupt
def decompress(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    output: str | None,
    output_quality: int | None,
    reference: Path | None,
    as_json: bool,
    threads: int | None,
    jobs: int,
    max_pixels: int | None,
    warn_pixels: int | None,
    force: bool,
    skip_existing: bool,
    recursive: bool,
    quiet: bool,
    verbose_here: bool,
) -> None:
    """Decompress .aec files (or the .aec files in folders, -r: also in subfolders) to images
    (lossless PNG by default). - reads stdin.

    As with djxl, `aecodec decompress IN.aec OUT.png` writes OUT.png (two arguments, the last
    with an image extension; same as -o OUT.png). `-o /dev/null` decodes and discards (PNG).
    """
    inputs, output = output_as_last_argument(inputs, output, outputs.is_image_name)
    set_quiet(quiet)
    inputs, relative = expand_folders(
        inputs, recursive, lambda f: f.suffix.lower() == outputs.AEC_SUFFIX
    )
    stdin = Path(STDIO) in inputs
    if (stdin or output == STDIO) and len(inputs) > 1:
        raise click.UsageError("- (stdin) and -o - (stdout) take one input")
    if reference is not None and len(inputs) > 1:
        raise click.UsageError("--psnr REF compares one decoded image with REF: give one input")
    to_stdout = output == STDIO or (stdin and output is None)
    if to_stdout and sys.stdout.isatty():
        fail("refusing to write binary image data to a terminal; pass -o FILE or redirect")
    out, output_is_dir = (None, False) if to_stdout else resolve_output(output, len(inputs))
    job = _Job(
        output_quality=output_quality,
        reference=reference,
        max_pixels=max_pixels,
        warn_pixels=warn_pixels,
        as_json=as_json,
        verbose=is_verbose(ctx, verbose_here) or reference is not None,
        force=force,
        skip_existing=skip_existing,
        relative=relative,
        to_stdout=to_stdout,
        out=out,
        output_is_dir=output_is_dir,
    )
    set_threads(threads)
    if jobs > 1 and len(inputs) > 1 and not to_stdout:
        if _decompress_parallel(inputs, job, threads=threads, jobs=jobs):
            ctx.exit(1)
        return
    process = lambda src: _decompress_one(src, job)  # noqa: E731
    if run_batch(inputs, process, verbose=job.verbose or as_json, label="decompressing"):
        ctx.exit(1)


def _decompress_parallel(
    inputs: Sequence[Path], job: _Job, *, threads: int | None, jobs: int
) -> int:
    """``-j N``: decode the files in N spawned processes
    (:func:`aecodec.batch.decompress_files`; each worker loads the models its files name);
    returns the failures."""
    from aecodec import batch

    def destination_of(src: Path) -> Path:
        dst = _checked_destination(src, job)
        try:
            outputs.image_format(dst, job.output_quality)
        except AecodecError as exc:
            raise FileError(dst, str(exc)) from None
        return dst

    todo, failures = plan_batch(
        inputs,
        destination_of,
        force=job.force,
        skip_existing=job.skip_existing,
        written=job.written,
    )
    results = batch.decompress_files(
        todo,
        output_quality=job.output_quality,
        max_pixels=job.max_pixels,
        warn_pixels=job.warn_pixels,
        workers=jobs,
        threads=threads or 1,
        skip_existing=False,
        write=batch_writer(job.force),
    )

    def done(r: batch.FileResult) -> None:
        if job.verbose or job.as_json:
            fields = {"bytes": r.bytes, "bpp": r.bpp, "quality": r.quality, "seconds": r.seconds}
            emit(r.src, r.dst, fields, as_json=job.as_json, to_stderr=False)

    return failures + report_batch(results, done)


def _decompress_one(src: Path, job: _Job) -> None:
    """Decode one file (or stdin) and write the image; report it if asked to."""
    start = time.perf_counter()
    dst = Path("-.png") if job.to_stdout else _checked_destination(src, job)
    try:
        fmt = outputs.image_format(dst, job.output_quality)
    except AecodecError as exc:
        raise FileError(dst, str(exc)) from None
    if not job.to_stdout:
        check_destination(src, dst, job.force, job.skip_existing)
        check_not_written(dst, job.written)
    data = files.read_aec_stream(sys.stdin.buffer) if src == Path(STDIO) else files.read_aec(src)
    # parsed once: the mode is checked (no JPEG + alpha) before the expensive decode
    bitstream = aecodec.container.unpack(data, max_pixels=job.max_pixels)
    reference = None if job.reference is None else _reference(job.reference, bitstream, job)
    try:
        outputs.check_mode(fmt, bitstream.header.mode)
        img = aecodec.decompress(bitstream, max_pixels=job.max_pixels, warn_pixels=job.warn_pixels)
        params = outputs.save_options(fmt, img)
    except aecodec.ImageError as exc:
        raise FileError(dst, str(exc)) from None
    if job.to_stdout:
        img.save(sys.stdout.buffer, format=fmt.name, **params)
        sys.stdout.buffer.flush()
    else:
        write_atomic(dst, lambda fh: img.save(fh, format=fmt.name, **params), force=job.force)
        job.written.add(output_key(dst))
    seconds = time.perf_counter() - start
    psnr = None
    if reference is not None:
        import numpy as np

        from aecodec.metrics import psnr_rgb

        psnr = psnr_rgb(reference, np.asarray(img.convert("RGB")))
    if job.as_json or job.verbose:
        _report_file(src, dst, bitstream.header, len(data), img, seconds, psnr, job)


def _reference(path: Path, bitstream: container.Bitstream, job: _Job) -> Any:
    """``--psnr REF``: the reference's ``uint8 [H, W, 3]`` (as ``compress --psnr`` reads its
    input), checked against the file's size before anything is decoded or written."""
    from aecodec import imageio

    try:
        ref = imageio.load(path, max_pixels=job.max_pixels, warn_pixels=job.warn_pixels)
    except (aecodec.ImageError, OSError) as exc:
        raise FileError(path, f"cannot read the --psnr reference: {exc}") from None
    h = bitstream.header
    if (ref.width, ref.height) != (h.width, h.height):
        raise FileError(
            path,
            f"the --psnr reference is {ref.width}x{ref.height} but the decoded image is "
            f"{h.width}x{h.height}",
        )
    return ref.rgb


def _checked_destination(src: Path, job: _Job) -> Path:
    return destination(
        src, job.out, job.output_is_dir, outputs.decompressed_name, job.relative.get(src)
    )


def _report_file(
    src: Path,
    dst: Path,
    header: container.Header,
    size: int,
    img: Image.Image,
    seconds: float,
    psnr: float | None,
    job: _Job,
) -> None:
    """``--json``: bytes, bpp, quality, size, mode, seconds (and PSNR); ``-v``: size, mode,
    PSNR if measured, seconds."""
    fields = {
        "bytes": size,
        "bpp": header.bpp(size),
        "quality": header.quality,
        "width": img.width,
        "height": img.height,
        "mode": img.mode,
        "seconds": seconds,
    }
    text = f"{img.width}x{img.height} {img.mode}, "
    if psnr is not None:
        fields["psnr"] = psnr
        text += f"{psnr:.2f} dB, "
    text += f"{seconds:.2f} s"
    shown = STDIO if job.to_stdout and job.as_json else dst
    emit(src, shown, fields, as_json=job.as_json, to_stderr=job.to_stdout, text=text)
