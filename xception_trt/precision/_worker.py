"""Subprocess worker that runs NVIDIA ModelOpt (INT8 Q/DQ PTQ, FP16 AutoCast) and, for INT8
placed for ONNX Runtime (``target: onnxruntime`` jobs), ONNX Runtime's own ``quantize_static``
(ModelOpt is then not imported).

Private to :mod:`xception_trt.precision` (started by :mod:`.launcher`). ModelOpt
monkeypatches ``onnxruntime.quantization`` (its calibrators and quantizer classes) the first
time it quantizes; running it here, in a process of its own, keeps those patches away from the
caller (and from any other code in the caller that uses ONNX Runtime's quantization tools).

Protocol: ``python -m xception_trt.precision._worker REQUEST.json``. The request names the input
ONNX, the output ONNX, a folder of calibration batches (``batch_00000.npz`` ... each holding the
array ``input``) and the options; the worker writes the output model and a JSON result to the
paths named in the request. Exit code 0 on success; on failure the last stderr line is
``WORKER-ERROR: <message>`` and the exit code is 3. While calibrating it prints
``WORKER-PROGRESS: DONE TOTAL STAGE`` lines (one per batch fed) on stderr.

The worker dies with its parent (``parent_pid`` in the request): on Linux the kernel sends it
SIGKILL when the parent exits (``PR_SET_PDEATHSIG``), and on every system a watchdog thread
exits when the parent's pid is gone; the folder it worked in is swept by the parent's next run.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationError
from ..host import parent_death_signal
from .cache import write_trt_calibration_cache
from .fastcalib import calibrate_scales

log = logging.getLogger(__name__)

#: Seconds between the watchdog's checks of the parent.
WATCHDOG_INTERVAL_S = 0.5


def _parent_gone(parent_pid: int) -> bool:
    # Re-parented (to init or a subreaper) means the parent died.
    return os.getppid() != parent_pid


def die_with_parent(parent_pid: int) -> None:
    """Exit when ``parent_pid`` does: kernel parent-death signal (Linux) + watchdog thread."""
    arm = parent_death_signal()
    if arm is not None:  # elsewhere the watchdog alone covers it
        arm()
    if _parent_gone(parent_pid):  # died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while not _parent_gone(parent_pid):
            time.sleep(WATCHDOG_INTERVAL_S)
        os._exit(1)  # no cleanup: the parent's next run sweeps our folder

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _progress(stage: str, done: int, total: int | None) -> None:
    print(f"WORKER-PROGRESS: {done} {-1 if total is None else total} {stage}", file=sys.stderr,
          flush=True)

#: Ops whose quantization we report as "quantized nodes" (the compute ops; Q/DQ on pooling or
#: on an Add input is placement detail).
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class _BatchReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``.npz`` batch files
    (loaded one at a time, so calibrating 512 images at 299x299 never holds them all)."""

    def __init__(self, files: list[Path], input_name: str, stage: str = "calibrate") -> None:
        self.files = files
        self.input_name = input_name
        self.stage = stage
        self._it: Iterator[Path] = iter(self.files)
        self._done = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        path = next(self._it, None)
        if path is None:
            return None
        with np.load(path) as data:
            batch = {self.input_name: np.ascontiguousarray(data["input"])}
        self._done += 1
        _progress(self.stage, self._done, len(self.files))
        return batch

    def get_first(self) -> dict[str, np.ndarray]:
        """The first batch without advancing (ModelOpt's test runs use it)."""
        with np.load(self.files[0]) as data:
            return {self.input_name: np.ascontiguousarray(data["input"])}

    def rewind(self) -> None:
        self._it = iter(self.files)
        self._done = 0

    # ORT >= 1.17 readers are iterables too.
    def __iter__(self):  # pragma: no cover - exercised by ORT only
        self.rewind()
        return iter(self.get_next, None)


