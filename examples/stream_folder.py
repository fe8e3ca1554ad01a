"""Live classification of a folder of images, frame by frame, as `xception-trt stream` does for
video files, cameras and stream URLs: a decoder thread and an inference thread, micro-batches,
per-frame latency.

    xception-trt demo                       # once: makes ~/.cache/xception-trt/demo
    python examples/stream_folder.py        # reads the demo's validation images of one digit
"""

import argparse
from pathlib import Path

import xception_trt as xt

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--demo", type=Path, default=Path.home() / ".cache" / "xception-trt" / "demo",
                    help="the demo's work folder (default: ~/.cache/xception-trt/demo)")
parser.add_argument("--digit", default="5", help="which validation folder to stream (default 5)")
args = parser.parse_args()

model = sorted(args.demo.glob("artifacts/*/fp32.onnx"))[0]   # the demo's FP32 ONNX graph
folder = args.demo / "data" / "validation" / args.digit

right = frames = 0
with xt.Classifier(model) as clf:
    for r in clf.stream(folder, top_k=1, batch=4):             # one StreamResult per frame
        frames += 1
        right += r.predictions[0].label == args.digit
        if r.index < 5:
            print(f"frame {r.index}: {r.predictions[0].label} "
                  f"({r.predictions[0].probability:.1%}), {r.latency_ms:.1f} ms")
print(f"{frames} frames, {right} classified as {args.digit}")
