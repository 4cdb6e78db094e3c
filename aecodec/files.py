"""Reading and writing files safely: bounded reads, atomic no-overwrite writes, clean exits.

One home for file handling, used by the library and the command line:

- :func:`open_input` opens an input for reading if it is a regular file (devices such as
  ``/dev/zero`` and sockets are refused without blocking), so a read is bounded by the size of
  the file; a pipe (process substitution ``<(...)``, a named pipe) is read like stdin, up to
  :data:`MAX_STREAM_BYTES`; :func:`read_aec` reads an ``.aec`` file that way, header first.
  :func:`read_aec_stream` reads one from an open binary file (``-`` as stdin, a file object
  given to :func:`aecodec.decompress`): header first, bounded by the file's size if it is a
  regular file, else by :data:`MAX_STREAM_BYTES` (:func:`read_stream` reads any input that
  way, e.g. an image on stdin).
- :func:`write_atomic` writes an output atomically: a temporary file in the destination's
  folder, fsync, then ``link()`` (no overwrite: atomic, no check-then-rename race) or
  ``os.replace`` (``force``). The destination is never partial. Character devices and pipes
  (``/dev/null``, ``/dev/stdout``) are written in place, never replaced by a regular file;
  block devices and directories are refused; a symlink is followed and its target replaced.
- :func:`sha256_file` hashes a file in blocks (weights, Kodak images, benchmark inputs).
- :func:`terminate_cleanly` turns SIGTERM and SIGHUP into an exception while it is active, so
  a killed write removes its temporary file as an interrupted one does (SIGKILL cannot be
  caught: it may leave a ``.NAME.XXXX.tmp`` file, never a partial destination).

Imports only the standard library (and aecodec's errors), so the CLI stays cheap to start.
"""

from __future__ import annotations

import errno
import hashlib
import io
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
    "MAX_STREAM_BYTES",
    "Terminated",
    "check_output",
    "check_stream",
    "open_input",
    "read_aec",
    "read_aec_stream",
    "read_stream",
    "sha256_file",
    "terminate_cleanly",
    "write_atomic",
]

EXISTS_MESSAGE = "exists; not overwritten without force=True"
"""Message of the :class:`FileExistsError` raised when an output exists and ``force`` is off."""

MAX_STREAM_BYTES: int = 2**30
"""Most bytes (1 GiB) :func:`read_stream` and :func:`read_aec_stream` read from a stream that
is not a regular file (a pipe on stdin, a socket, ``io.BytesIO``); regular files are bounded by
their size. Read at call time: setting ``aecodec.files.MAX_STREAM_BYTES`` changes it
process-wide."""

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
    """Open ``path`` for binary reading if it is a regular file or a pipe.

    The file is opened non-blocking and checked with ``fstat``, so a device never streams
    forever. A pipe (``aecodec compress <(cat a.png)``, a named pipe) is read to its end with
    the bounded reader of stdin (:func:`read_stream`, at most :data:`MAX_STREAM_BYTES`) and
    returned as an in-memory file.

    Args:
        path: The input.
        error: Exception class raised for a non-regular file (``ImageError`` for images).

    Returns:
        The open file (the caller closes it).

    Raises:
        FileNotFoundError / PermissionError / IsADirectoryError: as the OS reports.
        FormatError: (or ``error``) the path is a device or socket, or a pipe carries more
            than :data:`MAX_STREAM_BYTES`.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
        if stat.S_ISFIFO(mode):
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            with os.fdopen(fd, "rb", closefd=False) as pipe:
                data = read_stream(pipe, error)
            if not data:  # the descriptor is closed below
                raise error(
                    f"{os.fspath(path)}: the pipe gave no data (nothing is writing to it, or "
                    "the writer wrote nothing)"
                )
            os.close(fd)
            return io.BytesIO(data)
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
        return read_aec_stream(fh)


def _fd_mode(fh: IO[bytes]) -> int | None:
    """The file type bits of ``fh``'s descriptor, or None if it has none (``io.BytesIO``)."""
    try:
        return os.fstat(fh.fileno()).st_mode
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


def check_stream(fh: IO[bytes], error: type[Exception] = FormatError) -> None:
    """Refuse an open device before reading it (a terminal would block, /dev/zero never ends).

    Raises:
        FormatError: (or ``error``) ``fh`` is a character or block device.
    """
    mode = _fd_mode(fh)
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
        raise error(
            f"the input is {_kind(mode)} (e.g. /dev/zero or a terminal), not a file or a pipe; "
            "aecodec does not read devices"
        )


def _regular_remaining(fh: IO[bytes]) -> int | None:
    """Bytes left in ``fh`` if it reads a regular file's bytes as stored, at a known position,
    else None. Only plain file objects qualify: a ``gzip.open()`` or ``bz2`` object has the
    compressed file's descriptor, whose size says nothing of the data it yields."""
    if not isinstance(fh, (io.FileIO, io.BufferedReader, io.BufferedRandom)):
        return None
    if isinstance(fh, (io.BufferedReader, io.BufferedRandom)) and not isinstance(fh.raw, io.FileIO):
        return None
    mode = _fd_mode(fh)
    if mode is None or not stat.S_ISREG(mode):
        return None
    try:
        return max(0, os.fstat(fh.fileno()).st_size - fh.tell())
    except (OSError, ValueError):
        return None


