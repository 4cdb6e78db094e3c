"""Coding without torch: the transforms under ONNX Runtime, the rest in numpy.

A bundled model may come with ``<name>.synthesis.onnx`` and ``<name>.analysis.onnx`` in the
weights folder (``aecodec onnx``, :mod:`aecodec.train.onnxgraph`): the graphs of
``refine(g_s(y))`` and ``g_a(x)`` whose weights are external data pointing into the model's own
``.safetensors`` file(s), so they add a few kilobytes to the bundle. With them, and
``onnxruntime`` installed, a :class:`aecodec.codec.Codec` decodes and encodes without importing
torch:

* decoding (:class:`OnnxSynthesis`): codeword lookup and inverse gains in numpy, the networks
  in ONNX Runtime. The decoded *indices* never depend on this (they are integers); the pixels
  agree with the torch path to +-1 (both are float32 convolutions);
* encoding (:class:`OnnxAnalysis`): the analysis in ONNX Runtime, the gain and the
  entropy-constrained assignment of 1-D codebooks in numpy, the same arithmetic as the torch
  quantizer's (:data:`aecodec.model.config.SCALAR_WINDOW` candidates,
  :data:`~aecodec.model.config.SCALAR_PASSES` passes). The latents agree with torch's to float32
  rounding (torch computes the linear block path in float64), so an index can differ only where
  two candidates' costs all but tie.

Threads: :func:`set_threads` sets the intra-op threads of both runtimes (torch's only once it
is imported).
"""

from __future__ import annotations

import math
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from aecodec.entropy import CODER_PRECISION
from aecodec.weightsfile import WEIGHTS_DIR, LoadedWeights

GRAPH_SUFFIX = ".synthesis.onnx"
"""The graph of bundled model NAME is ``NAME.synthesis.onnx`` in the weights folder."""
ANALYSIS_SUFFIX = ".analysis.onnx"
"""Its analysis graph: ``NAME.analysis.onnx``."""

RUNTIMES = ("auto", "onnx", "torch")

# Groups (latent channels) per slice of the numpy assignment: a slice's candidates, distances
# and costs (16 groups of a 768x512 image: 16 x 1,536 positions x 9 candidates) stay in the
# CPU's cache between the operations on them.
ASSIGN_GROUPS = 16
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


