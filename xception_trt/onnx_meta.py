"""The metadata every ONNX file we write carries (``metadata_props``), read and written in one
place so export, precision, builder, runners and serving agree on the keys.

Keys (all values are strings; JSON where noted):

- ``xception_trt.model_spec``   ModelSpec JSON (architecture, preprocessing, labels)
- ``xception_trt.labels``       JSON list of the class names in logit order (also for tools
                                that do not parse the ModelSpec)
- ``xception_trt.input_format`` ``float-nchw`` or ``uint8-nhwc``
- ``xception_trt.precision``    ``fp32``, ``fp16`` or ``int8``
- ``xception_trt.source_sha256`` SHA-256 of the checkpoint the graph came from
- ``xception_trt.version``      package version that wrote the file
- ``xception_trt.export``       JSON of the export settings (opset, batch, exporter ...)
- ``xception_trt.calibration``  JSON of the INT8 calibration details (INT8 only)
- ``xception_trt.quant_target`` ``tensorrt`` or ``onnxruntime``: the runtime the INT8 Q/DQ
                                placement is made for (INT8 only; absent in INT8 files written
                                before it existed, which are all ``tensorrt``)
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import InputFormat, ModelSpec, Placement, Precision
from .errors import ConfigError, GraphError
from .extras import needs
from .fsio import path_problem

__all__ = ["PREFIX", "INPUT_NAME", "OUTPUT_NAME", "OnnxMeta", "read_metadata", "write_metadata",
           "load_onnx"]

PREFIX = "xception_trt."
#: Names of the graph input and output in every ONNX file and engine we produce.
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class OnnxMeta:
    """Parsed xception-trt metadata of an ONNX model.

    Attributes:
        spec: The model's :class:`ModelSpec`.
        input_format: What the graph takes as input.
        precision: Precision of the graph's compute.
        raw: Every ``xception_trt.*`` entry, prefix stripped, values as stored (strings).
    """

    spec: ModelSpec
    input_format: InputFormat = InputFormat.FLOAT_NCHW
    precision: Precision = Precision.FP32
    raw: Mapping[str, str] = field(default_factory=dict)

    @property
    def placement(self) -> Placement | None:
        """The runtime the INT8 Q/DQ placement is made for (``None`` unless INT8); stored
        under the metadata key ``quant_target``.

        Raises:
            GraphError: The stored value is not a known placement.
        """
        if self.precision is not Precision.INT8:
            return None
        try:
            return Placement.parse(self.raw.get("quant_target", Placement.TENSORRT.value))
        except ConfigError as exc:
            raise GraphError(f"invalid xception-trt metadata in ONNX model: {exc}") from None

    @property
    def quant_target(self) -> Placement | None:
        """Old name of :attr:`placement` (deprecated)."""
        warnings.warn("OnnxMetadata.quant_target is deprecated; use .placement",
                      DeprecationWarning, stacklevel=2)
        return self.placement

    def json_field(self, key: str) -> Any:
        """A JSON-valued entry decoded (``None`` when absent)."""
        value = self.raw.get(key)
        return None if value is None else json.loads(value)


def load_onnx(path: str | os.PathLike[str], *, load_external_data: bool = True):
    """Load an ONNX model, turning "not ONNX / truncated / missing" into a clear GraphError."""
    with needs("reading ONNX files"):
        import onnx
        from google.protobuf.message import DecodeError

    path = Path(path)
    problem = path_problem(path)
    if problem is not None:
        raise GraphError(f"ONNX file {path} {problem}")
    if path.stat().st_size == 0:
        raise GraphError(f"ONNX file {path} is empty")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise GraphError(f"{path} is not a valid ONNX file (truncated or another format?): "
                         f"{exc}") from None
    if not model.graph.node:
        raise GraphError(f"{path} is not a usable ONNX model: its graph has no nodes "
                         "(truncated or another format?)")
    return model


def write_metadata(model: Any, entries: Mapping[str, Any]) -> Any:
    """Set ``xception_trt.<key>`` metadata props on an ``onnx.ModelProto`` (in place; returned).

    Values that are not strings are stored as JSON (ModelSpec via ``to_json``, enums by value).
    """
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in entries.items():
        if isinstance(value, ModelSpec):
            value = value.to_json()
        elif hasattr(value, "value") and isinstance(value.value, str):
            value = value.value
        elif not isinstance(value, str):
            value = json.dumps(value, sort_keys=True, default=str)
        props[PREFIX + key] = value
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def read_metadata(model_or_path: Any) -> OnnxMeta:
    """Read our metadata from an ``onnx.ModelProto`` or a file path.

    Raises:
        GraphError: The model was not written by xception-trt (no ModelSpec) or it is invalid.
    """
    model = (load_onnx(model_or_path, load_external_data=False)
             if isinstance(model_or_path, (str, os.PathLike)) else model_or_path)
    raw = {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
    if "model_spec" not in raw:
        raise GraphError("this ONNX model carries no xception-trt ModelSpec metadata; export it "
                         "with `xception-trt export CHECKPOINT -o model.onnx`")
    try:
        spec = ModelSpec.from_json(raw["model_spec"])
        fmt = InputFormat.parse(raw.get("input_format", InputFormat.FLOAT_NCHW.value))
        precision = Precision.parse(raw.get("precision", Precision.FP32.value))
    except ConfigError as exc:
        raise GraphError(f"invalid xception-trt metadata in ONNX model: {exc}") from None
    return OnnxMeta(spec, fmt, precision, raw)
