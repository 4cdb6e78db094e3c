"""The same-budget scalar-quantization baseline: CompressAI's bmshj2018-factorized.

:class:`FactorizedBaseline` wraps :class:`compressai.models.FactorizedPrior` in the interface of
:class:`~aecodec.model.vqvae.VQVAE` that the training loop uses, so the baseline is trained by
the same script, on the same data, crops, batch, steps and schedule (``aecodec train --arch
factorized``). It has one rate point per model (``lambdas`` must hold exactly one value). Its
checkpoints are CompressAI state dicts after :func:`export_compressai`, which the RD benchmark
reads with ``--codecs compressai-factorized --compressai-checkpoint PATH``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from aecodec.files import write_atomic
from aecodec.model.config import ModelConfig
from aecodec.model.vqvae import TrainOutput


class FactorizedBaseline(nn.Module):
    """bmshj2018-factorized with N = ``config.channels``, M = ``config.latent_channels``.

    ``forward(x [B, 3, H, W], q long [B], bf16)`` returns a :class:`TrainOutput` whose ``bits``
    are the ideal code lengths ``-sum log2 p`` (additive uniform noise in training, rounding
    around the medians in eval mode), and whose ``aux`` is CompressAI's quantile loss (needed
    before the model can code real bitstreams).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.num_qualities != 1:
            raise ValueError(
                "the factorized baseline has one rate point per model: pass one value to "
                f"--lambdas (got {len(config.lambdas)})"
            )
        from compressai.models import FactorizedPrior

        self.config = config
        self.net = FactorizedPrior(config.channels, config.latent_channels)

    def forward(self, x: torch.Tensor, q: torch.Tensor, bf16: bool = False) -> TrainOutput:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            y = self.net.g_a(x)
        y_hat, likelihoods = self.net.entropy_bottleneck(y.float())
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            x_hat = self.net.g_s(y_hat)
        bits = -torch.log2(likelihoods).sum(dim=(1, 2, 3))
        return TrainOutput(
            x_hat=x_hat.float(),
            bits=bits,
            commit=torch.zeros_like(bits),
            indices=None,
            aux=self.net.aux_loss(),
        )


def export_compressai(checkpoint: dict, out: str | Path) -> Path:
    """Write the ``FactorizedPrior`` state dict of a baseline training checkpoint to ``out``
    (after ``update()``, so it codes real bitstreams); returns the path."""
    config = ModelConfig.from_json(checkpoint["config"])
    model = FactorizedBaseline(config)
    model.load_state_dict(checkpoint["model"])
    model.net.update(force=True)
    out = Path(out)
    state = model.net.state_dict()
    write_atomic(out, lambda fh: torch.save(state, fh), force=True)
    return out
