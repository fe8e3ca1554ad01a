"""INT8 variants: explicit Q/DQ nodes placed and calibrated for TensorRT (NVIDIA ModelOpt ONNX
PTQ, the default) or for ONNX Runtime's CPU provider (``placement="onnxruntime"``).

``modelopt.onnx.quantization.quantize`` with ``calibration_eps`` from :func:`calibration_eps` (GPU
providers where onnxruntime-gpu and a GPU are present, else ``["cpu"]``). Its placement is the
one TensorRT fuses: per-channel symmetric INT8 weights (axis 0, zero point 0), per-tensor
symmetric activations, the residual ``Add`` quantized on one input only (the other comes
straight from a Conv, so TensorRT fuses the add into that Conv), and the output layer (the
classifier ``Gemm``) left in high precision, so the logits never pass through Q/DQ. Every
method (``max``, ``entropy``, ``percentile``) takes ModelOpt's scales from one ONNX Runtime pass
of ours (:mod:`.fastcalib`; ``XCEPTION_TRT_FAST_CALIBRATION=0``: ModelOpt's own calibrators),
handed to ModelOpt as an imported cache; ModelOpt's placement is kept as a layout in the cache
folder (:mod:`.layout`): once a graph has a layout, a new method or image set calibrates in the
calling process (one pass over the activations the layout quantizes) and a cache hit runs no
calibration either; neither starts ModelOpt or a worker. Several methods share one decode of the
images (and one worker process where one runs); :func:`auto_quantize_int8` keeps the best on
held-out data.

``placement="onnxruntime"`` uses ONNX Runtime's own ``quantize_static`` (QDQ, per-channel INT8
weights, asymmetric uint8 activations on the inputs and outputs of every op it supports), the
placement its CPU provider fuses into QLinearConv/QGemm kernels; ModelOpt's ONNX PTQ has no
such placement (its activations are always symmetric int8, which ONNX Runtime leaves unfused
in the depthwise convolutions). Measured on the demo model in issue 18; see docs/measured.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import InputFormat, Placement, Precision, StrEnum, check_int
from ..errors import CalibrationError, ConfigError, XceptionTRTError, renamed
from ..extras import needs
from ..fsio import check_writable_dir
from ..onnx_meta import INPUT_NAME
from .cache import (
    DEFAULT_CACHE_DIR,
    entry_path,
    load_import_cache,
    lookup_entry,
    lookup_zero_points,
    write_entry,
)
from .calibdata import CalibSet, holdout, select_calibration
from .evaluate import VariantMetrics, evaluate_variants
from .launcher import (
    ORT_WORKER_NEEDS,
    Progress,
    modelopt_version,
    run_worker,
    worker_tempdir,
)
from .layout import apply_layout, layout_activations, read_layout, write_layout
from .source import (
    anchored,
    as_model,
    check_exclusions,
    check_source,
    depthwise_conv_nodes,
    derive_metadata,
    graph_sha256,
    input_shape,
    save_model,
    static_batch_of,
)

__all__ = ["CalibrationMethod", "DEFAULT_NUM_IMAGES", "DEFAULT_PERCENTILE", "HIGH_PRECISIONS",
           "QuantizeResult", "AutoQuantizeResult", "quantize_int8", "auto_quantize_int8",
           "ort_int8"]

log = logging.getLogger(__name__)

#: Default number of calibration images (NVIDIA's PTQ guidance: a few hundred representative
#: images; 512 matches the TensorRT samples).
DEFAULT_NUM_IMAGES = 512
#: Percentile of |activation| for the ``percentile`` method.
DEFAULT_PERCENTILE = 99.99
#: Precisions the nodes left out of INT8 may run in.
HIGH_PRECISIONS = (Precision.FP32, Precision.FP16)


class CalibrationMethod(StrEnum):
    """How INT8 activation ranges are chosen from calibration data.

    ``max``: the largest absolute value seen. ``entropy``: TensorRT's KL-divergence method
    (``EntropyCalibration2``). ``percentile``: the given percentile of absolute values.
    Declaration order is the order :func:`auto_quantize_int8` tries them in.
    """

    MAX = "max"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


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
        seconds: Wall time of this method's calibration and quantization, in seconds, plus
            an equal share of what the methods of one call share (decoding the images, the
            worker's start).
        scales: Per-tensor activation scales (tensor name -> scale, float).
        skipped_images: Images that could not be read and were left out (path, reason).
        target: The runtime the Q/DQ placement is made for.
        zero_points: Per-tensor activation zero points (``onnxruntime`` target only).
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
    placement: Placement = Placement.TENSORRT
    zero_points: Mapping[str, int] = field(repr=False, default_factory=dict)

    @property
    def target(self) -> Placement:
        """Old name of :attr:`placement` (deprecated)."""
        warnings.warn("QuantizeResult.target is deprecated; use .placement", DeprecationWarning,
                      stacklevel=2)
        return self.placement

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable facts (no model, no scales)."""
        return {
            "path": str(self.path) if self.path else None,
            "method": self.method.value,
            "target": self.placement.value,  # the JSON key keeps its old name
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


def quantize_int8(onnx_model_or_path: Any, calibration_data: Any = None, *,
                  method: CalibrationMethod | str = CalibrationMethod.ENTROPY,
                  num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0, batch_size: int = 8,
                  percentile: float = DEFAULT_PERCENTILE, exclude_nodes: Sequence[str] = (),
                  exclude_op_types: Sequence[str] = (), exclude_depthwise: bool = False,
                  high_precision: Precision | str = Precision.FP32,
                  int8_weights: bool | None = None,
                  cache_dir: str | os.PathLike[str] | None = DEFAULT_CACHE_DIR,
                  import_cache: str | os.PathLike[str] | None = None,
                  output: str | os.PathLike[str] | None = None,
                  progress: Progress | None = None,
                  placement: Placement | str | None = None,
                  target: Placement | str | None = None) -> QuantizeResult:
    """Insert calibrated INT8 Q/DQ nodes (CPU calibration), placed for TensorRT or ONNX Runtime.

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
        int8_weights: Store quantized weights as INT8 initializers read by a
            DequantizeLinear (ModelOpt ``qdq_to_dq``; about a quarter of the file size).
            ``None`` (default): yes for the TensorRT placement (TensorRT 10+ and TensorRT-RTX
            read that form; the builder gives TensorRT 8.6 the float form,
            :func:`xception_trt.graph.to_float_weights`). ``False``: FP32 weights through a
            Q/DQ pair (what :mod:`~xception_trt.precision.sensitivity` edits).
        cache_dir: Calibration cache folder (default: the per-user
            ``$XDG_CACHE_HOME/xception-trt/calibration``; ``None`` disables the cache).
        import_cache: Use the scales of this cache instead of calibrating: a TensorRT text
            calibration cache (the migration path from TensorRT 8/10 implicit INT8) or an
            xception-trt cache JSON. Tensors the cache does not cover are calibrated with
            ``calibration_data`` if given, else this is an error.
        output: Optional path to write the model to (atomically).
        progress: Called with ``(stage, done, total)``: images decoded
            (``"decode calibration images"``), then calibration batches fed per method
            (``"calibrate METHOD"``). The library itself never prints.
        placement: ``tensorrt`` (default; NVIDIA ModelOpt's placement, for engines) or
            ``onnxruntime`` (ONNX Runtime's ``quantize_static`` placement, which its CPU
            provider fuses into QLinearConv/QGemm; TensorRT cannot build it). With
            ``onnxruntime``, ``high_precision`` must be fp32, ``int8_weights`` is implied (the
            weights are always stored as INT8; ``True`` is refused as redundant) and
            ``import_cache`` is refused.
        target: Old name of ``placement`` (deprecated).

    Returns:
        A :class:`QuantizeResult`.

    Raises:
        GraphError: Not an FP32 xception-trt graph.
        CalibrationError: No/unusable calibration data, a cache for another graph, a ModelOpt
            failure.
        ConfigError: Bad option values.
    """
    placement = renamed("target", "placement", target, placement, where="quantize_int8")
    results = _quantize_int8_methods(
        onnx_model_or_path, calibration_data, [method], num_images=num_images, seed=seed,
        batch_size=batch_size, percentile=percentile, exclude_nodes=exclude_nodes,
        exclude_op_types=exclude_op_types, exclude_depthwise=exclude_depthwise,
        high_precision=high_precision, int8_weights=int8_weights, cache_dir=cache_dir,
        import_cache=import_cache, progress=progress,
        placement=placement or Placement.TENSORRT)
    result = next(iter(results.values()))
    if output is not None:
        result = _with_path(result, save_model(result.model, output))
    return result


def _raw_initializers(model: Any) -> Any:
    """Store every initializer as raw bytes (returns ``model``, changed in place).

    ModelOpt writes the scales it calibrates as ``float_data`` and the scales it imports from a
    cache as ``raw_data``: the same values, different bytes. One encoding keeps a cache hit's
    file identical to the calibrating run's.
    """
    from onnx import TensorProto, numpy_helper

    for init in model.graph.initializer:
        if init.data_location != TensorProto.EXTERNAL and not init.HasField("raw_data"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init), init.name))
    return model


