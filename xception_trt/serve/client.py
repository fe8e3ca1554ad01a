"""Client helpers for a Triton server serving xception-trt models (HTTP or gRPC, ``tritonclient``).

Thin wrappers that speak our tensor names: send a preprocessed batch and get logits, ask for the
top-k class names (Triton's classification extension, from the model's label file), send encoded
images to the ``<name>_image`` ensemble, read per-model statistics and the metrics endpoint.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import DependencyError, ServeError
from ..onnx_meta import INPUT_NAME, OUTPUT_NAME
from .options import IMAGE_INPUT_NAME

__all__ = ["TritonClient", "Classification", "ModelStats", "read_metrics"]

log = logging.getLogger(__name__)

Protocol = Literal["http", "grpc"]


@dataclass(frozen=True)
class Classification:
    """One top-k entry of Triton's classification extension."""

    score: float
    index: int
    label: str


@dataclass(frozen=True)
class ModelStats:
    """Cumulative server statistics of one model.

    Attributes:
        inference_count: Images (batch rows) inferred.
        execution_count: Model executions (batches run); below ``inference_count`` when
            requests were batched together.
        success_count: Successful requests.
        fail_count: Failed requests.
        queue_ns, compute_ns: Total time spent queued and computing, in nanoseconds.
    """

    inference_count: int
    execution_count: int
    success_count: int
    fail_count: int
    queue_ns: int
    compute_ns: int

    @property
    def mean_batch(self) -> float:
        """Average rows per execution (1.0 means no batching happened)."""
        return self.inference_count / self.execution_count if self.execution_count else 0.0


def _modules(protocol: str) -> Any:
    if protocol not in ("http", "grpc"):
        raise ServeError(f"unknown protocol {protocol!r}; choose http or grpc")
    try:
        if protocol == "http":
            import tritonclient.http as mod
        else:
            import tritonclient.grpc as mod
    except ImportError:
        raise DependencyError(f"tritonclient[{protocol}]", "serve",
                              f"talking to Triton over {protocol}") from None
    return mod


