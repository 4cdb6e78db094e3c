"""Building blocks of the analysis and synthesis transforms."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


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
            self.conv.bias.copy_(bias.repeat_interleave(4))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


def polyphase_synthesis(g_s: nn.Sequential) -> nn.Sequential:
    """A copy of ``g_s`` with every transposed convolution replaced by :class:`PolyphaseDeconv`."""
    return nn.Sequential(
        *(PolyphaseDeconv(m) if isinstance(m, nn.ConvTranspose2d) else m for m in g_s)
    )
