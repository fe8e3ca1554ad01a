"""Writing a bundle (``xception-trt bundle``): checkpoint or ONNX -> FP32 ONNX and its FP16 /
INT8 variants (through :mod:`xception_trt.pipeline`), each variant's accuracy against FP32 on
validation images, the INT8 calibration scales, and prebuilt engines — TensorRT-RTX for named
compute capabilities (builds on any machine, CPU-only too) and NVIDIA TensorRT for the local
GPU where one is present — into one ``.xtrt`` file (:mod:`xception_trt.bundle.format`),
written atomically: the file appears complete or not at all."""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import os
import shutil
import time
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .bundle.format import (
    FORMAT_VERSION,
    MANIFEST,
    Bundle,
    EngineEntry,
    Manifest,
    Member,
    VariantEntry,
    is_bundle,
)
from .config import (
    BuildConfig,
    InputFormat,
    Placement,
    Precision,
    normalise_compute_capability,
)
from .errors import BuildError, BundleError, ConfigError, renamed
from .fsio import atomic_path, owned_temp_dir, path_problem, sha256_bytes, sha256_file
from .hub import is_hub_id, local_file, source_name
from .onnx_meta import OnnxSource, read_metadata
from .pipeline import ArtifactLayout, EngineJob, PipelineCallbacks, Steps, variant_name
from .sidecar import EngineSidecar, sidecar_path

if TYPE_CHECKING:
    from .data import Dataset

__all__ = ["BundleResult", "write_bundle", "int8_scales"]

log = logging.getLogger(__name__)

#: ONNX graphs barely compress (float or INT8 weights): stored, so reading one is a plain copy.
_STORED_SUFFIXES = (".onnx",)
#: An engine is deflated when a fast pass shrinks it by at least this share. A TensorRT-RTX
#: plan carries the CUDA source of every kernel it generates (compiled on the device when the
#: engine first runs), about 130 KiB each, mostly one shared preamble: an INT8 engine generates
#: one per quantizing layer, and its plan deflates several times; weights barely compress.
_ENGINE_DEFLATE_GAIN = 0.1


@dataclass(frozen=True)
class BundleResult:
    """What :func:`write_bundle` wrote.

    Attributes:
        path: The bundle.
        manifest: Its manifest.
        bytes: The bundle's size.
        parts_bytes: The sum of its members' sizes (uncompressed), to compare with ``bytes``.
        seconds: Wall time.
    """

    path: Path
    manifest: Manifest
    bytes: int
    parts_bytes: int
    seconds: float


