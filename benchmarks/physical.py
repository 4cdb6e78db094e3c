"""How far from the CPU's limit are the networks? MACs per pixel vs measured matmul throughput.

    .venv/bin/python -m benchmarks.physical [--threads 2] [--out benchmarks/results/physical.md]

Counts the multiply-accumulates of the analysis (g_a) and synthesis (g_s) transforms per
pixel with forward hooks, measures this CPU's fp32 matmul throughput (2048x2048 ``torch.mm``),
times g_a and g_s on a 768x512 image, and reports the achieved fraction of that throughput.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import click
import torch
from torch import nn


def count_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of all convolutions in ``module`` for input ``x``."""
    total = 0

    def hook(
        m: nn.Conv2d | nn.ConvTranspose2d, inp: tuple[torch.Tensor, ...], out: torch.Tensor
    ) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        if isinstance(m, nn.ConvTranspose2d):
            total += inp[0].numel() * m.out_channels * k // m.groups
        else:
            total += out.numel() * m.in_channels * k // m.groups
        # GDN's 1x1 normalisation is an F.conv2d call, counted separately below.

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    from aecodec.model.layers import GDN

    gdn_macs = 0

    def gdn_hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal gdn_macs
        c = inp[0].shape[1]
        gdn_macs += inp[0].numel() * c

    handles += [m.register_forward_hook(gdn_hook) for m in module.modules() if isinstance(m, GDN)]
    with torch.inference_mode():
        module(x)
    for h in handles:
        h.remove()
    return total + gdn_macs


def _best_time(fn: Callable[[], object], repeat: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(n: int = 2048) -> float:
    """Best-of-5 fp32 GFLOP/s of an n x n matrix product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / _best_time(lambda: torch.mm(a, b)) / 1e9


@click.command()
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(threads: int, out: Path | None) -> None:
    """Print (and optionally write) the MAC count and the achieved fraction of peak."""
    torch.set_num_threads(threads)
    import aecodec

    codec = aecodec.get_codec()
    net = codec.net
    h, w = 512, 768
    x = torch.rand(1, 3, h, w)
    with torch.inference_mode():
        y = net.g_a(x)
    ga_macs = count_macs(net.g_a, x)
    gs_macs = count_macs(net.g_s, y)
    peak = matmul_gflops()
    with torch.inference_mode():
        t_ga = _best_time(lambda: net.g_a(x))
        t_gs = _best_time(lambda: net.g_s(y))
    rows = [
        ("g_a (analysis)", ga_macs, t_ga),
        ("g_s (synthesis)", gs_macs, t_gs),
    ]
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {threads} torch threads, "
        f"torch {torch.__version__}; model {codec.name}.",
        f"Measured fp32 matmul throughput (2048x2048 torch.mm, best of 5): {peak:.1f} GFLOP/s.",
        "",
        "| network | MAC / pixel | GMAC per 768x512 | time (s) | achieved GFLOP/s | of peak |",
        "|---|---|---|---|---|---|",
    ]
    for name, macs, t in rows:
        gflops = 2 * macs / t / 1e9
        lines.append(
            f"| {name} | {macs / (h * w):,.0f} | {macs / 1e9:.2f} | {t:.3f} | {gflops:.1f} "
            f"| {100 * gflops / peak:.0f} % |"
        )
    text = "\n".join(lines) + "\n"
    click.echo(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


if __name__ == "__main__":
    main()
