"""ModelOpt's activation scales from our own ONNX Runtime pass, for every calibration method.

ModelOpt's ONNX PTQ calibrates with ONNX Runtime's calibrators (``onnxruntime.quantization.
calibrate``): it makes every activation a graph output, turns graph optimizations and the memory
arena off, copies every activation of every batch to numpy and reduces it there (``max``:
min/max; ``entropy``: a 128-bin signed histogram; ``percentile``: a 2048-bin histogram of
|x|). That costs 3x (max) to 16x (percentile) a forward pass on the full model.

Here one optimized ONNX Runtime pass does the reductions in the graph: a ``ReduceMax`` and a
``ReduceMin`` per tensor (all ``max`` needs: scale = max |x| / 127; of a ``Relu`` output, which
is never negative, ``max`` takes the ``ReduceMax`` alone), and, for the histogram
methods, a strided ``Slice`` of each flattened tensor whose batch holds more than
:data:`SAMPLE_LIMIT` values, so numpy histograms at most that many values per tensor and
batch. The histograms are built exactly as ModelOpt's patched collectors build them (same
bins, same range growth from batch to batch, the ranges taken from the full tensor), counts
scaled back by the sampling ratio; the thresholds come from ONNX Runtime's own
``HistogramCollector`` (``compute_entropy`` / ``compute_percentile``) and the scales from its
``compute_scale_zp`` -- the functions ModelOpt calls. Tensors small enough to histogram whole
(every tensor of the test model) get ModelOpt's scales to float rounding; sampled ones agree
within the tolerance stated in docs/int8.md.

Private to :mod:`xception_trt.precision`: it runs in the worker process, and in the calling
process when the Q/DQ placement is already known (no ModelOpt is needed then).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ENTROPY_BINS", "PERCENTILE_BINS", "SAMPLE_LIMIT", "fusable", "calibrate_scales",
           "tensor_ranges"]

log = logging.getLogger(__name__)

#: ModelOpt's histogram sizes (``onnxruntime`` calibrator defaults it keeps): entropy
#: ``num_bins`` = ``num_quantized_bins`` = 128; percentile ``num_bins`` = 2048.
ENTROPY_BINS = 128
PERCENTILE_BINS = 2048
#: Values per tensor and batch above which the histogram methods sample the tensor (a strided
#: spatial slice); min/max always come from the whole tensor.
SAMPLE_LIMIT = 1 << 18

Progress = Callable[[int, int], None]


def fusable(model: Any) -> set[str]:
    """Conv/Gemm outputs read only by a Relu or an Add: ONNX Runtime fuses those pairs (a
    reduction on the tensor would stop it), and ModelOpt's placement never quantizes them."""
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for t in node.input:
            consumers.setdefault(t, set()).add(node.op_type)
    outputs = {o.name for o in model.graph.output}
    return {o for n in model.graph.node if n.op_type in ("Conv", "Gemm") for o in n.output
            if o not in outputs and consumers.get(o) and consumers[o] <= {"Relu", "Add"}}


