"""Calibration data: choosing the images (seeded selection, held-out split for ``--auto``),
validating preprocessed arrays, and writing them as the ``batch_*.npz`` files the ModelOpt
worker reads."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import InputFormat
from ..errors import CalibrationError, DataError
from ..onnx_meta import OnnxMeta
from .source import input_shape

__all__ = ["CalibSet", "select_calibration", "holdout"]

log = logging.getLogger(__name__)


@dataclass
class CalibSet:
    """A selected calibration set: its identity now, its batches once :meth:`write` ran."""

    source: Any  # Dataset or np.ndarray
    fingerprint: str
    selected: int
    count: int = 0
    skipped: tuple[tuple[str, str], ...] = ()

    def _reporter(self, progress: Callable[[str, int, int | None], None] | None
                  ) -> Callable[[int], None]:
        if progress is None:
            return _no_progress
        return lambda n: progress("decode calibration images", n, self.selected)

    def write(self, meta: OnnxMeta, *, batch_size: int, static_batch: int | None,
              directory: Path,
              progress: Callable[[str, int, int | None], None] | None = None) -> None:
        """Preprocess and write the batches as ``batch_*.npz`` in ``directory``; ``progress``
        gets ``("decode calibration images", images written, images selected)``."""
        from ..data import BatchLoader

        size = static_batch or batch_size
        if isinstance(self.source, np.ndarray):
            self.count = _write_batches(_rebatch([self.source], size, static=bool(static_batch)),
                                        directory, self._reporter(progress))
            return
        loader = BatchLoader(self.source, meta.spec, batch_size=size,
                             input_format=meta.input_format, on_error="skip")
        self.count = _write_batches(
            _rebatch((b.data for b in loader), size, static=bool(static_batch)), directory,
            self._reporter(progress))
        self.skipped = tuple((str(p), r) for p, r in loader.failures)
        if self.count == 0:
            first = f" (first: {self.skipped[0][0]}: {self.skipped[0][1]})" if self.skipped else ""
            raise CalibrationError(
                f"none of the {self.selected} calibration image(s) could be used{first}; give "
                "a folder of readable images")
        if static_batch and self.count < self.selected - len(self.skipped):
            log.warning("calibration: the graph's batch is fixed at %d, so %d image(s) of a "
                        "partial last batch are left out", static_batch,
                        self.selected - len(self.skipped) - self.count)


def _no_progress(n: int) -> None:
    pass


def _write_batches(batches: Iterable[np.ndarray], directory: Path,
                   progress: Callable[[int], None]) -> int:
    n = 0
    for i, batch in enumerate(batches):
        np.savez(directory / f"batch_{i:05d}.npz", input=batch)
        n += int(batch.shape[0])
        progress(n)
    return n


def _rebatch(arrays: Iterable[np.ndarray], size: int, *, static: bool) -> Iterable[np.ndarray]:
    """Regroup arrays into batches of ``size`` (a static graph drops a partial tail)."""
    pending: list[np.ndarray] = []
    have = 0
    for arr in arrays:
        pending.append(arr)
        have += arr.shape[0]
        while have >= size:
            cat = np.concatenate(pending)
            yield cat[:size]
            rest = cat[size:]
            pending, have = ([rest] if rest.shape[0] else []), rest.shape[0]
    if have and not static:
        yield np.concatenate(pending)


def select_calibration(data: Any, meta: OnnxMeta, *, num_images: int, seed: int,
                        static_batch: int | None) -> CalibSet:
    """Validate and select the calibration set (nothing is decoded yet).

    Raises:
        CalibrationError: Missing/empty folder, wrong array, fewer images than a fixed batch.
    """
    from ..data import Dataset, open_dataset

    fmt = meta.input_format
    if isinstance(data, np.ndarray):
        want_shape = tuple(input_shape(meta.spec, fmt))
        want_dtype = np.uint8 if fmt is InputFormat.UINT8_NHWC else np.float32
        if data.ndim != 4 or tuple(data.shape[1:]) != want_shape or data.dtype != want_dtype:
            raise CalibrationError(
                f"calibration array must be {np.dtype(want_dtype).name} with shape "
                f"(N, {', '.join(map(str, want_shape))}) for this {fmt.value} graph, got "
                f"{data.dtype} {data.shape}; preprocess images with xception_trt.preprocess")
        if data.shape[0] < 1:
            raise CalibrationError("calibration array is empty; give at least one image")
        if not np.isfinite(data.astype(np.float32, copy=False)).all():
            raise CalibrationError("calibration array holds NaN or Inf values")
        arr = np.ascontiguousarray(data[:num_images])
        if static_batch and arr.shape[0] < static_batch:
            raise CalibrationError(
                f"{arr.shape[0]} calibration image(s) is fewer than the graph's fixed batch "
                f"{static_batch}; give more images or export with a dynamic batch")
        fp = "array:" + hashlib.sha256(arr.tobytes()).hexdigest()
        return CalibSet(arr, fp, int(arr.shape[0]))
    try:
        ds = data if isinstance(data, Dataset) else open_dataset(data)
    except DataError as exc:
        raise CalibrationError(f"calibration data: {exc}") from None
    if not len(ds):
        raise CalibrationError("the calibration data set is empty; give a folder with images")
    ds = ds.select(num_images, seed=seed)
    if len(ds) < num_images:
        log.warning("calibration: only %d image(s) available (asked for %d); using all of them",
                    len(ds), num_images)
    if static_batch and len(ds) < static_batch:
        raise CalibrationError(
            f"{len(ds)} calibration image(s) is fewer than the graph's fixed batch "
            f"{static_batch}; give more images or export with a dynamic batch")
    try:
        fp = ds.fingerprint()
    except DataError as exc:
        raise CalibrationError(f"calibration data: {exc}") from None
    return CalibSet(ds, fp, len(ds))


def holdout(calibration_data: Any, val_data: Any, num_images: int, seed: int
             ) -> tuple[Any, Any]:
    """Calibration and validation sets for ``--auto``: ``val_data`` when given, else the images
    of ``calibration_data`` left out of the calibration selection."""
    from ..data import Dataset, open_dataset

    if val_data is not None:
        return calibration_data, val_data
    if isinstance(calibration_data, np.ndarray):
        raise CalibrationError("auto calibration with a preprocessed array needs val_data")
    try:
        ds = open_dataset(calibration_data)
    except DataError as exc:
        raise CalibrationError(f"calibration data: {exc}") from None
    calib = ds.select(min(num_images, max(1, len(ds) // 2)) if len(ds) <= num_images
                      else num_images, seed=seed)
    chosen = {r.path for r in calib.records}
    rest = tuple(r for r in ds.records if r.path not in chosen)
    if not rest:
        raise CalibrationError(
            f"no images are left over for validation ({len(ds)} image(s), {len(calib)} used "
            "for calibration); give a separate validation set (val_data / --val)")
    log.info("auto: calibrating on %d image(s), validating on the %d held-out one(s)",
             len(calib), len(rest))
    return calib, Dataset(rest, ds.class_names, ds.root, ds.ignored)
