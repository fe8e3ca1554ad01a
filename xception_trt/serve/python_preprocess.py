"""Triton Python-backend model: encoded images -> model input (copied as
``<model>_preprocess/1/model.py``).

Takes ``image`` (TYPE_STRING, one encoded JPEG/PNG/... per batch row) and returns ``input``
exactly as :func:`xception_trt.preprocess.preprocess_batch` makes it from the
``model_spec.json`` next to this file: float32 NCHW normalised (``float-nchw``) or uint8 NHWC
(``uint8-nhwc``), so served results match the SDK's own preprocessing bit for bit. A request
with an undecodable image gets an error response; the other requests of the batch are served.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

try:  # provided by Triton's Python backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - exercised only inside Triton
    pb_utils = None

PARAM_PREFIX = "xception_trt."
SPEC_FILE = "model_spec.json"


def decode_request(encoded: np.ndarray, spec: Any, input_format: Any) -> np.ndarray:
    """Preprocess one request's images (object/bytes array, shape (N, 1) or (N,))."""
    from xception_trt.preprocess import preprocess_batch

    items = [bytes(x) for x in np.asarray(encoded, dtype=object).reshape(-1)]
    return preprocess_batch(items, spec, input_format)


class TritonPythonModel:
    """Triton entry point for the preprocessing step of the image ensemble."""

    def initialize(self, args: dict) -> None:
        from xception_trt.config import InputFormat, ModelSpec

        self.model_config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "")
                  for k, v in self.model_config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        self.spec = ModelSpec.from_json((version_dir / SPEC_FILE).read_text("utf-8"))
        self.input_format = InputFormat.parse(params.get(PARAM_PREFIX + "input_format",
                                                         "float-nchw"))
        self.image_name = self.model_config["input"][0]["name"]
        self.output_name = self.model_config["output"][0]["name"]

    def execute(self, requests: list) -> list:
        from xception_trt.errors import XceptionTRTError

        responses = []
        for request in requests:
            encoded = pb_utils.get_input_tensor_by_name(request, self.image_name).as_numpy()
            try:
                batch = decode_request(encoded, self.spec, self.input_format)
            except XceptionTRTError as exc:
                # INVALID_ARG makes Triton answer 400 (HTTP) / INVALID_ARGUMENT (gRPC).
                code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
                error = (pb_utils.TritonError(str(exc), code) if code is not None
                         else pb_utils.TritonError(str(exc)))
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(self.output_name, batch)]))
        return responses
