"""Triton Inference Server model repositories: describe a model, generate, validate, write.

A repository is generated in memory (:func:`plan_repository`: file name -> text or source file),
written into a temporary directory next to the destination, validated there
(:func:`validate_repository`: every ``config.pbtxt`` is parsed with Triton's own ``ModelConfig``
protobuf from ``tritonclient`` and cross-checked), and only then renamed into place.

Layout written for a model named ``xception`` (``--ensemble`` adds the last two)::

    model_repository/
      xception/             config.pbtxt, labels.txt, 1/model.plan | 1/model.onnx
                            (Python backend: 1/model.py + 1/<artifact> + sidecar)
      xception_preprocess/  config.pbtxt, 1/model.py, 1/model_spec.json   (image bytes -> tensor)
      xception_image/       config.pbtxt, labels.txt, 1/                  (ensemble of the two)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from .. import __version__
from ..config import InputFormat, ModelSpec, Precision, StrEnum
from ..errors import ConfigError, ServeError, XceptionTRTError
from ..fsio import sha256_file
from ..onnx_meta import INPUT_NAME, OUTPUT_NAME

__all__ = [
    "SourceKind", "ServeBackend", "InstanceKind", "ModelSource", "RepositoryOptions",
    "describe_model", "plan_repository", "write_repository", "validate_config_text",
    "validate_repository", "RepositoryInfo", "IMAGE_INPUT_NAME", "PREPROCESS_SUFFIX",
    "ENSEMBLE_SUFFIX", "LABELS_FILE", "triton_dtype", "engine_source_from_sidecar",
]

log = logging.getLogger(__name__)

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
_ENGINE_SUFFIXES = (".engine", ".plan")

_TRITON_DTYPES = {
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.float16): "TYPE_FP16",
    np.dtype(np.uint8): "TYPE_UINT8",
    np.dtype(np.int8): "TYPE_INT8",
    np.dtype(np.int32): "TYPE_INT32",
    np.dtype(np.int64): "TYPE_INT64",
}


def triton_dtype(dtype: Any) -> str:
    """The Triton ``data_type`` name (``TYPE_FP32`` ...) of a NumPy dtype.

    Raises:
        ServeError: A dtype Triton models of ours never use.
    """
    try:
        return _TRITON_DTYPES[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise ServeError(f"tensor dtype {dtype!r} has no Triton data type mapping here; "
                         "xception-trt models take float32/uint8 and return float32") from None


class SourceKind(StrEnum):
    """What kind of artifact a repository is generated from."""

    ENGINE = "engine"
    ONNX = "onnx"
    CHECKPOINT = "checkpoint"


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


@dataclass(frozen=True)
class ModelSource:
    """What a model artifact takes and returns, as far as serving needs to know.

    Attributes:
        path: The artifact (engine, ONNX file or checkpoint).
        kind: Its kind.
        spec: The model's :class:`ModelSpec` (labels, preprocessing).
        input_format: ``float-nchw`` (float32 N,C,S,S) or ``uint8-nhwc`` (uint8 N,S,S,C).
        precision: Compute precision of the artifact.
        input_dtype: NumPy dtype of the input tensor.
        input_dims: Input shape without the batch dimension.
        num_classes: Number of logits per image.
        fixed_batch: The batch size baked into the graph, or ``None`` when it is dynamic.
        max_batch: Largest batch the artifact accepts (engine profile max), ``None`` = unbounded.
        opt_batch: Batch size the engine was tuned for (profile opt), if known.
        sidecar: The engine sidecar file, copied next to the engine in Python-backend models.
        flavour: ``tensorrt`` or ``tensorrt_rtx`` for engines; ``None`` otherwise.
        sha256: Content hash of ``path``.
    """

    path: Path
    kind: SourceKind
    spec: ModelSpec
    input_format: InputFormat
    precision: Precision
    input_dtype: np.dtype
    input_dims: tuple[int, ...]
    num_classes: int
    fixed_batch: int | None = None
    max_batch: int | None = None
    opt_batch: int | None = None
    sidecar: Path | None = None
    flavour: str | None = None
    sha256: str = ""


@dataclass(frozen=True)
class RepositoryOptions:
    """How to lay out and configure a Triton model repository.

    Attributes:
        name: Triton model name of the classifier; the preprocessing model and the ensemble
            are named ``<name>_preprocess`` and ``<name>_image``.
        backend: ``native`` (Triton's TensorRT / ONNX Runtime backend) or ``python`` (our
            Runner inside Triton's Python backend; the only option for checkpoints).
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
    backend: ServeBackend = ServeBackend.NATIVE
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

    def __post_init__(self) -> None:
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigError(f"model name {self.name!r} is not a valid Triton model name; use "
                              "letters, digits, '_', '-' and '.', starting with a letter or digit")
        set_("backend", ServeBackend.parse(self.backend))
        set_("instance_kind", InstanceKind.parse(self.instance_kind))
        for key in ("instance_count", "preprocess_instances", "version"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be an integer >= 1, got {value!r}")
        if self.max_batch_size is not None and (
                isinstance(self.max_batch_size, bool) or not isinstance(self.max_batch_size, int)
                or self.max_batch_size < 1):
            raise ConfigError(f"max_batch_size must be an integer >= 1, got "
                              f"{self.max_batch_size!r}")
        mqd = self.max_queue_delay_us
        if isinstance(mqd, bool) or not isinstance(mqd, int) or mqd < 0:
            raise ConfigError(f"max_queue_delay_us must be an integer >= 0 (microseconds), "
                              f"got {mqd!r}")
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


# ---------------------------------------------------------------------------------------------
# describing artifacts


def _np_dtype_for_format(fmt: InputFormat) -> np.dtype:
    return np.dtype(np.uint8 if fmt is InputFormat.UINT8_NHWC else np.float32)


def _dims_for(spec: ModelSpec, fmt: InputFormat) -> tuple[int, ...]:
    s, c = spec.input_size, spec.in_chans
    return (s, s, c) if fmt is InputFormat.UINT8_NHWC else (c, s, s)


def _describe_onnx(path: Path) -> ModelSource:
    from ..errors import GraphError
    from ..onnx_meta import load_onnx, read_metadata

    try:
        model = load_onnx(path, load_external_data=False)
        meta = read_metadata(model)
    except GraphError as exc:
        raise ServeError(str(exc)) from None
    import onnx

    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ServeError(f"{path} keeps its weights in external data files; save it as one file "
                         "(onnx.save(model, path, save_as_external_data=False)) before making a "
                         "Triton repository")
    inputs = {i.name: i for i in model.graph.input}
    outputs = {o.name: o for o in model.graph.output}
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise ServeError(f"{path}: expected graph input {INPUT_NAME!r} and output "
                         f"{OUTPUT_NAME!r}, found inputs {sorted(inputs)} and outputs "
                         f"{sorted(outputs)}; re-export with `xception-trt export`")
    ttype = inputs[INPUT_NAME].type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type))
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
    want_dtype = _np_dtype_for_format(meta.input_format)
    want_dims = _dims_for(meta.spec, meta.input_format)
    if dtype != want_dtype or tuple(dims[1:]) != want_dims:
        raise ServeError(f"{path}: input {INPUT_NAME!r} is {dtype} {dims}, but its metadata "
                         f"({meta.input_format}, {meta.spec.input_size}px) implies {want_dtype} "
                         f"[N, {', '.join(map(str, want_dims))}]; re-export the model")
    fixed = dims[0] if dims and dims[0] > 0 else None
    return ModelSource(path=path, kind=SourceKind.ONNX, spec=meta.spec,
                       input_format=meta.input_format, precision=meta.precision,
                       input_dtype=dtype, input_dims=want_dims,
                       num_classes=meta.spec.num_classes, fixed_batch=fixed,
                       max_batch=fixed, sha256=sha256_file(path))


