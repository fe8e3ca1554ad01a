"""One pipeline from a checkpoint to TensorRT engines: export, precision variants, engines.

``xception-trt build`` (:func:`build`), the bundle writer and the demo all run these steps
through one runner (:class:`Steps`: each step reports through :class:`PipelineCallbacks` and
returns a :class:`StepOutcome` - ran, cached, skipped or failed), so a file made by one is
reused by the others' rules too. Each ONNX graph a step uses is read and hashed once
(:class:`~xception_trt.onnx_meta.OnnxSource`) and that value is handed down. Each stage
reuses its previous output when nothing it depends on changed, and says so (``reused`` in its
result):

- **export** (:func:`export_checkpoint`): checkpoint -> cleaned FP32 ONNX with a dynamic batch.
  Reused when the file's metadata names the same checkpoint (SHA-256), opset and input format.
- **variants** (:func:`make_variant`): FP32 ONNX -> FP16 (ModelOpt AutoCast) or INT8
  (calibrated Q/DQ, through the calibration cache; placed for TensorRT, or for ONNX Runtime's
  CPU kernels as ``int8-ort.onnx``, which no engine is built from). Reused when the variants
  manifest (:attr:`ArtifactLayout.manifest`) records the same recipe - the FP32 graph's SHA-256, the
  calibration folder's fingerprint (:func:`calibration_fingerprint`), the calibration method
  and, when the caller chose it, the number of calibration images - and the file still has the
  SHA-256 recorded with it.
- **engines** (:func:`build_engines`): one TensorRT engine and sidecar per ONNX graph through
  :func:`xception_trt.trt.builder.build_engine`, which reuses an engine built from the same
  ONNX bytes with the same options, TensorRT and device.

The library never prints: progress goes to an optional :class:`PipelineCallbacks`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .config import BuildConfig, InputFormat, Placement, Precision, check_int
from .errors import BuildError, ConfigError, GraphError, XceptionTRTError
from .fsio import atomic_write_json, path_problem, sha256_file
from .hub import is_hub_id, local_file
from .onnx_meta import OnnxSource, read_file_metadata
from .precision import (
    AutoQuantizeResult,
    CalibrationMethod,
    Progress,
    QuantizeResult,
    auto_quantize_int8,
    quantize_int8,
    to_fp16,
)
from .runners import BuiltEngine

if TYPE_CHECKING:  # only for annotations: importing trt.builder stays lazy (see build_engines)
    from .export import ExportResult
    from .trt.builder import BuildProgress, EngineArtifact

__all__ = ["AUTO_CALIBRATION", "CACHED", "CALIBRATION_CHOICES", "FAILED", "RAN", "SKIPPED",
           "ArtifactLayout", "BuildResult", "EngineFailure", "EngineJob", "EngineOutcome",
           "EnginesResult", "ExportOutcome", "PipelineCallbacks", "StepOutcome", "Steps",
           "VariantOutcome", "build", "build_engines", "calibration_fingerprint",
           "export_checkpoint", "export_step", "make_variant", "parse_calibration_method",
           "variant_name", "variant_step"]

log = logging.getLogger(__name__)

#: The calibration "method" that calibrates with every method and keeps the best on held-out
#: calibration images (:func:`xception_trt.precision.auto_quantize_int8`).
AUTO_CALIBRATION = "auto"
#: Every value :func:`make_variant` accepts as ``calibration_method``.
CALIBRATION_CHOICES: tuple[str, ...] = (*CalibrationMethod.choices(), AUTO_CALIBRATION)


# ---------------------------------------------------------------------------------------------
# where files go


def variant_name(precision: Precision | str,
                 placement: Placement | str = Placement.TENSORRT) -> str:
    """A variant's name in file names and the variants manifest: the precision's value, and
    ``int8-ort`` for INT8 placed for ONNX Runtime.

    Raises:
        ConfigError: A placement for FP32 or FP16 (only INT8 has Q/DQ to place).
    """
    prec: Precision = Precision.parse(precision)
    if Placement.parse(placement) is Placement.TENSORRT:
        return prec.value
    if prec is not Precision.INT8:
        raise ConfigError(f"only int8 has a placement; {prec.value} has no Q/DQ to place")
    return "int8-ort"


@dataclass(frozen=True)
class ArtifactLayout:
    """Where the pipeline's files go.

    Attributes:
        onnx_dir: The ONNX graphs and the variants manifest.
        engine_dir: The engines and their sidecars.
        stem: File stem: ``<stem>.onnx`` (FP32), ``<stem>.fp16.onnx``, ``<stem>.int8-ort.onnx``
            (INT8 placed for ONNX Runtime), ``<stem>.variants.json``, ``<stem>.int8.engine``;
            empty: ``fp32.onnx``, ``fp16.onnx``, ``int8-ort.onnx``, ``variants.json``,
            ``int8.engine``.
        calibration_cache_dir: The INT8 calibration cache (``None``: calibrate every time).
    """

    onnx_dir: Path
    engine_dir: Path
    stem: str = ""
    calibration_cache_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "onnx_dir", Path(self.onnx_dir))
        object.__setattr__(self, "engine_dir", Path(self.engine_dir))
        if self.calibration_cache_dir is not None:
            object.__setattr__(self, "calibration_cache_dir", Path(self.calibration_cache_dir))

    @classmethod
    def in_folder(cls, folder: str | os.PathLike[str], *, stem: str) -> ArtifactLayout:
        """Everything in one folder, as ``xception-trt build -o FOLDER`` writes it (the
        calibration cache in ``FOLDER/calibration-cache``)."""
        folder = Path(folder)
        return cls(folder, folder, stem, folder / "calibration-cache")

    def _name(self, suffix: str) -> str:
        return f"{self.stem}.{suffix}" if self.stem else suffix

    def onnx(self, precision: Precision | str,
             placement: Placement | str = Placement.TENSORRT) -> Path:
        """The ONNX graph of ``precision`` (the export itself for FP32); INT8 placed for ONNX
        Runtime (``placement="onnxruntime"``) is ``int8-ort.onnx``."""
        prec: Precision = Precision.parse(precision)
        if prec is Precision.FP32 and self.stem:
            return self.onnx_dir / f"{self.stem}.onnx"
        return self.onnx_dir / self._name(f"{variant_name(prec, placement)}.onnx")

    @property
    def manifest(self) -> Path:
        """The variants manifest: the recipe and SHA-256 of each variant made."""
        return self.onnx_dir / self._name("variants.json")

    def engine(self, precision: Precision | str) -> Path:
        """The engine of ``precision`` (its sidecar is ``<engine>.json``)."""
        return self.engine_dir / self._name(f"{Precision.parse(precision).value}.engine")


# ---------------------------------------------------------------------------------------------
# results and progress


@dataclass(frozen=True)
class ExportOutcome:
    """The FP32 ONNX graph of a checkpoint.

    Attributes:
        path: The ONNX file.
        reused: True when an earlier export of the same checkpoint and settings was kept.
        result: What the exporter reported (``None`` when reused).
    """

    path: Path
    reused: bool
    result: ExportResult | None = None


@dataclass(frozen=True)
class VariantOutcome:
    """One FP16 or INT8 ONNX variant.

    Attributes:
        precision: FP16 or INT8.
        placement: INT8's Q/DQ placement (for TensorRT, or ONNX Runtime's CPU kernels).
        path: The ONNX file.
        reused: True when the manifest showed the file was made by the same recipe.
        recipe: What the variant was made from (as recorded in the manifest).
        quantize: The INT8 calibration's result (``None`` for FP16 or when reused).
        auto: Every method tried, with ``calibration_method="auto"`` (else ``None``).
        sha256: The file's SHA-256, as checked against (or written to) the manifest.
    """

    precision: Precision
    path: Path
    reused: bool
    recipe: Mapping[str, Any]
    quantize: QuantizeResult | None = None
    auto: AutoQuantizeResult | None = None
    sha256: str | None = None
    placement: Placement = Placement.TENSORRT


@dataclass(frozen=True)
class EngineOutcome:
    """One engine built (or reused).

    Attributes:
        precision: The engine's precision.
        artifact: The plan, its sidecar and whether it was reused.
    """

    precision: Precision
    artifact: EngineArtifact

    def describe(self) -> str:
        """One human-readable line: path, size, TensorRT, targets, profile, built or reused."""
        art = self.artifact
        side = art.sidecar
        how = ("reused (identical engine exists)" if art.cache_hit
               else f"built in {side.build_seconds:.1f} s")
        where = (f"targets {', '.join(side.targets)}" if side.targets
                 else (f"on {side.device.name}" if side.device else "default targets"))
        return (f"{self.precision.value}: {art.path} ({art.size_bytes / 2**20:.1f} MiB, "
                f"{side.flavour} {side.tensorrt.version}, {where}, "
                f"max batch {side.max_batch}) {how}")

    # Hand-written: a flat summary of the artifact and its sidecar, not this class's fields.
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (what ``xception-trt build --json`` prints per engine)."""
        a = self.artifact
        side = a.sidecar
        return {"precision": side.precision.value, "engine": str(a.path),
                "sidecar": str(a.sidecar_path), "bytes": a.size_bytes,
                "cache_hit": a.cache_hit, "seconds": round(a.seconds, 3),
                "flavour": side.flavour, "version": side.tensorrt.version,
                "targets": list(side.targets) if side.targets else None,
                "device": side.device.to_dict() if side.device else None}


