"""Entropy-model ablation: the same transforms coded with different integer tables.

Each variant is a weights file (``aecodec export`` of one run with different
``--spatial-contexts`` / ``--fit-tables``); every one codes the Kodak images through
``aecodec.Codec`` (real files, whole-file bpp, PSNR-RGB of the decoded 8-bit image), and
BD-rate is reported against the first variant. The tables of every variant are fitted on
training images only, never on the images measured here.

    python -m benchmarks.entropy_ablation --variant "learned tables=runs/a.safetensors" \\
        --variant "checkerboard=runs/b.safetensors" --images kodak/images
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
from PIL import Image

from aecodec.codec import ENCODER_REVISION
from aecodec.files import sha256_file
from benchmarks.bdrate import bd_rate
from benchmarks.metrics import bpp, psnr_rgb


def measure(weights: str, images: list[Path], threads: int) -> list[dict[str, float]]:
    """Mean bpp and PSNR-RGB per quality of ``weights`` over ``images``."""
    import torch

    import aecodec

    torch.set_num_threads(threads)
    codec = aecodec.Codec(weights)
    rows = []
    for q in codec.qualities:
        rates, psnrs = [], []
        for p in images:
            rgb = np.asarray(Image.open(p).convert("RGB"))
            data = codec.compress(rgb, quality=q)
            out = np.asarray(codec.decompress(data).convert("RGB"))
            rates.append(bpp(len(data), rgb.shape[1], rgb.shape[0]))
            psnrs.append(psnr_rgb(rgb, out))
        rows.append({"quality": q, "bpp": float(np.mean(rates)), "psnr": float(np.mean(psnrs))})
        click.echo(f"  q{q}: {rows[-1]['bpp']:.4f} bpp {rows[-1]['psnr']:.2f} dB", err=True)
    return rows


@click.command()
@click.option(
    "--variant", "variants", multiple=True, required=True, help="LABEL=WEIGHTS.safetensors"
)
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Image folder (default: the verified Kodak set, kodak/images or ../shared/kodak).",
)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("benchmarks/results/entropy-ablation.json"),
    show_default=True,
)
def main(variants: tuple[str, ...], images: Path | None, threads: int, out: Path) -> None:
    """Measure each variant on the images; BD-rate against the first."""
    if images is None:
        from kodak.fetch import find_kodak

        images = find_kodak()
        if images is None:
            raise click.UsageError("no verified Kodak set: run python -m kodak.fetch, or --images")
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() == ".png")
    if not paths:
        raise click.UsageError(f"no .png images in {images}")
    results: dict[str, list[dict[str, float]]] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_path = out.with_suffix(".cache.json")
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    for spec in variants:
        label, _, weights = spec.rpartition("=")
        if not weights:
            raise click.UsageError(f"--variant needs LABEL=WEIGHTS, got {spec!r}")
        key = f"{sha256_file(Path(weights))} {len(paths)} encoder {ENCODER_REVISION}"
        if key not in cache:
            click.echo(f"{label}: {weights}", err=True)
            cache[key] = measure(weights, paths, threads)
            cache_path.write_text(json.dumps(cache))
        results[label] = cache[key]
    base = next(iter(results.values()))
    lines = ["| variant | BD-rate vs first | bpp range |", "|---|---:|---|"]
    summary = {}
    for label, rows in results.items():
        r = bd_rate(
            [b["bpp"] for b in base],
            [b["psnr"] for b in base],
            [x["bpp"] for x in rows],
            [x["psnr"] for x in rows],
        )
        summary[label] = {"bd_rate_vs_first": r.value, "points": rows}
        lines.append(f"| {label} | {r.value:+.2f} % | {rows[0]['bpp']:.3f}-{rows[-1]['bpp']:.3f} |")
    out.write_text(json.dumps({"images": len(paths), "variants": summary}, indent=1) + "\n")
    # (the per-weights cache beside it lets variants be added one run at a time)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
