"""Triton repository options: model names, layout constants, backend and instance choices.

:class:`RepositoryOptions` says how a repository is laid out and configured (model name,
backend, batching, instances); the constants name the files and tensors every model of ours uses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

from ..config import StrEnum, check_int
from ..errors import ConfigError, renamed, renamed_attribute

__all__ = [
    "ServeBackend", "InstanceKind", "RepositoryOptions", "IMAGE_INPUT_NAME", "PREPROCESS_SUFFIX",
    "ENSEMBLE_SUFFIX", "LABELS_FILE", "SPEC_FILE", "PARAM_PREFIX", "DEFAULT_MAX_BATCH",
]

#: Name of the encoded-image input of the preprocessing model and the ensemble.
IMAGE_INPUT_NAME = "image"
PREPROCESS_SUFFIX = "_preprocess"
ENSEMBLE_SUFFIX = "_image"
LABELS_FILE = "labels.txt"
SPEC_FILE = "model_spec.json"
#: Prefix of the ``parameters`` our Python-backend models read.
PARAM_PREFIX = "xception_trt."
#: Default ``max_batch_size`` for a model whose graph has a dynamic batch and no profile.
DEFAULT_MAX_BATCH = 32
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ServeBackend(StrEnum):
    """How Triton runs the classifier.

    ``native``: Triton's own TensorRT (``tensorrt_plan``) or ONNX Runtime (``onnxruntime_onnx``)
    backend. ``python``: Triton's Python backend running our Runner (TensorRT, ONNX Runtime or
    torch), which needs ``xception-trt`` importable by the Python backend stub.
    """

    NATIVE = "native"
    PYTHON = "python"


class InstanceKind(StrEnum):
    """Where model instances run (Triton ``instance_group.kind``); ``auto`` picks per model."""

    AUTO = "auto"
    GPU = "gpu"
    CPU = "cpu"


def _at_least_one(value: Any, name: str) -> int:
    """:func:`check_int` (>= 1), worded as these options' errors always were ("an integer >= 1")."""
    try:
        return check_int(value, name)
    except ConfigError:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}") from None


@dataclass(frozen=True)
class RepositoryOptions:
    """How to lay out and configure a Triton model repository.

    Attributes:
        name: Triton model name of the classifier; the preprocessing model and the ensemble
            are named ``<name>_preprocess`` and ``<name>_image``.
        triton_backend: ``native`` (Triton's TensorRT / ONNX Runtime backend) or ``python``
            (our Runner inside Triton's Python backend; the only option for checkpoints). Old
            name ``backend=`` (deprecated).
        ensemble: Also write the image-bytes preprocessing model and the ensemble.
        max_batch_size: Triton ``max_batch_size``; ``None`` takes the engine profile's max batch,
            or 32 for a dynamic-batch ONNX/checkpoint. Must not exceed the engine's max batch.
        dynamic_batching: Let Triton merge concurrent requests into batches.
        preferred_batch_sizes: Batch sizes the dynamic batcher aims for (each <=
            ``max_batch_size``); empty = the engine's opt batch (engines) or none.
        max_queue_delay_us: Longest a request waits for a batch to fill, in microseconds.
        instance_count: Model instances per device (per GPU for GPU instances).
        instance_kind: ``auto`` (engines, or any model when ``gpus`` are named, on GPU; ONNX:
            Triton's KIND_AUTO natively, CPU in the Python backend), ``gpu`` or ``cpu``.
        gpus: GPU indices for GPU instances; empty = every visible GPU.
        execution_env_path: Python-backend ``EXECUTION_ENV_PATH`` (a conda-pack tarball or an
            environment directory holding xception-trt), or ``None`` for the server's default.
        runner_options: Keyword arguments for :func:`xception_trt.runners.open_runner` inside
            the Python-backend model (e.g. ``{"threads": 2}``), JSON-serialisable.
        preprocess_instances: Instances of the preprocessing model (CPU).
        version: Model version directory number.
    """

    name: str = "xception"
    # None: not given (so that it and the old keyword together are refused), then native
    triton_backend: ServeBackend = None  # type: ignore[assignment]
    ensemble: bool = False
    max_batch_size: int | None = None
    dynamic_batching: bool = True
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    instance_count: int = 1
    instance_kind: InstanceKind = InstanceKind.AUTO
    gpus: tuple[int, ...] = ()
    execution_env_path: str | None = None
    runner_options: Mapping[str, Any] = field(default_factory=dict)
    preprocess_instances: int = 1
    version: int = 1
    backend: InitVar[ServeBackend | str | None] = None  # old name of triton_backend

    def __post_init__(self, backend: ServeBackend | str | None) -> None:
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        backend = renamed("backend", "triton_backend", backend, self.triton_backend,
                          where="RepositoryOptions", stacklevel=4)
        set_("triton_backend", ServeBackend.NATIVE if backend is None else backend)

        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigError(f"model name {self.name!r} is not a valid Triton model name; use "
                              "letters, digits, '_', '-' and '.', starting with a letter or digit")
        set_("triton_backend", ServeBackend.parse(self.triton_backend))
        set_("instance_kind", InstanceKind.parse(self.instance_kind))
        for key in ("instance_count", "preprocess_instances", "version"):
            set_(key, _at_least_one(getattr(self, key), key))
        if self.max_batch_size is not None:
            set_("max_batch_size", _at_least_one(self.max_batch_size, "max_batch_size"))
        set_("max_queue_delay_us", check_int(self.max_queue_delay_us,
                                             "max_queue_delay_us (microseconds)", minimum=0))
        try:
            pref = tuple(int(b) for b in self.preferred_batch_sizes)
            gpus = tuple(int(g) for g in self.gpus)
        except (TypeError, ValueError):
            raise ConfigError("preferred_batch_sizes and gpus must be sequences of integers") \
                from None
        if any(b < 1 for b in pref):
            raise ConfigError(f"preferred batch sizes must be >= 1, got {list(pref)}")
        if self.max_batch_size is not None and any(b > self.max_batch_size for b in pref):
            raise ConfigError(f"preferred batch sizes {list(pref)} exceed max_batch_size "
                              f"{self.max_batch_size}; lower them or raise max_batch_size")
        if pref and not self.dynamic_batching:
            raise ConfigError("preferred batch sizes need dynamic batching; drop them or "
                              "enable dynamic batching")
        if any(g < 0 for g in gpus):
            raise ConfigError(f"GPU indices must be >= 0, got {list(gpus)}")
        if gpus and self.instance_kind is InstanceKind.CPU:
            raise ConfigError("GPU indices were given for CPU instances; drop --gpus or use "
                              "--instance-kind gpu")
        set_("preferred_batch_sizes", tuple(sorted(set(pref))))
        set_("gpus", gpus)
        try:
            json.dumps(dict(self.runner_options))
        except (TypeError, ValueError):
            raise ConfigError(f"runner_options must be a JSON-serialisable mapping, got "
                              f"{self.runner_options!r}") from None
        set_("runner_options", dict(self.runner_options))
        if self.execution_env_path is not None:
            set_("execution_env_path", str(self.execution_env_path))

    @property
    def preprocess_name(self) -> str:
        """Name of the image-bytes preprocessing model."""
        return self.name + PREPROCESS_SUFFIX

    @property
    def ensemble_name(self) -> str:
        """Name of the ensemble that takes encoded images."""
        return self.name + ENSEMBLE_SUFFIX


renamed_attribute(RepositoryOptions, "backend", "triton_backend")
