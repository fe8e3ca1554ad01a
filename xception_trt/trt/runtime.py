"""Run a serialized TensorRT engine from Python: :class:`TensorRTRunner`.

Written against the TensorRT >= 8.5 name-based API, identical in TensorRT 10.x, 11.x and
TensorRT-RTX: ``Runtime.deserialize_cuda_engine``, ``num_io_tensors`` / ``get_tensor_name`` /
``get_tensor_mode`` / ``get_tensor_dtype`` / ``get_tensor_profile_shape``,
``create_execution_context``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``.

The per-call path (shared with the NVRTC stand-in in :mod:`xception_trt.selftest`, so that the
stand-in measures exactly this code's host overhead) lives in :class:`CudaRunnerBase`:

1. validate the input (shape, dtype, rank, C-contiguity, batch within the profile, optional
   NaN/Inf check) -- pure logic, :func:`xception_trt.runners.check_batch` and
   :func:`check_device_batch`;
2. NumPy input: copy into a pinned buffer and enqueue an async host-to-device copy on the
   runner's own stream. Device input (``__cuda_array_interface__`` / DLPack, e.g. torch or CuPy):
   bind its address directly -- no host copy, no device copy;
3. ``set_input_shape`` + ``set_tensor_address`` (only when they change) + ``execute_async_v3``;
4. enqueue the device-to-host copy into a pinned buffer (or write into a caller's device
   array given as ``out=``), record an event; :meth:`InferenceHandle.wait` synchronises and
   returns a copy of the logits.

With ``cuda_graphs=True`` steps 2-4 are captured once per batch size into a CUDA graph and
replayed with one ``cudaGraphLaunch``.

Thread safety: one runner owns one execution context, one stream and one set of buffers; every
public method takes the runner's lock, so concurrent calls from several threads are serialised
(safe, not parallel). For parallel inference open one runner per thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from ..config import InputFormat, ModelSpec, Precision
from ..errors import ConfigError, EngineError, XceptionTRTError
from ..onnx_meta import INPUT_NAME, OUTPUT_NAME
from ..runners import TensorSpec, check_batch, input_spec_for, output_spec_for
from .cuda import CudaDevice, CudaGraph, DeviceArrayInfo, Stream, device_array_info

__all__ = ["TensorRTRunner", "CudaRunnerBase", "InferenceHandle", "EngineIO", "describe_engine",
           "deserialize",
           "check_device_batch", "check_device_output", "model_facts_from_sidecar"]

log = logging.getLogger(__name__)

#: Alignment in bytes of the I/O addresses handed to TensorRT (cudaMalloc guarantees 256);
#: device arrays at other addresses (e.g. a sliced tensor) are staged through our buffers.
_ALIGN = 256


# ------------------------------------------------------------------------------------------------
# Pure logic: engine I/O, device-array validation, sidecar facts
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineIO:
    """The input/output tensors and batch range of an engine's optimisation profile 0.

    Attributes:
        input: The input tensor (``-1`` = dynamic batch).
        output: The logits tensor.
        min_batch, opt_batch, max_batch: The profile's batch range (equal for a static engine).
    """

    input: TensorSpec
    output: TensorSpec
    min_batch: int
    opt_batch: int
    max_batch: int


def describe_engine(engine: Any, trt: Any) -> EngineIO:
    """Read the I/O tensors and profile of a deserialized engine.

    Args:
        engine: A ``ICudaEngine``.
        trt: The TensorRT module that created it (``tensorrt`` or ``tensorrt_rtx``).

    Raises:
        EngineError: Not exactly one input ``input`` and one output ``logits`` (not an
            xception-trt engine), an unsupported dtype, or non-batch dimensions left dynamic.
    """
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise EngineError(f"the engine has inputs {inputs} and outputs {outputs}; an xception-trt "
                          f"engine has exactly one input {INPUT_NAME!r} and one output "
                          f"{OUTPUT_NAME!r} — build it with `xception-trt build`")

    def spec(name: str) -> TensorSpec:
        try:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        except TypeError:
            raise EngineError(f"tensor {name!r} has data type {engine.get_tensor_dtype(name)}, "
                              "which NumPy cannot hold; rebuild with FP32 I/O") from None
        return TensorSpec(name, tuple(int(d) for d in engine.get_tensor_shape(name)), dtype)

    inp, out = spec(INPUT_NAME), spec(OUTPUT_NAME)
    if any(d < 0 for d in inp.shape[1:]) or any(d < 0 for d in out.shape[1:]):
        raise EngineError(f"only the batch axis may be dynamic; the engine has {inp.describe()} "
                          f"-> {out.describe()}")
    if inp.shape[0] < 0:
        try:
            lo, opt, hi = (tuple(int(d) for d in dims)
                           for dims in engine.get_tensor_profile_shape(INPUT_NAME, 0))
        except Exception as exc:
            raise EngineError(f"cannot read the engine's optimisation profile 0: {exc}") from None
        lo_b, opt_b, hi_b = lo[0], opt[0], hi[0]
    else:
        lo_b = opt_b = hi_b = inp.shape[0]
    if not 1 <= lo_b <= opt_b <= hi_b:
        raise EngineError(f"the engine's batch profile ({lo_b}, {opt_b}, {hi_b}) is invalid")
    return EngineIO(inp, out, lo_b, opt_b, hi_b)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join("N" if d == -1 else str(d) for d in shape) + ")"


def check_device_batch(info: DeviceArrayInfo, want: TensorSpec, *, min_batch: int = 1,
                       max_batch: int | None = None, device_id: int | None = None,
                       runner: str = "runner") -> int:
    """Validate a device input array against a runner's input spec.

    Args:
        info: The array's description (:func:`xception_trt.trt.cuda.device_array_info`).
        want: The runner's ``input_spec``.
        min_batch, max_batch: The engine profile's batch range.
        device_id: The runner's GPU; an array on another GPU is refused.
        runner: Runner name for messages.

    Returns:
        The batch size.

    Raises:
        EngineError: Host memory, another GPU, wrong rank/dtype/shape, batch outside the
            profile, or not C-contiguous; the message says the fix.
    """
    if info.device_type != "cuda":
        raise EngineError(f"{runner}: the array lives in {info.device_type} memory, not on a "
                          "CUDA device; pass it as a NumPy array (e.g. tensor.numpy())")
    if device_id is not None and info.device_id is not None and info.device_id != device_id:
        raise EngineError(f"{runner}: the array is on cuda:{info.device_id} but the engine runs "
                          f"on cuda:{device_id}; move it (tensor.to('cuda:{device_id}'))")
    if len(info.shape) != len(want.shape):
        raise EngineError(f"{runner}: device input must have rank {len(want.shape)} "
                          f"{want.describe()}, got shape {info.shape}")
    if info.dtype != want.dtype:
        raise EngineError(f"{runner}: device input dtype must be {want.dtype.name}, got "
                          f"{info.dtype.name}; convert it on the device first")
    for axis, (w, g) in enumerate(zip(want.shape, info.shape)):
        if w != -1 and w != g:
            raise EngineError(f"{runner}: device input shape {info.shape} does not match "
                              f"{want.describe()} (axis {axis} is {g}, expected {w})")
    n = info.shape[0]
    if n < min_batch:
        raise EngineError(f"{runner}: batch {n} is below the engine's minimum batch {min_batch}")
    if max_batch is not None and n > max_batch:
        raise EngineError(f"{runner}: batch {n} exceeds the engine's maximum batch {max_batch}; "
                          "split the input or rebuild with a larger --max-batch")
    if not info.c_contiguous:
        raise EngineError(f"{runner}: the device array is not C-contiguous; pass "
                          "tensor.contiguous() / cupy.ascontiguousarray(x)")
    return n


def check_device_output(info: DeviceArrayInfo, batch: int, num_classes: int, *,
                        device_id: int | None = None, runner: str = "runner") -> None:
    """Validate a caller's device array given as ``out=`` for ``batch`` logits rows.

    Raises:
        EngineError: Not a CUDA array, another GPU, not float32 ``(batch, num_classes)``, or not
            C-contiguous.
    """
    want = (batch, num_classes)
    if info.device_type != "cuda":
        raise EngineError(f"{runner}: out= must be a CUDA device array, got "
                          f"{info.device_type} memory")
    if device_id is not None and info.device_id is not None and info.device_id != device_id:
        raise EngineError(f"{runner}: out= is on cuda:{info.device_id}, the engine on "
                          f"cuda:{device_id}")
    if info.shape != want or info.dtype != np.float32 or not info.c_contiguous:
        raise EngineError(f"{runner}: out= must be a C-contiguous float32 device array of shape "
                          f"{want}, got {info.dtype.name} {info.shape}"
                          f"{'' if info.c_contiguous else ' (not contiguous)'}")


def model_facts_from_sidecar(sidecar: Mapping[str, Any]
                             ) -> tuple[ModelSpec, InputFormat, Precision]:
    """The ModelSpec, input format and precision an engine's sidecar records.

    Raises:
        EngineError: The sidecar lacks them or they are invalid (rebuild the engine).
    """
    model = sidecar
    try:
        raw_spec = model.get("model_spec")
        if isinstance(raw_spec, str):
            spec = ModelSpec.from_json(raw_spec)
        elif isinstance(raw_spec, Mapping):
            spec = ModelSpec.from_dict(raw_spec)
        else:
            raise ConfigError("no model_spec entry")
        fmt = InputFormat.parse(model.get("input_format", InputFormat.FLOAT_NCHW.value))
        precision = Precision.parse(model.get("precision", Precision.FP32.value))
    except (ConfigError, AttributeError, TypeError) as exc:
        raise EngineError(f"the engine sidecar does not describe the model ({exc}); rebuild the "
                          "engine with `xception-trt build`") from None
    return spec, fmt, precision


# ------------------------------------------------------------------------------------------------
# The shared CUDA execution path
# ------------------------------------------------------------------------------------------------
class Compute(Protocol):
    """What the execution path runs between the copies: a TensorRT context or the stand-in."""

    def bind(self, input_shape: tuple[int, ...], in_ptr: int, out_ptr: int) -> None:
        """Set shapes and addresses for the next :meth:`enqueue`."""

    def enqueue(self, stream: Stream) -> None:
        """Enqueue the computation on ``stream`` (no synchronisation)."""

    def close(self) -> None: ...


class InferenceHandle:
    """A pending inference started by :meth:`CudaRunnerBase.infer_async`.

    ``wait()`` blocks until the GPU is done and returns the logits (a NumPy array you own, or
    the ``out=`` device array you passed). A runner keeps at most one call in flight: starting a
    new call first completes the previous handle, whose result stays available.
    """

    def __init__(self, runner: "CudaRunnerBase", batch: int, out: Any, keepalive: tuple) -> None:
        self._runner = runner
        self.batch = batch
        self._out = out
        self._keepalive = keepalive
        self._result: Any = None
        self._resolved = False

    def done(self) -> bool:
        """``True`` when the result is ready (never blocks)."""
        if self._resolved:
            return True
        return self._runner._query(self)

    def wait(self, timeout: float | None = None) -> Any:
        """Block until finished; returns float32 logits ``(batch, num_classes)``.

        Args:
            timeout: Seconds to wait at most (``None``: no limit).

        Raises:
            EngineError: The GPU did not finish within ``timeout``, or a CUDA error occurred.
        """
        if not self._resolved:
            self._runner._resolve(self, timeout)
        return self._result


class CudaRunnerBase:
    """Buffers, stream, events, CUDA graphs and the per-call path shared by the TensorRT runner
    and the NVRTC stand-in. Subclasses set the Runner attributes, create ``self._compute`` and
    call :meth:`_setup`.
    """

    name: str
    spec: ModelSpec
    input_format: InputFormat
    precision: Precision
    input_spec: TensorSpec
    output_spec: TensorSpec
    max_batch: int | None
    min_batch: int = 1
    device: str
    check_finite: bool = False
    cuda_graphs: bool = False
    _closed = True
    _compute: Compute | None = None

    def _setup(self, cuda: CudaDevice, *, max_batch: int, gpu_timing: bool = False) -> None:
        """Allocate everything once for ``max_batch`` (called by subclasses).

        On failure everything allocated so far is freed again and the error re-raised.
        """
        self._lock = threading.RLock()
        self._cuda = cuda
        self._resources: list[Any] = []
        self._graphs: dict[tuple[int, bool, bool], CudaGraph] = {}
        self._pending: InferenceHandle | None = None
        self._bound: tuple | None = None
        self.last_gpu_time_ms: float | None = None
        in_shape = (max_batch, *self.input_spec.shape[1:])
        out_shape = (max_batch, *self.output_spec.shape[1:])

        def track(res: Any) -> Any:
            self._resources.append(res)
            return res

        try:
            self._stream = track(cuda.stream())
            self._pin_in = track(cuda.pinned(in_shape, self.input_spec.dtype))
            self._pin_out = track(cuda.pinned(out_shape, self.output_spec.dtype))
            self._dev_in = track(cuda.alloc(self._pin_in.nbytes))
            self._dev_out = track(cuda.alloc(self._pin_out.nbytes))
            self._done = track(cuda.event())
            self._producer_ready = track(cuda.event())
            # Timing events cost two extra records per call: only when asked for.
            self._timers = ((track(cuda.event(timing=True)), track(cuda.event(timing=True)))
                            if gpu_timing else None)
        except BaseException:
            errors: list[str] = []
            for res in reversed(self._resources):
                _close_quietly(res, errors)
            self._resources.clear()
            raise
        self._closed = False

    # ---- public API ------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(f"{self.name}: the runner is closed; open a new one")

    def __call__(self, batch: Any) -> np.ndarray:
        """Run one batch synchronously; returns float32 logits ``(N, num_classes)``."""
        return self.infer(batch)

    def infer(self, batch: Any, *, out: Any = None) -> Any:
        """Run one batch synchronously.

        Args:
            batch: A NumPy array matching :attr:`input_spec`, or a CUDA device array (torch,
                CuPy ...; DLPack or ``__cuda_array_interface__``), read in place without any
                host copy (a device-to-device copy only for CUDA graphs or an address that is
                not 256-byte aligned). NaN/Inf checks apply to NumPy inputs only.
            out: Optional CUDA device array, float32 ``(N, num_classes)``, that receives the
                logits on the device (no device-to-host copy); it is then returned.

        Returns:
            A new NumPy float32 array ``(N, num_classes)`` (or ``out``).

        Raises:
            EngineError: Bad input (shape, dtype, rank, contiguity, batch outside the engine
                profile, NaN/Inf with ``check_finite``), closed runner, or a CUDA/TensorRT error.
        """
        return self.infer_async(batch, out=out).wait()

    def input_buffer(self, batch: int) -> np.ndarray:
        """The runner's pinned input staging array for ``batch`` samples.

        Preprocess straight into it and pass it to :meth:`infer`: the host-side staging copy
        is then skipped. Write into it only while no call is in flight (after ``wait()``: the
        GPU copies from it asynchronously); a call with another array overwrites it; it is
        invalid after :meth:`close`.

        Raises:
            EngineError: ``batch`` outside the engine profile, or a closed runner.
        """
        with self._lock:
            self._check_open()
            hi = self.max_batch if self.max_batch is not None else batch
            if not self.min_batch <= batch <= hi:
                raise EngineError(f"{self.name}: batch {batch} is outside the engine's profile "
                                  f"[{self.min_batch}, {hi}]")
            return self._pin_in.array[:batch]

    def infer_async(self, batch: Any, *, out: Any = None) -> InferenceHandle:
        """Start one batch on the runner's stream and return at once; see :meth:`infer`.

        The input array must stay unchanged until the handle is done (device inputs are read
        in place). Returns an :class:`InferenceHandle`.
        """
        with self._lock:
            self._check_open()
            if self._pending is not None:
                self._resolve_locked(self._pending, None)
            self._cuda.backend.activate()
            host_in, dev_info, n = self._stage_input(batch)
            out_info = None
            if out is not None:
                out_info = device_array_info(out, consumer_stream=self._stream.ptr)
                if out_info is None:
                    raise EngineError(f"{self.name}: out= must be a CUDA device array "
                                      "(__cuda_array_interface__ or DLPack), got "
                                      f"{type(out).__name__}")
                check_device_output(out_info, n, self.output_spec.shape[1],
                                    device_id=self._cuda.index, runner=self.name)
            self._enqueue(n, host_in, dev_info, out_info)
            handle = InferenceHandle(self, n, out,
                                     (batch, out, dev_info.keepalive if dev_info else (),
                                      out_info.keepalive if out_info else ()))
            self._pending = handle
            return handle

    # ---- per-call path ---------------------------------------------------------------------
    def _stage_input(self, batch: Any) -> tuple[bool, DeviceArrayInfo | None, int]:
        if isinstance(batch, np.ndarray):
            x = check_batch(batch, self.input_spec, max_batch=self.max_batch, runner=self.name,
                            check_finite=self.check_finite)
            n = x.shape[0]
            if n < self.min_batch:
                raise EngineError(f"{self.name}: batch {n} is below the engine's minimum batch "
                                  f"{self.min_batch}; pad the batch or rebuild with --min-batch")
            staging = self._pin_in.array[:n]
            if x.ctypes.data != staging.ctypes.data:  # skipped for input_buffer() arrays
                np.copyto(staging, x)
            return True, None, n
        info = device_array_info(batch, consumer_stream=self._stream.ptr)
        if info is None:
            raise EngineError(f"{self.name}: input must be a numpy.ndarray "
                              f"{self.input_spec.describe()} or a CUDA device array "
                              f"(__cuda_array_interface__ / DLPack), got {type(batch).__name__}")
        if info.device_type == "cpu":  # a host DLPack array (e.g. a CPU tensor): take NumPy
            return self._stage_input(np.from_dlpack(batch))
        n = check_device_batch(info, self.input_spec, min_batch=self.min_batch,
                               max_batch=self.max_batch, device_id=self._cuda.index,
                               runner=self.name)
        if info.stream is not None:
            # CUDA array interface v3: order the producer's pending writes before our reads.
            self._producer_ready.record(info.stream)
            self._stream.wait(self._producer_ready)
        return False, info, n

    def _bind(self, shape: tuple[int, ...], in_ptr: int, out_ptr: int) -> None:
        key = (shape, in_ptr, out_ptr)
        if self._bound != key:
            self._bound = None  # a failed bind must not be remembered as done
            self._compute.bind(shape, in_ptr, out_ptr)
            self._bound = key

    def _enqueue(self, n: int, host_in: bool, dev_info: DeviceArrayInfo | None,
                 out_info: DeviceArrayInfo | None) -> None:
        stream = self._stream
        shape = (n, *self.input_spec.shape[1:])
        in_bytes = n * (self._pin_in.nbytes // self._pin_in.shape[0])
        out_bytes = n * (self._pin_out.nbytes // self._pin_out.shape[0])
        host_out = out_info is None
        if self._timers is not None:
            self._timers[0].record(stream)
        if self.cuda_graphs:
            graph = self._graphs.get((n, host_in, host_out))
            if graph is None:
                graph = self._capture(n, host_in, host_out)
            if not host_in:
                self._dev_in.copy_from_device(dev_info.ptr, in_bytes, stream)
            graph.launch(stream)
            if not host_out:
                self._cuda.backend.memcpy_dtod_async(out_info.ptr, self._dev_out.ptr, out_bytes,
                                                     stream.handle)
        else:
            if host_in:
                self._dev_in.copy_from_host(self._pin_in.array[:n], stream)
                in_ptr = self._dev_in.ptr
            elif dev_info.ptr % _ALIGN:  # TensorRT wants aligned I/O: stage a sliced view
                self._dev_in.copy_from_device(dev_info.ptr, in_bytes, stream)
                in_ptr = self._dev_in.ptr
            else:
                in_ptr = dev_info.ptr  # zero copy: the engine reads the caller's memory
            direct_out = not host_out and out_info.ptr % _ALIGN == 0
            out_ptr = out_info.ptr if direct_out else self._dev_out.ptr
            self._bind(shape, in_ptr, out_ptr)
            self._compute.enqueue(stream)
            if host_out:
                self._dev_out.copy_to_host(self._pin_out.array[:n], stream)
            elif not direct_out:
                self._cuda.backend.memcpy_dtod_async(out_info.ptr, self._dev_out.ptr, out_bytes,
                                                     stream.handle)
        if self._timers is not None:
            self._timers[1].record(stream)
        self._done.record(stream)

    def _capture(self, n: int, host_in: bool, host_out: bool) -> CudaGraph:
        """Capture [H2D] + compute + [D2H] for batch ``n`` on the runner's fixed buffers."""
        stream = self._stream
        shape = (n, *self.input_spec.shape[1:])
        self._bind(shape, self._dev_in.ptr, self._dev_out.ptr)
        # TensorRT: one ordinary enqueue after a shape change, outside the capture, so that
        # deferred shape-dependent work is not captured (NVIDIA TensorRT docs, CUDA graphs).
        self._compute.enqueue(stream)
        stream.synchronize()
        with stream.capture() as cap:
            if host_in:
                self._dev_in.copy_from_host(self._pin_in.array[:n], stream)
            self._compute.enqueue(stream)
            if host_out:
                self._dev_out.copy_to_host(self._pin_out.array[:n], stream)
        self._graphs[(n, host_in, host_out)] = cap.graph
        log.debug("%s: captured a CUDA graph for batch %d (host input %s, host output %s)",
                  self.name, n, host_in, host_out)
        return cap.graph

    def _query(self, handle: InferenceHandle) -> bool:
        with self._lock:
            if handle._resolved:
                return True
            return self._done.query()

    def _resolve(self, handle: InferenceHandle, timeout: float | None) -> None:
        with self._lock:
            self._resolve_locked(handle, timeout)

    def _resolve_locked(self, handle: InferenceHandle, timeout: float | None) -> None:
        if handle._resolved:
            return
        if handle is not self._pending:  # cannot happen: pending is resolved before replacing
            raise EngineError(f"{self.name}: internal error: unknown inference handle")
        self._cuda.backend.activate()  # wait() may run on another thread than infer_async()
        if timeout is not None:
            deadline = time.perf_counter() + timeout
            while not self._done.query():
                if time.perf_counter() > deadline:
                    raise EngineError(f"{self.name}: the GPU did not finish within {timeout} s")
                time.sleep(50e-6)
        else:
            self._done.synchronize()
        if self._timers is not None:
            self.last_gpu_time_ms = self._timers[0].elapsed_ms(self._timers[1])
        if handle._out is None:
            handle._result = self._pin_out.array[: handle.batch].copy()
        else:
            handle._result = handle._out
        handle._resolved = True
        handle._keepalive = ()
        self._pending = None

    # ---- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Finish any pending call, then free graphs, the compute, buffers and the stream.
        Idempotent; a pending handle keeps its result."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            self._closed = True
            return
        with lock:
            if self._closed:
                return
            errors: list[str] = []
            try:
                self._cuda.backend.activate()
            except XceptionTRTError as exc:
                errors.append(str(exc))
            if self._pending is not None:
                try:
                    self._resolve_locked(self._pending, None)
                except XceptionTRTError as exc:
                    errors.append(str(exc))
            self._closed = True
            for graph in self._graphs.values():
                _close_quietly(graph, errors)
            self._graphs.clear()
            if self._compute is not None:
                _close_quietly(self._compute, errors)
                self._compute = None
            for res in reversed(self._resources):
                _close_quietly(res, errors)
            self._resources.clear()
            self._close_extra(errors)
            if errors:
                raise EngineError(f"{self.name}: errors while closing: {'; '.join(errors)}")

    def _close_extra(self, errors: list[str]) -> None:
        """Subclass hook: release what the subclass owns (after the buffers)."""

    def __enter__(self) -> Any:
        self._check_open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else getattr(self, "device", "?")
        return f"<{type(self).__name__} {getattr(self, 'name', '?')} ({state})>"


