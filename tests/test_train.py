"""Training: loss decreases, resume equals uninterrupted, export/load round trip, torchrun DDP."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import ROOT, TINY, TINY_PLAIN, smooth_image
from PIL import Image

from aecodec.train.loop import TrainConfig, rd_loss, train

# The tests' tiny config under a name of its own, as a run's JSON-like ``model`` option.
TINY_MODEL = {
    **TINY_PLAIN,
    "activity_edges": list(TINY_PLAIN["activity_edges"]),
    "name": "aecodec-train-test",
    "lambdas": list(TINY_PLAIN["lambdas"]),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    for i in range(6):
        Image.fromarray(smooth_image(80, 64, seed=i)).save(d / f"img{i}.png")
    return d


def _cfg(data_dir: Path, run: Path, steps: int, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        data=str(data_dir),
        run=str(run),
        steps=steps,
        batch=4,
        crop=32,
        lr=3e-3,
        warmup=2,
        val_every=5,
        ckpt_every=5,
        num_val=2,
        val_crop=32,
        threads=1,
        model=dict(TINY_MODEL),
    )
    base.update(kw)
    return TrainConfig(**base)


def _fixed_batch(data_dir: Path) -> torch.Tensor:
    arr = np.asarray(Image.open(data_dir / "img0.png"))[:32, :32]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float().div(255).repeat(2, 1, 1, 1)


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)


def test_loss_decreases_and_metrics_are_logged(data_dir, tmp_path) -> None:
    from aecodec.model.config import ModelConfig
    from aecodec.model.vqvae import VQVAE

    run = train(_cfg(data_dir, tmp_path / "r", 60), progress=False)
    cfg = ModelConfig.from_json(json.dumps(TINY_MODEL))
    x, q = _fixed_batch(data_dir), torch.tensor([0, 1])
    torch.manual_seed(0)
    fresh = VQVAE(cfg)
    trained = VQVAE(cfg)
    trained.load_state_dict(_state(run)["model"])
    with torch.no_grad():
        before, _ = rd_loss(fresh, cfg, x, q, 0.25)
        after, _ = rd_loss(trained, cfg, x, q, 0.25)
    assert after < 0.7 * before
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rec = json.loads(lines[-1])
    assert rec["step"] == 60 and len(rec["val"]) == 2
    assert 0 < rec["codebook_used"] <= 1 and rec["perplexity"] >= 1


def test_resume_equals_uninterrupted(data_dir, tmp_path) -> None:
    full = train(_cfg(data_dir, tmp_path / "full", 8), progress=False)
    part = _cfg(data_dir, tmp_path / "part", 8)
    train(part, progress=False, stop_at=3)
    assert _state(tmp_path / "part")["step"] == 3
    # `--resume` without --steps: the run's own schedule, not the option's default (20,000)
    train(dataclasses.replace(part, steps=20_000), resume=True, progress=False, new_steps=False)
    assert _state(tmp_path / "part")["step"] == 8
    a, b = _state(full)["model"], _state(tmp_path / "part")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_minutes_end_the_process_resumably(data_dir, tmp_path) -> None:
    """--minutes (a GPU lease's budget): the first step past it is validated and saved, and
    the schedule is unchanged, so --resume goes on."""
    cfg = _cfg(data_dir, tmp_path / "r", 8)
    train(cfg, progress=False, minutes=1e-9)
    state = _state(tmp_path / "r")
    assert state["step"] == 1 and state["train_config"]["steps"] == 8
    assert json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 1
    train(cfg, resume=True, progress=False, new_steps=False)
    assert _state(tmp_path / "r")["step"] == 8


_SHIPPED_PATH = {**TINY, "activity_edges": tuple(TINY["activity_edges"])}
_PLAIN_PATH = {**TINY_PLAIN, "activity_edges": ()}


@pytest.mark.parametrize(("model", "rows"), [(_SHIPPED_PATH, 16), (_PLAIN_PATH, 0)])
def test_a_training_step_makes_every_tensor_where_its_inputs_are(
    model: dict[str, Any], rows: int
) -> None:
    """GPU readiness, checked on the CPU: with torch's default device set to 'meta', a tensor
    made without an explicit device lands on 'meta', and mixing it with the model's (CPU)
    tensors fails or gives garbage; so a step, validation and the table counts must make none
    (on a GPU such a tensor would be on the CPU). Count tables (1-D codebooks, the shipped
    contexts) and learned logits (2-D codebooks)."""
    from aecodec.model.config import ModelConfig
    from aecodec.train import loop

    model = {**model, "lambdas": tuple(model["lambdas"])}
    cfg = TrainConfig(model={}, count_tables=rows > 0)
    gen = torch.Generator().manual_seed(0)
    x, q = torch.rand(2, 3, 64, 64, generator=gen), torch.tensor([0, 1])
    val = torch.rand(4, 3, 64, 64, generator=gen)

    def run(default_device: str) -> list[Any]:
        torch.manual_seed(0)
        net = loop.build_model(ModelConfig(**model), "vq", table_rows=rows)
        opt = loop.build_optimizer(net, cfg)
        torch.set_default_device(default_device)
        try:
            out: list[Any] = []
            for _ in range(3):
                out.append(loop._optimizer_step(net, net, opt, cfg, 1.0, (x, q), False)["loss"])
                out.append(loop.validate(net, val))
        finally:
            torch.set_default_device("cpu")
        return out

    assert run("meta") == run("cpu")  # no error, and no garbage from a meta tensor either


def test_refuses_to_overwrite_a_run_and_resume_needs_a_checkpoint(data_dir, tmp_path) -> None:
    cfg = _cfg(data_dir, tmp_path / "r", 2)
    train(cfg, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_cfg(data_dir, tmp_path / "none", 2), resume=True, progress=False)


SCALAR_LINEAR_MODEL = {
    **TINY_MODEL,
    "latent_channels": 12,
    "group_dim": 1,
    "codebook_size": 64,
    "linear_path": True,
}


@pytest.mark.parametrize(
    ("model", "init"), [(TINY_MODEL, ""), (SCALAR_LINEAR_MODEL, "pca")], ids=["vq2d", "pca-1d"]
)
def test_export_load_round_trip_gives_identical_bitstreams(data_dir, tmp_path, model, init) -> None:
    from aecodec.codec import Codec
    from aecodec.train.export import export
    from aecodec.weightsfile import load_weights

    cfg = _cfg(data_dir, tmp_path / "r", 6, model=dict(model), init=init)
    run = train(cfg, progress=False)
    e1 = export(run, weights_dir=tmp_path / "w1", description="t")
    e2 = export(run, weights_dir=tmp_path / "w2", description="t")
    assert e1["sha256"] == e2["sha256"]
    manifest = json.loads((tmp_path / "w1" / "manifest.json").read_text())
    assert manifest["default"] == "aecodec-train-test"
    w = load_weights("aecodec-train-test", weights_dir=tmp_path / "w1")
    assert w.sha256 == e1["sha256"] and w.config.lambdas == (0.01, 0.05)
    img = smooth_image(50, 40)
    c1 = Codec(str(tmp_path / "w1" / e1["file"]))
    c2 = Codec(str(tmp_path / "w2" / e2["file"]))
    data = c1.compress(img, quality=2)
    assert data == c2.compress(img, quality=2)
    assert c2.decompress(data).size == (50, 40)


def test_weights_failing_sha256_are_refused(data_dir, tmp_path) -> None:
    from aecodec.errors import ModelError
    from aecodec.train.export import export
    from aecodec.weightsfile import load_weights

    run = train(_cfg(data_dir, tmp_path / "r", 2), progress=False)
    e = export(run, weights_dir=tmp_path / "w")
    path = tmp_path / "w" / e["file"]
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="sha256"):
        load_weights("aecodec-train-test", weights_dir=tmp_path / "w")
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        load_weights("nope", weights_dir=tmp_path / "w")


@pytest.mark.slow
def test_torchrun_two_processes_then_single_process_resume(data_dir, tmp_path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed next to this Python")
    run = tmp_path / "ddp"
    args = [
        "--data",
        str(data_dir),
        "--run-dir",
        str(run),
        "--steps",
        "4",
        "--batch",
        "2",
        "--crop",
        "32",
        "--threads",
        "1",
        "--val-every",
        "2",
        "--ckpt-every",
        "2",
        "--channels",
        "8",
        "--latent-channels",
        "8",
        "--codebook-size",
        "16",
        "--lambdas",
        "0.01,0.05",
        "--name",
        "aecodec-ddp-test",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # One retry: a fresh CI run failed once in the full suite and never again in 9 reruns;
    # torchrun --standalone picks its rendezvous port by binding and releasing it, a race
    # with other processes. Two failures in a row fail the test, with torchrun's stderr.
    errors = []
    for _ in range(2):
        shutil.rmtree(run, ignore_errors=True)
        proc = subprocess.run(
            [torchrun, "--standalone", "--nproc_per_node=2", "-m", "aecodec.train", *args],
            cwd=ROOT,
            env=env,
            timeout=600,
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0:
            break
        errors.append(proc.stderr[-3000:])
    assert proc.returncode == 0, "torchrun failed twice:\n" + "\n---\n".join(errors)
    state = _state(run)
    assert state["step"] == 4
    train_cfg = TrainConfig(**state["train_config"])
    train_cfg.steps = 6
    train(train_cfg, resume=True, progress=False)
    assert _state(run)["step"] == 6


def test_pca_init_starts_from_a_block_transform_coder(data_dir) -> None:
    """With ``--init pca`` the untrained model is the PCA block coder: g_s(g_a(x)) is the
    orthogonal projection of each 16x16 block onto M principal components (so it beats any
    other M-dimensional linear projection, here M-1 of the same components), and every
    quality's gained coefficients stay inside the codebook."""
    from torch.nn import functional as F

    from aecodec.model.config import ModelConfig
    from aecodec.model.vqvae import VQVAE
    from aecodec.train.data import CropSampler, list_images
    from aecodec.train.init import pca_init

    cfg = ModelConfig(
        name="t", channels=8, latent_channels=12, group_dim=1, codebook_size=64,
        num_levels=2, lambdas=(0.002, 0.05), linear_path=True,
    )  # fmt: skip
    net = VQVAE(cfg)
    pca_init(net, CropSampler(list_images(data_dir), 32, 0), crops=64)
    x = CropSampler(list_images(data_dir), 32, 1).batch(8)
    with torch.no_grad():
        y = net.g_a(x)
        rec = net.g_s(y)
        g_s: Any = net.g_s
        v = g_s.linear.proj.weight[:, :, 0, 0]  # [768, M]
        torch.testing.assert_close(v.T @ v, torch.eye(12), atol=1e-4, rtol=0)
        # The projection on the first M-1 components only: strictly worse.
        y_short = y.clone()
        y_short[:, -1] = 0
        worse = net.g_s(y_short)
        for q in range(2):
            gain, _ = net.gains(torch.tensor([q]))
            assert (y * gain).abs().max() <= 30
    mse = F.mse_loss(rec, x).item()
    assert mse < F.mse_loss(worse, x).item()
    assert -10 * np.log10(mse) > 25  # smooth test images: few components suffice
    # Finer steps at higher quality.
    assert (net.log_gain[1] >= net.log_gain[0]).all()


def test_factorized_baseline_trains_with_the_same_script_and_exports(data_dir, tmp_path) -> None:
    pytest.importorskip("compressai")
    from compressai.models import FactorizedPrior

    from aecodec.train.baseline import export_compressai

    model = {"name": "baseline-test", "channels": 8, "latent_channels": 8, "lambdas": [0.01]}
    run = train(_cfg(data_dir, tmp_path / "b", 6, arch="factorized", model=model), progress=False)
    rec = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["step"] == 6 and len(rec["val"]) == 1
    out = export_compressai(_state(run), tmp_path / "b.pt")
    net = FactorizedPrior.from_state_dict(torch.load(out, weights_only=True)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        enc = net.compress(x)
        dec = net.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert dec.shape == x.shape
    with pytest.raises(ValueError, match="one rate point"):
        train(_cfg(data_dir, tmp_path / "c", 2, arch="factorized"), progress=False)


def test_quality_balance_reweights_each_sample_by_its_lambda(data_dir) -> None:
    from aecodec.model.config import ModelConfig
    from aecodec.model.vqvae import VQVAE

    cfg = ModelConfig.from_json(json.dumps(TINY_MODEL))  # lambdas 0.01, 0.05
    torch.manual_seed(0)
    net = VQVAE(cfg).eval()
    x = _fixed_batch(data_dir)[:1]
    with torch.no_grad():
        plain = [rd_loss(net, cfg, x, torch.tensor([q]), 0.25)[0] for q in (0, 1)]
        bal = [rd_loss(net, cfg, x, torch.tensor([q]), 0.25, balance=1.0)[0] for q in (0, 1)]
    torch.testing.assert_close(bal[0], plain[0])
    torch.testing.assert_close(bal[1], plain[1] * 0.01 / 0.05)


def test_export_with_checkerboard_contexts_and_fitted_tables(data_dir, tmp_path) -> None:
    from aecodec.codec import Codec
    from aecodec.entropy import ContextScheme
    from aecodec.train.export import FitOptions, export
    from aecodec.weightsfile import load_weights

    run = train(
        _cfg(data_dir, tmp_path / "r", 4, model=dict(SCALAR_LINEAR_MODEL), init="pca"),
        progress=False,
    )
    fit = FitOptions(num_tables=7, rounds=2)
    scheme = ContextScheme(2, 3, (1, 4))
    e = export(run, weights_dir=tmp_path / "w", contexts=scheme, fit=fit)
    w = load_weights("aecodec-train-test", weights_dir=tmp_path / "w")
    t = w.tables
    # 2 levels x 3 activity buckets x (1 + 3) contexts per quality and group, drawn from at
    # most 7 shared rows.
    assert w.config.context_scheme() == scheme and t.shape[2] == 24
    assert t.freqs.shape[0] <= 7 and "quantizer.logits" not in w.tensors
    assert (
        e["training"]["tables"]["fitted_on_images"] == 5
    )  # 6 images, 1 held out (a quarter at most)
    codec = Codec(str(tmp_path / "w" / e["file"]))
    img = smooth_image(70, 45, seed=3)
    for q in codec.qualities:
        data = codec.compress(img, quality=q)
        assert np.asarray(codec.decompress(data)).shape == (45, 70, 3)
        bs_idx = codec.encode_tile_indices(img, (0, 0, 70, 45), q)
        # The file holds at least the ideal code length of its indices under the tables.
        assert 8 * len(data) >= t.ideal_bits(bs_idx, q - 1)
    # Training can start again from the exported file: logits come back from the tables.
    from aecodec.train.export import load_state_dict_file

    sd = load_state_dict_file(tmp_path / "w" / e["file"])
    assert tuple(sd["quantizer.logits"].shape) == t.shape


def test_count_tables_train_from_exported_contexts_and_export_their_rows(
    data_dir, tmp_path
) -> None:
    """--count-tables: a run started from contextual weights keeps their shared rows and
    mapping, counts the training indices into the rows (training mode only) and exports them
    as the integer tables; the model config comes from the --init weights."""
    from aecodec.codec import Codec
    from aecodec.entropy import ContextScheme
    from aecodec.train.export import FitOptions, export
    from aecodec.weightsfile import load_weights

    run = train(
        _cfg(data_dir, tmp_path / "r", 3, model=dict(SCALAR_LINEAR_MODEL), init="pca"),
        progress=False,
    )
    scheme = ContextScheme(2, 3, (1, 4))
    e = export(run, weights_dir=tmp_path / "w", contexts=scheme, fit=FitOptions(num_tables=5))
    start = load_weights("aecodec-train-test", weights_dir=tmp_path / "w")
    cfg = _cfg(
        data_dir,
        tmp_path / "c",
        4,
        model={"name": "aecodec-count-test"},
        init=str(tmp_path / "w" / e["file"]),
        count_tables=True,
    )
    ck = _state(train(cfg, progress=False))
    counts, index = ck["model"]["quantizer.row_counts"], ck["model"]["quantizer.table_index"]
    assert np.array_equal(index.numpy(), start.tables.table_index)
    assert counts.shape == start.tables.freqs.shape
    assert not np.allclose(counts.numpy(), start.tables.freqs)  # the batches were counted
    model = json.loads(ck["config"])
    assert model["name"] == "aecodec-count-test" and model["spatial_contexts"] == 3
    assert json.loads((tmp_path / "c" / "metrics.jsonl").read_text().splitlines()[0])["step"] == 0

    e2 = export(tmp_path / "c" / "checkpoint.pt", weights_dir=tmp_path / "w2")
    t = load_weights("aecodec-count-test", weights_dir=tmp_path / "w2").tables
    assert np.array_equal(t.table_index, start.tables.table_index)
    probs = (counts + 0.05) / (counts + 0.05).sum(1, keepdim=True)
    assert np.abs(t.freqs / 2.0**16 - probs.numpy()).max() < 2e-3
    codec = Codec(str(tmp_path / "w2" / e2["file"]))
    img = smooth_image(40, 33, seed=4)
    assert np.asarray(codec.decompress(codec.compress(img, quality=2))).shape == (33, 40, 3)


def test_post_filter_and_wider_synthesis_start_as_the_init_model(data_dir, tmp_path) -> None:
    """--refine-channels and a wider --synthesis-channels on top of --init weights: the model
    decodes exactly as before at step 0, then --train-only decoder trains the new parameters
    (and leaves the encoder alone)."""
    from aecodec.model.layers import PostFilter

    x = torch.rand(2, 3, 20, 24)
    assert torch.equal(PostFilter(8)(x), x)
    run = train(_cfg(data_dir, tmp_path / "a", 3), progress=False)
    cfg = _cfg(
        data_dir,
        tmp_path / "b",
        4,
        model={"refine_channels": 4, "synthesis_channels": 12},
        init=str(run / "checkpoint.pt"),
        train_only="decoder",
    )
    train(cfg, progress=False)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    last_a = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])
    assert json.loads(lines[0])["val"] == last_a["val"]  # identity at step 0
    first, after = _state(run)["model"], _state(tmp_path / "b")["model"]
    assert not torch.equal(
        after["refine.body.4.weight"], torch.zeros_like(after["refine.body.4.weight"])
    )
    assert all(torch.equal(first[k], after[k]) for k in first if k.startswith("g_a."))
    assert after["g_s.0.weight"].shape[1] == 12 and first["g_s.0.weight"].shape[1] == 8
    assert after["g_s.2.weight"][8:].abs().sum() > 0  # the new channels were trained


