"""TFJS graph model (``model.json`` + ``*.bin``) -> TensorFlow SavedModel, with TensorFlow alone.

Why our own converter: ``tensorflowjs`` no longer reads graph models and drags in a second
TensorFlow; ``tfjs-graph-converter`` needs patching for TF >= 2.16. The format is simple enough:
``modelTopology`` is a GraphDef in JSON, the weights manifest lists the Const tensors' bytes in
order. The fixes below are the ones TFJS graphs need to run in TF 2.21 (models.md section 10).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import attr_value_pb2, graph_pb2, node_def_pb2
from tensorflow.python.framework import op_def_registry

_NP_DTYPES = {
    "float32": np.float32,
    "int32": np.int32,
    "bool": np.bool_,
    "float16": np.float16,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "int8": np.int8,
    "int16": np.int16,
}

# Activations TFJS fuses into its depthwise op; the value is the TF op to apply after BiasAdd.
_ACTIVATIONS = {"Relu": "Relu", "Relu6": "Relu6", "Elu": "Elu", "Sigmoid": "Sigmoid",
                "Tanh": "Tanh", "LeakyRelu": "LeakyRelu"}


@dataclass(frozen=True)
class ConvertedModel:
    """What a conversion produced: where, and the signature's input/output names."""

    path: Path
    input_name: str
    output_names: tuple[str, ...]


def read_weights(model_json: dict, base_dir: Path) -> dict[str, np.ndarray]:
    """Decode the weights manifest into arrays keyed by Const node name.

    Handles unquantised float32/int32/bool, float16 storage and affine uint8/uint16
    quantisation (``value = q * scale + min``).
    """
    out: dict[str, np.ndarray] = {}
    for group in model_json["weightsManifest"]:
        buf = b"".join((base_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = w.get("quantization")
            if w["dtype"] == "string":
                raise NotImplementedError(f"string weights are not supported ({w['name']})")
            store = quant["dtype"] if quant else w["dtype"]
            np_store = np.dtype(_NP_DTYPES[store])
            nbytes = count * np_store.itemsize
            if offset + nbytes > len(buf):
                raise ValueError(f"weights file too short for {w['name']}: need {offset + nbytes} bytes")
            raw = np.frombuffer(buf, dtype=np_store, count=count, offset=offset)
            offset += nbytes
            if quant and "scale" in quant:
                arr = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant.get("min", 0.0))
            else:
                arr = raw
            out[w["name"]] = arr.astype(_NP_DTYPES.get(w["dtype"], np.float32)).reshape(shape)
        if offset != len(buf):
            raise ValueError(f"weights group {group['paths']} has {len(buf) - offset} unread bytes")
    return out


def _attr_list_types(dtype: int, n: int) -> attr_value_pb2.AttrValue:
    return attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(type=[dtype] * n))


def _split_fused_depthwise(node: node_def_pb2.NodeDef) -> list[node_def_pb2.NodeDef]:
    """TFJS-only ``FusedDepthwiseConv2dNative`` -> DepthwiseConv2dNative + BiasAdd + activation.

    The last node keeps the original name so consumers need no rewiring. Bit-identical to the
    fused op and independent of oneDNN (the underscore op fails with it off).
    """
    fused = [s.decode() for s in node.attr["fused_ops"].list.s]
    dtype = node.attr["T"].type
    conv = node_def_pb2.NodeDef(name=node.name + "/_conv", op="DepthwiseConv2dNative",
                                input=list(node.input[:2]))
    for key in ("T", "strides", "padding", "data_format", "dilations", "explicit_paddings"):
        if key in node.attr:
            conv.attr[key].CopyFrom(node.attr[key])
    nodes = [conv]
    prev = conv.name
    args = list(node.input[2:])
    for i, op in enumerate(fused):
        last = i == len(fused) - 1
        name = node.name if last else f"{node.name}/_{op.lower()}"
        if op == "BiasAdd":
            n = node_def_pb2.NodeDef(name=name, op="BiasAdd", input=[prev, args.pop(0)])
            n.attr["T"].type = dtype
            if "data_format" in node.attr:
                n.attr["data_format"].CopyFrom(node.attr["data_format"])
        elif op == "Prelu":
            nodes.extend(_prelu_nodes(name, prev, args.pop(0), dtype))
            prev = name
            continue
        elif op in _ACTIVATIONS:
            n = node_def_pb2.NodeDef(name=name, op=_ACTIVATIONS[op], input=[prev])
            n.attr["T"].type = dtype
            if op == "LeakyRelu" and "leakyrelu_alpha" in node.attr:
                n.attr["alpha"].f = node.attr["leakyrelu_alpha"].f
        else:
            raise NotImplementedError(f"fused op {op!r} in {node.name}")
        nodes.append(n)
        prev = name
    if fused == []:
        conv.name = node.name
    return nodes


