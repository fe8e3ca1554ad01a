"""Precision variants of an xception-trt ONNX graph: FP16 and calibrated INT8 (explicit Q/DQ),
the calibration cache, TensorRT calibration-cache import, and accuracy on the CPU.

TensorRT 11 (and TensorRT-RTX) build strongly typed networks only: precision lives in the ONNX.

* FP16: NVIDIA ModelOpt **AutoCast** (``convert_to_mixed_precision``), not onnxconverter-common.
  AutoCast runs the FP32 graph on real (calibration) images and keeps in FP32 every node whose
  inputs/outputs exceed ``max_activation`` or whose initializers exceed ``max_initializer`` —
  exactly the "activations beyond FP16 range on the calibration data" rule — keeps the graph's
  FP32 input/output (``keep_io_types``), and is the converter TensorRT's strongly-typed docs
  point to. onnxconverter-common only has a static op block list and no data-driven check.
* INT8: ModelOpt ONNX PTQ (``modelopt.onnx.quantization.quantize``, ``calibration_eps=["cpu"]``).
  Its placement is the one TensorRT fuses: per-channel symmetric INT8 weights (axis 0, zero point
  0), per-tensor symmetric activations, the residual ``Add`` quantized on one input only (the
  other comes straight from a Conv, so TensorRT fuses the add into that Conv), and the output
  layer (the classifier ``Gemm``) left in high precision, so the logits never pass through Q/DQ.
  Methods ``max`` and ``entropy`` are ModelOpt's; ``percentile`` uses ONNX Runtime's percentile
  calibrator through ModelOpt's patched calibrator factory.
* ModelOpt monkeypatches ``onnxruntime.quantization`` when it quantizes, so it always runs in a
  subprocess (:mod:`xception_trt._calib_worker`); this process never imports it.

Calibration cache (``calibration/cache/``): one JSON file per (graph, method, options) holding
the per-tensor activation scales. Its key also covers the calibration set fingerprint, the
preprocessing (ModelSpec + input format), image count, seed, batch size and ModelOpt version; a
hit re-applies the scales without running calibration, a stale or foreign file is never used
(a log line says why) and is replaced after recalibration.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import __version__
from .config import InputFormat, ModelSpec, Precision
from .errors import CalibrationError, ConfigError, DataError, GraphError
from .fsio import atomic_path, atomic_write_json, check_writable_dir
from .onnx_meta import INPUT_NAME, OUTPUT_NAME, OnnxMeta, load_onnx, read_metadata, write_metadata

__all__ = [
    "CalibrationMethod",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_NUM_IMAGES",
    "QuantizeResult",
    "AutoQuantizeResult",
    "VariantMetrics",
    "to_fp16",
    "quantize_int8",
    "auto_quantize_int8",
    "evaluate_variants",
    "format_table",
    "graph_sha256",
    "depthwise_conv_nodes",
    "read_trt_calibration_cache",
    "write_trt_calibration_cache",
    "save_model",
]

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("calibration/cache")
#: Default number of calibration images (NVIDIA's PTQ guidance: a few hundred representative
#: images; 512 matches the TensorRT samples).
DEFAULT_NUM_IMAGES = 512
CACHE_FORMAT = "xception-trt-calibration-cache"
CACHE_VERSION = 1
_TRT_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
_TRT_LINE = re.compile(r"^(.+): ([0-9a-fA-F]{8})$")


class CalibrationMethod(str, enum.Enum):
    """How INT8 activation ranges are chosen from calibration data.

    ``max``: the largest absolute value seen. ``entropy``: TensorRT's KL-divergence method
    (``EntropyCalibration2``). ``percentile``: the given percentile of absolute values.
    """

    MAX = "max"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: "str | CalibrationMethod") -> "CalibrationMethod":
        """The member for ``value`` or a ConfigError listing the choices."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ConfigError(f"unknown calibration method {value!r}; choose one of: "
                              + ", ".join(m.value for m in cls)) from None


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class QuantizeResult:
    """Outcome of :func:`quantize_int8`.

    Attributes:
        model: The Q/DQ ``onnx.ModelProto`` (metadata ``precision=int8`` and ``calibration``).
        path: Where it was written (``None`` unless ``output`` was given).
        method: Calibration method used.
        quantized_nodes: Compute nodes (Conv/Gemm/MatMul) that run in INT8.
        excluded_nodes: Compute nodes left in high precision (asked for, or by placement rules).
        num_images: Calibration images used (0 when scales came from a cache).
        cache: ``"hit"``, ``"miss"``, ``"imported"`` (TensorRT/xception-trt cache file) or
            ``"off"``.
        cache_path: The cache entry read or written (``None`` when caching is off).
        seconds: Wall time of calibration + quantization, in seconds (excluding image decode).
        scales: Per-tensor activation scales (tensor name -> scale, float).
        skipped_images: Images that could not be read and were left out (path, reason).
    """

    model: Any
    path: Path | None
    method: CalibrationMethod
    quantized_nodes: tuple[str, ...]
    excluded_nodes: tuple[str, ...]
    num_images: int
    cache: str
    cache_path: Path | None
    seconds: float
    scales: Mapping[str, float] = field(repr=False, default_factory=dict)
    skipped_images: tuple[tuple[str, str], ...] = ()

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable facts (no model, no scales)."""
        return {
            "path": str(self.path) if self.path else None,
            "method": self.method.value,
            "quantized_nodes": list(self.quantized_nodes),
            "excluded_nodes": list(self.excluded_nodes),
            "num_images": self.num_images,
            "cache": self.cache,
            "cache_path": str(self.cache_path) if self.cache_path else None,
            "seconds": round(self.seconds, 3),
            "activation_scales": len(self.scales),
            "skipped_images": [list(s) for s in self.skipped_images],
        }


@dataclass(frozen=True)
class VariantMetrics:
    """Accuracy of one variant against labels and against the FP32 reference.

    Attributes:
        name: Variant name (``fp32``, ``fp16``, ``int8-entropy`` ...).
        precision: Its precision.
        images: Images evaluated.
        top1, top5: Accuracy in percent (``None`` without labels; top-5 needs >= 5 classes).
        agreement: Top-1 agreement with the reference, percent.
        max_abs_diff, mean_abs_diff: Logit differences to the reference.
        size_bytes: Serialized model size in bytes.
    """

    name: str
    precision: str
    images: int
    top1: float | None
    top5: float | None
    agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AutoQuantizeResult:
    """Outcome of :func:`auto_quantize_int8`: every method tried, the one kept.

    Attributes:
        best: The kept :class:`QuantizeResult`.
        results: Every method's result, by method name.
        metrics: The table rows: the FP32 reference first, then one per method.
        criterion: ``"top1"`` (labelled held-out data) or ``"agreement"`` (unlabelled).
    """

    best: QuantizeResult
    results: Mapping[str, QuantizeResult]
    metrics: tuple[VariantMetrics, ...]
    criterion: str


# ---------------------------------------------------------------------------------------------
# small helpers


def _as_model(onnx_model_or_path: Any) -> tuple[Any, Path | None]:
    if isinstance(onnx_model_or_path, (str, os.PathLike)):
        return load_onnx(onnx_model_or_path), Path(onnx_model_or_path)
    if hasattr(onnx_model_or_path, "graph"):
        return onnx_model_or_path, None
    raise GraphError(f"expected an ONNX file path or an onnx.ModelProto, got "
                     f"{type(onnx_model_or_path).__name__}")


def graph_sha256(model: Any) -> str:
    """SHA-256 of the graph (nodes, initializers, I/O; not the metadata), hex."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def _check_source(model: Any) -> OnnxMeta:
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


