"""The training loop: rate-distortion loss, LR schedule, validation, atomic checkpoints, DDP.

Runs as one process or under ``torchrun --nproc_per_node=N`` (DistributedDataParallel; gloo on
CPU, nccl on GPUs). Each rank samples crops from its own shard of the images; only rank 0 writes
checkpoints and logs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aecodec.model.config import ModelConfig
from aecodec.model.vqvae import VQVAE
from aecodec.train.data import CropSampler, list_images, split_files, validation_crops

log = logging.getLogger("aecodec.train")

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


@dataclass
class TrainConfig:
    """Options of a training run (saved in every checkpoint)."""

    data: str = "../shared/train"
    run: str = "runs/default"
    steps: int = 20000
    batch: int = 8
    crop: int = 128
    lr: float = 1e-3
    lr_table: float = 1e-2
    lr_linear: float = 1e-4
    warmup: int = 300
    final_lr_ratio: float = 0.05
    commit_weight: float = 0.25
    quality_balance: float = 0.75
    seed: int = 0
    threads: int = 2
    val_every: int = 500
    ckpt_every: int = 200
    num_val: int = 16
    val_crop: int = 256
    init: str = ""
    bf16: bool | None = None
    arch: str = "vq"
    train_only: str = "all"
    lr_table_scale: float = 1.0
    count_tables: bool = False
    table_halflife: float = 200.0
    fresh_quantizer: bool = False
    device: str = "auto"
    model: dict = field(default_factory=dict)


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (x86 ``avx512_bf16`` or ``amx_bf16``, Arm
    ``bf16``). Elsewhere torch emulates bfloat16 autocast, measured 23x slower than float32
    for a training step on an AVX2-only host.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (read when ``None``; no file: False).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as fh:
                cpuinfo = fh.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


def use_bf16(requested: bool | None, device: torch.device | None = None) -> bool:
    """The bf16 setting a process uses: ``None`` (auto) and ``True`` mean "where the CPU has
    native bf16" (re-checked on every start, so a run resumed on another host stays fast) and
    always on a GPU, ``False`` never."""
    if requested is False:
        return False
    if device is not None and device.type == "cuda":
        return True
    native = native_bf16()
    if requested and not native:
        log.warning("--bf16 ignored: this CPU has no native bfloat16 (it would be ~20x slower)")
    return native


def training_device(name: str) -> torch.device:
    """``--device``: ``"auto"`` is the first GPU where torch sees one, else the CPU.

    Raises:
        ValueError: a device torch cannot use here.
    """
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # torchrun's GPU
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: torch sees no GPU here; use --device cpu")
    return device


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_ratio`` at ``steps``."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def rd_loss(
    model: nn.Module,
    cfg: ModelConfig,
    x: torch.Tensor,
    q: torch.Tensor,
    commit_weight: float,
    bf16: bool = False,
    balance: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``bpp + lambda_q * 255^2 * MSE + commitment`` of each sample, weighted by
    ``(lambda_min / lambda_q) ** balance`` and averaged over the batch.

    Without the weights (``balance`` 0) the distortion gradients of the highest quality are
    ~40x those of the lowest (lambdas span 100x, errors only ~3x), so Adam's step sizes are set
    by the high qualities and the shared transforms hardly learn for the low ones (measured:
    qualities 1-5 flat for 2,500 steps while 7-8 improved). ``balance`` 0.75 brings the
    gradients to the same order; in a 500-step probe it helped the low qualities slightly at
    the top quality's expense (the bundled model was trained with it). Each quality's own
    optimum is unchanged (its gains and tables see a constant factor).

    ``model`` is the :class:`VQVAE` or its DistributedDataParallel wrapper.
    """
    out = model(x, q, bf16)
    pixels = x.shape[2] * x.shape[3]
    lam = torch.tensor(cfg.lambdas, dtype=x.dtype, device=x.device)[q]
    mse = (out.x_hat - x).pow(2).mean(dim=(1, 2, 3))
    bpp = out.bits / pixels
    commit = commit_weight * out.commit / (cfg.rate_weight * pixels)
    weight = (min(cfg.lambdas) / lam) ** balance
    loss = (weight * (bpp + lam * 255.0**2 * mse + commit)).mean()
    if out.aux is not None:
        loss = loss + out.aux
    psnr = (-10 * torch.log10(mse.detach().clamp_min(1e-10))).mean()
    stats = {
        "loss": loss.item(),
        "bpp": bpp.mean().item(),
        "psnr": psnr.item(),
        "commit": commit.mean().item(),
    }
    return loss, stats


