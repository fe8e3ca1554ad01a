"""Facts about this machine and its software, gathered in one place and probed once per process.

Every reader asks here: ``xception-trt info``, the ``system`` of every report, the facts the
bundle's engine choice and ``doctor`` use (:func:`xception_trt.bundle.facts.probe_facts`), the
self-test's requirements, the bundler, the demo and the INT8 calibration providers. Each probe
runs at most once per process, on first use, and its answer is a frozen dataclass:

=====================  =========================================================  ============
part                   what it probes                                              by
=====================  =========================================================  ============
:func:`platform_facts` OS, architecture, host name, Python                         ``platform``
:func:`cpu_facts`      CPU model, logical cores, INT8 features (VNNI, AMX)         /proc/cpuinfo
:func:`packages`       versions of the libraries we use (package metadata)         ``host``
:func:`flavours`       which TensorRT flavours *import* (a PyPI stub does not)     ``trt``
:func:`cuda_bindings`  CUDA Python bindings: version, and why one is unusable      ``trt.cuda``
:func:`devices`        driver, CUDA driver API, GPUs (compute capability,          ``trt.devices``
                       memory, integrated)
:func:`dla_cores`      DLA cores NVIDIA TensorRT reports (0 elsewhere)             ``trt.devices``
:func:`ort_facts`      ONNX Runtime's version and execution providers              import
:func:`onnx_installed` whether ``onnx`` is installed                               find_spec
:func:`git_revision`   the checkout's git revision                                 ``git``
=====================  =========================================================  ============

Probes of TensorRT and CUDA are functions of :mod:`xception_trt.trt` (the only package that
imports them); the import-free ones live in :mod:`xception_trt.host`. The driver/GPU query and
the flavour imports are remembered in ``trt`` itself (``probed_devices``, ``probed_flavours``),
so that the builder, a layer below this module, shares the one answer. Nothing here is imported
at package import, and nothing is probed until asked. :func:`load_average` is not cached: it is
a reading of the moment (a report takes one before and one after its measurements).
:func:`refresh` forgets every answer (tests; a process that outlives a driver install).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import platform
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .host import (
    cpu_int8_features,
    cpu_model,
    load_average,
    package_version,
    software_versions,
)
from .host import git_revision as _git_revision
from .jsonable import JsonMixin
from .trt.devices import DeviceReport, GpuInfo

__all__ = ["package_version", "software_versions", "cpu_model", "cpu_int8_features",
           "git_revision", "load_average", "system_facts",
           "PlatformFacts", "CpuInt8", "CpuFacts", "PackageFact", "FlavourFact",
           "CudaBindingFact", "OrtFacts", "GpuInfo", "DeviceReport", "MachineFacts",
           "platform_facts", "cpu_facts", "packages", "flavours", "cuda_bindings", "devices",
           "dla_cores", "ort_facts", "onnx_installed", "machine_facts", "refresh"]

log = logging.getLogger(__name__)

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# the facts


@dataclass(frozen=True)
class PlatformFacts:
    """The OS and Python: ``platform.platform()``, the architecture (``x86_64``, ``aarch64``),
    the OS name (``Linux``), the host name, the Python version and its executable."""

    platform: str
    machine: str
    system: str
    node: str
    python: str
    python_executable: str

    @property
    def host(self) -> str:
        """``name (arch, OS)``, the machine in one line (``doctor``'s ``host``)."""
        return f"{self.node} ({self.machine}, {self.system})"


@dataclass(frozen=True)
class CpuInt8:
    """The CPU's INT8 features (:func:`xception_trt.host.cpu_int8_features`): ``None`` where
    /proc/cpuinfo has no flags line (not Linux, or not x86)."""

    vnni: bool | None
    amx: bool | None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class CpuFacts:
    """The CPU: model name, logical cores (``None``: unknown) and INT8 features."""

    model: str
    count: int | None
    int8: CpuInt8


@dataclass(frozen=True)
class PackageFact:
    """An installed distribution's version (``None``: not installed), by its report label."""

    name: str
    version: str | None


@dataclass(frozen=True)
class FlavourFact(JsonMixin):
    """A TensorRT flavour that imports here: ``tensorrt`` / ``tensorrt_rtx`` and its version."""

    name: str
    version: str


@dataclass(frozen=True)
class CudaBindingFact:
    """A CUDA Python binding (``cuda-python`` / ``pycuda``): its installed version and, when
    it cannot be used here, why (``problem``; ``None``: it imports)."""

    name: str
    version: str | None
    problem: str | None

    @property
    def usable(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class OrtFacts:
    """ONNX Runtime: its version (``None``: not installed or broken) and its execution
    providers."""

    version: str | None
    providers: tuple[str, ...] = ()


@dataclass(frozen=True)
class MachineFacts:
    """Every fact at once (:func:`machine_facts`)."""

    platform: PlatformFacts
    cpu: CpuFacts
    packages: tuple[PackageFact, ...]
    flavours: tuple[FlavourFact, ...]
    cuda_bindings: tuple[CudaBindingFact, ...]
    devices: DeviceReport
    dla_cores: int
    onnxruntime: OrtFacts
    onnx: bool
    git_revision: str | None

    def version(self, name: str) -> str | None:
        """The version of a package by its label (``torch``, ``tensorrt-rtx`` ...)."""
        return next((p.version for p in self.packages if p.name == name), None)


# ---------------------------------------------------------------------------------------------
# probed once


_answers: dict[str, Any] = {}
_lock = threading.RLock()  # re-entrant: a probe may ask for another (DLA cores need the GPUs)


def _once(key: str, probe: Callable[[], T]) -> T:
    with _lock:
        if key not in _answers:
            _answers[key] = probe()
        return _answers[key]  # type: ignore[no-any-return]


def refresh() -> None:
    """Forget every answer: the next question probes again."""
    from .trt import probed_flavours
    from .trt.devices import probed_devices

    with _lock:
        _answers.clear()
        probed_flavours.cache_clear()
        probed_devices.cache_clear()


def platform_facts() -> PlatformFacts:
    """The OS and Python (probed once)."""
    return _once("platform", lambda: PlatformFacts(
        platform.platform(), platform.machine(), platform.system(), platform.node(),
        platform.python_version(), sys.executable))


def _cpu() -> CpuFacts:
    # looked up here at call time: tests replace cpu_int8_features with a recorded CPU's
    features = cpu_int8_features()
    return CpuFacts(cpu_model(), os.cpu_count(),
                    CpuInt8(features.get("vnni"), features.get("amx"),
                            tuple(features.get("flags") or ())))


def cpu_facts() -> CpuFacts:
    """The CPU (probed once)."""
    return _once("cpu", _cpu)


def packages() -> tuple[PackageFact, ...]:
    """Python, this package and the libraries it uses, in report order (probed once)."""
    return _once("packages", lambda: tuple(PackageFact(k, v)
                                           for k, v in software_versions().items()))


def _trt_flavours() -> tuple[Any, ...]:
    """The imported :class:`~xception_trt.trt.TensorRTFlavour` objects (module included;
    remembered by ``trt``, whose builder reads them too)."""
    from .trt import probed_flavours

    return probed_flavours()


def flavours() -> tuple[FlavourFact, ...]:
    """TensorRT flavours that import here, in preference order (each imported once)."""
    return tuple(FlavourFact(f.name, f.version) for f in _trt_flavours())


def _cuda_bindings() -> tuple[CudaBindingFact, ...]:
    from .trt.cuda import backend_status

    versions = {p.name: p.version for p in packages()}
    return tuple(CudaBindingFact(name, versions.get(name), why)
                 for name, why in backend_status().items())


def cuda_bindings() -> tuple[CudaBindingFact, ...]:
    """The CUDA Python bindings and whether each imports (probed once; touches no GPU)."""
    return _once("cuda_bindings", _cuda_bindings)


def devices() -> DeviceReport:
    """The NVIDIA driver and GPUs (:func:`xception_trt.trt.devices.query_devices`, asked once
    per process; remembered by ``trt``, whose builder reads it too)."""
    from .trt.devices import probed_devices

    return probed_devices()


def _dla() -> int:
    from .trt.devices import query_dla_cores

    nvidia = next((f for f in _trt_flavours() if f.name == "tensorrt"), None)
    return query_dla_cores(nvidia) if nvidia is not None and devices().gpus else 0


def dla_cores() -> int:
    """DLA cores NVIDIA TensorRT reports on this machine's GPU (0 without NVIDIA TensorRT, a
    GPU or DLA; probed once)."""
    return _once("dla_cores", _dla)


def _ort() -> OrtFacts:
    if importlib.util.find_spec("onnxruntime") is None:
        return OrtFacts(None)
    try:
        ort = importlib.import_module("onnxruntime")
        return OrtFacts(str(ort.__version__), tuple(ort.get_available_providers()))
    except Exception as exc:  # a broken install is reported as missing
        log.debug("onnxruntime does not import: %s", exc)
        return OrtFacts(None)


def ort_facts() -> OrtFacts:
    """ONNX Runtime's version and providers (imports it if installed; probed once)."""
    return _once("onnxruntime", _ort)


def onnx_installed() -> bool:
    """Whether the ``onnx`` package is installed (not imported; probed once)."""
    return _once("onnx", lambda: importlib.util.find_spec("onnx") is not None)


def git_revision() -> str | None:
    """The git revision of this package's checkout, if any (probed once)."""
    return _once("git_revision", _git_revision)


def machine_facts() -> MachineFacts:
    """Every fact (each part probed once per process; see the table above)."""
    return MachineFacts(platform_facts(), cpu_facts(), packages(), flavours(), cuda_bindings(),
                        devices(), dla_cores(), ort_facts(), onnx_installed(), git_revision())


# ---------------------------------------------------------------------------------------------
# the JSON of `info --json` and of a report's "system"


def system_facts(*, probe_gpus: bool = True) -> dict[str, Any]:
    """Machine and software facts as a JSON-ready dict (CPU, its INT8 features, cores, load
    average now, GPUs, driver, versions): ``info --json`` and a report's ``system``.

    TensorRT flavours are reported by import-free package metadata; ``trt_importable`` says
    which of them actually import (a PyPI ``tensorrt`` stub is installed but does not). The
    load average is read now; everything else is probed once per process.
    """
    plat, cpu = platform_facts(), cpu_facts()
    facts: dict[str, Any] = {
        "platform": plat.platform,
        "machine": plat.machine,
        "python_executable": plat.python_executable,
        "cpu": cpu.model,
        # INT8 on ONNX Runtime's CPU kernels is fast with VNNI/AMX: every report says which
        "cpu_int8": {"vnni": cpu.int8.vnni, "amx": cpu.int8.amx, "flags": list(cpu.int8.flags)},
        "cpu_count": cpu.count,
        "load_average": load_average(),
        "software": {p.name: p.version for p in packages()},
        "git_revision": git_revision(),
        "trt_importable": {f.name: f.version for f in flavours()},
    }
    if probe_gpus:
        facts["devices"] = devices().to_dict()
    return facts
