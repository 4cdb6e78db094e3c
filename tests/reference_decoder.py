"""An independent decoder of one tile payload's VQ indices, written from docs/FORMAT.md.

This is a test oracle, not the product: it imports neither ``aecodec.entropy`` nor
``constriction``, uses plain Python integers (one loop iteration per symbol) and follows
the sections "Tile payload" and "Decoding the indices of a tile, step by step" of
``docs/FORMAT.md`` literally. If ``aecodec`` and this file ever disagree on a payload, one of
them no longer matches the spec.

    indices = decode_tile(payload, freqs, table_index, level_lut, prob_bits,
                          num_levels, spatial, activity_edges, q, height, width,
                          hundredths=0)

``q`` is the whole quality minus 1 and ``hundredths`` the fraction of a version-2 file's quality
(section "Quality" of the spec): between two levels each row is mixed by :func:`mixed_row`.

``indices`` is a list ``[G][height][width]`` of ints (``decode_tile_array`` returns numpy).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

PRECISION = 24
"""Bits of the coder's fixed-point probabilities (constriction's default preset)."""
WORD_BITS = 32
STATE_BITS = 64


class PayloadError(ValueError):
    """The payload is not a valid coding of the tile's indices."""


def coder_cdf(freq_row: Sequence[int], prob_bits: int) -> list[int]:
    """The coder's cumulative table of one frequency row (FORMAT.md, step 1).

    ``cdf[i] = floor(F_i * (2^24 - K) / 2^prob_bits) + i`` with ``F_i`` the sum of the
    frequencies before symbol i, and ``cdf[K] = 2^24``; symbol i owns ``cdf[i] .. cdf[i+1]-1``.
    """
    k = len(freq_row)
    if k < 2 or k >= 2**PRECISION - 1:
        raise ValueError(f"a row needs 2..{2**PRECISION - 2} symbols, got {k}")
    if any(f < 0 for f in freq_row) or sum(freq_row) != 2**prob_bits:
        raise ValueError("frequencies must be >= 0 and sum to 2**prob_bits")
    free = 2**PRECISION - k
    cdf = []
    before = 0
    for i, f in enumerate(freq_row):
        cdf.append(((before * free) >> prob_bits) + i)
        before += int(f)
    cdf.append(2**PRECISION)
    return cdf


class AnsDecoder:
    """The stack ANS decoder (FORMAT.md, steps 2, 4 and 5): 64-bit state, 32-bit words."""

    def __init__(self, payload: bytes) -> None:
        if len(payload) % 4:
            raise PayloadError(f"payload length {len(payload)} is not a multiple of 4")
        self.words = list(struct.unpack(f"<{len(payload) // 4}I", payload))
        self.state = 0
        if self.words:
            top = self.words.pop()  # the last word is the top of the stack
            if top == 0:
                raise PayloadError("the last word of a payload is never zero")
            self.state = top
            if self.words:
                self.state = (top << WORD_BITS) | self.words.pop()

    def decode(self, cdf: list[int]) -> int:
        """Pop one symbol coded with the cumulative table ``cdf`` (length K + 1)."""
        quantile = self.state & (2**PRECISION - 1)
        symbol = bisect_right(cdf, quantile) - 1  # cdf[symbol] <= quantile < cdf[symbol + 1]
        probability = cdf[symbol + 1] - cdf[symbol]
        self.state = (self.state >> PRECISION) * probability + (quantile - cdf[symbol])
        if self.state < 2 ** (STATE_BITS - WORD_BITS) and self.words:
            self.state = (self.state << WORD_BITS) | self.words.pop()
        return symbol

    def is_empty(self) -> bool:
        return self.state == 0


