"""What an engine's layers compute in: a per-precision tally and a check against the request.

The builder records each engine's layers in its sidecar (``layers``: ``name``, ``type``,
``input_dtypes``, ``output_dtypes``, ``onnx_layers``, ``tactic``), from TensorRT-RTX's
VERBOSE builder log (types such as ``correlation``, ``kgen``, ``runtime_fusion``; dtypes
``Float``/``Half``/``Int8``) or from NVIDIA TensorRT's engine inspector JSON (types such as
``CaskConvolution``, ``Reformat``, ``Shuffle``; dtypes inside format strings such as
``Row major linear FP32`` or ``Thirty-two wide channel vectorized row major Int8 format``).
This module reads those records; it imports no TensorRT.

- :func:`tally_layers`: how many layers of each role (compute, convert, other, control) run in
  each precision. A compute layer's precision is that of the data it multiplies (its input):
  an INT8 convolution that writes a dequantized float output is INT8. Reformat, shuffle,
  cast and quantize layers are *convert* layers: they move or re-encode data and say nothing
  about the precision the network computes in.
- :func:`check_precision`: which compute layers (convolution, matrix multiply, fully
  connected) are not at the requested precision, leaving out the graph's intended
  exclusions (:func:`intended_exclusions` from the ONNX, :func:`sidecar_exclusions` from the
  sidecar): a Q/DQ INT8 graph keeps some compute nodes in high precision on purpose.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import Precision, StrEnum
from ..sidecar import EngineSidecar

log = logging.getLogger(__name__)

__all__ = ["LayerRole", "LayerInfo", "LayerTally", "PrecisionCheck", "Mismatch",
           "dtype_precision", "layer_infos", "tally_layers", "check_precision",
           "check_engine_precision", "intended_exclusions", "sidecar_exclusions",
           "generated_kernels",
           "COMPUTE_OPS"]

#: ONNX operators that are compute nodes for the precision check.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

# dtype words, most specific first: "bfloat16" before "float16" before "float"
_DTYPE_WORDS: tuple[tuple[str, str], ...] = (
    (r"bf16|bfloat16", "bf16"),
    (r"fp16|half|float16", "fp16"),
    (r"fp32|float32|float", "fp32"),
    (r"fp8|e4m3|e5m2", "fp8"),
    (r"fp4|e2m1", "fp4"),
    (r"uint8", "uint8"),
    (r"int8", "int8"),
    (r"int4", "int4"),
    (r"int32|int64|bool", "index"),
)
_DTYPE_RES = tuple((re.compile(rf"(?<![a-z0-9])(?:{words})(?![a-z0-9])", re.IGNORECASE), name)
                   for words, name in _DTYPE_WORDS)
#: precisions a network computes in (the rest are indices, masks or input encodings)
_NUMERIC = frozenset({"fp32", "fp16", "bf16", "int8", "fp8", "fp4", "int4"})

# Layer types. TensorRT-RTX (Myelin) names: correlation (convolution), runtime_fusion and kgen
# (generated kernels, a fully connected layer among them: "__myl_FcAdd", "__myl_CastMulFc"),
# shape_call/signal/wait (host-side and stream synchronisation). NVIDIA TensorRT inspector
# names: CaskConvolution, CaskGemmConvolution, CaskDeconvolution, MatrixMultiply, gemm,
# Reformat, Shuffle, NoOp, PointWiseV2, CaskPooling ...
_COMPUTE_TYPE = re.compile(r"conv|correlation|gemm|matmul|matrixmultiply|fullyconnected",
                           re.IGNORECASE)
_CONVERT_TYPE = re.compile(r"reformat|shuffle|cast|quantize|copy|transpose|reshape|slice|concat",
                           re.IGNORECASE)
_CONTROL_TYPE = re.compile(r"^(shape_call|signal|wait|noop|constant)$", re.IGNORECASE)
_MYELIN_TYPE = re.compile(r"^(kgen|runtime_fusion|myelin)$", re.IGNORECASE)
# TensorRT-RTX layers whose kernel it generates at build time: the plan keeps the kernel's CUDA
# source, compiled on the GPU when the engine first runs (see generated_kernels)
_GENERATED_TYPE = re.compile(r"^(kgen|runtime_fusion)$", re.IGNORECASE)
# a generated kernel's name spells its ops in CamelCase: "__myl_CastMulFc_myl0_98"
_MYELIN_COMPUTE_OP = re.compile(r"(?:^|_|[a-z])(?:Fc|Gemm|MatMul|Conv)(?=[A-Z_]|$)")
_CAST_FIRST = re.compile(r"^Cast(?:Mul)*(?:Fc|Gemm|MatMul|Conv)(?=[A-Z_]|$)")


class LayerRole(StrEnum):
    """What a layer does, for counting precisions."""

    COMPUTE = "compute"  # convolution, matrix multiply, fully connected
    CONVERT = "convert"  # reformat, shuffle, cast, quantize: moves or re-encodes data
    OTHER = "other"  # pointwise, pooling, reductions ...
    CONTROL = "control"  # no data: shape computation, stream signal/wait, no-op
    UNKNOWN = "unknown"  # the record has no type (the inspector's names-only form)


def dtype_precision(text: Any) -> str | None:
    """The precision a dtype or format string names (``"fp32"``, ``"fp16"``, ``"int8"`` ...).

    Understands TensorRT-RTX's ``Float``/``Half``/``Int8`` and NVIDIA TensorRT's format strings
    (``Channel major FP16 format where channel % 8 == 0``). Returns ``"index"`` for integer
    index/bool types, ``None`` for anything it does not recognise.
    """
    if not isinstance(text, str):
        return None
    for regex, name in _DTYPE_RES:
        if regex.search(text):
            return name
    return None


@dataclass(frozen=True)
class LayerInfo:
    """One engine layer as the sidecar records it, with its role and precision."""

    name: str
    type: str | None
    input_precisions: tuple[str | None, ...] = ()
    output_precisions: tuple[str | None, ...] = ()
    onnx_layers: tuple[str, ...] = ()
    tactic: str | None = None

    @classmethod
    def from_record(cls, record: Any) -> LayerInfo:
        """From one sidecar ``layers`` entry (untrusted: odd fields become ``None``/empty)."""
        if not isinstance(record, Mapping):
            return cls(name=str(record), type=None)

        def strings(key: str) -> tuple[Any, ...]:
            value = record.get(key)
            return tuple(value) if isinstance(value, (list, tuple)) else ()

        kind = record.get("type")
        tactic = record.get("tactic")
        return cls(
            name=str(record.get("name")),
            type=kind if isinstance(kind, str) and kind else None,
            input_precisions=tuple(dtype_precision(d) for d in strings("input_dtypes")),
            output_precisions=tuple(dtype_precision(d) for d in strings("output_dtypes")),
            onnx_layers=tuple(n for n in strings("onnx_layers") if isinstance(n, str)),
            tactic=tactic if isinstance(tactic, str) else None,
        )

    @property
    def role(self) -> LayerRole:
        """What the layer does (see :class:`LayerRole`)."""
        if self.type is None:
            return LayerRole.UNKNOWN
        if _CONTROL_TYPE.match(self.type) or not (self.input_precisions
                                                 or self.output_precisions):
            return LayerRole.CONTROL
        if _MYELIN_TYPE.match(self.type):
            # generated kernels: a fully connected/convolution among their ops computes; one
            # whose data leaves in another precision than it came (a fused quantize) converts
            if _MYELIN_COMPUTE_OP.search(self.name.removeprefix("__myl_")):
                return LayerRole.COMPUTE
            ins = {p for p in self.input_precisions if p in _NUMERIC}
            outs = {p for p in self.output_precisions if p in _NUMERIC}
            return LayerRole.CONVERT if ins != outs else LayerRole.OTHER
        if _CONVERT_TYPE.search(self.type):
            return LayerRole.CONVERT
        if _COMPUTE_TYPE.search(self.type):
            return LayerRole.COMPUTE
        return LayerRole.OTHER

    @property
    def precision(self) -> str | None:
        """The precision the layer computes in: that of its first numeric input (an INT8
        convolution with a float output is INT8), else of its first numeric output; ``None``
        when the record names none. A generated kernel that casts its input before its compute
        op (TensorRT-RTX's ``__myl_CastMulFc``: dequantize, then a float fully connected)
        computes in its output's precision."""
        order = (*self.input_precisions, *self.output_precisions)
        if _MYELIN_TYPE.match(self.type or "") and _CAST_FIRST.match(
                self.name.removeprefix("__myl_")):
            order = (*self.output_precisions, *self.input_precisions)
        for p in order:
            if p in _NUMERIC:
                return p
        return None


def generated_kernels(layers: Iterable[Any] | EngineSidecar | None) -> int:
    """How many layers run a kernel TensorRT-RTX generated for this engine (types ``kgen`` and
    ``runtime_fusion``). The plan stores each one's CUDA source, compiled on the GPU when the
    engine first runs: it is what makes a small model's INT8 engine larger than its FP32 one
    (one generated kernel per quantizing layer). ``0`` for NVIDIA TensorRT engines."""
    return sum(1 for info in layer_infos(layers)
               if info.type is not None and _GENERATED_TYPE.match(info.type))


def layer_infos(layers: Iterable[Any] | EngineSidecar | None) -> tuple[LayerInfo, ...]:
    """:class:`LayerInfo` for each record of a sidecar (or of its ``layers`` list)."""
    if isinstance(layers, EngineSidecar):
        layers = layers.layers
    if layers is None:
        return ()
    return tuple(r if isinstance(r, LayerInfo) else LayerInfo.from_record(r) for r in layers)


@dataclass(frozen=True)
class LayerTally:
    """Layer counts per role and precision.

    Attributes:
        counts: ``{role: {precision: layers}}``; a layer without a recognised precision counts
            under ``"unknown"``; control layers (no data) are counted under ``"none"``.
    """

    counts: Mapping[str, Mapping[str, int]]

    def compute(self) -> dict[str, int]:
        """Compute layers per precision (``{"int8": 37, "fp32": 1}``)."""
        return dict(self.counts.get(LayerRole.COMPUTE.value, {}))

    def total(self, role: LayerRole | None = None) -> int:
        """Number of layers (of one role, or of all)."""
        roles = [role.value] if role is not None else list(self.counts)
        return sum(sum(self.counts.get(r, {}).values()) for r in roles)

    def to_dict(self) -> dict[str, dict[str, int]]:
        """Plain JSON-able counts."""
        return {role: dict(by) for role, by in self.counts.items()}

    def summary(self) -> str:
        """One line: ``compute: 37 int8, 1 fp32; convert: 40; other: 6; control: 17``."""
        parts = []
        for role in LayerRole:
            by = self.counts.get(role.value)
            if not by:
                continue
            if role is LayerRole.COMPUTE:
                parts.append("compute: " + ", ".join(f"{n} {p}" for p, n in sorted(
                    by.items(), key=lambda kv: (-kv[1], kv[0]))))
            else:
                parts.append(f"{role.value}: {sum(by.values())}")
        return "; ".join(parts) or "no layers"


def tally_layers(layers: Iterable[Any] | EngineSidecar | None) -> LayerTally:
    """Count an engine's layers per role and precision (see the module docstring)."""
    counts: dict[str, dict[str, int]] = {}
    for info in layer_infos(layers):
        role = info.role
        key = "none" if role is LayerRole.CONTROL else (info.precision or "unknown")
        by = counts.setdefault(role.value, {})
        by[key] = by.get(key, 0) + 1
    return LayerTally(counts)


@dataclass(frozen=True)
class Mismatch:
    """A compute layer not at the requested precision."""

    layer: str
    onnx_nodes: tuple[str, ...]
    found: str | None

    def __str__(self) -> str:
        nodes = f" ({', '.join(self.onnx_nodes)})" if self.onnx_nodes else ""
        return f"{self.layer}{nodes} runs in {self.found or 'an unknown precision'}"


@dataclass(frozen=True)
class PrecisionCheck:
    """Outcome of :func:`check_precision`.

    Attributes:
        requested: The precision the engine was asked for.
        checked: Compute layers compared with it.
        mismatched: Compute layers at another precision (a silent fallback).
        excluded: Compute layers left out because the graph keeps their node in high precision
            on purpose (their layer names).
        unverifiable: Layers whose records give no type or precision (names only): the check
            cannot speak for them.
    """

    requested: Precision
    checked: int
    mismatched: tuple[Mismatch, ...] = ()
    excluded: tuple[str, ...] = ()
    unverifiable: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """``True`` when layers were checked and every one is at the requested precision."""
        return self.checked > 0 and not self.mismatched and not self.unverifiable

    def summary(self) -> str:
        """One line for a report or a warning."""
        if self.checked == 0 and not self.mismatched:
            return (f"{self.requested.value}: no compute layer could be checked (the engine's "
                    "layer information has no types or precisions)")
        if self.mismatched:
            shown = "; ".join(str(m) for m in self.mismatched[:4])
            more = f" (+{len(self.mismatched) - 4} more)" if len(self.mismatched) > 4 else ""
            return (f"{len(self.mismatched)} of {self.checked} compute layers are not "
                    f"{self.requested.value}: {shown}{more}")
        extra = f", {len(self.excluded)} excluded by the graph" if self.excluded else ""
        unknown = (f", {len(self.unverifiable)} without layer information"
                   if self.unverifiable else "")
        return f"all {self.checked} compute layers run in {self.requested.value}{extra}{unknown}"


def check_precision(layers: Iterable[Any] | EngineSidecar | None, requested: Precision | str,
                    *, exclusions: Iterable[str] = ()) -> PrecisionCheck:
    """Which compute layers do not run at ``requested``.

    Args:
        layers: The sidecar (or its ``layers`` records).
        requested: The precision the engine was asked for.
        exclusions: ONNX node names the graph keeps in high precision on purpose (from
            :func:`intended_exclusions` or :func:`sidecar_exclusions`); a compute layer
            that implements one of them is not held to ``requested``.

    Returns:
        A :class:`PrecisionCheck`.

    Raises:
        ConfigError: ``requested`` is not a precision.
    """
    want = Precision.parse(requested).value
    excluded_nodes = frozenset(exclusions)
    checked = 0
    mismatched: list[Mismatch] = []
    excluded: list[str] = []
    unknown: list[str] = []
    for info in layer_infos(layers):
        role = info.role
        if role is LayerRole.UNKNOWN:
            unknown.append(info.name)
            continue
        if role is not LayerRole.COMPUTE:
            continue
        # a layer that implements an excluded node is that node's (fused epilogues and the
        # Q/DQ around it are listed with it, never another compute node)
        if any(n in excluded_nodes for n in info.onnx_layers):
            excluded.append(info.name)
            continue
        own = [n for n in info.onnx_layers if not _is_qdq_name(n)]
        checked += 1
        if info.precision != want:
            mismatched.append(Mismatch(info.name, tuple(own), info.precision))
    return PrecisionCheck(Precision(want), checked, tuple(mismatched), tuple(excluded),
                          tuple(unknown))


def _is_qdq_name(name: str) -> bool:
    # the quantize/dequantize nodes TensorRT fuses into a layer are listed with it
    return name.endswith(("_QuantizeLinear", "_DequantizeLinear"))


def intended_exclusions(model: Any, precision: Precision | str) -> frozenset[str]:
    """Compute nodes the graph keeps in high precision on purpose, read from the ONNX itself.

    INT8 (explicit Q/DQ): a compute node (:data:`COMPUTE_OPS`) whose data input does not come
    from a ``DequantizeLinear``. FP16: a compute node whose data input is not float16 (after
    ONNX shape inference). FP32: none.

    Args:
        model: An ``onnx.ModelProto``.
        precision: The variant's precision.
    """
    want = Precision.parse(precision)
    if want is Precision.FP32:
        return frozenset()
    graph = model.graph
    if want is Precision.INT8:
        producer = {out: node.op_type for node in graph.node for out in node.output}
        return frozenset(n.name for n in graph.node if n.op_type in COMPUTE_OPS and n.input
                         and producer.get(n.input[0]) != "DequantizeLinear")
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    fp16 = onnx.TensorProto.FLOAT16
    return frozenset(n.name for n in graph.node if n.op_type in COMPUTE_OPS and n.input
                     and types.get(n.input[0]) != fp16)


def sidecar_exclusions(sidecar: EngineSidecar) -> frozenset[str]:
    """The high-precision nodes the engine's ONNX recorded in its metadata: INT8's
    ``calibration.excluded_nodes``, FP16's ``fp16.fp32_nodes``; empty when none are recorded."""
    names: Sequence[Any] = ()
    if sidecar.precision is Precision.INT8 and isinstance(sidecar.calibration, Mapping):
        names = sidecar.calibration.get("excluded_nodes") or ()
    elif sidecar.precision is Precision.FP16:
        raw = sidecar.onnx.get("metadata", {}) if isinstance(sidecar.onnx, Mapping) else {}
        fp16 = raw.get("fp16") if isinstance(raw, Mapping) else None
        if isinstance(fp16, str):
            try:
                fp16 = json.loads(fp16)
            except json.JSONDecodeError:
                fp16 = None
        if isinstance(fp16, Mapping):
            names = fp16.get("fp32_nodes") or ()
    return frozenset(n for n in names if isinstance(n, str)) if isinstance(
        names, (list, tuple)) else frozenset()


def check_engine_precision(sidecar: EngineSidecar, *, onnx_model: Any = None) -> PrecisionCheck:
    """:func:`check_precision` of an engine against the precision its sidecar records.

    The exclusions come from ``onnx_model`` (the graph the engine was built from) when given,
    else from the sidecar's record of the graph's metadata (:func:`sidecar_exclusions`).
    """
    exclusions = (intended_exclusions(onnx_model, sidecar.precision) if onnx_model is not None
                  else sidecar_exclusions(sidecar))
    return check_precision(sidecar, sidecar.precision, exclusions=exclusions)
