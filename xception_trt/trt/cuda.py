"""CUDA resources with exactly one owner each: device buffers, pinned host buffers, streams,
events, CUDA graphs and (for the engine stand-in) NVRTC-compiled kernels.

Two interchangeable backends sit behind one interface (:class:`CudaBackend`):

- ``cuda-python`` (``cuda.bindings``, the default): NVIDIA's own bindings; every call returns an
  error code, which :meth:`CudaPythonBackend._call` checks and turns into an :class:`EngineError`
  naming the call, the code and its meaning.
- ``pycuda`` (optional, common on Jetson): errors arrive as ``pycuda.driver.Error`` exceptions,
  which are turned into the same :class:`EngineError`. pycuda works on the device's *primary*
  context, so TensorRT (CUDA runtime API) and pycuda share one context.

Every resource object (:class:`DeviceBuffer`, :class:`PinnedBuffer`, :class:`Stream`,
:class:`Event`, :class:`CudaGraph`, :class:`CudaModule`) frees its handle in an idempotent
``close()``, is a context manager, raises :class:`EngineError` when used after ``close()``, and
(as a safety net only) is freed by a ``weakref.finalize`` when dropped unclosed.

Device arrays from other libraries are read through ``__cuda_array_interface__`` (v2/v3) or
DLPack (:func:`device_array_info`) without any host copy.

Nothing here runs on a machine without an NVIDIA driver; the pure logic (error translation,
backend selection, sizes, device-array parsing, use-after-close guards) is tested on CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import DependencyError, EngineError

__all__ = [
    "BACKENDS",
    "CudaBackend",
    "CudaPythonBackend",
    "PycudaBackend",
    "backend_status",
    "nvrtc_status",
    "open_backend",
    "CudaDevice",
    "DeviceBuffer",
    "DeviceArray",
    "PinnedBuffer",
    "Stream",
    "Event",
    "CudaGraph",
    "CudaModule",
    "Kernel",
    "PackedArgs",
    "DeviceArrayInfo",
    "device_array_info",
    "compile_kernel",
    "nbytes_of",
]

log = logging.getLogger(__name__)

#: Backend names in order of preference.
BACKENDS = ("cuda-python", "pycuda")


def nbytes_of(shape: Sequence[int], dtype: Any) -> int:
    """Bytes needed by a C-contiguous array.

    Args:
        shape: Non-negative dimensions.
        dtype: Anything ``numpy.dtype`` accepts.

    Returns:
        ``prod(shape) * itemsize`` in bytes.

    Raises:
        EngineError: A negative or non-integer dimension (e.g. ``-1`` left unresolved).
    """
    dims = tuple(shape)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise EngineError(f"cannot size a buffer of shape {dims}: every dimension must be an "
                              "integer >= 0 (resolve dynamic -1 dimensions first)")
    return int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize


# ------------------------------------------------------------------------------------------------
# Backends
# ------------------------------------------------------------------------------------------------
class CudaBackend:
    """The operations the resource classes need, implemented once per Python CUDA binding.

    Pointers are Python ints; streams, events, graphs and modules are opaque backend handles.
    Host memory is always passed as a C-contiguous NumPy array. Every method raises
    :class:`EngineError` naming the failing CUDA call.
    """

    name = "abstract"
    device: int

    # device -----------------------------------------------------------------------------------
    def activate(self) -> None:
        """Make this backend's device/context current on the calling thread (cheap if it is)."""
        raise NotImplementedError

    def device_name(self) -> str:
        raise NotImplementedError

    def compute_capability(self) -> tuple[int, int]:
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        """Driver/runtime/binding versions, for reports."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend itself holds (e.g. a retained primary context)."""

    # memory -----------------------------------------------------------------------------------
    def mem_get_info(self) -> tuple[int, int]:
        """(free, total) device memory in bytes."""
        raise NotImplementedError

    def mem_alloc(self, nbytes: int) -> int:
        raise NotImplementedError

    def mem_free(self, ptr: int) -> None:
        raise NotImplementedError

    def host_alloc(self, nbytes: int) -> tuple[np.ndarray, Any]:
        """Allocate page-locked host memory; returns (uint8 view of ``nbytes``, token to free)."""
        raise NotImplementedError

    def host_free(self, token: Any) -> None:
        raise NotImplementedError

    def memcpy_htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        raise NotImplementedError

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        raise NotImplementedError

    def memcpy_dtod_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        raise NotImplementedError

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: Any) -> None:
        raise NotImplementedError

    # streams and events -----------------------------------------------------------------------
    def stream_create(self) -> Any:
        raise NotImplementedError

    def stream_destroy(self, stream: Any) -> None:
        raise NotImplementedError

    def stream_handle(self, stream: Any) -> int:
        """The raw ``cudaStream_t`` as an int (what TensorRT's ``execute_async_v3`` takes)."""
        raise NotImplementedError

    def stream_synchronize(self, stream: Any) -> None:
        raise NotImplementedError

    def stream_query(self, stream: Any) -> bool:
        raise NotImplementedError

    def stream_wait_event(self, stream: Any, event: Any) -> None:
        raise NotImplementedError

    def event_create(self, timing: bool) -> Any:
        raise NotImplementedError

    def event_destroy(self, event: Any) -> None:
        raise NotImplementedError

    def event_record(self, event: Any, stream: Any) -> None:
        """Record ``event`` on ``stream`` (a handle of this backend or a raw int handle)."""
        raise NotImplementedError

    def event_synchronize(self, event: Any) -> None:
        raise NotImplementedError

    def event_query(self, event: Any) -> bool:
        raise NotImplementedError

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        raise NotImplementedError

    # graphs -----------------------------------------------------------------------------------
    def begin_capture(self, stream: Any) -> None:
        raise NotImplementedError

    def end_capture(self, stream: Any) -> Any:
        raise NotImplementedError

    def graph_instantiate(self, graph: Any) -> Any:
        raise NotImplementedError

    def graph_launch(self, graph_exec: Any, stream: Any) -> None:
        raise NotImplementedError

    def graph_destroy(self, graph: Any) -> None:
        raise NotImplementedError

    def graph_exec_destroy(self, graph_exec: Any) -> None:
        raise NotImplementedError

    # modules ----------------------------------------------------------------------------------
    def module_load(self, image: bytes) -> Any:
        raise NotImplementedError

    def module_unload(self, module: Any) -> None:
        raise NotImplementedError

    def module_function(self, module: Any, name: str) -> Any:
        raise NotImplementedError

    def pack_args(self, args: Sequence[np.generic]) -> Any:
        """Kernel arguments (NumPy scalars, ``np.uint64`` for pointers) in the form
        :meth:`launch` takes; done once per argument set, not per launch."""
        return tuple(args)

    def launch(self, function: Any, grid: tuple[int, int, int], block: tuple[int, int, int],
               packed: Any, stream: Any) -> None:
        """Launch a kernel with arguments from :meth:`pack_args`."""
        raise NotImplementedError


