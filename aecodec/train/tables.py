"""Fit the integer entropy tables of a trained model on training images (export time).

The training loop learns one logit row per (quality, group, context). For coding, the tables
are refitted by counting: encode training images with the model's entropy-constrained
assignment, count each index under its coding context
(:meth:`aecodec.entropy.ContextScheme.contexts`), and cluster the count rows into T shared
rows (weighted k-means on code length: each (quality, group, context) takes the shared row
under which its counts cost the fewest bits).
Sharing rows keeps the weights small however many contexts there are, and on held-out images
it codes *better* than one row per context (measured: 0.1-0.7 % fewer bits with 512-2,048 rows;
many contexts see few samples, and a shared row smooths them). The assignment depends on the
tables, so counting and clustering alternate for a few rounds.

Kodak is never used here: the images come from the training folder's training split.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from aecodec.container import TILE_ALIGN
from aecodec.entropy import ContextScheme, EntropyTables, tables_from_logits
from aecodec.model.vqvae import VQVAE

log = logging.getLogger("aecodec.train")

# Pseudo-count added to every symbol of a shared row before it becomes integer frequencies.
ROW_PRIOR = 0.02


@torch.no_grad()
def count_indices(
    net: VQVAE,
    images: Sequence[np.ndarray],
    code_lengths: torch.Tensor,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Counts ``float64 [Q, G, C, K]`` of each index under its coding context.

    Args:
        net: the model (eval mode is set here).
        images: ``uint8 [H, W, 3]`` images, H and W multiples of 16.
        code_lengths: ``[Q, G, C, K]`` bits the entropy-constrained assignment charges.
        progress: called with 1 after each image.
    """
    net.eval()
    vq = net.quantizer
    lut = vq.level_lut()
    q_count, g_count, c_count, k = code_lengths.shape
    counts = torch.zeros(q_count, g_count, c_count * k, dtype=torch.float64)
    for img in images:
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
        y = net.g_a(x)
        for q in range(q_count):
            gain, _ = net.gains(torch.tensor([q]))
            idx = vq.assign(y * gain, code_lengths[q][None], lut)
            ctx = vq.contexts(idx, lut)
            flat = (ctx * k + idx)[0].reshape(g_count, -1)
            counts[q].scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
        if progress is not None:
            progress(1)
    return counts.reshape(q_count, g_count, c_count, k).numpy()