def _static_batch(model: Any) -> int | None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        return int(dims[0].dim_value)
    return None


def _input_shape(spec: ModelSpec, fmt: InputFormat) -> list[int]:
    s = spec.input_size
    return [s, s, spec.in_chans] if fmt is InputFormat.UINT8_NHWC else [spec.in_chans, s, s]


def depthwise_conv_nodes(onnx_model_or_path: Any) -> list[str]:
    """Names of the depthwise Conv nodes (``group`` == input channels > 1).

    In separable networks like Xception these are where INT8 loses most accuracy (few weights
    per output channel, wide activation ranges); pass them as ``exclude_nodes`` to keep them in
    high precision.
    """
    model, _ = _as_model(onnx_model_or_path)
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


def _anchored(patterns: Iterable[str]) -> list[str]:
    """Node-name regexes matched against the whole name (ModelOpt applies ``re.match``, a
    prefix match: ``Conv_1`` would also exclude ``Conv_10``)."""
    return [f"(?:{p})$" for p in patterns]


def _check_exclusions(model: Any, nodes: Sequence[str], op_types: Sequence[str]) -> None:
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


def save_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """Write an ``onnx.ModelProto`` atomically (a failure leaves nothing behind)."""
    import onnx

    path = Path(path)
    with atomic_path(path, error=CalibrationError) as tmp:
        onnx.save(model, str(tmp))
    return path


def _derive_metadata(model: Any, meta: OnnxMeta, precision: Precision,
                     extra: Mapping[str, Any] | None = None) -> Any:
    entries: dict[str, Any] = {k: v for k, v in meta.raw.items() if k != "calibration"}
    entries.update(precision=precision, version=__version__)
    entries.update(extra or {})
    del model.metadata_props[:]
    return write_metadata(model, entries)


# ---------------------------------------------------------------------------------------------
# calibration data


@dataclass
class _CalibSet:
    """A selected calibration set: its identity now, its batches once :meth:`write` ran."""

    source: Any  # Dataset or np.ndarray
    fingerprint: str
    selected: int
    count: int = 0
    skipped: tuple[tuple[str, str], ...] = ()

    def write(self, meta: OnnxMeta, *, batch_size: int, static_batch: int | None,
              directory: Path) -> None:
        """Preprocess and write the batches as ``batch_*.npz`` in ``directory``."""
        from .data import BatchLoader

        size = static_batch or batch_size
        if isinstance(self.source, np.ndarray):
            self.count = _write_batches(_rebatch([self.source], size, static=bool(static_batch)),
                                        directory)
            return
        loader = BatchLoader(self.source, meta.spec, batch_size=size,
                             input_format=meta.input_format, on_error="skip")
        self.count = _write_batches(
            _rebatch((b.data for b in loader), size, static=bool(static_batch)), directory)
        self.skipped = tuple((str(p), r) for p, r in loader.failures)
        if self.count == 0:
            first = f" (first: {self.skipped[0][0]}: {self.skipped[0][1]})" if self.skipped else ""
            raise CalibrationError(
                f"none of the {self.selected} calibration image(s) could be used{first}; give "
                "a folder of readable images")
        if static_batch and self.count < self.selected - len(self.skipped):
            log.warning("calibration: the graph's batch is fixed at %d, so %d image(s) of a "
                        "partial last batch are left out", static_batch,
                        self.selected - len(self.skipped) - self.count)


def _write_batches(batches: Iterable[np.ndarray], directory: Path) -> int:
    n = 0
    for i, batch in enumerate(batches):
        np.savez(directory / f"batch_{i:05d}.npz", input=batch)
        n += int(batch.shape[0])
    return n


def _rebatch(arrays: Iterable[np.ndarray], size: int, *, static: bool) -> Iterable[np.ndarray]:
    """Regroup arrays into batches of ``size`` (a static graph drops a partial tail)."""
    pending: list[np.ndarray] = []
    have = 0
    for arr in arrays:
        pending.append(arr)
        have += arr.shape[0]
        while have >= size:
            cat = np.concatenate(pending)
            yield cat[:size]
            rest = cat[size:]
            pending, have = ([rest] if rest.shape[0] else []), rest.shape[0]
    if have and not static:
        yield np.concatenate(pending)


