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

Adding a field: add it to :class:`EngineSidecar` (with a default, so older sidecars still load)
and set it where the builder constructs the sidecar. ``to_dict`` and ``from_dict`` follow the
dataclass fields through :mod:`xception_trt.jsonable` (the field name is the JSON key, tuples
are lists, enums their values); give it ``json_field(...)`` options only if its JSON must differ.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import InputFormat, ModelSpec, Precision
from .errors import ConfigError, EngineError
from .fsio import sha256_file
from .jsonable import JsonMixin, from_json, json_field, to_json

__all__ = ["SIDECAR_SCHEMA", "EngineSidecar", "EngineFile", "TensorRTInfo", "BuildDevice",
           "TensorRecord", "Profile", "sidecar_path", "read_sidecar", "model_facts"]

#: Version of the sidecar layout this package writes and reads.
SIDECAR_SCHEMA = 1

_REBUILD = "rebuild the engine with `xception-trt build`"
#: What a sidecar without a rebuild command says (none was ever written without one).
_DEFAULT_REBUILD = "xception-trt build MODEL.onnx -o engines/"


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    """``<engine>.json``: where an engine's sidecar lives."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


@dataclass(frozen=True)
class EngineFile(JsonMixin):
    """The plan file: name, size in bytes and SHA-256."""

    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class TensorRTInfo(JsonMixin):
    """Which TensorRT built the engine, and the build plan it followed.

    Attributes:
        flavour: ``tensorrt`` or ``tensorrt_rtx``.
        version: That module's ``__version__``.
        plan: The rest of the build plan (``strongly_typed``, flags, notes ...).
    """

    flavour: str
    version: str
    plan: Mapping[str, Any] = json_field(skip=True, default_factory=dict)

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        # one flat JSON object: the plan's keys next to flavour and version
        return {**to_json(self.plan), **out}

    @classmethod
    def _json_decode(cls, data: Any) -> TensorRTInfo:
        if not isinstance(data, Mapping):
            raise TypeError("the tensorrt section is not a JSON object")
        return cls(str(data["flavour"]), str(data["version"]),
                   {k: v for k, v in data.items() if k not in ("flavour", "version")})


@dataclass(frozen=True)
class BuildDevice(JsonMixin):
    """The GPU an engine was built on: name, compute capability (``"8.7"``) and ordinal."""

    name: str
    compute_capability: str
    index: int | None = None


@dataclass(frozen=True)
class TensorRecord(JsonMixin):
    """An engine input or output: name, NumPy dtype name and shape (``-1`` = dynamic)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Profile(JsonMixin):
    """The optimisation profile's input shapes (min = opt = max for a fixed-shape graph)."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class EngineSidecar(JsonMixin):
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
    xception_trt_version: str = ""  # "" = unknown (the builder records its __version__)
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
            return from_json(cls, data, schema=schema, model_spec=spec, input_format=fmt,
                             precision=precision,
                             rebuild_command=str(data.get("rebuild_command") or _DEFAULT_REBUILD))
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            raise EngineError(f"{where} is invalid ({type(exc).__name__}: {exc}); "
                              f"{_REBUILD}") from None

    @classmethod
    def from_json(cls, text: str, *, where: str = "the engine sidecar") -> "EngineSidecar":
        """Parse sidecar JSON text (see :meth:`from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EngineError(f"{where} is unreadable ({exc}); {_REBUILD}") from None
        except RecursionError:
            raise EngineError(f"{where} is unreadable (JSON nested too deeply); "
                              f"{_REBUILD}") from None
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

