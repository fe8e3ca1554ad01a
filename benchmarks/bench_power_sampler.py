"""What the power sampler costs a timed loop (issue 16).

Builds a three-rail INA3221 hwmon tree (the Orin NX layout) in a temporary folder, then:

* the cost of one sample (three rails: six small file reads), median over many;
* a CPU-bound timed loop (a float32 matrix product, about a millisecond) timed with
  ``perf_counter`` with the sampler off and on, at the default 50 ms period and at 5 ms,
  interleaved in rounds so that drift of the machine hits every configuration alike.

On a Jetson the files are sysfs attributes whose read goes over I2C (slower than a tmpfs read),
so the per-sample cost there must be measured there; the loop's slowdown scales with that cost
times the sampling rate.

Usage:
    python benchmarks/bench_power_sampler.py [--calls 300] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xception_trt.power import PowerMonitor
from xception_trt.power.jetson import Ina3221Source, find_rails


def _tree(root: Path) -> Path:
    hw = root / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"
    hw.mkdir(parents=True)
    for k, (label, mv, ma) in enumerate((("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 4992, 400),
                                         ("VDD_SOC", 4992, 300)), start=1):
        (hw / f"in{k}_label").write_text(label + "\n")
        (hw / f"in{k}_input").write_text(f"{mv}\n")
        (hw / f"curr{k}_input").write_text(f"{ma}\n")
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=300, help="timed calls per configuration/round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--json", help="write the numbers to this JSON file")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="power-sampler-") as tmp:
        layout, rails, _ = find_rails(_tree(Path(tmp)))
        source = Ina3221Source(rails, layout=layout)
        costs = []
        for _ in range(2000):
            t0 = time.perf_counter()
            source.read_mw()
            costs.append(time.perf_counter() - t0)
        sample_us = 1e6 * statistics.median(costs)
        a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
        configs = {"off": None, "50 ms": 0.05, "5 ms": 0.005}
        per: dict[str, list[float]] = {k: [] for k in configs}
        busy: dict[str, list[float]] = {k: [] for k in configs}
        for _ in range(args.rounds):
            for name, period in configs.items():
                window = PowerMonitor(source, period_s=period).start() if period else None
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    a @ a
                    per[name].append(time.perf_counter() - t0)
                if window is not None:
                    r = window.stop()
                    busy[name].append(r.sampler_busy_ms / (1000 * r.duration_s))
    out = {"sample_us_median": round(sample_us, 1), "calls": args.calls, "rounds": args.rounds,
           "loop": {}}
    base = statistics.median(per["off"])
    print(f"one sample (3 rails, 6 file reads): median {sample_us:.1f} us")
    for name in configs:
        med = statistics.median(per[name])
        p99 = float(np.percentile(per[name], 99))
        share = 100 * statistics.mean(busy[name]) if busy[name] else 0.0
        out["loop"][name] = {"median_ms": round(1e3 * med, 4), "p99_ms": round(1e3 * p99, 4),
                             "vs_off_pct": round(100 * (med / base - 1), 2),
                             "sampler_busy_pct": round(share, 3)}
        print(f"sampler {name:>5}: median call {1e3 * med:.4f} ms ({100 * (med / base - 1):+.2f}%"
              f" vs off), p99 {1e3 * p99:.4f} ms, sampler busy {share:.3f}% of the window")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
