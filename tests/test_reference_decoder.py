"""docs/FORMAT.md is enough to decode the indices: an independent decoder written from it
(tests/reference_decoder.py, no constriction, no aecodec.entropy) agrees with aecodec."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from helpers import GOLDEN
from reference_decoder import PayloadError, coder_cdf, decode_tile_array

from aecodec import container, imageio
from aecodec.entropy import (
    ContextScheme,
    EntropyTables,
    decode_indices,
    encode_indices,
    tables_from_logits,
)
from aecodec.errors import FormatError
from aecodec.weightsfile import load_weights

EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


def _reference(
    payload: bytes, tables: EntropyTables, q: int, h: int, w: int, hundredths: int = 0
) -> np.ndarray:
    s = tables.scheme
    return decode_tile_array(
        payload,
        tables.freqs,
        tables.table_index,
        tables.level_lut,
        tables.prob_bits,
        s.num_levels,
        s.spatial,
        s.activity_edges,
        q,
        h,
        w,
        hundredths,
    )


def _tile_payloads(data: bytes, down: int = 16) -> list[tuple[bytes, int, int, int, int]]:
    """(payload, quality index, latent height, latent width, quality hundredths) of each tile
    of a file."""
    bs = container.unpack(data)
    h = bs.header
    whole, hundredths = divmod(h.quality_steps, container.QUALITY_STEPS)
    rects = imageio.tiles(h.width, h.height, h.tile_width, h.tile_height)
    return [
        (bytes(p), whole - 1, -(-th // down), -(-tw // down), hundredths)
        for (_, _, tw, th), p in zip(rects, bs.tiles, strict=True)
    ]


def _aecodec(payload: bytes, tables: EntropyTables, q: int, h: int, w: int, n: int) -> np.ndarray:
    """aecodec's decoding of a payload of quality index q plus n hundredths."""
    if n:
        return decode_indices(payload, tables.between(q, n, container.QUALITY_STEPS), 0, h, w)
    return decode_indices(payload, tables, q, h, w)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_reference_decoder_reproduces_the_golden_indices(stem: str) -> None:
    tables = load_weights(str(GOLDEN / "tiny.safetensors")).tables
    data = (GOLDEN / f"{stem}.aec").read_bytes()
    hashes = []
    for payload, q, h, w, n in _tile_payloads(data):
        ref = _reference(payload, tables, q, h, w, n)
        assert np.array_equal(ref, _aecodec(payload, tables, q, h, w, n))
        hashes.append(hashlib.sha256(ref.astype("<i8").tobytes()).hexdigest())
    assert hashes == EXPECTED[stem]["tile_indices_sha256"]


def _context_tables(seed: int, k: int = 16, prob_bits: int = 16) -> EntropyTables:
    """Random tables with L = 3 levels, S = 3 spatial contexts and activity edges (1, 3)."""
    rng = np.random.default_rng(seed)
    scheme = ContextScheme(3, 3, (1, 3))
    g = 6
    rows = tables_from_logits(rng.normal(size=(9, k)) * 4, prob_bits).astype(np.int64)
    index = rng.integers(0, 9, (2, g, scheme.num_contexts))
    lut = rng.integers(0, 3, (g, k))
    lut[:, 0] = 0  # index 0 is the zero level, as in trained models
    return EntropyTables(rows, index, lut, prob_bits, scheme)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 7)])
def test_reference_decoder_round_trip_spatial_and_activity_contexts(
    seed: int, shape: tuple[int, int]
) -> None:
    tables = _context_tables(seed)
    rng = np.random.default_rng(100 + seed)
    q = seed % 2
    # Skewed indices (mostly zeros, like real latents) and some uniformly random ones.
    idx = np.where(rng.random((6, *shape)) < 0.6, 0, rng.integers(0, 16, (6, *shape)))
    payload = encode_indices(idx, tables, q)
    assert np.array_equal(_reference(payload, tables, q, *shape), idx)


def test_reference_decoder_round_trip_large_codebook_and_12_bit_rows() -> None:
    """K = 1024 at prob_bits = 12 and K = 4096 at 16: the rounding of the coder's table."""
    for k, bits in ((1024, 12), (4096, 16)):
        rng = np.random.default_rng(k)
        rows = tables_from_logits(rng.normal(size=(2, k)) * 6, bits).astype(np.int64)
        index = rng.integers(0, 2, (1, 3, 2))
        tables = EntropyTables(rows, index, rng.integers(0, 2, (3, k)), bits, ContextScheme(2))
        idx = rng.integers(0, k, (3, 4, 5))
        payload = encode_indices(idx, tables, 0)
        assert np.array_equal(_reference(payload, tables, 0, 4, 5), idx)