def test_decoder_run_exported_with_the_init_tables_codes_the_same_indices(
    data_dir, tmp_path
) -> None:
    from aecodec.codec import Codec
    from aecodec.train.export import export

    run = train(_cfg(data_dir, tmp_path / "a", 3), progress=False)
    a = export(run, weights_dir=tmp_path / "w")
    init = str(tmp_path / "w" / a["file"])
    cfg = _cfg(
        data_dir,
        tmp_path / "b",
        3,
        model={"name": "aecodec-grown", "refine_channels": 4},
        init=init,
        train_only="decoder",
    )
    b = export(train(cfg, progress=False), weights_dir=tmp_path / "w", tables_from=init)
    assert b["training"]["tables"]["sha256"] == a["sha256"]
    old, new = Codec(init), Codec(str(tmp_path / "w" / b["file"]))
    img = smooth_image(48, 32, seed=5)
    for q in old.qualities:
        box = (0, 0, 48, 32)
        assert np.array_equal(
            old.encode_tile_indices(img, box, q), new.encode_tile_indices(img, box, q)
        )
    with pytest.raises(ValueError, match="not both"):
        from aecodec.train.export import FitOptions

        export(tmp_path / "b", weights_dir=tmp_path / "w2", tables_from=init, fit=FitOptions())


