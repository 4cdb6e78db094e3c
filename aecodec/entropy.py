"""Integer probability tables and ANS coding of VQ indices.

Everything the decoder computes here is integer arithmetic on values stored in the weights
file or already decoded, so a bitstream decodes to the same indices on every machine:

* ``freqs``: ``int [Q, G, C, K]``, one frequency table per quality q, group g and context c;
  every entry >= 1, every row sums to ``2**prob_bits``.
* ``level_lut``: ``int [G, K]``, the level of each codeword; the context of group g at a
  position is the maximum level of group g - 1 over the 3x3 neighbourhood
  (:func:`contexts_from_levels`).

Coding order (the decoder's order; the ANS encoder runs it backwards): groups 0..G-1; within a
group, contexts 0..C-1; within a context, positions in raster order. Each run of symbols is
coded with constriction's ``AnsCoder`` and a ``Categorical`` model built from the integer row
(``freq / 2**prob_bits`` is exact in float64, and constriction's fixed-point quantization of it
is integer-exact Rust code).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aecodec.errors import FormatError


def contexts_from_levels(levels: np.ndarray, num_contexts: int) -> np.ndarray:
    """Integer context of every group from the *levels* of the previous group's indices.

    Args:
        levels: ``int [G, h, w]``, the level (``level_lut[g, k]``) of each decoded index.
        num_contexts: C; contexts are in ``0..C-1``.

    Returns:
        ``int64 [G, h, w]``: group 0 has context 0; group g > 0 has the maximum level of group
        g - 1 over the 3x3 neighbourhood (zero outside the grid), clipped to C - 1.
    """
    g, h, w = levels.shape
    out = np.zeros((g, h, w), dtype=np.int64)
    if g > 1:
        prev = np.pad(levels[:-1].astype(np.int64), ((0, 0), (1, 1), (1, 1)))
        m = np.zeros((g - 1, h, w), dtype=np.int64)
        for dy in range(3):
            for dx in range(3):
                np.maximum(m, prev[:, dy : dy + h, dx : dx + w], out=m)
        out[1:] = np.minimum(m, num_contexts - 1)
    return out


@dataclass(frozen=True)
class EntropyTables:
    """The integer tables of one model (see the module docstring for shapes)."""

    freqs: np.ndarray
    level_lut: np.ndarray
    prob_bits: int

    def __post_init__(self) -> None:
        if self.freqs.ndim != 4 or self.level_lut.ndim != 2:
            raise ValueError("freqs must be [Q, G, C, K] and level_lut [G, K]")
        _, g, c, k = self.freqs.shape
        if self.level_lut.shape != (g, k):
            raise ValueError(f"level_lut shape {self.level_lut.shape} != {(g, k)}")
        if (self.freqs < 1).any() or (self.freqs.sum(-1) != 2**self.prob_bits).any():
            raise ValueError("every frequency must be >= 1 and each row must sum to 2**prob_bits")
        if self.level_lut.min() < 0 or self.level_lut.max() >= c:
            raise ValueError("level_lut values must be in 0..C-1")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(Q, G, C, K)``."""
        q, g, c, k = self.freqs.shape
        return q, g, c, k

    def code_lengths(self, q: int) -> np.ndarray:
        """``float64 [G, C, K]``: ideal code length in bits of each index at quality index q."""
        return self.prob_bits - np.log2(self.freqs[q].astype(np.float64))

    def contexts(self, idx: np.ndarray) -> np.ndarray:
        """``int [G, h, w]`` indices -> ``int64 [G, h, w]`` contexts."""
        levels = np.take_along_axis(self.level_lut, idx.reshape(idx.shape[0], -1), axis=1)
        return contexts_from_levels(levels.reshape(idx.shape), self.shape[2])

    def ideal_bits(self, idx: np.ndarray, q: int) -> float:
        """Information content in bits of ``idx [G, h, w]`` under the tables (ideal size)."""
        ctx = self.contexts(idx)
        lengths = self.code_lengths(q)
        g = np.arange(idx.shape[0])[:, None, None]
        return float(lengths[g, ctx, idx].sum())


