"""Triton Python-backend model that serves an xception-trt Runner (copied as
``<model>/1/model.py``).

The artifact (engine + sidecar, ONNX file or checkpoint) sits next to this file; the config's
parameters name it (``xception_trt.artifact``) and give :func:`xception_trt.runners.open_runner`
keyword arguments as JSON (``xception_trt.runner_options``). With dynamic batching Triton hands
``execute`` several requests at once: they are concatenated into one batch, run through the
Runner in one call (in chunks of the Runner's max batch), and split back per request.

The Python backend stub must be able to import ``xception_trt`` (and the Runner's libraries):
install xception-trt into the server's Python environment or point the model's
``EXECUTION_ENV_PATH`` parameter at an environment that has it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:  # provided by Triton's Python backend stub; absent when this file is imported elsewhere
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - exercised only inside Triton
    pb_utils = None

PARAM_PREFIX = "xception_trt."


def model_parameters(model_config: dict) -> dict[str, str]:
    """The ``parameters`` of a parsed model config as ``{key: string_value}``."""
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


def merge_requests(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Concatenate per-request batches along axis 0; return the batch and per-request sizes."""
    counts = [int(a.shape[0]) for a in arrays]
    batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    return np.ascontiguousarray(batch), counts


def split_results(logits: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Split a batch of outputs back into per-request arrays (inverse of :func:`merge_requests`)."""
    if int(logits.shape[0]) != sum(counts):
        raise RuntimeError(f"runner returned {logits.shape[0]} rows for {sum(counts)} inputs")
    bounds = np.cumsum([0, *counts])
    return [logits[bounds[i]:bounds[i + 1]] for i in range(len(counts))]


def run_chunked(runner: Any, batch: np.ndarray, max_batch: int | None) -> np.ndarray:
    """Run ``runner`` over ``batch`` in chunks of at most ``max_batch`` rows."""
    if not max_batch or batch.shape[0] <= max_batch:
        return np.asarray(runner(batch))
    parts = [np.asarray(runner(batch[i:i + max_batch]))
             for i in range(0, batch.shape[0], max_batch)]
    return np.concatenate(parts, axis=0)


class TritonPythonModel:
    """Triton entry point: one Runner per model instance."""

    def initialize(self, args: dict) -> None:
        from xception_trt.runners import RUNNERS, open_runner, runner_kind

        self.model_config = json.loads(args["model_config"])
        params = model_parameters(self.model_config)
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        artifact = version_dir / params[PARAM_PREFIX + "artifact"]
        options = json.loads(params.get(PARAM_PREFIX + "runner_options") or "{}")
        # GPU instances pin the Runner to their GPU; ONNX Runtime picks its provider itself.
        if args.get("model_instance_kind") == "GPU" and "device" not in options:
            gpu = int(args.get("model_instance_device_id", 0))
            # the registry knows which runners take a device and in which form
            entry = RUNNERS[runner_kind(artifact)]
            if entry.device_option is not None:
                options["device"] = entry.device_option(gpu)
        self.runner = open_runner(artifact, **options)
        self.input_name = self.model_config["input"][0]["name"]
        self.output_name = self.model_config["output"][0]["name"]
        out_cfg = pb_utils.get_output_config_by_name(self.model_config, self.output_name)
        self.output_dtype = pb_utils.triton_string_to_numpy(out_cfg["data_type"])
        pb_utils.Logger.log_info(
            f"xception-trt: {args['model_name']} instance {args['model_instance_name']} serves "
            f"{artifact.name} with {self.runner.name} on {self.runner.device}")

    def execute(self, requests: list) -> list:
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy()
                  for r in requests]
        try:
            batch, counts = merge_requests(arrays)
            logits = run_chunked(self.runner, batch, getattr(self.runner, "max_batch", None))
            parts = split_results(logits, counts)
        except Exception as exc:  # one failed batch must not take the model instance down
            error = pb_utils.TritonError(f"xception-trt runner failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(
                    self.output_name, part.astype(self.output_dtype, copy=False))])
                for part in parts]

    def finalize(self) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.close()
