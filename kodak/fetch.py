"""Fetch and verify the 24 Kodak images into ``kodak/images/`` (git-ignored).

Usage::

    python -m kodak.fetch                      # ../shared/kodak if present, else download
    python -m kodak.fetch --from /path/to/kodak
    python -m kodak.fetch --dest /tmp/kodak --no-download

Every file is checked against ``kodak/SHA256SUMS``; a file that does not match is refused and
never lands in the destination. Files already present and verified are skipped, so the command
is idempotent and cheap to call before every benchmark (see :func:`ensure_kodak`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import click

from aecodec.files import sha256_file

__all__ = [
    "DEFAULT_DEST",
    "DEFAULT_URL",
    "SHARED_DIR",
    "SUMS_FILE",
    "KodakError",
    "ensure_kodak",
    "find_image",
    "find_kodak",
    "read_sums",
]

KODAK_DIR = Path(__file__).resolve().parent
REPO_ROOT = KODAK_DIR.parent
SUMS_FILE = KODAK_DIR / "SHA256SUMS"
DEFAULT_DEST = KODAK_DIR / "images"
SHARED_DIR = REPO_ROOT.parent / "shared" / "kodak"
SEARCH_DIRS = (DEFAULT_DEST, SHARED_DIR)
"""Where Kodak images are looked for, in order: where ``python -m kodak.fetch`` puts them, then
the shared copy. The one place that knows (tests, benchmarks and the speed suite use it)."""
DEFAULT_URL = "https://r0k.us/graphics/kodak/kodak/{name}"


class KodakError(RuntimeError):
    """The Kodak images could not be obtained or did not verify."""


def read_sums(path: str | os.PathLike[str] = SUMS_FILE) -> dict[str, str]:
    """Read a ``sha256sum``-style file.

    Args:
        path: File with lines ``<64 hex digits>  <file name>``.

    Returns:
        Mapping file name -> lowercase hex digest, in file order.

    Raises:
        KodakError: The file is missing or a line is malformed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except OSError as exc:
        raise KodakError(f"cannot read checksum file {path}: {exc}") from exc
    sums: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise KodakError(f"{path}:{lineno}: malformed line {line!r}")
        digest, name = parts
        sums[name.lstrip("*")] = digest.lower()
    if not sums:
        raise KodakError(f"{path} lists no files")
    return sums


def _verified(path: Path, digest: str) -> bool:
    return path.is_file() and sha256_file(path) == digest


def find_image(name: str) -> Path | None:
    """One verified Kodak image (``kodim23.png``) from :data:`SEARCH_DIRS`, or ``None``.

    Raises:
        KeyError: ``name`` is not in ``kodak/SHA256SUMS``.
    """
    digest = read_sums()[name]
    for d in SEARCH_DIRS:
        if _verified(d / name, digest):
            return d / name
    return None


def find_kodak(
    dest: str | os.PathLike[str] | None = None, sums: Mapping[str, str] | None = None
) -> Path | None:
    """Return the first directory holding all verified Kodak images, without copying anything.

    Looks at ``dest`` (default ``kodak/images``), then at ``../shared/kodak``.

    Args:
        dest: Directory to check first.
        sums: Expected digests (default: ``kodak/SHA256SUMS``).

    Returns:
        The directory, or ``None`` when neither holds the complete verified set.
    """
    sums = dict(sums) if sums is not None else read_sums()
    dirs = SEARCH_DIRS if dest is None else (Path(dest), SHARED_DIR)
    for d in dirs:
        if d.is_dir() and all(_verified(d / n, h) for n, h in sums.items()):
            return d
    return None