def _enum_name(code: Any) -> str:
    name = getattr(code, "name", None)
    return str(name) if name else f"error {code}"


class CudaPythonBackend(CudaBackend):
    """The ``cuda-python`` (``cuda.bindings``) backend: CUDA runtime API plus the driver API for
    kernel modules. Works with cuda-python 12.6+ and 13.x (identical signatures for every call
    used here; ``cudaGraphInstantiateWithFlags`` is used because ``cudaGraphInstantiate`` changed
    between CUDA 11 and 12).

    Args:
        device: CUDA device ordinal.
        runtime, driver: Injected binding modules (tests); imported when ``None``.

    Raises:
        DependencyError: cuda-python is not installed.
        EngineError: No driver/GPU, or ``device`` does not exist.
    """

    name = "cuda-python"

    def __init__(self, device: int = 0, *, runtime: Any = None, driver: Any = None) -> None:
        if runtime is None:
            runtime, driver = _import_cuda_python()
        self._rt = runtime
        self._drv = driver
        self._success = runtime.cudaError_t.cudaSuccess
        self._not_ready = runtime.cudaError_t.cudaErrorNotReady
        self.device = int(device)
        self._local = threading.local()
        try:
            count = self._call("cudaGetDeviceCount")
        except EngineError as exc:
            raise EngineError(f"no usable NVIDIA GPU: {exc}; check the driver with nvidia-smi "
                              "(the driver must be at least as new as the CUDA runtime that "
                              "cuda-python loads)") from None
        if not 0 <= self.device < count:
            raise EngineError(f"CUDA device {self.device} does not exist: this machine has {count} "
                              f"GPU(s); pass device=0..{max(count - 1, 0)}")
        self.activate()

    # error checking ---------------------------------------------------------------------------
    def _fail(self, call: str, code: Any) -> EngineError:
        detail = ""
        with contextlib.suppress(Exception):
            res = self._rt.cudaGetErrorString(code)
            if res[0] == self._success and res[1]:
                detail = ": " + (res[1].decode(errors="replace") if isinstance(res[1], bytes)
                                 else str(res[1]))
        return EngineError(f"CUDA call {call} failed with {_enum_name(code)} "
                           f"({int(code)}){detail}")

    def _call(self, call: str, *args: Any) -> Any:
        """Call ``runtime.<call>(*args)`` and check the returned code.

        Returns:
            ``None`` when the call returns only a code, the value when it returns one, else a tuple.

        Raises:
            EngineError: The code is not ``cudaSuccess``; the message names the call and code.
        """
        try:
            res = getattr(self._rt, call)(*args)
        except EngineError:
            raise
        except Exception as exc:  # e.g. libcudart/libcuda missing: the bindings raise here
            raise EngineError(f"CUDA call {call} could not run ({type(exc).__name__}: {exc}); "
                              "check the NVIDIA driver installation (nvidia-smi)") from None
        code = res[0]
        if code != self._success:
            raise self._fail(call, code)
        if len(res) == 1:
            return None
        return res[1] if len(res) == 2 else tuple(res[1:])

    def _dcall(self, call: str, *args: Any) -> Any:
        """Like :meth:`_call` for the driver API (``CUresult``)."""
        if self._drv is None:
            raise EngineError(f"CUDA driver call {call} is unavailable: cuda.bindings.driver was "
                              "not imported")
        try:
            res = getattr(self._drv, call)(*args)
        except Exception as exc:
            raise EngineError(f"CUDA driver call {call} could not run ({type(exc).__name__}: "
                              f"{exc})") from None
        code = res[0]
        if code != self._drv.CUresult.CUDA_SUCCESS:
            raise EngineError(f"CUDA driver call {call} failed with {_enum_name(code)} "
                              f"({int(code)})")
        if len(res) == 1:
            return None
        return res[1] if len(res) == 2 else tuple(res[1:])

    # device -----------------------------------------------------------------------------------
    def activate(self) -> None:
        if getattr(self._local, "active", False):
            return
        self._call("cudaSetDevice", self.device)
        self._call("cudaFree", 0)  # forces primary-context creation so driver calls can run
        self._local.active = True

    def device_name(self) -> str:
        prop = self._call("cudaGetDeviceProperties", self.device)
        raw = prop.name
        return (raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes)
                else str(raw))

    def compute_capability(self) -> tuple[int, int]:
        attr = self._rt.cudaDeviceAttr
        major = self._call("cudaDeviceGetAttribute", attr.cudaDevAttrComputeCapabilityMajor,
                           self.device)
        minor = self._call("cudaDeviceGetAttribute", attr.cudaDevAttrComputeCapabilityMinor,
                           self.device)
        return int(major), int(minor)

    def versions(self) -> dict[str, str]:
        def fmt(v: int) -> str:
            return f"{v // 1000}.{(v % 1000) // 10}"

        out = {"driver_api": fmt(self._call("cudaDriverGetVersion")),
               "runtime": fmt(self._call("cudaRuntimeGetVersion"))}
        with contextlib.suppress(Exception):
            import cuda.bindings

            out["cuda-bindings"] = cuda.bindings.__version__
        return out

    # memory -----------------------------------------------------------------------------------
    def mem_get_info(self) -> tuple[int, int]:
        free, total = self._call("cudaMemGetInfo")
        return int(free), int(total)

    def mem_alloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", nbytes))

    def mem_free(self, ptr: int) -> None:
        self._call("cudaFree", ptr)

    def host_alloc(self, nbytes: int) -> tuple[np.ndarray, Any]:
        ptr = int(self._call("cudaMallocHost", nbytes))
        view = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr)) if nbytes \
            else np.empty(0, np.uint8)
        return view, ptr

    def host_free(self, token: Any) -> None:
        self._call("cudaFreeHost", token)

    def memcpy_htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        self._call("cudaMemcpyAsync", dst, src.ctypes.data, nbytes,
                   self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        self._call("cudaMemcpyAsync", dst.ctypes.data, src, nbytes,
                   self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)

    def memcpy_dtod_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._call("cudaMemcpyAsync", dst, src, nbytes,
                   self._rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream)

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: Any) -> None:
        self._call("cudaMemsetAsync", ptr, value, nbytes, stream)

    # streams and events -----------------------------------------------------------------------
    def stream_create(self) -> Any:
        # Non-blocking: no implicit synchronisation with the legacy default stream, which other
        # libraries in the process (torch, cv2) may use.
        return self._call("cudaStreamCreateWithFlags", self._rt.cudaStreamNonBlocking)

    def stream_destroy(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", stream)

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", stream)

    def stream_query(self, stream: Any) -> bool:
        code = self._rt.cudaStreamQuery(stream)[0]
        if code == self._not_ready:
            return False
        if code != self._success:
            raise self._fail("cudaStreamQuery", code)
        return True

    def stream_wait_event(self, stream: Any, event: Any) -> None:
        self._call("cudaStreamWaitEvent", stream, event, 0)

    def _as_stream(self, stream: Any) -> Any:
        return self._rt.cudaStream_t(stream) if isinstance(stream, int) else stream

    def event_create(self, timing: bool) -> Any:
        flags = self._rt.cudaEventDefault if timing else self._rt.cudaEventDisableTiming
        return self._call("cudaEventCreateWithFlags", flags)

    def event_destroy(self, event: Any) -> None:
        self._call("cudaEventDestroy", event)

    def event_record(self, event: Any, stream: Any) -> None:
        self._call("cudaEventRecord", event, self._as_stream(stream))

    def event_synchronize(self, event: Any) -> None:
        self._call("cudaEventSynchronize", event)

    def event_query(self, event: Any) -> bool:
        code = self._rt.cudaEventQuery(event)[0]
        if code == self._not_ready:
            return False
        if code != self._success:
            raise self._fail("cudaEventQuery", code)
        return True

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._call("cudaEventElapsedTime", start, end))

    # graphs -----------------------------------------------------------------------------------
    def begin_capture(self, stream: Any) -> None:
        # Thread-local mode: unsafe calls (cudaMalloc ...) made by *other* threads during the
        # capture do not invalidate it; this thread must not make them (we never do).
        self._call("cudaStreamBeginCapture", stream,
                   self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)

    def end_capture(self, stream: Any) -> Any:
        return self._call("cudaStreamEndCapture", stream)

    def graph_instantiate(self, graph: Any) -> Any:
        return self._call("cudaGraphInstantiateWithFlags", graph, 0)

    def graph_launch(self, graph_exec: Any, stream: Any) -> None:
        self._call("cudaGraphLaunch", graph_exec, stream)

    def graph_destroy(self, graph: Any) -> None:
        self._call("cudaGraphDestroy", graph)

    def graph_exec_destroy(self, graph_exec: Any) -> None:
        self._call("cudaGraphExecDestroy", graph_exec)

    # modules ----------------------------------------------------------------------------------
    def module_load(self, image: bytes) -> Any:
        return self._dcall("cuModuleLoadData", image)

    def module_unload(self, module: Any) -> None:
        self._dcall("cuModuleUnload", module)

    def module_function(self, module: Any, name: str) -> Any:
        return self._dcall("cuModuleGetFunction", module, name.encode())

    def pack_args(self, args: Sequence[np.generic]) -> Any:
        # kernelParams is a void*[] whose entries point at each argument's storage; the driver
        # copies the values at launch, so the arrays must live until then (we keep them).
        storage = [np.array([a]) for a in args]
        params = np.array([a.ctypes.data for a in storage], dtype=np.uint64)
        return storage, params, int(params.ctypes.data)

    def launch(self, function: Any, grid: tuple[int, int, int], block: tuple[int, int, int],
               packed: Any, stream: Any) -> None:
        self._dcall("cuLaunchKernel", function, *grid, *block, 0, stream, packed[2], 0)


