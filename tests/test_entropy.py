"""Integer tables and the ANS coder: round trips, real size vs ideal size, contexts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aecodec.entropy import (
    ContextScheme,
    EntropyTables,
    contexts_from_levels,
    decode_indices,
    decode_tiles,
    encode_indices,
    mix_rows,
    tables_from_logits,
)
from aecodec.errors import FormatError


def _tables(
    seed: int = 0,
    q: int = 2,
    g: int = 16,
    c: int = 3,
    k: int = 64,
    spatial: int = 0,
    edges: tuple[int, ...] = (),
) -> EntropyTables:
    """Random tables; with ``spatial`` > 0 or activity ``edges``, ``c`` channel contexts and
    the scheme's contexts in all, drawn from 11 shared rows."""
    rng = np.random.default_rng(seed)
    lut = rng.integers(0, c, (g, k))
    if spatial == 0 and not edges:
        freqs = tables_from_logits(rng.normal(size=(q, g, c, k)) * 3, 16)
        return EntropyTables.dense(freqs.astype(np.int64), lut, 16)
    scheme = ContextScheme(c, spatial, edges)
    rows = tables_from_logits(rng.normal(size=(11, k)) * 3, 16).astype(np.int64)
    index = rng.integers(0, 11, (q, g, scheme.num_contexts))
    return EntropyTables(rows, index, lut, 16, scheme)


def _sample(tables: EntropyTables, q: int, h: int, w: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    _, g, _, k = tables.shape
    p = tables.rows(q)[:, 0] / 2**16
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


@pytest.mark.parametrize(("spatial", "edges", "shape"), [(0, (), (3, 5)), (4, (1, 2, 4), (2, 3))])
def test_tiles_decoded_together_as_each_alone(
    spatial: int, edges: tuple[int, ...], shape: tuple[int, int]
) -> None:
    """decode_tiles (the codec decodes same-size tiles in batches) gives each tile's
    decode_indices; a bad payload anywhere in the batch is a FormatError."""
    t = _tables(spatial=spatial, edges=edges)
    h, w = shape
    tiles = [_sample(t, 1, h, w, seed=s) for s in range(5)]
    payloads = [encode_indices(idx, t, 1) for idx in tiles]
    together = decode_tiles(payloads, t, 1, *shape)
    assert together.shape == (5, t.shape[1], *shape)
    for idx, got, data in zip(tiles, together, payloads, strict=True):
        np.testing.assert_array_equal(got, idx)
        np.testing.assert_array_equal(decode_indices(data, t, 1, *shape), idx)
    with pytest.raises(FormatError):
        decode_tiles([*payloads[:2], payloads[2] + b"\0\0\0\1", *payloads[3:]], t, 1, *shape)


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
    got = _contexts_torch(torch.from_numpy(levels)[None], ContextScheme(4))[0].numpy()
    np.testing.assert_array_equal(got, want)
    assert (want[0] == 0).all()
    # Context of group 1 at (0, 0) is the max level of group 0 over its 3x3 neighbourhood.
    assert want[1, 0, 0] == min(3, levels[0, :2, :2].max())


def test_table_validation() -> None:
    with pytest.raises(ValueError, match="sum to"):
        EntropyTables.dense(np.ones((1, 1, 1, 4), dtype=np.int64), np.zeros((1, 4), np.int64), 16)
    rows = tables_from_logits(np.zeros((2, 4)), 12).astype(np.int64)
    lut = np.zeros((1, 4), np.int64)
    with pytest.raises(ValueError, match="table_index"):
        EntropyTables(rows, np.full((1, 1, 2), 2), lut, 12, ContextScheme(2))
    with pytest.raises(ValueError, match="contexts per table set"):
        EntropyTables(
            rows, np.zeros((1, 1, 3)), np.zeros((1, 4), np.int64), 12, ContextScheme(2, 1)
        )
    with pytest.raises(ValueError, match="ascending"):
        ContextScheme(2, 0, (4, 2))


@pytest.mark.parametrize("edges", [(), (1, 3, 6)])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (8, 8), (17, 29)])
def test_round_trip_with_checkerboard_contexts(shape: tuple[int, int], edges) -> None:
    t = _tables(spatial=5, edges=edges)
    idx = _sample(t, 1, *shape, seed=4)
    data = encode_indices(idx, t, 1)
    np.testing.assert_array_equal(decode_indices(data, t, 1, *shape), idx)
    real_bits = 8 * len(data)
    assert real_bits >= t.ideal_bits(idx, 1) * 0.99 - 64


