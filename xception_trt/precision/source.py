"""The FP32 source graph of a precision variant: loading, checks, hashes, node selection, and
the metadata and atomic write of the variants made from it."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import InputFormat, ModelSpec, Precision
from ..errors import CalibrationError, ConfigError, GraphError, renamed
from ..extras import needs
from ..fsio import atomic_path
from ..onnx_meta import INPUT_NAME, OUTPUT_NAME, OnnxMeta, load_onnx, read_metadata, write_metadata

__all__ = ["as_model", "graph_sha256", "check_source", "static_batch_of", "input_shape",
           "depthwise_conv_nodes", "anchored", "check_exclusions", "save_model",
           "derive_metadata"]


def as_model(onnx_model_or_path: Any) -> tuple[Any, Path | None]:
    """The ``onnx.ModelProto`` and its path (``None`` when given a model).

    Raises:
        GraphError: Neither a path nor a ModelProto.
    """
    if isinstance(onnx_model_or_path, (str, os.PathLike)):
        return load_onnx(onnx_model_or_path), Path(onnx_model_or_path)
    if hasattr(onnx_model_or_path, "graph"):
        return onnx_model_or_path, None
    raise GraphError(f"expected an ONNX file path or an onnx.ModelProto, got "
                     f"{type(onnx_model_or_path).__name__}")


def graph_sha256(model: Any) -> str:
    """SHA-256 of the graph (nodes, initializers, I/O; not the metadata), hex."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def check_source(model: Any) -> OnnxMeta:
    """The metadata of an FP32 xception-trt graph without Q/DQ nodes.

    Raises:
        GraphError: A variant (FP16, INT8) or a graph not exported by xception-trt.
    """
    meta = read_metadata(model)
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        raise GraphError("this ONNX model already has Q/DQ nodes (it is an INT8 variant); give "
                         "the FP32 model exported by `xception-trt export`")
    if meta.precision is not Precision.FP32:
        raise GraphError(f"this ONNX model is a {meta.precision.value} variant; give the FP32 "
                         "model exported by `xception-trt export`")
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
        raise GraphError(f"expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, found "
                         f"{inputs} -> {outputs}; export with `xception-trt export`")
    return meta


def static_batch_of(model: Any) -> int | None:
    """The fixed batch size of the graph's input, ``None`` when it is dynamic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        return int(dims[0].dim_value)
    return None


def input_shape(spec: ModelSpec, fmt: InputFormat) -> list[int]:
    """The per-image input shape (no batch axis) of a graph in input format ``fmt``."""
    s = spec.input_size
    return [s, s, spec.in_chans] if fmt is InputFormat.UINT8_NHWC else [spec.in_chans, s, s]


def depthwise_conv_nodes(onnx_model_or_path: Any) -> list[str]:
    """Names of the depthwise Conv nodes (``group`` == input channels > 1).

    In separable networks like Xception these are where INT8 loses most accuracy (few weights
    per output channel, wide activation ranges); pass them as ``exclude_nodes`` to keep them in
    high precision.
    """
    model, _ = as_model(onnx_model_or_path)
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = inits[node.input[1]]
        if group > 1 and len(w.dims) == 4 and w.dims[1] == 1 and group == w.dims[0]:
            out.append(node.name)
    return out


def anchored(patterns: Iterable[str]) -> list[str]:
    """Node-name regexes matched against the whole name (ModelOpt applies ``re.match``, a
    prefix match: ``Conv_1`` would also exclude ``Conv_10``)."""
    return [f"(?:{p})$" for p in patterns]


def check_exclusions(model: Any, nodes: Sequence[str], op_types: Sequence[str]) -> None:
    """Every node pattern (a regex matching whole names) and op type must match something."""
    names = [n.name for n in model.graph.node]
    for pattern in nodes:
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"exclude pattern {pattern!r} is not a valid regex: {exc}") from None
        if not any(rx.fullmatch(n) for n in names):
            raise ConfigError(f"exclude pattern {pattern!r} matches no node of this graph; node "
                              f"names look like {', '.join(names[:3])} ...")
    present = {n.op_type for n in model.graph.node}
    unknown = sorted(set(op_types) - present)
    if unknown:
        raise ConfigError(f"op type(s) {', '.join(unknown)} do not occur in this graph; it has "
                          f"{', '.join(sorted(present))}")


def save_model(model: Any, output: str | os.PathLike[str] | None = None, *,
               path: str | os.PathLike[str] | None = None) -> Path:
    """Write an ``onnx.ModelProto`` to ``output`` atomically (a failure leaves nothing behind;
    ``path=`` is its old name, deprecated)."""
    output = renamed("path", "output", path, output, where="save_model")
    if output is None:
        raise ConfigError("save_model needs output=, the .onnx file to write")
    with needs("writing ONNX files", extra="build"):
        import onnx

    path = Path(output)
    with atomic_path(path, error=CalibrationError) as tmp:
        onnx.save(model, str(tmp))
    return path


def derive_metadata(model: Any, meta: OnnxMeta, precision: Precision,
                    extra: Mapping[str, Any] | None = None) -> Any:
    """Give a variant its source's metadata with ``precision``, this version and ``extra``
    (the source's calibration facts are dropped); returns ``model``, changed in place."""
    entries: dict[str, Any] = {k: v for k, v in meta.raw.items() if k != "calibration"}
    entries.update(precision=precision, version=__version__)
    entries.update(extra or {})
    del model.metadata_props[:]
    return write_metadata(model, entries)
