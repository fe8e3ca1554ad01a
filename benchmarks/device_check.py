"""Everything a bare GPU machine can prove about this SDK, in one command, in under 8 minutes.

The GPU machine that is sometimes lent (docs/contributing.md, "The machines we build on") is an
H100/H200 (sm_90) with a CUDA 13 driver, Python 3.12, torch, cuda-python, cupy, numpy, onnx,
onnxruntime and pytest, and no TensorRT of any flavour and no network. What it can prove is our
CUDA layer and the generic CUDA runner (the NVRTC stand-in kernel) with both CUDA bindings. This
script runs, each stage in a child process with its own time limit:

1. every ``gpu``-marked test (``pytest -m gpu`` on the test files that have such tests; those
   also marked ``trt`` skip without TensorRT, and say so);
2. the self-test's CUDA checks (``xception_trt.selftest.run_cuda_checks``) for ``cuda-python``
   and ``pycuda``, each in its own process (a sticky CUDA error cannot leak into the next);
3. ``benchmarks/bench_runtime.py --skip-ort``: host overhead per call at batch 1 with the
   stand-in kernel, without and with CUDA graphs, for every binding that imports;

and writes one ``device-check.json`` and ``device-check.md`` (the machine, the load before and
after, each stage's outcome and time, the tests' counts, every self-test check, the host
overhead table). pycuda is taken from the wheel ``benchmarks/device_prep.py`` built into
``.device/wheels`` (unpacked into a temporary folder put on ``PYTHONPATH``) when it does not
import already.

Without a GPU it writes the same two files saying why nothing ran and exits 0 (a skip, not a
failure). Exit code 1 when a stage failed or ran out of time.

Usage (on the device, from the repository root; the exact command is in docs/verification.md,
"On a bare GPU machine")::

    python3 benchmarks/device_check.py [--out DIR]

Output: ``DIR`` (default ``$OUT`` when set, else ``benchmarks/reports/device-check-<time>``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Per-stage limits in seconds (the self-test runs once per binding, the probes twice):
#: :func:`worst_case_seconds` stays under the 8 minutes a device call allows.
LIMITS = {"probe": 30, "tests": 180, "selftest": 45, "bench": 100}
BUDGET_S = 8 * 60


def worst_case_seconds() -> int:
    """The longest this script can run: every stage at its limit."""
    return 2 * LIMITS["probe"] + LIMITS["tests"] + 2 * LIMITS["selftest"] + LIMITS["bench"]
BENCH_CALLS, BENCH_WARMUP = 3000, 200

_SELFTEST = """
import json, sys
from xception_trt.selftest import run_cuda_checks
results = run_cuda_checks(sys.argv[1], calls=2000)
print("XTRT-JSON " + json.dumps([r.to_dict() if hasattr(r, "to_dict") else vars(r)
                                 for r in results], default=str))
