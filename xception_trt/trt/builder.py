# Over 600 lines on purpose: one TensorRT build is one sequence (parse, configure, build, inspect,
# write plan + sidecar) with its TensorRT callbacks; the pure rules already live in compat.py.
"""Build TensorRT engines from our ONNX graphs with NVIDIA TensorRT (8.6, 10.x, 11.x) or
TensorRT-RTX, and describe each engine in a JSON sidecar.

An engine ``<name>.engine`` always comes with ``<name>.engine.json``, written atomically with the
plan: an :class:`~xception_trt.sidecar.EngineSidecar` (its module documents the JSON layout).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import __version__
from ..config import BuildConfig, Precision
from ..errors import BuildError, DependencyError, EngineError, renamed
from ..fsio import (
    atomic_write_bytes,
    check_writable_dir,
    default_file_mode,
    sha256_file,
    temp_sibling,
)
from ..host import cpu_model
from ..onnx_meta import OnnxSource
from ..sidecar import (
    BuildDevice,
    EngineFile,
    EngineSidecar,
    Profile,
    TensorRecord,
    TensorRTInfo,
    read_sidecar,
    sidecar_path,
)
from . import TensorRTFlavour, import_flavour, probed_flavours
from .compat import (
    BuildPlan,
    check_build_target,
    check_options,
    check_sidecar_compat,
    engine_cache_key,
    network_and_precision_plan,
    rebuild_command,
    timing_cache_filename,
)
from .logger import make_logger

__all__ = [
    "EngineArtifact",
    "BuildProgress",
    "build_engine",
    "read_sidecar",
    "sidecar_path",
    "check_sidecar_compat",
    "resolve_flavour",
    "dla_core_count",
    "load_timing_cache",
    "save_timing_cache",
    "parse_layer_log",
    "parser_error_lines",
    "parse_inspector_json",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineArtifact:
    """A built (or reused) engine.

    Attributes:
        path: The serialized plan.
        sidecar_path: Its JSON sidecar.
        sidecar: The sidecar content.
        cache_hit: ``True`` when an existing identical engine was reused (nothing was built).
        seconds: Wall time of this call in seconds (build, or cache check on a hit).
    """

    path: Path
    sidecar_path: Path
    sidecar: EngineSidecar
    cache_hit: bool
    seconds: float

    @property
    def size_bytes(self) -> int:
        """Size of the plan file in bytes."""
        return self.sidecar.engine.bytes


class BuildProgress(Protocol):
    """Receives TensorRT's builder progress (``IProgressMonitor``: TensorRT 10+, TensorRT-RTX).

    Exceptions raised here are stored, cancel the build, and are re-raised by
    :func:`build_engine` once TensorRT has returned.
    """

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None: ...

    def step_complete(self, phase_name: str, step: int) -> None: ...

    def phase_finish(self, phase_name: str) -> None: ...


# ---------------------------------------------------------------------------------------------
# flavour, device and targets


def resolve_flavour(backend: str | None = None) -> TensorRTFlavour:
    """The TensorRT flavour to build with: ``backend`` if given, else NVIDIA TensorRT when it
    imports and a GPU is present, else TensorRT-RTX.

    Raises:
        BuildError: The asked backend does not import, or none does.
    """
    if backend is not None:
        return import_flavour(backend)
    found = {f.name: f for f in probed_flavours()}
    if "tensorrt" in found and ("tensorrt_rtx" not in found or _build_gpu() is not None):
        return found["tensorrt"]
    if "tensorrt_rtx" in found:
        return found["tensorrt_rtx"]
    raise BuildError("no TensorRT is installed: install NVIDIA TensorRT on the GPU machine "
                     "(JetPack on Jetson; pip install 'xception-trt[trt]') or TensorRT-RTX to "
                     "build RTX engines anywhere (pip install 'xception-trt[rtx]')")


def dla_core_count(backend: str | None = None) -> int:
    """DLA cores TensorRT's builder can target on this device: 0 without DLA hardware, for
    TensorRT-RTX, and for a TensorRT release without DLA support (compat's DLA table).

    Raises:
        BuildError: No usable TensorRT (see :func:`resolve_flavour`).
    """
    flavour = resolve_flavour(backend)
    if not network_and_precision_plan(flavour.name, flavour.version, "fp16").dla:
        return 0
    builder = flavour.module.Builder(make_logger(flavour.module))
    return int(builder.num_DLA_cores) if builder is not None else 0


def _build_gpu(device: int = 0) -> dict[str, Any] | None:
    """The GPU of CUDA ordinal ``device`` (``None``: no GPU at all).

    Raises:
        BuildError: There are GPUs but none has that ordinal.
    """
    from .devices import probed_devices

    report = probed_devices()
    if not report.gpus:
        return None
    gpu = next((g for g in report.gpus if g.index == device), None)
    if gpu is None:
        raise BuildError(f"there is no GPU {device} here (CUDA ordinals "
                         f"{', '.join(str(g.index) for g in report.gpus)}); pick one of them")
    return {"index": gpu.index, "name": gpu.name, "compute_capability": gpu.compute_capability,
            "integrated": gpu.integrated}


def _select_build_device(device: int) -> None:
    """Make GPU ``device`` current on this thread before TensorRT builds: the builder builds on
    (and records) whatever device is current ("To select the GPU, use cudaSetDevice() before
    calling the builder or deserializing the engine", TensorRT FAQ, quoted in NVIDIA/TensorRT
    issues 322 and 634).

    Raises:
        BuildError: ``device`` is not 0 and cannot be selected (no cuda-python, no driver).
    """
    from .cuda import CudaPythonBackend

    try:
        CudaPythonBackend(device)  # cudaSetDevice(device) on this thread; holds nothing
    except (DependencyError, EngineError) as exc:
        if device == 0:  # CUDA's default device: TensorRT builds there anyway
            log.debug("could not select GPU 0 for the build: %s", exc)
            return
        raise BuildError(f"cannot select GPU {device} for the build (cudaSetDevice): {exc}; "
                         "install cuda-python (pip install 'xception-trt[cuda]') or build on "
                         "GPU 0") from None


def _device_and_targets(flavour: TensorRTFlavour, config: BuildConfig, device: int = 0
                        ) -> tuple[dict[str, Any] | None, list[str] | None]:
    if flavour.is_rtx:
        targets = list(config.cc) or None
        if targets == ["CURRENT"]:
            gpu = _build_gpu(device)
            if gpu is None:
                raise BuildError("compute capability CURRENT builds for the GPU in this machine "
                                 "and none was found; name the targets instead, e.g. --cc sm86 "
                                 "sm89 sm120")
            return gpu, targets
        return None, targets
    gpu = _build_gpu(device)
    if gpu is None:
        raise BuildError(f"NVIDIA TensorRT {flavour.version} builds engines on the GPU that will "
                         "run them and no GPU was found here; build on the target machine, or "
                         "build RTX engines on this CPU with --flavour tensorrt_rtx")
    return gpu, None


# ---------------------------------------------------------------------------------------------
# TensorRT callbacks: they never raise (an exception crossing into C++ aborts or is lost)


def _make_monitor(trt: Any, progress: BuildProgress) -> Any:
    import threading

    class _Monitor(trt.IProgressMonitor):
        """Calls ``progress`` one at a time: "the implementation of IProgressMonitor must be
        thread-safe so that it can be called from multiple internal threads" (TensorRT API
        reference, IProgressMonitor); our BuildProgress objects need not be."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.error: BaseException | None = None
            self._lock = threading.Lock()

        def _call(self, fn: Any, *args: Any) -> None:
            with self._lock:
                if self.error is not None:
                    return
                try:
                    fn(*args)
                except BaseException as exc:  # stored and re-raised after the build returns
                    self.error = exc

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self._call(progress.phase_start, phase_name, parent_phase, int(num_steps))

        def step_complete(self, phase_name: str, step: int) -> bool:
            self._call(progress.step_complete, phase_name, int(step))
            return self.error is None  # False asks TensorRT to cancel the build

        def phase_finish(self, phase_name: str) -> None:
            self._call(progress.phase_finish, phase_name)

    return _Monitor()


