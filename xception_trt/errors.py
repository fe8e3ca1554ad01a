"""One exception hierarchy for the whole SDK.

Every error says what went wrong and how to fix it. The CLI turns any
:class:`XceptionTRTError` into one readable line and exit code 2; anything else is a bug.
"""

from __future__ import annotations

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
