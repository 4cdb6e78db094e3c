"""Export a training checkpoint to a bundled safetensors weights file + manifest entry.

The weights format itself (reading, writing, the manifest) lives in :mod:`aecodec.weightsfile`;
this module holds what training adds: checkpoints, starting a run from weights, refitting.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aecodec.entropy import CODER_PRECISION, ContextScheme, EntropyTables
from aecodec.errors import ModelError
from aecodec.model.config import ModelConfig
from aecodec.model.vqvae import VQVAE
from aecodec.train.weights import add_to_manifest, write_weights
from aecodec.weightsfile import WEIGHTS_DIR, load_weights, read_manifest

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


def _weights_at(path: str | Path) -> Any:
    """The :class:`LoadedWeights` of a ``.safetensors`` file or of a bundled model's name
    (``aecodec-vq-base5``, also one stored as differences), or ``None`` for a checkpoint.

    Raises:
        FileNotFoundError: a ``.safetensors`` path that is not a file.
        ValueError: the weights cannot be loaded.
    """
    p = Path(path)
    if p.suffix != ".safetensors" and (p.exists() or str(path) not in read_manifest()["models"]):
        return None
    if p.suffix == ".safetensors" and not p.is_file():
        raise FileNotFoundError(f"no weights file at {p}")
    try:
        return load_weights(p if p.suffix == ".safetensors" else str(path))
    except ModelError as exc:
        raise ValueError(str(exc)) from None


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Network parameters from a safetensors weights file, a bundled model (by name) or a
    training checkpoint."""
    weights = _weights_at(path)
    if weights is not None:
        sd = {k: torch.from_numpy(v) for k, v in weights.tensors.items()}
        if "quantizer.logits" not in sd:
            # Weights format 2 keeps no logits: start training from the integer tables, as
            # logits or (``--count-tables``) as count rows.
            t = weights.tables
            rows = np.stack([t.rows(q) for q in range(t.shape[0])]).astype(np.float64)
            # A zero frequency codes at the coder's leak, 2**-CODER_PRECISION: its logit too.
            leak = 2.0 ** (t.prob_bits - CODER_PRECISION)
            sd["quantizer.logits"] = torch.from_numpy(np.log(np.maximum(rows, leak))).float()
            sd["quantizer.row_counts"] = torch.from_numpy(t.freqs).float()
            sd["quantizer.table_index"] = torch.from_numpy(t.table_index).long()
        return sd
    return load_checkpoint(path)["model"]


def _weights_checkpoint(path: str | Path) -> dict[str, Any]:
    """A ``.safetensors`` weights file as the checkpoint dict :func:`export` reads."""
    try:
        weights = load_weights(path)
    except ModelError as exc:
        raise ValueError(str(exc)) from None
    state = load_state_dict_file(path)
    # The export codes with integer tables; a net with learned logits carries their shape.
    state.pop("quantizer.row_counts", None)
    state.pop("quantizer.table_index", None)
    return {
        "model": state,
        "config": weights.config.to_json(),
        "from_weights": {"name": weights.name, "sha256": weights.sha256},
    }


def _tables(
    net: VQVAE,
    train_config: dict[str, Any],
    fit: FitOptions | None,
    tables_from: str | Path | None,
    summary: dict[str, Any],
) -> EntropyTables | None:
    """The tables :func:`export` writes (``None``: the run's own), noted in ``summary``."""
    if fit is not None and tables_from is not None:
        raise ValueError("give either fitted tables or tables from other weights, not both")
    if tables_from is not None:
        try:
            source = load_weights(tables_from)
        except ModelError as exc:
            raise ValueError(str(exc)) from None
        summary["tables"] = {"from": source.name, "sha256": source.sha256}
        if source.tables.shape == net.quantizer.table_shape:
            return source.tables
        # A grown model (more channels or qualities): the source's tables for its own
        # (quality, group) prefix, the run's for the rest.
        from aecodec.train.weights import learned_tables

        summary["tables"]["prefix"] = list(source.tables.shape[:2])
        return merge_prefix_tables(learned_tables(net), source.tables)
    if fit is None:
        return None
    from aecodec.train.tables import fit_tables, fitting_images

    images = fitting_images(
        fit.data or train_config.get("data", ""), train_config.get("num_val", 16)
    )
    images = images[: fit.max_images] if fit.max_images else images
    tables = fit_tables(net, images, fit.num_tables, fit.rounds, fit.progress)
    summary["tables"] = {
        "fitted_on_images": len(images),
        "rows": int(tables.freqs.shape[0]),
        "rounds": fit.rounds,
    }
    return tables


