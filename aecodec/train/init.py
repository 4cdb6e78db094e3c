"""Data-driven initialisation: start training from a PCA transform coder.

Training a convolutional codec from random weights on two CPU cores is slow: after 7,000 steps
the transforms of ``aecodec-vq-small`` reconstructed validation crops worse *without*
quantization (27 dB) than a plain PCA of 16x16 blocks with 128 components (31.7 dB). So a model
with ``linear_path`` starts as exactly that PCA block coder, with RD-optimal step sizes and
probability tables counted on training crops; its convolutional residuals start at zero and learn
what blocks cannot (overlap, deblocking, non-linearity).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from aecodec.model.layers import LinearPlusConv
from aecodec.model.vqvae import VQVAE
from aecodec.train.data import CropSampler


@torch.no_grad()
def pca_init(net: VQVAE, sampler: CropSampler, crops: int = 512, batch: int = 8) -> None:
    """Initialise ``net`` (built with ``linear_path=True``) in place.

    * linear paths: the top-M principal components of ``crops`` training crops cut into 16x16
      RGB blocks (analysis ``V^T (p - mu)``, synthesis ``V y + mu``; orthonormal);
    * convolutional residuals: last layer zero, so ``g_s(g_a(x))`` is the PCA projection;
    * quality gains: the step of entropy-coded uniform quantization that minimises
      ``bpp + lambda * 255^2 * MSE`` at high rate, ``sqrt(36 / (2 ln2 * 255^2 * lambda))``;
    * probability tables: log of smoothed index counts of the initial encoder per quality,
      group and context.
    """
    cfg = net.config
    if not cfg.linear_path:
        raise ValueError("pca_init needs a model built with linear_path=True")
    x = torch.cat([sampler.batch(batch) for _ in range(max(1, crops // batch))])
    v, mu = _block_pca(x, cfg.downsampling, cfg.latent_channels)
    _start_as_pca(net, v, mu)
    _set_quality_gains(net, x)
    _count_tables(net, x)


@torch.no_grad()
def quantizer_init(net: VQVAE, sampler: CropSampler, crops: int = 512, batch: int = 8) -> None:
    """Start the quantizer of ``net`` afresh for the transforms it has (the
    codebook-dimension ablation: the same transforms under another codebook geometry):
    lattice codebooks (as built), per-quality gains of the high-rate RD-optimal uniform step
    clipped to the codebook's range, and tables counted from the resulting indices on
    ``crops`` training crops (the rules :func:`pca_init` uses)."""
    x = torch.cat([sampler.batch(batch) for _ in range(max(1, crops // batch))])
    _set_quality_gains(net, x)
    _count_tables(net, x)


def _block_pca(x: torch.Tensor, block: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, 3, H, W]`` crops -> ``(V, mu)``: the top-``m`` principal components
    ``float64 [3 b^2, m]`` (descending variance) and the mean ``[3 b^2]`` of their b x b blocks."""
    p = F.pixel_unshuffle(x, block).permute(0, 2, 3, 1).reshape(-1, 3 * block * block).double()
    mu = p.mean(0)
    cov = (p - mu).T @ (p - mu) / p.shape[0]
    _, vecs = torch.linalg.eigh(cov)
    return vecs.flip(1)[:, :m], mu


def _start_as_pca(net: VQVAE, v: torch.Tensor, mu: torch.Tensor) -> None:
    """Linear paths = the PCA (analysis ``V^T (p - mu)``, synthesis ``V y + mu``), last layers
    of the convolutional residuals zero, so ``g_s(g_a(x))`` is the PCA projection."""
    m = net.config.latent_channels
    g_a, g_s = net.g_a, net.g_s
    assert isinstance(g_a, LinearPlusConv) and isinstance(g_s, LinearPlusConv)
    ana, syn = g_a.linear.proj, g_s.linear.proj
    assert isinstance(ana, nn.Conv2d) and isinstance(syn, nn.Conv2d)
    ana.weight.copy_(v.T.reshape(m, -1, 1, 1).float())
    ana.bias.copy_((-(v.T @ mu)).float())  # type: ignore[union-attr]
    syn.weight.copy_(v.reshape(-1, m, 1, 1).float())
    syn.bias.copy_(mu.float())  # type: ignore[union-attr]
    for seq in (g_a.conv, g_s.conv):
        last = seq[-1]  # type: ignore[index]
        last.weight.zero_()
        last.bias.zero_()


