"""What a machine offers for running a bundle: TensorRT flavours, driver, GPUs, DLA cores and
ONNX Runtime providers, as plain data (so that the engine choice is a pure function of it and
recorded facts of other machines can stand in for this one in tests and in ``doctor``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..jsonable import JsonMixin
from ..sysinfo import FlavourFact

__all__ = ["FlavourFact", "GpuFact", "DeviceFacts", "probe_facts"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuFact(JsonMixin):
    """A GPU: CUDA ordinal, name, compute capability (``"8.6"``) and whether it is an
    integrated GPU (Jetson: the engine rules differ there, e.g. no hardware-compatible engines
    on JetPack)."""

    index: int
    name: str
    compute_capability: str
    integrated: bool = False

    @property
    def sm(self) -> str:
        """``SM86``-style target name (TensorRT-RTX's spelling)."""
        return "SM" + self.compute_capability.replace(".", "")


@dataclass(frozen=True)
class DeviceFacts(JsonMixin):
    """The facts the engine choice depends on.

    Attributes:
        flavours: TensorRT flavours that import, in preference order.
        gpus: NVIDIA GPUs the driver reports.
        driver: Driver version (``None``: no driver).
        dla_cores: DLA cores NVIDIA TensorRT reports (0 where there are none or it cannot say).
        ort_version: ONNX Runtime's version (``None``: not installed).
        ort_providers: ONNX Runtime's available execution providers.
        onnx: Whether the ``onnx`` package imports (building from the bundled ONNX needs it).
        host: Free-form machine description (platform, name of the recording).
        gpu_reason: Why there is no GPU, when there is none.
    """

    flavours: tuple[FlavourFact, ...] = ()
    gpus: tuple[GpuFact, ...] = ()
    driver: str | None = None
    dla_cores: int = 0
    ort_version: str | None = None
    ort_providers: tuple[str, ...] = ()
    onnx: bool = False
    host: str = ""
    gpu_reason: str = ""

    def flavour(self, name: str) -> FlavourFact | None:
        """The flavour of that name, if it imports here."""
        return next((f for f in self.flavours if f.name == name), None)

    def gpu(self, index: int) -> GpuFact | None:
        """The GPU of that ordinal, if present."""
        return next((g for g in self.gpus if g.index == index), None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceFacts:
        """Parse :meth:`to_dict`'s form (recorded facts of another machine).

        Raises:
            ConfigError: A missing or invalid field.
        """
        try:
            return cls(
                flavours=tuple(FlavourFact(str(f["name"]), str(f["version"]))
                               for f in data.get("flavours") or ()),
                gpus=tuple(GpuFact(int(g["index"]), str(g["name"]),
                                   str(g["compute_capability"]), _flag(g, "integrated"))
                           for g in data.get("gpus") or ()),
                driver=data.get("driver"), dla_cores=int(data.get("dla_cores") or 0),
                ort_version=data.get("ort_version"),
                ort_providers=tuple(str(p) for p in data.get("ort_providers") or ()),
                onnx=bool(data.get("onnx", False)), host=str(data.get("host") or ""),
                gpu_reason=str(data.get("gpu_reason") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid device facts ({type(exc).__name__}: {exc})") from None


def _flag(data: Mapping[str, Any], key: str) -> bool:
    """An optional boolean field (absent: ``False``, as recorded before it existed)."""
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def probe_facts() -> DeviceFacts:
    """This machine's facts, read from :mod:`xception_trt.sysinfo` (each probed once per
    process: the TensorRT flavours and ONNX Runtime are imported if installed, the driver asked,
    NVIDIA TensorRT asked for DLA cores when there is a GPU).

    Never raises for a missing piece: a missing TensorRT, driver or ONNX Runtime is a fact.
    """
    from .. import sysinfo

    report = sysinfo.devices()
    ort = sysinfo.ort_facts()
    return DeviceFacts(
        flavours=sysinfo.flavours(),
        gpus=tuple(GpuFact(g.index, g.name, g.compute_capability, g.integrated)
                   for g in report.gpus),
        driver=report.driver, dla_cores=sysinfo.dla_cores(), ort_version=ort.version,
        ort_providers=ort.providers, onnx=sysinfo.onnx_installed(),
        host=sysinfo.platform_facts().host, gpu_reason=report.reason)