def _zero_rare(
    net: VQVAE,
    tables: EntropyTables | None,
    train_config: dict[str, Any],
    zero: ZeroOptions,
    summary: dict[str, Any],
) -> EntropyTables:
    """``tables`` (``None``: the run's own) with rare symbols at frequency 0, noted in
    ``summary``."""
    from aecodec.train.tables import (
        count_indices,
        fitting_images,
        shared_row_counts,
        zero_rare_symbols,
    )
    from aecodec.train.weights import learned_tables

    if tables is None:
        tables = learned_tables(net)
    folder = zero.data or train_config.get("data") or "../shared/train"
    images = fitting_images(folder, train_config.get("num_val", 16), max_side=zero.crop)
    images = images[: zero.max_images] if zero.max_images else images
    q = tables.shape[0]
    lengths = torch.from_numpy(np.stack([tables.code_lengths(i) for i in range(q)])).float()
    counts = count_indices(net, images, lengths, zero.progress)
    out = zero_rare_symbols(tables, shared_row_counts(tables, counts), zero.zero_below)
    summary.setdefault("tables", {})["zero_below"] = {
        "threshold": zero.zero_below,
        "counted_on_images": len(images),
        "crop": zero.crop,
        "zero_entries": round(float((out.freqs == 0).mean()), 4),
    }
    return out


def merge_prefix_tables(own: EntropyTables, prefix: EntropyTables) -> EntropyTables:
    """``own``'s tables with every (quality, group) that ``prefix`` covers (its first Q' and
    G') taken from ``prefix``: the tables of the model a grown one started from, so the old
    channels at the old qualities code exactly as they did (their contexts depend on earlier
    groups only). Rows no entry uses are dropped.

    Raises:
        ValueError: ``prefix`` does not fit (more qualities or groups, other contexts, other
            codebook size or codeword levels).
    """
    q0, g0, c0, k0 = prefix.shape
    q, g, c, k = own.shape
    if q0 > q or g0 > g or c0 != c or k0 != k or prefix.scheme != own.scheme:
        raise ValueError(f"tables of shape {prefix.shape} are not a prefix of {own.shape}")
    if not np.array_equal(prefix.level_lut, own.level_lut[:g0]):
        raise ValueError("the prefix tables' codeword levels differ from the model's")
    freqs = np.concatenate([prefix.freqs, own.freqs])
    index = own.table_index.astype(np.int64) + prefix.freqs.shape[0]
    index[:q0, :g0] = prefix.table_index
    used, index = np.unique(index, return_inverse=True)
    return EntropyTables(
        freqs[used], index.reshape(q, g, c), own.level_lut, own.prob_bits, own.scheme
    )


def init_config(path: str | Path) -> ModelConfig:
    """The model config of a safetensors weights file, a bundled model (by name) or a training
    checkpoint."""
    weights = _weights_at(path)
    if weights is not None:
        return weights.config
    return ModelConfig.from_json(load_checkpoint(path)["config"])


@dataclass(frozen=True)
class ZeroOptions:
    """How :func:`export` gives frequency 0 to the symbols each shared row is not expected to
    see (:func:`aecodec.train.tables.zero_rare_symbols`), counted on training images.

    Attributes:
        zero_below: probability threshold.
        max_images: count on at most this many images of the training split.
        crop: centre crop side of each image (a multiple of 16).
        data: image folder (default: the run's training data, else ``../shared/train``).
        progress: called with 1 per image.
    """

    zero_below: float = 1e-6
    max_images: int = 200
    crop: int = 256
    data: str = ""
    progress: Callable[[int], None] | None = None


