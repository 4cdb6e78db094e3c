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
from aecodec.runtime import SHA256_KEY, graph_path
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


def build_synthesis_graph(model: str, weights_dir: Path = WEIGHTS_DIR) -> Any:
    """The ``onnx.ModelProto`` of bundled model ``model``'s synthesis, its weights external
    in the bundle's files (``location`` relative to ``weights_dir``).

    Raises:
        ValueError: the model's layout is not the one described in the module docstring.
    """
    from onnx import TensorProto, helper

    weights = load_weights(model, weights_dir)  # verified: the graph names its sha256
    config: ModelConfig = weights.config
    files = tensor_files(model, weights_dir)
    offsets = {path: safetensors_offsets(path) for path in set(files.values())}
    inits: list[Any] = []

    def files_shape(name: str) -> list[int]:
        return list(offsets[files[name]][name][1])

    def external(name: str, stored: str, dtype: str) -> str:
        """An initializer ``name`` whose data is tensor ``stored`` of the bundle's files."""
        if stored not in files:
            raise ValueError(f"{model}: no tensor {stored} (not an aecodec synthesis)")
        got, shape, offset, length = offsets[files[stored]][stored]
        if got != dtype:
            raise ValueError(f"{model}: {stored} is {got}, not {dtype}")
        kind = {"F32": TensorProto.FLOAT, "I8": TensorProto.INT8}[dtype]
        t = TensorProto(name=name, data_type=kind, dims=shape)
        t.data_location = TensorProto.EXTERNAL
        where = files[stored].name
        for key, value in (("location", where), ("offset", offset), ("length", length)):
            entry = t.external_data.add()
            entry.key, entry.value = key, str(value)
        inits.append(t)
        return name

    def weight(name: str) -> str:
        if name + DELTA_SUFFIX not in files:
            return external(name, name, "F32")
        # Stored as an 8-bit difference: base + float(delta) * scale, as apply_delta computes
        # it (exact products, one rounding), folded by ONNX Runtime at load.
        base = external(name + ".base", name, "F32")
        delta = external(name + DELTA_SUFFIX, name + DELTA_SUFFIX, "I8")
        scale = external(name + DELTA_SCALE_SUFFIX, name + DELTA_SCALE_SUFFIX, "F32")
        step = node("Cast", [delta], name + ".delta_f", to=TensorProto.FLOAT)
        step = node("Mul", [step, scale], name + ".delta_scaled")
        return node("Add", [base, step], name)

    nodes: list[Any] = []

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    m = config.latent_channels
    conv_prefix = "g_s.conv" if config.linear_path else "g_s"
    h = "y"
    layers = 4
    consts = {
        "pad6": helper.make_tensor("pad6", TensorProto.INT64, [8], [0, 0, 0, 0, 0, 0, 1, 1]),
        "taps": helper.make_tensor("taps", TensorProto.INT64, [2, 3], [4, 2, 0, 5, 3, 1]),
        "four": helper.make_tensor("four", TensorProto.INT64, [2], [1, 4]),
        "flat": helper.make_tensor("flat", TensorProto.INT64, [1], [-1]),
    }
    inits.extend(consts.values())
    for i in range(layers):
        w = weight(f"{conv_prefix}.{2 * i}.weight")  # ConvTranspose layout [cin, cout, 5, 5]
        b = weight(f"{conv_prefix}.{2 * i}.bias")
        cin, cout = files_shape(w)[:2]
        # The polyphase form of aecodec.model.layers.PolyphaseDeconv, derived from the stored
        # weights inside the graph (ONNX Runtime folds these constants when it loads): a
        # zero tap at index 5, taps (4, 2, 0) / (5, 3, 1) of the even / odd output phase,
        # [cin, cout, ry, dy, rx, dx] -> [cout * 4, cin, 3, 3].
        k = node("Pad", [w, "pad6"], f"w{i}_pad")
        k = node("Gather", [k, "taps"], f"w{i}_rows", axis=2)  # [cin, cout, 2, 3, 6]
        k = node("Gather", [k, "taps"], f"w{i}_cols", axis=4)  # [cin, cout, 2, 3, 2, 3]
        k = node("Transpose", [k], f"w{i}_phase", perm=[1, 2, 4, 0, 3, 5])
        shape = helper.make_tensor(f"w{i}_shape", TensorProto.INT64, [4], [cout * 4, cin, 3, 3])
        inits.append(shape)
        k = node("Reshape", [k, shape.name], f"w{i}_poly")
        bias = node("Unsqueeze", [b, "flat"], f"b{i}_col")  # [cout, 1]
        bias = node("Expand", [bias, "four"], f"b{i}_four")  # [cout, 4]
        bias = node("Reshape", [bias, "flat"], f"b{i}_poly")
        h = node("Conv", [h, k, bias], f"conv{i}", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        h = node("DepthToSpace", [h], f"deconv{i}", blocksize=2, mode="CRD")
        if i < layers - 1:
            h = node("LeakyRelu", [h], f"act{i}", alpha=0.1)
    if config.linear_path:
        lin = node(
            "Conv",
            ["y", weight("g_s.linear.proj.weight"), weight("g_s.linear.proj.bias")],
            "linear",
            kernel_shape=[1, 1],
        )
        lin = node("DepthToSpace", [lin], "blocks", blocksize=config.downsampling, mode="CRD")
        h = node("Add", [lin, h], "synthesis")
    if config.refine_channels:
        r = h
        for i in range(3):
            r = node(
                "Conv",
                [r, weight(f"refine.body.{2 * i}.weight"), weight(f"refine.body.{2 * i}.bias")],
                f"refine{i}",
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
            )
            if i < 2:
                r = node("LeakyRelu", [r], f"refine_act{i}", alpha=0.1)
        h = node("Add", [h, r], "refined")
    nodes.append(helper.make_node("Identity", [h], ["x_hat"], name="x_hat"))
    graph = helper.make_graph(
        nodes,
        f"{config.name} synthesis",
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, "h", "w"])],
        [helper.make_tensor_value_info("x_hat", TensorProto.FLOAT, [1, 3, "H", "W"])],
        initializer=inits,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="aecodec",
        doc_string=f"refine(g_s(y)) of {config.name}",
    )
    proto.ir_version = 8
    helper.set_model_props(proto, {SHA256_KEY: weights.sha256})
    return proto


def write_synthesis_graph(model: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Write bundled model ``model``'s graph to :func:`aecodec.runtime.graph_path` (checked
    by :mod:`onnx`'s checker with its external data) and return its path."""
    import onnx

    out = graph_path(model, weights_dir)
    proto = build_synthesis_graph(model, weights_dir)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(proto.SerializeToString())
    try:
        onnx.checker.check_model(str(tmp))
    except Exception:
        tmp.unlink()
        raise
    tmp.replace(out)
    return out
