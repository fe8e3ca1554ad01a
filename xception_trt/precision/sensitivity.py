"""Per-node INT8 sensitivity: how far the logits move from FP32 when only one Conv/Gemm runs
in INT8.

One ModelOpt calibration gives the full Q/DQ graph (FP32 weights + Q/DQ pairs, see
:mod:`.int8`); every single-node graph is cut from it by rewiring the other nodes' inputs
around their Q/DQ pairs (:func:`strip_qdq`), so the scales are calibrated once and each node is
measured with exactly the scales the shipped INT8 model uses. Each graph is run with ONNX
Runtime on the CPU (basic graph optimizations only: sessions are created once per node and
their creation time dominates on small models) over the same decoded validation images.

Why "only this node quantized" rather than "only this node kept in high precision": the
reference is then plain FP32, so each row measures one node's own error (KL from FP32 is
additive-ish for small errors); removing one node from a fully quantized graph measures a
difference of two noisy quantities, which drowns when plain INT8 already disagrees with FP32
on most images (the full-size random-weights model agrees on ~38%).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..bench import label_mapping
from ..config import check_int
from ..errors import BenchError, CalibrationError, ConfigError, renamed
from ..extras import needs
from ..jsonable import JsonMixin, json_field, reorder
from ..onnx_meta import INPUT_NAME
from .int8 import DEFAULT_NUM_IMAGES, CalibrationMethod, QuantizeResult, quantize_int8
from .launcher import Progress
from .source import as_model, check_source

__all__ = ["NodeSensitivity", "SensitivityResult", "EvalImages", "module_name",
           "quantized_nodes", "strip_qdq", "load_images", "Scorer", "rank_nodes",
           "sensitivity", "plot_sensitivity", "DEFAULT_VAL_IMAGES"]

log = logging.getLogger(__name__)

#: Validation images per sensitivity run: enough for KL to rank nodes, few enough that one
#: session per node stays practical on 2 CPU cores for the full 299x299 model.
DEFAULT_VAL_IMAGES = 16
#: Ops whose inputs a node's INT8 consists of.
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_OUTPUT_SUFFIX = re.compile(r"/[A-Za-z]+(?:_\d+)?_output_\d+$")


@dataclasses.dataclass(frozen=True)
class NodeSensitivity(JsonMixin):
    """How one variant's logits differ from FP32 on the evaluation images.

    Attributes:
        node: ONNX node name (``Conv_12``), or a variant name for summary rows.
        op_type: Its op type.
        module: The PyTorch module it was exported from (``block4.rep.1.conv1``), when the
            exporter recorded it in the output tensor name; else ``None``.
        agreement: Top-1 agreement with FP32 (fraction).
        kl_mean: Mean KL(softmax(FP32) || softmax(variant)), nats.
        max_abs_diff: Largest |logit difference|.
        mean_abs_diff: Mean |logit difference|.
        top1: Top-1 accuracy (fraction) on labelled images, else ``None``.
    """

    node: str
    op_type: str
    module: str | None
    agreement: float
    kl_mean: float
    max_abs_diff: float
    mean_abs_diff: float
    top1: float | None = None


@dataclasses.dataclass(frozen=True)
class SensitivityResult(JsonMixin):
    """A ranked sensitivity table (most sensitive node first).

    Attributes:
        rows: One row per quantized node (Conv/Gemm, and the residual adds and pooling whose
            inputs the placement quantizes), ranked by KL (ties: lower agreement first).
        fp32_top1: FP32 top-1 on the images (labelled data), else ``None``.
        full_int8: The fully quantized graph's row (every node in INT8).
        images: Evaluation images.
        method: Calibration method of the scales.
        seconds: Wall time of the ranking (sessions + inference), calibration excluded.
        calibration: The calibration run's summary (``cache`` says whether it was reused).
    """

    rows: tuple[NodeSensitivity, ...] = json_field(key="ranking")
    fp32_top1: float | None = json_field()
    full_int8: NodeSensitivity = json_field()
    images: int = json_field()
    method: str = json_field()
    seconds: float = json_field(round=3)
    calibration: dict[str, Any] = dataclasses.field(default_factory=dict)

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        out["ranking"] = [dict(r, rank=i + 1) for i, r in enumerate(out["ranking"])]
        out["seconds_per_node"] = round(self.seconds / max(1, len(self.rows)), 3)
        return reorder(out, "method", "images", "fp32_top1", "seconds", "seconds_per_node",
                       "full_int8", "ranking")

    def to_markdown(self) -> str:
        """The ranked table as Markdown."""
        lines = [f"INT8 sensitivity ({self.method} scales, {self.images} images; one node "
                 "quantized at a time, the rest FP32)", "",
                 "| rank | node | module | op | agreement % | KL (nats) | max abs dlogit |"
                 + (" top-1 % |" if self.fp32_top1 is not None else ""),
                 "|---:|---|---|---|---:|---:|---:|"
                 + ("---:|" if self.fp32_top1 is not None else "")]
        shown = [(str(i + 1), r) for i, r in enumerate(self.rows)]
        shown.append(("all", self.full_int8))
        for rank, r in shown:
            top1 = f" {100 * r.top1:.2f} |" if r.top1 is not None else ""
            lines.append(f"| {rank} | {r.node} | {r.module or '-'} | {r.op_type} | "
                         f"{100 * r.agreement:.2f} | {r.kl_mean:.3g} | {r.max_abs_diff:.3g} |"
                         + top1)
        if self.fp32_top1 is not None:
            lines += ["", f"FP32 top-1 on these images: {100 * self.fp32_top1:.2f}%"]
        lines += ["", f"{len(self.rows)} node(s) in {self.seconds:.1f} s "
                  f"({self.seconds / max(1, len(self.rows)):.2f} s per node)"]
        return "\n".join(lines) + "\n"


def module_name(tensor_name: str) -> str | None:
    """The PyTorch module a node came from, read from its output tensor's name.

    The TorchScript exporter names outputs by module scope
    (``/block1/rep/rep.0/conv1/Conv_output_0`` -> ``block1.rep.0.conv1``); other names (the
    dynamo exporter's, our own) give ``None``.
    """
    if not tensor_name.startswith("/") or not _OUTPUT_SUFFIX.search(tensor_name):
        return None
    parts = [p for p in _OUTPUT_SUFFIX.sub("", tensor_name).split("/") if p]
    path: list[str] = []
    for part in parts:
        # A child of a container is scoped as ``rep/rep.0``: the second names the first again.
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path) or None


def _qdq_source(producers: dict[str, Any], tensor: str) -> str | None:
    """The tensor a ``Q -> DQ`` pair ending in ``tensor`` quantizes, else ``None``."""
    dq = producers.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = producers.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return None  # INT8 weights stored without a Q node: nothing to go back to
    return str(q.input[0])


def quantized_nodes(qdq_model: Any) -> list[str]:
    """The nodes of a Q/DQ graph that read a tensor through a Q/DQ pair (Conv/Gemm and the
    placement's residual adds and pooling), in graph order."""
    producers = {o: n for n in qdq_model.graph.node for o in n.output}
    return [n.name for n in qdq_model.graph.node
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(_qdq_source(producers, t) is not None for t in n.input)]


def strip_qdq(qdq_model: Any, *, nodes: Collection[str]) -> Any:
    """A copy of a Q/DQ graph where ``nodes`` read their inputs before quantization.

    Each named node's inputs that come through a ``QuantizeLinear -> DequantizeLinear`` pair
    are rewired to the pair's input (activation and FP32 weight alike); Q/DQ pairs no other
    node reads any more are removed with their scales. Other consumers of a shared pair keep
    it.

    Args:
        qdq_model: A Q/DQ ``onnx.ModelProto`` with FP32 weights (not ``int8_weights``).
        nodes: Names of the nodes to run in high precision.

    Returns:
        A new ``onnx.ModelProto`` (the input is not changed).

    Raises:
        GraphError: A name that is not a node of the graph.
    """
    import onnx

    from ..errors import GraphError

    names = {n.name for n in qdq_model.graph.node}
    unknown = sorted(set(nodes) - names)
    if unknown:
        raise GraphError(f"node(s) {', '.join(unknown[:5])} are not in this graph")
    out = onnx.ModelProto()
    out.CopyFrom(qdq_model)
    graph = out.graph
    producers = {o: n for n in graph.node for o in n.output}
    wanted = set(nodes)
    for node in graph.node:
        if node.name not in wanted:
            continue
        for i, tensor in enumerate(node.input):
            src = _qdq_source(producers, tensor)
            if src is not None:
                node.input[i] = src
    # Drop what nothing reads any more (the Q/DQ pairs just bypassed), then their constants.
    outputs = {o.name for o in graph.output}
    while True:
        read = outputs | {t for n in graph.node for t in n.input}
        dead = [i for i, n in enumerate(graph.node)
                if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            break
        for i in reversed(dead):
            del graph.node[i]
    read = {t for n in graph.node for t in n.input} | outputs
    keep = [init for init in graph.initializer if init.name in read]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return out


@dataclasses.dataclass(frozen=True)
class EvalImages:
    """Decoded evaluation images in the graph's input format, with labels as logit indices
    (``None`` for unlabelled data) and the data set they came from."""

    x: np.ndarray
    labels: np.ndarray | None
    dataset: Any

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: np.ndarray, dataset: Any) -> "EvalImages":
        """The images at ``index`` (with the matching data set)."""
        return EvalImages(self.x[index], None if self.labels is None else self.labels[index],
                          dataset)


def load_images(data: Any, meta: Any, *, num_images: int | None, seed: int) -> EvalImages:
    """Decode a seeded selection of ``data`` in the graph's input format.

    Raises:
        BenchError: No readable image, or data-set classes that do not map to the model's.
    """
    from ..data import BatchLoader, Dataset, open_dataset
    from ..errors import DataError

    try:
        ds = data if isinstance(data, Dataset) else open_dataset(data)
        ds = ds.select(num_images, seed=seed)
        mapping = label_mapping(ds.class_names, meta.spec)[0] if ds.labelled else None
        loader = BatchLoader(ds, meta.spec, batch_size=16, input_format=meta.input_format,
                             on_error="skip")
        batches = list(loader)
    except DataError as exc:
        raise BenchError(f"validation images: {exc}") from None
    if not batches:
        raise BenchError(f"none of the {len(ds)} validation image(s) could be read; give a "
                         "folder of readable images")
    x = np.concatenate([b.data for b in batches])
    labels = None
    if mapping is not None:
        labels = mapping[np.concatenate([b.labels for b in batches if b.labels is not None])]
    failed = {p for p, _ in loader.failures}
    kept = tuple(r for r in ds.records if r.path not in failed)
    return EvalImages(x, labels, Dataset(kept, ds.class_names, ds.root, ds.ignored))


class Scorer:
    """Runs ONNX variants of one model over fixed images and compares them with FP32.

    Args:
        fp32_model: The FP32 reference (``onnx.ModelProto``).
        images: The images (and labels) every variant sees.
        threads: ONNX Runtime intra-op threads.
    """

    def __init__(self, fp32_model: Any, images: EvalImages, *, threads: int = 2) -> None:
        with needs("INT8 sensitivity", extra="ort"):
            import onnxruntime as ort

        self._ort = ort
        self.images = images
        self.threads = threads
        self.reference = self.logits(fp32_model)
        self.fp32_top1 = self._top1(self.reference)

    def _session(self, model: Any, *, optimize: bool = False) -> Any:
        ort = self._ort
        so = ort.SessionOptions()
        # Basic: creation stays cheap (one session per variant) and Q/DQ runs as written.
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                       else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])

    def logits(self, model: Any, *, batch: int = 16) -> np.ndarray:
        """The model's logits on the images."""
        sess = self._session(model)
        x = self.images.x
        return np.concatenate([sess.run(None, {INPUT_NAME: x[i:i + batch]})[0]
                               for i in range(0, len(x), batch)]).astype(np.float64)

    def _top1(self, logits: np.ndarray) -> float | None:
        if self.images.labels is None:
            return None
        return float((logits.argmax(1) == self.images.labels).mean())

    def compare(self, logits: np.ndarray, *, node: str, op_type: str,
                module: str | None) -> NodeSensitivity:
        """One row: ``logits`` against the FP32 reference."""
        ref = self.reference
        diff = np.abs(logits - ref)
        p = _softmax(ref)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = (p * (np.log(np.clip(p, 1e-300, None))
                       - np.log(np.clip(_softmax(logits), 1e-300, None)))).sum(axis=1)
        kl = np.where(np.isfinite(kl), np.maximum(kl, 0.0), math.inf)
        return NodeSensitivity(node, op_type, module,
                               float((logits.argmax(1) == ref.argmax(1)).mean()),
                               float(kl.mean()), float(diff.max()), float(diff.mean()),
                               self._top1(logits))

    def score(self, model: Any, *, node: str, op_type: str = "",
              module: str | None = None) -> NodeSensitivity:
        """Run ``model`` and compare it with FP32."""
        return self.compare(self.logits(model), node=node, op_type=op_type, module=module)

    def latency_ms(self, model: Any, *, iterations: int = 10) -> float:
        """Median ms per image at batch 1 (all ORT graph optimizations, as deployed)."""
        sess = self._session(model, optimize=True)
        x = self.images.x[:1]
        sess.run(None, {INPUT_NAME: x})  # warm-up
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            sess.run(None, {INPUT_NAME: x})
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def rank_nodes(qdq_model: Any, scorer: Scorer, *, nodes: Sequence[str] | None = None,
               method: str = "", progress: Progress | None = None) -> SensitivityResult:
    """Quantize one node at a time (scales from ``qdq_model``) and rank by KL from FP32.

    Args:
        qdq_model: The fully quantized Q/DQ graph (FP32 weights).
        scorer: Holds the images and the FP32 reference.
        nodes: Nodes to measure (default: every node that reads a Q/DQ pair: the Conv/Gemm
            nodes and the residual adds and pooling of the placement).
        method: Calibration method, for the table.
        progress: ``("sensitivity", done, total)`` per node.

    Returns:
        A :class:`SensitivityResult` (calibration summary empty).
    """
    t0 = time.perf_counter()
    all_nodes = quantized_nodes(qdq_model)
    candidates = list(nodes) if nodes is not None else all_nodes
    if not candidates:
        raise CalibrationError("the Q/DQ graph has no quantized node to rank")
    by_name = {n.name: n for n in qdq_model.graph.node}
    # Non-compute consumers of Q/DQ pairs (residual Add, pooling) are bypassed too: the
    # single-node graph is FP32 but for the one node.
    others = {n.name for n in qdq_model.graph.node
              if n.op_type not in ("QuantizeLinear", "DequantizeLinear")}
    full = scorer.score(qdq_model, node="int8 (all nodes)", op_type="-")
    rows = []
    for i, name in enumerate(candidates):
        if name not in all_nodes:
            raise ConfigError(f"{name} is not a quantized node of this graph")
        node = by_name[name]
        single = strip_qdq(qdq_model, nodes=others - {name})
        rows.append(scorer.score(single, node=name, op_type=node.op_type,
                                 module=module_name(node.output[0])))
        if progress is not None:
            progress("sensitivity", i + 1, len(candidates))
    rows.sort(key=lambda r: (-r.kl_mean, r.agreement, -r.max_abs_diff))
    return SensitivityResult(tuple(rows), scorer.fp32_top1, full, len(scorer.images), method,
                             time.perf_counter() - t0)