# ---------------------------------------------------------------------------------------------
# timing cache


def load_timing_cache(builder_config: Any, path: Path) -> int:
    """Attach the timing cache stored at ``path`` (or an empty one) to a builder config.

    Args:
        builder_config: A TensorRT ``IBuilderConfig``.
        path: Cache file; a missing file starts an empty cache.

    Returns:
        Bytes loaded from ``path`` (0 when it started empty).
    """
    blob = path.read_bytes() if path.is_file() else b""
    cache = builder_config.create_timing_cache(blob)
    if cache is None and blob:
        log.warning("timing cache %s is unreadable (written by another TensorRT?); starting "
                    "an empty one", path)
        blob = b""
        cache = builder_config.create_timing_cache(b"")
    if cache is not None and blob and not builder_config.set_timing_cache(cache, False):
        # set_timing_cache(ignore_mismatch=False) refuses a cache whose device properties differ
        # from this GPU's (TensorRT API reference, IBuilderConfig.set_timing_cache): its timings
        # do not apply here. Not an error: build with a fresh cache, which then replaces it.
        log.warning("timing cache %s was written on another device configuration; starting a "
                    "fresh one (it replaces the file after this build)", path)
        blob = b""
        cache = builder_config.create_timing_cache(b"")
    if cache is None or (not blob and not builder_config.set_timing_cache(cache, False)):
        raise BuildError(f"TensorRT refused the timing cache {path}; delete it and build again")
    return len(blob)


