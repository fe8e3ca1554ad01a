"""Facts about this host and its installed software that need no optional import (the low layer
under :mod:`xception_trt.sysinfo`, usable by :mod:`xception_trt.trt` without a cycle)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.metadata as md
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["package_version", "software_versions", "cpu_model", "cpu_int8_features",
           "INT8_CPU_FLAGS", "int8_features_text", "git_revision",
           "available_memory_bytes", "parent_death_signal", "load_average"]

_PR_SET_PDEATHSIG = 1


@functools.cache
def parent_death_signal() -> Callable[[], None] | None:
    """A function that makes the kernel SIGKILL the calling process when its parent dies
    (Linux ``prctl(PR_SET_PDEATHSIG)``), or ``None`` on systems without it.

    Safe as a ``subprocess`` ``preexec_fn``: libc is loaded here, beforehand, so the child
    only calls through a function pointer between fork and exec. The signal fires when the
    parent *thread* that forked the child exits.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sig = int(signal.SIGKILL)

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return arm

#: (label, distribution names to try) of the packages every report mentions.
_PACKAGES = (
    ("torch", ("torch",)),
    ("onnx", ("onnx",)),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    ("onnx-graphsurgeon", ("onnx-graphsurgeon", "onnx_graphsurgeon")),
    ("nvidia-modelopt", ("nvidia-modelopt",)),
    ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")),
    ("tensorrt-rtx", ("tensorrt-rtx", "tensorrt_rtx")),
    ("cuda-python", ("cuda-python", "cuda-bindings")),
    ("pycuda", ("pycuda",)),
    ("numpy", ("numpy",)),
    ("pillow", ("pillow",)),
)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (runnable processes, all cores together), or
    ``None`` where the OS has none. Recorded beside every timing: on a busy machine speed-ups
    and latencies are not comparable."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # Windows; no /proc/loadavg in a sandbox
        return None


def package_version(*names: str) -> str | None:
    """Installed version of the first distribution found among ``names``, else ``None``."""
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def software_versions() -> dict[str, str | None]:
    """Versions of Python, this package and the libraries it uses (``None`` = not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version(), "xception-trt": __version__}
    for label, names in _PACKAGES:
        out[label] = package_version(*names)
    return out


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else platform)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: /proc/cpuinfo flags that decide how fast INT8 runs on the CPU (ONNX Runtime's QLinearConv/
#: QGemm): VNNI (u8 x s8 dot products in one instruction: AVX-512 or AVX) and AMX (tile
#: matrix units, INT8).
INT8_CPU_FLAGS = {"vnni": ("avx512_vnni", "avx_vnni"), "amx": ("amx_int8", "amx_tile")}


def cpu_int8_features(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU's INT8 features, from the ``flags`` line of /proc/cpuinfo.

    Args:
        cpuinfo: The text of /proc/cpuinfo (``None``: read it; tests pass a recorded one).

    Returns:
        ``{"vnni": bool, "amx": bool, "flags": [the INT8_CPU_FLAGS present]}``; ``vnni`` and
        ``amx`` are ``None`` where no flags line can be read (not Linux, or not x86).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    line = next((ln for ln in cpuinfo.splitlines()
                 if ln.split(":", 1)[0].strip().lower() == "flags"), None)
    if line is None:
        return {"vnni": None, "amx": None, "flags": []}
    flags = set(line.split(":", 1)[1].split())
    wanted = [f for names in INT8_CPU_FLAGS.values() for f in names]
    out: dict[str, Any] = {k: any(f in flags for f in names) for k, names in
                           INT8_CPU_FLAGS.items()}
    out["flags"] = [f for f in wanted if f in flags]
    return out


def int8_features_text(features: Mapping[str, Any] | None) -> str:
    """:func:`cpu_int8_features` as one line (``VNNI yes, AMX no (avx512_vnni)``)."""
    if not features or features.get("vnni") is None:
        return "unknown (no /proc/cpuinfo flags)"
    flags = features.get("flags") or []
    return (f"VNNI {'yes' if features['vnni'] else 'no'}, AMX "
            f"{'yes' if features['amx'] else 'no'}" + (f" ({', '.join(flags)})" if flags else ""))


def git_revision(path: str | os.PathLike[str] | None = None) -> str | None:
    """Short git revision (``+dirty`` when modified) of the checkout at ``path``, if any."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "") if rev else None


def available_memory_bytes() -> int | None:
    """Memory a new allocation can get without swapping (bytes; ``None`` when unknown):
    psutil's ``available``, else the free physical pages from ``os.sysconf``."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except (ImportError, OSError, AttributeError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