def calibrate_full(model: Any, calibration_data: Any, *, method: CalibrationMethod | str,
                   num_images: int, seed: int, batch_size: int,
                   cache_dir: str | os.PathLike[str] | None,
                   progress: Progress | None) -> QuantizeResult:
    """The fully quantized Q/DQ graph (FP32 weights and high precision: the form
    :func:`strip_qdq` can undo), through the calibration cache."""
    return quantize_int8(model, calibration_data, method=method, num_images=num_images,
                         seed=seed, batch_size=batch_size, cache_dir=cache_dir,
                         progress=progress, int8_weights=False)


def sensitivity(onnx_model_or_path: Any, calibration_data: Any, val_data: Any, *,
                method: CalibrationMethod | str = CalibrationMethod.ENTROPY,
                num_images: int = DEFAULT_NUM_IMAGES, val_images: int = DEFAULT_VAL_IMAGES,
                seed: int = 0, batch_size: int = 8, threads: int = 2,
                cache_dir: str | os.PathLike[str] | None = None,
                progress: Progress | None = None) -> SensitivityResult:
    """Rank the quantized Conv/Gemm nodes of a model by how much INT8 moves its output.

    Calibrates once (through the calibration cache), then runs one ONNX Runtime session per
    node with only that node in INT8.

    Args:
        onnx_model_or_path: The FP32 xception-trt model or its path.
        calibration_data: Calibration images (see :func:`~.int8.quantize_int8`).
        val_data: Validation images (folder, file list or Dataset).
        method: Calibration method of the scales.
        num_images: Calibration images.
        val_images: Validation images to measure on (seeded subset).
        seed: Selection seed.
        batch_size: Calibration batch size.
        threads: ONNX Runtime intra-op threads.
        cache_dir: Calibration cache folder (``None``: off).
        progress: ``(stage, done, total)`` for decode, calibration and the per-node runs.

    Returns:
        A :class:`SensitivityResult`.

    Raises:
        CalibrationError, GraphError, BenchError, ConfigError: see
        :func:`~.int8.quantize_int8`; unreadable validation images.
    """
    check_int(val_images, "val_images")
    check_int(threads, "threads")
    if val_data is None:
        raise ConfigError("sensitivity needs validation images (--val DIR)")
    model, _ = as_model(onnx_model_or_path)
    meta = check_source(model)
    qres = calibrate_full(model, calibration_data, method=method, num_images=num_images,
                          seed=seed, batch_size=batch_size, cache_dir=cache_dir,
                          progress=progress)
    images = load_images(val_data, meta, num_images=val_images, seed=seed)
    scorer = Scorer(model, images, threads=threads)
    result = rank_nodes(qres.model, scorer, method=qres.method.value, progress=progress)
    return dataclasses.replace(result, calibration=qres.summary())


