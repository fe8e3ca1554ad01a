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
from collections.abc import Callable
from pathlib import Path

from . import __version__

__all__ = ["package_version", "software_versions", "cpu_model", "git_revision",
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