def _close_quietly(obj: Any, errors: list[str]) -> None:
    try:
        obj.close()
    except Exception as exc:  # collect; close() reports all failures once at the end
        errors.append(f"{type(obj).__name__}: {exc}")


# ------------------------------------------------------------------------------------------------
# TensorRT
# ------------------------------------------------------------------------------------------------
def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to :mod:`logging` and keeps the error messages (a
    TensorRT callback never raises)."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            try:
                level = int(severity)
                if level <= int(trt.ILogger.Severity.ERROR):
                    self.errors.append(str(msg))
                    log.error("TensorRT: %s", msg)
                elif level == int(trt.ILogger.Severity.WARNING):
                    log.warning("TensorRT: %s", msg)
                else:
                    log.debug("TensorRT: %s", msg)
            except Exception:  # never raise into TensorRT
                pass

        def take(self) -> str:
            text = " | ".join(self.errors[-3:])
            self.errors.clear()
            return text

    return _Logger()


def deserialize(trt: Any, data: bytes, *, source: str = "engine") -> tuple[Any, Any, Any]:
    """Deserialize a plan with TensorRT, turning its refusal into a clear error.

    TensorRT checks the plan's header (magic tag, serialization version, recorded size) before
    using it and returns ``None`` for a foreign or truncated file; its log says why.

    Args:
        trt: The TensorRT module (``tensorrt`` or ``tensorrt_rtx``).
        data: The plan bytes.
        source: Name of the file for messages.

    Returns:
        (logger, runtime, engine); keep all three alive as long as the engine is used.

    Raises:
        EngineError: TensorRT refused the plan (message quotes TensorRT's reason).
    """
    logger = _make_logger(trt)
    runtime = trt.Runtime(logger)
    if runtime is None:
        raise EngineError(f"TensorRT could not create a runtime: {logger.take()}")
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise EngineError(f"TensorRT could not deserialize {source} "
                          f"({logger.take() or 'not an engine of this TensorRT'}); "
                          "rebuild it with `xception-trt build`")
    return logger, runtime, engine