def _set_quality_gains(net: VQVAE, x: torch.Tensor) -> None:
    """Per quality, the gain of the high-rate RD-optimal uniform step, coarser for channels
    whose largest coefficient on ``x`` would fall outside the initial codebook."""
    cfg = net.config
    # The initial codebook spans +-half lattice steps per dimension: channels whose largest
    # coefficient would fall outside get a coarser step (a larger one clips the coefficient).
    half = max(1, round(cfg.codebook_size ** (1.0 / cfg.group_dim)) // 2 - 2)
    peak = net.g_a(x).abs().amax(dim=(0, 2, 3)).clamp_min(1e-6)  # [M]
    for qi, lam in enumerate(cfg.lambdas):
        # One coefficient per 256 pixels, its error spread over 768 values: d/d(step) of
        # (h - log2 step) / 256 + lambda 255^2 step^2 / (12 * 768) = 0.
        step = math.sqrt(36.0 / (2 * math.log(2) * 255.0**2 * lam))
        log_gain = torch.minimum(torch.full_like(peak, -math.log(step)), (half / peak).log())
        net.log_gain[qi].copy_(log_gain)
        net.log_inv_gain[qi].copy_(-log_gain)


def _count_tables(net: VQVAE, x: torch.Tensor) -> None:
    """Logits = log of the smoothed counts of the initial encoder's indices on ``x`` per
    quality, group and context (indices assigned by distance alone)."""
    cfg = net.config
    vq = net.quantizer
    lut = vq.level_lut()
    counts = torch.full_like(vq.logits, 0.1, dtype=torch.float64)
    no_rate = torch.zeros(1, *vq.logits.shape[1:])  # assignment by distance alone
    y = net.g_a(x)
    for qi in range(cfg.num_qualities):
        gain, _ = net.gains(torch.tensor([qi]))
        for i in range(0, y.shape[0], 64):
            yq = y[i : i + 64] * gain
            idx = vq.assign(yq, no_rate.expand(yq.shape[0], -1, -1, -1), lut)
            ctx = vq.contexts(idx, lut)
            flat = (ctx * vq.codebook_size + idx).transpose(0, 1).reshape(vq.num_groups, -1)
            c = counts[qi].view(vq.num_groups, -1)
            c.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
    vq.logits.copy_(counts.log().float())


@torch.no_grad()
def widen_synthesis(state: dict[str, torch.Tensor], net: VQVAE) -> list[str]:
    """Fit a narrower model's synthesis into ``net``'s wider one, keeping its function exactly.

    Every transposed convolution of ``state`` (``weight [C_in, C_out, k, k]``) is copied into
    the top-left corner of ``net``'s; the new output channels keep ``net``'s random
    initialisation (their biases zero) and the new *input* channels get zero weights, so the
    new channels do not reach the image until training gives them outgoing weights (Net2Net's
    zero variant, Chen et al. 2016). ``state`` is changed in place.

    Returns:
        The keys that were widened.
    """
    own = net.state_dict()
    widened = []
    for key, old in state.items():
        if not key.startswith("g_s.") or key not in own or own[key].shape == old.shape:
            continue
        new = own[key].clone()
        if new.dim() != old.dim() or any(a < b for a, b in zip(new.shape, old.shape, strict=True)):
            raise ValueError(f"{key}: cannot widen {tuple(old.shape)} to {tuple(new.shape)}")
        if new.dim() == 1:  # bias of new output channels
            new[old.shape[0] :] = 0.0
        else:
            new[old.shape[0] :] = 0.0  # new input channels: no effect yet
        new[tuple(slice(0, n) for n in old.shape)] = old
        state[key] = new
        widened.append(key)
    return widened
