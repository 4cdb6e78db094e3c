"""Rate-distortion plots (PSNR-RGB and MS-SSIM vs bpp) from CompressAI-layout results.

As a command: ``python -m benchmarks.plot benchmarks/results/*.json -o rd.png``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

__all__ = ["Curve", "load_curve", "plot_rd"]


@dataclass
class Curve:
    """One RD curve, points sorted by rate.

    Attributes:
        label: Legend label.
        bpp: Bits per pixel.
        psnr: PSNR-RGB in dB (``nan`` where unknown).
        msssim: MS-SSIM in [0, 1] (``nan`` where unknown).
        published: Drawn dashed (reference curves from the anchors directory).
        extra: Any other per-point lists from the JSON (times, qualities).
    """

    label: str
    bpp: list[float]
    psnr: list[float]
    msssim: list[float]
    published: bool = False
    extra: dict[str, list[float]] = field(default_factory=dict)

    def points(self, metric: str) -> tuple[list[float], list[float]]:
        """``(bpp, values)`` of the points where ``metric`` ("psnr" or "msssim") is finite."""
        values = self.psnr if metric == "psnr" else self.msssim
        pairs = [
            (r, v)
            for r, v in zip(self.bpp, values, strict=True)
            if r is not None and v is not None and math.isfinite(r) and math.isfinite(v)
        ]
        return [p[0] for p in pairs], [p[1] for p in pairs]


def _floats(values: Sequence[float | None] | None, n: int) -> list[float]:
    if values is None:
        return [math.nan] * n
    return [math.nan if v is None else float(v) for v in values]


def load_curve(path: str | os.PathLike[str], *, published: bool = False) -> Curve:
    """Read a CompressAI-style results JSON (``{"name", "results": {"bpp", "psnr-rgb", ...}}``).

    Accepts ``ms-ssim-rgb`` or ``ms-ssim`` for MS-SSIM; either may be absent.

    Raises:
        ValueError: The file has no ``results.bpp`` list.
    """
    data = json.loads(Path(path).read_text())
    res = data.get("results", {})
    if "bpp" not in res:
        raise ValueError(f"{path}: not a results file (no results.bpp)")
    n = len(res["bpp"])
    bpp = _floats(res["bpp"], n)
    psnr = _floats(res.get("psnr-rgb", res.get("psnr")), n)
    msssim = _floats(res.get("ms-ssim-rgb", res.get("ms-ssim")), n)
    order = sorted(range(n), key=lambda i: bpp[i])
    extra = {
        k: [v[i] for i in order]
        for k, v in res.items()
        if k not in ("bpp", "psnr-rgb", "psnr", "ms-ssim-rgb", "ms-ssim")
        and isinstance(v, list)
        and len(v) == n
    }
    return Curve(
        label=str(data.get("name", Path(path).stem)),
        bpp=[bpp[i] for i in order],
        psnr=[psnr[i] for i in order],
        msssim=[msssim[i] for i in order],
        published=published,
        extra=extra,
    )


# A fixed colour per codec family (whatever the order of --codecs): (pattern, colour), the first
# pattern found in the lower-cased label wins. Published curves get a lighter shade of it.
FAMILY_COLOURS: tuple[tuple[str, str], ...] = (
    ("aecodec", "#000000"),
    ("avif", "#c92a2a"),
    ("av1", "#c92a2a"),
    ("jpeg xl", "#8c564b"),
    ("jxl", "#8c564b"),
    ("jpeg 2000", "#7b3fbf"),
    ("jpeg2000", "#7b3fbf"),
    ("jpeg 4:4:4", "#f59f00"),  # before plain JPEG
    ("jpeg", "#d9480f"),
    ("webp", "#2b8a3e"),
    ("bpg", "#d6336c"),
    ("hm", "#d6336c"),
    ("vtm", "#495057"),
    ("factorized", "#1c7ed6"),
    ("hyperprior", "#0c8599"),
    ("mbt2018", "#5f3dc4"),
    ("cheng2020", "#087f5b"),
)
OTHER_COLOUR = "#868e96"


def curve_style(curve: Curve) -> dict[str, object]:
    """Matplotlib style of a curve: its family's colour (:data:`FAMILY_COLOURS`); aecodec the
    strongest line; published curves dashed in a lighter shade of their family's colour."""
    from matplotlib.colors import to_rgb

    label = curve.label.lower()
    colour = next((c for key, c in FAMILY_COLOURS if key in label), OTHER_COLOUR)
    if curve.published:
        light = tuple(0.45 * v + 0.55 for v in to_rgb(colour))
        return {"color": light, "linestyle": "--", "linewidth": 1.2, "zorder": 1}
    if "aecodec" in label:
        return {"color": colour, "linewidth": 2.6, "marker": "o", "markersize": 4, "zorder": 4}
    return {"color": colour, "linewidth": 1.5, "marker": "o", "markersize": 3, "zorder": 3}


def plot_rd(
    curves: Sequence[Curve],
    path: str | os.PathLike[str],
    *,
    title: str = "Kodak",
    max_bpp: float | None = 2.0,
) -> Path:
    """Draw PSNR-RGB vs bpp and MS-SSIM vs bpp side by side and save as PNG.

    Measured curves are solid with markers, each codec family in a fixed colour (aecodec the
    strongest line); published (reference) curves dashed, in a lighter shade of their family's
    colour; one legend, outside the axes (:func:`curve_style`).

    Args:
        curves: The curves.
        path: Output PNG.
        title: Figure title.
        max_bpp: Right limit of the x axis (``None`` = automatic).

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    handles: dict[str, object] = {}
    ordered = sorted(curves, key=lambda c: (c.published, "aecodec" not in c.label.lower()))
    for ax, metric, ylabel in (
        (axes[0], "psnr", "PSNR-RGB [dB]"),
        (axes[1], "msssim", "MS-SSIM (RGB)"),
    ):
        for curve in ordered:
            x, y = curve.points(metric)
            if not x:
                continue
            label = f"{curve.label} (published)" if curve.published else curve.label
            (line,) = ax.plot(x, y, label=label, **curve_style(curve))
            handles.setdefault(label, line)
        ax.set_xlabel("bits per pixel (whole file)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if max_bpp is not None:
            ax.set_xlim(0, max_bpp)
    axes[0].set_title(f"{title}: PSNR-RGB")
    axes[1].set_title(f"{title}: MS-SSIM")
    fig.legend(handles=list(handles.values()), labels=list(handles), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", default="rd.png", show_default=True, type=click.Path(dir_okay=False))
@click.option(
    "--published",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Reference results drawn dashed (repeatable).",
)
@click.option("--max-bpp", type=float, default=2.0, show_default=True)
@click.option("--title", default="Kodak", show_default=True)
def main(
    results: tuple[str, ...], out: str, published: tuple[str, ...], max_bpp: float, title: str
) -> None:
    """Plot CompressAI-layout RESULTS JSON files (PSNR and MS-SSIM vs bpp)."""
    curves = [load_curve(p) for p in results] + [load_curve(p, published=True) for p in published]
    click.echo(f"wrote {plot_rd(curves, out, title=title, max_bpp=max_bpp)}")


if __name__ == "__main__":
    main()
