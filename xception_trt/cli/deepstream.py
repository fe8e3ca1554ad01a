"""``xception-trt deepstream``: write an nvinfer + deepstream-app configuration for a model."""

from __future__ import annotations

import argparse

from ._common import add_command, batch_size, non_negative_int, path_argument, print_json

ORDER = 62


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a probability in [0, 1]")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "deepstream", run=run, json="the paths written and the preprocessing",
        help="write a DeepStream nvinfer + deepstream-app configuration (UNVERIFIED)",
        description="""Write, into DIR, the files that run MODEL (an xception-trt ONNX file:
            FP32, FP16 or INT8 Q/DQ, float-nchw or uint8-nhwc) as a primary classifier in
            NVIDIA DeepStream: config_infer_primary.txt (Gst-nvinfer: network-type=1,
            net-scale-factor and offsets derived exactly from the model's normalisation, or
            the normalisation folded into the first convolution when the per-channel std
            differs), the graph nvinfer builds its engine from (float NCHW input, softmax
            output), labels.txt and deepstream_app_config.txt. UNVERIFIED: these files were not
            run with DeepStream here; the keys follow NVIDIA's nvinfer documentation. nvinfer
            resizes the whole frame to the network size (no centre crop).""",
        output="folder to write the configuration into (created)", output_kind="dir",
        output_metavar="DIR")
    path_argument(p, "model", kind="file", what="model", metavar="MODEL",
                  help="an ONNX file exported by xception-trt (not an engine: nvinfer builds "
                       "and caches its own)")
    p.add_argument("--batch-size", type=batch_size, default=1,
                   help="nvinfer and streammux batch size (default: 1)")
    p.add_argument("--uri", default=None,
                   help="deepstream-app source URI: file:///..., rtsp://... (default: a "
                        "placeholder to edit; not with --camera)")
    p.add_argument("--camera", type=non_negative_int, default=None, metavar="N",
                   help="read the V4L2 camera /dev/videoN instead of --uri")
    p.add_argument("--threshold", type=_probability, default=0.0,
                   help="classifier-threshold: lowest probability attached as a label "
                        "(default: 0)")
    p.add_argument("--gpu-id", type=non_negative_int, default=0, help="GPU index (default: 0)")


def run(args: argparse.Namespace) -> int:
    from ..deepstream import SourceKind, export_deepstream

    res = export_deepstream(
        args.model, args.output, batch_size=args.batch_size, source=args.uri,
        source_kind=SourceKind.CAMERA if args.camera is not None else SourceKind.URI,
        camera=args.camera or 0, threshold=args.threshold, gpu_id=args.gpu_id)
    files = {"nvinfer_config": res.nvinfer_config, "app_config": res.app_config,
             "onnx": res.onnx, "labels": res.labels, "engine_cache": res.engine}
    if args.json:
        print_json({**{k: str(v) for k, v in files.items()},
                    "net_scale_factor": res.preprocess.net_scale_factor,
                    "offsets": list(res.preprocess.offsets), "folded": res.preprocess.folded,
                    "verified": False})
        return 0
    for key, path in files.items():
        print(f"{key:15s} {path}")
    how = ("normalisation folded into the graph (per-channel std)" if res.preprocess.folded
           else f"net-scale-factor={res.preprocess.net_scale_factor!r} "
                f"offsets={';'.join(repr(o) for o in res.preprocess.offsets)}")
    print(f"preprocessing   {how}")
    print(f"run (UNVERIFIED here): cd {res.directory} && deepstream-app -c "
          f"{res.app_config.name}")
    return 0