def _float_tensors(model: Any, input_name: str) -> tuple[list[str], dict[str, list[int]]]:
    """Names of the float activations (graph input first, then in node order) and their
    inferred shapes (``-1``: unknown dimension)."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    for v in (list(inferred.graph.value_info) + list(inferred.graph.input)
              + list(inferred.graph.output)):
        tt = v.type.tensor_type
        types[v.name] = tt.elem_type
        if tt.HasField("shape"):
            shapes[v.name] = [d.dim_value if d.HasField("dim_value") else -1
                              for d in tt.shape.dim]
    names = [t for t in [input_name] + [o for n in model.graph.node for o in n.output]
             if types.get(t) == TensorProto.FLOAT]
    return list(dict.fromkeys(names)), shapes


def _stride(shape: list[int] | None, batch: int, limit: int) -> int:
    """Step through the flattened batch of a tensor that brings it to at most ``limit`` values
    (1: histogram it whole). The step shares no factor with the row length nor the plane size,
    so the sample visits every row, column and channel alike: a spatial grid would miss the
    border rows and columns, whose values (zero padding) differ."""
    if not shape or any(d <= 0 for d in shape[1:]):
        return 1
    per_image = math.prod(shape[1:])
    total = batch * per_image
    if total <= limit:
        return 1
    step = math.ceil(total / limit)
    sizes = [shape[-1], math.prod(shape[-2:]) if len(shape) > 2 else shape[-1], per_image]
    while any(math.gcd(step, n) != 1 for n in sizes):
        step += 1
    return step


class _Entropy:
    """ModelOpt's entropy collector (``ort_patching._collect_value`` + ONNX Runtime's
    ``HistogramCollector.merge_histogram``) for one tensor, fed one batch at a time, with the
    batch's min/max taken from the whole tensor and the counts from a sample scaled by
    ``weight``."""

    def __init__(self) -> None:
        self.state: tuple | None = None

    def add(self, data: np.ndarray, lo: np.float32, hi: np.float32, weight: float) -> None:
        thr = max(abs(lo), abs(hi))
        if self.state is None:
            hist, edges = np.histogram(data, ENTROPY_BINS, range=(-float(thr), float(thr)))
            self.state = (_scaled(hist, weight), edges, lo, hi, thr)
            return
        old_hist, old_edges, old_lo, old_hi, old_thr = self.state
        lo, hi = min(old_lo, lo), max(old_hi, hi)
        if thr <= old_thr:
            hist, _ = np.histogram(data, len(old_hist), range=(-old_thr, old_thr))
            self.state = (_scaled(hist, weight) + old_hist, old_edges, lo, hi, old_thr)
            return
        if old_thr == 0:
            hist, edges = np.histogram(data, len(old_hist), range=(-thr, thr))
            self.state = (_scaled(hist, weight) + old_hist, edges, lo, hi, thr)
            return
        n = len(old_hist)
        stride = 2 * old_thr / n
        half = int((thr - old_thr) // stride + 1)
        new_n = n + 2 * half
        new_thr = half * stride + old_thr
        hist, edges = np.histogram(data, new_n, range=(-new_thr, new_thr))
        hist = _scaled(hist, weight)
        hist[half:new_n - half] += old_hist
        self.state = (hist, edges, lo, hi, new_thr)


class _Percentile:
    """ModelOpt's symmetric percentile collector (``ort_patching._collect_absolute_value``):
    a histogram of |x| whose first batch sets ``PERCENTILE_BINS`` bins over [min |x|, max |x|]
    and whose later batches add bins of the same width above it."""

    def __init__(self) -> None:
        self.state: tuple | None = None

    def add(self, data: np.ndarray, lo: np.float32, hi: np.float32, weight: float,
            exact: bool) -> None:
        absd = np.abs(data)
        amax = np.float32(max(abs(lo), abs(hi)))
        if self.state is None:
            first = absd.min() if absd.size else np.float32(0)
            # np.histogram(bins=N) spans [min, max] of the data: the same edges from a
            # two-value array holding the whole tensor's min |x| (sampled) and max |x|.
            _, edges = np.histogram(np.array([first, amax], np.float32), bins=PERCENTILE_BINS)
            hist, _ = np.histogram(absd, bins=edges)
            self.state = (_scaled(hist, weight), edges.astype(np.float32), lo, hi)
            return
        old_hist, edges, old_lo, old_hi = self.state
        if amax > edges[-1]:
            width = edges[1] - edges[0]
            edges = np.hstack((edges, np.arange(edges[-1] + width, amax + width, width)))
        if exact:
            hist, _ = np.histogram(absd, bins=edges)
        else:  # uniform bins: numpy's fast path (a value on an edge may land one bin over)
            hist, _ = np.histogram(absd, bins=len(edges) - 1,
                                   range=(float(edges[0]), float(edges[-1])))
        hist = _scaled(hist, weight)
        hist[:len(old_hist)] += old_hist
        self.state = (hist, edges.astype(np.float32), min(old_lo, lo), max(old_hi, hi))


def _scaled(hist: np.ndarray, weight: float) -> np.ndarray:
    return hist.astype(np.int64) if weight == 1.0 else np.rint(hist * weight).astype(np.int64)


def _scale_from_range(lo: Any, hi: Any) -> float:
    """ONNX Runtime's symmetric int8 activation scale for the range [lo, hi] (what its QDQ
    quantizer computes from a calibrator's TensorData with ``ActivationSymmetric``)."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.INT8, symmetric=True)
    _, scale = compute_scale_zp(np.asarray(lo, np.float32), np.asarray(hi, np.float32), qmin,
                                qmax, symmetric=True)
    return float(scale)