def test_init_with_another_codebook_dimension_keeps_the_transforms(data_dir, tmp_path) -> None:
    """The codebook-dimension ablation starts d = 2 from a d = 1 run: the transforms and gains
    come from the init weights, the quantizer starts afresh."""
    run = train(
        _cfg(data_dir, tmp_path / "a", 2, model=dict(SCALAR_LINEAR_MODEL), init="pca"),
        progress=False,
    )
    cfg = _cfg(
        data_dir,
        tmp_path / "b",
        1,
        model={"group_dim": 2, "codebook_size": 64},
        init=str(run / "checkpoint.pt"),
        lr=1e-9,
        lr_linear=1e-9,
    )
    first, after = _state(run)["model"], _state(train(cfg, progress=False))["model"]
    assert after["quantizer.codebook"].shape == (6, 64, 2)
    assert torch.allclose(first["g_a.linear.proj.weight"], after["g_a.linear.proj.weight"])


def test_fresh_quantizer_gains_stay_finite_for_small_lattices(data_dir) -> None:
    """A 4-D codebook of 16 codewords has 2 levels per dimension: the gains clip the latent
    to that range instead of becoming -inf (which made NaN everywhere)."""
    from aecodec.model.config import ModelConfig
    from aecodec.model.vqvae import VQVAE
    from aecodec.train.data import CropSampler, list_images
    from aecodec.train.init import quantizer_init

    cfg = ModelConfig(
        name="t", channels=8, latent_channels=8, group_dim=4, codebook_size=16,
        num_levels=2, lambdas=(0.01, 0.05),
    )  # fmt: skip
    net = VQVAE(cfg)
    quantizer_init(net, CropSampler(list_images(data_dir), 32, 0), crops=16)
    assert torch.isfinite(net.log_gain).all() and torch.isfinite(net.quantizer.logits).all()


