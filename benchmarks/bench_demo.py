"""Measure ``xception-trt demo``: wall time of a first run (fresh work folder) and a second run
(caches reused), plus the FP32 / FP16 / INT8 validation accuracy of the demo model.

Each run is the real command in a child process (``python -m xception_trt demo --json``), timed
with a monotonic clock; the CPU time of the child (user + sys, from ``getrusage``) and the
1/5/15-minute load averages before and after are recorded too, because on a shared machine wall
time depends on what else runs (on this shared machine, other jobs busy on the two cores made
the first run 5-8x slower: torch's two OpenMP threads stall when one core is taken). Quote a
figure only with its load average; measure on a quiet machine (load average well under 1).

What a second run redoes: data, training, export, FP16, INT8 calibration and engines are reused
from the work folder ("cached" steps); evaluation (every runner on the validation images),
latency and the report run again, and every run starts a new Python process that imports
torch, ONNX Runtime and ModelOpt.

With ``--install`` it first times the README's first-screen install (``INSTALL_STEPS``, the
same commands the README shows; a test keeps them equal) in a scratch copy of this checkout
(``pyproject.toml``, ``README.md``, ``xception_trt/``) under the temp folder, as a fresh clone
would run it, with pip's cache off (a first install) and this machine's pip configuration (here
the CPU torch comes from the local find-links folder after pip gives up on the unreachable CPU
index, and most packages from local mirrors: a user's download speed adds to these times). The
demo runs then use that venv's ``xception-trt``; the scratch copy is deleted afterwards.

Usage::

    python benchmarks/bench_demo.py --install             # install + 2 runs, as a newcomer
    python benchmarks/bench_demo.py                       # fresh temp work folder, 2 runs
    python benchmarks/bench_demo.py --workdir /tmp/demo-bench --out benchmarks/results/demo.json

Writes ``--out`` (default ``benchmarks/results/demo.json``: per run wall/CPU time, load averages,
per-step status and seconds; machine facts from ``xception_trt.sysinfo``) and copies the first
run's report (every step ran) to ``--report-dir`` (default ``benchmarks/reports/demo``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xception_trt.fsio import atomic_write_json
from xception_trt.host import load_average
from xception_trt.sysinfo import system_facts

#: The README's first-screen command, one step per entry (the README joins them with ``&&``):
#: a venv, the CPU build of torch (so pip keeps it and pulls no CUDA wheel), the demo extra.
INSTALL_STEPS = (
    "python3 -m venv .venv",
    ". .venv/bin/activate",
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu",
    "pip install -e '.[demo]'",
)
DEMO_STEP = "xception-trt demo"
ROOT = Path(__file__).resolve().parents[1]


def first_screen_command() -> str:
    """The README's first-screen line."""
    return " && ".join((*INSTALL_STEPS, DEMO_STEP))


