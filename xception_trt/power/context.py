"""The conditions a benchmark ran under: Jetson model, power mode, clocks, CPU governor, load.

A latency or energy figure without them cannot be reproduced. Everything here reads files (or
runs ``nvpmodel -q``) and never raises: a fact it cannot get is ``None`` with the reason.

Sources (Jetson Linux Developer Guide, "Platform Power and Performance"): the model in
``/proc/device-tree/model``; the power mode from ``nvpmodel -q`` or, without the tool, the
mode id in ``/var/lib/nvpmodel/status`` (``pmode:0002 ...``) named by ``/etc/nvpmodel.conf``
(``< POWER_MODEL ID=2 NAME=15W >``); GPU clocks from devfreq
(``/sys/class/devfreq/<gpu>/{cur,min,max}_freq``, Hz); EMC from debugfs (root only);
jetson_clocks pins minimum clocks at their maximum, which is what is checked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..host import load_average

__all__ = ["run_context", "jetson_context", "cpu_context"]

#: devfreq device names of Jetson GPUs (Orin ga10b, Xavier gv11b, TX2 gp10b, Nano gm20b,
#: Thor gb10b): ``<address>.<name>``.
_GPU_DEVFREQ = re.compile(r"\.(ga10b|gv11b|gp10b|gm20b|gb10b|gpu)$")
_EMC_FILES = ("sys/kernel/debug/bpmp/debug/clk/emc/rate",  # JetPack 5/6 (root only)
              "sys/kernel/debug/clk/emc/clk_rate")  # JetPack 4 (root only)


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


def cpu_context(root: str | os.PathLike[str] = "/") -> dict[str, Any]:
    """CPU frequency governors (governor -> number of CPUs) and current clocks (MHz)."""
    base = Path(root) / "sys/devices/system/cpu"
    governors: dict[str, int] = {}
    cur, pinned = [], []
    # cpu0, cpu1 ...: a folder such as cpu0x (or cpufreq, cpuidle) is not a CPU
    cpus = [p for p in base.glob("cpu[0-9]*") if p.name[3:].isascii() and p.name[3:].isdigit()]
    for cpu in sorted(cpus, key=lambda p: int(p.name[3:])):
        freq = cpu / "cpufreq"
        gov = _read(freq / "scaling_governor")
        if gov:
            governors[gov] = governors.get(gov, 0) + 1
        c = _int(freq / "scaling_cur_freq")
        if c is not None:
            cur.append(c / 1000.0)
        lo, hi = _int(freq / "scaling_min_freq"), _int(freq / "scaling_max_freq")
        if lo is not None and hi is not None:
            pinned.append(lo == hi)
    out: dict[str, Any] = {"governors": governors or None,
                           "cur_freq_mhz": {"min": min(cur), "max": max(cur)} if cur else None,
                           "min_pinned_to_max": all(pinned) if pinned else None}
    if not governors:
        out["reason"] = "no cpufreq in sysfs (a VM or container, or not Linux)"
    return out


def _nvpmodel(root: Path, run: Callable[..., Any]) -> dict[str, Any]:
    tool = shutil.which("nvpmodel") if root == Path("/") else None
    if tool:
        try:
            out = run([tool, "-q"], capture_output=True, text=True, timeout=5).stdout
            m = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", out or "")
            if m:
                return {"name": m.group(1), "id": int(m.group(2)), "source": "nvpmodel -q"}
        except (OSError, subprocess.SubprocessError):
            pass
    status = _read(root / "var/lib/nvpmodel/status")
    m = re.search(r"pmode:(\d+)", status or "")
    if not m:
        return {"name": None, "id": None,
                "reason": "nvpmodel -q gave nothing and /var/lib/nvpmodel/status is absent"}
    mode = int(m.group(1))
    name = None
    conf = _read(root / "etc/nvpmodel.conf") or ""
    for cm in re.finditer(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>", conf):
        if int(cm.group(1)) == mode:
            name = cm.group(2)
    return {"name": name, "id": mode, "source": "/var/lib/nvpmodel/status + /etc/nvpmodel.conf"}


def _devfreq(root: Path) -> dict[str, Any] | None:
    for dev in sorted((root / "sys/class/devfreq").glob("*")):
        if _GPU_DEVFREQ.search(dev.name):
            mhz = {k: (None if (v := _int(dev / f"{k}_freq")) is None else v / 1e6)
                   for k in ("cur", "min", "max")}
            return {"device": dev.name, "governor": _read(dev / "governor"),
                    "cur_mhz": mhz["cur"], "min_mhz": mhz["min"], "max_mhz": mhz["max"]}
    return None


def jetson_context(root: str | os.PathLike[str] = "/", *,
                   run: Callable[..., Any] = subprocess.run) -> dict[str, Any] | None:
    """Jetson model, L4T release, power mode, jetson_clocks state, GPU and EMC clocks.

    Returns:
        ``None`` on a machine that is not a Jetson.
    """
    root = Path(root)
    model = _read(root / "proc/device-tree/model")
    if not model or not ("jetson" in model.lower() or (root / "etc/nv_tegra_release").exists()):
        return None
    release = _read(root / "etc/nv_tegra_release")
    gpu = _devfreq(root)
    emc = None
    for rel in _EMC_FILES:
        rate = _int(root / rel)
        if rate is not None:
            emc = {"cur_mhz": rate / 1e6, "source": "/" + rel}
            break
    cpu = cpu_context(root)
    gpu_pinned = gpu is not None and gpu["min_mhz"] is not None \
        and gpu["min_mhz"] == gpu["max_mhz"]
    if cpu["min_pinned_to_max"] is None and gpu is None:
        clocks = "unknown (no cpufreq or GPU devfreq readable)"
    elif cpu["min_pinned_to_max"] and gpu_pinned:
        clocks = "on (CPU and GPU minimum clocks pinned at their maximum)"
    else:
        clocks = "off (minimum clocks below maximum: DVFS may lower clocks mid-run)"
    return {"model": model,
            "l4t": release.splitlines()[0].lstrip("# ").strip() if release else None,
            "nvpmodel": _nvpmodel(root, run), "jetson_clocks": clocks, "gpu_devfreq": gpu,
            "emc": emc or {"cur_mhz": None,
                           "reason": "EMC clock is only in debugfs, readable by root"}}


def run_context(*, root: str | os.PathLike[str] = "/", nvml: Any = None,
                probe_nvml: bool = True) -> dict[str, Any]:
    """Everything a report records about the conditions of the run.

    Args:
        root: File-system root to read (``/``; a recorded tree in tests).
        nvml: The ``pynvml`` module or a double (default: import nvidia-ml-py).
        probe_nvml: Ask NVML for desktop GPU clocks, power limit and persistence mode.

    Returns:
        ``{"load_average", "cpu", "jetson", "nvml"}``, JSON-ready (the load average when
        called: before the measurements; the report's ``system`` has the one after).
    """
    from .nvml import nvml_context

    jetson = jetson_context(root)
    out: dict[str, Any] = {"load_average": load_average(), "cpu": cpu_context(root),
                           "jetson": jetson}
    if jetson is not None:
        out["nvml"] = {"available": False, "reason": "NVML does not report clocks or power on "
                       "Jetson; see the Jetson fields", "driver": None, "gpus": []}
    elif probe_nvml:
        out["nvml"] = nvml_context(nvml=nvml)
    else:
        out["nvml"] = {"available": False, "reason": "not probed", "driver": None, "gpus": []}
    return out