def test_count_tables_count_only_in_training_mode() -> None:
    from aecodec.model.config import ModelConfig
    from aecodec.model.vqvae import VQVAE

    cfg = ModelConfig(
        name="t", channels=8, latent_channels=4, group_dim=1, codebook_size=16,
        num_levels=2, lambdas=(0.01, 0.05), spatial_contexts=2,
    )  # fmt: skip
    net = VQVAE(cfg, table_rows=3)
    vq = net.quantizer
    vq.table_index.copy_(torch.randint(0, 3, vq.table_index.shape))
    before = vq.row_counts.clone()
    x, q = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    net.eval()
    out = net(x, q)
    assert torch.equal(vq.row_counts, before)
    # The code length charged is the rows' code length of each index under its context.
    ctx = vq.contexts(out.indices, vq.level_lut())
    rows = vq._rows(q, ctx)
    expect = vq.row_bits()[rows, out.indices].sum(dim=(1, 2, 3))
    assert torch.allclose(out.bits, expect)
    net.train()
    net(x, q)
    assert (vq.row_counts.sum() - before.sum() * vq.row_decay).item() == pytest.approx(2 * 4 * 4)


def test_decoder_only_training_keeps_every_index(data_dir, tmp_path) -> None:
    run = train(_cfg(data_dir, tmp_path / "a", 3), progress=False)
    first = _state(run)["model"]
    cfg = _cfg(data_dir, tmp_path / "b", 4, init=str(run / "checkpoint.pt"), train_only="decoder")
    after = _state(train(cfg, progress=False))["model"]
    changed = {k for k in first if not torch.equal(first[k], after[k])}
    assert any(k.startswith("g_s.") for k in changed)
    assert all(k.startswith(("g_s.", "log_inv_gain")) for k in changed)


