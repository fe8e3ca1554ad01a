"""``xception-trt quantize``: FP32 ONNX -> FP16 or calibrated INT8 (Q/DQ) ONNX, plus an
accuracy table measured with ONNX Runtime on the CPU."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from ._common import StageProgress, add_command, path_argument, positive_int, print_json
from ._options import check_rules, deprecated_alias

ORDER = 20


def register(sub: argparse._SubParsersAction) -> None:
    from ..config import Placement, Precision
    from ..precision import (
        DEFAULT_CACHE_DIR_HELP,
        DEFAULT_NUM_IMAGES,
        DEFAULT_PERCENTILE,
        HIGH_PRECISIONS,
        CalibrationMethod,
    )

    p = add_command(
        sub, "quantize", run=run, output="ONNX file to write", json="the results",
        force="overwrite an existing output file",
        help="make an FP16 or calibrated INT8 (Q/DQ) variant of an ONNX model",
        description="""Convert an FP32 ONNX from `xception-trt export` to FP16 (ModelOpt
            AutoCast, FP32 I/O kept, out-of-range nodes kept FP32) or to INT8 with explicit Q/DQ
            nodes calibrated on images (ModelOpt PTQ on the CPU). The result builds as a
            strongly typed TensorRT network. --placement onnxruntime places the INT8 Q/DQ for ONNX
            Runtime instead (its own quantizer: every Conv/Gemm runs as a QLinearConv/QGemm
            kernel on the CPU; for Triton's onnxruntime_onnx model and CPU serving; TensorRT
            cannot build it). With --val, prints top-1/top-5, agreement with FP32
            and logit differences measured with ONNX Runtime.""",
        epilog="examples:\n"
               "  xception-trt quantize model.onnx --precision fp16 -o model.fp16.onnx\n"
               "  xception-trt quantize model.onnx --precision int8 --calib calibration/ "
               "--val val/ -o model.int8.onnx\n"
               "  xception-trt quantize model.onnx --precision int8 --calib calibration/ --auto "
               "-o model.int8.onnx\n"
               "  xception-trt quantize model.onnx --precision int8 --import-cache "
               "calib.cache -o model.int8.onnx\n"
               "  xception-trt quantize model.onnx --precision int8 --placement onnxruntime "
               "--calib calibration/ -o model.int8-ort.onnx",
        raw_epilog=True)
    path_argument(p, "model", kind="file", what="model",
                  help="FP32 ONNX model written by `xception-trt export` (a checkpoint must be "
                       "exported first)")
    p.add_argument("--precision", choices=[Precision.FP16.value, Precision.INT8.value],
                   required=True, help="variant to make")
    path_argument(p, "--calib", kind="any", metavar="DIR",
                   help="calibration images: a folder (flat or class sub-folders) or a file list; "
                        "required for int8 unless --import-cache; optional for fp16 (range "
                        "check, random inputs otherwise)")
    path_argument(p, "--val", kind="any", metavar="DIR",
                   help="validation images for the accuracy table (labelled: top-1/top-5 too)")
    p.add_argument("--method", choices=CalibrationMethod.choices(), default=None,
                   help="INT8 calibration method (default: entropy, TensorRT's "
                        "EntropyCalibration2); not with --auto, which tries every method")
    placement = p.add_argument(
        "--placement", choices=Placement.choices(), default=None,
        help="INT8: the runtime the Q/DQ placement is made for (default: tensorrt, for "
             "engines; onnxruntime: ONNX Runtime's CPU kernels, uint8 activations with zero "
             "points, which TensorRT cannot build)")
    deprecated_alias(p, "--target", placement, choices=Placement.choices())
    p.add_argument("--auto", action="store_true",
                   help="INT8: calibrate with every method, keep the best on --val (or on the "
                        "held-out part of --calib)")
    p.add_argument("--num-images", type=positive_int, default=None,
                   help=f"calibration images (default: {DEFAULT_NUM_IMAGES} for int8, 32 for the "
                        "fp16 range check)")
    p.add_argument("--val-images", type=positive_int, default=None,
                   help="evaluate a seeded subset of this many validation images (default: all)")
    p.add_argument("--seed", type=int, default=0, help="selection seed (default: 0)")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="calibration batch size (default: 8)")
    p.add_argument("--percentile", type=float, default=None,
                   help=f"percentile for --method percentile or --auto (default: "
                        f"{DEFAULT_PERCENTILE})")
    p.add_argument("--exclude", action="append", default=[], metavar="NODE",
                   help="keep this node (name or regex) out of INT8/FP16; repeatable")
    p.add_argument("--exclude-op-type", action="append", default=[], metavar="OP",
                   help="keep every node of this op type out of INT8/FP16 (e.g. Gemm); "
                        "repeatable")
    p.add_argument("--exclude-depthwise", action="store_true",
                   help="INT8: keep the depthwise convolutions in high precision")
    p.add_argument("--high-precision", choices=[h.value for h in HIGH_PRECISIONS],
                   default=None,
                   help="INT8: precision of the nodes that are not quantized (default: fp32)")
    p.add_argument("--int8-weights", action=argparse.BooleanOptionalAction, default=None,
                   help="INT8: store the weights as INT8 initializers + DequantizeLinear, about "
                        "a quarter of the file size (the default for --placement tensorrt; "
                        "the builder gives TensorRT 8.6 the FP32 form); --no-int8-weights "
                        "keeps FP32 weights + Q/DQ")
    p.add_argument("--cache-dir", default=None,
                   help=f"INT8: calibration cache folder (default: {DEFAULT_CACHE_DIR_HELP})")
    p.add_argument("--no-cache", action="store_true",
                   help="INT8: neither read nor write the calibration cache")
    path_argument(p, "--import-cache", kind="file", metavar="FILE",
                   help="INT8: take activation scales from a TensorRT text calibration cache "
                        "(TRT-...-EntropyCalibration2) or an xception-trt cache JSON")
    path_argument(p, "--export-trt-cache", kind="output-file-replace", metavar="FILE",
                   help="INT8: also write the scales as a TensorRT text calibration cache "
                        "(for TensorRT 8.6 implicit INT8)")
    p.add_argument("--compare-all", action="store_true",
                   help="with --val: also make and evaluate the other precision so the table "
                        "has FP32, FP16 and INT8 rows")
    path_argument(p, "--report", kind="output-file-replace", metavar="FILE",
                  help="write the results and table as JSON (replaced if it exists)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (shown on a terminal only, on stderr: image decode "
                        "and calibration batches)")
    p.add_argument("--target-agreement", type=float, default=None, metavar="FRACTION",
                   help="INT8: keep the fewest quantized nodes in FP32 so that top-1 agreement "
                        "with FP32 reaches this fraction (e.g. 0.995) on --val; half of --val "
                        "chooses the nodes, the other half reports the result")
    p.add_argument("--target-top1-drop", type=float, default=None, metavar="PP",
                   help="INT8: as --target-agreement, for a top-1 drop from FP32 of at most "
                        "this many percentage points (e.g. 0.3; labelled --val)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="with a target: ONNX Runtime intra-op threads (default: 2)")


def _int8_kwargs(args: argparse.Namespace, bars: StageProgress) -> dict[str, Any]:
    from ..config import Precision
    from ..precision import DEFAULT_CACHE_DIR, DEFAULT_NUM_IMAGES, DEFAULT_PERCENTILE

    return dict(progress=bars, num_images=args.num_images or DEFAULT_NUM_IMAGES, seed=args.seed,
                batch_size=args.batch_size,
                percentile=DEFAULT_PERCENTILE if args.percentile is None else args.percentile,
                exclude_nodes=args.exclude, exclude_op_types=args.exclude_op_type,
                exclude_depthwise=args.exclude_depthwise,
                high_precision=args.high_precision or Precision.FP32.value,
                int8_weights=args.int8_weights,
                cache_dir=None if args.no_cache else (args.cache_dir or DEFAULT_CACHE_DIR),
                placement=args.placement or "tensorrt")


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags that would be silently ignored or contradict each other (before any
    work)."""
    from ..config import Precision
    from ..errors import ConfigError

    check_rules(args, "quantize")  # the INT8-only flags
    if Precision.parse(args.precision) is Precision.INT8 and not (args.calib
                                                                  or args.import_cache):
        raise ConfigError("--precision int8 needs calibration images (--calib DIR, e.g. "
                          "calibration/) or --import-cache FILE")
    check_rules(args, "quantize:combinations")


