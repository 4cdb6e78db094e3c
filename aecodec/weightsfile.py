"""Weights files: their format and reading them (verified by sha256), the bundled models'
manifest, and the one constructor from a weights file to a ready-to-code model. Writing
them (export, manifest entries, shared tensors, migrations) is authoring:
:mod:`aecodec.train.weights`.

Named ``weightsfile`` (not ``weights``) because ``aecodec/weights/`` is the folder of bundled
files this module reads; it is to weights files what :mod:`aecodec.container` is to ``.aec``
files.

A weights file is a safetensors file (never pickle) with one metadata key, ``aecodec``, whose
JSON value holds ``format``, ``format_version``, the model ``config`` (JSON),
``default_quality`` and a ``training`` summary. Its tensors are the network parameters
(float32) and the integer entropy tables:

* format 2: shared rows ``entropy.freqs uint16 [T, K]``, the row of each (quality, group,
  context) ``entropy.table_index uint16 [Q, G, C]`` and the codeword levels
  ``entropy.level_lut uint8 [G, K]``; no training logits. (Format 1, dense int32 tables and
  the training logits, is no longer read: every bundled model was re-written in format 2 on
  2026-11-25, keeping its bitstreams' hash as the manifest's ``stream_hash``.)

``aecodec/weights/manifest.json``::

    {"default": "<name>",
     "models": {"<name>": {"file": "<name>.safetensors", "sha256": "<hex>", "bytes": N,
                           "default_quality": 5, "description": "...",
                           "stream_hash": "<16 hex, optional>"}}}

A bundled model whose tensors all exist in other bundled files may be stored without a file
of its own: ``"assembled": {"metadata": "<its aecodec metadata>", "tensors": {"<source>":
["<key>", ...]}}`` in place of ``"file"`` (:func:`aecodec.train.weights.share_tensors`); it is
rebuilt in memory, byte for byte, and checked against its ``sha256`` like a file. Tensors no
other file holds (new tables) may sit in a file of their own: ``"part": {"file":
"<name>.part.safetensors", "keys": [...]}``, integer ones there zlib-compressed
(``"zlib": {KEY: {"dtype", "shape"}}``, :data:`ZLIB_SUFFIX`). A fine-tuned model may store
its float32 tensors as 8-bit differences from a bundled model's: ``"delta": {"base":
"<source>", "keys": [...]}``; for each key the part file holds ``KEY.delta int8`` and
``KEY.delta_scale float32`` (powers of two, one per row of axis 0, shaped to broadcast) and the
tensor is rebuilt as ``base[KEY] + float32(KEY.delta) * KEY.delta_scale`` in float32
(:func:`apply_delta`: exact products, one IEEE rounding per entry, so the same bytes on every
machine; the rebuilt file is sha256-checked as any other).

A model is addressed by its name (written into every bitstream together with the first
8 bytes of its weights' sha256, or ``stream_hash`` for weights re-written by
the migration to weights format 2),
or, for development, by a path to a ``.safetensors`` file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aecodec.entropy import EntropyTables
from aecodec.errors import ModelError
from aecodec.files import sha256_file
from aecodec.model.config import ModelConfig

if TYPE_CHECKING:
    from aecodec.model.vqvae import VQVAE

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST_NAME = "manifest.json"
WEIGHTS_FORMAT = "aecodec-weights"
# "2": shared uint16 rows ``entropy.freqs [T, K]`` + ``entropy.table_index [Q, G, C]``, no logits
# ("1", dense tables and training logits, is no longer read).
WEIGHTS_FORMAT_VERSION = "2"
READABLE_FORMAT_VERSIONS = ("2",)
METADATA_KEY = "aecodec"

TRAINING_TABLES: tuple[str, ...] = (
    "quantizer.logits",
    "quantizer.row_counts",
    "quantizer.table_index",
)
"""State-dict keys of the training-time tables (logits or count tables); weights files hold
integer tables instead."""


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
        stream_hash: the 8 bytes that bitstreams of these weights carry: the first 8 bytes of
            ``sha256``, or of the file the weights were first bundled as when
            they were re-written in weights format 2 (the manifest's ``stream_hash``).
    """

    name: str
    config: ModelConfig
    tensors: dict[str, np.ndarray]
    tables: EntropyTables
    sha256: str
    default_quality: int
    stream_hash: bytes = b""

    def __post_init__(self) -> None:
        if not self.stream_hash:
            object.__setattr__(self, "stream_hash", bytes.fromhex(self.sha256[:16]))


