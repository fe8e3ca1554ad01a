"""``xception-trt demo``: the whole pipeline on the built-in digits data set, with a report."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ._common import StageProgress, add_command, path_argument, positive_int, print_json

ORDER = 2


def default_workdir() -> Path:
    """``$XDG_CACHE_HOME/xception-trt/demo`` (``~/.cache/xception-trt/demo`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xception-trt" / "demo"


def register(sub: argparse._SubParsersAction) -> None:
    from ..pipeline import CALIBRATION_CHOICES  # the methods plus "auto"

    p = add_command(
        sub, "demo", run=run,
        help="run the whole pipeline on a built-in data set and write a report",
        force="ignore every cache: rewrite the data, retrain, recalibrate, rebuild",
        json="the summary",
        description="""Run every stage of xception-trt on scikit-learn's handwritten digits
            (shipped with scikit-learn, nothing is downloaded): prepare image folders, fine-tune
            a narrow Xception briefly, export + clean the ONNX graph, make FP16 and calibrated
            INT8 variants, build TensorRT engines with whichever TensorRT flavour is installed,
            evaluate accuracy and latency of every variant that can run here, and write a
            Markdown/JSON/PNG report. Each step says whether it ran, reused a cached result, was
            skipped (and why) or failed. A second run reuses the data, checkpoint, ONNX variants,
            calibration and engines, and evaluates, measures latency and writes the report
            again.""",
        epilog="example: xception-trt demo            (then open the report.md it prints)")
    path_argument(p, "--workdir", kind="output-dir", what="demo workdir", type=Path, default=None,
                   help="where data, models, engines and the report go (default: "
                        "$XDG_CACHE_HOME/xception-trt/demo, i.e. ~/.cache/xception-trt/demo)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="training epochs (default 8)")
    p.add_argument("--calib-method", choices=CALIBRATION_CHOICES, default=None,
                   help="INT8 calibration method (default entropy; auto tries each and keeps "
                        "the best on held-out calibration images)")
    p.add_argument("--skip", nargs="+", default=(), metavar="STEP",
                   choices=["fp16", "int8", "engines", "latency"],
                   help="leave out steps: fp16, int8, engines, latency")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..extras import needs

    with needs("the demo", extra="demo"):  # it trains, exports and quantizes: the toolchain
        from ..demo import STEP_NAMES, DemoCallbacks, DemoConfig, run_demo
    from .train import progress_hooks

    config = DemoConfig(skip=frozenset(args.skip))
    if args.epochs is not None:
        config = replace(config, train=replace(config.train, epochs=args.epochs,
                                               warmup_epochs=min(config.train.warmup_epochs,
                                                                 args.epochs)))
    if args.calib_method is not None:
        config = replace(config, calibration_method=args.calib_method)
    workdir = args.workdir or default_workdir()
    show = not args.json and not args.quiet
    total = len(STEP_NAMES)

    stages = StageProgress(enabled=show)

    class Hooks(progress_hooks(DemoCallbacks, enabled=show)):  # type: ignore[misc]
        def on_step_start(self, name: str, index: int, total: int) -> None:
            if show:
                print(f"[{index}/{total}] {name} ...", file=sys.stderr, flush=True)

        def on_progress(self, stage: str, done: int, total: int | None) -> None:
            stages(stage, done, total)  # INT8 calibration: images decoded, batches fed

        def on_step_end(self, result) -> None:  # noqa: ANN001 - StepResult
            stages.close()
            if show:
                index = STEP_NAMES.index(result.name) + 1
                print(f"[{index}/{total}] {result.name}: {result.status.upper()} "
                      f"({result.seconds:.1f} s) {result.detail}", flush=True)

    if show:
        print(f"xception-trt demo in {workdir}", flush=True)
    result = run_demo(workdir, config=config, force=args.force, callbacks=Hooks())
    if args.json:
        print_json({"workdir": str(result.workdir), "ok": result.ok,
                    "seconds": round(result.seconds, 2), "accuracy_top1_percent": result.accuracy,
                    "report": str(result.report_dir) if result.report_dir else None,
                    "summary": str(result.summary),
                    "steps": [s.to_dict() for s in result.steps]})
        return 0 if result.ok else 1
    counts = {st: sum(s.status == st for s in result.steps)
              for st in ("ran", "cached", "skipped", "failed")}
    print(f"\ndemo finished in {result.seconds:.1f} s: "
          + ", ".join(f"{n} {st}" for st, n in counts.items() if n))
    if result.accuracy:
        print("validation top-1: " + ", ".join(f"{k} {v:.2f}%" for k, v in
                                               result.accuracy.items()))
    for s in result.steps:
        if s.status in ("skipped", "failed"):
            print(f"  {s.name} {s.status}: {s.detail}")
    if result.report_dir is not None:
        print(f"report: {result.report_dir / 'report.md'}")
    print(f"summary: {result.summary}")
    return 0 if result.ok else 1
