"""Decoding without torch: the synthesis transform under ONNX Runtime.

A bundled model may come with ``<name>.synthesis.onnx`` in the weights folder
(``aecodec onnx``, :mod:`aecodec.train.onnxgraph`): the graph of ``refine(g_s(y))`` whose
weights are external data pointing into the model's own ``.safetensors`` file(s), so it adds
a few kilobytes to the bundle. With it, and ``onnxruntime`` installed, a
:class:`aecodec.codec.Codec` decodes without importing torch: codeword lookup and inverse gains
in numpy, the networks in ONNX Runtime. The decoded *indices* never depend on this (they are
integers); the pixels agree with the torch path to +-1 (both are float32 convolutions).

Threads: :func:`set_threads` sets the intra-op threads of both runtimes (torch's only once it
is imported).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from aecodec.weightsfile import WEIGHTS_DIR, LoadedWeights

GRAPH_SUFFIX = ".synthesis.onnx"
"""The graph of bundled model NAME is ``NAME.synthesis.onnx`` in the weights folder."""

RUNTIMES = ("auto", "onnx", "torch")
"""``auto``: ONNX Runtime where the model has a graph and ``onnxruntime`` imports, else torch."""

SHA256_KEY = "aecodec_weights_sha256"
"""Metadata of a graph: the sha256 of the weights it was built from (a stale graph is not
used)."""

_threads: int | None = None


def set_threads(threads: int | None) -> None:
    """Intra-op threads of the inference runtimes in this process (``None``: their defaults).
    torch's are set now if torch is imported, else when a codec first imports it."""
    global _threads
    _threads = threads
    torch = sys.modules.get("torch")
    if threads and torch is not None:
        torch.set_num_threads(threads)


def threads() -> int | None:
    """The threads :func:`set_threads` chose, or ``None``."""
    return _threads


def graph_path(model: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Where bundled model ``model``'s synthesis graph lives (it may not exist)."""
    return weights_dir / f"{model}{GRAPH_SUFFIX}"


def onnxruntime_available() -> bool:
    """True when ``onnxruntime`` can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxSynthesis:
    """A model's decoder side without torch: indices -> pixels in ``[0, 1]``.

    Args:
        weights: the model's verified weights (codebooks and inverse gains are read from them).
        graph: its synthesis graph (:func:`graph_path`).

    Raises:
        ValueError: the graph was built from other weights.
    """

    def __init__(self, weights: LoadedWeights, graph: Path) -> None:
        import onnxruntime as ort

        codebook = weights.tensors["quantizer.codebook"]  # [G, K, d]
        self._codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        self._log_inv_gain = np.asarray(weights.tensors["log_inv_gain"], dtype=np.float32)
        options = ort.SessionOptions()
        if _threads:
            options.intra_op_num_threads = _threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )
        built = self._session.get_modelmeta().custom_metadata_map.get(SHA256_KEY)
        if built != weights.sha256:
            raise ValueError(
                f"{graph.name} was built from other weights ({str(built)[:12]}, these are "
                f"{weights.sha256[:12]}); rebuild it with `aecodec onnx {weights.name}`"
            )
        self._lock = threading.Lock()

    def inverse_gain(self, q: float) -> np.ndarray:
        """``float32 [M]`` inverse gains at fine quality index ``q`` (``0..Q-1``), interpolated
        in the log domain between two levels as :meth:`VQVAE.coding_gains` does."""
        a = int(np.floor(q))
        f = np.float32(q - a)
        log = self._log_inv_gain
        if f == 0:
            return np.exp(log[a])
        return np.exp((np.float32(1.0) - f) * log[a] + f * log[a + 1])

    def __call__(self, idx: np.ndarray, q: float) -> np.ndarray:
        """``int [G, h, w]`` indices at fine quality index ``q`` -> ``float32 [3, 16h, 16w]``
        in ``[0, 1]``."""
        g, h, w = idx.shape
        cb = self._codebook
        d = cb.shape[2]
        y = cb[np.arange(g)[:, None, None], idx.astype(np.intp)]  # [G, h, w, d]
        y = y.transpose(0, 3, 1, 2).reshape(1, g * d, h, w)
        y = y * self.inverse_gain(q)[None, :, None, None]
        with self._lock:  # one run at a time: the session's threads are the budget
            (x_hat,) = self._session.run(None, {"y": np.ascontiguousarray(y, np.float32)})
        return np.clip(x_hat[0], 0.0, 1.0)


def load_synthesis(weights: LoadedWeights, runtime: str, weights_dir: Path = WEIGHTS_DIR) -> Any:
    """The ONNX synthesis of ``weights`` for ``runtime`` (:data:`RUNTIMES`), or ``None`` where
    the torch path is to be used.

    Raises:
        ValueError: ``runtime`` is unknown, or ``"onnx"`` was asked for and cannot be had
            (no graph for this model, or ``onnxruntime`` missing).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return None
    graph = graph_path(weights.name, weights_dir)
    if not graph.is_file() or not onnxruntime_available():
        if runtime == "onnx":
            why = "onnxruntime is not installed" if graph.is_file() else f"no {graph.name}"
            raise ValueError(f"model {weights.name!r} cannot decode with ONNX Runtime: {why}")
        return None
    try:
        return OnnxSynthesis(weights, graph)
    except ValueError:
        if runtime == "onnx":
            raise
        return None