def _describe_engine(path: Path) -> ModelSource:
    from ..trt.builder import read_sidecar, sidecar_path

    try:
        sidecar = read_sidecar(path, verify=True)
    except XceptionTRTError as exc:
        raise ServeError(str(exc)) from None
    return engine_source_from_sidecar(path, sidecar, sidecar_file=sidecar_path(path))


def engine_source_from_sidecar(path: Path, sidecar: Mapping[str, Any], *,
                               sidecar_file: Path | None = None) -> ModelSource:
    """Build a :class:`ModelSource` for engine ``path`` from its sidecar (builder schema 1).

    Uses ``model_spec``, ``input_format``, ``precision``, ``inputs``/``outputs`` and the
    optimisation ``profile`` (``{"min", "opt", "max"}`` input shapes) and ``tensorrt.flavour``.

    Raises:
        ServeError: A key is missing or the engine's tensors do not match the ModelSpec.
    """
    fix = f"rebuild it with `xception-trt build` ({path})"
    try:
        spec = ModelSpec.from_dict(sidecar["model_spec"])
        fmt = InputFormat.parse(sidecar["input_format"])
        precision = Precision.parse(sidecar["precision"])
        profile = sidecar["profile"]
        batches = {k: int(profile[k][0]) for k in ("min", "opt", "max")}
        inputs = {t["name"]: t for t in sidecar["inputs"]}
        outputs = {t["name"]: t for t in sidecar["outputs"]}
        flavour = (sidecar.get("tensorrt") or {}).get("flavour")
    except ConfigError as exc:
        raise ServeError(f"invalid engine sidecar: {exc}; {fix}") from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ServeError(f"the engine sidecar lacks or garbles {exc}; {fix}") from None
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise ServeError(f"engine tensors are {sorted(inputs)} -> {sorted(outputs)}, expected "
                         f"{INPUT_NAME!r} -> {OUTPUT_NAME!r}; {fix}")
    dtype = np.dtype(inputs[INPUT_NAME]["dtype"])
    dims = tuple(int(d) for d in inputs[INPUT_NAME]["shape"][1:])
    if dtype != _np_dtype_for_format(fmt) or dims != _dims_for(spec, fmt):
        raise ServeError(f"engine input {INPUT_NAME!r} is {dtype} {list(dims)} per image, but "
                         f"its ModelSpec and {fmt} imply {_np_dtype_for_format(fmt)} "
                         f"{list(_dims_for(spec, fmt))}; {fix}")
    fixed = batches["max"] if batches["min"] == batches["max"] else None
    if fixed is None and batches["min"] > 1:
        raise ServeError(f"the engine's profile starts at batch {batches['min']}, but Triton "
                         f"sends any batch from 1 to max_batch_size; rebuild with a minimum "
                         f"batch of 1 ({fix})")
    return ModelSource(path=path, kind=SourceKind.ENGINE, spec=spec, input_format=fmt,
                       precision=precision, input_dtype=dtype, input_dims=dims,
                       num_classes=spec.num_classes, fixed_batch=fixed, max_batch=batches["max"],
                       opt_batch=batches["opt"],
                       sidecar=sidecar_file if sidecar_file and sidecar_file.is_file() else None,
                       flavour=str(flavour) if flavour else None,
                       sha256=str((sidecar.get("engine") or {}).get("sha256", "")))