def _prelu_nodes(name: str, x: str, alpha: str, dtype: int) -> list[node_def_pb2.NodeDef]:
    """TFJS-only ``Prelu``: relu(x) - alpha * relu(-x), named so the last node is ``name``."""
    def mk(n, op, inputs):
        nd = node_def_pb2.NodeDef(name=n, op=op, input=inputs)
        nd.attr["T"].type = dtype
        return nd
    return [mk(f"{name}/_pos", "Relu", [x]), mk(f"{name}/_neg_in", "Neg", [x]),
            mk(f"{name}/_neg", "Relu", [f"{name}/_neg_in"]),
            mk(f"{name}/_scaled", "Mul", [alpha, f"{name}/_neg"]),
            mk(name, "Sub", [f"{name}/_pos", f"{name}/_scaled"])]


def _fit_attrs_to_op_def(node: node_def_pb2.NodeDef) -> None:
    """Make a node's attrs match what this TensorFlow's op definition accepts.

    TFJS drops attrs TF >= 2.16 requires (``TArgs`` on ``_FusedConv2D``) and keeps ones some ops
    reject (``explicit_paddings`` on depthwise ops). Missing attrs with defaults get them.
    """
    op_def = op_def_registry.get(node.op)
    if op_def is None:
        raise NotImplementedError(f"op {node.op!r} ({node.name}) is unknown to TensorFlow {tf.__version__}")
    known = {a.name: a for a in op_def.attr}
    for key in list(node.attr.keys()):
        if key not in known:
            del node.attr[key]
    for name, a in known.items():
        if name in node.attr:
            continue
        if a.type == "list(type)" and "T" in node.attr:
            n = node.attr["num_args"].i if "num_args" in node.attr else max(len(node.input) - 2, 0)
            node.attr[name].CopyFrom(_attr_list_types(node.attr["T"].type, n))
        elif a.HasField("default_value"):
            node.attr[name].CopyFrom(a.default_value)


