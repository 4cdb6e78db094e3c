"""``aecodec info``: the headers of ``.aec`` files, as text or JSON."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import click

import aecodec
from aecodec import files
from aecodec.cli.common import (
    FILE_ERRORS,
    INPUT_PATH,
    describe_error,
    handle_interrupt,
    report,
    strip_path_prefix,
)

_LABELS = (
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


@click.command()
@click.argument("paths", nargs=-1, required=True, type=INPUT_PATH, metavar="FILES...")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the header as JSON (an object; a list of objects for several files).",
)
@click.pass_context
@handle_interrupt
def info(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Show the headers of .aec files."""
    headers = []
    failed = False
    for file in paths:
        try:
            headers.append((file, aecodec.info(files.read_aec(file))))
        except FILE_ERRORS as exc:
            report(file, strip_path_prefix(describe_error(exc), file))
            failed = True
    if as_json:
        _print_json(headers, several=len(paths) > 1)
    else:
        for i, (file, header) in enumerate(headers):
            if i:
                click.echo("")
            _print_text(file, header)
    if failed:
        ctx.exit(1)


def _print_json(headers: list[tuple[Path, dict[str, Any]]], *, several: bool) -> None:
    """One object for one file (nothing if it failed), a list of objects for several."""
    if several:
        docs = [{"file": os.fspath(f), **h} for f, h in headers]
        click.echo(json.dumps(docs, indent=2))
    elif headers:
        click.echo(json.dumps(headers[0][1], indent=2))


def _quality_text(quality: float | None) -> str:
    """``5``, or ``5.37 (between levels 5 and 6)`` for a fine quality."""
    if quality is None or isinstance(quality, int):
        return str(quality)
    level = math.floor(quality)
    return f"{quality} (between levels {level} and {level + 1})"


def _print_text(file: Path, header: dict[str, Any]) -> None:
    g = header.get
    rows = {
        "file": click.format_filename(file),
        "format": f"aecodec container v{g('format_version')}",
        "model": f"{g('model')} (weights {g('weights_hash')})",
        "quality": _quality_text(g("quality")),
        "size": f"{g('width')}x{g('height')}",
        "mode": f"{g('mode')}, {g('bit_depth')} bits per channel",
        "tiles": f"{g('num_tiles')} of {g('tile_width')}x{g('tile_height')}",
        "bytes": str(g("bytes")),
        "bpp": f"{float(g('bpp') or 0):.3f}",
        "icc": "yes" if g("has_icc") else "no",
        "exif": "yes" if g("has_exif") else "no",
    }
    width = max(len(k) for k in _LABELS) + 2
    for key in _LABELS:
        click.echo(f"{key + ':':<{width}}{rows[key]}")
