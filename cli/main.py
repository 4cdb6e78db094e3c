"""The ``aecodec`` command: compress images, decompress ``.aec`` files, inspect them, list models.

A thin layer over the public API of :mod:`aecodec`. Importing this module is cheap: torch is only
imported (by aecodec) when a codec is actually built.

Outputs are written by :func:`aecodec.files.write_atomic`: to a temporary file in the output's
directory, fsync'ed, then linked (no overwrite) or renamed (``--force``) into place. A failure,
Ctrl-C or SIGTERM therefore never leaves a partial output or a temporary file behind, and an
existing file is only replaced with ``--force``; devices and pipes are written in place.

Per-file errors are reported as one line, ``aecodec: error: <file>: <message>``, on stderr; the rest
of a batch still runs and the exit status is 1 if any file failed (130 after Ctrl-C, 2 for a usage
error).
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import click
import PIL
from PIL import Image

import aecodec
from aecodec import files
from aecodec import output as outputs
from aecodec.errors import AecodecError

PROG = "aecodec"

EXISTS_MESSAGE = files.EXISTS_MESSAGE

# Errors that are reported as one line for the file being processed. Anything else is a bug in
# aecodec and keeps its traceback.
FILE_ERRORS: tuple[type[BaseException], ...] = (
    AecodecError,
    OSError,  # includes PIL.UnidentifiedImageError
    PIL.UnidentifiedImageError,
    Image.DecompressionBombError,
    ValueError,
)

F = TypeVar("F", bound=Callable[..., Any])


class FileError(Exception):
    """A per-file failure whose message is ready for the user."""

    def __init__(self, path: Path, message: str) -> None:
        """Create the error.

        Args:
            path: The file the message is about (an input or an output).
            message: One-line description of the problem.
        """
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


# --------------------------------------------------------------------------------------------------
# helpers


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe_error(exc: BaseException) -> str:
    """Turn an exception into a short one-line message (no traceback, no repeated file name)."""
    if isinstance(exc, PIL.UnidentifiedImageError):
        return "not a supported image file (cannot identify the image format)"
    if isinstance(exc, OSError) and exc.strerror:
        return _one_line(exc.strerror)
    return _one_line(str(exc)) or type(exc).__name__


def _strip_path_prefix(message: str, path: Path) -> str:
    """Drop a leading ``"<path>: "`` from a message, since the report already names the file."""
    for prefix in (os.fspath(path), os.path.abspath(path), path.name):
        if prefix and message.startswith(f"{prefix}: "):
            return message[len(prefix) + 2 :]
    return message


def _report(path: Path | str, message: str, kind: str = "error") -> None:
    click.echo(f"{PROG}: {kind}: {click.format_filename(path)}: {_one_line(message)}", err=True)


@contextmanager
def _warnings_as_lines(path: Path) -> Iterator[None]:
    """Report aecodec's warnings about ``path`` as one line each: ``aecodec: warning: ...``.

    A message is reported once per file, even if issued again (``--psnr`` reads the image a
    second time).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", aecodec.AecodecWarning)
        try:
            yield
        finally:
            seen: set[str] = set()
            for w in caught:
                if issubclass(w.category, aecodec.AecodecWarning):
                    message = _strip_path_prefix(str(w.message), path)
                    if message not in seen:
                        seen.add(message)
                        _report(path, message, "warning")
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"{PROG}: error: {_one_line(message)}", err=True)
    raise click.exceptions.Exit(code)


