"""Accuracy measurement over any :class:`~xception_trt.runners.Runner`.

Top-1, top-5, per-class accuracy over a labelled folder or file list, and agreement with a
reference runner (top-1 agreement, max/mean absolute logit difference, KL divergence of the
softmax). Every runner is fed in one pass over the data: images are decoded and preprocessed
once; uint8 and float runners both get the same decoded pixels.

Nothing here prints: the loop takes a ``progress(n)`` callback. A runner that fails midway does
not abort the others: its result keeps what was measured and the reason it stopped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..classifier import softmax
from ..config import InputFormat, ModelSpec, Precision
from ..contract import Runner
from ..errors import BenchError, DataError
from ..jsonable import JsonMixin, json_field
from ._common import Progress, _error_text, _fixed_batch, _noop, unique_names

__all__ = ["AccuracyResult", "AgreementResult", "RunnerEvaluation", "EvalResult", "evaluate",
           "label_mapping"]

log = logging.getLogger(__name__)


@dataclass
class AccuracyResult(JsonMixin):
    """Accuracy of one runner against the data set's labels.

    Attributes:
        images: Images evaluated.
        top1: Fraction whose most probable class is the label.
        top5: Fraction whose label is among the ``k`` most probable classes.
        k: The ``k`` of ``top5`` (5, or the number of classes when smaller).
        per_class: Class name -> ``{"images": n, "top1": fraction}``.
    """

    images: int
    top1: float
    top5: float
    k: int
    per_class: dict[str, dict[str, float | None]]


@dataclass
class AgreementResult(JsonMixin):
    """How closely one runner follows the reference runner on the same images.

    Attributes:
        reference: The reference runner's name.
        images: Images compared.
        top1_agreement: Fraction where both pick the same class.
        max_abs_logit_diff: Largest absolute logit difference.
        mean_abs_logit_diff: Mean absolute logit difference over all logits.
        kl_mean: Mean KL(softmax(reference) || softmax(runner)), in nats.
        kl_max: Largest per-image KL, in nats.
    """

    reference: str
    images: int
    top1_agreement: float
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    kl_mean: float
    kl_max: float


@dataclass
class RunnerEvaluation(JsonMixin):
    """Evaluation of one runner: accuracy, agreement with the reference, failure if any."""

    name: str
    description: dict[str, Any]
    accuracy: AccuracyResult | None = None
    agreement: AgreementResult | None = None
    seconds: float = json_field(default=0.0, round=3)
    error: str | None = None


@dataclass
class EvalResult(JsonMixin):
    """One pass of several runners over a labelled data set."""

    dataset: dict[str, Any]
    reference: str | None
    runners: list[RunnerEvaluation]
    failures: list[tuple[str, str]] = json_field(
        default_factory=list, encode=lambda fs: [{"path": p, "reason": r} for p, r in fs])




def label_mapping(class_names: Sequence[str], spec: ModelSpec) -> tuple[np.ndarray, str]:
    """Map data-set label indices to model logit indices.

    By class name when every data-set class is a model class name; by ImageNet WordNet id for
    1000-class models when folders are named ``n01440764`` ...; else by index (sorted folder
    order), which needs no more data-set classes than the model has.

    Returns:
        ``(mapping, how)`` with ``mapping[dataset_label] = logit_index`` and ``how`` one of
        ``name``, ``wnid``, ``index``.

    Raises:
        DataError: More data-set classes than model classes and no name match.
    """
    names = list(class_names)
    model_names = list(spec.class_names())
    lookup = {n: i for i, n in enumerate(model_names)}
    if names and all(n in lookup for n in names):
        return np.array([lookup[n] for n in names], dtype=np.int64), "name"
    if spec.num_classes == 1000:
        from ..labels import imagenet_wnids

        wn = {w: i for i, w in enumerate(imagenet_wnids())}
        if names and all(n in wn for n in names):
            return np.array([wn[n] for n in names], dtype=np.int64), "wnid"
    if len(names) > spec.num_classes:
        raise DataError(f"the data set has {len(names)} classes but the model only "
                        f"{spec.num_classes}, and the class folder names do not match the "
                        "model's labels; name the folders after the model's classes")
    log.warning("data-set class names do not match the model's labels; mapping by index "
                "(sorted folder order = logit order)")
    return np.arange(len(names), dtype=np.int64), "index"


def _preprocess_key(spec: ModelSpec) -> tuple:
    return (spec.input_size, spec.in_chans, spec.resize_size, spec.interpolation,
            spec.mean, spec.std)


def _run_chunked(runner: Runner, x: np.ndarray) -> np.ndarray:
    """Run ``x`` in chunks the runner accepts (padding the last chunk of a fixed batch)."""
    n = x.shape[0]
    fixed = _fixed_batch(runner)
    step = fixed or runner.max_batch or n
    outs = []
    for start in range(0, n, step):
        chunk = x[start:start + step]
        real = chunk.shape[0]
        if fixed and real < fixed:
            pad = np.repeat(chunk[-1:], fixed - real, axis=0)
            chunk = np.concatenate([chunk, pad])
        outs.append(runner(np.ascontiguousarray(chunk))[:real])
    return np.concatenate(outs)


class _Accumulator:
    def __init__(self, n_classes_data: int, k: int) -> None:
        self.k = k
        self.images = 0
        self.top1 = 0
        self.topk = 0
        self.cls_total = np.zeros(n_classes_data, dtype=np.int64)
        self.cls_top1 = np.zeros(n_classes_data, dtype=np.int64)
        # agreement
        self.agree_images = 0
        self.agree_top1 = 0
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.n_logits = 0
        self.kl_sum = 0.0
        self.kl_max = 0.0

    def add(self, logits: np.ndarray, labels: np.ndarray, target: np.ndarray) -> None:
        pred = logits.argmax(axis=1)
        kth = np.argsort(-logits, axis=1, kind="stable")[:, :self.k]
        hit1 = pred == target
        hitk = (kth == target[:, None]).any(axis=1)
        self.images += len(labels)
        self.top1 += int(hit1.sum())
        self.topk += int(hitk.sum())
        np.add.at(self.cls_total, labels, 1)
        np.add.at(self.cls_top1, labels, hit1.astype(np.int64))

    def add_agreement(self, logits: np.ndarray, ref: np.ndarray) -> None:
        diff = np.abs(logits.astype(np.float64) - ref.astype(np.float64))
        self.agree_images += len(logits)
        self.agree_top1 += int((logits.argmax(1) == ref.argmax(1)).sum())
        finite = np.isfinite(diff)
        self.max_abs = float(max(self.max_abs, diff.max() if finite.all() else math.inf))
        self.sum_abs += float(diff.sum()) if finite.all() else math.inf
        self.n_logits += diff.size
        p = softmax(ref)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = (p * (np.log(np.clip(p, 1e-300, None))
                       - np.log(np.clip(softmax(logits), 1e-300, None)))).sum(axis=1)
        kl = np.where(np.isfinite(kl), np.maximum(kl, 0.0), math.inf)
        self.kl_sum += float(kl.sum())
        self.kl_max = float(max(self.kl_max, kl.max()))


def evaluate(runners: Sequence[Runner], data: Any, *, names: Sequence[str] | None = None,
             reference: int | None = None, batch_size: int = 32, limit: int | None = None,
             seed: int = 0, workers: int | None = None,
             progress: Progress | None = None, require_labels: bool = True) -> EvalResult:
    """Accuracy of several runners in one pass over a labelled data set.

    Each image is decoded and preprocessed once; ``uint8-nhwc`` runners get the pixels and
    ``float-nchw`` runners the normalised tensor made from the same pixels.

    Args:
        runners: Open runners sharing one preprocessing (input size, resize, mean/std).
        data: A labelled folder, file list or :class:`~xception_trt.data.Dataset`.
        names: Display names (default: the runners' names, made unique).
        reference: Index in ``runners`` of the reference for agreement (default: the first
            FP32 runner, else the first runner).
        batch_size: Images decoded per step (runners are called in chunks they accept).
        limit: Evaluate a deterministic subset of this many images.
        seed: Seed of that subset.
        workers: Decode threads.
        progress: Called with the number of images after each step.
        require_labels: ``False`` also accepts unlabelled data, on which only the agreement
            with the reference is measured (every ``accuracy`` is ``None``).

    Returns:
        An :class:`EvalResult`. A runner that fails midway keeps the accuracy of the images it
        processed and the reason it stopped.

    Raises:
        DataError: Empty data, unlabelled data (unless ``require_labels=False``), labels the
            model cannot have.
        BenchError: No runners, bad reference, or runners with different preprocessing.
    """
    from ..data import BatchLoader, open_dataset
    from ..preprocess import normalize

    runners = list(runners)
    if not runners:
        raise BenchError("no runners to evaluate; give at least one model")
    names = unique_names([r.name for r in runners]) if names is None else list(names)
    if len(names) != len(runners) or len(set(names)) != len(names):
        raise BenchError(f"runner names must be unique, one per runner: {names}")
    keys = {_preprocess_key(r.spec) for r in runners}
    if len(keys) > 1:
        details = "; ".join(f"{n}: {r.spec.input_size}px resize {r.spec.resize_size} "
                            f"{r.spec.interpolation.value}" for n, r in zip(names, runners))
        raise BenchError(f"the runners preprocess images differently ({details}); evaluate "
                         "them in separate runs")
    n_classes = {r.spec.num_classes for r in runners}
    if len(n_classes) > 1:
        raise BenchError(f"the runners have different class counts {sorted(n_classes)}; "
                         "compare models of the same task")
    if reference is None:
        reference = next((i for i, r in enumerate(runners) if r.precision is Precision.FP32), 0)
    if not 0 <= reference < len(runners):
        raise BenchError(f"reference index {reference} is out of range (0..{len(runners) - 1})")
    ds = open_dataset(data)
    if not len(ds):
        raise DataError(f"the data set {data} is empty")
    if not ds.labelled and require_labels:
        raise DataError(f"{data} has no labels; evaluation needs a labelled folder (one "
                        "sub-folder per class) or a file list with labels")
    ds = ds.select(limit, seed=seed)
    spec = runners[0].spec
    mapping, how = label_mapping(ds.class_names, spec) if ds.labelled else (None, None)
    k = min(5, spec.num_classes)
    accs = [_Accumulator(len(ds.class_names), k) for _ in runners]
    errors: list[str | None] = [None] * len(runners)
    seconds = [0.0] * len(runners)
    done = [0] * len(runners)  # images each runner answered (labelled or not)
    progress = progress or _noop
    loader = BatchLoader(ds, spec, batch_size=batch_size, input_format=InputFormat.UINT8_NHWC,
                         workers=workers)
    for batch in loader:
        pixels, labels = batch.data, batch.labels
        if mapping is not None and labels is None:  # a labelled set's batches have labels
            raise DataError(f"{data}: a batch came without labels")
        target = None if mapping is None or labels is None else mapping[labels]
        floats: np.ndarray | None = None
        outputs: list[np.ndarray | None] = [None] * len(runners)
        order = [reference] + [i for i in range(len(runners)) if i != reference]
        for i in order:
            if errors[i] is not None:
                continue
            r = runners[i]
            if r.input_format is InputFormat.UINT8_NHWC:
                x = pixels
            else:
                if floats is None:
                    floats = normalize(pixels, spec)
                x = floats
            t0 = time.perf_counter()
            try:
                out = _run_chunked(r, x)
            except Exception as exc:  # noqa: BLE001 - recorded; the other runners go on
                errors[i] = f"stopped after {done[i]} images: {_error_text(exc)}"
                log.warning("%s: %s", names[i], errors[i])
                continue
            seconds[i] += time.perf_counter() - t0
            outputs[i] = out
            done[i] += len(out)
            if target is not None and labels is not None:
                accs[i].add(out, labels, target)
            ref_out = outputs[reference]
            if i != reference and ref_out is not None:
                accs[i].add_agreement(out, ref_out)
        progress(len(pixels))
    results = []
    for i, (r, acc) in enumerate(zip(runners, accs)):
        try:
            desc = r.describe()
        except Exception as exc:  # noqa: BLE001
            desc = {"describe_error": _error_text(exc)}
        ev = RunnerEvaluation(names[i], desc, seconds=seconds[i], error=errors[i])
        if acc.images:
            per_class = {}
            for c, cname in enumerate(ds.class_names):
                tot = int(acc.cls_total[c])
                per_class[cname] = {"images": tot,
                                    "top1": float(acc.cls_top1[c] / tot) if tot else None}
            ev.accuracy = AccuracyResult(acc.images, acc.top1 / acc.images,
                                         acc.topk / acc.images, k, per_class)
        if i != reference and acc.agree_images:
            ev.agreement = AgreementResult(
                names[reference], acc.agree_images, acc.agree_top1 / acc.agree_images,
                acc.max_abs, acc.sum_abs / acc.n_logits, acc.kl_sum / acc.agree_images,
                acc.kl_max)
        results.append(ev)
    from ..data import Dataset

    source = data.root if isinstance(data, Dataset) else data
    dataset = {"source": str(source),
               "images": len(ds), "classes": len(ds.class_names),
               "class_names": list(ds.class_names), "label_mapping": how,
               "unreadable": len(loader.failures), "limit": limit, "seed": seed,
               "fingerprint": ds.fingerprint()}
    return EvalResult(dataset, names[reference], results,
                      [(str(p), why) for p, why in loader.failures])