def run(args: argparse.Namespace) -> int:
    with StageProgress(enabled=not (args.no_progress or getattr(args, "quiet", False))) as bars:
        return _run(args, bars)


def _run(args: argparse.Namespace, bars: StageProgress) -> int:
    from ..checkpoint import CHECKPOINT_SUFFIXES
    from ..config import Precision
    from ..errors import ConfigError
    from ..fsio import atomic_write_json
    from ..precision import (
        auto_quantize_int8,
        evaluate_variants,
        format_table,
        quantize_int8,
        to_fp16,
        write_trt_calibration_cache,
    )

    # With --json, stdout carries the JSON document only; the human lines go to stderr.
    say = functools.partial(print, file=sys.stderr if args.json else sys.stdout)
    precision = Precision.parse(args.precision)
    if Path(args.model).suffix.lower() in CHECKPOINT_SUFFIXES:
        raise ConfigError(f"{args.model} is a checkpoint; quantize takes the ONNX file that "
                          f"`xception-trt export {args.model} -o model.onnx` writes: export it "
                          "first (or let `xception-trt build` do both)")
    check_flags(args)
    if Path(args.output).resolve() == Path(args.model).resolve():
        raise ConfigError("--output must differ from the input model")
    targeted = args.target_agreement is not None or args.target_top1_drop is not None
    check_rules(args, "quantize:threads")
    if args.val:  # an empty or unreadable --val is said now, not after calibration
        from ..data import open_dataset

        open_dataset(args.val)
    if targeted:
        return _run_targeted(args, bars, say)
    report: dict[str, Any] = {"model": args.model, "output": args.output,
                              "precision": args.precision}
    rows = None
    if precision is Precision.FP16:
        to_fp16(args.model, args.calib, num_images=args.num_images or 32, seed=args.seed,
                batch_size=args.batch_size, exclude_nodes=args.exclude,
                exclude_op_types=args.exclude_op_type, output=args.output)
        say(f"wrote {args.output} (fp16, FP32 I/O)")
    elif args.auto:
        auto = auto_quantize_int8(args.model, args.calib, args.val,
                                  val_images=args.val_images, output=args.output,
                                  **_int8_kwargs(args, bars))
        result = auto.best
        rows = list(auto.metrics)
        report["auto"] = {"criterion": auto.criterion,
                          "methods": {k: r.summary() for k, r in auto.results.items()}}
        say(f"auto: kept {result.method.value} by {auto.criterion} "
            f"(tried {', '.join(auto.results)})")
    else:
        result = quantize_int8(args.model, args.calib, method=args.method or "entropy",
                               import_cache=args.import_cache, output=args.output,
                               **_int8_kwargs(args, bars))
    bars.close()  # before the results are printed
    if precision is Precision.INT8:
        report["int8"] = result.summary()
        placed = (f", placed for {result.placement.value}" if args.placement == "onnxruntime"
                  else "")
        say(f"wrote {args.output} (int8 {result.method.value}{placed}): "
            f"{len(result.quantized_nodes)} compute node(s) quantized, "
            f"{len(result.excluded_nodes)} kept in {args.high_precision or 'fp32'}; "
            + (f"scales from {result.cache_path} (cache {result.cache}, no calibration)"
               if result.cache in ("hit", "imported") else
               f"{result.num_images} calibration image(s); cache {result.cache}")
            + f"; {result.seconds:.1f} s")
        if result.skipped_images:
            say(f"skipped {len(result.skipped_images)} unreadable image(s): "
                + ", ".join(p for p, _ in result.skipped_images[:5]))
        if args.export_trt_cache:
            write_trt_calibration_cache(result.scales, args.export_trt_cache)
            say(f"wrote {args.export_trt_cache} ({len(result.scales)} tensor scales)")
    if args.val and rows is None:
        variants: dict[str, Any] = {"fp32": args.model}
        if precision is Precision.FP16:
            variants["fp16"] = args.output
        elif args.compare_all:
            variants["fp16"] = to_fp16(args.model, args.calib, seed=args.seed,
                                       exclude_nodes=args.exclude,
                                       exclude_op_types=args.exclude_op_type)
        if precision is Precision.INT8:
            variants["int8"] = args.output
        elif args.compare_all and args.calib:
            variants["int8"] = quantize_int8(args.model, args.calib,
                                             method=args.method or "entropy",
                                             **_int8_kwargs(args, bars)).model
        elif args.compare_all:
            say("no --calib given: the INT8 row is left out of the table")
        rows = evaluate_variants(variants, args.val, num_images=args.val_images,
                                 seed=args.seed)
    if rows is not None:
        report["table"] = [r.to_dict() for r in rows]
        if not args.json:
            print(format_table(rows))
    elif not args.json:
        print("no --val given: accuracy table skipped")
    if args.report:
        atomic_write_json(args.report, report)
    if args.json:
        print_json(report)
    return 0


