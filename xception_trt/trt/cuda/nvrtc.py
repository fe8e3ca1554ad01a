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
        arch: Compute capability, e.g. ``(9, 0)``; compiled for the newest architecture this
            NVRTC supports with the same major and a minor not above it (the cubin runs there).
        name: Program name in diagnostics.
        options: Extra NVRTC options.

    Returns:
        The cubin image (ELF bytes).

    Raises:
        DependencyError: cuda-python is not installed.
        EngineError: The NVRTC library is missing, no architecture it supports runs on ``arch``,
            or compilation failed (message includes the compiler log).
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

    target = _clamp_arch(arch, call("nvrtcGetSupportedArchs"))
    prog = call("nvrtcCreateProgram", source.encode(), name.encode(), 0, [], [])
    try:
        opts = [f"--gpu-architecture=sm_{target // 10}{target % 10}".encode(),
                *(o.encode() for o in options)]
        res = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        # NVRTC writes into the buffers it is given: they must be fresh, mutable bytearrays.
        # (b" " * 1 is CPython's one shared b" " object; NVRTC would turn every b" " in the
        # process into b"\x00".)
        if res[0] != ok:
            log_buf = bytearray(call("nvrtcGetProgramLogSize", prog))
            call("nvrtcGetProgramLog", prog, log_buf)
            text = bytes(log_buf).rstrip(b"\0 ").decode(errors="replace")
            raise EngineError(f"NVRTC could not compile {name} for sm_{target} "
                              f"({code_name(res[0])}): {text or '(empty compiler log)'}")
        cubin = bytearray(call("nvrtcGetCUBINSize", prog))
        call("nvrtcGetCUBIN", prog, cubin)
        return bytes(cubin)
    finally:
        with contextlib.suppress(Exception):
            nvrtc.nvrtcDestroyProgram(prog)


def _clamp_arch(arch: tuple[int, int], supported: Sequence[int]) -> int:
    """The newest architecture NVRTC supports whose cubin runs on ``arch``: same major
    version, minor <= the device's (CUDA C++ Programming Guide, "Binary Compatibility": a cubin
    for X.y runs on X.z with z >= y).

    Raises:
        EngineError: This NVRTC supports no such architecture (too old for a new GPU, or too
            new for an old one: NVRTC 13 dropped sm_72 and older).
    """
    want = arch[0] * 10 + arch[1]
    fits = [int(a) for a in supported if int(a) // 10 == arch[0] and int(a) <= want]
    if not fits:
        known = ", ".join(f"sm_{a}" for a in supported)
        raise EngineError(f"this NVRTC cannot compile for sm_{want} (it supports {known}); "
                          "install the NVRTC of the CUDA release that matches the GPU: pip "
                          "install nvidia-cuda-nvrtc (CUDA 13, sm_75+) or nvidia-cuda-nvrtc-cu12 "
                          "(CUDA 12, sm_50 to sm_120)")
    return max(fits)


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
