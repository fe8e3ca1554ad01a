"""Desktop and data-centre GPUs: power, energy, clocks and limits through NVML (nvidia-ml-py).

Energy comes from ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded; Volta
and newer) where the GPU has the counter; power samples from ``nvmlDeviceGetPowerUsage`` (mW)
otherwise. A query the GPU does not support answers ``NVML_ERROR_NOT_SUPPORTED``: that value is
reported as ``None`` with the reason, never as an error. NVML answers NOT_SUPPORTED for power on
Jetson: there the INA3221 rails are used instead (:mod:`xception_trt.power.jetson`).

The ``nvml`` argument of each function is the ``pynvml`` module (from nvidia-ml-py); the tests
pass a double with the same function names.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__all__ = ["load_nvml", "NvmlSource", "nvml_context", "NvmlUnavailable"]

log = logging.getLogger(__name__)

#: nvidia-ml-py's import name and how to install it.
INSTALL = "pip install 'xception-trt[power]' (nvidia-ml-py)"


class NvmlUnavailable(Exception):
    """NVML cannot measure here; the message is the reason shown in reports."""


def load_nvml() -> Any:
    """The ``pynvml`` module of nvidia-ml-py.

    Raises:
        NvmlUnavailable: nvidia-ml-py is not installed.
    """
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise NvmlUnavailable(f"nvidia-ml-py is not installed; {INSTALL}") from None


def _error_text(nvml: Any, exc: BaseException) -> str:
    if isinstance(exc, getattr(nvml, "NVMLError_NotSupported", ())):
        return "not supported by this GPU (NVML_ERROR_NOT_SUPPORTED)"
    return f"{type(exc).__name__}: {exc}"


def _init(nvml: Any) -> None:
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML did not start: {exc}") from None


def _query(nvml: Any, fn: str, *args: Any) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, why)`` for one NVML call."""
    try:
        return getattr(nvml, fn)(*args), None
    except nvml.NVMLError as exc:
        return None, _error_text(nvml, exc)


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


class NvmlSource:
    """Power of one GPU through NVML: the GPU at ``pci_bus_id`` (how a CUDA device is found in
    NVML: "The NVML index may not correlate with other APIs, such as the CUDA device index",
    NVML API reference, ``nvmlDeviceGetHandleByIndex``; NVML also ignores
    ``CUDA_VISIBLE_DEVICES``), else NVML's ``index`` (by default its first GPU)."""

    scope = "gpu"

    def __init__(self, *, index: int = 0, nvml: Any = None,
                 pci_bus_id: str | None = None) -> None:
        """Start NVML and check that this GPU reports energy or power.

        Raises:
            NvmlUnavailable: No nvidia-ml-py, no driver, no such GPU, or neither energy nor
                power supported (the message says which).
        """
        self._nvml = nvml = nvml if nvml is not None else load_nvml()
        _init(nvml)
        self._open = True
        try:
            count, why = _query(nvml, "nvmlDeviceGetCount")
            if pci_bus_id is not None:
                self._handle, why = _query(nvml, "nvmlDeviceGetHandleByPciBusId", pci_bus_id)
                if self._handle is None:
                    raise NvmlUnavailable(f"NVML has no GPU at PCI bus id {pci_bus_id}"
                                          + (f" ({why})" if why else ""))
                label = f"at PCI {pci_bus_id}"
            else:
                if not count or index >= count:
                    raise NvmlUnavailable(f"NVML sees {count or 0} GPU(s), no GPU {index}"
                                          + (f" ({why})" if why else ""))
                self._handle = nvml.nvmlDeviceGetHandleByIndex(index)
                label = str(index)
            gpu = _text(_query(nvml, "nvmlDeviceGetName", self._handle)[0]) or f"GPU {label}"
            energy, why_energy = _query(nvml, "nvmlDeviceGetTotalEnergyConsumption",
                                        self._handle)
            power, why_power = _query(nvml, "nvmlDeviceGetPowerUsage", self._handle)
            if energy is None and power is None:
                raise NvmlUnavailable(f"NVML reports neither energy ({why_energy}) nor power "
                                      f"({why_power}) for {gpu}")
        except BaseException:
            self.close()
            raise
        self._has_energy = energy is not None
        self._has_power = power is not None
        self.name = "nvml"
        self.gpu = gpu
        self.rails: tuple[str, ...] = (f"GPU {label}",) if self._has_power else ()
        self.total_rail = self.rails[0] if self.rails else None
        notes = [f"NVML GPU {label} ({gpu}): the GPU board only; host CPU and memory are not "
                 "included"]
        if not self._has_energy:
            notes.append(f"no energy counter ({why_energy}): energy = mean of power samples x "
                         "time; on Ampere and newer NVML's power reading is a 1 s average")
        if not self._has_power:
            notes.append(f"no power reading ({why_power}): the mean comes from the energy "
                         "counter")
        self.notes: tuple[str, ...] = tuple(notes)
        self._errors: list[str] = []

    def read_mw(self) -> list[float | None]:
        """The GPU's power in mW (empty when only the energy counter is supported)."""
        if not self._has_power:
            return []
        value, why = _query(self._nvml, "nvmlDeviceGetPowerUsage", self._handle)
        if why and len(self._errors) < 5:
            self._errors.append(why)
        return [None if value is None else float(value)]

    def energy_mj(self) -> float | None:
        """NVML's cumulative energy counter (mJ), where supported."""
        if not self._has_energy:
            return None
        value, _ = _query(self._nvml, "nvmlDeviceGetTotalEnergyConsumption", self._handle)
        return None if value is None else float(value)

    def errors(self) -> list[str]:
        """The first read failures."""
        return list(self._errors)

    def close(self) -> None:
        """Shut NVML down (idempotent)."""
        if getattr(self, "_open", False):
            self._open = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                log.debug("nvmlShutdown: %s", exc)