def calibrate_scales(onnx_model_or_path: Any, files: Sequence[Path], input_name: str, *,
                     method: str, percentile: float, skip_fusable: bool = True,
                     tensors: Sequence[str] | None = None,
                     sample_limit: int = SAMPLE_LIMIT,
                     progress: Progress | None = None) -> dict[str, float]:
    """Per-tensor symmetric int8 activation scales of ``method``, from one ONNX Runtime pass.

    Args:
        onnx_model_or_path: The FP32 graph (an ``onnx.ModelProto``, left unchanged, or a path).
        files: Calibration batches (``.npz`` files holding ``input``), in the order ModelOpt
            reads them.
        input_name: The graph input they feed.
        method: ``max``, ``entropy`` or ``percentile``.
        percentile: Percentile of |x| for ``percentile`` (0 < p <= 100).
        skip_fusable: Leave out the Conv/Gemm outputs ModelOpt never quantizes (see
            :func:`fusable`).
        tensors: Measure only these (the activations a known Q/DQ placement quantizes: each
            tensor left out is one reduction less and lets ONNX Runtime keep its fused,
            blocked layout there); names no node makes are ignored, and so are, for the
            histogram methods, tensors that are not float (``max`` takes them as float).
        sample_limit: Histogram methods: values per tensor and batch above which the tensor
            is sampled.
        progress: Called with ``(batches done, batches)``.

    Returns:
        {tensor: scale} for every float activation measured (input included).
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    if method not in ("max", "entropy", "percentile"):
        raise ValueError(f"unknown calibration method {method!r}")
    if isinstance(onnx_model_or_path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(onnx_model_or_path)
    else:
        model = onnx.load(onnx_model_or_path)
    hist = method != "max"
    if tensors is not None and not hist:
        # max needs no shapes, and a placement's activations are float: no shape inference
        # of the whole graph (about 0.4 s of the full model's), the tensors in node order.
        wanted = set(tensors)
        names = [t for t in dict.fromkeys([input_name] + [o for n in model.graph.node
                                                          for o in n.output]) if t in wanted]
        shapes: dict[str, list[int]] = {}
    else:
        names, shapes = _float_tensors(model, input_name)
        if tensors is not None:
            wanted = set(tensors)
            names = [t for t in names if t in wanted]
    skip = fusable(model) if skip_fusable else set()
    names = [t for t in names if t not in skip]
    with np.load(files[0]) as data:
        batch0 = int(data["input"].shape[0])
    strides = {t: (_stride(shapes.get(t), batch0, sample_limit) if hist else 1) for t in names}
    # A Relu output is >= 0: its max is its largest |x|, all ``max`` needs of it.
    relu = ({o for n in model.graph.node if n.op_type == "Relu" for o in n.output}
            if not hist else set())
    del model.graph.output[:]
    for i, name in enumerate(names):
        _add_range_outputs(model, i, name, min_too=name not in relu)
        if not hist:
            continue
        r = strides[name]
        if r == 1:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                                    None))
            continue
        # Every r-th value of the flattened batch (a view: only the sample is copied).
        consts = {"flat": [-1], "starts": [r // 2], "ends": [2**62], "axes": [0], "steps": [r]}
        for key, val in consts.items():
            model.graph.initializer.append(numpy_helper.from_array(np.array(val, np.int64),
                                                                   f"xtrt_{key}_{i}"))
        out = f"xtrt_sample_{i}"
        model.graph.node.append(helper.make_node("Reshape", [name, f"xtrt_flat_{i}"],
                                                 [f"xtrt_flat_out_{i}"]))
        model.graph.node.append(helper.make_node(
            "Slice", [f"xtrt_flat_out_{i}"] + [f"xtrt_{k}_{i}" for k in
                                               ("starts", "ends", "axes", "steps")], [out]))
        model.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    # Where each tensor's outputs start: ReduceMax, [ReduceMin], [sample].
    starts = np.cumsum([0] + [(2 if t not in relu else 1) + hist for t in names]).tolist()
    amax = np.zeros(len(names), dtype=np.float64)
    collectors: list[Any] = ([_Entropy() for _ in names] if method == "entropy"
                             else [_Percentile() for _ in names] if hist else [])
    for done, path in enumerate(files, start=1):
        with np.load(path) as data:
            batch = np.ascontiguousarray(data["input"])
        outs = sess.run(None, {input_name: batch})
        for j in range(len(names)):
            at = starts[j]
            hi = outs[at]
            lo = outs[at + 1] if names[j] not in relu else hi
            amax[j] = max(amax[j], abs(float(hi)), abs(float(lo)))
            if hist:
                sample = outs[at + 2]
                weight = (1.0 if strides[names[j]] == 1
                          else _full_size(batch, shapes, names[j]) / max(1, sample.size))
                flat = sample.reshape(-1)
                if method == "entropy":
                    collectors[j].add(flat, np.float32(lo), np.float32(hi), weight)
                else:
                    collectors[j].add(flat, np.float32(lo), np.float32(hi), weight,
                                      exact=strides[names[j]] == 1)
        if progress is not None:
            progress(done, len(files))
    if not hist:
        # A tensor that is zero on every image still needs a usable (positive) scale.
        return {name: float(max(a, 1e-30) / 127.0) for name, a in zip(names, amax)}
    return _histogram_scales(names, collectors, method, percentile)


def _full_size(batch: np.ndarray, shapes: dict[str, list[int]], name: str) -> int:
    return int(batch.shape[0]) * math.prod(shapes[name][1:])


def _histogram_scales(names: list[str], collectors: list[Any], method: str,
                      percentile: float) -> dict[str, float]:
    """Thresholds by ONNX Runtime's own ``HistogramCollector`` (the code ModelOpt's
    calibrators run), then ONNX Runtime's symmetric int8 scale."""
    import contextlib
    import io

    from onnxruntime.quantization.calibrate import HistogramCollector

    collector = HistogramCollector(method=method, symmetric=method == "percentile",
                                   num_bins=ENTROPY_BINS if method == "entropy"
                                   else PERCENTILE_BINS,
                                   num_quantized_bins=ENTROPY_BINS, percentile=percentile,
                                   scenario="same")
    collector.histogram_dict = {n: c.state for n, c in zip(names, collectors)
                                if c.state is not None}
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
        thresholds = collector.compute_collection_result()
    scales = {}
    for name in names:
        lo, hi = thresholds[name][0], thresholds[name][1]
        scales[name] = _scale_from_range(lo, hi)  # 1.0 for an all-zero tensor, as ORT's
    return scales


