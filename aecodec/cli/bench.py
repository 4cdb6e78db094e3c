"""``aecodec bench`` (the RD benchmark on Kodak, ``python -m benchmarks.rd``) and ``aecodec
compare`` (codecs side by side at one size, ``python -m benchmarks.compare``).

``benchmarks/`` and ``kodak/`` are tools of a source checkout, not installed with aecodec: this
command runs them from the checkout that holds this ``cli`` package (an editable install, or
``PYTHONPATH=.``), and says so otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from aecodec.cli.common import fail

CHECKOUT = Path(__file__).resolve().parents[2]  # aecodec/cli/bench.py -> the checkout


def _checkout_command(name: str, module: str, summary: str) -> click.Command:
    """``aecodec NAME ARGS...`` = ``python -m benchmarks.MODULE ARGS...`` (its own --help)."""

    @click.command(
        name,
        help=summary,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        _find_benchmarks()
        import importlib

        tool = importlib.import_module(f"benchmarks.{module}")
        tool.main.main(list(args), prog_name=f"aecodec {name}")

    return command


bench = _checkout_command(
    "bench",
    "rd",
    "RD benchmark on Kodak vs JPEG & co (= python -m benchmarks.rd; --help for options).",
)
compare = _checkout_command(
    "compare",
    "compare",
    "Codecs side by side at one file size: a picture of crops (--help for options).",
)


def _find_benchmarks() -> None:
    """Make ``benchmarks`` and ``kodak`` importable from the checkout, or fail with the fix.

    The checkout's root goes on ``sys.path`` (not only into ``sys.modules``): the benchmark's
    spawned worker processes import ``benchmarks.rd`` themselves.
    """
    if not (CHECKOUT / "benchmarks" / "rd.py").is_file():
        fail(
            "aecodec bench runs the benchmarks of a source checkout, which are not installed: "
            "clone the repository, install it with `pip install -e .[bench]` and run "
            "`aecodec bench` (or `python -m benchmarks.rd`) there"
        )
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
