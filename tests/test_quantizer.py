"""The VQ model: eval output equals the decode of its indices; shapes; training signals."""

from __future__ import annotations

from typing import Any

import torch
from helpers import TINY_PLAIN

from aecodec.model.config import ModelConfig
from aecodec.model.vqvae import VQVAE

CFG = ModelConfig(**TINY_PLAIN)  # the 2-D path; the 1-D one has tests of its own below


def _net() -> VQVAE:
    torch.manual_seed(0)
    net = VQVAE(CFG)
    with torch.no_grad():
        net.log_gain.fill_(3.0)
    return net.eval()


def test_eval_output_equals_decode_of_indices() -> None:
    net = _net()
    x = torch.rand(2, 3, 32, 48)
    q = torch.tensor([0, 1])
    with torch.no_grad():
        out = net(x, q)
        for i in range(2):
            dec = net.decode_indices(out.indices[i : i + 1], int(q[i]))
            torch.testing.assert_close(dec, out.x_hat[i : i + 1].clamp(0, 1), rtol=0, atol=1e-6)


def test_shapes_and_index_range() -> None:
    net = _net()
    out = net(torch.rand(3, 3, 64, 32), torch.tensor([0, 1, 1]))
    assert out.x_hat.shape == (3, 3, 64, 32)
    assert out.indices.shape == (3, CFG.num_groups, 4, 2)
    assert out.indices.min() >= 0 and out.indices.max() < CFG.codebook_size
    assert out.bits.shape == (3,) and (out.bits > 0).all()


def test_gradients_reach_encoder_codebook_and_tables() -> None:
    net = _net().train()
    out = net(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    (out.x_hat.pow(2).mean() + out.bits.mean() + out.commit.mean()).backward()
    first: Any = net.g_a.get_submodule("0")
    for p in (first.weight, net.quantizer.codebook, net.quantizer.logits):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_rate_term_biases_assignment_to_cheap_codewords() -> None:
    net = _net()
    qz = net.quantizer
    y = torch.zeros(1, 8, 1, 1) + 0.45  # nearly halfway between two grid points
    bits = torch.zeros(1, CFG.num_groups, CFG.num_levels, CFG.codebook_size)
    near = qz.assign(y, bits)
    expensive = bits.clone()
    expensive[..., near[0, :, 0, 0]] = 100.0  # make the nearest codeword very costly
    assert (qz.assign(y, expensive) != near).all()


def test_polyphase_synthesis_equals_transposed_convolutions() -> None:
    from aecodec.model.layers import polyphase_synthesis

    net = _net()
    idx = torch.randint(0, CFG.codebook_size, (1, CFG.num_groups, 3, 5))
    y = net.quantizer.dequantize(idx)
    with torch.no_grad():
        ref = net.g_s(y)
        got = polyphase_synthesis(net.g_s)(y)
    assert got.shape == ref.shape == (1, 3, 48, 80)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def _scalar_net(linear_path: bool = True) -> VQVAE:
    torch.manual_seed(0)
    cfg = ModelConfig(
        name="aecodec-scalar-test",
        channels=8,
        latent_channels=6,
        group_dim=1,
        codebook_size=64,
        num_levels=3,
        lambdas=(0.01, 0.05),
        linear_path=linear_path,
    )
    net = VQVAE(cfg)
    with torch.no_grad():
        net.quantizer.logits.normal_()  # uneven tables, so the rate term matters
    return net


def test_scalar_fast_path_assigns_like_the_full_search() -> None:
    """Training's 9-candidate search for 1-D codebooks picks what the coding path's search over
    all K codewords picks, and its code lengths are those of the chosen indices."""
    net = _scalar_net()
    qz = net.quantizer
    y = torch.randn(3, 6, 5, 4) * 6
    q = torch.tensor([0, 1, 1])
    y_hat, idx, bits, _ = qz(y, q)
    log2p = qz.log2_probs(q).detach()
    assert torch.equal(idx, qz.assign(y, -log2p))
    ctx = qz.contexts(idx, qz.level_lut())
    g = torch.arange(6).view(1, -1, 1, 1)
    b = torch.arange(3).view(-1, 1, 1, 1)
    expected = -log2p[b, g, ctx, idx].sum(dim=(1, 2, 3))
    torch.testing.assert_close(bits.detach(), expected)
    torch.testing.assert_close(y_hat.detach(), qz.dequantize(idx))


def test_linear_path_decoder_is_polyphase_convertible_and_exact() -> None:
    from aecodec.model.layers import polyphase_synthesis

    net = _scalar_net().eval()
    y = torch.randn(1, 6, 3, 5)
    with torch.no_grad():
        ref = net.g_s(y)
        got = polyphase_synthesis(net.g_s)(y)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
