"""Serve xception-trt models with NVIDIA Triton Inference Server.

- :mod:`~xception_trt.serve.repository`: generate and validate a model repository from an engine
  (``tensorrt_plan``), an ONNX file (``onnxruntime_onnx``) or, through the Python backend, any
  model our Runner opens; optionally an ensemble that takes encoded images. Its parts:
  :mod:`~xception_trt.serve.options` (names, layout, options), :mod:`~xception_trt.serve.source`
  (describing an artifact), :mod:`~xception_trt.serve.pbtxt` (config text) and
  :mod:`~xception_trt.serve.validate` (schema and cross-checks).
- :mod:`~xception_trt.serve.server`: run the ``tritonserver`` bundled in ``nvidia-pytriton``.
- :mod:`~xception_trt.serve.client`: ``tritonclient`` helpers (logits, top-k names, images,
  statistics, metrics).

Example::

    from xception_trt.serve import RepositoryOptions, TritonServer, TritonClient, write_repository

    write_repository("model.onnx", "repo", options=RepositoryOptions(triton_backend="python"))
    with TritonServer("repo") as server, TritonClient(server.http_url) as client:
        logits = client.infer("xception", batch)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..extras import lazy_exports

# Public name -> the submodule that defines it, imported on first use: the CLI reads the option
# enums (ServeBackend, InstanceKind) while building its parser, and must not pay for numpy and
# the client/server modules on every command.
_EXPORTS = {
    "Classification": "client", "ModelStats": "client", "TritonClient": "client",
    "read_metrics": "client",
    "InstanceKind": "options", "RepositoryOptions": "options", "ServeBackend": "options",
    "ModelSource": "source", "SourceKind": "source", "describe_model": "source",
    "RepositoryInfo": "validate", "validate_config_text": "validate",
    "validate_repository": "validate",
    "plan_repository": "repository", "write_repository": "repository",
    "TritonDistribution": "server", "TritonServer": "server", "container_command": "server",
    "find_tritonserver": "server", "free_port": "server",
}

__all__ = [
    "Classification", "ModelStats", "TritonClient", "read_metrics",
    "InstanceKind", "ModelSource", "RepositoryInfo", "RepositoryOptions", "ServeBackend",
    "SourceKind", "describe_model", "plan_repository", "validate_config_text",
    "validate_repository", "write_repository",
    "TritonDistribution", "TritonServer", "container_command", "find_tritonserver", "free_port",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())  # PEP 562


if TYPE_CHECKING:
    from .client import Classification, ModelStats, TritonClient, read_metrics
    from .options import InstanceKind, RepositoryOptions, ServeBackend
    from .repository import plan_repository, write_repository
    from .server import (
        TritonDistribution,
        TritonServer,
        container_command,
        find_tritonserver,
        free_port,
    )
    from .source import ModelSource, SourceKind, describe_model
    from .validate import RepositoryInfo, validate_config_text, validate_repository