def _from_layout(layout: bytes, source: Any, scales: Mapping[str, float], *,
                 int8_weights: bool) -> tuple[dict[str, Any], Any] | None:
    """A cache hit without ModelOpt: the cached layout filled with the cached scales, and
    the worker's facts of it; ``None`` (the worker then runs) when they do not fit. With
    ``int8_weights`` the weights are then stored as INT8 as the worker stores them
    (:func:`xception_trt.graph.to_int8_weights`, the same bytes as ModelOpt's ``qdq_to_dq``)."""
    from ..graph import to_int8_weights
    from ._worker import _qdq_facts

    t0 = time.perf_counter()
    try:
        placed = apply_layout(layout, source, scales)
    except CalibrationError as exc:
        log.info("cached Q/DQ layout not used (%s); running ModelOpt", exc)
        return None
    facts = _qdq_facts(placed)
    facts.pop("scale_names")
    facts["scales"] = {k: float(scales[k]) for k in facts["scales"]}
    if int8_weights:
        placed = to_int8_weights(placed)
    facts["seconds"] = time.perf_counter() - t0
    return facts, _raw_initializers(placed)


def _calibrate_with_layout(layout: bytes, source: Any, job: Mapping[str, Any], *,
                           int8_weights: bool, progress: Progress | None
                           ) -> tuple[dict[str, Any], Any] | None:
    """A miss whose placement is known: :mod:`.fastcalib`'s one pass over the activations the
    layout quantizes, in this process, then :func:`_from_layout` (``None``: the worker runs)."""
    from .fastcalib import calibrate_scales

    t0 = time.perf_counter()
    method = str(job["method"])
    stage = f"calibrate {method}"
    try:
        scales = calibrate_scales(
            source, sorted(Path(job["data_dir"]).glob("batch_*.npz")), str(job["input_name"]),
            method=method, percentile=float(job["percentile"]),
            tensors=layout_activations(layout),
            progress=None if progress is None else (lambda d, n: progress(stage, d, n)))
    except XceptionTRTError:
        raise
    except Exception as exc:  # ONNX Runtime's own errors (memory, a kernel) say what failed
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise CalibrationError(f"INT8 calibration failed in ONNX Runtime: "
                               f"{type(exc).__name__}: {reason}") from exc
    done = _from_layout(layout, source, scales, int8_weights=int8_weights)
    if done is not None:
        done[0]["seconds"] = time.perf_counter() - t0
    return done