def _describe_checkpoint(path: Path) -> ModelSource:
    from ..checkpoint import read_checkpoint
    from ..errors import CheckpointError

    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as exc:
        raise ServeError(str(exc)) from None
    fmt = InputFormat.FLOAT_NCHW
    return ModelSource(path=path, kind=SourceKind.CHECKPOINT, spec=ckpt.spec, input_format=fmt,
                       precision=Precision.FP32, input_dtype=np.dtype(np.float32),
                       input_dims=_dims_for(ckpt.spec, fmt), num_classes=ckpt.spec.num_classes,
                       sha256=ckpt.sha256)


def describe_model(path: str | os.PathLike[str]) -> ModelSource:
    """Inspect an engine (``.engine``/``.plan`` + sidecar), ONNX file or checkpoint for serving.

    Raises:
        ServeError: Missing or unsupported file, or one without xception-trt metadata.
    """
    from ..checkpoint import CHECKPOINT_SUFFIXES

    path = Path(path)
    if not path.is_file():
        raise ServeError(f"model {path} does not exist; pass an engine (.engine/.plan), an ONNX "
                         "file (.onnx) or a checkpoint (.safetensors/.pth)")
    suffix = path.suffix.lower()
    if suffix in _ENGINE_SUFFIXES:
        return _describe_engine(path)
    if suffix == ".onnx":
        return _describe_onnx(path)
    if suffix in CHECKPOINT_SUFFIXES:
        return _describe_checkpoint(path)
    raise ServeError(f"{path}: cannot serve a {suffix or 'suffix-less'} file; pass an engine "
                     f"(.engine/.plan), an ONNX file (.onnx) or a checkpoint "
                     f"({', '.join(CHECKPOINT_SUFFIXES)})")


