"""Model configuration: a frozen dataclass saved as JSON in the weights file's metadata."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from aecodec.entropy import ContextScheme

DOWNSAMPLING = 16
"""Spatial factor between an image and its latent grid, for every model (four stride-2
layers; the linear block path uses 16x16 blocks). The container's tile alignment
(:data:`aecodec.container.TILE_ALIGN`) is the same number by design; :class:`aecodec.codec.Codec`
refuses a model for which they differ."""

# Rate-distortion trade-offs of the quality levels, low rate first. The training loss is
# ``bpp + lambda * 255^2 * MSE`` (the CompressAI convention), so these are comparable to
# CompressAI's published lambdas.
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0009, 0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483, 0.0932)


# Config fields added after the first weights format, with the value older files imply.
# The weights files' key of ModelConfig.num_levels (its name in the first format; kept, so that
# re-exporting a model writes the same metadata).
_STORED_LEVELS_KEY = "num_contexts"

_LATER_FIELDS: dict[str, object] = {
    "spatial_contexts": 0,
    "activity_edges": (),
    "refine_channels": 0,
    "synthesis_channels": 0,
}


# Half-width of the candidate window of the one-dimensional fast path of the entropy-constrained
# assignment (the torch quantizer and the numpy one of aecodec.runtime).
SCALAR_WINDOW = 4

# Passes of the 1-D assignment. With many contexts the first pass (context-averaged code
# lengths) is a poor guess of the contexts; a third pass lowered the RD cost at every quality
# of aecodec-vq-base2 by 0.3-0.7 % on the 16 validation images (a fourth: 0.05 % more). The
# 2-D path keeps two passes (its only bundled model, aecodec-vq-small, has 4 contexts).
SCALAR_PASSES = 3


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a :class:`~aecodec.model.vqvae.VQVAE`.

    Attributes:
        name: model name written into every bitstream (``aecodec-vq-...``).
        channels: width N of the hidden layers of ``g_a`` and ``g_s``.
        latent_channels: M, channels of the latent ``y`` (a multiple of ``group_dim``).
        group_dim: dimension d of each product-VQ codebook (channels per group).
        codebook_size: K, codewords per group.
        num_levels: L, codeword levels ``0..L-1``: the channel context of group g is the
            largest level of group g - 1 around the position (see :mod:`aecodec.entropy`;
            the coder's contexts are C = :attr:`ContextScheme.num_contexts`). Stored as
            ``num_contexts`` in weights files (the key of the first format, kept).
        rate_weight: beta of the entropy-constrained assignment
            ``argmin_k ||y - c_k||^2 + beta * bits_k``, in squared latent units per bit.
        lambdas: the rate-distortion trade-off of each quality level, low rate first.
        prob_bits: precision of the integer probability tables (frequencies sum to 2^prob_bits).
        linear_path: add a linear 16x16 block transform beside the convolutional ``g_a`` and
            ``g_s`` (initialised to the PCA of training patches, see
            :func:`aecodec.train.init.pca_init`), so training starts from a transform coder.
        spatial_contexts: S, checkerboard spatial contexts (0: none). With S > 0, half of
            the positions are coded after their four neighbours, under ``S`` times more
            contexts.
        activity_edges: E, bucket edges of the count of earlier groups with a level > 0 at the
            same position (empty: none); multiplies the contexts by ``len(E) + 1``. See
            :class:`aecodec.entropy.ContextScheme`.
        synthesis_channels: width of the hidden layers of ``g_s`` (0: ``channels``).
        refine_channels: width of the residual post-filter on the decoded image (0: none; see
            :class:`aecodec.model.layers.PostFilter`).
    """

    name: str = "aecodec-vq-small"
    channels: int = 96
    latent_channels: int = 128
    group_dim: int = 2
    codebook_size: int = 256
    num_levels: int = 4
    rate_weight: float = 0.1
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    prob_bits: int = 16
    linear_path: bool = False
    spatial_contexts: int = 0
    activity_edges: tuple[int, ...] = ()
    refine_channels: int = 0
    synthesis_channels: int = 0

    def __post_init__(self) -> None:
        if self.latent_channels % self.group_dim:
            raise ValueError(
                f"latent_channels ({self.latent_channels}) must be a multiple of "
                f"group_dim ({self.group_dim})"
            )
        if not 2 <= self.codebook_size <= 4096:
            raise ValueError(f"codebook_size must be in 2..4096, got {self.codebook_size}")
        if not self.lambdas or list(self.lambdas) != sorted(self.lambdas):
            raise ValueError("lambdas must be a non-empty ascending sequence")
        if not 12 <= self.prob_bits <= 16:
            raise ValueError(f"prob_bits must be in 12..16, got {self.prob_bits}")
        if not 0 <= self.spatial_contexts <= 64:
            raise ValueError(f"spatial_contexts must be in 0..64, got {self.spatial_contexts}")
        if not 0 <= self.synthesis_channels <= 512:
            raise ValueError(f"synthesis_channels must be in 0..512, got {self.synthesis_channels}")
        if not 0 <= self.refine_channels <= 64:
            raise ValueError(f"refine_channels must be in 0..64, got {self.refine_channels}")
        self.context_scheme()  # validates the edges

    @property
    def synthesis_width(self) -> int:
        """Width of the hidden layers of ``g_s``."""
        return self.synthesis_channels or self.channels

    @property
    def num_groups(self) -> int:
        """G, the number of product-VQ groups."""
        return self.latent_channels // self.group_dim

    @property
    def num_qualities(self) -> int:
        """Q, the number of quality levels."""
        return len(self.lambdas)

    @property
    def downsampling(self) -> int:
        """Spatial factor between the image and the latent grid, :data:`DOWNSAMPLING`."""
        return DOWNSAMPLING

    def context_scheme(self) -> ContextScheme:
        """How the entropy coder forms contexts (``num_levels`` levels, spatial, activity)."""
        return ContextScheme(self.num_levels, self.spatial_contexts, self.activity_edges)

    def to_json(self) -> str:
        """Serialise to a JSON string (stored in the safetensors metadata). Fields added after
        the first weights format are left out at their default, so re-exporting an older model
        writes the same metadata."""
        raw = asdict(self)
        raw[_STORED_LEVELS_KEY] = raw.pop("num_levels")
        for key, default in _LATER_FIELDS.items():
            if raw[key] == default:
                del raw[key]
        return json.dumps(raw, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Parse :meth:`to_json` output; unknown keys are an error."""
        raw = json.loads(text)
        if _STORED_LEVELS_KEY in raw:
            raw["num_levels"] = raw.pop(_STORED_LEVELS_KEY)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        for key in ("lambdas", "activity_edges"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)
