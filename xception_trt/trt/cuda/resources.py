"""CUDA resources with exactly one owner each, and :class:`CudaDevice`, their factory.

Every resource object (:class:`DeviceBuffer`, :class:`PinnedBuffer`, :class:`Stream`,
:class:`Event`, :class:`CudaGraph`, :class:`CudaModule`) frees its handle in an idempotent
``close()``, is a context manager, raises :class:`EngineError` when used after ``close()``, and
(as a safety net only) is freed by a ``weakref.finalize`` when dropped unclosed.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ...config import check_int
from ...errors import EngineError
from .backends import open_backend
from .base import CudaBackend

__all__ = ["CudaDevice", "DeviceBuffer", "DeviceArray", "PinnedBuffer", "Stream", "Event",
           "CudaGraph", "CudaModule", "Kernel", "PackedArgs", "nbytes_of"]

log = logging.getLogger(__name__)

_O = TypeVar("_O", bound="_Owned")


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
    try:
        sizes = [check_int(d, "every dimension", minimum=0, error=EngineError) for d in dims]
    except EngineError as exc:
        raise EngineError(f"cannot size a buffer of shape {dims}: {exc} (resolve dynamic -1 "
                          "dimensions first)") from None
    return int(np.prod(sizes, dtype=np.int64)) * np.dtype(dtype).itemsize


def _require_c_contiguous(arr: np.ndarray) -> None:
    """Raise :class:`EngineError` unless ``arr`` is a C-contiguous NumPy array."""
    if not isinstance(arr, np.ndarray):
        raise EngineError(f"expected a NumPy array, got {type(arr).__name__}")
    if not arr.flags.c_contiguous:
        raise EngineError("the host array is not C-contiguous; pass np.ascontiguousarray(x)")


class _Owned:
    """Base of every resource: one owner, idempotent close, context manager, use-after-close
    guard. Subclasses hand the call that frees their handle to :meth:`_own`."""

    _what = "CUDA resource"
    #: Backend objects of the resource, dropped on close (pycuda frees them on GC).
    _handle: Any = None
    _handles: Any = None

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

    def __enter__(self: _O) -> _O:
        self._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _OwnedHandle(_Owned):
    """A resource that is one backend object (stream, event, module), freed by ``release``."""

    def __init__(self, backend: CudaBackend, handle: Any, release: Callable[[Any], None]) -> None:
        super().__init__()
        self._backend = backend
        self._handle = handle
        self._own(release, handle)

    @property
    def handle(self) -> Any:
        """The backend's object (for backend calls)."""
        self._check_open()
        return self._handle


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
        try:
            self.nbytes = check_int(nbytes, "nbytes", error=EngineError)
        except EngineError as exc:
            raise EngineError(f"a device buffer needs a positive size in bytes: {exc}") from None
        self._backend = backend
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


class Stream(_OwnedHandle):
    """An owned non-blocking CUDA stream.

    Attributes:
        handle: The backend's stream object (for backend calls).
        ptr: The raw ``cudaStream_t`` as an int (for TensorRT ``execute_async_v3``).
    """

    _what = "CUDA stream"

    def __init__(self, backend: CudaBackend) -> None:
        super().__init__(backend, backend.stream_create(), backend.stream_destroy)
        self._ptr = backend.stream_handle(self._handle)

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


class Event(_OwnedHandle):
    """An owned CUDA event (timing disabled unless ``timing=True``: cheaper to record).

    ``blocking_sync=True``: a host thread in :meth:`synchronize` sleeps until the event
    completes instead of spinning a CPU core (``cudaEventBlockingSync``; a busy core matters on
    a Jetson's few CPU cores).
    """

    _what = "CUDA event"

    def __init__(self, backend: CudaBackend, *, timing: bool = False,
                 blocking_sync: bool = False) -> None:
        self.timing = bool(timing)
        self.blocking_sync = bool(blocking_sync)
        super().__init__(backend, backend.event_create(self.timing, self.blocking_sync),
                         backend.event_destroy)

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


class CudaModule(_OwnedHandle):
    """A loaded CUDA module (cubin/PTX image) and its kernels."""

    _what = "CUDA module"

    def __init__(self, backend: CudaBackend, image: bytes) -> None:
        super().__init__(backend, backend.module_load(image), backend.module_unload)

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
                                  "explicit C type (np.uint64 for pointers), got "
                                  f"{type(a).__name__}")
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

    def event(self, *, timing: bool = False, blocking_sync: bool = False) -> Event:
        return Event(self._check(), timing=timing, blocking_sync=blocking_sync)

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
