"""Safe files (issue 10, items 2-4): bounded reads, outputs never replaced behind --force's
back, devices and pipes written in place, no temporary file left by SIGTERM."""

from __future__ import annotations

import io
import os
import resource
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, smooth_image
from PIL import Image

from aecodec import FormatError, container, files

_LIMIT_AS = 1 << 30  # 1 GiB of address space: an unbounded read fails fast, not the machine


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_LIMIT_AS, _LIMIT_AS))


def _cli(*args: str, cwd: Path, limit: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "aecodec", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        preexec_fn=_limit_memory if limit else None,
    )


def _png(path: Path) -> Path:
    Image.fromarray(smooth_image(40, 24)).save(path)
    return path


# --- item 2: bounded reads -------------------------------------------------------------------


def test_read_aec_refuses_devices_and_pipes(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="is a character device, not a regular file"):
        files.read_aec("/dev/zero")
    fifo = tmp_path / "pipe.aec"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="the pipe gave no data"):
        files.read_aec(fifo)  # no writer: must not block
    with pytest.raises(IsADirectoryError):
        files.read_aec(tmp_path)


def test_read_aec_checks_the_header_first(tmp_path: Path) -> None:
    big = tmp_path / "big.aec"
    with open(big, "wb") as fh:
        fh.write(b"GIF89a")
        fh.truncate(1 << 30)  # sparse: 1 GiB that must not be read
    reads: list[int] = []
    real_open = files.open_input

    def spy(path: object, error: type[Exception] = FormatError):
        fh = real_open(path, error)  # type: ignore[arg-type]
        real_read = fh.read

        class Reader:
            def __getattr__(self, name: str) -> object:
                return getattr(fh, name)

            def read(self, n: int = -1) -> bytes:
                reads.append(n)
                return real_read(n)

            def __enter__(self) -> Reader:
                return self

            def __exit__(self, *exc: object) -> None:
                fh.close()

        return Reader()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files, "open_input", spy)
        with pytest.raises(FormatError, match="bad magic"):
            files.read_aec(big)
    assert reads == [5]


@pytest.mark.parametrize("command", ["info", "decompress"])
def test_cli_refuses_dev_zero_in_bounded_memory(tmp_path: Path, command: str) -> None:
    proc = _cli(
        command,
        "/dev/zero",
        *(["-o", "z.png"] if command == "decompress" else []),
        cwd=tmp_path,
        limit=True,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "aecodec: error: /dev/zero: is a character device, not a regular file; "
        "aecodec reads only regular files (save the data to a file first)"
    ]


def test_cli_info_on_a_pipe_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p.aec")
    proc = _cli("info", "p.aec", cwd=tmp_path)
    assert proc.returncode == 1
    assert "the pipe gave no data" in proc.stderr


# --- streams: the API's file objects and the CLI's "-" (merged from the ux branch) -------------


