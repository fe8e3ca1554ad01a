"""Latency, accuracy and memory measurement over any :class:`~xception_trt.runners.Runner`.

Two halves that share only small helpers: :mod:`.latency` (latency sweeps, memory, power) and
:mod:`.accuracy` (accuracy and agreement in one pass over labelled data). Every public name of
both is importable from here, as it was when this was one module.
"""

from __future__ import annotations

from ._common import Progress, unique_names
from .accuracy import (
    AccuracyResult,
    AgreementResult,
    EvalResult,
    RunnerEvaluation,
    evaluate,
    label_mapping,
)
from .latency import (
    BenchConfig,
    LatencyResult,
    LatencyStats,
    MemorySampler,
    RunnerBenchmark,
    batch_bytes,
    benchmark_runner,
    check_batch_fits,
    load_pixels,
    make_input,
    measure_latency,
    process_peak_rss_mib,
)

__all__ = ["BenchConfig", "LatencyStats", "LatencyResult", "RunnerBenchmark", "MemorySampler",
           "make_input", "measure_latency", "benchmark_runner", "AccuracyResult",
           "AgreementResult", "RunnerEvaluation", "EvalResult", "evaluate", "unique_names",
           "label_mapping", "load_pixels", "batch_bytes", "check_batch_fits",
           "process_peak_rss_mib", "Progress"]