class _TrtCompute:
    """``set_input_shape`` + ``set_tensor_address`` + ``execute_async_v3`` on one context."""

    def __init__(self, context: Any, logger: Any, name: str) -> None:
        self._ctx = context
        self._logger = logger
        self._name = name

    def bind(self, input_shape: tuple[int, ...], in_ptr: int, out_ptr: int) -> None:
        ctx = self._ctx
        if not ctx.set_input_shape(INPUT_NAME, input_shape):
            raise EngineError(f"{self._name}: set_input_shape{input_shape} was refused: "
                              f"{self._logger.take() or 'shape outside the profile'}")
        if not (ctx.set_tensor_address(INPUT_NAME, in_ptr)
                and ctx.set_tensor_address(OUTPUT_NAME, out_ptr)):
            raise EngineError(f"{self._name}: set_tensor_address was refused: "
                              f"{self._logger.take() or 'unaligned or invalid address'}")

    def enqueue(self, stream: Stream) -> None:
        if not self._ctx.execute_async_v3(stream.ptr):
            raise EngineError(f"{self._name}: execute_async_v3 failed: "
                              f"{self._logger.take() or 'see the TensorRT log (-vv)'}")

    def close(self) -> None:
        self._ctx = None  # TensorRT frees the context with its last reference


class TensorRTRunner(CudaRunnerBase):
    """Run an xception-trt TensorRT engine (``.engine``/``.plan`` + its ``.json`` sidecar).

    Implements the Runner protocol of :mod:`xception_trt.runners` plus :meth:`infer_async`,
    device inputs/outputs and CUDA graphs. Thread safe: calls are serialised by a lock.

    Args:
        engine_path: The serialized engine; its sidecar ``<engine>.json`` must sit next to it.
        device: CUDA device ordinal.
        cuda_backend: ``cuda-python`` (default) or ``pycuda``.
        cuda_graphs: Capture one CUDA graph per batch size (lowest host overhead).
        check_finite: Reject NumPy inputs holding NaN/Inf.
        gpu_timing: Measure each call's GPU time with CUDA events into
            :attr:`last_gpu_time_ms` (two extra event records per call).
        name: Display name (default ``tensorrt-<precision>``).
        verify_sha256: Hash the engine file and compare with the sidecar before deserializing
            (catches truncated/replaced files; costs one read of the file).

    Raises:
        EngineError: Missing/empty/truncated/foreign engine file, missing sidecar, engine from
            another TensorRT version or GPU (message gives the rebuild command), no GPU, or
            TensorRT cannot deserialize it.
        BuildError: The TensorRT flavour that built the engine is not installed.
        DependencyError: The CUDA backend's package is missing.
    """

    def __init__(self, engine_path: str | os.PathLike[str], *, device: int = 0,
                 cuda_backend: str = "cuda-python", cuda_graphs: bool = False,
                 check_finite: bool = False, gpu_timing: bool = False, name: str | None = None,
                 verify_sha256: bool = True) -> None:
        from .compat import check_sidecar_compat

        path = Path(engine_path)
        self.path = path
        if not path.is_file():
            raise EngineError(f"engine file {path} does not exist")
        size = path.stat().st_size
        if size == 0:
            raise EngineError(f"engine file {path} is empty; rebuild it with `xception-trt build`")
        sidecar = _read_sidecar(path)
        self.sidecar = dict(sidecar)
        self.spec, self.input_format, self.precision = model_facts_from_sidecar(sidecar)
        _verify_engine_file(path, size, sidecar, verify_sha256)
        flavour_name = _sidecar_flavour(sidecar)
        from . import import_flavour

        flavour = import_flavour(flavour_name)
        trt = flavour.module
        try:
            cuda = CudaDevice(device, cuda_backend)
        except EngineError as device_error:
            # Without a usable GPU, a version/flavour mismatch is still worth reporting first:
            # it needs a rebuild whatever GPU the engine will eventually run on.
            try:
                check_sidecar_compat(sidecar, flavour.name, flavour.version, None)
            except EngineError as compat_error:
                if "none found" not in str(compat_error):
                    raise compat_error from None
            raise device_error
        try:
            cc = cuda.compute_capability
            check_sidecar_compat(sidecar, flavour.name, flavour.version, f"{cc[0]}.{cc[1]}")
            self._init_engine(path, trt, flavour, cuda, name=name, cuda_graphs=cuda_graphs,
                              check_finite=check_finite, gpu_timing=gpu_timing)
        except BaseException:
            self._abort(cuda)
            raise

    def _init_engine(self, path: Path, trt: Any, flavour: Any, cuda: CudaDevice, *,
                     name: str | None, cuda_graphs: bool, check_finite: bool,
                     gpu_timing: bool) -> None:
        self._trt_version = flavour.version
        self._flavour = flavour.name
        self._logger, self._runtime, self._engine = deserialize(trt, path.read_bytes(),
                                                                 source=str(path))
        io = describe_engine(self._engine, trt)
        want = input_spec_for(self.spec, self.input_format)
        if io.input.dtype != want.dtype or io.input.shape[1:] != want.shape[1:]:
            raise EngineError(f"the engine takes {io.input.describe()} but its sidecar says "
                              f"{want.describe()}; the sidecar belongs to another engine — "
                              "rebuild with `xception-trt build`")
        if io.output.shape[1:] != (self.spec.num_classes,) or io.output.dtype != np.float32:
            raise EngineError(f"the engine returns {io.output.describe()}, expected float32 "
                              f"(N, {self.spec.num_classes}); rebuild with `xception-trt build`")
        self.io = io
        self.input_spec = input_spec_for(self.spec, self.input_format,
                                         batch=-1 if io.input.shape[0] < 0 else io.max_batch)
        self.output_spec = output_spec_for(self.spec,
                                           batch=-1 if io.output.shape[0] < 0 else io.max_batch)
        self.min_batch, self.max_batch = io.min_batch, io.max_batch
        self.name = name or f"tensorrt-{self.precision.value}"
        self.device = f"cuda:{cuda.index}"
        self.cuda_graphs = bool(cuda_graphs)
        self.check_finite = bool(check_finite)
        context = self._engine.create_execution_context()
        if context is None:
            raise EngineError(f"TensorRT could not create an execution context "
                              f"({self._logger.take() or 'out of GPU memory?'})")
        self._compute = _TrtCompute(context, self._logger, self.name)
        self._setup(cuda, max_batch=io.max_batch, gpu_timing=gpu_timing)
        self._gpu_name = cuda.name

    def _abort(self, cuda: CudaDevice) -> None:
        """Undo a half-finished __init__ (nothing leaks when opening fails)."""
        if not self._closed:  # _setup finished: the normal close frees everything
            try:
                self.close()
            except EngineError as exc:
                log.debug("cleanup after a failed open: %s", exc)
            return
        self._compute = None
        self._engine = None
        self._runtime = None
        try:
            cuda.close()
        except Exception as exc:
            log.debug("cleanup after a failed open: %s", exc)

    def _close_extra(self, errors: list[str]) -> None:
        # Order matters: context (in _compute, already dropped) before engine before runtime.
        self._engine = None
        self._runtime = None
        try:
            self._cuda.close()
        except Exception as exc:
            errors.append(str(exc))

    def describe(self) -> dict[str, Any]:
        """Backend facts: TensorRT flavour/version, GPU, CUDA backend, profile, graphs."""
        self._check_open()
        backend = self._cuda.backend
        return {
            "backend": "tensorrt",
            "name": self.name,
            "path": str(self.path),
            "precision": self.precision.value,
            "input_format": self.input_format.value,
            "input": self.input_spec.to_dict(),
            "output": self.output_spec.to_dict(),
            "max_batch": self.max_batch,
            "min_batch": self.min_batch,
            "opt_batch": self.io.opt_batch,
            "device": self.device,
            "gpu": self._gpu_name,
            "compute_capability": "{}.{}".format(*backend.compute_capability()),
            "provider": self._flavour,
            "tensorrt": self._trt_version,
            "cuda_backend": backend.name,
            "cuda": backend.versions(),
            "cuda_graphs": self.cuda_graphs,
            "threads": "n/a (GPU)",
        }


