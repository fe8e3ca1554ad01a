"""Accuracy and latency of the demo's FP32 and INT8 ONNX graphs on ONNX Runtime: top-1 on the
demo's validation images, agreement of INT8 with FP32, and a small latency sweep.

    xception-trt demo                       # once: makes ~/.cache/xception-trt/demo
    python examples/accuracy_latency.py     # prints a table; writes nothing
"""

import argparse
from pathlib import Path

import xception_trt as xt

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--demo", type=Path, default=Path.home() / ".cache" / "xception-trt" / "demo",
                    help="the demo's work folder (default: ~/.cache/xception-trt/demo)")
parser.add_argument("--limit", type=int, default=None, help="evaluate at most this many images")
args = parser.parse_args()

art = sorted(args.demo.glob("artifacts/*/fp32.onnx"))[0].parent
names = ["fp32", "int8"]
runners = [xt.open_runner(art / f"{name}.onnx") for name in names]
try:
    result = xt.evaluate(runners, args.demo / "data" / "validation", names=names, reference=0,
                         limit=args.limit)
    for ev in result.runners:
        agree = f", agrees with fp32 on {ev.agreement.top1_agreement:.2%}" if ev.agreement else ""
        print(f"{ev.name}: top-1 {ev.accuracy.top1:.2%} of {ev.accuracy.images} images{agree}")
    config = xt.BenchConfig(batch_sizes=(1, 8), iterations=10, warmup=2)
    for name, runner in zip(names, runners):
        bench = xt.benchmark_runner(runner, config, name=name)
        print(f"{name}: " + ", ".join(f"batch {r.batch_size} median {r.end_to_end.median_ms:.2f} ms"
                                      for r in bench.latency if r.end_to_end))
finally:
    for runner in runners:
        runner.close()
