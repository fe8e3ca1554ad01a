"""``xception-trt sensitivity``: rank the quantized nodes (Conv/Gemm, residual adds, pooling) of
an FP32 ONNX by how far INT8 on that node alone moves the logits from FP32 (Markdown + JSON
table, and a plot)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import StageProgress, add_command, path_argument, positive_int, print_json

ORDER = 21


def register(sub: argparse._SubParsersAction) -> None:
    from ..precision import DEFAULT_NUM_IMAGES, CalibrationMethod
    from ..precision.cache import DEFAULT_CACHE_DIR_HELP
    from ..precision.sensitivity import DEFAULT_VAL_IMAGES

    p = add_command(
        sub, "sensitivity", run=run, output="folder for sensitivity.md, sensitivity.json and "
        "sensitivity.png (default: sensitivity/)", output_kind="dir", output_required=False,
        output_metavar="DIR", json="the ranking",
        help="rank nodes by how much INT8 on each alone changes the output",
        description="""Calibrate once (ModelOpt, through the calibration cache), then for each
            quantized node (each Conv/Gemm, and the residual adds and pooling the placement
            quantizes) build the graph where only that node runs in INT8 (the same
            scales; every other node FP32) and measure it with ONNX Runtime on the CPU against
            FP32: top-1 agreement, KL divergence and max |logit difference| on the validation
            images. Nodes are named by ONNX node and by the PyTorch module they came from.
            Writes a ranked table (Markdown and JSON) and a plot (needs the plot extra).""",
        epilog="example:\n  xception-trt sensitivity model.onnx --calib calibration/ --val val/ "
               "-o sensitivity/", raw_epilog=True)
    path_argument(p, "model", kind="file", what="model",
                  help="FP32 ONNX model written by `xception-trt export`")
    path_argument(p, "--calib", kind="any", metavar="DIR",
                  help="calibration images (a folder or a file list); required")
    path_argument(p, "--val", kind="any", metavar="DIR",
                  help="validation images each node is measured on (labelled: top-1 too); required")
    p.add_argument("--method", choices=CalibrationMethod.choices(), default="entropy",
                   help="calibration method of the scales (default: entropy)")
    p.add_argument("--num-images", type=positive_int, default=DEFAULT_NUM_IMAGES,
                   help=f"calibration images (default: {DEFAULT_NUM_IMAGES})")
    p.add_argument("--val-images", type=positive_int, default=DEFAULT_VAL_IMAGES,
                   help=f"validation images, a seeded subset (default: {DEFAULT_VAL_IMAGES}; one "
                        "ONNX Runtime run per node over them)")
    p.add_argument("--seed", type=int, default=0, help="selection seed (default: 0)")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="calibration batch size (default: 8)")
    p.add_argument("--threads", type=positive_int, default=2,
                   help="ONNX Runtime intra-op threads (default: 2)")
    p.add_argument("--cache-dir", default=None,
                   help=f"calibration cache folder (default: {DEFAULT_CACHE_DIR_HELP})")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--no-plot", action="store_true", help="do not draw sensitivity.png")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (shown on a terminal only, on stderr)")


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..fsio import atomic_write_json, atomic_write_text
    from ..precision import DEFAULT_CACHE_DIR
    from ..precision.sensitivity import plot_sensitivity, sensitivity

    for flag, given, what in (("--calib", args.calib, "calibration images to compute the INT8 "
                               "scales"), ("--val", args.val, "validation images to measure "
                                           "each node on")):
        if not given:
            raise ConfigError(f"sensitivity needs {flag} DIR: {what}")
    out = Path(args.output or "sensitivity")
    with StageProgress(enabled=not (args.no_progress or getattr(args, "quiet", False))) as bars:
        result = sensitivity(args.model, args.calib, args.val, method=args.method,
                             num_images=args.num_images, val_images=args.val_images,
                             seed=args.seed, batch_size=args.batch_size, threads=args.threads,
                             cache_dir=(None if args.no_cache
                                        else args.cache_dir or DEFAULT_CACHE_DIR),
                             progress=bars)
    out.mkdir(parents=True, exist_ok=True)
    doc = dict(result.to_dict(), model=str(args.model))
    atomic_write_json(out / "sensitivity.json", doc)
    atomic_write_text(out / "sensitivity.md", result.to_markdown())
    written = [out / "sensitivity.md", out / "sensitivity.json"]
    if not args.no_plot:
        written.append(plot_sensitivity(result, out / "sensitivity.png"))
    if args.json:
        print_json(doc)
    else:
        print(result.to_markdown(), end="")
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr if args.json else sys.stdout)
    return 0
