"""Which engine a bundle runs with on a machine: a pure function of (manifest, device facts,
request), so that every case — including every kind of mismatch — is tested on any machine.

Order: a prebuilt engine that loads here (TensorRT flavour and version, GPU compute capability
or hardware-compatibility level, precision, batch profile, DLA core; a GPU engine before a DLA
engine unless a DLA core is asked); else an engine built from
the bundled ONNX with the local TensorRT (NVIDIA TensorRT for this GPU, or TensorRT-RTX for its
compute capability); else the bundled ONNX with ONNX Runtime. Never a mismatched engine: the
compatibility rules are :func:`xception_trt.trt.compat.check_sidecar_compat`, the same the
TensorRT runner applies when it loads a plan.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass

from ..config import DEFAULT_MAX_BATCH, Flavour, Precision, StrEnum
from ..errors import BuildError, EngineError, renamed, renamed_attribute
from ..trt.compat import (
    check_sidecar_compat,
    compute_capability_tuple,
    network_and_precision_plan,
)
from .facts import DeviceFacts, GpuFact
from .format import EngineEntry, Manifest, VariantEntry

__all__ = ["ChoiceKind", "Request", "BuildTarget", "Rejection", "Choice", "choose",
           "engine_mismatch", "rtx_can_build_for", "onnxruntime_variant"]


class ChoiceKind(StrEnum):
    """How a bundle is run: a prebuilt engine, a locally built one, ONNX Runtime, or not."""

    PREBUILT = "prebuilt"
    BUILD = "build"
    ONNXRUNTIME = "onnxruntime"
    NONE = "none"


@dataclass(frozen=True)
class Request:
    """What the caller asks of a bundle.

    Attributes:
        precision: The precision to run.
        device: CUDA ordinal of the GPU to run on.
        max_batch: Largest batch the engine must accept (``None``: the bundle's profile).
        flavour: Only this TensorRT flavour (``None``: any); old name ``backend=``
            (deprecated).
        build: Whether building an engine from the bundled ONNX is allowed.
        onnxruntime: Whether ONNX Runtime may run the bundled ONNX when no engine can.
        tensorrt: Whether a TensorRT engine (prebuilt or built here) may run it; ``False``:
            ONNX Runtime runs it even where an engine could (a tuned choice of ONNX Runtime).
        dla_core: Only a prebuilt engine built for this DLA core (``None``: any engine; an
            engine built here targets the GPU, so none is built when a DLA core is asked).
        engine: Only this prebuilt engine (its member name, as a tuned choice records it;
            ``None``: any). Nothing is built when one is named: it runs, or ONNX Runtime where
            allowed.
    """

    precision: Precision
    device: int = 0
    max_batch: int | None = None
    flavour: str | None = None
    build: bool = True
    onnxruntime: bool = True
    backend: InitVar[str | None] = None
    tensorrt: bool = True
    dla_core: int | None = None
    engine: str | None = None

    def __post_init__(self, backend: str | None) -> None:
        object.__setattr__(self, "flavour", renamed("backend", "flavour", backend, self.flavour,
                                                    where="Request", stacklevel=4))


renamed_attribute(Request, "backend", "flavour")


@dataclass(frozen=True)
class BuildTarget:
    """An engine to build here.

    Attributes:
        flavour, version: The local TensorRT that builds it.
        gpu: The GPU it is for.
        targets: TensorRT-RTX compute-capability targets (``("SM89",)``); ``None`` for NVIDIA
            TensorRT (which builds for the GPU it runs on).
        onnx_precision: The bundled variant it is built from.
        profile: The ``(min, opt, max)`` batch profile.
    """

    flavour: str
    version: str
    gpu: GpuFact
    targets: tuple[str, ...] | None
    onnx_precision: Precision
    profile: tuple[int, int, int]

    def describe(self) -> str:
        where = ",".join(self.targets) if self.targets else self.gpu.sm
        return (f"{self.flavour} {self.version} for {where} ({self.gpu.name}), batch "
                f"{self.profile[0]}-{self.profile[2]}, from the {self.onnx_precision.value} ONNX")


@dataclass(frozen=True)
class Rejection:
    """A prebuilt engine that does not fit, or a way that is not available, and why."""

    what: str
    why: str


@dataclass(frozen=True)
class Choice:
    """The outcome of :func:`choose`.

    Attributes:
        kind: What runs the bundle.
        precision: The precision asked for.
        engine: The prebuilt engine (``PREBUILT``).
        build: The engine to build (``BUILD``).
        rejected: Every prebuilt engine and way not taken, with the reason.
        reason: One sentence: why this kind was chosen.
        variant: The bundled ONNX variant ONNX Runtime runs (``ONNXRUNTIME``).
        cause: Why no TensorRT engine runs it (``ONNXRUNTIME``; the start of ``reason``), the
            same for every precision on one machine (``doctor`` says it once).
    """

    kind: ChoiceKind
    precision: Precision
    engine: EngineEntry | None = None
    build: BuildTarget | None = None
    rejected: tuple[Rejection, ...] = ()
    reason: str = ""
    variant: VariantEntry | None = None
    cause: str = ""


def _short(exc: Exception) -> str:
    """A compatibility error without its rebuild command (the choice says what happens
    instead): ``"<reason> (this is <runtime> on sm_89)"``."""
    text = str(exc).split(" — ", 1)[0]
    if text.startswith("engine was built") and ": " in text:
        head, reason = text.split(": ", 1)
        here = head.split("; ", 1)[1] if "; " in head else ""
        return f"{reason} ({here})" if here else reason
    return text


#: Why no engine is used when ONNX Runtime was asked for (``Request.tensorrt=False``).
_NOT_ASKED = "TensorRT not asked for (ONNX Runtime was)"


def engine_mismatch(entry: EngineEntry, facts: DeviceFacts, request: Request) -> str | None:
    """Why a prebuilt engine cannot serve ``request`` here (``None``: it can)."""
    side = entry.sidecar
    if not request.tensorrt:
        return _NOT_ASKED
    if side.precision is not request.precision:
        return f"precision {side.precision.value}, {request.precision.value} asked"
    if request.flavour is not None and side.flavour != request.flavour:
        return f"built with {side.flavour}, flavour {request.flavour} asked"
    flavour = facts.flavour(side.flavour)
    if flavour is None:
        return f"built with {side.flavour}, which is not installed here"
    gpu = facts.gpu(request.device)
    try:
        check_sidecar_compat(side, flavour.name, flavour.version,
                             gpu.compute_capability if gpu else None,
                             integrated=gpu.integrated if gpu else False)
    except EngineError as exc:
        return _short(exc)
    if request.max_batch is not None and side.max_batch is not None \
            and request.max_batch > side.max_batch:
        return f"batch profile up to {side.max_batch}, batch {request.max_batch} asked"
    dla = side.option("dla_core")
    if request.dla_core is not None and (dla is None or int(dla) != request.dla_core):
        built = "the GPU" if dla is None else f"DLA core {dla}"
        return f"built for {built}, DLA core {request.dla_core} asked"
    if dla is not None and int(dla) >= facts.dla_cores:
        return f"built for DLA core {dla}; this machine has {facts.dla_cores} DLA core(s)"
    return None


def rtx_can_build_for(compute_capability: str) -> str | None:
    """Why TensorRT-RTX cannot target this GPU (``None``: it can). It builds for the discrete
    RTX architectures — Turing 7.5, Ampere 8.0/8.6, Ada 8.9, Blackwell 12.x — not for the
    Jetson integrated GPUs (7.2, 8.7, 11.0) nor the sm_9x/sm_10x datacenter GPUs."""
    cc = compute_capability_tuple(compute_capability)
    if cc in ((7, 5), (8, 0), (8, 6), (8, 9)) or cc[0] == 12:
        return None
    if cc in ((7, 2), (8, 7), (11, 0)):
        return (f"TensorRT-RTX does not build for sm_{cc[0]}{cc[1]} (a Jetson GPU); JetPack's "
                "NVIDIA TensorRT builds on the device")
    return (f"TensorRT-RTX does not build for sm_{cc[0]}{cc[1]} (it targets RTX GPUs: sm75, "
            "sm80, sm86, sm89, sm120); install NVIDIA TensorRT")


def _profile(manifest: Manifest, request: Request) -> tuple[int, int, int]:
    lo, opt, hi = manifest.batch_profile or (1, DEFAULT_MAX_BATCH, DEFAULT_MAX_BATCH)
    if request.max_batch is not None and request.max_batch > hi:
        return lo, request.max_batch, request.max_batch
    return lo, opt, hi


def _build_target(manifest: Manifest, facts: DeviceFacts, request: Request,
                  rejected: list[Rejection]) -> BuildTarget | None:
    gpu = facts.gpu(request.device)
    if not request.tensorrt:
        rejected.append(Rejection("build", _NOT_ASKED))
        return None
    if not request.build:
        rejected.append(Rejection("build", "building was not allowed"))
        return None
    if request.dla_core is not None:
        rejected.append(Rejection("build", f"DLA core {request.dla_core} asked; an engine built "
                                  "from a bundle targets the GPU (prebuild DLA engines with "
                                  "`xception-trt build --dla-core`)"))
        return None
    if gpu is None:
        why = f"no NVIDIA GPU {request.device} here" + (f" ({facts.gpu_reason})"
                                                        if facts.gpu_reason else "")
        rejected.append(Rejection("build", why))
        return None
    names: list[str] = ([request.flavour] if request.flavour
                        else list(Flavour.choices()))
    for name in names:
        flavour = facts.flavour(name)
        if flavour is None:
            rejected.append(Rejection(f"build with {name}", "not installed here"))
            continue
        refused = rtx_can_build_for(gpu.compute_capability) if name == "tensorrt_rtx" else None
        if refused is not None:
            rejected.append(Rejection(f"build with {name}", refused))
            continue
        try:
            plan = network_and_precision_plan(name, flavour.version, request.precision)
        except BuildError as exc:
            rejected.append(Rejection(f"build with {name} {flavour.version}", str(exc)))
            continue
        source = next((p for p in plan.onnx_precisions if p in manifest.variants), None)
        if source is None:
            rejected.append(Rejection(f"build with {name}", "the bundle has no "
                                      f"{'/'.join(p.value for p in plan.onnx_precisions)} ONNX"))
            continue
        if not facts.onnx:
            rejected.append(Rejection(f"build with {name}", "building reads the bundled ONNX "
                                      "with the onnx package, which is not installed (pip "
                                      "install 'xception-trt[onnx]')"))
            continue
        return BuildTarget(name, flavour.version, gpu,
                           (gpu.sm,) if name == "tensorrt_rtx" else None, source,
                           _profile(manifest, request))
    return None


def choose(manifest: Manifest, facts: DeviceFacts, request: Request) -> Choice:
    """Decide how to run a bundle here (pure: no I/O).

    Args:
        manifest: The bundle's manifest.
        facts: The machine (:func:`~xception_trt.bundle.facts.probe_facts`, or recorded).
        request: What is asked.

    Returns:
        A :class:`Choice`; ``kind`` is ``NONE`` when nothing can run it (``rejected`` says why
        for each way).

    Raises:
        BundleError: The bundle has no variant of the precision asked.
    """
    manifest.variant(request.precision)  # a precision the bundle lacks is the caller's mistake
    rejected: list[Rejection] = []
    # a GPU engine before a DLA one unless a DLA core is asked (DLA trades speed for power:
    # it runs where asked, or where it is the only engine that fits); else the bundle's order
    engines = (manifest.engines if request.dla_core is not None else
               sorted(manifest.engines, key=lambda e: e.sidecar.option("dla_core") is not None))
    if request.engine is not None:  # one engine named (a tuned choice): that one or none
        engines = tuple(e for e in engines if e.member == request.engine)
        if not engines:
            rejected.append(Rejection(f"prebuilt {request.engine}",
                                      "the bundle has no such engine"))
    for entry in engines:
        why = engine_mismatch(entry, facts, request)
        if why is None:
            return Choice(ChoiceKind.PREBUILT, request.precision, engine=entry,
                          rejected=tuple(rejected),
                          reason=f"prebuilt engine {entry.member} ({entry.describe()}) loads "
                                 "here")
        rejected.append(Rejection(f"prebuilt {entry.member} ({entry.describe()})", why))
    target = _build_target(manifest, facts, request, rejected) \
        if request.engine is None else None
    if target is not None:
        why = "the bundle has no prebuilt engine" if not manifest.engines else \
            "no prebuilt engine fits"
        return Choice(ChoiceKind.BUILD, request.precision, build=target,
                      rejected=tuple(rejected),
                      reason=f"{why} here; building {request.precision.value} with "
                             f"{target.describe()}")
    if not request.onnxruntime:
        rejected.append(Rejection("ONNX Runtime", "not allowed"))
    elif facts.ort_version is None:
        rejected.append(Rejection("ONNX Runtime", "not installed (pip install "
                                  "'xception-trt[ort]')"))
    else:
        builds = [r for r in rejected if r.what.startswith("build")]
        cause = ("ONNX Runtime was asked for" if not request.tensorrt
                 else f"no TensorRT engine can run here ({_summary(builds[-1:])})")
        return Choice(ChoiceKind.ONNXRUNTIME, request.precision, rejected=tuple(rejected),
                      variant=onnxruntime_variant(manifest, request.precision), cause=cause,
                      reason=f"{cause}; running the bundled {request.precision.value} ONNX with "
                             f"ONNX Runtime {facts.ort_version}")
    return Choice(ChoiceKind.NONE, request.precision, rejected=tuple(rejected),
                  reason=f"nothing here can run the bundle: {_summary(rejected)}")


def onnxruntime_variant(manifest: Manifest, precision: Precision) -> VariantEntry:
    """The bundled graph ONNX Runtime runs for ``precision``: the graph placed for ONNX Runtime
    where the bundle carries one (INT8: every Conv/Gemm fused into ONNX Runtime's quantized
    kernels, about 2x FP32 on a CPU with VNNI, where the TensorRT-placed graph is slower than
    FP32), else the variant of that precision.

    Raises:
        BundleError: The bundle has no variant of ``precision``.
    """
    return manifest.variant(precision).for_onnxruntime()


def _summary(rejected: list[Rejection]) -> str:
    return "; ".join(f"{r.what}: {r.why}" for r in rejected) or "no engine"
