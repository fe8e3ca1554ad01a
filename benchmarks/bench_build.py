"""Engine build wall time per precision and engine sizes, full 299x299 Xception, TensorRT-RTX on
this machine's CPU (or NVIDIA TensorRT with --flavour tensorrt on a GPU machine).

Steps: export the model to ONNX (once), make the FP16 and INT8 variants (once; INT8 calibrated
on --calib images, or on synthetic smooth images when none are given — fine for build timing,
meaningless for accuracy), then build every precision ``--repeat`` times with ``force=True`` and
report the median wall time of ``build_engine`` and of TensorRT's own build call.

    python benchmarks/bench_build.py                      # random-weight Xception, RTX, CPU
    python benchmarks/bench_build.py --checkpoint xception.safetensors --calib calib/ \\
        --targets default sm86 --repeat 3 --json results/build.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _synthetic_images(folder: Path, n: int, size: tuple[int, int] = (400, 300)) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size, Image.Resampling.BILINEAR).save(
            folder / f"img_{i:03d}.png")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint to export (default: random-weight 299x299 Xception)")
    parser.add_argument("--calib", default=None, help="calibration images for INT8")
    parser.add_argument("--calib-images", type=int, default=32,
                        help="INT8 calibration images (default: 32)")
    parser.add_argument("--precision", nargs="+", default=["fp32", "fp16", "int8"])
    parser.add_argument("--targets", nargs="+", default=["default", "sm86"],
                        help="TensorRT-RTX targets to time: 'default' (portable set) and/or "
                             "compute capabilities (default: default sm86)")
    parser.add_argument("--flavour", default="tensorrt_rtx",
                        help="TensorRT flavour: tensorrt_rtx (default) or tensorrt")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="keep the ONNX/engines here")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    import torch

    from xception_trt.config import BuildConfig, ModelSpec
    from xception_trt.export import export_onnx
    from xception_trt.model import build_xception
    from xception_trt.precision import quantize_int8, to_fp16
    from xception_trt.sysinfo import cpu_model, software_versions
    from xception_trt.trt.builder import build_engine, resolve_flavour

    flavour = resolve_flavour(args.flavour)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-build-"))
    work.mkdir(parents=True, exist_ok=True)
    prep: dict[str, float] = {}

    t = time.perf_counter()
    if args.checkpoint:
        source = args.checkpoint
    else:
        torch.manual_seed(0)
        source = build_xception(spec=ModelSpec()).eval()
    graphs = {"fp32": export_onnx(source, work / "xception.onnx", check_parity=False).path}
    prep["export_s"] = time.perf_counter() - t
    if "fp16" in args.precision:
        t = time.perf_counter()
        graphs["fp16"] = work / "xception.fp16.onnx"
        to_fp16(graphs["fp32"], output=graphs["fp16"])
        prep["fp16_convert_s"] = time.perf_counter() - t
    if "int8" in args.precision:
        calib = Path(args.calib) if args.calib else _synthetic_images(work / "calib",
                                                                      args.calib_images)
        t = time.perf_counter()
        graphs["int8"] = work / "xception.int8.onnx"
        quantize_int8(graphs["fp32"], calib, num_images=args.calib_images, cache_dir=None,
                      output=graphs["int8"])
        prep["int8_calibrate_s"] = time.perf_counter() - t

    rows = []
    for precision in args.precision:
        for target in args.targets:
            ccs = () if target == "default" else (target,)
            cfg = BuildConfig(flavour=flavour.name, max_batch=args.max_batch,
                              cc=ccs)
            walls, trt_s, size = [], [], 0
            engine = work / f"xception.{precision}.{target}.engine"
            for _ in range(args.repeat):
                t = time.perf_counter()
                art = build_engine(graphs[precision], cfg, output=engine, force=True)
                walls.append(time.perf_counter() - t)
                trt_s.append(art.sidecar.build_seconds)
                size = art.size_bytes
            rows.append({"precision": precision, "targets": target,
                         "onnx_mib": os.path.getsize(graphs[precision]) / 2**20,
                         "engine_mib": size / 2**20,
                         "build_wall_s_median": statistics.median(walls),
                         "build_wall_s_min": min(walls),
                         "trt_build_s_median": statistics.median(trt_s),
                         "repeats": args.repeat})

    facts = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
             "flavour": flavour.name, "version": flavour.version,
             "software": {k: v for k, v in software_versions().items()
                          if k in ("python", "torch", "onnx", "nvidia-modelopt", "tensorrt",
                                   "tensorrt-rtx")},
             "model": "Xception 299x299, 1000 classes" + (
                 f" ({args.checkpoint})" if args.checkpoint else " (random weights)"),
             "max_batch": args.max_batch, "prep": prep}
    print(f"# {facts['model']}; {flavour.name} {flavour.version}; {facts['cpu']} "
          f"({facts['cpu_count']} cores); profile batch 1..{args.max_batch}")
    print("# prep: " + ", ".join(f"{k} {v:.1f}" for k, v in prep.items()))
    print(f"{'precision':<9} {'targets':<8} {'onnx MiB':>9} {'engine MiB':>11} "
          f"{'build s (median)':>17} {'min':>6} {'TRT call s':>11}")
    for r in rows:
        print(f"{r['precision']:<9} {r['targets']:<8} {r['onnx_mib']:>9.1f} "
              f"{r['engine_mib']:>11.1f} {r['build_wall_s_median']:>17.2f} "
              f"{r['build_wall_s_min']:>6.2f} {r['trt_build_s_median']:>11.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"facts": facts, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
