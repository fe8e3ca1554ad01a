"""Accuracy-targeted INT8: keep the fewest quantized nodes in FP32 that meet a target.

The validation images are split once (seeded) into a *selection* half, which ranks the nodes
(:func:`~.sensitivity.rank_nodes`) and chooses how many of the most sensitive to keep in high
precision, and a *held-out* half, which only reports the result: the images that choose the
nodes never grade the choice. The choice is a prefix of the ranking: the smallest prefix
that meets the target on the selection images, found by bisection (O(log n) evaluations; a
prefix is returned only after it was measured to meet the target). The candidates are every
node that reads a Q/DQ pair: the Conv/Gemm nodes and the residual adds and pooling of ModelOpt's
placement (with only Conv/Gemm, the Q/DQ left on the adds alone keeps the trained demo model
under 99.5% agreement). When even every candidate in high precision misses the target, the
target is refused (a guard: with every candidate kept the graph computes FP32, so in practice
this means the rewired graph does not reproduce the reference).

The choice is cached next to the calibration entries, keyed by the graph, the scales, the
validation selection and the target; a hit skips the ranking and the search.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import check_int
from ..errors import CalibrationError, ConfigError
from ..fsio import atomic_write_json
from ..graph import to_int8_weights
from ..jsonable import JsonMixin, json_field
from ..onnx_meta import read_metadata, write_metadata
from .int8 import DEFAULT_NUM_IMAGES, CalibrationMethod, QuantizeResult
from .launcher import Progress, modelopt_version
from .sensitivity import (
    EvalImages,
    NodeSensitivity,
    Scorer,
    SensitivityResult,
    calibrate_full,
    load_images,
    quantized_nodes,
    rank_nodes,
    strip_qdq,
)
from .source import as_model, check_source, graph_sha256, save_model

__all__ = ["Target", "TargetedResult", "targeted_int8", "choose_nodes", "split_images"]

log = logging.getLogger(__name__)

_CACHE_FORMAT = "xception-trt-targeted-int8"
_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Target(JsonMixin):
    """What the targeted model must reach on the images.

    Attributes:
        agreement: Minimum top-1 agreement with FP32 (fraction, e.g. 0.995), or ``None``.
        top1_drop: Maximum top-1 drop from FP32 in percentage points (labelled images), or
            ``None``.
    """

    agreement: float | None = None
    top1_drop: float | None = json_field(default=None, key="top1_drop_pp")

    def __post_init__(self) -> None:
        if (self.agreement is None) == (self.top1_drop is None):
            raise ConfigError("give one target: an agreement (e.g. 0.995) or a top-1 drop in "
                              "percentage points (e.g. 0.3)")
        if self.agreement is not None and not 0.0 < self.agreement <= 1.0:
            raise ConfigError(f"target agreement must be a fraction in (0, 1] (e.g. 0.995), "
                              f"got {self.agreement}")
        if self.top1_drop is not None and not 0.0 <= self.top1_drop < 100.0:
            raise ConfigError(f"target top-1 drop must be in [0, 100) percentage points (e.g. "
                              f"0.3), got {self.top1_drop}")

    def met(self, row: NodeSensitivity, fp32_top1: float | None) -> bool:
        """Whether a variant's row meets the target."""
        if self.agreement is not None:
            return row.agreement + 1e-12 >= self.agreement
        if row.top1 is None or fp32_top1 is None:
            raise ConfigError("a top-1 drop target needs labelled validation images (class "
                              "sub-folders); use --target-agreement for unlabelled images")
        return 100.0 * (fp32_top1 - row.top1) <= float(self.top1_drop or 0.0) + 1e-9

    def describe(self) -> str:
        """``agreement >= 99.5%`` or ``top-1 drop <= 0.3 pp``."""
        if self.agreement is not None:
            return f"agreement >= {100 * self.agreement:g}%"
        return f"top-1 drop <= {self.top1_drop:g} pp"


