"""INT8 on ONNX Runtime's CPU provider: FP32 vs INT8 placed for TensorRT vs INT8 placed for ONNX
Runtime (issue 18), side by side in one run, on the full model and the demo model.

For each model and each batch size (default 1 and 8) and each variant: median (and minimum)
latency of ``runner(batch)`` (ONNX Runtime CPU provider, ``--threads`` intra-op threads; warm-up
calls first, then ``--repeats`` timed calls, the variants taking turns call by call so that
background load hits them alike), the number of Conv/Gemm nodes ONNX Runtime's optimised
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

``--study`` (demo model) adds the measurements behind the choice of quantizer for the ONNX
Runtime placement: ONNX Runtime's ``quantize_static`` with uint8 activations (what
``--placement onnxruntime`` uses), with int8 activations (asymmetric, and symmetric), and NVIDIA
ModelOpt configured to quantize outputs too (``op_types_needing_output_quant``; its activations
are always symmetric int8), all MinMax-calibrated on the same images: fused kernels, latency and
agreement with FP32.

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_precision import _synthetic_images  # noqa: E402  (the same calibration images)

from xception_trt.fsio import atomic_write_json
from xception_trt.host import load_average
from xception_trt.sysinfo import system_facts

VARIANTS = ("fp32", "int8-trt", "int8-ort")


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
    from xception_trt.onnx_meta import read_metadata
    from xception_trt.precision import ort_int8, quantize_int8

    made: dict[str, dict] = {"fp32": {"path": fp32}}
    for name, fn in (("int8-trt", quantize_int8), ("int8-ort", ort_int8)):
        t0 = time.perf_counter()
        res = fn(fp32, calib, method=method, num_images=images, cache_dir=cache,
                 output=out / f"{fp32.stem}.{name}.onnx")
        facts = read_metadata(res.model).json_field("calibration")
        made[name] = {"path": res.path, "calibration_s": round(time.perf_counter() - t0, 1),
                      "cache": res.cache, "calibration_images": facts["num_images"],
                      "quantized_nodes": len(res.quantized_nodes)}
    return made


def latencies_ms(paths: dict[str, Path], batch: int, *, threads: int | None, warmup: int,
                 repeats: int) -> dict[str, dict[str, float]]:
    """Median and minimum wall time of one ``runner(batch)`` call per model, in ms, on the CPU
    provider. The models take turns call by call (round-robin), so a change in background load
    hits each of them alike."""
    from xception_trt.runners import OnnxRuntimeRunner

    runners = {k: OnnxRuntimeRunner(p, providers=["CPUExecutionProvider"], threads=threads)
               for k, p in paths.items()}
    try:
        inputs = {}
        for k, runner in runners.items():
            spec = runner.input_spec
            shape = (batch, *spec.shape[1:])
            rng = np.random.default_rng(0)
            inputs[k] = (rng.integers(0, 256, size=shape, dtype=np.uint8)
                         if spec.dtype == np.uint8 else
                         rng.standard_normal(shape).astype(np.float32))
            for _ in range(warmup):
                runner(inputs[k])
        times: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(repeats):
            for k, runner in runners.items():
                t0 = time.perf_counter()
                runner(inputs[k])
                times[k].append((time.perf_counter() - t0) * 1000)
        return {k: {"median": round(statistics.median(v), 3), "min": round(min(v), 3)}
                for k, v in times.items()}
    finally:
        for runner in runners.values():
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
                     latency_ms={}, latency_min_ms={})
        out["variants"][v] = entry
    for b in args.batch_sizes:
        lat = latencies_ms({v: made[v]["path"] for v in VARIANTS}, b, threads=args.threads,
                           warmup=args.warmup, repeats=args.repeats)
        for v in VARIANTS:
            entry = out["variants"][v]
            entry["latency_ms"][str(b)] = lat[v]["median"]
            entry["latency_min_ms"][str(b)] = lat[v]["min"]
            print(f"{name:<5} {v:<9} batch {b:<2} median {lat[v]['median']:9.2f} ms  min "
                  f"{lat[v]['min']:9.2f} ms  fused {entry['fused']}", flush=True)
    fp32_ms = out["variants"]["fp32"]["latency_ms"]
    for v in VARIANTS[1:]:
        out["variants"][v]["speedup_vs_fp32"] = {
            b: round(fp32_ms[b] / ms, 2) for b, ms in out["variants"][v]["latency_ms"].items()}
    if val is not None:
        for v, row in agreement(made, val, args.threads).items():
            out["variants"][v]["accuracy"] = row
    return out


_MODELOPT_STUDY = """
import sys, numpy as np
from pathlib import Path
from modelopt.onnx.quantization import quantize
files = sorted(Path(sys.argv[2]).glob("batch_*.npz"))
class Reader:
    def __init__(self): self.it = iter(files)
    def get_next(self):
        f = next(self.it, None)
        return None if f is None else {"input": np.load(f)["input"]}
    def rewind(self): self.it = iter(files)
    def get_first(self): return {"input": np.load(files[0])["input"]}
