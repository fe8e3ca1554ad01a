# Over 600 lines on purpose: each self-test check is a short closure next to the runner it
# exercises (including the device questions of issue 21); the stand-in runner is the only class.
"""The post-install self-test, shared by ``xception-trt selftest`` and our ``gpu``/``trt`` tests.

Two groups of checks:

- **CUDA layer** (:func:`run_cuda_checks`, needs an NVIDIA GPU + cuda-python or pycuda + NVRTC):
  allocation, pinned round trips, stream ordering, events, CUDA graph capture/replay,
  multi-threaded use and thousands of calls without leaks, and the whole runner buffer path
  through :class:`StandInRunner`.
- **TensorRT engine** (:func:`run_engine_checks`, also needs a TensorRT flavour that runs on this
  GPU): build a small engine from a tiny Xception, run it through
  :class:`~xception_trt.trt.runtime.TensorRTRunner` (plain and with CUDA graphs, NumPy and device
  inputs), compare with ONNX Runtime, and measure latency.

Some checks answer questions only a device can settle (issue 21) and report the answer in their
detail, or skip with the reason where they do not apply: CUDA graphs against the plain path
with alternating batch sizes on a real engine; how many layers a DLA build really places on the
DLA (strongly typed FP16, where DLA exists); whether TensorRT 8.6 builds an explicit Q/DQ INT8
network for the DLA; whether device pointers from a non-primary pycuda context are usable.

:class:`StandInRunner` is a **STAND-IN, not a neural network**: an NVRTC-compiled kernel
``logits[n, k] = a * x[n].flat[k] + b`` behind exactly the per-call path of ``TensorRTRunner``
(:class:`~xception_trt.trt.cuda_runner.CudaRunnerBase`), so a GPU without TensorRT (e.g. an
H100 with CUDA 13) still exercises and times the real buffer/stream/graph code.

:func:`missing_requirements` says precisely what this machine lacks for each group.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import InputFormat, ModelSpec, Precision
from .errors import DependencyError, EngineError, XceptionTRTError, renamed
from .extras import ensure
from .jsonable import JsonMixin
from .trt.cuda_runner import CudaRunnerBase

__all__ = ["STANDIN_SOURCE", "StandInRunner", "CheckResult", "Requirements",
           "missing_requirements", "run_cuda_checks", "run_engine_checks", "run_selftest",
           "runnable_flavour", "latency_stats"]

log = logging.getLogger(__name__)

#: CUDA source of the stand-in kernel (one thread per output element).
STANDIN_SOURCE = r"""
extern "C" __global__ void xtrt_standin_affine(const float* x, float* y, float a, float b,
                                               int n_out, int in_per_sample,
                                               int out_per_sample) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n_out) {
        int s = i / out_per_sample;
        int k = i - s * out_per_sample;
        y[i] = a * x[(long long)s * in_per_sample + k] + b;
    }
}
"""
_STANDIN_KERNEL = "xtrt_standin_affine"
_BLOCK = 256


# ------------------------------------------------------------------------------------------------
# The stand-in
# ------------------------------------------------------------------------------------------------
class _AffineCompute:
    """The stand-in's "engine": one kernel launch per call (bind -> args, enqueue -> launch)."""

    def __init__(self, cuda: Any, in_per_sample: int, out_per_sample: int, a: float,
                 b: float) -> None:
        from .trt.cuda import compile_kernel

        # --fmad=false: a separate multiply and add round exactly like NumPy's float32 a*x + b,
        # so the GPU result can be compared bit for bit with reference().
        image = compile_kernel(STANDIN_SOURCE, arch=cuda.compute_capability, name="standin.cu",
                               options=("--fmad=false",))
        self._module = cuda.load_module(image)
        self._kernel = self._module.kernel(_STANDIN_KERNEL)
        self._in, self._out, self._a, self._b = in_per_sample, out_per_sample, a, b
        self._launch: tuple | None = None

    def bind(self, input_shape: tuple[int, ...], in_ptr: int, out_ptr: int) -> None:
        n_out = int(input_shape[0]) * self._out
        # Packed once per binding, like TensorRT's set_tensor_address: a launch is one call.
        args = self._kernel.pack((np.uint64(in_ptr), np.uint64(out_ptr), np.float32(self._a),
                                  np.float32(self._b), np.int32(n_out), np.int32(self._in),
                                  np.int32(self._out)))
        grid = ((n_out + _BLOCK - 1) // _BLOCK, 1, 1)
        self._launch = (grid, (_BLOCK, 1, 1), args)

    def enqueue(self, stream: Any) -> None:
        if self._launch is None:
            raise EngineError("stand-in: enqueue before bind")
        grid, block, args = self._launch
        self._kernel.launch(grid, block, args, stream)

    def close(self) -> None:
        self._module.close()


class StandInRunner(CudaRunnerBase):
    """A runner with TensorRTRunner's exact buffer path and an NVRTC kernel as its "engine".

    **STAND-IN, NOT A MODEL**: ``logits[n, k] = a * x[n].reshape(-1)[k] + b``. It exists to
    test and time the CUDA buffer path (pinned staging, async copies on an own stream, device
    inputs, CUDA graphs, locking) on GPUs without TensorRT.

    Args:
        input_size: Side ``S`` of the float32 ``(N, 3, S, S)`` input.
        num_classes: Logits per sample (<= 3 * S * S).
        max_batch: Largest batch; buffers are allocated once for it.
        device, cuda_binding, cuda_graphs, check_finite, gpu_timing: As for
            :class:`~xception_trt.trt.runtime.TensorRTRunner`.
        a, b: The affine map's coefficients.

    Raises:
        EngineError, DependencyError: No GPU/driver, backend or NVRTC missing.
    """

    def __init__(self, *, input_size: int = 299, num_classes: int = 1000, max_batch: int = 8,
                 device: int = 0, cuda_binding: str | None = None, cuda_graphs: bool = False,
                 check_finite: bool = False, gpu_timing: bool = False, a: float = 2.0,
                 b: float = 0.5, cuda_backend: str | None = None) -> None:
        from .contract import input_spec_for, output_spec_for
        from .trt.cuda import CudaDevice

        cuda_binding = renamed("cuda_backend", "cuda_binding", cuda_backend, cuda_binding,
                               where="StandInRunner") or "cuda-python"

        if 3 * input_size * input_size < num_classes:
            raise EngineError("stand-in: num_classes must not exceed 3 * input_size**2")
        self.spec = ModelSpec(num_classes=num_classes, input_size=input_size, width=0.125,
                              middle_blocks=0, source="standin")
        self.name = "standin-affine"
        self.input_format = InputFormat.FLOAT_NCHW
        self.precision = Precision.FP32
        self.input_spec = input_spec_for(self.spec, self.input_format)
        self.output_spec = output_spec_for(self.spec)
        self.min_batch, self.max_batch = 1, int(max_batch)
        self.cuda_graphs, self.check_finite = bool(cuda_graphs), bool(check_finite)
        self._a, self._b = np.float32(a), np.float32(b)
        cuda = CudaDevice(device, cuda_binding)
        self.device = f"cuda:{cuda.index}"
        try:
            self._compute = _AffineCompute(cuda, 3 * input_size * input_size, num_classes, a, b)
            self._setup(cuda, max_batch=self.max_batch, gpu_timing=gpu_timing)
        except BaseException:
            if self._compute is not None:
                self._compute.close()
                self._compute = None
            cuda.close()
            raise

    def reference(self, x: np.ndarray) -> np.ndarray:
        """What the kernel computes, in NumPy (bit-identical: the kernel is built without FMA)."""
        flat = np.asarray(x, np.float32).reshape(x.shape[0], -1)
        return (self._a * flat[:, : self.spec.num_classes] + self._b).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """Backend facts (clearly marked as the stand-in)."""
        self._check_open()
        backend = self._cuda.backend
        return {"backend": "standin", "name": self.name, "device": self.device,
                "cuda_backend": backend.name, "cuda": backend.versions(),
                "cuda_graphs": self.cuda_graphs, "max_batch": self.max_batch,
                "note": "STAND-IN kernel (y = a*x + b), not a neural network"}



# ------------------------------------------------------------------------------------------------
# Requirements
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Requirements:
    """What this machine has for the self-test, and what is missing (each line says the fix).

    Attributes:
        gpus: ``"name (cc X.Y)"`` of each GPU found.
        cuda_backends: Backends that import (``cuda-python``, ``pycuda``).
        flavour: The TensorRT flavour that can run engines on GPU 0, or ``None``.
        missing_cuda: Why the CUDA-layer checks cannot run (empty: they can).
        missing_engine: Why the engine checks cannot run (empty: they can).
    """

    gpus: tuple[str, ...]
    cuda_backends: tuple[str, ...]
    flavour: str | None
    compute_capability: str | None
    missing_cuda: tuple[str, ...]
    missing_engine: tuple[str, ...]


def runnable_flavour(importable: dict[str, str], cc: tuple[int, int] | None) -> tuple[
        str | None, list[str]]:
    """The TensorRT flavour that can run engines on a GPU of compute capability ``cc``.

    Args:
        importable: ``{flavour name: version}`` of the flavours that import.
        cc: The GPU's compute capability, ``None`` without a GPU.

    Returns:
        (flavour or ``None``, reasons why none/others cannot run).
    """
    reasons = []
    if "tensorrt" in importable:
        return "tensorrt", reasons
    reasons.append("NVIDIA TensorRT ('tensorrt') does not import: install it (JetPack on Jetson; "
                   "pip install 'xception-trt[trt]' on desktops)")
    if "tensorrt_rtx" in importable:
        if cc is None:
            reasons.append("TensorRT-RTX is installed but runs engines only on an NVIDIA RTX GPU")
        elif cc < (7, 5) or cc[0] in (9, 10):
            reasons.append(f"TensorRT-RTX is installed but does not run on compute capability "
                           f"{cc[0]}.{cc[1]} (it needs an RTX-class GPU: Turing or newer, not "
                           "datacenter Hopper/Blackwell)")
        else:
            return "tensorrt_rtx", reasons
    else:
        reasons.append("TensorRT-RTX ('tensorrt_rtx') is not installed either")
    return None, reasons


#: What the engine checks import: they export a small PyTorch model to ONNX, build it and
#: compare the engine with ONNX Runtime (the build extra; a device's core install lacks them).
_ENGINE_CHECK_NEEDS = ("torch", "onnx", "onnxscript", "onnx_graphsurgeon", "onnxruntime")


def engine_toolchain_missing() -> str | None:
    """Why the engine checks cannot build their test engine here (``None``: they can)."""
    try:
        ensure(*_ENGINE_CHECK_NEEDS, extra="build",
               purpose="the engine checks (a small engine built from the PyTorch model and "
                       "compared with ONNX Runtime; the CUDA checks run without it)")
    except DependencyError as exc:
        return str(exc)
    return None


def missing_requirements() -> Requirements:
    """Probe GPUs, CUDA backends, NVRTC and TensorRT flavours (never raises)."""
    from . import sysinfo
    from .trt.cuda import nvrtc_status

    report = sysinfo.devices()
    gpus = tuple(f"{g.name} (cc {g.compute_capability})" for g in report.gpus)
    cc = None
    if report.gpus:
        major, minor = report.gpus[0].compute_capability.split(".")
        cc = (int(major), int(minor))
    status = {b.name: b.problem for b in sysinfo.cuda_bindings()}
    backends = tuple(n for n, why in status.items() if why is None)
    missing_cuda: list[str] = []
    if not report.gpus:
        missing_cuda.append(f"no NVIDIA GPU: {report.reason or 'none found'}")
    if not backends:
        missing_cuda.append(f"no CUDA Python binding: {status['cuda-python']}")
    if "cuda-python" in backends and (why := nvrtc_status()):
        missing_cuda.append(why)
    importable = {f.name: f.version for f in sysinfo.flavours()}
    flavour, reasons = runnable_flavour(importable, cc)
    missing_engine = list(missing_cuda)
    if flavour is None:
        missing_engine.extend(reasons)
    elif not missing_cuda and (why := engine_toolchain_missing()):
        # Named only once the GPU stack is complete: on a device, what is missing first is
        # TensorRT or the CUDA binding, not the workstation's toolchain.
        missing_engine.append(why)
    return Requirements(gpus, backends, flavour, None if cc is None else f"{cc[0]}.{cc[1]}",
                        tuple(missing_cuda), tuple(missing_engine))


# ------------------------------------------------------------------------------------------------
# Check results
# ------------------------------------------------------------------------------------------------
@dataclass
class CheckResult(JsonMixin):
    """One self-test check: ``status`` is ``pass``, ``fail`` or ``skip``; ``detail`` says
    what was measured or what went wrong; ``seconds`` is its wall time."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)


class _Skip(Exception):
    """Raised by a check that does not apply here; its message says why."""


def _run(name: str, fn: Callable[[], str | tuple[str, dict]], results: list[CheckResult]) -> None:
    t0 = time.perf_counter()
    try:
        out = fn()
        detail, data = (out if isinstance(out, tuple) else (out, {}))
        results.append(CheckResult(name, "pass", detail, time.perf_counter() - t0, data))
    except _Skip as why:
        results.append(CheckResult(name, "skip", str(why), time.perf_counter() - t0))
    except Exception as exc:  # recorded as a failed check (type and message), never hidden
        log.debug("self-test check %s failed", name, exc_info=True)
        results.append(CheckResult(name, "fail", f"{type(exc).__name__}: {exc}",
                                   time.perf_counter() - t0))


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise AssertionError(message)


def _in_threads(call: Callable[[int, int], str | None], *, threads: int, calls: int) -> None:
    """Run ``call(thread, i)`` ``calls`` times in each of ``threads`` threads at once.

    ``call`` returns ``None`` when its result is right, else what was wrong; a thread stops at
    its first problem or exception.

    Raises:
        AssertionError: Any thread saw a problem (a failed check; the first three are quoted).
    """
    errors: list[str] = []

    def worker(seed: int) -> None:
        try:
            for i in range(calls):
                problem = call(seed, i)
                if problem is not None:
                    errors.append(f"thread {seed}: {problem}")
                    return
        except Exception as exc:  # reported below
            errors.append(f"thread {seed}: {exc}")

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    _expect(not errors, "; ".join(errors[:3]))


def latency_stats(samples_s: list[float]) -> dict[str, float]:
    """Median, p99 and mean of durations in seconds, returned in microseconds."""
    arr = np.sort(np.asarray(samples_s, dtype=np.float64)) * 1e6
    return {"median_us": float(np.median(arr)), "p99_us": float(np.percentile(arr, 99)),
            "mean_us": float(arr.mean()), "n": int(arr.size)}


# ------------------------------------------------------------------------------------------------
# CUDA layer checks
# ------------------------------------------------------------------------------------------------
#: Rounds of ``calls`` calls in the leak check, and how much free device memory may move
#: between readings without a leak: ``cudaMemGetInfo`` reports the whole device (other
#: processes on a busy desktop) and on a Jetson the shared system RAM.
LEAK_ROUNDS = 3
LEAK_TOLERANCE_BYTES = 8 << 20


def leak_problem(free: list[int], calls: int, *,
                 tolerance: int = LEAK_TOLERANCE_BYTES) -> str | None:
    """Whether free device memory read before and after each round of ``calls`` calls shows
    a leak: memory that keeps shrinking round after round by more than ``tolerance`` in all
    (not one dip that later rounds do not repeat). ``None``: no leak."""
    drops = [a - b for a, b in zip(free, free[1:])]
    if free[0] - free[-1] > tolerance and all(d > 0 for d in drops[1:]):
        return (f"device memory shrank by {free[0] - free[-1]} bytes over {len(drops)} x "
                f"{calls} calls, in every round ({', '.join(map(str, drops))} bytes)")
    return None


#: The check that hands the runner memory of another (non-primary) context: a failure there
#: can leave a sticky CUDA error in the process, so run_selftest runs it after everything else.
FOREIGN_CONTEXT_CHECK = "device pointers from a non-primary context"


def run_cuda_checks(cuda_binding: str | None = None, device: int = 0, *,
                    calls: int = 2000, backend: str | None = None,
                    only: tuple[str, ...] | None = None,
                    exclude: tuple[str, ...] = ()) -> list[CheckResult]:
    """Exercise the CUDA layer and the runner path with the stand-in on a real GPU.

    Args:
        cuda_binding: ``cuda-python`` (default) or ``pycuda``.
        device: CUDA device ordinal.
        calls: Calls in the leak check.
        backend: Old name of ``cuda_binding`` (deprecated).
        only: Run only the checks of these names (without the binding prefix).
        exclude: Leave out the checks of these names (e.g. :data:`FOREIGN_CONTEXT_CHECK`).

    Returns:
        One :class:`CheckResult` per check (never raises for a failing check).
    """
    backend = renamed("backend", "cuda_binding", backend, cuda_binding,
                      where="run_cuda_checks") or "cuda-python"
    from .trt.cuda import CudaDevice, DeviceArray

    results: list[CheckResult] = []
    try:
        cuda = CudaDevice(device, backend)
    except XceptionTRTError as exc:
        return [CheckResult(f"{backend}: open device", "fail", str(exc))]
    rng = np.random.default_rng(0)
    tag = f"{backend}: "
    no_graphs = cuda.backend.graphs_unsupported()

    def allocation() -> str:
        with cuda.stream() as s, cuda.alloc(1 << 20) as buf, cuda.pinned((1 << 20,), np.uint8) as h:
            buf.fill_bytes(0xAB, s)
            buf.copy_to_host(h.array, s)
            s.synchronize()
            _expect(bool((h.array == 0xAB).all()), "memset pattern not read back")
        return f"1 MiB device + pinned buffers on {cuda.name} (cc {cuda.compute_capability})"

    def pinned_round_trip() -> str:
        x = rng.standard_normal((4, 3, 299, 299)).astype(np.float32)
        with cuda.stream() as s, cuda.pinned(x.shape, x.dtype) as a, \
                cuda.pinned(x.shape, x.dtype) as b, cuda.alloc(x.nbytes) as d:
            a.array[...] = x
            d.copy_from_host(a.array, s)
            d.copy_to_host(b.array, s)
            s.synchronize()
            _expect(np.array_equal(b.array, x), "pinned H2D/D2H round trip changed the data")
            pageable = np.empty_like(x)
            d.copy_to_host(pageable, s)
            s.synchronize()
            _expect(np.array_equal(pageable, x), "pageable D2H changed the data")
        return f"{x.nbytes} bytes pinned and pageable round trips bit-exact"

    def stream_ordering() -> str:
        # Two copies into one buffer then one back: stream order means the second copy wins.
        first = np.full(1 << 16, 1.0, np.float32)
        second = np.full(1 << 16, 2.0, np.float32)
        with cuda.stream() as s, cuda.alloc(first.nbytes) as d, \
                cuda.pinned(first.shape, np.float32) as p1, \
                cuda.pinned(first.shape, np.float32) as p2, \
                cuda.pinned(first.shape, np.float32) as out:
            p1.array[...], p2.array[...] = first, second
            for _ in range(20):
                d.copy_from_host(p1.array, s)
                d.copy_from_host(p2.array, s)
                d.copy_to_host(out.array, s)
                s.synchronize()
                _expect(bool((out.array == 2.0).all()), "copies on one stream ran out of order")
                out.array[...] = 0
        return "20 rounds of (H2D, H2D, D2H) kept stream order"

    def events() -> str:
        with cuda.stream() as s, cuda.event(timing=True) as e0, cuda.event(timing=True) as e1, \
                cuda.alloc(64 << 20) as d:
            e0.record(s)
            for _ in range(8):
                d.fill_bytes(1, s)
            e1.record(s)
            e1.synchronize()
            _expect(e1.query() and e0.query(), "events not complete after synchronize")
            ms = e0.elapsed_ms(e1)
            _expect(ms > 0, f"elapsed time {ms} ms is not positive")
        return f"8 x 64 MiB memset timed at {ms:.3f} ms by events"

    def runner_path(graphs: bool) -> Callable[[], str]:
        def check() -> str:
            if graphs and no_graphs:
                raise _Skip(no_graphs)
            with StandInRunner(device=device, cuda_binding=backend, cuda_graphs=graphs,
                                    max_batch=4) as r:
                for n in (1, 4, 2, 1):
                    x = rng.standard_normal((n, 3, 299, 299)).astype(np.float32)
                    y = r.infer(x)
                    _expect(y.shape == (n, 1000) and np.array_equal(y, r.reference(x)),
                            f"stand-in output differs from its reference at batch {n}")
                # device input and device output, no host copy of either
                x = rng.standard_normal((2, 3, 299, 299)).astype(np.float32)
                with cuda.alloc(x.nbytes) as din, cuda.alloc(2 * 1000 * 4) as dout, \
                        cuda.stream() as s, cuda.pinned((2, 1000), np.float32) as back:
                    with cuda.pinned(x.shape, x.dtype) as px:
                        px.array[...] = x
                        din.copy_from_host(px.array, s)
                        s.synchronize()
                    r.infer(DeviceArray(din, x.shape, x.dtype),
                            out=DeviceArray(dout, (2, 1000), np.float32))
                    dout.copy_to_host(back.array, s)
                    s.synchronize()
                    _expect(np.array_equal(back.array, r.reference(x)),
                            "device-input/device-output path differs from the reference")
                h = r.infer_async(x)
                y = h.wait(timeout=10.0)
                _expect(h.done() and np.array_equal(y, r.reference(x)), "infer_async result")
            return "NumPy batches 1/4/2/1, device in/out and infer_async match the reference"
        return check

    def graph_replay() -> str:
        if no_graphs:
            raise _Skip(no_graphs)
        with StandInRunner(device=device, cuda_binding=backend, cuda_graphs=True,
                                max_batch=2) as r:
            outs = []
            for i in range(50):  # one captured graph, replayed with new input contents
                x = np.full((1, 3, 299, 299), float(i), np.float32)
                outs.append(r.infer(x)[0, 0])
            _expect(len(r._graphs) == 1, f"expected 1 captured graph, found {len(r._graphs)}")
            _expect(outs == [2.0 * i + 0.5 for i in range(50)], "graph replay reused stale input")
        return "1 graph captured, 50 replays each saw its new input"

    def threads() -> str:
        with StandInRunner(device=device, cuda_binding=backend, max_batch=2) as shared:
            def call(seed: int, i: int) -> str | None:
                x = np.random.default_rng(seed + 1000 * i).standard_normal(
                    (2, 3, 299, 299)).astype(np.float32)
                if not np.array_equal(shared.infer(x), shared.reference(x)):
                    return "wrong result on the shared runner"
                return None

            _in_threads(call, threads=4, calls=100)
        return "4 threads x 100 calls on one runner (lock-serialised) all correct"

    def no_leaks() -> tuple[str, dict]:
        x = rng.standard_normal((1, 3, 299, 299)).astype(np.float32)
        with StandInRunner(device=device, cuda_binding=backend, max_batch=1) as r:
            r.infer(x)
            free = [cuda.backend.mem_get_info()[0]]
            for _ in range(LEAK_ROUNDS):  # a leak grows round after round; noise does not
                for _ in range(calls):
                    r.infer(x)
                free.append(cuda.backend.mem_get_info()[0])
        problem = leak_problem(free, calls)
        _expect(problem is None, problem or "")
        free0, free1 = free[0], free[-1]
        free_a, _ = cuda.backend.mem_get_info()
        for _ in range(20):
            StandInRunner(device=device, cuda_binding=backend, max_batch=4).close()
        free_b, _ = cuda.backend.mem_get_info()
        # The driver may keep a little memory around (module loads); 4 MiB bounds a real leak
        # of 20 x (pinned + device buffers of 4 x 1.07 MB).
        _expect(free_a - free_b <= 4 << 20,
                f"20 open/close cycles lost {(free_a - free_b) / 2**20:.1f} MiB of device memory")
        return (f"{LEAK_ROUNDS} x {calls} calls: free memory {free0} -> {free1} B; 20 "
                f"open/close cycles: {free_a - free_b} B difference"), {
                    "free_before": free0, "free_after": free1, "free_per_round": free}

    def foreign_context_pointers() -> str:
        # Issue 21: TensorRT and our runner use the primary context; can they read memory an
        # application allocated in a context of its own? The answer is the detail.
        if backend != "pycuda":
            raise _Skip("only the pycuda backend creates non-primary contexts here; cuda-python "
                        "and TensorRT share the primary context")
        from .trt.cuda import SecondaryContextArray

        x = rng.standard_normal((2, 3, 299, 299)).astype(np.float32)
        arr = SecondaryContextArray(x, device)
        try:
            with StandInRunner(device=device, cuda_binding=backend, max_batch=2) as r:
                try:
                    y = r.infer(arr)
                except XceptionTRTError as exc:
                    return (f"answer: NOT usable — a device pointer from a non-primary context "
                            f"is refused ({exc}); hand the runner arrays of the primary context")
                _expect(np.array_equal(y, r.reference(x)),
                        "a device pointer from a non-primary context gave WRONG results "
                        "without an error")
        finally:
            arr.close()
        return ("answer: usable — a device pointer from a non-primary pycuda context gave the "
                "reference result through the primary context (unified addressing)")

    def use_after_close() -> str:
        r = StandInRunner(device=device, cuda_binding=backend, max_batch=1)
        r.close()
        r.close()
        try:
            r.infer(np.zeros((1, 3, 299, 299), np.float32))
        except EngineError:
            return "closed runner raises EngineError; close() twice is a no-op"
        raise AssertionError("a closed runner accepted a call")

    try:
        for name, fn in [("allocation", allocation), ("pinned round trip", pinned_round_trip),
                         ("stream ordering", stream_ordering), ("events", events),
                         ("runner path (plain)", runner_path(False)),
                         ("runner path (CUDA graphs)", runner_path(True)),
                         ("graph capture/replay", graph_replay), ("multi-threaded", threads),
                         (f"{calls} calls without leaks", no_leaks),
                         ("use after close", use_after_close),
                         # last: a failure here could leave a sticky CUDA error behind
                         (FOREIGN_CONTEXT_CHECK, foreign_context_pointers)]:
            if (only is not None and name not in only) or name in exclude:
                continue
            _run(tag + name, fn, results)
    finally:
        cuda.close()
    return results


# ------------------------------------------------------------------------------------------------
# TensorRT engine checks
# ------------------------------------------------------------------------------------------------
def run_engine_checks(flavour: str, *, device: int = 0, cuda_binding: str | None = None,
                      workdir: str | Path | None = None, iterations: int = 200,
                      atol: float = 1e-3, backend: str | None = None) -> list[CheckResult]:
    """Build a tiny engine with ``flavour`` and check it against ONNX Runtime.

    Args:
        flavour: ``tensorrt`` or ``tensorrt_rtx`` (see :func:`runnable_flavour`).
        device: CUDA device ordinal.
        cuda_binding: CUDA binding of the runner (default ``cuda-python``).
        workdir: Where the ONNX file and engine go (default: a temporary directory).
        iterations: Calls per latency measurement.
        atol: Largest absolute logit difference accepted against ONNX Runtime (FP32).
        backend: Old name of ``cuda_binding`` (deprecated).

    Returns:
        One :class:`CheckResult` per check.
    """
    backend = renamed("backend", "cuda_binding", backend, cuda_binding,
                      where="run_engine_checks") or "cuda-python"
    results: list[CheckResult] = []
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="xtrt-selftest-")
        workdir = tmp.name
    work = Path(workdir)
    state: dict[str, Any] = {}
    try:
        def build() -> str:
            import torch

            from .config import BuildConfig
            from .export import export_onnx
            from .model import build_xception
            from .trt.builder import build_engine

            spec = ModelSpec(num_classes=10, width=0.125, middle_blocks=1, input_size=71,
                             source="random")
            torch.manual_seed(0)
            model = build_xception(spec=spec).eval()
            onnx_path = work / "selftest.onnx"
            export_onnx(model, onnx_path, batch="dynamic")
            ccs = ("CURRENT",) if flavour == "tensorrt_rtx" else ()
            cfg = BuildConfig(flavour=flavour, min_batch=1, opt_batch=2, max_batch=4,
                              cc=ccs, layer_info=False)
            art = build_engine(onnx_path, cfg, output=work / "selftest.engine", force=True)
            state.update(onnx=onnx_path, engine=art.path, spec=spec)
            return f"{art.path.name}: {art.size_bytes} bytes with {flavour} in {art.seconds:.1f} s"

        _run("engine: build", build, results)
        if "engine" not in state:
            return results
        from .runners import OnnxRuntimeRunner
        from .trt.cuda import CudaDevice, DeviceArray
        from .trt.runtime import TensorRTRunner

        rng = np.random.default_rng(0)
        spec = state["spec"]
        x4 = rng.standard_normal((4, 3, spec.input_size, spec.input_size)).astype(np.float32)
        with OnnxRuntimeRunner(state["onnx"], providers=["CPUExecutionProvider"]) as ort:
            ref4 = ort(x4)
        x, ref = x4[:3], ref4[:3]
        try:
            probe = CudaDevice(device, backend)
        except XceptionTRTError as exc:  # each check below reports it
            log.debug("self-test: cannot open the CUDA device: %s", exc)
            no_graphs = None
        else:
            try:
                no_graphs = probe.backend.graphs_unsupported()
            finally:
                probe.close()
        from .trt import import_flavour
        from .trt.compat import profile_zero_for_one_context

        version = import_flavour(flavour).version
        if not no_graphs and profile_zero_for_one_context(flavour, version):
            no_graphs = (f"TensorRT {version} gives optimization profile 0 to one execution "
                         "context only, so the runner refuses CUDA graphs for the self-test's "
                         "dynamic-batch engine (batch 1..4); fixed-batch engines replay graphs")

        def compare(graphs: bool) -> Callable[[], tuple[str, dict]]:
            def check() -> tuple[str, dict]:
                if graphs and no_graphs:
                    raise _Skip(no_graphs)
                with TensorRTRunner(state["engine"], device=device, cuda_binding=backend,
                                    cuda_graphs=graphs) as r:
                    y = r.infer(x)
                    err = float(np.abs(y - ref).max())
                    _expect(err <= atol, f"max |TensorRT - ONNX Runtime| = {err:.2e} > {atol}")
                    cuda = CudaDevice(device, backend)
                    try:
                        with cuda.stream() as s, cuda.alloc(x.nbytes) as din, \
                                cuda.pinned(x.shape, x.dtype) as px:
                            px.array[...] = x
                            din.copy_from_host(px.array, s)
                            s.synchronize()
                            y_dev = r.infer(DeviceArray(din, x.shape, x.dtype))
                    finally:
                        cuda.close()
                    _expect(np.array_equal(y_dev, y), "device input gave other logits than NumPy")
                    one = x[:1].copy()
                    r.infer(one)
                    times = []
                    for _ in range(iterations):
                        t0 = time.perf_counter()
                        r.infer(one)
                        times.append(time.perf_counter() - t0)
                    stats = latency_stats(times)
                return (f"max |diff| vs ONNX Runtime {err:.2e}; device input identical; batch 1 "
                        f"latency median {stats['median_us']:.0f} us, p99 "
                        f"{stats['p99_us']:.0f} us"), stats
            return check

        def threads() -> str:
            with TensorRTRunner(state["engine"], device=device, cuda_binding=backend,
                                cuda_graphs=not no_graphs) as r:
                def call(seed: int, i: int) -> str | None:
                    k = 1 + (seed + i) % 3
                    err = float(np.abs(r.infer(x[:k]) - ref[:k]).max())
                    return f"|diff| {err:.2e}" if err > atol else None

                _in_threads(call, threads=4, calls=25)
            return (f"4 threads x 25 calls (batches 1-3, "
                    f"{'no CUDA graphs' if no_graphs else 'CUDA graphs'}) on one runner all "
                    "correct")

        def graphs_vs_plain() -> tuple[str, dict]:
            # One execution context per captured graph (issue 21 item 1): alternating batch
            # sizes replay each its own graph; the plain path re-binds one context.
            if no_graphs:
                raise _Skip(no_graphs)
            sizes = (1, 4, 1, 4, 2, 3, 1)
            with TensorRTRunner(state["engine"], device=device, cuda_binding=backend,
                                cuda_graphs=True) as g, \
                    TensorRTRunner(state["engine"], device=device, cuda_binding=backend) as p:
                plain = ort_err = 0.0
                for n in sizes:
                    yg = g.infer(x4[:n])
                    plain = max(plain, float(np.abs(yg - p.infer(x4[:n])).max()))
                    ort_err = max(ort_err, float(np.abs(yg - ref4[:n]).max()))
            _expect(plain <= atol and ort_err <= atol,
                    f"CUDA graphs with alternating batches {sizes}: max |graphs - plain| "
                    f"{plain:.2e}, max |graphs - ONNX Runtime| {ort_err:.2e} (> {atol})")
            same = "bit-identical to" if plain == 0 else f"within {plain:.2e} of"
            return (f"answer: batches {'/'.join(map(str, sizes))} alternating: CUDA graphs "
                    f"{same} the plain path; max |diff| vs ONNX Runtime {ort_err:.2e}",
                    {"max_diff_plain": plain, "max_diff_ort": ort_err})

        _run("engine: TensorRTRunner plain vs ONNX Runtime", compare(False), results)
        _run("engine: TensorRTRunner CUDA graphs vs ONNX Runtime", compare(True), results)
        _run("engine: TensorRTRunner multi-threaded", threads, results)
        _run("engine: CUDA graphs vs plain, alternating batch sizes", graphs_vs_plain, results)
        for name, fn in _dla_checks(flavour, state, work, x4[:2], ref4[:2], device=device,
                                    backend=backend):
            _run(name, fn, results)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return results


def _dla_checks(flavour: str, state: dict[str, Any], work: Path, x: np.ndarray, ref: np.ndarray,
                *, device: int, backend: Any) -> list[tuple[str, Callable[[], tuple[str, dict]]]]:
    """Two questions only a Jetson with DLA answers (issue 21), each reported as the detail:
    how many layers a DLA build places on the DLA (FP16; strongly typed from TensorRT 10), and
    whether TensorRT 8.6 builds an explicit Q/DQ INT8 network for the DLA."""
    from . import trt as trt_pkg
    from .config import BuildConfig
    from .errors import BuildError
    from .trt.builder import build_engine, dla_core_count
    from .trt.compat import network_and_precision_plan, parse_version
    from .trt.runtime import TensorRTRunner

    def cores() -> tuple[int, str]:
        version = trt_pkg.import_flavour(flavour).version
        count = dla_core_count(flavour)
        if count == 0:
            raise _Skip(f"no DLA here ({flavour} {version}: no DLA core, or a release without "
                        "DLA support)")
        return count, version

    def build_and_run(onnx: Path, precision: str, what: str) -> tuple[str, dict]:
        cfg = BuildConfig(flavour=flavour, precision=precision, batch=len(x), dla_core=0,
                          layer_info=True)
        art = build_engine(onnx, cfg, output=work / f"selftest.dla-{precision}.engine",
                           force=True)
        layers = art.sidecar.layers or []
        on_dla = [la for la in layers if any(k in f"{la.get('type')} {la.get('name')}".lower()
                                             for k in ("dla", "foreignnode"))]
        with TensorRTRunner(art.path, device=device, cuda_binding=backend) as r:
            y = r.infer(x)
        _expect(bool(np.isfinite(y).all()), f"the DLA {precision} engine returned NaN/Inf")
        err = float(np.abs(y - ref).max())
        return (f"answer: {len(on_dla)} of {len(layers)} layers on DLA core 0 ({what}); "
                f"max |diff| vs ONNX Runtime FP32 {err:.2e}",
                {"layers": len(layers), "on_dla": len(on_dla), "max_diff": err,
                 "layer_types": sorted({str(la.get("type")) for la in layers})})

    def placement() -> tuple[str, dict]:
        _, version = cores()
        plan = network_and_precision_plan(flavour, version, "fp16")
        onnx = state["onnx"]
        if plan.strongly_typed:  # the graph carries FP16
            from .precision import to_fp16

            onnx = work / "selftest.fp16.onnx"
            to_fp16(state["onnx"], output=onnx)
        return build_and_run(onnx, "fp16", f"{flavour} {version}, "
                             + ("strongly typed FP16 network" if plan.strongly_typed
                                else "FP16 builder flag"))

    def qdq_int8() -> tuple[str, dict]:
        _, version = cores()
        if parse_version(version) >= (10,):
            raise _Skip(f"the question is about TensorRT 8.6 (JetPack 5); this is {flavour} "
                        f"{version}")
        from .precision import quantize_int8

        onnx = work / "selftest.int8.onnx"
        calib = np.random.default_rng(1).standard_normal((16, *x.shape[1:])).astype(np.float32)
        quantize_int8(state["onnx"], calib, num_images=16, cache_dir=None, output=onnx)
        try:
            return build_and_run(onnx, "int8", f"TensorRT {version}, explicit Q/DQ INT8")
        except BuildError as exc:
            return (f"answer: TensorRT {version} does NOT build the explicit Q/DQ INT8 network "
                    f"for DLA: {exc}", {"built": False})

    return [("engine: DLA placement (FP16)", placement),
            ("engine: explicit Q/DQ INT8 on DLA (TensorRT 8.6)", qdq_int8)]


# ------------------------------------------------------------------------------------------------
# Everything
# ------------------------------------------------------------------------------------------------
@dataclass
class SelftestReport(JsonMixin):
    """What ran, what passed, and what is missing."""

    requirements: Requirements
    results: list[CheckResult]

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def complete(self) -> bool:
        """Every check group could run here."""
        return not self.requirements.missing_engine

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        return {**out, "failed": len(self.failed), "complete": self.complete}


def run_selftest(*, device: int = 0, cuda_bindings: tuple[str, ...] | None = None,
                 engine: bool = True, calls: int = 2000,
                 progress: Callable[[CheckResult], None] | None = None,
                 backends: tuple[str, ...] | None = None) -> SelftestReport:
    """Run every check this machine supports.

    Args:
        device: CUDA device ordinal.
        cuda_bindings: CUDA bindings to test (default: every installed one).
        engine: Also build and run a TensorRT engine when a runnable flavour exists.
        calls: Calls in the leak check.
        progress: Called with each result as it arrives.
        backends: Old name of ``cuda_bindings`` (deprecated).

    Returns:
        A :class:`SelftestReport`; ``requirements.missing_*`` list what could not run and why.
    """
    backends = renamed("backends", "cuda_bindings", backends, cuda_bindings,
                       where="run_selftest")
    req = missing_requirements()
    results: list[CheckResult] = []

    def add(batch: list[CheckResult]) -> None:
        for r in batch:
            results.append(r)
            if progress is not None:
                progress(r)

    bindings = tuple(backends or req.cuda_backends) if not req.missing_cuda else ()
    # The foreign-context check can leave a sticky CUDA error behind (issue 26): it runs after
    # the engine checks, so that it cannot make them fail.
    for b in bindings:
        add(run_cuda_checks(b, device, calls=calls, exclude=(FOREIGN_CONTEXT_CHECK,)))
    if engine and not req.missing_engine and req.flavour is not None:
        add(run_engine_checks(req.flavour, device=device,
                              cuda_binding=(backends or req.cuda_backends)[0]))
    for b in bindings:
        add(run_cuda_checks(b, device, calls=calls, only=(FOREIGN_CONTEXT_CHECK,)))
    return SelftestReport(req, results)