def tfjs_to_graph_def(model_json: dict, base_dir: Path, keep_float16: bool = True) -> graph_pb2.GraphDef:
    """Build a runnable GraphDef from a TFJS graph model's JSON and weight files.

    With ``keep_float16`` a weight stored as float16 stays float16 in the graph behind a Cast
    with the original node name: same numbers, half the size on disk.
    """
    topo = dict(model_json["modelTopology"])
    topo.pop("library", None)
    versions = topo.pop("versions", None) or {}
    gd = json_format.ParseDict(topo, graph_pb2.GraphDef())
    if versions.get("producer"):
        gd.versions.producer = int(versions["producer"])
    weights = read_weights(model_json, base_dir)
    fp16_names = {w["name"] for g in model_json["weightsManifest"] for w in g["weights"]
                  if (w.get("quantization") or {}).get("dtype") == "float16"}

    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(gd.versions)
    for node in gd.node:
        node.device = ""
        if node.op == "Const" and node.name in weights:
            declared = tf.dtypes.as_dtype(node.attr["dtype"].type)
            value = weights[node.name]
            if keep_float16 and node.name in fp16_names and declared == tf.float32:
                half = node_def_pb2.NodeDef(name=node.name + "/_fp16", op="Const")
                half.attr["dtype"].type = tf.float16.as_datatype_enum
                half.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.astype(np.float16)))
                cast = node_def_pb2.NodeDef(name=node.name, op="Cast", input=[half.name])
                cast.attr["SrcT"].type = tf.float16.as_datatype_enum
                cast.attr["DstT"].type = tf.float32.as_datatype_enum
                out.node.extend([half, cast])
                continue
            node.attr["value"].tensor.CopyFrom(
                tf.make_tensor_proto(value.astype(declared.as_numpy_dtype)))
            out.node.append(node)
        elif node.op == "FusedDepthwiseConv2dNative":
            out.node.extend(_split_fused_depthwise(node))
        elif node.op == "Prelu":
            out.node.extend(_prelu_nodes(node.name, node.input[0], node.input[1], node.attr["T"].type))
        else:
            out.node.append(node)
    for node in out.node:
        _fit_attrs_to_op_def(node)
    return out


def _tensor_name(name: str) -> str:
    return name if ":" in name else name + ":0"


class _GraphModule(tf.Module):
    """Holds the pruned graph function; ``__call__`` is the serving signature."""

    def __init__(self, fn, spec: tf.TensorSpec, output_keys: list[str]):
        super().__init__()
        self._fn = fn
        self._keys = output_keys

        @tf.function(input_signature=[spec])
        def serve(x):
            outs = self._fn(x)
            return {k: tf.identity(v, name=k) for k, v in zip(self._keys, outs, strict=True)}

        self.serve = serve


def convert(model_json_path: str | Path, out_dir: str | Path,
            outputs: list[str] | None = None, keep_float16: bool = True) -> ConvertedModel:
    """Convert ``model_json_path`` into a SavedModel at ``out_dir``.

    ``outputs`` selects signature output keys to keep (all by default); unused branches such as
    BlazePose's segmentation head are pruned away and cost nothing at run time.
    The serving signature takes the graph's Placeholder (its shape, which may be more general
    than the JSON signature's) and returns a dict keyed by the JSON signature's output names.
    """
    model_json_path = Path(model_json_path)
    out_dir = Path(out_dir)
    model_json = json.loads(model_json_path.read_text())
    gd = tfjs_to_graph_def(model_json, model_json_path.parent, keep_float16=keep_float16)

    placeholders = [n for n in gd.node if n.op == "Placeholder"]
    if len(placeholders) != 1:
        raise NotImplementedError(f"expected one Placeholder, found {len(placeholders)}")
    ph = placeholders[0]
    shape = [d.size if d.size >= 0 else None for d in ph.attr["shape"].shape.dim]
    spec = tf.TensorSpec(shape, tf.dtypes.as_dtype(ph.attr["dtype"].type), name=ph.name)

    sig_outputs = model_json.get("signature", {}).get("outputs", {})
    if not sig_outputs:
        raise ValueError(f"{model_json_path} has no signature outputs")
    keys = [k for k in sig_outputs if outputs is None or k in outputs]
    missing = set(outputs or []) - set(keys)
    if missing:
        raise KeyError(f"outputs {sorted(missing)} not in signature {sorted(sig_outputs)}")

    def _import():
        tf.compat.v1.import_graph_def(gd, name="")

    wrapped = tf.compat.v1.wrap_function(_import, [])
    pruned = wrapped.prune(
        feeds=wrapped.graph.get_tensor_by_name(_tensor_name(ph.name)),
        fetches=[wrapped.graph.get_tensor_by_name(_tensor_name(sig_outputs[k]["name"])) for k in keys],
    )
    module = _GraphModule(pruned, spec, keys)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.serve})
    return ConvertedModel(out_dir, ph.name, tuple(keys))
