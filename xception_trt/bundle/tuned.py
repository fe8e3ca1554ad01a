"""The tuned configuration of a bundle on this machine: what ``xception-trt tune`` chose
(precision variant, runner, batch size, threads, CUDA graphs, DLA core),
recorded so that opening the same bundle on the same machine uses it.

A record lives in the per-user cache beside the engine cache (default
``$XDG_CACHE_HOME/xception-trt/bundles/tuned/``, the ``cache_dir`` of
:func:`xception_trt.bundle.cache.resolve`), one JSON file per bundle path::

    tuned/<sha256 of the bundle's absolute path [:16]>.json

and is keyed like the engine cache: it holds the bundle's digest (:attr:`Bundle.digest`, the
SHA-256 of its manifest, which records every member's hash), the runtime that ran the winner
(TensorRT flavour and version, or ONNX Runtime's version) and the machine facts that decide it
(every fact the search decided on, whichever runner won: the CPU model, its logical cores and
architecture, ONNX Runtime's version and providers, the TensorRT flavours installed and their
versions, the GPUs' names and compute capabilities, the DLA cores — installing TensorRT or
adding a GPU changes what the search would try, so it forgets the choice).
:func:`recorded_choice` returns it only while all three still hold, and otherwise says which
changed in one line. The file is untrusted input like a bundle: an unreadable, oversized,
malformed or mistyped record is ignored with a notice, never a traceback.

Proof level: the ONNX Runtime records ran here (CPU); the TensorRT records are keyed by the
same facts :func:`~xception_trt.bundle.choice.choose` decides on, tested with recorded facts of
GPU machines (no TensorRT runs here).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import MAX_BATCH, Precision, check_int
from ..contract import RunnerKind
from ..errors import BundleError, ConfigError, XceptionTRTError
from ..fsio import atomic_write_json, sha256_bytes
from ..jsonable import JsonMixin, json_field
from .choice import ChoiceKind, Request, choose
from .facts import DeviceFacts, probe_facts
from .format import Bundle

__all__ = ["TunedChoice", "record_choice", "recorded_choice", "tuned_options", "tuned_path",
           "host_cpu", "IGNORE_HINT",
           "TUNED_FORMAT", "TUNED_FORMAT_VERSION", "TUNED_RUNNERS", "OBJECTIVES"]

log = logging.getLogger(__name__)

#: The ``format`` value of every record.
TUNED_FORMAT = "xception-trt-tuned"
#: Version of the record layout this package writes and reads.
TUNED_FORMAT_VERSION = 2  # 2: the machine key holds every fact the search used
#: The runners a tuned choice names.
TUNED_RUNNERS = (RunnerKind.TENSORRT.value, RunnerKind.ONNXRUNTIME.value)
#: What a tune optimises.
OBJECTIVES = ("latency", "throughput", "energy")
#: Largest record read (bytes): a real one is about a kilobyte.
MAX_RECORD_BYTES = 1 << 20
#: Bounds of the recorded counts (a record is untrusted: no count reaches a runner unchecked).
MAX_THREADS = 1024
MAX_DLA_CORE = 15
#: Largest number of headline numbers kept, and longest text in a record.
_MAX_MEASURED = 64
_MAX_TEXT = 4096


def _text(value: Any, what: str) -> str:
    """A short printable string (a record's text reaches a log line)."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > _MAX_TEXT or not value.isprintable():
        raise ConfigError(f"{what} must be printable text of at most {_MAX_TEXT} characters")
    return value


def _measured(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"TunedChoice.measured must be a mapping, got {type(value).__name__}")
    if len(value) > _MAX_MEASURED:
        raise ConfigError(f"TunedChoice.measured holds {len(value)} entries (at most "
                          f"{_MAX_MEASURED})")
    out: dict[str, Any] = {}
    for key, v in value.items():
        _text(key, "a TunedChoice.measured key")
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"TunedChoice.measured[{key!r}] must be finite, got {v!r}")
        if isinstance(v, str):
            _text(v, f"TunedChoice.measured[{key!r}]")
        elif v is not None and not isinstance(v, (bool, int, float)):
            raise ConfigError(f"TunedChoice.measured[{key!r}] must be a number, text, true/false "
                              f"or null, got {type(v).__name__}")
        out[key] = v
    return types.MappingProxyType(out)


