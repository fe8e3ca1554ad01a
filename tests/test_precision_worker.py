"""The ModelOpt worker subprocess never outlives its caller: kill -9 and SIGTERM of the parent,
the parent-death race, and the sweep of a killed run's ``xtrt-int8-*`` folder (in a private
TMPDIR, so nothing outside the test is touched)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from xception_trt.precision import launcher

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ROOT = Path(__file__).resolve().parents[1]

#: The caller: a work folder and a worker that is busy (the request's test hook sleeps).
PARENT = """
from xception_trt.precision.launcher import run_worker, worker_tempdir
with worker_tempdir("int8") as tmp:
    print(tmp, flush=True)
    run_worker({"task": "int8", "tmp_dir": str(tmp), "test_sleep_s": 300}, what="test",
               progress=lambda *a: print("progress", *a, flush=True))
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, not yet reaped
    except psutil.NoSuchProcess:
        return True


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _start_parent(tmp_path: Path) -> tuple[subprocess.Popen, Path, psutil.Process]:
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT))
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=env, cwd=str(ROOT),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = Path(parent.stdout.readline().strip())  # type: ignore[union-attr]
    assert folder.parent == tmp_path and folder.name.startswith(f"xtrt-int8-{parent.pid}-")
    # The worker reports its busy phase (after arming its parent watch) through the progress
    # protocol; the caller prints it.
    line = parent.stdout.readline()  # type: ignore[union-attr]
    assert line.split() == ["progress", "test", "sleep", "0", "None"], line
    worker = psutil.Process(parent.pid).children()[0]
    assert "_worker" in " ".join(worker.cmdline())
    return parent, folder, worker


def test_kill_9_of_the_caller_kills_the_worker_and_the_next_run_sweeps(tmp_path, monkeypatch):
    parent, folder, worker = _start_parent(tmp_path)
    try:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=120)  # event waits; the limits only catch a hang on a loaded machine
        assert _wait(lambda: _gone(worker.pid), 120), "the worker outlived its killed parent"
    finally:
        if not _gone(worker.pid):
            worker.kill()
    assert folder.is_dir()  # nobody could clean up after a kill -9 ...
    live = tmp_path / f"xtrt-int8-{os.getpid()}-{folder.name.split('-')[3]}-00000000"
    live.mkdir()  # ... a concurrent run of a live process
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with launcher.worker_tempdir("int8") as new:  # ... so the next run sweeps it
        assert new.parent == tmp_path
        assert not folder.exists()
        assert live.is_dir()
    assert not new.exists()


def test_sigterm_of_the_caller_stops_the_worker_and_removes_the_folder(tmp_path):
    parent, folder, worker = _start_parent(tmp_path)
    try:
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=120) == 128 + signal.SIGTERM
        assert _wait(lambda: _gone(worker.pid), 120)
    finally:
        if parent.poll() is None:
            parent.kill()
        if not _gone(worker.pid):
            worker.kill()
    assert not folder.exists()
    assert list(tmp_path.iterdir()) == []


def test_worker_exits_at_once_when_its_parent_is_already_gone(tmp_path):
    """The race: the parent dies before the worker armed its parent-death signal."""
    req = tmp_path / "request.json"
    # This test process is the worker's parent; naming another pid is "my parent died".
    other = os.getppid()
    req.write_text(json.dumps({"parent_pid": other, "test_sleep_s": 300, "task": "int8",
                               "tmp_dir": str(tmp_path), "result": str(tmp_path / "r.json")}))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", launcher.WORKER_MODULE, str(req)],
                          cwd=str(ROOT), capture_output=True, timeout=60)
    assert proc.returncode == 1 and time.monotonic() - t0 < 60
    assert not (tmp_path / "r.json").exists()


def test_progress_lines_are_found_behind_other_output():
    parse = launcher._parse_progress
    assert parse("WORKER-PROGRESS: 3 8 calibrate max\n") == ("calibrate max", 3, 8)
    assert parse("50%|#####  WORKER-PROGRESS: 1 -1 test sleep\n") == ("test sleep", 1, None)
    assert parse("WORKER-PROGRESS: x y\n") is None
