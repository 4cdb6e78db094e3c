"""Reading and writing files safely: bounded reads, atomic no-overwrite writes, clean exits.

One home for file handling, used by the library and the command line:

- :func:`open_input` opens an input for reading only if it is a regular file (devices such
  as ``/dev/zero``, pipes and sockets are refused without blocking), so a read is bounded by
  the size of the file; :func:`read_aec` reads an ``.aec`` file that way, header first.
- :func:`write_atomic` writes an output atomically: a temporary file in the destination's
  folder, fsync, then ``link()`` (no overwrite: atomic, no check-then-rename race) or
  ``os.replace`` (``force``). The destination is never partial. Character devices and pipes
  (``/dev/null``, ``/dev/stdout``) are written in place, never replaced by a regular file;
  block devices and directories are refused; a symlink is followed and its target replaced.
- :func:`terminate_cleanly` turns SIGTERM and SIGHUP into an exception while it is active, so
  a killed write removes its temporary file as an interrupted one does (SIGKILL cannot be
  caught: it may leave a ``.NAME.XXXX.tmp`` file, never a partial destination).

Imports only the standard library (and aecodec's errors), so the CLI stays cheap to start.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from aecodec import container
from aecodec.errors import FormatError

__all__ = [
    "EXISTS_MESSAGE",
    "Terminated",
    "check_output",
    "open_input",
    "read_aec",
    "terminate_cleanly",
    "write_atomic",
]

EXISTS_MESSAGE = "exists; pass --force to overwrite"
"""Message of the :class:`FileExistsError` raised when an output exists and ``force`` is off."""

StrPath = str | os.PathLike[str]

_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM/SIGHUP inside :func:`terminate_cleanly`.

    A ``BaseException`` (like ``KeyboardInterrupt``) so ``except Exception`` does not swallow
    it and ``finally`` clauses (temporary-file cleanup) run.

    Attributes:
        signum: The signal received.
    """

    def __init__(self, signum: int) -> None:
        """Create the exception for signal ``signum``."""
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


@contextmanager
def terminate_cleanly() -> Iterator[None]:
    """While active, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    Outside the main thread (where Python cannot set handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        raise Terminated(signum)

    signums = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


# ------------------------------------------------------------------------------------ reading


def open_input(path: StrPath, error: type[Exception] = FormatError) -> IO[bytes]:
    """Open ``path`` for binary reading if it is a regular file.

    The file is opened non-blocking and checked with ``fstat``, so a pipe never blocks and
    a device never streams forever.

    Args:
        path: The input.
        error: Exception class raised for a non-regular file (``ImageError`` for images).

    Returns:
        The open file (the caller closes it).

    Raises:
        FileNotFoundError / PermissionError / IsADirectoryError: as the OS reports.
        FormatError: (or ``error``) the path is a device, pipe or socket.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
        if not stat.S_ISREG(mode):
            raise error(
                f"{os.fspath(path)}: is {_kind(mode)}, not a regular file; "
                "aecodec reads only regular files (save the data to a file first)"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_aec(path: StrPath) -> bytes:
    """Read an ``.aec`` file: regular files only, header first, never past the file's size.

    The first bytes are checked (magic and version) before the rest is read, so a large file
    that is not an ``.aec`` file is refused after a few bytes; the full validation is
    :func:`aecodec.container.unpack`'s.

    Raises:
        FormatError: the path is not a regular file, or does not start like an ``.aec`` file.
        OSError: the file cannot be read (missing, unreadable, a directory).
    """
    with open_input(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(container.PREFIX_SIZE)
        container.check_prefix(head)
        # st_size + 1: a file that grows while being read is caught as trailing bytes.
        return head + fh.read(max(0, size + 1 - len(head)))


# ------------------------------------------------------------------------------------ writing


def _target(dst: Path, force: bool) -> tuple[Path, os.stat_result | None]:
    """The path to write (a symlink's target) and its stat, or None if it does not exist."""
    try:
        lst = os.lstat(dst)
    except FileNotFoundError:
        return dst, None
    if not force and not stat.S_ISLNK(lst.st_mode) and not _in_place(lst.st_mode):
        raise FileExistsError(errno.EEXIST, EXISTS_MESSAGE, os.fspath(dst))
    target = Path(os.path.realpath(dst)) if stat.S_ISLNK(lst.st_mode) else dst
    try:
        st = os.stat(target)
    except FileNotFoundError:  # dangling symlink
        st = None
    if stat.S_ISLNK(lst.st_mode) and not force and (st is None or not _in_place(st.st_mode)):
        raise FileExistsError(errno.EEXIST, EXISTS_MESSAGE, os.fspath(dst))
    if st is not None and not (stat.S_ISREG(st.st_mode) or _in_place(st.st_mode)):
        raise OSError(
            errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL,
            f"is {_kind(st.st_mode)}; aecodec writes regular files, character devices "
            "and pipes only",
            os.fspath(dst),
        )
    return target, st


def _in_place(mode: int) -> bool:
    """Outputs written in place (opened, never replaced): character devices and pipes."""
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_output(dst: StrPath, *, force: bool) -> None:
    """Raise now if :func:`write_atomic` would refuse ``dst`` (before any expensive work).

    Raises:
        FileExistsError: ``dst`` exists (or is a symlink) and ``force`` is off; the message
            is :data:`EXISTS_MESSAGE`.
        OSError: ``dst`` is a directory, a block device or a socket.
    """
    _target(Path(dst), force)


def _new_file_mode(existing: os.stat_result | None) -> int:
    """Permission bits for the output: keep an existing file's, else 0o666 minus the umask."""
    if existing is not None:
        return existing.st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish_no_overwrite(tmp: str, target: Path) -> None:
    """Give ``tmp`` the name ``target`` unless it exists, atomically (``link()`` fails with
    EEXIST); falls back to check-then-rename where hard links are unsupported."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, EXISTS_MESSAGE, os.fspath(target)) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, EXISTS_MESSAGE, os.fspath(target)) from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


def write_atomic(dst: StrPath, write: Callable[[IO[bytes]], object], *, force: bool) -> None:
    """Write ``dst`` so that it is never partial and never replaced unless ``force``.

    A regular (or new) destination is written to a temporary file ``.NAME.XXXX.tmp`` in its
    folder, fsynced, then published: with ``link()`` when ``force`` is off (atomic: fails
    if the name appeared meanwhile) or ``os.replace`` when it is on. A symlink is followed
    (its target is replaced, the link kept). Character devices and pipes are written in
    place. On any failure, Ctrl-C or :class:`Terminated`, the temporary file is removed and
    the destination is left as it was.

    Args:
        dst: The output path.
        write: Called with the open binary file; writes the whole content.
        force: Replace an existing regular file.

    Raises:
        FileExistsError: ``dst`` exists and ``force`` is off (message :data:`EXISTS_MESSAGE`).
        OSError: the file cannot be written, or ``dst`` is a directory, block device or socket.
    """
    target, st = _target(Path(dst), force)
    if st is not None and _in_place(st.st_mode):
        with open(target, "wb") as fh:  # no O_TRUNC effect on devices and pipes
            write(fh)
        return
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp: str | None = tmp_name
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        with suppress(OSError):
            os.chmod(tmp_name, _new_file_mode(st))
        if force:
            os.replace(tmp_name, target)
        else:
            _publish_no_overwrite(tmp_name, target)
        tmp = None
        _fsync_directory(target.parent)
    finally:
        if tmp is not None:
            with suppress(OSError):
                os.unlink(tmp)
