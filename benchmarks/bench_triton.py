"""Local Triton server vs the direct Runner: throughput and p50/p99 latency under 1, 8 and 32
concurrent clients, with and without dynamic batching (loopback only, bounded request counts).

The server is the tritonserver bundled in nvidia-pytriton running our ONNX Runtime Runner in the
Python backend (CPU). Every client is a thread with its own tritonclient connection sending
batch-1 requests; "direct" calls one shared in-process Runner from the same number of threads.
Latency is per request (perf_counter around the call); throughput is requests / wall time of
the whole level. The mean batch Triton executed comes from its statistics. Both servers run side
by side and the modes are interleaved within each repeat; every cell is the median of
``--repeat`` runs (the numbers drift with background load on a shared machine).

INT8 vs FP32 (issue 18): ``--int8`` also serves the model's INT8 variant placed for ONNX
Runtime (``quantize --placement onnxruntime``; every Conv/Gemm a QLinearConv/QGemm kernel), made
here from the FP32 model with ``--int8-calib DIR`` images (default: synthetic smooth images),
or given with ``--int8-model FILE``; it adds the modes ``int8-direct-runner`` and
``int8-triton-dynamic``. A TensorRT-placed INT8 file given with ``--int8-model`` runs too,
with a note that it is the slow placement for ONNX Runtime.

    python benchmarks/bench_triton.py                        # narrow random-weight Xception
    python benchmarks/bench_triton.py --model model.onnx --requests 512 --json out.json
    python benchmarks/bench_triton.py --model model.onnx --int8 --int8-calib calibration/ \
        --json benchmarks/results/triton_int8.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _run_level(call, clients: int, requests: int, make_input) -> dict:
    """``requests`` calls spread over ``clients`` threads; per-call latencies in ms."""
    per_client = [requests // clients + (1 if i < requests % clients else 0)
                  for i in range(clients)]
    latencies: list[float] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        ctx = call(i)
        x = make_input(i)
        local = []
        with ctx as fn:
            start_gate.wait()
            for _ in range(per_client[i]):
                t = time.perf_counter()
                fn(x)
                local.append((time.perf_counter() - t) * 1e3)
        with lock:
            latencies.extend(local)

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(worker, i) for i in range(clients)]
        start_gate.wait()
        t0 = time.perf_counter()
        for f in futures:
            f.result()
        wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(latencies), "wall_s": round(wall, 3),
            "throughput_rps": round(len(latencies) / wall, 1),
            "p50_ms": round(_percentile(latencies, 50), 2),
            "p99_ms": round(_percentile(latencies, 99), 2),
            "mean_ms": round(statistics.fmean(latencies), 2)}


class _TritonCall:
    def __init__(self, url: str, protocol: str, model: str) -> None:
        self.url, self.protocol, self.model = url, protocol, model

    def __enter__(self):
        from xception_trt.serve.client import TritonClient

        self.client = TritonClient(self.url, protocol=self.protocol)
        return lambda x: self.client.infer(self.model, x)

    def __exit__(self, *exc):
        self.client.close()


class _DirectCall:
    def __init__(self, runner) -> None:
        self.runner = runner

    def __enter__(self):
        return self.runner

    def __exit__(self, *exc):
        return None


def _int8_model(args: argparse.Namespace, onnx_path: Path, work: Path) -> Path:
    """The INT8 ONNX to serve: ``--int8-model``, or the variant placed for ONNX Runtime made
    from ``onnx_path`` (``--int8-calib`` images, else synthetic ones)."""
    if args.int8_model:
        return Path(args.int8_model)
    from PIL import Image

    from xception_trt.precision import ort_int8

    calib = Path(args.int8_calib) if args.int8_calib else work / "calib"
    if not args.int8_calib:
        calib.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(args.int8_images):
            small = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
            Image.fromarray(small).resize((256, 256), Image.Resampling.BILINEAR).save(
                calib / f"img_{i:03d}.png")
    res = ort_int8(onnx_path, calib, num_images=args.int8_images, cache_dir=work / "cache",
                   output=work / f"{onnx_path.stem}.int8-ort.onnx")
    return res.path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="ONNX file (default: export a narrow random-weight Xception)")
    parser.add_argument("--width", type=float, default=0.25, help="width of the default model")
    parser.add_argument("--middle-blocks", type=int, default=4)
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=256,
                        help="requests per concurrency level (default: 256)")
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per cell, interleaved across modes; the median is reported")
    parser.add_argument("--threads", type=int, default=2,
                        help="ONNX Runtime intra-op threads, server and direct (default: 2)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--protocol", choices=("http", "grpc"), default="grpc")
    parser.add_argument("--int8", action="store_true",
                        help="also serve the INT8 variant placed for ONNX Runtime (made from "
                             "--model with --int8-calib images unless --int8-model is given)")
    parser.add_argument("--int8-model", default=None,
                        help="the INT8 ONNX to serve with --int8 (default: make it)")
    parser.add_argument("--int8-calib", default=None,
                        help="calibration images for --int8 (default: 32 synthetic images)")
    parser.add_argument("--int8-images", type=int, default=32,
                        help="calibration images used for --int8 (default: 32)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if (args.int8_model or args.int8_calib) and not args.int8:
        parser.error("--int8-model / --int8-calib only apply with --int8")

    from xception_trt.runners import OnnxRuntimeRunner
    from xception_trt.serve.client import TritonClient
    from xception_trt.serve.repository import RepositoryOptions, write_repository
    from xception_trt.serve.server import TritonServer
    from xception_trt.sysinfo import cpu_model, package_version

    work = Path(tempfile.mkdtemp(prefix="bench-triton-"))
    if args.model:
        onnx_path = Path(args.model)
    else:
        import torch

        from xception_trt.config import ModelSpec
        from xception_trt.export import export_onnx
        from xception_trt.model import build_xception

        torch.manual_seed(0)
        spec = ModelSpec(width=args.width, middle_blocks=args.middle_blocks,
                         input_size=args.input_size)
        onnx_path = export_onnx(build_xception(spec=spec).eval(), work / "narrow.onnx",
                                check_parity=False).path
    runner = OnnxRuntimeRunner(onnx_path, threads=args.threads)
    int8_path = _int8_model(args, onnx_path, work) if args.int8 else None
    runner8 = OnnxRuntimeRunner(int8_path, threads=args.threads) if int8_path else None
    shape = tuple(d if d > 0 else 1 for d in runner.input_spec.shape)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(shape).astype(np.float32) for _ in range(64)]
    make_input = lambda i: inputs[i % len(inputs)]  # noqa: E731

    results: dict = {"model": str(onnx_path), "spec": runner.spec.to_dict() | {"labels": None},
                     "protocol": args.protocol, "threads": args.threads,
                     "requests_per_level": args.requests, "max_batch": args.max_batch,
                     "max_queue_delay_us": args.max_queue_delay_us, "cpu": cpu_model(),
                     "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(),
                     "versions": {k: package_version(k) for k in
                                  ("xception-trt", "onnxruntime", "nvidia-pytriton",
                                   "tritonclient")},
                     "int8_model": str(int8_path) if int8_path else None,
                     "rows": []}
    if int8_path is not None:
        from xception_trt.host import cpu_int8_features
        from xception_trt.onnx_meta import read_metadata
        from xception_trt.precision import fused_kernel_counts

        results["int8_placement"] = read_metadata(int8_path).placement.value
        results["int8_fused"] = fused_kernel_counts(int8_path).to_dict()["fused"]
        results["cpu_int8"] = cpu_int8_features()
        if runner8 is not None and runner8.note:
            print(runner8.note, file=sys.stderr)

    def record(mode: str, row: dict) -> None:
        row = {"mode": mode, **row}
        results["rows"].append(row)
        print(f"{mode:<18} clients {row['clients']:>3}  {row['throughput_rps']:>8.1f} req/s  "
              f"p50 {row['p50_ms']:>8.2f} ms  p99 {row['p99_ms']:>8.2f} ms"
              + (f"  mean batch {row['mean_batch']:.2f}" if "mean_batch" in row else ""),
              flush=True)

    # Both servers run side by side and the modes are interleaved per level and repeat, so a
    # change in background load hits every mode alike; each cell is the median over repeats.
    servers = {}
    plans = [("triton-dynamic", onnx_path, True), ("triton-no-batching", onnx_path, False)]
    if int8_path is not None:
        plans.append(("int8-triton-dynamic", int8_path, True))
    for mode, served, batching in plans:
        repo = work / mode
        write_repository(served, repo, options=RepositoryOptions(
            triton_backend="python", dynamic_batching=batching, max_batch_size=args.max_batch,
            max_queue_delay_us=args.max_queue_delay_us if batching else 100,
            runner_options={"threads": args.threads}, execution_env_path=sys.prefix))
        servers[mode] = TritonServer(repo, http_port=None, grpc_port=None, metrics_port=None)
    try:
        for server in servers.values():
            server.start()
        calls = {"direct-runner": lambda i: _DirectCall(runner)}
        if runner8 is not None:
            calls["int8-direct-runner"] = lambda i: _DirectCall(runner8)
        for mode, server in servers.items():
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            calls[mode] = (lambda u: lambda i: _TritonCall(u, args.protocol, "xception"))(url)
        for call in calls.values():
            _run_level(call, 1, args.warmup, make_input)
        for clients in args.clients:
            runs: dict[str, list[dict]] = {mode: [] for mode in calls}
            for _ in range(args.repeat):
                for mode, call in calls.items():
                    server = servers.get(mode)
                    if server is None:
                        runs[mode].append(_run_level(call, clients, args.requests, make_input))
                        continue
                    with TritonClient(server.http_url) as stats_client:
                        before = stats_client.statistics("xception")
                        row = _run_level(call, clients, args.requests, make_input)
                        after = stats_client.statistics("xception")
                    inf = after.inference_count - before.inference_count
                    exe = after.execution_count - before.execution_count
                    runs[mode].append({**row, "executions": exe,
                                       "mean_batch": round(inf / exe, 2)})
            for mode, rows in runs.items():
                cell = {key: (round(statistics.median(r[key] for r in rows), 2)
                              if key != "clients" else clients) for key in rows[0]}
                cell["repeats"] = len(rows)
                record(mode, cell)
    finally:
        for server in servers.values():
            server.stop()
    runner.close()
    if runner8 is not None:
        runner8.close()
    results["loadavg_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"load average start {results['loadavg_start']}, end {results['loadavg_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
