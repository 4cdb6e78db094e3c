"""``aecodec train`` (also ``python -m aecodec.train``, under ``torchrun``) and ``aecodec export``.

The training options are made from the fields of :class:`aecodec.train.loop.TrainConfig`, so
their defaults have one home; this module adds only their help texts (:data:`TRAIN_OPTIONS`).
Importing ``TrainConfig`` imports torch, so the options are built the first time ``train``
parses its arguments or shows its help, never when ``aecodec`` starts.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import click

from aecodec.cli.common import describe_error, fail

#: TrainConfig field -> its option: ``help``, and where the default spelling does not fit, the
#: option's ``flag`` (default ``--field-name``) and click ``type``. Defaults come from TrainConfig.
TRAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "data": {"help": "Folder of training images."},
    "run": {"flag": "--run-dir", "help": "Run folder (checkpoints, metrics)."},
    "steps": {"help": "Total optimizer steps."},
    "batch": {"help": "Crops per optimizer step (per process)."},
    "crop": {"help": "Crop side (multiple of 16)."},
    "lr": {"help": "Peak learning rate."},
    "warmup": {"help": "Linear warm-up steps."},
    "final_lr_ratio": {"help": "Cosine decay floor."},
    "seed": {"help": "Seed of the initialisation and the crops."},
    "commit_weight": {"help": "Weight of the commitment term ||y - sg(c)||^2 (in rate units)."},
    "quality_balance": {
        "help": "Weight each sample's loss by (lambda_min / lambda_q) ** this "
        "(evens out gradients)."
    },
    "threads": {"help": "torch threads per process."},
    "val_every": {"help": "Validate every this many steps."},
    "ckpt_every": {"help": "Write a checkpoint every this many steps."},
    "init": {
        "help": "Start from these weights (a .safetensors file, a bundled model's name or a "
        "checkpoint), or 'pca' (a PCA block coder; needs --linear-path)."
    },
    "bf16": {
        "help": "bfloat16 autocast for the transforms. Default: on where the CPU has native bf16 "
        "(avx512_bf16/amx_bf16), off elsewhere (emulated bf16 is ~20x slower)."
    },
    "arch": {
        "type": click.Choice(["vq", "factorized"]),
        "help": "vq: the aecodec model; factorized: the same-budget CompressAI "
        "bmshj2018-factorized baseline (one rate point: pass one --lambdas value).",
    },
    "train_only": {
        "type": click.Choice(["all", "decoder"]),
        "help": "decoder: train the synthesis only (indices and rate stay fixed; PSNR only "
        "improves).",
    },
    "lr_table_scale": {
        "help": "Scale of the probability tables' learning rate (1e-2 by default).",
    },
    "lr_linear": {
        "help": "Peak learning rate of the linear block transforms (--linear-path); keep it "
        "about lr/5 when fine-tuning (Adam's first steps move every weight by about this).",
    },
    "count_tables": {
        "help": "Train with count tables (shared rows of decayed symbol counts, as exported) "
        "instead of learned logits; needed for many contexts. With --init weights, their rows.",
    },
    "table_halflife": {"help": "Half-life in steps of the count tables' counts."},
    "fresh_quantizer": {
        "help": "With --init weights: keep their transforms and gains but start the codebooks "
        "(lattice) and tables afresh (automatic when --group-dim or --codebook-size differ)."
    },
    "device": {
        "help": "auto (a GPU where torch sees one, else the CPU), cpu, cuda or cuda:N. On a GPU "
        "bf16 autocast is on."
    },
}

#: TrainConfig fields with no option, and why.
NOT_OPTIONS: dict[str, str] = {
    "lr_table": "scaled by --lr-table-scale",
    "num_val": "fixed, so validation numbers compare across runs",
    "val_crop": "fixed, so validation numbers compare across runs",
    "model": "made from --channels, --latent-channels, ... and --lambdas",
}

#: Model options: ModelConfig fields passed through TrainConfig.model when given.
_MODEL_FIELDS = (
    "channels",
    "latent_channels",
    "codebook_size",
    "group_dim",
    "linear_path",
    "refine_channels",
    "synthesis_channels",
    "name",
)


def train_options() -> list[click.Option]:
    """The click options of the TrainConfig fields in :data:`TRAIN_OPTIONS` (imports torch)."""
    from aecodec.train.loop import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = set(fields) - set(TRAIN_OPTIONS) - set(NOT_OPTIONS)
    if unknown:
        raise RuntimeError(f"TrainConfig fields without an option or a reason: {sorted(unknown)}")
    return [_option(fields[name], hints[name], spec) for name, spec in TRAIN_OPTIONS.items()]


def _option(f: dataclasses.Field[Any], hint: Any, spec: dict[str, Any]) -> click.Option:
    flag = spec.get("flag", "--" + f.name.replace("_", "-"))
    if hint == bool | None:  # --x/--no-x, default None: decided at run time
        return click.Option([f"{flag}/--no-{flag[2:]}", f.name], default=None, help=spec["help"])
    if hint is bool:
        return click.Option([flag, f.name], is_flag=True, default=f.default, help=spec["help"])
    if hint not in (int, float, str):
        raise TypeError(f"TrainConfig.{f.name}: no option for type {hint}")
    return click.Option(
        [flag, f.name],
        type=spec.get("type", hint),
        default=f.default,
        show_default=f.default not in ("", None),
        help=spec["help"],
    )


class _TrainCommand(click.Command):
    """A command whose leading options are :func:`train_options`, built on first use."""

    _built = False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not self._built:
            self.params[:0] = train_options()
            self._built = True
        return super().get_params(ctx)


@click.command(cls=_TrainCommand)
@click.option(
    "--lambdas", default=None, help="Comma-separated RD trade-offs, one per quality (ascending)."
)
@click.option("--channels", type=int, default=None, help="Hidden width N.")
@click.option("--latent-channels", type=int, default=None, help="Latent channels M.")
@click.option("--codebook-size", type=int, default=None, help="Codewords per group K.")
@click.option("--group-dim", type=int, default=None, help="Dimensions per codebook d.")
@click.option(
    "--linear-path/--no-linear-path",
    default=None,
    help="Add a linear 16x16 block transform beside the convolutions.",
)
@click.option(
    "--synthesis-channels",
    type=int,
    default=None,
    help="Width of the synthesis' hidden layers (default: --channels); wider than the --init "
    "weights' widens them with the same function (new channels start with zero outgoing "
    "weights).",
)
@click.option(
    "--refine-channels",
    type=int,
    default=None,
    help="Width of a residual post-filter on the decoded image (0: none); it starts as the "
    "identity, so it can be added to --init weights.",
)
@click.option("--name", default=None, help="Model name (written into bitstreams).")
@click.option(
    "--resume", is_flag=True, help="Continue the run in --run-dir exactly where it stopped."
)
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop (validated, checkpointed, resumable) after the first step past this much wall "
    "time; the schedule is unchanged (a GPU lease's budget).",
)
@click.pass_context
def train(
    ctx: click.Context,
    lambdas: str | None,
    resume: bool,
    no_progress: bool,
    minutes: float | None,
    **kw: Any,
) -> None:
    """Train the VQ model (also under `torchrun --nproc_per_node=N`).

    With --resume the run continues with its own settings and schedule; --steps, if given,
    stretches or shortens the schedule, and --threads is this machine's."""
    import logging

    from aecodec.train.loop import TrainConfig
    from aecodec.train.loop import train as run_training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    given = {key: kw.pop(key) for key in _MODEL_FIELDS}
    model: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    if lambdas:
        model["lambdas"] = [float(v) for v in lambdas.split(",")]
    cfg = TrainConfig(**kw, model=model)
    try:
        steps_given = ctx.get_parameter_source("steps") is click.core.ParameterSource.COMMANDLINE
        run = run_training(
            cfg, resume=resume, progress=not no_progress, new_steps=steps_given, minutes=minutes
        )
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        fail(describe_error(exc))
    click.echo(f"run folder: {run}")


