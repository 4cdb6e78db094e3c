"""``aecodec bench``: the RD benchmark on Kodak (``python -m benchmarks.rd``)."""

from __future__ import annotations

import click


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """RD benchmark on Kodak vs JPEG & co (= python -m benchmarks.rd; --help for options)."""
    from benchmarks.rd import main as rd_main

    rd_main.main(list(args), prog_name="aecodec bench")