def sha256_file(path: StrPath) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_up_to(fh: IO[bytes], n: int, chunk_size: int = 1 << 20) -> bytes:
    """Up to ``n`` bytes, fewer only at the end of the stream (short reads are retried).

    A first read that returns everything (a regular file read in one call) is returned as it
    is; otherwise the chunks go into one growing buffer (about 1.1x the data at the peak, not
    the 2x of chunks plus their join)."""
    first = fh.read(min(n, chunk_size))
    if first is None:  # a non-blocking stream with nothing to read yet
        raise BlockingIOError(errno.EAGAIN, "non-blocking stream has no data ready")
    if not isinstance(first, (bytes, bytearray)):
        raise TypeError("the file object must be opened in binary mode ('rb')")
    if len(first) >= n or not first:
        return bytes(first)
    buf: io.BytesIO | None = None  # grows in place; getvalue() hands its bytes over uncopied
    got = len(first)
    while got < n:
        chunk = fh.read(min(n - got, chunk_size))
        if chunk is None:
            raise BlockingIOError(errno.EAGAIN, "non-blocking stream has no data ready")
        if not chunk:
            break
        if buf is None:
            buf = io.BytesIO()
            buf.write(first)
            first = b""
        got += buf.write(chunk)
    return bytes(first) if buf is None else buf.getvalue()  # a file read in one call: as is


def read_stream(
    fh: IO[bytes], error: type[Exception] = FormatError, *, limit: int | None = None
) -> bytes:
    """The rest of an open binary file: to its end if it is a regular file, else at most
    ``limit`` bytes. Character devices (``/dev/zero``, a terminal) are refused, as
    :func:`open_input` refuses them.

    Args:
        fh: the file (stdin, a socket, ``io.BytesIO``, an open file...).
        error: exception class raised for a stream that is too long (``ImageError`` for
            images).
        limit: most bytes read from a stream that is not a regular file; ``None`` reads
            :data:`MAX_STREAM_BYTES` at call time.

    Raises:
        FormatError: (or ``error``) a character device, or a stream longer than ``limit``.
        TypeError: the file is open in text mode.
        OSError: reading fails.
    """
    check_stream(fh, error)
    remaining = _regular_remaining(fh)
    if remaining is not None:
        # remaining + 1: a file that grows while being read is caught as trailing bytes.
        return _read_up_to(fh, remaining + 1, remaining + 1)
    cap = MAX_STREAM_BYTES if limit is None else limit
    data = _read_up_to(fh, max(0, cap) + 1)
    if len(data) > cap:
        name = "aecodec.files.MAX_STREAM_BYTES" if limit is None else "the limit"
        raise error(
            f"input stream is longer than {cap} bytes ({name}); save it to a file and read that"
        )
    return data


def read_aec_stream(fh: IO[bytes]) -> bytes:
    """Read an ``.aec`` file from an open binary file, from its current position to the end.

    Like :func:`read_aec`, the magic and version are checked before the rest is read; the rest
    is read by :func:`read_stream` (never past a regular file's size, at most
    :data:`MAX_STREAM_BYTES` from any other stream).

    Raises:
        FormatError: a character device, data that does not start like an ``.aec`` file, or
            a stream longer than :data:`MAX_STREAM_BYTES`.
        TypeError: the file is open in text mode.
        OSError: reading fails.
    """
    check_stream(fh, FormatError)
    start = fh.tell() if _regular_remaining(fh) is not None else None
    head = _read_up_to(fh, container.PREFIX_SIZE)
    container.check_prefix(head)
    if start is not None:  # a regular file: read it whole in one buffer (no join, no copy)
        fh.seek(start)
        return read_stream(fh)
    return head + read_stream(fh)


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


# Longest file name most file systems take (ext4, XFS, APFS, NTFS in UTF-16 units).
_NAME_MAX = 255


def _temporary_prefix(target: Path) -> str:
    """``.NAME.`` for the temporary file beside ``target``, NAME shortened (keeping its start,
    whole UTF-8 characters) so that ``.NAME.XXXXXXXX.tmp`` fits a 255-byte file name even when
    ``target``'s own name is close to that length."""
    room = _NAME_MAX - len(".") - len(".") - 8 - len(".tmp")  # mkstemp adds 8 characters
    raw = target.name.encode("utf-8", "surrogateescape")
    if len(raw) > room:
        raw = raw[:room]
        while raw and (raw[-1] & 0xC0) == 0x80:  # do not cut inside a UTF-8 character
            raw = raw[:-1]
        raw = raw[:-1] if raw and raw[-1] >= 0xC0 else raw
    return "." + raw.decode("utf-8", "surrogateescape") + "."


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
    fd, tmp_name = tempfile.mkstemp(
        prefix=_temporary_prefix(target), suffix=".tmp", dir=target.parent
    )
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
