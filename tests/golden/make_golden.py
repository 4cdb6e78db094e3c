"""Regenerate the golden files (run only when the bitstream format changes on purpose).

    .venv/bin/python tests/golden/make_golden.py

Writes ``tiny.safetensors`` (a small random-initialised model used only by tests), a few
``.aec`` files made with it (each level, and a fine quality between them: format version 2),
and ``expected.json`` with the decoded indices' sha256 and the
decoded pixels (as PNG) that ``tests/test_golden.py`` must keep reproducing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
TINY: dict[str, Any] = dict(
    name="aecodec-test-tiny",
    channels=8,
    latent_channels=8,
    # The shipped path in miniature: 1-D codebooks (the window search and the numpy encoder),
    # checkerboard and activity contexts, the linear block path and the post-filter.
    group_dim=1,
    codebook_size=16,
    num_levels=2,
    spatial_contexts=2,
    activity_edges=(1, 3),
    linear_path=True,
    refine_channels=4,
    lambdas=(0.01, 0.05),
)
FINE_QUALITIES = (1.37,)
"""Qualities between the tiny model's levels that get golden files too (format version 2)."""


def tiny_model_file(out: Path, seed: int = 0) -> Path:
    """Write a deterministic random-initialised tiny model to ``out`` (tests use it too)."""
    from aecodec.model.config import ModelConfig
    from aecodec.model.vqvae import VQVAE
    from aecodec.train.weights import write_weights

    torch.manual_seed(seed)
    net = VQVAE(ModelConfig(**TINY))
    with torch.no_grad():
        # Spread the latent over several codewords so the golden files use many indices.
        net.log_gain.fill_(3.5)
        net.log_inv_gain.fill_(-3.5)
        net.quantizer.logits.add_(torch.randn_like(net.quantizer.logits))
    write_weights(net, out, default_quality=1, training={"note": "random init, tests only"})
    return out


def sample_images() -> dict[str, np.ndarray]:
    """Small synthetic images (smooth gradients plus noise) in each mode."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:37, 0:53]
    rgb = np.stack([xx * 4, yy * 6, (xx + yy) * 3], -1) + rng.integers(0, 40, (37, 53, 3))
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    alpha = (np.arange(53)[None, :] * 5 % 256 * np.ones((37, 1))).astype(np.uint8)
    return {
        "rgb_53x37": rgb,
        "l_53x37": rgb[:, :, 1],
        "rgba_53x37": np.dstack([rgb, alpha]),
    }


def main() -> None:
    from aecodec.codec import Codec

    model = tiny_model_file(HERE / "tiny.safetensors")
    codec = Codec(str(model), tile_size=32)
    expected = write_golden(codec, (*codec.qualities, *FINE_QUALITIES))
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


def write_golden(codec: Any, qualities: tuple[float, ...]) -> dict[str, Any]:
    """Write ``NAME_qQUALITY.aec`` and its decoding ``.png`` for every sample image and quality;
    returns their entries of ``expected.json``."""
    expected = {}
    for name, arr in sample_images().items():
        for quality in qualities:
            stem = f"{name}_q{quality}"
            data = codec.compress(arr, quality=quality)
            (HERE / f"{stem}.aec").write_bytes(data)
            image = codec.decompress(data)
            image.save(HERE / f"{stem}.png")
            tiles = tile_index_hashes(codec, data)
            expected[stem] = {
                "sha256_file": hashlib.sha256(data).hexdigest(),
                "tile_indices_sha256": tiles,
                "mode": image.mode,
                "size": list(image.size),
            }
    return expected


def tile_index_hashes(codec: Any, data: bytes) -> list[str]:
    """sha256 of each tile's decoded indices (int64 little-endian), in raster order."""
    from aecodec import container, imageio
    from aecodec.entropy import decode_indices

    bs = container.unpack(data)
    h = bs.header
    out = []
    for (_, _, w, th), payload in zip(
        imageio.tiles(h.width, h.height, h.tile_width, h.tile_height), bs.tiles, strict=True
    ):
        tables, q = codec.tables_at(h.quality)
        idx = decode_indices(payload, tables, q, -(-th // 16), -(-w // 16))
        out.append(hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest())
    return out


if __name__ == "__main__":
    main()