def _handle_interrupt(func: F) -> F:
    """Turn Ctrl-C into a one-line message and exit status 130 (instead of click's "Aborted!"),
    and SIGTERM/SIGHUP into "terminated" and 128 + the signal (temporary files cleaned up)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with files.terminate_cleanly():
                return func(*args, **kwargs)
        except KeyboardInterrupt:
            lead = "\n" if _stderr_is_tty() else ""  # get off the line that shows ^C
            click.echo(f"{lead}{PROG}: interrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except files.Terminated as exc:
            click.echo(f"{PROG}: terminated", err=True)
            raise click.exceptions.Exit(128 + exc.signum) from None

    return wrapper  # type: ignore[return-value]


def _same_file(a: Path, b: Path) -> bool:
    with suppress(OSError):
        if os.path.samefile(a, b):
            return True
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # RuntimeError: symlink loop on older Pythons
        return os.path.abspath(a) == os.path.abspath(b)


def _check_destination(src: Path, dst: Path, force: bool) -> None:
    """Refuse to write onto the input, onto an existing file without ``--force``, or onto a
    directory or block device."""
    if _same_file(src, dst):
        raise FileError(dst, "output would overwrite the input; choose another output with -o")
    try:
        files.check_output(dst, force=force)
    except OSError as exc:
        raise FileError(dst, describe_error(exc)) from None


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))


def _check_not_written(dst: Path, written: set[str]) -> None:
    """Refuse to write the same output twice in one run (e.g. ``a/x.png b/x.png -o dir``)."""
    if _key(dst) in written:
        raise FileError(dst, "already written from another input in this run; not overwriting it")


def write_atomic(dst: Path, write: Callable[[IO[bytes]], object], *, force: bool) -> None:
    """:func:`aecodec.files.write_atomic`, with errors as :class:`FileError` for the report."""
    try:
        files.write_atomic(dst, write, force=force)
    except FileExistsError:
        raise FileError(dst, EXISTS_MESSAGE) from None
    except (OSError, ValueError) as exc:
        raise FileError(dst, f"cannot write: {describe_error(exc)}") from None


def _destination(
    src: Path, output: Path | None, output_is_dir: bool, name: Callable[[Path], Path]
) -> Path:
    """The output of ``src``: ``-o`` itself, or the default name (beside it or in ``-o``)."""
    if output is None:
        return name(src)
    if output_is_dir:
        return output / name(src).name
    return output


def _resolve_output(output: str | None, n_inputs: int) -> tuple[Path | None, bool]:
    """Validate ``-o`` against the number of inputs; return it and whether it is a directory.

    ``-o DIR/`` (trailing slash) always means a folder and creates it; ``-o DIR`` is a folder if
    it exists. Several inputs need a folder.
    """
    if output is None:
        return None, False
    path = Path(output)
    if output.endswith(("/", os.sep)):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"{click.format_filename(output)}: cannot create folder: {describe_error(exc)}")
        return path, True
    if path.is_dir():
        return path, True
    if n_inputs > 1:
        name = click.format_filename(output)
        raise click.BadParameter(
            f"with several inputs, -o must be a folder: {name} is not one "
            f"(end it with / to create it: -o {name}/)",
            param_hint="'-o' / '--output'",
        )
    return path, False


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _run_batch(
    inputs: Sequence[Path], process: Callable[[Path], None], *, verbose: bool, label: str
) -> int:
    """Run ``process`` on every input, reporting errors per file. Returns the number of failures."""
    show_bar = len(inputs) > 1 and not verbose and _stderr_is_tty()
    bar_cm: Any
    if show_bar:
        bar_cm = click.progressbar(
            inputs,
            label=label,
            file=sys.stderr,
            item_show_func=lambda p: None if p is None else click.format_filename(p),
        )
    else:
        bar_cm = nullcontext(inputs)
    failures = 0
    with bar_cm as items:
        for src in items:
            try:
                with _warnings_as_lines(src):
                    process(src)
            except (FileError, *FILE_ERRORS) as exc:
                if show_bar:  # clear the bar's line; it is redrawn on the next item
                    click.echo("\r\x1b[K", err=True, nl=False)
                if isinstance(exc, FileError):
                    _report(exc.path, exc.message)
                else:
                    _report(src, _strip_path_prefix(describe_error(exc), src))
                failures += 1
    return failures


def _format_qualities(qualities: Iterable[int]) -> str:
    values = sorted(qualities)
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ",".join(str(q) for q in values)


def _format_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _verbose(ctx: click.Context, local: bool) -> bool:
    return local or bool((ctx.obj or {}).get("verbose"))


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"{PROG} {getattr(aecodec, '__version__', 'unknown')}")
    ctx.exit()


# --------------------------------------------------------------------------------------------------
# commands

_INPUT_PATH = click.Path(path_type=Path)
_verbose_option = click.option(
    "-v", "--verbose", "verbose_here", is_flag=True, help="Same as `aecodec -v`."
)
_force_option = click.option("--force", is_flag=True, help="Overwrite existing output files.")


def _pixel_options(func: F) -> F:
    """``--max-pixels`` and ``--warn-pixels``: the pixel limits (docs/SECURITY.md)."""
    func = click.option(
        "--warn-pixels",
        type=click.IntRange(min=1),
        metavar="N",
        default=None,
        help="Warn about images over N pixels. [default: aecodec.container.WARN_PIXELS = 2**26]",
    )(func)
    return click.option(
        "--max-pixels",
        type=click.IntRange(min=1),
        metavar="N",
        default=None,
        help="Refuse images over N pixels. [default: aecodec.container.MAX_PIXELS = 2**28]",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.option("-v", "--verbose", is_flag=True, help="Print one line per file (size, bpp, time).")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """aecodec: a learned (autoencoder) image codec. Files use the .aec suffix."""
    ctx.ensure_object(dict)["verbose"] = verbose


def _emit(
    src: Path | str, dst: Path | str, fields: dict[str, Any], *, as_json: bool, to_stderr: bool
) -> None:
    """One line per file: JSON (``--json``) or text (``-v``); on stderr if stdout carries data."""
    if as_json:
        record = {"input": os.fspath(src), "output": os.fspath(dst), **fields}
        click.echo(json.dumps(record), err=to_stderr)
        return
    parts = [f"{fields['bytes']} bytes", f"{fields['bpp']:.3f} bpp"]
    if fields.get("quality") is not None:
        parts.append(f"q{fields['quality']}")
    if fields.get("psnr") is not None:
        parts.append(f"{fields['psnr']:.2f} dB")
    parts.append(f"{fields['seconds']:.2f} s")
    head = f"{click.format_filename(src)} -> {click.format_filename(dst)}: "
    click.echo(head + ", ".join(parts), err=True)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _targets(target_bpp: float | None, size: str | None, psnr: float | None) -> dict[str, Any]:
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


_STDIO = "-"


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=_INPUT_PATH)
@click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="Output file (one input; - for stdout) or folder (an existing one, or any path ending "
    "in /, which is created). Default: each input with the suffix .aec, beside it; stdout for "
    "input - (stdin).",
)
@click.option(
    "-q",
    "--quality",
    type=int,
    metavar="Q",
    default=None,
    help="Quality level: higher means more bytes and better quality. "
    "Valid levels: see `aecodec models`. [default: aecodec.DEFAULT_QUALITY]",
)
@click.option(
    "--target-bpp",
    type=click.FloatRange(min=0, min_open=True),
    metavar="BPP",
    help="Highest quality whose file has at most BPP bits per pixel (like cwebp -size).",
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
@click.option("--model", metavar="NAME", default=None, help="Model to use (see `aecodec models`).")
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
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="torch threads per process."
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Files coded in parallel, in separate processes.",
)
@_pixel_options
@_force_option
@_verbose_option
@click.pass_context
@_handle_interrupt
def compress(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    output: str | None,
    quality: int | None,
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
    verbose_here: bool,
) -> None:
    """Compress images to .aec files.

    INPUTS are image files Pillow can read (PNG, JPEG, TIFF, WebP, ...), or - for stdin; L, LA,
    RGB and RGBA images keep their mode.
    """
    verbose = _verbose(ctx, verbose_here) or with_psnr
    _check_model_and_quality(model, quality)
    targets = _targets(target_bpp, target_size, target_psnr)
    if targets and quality is not None:
        raise click.UsageError("give either -q or a --target-*, not both")
    stdin = Path(_STDIO) in inputs
    if stdin and len(inputs) > 1:
        raise click.UsageError("- (stdin) must be the only input")
    if output == _STDIO and len(inputs) > 1:
        raise click.UsageError("-o - (stdout) takes one input")
    to_stdout = output == _STDIO or (stdin and output is None)
    if to_stdout and sys.stdout.isatty():
        _fail("refusing to write binary .aec data to a terminal; pass -o FILE or redirect stdout")
    out, output_is_dir = (None, False) if to_stdout else _resolve_output(output, len(inputs))
    limits = {"max_pixels": max_pixels, "warn_pixels": warn_pixels}
    _set_threads(threads)
    if jobs > 1 and len(inputs) > 1 and not targets:
        failures = _compress_parallel(
            inputs,
            out,
            output_is_dir,
            quality=quality,
            model=model,
            metadata=metadata,
            with_psnr=with_psnr,
            limits=limits,
            threads=threads,
            jobs=jobs,
            force=force,
            verbose=verbose,
            as_json=as_json,
        )
        if failures:
            ctx.exit(1)
        return
    written: set[str] = set()

    def process(src: Path) -> None:
        start = time.perf_counter()
        source: Path | io.BytesIO
        if src == Path(_STDIO):
            # bounded (aecodec.files.MAX_STREAM_BYTES); kept in memory for --psnr
            source = io.BytesIO(files.read_stream(sys.stdin.buffer, aecodec.ImageError))
            dst = out or Path(_STDIO)
        else:
            dst = _destination(src, out, output_is_dir, outputs.compressed_name)
            if src.is_dir():
                raise FileError(src, "Is a directory")
            if not src.exists():
                raise FileError(src, "No such file or directory")
            source = src
        if not to_stdout:
            _check_destination(src, dst, force)
            _check_not_written(dst, written)
        fields: dict[str, Any] = {}
        if targets:
            from aecodec.ratecontrol import compress_to_target

            codec = aecodec.get_codec(model)
            reached = compress_to_target(
                codec,
                source,
                metadata=metadata,  # type: ignore[arg-type]
                **targets,
                **limits,
            )
            data = reached.data
            fields = {"target_met": reached.met, "trials": reached.trials}
            if not reached.met:
                ((name, value),) = targets.items()
                _report(
                    src,
                    f"--{name.replace('_', '-')} {value} cannot be met; "
                    f"wrote quality {reached.quality}",
                    "warning",
                )
        else:
            data = aecodec.compress(
                source,
                quality,
                model=model,
                metadata=metadata,  # type: ignore[arg-type]
                **limits,
            )
        elapsed = time.perf_counter() - start
        if to_stdout:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            write_atomic(dst, lambda fh: fh.write(data), force=force)
            written.add(_key(dst))
        if verbose or as_json:
            header = aecodec.info(data, max_pixels=max_pixels)
            fields = {
                "bytes": len(data),
                "bpp": header["bpp"],
                "quality": header["quality"],
                "seconds": elapsed,
                **fields,
            }
            if with_psnr:
                fields["psnr"] = _psnr_of(source, data, limits)
            _emit(src, dst, fields, as_json=as_json, to_stderr=to_stdout)

    if _run_batch(inputs, process, verbose=verbose or as_json, label="compressing"):
        ctx.exit(1)


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


def _compress_parallel(
    inputs: Sequence[Path],
    out: Path | None,
    output_is_dir: bool,
    *,
    quality: int | None,
    model: str | None,
    metadata: str,
    with_psnr: bool,
    limits: dict[str, int | None],
    threads: int | None,
    jobs: int,
    force: bool,
    verbose: bool,
    as_json: bool,
) -> int:
    """``-j N``: code the files in N spawned processes (aecodec.batch); returns the failures."""
    from aecodec import batch

    plan = [(src, _destination(src, out, output_is_dir, outputs.compressed_name)) for src in inputs]
    failures = 0
    todo = []
    planned: set[str] = set()
    for src, dst in plan:
        try:
            if src.is_dir():
                raise FileError(src, "Is a directory")
            if not src.exists():
                raise FileError(src, "No such file or directory")
            _check_destination(src, dst, force)
            _check_not_written(dst, planned)
            planned.add(_key(dst))
            todo.append((src, dst))
        except FileError as exc:
            _report(exc.path, exc.message)
            failures += 1

    def write(dst: Path, data: bytes) -> None:
        try:
            write_atomic(dst, lambda fh: fh.write(data), force=force)
        except FileError as exc:
            raise OSError(exc.message) from None

    results = batch.compress_files(
        todo,
        codec=aecodec.get_codec(model),
        quality=quality,
        metadata=metadata,  # type: ignore[arg-type]
        psnr=with_psnr,
        max_pixels=limits["max_pixels"],
        warn_pixels=limits["warn_pixels"],
        workers=jobs,
        threads=threads or 1,
        skip_existing=False,
        write=write,
    )
    for r in results:
        for message in r.warnings:
            _report(r.src, _strip_path_prefix(message, r.src), "warning")
        if r.status == "failed":
            _report(r.src, _strip_path_prefix(r.error or "failed", r.src))
            failures += 1
        elif verbose or as_json:
            fields = {"bytes": r.bytes, "bpp": r.bpp, "quality": r.quality, "seconds": r.seconds}
            if with_psnr:
                fields["psnr"] = r.psnr
            _emit(r.src, r.dst, fields, as_json=as_json, to_stderr=False)
    return failures


def _check_model_and_quality(model: str | None, quality: int | None) -> None:
    """Usage errors (exit 2) for an unknown model or a quality the model does not have."""
    try:
        valid = list(aecodec.qualities(model))
    except (AecodecError, OSError) as exc:
        if model is not None:
            try:
                names = [str(m["name"]) for m in aecodec.models()]
            except (AecodecError, OSError):
                names = []
            if model not in names:
                available = ", ".join(names) if names else "none"
                raise click.BadParameter(
                    f"unknown model {model!r}; available: {available}", param_hint="'--model'"
                ) from None
        _fail(describe_error(exc))
    if quality is not None and quality not in valid:
        which = f"model {model!r}" if model else "the default model"
        raise click.BadParameter(
            f"{quality} is not a quality of {which}; valid qualities: "
            + ", ".join(str(q) for q in valid),
            param_hint="'-q' / '--quality'",
        )


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=_INPUT_PATH)
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
    "--json", "as_json", is_flag=True, help="Print one JSON object per file (bytes, bpp, time)."
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads.")
@_pixel_options
@_force_option
@_verbose_option
@click.pass_context
@_handle_interrupt
def decompress(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    output: str | None,
    output_quality: int | None,
    as_json: bool,
    threads: int | None,
    max_pixels: int | None,
    warn_pixels: int | None,
    force: bool,
    verbose_here: bool,
) -> None:
    """Decompress .aec files to images (lossless PNG by default). - reads stdin."""
    verbose = _verbose(ctx, verbose_here)
    stdin = Path(_STDIO) in inputs
    if (stdin or output == _STDIO) and len(inputs) > 1:
        raise click.UsageError("- (stdin) and -o - (stdout) take one input")
    to_stdout = output == _STDIO or (stdin and output is None)
    if to_stdout and sys.stdout.isatty():
        _fail("refusing to write binary image data to a terminal; pass -o FILE or redirect")
    out, output_is_dir = (None, False) if to_stdout else _resolve_output(output, len(inputs))
    _set_threads(threads)
    written: set[str] = set()

    def process(src: Path) -> None:
        start = time.perf_counter()
        # stdout gets PNG unless -o names a file
        dst = (
            Path("-.png")
            if to_stdout
            else (_destination(src, out, output_is_dir, outputs.decompressed_name))
        )
        try:
            fmt = outputs.image_format(dst, output_quality)
        except AecodecError as exc:
            raise FileError(dst, str(exc)) from None
        if not to_stdout:
            _check_destination(src, dst, force)
            _check_not_written(dst, written)
        if src == Path(_STDIO):
            data = files.read_aec_stream(sys.stdin.buffer)  # header first, bounded
        else:
            data = files.read_aec(src)  # regular files only, header first, bounded
        # cheap: refuse JPEG + alpha before the expensive decode
        header = aecodec.info(data, max_pixels=max_pixels)
        try:
            outputs.check_mode(fmt, str(header["mode"]))
            img = aecodec.decompress(data, max_pixels=max_pixels, warn_pixels=warn_pixels)
            params = outputs.save_options(fmt, img)
        except aecodec.ImageError as exc:
            raise FileError(dst, str(exc)) from None
        if to_stdout:
            stream = sys.stdout.buffer
            img.save(stream, format=fmt.name, **params)
            stream.flush()
        else:
            write_atomic(dst, lambda fh: img.save(fh, format=fmt.name, **params), force=force)
            written.add(_key(dst))
        if as_json:
            fields = {
                "bytes": len(data),
                "bpp": header["bpp"],
                "quality": header["quality"],
                "width": img.width,
                "height": img.height,
                "mode": img.mode,
                "seconds": time.perf_counter() - start,
            }
            _emit(src, _STDIO if to_stdout else dst, fields, as_json=True, to_stderr=to_stdout)
        elif verbose:
            elapsed = time.perf_counter() - start
            click.echo(
                f"{click.format_filename(src)} -> {click.format_filename(dst)}: "
                f"{img.width}x{img.height} {img.mode}, {elapsed:.2f} s",
                err=True,
            )

    if _run_batch(inputs, process, verbose=verbose or as_json, label="decompressing"):
        ctx.exit(1)


_INFO_LABELS = (
    "file",
    "format",
    "model",
    "quality",
    "size",
    "mode",
    "tiles",
    "bytes",
    "bpp",
    "icc",
    "exif",
)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=_INPUT_PATH, metavar="FILES...")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the header as JSON (an object; a list of objects for several files).",
)
@click.pass_context
@_handle_interrupt
def info(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Show the headers of .aec files."""
    headers = []
    failed = False
    for file in paths:
        try:
            headers.append((file, aecodec.info(files.read_aec(file))))
        except FILE_ERRORS as exc:
            _report(file, _strip_path_prefix(describe_error(exc), file))
            failed = True
    if as_json:
        docs = [{"file": os.fspath(f), **h} for f, h in headers]
        if len(paths) == 1:
            if headers:
                click.echo(json.dumps(headers[0][1], indent=2))
        else:
            click.echo(json.dumps(docs, indent=2))
    else:
        for i, (file, header) in enumerate(headers):
            if i:
                click.echo("")
            _print_info(file, header)
    if failed:
        ctx.exit(1)


