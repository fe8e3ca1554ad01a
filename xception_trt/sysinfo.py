"""Facts about this machine and its software, for ``xception-trt info`` and every report.

The import-free facts live in :mod:`xception_trt.host` (re-exported here); this module adds what
needs the TensorRT probes of :mod:`xception_trt.trt`.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from .host import (
    cpu_int8_features,
    cpu_model,
    git_revision,
    load_average,
    package_version,
    software_versions,
)

__all__ = ["package_version", "software_versions", "cpu_model", "cpu_int8_features",
           "git_revision", "load_average", "system_facts"]


def system_facts(*, probe_gpus: bool = True) -> dict[str, Any]:
    """Machine and software facts as a JSON-ready dict (CPU, its INT8 features, cores, load
    average now, GPUs, driver, versions).

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
        # INT8 on ONNX Runtime's CPU kernels is fast with VNNI/AMX: every report says which
        "cpu_int8": cpu_int8_features(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
        "software": software_versions(),
        "git_revision": git_revision(),
        "trt_importable": {f.name: f.version for f in available_flavours()},
    }
    if probe_gpus:
        facts["devices"] = query_devices().to_dict()
    return facts
