"""The CUDA execution path shared by the TensorRT runner and the self-test's NVRTC stand-in:
:class:`CudaRunnerBase` (buffers, stream, events, CUDA graphs, the per-call path) and the
validation of device arrays. Nothing here imports TensorRT; the computation between the copies
is a :class:`Compute` (a TensorRT execution context, or the stand-in kernel).

The per-call path:

1. validate the input (shape, dtype, rank, C-contiguity, batch within the profile, optional
   NaN/Inf check) -- pure logic, :func:`xception_trt.contract.check_batch` and
   :func:`check_device_batch`;
2. NumPy input: copy into a pinned buffer and enqueue an async host-to-device copy on the
   runner's own stream. Device input (``__cuda_array_interface__`` / DLPack, e.g. torch or CuPy):
   bind its address directly -- no host copy, no device copy;
3. bind shapes and addresses (only when they change) and enqueue the computation;
4. enqueue the device-to-host copy into a pinned buffer (or write into a caller's device
   array given as ``out=``), record an event; :meth:`InferenceHandle.wait` synchronises and
   returns a copy of the logits.

With ``cuda_graphs=True`` steps 2-4 are captured once per batch size into a CUDA graph and
replayed with one ``cudaGraphLaunch``. Each graph is captured from its own computation
(:meth:`CudaRunnerBase._graph_compute`: for TensorRT one execution context per graph), because a
graph depends on the state of the context it was captured from and changing that context
afterwards is undefined behaviour (TensorRT developer guide, "CUDA Graphs").

Thread safety: one runner owns one stream and one set of buffers; every public method takes the
runner's lock, so concurrent calls from several threads are serialised (safe, not parallel).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import numpy as np

from ..contract import RunnerBase, TensorSpec, check_axes, check_batch
from ..errors import EngineError, XceptionTRTError
from .cuda import CudaDevice, CudaGraph, DeviceArrayInfo, Stream, device_array_info

__all__ = ["CudaRunnerBase", "Compute", "InferenceHandle", "check_device_batch",
           "check_device_output"]

log = logging.getLogger(__name__)

#: Alignment in bytes of the I/O addresses handed to TensorRT (cudaMalloc guarantees 256);
#: device arrays at other addresses (e.g. a sliced tensor) are staged through our buffers.
_ALIGN = 256


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
    check_axes(info.shape, want, runner=runner, what="device input")
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
        EngineError: Not a CUDA array, read-only (CUDA array interface v3 ``data`` flag),
            another GPU, not float32 ``(batch, num_classes)``, or not C-contiguous.
    """
    want = (batch, num_classes)
    if info.device_type != "cuda":
        raise EngineError(f"{runner}: out= must be a CUDA device array, got "
                          f"{info.device_type} memory")
    if info.read_only:
        raise EngineError(f"{runner}: out= is read-only (its __cuda_array_interface__ marks the "
                          "data read-only), so the logits cannot be written into it; pass a "
                          "writable device array")
    if device_id is not None and info.device_id is not None and info.device_id != device_id:
        raise EngineError(f"{runner}: out= is on cuda:{info.device_id}, the engine on "
                          f"cuda:{device_id}")
    if info.shape != want or info.dtype != np.float32 or not info.c_contiguous:
        raise EngineError(f"{runner}: out= must be a C-contiguous float32 device array of shape "
                          f"{want}, got {info.dtype.name} {info.shape}"
                          f"{'' if info.c_contiguous else ' (not contiguous)'}")


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


