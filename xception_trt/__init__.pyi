"""Type stub of the front door (:mod:`xception_trt`): what static tools and IDEs see.

The package resolves these names lazily at run time (``__getattr__``); a test checks that this
stub and ``_EXPORTS`` list the same names.
"""
from typing import Any

from .bench import BenchConfig as BenchConfig
from .bench import benchmark_runner as benchmark_runner
from .bench import evaluate as evaluate
from .bundle import Bundle as Bundle
from .bundle.doctor import diagnose as diagnose
from .bundler import write_bundle as write_bundle
from .checkpoint import load_model as load_model
from .checkpoint import save_checkpoint as save_checkpoint
from .classifier import Classifier as Classifier
from .classifier import Prediction as Prediction
from .config import BuildConfig as BuildConfig
from .config import CalibrationOptions as CalibrationOptions
from .config import Flavour as Flavour
from .config import InputFormat as InputFormat
from .config import ModelSpec as ModelSpec
from .config import Placement as Placement
from .config import Precision as Precision
from .config import TrainConfig as TrainConfig
from .contract import Runner as Runner
from .errors import BenchError as BenchError
from .errors import BuildError as BuildError
from .errors import BundleError as BundleError
from .errors import CalibrationError as CalibrationError
from .errors import CheckpointError as CheckpointError
from .errors import ConfigError as ConfigError
from .errors import DataError as DataError
from .errors import DependencyError as DependencyError
from .errors import EngineError as EngineError
from .errors import ExportError as ExportError
from .errors import GraphError as GraphError
from .errors import ServeError as ServeError
from .errors import XceptionTRTError as XceptionTRTError
from .export import export_onnx as export_onnx
from .model import build_xception as build_xception
from .pipeline import BuildResult as BuildResult
from .pipeline import build as build
from .precision import CalibrationMethod as CalibrationMethod
from .precision import auto_quantize_int8 as auto_quantize_int8
from .precision import ort_int8 as ort_int8
from .precision import quantize_int8 as quantize_int8
from .precision import to_fp16 as to_fp16
from .precision.sensitivity import sensitivity as sensitivity
from .precision.targeted import targeted_int8 as targeted_int8
from .report import write_report as write_report
from .runners import RunnerOptions as RunnerOptions
from .runners import open_runner as open_runner
from .sysinfo import machine_facts as machine_facts
from .trt.builder import build_engine as build_engine
from .tuning import TuneResult as TuneResult
from .tuning import tune as tune

__version__: str
__all__: list[str]
_EXPORTS: dict[str, str]

def __getattr__(name: str) -> Any: ...
def __dir__() -> list[str]: ...
