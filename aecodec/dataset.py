"""``.aec`` files as a torch dataset, for training pipelines that keep their data compressed.

::

    from aecodec.dataset import AecDataset
    data = AecDataset("photos/")                      # every .aec below photos/, sorted
    x = data[0]                                        # float32 [3, H, W] in [0, 1]
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2)

    # or torchvision's folder-per-class layout:
    ImageFolder("train/", loader=aecodec.dataset.load, is_valid_file=aecodec.dataset.is_aec_file)

Each item is decoded when it is read, with the model its file names (one codec per model and
process, loaded on first use). Workers may be forked or spawned: a codec made before a fork
makes its ONNX Runtime session again in the child.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import aecodec
from aecodec.container import MAGIC

AEC_SUFFIX = ".aec"


def is_aec_file(path: str | os.PathLike[str]) -> bool:
    """True for a regular file whose first bytes are the ``.aec`` magic (whatever its name);
    torchvision's ``is_valid_file``."""
    try:
        with open(path, "rb") as fh:
            return os.path.isfile(path) and fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def load(path: str | os.PathLike[str]) -> Image.Image:
    """Decode an ``.aec`` file to an RGB ``PIL.Image`` (torchvision's ``loader``; the image's
    alpha, if any, is dropped as torchvision's default loader drops it)."""
    return aecodec.decompress(Path(path)).convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """``PIL.Image`` (RGB) -> ``float32 [3, H, W]`` in ``[0, 1]``."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255.0)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


class AecDataset(torch.utils.data.Dataset[Any]):
    """The ``.aec`` files of a folder (below it, sorted) or of a list, decoded on access.

    Args:
        source: a folder (searched recursively for files ending in ``.aec``) or a sequence
            of file paths.
        transform: applied to the decoded RGB ``PIL.Image`` (torchvision style); without one
            an item is ``float32 [3, H, W]`` in ``[0, 1]``.

    Raises:
        FileNotFoundError: the folder does not exist or holds no ``.aec`` file.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        if isinstance(source, (str, os.PathLike)):
            root = Path(source)
            if not root.is_dir():
                raise FileNotFoundError(f"{root}: no such folder")
            self.files = sorted(p for p in root.rglob(f"*{AEC_SUFFIX}") if p.is_file())
            if not self.files:
                raise FileNotFoundError(f"{root}: no {AEC_SUFFIX} files in it or below it")
        else:
            self.files = [Path(p) for p in source]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        image = load(self.files[index])
        return self.transform(image) if self.transform is not None else to_tensor(image)