def _with_path(r: QuantizeResult, path: Path) -> QuantizeResult:
    return dataclasses.replace(r, path=path)


def _quantize_int8_methods(onnx_model_or_path: Any, calibration_data: Any,
                           methods: Sequence[CalibrationMethod | str], *, num_images: int,
                           seed: int, batch_size: int, percentile: float,
                           exclude_nodes: Sequence[str], exclude_op_types: Sequence[str],
                           exclude_depthwise: bool, high_precision: Precision | str,
                           int8_weights: bool | None, cache_dir: str | os.PathLike[str] | None,
                           import_cache: str | os.PathLike[str] | None,
                           progress: Progress | None = None,
                           placement: Placement | str = Placement.TENSORRT
                           ) -> dict[str, QuantizeResult]:
    """:func:`quantize_int8` for several methods: images are decoded once and every method
    runs in one ModelOpt subprocess. Returns {method: result} in the order given."""
    with needs("INT8 quantization", extra="build"):
        import onnx

    chosen: list[CalibrationMethod] = list(dict.fromkeys(CalibrationMethod.parse(m)
                                                         for m in methods))
    if not chosen:
        raise ConfigError("give at least one calibration method")
    high = Precision.parse(high_precision)
    if high not in HIGH_PRECISIONS:
        raise ConfigError("high_precision must be " + " or ".join(map(str, HIGH_PRECISIONS)))
    qtarget = Placement.parse(placement)
    _check_target(qtarget, high=high, int8_weights=bool(int8_weights),
                  import_cache=import_cache)
    if int8_weights is None:  # the smallest form each placement's runtime reads
        int8_weights = qtarget is Placement.TENSORRT
    check_int(num_images, "num_images")
    check_int(batch_size, "batch_size")
    if not (0.0 < float(percentile) <= 100.0):
        raise ConfigError(f"percentile must be in (0, 100], got {percentile!r}")
    if calibration_data is None and import_cache is None:
        raise CalibrationError("INT8 calibration needs calibration images (a folder such as "
                               "calibration/) or an existing calibration cache to import")
    if import_cache is not None and len(chosen) > 1:
        raise ConfigError("an imported cache fixes the scales: give one method with it")
    model, _ = as_model(onnx_model_or_path)
    meta = check_source(model)
    check_exclusions(model, exclude_nodes, exclude_op_types)
    gsha = graph_sha256(model)
    excluded = anchored(exclude_nodes)
    if exclude_depthwise:
        excluded += anchored(re.escape(n) for n in depthwise_conv_nodes(model))
    static = static_batch_of(model)
    preprocessing = hashlib.sha256(
        (meta.spec.to_json() + meta.input_format.value).encode()).hexdigest()

    t0 = time.perf_counter()
    with worker_tempdir("int8") as tmp:
        src = tmp / "model.onnx"  # written only if a worker runs
        calib: CalibSet | None = None
        if calibration_data is not None:
            calib = select_calibration(calibration_data, meta, num_images=num_images,
                                        seed=seed, static_batch=static)
        imported = (load_import_cache(Path(import_cache), model, gsha)
                    if import_cache is not None else None)
        jobs: list[dict[str, Any]] = []
        states: list[dict[str, Any]] = []
        # ModelOpt's placement, kept per graph and exclusions (see .layout): with it no job
        # runs ModelOpt, and a cache hit runs no worker at all.
        layout_key = ({"graph": gsha, "exclude_nodes": sorted(excluded),
                       "exclude_op_types": sorted(exclude_op_types),
                       "modelopt": modelopt_version()}
                      if qtarget is Placement.TENSORRT and cache_dir is not None
                      and imported is None else None)
        layout = read_layout(cache_dir, layout_key) if layout_key is not None else None
        if layout is not None:
            (tmp / "layout.onnx").write_bytes(layout)
        for i, method in enumerate(chosen):
            # (how the weights are stored is not part of the key: the scales do not depend on
            # it, so `quantize` and `sensitivity`, which edits the FP32-weight form, share them)
            options: dict[str, Any] = {"exclude_nodes": sorted(excluded),
                       "exclude_op_types": sorted(exclude_op_types), "high_precision": high.value,
                       "percentile": (float(percentile) if method is CalibrationMethod.PERCENTILE
                                      else None)}
            if qtarget is not Placement.TENSORRT:  # TensorRT entries keep their old names
                options["target"] = qtarget.value
            options_sha = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()
            job: dict[str, Any] = {
                "task": "int8", "onnx": str(src), "out": str(tmp / f"int8_{i}.onnx"),
                "tmp_dir": str(tmp / f"job_{i}"), "method": method.value,
                "percentile": float(percentile), "exclude_nodes": excluded,
                "exclude_op_types": list(exclude_op_types), "high_precision": high.value,
                "input_name": INPUT_NAME, "input_shape": input_shape(meta.spec, meta.input_format),
                "input_dtype": ("uint8" if meta.input_format is InputFormat.UINT8_NHWC
                                else "float32"),
                "static_batch": static, "data_dir": None, "int8_weights": bool(int8_weights),
                "target": qtarget.value,
                "calibration_eps": calibration_eps(),
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
                       "batch_size": static or batch_size}
                # The target and the tool that calibrates for it (TensorRT entries keep their
                # old key: no "target" field means tensorrt).
                if qtarget is Placement.TENSORRT:
                    key["modelopt"] = modelopt_version()
                else:
                    key.update(target=qtarget.value, onnxruntime=_ort_version())
                cache_path = entry_path(cache_dir, gsha, method.value, options_sha)
                state.update(cache="miss", cache_path=cache_path, key=key)
                cached = lookup_entry(cache_path, key)
                if cached is not None:
                    job["scales"] = cached
                    job["zero_points"] = lookup_zero_points(cache_path)
                    state["cache"] = "hit"  # no image is decoded, no calibration runs
                elif layout_key is not None and layout is None:
                    job["layout_out"] = str(tmp / f"job_{i}" / "layout.onnx")
                else:
                    try:  # said now, before calibrating; the result is kept either way
                        check_writable_dir(Path(cache_dir), what="calibration cache",
                                           error=CalibrationError)
                    except CalibrationError as exc:
                        log.warning("%s; calibrating without caching the scales", exc)
            if layout is not None:
                job["layout"] = str(tmp / "layout.onnx")
            jobs.append(job)
            states.append(state)
        # Decode the images once, for every job that calibrates (or completes an import).
        if calib is not None and any(st["cache"] != "hit" for st in states):
            (tmp / "data").mkdir()
            calib.write(meta, batch_size=batch_size, static_batch=static,
                        directory=tmp / "data", progress=progress)
            for job, st in zip(jobs, states):
                if st["cache"] != "hit":
                    job["data_dir"] = str(tmp / "data")
        # A layout and nothing for ModelOpt to do after: no worker. A hit fills the layout with
        # the cached scales; a miss calibrates here first (one pass over the tensors the layout
        # quantizes), unless ModelOpt's own calibrators are asked for.
        local: dict[int, tuple[dict[str, Any], Any]] = {}
        if layout is not None and high is Precision.FP32:
            from ._worker import fast_calibration

            for i, (job, st) in enumerate(zip(jobs, states)):
                done = None
                if st["cache"] == "hit":
                    done = _from_layout(layout, model, job["scales"],
                                        int8_weights=bool(int8_weights))
                elif job["data_dir"] and fast_calibration(job["method"]):
                    done = _calibrate_with_layout(layout, model, job,
                                                  int8_weights=bool(int8_weights),
                                                  progress=progress)
                if done is not None:
                    local[i] = done
        remote = [job for i, job in enumerate(jobs) if i not in local]
        ort = qtarget is Placement.ONNXRUNTIME
        outcomes: dict[str, Any] = {"jobs": [], "tool": f"nvidia-modelopt {modelopt_version()}"}
        if remote:
            onnx.save(model, str(src))
            outcomes = run_worker(
                {"jobs": remote, "tmp_dir": str(tmp)}, what="INT8 calibration",
                progress=progress,
                **(dict(tool="ONNX Runtime's quantizer", requires=ORT_WORKER_NEEDS) if ort
                   else {}))
        worker_out = iter(zip(outcomes["jobs"], remote))
        models = []
        merged = []
        for i, job in enumerate(jobs):
            if i in local:
                merged.append(local[i][0])
                models.append(local[i][1])
                continue
            outcome, _ = next(worker_out)
            merged.append(outcome)
            models.append(_raw_initializers(onnx.load(job["out"])))
            if job.get("layout_out") and Path(job["layout_out"]).is_file():
                write_layout(cache_dir, layout_key,  # type: ignore[arg-type]
                             Path(job["layout_out"]).read_bytes())
        outcomes["jobs"] = merged
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
            write_entry(cache_path, st["key"], scales=scales, quantized_nodes=quantized,
                        excluded_nodes=not_quantized, seconds=outcome["seconds"],
                        zero_points=(outcome["zero_points"]
                                     if qtarget is Placement.ONNXRUNTIME else None))
        used = calib.count if calib is not None and st["cache"] != "hit" else 0
        # Only facts of the inputs go into the artifact: a cache hit, a miss and no cache at all
        # write the same bytes (whether the cache was hit is logged and in the result), so an
        # engine keyed on the graph's hash is not rebuilt.
        calibration_meta = {
            "method": method.value,
            "num_images": calib.selected if calib else 0,
            "seed": seed, "data_fingerprint": calib.fingerprint if calib else None,
            "percentile": st["options"]["percentile"],
            "scales": "imported" if st["cache"] == "imported" else "calibrated",
            "quantized_nodes": len(quantized), "excluded_nodes": list(not_quantized),
            "high_precision": high.value, "tool": outcomes["tool"], "target": qtarget.value,
            "source_graph_sha256": gsha,
        }
        derive_metadata(qmodel, meta, Precision.INT8,
                        {"calibration": calibration_meta, "quant_target": qtarget})
        # Wall time is shared by the methods of one call: report each method's own ModelOpt
        # time plus an equal share of the rest (decode, subprocess start).
        own = float(outcome["seconds"])
        shared = max(0.0, seconds - sum(float(o["seconds"]) for o in outcomes["jobs"]))
        log.info("INT8 (%s): %d compute node(s) quantized, %d kept in %s; cache %s; %.1f s",
                 method.value, len(quantized), len(not_quantized), high.value, st["cache"],
                 own + shared / len(states))
        results[method.value] = QuantizeResult(
            qmodel, None, method, quantized, not_quantized, used, st["cache"], cache_path,
            own + shared / len(states), scales, calib.skipped if calib else (), qtarget,
            {k: int(v) for k, v in outcome.get("zero_points", {}).items()}
            if qtarget is Placement.ONNXRUNTIME else {})
    return results


