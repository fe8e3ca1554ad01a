"""FP16 variants: NVIDIA ModelOpt AutoCast with FP32 inputs/outputs.

AutoCast (``convert_to_mixed_precision``), not onnxconverter-common: it runs the FP32 graph on
real (calibration) images and keeps in FP32 every node whose inputs/outputs exceed
``max_activation`` or whose initializers exceed ``max_initializer`` — exactly the "activations
beyond FP16 range on the calibration data" rule — keeps the graph's FP32 input/output
(``keep_io_types``), and is the converter TensorRT's strongly-typed docs point to.
onnxconverter-common only has a static op block list and no data-driven check.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from ..config import Precision, check_int
from ..errors import ConfigError, GraphError
from ..extras import needs
from .calibdata import select_calibration
from .launcher import run_worker, worker_tempdir
from .source import (
    anchored,
    as_model,
    check_exclusions,
    check_source,
    derive_metadata,
    save_model,
    static_batch_of,
)

__all__ = ["to_fp16"]

log = logging.getLogger(__name__)


def _stamp(source: Any) -> tuple[int, ...] | None:
    """Identity and version of the file ``source`` names (device, inode, size, mtime in ns);
    ``None`` for a model object or a path that cannot be read (the load then says why)."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    try:
        st = os.stat(source)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def to_fp16(onnx_model_or_path: Any, calibration_data: Any = None, *, num_images: int = 32,
            seed: int = 0, batch_size: int = 8, max_activation: float = 512.0,
            max_initializer: float = 65504.0, exclude_nodes: Sequence[str] = (),
            exclude_op_types: Sequence[str] = (), output: str | os.PathLike[str] | None = None
            ) -> Any:
    """Convert an FP32 xception-trt graph to FP16 with FP32 inputs/outputs (ModelOpt AutoCast).

    Nodes stay in FP32 when an input/output exceeds ``max_activation`` in magnitude on the
    calibration images (AutoCast's default of 512 leaves headroom for FP16 accumulation, whose
    range ends at 65504), when an initializer exceeds ``max_initializer``, or when named in
    ``exclude_nodes`` (regexes) / ``exclude_op_types``.

    Args:
        onnx_model_or_path: FP32 model or its path (xception-trt metadata required).
        calibration_data: Images for the range check (folder, file list, Dataset or a
            preprocessed array). ``None``: AutoCast's random inputs in [-1, 1].
        num_images: Images used for the range check.
        seed: Selection seed.
        batch_size: Images per reference batch.
        max_activation: Largest |activation| a node may see and still run in FP16.
        max_initializer: Largest |weight| that may be stored in FP16.
        exclude_nodes: Node names or regexes (matched against the whole name) kept in FP32.
        exclude_op_types: Op types kept in FP32.
        output: Optional path to write the model to (atomically).

    Returns:
        The FP16 ``onnx.ModelProto`` (metadata ``precision=fp16``).

    Raises:
        GraphError: Not an FP32 xception-trt graph, or its file changed while converting.
        CalibrationError: Bad calibration data or a ModelOpt failure.
        DependencyError: The build extra (ONNX, ModelOpt) is not installed.
    """
    with needs("FP16 conversion", extra="build"):
        import onnx

    check_int(num_images, "num_images")
    check_int(batch_size, "batch_size")
    if not (max_activation > 0 and max_initializer > 0):
        raise ConfigError("max_activation and max_initializer must be > 0")
    stamp = _stamp(onnx_model_or_path)
    model, path = as_model(onnx_model_or_path)
    meta = check_source(model)
    check_exclusions(model, exclude_nodes, exclude_op_types)
    with worker_tempdir("fp16") as tmp:
        if path is not None and stamp is not None:
            src = path.resolve()  # the worker reads the file itself: no 2nd copy to write
        else:
            src = tmp / "model.onnx"
            onnx.save(model, str(src))
        data_dir = None
        if calibration_data is not None:
            (tmp / "data").mkdir()
            static = static_batch_of(model)
            select_calibration(calibration_data, meta, num_images=num_images, seed=seed,
                                static_batch=static).write(
                meta, batch_size=batch_size, static_batch=static, directory=tmp / "data")
            data_dir = str(tmp / "data")
        out = tmp / "fp16.onnx"
        result = run_worker({
            "task": "fp16", "onnx": str(src), "out": str(out), "tmp_dir": str(tmp),
            "data_dir": data_dir, "data_max": max_activation, "init_max": max_initializer,
            "exclude_nodes": anchored(exclude_nodes), "exclude_op_types": list(exclude_op_types),
        }, what="FP16 conversion")
        fp16 = onnx.load(str(out))
    if stamp is not None and _stamp(path) != stamp:
        raise GraphError(f"{path} changed while it was being converted to FP16; run again "
                         "once nothing writes to it")
    kept = result["fp32_nodes"]
    log.info("FP16: %d node(s) kept in FP32%s (AutoCast, %.1f s)", len(kept),
             f": {', '.join(kept[:8])}" + (" ..." if len(kept) > 8 else "") if kept else "",
             result["seconds"])
    derive_metadata(fp16, meta, Precision.FP16, {"fp16": {
        "converter": f"modelopt.autocast {result['modelopt']}", "fp32_nodes": kept,
        "max_activation": max_activation, "range_check_images": (
            "random" if calibration_data is None else num_images)}})
    if output is not None:
        save_model(fp16, output)
    return fp16