# --- hostile checkpoints (issue 10, item 5) -------------------------------------------------


class _RunsCode:
    """Unpickling this creates the file ``marker``: what a crafted checkpoint can do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _cli(*args: str, cwd: Path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "aecodec", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_crafted_checkpoints_run_no_code(tmp_path: Path) -> None:
    from aecodec.model.config import ModelConfig
    from aecodec.train.export import load_checkpoint, load_state_dict_file

    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    torch.save(
        {"model": {"w": _RunsCode(marker)}, "config": ModelConfig().to_json()}, run / "best.pt"
    )
    with pytest.raises(ValueError, match="not a training checkpoint aecodec can load safely"):
        load_checkpoint(run)
    with pytest.raises(ValueError, match="can load safely"):
        load_state_dict_file(run / "best.pt")
    proc = _cli("export", "run", "--weights-dir", "w", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "can load safely" in proc.stderr
    proc = _cli("train", "--init", "run/best.pt", "--run-dir", "r2", "--data", ".", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "can load safely" in proc.stderr.splitlines()[-1]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"step": 3}, "missing model, config"),
        ({"model": {"w": 1}, "config": "{}"}, "'model' is not a state dict of tensors"),
        ({"model": {}, "config": "not json"}, "invalid model config"),
        (None, "not a dict"),
    ],
)
def test_malformed_checkpoints_give_one_line(tmp_path: Path, content: object, message: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    torch.save(content, run / "best.pt")
    proc = _cli("export", "run", "--weights-dir", "w", cwd=tmp_path)
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert message in proc.stderr
    (run / "best.pt").write_bytes(b"garbage")
    proc = _cli("export", "run", "--weights-dir", "w", cwd=tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_bf16_only_where_the_cpu_has_it() -> None:
    from aecodec.train.loop import native_bf16

    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    assert not native_bf16(avx2)
    assert native_bf16(avx2.replace("avx2", "avx2 avx512f avx512_bf16"))
    assert native_bf16("Features\t: fp asimd bf16 i8mm\n")
    assert not native_bf16("")


def test_init_grows_latent_channels_and_qualities_keeping_the_old_ones(data_dir, tmp_path) -> None:
    """--init with more --latent-channels and --lambdas continuing the old ones: every old
    parameter is kept, the new channels start as principal directions orthogonal to the old
    synthesis (no convolution reaches them yet), the new quality is finer than the top old one,
    and the grown model trains, exports and codes at every quality."""
    from aecodec.codec import Codec
    from aecodec.entropy import ContextScheme
    from aecodec.train.export import FitOptions, export, load_state_dict_file

    run = train(
        _cfg(data_dir, tmp_path / "r", 3, model=dict(SCALAR_LINEAR_MODEL), init="pca"),
        progress=False,
    )
    scheme = ContextScheme(2, 3, (1, 4))
    e = export(run, weights_dir=tmp_path / "w", contexts=scheme, fit=FitOptions(num_tables=5))
    init = str(tmp_path / "w" / e["file"])
    old = load_state_dict_file(init)
    lambdas = [*SCALAR_LINEAR_MODEL["lambdas"], SCALAR_LINEAR_MODEL["lambdas"][-1] * 2]
    grown = {"name": "aecodec-grown", "latent_channels": 16, "lambdas": lambdas}
    cfg = _cfg(
        data_dir,
        tmp_path / "g",
        2,
        model=grown,
        init=init,
        count_tables=True,
        train_only="decoder",
    )
    new = _state(train(cfg, progress=False))["model"]
    m0, q0 = old["log_gain"].shape[1], old["log_gain"].shape[0]
    assert new["log_gain"].shape == (q0 + 1, 16) and new["quantizer.codebook"].shape[0] == 16
    assert new["quantizer.table_index"].shape[:2] == (q0 + 1, 16)
    assert torch.equal(new["log_gain"][:q0, :m0], old["log_gain"])  # the encoder is frozen
    assert torch.equal(new["g_a.linear.proj.weight"][:m0], old["g_a.linear.proj.weight"])
    assert torch.all(new["log_gain"][q0] >= new["log_gain"][q0 - 1])  # finer, never coarser
    assert new["g_a.conv.6.weight"][m0:].abs().sum() == 0
    v_new = new["g_a.linear.proj.weight"][m0:].reshape(16 - m0, -1).double()
    syn_old = old["g_s.linear.proj.weight"].reshape(-1, m0).double()
    assert torch.allclose(v_new @ v_new.T, torch.eye(16 - m0, dtype=torch.float64), atol=1e-5)
    assert (v_new @ syn_old).abs().max() < 1e-4
    e2 = export(tmp_path / "g", weights_dir=tmp_path / "w2", fit=FitOptions(num_tables=6))
    codec = Codec(str(tmp_path / "w2" / e2["file"]))
    img = smooth_image(40, 33, seed=4)
    assert codec.qualities[-1] == q0 + 1
    for q in (1, q0 + 1):
        assert np.asarray(codec.decompress(codec.compress(img, quality=q))).shape == (33, 40, 3)
    bad = {**grown, "lambdas": [lambdas[0] * 1.5, *lambdas[1:]]}
    with pytest.raises(ValueError, match="continue the --init"):
        train(_cfg(data_dir, tmp_path / "b", 1, model=bad, init=init), progress=False)


def test_prefix_tables_code_the_old_channels_as_before() -> None:
    """merge_prefix_tables: the (quality, group) entries of the smaller tables are theirs,
    the rest the grown model's; unused rows dropped; a non-prefix is refused."""
    from aecodec.entropy import ContextScheme, EntropyTables
    from aecodec.train.export import merge_prefix_tables

    scheme = ContextScheme(2)
    k = 4
    small = EntropyTables(
        np.array([[1, 1, 1, 2**16 - 3]] * 3),
        np.array([[[0, 1]], [[2, 2]]]).reshape(2, 1, 2),
        np.zeros((1, k), np.int64),
        16,
        scheme,
    )
    own = EntropyTables(
        np.array([[2**16 - 3, 1, 1, 1]] * 12),
        np.arange(12).reshape(3, 2, 2),
        np.zeros((2, k), np.int64),
        16,
        scheme,
    )
    merged = merge_prefix_tables(own, small)
    assert merged.shape == own.shape
    for q in range(3):
        for g in range(2):
            want = small if q < 2 and g < 1 else own
            assert np.array_equal(merged.rows(q)[g], want.rows(q)[g])
    assert merged.freqs.shape[0] == 3 + 12 - 4  # own's 4 rows of (q < 2, g = 0) are unused
    with pytest.raises(ValueError, match="not a prefix"):
        merge_prefix_tables(small, own)


