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
from collections.abc import Callable

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
    p = _blocks(x, block)
    mu = p.mean(0)
    cov = (p - mu).T @ (p - mu) / p.shape[0]
    _, vecs = torch.linalg.eigh(cov)
    return vecs.flip(1)[:, :m], mu


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ``float64 [B * H/b * W/b, 3 b^2]``: every b x b RGB block as a row
    (the layout of the linear block paths)."""
    return F.pixel_unshuffle(x, block).permute(0, 2, 3, 1).reshape(-1, 3 * block * block).double()


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
    half = _lattice_half(cfg.codebook_size, cfg.group_dim)
    peak = net.g_a(x).abs().amax(dim=(0, 2, 3)).clamp_min(1e-6)  # [M]
    for qi, lam in enumerate(cfg.lambdas):
        # One coefficient per 256 pixels, its error spread over 768 values: d/d(step) of
        # (h - log2 step) / 256 + lambda 255^2 step^2 / (12 * 768) = 0.
        step = _rd_step(lam)
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


@torch.no_grad()
def widen_latent(state: dict[str, torch.Tensor], net: VQVAE, crops: torch.Tensor) -> int:
    """Fit a model with fewer latent channels into ``net``'s M, keeping every old channel.

    The new channels ``M0..M-1`` start as the next principal directions of 16x16 blocks:
    the top ``M - M0`` principal components of what the old linear synthesis cannot represent
    (block residuals of ``crops`` after projection on its columns), used as analysis rows and
    synthesis columns of the linear block paths (orthonormal). The convolutional paths get zero
    weights to and from them, their codebooks start as the unit lattice, their gains at the
    high-rate RD-optimal step of each quality (clipped to the codebook's range, as in
    :func:`pca_init`), and their count-table rows as copies of the last old channel's. So with
    coarse steps (low qualities) the new channels quantize to zero and the model decodes as
    before; at fine steps they carry the detail that M0 channels could not.

    Args:
        state: the narrower model's parameters (``net``'s layout otherwise); changed in place.
        net: the model to fill (``latent_channels`` M > M0, same qualities as ``state``).
        crops: ``[N, 3, H, W]`` training crops in [0, 1] for the principal directions.

    Returns:
        M0, the old number of latent channels.
    """
    cfg = net.config
    m0, m = state["log_gain"].shape[1], cfg.latent_channels
    if not cfg.linear_path or cfg.group_dim != 1 or m0 >= m:
        raise ValueError("widen_latent needs 1-D codebooks, a linear path and more channels")
    block = cfg.downsampling
    syn = state["g_s.linear.proj.weight"].double().reshape(3 * block * block, m0)
    p = _blocks(crops, block)
    basis, _ = torch.linalg.qr(syn)  # orthonormal span of the old synthesis columns
    mu = p.mean(0)
    resid = (p - mu) - ((p - mu) @ basis) @ basis.T
    _, vecs = torch.linalg.eigh(resid.T @ resid / resid.shape[0])
    v = vecs.flip(1)[:, : m - m0]  # [3 b^2, M - M0], orthogonal to the old columns
    new = m - m0

    def grow(key: str, dim: int, extra: torch.Tensor) -> None:
        state[key] = torch.cat([state[key], extra.to(state[key].dtype)], dim=dim)

    grow("g_a.linear.proj.weight", 0, v.T.reshape(new, -1, 1, 1))
    grow("g_a.linear.proj.bias", 0, -(v.T @ mu))
    grow("g_s.linear.proj.weight", 1, v.reshape(-1, new, 1, 1))
    last_a = _last_conv_key(state, "g_a.conv.")
    grow(f"{last_a}.weight", 0, torch.zeros(new, *state[f"{last_a}.weight"].shape[1:]))
    grow(f"{last_a}.bias", 0, torch.zeros(new))
    first_s = "g_s.conv.0"
    grow(f"{first_s}.weight", 0, torch.zeros(new, *state[f"{first_s}.weight"].shape[1:]))
    k = cfg.codebook_size
    axis = torch.arange(k, dtype=torch.float32) - k // 2
    grow("quantizer.codebook", 0, axis.view(1, k, 1).repeat(new, 1, 1))
    coef = ((p - mu) @ v).float()  # [N blocks, new]
    peak = coef.abs().amax(0).clamp_min(1e-6)
    half = _lattice_half(k, 1)
    q_count = state["log_gain"].shape[0]
    log_gain = torch.stack(
        [
            torch.minimum(torch.full_like(peak, -math.log(_rd_step(lam))), (half / peak).log())
            for lam in cfg.lambdas[:q_count]
        ]
    )
    grow("log_gain", 1, log_gain)
    grow("log_inv_gain", 1, -log_gain)
    _grow_tables(state, lambda t: t[:, -1:].repeat_interleave(new, dim=1), groups=True)
    return m0


@torch.no_grad()
def extend_qualities(state: dict[str, torch.Tensor], net: VQVAE, crops: torch.Tensor) -> int:
    """Add quality levels above the highest of ``state`` (``net``'s lambdas continue the
    old ones). A new level's gains continue the highest old level's on the high-rate rule
    (step proportional to ``lambda ** -0.5``), each channel capped where its largest
    coefficient on ``crops`` would leave the codebook; its tables start as copies of the
    highest level's rows (fresh rows, so training one does not move the other).

    Returns:
        Q0, the old number of qualities.
    """
    cfg = net.config
    q0 = state["log_gain"].shape[0]
    if q0 >= cfg.num_qualities:
        raise ValueError("extend_qualities needs more qualities than the weights have")
    top = state["log_gain"][q0 - 1]
    half = _lattice_half(cfg.codebook_size, 1)
    peak = _latent_peak(state, net, crops)
    cap = torch.maximum((half / peak).log(), top)  # never coarser than the top level
    rows = []
    for lam in cfg.lambdas[q0:]:
        rows.append(torch.minimum(top + 0.5 * math.log(lam / cfg.lambdas[q0 - 1]), cap))
    new = torch.stack(rows)
    state["log_gain"] = torch.cat([state["log_gain"], new])
    inv_top = state["log_inv_gain"][q0 - 1]
    state["log_inv_gain"] = torch.cat([state["log_inv_gain"], inv_top - (new - top)])
    added = cfg.num_qualities - q0
    _grow_tables(state, lambda t: t[-1:].repeat_interleave(added, dim=0), groups=False)
    return q0


def _lattice_half(codebook_size: int, group_dim: int) -> int:
    """Lattice steps from 0 a coefficient may reach in the initial codebook (the unit lattice of
    ``codebook_size ** (1/d)`` points per dimension, less a margin of 2): channels whose largest
    coefficient would fall outside get a coarser step (a larger one clips the coefficient)."""
    return max(1, round(codebook_size ** (1.0 / group_dim)) // 2 - 2)


def _rd_step(lam: float) -> float:
    """The high-rate RD-optimal uniform step of one coefficient per 256 pixels (see
    :func:`_set_quality_gains`)."""
    return math.sqrt(36.0 / (2 * math.log(2) * 255.0**2 * lam))


def _last_conv_key(state: dict[str, torch.Tensor], prefix: str) -> str:
    keys = [k[: -len(".weight")] for k in state if k.startswith(prefix) and k.endswith(".weight")]
    return max(keys, key=lambda k: int(k[len(prefix) :]))


def _latent_peak(state: dict[str, torch.Tensor], net: VQVAE, crops: torch.Tensor) -> torch.Tensor:
    """``[M]`` largest ``|g_a(x)|`` per channel on ``crops``, with ``state``'s analysis."""
    g_a = net.g_a
    own = {k[len("g_a.") :]: v for k, v in state.items() if k.startswith("g_a.")}
    saved = {k: v.clone() for k, v in g_a.state_dict().items()}
    g_a.load_state_dict(own)
    parts = [g_a(crops[i : i + 16]).abs().amax(dim=(0, 2, 3)) for i in range(0, len(crops), 16)]
    peak = torch.stack(parts).amax(0)
    g_a.load_state_dict(saved)
    return peak.clamp_min(1e-6)


def _grow_tables(
    state: dict[str, torch.Tensor],
    pick: Callable[[torch.Tensor], torch.Tensor],
    groups: bool,
) -> None:
    """Extend the tables of ``state`` along groups (``groups``) or qualities: ``pick`` maps the
    old ``[Q, G, C]`` layout to the new entries' template; count tables get fresh copies of
    the template's rows, logits copies of its rows."""
    dim = 1 if groups else 0
    if "quantizer.table_index" in state:
        index = state["quantizer.table_index"]
        template = pick(index)
        used, inverse = torch.unique(template, return_inverse=True)
        counts = state["quantizer.row_counts"]
        fresh = inverse + counts.shape[0]
        state["quantizer.row_counts"] = torch.cat([counts, counts[used]])
        state["quantizer.table_index"] = torch.cat([index, fresh], dim=dim)
    if "quantizer.logits" in state and state["quantizer.logits"].numel():
        logits = state["quantizer.logits"]
        state["quantizer.logits"] = torch.cat([logits, pick(logits).clone()], dim=dim)