def check_target_flags(args: argparse.Namespace) -> None:
    """Refuse target flags that cannot work together (before any work)."""
    from ..errors import ConfigError

    names = [f for f, v in (("--target-agreement", args.target_agreement),
                            ("--target-top1-drop", args.target_top1_drop)) if v is not None]
    if len(names) > 1:
        raise ConfigError("give one target: --target-agreement or --target-top1-drop")
    flag = names[0]
    if not args.val:
        raise ConfigError(f"{flag} needs validation images (--val DIR): half of them choose the "
                          "nodes kept in FP32, half report the result")
    check_rules(args, "quantize:targeted")


def _run_targeted(args: argparse.Namespace, bars: StageProgress, say: Any) -> int:
    from ..config import Precision
    from ..errors import ConfigError
    from ..fsio import atomic_write_json
    from ..precision import DEFAULT_CACHE_DIR, DEFAULT_NUM_IMAGES, DEFAULT_PERCENTILE
    from ..precision.targeted import Target, targeted_int8

    if Precision.parse(args.precision) is not Precision.INT8:
        raise ConfigError("--target-agreement / --target-top1-drop need --precision int8")
    check_target_flags(args)
    if args.percentile is not None and args.percentile != DEFAULT_PERCENTILE:
        raise ConfigError("--percentile is not supported with a target yet; use --method max "
                          "or entropy")
    target = Target(agreement=args.target_agreement, top1_drop=args.target_top1_drop)
    result = targeted_int8(args.model, args.calib, args.val, target=target,
                           method=args.method or "entropy",
                           num_images=args.num_images or DEFAULT_NUM_IMAGES,
                           val_images=args.val_images, seed=args.seed,
                           batch_size=args.batch_size, threads=args.threads or 2,
                           cache_dir=None if args.no_cache else (args.cache_dir
                                                                 or DEFAULT_CACHE_DIR),
                           output=args.output, progress=bars)
    bars.close()
    kept = ", ".join(result.kept) or "none"
    say(f"wrote {args.output} (int8 {result.calibration['method']}, target "
        f"{target.describe()}): {len(result.kept)} node(s) kept in FP32 ({kept}); choice "
        f"cache {result.cache}")
    if not result.met_on_heldout:
        say("note: the target was met on the selection images but NOT on the held-out ones "
            "(more --val images make the choice more robust)")
    report = {"model": args.model, "output": args.output, "precision": args.precision,
              "targeted": result.summary()}
    if not args.json:
        print(result.format_table())
    if args.report:
        atomic_write_json(args.report, report)
    if args.json:
        print_json(report)
    return 0