class PycudaBackend(CudaBackend):
    """The optional ``pycuda`` backend, on the device's primary context (shared with TensorRT).

    CUDA graphs need pycuda >= 2022.2 (``Stream.begin_capture``); older versions raise a clear
    :class:`EngineError` when a graph is requested.

    Raises:
        DependencyError: pycuda is not installed.
        EngineError: No driver/GPU, or ``device`` does not exist.
    """

    name = "pycuda"

    def __init__(self, device: int = 0, *, driver: Any = None) -> None:
        if driver is None:
            if importlib.util.find_spec("pycuda") is None:
                raise DependencyError("pycuda", "pycuda", "the pycuda CUDA backend")
            driver = importlib.import_module("pycuda.driver")
        self._cuda = driver
        self.device = int(device)
        self._local = threading.local()
        self._guard("cuInit", driver.init)
        count = self._guard("cuDeviceGetCount", driver.Device.count)
        if not 0 <= self.device < count:
            raise EngineError(f"CUDA device {self.device} does not exist: this machine has {count} "
                              f"GPU(s); pass device=0..{max(count - 1, 0)}")
        self._dev = self._guard("cuDeviceGet", driver.Device, self.device)
        self._ctx = self._guard("cuDevicePrimaryCtxRetain", self._dev.retain_primary_context)
        self._allocs: dict[int, Any] = {}
        self.activate()

    def _guard(self, call: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._cuda.Error as exc:
            raise EngineError(f"CUDA call {call} (pycuda) failed: {exc}") from None

    def activate(self) -> None:
        if getattr(self._local, "pushed", False):
            return
        self._guard("cuCtxPushCurrent", self._ctx.push)
        self._local.pushed = True

    def close(self) -> None:
        if getattr(self._local, "pushed", False):
            with contextlib.suppress(Exception):
                self._cuda.Context.pop()
            self._local.pushed = False
        with contextlib.suppress(Exception):
            self._ctx.detach()

    def device_name(self) -> str:
        return str(self._dev.name())

    def compute_capability(self) -> tuple[int, int]:
        major, minor = self._dev.compute_capability()
        return int(major), int(minor)

    def versions(self) -> dict[str, str]:
        v = self._cuda.get_driver_version()
        out = {"driver_api": f"{v // 1000}.{(v % 1000) // 10}",
               "pycuda_built_against": ".".join(map(str, self._cuda.get_version()))}
        with contextlib.suppress(Exception):
            import pycuda

            out["pycuda"] = pycuda.VERSION_TEXT
        return out

    def mem_get_info(self) -> tuple[int, int]:
        free, total = self._guard("cuMemGetInfo", self._cuda.mem_get_info)
        return int(free), int(total)

    def mem_alloc(self, nbytes: int) -> int:
        alloc = self._guard("cuMemAlloc", self._cuda.mem_alloc, max(nbytes, 1))
        ptr = int(alloc)
        self._allocs[ptr] = alloc
        return ptr

    def mem_free(self, ptr: int) -> None:
        alloc = self._allocs.pop(ptr, None)
        if alloc is None:
            raise EngineError(f"cuMemFree (pycuda): pointer {ptr:#x} was not allocated here")
        self._guard("cuMemFree", alloc.free)

    def host_alloc(self, nbytes: int) -> tuple[np.ndarray, Any]:
        arr = self._guard("cuMemHostAlloc", self._cuda.pagelocked_empty, (max(nbytes, 1),),
                          np.uint8)
        return arr[:nbytes], arr

    def host_free(self, token: Any) -> None:
        self._guard("cuMemFreeHost", token.base.free)

    def memcpy_htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None:
        self._guard("cuMemcpyHtoDAsync", self._cuda.memcpy_htod_async, dst,
                    src.reshape(-1).view(np.uint8)[:nbytes], stream)

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None:
        self._guard("cuMemcpyDtoHAsync", self._cuda.memcpy_dtoh_async,
                    dst.reshape(-1).view(np.uint8)[:nbytes], src, stream)

    def memcpy_dtod_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        self._guard("cuMemcpyDtoDAsync", self._cuda.memcpy_dtod_async, dst, src, nbytes, stream)

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: Any) -> None:
        self._guard("cuMemsetD8Async", self._cuda.memset_d8_async, ptr, value, nbytes, stream)

    def stream_create(self) -> Any:
        return self._guard("cuStreamCreate", self._cuda.Stream, 1)  # CU_STREAM_NON_BLOCKING

    def stream_destroy(self, stream: Any) -> None:
        # pycuda destroys the stream when its last reference goes; nothing to call explicitly.
        return None

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_synchronize(self, stream: Any) -> None:
        self._guard("cuStreamSynchronize", stream.synchronize)

    def stream_query(self, stream: Any) -> bool:
        return bool(self._guard("cuStreamQuery", stream.is_done))

    def stream_wait_event(self, stream: Any, event: Any) -> None:
        self._guard("cuStreamWaitEvent", stream.wait_for_event, event)

    def event_create(self, timing: bool) -> Any:
        flags = 0 if timing else self._cuda.event_flags.DISABLE_TIMING
        return self._guard("cuEventCreate", self._cuda.Event, flags)

    def event_destroy(self, event: Any) -> None:
        return None  # freed by pycuda with the object

    def event_record(self, event: Any, stream: Any) -> None:
        if isinstance(stream, int):
            raise EngineError("the pycuda backend cannot record an event on a foreign raw stream "
                              "handle; use the cuda-python backend for device inputs that carry "
                              "a producer stream")
        self._guard("cuEventRecord", event.record, stream)

    def event_synchronize(self, event: Any) -> None:
        self._guard("cuEventSynchronize", event.synchronize)

    def event_query(self, event: Any) -> bool:
        return bool(self._guard("cuEventQuery", event.query))

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._guard("cuEventElapsedTime", end.time_since, start))

    def _graph_api(self, stream: Any, attr: str) -> Callable[..., Any]:
        fn = getattr(stream, attr, None)
        if fn is None:
            raise EngineError("this pycuda has no CUDA graph support (Stream.begin_capture is "
                              "missing); upgrade with: pip install -U 'pycuda>=2022.2', or use "
                              "cuda_backend='cuda-python'")
        return fn

    def begin_capture(self, stream: Any) -> None:
        mode = self._cuda.capture_mode.THREAD_LOCAL if hasattr(self._cuda, "capture_mode") \
            else None
        fn = self._graph_api(stream, "begin_capture")
        self._guard("cuStreamBeginCapture", fn, *(() if mode is None else (mode,)))

    def end_capture(self, stream: Any) -> Any:
        return self._guard("cuStreamEndCapture", self._graph_api(stream, "end_capture"))

    def graph_instantiate(self, graph: Any) -> Any:
        return self._guard("cuGraphInstantiate", graph.instantiate)

    def graph_launch(self, graph_exec: Any, stream: Any) -> None:
        self._guard("cuGraphLaunch", graph_exec.launch, stream)

    def graph_destroy(self, graph: Any) -> None:
        return None  # pycuda frees graphs with their Python objects

    def graph_exec_destroy(self, graph_exec: Any) -> None:
        return None

    def module_load(self, image: bytes) -> Any:
        return self._guard("cuModuleLoadData", self._cuda.module_from_buffer, image)

    def module_unload(self, module: Any) -> None:
        return None  # pycuda unloads the module with the object

    def module_function(self, module: Any, name: str) -> Any:
        return self._guard("cuModuleGetFunction", module.get_function, name)

    def launch(self, function: Any, grid: tuple[int, int, int], block: tuple[int, int, int],
               packed: Any, stream: Any) -> None:
        self._guard("cuLaunchKernel", function, *packed, grid=tuple(grid), block=tuple(block),
                    stream=stream)