@dataclass(frozen=True)
class TunedChoice(JsonMixin):
    """The configuration ``tune`` chose for a bundle on a machine.

    Attributes:
        precision: The bundle variant that won.
        runner: ``"tensorrt"`` (an engine: prebuilt or built into the engine cache) or
            ``"onnxruntime"`` (the bundled ONNX on ONNX Runtime).
        batch: The batch size it was measured at (images). A ``latency`` tune measures the
            profile's smallest batch only, so its batch is no default for anyone
            (:attr:`default_batch`).
        threads: ONNX Runtime intra-op threads (``None``: the runtime's default; ONNX Runtime
            only).
        cuda_graphs: The TensorRT runner's CUDA graphs (``None``: not applicable; TensorRT
            only).
        dla_core: The DLA core it ran on (``None``: the GPU; TensorRT only).
        engine: The prebuilt engine member that won (``None``: ONNX Runtime, or the engine
            opening the bundle builds into the engine cache); TensorRT only. Opening the bundle
            opens exactly this engine (``resolve(engine=...)``).
        engine_sha256: That member's SHA-256 in the bundle's manifest (checked on use).
        provider: The ONNX Runtime execution provider it ran on (``CPUExecutionProvider``,
            ``CUDAExecutionProvider``; ``None``: not recorded); ONNX Runtime only.
        objective: What the tune optimised: ``latency``, ``throughput`` or ``energy``.
        report: Path of the tune's ``report.json`` (``None``: not recorded).
        measured: Headline numbers of the winner (``median_ms``, ``p99_ms``, ``images_per_s``,
            ``joules_per_image``, ``top1_drop_pp``, ``agreement``).

    Raises:
        ConfigError: A field out of its range or of the wrong type, or an option of the other
            runner (``threads`` with TensorRT; ``cuda_graphs``/``dla_core`` with ONNX Runtime).
    """

    precision: Precision
    runner: str
    batch: int
    threads: int | None = None
    cuda_graphs: bool | None = None
    dla_core: int | None = None
    engine: str | None = None
    engine_sha256: str | None = None
    provider: str | None = None
    objective: str = "latency"
    report: str | None = None
    measured: Mapping[str, Any] = json_field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", Precision.parse(self.precision))
        if self.runner not in TUNED_RUNNERS:
            raise ConfigError(f"TunedChoice.runner must be one of {', '.join(TUNED_RUNNERS)}, "
                              f"got {self.runner!r}")
        check_int(self.batch, "TunedChoice.batch", maximum=MAX_BATCH)
        if self.threads is not None:
            check_int(self.threads, "TunedChoice.threads", maximum=MAX_THREADS)
        if self.dla_core is not None:
            check_int(self.dla_core, "TunedChoice.dla_core", minimum=0, maximum=MAX_DLA_CORE)
        if self.cuda_graphs is not None and not isinstance(self.cuda_graphs, bool):
            raise ConfigError(f"TunedChoice.cuda_graphs must be true, false or null, got "
                              f"{self.cuda_graphs!r}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"TunedChoice.objective must be one of {', '.join(OBJECTIVES)}, "
                              f"got {self.objective!r}")
        if self.report is not None:
            _text(self.report, "TunedChoice.report")
        if self.engine is not None:
            _text(self.engine, "TunedChoice.engine")
        if self.engine_sha256 is not None:
            _text(self.engine_sha256, "TunedChoice.engine_sha256")
        if self.provider is not None:
            _text(self.provider, "TunedChoice.provider")
            if self.runner != RunnerKind.ONNXRUNTIME.value:
                raise ConfigError("TunedChoice.provider is an ONNX Runtime option; the "
                                  "tensorrt runner takes none")
        if (self.engine is None) != (self.engine_sha256 is None):
            raise ConfigError("TunedChoice.engine and engine_sha256 go together")
        if self.runner == RunnerKind.TENSORRT.value and self.threads is not None:
            raise ConfigError("TunedChoice.threads is an ONNX Runtime option; the tensorrt "
                              "runner takes none")
        if self.runner == RunnerKind.ONNXRUNTIME.value and (self.cuda_graphs is not None
                                                            or self.dla_core is not None
                                                            or self.engine is not None):
            raise ConfigError("TunedChoice.cuda_graphs, dla_core and engine are TensorRT "
                              "options; the onnxruntime runner takes none of them")
        object.__setattr__(self, "measured", _measured(self.measured))

    @property
    def default_batch(self) -> int | None:
        """The batch size consumers take as their default (``Classifier``, ``infer``,
        ``stream``, ``triton-repo``'s preferred batch): the tuned batch of a ``throughput`` or
        ``energy`` tune, which searched batch sizes; ``None`` for a ``latency`` tune, which
        measured only the smallest (one request's latency)."""
        return self.batch if self.objective in ("throughput", "energy") else None

    def describe(self) -> str:
        """One phrase: ``int8 on ONNX Runtime, 2 threads, batch 8``."""
        if self.runner == RunnerKind.ONNXRUNTIME.value:
            parts = [f"{self.precision.value} on ONNX Runtime"]
            if self.provider not in (None, "CPUExecutionProvider"):
                parts.append(f"on {self.provider}")
            if self.threads is not None:
                parts.append(f"{self.threads} thread{'s' if self.threads != 1 else ''}")
        else:
            parts = [f"{self.precision.value} TensorRT engine"
                     + (f" {self.engine}" if self.engine is not None else "")]
            if self.dla_core is not None:
                parts.append(f"DLA core {self.dla_core}")
            if self.cuda_graphs is not None:
                parts.append("CUDA graphs" if self.cuda_graphs else "no CUDA graphs")
        parts.append(f"batch {self.batch}")
        return ", ".join(parts)

    @classmethod
    def from_dict(cls, data: Any) -> TunedChoice:
        """Parse :meth:`to_dict`'s form strictly (a record is untrusted: a number in a string,
        a fraction where a count belongs or an unknown key is refused, not converted).

        Raises:
            ConfigError: Not an object, an unknown or missing key, or a value of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a tuned choice must be a JSON object, got "
                              f"{type(data).__name__}")
        known = {"precision", "runner", "batch", "threads", "cuda_graphs", "dla_core",
                 "engine", "engine_sha256", "provider", "objective", "report", "measured"}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ConfigError(f"a tuned choice has unknown key(s) {', '.join(unknown)[:200]}")
        missing = [k for k in ("precision", "runner", "batch") if k not in data]
        if missing:
            raise ConfigError(f"a tuned choice lacks {', '.join(missing)}")
        for key in ("precision", "runner", "objective", "engine", "engine_sha256", "provider"):
            if key in data and not isinstance(data[key], str) and not (
                    key in ("engine", "engine_sha256", "provider") and data[key] is None):
                raise ConfigError(f"TunedChoice.{key} must be a string, got "
                                  f"{type(data[key]).__name__}")
        kw = {k: v for k, v in data.items() if k in known}
        return cls(**kw)


# ---------------------------------------------------------------------------------------------
# the key: bundle digest, runtime, machine


def host_cpu() -> dict[str, Any]:
    """This host's CPU as the ONNX Runtime key records it: model, logical cores, architecture."""
    from .. import sysinfo

    cpu = sysinfo.cpu_facts()
    return {"cpu": cpu.model, "cpu_count": cpu.count, "arch": sysinfo.platform_facts().machine}