def _read_sidecar(path: Path) -> Mapping[str, Any]:
    """The engine's sidecar, read by the builder (which owns the schema)."""
    from .builder import read_sidecar

    return read_sidecar(path)


def _sidecar_flavour(sidecar: Mapping[str, Any]) -> str:
    try:
        return str(sidecar["tensorrt"]["flavour"])
    except (KeyError, TypeError):
        raise EngineError("the engine sidecar does not say which TensorRT built the engine; "
                          "rebuild it with `xception-trt build`") from None


def _verify_engine_file(path: Path, size: int, sidecar: Mapping[str, Any],
                        verify_sha256: bool) -> None:
    """Compare the engine file with the size/hash its sidecar records (truncation, swaps)."""
    engine = sidecar.get("engine") if isinstance(sidecar.get("engine"), Mapping) else {}
    want_size = engine.get("bytes")
    if want_size is not None and int(want_size) != size:
        raise EngineError(f"engine file {path} has {size} bytes but its sidecar records "
                          f"{int(want_size)}: the file is truncated or was replaced — rebuild it "
                          "with `xception-trt build`")
    want_hash = engine.get("sha256")
    if verify_sha256 and want_hash:
        from ..fsio import sha256_file

        if sha256_file(path) != want_hash:
            raise EngineError(f"engine file {path} does not match the SHA-256 in its sidecar: "
                              "it is corrupted or belongs to another build — rebuild it with "
                              "`xception-trt build`")
