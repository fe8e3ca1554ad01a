"""INT8 on ONNX Runtime's CPU provider: FP32 vs INT8 placed for TensorRT vs INT8 placed for ONNX
Runtime (issue 18), side by side in one run, on the full model and the demo model.

For each model and each batch size (default 1 and 8) and each variant: median latency of
``runner(batch)`` (ONNX Runtime CPU provider, ``--threads`` intra-op threads; warm-up calls
first, then ``--repeats`` timed calls), the number of Conv/Gemm nodes ONNX Runtime's optimised
graph runs as quantized kernels (``xception_trt.precision.fused_kernel_counts``), and, on the
demo model, top-1 agreement with FP32 (and top-1 accuracy) on the demo's validation images.

Models:

* full: the 299x299 Xception with **random weights** (no ImageNet weights are downloaded;
  latency and fusion do not depend on the weights' values, agreement does, so none is
  reported), calibrated on ``--full-images`` synthetic smooth images.
* demo: the trained digits demo model (``xception-trt demo``): its FP32 ONNX and its data
  (calibration/ and validation/) are taken from ``--demo-workdir`` when a demo ran there (e.g.
  the work folder of ``benchmarks/bench_demo.py``), else the demo's data, train and export steps
  run there first (a few minutes on 2 cores).

Both INT8 variants are calibrated with the same method (``--method``, default entropy) on the
same images; their scales are cached in the work folder, so a second run only measures.

Timings on a shared machine depend on what else runs: the load averages before and after are
recorded with the CPU's INT8 features (VNNI, AMX); quote figures only with them.

    python benchmarks/bench_ort_int8.py --demo-workdir /tmp/demo-bench \\
        --out benchmarks/results/ort_int8.json
    python benchmarks/bench_ort_int8.py --models demo --repeats 10      # quick check
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

import numpy as np

from xception_trt.fsio import atomic_write_json
from xception_trt.host import load_average
from xception_trt.sysinfo import system_facts

VARIANTS = ("fp32", "int8-trt", "int8-ort")


def _synthetic_images(folder: Path, n: int, size: int = 340) -> Path:
    """Smooth random RGB JPEGs (blurred noise, like photos), deterministic."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, size=(size // 16, size // 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size + (i % 7) * 5, size),
                                            Image.Resampling.BILINEAR)
        img.save(folder / f"img_{i:04d}.jpg", quality=90)
    return folder


def full_model(work: Path, images: int) -> tuple[Path, Path, None]:
    """The 299x299 Xception (random weights) as FP32 ONNX, and synthetic calibration images."""
    fp32 = work / "full" / "xception299.onnx"
    calib = work / "full" / "calib"
    if not fp32.is_file():
        import torch

        from xception_trt.config import ModelSpec
        from xception_trt.export import export_onnx
        from xception_trt.model import build_xception

        torch.manual_seed(0)
        fp32.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(build_xception(spec=ModelSpec(num_classes=1000)).eval(), fp32,
                    check_parity=False)
    if len(list(calib.glob("*.jpg"))) < images:
        _synthetic_images(calib, images)
    return fp32, calib, None


