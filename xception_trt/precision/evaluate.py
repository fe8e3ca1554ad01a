"""Accuracy of precision variants on the CPU, as table rows: :func:`xception_trt.bench.evaluate`
over ONNX Runtime runners, one row per variant, and the text table the ``quantize`` command
prints."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..bench import RunnerEvaluation, evaluate
from ..errors import BenchError
from ..jsonable import JsonMixin
from ..runners import OnnxRuntimeRunner
from .launcher import worker_tempdir
from .source import save_model

__all__ = ["VariantMetrics", "evaluate_variants", "format_table"]


@dataclasses.dataclass(frozen=True)
class VariantMetrics(JsonMixin):
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


def _row(ev: RunnerEvaluation, *, precision: str, images: int, size_bytes: int,
         is_reference: bool) -> VariantMetrics:
    """One :func:`~xception_trt.bench.evaluate` result as a table row (fractions as percent;
    the reference agrees with itself)."""
    acc, agr = ev.accuracy, ev.agreement
    if is_reference:
        agreement, max_diff, mean_diff = 100.0, 0.0, 0.0
    elif agr is not None:
        agreement = agr.top1_agreement * 100
        max_diff, mean_diff = agr.max_abs_logit_diff, agr.mean_abs_logit_diff
    else:  # only when the reference answered nothing, which the caller rules out
        raise BenchError(f"{ev.name}: no agreement with the reference was measured")
    return VariantMetrics(
        ev.name, precision, images, acc.top1 * 100 if acc else None,
        acc.top5 * 100 if acc and acc.k >= 5 else None, agreement, max_diff, mean_diff,
        size_bytes)


def evaluate_variants(variants: Mapping[str, Any], data: Any, *, reference: str = "fp32",
                      num_images: int | None = None, seed: int = 0, batch_size: int = 16,
                      threads: int | None = None) -> list[VariantMetrics]:
    """Accuracy of several ONNX variants of one model with ONNX Runtime on the CPU.

    One :func:`xception_trt.bench.evaluate` pass (every variant sees the same decoded images);
    this only opens the runners and turns its results into table rows.

    Args:
        variants: Name -> ONNX path or ``onnx.ModelProto`` (same preprocessing and classes).
        data: Folder / file list / Dataset of images (labelled: top-1/top-5 are reported;
            unlabelled: only the agreement with ``reference``).
        reference: The variant the others are compared with (top-1 agreement, logit diffs).
        num_images: Evaluate a seeded subset of this many images (``None``: all).
        seed: Subset seed.
        batch_size: Images per batch.
        threads: ONNX Runtime intra-op threads (``None``: its default).

    Returns:
        One :class:`VariantMetrics` per variant, in the order given.

    Raises:
        BenchError: Unknown reference, no readable image, or a variant that failed to run.
        DataError / EngineError: Bad data, unloadable model.
    """
    if reference not in variants:
        raise BenchError(f"reference variant {reference!r} is not among {list(variants)}")
    names = list(variants)
    with worker_tempdir("eval") as tmp_name:
        paths: dict[str, Path] = {}
        for name, v in variants.items():
            if isinstance(v, (str, os.PathLike)):
                paths[name] = Path(v)
            else:
                paths[name] = Path(tmp_name) / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.onnx"
                save_model(v, paths[name])
        sizes = [paths[n].stat().st_size for n in names]
        with contextlib.ExitStack() as stack:
            runners = [stack.enter_context(OnnxRuntimeRunner(
                paths[n], providers=["CPUExecutionProvider"], threads=threads)) for n in names]
            result = evaluate(runners, data, names=names, reference=names.index(reference),
                              batch_size=batch_size, limit=num_images, seed=seed,
                              require_labels=False)
    images = result.dataset["images"] - result.dataset["unreadable"]
    if images <= 0:
        raise BenchError("no evaluation image could be read")
    for ev in result.runners:
        if ev.error is not None:
            raise BenchError(f"evaluating {ev.name} failed: {ev.error}")
    return [_row(ev, precision=r.precision.value, images=images, size_bytes=size,
                 is_reference=ev.name == reference)
            for ev, r, size in zip(result.runners, runners, sizes)]


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
