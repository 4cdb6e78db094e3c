"""Writing weights files (authoring: export, table re-making, bundle upkeep).

The reading side, the format and the manifest's layout are :mod:`aecodec.weightsfile`'s (the
runtime needs only that); this module writes files and manifest entries: a trained network
with its integer tables (:func:`write_weights`), a manifest entry (:func:`add_to_manifest`), a
bundled model stored as tensors of others or as differences from one (:func:`share_tensors`,
:func:`compress_part`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aecodec.entropy import EntropyTables, tables_from_logits
from aecodec.errors import ModelError
from aecodec.files import sha256_file, write_atomic
from aecodec.weightsfile import (
    DELTA_SCALE_SUFFIX,
    DELTA_SUFFIX,
    MANIFEST_NAME,
    METADATA_KEY,
    TRAINING_TABLES,
    WEIGHTS_DIR,
    WEIGHTS_FORMAT,
    WEIGHTS_FORMAT_VERSION,
    ZLIB_SUFFIX,
    _assemble,
    _inflate,
    _locate,
    _read_file,
    apply_delta,
    read_manifest,
)

if TYPE_CHECKING:
    from aecodec.model.vqvae import VQVAE


def add_to_manifest(
    weights_dir: Path, name: str, entry: dict[str, Any], make_default: bool = True
) -> None:
    """Write (atomically) ``weights_dir``'s manifest with ``entry`` as model ``name``.

    Args:
        make_default: make ``name`` the default model (it is anyway if there is none).
    """
    manifest = read_manifest(weights_dir)
    manifest.setdefault("models", {})[name] = entry
    if make_default or not manifest.get("default"):
        manifest["default"] = name
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    write_atomic(weights_dir / MANIFEST_NAME, lambda fh: fh.write(text.encode()), force=True)


DELTA_BITS = 8
"""Bits of a stored difference (``int8``, in ``-127..127``)."""


def delta_quantize(value: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8-bit difference of float32 ``value`` from ``base`` (same shape):
    ``(delta int8, scale float32)`` with one power-of-two scale per row of axis 0 (one for a
    tensor of fewer than two axes), shaped to broadcast; :func:`aecodec.weightsfile.apply_delta`
    rebuilds ``value`` to within half a scale step (``max |value - base| / 127`` at most).
    """
    diff = value.astype(np.float64) - base.astype(np.float64)
    rows = diff.reshape(diff.shape[0], -1) if diff.ndim >= 2 else diff.reshape(1, -1)
    peak = np.abs(rows).max(axis=1)
    limit = 2 ** (DELTA_BITS - 1) - 1
    exponent = np.ceil(np.log2(np.where(peak > 0, peak, 1.0) / limit))
    scale = np.exp2(exponent).astype(np.float32)
    shape = (-1,) + (1,) * (diff.ndim - 1) if diff.ndim >= 2 else (1,)
    q = np.clip(np.rint(rows / scale[:, None].astype(np.float64)), -limit, limit)
    return q.astype(np.int8).reshape(diff.shape), scale.reshape(shape)


