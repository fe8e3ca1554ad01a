# Over 600 lines on purpose: every graph pass is a small Graph -> Graph function over the same
# private helpers (producers, constants, rerouting); split it into passes/ when it grows further.
"""ONNX graph cleanup with onnx-graphsurgeon: small ``Graph -> Graph`` passes, I/O at the edges.

Every pass takes an ``onnx_graphsurgeon.Graph``, changes it in place and returns it, so passes
compose (``toposort(remove_dead_nodes(fold_constants(g)))``). :func:`clean_graph` runs the
pipeline on an ``onnx.ModelProto``; :func:`check_ops` verifies that only operators TensorRT's ONNX
parser supports (for this model family) remain; :func:`add_uint8_nhwc_input` moves the input
normalisation into the first convolution; :func:`graph_stats` / :func:`graph_report` describe a
graph before and after. :func:`to_int8_weights` / :func:`to_float_weights` switch a Q/DQ INT8
graph between its two weight storages (INT8 initializers read by ``DequantizeLinear``, or float
weights through a ``QuantizeLinear``/``DequantizeLinear`` pair).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ModelSpec
from .errors import GraphError
from .extras import needs
from .jsonable import JsonMixin, json_field
from .onnx_meta import INPUT_NAME

__all__ = [
    "GraphStats",
    "GraphReport",
    "TRT_PARSER_OPS",
    "XCEPTION_OPS",
    "QDQ_OPS",
    "fold_constants",
    "remove_identity_dropout",
    "remove_dead_nodes",
    "toposort",
    "canonicalize_head",
    "dedupe_initializers",
    "fuse_pad_into_maxpool",
    "fold_batchnorm",
    "check_no_batchnorm",
    "check_ops",
    "name_nodes",
    "add_uint8_nhwc_input",
    "clean_graph",
    "uint8_nhwc_model",
    "graph_stats",
    "graph_report",
    "import_graph",
    "export_graph",
    "MIN_OPSET",
    "TRT_MAX_OPSET",
    "max_supported_opset",
    "model_opset",
    "check_opset",
    "check_onnx",
    "INT8_WEIGHTS",
    "FLOAT_WEIGHTS",
    "int8_weight_form",
    "to_int8_weights",
    "to_float_weights",
]

log = logging.getLogger(__name__)

#: Operators the Xception graphs we produce may contain. Every one is in TensorRT's ONNX parser
#: operator list (onnx-tensorrt ``docs/operators.md``, TensorRT 8.6 .. 10.x and TensorRT-RTX):
#: the float graph (Conv, Relu, Add, MaxPool, GlobalAveragePool, Flatten, Gemm), a TF-"same"
#: max-pool padding that :func:`fuse_pad_into_maxpool` could not fuse (Pad), the uint8-NHWC input
#: stem (Cast, Transpose) and what FP16 conversion inserts at the FP32 I/O boundary (Cast).
XCEPTION_OPS = frozenset({"Conv", "Relu", "Add", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm",
                          "Pad", "Cast", "Transpose"})
#: Explicit-quantisation nodes of INT8 (Q/DQ) variants; TensorRT parses them (opset >= 13 for
#: per-channel scales).
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
#: What :func:`check_ops` accepts by default.
TRT_PARSER_OPS = XCEPTION_OPS | QDQ_OPS

#: Oldest opset we accept: per-channel QuantizeLinear/DequantizeLinear (INT8 variants) need 13,
#: and TensorRT's parser documents opset 13+ as the baseline for explicit quantisation.
MIN_OPSET = 13
#: Newest opset we let through. TensorRT 11.x documents opset 25 (Support Matrix / "ONNX Opset
#: Guide"); TensorRT 10.x parsers read the opsets of the ONNX release they bundle (1.16-1.17:
#: 21-22), so 22 is the newest every parser we target reads. The default export stays at 17
#: (TensorRT 8.6 on JetPack 5).
TRT_MAX_OPSET = 22

#: What the ONNX imports here are for, in the message when the build extra is missing.
_PURPOSE = "ONNX graph work"

_Graph = Any  # onnx_graphsurgeon.Graph (imported lazily: graph passes are optional at import)


def _gs():
    with needs(_PURPOSE, extra="build"):
        import onnx_graphsurgeon as gs

    return gs


# ---------------------------------------------------------------------------------------------
# I/O at the edges


def import_graph(model: Any) -> _Graph:
    """``onnx.ModelProto`` -> ``onnx_graphsurgeon.Graph``.

    Raises:
        GraphError: The model cannot be imported (malformed protobuf).
    """
    try:
        return _gs().import_onnx(model)
    except Exception as exc:  # gs raises plain Exceptions / KeyErrors on malformed graphs
        raise GraphError(f"cannot import the ONNX graph into onnx-graphsurgeon: {exc}") from None


def export_graph(graph: _Graph, *, like: Any | None = None) -> Any:
    """``onnx_graphsurgeon.Graph`` -> ``onnx.ModelProto``, keeping ``like``'s IR version,
    producer and metadata props (gs would otherwise stamp the newest IR version, which older
    TensorRT parsers reject, and drop the metadata)."""
    with needs(_PURPOSE, extra="build"):
        import onnx

    kwargs: dict[str, Any] = {}
    if like is not None:
        kwargs["ir_version"] = like.ir_version
        kwargs["producer_name"] = like.producer_name
        kwargs["producer_version"] = like.producer_version
    model = _gs().export_onnx(graph, **kwargs)
    if like is not None:
        for prop in like.metadata_props:
            model.metadata_props.add().CopyFrom(prop)
        if like.doc_string:
            model.doc_string = like.doc_string
    model.graph.name = graph.name or "xception"
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                 data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise GraphError(f"the rewritten graph fails ONNX shape inference: {exc}") from None


def max_supported_opset() -> int:
    """Newest opset we write or accept: what both the installed ``onnx`` and TensorRT read."""
    with needs(_PURPOSE, extra="build"):
        import onnx.defs

    return min(onnx.defs.onnx_opset_version(), TRT_MAX_OPSET)


def model_opset(model: Any) -> int:
    """The default-domain (``ai.onnx``) opset of an ``onnx.ModelProto``.

    Raises:
        GraphError: The model imports no default-domain opset.
    """
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise GraphError("the ONNX model imports no default-domain opset; re-export it with "
                     "`xception-trt export`")


def check_opset(opset: int, *, what: str = "ONNX model") -> int:
    """Check that TensorRT's parser (and the installed onnx) can read ``opset``.

    Returns:
        ``opset``.

    Raises:
        GraphError: ``opset`` is below :data:`MIN_OPSET` or above :func:`max_supported_opset`.
    """
    newest = max_supported_opset()
    if opset < MIN_OPSET:
        raise GraphError(f"{what} uses opset {opset}; TensorRT needs opset >= {MIN_OPSET} for "
                         "these graphs — re-export with `xception-trt export --opset 17`")
    if opset > newest:
        raise GraphError(f"{what} uses opset {opset}, newer than the installed onnx / TensorRT "
                         f"parser support (newest {newest}) — re-export with "
                         "`xception-trt export --opset 17`")
    return opset


def check_onnx(model_or_path: Any, *, allowed_ops: Iterable[str] = TRT_PARSER_OPS) -> Any:
    """Check an ONNX model or file before handing it to TensorRT: readable, opset in range,
    passes ``onnx.checker``, only expected operators, no BatchNorm left.

    Args:
        model_or_path: An ``onnx.ModelProto`` or a path to an ``.onnx`` file.
        allowed_ops: Operator types accepted (:func:`check_ops`).

    Returns:
        The loaded ``onnx.ModelProto``.

    Raises:
        GraphError: Missing, not ONNX, truncated, unsupported opset, fails the checker,
            unexpected operator or an unfolded BatchNorm (the message names the node).
    """
    import os

    from .onnx_meta import load_onnx

    is_path = isinstance(model_or_path, (str, os.PathLike))
    model = load_onnx(model_or_path) if is_path else model_or_path
    what = f"ONNX file {model_or_path}" if is_path else "ONNX model"
    check_opset(model_opset(model), what=what)
    _check_model(model, what)
    graph = import_graph(model)
    check_ops(check_no_batchnorm(graph), allowed_ops)
    return model


# ---------------------------------------------------------------------------------------------
# passes


def fold_constants(graph: _Graph) -> _Graph:
    """Evaluate every subgraph whose inputs are constants (shape arithmetic included) and
    replace it by its value; the folded nodes are removed.

    TorchScript's TF-"same" padding (Shape/ConstantOfShape/Concat/Slice/Cast feeding ``Pad``) and
    the dynamo exporter's shape computations collapse into constants here.
    """
    graph.fold_constants(fold_shapes=True, error_ok=False)
    return graph.cleanup()


def remove_identity_dropout(graph: _Graph) -> _Graph:
    """Bypass ``Identity`` nodes and inference-time ``Dropout`` (mask output unused).

    A node whose output is a graph output hands the output name to its input tensor, so the
    graph's I/O names never change. An ``Identity`` straight from a graph input to a graph output
    is kept (removing it would merge two I/O names).
    """
    graph_outputs = {id(t) for t in graph.outputs}
    for node in list(graph.nodes):
        if node.op not in ("Identity", "Dropout") or not node.inputs or not node.outputs:
            continue
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
            continue  # the mask is consumed: not a no-op
        src, dst = node.inputs[0], node.outputs[0]
        if id(dst) in graph_outputs and (src in graph.inputs or src in graph.outputs
                                         or _is_constant(src)):
            continue  # the graph output would lose its own tensor
        _bypass(graph, node)
    return graph.cleanup()


def remove_dead_nodes(graph: _Graph) -> _Graph:
    """Remove nodes and tensors that do not contribute to any graph output."""
    return graph.cleanup(remove_unused_node_outputs=False, remove_unused_graph_inputs=False)


def toposort(graph: _Graph) -> _Graph:
    """Order the nodes topologically (the ONNX checker and TensorRT's parser need it)."""
    return graph.toposort()


def _is_constant(tensor: Any) -> bool:
    return isinstance(tensor, _gs().Constant)


def _const_values(tensor: Any) -> np.ndarray | None:
    """Values of a Constant tensor or of the output of a ``Constant`` node, else ``None``."""
    gs = _gs()
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        value = tensor.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
    return None


def _producer(tensor: Any) -> Any | None:
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def _rank(tensor: Any) -> int | None:
    shape = getattr(tensor, "shape", None)
    return None if shape is None else len(shape)


def _is_pooled_nc11(tensor: Any) -> bool:
    """True when ``tensor`` is a 4-D ``(N, C, 1, 1)`` map (the output of global pooling)."""
    producer = _producer(tensor)
    if producer is not None and producer.op == "GlobalAveragePool":
        return True
    shape = getattr(tensor, "shape", None)
    return shape is not None and len(shape) == 4 and list(shape[2:]) == [1, 1]


def _reduce_mean_axes(node: Any) -> list[int] | None:
    if "axes" in node.attrs:  # opset <= 17
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1:  # opset >= 18: axes is an input
        values = _const_values(node.inputs[1])
        return None if values is None else [int(a) for a in values.reshape(-1)]
    return None


def canonicalize_head(graph: _Graph) -> _Graph:
    """Give the classifier head one canonical form: ``GlobalAveragePool -> Flatten -> Gemm``.

    * ``ReduceMean`` over H and W (axes ``[2, 3]`` / ``[-2, -1]``) of a 4-D tensor becomes
      ``GlobalAveragePool`` (followed by ``Flatten`` when ``keepdims=0``), what the dynamo
      exporter emits for ``AdaptiveAvgPool2d(1)``.
    * ``Reshape`` / ``Squeeze`` / ``Flatten`` that turn the pooled ``(N, C, 1, 1)`` map into
      ``(N, C)`` become one ``Flatten(axis=1)``; the shape arithmetic feeding a dynamic-batch
      ``Reshape`` becomes dead and is removed.
    """
    gs = _gs()
    for node in list(graph.nodes):
        if node.op != "ReduceMean" or not node.inputs or _rank(node.inputs[0]) not in (4, None):
            continue
        axes = _reduce_mean_axes(node)
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        x, y = node.inputs[0], node.outputs[0]
        keepdims = int(node.attrs.get("keepdims", 1))
        node.inputs.clear()
        node.outputs.clear()
        if keepdims:
            graph.nodes.append(gs.Node("GlobalAveragePool", inputs=[x], outputs=[y]))
        else:
            pooled = gs.Variable(f"{y.name}_pooled", dtype=y.dtype)
            graph.nodes.append(gs.Node("GlobalAveragePool", inputs=[x], outputs=[pooled]))
            graph.nodes.append(gs.Node("Flatten", attrs={"axis": 1}, inputs=[pooled],
                                       outputs=[y]))
    for node in list(graph.nodes):
        if node.op not in ("Reshape", "Squeeze", "Flatten") or not node.inputs:
            continue
        x, y = node.inputs[0], node.outputs[0]
        if not _is_pooled_nc11(x) or not _flattens_to_nc(node, x):
            continue
        if node.op == "Flatten" and int(node.attrs.get("axis", 1)) == 1:
            continue  # already canonical
        node.inputs.clear()
        node.outputs.clear()
        graph.nodes.append(gs.Node("Flatten", attrs={"axis": 1}, inputs=[x], outputs=[y]))
    # A Reshape of an already-flat (N, C) tensor to (N, C) is a no-op.
    for node in list(graph.nodes):
        if node.op == "Reshape" and node.inputs and _producer(node.inputs[0]) is not None \
                and _producer(node.inputs[0]).op == "Flatten" \
                and int(_producer(node.inputs[0]).attrs.get("axis", 1)) == 1:
            target = _const_values(node.inputs[1]) if len(node.inputs) > 1 else None
            channels = (node.inputs[0].shape or [None, None])[-1]
            if target is not None and target.size == 2 and target[0] in (0, -1) \
                    and (target[1] == -1 or (isinstance(channels, int)
                                             and target[1] == channels)):
                _bypass(graph, node)
    return graph.cleanup().toposort()  # the new nodes were appended at the end


def _flattens_to_nc(node: Any, x: Any) -> bool:
    """Does ``node`` (Reshape/Squeeze/Flatten of an (N, C, 1, 1) tensor) produce (N, C)?"""
    out_rank = _rank(node.outputs[0])
    if node.op == "Flatten":
        return int(node.attrs.get("axis", 1)) == 1
    if node.op == "Squeeze":
        axes = node.attrs.get("axes")
        if axes is None and len(node.inputs) > 1:
            values = _const_values(node.inputs[1])
            axes = None if values is None else values.reshape(-1).tolist()
        return axes is not None and sorted(int(a) % 4 for a in axes) == [2, 3]
    # Reshape: a constant target [0|-1|N, C|-1], or a computed one whose result is known 2-D.
    target = _const_values(node.inputs[1]) if len(node.inputs) > 1 else None
    if target is not None:
        if target.size != 2:
            return False
        channels = (x.shape or [None, None])[1] if x.shape is not None else None
        first_ok = int(target[0]) in (0, -1) or (x.shape is not None and x.shape[0] == target[0])
        second_ok = int(target[1]) == -1 or (isinstance(channels, int)
                                              and int(target[1]) == channels)
        return first_ok and second_ok and not (int(target[0]) == -1 and int(target[1]) == -1)
    return out_rank == 2


def _reroute(old: Any, new: Any) -> None:
    """Make every consumer of tensor ``old`` read tensor ``new`` instead."""
    for consumer in list(old.outputs):
        for i, tensor in enumerate(list(consumer.inputs)):
            if tensor is old:
                consumer.inputs[i] = new


def _bypass(graph: _Graph, node: Any) -> None:
    """Remove a single-input single-output no-op node, keeping graph output names."""
    src, dst = node.inputs[0], node.outputs[0]
    if any(t is dst for t in graph.outputs):
        src.name, src.dtype, src.shape = dst.name, dst.dtype, dst.shape
        graph.outputs = [src if t is dst else t for t in graph.outputs]
    else:
        _reroute(dst, src)
    node.inputs.clear()
    node.outputs.clear()


def fuse_pad_into_maxpool(graph: _Graph) -> _Graph:
    """Fold a ``Pad`` with ``-inf`` (spatial dims only) into the ``MaxPool`` that follows it.

    TF-"same" max-pools on even inputs pad 0 before / 1 after with ``-inf``; ``MaxPool``'s own
    (asymmetric) ``pads`` never win the max either, so ``MaxPool(pads=p)`` computes exactly the
    same function with one layer fewer and no large-negative constant for FP16 to overflow.
    Pads that are not ``-inf`` or touch N/C, shared Pad outputs and ``ceil_mode`` pools are left.
    """
    for pool in list(graph.nodes):
        if pool.op != "MaxPool" or not pool.inputs or len(pool.outputs) != 1:
            continue
        pad = _producer(pool.inputs[0])
        if pad is None or pad.op != "Pad" or len(pool.inputs[0].outputs) != 1 \
                or pool.inputs[0] in graph.outputs:
            continue
        mode = pad.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = _const_values(pad.inputs[1]) if len(pad.inputs) > 1 else None
        value = _const_values(pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2].name \
            else None
        if mode != "constant" or pads is None or value is None or value.size != 1 \
                or not np.isneginf(value.reshape(-1)[0]) or len(pad.inputs) > 3:
            continue
        pads = [int(p) for p in pads.reshape(-1)]
        rank = len(pads) // 2
        begin, end = pads[:rank], pads[rank:]
        if rank != 4 or begin[:2] != [0, 0] or end[:2] != [0, 0] or min(pads) < 0:
            continue
        auto_pad = pool.attrs.get("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad != "NOTSET" or int(pool.attrs.get("ceil_mode", 0)):
            continue
        old = [int(p) for p in pool.attrs.get("pads", [0, 0, 0, 0])]
        new = [old[0] + begin[2], old[1] + begin[3], old[2] + end[2], old[3] + end[3]]
        kernel = [int(k) for k in pool.attrs["kernel_shape"]]
        if any(p >= k for p, k in zip(new, kernel + kernel)):
            continue  # ONNX requires pads < kernel
        pool.attrs["pads"] = new
        pool.inputs[0] = pad.inputs[0]
    return graph.cleanup()


def dedupe_initializers(graph: _Graph) -> _Graph:
    """Make identical constant tensors (same dtype, shape and bytes) one initialiser."""
    gs = _gs()
    seen: dict[tuple[str, tuple[int, ...], str], Any] = {}
    replaced = 0
    for node in graph.nodes:
        for i, tensor in enumerate(list(node.inputs)):
            if isinstance(tensor, gs.Constant):
                values = np.ascontiguousarray(tensor.values)
                key = (values.dtype.str, values.shape, hashlib.sha256(values.tobytes()).hexdigest())
                keep = seen.setdefault(key, tensor)
                if keep is not tensor:
                    node.inputs[i] = keep
                    replaced += 1
    if replaced:
        log.debug("dedupe_initializers: %d duplicate constant input(s) merged", replaced)
    return graph.cleanup()


def fold_batchnorm(graph: _Graph) -> _Graph:
    """Fold every ``BatchNormalization`` that follows a ``Conv`` into that convolution.

    ``y = (conv(x) + b - mean) * gamma / sqrt(var + eps) + beta`` becomes a convolution with
    weights scaled per output channel and a new bias; computed in float64, stored as the
    weights' dtype. BatchNorms that cannot be folded (no Conv in front, shared Conv output,
    non-constant parameters) are left for :func:`check_no_batchnorm` to report.
    """
    gs = _gs()
    for bn in list(graph.nodes):
        if bn.op != "BatchNormalization" or any(o.outputs for o in bn.outputs[1:]):
            continue  # not a BN, or a training-mode BN whose running stats are consumed
        conv = _producer(bn.inputs[0])
        if conv is None or conv.op != "Conv" or len(bn.inputs[0].outputs) != 1 \
                or bn.inputs[0] in graph.outputs:
            continue
        params = [_const_values(t) for t in bn.inputs[1:5]]
        weight = _const_values(conv.inputs[1])
        bias = _const_values(conv.inputs[2]) if len(conv.inputs) > 2 else None
        if weight is None or any(p is None for p in params) \
                or (len(conv.inputs) > 2 and bias is None):
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        eps = float(bn.attrs.get("epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        w = weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        b0 = bias.astype(np.float64) if bias is not None else np.zeros_like(mean)
        b = (b0 - mean) * scale + beta
        dtype = weight.dtype
        conv.inputs[1] = gs.Constant(f"{conv.name or 'conv'}.weight_bnfolded", w.astype(dtype))
        new_bias = gs.Constant(f"{conv.name or 'conv'}.bias_bnfolded", b.astype(dtype))
        if len(conv.inputs) > 2:
            conv.inputs[2] = new_bias
        else:
            conv.inputs.append(new_bias)
        out = bn.outputs[0]
        conv.outputs[0] = out
        bn.inputs.clear()
        bn.outputs.clear()
    return graph.cleanup()


def check_no_batchnorm(graph: _Graph) -> _Graph:
    """Raise :class:`GraphError` if a ``BatchNormalization`` remains (it should be folded).

    Raises:
        GraphError: Names the first unfolded BatchNorm node.
    """
    for node in graph.nodes:
        if node.op == "BatchNormalization":
            raise GraphError(f"BatchNormalization node {node.name!r} could not be folded into a "
                             "convolution (no Conv in front of it, or its parameters are not "
                             "constants); export the model in eval mode with "
                             "`xception-trt export` so every BatchNorm follows a Conv")
    return graph


def check_ops(graph: _Graph, allowed: Iterable[str] = TRT_PARSER_OPS) -> _Graph:
    """Check that every node is a default-domain ONNX operator in ``allowed``.

    Args:
        graph: The graph to check.
        allowed: Operator types accepted (default: :data:`TRT_PARSER_OPS`).

    Returns:
        ``graph``, unchanged.

    Raises:
        GraphError: Names the first node with an unexpected operator or a custom domain.
    """
    allowed = frozenset(allowed)
    for node in graph.nodes:
        if node.domain not in ("", "ai.onnx", None):
            raise GraphError(f"node {node.name!r} is {node.domain}::{node.op}, a custom-domain "
                             "operator TensorRT's ONNX parser does not know; re-export the "
                             "model with `xception-trt export`")
        if node.op not in allowed:
            raise GraphError(f"node {node.name!r} has operator {node.op!r}, which is not "
                             f"expected in an Xception graph for TensorRT (expected one of: "
                             f"{', '.join(sorted(allowed))}); re-export with "
                             "`xception-trt export` (cleanup on)")
    return graph


def name_nodes(graph: _Graph) -> _Graph:
    """Give nodes deterministic names ``<op>_<index>`` in topological order (canonical names
    whichever exporter produced the graph; TensorRT layer names follow them)."""
    counts: Counter[str] = Counter()
    for node in graph.nodes:
        node.name = f"{node.op}_{counts[node.op]}"
        counts[node.op] += 1
    return graph


def add_uint8_nhwc_input(graph: _Graph, spec: ModelSpec) -> _Graph:
    """Make the graph take uint8 NHWC pixels: ``Cast -> Transpose`` in front, and the
    normalisation ``(p / 255 - mean) / std`` folded into the first convolution.

    With ``s_c = 1 / (255 std_c)`` the convolution of normalised input equals a convolution of
    raw pixels with weights ``W[o, c] * s_c`` and bias ``b_o - sum_{c,k} W[o, c, k] mean_c /
    std_c``. That is exact only when the convolution has no padding (zero padding in normalised
    space is not zero in pixel space), which holds for Xception's stem.

    Args:
        graph: A float-NCHW graph whose single input feeds only the first ``Conv``.
        spec: Supplies ``mean``, ``std``, ``in_chans`` and ``input_size``.

    Returns:
        The graph, with input ``input`` of dtype uint8 and shape ``(N, S, S, C)``.

    Raises:
        GraphError: The input does not feed exactly one unpadded Conv with constant weights.
    """
    gs = _gs()
    if len(graph.inputs) != 1:
        raise GraphError(f"expected one graph input, found {len(graph.inputs)}")
    x = graph.inputs[0]
    if np.dtype(x.dtype) != np.float32 or x.shape is None or len(x.shape) != 4:
        raise GraphError(f"graph input {x.name!r} is {x.dtype} {x.shape}, not float32 NCHW; "
                         "the uint8-nhwc stem goes on a float-nchw graph only")
    consumers = list(x.outputs)
    if len(consumers) != 1 or consumers[0].op != "Conv":
        raise GraphError(f"graph input {x.name!r} feeds {[n.op for n in consumers]}, not one "
                         "Conv; the normalisation can only be folded into a single first conv")
    conv = consumers[0]
    pads = [int(p) for p in conv.attrs.get("pads", [0, 0, 0, 0])]
    auto_pad = conv.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if any(pads) or auto_pad not in ("NOTSET", "VALID"):
        raise GraphError(f"first convolution {conv.name!r} is padded (pads={pads}, "
                         f"auto_pad={auto_pad}); folding the normalisation into it would not be "
                         "exact — use --input-format float-nchw")
    if int(conv.attrs.get("group", 1)) != 1:
        raise GraphError(f"first convolution {conv.name!r} is grouped; cannot fold the "
                         "normalisation into it")
    weight = _const_values(conv.inputs[1])
    bias = _const_values(conv.inputs[2]) if len(conv.inputs) > 2 else None
    if weight is None or (len(conv.inputs) > 2 and bias is None):
        raise GraphError(f"first convolution {conv.name!r} has non-constant weights")
    channels = int(weight.shape[1])
    if channels != spec.in_chans or (isinstance(x.shape[1], int) and x.shape[1] != channels):
        raise GraphError(f"first convolution takes {channels} channels but the ModelSpec says "
                         f"{spec.in_chans}")
    mean = np.asarray(spec.mean, dtype=np.float64)
    std = np.asarray(spec.std, dtype=np.float64)
    w64 = weight.astype(np.float64)
    b64 = bias.astype(np.float64) if bias is not None else np.zeros(w64.shape[0])
    new_w = w64 / (255.0 * std).reshape(1, -1, 1, 1)
    new_b = b64 - np.einsum("ochw,c->o", w64, mean / std)

    batch, _, height, width = x.shape
    pixels = gs.Variable(x.name, dtype=np.uint8, shape=[batch, height, width, channels])
    x.name = f"{x.name}_nchw_float"
    as_float = gs.Variable(f"{INPUT_NAME}_float", dtype=np.float32,
                           shape=[batch, height, width, channels])
    graph.nodes.append(gs.Node("Cast", name="input_cast", attrs={"to": 1},  # FLOAT
                               inputs=[pixels], outputs=[as_float]))
    graph.nodes.append(gs.Node("Transpose", name="input_nhwc_to_nchw",
                               attrs={"perm": [0, 3, 1, 2]}, inputs=[as_float], outputs=[x]))
    x.shape = [batch, channels, height, width]
    conv.inputs[1] = gs.Constant(f"{conv.name or 'conv'}.weight_pixelnorm",
                                 new_w.astype(weight.dtype))
    bias_const = gs.Constant(f"{conv.name or 'conv'}.bias_pixelnorm", new_b.astype(weight.dtype))
    if len(conv.inputs) > 2:
        conv.inputs[2] = bias_const
    else:
        conv.inputs.append(bias_const)
    graph.inputs = [pixels]
    return graph.toposort()


# ---------------------------------------------------------------------------------------------
# pipeline

#: The cleanup passes of :func:`clean_graph`, in order.
DEFAULT_PASSES: tuple[Callable[[_Graph], _Graph], ...] = (
    fold_constants,
    remove_identity_dropout,
    fold_batchnorm,
    canonicalize_head,
    fuse_pad_into_maxpool,
    fold_constants,  # again: the head rewrite can leave constant shape arithmetic behind
    dedupe_initializers,
    remove_dead_nodes,
    toposort,
    check_no_batchnorm,
    name_nodes,
)


def _check_model(model: Any, what: str) -> None:
    with needs(_PURPOSE, extra="build"):
        import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise GraphError(f"{what} fails the ONNX checker: {exc}") from None


def clean_graph(model: Any, *, passes: Sequence[Callable[[_Graph], _Graph]] = DEFAULT_PASSES,
                allowed_ops: Iterable[str] | None = TRT_PARSER_OPS, check: bool = True) -> Any:
    """Run the cleanup passes on an ONNX model and return the cleaned model.

    Args:
        model: An ``onnx.ModelProto`` (not modified).
        passes: ``Graph -> Graph`` passes to run (default :data:`DEFAULT_PASSES`).
        allowed_ops: Operator check after cleanup (:func:`check_ops`); ``None`` skips it.
        check: Run ``onnx.checker`` (full check) on the result; callers that check the final
            model themselves pass ``False`` (it serialises the whole model once more).

    Returns:
        A new, shape-inferred ``onnx.ModelProto`` with the same I/O names, opset, IR version
        and metadata props, which passes ``onnx.checker`` (full check).

    Raises:
        GraphError: A pass failed, a BatchNorm could not be folded, an unexpected operator
            remains, or the result does not check.
    """
    with needs(_PURPOSE, extra="build"):
        import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise GraphError(f"shape inference failed on the input graph: {exc}") from None
    graph = import_graph(inferred)
    for fn in passes:
        try:
            graph = fn(graph)
        except GraphError:
            raise
        except Exception as exc:  # a pass hitting an unexpected graph is a GraphError
            raise GraphError(f"graph pass {fn.__name__} failed: {type(exc).__name__}: {exc}") \
                from exc
    if allowed_ops is not None:
        check_ops(graph, allowed_ops)
    out = export_graph(graph, like=model)
    if check:
        _check_model(out, "the cleaned graph")
    return out


def uint8_nhwc_model(model: Any, spec: ModelSpec, *, check: bool = True) -> Any:
    """An ONNX model taking uint8 NHWC pixels, from a float-NCHW one (see
    :func:`add_uint8_nhwc_input`); not modified in place. ``check`` as in :func:`clean_graph`.
    Raises :class:`GraphError`."""
    graph = add_uint8_nhwc_input(import_graph(model), spec)
    graph = name_nodes(remove_dead_nodes(graph))
    out = export_graph(graph, like=model)
    if check:
        _check_model(out, "the uint8-nhwc graph")
    return out


# ---------------------------------------------------------------------------------------------
# report


@dataclass(frozen=True)
class GraphStats(JsonMixin):
    """Size and composition of one ONNX graph.

    Attributes:
        ops: Node count per operator type.
        num_nodes: Total number of nodes.
        num_initializers: Number of initialisers (and ``Constant`` nodes' tensors).
        initializer_bytes: Bytes of initialiser data.
        model_bytes: Size of the serialised model, in bytes.
    """

    ops: Mapping[str, int] = json_field(default_factory=dict,
                                        encode=lambda ops: dict(sorted(ops.items())))
    num_nodes: int = 0
    num_initializers: int = 0
    initializer_bytes: int = 0
    model_bytes: int = 0


@dataclass(frozen=True)
class GraphReport(JsonMixin):
    """A before/after comparison of a graph cleanup.

    Attributes:
        before: Stats of the exporter's raw graph.
        after: Stats of the graph written.
        file_size: Size of the written ONNX file in bytes (``None`` before it is written).
    """

    before: GraphStats
    after: GraphStats
    file_size: int | None = None

    def format(self) -> str:
        """A human-readable table: node counts per op before/after, totals, bytes."""
        ops = sorted(set(self.before.ops) | set(self.after.ops),
                     key=lambda o: (-self.before.ops.get(o, 0), o))
        width = max([len("initializer bytes")] + [len(o) for o in ops])
        lines = [f"{'op':<{width}} {'before':>10} {'after':>10}"]
        for op in ops:
            lines.append(f"{op:<{width}} {self.before.ops.get(op, 0):>10} "
                         f"{self.after.ops.get(op, 0):>10}")
        lines.append(f"{'nodes':<{width}} {self.before.num_nodes:>10} {self.after.num_nodes:>10}")
        lines.append(f"{'initializers':<{width}} {self.before.num_initializers:>10} "
                     f"{self.after.num_initializers:>10}")
        lines.append(f"{'initializer bytes':<{width}} {self.before.initializer_bytes:>10} "
                     f"{self.after.initializer_bytes:>10}")
        if self.file_size is not None:
            lines.append(f"{'file bytes':<{width}} {self.before.model_bytes:>10} "
                         f"{self.file_size:>10}")
        return "\n".join(lines)


def _tensor_bytes(tensor: Any) -> int:
    """Bytes of a TensorProto's data (``raw_data`` read without a copy when present)."""
    with needs(_PURPOSE, extra="build"):
        from onnx import numpy_helper

    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return int(numpy_helper.to_array(tensor).nbytes)


def graph_stats(model: Any) -> GraphStats:
    """Count nodes by op type and initialiser bytes of an ``onnx.ModelProto``."""
    ops = Counter(node.op_type for node in model.graph.node)
    n_init = len(model.graph.initializer)
    init_bytes = sum(_tensor_bytes(t) for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    n_init += 1
                    init_bytes += _tensor_bytes(attr.t)
    return GraphStats(ops=dict(ops), num_nodes=len(model.graph.node), num_initializers=n_init,
                      initializer_bytes=int(init_bytes), model_bytes=model.ByteSize())


def graph_report(before: Any, after: Any | None = None, *,
                 file_size: int | None = None) -> GraphReport:
    """Compare two ``onnx.ModelProto`` (raw export vs cleaned); one model gives before == after.

    Args:
        before: The graph before cleanup.
        after: The graph after cleanup (default: ``before``).
        file_size: Bytes of the written file, if known.
    """
    stats_before = graph_stats(before)
    stats_after = stats_before if after is None else graph_stats(after)
    return GraphReport(stats_before, stats_after, file_size)


# ---------------------------------------------------------------------------------------------
# INT8 weight storage of Q/DQ graphs


#: How a Q/DQ INT8 graph stores its quantized weights (see :func:`int8_weight_form`).
INT8_WEIGHTS = "int8"
FLOAT_WEIGHTS = "float"


def _qdq_parts(model: Any) -> tuple[dict[str, Any], dict[str, list[Any]], set[str]]:
    """(initializers by name, consumers by tensor name, graph output names)."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return ({i.name: i for i in model.graph.initializer}, consumers,
            {o.name for o in model.graph.output})


def _scale_like(node: Any, scale: np.ndarray, rank: int) -> np.ndarray:
    """A Q/DQ node's scale (or zero point) shaped to broadcast over a rank-``rank`` weight along
    the node's ``axis`` (ONNX default 1); a scalar stays a scalar."""
    if scale.size == 1:
        return scale.reshape(())
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % rank
    shape = [1] * rank
    shape[axis] = scale.size
    return scale.reshape(shape)


def _zero_point(node: Any, inits: Mapping[str, Any]) -> np.ndarray | None:
    from onnx import numpy_helper

    if len(node.input) < 3 or not node.input[2]:
        return np.zeros((), np.int8)
    zp = inits.get(node.input[2])
    return None if zp is None else numpy_helper.to_array(zp)


def int8_weight_form(model: Any) -> str | None:
    """How a Q/DQ INT8 graph stores its quantized weights: :data:`INT8_WEIGHTS` (INT8
    initializers read by ``DequantizeLinear``), :data:`FLOAT_WEIGHTS` (float initializers through
    a ``QuantizeLinear``/``DequantizeLinear`` pair), or ``None`` (no quantized weights)."""
    inits = {i.name: i.data_type for i in model.graph.initializer}
    from onnx import TensorProto

    ints = (TensorProto.INT8, TensorProto.UINT8)
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and inits.get(node.input[0]) in ints:
            return INT8_WEIGHTS
        if node.op_type == "QuantizeLinear" and node.input[0] in inits:
            return FLOAT_WEIGHTS
    return None


def to_int8_weights(model: Any) -> Any:
    """Store a Q/DQ graph's quantized weights as INT8: each float weight initializer that feeds
    a ``QuantizeLinear`` -> ``DequantizeLinear`` pair becomes the INT8 initializer that
    ``QuantizeLinear`` would compute (ONNX semantics: ``saturate(round_half_even(w / scale) +
    zero_point)``), read by the ``DequantizeLinear`` directly; the ``QuantizeLinear`` goes.

    The same values as ModelOpt's ``qdq_to_dq`` (tested), without importing ModelOpt (about
    3 s), so a calibration-cache hit and the bundle writer stay fast. The dequantized weights
    are bit-for-bit those of the Q/DQ graph, so ONNX Runtime computes the same outputs; a
    quarter of the weight bytes.

    Args:
        model: An ``onnx.ModelProto`` (not modified).

    Returns:
        A new ``onnx.ModelProto``; ``model``'s copy when it has no float-weight Q/DQ pair.
    """
    from onnx import ModelProto, numpy_helper

    out = ModelProto()
    out.CopyFrom(model)
    inits, consumers, outputs = _qdq_parts(out)
    drop: set[int] = set()
    for index, node in enumerate(out.graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        readers = consumers.get(node.output[0], [])
        zero = _zero_point(node, inits)
        if (len(readers) != 1 or readers[0].op_type != "DequantizeLinear"
                or node.output[0] in outputs or node.input[1] not in inits or zero is None
                or zero.dtype not in (np.int8, np.uint8)):
            continue  # not a plain weight Q/DQ pair of INT8 (e.g. FP8): left as it is
        weight = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = _scale_like(node, numpy_helper.to_array(inits[node.input[1]])
                            .astype(np.float32), weight.ndim)
        info = np.iinfo(zero.dtype)
        q = np.clip(np.rint(weight / scale) + _scale_like(node, zero, weight.ndim).astype(
            np.float32), info.min, info.max).astype(zero.dtype)
        name = node.input[0]
        if len(consumers.get(name, [])) > 1:  # the float weight is read elsewhere too: keep it
            name = f"{name}_int8"
            out.graph.initializer.append(numpy_helper.from_array(q, name))
        else:
            inits[name].CopyFrom(numpy_helper.from_array(q, name))
        readers[0].input[0] = name
        drop.add(index)
    nodes = [n for i, n in enumerate(out.graph.node) if i not in drop]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def to_float_weights(model: Any) -> Any:
    """The inverse of :func:`to_int8_weights`: each INT8 weight initializer read by a
    ``DequantizeLinear`` becomes its dequantized float value behind a ``QuantizeLinear`` with
    the same scale and zero point (TensorRT 8.6 takes Q/DQ weights only in float; quantizing
    them again gives back the same INT8 values exactly).

    Args:
        model: An ``onnx.ModelProto`` (not modified).

    Returns:
        A new ``onnx.ModelProto``; ``model``'s copy when it stores no INT8 weights.
    """
    from onnx import ModelProto, TensorProto, helper, numpy_helper

    out = ModelProto()
    out.CopyFrom(model)
    inits, consumers, _ = _qdq_parts(out)
    nodes: list[Any] = []
    for node in out.graph.node:
        init = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        zero = _zero_point(node, inits) if init is not None else None
        if (init is None or init.data_type not in (TensorProto.INT8, TensorProto.UINT8)
                or node.input[1] not in inits or zero is None):
            nodes.append(node)
            continue
        raw_scale = numpy_helper.to_array(inits[node.input[1]])
        q = numpy_helper.to_array(init)
        weight = ((q.astype(np.float32) - _scale_like(node, zero, q.ndim).astype(np.float32))
                  * _scale_like(node, raw_scale.astype(np.float32), q.ndim)
                  ).astype(raw_scale.dtype)
        name = init.name
        if len(consumers.get(name, [])) > 1:
            name = f"{name}_float"
            out.graph.initializer.append(numpy_helper.from_array(weight, name))
        else:
            init.CopyFrom(numpy_helper.from_array(weight, name))
        quantize = helper.make_node("QuantizeLinear", [name, *node.input[1:]],
                                    [f"{name}_quantized"], name=f"{name}_QuantizeLinear")
        quantize.attribute.extend(a for a in node.attribute if a.name == "axis")
        node.input[0] = quantize.output[0]
        nodes += [quantize, node]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out
