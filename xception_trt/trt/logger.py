"""The one TensorRT logger of the package (builder, runtime, self-test).

TensorRT calls ``log`` from C++: it must never raise. Errors are kept (``errors`` / :meth:`take`)
and surface in the exception the failing call raises, so they are logged at DEBUG only here;
warnings go to :mod:`logging` as warnings, everything else at DEBUG. With ``capture_layers`` the
verbose ``Layers:`` summary of a TensorRT-RTX build is kept in ``layers_text``.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["make_logger"]

log = logging.getLogger(__name__)


def make_logger(trt: Any, *, capture_layers: bool = False) -> Any:
    """A ``trt.ILogger`` forwarding to :mod:`logging` that keeps TensorRT's error messages.

    Args:
        trt: The TensorRT module (``tensorrt`` or ``tensorrt_rtx``).
        capture_layers: Keep the verbose per-layer summary (``layers_text``); otherwise verbose
            messages are dropped before formatting.

    Returns:
        The logger, with ``errors: list[str]``, ``layers_text: str | None`` and ``take()``
        (the last three errors joined, clearing the list).
    """
    sev = trt.ILogger.Severity
    error_levels = {int(sev.INTERNAL_ERROR), int(sev.ERROR)}
    warning, verbose = int(sev.WARNING), int(sev.VERBOSE)

    class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.layers_text: str | None = None

        def log(self, severity: Any, msg: str) -> None:
            try:
                level = int(severity)
                if level == verbose:
                    if capture_layers and msg.startswith("Layers:\n"):
                        self.layers_text = msg
                    return
                if level in error_levels:
                    self.errors.append(str(msg).strip())
                    log.debug("TensorRT error: %s", msg)
                elif level == warning:
                    log.warning("TensorRT: %s", msg)
                else:
                    log.debug("TensorRT: %s", msg)
            except Exception:  # noqa: BLE001 - never raise into TensorRT
                pass

        def take(self) -> str:
            text = " | ".join(self.errors[-3:])
            self.errors.clear()
            return text

    return _Logger()
