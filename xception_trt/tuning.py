# Over 600 lines on purpose: candidates, the accuracy gate, the sequential timing and the report
# are one search, read top to bottom.
"""``xception-trt tune`` / :func:`tune`: which configuration of a bundle (or of a folder of model
files) is fastest, or most frugal, on *this* machine while keeping the accuracy.

1. **Candidates** (:func:`bundle_candidates`, :func:`folder_candidates`): each precision the
   bundle carries on each backend that can run it here — every prebuilt TensorRT engine that
   loads here (on the GPU with CUDA graphs off and on; a DLA engine on its core, without), and
   where no GPU engine loads, the engine opening the bundle would build for the GPU into the
   engine cache; ONNX Runtime (the INT8 graph placed for it) on each of its providers, threads
   swept on the CPU — at each batch size the objective needs that the engine's profile takes.
   What cannot run is listed with the reason, taken from the engine choice
   (:func:`xception_trt.bundle.choice.choose` and ``engine_mismatch``, the rules ``doctor``
   shows), not from a second rule table.
2. **Accuracy first**: each distinct graph or engine is evaluated once on the validation images
   (:func:`xception_trt.bench.evaluate`) against the FP32 reference; one below the floor
   (:class:`~xception_trt.precision.targeted.Target`, the rule ``quantize --target-*`` uses) is
   not timed.
3. **Then speed or energy** (:func:`measure_latency`: warm-up, timed calls, power where a source
   exists), in blocks of calls with a sequential stop (:func:`verdict`): after each block the
   candidate's median cost gets a distribution-free confidence interval (:func:`median_interval`:
   order statistics, binomial tails); a candidate whose interval lies wholly above the best one's
   cannot beat it and is cut. At the end, candidates whose intervals overlap the best one's are a
   tie, and the simplest of them wins (:meth:`Candidate.simplicity`).
4. **Result**: ``report.json``, ``report.md`` and ``pareto.png`` (cost against accuracy loss,
   the chosen point marked) in a new folder, and for a bundle the recorded choice
   (:func:`xception_trt.bundle.tuned.record_choice`).

Costs, lower is better: ``latency``: median ms per call at the profile's smallest batch;
``throughput``: median ms per image (``1000 / images per second``) over the batch sizes;
``energy``: mJ per image over the batch sizes (needs a power source that measures the device
that runs the candidate), one sample per power window of at least
:data:`ENERGY_WINDOW_PERIODS` sampling periods, :func:`energy_windows` windows per
candidate. ``deadline_ms`` bounds the p99 latency per call.

Proof level: the ONNX Runtime path ran here (CPU). TensorRT candidates (prebuilt, built, CUDA
graphs, DLA) open through the same runners as ``infer``/``bench`` and are enumerated from the
engine choice over recorded machine facts in the tests; they are UNVERIFIED on a GPU here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bench import LatencyStats, evaluate, measure_latency
from .bundle.choice import ChoiceKind, Request, choose, engine_mismatch
from .bundle.facts import DeviceFacts
from .bundle.format import Bundle, EngineEntry, Manifest, is_bundle
from .bundle.tuned import OBJECTIVES
from .config import Precision
from .contract import ENGINE_SUFFIXES, ONNX_SUFFIXES, Runner
from .errors import ConfigError, DataError, XceptionTRTError
from .jsonable import JsonMixin

__all__ = ["OBJECTIVES", "Candidate", "Excluded", "SearchConfig", "Measured", "TuneResult",
           "bundle_candidates", "folder_candidates", "thread_counts", "batch_sweep",
           "ort_providers", "engine_batch_range",
           "median_interval", "interval_size", "energy_windows", "verdict", "qualifies", "pick",
           "passes_floor", "engine_precision", "tune",
           "SCHEMA", "render_markdown", "pareto_figure", "write_tune_report"]

log = logging.getLogger(__name__)

SCHEMA = "xception-trt/tune-report"
SCHEMA_VERSION = 1
_PREC_RANK = {Precision.FP32: 0, Precision.FP16: 1, Precision.INT8: 2}

#: The sequential rule, as the report and the docs state it.
RULE = ("after each block of timed calls, the candidate's median cost gets a distribution-free "
        "{conf:g} % confidence interval from the order statistics of its calls (binomial "
        "tails); a candidate whose interval lies wholly above the best one's so far (the "
        "cheapest whose p99 meets the deadline) cannot beat it and is cut; at the end, "
        "candidates whose intervals overlap the best one's are a tie, "
        "won by the simplest: fewer CPU threads, then the smaller batch, then CUDA graphs off, "
        "then the GPU rather than a DLA core, then the higher precision (fp32, fp16, int8)")


# ---------------------------------------------------------------------------------------------
# candidates


@dataclass(frozen=True)
class Candidate(JsonMixin):
    """One configuration to try.

    Attributes:
        runner: ``tensorrt`` or ``onnxruntime``.
        precision: The precision it runs.
        batch: Images per call.
        graph: What runs (a bundle member, ``build: ...`` for an engine built here, or a
            file): candidates with the same graph give the same logits and are evaluated once.
        threads: ONNX Runtime intra-op threads (``None``: not a CPU runner's setting).
        cuda_graphs: CUDA graph replay (TensorRT; ``None`` for ONNX Runtime).
        dla_core: The DLA core a prebuilt engine runs on (``None``: the GPU).
        path: A file of a folder MODEL (``None`` for a bundle).
        provider: The ONNX Runtime execution provider it runs on (``None``: the CPU's,
            ``CPUExecutionProvider``; threads are swept there only).
    """

    runner: str
    precision: Precision
    batch: int
    graph: str
    threads: int | None = None
    cuda_graphs: bool | None = None
    dla_core: int | None = None
    path: str | None = None
    provider: str | None = None

    @property
    def name(self) -> str:
        """``onnxruntime int8 b1 t2`` / ``tensorrt fp16 b8 graphs dla0 (fp16-dla0.engine)``:
        a TensorRT candidate of a bundle names its engine (the member's file name, or
        ``built here``), so that two engines of one precision differ."""
        parts = [self.runner, self.precision.value, f"b{self.batch}"]
        if self.threads is not None:
            parts.append(f"t{self.threads}")
        if self.cuda_graphs:
            parts.append("graphs")
        if self.dla_core is not None:
            parts.append(f"dla{self.dla_core}")
        if self.provider is not None:
            parts.append(self.provider.removesuffix("ExecutionProvider").lower())
        if self.path is not None:
            parts.append(f"({Path(self.path).name})")
        elif self.runner == "tensorrt":
            parts.append("(built here)" if self.graph.startswith("build: ")
                         else f"({Path(self.graph).name})")
        return " ".join(parts)

    def simplicity(self) -> tuple[Any, ...]:
        """The tie order, simplest first: fewer CPU threads, smaller batch, CUDA graphs off,
        the GPU rather than a DLA core, higher precision, then the name."""
        return (self.threads or 0, self.batch, bool(self.cuda_graphs), self.dla_core is not None,
                _PREC_RANK[self.precision], self.name)


@dataclass(frozen=True)
class Excluded(JsonMixin):
    """A configuration that cannot run here, and why (the engine choice's words)."""

    what: str
    why: str


def thread_counts(cpus: int | None = None) -> tuple[int, ...]:
    """ONNX Runtime thread counts to try: 1, 2, 4 ... up to the CPUs this process may use, and
    that number itself."""
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
    cpus = max(1, int(cpus))
    out = {cpus}
    t = 1
    while t < cpus:
        out.add(t)
        t *= 2
    return tuple(sorted(out))


def batch_sweep(lo: int, hi: int, objective: str) -> tuple[int, ...]:
    """Batch sizes to try: ``latency`` the smallest only (one request's latency); otherwise
    ``lo``, the powers of two between, and ``hi``."""
    if objective == "latency" or hi <= lo:
        return (lo,)
    out = {lo, hi}
    b = 1
    while b < hi:
        if b > lo:
            out.add(b)
        b *= 2
    return tuple(sorted(out))


#: ONNX Runtime providers tune tries besides the CPU's (each its own candidate set, no thread
#: sweep); other providers ONNX Runtime lists are named as not tried.
ORT_GPU_PROVIDERS = ("CUDAExecutionProvider",)


def ort_providers(facts: DeviceFacts) -> tuple[list[str | None], list[Excluded]]:
    """The ONNX Runtime providers to try here: ``None`` (the CPU's) first, then each GPU
    provider ONNX Runtime has where there is a GPU; the others, with why not."""
    listed = list(facts.ort_providers)
    out: list[str | None] = [None]
    excluded: list[Excluded] = []
    for p in listed:
        if p == "CPUExecutionProvider":
            continue
        if p in ORT_GPU_PROVIDERS:
            if facts.gpus:
                out.append(p)
            else:
                excluded.append(Excluded(f"onnxruntime on {p}", "no GPU here"))
        else:
            excluded.append(Excluded(f"onnxruntime on {p}", "not tried by tune (it tries the "
                                     f"CPU and {', '.join(ORT_GPU_PROVIDERS)})"))
    return out, excluded


def _ort_candidates(prec: Precision, graph: str, batches: Sequence[int],
                    threads: Sequence[int], providers: Sequence[str | None],
                    path: str | None = None) -> list[Candidate]:
    """One candidate set per provider: on the CPU each thread count, on a GPU provider one
    (threads are a CPU setting)."""
    out: list[Candidate] = []
    for b in batches:
        for p in providers:
            if p is None:
                out.extend(Candidate("onnxruntime", prec, b, graph, threads=t, path=path)
                           for t in threads)
            else:
                out.append(Candidate("onnxruntime", prec, b, graph, path=path, provider=p))
    return out


def _cpu_only(facts: DeviceFacts) -> DeviceFacts:
    """The machine as ONNX Runtime's path sees it: no TensorRT, so that :func:`choose` names
    the graph ONNX Runtime runs (or why it cannot)."""
    return dataclasses.replace(facts, flavours=())


def engine_batch_range(sidecar: Any, default: tuple[int, int]) -> tuple[int, int]:
    """``(smallest, largest)`` batch an engine takes, from its sidecar: its optimisation
    profile's min and max batch (a DLA engine, built for one fixed batch, records it three
    times), else its ``max_batch``, else ``default``."""
    lo, hi = default
    prof = getattr(sidecar, "profile", None)
    if prof is not None and prof.min and prof.max and prof.min[0] > 0 and prof.max[0] > 0:
        lo, hi = int(prof.min[0]), int(prof.max[0])
    elif getattr(sidecar, "max_batch", None):
        hi = int(sidecar.max_batch)
    return min(lo, hi), hi


def _engine_candidates(cands: list[Candidate], excluded: list[Excluded], prec: Precision,
                       graph: str, batch_range: tuple[int, int], objective: str,
                       max_batch: int | None, dla_core: int | None, path: str | None = None
                       ) -> None:
    """An engine's candidates at the batch sizes *it* takes (its own profile, capped by
    ``max_batch``): on the GPU CUDA graphs off and on; on a DLA core its fixed batch, without
    CUDA graphs."""
    lo, hi = batch_range
    if dla_core is not None:  # built for one fixed batch (its profile's max)
        lo = hi
    what = f"tensorrt {prec.value} ({Path(path).name if path else graph})"
    if max_batch is not None and max_batch < lo:
        excluded.append(Excluded(what, f"its smallest batch ({lo}) is above --max-batch "
                                       f"({max_batch})"))
        return
    cap = min(hi, max_batch) if max_batch is not None else hi
    if dla_core is not None:
        cands.append(Candidate("tensorrt", prec, lo, graph, cuda_graphs=False,
                               dla_core=dla_core, path=path))
        excluded.append(Excluded(f"tensorrt {prec.value} dla{dla_core} with CUDA graphs",
                                 "CUDA graphs and DLA offloading are not supported together "
                                 "(as trtexec says)"))
        return
    for b in batch_sweep(lo, cap, objective):
        cands.extend(Candidate("tensorrt", prec, b, graph, cuda_graphs=g, path=path)
                     for g in (False, True))


def bundle_candidates(manifest: Manifest, facts: DeviceFacts, *, objective: str = "latency",
                      threads: Sequence[int] | None = None, max_batch: int | None = None,
                      device: int = 0) -> tuple[list[Candidate], list[Excluded]]:
    """Every configuration of a bundle this machine can run, and those it cannot with the
    reason (pure: recorded facts of another machine give that machine's answer).

    Args:
        manifest: The bundle's manifest.
        facts: The machine.
        objective: One of :data:`OBJECTIVES` (which batch sizes are tried).
        threads: ONNX Runtime thread counts (default :func:`thread_counts`).
        max_batch: Largest batch to try (default: the bundle's profile).
        device: CUDA ordinal.

    Returns:
        ``(candidates, excluded)``.
    """
    lo, _, hi = manifest.batch_profile
    cap = min(hi, max_batch) if max_batch is not None else hi
    batches = batch_sweep(lo, max(lo, cap), objective)
    threads = tuple(threads) if threads else thread_counts()
    cands: list[Candidate] = []
    providers, excluded = ort_providers(facts)
    if facts.ort_version is None:
        providers, excluded = [], []
    for prec in manifest.precisions:
        # TensorRT: every prebuilt engine of this precision that loads here, else the engine
        # opening the bundle would build into the engine cache
        request = Request(prec, device=device)
        mine = [e for e in manifest.engines if e.precision is prec]
        fitting = [e for e in mine if engine_mismatch(e, facts, request) is None]
        trt = choose(manifest, facts, Request(prec, device=device, onnxruntime=False))
        if fitting:
            for e in fitting:
                core = e.sidecar.option("dla_core")
                _engine_candidates(cands, excluded, prec, e.member,
                                   engine_batch_range(e.sidecar, (lo, hi)), objective,
                                   max_batch, None if core is None else int(core))
            excluded.extend(Excluded(f"tensorrt {prec.value}: prebuilt {e.member} "
                                     f"({e.describe()})", str(engine_mismatch(e, facts, request)))
                            for e in mine if e not in fitting)
            if all(e.sidecar.option("dla_core") is not None for e in fitting):
                # only DLA engines fit: the GPU is still a way, through the engine built here
                gpu = choose(dataclasses.replace(manifest, engines=()), facts,
                             Request(prec, device=device, onnxruntime=False))
                if gpu.kind is ChoiceKind.BUILD and gpu.build is not None:
                    _engine_candidates(cands, excluded, prec, f"build: {gpu.build.describe()}",
                                       (gpu.build.profile[0], gpu.build.profile[2]), objective,
                                       max_batch, None)
        elif trt.kind is ChoiceKind.BUILD and trt.build is not None:
            _engine_candidates(cands, excluded, prec, f"build: {trt.build.describe()}",
                               (trt.build.profile[0], trt.build.profile[2]), objective,
                               max_batch, None)
        else:
            # an engine of another precision is no candidate of this one: not listed
            excluded.extend(Excluded(f"tensorrt {prec.value}: {r.what}", r.why)
                            for r in trt.rejected if r.what != "ONNX Runtime"
                            and not r.why.startswith("precision "))
        # ONNX Runtime: the graph the bundle's ONNX Runtime path runs for this precision
        ort = choose(manifest, _cpu_only(facts), Request(prec, device=device, build=False))
        if ort.kind is ChoiceKind.ONNXRUNTIME and ort.variant is not None:
            member = ort.variant.member
            cands.extend(_ort_candidates(prec, member, batches, threads, providers))
            plain = manifest.variant(prec).member
            if plain != member:
                excluded.append(Excluded(
                    f"onnxruntime {prec.value} ({plain})",
                    f"ONNX Runtime runs the {prec.value} graph placed for it ({member}); the "
                    f"one placed for TensorRT ({plain}) is for engines, and slower here"))
        else:
            excluded.extend(Excluded(f"onnxruntime {prec.value}", r.why)
                            for r in ort.rejected if r.what == "ONNX Runtime")
    if facts.dla_cores and not any(e.sidecar.option("dla_core") is not None
                                   for e in manifest.engines):
        excluded.append(Excluded(f"DLA cores 0..{facts.dla_cores - 1}",
                                 "the bundle has no engine built for a DLA core (build one on "
                                 "the board with `xception-trt build --dla-core N --batch N`)"))
    return cands, excluded


def folder_candidates(folder: str | os.PathLike[str], facts: DeviceFacts, *,
                      objective: str = "latency", threads: Sequence[int] | None = None,
                      max_batch: int | None = None, device: int = 0
                      ) -> tuple[list[Candidate], list[Excluded]]:
    """The candidates of a folder of model files: each ONNX graph on ONNX Runtime, each engine
    (with its sidecar) that loads here; other files are ignored.

    Raises:
        ConfigError: No ONNX graph or engine in the folder.
        GraphError / EngineError: A graph without xception-trt metadata, an engine without a
            valid sidecar.
    """
    from .config import DEFAULT_MAX_BATCH
    from .onnx_meta import read_metadata
    from .sidecar import read_sidecar, sidecar_path

    root = Path(folder)
    files = sorted(p for p in root.iterdir() if p.is_file()
                   and p.suffix.lower() in (*ONNX_SUFFIXES, *ENGINE_SUFFIXES))
    if not files:
        raise ConfigError(f"{root} holds no model files (.onnx, {', '.join(ENGINE_SUFFIXES)}); "
                          "give a bundle (.xtrt) or a folder of xception-trt ONNX graphs or "
                          "engines")
    threads = tuple(threads) if threads else thread_counts()
    cands: list[Candidate] = []
    providers, excluded = ort_providers(facts)
    if facts.ort_version is None:
        providers, excluded = [], []
    for p in files:
        if p.suffix.lower() in ONNX_SUFFIXES:
            meta = read_metadata(p)
            if facts.ort_version is None:
                excluded.append(Excluded(f"onnxruntime {p.name}", "not installed (pip install "
                                         "'xception-trt[ort]')"))
                continue
            hi = max_batch or DEFAULT_MAX_BATCH
            cands.extend(_ort_candidates(meta.precision, str(p), batch_sweep(1, hi, objective),
                                         threads, providers, path=str(p)))
            continue
        side = read_sidecar(p)
        why = engine_mismatch(EngineEntry(p.name, sidecar_path(p).name, side), facts,
                              Request(side.precision, device=device))
        if why is not None:
            excluded.append(Excluded(f"tensorrt {p.name}", why))
            continue
        core = side.option("dla_core")
        _engine_candidates(cands, excluded, side.precision, str(p),
                           engine_batch_range(side, (1, 1)), objective, max_batch,
                           int(core) if core is not None else None, path=str(p))
    return cands, excluded


# ---------------------------------------------------------------------------------------------
# the sequential rule (pure)


@dataclass(frozen=True)
class SearchConfig(JsonMixin):
    """How candidates are timed.

    Attributes:
        warmup: Untimed calls before a candidate's first block.
        block: Timed calls per block (the sequential test looks after each).
        min_repeats: Timed calls before a candidate may be cut.
        max_repeats: Timed calls of a candidate that is not cut.
        confidence: Confidence of the median's interval (0.5..0.999).
    """

    warmup: int = 5
    block: int = 10
    min_repeats: int = 10
    max_repeats: int = 50
    confidence: float = 0.95

    def __post_init__(self) -> None:
        for name, low in (("warmup", 0), ("block", 1), ("min_repeats", 1), ("max_repeats", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
        if self.min_repeats > self.max_repeats:
            raise ConfigError(f"min_repeats ({self.min_repeats}) is above max_repeats "
                              f"({self.max_repeats})")
        if not 0.5 <= float(self.confidence) <= 0.999:
            raise ConfigError(f"confidence must be in 0.5..0.999, got {self.confidence!r}")


def median_interval(samples: Sequence[float], confidence: float = 0.95
                    ) -> tuple[float, float] | None:
    """A distribution-free confidence interval of the median: the order statistics
    ``x(l) <= median <= x(n-l+1)`` with the largest ``l`` whose binomial tail
    ``P(Binomial(n, 1/2) <= l - 1)`` is at most ``(1 - confidence) / 2``.

    Returns:
        ``(low, high)``, or ``None`` when there are too few samples for that confidence (at
        95 %: fewer than 6).
    """
    xs = sorted(float(x) for x in samples)
    n = len(xs)
    alpha = (1.0 - confidence) / 2
    tail, best = 0.0, 0
    for k in range(n // 2 + 1):  # tail = P(B <= k - 1) before adding k
        if tail > alpha:
            break
        best = k
        tail += math.comb(n, k) / 2.0 ** n
    # best = largest l with P(B <= l - 1) <= alpha (l = 0: no interval)
    if best < 1:
        return None
    return xs[best - 1], xs[n - best]


def verdict(candidate: Sequence[float], best: Sequence[float] | None, *, config: SearchConfig,
            deadline_ms: float | None = None, per_call_ms: Sequence[float] | None = None
            ) -> str:
    """What to do with a candidate after a block: ``"continue"``, ``"done"`` (its timed calls
    reached ``max_repeats``), ``"cut"`` (its median cost's interval lies wholly above the best
    one's: it cannot beat it) or ``"deadline"`` (its median latency's interval lies wholly
    above ``deadline_ms``).

    Args:
        candidate: The candidate's cost samples so far (lower is better).
        best: The best candidate's cost samples (``None``: none yet; never cut then).
        config: The search settings.
        deadline_ms: Bound of the latency per call.
        per_call_ms: The candidate's per-call latencies (for the deadline; default
            ``candidate``).
    """
    calls = per_call_ms if per_call_ms is not None else candidate
    if len(calls) >= config.min_repeats:
        if deadline_ms is not None:
            lat = median_interval(calls, config.confidence)
            if lat is not None and lat[0] > deadline_ms:
                return "deadline"
        if best is not None:
            mine = median_interval(candidate, config.confidence)
            theirs = median_interval(best, config.confidence)
            if mine is not None and theirs is not None and mine[0] > theirs[1]:
                return "cut"
    return "done" if len(calls) >= config.max_repeats else "continue"


@dataclass
class Measured(JsonMixin):
    """A timed candidate.

    Attributes:
        candidate: What was timed.
        calls_ms: Per-call wall times (ms), in call order.
        costs: Cost samples (lower is better): per call for latency and throughput, per block
            for energy.
        energy_mj: Energy per image (mJ) over all its timed calls, where measured.
        status: ``measured``, ``cut early`` (could not beat the best), ``misses deadline`` or
            ``failed``.
        reason: Why it was cut, missed the deadline or failed.
        power_note: Why there is no energy figure, where there is none.
    """

    candidate: Candidate
    calls_ms: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    energy_mj: float | None = None
    status: str = "measured"
    reason: str | None = None
    power_note: str | None = None

    @property
    def cost(self) -> float | None:
        return statistics.median(self.costs) if self.costs else None

    def interval(self, confidence: float) -> tuple[float, float] | None:
        return median_interval(self.costs, confidence)


def qualifies(m: Measured, deadline_ms: float | None) -> bool:
    """Whether a timed candidate may win: fully measured, with costs, and (with a deadline)
    its p99 latency per call at most ``deadline_ms``. :func:`pick` keeps only these, and the
    search's best-so-far (what :func:`verdict` cuts against) is the cheapest of these only: a
    fast candidate that misses the deadline never cuts one that would have won."""
    if m.status != "measured" or not m.costs or not m.calls_ms:
        return False
    return deadline_ms is None or LatencyStats.from_samples(m.calls_ms).p99_ms <= deadline_ms


def pick(measured: Sequence[Measured], *, confidence: float = 0.95,
         deadline_ms: float | None = None) -> tuple[Measured | None, list[Measured]]:
    """The winner among fully measured candidates and those tied with it.

    The best is the lowest median cost whose p99 latency meets the deadline; every candidate
    whose interval overlaps the best one's is tied with it, and the tie goes to the simplest
    (:meth:`Candidate.simplicity`). Returns ``(winner, tied)`` (``tied`` includes the winner
    when there is a tie, else is empty).
    """
    ok = [m for m in measured if qualifies(m, deadline_ms)]
    if not ok:
        return None, []
    def span(m: Measured) -> tuple[float, float]:
        cost = statistics.median(m.costs)
        return m.interval(confidence) or (cost, cost)

    best = min(ok, key=lambda m: (statistics.median(m.costs), m.candidate.simplicity()))
    b = span(best)
    tied = [m for m in ok if span(m)[0] <= b[1] and b[0] <= span(m)[1]]
    if len(tied) < 2:
        return best, []
    return min(tied, key=lambda m: m.candidate.simplicity()), tied


# ---------------------------------------------------------------------------------------------
# the search


@dataclass
class TuneResult:
    """What :func:`tune` found.

    Attributes:
        report: The report document (``report.json``).
        chosen: The winning candidate (``None``: none met the floor and deadline).
        directory: The report folder (``None`` when no ``output`` was given).
        recorded: The recorded choice's file (a bundle, with ``record``), else ``None``.
    """

    report: dict[str, Any]
    chosen: Candidate | None
    directory: Path | None = None
    recorded: Path | None = None


def _open(c: Candidate, model: Path, facts: DeviceFacts, *, cache_dir: Any, device: int,
          threads: int | None = None, cuda_graphs: bool | None = None) -> Runner:
    """Open a candidate's runner: its file (a bundle's graph or prebuilt engine copied out
    verified, or the engine the bundle builds into the engine cache) with exactly the
    candidate's options."""
    from .runners import open_runner

    t = threads if threads is not None else c.threads
    g = bool(cuda_graphs if cuda_graphs is not None else c.cuda_graphs)
    if c.runner == "onnxruntime":
        from .bundle.cache import bundle_graph

        # exactly the candidate's provider (ONNX Runtime's default would put CUDA first)
        provider = c.provider or "CPUExecutionProvider"
        path = c.path if c.path is not None else bundle_graph(model, c.graph,
                                                              cache_dir=cache_dir)
        kw: dict[str, Any] = {"threads": t} if provider == "CPUExecutionProvider" else {}
        runner = open_runner(path, providers=[provider], **kw)
        got = list(getattr(runner, "providers", None) or [provider])
        if got[0] != provider:
            runner.close()
            raise ConfigError(f"ONNX Runtime did not run on {provider} (it chose {got[0]})")
        return runner
    if c.path is not None:
        return open_runner(c.path, device=device, cuda_graphs=g)
    from .bundle.cache import prebuilt_engine

    if not c.graph.startswith("build: "):  # a prebuilt engine, the one this candidate names
        return open_runner(prebuilt_engine(model, c.graph, cache_dir=cache_dir), device=device,
                           cuda_graphs=g)
    # the engine the bundle builds into the engine cache, resolved here and opened as a file:
    # what tune measures is exactly the candidate, whatever a recorded choice would fill in
    from .bundle.cache import resolve

    built = resolve(model, precision=c.precision, onnxruntime=False, device=device, facts=facts,
                    cache_dir=cache_dir)
    return open_runner(built.path, device=device, cuda_graphs=g)


def engine_precision(runner: Runner, c: Candidate) -> tuple[str | None, str | None]:
    """The engine-precision check of a TensorRT candidate (:mod:`xception_trt.trt.layers`
    over the layer records of the engine's sidecar, leaving out the nodes its graph keeps in
    high precision on purpose).

    Returns:
        ``(refusal, note)``: ``refusal`` when compute layers run at another precision than the
        one asked (a silent fallback: the candidate is not what it says, so it is not timed);
        ``note``, the check's one-line summary (also when the records cannot tell). Both
        ``None`` for ONNX Runtime.
    """
    if c.runner != "tensorrt":
        return None, None
    from .trt.layers import check_engine_precision

    sidecar = getattr(runner, "sidecar", None)
    if sidecar is None:
        return None, "the engine's sidecar is not at hand: its layer precisions are unchecked"
    check = check_engine_precision(sidecar)
    if check.mismatched:
        return (f"the engine does not run at {c.precision.value} (a silent fallback): "
                f"{check.summary()}"), check.summary()
    return None, check.summary()


def _costs(objective: str, batch: int, calls: Sequence[float]) -> list[float]:
    """Per-call cost samples of ``latency`` (ms per call) and ``throughput`` (ms per image);
    ``energy`` has one per power window (:func:`_time_energy`)."""
    if objective == "throughput":
        return [ms / batch for ms in calls]
    return list(calls)


#: An energy window spans at least this many sampling periods of the power monitor (the
#: sampler's own threshold for a steady figure: fewer, and ``PowerReading`` says so).
ENERGY_WINDOW_PERIODS = 10
#: Longest a window is stretched to (calls per window), so that a stuck clock cannot loop.
_MAX_WINDOW_CALLS = 1_000_000


def interval_size(confidence: float = 0.95) -> int:
    """The fewest samples that give :func:`median_interval` an interval at ``confidence``
    (6 at 95 %)."""
    n = 1
    while median_interval([0.0] * n, confidence) is None:
        n += 1
    return n


def energy_windows(search: SearchConfig) -> tuple[int, int]:
    """``(fewest, most)`` energy windows per candidate: at least enough for an interval of
    the median at the search's confidence (so that the cut and the tie can decide), at most
    ``max_repeats / block`` windows or twice the fewest, whichever is more (so that a candidate
    can be cut before its last window)."""
    low = max(interval_size(search.confidence), math.ceil(search.min_repeats / search.block))
    return low, max(math.ceil(search.max_repeats / search.block), 2 * low)


def _time_candidate(c: Candidate, runner: Runner, best: Measured | None, *, objective: str,
                    search: SearchConfig, deadline_ms: float | None, monitor: Any,
                    progress: Callable[[int], None] | None) -> Measured:
    if objective == "energy":
        return _time_energy(c, runner, best, search=search, deadline_ms=deadline_ms,
                            monitor=monitor)
    m = Measured(c)
    first = True
    images = 0
    joules = 0.0
    while True:
        n = min(search.block, search.max_repeats - len(m.calls_ms))
        lat = measure_latency(runner, c.batch, iterations=n,
                              warmup=search.warmup if first else 0, samples=m.calls_ms,
                              power=monitor, progress=progress)
        first = False
        if lat.error or lat.skipped:
            m.status, m.reason = "failed", lat.error or lat.skipped
            return m
        power = lat.power or {}
        if power.get("energy_per_image_mj") is not None:  # where a source measures it
            images += int(power.get("images") or 0)
            joules += float(power["energy_per_image_mj"]) * int(power.get("images") or 0) / 1e3
            m.energy_mj = 1000.0 * joules / images if images else None
        elif power:
            m.power_note = power.get("reason") or "; ".join(power.get("notes") or []) or None
        m.costs = _costs(objective, c.batch, m.calls_ms)
        v = verdict(m.costs, best.costs if best is not None else None, config=search,
                    deadline_ms=deadline_ms, per_call_ms=m.calls_ms)
        if _stopped(m, v, best, search, deadline_ms):
            return m


def _stopped(m: Measured, v: str, best: Measured | None, search: SearchConfig,
             deadline_ms: float | None) -> bool:
    """Apply a verdict to ``m``; whether its timing is over."""
    if v == "cut":
        m.status = "cut early"
        iv, bv = m.interval(search.confidence), best.interval(search.confidence) \
            if best is not None else None
        m.reason = (f"after {len(m.calls_ms)} calls its median's interval "
                    f"{_iv(iv)} lies above the best's {_iv(bv)} ({best.candidate.name})"
                    if best is not None else None)
        return True
    if v == "deadline":
        m.status = "misses deadline"
        m.reason = (f"after {len(m.calls_ms)} calls its median latency is surely above "
                    f"{deadline_ms:g} ms")
        return True
    return v == "done"


def _time_energy(c: Candidate, runner: Runner, best: Measured | None, *, search: SearchConfig,
                 deadline_ms: float | None, monitor: Any) -> Measured:
    """The energy objective: one cost sample (mJ per image) per power window, each window at
    least :data:`ENERGY_WINDOW_PERIODS` sampling periods long (and at least ``block`` calls:
    a window found shorter is not a sample, and the next ones take proportionally more
    calls), :func:`energy_windows` windows per candidate, the sequential rule applied to the
    windows."""
    m = Measured(c)
    low, high = energy_windows(search)
    windows = dataclasses.replace(search, block=1, min_repeats=low, max_repeats=high)
    need_s = ENERGY_WINDOW_PERIODS * float(monitor.period_s)
    calls = search.block
    images = 0
    joules = 0.0
    first = True
    while True:
        lat = measure_latency(runner, c.batch, iterations=calls,
                              warmup=search.warmup if first else 0, samples=m.calls_ms,
                              power=monitor)
        first = False
        if lat.error or lat.skipped:
            m.status, m.reason = "failed", lat.error or lat.skipped
            return m
        power = lat.power or {}
        seconds = float(power.get("duration_s") or 0.0)
        if power.get("energy_per_image_mj") is None:
            m.power_note = power.get("reason") or "; ".join(power.get("notes") or []) or None
            m.status, m.reason = "failed", f"no energy measured: {m.power_note or 'no power'}"
            return m
        if seconds < need_s:  # too short for a steady figure: not a sample; longer windows
            if calls >= _MAX_WINDOW_CALLS:
                m.status, m.reason = "failed", (f"{calls} calls took {seconds:.3f} s, under "
                                                f"the {need_s:.3f} s an energy window needs")
                return m
            grow = need_s / seconds if seconds > 0 else 10.0
            calls = min(_MAX_WINDOW_CALLS, max(calls + 1, math.ceil(1.2 * calls * grow)))
            continue
        n_img = int(power.get("images") or 0)
        m.costs.append(float(power["energy_per_image_mj"]))
        images += n_img
        joules += m.costs[-1] * n_img / 1000.0
        m.energy_mj = 1000.0 * joules / images if images else None
        v = verdict(m.costs, best.costs if best is not None else None, config=windows)
        if v != "cut" and deadline_ms is not None and len(m.calls_ms) >= search.min_repeats:
            lat_iv = median_interval(m.calls_ms, search.confidence)
            if lat_iv is not None and lat_iv[0] > deadline_ms:
                v = "deadline"
        if _stopped(m, v, best, search, deadline_ms):
            if m.status == "cut early":
                m.reason = (m.reason or "").replace(f"after {len(m.calls_ms)} calls",
                                                    f"after {len(m.costs)} energy windows "
                                                    f"({len(m.calls_ms)} calls)")
            return m


def _iv(iv: tuple[float, float] | None) -> str:
    return f"[{iv[0]:.4g}, {iv[1]:.4g}]" if iv else "(too few calls)"


def _timing_order(c: Candidate, objective: str) -> tuple[Any, ...]:
    """Likely fastest first, so that the best-so-far is good early and cuts come sooner:
    TensorRT before ONNX Runtime, int8 before fp16 before fp32, more threads, CUDA graphs on,
    (throughput, energy) larger batches."""
    return (c.runner != "tensorrt", -_PREC_RANK[c.precision], -(c.threads or 0),
            not c.cuda_graphs, c.dla_core is not None,
            -c.batch if objective != "latency" else c.batch, c.name)


def _floor(max_top1_drop: float | None, min_agreement: float | None) -> Any:
    from .precision.targeted import Target

    if max_top1_drop is None and min_agreement is None:
        max_top1_drop = DEFAULT_TOP1_DROP
    return Target(agreement=min_agreement, top1_drop=max_top1_drop)


def passes_floor(target: Any, *, top1: float | None, ref_top1: float | None,
                 agreement: float) -> bool:
    """Whether a graph meets the accuracy floor: the rule of ``quantize --target-*``
    (:meth:`~xception_trt.precision.targeted.Target.met`: a drop equal to the limit, or an
    agreement equal to the minimum, passes).

    Args:
        target: The floor (a :class:`~xception_trt.precision.targeted.Target`).
        top1: The graph's top-1 accuracy (fraction; ``None`` on unlabelled images).
        ref_top1: The FP32 reference's.
        agreement: Its top-1 agreement with the reference (fraction).
    """
    from .precision.sensitivity import NodeSensitivity

    row = NodeSensitivity("graph", "graph", None, agreement, 0.0, 0.0, 0.0, top1)
    return bool(target.met(row, ref_top1))


#: The accuracy floor when none is given: a top-1 drop of at most 1 percentage point.
DEFAULT_TOP1_DROP = 1.0


def _check_args(objective: str, deadline_ms: float | None, max_batch: int | None,
                threads: Sequence[int] | None, limit: int | None) -> None:
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if deadline_ms is not None and (isinstance(deadline_ms, bool) or not math.isfinite(
            float(deadline_ms)) or float(deadline_ms) <= 0):
        raise ConfigError(f"deadline must be a positive number of milliseconds, got "
                          f"{deadline_ms!r}")
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int)
                                  or max_batch < 1):
        raise ConfigError(f"max_batch must be an integer >= 1, got {max_batch!r}")
    for t in threads or ():
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ConfigError(f"thread counts must be integers >= 1, got {t!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ConfigError(f"limit must be an integer >= 1 (images), got {limit!r}")


def tune(model: str | os.PathLike[str], val: Any, *, objective: str = "latency",
         max_top1_drop: float | None = None, min_agreement: float | None = None,
         deadline_ms: float | None = None, max_batch: int | None = None,
         output: str | os.PathLike[str] | None = None, force: bool = False,
         threads: Sequence[int] | None = None, search: SearchConfig | None = None,
         limit: int | None = None, record: bool = True, device: int = 0,
         cache_dir: str | os.PathLike[str] | None = None, facts: DeviceFacts | None = None,
         monitor: Any = None, command: str | None = None,
         progress: Callable[[str, int, int | None], None] | None = None) -> TuneResult:
    """Find the fastest (or most frugal) configuration of a bundle or folder of model files
    on this machine that keeps the accuracy (see the module docstring for the search).

    Args:
        model: A bundle (``.xtrt``) or a folder of xception-trt ONNX graphs and engines.
        val: Validation images (a labelled folder or file list; unlabelled only with
            ``min_agreement``).
        objective: ``latency`` (median ms per call at the smallest batch), ``throughput``
            (images per second) or ``energy`` (mJ per image; needs a power source).
        max_top1_drop: Largest top-1 drop from FP32 allowed, percentage points (default 1.0
            when ``min_agreement`` is not given either).
        min_agreement: Smallest top-1 agreement with FP32 allowed (fraction, e.g. 0.995).
        deadline_ms: Largest p99 latency per call allowed.
        max_batch: Largest batch size tried (default: the bundle's profile; 8 for a folder).
        output: The report folder to write (``None``: none written).
        force: Replace an existing report folder.
        threads: ONNX Runtime thread counts to try (default :func:`thread_counts`).
        search: Timing settings (default :class:`SearchConfig`).
        limit: Evaluate a deterministic subset of this many validation images.
        record: Record the choice for the bundle (``xception_trt.bundle.tuned``), before the
            report is written (whose ``recorded`` names the record's file; a report that
            cannot be written removes the record again).
        device: CUDA ordinal.
        cache_dir: The engine cache (default: the bundle cache's default).
        facts: The machine (default: probed).
        monitor: A :class:`~xception_trt.power.PowerMonitor` (default: this machine's).
        command: The command line, for the report.
        progress: ``(stage, done, total)`` calls.

    Returns:
        A :class:`TuneResult`.

    Raises:
        ConfigError: Bad arguments, no runnable candidate, no power source for ``energy``.
        DataError: Empty or unlabelled ``val`` where labels are needed.
        BundleError / GraphError / EngineError: An unreadable bundle or model file.
        BenchError: The report folder exists (without ``force``) or cannot be written.
        BundleError: The choice cannot be recorded (then no report is written).
    """
    from .bundle.facts import probe_facts
    from .data import open_dataset
    from .power import open_monitor, run_context
    from .report import check_report_dir

    t_start = _dt.datetime.now(_dt.timezone.utc)
    _check_args(objective, deadline_ms, max_batch, threads, limit)
    target = _floor(max_top1_drop, min_agreement)
    search = search or SearchConfig()
    model = Path(model)
    if output is not None:
        out = Path(output)
        check_report_dir(out.parent, out.name, force=force)
    if not (is_bundle(model) and model.is_file()) and not model.is_dir():
        raise ConfigError(f"{model} is neither a bundle (.xtrt) nor a folder of model files; "
                          "give one of those")
    dataset = open_dataset(val)
    if not len(dataset):
        raise DataError(f"the validation set {val} holds no images")
    if not dataset.labelled and target.top1_drop is not None:
        raise DataError(f"{val} has no labels, so a top-1 drop cannot be measured; give a "
                        "labelled folder (one sub-folder per class) or use --min-agreement")
    facts = facts if facts is not None else probe_facts()
    if is_bundle(model):
        with Bundle(model) as b:
            b.verify()
            manifest = b.manifest
        cands, excluded = bundle_candidates(manifest, facts, objective=objective,
                                            threads=threads, max_batch=max_batch, device=device)
    else:
        cands, excluded = folder_candidates(model, facts, objective=objective, threads=threads,
                                            max_batch=max_batch, device=device)
    with contextlib.ExitStack() as stack:
        if monitor is None:  # as bench: the Jetson rails, else NVML for the runners' GPU
            from .sysinfo import devices

            gpu = next((g for g in devices().gpus if g.index == device), None)
            monitor = stack.enter_context(open_monitor(
                pci_bus_id=gpu.pci_bus_id if gpu is not None else None))
        if not cands:
            reasons = "; ".join(f"{e.what}: {e.why}" for e in excluded[:4]) or "none"
            raise ConfigError(f"nothing in {model} can run here ({reasons}); run "
                              "`xception-trt doctor` on it")
        ref_pool = cands  # the FP32 reference may be a candidate the objective leaves out
        if objective == "energy":
            if not monitor.available:
                raise ConfigError(f"--objective energy needs a power source (a Jetson's "
                                  f"INA3221 rails or NVML); here: {monitor.reason}")
            if monitor.source.scope == "gpu":
                why = (f"the power source ({monitor.source.name}) measures the GPU only: the "
                       "energy of a CPU runner is not measured")
                on_gpu = [c for c in cands if c.runner == "tensorrt"
                          or c.provider in ORT_GPU_PROVIDERS]
                excluded += [Excluded(c.name, why) for c in cands if c not in on_gpu]
                cands = on_gpu
                if not cands:
                    raise ConfigError(f"--objective energy: {why}, and no TensorRT engine "
                                      f"of {model.name} runs on the GPU here; use --objective "
                                      "latency or throughput")
        reference = _reference_graph(ref_pool)
        context = run_context()
        # --- accuracy: each distinct graph once, against the FP32 reference
        graphs = list(dict.fromkeys([reference.graph] + [c.graph for c in cands]))
        first = {g: next(c for c in [*ref_pool, *cands] if c.graph == g) for g in graphs}
        accuracy = _evaluate_graphs(graphs, first, model, facts, dataset, target, limit=limit,
                                    cache_dir=cache_dir, device=device, progress=progress)
        # --- timing, with the sequential stop
        passing = [c for c in cands if accuracy[c.graph]["passes"]]
        order = sorted(passing, key=lambda c: _timing_order(c, objective))
        measured: list[Measured] = []
        best: Measured | None = None
        for i, c in enumerate(order):
            if progress:
                progress(f"timing {c.name}", i, len(order))
            try:
                runner = _open(c, model, facts, cache_dir=cache_dir, device=device)
            except XceptionTRTError as exc:
                measured.append(Measured(c, status="failed", reason=str(exc).splitlines()[0]))
                continue
            try:
                m = _time_candidate(c, runner, best, objective=objective, search=search,
                                    deadline_ms=deadline_ms, monitor=monitor, progress=None)
            finally:
                runner.close()
            measured.append(m)
            # only a candidate pick() could choose becomes the best to cut against
            if qualifies(m, deadline_ms) and (best is None or (m.cost or math.inf) < (
                    best.cost or math.inf)):
                best = m
    winner, tied = pick(measured, confidence=search.confidence, deadline_ms=deadline_ms)
    doc = _document(
        model=model, objective=objective, target=target, deadline_ms=deadline_ms,
        max_batch=max_batch, search=search, facts=facts, context=context, monitor=monitor,
        dataset_info=accuracy.pop("__dataset__"), reference=reference, accuracy=accuracy,
        cands=cands, excluded=excluded, measured=measured, winner=winner, tied=tied,
        command=command, started=t_start)
    result = TuneResult(doc, winner.candidate if winner else None)
    # record first, so that the report never says "recorded" for a record that failed; the
    # record names the report folder about to be written (checked above)
    target = check_report_dir(Path(output).parent, Path(output).name, force=force) \
        if output is not None else None
    if record and winner is not None and is_bundle(model):
        result.recorded = _record(model, winner, accuracy[winner.candidate.graph], objective,
                                  target, cache_dir=cache_dir, facts=facts)
    doc["record"] = result.recorded is not None
    doc["recorded"] = str(result.recorded) if result.recorded is not None else None
    if output is not None:
        try:
            result.directory = write_tune_report(doc, output, force=force)
        except BaseException:
            if result.recorded is not None:  # no record that names a report never written
                with contextlib.suppress(OSError):
                    result.recorded.unlink()
                result.recorded = None
            raise
    return result


def _reference_graph(cands: Sequence[Candidate]) -> Candidate:
    fp32 = [c for c in cands if c.precision is Precision.FP32]
    if not fp32:
        raise ConfigError("no FP32 graph can run here to be the accuracy reference (the "
                          "bundle's FP32 variant, or an FP32 ONNX in the folder); add one")
    return min(fp32, key=lambda c: (c.runner != "onnxruntime", c.name))


def _evaluate_graphs(graphs: Sequence[str], first: Mapping[str, Candidate], model: Path,
                     facts: DeviceFacts, dataset: Any, target: Any, *, limit: int | None,
                     cache_dir: Any, device: int,
                     progress: Callable[[str, int, int | None], None] | None
                     ) -> dict[str, Any]:
    runners: list[Runner] = []
    out: dict[str, Any] = {}
    opened: list[str] = []
    try:
        for g in graphs:
            c = first[g]
            try:
                runners.append(_open(c, model, facts, cache_dir=cache_dir, device=device,
                                     threads=max(thread_counts()) if c.runner == "onnxruntime"
                                     else None, cuda_graphs=False))
            except XceptionTRTError as exc:
                if g == graphs[0]:
                    raise  # no reference, no accuracy: the caller's error
                # the facts said it would run and it did not: said, and not timed
                why = f"could not be opened: {str(exc).splitlines()[0]}"
                log.warning("%s %s", g, why)
                out[g] = {"graph": g, "runner": c.runner, "precision": c.precision.value,
                          "top1": None, "agreement": None, "top1_drop_pp": None,
                          "kl_mean": None, "precision_check": None, "error": why,
                          "passes": False, "why": why}
                continue
            opened.append(g)
        total = min(len(dataset), limit) if limit else len(dataset)
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            if progress:
                progress("accuracy (each graph once)", done[0], total)

        ev = evaluate(runners, dataset, names=opened, reference=0, limit=limit,
                      progress=advance, require_labels=target.top1_drop is not None)
        checks = [engine_precision(r, first[g]) for r, g in zip(runners, opened)]
    finally:
        for r in runners:
            r.close()
    ref = ev.runners[0]
    ref_top1 = ref.accuracy.top1 if ref.accuracy else None
    for g, e, (refusal, note) in zip(opened, ev.runners, checks):
        top1 = e.accuracy.top1 if e.accuracy else None
        agr = e.agreement
        agreement = agr.top1_agreement if agr else 1.0
        entry: dict[str, Any] = {
            "graph": g, "runner": first[g].runner, "precision": first[g].precision.value,
            "top1": top1, "agreement": agreement,
            "top1_drop_pp": None if top1 is None or ref_top1 is None
            else round(100.0 * (ref_top1 - top1), 6),
            "kl_mean": agr.kl_mean if agr else 0.0, "precision_check": note, "error": e.error}
        if e.error:
            entry["passes"], entry["why"] = False, f"evaluation failed: {e.error}"
        elif refusal is not None:
            entry["passes"], entry["why"] = False, refusal
        else:
            entry["passes"] = g == opened[0] or passes_floor(
                target, top1=top1, ref_top1=ref_top1, agreement=agreement)
            entry["why"] = None if entry["passes"] else f"below the floor ({target.describe()})"
        out[g] = entry
    out["__dataset__"] = {k: v for k, v in ev.dataset.items() if k != "class_names"}
    return out


def _record(model: Path, winner: Measured, acc: Mapping[str, Any], objective: str,
            directory: Path | None, *, cache_dir: Any, facts: DeviceFacts) -> Path:
    from .bundle.tuned import TunedChoice, record_choice

    c = winner.candidate
    stats = LatencyStats.from_samples(winner.calls_ms)
    engine = sha = None
    if c.runner == "tensorrt" and not c.graph.startswith("build: "):
        engine = c.graph  # the prebuilt engine that won: opening the bundle opens this one
        with Bundle(model) as b:
            sha = b.manifest.members[engine].sha256
    choice = TunedChoice(
        precision=c.precision, runner=c.runner, batch=c.batch, threads=c.threads,
        cuda_graphs=c.cuda_graphs, dla_core=c.dla_core, engine=engine, engine_sha256=sha,
        provider=(c.provider or "CPUExecutionProvider") if c.runner == "onnxruntime" else None,
        objective=objective,
        report=str((directory / "report.json").resolve()) if directory is not None else None,
        measured={"median_ms": stats.median_ms, "p99_ms": stats.p99_ms,
                  "images_per_s": 1000.0 * c.batch / stats.median_ms,
                  "joules_per_image": (winner.energy_mj / 1000.0
                                       if winner.energy_mj is not None else None),
                  "top1_drop_pp": acc.get("top1_drop_pp"), "agreement": acc.get("agreement")})
    return record_choice(model, choice, cache_dir=cache_dir, facts=facts)


# ---------------------------------------------------------------------------------------------
# the report


def _row(m: Measured, acc: Mapping[str, Any], confidence: float) -> dict[str, Any]:
    c = m.candidate
    stats = LatencyStats.from_samples(m.calls_ms) if m.calls_ms else None
    iv = m.interval(confidence)
    return {"name": c.name, **c.to_dict(), "status": m.status, "reason": m.reason,
            "repetitions": len(m.calls_ms), "cut_early": m.status == "cut early",
            "median_ms": stats.median_ms if stats else None,
            "mean_ms": stats.mean_ms if stats else None,
            "p99_ms": stats.p99_ms if stats else None,
            "images_per_s": 1000.0 * c.batch / stats.median_ms if stats else None,
            "energy_per_image_mj": m.energy_mj, "power_note": m.power_note,
            "cost": m.cost, "cost_interval": list(iv) if iv else None,
            "top1_drop_pp": acc.get("top1_drop_pp"), "agreement": acc.get("agreement"),
            "tie": False, "chosen": False}


def _document(*, model: Path, objective: str, target: Any, deadline_ms: float | None,
              max_batch: int | None, search: SearchConfig, facts: DeviceFacts,
              context: Mapping[str, Any], monitor: Any, dataset_info: Mapping[str, Any],
              reference: Candidate, accuracy: Mapping[str, Any], cands: Sequence[Candidate],
              excluded: Sequence[Excluded], measured: Sequence[Measured],
              winner: Measured | None, tied: Sequence[Measured], command: str | None,
              started: _dt.datetime) -> dict[str, Any]:
    from .host import load_average
    from .sysinfo import system_facts

    rows = {m.candidate: _row(m, accuracy[m.candidate.graph], search.confidence)
            for m in measured}
    for m in tied:
        rows[m.candidate]["tie"] = True
    if winner is not None:
        rows[winner.candidate]["chosen"] = True
    for c in cands:  # below the floor: not timed
        if c not in rows:
            acc = accuracy[c.graph]
            rows[c] = {"name": c.name, **c.to_dict(), "status": "below accuracy floor",
                       "reason": acc["why"], "repetitions": 0, "cut_early": False,
                       "median_ms": None, "mean_ms": None, "p99_ms": None,
                       "images_per_s": None, "energy_per_image_mj": None, "power_note": None,
                       "cost": None, "cost_interval": None,
                       "top1_drop_pp": acc.get("top1_drop_pp"),
                       "agreement": acc.get("agreement"), "tie": False, "chosen": False}
    if deadline_ms is not None:
        for r in rows.values():
            if r["status"] == "measured" and r["p99_ms"] is not None \
                    and r["p99_ms"] > deadline_ms:
                r["status"] = "misses deadline"
                r["reason"] = f"p99 {r['p99_ms']:.3f} ms is above the deadline {deadline_ms:g} ms"
    chosen = rows[winner.candidate] if winner is not None else None
    ties = [rows[m.candidate]["name"] for m in tied]
    finished = _dt.datetime.now(_dt.timezone.utc)
    return json.loads(json.dumps({
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created_utc": finished.isoformat(timespec="seconds"), "command": command,
        "seconds": round((finished - started).total_seconds(), 1),
        "model": {"path": str(model), "kind": "bundle" if is_bundle(model) else "folder"},
        "objective": objective,
        "cost": {"latency": "median ms per call", "throughput": "median ms per image",
                 "energy": "mJ per image"}[objective],
        "floor": {"top1_drop_pp": target.top1_drop, "agreement": target.agreement,
                  "describe": target.describe()},
        "deadline_ms": deadline_ms, "max_batch": max_batch,
        "search": {**search.to_dict(), "rule": RULE.format(conf=100 * search.confidence)},
        "machine": facts.to_dict(), "system": system_facts(), "context": dict(context),
        "load_average_after": load_average(), "power": monitor.describe(),
        "dataset": dict(dataset_info), "reference": reference.graph,
        "graphs": list(accuracy.values()),
        "candidates": sorted(rows.values(), key=lambda r: (r["cost"] is None,
                                                           r["cost"] or 0.0, r["name"])),
        "not_runnable": [e.to_dict() for e in excluded],
        "chosen": chosen, "ties": ties,
    }, default=_json_default))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "value"):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _fmt(x: Any, nd: int = 3) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The report as Markdown: the choice, machine and load, every candidate's numbers with its
    repetitions and status, the graphs' accuracy, what could not run and why."""
    sysf, ctx = doc["system"], doc.get("context") or {}
    load_before = ctx.get("load_average")
    ch = doc["chosen"]
    lines = [f"# xception-trt tune: {Path(doc['model']['path']).name}", ""]
    if ch:
        lines.append(f"**Chosen: {ch['name']}** — {doc['objective']} objective, cost "
                     f"{_fmt(ch['cost'], 4)} ({doc['cost']}), median {_fmt(ch['median_ms'])} ms, "
                     f"p99 {_fmt(ch['p99_ms'])} ms per call, {_fmt(ch['images_per_s'], 1)} "
                     f"images/s, top-1 drop {_fmt(ch['top1_drop_pp'], 2)} pp, agreement "
                     f"{_fmt(100 * ch['agreement'] if ch['agreement'] is not None else None, 2)}"
                     f" %, from {ch['repetitions']} timed calls.")
        if doc["ties"]:
            lines.append(f"A tie within noise between {', '.join(doc['ties'])}: the simplest "
                         "wins (fewer threads, smaller batch, CUDA graphs off, GPU before DLA, "
                         "higher precision).")
    else:
        lines.append("**No candidate met the accuracy floor and the deadline.**")
    lines += ["", f"- Floor: {doc['floor']['describe']} against the FP32 reference "
              f"`{doc['reference']}`; deadline: "
              + (f"p99 <= {doc['deadline_ms']:g} ms" if doc["deadline_ms"] else "none"),
              f"- Validation: {doc['dataset'].get('images')} images from "
              f"`{doc['dataset'].get('source')}`",
              f"- Machine: {doc['machine'].get('host') or sysf.get('platform')}; CPU "
              f"{sysf.get('cpu')}; GPUs: "
              + (", ".join(g["name"] for g in doc["machine"].get("gpus") or []) or "none"),
              f"- Load average (1, 5, 15 min): before {load_before}, after "
              f"{doc['load_average_after']}",
              "- Power: " + (doc["power"].get("backend")
                             or f"none ({doc['power'].get('reason')})"),
              f"- Search: warm-up {doc['search']['warmup']}, blocks of {doc['search']['block']}"
              f" calls, {doc['search']['min_repeats']}..{doc['search']['max_repeats']} timed "
              f"calls per candidate; {doc['search']['rule']}.",
              f"- Took {doc['seconds']} s.",
              "- The choice is " + ("recorded for this bundle on this machine "
                                    f"(`{doc.get('recorded')}`): opening it uses it unless "
                                    "told otherwise." if doc.get("record") else
                                    "not recorded (a folder, --no-record, or nothing chosen)."),
              "", "![pareto](pareto.png)", "",
              "## Candidates", "",
              "| candidate | status | calls | median ms | p99 ms | images/s | mJ/image | "
              "cost interval | top-1 drop pp | agreement % | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["candidates"]:
        iv = r["cost_interval"]
        mark = " **(chosen)**" if r["chosen"] else (" (tie)" if r["tie"] else "")
        agr = r["agreement"]
        lines.append(
            f"| {r['name']}{mark} | {r['status']} | {r['repetitions']} | {_fmt(r['median_ms'])}"
            f" | {_fmt(r['p99_ms'])} | {_fmt(r['images_per_s'], 1)} | "
            f"{_fmt(r['energy_per_image_mj'])} | "
            + (f"{iv[0]:.4g}..{iv[1]:.4g}" if iv else "—")
            + f" | {_fmt(r['top1_drop_pp'], 2)} | "
            f"{_fmt(100 * agr if agr is not None else None, 2)} | "
            f"{(r['reason'] or '').replace('|', '/')} |")
    lines += ["", "## Accuracy (each graph once)", "",
              "| graph | runner | precision | top-1 % | drop pp | agreement % | engine precision "
              "check | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for g in doc["graphs"]:
        top1 = g["top1"]
        lines.append(f"| `{g['graph']}` | {g['runner']} | {g['precision']} | "
                     f"{_fmt(100 * top1 if top1 is not None else None, 2)} | "
                     f"{_fmt(g['top1_drop_pp'], 2)} | "
                     f"{_fmt(None if g['agreement'] is None else 100 * g['agreement'], 2)} | "
                     f"{g['precision_check'] or '—'} | "
                     + ("passes" if g["passes"] else str(g["why"]).replace("|", "/")) + " |")
    if doc["not_runnable"]:
        lines += ["", "## Not runnable here", ""]
        lines += [f"- {e['what']}: {e['why']}" for e in doc["not_runnable"]]
    if doc.get("command"):
        lines += ["", f"Command: `{doc['command']}`"]
    return "\n".join(lines) + "\n"


def pareto_figure(doc: Mapping[str, Any]) -> Any:
    """Cost against accuracy loss, one point per timed candidate (cut ones hollow), the
    non-dominated front as a line, the chosen point as a star, the floor as a dashed line;
    ``None`` when nothing was timed."""
    from .extras import needs

    pts = [r for r in doc["candidates"] if r["cost"] is not None]
    if not pts:
        return None
    with needs("report plots"):
        from matplotlib.figure import Figure

    use_drop = doc["floor"]["top1_drop_pp"] is not None
    def x_of(r: Mapping[str, Any]) -> float:
        if use_drop:
            return float(r["top1_drop_pp"] or 0.0)
        return 100.0 * (1.0 - float(r["agreement"] if r["agreement"] is not None else 1.0))

    fig = Figure(figsize=(7.5, 5.0), dpi=110, layout="constrained")
    ax = fig.subplots()
    for r in pts:
        full = r["status"] == "measured"
        ax.plot([x_of(r)], [r["cost"]], marker="s" if r["runner"] == "onnxruntime" else "o",
                markerfacecolor=None if full else "none", color="C0" if full else "C7",
                linestyle="none")
        ax.annotate(r["name"], (x_of(r), r["cost"]), textcoords="offset points",
                    xytext=(4, 3), fontsize=6)
    front, low = [], math.inf
    for r in sorted((r for r in pts if r["status"] == "measured"),
                    key=lambda r: (x_of(r), r["cost"])):
        if r["cost"] < low:
            front.append(r)
            low = r["cost"]
    if front:
        ax.plot([x_of(r) for r in front], [r["cost"] for r in front], color="C1",
                linewidth=1.2, label="Pareto front")
    ch = doc["chosen"]
    if ch:
        ax.plot([x_of(ch)], [ch["cost"]], marker="*", markersize=16, color="C3",
                linestyle="none", label=f"chosen: {ch['name']}")
    limit = doc["floor"]["top1_drop_pp"] if use_drop else (
        100.0 * (1.0 - doc["floor"]["agreement"]))
    ax.axvline(limit, color="gray", linestyle="--", linewidth=1, label="accuracy floor")
    ax.plot([], [], marker="o", markerfacecolor="none", color="C7", linestyle="none",
            label="cut early (its numbers so far)")
    ax.set_yscale("log")
    with needs("report plots"):
        from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.6, not 6e-01 or 10^x
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("top-1 drop from FP32, percentage points" if use_drop
                  else "top-1 disagreement with FP32, % of images")
    ax.set_ylabel(f"{doc['cost']} (log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ctx = doc.get("context") or {}
    ax.set_title(f"tune {Path(doc['model']['path']).name}: {doc['objective']} — load "
                 f"{ctx.get('load_average')}", fontsize=9)
    return fig


def write_tune_report(doc: Mapping[str, Any], output: str | os.PathLike[str], *,
                      force: bool = False) -> Path:
    """Write ``report.json``, ``report.md`` and ``pareto.png`` into the folder ``output``,
    assembled beside it and renamed into place (never half-written); an existing folder is
    replaced only with ``force``, after the new one is complete.

    Raises:
        BenchError: The folder exists without ``force``, or it cannot be written.
    """
    from .errors import DependencyError
    from .report import check_report_dir, staged_report_dir

    out = Path(output)
    target = check_report_dir(out.parent, out.name, force=force)
    with staged_report_dir(target) as tmp:
        (tmp / "report.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        md = render_markdown(doc)
        try:
            fig = pareto_figure(doc)
            if fig is not None:
                fig.savefig(tmp / "pareto.png")
            else:
                md = md.replace("![pareto](pareto.png)", "(nothing was timed: no plot)")
        except DependencyError as exc:
            log.warning("%s; the report has no plot", exc)
            md = md.replace("![pareto](pareto.png)", f"(no plot: {exc})")
        (tmp / "report.md").write_text(md, encoding="utf-8")
    return target
