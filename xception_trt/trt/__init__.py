"""The only package that imports ``tensorrt``, ``tensorrt_rtx`` or CUDA bindings.

Importing this package is cheap and never fails: flavours are probed lazily.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from dataclasses import dataclass
from types import ModuleType

from ..config import Flavour
from ..errors import BuildError

__all__ = ["TensorRTFlavour", "FLAVOURS", "available_flavours", "probed_flavours",
           "import_flavour"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorRTFlavour:
    """An importable TensorRT Python package.

    Attributes:
        name: ``tensorrt`` (NVIDIA TensorRT 8.6/10.x/11.x) or ``tensorrt_rtx`` (TensorRT-RTX).
        module: The imported module.
        version: Its ``__version__``.
    """

    name: str
    module: ModuleType
    version: str

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"


#: Module names in order of preference when no flavour is asked for.
FLAVOURS = tuple(Flavour.choices())


def import_flavour(name: str) -> TensorRTFlavour:
    """Import one TensorRT flavour by module name.

    Raises:
        BuildError: Unknown name, not installed, or installed but broken (e.g. the PyPI
            ``tensorrt`` download stub, or libraries missing); the message says how to fix it.
    """
    if name not in FLAVOURS:
        raise BuildError(f"unknown TensorRT backend {name!r}; choose one of: {', '.join(FLAVOURS)}")
    if importlib.util.find_spec(name) is None:
        hint = ("install NVIDIA TensorRT (JetPack on Jetson; pip install 'xception-trt[trt]' "
                "on desktops)" if name == "tensorrt"
                else "pip install 'xception-trt[rtx]' (TensorRT-RTX)")
        raise BuildError(f"the TensorRT backend '{name}' is not installed; {hint}")
    try:
        module = importlib.import_module(name)
        version = str(module.__version__)
    except Exception as exc:  # a stub package or missing shared libraries
        raise BuildError(f"'{name}' is installed but cannot be imported ({type(exc).__name__}: "
                         f"{exc}); reinstall it or choose another --flavour") from None
    return TensorRTFlavour(name, module, version)


def available_flavours() -> list[TensorRTFlavour]:
    """Every TensorRT flavour that imports here, in preference order (may be empty)."""
    found = []
    for name in FLAVOURS:
        try:
            found.append(import_flavour(name))
        except BuildError as exc:
            log.debug("%s", exc)
    return found


@functools.cache
def probed_flavours() -> tuple[TensorRTFlavour, ...]:
    """:func:`available_flavours`, asked once per process and remembered (a broken or stub
    package is not imported again): what :mod:`xception_trt.sysinfo` and the builder read.
    ``probed_flavours.cache_clear()`` (or :func:`xception_trt.sysinfo.refresh`) forgets it."""
    return tuple(available_flavours())