@torch.no_grad()
def validate(net: VQVAE, crops: torch.Tensor) -> list[dict[str, float]]:
    """Per quality: mean ideal bpp (learned tables) and PSNR of the clamped reconstruction."""
    net.eval()
    rows = []
    for qi in range(net.config.num_qualities):
        bpp, psnr = [], []
        for i in range(0, crops.shape[0], 4):
            x = crops[i : i + 4]
            q = torch.full((x.shape[0],), qi, dtype=torch.long, device=x.device)
            out = net(x, q)
            mse = (out.x_hat.clamp(0, 1) - x).pow(2).mean(dim=(1, 2, 3))
            bpp += (out.bits / (x.shape[2] * x.shape[3])).tolist()
            psnr += (-10 * torch.log10(mse.clamp_min(1e-10))).tolist()
        rows.append({"quality": qi, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(psnr))})
    net.train()
    return rows


@torch.no_grad()
def codebook_usage(idx: torch.Tensor, k: int) -> tuple[float, float]:
    """Fraction of codewords used in a batch and mean per-group perplexity."""
    g = idx.shape[1]
    flat = idx.transpose(0, 1).reshape(g, -1)
    counts = torch.zeros(g, k, device=idx.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float))
    used = (counts > 0).float().mean().item()
    p = counts / counts.sum(1, keepdim=True)
    ent = -(p * torch.log(p.clamp_min(1e-12))).sum(1)
    return used, ent.exp().mean().item()


def _atomic_save(obj: object, path: Path) -> None:
    from aecodec.files import write_atomic

    write_atomic(path, lambda fh: torch.save(obj, fh), force=True)


def _dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def build_model(config: ModelConfig, arch: str, table_rows: int = 0) -> VQVAE:
    """``arch`` "vq" (the codec's :class:`VQVAE`, with ``table_rows`` count-table rows if
    > 0) or "factorized" (the same-budget CompressAI baseline of
    :mod:`aecodec.train.baseline`, typed as a VQVAE for the loop's purposes)."""
    if arch == "vq":
        return VQVAE(config, table_rows=table_rows)
    if arch == "factorized":
        from aecodec.train.baseline import FactorizedBaseline

        return FactorizedBaseline(config)  # type: ignore[return-value]
    raise ValueError(f"unknown --arch {arch!r}: choose vq or factorized")


# Parameters trained by ``--train-only decoder``: the synthesis, the post-filter and the inverse
# gains. The encoder, gains, codebooks and tables stay fixed, so every index (and the rate)
# stays the same and training is a pure distortion problem (stable; the PSNR at each rate can
# only improve).
DECODER_PARAMS = ("g_s.", "refine.", "log_inv_gain")


def freeze(net: nn.Module, train_only: str) -> None:
    """Set ``requires_grad`` for ``train_only`` "all" or "decoder" (see :data:`DECODER_PARAMS`)."""
    if train_only not in ("all", "decoder"):
        raise ValueError(f"unknown --train-only {train_only!r}: choose all or decoder")
    for name, p in net.named_parameters():
        p.requires_grad_(train_only == "all" or name.startswith(DECODER_PARAMS))