def int8_scales(onnx_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The per-tensor scales of a Q/DQ INT8 graph's activation quantizers and its calibration
    record (from the ONNX metadata).

    Returns:
        ``{"scales": {tensor: scale}, "calibration": <metadata record or None>}``.
    """
    from onnx import numpy_helper

    from .onnx_meta import load_onnx

    model = load_onnx(onnx_path)
    inits = {t.name: t for t in model.graph.initializer}
    scales: dict[str, Any] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 2:
            continue
        scale = inits.get(node.input[1])
        if scale is None or node.input[0] in inits:
            continue  # weight quantizers are constants of the graph itself
        values = numpy_helper.to_array(scale).reshape(-1).tolist()
        scales[node.input[0]] = values[0] if len(values) == 1 else values
    meta = read_metadata(model).raw.get("calibration")  # the model parsed above
    try:
        calibration = json.loads(meta) if isinstance(meta, str) else meta
    except json.JSONDecodeError:
        calibration = meta
    return {"scales": scales, "calibration": calibration}


#: The name of the INT8 graph placed for ONNX Runtime, in the work folder and the accuracy rows.
_ORT_INT8 = variant_name(Precision.INT8, Placement.ONNXRUNTIME)


def _accuracy(variants: Mapping[str, Path], validation: Dataset,
              threads: int | None) -> dict[str, dict[str, Any]]:
    """Each named graph's accuracy and agreement with the ``fp32`` one (one decoding pass)."""
    from .precision.evaluate import evaluate_variants

    rows = evaluate_variants(dict(variants), validation, reference=Precision.FP32.value,
                             threads=threads)
    return {r.name: {k: v for k, v in r.to_dict().items()
                          if k not in ("name", "precision", "size_bytes")}
            for r in rows}


def _engine_name(side: EngineSidecar) -> str:
    where = ("-".join(side.targets) if side.targets
             else f"sm{side.device.compute_capability.replace('.', '')}" if side.device
             else "default")
    return f"{side.precision.value}-{side.flavour}-{side.tensorrt.version}-{where}".lower()


def _local_gpu_flavour() -> str | None:
    """``"tensorrt"`` when NVIDIA TensorRT imports and a GPU is present (engines for it)."""
    from . import sysinfo

    if not any(f.name == "tensorrt" for f in sysinfo.flavours()):
        return None
    return "tensorrt" if sysinfo.devices().gpus else None


@dataclass(frozen=True)
class _Previous:
    """A bundle given as the source: its manifest and its members copied out."""

    manifest: Manifest
    variants: dict[Precision, Path]
    sidecars: tuple[EngineSidecar, ...]
    engines: tuple[Path, ...]
    ort_int8: Path | None = None


def _from_bundle(source: Path, folder: Path, layout: ArtifactLayout) -> _Previous:
    """Copy a bundle's variants and engines out (verified) to rebundle them."""
    with Bundle(source) as bundle:
        bundle.verify()
        manifest = bundle.manifest
        variants = {p: bundle.extract(v.member, layout.onnx(p))
                    for p, v in manifest.variants.items()}
        int8 = manifest.variants.get(Precision.INT8)
        ort = (bundle.extract(int8.onnxruntime_member,
                              layout.onnx(Precision.INT8, Placement.ONNXRUNTIME))
               if int8 is not None and int8.onnxruntime_member is not None else None)
        if Precision.FP32 not in variants:
            raise BundleError(f"{source} has no FP32 graph to rebundle; remake it from the "
                              "checkpoint")
        (folder / "carried").mkdir(parents=True, exist_ok=True)
        engines = []
        seen: dict[str, str] = {}
        for i, e in enumerate(manifest.engines):
            # one kind of engine once: the rebundled name comes from the sidecar, so two would
            # land on one member and one of them would be lost
            kind = _engine_name(e.sidecar)
            if kind in seen:
                raise BundleError(f"{source} holds two {kind} engines ({seen[kind]} and "
                                  f"{e.member}); remake the bundle with `xception-trt bundle`")
            seen[kind] = e.member
            # numbered: engines/a/x.engine and engines/b/x.engine share a file name
            dest = folder / "carried" / f"{i:03d}-{Path(e.member).name}"
            bundle.extract(e.member, dest)
            bundle.extract(e.sidecar_member, sidecar_path(dest))
            engines.append(dest)
    return _Previous(manifest, variants, tuple(e.sidecar for e in manifest.engines),
                     tuple(engines), ort)


def write_bundle(*, source: str | os.PathLike[str], output: str | os.PathLike[str],
                 precisions: Sequence[Precision | str] | None = None,
                 calibration: str | os.PathLike[str] | None = None,
                 calibration_method: str | None = None,
                 validation: str | os.PathLike[str] | None = None,
                 cc: Sequence[str] = (), local_engines: bool = True,
                 max_batch: int | None = None, work_dir: str | os.PathLike[str] | None = None,
                 threads: int | None = None, force: bool = False, command: str = "",
                 callbacks: PipelineCallbacks | None = None,
                 engines: Sequence[str] | None = None) -> BundleResult:
    """Make a bundle from a checkpoint or an FP32 ONNX.

    Args:
        source: A checkpoint, an FP32 ONNX written by ``xception-trt export``, or a bundle
            (its variants, calibration, accuracy and engines are kept; ``cc``'s are added).
        output: The ``.xtrt`` file (may be ``source`` itself, with ``force``).
        precisions: The variants to carry (the FP32 graph is always included; the first one
            given is the bundle's default precision). ``None``: FP32, or a bundle's own.
        calibration: Folder of calibration images (needed for INT8).
        calibration_method: INT8 calibration method (``None``: entropy; or ``auto``).
        validation: Folder of validation images: each variant's accuracy and agreement with
            FP32 go into the manifest.
        cc: TensorRT-RTX compute-capability targets to prebuild (``sm86`` ...), one engine
            per precision and target.
        local_engines: Also prebuild with NVIDIA TensorRT for this machine's GPU, when both are
            present.
        max_batch: Largest batch of the engines' profile (default 8).
        work_dir: Keep the ONNX variants and engines here and reuse them on the next call
            (default: a temporary folder, removed).
        threads: ONNX Runtime threads for the accuracy check.
        force: Replace an existing ``output``.
        command: The command line that made it (recorded in the manifest).
        callbacks: Progress hooks of the pipeline.
        engines: Old name of ``cc`` (deprecated).

    Returns:
        A :class:`BundleResult`.

    Raises:
        BundleError: ``output`` exists (without ``force``) or is not a ``.xtrt`` file.
        BuildError / ConfigError / CheckpointError / GraphError / CalibrationError: From the
            pipeline stages.
    """
    cc = renamed("engines", "cc", engines, tuple(cc) or None, where="write_bundle") or ()
    t0 = time.perf_counter()
    callbacks = callbacks or PipelineCallbacks()
    source, output = Path(source), Path(output)
    if output.suffix.lower() != ".xtrt":
        raise BundleError(f"{output}: a bundle file ends in .xtrt; name it e.g. model.xtrt")
    if output.exists() and not force:
        raise BundleError(f"{output} exists; pass --force to replace it")
    problem = path_problem(source)
    if problem is not None and not is_hub_id(source):
        raise BuildError(f"{source} {problem}; give a checkpoint, a Hugging Face Hub model id "
                         "or an FP32 ONNX file")
    wanted = list(dict.fromkeys(Precision.parse(p) for p in precisions or ()))
    targets = [normalise_compute_capability(c) for c in cc]
    if "CURRENT" in targets:
        raise ConfigError("a bundle names its TensorRT-RTX targets (e.g. sm86 sm89 sm120); "
                          "'current' would depend on the build machine's GPU")
    base = BuildConfig(max_batch=max_batch)
    val_data: Dataset | None = None
    if validation is not None:  # an empty --val is said now, not after export and calibration
        from .data import open_dataset

        val_data = open_dataset(validation)
    if targets:  # fail before a long export if TensorRT-RTX is missing
        from .trt import import_flavour

        import_flavour("tensorrt_rtx")
    local = _local_gpu_flavour() if local_engines else None

    tmp = None if work_dir is not None else owned_temp_dir("xtrt-bundle-")
    folder = Path(work_dir) if work_dir is not None else Path(tmp)  # type: ignore[arg-type]
    try:
        layout = ArtifactLayout(folder / "onnx", folder / "engines", "model",
                                folder / "calibration-cache")
        layout.onnx_dir.mkdir(parents=True, exist_ok=True)
        steps = Steps(layout, callbacks=callbacks)  # the pipeline's steps, each graph read once
        previous = _from_bundle(source, folder, layout) if is_bundle(source) else None
        if previous is not None:
            for prec, path in previous.variants.items():
                steps.use(prec, path)
            wanted = wanted or list(previous.manifest.precisions)
        elif source.suffix.lower() == ".onnx":
            steps.use(Precision.FP32, OnnxSource.read(source))
            if steps.graph(Precision.FP32).meta.precision is not Precision.FP32:
                raise BuildError(f"{source} is not the FP32 graph; a bundle is made from the "
                                 "checkpoint or its FP32 ONNX")
        else:
            steps.export(source)
        fp32 = steps.graph(Precision.FP32).path
        wanted = wanted or [Precision.FP32]
        if Precision.INT8 in wanted and not calibration and (
                previous is None or Precision.INT8 not in previous.variants):
            raise BuildError("an int8 variant needs calibration images: pass --calib DIR")
        variants: dict[Precision, Path] = {}
        recipes: dict[Precision, Any] = {}
        for prec in wanted:
            if prec is Precision.FP32:
                variants[prec] = fp32
                continue
            if previous is not None and prec in previous.variants:
                variants[prec] = previous.variants[prec]
                continue
            outcome = steps.variant(prec, calibration=calibration,
                                    calibration_method=calibration_method).value
            variants[prec], recipes[prec] = outcome.path, dict(outcome.recipe)
        variants.setdefault(Precision.FP32, fp32)
        ort: Path | None = None
        if Precision.INT8 in variants:
            if previous is not None and Precision.INT8 in previous.variants:
                ort = previous.ort_int8  # carried as it was (None in an older bundle)
            else:
                from .precision import CalibrationMethod

                # the INT8 graph placed for ONNX Runtime (what the bundle's CPU path runs), on
                # the same images; "auto" picks a method per placement in `quantize`, the
                # default (entropy) here
                ort = steps.variant(
                    Precision.INT8, calibration=calibration, placement=Placement.ONNXRUNTIME,
                    calibration_method=(calibration_method if calibration_method
                                        in CalibrationMethod.choices() else None)).value.path
        graphs = {p.value: path for p, path in variants.items()}
        if ort is not None:
            graphs[_ORT_INT8] = ort
        accuracy = _accuracy(graphs, val_data, threads) if val_data is not None else {
            name: dict(acc) for p, v in (previous.manifest.variants.items() if previous
                                         else ()) if p in variants
            for name, acc in ((p.value, v.accuracy), (_ORT_INT8, v.onnxruntime_accuracy))
            if acc}

        built: list[EngineSidecar] = list(previous.sidecars) if previous else []
        engine_files: list[Path] = list(previous.engines) if previous else []
        plans = [("tensorrt_rtx", (t,)) for t in targets] + ([(local, ())] if local else [])
        jobs = [EngineJob(prec, base.replace(precision=prec, flavour=flavour, cc=cc),
                          layout.engine_dir / f"{prec.value}-{flavour}-{'-'.join(cc) or 'local'}"
                                              ".engine")
                for prec in wanted for flavour, cc in plans]
        for engine in steps.engines(jobs).value.engines if jobs else ():
            art = engine.artifact
            same = [i for i, b in enumerate(built) if _engine_name(b) ==
                    _engine_name(art.sidecar)]
            for i in reversed(same):  # rebuilt: the new one replaces the carried one
                del built[i], engine_files[i]
            built.append(art.sidecar)
            engine_files.append(art.path)

        files: dict[str, Path | bytes] = {}
        variant_entries: dict[Precision, VariantEntry] = {}
        for prec, path in variants.items():
            name = f"onnx/{prec.value}.onnx"
            files[name] = path
            ort_name = None
            if prec is Precision.INT8 and ort is not None:
                ort_name = f"onnx/{_ORT_INT8}.onnx"
                files[ort_name] = ort
            variant_entries[prec] = VariantEntry(
                prec, name, accuracy.get(prec.value), ort_name,
                accuracy.get(_ORT_INT8) if ort_name else None)
        calib = None
        if Precision.INT8 in variants:
            name = "calibration/int8-scales.json"
            files[name] = (json.dumps(int8_scales(variants[Precision.INT8]), indent=1,
                                      sort_keys=True) + "\n").encode()
            calib = {"member": name, "recipe": recipes.get(Precision.INT8) or (
                (previous.manifest.calibration or {}).get("recipe") if previous else None)}
        meta = steps.graph(Precision.FP32).meta
        files["labels.txt"] = ("\n".join(meta.spec.class_names()) + "\n").encode()
        engine_entries = []
        for side, path in zip(built, engine_files):
            name = f"engines/{_engine_name(side)}.engine"
            files[name] = path
            files[name + ".json"] = sidecar_path(path).read_bytes()
            engine_entries.append(EngineEntry(name, name + ".json", side))
        # the graphs the steps read are hashed already: their digests are not computed again
        members = {n: Member(n, (steps.digest(p) or sha256_file(p)) if isinstance(p, Path)
                             else sha256_bytes(p),
                             p.stat().st_size if isinstance(p, Path) else len(p))
                   for n, p in files.items()}
        manifest = Manifest(
            model_spec=meta.spec, input_format=InputFormat.parse(meta.input_format),
            variants=variant_entries, engines=tuple(engine_entries), members=members,
            batch_profile=base.profile, calibration=calib,
            source=(dict(previous.manifest.source) if previous
                    else {"name": source_name(source),
                          "sha256": steps.digest(source) or sha256_file(local_file(source))}),
            bundle_command=command, default_precision=wanted[0],
            format_version=FORMAT_VERSION,
            xception_trt_version=__version__,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        _write_zip(output, manifest, files)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    parts = sum(m.bytes for m in members.values())
    size = output.stat().st_size
    log.info("wrote %s (%.1f MiB; parts %.1f MiB) in %.1f s", output, size / 2**20,
             parts / 2**20, time.perf_counter() - t0)
    return BundleResult(output, manifest, size, parts, time.perf_counter() - t0)


def _write_zip(output: Path, manifest: Manifest, files: Mapping[str, Path | bytes]) -> None:
    """The archive, manifest first, written to a temporary sibling and renamed into place."""
    with atomic_path(output, error=BundleError) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr(MANIFEST, json.dumps(manifest.to_dict(), indent=1, sort_keys=True) + "\n",
                    compress_type=zipfile.ZIP_DEFLATED)
        for name, content in files.items():
            how = _compression(name, content)
            if isinstance(content, Path):
                zf.write(content, name, compress_type=how)
            else:
                zf.writestr(name, content, compress_type=how)


def _compression(name: str, content: Path | bytes) -> int:
    """How a member is written: ONNX graphs stored; an engine deflated when that pays
    (:data:`_ENGINE_DEFLATE_GAIN`, measured with a fast zlib pass over its bytes); the rest
    (JSON, labels) deflated."""
    if name.endswith(_STORED_SUFFIXES):
        return zipfile.ZIP_STORED
    if not name.endswith(".engine"):
        return zipfile.ZIP_DEFLATED
    packer, size, packed = zlib.compressobj(1), 0, 0
    with (content.open("rb") if isinstance(content, Path) else io.BytesIO(content)) as fh:
        while chunk := fh.read(1 << 20):
            size += len(chunk)
            packed += len(packer.compress(chunk))
    packed += len(packer.flush())
    return (zipfile.ZIP_DEFLATED if packed <= (1 - _ENGINE_DEFLATE_GAIN) * size
            else zipfile.ZIP_STORED)
