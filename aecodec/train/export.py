"""Export a training checkpoint to a bundled safetensors weights file + manifest entry."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aecodec.entropy import EntropyTables, tables_from_logits
from aecodec.model.config import ModelConfig
from aecodec.model.registry import (
    MANIFEST_NAME,
    METADATA_KEY,
    WEIGHTS_DIR,
    WEIGHTS_FORMAT,
    WEIGHTS_FORMAT_VERSION,
    load_weights,
    read_manifest,
    sha256_file,
)
from aecodec.model.vqvae import VQVAE


@dataclass(frozen=True)
class FitOptions:
    """How :func:`export` refits the entropy tables (:mod:`aecodec.train.tables`).

    Attributes:
        num_tables: T, shared frequency rows.
        rounds: count-and-cluster rounds.
        max_images: use at most this many training images (0: all of the training split).
        data: image folder (default: the run's training data).
        progress: called with 1 per image and round.
    """

    num_tables: int = 1024
    rounds: int = 2
    max_images: int = 0
    data: str = ""
    progress: Callable[[int], None] | None = None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read one of *our own* training checkpoints (``runs/.../checkpoint.pt`` or ``best.pt``).

    Training checkpoints hold optimizer and RNG state and therefore use torch's pickle format;
    they are never read on the compress/decompress path, which only reads safetensors.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "best.pt" if (p / "best.pt").exists() else p / "checkpoint.pt"
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}")
    return torch.load(p, map_location="cpu", weights_only=False)


def run_summary(run: str | Path) -> dict[str, Any]:
    """Steps, CPU-hours, lambdas and data of a run folder (for the manifest and model card)."""
    p = Path(run)
    if not p.is_dir():
        return {}
    last = p / "checkpoint.pt"
    out: dict[str, Any] = {}
    if last.exists():
        ck = load_checkpoint(last)
        out["last_step"] = ck.get("step")
        out["cpu_hours"] = round(float(ck.get("cpu_seconds", 0.0)) / 3600.0, 2)
        tc = ck.get("train_config", {})
        out.update({k: tc.get(k) for k in ("data", "batch", "crop", "lr", "seed")})
        out["lambdas"] = list(ModelConfig.from_json(ck["config"]).lambdas)
    return out


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Network parameters from a safetensors weights file or a training checkpoint."""
    p = Path(path)
    if p.suffix == ".safetensors":
        weights = load_weights(p)
        sd = {k: torch.from_numpy(v) for k, v in weights.tensors.items()}
        if "quantizer.logits" not in sd:
            # Weights format 2 keeps no logits: start training from the integer tables.
            t = weights.tables
            rows = np.stack([t.rows(q) for q in range(t.shape[0])]).astype(np.float64)
            sd["quantizer.logits"] = torch.from_numpy(np.log(rows)).float()
        return sd
    return load_checkpoint(p)["model"]


def write_weights(
    net: VQVAE,
    out: Path,
    default_quality: int,
    training: dict[str, Any] | None = None,
    tables: EntropyTables | None = None,
) -> str:
    """Write ``net`` as an aecodec safetensors weights file (atomically); returns its sha256.

    The file (weights format 2) holds the network parameters (float32, without the training
    logits), the integer entropy tables (``entropy.freqs uint16 [T, K]``,
    ``entropy.table_index uint16 [Q, G, C]``, ``entropy.level_lut uint8 [G, K]``) and, in its
    metadata, the model config (JSON), the default quality and a training summary.

    Args:
        tables: fitted tables (:func:`aecodec.train.tables.fit_tables`); by default one row
            per (quality, group, context) quantized from the learned logits.
    """
    from safetensors.numpy import save_file

    config = net.config
    lut = net.quantizer.level_lut().numpy()
    if tables is None:
        freqs = tables_from_logits(net.quantizer.logits.detach().numpy(), config.prob_bits)
        tables = EntropyTables.dense(freqs, lut, config.prob_bits)
        if config.spatial_contexts:
            tables = EntropyTables(
                tables.freqs, tables.table_index, lut, config.prob_bits, config.spatial_contexts
            )
    if tables.shape != tuple(net.quantizer.logits.shape) or (tables.level_lut != lut).any():
        raise ValueError("tables do not match the network (shape or codeword levels)")
    if tables.spatial_contexts != config.spatial_contexts:
        raise ValueError("tables and config disagree on spatial_contexts")
    tensors = {
        k: v.detach().contiguous().float().numpy()
        for k, v in net.state_dict().items()
        if k != "quantizer.logits"
    }
    tensors["entropy.freqs"] = tables.freqs.astype(np.uint16)
    tensors["entropy.table_index"] = tables.table_index.astype(np.uint16)
    tensors["entropy.level_lut"] = tables.level_lut.astype(np.uint8)
    meta = {
        "format": WEIGHTS_FORMAT,
        "format_version": WEIGHTS_FORMAT_VERSION,
        "config": config.to_json(),
        "default_quality": str(default_quality),
        "training": json.dumps(training or {}, sort_keys=True),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    # One metadata key: safetensors keeps metadata in a hash map whose order is random, and
    # the file (and so its sha256) must be a pure function of the weights.
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    tmp.chmod(0o644)
    os.replace(tmp, out)
    return sha256_file(out)


def export(
    checkpoint: str | Path,
    name: str | None = None,
    weights_dir: Path = WEIGHTS_DIR,
    default_quality: int | None = None,
    description: str = "",
    make_default: bool = True,
    training: dict[str, Any] | None = None,
    spatial_contexts: int | None = None,
    fit: FitOptions | None = None,
) -> dict[str, Any]:
    """Write ``weights_dir/NAME.safetensors`` from a training checkpoint, and its manifest entry.

    Args:
        spatial_contexts: code with this many checkerboard spatial contexts (default: the
            run's); a run trained with channel contexts only starts each new context from its
            channel context's logits.
        fit: refit the tables by counting on the run's training images
            (:func:`aecodec.train.tables.fit_tables`); by default they are quantized from the
            learned logits.

    Returns:
        The manifest entry written.
    """
    ckpt = load_checkpoint(checkpoint)
    raw = json.loads(ModelConfig.from_json(ckpt["config"]).to_json())
    state = dict(ckpt["model"])
    if name:
        raw["name"] = name
    if spatial_contexts is not None and spatial_contexts != raw.get("spatial_contexts", 0):
        from aecodec.train.tables import expand_logits

        if raw.get("spatial_contexts", 0):
            raise ValueError("the run already uses spatial contexts; export it with its own")
        raw["spatial_contexts"] = spatial_contexts
        state["quantizer.logits"] = expand_logits(
            state["quantizer.logits"], raw.get("num_contexts", 4), spatial_contexts
        )
    config = ModelConfig.from_json(json.dumps(raw))
    net = VQVAE(config)
    net.load_state_dict(state)
    tables = None
    summary = {"step": ckpt.get("step"), **(training or {})}
    if fit is not None:
        from aecodec.train.tables import fit_tables, fitting_images

        tc = ckpt.get("train_config", {})
        images = fitting_images(fit.data or tc.get("data", ""), tc.get("num_val", 16))
        images = images[: fit.max_images] if fit.max_images else images
        tables = fit_tables(net, images, fit.num_tables, fit.rounds, fit.progress)
        summary["tables"] = {
            "fitted_on_images": len(images),
            "rows": int(tables.freqs.shape[0]),
            "rounds": fit.rounds,
        }
    dq = default_quality or max(1, (config.num_qualities + 1) // 2 + 1)
    out = weights_dir / f"{config.name}.safetensors"
    digest = write_weights(net, out, dq, summary, tables)
    entry = {
        "file": out.name,
        "sha256": digest,
        "bytes": out.stat().st_size,
        "default_quality": dq,
        "description": description,
        "training": summary,
    }
    manifest = read_manifest(weights_dir)
    manifest.setdefault("models", {})[config.name] = entry
    if make_default or not manifest.get("default"):
        manifest["default"] = config.name
    mpath = weights_dir / MANIFEST_NAME
    tmp_m = mpath.with_suffix(".tmp")
    tmp_m.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_m, mpath)
    return entry
