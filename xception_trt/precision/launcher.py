"""Run the ModelOpt worker (:mod:`xception_trt.precision._worker`) in a subprocess.

ModelOpt monkeypatches ``onnxruntime.quantization`` when it quantizes, so this process never
imports it: every FP16 conversion and INT8 calibration is a request file handed to a fresh
Python, whose failures come back as :class:`~xception_trt.errors.CalibrationError`.

Nothing outlives a killed caller: the worker dies with its parent (Linux parent-death signal
plus a watchdog thread on the parent's pid, see :mod:`._worker`); SIGTERM of the caller stops
the worker and removes the work folder (:func:`worker_tempdir`); and a folder left by a
``kill -9`` (``$TMPDIR/xtrt-int8-PID-...``) is swept by the next run once PID is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import CalibrationError
from ..extras import ensure
from ..fsio import owned_temp_dir

__all__ = ["WORKER_MODULE", "PROGRESS_PREFIX", "ORT_WORKER_NEEDS", "Progress", "run_worker",
           "worker_tempdir", "modelopt_version"]

log = logging.getLogger(__name__)

#: What ``python -m`` runs.
WORKER_MODULE = "xception_trt.precision._worker"
#: Worker output lines ``WORKER-PROGRESS: DONE TOTAL STAGE`` (one per calibration batch fed).
PROGRESS_PREFIX = "WORKER-PROGRESS: "
#: ``progress(stage, done, total)``: ``done`` of ``total`` (``None``: unknown) in ``stage``.
Progress = Callable[[str, int, int | None], None]
#: What the worker imports (ModelOpt's ONNX PTQ and AutoCast, measured), all in the build extra.
_WORKER_NEEDS = ("modelopt", "onnx", "onnxruntime", "ml_dtypes", "onnxslim", "lief", "polygraphy")
#: What it imports for INT8 placed for ONNX Runtime (ONNX Runtime's own quantizer only).
ORT_WORKER_NEEDS = ("onnx", "onnxruntime")


class _Terminated(SystemExit):
    """SIGTERM, turned into an exception so ``finally`` blocks stop the worker and clean up."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated(128 + signum)


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Make SIGTERM raise (exit status 143) instead of killing the process outright, while
    in this block — only from the main thread and only where nobody installed a handler."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def worker_tempdir(kind: str) -> Iterator[Path]:
    """A private work folder ``$TMPDIR/xtrt-KIND-PID-HOST-RAND`` for one worker run.

    Folders of the same kind left by runs that were killed (their PID is gone) are removed
    first; this one is removed on exit, SIGTERM included.

    Args:
        kind: ``"int8"``, ``"fp16"``, ``"eval"`` or ``"kernels"``.
    """
    with _sigterm_unwinds():
        tmp = owned_temp_dir(f"xtrt-{kind}-")
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _parse_progress(line: str) -> tuple[str, int, int | None] | None:
    parts = line[line.index(PROGRESS_PREFIX) + len(PROGRESS_PREFIX):].strip().split(" ", 2)
    try:
        done, total = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None
    return (parts[2] if len(parts) > 2 else "calibrate"), done, (total if total >= 0 else None)


def run_worker(request: dict[str, Any], *, what: str,
               progress: Progress | None = None, tool: str = "ModelOpt",
               requires: tuple[str, ...] = _WORKER_NEEDS) -> dict[str, Any]:
    """Run the ModelOpt worker on ``request`` (written to its ``tmp_dir``) in a subprocess.

    The worker is killed if this call is left by an exception (SIGTERM or Ctrl-C included),
    and kills itself if this process dies.

    Args:
        request: The worker's request (see :mod:`xception_trt.precision._worker`); this adds
            the ``result`` path and ``parent_pid``.
        what: What is being done, for error messages (``"INT8 calibration"``).
        progress: Called with ``(stage, done, total)`` as the worker feeds calibration batches.
        tool: What the worker runs, for error messages (``"ModelOpt"``, ``"ONNX Runtime"``).
        requires: The modules the worker imports for this request (checked here first).

    Returns:
        The worker's result dict.

    Raises:
        CalibrationError: The worker failed (the reason is its last error line), ModelOpt is
            missing, or a cache lacks scales that cannot be calibrated without images.
        DependencyError: A package the worker imports is not installed (the build extra).
    """
    # Checked here, not imported: ModelOpt runs (and patches ONNX Runtime) in the worker only.
    ensure(*requires, purpose=what, extra="build")
    tmp = Path(request["tmp_dir"])
    req_path = tmp / "request.json"
    request["result"] = str(tmp / "result.json")
    request["parent_pid"] = os.getpid()
    req_path.write_text(json.dumps(request))
    # Run from the folder holding this copy of xception_trt, so `-m` imports the same code.
    pkg_parent = Path(__file__).resolve().parents[2]
    tail: deque[str] = deque(maxlen=2000)
    errors: list[str] = []
    with _sigterm_unwinds(), subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, str(req_path)], cwd=str(pkg_parent),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace") as proc:
        try:
            for line in proc.stdout or ():
                # Anywhere in the line: another library's unfinished output may precede it.
                if PROGRESS_PREFIX in line:
                    parsed = _parse_progress(line)
                    if parsed is not None and progress is not None:
                        progress(*parsed)
                    continue
                tail.append(line)
                if line.startswith("WORKER-ERROR: "):
                    errors.append(line.rstrip("\n")[len("WORKER-ERROR: "):])
            returncode = proc.wait()
        except BaseException:
            proc.kill()  # never leave the worker running behind an error or a signal
            raise
    output = "".join(tail)
    if output:
        log.debug("ModelOpt worker output:\n%s", output[-20000:])
    if returncode != 0:
        if errors:
            reason = errors[-1]
        else:
            last = [ln for ln in output.splitlines() if ln.strip()][-1:]
            reason = f"exit code {returncode}" + (f": {last[0]}" if last else "")
        if "MISSING-SCALES" in reason:
            raise CalibrationError(reason.split("MISSING-SCALES ", 1)[1]
                                   + "; calibrate with images (pass calibration data) instead")
        if "No module named 'modelopt'" in reason or "Please install optional" in reason:
            raise CalibrationError(
                f"{what} needs NVIDIA ModelOpt and its ONNX dependencies ({reason}); install "
                "them with: pip install -U 'xception-trt[build]'")
        raise CalibrationError(f"{what} failed in {tool}: {reason}")
    result: dict[str, Any] = json.loads(Path(request["result"]).read_text())
    return result


def modelopt_version() -> str:
    """The installed nvidia-modelopt version (``"unknown"`` when it is not installed)."""
    try:
        from importlib.metadata import version

        return version("nvidia-modelopt")
    except Exception:  # not installed: the worker reports it properly
        return "unknown"