def _runtime(choice: TunedChoice, bundle: Bundle, facts: DeviceFacts) -> dict[str, str]:
    """The runtime that runs ``choice`` here: ONNX Runtime's version, or the TensorRT flavour
    and version the engine choice picks for that precision and batch (a prebuilt engine, or
    the local TensorRT that builds one).

    Raises:
        BundleError: That runtime is not available here for this bundle.
    """
    if choice.runner == RunnerKind.ONNXRUNTIME.value:
        if facts.ort_version is None:
            raise BundleError("cannot record an ONNX Runtime choice: ONNX Runtime is not "
                              "installed here (pip install 'xception-trt[ort]')")
        return {"name": "onnxruntime", "version": facts.ort_version}
    chosen = choose(bundle.manifest, facts, Request(choice.precision, max_batch=choice.batch,
                                                    onnxruntime=False, dla_core=choice.dla_core,
                                                    engine=choice.engine))
    if chosen.kind is ChoiceKind.PREBUILT and chosen.engine is not None:
        name = chosen.engine.sidecar.flavour
        flavour = facts.flavour(name)
        return {"name": name, "version": flavour.version if flavour else
                chosen.engine.sidecar.tensorrt.version}
    if chosen.kind is ChoiceKind.BUILD and chosen.build is not None:
        return {"name": chosen.build.flavour, "version": chosen.build.version}
    raise BundleError(f"cannot record a TensorRT choice for {bundle.path.name}: {chosen.reason}")


