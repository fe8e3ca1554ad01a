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

Where things live (import from this package; the modules are the layout, not the API):

- :mod:`.base`: the :class:`CudaBackend` interface;
- :mod:`.cuda_python`, :mod:`.pycuda_backend`: the two backends;
- :mod:`.backends`: choosing one by name (:data:`BACKENDS`, :func:`open_backend`,
  :func:`backend_status`);
- :mod:`.resources`: the owned resources, :class:`CudaDevice` (their factory), :func:`nbytes_of`;
- :mod:`.nvrtc`: :func:`compile_kernel`, :func:`nvrtc_status`;
- :mod:`.interop`: :func:`device_array_info`, :class:`DeviceArrayInfo`.
"""

from __future__ import annotations

from .backends import BACKENDS, backend_status, open_backend
from .base import CudaBackend
from .cuda_python import CudaPythonBackend
from .interop import DeviceArrayInfo, device_array_info
from .nvrtc import compile_kernel, nvrtc_status
from .pycuda_backend import PycudaBackend, SecondaryContextArray
from .resources import (
    CudaDevice,
    CudaGraph,
    CudaModule,
    DeviceArray,
    DeviceBuffer,
    Event,
    Kernel,
    PackedArgs,
    PinnedBuffer,
    Stream,
    nbytes_of,
)

__all__ = [
    "BACKENDS",
    "CudaBackend",
    "CudaPythonBackend",
    "PycudaBackend",
    "SecondaryContextArray",
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
