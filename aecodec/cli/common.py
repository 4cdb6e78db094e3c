"""What every ``aecodec`` command shares: per-file error reports, outputs, options.

Per-file errors are reported as one line, ``aecodec: error: <file>: <message>``, on stderr; the rest
of a batch still runs and the exit status is 1 if any file failed (130 after Ctrl-C, 2 for a usage
error).

Outputs are written by :func:`aecodec.files.write_atomic`: to a temporary file in the output's
directory, fsync'ed, then linked (no overwrite) or renamed (``--force``) into place. A failure,
Ctrl-C or SIGTERM therefore never leaves a partial output or a temporary file behind, and an
existing file is only replaced with ``--force``; devices and pipes are written in place.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import PIL
from PIL import Image

import aecodec
from aecodec import files
from aecodec.errors import AecodecError

PROG = "aecodec"

RERUN_ADVICE = "exists; pass --force to overwrite it, or --skip-existing to leave it (a rerun)"

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


class FileSkipped(FileError):
    """A file left alone on purpose (reported as ``aecodec: skipped: ...``, not a failure)."""


# --------------------------------------------------------------------------------------------------
# helpers


def one_line(text: str) -> str:
    return " ".join(text.split())


# The library's messages name its keyword arguments; the command line shows its options.
_OPTION_OF = (
    ("max_pixels=N, or aecodec.container.MAX_PIXELS", "--max-pixels N"),
    ("max_pixels=N", "--max-pixels N"),
    ("not overwritten without force=True", "pass --force to overwrite"),
    ("output_quality=1..100", "--output-quality 1..100"),
    ("PSNR reference", "--psnr reference"),
)


def in_option_terms(message: str) -> str:
    """A library message as the command line says it (``max_pixels=N`` -> ``--max-pixels N``)."""
    for api, option in _OPTION_OF:
        message = message.replace(api, option)
    return message


def describe_error(exc: BaseException) -> str:
    """Turn an exception into a short one-line message (no traceback, no repeated file name)."""
    if isinstance(exc, PIL.UnidentifiedImageError):
        return "not a supported image file (cannot identify the image format)"
    if isinstance(exc, OSError) and exc.strerror:
        return one_line(exc.strerror)
    return one_line(str(exc)) or type(exc).__name__


def strip_path_prefix(message: str, path: Path) -> str:
    """Drop a leading ``"<path>: "`` from a message, since the report already names the file."""
    for prefix in (os.fspath(path), os.path.abspath(path), path.name):
        if prefix and message.startswith(f"{prefix}: "):
            return message[len(prefix) + 2 :]
    return message


_quiet = False
_bar_shown = False  # a progress bar is on stderr's last line


def set_quiet(quiet: bool) -> None:
    """``--quiet``: from now on, report errors only (no warning or skipped lines, no progress
    bar)."""
    global _quiet
    _quiet = quiet


def report(path: Path | str, message: str, kind: str = "error") -> None:
    """One line on stderr: ``aecodec: KIND: PATH: MESSAGE`` (only errors under ``--quiet``)."""
    if _quiet and kind != "error":
        return
    if _bar_shown:  # clear the bar's line; it is redrawn on the next input
        click.echo("\r\x1b[K", err=True, nl=False)
    text = one_line(in_option_terms(message))
    click.echo(f"{PROG}: {kind}: {click.format_filename(path)}: {text}", err=True)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"{PROG}: error: {one_line(in_option_terms(message))}", err=True)
    raise click.exceptions.Exit(code)


def handle_interrupt(func: F) -> F:
    """Turn Ctrl-C into a one-line message and exit status 130 (instead of click's "Aborted!"),
    and SIGTERM/SIGHUP into "terminated" and 128 + the signal (temporary files cleaned up)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with files.terminate_cleanly():
                return func(*args, **kwargs)
        except KeyboardInterrupt:
            lead = "\n" if stderr_is_tty() else ""  # get off the line that shows ^C
            click.echo(f"{lead}{PROG}: interrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except files.Terminated as exc:
            click.echo(f"{PROG}: terminated", err=True)
            raise click.exceptions.Exit(128 + exc.signum) from None

    return wrapper  # type: ignore[return-value]


def same_file(a: Path, b: Path) -> bool:
    with suppress(OSError):
        if os.path.samefile(a, b):
            return True
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # RuntimeError: symlink loop on older Pythons
        return os.path.abspath(a) == os.path.abspath(b)


def check_destination(src: Path, dst: Path, force: bool, skip_existing: bool = False) -> None:
    """Refuse to write onto the input, onto an existing file without ``--force``, or onto a
    directory or block device; with ``skip_existing`` an existing output skips the input."""
    if same_file(src, dst):
        raise FileError(dst, "output would overwrite the input; choose another output with -o")
    if skip_existing and not force and dst.is_file():
        raise FileSkipped(dst, "exists (--skip-existing)")
    try:
        files.check_output(dst, force=force)
    except FileExistsError:
        raise FileError(dst, RERUN_ADVICE) from None
    except OSError as exc:
        raise FileError(dst, describe_error(exc)) from None


def output_key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))