@click.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--name", default=None, help="Model name (default: the run's).")
@click.option(
    "--weights-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write (default: the bundled aecodec/weights).",
)
@click.option("--default-quality", type=int, default=None)
@click.option("--description", default="", help="One line for `aecodec models`.")
@click.option("--no-default", is_flag=True, help="Do not make it the default model.")
@click.option(
    "--spatial-contexts",
    type=int,
    default=None,
    help="Code with this many checkerboard spatial contexts (default: the run's).",
)
@click.option(
    "--activity-edges",
    default=None,
    help="Comma-separated bucket edges of the activity context, e.g. 1,2,4,8,16,32 "
    "(default: the run's).",
)
@click.option(
    "--fit-tables",
    type=int,
    default=0,
    show_default=True,
    help="Refit the entropy tables by counting on the run's training images, shared in this "
    "many rows (0: quantize the learned tables).",
)
@click.option("--fit-images", type=int, default=0, help="Fit on at most this many images (0: all).")
@click.option(
    "--tables-from",
    default=None,
    help="Code with the integer tables of these weights (model name or .safetensors), e.g. "
    "the --init model's after --train-only decoder (same indices).",
)
@click.option(
    "--zero-below",
    type=float,
    default=0.0,
    show_default=True,
    help="Give frequency 0 to each table row's symbols of estimated probability below this "
    "(counted on training images; they cost 24 bits if they ever occur, and an unused channel "
    "then costs almost nothing). 1e-6 is the measured choice; 0: keep every symbol.",
)
@click.option(
    "--zero-images",
    type=int,
    default=200,
    show_default=True,
    help="With --zero-below: count on this many training images (256x256 centre crops).",
)
@click.option(
    "--delta-from",
    default=None,
    help="A bundled model this run was fine-tuned from: store the networks as 8-bit "
    "differences from its (quantized before the tables are counted; about a quarter of the "
    "bytes of a file of its own).",
)
def export(
    run: Path,
    name: str | None,
    weights_dir: Path | None,
    default_quality: int | None,
    description: str,
    no_default: bool,
    spatial_contexts: int | None,
    activity_edges: str | None,
    fit_tables: int,
    fit_images: int,
    tables_from: str | None,
    zero_below: float,
    zero_images: int,
    delta_from: str | None,
) -> None:
    """Export a run's best checkpoint to safetensors weights + manifest entry.

    RUN may also be a .safetensors weights file: its networks are written under a new --name
    with its own tables (or --tables-from / --fit-tables / --zero-below ones).

    A run of the CompressAI baseline (--arch factorized) is written as RUN/compressai.pt
    instead, for `aecodec bench --codecs compressai-factorized --compressai-checkpoint`.
    """
    from aecodec.errors import ModelError
    from aecodec.train.export import FitOptions, ZeroOptions, run_summary
    from aecodec.train.export import export as do_export
    from aecodec.weightsfile import WEIGHTS_DIR

    if _export_baseline(run):
        return
    bars: list[Any] = []
    fit = None
    if fit_tables:
        from tqdm import tqdm

        bar = tqdm(desc="fitting tables (images x rounds)", unit="img", dynamic_ncols=True)
        bars.append(bar)
        fit = FitOptions(num_tables=fit_tables, max_images=fit_images, progress=bar.update)
    zero = None
    if zero_below < 0 or zero_below >= 1:
        fail(f"--zero-below must be in [0, 1), got {zero_below}")
    if zero_below > 0:
        from tqdm import tqdm

        zero_bar = tqdm(desc="counting symbols (images)", unit="img", dynamic_ncols=True)
        bars.append(zero_bar)
        zero = ZeroOptions(zero_below, zero_images, progress=zero_bar.update)
    try:
        entry = do_export(
            run,
            name=name,
            weights_dir=weights_dir or WEIGHTS_DIR,
            default_quality=default_quality,
            description=description,
            make_default=not no_default,
            training=run_summary(run),
            contexts=_context_scheme(run, spatial_contexts, activity_edges),
            fit=fit,
            tables_from=tables_from,
            zero=zero,
            delta_from=delta_from,
        )
    except (FileNotFoundError, ValueError, ModelError) as exc:
        fail(describe_error(exc))
    finally:
        for b in bars:
            b.close()
    if "file" in entry:
        sha = entry["sha256"][:16]
        click.echo(f"wrote {entry['file']} ({entry['bytes']} bytes, sha256 {sha}...)")
    else:
        spec = entry["assembled"]
        part = (weights_dir or WEIGHTS_DIR) / spec["part"]["file"]
        click.echo(
            f"wrote {part.name} ({part.stat().st_size} bytes: its own tensors and the "
            f"differences from {spec['delta']['base']}; the model is {entry['bytes']} bytes "
            f"rebuilt, sha256 {entry['sha256'][:16]}...)"
        )


def _context_scheme(run: Path, spatial: int | None, edges: str | None) -> Any:
    """The export's context scheme: the run's, with --spatial-contexts / --activity-edges."""
    if spatial is None and edges is None:
        return None
    from aecodec.entropy import ContextScheme
    from aecodec.model.config import ModelConfig
    from aecodec.train.export import load_checkpoint

    old = ModelConfig.from_json(load_checkpoint(run)["config"]).context_scheme()
    try:
        parsed = tuple(int(v) for v in edges.split(",") if v) if edges is not None else None
        return ContextScheme(
            old.num_levels,
            old.spatial if spatial is None else spatial,
            old.activity_edges if parsed is None else parsed,
        )
    except ValueError as exc:
        fail(f"--spatial-contexts/--activity-edges: {exc}")


def _export_baseline(run: Path) -> bool:
    """Write a CompressAI-baseline run (``--arch factorized``) as RUN/compressai.pt; False for
    an aecodec run."""
    from aecodec.train.export import load_checkpoint

    if run.suffix == ".safetensors":
        return False
    try:
        ck = load_checkpoint(run)
        if ck.get("train_config", {}).get("arch", "vq") != "factorized":
            return False
        from aecodec.train.baseline import export_compressai

        out = export_compressai(ck, run / "compressai.pt")
    except (FileNotFoundError, ValueError) as exc:
        fail(describe_error(exc))
    click.echo(f"wrote {out} (CompressAI FactorizedPrior state dict, not bundled)")
    return True


@click.command()
@click.argument("models", nargs=-1)
@click.option(
    "--weights-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The bundle's folder (default: the bundled aecodec/weights).",
)
def onnx(models: tuple[str, ...], weights_dir: Path | None) -> None:
    """Write the ONNX Runtime graphs of bundled MODELS (default: all whose transforms have
    the layout of their own) beside their weights: NAME.synthesis.onnx and NAME.analysis.onnx,
    a few KB each whose tensors point into the .safetensors files. With them, decoding and
    encoding (1-D codebooks) never import torch."""
    from aecodec.errors import ModelError
    from aecodec.train.onnxgraph import write_analysis_graph, write_synthesis_graph
    from aecodec.weightsfile import WEIGHTS_DIR, read_manifest

    folder = weights_dir or WEIGHTS_DIR
    names = list(models) or sorted(read_manifest(folder)["models"])
    for name in names:
        for write in (write_synthesis_graph, write_analysis_graph):
            try:
                path = write(name, folder)
            except ImportError as exc:
                fail(f"{exc}; install it with: pip install 'onnx>=1.17,<1.18'")
            except (KeyError, ModelError, ValueError) as exc:
                if models:
                    fail(f"{name}: {describe_error(exc)}")
                click.echo(f"skipped {name}: {describe_error(exc)}")
                break
            click.echo(f"wrote {path.name} ({path.stat().st_size} bytes)")