def _import_cuda_python() -> tuple[Any, Any]:
    """Import the runtime and driver modules of cuda-python (12.6+ layout, then the old one)."""
    try:
        from cuda.bindings import driver, runtime  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cuda as driver  # type: ignore[import-not-found,no-redef]
            from cuda import cudart as runtime  # type: ignore[import-not-found,no-redef]
        except ImportError:
            raise DependencyError("cuda-python", "cuda", "the CUDA runtime layer") from None
    return runtime, driver


def backend_status() -> dict[str, str | None]:
    """Which CUDA backends are importable here, without touching the driver.

    Returns:
        ``{name: None}`` for an importable backend, ``{name: reason}`` otherwise.
    """
    out: dict[str, str | None] = {}
    try:
        _import_cuda_python()
        out["cuda-python"] = None
    except DependencyError as exc:
        out["cuda-python"] = str(exc)
    out["pycuda"] = (None if importlib.util.find_spec("pycuda") is not None else
                     str(DependencyError("pycuda", "pycuda", "the pycuda CUDA backend"))
                     + " (pycuda builds from source and needs the CUDA toolkit and driver)")
    return out


def nvrtc_status() -> str | None:
    """``None`` when NVRTC (used to compile the self-test's stand-in kernel) is usable here,
    else why not and how to fix it. Never raises; touches no GPU."""
    try:
        from cuda.bindings import nvrtc  # type: ignore[import-not-found]
    except ImportError:
        return str(DependencyError("cuda-python", "cuda", "NVRTC kernel compilation"))
    try:
        nvrtc.nvrtcVersion()
    except Exception:
        return ("the NVRTC library is missing (needed to compile the stand-in kernel): pip "
                "install nvidia-cuda-nvrtc (CUDA 13) or nvidia-cuda-nvrtc-cu12 (CUDA 12)")
    return None


