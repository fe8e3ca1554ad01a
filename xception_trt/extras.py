"""Which pip extra brings each optional package, and one way to say so when it is missing.

The core install (NumPy, Pillow, tqdm, psutil) runs built engines: ``infer``, ``bench`` and
``selftest`` on a Jetson need nothing else but the TensorRT and CUDA binding that JetPack
provides. The toolchain that exports, quantizes, trains and builds comes with the ``build``
extra, ONNX Runtime with ``ort``, the report plots with ``plot``. An import of one of those
packages goes through :func:`needs`, so that a core-only install answers with a
:class:`~xception_trt.errors.DependencyError` naming the package and the extra (the CLI prints
it as one ``error:`` line, exit 2) instead of an ImportError traceback.

TensorRT, TensorRT-RTX and the CUDA bindings are not listed here: ``xception_trt.trt`` says
how to get them (JetPack on a Jetson, pip elsewhere).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .errors import DependencyError

__all__ = ["EXTRAS", "missing", "needs", "ensure", "lazy_exports"]

#: Import name -> (pip package, the xception-trt extra that installs it). Keep in step with
#: pyproject.toml's [project.optional-dependencies].
EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("torch", "build"),
    "safetensors": ("safetensors", "build"),
    "onnx": ("onnx", "onnx"),  # alone on a device: reading ONNX, building engines from it
    "onnxscript": ("onnxscript", "build"),
    "onnx_graphsurgeon": ("onnx-graphsurgeon", "build"),
    "modelopt": ("nvidia-modelopt", "build"),
    "ml_dtypes": ("ml_dtypes", "build"),
    "onnxslim": ("onnxslim", "build"),
    "lief": ("lief", "build"),
    "polygraphy": ("polygraphy", "build"),
    "onnxruntime": ("onnxruntime", "ort"),
    "matplotlib": ("matplotlib", "plot"),
    "sklearn": ("scikit-learn", "demo"),
    "h5py": ("h5py", "keras"),
    "tritonclient": ("tritonclient[http,grpc]", "serve"),
    "pytriton": ("nvidia-pytriton", "serve"),
    "pynvml": ("nvidia-ml-py", "power"),
    "av": ("av", "stream"),
    "huggingface_hub": ("huggingface-hub", "hub"),
}


def _error(module: str, purpose: str, extra: str | None) -> DependencyError | None:
    entry = EXTRAS.get(module.split(".")[0])
    if entry is None:
        return None
    package, own_extra = entry
    return DependencyError(package, extra or own_extra, purpose)


def missing(exc: ImportError, *, purpose: str, extra: str | None = None
            ) -> DependencyError | None:
    """The :class:`DependencyError` for an import that failed because an optional package of
    ours is absent, or ``None`` when the missing module is not one of :data:`EXTRAS` (a
    broken install or a bug: let it propagate).

    Args:
        exc: The error raised by the import.
        purpose: What needed the package, for the message (``"exporting to ONNX"``).
        extra: The extra to name instead of the package's own (a feature that needs several
            extras' packages names the one extra that brings them all).
    """
    if isinstance(exc, DependencyError):  # raised by a needs() further down
        return exc if extra is None else DependencyError(exc.package, extra, purpose)
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    return _error(exc.name, purpose, extra)


@contextlib.contextmanager
def needs(purpose: str, *, extra: str | None = None) -> Iterator[None]:
    """Run the imports in the ``with`` block; a missing optional package becomes a
    :class:`DependencyError` that names it and its extra.

    Args:
        purpose: What the imports are for, for the message (``"the PyTorch model"``).
        extra: The extra to name instead of the package's own (see :func:`missing`).

    Raises:
        DependencyError: A package of :data:`EXTRAS` is not installed.
    """
    try:
        yield
    except ImportError as exc:
        err = missing(exc, purpose=purpose, extra=extra)
        if err is None:
            raise
        if err is exc:
            raise
        raise err from None


def ensure(*modules: str, purpose: str, extra: str | None = None) -> None:
    """Check that modules are installed without importing them (for work done in a
    subprocess, such as ModelOpt's, whose import must not happen here).

    Args:
        modules: Import names, each a key of :data:`EXTRAS`.
        purpose: What needs them, for the message.
        extra: The extra to name instead of each package's own.

    Raises:
        DependencyError: The first of ``modules`` that is not installed.
    """
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise (_error(module, purpose, extra)
                   or DependencyError(module, extra or "build", purpose))


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """PEP 562 ``__getattr__`` and ``__dir__`` for a package whose public names live in its
    submodules: a name's submodule is imported on first use and the value cached in the
    package, so importing the package itself stays light.

    Args:
        package: The package's ``__name__``.
        exports: Public name -> the submodule (relative to ``package``) that defines it.
        namespace: The package's ``globals()`` (the cache).

    Returns:
        ``(__getattr__, __dir__)``; ``__dir__`` lists ``namespace["__all__"]``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(namespace["__all__"])

    return __getattr__, __dir__