@pytest.mark.parametrize("seed", range(3))
def test_zero_frequency_symbols_still_code_and_both_decoders_agree(seed: int) -> None:
    """Rows with zero entries (models whose tables expect some symbols never to occur):
    such a symbol still codes, at 24 bits, and a fine quality mixes such rows exactly."""
    tables = _context_tables(seed)
    freqs = tables.freqs.copy()
    rng = np.random.default_rng(seed)
    for row in freqs:
        top = int(row.argmax())
        zero = rng.random(row.size) < 0.7
        zero[top] = False
        row[top] += row[zero].sum()
        row[zero] = 0
    tables = EntropyTables(freqs, tables.table_index, tables.level_lut, 16, tables.scheme)
    assert (tables.freqs == 0).any()
    assert (tables.code_lengths(0)[tables.rows(0) == 0] == 24).all()
    # Skewed indices that include zero-frequency symbols.
    idx = np.where(rng.random((6, 5, 7)) < 0.5, 0, rng.integers(0, 16, (6, 5, 7)))
    lengths = tables.code_lengths(1)[np.arange(6)[:, None, None], tables.contexts(idx), idx]
    assert (lengths == 24).sum() >= 5, "the test must code zero-frequency symbols"
    payload = encode_indices(idx, tables, 1)
    assert np.array_equal(_reference(payload, tables, 1, 5, 7), idx)
    assert np.array_equal(decode_indices(payload, tables, 1, 5, 7), idx)
    fine = encode_indices(idx, tables.between(0, 37, container.QUALITY_STEPS), 0)
    assert np.array_equal(_reference(fine, tables, 0, 5, 7, 37), idx)
    # A row with one symbol at 2^16 - 1 codes that symbol almost for free.
    lone = np.zeros((1, 16), np.int64)
    lone[0, 3], lone[0, 5] = 2**16 - 1, 1
    no_context = np.zeros((1, 1, 1), np.int64)
    one = EntropyTables(lone, no_context, np.zeros((1, 16), np.int64), 16, ContextScheme(1))
    many = np.full((1, 64, 64), 3)
    assert len(encode_indices(many, one, 0)) <= 8


def test_coder_cdf_leaks_a_minimum_probability_to_every_symbol() -> None:
    # floor(F_i * (2^24 - K) / 2^16) + i: the three 1/65536 symbols get 257 of 2^24 each.
    assert coder_cdf([65533, 1, 1, 1], 16) == [0, 16776445, 16776702, 16776959, 2**24]
    # A near-uniform row: 255.99... of 2^24 per unit of frequency, plus one.
    assert coder_cdf([1, 1, 65534], 16) == [0, 256, 513, 2**24]
    with pytest.raises(ValueError):
        coder_cdf([2**16], 16)  # constriction refuses a single-symbol row
    # A zero frequency keeps only the leak: probability 2^-24.
    assert coder_cdf([0, 65535, 1, 0], 16) == [0, 1, 16776958, 16777215, 2**24]


def test_reference_decoder_agrees_with_aecodec_on_damaged_payloads() -> None:
    """Mutated payloads: both decoders reject, or both decode the same indices."""
    tables = _context_tables(7)
    rng = np.random.default_rng(7)
    idx = np.where(rng.random((6, 4, 5)) < 0.5, 0, rng.integers(0, 16, (6, 4, 5)))
    good = encode_indices(idx, tables, 1)
    # Valid oddities first: the empty payload decodes to all zeros (the coder starts empty
    # and symbol 0 of any row keeps an empty coder empty); then malformed ones.
    payloads = [good, b"", b"\0\0\0", good + bytes(4), bytes(4) + good]
    for trial in range(60):
        raw = bytearray(good)
        if trial % 3 == 0:
            del raw[-4 * int(rng.integers(1, len(raw) // 4 + 1)) :]
        elif trial % 3 == 1:
            raw += rng.integers(0, 256, 4 * int(rng.integers(1, 3)), dtype=np.uint8).tobytes()
        else:
            raw[int(rng.integers(0, len(raw)))] ^= 1 << int(rng.integers(0, 8))
        payloads.append(bytes(raw))
    decoded = []
    for payload in payloads:
        try:
            want = decode_indices(payload, tables, 1, 4, 5)
        except FormatError:
            with pytest.raises(PayloadError):
                _reference(payload, tables, 1, 4, 5)
        else:
            assert np.array_equal(_reference(payload, tables, 1, 4, 5), want)
            decoded.append(want)
    assert len(decoded) == 2 and not decoded[1].any()  # the good payload and the empty one


def test_reference_decoder_decodes_the_default_model(default_codec) -> None:
    """A 64x48 photo (the bundled sample, downscaled) coded with the bundled default model."""
    from PIL import Image

    from aecodec.data import sample_image

    if not sample_image().exists():
        pytest.skip("the sample photo is not bundled in aecodec/data")
    image = Image.open(sample_image()).convert("RGB").resize((64, 48), Image.Resampling.LANCZOS)
    tables = default_codec.tables
    for quality in (1, default_codec.default_quality, 4.37):
        data = default_codec.compress(np.asarray(image), quality=quality)
        [(payload, q, h, w, n)] = _tile_payloads(data, default_codec.config.downsampling)
        ref = _reference(payload, tables, q, h, w, n)
        assert ref.shape == (default_codec.config.num_groups, 3, 4)
        assert np.array_equal(ref, _aecodec(payload, tables, q, h, w, n))
        assert ref.any()
