"""xception-trt: deploy the Xception image classifier with NVIDIA TensorRT.

The front door: ``import xception_trt as xt`` gives the names a user needs, loaded lazily
(PEP 562 ``__getattr__``), so the import itself stays as light as a version string — no torch,
ONNX, ONNX Runtime or TensorRT until a name that needs them is used::

    import xception_trt as xt
    result = xt.build("xception.safetensors", "engines/", precisions=["fp16", "int8"],
                      calibration="calib/")
    with xt.Classifier(result.engine("fp16")) as clf: print(clf.classify(["cat.jpg"], top_k=5))

``dir(xt)`` lists the public names (:data:`__all__`). Everything else lives in the submodules
(the module map is in docs/contributing.md); ``import xception_trt`` works without TensorRT,
CUDA or a GPU, and the runtime names (``Classifier``, ``open_runner``) without the build toolchain:
optional imports happen inside :mod:`xception_trt.trt` or inside functions, through
:func:`xception_trt.extras.needs`, which names the pip extra to install when one is missing.
"""

from __future__ import annotations

from .extras import lazy_exports

__version__ = "0.1.0"

#: Front-door name -> the submodule that defines it (imported on first use).
_EXPORTS: dict[str, str] = {
    # the main job: checkpoint or ONNX -> variants -> engines
    "build": "pipeline",
    "BuildResult": "pipeline",
    "build_engine": "trt.builder",
    # models and export
    "build_xception": "model",
    "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
    "export_onnx": "export",
    # precision variants
    "to_fp16": "precision",
    "quantize_int8": "precision",
    "auto_quantize_int8": "precision",
    "ort_int8": "precision",
    "sensitivity": "precision.sensitivity",
    "targeted_int8": "precision.targeted",
    # bundles
    "write_bundle": "bundler",
    "Bundle": "bundle",
    "diagnose": "bundle.doctor",
    # running models
    "Classifier": "classifier",
    "Prediction": "classifier",
    "open_runner": "runners",
    "Runner": "contract",
    # measuring
    "benchmark_runner": "bench",
    "evaluate": "bench",
    "BenchConfig": "bench",
    "write_report": "report",
    "machine_facts": "sysinfo",
    "tune": "tuning",
    "TuneResult": "tuning",
    # configuration: data classes and closed sets
    "ModelSpec": "config",
    "BuildConfig": "config",
    "CalibrationOptions": "config",
    "RunnerOptions": "runners",
    "TrainConfig": "config",
    "Precision": "config",
    "InputFormat": "config",
    "Placement": "config",
    "Flavour": "config",
    "CalibrationMethod": "precision",
    # errors: one base class, one subclass per stage
    "XceptionTRTError": "errors",
    "ConfigError": "errors",
    "CheckpointError": "errors",
    "DataError": "errors",
    "ExportError": "errors",
    "GraphError": "errors",
    "CalibrationError": "errors",
    "BuildError": "errors",
    "EngineError": "errors",
    "BundleError": "errors",
    "BenchError": "errors",
    "ServeError": "errors",
    "DependencyError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


# PEP 562: a name imports its submodule on first use (extras.lazy_exports).
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
