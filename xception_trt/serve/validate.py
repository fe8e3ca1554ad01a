"""Validate a Triton model repository: Triton's ``ModelConfig`` schema plus our cross-checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ServeError

__all__ = ["validate_config_text", "validate_repository", "RepositoryInfo"]

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
