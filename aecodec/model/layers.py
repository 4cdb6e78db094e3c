"""Building blocks of the analysis and synthesis transforms."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from aecodec.model.config import DOWNSAMPLING


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al., ICLR 2016), simplified form.

    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij * x_j^2)`` (``inverse=False``) or
    ``y_i = x_i * sqrt(...)`` (``inverse=True``, IGDN in the synthesis transform).

    ``gamma`` is used through ``abs`` (non-negative, with a gradient everywhere but at 0; the
    off-diagonal entries start slightly positive so they can learn) and ``beta`` through a lower
    bound, which keeps the denominator positive and training stable at high learning rates.

    Args:
        channels: number of channels C of the input ``[B, C, H, W]``.
        inverse: use the inverse normalisation (IGDN).
    """

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(torch.eye(channels) * 0.1 + 1e-3 * (1 - torch.eye(channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        beta = self.beta.clamp_min(1e-3)
        gamma = self.gamma.abs()
        norm = F.conv2d(x * x, gamma.view(c, c, 1, 1), beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    """Strided convolution with 'same' padding: ``[B, cin, H, W] -> [B, cout, H/s, W/s]``."""
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """Transposed convolution: ``[B, cin, H, W] -> [B, cout, H*s, W*s]``."""
    return nn.ConvTranspose2d(
        cin, cout, kernel, stride=stride, padding=kernel // 2, output_padding=stride - 1
    )


class PostFilter(nn.Module):
    """Residual refinement of the decoded image: ``x + f(x)`` with
    ``f = conv3x3(3 -> c), LeakyReLU, conv3x3(c -> c), LeakyReLU, conv3x3(c -> 3)``.

    Nonlinear processing at full resolution, where the synthesis has only its last (linear)
    transposed convolution. The last convolution starts at zero, so a model gains the filter
    as the identity and training (``--train-only decoder``) only has to improve it. Receptive
    field 7x7 pixels; forward convolutions only (thread-count independent, like
    :class:`PolyphaseDeconv`).

    Shapes: ``[B, 3, H, W] -> [B, 3, H, W]``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, 3, 3, padding=1),
        )
        last = self.body[-1]
        for p in last.parameters():
            nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PolyphaseDeconv(nn.Module):
    """A stride-2, 5x5 transposed convolution computed as one 3x3 convolution + pixel shuffle.

    Mathematically identical to the :class:`~torch.nn.ConvTranspose2d` it is built from
    (:func:`deconv` geometry), but computed by a forward convolution whose reductions do not
    depend on the number of threads, so decoded pixels are the same for any thread count
    (transposed convolutions are not, measured with oneDNN on 1/2/4 threads).

    Output phase ``(ry, rx)`` of pixel ``(2m + ry, 2n + rx)`` takes taps ``w[4], w[2], w[0]``
    (even phase) or ``-, w[3], w[1]`` (odd phase) at input offsets ``-1, 0, +1``.
    """

    def __init__(self, layer: nn.ConvTranspose2d) -> None:
        super().__init__()
        if layer.stride != (2, 2) or layer.kernel_size != (5, 5) or layer.padding != (2, 2):
            raise ValueError("PolyphaseDeconv supports the stride-2 5x5 deconv() layers only")
        w = layer.weight.detach()  # [cin, cout, 5, 5]
        cin, cout = w.shape[:2]
        taps = {0: (4, 2, 0), 1: (None, 3, 1)}  # kernel index for input offsets -1, 0, +1
        kernel = torch.zeros(cout, 2, 2, cin, 3, 3, dtype=w.dtype)
        for ry in (0, 1):
            for rx in (0, 1):
                for dy, ky in enumerate(taps[ry]):
                    for dx, kx in enumerate(taps[rx]):
                        if ky is not None and kx is not None:
                            kernel[:, ry, rx, :, dy, dx] = w[:, :, ky, kx].t()
        self.conv = nn.Conv2d(cin, cout * 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(kernel.reshape(cout * 4, cin, 3, 3))
            bias = layer.bias.detach() if layer.bias is not None else torch.zeros(cout)
            self.conv.bias.copy_(bias.repeat_interleave(4))  # type: ignore[union-attr]
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


def polyphase_synthesis(g_s: nn.Module) -> nn.Module:
    """A copy of ``g_s`` with every transposed convolution replaced by :class:`PolyphaseDeconv`
    (``g_s`` is an ``nn.Sequential`` or a :class:`LinearPlusConv` around one)."""
    if isinstance(g_s, LinearPlusConv):
        return LinearPlusConv(g_s.linear, polyphase_synthesis(g_s.conv))
    if not isinstance(g_s, nn.Sequential):
        raise TypeError(f"polyphase_synthesis: unsupported synthesis module {type(g_s).__name__}")
    return nn.Sequential(
        *(PolyphaseDeconv(m) if isinstance(m, nn.ConvTranspose2d) else m for m in g_s)
    )


class BlockAnalysis(nn.Module):
    """Linear block transform ``[B, 3, H, W] -> [B, M, H/b, W/b]``: each b x b RGB block is
    flattened (:class:`~torch.nn.PixelUnshuffle`) and multiplied by an ``M x 3b^2`` matrix."""

    def __init__(self, m: int, block: int = DOWNSAMPLING) -> None:
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(block)
        self.proj = nn.Conv2d(3 * block * block, m, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _float64_proj(self.proj, self.unshuffle(x))


class BlockSynthesis(nn.Module):
    """Linear block transform ``[B, M, h, w] -> [B, 3, bh, bw]``, the transpose layout of
    :class:`BlockAnalysis` (a 1x1 convolution, then :class:`~torch.nn.PixelShuffle`)."""

    def __init__(self, m: int, block: int = DOWNSAMPLING) -> None:
        super().__init__()
        self.proj = nn.Conv2d(m, 3 * block * block, 1)
        self.shuffle = nn.PixelShuffle(block)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.shuffle(_float64_proj(self.proj, y))


def _float64_proj(proj: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``proj(x)`` computed in float64 and rounded to float32. A float32 1x1 convolution goes
    through a GEMM whose summation order depends on the thread count (measured: decoded pixels
    differed between 1 and 2 threads); in float64 those differences are ~1e-16 relative and,
    barring a value within that distance of a float32 rounding boundary, vanish in the rounding
    to float32 (measured: identical pixels and bitstreams on 1, 2 and 4 threads; tested)."""
    w, b = proj.weight.double(), proj.bias.double() if proj.bias is not None else None
    return F.conv2d(x.double(), w, b).float()


class LinearPlusConv(nn.Module):
    """``f(x) = linear(x) + conv(x)``: a linear block transform (never under autocast: it
    computes in float64 and returns float32, since its outputs are the large-range coefficients
    the quantizer needs exactly) plus a
    convolutional residual that learns what the blocks cannot (overlap, non-linearity)."""

    def __init__(self, linear: nn.Module, conv: nn.Module) -> None:
        super().__init__()
        self.linear = linear
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            base = self.linear(x.float())
        return base + self.conv(x).float()
