"""Pure version logic of the TensorRT flavours: how each version builds our graphs and which
engines a runtime may load. No TensorRT import here, so all of it is tested on any machine.

Facts encoded here (NVIDIA documentation):

- TensorRT 8.6 (JetPack 5) is weakly typed: the network is created with ``EXPLICIT_BATCH`` and
  reduced precision is allowed with the ``FP16`` / ``INT8`` builder flags; an explicit Q/DQ graph
  builds with the ``INT8`` flag. It has no progress monitor (added in 10.0).
- TensorRT 10.x builds a network created with ``STRONGLY_TYPED`` exactly as the graph is typed:
  the FP16 or Q/DQ INT8 ONNX variant carries the precision, no precision flags.
- TensorRT 11.x removed weak typing: every network is strongly typed (the flag is deprecated and
  ignored) and the FP16/INT8 builder flags no longer exist.
- DLA ("Working with DLA", TensorRT 11.3/11.4.1 docs): 10.7 was the last 10.x release with DLA;
  11.0 to 11.4.0 have none on Jetson; 11.4.1 restores it on Jetson AGX Orin with JetPack 7.2.2+
  (the builder's ``num_DLA_cores`` then says whether this device has one). Releases after 11.4.1
  are allowed by this table but not documented here (11.5.0 has no JetPack build): there the
  builder's ``num_DLA_cores`` alone decides.
- TensorRT-RTX is always strongly typed, builds on a CPU for explicit compute-capability targets
  (``CURRENT`` needs a GPU), ignores the timing cache (deprecated no-op since 1.2; using it forces a
  GPU query), has no DLA, and its engines only load in the exact release that built them.
- DLA runs FP16 and INT8 only, and needs a fixed shape: min = opt = max for every profile
  ("Working with DLA": DLA supported layers and restrictions); with GPU fallback an FP32 or
  dynamic-batch network silently runs every layer on the GPU.
- Version-compatible engines (8.6+) run on later runtimes of the same major version, and across
  majors only 8 -> 9/10 and 10 -> 11; any other engine only on the exact version that built it,
  build number included ("in major, minor, patch, and build": TensorRT release notes,
  "Serialized engines are not portable"). Hardware-compatible (``AMPERE_PLUS``) engines are built
  on an Ampere or newer GPU and run on any GPU with compute capability >= 8.0, but not on
  JetPack / DRIVE OS ("Hardware Compatibility": "only supported for Ampere and later device
  architectures and is not supported on NVIDIA DRIVE OS or JetPack"); other engines only on the
  build GPU's compute capability.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import BuildConfig, Flavour, Precision, normalise_compute_capability
from ..errors import BuildError, EngineError
from ..jsonable import JsonMixin, json_field
from ..sidecar import SIDECAR_SCHEMA, EngineSidecar

__all__ = [
    "BuildPlan",
    "RTX_DEFAULT_TARGETS",
    "parse_version",
    "compute_capability_tuple",
    "network_and_precision_plan",
    "check_options",
    "check_build_target",
    "timing_cache_filename",
    "engine_cache_key",
    "rebuild_command",
    "check_sidecar_compat",
]

#: Compute capabilities a TensorRT-RTX engine built without explicit targets runs on: 8.0, 8.6,
#: 8.9 and 12.0 "and later" (TensorRT-RTX docs, CPU-only AOT); sm_90 datacenter GPUs are refused.
RTX_DEFAULT_TARGETS = ("SM80", "SM86", "SM89", "SM120")

def parse_version(version: str | Sequence[int]) -> tuple[int, ...]:
    """``"10.3.0.26"`` -> ``(10, 3, 0, 26)``; suffixes like ``rc1`` or ``+cuda12`` are dropped.

    Raises:
        BuildError: No leading number.
    """
    if not isinstance(version, str):
        return tuple(int(v) for v in version)
    parts = []
    for piece in version.strip().split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    if not parts:
        raise BuildError(f"cannot read the TensorRT version {version!r}")
    return tuple(parts)


def profile_zero_for_one_context(flavour_name: str, version: str | Sequence[int]) -> bool:
    """Whether this TensorRT gives optimization profile 0 to only one execution context of an
    engine at a time: NVIDIA TensorRT before 9.0 (8.6, JetPack 5). "The execution context
    created will call setOptimizationProfile(0) implicitly if there are no other execution
    contexts assigned to optimization profile 0 ... starting in TensorRT 9.0" every profile
    defaults to 0; until then a later context has profile -1 "and all calls to enqueueV2()/
    enqueueV3()/executeV2() will fail until a valid profile index has been set" (TensorRT 8.6
    ``NvInferRuntime.h``, ``createExecutionContext`` / ``getOptimizationProfile``)."""
    return flavour_name == "tensorrt" and parse_version(version)[:1] < (9,)


def compute_capability_tuple(value: str) -> tuple[int, int]:
    """``"8.6"``, ``"sm_86"`` or ``"SM120"`` -> ``(8, 6)`` / ``(12, 0)``.

    Raises:
        EngineError: Not a concrete compute capability (e.g. ``CURRENT``).
    """
    text = str(value).strip()
    if re.fullmatch(r"\d+\.\d+", text):
        major, minor = text.split(".")
        return int(major), int(minor)
    try:
        name = normalise_compute_capability(text)
    except ValueError:
        name = ""
    if not name.startswith("SM"):
        raise EngineError(f"{value!r} is not a concrete compute capability")
    digits = name[2:]
    return int(digits[:-1]), int(digits[-1])


def _cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


@dataclass(frozen=True)
class BuildPlan(JsonMixin):
    """What one TensorRT version needs to build a graph of one precision, and what it offers.

    Attributes:
        flavour: ``tensorrt`` or ``tensorrt_rtx``.
        version: Parsed version.
        precision: The engine's precision.
        strongly_typed: The network is strongly typed (precision comes from the graph).
        network_flags: ``NetworkDefinitionCreationFlag`` member names to set.
        builder_flags: ``BuilderFlag`` member names that enable the precision (weak typing).
        onnx_precisions: Precisions of ONNX variant this plan builds the engine from.
        progress_monitor: ``IProgressMonitor`` exists.
        timing_cache: A timing cache has an effect.
        compute_capabilities: Explicit compute-capability targets can be set (TensorRT-RTX).
        dla: DLA cores can be targeted.
        version_compatible: ``BuilderFlag.VERSION_COMPATIBLE`` is supported.
        hardware_compatible: ``HardwareCompatibilityLevel.AMPERE_PLUS`` is supported.
        notes: Why, in words (for logs and the sidecar).
        int8_weights: A Q/DQ INT8 graph may store its weights as INT8 initializers read by
            ``DequantizeLinear`` (TensorRT 10+, TensorRT-RTX: "You can specify weights of Q/DQ
            models using a high-precision data type ... or a low-precision quantized type
            (INT8 ...)"). TensorRT 8.6 takes Q/DQ weights in FP32 only: the builder gives it
            the float-weight form (:func:`xception_trt.graph.to_float_weights`).
    """

    # JSON (the sidecar's "tensorrt" section): the plan, not what the version offers
    flavour: str
    version: tuple[int, ...] = json_field(encode=lambda v: ".".join(map(str, v)))
    precision: Precision = json_field()
    strongly_typed: bool = json_field()
    network_flags: tuple[str, ...] = json_field()
    builder_flags: tuple[str, ...] = json_field()
    onnx_precisions: tuple[Precision, ...] = json_field()
    progress_monitor: bool = json_field(skip=True)
    timing_cache: bool = json_field(skip=True)
    compute_capabilities: bool = json_field(skip=True)
    dla: bool = json_field(skip=True)
    version_compatible: bool = json_field(skip=True)
    hardware_compatible: bool = json_field(skip=True)
    notes: tuple[str, ...] = ()
    int8_weights: bool = json_field(default=True, skip=True)


def network_and_precision_plan(flavour_name: str, version: str | Sequence[int],
                               precision: Precision | str) -> BuildPlan:
    """The one place that decides, per TensorRT flavour and version, how a precision is built.

    Args:
        flavour_name: ``tensorrt`` or ``tensorrt_rtx``.
        version: The flavour's ``__version__`` (``"10.3.0.26"``) or a parsed tuple.
        precision: The engine precision wanted.

    Returns:
        The :class:`BuildPlan`.

    Raises:
        BuildError: Unknown flavour, or a TensorRT older than 8.6.
    """
    prec = Precision.parse(precision)
    ver = parse_version(version)
    if flavour_name == "tensorrt_rtx":
        return BuildPlan(
            flavour_name, ver, prec, strongly_typed=True, network_flags=(),
            builder_flags=(), onnx_precisions=(prec,), progress_monitor=True,
            timing_cache=False, compute_capabilities=True, dla=False,
            version_compatible=False, hardware_compatible=False,
            notes=("TensorRT-RTX networks are always strongly typed: the graph carries the "
                   "prec",
                   "timing cache ignored: it is a no-op in TensorRT-RTX and would force a GPU "
                   "query"))
    if flavour_name != "tensorrt":
        raise BuildError(f"unknown TensorRT flavour {flavour_name!r}; choose one of: "
                         f"{', '.join(Flavour.choices())}")
    if ver < (8, 6):
        raise BuildError(f"TensorRT {'.'.join(map(str, ver))} is too old: xception-trt needs "
                         "TensorRT 8.6 (JetPack 5) or newer; upgrade TensorRT/JetPack")
    if ver < (10,):
        flags = {Precision.FP32: (), Precision.FP16: ("FP16",), Precision.INT8: ("INT8",)}
        sources = {Precision.FP32: (Precision.FP32,),
                   Precision.FP16: (Precision.FP32, Precision.FP16),
                   Precision.INT8: (Precision.INT8,)}
        return BuildPlan(
            flavour_name, ver, prec, strongly_typed=False,
            network_flags=("EXPLICIT_BATCH",), builder_flags=flags[prec],
            onnx_precisions=sources[prec], progress_monitor=False, timing_cache=True,
            compute_capabilities=False, dla=True, version_compatible=True,
            hardware_compatible=True, int8_weights=False,
            notes=("TensorRT < 10 has no strongly typed networks: prec is allowed with "
                   "builder flags (FP16 from the FP32 or FP16 graph; INT8 from the Q/DQ graph)",
                   "TensorRT < 10 takes Q/DQ weights in FP32: an INT8-weight graph is built "
                   "from its float-weight form"))
    if ver < (11,):
        return BuildPlan(
            flavour_name, ver, prec, strongly_typed=True,
            network_flags=("STRONGLY_TYPED",), builder_flags=(), onnx_precisions=(prec,),
            progress_monitor=True, timing_cache=True, compute_capabilities=False,
            dla=ver[:2] <= (10, 7), version_compatible=True, hardware_compatible=True,
            notes=("TensorRT 10 builds a STRONGLY_TYPED network: the graph carries the "
                   "prec",))
    return BuildPlan(
        flavour_name, ver, prec, strongly_typed=True, network_flags=(), builder_flags=(),
        onnx_precisions=(prec,), progress_monitor=True, timing_cache=True,
        compute_capabilities=False, dla=ver[:3] >= (11, 4, 1), version_compatible=True,
        hardware_compatible=True,
        notes=("TensorRT 11 networks are always strongly typed (STRONGLY_TYPED is ignored); the "
               "graph carries the prec",))


def check_options(plan: BuildPlan, config: BuildConfig) -> list[str]:
    """Refuse build options the planned TensorRT cannot honour; return warnings for ignored ones.

    Returns:
        Warnings (e.g. a timing cache TensorRT-RTX ignores).

    Raises:
        BuildError: An option this TensorRT flavour/version cannot honour (message says what to do).
    """
    name = f"{plan.flavour} {'.'.join(map(str, plan.version))}"
    if config.dla_core is not None and not plan.dla:
        raise BuildError(f"{name} cannot build for a DLA core; DLA needs NVIDIA TensorRT 8.6 to "
                         "10.7 (JetPack 5/6) or 11.4.1 (JetPack 7.2.2+ on AGX Orin; later "
                         "releases where the Jetson build reports DLA cores) on a Jetson — drop "
                         "--dla-core or use one of those releases")
    if config.dla_core is not None and plan.precision is Precision.FP32:
        raise BuildError("DLA runs FP16 and INT8 only; an FP32 engine with --dla-core would run "
                         "every layer on the GPU (GPU fallback) or fail to build — use "
                         "--precision fp16 or int8 with --dla-core, or drop --dla-core")
    if config.cc and not plan.compute_capabilities:
        raise BuildError(f"compute-capability targets are a TensorRT-RTX option; {name} builds "
                         "for the GPU it runs on — drop --cc (or use --hardware-compatible for "
                         "any Ampere+ GPU, or --flavour tensorrt_rtx)")
    if config.version_compatible and not plan.version_compatible:
        raise BuildError(f"{name} cannot build version-compatible engines (TensorRT-RTX engines "
                         "only load in the release that built them) — drop --version-compatible")
    if config.hardware_compatible and not plan.hardware_compatible:
        raise BuildError(f"{name} has no hardware-compatibility mode; TensorRT-RTX engines are "
                         "portable through compute-capability targets — use --cc instead")
    warnings = []
    if config.timing_cache_dir is not None and not plan.timing_cache:
        warnings.append(f"timing cache not used: {name} ignores it (deprecated no-op since "
                        "TensorRT-RTX 1.2)")
    return warnings


def check_build_target(config: BuildConfig, *, profile: Mapping[str, Sequence[int]] | None,
                       device: Mapping[str, Any] | None, integrated: bool = False) -> None:
    """Refuse what the build GPU and batch profile cannot honour (after the graph is read).

    Args:
        config: The build options.
        profile: The batch profile (``{"min", "opt", "max"}`` shapes), ``None`` for a graph of
            fixed shape.
        device: The build GPU (``compute_capability``), ``None`` for a CPU build.
        integrated: The build GPU is an integrated one (Jetson / JetPack, DRIVE).

    Raises:
        BuildError: DLA with a dynamic batch; a hardware-compatible build on a GPU older than
            Ampere or on an integrated (JetPack) GPU.
    """
    if config.dla_core is not None and profile is not None \
            and not list(profile["min"]) == list(profile["opt"]) == list(profile["max"]):
        raise BuildError(f"DLA needs a fixed batch (min = opt = max), the profile is "
                         f"{profile['min'][0]}/{profile['opt'][0]}/{profile['max'][0]}: with "
                         "GPU fallback every layer would silently run on the GPU — pass "
                         "--batch N with --dla-core")
    if config.hardware_compatible and device is not None:
        cc = compute_capability_tuple(str(device.get("compute_capability")))
        if cc < (8, 0):
            raise BuildError(f"hardware-compatible engines are built on an Ampere or newer GPU; "
                             f"this one is compute capability {_cc_text(cc)} — build on an "
                             "Ampere+ GPU, or drop --hardware-compatible")
        if integrated:
            raise BuildError("hardware compatibility is not supported on JetPack (integrated "
                             "Jetson GPU): drop --hardware-compatible; build on each device "
                             "type instead")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


def timing_cache_filename(flavour_name: str, version: str, device_key: str) -> str:
    """File name of the timing cache for one flavour, version and device (caches are only valid
    for the exact TensorRT version and GPU that wrote them)."""
    return f"{_slug(flavour_name)}-{_slug(version)}-{_slug(device_key)}.timing-cache"


def engine_cache_key(*, onnx_sha256: str, options: Mapping[str, Any], flavour_name: str,
                     version: str, device: Mapping[str, Any] | None,
                     targets: Sequence[str] | None) -> str:
    """Content hash deciding whether an existing engine can be reused.

    Options that do not change the engine (the timing-cache directory) are excluded.
    """
    opts = {k: v for k, v in options.items() if k != "timing_cache_dir"}
    payload = {
        "schema": SIDECAR_SCHEMA, "onnx_sha256": onnx_sha256, "options": opts,
        "flavour": flavour_name, "version": version,
        "device": None if device is None else {"name": device.get("name"),
                                               "compute_capability":
                                                   device.get("compute_capability")},
        "targets": None if targets is None else list(targets),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def rebuild_command(onnx_path: str, engine_path: str, config: BuildConfig, *,
                    precision: Precision | None = None) -> str:
    """The ``xception-trt build`` command line that rebuilds an engine with the same options
    (without ``--flavour``, which the caller adds for the runtime at hand)."""
    out_dir = str(engine_path).rsplit("/", 1)[0] if "/" in str(engine_path) else "."
    argv = ["xception-trt", "build", str(onnx_path), "-o", out_dir]
    prec = precision or config.precision
    if prec is not None:
        argv += ["--precision", Precision.parse(prec).value]
    if config.batch is not None:
        argv += ["--batch", str(config.batch)]
    else:
        lo, opt, hi = config.profile
        argv += ["--min-batch", str(lo), "--opt-batch", str(opt), "--max-batch", str(hi)]
    if config.workspace_mib is not None:
        argv += ["--workspace-mib", str(config.workspace_mib)]
    if config.optimization_level is not None:
        argv += ["--opt-level", str(config.optimization_level)]
    if config.dla_core is not None:
        argv += ["--dla-core", str(config.dla_core)]
        if not config.gpu_fallback:
            argv.append("--no-gpu-fallback")
    if config.version_compatible:
        argv.append("--version-compatible")
    if config.hardware_compatible:
        argv.append("--hardware-compatible")
    if config.cc:
        argv += ["--cc", *config.cc]
    return " ".join(shlex.quote(a) for a in argv)


def _same_release(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return a[:3] == b[:3]


def _version_compatible_runs(built: tuple[int, ...], runtime: tuple[int, ...]) -> bool:
    if runtime[:3] < built[:3]:
        return False
    if runtime[0] == built[0]:
        return True
    return (built[0], runtime[0]) in {(8, 9), (8, 10), (10, 11)}


def check_sidecar_compat(sidecar: EngineSidecar, flavour_name: str, version: str,
                         device_cc: str | None, *, integrated: bool = False) -> None:
    """Check that an engine described by ``sidecar`` can load in this runtime on this GPU.

    Args:
        sidecar: The engine's sidecar (:func:`xception_trt.sidecar.read_sidecar`).
        flavour_name: The runtime's flavour (``tensorrt`` / ``tensorrt_rtx``).
        version: The runtime's ``__version__``.
        device_cc: The GPU's compute capability (``"8.7"``), or ``None`` without a GPU.
        integrated: The GPU is an integrated one (Jetson / JetPack).

    Raises:
        EngineError: The engine cannot run here; the message says why and gives the command that
            rebuilds it for this runtime.
    """
    built_flavour, built_version = sidecar.tensorrt.flavour, sidecar.tensorrt.version
    fix = f"rebuild it here with: {sidecar.rebuild_command} --flavour {flavour_name}"
    built_cc = sidecar.device.compute_capability if sidecar.device else None
    built_on = f" on sm_{built_cc.replace('.', '')}" if built_cc else ""
    here = f"{flavour_name} {version}" + (f" on sm_{device_cc.replace('.', '')}"
                                          if device_cc else " without a GPU")
    what = f"engine was built with {built_flavour} {built_version}{built_on}; this is {here}"

    if built_flavour != flavour_name:
        raise EngineError(f"{what}: engines do not load across TensorRT flavours — {fix}")
    b_ver, r_ver = parse_version(built_version), parse_version(version)
    if flavour_name == "tensorrt_rtx":
        if not _same_release(b_ver, r_ver):
            raise EngineError(f"{what}: TensorRT-RTX engines only load in the release that "
                              f"built them — {fix}")
    elif sidecar.option("version_compatible"):
        if not _version_compatible_runs(b_ver, r_ver):
            raise EngineError(f"{what}: a version-compatible engine runs on the same or a later "
                              f"TensorRT of the same major version (or 8->10, 10->11) — {fix}")
    elif b_ver != r_ver:  # the full version: major, minor, patch and build
        raise EngineError(f"{what}: TensorRT engines only load in the version that built them, "
                          f"build number included (build with --version-compatible to relax "
                          f"this) — {fix}")

    if device_cc is None:
        raise EngineError(f"{what}: running a TensorRT engine needs an NVIDIA GPU with a driver "
                          "(none found); run the ONNX file with ONNX Runtime instead")
    cc = compute_capability_tuple(device_cc)
    if flavour_name == "tensorrt_rtx":
        targets = list(sidecar.targets or RTX_DEFAULT_TARGETS)
        if targets == ["CURRENT"]:
            allowed = [compute_capability_tuple(built_cc)] if built_cc else []
            later_ok = False
        else:
            allowed = [compute_capability_tuple(t) for t in targets]
            later_ok = not sidecar.targets  # the default targets include "12.0 and later"
        ok = cc in allowed or (later_ok and cc >= (12, 0))
        if not ok:
            names = ", ".join(_cc_text(c) for c in allowed) or "the build GPU"
            raise EngineError(f"{what}: the engine targets compute capability {names}"
                              f"{' and >= 12.0' if later_ok else ''} — {fix} (add --cc "
                              f"sm{device_cc.replace('.', '')})")
        return
    if sidecar.option("hardware_compatible"):
        if integrated:
            raise EngineError(f"{what}: hardware-compatible engines are not supported on JetPack "
                              f"(integrated GPU) — {fix} (without --hardware-compatible)")
        if cc < (8, 0):
            raise EngineError(f"{what}: a hardware-compatible engine needs an Ampere or newer "
                              f"GPU (compute capability >= 8.0) — {fix}")
        return
    if built_cc is None or compute_capability_tuple(built_cc) != cc:
        raise EngineError(f"{what}: TensorRT engines only run on the GPU architecture that "
                          f"built them (build with --hardware-compatible for any Ampere+ GPU) — "
                          f"{fix}")