def _machine(facts: DeviceFacts, cpu: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every machine fact the search decided on, whichever runner won: the CPU (ONNX Runtime's
    threads), ONNX Runtime's version and providers, the TensorRT flavours installed with their
    versions, the GPUs and the DLA cores (the engines it could build or load). Installing
    TensorRT, adding a GPU or another ONNX Runtime changes the candidates, so the choice."""
    return {**(dict(cpu) if cpu is not None else host_cpu()),
            "ort_version": facts.ort_version,
            "ort_providers": sorted(facts.ort_providers),
            "tensorrt": sorted(({"name": f.name, "version": f.version} for f in facts.flavours),
                               key=lambda f: (str(f["name"]), str(f["version"]))),
            "gpus": [{"name": g.name, "compute_capability": g.compute_capability,
                      "integrated": g.integrated} for g in facts.gpus],
            "dla_cores": facts.dla_cores}


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    from .cache import default_cache_dir

    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def tuned_path(bundle: str | os.PathLike[str] | Bundle, *,
               cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the tuned choice of the bundle at that path is recorded (whether or not it is)."""
    path = bundle.path if isinstance(bundle, Bundle) else Path(bundle)
    name = sha256_bytes(str(path.resolve()).encode("utf-8", "surrogateescape"))[:16]
    return _cache_root(cache_dir) / "tuned" / f"{name}.json"


def _check_engine(bundle: Bundle, choice: TunedChoice) -> None:
    """The choice's engine is that member of the bundle, with that SHA-256.

    Raises:
        BundleError: It is not.
    """
    if choice.engine is None:
        return
    member = bundle.manifest.members.get(choice.engine)
    if member is None or not any(e.member == choice.engine for e in bundle.manifest.engines):
        raise BundleError(f"{bundle.path.name} has no prebuilt engine {_shown(choice.engine)}")
    if member.sha256 != choice.engine_sha256:
        raise BundleError(f"the engine {_shown(choice.engine)} of {bundle.path.name} is not the "
                          "one tuned (another SHA-256)")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_choice(bundle: str | os.PathLike[str] | Bundle, choice: TunedChoice, *,
                  cache_dir: str | os.PathLike[str] | None = None,
                  facts: DeviceFacts | None = None,
                  cpu: Mapping[str, Any] | None = None) -> Path:
    """Record ``choice`` as the tuned configuration of ``bundle`` on this machine (replacing
    any earlier one), written atomically.

    Args:
        bundle: The ``.xtrt`` file (or an open :class:`Bundle`).
        choice: What the tune chose.
        cache_dir: The engine cache (default
            :func:`~xception_trt.bundle.cache.default_cache_dir`); the record goes under
            ``tuned/``.
        facts: The machine (default: probed; recorded facts stand in for another machine).
        cpu: The host CPU (default :func:`host_cpu`; tests stand in another).

    Returns:
        The record's path.

    Raises:
        BundleError: The bundle is unreadable, the runner the choice names cannot run it here,
            or the cache cannot be written.
    """
    if not isinstance(choice, TunedChoice):
        raise ConfigError(f"record_choice needs a TunedChoice, got {type(choice).__name__}")
    if not isinstance(bundle, Bundle):
        with Bundle(bundle) as opened:
            return record_choice(opened, choice, cache_dir=cache_dir, facts=facts, cpu=cpu)
    facts = facts if facts is not None else probe_facts()
    bundle.manifest.variant(choice.precision)  # a precision the bundle lacks: BundleError
    _check_engine(bundle, choice)
    record = {
        "format": TUNED_FORMAT,
        "format_version": TUNED_FORMAT_VERSION,
        "recorded": _now(),
        "bundle": {"path": str(bundle.path.resolve()), "digest": bundle.digest},
        "runtime": _runtime(choice, bundle, facts),
        "machine": _machine(facts, cpu),
        "choice": choice.to_dict(),
    }
    from .cache import _inside

    dest = tuned_path(bundle, cache_dir=cache_dir)
    root = _cache_root(cache_dir)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"cannot create {dest.parent}: {exc.strerror or exc}; set "
                          "XDG_CACHE_HOME to a writable folder (Python: pass cache_dir=)"
                          ) from None
    atomic_write_json(_inside(root, dest), record, error=BundleError)  # never outside the cache
    log.info("recorded the tuned configuration of %s (%s) in %s", bundle.path.name,
             choice.describe(), dest)
    return dest


