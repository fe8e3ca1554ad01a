"""The engine sidecar: the typed record of how a TensorRT engine was built.

Every engine ``<name>.engine`` comes with ``<name>.engine.json`` (:func:`sidecar_path`). This
module is the only place that parses or writes that JSON: the builder creates an
:class:`EngineSidecar`, and the runtime, the compatibility check, the Triton exporter, the
pipeline and the CLI read its typed fields. It imports no TensorRT.

JSON layout (schema 1, unchanged since 0.1.0; every key below is written by every build):

- ``schema``, ``xception_trt_version``, ``created`` (UTC ISO time), ``build_seconds``
- ``engine``: ``{"file", "bytes", "sha256"}``
- ``tensorrt``: the build plan (``flavour``, ``version``, ``precision``, ``strongly_typed``,
  ``network_flags``, ``builder_flags``, ``onnx_precisions``, ``notes``)
- ``device``: build GPU ``{"name", "compute_capability", "index"}`` or ``None`` (CPU build);
  ``host``: ``{"platform", "cpu"}`` of the build machine
- ``targets``: TensorRT-RTX compute-capability targets (``["SM86"]``), ``None`` = RTX default
- ``precision``, ``input_format``, ``inputs``/``outputs`` (``[{"name", "dtype", "shape"}]``,
  ``-1`` = dynamic batch), ``profile`` (``{"min", "opt", "max"}`` input shapes; a fixed-shape
  graph records its one shape three times), ``dynamic_batch``, ``max_batch``
- ``onnx``: ``{"path", "sha256", "metadata"}``; ``model_spec`` (ModelSpec dict);
  ``source_sha256``; ``calibration`` (from the ONNX metadata, INT8 only)
- ``build_options`` (:meth:`BuildConfig.to_dict`), ``timing_cache``, ``warnings``
- ``layers`` (``[{"name", "type", "input_dtypes", "output_dtypes", "onnx_layers", "tactic"}]``)
  and ``layers_source`` (``builder log`` / ``engine inspector``) or ``None``
- ``cache_key`` (same key = same engine) and ``rebuild_command``

Adding a field: add it to :class:`EngineSidecar` (with a default, so older sidecars still load),
to :meth:`EngineSidecar.to_dict` and :meth:`EngineSidecar.from_dict`, and set it in the builder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .config import InputFormat, ModelSpec, Precision
from .errors import ConfigError, EngineError
from .fsio import sha256_file

__all__ = ["SIDECAR_SCHEMA", "EngineSidecar", "EngineFile", "TensorRTInfo", "BuildDevice",
           "TensorRecord", "Profile", "sidecar_path", "read_sidecar", "model_facts"]

#: Version of the sidecar layout this package writes and reads.
SIDECAR_SCHEMA = 1

_REBUILD = "rebuild the engine with `xception-trt build`"


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """``<engine>.json``: where an engine's sidecar lives."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


@dataclass(frozen=True)
class EngineFile:
    """The plan file: name, size in bytes and SHA-256."""

    file: str
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "bytes": self.bytes, "sha256": self.sha256}


@dataclass(frozen=True)
class TensorRTInfo:
    """Which TensorRT built the engine, and the build plan it followed.

    Attributes:
        flavour: ``tensorrt`` or ``tensorrt_rtx``.
        version: That module's ``__version__``.
        plan: The rest of the build plan (``strongly_typed``, flags, notes ...).
    """

    flavour: str
    version: str
    plan: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan, "flavour": self.flavour, "version": self.version}


@dataclass(frozen=True)
class BuildDevice:
    """The GPU an engine was built on: name, compute capability (``"8.7"``) and ordinal."""

    name: str
    compute_capability: str
    index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "compute_capability": self.compute_capability,
                "index": self.index}


