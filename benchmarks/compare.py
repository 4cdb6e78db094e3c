"""Side-by-side crops of several codecs at the same file size: ``aecodec compare``.

Usage::

    aecodec compare photo.png --size 12K -o cmp.png              # aecodec, JPEG, WebP, AVIF, ...
    aecodec compare photo.png --bpp 0.25 --crop 256x192+300+120 --codecs aecodec,jpeg,avif
    aecodec compare photo.png --size 20K -o cmp.png --html cmp/  # also the full decoded images

Every codec codes the whole image at the highest setting whose complete file fits the size
(aecodec: its rate control on the fine quality scale; JPEG, WebP, AVIF: integer qualities;
JPEG 2000: the compression ratio; JPEG XL: the Butteraugli distance), is decoded, and measured
on the whole image (PSNR-RGB, MS-SSIM). The picture shows the same crop of the original and of
every decoded image, labelled with codec, bytes, bpp, PSNR and MS-SSIM. Codecs whose library is
missing are left out with a note.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from benchmarks import metrics
from benchmarks.codecs import BenchCodec, CodecUnavailable, make_codec

#: Codecs compared by default, in picture order after the original.
DEFAULT_CODECS = ("aecodec", "jpeg", "webp", "avif", "jpeg2000", "jxl")

#: Per codec: (lowest-rate setting, highest-rate setting, integer settings). The file size grows
#: monotonically (in practice) from the first to the second.
SEARCH_RANGES: dict[str, tuple[float, float, bool]] = {
    "jpeg": (1, 95, True),
    "jpeg444": (1, 95, True),
    "webp": (0, 100, True),
    "avif": (0, 100, True),
    "avif420": (0, 100, True),
    "jpeg2000": (400.0, 2.0, False),  # compression ratio: smaller is more bytes
    "jxl": (25.0, 0.1, False),  # Butteraugli distance: smaller is more bytes
}

#: Bisection steps of a continuous setting (ratio, distance): size within ~0.1 % of the best.
CONTINUOUS_STEPS = 14
LABEL_HEIGHT = 58
GAP = 6


@dataclass(frozen=True)
class Coded:
    """One codec's result at the size target.

    Attributes:
        label: the codec as shown (``"JPEG 4:2:0"``).
        setting: the setting used (quality, ratio, distance), as text.
        data: the complete file.
        rgb: ``uint8 [H, W, 3]`` decoded image.
        psnr: PSNR-RGB in dB against the original.
        ms_ssim: MS-SSIM (``nan`` for images under 161 px a side).
    """

    label: str
    setting: str
    data: bytes
    rgb: np.ndarray
    psnr: float
    ms_ssim: float


def largest_fitting(
    encode: Callable[[float], bytes], lo: float, hi: float, integer: bool, max_bytes: int
) -> tuple[float, bytes] | None:
    """The highest-rate setting between ``lo`` (lowest rate) and ``hi`` whose file fits
    ``max_bytes``, by bisection; ``None`` if not even ``lo`` fits."""
    best: tuple[float, bytes] | None = None
    data = encode(lo)
    if len(data) > max_bytes:
        return None
    best = (lo, data)
    data = encode(hi)
    if len(data) <= max_bytes:
        return hi, data
    a, b = lo, hi  # a fits, b does not
    for _ in range(64 if integer else CONTINUOUS_STEPS):
        if integer and abs(b - a) <= 1:
            break
        mid = round((a + b) / 2) if integer else (a + b) / 2
        data = encode(mid)
        if len(data) <= max_bytes:
            a, best = mid, (mid, data)
        else:
            b = mid
    return best


def code_at_size(name: str, codec: BenchCodec, rgb: np.ndarray, max_bytes: int) -> Coded | None:
    """``codec`` on ``rgb`` at the largest setting that fits ``max_bytes`` (``None``: even its
    lowest setting is larger)."""
    if name == "aecodec":
        import aecodec

        data = aecodec.compress(rgb, target_size=max_bytes)
        if len(data) > max_bytes:
            return None
        setting = f"q {aecodec.info(data)['quality']:g}"
    else:
        if name not in SEARCH_RANGES:
            raise click.UsageError(f"compare cannot search codec {name!r} by size")
        lo, hi, integer = SEARCH_RANGES[name]
        found = largest_fitting(lambda s: codec.encode(rgb, s), lo, hi, integer, max_bytes)
        if found is None:
            return None
        value, data = found
        setting = f"{'q' if integer else 'ratio' if name == 'jpeg2000' else 'd'} {value:.4g}"
    decoded = codec.decode(data)
    return Coded(
        codec.label,
        setting,
        data,
        decoded,
        _psnr(rgb, decoded),
        metrics.ms_ssim(rgb, decoded),
    )


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def parse_crop(text: str | None, width: int, height: int) -> tuple[int, int, int, int]:
    """``WxH`` (centred) or ``WxH+X+Y`` -> ``(x, y, w, h)`` inside the image; default: a
    centred crop of at most 256x256."""
    if text is None:
        w, h = min(256, width), min(256, height)
        return (width - w) // 2, (height - h) // 2, w, h
    try:
        size, _, offset = text.partition("+")
        w, h = (int(v) for v in size.lower().split("x"))
        if offset:
            x, y = (int(v) for v in offset.split("+"))
        else:
            x, y = (width - w) // 2, (height - h) // 2
    except ValueError:
        raise click.BadParameter(f"{text!r}: use WxH or WxH+X+Y", param_hint="--crop") from None
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise click.BadParameter(
            f"{text!r} is not inside the {width}x{height} image", param_hint="--crop"
        )
    return x, y, w, h


def render(
    original: np.ndarray, results: Sequence[Coded], box: tuple[int, int, int, int], title: str
) -> Image.Image:
    """One picture: the crop ``box`` of the original and of every result, side by side (two
    rows when there are more than four panels), each labelled."""
    x, y, w, h = box
    panels: list[tuple[list[str], np.ndarray]] = [([title, "original"], original)]
    for r in results:
        bpp = 8 * len(r.data) / (original.shape[0] * original.shape[1])
        ssim = "n/a" if math.isnan(r.ms_ssim) else f"{r.ms_ssim:.3f}"
        panels.append(
            (
                [f"{r.label} ({r.setting})", f"{len(r.data):,} B  {bpp:.3f} bpp"],
                r.rgb,
            )
        )
        panels[-1][0].append(f"PSNR {r.psnr:.2f} dB  MS-SSIM {ssim}")
    cols = len(panels) if len(panels) <= 4 else math.ceil(len(panels) / 2)
    rows = math.ceil(len(panels) / cols)
    sheet = Image.new(
        "RGB", (cols * (w + GAP) + GAP, rows * (h + LABEL_HEIGHT + GAP) + GAP), "white"
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for i, (lines, rgb) in enumerate(panels):
        px = GAP + (i % cols) * (w + GAP)
        py = GAP + (i // cols) * (h + LABEL_HEIGHT + GAP)
        for j, line in enumerate(lines):
            draw.text((px, py + 2 + 17 * j), _fit(draw, line, font, w), fill="black", font=font)
        sheet.paste(Image.fromarray(rgb[y : y + h, x : x + w]), (px, py + LABEL_HEIGHT))
    return sheet


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text``, shortened in the middle with an ellipsis until it fits ``width`` pixels (a
    long file name must not run into the next panel's label)."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 1:
        keep -= 1
        short = text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2 :]
        if draw.textlength(short, font=font) <= width:
            return short
    return "…"


def write_html(folder: Path, name: str, original: np.ndarray, results: Sequence[Coded]) -> Path:
    """``folder/index.html`` with the full original and decoded images (lossless PNG)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(original).save(folder / "original.png")
    rows = ['<figure><img src="original.png"><figcaption>original</figcaption></figure>']
    for i, r in enumerate(results):
        file = f"{i}-{r.label.split()[0].lower()}.png"
        Image.fromarray(r.rgb).save(folder / file)
        caption = html.escape(
            f"{r.label} ({r.setting}): {len(r.data):,} bytes, PSNR {r.psnr:.2f} dB, "
            f"MS-SSIM {r.ms_ssim:.4f}"
        )
        rows.append(f'<figure><img src="{file}"><figcaption>{caption}</figcaption></figure>')
    page = folder / "index.html"
    page.write_text(
        f"<!doctype html><meta charset=utf-8><title>{html.escape(name)}</title>"
        "<style>figure{display:inline-block;margin:8px}img{max-width:100%}</style>\n"
        + "\n".join(rows)
        + "\n"
    )
    return page


