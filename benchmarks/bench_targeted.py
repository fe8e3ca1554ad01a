"""Issue 15: per-node INT8 sensitivity and accuracy-targeted INT8, end to end, and calibration
time per method against one FP32 forward pass over the same images on the same runtime (ONNX
Runtime, CPU).

For one FP32 ONNX (the trained demo model, or the full-size 299x299 Xception with random
weights made here), it measures:

* calibration wall time per method (cache off) and the time of one FP32 forward pass over the
  same images with ONNX Runtime (same threads), and their ratio;
* the sensitivity ranking (``xception_trt.precision.sensitivity``) and its run time;
* the targeted INT8 model for a target, and FP32 / FP16 / INT8 / INT8-targeted rows on the
  held-out half of the validation images: top-1 agreement, KL, max |d logit|, size, ORT latency.

    python benchmarks/bench_targeted.py --model demo-fp32.onnx --calib calibration/ \\
        --val validation/ --json benchmarks/results/targeted_demo.json
    python benchmarks/bench_targeted.py --full --images 64 --val-images 16 \\
        --json benchmarks/results/targeted_full.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _forward_seconds(model_path: Path, calib: Path, meta, num_images: int, threads: int,
                     batch: int) -> float:
    """One FP32 forward pass over the calibration images (decoded beforehand) with ORT."""
    import onnxruntime as ort

    from xception_trt.precision.sensitivity import load_images

    images = load_images(calib, meta, num_images=num_images, seed=0)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    for i in range(0, len(images), batch):
        sess.run(None, {"input": images.x[i:i + batch]})
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="FP32 ONNX (default with --full: made here)")
    ap.add_argument("--full", action="store_true", help="the 299x299 random-weights model")
    ap.add_argument("--calib", type=Path)
    ap.add_argument("--val", type=Path)
    ap.add_argument("--images", type=int, default=512, help="calibration images")
    ap.add_argument("--val-images", type=int, default=64)
    ap.add_argument("--sens-images", type=int, default=16)
    ap.add_argument("--methods", nargs="+", default=["max", "entropy", "percentile"])
    ap.add_argument("--target-agreement", type=float, default=0.995)
    ap.add_argument("--method", default="entropy", help="calibration method of the scales for "
                    "the sensitivity and targeted parts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["calib", "sens", "targeted"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from xception_trt.onnx_meta import read_metadata
    from xception_trt.precision import quantize_int8, to_fp16
    from xception_trt.precision.sensitivity import Scorer, load_images, sensitivity
    from xception_trt.precision.targeted import Target, targeted_int8

    work = Path(tempfile.mkdtemp(prefix="bench15-"))
    if args.full:
        import torch

        from xception_trt.config import ModelSpec
        from xception_trt.export import export_onnx
        from xception_trt.model import build_xception

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_precision import _synthetic_images

        torch.manual_seed(0)
        model = args.model or work / "xception299.onnx"
        if not model.exists():
            export_onnx(build_xception(spec=ModelSpec(num_classes=1000)).eval(), model,
                        check_parity=False)
        calib = args.calib or _synthetic_images(work / "calib", args.images)
        val = args.val or _synthetic_images(work / "val", args.val_images, size=320)
    else:
        model, calib, val = args.model, args.calib, args.val
    meta = read_metadata(model)
    out: dict = {"model": str(model), "full": args.full, "method": args.method,
                 "cpu_count": os.cpu_count(), "load_before": os.getloadavg(),
                 "images": args.images,
                 "threads": args.threads}
    cache = work / "cache"
    if "calib" not in args.skip:
        fwd = _forward_seconds(model, calib, meta, args.images, args.threads, 8)
        out["forward_pass_s"] = round(fwd, 2)
        out["calibration"] = {}
        for method in args.methods:
            t0 = time.perf_counter()
            res = quantize_int8(model, calib, method=method, num_images=args.images,
                                cache_dir=None)
            wall = time.perf_counter() - t0
            out["calibration"][method] = {"wall_s": round(wall, 2),
                                          "ratio_to_forward": round(wall / fwd, 2),
                                          "images": res.num_images,
                                          "load": os.getloadavg()}
            print(method, out["calibration"][method], flush=True)
    if "sens" not in args.skip:
        t0 = time.perf_counter()
        sens = sensitivity(model, calib, val, method=args.method, num_images=args.images,
                           val_images=args.sens_images, cache_dir=cache, threads=args.threads)
        out["sensitivity"] = {"wall_s_incl_calibration": round(time.perf_counter() - t0, 1),
                              "ranking_s": round(sens.seconds, 1), "nodes": len(sens.rows),
                              "images": sens.images, "top10": [r.to_dict() for r in
                                                               sens.rows[:10]],
                              "full_int8": sens.full_int8.to_dict(), "load": os.getloadavg()}
        print(sens.to_markdown()[:3000], flush=True)
    if "targeted" not in args.skip:
        t0 = time.perf_counter()
        res = targeted_int8(model, calib, val, target=Target(agreement=args.target_agreement),
                            method=args.method, num_images=args.images,
                            val_images=args.val_images,
                            cache_dir=cache, threads=args.threads)
        out["targeted"] = dict(res.summary(), wall_s=round(time.perf_counter() - t0, 1),
                               load=os.getloadavg())
        out["targeted"].pop("ranking", None)
        fp16 = to_fp16(model, calib, num_images=min(32, args.images))
        held = load_images(val, meta, num_images=args.val_images, seed=0)
        from xception_trt.precision.targeted import split_images

        _, held = split_images(held, seed=0)
        scorer = Scorer(__import__("onnx").load(str(model)), held, threads=args.threads)
        row = scorer.score(fp16, node="fp16")
        out["fp16_heldout"] = dict(row.to_dict(), size_bytes=fp16.ByteSize(),
                                   ort_latency_ms=round(scorer.latency_ms(fp16), 3))
        print(res.format_table(), flush=True)
        print("fp16", out["fp16_heldout"], flush=True)
    out["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "targeted"}, indent=1,
                     default=float)[:4000])
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
