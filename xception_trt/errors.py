"""One exception hierarchy for the whole SDK.

Every error says what went wrong and how to fix it. The CLI turns any
:class:`XceptionTRTError` into one readable line and exit code 2; anything else is a bug.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = [
    "XceptionTRTError",
    "ConfigError",
    "CheckpointError",
    "DataError",
    "ExportError",
    "GraphError",
    "CalibrationError",
    "BuildError",
    "EngineError",
    "BundleError",
    "BenchError",
    "ServeError",
    "DependencyError",
    "renamed",
    "renamed_changes",
    "renamed_attribute",
]



class XceptionTRTError(Exception):
    """Base class of every error raised on purpose by xception-trt."""


class ConfigError(XceptionTRTError, ValueError):
    """A configuration value is invalid (bad size, unknown precision, ...)."""


class CheckpointError(XceptionTRTError):
    """A checkpoint is missing, unreadable, of another architecture or inconsistent."""


class DataError(XceptionTRTError):
    """Images or labels cannot be read or do not form a usable data set."""


class ExportError(XceptionTRTError):
    """Exporting the model to ONNX failed or produced a graph that does not check."""


class GraphError(XceptionTRTError):
    """An ONNX graph is unreadable, unsupported or a cleanup pass failed."""


class CalibrationError(XceptionTRTError):
    """INT8 calibration failed, or a calibration cache is stale or foreign."""


class BuildError(XceptionTRTError):
    """TensorRT could not parse the ONNX or build an engine."""


class EngineError(XceptionTRTError):
    """An engine cannot be loaded or run (version/GPU mismatch, CUDA failure, bad input)."""


class BundleError(EngineError):
    """A bundle (``.xtrt``) is unreadable, tampered with, of a newer format, or lacks what was
    asked (a precision, a member), or its engine cache cannot be written."""


class BenchError(XceptionTRTError):
    """A benchmark or evaluation cannot run or its report cannot be written."""


class ServeError(XceptionTRTError):
    """A Triton model repository cannot be written or the server cannot start."""


class DependencyError(XceptionTRTError, ImportError):
    """An optional dependency is missing; the message names the pip extra to install."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed; "
            f"install it with: pip install 'xception-trt[{extra}]'"
        )


def renamed(old: str, new: str, old_value: Any, new_value: Any, *, where: str,
            unset: Any = None, stacklevel: int = 3) -> Any:
    """The value of a keyword renamed to ``new`` (``old`` still works this release, with a
    :class:`DeprecationWarning`).

    Args:
        old: The deprecated keyword (``"compute_capabilities"``).
        new: Its name now (``"cc"``).
        old_value: What the caller passed as ``old`` (``unset`` when not given).
        new_value: What the caller passed as ``new`` (``unset`` when not given).
        where: The function or class, for messages (``"BuildConfig"``).
        unset: The value that means "not given" (default ``None``).
        stacklevel: As for :func:`warnings.warn`: 3 points at the caller of the function that
            calls this.

    Returns:
        ``old_value`` when only the old keyword was given, else ``new_value``.

    Raises:
        ConfigError: Both were given.
    """
    if old_value is unset:
        return new_value
    if new_value is not unset:
        raise ConfigError(f"{where}: {old}= and {new}= are the same option ({old} is its old "
                          f"name); give only {new}=")
    warnings.warn(f"{where}: {old}= is deprecated; use {new}=", DeprecationWarning,
                  stacklevel=stacklevel)
    return old_value


def renamed_changes(changes: Mapping[str, Any], names: Mapping[str, str], *,
                    where: str) -> dict[str, Any]:
    """``changes`` for a ``replace(**changes)`` method with each old keyword of ``names``
    (old -> new) under its new name (a :class:`DeprecationWarning` pointing at the caller of
    that method). ``dataclasses.replace`` cannot take the old name itself: it copies the new
    field too, so the two would look given together.

    Raises:
        ConfigError: An old keyword and its new name were both given.
    """
    out = dict(changes)
    for old, new in names.items():
        if old in out:
            out[new] = renamed(old, new, out.pop(old), out.get(new, _UNSET), where=where,
                               unset=_UNSET, stacklevel=4)
    return out


_UNSET = object()


def renamed_attribute(cls: type, old: str, new: str) -> None:
    """Give ``cls`` a read-only attribute ``old`` that returns ``new`` with a
    :class:`DeprecationWarning` (for a dataclass field renamed this release, whose old name is
    an init-only keyword: without this, reading the old name would give its default).
    """
    def get(self: Any) -> Any:
        caller = sys._getframe(1)
        if caller.f_globals.get("__name__") == "dataclasses":
            return None  # dataclasses.replace() reads every init-only keyword: "not given"
        warnings.warn(f"{cls.__name__}.{old} is deprecated; use .{new}", DeprecationWarning,
                      stacklevel=2)
        return getattr(self, new)

    setattr(cls, old, property(get, doc=f"Old name of :attr:`{new}` (deprecated)."))