def _ignored(name: str, why: str) -> str:
    return (f"not using the tuned configuration recorded for {name}: {why}; run "
            "`xception-trt tune` again")


def _read_record(path: Path) -> Any:
    """The record's JSON (raises ``ValueError`` with the reason when it is not readable)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_RECORD_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"it cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_RECORD_BYTES:
        raise ValueError(f"it is larger than {MAX_RECORD_BYTES} bytes")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        text = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ValueError(f"it is not valid JSON ({text})") from None


def _field(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"its {key!r} is missing or not a JSON {kind.__name__}")
    return value


def _shown(value: Any) -> str:
    """A recorded value as a notice shows it: printable, at most 80 characters (the record is
    untrusted: no terminal escape reaches stderr from it)."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _gpus_text(gpus: Any) -> str:
    if not isinstance(gpus, list) or not gpus:
        return "no GPU"
    return _shown(", ".join(
        f"{g.get('name')} sm_{str(g.get('compute_capability')).replace('.', '')}"
        if isinstance(g, Mapping) else "?" for g in gpus))


def _flavours_text(value: Any) -> str:
    if not isinstance(value, list) or not value:
        return "none"
    return _shown(", ".join(f"{_RUNTIME_NAMES.get(str(f.get('name')), f.get('name'))} "
                            f"{f.get('version')}" if isinstance(f, Mapping) else "?"
                            for f in value))


def _machine_change(then: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """Which machine fact changed, in a few words."""
    for key, what in (("cpu", "CPU"), ("cpu_count", "logical cores"),
                      ("arch", "architecture")):
        if then.get(key) != now.get(key):
            return (f"another machine ({what} {_shown(then.get(key))} -> "
                    f"{_shown(now.get(key))})")
    if then.get("gpus") != now.get("gpus"):
        return (f"another machine (GPU {_gpus_text(then.get('gpus'))} -> "
                f"{_gpus_text(now.get('gpus'))})")
    if then.get("dla_cores") != now.get("dla_cores"):
        return (f"another machine (DLA cores {_shown(then.get('dla_cores'))} -> "
                f"{now.get('dla_cores')})")
    if then.get("tensorrt") != now.get("tensorrt"):
        return (f"the TensorRT installed changed ({_flavours_text(then.get('tensorrt'))} -> "
                f"{_flavours_text(now.get('tensorrt'))})")
    if then.get("ort_version") != now.get("ort_version"):
        def version(v: Any) -> str:
            return "not installed" if v is None else _shown(v)
        return (f"ONNX Runtime {version(then.get('ort_version'))} -> "
                f"{version(now.get('ort_version'))}")
    if then.get("ort_providers") != now.get("ort_providers"):
        def providers(v: Any) -> str:
            return _shown(", ".join(map(str, v))) if isinstance(v, list) and v else "none"
        return (f"ONNX Runtime's providers changed ({providers(then.get('ort_providers'))}"
                f" -> {providers(now.get('ort_providers'))})")
    return "another machine"


_RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "tensorrt": "TensorRT",
                  "tensorrt_rtx": "TensorRT-RTX"}


