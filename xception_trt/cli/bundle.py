"""``xception-trt bundle``: one deployable ``.xtrt`` file from a checkpoint, an FP32 ONNX or an
existing bundle (to add engines)."""

from __future__ import annotations

import argparse
import shlex
import sys

from ._common import HUB_HELP, StageProgress, add_command, path_argument, print_json
from ._options import BatchProfileArgs, CalibrationArgs, add_cc_flag, check_rules

ORDER = 35


def register(sub: argparse._SubParsersAction) -> None:
    from ..config import Precision
    from ..precision import CalibrationMethod

    p = add_command(
        sub, "bundle", run=run, help="make one deployable .xtrt file: ONNX variants, "
        "calibration, labels and prebuilt engines",
        output="the bundle file (.xtrt)", output_metavar="MODEL.xtrt",
        force="replace an existing bundle", json="the manifest",
        description="""Make a bundle: one file (a zip with a manifest and SHA-256 of every
            member) holding the cleaned FP32 ONNX and the FP16 / INT8 variants asked for, the
            INT8 calibration scales, the ModelSpec (labels, preprocessing), each variant's
            accuracy against FP32 with --val, and prebuilt engines: TensorRT-RTX for every
            --cc compute capability (built on any machine, CPU-only too) and NVIDIA
            TensorRT for this machine's GPU where both are present. Opening the bundle
            (infer, bench, eval, triton-repo, open_runner, Classifier) picks the engine that
            fits the device, or builds one from the bundled ONNX into a per-user cache, or runs
            the ONNX with ONNX Runtime (INT8: a second graph placed for ONNX Runtime, made
            from the same calibration images, whose every Conv/Gemm it fuses). Given a bundle
            as SOURCE, its variants are kept and the engines asked for are added.""",
        epilog="example: xception-trt bundle model.safetensors --precision fp16 int8 --calib "
               "calibration/ --val val/ --cc sm86 sm89 sm120 -o model.xtrt")
    path_argument(p, "source", kind="file", what="source", metavar="SOURCE", hub=True,
                  help=f"checkpoint (.safetensors, timm .pth/.bin, Keras .h5; {HUB_HELP}), "
                       "FP32 ONNX from "
                       "`xception-trt export`, or a bundle (.xtrt) to add engines to")
    p.add_argument("--precision", nargs="+", choices=Precision.choices(), default=None,
                   help="variants to carry; the first is what opening the bundle runs by "
                        "default (default: fp32; a bundle SOURCE: its own). The FP32 graph is "
                        "always included")
    CalibrationArgs.add(p, calib_kind="dir",
                        calib_help="folder of calibration images (needed for int8)",
                        methods=[*CalibrationMethod.choices(), "auto"],
                        method_help="INT8 calibration method (default: entropy; auto: each, "
                                    "keeping the best)")
    path_argument(p, "--val", kind="dir", metavar="DIR", default=None,
                  help="folder of validation images: each variant's accuracy and top-1 "
                       "agreement with FP32 go into the manifest")
    add_cc_flag(p, old="--engines",
                help="TensorRT-RTX compute capabilities to prebuild for, e.g. sm86 sm89 sm120 "
                     "(one engine per precision and target)")
    p.add_argument("--no-local-engine", action="store_true",
                   help="do not prebuild with NVIDIA TensorRT for this machine's GPU")
    BatchProfileArgs.add(p, only_max="largest batch of the engines' profile: the prebuilt "
                                     "ones and those a device builds from the bundle "
                                     "(default: 8)")
    path_argument(p, "--work-dir", kind="output-dir", metavar="DIR", default=None,
                  help="keep the ONNX variants and engines here and reuse them next time "
                       "(default: a temporary folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags that would be silently ignored (before any work; :data:`RULES`)."""
    check_rules(args, "bundle")


def run(args: argparse.Namespace) -> int:
    from ..bundler import write_bundle

    check_flags(args)
    from .build import pipeline_hooks

    stages = StageProgress(enabled=not (args.no_progress or getattr(args, "quiet", False)))
    command = " ".join(shlex.quote(a) for a in ["xception-trt", *sys.argv[1:]]) \
        if sys.argv[1:2] == ["bundle"] else ""
    with stages:
        result = write_bundle(
            source=args.source, output=args.output, precisions=args.precision,
            **CalibrationArgs.parse(args).keywords(), validation=args.val, cc=args.cc,
            local_engines=not args.no_local_engine, max_batch=args.max_batch,
            work_dir=args.work_dir, force=args.force, command=command,
            callbacks=pipeline_hooks(args, stages))
    if args.json:
        print_json(result.manifest.to_dict())
        return 0
    m = result.manifest
    print(f"wrote {result.path}: {result.bytes / 2**20:.2f} MiB (members "
          f"{result.parts_bytes / 2**20:.2f} MiB), {len(m.members)} members")
    for prec, v in m.variants.items():
        acc = v.accuracy
        extra = (f": top-1 agreement with fp32 {acc['agreement']:.2f} %"
                 + (f", top-1 {acc['top1']:.2f} %" if acc.get("top1") is not None else "")
                 + f" ({acc['images']} images)") if acc else ""
        print(f"  {prec.value}{extra}")
    for e in m.engines:
        print(f"  engine {e.member} ({e.describe()})")
    return 0
