"""One stage at a time, on the demo's checkpoint: load, export to ONNX, build a TensorRT engine,
run the graph with ONNX Runtime and classify the demo's images.

    xception-trt demo                       # once: makes ~/.cache/xception-trt/demo
    python examples/stages.py               # writes into ./example-out/stages/
"""

import argparse
from pathlib import Path

import numpy as np

import xception_trt as xt

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--demo", type=Path, default=Path.home() / ".cache" / "xception-trt" / "demo",
                    help="the demo's work folder (default: ~/.cache/xception-trt/demo)")
parser.add_argument("--out", type=Path, default=Path("example-out") / "stages",
                    help="a new folder for this example's files (default: example-out/stages)")
args = parser.parse_args()

checkpoint = sorted(args.demo.glob("models/*.safetensors"))[0]   # the demo's fine-tuned model
images = sorted(args.demo.glob("data/validation/7/*.png"))[:4]     # four of its sevens

model = xt.load_model(checkpoint)                                  # or a timm .pth / Keras .h5
xt.export_onnx(model, args.out / "model.onnx")                     # checked, cleaned, verified

# A TensorRT engine: NVIDIA TensorRT where it imports with a GPU, else TensorRT-RTX (which builds
# on a CPU-only machine for an RTX GPU: it cannot run here).
art = xt.build_engine(args.out / "model.onnx", xt.BuildConfig(max_batch=8),
                      output=args.out / "model.engine")
print(f"engine {art.path}: {art.size_bytes / 2**20:.1f} MiB (+ sidecar {art.path}.json)")

# Every model file runs the same way: an .engine on an NVIDIA GPU, an .onnx with ONNX Runtime,
# a checkpoint with torch, a bundle with whatever fits the machine.
with xt.open_runner(args.out / "model.onnx") as runner:
    spec = runner.input_spec                                       # float32 (N, 3, 71, 71)
    batch = np.zeros((2, *spec.shape[1:]), spec.dtype)             # two preprocessed images
    logits = runner(batch)
print(f"logits {logits.dtype} {logits.shape}")

with xt.Classifier(args.out / "model.onnx") as clf:                # preprocessing from its metadata
    for path, top in zip(images, clf.classify(images, top_k=2)):
        print(f"{path.name}: " + ", ".join(f"{p.label} {p.probability:.1%}" for p in top))