def _runtime_change(then: Mapping[str, Any], facts: DeviceFacts) -> str | None:
    name, version = then.get("name"), _shown(then.get("version"))
    label = _RUNTIME_NAMES.get(str(name), _shown(name))
    if name == "onnxruntime":
        now = facts.ort_version
    else:
        flavour = facts.flavour(str(name))
        now = flavour.version if flavour is not None else None
    if now is None:
        return f"{label} {version} is no longer installed"
    if now != version:
        return f"{label} {version} -> {now}"
    return None


def recorded_choice(bundle: str | os.PathLike[str] | Bundle, *,
                    cache_dir: str | os.PathLike[str] | None = None,
                    facts: DeviceFacts | None = None,
                    cpu: Mapping[str, Any] | None = None
                    ) -> tuple[TunedChoice | None, str | None]:
    """The tuned configuration recorded for ``bundle`` on this machine, if it still holds.

    Args:
        bundle: The ``.xtrt`` file (or an open :class:`Bundle`).
        cache_dir: The engine cache (default
            :func:`~xception_trt.bundle.cache.default_cache_dir`).
        facts: The machine (default: probed; recorded facts stand in for another machine).
        cpu: The host CPU (default :func:`host_cpu`).

    Returns:
        ``(choice, None)`` when a record holds for this bundle, runtime and machine;
        ``(None, None)`` when none was recorded; ``(None, notice)`` when one was recorded but
        the bundle, the runtime version or the machine changed since, or the record is
        unreadable — the notice says which, in one line.

    Raises:
        BundleError: The bundle itself is unreadable (only asked when a record exists).
    """
    dest = tuned_path(bundle, cache_dir=cache_dir)
    if not dest.is_file():
        return None, None
    path = bundle.path if isinstance(bundle, Bundle) else Path(bundle)
    name = path.name
    try:
        data = _read_record(dest)
        if not isinstance(data, Mapping):
            raise ValueError("it is not a JSON object")
        if data.get("format") != TUNED_FORMAT:
            raise ValueError(f"its format is not {TUNED_FORMAT!r}")
        version = data.get("format_version")
        if version != TUNED_FORMAT_VERSION:
            raise ValueError(f"its format version is {version!r}; this xception-trt reads "
                             f"version {TUNED_FORMAT_VERSION}")
        then_bundle = _field(data, "bundle", Mapping)
        runtime = _field(data, "runtime", Mapping)
        machine = _field(data, "machine", Mapping)
        if not (isinstance(runtime.get("name"), str) and isinstance(runtime.get("version"), str)):
            raise ValueError("its runtime is not a name and a version")
        digest = then_bundle.get("digest")
        if not isinstance(digest, str):
            raise ValueError("its bundle digest is missing")
        choice = TunedChoice.from_dict(_field(data, "choice", Mapping))
    except (ValueError, XceptionTRTError, TypeError) as exc:
        return None, _ignored(name, f"the record {dest} is unusable ({exc}); remove it")
    if then_bundle.get("path") != str(path.resolve()):
        return None, None  # another bundle's record under a colliding name: not this one's
    if isinstance(bundle, Bundle):
        now_digest = bundle.digest
    else:
        with Bundle(bundle) as opened:
            now_digest = opened.digest
    if digest != now_digest:
        return None, _ignored(name, "the bundle changed since it was tuned (another digest)")
    try:
        if isinstance(bundle, Bundle):
            _check_engine(bundle, choice)
        else:
            with Bundle(bundle) as opened:
                _check_engine(opened, choice)
    except BundleError as exc:
        return None, _ignored(name, str(exc))
    facts = facts if facts is not None else probe_facts()
    why = _runtime_change(runtime, facts)
    if why is not None:
        return None, _ignored(name, why)
    now_machine = _machine(facts, cpu)
    if dict(machine) != now_machine:
        return None, _ignored(name, _machine_change(machine, now_machine))
    return choice, None


# ---------------------------------------------------------------------------------------------
# using it: the options a recorded choice fills


#: Options that ask for an engine: given (not ``None``/``False``), a tuned ONNX Runtime choice
#: leaves the runner to the engine choice.
_ENGINE_ASKED = ("flavour", "cuda_graphs", "cuda_binding", "device", "dla_core")