class TritonClient:
    """A connection to one Triton server (context manager).

    Args:
        url: ``host:port`` of the HTTP or gRPC endpoint.
        protocol: ``http`` or ``grpc``.
        timeout_s: Network timeout per call, in seconds.
        concurrency: HTTP connection pool size (for use from several threads).
    """

    def __init__(self, url: str, *, protocol: Protocol = "http", timeout_s: float = 60.0,
                 concurrency: int = 1) -> None:
        self.protocol = protocol
        self._mod = _modules(protocol)
        self.url = url
        if protocol == "http":
            self._client = self._mod.InferenceServerClient(
                url, concurrency=concurrency, connection_timeout=timeout_s,
                network_timeout=timeout_s)
        else:
            self._client = self._mod.InferenceServerClient(url)
        self._timeout_s = timeout_s

    @property
    def raw(self) -> Any:
        """The underlying ``tritonclient`` client."""
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kw)
        except InferenceServerException as exc:
            raise ServeError(f"Triton {what} failed at {self.url} ({self.protocol}): "
                             f"{exc.message()} (status {exc.status()})") from None
        except (ConnectionError, OSError) as exc:
            raise ServeError(f"cannot reach Triton at {self.url} ({self.protocol}): {exc}; is "
                             "the server running (`xception-trt serve MODEL`)?") from None

    def is_ready(self, model: str | None = None) -> bool:
        """Whether the server (or one model) is ready."""
        try:
            if model is None:
                return bool(self._client.is_server_ready())
            return bool(self._client.is_model_ready(model))
        except Exception:  # noqa: BLE001 - readiness probe: any failure means "not ready"
            return False

    def _infer(self, model: str, name: str, data: np.ndarray, dtype: str, *,
               class_count: int = 0) -> Any:
        inp = self._mod.InferInput(name, list(data.shape), dtype)
        inp.set_data_from_numpy(data)
        out = self._mod.InferRequestedOutput(OUTPUT_NAME, class_count=class_count)
        kw = {"client_timeout": self._timeout_s} if self.protocol == "grpc" else {}
        return self._call(f"inference on {model!r}", self._client.infer, model, [inp],
                          outputs=[out], **kw)

    def infer(self, model: str, batch: np.ndarray) -> np.ndarray:
        """Send a preprocessed batch (float32 NCHW or uint8 NHWC); return float32 logits (N, C).

        Raises:
            ServeError: The server rejects the request (wrong shape/dtype: the message carries
                Triton's reason) or cannot be reached.
        """
        batch = np.ascontiguousarray(batch)
        result = self._infer(model, INPUT_NAME, batch, _wire_dtype(batch.dtype))
        return result.as_numpy(OUTPUT_NAME)

    def classify(self, model: str, batch: np.ndarray, *, top_k: int = 5,
                 image_bytes: bool = False) -> list[list[Classification]]:
        """Top-k class names per row, computed by the server from the model's label file.

        Args:
            model: The classifier, or the ``<name>_image`` ensemble with ``image_bytes``.
            batch: Preprocessed batch, or (``image_bytes``) an object array of encoded images.
            top_k: Classes per row.
        """
        if image_bytes:
            data = _image_array(batch)
            result = self._infer(model, IMAGE_INPUT_NAME, data, "BYTES", class_count=top_k)
        else:
            batch = np.ascontiguousarray(batch)
            result = self._infer(model, INPUT_NAME, batch, _wire_dtype(batch.dtype),
                                 class_count=top_k)
        rows = result.as_numpy(OUTPUT_NAME)
        out = []
        for row in np.asarray(rows).reshape(rows.shape[0], -1):
            entries = []
            for item in row:
                text = item.decode("utf-8") if isinstance(item, bytes) else str(item)
                score, index, *label = text.split(":", 2)
                entries.append(Classification(float(score), int(index),
                                              label[0] if label else ""))
            out.append(entries)
        return out

    def infer_images(self, model: str, images: Sequence[bytes | str | os.PathLike[str]]
                     ) -> np.ndarray:
        """Send encoded images (bytes or file paths) to an image ensemble; return logits."""
        data = _image_array(images)
        return self._infer(model, IMAGE_INPUT_NAME, data, "BYTES").as_numpy(OUTPUT_NAME)

    def statistics(self, model: str) -> ModelStats:
        """Cumulative statistics of ``model`` (all versions summed)."""
        if self.protocol == "http":
            stats = self._call("statistics", self._client.get_inference_statistics, model)
        else:
            stats = self._call("statistics", self._client.get_inference_statistics, model,
                               as_json=True)
        totals = dict(inference_count=0, execution_count=0, success_count=0, fail_count=0,
                      queue_ns=0, compute_ns=0)
        for entry in stats.get("model_stats", []):
            totals["inference_count"] += int(entry.get("inference_count", 0))
            totals["execution_count"] += int(entry.get("execution_count", 0))
            inf = entry.get("inference_stats", {})
            totals["success_count"] += int(inf.get("success", {}).get("count", 0))
            totals["fail_count"] += int(inf.get("fail", {}).get("count", 0))
            totals["queue_ns"] += int(inf.get("queue", {}).get("ns", 0))
            totals["compute_ns"] += int(inf.get("compute_infer", {}).get("ns", 0))
        return ModelStats(**totals)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()

    def __enter__(self) -> "TritonClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wire_dtype(dtype: Any) -> str:
    """The tritonclient datatype string (``FP32``, ``UINT8`` ...) of a NumPy dtype."""
    from tritonclient.utils import np_to_triton_dtype

    name = np_to_triton_dtype(np.dtype(dtype))
    if name is None:
        raise ServeError(f"cannot send {dtype} tensors to Triton; send float32 or uint8 batches")
    return name


def _image_array(images: Any) -> np.ndarray:
    if isinstance(images, np.ndarray) and images.dtype == object:
        arr = images
    else:
        items = []
        for img in images:
            if isinstance(img, (bytes, bytearray)):
                items.append(bytes(img))
            else:
                with open(img, "rb") as fh:
                    items.append(fh.read())
        arr = np.empty((len(items),), dtype=object)
        arr[:] = items
    if arr.size == 0:
        raise ServeError("no images to send")
    return arr.reshape(-1, 1)


def read_metrics(url: str, *, timeout_s: float = 10.0) -> str:
    """The Prometheus text of Triton's metrics endpoint (``http://host:port/metrics``).

    Raises:
        ServeError: The endpoint does not answer with HTTP 200.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - user URL
            return resp.read().decode("utf-8")
    except OSError as exc:
        raise ServeError(f"Triton metrics endpoint {url} did not answer: {exc}") from None