# ---------------------------------------------------------------------------------------------
# config text generation (text, not protobuf objects: the text is what ships, and parsing it
# back with Triton's schema is the check)


def _q(text: str) -> str:
    return json.dumps(str(text))  # a JSON string literal is a valid protobuf text string


def _dims(dims: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(int(d)) for d in dims) + " ]"


def _tensor(name: str, dtype: str, dims: tuple[int, ...], *, label_file: str | None = None
            ) -> str:
    parts = [f"name: {_q(name)}", f"data_type: {dtype}", f"dims: {_dims(dims)}"]
    if label_file:
        parts.append(f"label_filename: {_q(label_file)}")
    return "  {\n" + "".join(f"    {p}\n" for p in parts) + "  }"


def _block(key: str, items: list[str]) -> str:
    return f"{key} [\n" + ",\n".join(items) + "\n]\n"


def _parameters(params: Mapping[str, str]) -> str:
    return "".join(f"parameters {{ key: {_q(k)} value: {{ string_value: {_q(v)} }} }}\n"
                   for k, v in params.items())


def _header(source: ModelSource, role: str) -> str:
    return (f"# {role}\n# generated by xception-trt {__version__} from {source.path.name} "
            f"(sha256 {source.sha256[:16]}), {source.precision}, {source.input_format}\n")


def _instance_kind(source: ModelSource, options: RepositoryOptions) -> str:
    kind = options.instance_kind
    if kind is InstanceKind.GPU:
        return "KIND_GPU"
    if kind is InstanceKind.CPU:
        return "KIND_CPU"
    if source.kind is SourceKind.ENGINE or options.gpus:  # GPUs named: GPU instances
        return "KIND_GPU"
    if options.backend is ServeBackend.NATIVE:
        return "KIND_AUTO"
    return "KIND_CPU"


def _instance_group(kind: str, count: int, gpus: tuple[int, ...]) -> str:
    body = f"    count: {count}\n    kind: {kind}\n"
    if gpus and kind == "KIND_GPU":
        body += f"    gpus: {_dims(gpus)}\n"
    return "instance_group [\n  {\n" + body + "  }\n]\n"


def _batching(source: ModelSource, options: RepositoryOptions) -> tuple[int, tuple[int, ...]]:
    """``max_batch_size`` and preferred sizes (validated against the artifact)."""
    if source.fixed_batch is not None:
        if options.dynamic_batching:
            raise ServeError(
                f"{source.path.name} has a fixed batch of {source.fixed_batch}; Triton can batch "
                "requests only for a model with a dynamic batch dimension — re-export / rebuild "
                "with a dynamic batch, or disable dynamic batching (--no-dynamic-batching)")
        if options.max_batch_size not in (None, source.fixed_batch):
            raise ServeError(f"max_batch_size {options.max_batch_size} differs from the fixed "
                             f"batch {source.fixed_batch} of {source.path.name}")
        return 0, ()
    mbs = options.max_batch_size
    if mbs is None:
        mbs = source.max_batch or DEFAULT_MAX_BATCH
    if source.max_batch is not None and mbs > source.max_batch:
        raise ServeError(f"max_batch_size {mbs} exceeds the engine profile's max batch "
                         f"{source.max_batch}; lower it or rebuild the engine with a larger "
                         "profile")
    pref = options.preferred_batch_sizes
    if any(b > mbs for b in pref):
        raise ServeError(f"preferred batch sizes {list(pref)} exceed max_batch_size {mbs}")
    if not pref and options.dynamic_batching and source.opt_batch and 1 < source.opt_batch <= mbs:
        pref = (source.opt_batch,)
    return mbs, pref


def _dynamic_batching(options: RepositoryOptions, pref: tuple[int, ...]) -> str:
    if not options.dynamic_batching:
        return ""
    body = f"  max_queue_delay_microseconds: {options.max_queue_delay_us}\n"
    if pref:
        body = f"  preferred_batch_size: {_dims(pref)}\n" + body
    return "dynamic_batching {\n" + body + "}\n"