#: How the notices name the way to ignore a recorded choice, in the CLI and in Python.
IGNORE_HINT = "--no-tuned (Python: tuned=False) ignores it"


def tuned_options(bundle: str | os.PathLike[str] | Bundle, given: Mapping[str, Any], *,
                  cache_dir: str | os.PathLike[str] | None = None,
                  facts: DeviceFacts | None = None,
                  cpu: Mapping[str, Any] | None = None
                  ) -> tuple[TunedChoice | None, dict[str, Any], str | None]:
    """The options a recorded choice adds to those the caller gave for opening ``bundle``.

    A recorded choice is for its precision only: when the caller gives another ``precision``
    none of it is used (``choice`` is ``None``, the notice says why). Otherwise only options
    the caller left unset (absent or ``None``) are filled: ``precision``;
    ``tensorrt=False`` for an ONNX Runtime choice (unless an engine option, ``tensorrt`` or
    ``onnxruntime=False`` was given), with its ``threads`` and ``providers`` (the one it ran
    on); ``cuda_graphs``, ``dla_core`` and
    ``engine`` (the prebuilt engine that won) for a TensorRT choice. The batch size is the
    caller's to use, and only from a throughput or energy tune
    (:attr:`TunedChoice.default_batch`).

    Args:
        bundle: The ``.xtrt`` file (or an open :class:`Bundle`).
        given: The options of :func:`xception_trt.runners.open_runner` /
            :func:`~xception_trt.bundle.cache.resolve` the caller gave.
        cache_dir, facts, cpu: As for :func:`recorded_choice`.

    Returns:
        ``(choice, options to add, notice)``: the notice is the one line to say — that the
        tuned configuration is used (and which given options win over it), or why a
        recorded one is not — or ``None`` when nothing was recorded.

    Raises:
        BundleError: The bundle itself is unreadable (only asked when a record exists).
    """
    choice, notice = recorded_choice(bundle, cache_dir=cache_dir, facts=facts, cpu=cpu)
    if choice is None:
        return None, {}, notice
    fill: dict[str, Any] = {}
    kept: list[str] = []

    def take(key: str, value: Any, shown: str) -> None:
        if value is None:
            return
        if given.get(key) is None:
            fill[key] = value
        elif given[key] != value:
            kept.append(f"{shown} {given[key]}")

    path = bundle.path if isinstance(bundle, Bundle) else Path(bundle)
    if given.get("precision") is None:
        fill["precision"] = choice.precision
    elif Precision.parse(given["precision"]) is not choice.precision:
        # the runner, threads, CUDA graphs, DLA core and batch were measured for the recorded
        # precision: none of them says anything about another one, so none is used
        asked = Precision.parse(given["precision"]).value
        return None, {}, (f"not using the tuned configuration of {path.name} "
                          f"({choice.describe()}): it was measured for "
                          f"{choice.precision.value}, and precision {asked} was given; leave "
                          "the precision unset to use it")
    if choice.runner == RunnerKind.ONNXRUNTIME.value:
        # ``is``, not ``in (None, False)``: device 0 and DLA core 0 are given (0 == False)
        asked = [k for k in _ENGINE_ASKED if given.get(k) is not None and given[k] is not False]
        if "tensorrt" in given:
            asked.append("tensorrt")
        if asked:
            kept.append(f"{', '.join(asked)} (a TensorRT engine where one runs)")
        elif given.get("onnxruntime") is False:
            kept.append("onnxruntime=False")
        else:
            fill["tensorrt"] = False
        take("threads", choice.threads, "threads")
        if choice.provider is not None and "tensorrt" in fill:
            take("providers", [choice.provider], "providers")
    else:
        take("cuda_graphs", choice.cuda_graphs, "cuda_graphs")
        take("dla_core", choice.dla_core, "dla_core")
        take("engine", choice.engine, "engine")
    origin = f"from {choice.report}" if choice.report else "recorded by `xception-trt tune`"
    wins = f"; given options win: {', '.join(kept)}" if kept else ""
    return choice, fill, (f"using the tuned configuration of {path.name} ({choice.describe()}) "
                          f"{origin}{wins}; {IGNORE_HINT}")