"""


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _stage(cmd: list[str], env: dict[str, str], limit: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=limit)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
        timed_out = False
    except subprocess.TimeoutExpired as exc:
        rc, timed_out = None, True
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else \
            (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else \
            (exc.stderr or "")
    return {"cmd": " ".join(cmd[1:]), "rc": rc, "timed_out": timed_out,
            "seconds": round(time.perf_counter() - t0, 1), "stdout": out, "stderr": err}


def _gpu_facts(env: dict[str, str]) -> dict[str, Any]:
    """The driver probe of xception_trt (cuda-python, nvidia-smi or the Jetson device tree),
    in a child process so that this process never touches the driver."""
    code = ("import json; from xception_trt.trt.devices import query_devices; "
            "print(json.dumps(query_devices().to_dict()))")
    r = _stage([sys.executable, "-c", code], env, LIMITS["probe"])
    try:
        return json.loads(r["stdout"].strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"gpus": [], "reason": f"device probe failed: {r['stderr'][-500:]}"}


def _pycuda_path(env: dict[str, str], work: Path) -> tuple[str | None, str]:
    """A folder to put on PYTHONPATH so that pycuda imports (``None`` when it already does),
    and what was done."""
    probe = _stage([sys.executable, "-c", "import pycuda, sys; print(pycuda.VERSION_TEXT)"],
                   env, LIMITS["probe"])
    if probe["rc"] == 0:
        return None, f"pycuda {probe['stdout'].strip()} installed"
    wheels = sorted((ROOT / ".device" / "wheels").glob(
        f"pycuda-*-cp{sys.version_info[0]}{sys.version_info[1]}-*.whl"))
    if not wheels:
        return None, ("pycuda not installed and no wheel for this Python in .device/wheels "
                      "(run benchmarks/device_prep.py on the build machine and carry .device)")
    site = work / "site"
    with zipfile.ZipFile(wheels[-1]) as zf:
        zf.extractall(site)
    return str(site), f"pycuda from {wheels[-1].name}"


def _test_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if re.search(r"@pytest\.mark\.gpu\b", p.read_text(encoding="utf-8")))


def _junit(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    cases = []
    for case in suite.iter("testcase"):
        status = "passed"
        detail = ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                detail = (node.get("message") or "")[:300]
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}",
                      "status": status, "detail": detail})
    counts = {s: sum(c["status"] == s for c in cases)
              for s in ("passed", "failed", "error", "skipped")}
    return {"counts": counts, "cases": cases}


def run(out: Path, *, force: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONDONTWRITEBYTECODE": "1"}
    report: dict[str, Any] = {
        "script": "benchmarks/device_check.py", "python": sys.version.split()[0],
        "platform": platform.platform(), "load_before": _load(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    devices = _gpu_facts(env)
    report["devices"] = devices
    if not devices.get("gpus") and not force:
        report["status"] = "skipped"
        report["reason"] = f"no NVIDIA GPU: {devices.get('reason') or 'none found'}"
        return report
    with tempfile.TemporaryDirectory(prefix="device-check-") as tmp:
        site, how = _pycuda_path(env, Path(tmp))
        report["pycuda"] = how
        if site:
            env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], site])
        stages: dict[str, Any] = {}
        # 1. gpu-marked tests
        files = _test_files()
        junit = out / "gpu-tests.xml"
        r = _stage([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs",
                    "-p", "no:cacheprovider", f"--junitxml={junit}", *files], env,
                   LIMITS["tests"])
        stages["gpu_tests"] = {**r, "files": files, **_junit(junit)}
        # 2. the self-test's CUDA checks, per binding, each in its own process
        stages["selftest"] = {}
        for binding in ("cuda-python", "pycuda"):
            r = _stage([sys.executable, "-c", _SELFTEST, binding], env, LIMITS["selftest"])
            line = next((ln for ln in r["stdout"].splitlines() if ln.startswith("XTRT-JSON ")),
                        None)
            r["checks"] = json.loads(line[len("XTRT-JSON "):]) if line else []
            stages["selftest"][binding] = r
        # 3. host overhead (stand-in kernel), both bindings
        bench_json = out / "bench_runtime.json"
        r = _stage([sys.executable, "benchmarks/bench_runtime.py", "--skip-ort", "--calls",
                    str(BENCH_CALLS), "--warmup", str(BENCH_WARMUP), "--json", str(bench_json)],
                   env, LIMITS["bench"])
        r["result"] = json.loads(bench_json.read_text()) if bench_json.is_file() else None
        stages["bench_runtime"] = r
    report["stages"] = stages
    report["load_after"] = _load()
    report["seconds"] = round(time.perf_counter() - t0, 1)
    failed = []
    t = stages["gpu_tests"]
    if t["timed_out"] or t["rc"] not in (0, 5) or t.get("counts", {}).get("failed") \
            or t.get("counts", {}).get("error"):
        failed.append("gpu tests")
    for binding, s in stages["selftest"].items():
        if s["timed_out"] or s["rc"] != 0 or any(c.get("status") == "fail" for c in s["checks"]):
            failed.append(f"self-test ({binding})")
    if stages["bench_runtime"]["timed_out"] or stages["bench_runtime"]["rc"] != 0:
        failed.append("bench_runtime")
    report["status"] = "failed" if failed else "passed"
    report["failed"] = failed
    return report


def _overhead_rows(bench: dict[str, Any] | None) -> list[str]:
    rows = []
    gpu = (bench or {}).get("gpu") or {}
    for r in gpu.get("host_overhead", []):
        cells = [r.get("backend", "?"), "on" if r.get("cuda_graphs") else "off"]
        if r.get("skipped"):
            rows.append("| " + " | ".join(cells) + f" | skipped: {r['skipped']} | | | |")
            continue
        for key in ("device_input", "pinned_input", "numpy_input"):
            e = (r.get(key) or {}).get("enqueue") or {}
            nan = float("nan")
            cells.append(f"{e.get('median_us', nan):.1f} / {e.get('p99_us', nan):.1f}")
        e2e = ((r.get("numpy_input") or {}).get("end_to_end") or {})
        cells.append(f"{e2e.get('median_us', float('nan')):.1f}")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def markdown(report: dict[str, Any]) -> str:
    gpus = ", ".join(f"{g['index']}: {g['name']} (sm_{g['compute_capability'].replace('.', '')})"
                     for g in report.get("devices", {}).get("gpus", [])) or "none"
    lines = ["# Device check", "",
             f"- status: **{report['status']}**"
             + (f" ({report['reason']})" if report.get("reason") else "")
             + (f" — failed: {', '.join(report['failed'])}" if report.get("failed") else ""),
             f"- GPUs: {gpus}; driver {report.get('devices', {}).get('driver')}",
             f"- Python {report['python']}, {report['platform']}",
             f"- load average before {report.get('load_before')}, after "
             f"{report.get('load_after')}; {report.get('seconds', 0)} s in all",
             f"- pycuda: {report.get('pycuda', 'n/a')}"]
    stages = report.get("stages")
    if not stages:
        return "\n".join(lines) + "\n"
    t = stages["gpu_tests"]
    lines += ["", "## gpu-marked tests", "",
              f"`pytest -m gpu {' '.join(t['files'])}`: {t.get('counts')} in {t['seconds']} s"
              + (" (TIMED OUT)" if t["timed_out"] else ""), ""]
    lines += [f"- {c['status']}: {c['test']}" + (f" — {c['detail']}" if c["detail"] else "")
              for c in t.get("cases", [])]
    lines += ["", "## Self-test CUDA checks", ""]
    for binding, s in stages["selftest"].items():
        lines.append(f"### {binding} ({s['seconds']} s{', TIMED OUT' if s['timed_out'] else ''})")
        lines.append("")
        lines += [f"- {c.get('status', '?').upper()} {c.get('name')}: {c.get('detail')}"
                  for c in s["checks"]] or [f"- no result: {s['stderr'][-400:]}"]
        lines.append("")
    b = stages["bench_runtime"]
    lines += ["## Host overhead per call, batch 1, stand-in kernel (bench_runtime.py)", "",
              f"{BENCH_CALLS} calls after {BENCH_WARMUP} warm-up; enqueue time median / p99 in "
              "us; end-to-end = synchronous `infer` of a NumPy batch", "",
              "| binding | CUDA graphs | device input | pinned input | NumPy input | "
              "NumPy end-to-end |", "|---|---|---|---|---|---|",
              *_overhead_rows(b.get("result"))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="output folder (default: $OUT, else "
                                 "benchmarks/reports/device-check-<time>)")
    p.add_argument("--force", action="store_true",
                   help="run every stage even without a GPU (to check this script itself)")
    args = p.parse_args(argv)
    out = Path(args.out or os.environ.get("OUT") or ROOT / "benchmarks" / "reports" /
               f"device-check-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    report = run(out, force=args.force)
    (out / "device-check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "device-check.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / 'device-check.json'} and device-check.md")
    return 1 if report["status"] == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