def check_not_written(dst: Path, written: set[str]) -> None:
    """Refuse to write the same output twice in one run (e.g. ``a/x.png b/x.png -o dir``)."""
    if output_key(dst) in written:
        raise FileError(dst, "already written from another input in this run; not overwriting it")


def code_files(
    inputs: Sequence[Path],
    destination_of: Callable[[Path], Path],
    code: Callable[[Iterator[tuple[Path, Path]]], Iterable[Any]],
    done: Callable[[Any], None],
    *,
    force: bool,
    skip_existing: bool,
    written: set[str],
    bar: bool,
    label: str,
    others: Sequence[Path] = (),
) -> int:
    """A command's batch, whatever ``-j``: the inputs are planned one at a time
    (:func:`planned`; drawn as a progress bar with ``bar``), ``code`` runs the jobs that pass
    (:mod:`aecodec.batch`, in this process or in workers) and its results are reported as
    they come (:func:`report_batch`, with ``done`` and ``others``); returns the failures."""
    failed: list[Path] = []
    with progress(inputs, wanted=bar, label=label) as items:
        todo = planned(
            items,
            destination_of,
            force=force,
            skip_existing=skip_existing,
            written=written,
            failed=failed,
        )
        failures = report_batch(code(todo), done, others=others)
    return failures + len(failed)


def planned(
    inputs: Iterable[Path],
    destination_of: Callable[[Path], Path],
    *,
    force: bool,
    skip_existing: bool,
    written: set[str],
    failed: list[Path],
) -> Iterator[tuple[Path, Path]]:
    """The ``(input, output)`` pairs of a batch that pass the per-file checks, one input at a
    time (``destination_of`` raises :class:`FileError` for checks of its own; ``-``, stdout,
    is not a file to check). Each one left out is reported (skipped, or failed and added to
    ``failed``) when it comes, so a batch run in this process reports in the inputs' order."""
    for src in inputs:
        try:
            dst = destination_of(src)
            if dst != Path(STDIO):
                check_destination(src, dst, force, skip_existing)
                check_not_written(dst, written)
        except FileSkipped as exc:
            report(exc.path, exc.message, "skipped")
            continue
        except FileError as exc:
            report(exc.path, exc.message)
            failed.append(src)
            continue
        written.add(output_key(dst))
        yield src, dst


def batch_writer(force: bool) -> Callable[[Path, bytes], None]:
    """The ``write`` of :mod:`aecodec.batch` for the command line: atomic, never over an
    existing file without ``--force`` (a failure is reported with the output's name)."""

    def write(dst: Path, data: bytes) -> None:
        files.write_atomic(dst, lambda fh: fh.write(data), force=force)

    return write


def write_stdout(dst: Path, data: bytes) -> None:
    """The ``write`` of :mod:`aecodec.batch` for ``-o -``."""
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def batch_run(
    jobs: int, threads: int | None, parallel: bool, *, to_stdout: bool, force: bool
) -> dict[str, Any]:
    """The run options of :mod:`aecodec.batch` for a command's batch: in this process
    (``-j 1``, stdin, stdout) or in ``jobs`` worker processes of ``--threads`` threads each;
    outputs written atomically (or to stdout); ``--force`` / ``--skip-existing`` are checked
    when planning (:func:`planned`), not by the batch."""
    return {
        "workers": jobs if parallel else 0,
        "threads": (threads or 1) if parallel else None,
        "skip_existing": False,
        "write": write_stdout if to_stdout else batch_writer(force),
    }


