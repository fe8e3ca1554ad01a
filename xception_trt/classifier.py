"""The application API: :class:`Classifier` turns images into labelled predictions with any
model file (engine, ONNX or checkpoint) through the runner registry::

    clf = Classifier("xception.engine")
    clf.classify(["cat.jpg"], top_k=5)  # [[Prediction(label='tabby', index=281, probability=...)]]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import check_int
from .contract import Runner
from .errors import ConfigError, DataError
from .jsonable import JsonMixin, json_field, reorder
from .runners import open_runner

__all__ = ["Classifier", "Prediction", "StreamResult", "softmax", "DEFAULT_BATCH_SIZE"]

#: Images per runner call when neither the caller nor a tuned configuration says.
DEFAULT_BATCH_SIZE = 32


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Prediction(JsonMixin):
    """One class of a classification result.

    Attributes:
        label: Class name.
        index: Class index (logit position).
        probability: Softmax probability in [0, 1].
    """

    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class StreamResult(JsonMixin):
    """The classification of one video frame (see :meth:`Classifier.stream`).

    Attributes:
        index: Frame position in the source (0-based).
        timestamp: Presentation time in seconds (``None`` for folders and iterables).
        predictions: Top-``k`` classes, most probable first.
        latency_ms: Frame decoded -> result ready, in milliseconds.
        image: The decoded RGB frame when ``keep_frames=True``, else ``None``.
        path: The image file of the frame when the source is an image folder, else ``None``
            (JSON: ``file``, left out when ``None``).
    """

    index: int = json_field(key="frame")
    timestamp: float | None = json_field()
    predictions: tuple[Prediction, ...] = json_field()
    latency_ms: float = json_field(round=3)
    image: np.ndarray | None = json_field(default=None, skip=True)  # JSON: without the image
    path: str | None = json_field(default=None, key="file", omit_none=True)

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        return reorder(out, "frame", "file", "timestamp", "latency_ms")


def _is_single_image(x: Any) -> bool:
    from PIL import Image

    if isinstance(x, (str, os.PathLike, bytes, Image.Image)):
        return True
    return isinstance(x, np.ndarray) and x.ndim in (2, 3)


class Classifier:
    """Classify images with any model file (engine, ONNX, bundle or checkpoint).

    Preprocessing follows the model's own :class:`ModelSpec` (from the checkpoint, the ONNX
    metadata or the engine sidecar) and the runner's input format (uint8 NHWC or normalised
    float NCHW), so every backend gets exactly what it expects.

    A bundle opened on the machine where ``xception-trt tune`` recorded a configuration for
    it runs that configuration (precision, runner, threads ...; see :func:`open_runner`)
    unless an option says otherwise, and its batch size is the default ``batch_size``;
    ``tuned=False`` ignores it.

    Args:
        path: A model file, or an already open :class:`Runner` (then the caller owns it).
        batch_size: Images per runner call (capped at the runner's ``max_batch``; ``None``:
            the batch size of a bundle's throughput or energy tune, else 32).
        **runner_kw: Options for :func:`open_runner` (``tuned=False``: ignore a bundle's
            tuned configuration).

    Raises:
        EngineError / GraphError / CheckpointError: The model cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str] | Runner, *, batch_size: int | None = None,
                 **runner_kw: Any) -> None:
        if batch_size is not None:
            check_int(batch_size, "batch_size")
        if isinstance(path, (str, os.PathLike)):
            self.runner: Runner = open_runner(path, **runner_kw)
            self._owns = True
        else:
            if runner_kw:
                raise ConfigError("runner options cannot be given with an already open runner")
            self.runner = path
            self._owns = False
        #: The tuned configuration the runner used (a bundle's; ``None``: none).
        self.tuned = getattr(self.runner, "tuned", None)
        if batch_size is None:
            batch_size = (self.tuned.default_batch if self.tuned is not None else None) \
                or DEFAULT_BATCH_SIZE
        cap = self.runner.max_batch
        self.batch_size = min(batch_size, cap) if cap else batch_size
        self.spec = self.runner.spec
        self.class_names = self.spec.class_names()

    def preprocess(self, images: Sequence[Any]) -> np.ndarray:
        """Decode and preprocess images into the runner's input layout and dtype.

        Raises:
            DataError: An image cannot be read (the message names it).
        """
        from .preprocess import preprocess_batch

        return preprocess_batch(images, self.spec, self.runner.input_format)

    def logits(self, images_or_paths: Any) -> np.ndarray:
        """Float32 logits ``(N, num_classes)`` for one image or a sequence of images."""
        images = [images_or_paths] if _is_single_image(images_or_paths) else list(images_or_paths)
        if not images:
            raise DataError("no images to classify; give at least one image or path")
        out = []
        for start in range(0, len(images), self.batch_size):
            out.append(self.runner(self.preprocess(images[start:start + self.batch_size])))
        return np.concatenate(out, axis=0)

    def classify(self, images_or_paths: Any, top_k: int = 5) -> list[list[Prediction]]:
        """Top-``k`` classes of each image.

        Args:
            images_or_paths: One image or a sequence of images: paths, encoded bytes, PIL
                images or uint8 HxWxC arrays.
            top_k: Classes per image, most probable first (capped at the model's classes).

        Returns:
            One list of :class:`Prediction` per image, in input order.

        Raises:
            ConfigError: ``top_k`` out of range.
            DataError: No images, or an image cannot be read.
            EngineError: The runner fails.
        """
        top_k = min(check_int(top_k, "top_k"), self.spec.num_classes)
        probs = softmax(self.logits(images_or_paths))
        return [self._top(row, top_k) for row in probs]

    def classify_each(self, images: Sequence[Any], top_k: int = 5
                      ) -> Iterator[tuple[Any, list[Prediction] | DataError]]:
        """Classify many images, an unreadable one not stopping the others: yields
        ``(image, predictions)``, or ``(image, error)`` for an image that cannot be read, in
        input order, one batch of ``batch_size`` images at a time.

        Args:
            images: Paths, encoded bytes, PIL images or uint8 HxWxC arrays.
            top_k: Classes per image, most probable first (capped at the model's classes).

        Raises:
            ConfigError: ``top_k`` out of range.
            EngineError: The runner fails.
        """
        top_k = min(check_int(top_k, "top_k"), self.spec.num_classes)
        images = list(images)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            rows: list[np.ndarray | DataError] = []
            for image in chunk:
                try:
                    rows.append(self.preprocess([image])[0])
                except DataError as exc:
                    rows.append(exc)
            good = [r for r in rows if isinstance(r, np.ndarray)]
            probs = iter(softmax(self.runner(np.stack(good))) if good else ())
            for image, row in zip(chunk, rows):
                yield image, (row if isinstance(row, DataError)
                              else self._top(next(probs), top_k))

    def _top(self, probs: np.ndarray, top_k: int) -> list[Prediction]:
        idx = np.argsort(-probs, kind="stable")[:top_k]
        return [Prediction(self.class_names[i], int(i), float(probs[i])) for i in idx]

    def stream(self, source: Any, *, top_k: int = 5, batch: int | None = None,
               max_wait_ms: float = 10.0,
               live: bool | None = None, stall_timeout: float = 10.0, keep_frames: bool = False,
               on_status: Callable[[Any], None] | None = None,
               on_end: Callable[[Any], None] | None = None,
               stop: Any = None) -> Iterator[StreamResult]:
        """Classify every frame of a video, camera, stream URL or image folder, pipelined
        (decoding, preprocessing and inference overlap; see :mod:`xception_trt.stream`).

        Args:
            source: A video file, an image folder, a camera (``/dev/videoN`` or its index), a
                URL FFmpeg reads (``rtsp://...``), or an iterable of uint8 HxWxC images.
            top_k: Classes per frame (capped at the model's classes).
            batch: Frames per runner call (1: lowest latency; more: higher throughput;
                ``None``: the batch size of a bundle's throughput or energy tune, else 1).
            max_wait_ms: Longest wait for a batch to fill, in milliseconds.
            live: Drop stale frames (``None``: cameras and live URLs yes, files no).
            stall_timeout: Seconds without a frame before the stream counts as stalled.
            keep_frames: Attach each decoded frame to its result (for drawing on it).
            on_status: Called about once a second with a
                :class:`~xception_trt.stream.StreamStats` of the last second.
            on_end: Called once with the totals when the stream ends, fails or is closed.
            stop: A ``threading.Event``; setting it ends the stream cleanly between frames
                (what a Ctrl-C handler should do).

        Yields:
            One :class:`StreamResult` per frame, in source order (a frame that cannot be
            decoded is logged and skipped; dropped live frames yield nothing).

        Raises:
            ConfigError: A parameter out of range.
            DataError: The source cannot be opened, fails or stalls (results before that were
                already yielded).
            DependencyError: Video needs PyAV: ``pip install 'xception-trt[stream]'``.
            EngineError: The runner fails.
        """
        from .stream import open_source, run_stream

        top_k = min(check_int(top_k, "top_k"), self.spec.num_classes)
        if batch is None:
            batch = (self.tuned.default_batch if self.tuned is not None else None) or 1
        src = open_source(source, live=live, timeout=stall_timeout)
        try:
            outputs = run_stream(self.runner, src, batch=batch, max_wait_ms=max_wait_ms,
                                 stall_timeout=stall_timeout, keep_frames=keep_frames,
                                 on_status=on_status, on_end=on_end, stop_event=stop)
        except BaseException:
            src.close()
            raise
        with contextlib.closing(outputs):
            for out in outputs:
                yield StreamResult(out.index, out.timestamp,
                                   tuple(self._top(softmax(out.logits), top_k)),
                                   out.latency_ms, out.image, out.path)

    def close(self) -> None:
        """Close the runner if this classifier opened it (idempotent)."""
        if self._owns:
            self.runner.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