def demo_model(workdir: Path) -> tuple[Path, Path, Path]:
    """The trained demo model's FP32 ONNX, calibration and validation folders (running the
    demo's data/train/export steps in ``workdir`` when it has none)."""
    found = sorted(workdir.glob("artifacts/*/fp32.onnx"), key=lambda p: p.stat().st_mtime)
    if not found:
        from xception_trt.demo import DemoConfig, run_demo
        from xception_trt.demo.config import STEP_NAMES

        keep = {"data", "train", "export"}
        run_demo(workdir, config=DemoConfig(skip=frozenset(set(STEP_NAMES) - keep)))
        found = sorted(workdir.glob("artifacts/*/fp32.onnx"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no demo model in {workdir}/artifacts/*/fp32.onnx after the demo run")
    return found[-1], workdir / "data" / "calibration", workdir / "data" / "validation"


def make_variants(fp32: Path, calib: Path, out: Path, *, method: str, images: int,
                  cache: Path) -> dict[str, dict]:
    """The two INT8 placements of ``fp32`` (same method and images), with their timings."""
    from xception_trt.precision import ort_int8, quantize_int8

    made: dict[str, dict] = {"fp32": {"path": fp32}}
    for name, fn in (("int8-trt", quantize_int8), ("int8-ort", ort_int8)):
        t0 = time.perf_counter()
        res = fn(fp32, calib, method=method, num_images=images, cache_dir=cache,
                 output=out / f"{fp32.stem}.{name}.onnx")
        made[name] = {"path": res.path, "calibration_s": round(time.perf_counter() - t0, 1),
                      "cache": res.cache, "calibration_images": res.num_images or images,
                      "quantized_nodes": len(res.quantized_nodes)}
    return made


def latency_ms(path: Path, batch: int, *, threads: int | None, warmup: int,
               repeats: int) -> float:
    """Median wall time of one ``runner(batch)`` call on the CPU provider, in ms."""
    from xception_trt.runners import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"], threads=threads)
    try:
        spec = runner.input_spec
        shape = (batch, *spec.shape[1:])
        x = (np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
             if spec.dtype == np.uint8 else
             np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        for _ in range(warmup):
            runner(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            runner(x)
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times) * 1000, 3)
    finally:
        runner.close()


def agreement(made: dict[str, dict], val: Path, threads: int | None) -> dict[str, dict]:
    """Top-1 agreement with FP32 and top-1 accuracy of each variant on ``val``."""
    from xception_trt.precision import evaluate_variants

    rows = evaluate_variants({k: v["path"] for k, v in made.items()}, val, threads=threads)
    return {r.name: {"agreement_pct": round(r.agreement, 2), "top1_pct": r.top1,
                     "images": r.images, "mean_abs_logit_diff": round(r.mean_abs_diff, 4)}
            for r in rows}


def bench_model(name: str, fp32: Path, calib: Path, val: Path | None, work: Path,
                args: argparse.Namespace) -> dict:
    from xception_trt.precision import fused_kernel_counts

    images = args.full_images if name == "full" else args.demo_images
    made = make_variants(fp32, calib, work / name, method=args.method, images=images,
                         cache=work / "calibration-cache")
    out: dict = {"onnx": str(fp32), "method": args.method, "variants": {}}
    if name == "full":
        out["weights"] = "random (latency and fusion only; no agreement)"
    for v in VARIANTS:
        counts = fused_kernel_counts(made[v]["path"])
        entry = {k: (str(x) if isinstance(x, Path) else x) for k, x in made[v].items()}
        entry.update(fused=f"{counts.quantized}/{counts.total}", kernels=counts.to_dict(),
                     latency_ms={})
        for b in args.batch_sizes:
            entry["latency_ms"][str(b)] = latency_ms(made[v]["path"], b, threads=args.threads,
                                                     warmup=args.warmup, repeats=args.repeats)
            print(f"{name:<5} {v:<9} batch {b:<2} {entry['latency_ms'][str(b)]:9.2f} ms  "
                  f"fused {entry['fused']}", flush=True)
        out["variants"][v] = entry
    fp32_ms = out["variants"]["fp32"]["latency_ms"]
    for v in VARIANTS[1:]:
        out["variants"][v]["speedup_vs_fp32"] = {
            b: round(fp32_ms[b] / ms, 2) for b, ms in out["variants"][v]["latency_ms"].items()}
    if val is not None:
        for v, row in agreement(made, val, args.threads).items():
            out["variants"][v]["accuracy"] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=["full", "demo"], default=["full", "demo"])
    p.add_argument("--demo-workdir", type=Path, default=None,
                   help="a demo work folder (default: <workdir>/demo, made when missing)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep models and calibration caches here (default: a temp folder)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=30, help="timed calls per point")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads (default: one per physical core)")
    p.add_argument("--method", default="entropy", help="calibration method of both variants")
    p.add_argument("--full-images", type=int, default=32,
                   help="calibration images for the full model (synthetic)")
    p.add_argument("--demo-images", type=int, default=512,
                   help="calibration images for the demo model (at most its calibration set)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ort_int8.json"))
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench-ort-int8-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        facts = system_facts(probe_gpus=False)
        result: dict = {
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "cpu": facts["cpu"], "cpu_count": os.cpu_count(), "cpu_int8": facts["cpu_int8"],
            "software": {k: facts["software"].get(k) for k in
                         ("xception-trt", "onnxruntime", "onnx", "nvidia-modelopt", "torch")},
            "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup,
            "load_average_before": load_average(), "models": {}}
        if "full" in args.models:
            fp32, calib, val = full_model(work, args.full_images)
            result["models"]["full"] = bench_model("full", fp32, calib, val, work, args)
        if "demo" in args.models:
            fp32, calib, val = demo_model(args.demo_workdir or work / "demo")
            result["models"]["demo"] = bench_model("demo", fp32, calib, val, work, args)
        result["load_average_after"] = load_average()
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