@dataclass(frozen=True)
class TensorRecord:
    """An engine input or output: name, NumPy dtype name and shape (``-1`` = dynamic)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Profile:
    """The optimisation profile's input shapes (min = opt = max for a fixed-shape graph)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class EngineSidecar:
    """Everything recorded about one engine build (see the module docstring for the JSON).

    The required fields are what some reader needs (runtime, compatibility check, Triton,
    CLI); the informational ones default to empty so that a sidecar with fewer of them loads.
    """

    engine: EngineFile
    tensorrt: TensorRTInfo
    precision: Precision
    input_format: InputFormat
    model_spec: ModelSpec
    rebuild_command: str
    device: BuildDevice | None = None
    targets: tuple[str, ...] | None = None
    build_options: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[TensorRecord, ...] = ()
    outputs: tuple[TensorRecord, ...] = ()
    profile: Profile | None = None
    dynamic_batch: bool = False
    max_batch: int | None = None
    cache_key: str = ""
    schema: int = SIDECAR_SCHEMA
    xception_trt_version: str = __version__
    created: str = ""
    build_seconds: float = 0.0
    host: Mapping[str, Any] = field(default_factory=dict)
    onnx: Mapping[str, Any] = field(default_factory=dict)
    source_sha256: str | None = None
    calibration: Any = None
    timing_cache: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    layers: tuple[Mapping[str, Any], ...] | None = None
    layers_source: str | None = None

    @property
    def flavour(self) -> str:
        """The TensorRT flavour that built the engine."""
        return self.tensorrt.flavour

    def option(self, name: str, default: Any = None) -> Any:
        """One build option (``version_compatible``, ``hardware_compatible`` ...)."""
        return self.build_options.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (schema :data:`SIDECAR_SCHEMA`)."""
        return {
            "schema": self.schema,
            "xception_trt_version": self.xception_trt_version,
            "created": self.created,
            "build_seconds": self.build_seconds,
            "engine": self.engine.to_dict(),
            "tensorrt": self.tensorrt.to_dict(),
            "device": self.device.to_dict() if self.device else None,
            "targets": list(self.targets) if self.targets is not None else None,
            "host": dict(self.host),
            "precision": self.precision.value,
            "input_format": self.input_format.value,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "profile": self.profile.to_dict() if self.profile else None,
            "dynamic_batch": self.dynamic_batch,
            "max_batch": self.max_batch,
            "onnx": dict(self.onnx),
            "model_spec": self.model_spec.to_dict(),
            "source_sha256": self.source_sha256,
            "calibration": self.calibration,
            "build_options": dict(self.build_options),
            "timing_cache": dict(self.timing_cache),
            "warnings": list(self.warnings),
            "layers": [dict(layer) for layer in self.layers] if self.layers is not None else None,
            "layers_source": self.layers_source,
            "cache_key": self.cache_key,
            "rebuild_command": self.rebuild_command,
        }

    def to_json(self) -> str:
        """Indented, key-sorted JSON text with a final newline (what the builder writes)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "the engine sidecar") -> "EngineSidecar":
        """Parse and validate a sidecar dict.

        Args:
            data: The decoded JSON.
            where: How messages name it (the sidecar's path).

        Raises:
            EngineError: Not a sidecar, a newer schema, or a missing/invalid field; the message
                says to rebuild (or to upgrade, for a newer schema).
        """
        if not isinstance(data, Mapping) or "schema" not in data:
            raise EngineError(f"{where} is not an xception-trt engine sidecar; {_REBUILD}")
        schema = data["schema"]
        if isinstance(schema, bool) or not isinstance(schema, int) or schema > SIDECAR_SCHEMA:
            raise EngineError(f"{where} has sidecar schema {schema!r}, newer than this "
                              f"xception-trt ({SIDECAR_SCHEMA}); upgrade: pip install -U "
                              "xception-trt")
        trt = data.get("tensorrt")
        if not isinstance(trt, Mapping) or "flavour" not in trt or "version" not in trt:
            raise EngineError(f"{where} has no TensorRT section (not written by xception-trt?); "
                              f"{_REBUILD}")
        spec, fmt, precision = model_facts(data, where=where)
        try:
            return cls(
                engine=_engine_file(data.get("engine")),
                tensorrt=TensorRTInfo(str(trt["flavour"]), str(trt["version"]),
                                      {k: v for k, v in trt.items()
                                       if k not in ("flavour", "version")}),
                precision=precision,
                input_format=fmt,
                model_spec=spec,
                rebuild_command=str(data.get("rebuild_command")
                                    or "xception-trt build MODEL.onnx -o engines/"),
                device=_device(data.get("device")),
                targets=(tuple(str(t) for t in data["targets"])
                         if data.get("targets") is not None else None),
                build_options=dict(data.get("build_options") or {}),
                inputs=tuple(_tensor(t) for t in data.get("inputs") or ()),
                outputs=tuple(_tensor(t) for t in data.get("outputs") or ()),
                profile=_profile(data.get("profile")),
                dynamic_batch=bool(data.get("dynamic_batch", False)),
                max_batch=(int(data["max_batch"]) if data.get("max_batch") is not None
                           else None),
                cache_key=str(data.get("cache_key") or ""),
                schema=schema,
                xception_trt_version=str(data.get("xception_trt_version") or ""),
                created=str(data.get("created") or ""),
                build_seconds=float(data.get("build_seconds") or 0.0),
                host=dict(data.get("host") or {}),
                onnx=dict(data.get("onnx") or {}),
                source_sha256=data.get("source_sha256"),
                calibration=data.get("calibration"),
                timing_cache=dict(data.get("timing_cache") or {}),
                warnings=tuple(str(w) for w in data.get("warnings") or ()),
                layers=(tuple(dict(layer) for layer in data["layers"])
                        if data.get("layers") is not None else None),
                layers_source=data.get("layers_source"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EngineError(f"{where} is invalid ({type(exc).__name__}: {exc}); "
                              f"{_REBUILD}") from None

    @classmethod
    def from_json(cls, text: str, *, where: str = "the engine sidecar") -> "EngineSidecar":
        """Parse sidecar JSON text (see :meth:`from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EngineError(f"{where} is unreadable ({exc}); {_REBUILD}") from None
        return cls.from_dict(data, where=where)


def model_facts(data: Mapping[str, Any], *, where: str = "the engine sidecar"
                ) -> tuple[ModelSpec, InputFormat, Precision]:
    """The ModelSpec, input format and precision a sidecar dict records.

    Raises:
        EngineError: Any of them is missing or invalid (rebuild the engine).
    """
    try:
        raw_spec = data.get("model_spec")
        if isinstance(raw_spec, str):
            spec = ModelSpec.from_json(raw_spec)
        elif isinstance(raw_spec, Mapping):
            spec = ModelSpec.from_dict(raw_spec)
        else:
            raise ConfigError("no model_spec entry")
        for key in ("input_format", "precision"):
            if key not in data:
                raise ConfigError(f"no {key} entry")
        fmt = InputFormat.parse(data["input_format"])
        precision = Precision.parse(data["precision"])
    except (ConfigError, AttributeError, TypeError) as exc:
        raise EngineError(f"{where} does not describe the model ({exc}); {_REBUILD}") from None
    return spec, fmt, precision


def read_sidecar(engine_path: str | os.PathLike[str], *, verify: bool = False) -> EngineSidecar:
    """Read and validate the sidecar of an engine built by xception-trt.

    Args:
        engine_path: The ``.engine`` file (its sidecar is ``<engine>.json``).
        verify: Also check that the engine file exists and matches the sidecar's SHA-256.

    Raises:
        EngineError: Missing, unreadable, invalid or newer sidecar, or (``verify``) an engine
            that does not match it; the message says how to rebuild.
    """
    engine_path = Path(engine_path)
    side = sidecar_path(engine_path)
    fix = "rebuild it with `xception-trt build MODEL.onnx -o DIR`"
    if not side.is_file():
        raise EngineError(f"{engine_path} has no sidecar {side.name} (not built by xception-trt, "
                          f"or the sidecar was lost); {fix}")
    try:
        text = side.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"the engine sidecar {side} is unreadable ({exc}); {fix}") from None
    sidecar = EngineSidecar.from_json(text, where=str(side))
    if verify:
        if not engine_path.is_file():
            raise EngineError(f"engine {engine_path} does not exist; {fix}")
        if sha256_file(engine_path) != sidecar.engine.sha256:
            raise EngineError(f"engine {engine_path} does not match its sidecar (replaced or "
                              f"truncated since it was built); {fix}")
    return sidecar


def _engine_file(raw: Any) -> EngineFile:
    if not isinstance(raw, Mapping):
        raise KeyError("engine")
    return EngineFile(str(raw["file"]), int(raw["bytes"]), str(raw["sha256"]))


def _device(raw: Any) -> BuildDevice | None:
    if raw is None:
        return None
    index = raw.get("index")
    return BuildDevice(str(raw["name"]), str(raw["compute_capability"]),
                       int(index) if index is not None else None)


def _tensor(raw: Mapping[str, Any]) -> TensorRecord:
    return TensorRecord(str(raw["name"]), str(raw["dtype"]), tuple(int(d) for d in raw["shape"]))


def _profile(raw: Any) -> Profile | None:
    if raw is None:
        return None
    return Profile(*(tuple(int(d) for d in raw[k]) for k in ("min", "opt", "max")))
