# Over 600 lines on purpose: latency and accuracy measurement share the runner handling, input
# making and result types; the accuracy half is the candidate to move out next.
"""Latency, accuracy and memory measurement over any :class:`~xception_trt.runners.Runner`.

- Latency: warm-up, N timed iterations per batch size, median/mean/p90/p99/min/max/std and
  throughput. End-to-end time is host wall time with a monotonic clock (``perf_counter_ns``)
  around the whole call (for GPU runners: copies in and out, launch, synchronisation). When a
  runner exposes ``last_gpu_time_ms`` (CUDA events around its compute), that GPU time is
  reported next to it.
- Accuracy: top-1, top-5, per-class accuracy over a labelled folder or file list, and agreement
  with a reference runner (top-1 agreement, max/mean absolute logit difference, KL divergence
  of the softmax). Every runner is fed in one pass over the data: images are decoded and
  preprocessed once; uint8 and float runners both get the same decoded pixels.
- Memory: host RSS sampled during the run (psutil) and device memory where a runner reports it.
- Power: with a :class:`~xception_trt.power.PowerMonitor`, a background thread samples the
  Jetson rails or NVML during each timed loop: mean power per rail and in total, energy per
  image, or the reason there is none.

Nothing here prints: long loops take a ``progress(n)`` callback. A runner that fails midway does
not abort the others: its result keeps what was measured and the reason it stopped.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .classifier import softmax
from .config import InputFormat, ModelSpec, Precision
from .contract import Runner
from .errors import BenchError, ConfigError, DataError
from .host import available_memory_bytes
from .jsonable import JsonMixin, json_field, reorder
from .power import PowerMonitor
from .runners import open_runner

__all__ = ["BenchConfig", "LatencyStats", "LatencyResult", "RunnerBenchmark", "MemorySampler",
           "make_input", "measure_latency", "benchmark_runner", "AccuracyResult",
           "AgreementResult", "RunnerEvaluation", "EvalResult", "evaluate", "unique_names",
           "label_mapping", "load_pixels"]

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


def _noop(_: int = 1) -> None:
    return None


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class BenchConfig(JsonMixin):
    """How to measure latency.

    Attributes:
        batch_sizes: Batch sizes of the sweep (images per call), each >= 1.
        iterations: Timed calls per batch size (>= 1).
        warmup: Untimed calls before timing, per batch size (>= 0).
        seed: Seed of the random input pixels (when no data is given).
    """

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    iterations: int = 50
    warmup: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            sizes = tuple(self.batch_sizes)
        except TypeError:
            raise ConfigError(f"batch_sizes must be a list of integers, got "
                              f"{self.batch_sizes!r}") from None
        if not sizes:
            raise ConfigError("give at least one batch size")
        for b in sizes:
            if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                raise ConfigError(f"batch sizes must be integers >= 1, got {b!r}")
        if len(set(sizes)) != len(sizes):
            raise ConfigError(f"batch sizes repeat: {list(sizes)}")
        object.__setattr__(self, "batch_sizes", tuple(sorted(sizes)))
        for name, low in (("iterations", 1), ("warmup", 0), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


# ---------------------------------------------------------------------------------------------
# latency


@dataclass(frozen=True)
class LatencyStats(JsonMixin):
    """Summary of per-call times, all in milliseconds."""

    count: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> "LatencyStats":
        """Statistics of ``samples_ms`` (percentiles by linear interpolation).

        Raises:
            BenchError: No samples.
        """
        a = np.asarray(samples_ms, dtype=np.float64)
        if a.size == 0:
            raise BenchError("no timing samples to summarise")
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return cls(int(a.size), float(a.mean()), float(p50), float(p90), float(p99),
                   float(a.min()), float(a.max()), float(a.std(ddof=1)) if a.size > 1 else 0.0)


@dataclass
class LatencyResult(JsonMixin):
    """Latency of one runner at one batch size.

    Attributes:
        batch_size: Images per call.
        iterations: Timed calls asked for.
        warmup: Untimed calls made first.
        end_to_end: Host wall time per call (``None`` when no call completed).
        gpu: GPU compute time per call from CUDA events, when the runner exposes it.
        throughput_ips: Images per second, ``batch_size / mean end-to-end time``.
        clock: The clock used for ``end_to_end``.
        input_source: ``random`` pixels or ``data`` (real images).
        rss_peak_mib: Largest host RSS sampled during this batch size (MiB).
        skipped: Why this batch size was not measured (fixed/max batch), else ``None``.
        error: Why measuring stopped early, else ``None``.
        power: Power and energy over the timed calls
            (:meth:`~xception_trt.power.PowerReading.to_dict`), or why there are none;
            ``None`` when no monitor was given.
    """

    batch_size: int
    iterations: int
    warmup: int
    end_to_end: LatencyStats | None = None
    gpu: LatencyStats | None = None
    throughput_ips: float | None = None
    clock: str = "time.perf_counter_ns"
    input_source: str = "random"
    rss_peak_mib: float | None = None
    skipped: str | None = None
    error: str | None = None
    power: dict[str, Any] | None = None

    @property
    def completed(self) -> int:
        """Timed calls that completed."""
        return self.end_to_end.count if self.end_to_end else 0

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        return reorder(out | {"completed": self.completed}, "batch_size", "iterations",
                       "completed")


class MemorySampler:
    """Host RSS of this process, sampled on demand, with the peak seen (MiB).

    ``psutil`` reads the current RSS (a few microseconds); the peak is the largest sample,
    so it is a lower bound of the true peak between samples.
    """

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process(os.getpid())
        self.start_mib = self.sample()
        self.peak_mib = self.start_mib

    def sample(self) -> float:
        """Current RSS in MiB (updates :attr:`peak_mib`)."""
        mib = self._proc.memory_info().rss / 2**20
        if mib > getattr(self, "peak_mib", 0.0):
            self.peak_mib = mib
        return mib

    def reset_peak(self) -> None:
        """Start a new peak window at the current RSS."""
        self.peak_mib = self._proc.memory_info().rss / 2**20


def process_peak_rss_mib() -> float | None:
    """The kernel's record of this process's peak RSS (MiB), where available (Unix)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    except (ImportError, OSError):
        return None