def test_zero_rare_symbols_only_in_well_counted_rows() -> None:
    """A row counted often gives its unseen symbols frequency 0 (their mass to its largest
    entry, capped at 2^16 - 1 for uint16 storage); a rarely counted row keeps every symbol."""
    from aecodec.entropy import ContextScheme, EntropyTables
    from aecodec.train.tables import zero_rare_symbols

    k = 8
    freqs = np.array([[65529, 1, 1, 1, 1, 1, 1, 1], [30000, 20000, 15529, 1, 1, 1, 1, 3]])
    tables = EntropyTables(
        freqs, np.array([[[0, 1]]]), np.zeros((1, k), np.int64), 16, ContextScheme(2)
    )
    counts = np.zeros((2, k))
    counts[0, 0] = 1e8  # only symbol 0 ever seen, very often
    counts[1, :3] = [30, 20, 15]  # few counts: the prior keeps every symbol likely
    out = zero_rare_symbols(tables, counts, 1e-6)
    assert out.freqs[0].tolist() == [65535, 1, 0, 0, 0, 0, 0, 0]
    assert out.freqs[1].tolist() == freqs[1].tolist()
    assert (out.freqs.sum(1) == 2**16).all()
    assert np.array_equal(out.table_index, tables.table_index)
    # The dominant symbol now costs almost nothing (one symbol was 0.00014 bits, now 2e-5).
    assert out.code_lengths(0)[0, 0, 0] < 3e-5 < tables.code_lengths(0)[0, 0, 0]
    assert zero_rare_symbols(tables, counts, 0.0).freqs.tolist() == freqs.tolist()


