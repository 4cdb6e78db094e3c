"""Export a training checkpoint to a bundled safetensors weights file + manifest entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aecodec.entropy import EntropyTables, tables_from_logits
from aecodec.files import write_atomic
from aecodec.model.config import ModelConfig
from aecodec.model.registry import (
    MANIFEST_NAME,
    METADATA_KEY,
    WEIGHTS_DIR,
    WEIGHTS_FORMAT,
    WEIGHTS_FORMAT_VERSION,
    read_manifest,
    sha256_file,
)
from aecodec.model.vqvae import VQVAE

CHECKPOINT_KEYS: tuple[str, ...] = ("model", "config")
"""Keys every training checkpoint (``best.pt`` and ``checkpoint.pt``) holds."""

RESUME_KEYS: tuple[str, ...] = (
    *CHECKPOINT_KEYS,
    "optimizer",
    "step",
    "best",
    "train_config",
    "sampler",
    "torch_rng",
    "py_rng",
)
"""Keys of the resumable ``checkpoint.pt``."""


def load_checkpoint(
    path: str | Path, required: tuple[str, ...] = CHECKPOINT_KEYS
) -> dict[str, Any]:
    """Read a training checkpoint (``runs/.../best.pt`` or ``checkpoint.pt``, or a run folder).

    Loaded with ``torch.load(weights_only=True)``: tensors, containers and plain values only,
    never arbitrary pickled objects, so a crafted file cannot run code. Checkpoints written by
    :mod:`aecodec.train.loop` hold only such values (RNG states are tensors, tuples and dicts
    of ints).

    Args:
        path: a checkpoint file, or a run folder (its ``best.pt``, else ``checkpoint.pt``).
        required: keys the checkpoint must have.

    Returns:
        The checkpoint's dict; ``model`` is a dict of tensors and ``config`` a JSON string.

    Raises:
        FileNotFoundError: there is no checkpoint at ``path``.
        ValueError: the file is not a checkpoint aecodec can load safely, or lacks a key.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "best.pt" if (p / "best.pt").exists() else p / "checkpoint.pt"
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ValueError(
            f"{p}: not a training checkpoint aecodec can load safely (only tensors and plain "
            f"values are accepted, never pickled code): {reason}"
        ) from None
    if not isinstance(ck, dict):
        raise ValueError(f"{p}: not an aecodec training checkpoint (not a dict)")
    missing = [k for k in required if k not in ck]
    if missing:
        raise ValueError(
            f"{p}: not an aecodec training checkpoint: missing {', '.join(missing)} "
            f"(has {', '.join(map(str, ck)) or 'nothing'})"
        )
    model = ck.get("model")
    if "model" in required and (
        not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values())
    ):
        raise ValueError(f"{p}: 'model' is not a state dict of tensors")
    if "config" in required:
        try:
            ModelConfig.from_json(ck["config"])
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{p}: invalid model config: {exc}") from None
    return ck


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
        from safetensors.torch import load_file

        if not p.is_file():
            raise FileNotFoundError(f"no weights file at {p}")
        try:
            sd = load_file(str(p))
        except Exception as exc:  # SafetensorError, OSError on a bad header, ...
            raise ValueError(f"{p}: not a valid safetensors file: {exc}") from None
        return {k: v for k, v in sd.items() if not k.startswith("entropy.")}
    return load_checkpoint(p)["model"]


def write_weights(
    net: VQVAE, out: Path, default_quality: int, training: dict[str, Any] | None = None
) -> str:
    """Write ``net`` as an aecodec safetensors weights file (atomically); returns its sha256.

    The file holds the network parameters (float32), the integer entropy tables
    (``entropy.freqs [Q, G, C, K]``, ``entropy.level_lut [G, K]``) and, in its metadata, the
    model config (JSON), the default quality and a training summary.
    """
    from safetensors.torch import save

    config = net.config
    freqs = tables_from_logits(net.quantizer.logits.detach().numpy(), config.prob_bits)
    lut = net.quantizer.level_lut().numpy().astype(np.int32)
    EntropyTables(freqs=freqs, level_lut=lut, prob_bits=config.prob_bits)  # validates
    tensors = {k: v.detach().contiguous().float() for k, v in net.state_dict().items()}
    tensors["entropy.freqs"] = torch.from_numpy(freqs.astype(np.int32))
    tensors["entropy.level_lut"] = torch.from_numpy(lut)
    meta = {
        "format": WEIGHTS_FORMAT,
        "format_version": WEIGHTS_FORMAT_VERSION,
        "config": config.to_json(),
        "default_quality": str(default_quality),
        "training": json.dumps(training or {}, sort_keys=True),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    # One metadata key: safetensors keeps metadata in a hash map whose order is random, and
    # the file (and so its sha256) must be a pure function of the weights.
    blob = save(tensors, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    write_atomic(out, lambda fh: fh.write(blob), force=True)
    out.chmod(0o644)
    return sha256_file(out)


def export(
    checkpoint: str | Path,
    name: str | None = None,
    weights_dir: Path = WEIGHTS_DIR,
    default_quality: int | None = None,
    description: str = "",
    make_default: bool = True,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``weights_dir/NAME.safetensors`` from a training checkpoint, and its manifest entry.

    Returns:
        The manifest entry written.
    """
    ckpt = load_checkpoint(checkpoint)
    config = ModelConfig.from_json(ckpt["config"])
    if name:
        config = ModelConfig.from_json(json.dumps({**json.loads(config.to_json()), "name": name}))
    net = VQVAE(config)
    net.load_state_dict(ckpt["model"])
    dq = default_quality or max(1, (config.num_qualities + 1) // 2 + 1)
    summary = {"step": ckpt.get("step"), **(training or {})}
    out = weights_dir / f"{config.name}.safetensors"
    digest = write_weights(net, out, dq, summary)
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
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    write_atomic(weights_dir / MANIFEST_NAME, lambda fh: fh.write(text.encode()), force=True)
    return entry
