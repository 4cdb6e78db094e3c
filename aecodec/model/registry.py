"""Moved to :mod:`aecodec.weightsfile` (the one home of the weights format, the manifest and
the model constructor); these names stay importable from here for code that still uses this
path (``cli/train.py``). Import them from :mod:`aecodec.weightsfile`."""

from aecodec.weightsfile import (
    WEIGHTS_DIR,
    LoadedWeights,
    default_model_name,
    load_weights,
    read_config,
    read_manifest,
)

__all__ = [
    "WEIGHTS_DIR",
    "LoadedWeights",
    "default_model_name",
    "load_weights",
    "read_config",
    "read_manifest",
]