quantize(sys.argv[1], quantize_mode="int8", calibration_data_reader=Reader(),
         calibration_method="max", calibration_eps=["cpu"], high_precision_dtype="fp32",
         output_path=sys.argv[3], log_level="ERROR",
         op_types_needing_output_quant=["Conv", "Gemm", "Relu", "Add", "MaxPool",
                                        "GlobalAveragePool"])
"""


def quantizer_study(fp32: Path, calib: Path, val: Path, work: Path,
                    args: argparse.Namespace) -> dict:
    """The candidates for the ONNX Runtime placement, side by side (see the module doc)."""
    import subprocess

    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from xception_trt.onnx_meta import read_metadata, write_metadata
    from xception_trt.precision import evaluate_variants, fused_kernel_counts
    from xception_trt.precision.calibdata import select_calibration

    study = work / "study"
    batches = study / "batches"
    batches.mkdir(parents=True, exist_ok=True)
    meta = read_metadata(fp32)
    picked = select_calibration(calib, meta, num_images=args.demo_images, seed=0,
                                static_batch=None)
    if not list(batches.glob("batch_*.npz")):
        picked.write(meta, batch_size=8, static_batch=None, directory=batches)
    files = sorted(batches.glob("batch_*.npz"))

    class Reader:
        def __init__(self) -> None:
            self.it = iter(files)

        def get_next(self):  # noqa: ANN202 - ONNX Runtime's reader protocol
            f = next(self.it, None)
            return None if f is None else {"input": np.load(f)["input"]}

    candidates: dict[str, Path] = {"fp32": fp32}
    for name, act, sym in (("ort-uint8", QuantType.QUInt8, False),
                           ("ort-int8", QuantType.QInt8, False),
                           ("ort-int8-symmetric", QuantType.QInt8, True)):
        out = study / f"{name}.onnx"
        quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=act, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": sym})
        candidates[name] = out
    out = study / "modelopt-output-quant.onnx"
    subprocess.run([sys.executable, "-c", _MODELOPT_STUDY, str(fp32), str(batches), str(out)],
                   check=True)
    candidates["modelopt-output-quant"] = out
    import onnx

    for name, path in candidates.items():  # our metadata, so our runners open them
        if name != "fp32":
            model = onnx.load(str(path))
            write_metadata(model, {**meta.raw, "precision": "int8"})
            onnx.save(model, str(path))
    rows = {r.name: r for r in evaluate_variants(candidates, val, threads=args.threads)}
    result: dict = {"calibration": f"MinMax, {picked.selected} images", "candidates": {}}
    lat = {b: latencies_ms(candidates, b, threads=args.threads, warmup=args.warmup,
                           repeats=args.repeats) for b in args.batch_sizes}
    for name, path in candidates.items():
        counts = fused_kernel_counts(path)
        entry = {"fused": f"{counts.quantized}/{counts.total}",
                 "agreement_pct": round(rows[name].agreement, 2),
                 "latency_ms": {str(b): lat[b][name]["median"] for b in args.batch_sizes}}
        print(f"study {name:<22} fused {entry['fused']:<6} agreement "
              f"{entry['agreement_pct']:6.2f} %  latency {entry['latency_ms']} ms", flush=True)
        result["candidates"][name] = entry
    return result


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
    p.add_argument("--study", action="store_true",
                   help="demo model: also compare the quantizers for the ONNX Runtime placement")
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
            if args.study:
                result["quantizer_study"] = quantizer_study(fp32, calib, val, work, args)
        result["load_average_after"] = load_average()
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
