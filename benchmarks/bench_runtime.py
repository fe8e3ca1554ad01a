"""Runtime numbers for issue 6.

GPU part (skipped with the reason where there is no NVIDIA GPU / cuda-python / NVRTC):
  * host overhead per call of the runtime path (``CudaRunnerBase``, shared by TensorRTRunner)
    with the NVRTC STAND-IN kernel as the "engine", batch 1, 1x3x299x299 float32 -> 1x1000,
    without and with CUDA graphs, per installed CUDA backend. Measured with ``perf_counter``
    around ``infer_async`` (the time the calling thread spends before the GPU work is queued):
      - ``device input``: a device array (zero copy) -- pure runtime-path overhead;
      - ``pinned input``: NumPy data already in ``runner.input_buffer(1)`` (no staging copy);
      - ``numpy input``: an ordinary NumPy array (adds the 1.02 MiB copy into pinned memory);
    plus the end-to-end synchronous ``infer`` time for a NumPy input.
    Goal (issue 6): <= 30 us without, <= 15 us with CUDA graphs at batch 1.
  * pinned vs pageable host-to-device bandwidth for one 1x3x299x299 float32 input (CUDA events).

CPU part: ONNX Runtime (CPUExecutionProvider) latency of the full 299x299 Xception at batch 1 for
the FP32, FP16 (ModelOpt AutoCast) and INT8 (ModelOpt Q/DQ) variants, with power and energy per
image where the machine exposes them (``xception_trt.power``: Jetson rails or NVML; otherwise
the reason), and the run context (power mode, clocks, governor, load) in the JSON. Weights are
random (latency does not depend on their values); INT8 is calibrated on random images for the
same reason.

Usage:
    python benchmarks/bench_runtime.py [--calls 5000] [--ort-iters 30] [--json out.json]
                                       [--workdir DIR] [--skip-gpu] [--skip-ort]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xception_trt.selftest import latency_stats, missing_requirements

GOALS_US = {False: 30.0, True: 15.0}


def _fmt(stats: dict) -> str:
    return f"median {stats['median_us']:8.1f} us   p99 {stats['p99_us']:8.1f} us"


def bench_host_overhead(backend: str, graphs: bool, calls: int, warmup: int) -> dict:
    """Per-call host time of the runtime path with the stand-in kernel at batch 1."""
    from xception_trt.selftest import StandInRunner
    from xception_trt.trt.cuda import DeviceArray

    x = np.random.default_rng(0).standard_normal((1, 3, 299, 299)).astype(np.float32)
    out: dict = {"backend": backend, "cuda_graphs": graphs}
    with StandInRunner(max_batch=1, cuda_binding=backend, cuda_graphs=graphs) as r:
        cuda = r._cuda
        din = cuda.alloc(x.nbytes)
        with cuda.stream() as s:
            staged = cuda.pinned(x.shape, x.dtype)
            staged.array[...] = x
            din.copy_from_host(staged.array, s)
            s.synchronize()
            staged.close()
        dev_x = DeviceArray(din, x.shape, x.dtype)
        pinned_x = r.input_buffer(1)
        pinned_x[...] = x

        def measure(arg) -> dict:
            for _ in range(warmup):
                r.infer(arg)
            enq, total = [], []
            for _ in range(calls):
                t0 = time.perf_counter()
                h = r.infer_async(arg)
                t1 = time.perf_counter()
                h.wait()
                t2 = time.perf_counter()
                enq.append(t1 - t0)
                total.append(t2 - t0)
            return {"enqueue": latency_stats(enq), "end_to_end": latency_stats(total)}

        out["device_input"] = measure(dev_x)
        out["pinned_input"] = measure(pinned_x)
        out["numpy_input"] = measure(x)
        np.testing.assert_array_equal(r.infer(x), r.reference(x))  # the path did the work
        din.close()
    return out


def bench_h2d(backend: str, reps: int = 200) -> dict:
    """Pinned vs pageable H2D copy of one 1x3x299x299 float32 input, timed with CUDA events."""
    from xception_trt.trt.cuda import CudaDevice

    x = np.random.default_rng(1).standard_normal((1, 3, 299, 299)).astype(np.float32)
    res: dict = {"bytes": int(x.nbytes)}
    with CudaDevice(0, backend) as cuda:
        with cuda.stream() as s, cuda.alloc(x.nbytes) as d, cuda.pinned(x.shape, x.dtype) as p, \
                cuda.event(timing=True) as e0, cuda.event(timing=True) as e1:
            p.array[...] = x
            for name, src in (("pinned", p.array), ("pageable", x)):
                gpu_ms, wall = [], []
                for _ in range(20):
                    d.copy_from_host(src, s)
                s.synchronize()
                for _ in range(reps):
                    t0 = time.perf_counter()
                    e0.record(s)
                    d.copy_from_host(src, s)
                    e1.record(s)
                    e1.synchronize()
                    wall.append(time.perf_counter() - t0)
                    gpu_ms.append(e0.elapsed_ms(e1))
                med_ms = float(np.median(gpu_ms))
                res[name] = {"event_median_us": med_ms * 1e3,
                             "GB_per_s": x.nbytes / (med_ms * 1e-3) / 1e9,
                             "wall": latency_stats(wall)}
    return res


def gpu_part(args: argparse.Namespace) -> dict:
    req = missing_requirements()
    if req.missing_cuda:
        reason = "; ".join(req.missing_cuda)
        print(f"GPU part SKIPPED: {reason}")
        return {"skipped": reason}
    out: dict = {"gpus": list(req.gpus), "host_overhead": [], "h2d": {}}
    print(f"GPU: {', '.join(req.gpus)}; CUDA backends: {', '.join(req.cuda_backends)}")
    if "pycuda" not in req.cuda_backends:
        print("note: pycuda not installed: the pycuda backend is not measured")
    print("\nHost overhead per call, batch 1, STAND-IN kernel (not a model), "
          f"{args.calls} calls each")
    from xception_trt.errors import EngineError

    for backend in req.cuda_backends:
        for graphs in (False, True):
            try:
                r = bench_host_overhead(backend, graphs, args.calls, args.warmup)
            except EngineError as exc:  # pycuda has no CUDA graph API: refused at open
                out["host_overhead"].append({"backend": backend, "cuda_graphs": graphs,
                                             "skipped": str(exc)})
                print(f"  {backend:<11} graphs={'on ' if graphs else 'off'} SKIPPED: {exc}")
                continue
            out["host_overhead"].append(r)
            goal = GOALS_US[graphs]
            print(f"  {backend:<11} graphs={'on ' if graphs else 'off'} (goal <= {goal:.0f} us)")
            for key in ("device_input", "pinned_input", "numpy_input"):
                print(f"    {key:<13} enqueue     {_fmt(r[key]['enqueue'])}")
            print(f"    {'numpy_input':<13} end-to-end  {_fmt(r['numpy_input']['end_to_end'])}")
    print("\nHost-to-device copy of 1x3x299x299 float32 (1.02 MiB), CUDA events")
    for backend in req.cuda_backends:
        r = bench_h2d(backend)
        out["h2d"][backend] = r
        for kind in ("pinned", "pageable"):
            k = r[kind]
            print(f"  {backend:<11} {kind:<8} {k['event_median_us']:8.1f} us  "
                  f"{k['GB_per_s']:6.2f} GB/s   (host wall {_fmt(k['wall'])})")
    return out


def _variants(workdir: Path, calib_images: int) -> dict[str, Path]:
    import torch

    from xception_trt.config import ModelSpec
    from xception_trt.export import export_onnx
    from xception_trt.model import build_xception

    paths = {p: workdir / f"xception_{p}.onnx" for p in ("fp32", "fp16", "int8")}
    spec = ModelSpec(source="random")
    if not paths["fp32"].exists():
        torch.manual_seed(0)
        model = build_xception(spec=spec).eval()
        t0 = time.perf_counter()
        export_onnx(model, paths["fp32"], batch="dynamic", check_parity=False)
        print(f"  exported FP32 ONNX in {time.perf_counter() - t0:.1f} s")
    try:
        from xception_trt import precision
    except ImportError as exc:
        print(f"  xception_trt.precision unavailable ({exc}): FP32 only")
        return {"fp32": paths["fp32"]}
    if not paths["fp16"].exists():
        t0 = time.perf_counter()
        precision.to_fp16(paths["fp32"], output=paths["fp16"])
        print(f"  made FP16 (AutoCast) in {time.perf_counter() - t0:.1f} s")
    if not paths["int8"].exists():
        rng = np.random.default_rng(0)
        data = rng.standard_normal((calib_images, 3, 299, 299)).astype(np.float32).clip(-1, 1)
        t0 = time.perf_counter()
        precision.quantize_int8(paths["fp32"], data, num_images=calib_images, cache_dir=None,
                                output=paths["int8"])
        print(f"  made INT8 Q/DQ (ModelOpt, {calib_images} random images) in "
              f"{time.perf_counter() - t0:.1f} s")
    return paths


def ort_part(args: argparse.Namespace) -> dict:
    import onnxruntime as ort

    from xception_trt.power import open_monitor
    from xception_trt.runners import OnnxRuntimeRunner

    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-runtime-")
        workdir = Path(tmp.name)
    print(f"\nONNX Runtime {ort.__version__} CPU latency, full Xception 299x299, batch 1 "
          f"({args.ort_iters} calls after {args.ort_warmup} warm-up)")
    print(f"  CPU: {_cpu()}, {os.cpu_count()} logical cores, load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    out: dict = {"onnxruntime": ort.__version__, "cpu": _cpu(), "cores": os.cpu_count(),
                 "results": {}}
    monitor = open_monitor()
    out["power"] = monitor.describe()
    if not monitor.available:
        print(f"  {monitor.reason}")
    try:
        paths = _variants(workdir, args.calib_images)
        x = np.random.default_rng(2).standard_normal((1, 3, 299, 299)).astype(np.float32)
        ref = None
        for name, path in paths.items():
            with OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"],
                                   threads=args.threads) as r:
                for _ in range(args.ort_warmup):
                    y = r(x)
                times = []
                window = monitor.start()
                for _ in range(args.ort_iters):
                    t0 = time.perf_counter()
                    y = r(x)
                    times.append(time.perf_counter() - t0)
                power = window.stop().to_dict(images=args.ort_iters)
            ref = y if ref is None else ref
            stats = latency_stats(times)
            stats = {k: (v / 1000 if k.endswith("_us") else v) for k, v in stats.items()}
            diff = float(np.abs(y - ref).max())
            out["results"][name] = {"median_ms": stats["median_us"], "p99_ms": stats["p99_us"],
                                    "mean_ms": stats["mean_us"], "n": stats["n"],
                                    "max_abs_logit_diff_vs_fp32": diff,
                                    "size_mib": path.stat().st_size / 2**20, "power": power}
            print(f"  {name:<5} median {stats['median_us']:7.1f} ms   p99 {stats['p99_us']:7.1f} "
                  f"ms   mean {stats['mean_us']:7.1f} ms   ({path.stat().st_size / 2**20:.0f} MiB,"
                  f" max |logit diff| vs FP32 {diff:.3g})")
            if power["available"]:
                print(f"        {power['total_w']:.2f} W, {power['energy_per_image_mj']} mJ/image"
                      f" ({power['samples']} samples, {power['total_basis']})")
    finally:
        monitor.close()
        if tmp is not None:
            tmp.cleanup()
    return out


def _cpu() -> str:
    from xception_trt.sysinfo import cpu_model

    return cpu_model()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=5000, help="timed calls per GPU configuration")
    p.add_argument("--warmup", type=int, default=200, help="warm-up calls per GPU configuration")
    p.add_argument("--ort-iters", type=int, default=30, help="timed ONNX Runtime calls")
    p.add_argument("--ort-warmup", type=int, default=5, help="ONNX Runtime warm-up calls")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--calib-images", type=int, default=16, help="INT8 calibration images")
    p.add_argument("--workdir", help="keep/reuse the ONNX variants here (default: temporary)")
    p.add_argument("--skip-gpu", action="store_true")
    p.add_argument("--skip-ort", action="store_true")
    p.add_argument("--json", help="write all numbers to this JSON file")
    args = p.parse_args(argv)
    from xception_trt.power import run_context

    report: dict = {"python": sys.version.split()[0], "platform": platform.platform(),
                    "context": run_context()}
    if not args.skip_gpu:
        report["gpu"] = gpu_part(args)
    if not args.skip_ort:
        report["onnxruntime_cpu"] = ort_part(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
