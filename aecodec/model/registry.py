"""Bundled models: the weights manifest, sha256 verification and safe (pickle-free) loading.

``aecodec/weights/manifest.json``::

    {"default": "<name>",
     "models": {"<name>": {"file": "<name>.safetensors", "sha256": "<hex>", "bytes": N,
                           "default_quality": 5, "description": "..."}}}

A model is addressed by its name (written into every bitstream together with the first
8 bytes of its weights' sha256), or, for development, by a path to a ``.safetensors`` file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aecodec.entropy import EntropyTables
from aecodec.errors import ModelError
from aecodec.files import sha256_file
from aecodec.model.config import ModelConfig

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MANIFEST_NAME = "manifest.json"
WEIGHTS_FORMAT = "aecodec-weights"
# "1": dense int32 tables ``entropy.freqs [Q, G, C, K]`` and float32 training logits;
# "2": shared uint16 rows ``entropy.freqs [T, K]`` + ``entropy.table_index [Q, G, C]``, no logits.
WEIGHTS_FORMAT_VERSION = "2"
READABLE_FORMAT_VERSIONS = ("1", "2")
METADATA_KEY = "aecodec"


@dataclass(frozen=True)
class LoadedWeights:
    """A verified weights file.

    Attributes:
        name: model name (as written into bitstreams).
        config: the model's hyper-parameters.
        tensors: name -> numpy array (network parameters and the integer tables).
        tables: the integer entropy tables.
        sha256: hex digest of the file.
        default_quality: the quality used when the caller gives none.
    """

    name: str
    config: ModelConfig
    tensors: dict[str, np.ndarray]
    tables: EntropyTables
    sha256: str
    default_quality: int


def read_manifest(weights_dir: Path = WEIGHTS_DIR) -> dict[str, Any]:
    """The parsed manifest (an empty one if the folder has none)."""
    path = weights_dir / MANIFEST_NAME
    if not path.exists():
        return {"default": None, "models": {}}
    return json.loads(path.read_text())


def default_model_name(weights_dir: Path = WEIGHTS_DIR) -> str:
    """Name of the default bundled model.

    Raises:
        ModelError: no model is bundled.
    """
    name = read_manifest(weights_dir).get("default")
    if not name:
        raise ModelError(f"no bundled model in {weights_dir}: export one with `aecodec export RUN`")
    return str(name)


def read_config(model: str | None = None, weights_dir: Path = WEIGHTS_DIR) -> ModelConfig:
    """A bundled model's config, read from the weights' metadata only (cheap: no tensors).

    Raises:
        ModelError: unknown model or unreadable weights file.
    """
    from safetensors import safe_open

    manifest = read_manifest(weights_dir)
    name = model or default_model_name(weights_dir)
    if name not in manifest.get("models", {}):
        known = ", ".join(sorted(manifest.get("models", {}))) or "none"
        raise ModelError(f"unknown model {name!r} (bundled models: {known})")
    path = weights_dir / manifest["models"][name]["file"]
    try:
        with safe_open(str(path), framework="numpy") as fh:
            return ModelConfig.from_json(_metadata(fh)["config"])
    except Exception as exc:
        raise ModelError(f"cannot read the config of model {name!r} from {path}: {exc}") from exc


def load_weights(model: str | Path | None = None, weights_dir: Path = WEIGHTS_DIR) -> LoadedWeights:
    """Find, verify and read a model's weights (safetensors only: no pickle).

    Args:
        model: a bundled model name, a path to a ``.safetensors`` file, or ``None`` for the
            default bundled model.

    Raises:
        ModelError: unknown model, missing file, or a file whose sha256 differs from the
            manifest's (the message names the model and says how to fix it).
    """
    from safetensors import safe_open

    manifest = read_manifest(weights_dir)
    entry: dict[str, Any] = {}
    if model is None:
        model = default_model_name(weights_dir)
    path = Path(model)
    if str(model) in manifest.get("models", {}):
        entry = manifest["models"][str(model)]
        path = weights_dir / entry["file"]
        if not path.exists():
            raise ModelError(f"model {model!r}: weights file {path} is missing; reinstall aecodec")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise ModelError(
                f"model {model!r}: {path} fails its sha256 check "
                f"(expected {entry['sha256'][:16]}..., "
                f"got {digest[:16]}...): the file is corrupt or was replaced; reinstall aecodec"
            )
    elif path.suffix == ".safetensors" and path.is_file():
        digest = sha256_file(path)
    else:
        known = ", ".join(sorted(manifest.get("models", {}))) or "none"
        raise ModelError(f"unknown model {str(model)!r} (bundled models: {known})")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = _metadata(fh)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"cannot read weights {path}: {exc}") from exc
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ModelError(f"{path} is not an aecodec weights file (metadata format missing)")
    if meta.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise ModelError(
            f"{path}: weights format version {meta.get('format_version')} is not supported; "
            "upgrade aecodec"
        )
    config = ModelConfig.from_json(meta["config"])
    try:
        tables = tables_from_tensors(tensors, config)
    except (KeyError, ValueError) as exc:
        raise ModelError(f"{path}: bad entropy tables: {exc}") from exc
    default_quality = int(entry.get("default_quality", meta.get("default_quality", 1)))
    return LoadedWeights(config.name, config, tensors, tables, digest, default_quality)


def tables_from_tensors(tensors: dict[str, np.ndarray], config: ModelConfig) -> EntropyTables:
    """Pop the ``entropy.*`` arrays of a weights file out of ``tensors`` as tables (either
    weights format version)."""
    freqs = tensors.pop("entropy.freqs").astype(np.int64)
    lut = tensors.pop("entropy.level_lut").astype(np.int64)
    if "entropy.table_index" not in tensors:
        return EntropyTables.dense(freqs, lut, config.prob_bits)
    index = tensors.pop("entropy.table_index").astype(np.int64)
    return EntropyTables(freqs, index, lut, config.prob_bits, config.context_scheme())


def _metadata(fh: Any) -> dict[str, str]:
    """The aecodec metadata of an open safetensors file (``{}`` if it has none)."""
    raw = (fh.metadata() or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}