def _fixed_batch(runner: Runner) -> int | None:
    first = runner.input_spec.shape[0]
    return first if first > 0 else None


def make_input(runner: Runner, batch_size: int, *, seed: int = 0,
               pixels: np.ndarray | None = None) -> np.ndarray:
    """An input batch in the runner's layout and dtype.

    Args:
        runner: The runner to feed.
        batch_size: Images in the batch.
        seed: Seed of the random pixels (when ``pixels`` is ``None``).
        pixels: Real preprocessed images, uint8 NHWC (repeated to fill the batch).

    Returns:
        uint8 NHWC for ``uint8-nhwc`` runners, normalised float32 NCHW otherwise; C-contiguous.
    """
    spec = runner.spec
    s, c = spec.input_size, spec.in_chans
    if pixels is None:
        rng = np.random.default_rng(seed)
        pix = rng.integers(0, 256, size=(batch_size, s, s, c), dtype=np.uint8)
    else:
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (s, s, c):
            raise BenchError(f"benchmark pixels must be uint8 (N, {s}, {s}, {c}); got "
                             f"{pixels.dtype} {pixels.shape}")
        reps = -(-batch_size // pixels.shape[0])
        pix = np.ascontiguousarray(np.concatenate([pixels] * reps)[:batch_size])
    if runner.input_format is InputFormat.UINT8_NHWC:
        return pix
    from .preprocess import normalize

    return normalize(pix, spec)


def _skip_reason(runner: Runner, batch_size: int) -> str | None:
    """Why ``runner`` cannot take ``batch_size`` at all (then it is skipped, not measured)."""
    fixed = _fixed_batch(runner)
    if fixed is not None and fixed != batch_size:
        return f"the model has a fixed batch of {fixed}"
    if runner.max_batch is not None and batch_size > runner.max_batch:
        return f"above the model's maximum batch {runner.max_batch}"
    return None


def batch_bytes(runner: Runner, batch_size: int) -> int:
    """Host bytes of one batch's arrays: the uint8 pixels, their float32 copy (float-nchw
    runners) and the float32 logits. A lower bound of what a call needs (the runner's own
    activations come on top)."""
    spec = runner.spec
    pixels = batch_size * spec.input_size * spec.input_size * spec.in_chans
    floats = 0 if runner.input_format is InputFormat.UINT8_NHWC else 4 * pixels
    return pixels + floats + 4 * batch_size * spec.num_classes


def check_batch_fits(runner: Runner, batch_size: int, *, available: int | None = None) -> None:
    """Refuse, before allocating anything, a batch whose arrays alone exceed free memory.

    Args:
        runner: The runner to feed.
        batch_size: Images per call.
        available: Free bytes (default: :func:`~xception_trt.host.available_memory_bytes`;
            nothing is checked when that is unknown).

    Raises:
        BenchError: The batch's input and output arrays need more than ``available``.
    """
    avail = available_memory_bytes() if available is None else available
    need = batch_bytes(runner, batch_size)
    if avail is None or need <= avail:
        return
    fits = max(1, avail // max(1, batch_bytes(runner, 1)))
    raise BenchError(f"batch {batch_size} needs at least {need / 2**30:.1f} GiB for its input "
                     f"and output arrays alone, more than the {avail / 2**30:.1f} GiB of memory "
                     f"available; use a smaller batch (well below {fits})")


def _device_memory_bytes(runner: Runner) -> int | None:
    value = getattr(runner, "device_memory_bytes", None)
    if value is None:
        try:
            value = runner.describe().get("device_memory_bytes")
        except Exception:  # describe must not break a benchmark  # noqa: BLE001
            value = None
    if value is None and runner.device.startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                value = int(torch.cuda.max_memory_allocated(runner.device))
        except Exception:  # noqa: BLE001 - no torch CUDA: device memory unknown
            value = None
    return int(value) if value is not None else None


def _power_result(power: PowerMonitor, window: Any, runner: Runner, images: int
                  ) -> dict[str, Any]:
    """The window's reading as a dict; NVML's GPU-only figure is no energy of a CPU runner."""
    if window is None:  # failed in warm-up: nothing timed, nothing sampled
        return {"available": False, "reason": "no timed call completed", "images": 0}
    out = window.stop().to_dict(images=images)
    if out["available"] and power.source is not None and power.source.scope == "gpu" \
            and not str(runner.device).startswith("cuda"):
        out["energy_per_image_mj"] = None
        out["notes"].append(f"the runner runs on {runner.device}: the GPU's power is not its "
                            "energy")
    return out


def measure_latency(runner: Runner, batch_size: int, *, iterations: int = 50, warmup: int = 5,
                    seed: int = 0, pixels: np.ndarray | None = None,
                    memory: MemorySampler | None = None,
                    progress: Progress | None = None,
                    power: PowerMonitor | None = None) -> LatencyResult:
    """Time ``iterations`` calls of ``runner`` on one batch after ``warmup`` untimed calls.

    A call that raises stops the measurement: the result keeps the completed samples and the
    reason in ``error`` (never raised).

    Args:
        runner: Any runner.
        batch_size: Images per call.
        iterations: Timed calls (>= 1).
        warmup: Untimed calls first (>= 0).
        seed: Seed of the random input (when ``pixels`` is not given).
        pixels: Real uint8 NHWC images to use as input instead of random pixels.
        memory: RSS sampler (sampled after every call).
        progress: Called with 1 after every call (warm-up included).
        power: Power monitor: samples in a background thread during the timed calls only.

    Returns:
        The :class:`LatencyResult` (``skipped`` set when the runner cannot take the batch).

    Raises:
        BenchError: The batch cannot fit in memory (see :func:`check_batch_fits`).
    """
    BenchConfig(batch_sizes=(batch_size,), iterations=iterations, warmup=warmup, seed=seed)
    progress = progress or _noop
    result = LatencyResult(batch_size, iterations, warmup,
                           input_source="random" if pixels is None else "data")
    result.skipped = _skip_reason(runner, batch_size)
    if result.skipped:
        return result
    check_batch_fits(runner, batch_size)
    x = make_input(runner, batch_size, seed=seed, pixels=pixels)
    if memory is not None:
        memory.reset_peak()
    wall: list[float] = []
    gpu: list[float] = []
    clock = time.perf_counter_ns
    window = None
    try:
        for _ in range(warmup):
            runner(x)
            progress(1)
        window = power.start() if power is not None else None
        for _ in range(iterations):
            t0 = clock()
            runner(x)
            t1 = clock()
            wall.append((t1 - t0) / 1e6)
            g = getattr(runner, "last_gpu_time_ms", None)
            if g is not None:
                gpu.append(float(g))
            if memory is not None:
                memory.sample()
            progress(1)
    except Exception as exc:  # noqa: BLE001 - recorded in the result, reported, not hidden
        done = len(wall)
        result.error = (f"stopped after {done} of {iterations} timed calls "
                        f"({'warm-up' if done == 0 and warmup else 'timing'}): "
                        f"{_error_text(exc)}")
        log.warning("%s batch %d: %s", runner.name, batch_size, result.error)
    except BaseException:  # Ctrl-C: end the sampler thread, then let it through
        if window is not None:
            window.stop()
        raise
    if power is not None:
        result.power = _power_result(power, window, runner, batch_size * len(wall))
    if wall:
        result.end_to_end = LatencyStats.from_samples(wall)
        result.throughput_ips = batch_size * 1000.0 / result.end_to_end.mean_ms
    if gpu and len(gpu) == len(wall):
        result.gpu = LatencyStats.from_samples(gpu)
    if memory is not None:
        result.rss_peak_mib = round(memory.peak_mib, 1)
    return result


@dataclass
class RunnerBenchmark(JsonMixin):
    """The latency sweep of one runner.

    Attributes:
        name: Display name (unique within a report).
        description: The runner's ``describe()`` (backend, provider, threads, versions ...).
        latency: One :class:`LatencyResult` per batch size.
        load_seconds: Time to open the runner (``None`` when it was passed in open).
        rss_after_load_mib: Host RSS right after opening (MiB).
        rss_load_delta_mib: RSS growth caused by opening it (MiB).
        rss_peak_mib: Largest RSS sampled while it ran (MiB).
        device_memory_bytes: Device memory it uses, where measurable.
        error: Why it could not be opened or stopped early, else ``None``.
    """

    name: str
    description: dict[str, Any] = field(default_factory=dict)
    latency: list[LatencyResult] = field(default_factory=list)
    load_seconds: float | None = None
    rss_after_load_mib: float | None = None
    rss_load_delta_mib: float | None = None
    rss_peak_mib: float | None = None
    device_memory_bytes: int | None = None
    error: str | None = None

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        # the load and memory figures are one "memory" object, before "error"
        memory = {k: out.pop(k) for k in ("load_seconds", "rss_after_load_mib",
                                          "rss_load_delta_mib", "rss_peak_mib",
                                          "device_memory_bytes")}
        return reorder(out | {"memory": memory}, "name", "description", "latency", "memory")


def benchmark_runner(model: Runner | str | os.PathLike[str], config: BenchConfig, *,
                     name: str | None = None,
                     pixels: np.ndarray | Callable[[ModelSpec], np.ndarray] | None = None,
                     runner_kw: dict[str, Any] | None = None,
                     progress: Progress | None = None,
                     power: PowerMonitor | None = None) -> RunnerBenchmark:
    """Sweep the batch sizes of ``config`` over one runner.

    Args:
        model: An open runner (left open) or a model file (opened here, with its load time and
            memory recorded, and closed at the end).
        config: Batch sizes, iterations, warm-up, seed.
        name: Display name (default: the runner's ``name``).
        pixels: Real uint8 NHWC images to feed instead of random pixels, or a function of the
            runner's :class:`ModelSpec` returning them (e.g. ``lambda s: load_pixels(dir, s)``).
        runner_kw: Options for :func:`~xception_trt.runners.open_runner`.
        progress: Called with 1 after every runner call.
        power: Power monitor sampled during each batch size's timed calls (left open).

    Returns:
        A :class:`RunnerBenchmark`. Failures (opening, or a call midway) are recorded in it,
        not raised; the sweep stops at the first batch size that fails.

    Raises:
        BenchError: A batch size of the sweep cannot fit in memory (checked before measuring).
    """
    mem = MemorySampler()
    result = RunnerBenchmark(name=name or (model.name if not isinstance(model, (str, os.PathLike))
                                           else Path(model).name))
    owned = isinstance(model, (str, os.PathLike))
    if owned:
        before = mem.sample()
        t0 = time.perf_counter()
        try:
            runner: Runner = open_runner(model, **(runner_kw or {}))
        except Exception as exc:  # noqa: BLE001 - recorded: other models still run
            result.error = f"could not open {model}: {_error_text(exc)}"
            log.warning("%s", result.error)
            return result
        result.load_seconds = round(time.perf_counter() - t0, 3)
        after = mem.sample()
        result.rss_after_load_mib = round(after, 1)
        result.rss_load_delta_mib = round(after - before, 1)
        if name is None:
            result.name = runner.name
    else:
        runner = model  # type: ignore[assignment]
        result.rss_after_load_mib = round(mem.sample(), 1)
    try:
        result.description = runner.describe()
        for b in config.batch_sizes:  # refuse an impossible sweep before measuring any of it
            if _skip_reason(runner, b) is None:
                check_batch_fits(runner, b)
        if callable(pixels):
            pixels = pixels(runner.spec)
        peak = mem.sample()
        for b in config.batch_sizes:
            lat = measure_latency(runner, b, iterations=config.iterations, warmup=config.warmup,
                                  seed=config.seed, pixels=pixels, memory=mem, progress=progress,
                                  power=power)
            result.latency.append(lat)
            if lat.rss_peak_mib is not None:
                peak = max(peak, lat.rss_peak_mib)
            if lat.error:
                result.error = f"batch {b}: {lat.error}"
                break
        result.rss_peak_mib = round(peak, 1)
        result.device_memory_bytes = _device_memory_bytes(runner)
    finally:
        if owned:
            runner.close()
    return result


def unique_names(names: Sequence[str], paths: Sequence[Any] | None = None) -> list[str]:
    """Make display names unique: a repeated name gets its file name (or ``#i``) appended."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    out, seen = [], set()
    for i, n in enumerate(names):
        label = n
        if counts[n] > 1:
            label = f"{n} ({Path(paths[i]).name})" if paths is not None else f"{n} #{i + 1}"
        base, k = label, 2
        while label in seen:
            label, k = f"{base} #{k}", k + 1
        seen.add(label)
        out.append(label)
    return out


# ---------------------------------------------------------------------------------------------
# accuracy


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
    per_class: dict[str, dict[str, float]]


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
        from .labels import imagenet_wnids

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


def load_pixels(data: Any, spec: ModelSpec, *, limit: int = 8) -> np.ndarray:
    """The first ``limit`` images of a folder/file list as uint8 NHWC pixels (for benchmark
    inputs). Unreadable images are skipped (logged by the loader).

    Raises:
        DataError: No readable image.
    """
    from .data import BatchLoader, open_dataset

    ds = open_dataset(data).select(limit)
    loader = BatchLoader(ds, spec, batch_size=limit, input_format=InputFormat.UINT8_NHWC)
    batches = [b.data for b in loader]
    if not batches:
        raise DataError(f"no readable images in {data}")
    return np.concatenate(batches)


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
    from .data import BatchLoader, open_dataset
    from .preprocess import normalize

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
            if target is not None:
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
    from .data import Dataset

    source = data.root if isinstance(data, Dataset) else data
    dataset = {"source": str(source),
               "images": len(ds), "classes": len(ds.class_names),
               "class_names": list(ds.class_names), "label_mapping": how,
               "unreadable": len(loader.failures), "limit": limit, "seed": seed,
               "fingerprint": ds.fingerprint()}
    return EvalResult(dataset, names[reference], results,
                      [(str(p), why) for p, why in loader.failures])
