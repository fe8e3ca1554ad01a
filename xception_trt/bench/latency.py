"""Latency and memory measurement over any :class:`~xception_trt.runners.Runner`.

- Latency: warm-up, N timed iterations per batch size, median/mean/p90/p99/min/max/std and
  throughput. End-to-end time is host wall time with a monotonic clock (``perf_counter_ns``)
  around the whole call (for GPU runners: copies in and out, launch, synchronisation). When a
  runner exposes ``last_gpu_time_ms`` (CUDA events around its compute), that GPU time is
  reported next to it.
- Memory: host RSS sampled during the run (psutil) and device memory where a runner reports it.
- Power: with a :class:`~xception_trt.power.PowerMonitor`, a background thread samples the
  Jetson rails or NVML during each timed loop: mean power per rail and in total, energy per
  image, or the reason there is none.

Nothing here prints: long loops take a ``progress(n)`` callback. A runner that fails midway does
not abort the others: its result keeps what was measured and the reason it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import InputFormat, ModelSpec
from ..contract import Runner
from ..errors import BenchError, ConfigError, DataError
from ..host import available_memory_bytes
from ..jsonable import JsonMixin, reorder
from ..power import PowerMonitor
from ..runners import open_runner
from ._common import Progress, _error_text, _fixed_batch, _noop

__all__ = ["BenchConfig", "LatencyStats", "LatencyResult", "RunnerBenchmark", "MemorySampler",
           "make_input", "measure_latency", "benchmark_runner", "batch_bytes",
           "check_batch_fits", "process_peak_rss_mib", "load_pixels"]

log = logging.getLogger(__name__)


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
    from ..preprocess import normalize

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
                    power: PowerMonitor | None = None,
                    samples: list[float] | None = None) -> LatencyResult:
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
        samples: A list the per-call wall times (ms) are appended to, in call order (for a
            caller that pools several measurements or tests them as they come, as ``tune``'s
            sequential stop does).

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
            if samples is not None:
                samples.append(wall[-1])
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
    if isinstance(model, (str, os.PathLike)):  # (owned; spelled out for the type checker)
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


def load_pixels(data: Any, spec: ModelSpec, *, limit: int = 8) -> np.ndarray:
    """The first ``limit`` images of a folder/file list as uint8 NHWC pixels (for benchmark
    inputs). Unreadable images are skipped (logged by the loader).

    Raises:
        DataError: No readable image.
    """
    from ..data import BatchLoader, open_dataset

    ds = open_dataset(data).select(limit)
    loader = BatchLoader(ds, spec, batch_size=limit, input_format=InputFormat.UINT8_NHWC)
    batches = [b.data for b in loader]
    if not batches:
        raise DataError(f"no readable images in {data}")
    return np.concatenate(batches)
