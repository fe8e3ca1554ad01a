"""Choosing and opening a CUDA backend by name: :data:`BACKENDS`, :func:`open_backend`,
:func:`backend_status`."""

from __future__ import annotations

from ...errors import DependencyError, EngineError
from .base import CudaBackend
from .cuda_python import CudaPythonBackend, import_cuda_python
from .pycuda_backend import PycudaBackend, check_pycuda

__all__ = ["BACKENDS", "backend_status", "open_backend"]

#: Backend names in order of preference.
BACKENDS = ("cuda-python", "pycuda")


def backend_status() -> dict[str, str | None]:
    """Which CUDA backends are importable here, without touching the driver.

    Returns:
        ``{name: None}`` for an importable backend, ``{name: reason}`` otherwise.
    """
    out: dict[str, str | None] = {}
    try:
        import_cuda_python()
        out["cuda-python"] = None
    except DependencyError as exc:
        out["cuda-python"] = str(exc)
    try:
        check_pycuda()
        out["pycuda"] = None
    except DependencyError as exc:
        out["pycuda"] = (f"{exc} (pycuda builds from source and needs the CUDA toolkit and "
                         "driver)")
    return out


def open_backend(name: str = "cuda-python", device: int = 0) -> CudaBackend:
    """Create a CUDA backend by name on ``device``.

    Args:
        name: ``cuda-python`` (default) or ``pycuda``.
        device: CUDA device ordinal.

    Returns:
        The opened backend, its device current on the calling thread.

    Raises:
        EngineError: Unknown backend name, no NVIDIA driver/GPU, or no such device.
        DependencyError: The backend's Python package is not installed.
    """
    if name == "cuda-python":
        return CudaPythonBackend(device)
    if name == "pycuda":
        return PycudaBackend(device)
    raise EngineError(f"unknown CUDA backend {name!r}; choose one of: {', '.join(BACKENDS)}")