class _Pipe(io.RawIOBase):
    """A non-seekable stream without a file descriptor that counts the bytes read from it."""

    def __init__(self, data: bytes, repeat: bool = False) -> None:
        self.data, self.repeat, self.pos, self.served = data, repeat, 0, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        if self.repeat:
            chunk = (self.data * (len(buf) // len(self.data) + 1))[: len(buf)]
        else:
            chunk = self.data[self.pos : self.pos + len(buf)]
            self.pos += len(chunk)
        buf[: len(chunk)] = chunk
        self.served += len(chunk)
        return len(chunk)


def test_read_aec_stream_checks_the_header_first_and_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endless = _Pipe(b"GIF89a", repeat=True)
    with pytest.raises(FormatError, match="bad magic"):
        files.read_aec_stream(endless)  # type: ignore[arg-type]
    assert endless.served == 5
    monkeypatch.setattr(files, "MAX_STREAM_BYTES", 1000)
    endless_aec = _Pipe(b"\x89AEC\x01" + bytes(100), repeat=True)
    with pytest.raises(FormatError, match="longer than 1000 bytes"):
        files.read_aec_stream(endless_aec)  # type: ignore[arg-type]
    assert endless_aec.served <= 1001 + 105
    assert files.read_aec_stream(_Pipe(b"\x89AEC\x01rest")) == b"\x89AEC\x01rest"  # type: ignore[arg-type]
    # a regular file is bounded by its size, not by MAX_STREAM_BYTES
    (tmp_path / "f.aec").write_bytes(b"\x89AEC\x01" + bytes(5000))
    with open(tmp_path / "f.aec", "rb") as fh:
        assert len(files.read_aec_stream(fh)) == 5005


def test_streams_refuse_devices_before_reading() -> None:
    with open("/dev/zero", "rb") as zero:
        with pytest.raises(FormatError, match="is a character device"):
            files.read_aec_stream(zero)
        with pytest.raises(FormatError, match="is a character device"):
            files.read_stream(zero)
        assert zero.tell() == 0


def test_api_reads_paths_and_files_through_files(tmp_path: Path) -> None:
    """aecodec.decompress / info / compress: paths are opened like the CLI's inputs."""
    import aecodec
    from aecodec import ImageError

    with pytest.raises(FormatError, match="is a character device, not a regular file"):
        aecodec.info("/dev/zero")
    with open("/dev/zero", "rb") as zero, pytest.raises(FormatError, match="character device"):
        aecodec.decompress(zero)
    os.mkfifo(tmp_path / "p.aec")
    with pytest.raises(FormatError, match="the pipe gave no data"):
        aecodec.decompress(tmp_path / "p.aec")  # no writer: must not block
    with pytest.raises(ImageError, match="is a character device"):
        aecodec.compress("/dev/zero")
    with open("/dev/zero", "rb") as zero, pytest.raises(ImageError, match="character device"):
        aecodec.compress(zero)
    png = _png(tmp_path / "a.png")  # a stream Pillow cannot seek is read first (bounded)
    piped = aecodec.compress(_Pipe(png.read_bytes()), quality=1)  # type: ignore[arg-type]
    assert piped == aecodec.compress(png, quality=1)


def test_cli_stdin_refuses_dev_zero(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for command, out in (("compress", "out.aec"), ("decompress", "out.png")):
        with open("/dev/zero", "rb") as zero:
            proc = subprocess.run(
                [sys.executable, "-m", "aecodec", command, "-", "-o", out],
                stdin=zero,
                capture_output=True,
                text=True,
                cwd=tmp_path,
                env=env,
                timeout=120,
                preexec_fn=_limit_memory,
            )
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith("aecodec: error: -: the input is a character device"), (
            proc.stderr
        )
    assert list(tmp_path.iterdir()) == []


# --- item 3: outputs ---------------------------------------------------------------------------


def test_force_writes_through_a_symlink_to_a_device_in_place(tmp_path: Path) -> None:
    _png(tmp_path / "x.png")
    link = tmp_path / "null.aec"
    link.symlink_to("/dev/null")
    proc = _cli("compress", "x.png", "-o", "null.aec", "--force", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    # Without --force too: nothing is replaced, so nothing needs forcing.
    assert _cli("compress", "x.png", "-o", "null.aec", cwd=tmp_path).returncode == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_pipe_output_is_written_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "out.aec"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    files.write_atomic(fifo, lambda fh: fh.write(b"\x89AEC data"), force=True)
    reader.join(10)
    assert got == [b"\x89AEC data"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_symlink_to_a_regular_file_is_followed_with_force(tmp_path: Path) -> None:
    target = tmp_path / "real.aec"
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "link.aec"
    link.symlink_to(target.name)
    with pytest.raises(FileExistsError, match="exists; not overwritten without force=True"):
        files.write_atomic(link, lambda fh: fh.write(b"new"), force=False)
    files.write_atomic(link, lambda fh: fh.write(b"new"), force=True)
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_block_devices_and_directories_are_refused(tmp_path: Path) -> None:
    (tmp_path / "d.aec").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        files.write_atomic(tmp_path / "d.aec", lambda fh: fh.write(b"x"), force=True)
    block = next((p for p in ("/dev/loop0", "/dev/sda", "/dev/vda") if Path(p).exists()), None)
    if block is None or not stat.S_ISBLK(os.stat(block).st_mode):
        return
    link = tmp_path / "disk.aec"
    link.symlink_to(block)
    with pytest.raises(OSError, match="is a block device"):
        files.check_output(link, force=True)


def test_no_overwrite_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that appears between the check and the publication is never replaced."""
    dst = tmp_path / "out.aec"
    real_link, real_replace = os.link, os.replace

    def racing(real):
        def publish(src: Any, target: Any, *a: Any, **k: Any) -> None:
            Path(os.fspath(target)).write_bytes(b"theirs")  # another process wins the race
            real(src, target, *a, **k)

        return publish

    monkeypatch.setattr(os, "link", racing(real_link))
    monkeypatch.setattr(os, "replace", racing(real_replace))
    with pytest.raises(FileExistsError, match="exists; not overwritten without force=True"):
        files.write_atomic(dst, lambda fh: fh.write(b"ours"), force=False)
    assert dst.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.aec"]


# --- item 4: SIGTERM ---------------------------------------------------------------------------

_SIGTERM_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from PIL import Image
    from aecodec.cli.main import main

    def slow_save(self, fp, *args, **kwargs):
        fp.write(b"\\x89PNG partial")
        fp.flush()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)

    Image.Image.save = slow_save
    main(sys.argv[1:], prog_name="aecodec")
    """
)


def test_sigterm_during_a_write_leaves_nothing(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    assert _cli("compress", "a.png", cwd=tmp_path).returncode == 0
    (tmp_path / "old.png").write_bytes(b"precious")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for out, force in (("new.png", []), ("old.png", ["--force"])):
        proc = subprocess.run(
            [sys.executable, "-c", _SIGTERM_SCRIPT, "decompress", "a.aec", "-o", out, *force],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
        assert proc.stderr.splitlines() == ["aecodec: terminated"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.aec", "a.png", "old.png"]
        assert (tmp_path / "old.png").read_bytes() == b"precious"


@pytest.mark.parametrize("name", ["a" * 251 + ".aec", "é" * 125 + ".png"])
def test_outputs_with_names_near_255_bytes_are_written(tmp_path: Path, name: str) -> None:
    from aecodec.files import write_atomic

    dst = tmp_path / name
    write_atomic(dst, lambda fh: fh.write(b"data"), force=False)
    assert dst.read_bytes() == b"data" and len(os.listdir(tmp_path)) == 1


def test_compressed_file_objects_are_read_to_their_end(tmp_path: Path) -> None:
    """A gzip.open() object has the compressed file's descriptor: its size must not bound
    the read (that made a valid file fail its CRC check)."""
    import gzip

    import numpy as np

    import aecodec
    from aecodec.files import read_aec_stream

    data = aecodec.compress(np.zeros((32, 48, 3), np.uint8), quality=1)
    with gzip.open(tmp_path / "a.aec.gz", "wb") as gz:
        gz.write(data)
    with gzip.open(tmp_path / "a.aec.gz", "rb") as gz:
        assert read_aec_stream(gz) == data  # type: ignore[arg-type]


def test_pipes_are_read_like_stdin(tmp_path: Path, tiny_codec) -> None:
    """Issue 20: a named pipe with a writer, and bash's process substitution `<(cat f)`, are
    read with the bounded reader of stdin (MAX_STREAM_BYTES), not refused."""
    import threading

    from helpers import smooth_image

    data = tiny_codec.compress(smooth_image(40, 24), quality=1)
    fifo = tmp_path / "named.aec"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(data))
    writer.start()
    time.sleep(0.5)  # the writer waits in open() for a reader (as `cat a.aec > pipe &` does)
    assert files.read_aec(fifo) == data
    writer.join(10)
    (tmp_path / "f.aec").write_bytes(data)
    exe = ROOT / ".venv" / "bin" / "aecodec"
    cmd = f"{exe if exe.exists() else 'aecodec'} info <(cat f.aec)"
    proc = subprocess.run(
        ["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert f"bytes:   {len(data)}" in proc.stdout
    old = files.MAX_STREAM_BYTES
    files.MAX_STREAM_BYTES = 16
    try:
        os.unlink(fifo)
        os.mkfifo(fifo)
        writer = threading.Thread(target=lambda: fifo.write_bytes(data))
        writer.start()
        time.sleep(0.5)
        with pytest.raises(FormatError, match="16"):
            files.read_aec(fifo)
    finally:
        files.MAX_STREAM_BYTES = old
        writer.join(10)


def test_streams_and_files_are_read_into_one_buffer(tmp_path: Path) -> None:
    """Reading a pipe-like stream peaks at about the data's size (one growing buffer, not the
    chunks plus their join), and an .aec file is read in one piece (not head + rest)."""
    import tracemalloc

    class Pipe(io.RawIOBase):  # 64 KB per read, no size known: read as stdin is
        def __init__(self, n: int) -> None:
            self.left = n

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            k = min(len(b), self.left, 65536)
            b[:k] = b"\1" * k
            self.left -= k
            return k

    n = 20_000_000
    path = tmp_path / "big.aec"
    path.write_bytes(container.MAGIC + b"\2" + bytes(n))  # read before it is parsed
    tracemalloc.start()
    try:
        data = files.read_stream(io.BufferedReader(Pipe(n)), limit=2 * n)
        assert len(data) == n
        del data
        stream_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        assert len(files.read_aec(path)) == n + 5
        file_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stream_peak < 1.3 * n and file_peak < 1.3 * n, (stream_peak / n, file_peak / n)