@dataclasses.dataclass(frozen=True)
class TargetedResult:
    """Outcome of :func:`targeted_int8`.

    Attributes:
        model: The targeted Q/DQ ``onnx.ModelProto``.
        path: Where it was written (``None`` unless ``output`` was given).
        kept: Nodes kept in high precision, most sensitive first.
        target: The target.
        cache: ``"hit"`` (the choice came from the cache), ``"miss"`` or ``"off"``.
        cache_path: The choice's cache entry (``None`` when off).
        selection: Rows measured on the selection images: fp32, int8, int8-targeted.
        heldout: The same rows on the held-out images (what the result is reported on).
        met_on_heldout: Whether the targeted model meets the target on the held-out images.
        sizes: Serialized bytes per variant (fp32, int8, int8-targeted).
        latency_ms: ONNX Runtime CPU median ms per image at batch 1 per variant.
        images: ``{"selection": n, "heldout": m}``.
        evaluations: Variants evaluated by the search (0 on a cache hit).
        ranking: The sensitivity ranking on the selection images (``None`` on a cache hit).
        calibration: Summary of the calibration run.
        seconds: Wall time (calibration excluded).
    """

    model: Any
    path: Path | None
    kept: tuple[str, ...]
    target: Target
    cache: str
    cache_path: Path | None
    selection: dict[str, NodeSensitivity]
    heldout: dict[str, NodeSensitivity]
    met_on_heldout: bool
    sizes: dict[str, int]
    latency_ms: dict[str, float]
    images: dict[str, int]
    evaluations: int
    ranking: SensitivityResult | None
    calibration: dict[str, Any]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable facts (no model)."""
        return {
            "path": str(self.path) if self.path else None, "kept_nodes": list(self.kept),
            "target": self.target.to_dict(), "cache": self.cache,
            "cache_path": str(self.cache_path) if self.cache_path else None,
            "images": self.images, "evaluations": self.evaluations,
            "selection": {k: v.to_dict() for k, v in self.selection.items()},
            "heldout": {k: v.to_dict() for k, v in self.heldout.items()},
            "met_on_heldout": self.met_on_heldout, "size_bytes": self.sizes,
            "ort_latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "ranking": self.ranking.to_dict() if self.ranking else None,
            "calibration": self.calibration, "seconds": round(self.seconds, 3)}

    def format_table(self) -> str:
        """A text table of the held-out rows with sizes and latency."""
        head = (f"{'variant':<14} {'agree%':>7} {'KL':>9} {'max|d|':>8} {'top1%':>7} "
                f"{'MiB':>7} {'ORT ms':>7}")
        lines = [f"held-out images: {self.images['heldout']} (nodes chosen on "
                 f"{self.images['selection']} other images)", head, "-" * len(head)]
        for name, row in self.heldout.items():
            top1 = "-" if row.top1 is None else f"{100 * row.top1:.2f}"
            lines.append(f"{name:<14} {100 * row.agreement:>7.2f} {row.kl_mean:>9.3g} "
                         f"{row.max_abs_diff:>8.3g} {top1:>7} "
                         f"{self.sizes[name] / 2**20:>7.2f} {self.latency_ms[name]:>7.2f}")
        return "\n".join(lines)


def split_images(images: EvalImages, *, seed: int) -> tuple[EvalImages, EvalImages]:
    """Seeded half/half split into selection and held-out images (held-out gets the odd one).

    Raises:
        CalibrationError: Fewer than 2 images.
    """
    from ..data import Dataset

    n = len(images)
    if n < 2:
        raise CalibrationError(f"targeted INT8 needs at least 2 validation images (half choose "
                               f"the nodes, half report the result); got {n}")
    order = np.random.default_rng(seed).permutation(n)
    sel, held = np.sort(order[:n // 2]), np.sort(order[n // 2:])
    ds = images.dataset
    parts = []
    for idx in (sel, held):
        sub = Dataset(tuple(ds.records[i] for i in idx), ds.class_names, ds.root, ds.ignored)
        parts.append(images.subset(idx, sub))
    return parts[0], parts[1]


def choose_nodes(ranked: Sequence[str], meets: Callable[[Sequence[str]], bool]
                 ) -> tuple[tuple[str, ...], int] | None:
    """The shortest prefix of ``ranked`` that ``meets`` accepts, by bisection.

    Args:
        ranked: Nodes, most sensitive first.
        meets: Whether keeping these nodes in high precision meets the target.

    Returns:
        ``(prefix, evaluations)``, or ``None`` when even the whole list misses the target. The
        prefix returned was measured to meet it.
    """
    evals = 1
    if meets(()):
        return (), evals
    evals += 1
    if not meets(tuple(ranked)):
        return None
    lo, hi = 0, len(ranked)  # lo misses, hi meets
    while hi - lo > 1:
        mid = (lo + hi) // 2
        evals += 1
        if meets(tuple(ranked[:mid])):
            hi = mid
        else:
            lo = mid
    return tuple(ranked[:hi]), evals


def _cache_key(gsha: str, qres: QuantizeResult, select: EvalImages, target: Target,
               seed: int) -> dict[str, Any]:
    scales = hashlib.sha256(json.dumps(dict(sorted(qres.scales.items()))).encode()).hexdigest()
    return {"graph": gsha, "scales": scales, "method": qres.method.value,
            "selection": select.dataset.fingerprint(), "seed": seed,
            "target": target.to_dict(), "modelopt": modelopt_version()}


def _read_choice(path: Path, key: dict[str, Any], candidates: set[str]) -> tuple[str, ...] | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (not isinstance(entry, dict) or entry.get("format") != _CACHE_FORMAT
            or entry.get("version") != _CACHE_VERSION or entry.get("key") != key):
        log.info("targeted INT8: no usable cached choice in %s; searching", path)
        return None
    kept = entry.get("kept_nodes")
    if not isinstance(kept, list) or not set(kept) <= candidates:
        return None
    log.info("targeted INT8: cached choice %s (%d node(s) kept)", path, len(kept))
    return tuple(kept)


def targeted_int8(onnx_model_or_path: Any, calibration_data: Any, val_data: Any, *,
                  target: Target, method: CalibrationMethod | str = CalibrationMethod.ENTROPY,
                  num_images: int = DEFAULT_NUM_IMAGES, val_images: int | None = None,
                  seed: int = 0, batch_size: int = 8, threads: int = 2,
                  cache_dir: str | os.PathLike[str] | None = None,
                  output: str | os.PathLike[str] | None = None,
                  progress: Progress | None = None) -> TargetedResult:
    """INT8 with the fewest quantized nodes in FP32 that meets ``target``.

    Args:
        onnx_model_or_path: The FP32 xception-trt model or its path.
        calibration_data: Calibration images (see :func:`~.int8.quantize_int8`).
        val_data: Validation images, split half/half (seeded) into selection and held-out.
        target: The :class:`Target`.
        method: Calibration method.
        num_images: Calibration images.
        val_images: Validation images in all (seeded subset; ``None``: all).
        seed: Selection and split seed.
        batch_size: Calibration batch size.
        threads: ONNX Runtime intra-op threads.
        cache_dir: Cache folder for the scales and the choice (``None``: off).
        output: Where to write the model (atomically).
        progress: ``(stage, done, total)`` for decode, calibration and the node runs.

    Returns:
        A :class:`TargetedResult`.

    Raises:
        ConfigError: No validation images, a top-1 target on unlabelled images.
        CalibrationError: The target is missed even with every node kept in high precision.
    """
    if val_data is None:
        raise ConfigError("an accuracy target needs validation images (--val DIR): half of "
                          "them choose the nodes kept in high precision, half report the "
                          "result")
    if val_images is not None:
        check_int(val_images, "val_images")
    t0 = time.perf_counter()
    model, _ = as_model(onnx_model_or_path)
    meta = check_source(model)
    # The images first: a top-1 target on unlabelled images is refused before calibrating.
    images = load_images(val_data, meta, num_images=val_images, seed=seed)
    if target.top1_drop is not None and images.labels is None:
        raise ConfigError("--target-top1-drop needs labelled validation images (one "
                          "sub-folder per class); use --target-agreement for unlabelled ones")
    select, held = split_images(images, seed=seed)
    qres = calibrate_full(model, calibration_data, method=method, num_images=num_images,
                          seed=seed, batch_size=batch_size, cache_dir=cache_dir,
                          progress=progress)
    t0 = time.perf_counter()
    candidates = quantized_nodes(qres.model)
    gsha = graph_sha256(model)
    key = _cache_key(gsha, qres, select, target, seed)
    key_sha = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    cache_path = (None if cache_dir is None
                  else Path(cache_dir) / f"{gsha[:16]}-targeted-{key_sha[:8]}.json")
    kept = (_read_choice(cache_path, key, set(candidates))
            if cache_path is not None and cache_path.is_file() else None)
    cache = "off" if cache_path is None else ("hit" if kept is not None else "miss")
    scorer = Scorer(model, select, threads=threads)
    ranking = None
    evaluations = 0
    if kept is None:
        ranking = rank_nodes(qres.model, scorer, method=qres.method.value, progress=progress)
        done = [0]

        def meets(nodes: Sequence[str]) -> bool:
            row = scorer.score(strip_qdq(qres.model, nodes=nodes), node="candidate")
            done[0] += 1
            if progress is not None:
                progress("choose nodes", done[0], None)
            ok = target.met(row, scorer.fp32_top1)
            log.info("targeted INT8: %d node(s) kept -> agreement %.4f, KL %.3g: %s",
                     len(nodes), row.agreement, row.kl_mean, "meets" if ok else "misses")
            return ok

        chosen = choose_nodes([r.node for r in ranking.rows], meets)
        if chosen is None:
            full = scorer.score(strip_qdq(qres.model, nodes=candidates), node="all kept")
            got = (f"agreement {100 * full.agreement:.2f}%" if target.agreement is not None
                   else f"top-1 drop {100 * ((scorer.fp32_top1 or 0) - (full.top1 or 0)):.2f} "
                        "pp")
            raise CalibrationError(
                f"the target {target.describe()} cannot be met on the {len(select)} selection "
                f"image(s) even with all {len(candidates)} quantized nodes kept in FP32 "
                f"({got}); relax the target, or use --precision fp16")
        kept, evaluations = chosen
        if cache_path is not None:
            try:
                atomic_write_json(cache_path, {
                    "format": _CACHE_FORMAT, "version": _CACHE_VERSION, "key": key,
                    "kept_nodes": list(kept), "ranking": [r.node for r in ranking.rows]},
                    error=CalibrationError)
            except (CalibrationError, OSError) as exc:
                log.warning("targeted INT8 choice not cached (%s); the result is kept", exc)
    # written like every TensorRT-placed INT8 graph: weights stored as INT8
    targeted = to_int8_weights(strip_qdq(qres.model, nodes=kept))
    _record_choice(targeted, kept, target)
    variants = {"fp32": model, "int8": to_int8_weights(qres.model), "int8-targeted": targeted}
    rows_sel = {"fp32": scorer.compare(scorer.reference, node="fp32", op_type="-", module=None)}
    rows_sel.update({k: scorer.score(v, node=k) for k, v in variants.items() if k != "fp32"})
    held_scorer = Scorer(model, held, threads=threads)
    rows_held = {k: held_scorer.score(v, node=k) for k, v in variants.items()}
    met = (target.met(rows_held["int8-targeted"], held_scorer.fp32_top1))
    sizes = {k: v.ByteSize() for k, v in variants.items()}
    latency = {k: held_scorer.latency_ms(v) for k, v in variants.items()}
    path = save_model(targeted, output) if output is not None else None
    log.info("targeted INT8: %d of %d node(s) kept in FP32; held-out %s (%s)", len(kept),
             len(candidates), "meets the target" if met else "misses the target",
             target.describe())
    return TargetedResult(targeted, path, tuple(kept), target, cache, cache_path, rows_sel,
                          rows_held, met, sizes, latency,
                          {"selection": len(select), "heldout": len(held)}, evaluations,
                          ranking, qres.summary(), time.perf_counter() - t0)


def _record_choice(model: Any, kept: Sequence[str], target: Target) -> None:
    """Add the kept nodes and the target to the model's calibration metadata."""
    calib = dict(json.loads(read_metadata(model).raw.get("calibration") or "{}"))
    calib["excluded_nodes"] = list(calib.get("excluded_nodes") or []) + list(kept)
    calib["quantized_nodes"] = int(calib.get("quantized_nodes") or 0) - len(kept)
    calib["targeted"] = {"kept_nodes": list(kept), "target": target.to_dict()}
    write_metadata(model, {"calibration": calib})
