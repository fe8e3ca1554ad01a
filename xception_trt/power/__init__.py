"""Power and energy during benchmarks, and the context (power mode, clocks, load) they ran in.

:func:`open_monitor` picks what this machine has, in order: the Jetson INA3221 rails in sysfs
(JetPack 5/6 hwmon layout, then JetPack 4's ``ina3221x``), jetson-stats (``jtop``) where
installed and running, NVML through nvidia-ml-py (desktop GPUs), else a monitor that measures
nothing and says why. :class:`~xception_trt.power.sampler.PowerMonitor` then opens one sampling
window around each timed loop. :func:`~xception_trt.power.context.run_context` records the
conditions of the run.

Proof level: written from the documentation and tested on recorded sysfs trees and an NVML
double with nvidia-ml-py's function names; not yet run on a Jetson or a desktop GPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .context import run_context
from .jetson import Ina3221Source, JtopSource, find_rails
from .nvml import NvmlSource, NvmlUnavailable
from .sampler import DEFAULT_PERIOD_S, PowerMonitor, PowerReading, PowerWindow

__all__ = ["open_monitor", "PowerMonitor", "PowerReading", "PowerWindow", "run_context",
           "DEFAULT_PERIOD_S"]

log = logging.getLogger(__name__)


def _jtop_client() -> Any:
    import importlib.util

    if importlib.util.find_spec("jtop") is None:
        return None
    try:
        from jtop import jtop  # type: ignore[import-not-found]

        client = jtop()
        client.start()
        if not client.ok():
            client.close()
            return None
        return client
    except Exception as exc:  # noqa: BLE001 - jtop's service may be down: no jtop backend
        log.debug("jetson-stats not usable: %s", exc)
        return None


def open_monitor(*, period_s: float = DEFAULT_PERIOD_S, sysfs: str | os.PathLike[str] = "/sys",
                 model_file: str | os.PathLike[str] = "/proc/device-tree/model",
                 nvml: Any = None, gpu_index: int = 0, use_jtop: bool = True,
                 pci_bus_id: str | None = None) -> PowerMonitor:
    """The power monitor this machine supports (never raises for a missing one).

    Args:
        period_s: Sampling period in seconds.
        sysfs: Where sysfs is (a recorded tree in tests).
        model_file: The device-tree model file (names the board in notes).
        nvml: The ``pynvml`` module or a double (default: import nvidia-ml-py).
        gpu_index: NVML index of the GPU to measure on desktops (NVML's order, not CUDA's:
            prefer ``pci_bus_id``).
        use_jtop: Try jetson-stats when sysfs has no INA3221 rails.
        pci_bus_id: PCI bus id of the GPU to measure (the CUDA device the run uses:
            :attr:`xception_trt.trt.devices.GpuInfo.pci_bus_id`); takes precedence over
            ``gpu_index``.

    Returns:
        A :class:`PowerMonitor`; ``available`` is false and ``reason`` says why when nothing
        here can measure power.

    Raises:
        ConfigError: A bad ``period_s``.
    """
    reasons = []
    layout, rails, problems = find_rails(sysfs)
    if rails:
        try:
            model = Path(model_file).read_bytes().decode("utf-8", "replace").strip("\x00 \n")
        except OSError:
            model = None
        for p in problems:
            log.warning("power rail left out: %s", p)
        return PowerMonitor(Ina3221Source(rails, layout=layout, model=model), period_s=period_s)
    if layout:
        reasons.append("INA3221 rails found but none readable: " + "; ".join(problems[:3]))
    else:
        reasons.append(f"no INA3221 power monitor under {sysfs} (not a Jetson)")
    if use_jtop:
        client = _jtop_client()
        if client is not None:
            try:
                return PowerMonitor(JtopSource(client), period_s=period_s)
            except Exception as exc:  # noqa: BLE001 - an unexpected jtop answer: go on
                client.close()
                reasons.append(f"jetson-stats: {exc}")
    try:
        return PowerMonitor(NvmlSource(index=gpu_index, nvml=nvml, pci_bus_id=pci_bus_id),
                            period_s=period_s)
    except NvmlUnavailable as exc:
        reasons.append(f"NVML: {exc}")
    return PowerMonitor(None, reason="power: not available — " + "; ".join(reasons),
                        period_s=period_s)