def report_batch(
    results: Iterable[Any], done: Callable[[Any], None], *, others: Sequence[Path] = ()
) -> int:
    """Report the results of :mod:`aecodec.batch` as they come (their warnings, one line per
    failure: about the output if its error leads with it, as when it could not be made or
    written, or likewise about one of ``others``, e.g. ``decompress --psnr``'s reference) and
    call ``done`` with each file coded; returns the failures."""
    failures = 0
    for r in results:
        for message in r.warnings:
            report(r.src, strip_path_prefix(message, r.src), "warning")
        if r.status == "failed":
            error = r.error or "failed"
            about = (p for p in (r.dst, *others) if error.startswith(f"{os.fspath(p)}: "))
            at = next(about, r.src)
            report(at, strip_path_prefix(error, at))
            failures += 1
        else:
            done(r)
    return failures


def destination(
    src: Path,
    output: Path | None,
    output_is_dir: bool,
    name: Callable[[Path], Path],
    relative: Path | None = None,
) -> Path:
    """The output of ``src``: ``-o`` itself, or the default name (beside it or in ``-o``; in
    ``-o``'s mirror of ``relative``'s folders for a file found in an input folder, created
    when needed)."""
    if output is None:
        return name(src)
    if output_is_dir:
        if relative is None or relative.parent == Path():
            return output / name(src).name
        folder = output / relative.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FileError(folder, f"cannot create folder: {describe_error(exc)}") from None
        return folder / name(src).name
    return output


def expand_folders(
    inputs: tuple[Path, ...], recursive: bool, wanted: Callable[[Path], bool]
) -> tuple[tuple[Path, ...], dict[Path, Path]]:
    """Replace each folder among ``inputs`` by the files in it that ``wanted`` accepts (in
    its subfolders too with ``recursive``; hidden files never), sorted; a folder with none is
    left as it is (an input that fails). Returns the inputs and,
    for each file found in a folder, its path relative to that folder (outputs under ``-o``
    mirror it)."""
    found: list[Path] = []
    relative: dict[Path, Path] = {}
    for path in inputs:
        if str(path) == STDIO or not path.is_dir():
            found.append(path)
            continue
        candidates = path.rglob("*") if recursive else path.iterdir()
        files_here = sorted(
            f
            for f in candidates
            if f.is_file()
            and wanted(f)
            and not any(part.startswith(".") for part in f.relative_to(path).parts)
        )
        if not files_here:  # left in: reported as a failed input, the others go on
            found.append(path)
            continue
        for f in files_here:
            found.append(f)
            relative[f] = f.relative_to(path)
    return tuple(found), relative


def output_as_last_argument(
    inputs: tuple[Path, ...], output: str | None, is_output_name: Callable[[Path], bool]
) -> tuple[tuple[Path, ...], str | None]:
    """The cjxl/djxl habit ``aecodec compress IN OUT.aec``: with two arguments, no ``-o`` and a
    last one named like an output (``is_output_name``), the last argument is the output.
    With more arguments, a last one named like an output is refused with advice (``-o``)
    rather than read as an input. Returns ``(inputs, output)``."""
    if output is not None or len(inputs) < 2 or str(inputs[-1]) == STDIO:
        return inputs, output
    last = inputs[-1]
    if not is_output_name(last):
        return inputs, output
    if len(inputs) > 2:
        name = click.format_filename(last)
        raise click.UsageError(
            f"{name} looks like an output file, but there are {len(inputs) - 1} inputs: give one "
            f"input and one output (IN {name}), or several inputs and -o FOLDER/"
        )
    return inputs[:1], str(last)


def resolve_output(output: str | None, n_inputs: int) -> tuple[Path | None, bool]:
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
            fail(f"{click.format_filename(output)}: cannot create folder: {describe_error(exc)}")
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


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(inputs: Sequence[Path], *, wanted: bool, label: str) -> Iterator[Iterable[Path]]:
    """The inputs, drawn as a progress bar on stderr as they are taken when ``wanted``, there
    are several, no ``--quiet`` and stderr is a terminal (a reported line clears it first)."""
    global _bar_shown
    if not (wanted and len(inputs) > 1 and not _quiet and stderr_is_tty()):
        yield inputs
        return
    bar = click.progressbar(
        inputs,
        label=label,
        file=sys.stderr,
        item_show_func=lambda p: None if p is None else click.format_filename(p),
    )
    with bar as items:
        _bar_shown = True
        try:
            yield items
        finally:
            _bar_shown = False


