"""benchmarks/device_check.py and device_prep.py on a machine without a GPU (issue 26): the
check skips cleanly and says why; the stub driver library defines the versioned entry points
``cuda.h`` maps names to. The check itself runs on a lent GPU machine (docs/verification.md,
"On a bare GPU machine")."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_device_check_skips_cleanly_without_a_gpu(tmp_path, capsys):
    from xception_trt.trt.devices import query_devices

    if query_devices().gpus:
        pytest.skip("a GPU is here: the device check runs for real (python3 "
                    "benchmarks/device_check.py)")
    check = _script("device_check")
    assert check.main(["--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "device-check.json").read_text())
    assert report["status"] == "skipped" and report["reason"].startswith("no NVIDIA GPU")
    assert "status: **skipped**" in (tmp_path / "device-check.md").read_text()
    assert check.worst_case_seconds() < check.BUDGET_S == 8 * 60  # fits one device call


def test_stub_driver_defines_the_versioned_entry_points():
    """cuda.h maps e.g. cuCtxCreate to a versioned symbol: the stub must define the name the
    extension really imports, else the linker drops libcuda.so.1 (docs/verification.md)."""
    cuda_h = Path("/usr/local/cuda/include/cuda.h")
    if not cuda_h.is_file():
        pytest.skip("no CUDA toolkit headers here")
    prep = _script("device_prep")
    names = prep.cuda_entry_points(cuda_h)
    assert "cuInit" in names and "cuMemAlloc_v2" in names and "cuCtxCreate" in names
    assert any(n.startswith("cuCtxCreate_v") for n in names)
    assert "cuProfilerStart" in names  # cudaProfiler.h: pycuda's _driver imports it
