"""``aecodec compress``: images to ``.aec`` files, one by one or in worker processes."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import aecodec
import aecodec.weightsfile
from aecodec import container, files, imageio
from aecodec import output as outputs
from aecodec.cli.common import (
    INPUT_PATH,
    STDIO,
    FileError,
    FileSkipped,
    batch_run,
    check_model_and_quality,
    code_files,
    describe_error,
    destination,
    emit,
    expand_folders,
    fail,
    force_option,
    handle_interrupt,
    is_verbose,
    jobs_option,
    model_option,
    output_as_last_argument,
    pixel_options,
    quality_option,
    quiet_option,
    recursive_option,
    report,
    resolve_output,
    set_quiet,
    set_threads,
    skip_existing_option,
    threads_option,
    verbose_option,
)
from aecodec.options import EncodeOptions

if TYPE_CHECKING:
    from aecodec.batch import FileResult
    from aecodec.codec import Codec


@dataclass(frozen=True)
class _Job:
    """What ``compress`` was asked to do, the same for every input."""

    options: EncodeOptions
    model: str | None
    with_psnr: bool
    as_json: bool
    verbose: bool
    force: bool
    skip_existing: bool
    to_stdout: bool
    out: Path | None
    output_is_dir: bool
    relative: dict[Path, Path] = field(default_factory=dict)  # files found in folders
    written: set[str] = field(default_factory=set)  # outputs of this run (never written twice)


def _default_quality_text() -> str:
    """``"5 for aecodec-vq-base3"``: the default model's default quality (manifest only)."""
    try:
        return f"{aecodec.DEFAULT_QUALITY} for {aecodec.weightsfile.default_model_name()}"
    except Exception:  # no bundled model: the help text must still work
        return "none bundled"


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=INPUT_PATH)
@click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="Output file (one input; - for stdout) or folder (an existing one, or any path ending "
    "in /, which is created). Default: each input with the suffix .aec, beside it; stdout for "
    "input - (stdin).",
)
@quality_option(
    "Quality: higher means more bytes and better quality. A level (see `aecodec models`) "
    "or any number with up to two decimals between the first and the last (-q 5.5). "
    f"[default: the model's; {_default_quality_text()}]"
)
@click.option(
    "--target-bpp",
    type=click.FloatRange(min=0, min_open=True),
    metavar="BPP",
    help="Highest quality (in steps of 0.01) whose file has at most BPP bits per pixel "
    "(like cwebp -size).",
)
@click.option(
    "--target-size",
    metavar="BYTES",
    help="Highest quality whose file has at most BYTES bytes (K, M suffixes: 40K).",
)
@click.option(
    "--target-psnr",
    type=click.FloatRange(min=0, min_open=True),
    metavar="DB",
    help="Lowest quality whose decoding reaches DB dB PSNR (like cwebp -psnr).",
)
@model_option
@click.option(
    "--metadata",
    type=click.Choice(imageio.METADATA_CHOICES),
    default="all",
    show_default=True,
    help="Metadata to carry from the input (like cwebp -metadata).",
)
@click.option(
    "--psnr",
    "with_psnr",
    is_flag=True,
    help="Also decode and report the PSNR (like cwebp -print_psnr; implies -v).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object per file (input, output, bytes, bpp, quality, seconds).",
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
def compress(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    output: str | None,
    quality: float | None,
    target_bpp: float | None,
    target_size: str | None,
    target_psnr: float | None,
    model: str | None,
    metadata: str,
    with_psnr: bool,
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
    """Compress images to .aec files.

    INPUTS are image files Pillow can read (PNG, JPEG, TIFF, WebP, ...), folders of them (-r:
    with their subfolders; the tree is mirrored under -o), or - for stdin; L, LA, RGB and RGBA
    images keep their mode. As with cjxl, `aecodec compress IN OUT.aec` writes
    OUT.aec (two arguments, the last ending in .aec; same as -o OUT.aec).
    """
    inputs, output = output_as_last_argument(
        inputs, output, lambda p: p.suffix.lower() == outputs.AEC_SUFFIX
    )
    set_quiet(quiet)
    inputs, relative = expand_folders(inputs, recursive, outputs.is_image_name)
    check_model_and_quality(model, quality)
    options = _options(
        quality,
        target_bpp=target_bpp,
        target_size=_size(target_size),
        target_psnr=target_psnr,
        metadata=metadata,
        max_pixels=max_pixels,
        warn_pixels=warn_pixels,
    )
    to_stdout = _check_stdio(inputs, output)
    out, output_is_dir = (None, False) if to_stdout else resolve_output(output, len(inputs))
    job = _Job(
        options=options,
        model=model,
        with_psnr=with_psnr,
        as_json=as_json,
        verbose=is_verbose(ctx, verbose_here) or with_psnr,
        force=force,
        skip_existing=skip_existing,
        relative=relative,
        to_stdout=to_stdout,
        out=out,
        output_is_dir=output_is_dir,
    )
    set_threads(threads)
    if _compress_files(inputs, job, threads=threads, jobs=jobs):
        ctx.exit(1)


#: The command line's names of the options' parameters, for their messages.
_NAMES = {
    "quality": "-q",
    "target_bpp": "--target-bpp",
    "target_size": "--target-size",
    "target_psnr": "--target-psnr",
}


def _size(text: str | None) -> int | None:
    """``--target-size``: bytes, with an optional K or M suffix."""
    if text is None:
        return None
    from aecodec.ratecontrol import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--target-size'") from None


def _options(quality: float | None, **keywords: Any) -> EncodeOptions:
    """The encode options, checked as the API checks them (a misuse is a usage error)."""
    try:
        return EncodeOptions.build(quality, names=_NAMES, **keywords)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _check_stdio(inputs: Sequence[Path], output: str | None) -> bool:
    """Usage checks for ``-`` (stdin) and ``-o -`` (stdout); returns whether stdout is written."""
    stdin = Path(STDIO) in inputs
    if stdin and len(inputs) > 1:
        raise click.UsageError("- (stdin) must be the only input")
    if output == STDIO and len(inputs) > 1:
        raise click.UsageError("-o - (stdout) takes one input")
    to_stdout = output == STDIO or (stdin and output is None)
    if to_stdout and sys.stdout.isatty():
        fail("refusing to write binary .aec data to a terminal; pass -o FILE or redirect stdout")
    return to_stdout


def _compress_files(inputs: Sequence[Path], job: _Job, *, threads: int | None, jobs: int) -> int:
    """Code the inputs with :func:`aecodec.batch.encode_files`: in this process, one by one
    (``-j 1``, stdin), or with ``-j N`` in N spawned processes; returns the failures."""
    from aecodec import batch

    parallel = jobs > 1 and len(inputs) > 1
    codec = _codec(job.model)

    def code(todo: Iterator[tuple[Path, Path]]) -> Iterable[batch.FileResult]:
        return batch.encode_files(
            todo,
            job.options,
            codec=codec,
            psnr=job.with_psnr,
            read=_read_stdin() if Path(STDIO) in inputs else None,
            **batch_run(jobs, threads, parallel, to_stdout=job.to_stdout, force=job.force),
        )

    return code_files(
        inputs,
        lambda src: _destination(src, job),
        code,
        lambda r: _done(r, job),
        force=job.force,
        skip_existing=job.skip_existing,
        written=job.written,
        bar=not (parallel or job.verbose or job.as_json),
        label="compressing",
    )


def _codec(model: str | None) -> Codec:
    """The model's codec, loaded once for every file (a failure is the one error)."""
    try:
        return aecodec.get_codec(model)
    except (aecodec.AecodecError, OSError) as exc:
        fail(describe_error(exc))


def _destination(src: Path, job: _Job) -> Path:
    """Where ``src`` is written (``-``: stdout), once it passed the input checks."""
    if src == Path(STDIO):
        return job.out or Path(STDIO)
    dst = destination(
        src, job.out, job.output_is_dir, outputs.compressed_name, job.relative.get(src)
    )
    _check_input(src)
    return dst


def _read_stdin() -> Callable[[Path], Path | io.BytesIO]:
    """What the batch codes for ``-``: stdin, read once (bounded by
    :data:`aecodec.files.MAX_STREAM_BYTES`), as a fresh stream each time (``--psnr`` reads
    it again)."""
    data: list[bytes] = []

    def read(src: Path) -> Path | io.BytesIO:
        if src != Path(STDIO):
            return src
        if not data:
            data.append(files.read_stream(sys.stdin.buffer, aecodec.ImageError))
        return io.BytesIO(data[0])

    return read


def _done(r: FileResult, job: _Job) -> None:
    """Report a file coded: a target it could not meet, and its line with ``-v`` or ``--json``."""
    target = job.options.target
    if target is not None and r.target_met is False:
        option = _NAMES[target.name]
        report(
            r.src, f"{option} {target.value} cannot be met; wrote quality {r.quality}", "warning"
        )
    if job.verbose or job.as_json:
        fields = {"bytes": r.bytes, "bpp": r.bpp, "quality": r.quality, "seconds": r.seconds}
        if target is not None:
            fields.update(target_met=r.target_met, trials=r.trials)
        if job.with_psnr or r.psnr is not None:  # asked for, or a --target-psnr measured it
            fields["psnr"] = r.psnr
        emit(r.src, r.dst, fields, as_json=job.as_json, to_stderr=job.to_stdout)


def _check_input(src: Path) -> None:
    if src.is_dir():
        raise FileError(src, "a folder with no images in it (-r also looks in its subfolders)")
    if not src.exists():
        raise FileError(src, "No such file or directory")
    if _is_aec(src):
        raise FileError(
            src,
            "is an .aec file: decompress it (re-encoding a decoded image only loses quality)",
        )
    original = src.with_suffix("")
    if original.suffix.lower() == outputs.AEC_SUFFIX and original.is_file():
        raise FileSkipped(
            src, f"decoded from {original.name} (aecodec decompress's name); not coded again"
        )


def _is_aec(path: Path) -> bool:
    """Whether ``path`` starts with the ``.aec`` magic (a regular file only: pipes are read
    once, by the coder)."""
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as fh:
            return fh.read(len(container.MAGIC)) == container.MAGIC
    except OSError:
        return False
