"""``xception-trt build``: checkpoint (or ONNX) -> ONNX -> precision variants -> TensorRT engines,
in one command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ._common import positive_int, print_json

ORDER = 30

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build", help="build TensorRT engines from a checkpoint or an ONNX file",
        description="Build TensorRT engines in one command: export the checkpoint to a clean "
                    "ONNX graph, make the FP16 / INT8 (Q/DQ, calibrated) variants asked for, and "
                    "build one engine per precision with NVIDIA TensorRT (8.6, 10.x, 11.x) or "
                    "TensorRT-RTX (builds on a CPU for RTX targets). Each engine gets a JSON "
                    "sidecar; an identical existing engine is reused.",
        epilog="example: xception-trt build model.safetensors --precision fp16 int8 "
               "--calib calibration/ --max-batch 8 -o engines/")
    p.add_argument("source", metavar="SOURCE",
                   help="checkpoint (.safetensors, timm .pth/.bin, Keras .h5) or ONNX file "
                        "written by `xception-trt export`")
    p.add_argument("-o", "--output", required=True, help="output directory for ONNX variants, "
                   "engines and sidecars")
    p.add_argument("--precision", nargs="+", choices=["fp32", "fp16", "int8"], default=None,
                   help="engine precision(s) to build (default: fp32 from a checkpoint, the "
                        "graph's own precision from an ONNX file)")
    p.add_argument("--calib", metavar="DIR", default=None,
                   help="folder of calibration images (needed for int8; fp16 uses them for its "
                        "range check, else random inputs)")
    p.add_argument("--calib-method", choices=["entropy", "max", "percentile"], default=None,
                   help="INT8 calibration method (default: entropy)")
    p.add_argument("--name", default=None,
                   help="file stem of the outputs (default: the source file's stem)")
    p.add_argument("--input-format", choices=["float-nchw", "uint8-nhwc"], default="float-nchw",
                   help="checkpoint export only: float-nchw (default) or uint8-nhwc raw pixels")
    p.add_argument("--opset", type=int, default=17, help="checkpoint export only: ONNX opset "
                   "(default: 17)")
    prof = p.add_argument_group("batch profile")
    prof.add_argument("--batch", type=positive_int, default=None,
                      help="fixed batch size (profile min = opt = max)")
    prof.add_argument("--min-batch", type=positive_int, default=None,
                      help="smallest batch of the profile (default: 1)")
    prof.add_argument("--opt-batch", type=positive_int, default=None,
                      help="batch TensorRT optimises for (default: --max-batch)")
    prof.add_argument("--max-batch", type=positive_int, default=None,
                      help="largest batch of the profile (default: 8)")
    trt = p.add_argument_group("TensorRT")
    trt.add_argument("--backend", choices=["tensorrt", "tensorrt_rtx"], default=None,
                     help="TensorRT flavour (default: NVIDIA TensorRT if it imports and a GPU is "
                          "present, else TensorRT-RTX)")
    trt.add_argument("--cc", nargs="+", default=None, metavar="SM",
                     help="TensorRT-RTX compute-capability targets, e.g. sm86 sm89 sm120, or "
                          "current (needs a GPU) (default: TensorRT-RTX's portable Ampere+ set)")
    trt.add_argument("--workspace-mib", type=positive_int, default=None,
                     help="workspace memory pool limit in MiB (default: TensorRT's; try 256 on a "
                          "Jetson Nano)")
    trt.add_argument("--opt-level", type=int, choices=range(6), default=None, metavar="0-5",
                     help="builder optimisation level (default: TensorRT's, 3)")
    trt.add_argument("--timing-cache", metavar="DIR", default=None,
                     help="timing-cache directory, one file per TensorRT version and GPU "
                          "(default: OUTPUT/timing-cache with NVIDIA TensorRT; TensorRT-RTX has "
                          "none)")
    trt.add_argument("--no-timing-cache", action="store_true", help="do not use a timing cache")
    trt.add_argument("--dla-core", type=int, default=None,
                     help="build for this DLA core (Jetson), with GPU fallback")
    trt.add_argument("--no-gpu-fallback", action="store_true",
                     help="with --dla-core: fail instead of running layers on the GPU")
    trt.add_argument("--version-compatible", action="store_true",
                     help="engine runs on later TensorRT runtimes (NVIDIA TensorRT 8.6+)")
    trt.add_argument("--hardware-compatible", action="store_true",
                     help="engine runs on any Ampere or newer GPU (NVIDIA TensorRT 8.6+)")
    trt.add_argument("--no-layer-info", action="store_true",
                     help="do not record per-layer information in the sidecar")
    p.add_argument("--force", action="store_true", help="rebuild even if an identical engine "
                   "exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


class _TqdmProgress:
    """TensorRT's builder phases as a tqdm bar: the outermost phase's steps, the innermost
    phase's name as the postfix. Never raises into TensorRT (the builder guards it too)."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: Any = None
        self.top: str | None = None

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        from tqdm import tqdm

        if parent_phase is None and self.bar is None:
            self.top = phase_name
            self.bar = tqdm(total=num_steps, desc=self.desc, unit="step", file=sys.stderr,
                            leave=False, dynamic_ncols=True)
        elif self.bar is not None:
            self.bar.set_postfix_str(phase_name[:40], refresh=True)

    def step_complete(self, phase_name: str, step: int) -> None:
        if self.bar is not None and phase_name == self.top:
            self.bar.update(1)

    def phase_finish(self, phase_name: str) -> None:
        if self.bar is not None and phase_name == self.top:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _is_onnx(path: Path) -> bool:
    return path.suffix.lower() == ".onnx"