def is_verbose(ctx: click.Context, local: bool) -> bool:
    """``-v`` given to the command (``local``) or to ``aecodec`` itself."""
    return local or bool((ctx.obj or {}).get("verbose"))


# --------------------------------------------------------------------------------------------------
# options

STDIO = "-"
INPUT_PATH = click.Path(path_type=Path)
VERBOSE_HELP = "Print one line per file (size, bpp, time)."
verbose_option = click.option(
    "-v", "--verbose", "verbose_here", is_flag=True, help="Same as `aecodec -v`."
)
model_option = click.option(
    "--model", metavar="NAME", default=None, help="Model to use (see `aecodec models`)."
)
force_option = click.option("--force", is_flag=True, help="Overwrite existing output files.")
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Inference threads per process (ONNX Runtime, or torch where a model has no graph).",
)
jobs_option = click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Files coded in parallel, in separate processes.",
)
quiet_option = click.option(
    "--quiet", is_flag=True, help="Errors only: no warnings, skipped lines or progress bar."
)
recursive_option = click.option(
    "-r",
    "--recursive",
    is_flag=True,
    help="A folder among the inputs: also the files in its subfolders (the tree is mirrored "
    "under -o).",
)
skip_existing_option = click.option(
    "--skip-existing",
    is_flag=True,
    help="Leave inputs whose output exists alone (one 'skipped' line each, exit 0): rerun an "
    "interrupted batch.",
)


def quality_option(help_text: str) -> Callable[[F], F]:
    """``-q/--quality Q``: a level or a fine quality in steps of 0.01 (a float; None: the
    model's default)."""
    return click.option("-q", "--quality", type=float, metavar="Q", default=None, help=help_text)


def pixel_options(func: F) -> F:
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


# --------------------------------------------------------------------------------------------------
# per-file lines


def emit(
    src: Path | str,
    dst: Path | str,
    fields: dict[str, Any],
    *,
    as_json: bool,
    to_stderr: bool,
    text: str | None = None,
) -> None:
    """One line per file: JSON (``--json``, on stderr if stdout carries data) or text (``-v``,
    always on stderr): ``text``, or by default bytes, bpp, quality, PSNR and seconds."""
    if as_json:
        record = {"input": os.fspath(src), "output": os.fspath(dst), **fields}
        click.echo(json.dumps(record), err=to_stderr)
        return
    head = f"{click.format_filename(src)} -> {click.format_filename(dst)}: "
    click.echo(head + (text or _summary(fields)), err=True)


def _summary(fields: dict[str, Any]) -> str:
    parts = [f"{fields['bytes']} bytes", f"{fields['bpp']:.3f} bpp"]
    if fields.get("quality") is not None:
        parts.append(f"q{fields['quality']}")
    if fields.get("psnr") is not None:
        parts.append(f"{fields['psnr']:.2f} dB")
    parts.append(f"{fields['seconds']:.2f} s")
    return ", ".join(parts)


def set_threads(threads: int | None) -> None:
    """``--threads``: the inference runtimes' threads in this process (ONNX Runtime's, and
    torch's once imported: :func:`aecodec.runtime.set_threads`; never imports torch)."""
    from aecodec import runtime

    runtime.set_threads(threads)


def check_model_and_quality(model: str | None, quality: float | None) -> None:
    """Usage errors (exit 2) for an unknown model or a quality the model does not have (a level,
    or a number with up to two decimals between the first and the last level)."""
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
        fail(describe_error(exc))
    if quality is None:
        return
    hint = "'-q' / '--quality'"
    try:
        steps = aecodec.container.quality_steps(quality)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None
    scale = aecodec.container.QUALITY_STEPS
    if not valid[0] * scale <= steps <= valid[-1] * scale:
        which = f"model {model!r}" if model else "the default model"
        raise click.BadParameter(
            f"{quality:g} is not a quality of {which}; valid: the levels "
            + ", ".join(str(q) for q in valid)
            + f", or a number with up to two decimals between {valid[0]} and {valid[-1]}",
            param_hint=hint,
        )
