"""A bundle from the demo's checkpoint: FP16 and INT8 variants (calibrated on the demo's
images, accuracy measured on its validation images) and TensorRT-RTX engines for two RTX GPUs,
in one file; then open it the way a device does and see what it chose.

    xception-trt demo                       # once: makes ~/.cache/xception-trt/demo
    python examples/bundle.py               # writes ./example-out/bundle/model.xtrt
"""

import argparse
from pathlib import Path

import xception_trt as xt

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--demo", type=Path, default=Path.home() / ".cache" / "xception-trt" / "demo",
                    help="the demo's work folder (default: ~/.cache/xception-trt/demo)")
parser.add_argument("--out", type=Path, default=Path("example-out") / "bundle",
                    help="a new folder for this example's files (default: example-out/bundle)")
args = parser.parse_args()

checkpoint = sorted(args.demo.glob("models/*.safetensors"))[0]

data = args.demo / "data"
bundle = xt.write_bundle(source=checkpoint, output=args.out / "model.xtrt",
                         precisions=["fp16", "int8"], calibration=data / "calibration",
                         validation=data / "validation", cc=["sm86", "sm89"],
                         work_dir=args.out / "work")
print(f"{bundle.path}: {bundle.bytes / 2**20:.1f} MiB")

# The engine that fits this machine: prebuilt, built here and cached, or (no GPU) the bundled
# ONNX graph with ONNX Runtime; never a mismatched engine.
for precision in ("fp16", "int8"):
    with xt.open_runner(bundle.path, precision=precision) as runner:
        print(f"{precision}: {runner.bundle.choice.reason}")

images = sorted((data / "validation" / "4").glob("*.png"))[:3]
with xt.Classifier(bundle.path, precision="int8") as clf:
    for path, top in zip(images, clf.classify(images, top_k=1)):
        print(f"{path.name}: {top[0].label} ({top[0].probability:.1%})")
