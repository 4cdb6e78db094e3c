"""Entropy-constrained product vector quantizer with context-selected probability tables.

The latent ``y`` (``[B, M, h, w]``) is split into G = M / d channel groups of d dimensions.
Each group has its own codebook of K codewords and, per quality level and context, a learned
categorical distribution over the K indices. The encoder picks, per position and group,

    k* = argmin_k  ||y_g - c_{g,k}||^2 + beta * (-log2 p(k | q, g, ctx))

(entropy-constrained VQ, Chou, Lookabaugh & Gray 1989; NVTC, Feng et al. CVPR 2023). The
context ``ctx`` is an integer computed from already-decoded indices only
(:class:`aecodec.entropy.ContextScheme`): the largest codeword level of group g - 1 around the
position, the count of earlier groups with a nonzero level there (activity buckets), and, on
the second pass of a checkerboard, the levels of the four neighbours in the same group. So the
decoder selects the same table without any floating-point computation.

Training uses the straight-through estimator for the encoder, while the codewords receive the
distortion gradient directly (the decoder's input *is* the codeword).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from aecodec.entropy import ContextScheme
from aecodec.model.config import SCALAR_PASSES, SCALAR_WINDOW


def _contexts_torch(levels: torch.Tensor, scheme: ContextScheme) -> torch.Tensor:
    """Batched torch twin of :meth:`aecodec.entropy.ContextScheme.contexts`.

    ``long [B, G, h, w]`` levels -> ``long [B, G, h, w]`` contexts.
    """
    out = torch.zeros_like(levels)
    if levels.shape[1] > 1:
        m = F.max_pool2d(levels[:, :-1].float(), 3, stride=1, padding=1)
        # max_pool pads with -inf; levels are >= 0, so zero padding gives the same maximum.
        out[:, 1:] = m.long().clamp_max(scheme.num_levels - 1)
    if scheme.activity_edges:
        active = (levels > 0).long()
        count = active.cumsum(1) - active
        edges = torch.tensor(scheme.activity_edges, dtype=torch.long, device=levels.device)
        out = out * scheme.buckets + torch.bucketize(count, edges, right=True)
    spatial = scheme.spatial
    if spatial == 0:
        return out
    b, g, h, w = levels.shape
    plus = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], device=levels.device)
    s = F.conv2d(levels.reshape(b * g, 1, h, w).float(), plus.view(1, 1, 3, 3), padding=1)
    s = s.reshape(b, g, h, w).round().long().clamp_max(spatial - 1)
    ii = torch.arange(h, device=levels.device).view(-1, 1)
    jj = torch.arange(w, device=levels.device).view(1, -1)
    anchors = (ii + jj) % 2 == 0
    return torch.where(anchors, out, scheme.base_contexts + out * spatial + s)


# Temperature of the soft assignment used for the rate gradient, in squared latent units
# (the initial codebook is the unit lattice).
SOFT_TEMP = 0.5


class ProductVQ(nn.Module):
    """Product (grouped) VQ with entropy-constrained assignment and context tables.

    Args:
        num_groups: G.
        group_dim: d.
        codebook_size: K.
        num_qualities: Q (one set of probability tables per quality level).
        num_levels: L, codeword levels ``0..L-1`` (the channel contexts).
        rate_weight: beta of the assignment cost, squared latent units per bit.
        scheme: how contexts are formed (default: L channel contexts only); the tables have
            ``scheme.num_contexts`` contexts (see :mod:`aecodec.entropy`).
        learn_tables: hold the learned logits (training); False for a coding-only model.
        table_rows: T > 0 trains with *count tables* instead of logits: T shared rows of
            decayed symbol counts (buffer ``row_counts [T, K]``) selected by
            ``table_index long [Q, G, C]``, the structure of the exported integer tables
            (:mod:`aecodec.train.tables`). Each training step adds the batch's indices to
            their rows after multiplying every count by :attr:`row_decay`, so the code lengths
            follow the latents as the transforms learn; no gradient reaches the tables.
            Scales to many contexts, where logits ``[Q, G, C, K]`` would not (126 M for 240).

    Shapes:
        ``y``: ``[B, G*d, h, w]``, ``q``: ``long [B]``; indices: ``long [B, G, h, w]``.
    """

    row_counts: torch.Tensor  # buffers of the count tables (table_rows > 0)
    table_index: torch.Tensor

    def __init__(
        self,
        num_groups: int,
        group_dim: int,
        codebook_size: int,
        num_qualities: int,
        num_levels: int,
        rate_weight: float,
        scheme: ContextScheme | None = None,
        learn_tables: bool = True,
        table_rows: int = 0,
    ) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.group_dim = group_dim
        self.codebook_size = codebook_size
        self.num_levels = num_levels
        self.rate_weight = rate_weight
        self.scheme = scheme if scheme is not None else ContextScheme(num_levels)
        if self.scheme.num_levels != num_levels:
            raise ValueError("the context scheme's levels must equal num_levels")
        total_contexts = self.scheme.num_contexts
        self.codebook = nn.Parameter(_grid_codebook(num_groups, group_dim, codebook_size))
        energy = self.codebook.detach().pow(2).sum(-1)  # [G, K]
        logits = (-0.5 * energy).unsqueeze(0).unsqueeze(2)
        shape = (num_qualities, num_groups, total_contexts, codebook_size)
        # The coding path never reads the logits (it codes with the integer tables): without
        # learn_tables they stay empty (293 MB saved for 140 contexts).
        self.logits = nn.Parameter(
            logits.expand(*shape).clone() if learn_tables and not table_rows else torch.empty(0)
        )
        self.table_shape = shape
        self.row_decay = 1.0
        self.row_updates = 0
        self._mean_cache: tuple[int, torch.Tensor] | None = None
        if table_rows and group_dim != 1:
            raise ValueError("count tables (table_rows > 0) need 1-D codebooks")
        if table_rows:
            counts = torch.softmax(logits[0, :, 0], -1).mean(0).expand(table_rows, -1).clone()
            self.register_buffer("row_counts", counts)
            self.register_buffer("table_index", torch.zeros(shape[:3], dtype=torch.long))
        self.count_tables = bool(table_rows)

    # ----------------------------------------------------------------- shared helpers
    def level_lut(self) -> torch.Tensor:
        """``long [G, K]``: level of each codeword, ``min(L-1, round(||c||))``.

        Frozen into the weights file at export, so the decoder reads it as integers.
        """
        norm = self.codebook.detach().norm(dim=-1)
        return norm.round().long().clamp(0, self.num_levels - 1)

    def _split(self, y: torch.Tensor) -> torch.Tensor:
        b, _, h, w = y.shape
        return y.view(b, self.num_groups, self.group_dim, h, w).permute(0, 1, 3, 4, 2)

    def _merge(self, v: torch.Tensor) -> torch.Tensor:
        b, g, h, w, d = v.shape
        return v.permute(0, 1, 4, 2, 3).reshape(b, g * d, h, w)

    def _distances(
        self, yg: torch.Tensor, detach: bool = True, group_slice: slice | None = None
    ) -> torch.Tensor:
        """``[B, G', h, w, d] -> [B, G', h, w, K]`` squared distances to every codeword of
        the groups ``group_slice`` (all by default; the codebook detached when ``detach``)."""
        b, g, h, w, d = yg.shape
        flat = yg.reshape(b, g, h * w, d).transpose(0, 1)  # [G', B, hw, d]
        cb = self.codebook.detach() if detach else self.codebook
        if group_slice is not None:
            cb = cb[group_slice]
        dist = torch.cdist(flat, cb.unsqueeze(1), p=2.0)
        dist = dist.pow(2)  # [G, B, hw, K]
        return dist.transpose(0, 1).reshape(b, g, h, w, -1)

    def assign(
        self,
        y: torch.Tensor,
        bits: torch.Tensor,
        level_lut: torch.Tensor | None = None,
        dist: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Entropy-constrained assignment.

        Args:
            y: ``[B, G*d, h, w]`` latent (already multiplied by the quality gain).
            bits: ``[B, G, C, K]`` code length in bits of each index under each context.
            level_lut: ``long [G, K]``; defaults to :meth:`level_lut`.
            dist: precomputed ``[B, G, h, w, K]`` squared distances (optional).

        Returns:
            ``long [B, G, h, w]`` indices. Two passes (1-D codebooks: :data:`SCALAR_PASSES`):
            the first assigns with the context-averaged code lengths, each later one with the
            contexts implied by the pass before.
        """
        lut = self.level_lut() if level_lut is None else level_lut
        beta = self.rate_weight
        if dist is None and self.window_search_is_exact():
            cand = self._scalar_candidates(y)
            return self._assign_scalar(self._scalar_distances(y, cand).detach(), cand, bits, lut)
        mean_bits = bits.mean(dim=2)  # [B, G, K]
        if dist is not None:
            idx = (dist + beta * mean_bits[:, :, None, None, :]).argmin(-1)
            ctx = self.contexts(idx, lut)
            return (dist + beta * _gather_ctx_bits(bits, ctx)).argmin(-1)
        # Coding path: the same two passes, a few groups at a time so the [.., K] cost
        # tensors stay small (cache-friendly, bounded memory on large tiles).
        yg = self._split(y)
        per_group = yg.shape[0] * yg.shape[2] * yg.shape[3] * self.codebook_size
        chunk = max(1, (1 << 22) // per_group)
        groups = range(0, self.num_groups, chunk)
        idx = torch.cat(
            [
                (
                    self._distances(yg[:, s : s + chunk], group_slice=slice(s, s + chunk))
                    + beta * mean_bits[:, s : s + chunk, None, None, :]
                ).argmin(-1)
                for s in groups
            ],
            dim=1,
        )
        ctx = self.contexts(idx, lut)
        return torch.cat(
            [
                (
                    self._distances(yg[:, s : s + chunk], group_slice=slice(s, s + chunk))
                    + beta * _gather_ctx_bits(bits[:, s : s + chunk], ctx[:, s : s + chunk])
                ).argmin(-1)
                for s in groups
            ],
            dim=1,
        )

    def contexts(self, idx: torch.Tensor, level_lut: torch.Tensor) -> torch.Tensor:
        """``long [B, G, h, w]`` indices -> ``long [B, G, h, w]`` contexts."""
        g = torch.arange(self.num_groups, device=idx.device).view(1, -1, 1, 1)
        levels = level_lut[g, idx]
        return _contexts_torch(levels, self.scheme)

    def dequantize(self, idx: torch.Tensor) -> torch.Tensor:
        """``long [B, G, h, w]`` -> ``[B, G*d, h, w]`` codewords."""
        g = torch.arange(self.num_groups, device=idx.device).view(1, -1, 1, 1)
        return self._merge(self.codebook[g, idx])

    def log2_probs(self, q: torch.Tensor) -> torch.Tensor:
        """``long [B]`` quality -> ``[B, G, C, K]`` log2 probabilities (of the logits, or of
        the count tables' rows)."""
        if self.count_tables:
            return -self.row_bits()[self.table_index[q]]
        return F.log_softmax(self.logits[q], dim=-1) / math.log(2.0)

    # ----------------------------------------------------------------- count tables
    def row_bits(self) -> torch.Tensor:
        """``[T, K]`` code lengths in bits of the count tables' rows."""
        counts = self.row_counts + ROW_PSEUDO_COUNT
        return torch.log2(counts.sum(1, keepdim=True)) - torch.log2(counts)

    def _mean_bits_rows(self, q: torch.Tensor, row_bits: torch.Tensor) -> torch.Tensor:
        """``[B, G, K]`` context-averaged code lengths of the count tables (recomputed every
        :data:`MEAN_BITS_EVERY` updates: only the first assignment pass uses them)."""
        version = self.row_updates // MEAN_BITS_EVERY
        if self._mean_cache is None or self._mean_cache[0] != version:
            means = torch.stack(
                [row_bits[self.table_index[i]].mean(1) for i in range(self.table_shape[0])]
            )
            self._mean_cache = (version, means)
        return self._mean_cache[1][q]

    @torch.no_grad()
    def _count(self, q: torch.Tensor, ctx: torch.Tensor, idx: torch.Tensor) -> None:
        """Decay the row counts and add the indices ``idx`` coded under ``ctx`` at quality
        ``q`` (training only)."""
        rows = self._rows(q, ctx)
        k = self.codebook_size
        self.row_counts.mul_(self.row_decay)
        flat = (rows * k + idx).reshape(-1)
        self.row_counts.view(-1).index_add_(0, flat, torch.ones_like(flat, dtype=torch.float32))
        self.row_updates += 1

    def _rows(self, q: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """``long [B, G, h, w]`` shared row of each position of contexts ``ctx``."""
        g = torch.arange(self.num_groups, device=ctx.device).view(1, -1, 1, 1)
        return self.table_index[q.view(-1, 1, 1, 1), g, ctx]

    # ----------------------------------------------------------------- training forward
    def forward(
        self, y: torch.Tensor, q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize for training.

        Args:
            y: ``[B, G*d, h, w]`` gained latent.
            q: ``long [B]`` quality index of each sample.

        Returns:
            ``(y_hat, idx, bits, commit)``: ``y_hat [B, G*d, h, w]`` (codewords forward,
            straight-through gradient to ``y``), ``idx long [B, G, h, w]``, ``bits [B]`` the
            code length of each sample under the learned tables, ``commit [B]`` the summed
            squared distance ``||y - sg(c)||^2`` of each sample.
        """
        if self.group_dim == 1:
            return self._forward_scalar(y, q)
        log2p = self.log2_probs(q)
        lut = self.level_lut()
        dist = self._distances(self._split(y), detach=True)  # grad to y only
        with torch.no_grad():
            idx = self.assign(y.detach(), -log2p.detach(), lut, dist=dist.detach())
            ctx = self.contexts(idx, lut)
        c = self.dequantize(idx)
        y_hat = c + (y - y.detach())
        sel = _gather_ctx_bits(log2p, ctx)  # [B, G, h, w, K]
        hard = -sel.gather(-1, idx.unsqueeze(-1)).squeeze(-1).sum(dim=(1, 2, 3))
        # The hard code length has no gradient w.r.t. y; its soft-assignment expectation
        # (soft-to-hard VQ, Agustsson et al. 2017) gives the encoder the rate gradient.
        soft_assign = torch.softmax(-dist / SOFT_TEMP, -1)
        soft = -(soft_assign * sel.detach()).sum(dim=(1, 2, 3, 4))
        bits = hard + soft - soft.detach()
        commit = (y - c.detach()).pow(2).sum(dim=(1, 2, 3))
        return y_hat, idx, bits, commit

    # ------------------------------------------------------- one-dimensional codebooks
    def window_search_is_exact(self) -> bool:
        """True for 1-D codebooks whose codewords are still within ``SCALAR_WINDOW - 1`` of
        their initial integer-lattice positions ``k - K/2``: then the ``2W+1`` codewords around
        ``round(y) + K/2`` hold the nearest one and every codeword that could beat it in the
        entropy-constrained cost (one outside the window is more than ``W - 1`` farther, so it
        would have to save over ``(W - 1)^2 / rate_weight`` = 90 bits)."""
        if self.group_dim != 1:
            return False
        lattice = torch.arange(self.codebook_size, dtype=torch.float32, device=self.codebook.device)
        lattice -= self.codebook_size // 2
        drift = (self.codebook.detach()[:, :, 0] - lattice).abs().max()
        return bool(drift < SCALAR_WINDOW - 1)

    def _scalar_candidates(self, y: torch.Tensor) -> torch.Tensor:
        """``[B, G, h, w]`` -> ``long [B, G, h, w, 2W+1]`` candidate indices."""
        k = self.codebook_size
        offsets = torch.arange(-SCALAR_WINDOW, SCALAR_WINDOW + 1, device=y.device)
        centre = (y.detach().round().clamp(-k, k).long() + k // 2).clamp(0, k - 1)
        return (centre.unsqueeze(-1) + offsets).clamp(0, k - 1)

    def _scalar_distances(self, y: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Squared distances ``[B, G, h, w, 2W+1]`` of ``y`` to its candidates (grad to y)."""
        gidx = torch.arange(self.num_groups, device=y.device).view(1, -1, 1, 1, 1)
        return (y.unsqueeze(-1) - self.codebook.detach()[:, :, 0][gidx, cand]).pow(2)

    @staticmethod
    def _candidate_bits(table: torch.Tensor, ctx: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Code lengths ``[B, G, h, w, 2W+1]`` of the candidates from ``table [B, G, C, K]``
        (log2 probabilities or negated code lengths, as given) under contexts ``ctx``."""
        b, g, c, k = table.shape
        index = (ctx.unsqueeze(-1) * k + cand).reshape(b, g, -1)
        return table.reshape(b, g, c * k).gather(2, index).reshape(cand.shape)

    def _assign_scalar(
        self,
        dist: torch.Tensor,
        cand: torch.Tensor,
        bits: torch.Tensor | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        lut: torch.Tensor,
        mean_bits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The entropy-constrained assignment of :meth:`assign` over the candidates, in
        :data:`SCALAR_PASSES` passes (the first with context-averaged code lengths, each later
        one with the contexts the pass before implies). ``bits`` are code lengths
        ``[B, G, C, K]``, or a function ``(ctx, cand) -> [B, G, h, w, n]`` of them given with
        their context average ``mean_bits [B, G, K]``. Returns ``long [B, G, h, w]`` indices."""
        b, g = cand.shape[:2]
        bits_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
        if isinstance(bits, torch.Tensor):
            table = bits
            mean_bits = bits.mean(dim=2)

            def bits_of(ctx: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
                return self._candidate_bits(table, ctx, c)

        else:
            bits_of = bits
        if mean_bits is None:
            raise ValueError("mean_bits is required with a code-length function")
        first = mean_bits.gather(2, cand.reshape(b, g, -1)).reshape(cand.shape)
        pick = (dist + self.rate_weight * first).argmin(-1, keepdim=True)
        idx = cand.gather(-1, pick).squeeze(-1)
        for _ in range(SCALAR_PASSES - 1):
            ctx = self.contexts(idx, lut)
            cost = dist + self.rate_weight * bits_of(ctx, cand)
            idx = cand.gather(-1, cost.argmin(-1, keepdim=True)).squeeze(-1)
        return idx

    def _forward_scalar(
        self, y: torch.Tensor, q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` for 1-D codebooks: the same assignment and code lengths computed on
        the ``2W+1`` candidates around ``round(y) + K/2`` instead of all K codewords (the
        search the coding path uses while :meth:`window_search_is_exact`); many times faster."""
        cand = self._scalar_candidates(y)
        dist = self._scalar_distances(y, cand)  # grad to y only
        lut = self.level_lut()
        if self.count_tables:
            return self._forward_counts(y, q, cand, dist, lut)
        log2p = self.log2_probs(q)  # [B, G, C, K]
        with torch.no_grad():
            idx = self._assign_scalar(dist.detach(), cand, -log2p.detach(), lut)
            ctx = self.contexts(idx, lut)
        c = self.dequantize(idx)
        y_hat = c + (y - y.detach())
        sel = -self._candidate_bits(log2p, ctx, cand)  # [B, G, h, w, 2W+1], grad to tables
        hard = -self._candidate_bits(log2p, ctx, idx.unsqueeze(-1)).sum(dim=(1, 2, 3, 4))
        soft_assign = torch.softmax(-dist / SOFT_TEMP, -1)
        soft = (soft_assign * sel.detach()).sum(dim=(1, 2, 3, 4))
        bits = hard + soft - soft.detach()
        commit = (y - c.detach()).pow(2).sum(dim=(1, 2, 3))
        return y_hat, idx, bits, commit

    def _forward_counts(
        self,
        y: torch.Tensor,
        q: torch.Tensor,
        cand: torch.Tensor,
        dist: torch.Tensor,
        lut: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_forward_scalar` with count tables: the same assignment and rate gradient,
        the code lengths looked up in the shared rows; in training mode the batch's indices
        are then counted into their rows."""
        with torch.no_grad():
            row_bits = self.row_bits()

            def bits_of(ctx: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
                return row_bits[self._rows(q, ctx).unsqueeze(-1), c]

            mean = self._mean_bits_rows(q, row_bits)
            idx = self._assign_scalar(dist.detach(), cand, bits_of, lut, mean)
            ctx = self.contexts(idx, lut)
            sel = bits_of(ctx, cand)  # [B, G, h, w, 2W+1]
            hard = bits_of(ctx, idx.unsqueeze(-1)).sum(dim=(1, 2, 3, 4))
        if self.training:
            self._count(q, ctx, idx)
        c = self.dequantize(idx)
        y_hat = c + (y - y.detach())
        soft_assign = torch.softmax(-dist / SOFT_TEMP, -1)
        soft = (soft_assign * sel).sum(dim=(1, 2, 3, 4))
        bits = hard + soft - soft.detach()
        commit = (y - c.detach()).pow(2).sum(dim=(1, 2, 3))
        return y_hat, idx, bits, commit


# Count added to every symbol of a count-table row when it becomes code lengths.
ROW_PSEUDO_COUNT = 0.05

# Count-table updates between recomputations of the context-averaged code lengths.
MEAN_BITS_EVERY = 50


def _gather_ctx_bits(table: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """``table [B, G, C, K]``, ``ctx long [B, G, h, w]`` -> ``[B, G, h, w, K]``."""
    b, g, h, w = ctx.shape
    k = table.shape[-1]
    index = ctx.reshape(b, g, h * w, 1).expand(b, g, h * w, k)
    return table.gather(2, index).reshape(b, g, h, w, k)


def _grid_codebook(num_groups: int, group_dim: int, codebook_size: int) -> torch.Tensor:
    """Initial codebooks ``[G, K, d]``: the integer lattice around 0 when K = s^d, so training
    starts from uniform scalar quantization with unit step; otherwise a unit Gaussian sample."""
    side = round(codebook_size ** (1.0 / group_dim))
    if side**group_dim == codebook_size:
        axis = torch.arange(side, dtype=torch.float32) - side // 2
        grid = torch.cartesian_prod(*([axis] * group_dim)).reshape(codebook_size, group_dim)
        return grid.unsqueeze(0).repeat(num_groups, 1, 1)
    gen = torch.Generator().manual_seed(0)
    return torch.randn(num_groups, codebook_size, group_dim, generator=gen) * 2.0