def save_timing_cache(builder_config: Any, path: Path) -> int:
    """Serialize the builder config's timing cache to ``path`` atomically; return its size."""
    cache = builder_config.get_timing_cache()
    if cache is None:
        return 0
    data = bytes(memoryview(cache.serialize()))
    atomic_write_bytes(path, data, error=BuildError)
    return len(data)


# ---------------------------------------------------------------------------------------------
# per-layer information


_DTYPE_RE = re.compile(r"Datatype: ([A-Za-z0-9]+)")


def _section(line: str, start: str, ends: tuple[str, ...]) -> str:
    i = line.find(start)
    if i < 0:
        return ""
    rest = line[i + len(start):]
    cut = min((rest.find(e) for e in ends if rest.find(e) >= 0), default=len(rest))
    return rest[:cut]


def parse_layer_log(text: str | None) -> list[dict[str, Any]] | None:
    """Parse the ``Layers:`` message TensorRT(-RTX) logs at VERBOSE with detailed profiling.

    Returns:
        One dict per layer (``name``, ``type``, ``input_dtypes``, ``output_dtypes``,
        ``onnx_layers``, ``tactic``), or ``None`` when ``text`` holds no layer lines.
    """
    if not text:
        return None
    layers = []
    for line in text.splitlines():
        head = re.match(r"Name: (.*?), LayerType: ([^,]*)", line)
        if not head:
            continue
        tactic = re.search(r"TacticName: ([^,]*)", line)
        layers.append({
            "name": head.group(1),
            "type": head.group(2).strip(),
            "input_dtypes": _DTYPE_RE.findall(_section(line, "Inputs: [", ("], Constants",
                                                                          "], Outputs"))),
            "output_dtypes": _DTYPE_RE.findall(_section(line, "Outputs: [", ("], TacticName",))),
            "onnx_layers": re.findall(r"\[ONNX Layer: ([^\]]+)\]", line),
            "tactic": tactic.group(1).strip() if tactic else None,
        })
    return layers or None


def _io_dtype(entry: Mapping[str, Any]) -> str | None:
    for key in ("DataType", "Datatype", "Format/Datatype"):
        if key in entry:
            return str(entry[key])
    return None


def parse_inspector_json(text: str) -> list[dict[str, Any]] | None:
    """Parse ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)``.

    Handles TensorRT 10 (``Format/Datatype``) and 11 (``Format`` + ``DataType``) layouts and
    the layer-names-only form (a list of strings).
    """
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return None
    raw = data.get("Layers") if isinstance(data, dict) else None
    if not raw:
        return None
    layers: list[dict[str, Any]] = []
    for item in raw:
        if isinstance(item, str):
            layers.append({"name": item, "type": None, "input_dtypes": [], "output_dtypes": [],
                           "onnx_layers": [], "tactic": None})
            continue
        meta = str(item.get("Metadata", ""))
        layers.append({
            "name": item.get("Name"),
            "type": item.get("LayerType"),
            "input_dtypes": [_io_dtype(e) for e in item.get("Inputs", []) if isinstance(e, dict)],
            "output_dtypes": [_io_dtype(e) for e in item.get("Outputs", [])
                              if isinstance(e, dict)],
            "onnx_layers": re.findall(r"\[ONNX Layer: ([^\]]+)\]", meta),
            "tactic": item.get("TacticName"),
        })
    return layers