def _export(source: Path, out: Path, stem: str, args: argparse.Namespace) -> Path:
    """Export the checkpoint, reusing an earlier export of the same checkpoint and settings."""
    from ..errors import GraphError
    from ..export import export_onnx
    from ..fsio import sha256_file
    from ..onnx_meta import read_metadata

    target = out / f"{stem}.onnx"
    if target.is_file():
        try:
            meta = read_metadata(target)
            settings = meta.json_field("export") or {}
            if (meta.raw.get("source_sha256") == sha256_file(source)
                    and settings.get("opset") == args.opset
                    and settings.get("batch") == "dynamic"
                    and meta.input_format.value == args.input_format):
                log.info("reusing %s (same checkpoint and export settings)", target)
                return target
        except (GraphError, ValueError) as exc:
            log.info("re-exporting %s: %s", target, exc)
    result = export_onnx(source, target, opset=args.opset, batch="dynamic",
                         input_format=args.input_format)
    return result.path


def _folder_fingerprint(folder: str | None) -> str | None:
    """Identity of a calibration folder: names, sizes and modification times of its files."""
    import hashlib

    if folder is None:
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _precision_variant(fp32_onnx: Path, precision: str, out: Path, stem: str,
                       args: argparse.Namespace) -> Path:
    """The ONNX variant of ``precision`` made from the FP32 graph by the precision step; reused
    when ``<stem>.variants.json`` says it was made from the same graph, data and settings."""
    import json

    from ..errors import BuildError
    from ..fsio import atomic_write_json, sha256_file

    try:
        from .. import precision as prec_mod
    except ImportError:
        raise BuildError(f"a {precision} engine needs the {precision} ONNX variant, and this "
                         "xception-trt has no precision step (xception_trt.precision); build "
                         "--precision fp32 or upgrade xception-trt") from None
    target = out / f"{stem}.{precision}.onnx"
    manifest = out / f"{stem}.variants.json"
    recipe = {"from_sha256": sha256_file(fp32_onnx), "calib": _folder_fingerprint(args.calib),
              "calib_method": args.calib_method}
    try:
        entries = json.loads(manifest.read_text()) if manifest.is_file() else {}
    except (OSError, json.JSONDecodeError):
        entries = {}
    entry = entries.get(precision) or {}
    if (entry.get("recipe") == recipe and target.is_file()
            and sha256_file(target) == entry.get("sha256")):
        log.info("reusing %s (made from the same graph and calibration data)", target)
        return target
    if precision == "fp16":
        prec_mod.to_fp16(fp32_onnx, args.calib, output=target)
    else:
        if not args.calib:
            raise BuildError("an int8 engine needs calibration images: pass --calib DIR (a few "
                             "hundred representative images)")
        kw = {"method": args.calib_method} if args.calib_method else {}
        prec_mod.quantize_int8(fp32_onnx, args.calib, output=target,
                               cache_dir=out / "calibration-cache", **kw)
    entries[precision] = {"recipe": recipe, "sha256": sha256_file(target)}
    atomic_write_json(manifest, entries, error=BuildError)
    return target