def nvml_context(*, nvml: Any = None) -> dict[str, Any]:
    """Clocks, power limit and persistence mode of every GPU NVML sees, for report context.

    Returns:
        ``{"available": bool, "reason": str | None, "driver": str | None, "gpus": [...]}``;
        each GPU's unsupported queries are ``None`` with their reason in ``unsupported``.
    """
    try:
        nvml = nvml if nvml is not None else load_nvml()
        _init(nvml)
    except NvmlUnavailable as exc:
        return {"available": False, "reason": str(exc), "driver": None, "gpus": []}
    try:
        driver = _text(_query(nvml, "nvmlSystemGetDriverVersion")[0])
        gpus = []
        count = _query(nvml, "nvmlDeviceGetCount")[0] or 0
        for i in range(count):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            unsupported: dict[str, str] = {}

            def get(key: str, fn: str, *args: Any, h: Any = h,
                    unsupported: dict[str, str] = unsupported) -> Any:
                value, why = _query(nvml, fn, h, *args)
                if why:
                    unsupported[key] = why
                return value

            clocks = {name: get(f"clock_{name}", "nvmlDeviceGetClockInfo", kind)
                      for name, kind in (("graphics", nvml.NVML_CLOCK_GRAPHICS),
                                         ("sm", nvml.NVML_CLOCK_SM),
                                         ("memory", nvml.NVML_CLOCK_MEM))}
            max_clocks = {name: get(f"max_clock_{name}", "nvmlDeviceGetMaxClockInfo", kind)
                          for name, kind in (("graphics", nvml.NVML_CLOCK_GRAPHICS),
                                             ("sm", nvml.NVML_CLOCK_SM),
                                             ("memory", nvml.NVML_CLOCK_MEM))}
            limit = get("power_limit", "nvmlDeviceGetEnforcedPowerLimit")
            persistence = get("persistence_mode", "nvmlDeviceGetPersistenceMode")
            pstate = get("performance_state", "nvmlDeviceGetPerformanceState")
            gpus.append({"index": i, "name": _text(get("name", "nvmlDeviceGetName")),
                         "clocks_mhz": clocks, "max_clocks_mhz": max_clocks,
                         "power_limit_w": None if limit is None else limit / 1000.0,
                         "persistence_mode": None if persistence is None
                         else ("on" if persistence else "off"),
                         "performance_state": None if pstate is None else f"P{pstate}",
                         "unsupported": unsupported})
        return {"available": True, "reason": None, "driver": driver, "gpus": gpus}
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as exc:
            log.debug("nvmlShutdown: %s", exc)
