"""Precision variants of an xception-trt ONNX graph: FP16 and calibrated INT8 (explicit Q/DQ),
the calibration cache, TensorRT calibration-cache import, and accuracy on the CPU.

TensorRT 11 (and TensorRT-RTX) build strongly typed networks only: precision lives in the ONNX.
NVIDIA ModelOpt does the conversions; it monkeypatches ``onnxruntime.quantization`` when it
quantizes, so it always runs in a subprocess and this process never imports it.

Modules:

* :mod:`.fp16` — :func:`to_fp16` (ModelOpt AutoCast, FP32 I/O, out-of-range nodes kept FP32).
* :mod:`.int8` — :func:`quantize_int8`, several methods in one pass, :func:`auto_quantize_int8`;
  ``placement="onnxruntime"`` (or :func:`ort_int8`) places Q/DQ for ONNX Runtime's CPU kernels.
* :mod:`.kernels` — :func:`fused_kernel_counts`: Conv/Gemm nodes ONNX Runtime fuses into
  quantized kernels.
* :mod:`.cache` — our calibration cache entries (keys, staleness reasons) and TensorRT's text
  calibration cache (read, write, import).
* :mod:`.calibdata` — choosing, validating and batching calibration images.
* :mod:`.evaluate` — accuracy of the variants with ONNX Runtime on the CPU.
* :mod:`.source` — the FP32 source graph: checks, hashes, node selection, variant metadata.
* :mod:`.launcher` / :mod:`._worker` — the ModelOpt subprocess, parent and child side.
* :mod:`.sensitivity` — per-node INT8 sensitivity (one node quantized at a time, one
  calibration), :func:`~.sensitivity.strip_qdq`.
* :mod:`.targeted` — accuracy-targeted INT8 (fewest nodes kept in FP32, held-out report).
"""

from .cache import (
    DEFAULT_CACHE_DIR,
    DEFAULT_CACHE_DIR_HELP,
    read_trt_calibration_cache,
    write_trt_calibration_cache,
)
from .evaluate import VariantMetrics, evaluate_variants, format_table
from .fp16 import to_fp16
from .int8 import (
    DEFAULT_NUM_IMAGES,
    DEFAULT_PERCENTILE,
    HIGH_PRECISIONS,
    AutoQuantizeResult,
    CalibrationMethod,
    QuantizeResult,
    auto_quantize_int8,
    ort_int8,
    quantize_int8,
)
from .kernels import KernelCounts, fused_kernel_counts
from .launcher import Progress
from .source import depthwise_conv_nodes, graph_sha256, save_model

__all__ = [
    "CalibrationMethod",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_CACHE_DIR_HELP",
    "DEFAULT_NUM_IMAGES",
    "DEFAULT_PERCENTILE",
    "HIGH_PRECISIONS",
    "QuantizeResult",
    "AutoQuantizeResult",
    "Progress",
    "VariantMetrics",
    "to_fp16",
    "quantize_int8",
    "auto_quantize_int8",
    "ort_int8",
    "KernelCounts",
    "fused_kernel_counts",
    "evaluate_variants",
    "format_table",
    "graph_sha256",
    "depthwise_conv_nodes",
    "read_trt_calibration_cache",
    "write_trt_calibration_cache",
    "save_model",
]
