"""``aecodec compress``: images to ``.aec`` files, one by one or in worker processes."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

import aecodec
import aecodec.weightsfile
from aecodec import container, files
from aecodec import output as outputs
from aecodec.cli.common import (
    INPUT_PATH,
    STDIO,
    FileError,
    FileSkipped,
    batch_writer,
    check_destination,
    check_model_and_quality,
    check_not_written,
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
    output_key,
    pixel_options,
    plan_batch,
    quality_option,
    quiet_option,
    recursive_option,
    report,
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


@dataclass(frozen=True)
class _Job:
    """What ``compress`` was asked to do, the same for every input."""

    quality: float | None
    model: str | None
    metadata: str
    targets: dict[str, Any]
    limits: dict[str, int | None]
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
    type=click.Choice(outputs.METADATA_CHOICES),
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
    targets = _targets(target_bpp, target_size, target_psnr)
    if targets and quality is not None:
        raise click.UsageError("give either -q or a --target-*, not both")
    to_stdout = _check_stdio(inputs, output)
    out, output_is_dir = (None, False) if to_stdout else resolve_output(output, len(inputs))
    job = _Job(
        quality=quality,
        model=model,
        metadata=metadata,
        targets=targets,
        limits={"max_pixels": max_pixels, "warn_pixels": warn_pixels},
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
    if jobs > 1 and len(inputs) > 1:
        failures = _compress_parallel(inputs, job, threads=threads, jobs=jobs)
    else:
        failures = run_batch(
            inputs,
            lambda src: _compress_one(src, job),
            verbose=job.verbose or as_json,
            label="compressing",
        )
    if failures:
        ctx.exit(1)


def _targets(target_bpp: float | None, size: str | None, psnr: float | None) -> dict[str, Any]:
    """The one ``--target-*`` given, as keyword arguments of ``compress_to_target``."""
    targets: dict[str, Any] = {}
    if target_bpp is not None:
        targets["target_bpp"] = target_bpp
    if size is not None:
        from aecodec.ratecontrol import parse_size

        try:
            targets["target_size"] = parse_size(size)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--target-size'") from None
    if psnr is not None:
        targets["target_psnr"] = psnr
    if len(targets) > 1:
        raise click.UsageError("give only one of --target-bpp, --target-size and --target-psnr")
    return targets


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


def _compress_one(src: Path, job: _Job) -> None:
    """Compress one input (a file, or stdin) and write it; report it if asked to."""
    start = time.perf_counter()
    source, dst = _source_and_destination(src, job)
    data, fields = _encode(src, source, job)
    elapsed = time.perf_counter() - start
    if job.to_stdout:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomic(dst, lambda fh: fh.write(data), force=job.force)
        job.written.add(output_key(dst))
    if job.verbose or job.as_json:
        header = aecodec.info(data, max_pixels=job.limits["max_pixels"])
        fields = {
            "bytes": len(data),
            "bpp": header["bpp"],
            "quality": header["quality"],
            "seconds": elapsed,
            **fields,
        }
        if job.with_psnr and "psnr" not in fields:
            fields["psnr"] = _psnr_of(source, data, job.limits)
        emit(src, dst, fields, as_json=job.as_json, to_stderr=job.to_stdout)


def _source_and_destination(src: Path, job: _Job) -> tuple[Path | io.BytesIO, Path]:
    """The image to read (stdin is read into memory, bounded) and the checked output path."""
    source: Path | io.BytesIO
    if src == Path(STDIO):
        # bounded (aecodec.files.MAX_STREAM_BYTES); kept in memory for --psnr
        source = io.BytesIO(files.read_stream(sys.stdin.buffer, aecodec.ImageError))
        dst = job.out or Path(STDIO)
    else:
        dst = destination(
            src, job.out, job.output_is_dir, outputs.compressed_name, job.relative.get(src)
        )
        _check_input(src)
        source = src
    if not job.to_stdout:
        check_destination(src, dst, job.force, job.skip_existing)
        check_not_written(dst, job.written)
    return source, dst


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


def _encode(src: Path, source: Path | io.BytesIO, job: _Job) -> tuple[bytes, dict[str, Any]]:
    """The ``.aec`` bytes, and for a ``--target-*`` whether it was met and in how many trials."""
    if not job.targets:
        data = aecodec.compress(
            source,
            job.quality,
            model=job.model,
            metadata=job.metadata,  # type: ignore[arg-type]
            **job.limits,
        )
        return data, {}
    from aecodec.ratecontrol import compress_to_target

    reached = compress_to_target(
        aecodec.get_codec(job.model),
        source,
        metadata=job.metadata,  # type: ignore[arg-type]
        max_pixels=job.limits["max_pixels"],
        warn_pixels=job.limits["warn_pixels"],
        **job.targets,
    )
    if not reached.met:
        _report_unmet(src, job, reached.quality)
    found: dict[str, Any] = {"target_met": reached.met, "trials": reached.trials}
    if reached.psnr is not None:  # a --target-psnr search measured it: report it
        found["psnr"] = reached.psnr
    return reached.data, found


def _report_unmet(src: Path, job: _Job, quality: float | None) -> None:
    """The one-line warning of a ``--target-*`` that no quality meets."""
    ((name, value),) = job.targets.items()
    option = f"--{name.replace('_', '-')}"
    report(src, f"{option} {value} cannot be met; wrote quality {quality}", "warning")


def _psnr_of(source: Path | io.BytesIO, data: bytes, limits: dict[str, int | None]) -> float:
    """PSNR (RGB) of the decoded ``data`` against the input image ``source``."""
    import numpy as np

    from aecodec import imageio
    from aecodec.metrics import psnr_rgb

    if isinstance(source, io.BytesIO):
        source.seek(0)
    reference = imageio.load(source, **limits).rgb
    decoded = aecodec.decompress(data, **limits).convert("RGB")
    return psnr_rgb(reference, np.asarray(decoded))


# --------------------------------------------------------------------------------------------------
# -j N


def _compress_parallel(inputs: Sequence[Path], job: _Job, *, threads: int | None, jobs: int) -> int:
    """``-j N``: code the files in N spawned processes (aecodec.batch); returns the failures."""
    from aecodec import batch

    def destination_of(src: Path) -> Path:
        dst = destination(
            src, job.out, job.output_is_dir, outputs.compressed_name, job.relative.get(src)
        )
        _check_input(src)
        return dst

    todo, failures = plan_batch(
        inputs,
        destination_of,
        force=job.force,
        skip_existing=job.skip_existing,
        written=job.written,
    )
    results = batch.compress_files(
        todo,
        codec=aecodec.get_codec(job.model),
        quality=job.quality,
        **job.targets,  # the quality is searched per file, in the workers
        metadata=job.metadata,  # type: ignore[arg-type]
        psnr=job.with_psnr,
        max_pixels=job.limits["max_pixels"],
        warn_pixels=job.limits["warn_pixels"],
        workers=jobs,
        threads=threads or 1,
        skip_existing=False,
        write=batch_writer(job.force),
    )

    def done(r: batch.FileResult) -> None:
        if r.target_met is False:
            _report_unmet(r.src, job, r.quality)
        if job.verbose or job.as_json:
            fields = {"bytes": r.bytes, "bpp": r.bpp, "quality": r.quality, "seconds": r.seconds}
            if job.targets:
                fields.update(target_met=r.target_met, trials=r.trials)
            if job.with_psnr or r.psnr is not None:  # asked for, or a --target-psnr measured it
                fields["psnr"] = r.psnr
            emit(r.src, r.dst, fields, as_json=job.as_json, to_stderr=False)

    return failures + report_batch(results, done)
