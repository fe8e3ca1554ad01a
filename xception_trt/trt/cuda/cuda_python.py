"""The ``cuda-python`` backend (``cuda.bindings``, the default): :class:`CudaPythonBackend`.

NVIDIA's own bindings return an error code from every call; :meth:`CudaPythonBackend._call`
checks it and turns a failure into an :class:`EngineError` naming the call, the code and its
meaning.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import DependencyError, EngineError
from ..devices import no_gpu_message
from .base import CudaBackend, check_ordinal, code_name

__all__ = ["CudaPythonBackend", "import_cuda_python"]


def import_cuda_python() -> tuple[Any, Any]:
    """Import the runtime and driver modules of cuda-python (12.6+ layout, then the old one).

    Returns:
        ``(runtime, driver)`` binding modules.

    Raises:
        DependencyError: cuda-python is not installed (the message names the ``cuda`` extra).
    """
    try:
        from cuda.bindings import driver, runtime  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cuda as driver  # type: ignore[import-not-found,no-redef]
            from cuda import cudart as runtime  # type: ignore[import-not-found,no-redef]
        except ImportError:
            raise DependencyError("cuda-python", "cuda", "the CUDA runtime layer") from None
    return runtime, driver


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
            runtime, driver = import_cuda_python()
        self._rt = runtime
        self._drv = driver
        self._success = runtime.cudaError_t.cudaSuccess
        self._not_ready = runtime.cudaError_t.cudaErrorNotReady
        self.device = int(device)
        self._local = threading.local()
        try:
            count = self._call("cudaGetDeviceCount")
        except EngineError as exc:
            raise EngineError(no_gpu_message(str(exc))) from None
        check_ordinal(self.device, count)
        self.activate()

    # error checking ---------------------------------------------------------------------------
    def _fail(self, call: str, code: Any) -> EngineError:
        detail = ""
        with contextlib.suppress(Exception):
            res = self._rt.cudaGetErrorString(code)
            if res[0] == self._success and res[1]:
                detail = ": " + (res[1].decode(errors="replace") if isinstance(res[1], bytes)
                                 else str(res[1]))
        return EngineError(f"CUDA call {call} failed with {code_name(code)} "
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
            raise EngineError(f"CUDA driver call {call} failed with {code_name(code)} "
                              f"({int(code)})")
        if len(res) == 1:
            return None
        return res[1] if len(res) == 2 else tuple(res[1:])

    # device -----------------------------------------------------------------------------------
    def activate(self) -> None:
        # The current device is per host thread, and anything else in the process (torch, a
        # second runner on another GPU) may change it between our calls: check it each time
        # (cudaGetDevice is a cheap host-side query), set it only when it differs.
        if not getattr(self._local, "primed", False):
            self._call("cudaSetDevice", self.device)
            self._call("cudaFree", 0)  # forces primary-context creation so driver calls can run
            self._local.primed = True
        elif self._call("cudaGetDevice") != self.device:
            self._call("cudaSetDevice", self.device)

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

    def is_integrated(self) -> bool:
        return bool(self._call("cudaDeviceGetAttribute",
                               self._rt.cudaDeviceAttr.cudaDevAttrIntegrated, self.device))

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

    def _query(self, call: str, handle: Any) -> bool:
        """Run ``cudaStreamQuery``/``cudaEventQuery``: ``False`` while work is pending (that code
        is an answer, not an error)."""
        code = getattr(self._rt, call)(handle)[0]
        if code == self._not_ready:
            return False
        if code != self._success:
            raise self._fail(call, code)
        return True

    def stream_query(self, stream: Any) -> bool:
        return self._query("cudaStreamQuery", stream)

    def stream_wait_event(self, stream: Any, event: Any) -> None:
        self._call("cudaStreamWaitEvent", stream, event, 0)

    def _as_stream(self, stream: Any) -> Any:
        return self._rt.cudaStream_t(stream) if isinstance(stream, int) else stream

    def event_create(self, timing: bool, blocking_sync: bool = False) -> Any:
        flags = self._rt.cudaEventDefault if timing else self._rt.cudaEventDisableTiming
        if blocking_sync:  # the waiting thread sleeps instead of spinning a core (Jetson)
            flags |= self._rt.cudaEventBlockingSync
        return self._call("cudaEventCreateWithFlags", flags)

    def event_destroy(self, event: Any) -> None:
        self._call("cudaEventDestroy", event)

    def event_record(self, event: Any, stream: Any) -> None:
        self._call("cudaEventRecord", event, self._as_stream(stream))

    def event_synchronize(self, event: Any) -> None:
        self._call("cudaEventSynchronize", event)

    def event_query(self, event: Any) -> bool:
        return self._query("cudaEventQuery", event)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._call("cudaEventElapsedTime", start, end))

    # graphs -----------------------------------------------------------------------------------
    def begin_capture(self, stream: Any) -> None:
        # Thread-local mode: unsafe calls (cudaMalloc ...) made by *other* threads during the
        # capture do not invalidate it; this thread must not make them (we never do).
        self._call("cudaStreamBeginCapture", stream,
                   self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)

    def end_capture(self, stream: Any) -> Any:
        """End a capture; ``None`` when CUDA invalidated it (an operation that is not allowed
        during capture ran on the stream): the caller turns that into a clear message.

        ``cudaStreamEndCapture`` returns ``cudaErrorStreamCaptureInvalidated`` (or
        ``...Unsupported``) then, and the runtime keeps that code as the thread's last error,
        where the next library to check it (TensorRT) would find it: it is cleared here with
        ``cudaGetLastError`` (CUDA Runtime API, "Error Handling" / "Stream Management").
        """
        try:
            res = self._rt.cudaStreamEndCapture(stream)
        except Exception as exc:
            raise EngineError(f"CUDA call cudaStreamEndCapture could not run "
                              f"({type(exc).__name__}: {exc})") from None
        code = res[0]
        if code == self._success:
            return res[1]
        errors = self._rt.cudaError_t
        if code in (getattr(errors, "cudaErrorStreamCaptureInvalidated", None),
                    getattr(errors, "cudaErrorStreamCaptureUnsupported", None)):
            with contextlib.suppress(Exception):
                self._rt.cudaGetLastError()
            return None
        raise self._fail("cudaStreamEndCapture", code)

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