def test_export_from_weights_with_rare_symbols_zeroed(data_dir, tmp_path) -> None:
    """`aecodec-train export WEIGHTS.safetensors --name NEW --zero-below P`: the networks of the
    weights under a new name, their tables with zero entries, still coding every image; the
    old name is refused (its files must keep decoding)."""
    from aecodec.codec import Codec
    from aecodec.train.export import ZeroOptions, export
    from aecodec.train.weights import compress_part, share_tensors
    from aecodec.weightsfile import load_weights

    run = train(_cfg(data_dir, tmp_path / "a", 3), progress=False)
    a = export(run, weights_dir=tmp_path / "w")
    a_name = a["file"].removesuffix(".safetensors")
    src = tmp_path / "w" / a["file"]
    zero = ZeroOptions(zero_below=0.05, max_images=4, crop=32, data=str(data_dir))
    with pytest.raises(ValueError, match="new --name"):
        export(src, weights_dir=tmp_path / "w", zero=zero)
    b = export(src, name="aecodec-zeroed", weights_dir=tmp_path / "w", zero=zero)
    assert b["training"]["from_weights"]["sha256"] == a["sha256"]
    assert b["training"]["tables"]["zero_below"]["counted_on_images"] == 4
    old, new = load_weights(src), load_weights(tmp_path / "w" / b["file"])
    assert (new.tables.freqs == 0).any() and not (old.tables.freqs == 0).any()
    for key, value in old.tensors.items():
        if not key.startswith("entropy."):
            assert np.array_equal(new.tensors[key], value), key
    img = smooth_image(48, 32, seed=9)
    codec = Codec(str(tmp_path / "w" / b["file"]))
    for q in codec.qualities:
        assert np.asarray(codec.decompress(codec.compress(img, quality=q))).shape == img.shape
    # Bundled, it costs only its tables: the rest is read from the source's file.
    # Its integer tables are stored zlib-compressed and inflated to the same bytes.
    entry = share_tensors("aecodec-zeroed", [a_name], tmp_path / "w", keep_own=True)
    part = entry["assembled"]["part"]
    assert part["keys"] == [] and list(part["zlib"]) == ["entropy.freqs"]
    assert not (tmp_path / "w" / b["file"]).exists()
    rebuilt = load_weights("aecodec-zeroed", weights_dir=tmp_path / "w")
    assert rebuilt.sha256 == b["sha256"]
    assert np.array_equal(rebuilt.tables.freqs, new.tables.freqs)
    size = (tmp_path / "w" / part["file"]).stat().st_size
    assert compress_part("aecodec-zeroed", tmp_path / "w")["assembled"]["part"] == part
    assert (tmp_path / "w" / part["file"]).stat().st_size == size
    assert load_weights("aecodec-zeroed", weights_dir=tmp_path / "w").sha256 == b["sha256"]


