"""``.aec`` files as a torch dataset (aecodec.dataset): items are the decoded images, a
DataLoader's forked workers decode after the parent did, torchvision's ImageFolder reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT
from PIL import Image

import aecodec
from aecodec.dataset import AecDataset, is_aec_file, load

PHOTO = ROOT / "aecodec" / "data" / "kodim23-384x256.png"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aec")
    photo = Image.open(PHOTO).convert("RGB")
    for i, (cls, box) in enumerate(
        [("a", (0, 0, 64, 48)), ("a", (64, 0, 128, 32)), ("b", (0, 64, 48, 112))]
    ):
        (root / cls).mkdir(exist_ok=True)
        (root / cls / f"{i}.aec").write_bytes(aecodec.compress(photo.crop(box), quality=2))
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def test_items_are_the_decoded_images(folder: Path) -> None:
    data = AecDataset(folder)
    assert len(data) == 3 and [p.name for p in data.files] == ["0.aec", "1.aec", "2.aec"]
    for path, item in zip(data.files, (data[i] for i in range(len(data))), strict=True):
        want = np.asarray(aecodec.decompress(path).convert("RGB"), dtype=np.float32) / 255
        assert item.dtype == torch.float32 and item.shape == (3, *want.shape[:2])
        assert torch.equal(item, torch.from_numpy(want.transpose(2, 0, 1).copy()))
    sizes = AecDataset([folder / "a" / "1.aec"], transform=lambda im: im.size)
    assert sizes[0] == (64, 32)
    empty = folder.parent / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(FileNotFoundError, match=r"no \.aec files"):
        AecDataset(empty)


def test_forked_dataloader_workers_decode_after_the_parent(folder: Path) -> None:
    """The parent decodes first (its codec holds an ONNX Runtime session); forked workers
    make their own and give the same tensors."""
    data = AecDataset(folder)
    first = [data[i] for i in range(len(data))]
    ctx = torch.multiprocessing.get_context("fork")
    loader = torch.utils.data.DataLoader(
        data, batch_size=None, num_workers=2, multiprocessing_context=ctx, timeout=120
    )
    for want, got in zip(first, loader, strict=True):
        assert torch.equal(want, got)


def test_torchvision_image_folder_reads_aec_files(folder: Path) -> None:
    datasets = pytest.importorskip("torchvision.datasets")
    assert is_aec_file(folder / "a" / "0.aec") and not is_aec_file(folder / "b" / "notes.txt")
    images = datasets.ImageFolder(str(folder), loader=load, is_valid_file=is_aec_file)
    assert images.classes == ["a", "b"] and [t for _, t in images.samples] == [0, 0, 1]
    image, target = images[2]
    assert image.size == (48, 48) and target == 1