def _patch_percentile(percentile: float) -> Any:
    """Make ModelOpt's INT8 front-end use ONNX Runtime's percentile calibrator at ``percentile``.

    ModelOpt's ``int8.quantize`` maps every method other than ``entropy`` to MinMax, although
    its patched calibrator factory supports ``CalibrationMethod.Percentile``; and that factory
    reads the percentile from options ModelOpt never passes on, so it would always use its
    default (99.999). We wrap the ``quantize_static`` it calls (in this process only) to ask for
    the percentile method, and its calibrator factory to pass ``percentile``.
    """
    import modelopt.onnx.quantization.int8 as mo_int8
    import modelopt.onnx.quantization.ort_patching as mo_patching
    from onnxruntime.quantization import CalibrationMethod

    original = mo_int8.quantize_static
    original_factory = mo_patching._create_calibrator_with_extra_options

    def quantize_static(*args: Any, **kwargs: Any) -> Any:
        kwargs["calibrate_method"] = CalibrationMethod.Percentile
        return original(*args, **kwargs)

    def factory(*args: Any, **kwargs: Any) -> Any:
        extra = dict(kwargs.get("extra_options") or {})
        extra["percentile"] = float(percentile)
        kwargs["extra_options"] = extra
        return original_factory(*args, **kwargs)

    mo_int8.quantize_static = quantize_static
    mo_patching._create_calibrator_with_extra_options = factory

    def restore() -> None:
        mo_int8.quantize_static = original
        mo_patching._create_calibrator_with_extra_options = original_factory

    return restore


#: ``0``: ModelOpt's own calibrators for every method (not :mod:`.fastcalib`'s one pass).
FAST_CALIBRATION_ENV = "XCEPTION_TRT_FAST_CALIBRATION"
#: Older switch, kept: ``0`` turns the one-pass calibration off for ``max`` only.
FAST_MAX_ENV = "XCEPTION_TRT_FAST_MAX"


def fast_calibration(method: str) -> bool:
    """Whether ``method`` is calibrated by :func:`.fastcalib.calibrate_scales` (the default)
    rather than by ModelOpt's own calibrator (``$XCEPTION_TRT_FAST_CALIBRATION=0``, or
    ``$XCEPTION_TRT_FAST_MAX=0`` for ``max``)."""
    if os.environ.get(FAST_CALIBRATION_ENV, "1").strip() == "0":
        return False
    return not (method == "max" and os.environ.get(FAST_MAX_ENV, "1").strip() == "0")


def _qdq_facts(model: Any, *, by_scale_name: bool = False) -> dict[str, Any]:
    """Activation scales, quantized and unquantized compute nodes of a Q/DQ model.

    ``by_scale_name``: key each scale by the tensor its initializer is named after
    (``T_scale`` -> ``T``), not by the QuantizeLinear's input: ONNX Runtime's placement renames
    a quantized graph output's producer and lets a MaxPool output share its input's scale, and
    its ``TensorQuantOverrides`` (how cached scales are re-applied) take the calibrated names.
    """
    from onnx import numpy_helper

    from .layout import activation_quantizers

    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    scales: dict[str, float] = {}
    zero_points: dict[str, int] = {}
    scale_names: dict[str, str] = {}
    for node in activation_quantizers(model):
        x = node.input[0]
        scale = inits.get(node.input[1])
        if scale is None:
            continue
        arr = numpy_helper.to_array(scale).astype(np.float64)
        if arr.size != 1:
            raise RuntimeError(f"activation {x!r} has a per-channel scale; expected per-tensor")
        if by_scale_name and node.input[1].endswith("_scale"):
            x = node.input[1][:-len("_scale")]
        scales[x] = float(arr.reshape(-1)[0])
        scale_names[x] = node.input[1]
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is not None and numpy_helper.to_array(zp).size == 1:
            zero_points[x] = int(numpy_helper.to_array(zp).reshape(-1)[0])
    quantized: list[str] = []
    unquantized: list[str] = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        # ONNX Runtime's placement quantizes outputs too, so an excluded node's data input may
        # come from a DequantizeLinear: there, the weights say whether the node is quantized.
        src = producers.get(node.input[1 if by_scale_name and len(node.input) > 1 else 0])
        (quantized if src is not None and src.op_type == "DequantizeLinear"
         else unquantized).append(node.name)
    return {"scales": scales, "zero_points": zero_points, "scale_names": scale_names,
            "quantized_nodes": quantized, "unquantized_nodes": unquantized}


