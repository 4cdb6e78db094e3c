"""The VQ-VAE image codec model: transforms, quality gains and the product quantizer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from aecodec.model.config import ModelConfig
from aecodec.model.layers import (
    GDN,
    BlockAnalysis,
    BlockSynthesis,
    LinearPlusConv,
    PostFilter,
    conv,
    deconv,
)
from aecodec.model.quantizer import ProductVQ


def analysis_transform(n: int, m: int) -> nn.Sequential:
    """``g_a``: ``[B, 3, H, W] -> [B, M, H/16, W/16]`` (Ballé et al. 2018 layout)."""
    return nn.Sequential(conv(3, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m))


def synthesis_transform(n: int, m: int) -> nn.Sequential:
    """``g_s``: ``[B, M, h, w] -> [B, 3, 16h, 16w]``.

    LeakyReLU instead of IGDN: IGDN grows quadratically with its input and diverged within
    40 steps at the learning rates that make CPU training affordable (measured: 1e-3), while
    this decoder reached a higher PSNR in the same steps than GDN/IGDN at 1e-4.
    """
    return nn.Sequential(
        deconv(m, n),
        nn.LeakyReLU(0.1),
        deconv(n, n),
        nn.LeakyReLU(0.1),
        deconv(n, n),
        nn.LeakyReLU(0.1),
        deconv(n, 3),
    )


@dataclass
class TrainOutput:
    """What :meth:`VQVAE.forward` returns.

    Attributes:
        x_hat: ``[B, 3, H, W]`` reconstruction (not clamped).
        bits: ``[B]`` code length of each sample under the learned tables.
        commit: ``[B]`` summed squared latent quantization error of each sample.
        indices: ``long [B, G, h, w]`` (``None`` for models without a codebook).
        aux: a scalar loss added as is to the training loss (``None``: nothing to add).
    """

    x_hat: torch.Tensor
    bits: torch.Tensor
    commit: torch.Tensor
    indices: torch.Tensor | None
    aux: torch.Tensor | None = None


class VQVAE(nn.Module):
    """Variable-rate VQ-VAE with entropy-constrained product VQ.

    ::

        x --g_a--> y --*gain[q]--> y' --ECVQ--> k (integers, entropy coded)
                                                |
        x_hat <--g_s-- y_hat <--*inv_gain[q]-- c[k]

    One network serves every quality level: the quality index q selects a per-channel gain
    (the "gained" variable-rate scheme of Cui et al., CVPR 2021) and a set of probability
    tables; the codebooks are shared.

    Args:
        config: the model's hyper-parameters.
        learn_tables: hold the learned probability logits (training); a coding-only model
            (:class:`aecodec.codec.Codec`) codes with the integer tables and leaves them empty.
        table_rows: train with T shared count-table rows instead of logits (see
            :class:`~aecodec.model.quantizer.ProductVQ`).
    """

    def __init__(self, config: ModelConfig, learn_tables: bool = True, table_rows: int = 0) -> None:
        super().__init__()
        self.config = config
        n, m, q = config.channels, config.latent_channels, config.num_qualities
        self.g_a: nn.Module = analysis_transform(n, m)
        self.g_s: nn.Module = synthesis_transform(config.synthesis_width, m)
        if config.linear_path:
            self.g_a = LinearPlusConv(BlockAnalysis(m), self.g_a)
            self.g_s = LinearPlusConv(BlockSynthesis(m), self.g_s)
        self.refine: nn.Module = (
            PostFilter(config.refine_channels) if config.refine_channels else nn.Identity()
        )
        # Higher quality -> larger gain -> finer effective quantization.
        init = torch.linspace(-1.0, 1.5, q).unsqueeze(1).expand(q, m).clone()
        self.log_gain = nn.Parameter(init)
        self.log_inv_gain = nn.Parameter(-init.clone())
        self.quantizer = ProductVQ(
            config.num_groups,
            config.group_dim,
            config.codebook_size,
            q,
            config.num_levels,
            config.rate_weight,
            config.context_scheme(),
            learn_tables,
            table_rows,
        )

    def gains(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``long [B]`` -> ``(gain, inv_gain)`` each ``[B, M, 1, 1]``."""
        return (
            self.log_gain[q].exp()[:, :, None, None],
            self.log_inv_gain[q].exp()[:, :, None, None],
        )

    def coding_gains(self, q: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Coding path: ``(gain, inv_gain)`` each ``[1, M, 1, 1]`` at a fine quality index.

        ``q`` in ``[0, Q-1]``; between the levels ``a = floor(q)`` and ``a + 1`` both gains are
        interpolated linearly in the log domain with ``f = q - a``:
        ``exp((1 - f) * log_gain[a] + f * log_gain[a + 1])``. At a level, that level's gains.
        """
        a = math.floor(q)
        f = q - a
        if f == 0:
            return self.gains(torch.tensor([a], device=self.log_gain.device))

        def between(log: torch.Tensor) -> torch.Tensor:
            return ((1.0 - f) * log[a] + f * log[a + 1]).exp()[None, :, None, None]

        return between(self.log_gain), between(self.log_inv_gain)

    def forward(self, x: torch.Tensor, q: torch.Tensor, bf16: bool = False) -> TrainOutput:
        """Training pass (never produces bytes).

        Args:
            x: ``[B, 3, H, W]`` in [0, 1], H and W multiples of 16.
            q: ``long [B]`` quality index per sample.
            bf16: run ``g_a`` and ``g_s`` under bfloat16 autocast (faster on CPUs with
                AVX512-BF16); the quantizer and the losses stay in float32.
        """
        gain, inv_gain = self.gains(q)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            y = self.g_a(x)
        y = y.float() * gain
        y_hat, idx, bits, commit = self.quantizer(y, q)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            x_hat = self.refine(self.g_s(y_hat * inv_gain))
        x_hat = x_hat.float()
        return TrainOutput(x_hat=x_hat, bits=bits, commit=commit, indices=idx)

    @torch.no_grad()
    def analyse(self, x: torch.Tensor, q: float) -> torch.Tensor:
        """Coding path: ``[1, 3, H, W]`` in [0, 1] (H, W multiples of 16) -> gained latent
        ``[1, M, H/16, W/16]`` of (fine) quality index ``q`` (see :meth:`coding_gains`)."""
        gain, _ = self.coding_gains(q)
        return self.g_a(x) * gain

    @torch.no_grad()
    def quantize(
        self, y: torch.Tensor, bits: torch.Tensor, level_lut: torch.Tensor
    ) -> torch.Tensor:
        """Coding path: entropy-constrained assignment of a gained latent.

        Args:
            y: ``[1, M, h, w]`` from :meth:`analyse`.
            bits: ``[G, C, K]`` code lengths of the integer tables used for coding.
            level_lut: ``long [G, K]`` frozen codeword levels.

        Returns:
            ``long [1, G, h, w]`` indices.
        """
        return self.quantizer.assign(y, bits.unsqueeze(0), level_lut)

    @torch.no_grad()
    def decode_indices(self, idx: torch.Tensor, q: float) -> torch.Tensor:
        """Coding path, decoder side: ``long [B, G, h, w]`` -> ``[B, 3, 16h, 16w]`` in [0, 1]
        at (fine) quality index ``q`` (see :meth:`coding_gains`)."""
        _, inv_gain = self.coding_gains(q)
        x_hat = self.refine(self.g_s(self.quantizer.dequantize(idx.long()) * inv_gain))
        return x_hat.clamp_(0.0, 1.0)
