"""Integer probability tables and ANS coding of VQ indices.

Everything the decoder computes here is integer arithmetic on values stored in the weights
file or already decoded, so a bitstream decodes to the same indices on every machine:

* ``freqs``: ``int [T, K]``, T shared frequency rows; every entry >= 0, every row sums to
  ``2**prob_bits``. A zero entry is a symbol the tables expect never to see: the coder still
  codes it, at :data:`CODER_PRECISION` bits (its probability is the coder's leak, ``2**-24``),
  and the mass it would have taken goes to likely symbols (an unused channel then costs
  almost nothing, where a floor of 1 costs about 0.0057 bits per symbol for K = 256).
* ``table_index``: ``int [Q, G, C]``, the row of ``freqs`` that codes group g at level index
  q (0-based: quality 1 is 0) under context c (models of the first weights format have one
  row per (q, g, c)).
* ``level_lut``: ``int [G, K]``, the level (``0..L-1``) of each codeword.

A fine quality between two levels codes with rows mixed from the two levels' rows by integer
arithmetic (:func:`mix_rows`, :meth:`EntropyTables.between`), so it decodes as exactly.

Contexts (:class:`ContextScheme`; ``C = L * B * (1 + S)`` of them per quality and group):

* **channel context** ``a`` (``0..L-1``): the maximum level of group g - 1 over the 3x3
  neighbourhood (0 for group 0 and outside the grid);
* **activity bucket** ``b`` (``0..B-1``, ``B = len(E) + 1``): how many of the groups before g
  have a level > 0 at the same position, bucketed by the ascending edges E (``b`` = the number
  of edges <= that count); with no edges, ``b = 0``;
* the *base context* is ``a * B + b``;
* with ``S > 0`` spatial contexts, the latent grid is a checkerboard (He et al., CVPR 2021):
  *anchors* (``(i + j)`` even, tile-local) are coded first with the base context; the other
  positions then use ``L * B + base * S + s``, where ``s = min(S - 1, sum of the levels of
  the four neighbours up, down, left, right in the same group)`` (all anchors, already
  decoded). With ``S = 0`` every position uses the base context.

Coding order (the decoder's order; the ANS encoder runs it backwards): groups 0..G-1; within a
group, contexts 0..C-1 (so all anchors before the other positions); within a context,
positions in raster order. Each run of symbols is coded with constriction's ``AnsCoder`` and a
``Categorical`` model built from the integer row (``freq / 2**prob_bits`` is exact in float64,
and constriction's fixed-point quantization of it is integer-exact Rust code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from aecodec.errors import FormatError

CODER_PRECISION = 24
"""Bits of the coder's fixed-point probabilities (constriction's ``AnsCoder``): a symbol whose
frequency is 0 is coded with probability ``2**-CODER_PRECISION``."""


def contexts_from_levels(levels: np.ndarray, num_levels: int) -> np.ndarray:
    """Channel context of every group from the *levels* of the previous group's indices.

    Args:
        levels: ``int [G, h, w]``, the level (``level_lut[g, k]``) of each decoded index.
        num_levels: L, the number of codeword levels (channel contexts ``0..L-1``).

    Returns:
        ``int64 [G, h, w]``: group 0 has context 0; group g > 0 has the maximum level of group
        g - 1 over the 3x3 neighbourhood (zero outside the grid), clipped to L - 1.
    """
    g, h, w = levels.shape
    out = np.zeros((g, h, w), dtype=np.int64)
    if g > 1:
        prev = np.pad(levels[:-1].astype(np.int64), ((0, 0), (1, 1), (1, 1)))
        m = np.zeros((g - 1, h, w), dtype=np.int64)
        for dy in range(3):
            for dx in range(3):
                np.maximum(m, prev[:, dy : dy + h, dx : dx + w], out=m)
        out[1:] = np.minimum(m, num_levels - 1)
    return out


def anchor_mask(height: int, width: int) -> np.ndarray:
    """``bool [h, w]``: True at the checkerboard's anchors, ``(i + j)`` even."""
    return (np.add.outer(np.arange(height), np.arange(width)) % 2) == 0


