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

from cli.common import fail

CHECKOUT = Path(__file__).resolve().parent.parent


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """RD benchmark on Kodak vs JPEG & co (= python -m benchmarks.rd; --help for options)."""
    _find_benchmarks()
    from benchmarks.rd import main as rd_main

    rd_main.main(list(args), prog_name="aecodec bench")


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def compare(args: tuple[str, ...]) -> None:
    """Codecs side by side at one file size: a picture of crops (--help for options)."""
    _find_benchmarks()
    from benchmarks.compare import main as compare_main

    compare_main.main(list(args), prog_name="aecodec compare")


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