def test_export_as_differences_from_a_bundled_model(data_dir, tmp_path) -> None:
    """`aecodec export RUN --delta-from MODEL`: a model fine-tuned from a bundled one is stored
    as its new tables and 8-bit differences from that model's tensors (under half of its
    bytes); it is rebuilt bit for bit (sha256-checked), within half a step of the trained
    network, and its ONNX graph (differences applied in the graph) decodes as torch does."""
    from aecodec.runtime import OnnxSynthesis
    from aecodec.train.export import export, load_checkpoint
    from aecodec.weightsfile import load_weights, network

    w = tmp_path / "w"
    a = export(train(_cfg(data_dir, tmp_path / "a", 3), progress=False), weights_dir=w)
    a_name = a["file"].removesuffix(".safetensors")
    run = train(_cfg(data_dir, tmp_path / "b", 4, init=str(w / a["file"])), progress=False)
    b = export(run, name="aecodec-tuned", weights_dir=w, delta_from=a_name, make_default=False)
    spec = b["assembled"]
    assert spec["delta"]["base"] == a_name and "g_s.0.weight" in spec["delta"]["keys"]
    assert (w / spec["part"]["file"]).stat().st_size < b["bytes"] / 2  # tables dominate here
    assert not (w / "aecodec-tuned.safetensors").exists()
    base, tuned = load_weights(a_name, w), load_weights("aecodec-tuned", w)
    assert tuned.sha256 == b["sha256"] and b["training"]["delta_from"]["model"] == a_name
    trained = load_checkpoint(run / "best.pt")["model"]
    for key in spec["delta"]["keys"]:
        want, got, old = trained[key].numpy(), tuned.tensors[key], base.tensors[key]
        step = np.abs(want - old).max() / 127
        assert np.abs(got - want).max() <= step * 1.0001 and not np.array_equal(got, old), key
    onnx = pytest.importorskip("onnxruntime")
    assert onnx is not None
    from aecodec.train.onnxgraph import write_synthesis_graph

    synthesis = OnnxSynthesis(tuned, write_synthesis_graph("aecodec-tuned", w))
    shape = (tuned.config.num_groups, 3, 4)
    idx = np.random.default_rng(3).integers(0, TINY_MODEL["codebook_size"], shape)
    with torch.no_grad():
        ref = network(tuned).decode_indices(torch.from_numpy(idx)[None], 1.0)[0].clamp(0, 1)
    assert np.abs(synthesis(idx, 1.0) - ref.numpy()).max() < 1e-4


def test_init_takes_a_bundled_models_name() -> None:
    """`--init aecodec-vq-base5`: a bundled model stored as differences from another has no
    file of its own, yet is a starting point by name (the GPU script starts from the default)."""
    from aecodec.train.export import init_config, load_state_dict_file
    from aecodec.weightsfile import load_weights, read_manifest

    name = read_manifest()["default"]
    assert init_config(name) == load_weights(name).config
    state = load_state_dict_file(name)
    assert "quantizer.row_counts" in state and "g_s.conv.0.weight" in state
    assert torch.isfinite(state["quantizer.logits"]).all()  # zero frequencies: the leak's logit
    with pytest.raises(FileNotFoundError):
        init_config("no-such-model.safetensors")