def open_backend(name: str = "cuda-python", device: int = 0) -> CudaBackend:
    """Create a CUDA backend by name on ``device``.

    Args:
        name: ``cuda-python`` (default) or ``pycuda``.
        device: CUDA device ordinal.

    Raises:
        EngineError: Unknown backend name, no NVIDIA driver/GPU, or no such device.
        DependencyError: The backend's Python package is not installed.
    """
    if name == "cuda-python":
        return CudaPythonBackend(device)
    if name == "pycuda":
        return PycudaBackend(device)
    raise EngineError(f"unknown CUDA backend {name!r}; choose one of: {', '.join(BACKENDS)}")


# ------------------------------------------------------------------------------------------------
# Owned resources
# ------------------------------------------------------------------------------------------------
class _Owned:
    """Base of every resource: one owner, idempotent close, context manager, use-after-close
    guard. Subclasses set ``self._release`` (a callable freeing the handle) via :meth:`_own`."""

    _what = "CUDA resource"

    def __init__(self) -> None:
        self._closed = False
        self._finalizer: weakref.finalize | None = None

    def _own(self, release: Callable[..., None], *args: Any) -> None:
        what = self._what  # the finaliser must not reference self (it would keep it alive)

        def safe(*a: Any) -> None:  # a finaliser must never raise
            try:
                release(*a)
            except Exception as exc:
                log.debug("releasing a dropped %s failed: %s", what, exc)

        self._finalizer = weakref.finalize(self, safe, *args)
        # At interpreter exit the CUDA context may already be gone: do not free then.
        self._finalizer.atexit = False
        self._release_fn, self._release_args = release, args

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(f"this {self._what} was used after close(); create a new one")

    def close(self) -> None:
        """Free the handle. Idempotent; errors while freeing are raised once."""
        if self._closed:
            return
        self._closed = True
        if self._finalizer is not None and self._finalizer.detach() is not None:
            args, self._release_args = self._release_args, ()
            self._handle = self._handles = None  # drop backend objects (pycuda frees on GC)
            self._release_fn(*args)

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeviceBuffer(_Owned):
    """``nbytes`` of device memory, owned.

    Args:
        backend: The CUDA backend.
        nbytes: Size in bytes (> 0).

    Raises:
        EngineError: Bad size or ``cudaMalloc`` failure (e.g. out of memory).
    """

    _what = "device buffer"

    def __init__(self, backend: CudaBackend, nbytes: int) -> None:
        super().__init__()
        if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes <= 0:
            raise EngineError(f"a device buffer needs a positive size in bytes, got {nbytes!r}")
        self._backend = backend
        self.nbytes = int(nbytes)
        self._ptr = backend.mem_alloc(self.nbytes)
        self._own(backend.mem_free, self._ptr)

    @property
    def ptr(self) -> int:
        """The device address (int)."""
        self._check_open()
        return self._ptr

    def _fit(self, nbytes: int, what: str) -> None:
        if nbytes > self.nbytes:
            raise EngineError(f"{what} of {nbytes} bytes does not fit a device buffer of "
                              f"{self.nbytes} bytes")

    def copy_from_host(self, host: np.ndarray, stream: "Stream") -> None:
        """Enqueue a host-to-device copy of ``host`` (C-contiguous) into this buffer."""
        self._check_open()
        _require_c_contiguous(host)
        self._fit(host.nbytes, "a host array")
        self._backend.memcpy_htod_async(self._ptr, host, host.nbytes, stream.handle)

    def copy_to_host(self, host: np.ndarray, stream: "Stream") -> None:
        """Enqueue a device-to-host copy of ``host.nbytes`` bytes from this buffer into ``host``."""
        self._check_open()
        _require_c_contiguous(host)
        if not host.flags.writeable:
            raise EngineError("the destination host array is read-only")
        self._fit(host.nbytes, "a host array")
        self._backend.memcpy_dtoh_async(host, self._ptr, host.nbytes, stream.handle)

    def copy_from_device(self, src: int, nbytes: int, stream: "Stream") -> None:
        """Enqueue a device-to-device copy of ``nbytes`` from address ``src``."""
        self._check_open()
        self._fit(nbytes, "a device array")
        self._backend.memcpy_dtod_async(self._ptr, int(src), int(nbytes), stream.handle)

    def fill_bytes(self, value: int, stream: "Stream") -> None:
        """Enqueue a memset of every byte to ``value`` (0..255)."""
        self._check_open()
        self._backend.memset_async(self._ptr, int(value), self.nbytes, stream.handle)


class DeviceArray:
    """A typed view of (part of) a :class:`DeviceBuffer` exposing ``__cuda_array_interface__``
    (v3), so our own device memory can be passed wherever torch/CuPy arrays are accepted.

    Does not own the memory: it is valid while the buffer is open.

    Raises:
        EngineError: The shape/dtype needs more bytes than the buffer holds.
    """

    def __init__(self, buffer: DeviceBuffer, shape: Sequence[int], dtype: Any) -> None:
        self.buffer = buffer
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        need = nbytes_of(self.shape, self.dtype)
        if need > buffer.nbytes:
            raise EngineError(f"a {self.dtype.name} array of shape {self.shape} needs {need} "
                              f"bytes; the device buffer has {buffer.nbytes}")

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        # "stream": None = no synchronisation needed: we only hand out views of data whose
        # writes the caller has synchronised (or enqueued on the consumer's own stream).
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.buffer.ptr, False),
                "strides": None, "version": 3, "stream": None}