def _select_calibration(data: Any, meta: OnnxMeta, *, num_images: int, seed: int,
                        static_batch: int | None) -> _CalibSet:
    """Validate and select the calibration set (nothing is decoded yet).

    Raises:
        CalibrationError: Missing/empty folder, wrong array, fewer images than a fixed batch.
    """
    from .data import Dataset, open_dataset

    fmt = meta.input_format
    if isinstance(data, np.ndarray):
        want_shape = tuple(_input_shape(meta.spec, fmt))
        want_dtype = np.uint8 if fmt is InputFormat.UINT8_NHWC else np.float32
        if data.ndim != 4 or tuple(data.shape[1:]) != want_shape or data.dtype != want_dtype:
            raise CalibrationError(
                f"calibration array must be {np.dtype(want_dtype).name} with shape "
                f"(N, {', '.join(map(str, want_shape))}) for this {fmt.value} graph, got "
                f"{data.dtype} {data.shape}; preprocess images with xception_trt.preprocess")
        if data.shape[0] < 1:
            raise CalibrationError("calibration array is empty; give at least one image")
        if not np.isfinite(data.astype(np.float32, copy=False)).all():
            raise CalibrationError("calibration array holds NaN or Inf values")
        arr = np.ascontiguousarray(data[:num_images])
        if static_batch and arr.shape[0] < static_batch:
            raise CalibrationError(
                f"{arr.shape[0]} calibration image(s) is fewer than the graph's fixed batch "
                f"{static_batch}; give more images or export with a dynamic batch")
        fp = "array:" + hashlib.sha256(arr.tobytes()).hexdigest()
        return _CalibSet(arr, fp, int(arr.shape[0]))
    try:
        ds = data if isinstance(data, Dataset) else open_dataset(data)
    except DataError as exc:
        raise CalibrationError(f"calibration data: {exc}") from None
    if not len(ds):
        raise CalibrationError("the calibration data set is empty; give a folder with images")
    ds = ds.select(num_images, seed=seed)
    if len(ds) < num_images:
        log.warning("calibration: only %d image(s) available (asked for %d); using all of them",
                    len(ds), num_images)
    if static_batch and len(ds) < static_batch:
        raise CalibrationError(
            f"{len(ds)} calibration image(s) is fewer than the graph's fixed batch "
            f"{static_batch}; give more images or export with a dynamic batch")
    try:
        fp = ds.fingerprint()
    except DataError as exc:
        raise CalibrationError(f"calibration data: {exc}") from None
    return _CalibSet(ds, fp, len(ds))


# ---------------------------------------------------------------------------------------------
# worker


def _run_worker(request: dict[str, Any], *, what: str) -> dict[str, Any]:
    """Run :mod:`xception_trt._calib_worker` in a subprocess; its result dict."""
    tmp = Path(request["tmp_dir"])
    req_path = tmp / "request.json"
    request["result"] = str(tmp / "result.json")
    req_path.write_text(json.dumps(request))
    pkg_parent = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "xception_trt._calib_worker", str(req_path)],
                          cwd=str(pkg_parent), capture_output=True, text=True)
    if proc.stderr:
        log.debug("ModelOpt worker output:\n%s", proc.stderr[-20000:])
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("WORKER-ERROR: ")]
        if lines:
            reason = lines[-1][len("WORKER-ERROR: "):]
        else:
            tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:]
            reason = f"exit code {proc.returncode}" + (f": {tail[0]}" if tail else "")
        if "MISSING-SCALES" in reason:
            raise CalibrationError(reason.split("MISSING-SCALES ", 1)[1]
                                   + "; calibrate with images (pass calibration data) instead")
        if "No module named 'modelopt'" in reason or "Please install optional" in reason:
            raise CalibrationError(
                f"{what} needs NVIDIA ModelOpt and its ONNX dependencies ({reason}); install "
                "them with: pip install -U xception-trt")
        raise CalibrationError(f"{what} failed in ModelOpt: {reason}")
    return json.loads(Path(request["result"]).read_text())


# ---------------------------------------------------------------------------------------------
# FP16