def test_checkerboard_contexts_follow_the_documented_rule() -> None:
    rng = np.random.default_rng(5)
    levels = rng.integers(0, 3, (3, 6, 7))
    ctx = ContextScheme(3, 4).contexts(levels)
    chan = contexts_from_levels(levels, 3)
    for g, i, j in [(0, 0, 0), (1, 2, 3), (2, 5, 6), (2, 3, 3), (1, 0, 1)]:
        if (i + j) % 2 == 0:
            assert ctx[g, i, j] == chan[g, i, j]
        else:
            nb = sum(
                levels[g, i + di, j + dj]
                for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1))
                if 0 <= i + di < 6 and 0 <= j + dj < 7
            )
            assert ctx[g, i, j] == 3 + chan[g, i, j] * 4 + min(3, nb)
    assert ctx.max() < 3 * (1 + 4)


def test_checkerboard_contexts_numpy_and_torch_twins_agree() -> None:
    from aecodec.model.quantizer import _contexts_torch

    rng = np.random.default_rng(6)
    levels = rng.integers(0, 4, (2, 9, 9, 13)) * (rng.random((2, 9, 9, 13)) < 0.4)
    for scheme in (ContextScheme(4, 7), ContextScheme(4, 3, (1, 2, 4)), ContextScheme(4, 0, (2,))):
        got = _contexts_torch(torch.from_numpy(levels), scheme).numpy()
        for b in range(2):
            np.testing.assert_array_equal(got[b], scheme.contexts(levels[b]))


def test_activity_contexts_follow_the_documented_rule() -> None:
    rng = np.random.default_rng(8)
    levels = rng.integers(0, 3, (6, 4, 5)) * (rng.random((6, 4, 5)) < 0.5)
    scheme = ContextScheme(3, 2, (1, 3))
    ctx = scheme.contexts(levels)
    chan = contexts_from_levels(levels, 3)
    for g, i, j in [(0, 0, 0), (3, 1, 1), (5, 2, 2), (5, 1, 2), (4, 0, 3)]:
        active = int((levels[:g, i, j] > 0).sum())
        base = chan[g, i, j] * 3 + (0 if active < 1 else 1 if active < 3 else 2)
        if (i + j) % 2 == 0:
            assert ctx[g, i, j] == base
        else:
            nb = sum(
                levels[g, i + di, j + dj]
                for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1))
                if 0 <= i + di < 4 and 0 <= j + dj < 5
            )
            assert ctx[g, i, j] == 9 + base * 2 + min(1, nb)


def test_tables_pickle_without_coder_models() -> None:
    import pickle

    t = _tables(spatial=2)
    idx = _sample(t, 0, 5, 6)
    data = encode_indices(idx, t, 0)  # builds the cached constriction models
    t2 = pickle.loads(pickle.dumps(t))
    np.testing.assert_array_equal(decode_indices(data, t2, 0, 5, 6), idx)


def test_mix_rows_follows_the_documented_rule() -> None:
    low = np.array([[1, 1, 14], [4, 4, 8]])
    high = np.array([[14, 1, 1], [8, 4, 4]])
    # 37/100 of high: floor((63 * low + 37 * high) / 100), the shortfall to the first largest
    want = np.array([[5, 1, 9 + 1], [5, 4, 6 + 1]])  # 5.81, 1, 9.19 and 5.48, 4, 6.52
    np.testing.assert_array_equal(mix_rows(low, high, 37, 100, 4), want)
    np.testing.assert_array_equal(mix_rows(low, high, 0, 100, 4), low)
    np.testing.assert_array_equal(mix_rows(low, high, 100, 100, 4), high)
    rng = np.random.default_rng(3)
    a, b = (tables_from_logits(rng.normal(size=(50, 256)) * 4, 16) for _ in range(2))
    for w in (1, 37, 50, 99):
        m = mix_rows(a, b, w, 100, 16)
        assert (m >= 1).all() and (m.sum(-1) == 2**16).all()
        assert (np.minimum(a, b) - 1 <= m).all() and (m <= np.maximum(a, b) + 256).all()


@pytest.mark.parametrize("spatial", [0, 2])
def test_tables_between_two_qualities_mix_each_context_and_round_trip(spatial: int) -> None:
    t = _tables(q=3, spatial=spatial, edges=(1,) if spatial else ())
    fine = t.between(1, 37, 100)
    assert fine.shape[:3] == (1, *t.shape[1:3])
    want = mix_rows(t.rows(1), t.rows(2), 37, 100, 16)
    np.testing.assert_array_equal(fine.rows(0), want)
    assert len(fine.freqs) == len(np.unique(fine.freqs, axis=0))  # one row per distinct pair
    idx = _sample(fine, 0, 9, 11)
    data = encode_indices(idx, fine, 0)
    np.testing.assert_array_equal(decode_indices(data, t.between(1, 37, 100), 0, 9, 11), idx)
    for bad in ((2, 37), (-1, 37), (1, 0), (1, 100)):
        with pytest.raises(ValueError, match="no quality between"):
            t.between(*bad, 100)
