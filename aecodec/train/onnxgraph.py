"""Write a bundled model's synthesis as an ONNX graph for ONNX Runtime (authoring side).

The graph computes ``refine(g_s(y))`` of :class:`aecodec.model.vqvae.VQVAE`: the input is the
dequantized latent already multiplied by the inverse gain, ``float32 [1, M, h, w]``; the output
``float32 [1, 3, 16h, 16w]`` (not clamped). It is built from the weights file's own tensors
with :mod:`onnx`'s helpers (no torch), and its initializers are *external data pointing into
the ``.safetensors`` file(s) themselves* (ONNX's ``location`` / ``offset`` / ``length``; for
a model assembled from other bundled files, the files that hold each tensor): the graph file
holds only the structure (a few kilobytes) and shares the weights' bytes, so bundling it costs
nothing against the 60 MB weights budget. Its metadata names the weights' sha256, and
:class:`aecodec.runtime.OnnxSynthesis` refuses a graph built from other weights.

Layers, in ONNX terms (the same layouts as torch's):

* linear block path: ``Conv`` 1x1 (``g_s.linear.proj``) + ``DepthToSpace(16, CRD)``
  (torch's ``PixelShuffle``), in float32 (the torch path computes it in float64; the pixels
  agree to +-1, the tolerance of the format);
* convolutional path: four stride-2 5x5 transposed convolutions with ``LeakyRelu(0.1)``
  between them, each computed as :class:`aecodec.model.layers.PolyphaseDeconv` does (a 3x3
  ``Conv`` + ``DepthToSpace(2)``, its kernel rearranged from the stored one by constant
  ``Pad`` / ``Gather`` / ``Transpose`` / ``Reshape`` nodes that ONNX Runtime folds at load:
  a ``ConvTranspose`` node took 5x the memory); the two paths are added;
* post-filter (``refine``, if the model has one): ``x + Conv3x3(LeakyRelu(Conv3x3(
  LeakyRelu(Conv3x3(x)))))``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from aecodec.model.config import ModelConfig
from aecodec.runtime import SHA256_KEY, analysis_graph_path, graph_path
from aecodec.weightsfile import (
    DELTA_SCALE_SUFFIX,
    DELTA_SUFFIX,
    WEIGHTS_DIR,
    load_weights,
    read_manifest,
)

OPSET = 17


def safetensors_offsets(path: Path) -> dict[str, tuple[str, list[int], int, int]]:
    """``name -> (dtype, shape, byte offset, byte length)`` of each tensor of a safetensors
    file, the offsets counted from the start of the file."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    start = 8 + size
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = (info["dtype"], list(info["shape"]), start + begin, end - begin)
    return out


def tensor_files(model: str, weights_dir: Path = WEIGHTS_DIR) -> dict[str, Path]:
    """``tensor name -> the file of the bundle that stores it`` for bundled model ``model``
    (its own file, or for a model assembled from others, its sources and part file)."""
    entry = read_manifest(weights_dir)["models"][model]
    if "file" in entry:
        path = weights_dir / entry["file"]
        return {name: path for name in safetensors_offsets(path)}
    spec = entry["assembled"]
    files = {}
    for source, keys in spec["tensors"].items():
        path = weights_dir / read_manifest(weights_dir)["models"][source]["file"]
        files.update({k: path for k in keys})
    if "part" in spec:
        part = weights_dir / spec["part"]["file"]
        files.update({k: part for k in spec["part"]["keys"]})
        if "delta" in spec:  # the base tensor, and the difference and scale in the part file
            base = weights_dir / read_manifest(weights_dir)["models"][spec["delta"]["base"]]["file"]
            for key in spec["delta"]["keys"]:
                files[key] = base
                files[key + DELTA_SUFFIX] = files[key + DELTA_SCALE_SUFFIX] = part
    return files