# ---------------------------------------------------------------------------- manifest
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


def _unknown_model(model: str, manifest: dict[str, Any]) -> ModelError:
    known = ", ".join(sorted(manifest.get("models", {}))) or "none"
    return ModelError(f"unknown model {model!r} (bundled models: {known})")


# ---------------------------------------------------------------------------- read
def read_config(model: str | None = None, weights_dir: Path = WEIGHTS_DIR) -> ModelConfig:
    """A bundled model's config, read from the weights' metadata only (cheap: no tensors).

    Raises:
        ModelError: unknown model or unreadable weights file.
    """
    from safetensors import safe_open

    manifest = read_manifest(weights_dir)
    name = model or default_model_name(weights_dir)
    if name not in manifest.get("models", {}):
        raise _unknown_model(name, manifest)
    entry = manifest["models"][name]
    if "assembled" in entry:
        try:
            return ModelConfig.from_json(json.loads(entry["assembled"]["metadata"])["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model {name!r}: bad manifest entry: {exc}") from exc
    path = weights_dir / entry["file"]
    try:
        with safe_open(str(path), framework="numpy") as fh:
            return ModelConfig.from_json(_metadata(fh)["config"])
    except Exception as exc:
        raise ModelError(f"cannot read the config of model {name!r} from {path}: {exc}") from exc


def _locate(
    model: str | Path, manifest: dict[str, Any], weights_dir: Path
) -> tuple[Path, str, dict[str, Any]]:
    """``(path, sha256, manifest entry)`` of a bundled model (its sha256 checked against the
    manifest's) or of a ``.safetensors`` path (entry ``{}``)."""
    if str(model) in manifest.get("models", {}):
        entry = manifest["models"][str(model)]
        if "file" not in entry:
            raise ModelError(f"model {model!r} has no weights file of its own (assembled)")
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
        return path, digest, entry
    path = Path(model)
    if path.suffix == ".safetensors" and path.is_file():
        return path, sha256_file(path), {}
    raise _unknown_model(str(model), manifest)


def _read_file(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """``(aecodec metadata, tensors)`` of a weights file, its format version checked."""
    from safetensors import safe_open

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
    return meta, tensors


def load_weights(model: str | Path | None = None, weights_dir: Path = WEIGHTS_DIR) -> LoadedWeights:
    """Find, verify and read a model's weights (safetensors only: no pickle).

    Args:
        model: a bundled model name, a path to a ``.safetensors`` file, or ``None`` for the
            default bundled model.

    Raises:
        ModelError: unknown model, missing file, or a file whose sha256 differs from the
            manifest's (the message names the model and says how to fix it).
    """
    manifest = read_manifest(weights_dir)
    if model is None:
        model = default_model_name(weights_dir)
    entry = manifest.get("models", {}).get(str(model), {})
    if "assembled" in entry:
        meta, tensors, digest = _assemble(str(model), entry, manifest, weights_dir)
    else:
        path, digest, entry = _locate(model, manifest, weights_dir)
        meta, tensors = _read_file(path)
    config = ModelConfig.from_json(meta["config"])
    try:
        tables = tables_from_tensors(tensors, config)
    except (KeyError, ValueError) as exc:
        raise ModelError(f"model {model!s}: bad entropy tables: {exc}") from exc
    default_quality = int(entry.get("default_quality", meta.get("default_quality", 1)))
    stream = bytes.fromhex(entry.get("stream_hash", digest[:16]))
    return LoadedWeights(config.name, config, tensors, tables, digest, default_quality, stream)


def _assemble(
    name: str, entry: dict[str, Any], manifest: dict[str, Any], weights_dir: Path
) -> tuple[dict[str, str], dict[str, np.ndarray], str]:
    """``(aecodec metadata, tensors, sha256)`` of a bundled model stored as tensors of other
    bundled files (manifest ``"assembled": {"metadata": ..., "tensors": {source: [keys]}}``,
    written by :func:`aecodec.train.weights.share_tensors`). The file is rebuilt byte for byte
    in memory and must hash to the entry's sha256, so an assembled model is verified as a file
    on disk is."""
    from safetensors.numpy import save

    spec = entry["assembled"]
    tensors: dict[str, np.ndarray] = {}
    parts: list[tuple[str, Path, list[str]]] = []
    for source, keys in spec["tensors"].items():
        if "file" not in manifest["models"].get(source, {}):
            raise ModelError(f"model {name!r}: its source {source!r} is not a bundled file")
        parts.append((source, _locate(source, manifest, weights_dir)[0], keys))
    if "part" in spec:  # the tensors no other model has, in a file of their own
        part = weights_dir / Path(spec["part"]["file"]).name
        if not part.is_file():
            raise ModelError(f"model {name!r}: {part} is missing; reinstall aecodec")
        parts.append((part.name, part, spec["part"]["keys"]))
    read = {}
    for source, path, keys in parts:
        read[source] = own = _read_file(path)[1]
        missing = [k for k in keys if k not in own]
        if missing:
            raise ModelError(f"model {name!r}: {source!r} lacks {missing[:3]}; reinstall aecodec")
        tensors.update({k: own[k] for k in keys})
    if "part" in spec and "zlib" in spec["part"]:
        tensors.update(_inflate(name, spec["part"]["zlib"], read[part.name]))
    if "delta" in spec:
        tensors.update(_rebuild_deltas(name, spec, manifest, weights_dir, read))
    blob = save(tensors, metadata={METADATA_KEY: spec["metadata"]})
    digest = hashlib.sha256(blob).hexdigest()
    if digest != entry["sha256"]:
        raise ModelError(
            f"model {name!r}: the weights assembled from {', '.join(spec['tensors'])} fail their "
            f"sha256 check (expected {entry['sha256'][:16]}..., got {digest[:16]}...); "
            "reinstall aecodec"
        )
    meta = json.loads(spec["metadata"])
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ModelError(f"model {name!r}: assembled metadata is not aecodec's")
    return meta, tensors, digest


def apply_delta(base: np.ndarray, delta: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``base + float32(delta) * scale`` in float32: a tensor stored as an 8-bit difference
    (manifest ``"delta"``). ``scale`` holds powers of two, so each product is exact and each
    entry is rounded once: the same bytes on every IEEE machine (and in ONNX Runtime)."""
    if base.dtype != np.float32 or scale.dtype != np.float32:
        raise ValueError("a delta applies to float32 tensors with float32 scales")
    return base + delta.astype(np.float32) * scale


DELTA_SUFFIX = ".delta"
DELTA_SCALE_SUFFIX = ".delta_scale"
"""Part-file keys of a tensor stored as a difference (manifest ``"delta"``)."""


ZLIB_SUFFIX = ".zlib"
"""Part-file key of an integer tensor stored zlib-compressed (manifest ``"part": {"zlib":
{KEY: {"dtype": "<numpy dtype>", "shape": [...]}}}``): frequency rows with many zeros and
smooth counts shrink about 14x."""


def _inflate(
    name: str, specs: dict[str, dict[str, Any]], part: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The integer tensors of a part file stored zlib-compressed (``KEY.zlib uint8``), each
    decompressed to exactly its recorded dtype and shape (no more bytes are inflated)."""
    import zlib

    out = {}
    for key, spec in specs.items():
        try:
            dtype = np.dtype(spec["dtype"])
            if dtype.kind not in "iu":
                raise ValueError(f"dtype {dtype} is not an integer type")
            shape = tuple(int(n) for n in spec["shape"])
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            inflater = zlib.decompressobj()
            raw = inflater.decompress(part[key + ZLIB_SUFFIX].tobytes(), size)
            if len(raw) != size or not inflater.eof:
                raise ValueError(f"{len(raw)} bytes inflated, {size} expected")
            out[key] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise ModelError(
                f"model {name!r}: compressed tensor {key} is unreadable ({exc}); reinstall aecodec"
            ) from None
    return out


def _rebuild_deltas(
    name: str,
    spec: dict[str, Any],
    manifest: dict[str, Any],
    weights_dir: Path,
    read: dict[str, dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """The tensors of an assembled model stored as differences from ``spec["delta"]["base"]``
    (their ``.delta`` / ``.delta_scale`` arrays are in the part file, already in ``read``)."""
    delta = spec["delta"]
    base_name = delta["base"]
    if "file" not in manifest["models"].get(base_name, {}) or "part" not in spec:
        raise ModelError(f"model {name!r}: bad delta entry (base {base_name!r}, no part file)")
    base = read.get(base_name)
    if base is None:
        base = _read_file(_locate(base_name, manifest, weights_dir)[0])[1]
    part = read[Path(spec["part"]["file"]).name]
    out = {}
    for key in delta["keys"]:
        try:
            out[key] = apply_delta(
                base[key], part[key + DELTA_SUFFIX], part[key + DELTA_SCALE_SUFFIX]
            )
        except (KeyError, ValueError) as exc:
            raise ModelError(
                f"model {name!r}: the difference of {key} cannot be applied ({exc}); "
                "reinstall aecodec"
            ) from None
    return out


def tables_from_tensors(tensors: dict[str, np.ndarray], config: ModelConfig) -> EntropyTables:
    """Pop the ``entropy.*`` arrays of a weights file out of ``tensors`` as tables."""
    freqs = tensors.pop("entropy.freqs").astype(np.int64)
    lut = tensors.pop("entropy.level_lut").astype(np.int64)
    index = tensors.pop("entropy.table_index").astype(np.int64)
    return EntropyTables(freqs, index, lut, config.prob_bits, config.context_scheme())


def _metadata(fh: Any) -> dict[str, str]:
    """The aecodec metadata of an open safetensors file (``{}`` if it has none)."""
    raw = (fh.metadata() or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


# ---------------------------------------------------------------------------- model
def load_model(
    model: str | Path | None = None, weights_dir: Path = WEIGHTS_DIR
) -> tuple[VQVAE, LoadedWeights]:
    """A model ready to code: its network in eval mode and its verified weights file.

    The network is built without training tables (it codes with ``weights.tables``), with the
    thread-count-independent synthesis transform
    (:func:`~aecodec.model.layers.polyphase_synthesis`), and with gradients off.

    Args:
        model: as for :func:`load_weights`.

    Returns:
        ``(net, weights)``; ``weights.tensors`` are the arrays ``net`` was loaded from (drop
        them once loaded: ``net`` holds copies).

    Raises:
        ModelError: as :func:`load_weights`, or the file's tensors do not match its config.
    """
    weights = load_weights(model, weights_dir)
    return network(weights), weights


def network(weights: LoadedWeights) -> VQVAE:
    """The coding network of verified weights (see :func:`load_model`); imports torch.

    Raises:
        ModelError: the tensors do not match the weights' config.
    """
    import torch

    from aecodec.model.layers import polyphase_synthesis
    from aecodec.model.vqvae import VQVAE

    net = VQVAE(weights.config, learn_tables=False)  # codes with the integer tables
    state = {k: torch.from_numpy(v) for k, v in weights.tensors.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or set(missing) - set(TRAINING_TABLES):  # it codes with the integer tables
        raise ModelError(
            f"weights of {weights.name!r} do not match its config "
            f"(missing {missing}, unexpected {unexpected})"
        )
    # Same function, thread-count-independent arithmetic (see PolyphaseDeconv).
    net.g_s = polyphase_synthesis(net.g_s)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
