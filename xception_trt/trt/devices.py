"""Which NVIDIA driver and GPUs are present, asked through the CUDA driver API (cuda-python)
or, without it, ``nvidia-smi``, or on a Jetson (JetPack has no ``nvidia-smi``) the Tegra device
tree. Never raises on a machine without a GPU."""

from __future__ import annotations

import functools
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..jsonable import JsonMixin

if TYPE_CHECKING:
    from . import TensorRTFlavour

__all__ = ["GpuInfo", "DeviceReport", "query_devices", "probed_devices", "query_dla_cores",
           "NO_DRIVER", "no_gpu_message", "normalise_bus_id"]

#: The words for a machine without an NVIDIA driver, in ``info``, ``selftest`` and every runner.
NO_DRIVER = "no NVIDIA driver found"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    """One GPU: CUDA ordinal, name, compute capability (``"8.7"``), total memory in bytes,
    whether it is an integrated GPU sharing the host's memory (Jetson), and its PCI bus id
    (``"00000000:65:00.0"``; ``None`` where unknown), which is what ties a CUDA ordinal to an
    NVML device: "The NVML index may not correlate with other APIs, such as the CUDA device
    index" (NVML API reference, ``nvmlDeviceGetHandleByIndex``)."""

    index: int
    name: str
    compute_capability: str
    total_memory: int
    integrated: bool = False
    pci_bus_id: str | None = None

    @property
    def sm(self) -> str:
        """``sm_87``-style architecture name."""
        return "sm_" + self.compute_capability.replace(".", "")


@dataclass(frozen=True)
class DeviceReport(JsonMixin):
    """What the probe found. ``driver`` is ``None`` and ``reason`` says why when there is none."""

    driver: str | None
    cuda_driver_api: str | None
    gpus: tuple[GpuInfo, ...] = ()
    probe: str = "none"
    reason: str = ""



