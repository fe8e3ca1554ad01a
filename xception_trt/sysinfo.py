"""Facts about this machine and its software, for ``xception-trt info`` and every report."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["package_version", "software_versions", "cpu_model", "git_revision", "system_facts"]

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


def system_facts(*, probe_gpus: bool = True) -> dict[str, Any]:
    """Machine and software facts as a JSON-ready dict (CPU, cores, GPUs, driver, versions).

    TensorRT flavours are reported by import-free package metadata; ``trt_importable`` says
    which of them actually import (a PyPI ``tensorrt`` stub is installed but does not).
    """
    from .trt import available_flavours
    from .trt.devices import query_devices

    facts: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python_executable": sys.executable,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "software": software_versions(),
        "git_revision": git_revision(),
        "trt_importable": {f.name: f.version for f in available_flavours()},
    }
    if probe_gpus:
        facts["devices"] = query_devices().to_dict()
    return facts