class PinnedBuffer(_Owned):
    """A page-locked host array of ``shape``/``dtype`` (fast, truly asynchronous copies).

    :attr:`array` is a NumPy view of memory this object owns: it is invalid after ``close()``
    (the property then raises); copy data out before closing.

    Raises:
        EngineError: Bad shape or ``cudaMallocHost`` failure.
    """

    _what = "pinned host buffer"

    def __init__(self, backend: CudaBackend, shape: Sequence[int], dtype: Any) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = nbytes_of(self.shape, self.dtype)
        if self.nbytes == 0:
            raise EngineError(f"a pinned buffer of shape {self.shape} would be empty")
        raw, token = backend.host_alloc(self.nbytes)
        self._own(backend.host_free, token)
        self._array = raw[: self.nbytes].view(self.dtype).reshape(self.shape)

    @property
    def array(self) -> np.ndarray:
        """The page-locked NumPy view (valid until ``close()``)."""
        self._check_open()
        return self._array

    def close(self) -> None:
        if not self._closed:
            self._array = np.empty(0, self.dtype)  # drop our view before the memory goes
        super().close()


class Stream(_Owned):
    """An owned non-blocking CUDA stream.

    Attributes:
        handle: The backend's stream object (for backend calls).
        ptr: The raw ``cudaStream_t`` as an int (for TensorRT ``execute_async_v3``).
    """

    _what = "CUDA stream"

    def __init__(self, backend: CudaBackend) -> None:
        super().__init__()
        self._backend = backend
        self._handle = backend.stream_create()
        self._ptr = backend.stream_handle(self._handle)
        self._own(backend.stream_destroy, self._handle)

    @property
    def handle(self) -> Any:
        self._check_open()
        return self._handle

    @property
    def ptr(self) -> int:
        self._check_open()
        return self._ptr

    def synchronize(self) -> None:
        """Block until all work enqueued on this stream has finished."""
        self._backend.stream_synchronize(self.handle)

    def query(self) -> bool:
        """``True`` when all enqueued work has finished (never blocks)."""
        return self._backend.stream_query(self.handle)

    def wait(self, event: "Event") -> None:
        """Make later work on this stream wait for ``event`` (no host blocking)."""
        self._backend.stream_wait_event(self.handle, event.handle)

    @contextlib.contextmanager
    def capture(self) -> Iterator["_Capture"]:
        """Capture the work enqueued inside the block into a :class:`CudaGraph`.

        Usage: ``with stream.capture() as cap: ...`` then ``graph = cap.graph``. If the block
        raises, capture is ended and the partial graph discarded.

        Raises:
            EngineError: Capture could not begin/end or the graph could not be instantiated.
        """
        backend = self._backend
        backend.begin_capture(self.handle)
        cap = _Capture()
        try:
            yield cap
        except BaseException:
            with contextlib.suppress(Exception):
                g = backend.end_capture(self._handle)
                if g is not None:
                    backend.graph_destroy(g)
            raise
        graph = backend.end_capture(self._handle)
        if graph is None:
            raise EngineError("CUDA stream capture was invalidated (an operation not allowed "
                              "during capture ran on this stream); CUDA graphs cannot be used "
                              "with this engine: pass cuda_graphs=False")
        try:
            cap.graph = CudaGraph(backend, graph)
        except BaseException:
            with contextlib.suppress(Exception):
                backend.graph_destroy(graph)
            raise


class _Capture:
    graph: "CudaGraph | None" = None


class Event(_Owned):
    """An owned CUDA event (timing disabled unless ``timing=True``: cheaper to record)."""

    _what = "CUDA event"

    def __init__(self, backend: CudaBackend, *, timing: bool = False) -> None:
        super().__init__()
        self._backend = backend
        self.timing = bool(timing)
        self._handle = backend.event_create(self.timing)
        self._own(backend.event_destroy, self._handle)

    @property
    def handle(self) -> Any:
        self._check_open()
        return self._handle

    def record(self, stream: "Stream | int") -> None:
        """Record on ``stream`` (a :class:`Stream`, or a raw stream handle int of another
        library, e.g. the producer stream of a device array)."""
        target = stream if isinstance(stream, int) else stream.handle
        self._backend.event_record(self.handle, target)

    def synchronize(self) -> None:
        self._backend.event_synchronize(self.handle)

    def query(self) -> bool:
        """``True`` when the work before the last ``record`` has finished."""
        return self._backend.event_query(self.handle)

    def elapsed_ms(self, end: "Event") -> float:
        """GPU time in milliseconds from this event to ``end`` (both recorded and finished).

        Raises:
            EngineError: An event was created without timing, or not recorded/finished.
        """
        if not (self.timing and end.timing):
            raise EngineError("elapsed time needs both events created with timing=True")
        return self._backend.event_elapsed_ms(self.handle, end.handle)


class CudaGraph(_Owned):
    """An instantiated CUDA graph (from :meth:`Stream.capture`), replayed with :meth:`launch`.

    The graph replays the captured operations with the *same* addresses and kernel arguments;
    change buffer contents, not buffers.
    """

    _what = "CUDA graph"

    def __init__(self, backend: CudaBackend, graph: Any) -> None:
        super().__init__()
        self._backend = backend
        exec_ = backend.graph_instantiate(graph)
        self._handles = (graph, exec_)

        def release(g: Any, e: Any) -> None:
            try:
                backend.graph_exec_destroy(e)
            finally:
                backend.graph_destroy(g)

        self._own(release, graph, exec_)

    def launch(self, stream: Stream) -> None:
        """Enqueue one replay of the graph on ``stream``."""
        self._check_open()
        self._backend.graph_launch(self._handles[1], stream.handle)


class CudaModule(_Owned):
    """A loaded CUDA module (cubin/PTX image) and its kernels."""

    _what = "CUDA module"

    def __init__(self, backend: CudaBackend, image: bytes) -> None:
        super().__init__()
        self._backend = backend
        self._handle = backend.module_load(image)
        self._own(backend.module_unload, self._handle)

    def kernel(self, name: str) -> "Kernel":
        """The kernel ``name`` (an ``extern "C"`` function) of this module."""
        self._check_open()
        return Kernel(self, self._backend.module_function(self._handle, name), name)