def _via_cuda_python() -> DeviceReport | None:
    import importlib.util

    if (importlib.util.find_spec("cuda") is None
            or importlib.util.find_spec("cuda.bindings") is None):
        return None
    try:
        from cuda.bindings import driver as cu  # type: ignore[import-not-found]

        err, = cu.cuInit(0)
    except Exception as exc:  # cuda-python loads libcuda lazily; no driver -> it raises here
        return DeviceReport(None, None, (), "cuda-python",
                            f"{NO_DRIVER} (cuda-python is installed but cannot load the driver "
                            f"library: {type(exc).__name__})")
    if err != cu.CUresult.CUDA_SUCCESS:
        return DeviceReport(None, None, (), "cuda-python",
                            f"cuInit failed ({err.name}): no usable NVIDIA driver/GPU")
    err, version = cu.cuDriverGetVersion()
    api = f"{version // 1000}.{(version % 1000) // 10}" if err == cu.CUresult.CUDA_SUCCESS else None
    err, count = cu.cuDeviceGetCount()
    gpus = []
    for i in range(count if err == cu.CUresult.CUDA_SUCCESS else 0):
        _, dev = cu.cuDeviceGet(i)
        _, raw = cu.cuDeviceGetName(128, dev)
        name = raw.split(b"\0", 1)[0].decode(errors="replace")
        _, major = cu.cuDeviceGetAttribute(
            cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
        _, minor = cu.cuDeviceGetAttribute(
            cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
        _, mem = cu.cuDeviceTotalMem(dev)
        _, integrated = cu.cuDeviceGetAttribute(
            cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_INTEGRATED, dev)
        bus_err, bus = cu.cuDeviceGetPCIBusId(64, dev)
        bus_id = (bus.split(b"\0", 1)[0].decode(errors="replace")
                  if bus_err == cu.CUresult.CUDA_SUCCESS and isinstance(bus, bytes) else None)
        gpus.append(GpuInfo(i, name, f"{major}.{minor}", int(mem), bool(integrated),
                            normalise_bus_id(bus_id)))
    smi = _via_nvidia_smi()
    driver = smi.driver if smi is not None and smi.driver else None
    return DeviceReport(driver, api, tuple(gpus), "cuda-python",
                        "" if gpus else "the CUDA driver reports no GPU")


def normalise_bus_id(bus_id: str | None) -> str | None:
    """A PCI bus id in NVML's long form, lower case (``"00000000:65:00.0"``): CUDA's
    ``cuDeviceGetPCIBusId`` gives a 4-digit domain, NVML an 8-digit one."""
    if not bus_id:
        return None
    domain, sep, rest = bus_id.strip().lower().partition(":")
    if not sep:
        return None
    return f"{int(domain, 16):08x}:{rest}" if re.fullmatch(r"[0-9a-f]+", domain) else None


def _via_nvidia_smi(env: dict[str, str] | None = None) -> DeviceReport | None:
    """GPUs as ``nvidia-smi`` (NVML) lists them, numbered as CUDA would where that can be
    known without the CUDA driver: NVML ignores ``CUDA_VISIBLE_DEVICES`` and its index "may
    not correlate with ... the CUDA device index" (NVML API reference). CUDA numbers the
    visible devices (``CUDA_VISIBLE_DEVICES``: ordinals or ``GPU-`` UUIDs, in the order given,
    up to the first invalid entry) in ``CUDA_DEVICE_ORDER`` order; only ``PCI_BUS_ID`` order
    is knowable here (the default, fastest first, is the driver's choice), so otherwise only a
    single GPU has a known ordinal (0) and the report says the others' are uncertain (CUDA
    C++ Programming Guide, "CUDA Environment Variables")."""
    import os

    env = dict(os.environ) if env is None else env
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,compute_cap,memory.total,driver_version,pci.bus_id,"
                  "uuid", "--format=csv,noheader,nounits"], capture_output=True, text=True,
            timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        return DeviceReport(None, None, (), "nvidia-smi", f"nvidia-smi failed: {exc}")
    rows, driver = [], None
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 7:
            continue
        rows.append((GpuInfo(int(parts[0]), parts[1], parts[2], int(float(parts[3])) << 20,
                             pci_bus_id=normalise_bus_id(parts[5])), parts[6]))
        driver = parts[4]
    gpus, note = _cuda_numbering(rows, env)
    reason = note if gpus else (note or "no GPU listed")
    return DeviceReport(driver, None, tuple(gpus), "nvidia-smi", reason)


def _cuda_numbering(rows: list[tuple[GpuInfo, str]], env: dict[str, str]
                    ) -> tuple[list[GpuInfo], str]:
    """NVML's GPUs (with UUIDs) renumbered with CUDA's ordinals (see :func:`_via_nvidia_smi`);
    the note says when the numbering is uncertain."""
    import dataclasses

    pci_order = env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST") == "PCI_BUS_ID"
    ordered = sorted(rows, key=lambda r: r[0].pci_bus_id or "") if pci_order else list(rows)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    known = pci_order or len(rows) <= 1
    if visible is not None:
        chosen: list[tuple[GpuInfo, str]] = []
        by_uuid = True
        for token in (t.strip() for t in visible.split(",")):
            match = None
            if token.isdigit() and int(token) < len(ordered):  # CUDA's order (maybe unknown)
                match, by_uuid = ordered[int(token)], False
            elif token.startswith("GPU-"):  # a UUID or a unique prefix of one
                hits = [r for r in ordered if r[1].startswith(token)]
                match = hits[0] if len(hits) == 1 else None
            if match is None or match in chosen:
                break  # CUDA ignores the rest from the first invalid entry
            chosen.append(match)
        ordered = chosen
        known = known or by_uuid
    gpus = [dataclasses.replace(g, index=i) for i, (g, _) in enumerate(ordered)]
    note = "" if known else (
        "nvidia-smi lists GPUs in NVML order, which may not be CUDA's (fastest first): install "
        "cuda-python for exact CUDA ordinals, or set CUDA_DEVICE_ORDER=PCI_BUS_ID")
    return gpus, note


#: Where the Tegra probe looks (a fake root in tests).
_ROOT = Path("/")

#: Jetson SoCs (device-tree ``compatible``) and their GPU's compute capability (CUDA C++
#: Programming Guide, "Compute Capabilities"; Thor is sm_110 from CUDA 13, JetPack 7).
_TEGRA_CC = {"tegra264": "11.0", "tegra234": "8.7", "tegra194": "7.2", "tegra186": "6.2",
             "tegra210": "5.3"}


def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b"\n").decode(errors="replace").strip()
    except OSError:
        return ""