def _add_range_outputs(model: Any, i: int, name: str, *, min_too: bool = True) -> None:
    """Append a ``ReduceMax`` and (``min_too``) a ``ReduceMin`` of tensor ``name`` (the
    ``i``-th measured) as the graph's next outputs, in that order."""
    from onnx import TensorProto, helper

    for op in ("ReduceMax", "ReduceMin") if min_too else ("ReduceMax",):
        out = f"xtrt_{op}_{i}"
        model.graph.node.append(helper.make_node(op, [name], [out], keepdims=0))
        model.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, []))


#: Ops whose output holds only values of their first input (another layout): the same range.
SAME_VALUES_OPS = frozenset({"Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze",
                             "Transpose"})


def _derived(model: Any, names: Sequence[str]) -> dict[str, tuple[str, bool]]:
    """{tensor: (source tensor, through Relu)} for the outputs of a ``Relu`` or a
    :data:`SAME_VALUES_OPS` node whose input is one of ``names``: their min/max follow from
    the input's exactly (Relu: each clipped at 0), so the range pass does not reduce them (a
    Relu output is a quarter of Xception's tensors)."""
    float_names = set(names)
    out: dict[str, tuple[str, bool]] = {}
    for node in model.graph.node:
        relu = node.op_type == "Relu"
        if ((relu or node.op_type in SAME_VALUES_OPS) and node.input
                and node.input[0] in float_names and node.output
                and node.output[0] in float_names):
            out[node.output[0]] = (node.input[0], relu)
    return out


def tensor_ranges(model: Any, files: Sequence[Path], input_name: str
                  ) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[int, ...]]]:
    """Min and max of every float tensor (input, every node output) over the batches, from
    one ONNX Runtime pass with a ``ReduceMin``/``ReduceMax`` per tensor (a ``Relu`` output
    and a reshaped tensor take their input's range, see :func:`_derived`).

    Returns:
        ({tensor: (min, max)}, {tensor: shape of the first batch's tensor}).
    """
    import onnx
    import onnxruntime as ort

    work = onnx.ModelProto()
    work.CopyFrom(model)
    names, shapes = _float_tensors(work, input_name)
    derived = _derived(work, names)
    reduced = [n for n in names if n not in derived]
    del work.graph.output[:]
    for i, name in enumerate(reduced):
        _add_range_outputs(work, i, name)
    sess = ort.InferenceSession(work.SerializeToString(), providers=["CPUExecutionProvider"])
    lo = np.full(len(reduced), np.inf, dtype=np.float32)
    hi = np.full(len(reduced), -np.inf, dtype=np.float32)
    batch0 = 0
    for path in files:
        with np.load(path) as data:
            batch = np.ascontiguousarray(data[input_name])
        batch0 = batch0 or int(batch.shape[0])
        outs = np.asarray(sess.run(None, {input_name: batch}), np.float32).reshape(-1, 2)
        hi = np.maximum(hi, outs[:, 0])
        lo = np.minimum(lo, outs[:, 1])
    ranges = {n: (float(a), float(b)) for n, a, b in zip(reduced, lo, hi)}
    for name in names:  # node order: a source comes before what is derived from it
        if name in derived:
            src, relu = derived[name]
            a, b = ranges[src]
            ranges[name] = (max(a, 0.0), max(b, 0.0)) if relu else (a, b)
    dims = {n: tuple([batch0] + [d for d in shapes.get(n, [batch0])[1:]]) for n in names}
    return {n: ranges[n] for n in names}, dims