def mixed_row(
    low: Sequence[int], high: Sequence[int], hundredths: int, prob_bits: int
) -> list[int]:
    """The row of a quality ``hundredths / 100`` of the way from the row ``low`` to ``high``.

    ``m[k] = floor(((100 - hundredths) * low[k] + hundredths * high[k]) / 100)``, and the
    shortfall ``2^prob_bits - sum(m)`` is added to the first largest ``m[k]``.
    """
    pairs = zip(low, high, strict=True)
    m = [((100 - hundredths) * int(a) + hundredths * int(b)) // 100 for a, b in pairs]
    top = m.index(max(m))
    m[top] += 2**prob_bits - sum(m)
    return m


def decode_tile(
    payload: bytes,
    freqs: Sequence[Sequence[int]],
    table_index: Sequence[Sequence[Sequence[int]]],
    level_lut: Sequence[Sequence[int]],
    prob_bits: int,
    num_levels: int,
    spatial: int,
    activity_edges: Sequence[int],
    q: int,
    height: int,
    width: int,
    hundredths: int = 0,
) -> list[list[list[int]]]:
    """Decode the indices ``[G][height][width]`` of one tile payload.

    Args:
        payload: the tile payload (little-endian u32 words).
        freqs: ``[T][K]`` frequency rows; table_index: ``[Q][G][C]`` row numbers;
            level_lut: ``[G][K]`` codeword levels; prob_bits: rows sum to ``2**prob_bits``.
        num_levels, spatial, activity_edges: L, S and E of the model config.
        q: quality index (the file's whole quality minus 1).
        height, width: latent positions of the tile (``ceil(tile side / 16)``).
        hundredths: the fraction of a fine quality (version 2), ``1..99``; 0 for a level.

    Raises:
        PayloadError: the payload is malformed or has data left over.
    """
    groups = len(level_lut)
    buckets = len(activity_edges) + 1
    base_contexts = num_levels * buckets
    rows = _Rows(freqs, table_index, prob_bits, q, hundredths)
    out = [[[0] * width for _ in range(height)] for _ in range(groups)]
    levels = [[[0] * width for _ in range(height)] for _ in range(groups)]
    active = [[0] * width for _ in range(height)]  # earlier groups with a level > 0
    coder = AnsDecoder(payload)

    def level(g: int, i: int, j: int) -> int:
        return levels[g][i][j] if 0 <= i < height and 0 <= j < width else 0

    for g in range(groups):
        base = [[0] * width for _ in range(height)]
        for i in range(height):
            for j in range(width):
                a = 0
                if g > 0:
                    around = [level(g - 1, i + y, j + x) for y in (-1, 0, 1) for x in (-1, 0, 1)]
                    a = min(num_levels - 1, max(around))
                b = sum(1 for e in activity_edges if e <= active[i][j])
                base[i][j] = a * buckets + b
        # Anchors (every position when S = 0) with their base contexts, then the others.
        first = [
            (base[i][j], i * width + j)
            for i in range(height)
            for j in range(width)
            if spatial == 0 or (i + j) % 2 == 0
        ]
        _decode_positions(coder, sorted(first), g, rows, out)
        for i, j in ((p // width, p % width) for _, p in first):
            levels[g][i][j] = level_lut[g][out[g][i][j]]
        if spatial:
            second = []
            for i in range(height):
                for j in range(width):
                    if (i + j) % 2:
                        near = level(g, i - 1, j) + level(g, i + 1, j)
                        near += level(g, i, j - 1) + level(g, i, j + 1)
                        ctx = base_contexts + base[i][j] * spatial + min(spatial - 1, near)
                        second.append((ctx, i * width + j))
            _decode_positions(coder, sorted(second), g, rows, out)
            for i, j in ((p // width, p % width) for _, p in second):
                levels[g][i][j] = level_lut[g][out[g][i][j]]
        for i in range(height):
            for j in range(width):
                active[i][j] += levels[g][i][j] > 0
    if not coder.is_empty():
        raise PayloadError("data left over after the last index")
    return out


class _Rows:
    """The coder table of (group, context) at the file's quality (mixed rows between levels)."""

    def __init__(
        self,
        freqs: Sequence[Sequence[int]],
        table_index: Sequence[Sequence[Sequence[int]]],
        prob_bits: int,
        q: int,
        hundredths: int,
    ) -> None:
        self.freqs, self.table_index, self.prob_bits = freqs, table_index, prob_bits
        self.q, self.hundredths = q, hundredths
        self.cdfs: dict[tuple[int, int], list[int]] = {}

    def cdf(self, g: int, ctx: int) -> list[int]:
        low = int(self.table_index[self.q][g][ctx])
        high = int(self.table_index[self.q + 1][g][ctx]) if self.hundredths else low
        if (low, high) not in self.cdfs:
            row = [int(f) for f in self.freqs[low]]
            if self.hundredths:
                row = mixed_row(row, self.freqs[high], self.hundredths, self.prob_bits)
            self.cdfs[low, high] = coder_cdf(row, self.prob_bits)
        return self.cdfs[low, high]


def _decode_positions(
    coder: AnsDecoder,
    order: list[tuple[int, int]],
    g: int,
    rows: _Rows,
    out: list[list[list[int]]],
) -> None:
    """Decode the positions ``(context, raster position)`` in this (sorted) order."""
    width = len(out[g][0])
    for ctx, p in order:
        out[g][p // width][p % width] = coder.decode(rows.cdf(g, ctx))


def decode_tile_array(
    payload: bytes,
    freqs: np.ndarray,
    table_index: np.ndarray,
    level_lut: np.ndarray,
    prob_bits: int,
    num_levels: int,
    spatial: int,
    activity_edges: Sequence[int],
    q: int,
    height: int,
    width: int,
    hundredths: int = 0,
) -> np.ndarray:
    """:func:`decode_tile` on numpy tables; returns ``int64 [G, height, width]``."""
    out = decode_tile(
        payload,
        freqs.tolist(),
        table_index.tolist(),
        level_lut.tolist(),
        prob_bits,
        num_levels,
        spatial,
        list(activity_edges),
        q,
        height,
        width,
        hundredths,
    )
    return np.asarray(out, dtype=np.int64).reshape(len(level_lut), height, width)
