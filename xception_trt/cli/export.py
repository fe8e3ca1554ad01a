"""``xception-trt export``: checkpoint -> clean ONNX (+ before/after report and parity check)."""

from __future__ import annotations

import argparse

from ._common import HUB_HELP, add_command, path_argument, positive_int, print_json
from ._options import check_rules

ORDER = 10


def _batch(text: str) -> int | str:
    if text.lower() == "dynamic":
        return "dynamic"
    return positive_int(text)


def register(sub: argparse._SubParsersAction) -> None:
    from ..export import DEFAULT_OPSET, EXPORTERS, MIN_OPSET
    from ..graph import TRT_MAX_OPSET

    p = add_command(
        sub, "export", run=run, help="export a checkpoint to a clean ONNX graph",
        output="ONNX file to write (.onnx)", json="the result",
        force="overwrite an existing output file",
        description="""Export an Xception checkpoint to ONNX (input 'input', output 'logits'),
            clean the graph with onnx-graphsurgeon (constants and BatchNorm folded, Identity
            removed, canonical head), check it with onnx.checker and compare ONNX Runtime with
            PyTorch before writing the file.""")
    path_argument(p, "checkpoint", kind="file", what="checkpoint", hub=True,
                  help=f"checkpoint file (.safetensors, timm .pth/.bin, Keras .h5), {HUB_HELP}")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {MIN_OPSET}..{TRT_MAX_OPSET} (default: {DEFAULT_OPSET}, "
                        "the newest TensorRT 8.6 reads)")
    p.add_argument("--batch", type=_batch, default="dynamic",
                   help="'dynamic' (default) or a fixed batch size")
    p.add_argument("--input-format", choices=["float-nchw", "uint8-nhwc"], default="float-nchw",
                   help="float-nchw: normalised float32 NCHW (default); uint8-nhwc: raw pixels "
                        "after resize/crop, normalisation folded into the first convolution")
    p.add_argument("--no-clean", action="store_true",
                   help="skip the onnx-graphsurgeon cleanup (keep the exporter's raw graph)")
    p.add_argument("--exporter", choices=list(EXPORTERS), default="auto",
                   help="torch exporter: auto (TorchScript up to opset 20, else dynamo; default)")
    p.add_argument("--no-parity", action="store_true",
                   help="skip the ONNX Runtime vs PyTorch parity check")
    p.add_argument("--parity-samples", type=positive_int, default=None,
                   help="random inputs for the parity check (default: 4)")


def run(args: argparse.Namespace) -> int:
    from ..export import export_onnx

    check_rules(args, "export")
    result = export_onnx(args.checkpoint, args.output, opset=args.opset, batch=args.batch,
                         input_format=args.input_format, clean=not args.no_clean,
                         check_parity=not args.no_parity,
                         parity_samples=args.parity_samples or 4,
                         exporter=args.exporter)
    if args.json:
        print_json(result.to_dict())
        return 0
    spec = result.spec
    print(f"wrote {result.path} ({result.report.file_size / 2**20:.2f} MiB) in "
          f"{result.seconds:.1f} s")
    print(f"model: {spec.num_classes} classes, {spec.input_size}x{spec.input_size}, "
          f"width {spec.width:g}; input {result.input_format}, batch {result.batch}, "
          f"opset {result.opset}, {result.exporter} exporter"
          f"{', cleaned' if result.clean else ', not cleaned'}")
    print(result.report.format())
    if result.parity is not None:
        print(result.parity.summary())
    return 0