def _via_tegra() -> DeviceReport | None:
    """A Jetson's integrated GPU from its device tree, without CUDA: JetPack 5/6 has no
    ``nvidia-smi`` and cuda-python is often not installed, while TensorRT (which JetPack ships)
    can build. Needs the SoC in ``/proc/device-tree/compatible`` and the GPU driver (the
    ``nvgpu`` kernel module, or the L4T release file ``/etc/nv_tegra_release``)."""
    compatible = _read(_ROOT / "proc/device-tree/compatible").split()
    soc = next((s.split(",", 1)[1] for s in compatible
                if s.startswith("nvidia,") and s.split(",", 1)[1] in _TEGRA_CC), None)
    if soc is None:
        return None
    release = _read(_ROOT / "etc/nv_tegra_release")
    if not (release or (_ROOT / "sys/module/nvgpu").exists()):
        return DeviceReport(None, None, (), "tegra", f"a Jetson ({soc}) without its GPU driver "
                            "(no nvgpu module, no /etc/nv_tegra_release): reinstall JetPack")
    match = re.search(r"R(\d+)[^,]*,\s*REVISION:\s*([\d.]+)", release)
    driver = f"L4T R{match.group(1)}.{match.group(2)}" if match else None
    model = _read(_ROOT / "proc/device-tree/model").splitlines()
    mem = re.search(r"MemTotal:\s*(\d+)\s*kB", _read(_ROOT / "proc/meminfo"))
    gpu = GpuInfo(0, f"{model[0] if model else 'NVIDIA Jetson'} ({soc} integrated GPU)",
                  _TEGRA_CC[soc], int(mem.group(1)) << 10 if mem else 0, integrated=True)
    return DeviceReport(driver, None, (gpu,), "tegra")


def query_devices() -> DeviceReport:
    """Probe the NVIDIA driver and GPUs; on a CPU-only machine the report says so.

    The first probe that finds a GPU answers (cuda-python, ``nvidia-smi``, the Tegra device
    tree); when none does, the first that ran says why.
    """
    reports = []
    for probe in (_via_cuda_python, _via_nvidia_smi, _via_tegra):
        try:
            report = probe()
        except Exception as exc:  # a broken driver install must not break `info`
            log.debug("device probe %s failed: %s", probe.__name__, exc)
            continue
        if report is not None:
            if report.gpus:
                return report
            reports.append(report)
    if reports:
        return reports[0]
    return DeviceReport(None, None, (), "none",
                        f"{NO_DRIVER} (neither cuda-python nor nvidia-smi is available)")


@functools.cache
def probed_devices() -> DeviceReport:
    """:func:`query_devices`, asked once per process and remembered: what
    :mod:`xception_trt.sysinfo` (every reader above ``trt/``), the builder and the CUDA layer's
    error messages read. ``probed_devices.cache_clear()`` (or
    :func:`xception_trt.sysinfo.refresh`) forgets the answer."""
    return query_devices()


def query_dla_cores(flavour: TensorRTFlavour) -> int:
    """DLA cores through ``Builder.num_DLA_cores`` of an imported TensorRT flavour (NVIDIA
    TensorRT on a Jetson AGX/NX); 0 where it has none or cannot say. Never raises. Written to
    the documented API; UNVERIFIED on a device (no Jetson here)."""
    try:
        trt = flavour.module
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        return int(getattr(builder, "num_DLA_cores", 0) or 0)
    except Exception as exc:  # a facts probe must never break info or doctor
        log.debug("cannot ask TensorRT for DLA cores: %s", exc)
        return 0


def no_gpu_message(failure: str) -> str:
    """The error text when the CUDA layer cannot reach a GPU, worded like ``info``/``selftest``.

    A missing driver makes the CUDA runtime report an "insufficient driver version", which
    sends users hunting for an upgrade; the driver probe tells a missing driver from an old
    one.

    Args:
        failure: What the CUDA call said (kept in the message for an existing driver).

    Returns:
        ``"no usable NVIDIA GPU: no NVIDIA driver found (...); install ..."`` when the probe
        finds no driver, else ``"no usable NVIDIA GPU: FAILURE; check the driver ..."``.
    """
    report = probed_devices()
    if report.driver is None and not report.gpus and report.cuda_driver_api is None:
        reason = report.reason if NO_DRIVER in report.reason else f"{NO_DRIVER} ({report.reason})"
        return (f"no usable NVIDIA GPU: {reason}; install the NVIDIA driver on a machine with an "
                "NVIDIA GPU (nvidia-smi must list it)")
    return (f"no usable NVIDIA GPU: {failure}; check the driver with nvidia-smi (the driver must "
            "be at least as new as the CUDA runtime that cuda-python loads)")
