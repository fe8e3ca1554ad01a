"""The built-in demo: scikit-learn's handwritten digits through the whole SDK pipeline.

Data set (:mod:`.data`): the UCI "Optical Recognition of Handwritten Digits" test set as
shipped inside the scikit-learn wheel, materialised as ordinary labelled image folders
(``train/``, ``calibration/``, ``validation/``), so the demo reads it with exactly the data code
a user's own folders go through. Nothing is downloaded.

Pipeline (:func:`run_demo`, :mod:`.run`), each step recorded as ran / cached / skipped / failed
with the reason: data -> train (a narrow Xception, cached by data + settings) -> export + graph
cleanup -> FP16 -> INT8 (calibrated Q/DQ, calibration cache; placed for TensorRT, and placed
for ONNX Runtime's CPU kernels from the same images) -> engines (whichever TensorRT flavour
imports; TensorRT-RTX builds on a CPU for explicit targets) -> evaluate (accuracy of every
variant that can run here: torch + ONNX Runtime on the CPU, TensorRT on a GPU that can run it)
-> latency -> report (JSON / Markdown / PNG: results first, why INT8 placed for TensorRT is
slow on ONNX Runtime and whether the ONNX Runtime placement beats FP32 here, the engines, the
step notes). The result names the artifacts and three commands to try next on them. Export,
FP16, INT8 and engines are the stages of :mod:`xception_trt.pipeline`, with its reuse rules.
Nothing is faked: a step that cannot run here is reported as skipped with the reason, a step
that fails as failed with the error. Settings, results and hooks are in :mod:`.config`.
"""

# The public names are each module's __all__ (listed once, there).
from . import config as _config
from . import data as _data
from . import run as _run
from .config import *  # noqa: F403
from .data import *  # noqa: F403
from .run import *  # noqa: F403

__all__ = [*_config.__all__, *_data.__all__, *_run.__all__]
