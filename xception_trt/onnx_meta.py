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

import io
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .config import InputFormat, ModelSpec, Placement, Precision
from .errors import ConfigError, GraphError
from .extras import needs
from .fsio import path_problem, sha256_file

__all__ = ["PREFIX", "INPUT_NAME", "OUTPUT_NAME", "OnnxMeta", "OnnxSource", "read_metadata",
           "read_file_metadata", "read_stream_metadata", "write_metadata", "load_onnx"]

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
    return _meta_from_props({p.key: p.value for p in model.metadata_props})


def _meta_from_props(props: Mapping[str, str]) -> OnnxMeta:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in props.items()):
        # protobuf hands back bytes for a key or value that is not valid UTF-8
        raise GraphError("invalid xception-trt metadata in ONNX model: a metadata key or value "
                         "is not UTF-8 text; re-export the model")
    raw = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
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


# ---------------------------------------------------------------------------------------------
# the metadata of a file without parsing its graph


class _WireError(Exception):
    """The bytes are not the protobuf wire format this reader expects."""


# ModelProto.graph, ModelProto.metadata_props, GraphProto.node (onnx/onnx.proto): field numbers
# are part of ONNX's compatibility promise
_MODEL_GRAPH, _MODEL_METADATA, _GRAPH_NODE = 7, 14, 1
_LEN = 2  # the length-delimited wire type


def _varint(fh: IO[bytes]) -> int:
    result = shift = 0
    while True:
        byte = fh.read(1)
        if not byte:
            raise _WireError("truncated varint")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise _WireError("varint too long")


def _fields(fh: IO[bytes], end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, payload start, payload length) of each field up to ``end``;
    the caller reads a length-delimited payload or leaves it (the next field seeks past it)."""
    while fh.tell() < end:
        key = _varint(fh)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _WireError("field number 0")
        if wire == 0:
            _varint(fh)
            continue
        size = {1: 8, 5: 4}.get(wire)
        if size is None:
            if wire != _LEN:
                raise _WireError(f"wire type {wire}")
            size = _varint(fh)
        start = fh.tell()
        if start + size > end:
            raise _WireError("field runs past its message")
        yield number, wire, start, size
        fh.seek(start + size)


def _string_pair(data: bytes) -> tuple[str, str]:
    out = {1: "", 2: ""}
    buf = io.BytesIO(data)
    for number, wire, start, size in _fields(buf, len(data)):
        if wire == _LEN and number in out:
            buf.seek(start)
            out[number] = buf.read(size).decode("utf-8")
    return out[1], out[2]


def _scan_metadata(path: Path) -> dict[str, str] | None:
    """The ``metadata_props`` of an ONNX file read from its top-level protobuf fields, seeking
    past the graph (its weights) instead of parsing it.

    Returns:
        The entries, or ``None`` when the file is not plainly a model with a graph of at least
        one node (missing, empty, truncated, not ONNX): the caller then parses it in full, which
        names the problem.
    """
    try:
        with open(path, "rb") as fh:
            return _scan_props(fh, os.fstat(fh.fileno()).st_size)
    except OSError:
        return None


#: Longest metadata entry read (bytes): ours are a few KiB.
_MAX_PROP_BYTES = 1 << 20


def _scan_props(fh: IO[bytes], end: int) -> dict[str, str] | None:
    """:func:`_scan_metadata` on an open seekable binary stream of ``end`` bytes."""
    try:
        props: dict[str, str] = {}
        has_node = False
        for number, wire, start, size in list(_fields(fh, end)):
            if wire != _LEN:
                continue
            if number == _MODEL_METADATA:
                if size > _MAX_PROP_BYTES:
                    return None
                fh.seek(start)
                key, value = _string_pair(fh.read(size))
                props[key] = value
            elif number == _MODEL_GRAPH and not has_node:
                fh.seek(start)
                has_node = any(n == _GRAPH_NODE and w == _LEN
                               for n, w, _, _ in _fields(fh, start + size))
    except (OSError, _WireError, UnicodeDecodeError):
        return None
    return props if has_node else None


def read_stream_metadata(fh: IO[bytes], size: int, *, name: str) -> OnnxMeta:
    """Our metadata of an ONNX model in an open seekable stream of ``size`` bytes (a bundle's
    member), read from its top-level fields without parsing the graph or holding it in memory.

    Raises:
        GraphError: Not plainly an ONNX model with a graph (empty, truncated, garbage), or no
            valid xception-trt metadata (``name`` says which).
    """
    props = _scan_props(fh, size)
    if props is None:
        raise GraphError(f"{name} is not an ONNX model (empty, truncated or not ONNX)")
    try:
        return _meta_from_props(props)
    except RecursionError:
        raise GraphError(f"{name}: its xception-trt metadata is nested too deeply") from None


def read_file_metadata(path: str | os.PathLike[str]) -> OnnxMeta:
    """Our metadata of an ONNX file, read from its top-level fields without parsing the graph
    and its weights (a file that is not plainly an ONNX model is parsed in full, which names
    the problem): what :func:`read_metadata` gives for a path, at a fraction of the cost.

    Raises:
        GraphError: The file is missing, not ONNX, truncated, or lacks xception-trt metadata.
    """
    props = _scan_metadata(Path(path))
    if props is None:  # a full parse says what is wrong (or reads what the scan could not)
        model = load_onnx(path, load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
    return _meta_from_props(props)


@dataclass(frozen=True)
class OnnxSource:
    """An ONNX file read once: its metadata, SHA-256 and size, handed down to every step that
    needs them (the build checks, the engine cache key, the sidecar) instead of each reading
    the file again. A snapshot: the file must not change while the command that read it runs.

    Attributes:
        path: The file.
        meta: Its xception-trt metadata.
        sha256: Hex SHA-256 of its bytes.
        size: Its size in bytes.
    """

    path: Path
    meta: OnnxMeta
    sha256: str
    size: int

    @classmethod
    def read(cls, path: str | os.PathLike[str], *, sha256: str | None = None) -> OnnxSource:
        """Read the metadata (:func:`read_file_metadata`: without parsing the graph and its
        weights) and hash the file in chunks, once each.

        Args:
            path: The ONNX file.
            sha256: Its digest when the caller has just computed it from the file (the
                variants manifest check): it is not computed again.

        Raises:
            GraphError: The file is missing, not ONNX, truncated, or lacks xception-trt
                metadata.
        """
        path = Path(path)
        meta = read_file_metadata(path)
        try:
            size = path.stat().st_size
            digest = sha256 or sha256_file(path)
        except OSError as exc:
            raise GraphError(f"cannot read the ONNX file {path}: {exc.strerror or exc}") from None
        return cls(path, meta, digest, size)

    @classmethod
    def of(cls, source: str | os.PathLike[str] | OnnxSource) -> OnnxSource:
        """``source`` itself when it is already read, else :meth:`read` it."""
        return source if isinstance(source, OnnxSource) else cls.read(source)
