"""Decoding without torch (aecodec.runtime): the ONNX Runtime synthesis of every bundled model
that ships a graph agrees with the torch path to +-1 per pixel, a stale graph is refused, and
the command-line decoder never imports torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, smooth_image
from PIL import Image

from aecodec import runtime
from aecodec.codec import Codec
from aecodec.weightsfile import WEIGHTS_DIR, load_weights, read_manifest

PHOTO = ROOT / "aecodec" / "data" / "kodim23-384x256.png"
SHIPPED = sorted(name for name in read_manifest()["models"] if runtime.graph_path(name).is_file())
ENCODERS = sorted(
    name for name in read_manifest()["models"] if runtime.analysis_graph_path(name).is_file()
)


def test_the_default_model_ships_a_graph_and_decodes_with_onnx_runtime() -> None:
    assert read_manifest()["default"] in SHIPPED
    assert Codec().decodes_with == "onnx"
    assert Codec(runtime="torch").decodes_with == "torch"


@pytest.mark.parametrize("model", SHIPPED)
def test_onnx_runtime_pixels_match_torch_within_one(model: str) -> None:
    """Same file, both runtimes: identical indices by construction; pixels within +-1, and
    almost all identical (measured: about 1e-5 of the values differ)."""
    img = np.asarray(Image.open(PHOTO).convert("RGB"))[:128, :192]
    torch_codec, onnx_codec = Codec(model, runtime="torch"), Codec(model, runtime="onnx")
    top = torch_codec.qualities[-1]
    for quality in (1, top, (1 + top) / 2 + 0.37):
        data = torch_codec.compress(img, quality=round(quality, 2))
        a = np.asarray(torch_codec.decompress(data), dtype=np.int16)
        b = np.asarray(onnx_codec.decompress(data), dtype=np.int16)
        diff = np.abs(a - b)
        assert diff.max() <= 1, (model, quality)
        assert (diff > 0).mean() < 1e-3, (model, quality)


def test_a_graph_of_other_weights_or_a_missing_graph(tmp_path: Path) -> None:
    """A graph whose recorded sha256 is not the weights' is refused under "onnx" and ignored
    under "auto" (torch decodes); "onnx" without a graph or an unknown runtime: ValueError."""
    onnx = pytest.importorskip("onnx")
    name = next(n for n, e in read_manifest()["models"].items() if "file" in e)
    entry = read_manifest()["models"][name]
    shutil.copy(WEIGHTS_DIR / entry["file"], tmp_path / entry["file"])
    (tmp_path / "manifest.json").write_text(json.dumps({"default": name, "models": {name: entry}}))
    weights = load_weights(name, tmp_path)
    with pytest.raises(ValueError, match=r"no .*synthesis\.onnx"):
        runtime.load_synthesis(weights, "onnx", tmp_path)
    assert runtime.load_synthesis(weights, "auto", tmp_path) is None
    from aecodec.train.onnxgraph import write_synthesis_graph

    graph = write_synthesis_graph(name, tmp_path)
    assert graph.stat().st_size < 20_000  # the structure only: tensors stay in the weights
    assert runtime.load_synthesis(weights, "onnx", tmp_path) is not None
    proto = onnx.load(str(graph), load_external_data=False)
    proto.metadata_props[0].value = "0" * 64
    graph.write_bytes(proto.SerializeToString())
    with pytest.raises(ValueError, match="built from other weights"):
        runtime.load_synthesis(weights, "onnx", tmp_path)
    assert runtime.load_synthesis(weights, "auto", tmp_path) is None
    with pytest.raises(ValueError, match="unknown runtime"):
        Codec(name, runtime="tensorflow")


@pytest.mark.parametrize("model", ENCODERS)
def test_onnx_encoder_gives_the_torch_encoders_indices(model: str) -> None:
    """Same image, both encoders: the analysis agrees to float32 rounding and the numpy
    assignment is the torch quantizer's, so the indices are the same (bar exact ties: at most
    1e-4 of them may differ) at levels and between them."""
    img = np.asarray(Image.open(PHOTO).convert("RGB"))[:128, :192]
    torch_codec, onnx_codec = Codec(model, runtime="torch"), Codec(model)
    assert onnx_codec.encodes_with == "onnx" and torch_codec.encodes_with == "torch"
    top = torch_codec.qualities[-1]
    for quality in (1, top, round((1 + top) / 2 + 0.37, 2)):
        a = torch_codec.encode_tile_indices(img, (0, 0, 192, 128), quality)
        b = onnx_codec.encode_tile_indices(img, (0, 0, 192, 128), quality)
        assert a.shape == b.shape and (a != b).mean() <= 1e-4, (model, quality)


def test_numpy_assignment_is_the_full_window_search() -> None:
    """The sliced assignment that re-chooses only where contexts changed, in its narrowed
    window (runtime.exact_window), gives the indices of the plain search: every pass, every
    position, every candidate of the torch quantizer's window (SCALAR_WINDOW), latents
    beyond the codebook's ends included."""
    from aecodec.model.config import SCALAR_WINDOW

    codec = Codec()
    analysis = codec._onnx_analysis()
    bits, mean_bits = codec._code_lengths(codec.qualities[-1])
    g, k = analysis._codebook.shape
    rng = np.random.default_rng(5)
    scale = rng.uniform(0.2, 8, (g, 1, 1))
    scale[::17] = 300  # past the ends of the codebook
    y = (rng.standard_normal((g, 9, 13)) * scale).astype(np.float32)
    assert analysis._window < SCALAR_WINDOW
    offsets = np.arange(-SCALAR_WINDOW, SCALAR_WINDOW + 1)
    centre = np.clip(np.clip(np.round(y), -k, k).astype(np.int64) + k // 2, 0, k - 1)
    cand = np.clip(centre[..., None] + offsets, 0, k - 1)
    gi = np.arange(g)[:, None, None, None]
    dist = (y[..., None] - analysis._codebook[gi, cand]) ** 2
    beta = analysis._rate_weight

    def pick(lengths: np.ndarray) -> np.ndarray:
        best = np.argmin(dist + beta * lengths, axis=-1)[..., None]
        return np.take_along_axis(cand, best, axis=-1)[..., 0]

    want = pick(mean_bits[gi, cand])
    for _ in range(analysis._passes - 1):
        want = pick(bits[gi, analysis._tables.contexts(want)[..., None], cand])
    assert np.array_equal(analysis.assign(y, bits, mean_bits), want)


def test_command_line_never_imports_torch(tmp_path: Path) -> None:
    """`aecodec compress` and `aecodec decompress` (with --threads) of the default model run
    without torch, and their file is the torch encoder's."""
    src = tmp_path / "in.png"
    Image.fromarray(smooth_image(64, 48, seed=3)).save(src)
    script = (
        "import sys\n"
        "from aecodec.cli.main import main\n"
        "try:\n"
        f"    main(['compress', {str(src)!r}, '-o', {str(tmp_path / 'in.aec')!r}, '-q', '2',"
        " '--threads', '1'], standalone_mode=False)\n"
        f"    main(['decompress', {str(tmp_path / 'in.aec')!r}, '-o', "
        f"{str(tmp_path / 'out.png')!r}, '--threads', '1'], standalone_mode=False)\n"
        "finally:\n"
        "    assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    data = (tmp_path / "in.aec").read_bytes()
    assert data == Codec(runtime="torch").compress(src, quality=2)
    out = np.asarray(Image.open(tmp_path / "out.png"), dtype=np.int16)
    ref = np.asarray(Codec(runtime="torch").decompress(data), dtype=np.int16)
    assert np.abs(out - ref).max() <= 1
