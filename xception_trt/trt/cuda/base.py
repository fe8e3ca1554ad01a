"""The interface every CUDA backend implements (:class:`CudaBackend`), and what they share."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, Protocol, runtime_checkable

import numpy as np

from ...errors import EngineError

__all__ = ["CudaBackend", "check_ordinal", "code_name"]


@runtime_checkable
class CudaBackend(Protocol):
    """The operations the resource classes need, implemented once per Python CUDA binding.

    Pointers are Python ints; streams, events, graphs and modules are opaque backend handles.
    Host memory is always passed as a C-contiguous NumPy array. Every method raises
    :class:`~xception_trt.errors.EngineError` naming the failing CUDA call.

    The backends subclass this protocol. :meth:`close` and :meth:`pack_args` have real defaults;
    every other operation a subclass leaves out raises ``NotImplementedError`` when called.
    """

    name: str
    device: int

    # device -----------------------------------------------------------------------------------
    def activate(self) -> None:
        """Make this backend's device/context current on the calling thread (cheap if it is)."""

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Keep this backend's device/context current on the calling thread for one public call
        (TensorRT calls inside it run on the right device). Nestable; a backend that pushes a
        context (pycuda) pops it again on leaving, so no thread ends with a pushed context."""
        self.activate()
        yield

    def graphs_unsupported(self) -> str | None:
        """``None`` when this backend can capture CUDA graphs, else why not and the fix."""
        return None

    def device_name(self) -> str: ...

    def compute_capability(self) -> tuple[int, int]: ...

    def versions(self) -> dict[str, str]:
        """Driver/runtime/binding versions, for reports."""

    def is_integrated(self) -> bool:
        """Whether the GPU is integrated, sharing the host's memory (a Jetson)."""
        return False

    def close(self) -> None:
        """Release what the backend itself holds (e.g. a retained primary context)."""
        return None  # a real default: without a statement mypy takes the method as abstract

    # memory -----------------------------------------------------------------------------------
    def mem_get_info(self) -> tuple[int, int]:
        """(free, total) device memory in bytes."""

    def mem_alloc(self, nbytes: int) -> int: ...

    def mem_free(self, ptr: int) -> None: ...

    def host_alloc(self, nbytes: int) -> tuple[np.ndarray, Any]:
        """Allocate page-locked host memory; returns (uint8 view of ``nbytes``, token to free)."""

    def host_free(self, token: Any) -> None: ...

    def memcpy_htod_async(self, dst: int, src: np.ndarray, nbytes: int, stream: Any) -> None: ...

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, nbytes: int, stream: Any) -> None: ...

    def memcpy_dtod_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None: ...

    def memset_async(self, ptr: int, value: int, nbytes: int, stream: Any) -> None: ...

    # streams and events -----------------------------------------------------------------------
    def stream_create(self) -> Any: ...

    def stream_destroy(self, stream: Any) -> None: ...

    def stream_handle(self, stream: Any) -> int:
        """The raw ``cudaStream_t`` as an int (what TensorRT's ``execute_async_v3`` takes)."""

    def stream_synchronize(self, stream: Any) -> None: ...

    def stream_query(self, stream: Any) -> bool: ...

    def stream_wait_event(self, stream: Any, event: Any) -> None: ...

    def event_create(self, timing: bool, blocking_sync: bool = False) -> Any:
        """Create an event; ``blocking_sync``: a host thread waiting on it sleeps instead of
        spinning (``cudaEventBlockingSync``)."""

    def event_destroy(self, event: Any) -> None: ...

    def event_record(self, event: Any, stream: Any) -> None:
        """Record ``event`` on ``stream`` (a handle of this backend or a raw int handle)."""

    def event_synchronize(self, event: Any) -> None: ...

    def event_query(self, event: Any) -> bool: ...

    def event_elapsed_ms(self, start: Any, end: Any) -> float: ...

    # graphs -----------------------------------------------------------------------------------
    def begin_capture(self, stream: Any) -> None: ...

    def end_capture(self, stream: Any) -> Any: ...

    def graph_instantiate(self, graph: Any) -> Any: ...

    def graph_launch(self, graph_exec: Any, stream: Any) -> None: ...

    def graph_destroy(self, graph: Any) -> None: ...

    def graph_exec_destroy(self, graph_exec: Any) -> None: ...

    # modules ----------------------------------------------------------------------------------
    def module_load(self, image: bytes) -> Any: ...

    def module_unload(self, module: Any) -> None: ...

    def module_function(self, module: Any, name: str) -> Any: ...

    def pack_args(self, args: Sequence[np.generic]) -> Any:
        """Kernel arguments (NumPy scalars, ``np.uint64`` for pointers) in the form
        :meth:`launch` takes; done once per argument set, not per launch."""
        return tuple(args)

    def launch(self, function: Any, grid: tuple[int, int, int], block: tuple[int, int, int],
               packed: Any, stream: Any) -> None:
        """Launch a kernel with arguments from :meth:`pack_args`."""


#: The operations with a working default above; every other one must be implemented.
_DEFAULTS = ("close", "pack_args", "scope", "graphs_unsupported", "is_integrated")


def _unimplemented(fn: Callable[..., Any]) -> Callable[..., NoReturn]:
    """A stand-in for the protocol method ``fn`` that raises ``NotImplementedError``."""

    @functools.wraps(fn)  # keeps the protocol's signature and docstring for help() and docs
    def missing(self: CudaBackend, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(f"{type(self).__name__} does not implement "
                                  f"CudaBackend.{fn.__name__}()")

    return missing


# The ``...`` bodies above would silently return None: a backend that leaves an operation out
# must fail loudly when it is used instead, as an abstract method does (without making the
# partial backends of tests impossible to instantiate).
for _op, _fn in list(vars(CudaBackend).items()):
    if inspect.isfunction(_fn) and not _op.startswith("_") and _op not in _DEFAULTS:
        setattr(CudaBackend, _op, _unimplemented(_fn))
del _op, _fn


def code_name(code: Any) -> str:
    """The name of a CUDA/NVRTC result enum member (``cudaErrorMemoryAllocation``), for messages."""
    name = getattr(code, "name", None)
    return str(name) if name else f"error {code}"


def check_ordinal(device: int, count: int) -> None:
    """Check that ``device`` is one of the machine's ``count`` GPUs.

    Raises:
        EngineError: It is not; the message gives the valid ordinals.
    """
    if not 0 <= device < count:
        raise EngineError(f"CUDA device {device} does not exist: this machine has {count} "
                          f"GPU(s); pass device=0..{max(count - 1, 0)}")
