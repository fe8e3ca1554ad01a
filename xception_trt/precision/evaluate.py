"""Accuracy of precision variants with ONNX Runtime on the CPU, and its text table."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .source import save_model

__all__ = ["VariantMetrics", "evaluate_variants", "format_table"]


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
    from ..data import BatchLoader, open_dataset
    from ..errors import BenchError
    from ..runners import OnnxRuntimeRunner

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