@dataclass(frozen=True)
class EngineFailure:
    """An engine that could not be built (with ``keep_going``).

    Attributes:
        precision: The engine's precision.
        error: Why.
    """

    precision: Precision
    error: XceptionTRTError


@dataclass(frozen=True)
class EnginesResult:
    """What :func:`build_engines` built, in the order asked, and what failed."""

    engines: tuple[EngineOutcome, ...]
    failures: tuple[EngineFailure, ...] = ()


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build` made.

    Attributes:
        layout: Where the files are.
        export: The checkpoint's export (``None`` when the source was an ONNX file).
        variants: The FP16 / INT8 variants made or reused for the engines.
        engines: One engine per precision asked, in that order.
        graphs: The ONNX graph each engine was built from, by precision.
    """

    layout: ArtifactLayout
    export: ExportOutcome | None
    variants: tuple[VariantOutcome, ...]
    engines: tuple[EngineOutcome, ...]
    graphs: Mapping[Precision, Path] = field(default_factory=dict)

    def _built(self, precision: Precision | str) -> EngineOutcome:
        prec: Precision = Precision.parse(precision)
        for outcome in self.engines:
            if outcome.precision is prec:
                return outcome
        built = ", ".join(e.precision.value for e in self.engines) or "none"
        raise ConfigError(f"no {prec.value} engine was built (built: {built}); ask for it with "
                          f"precisions=[..., {prec.value!r}]")

    def engine(self, precision: Precision | str) -> BuiltEngine:
        """The engine of ``precision`` (``"fp16"`` or :class:`Precision`) with the ONNX graph it
        was built from.

        :func:`~xception_trt.runners.open_runner` and :class:`~xception_trt.classifier.Classifier`
        open it by a bundle's rule: the engine where this machine can run it, else that graph
        with ONNX Runtime (with a warning that says why). ``str()`` / ``os.fspath()`` give the
        engine file's path (which opens the engine and nothing else).

        Raises:
            ConfigError: No engine of that precision was built (the message lists those built).
        """
        return BuiltEngine(self._built(precision).artifact.path, self.onnx(precision))

    def onnx(self, precision: Precision | str) -> Path:
        """The ONNX graph the engine of ``precision`` was built from (the FP32 export, the
        source ONNX, or an FP16 / INT8 variant).

        Raises:
            ConfigError: No engine of that precision was built (the message lists those built).
        """
        outcome = self._built(precision)
        return self.graphs.get(outcome.precision) or Path(outcome.artifact.sidecar.onnx["path"])


class PipelineCallbacks:
    """Progress hooks of the pipeline (override what you need; the defaults do nothing).

    The library never prints; the CLI subclasses this to print a line per engine and to
    draw TensorRT's build phases as a progress bar.
    """

    def on_export(self, outcome: ExportOutcome) -> None:
        """Called after the checkpoint was exported (or its export reused)."""

    def on_variant(self, outcome: VariantOutcome) -> None:
        """Called after an FP16 / INT8 variant was made (or reused)."""

    def on_progress(self, stage: str, done: int, total: int | None) -> None:
        """Called as a long step advances: ``("export", 0, None)`` before an export,
        ``("fp16 variant", 0, None)`` / ``("int8 variant", 0, None)`` before a variant, then
        INT8's ``("decode calibration images", images, selected)`` and
        ``("calibrate METHOD", batches fed, batches)`` (see
        :func:`xception_trt.precision.quantize_int8`)."""

    def engine_progress(self, precision: Precision
                        ) -> contextlib.AbstractContextManager[BuildProgress | None]:
        """A context around one engine build that yields TensorRT's progress receiver (or
        ``None``); it is entered before the build and left after it, even when it fails."""
        return contextlib.nullcontext()

    def on_engine(self, outcome: EngineOutcome) -> None:
        """Called after each engine was built (or reused)."""


# ---------------------------------------------------------------------------------------------
# stages


def export_checkpoint(*, checkpoint: str | os.PathLike[str], output: str | os.PathLike[str],
                      opset: int | None = None,
                      input_format: InputFormat | str = InputFormat.FLOAT_NCHW,
                      force: bool = False, replace: bool = True) -> ExportOutcome:
    """Export a checkpoint to a cleaned FP32 ONNX graph with a dynamic batch, or reuse it.

    Args:
        checkpoint: Any checkpoint :func:`xception_trt.checkpoint.load_model` reads.
        output: The ONNX file to write.
        opset: ONNX opset (``None``: the exporter's default, 17).
        input_format: ``float-nchw`` or ``uint8-nhwc``.
        force: Export even when ``output`` holds an export of the same checkpoint and settings.
        replace: Replace an existing ``output`` that is not such an export; ``False`` refuses it.

    Returns:
        An :class:`ExportOutcome`.

    Raises:
        CheckpointError / ExportError / GraphError: From :func:`xception_trt.export.export_onnx`.
    """
    from .export import DEFAULT_OPSET, export_onnx  # torch and onnx: only when exporting

    opset = DEFAULT_OPSET if opset is None else opset
    target = Path(output)
    fmt = InputFormat.parse(input_format)
    if not force and target.is_file():
        try:
            # the metadata only, not the graph: exports are written atomically, and a graph
            # damaged on disk afterwards fails in the next step's parser, naming the file
            meta = read_file_metadata(target)
            settings = meta.json_field("export") or {}
            if (meta.raw.get("source_sha256") == sha256_file(local_file(checkpoint))
                    and settings.get("opset") == opset
                    and settings.get("batch") == "dynamic"
                    and meta.input_format is fmt):
                log.info("reusing %s (same checkpoint and export settings)", target)
                return ExportOutcome(target, True)
        except (GraphError, ValueError) as exc:
            log.info("re-exporting %s: %s", target, exc)
    if not (replace or force) and target.exists():
        _refuse_replacing(target, "is not an export of this checkpoint with these settings")
    result = export_onnx(checkpoint, target, opset=opset, batch="dynamic", input_format=fmt)
    return ExportOutcome(result.path, False, result)


def _refuse_replacing(path: Path, why: str) -> None:
    """The one output rule of ``build``: an existing output that differs is not replaced
    without ``--force``."""
    raise BuildError(f"{path} exists and {why}; pass --force to replace it, or choose another "
                     "output folder (-o) or --name")


def calibration_fingerprint(folder: str | os.PathLike[str] | None) -> str | None:
    """Identity of a calibration folder: SHA-256 of its files' names, sizes and modification
    times (``None`` for no folder)."""
    if folder is None:
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def parse_calibration_method(value: CalibrationMethod | str | None) -> str | None:
    """The plain value of a calibration method, ``"auto"`` or ``None`` (the default method).

    Raises:
        ConfigError: Anything else; the message lists :data:`CALIBRATION_CHOICES`.
    """
    if value is None or value == AUTO_CALIBRATION:
        return value
    try:
        return CalibrationMethod(value).value
    except ValueError:
        raise ConfigError(f"unknown calibration method {value!r}; choose one of: "
                          f"{', '.join(CALIBRATION_CHOICES)}") from None


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        entries = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}  # unreadable: every variant is made again and the manifest rewritten
    return entries if isinstance(entries, dict) else {}


def make_variant(*, fp32_onnx: str | os.PathLike[str] | OnnxSource, precision: Precision | str,
                 layout: ArtifactLayout, calibration: str | os.PathLike[str] | None = None,
                 calibration_method: CalibrationMethod | str | None = None,
                 num_images: int | None = None, force: bool = False,
                 progress: Progress | None = None, replace: bool = True,
                 placement: Placement | str = Placement.TENSORRT) -> VariantOutcome:
    """Make the FP16 or INT8 variant of an FP32 graph, or reuse the one the manifest vouches for.

    Args:
        fp32_onnx: The FP32 graph (an xception-trt export), or that file already read
            (:class:`~xception_trt.onnx_meta.OnnxSource`: its SHA-256 is not computed again).
        precision: ``fp16`` or ``int8``.
        layout: Where the variant, the manifest and the calibration cache go.
        calibration: Folder of calibration images: needed for INT8; FP16 checks ranges on them
            (random inputs without).
        calibration_method: INT8: ``entropy``, ``max``, ``percentile`` or ``auto`` (each,
            keeping the best on held-out calibration images); ``None``: the precision step's
            default (entropy). Part of the recipe as given.
        num_images: INT8 calibration images (``None``: the precision step's default); part of
            the recipe when given.
        force: Make the variant even when the manifest says an identical one exists.
        progress: INT8 calibration progress (see :meth:`PipelineCallbacks.on_progress`).
        replace: Replace an existing variant file that was made otherwise (or not by us);
            ``False`` refuses it.
        placement: INT8 only: ``tensorrt`` (the graph engines are built from) or
            ``onnxruntime`` (``int8-ort.onnx``, what ONNX Runtime's CPU kernels run fast; its
            own manifest entry, calibrated on the same images).

    Returns:
        A :class:`VariantOutcome`.

    Raises:
        ConfigError: ``precision`` is FP32, a placement for FP16, an unknown method or a bad
            ``num_images``.
        BuildError: INT8 without calibration images, or the manifest cannot be written.
        CalibrationError / GraphError: From the precision step.
    """
    prec: Precision = Precision.parse(precision)
    if prec is Precision.FP32:
        raise ConfigError("the FP32 graph is the export itself; variants are fp16 and int8")
    method = parse_calibration_method(calibration_method)
    place: Placement = Placement.parse(placement)
    name = variant_name(prec, place)  # refuses a placement for FP16
    if num_images is not None:
        check_int(num_images, "num_images")
    if prec is Precision.INT8 and not calibration:
        raise BuildError("an int8 engine needs calibration images: pass --calib DIR (a few "
                         "hundred representative images)")
    from_sha256 = (fp32_onnx.sha256 if isinstance(fp32_onnx, OnnxSource)
                   else sha256_file(fp32_onnx))
    fp32_onnx = fp32_onnx.path if isinstance(fp32_onnx, OnnxSource) else Path(fp32_onnx)
    target = layout.onnx(prec, place)
    recipe: dict[str, Any] = {"from_sha256": from_sha256,
                              "calib": calibration_fingerprint(calibration),
                              "calib_method": method}
    if num_images is not None:  # only when chosen: manifests written without it stay valid
        recipe["num_images"] = num_images
    if place is Placement.ONNXRUNTIME:  # likewise: TensorRT-placed entries are unchanged
        recipe["placement"] = place.value
    entries = _read_manifest(layout.manifest)
    entry = entries.get(name) or {}
    if not force and entry.get("recipe") == recipe and target.is_file():
        digest = sha256_file(target)
        if digest == entry.get("sha256"):
            log.info("reusing %s (made from the same graph and calibration data)", target)
            return VariantOutcome(prec, target, True, recipe, sha256=digest, placement=place)
    if not replace and target.exists():
        _refuse_replacing(target, "was not made from this graph with this calibration")
    quantize = auto = None
    if prec is Precision.FP16:
        to_fp16(fp32_onnx, calibration, output=target)
    else:
        kw: dict[str, Any] = {} if num_images is None else {"num_images": num_images}
        kw["progress"] = progress
        kw["placement"] = place
        if method == AUTO_CALIBRATION:
            auto = auto_quantize_int8(fp32_onnx, calibration, None, output=target,
                                      cache_dir=layout.calibration_cache_dir, **kw)
            quantize = auto.best
        else:
            if method is not None:
                kw["method"] = method
            quantize = quantize_int8(fp32_onnx, calibration, output=target,
                                     cache_dir=layout.calibration_cache_dir, **kw)
    digest = sha256_file(target)
    entries[name] = {"recipe": recipe, "sha256": digest}
    atomic_write_json(layout.manifest, entries, error=BuildError)
    return VariantOutcome(prec, target, False, recipe, quantize, auto, digest, place)


def export_step(callbacks: PipelineCallbacks, *, checkpoint: Path, output: Path,
                **kw: Any) -> ExportOutcome:
    """:func:`export_checkpoint` between its progress and outcome hooks (``build`` and the
    bundle writer report the step the same way)."""
    callbacks.on_progress("export", 0, None)
    outcome = export_checkpoint(checkpoint=checkpoint, output=output, **kw)
    callbacks.on_export(outcome)
    return outcome


def variant_step(callbacks: PipelineCallbacks, *, fp32_onnx: Path | OnnxSource,
                 precision: Precision, layout: ArtifactLayout,
                 calibration: str | os.PathLike[str] | None,
                 calibration_method: CalibrationMethod | str | None,
                 num_images: int | None = None, force: bool = False,
                 replace: bool = True,
                 placement: Placement | str = Placement.TENSORRT) -> VariantOutcome:
    """:func:`make_variant` between its progress and outcome hooks, its calibration progress
    going to ``callbacks.on_progress``."""
    callbacks.on_progress(f"{variant_name(precision, placement)} variant", 0, None)
    outcome = make_variant(fp32_onnx=fp32_onnx, precision=precision, layout=layout,
                           calibration=calibration, calibration_method=calibration_method,
                           num_images=num_images, force=force, replace=replace,
                           progress=callbacks.on_progress, placement=placement)
    callbacks.on_variant(outcome)
    return outcome


def _refuse_ort_placement(source: OnnxSource) -> None:
    """An INT8 graph placed for ONNX Runtime (uint8 activations with zero points) is no
    TensorRT input: say so before TensorRT's parser fails on it."""
    if source.meta.placement is Placement.ONNXRUNTIME:
        raise BuildError(f"{source.path} is an INT8 graph placed for ONNX Runtime (quantize "
                         "--placement onnxruntime: asymmetric uint8 activations, which TensorRT "
                         "cannot build); build from the FP32 graph, or quantize with "
                         "--placement tensorrt")


def _build_one(source: OnnxSource, job: EngineJob, output: Path, force: bool,
               callbacks: PipelineCallbacks, replace: bool = True) -> EngineOutcome:
    _refuse_ort_placement(source)
    # imported here, not at the top: an installation without the builder module still runs
    # export and variants (the demo reports its engines step as not runnable)
    from .trt.builder import build_engine

    with callbacks.engine_progress(job.precision) as progress:
        art = build_engine(source, job.config.replace(precision=job.precision),
                           output=output, progress=progress, force=force, replace=replace)
    outcome = EngineOutcome(job.precision, art)
    callbacks.on_engine(outcome)
    return outcome


# ---------------------------------------------------------------------------------------------
# the step runner: build, the bundle writer and the demo run the same steps through it

#: How a step went; the demo's step records use the same words.
RAN, CACHED, SKIPPED, FAILED = "ran", "cached", "skipped", "failed"


_T = TypeVar("_T")


@dataclass(frozen=True)
class StepOutcome(Generic[_T]):
    """One step of the export -> variants -> engines sequence and how it went.

    Attributes:
        step: ``export``, the variant's name (``fp16``, ``int8``, ``int8-ort``) or ``engines``.
        status: :data:`RAN`, :data:`CACHED` (every output reused), :data:`SKIPPED` or
            :data:`FAILED` (an engine failed with ``keep_going``).
        value: What the step made: an :class:`ExportOutcome`, a :class:`VariantOutcome` or an
            :class:`EnginesResult`.
        detail: Why it was skipped or what failed (empty otherwise).
    """

    step: str
    status: str
    value: _T
    detail: str = ""


@dataclass(frozen=True)
class EngineJob:
    """One engine to build from the graph of its precision.

    Attributes:
        precision: The engine's precision (it is built from the graph of that precision).
        config: Build options (the precision is set from ``precision``).
        output: The plan file (``None``: :meth:`ArtifactLayout.engine` of the runner's layout).
    """

    precision: Precision
    config: BuildConfig
    output: Path | None = None


@dataclass(frozen=True)
class _Unread:
    """A graph a step made or took, read when a step first needs it."""

    path: Path
    sha256: str | None = None  # computed by the step that made it


class Steps:
    """Runs the pipeline's steps over one layout and keeps what they made for the next ones.

    Each step (:meth:`export`, :meth:`variant`, :meth:`engines`) reports through the
    :class:`PipelineCallbacks` hooks and returns a :class:`StepOutcome`; :meth:`run` is the
    whole sequence of ``xception-trt build``. Every ONNX graph a step uses is read once
    (:class:`~xception_trt.onnx_meta.OnnxSource`: metadata and SHA-256) and that value is
    handed to the variants' recipe and the engine builds.

    Args:
        layout: Where the files go.
        callbacks: Progress hooks.
        replace: Replace an existing output (graph, variant, engine) that differs from what a
            step makes; ``False`` refuses it, naming ``--force`` (``build``'s output rule).
            Identical outputs are reused either way.
    """

    def __init__(self, layout: ArtifactLayout, *, callbacks: PipelineCallbacks | None = None,
                 replace: bool = True) -> None:
        self.layout = layout
        self.callbacks = callbacks or PipelineCallbacks()
        self.replace = replace
        self._graphs: dict[Precision, _Unread | OnnxSource] = {}

    # -- the graphs ----------------------------------------------------------------------------
    def use(self, precision: Precision, graph: str | os.PathLike[str] | OnnxSource) -> None:
        """Take ``graph`` as the graph of ``precision`` (an ONNX source, a carried variant);
        a path is read when a step first needs it."""
        self._graphs[precision] = (graph if isinstance(graph, OnnxSource)
                                   else _Unread(Path(graph)))

    def graph(self, precision: Precision) -> OnnxSource:
        """The graph of ``precision``, read once.

        Raises:
            BuildError: No step made or took a graph of that precision.
            GraphError: The file is not a usable xception-trt ONNX graph.
        """
        graph = self._graphs.get(precision)
        if graph is None:
            raise BuildError(f"there is no {precision.value} graph to build from: make the "
                             f"{precision.value} variant of the FP32 graph first")
        if not isinstance(graph, OnnxSource):
            graph = self._graphs[precision] = OnnxSource.read(graph.path, sha256=graph.sha256)
        return graph

    @property
    def graphs(self) -> dict[Precision, Path]:
        """The file of each graph made or taken so far, by precision."""
        return {p: g.path for p, g in self._graphs.items()}

    def digest(self, path: str | os.PathLike[str]) -> str | None:
        """The SHA-256 of ``path`` when it is a graph already read (``None`` otherwise)."""
        return next((g.sha256 for g in self._graphs.values()
                     if isinstance(g, OnnxSource) and g.path == Path(path)), None)

    # -- the steps -----------------------------------------------------------------------------
    def export(self, checkpoint: str | os.PathLike[str], *, opset: int | None = None,
               input_format: InputFormat | str = InputFormat.FLOAT_NCHW,
               force: bool = False) -> StepOutcome[ExportOutcome]:
        """Export ``checkpoint`` to the layout's FP32 graph (or reuse it): :func:`export_step`.
        """
        outcome = export_step(self.callbacks, checkpoint=Path(checkpoint),
                              output=self.layout.onnx(Precision.FP32), opset=opset,
                              input_format=input_format, force=force,
                              replace=self.replace or force)
        self.use(Precision.FP32, outcome.path)
        return StepOutcome("export", CACHED if outcome.reused else RAN, outcome)

    def variant(self, precision: Precision, *, calibration: str | os.PathLike[str] | None,
                calibration_method: CalibrationMethod | str | None = None,
                num_images: int | None = None, force: bool = False,
                placement: Placement | str = Placement.TENSORRT
                ) -> StepOutcome[VariantOutcome]:
        """Make (or reuse) the FP16 / INT8 variant of the FP32 graph: :func:`make_variant`
        between its hooks, its calibration progress going to ``callbacks.on_progress``. INT8
        placed for ONNX Runtime is not a graph engines are built from: it is not kept as the
        INT8 graph (:meth:`graph`)."""
        place: Placement = Placement.parse(placement)
        outcome = variant_step(self.callbacks, fp32_onnx=self.graph(Precision.FP32),
                               precision=precision, layout=self.layout, calibration=calibration,
                               calibration_method=calibration_method, num_images=num_images,
                               force=force, replace=self.replace or force, placement=place)
        if place is Placement.TENSORRT:
            # the digest make_variant just computed is the file's: read the metadata only
            self._graphs[precision] = _Unread(outcome.path, outcome.sha256)
        return StepOutcome(variant_name(precision, place), CACHED if outcome.reused else RAN,
                           outcome)

    def engines(self, jobs: Sequence[EngineJob], *, force: bool = False,
                keep_going: bool = False) -> StepOutcome[EnginesResult]:
        """Build (or reuse) each engine from the graph of its precision.

        Args:
            jobs: The engines, built in this order.
            force: Rebuild even when an identical engine exists.
            keep_going: Record a failed engine (status :data:`FAILED`) and build the others
                instead of raising.

        Raises:
            ImportError: The TensorRT builder module cannot be imported in this installation.
            BuildError / GraphError: An engine failed (without ``keep_going``).
        """
        engines, failures = [], []
        for job in jobs:
            try:
                engines.append(_build_one(self.graph(job.precision), job,
                                          job.output or self.layout.engine(job.precision),
                                          force, self.callbacks, self.replace))
            except XceptionTRTError as exc:
                if not keep_going:
                    raise
                log.warning("the %s engine failed: %s", job.precision.value, exc)
                failures.append(EngineFailure(job.precision, exc))
        status = (FAILED if failures else
                  CACHED if engines and all(e.artifact.cache_hit for e in engines) else RAN)
        detail = "; ".join(f"{f.precision.value}: {f.error}" for f in failures)
        return StepOutcome("engines", status, EnginesResult(tuple(engines), tuple(failures)),
                           detail)

    def run(self, source: Path | OnnxSource, precisions: Sequence[Precision], *,
            config: BuildConfig, calibration: str | os.PathLike[str] | None = None,
            calibration_method: CalibrationMethod | str | None = None,
            opset: int | None = None, input_format: InputFormat | str = InputFormat.FLOAT_NCHW,
            force: bool = False) -> Iterator[StepOutcome[Any]]:
        """The sequence of ``xception-trt build``: the FP32 graph (exported from a checkpoint,
        or the ONNX source as it is), then per precision its variant (when the source is the
        FP32 graph and the precision is another) and its engine.

        Args:
            source: A checkpoint, or an ONNX file already read.
            precisions: The engines, in this order.
            config: Build options of every engine.
            calibration / calibration_method: For the variants (see :func:`make_variant`).
            opset / input_format: For the export (see :func:`export_checkpoint`).
            force: Rebuild the engines even when identical ones exist.

        Yields:
            A :class:`StepOutcome` per step, as it finishes.

        Raises:
            BuildError: A variant asked from a graph that is not FP32; and what the steps raise.
        """
        if isinstance(source, OnnxSource):
            src_precision = source.meta.precision
            self.use(src_precision, source)
        else:
            src_precision = Precision.FP32
            yield self.export(source, opset=opset, input_format=input_format)
        for precision in precisions:  # variant then engine, one precision after the other
            if precision is not src_precision:
                if src_precision is not Precision.FP32:
                    path = source.path if isinstance(source, OnnxSource) else source
                    raise BuildError(f"{path} is a {src_precision.value} graph; a "
                                     f"{precision.value} engine is made from the FP32 graph — "
                                     "pass the checkpoint or the FP32 ONNX")
                yield self.variant(precision, calibration=calibration,
                                   calibration_method=calibration_method)
            yield self.engines([EngineJob(precision, config)], force=force)


def build_engines(*, onnx: Mapping[Precision | str, str | os.PathLike[str]],
                  config: BuildConfig, layout: ArtifactLayout, force: bool = False,
                  keep_going: bool = False, callbacks: PipelineCallbacks | None = None
                  ) -> EnginesResult:
    """Build (or reuse) one TensorRT engine per ONNX graph (:meth:`Steps.engines`).

    Args:
        onnx: The graph of each precision (the engine gets that precision).
        config: Build options (flavour, batch profile, targets ...); the precision is set per
            engine.
        layout: Where the engines go.
        force: Rebuild even when an identical engine exists.
        keep_going: Record a failed engine and build the others instead of raising.
        callbacks: Progress hooks.

    Returns:
        An :class:`EnginesResult`.

    Raises:
        ImportError: The TensorRT builder module cannot be imported in this installation.
        BuildError / GraphError: An engine failed (without ``keep_going``).
    """
    steps = Steps(layout, callbacks=callbacks)
    jobs = []
    for name, path in onnx.items():
        precision: Precision = Precision.parse(name)
        steps.use(precision, path)
        jobs.append(EngineJob(precision, config))
    return steps.engines(jobs, force=force, keep_going=keep_going).value


# ---------------------------------------------------------------------------------------------
# the whole pipeline (`xception-trt build`)


def _timing_cache_dir(config: BuildConfig, output: Path, *, enabled: bool,
                      is_rtx: bool) -> str | None:
    if not enabled:
        return None
    if config.timing_cache_dir is not None:
        return config.timing_cache_dir  # with TensorRT-RTX the builder warns it ignores it
    return None if is_rtx else str(output / "timing-cache")


def build(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
          precisions: Sequence[Precision | str] | None = None,
          calibration: str | os.PathLike[str] | None = None,
          calibration_method: CalibrationMethod | str | None = None, name: str | None = None,
          input_format: InputFormat | str = InputFormat.FLOAT_NCHW, opset: int | None = None,
          config: BuildConfig | None = None, timing_cache: bool = True, force: bool = False,
          callbacks: PipelineCallbacks | None = None) -> BuildResult:
    """Checkpoint (or ONNX) -> FP32 ONNX -> FP16 / INT8 variants -> one engine per precision.

    Every option is checked before the first long step (export, calibration, build).

    Args:
        source: A checkpoint, or an ONNX file written by ``xception-trt export`` / the
            precision step (an FP16 or INT8 Q/DQ graph builds as it is, without calibration).
        output: Folder for the ONNX graphs, the variants manifest, the calibration cache,
            the timing cache and the engines (see :meth:`ArtifactLayout.in_folder`).
        precisions: Engine precisions (default: FP32 from a checkpoint, the graph's own from
            an ONNX file). FP16 / INT8 engines from an FP32 source use its variants.
        calibration: Folder of calibration images (needed for an INT8 variant; refused when no
            variant is made).
        calibration_method: INT8 calibration method (``None``: entropy; refused when no INT8
            variant is made).
        name: File stem of the outputs (default: the source's name up to its first dot).
        input_format: Checkpoint export only: ``float-nchw`` or ``uint8-nhwc``.
        opset: Checkpoint export only: ONNX opset (``None``: the exporter's default, 17).
        config: Build options; ``flavour=None`` takes NVIDIA TensorRT when it imports and a
            GPU is present, else TensorRT-RTX.
        timing_cache: Use a timing cache: ``config.timing_cache_dir``, else
            ``<output>/timing-cache`` with NVIDIA TensorRT (TensorRT-RTX has none).
        force: Rebuild the engines even when identical ones exist (the export and the
            variants are still reused), and replace existing outputs that differ from what
            this build makes; without it such an output is refused (the one output rule),
            an identical one reused.
        callbacks: Progress hooks.

    Returns:
        A :class:`BuildResult`.

    Raises:
        BuildError: Missing source or calibration folder, no usable TensorRT, INT8 without
            calibration images, a variant asked from a non-FP32 graph, an option this TensorRT
            cannot honour, or a failed build.
        ConfigError: Calibration images or method given that nothing would use.
        ConfigError / CheckpointError / ExportError / GraphError / CalibrationError: From the
            stages.
    """
    from .trt.builder import resolve_flavour
    from .trt.compat import check_options, network_and_precision_plan

    callbacks = callbacks or PipelineCallbacks()
    config = config or BuildConfig()
    source = Path(source)
    problem = path_problem(source)
    if problem is not None and not is_hub_id(source):
        raise BuildError(f"{source} {problem}; give a checkpoint, a Hugging Face Hub model id "
                         "or an ONNX file")
    out = Path(output)
    problem = path_problem(calibration, want="dir") if calibration else None
    if problem is not None:
        raise BuildError(f"calibration folder {calibration} {problem}")
    is_onnx = source.suffix.lower() == ".onnx"
    flavour = resolve_flavour(config.flavour)  # fail before a long export if nothing can build
    # an ONNX source is parsed and hashed here, once: the checks, the variants' recipe and the
    # engine build take this value instead of reading the file again
    onnx_source = OnnxSource.read(source) if is_onnx else None
    if onnx_source is not None:
        _refuse_ort_placement(onnx_source)
    src_precision = onnx_source.meta.precision if onnx_source is not None else Precision.FP32
    wanted = list(dict.fromkeys(Precision.parse(p) for p in (precisions or [src_precision])))
    # Calibration makes the FP16/INT8 variants of an FP32 graph: a graph built as it is (an
    # INT8 Q/DQ graph from `quantize`, say) needs none, and must not seem to use any.
    variants_made = [p for p in wanted if p is not src_precision]
    if Precision.INT8 in variants_made and not calibration:
        raise BuildError("an int8 engine needs calibration images: pass --calib DIR")
    if calibration_method is not None and Precision.INT8 not in variants_made:
        raise ConfigError(f"a calibration method applies only when an int8 variant is made "
                          f"from an FP32 graph; {source.name} is a {src_precision.value} graph "
                          f"and {', '.join(p.value for p in wanted)} was asked — drop "
                          "--calib-method")
    if calibration and not variants_made:
        raise ConfigError(f"{source.name} is a {src_precision.value} graph built as it is: the "
                          "calibration images would not be used — drop --calib (they are for "
                          "the fp16/int8 variants of an FP32 graph)")
    base = config.replace(flavour=flavour.name, timing_cache_dir=_timing_cache_dir(
        config, out, enabled=timing_cache, is_rtx=flavour.is_rtx))
    for precision in wanted:  # refuse impossible options before a long export/calibration
        check_options(network_and_precision_plan(flavour.name, flavour.version, precision), base)

    layout = ArtifactLayout.in_folder(out, stem=name or source.stem.split(".")[0])
    # the one output rule: what differs from an existing output is refused without force
    steps = Steps(layout, callbacks=callbacks, replace=force)
    export, variants, engines = None, [], []
    for outcome in steps.run(onnx_source or source, wanted, config=base, calibration=calibration,
                             calibration_method=calibration_method, opset=opset,
                             input_format=input_format, force=force):
        if isinstance(outcome.value, ExportOutcome):
            export = outcome.value
        elif isinstance(outcome.value, VariantOutcome):
            variants.append(outcome.value)
        else:
            engines += outcome.value.engines
    graphs = {e.precision: steps.graphs[e.precision] for e in engines}
    return BuildResult(layout, export, tuple(variants), tuple(engines), graphs)
