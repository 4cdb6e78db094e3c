"""``aecodec decompress``: ``.aec`` files to images (lossless formats unless asked otherwise),
one by one or in worker processes."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from aecodec import files
from aecodec import output as outputs
from aecodec.cli.common import (
    INPUT_PATH,
    STDIO,
    FileError,
    batch_run,
    code_files,
    destination,
    emit,
    expand_folders,
    fail,
    force_option,
    handle_interrupt,
    is_verbose,
    jobs_option,
    output_as_last_argument,
    pixel_options,
    quiet_option,
    recursive_option,
    resolve_output,
    set_quiet,
    set_threads,
    skip_existing_option,
    threads_option,
    verbose_option,
)
from aecodec.errors import AecodecError

if TYPE_CHECKING:
    from aecodec.batch import FileResult

#: The output of ``-o -`` (stdout) as the batch sees it: its name gives the format, PNG.
_STDOUT = Path(f"{STDIO}.png")


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
    if _decompress_files(inputs, job, threads=threads, jobs=jobs):
        ctx.exit(1)


def _decompress_files(inputs: Sequence[Path], job: _Job, *, threads: int | None, jobs: int) -> int:
    """Decode the inputs with :func:`aecodec.batch.decompress_files`: in this process, one by
    one (``-j 1``, stdin, stdout), or with ``-j N`` in N spawned processes (each loads the
    models its files name); returns the failures."""
    from aecodec import batch

    parallel = jobs > 1 and len(inputs) > 1

    def decode(todo: Iterator[tuple[Path, Path]]) -> Iterator[FileResult]:
        return batch.decompress_files(
            _to_stdout(todo) if job.to_stdout else todo,
            output_quality=job.output_quality,
            reference=job.reference,
            max_pixels=job.max_pixels,
            warn_pixels=job.warn_pixels,
            read=_read if Path(STDIO) in inputs else None,
            **batch_run(jobs, threads, parallel, to_stdout=job.to_stdout, force=job.force),
        )

    return code_files(
        inputs,
        lambda src: _destination(src, job),
        decode,
        lambda r: _done(r, job),
        force=job.force,
        skip_existing=job.skip_existing,
        written=job.written,
        bar=not (parallel or job.verbose or job.as_json),
        label="decompressing",
        others=() if job.reference is None else (job.reference,),
    )


def _destination(src: Path, job: _Job) -> Path:
    """Where ``src`` is decoded to (``-``: stdout), its format checked."""
    if job.to_stdout:
        return Path(STDIO)
    dst = destination(
        src, job.out, job.output_is_dir, outputs.decompressed_name, job.relative.get(src)
    )
    try:
        outputs.image_format(dst, job.output_quality)
    except AecodecError as exc:
        raise FileError(dst, str(exc)) from None
    return dst


def _to_stdout(jobs: Iterable[tuple[Path, Path]]) -> Iterator[tuple[Path, Path]]:
    """The jobs planned for stdout (``-``), as the batch decodes them: to PNG."""
    for src, _ in jobs:
        yield src, _STDOUT


def _read(src: Path) -> bytes:
    """The ``read`` of input ``-``: stdin (bounded by :data:`aecodec.files.MAX_STREAM_BYTES`)."""
    if src == Path(STDIO):
        return files.read_aec_stream(sys.stdin.buffer)
    return files.read_aec(src)


def _done(r: FileResult, job: _Job) -> None:
    """``--json``: bytes, bpp, quality, size, mode, seconds (and PSNR); ``-v``: size, mode,
    PSNR if measured, seconds."""
    if not (job.verbose or job.as_json):
        return
    fields = {
        "bytes": r.bytes,
        "bpp": r.bpp,
        "quality": r.quality,
        "width": r.width,
        "height": r.height,
        "mode": r.mode,
        "seconds": r.seconds,
    }
    text = f"{r.width}x{r.height} {r.mode}, "
    if r.psnr is not None:
        fields["psnr"] = r.psnr
        text += f"{r.psnr:.2f} dB, "
    text += f"{r.seconds:.2f} s"
    shown = STDIO if job.to_stdout and job.as_json else r.dst
    emit(r.src, shown, fields, as_json=job.as_json, to_stderr=job.to_stdout, text=text)