def to_fp16(onnx_model_or_path: Any, calibration_data: Any = None, *, num_images: int = 32,
            seed: int = 0, batch_size: int = 8, max_activation: float = 512.0,
            max_initializer: float = 65504.0, exclude_nodes: Sequence[str] = (),
            exclude_op_types: Sequence[str] = (), output: str | os.PathLike[str] | None = None
            ) -> Any:
    """Convert an FP32 xception-trt graph to FP16 with FP32 inputs/outputs (ModelOpt AutoCast).

    Nodes stay in FP32 when an input/output exceeds ``max_activation`` in magnitude on the
    calibration images (AutoCast's default of 512 leaves headroom for FP16 accumulation, whose
    range ends at 65504), when an initializer exceeds ``max_initializer``, or when named in
    ``exclude_nodes`` (regexes) / ``exclude_op_types``.

    Args:
        onnx_model_or_path: FP32 model or its path (xception-trt metadata required).
        calibration_data: Images for the range check (folder, file list, Dataset or a
            preprocessed array). ``None``: AutoCast's random inputs in [-1, 1].
        num_images: Images used for the range check.
        seed: Selection seed.
        batch_size: Images per reference batch.
        max_activation: Largest |activation| a node may see and still run in FP16.
        max_initializer: Largest |weight| that may be stored in FP16.
        exclude_nodes: Node names or regexes (matched against the whole name) kept in FP32.
        exclude_op_types: Op types kept in FP32.
        output: Optional path to write the model to (atomically).

    Returns:
        The FP16 ``onnx.ModelProto`` (metadata ``precision=fp16``).

    Raises:
        GraphError: Not an FP32 xception-trt graph.
        CalibrationError: Bad calibration data or a ModelOpt failure.
    """
    import onnx

    if num_images < 1 or batch_size < 1:
        raise ConfigError("num_images and batch_size must be >= 1")
    if not (max_activation > 0 and max_initializer > 0):
        raise ConfigError("max_activation and max_initializer must be > 0")
    model, _ = _as_model(onnx_model_or_path)
    meta = _check_source(model)
    _check_exclusions(model, exclude_nodes, exclude_op_types)
    with tempfile.TemporaryDirectory(prefix="xtrt-fp16-") as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "model.onnx"
        onnx.save(model, str(src))
        data_dir = None
        if calibration_data is not None:
            (tmp / "data").mkdir()
            static = _static_batch(model)
            _select_calibration(calibration_data, meta, num_images=num_images, seed=seed,
                                static_batch=static).write(
                meta, batch_size=batch_size, static_batch=static, directory=tmp / "data")
            data_dir = str(tmp / "data")
        out = tmp / "fp16.onnx"
        result = _run_worker({
            "task": "fp16", "onnx": str(src), "out": str(out), "tmp_dir": str(tmp),
            "data_dir": data_dir, "data_max": max_activation, "init_max": max_initializer,
            "exclude_nodes": _anchored(exclude_nodes), "exclude_op_types": list(exclude_op_types),
        }, what="FP16 conversion")
        fp16 = onnx.load(str(out))
    kept = result["fp32_nodes"]
    log.info("FP16: %d node(s) kept in FP32%s (AutoCast, %.1f s)", len(kept),
             f": {', '.join(kept[:8])}" + (" ..." if len(kept) > 8 else "") if kept else "",
             result["seconds"])
    _derive_metadata(fp16, meta, Precision.FP16, {"fp16": {
        "converter": f"modelopt.autocast {result['modelopt']}", "fp32_nodes": kept,
        "max_activation": max_activation, "range_check_images": (
            "random" if calibration_data is None else num_images)}})
    if output is not None:
        save_model(fp16, output)
    return fp16


# ---------------------------------------------------------------------------------------------
# TensorRT text calibration caches