def _size_limit(size: str | None, bpp: float | None, pixels: int) -> int:
    if (size is None) == (bpp is None):
        raise click.UsageError("give exactly one of --size and --bpp")
    if bpp is not None:
        if not (math.isfinite(bpp) and bpp > 0):
            raise click.BadParameter(f"{bpp} is not a positive number", param_hint="--bpp")
        return max(1, int(bpp * pixels / 8))
    from aecodec.ratecontrol import parse_size

    try:
        return parse_size(str(size))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from None


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--size", help="Bytes each file may take: 12000, 12K, 1.5M.")
@click.option("--bpp", type=float, help="Or bits per pixel of the whole image.")
@click.option("--crop", help="Crop shown: WxH (centred) or WxH+X+Y. Default: 256x256, centred.")
@click.option(
    "--codecs",
    default=",".join(DEFAULT_CODECS),
    show_default=True,
    help="Comma-separated codecs (those whose library is missing are left out with a note).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("compare.png"),
    show_default=True,
    help="The picture (PNG).",
)
@click.option(
    "--html",
    "html_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write FOLDER/index.html with the full decoded images.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing picture.")
def main(
    image: Path,
    size: str | None,
    bpp: float | None,
    crop: str | None,
    codecs: str,
    output: Path,
    html_dir: Path | None,
    force: bool,
) -> None:
    """Compare codecs on IMAGE at the same file size: one picture of crops side by side."""
    if output.exists() and not force:
        raise click.ClickException(f"{output} exists; pass --force to overwrite it")
    rgb = np.asarray(Image.open(image).convert("RGB"))
    height, width = rgb.shape[:2]
    max_bytes = _size_limit(size, bpp, width * height)
    box = parse_crop(crop, width, height)
    results: list[Coded] = []
    for name in (c.strip() for c in codecs.split(",") if c.strip()):
        try:
            codec = make_codec(name)
        except (KeyError, CodecUnavailable) as exc:
            click.echo(f"compare: {name} left out: {exc}", err=True)
            continue
        coded = code_at_size(name, codec, rgb, max_bytes)
        if coded is None:
            click.echo(f"compare: {name} left out: no setting fits {max_bytes:,} bytes", err=True)
            continue
        results.append(coded)
        click.echo(
            f"{coded.label:<22} {coded.setting:<10} {len(coded.data):>9,} B  "
            f"PSNR {coded.psnr:6.2f} dB  MS-SSIM {coded.ms_ssim:.4f}"
        )
    title = f"{image.name} @ {max_bytes:,} B"
    render(rgb, results, box, title).save(output)
    click.echo(f"wrote {output}")
    if html_dir is not None:
        click.echo(f"wrote {write_html(html_dir, image.name, rgb, results)}")


if __name__ == "__main__":
    main()