def cluster_rows(
    counts: np.ndarray, num_tables: int, iterations: int = 15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means of count rows on code length.

    Args:
        counts: ``float64 [N, K]`` counts (rows may be empty).
        num_tables: T, the number of shared rows.

    Returns:
        ``(probs float64 [T', K], assign int64 [N])`` with T' <= T (empty clusters dropped).
    """
    n = counts.shape[0]
    total = counts.sum(1)
    # Empty rows get the shape of all counts, so they join a broad row rather than a random one.
    prior = counts.sum(0) / max(1.0, counts.sum())
    rows = counts + 1e-3 * prior
    rows32 = rows.astype(np.float32)
    rng = np.random.default_rng(seed)
    t = min(num_tables, n)
    weight = (total + 1.0) / (total + 1.0).sum()
    start = rng.choice(n, t, replace=False, p=weight)
    probs = rows[start] + ROW_PRIOR
    probs /= probs.sum(1, keepdims=True)
    assign = np.zeros(n, dtype=np.int64)
    for _ in range(iterations):
        # [N, T] bits of each row under each table (float32: only the argmin is used)
        cost = rows32 @ (-np.log2(probs)).astype(np.float32).T
        new_assign = cost.argmin(1)
        if (new_assign == assign).all() and _ > 0:
            break
        assign = new_assign
        acc = np.zeros_like(probs)
        np.add.at(acc, assign, rows)
        used = acc.sum(1) > 0
        acc[used] += ROW_PRIOR
        probs[used] = acc[used] / acc[used].sum(1, keepdims=True)
    used_ids = np.unique(assign)
    remap = np.full(t, -1, dtype=np.int64)
    remap[used_ids] = np.arange(used_ids.size)
    return probs[used_ids], remap[assign]


def tables_from_counts(
    counts: np.ndarray,
    level_lut: np.ndarray,
    prob_bits: int,
    scheme: ContextScheme,
    num_tables: int,
) -> EntropyTables:
    """Integer tables from counts ``[Q, G, C, K]``: T shared rows (see :func:`cluster_rows`)."""
    q, g, c, k = counts.shape
    probs, assign = cluster_rows(counts.reshape(-1, k), num_tables)
    freqs = tables_from_logits(np.log(probs), prob_bits).astype(np.int64)
    return EntropyTables(freqs, assign.reshape(q, g, c), level_lut, prob_bits, scheme)


def fit_tables(
    net: VQVAE,
    images: Sequence[np.ndarray],
    num_tables: int = 1024,
    rounds: int = 2,
    progress: Callable[[int], None] | None = None,
) -> EntropyTables:
    """Fit shared integer tables for ``net`` (its config's contexts) on ``images``.

    Round 1 assigns indices with the code lengths of the learned logits, later rounds with the
    tables of the round before.

    Args:
        net: the model.
        images: ``uint8 [H, W, 3]`` training images, sides multiples of 16.
        num_tables: T, shared rows.
        rounds: count-and-cluster rounds.
        progress: called with 1 after each image of each round.
    """
    cfg = net.config
    lut = net.quantizer.level_lut().numpy()
    all_q = torch.arange(cfg.num_qualities)
    lengths = -net.quantizer.log2_probs(all_q).detach()
    tables = None
    for r in range(rounds):
        counts = count_indices(net, images, lengths, progress)
        tables = tables_from_counts(counts, lut, cfg.prob_bits, cfg.context_scheme(), num_tables)
        ideal = sum(
            float((counts[q] * tables.code_lengths(q)).sum()) for q in range(cfg.num_qualities)
        )
        log.info(
            "tables round %d: %d rows, %.0f bits on the fitting images",
            r + 1,
            tables.freqs.shape[0],
            ideal,
        )
        lengths = torch.from_numpy(
            np.stack([tables.code_lengths(q) for q in range(cfg.num_qualities)])
        ).float()
    if tables is None:
        raise ValueError("rounds must be >= 1")
    return tables


def fitting_images(folder: str, num_val: int, max_side: int = 512) -> list[np.ndarray]:
    """The training split of ``folder`` (as :func:`aecodec.train.data.split_files` makes it),
    each image centre-cropped to at most ``max_side`` and to multiples of 16."""
    from aecodec.train.data import list_images, load_rgb, split_files

    train, _ = split_files(list_images(folder), num_val)
    out = []
    for p in train:
        img = load_rgb(p, TILE_ALIGN)
        h = min(max_side, img.shape[0] // TILE_ALIGN * TILE_ALIGN)
        w = min(max_side, img.shape[1] // TILE_ALIGN * TILE_ALIGN)
        y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        out.append(np.ascontiguousarray(img[y0 : y0 + h, x0 : x0 + w]))
    return out


def expand_logits(logits: torch.Tensor, old: ContextScheme, new: ContextScheme) -> torch.Tensor:
    """Logits ``[Q, G, C_old, K]`` of a run trained with channel contexts only (``old``) ->
    ``[Q, G, C_new, K]`` for the scheme ``new``: each new context starts from the row of its
    channel context."""
    if old != ContextScheme(old.num_levels) or new.num_levels != old.num_levels:
        raise ValueError(f"cannot re-map the contexts of {old} to {new}")
    parent = []
    for c in range(new.num_contexts):
        base = c if c < new.base_contexts else (c - new.base_contexts) // new.spatial
        parent.append(base // new.buckets)
    return logits[:, :, parent].clone()


# Symbols whose estimated probability in a shared row is below this get frequency 0 (coded at
# 24 bits, :data:`aecodec.entropy.CODER_PRECISION`, if they ever occur). Moving one unit of
# a 16-bit row's mass to its dominant symbol saves about 2**-16 / ln 2 = 2.2e-5 bits per coded
# symbol, and zeroing a symbol of probability p costs about 8 p bits (16 -> 24 bits): break-even
# near p = 2.8e-6. A third of that leaves room for rows estimated on few images.
ZERO_BELOW = 1e-6


def shared_row_counts(tables: EntropyTables, counts: np.ndarray) -> np.ndarray:
    """Counts ``[Q, G, C, K]`` (:func:`count_indices`) summed into the shared rows they are
    coded with: ``float64 [T, K]``."""
    rows = np.zeros(tables.freqs.shape, dtype=np.float64)
    k = tables.freqs.shape[1]
    np.add.at(rows, tables.table_index.reshape(-1), counts.reshape(-1, k))
    return rows


def zero_rare_symbols(
    tables: EntropyTables, row_counts: np.ndarray, zero_below: float = ZERO_BELOW
) -> EntropyTables:
    """``tables`` with the symbols each shared row is not expected to see set to frequency 0.

    A symbol is rare in row t when ``(n_ti + ROW_PRIOR) / (N_t + K * ROW_PRIOR) < zero_below``
    (``n_ti`` its count, ``N_t`` the row's). Its frequency moves to the row's largest entry,
    which is capped at ``2**prob_bits - 1`` (the weights file stores ``uint16``; what is left
    over goes to the row's most counted other symbol). A row with few counts keeps every
    symbol (the prior dominates), so only well-measured rows change.

    Args:
        tables: integer tables (every entry >= 0).
        row_counts: ``float64 [T, K]`` counts per shared row (:func:`shared_row_counts`).
        zero_below: the probability threshold (0: no change).

    Returns:
        New tables with the same ``table_index``, ``level_lut`` and scheme.
    """
    freqs = tables.freqs.astype(np.int64).copy()
    t, k = freqs.shape
    if row_counts.shape != (t, k):
        raise ValueError(f"row counts {row_counts.shape} do not match the tables' rows {(t, k)}")
    probs = (row_counts + ROW_PRIOR) / (row_counts.sum(1, keepdims=True) + k * ROW_PRIOR)
    rows = np.arange(t)
    top = freqs.argmax(1)
    rare = probs < zero_below
    rare[rows, top] = False
    freed = np.where(rare, freqs, 0).sum(1)
    freqs[rare] = 0
    freqs[rows, top] += freed
    cap = 2**tables.prob_bits - 1
    over = np.maximum(freqs[rows, top] - cap, 0)
    if over.any():
        ranked = np.where(np.arange(k)[None, :] == top[:, None], -1.0, row_counts)
        second = ranked.argmax(1)
        freqs[rows, top] -= over
        freqs[rows, second] += over
    return EntropyTables(
        freqs, tables.table_index, tables.level_lut, tables.prob_bits, tables.scheme
    )
