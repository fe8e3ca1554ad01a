"""Describe a model artifact for serving: what an engine, ONNX file or checkpoint takes and returns.

:func:`describe_model` reads an engine's sidecar, an ONNX file's metadata or a checkpoint's
ModelSpec and returns a :class:`ModelSource`, checked against the tensor names and shapes our
Triton models rely on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import CHECKPOINT_SUFFIXES, InputFormat, ModelSpec, Precision, StrEnum
from ..errors import ServeError, XceptionTRTError
from ..fsio import sha256_file
from ..hub import is_hub_id
from ..onnx_meta import INPUT_NAME, OUTPUT_NAME
from ..sidecar import EngineSidecar

__all__ = ["SourceKind", "ModelSource", "describe_model", "engine_source_from_sidecar"]

_ENGINE_SUFFIXES = (".engine", ".plan")


class SourceKind(StrEnum):
    """What kind of artifact a repository is generated from."""

    ENGINE = "engine"
    ONNX = "onnx"
    CHECKPOINT = "checkpoint"


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
    from ..sidecar import read_sidecar, sidecar_path

    try:
        sidecar = read_sidecar(path, verify=True)
    except XceptionTRTError as exc:
        raise ServeError(str(exc)) from None
    return engine_source_from_sidecar(path, sidecar, sidecar_file=sidecar_path(path))


def engine_source_from_sidecar(path: Path, sidecar: EngineSidecar, *,
                               sidecar_file: Path | None = None) -> ModelSource:
    """Build a :class:`ModelSource` for engine ``path`` from its sidecar.

    Uses the model facts, ``inputs``/``outputs``, the optimisation ``profile`` and the
    TensorRT flavour.

    Raises:
        ServeError: The sidecar lacks the I/O or profile, or the engine's tensors do not match
            the ModelSpec.
    """
    fix = f"rebuild it with `xception-trt build` ({path})"
    spec, fmt, precision = sidecar.model_spec, sidecar.input_format, sidecar.precision
    if sidecar.profile is None:
        raise ServeError(f"the engine sidecar records no optimisation profile; {fix}")
    batches = {k: getattr(sidecar.profile, k)[0] for k in ("min", "opt", "max")}
    inputs = {t.name: t for t in sidecar.inputs}
    outputs = {t.name: t for t in sidecar.outputs}
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise ServeError(f"engine tensors are {sorted(inputs)} -> {sorted(outputs)}, expected "
                         f"{INPUT_NAME!r} -> {OUTPUT_NAME!r}; {fix}")
    dtype = np.dtype(inputs[INPUT_NAME].dtype)
    dims = inputs[INPUT_NAME].shape[1:]
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
                       flavour=sidecar.flavour, sha256=sidecar.engine.sha256)


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
    """Inspect an engine (``.engine``/``.plan`` + sidecar), ONNX file, checkpoint or bundle
    (``.xtrt``: the engine that fits this machine, or its ONNX, in its default precision; see
    :func:`xception_trt.bundle.cache.resolve`) for serving.

    Raises:
        ServeError: Missing or unsupported file, or one without xception-trt metadata.
        BundleError: A bad bundle, or nothing here can run it.
    """
    from ..bundle.format import is_bundle

    if is_hub_id(path):  # the repository needs a file that carries its ModelSpec
        raise ServeError(f"{path} is a Hugging Face Hub id; Triton serves a file: convert it "
                         f"first with `xception-trt convert {path} -o model.safetensors` and "
                         "serve model.safetensors")
    path = Path(path)
    if is_bundle(path) and path.is_file():
        from ..bundle.cache import resolve

        path = resolve(path).path
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