class Kernel:
    """A kernel of a :class:`CudaModule` (valid while the module is open)."""

    def __init__(self, module: CudaModule, function: Any, name: str) -> None:
        self._module = module
        self._function = function
        self.name = name

    def pack(self, args: Sequence[np.generic]) -> "PackedArgs":
        """Validate and pack arguments once for many launches.

        Args:
            args: NumPy scalars with explicit C types (``np.uint64`` for device pointers,
                ``np.float32``, ``np.int32`` ...).

        Raises:
            EngineError: An argument is not a NumPy scalar.
        """
        for a in args:
            if not isinstance(a, np.generic):
                raise EngineError(f"kernel {self.name}: arguments must be NumPy scalars with an "
                                  f"explicit C type (np.uint64 for pointers), got {type(a).__name__}")
        return PackedArgs(tuple(args), self._module._backend.pack_args(args))

    def launch(self, grid: tuple[int, int, int], block: tuple[int, int, int],
               args: "Sequence[np.generic] | PackedArgs", stream: Stream) -> None:
        """Enqueue the kernel on ``stream`` with ``args`` (NumPy scalars, or :meth:`pack` output
        to skip per-launch packing)."""
        self._module._check_open()
        packed = args if isinstance(args, PackedArgs) else self.pack(args)
        self._module._backend.launch(self._function, grid, block, packed.native, stream.handle)


@dataclass(frozen=True)
class PackedArgs:
    """Kernel arguments packed once by :meth:`Kernel.pack` (``native``: the backend's form)."""

    args: tuple
    native: Any


def _require_c_contiguous(arr: np.ndarray) -> None:
    if not isinstance(arr, np.ndarray):
        raise EngineError(f"expected a NumPy array, got {type(arr).__name__}")
    if not arr.flags.c_contiguous:
        raise EngineError("the host array is not C-contiguous; pass np.ascontiguousarray(x)")


# ------------------------------------------------------------------------------------------------
# A device and its factories
# ------------------------------------------------------------------------------------------------
class CudaDevice:
    """One GPU through one backend: the factory of owned resources.

    Args:
        device: CUDA device ordinal.
        backend: ``cuda-python`` (default) or ``pycuda``, or a :class:`CudaBackend` instance.

    Raises:
        EngineError, DependencyError: See :func:`open_backend`.
    """

    def __init__(self, device: int = 0, backend: "str | CudaBackend" = "cuda-python") -> None:
        self.backend = backend if isinstance(backend, CudaBackend) else open_backend(backend,
                                                                                     device)
        self.index = self.backend.device
        self._closed = False

    @property
    def name(self) -> str:
        return self.backend.device_name()

    @property
    def compute_capability(self) -> tuple[int, int]:
        return self.backend.compute_capability()

    def _check(self) -> CudaBackend:
        if self._closed:
            raise EngineError("this CudaDevice was used after close(); create a new one")
        self.backend.activate()
        return self.backend

    def alloc(self, nbytes: int) -> DeviceBuffer:
        return DeviceBuffer(self._check(), nbytes)

    def pinned(self, shape: Sequence[int], dtype: Any) -> PinnedBuffer:
        return PinnedBuffer(self._check(), shape, dtype)

    def stream(self) -> Stream:
        return Stream(self._check())

    def event(self, *, timing: bool = False) -> Event:
        return Event(self._check(), timing=timing)

    def load_module(self, image: bytes) -> CudaModule:
        return CudaModule(self._check(), image)

    def close(self) -> None:
        """Release the backend (resources created from it must be closed first). Idempotent."""
        if not self._closed:
            self._closed = True
            self.backend.close()

    def __enter__(self) -> "CudaDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------
# NVRTC
# ------------------------------------------------------------------------------------------------
def compile_kernel(source: str, *, arch: tuple[int, int], name: str = "kernel.cu",
                   options: Sequence[str] = ()) -> bytes:
    """Compile CUDA C++ to a cubin for ``sm_<arch>`` with NVRTC (runs on the CPU).

    A cubin (not PTX) is produced so that a driver of the same CUDA major version but older
    than NVRTC can load it (PTX would need a driver at least as new as NVRTC).

    Args:
        source: The CUDA source (kernels ``extern "C"`` so their names are not mangled).
        arch: Compute capability, e.g. ``(9, 0)``.
        name: Program name in diagnostics.
        options: Extra NVRTC options.

    Returns:
        The cubin image (ELF bytes).

    Raises:
        DependencyError: cuda-python is not installed.
        EngineError: The NVRTC library is missing, the architecture unsupported, or compilation
            failed (message includes the compiler log).
    """
    try:
        from cuda.bindings import nvrtc  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import nvrtc  # type: ignore[import-not-found,no-redef]
        except ImportError:
            raise DependencyError("cuda-python", "cuda", "NVRTC kernel compilation") from None
    ok = nvrtc.nvrtcResult.NVRTC_SUCCESS

    def call(fn: str, *args: Any) -> Any:
        try:
            res = getattr(nvrtc, fn)(*args)
        except Exception as exc:  # the bindings raise when libnvrtc cannot be found
            raise EngineError(f"NVRTC call {fn} could not run ({type(exc).__name__}: {exc}); "
                              "install the NVRTC library: pip install 'nvidia-cuda-nvrtc' "
                              "(CUDA 13) or 'nvidia-cuda-nvrtc-cu12' (CUDA 12)") from None
        if res[0] != ok:
            raise EngineError(f"NVRTC call {fn} failed with {_enum_name(res[0])}")
        return res[1] if len(res) == 2 else (None if len(res) == 1 else tuple(res[1:]))

    prog = call("nvrtcCreateProgram", source.encode(), name.encode(), 0, [], [])
    try:
        opts = [f"--gpu-architecture=sm_{arch[0]}{arch[1]}".encode(),
                *(o.encode() for o in options)]
        res = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if res[0] != ok:
            size = call("nvrtcGetProgramLogSize", prog)
            buf = b" " * size
            call("nvrtcGetProgramLog", prog, buf)
            raise EngineError(f"NVRTC could not compile {name} for sm_{arch[0]}{arch[1]} "
                              f"({_enum_name(res[0])}): "
                              f"{buf.rstrip(b' ').rstrip(bytes(1)).decode(errors='replace')}")
        size = call("nvrtcGetCUBINSize", prog)
        cubin = b" " * size
        call("nvrtcGetCUBIN", prog, cubin)
        return cubin
    finally:
        with contextlib.suppress(Exception):
            nvrtc.nvrtcDestroyProgram(prog)