def _print_info(file: Path, header: dict[str, Any]) -> None:
    g = header.get
    rows = {
        "file": click.format_filename(file),
        "format": f"aecodec container v{g('format_version')}",
        "model": f"{g('model')} (weights {g('weights_hash')})",
        "quality": str(g("quality")),
        "size": f"{g('width')}x{g('height')}",
        "mode": f"{g('mode')}, {g('bit_depth')} bits per channel",
        "tiles": f"{g('num_tiles')} of {g('tile_width')}x{g('tile_height')}",
        "bytes": str(g("bytes")),
        "bpp": f"{float(g('bpp') or 0):.3f}",
        "icc": "yes" if g("has_icc") else "no",
        "exif": "yes" if g("has_exif") else "no",
    }
    width = max(len(k) for k in _INFO_LABELS) + 2
    for key in _INFO_LABELS:
        click.echo(f"{key + ':':<{width}}{rows[key]}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
@_handle_interrupt
def models(ctx: click.Context, as_json: bool) -> None:
    """List the bundled models (* marks the default)."""
    try:
        entries = list(aecodec.models())
    except FILE_ERRORS as exc:
        _fail(describe_error(exc))
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    table = [("NAME", "", "QUALITIES", "SIZE", "SHA256", "DESCRIPTION")]
    for m in entries:
        table.append(
            (
                str(m.get("name", "")),
                "*" if m.get("default") else "",
                _format_qualities(m.get("qualities", [])),
                _format_size(int(m.get("bytes", 0))),
                str(m.get("sha256", ""))[:12],
                str(m.get("description", "")),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)] + [row[-1]]
        click.echo("  ".join(cells).rstrip())


# --- training commands (lead) ---
# The `train` and `export` subcommands are added below by the lead. Do not add them above.


@main.command()
@click.argument(
    "image", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "-q", "--quality", type=int, default=None, help="Quality level (default: the model's)."
)
@click.option("--model", metavar="NAME", default=None, help="Model to use (see `aecodec models`).")
@_handle_interrupt
def demo(image: Path | None, quality: int | None, model: str | None) -> None:
    """Compress and decompress one image; print size, bpp, PSNR and times.

    IMAGE defaults to the photograph bundled with aecodec (Kodak's kodim23, 384x256).
    """
    import numpy as np

    from aecodec.data import sample_image
    from aecodec.metrics import psnr_rgb

    _check_model_and_quality(model, quality)
    t0 = time.perf_counter()
    codec = aecodec.get_codec(model)
    t_load = time.perf_counter() - t0
    src = image or sample_image()
    try:
        with Image.open(src) as im:
            arr = np.asarray(im.convert("RGB"))
    except FILE_ERRORS as exc:
        _report(src, _strip_path_prefix(describe_error(exc), src))
        raise click.exceptions.Exit(1) from None
    q = quality or codec.default_quality
    codec.compress(arr[:64, :64], quality=q)  # warm-up: first call pays one-off costs
    t0 = time.perf_counter()
    data = codec.compress(arr, quality=q)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = np.asarray(codec.decompress(data))
    t_dec = time.perf_counter() - t0
    h, w = arr.shape[:2]
    click.echo(f"image     {click.format_filename(src)} ({w}x{h})")
    click.echo(
        f"model     {codec.name} (sha256 {codec.sha256[:12]}), quality {q} of {codec.qualities}"
    )
    click.echo(f"size      {len(data)} bytes, {8 * len(data) / (w * h):.4f} bpp")
    click.echo(f"PSNR-RGB  {psnr_rgb(arr, out):.2f} dB")
    click.echo(f"time      load {t_load:.2f} s, encode {t_enc:.3f} s, decode {t_dec:.3f} s")


@main.command()
@click.option(
    "--data", default="../shared/train", show_default=True, help="Folder of training images."
)
@click.option(
    "--run-dir",
    "run_dir",
    default="runs/default",
    show_default=True,
    help="Run folder (checkpoints, metrics).",
)
@click.option("--steps", type=int, default=20000, show_default=True, help="Total optimizer steps.")
@click.option("--batch", type=int, default=8, show_default=True)
@click.option(
    "--crop", type=int, default=128, show_default=True, help="Crop side (multiple of 16)."
)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak learning rate.")
@click.option("--warmup", type=int, default=300, show_default=True, help="Linear warm-up steps.")
@click.option(
    "--final-lr-ratio", type=float, default=0.05, show_default=True, help="Cosine decay floor."
)
@click.option(
    "--lambdas", default=None, help="Comma-separated RD trade-offs, one per quality (ascending)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--commit-weight",
    type=float,
    default=0.25,
    show_default=True,
    help="Weight of the commitment term ||y - sg(c)||^2 (in rate units).",
)
@click.option(
    "--quality-balance",
    type=float,
    default=0.75,
    show_default=True,
    help="Weight each sample's loss by (lambda_min / lambda_q) ** this (evens out gradients).",
)
@click.option(
    "--threads", type=int, default=2, show_default=True, help="torch threads per process."
)
@click.option("--val-every", type=int, default=500, show_default=True)
@click.option("--ckpt-every", type=int, default=200, show_default=True)
@click.option(
    "--init",
    "init",
    default="",
    help="Start from these weights (.safetensors or checkpoint), or 'pca' (a PCA block coder; "
    "needs --linear-path).",
)
@click.option("--channels", type=int, default=None, help="Hidden width N.")
@click.option("--latent-channels", type=int, default=None, help="Latent channels M.")
@click.option("--codebook-size", type=int, default=None, help="Codewords per group K.")
@click.option("--group-dim", type=int, default=None, help="Dimensions per codebook d.")
@click.option(
    "--linear-path/--no-linear-path",
    default=None,
    help="Add a linear 16x16 block transform beside the convolutions.",
)
@click.option("--name", default=None, help="Model name (written into bitstreams).")
@click.option(
    "--resume", is_flag=True, help="Continue the run in --run-dir exactly where it stopped."
)
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
@click.option(
    "--bf16/--no-bf16",
    default=None,
    help="bfloat16 autocast for the transforms. Default: on where the CPU has native bf16 "
    "(avx512_bf16/amx_bf16), off elsewhere (emulated bf16 is ~20x slower).",
)
@click.option(
    "--arch",
    type=click.Choice(["vq", "factorized"]),
    default="vq",
    show_default=True,
    help="vq: the aecodec model; factorized: the same-budget CompressAI bmshj2018-factorized "
    "baseline (one rate point: pass one --lambdas value).",
)
@click.option(
    "--train-only",
    type=click.Choice(["all", "decoder"]),
    default="all",
    show_default=True,
    help="decoder: train the synthesis only (indices and rate stay fixed; PSNR only improves).",
)
@click.option(
    "--lr-table-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Scale of the probability tables' learning rate (1e-2 by default).",
)
def train(**kw: Any) -> None:
    """Train the VQ model (also under `torchrun --nproc_per_node=N`)."""
    import logging

    from aecodec.train.loop import TrainConfig
    from aecodec.train.loop import train as run_training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    model: dict[str, Any] = {}
    for key in ("channels", "latent_channels", "codebook_size", "group_dim", "linear_path", "name"):
        if kw[key] is not None:
            model[key] = kw[key]
    if kw["lambdas"]:
        model["lambdas"] = [float(v) for v in kw["lambdas"].split(",")]
    cfg = TrainConfig(
        data=kw["data"],
        run=kw["run_dir"],
        steps=kw["steps"],
        batch=kw["batch"],
        crop=kw["crop"],
        lr=kw["lr"],
        warmup=kw["warmup"],
        final_lr_ratio=kw["final_lr_ratio"],
        seed=kw["seed"],
        commit_weight=kw["commit_weight"],
        quality_balance=kw["quality_balance"],
        threads=kw["threads"],
        val_every=kw["val_every"],
        ckpt_every=kw["ckpt_every"],
        init=kw["init"],
        bf16=kw["bf16"],
        arch=kw["arch"],
        train_only=kw["train_only"],
        lr_table_scale=kw["lr_table_scale"],
        model=model,
    )
    try:
        run = run_training(cfg, resume=kw["resume"], progress=not kw["no_progress"])
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        _fail(describe_error(exc))
    click.echo(f"run folder: {run}")


@main.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--name", default=None, help="Model name (default: the run's).")
@click.option(
    "--weights-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write (default: the bundled aecodec/weights).",
)
@click.option("--default-quality", type=int, default=None)
@click.option("--description", default="", help="One line for `aecodec models`.")
@click.option("--no-default", is_flag=True, help="Do not make it the default model.")
@click.option(
    "--spatial-contexts",
    type=int,
    default=None,
    help="Code with this many checkerboard spatial contexts (default: the run's).",
)
@click.option(
    "--activity-edges",
    default=None,
    help="Comma-separated bucket edges of the activity context, e.g. 1,2,4,8,16,32 "
    "(default: the run's).",
)
@click.option(
    "--fit-tables",
    type=int,
    default=0,
    show_default=True,
    help="Refit the entropy tables by counting on the run's training images, shared in this "
    "many rows (0: quantize the learned tables).",
)
@click.option("--fit-images", type=int, default=0, help="Fit on at most this many images (0: all).")
def export(
    run: Path,
    name: str | None,
    weights_dir: Path | None,
    default_quality: int | None,
    description: str,
    no_default: bool,
    spatial_contexts: int | None,
    activity_edges: str | None,
    fit_tables: int,
    fit_images: int,
) -> None:
    """Export a run's best checkpoint to safetensors weights + manifest entry.

    A run of the CompressAI baseline (--arch factorized) is written as RUN/compressai.pt
    instead, for `aecodec bench --codecs compressai-factorized --compressai-checkpoint`.
    """
    from aecodec.model.registry import WEIGHTS_DIR
    from aecodec.train.export import FitOptions, load_checkpoint, run_summary
    from aecodec.train.export import export as do_export

    try:
        ck = load_checkpoint(run)
        if ck.get("train_config", {}).get("arch", "vq") == "factorized":
            from aecodec.train.baseline import export_compressai

            out = export_compressai(ck, run / "compressai.pt")
            click.echo(f"wrote {out} (CompressAI FactorizedPrior state dict, not bundled)")
            return
    except (FileNotFoundError, ValueError) as exc:
        _fail(describe_error(exc))
    fit = None
    bar = None
    if fit_tables:
        from tqdm import tqdm

        bar = tqdm(desc="fitting tables (images x rounds)", unit="img", dynamic_ncols=True)
        fit = FitOptions(num_tables=fit_tables, max_images=fit_images, progress=bar.update)
    try:
        entry = do_export(
            run,
            name=name,
            weights_dir=weights_dir or WEIGHTS_DIR,
            default_quality=default_quality,
            description=description,
            make_default=not no_default,
            training=run_summary(run),
            contexts=_context_scheme(run, spatial_contexts, activity_edges),
            fit=fit,
        )
    except (FileNotFoundError, ValueError) as exc:
        _fail(describe_error(exc))
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"wrote {entry['file']} ({entry['bytes']} bytes, sha256 {entry['sha256'][:16]}...)")


def _context_scheme(run: Path, spatial: int | None, edges: str | None) -> Any:
    """The export's context scheme: the run's, with --spatial-contexts / --activity-edges."""
    if spatial is None and edges is None:
        return None
    from aecodec.entropy import ContextScheme
    from aecodec.model.config import ModelConfig
    from aecodec.train.export import load_checkpoint

    old = ModelConfig.from_json(load_checkpoint(run)["config"]).context_scheme()
    try:
        parsed = tuple(int(v) for v in edges.split(",") if v) if edges is not None else None
        return ContextScheme(
            old.num_levels,
            old.spatial if spatial is None else spatial,
            old.activity_edges if parsed is None else parsed,
        )
    except ValueError as exc:
        _fail(f"--spatial-contexts/--activity-edges: {exc}")


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """RD benchmark on Kodak vs JPEG & co (= python -m benchmarks.rd; --help for options)."""
    from benchmarks.rd import main as rd_main

    rd_main.main(list(args), prog_name="aecodec bench")