def build_optimizer(net: VQVAE, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam; the probability tables get their own (higher) learning rate and the linear block
    transforms (if any) a lower one, ``lr_linear`` (orthonormal PCA weights are ~0.04 in size)."""
    tables = [net.quantizer.logits] if hasattr(net, "quantizer") else []
    linear = [p for n, p in net.named_parameters() if ".linear." in n]
    special = {id(p) for p in tables + linear}
    rest = [p for p in net.parameters() if id(p) not in special]
    groups = [{"params": rest, "lr": cfg.lr}, {"params": tables, "lr": cfg.lr_table}]
    if linear:
        groups.append({"params": linear, "lr": cfg.lr_linear})
    return torch.optim.Adam(groups)


def train(
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
    new_steps: bool = True,
    minutes: float | None = None,
) -> Path:
    """Run (or resume) training; returns the run folder.

    Resuming takes the checkpoint's configuration with this call's ``run`` and ``threads``
    (they belong to the machine) and, with ``new_steps``, its ``steps``: a schedule stretched
    or shortened to fit a session (the command line passes ``new_steps`` only when
    ``--steps`` is given, so a plain ``--resume`` keeps the run's schedule).

    ``stop_at`` ends this process after that step (with a checkpoint) without changing the
    schedule, as an interruption would; ``--resume`` then continues exactly. ``minutes`` does
    the same after the first step that ends past that much wall time (a GPU lease's budget).

    ``cfg.device`` (``--device``) runs on a GPU (``auto``: where torch sees one): the model,
    batches and validation crops live there, bf16 autocast is on, checkpoints hold CPU tensors.

    Checkpoints (``checkpoint.pt`` every ``ckpt_every`` steps, ``best.pt`` at the best
    validation RD cost) hold the model, optimizer, step and every RNG state, written to a
    temporary file and renamed. ``metrics.jsonl`` gets one line per validation.
    """
    rank, world = _dist_info()
    if world > 1:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    torch.set_num_threads(cfg.threads)
    cfg, state = _open_run(cfg, resume, new_steps)
    cfg, session = _prepare(cfg, state, rank, world)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=session.step, desc="train", dynamic_ncols=True)
    try:
        end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        deadline = None if minutes is None else time.time() + 60 * minutes
        _run_steps(session, cfg, end, bar, deadline)
    finally:
        if bar is not None:
            bar.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return Path(cfg.run)


@dataclass
class _Session:
    """What a training process works with once set up (:func:`_prepare`)."""

    net: VQVAE  # the model (unwrapped)
    model: nn.Module  # what the step runs: ``net``, or DDP around it
    opt: torch.optim.Optimizer
    sampler: CropSampler
    val: torch.Tensor | None  # validation crops (rank 0 only)
    bf16: bool
    rank: int
    step: int
    best: float  # best validation RD cost so far
    cpu_base: float  # CPU seconds of earlier processes of this run


def _prepare(
    cfg: TrainConfig, state: dict[str, Any] | None, rank: int, world: int
) -> tuple[TrainConfig, _Session]:
    """Network, data, optimizer and restored state of a run, with the configuration completed
    from the network (:func:`_build_net`); writes its ``config.json`` and, for a fresh run,
    the step-0 validation (where the learning curve starts)."""
    run = Path(cfg.run)
    cfg, net = _build_net(cfg, state, rank)
    sampler, val_files = _data(cfg, net, state is None, rank, world)
    freeze(net, cfg.train_only)
    device = training_device(cfg.device)
    net.to(device)  # before the optimizer (and its restored state) is made for its parameters
    bf16 = use_bf16(cfg.bf16, device)
    if rank == 0:
        log.info(
            "%s, CPU %s, bf16 autocast %s (torch %s threads)",
            torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
            torch.backends.cpu.get_cpu_capability(),
            "on" if bf16 else "off",
            cfg.threads,
        )
        (run / "config.json").write_text(
            json.dumps({"train": asdict(cfg), "model": json.loads(net.config.to_json())}, indent=1)
        )
    opt = build_optimizer(net, cfg)
    val = validation_crops(val_files, cfg.val_crop) if rank == 0 and val_files else None
    val = None if val is None else val.to(device)
    step, best, cpu_base = _restore(state, net, opt, sampler, rank)
    model: nn.Module = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    if val is not None and state is None:
        q0 = torch.arange(min(4, val.shape[0])) % net.config.num_qualities
        best = _validation_record(net, val, run, 0, 0.0, (val[: q0.shape[0]], q0), {"lr": 0.0})
        _atomic_save(_weights_state(net, 0, cfg), run / BEST)
    return cfg, _Session(net, model, opt, sampler, val, bf16, rank, step, best, cpu_base)


def _run_steps(
    s: _Session, cfg: TrainConfig, end: int, bar: Any, deadline: float | None = None
) -> None:
    """Optimizer steps up to ``end`` (or the first step that ends past ``deadline``, a
    ``time.time()``); rank 0 validates every ``val_every`` steps (keeping the best weights)
    and checkpoints every ``ckpt_every`` and at the end."""
    run, t0 = Path(cfg.run), time.time()
    device = next(s.net.parameters()).device
    while s.step < end:
        f = lr_factor(s.step, cfg)
        x = s.sampler.batch(cfg.batch).to(device, non_blocking=True)
        q = s.sampler.qualities(cfg.batch, s.net.config.num_qualities).to(device)
        stats = _optimizer_step(s.model, s.net, s.opt, cfg, f, (x, q), s.bf16)
        s.step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{stats[k]:.3f}" for k in ("loss", "bpp", "psnr")})
        if s.rank != 0:
            continue
        if deadline is not None and time.time() > deadline:
            end = s.step  # the budget is spent: this step is the last (validated, saved)
        last = s.step == end
        if s.val is not None and (s.step % cfg.val_every == 0 or last):
            extra = {"lr": cfg.lr * f, **{f"train_{k}": v for k, v in stats.items()}}
            cost = _validation_record(s.net, s.val, run, s.step, time.time() - t0, (x, q), extra)
            if cost < s.best:
                s.best = cost
                _atomic_save(_weights_state(s.net, s.step, cfg), run / BEST)
        if s.step % cfg.ckpt_every == 0 or last:
            resumable = {
                "optimizer": s.opt.state_dict(),
                "best": s.best,
                "sampler": [s.sampler.state()],
                "cpu_seconds": s.cpu_base + time.process_time(),
            }
            _save_checkpoint(s.net, s.step, cfg, resumable)


def _data(
    cfg: TrainConfig, net: VQVAE, fresh: bool, rank: int, world: int
) -> tuple[CropSampler, list[Path]]:
    """This process's crop sampler (its shard of the training split) and the validation
    files; a fresh ``--init pca`` run is initialised here (:func:`aecodec.train.init.pca_init`),
    and so is a fresh quantizer (:func:`aecodec.train.init.quantizer_init`)."""
    train_files, val_files = split_files(list_images(cfg.data), cfg.num_val)
    shard = train_files[rank::world]
    if not shard:
        raise ValueError(
            f"process {rank} of {world} has no training images ({len(train_files)} in "
            f"{cfg.data} after holding out {len(val_files)} for validation)"
        )
    sampler = CropSampler(shard, cfg.crop, cfg.seed * 1000 + rank)
    if cfg.init == "pca" and fresh:
        from aecodec.train.init import pca_init

        # Its own sampler, so the training crops are the same with and without it; under DDP,
        # rank 0's result is broadcast to every process when the model is wrapped.
        pca_init(net, CropSampler(train_files, cfg.crop, cfg.seed * 1000 + 999))
    elif cfg.fresh_quantizer and fresh:
        from aecodec.train.init import quantizer_init

        quantizer_init(net, CropSampler(train_files, cfg.crop, cfg.seed * 1000 + 999))
    return sampler, val_files


def _save_checkpoint(net: VQVAE, step: int, cfg: TrainConfig, resumable: dict[str, Any]) -> None:
    """Write ``checkpoint.pt``: the weights, ``resumable`` (optimizer, best cost, sampler,
    CPU seconds) and the torch and Python RNG states."""
    rngs = {"torch_rng": torch.get_rng_state(), "py_rng": random.getstate()}
    state = {**_weights_state(net, step, cfg), **resumable, **rngs}
    _atomic_save(state, Path(cfg.run) / CHECKPOINT)


def _open_run(
    cfg: TrainConfig, resume: bool, new_steps: bool = True
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Create the run folder, or with ``resume`` read its checkpoint; returns the config to
    use (the checkpoint's, with this call's ``run``, ``threads`` and ``device``, and ``steps``
    if ``new_steps``: see :func:`train`) and the checkpoint."""
    run = Path(cfg.run)
    ckpt_path = run / CHECKPOINT
    state = None
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        from aecodec.train.export import RESUME_KEYS, load_checkpoint

        # weights_only: the full state (optimizer, RNGs) is tensors and plain values.
        state = load_checkpoint(ckpt_path, RESUME_KEYS)
        try:
            saved = TrainConfig(**state["train_config"])
        except TypeError as exc:
            raise ValueError(f"{ckpt_path}: invalid train_config: {exc}") from None
        saved.run, saved.threads, saved.device = cfg.run, cfg.threads, cfg.device
        if new_steps:
            saved.steps = cfg.steps
        cfg = saved
    elif ckpt_path.exists():
        raise FileExistsError(
            f"{ckpt_path} exists: pass --resume to continue it, or choose another --run-dir"
        )
    run.mkdir(parents=True, exist_ok=True)
    return cfg, state


def _build_net(
    cfg: TrainConfig, state: dict[str, Any] | None, rank: int
) -> tuple[TrainConfig, VQVAE]:
    """The model of a run. A fresh run with ``--init`` weights takes their model config (the
    options given override it; the returned config records the result) and parameters,
    widening the synthesis if asked (:func:`aecodec.train.init.widen_synthesis`)."""
    init_state = None
    if cfg.init and cfg.init != "pca" and state is None:
        from aecodec.train.export import init_config, load_state_dict_file

        base = json.loads(init_config(cfg.init).to_json())
        cfg = replace(cfg, model={**base, **cfg.model})
        init_state = load_state_dict_file(cfg.init)
    model_cfg = ModelConfig.from_json(json.dumps(cfg.model))
    torch.manual_seed(cfg.seed)
    rows = _table_rows(cfg, model_cfg, state["model"] if state else init_state)
    net = build_model(model_cfg, cfg.arch, rows)
    if rows:
        net.quantizer.row_decay = 0.5 ** (1.0 / cfg.table_halflife)
        if init_state is None and state is None:
            nq, ng = model_cfg.num_qualities, model_cfg.num_groups
            net.quantizer.table_index.copy_(torch.arange(nq * ng).view(nq, ng, 1))
    if init_state is None:
        return cfg, net
    # Keep the tables the model trains with (logits or count tables).
    unused = ("quantizer.logits",) if rows else ("quantizer.row_counts", "quantizer.table_index")
    for key in unused:
        init_state.pop(key, None)
    from aecodec.train.init import widen_synthesis

    net = _grow_to(cfg, base, init_state, net, rank)
    own = net.state_dict()
    shape = init_state.get("quantizer.codebook", own["quantizer.codebook"]).shape
    if cfg.fresh_quantizer or shape != own["quantizer.codebook"].shape:
        # Another codebook geometry (e.g. --group-dim): the quantizer starts afresh (lattice
        # codebooks, uniform tables), the transforms and gains come from the init weights.
        for key in [k for k in init_state if k.startswith("quantizer.")]:
            del init_state[key]
        cfg = replace(cfg, fresh_quantizer=True)  # initialised in _data, from training crops
        if rank == 0:
            log.info("--init: new codebooks (group_dim %d)", net.config.group_dim)
    widened = widen_synthesis(init_state, net)
    if widened and rank == 0:
        log.info("--init: widened the synthesis (%d tensors), same function", len(widened))
    try:
        net.load_state_dict(init_state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit this model's config
        reason = " ".join(str(exc).split())[:300]
        raise ValueError(f"--init {cfg.init}: weights do not fit the model: {reason}") from None
    return cfg, net


def _grow_to(
    cfg: TrainConfig,
    base: dict[str, Any],
    init_state: dict[str, torch.Tensor],
    net: VQVAE,
    rank: int,
) -> VQVAE:
    """Grow ``--init`` weights with fewer latent channels or qualities than ``net``
    (:func:`aecodec.train.init.widen_latent`, :func:`~aecodec.train.init.extend_qualities`);
    returns the model to load them into (rebuilt when the count tables gained rows)."""
    model_cfg = net.config
    old_q, old_m = init_state["log_gain"].shape
    if (old_q, old_m) == (model_cfg.num_qualities, model_cfg.latent_channels):
        return net
    if tuple(model_cfg.lambdas[:old_q]) != tuple(base["lambdas"]) or old_q > len(model_cfg.lambdas):
        raise ValueError(
            f"--lambdas must continue the --init weights' lambdas {tuple(base['lambdas'])} "
            "(new qualities go above the old ones)"
        )
    from aecodec.train.init import extend_qualities, widen_latent

    train_files, _ = split_files(list_images(cfg.data), cfg.num_val)
    sampler = CropSampler(train_files, cfg.crop, cfg.seed * 1000 + 999)
    crops = torch.cat([sampler.batch(8) for _ in range(64)])
    if old_m < model_cfg.latent_channels:
        widen_latent(init_state, net, crops)
    if old_q < model_cfg.num_qualities:
        extend_qualities(init_state, net, crops)
    if rank == 0:
        log.info(
            "--init: grown from %d to %d latent channels and %d to %d qualities",
            old_m,
            model_cfg.latent_channels,
            old_q,
            model_cfg.num_qualities,
        )
    if "quantizer.row_counts" not in init_state or not net.quantizer.count_tables:
        return net
    grown = build_model(model_cfg, cfg.arch, int(init_state["quantizer.row_counts"].shape[0]))
    grown.quantizer.row_decay = net.quantizer.row_decay
    return grown


def _restore(
    state: dict[str, Any] | None,
    net: VQVAE,
    opt: torch.optim.Optimizer,
    sampler: CropSampler,
    rank: int,
) -> tuple[int, float, float]:
    """Load a checkpoint's model, optimizer and RNG states; returns ``(step, best RD cost,
    CPU seconds so far)`` (``(0, inf, 0)`` for a fresh run)."""
    if state is None:
        return 0, math.inf, 0.0
    net.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sampler.set_state(
        state["sampler"][rank] if rank < len(state["sampler"]) else state["sampler"][0]
    )
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["py_rng"])
    return state["step"], state["best"], float(state.get("cpu_seconds", 0.0))


def _optimizer_step(
    model: nn.Module,
    net: VQVAE,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    lr_scale: float,
    batch: tuple[torch.Tensor, torch.Tensor],
    bf16: bool,
) -> dict[str, float]:
    """One Adam step of ``model`` (``net`` or its DDP wrapper) on ``batch``
    ``(x [B, 3, crop, crop], q long [B])`` at the learning rates scaled by ``lr_scale``;
    returns the loss statistics of :func:`rd_loss`."""
    opt.param_groups[0]["lr"] = cfg.lr * lr_scale
    opt.param_groups[1]["lr"] = cfg.lr_table * cfg.lr_table_scale * lr_scale
    if len(opt.param_groups) > 2:
        opt.param_groups[2]["lr"] = cfg.lr_linear * lr_scale
    x, q = batch
    loss, stats = rd_loss(model, net.config, x, q, cfg.commit_weight, bf16, cfg.quality_balance)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
    opt.step()
    return stats


def _weights_state(net: VQVAE, step: int, cfg: TrainConfig) -> dict[str, object]:
    """What ``best.pt`` holds (and ``checkpoint.pt`` with the optimizer and RNG states)."""
    return {
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "step": step,
        "config": net.config.to_json(),
        "train_config": asdict(cfg),
    }


def _validation_record(
    net: VQVAE,
    val: torch.Tensor,
    run: Path,
    step: int,
    seconds: float,
    batch: tuple[torch.Tensor, torch.Tensor],
    extra: dict[str, float],
) -> float:
    """Validate, append a line to ``metrics.jsonl`` and return the RD cost.

    ``batch`` ``(x, q)``: a training batch whose indices give the codebook statistics.
    """
    rows = validate(net, val)
    x, q = batch
    net.eval()  # (count tables count only in training mode)
    with torch.no_grad():
        idx = net(x[:4], q[:4]).indices
    net.train()
    k = net.config.codebook_size
    used, ppl = codebook_usage(idx, k) if idx is not None else (0.0, 0.0)
    cost = _rd_cost(rows, net.config.lambdas)
    rec = {
        "step": step,
        "time": seconds,
        "val": rows,
        "rd_cost": cost,
        "codebook_used": used,
        "perplexity": ppl,
        **extra,
    }
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    log.info("step %d RD cost %.4f val %s", step, cost, rows)
    return cost


def _table_rows(
    cfg: TrainConfig, model_cfg: ModelConfig, state: dict[str, torch.Tensor] | None
) -> int:
    """Count-table rows T of a run (0: learned logits): those of the checkpoint or the
    ``--init`` weights when they have count tables, else one row per quality and group."""
    if not cfg.count_tables:
        return 0
    if cfg.arch != "vq":
        raise ValueError("--count-tables needs --arch vq")
    if state is not None and "quantizer.row_counts" in state:
        return int(state["quantizer.row_counts"].shape[0])
    return model_cfg.num_qualities * model_cfg.num_groups


def _rd_cost(rows: list[dict[str, float]], lambdas: tuple[float, ...]) -> float:
    """Mean over qualities of ``bpp + lambda * 255^2 * MSE`` (from PSNR)."""
    costs = []
    for r, lam in zip(rows, lambdas, strict=True):
        mse = 10 ** (-r["psnr"] / 10)
        costs.append(r["bpp"] + lam * 255.0**2 * mse)
    return float(np.mean(costs))