class _Graph:
    """An ONNX graph under construction over bundled model ``model``'s tensors: initializers
    as external data in the bundle's files, nodes in order, constants."""

    def __init__(self, model: str, weights_dir: Path) -> None:
        from onnx import TensorProto, helper

        self._tp, self._helper = TensorProto, helper
        self.model = model
        self.weights = load_weights(model, weights_dir)  # verified: the graph names its sha256
        self.config: ModelConfig = self.weights.config
        self.files = tensor_files(model, weights_dir)
        self.offsets = {path: safetensors_offsets(path) for path in set(self.files.values())}
        self.inits: list[Any] = []
        self.nodes: list[Any] = []

    def shape(self, name: str) -> list[int]:
        """The stored shape of tensor ``name``."""
        return list(self.offsets[self.files[name]][name][1])

    def _external(self, name: str, stored: str, dtype: str) -> str:
        """An initializer ``name`` whose data is tensor ``stored`` of the bundle's files."""
        if stored not in self.files:
            raise ValueError(f"{self.model}: no tensor {stored} (not an aecodec transform)")
        got, shape, offset, length = self.offsets[self.files[stored]][stored]
        if got != dtype:
            raise ValueError(f"{self.model}: {stored} is {got}, not {dtype}")
        kind = {"F32": self._tp.FLOAT, "I8": self._tp.INT8}[dtype]
        t = self._tp(name=name, data_type=kind, dims=shape)
        t.data_location = self._tp.EXTERNAL
        where = self.files[stored].name
        for key, value in (("location", where), ("offset", offset), ("length", length)):
            entry = t.external_data.add()
            entry.key, entry.value = key, str(value)
        self.inits.append(t)
        return name

    def weight(self, name: str) -> str:
        """Tensor ``name`` of the weights (rebuilt in the graph if stored as a difference)."""
        if name + DELTA_SUFFIX not in self.files:
            return self._external(name, name, "F32")
        # Stored as an 8-bit difference: base + float(delta) * scale, as apply_delta computes
        # it (exact products, one rounding), folded by ONNX Runtime at load.
        base = self._external(name + ".base", name, "F32")
        delta = self._external(name + DELTA_SUFFIX, name + DELTA_SUFFIX, "I8")
        scale = self._external(name + DELTA_SCALE_SUFFIX, name + DELTA_SCALE_SUFFIX, "F32")
        step = self.node("Cast", [delta], name + ".delta_f", to=self._tp.FLOAT)
        step = self.node("Mul", [step, scale], name + ".delta_scaled")
        return self.node("Add", [base, step], name)

    def const(self, name: str, values: list[int]) -> str:
        """An int64 constant ``[len(values)]``."""
        self.inits.append(self._helper.make_tensor(name, self._tp.INT64, [len(values)], values))
        return name

    def node(self, op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        self.nodes.append(self._helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def proto(self, inp: tuple[str, list[Any]], out: tuple[str, str, list[Any]], doc: str) -> Any:
        """The model: input ``(name, shape)``, output ``(node, name, shape)``, float32."""
        helper, tp = self._helper, self._tp
        self.nodes.append(helper.make_node("Identity", [out[0]], [out[1]], name=out[1]))
        graph = helper.make_graph(
            self.nodes,
            f"{self.config.name} {doc}",
            [helper.make_tensor_value_info(inp[0], tp.FLOAT, inp[1])],
            [helper.make_tensor_value_info(out[1], tp.FLOAT, out[2])],
            initializer=self.inits,
        )
        proto = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="aecodec",
            doc_string=f"{doc} of {self.config.name}",
        )
        proto.ir_version = 8
        helper.set_model_props(proto, {SHA256_KEY: self.weights.sha256})
        return proto


def build_synthesis_graph(model: str, weights_dir: Path = WEIGHTS_DIR) -> Any:
    """The ``onnx.ModelProto`` of bundled model ``model``'s synthesis, its weights external
    in the bundle's files (``location`` relative to ``weights_dir``).

    Raises:
        ValueError: the model's layout is not the one described in the module docstring.
    """
    g = _Graph(model, weights_dir)
    config = g.config
    m = config.latent_channels
    conv_prefix = "g_s.conv" if config.linear_path else "g_s"
    h = "y"
    layers = 4
    g.const("pad6", [0, 0, 0, 0, 0, 0, 1, 1])
    taps = g._helper.make_tensor("taps", g._tp.INT64, [2, 3], [4, 2, 0, 5, 3, 1])
    g.inits.append(taps)
    g.const("four", [1, 4])
    g.const("flat", [-1])
    for i in range(layers):
        w = g.weight(f"{conv_prefix}.{2 * i}.weight")  # ConvTranspose layout [cin, cout, 5, 5]
        b = g.weight(f"{conv_prefix}.{2 * i}.bias")
        cin, cout = g.shape(f"{conv_prefix}.{2 * i}.weight")[:2]
        # The polyphase form of aecodec.model.layers.PolyphaseDeconv, derived from the stored
        # weights inside the graph (ONNX Runtime folds these constants when it loads): a
        # zero tap at index 5, taps (4, 2, 0) / (5, 3, 1) of the even / odd output phase,
        # [cin, cout, ry, dy, rx, dx] -> [cout * 4, cin, 3, 3].
        k = g.node("Pad", [w, "pad6"], f"w{i}_pad")
        k = g.node("Gather", [k, "taps"], f"w{i}_rows", axis=2)  # [cin, cout, 2, 3, 6]
        k = g.node("Gather", [k, "taps"], f"w{i}_cols", axis=4)  # [cin, cout, 2, 3, 2, 3]
        k = g.node("Transpose", [k], f"w{i}_phase", perm=[1, 2, 4, 0, 3, 5])
        shape = g.const(f"w{i}_shape", [cout * 4, cin, 3, 3])
        k = g.node("Reshape", [k, shape], f"w{i}_poly")
        bias = g.node("Unsqueeze", [b, "flat"], f"b{i}_col")  # [cout, 1]
        bias = g.node("Expand", [bias, "four"], f"b{i}_four")  # [cout, 4]
        bias = g.node("Reshape", [bias, "flat"], f"b{i}_poly")
        h = g.node("Conv", [h, k, bias], f"conv{i}", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        h = g.node("DepthToSpace", [h], f"deconv{i}", blocksize=2, mode="CRD")
        if i < layers - 1:
            h = g.node("LeakyRelu", [h], f"act{i}", alpha=0.1)
    if config.linear_path:
        lin = g.node(
            "Conv",
            ["y", g.weight("g_s.linear.proj.weight"), g.weight("g_s.linear.proj.bias")],
            "linear",
            kernel_shape=[1, 1],
        )
        lin = g.node("DepthToSpace", [lin], "blocks", blocksize=config.downsampling, mode="CRD")
        h = g.node("Add", [lin, h], "synthesis")
    if config.refine_channels:
        r = h
        for i in range(3):
            wr, br = g.weight(f"refine.body.{2 * i}.weight"), g.weight(f"refine.body.{2 * i}.bias")
            r = g.node("Conv", [r, wr, br], f"refine{i}", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            if i < 2:
                r = g.node("LeakyRelu", [r], f"refine_act{i}", alpha=0.1)
        h = g.node("Add", [h, r], "refined")
    return g.proto(("y", [1, m, "h", "w"]), (h, "x_hat", [1, 3, "H", "W"]), "refine(g_s(y))")


def build_analysis_graph(model: str, weights_dir: Path = WEIGHTS_DIR) -> Any:
    """The ``onnx.ModelProto`` of bundled model ``model``'s analysis ``g_a``:
    ``float32 [1, 3, H, W]`` in [0, 1] (H, W multiples of 16) -> ``[1, M, H/16, W/16]``, before
    the quality gain. Layers: four 5x5 stride-2 ``Conv`` with GDN between them
    (``x / sqrt(Conv1x1(x^2, |gamma|, max(beta, 1e-3)))``), plus, with the linear block path,
    torch's ``PixelUnshuffle(16)`` as ``Reshape`` / ``Transpose`` and a 1x1 ``Conv`` in float32
    (the torch path computes it in float64: latents agree to float32 rounding, so an index
    can differ only where two candidates' costs all but tie).

    Raises:
        ValueError: the model's layout is not the one described here, or its codebooks are
            not one-dimensional.
    """
    g = _Graph(model, weights_dir)
    config = g.config
    if config.group_dim != 1:
        raise ValueError(
            f"{model} has {config.group_dim}-D codebooks: the numpy assignment that goes with an "
            "analysis graph takes 1-D ones (its encoder runs on torch)"
        )
    prefix = "g_a.conv" if config.linear_path else "g_a"
    h = "x"
    g.const("ones", [1])
    for i in range(4):
        w, b = g.weight(f"{prefix}.{2 * i}.weight"), g.weight(f"{prefix}.{2 * i}.bias")
        h = g.node("Conv", [h, w, b], f"conv{i}", kernel_shape=[5, 5], strides=[2, 2], pads=[2] * 4)
        if i == 3:
            break
        n = g.shape(f"{prefix}.{2 * i + 1}.gamma")[0]
        gamma = g.node("Abs", [g.weight(f"{prefix}.{2 * i + 1}.gamma")], f"gdn{i}_abs")
        gamma = g.node("Reshape", [gamma, g.const(f"gdn{i}_shape", [n, n, 1, 1])], f"gdn{i}_w")
        beta = g.node("Max", [g.weight(f"{prefix}.{2 * i + 1}.beta"), "beta_floor"], f"gdn{i}_b")
        sq = g.node("Mul", [h, h], f"gdn{i}_sq")
        norm = g.node("Conv", [sq, gamma, beta], f"gdn{i}_norm", kernel_shape=[1, 1])
        h = g.node("Div", [h, g.node("Sqrt", [norm], f"gdn{i}_sqrt")], f"gdn{i}")
    g.inits.append(g._helper.make_tensor("beta_floor", g._tp.FLOAT, [1], [1e-3]))
    if config.linear_path:
        s = config.downsampling
        # PixelUnshuffle: [1, 3, H, W] -> [1, 3, h, s, w, s] -> [1, 3, s, s, h, w] -> [1, 3ss, h, w]
        shape6 = g.node("Shape", ["x"], "x_shape")
        hw = g.node("Gather", [shape6, g.const("hw_axes", [2, 3])], "x_hw")
        blocks = g.node("Div", [hw, g.const("block", [s])], "x_blocks")  # [h, w]
        bh = g.node("Slice", [blocks, g.const("s0", [0]), "ones"], "bh")
        bw = g.node("Slice", [blocks, "ones", g.const("s2", [2])], "bw")
        six = g.node(
            "Concat",
            [g.const("n3", [1, 3]), bh, g.const("blk", [s]), bw, "blk"],
            "unshuffle_shape",
            axis=0,
        )
        u = g.node("Reshape", ["x", six], "unshuffle6")
        u = g.node("Transpose", [u], "unshuffle_t", perm=[0, 1, 3, 5, 2, 4])
        four = g.node("Concat", [g.const("n768", [1, 3 * s * s]), bh, bw], "u_shape", axis=0)
        u = g.node("Reshape", [u, four], "unshuffle")
        lin = g.node(
            "Conv",
            [u, g.weight("g_a.linear.proj.weight"), g.weight("g_a.linear.proj.bias")],
            "linear",
            kernel_shape=[1, 1],
        )
        h = g.node("Add", [lin, h], "analysis")
    m = config.latent_channels
    return g.proto(("x", [1, 3, "H", "W"]), (h, "y", [1, m, "h", "w"]), "g_a(x)")


def write_synthesis_graph(model: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Write bundled model ``model``'s synthesis graph to
    :func:`aecodec.runtime.graph_path` (checked by :mod:`onnx`'s checker with its external
    data) and return its path."""
    return _write(build_synthesis_graph(model, weights_dir), graph_path(model, weights_dir))


def write_analysis_graph(model: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Write bundled model ``model``'s analysis graph to
    :func:`aecodec.runtime.analysis_graph_path` (checked likewise) and return its path."""
    out = analysis_graph_path(model, weights_dir)
    return _write(build_analysis_graph(model, weights_dir), out)


def _write(proto: Any, out: Path) -> Path:
    import onnx

    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(proto.SerializeToString())
    try:
        onnx.checker.check_model(str(tmp))
    except Exception:
        tmp.unlink()
        raise
    tmp.replace(out)
    return out
