"""Pack the training photos for a GPU lease of the `device` tool (issue 16, lever 5).

The device tool sends the working tree and the paths a call names in ``carry``, 64 MiB in all
per call. The tracked tree is about 61 MB (the bundled weights: 58 MB), so a call can carry
about 5.5 MB of data, while ``../shared/train`` holds 212 MB. This script writes one 256x256
crop of every photo (centred; a JPEG at quality 90, 4:4:4; about 17 MB for the 610 photos)
into parts of at most ``--part-bytes`` each: ``gpu-data-1/``, ``gpu-data-2/``, ... (git-ignored).
A lease carries one part per call while the machine stays warm (ignored files stay between
calls), and ``scripts/gpu_train.sh`` gathers them into ``gpu-data/`` and trains.

Each crop keeps its photo's file name, so the training loop's hash split holds out the same 16
validation photos as on the CPU (their crops are the validation set there; the CPU runs
validate on centre crops of the same side, from the PNGs). Kodak is never read.

    .venv/bin/python scripts/gpu_pack.py                 # -> gpu-data-1 ... gpu-data-4
"""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

from PIL import Image

from aecodec.train.data import list_images


def centre_crop_jpeg(path: Path, side: int, quality: int) -> bytes:
    """The centred ``side`` x ``side`` crop of an image (upscaled first if smaller), as JPEG."""
    with Image.open(path) as src:
        im = src.convert("RGB")
    if min(im.size) < side:
        scale = side / min(im.size)
        im = im.resize((max(side, round(im.width * scale)), max(side, round(im.height * scale))))
    left, top = (im.width - side) // 2, (im.height - side) // 2
    out = io.BytesIO()
    im.crop((left, top, left + side, top + side)).save(out, "JPEG", quality=quality, subsampling=0)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/train"))
    ap.add_argument("--out", type=Path, default=Path("."), help="folder of the gpu-data-K parts")
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--part-bytes", type=int, default=5_500_000)
    args = ap.parse_args()
    for old in args.out.glob("gpu-data-*"):
        shutil.rmtree(old)
    part, used, sizes = 1, 0, []
    for path in list_images(args.data):
        data = centre_crop_jpeg(path, args.side, args.quality)
        if used + len(data) > args.part_bytes and used:
            sizes.append(used)
            part, used = part + 1, 0
        folder = args.out / f"gpu-data-{part}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).write_bytes(data)  # the photo's own name: the same hash split
        used += len(data)
    sizes.append(used)
    for k, size in enumerate(sizes, 1):
        print(f"gpu-data-{k}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
