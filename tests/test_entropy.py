"""Integer tables and the ANS coder: round trips, real size vs ideal size, contexts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aecodec.entropy import (
    EntropyTables,
    contexts_from_levels,
    decode_indices,
    encode_indices,
    tables_from_logits,
)
from aecodec.errors import FormatError


def _tables(seed: int = 0, q: int = 2, g: int = 16, c: int = 3, k: int = 64) -> EntropyTables:
    rng = np.random.default_rng(seed)
    freqs = tables_from_logits(rng.normal(size=(q, g, c, k)) * 3, 16)
    lut = rng.integers(0, c, (g, k))
    return EntropyTables(freqs=freqs.astype(np.int64), level_lut=lut, prob_bits=16)


def _sample(tables: EntropyTables, q: int, h: int, w: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    _, g, _, k = tables.shape
    p = tables.freqs[q, :, 0] / 2**16
    return np.stack([rng.choice(k, size=(h, w), p=p[i]) for i in range(g)])


def test_tables_from_logits_rows_sum_exactly_and_never_zero() -> None:
    logits = np.array([[[[50.0, -50.0, 0.0, -1e9]]]])
    f = tables_from_logits(logits, 12)
    assert f.sum(-1).tolist() == [[[4096]]]
    assert (f >= 1).all()


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 29)])
def test_round_trip(shape: tuple[int, int]) -> None:
    t = _tables()
    idx = _sample(t, 1, *shape)
    data = encode_indices(idx, t, 1)
    assert len(data) % 4 == 0
    np.testing.assert_array_equal(decode_indices(data, t, 1, *shape), idx)


def test_real_size_close_to_ideal_code_length() -> None:
    t = _tables()
    idx = _sample(t, 0, 40, 60)
    real_bits = 8 * len(encode_indices(idx, t, 0))
    ideal = t.ideal_bits(idx, 0)
    assert real_bits <= ideal * 1.01 + 64 * 8
    assert real_bits >= ideal * 0.99 - 64


def test_encoding_is_deterministic() -> None:
    t = _tables()
    idx = _sample(t, 1, 9, 11)
    assert encode_indices(idx, t, 1) == encode_indices(idx.copy(), t, 1)


def test_corrupt_payload_raises_format_error() -> None:
    t = _tables()
    idx = _sample(t, 1, 6, 7)
    data = encode_indices(idx, t, 1)
    with pytest.raises(FormatError, match="multiple of 4"):
        decode_indices(data[:-1], t, 1, 6, 7)
    with pytest.raises(FormatError):
        decode_indices(data + b"\x01\x00\x00\x00" * 4, t, 1, 6, 7)


def test_invalid_indices_rejected() -> None:
    t = _tables()
    with pytest.raises(ValueError, match="indices must be"):
        encode_indices(np.full((16, 2, 2), 64), t, 0)


def test_contexts_numpy_and_torch_twins_agree() -> None:
    from aecodec.model.quantizer import _contexts_torch

    rng = np.random.default_rng(3)
    levels = rng.integers(0, 5, (7, 9, 13))
    want = contexts_from_levels(levels, 4)
    got = _contexts_torch(torch.from_numpy(levels)[None], 4)[0].numpy()
    np.testing.assert_array_equal(got, want)
    assert (want[0] == 0).all()
    # Context of group 1 at (0, 0) is the max level of group 0 over its 3x3 neighbourhood.
    assert want[1, 0, 0] == min(3, levels[0, :2, :2].max())


def test_table_validation() -> None:
    with pytest.raises(ValueError, match="sum to"):
        EntropyTables(np.ones((1, 1, 1, 4), dtype=np.int64), np.zeros((1, 4), np.int64), 16)
