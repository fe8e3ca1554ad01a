"""Device arrays of other libraries (torch, CuPy, JAX ...) read without a copy, through
``__cuda_array_interface__`` (v2/v3) or DLPack: :func:`device_array_info`,
:class:`DeviceArrayInfo`."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...config import check_int
from ...errors import EngineError
from .resources import nbytes_of

__all__ = ["DeviceArrayInfo", "device_array_info"]


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
        read_only: The producer marked the data read-only (CUDA array interface ``data``:
            "(integer, boolean) ... The second element is the read-only flag"); such an array
            may be read, never written.
    """

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    c_contiguous: bool
    device_type: str = "cuda"
    device_id: int | None = None
    stream: int | None = None
    keepalive: tuple = ()
    read_only: bool = False

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.shape, self.dtype)


def _c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...] | None, itemsize: int) -> bool:
    """Whether ``strides`` (bytes; ``None`` = C order) pack ``shape`` densely in C order."""
    if strides is None:
        return True
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim > 1 and stride != expected:
            return False
        expected *= dim
    return True


def _from_cai(obj: Any) -> DeviceArrayInfo:
    """Read ``obj.__cuda_array_interface__`` (v2/v3)."""
    iface = obj.__cuda_array_interface__
    if not isinstance(iface, dict):
        raise EngineError("__cuda_array_interface__ is not a dict")
    try:
        shape = tuple(int(d) for d in iface["shape"])
        dtype = np.dtype(iface["typestr"])
        ptr = int(iface["data"][0])
        read_only = bool(iface["data"][1])
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
        # v3: 0 is disallowed (ambiguous), 1 = legacy default, 2 = per-thread default, any other
        # value is a cudaStream_t (an address, so positive too).
        try:
            stream = check_int(stream, "the stream", error=EngineError)
        except EngineError as exc:
            raise EngineError(f"invalid producer stream {stream!r} in __cuda_array_interface__: "
                              f"{exc}") from None
    return DeviceArrayInfo(ptr, shape, dtype, _c_contiguous(shape, strides, dtype.itemsize),
                           "cuda", None, stream, (obj,), read_only)


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
    """Read the DLTensor of ``obj.__dlpack__()`` (the capsule is kept alive in ``keepalive``)."""
    dev_type, dev_id = obj.__dlpack_device__()
    dev_type, dev_id = int(dev_type), int(dev_id)
    on_cuda = dev_type in (_DL_CUDA, _DL_CUDA_MANAGED)
    try:
        # For CUDA arrays the producer makes its data safe to use on our stream (DLPack
        # protocol); for host arrays the stream must be None.
        capsule = obj.__dlpack__(stream=consumer_stream if on_cuda else None)
    except (TypeError, BufferError, RuntimeError, ValueError) as exc:
        # The DLPack standard says BufferError, but torch < 2.2 raises RuntimeError (e.g. a
        # tensor that requires grad) and some producers ValueError: all mean "cannot export".
        raise EngineError(f"the array could not be exported through DLPack "
                          f"({type(exc).__name__}: {exc}); pass a detached, contiguous tensor "
                          "(tensor.detach().contiguous())") from None
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
