"""Fine qualities: do qualities between two levels sit on the RD curve, and do targets land?

Measured on the held-out validation images of the training set (never Kodak): centre crops of
at most ``--crop`` pixels a side of every second of the 16 validation images (8 images).

* RD: for each fractional quality t (``--qualities``) and its neighbouring levels a < t < a + 1,
  the mean bpp (whole files) and PSNR-RGB over the images; "chord" is the PSNR of the straight
  line between the two levels' points at t's bpp, so ``dB over chord`` >= 0 means t lies on or
  above that line; ``rate vs chord`` is t's bpp against the line's bpp at t's PSNR.
* Rate control (``--bpp-targets``): for each image and target, the file chosen by
  ``compress_to_target`` on the levels only and on the fine scale: how far under the target it
  lands (the size target is never exceeded) and how many encodes it took.

    python -m benchmarks.fine_quality --qualities 2.5,4.25,4.5,4.75,6.5 --bpp-targets 0.3,0.6,1.0
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from aecodec.codec import Codec

DEFAULT_TRAIN = Path(__file__).resolve().parent.parent.parent / "shared" / "train"
Images = list[tuple[str, np.ndarray]]
Points = dict[float, tuple[float, float, list[tuple[float, float]]]]


def validation_crops(folder: Path, count: int, crop: int) -> Images:
    """``(name, uint8 [h, w, 3])``: centre crops of every second validation image."""
    from aecodec.train.data import list_images, split_files

    _, val = split_files(list_images(folder), 16)
    out = []
    for path in val[::2][:count]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        h, w = min(crop, rgb.shape[0]), min(crop, rgb.shape[1])
        y, x = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
        out.append((path.name, np.ascontiguousarray(rgb[y : y + h, x : x + w])))
    return out


def rd_points(codec: Codec, images: Images, qualities: list[float]) -> Points:
    """Mean bpp, mean PSNR and per-image ``(bpp, psnr)`` of every quality over ``images``."""
    from aecodec.metrics import psnr_rgb

    points = {}
    for q in qualities:
        rows = []
        for _, rgb in images:
            data = codec.compress(rgb, q)
            decoded = np.asarray(codec.decompress(data).convert("RGB"))
            rows.append((8 * len(data) / (rgb.shape[0] * rgb.shape[1]), psnr_rgb(rgb, decoded)))
        arr = np.array(rows)
        points[q] = (float(arr[:, 0].mean()), float(arr[:, 1].mean()), rows)
    return points


def _chord(p: tuple[float, float], r: tuple[float, float], bpp: float) -> float:
    """PSNR of the straight line through ``p`` and ``r`` (bpp, PSNR) at ``bpp`` (nan if the two
    points have the same bpp)."""
    if r[0] == p[0]:
        return math.nan
    return p[1] + (r[1] - p[1]) * (bpp - p[0]) / (r[0] - p[0])


def rd_table(points: Points, fractional: list[float]) -> list[dict[str, float]]:
    """One row per fractional quality: its point, the chord and how far above it lies."""
    rows = []
    for t in fractional:
        a, b = math.floor(t), math.floor(t) + 1
        pa, pb, pt = points[a], points[b], points[t]
        chord = _chord(pa[:2], pb[:2], pt[0])
        chord_bpp = _chord(pa[1::-1], pb[1::-1], pt[1])  # the line's bpp at t's PSNR
        above = sum(
            ys >= _chord(ra, rb, xs) for (xs, ys), ra, rb in zip(pt[2], pa[2], pb[2], strict=True)
        )
        rows.append(
            {
                "quality": t,
                "bpp": pt[0],
                "psnr": pt[1],
                "chord_psnr": chord,
                "db_over_chord": pt[1] - chord,
                "rate_vs_chord": pt[0] / chord_bpp - 1,
                "images_on_or_above": above,
                "images": len(pt[2]),
            }
        )
    return rows


def rate_control(
    codec: Codec, images: Images, targets: list[float]
) -> list[dict[str, float | str]]:
    """Per scale (levels / fine) and target: mean and worst shortfall under the size target."""
    from aecodec.ratecontrol import compress_to_target

    rows = []
    for fine in (False, True):
        for bpp in targets:
            short, trials, met = [], [], 0
            for _, rgb in images:
                budget = math.floor(bpp * rgb.shape[0] * rgb.shape[1] / 8)
                r = compress_to_target(codec, rgb, target_size=budget, fine=fine)
                met += r.met
                short.append(1 - r.bytes / budget)
                trials.append(r.trials)
            rows.append(
                {
                    "scale": "fine (0.01)" if fine else "levels",
                    "target_bpp": bpp,
                    "mean_under": float(np.mean(short)),
                    "worst_under": float(np.max(short)),
                    "mean_trials": float(np.mean(trials)),
                    "met": met,
                    "images": len(images),
                }
            )
    return rows


def _markdown(rd: list[dict[str, float]], rc: list[dict[str, float | str]]) -> str:
    lines = [
        "| quality | bpp | PSNR (dB) | chord PSNR at that bpp | dB over chord | rate vs chord "
        "| images on or above |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rd:
        lines.append(
            f"| {r['quality']} | {r['bpp']:.4f} | {r['psnr']:.3f} | {r['chord_psnr']:.3f} | "
            f"{r['db_over_chord']:+.3f} | {100 * r['rate_vs_chord']:+.2f} % | "
            f"{r['images_on_or_above']}/{r['images']} |"
        )
    if rc:
        lines += [
            "",
            "| scale | target bpp | mean under target | worst under target | encodes | met |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for c in rc:
            lines.append(
                f"| {c['scale']} | {c['target_bpp']} | {100 * float(c['mean_under']):.2f} % | "
                f"{100 * float(c['worst_under']):.2f} % | {c['mean_trials']:.1f} | "
                f"{c['met']}/{c['images']} |"
            )
    return "\n".join(lines)


@click.command()
@click.option("--model", default=None, help="Model name (default: the default model).")
@click.option("--qualities", default="2.5,4.25,4.5,4.75,6.5", show_default=True)
@click.option("--bpp-targets", default="", help="Comma-separated bpp targets for rate control.")
@click.option("--train", type=click.Path(path_type=Path), default=DEFAULT_TRAIN, show_default=True)
@click.option("--images", "count", type=int, default=8, show_default=True)
@click.option("--crop", type=int, default=512, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
def main(
    model: str | None,
    qualities: str,
    bpp_targets: str,
    train: Path,
    count: int,
    crop: int,
    threads: int,
    json_out: Path | None,
) -> None:
    """Fine qualities against the chord between levels; rate-control accuracy."""
    import torch

    import aecodec

    torch.set_num_threads(threads)
    codec = aecodec.Codec(model)
    images = validation_crops(train, count, crop)
    fractional = [float(q) for q in qualities.split(",") if q]
    levels = sorted({math.floor(t) for t in fractional} | {math.floor(t) + 1 for t in fractional})
    points = rd_points(codec, images, levels + fractional)
    rd = rd_table(points, fractional)
    targets = [float(t) for t in bpp_targets.split(",") if t]
    rc = rate_control(codec, images, targets)
    click.echo(f"{codec.name}, {len(images)} validation crops (at most {crop}x{crop})")
    click.echo(_markdown(rd, rc))
    if json_out is not None:
        record = {
            "model": codec.name,
            "images": [n for n, _ in images],
            "levels": {str(q): points[q][:2] for q in levels},
            "rd": rd,
            "rate_control": rc,
        }
        json_out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
