"""Which Conv/Gemm nodes ONNX Runtime's CPU provider runs as quantized kernels.

ONNX Runtime fuses a ``DequantizeLinear -> Conv -> QuantizeLinear`` group into one QLinearConv
(Gemm: QGemm) only when the Q/DQ placement matches its selectors; any other Conv/Gemm runs in
float behind DequantizeLinear nodes. The only reliable count is the graph ONNX Runtime itself
optimises: :func:`fused_kernel_counts` opens a CPU session that saves its optimised graph
(``SessionOptions.optimized_model_filepath``) and counts the op types in it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import EngineError
from ..extras import needs
from ..jsonable import JsonMixin
from .launcher import worker_tempdir

__all__ = ["KernelCounts", "fused_kernel_counts", "QUANTIZED_CONV_OPS", "QUANTIZED_GEMM_OPS",
           "FLOAT_CONV_OPS", "FLOAT_GEMM_OPS"]

#: Quantized kernels that replace a Conv (QLinearConv is in the ONNX domain and, in NHWC form,
#: in com.microsoft; ConvInteger is the dynamic-quantization form).
QUANTIZED_CONV_OPS = ("QLinearConv", "ConvInteger")
#: Quantized kernels that replace a Gemm/MatMul.
QUANTIZED_GEMM_OPS = ("QGemm", "QLinearMatMul", "MatMulInteger")
#: Float convolutions after optimisation (FusedConv: Conv + activation; NCHWc Conv is "Conv").
FLOAT_CONV_OPS = ("Conv", "FusedConv")
#: Float matrix products after optimisation.
FLOAT_GEMM_OPS = ("Gemm", "FusedGemm", "MatMul", "FusedMatMul")


@dataclass(frozen=True)
class KernelCounts(JsonMixin):
    """Op counts of the graph ONNX Runtime optimised for the CPU.

    Attributes:
        quantized_conv: Convolutions running as quantized kernels.
        quantized_gemm: Gemm/MatMul running as quantized kernels.
        float_conv: Convolutions left in float.
        float_gemm: Gemm/MatMul left in float.
        ops: Every op type of the optimised graph with its count.
    """

    quantized_conv: int
    quantized_gemm: int
    float_conv: int
    float_gemm: int
    ops: Mapping[str, int] = field(default_factory=dict)

    @property
    def quantized(self) -> int:
        """Conv/Gemm nodes fused into quantized kernels."""
        return self.quantized_conv + self.quantized_gemm

    @property
    def total(self) -> int:
        """Every Conv/Gemm of the optimised graph, quantized or not."""
        return self.quantized + self.float_conv + self.float_gemm

    @property
    def all_fused(self) -> bool:
        """Whether every Conv/Gemm runs as a quantized kernel."""
        return self.total > 0 and self.quantized == self.total

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        ops = out.pop("ops")
        return out | {"fused": f"{self.quantized}/{self.total}", "ops": ops}


def fused_kernel_counts(onnx_path: str | os.PathLike[str], *, level: str = "all"
                        ) -> KernelCounts:
    """Count quantized vs float Conv/Gemm kernels in ONNX Runtime's optimised CPU graph.

    Args:
        onnx_path: The ONNX file (any precision).
        level: ``"all"`` (what a default session runs: layout transforms included) or
            ``"extended"`` (the Q/DQ fusions without the CPU-specific NCHWc/NHWC layouts).

    Returns:
        A :class:`KernelCounts`.

    Raises:
        EngineError: ONNX Runtime cannot load the graph, or ``level`` is unknown.
        DependencyError: onnxruntime/onnx are not installed (the ``ort`` extra).
    """
    with needs("counting ONNX Runtime's fused kernels", extra="ort"):
        import onnx
        import onnxruntime as ort

    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}
    if level not in levels:
        raise EngineError(f"unknown optimisation level {level!r}; choose all or extended")
    with worker_tempdir("kernels") as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # the NCHWc "hardware specific" warning is expected here
        opts.graph_optimization_level = levels[level]
        opts.optimized_model_filepath = str(tmp / "optimized.onnx")
        try:
            ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... classes
            raise EngineError(f"ONNX Runtime cannot load {onnx_path}: "
                              f"{str(exc).splitlines()[0]}") from None
        graph = onnx.load(str(tmp / "optimized.onnx"), load_external_data=False).graph
    ops = Counter(n.op_type for n in graph.node)

    def total(names: tuple[str, ...]) -> int:
        return sum(ops.get(n, 0) for n in names)

    return KernelCounts(total(QUANTIZED_CONV_OPS), total(QUANTIZED_GEMM_OPS),
                        total(FLOAT_CONV_OPS), total(FLOAT_GEMM_OPS), dict(sorted(ops.items())))
