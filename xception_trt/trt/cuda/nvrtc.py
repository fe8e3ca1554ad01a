"""Compiling CUDA C++ to a cubin with NVRTC (on the CPU): :func:`compile_kernel`,
:func:`nvrtc_status`. Used for the self-test's stand-in kernel."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from ...errors import DependencyError, EngineError
from .base import code_name

__all__ = ["compile_kernel", "nvrtc_status"]


def _nvrtc_missing() -> DependencyError:
    """The error for a missing cuda-python when NVRTC is needed (names the ``cuda`` extra)."""
    return DependencyError("cuda-python", "cuda", "NVRTC kernel compilation")


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
            raise _nvrtc_missing() from None
    ok = nvrtc.nvrtcResult.NVRTC_SUCCESS

    def call(fn: str, *args: Any) -> Any:
        try:
            res = getattr(nvrtc, fn)(*args)
        except Exception as exc:  # the bindings raise when libnvrtc cannot be found
            raise EngineError(f"NVRTC call {fn} could not run ({type(exc).__name__}: {exc}); "
                              "install the NVRTC library: pip install 'nvidia-cuda-nvrtc' "
                              "(CUDA 13) or 'nvidia-cuda-nvrtc-cu12' (CUDA 12)") from None
        if res[0] != ok:
            raise EngineError(f"NVRTC call {fn} failed with {code_name(res[0])}")
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
                              f"({code_name(res[0])}): "
                              f"{buf.rstrip(b' ').rstrip(bytes(1)).decode(errors='replace')}")
        size = call("nvrtcGetCUBINSize", prog)
        cubin = b" " * size
        call("nvrtcGetCUBIN", prog, cubin)
        return cubin
    finally:
        with contextlib.suppress(Exception):
            nvrtc.nvrtcDestroyProgram(prog)


def nvrtc_status() -> str | None:
    """``None`` when NVRTC (used to compile the self-test's stand-in kernel) is usable here,
    else why not and how to fix it. Never raises; touches no GPU."""
    try:
        from cuda.bindings import nvrtc  # type: ignore[import-not-found]
    except ImportError:
        return str(_nvrtc_missing())
    try:
        nvrtc.nvrtcVersion()
    except Exception:
        return ("the NVRTC library is missing (needed to compile the stand-in kernel): pip "
                "install nvidia-cuda-nvrtc (CUDA 13) or nvidia-cuda-nvrtc-cu12 (CUDA 12)")
    return None