def spatial_sum(levels: np.ndarray) -> np.ndarray:
    """``int [..., h, w]`` levels -> ``int64 [..., h, w]`` sum of the four neighbours' levels
    (up, down, left, right; zero outside the grid)."""
    lv = levels.astype(np.int64)
    pad = [(0, 0)] * (lv.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(lv, pad)
    h, w = lv.shape[-2:]
    return (
        p[..., 0:h, 1 : w + 1]
        + p[..., 2 : h + 2, 1 : w + 1]
        + p[..., 1 : h + 1, 0:w]
        + p[..., 1 : h + 1, 2 : w + 2]
    )


def activity_counts(levels: np.ndarray) -> np.ndarray:
    """``int [G, h, w]`` levels -> ``int64 [G, h, w]``: at each position, how many groups
    before g have a level > 0 there."""
    active = (levels > 0).astype(np.int64)
    return np.cumsum(active, axis=0) - active


@dataclass(frozen=True)
class ContextScheme:
    """How the coding context of an index is formed (see the module docstring).

    Attributes:
        num_levels: L, channel contexts (codeword levels ``0..L-1``).
        spatial: S, checkerboard spatial contexts (0: none).
        activity_edges: E, ascending bucket edges of the activity count (empty: none).
    """

    num_levels: int
    spatial: int = 0
    activity_edges: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.num_levels < 1 or self.spatial < 0:
            raise ValueError("a context scheme needs L >= 1 and S >= 0")
        e = self.activity_edges
        if any(x < 1 for x in e) or list(e) != sorted(set(e)):
            raise ValueError(f"activity edges must be ascending positive integers, got {e}")

    @property
    def buckets(self) -> int:
        """B, activity buckets."""
        return len(self.activity_edges) + 1

    @property
    def base_contexts(self) -> int:
        """``L * B``, the contexts of anchors (of every position when S = 0)."""
        return self.num_levels * self.buckets

    @property
    def num_contexts(self) -> int:
        """C = ``L * B * (1 + S)``."""
        return self.base_contexts * (1 + self.spatial)

    def base(self, chan: np.ndarray, activity: np.ndarray) -> np.ndarray:
        """Base contexts from channel contexts and activity counts (same shapes)."""
        if not self.activity_edges:
            return chan
        edges = np.asarray(self.activity_edges, dtype=np.int64)
        return chan * self.buckets + np.searchsorted(edges, activity, side="right")

    def non_anchor_contexts(self, base: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """Contexts of non-anchor positions from their base contexts and the levels of their
        own group (``[..., h, w]``)."""
        s = np.minimum(spatial_sum(levels), self.spatial - 1)
        return self.base_contexts + base * self.spatial + s

    def contexts(self, levels: np.ndarray) -> np.ndarray:
        """``int [G, h, w]`` levels of all indices -> ``int64 [G, h, w]`` coding contexts."""
        base = self.base(contexts_from_levels(levels, self.num_levels), activity_counts(levels))
        if self.spatial == 0:
            return base
        anchors = anchor_mask(*levels.shape[-2:])
        return np.where(anchors, base, self.non_anchor_contexts(base, levels))


@dataclass(frozen=True)
class EntropyTables:
    """The integer tables of one model (see the module docstring for shapes).

    Attributes:
        freqs: ``int [T, K]`` shared frequency rows.
        table_index: ``int [Q, G, C]`` row of ``freqs`` per quality, group and context.
        level_lut: ``int [G, K]`` level of each codeword, in ``0..L-1``.
        prob_bits: every row sums to ``2**prob_bits``.
        scheme: how contexts are formed; its ``num_contexts`` must be C.
    """

    freqs: np.ndarray
    table_index: np.ndarray
    level_lut: np.ndarray
    prob_bits: int
    scheme: ContextScheme

    def __post_init__(self) -> None:
        if self.freqs.ndim != 2 or self.table_index.ndim != 3 or self.level_lut.ndim != 2:
            raise ValueError("freqs must be [T, K], table_index [Q, G, C] and level_lut [G, K]")
        t, k = self.freqs.shape
        _, g, c = self.table_index.shape
        if self.level_lut.shape != (g, k):
            raise ValueError(f"level_lut shape {self.level_lut.shape} != {(g, k)}")
        if (self.freqs < 0).any() or (self.freqs.sum(-1) != 2**self.prob_bits).any():
            raise ValueError("every frequency must be >= 0 and each row must sum to 2**prob_bits")
        if self.table_index.min() < 0 or self.table_index.max() >= t:
            raise ValueError(f"table_index values must be in 0..{t - 1}")
        if c != self.scheme.num_contexts:
            raise ValueError(f"{c} contexts per table set, but the scheme has {self.scheme}")
        if self.level_lut.min() < 0 or self.level_lut.max() >= self.scheme.num_levels:
            raise ValueError(f"level_lut values must be in 0..{self.scheme.num_levels - 1}")

    @classmethod
    def dense(cls, freqs: np.ndarray, level_lut: np.ndarray, prob_bits: int) -> EntropyTables:
        """Tables with one row per (quality, group, context): ``freqs int [Q, G, C, K]``
        (the first weights format, channel contexts only)."""
        if freqs.ndim != 4:
            raise ValueError("dense freqs must be [Q, G, C, K]")
        q, g, c, k = freqs.shape
        index = np.arange(q * g * c, dtype=np.int64).reshape(q, g, c)
        return cls(freqs.reshape(-1, k), index, level_lut, prob_bits, ContextScheme(c))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(Q, G, C, K)``."""
        q, g, c = self.table_index.shape
        return q, g, c, self.freqs.shape[1]

    def rows(self, level: int) -> np.ndarray:
        """``int [G, C, K]`` frequencies at level index ``level`` (0-based)."""
        return self.freqs[self.table_index[level]]

    @cached_property
    def row_lengths(self) -> np.ndarray:
        """``float64 [T, K]``: ideal code length in bits of each symbol of each shared row
        (``prob_bits - log2(freq)``; :data:`CODER_PRECISION` bits for a zero frequency)."""
        freqs = self.freqs.astype(np.float64)
        with np.errstate(divide="ignore"):
            lengths = self.prob_bits - np.log2(freqs)
        return np.where(freqs > 0, lengths, float(CODER_PRECISION))

    def code_lengths(self, level: int) -> np.ndarray:
        """``float64 [G, C, K]``: ideal code length in bits of each index at level index
        ``level`` (0-based)."""
        return self.row_lengths[self.table_index[level]]

    def contexts(self, idx: np.ndarray) -> np.ndarray:
        """``int [G, h, w]`` indices -> ``int64 [G, h, w]`` contexts."""
        levels = np.take_along_axis(self.level_lut, idx.reshape(idx.shape[0], -1), axis=1)
        return self.scheme.contexts(levels.reshape(idx.shape))

    def ideal_bits(self, idx: np.ndarray, level: int) -> float:
        """Information content in bits of ``idx [G, h, w]`` under the tables of level index
        ``level`` (ideal size)."""
        ctx = self.contexts(idx)
        lengths = self.code_lengths(level)
        g = np.arange(idx.shape[0])[:, None, None]
        return float(lengths[g, ctx, idx].sum())

    @cached_property
    def _row_models(self) -> list[Any]:
        """One constriction ``Categorical`` per row of :attr:`freqs` (built once)."""
        import constriction

        categorical = constriction.stream.model.Categorical
        rows = self.freqs.astype(np.float64) / float(2**self.prob_bits)
        return [categorical(r, perfect=False) for r in rows]

    def models(self, level: int) -> list[list[Any]]:
        """``[G][C]`` constriction models of level index ``level`` (made once per level: 10 ms
        for the default model, paid per tile otherwise)."""
        cache = self._models_of
        if level not in cache:
            row_models = self._row_models
            index = self.table_index[level].tolist()
            cache[level] = [[row_models[t] for t in group] for group in index]
        return cache[level]

    @cached_property
    def _models_of(self) -> dict[int, list[list[Any]]]:
        """Quality index -> its ``[G][C]`` models (:meth:`models`)."""
        return {}

    def between(self, level: int, weight: int, scale: int) -> EntropyTables:
        """The tables of a fine quality between level indices ``level`` and ``level + 1``.

        Each (group, context) is coded with :func:`mix_rows` of its rows at ``level`` and
        ``level + 1``, with ``weight / scale`` on ``level + 1``. Rows are mixed once per
        distinct pair of rows (14k pairs of 256 symbols for the default model: milliseconds).

        Args:
            level: the lower level index, ``0..Q-2``.
            weight: ``1..scale-1``, the share of level index ``level + 1``.
            scale: the denominator of ``weight`` (``aecodec.container.QUALITY_STEPS``).

        Returns:
            Tables with one quality (index 0) and the same contexts and level_lut.
        """
        num_q = self.table_index.shape[0]
        if not 0 <= level < num_q - 1 or not 0 < weight < scale:
            raise ValueError(
                f"no quality between level indices {level} and {level + 1} at {weight}/{scale}"
            )
        _, g, c = self.table_index.shape
        low, high = self.table_index[level], self.table_index[level + 1]
        pairs = np.stack([low.reshape(-1), high.reshape(-1)])
        unique, inverse = np.unique(pairs, axis=1, return_inverse=True)
        rows = mix_rows(self.freqs[unique[0]], self.freqs[unique[1]], weight, scale, self.prob_bits)
        rows = rows.astype(np.int32)  # entries <= 2**16: half the memory of int64
        index = inverse.reshape(1, g, c).astype(np.int64)
        return EntropyTables(rows, index, self.level_lut, self.prob_bits, self.scheme)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_row_models", None)  # constriction models are rebuilt on demand
        state.pop("_models_of", None)
        state.pop("row_lengths", None)
        return state


def mix_rows(
    low: np.ndarray, high: np.ndarray, weight: int, scale: int, prob_bits: int
) -> np.ndarray:
    """Integer mix of frequency rows: ``weight / scale`` of ``high``, the rest of ``low``.

    ``m = floor(((scale - weight) * low + weight * high) / scale)``, then the shortfall
    ``2**prob_bits - sum(m)`` (``0..K-1``) is added to the first largest entry of each row. Every
    entry stays >= 0 (>= 1 where both inputs' are) and every row sums to ``2**prob_bits``; all
    integer arithmetic, so encoder and decoder derive the same rows everywhere.

    Args:
        low, high: ``int [..., K]`` rows, each entry >= 0, each row summing to ``2**prob_bits``.
        weight: ``0..scale``.
        scale: positive.
        prob_bits: the rows' precision.

    Returns:
        ``int64 [..., K]``.
    """
    mixed = ((scale - weight) * low.astype(np.int64) + weight * high.astype(np.int64)) // scale
    short = 2**prob_bits - mixed.sum(-1, keepdims=True)
    top = mixed.argmax(-1)[..., None]  # the first largest entry
    np.put_along_axis(mixed, top, np.take_along_axis(mixed, top, -1) + short, -1)
    return mixed


def tables_from_logits(logits: np.ndarray, prob_bits: int) -> np.ndarray:
    """Quantize logits ``[..., K]`` to integer frequencies (export time only).

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


def encode_indices(idx: np.ndarray, tables: EntropyTables, level: int) -> bytes:
    """ANS-encode ``idx`` (``int [G, h, w]``) with the tables of level index ``level``
    (0-based: quality 1 is level 0; a fine quality codes with :meth:`EntropyTables.between`'s
    one-level tables, level 0).

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
    models = tables.models(level)
    # Every coding run of every group at once: one stable sort by (group, context) keeps the
    # raster order within a run; the runs are then encoded last first (ANS is a stack).
    key = (np.arange(g_count)[:, None] * c_count + ctx.reshape(g_count, -1)).reshape(-1)
    order = np.argsort(key, kind="stable")
    ranked = key[order]
    symbols = idx.reshape(-1)[order].astype(np.int32)
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    bounds = [*starts.tolist(), ranked.size]
    coder = constriction.stream.stack.AnsCoder()
    for run in reversed(range(len(starts))):
        g, c = divmod(int(ranked[bounds[run]]), c_count)
        coder.encode_reverse(symbols[bounds[run] : bounds[run + 1]], models[g][c])
    return coder.get_compressed().astype("<u4").tobytes()


def decode_indices(
    data: bytes | memoryview, tables: EntropyTables, level: int, height: int, width: int
) -> np.ndarray:
    """Inverse of :func:`encode_indices`: returns ``int64 [G, height, width]``.

    Raises:
        FormatError: the payload is malformed or does not decode to exactly this many indices.
    """
    return decode_tiles([data], tables, level, height, width)[0]


def decode_tiles(
    payloads: Sequence[bytes | memoryview],
    tables: EntropyTables,
    level: int,
    height: int,
    width: int,
) -> np.ndarray:
    """Decode tiles of the same size together: ``int64 [T, G, height, width]``, tile t being
    ``decode_indices(payloads[t], ...)``.

    Group by group, the contexts come from the groups already decoded (the values
    :meth:`ContextScheme.contexts` gives the encoder, computed incrementally: the previous
    group's levels in a zero-bordered buffer, the 3x3 maximum as two separable ones, activity
    buckets by table lookup) for all the tiles at once, so a group costs a few dozen numpy
    operations whatever the number of tiles, plus one ``decode`` per coding run of each tile.
    Many small tiles then cost little more than one tile of their total area.

    Raises:
        FormatError: a payload is malformed or does not decode to exactly this many indices.
    """
    import constriction

    for data in payloads:
        if len(data) % 4:
            raise FormatError(f"tile payload length {len(data)} is not a multiple of 4")
    n_tiles, area = len(payloads), height * width
    _, g_count, _, _ = tables.shape
    scheme = tables.scheme
    models = tables.models(level)
    level_lut = tables.level_lut.astype(np.int64)
    out = np.zeros((g_count, n_tiles, area), dtype=np.int64)
    # Activity count -> bucket, for every count a tile can reach (0..G-1).
    edges = np.asarray(scheme.activity_edges, dtype=np.int64)
    bucket_of = np.searchsorted(edges, np.arange(g_count + 1), side="right")
    activity = np.zeros((n_tiles, area), dtype=np.int64)
    prev = np.zeros((n_tiles, height + 2, width + 2), dtype=np.int64)  # group g-1's levels
    own = np.zeros_like(prev)  # group g's anchor levels (spatial contexts)
    if scheme.spatial:
        anchors = anchor_mask(height, width).reshape(-1)
        passes = [np.flatnonzero(anchors), np.flatnonzero(~anchors)]
    else:
        passes = [np.arange(area)]
    try:
        coders = [
            constriction.stream.stack.AnsCoder(np.frombuffer(d, dtype="<u4").astype(np.uint32))
            for d in payloads
        ]
        for g in range(g_count):
            base = bucket_of[activity]
            if g > 0:
                rows = np.maximum(np.maximum(prev[:, :, :-2], prev[:, :, 1:-1]), prev[:, :, 2:])
                chan = np.maximum(np.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
                base += chan.reshape(n_tiles, area) * scheme.buckets
            flat = out[g]
            _decode_positions(coders, models[g], flat, base[:, passes[0]], passes[0])
            if scheme.spatial:
                own[:, 1:-1, 1:-1] = level_lut[g][flat].reshape(n_tiles, height, width)
                near = own[:, :-2, 1:-1] + own[:, 2:, 1:-1] + own[:, 1:-1, :-2] + own[:, 1:-1, 2:]
                s = np.minimum(near.reshape(n_tiles, area)[:, passes[1]], scheme.spatial - 1)
                ctx = scheme.base_contexts + base[:, passes[1]] * scheme.spatial + s
                _decode_positions(coders, models[g], flat, ctx, passes[1])
            lv = level_lut[g][flat]
            prev[:, 1:-1, 1:-1] = lv.reshape(n_tiles, height, width)
            activity += lv > 0
        empty = all(coder.is_empty() for coder in coders)
    except FormatError:
        raise
    except Exception as exc:  # constriction raises ValueError/AssertionError on bad input
        raise FormatError(f"tile payload does not decode: {exc}") from exc
    if not empty:
        raise FormatError("tile payload has data left over after decoding: the file is corrupt")
    return out.reshape(g_count, n_tiles, height, width).transpose(1, 0, 2, 3)


def _decode_positions(
    coders: list[Any], models: list[Any], flat: np.ndarray, ctx: np.ndarray, positions: np.ndarray
) -> None:
    """Decode, for each tile t, the symbols at ``positions`` (raster order) whose contexts are
    ``ctx[t]`` into ``flat[t]`` (``flat [T, h*w]``, ``ctx [T, n]``): context by context
    ascending, raster order within a context, one ``decode`` per run."""
    n_tiles, n = ctx.shape
    if n == 0:
        return
    order = np.argsort(ctx, axis=1, kind="stable")
    ranked = np.take_along_axis(ctx, order, axis=1).reshape(-1)
    new_run = np.ones(ranked.size, dtype=bool)
    new_run[1:] = ranked[1:] != ranked[:-1]
    new_run[::n] = True  # each tile starts a run
    starts = np.flatnonzero(new_run)
    bounds = [*starts.tolist(), ranked.size]
    decoded = [
        coders[start // n].decode(models[c], end - start)
        for c, start, end in zip(ranked[starts].tolist(), bounds[:-1], bounds[1:], strict=True)
    ]
    cols = positions[order]
    flat[np.arange(n_tiles)[:, None], cols] = np.concatenate(decoded).reshape(n_tiles, n)