def _dummy_files(req: dict[str, Any], tmp: Path) -> list[Path]:
    """One small synthetic batch: used when every activation scale comes from a cache
    (ModelOpt still runs its calibrator once; every scale it computes is then replaced)."""
    shape = req["input_shape"]
    rng = np.random.default_rng(0)
    batch = req.get("static_batch") or 2
    if req["input_dtype"] == "uint8":
        data = rng.integers(0, 256, size=(batch, *shape), dtype=np.uint8)
    else:
        data = rng.standard_normal((batch, *shape)).astype(np.float32)
    path = tmp / "dummy.npz"
    np.savez(path, input=data)
    return [path]


def run_int8(req: dict[str, Any]) -> dict[str, Any]:
    if req.get("target") == "onnxruntime":
        return run_ort_int8(req)
    tmp = Path(req["tmp_dir"])
    files = sorted(Path(req["data_dir"]).glob("batch_*.npz")) if req.get("data_dir") else []
    cache_scales: dict[str, float] | None = req.get("scales")
    method = req["method"]
    cache_path = None
    restore = None
    fast = bool(cache_scales is None and files and fast_calibration(method))
    t0 = time.perf_counter()
    files_all = files
    if fast:
        cache_scales = _one_pass(req, files, skip_fusable=True)
        files = []  # ModelOpt places Q/DQ on one dummy batch and takes these scales
        req = dict(req, data_dir=None)  # so a scale that is missing is an error, not a guess
    out_fp32 = tmp / "quant_fp32.onnx"
    if req.get("layout") and cache_scales is not None:
        # ModelOpt placed this graph before: rebuild its output without ModelOpt.
        import onnx

        from .layout import apply_layout

        layout = Path(req["layout"]).read_bytes()
        source = onnx.load(req["onnx"])
        try:
            placed = apply_layout(layout, source, cache_scales)
        except CalibrationError as exc:
            if not (fast and "MISSING-SCALES" in str(exc)):
                raise RuntimeError(str(exc)) from None
            cache_scales = _one_pass(req, files_all, skip_fusable=False)
            placed = apply_layout(layout, source, cache_scales)
        onnx.save(placed, str(out_fp32))
        return _finish_int8(req, out_fp32, cache_scales, time.perf_counter() - t0)
    from modelopt.onnx.quantization import quantize

    if cache_scales is not None:
        cache_path = tmp / "scales.cache"
        # The TensorRT text cache format is what ModelOpt imports.
        write_trt_calibration_cache(cache_scales, cache_path)
        if not files:
            files = _dummy_files(req, tmp)
        method = "max"  # every calibrated scale is replaced by the cached one
    elif method == "percentile":
        restore = _patch_percentile(req["percentile"])
    if not files:
        raise RuntimeError("no calibration batches given")
    reader = _BatchReader(files, req["input_name"],
                          stage=("apply scales" if fast else f"calibrate {req['method']}"))
    try:
        _quantize(quantize, req, reader, method, cache_path, out_fp32)
    finally:
        if restore is not None:
            restore()
    seconds = time.perf_counter() - t0
    try:
        return _placed(req, out_fp32, _finish_int8(req, out_fp32, cache_scales, seconds))
    except RuntimeError as exc:
        if not (fast and "MISSING-SCALES" in str(exc)):
            raise
        why = str(exc)
    # A placement that quantizes a tensor the fast pass skipped: measure every tensor.
    log.warning("one-pass calibration: %s; calibrating every tensor", why)
    scales = _one_pass(req, files_all, skip_fusable=False)
    write_trt_calibration_cache(scales, cache_path)  # type: ignore[arg-type]
    _quantize(quantize, req, reader, method, cache_path, out_fp32)
    return _placed(req, out_fp32, _finish_int8(req, out_fp32, scales, time.perf_counter() - t0))