class CudaRunnerBase(RunnerBase):
    """Buffers, stream, events, CUDA graphs and the per-call path shared by the TensorRT runner
    and the NVRTC stand-in. Subclasses set the Runner attributes, create ``self._compute`` and
    call :meth:`_setup`.
    """

    min_batch: int = 1
    cuda_graphs: bool = False
    #: The computation captures CUDA graphs itself (TensorRT-RTX's runtime CUDA-graph
    #: strategy): the runner then takes the plain path and captures nothing.
    _native_graphs: bool = False
    _closed = True  # until _setup() has allocated everything
    _compute: Compute | None = None

    def _setup(self, cuda: CudaDevice, *, max_batch: int, gpu_timing: bool = False) -> None:
        """Allocate everything once for ``max_batch`` (called by subclasses).

        On failure everything allocated so far is freed again and the error re-raised.
        """
        self._lock = threading.RLock()
        self._cuda = cuda
        if self.cuda_graphs and not self._native_graphs \
                and (why := cuda.backend.graphs_unsupported()) is not None:
            raise EngineError(f"{self.name}: cuda_graphs=True cannot work with the "
                              f"{cuda.backend.name} backend: {why}")
        self._resources: list[Any] = []
        self._graphs: dict[tuple[int, bool, bool], CudaGraph] = {}
        self._graph_computes: list[Compute] = []
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
            # wait() blocks on this event: blocking sync lets the thread sleep, not spin.
            self._done = track(cuda.event(blocking_sync=True))
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
            with self._cuda.backend.scope():
                return self._start(batch, out)

    def _start(self, batch: Any, out: Any) -> InferenceHandle:
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
            # CUDA array interface v3: the producer's pending work on out= (e.g. a read of its
            # old contents) must be ordered before our writes, as for inputs.
            self._wait_for_producer(out_info)
        self._enqueue(n, host_in, dev_info, out_info)
        handle = InferenceHandle(self, n, out,
                                 (batch, out, dev_info.keepalive if dev_info else (),
                                  out_info.keepalive if out_info else ()))
        self._pending = handle
        return handle

    def _wait_for_producer(self, info: DeviceArrayInfo) -> None:
        """CUDA array interface v3: order the producer's pending work on ``info`` (its
        ``stream``) before ours, without blocking the host."""
        if info.stream is not None:
            self._producer_ready.record(info.stream)
            self._stream.wait(self._producer_ready)

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
        self._wait_for_producer(info)  # the producer's pending writes before our reads
        return False, info, n

    @property
    def _engine_compute(self) -> Compute:
        if self._compute is None:  # only after close(), which _check_open() catches first
            raise EngineError(f"{self.name}: the runner is closed")
        return self._compute

    def _bind(self, shape: tuple[int, ...], in_ptr: int, out_ptr: int) -> None:
        key = (shape, in_ptr, out_ptr)
        if self._bound != key:
            self._bound = None  # a failed bind must not be remembered as done
            self._engine_compute.bind(shape, in_ptr, out_ptr)
            self._bound = key

    def _enqueue(self, n: int, host_in: bool, dev_info: DeviceArrayInfo | None,
                 out_info: DeviceArrayInfo | None) -> None:
        stream = self._stream
        shape = (n, *self.input_spec.shape[1:])
        in_bytes = n * (self._pin_in.nbytes // self._pin_in.shape[0])
        out_bytes = n * (self._pin_out.nbytes // self._pin_out.shape[0])
        host_out = out_info is None
        # The caller's device addresses (0 where the host buffers are used instead).
        dev_ptr = dev_info.ptr if dev_info is not None else 0
        user_out = out_info.ptr if out_info is not None else 0
        graph = None
        if self.cuda_graphs and not self._native_graphs:
            graph = self._graphs.get((n, host_in, host_out))
            if graph is None:  # before the first timer event: capture is not this call's time
                graph = self._capture(n, host_in, host_out)
        if self._timers is not None:
            self._timers[0].record(stream)
        if graph is not None:
            if not host_in:
                self._dev_in.copy_from_device(dev_ptr, in_bytes, stream)
            graph.launch(stream)
            if not host_out:
                self._cuda.backend.memcpy_dtod_async(user_out, self._dev_out.ptr, out_bytes,
                                                     stream.handle)
        else:
            if host_in:
                self._dev_in.copy_from_host(self._pin_in.array[:n], stream)
                in_ptr = self._dev_in.ptr
            elif dev_ptr % _ALIGN:  # TensorRT wants aligned I/O: stage a sliced view
                self._dev_in.copy_from_device(dev_ptr, in_bytes, stream)
                in_ptr = self._dev_in.ptr
            else:
                in_ptr = dev_ptr  # zero copy: the engine reads the caller's memory
            direct_out = not host_out and user_out % _ALIGN == 0
            out_ptr = user_out if direct_out else self._dev_out.ptr
            self._bind(shape, in_ptr, out_ptr)
            self._engine_compute.enqueue(stream)
            if host_out:
                self._dev_out.copy_to_host(self._pin_out.array[:n], stream)
            elif not direct_out:
                self._cuda.backend.memcpy_dtod_async(user_out, self._dev_out.ptr, out_bytes,
                                                     stream.handle)
        if self._timers is not None:
            self._timers[1].record(stream)
        self._done.record(stream)

    def _graph_compute(self, key: tuple[int, bool, bool]) -> Compute:
        """The computation a new graph for ``key`` (batch, host input, host output) is captured
        from; it is not changed afterwards. Default: the runner's own one (right for a compute
        whose captured launches carry all their state, like the stand-in's kernel); the TensorRT
        runner returns a new execution context per graph."""
        return self._engine_compute

    def _capture(self, n: int, host_in: bool, host_out: bool) -> CudaGraph:
        """Capture [H2D] + compute + [D2H] for batch ``n`` on the runner's fixed buffers."""
        stream = self._stream
        shape = (n, *self.input_spec.shape[1:])
        compute = self._graph_compute((n, host_in, host_out))
        if compute is self._engine_compute:
            self._bind(shape, self._dev_in.ptr, self._dev_out.ptr)
        else:
            self._graph_computes.append(compute)
            compute.bind(shape, self._dev_in.ptr, self._dev_out.ptr)
        # TensorRT: one ordinary enqueue after a shape change, outside the capture, so that
        # deferred shape-dependent work is not captured (NVIDIA TensorRT docs, CUDA graphs).
        compute.enqueue(stream)
        stream.synchronize()
        with stream.capture() as cap:
            if host_in:
                self._dev_in.copy_from_host(self._pin_in.array[:n], stream)
            compute.enqueue(stream)
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
            with self._cuda.backend.scope():  # done() may run on any thread
                return self._done.query()

    def _resolve(self, handle: InferenceHandle, timeout: float | None) -> None:
        with self._lock:
            self._resolve_locked(handle, timeout)

    def _resolve_locked(self, handle: InferenceHandle, timeout: float | None) -> None:
        if handle._resolved:
            return
        if handle is not self._pending:  # cannot happen: pending is resolved before replacing
            raise EngineError(f"{self.name}: internal error: unknown inference handle")
        # wait() may run on another thread than infer_async()
        with self._cuda.backend.scope():
            self._finish(handle, timeout)

    def _finish(self, handle: InferenceHandle, timeout: float | None) -> None:
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
                with self._cuda.backend.scope():
                    self._close_locked(errors)
            except XceptionTRTError as exc:  # the context could not be made current
                errors.append(str(exc))
                self._close_locked(errors)
            # The backend is released after its scope has ended: pycuda's context::detach
            # removes a pushed context from its stack, so releasing inside the scope made the
            # scope's pop throw ("cannot pop non-current context") or, under an application's
            # context (pycuda.autoinit), pop that one (pycuda src/cpp/cuda.hpp).
            try:
                self._cuda.close()
            except Exception as exc:
                errors.append(str(exc))
            if errors:
                raise EngineError(f"{self.name}: errors while closing: {'; '.join(errors)}")

    def _close_locked(self, errors: list[str]) -> None:
        if not self._closed:
            if self._pending is not None:
                try:
                    self._resolve_locked(self._pending, None)
                except XceptionTRTError as exc:
                    errors.append(str(exc))
            self._closed = True
            for graph in self._graphs.values():
                _close_quietly(graph, errors)
            self._graphs.clear()
            for compute in self._graph_computes:  # after their graphs, before the buffers
                _close_quietly(compute, errors)
            self._graph_computes.clear()
            if self._compute is not None:
                _close_quietly(self._compute, errors)
                self._compute = None
            for res in reversed(self._resources):
                _close_quietly(res, errors)
            self._resources.clear()
            self._close_extra(errors)

    def _close_extra(self, errors: list[str]) -> None:
        """Subclass hook: release what the subclass owns (after the buffers, inside the
        backend's scope; the runner's :class:`CudaDevice` is closed by :meth:`close` after the
        scope)."""


def _close_quietly(obj: Any, errors: list[str]) -> None:
    try:
        obj.close()
    except Exception as exc:  # collect; close() reports all failures once at the end
        errors.append(f"{type(obj).__name__}: {exc}")