def analysis_graph_path(model: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Where bundled model ``model``'s analysis graph lives (it may not exist)."""
    return weights_dir / f"{model}{ANALYSIS_SUFFIX}"


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
        codebook = weights.tensors["quantizer.codebook"]  # [G, K, d]
        self._codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        self._log_inv_gain = np.asarray(weights.tensors["log_inv_gain"], dtype=np.float32)
        self._session = _session(weights, graph)
        self._lock = threading.Lock()

    def inverse_gain(self, q: float) -> np.ndarray:
        """``float32 [M]`` inverse gains at fine quality index ``q`` (``0..Q-1``), interpolated
        in the log domain between two levels as :meth:`VQVAE.coding_gains` does."""
        return _gain(self._log_inv_gain, q)

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


class OnnxAnalysis:
    """A model's encoder side without torch: pixels -> indices (1-D codebooks).

    Args:
        weights: the model's verified weights (codebooks, gains, tables' codeword levels).
        graph: its analysis graph (:func:`analysis_graph_path`).

    Raises:
        ValueError: the graph was built from other weights, or the model's codebooks are not
            one-dimensional and near their lattice (the torch quantizer's exact window search).
    """

    def __init__(self, weights: LoadedWeights, graph: Path) -> None:
        from aecodec.model.config import SCALAR_PASSES, SCALAR_WINDOW

        codebook = np.asarray(weights.tensors["quantizer.codebook"], dtype=np.float32)
        _, k, d = codebook.shape
        lattice = np.arange(k, dtype=np.float32) - k // 2
        deviation = float(np.abs(codebook[:, :, 0] - lattice).max()) if d == 1 else math.inf
        if not deviation < SCALAR_WINDOW - 1:
            raise ValueError(f"model {weights.name!r}: no numpy assignment for its codebooks")
        self._codebook = np.ascontiguousarray(codebook[:, :, 0])  # [G, K]
        self._log_gain = np.asarray(weights.tensors["log_gain"], dtype=np.float32)
        self._rate_weight = np.float32(weights.config.rate_weight)
        self._tables = weights.tables  # its contexts (codeword levels, scheme) at any quality
        self._window = exact_window(deviation, weights.config.rate_weight, SCALAR_WINDOW)
        self._passes = SCALAR_PASSES
        self._session = _session(weights, graph)
        self._lock = threading.Lock()

    def analyse(self, region: np.ndarray, q: float) -> np.ndarray:
        """``uint8 [H, W, 3]`` (H, W multiples of 16) -> ``float32 [M, H/16, W/16]``, the
        latent times the gain of fine quality index ``q`` (:meth:`VQVAE.analyse`)."""
        x = np.ascontiguousarray(region.transpose(2, 0, 1)[None], dtype=np.float32)
        x /= np.float32(255.0)
        with self._lock:
            (y,) = self._session.run(None, {"x": x})
        return y[0] * _gain(self._log_gain, q)[:, None, None]

    def assign(self, y: np.ndarray, bits: np.ndarray, mean_bits: np.ndarray) -> np.ndarray:
        """Entropy-constrained assignment of a gained latent ``float32 [G, h, w]`` with code
        lengths ``float32 [G, C, K]`` (and their context average ``[G, K]``): the torch
        quantizer's window search (:meth:`ProductVQ.assign`). Returns ``int64 [G, h, w]``.

        The same indices as that search, computed in slices of :data:`ASSIGN_GROUPS` groups
        (their candidates, distances and costs stay in the CPU's cache) and, from the third
        pass on, only where the contexts changed since the pass before (elsewhere the costs,
        hence the choices, are the same)."""
        g = self._codebook.shape[0]
        slices = [slice(a, min(g, a + ASSIGN_GROUPS)) for a in range(0, g, ASSIGN_GROUPS)]
        found = [self._candidates(y[s], s.start) for s in slices]  # (candidates, distances)
        idx = np.empty(y.shape, dtype=np.int64)
        for s, (cand, dist) in zip(slices, found, strict=True):
            rows = (np.arange(s.start, s.stop, dtype=np.int32) * bits.shape[2])[:, None, None]
            idx[s] = self._pick(np.take(mean_bits, rows[..., None] + cand), dist, cand)
        previous = None
        for _ in range(self._passes - 1):
            ctx = self._tables.contexts(idx)
            for s, (cand, dist) in zip(slices, found, strict=True):
                self._repick(
                    idx[s],
                    ctx[s],
                    None if previous is None else previous[s],
                    cand,
                    dist,
                    bits,
                    s.start,
                )
            previous = ctx
        return idx

    def _candidates(self, y: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
        """The window of codewords around each value of ``y [g, h, w]`` (groups ``first``...),
        ``int32 [g, h, w, n]``, and their squared distances ``float32 [g, h, w, n]``."""
        g, k = y.shape[0], self._codebook.shape[1]
        offsets = np.arange(-self._window, self._window + 1, dtype=np.int32)
        centre = np.clip(np.clip(np.round(y), -k, k).astype(np.int32) + k // 2, 0, k - 1)
        cand = np.clip(centre[..., None] + offsets, 0, k - 1)
        # Gathers through flat indices (np.take on a 1-D array: twice as fast as fancy
        # indexing with broadcast row indices); the same values.
        rows = (np.arange(first, first + g, dtype=np.int32) * k)[:, None, None, None]
        dist = y[..., None] - np.take(self._codebook, rows + cand)
        dist *= dist
        return cand, dist

    def _pick(self, lengths: np.ndarray, dist: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """The candidate of least ``dist + rate_weight * lengths`` (the first on ties)."""
        cost = lengths
        cost *= self._rate_weight
        cost += dist
        best = np.argmin(cost, axis=-1)
        return np.take_along_axis(cand, best[..., None], axis=-1)[..., 0]

    def _repick(
        self,
        idx: np.ndarray,
        ctx: np.ndarray,
        previous: np.ndarray | None,
        cand: np.ndarray,
        dist: np.ndarray,
        bits: np.ndarray,
        first: int,
    ) -> None:
        """One pass over groups ``first``... in place: ``idx [g, h, w]`` chosen again with
        the code lengths of contexts ``ctx``, only where they differ from ``previous``."""
        _, c, k = bits.shape
        rows = (np.arange(first, first + idx.shape[0], dtype=np.int32) * (c * k))[:, None, None]
        offset = ctx.astype(np.int32) * k + rows  # row of each position in bits' [G*C, K]
        if previous is None:
            idx[...] = self._pick(np.take(bits, offset[..., None] + cand), dist, cand)
            return
        changed = np.flatnonzero(ctx != previous)
        if changed.size:
            n = cand.shape[-1]
            sub = cand.reshape(-1, n)[changed]
            lengths = np.take(bits, offset.reshape(-1)[changed, None] + sub)
            idx.reshape(-1)[changed] = self._pick(lengths, dist.reshape(-1, n)[changed], sub)


def exact_window(deviation: float, rate_weight: float, widest: int) -> int:
    """The narrowest candidate window (half-width) of the 1-D assignment that chooses what a
    window of ``widest`` chooses, for codewords within ``deviation`` of their lattice points.

    With ``c = round(y)``, the codeword at ``c`` is at most ``0.5 + deviation`` from ``y`` and
    one ``W + 1`` or more steps away at least ``W + 0.5 - deviation``; code lengths lie in
    ``0..CODER_PRECISION`` bits. If the squared distances differ by more than the largest
    rate difference (``rate_weight * CODER_PRECISION``) no codeword outside the window can
    cost less than (or tie with) the one at ``c``. For ``aecodec-vq-base5`` (deviation 0.34,
    rate weight 0.1): 2, five candidates instead of nine."""
    margin = rate_weight * CODER_PRECISION + 1e-3  # + 1e-3: float32 rounding of the costs
    for w in range(1, widest):
        near, far = 0.5 + deviation, w + 0.5 - deviation
        if far > 0 and far * far - near * near > margin:
            return w
    return widest


def _gain(log: np.ndarray, q: float) -> np.ndarray:
    """``float32 [M]`` gains ``exp(log[q])`` at fine quality index ``q``, interpolated in the
    log domain between two levels as :meth:`VQVAE.coding_gains` does."""
    a = int(np.floor(q))
    f = np.float32(q - a)
    if f == 0:
        return np.exp(log[a])
    return np.exp((np.float32(1.0) - f) * log[a] + f * log[a + 1])


def _session(weights: LoadedWeights, graph: Path) -> Any:
    """An ONNX Runtime session of ``graph`` (threads as :func:`set_threads` chose).

    Raises:
        ValueError: the graph was built from other weights.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if _threads:
        options.intra_op_num_threads = _threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    built = session.get_modelmeta().custom_metadata_map.get(SHA256_KEY)
    if built != weights.sha256:
        raise ValueError(
            f"{graph.name} was built from other weights ({str(built)[:12]}, these are "
            f"{weights.sha256[:12]}); rebuild it with `aecodec onnx {weights.name}`"
        )
    return session


def load_analysis(weights: LoadedWeights, runtime: str, weights_dir: Path = WEIGHTS_DIR) -> Any:
    """The ONNX encoder (:class:`OnnxAnalysis`) of ``weights`` for ``runtime``, or ``None``
    where the torch path is to be used (``"torch"``; no analysis graph, no ``onnxruntime``,
    a stale graph or codebooks the numpy assignment does not handle)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    graph = analysis_graph_path(weights.name, weights_dir)
    if runtime == "torch" or not graph.is_file() or not onnxruntime_available():
        return None
    try:
        return OnnxAnalysis(weights, graph)
    except ValueError:
        return None


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