def _copy_verified(src: Path, dst: Path, digest: str) -> None:
    """Copy ``src`` to ``dst`` through a temporary file; only a verified file is renamed in."""
    got = sha256_file(src)
    if got != digest:
        raise KodakError(
            f"checksum mismatch for {src}: expected sha256 {digest}, got {got}. "
            "This is not the original Kodak image; refusing to use it."
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        if sha256_file(tmp) != digest:  # the source changed while we copied
            raise KodakError(f"checksum mismatch after copying {src}; try again")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _download_verified(url: str, dst: Path, digest: str, timeout: float) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(url, headers={"User-Agent": "aecodec-kodak-fetch"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                shutil.copyfileobj(resp, out)
        got = sha256_file(tmp)
        if got != digest:
            raise KodakError(
                f"checksum mismatch for {url}: expected sha256 {digest}, got {got}; refusing it"
            )
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_kodak(
    dest: str | os.PathLike[str] | None = None,
    source: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    url: str = DEFAULT_URL,
    timeout: float = 30.0,
    sums: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Make sure ``dest`` holds all Kodak images, each verified against ``SHA256SUMS``.

    Files already in ``dest`` with the right digest are left alone. Missing (or wrong) files are
    copied from ``source`` if given; otherwise from ``../shared/kodak`` when that directory exists,
    then downloaded from ``url``.

    Args:
        dest: Destination directory (created if needed). Default ``kodak/images``.
        source: Directory holding ``kodim01.png`` ... ``kodim24.png``. When given it is the only
            source used (no download).
        download: Allow downloading when no local source has the file.
        url: Download URL template with a ``{name}`` field.
        timeout: Socket timeout per download, in seconds.
        sums: Expected digests, name -> hex (default: read ``kodak/SHA256SUMS``).
        log: Called with one line of text per file fetched (e.g. ``click.echo``).

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        KodakError: A source file does not match its checksum, or some files could not be
            obtained from any source (the message says how to fix it).
    """
    sums = dict(sums) if sums is not None else read_sums()
    dest_dir = Path(dest) if dest is not None else DEFAULT_DEST
    src_dir = Path(source) if source is not None else None
    if src_dir is not None and not src_dir.is_dir():
        raise KodakError(f"--from directory {src_dir} does not exist")

    todo = [n for n, h in sums.items() if not _verified(dest_dir / n, h)]
    if not todo:
        return dest_dir
    dest_dir.mkdir(parents=True, exist_ok=True)

    failures: dict[str, str] = {}
    for name in todo:
        digest = sums[name]
        dst = dest_dir / name
        if src_dir is not None:
            candidates = [src_dir]
        else:
            candidates = [SHARED_DIR] if SHARED_DIR.is_dir() else []
        copied = False
        for cand in candidates:
            if (cand / name).is_file():
                _copy_verified(cand / name, dst, digest)  # a mismatch is an error, not a fallback
                copied = True
                if log:
                    log(f"copied   {name} from {cand}")
                break
        if copied:
            continue
        if src_dir is not None:
            failures[name] = f"not found in {src_dir}"
            continue
        if not download:
            failures[name] = "not found locally and downloading is disabled"
            continue
        file_url = url.format(name=name)
        try:
            _download_verified(file_url, dst, digest, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            failures[name] = f"download from {file_url} failed: {exc}"
            continue
        if log:
            log(f"download {name} from {file_url}")

    if failures:
        first = next(iter(failures.items()))
        raise KodakError(
            f"could not obtain {len(failures)} of {len(sums)} Kodak images into {dest_dir} "
            f"(first: {first[0]}: {first[1]}). If you have no network, copy the images from "
            "elsewhere with `python -m kodak.fetch --from DIR`, where DIR holds "
            "kodim01.png .. kodim24.png."
        )
    return dest_dir


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory holding kodim01.png..kodim24.png (default: ../shared/kodak, then download).",
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DEST,
    show_default=True,
    help="Where to put the verified images.",
)
@click.option("--no-download", is_flag=True, help="Never use the network.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds per file.")
def main(source: Path | None, dest: Path, no_download: bool, timeout: float) -> None:
    """Copy or download the 24 Kodak images and verify them against kodak/SHA256SUMS."""
    try:
        out = ensure_kodak(dest, source, download=not no_download, timeout=timeout, log=click.echo)
    except KodakError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{len(read_sums())} Kodak images verified in {out}")


if __name__ == "__main__":
    main()
