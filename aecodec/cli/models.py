"""``aecodec models`` (the bundled models) and ``aecodec demo`` (code one image, print numbers)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from PIL import Image

import aecodec
from aecodec.cli.common import (
    FILE_ERRORS,
    check_model_and_quality,
    describe_error,
    fail,
    handle_interrupt,
    model_option,
    quality_option,
    report,
    strip_path_prefix,
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
@handle_interrupt
def models(ctx: click.Context, as_json: bool) -> None:
    """List the bundled models (* marks the default)."""
    try:
        entries = list(aecodec.models())
    except FILE_ERRORS as exc:
        fail(describe_error(exc))
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    table: list[tuple[str, ...]] = [("NAME", "", "QUALITIES", "SIZE", "SHA256", "DESCRIPTION")]
    table += [_row(m) for m in entries]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)] + [row[-1]]
        click.echo("  ".join(cells).rstrip())


def _row(m: dict[str, Any]) -> tuple[str, ...]:
    return (
        str(m.get("name", "")),
        "*" if m.get("default") else "",
        _format_qualities(m.get("qualities", [])),
        _format_size(int(m.get("bytes", 0))),
        str(m.get("sha256", ""))[:12],
        str(m.get("description", "")),
    )


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


@click.command()
@click.argument(
    "image", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@quality_option(
    "Quality: a level or a number between them in steps of 0.01 (default: the model's)."
)
@model_option
@handle_interrupt
def demo(image: Path | None, quality: float | None, model: str | None) -> None:
    """Compress and decompress one image; print size, bpp, PSNR and times.

    IMAGE defaults to the photograph bundled with aecodec (Kodak's kodim23, 384x256).
    """
    import numpy as np

    from aecodec.data import sample_image
    from aecodec.metrics import psnr_rgb

    check_model_and_quality(model, quality)
    t0 = time.perf_counter()
    codec = aecodec.get_codec(model)
    t_load = time.perf_counter() - t0
    src = image or sample_image()
    arr = _load_rgb(src)
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
        f"model     {codec.name} (sha256 {codec.sha256[:12]}), quality {q} "
        f"(levels {codec.qualities[0]}-{codec.qualities[-1]})"
    )
    click.echo(f"size      {len(data)} bytes, {8 * len(data) / (w * h):.4f} bpp")
    click.echo(f"PSNR-RGB  {psnr_rgb(arr, out):.2f} dB")
    click.echo(f"time      load {t_load:.2f} s, encode {t_enc:.3f} s, decode {t_dec:.3f} s")


def _load_rgb(src: Path) -> Any:
    """``uint8 [H, W, 3]`` of an image file; a bad file is reported and exits with status 1."""
    import numpy as np

    try:
        with Image.open(src) as im:
            return np.asarray(im.convert("RGB"))
    except FILE_ERRORS as exc:
        report(src, strip_path_prefix(describe_error(exc), src))
        raise click.exceptions.Exit(1) from None