def _inspect_engine(trt: Any, logger: Any, plan: bytes | memoryview, config: BuildConfig
                    ) -> list[dict[str, Any]] | None:
    """Per-layer info through the engine inspector; needs a GPU that can deserialize the plan."""
    from .runtime import deserialize

    try:
        # the plan was built in this process a moment ago: its host code (version-compatible
        # lean runtime) is ours to allow
        _, _runtime, engine = deserialize(trt, plan, source="the new engine", logger=logger,
                                          host_code_allowed=config.version_compatible,
                                          dla_core=config.dla_core)
    except EngineError as exc:
        log.debug("%s", exc)
        return None
    inspector = engine.create_engine_inspector()
    return parse_inspector_json(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


# ---------------------------------------------------------------------------------------------
# network and builder config


def _onnx_nodes(onnx_path: Path) -> list[tuple[str, str]]:
    """(name, op_type) of every node, for parser errors of TensorRT versions that only give the
    node index (8.6)."""
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception:  # the parser already reported why the file is unreadable
        return []
    return [(n.name, n.op_type) for n in graph.node]


def parser_error_lines(parser: Any, nodes: list[tuple[str, str]]) -> list[str]:
    """One line per ONNX parser error: node index, name and operator, message and code.

    Args:
        parser: A TensorRT ``OnnxParser`` after ``parse*`` (``num_errors``/``get_error``).
        nodes: (name, op_type) of the graph's nodes, used where the error object lacks
            ``node_name()``/``node_operator()`` (TensorRT < 10).
    """
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        index = int(err.node())
        name = err.node_name() if hasattr(err, "node_name") else ""
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        if 0 <= index < len(nodes):
            name, op = name or nodes[index][0], op or nodes[index][1]
        where = f"node {index} '{name}' ({op})" if index >= 0 else "model"
        lines.append(f"{where}: {err.desc()} [{err.code()}]")
    return lines


@contextlib.contextmanager
def _graph_for(plan: BuildPlan, onnx_path: Path, precision: Precision, engine_path: Path
               ) -> Iterator[Path]:
    """The graph file this TensorRT parses: ``onnx_path`` itself, or, for a version that takes
    Q/DQ weights in float only (``plan.int8_weights`` false: TensorRT 8.6), the float-weight
    form of an INT8-weight graph, in a temporary file next to the engine (removed after
    parsing; the sidecar and cache key still name ``onnx_path`` and its hash)."""
    if precision is not Precision.INT8 or plan.int8_weights:
        yield onnx_path
        return
    from ..graph import INT8_WEIGHTS, int8_weight_form, to_float_weights
    from ..onnx_meta import load_onnx

    model = load_onnx(onnx_path)
    if int8_weight_form(model) != INT8_WEIGHTS:
        yield onnx_path
        return
    log.info("%s %s takes Q/DQ weights in FP32: building %s from its float-weight form",
             plan.flavour, ".".join(map(str, plan.version)), onnx_path.name)
    tmp = temp_sibling(engine_path)
    try:
        tmp.write_bytes(to_float_weights(model).SerializeToString())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _parse_onnx(trt: Any, builder: Any, logger: Any, plan: BuildPlan, onnx_path: Path
                ) -> tuple[Any, Any]:
    """Parse the ONNX file into a new network; returns (network, parser) — the parser must stay
    alive as long as the network, it owns the parsed weights."""
    flags = 0
    for name in plan.network_flags:
        member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if member is not None:  # e.g. EXPLICIT_BATCH is gone in some releases
            flags |= 1 << int(member)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    errors = parser_error_lines(parser, _onnx_nodes(onnx_path) if parser.num_errors else [])
    if not ok or errors:
        lines = "\n  ".join(errors or logger.errors or ["(no details reported)"])
        raise BuildError(
            f"TensorRT {plan.flavour} {'.'.join(map(str, plan.version))} could not parse "
            f"{onnx_path}:\n  {lines}\nhint: build from a graph written by `xception-trt export` "
            "(opset 17, cleaned); a truncated file or an operator TensorRT lacks shows up here")
    return network, parser


def _tensor_record(trt: Any, tensor: Any) -> TensorRecord:
    import numpy as np

    try:
        dtype = np.dtype(trt.nptype(tensor.dtype)).name
    except (TypeError, ValueError):
        dtype = str(tensor.dtype.name).lower()
    return TensorRecord(str(tensor.name), dtype, tuple(int(d) for d in tensor.shape))


def _profile_shapes(network: Any, config: BuildConfig, onnx_path: Path
                    ) -> tuple[dict[str, list[int]] | None, int]:
    """The optimisation profile of the single input (``None`` for a fixed-shape graph) and the
    largest batch the engine accepts."""
    if network.num_inputs != 1:
        raise BuildError(f"{onnx_path} has {network.num_inputs} inputs; an xception-trt graph has "
                         "exactly one (`input`) — export it with `xception-trt export`")
    shape = [int(d) for d in network.get_input(0).shape]
    if any(d < 0 for d in shape[1:]):
        raise BuildError(f"{onnx_path} has dynamic non-batch dimensions {shape}; only the batch "
                         "axis may be dynamic — re-export with `xception-trt export`")
    explicit_profile = any(v is not None for v in (config.min_batch, config.opt_batch,
                                                   config.max_batch))
    if shape[0] >= 0:
        if config.batch is not None and config.batch != shape[0]:
            raise BuildError(f"{onnx_path} has a fixed batch of {shape[0]} but batch "
                             f"{config.batch} was asked; re-export with --batch {config.batch} or "
                             "a dynamic batch")
        if explicit_profile:
            raise BuildError(f"{onnx_path} has a fixed batch of {shape[0]}, so a min/opt/max "
                             "batch profile cannot apply; re-export with a dynamic batch axis")
        return None, shape[0]
    lo, opt, hi = config.profile
    rest = shape[1:]
    return {"min": [lo, *rest], "opt": [opt, *rest], "max": [hi, *rest]}, hi


def _configure(trt: Any, builder: Any, network: Any, plan: BuildPlan, config: BuildConfig,
               profile: dict[str, list[int]] | None, targets: list[str] | None) -> Any:
    cfg = builder.create_builder_config()
    if profile is not None:
        prof = builder.create_optimization_profile()
        name = network.get_input(0).name
        prof.set_shape(name, profile["min"], profile["opt"], profile["max"])
        if cfg.add_optimization_profile(prof) < 0:
            raise BuildError(f"TensorRT rejected the batch profile {profile}; check min <= opt <= "
                             "max")
    for flag in plan.builder_flags:
        cfg.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.precision is Precision.FP32 and hasattr(trt.BuilderFlag, "TF32"):
        # TF32 is on by default: an "FP32" engine would round conv/GEMM inputs to TF32 on Ampere
        # and newer (Orin included; TensorRT developer guide, "TF32" / BuilderFlag.TF32).
        cfg.clear_flag(trt.BuilderFlag.TF32)
    if config.workspace_mib is not None:
        cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    if config.optimization_level is not None:
        cfg.builder_optimization_level = config.optimization_level
    if config.layer_info:
        cfg.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if config.dla_core is not None:
        if builder.num_DLA_cores <= config.dla_core:
            raise BuildError(f"DLA core {config.dla_core} asked but this device has "
                             f"{builder.num_DLA_cores} DLA core(s); use --dla-core 0.."
                             f"{max(builder.num_DLA_cores - 1, 0)} or drop it")
        # "For any tensor the total volume of index dimensions combined (dimensions other than
        # CHW) with the requested batch size should not exceed" Builder.max_DLA_batch_size
        # (IBuilder::getMaxDLABatchSize; "The maximum supported batch size is 4096", DLA
        # restrictions): the fixed DLA batch is the profile's (min = opt = max).
        batch = profile["max"][0] if profile is not None else int(network.get_input(0).shape[0])
        limit = int(builder.max_DLA_batch_size)
        if batch > limit:
            raise BuildError(f"DLA core {config.dla_core} runs batches of at most {limit} "
                             f"(Builder.max_DLA_batch_size) and batch {batch} was asked; "
                             f"rebuild with --batch {limit} or less, or without --dla-core")
        cfg.default_device_type = trt.DeviceType.DLA
        cfg.DLA_core = config.dla_core
        if config.gpu_fallback:
            cfg.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if config.version_compatible:
        cfg.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if config.hardware_compatible:
        cfg.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if targets:
        cfg.num_compute_capabilities = len(targets)
        for i, name in enumerate(targets):
            member = getattr(trt.ComputeCapability, name, None)
            if member is None:
                known = [m for m in trt.ComputeCapability.__members__ if m not in ("NONE",)]
                raise BuildError(f"TensorRT-RTX {plan.version} has no compute capability target "
                                 f"{name}; choose from: {', '.join(known)}")
            if not cfg.set_compute_capability(member, i):
                raise BuildError(f"TensorRT-RTX refused compute capability target {name}")
    return cfg


# ---------------------------------------------------------------------------------------------
# build


def _cached(engine_path: Path, key: str) -> EngineSidecar | None:
    side = sidecar_path(engine_path)
    if not (engine_path.is_file() and side.is_file()):
        return None
    try:
        sidecar = read_sidecar(engine_path)
    except EngineError as exc:
        log.info("not reusing %s: %s", engine_path, exc)
        return None
    if sidecar.cache_key != key:
        return None
    if sha256_file(engine_path) != sidecar.engine.sha256:
        log.info("not reusing %s: the plan does not match its sidecar", engine_path)
        return None
    return sidecar


def _write_outputs(engine_path: Path, plan_bytes: memoryview, sidecar: EngineSidecar) -> None:
    """Write plan and sidecar next to each other without ever leaving a partial or mismatched
    pair: both go to temporary files first; the old sidecar is removed before the plan is
    renamed into place, and the new sidecar is renamed last."""
    directory = engine_path.parent
    check_writable_dir(directory, what="engine output", error=BuildError)
    side = sidecar_path(engine_path)
    temps: list[Path] = []
    try:
        for target, payload in ((engine_path, plan_bytes),
                                (side, sidecar.to_json().encode())):
            tmp = temp_sibling(target)
            temps.append(tmp)
            with open(tmp, "wb") as fh:
                fh.write(payload)
            os.chmod(tmp, default_file_mode())
        with contextlib.suppress(FileNotFoundError):
            side.unlink()
        os.replace(temps[0], engine_path)
        os.replace(temps[1], side)
    except OSError as exc:
        raise BuildError(f"cannot write the engine {engine_path}: {exc.strerror or exc}; choose "
                         "a writable output directory with free space") from None
    finally:
        for leftover in temps:
            with contextlib.suppress(OSError):
                leftover.unlink()


def build_engine(onnx_path: str | os.PathLike[str] | OnnxSource,
                 config: BuildConfig | None = None, *,
                 output: str | os.PathLike[str] | None = None,
                 progress: BuildProgress | None = None, force: bool = False,
                 device: int = 0, replace: bool = True,
                 engine_path: str | os.PathLike[str] | None = None) -> EngineArtifact:
    """Build (or reuse) a TensorRT engine for one of our ONNX graphs, plus its JSON sidecar.

    The engine is reused when ``output`` and its sidecar exist and were built from the same
    ONNX bytes with the same options by the same TensorRT flavour/version for the same
    device/targets (and the plan matches its recorded SHA-256); any difference rebuilds.

    Args:
        onnx_path: ONNX file written by ``xception-trt export`` / the precision step (it carries
            the ModelSpec and precision metadata), or that file already read
            (:class:`~xception_trt.onnx_meta.OnnxSource`): its metadata and SHA-256 are used as
            they are, not read again. A path is read once here.
        config: Build options (default :class:`BuildConfig`).
        output: The engine file (plan) to write; default ``onnx_path`` with suffix
            ``.engine``. The sidecar is ``<output>.json``.
        progress: Receives TensorRT's progress (TensorRT 10+, TensorRT-RTX); ignored elsewhere.
        force: Rebuild even when an identical engine exists.
        device: CUDA ordinal of the GPU to build on (NVIDIA TensorRT, and TensorRT-RTX with
            ``cc=("CURRENT",)``): made current before the builder runs and recorded in the
            sidecar and cache key.
        replace: Replace an existing ``output`` (or sidecar) that is not an identical engine;
            ``False`` refuses it (the CLI's rule: an existing output is replaced only with
            ``--force``).
        engine_path: Old name of ``output`` (deprecated).

    Returns:
        The :class:`EngineArtifact`.

    Raises:
        BuildError: No usable TensorRT, an option this TensorRT cannot honour, a graph of the
            wrong precision for a strongly typed build, parser errors (every one listed),
            a failed build, or an unwritable output.
        GraphError: ``onnx_path`` is missing, not ONNX, or lacks xception-trt metadata.
        Exception: Whatever ``progress`` raised (after TensorRT returned).
    """
    t0 = time.perf_counter()
    output = renamed("engine_path", "output", engine_path, output, where="build_engine")
    config = config or BuildConfig()
    source = OnnxSource.of(onnx_path)
    onnx_path, meta = source.path, source.meta
    engine_path = Path(output) if output is not None else onnx_path.with_suffix(".engine")
    if engine_path.resolve() == onnx_path.resolve():
        raise BuildError(f"the engine path {engine_path} is the ONNX file itself; choose another")

    flavour = resolve_flavour(config.flavour)
    precision = config.precision or meta.precision
    plan = network_and_precision_plan(flavour.name, flavour.version, precision)
    if meta.precision not in plan.onnx_precisions:
        wanted = " or ".join(p.value for p in plan.onnx_precisions)
        raise BuildError(
            f"{onnx_path.name} is the {meta.precision.value} graph but a {precision.value} engine "
            f"was asked; {flavour.name} {flavour.version} builds from the {wanted} graph "
            f"({plan.notes[0]}) — pass that variant, e.g. `xception-trt build CHECKPOINT "
            f"--precision {precision.value}` makes it")
    build_warnings = check_options(plan, config)
    for text in build_warnings:
        log.warning("%s", text)
    gpu, targets = _device_and_targets(flavour, config, device)
    integrated = bool(gpu.pop("integrated", False)) if gpu else False
    onnx_sha = source.sha256
    options = config.to_dict()
    options["precision"] = precision.value
    key = engine_cache_key(onnx_sha256=onnx_sha, options=options, flavour_name=flavour.name,
                           version=flavour.version, device=gpu, targets=targets)
    if not force and (hit := _cached(engine_path, key)) is not None:
        log.info("reusing %s (same ONNX, options, %s %s and device)", engine_path, flavour.name,
                 flavour.version)
        return EngineArtifact(engine_path, sidecar_path(engine_path), hit, True,
                              time.perf_counter() - t0)
    if not (replace or force):
        existing = [p for p in (engine_path, sidecar_path(engine_path)) if p.exists()]
        if existing:
            raise BuildError(
                f"{existing[0]} exists and is not an engine built from {onnx_path.name} with "
                f"these options by {flavour.name} {flavour.version}; pass --force to replace "
                "it, or choose another output folder (-o) or --name")

    if gpu is not None:  # the build runs on a GPU: the one asked for
        _select_build_device(device)
    trt = flavour.module
    # TensorRT-RTX logs the built layers (VERBOSE) and cannot inspect an engine without a GPU;
    # NVIDIA TensorRT builds on the GPU, where the engine inspector is the documented source.
    logger = make_logger(trt, capture_layers=config.layer_info and flavour.is_rtx)
    builder = trt.Builder(logger)
    if builder is None:
        raise BuildError(f"{flavour.name} {flavour.version} could not create a builder: "
                         f"{'; '.join(logger.errors) or 'no details'}")
    with _graph_for(plan, onnx_path, meta.precision, engine_path) as graph_path:
        network, _parser = _parse_onnx(trt, builder, logger, plan, graph_path)
    profile, max_batch = _profile_shapes(network, config, onnx_path)
    check_build_target(config, profile=profile, device=gpu, integrated=integrated)
    builder_config = _configure(trt, builder, network, plan, config, profile, targets)

    timing: dict[str, Any] = {"used": False, "path": None}
    cache_file = None
    if config.timing_cache_dir is not None and plan.timing_cache:
        device_key = f"{gpu['name']}-sm{gpu['compute_capability']}" if gpu else "cpu"
        cache_file = Path(config.timing_cache_dir) / timing_cache_filename(
            flavour.name, flavour.version, device_key)
        timing = {"used": True, "path": str(cache_file),
                  "loaded_bytes": load_timing_cache(builder_config, cache_file)}
    elif config.timing_cache_dir is not None:
        timing["reason"] = build_warnings[-1] if build_warnings else "not supported"

    monitor = None
    if progress is not None and plan.progress_monitor and hasattr(trt, "IProgressMonitor"):
        monitor = _make_monitor(trt, progress)
        builder_config.progress_monitor = monitor

    t_build = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        serialized = builder.build_serialized_network(network, builder_config)
    build_seconds = time.perf_counter() - t_build
    if monitor is not None and monitor.error is not None:
        raise monitor.error
    if serialized is None:
        details = "\n  ".join(logger.errors) or "(TensorRT reported no error message)"
        hint = ("check the compute-capability targets (e.g. Turing SM75 lacks FP32 GEMM in "
                "TensorRT-RTX)" if flavour.is_rtx else
                "a larger --workspace-mib or a lower --opt-level can help; run with -vv for "
                "TensorRT's log")
        raise BuildError(f"{flavour.name} {flavour.version} failed to build an engine from "
                         f"{onnx_path}:\n  {details}\nhint: {hint}")
    plan_bytes = memoryview(serialized)
    if plan_bytes.nbytes == 0:
        raise BuildError(f"{flavour.name} returned an empty engine for {onnx_path}; run with -vv "
                         "and report TensorRT's log")
    if cache_file is not None:
        timing["saved_bytes"] = save_timing_cache(builder_config, cache_file)

    layers, layers_source = None, None
    if config.layer_info:
        if not flavour.is_rtx or gpu is not None:
            try:
                layers = _inspect_engine(trt, logger, plan_bytes, config)
                layers_source = "engine inspector" if layers else None
            except Exception as exc:  # inspection is a nicety; the engine itself is fine
                log.debug("engine inspector unavailable: %s", exc)
        if layers is None:
            layers = parse_layer_log(logger.layers_text)
            layers_source = "builder log" if layers else None

    calibration: Any = meta.raw.get("calibration")
    if calibration is not None:
        try:
            calibration = json.loads(calibration)
        except json.JSONDecodeError:
            pass
    first_input = network.get_input(0)
    sidecar = EngineSidecar(
        xception_trt_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(build_seconds, 3),
        engine=EngineFile(engine_path.name, plan_bytes.nbytes,
                          hashlib.sha256(plan_bytes).hexdigest()),
        tensorrt=TensorRTInfo(plan.flavour, flavour.version,
                              {k: v for k, v in plan.to_dict().items()
                               if k not in ("flavour", "version")}),
        device=(BuildDevice(str(gpu["name"]), str(gpu["compute_capability"]),
                            gpu.get("index")) if gpu else None),
        targets=tuple(targets) if targets is not None else None,
        host={"platform": platform.platform(), "cpu": cpu_model()},
        precision=precision,
        input_format=meta.input_format,
        inputs=tuple(_tensor_record(trt, network.get_input(i)) for i in range(network.num_inputs)),
        outputs=tuple(_tensor_record(trt, network.get_output(i))
                      for i in range(network.num_outputs)),
        # a fixed-shape graph needs no profile; its one shape is recorded as min = opt = max
        profile=(Profile(*(tuple(profile[k]) for k in ("min", "opt", "max"))) if profile
                 else Profile(*[tuple(int(d) for d in first_input.shape)] * 3)),
        dynamic_batch=profile is not None,
        max_batch=max_batch,
        onnx={"path": str(onnx_path), "sha256": onnx_sha, "metadata": dict(meta.raw)},
        model_spec=meta.spec,
        source_sha256=meta.raw.get("source_sha256"),
        calibration=calibration,
        build_options=options,
        timing_cache=timing,
        warnings=tuple(build_warnings),
        layers=tuple(layers) if layers is not None else None,
        layers_source=layers_source,
        cache_key=key,
        rebuild_command=rebuild_command(str(onnx_path), str(engine_path), config,
                                        precision=precision),
    )
    _write_outputs(engine_path, plan_bytes, sidecar)
    seconds = time.perf_counter() - t0
    log.info("built %s (%s, %.1f MiB) in %.2f s with %s %s", engine_path, precision.value,
             plan_bytes.nbytes / 2**20, build_seconds, flavour.name, flavour.version)
    return EngineArtifact(engine_path, sidecar_path(engine_path), sidecar, False, seconds)