def plot_sensitivity(result: SensitivityResult, output: str | os.PathLike[str] | None = None,
                     *, top: int = 40, path: str | os.PathLike[str] | None = None) -> Path:
    """A horizontal bar chart of the ``top`` most sensitive nodes (KL; agreement annotated),
    written to ``output`` (``path=`` is its old name, deprecated).

    Raises:
        DependencyError: matplotlib is missing (the ``plot`` extra).
    """
    output = renamed("path", "output", path, output, where="plot_sensitivity")
    if output is None:
        raise ConfigError("plot_sensitivity needs output=, the PNG file to write")
    from ..fsio import atomic_path

    with needs("sensitivity plots", extra="plot"):
        from matplotlib.figure import Figure

    rows = list(result.rows[:top])[::-1]
    fig = Figure(figsize=(9.0, max(3.0, 0.28 * len(rows) + 1.4)), dpi=110,
                 layout="constrained")
    ax = fig.subplots()
    labels = [f"{r.node} ({r.module})" if r.module else r.node for r in rows]
    ax.barh(range(len(rows)), [max(r.kl_mean, 1e-12) for r in rows], color="tab:green")
    for y, r in enumerate(rows):
        ax.annotate(f"{100 * r.agreement:.1f}%", (max(r.kl_mean, 1e-12), y), fontsize=7,
                    va="center", xytext=(3, 0), textcoords="offset points")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("KL(FP32 || one node INT8), nats (label: top-1 agreement)")
    ax.set_title(f"INT8 sensitivity, {result.method} scales, {result.images} images "
                 f"(all nodes INT8: KL {result.full_int8.kl_mean:.3g}, agreement "
                 f"{100 * result.full_int8.agreement:.1f}%)", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    path = Path(output)
    with atomic_path(path, error=BenchError) as tmp:
        fig.savefig(tmp, format="png")
    return path

