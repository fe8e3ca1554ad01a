"""Run the ModelOpt worker (:mod:`xception_trt.precision._worker`) in a subprocess.

ModelOpt monkeypatches ``onnxruntime.quantization`` when it quantizes, so this process never
imports it: every FP16 conversion and INT8 calibration is a request file handed to a fresh
Python, whose failures come back as :class:`~xception_trt.errors.CalibrationError`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import CalibrationError
from ..extras import ensure

__all__ = ["WORKER_MODULE", "run_worker", "modelopt_version"]

log = logging.getLogger(__name__)

#: What ``python -m`` runs.
WORKER_MODULE = "xception_trt.precision._worker"
#: What the worker imports (ModelOpt's ONNX PTQ and AutoCast, measured), all in the build extra.
_WORKER_NEEDS = ("modelopt", "onnx", "onnxruntime", "ml_dtypes", "onnxslim", "lief", "polygraphy")


def run_worker(request: dict[str, Any], *, what: str) -> dict[str, Any]:
    """Run the ModelOpt worker on ``request`` (written to its ``tmp_dir``) in a subprocess.

    Args:
        request: The worker's request (see :mod:`xception_trt.precision._worker`); this adds
            the ``result`` path.
        what: What is being done, for error messages (``"INT8 calibration"``).

    Returns:
        The worker's result dict.

    Raises:
        CalibrationError: The worker failed (the reason is its last error line), ModelOpt is
            missing, or a cache lacks scales that cannot be calibrated without images.
        DependencyError: A package the worker imports is not installed (the build extra).
    """
    # Checked here, not imported: ModelOpt runs (and patches ONNX Runtime) in the worker only.
    ensure(*_WORKER_NEEDS, purpose=what, extra="build")
    tmp = Path(request["tmp_dir"])
    req_path = tmp / "request.json"
    request["result"] = str(tmp / "result.json")
    req_path.write_text(json.dumps(request))
    # Run from the folder holding this copy of xception_trt, so `-m` imports the same code.
    pkg_parent = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", WORKER_MODULE, str(req_path)],
                          cwd=str(pkg_parent), capture_output=True, text=True)
    if proc.stderr:
        log.debug("ModelOpt worker output:\n%s", proc.stderr[-20000:])
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("WORKER-ERROR: ")]
        if lines:
            reason = lines[-1][len("WORKER-ERROR: "):]
        else:
            tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:]
            reason = f"exit code {proc.returncode}" + (f": {tail[0]}" if tail else "")
        if "MISSING-SCALES" in reason:
            raise CalibrationError(reason.split("MISSING-SCALES ", 1)[1]
                                   + "; calibrate with images (pass calibration data) instead")
        if "No module named 'modelopt'" in reason or "Please install optional" in reason:
            raise CalibrationError(
                f"{what} needs NVIDIA ModelOpt and its ONNX dependencies ({reason}); install "
                "them with: pip install -U 'xception-trt[build]'")
        raise CalibrationError(f"{what} failed in ModelOpt: {reason}")
    return json.loads(Path(request["result"]).read_text())


def modelopt_version() -> str:
    """The installed nvidia-modelopt version (``"unknown"`` when it is not installed)."""
    try:
        from importlib.metadata import version

        return version("nvidia-modelopt")
    except Exception:  # not installed: the worker reports it properly
        return "unknown"
