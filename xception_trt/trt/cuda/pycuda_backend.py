"""The optional ``pycuda`` backend (common on Jetson): :class:`PycudaBackend`.

pycuda raises ``pycuda.driver.Error``, which is turned into the same :class:`EngineError` as the
cuda-python backend's. It works on the device's *primary* context, so TensorRT (CUDA runtime
API) and pycuda share one context.

Context scoping: pycuda keeps a context stack per thread and aborts the process when a thread's
stack is not empty as it is destroyed ("PyCUDA ERROR: The context stack was not empty upon
module cleanup", pycuda ``src/cpp/cuda.hpp``, ``context_stack::~context_stack``). So every push
is paired with a pop inside one call: :meth:`PycudaBackend.scope`, used by each operation here
and by the runner around each public call.

CUDA graphs: no pycuda release wraps stream capture or graphs (no ``cuStreamBeginCapture`` /
``cuGraph*`` in pycuda's ``src/wrapper/wrap_cudadrv.cpp`` up to 2026.1), so
:meth:`PycudaBackend.graphs_unsupported` says so and runners refuse ``cuda_graphs=True`` when
they open.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ...errors import DependencyError, EngineError
from .base import CudaBackend, check_ordinal

__all__ = ["PycudaBackend", "SecondaryContextArray", "check_pycuda"]

log = logging.getLogger(__name__)


def check_pycuda() -> None:
    """Check that pycuda is installed, without importing it (that would touch the driver).

    Raises:
        DependencyError: pycuda is not installed (the message names the ``pycuda`` extra).
    """
    if importlib.util.find_spec("pycuda") is None:
        raise DependencyError("pycuda", "pycuda", "the pycuda CUDA backend")


class PycudaBackend(CudaBackend):
    """The optional ``pycuda`` backend, on the device's primary context (shared with TensorRT).

    pycuda has no CUDA graph API: :meth:`graphs_unsupported` says so (runners refuse
    ``cuda_graphs=True`` at open; use ``cuda_binding='cuda-python'`` for graphs).

    Raises:
        DependencyError: pycuda is not installed.
        EngineError: No driver/GPU, or ``device`` does not exist.
    """

    name = "pycuda"

    def __init__(self, device: int = 0, *, driver: Any = None) -> None:
        if driver is None:
            check_pycuda()
            driver = importlib.import_module("pycuda.driver")
        self._cuda = driver
        self.device = int(device)
        self._local = threading.local()
        # no context exists yet: these calls run unscoped
        self._raw_guard("cuInit", driver.init)
        count = self._raw_guard("cuDeviceGetCount", driver.Device.count)
        check_ordinal(self.device, count)
        self._dev = self._raw_guard("cuDeviceGet", driver.Device, self.device)
        self._ctx = self._raw_guard("cuDevicePrimaryCtxRetain", self._dev.retain_primary_context)
        self._thread = threading.get_ident()  # pycuda releases a context only on its thread
        self._allocs: dict[int, Any] = {}

    def _raw_guard(self, call: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._cuda.Error as exc:
            raise EngineError(f"CUDA call {call} (pycuda) failed: {exc}") from None

    def _guard(self, call: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.scope():
            try:
                return fn(*args, **kwargs)
            except self._cuda.Error as exc:
                raise EngineError(f"CUDA call {call} (pycuda) failed: {exc}") from None

    def activate(self) -> None:
        """Nothing to do outside a call: pycuda pushes are scoped (:meth:`scope`)."""

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            self._raw_guard("cuCtxPushCurrent", self._ctx.push)
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                self._raw_guard("cuCtxPopCurrent", self._cuda.Context.pop)

    def graphs_unsupported(self) -> str | None:
        return ("pycuda has no CUDA graph API (no release wraps stream capture); use "
                "cuda_binding='cuda-python' for CUDA graphs, or cuda_graphs=False")

    def close(self) -> None:
        """Release the retained primary context (pycuda ``context::detach``), outside any
        :meth:`scope` of this thread.

        Raises:
            EngineError: Called inside this backend's :meth:`scope`: detaching a pushed context
                removes it from pycuda's stack, and the scope's pop would then throw or pop a
                context below it (pycuda ``src/cpp/cuda.hpp``).
        """
        if getattr(self._local, "depth", 0):
            raise EngineError("internal error: the pycuda backend was closed inside its own "
                              "scope(); close it after the scope has ended (please report this)")
        if threading.get_ident() != self._thread:
            # pycuda's context::detach releases nothing from another thread ("this context's
            # managing thread has exited", pycuda src/cpp/cuda.hpp): the retain stays until
            # the process ends. Say so rather than pretend.
            log.warning("pycuda: a runner opened on one thread was closed on another; pycuda "
                        "cannot release the primary-context retain from there, so it is kept "
                        "until the process ends (close pycuda runners on the thread that "
                        "opened them)")
        with contextlib.suppress(Exception):
            self._ctx.detach()

    def device_name(self) -> str:
        return str(self._dev.name())

    def compute_capability(self) -> tuple[int, int]:
        major, minor = self._dev.compute_capability()
        return int(major), int(minor)

    def is_integrated(self) -> bool:
        return bool(self._guard("cuDeviceGetAttribute", self._dev.get_attribute,
                                self._cuda.device_attribute.INTEGRATED))

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

    def event_create(self, timing: bool, blocking_sync: bool = False) -> Any:
        flags = 0 if timing else int(self._cuda.event_flags.DISABLE_TIMING)
        if blocking_sync:  # the waiting thread sleeps instead of spinning a core (Jetson)
            flags |= int(self._cuda.event_flags.BLOCKING_SYNC)
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

    def begin_capture(self, stream: Any) -> None:
        raise EngineError(self.graphs_unsupported() or "")

    # Never reached (begin_capture refuses); defined so that the backend is complete.
    def end_capture(self, stream: Any) -> Any:
        return None

    def graph_instantiate(self, graph: Any) -> Any:
        raise EngineError(self.graphs_unsupported() or "")

    def graph_launch(self, graph_exec: Any, stream: Any) -> None:
        raise EngineError(self.graphs_unsupported() or "")

    def graph_destroy(self, graph: Any) -> None:
        return None

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


class SecondaryContextArray:
    """Data copied into device memory of a new, *non-primary* pycuda context, exposed through
    ``__cuda_array_interface__`` (v3). For the self-test's question: can TensorRT and our
    runner (on the primary context) read device pointers that an application allocated in a
    context of its own (pycuda's ``make_context``, common in older Jetson code)?

    Args:
        data: The array to copy (C-contiguous after ``np.ascontiguousarray``).
        device: CUDA device ordinal.
        driver: ``pycuda.driver`` (injected in tests).

    Raises:
        DependencyError: pycuda is not installed.
        EngineError: A CUDA call failed.
    """

    def __init__(self, data: np.ndarray, device: int = 0, *, driver: Any = None) -> None:
        if driver is None:
            check_pycuda()
            driver = importlib.import_module("pycuda.driver")
        self._drv = driver
        host = np.ascontiguousarray(data)
        self.shape, self.dtype = host.shape, host.dtype
        try:
            driver.init()
            self._ctx = driver.Device(device).make_context()  # created and pushed
        except driver.Error as exc:
            raise EngineError(f"CUDA call cuCtxCreate (pycuda) failed: {exc}") from None
        try:
            self._mem = driver.mem_alloc(max(host.nbytes, 1))
            driver.memcpy_htod(self._mem, host)
        except driver.Error as exc:
            raise EngineError(f"CUDA call cuMemAlloc/cuMemcpyHtoD (pycuda) in a non-primary "
                              f"context failed: {exc}") from None
        finally:
            driver.Context.pop()  # leave nothing pushed on this thread (module docstring)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (int(self._mem), False),
                "strides": None, "version": 3, "stream": None}

    def close(self) -> None:
        """Free the memory and the context. Idempotent."""
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx is None:
            return
        ctx.push()
        try:
            with contextlib.suppress(Exception):
                self._mem.free()
        finally:
            self._drv.Context.pop()
            with contextlib.suppress(Exception):
                ctx.detach()
