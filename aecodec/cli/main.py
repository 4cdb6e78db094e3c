"""The ``aecodec`` command: the group and its subcommands, one module per concern.

=====================  =====================================================
module                 commands
=====================  =====================================================
:mod:`aecodec.cli.compress`    ``compress``
:mod:`aecodec.cli.decompress`  ``decompress``
:mod:`aecodec.cli.info`        ``info``
:mod:`aecodec.cli.models`      ``models``, ``demo``
:mod:`aecodec.cli.train`       ``train``, ``export``, ``onnx``
:mod:`aecodec.cli.bench`       ``bench``, ``compare`` (from a source checkout)
=====================  =====================================================

A thin layer over the public API of :mod:`aecodec`. Importing it is cheap: torch is only
imported (by aecodec) when a codec is actually built, and ``train``'s options (made from
``TrainConfig``) only when ``aecodec train`` runs.
"""

from __future__ import annotations

import click

import aecodec
from aecodec.cli import bench, compress, decompress, info, models, train
from aecodec.cli.common import PROG, VERBOSE_HELP


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"{PROG} {getattr(aecodec, '__version__', 'unknown')}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.option("-v", "--verbose", is_flag=True, help=VERBOSE_HELP)
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """aecodec: a learned (autoencoder) image codec. Files use the .aec suffix."""
    ctx.ensure_object(dict)["verbose"] = verbose


for _command in (
    compress.compress,
    decompress.decompress,
    info.info,
    models.models,
    models.demo,
    train.train,
    train.export,
    train.onnx,
    bench.bench,
    bench.compare,
):
    main.add_command(_command)

if __name__ == "__main__":
    main(prog_name=PROG)