def read_trt_calibration_cache(path: str | os.PathLike[str]) -> dict[str, float]:
    """Read a TensorRT text calibration cache (``TRT-<ver>-EntropyCalibration2`` header, then
    ``tensor: <big-endian float32 scale as 8 hex digits>`` lines) as {tensor: scale}.

    Raises:
        CalibrationError: Missing file, unknown header, malformed line (line number named),
            non-finite or non-positive scale, or no entries.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration cache {path} does not exist")
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise CalibrationError(f"{path} is not a TensorRT text calibration cache ({exc}); "
                               "give the file written by a TensorRT INT8 calibrator") from None
    if not lines or not _TRT_HEADER.match(lines[0].strip()):
        head = lines[0][:60] if lines else "<empty file>"
        raise CalibrationError(
            f"{path} is not a TensorRT text calibration cache: first line {head!r} is not "
            "'TRT-<version>-<Calibrator>' (e.g. TRT-8601-EntropyCalibration2)")
    scales: dict[str, float] = {}
    for lineno, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        m = _TRT_LINE.match(line)
        if not m:
            raise CalibrationError(f"{path}:{lineno}: expected 'tensor_name: 8-hex-digit scale', "
                                   f"got {line[:80]!r}")
        value = struct.unpack("!f", bytes.fromhex(m.group(2)))[0]
        if not math.isfinite(value) or value < 0:
            raise CalibrationError(f"{path}:{lineno}: scale of {m.group(1)!r} is {value}; a "
                                   "calibration scale must be a finite, non-negative number")
        scales[m.group(1)] = float(value)
    if not scales:
        raise CalibrationError(f"{path} holds no tensor scales")
    return scales


def write_trt_calibration_cache(scales: Mapping[str, float], path: str | os.PathLike[str], *,
                                header: str = "TRT-8601-EntropyCalibration2") -> Path:
    """Write {tensor: scale} as a TensorRT text calibration cache (atomically).

    Useful for TensorRT 8.6 (JetPack 5), which builds INT8 from an FP32 ONNX plus a calibrator
    that reads this cache.
    """
    if not _TRT_HEADER.match(header):
        raise ConfigError(f"header {header!r} is not 'TRT-<version>-<Calibrator>'")
    lines = [header] + [f"{k}: {struct.pack('!f', float(v)).hex()}" for k, v in scales.items()]
    from .fsio import atomic_write_text

    return atomic_write_text(path, "\n".join(lines) + "\n", error=CalibrationError)


def _graph_tensor_names(model: Any) -> set[str]:
    names = {i.name for i in model.graph.input}
    for node in model.graph.node:
        names.update(node.output)
    return names


def _load_import_cache(path: Path, model: Any, gsha: str) -> dict[str, float]:
    """Scales from an explicit cache file: our JSON (graph hash checked) or TensorRT text."""
    if not path.is_file():
        raise CalibrationError(f"calibration cache {path} does not exist")
    try:
        head = path.read_bytes()[:1]
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration cache {path}: {exc.strerror}") from None
    if head == b"{":
        entry = _read_entry(path)
        if entry is None:
            raise CalibrationError(f"{path} is not an xception-trt calibration cache (unknown "
                                   "format or version); recalibrate with images")
        if entry["key"]["graph"] != gsha:
            raise CalibrationError(
                f"calibration cache {path} was written for another graph (sha256 "
                f"{entry['key']['graph'][:12]}..., this graph is {gsha[:12]}...); recalibrate "
                "with images or give the cache of this model")
        return {k: float(v) for k, v in entry["scales"].items()}
    scales = read_trt_calibration_cache(path)
    known = _graph_tensor_names(model)
    matched = {k: v for k, v in scales.items() if k in known}
    if not matched:
        raise CalibrationError(
            f"none of the {len(scales)} tensor names in {path} exist in this graph: the cache "
            "was written for another graph; recalibrate with images")
    if len(matched) < len(scales):
        log.info("TensorRT cache %s: %d of %d entries name tensors of this graph (the rest are "
                 "ignored)", path, len(matched), len(scales))
    zero = [k for k, v in matched.items() if v == 0.0]
    if zero:
        raise CalibrationError(f"{path}: tensor(s) {', '.join(zero[:5])} have scale 0, which "
                               "cannot be used for Q/DQ; recalibrate with images")
    return matched


# ---------------------------------------------------------------------------------------------
# our calibration cache


def _read_entry(path: Path) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT
            or entry.get("version") != CACHE_VERSION or not isinstance(entry.get("key"), dict)
            or not isinstance(entry.get("scales"), dict)):
        return None
    try:
        if not all(math.isfinite(float(v)) and float(v) > 0 for v in entry["scales"].values()):
            return None
    except (TypeError, ValueError):
        return None
    return entry


_KEY_REASONS = {
    "graph": "it was written for another graph",
    "data": "the calibration images changed (names, sizes or mtimes)",
    "preprocessing": "the preprocessing (ModelSpec or input format) changed",
    "method": "the calibration method differs",
    "options": "the quantization options (exclusions, percentile, ...) differ",
    "num_images": "the number of calibration images differs",
    "seed": "the selection seed differs",
    "batch_size": "the calibration batch size differs",
    "modelopt": "the ModelOpt version differs",
}


def _stale_reasons(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [_KEY_REASONS.get(k, f"{k} differs") for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def _modelopt_version() -> str:
    try:
        from importlib.metadata import version

        return version("nvidia-modelopt")
    except Exception:  # not installed: the worker reports it properly
        return "unknown"


# ---------------------------------------------------------------------------------------------
# INT8


def quantize_int8(onnx_model_or_path: Any, calibration_data: Any = None, *,
                  method: CalibrationMethod | str = CalibrationMethod.ENTROPY,
                  num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0, batch_size: int = 8,
                  percentile: float = 99.99, exclude_nodes: Sequence[str] = (),
                  exclude_op_types: Sequence[str] = (), exclude_depthwise: bool = False,
                  high_precision: Precision | str = Precision.FP32, int8_weights: bool = False,
                  cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE_DIR,
                  import_cache: str | os.PathLike[str] | None = None,
                  output: str | os.PathLike[str] | None = None) -> QuantizeResult:
    """Insert calibrated INT8 Q/DQ nodes with NVIDIA ModelOpt (CPU calibration).

    Args:
        onnx_model_or_path: The FP32 xception-trt model or its path.
        calibration_data: Folder / file list / :class:`~xception_trt.data.Dataset` of images
            (preprocessed with the model's ModelSpec), or a preprocessed array in the graph's
            input format. May be ``None`` only with ``import_cache`` (a cache hit still needs
            the images' fingerprint, but decodes none of them).
        method: ``entropy`` (default, TensorRT's EntropyCalibration2), ``max`` or ``percentile``.
        num_images: Images to calibrate with (seeded selection, data-set order).
        seed: Selection seed.
        batch_size: Images per calibration batch (a fixed-batch graph uses its own batch).
        percentile: Percentile of |activation| for ``method="percentile"`` (0 < p <= 100).
        exclude_nodes: Node names or regexes (matched against the whole name) kept in high
            precision.
        exclude_op_types: Op types kept in high precision (e.g. ``["Gemm"]``).
        exclude_depthwise: Also keep every depthwise Conv in high precision.
        high_precision: Precision of everything that is not quantized: ``fp32`` (default; ONNX
            Runtime on CPU runs it fast) or ``fp16`` (fastest TensorRT engines).
        int8_weights: Store quantized weights as INT8 initializers with only a
            DequantizeLinear (ModelOpt ``qdq_to_dq``): about a quarter of the file size.
            Default: FP32 weights with a Q/DQ pair (TensorRT folds both forms at build time).
        cache_dir: Calibration cache folder (``None`` disables the cache).
        import_cache: Use the scales of this cache instead of calibrating: a TensorRT text
            calibration cache (the migration path from TensorRT 8/10 implicit INT8) or an
            xception-trt cache JSON. Tensors the cache does not cover are calibrated with
            ``calibration_data`` if given, else this is an error.
        output: Optional path to write the model to (atomically).

    Returns:
        A :class:`QuantizeResult`.

    Raises:
        GraphError: Not an FP32 xception-trt graph.
        CalibrationError: No/unusable calibration data, a cache for another graph, a ModelOpt
            failure.
        ConfigError: Bad option values.
    """
    import onnx

    results = _quantize_int8_methods(
        onnx_model_or_path, calibration_data, [method], num_images=num_images, seed=seed,
        batch_size=batch_size, percentile=percentile, exclude_nodes=exclude_nodes,
        exclude_op_types=exclude_op_types, exclude_depthwise=exclude_depthwise,
        high_precision=high_precision, int8_weights=int8_weights, cache_dir=cache_dir,
        import_cache=import_cache)
    result = next(iter(results.values()))
    if output is not None:
        result = _with_path(result, save_model(result.model, output))
    return result


def _with_path(r: QuantizeResult, path: Path) -> QuantizeResult:
    return QuantizeResult(r.model, path, r.method, r.quantized_nodes, r.excluded_nodes,
                          r.num_images, r.cache, r.cache_path, r.seconds, r.scales,
                          r.skipped_images)


def _quantize_int8_methods(onnx_model_or_path: Any, calibration_data: Any,
                           methods: Sequence[CalibrationMethod | str], *, num_images: int,
                           seed: int, batch_size: int, percentile: float,
                           exclude_nodes: Sequence[str], exclude_op_types: Sequence[str],
                           exclude_depthwise: bool, high_precision: Precision | str,
                           int8_weights: bool, cache_dir: str | os.PathLike[str] | None,
                           import_cache: str | os.PathLike[str] | None
                           ) -> dict[str, QuantizeResult]:
    """:func:`quantize_int8` for several methods: images are decoded once and every method
    runs in one ModelOpt subprocess. Returns {method: result} in the order given."""
    import onnx

    methods = list(dict.fromkeys(CalibrationMethod.parse(m) for m in methods))
    if not methods:
        raise ConfigError("give at least one calibration method")
    high = Precision.parse(high_precision)
    if high is Precision.INT8:
        raise ConfigError("high_precision must be fp32 or fp16")
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ConfigError(f"num_images must be an integer >= 1, got {num_images!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not (0.0 < float(percentile) <= 100.0):
        raise ConfigError(f"percentile must be in (0, 100], got {percentile!r}")
    if calibration_data is None and import_cache is None:
        raise CalibrationError("INT8 calibration needs calibration images (a folder such as "
                               "calibration/) or an existing calibration cache to import")
    if import_cache is not None and len(methods) > 1:
        raise ConfigError("an imported cache fixes the scales: give one method with it")
    model, _ = _as_model(onnx_model_or_path)
    meta = _check_source(model)
    _check_exclusions(model, exclude_nodes, exclude_op_types)
    gsha = graph_sha256(model)
    excluded = _anchored(exclude_nodes)
    if exclude_depthwise:
        excluded += _anchored(re.escape(n) for n in depthwise_conv_nodes(model))
    static = _static_batch(model)
    preprocessing = hashlib.sha256(
        (meta.spec.to_json() + meta.input_format.value).encode()).hexdigest()

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xtrt-int8-") as tmp_name:
        tmp = Path(tmp_name)
        src = tmp / "model.onnx"
        onnx.save(model, str(src))
        calib: _CalibSet | None = None
        if calibration_data is not None:
            calib = _select_calibration(calibration_data, meta, num_images=num_images,
                                        seed=seed, static_batch=static)
        imported = (_load_import_cache(Path(import_cache), model, gsha)
                    if import_cache is not None else None)
        jobs: list[dict[str, Any]] = []
        states: list[dict[str, Any]] = []
        for i, method in enumerate(methods):
            options = {"exclude_nodes": sorted(excluded),
                       "exclude_op_types": sorted(exclude_op_types), "high_precision": high.value,
                       "int8_weights": bool(int8_weights),
                       "percentile": (float(percentile) if method is CalibrationMethod.PERCENTILE
                                      else None)}
            options_sha = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()
            job: dict[str, Any] = {
                "task": "int8", "onnx": str(src), "out": str(tmp / f"int8_{i}.onnx"),
                "tmp_dir": str(tmp / f"job_{i}"), "method": method.value,
                "percentile": float(percentile), "exclude_nodes": excluded,
                "exclude_op_types": list(exclude_op_types), "high_precision": high.value,
                "input_name": INPUT_NAME, "input_shape": _input_shape(meta.spec, meta.input_format),
                "input_dtype": ("uint8" if meta.input_format is InputFormat.UINT8_NHWC
                                else "float32"),
                "static_batch": static, "data_dir": None, "int8_weights": bool(int8_weights),
            }
            (tmp / f"job_{i}").mkdir()
            state: dict[str, Any] = {"method": method, "options": options, "cache": "off",
                                     "cache_path": None, "key": None}
            if imported is not None:
                job["scales"] = imported
                state.update(cache="imported", cache_path=Path(import_cache))  # type: ignore[arg-type]
                log.info("using %d activation scale(s) from %s", len(imported), import_cache)
            elif cache_dir is not None and calib is not None:
                key = {"graph": gsha, "data": calib.fingerprint, "preprocessing": preprocessing,
                       "method": method.value, "options": options_sha,
                       "num_images": calib.selected, "seed": seed,
                       "batch_size": static or batch_size, "modelopt": _modelopt_version()}
                cache_path = Path(cache_dir) / f"{gsha[:16]}-{method.value}-{options_sha[:8]}.json"
                state.update(cache="miss", cache_path=cache_path, key=key)
                if cache_path.exists():
                    entry = _read_entry(cache_path)
                    if entry is None:
                        log.warning("calibration cache %s is not a valid xception-trt cache "
                                    "(foreign, corrupt or an old format); ignoring it and "
                                    "recalibrating", cache_path)
                    elif entry["key"] != key:
                        log.warning("calibration cache %s is stale (%s); recalibrating",
                                    cache_path, "; ".join(_stale_reasons(entry["key"], key)))
                    else:
                        job["scales"] = {k: float(v) for k, v in entry["scales"].items()}
                        state["cache"] = "hit"  # no image is decoded, no calibration runs
                        log.info("calibration cache hit: %s", cache_path)
                else:
                    log.info("no calibration cache entry %s; calibrating", cache_path)
                if state["cache"] == "miss":
                    check_writable_dir(Path(cache_dir), what="calibration cache",
                                       error=CalibrationError)
            jobs.append(job)
            states.append(state)
        # Decode the images once, for every job that calibrates (or completes an import).
        if calib is not None and any(st["cache"] != "hit" for st in states):
            (tmp / "data").mkdir()
            calib.write(meta, batch_size=batch_size, static_batch=static,
                        directory=tmp / "data")
            for job, st in zip(jobs, states):
                if st["cache"] != "hit":
                    job["data_dir"] = str(tmp / "data")
        outcomes = _run_worker({"jobs": jobs, "tmp_dir": str(tmp)}, what="INT8 calibration")
        models = [onnx.load(job["out"]) for job in jobs]
    seconds = time.perf_counter() - t0

    results: dict[str, QuantizeResult] = {}
    for st, outcome, qmodel in zip(states, outcomes["jobs"], models):
        method = st["method"]
        scales = {k: float(v) for k, v in outcome["scales"].items()}
        quantized = tuple(outcome["quantized_nodes"])
        not_quantized = tuple(outcome["unquantized_nodes"])
        if not quantized:
            raise CalibrationError("ModelOpt quantized no Conv/Gemm node (all excluded?); "
                                   "relax exclude_nodes / exclude_op_types")
        cache_path = st["cache_path"]
        if st["cache"] == "miss":
            atomic_write_json(cache_path, {
                "format": CACHE_FORMAT, "version": CACHE_VERSION, "key": st["key"],
                "scales": scales, "quantized_nodes": list(quantized),
                "excluded_nodes": list(not_quantized),
                "written_by": f"xception-trt {__version__}",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "calibration_seconds": round(outcome["seconds"], 3)}, error=CalibrationError)
            log.info("calibration cache written: %s", cache_path)
        used = calib.count if calib is not None and st["cache"] != "hit" else 0
        calibration_meta = {
            "method": method.value,
            "num_images": (calib.count or calib.selected) if calib else 0,
            "seed": seed, "data_fingerprint": calib.fingerprint if calib else None,
            "percentile": st["options"]["percentile"], "cache": st["cache"],
            "cache_file": cache_path.name if cache_path else None,
            "quantized_nodes": len(quantized), "excluded_nodes": list(not_quantized),
            "high_precision": high.value, "tool": f"nvidia-modelopt {outcomes['modelopt']}",
            "source_graph_sha256": gsha,
        }
        _derive_metadata(qmodel, meta, Precision.INT8, {"calibration": calibration_meta})
        # Wall time is shared by the methods of one call: report each method's own ModelOpt
        # time plus an equal share of the rest (decode, subprocess start).
        own = float(outcome["seconds"])
        shared = max(0.0, seconds - sum(float(o["seconds"]) for o in outcomes["jobs"]))
        log.info("INT8 (%s): %d compute node(s) quantized, %d kept in %s; cache %s; %.1f s",
                 method.value, len(quantized), len(not_quantized), high.value, st["cache"],
                 own + shared / len(states))
        results[method.value] = QuantizeResult(
            qmodel, None, method, quantized, not_quantized, used, st["cache"], cache_path,
            own + shared / len(states), scales, calib.skipped if calib else ())
    return results


# ---------------------------------------------------------------------------------------------
# accuracy on the CPU


def _size(model_or_path: Any) -> int:
    if isinstance(model_or_path, (str, os.PathLike)):
        return Path(model_or_path).stat().st_size
    return model_or_path.ByteSize()


def evaluate_variants(variants: Mapping[str, Any], data: Any, *, reference: str = "fp32",
                      num_images: int | None = None, seed: int = 0, batch_size: int = 16,
                      threads: int | None = None) -> list[VariantMetrics]:
    """Accuracy of several ONNX variants of one model with ONNX Runtime on the CPU.

    Every variant sees the same preprocessed batches (decoded once).

    Args:
        variants: Name -> ONNX path or ``onnx.ModelProto`` (same ModelSpec and input format).
        data: Folder / file list / Dataset of images (labelled: top-1/top-5 are reported).
        reference: The variant the others are compared with (top-1 agreement, logit diffs).
        num_images: Evaluate a seeded subset of this many images (``None``: all).
        seed: Subset seed.
        batch_size: Images per batch.
        threads: ONNX Runtime intra-op threads (``None``: its default).

    Returns:
        One :class:`VariantMetrics` per variant, in the order given.

    Raises:
        BenchError / DataError / EngineError: Unknown reference, bad data, unloadable model.
    """
    from .data import BatchLoader, open_dataset
    from .errors import BenchError
    from .runners import OnnxRuntimeRunner

    if reference not in variants:
        raise BenchError(f"reference variant {reference!r} is not among {list(variants)}")
    ds = open_dataset(data).select(num_images, seed=seed)
    with tempfile.TemporaryDirectory(prefix="xtrt-eval-") as tmp_name:
        paths: dict[str, Path] = {}
        for name, v in variants.items():
            if isinstance(v, (str, os.PathLike)):
                paths[name] = Path(v)
            else:
                paths[name] = Path(tmp_name) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.onnx"
                save_model(v, paths[name])
        runners = {n: OnnxRuntimeRunner(p, providers=["CPUExecutionProvider"], threads=threads)
                   for n, p in paths.items()}
        try:
            ref_runner = runners[reference]
            fmts = {r.input_format for r in runners.values()}
            specs = {r.spec.to_json() for r in runners.values()}
            if len(fmts) > 1 or len(specs) > 1:
                raise BenchError("the variants differ in ModelSpec or input format; compare "
                                 "variants of one exported model")
            loader = BatchLoader(ds, ref_runner.spec, batch_size=batch_size,
                                 input_format=ref_runner.input_format)
            logits: dict[str, list[np.ndarray]] = {n: [] for n in runners}
            labels: list[np.ndarray] = []
            for batch in loader:
                for name, runner in runners.items():
                    step = runner.max_batch or batch.data.shape[0]
                    if runner.max_batch and batch.data.shape[0] % step:
                        raise BenchError(f"{name} has a fixed batch of {step}; evaluate with a "
                                         "dynamic-batch export or a multiple of it")
                    logits[name].append(np.concatenate(
                        [runner(batch.data[i:i + step])
                         for i in range(0, batch.data.shape[0], step)]))
                if batch.labels is not None:
                    labels.append(batch.labels)
        finally:
            for r in runners.values():
                r.close()
        if not logits[reference]:
            raise BenchError("no evaluation image could be read")
        y = np.concatenate(labels) if labels and len(labels) == len(logits[reference]) else None
        ref = np.concatenate(logits[reference]).astype(np.float64)
        ref_top1 = ref.argmax(1)
        rows = []
        for name, parts in logits.items():
            out = np.concatenate(parts).astype(np.float64)
            top1 = top5 = None
            if y is not None:
                top1 = float((out.argmax(1) == y).mean() * 100)
                if out.shape[1] >= 5:
                    top = np.argsort(-out, axis=1)[:, :5]
                    top5 = float((top == y[:, None]).any(1).mean() * 100)
            diff = np.abs(out - ref)
            prec = runners[name].precision.value
            rows.append(VariantMetrics(
                name, prec, int(out.shape[0]), top1, top5,
                float((out.argmax(1) == ref_top1).mean() * 100), float(diff.max()),
                float(diff.mean()), _size(paths[name])))
    return rows


def format_table(rows: Sequence[VariantMetrics]) -> str:
    """A fixed-width text table of :func:`evaluate_variants` rows."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    head = (f"{'variant':<20} {'prec':<5} {'images':>6} {'top1%':>7} {'top5%':>7} "
            f"{'agree%':>7} {'max|d|':>10} {'mean|d|':>10} {'MiB':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.name:<20} {r.precision:<5} {r.images:>6} {pct(r.top1):>7} "
                     f"{pct(r.top5):>7} {r.agreement:>7.2f} {r.max_abs_diff:>10.3g} "
                     f"{r.mean_abs_diff:>10.3g} {r.size_bytes / 2**20:>8.2f}")
    return "\n".join(lines)


def _holdout(calibration_data: Any, val_data: Any, num_images: int, seed: int
             ) -> tuple[Any, Any]:
    """Calibration and validation sets for ``--auto``: ``val_data`` when given, else the images
    of ``calibration_data`` left out of the calibration selection."""
    from .data import Dataset, open_dataset

    if val_data is not None:
        return calibration_data, val_data
    if isinstance(calibration_data, np.ndarray):
        raise CalibrationError("auto calibration with a preprocessed array needs val_data")
    try:
        ds = open_dataset(calibration_data)
    except DataError as exc:
        raise CalibrationError(f"calibration data: {exc}") from None
    calib = ds.select(min(num_images, max(1, len(ds) // 2)) if len(ds) <= num_images
                      else num_images, seed=seed)
    chosen = {r.path for r in calib.records}
    rest = tuple(r for r in ds.records if r.path not in chosen)
    if not rest:
        raise CalibrationError(
            f"no images are left over for validation ({len(ds)} image(s), {len(calib)} used "
            "for calibration); give a separate validation set (val_data / --val)")
    log.info("auto: calibrating on %d image(s), validating on the %d held-out one(s)",
             len(calib), len(rest))
    return calib, Dataset(rest, ds.class_names, ds.root, ds.ignored)


def auto_quantize_int8(onnx_model_or_path: Any, calibration_data: Any, val_data: Any = None, *,
                       methods: Sequence[CalibrationMethod | str] = tuple(CalibrationMethod),
                       num_images: int = DEFAULT_NUM_IMAGES, val_images: int | None = None,
                       seed: int = 0, output: str | os.PathLike[str] | None = None,
                       **kw: Any) -> AutoQuantizeResult:
    """Calibrate with every method, measure each on held-out data, keep the best.

    Labelled validation data: the highest top-1 wins (ties: top-1 agreement with FP32, then
    mean |logit difference|). Unlabelled: the highest agreement with FP32 wins (ties: mean
    |logit difference|).

    Args:
        onnx_model_or_path: The FP32 model or its path.
        calibration_data: Calibration images (see :func:`quantize_int8`).
        val_data: Held-out images; ``None`` holds out the calibration images not selected.
        methods: Methods to try.
        num_images: Calibration images per method.
        val_images: Validation subset size (``None``: all).
        seed: Selection seed.
        output: Where to write the kept model.
        **kw: Passed to :func:`quantize_int8` (exclusions, cache_dir, batch_size, ...).

    Returns:
        An :class:`AutoQuantizeResult`.
    """
    methods = [CalibrationMethod.parse(m) for m in methods]
    if not methods:
        raise ConfigError("give at least one calibration method")
    model, _ = _as_model(onnx_model_or_path)
    calib, val = _holdout(calibration_data, val_data, num_images, seed)
    opts = dict(seed=seed, batch_size=8, percentile=99.99, exclude_nodes=(),
                exclude_op_types=(), exclude_depthwise=False, high_precision=Precision.FP32,
                int8_weights=False, cache_dir=DEFAULT_CACHE_DIR, import_cache=None)
    unknown = sorted(set(kw) - set(opts))
    if unknown:
        raise ConfigError(f"unknown option(s) for auto calibration: {', '.join(unknown)}")
    opts.update(kw)
    results = _quantize_int8_methods(model, calib, methods, num_images=num_images, **opts)
    variants: dict[str, Any] = {"fp32": model}
    variants.update({f"int8-{k}": r.model for k, r in results.items()})
    rows = evaluate_variants(variants, val, num_images=val_images, seed=seed)
    labelled = rows[0].top1 is not None

    def score(r: VariantMetrics) -> tuple:
        return ((r.top1, r.agreement, -r.mean_abs_diff) if labelled
                else (r.agreement, -r.mean_abs_diff))

    best_row = max(rows[1:], key=score)
    best = results[best_row.name[len("int8-"):]]
    if output is not None:
        best = _with_path(best, save_model(best.model, output))
    log.info("auto: kept %s (%s)", best.method.value, "top-1" if labelled else "agreement")
    return AutoQuantizeResult(best, results, tuple(rows), "top1" if labelled else "agreement")