def run(args: argparse.Namespace) -> int:
    from ..config import BuildConfig, Precision
    from ..errors import BuildError
    from ..onnx_meta import read_metadata
    from ..trt.builder import build_engine, resolve_flavour
    from ..trt.compat import check_options, network_and_precision_plan

    source = Path(args.source)
    if not source.is_file():
        raise BuildError(f"{source} does not exist; give a checkpoint or an ONNX file")
    out = Path(args.output)
    if args.calib and not Path(args.calib).is_dir():
        raise BuildError(f"calibration folder {args.calib} does not exist")
    flavour = resolve_flavour(args.backend)  # fail before a long export if nothing can build
    src_precision = read_metadata(source).precision if _is_onnx(source) else Precision.FP32
    precisions = list(dict.fromkeys(args.precision or [src_precision.value]))
    if "int8" in precisions and not args.calib:
        raise BuildError("an int8 engine needs calibration images: pass --calib DIR")
    timing_dir = None
    if not args.no_timing_cache and not flavour.is_rtx:
        timing_dir = args.timing_cache or str(out / "timing-cache")
    elif args.timing_cache and not args.no_timing_cache:
        timing_dir = args.timing_cache  # the builder warns that TensorRT-RTX ignores it
    base = BuildConfig(
        backend=flavour.name, batch=args.batch, min_batch=args.min_batch,
        opt_batch=args.opt_batch, max_batch=args.max_batch, workspace_mib=args.workspace_mib,
        optimization_level=args.opt_level, timing_cache_dir=timing_dir, dla_core=args.dla_core,
        gpu_fallback=not args.no_gpu_fallback, version_compatible=args.version_compatible,
        hardware_compatible=args.hardware_compatible,
        compute_capabilities=tuple(args.cc or ()), layer_info=not args.no_layer_info)

    for name in precisions:  # refuse impossible options before a long export/calibration
        check_options(network_and_precision_plan(flavour.name, flavour.version, name), base)

    stem = args.name or source.stem.split(".")[0]
    onnx_fp32 = source if _is_onnx(source) else _export(source, out, stem, args)

    results = []
    for name in precisions:
        precision = Precision.parse(name)
        if precision is src_precision:
            onnx_path = onnx_fp32
        elif src_precision is Precision.FP32:
            onnx_path = _precision_variant(onnx_fp32, name, out, stem, args)
        else:
            raise BuildError(f"{source} is a {src_precision.value} graph; a {name} engine is "
                             "made from the FP32 graph — pass the checkpoint or the FP32 ONNX")
        progress = None if args.no_progress else _TqdmProgress(f"{name} engine")
        try:
            art = build_engine(onnx_path, base.replace(precision=precision),
                               engine_path=out / f"{stem}.{name}.engine", progress=progress,
                               force=args.force)
        finally:
            if progress is not None:
                progress.close()
        results.append(art)
        if not args.json:
            side = art.sidecar
            how = ("reused (identical engine exists)" if art.cache_hit
                   else f"built in {side.build_seconds:.1f} s")
            where = (f"targets {', '.join(side.targets)}" if side.targets
                     else (f"on {side.device.name}" if side.device else "default targets"))
            print(f"{name}: {art.path} ({art.size_bytes / 2**20:.1f} MiB, "
                  f"{side.flavour} {side.tensorrt.version}, {where}, "
                  f"max batch {side.max_batch}) {how}")
    if args.json:
        print_json([{"precision": a.sidecar.precision.value, "engine": str(a.path),
                     "sidecar": str(a.sidecar_path), "bytes": a.size_bytes,
                     "cache_hit": a.cache_hit, "seconds": round(a.seconds, 3),
                     "flavour": a.sidecar.flavour, "version": a.sidecar.tensorrt.version,
                     "targets": list(a.sidecar.targets) if a.sidecar.targets else None,
                     "device": a.sidecar.device.to_dict() if a.sidecar.device else None}
                    for a in results])
    return 0