def _check_target(target: Placement, *, high: Precision, int8_weights: bool,
                  import_cache: Any) -> None:
    """Refuse options that do not apply to the ONNX Runtime placement."""
    if target is not Placement.ONNXRUNTIME:
        return
    if high is not Precision.FP32:
        raise ConfigError("placement onnxruntime keeps what is not quantized in fp32 (ONNX "
                          "Runtime's CPU provider has no fast fp16 kernels): drop "
                          "high_precision=fp16, or use placement tensorrt for engines")
    if int8_weights:
        raise ConfigError("placement onnxruntime always stores the weights as INT8 initializers: "
                          "drop int8_weights")
    if import_cache is not None:
        raise ConfigError("an imported cache holds symmetric scales for the TensorRT placement; "
                          "placement onnxruntime calibrates its own (asymmetric) ranges: give "
                          "calibration images instead (its scales are cached in cache_dir)")


def _ort_version() -> str:
    try:
        from importlib.metadata import version

        return version("onnxruntime")
    except Exception:  # not installed: the worker reports it properly
        return "unknown"


def ort_int8(onnx_model_or_path: Any, calibration_data: Any, **kw: Any) -> QuantizeResult:
    """The INT8 variant for ONNX Runtime (CPU): :func:`quantize_int8` with
    ``placement="onnxruntime"``.

    For callers that run INT8 on ONNX Runtime (Triton's onnxruntime_onnx model, a bundle's CPU
    fallback): every Conv/Gemm becomes a QLinearConv/QGemm kernel.

    Args:
        onnx_model_or_path: The FP32 xception-trt model or its path.
        calibration_data: Calibration images (see :func:`quantize_int8`).
        **kw: Any other :func:`quantize_int8` option (method, num_images, exclude_nodes,
            cache_dir, output, progress ...).

    Returns:
        A :class:`QuantizeResult` whose model carries ``quant_target=onnxruntime``.
    """
    if "target" in kw or "placement" in kw:
        raise ConfigError("ort_int8 always places for onnxruntime; call quantize_int8 with "
                          "placement= for another placement")
    return quantize_int8(onnx_model_or_path, calibration_data,
                         placement=Placement.ONNXRUNTIME, **kw)


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
        **kw: Passed to :func:`quantize_int8` (exclusions, cache_dir, batch_size, progress,
            ...).

    Returns:
        An :class:`AutoQuantizeResult`.
    """
    chosen: list[CalibrationMethod] = [CalibrationMethod.parse(m) for m in methods]
    if not chosen:
        raise ConfigError("give at least one calibration method")
    model, _ = as_model(onnx_model_or_path)
    calib, val = holdout(calibration_data, val_data, num_images, seed)
    opts: dict[str, Any] = dict(
        seed=seed, batch_size=8, percentile=DEFAULT_PERCENTILE, exclude_nodes=(),
        exclude_op_types=(), exclude_depthwise=False, high_precision=Precision.FP32,
        int8_weights=None, cache_dir=DEFAULT_CACHE_DIR, import_cache=None, progress=None,
        placement=Placement.TENSORRT)
    if "target" in kw:
        kw["placement"] = renamed("target", "placement", kw.pop("target"),
                                  kw.pop("placement", None), where="auto_quantize_int8")
    unknown = sorted(set(kw) - set(opts))
    if unknown:
        raise ConfigError(f"unknown option(s) for auto calibration: {', '.join(unknown)}")
    opts.update(kw)
    results = _quantize_int8_methods(model, calib, chosen, num_images=num_images, **opts)
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


#: Overrides :func:`calibration_eps` (comma-separated ModelOpt names, e.g. ``cuda:0,cpu``).
CALIBRATION_EPS_ENV = "XCEPTION_TRT_CALIBRATION_EPS"


def calibration_eps() -> list[str]:
    """The execution providers ModelOpt calibrates on, fastest first.

    ``trt`` then ``cuda:0`` when this onnxruntime build has the TensorRT / CUDA execution
    providers and a GPU is present, always ending with ``cpu``; ``$XCEPTION_TRT_CALIBRATION_EPS``
    overrides the choice. The GPU providers follow ModelOpt's documented ``calibration_eps``
    names; only the CPU path is tested here (no GPU onnxruntime build on the CI machines).
    """
    env = os.environ.get(CALIBRATION_EPS_ENV, "").strip()
    if env:
        return [e.strip() for e in env.split(",") if e.strip()]
    try:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
    except ImportError:  # the worker reports a missing onnxruntime properly
        return ["cpu"]
    eps = []
    if available & {"TensorrtExecutionProvider", "CUDAExecutionProvider"}:
        from ..sysinfo import devices

        if devices().gpus:
            if "TensorrtExecutionProvider" in available:
                eps.append("trt")
            if "CUDAExecutionProvider" in available:
                eps.append("cuda:0")
    return eps + ["cpu"]