def _exact_delta(value: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A stored difference that rebuilds ``value`` bit for bit (a value made by
    :func:`quantize_from`), or ``None``. The scale recomputed from the rebuilt value may be
    twice the one it was made with (a row whose peak was 127 steps), so each row that does not
    rebuild with the first guess tries half of it."""
    limit = 2 ** (DELTA_BITS - 1) - 1
    _, scale = delta_quantize(value, base)
    rows = value.shape[0] if value.ndim >= 2 else 1
    want = value.view(np.uint32).reshape(rows, -1)
    out_q = np.zeros((rows, want.shape[1]), dtype=np.int8)
    out_s = scale.reshape(-1).copy() if value.ndim >= 2 else np.repeat(scale, 1)
    diff = (value.astype(np.float64) - base).reshape(rows, -1)
    flat_base = base.reshape(rows, -1)
    for r in range(rows):
        for s in (out_s[r], out_s[r] / 2):
            q = np.rint(diff[r] / np.float64(s))
            if np.abs(q).max(initial=0) > limit:
                continue
            rebuilt = apply_delta(flat_base[r], q.astype(np.int8), np.asarray(s, dtype=np.float32))
            if np.array_equal(rebuilt.view(np.uint32), want[r]):
                out_q[r], out_s[r] = q.astype(np.int8), s
                break
        else:
            return None
    return out_q.reshape(value.shape), out_s.astype(np.float32).reshape(scale.shape)


def quantize_from(tensors: dict[str, np.ndarray], base: dict[str, np.ndarray]) -> list[str]:
    """Replace, in place, each float32 tensor of ``tensors`` that ``base`` holds with the same
    shape but another value by its 8-bit difference rebuilt (:func:`delta_quantize`): the
    network a fine-tuned model is then exported and stored as (``aecodec export
    --delta-from``). Returns the keys replaced."""
    done = []
    for key, value in tensors.items():
        other = base.get(key)
        if (
            other is None
            or value.dtype != np.float32
            or other.dtype != np.float32
            or other.shape != value.shape
            or np.array_equal(other, value)
        ):
            continue
        tensors[key] = apply_delta(other, *delta_quantize(value, other))
        done.append(key)
    return done


def share_tensors(
    name: str,
    sources: list[str],
    weights_dir: Path = WEIGHTS_DIR,
    keep_own: bool = False,
    delta_from: str | None = None,
) -> dict[str, Any]:
    """Store bundled model ``name`` as tensors of the bundled files ``sources`` (each tensor
    taken from the first source that holds an identical one) and delete its own file; the
    manifest entry keeps the file's sha256, size and metadata, and :func:`load_weights`
    rebuilds the same bytes. Saves the bundle a file whose tensors all exist elsewhere
    (``aecodec-vq-base2``: the transforms of ``aecodec-vq-base``, the tables of
    ``aecodec-vq-base3``). Returns the new manifest entry.

    Args:
        keep_own: the tensors in none of ``sources`` go to ``NAME.part.safetensors`` (the
            manifest's ``"part"``): a model that differs from another only in its tables
            (``aecodec-vq-base4z``) costs the size of its tables.
        delta_from: a bundled model with a file of its own: each float32 tensor found in no
            source whose value is an 8-bit difference from this model's (as
            :func:`quantize_from` made it) is stored as that difference in the part file
            (the manifest's ``"delta"``): a fine-tuned model costs a quarter of its bytes.

    Raises:
        ModelError: a tensor of ``name`` is in none of ``sources`` (without ``keep_own``), or
            the rebuilt bytes differ from the file's.
    """
    manifest = read_manifest(weights_dir)
    entry = dict(manifest["models"][name])
    path, digest, _ = _locate(name, manifest, weights_dir)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        raw_meta = (fh.metadata() or {})[METADATA_KEY]
    _, tensors = _read_file(path)
    own = {s: _read_file(_locate(s, manifest, weights_dir)[0])[1] for s in sources}
    base = _read_file(_locate(delta_from, manifest, weights_dir)[0])[1] if delta_from else {}
    picks, deltas, rest = _sort_tensors(tensors, own, base)
    if rest and not keep_own:
        raise ModelError(f"model {name!r}: tensor {rest[0]} is in none of {sources}")
    del entry["file"]
    entry["assembled"] = {"metadata": raw_meta, "tensors": {s: k for s, k in picks.items() if k}}
    if rest or deltas:
        own_tensors = {k: tensors[k] for k in rest}
        entry["assembled"]["part"] = _write_part(name, raw_meta, own_tensors, deltas, weights_dir)
    if deltas:
        keys = sorted(k[: -len(DELTA_SUFFIX)] for k in deltas if k.endswith(DELTA_SUFFIX))
        entry["assembled"]["delta"] = {"base": delta_from, "keys": keys}
    manifest["models"][name] = entry
    if _assemble(name, entry, manifest, weights_dir)[2] != digest:
        raise ModelError(f"model {name!r}: rebuilt bytes differ")  # pragma: no cover
    add_to_manifest(weights_dir, name, entry, make_default=False)
    path.unlink()
    return entry


def _sort_tensors(
    tensors: dict[str, np.ndarray],
    sources: dict[str, dict[str, np.ndarray]],
    base: dict[str, np.ndarray],
) -> tuple[dict[str, list[str]], dict[str, np.ndarray], list[str]]:
    """Where each of ``tensors`` can be stored (:func:`share_tensors`): the keys taken from
    each source (the first that holds an identical tensor), the 8-bit differences from
    ``base`` (``KEY.delta`` / ``KEY.delta_scale`` arrays) of the float32 tensors in no source
    that are exactly such a difference, and the keys left (to store as they are)."""
    picks: dict[str, list[str]] = {s: [] for s in sources}
    deltas: dict[str, np.ndarray] = {}
    rest: list[str] = []
    for key, value in sorted(tensors.items()):
        for source, theirs in sources.items():
            other = theirs.get(key)
            if (
                other is not None
                and other.dtype == value.dtype
                and other.shape == value.shape
                and np.array_equal(other, value)
            ):
                picks[source].append(key)
                break
        else:
            other = base.get(key)
            exact = None
            if other is not None and other.shape == value.shape and value.dtype == np.float32:
                exact = _exact_delta(value, other)
            if exact is not None:
                deltas[key + DELTA_SUFFIX], deltas[key + DELTA_SCALE_SUFFIX] = exact
            else:
                rest.append(key)
    return picks, deltas, rest


def _write_part(
    name: str,
    raw_meta: str,
    own: dict[str, np.ndarray],
    extra: dict[str, np.ndarray],
    weights_dir: Path,
) -> dict[str, Any]:
    """Write ``NAME.part.safetensors``: the tensors ``own`` (integer ones zlib-compressed,
    :data:`aecodec.weightsfile.ZLIB_SUFFIX`) and ``extra`` as they are; returns the manifest's
    ``"part"`` spec."""
    import zlib

    from safetensors.numpy import save_file

    part = f"{name}.part.safetensors"
    stored, packed = dict(extra), {}
    for key, value in own.items():
        if value.dtype.kind in "iu":
            blob = zlib.compress(np.ascontiguousarray(value).tobytes(), 9)
            stored[key + ZLIB_SUFFIX] = np.frombuffer(blob, dtype=np.uint8)
            packed[key] = {"dtype": value.dtype.str, "shape": list(value.shape)}
        else:
            stored[key] = value
    save_file(stored, str(weights_dir / part), metadata={METADATA_KEY: raw_meta})
    (weights_dir / part).chmod(0o644)
    spec: dict[str, Any] = {"file": part, "keys": sorted(set(own) - set(packed))}
    if packed:
        spec["zlib"] = packed
    return spec


def compress_part(name: str, weights_dir: Path = WEIGHTS_DIR) -> dict[str, Any]:
    """Re-write the part file of assembled bundled model ``name`` with its integer tensors
    zlib-compressed (the model's bytes, and so its sha256, are unchanged: checked). Returns
    the new manifest entry."""
    manifest = read_manifest(weights_dir)
    entry = json.loads(json.dumps(manifest["models"][name]))
    spec = entry.get("assembled", {})
    if "part" not in spec:
        raise ModelError(f"model {name!r} has no part file")
    _, digest = _assemble(name, entry, manifest, weights_dir)[1:]
    _, stored = _read_file(weights_dir / spec["part"]["file"])
    own = {k: stored.pop(k) for k in spec["part"]["keys"]}
    own.update(_inflate(name, spec["part"].get("zlib", {}), stored))
    stored = {k: v for k, v in stored.items() if not k.endswith(ZLIB_SUFFIX)}
    spec["part"] = _write_part(name, spec["metadata"], own, stored, weights_dir)
    manifest["models"][name] = entry
    if _assemble(name, entry, manifest, weights_dir)[2] != digest:
        raise ModelError(f"model {name!r}: rebuilt bytes differ")  # pragma: no cover
    add_to_manifest(weights_dir, name, entry, make_default=False)
    return entry


def learned_tables(net: VQVAE) -> EntropyTables:
    """Integer tables quantized from a network's learned tables: its count rows (trained with
    ``table_rows``) or one row per (quality, group, context) of its logits."""
    config, vq = net.config, net.quantizer
    lut = vq.level_lut().numpy()
    if vq.count_tables:
        freqs = tables_from_logits(-vq.row_bits().double().numpy() * np.log(2.0), config.prob_bits)
        index = vq.table_index.numpy()
        return EntropyTables(freqs, index, lut, config.prob_bits, config.context_scheme())
    freqs = tables_from_logits(vq.logits.detach().numpy(), config.prob_bits)
    dense = EntropyTables.dense(freqs, lut, config.prob_bits)
    return EntropyTables(
        dense.freqs, dense.table_index, lut, config.prob_bits, config.context_scheme()
    )


def write_weights(
    net: VQVAE,
    out: Path,
    default_quality: int,
    training: dict[str, Any] | None = None,
    tables: EntropyTables | None = None,
) -> str:
    """Write ``net`` as an aecodec safetensors weights file (atomically); returns its sha256.

    The file (weights format 2) holds the network parameters (float32, without the training
    tables :data:`TRAINING_TABLES`), the integer entropy tables (``entropy.freqs uint16
    [T, K]``, ``entropy.table_index uint16 [Q, G, C]``, ``entropy.level_lut uint8 [G, K]``)
    and, in its metadata, the model config (JSON), the default quality and a training summary.

    Args:
        tables: fitted tables (:func:`aecodec.train.tables.fit_tables`); by default
            :func:`learned_tables`.
    """
    from safetensors.numpy import save

    config = net.config
    if tables is None:
        tables = learned_tables(net)
    _check_tables(net, tables)
    tensors = {
        k: v.detach().contiguous().float().numpy()
        for k, v in net.state_dict().items()
        if k not in TRAINING_TABLES
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
    # One metadata key: safetensors keeps metadata in a hash map whose order is random, and
    # the file (and so its sha256) must be a pure function of the weights.
    blob = save(tensors, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    write_atomic(out, lambda fh: fh.write(blob), force=True)
    out.chmod(0o644)
    return sha256_file(out)


def _check_tables(net: VQVAE, tables: EntropyTables) -> None:
    """Raise ValueError unless ``tables`` can code ``net``'s indices."""
    lut = net.quantizer.level_lut().numpy()
    if tables.shape != net.quantizer.table_shape or (tables.level_lut != lut).any():
        raise ValueError("tables do not match the network (shape or codeword levels)")
    if tables.scheme != net.config.context_scheme():
        raise ValueError("tables and config disagree on the context scheme")
