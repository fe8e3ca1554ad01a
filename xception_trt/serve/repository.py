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

The parts live in sibling modules: :mod:`.options` (names, layout, :class:`RepositoryOptions`),
:mod:`.source` (describing an artifact), :mod:`.pbtxt` (config text) and :mod:`.validate`
(schema and cross-checks); this module plans and writes, and re-exports their public names.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from ..errors import ServeError
from ..fsio import temp_sibling
from .options import (
    DEFAULT_MAX_BATCH,
    ENSEMBLE_SUFFIX,
    IMAGE_INPUT_NAME,
    LABELS_FILE,
    PREPROCESS_SUFFIX,
    SPEC_FILE,
    InstanceKind,
    RepositoryOptions,
    ServeBackend,
)
from .pbtxt import classifier_config, ensemble_config, labels_text, preprocess_config, triton_dtype
from .source import ModelSource, SourceKind, describe_model, engine_source_from_sidecar
from .validate import RepositoryInfo, validate_config_text, validate_repository

__all__ = [
    "SourceKind", "ServeBackend", "InstanceKind", "ModelSource", "RepositoryOptions",
    "describe_model", "plan_repository", "write_repository", "validate_config_text",
    "validate_repository", "RepositoryInfo", "IMAGE_INPUT_NAME", "PREPROCESS_SUFFIX",
    "ENSEMBLE_SUFFIX", "LABELS_FILE", "triton_dtype", "engine_source_from_sidecar",
]

log = logging.getLogger(__name__)


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


def _template(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text("utf-8")


#: A planned file: text to write, or a source file to copy.
PlannedFile = str | Path


def plan_repository(source: ModelSource, options: RepositoryOptions) -> dict[str, PlannedFile]:
    """Every file of the repository, keyed by path relative to its root (pure; writes nothing).

    Raises:
        ServeError: The artifact and options do not fit together (e.g. a checkpoint with the
            native backend, a batch larger than the engine profile, a TensorRT-RTX plan for
            Triton's TensorRT backend).
    """
    if source.kind is SourceKind.CHECKPOINT and options.triton_backend is ServeBackend.NATIVE:
        raise ServeError(f"{source.path.name} is a checkpoint: Triton has no native backend for "
                         "it; export it to ONNX first (`xception-trt export`) or serve it with "
                         "the Python backend (--triton-backend python)")
    if (source.kind is SourceKind.ENGINE and options.triton_backend is ServeBackend.NATIVE
            and source.flavour == "tensorrt_rtx"):
        raise ServeError(f"{source.path.name} was built with TensorRT-RTX; Triton's tensorrt_plan "
                         "backend loads plans of NVIDIA TensorRT only — build the engine with "
                         "TensorRT (matching the Triton container's version) or use "
                         "--triton-backend python")
    mbs, pref = _batching(source, options)
    version = str(options.version)
    files: dict[str, PlannedFile] = {}
    name = options.name
    if options.triton_backend is ServeBackend.PYTHON:
        model_file = "model.py"
        files[f"{name}/{version}/model.py"] = _template("python_model.py")
        files[f"{name}/{version}/{source.path.name}"] = source.path
        if source.sidecar is not None:
            files[f"{name}/{version}/{source.path.name}.json"] = source.sidecar
    else:
        model_file = "model.plan" if source.kind is SourceKind.ENGINE else "model.onnx"
        files[f"{name}/{version}/{model_file}"] = source.path
    files[f"{name}/config.pbtxt"] = classifier_config(
        source, options, mbs=mbs, pref=pref, model_file=model_file)
    labels = labels_text(source.spec)
    files[f"{name}/{LABELS_FILE}"] = labels
    if options.ensemble:
        pre = options.preprocess_name
        files[f"{pre}/config.pbtxt"] = preprocess_config(source, options, mbs=mbs)
        files[f"{pre}/{version}/model.py"] = _template("python_preprocess.py")
        files[f"{pre}/{version}/{SPEC_FILE}"] = source.spec.to_json() + "\n"
        ens = options.ensemble_name
        files[f"{ens}/config.pbtxt"] = ensemble_config(source, options, mbs=mbs)
        files[f"{ens}/{LABELS_FILE}"] = labels
        files[f"{ens}/{version}/.keep"] = ""  # Triton needs the version directory to exist
    return files


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
        tmp = temp_sibling(output, directory=True, mode=0o700)
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
            old = temp_sibling(output, directory=True, suffix=".old")
            old.rmdir()
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