def _one_pass(req: dict[str, Any], files: list[Path], *, skip_fusable: bool) -> dict[str, float]:
    return calibrate_scales(
        req["onnx"], files, req["input_name"], method=req["method"],
        percentile=float(req["percentile"]), skip_fusable=skip_fusable,
        progress=lambda d, n: _progress(f"calibrate {req['method']}", d, n))


def _placed(req: dict[str, Any], out_fp32: Path, facts: dict[str, Any]) -> dict[str, Any]:
    """Keep ModelOpt's placement as a layout (``layout_out``) for the parent to cache."""
    if req.get("layout_out"):
        import onnx

        from .layout import make_layout

        Path(req["layout_out"]).write_bytes(
            make_layout(onnx.load(str(out_fp32)), onnx.load(req["onnx"])))
    return facts


def _quantize(quantize: Any, req: dict[str, Any], reader: _BatchReader, method: str,
              cache_path: Path | None, out_fp32: Path) -> None:
    quantize(
        req["onnx"],
        quantize_mode="int8",
        calibration_data_reader=reader,
        calibration_method="entropy" if method == "entropy" else "max",
        calibration_cache_path=str(cache_path) if cache_path else None,
        calibration_eps=list(req.get("calibration_eps") or ["cpu"]),
        nodes_to_exclude=list(req.get("exclude_nodes") or []) or None,
        op_types_to_exclude=list(req.get("exclude_op_types") or []) or None,
        high_precision_dtype="fp32",
        output_path=str(out_fp32),
        log_level=req.get("log_level", "WARNING"),
    )