def _io_dims(dims: tuple[int, ...], max_batch: int, fixed_batch: int | None) -> tuple[int, ...]:
    # With max_batch_size 0 the batch dimension is part of dims (Triton convention).
    return dims if max_batch > 0 else (int(fixed_batch or 1), *dims)


def _classifier_config(source: ModelSource, options: RepositoryOptions, mbs: int,
                       pref: tuple[int, ...], model_file: str) -> str:
    in_dims = _io_dims(source.input_dims, mbs, source.fixed_batch)
    out_dims = _io_dims((source.num_classes,), mbs, source.fixed_batch)
    head = f"name: {_q(options.name)}\n"
    if options.backend is ServeBackend.PYTHON:
        head += 'backend: "python"\n'
    elif source.kind is SourceKind.ENGINE:
        head += 'platform: "tensorrt_plan"\n'
    else:
        head += 'platform: "onnxruntime_onnx"\n'
    head += f"max_batch_size: {mbs}\n"
    head += f"default_model_filename: {_q(model_file)}\n"
    text = _header(source, "classifier: logits with class labels (classification extension)")
    text += head
    text += _block("input", [_tensor(INPUT_NAME, triton_dtype(source.input_dtype), in_dims)])
    text += _block("output", [_tensor(OUTPUT_NAME, "TYPE_FP32", out_dims,
                                      label_file=LABELS_FILE)])
    text += _dynamic_batching(options, pref)
    text += _instance_group(_instance_kind(source, options), options.instance_count,
                            options.gpus)
    if options.backend is ServeBackend.PYTHON:
        text += _python_parameters(options, {
            PARAM_PREFIX + "artifact": source.path.name,
            PARAM_PREFIX + "runner_options": json.dumps(options.runner_options, sort_keys=True)})
    return text


def _python_parameters(options: RepositoryOptions, params: dict[str, str]) -> str:
    """``parameters`` of a Python-backend model, plus the stub's ``EXECUTION_ENV_PATH``."""
    if options.execution_env_path:
        params = {**params, "EXECUTION_ENV_PATH": options.execution_env_path}
    return _parameters(params)


def _preprocess_config(source: ModelSource, options: RepositoryOptions, mbs: int) -> str:
    text = _header(source, "preprocessing: encoded image bytes (JPEG/PNG/...) -> model input")
    text += f"name: {_q(options.preprocess_name)}\nbackend: \"python\"\nmax_batch_size: {mbs}\n"
    text += _block("input", [_tensor(IMAGE_INPUT_NAME, "TYPE_STRING",
                                     _io_dims((1,), mbs, source.fixed_batch))])
    text += _block("output", [_tensor(INPUT_NAME, triton_dtype(source.input_dtype),
                                      _io_dims(source.input_dims, mbs, source.fixed_batch))])
    text += _instance_group("KIND_CPU", options.preprocess_instances, ())
    text += _python_parameters(options, {PARAM_PREFIX + "input_format": source.input_format.value})
    return text


def _ensemble_config(source: ModelSource, options: RepositoryOptions, mbs: int) -> str:
    text = _header(source, "ensemble: encoded image bytes -> preprocessing -> classifier")
    text += f"name: {_q(options.ensemble_name)}\nplatform: \"ensemble\"\nmax_batch_size: {mbs}\n"
    text += _block("input", [_tensor(IMAGE_INPUT_NAME, "TYPE_STRING",
                                     _io_dims((1,), mbs, source.fixed_batch))])
    text += _block("output", [_tensor(OUTPUT_NAME, "TYPE_FP32",
                                      _io_dims((source.num_classes,), mbs, source.fixed_batch),
                                      label_file=LABELS_FILE)])
    text += (
        "ensemble_scheduling {\n  step [\n"
        "    {\n"
        f"      model_name: {_q(options.preprocess_name)}\n      model_version: -1\n"
        f"      input_map {{ key: {_q(IMAGE_INPUT_NAME)} value: {_q(IMAGE_INPUT_NAME)} }}\n"
        f"      output_map {{ key: {_q(INPUT_NAME)} value: \"preprocessed\" }}\n"
        "    },\n    {\n"
        f"      model_name: {_q(options.name)}\n      model_version: -1\n"
        f"      input_map {{ key: {_q(INPUT_NAME)} value: \"preprocessed\" }}\n"
        f"      output_map {{ key: {_q(OUTPUT_NAME)} value: {_q(OUTPUT_NAME)} }}\n"
        "    }\n  ]\n}\n")
    return text


