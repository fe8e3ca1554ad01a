"""``xception-trt tune``: the configuration of a bundle (or folder of model files) that is
fastest, or most frugal, on this machine while keeping the accuracy; a report and, for a
bundle, the recorded choice."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ._common import (
    StageProgress,
    add_command,
    arg_type,
    batch_size,
    bounded_int,
    path_argument,
    positive_int,
)

ORDER = 72


def _positive_float(text: str) -> float:
    import math

    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


positive_ms = arg_type(_positive_float, expected="a number of milliseconds",
                       check=lambda v: "must be > 0" if v <= 0 else None)
percentage_points = arg_type(_positive_float, expected="a number of percentage points",
                             check=lambda v: None if 0 <= v < 100 else "is outside [0, 100)")
fraction = arg_type(_positive_float, expected="a fraction such as 0.995",
                    check=lambda v: None if 0 < v <= 1 else "is outside (0, 1]")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "tune", run=run,
        help="find the fastest (or most frugal) configuration that keeps the accuracy, here",
        description="""Try every configuration of a bundle (.xtrt) — or of a folder of
            xception-trt ONNX graphs and engines — that this machine can run: each precision
            variant on each backend (TensorRT engines prebuilt or built into the engine cache,
            with CUDA graphs off and on, DLA engines where the board has DLA cores; ONNX Runtime,
            the INT8 graph placed for it, on the CPU at each thread count and on its CUDA
            provider where there is a GPU) at the profile's batch sizes (an engine: its own).
            Each distinct graph is evaluated once on --val against FP32; those below the
            accuracy floor are not timed. The rest are timed in blocks of calls with a
            sequential stop: a candidate whose median's confidence interval lies above the best
            one's (among those whose p99 meets --deadline-ms) is cut; overlapping intervals are
            a tie, won by the simplest configuration.
            Writes report.json, report.md and pareto.png into a new folder ./tune-<UTC time>/
            (or -o DIR; an existing folder is replaced only with --force) and, for a bundle,
            first records the choice, which opening the bundle on this machine then uses unless
            told otherwise (its batch size only from a throughput or energy tune). What cannot
            run here is listed with the reason.""",
        output="the report folder to write (default: ./tune-<UTC time>/ in the current "
               "directory)", output_metavar="DIR", output_kind="dir", output_required=False,
        force="replace an existing report folder",
        epilog="example: xception-trt tune digits.xtrt --val data/validation "
               "--max-top1-drop 0.5")
    path_argument(p, "model", kind="any", what="model", metavar="MODEL",
                  help="a bundle (.xtrt), or a folder of ONNX graphs and engines")
    path_argument(p, "--val", kind="any", required=True, metavar="DIR",
                  help="validation images: a labelled folder (one sub-folder per class) or "
                       "file list; unlabelled images only with --min-agreement")
    p.add_argument("--objective", choices=("latency", "throughput", "energy"),
                   default="latency",
                   help="what to minimise: latency (median ms per call at the smallest batch), "
                        "throughput (ms per image, i.e. the most images/s, over the batch "
                        "sizes) or energy (mJ per image; needs a Jetson's power rails or NVML) "
                        "(default: latency)")
    floor = p.add_mutually_exclusive_group()
    floor.add_argument("--max-top1-drop", type=percentage_points, default=None, metavar="PP",
                       help="accuracy floor: top-1 drop from FP32 of at most this many "
                            "percentage points on labelled --val (default: 1.0 unless "
                            "--min-agreement is given)")
    floor.add_argument("--min-agreement", type=fraction, default=None, metavar="F",
                       help="accuracy floor: top-1 agreement with FP32 of at least this "
                            "fraction (e.g. 0.995)")
    p.add_argument("--deadline-ms", type=positive_ms, default=None, metavar="MS",
                   help="a configuration whose p99 latency per call is above this is not "
                        "chosen")
    p.add_argument("--max-batch", type=batch_size, default=None, metavar="N",
                   help="largest batch size tried (default: the bundle's batch profile; 8 for "
                        "a folder)")
    p.add_argument("--threads", type=positive_int, nargs="+", default=None, metavar="N",
                   help="ONNX Runtime thread counts to try (default: 1, 2, 4 ... up to the "
                        "CPUs this process may use)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="evaluate a deterministic subset of this many validation images")
    p.add_argument("--warmup", type=bounded_int(0), default=5,
                   help="untimed calls before a candidate is timed (default: 5)")
    p.add_argument("--iterations", type=positive_int, default=50,
                   help="most timed calls per candidate; the sequential stop cuts one earlier "
                        "when it cannot beat the best (default: 50). With --objective energy "
                        "the cost is sampled per power window (each at least 10 sampler "
                        "periods long), from 6 windows up to max(N/10, 12)")
    p.add_argument("--no-record", action="store_true",
                   help="do not record the choice for the bundle (only the report)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (shown on a terminal only, on stderr)")


def run(args: argparse.Namespace) -> int:
    from ..report import DEFAULT_ROOT, check_report_dir, default_report_name
    from ..tuning import SearchConfig, tune

    out = Path(args.output) if args.output is not None else \
        DEFAULT_ROOT / default_report_name("tune")
    check_report_dir(out.parent, out.name, force=args.force)
    block = min(10, args.iterations)
    search = SearchConfig(warmup=args.warmup, block=block, min_repeats=block,
                          max_repeats=args.iterations)
    command = " ".join(shlex.quote(a) for a in ["xception-trt", *sys.argv[1:]])
    with StageProgress(enabled=not args.no_progress) as bar:
        result = tune(args.model, args.val, objective=args.objective,
                      max_top1_drop=args.max_top1_drop, min_agreement=args.min_agreement,
                      deadline_ms=args.deadline_ms, max_batch=args.max_batch,
                      output=out, force=args.force, threads=args.threads, search=search,
                      limit=args.limit, record=not args.no_record, command=command,
                      progress=bar)
    doc = result.report
    ch = doc["chosen"]
    timed = [r for r in doc["candidates"] if r["repetitions"]]
    cut = sum(r["cut_early"] for r in timed)
    below = sum(r["status"] == "below accuracy floor" for r in doc["candidates"])
    print(f"{len(doc['candidates'])} candidates: {below} below the accuracy floor, "
          f"{len(timed)} timed ({cut} cut early); {len(doc['not_runnable'])} not runnable here")
    if ch is None:
        print("no candidate met the accuracy floor and the deadline")
    else:
        tie = f" (a tie within noise with {len(doc['ties']) - 1} other(s): the simplest wins)" \
            if doc["ties"] else ""
        print(f"chosen: {ch['name']}: median {ch['median_ms']:.3f} ms, p99 {ch['p99_ms']:.3f} "
              f"ms per call, {ch['images_per_s']:.1f} images/s, top-1 drop "
              + (f"{ch['top1_drop_pp']:.2f} pp" if ch["top1_drop_pp"] is not None else "n/a")
              + f", agreement {100 * ch['agreement']:.2f} %{tie}")
    if result.recorded is not None:
        print(f"recorded for {Path(args.model).name} on this machine: opening it uses this "
              "configuration unless told otherwise")
    print(f"report written to {result.directory}/ (report.md, report.json, pareto.png)")
    return 0 if ch is not None else 1
