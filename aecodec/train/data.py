"""Training data: images held in memory as uint8, random flipped crops, fixed validation crops."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from aecodec.container import TILE_ALIGN

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm"}


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly below ``folder``, sorted by name.

    Raises:
        FileNotFoundError: the folder does not exist or holds no images.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"training folder {root} does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}")
    return files


def split_files(files: list[Path], num_val: int) -> tuple[list[Path], list[Path]]:
    """Deterministic train/validation split by a hash of each file name (not its order).

    At most a quarter of the files go to validation.
    """
    ranked = sorted(files, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
    num_val = min(num_val, len(files) // 4)
    val = sorted(ranked[:num_val])
    train = sorted(ranked[num_val:])
    return train, val


def load_rgb(path: Path, min_side: int) -> np.ndarray:
    """``uint8 [H, W, 3]``, upscaled (bicubic) if its shorter side is under ``min_side``."""
    with Image.open(path) as src:
        im = src.convert("RGB")
        if min(im.size) < min_side:
            s = min_side / min(im.size)
            im = im.resize(
                (max(min_side, round(im.width * s)), max(min_side, round(im.height * s)))
            )
        return np.asarray(im, dtype=np.uint8).copy()


class CropSampler:
    """Random crops with horizontal/vertical flips from images held in memory.

    Args:
        files: image paths (each rank of a distributed run passes its own shard).
        crop: crop side in pixels (a multiple of 16).
        seed: RNG seed; the sampler's state is saved in checkpoints via :meth:`state`.
    """

    def __init__(self, files: list[Path], crop: int, seed: int) -> None:
        if crop % TILE_ALIGN:
            raise ValueError(f"crop size must be a multiple of {TILE_ALIGN}, got {crop}")
        self.crop = crop
        self.images = [load_rgb(p, crop) for p in files]
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> torch.Tensor:
        """``float [size, 3, crop, crop]`` in [0, 1]."""
        c = self.crop
        out = np.empty((size, c, c, 3), dtype=np.uint8)
        for i in range(size):
            img = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(img.shape[0] - c + 1)
            x = self.rng.integers(img.shape[1] - c + 1)
            patch = img[y : y + c, x : x + c]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            if self.rng.random() < 0.5:
                patch = patch[::-1]
            out[i] = patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)

    def qualities(self, size: int, num_qualities: int) -> torch.Tensor:
        """``long [size]`` quality indices drawn uniformly (from the same saved RNG)."""
        return torch.from_numpy(self.rng.integers(0, num_qualities, size)).long()

    def state(self) -> dict[str, Any]:
        """The RNG state, for exact resume."""
        return dict(self.rng.bit_generator.state)

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.rng.bit_generator.state = state


def validation_crops(files: list[Path], crop: int) -> torch.Tensor:
    """Fixed validation set: the centre crop of each file, ``float [N, 3, crop, crop]``."""
    out = []
    for p in files:
        img = load_rgb(p, crop)
        y0 = (img.shape[0] - crop) // 2
        x0 = (img.shape[1] - crop) // 2
        out.append(img[y0 : y0 + crop, x0 : x0 + crop])
    arr = np.stack(out)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
