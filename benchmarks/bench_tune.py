"""Measure ``xception-trt tune`` (issue 30): the wall time of a tune of the demo bundle, and on
the full-size model (random weights) the choice under ``--objective latency`` against ``bench``
run separately on the chosen candidate.

1. **demo**: the demo's bundle (``digits.xtrt`` in ``--demo-workdir``, made with the bundle
   command the demo prints when it is not there: FP32, FP16, INT8 with the graph placed for ONNX
   Runtime, TensorRT-RTX SM86 engines), tuned with ``--max-top1-drop 0.5`` on the demo's
   validation images: the command in a child process, wall and CPU time (``getrusage``), the
   load averages before and after, and what the report says (candidates, timed, cut early,
   chosen).
2. **full**: the 299x299 Xception with **random weights** (no ImageNet weights are fetched:
   latency does not depend on the weights' values, accuracy does), bundled with FP32, FP16 and
   INT8 (+ the ONNX Runtime placement) calibrated on ``--full-images`` synthetic images, tuned
   with ``--objective latency`` on a synthetic labelled folder. Random weights make top-1
   meaningless (every variant is near 0 %), so the floor is ``--max-top1-drop 99``: the point
   here is the latency ranking, not the accuracy gate (the tests cover that). Then ``bench``
   runs the chosen candidate's graph separately (same threads, batch 1, 50 calls, 5 warm-up)
   and the two medians are compared.

Each step is the real command in a child process with ``XDG_CACHE_HOME`` inside the work folder
(so the engine cache and the recorded choice stay there). On a shared machine wall time depends
on what else runs: the load averages are recorded with every figure; quote none without them.

    python benchmarks/bench_tune.py --demo-workdir /tmp/demo --work /tmp/tune-bench \\
        --out benchmarks/results/tune.json
    python benchmarks/bench_tune.py --demo-workdir /tmp/demo --models demo   # quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from xception_trt.fsio import atomic_write_json  # noqa: E402
from xception_trt.host import load_average  # noqa: E402
from xception_trt.sysinfo import system_facts  # noqa: E402


def _run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> dict:
    """Run the CLI in a child process: exit code, wall and CPU seconds, loads, output tail."""
    before = load_average()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "xception_trt", *argv], env=env, cwd=cwd,
                          capture_output=True, text=True)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = {"command": "xception-trt " + " ".join(shlex.quote(a) for a in argv),
           "exit_code": proc.returncode, "wall_s": round(wall, 2),
           "child_cpu_s": round((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), 2),
           "load_average_before": before, "load_average_after": load_average(),
           "stdout_tail": proc.stdout.strip().splitlines()[-6:],
           "stderr_tail": proc.stderr.strip().splitlines()[-6:]}
    print(f"  {out['command']}: exit {proc.returncode}, {wall:.1f} s (load {before} -> "
          f"{out['load_average_after']})", flush=True)
    if proc.returncode not in (0, 1):
        print(proc.stderr, file=sys.stderr)
    return out


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(work / "cache")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _summary(report: Path) -> dict:
    doc = json.loads((report / "report.json").read_text())
    timed = [r for r in doc["candidates"] if r["repetitions"]]
    keys = ("name", "status", "repetitions", "median_ms", "p99_ms", "images_per_s",
            "cost_interval", "top1_drop_pp", "agreement", "graph", "threads", "batch")
    return {"candidates": len(doc["candidates"]), "timed": len(timed),
            "cut_early": sum(r["cut_early"] for r in timed),
            "below_floor": sum(r["status"] == "below accuracy floor"
                               for r in doc["candidates"]),
            "not_runnable": len(doc["not_runnable"]), "tune_seconds": doc["seconds"],
            "load_average_before": (doc.get("context") or {}).get("load_average"),
            "load_average_after": doc["load_average_after"],
            "chosen": {k: (doc["chosen"] or {}).get(k) for k in keys} if doc["chosen"] else None,
            "rows": [{k: r.get(k) for k in keys} for r in doc["candidates"]]}


def demo(workdir: Path, work: Path) -> dict:
    bundle = workdir / "digits.xtrt"
    env = _env(work)
    out: dict = {}
    if not bundle.is_file():
        onnx = sorted(workdir.glob("artifacts/*/fp32.onnx"), key=lambda p: p.stat().st_mtime)
        if not onnx:
            raise SystemExit(f"no demo in {workdir}: run `xception-trt demo --workdir {workdir}`"
                             " first")
        out["bundle"] = _run(["bundle", str(onnx[-1]), "--precision", "int8", "fp16", "--calib",
                              str(workdir / "data" / "calibration"), "--cc", "sm86", "-o",
                              str(bundle), "--force"], env)
    report = work / "demo-tune"
    out["tune"] = _run(["tune", str(bundle), "--val", str(workdir / "data" / "validation"),
                        "--max-top1-drop", "0.5", "-o", str(report), "--force",
                        "--no-progress"], env)
    out["report"] = _summary(report)
    return out


def _labelled_synthetic(folder: Path, classes: int, per_class: int) -> Path:
    from bench_build import _synthetic_images

    for c in range(classes):
        if not (folder / f"c{c}").is_dir():
            _synthetic_images(folder / f"c{c}", per_class)
    return folder


def full(work: Path, images: int, val_images: int) -> dict:
    from bench_ort_int8 import full_model

    env = _env(work)
    out: dict = {"weights": "random (latency ranking only; top-1 is meaningless)"}
    fp32, calib, _ = full_model(work, images)
    bundle = work / "full" / "xception299.xtrt"
    if not bundle.is_file():
        out["bundle"] = _run(["bundle", str(fp32), "--precision", "int8", "fp16", "--calib",
                              str(calib), "-o", str(bundle), "--force"], env)
    val = _labelled_synthetic(work / "full" / "val", 4, max(1, val_images // 4))
    report = work / "full-tune"
    out["tune"] = _run(["tune", str(bundle), "--val", str(val), "--objective", "latency",
                        "--max-top1-drop", "99", "-o", str(report), "--force",
                        "--no-progress"], env)
    summary = out["report"] = _summary(report)
    chosen = summary["chosen"]
    if chosen is None:
        return out
    int8 = [r for r in summary["rows"] if r["graph"] == "onnx/int8-ort.onnx"
            and r["status"] in ("measured", "cut early") and r["median_ms"]]
    fastest = min(int8, key=lambda r: r["median_ms"]) if int8 else None
    out["chosen_is_ort_int8"] = chosen["graph"] == "onnx/int8-ort.onnx"
    out["chosen_threads_measured_fastest"] = (fastest is not None
                                              and fastest["threads"] == chosen["threads"])
    # bench, separately, on the chosen candidate's graph (copied out of the bundle verified)
    from xception_trt.bundle.cache import bundle_graph

    graph = bundle_graph(bundle, chosen["graph"],
                         cache_dir=work / "cache" / "xception-trt" / "bundles")
    bench_dir = work / "full-bench"
    argv = ["bench", str(graph), "--batch", str(chosen["batch"]), "--iterations", "50",
            "--warmup", "5", "--no-power", "-o", str(bench_dir), "--force", "--no-progress"]
    if chosen["threads"] is not None:
        argv += ["--threads", str(chosen["threads"])]
    out["bench"] = _run(argv, env)
    doc = json.loads((bench_dir / "report.json").read_text())
    lat = doc["runners"][0]["latency"][0]["end_to_end"]
    ratio = chosen["median_ms"] / lat["median_ms"]
    out["comparison"] = {
        "tune_median_ms": chosen["median_ms"], "tune_median_interval": chosen["cost_interval"],
        "tune_calls": chosen["repetitions"], "bench_median_ms": lat["median_ms"],
        "bench_p90_ms": lat["p90_ms"], "bench_calls": lat["count"],
        "ratio_tune_over_bench": round(ratio, 3),
        "within_10_percent": abs(ratio - 1.0) <= 0.10}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo-workdir", type=Path, required=True,
                   help="a folder where `xception-trt demo` ran")
    p.add_argument("--work", type=Path, default=Path("/tmp/xtrt-tune-bench"),
                   help="work folder (models, reports, engine cache)")
    p.add_argument("--models", nargs="+", choices=("demo", "full"), default=["demo", "full"])
    p.add_argument("--full-images", type=int, default=16,
                   help="calibration images of the full model's INT8 (default 16)")
    p.add_argument("--val-images", type=int, default=16,
                   help="validation images of the full model's tune (default 16)")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results: dict = {"started_utc": started, "system": system_facts(),
                     "cpu_count": os.cpu_count()}
    if "demo" in args.models:
        print("demo bundle:", flush=True)
        results["demo"] = demo(args.demo_workdir, args.work)
    if "full" in args.models:
        print("full-size model (random weights):", flush=True)
        results["full"] = full(args.work, args.full_images, args.val_images)
    text = json.dumps(results, indent=2, default=str)
    if args.out:
        atomic_write_json(args.out, results)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
