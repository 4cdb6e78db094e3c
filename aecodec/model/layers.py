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