def _config_and_state(
    ckpt: dict[str, Any],
    checkpoint: str | Path,
    name: str | None,
    contexts: ContextScheme | None,
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The exported model's config (renamed to ``name``, with the context scheme ``contexts``)
    and its state dict (a run trained with channel contexts only starts each new context from
    its channel context's logits)."""
    raw = json.loads(ModelConfig.from_json(ckpt["config"]).to_json())
    state = dict(ckpt["model"])
    if name:
        raw["name"] = name
    old = ModelConfig.from_json(json.dumps(raw)).context_scheme()
    if contexts is not None and contexts != old:
        from aecodec.train.tables import expand_logits

        if "quantizer.logits" not in state:
            raise ValueError(
                f"{checkpoint}: a run trained with count tables codes with its own contexts "
                f"({old}); export it without --spatial-contexts/--activity-edges"
            )

        state["quantizer.logits"] = expand_logits(state["quantizer.logits"], old, contexts)
        raw["spatial_contexts"] = contexts.spatial
        raw["activity_edges"] = list(contexts.activity_edges)
    return ModelConfig.from_json(json.dumps(raw)), state


def _as_differences(
    state: dict[str, torch.Tensor], base: str, weights_dir: Path, summary: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """``state`` with each float32 tensor that bundled model ``base`` also holds replaced by
    its 8-bit difference from it, rebuilt (:func:`aecodec.train.weights.quantize_from`)."""
    from aecodec.train.weights import quantize_from

    arrays = {k: v.detach().float().numpy().copy() for k, v in state.items()}
    changed = quantize_from(arrays, load_weights(base, weights_dir).tensors)
    summary["delta_from"] = {"model": base, "tensors": len(changed)}
    return {k: torch.from_numpy(arrays[k]) if k in changed else v for k, v in state.items()}


def _source(checkpoint: str | Path, name: str | None) -> dict[str, Any]:
    """What :func:`export` exports: a training checkpoint, or a weights file in checkpoint
    form (``"from_weights"``), which must get a new name.

    Raises:
        ValueError: a weights file re-exported under its own name.
    """
    if Path(checkpoint).suffix != ".safetensors":
        return load_checkpoint(checkpoint)
    ckpt = _weights_checkpoint(checkpoint)
    if (name or ckpt["from_weights"]["name"]) == ckpt["from_weights"]["name"]:
        raise ValueError(
            f"{checkpoint}: give the re-exported model a new --name (files written with "
            f"{ckpt['from_weights']['name']!r} must keep decoding with its weights)"
        )
    return ckpt


def export(
    checkpoint: str | Path,
    name: str | None = None,
    weights_dir: Path = WEIGHTS_DIR,
    default_quality: int | None = None,
    description: str = "",
    make_default: bool = True,
    training: dict[str, Any] | None = None,
    contexts: ContextScheme | None = None,
    fit: FitOptions | None = None,
    tables_from: str | Path | None = None,
    zero: ZeroOptions | None = None,
    delta_from: str | None = None,
) -> dict[str, Any]:
    """Write ``weights_dir/NAME.safetensors`` from a training checkpoint (or from another
    weights file, e.g. to re-make its tables), and its manifest entry.

    Args:
        contexts: code with this context scheme (default: the run's; its ``num_levels``
            must be the run's); a run trained with channel contexts only starts each new
            context from its channel context's logits.
        fit: refit the tables by counting on the run's training images
            (:func:`aecodec.train.tables.fit_tables`); by default they are quantized from the
            learned logits.
        tables_from: code with the integer tables of these weights (a bundled model name or a
            ``.safetensors`` path), e.g. those of the ``--init`` model of a decoder-only run,
            whose indices are the same.
        zero: then give the symbols each row is not expected to see frequency 0, counting
            on training images (:class:`ZeroOptions`).
        delta_from: a bundled model (with a file of its own) this one was fine-tuned from:
            the network's float32 tensors become 8-bit differences from its
            (:func:`aecodec.train.weights.quantize_from`, before any table is counted), and the
            model is stored as those differences, its new tables and the tensors it shares
            with that model (:func:`aecodec.train.weights.share_tensors`): about a quarter of
            the bytes of a file of its own.

    Returns:
        The manifest entry written.
    """
    ckpt = _source(checkpoint, name)
    if "from_weights" in ckpt and tables_from is None and fit is None:
        tables_from = checkpoint  # re-export: the file's own integer tables
    config, state = _config_and_state(ckpt, checkpoint, name, contexts)
    rows = state["quantizer.row_counts"].shape[0] if "quantizer.row_counts" in state else 0
    net = VQVAE(config, table_rows=rows)
    summary = {"step": ckpt.get("step"), **(training or {})}
    if delta_from is not None:
        state = _as_differences(state, delta_from, weights_dir, summary)
    net.load_state_dict(state)
    if "from_weights" in ckpt:
        summary["from_weights"] = ckpt["from_weights"]
    train_config = ckpt.get("train_config", {})
    tables = _tables(net, train_config, fit, tables_from, summary)
    if zero is not None:
        tables = _zero_rare(net, tables, train_config, zero, summary)
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
    add_to_manifest(weights_dir, config.name, entry, make_default)
    if delta_from is not None:
        from aecodec.train.weights import share_tensors

        entry = share_tensors(config.name, [delta_from], weights_dir, True, delta_from)
    return entry