def _finish_int8(req: dict[str, Any], out_fp32: Path, cache_scales: dict[str, float] | None,
                 seconds: float) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(out_fp32))
    facts = _qdq_facts(model)
    if cache_scales is not None and not req.get("data_dir"):
        missing = sorted(set(facts["scales"]) - set(cache_scales))
        if missing:
            raise RuntimeError(
                f"MISSING-SCALES {len(missing)} quantized activation(s) have no scale in the "
                f"cache: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
        facts["scales"] = {k: float(cache_scales[k]) for k in facts["scales"]}
    elif cache_scales is not None:  # imported cache + images: cached scales win
        facts["scales"] = {k: float(cache_scales.get(k, v)) for k, v in facts["scales"].items()}
    if req.get("int8_weights"):
        # Store weights as INT8 initializers feeding DequantizeLinear (no weight Q node): a
        # quarter of the size; TensorRT and ONNX Runtime read both forms. The same bytes as
        # ModelOpt's qdq_to_dq (tested), without its 3-4 s import on the calibration path.
        from ..graph import to_int8_weights

        model = to_int8_weights(model)
    if req.get("high_precision") == "fp16":
        from modelopt.onnx.autocast import convert_to_f16

        model = convert_to_f16(model, keep_io_types=True)
    onnx.save(model, req["out"])
    facts.pop("scale_names")
    facts["seconds"] = seconds
    return facts


#: Our calibration methods -> ONNX Runtime's calibrators.
_ORT_METHODS = {"max": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def run_ort_int8(req: dict[str, Any]) -> dict[str, Any]:
    """INT8 placed for ONNX Runtime: its own ``quantize_static`` (QDQ, per-channel INT8
    weights stored as INT8 + DequantizeLinear, asymmetric uint8 activations on the inputs and
    outputs of every quantizable op), which the CPU provider fuses into QLinearConv / QGemm.

    uint8 activations, not int8: ONNX Runtime 1.32 fuses int8-activation depthwise convolutions
    nowhere on x86, so they stay float behind DequantizeLinear (measured in issue 18). Cached
    scales and zero points are applied as ``TensorQuantOverrides``.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    tmp = Path(req["tmp_dir"])
    files = sorted(Path(req["data_dir"]).glob("batch_*.npz")) if req.get("data_dir") else []
    cache_scales: dict[str, float] | None = req.get("scales")
    cache_zps: dict[str, int] = req.get("zero_points") or {}
    method = req["method"]
    extra: dict[str, Any] = {}
    if cache_scales is not None:
        if not files:
            files = _dummy_files(req, tmp)
        method = "max"  # every calibrated scale is replaced by the cached one
        extra["TensorQuantOverrides"] = {
            name: [{"scale": np.array(scale, dtype=np.float32),
                    "zero_point": np.array(cache_zps.get(name, 0), dtype=np.uint8)}]
            for name, scale in cache_scales.items()}
    elif method == "percentile":
        extra["CalibPercentile"] = float(req["percentile"])
    if not files:
        raise RuntimeError("no calibration batches given")
    reader = _BatchReader(files, req["input_name"], stage=f"calibrate {req['method']}")
    out = tmp / "quant_ort.onnx"
    excluded = _matching_nodes(req["onnx"], req.get("exclude_nodes") or [],
                               req.get("exclude_op_types") or [])
    t0 = time.perf_counter()
    restore = _histograms_batch_by_batch()
    try:
        quantize_static(
            req["onnx"], str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=getattr(CalibrationMethod, _ORT_METHODS[method]),
            extra_options=extra)
    finally:
        restore()
    seconds = time.perf_counter() - t0
    import onnx

    model = _float_inputs(onnx.load(str(out)), set(excluded))
    facts = _qdq_facts(model, by_scale_name=True)
    if cache_scales is not None:
        missing = sorted(set(facts["scales"]) - set(cache_scales))
        if missing and not req.get("data_dir"):
            raise RuntimeError(
                f"MISSING-SCALES {len(missing)} quantized activation(s) have no scale in the "
                f"cache: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    onnx.save(model, req["out"])
    facts.pop("scale_names")
    facts["seconds"] = seconds
    return facts


def _histograms_batch_by_batch() -> Any:
    """Make ONNX Runtime's histogram calibrators (entropy, percentile) take one batch at a time.

    Its ``HistogramCalibrater.collect_data`` keeps every intermediate output of every batch in
    memory until the end (gigabytes for 512 images at 299x299) and stacks them, which fails
    when the last batch is smaller. Its histogram collector merges calls, so we feed it one
    batch per call and drop the outputs after each (in this worker process only).

    Returns:
        A function that undoes the patch.
    """
    from onnxruntime.quantization.calibrate import HistogramCalibrater

    original = HistogramCalibrater.collect_data

    def collect_data(self: Any, data_reader: Any) -> None:
        while True:
            batch = data_reader.get_next()
            if not batch:
                break
            original(self, _OneBatch(batch))
            self.intermediate_outputs = []

    HistogramCalibrater.collect_data = collect_data  # type: ignore[method-assign]

    def restore() -> None:
        HistogramCalibrater.collect_data = original  # type: ignore[method-assign]

    return restore


class _OneBatch:
    """A calibration data reader over one batch."""

    def __init__(self, batch: dict[str, np.ndarray]) -> None:
        self._batch: dict[str, np.ndarray] | None = batch

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch, self._batch = self._batch, None
        return batch


def _float_inputs(model: Any, excluded: set[str]) -> Any:
    """Feed each excluded node its float inputs (returns ``model``, changed in place).

    ONNX Runtime's placement quantizes the outputs of the nodes around an excluded one, so its
    input still arrives through QuantizeLinear -> DequantizeLinear; ONNX Runtime's optimiser then
    quantizes the float weights itself (WeightBiasQuantization) and the node runs in INT8
    anyway. Reading the tensor from before the Q/DQ pair keeps it in float.
    """
    if not excluded:
        return model
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.name not in excluded:
            continue
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == \
                "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    while True:  # drop the Q/DQ nodes nothing reads any more
        used = {i for n in model.graph.node for i in n.input} | {
            o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            return model
        for n in dead:
            model.graph.node.remove(n)


def _matching_nodes(onnx_path: str, patterns: list[str], op_types: list[str]) -> list[str]:
    """Names of the nodes whose whole name matches one of ``patterns`` (regexes, already
    anchored) or whose op type is in ``op_types`` (ONNX Runtime takes exact names only)."""
    import re

    import onnx

    rxs = [re.compile(p) for p in patterns]
    graph = onnx.load(onnx_path, load_external_data=False).graph
    return [n.name for n in graph.node
            if n.op_type in op_types or any(rx.match(n.name) for rx in rxs)]


#: Range statistics AutoCast's node classifier reads: {tensor: (min, max)} and {tensor: shape}.
Ranges = tuple[dict[str, tuple[float, float]], dict[str, tuple[int, ...]]]


def _float_activations(model: Any) -> set[str] | None:
    """The float tensors (graph inputs, node outputs) of a model whose types are all inferred,
    as AutoCast's model is after its ``infer_types``; ``None`` when a node output has no type."""
    from onnx import TensorProto

    types = {v.name: v.type.tensor_type.elem_type for v in
             list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    names = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output]
    if any(t not in types for t in names):
        return None
    return {t for t in names if types[t] == TensorProto.FLOAT}


def _fast_reference_run(measured: Ranges | None = None) -> Any:
    """Make AutoCast's range check read min/max from :func:`.fastcalib.tensor_ranges`.

    AutoCast's ``ReferenceRunner.run`` marks every tensor a graph output, runs Polygraphy's
    comparator (which deep-copies every activation of every batch) and reduces them in numpy:
    most of an FP16 conversion's time. Its node classifier only reads each tensor's absmax,
    min, max and shape, which one ONNX Runtime pass with in-graph reductions gives (for a
    folder of ``.npz`` batches; random inputs keep AutoCast's own run).

    Args:
        measured: Ranges already measured on the FP32 graph (while ModelOpt was being
            imported); used when they cover exactly the float tensors of AutoCast's
            sanitized graph, which is then not run again.

    Returns:
        A function that undoes the patch.
    """
    from collections import OrderedDict

    from modelopt.onnx.autocast import referencerunner

    from .fastcalib import tensor_ranges

    original = referencerunner.ReferenceRunner.run

    def run(self: Any, inputs: Any = None) -> Any:
        if not (isinstance(inputs, str) and os.path.isdir(inputs)):
            return original(self, inputs)
        if measured is not None and _float_activations(self.model) == set(measured[0]):
            ranges, shapes = measured
        else:  # the sanitizer changed the tensors: measure its graph
            files = sorted(Path(inputs).glob("*.npz"))
            ranges, shapes = tensor_ranges(self.model, files, self.model.graph.input[0].name)
        return OrderedDict(
            (t, referencerunner.TensorStats(absmax=max(abs(lo), abs(hi)), min_val=lo,
                                            max_val=hi, shape=shapes[t]))
            for t, (lo, hi) in ranges.items())

    referencerunner.ReferenceRunner.run = run  # type: ignore[method-assign]

    def restore() -> None:
        referencerunner.ReferenceRunner.run = original  # type: ignore[method-assign]

    return restore


def _import_in_background(module: str) -> threading.Thread:
    """Start importing ``module`` in a daemon thread. An import that fails there is retried
    (and raises) where the caller imports the module itself."""
    import importlib

    def work() -> None:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - re-raised by the caller's own import
            pass

    thread = threading.Thread(target=work, name=f"import {module}", daemon=True)
    thread.start()
    return thread


def _in_memory_protobuf() -> Any:
    """Tell ModelOpt the graph fits an in-memory protobuf (the caller checked it is under
    half the 2 GiB limit; FP16 conversion only shrinks it) instead of letting it measure the
    whole graph's ``ByteSize`` before each of its eight shape inferences and checks (about
    1 s on the full model). The same calls, with the same results, follow.

    Returns:
        A function that undoes the patch.
    """
    from modelopt.onnx import utils as mo_utils

    original = mo_utils.is_model_too_large_for_protobuf
    mo_utils.is_model_too_large_for_protobuf = lambda model: False

    def restore() -> None:
        mo_utils.is_model_too_large_for_protobuf = original

    return restore


def _measure_while_importing(req: dict[str, Any]) -> tuple[Ranges, bool]:
    """Min/max of every float tensor of the FP32 graph over the range-check batches, measured
    while ModelOpt's AutoCast is imported in another thread (ONNX Runtime runs without the
    GIL; the import takes seconds on one core and needs no ranges).

    ONNX Runtime keeps its default threads (one per core): leaving a core to the import was
    faster on a 2-core machine busy with other work, but slower on a quiet one."""
    import onnx
    import onnxruntime  # noqa: F401 - imported once here, before the thread imports it too

    from .fastcalib import tensor_ranges

    importer = _import_in_background("modelopt.onnx.autocast")
    model = onnx.load(req["onnx"])
    files = sorted(Path(req["data_dir"]).glob("*.npz"))
    measured = tensor_ranges(model, files, model.graph.input[0].name)
    small = model.ByteSize() < (1 << 30)
    importer.join()
    return measured, small


def run_fp16(req: dict[str, Any]) -> dict[str, Any]:
    import onnx

    t0 = time.perf_counter()
    fast = fast_calibration("fp16")
    measured, small = (_measure_while_importing(req) if fast and req.get("data_dir")
                       else (None, False))
    from modelopt.onnx.autocast import convert_to_mixed_precision

    restores = ([_fast_reference_run(measured)] if fast else []) + (
        [_in_memory_protobuf()] if small else [])
    try:
        model = convert_to_mixed_precision(
            onnx_path=req["onnx"],
            low_precision_type="fp16",
            nodes_to_exclude=list(req.get("exclude_nodes") or []) or None,
            op_types_to_exclude=list(req.get("exclude_op_types") or []) or None,
            data_max=float(req["data_max"]),
            init_max=float(req["init_max"]),
            keep_io_types=True,
            calibration_data=req.get("data_dir"),
            providers=["cpu"],
        )
    finally:
        for restore in restores:
            restore()
    seconds = time.perf_counter() - t0
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.output)
             + list(inferred.graph.input)}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    kept = []
    for node in inferred.graph.node:
        if node.op_type in ("Cast", "Constant", "Identity") or not node.output:
            continue
        if types.get(node.output[0]) == onnx.TensorProto.FLOAT:
            kept.append(node.name)
    onnx.save(model, req["out"])
    return {"fp32_nodes": kept, "seconds": seconds}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        req = json.loads(Path(argv[0]).read_text())
        if req.get("parent_pid"):
            die_with_parent(int(req["parent_pid"]))
        if req.get("test_sleep_s"):  # tests: a worker that is busy when its parent is killed
            _progress("test sleep", 0, None)
            time.sleep(float(req["test_sleep_s"]))
        if "jobs" in req:  # several INT8 methods, one process
            result: dict[str, Any] = {"jobs": [run_int8(job) for job in req["jobs"]]}
        else:
            result = run_int8(req) if req["task"] == "int8" else run_fp16(req)
        if req.get("target") == "onnxruntime" or req.get("jobs", [{}])[0].get(
                "target") == "onnxruntime":
            import onnxruntime  # ModelOpt is neither used nor imported on this path

            result["tool"] = f"onnxruntime {onnxruntime.__version__}"
        else:
            import modelopt

            result["modelopt"] = getattr(modelopt, "__version__", "unknown")
            result["tool"] = f"nvidia-modelopt {result['modelopt']}"
        Path(req["result"]).write_text(json.dumps(result))
        return 0
    except Exception as exc:  # reported to the parent, which raises CalibrationError
        traceback.print_exc(file=sys.stderr)
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(f"WORKER-ERROR: {msg[:2000]}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