def tables_from_logits(logits: np.ndarray, prob_bits: int) -> np.ndarray:
    """Quantize learned logits ``[Q, G, C, K]`` to integer frequencies (export time only).

    Each row becomes ``max(1, floor(p * (2**prob_bits - K)))`` plus the remainder added to its
    most probable symbol, so every row sums to exactly ``2**prob_bits`` with no zero entry.
    """
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(-1, keepdims=True)
    k = x.shape[-1]
    total = 2**prob_bits
    if k > total // 2:
        raise ValueError(f"codebook size {k} too large for {prob_bits}-bit tables")
    f = np.floor(p * (total - k)).astype(np.int64) + 1
    rest = total - f.sum(-1)
    top = f.argmax(-1)
    np.put_along_axis(
        f, top[..., None], np.take_along_axis(f, top[..., None], -1) + rest[..., None], -1
    )
    return f.astype(np.int32)


def _models(tables: EntropyTables, q: int) -> list[list[object]]:
    import constriction

    categorical = constriction.stream.model.Categorical
    scale = float(2**tables.prob_bits)
    rows = tables.freqs[q].astype(np.float64) / scale
    return [[categorical(r, perfect=False) for r in group] for group in rows]


def encode_indices(idx: np.ndarray, tables: EntropyTables, q: int) -> bytes:
    """ANS-encode ``idx`` (``int [G, h, w]``) with the tables of quality index ``q``.

    Returns:
        The compressed words as little-endian bytes (a multiple of 4 bytes).
    """
    import constriction

    _, g_count, c_count, k = tables.shape
    if idx.ndim != 3 or idx.shape[0] != g_count:
        raise ValueError(f"indices must be [G={g_count}, h, w], got {idx.shape}")
    if idx.min() < 0 or idx.max() >= k:
        raise ValueError(f"indices must be in 0..{k - 1}")
    ctx = tables.contexts(idx)
    models = _models(tables, q)
    coder = constriction.stream.stack.AnsCoder()
    for g in reversed(range(g_count)):
        flat_idx, flat_ctx = idx[g].reshape(-1), ctx[g].reshape(-1)
        for c in reversed(range(c_count)):
            symbols = flat_idx[flat_ctx == c].astype(np.int32)
            if symbols.size:
                coder.encode_reverse(symbols, models[g][c])
    return coder.get_compressed().astype("<u4").tobytes()


def decode_indices(
    data: bytes, tables: EntropyTables, q: int, height: int, width: int
) -> np.ndarray:
    """Inverse of :func:`encode_indices`: returns ``int64 [G, height, width]``.

    Raises:
        FormatError: the payload is malformed or does not decode to exactly this many indices.
    """
    import constriction

    if len(data) % 4:
        raise FormatError(f"tile payload length {len(data)} is not a multiple of 4")
    _, g_count, c_count, _ = tables.shape
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    models = _models(tables, q)
    out = np.zeros((g_count, height, width), dtype=np.int64)
    levels = np.zeros_like(out)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        for g in range(g_count):
            if g == 0:
                ctx = np.zeros((height, width), dtype=np.int64)
            else:
                ctx = contexts_from_levels(levels[g - 1 : g + 1], c_count)[1]
            flat = np.zeros(height * width, dtype=np.int64)
            flat_ctx = ctx.reshape(-1)
            for c in range(c_count):
                mask = flat_ctx == c
                n = int(mask.sum())
                if n:
                    flat[mask] = coder.decode(models[g][c], n)
            out[g] = flat.reshape(height, width)
            levels[g] = tables.level_lut[g][out[g]]
        empty = coder.is_empty()
    except FormatError:
        raise
    except Exception as exc:  # constriction raises ValueError/AssertionError on bad input
        raise FormatError(f"tile payload does not decode: {exc}") from exc
    if not empty:
        raise FormatError("tile payload has data left over after decoding: the file is corrupt")
    return out