def _labels_text(spec: ModelSpec) -> str:
    names = spec.class_names()
    bad = [n for n in names if "\n" in n or "\r" in n]
    if bad:
        raise ServeError(f"class label {bad[0]!r} contains a line break; Triton label files hold "
                         "one label per line — fix the labels in the ModelSpec")
    return "".join(f"{n}\n" for n in names)


def _template(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text("utf-8")


#: A planned file: text to write, or a source file to copy.
PlannedFile = Union[str, Path]


def plan_repository(source: ModelSource, options: RepositoryOptions) -> dict[str, PlannedFile]:
    """Every file of the repository, keyed by path relative to its root (pure; writes nothing).

    Raises:
        ServeError: The artifact and options do not fit together (e.g. a checkpoint with the
            native backend, a batch larger than the engine profile, a TensorRT-RTX plan for
            Triton's TensorRT backend).
    """
    if source.kind is SourceKind.CHECKPOINT and options.backend is ServeBackend.NATIVE:
        raise ServeError(f"{source.path.name} is a checkpoint: Triton has no native backend for "
                         "it; export it to ONNX first (`xception-trt export`) or serve it with "
                         "the Python backend (--backend python)")
    if (source.kind is SourceKind.ENGINE and options.backend is ServeBackend.NATIVE
            and source.flavour == "tensorrt_rtx"):
        raise ServeError(f"{source.path.name} was built with TensorRT-RTX; Triton's tensorrt_plan "
                         "backend loads plans of NVIDIA TensorRT only — build the engine with "
                         "TensorRT (matching the Triton container's version) or use "
                         "--backend python")
    mbs, pref = _batching(source, options)
    version = str(options.version)
    files: dict[str, PlannedFile] = {}
    name = options.name
    if options.backend is ServeBackend.PYTHON:
        model_file = "model.py"
        files[f"{name}/{version}/model.py"] = _template("python_model.py")
        files[f"{name}/{version}/{source.path.name}"] = source.path
        if source.sidecar is not None:
            files[f"{name}/{version}/{source.path.name}.json"] = source.sidecar
    else:
        model_file = "model.plan" if source.kind is SourceKind.ENGINE else "model.onnx"
        files[f"{name}/{version}/{model_file}"] = source.path
    files[f"{name}/config.pbtxt"] = _classifier_config(source, options, mbs, pref, model_file)
    labels = _labels_text(source.spec)
    files[f"{name}/{LABELS_FILE}"] = labels
    if options.ensemble:
        pre = options.preprocess_name
        files[f"{pre}/config.pbtxt"] = _preprocess_config(source, options, mbs)
        files[f"{pre}/{version}/model.py"] = _template("python_preprocess.py")
        files[f"{pre}/{version}/{SPEC_FILE}"] = source.spec.to_json() + "\n"
        ens = options.ensemble_name
        files[f"{ens}/config.pbtxt"] = _ensemble_config(source, options, mbs)
        files[f"{ens}/{LABELS_FILE}"] = labels
        files[f"{ens}/{version}/.keep"] = ""  # Triton needs the version directory to exist
    return files


# ---------------------------------------------------------------------------------------------
# validation


def validate_config_text(text: str, *, where: str = "config.pbtxt") -> Any:
    """Parse a ``config.pbtxt`` with Triton's ``ModelConfig`` protobuf (from ``tritonclient``).

    Returns:
        The parsed ``inference.ModelConfig`` message.

    Raises:
        ServeError: Not valid protobuf text for ``ModelConfig`` (unknown field, bad enum value,
            syntax); the message names the file, line and column.
        DependencyError: ``tritonclient`` is not installed.
    """
    from google.protobuf import text_format

    mc = _model_config_pb2()
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ServeError(f"{where} is not a valid Triton model configuration: {exc}") from None


def _model_config_pb2() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        from ..errors import DependencyError

        raise DependencyError("tritonclient[grpc]", "serve",
                              "validating Triton model configurations") from None
    return model_config_pb2


@dataclass(frozen=True)
class RepositoryInfo:
    """A validated repository.

    Attributes:
        root: The repository directory.
        configs: Parsed ``ModelConfig`` per model name.
    """

    root: Path
    configs: Mapping[str, Any]

    @property
    def models(self) -> tuple[str, ...]:
        """Model names, sorted."""
        return tuple(sorted(self.configs))


def _check_model(root: Path, name: str, cfg: Any, mc: Any) -> list[str]:
    problems: list[str] = []
    where = f"{name}/config.pbtxt"
    if cfg.name and cfg.name != name:
        problems.append(f"{where}: name {cfg.name!r} differs from its directory {name!r}")
    is_ensemble = cfg.platform == "ensemble"
    if not (cfg.platform or cfg.backend):
        problems.append(f"{where}: neither platform nor backend is set")
    if cfg.max_batch_size < 0:
        problems.append(f"{where}: max_batch_size must be >= 0")
    if not cfg.input or not cfg.output:
        problems.append(f"{where}: a model needs at least one input and one output")
    for kind, tensors in (("input", cfg.input), ("output", cfg.output)):
        for t in tensors:
            if t.data_type == mc.TYPE_INVALID:
                problems.append(f"{where}: {kind} {t.name!r} has no data_type")
            if not t.dims or any(d == 0 or d < -1 for d in t.dims):
                problems.append(f"{where}: {kind} {t.name!r} has invalid dims {list(t.dims)}")
    for out in cfg.output:
        if out.label_filename:
            label_path = root / name / out.label_filename
            if not label_path.is_file():
                problems.append(f"{where}: label file {out.label_filename!r} is missing")
            else:
                n = len(label_path.read_text("utf-8").splitlines())
                if out.dims and out.dims[-1] > 0 and n != out.dims[-1]:
                    problems.append(f"{where}: {out.label_filename} has {n} labels for "
                                    f"{out.dims[-1]} outputs of {out.name!r}")
    if cfg.HasField("dynamic_batching"):
        if cfg.max_batch_size == 0:
            problems.append(f"{where}: dynamic_batching needs max_batch_size > 0")
        for b in cfg.dynamic_batching.preferred_batch_size:
            if b < 1 or b > cfg.max_batch_size:
                problems.append(f"{where}: preferred_batch_size {b} is outside "
                                f"1..{cfg.max_batch_size}")
    for group in cfg.instance_group:
        if group.count < 1:
            problems.append(f"{where}: instance_group count must be >= 1")
        if group.gpus and group.kind != mc.ModelInstanceGroup.KIND_GPU:
            problems.append(f"{where}: instance_group lists gpus but is not KIND_GPU")
    versions = [p for p in (root / name).iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        problems.append(f"{name}: no numeric version directory (e.g. {name}/1/)")
    if not is_ensemble:
        default = {"tensorrt_plan": "model.plan", "onnxruntime_onnx": "model.onnx"}.get(
            cfg.platform, "model.py" if cfg.backend == "python" else "")
        model_file = cfg.default_model_filename or default
        for v in versions:
            if model_file and not (v / model_file).exists():
                problems.append(f"{name}/{v.name}: model file {model_file!r} is missing")
    return problems


def _check_ensemble(name: str, cfg: Any, configs: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    where = f"{name}/config.pbtxt"
    steps = cfg.ensemble_scheduling.step
    if not steps:
        return [f"{where}: an ensemble needs ensemble_scheduling steps"]
    produced = {t.name for t in cfg.input}
    for i, step in enumerate(steps):
        target = configs.get(step.model_name)
        if target is None:
            problems.append(f"{where}: step {i} uses model {step.model_name!r}, which is not in "
                            "the repository")
            continue
        t_inputs = {t.name for t in target.input}
        t_outputs = {t.name for t in target.output}
        for key, value in step.input_map.items():
            if key not in t_inputs:
                problems.append(f"{where}: step {i} maps unknown input {key!r} of "
                                f"{step.model_name!r} (it has {sorted(t_inputs)})")
            if value not in produced:
                problems.append(f"{where}: step {i} reads tensor {value!r} before any step "
                                "produces it")
        for key, value in step.output_map.items():
            if key not in t_outputs:
                problems.append(f"{where}: step {i} maps unknown output {key!r} of "
                                f"{step.model_name!r} (it has {sorted(t_outputs)})")
            produced.add(value)
        if target.max_batch_size < cfg.max_batch_size:
            problems.append(f"{where}: max_batch_size {cfg.max_batch_size} exceeds that of "
                            f"step model {step.model_name!r} ({target.max_batch_size})")
    for out in cfg.output:
        if out.name not in produced:
            problems.append(f"{where}: ensemble output {out.name!r} is produced by no step")
    return problems


def validate_repository(root: str | os.PathLike[str]) -> RepositoryInfo:
    """Validate every model of a Triton repository (schema parse + cross-checks).

    Checks, per model: ``config.pbtxt`` parses as ``ModelConfig``; its name matches the
    directory; tensors have types and valid dims; label files exist with one line per class;
    dynamic batching fits ``max_batch_size``; a version directory holds the model file. For
    ensembles: every step's model exists and its tensor mappings line up.

    Raises:
        ServeError: Listing every problem found (or the first parse error).
    """
    root = Path(root)
    if not root.is_dir():
        raise ServeError(f"model repository {root} does not exist or is not a directory")
    mc = _model_config_pb2()
    configs: dict[str, Any] = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        config_path = model_dir / "config.pbtxt"
        if not config_path.is_file():
            continue
        configs[model_dir.name] = validate_config_text(
            config_path.read_text("utf-8"), where=f"{model_dir.name}/config.pbtxt")
    if not configs:
        raise ServeError(f"{root} holds no model (no <model>/config.pbtxt)")
    problems: list[str] = []
    for name, cfg in configs.items():
        problems += _check_model(root, name, cfg, mc)
        if cfg.platform == "ensemble":
            problems += _check_ensemble(name, cfg, configs)
    if problems:
        raise ServeError(f"invalid Triton model repository {root}: " + "; ".join(problems))
    return RepositoryInfo(root, configs)


# ---------------------------------------------------------------------------------------------
# writing


def _materialise(files: Mapping[str, PlannedFile], root: Path) -> None:
    for rel, content in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, dest)
        else:
            dest.write_text(content, encoding="utf-8")


def write_repository(model: str | os.PathLike[str] | ModelSource,
                     output: str | os.PathLike[str], *,
                     options: RepositoryOptions | None = None,
                     force: bool = False) -> RepositoryInfo:
    """Generate, validate and atomically write a Triton model repository.

    Args:
        model: An engine (with its sidecar), an ONNX file, a checkpoint, or a described source.
        output: The repository directory to create.
        options: Layout and configuration; defaults to :class:`RepositoryOptions()`.
        force: Replace an existing non-empty ``output``.

    Returns:
        The validated repository.

    Raises:
        ServeError: Bad model, options that do not fit it, a generated config that fails
            validation, or ``output`` exists and is not empty (without ``force``).
    """
    options = options or RepositoryOptions()
    source = model if isinstance(model, ModelSource) else describe_model(model)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ServeError(f"{output} exists and is not a directory; choose another output path")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise ServeError(f"{output} exists and is not empty; choose another directory or pass "
                         "--force to replace it")
    files = plan_repository(source, options)
    parent = output.parent if str(output.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise ServeError(f"cannot write next to {output}: {exc.strerror or exc}; choose a "
                         "writable location") from None
    old: Path | None = None
    try:
        try:
            _materialise(files, tmp)
        except OSError as exc:
            raise ServeError(f"cannot write the repository next to {output}: "
                             f"{exc.strerror or exc}; free space or choose another location") \
                from None
        info = validate_repository(tmp)
        if output.exists():
            old = parent / f".{output.name}.old-{os.getpid()}-{tmp.name[-8:]}"
            os.replace(output, old)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not output.exists():
            os.replace(old, output)  # put the previous repository back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    log.info("wrote Triton repository %s: %s", output, ", ".join(info.models))
    return RepositoryInfo(output, info.configs)
