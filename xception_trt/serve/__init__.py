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

    write_repository("model.onnx", "repo", options=RepositoryOptions(backend="python"))
    with TritonServer("repo") as server, TritonClient(server.http_url) as client:
        logits = client.infer("xception", batch)
"""

from __future__ import annotations

from .client import Classification, ModelStats, TritonClient, read_metrics
from .repository import (InstanceKind, ModelSource, RepositoryInfo, RepositoryOptions,
                         ServeBackend, SourceKind, describe_model, plan_repository,
                         validate_config_text, validate_repository, write_repository)
from .server import (TritonDistribution, TritonServer, container_command, find_tritonserver,
                     free_port)

__all__ = [
    "Classification", "ModelStats", "TritonClient", "read_metrics",
    "InstanceKind", "ModelSource", "RepositoryInfo", "RepositoryOptions", "ServeBackend",
    "SourceKind", "describe_model", "plan_repository", "validate_config_text",
    "validate_repository", "write_repository",
    "TritonDistribution", "TritonServer", "container_command", "find_tritonserver", "free_port",
]