# ------------------------------------------------------------------------------------------------
# Device arrays of other libraries (__cuda_array_interface__ / DLPack)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceArrayInfo:
    """A device array described without copying it.

    Attributes:
        ptr: Device address of element 0.
        shape: Dimensions.
        dtype: NumPy dtype.
        c_contiguous: Whether the elements are densely packed in C order.
        device_type: ``cuda`` or ``cpu`` (DLPack may describe host memory), or ``other``.
        device_id: Device ordinal (DLPack only; ``None`` from the CUDA array interface).
        stream: Producer stream to synchronise with before reading (CAI v3), or ``None``.
        keepalive: Objects that must stay alive while the memory is used.
    """

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    c_contiguous: bool
    device_type: str = "cuda"
    device_id: int | None = None
    stream: int | None = None
    keepalive: tuple = ()

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.shape, self.dtype)


def _c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...] | None, itemsize: int) -> bool:
    if strides is None:
        return True
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim > 1 and stride != expected:
            return False
        expected *= dim
    return True


def _from_cai(obj: Any) -> DeviceArrayInfo:
    iface = obj.__cuda_array_interface__
    if not isinstance(iface, dict):
        raise EngineError("__cuda_array_interface__ is not a dict")
    try:
        shape = tuple(int(d) for d in iface["shape"])
        dtype = np.dtype(iface["typestr"])
        ptr = int(iface["data"][0])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise EngineError(f"invalid __cuda_array_interface__ ({exc}); the producer library is "
                          "not following the CUDA array interface") from None
    if iface.get("mask") is not None:
        raise EngineError("masked device arrays (__cuda_array_interface__ 'mask') are not "
                          "supported")
    strides = iface.get("strides")
    strides = None if strides is None else tuple(int(s) for s in strides)
    stream = iface.get("stream")
    if stream is not None:
        if isinstance(stream, bool) or not isinstance(stream, int) or stream == 0:
            # v3: 0 is disallowed (ambiguous), 1 = legacy default, 2 = per-thread default.
            raise EngineError(f"invalid producer stream {stream!r} in __cuda_array_interface__")
    return DeviceArrayInfo(ptr, shape, dtype, _c_contiguous(shape, strides, dtype.itemsize),
                           "cuda", None, stream, (obj,))


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
_DL_CODES = {0: "i", 1: "u", 2: "f", 6: "b"}  # kDLInt, kDLUInt, kDLFloat, kDLBool


def _from_dlpack(obj: Any, consumer_stream: int | None) -> DeviceArrayInfo:
    dev_type, dev_id = obj.__dlpack_device__()
    dev_type, dev_id = int(dev_type), int(dev_id)
    on_cuda = dev_type in (_DL_CUDA, _DL_CUDA_MANAGED)
    try:
        # For CUDA arrays the producer makes its data safe to use on our stream (DLPack
        # protocol); for host arrays the stream must be None.
        capsule = obj.__dlpack__(stream=consumer_stream if on_cuda else None)
    except (TypeError, BufferError) as exc:
        raise EngineError(f"the array could not be exported through DLPack: {exc}") from None
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    is_valid = ctypes.pythonapi.PyCapsule_IsValid
    is_valid.restype, is_valid.argtypes = ctypes.c_int, [ctypes.py_object, ctypes.c_char_p]
    if not is_valid(capsule, b"dltensor"):
        raise EngineError("the object's __dlpack__ did not return an unconsumed 'dltensor' "
                          "capsule")
    # The DLManagedTensor starts with its DLTensor. We do not rename the capsule, so it stays
    # owned by the capsule, whose destructor frees it; we keep the capsule alive while in use.
    tensor = _DLTensor.from_address(get_ptr(capsule, b"dltensor"))
    ndim = int(tensor.ndim)
    shape = tuple(int(tensor.shape[i]) for i in range(ndim))
    code, bits, lanes = int(tensor.dtype.code), int(tensor.dtype.bits), int(tensor.dtype.lanes)
    if lanes != 1 or code not in _DL_CODES:
        raise EngineError(f"unsupported DLPack dtype (code={code}, bits={bits}, lanes={lanes})")
    dtype = np.dtype(f"{_DL_CODES[code]}{bits // 8}") if code != 6 else np.dtype(bool)
    strides = (None if not tensor.strides else
               tuple(int(tensor.strides[i]) * dtype.itemsize for i in range(ndim)))
    kind = "cuda" if on_cuda else ("cpu" if dev_type in (_DL_CPU, _DL_CUDA_HOST) else "other")
    ptr = int(tensor.data or 0) + int(tensor.byte_offset)
    return DeviceArrayInfo(ptr, shape, dtype, _c_contiguous(shape, strides, dtype.itemsize),
                           kind, dev_id, None, (obj, capsule))


def device_array_info(obj: Any, *, consumer_stream: int | None = None) -> DeviceArrayInfo | None:
    """Describe a device array of another library (torch, CuPy, JAX ...) without copying it.

    CUDA arrays that speak DLPack are read through it first, because DLPack hands over stream
    ordering: the producer makes ``consumer_stream`` wait for its pending writes (torch's
    ``__cuda_array_interface__`` is v2 and carries no stream). Otherwise the CUDA array
    interface is used (a v3 ``stream`` entry is returned for the caller to wait on), and DLPack
    host arrays come back with ``device_type == "cpu"``. NumPy arrays return ``None``.

    Args:
        obj: The array.
        consumer_stream: Our stream handle, handed to ``__dlpack__``.

    Returns:
        A :class:`DeviceArrayInfo` (check ``device_type``), or ``None`` for objects that expose
        neither protocol.

    Raises:
        EngineError: The object exposes a protocol but its description is invalid/unsupported.
    """
    if isinstance(obj, np.ndarray):
        return None
    has_dlpack = hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__")
    if has_dlpack:
        try:
            dev_type = int(obj.__dlpack_device__()[0])
        except Exception as exc:
            raise EngineError(f"__dlpack_device__ failed: {exc}") from None
        if dev_type in (_DL_CUDA, _DL_CUDA_MANAGED):
            return _from_dlpack(obj, consumer_stream)
    if hasattr(obj, "__cuda_array_interface__"):
        try:
            return _from_cai(obj)
        except AttributeError:
            pass  # e.g. torch raises AttributeError for CPU tensors: fall through to DLPack
    if has_dlpack:
        return _from_dlpack(obj, consumer_stream)
    return None