def install(dest: Path) -> dict:
    """Copy this checkout to ``dest`` and run ``INSTALL_STEPS`` there, each timed; returns
    the timings, load averages and the venv's ``xception-trt``."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "xception_trt", dest / "xception_trt",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}}
    env["PIP_NO_CACHE_DIR"] = "1"  # a first install: nothing cached from an earlier one
    steps = []
    load_before = load_average()
    t_all = time.perf_counter()
    for step in INSTALL_STEPS:
        if step.startswith(". "):  # activation: the steps below name the venv's programs
            continue
        argv = shlex.split(step)
        if argv[0] == "pip":
            argv = [str(dest / ".venv" / "bin" / "python"), "-m", "pip", *argv[1:]]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=dest, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"install step failed ({proc.returncode}): {step}")
        steps.append({"step": step, "wall_s": round(time.perf_counter() - t0, 1)})
        print(f"install: {step}: {steps[-1]['wall_s']:.1f} s", flush=True)
    return {"steps": steps, "wall_s": round(time.perf_counter() - t_all, 1),
            "load_average_before": load_before, "load_average_after": load_average(),
            "pip_cache": "off (PIP_NO_CACHE_DIR=1)",
            "executable": str(dest / ".venv" / "bin" / "xception-trt")}


def _child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_once(workdir: Path, extra: list[str], program: list[str] | None = None) -> dict:
    """Run the demo once (``program``: the command that is ``xception-trt``, default this
    interpreter's); return its timing and JSON summary."""
    program = program or [sys.executable, "-m", "xception_trt"]
    cmd = [*program, "demo", "--workdir", str(workdir), "--json", *extra]
    load_before = load_average()
    cpu0 = _child_cpu()
    t0 = time.perf_counter()
    env = None
    if program is not None:  # the scratch venv's program runs its own copy of the package
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    cpu = _child_cpu() - cpu0
    load_after = load_average()
    if proc.returncode not in (0, 1):
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"demo exited with {proc.returncode}")
    summary = json.loads(proc.stdout)
    return {"command": " ".join(cmd), "exit_code": proc.returncode, "wall_s": round(wall, 1),
            "child_cpu_s": round(cpu, 1), "load_average_before": load_before,
            "load_average_after": load_after, "demo_seconds": summary["seconds"],
            "ok": summary["ok"], "accuracy_top1_percent": summary["accuracy_top1_percent"],
            "steps": [{k: s[k] for k in ("name", "status", "seconds", "detail")}
                      for s in summary["steps"]], "report": summary["report"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=None,
                   help="demo work folder (default: a new temporary folder); emptied first")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/demo.json"),
                   help="the results file (default: benchmarks/results/demo.json)")
    p.add_argument("--report-dir", type=Path, default=Path("benchmarks/reports/demo"),
                   help="where the first run's demo report is copied (default: "
                        "benchmarks/reports/demo)")
    p.add_argument("--runs", type=int, default=2, help="runs in the same work folder (default 2)")
    p.add_argument("--install", action="store_true",
                   help="first time the README's install in a scratch copy of this checkout "
                        "and run the demo from that venv")
    p.add_argument("demo_args", nargs="*", help="extra arguments for `xception-trt demo` "
                                                "(after --)")
    args = p.parse_args(argv)
    own_tmp = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="xtrt-demo-bench-")) if own_tmp else args.workdir
    if work.exists():
        shutil.rmtree(work)
    runs = []
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    scratch = Path(tempfile.mkdtemp(prefix="xtrt-demo-install-")) if args.install else None
    installed = None
    try:
        if scratch is not None:
            installed = install(scratch / "xception-trt")
        program = [installed["executable"]] if installed else None
        for i in range(args.runs):
            res = run_once(work, list(args.demo_args), program)
            runs.append(res)
            if i == 0 and res["report"]:
                # the first run's report: every step ran (later runs show the caches at work)
                dest = args.report_dir
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():
                    shutil.rmtree(dest)
                shutil.copytree(res["report"], dest)
            print(f"run {i + 1}: wall {res['wall_s']:.1f} s, child CPU {res['child_cpu_s']:.1f} s, "
                  f"load average {res['load_average_before']} -> "
                  f"{res['load_average_after']}, "
                  + ", ".join(f"{s['name']} {s['status']} {s['seconds']:.1f}s"
                              for s in res["steps"]), flush=True)
        last = runs[-1]
        acc = last["accuracy_top1_percent"]
        fp32 = acc.get("onnxruntime-fp32")
        int8 = acc.get("onnxruntime-int8")
        doc = {"started_utc": started,
               "command": shlex.join([sys.executable, *sys.argv]),
               "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
               "python": platform.python_version(), "system": system_facts(),
               "install": installed, "first_screen": first_screen_command(),
               "runs": runs, "accuracy_top1_percent": acc,
               "int8_drop_points": None if fp32 is None or int8 is None
               else round(fp32 - int8, 2)}
        atomic_write_json(args.out, doc)
        print("validation top-1: " + ", ".join(f"{k} {v:.2f}%" for k, v in acc.items()))
        print(f"INT8 drop vs FP32 (ONNX Runtime): {doc['int8_drop_points']} points")
        print(f"wrote {args.out}")
    finally:
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
