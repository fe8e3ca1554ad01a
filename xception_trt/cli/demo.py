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
            INT8 variants (INT8 placed for TensorRT, which the engines are built from, and
            placed for ONNX Runtime's CPU kernels), build TensorRT engines with whichever
            TensorRT flavour is installed, evaluate accuracy and latency of every variant that
            can run here, and write a Markdown/JSON/PNG report (results first, then the engines
            and the step notes). Each step says whether it ran, reused a cached result, was
            skipped (and why) or failed. The output ends with the results, where the report,
            ONNX variants and engines are, and three commands to try on them (infer, bundle +
            doctor, stream). A second run reuses the data, checkpoint, ONNX variants,
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
                head = f"[{index}/{total}] {result.name}: {result.status.upper()} " \
                       f"({result.seconds:.1f} s) "
                print(_wrap(head + (result.summary or result.detail)), flush=True)

    if show:
        print(f"xception-trt demo in {workdir}", flush=True)
    result = run_demo(workdir, config=config, force=args.force, callbacks=Hooks())
    if args.json:
        print_json({"workdir": str(result.workdir), "ok": result.ok,
                    "seconds": round(result.seconds, 2), "accuracy_top1_percent": result.accuracy,
                    "report": str(result.report_dir) if result.report_dir else None,
                    "summary": str(result.summary),
                    "artifacts": dict(result.artifacts),
                    "next_commands": list(result.next_commands),
                    "steps": [s.to_dict() for s in result.steps]})
        return 0 if result.ok else 1
    counts = {st: sum(s.status == st for s in result.steps)
              for st in ("ran", "cached", "skipped", "failed")}
    print(f"\ndemo finished in {result.seconds:.1f} s: "
          + ", ".join(f"{n} {st}" for st, n in counts.items() if n))
    print_results(result.summary)
    for s in result.steps:
        if s.status in ("skipped", "failed"):
            print(_wrap(f"  {s.name} {s.status}: {s.detail}"))
    print_next_steps(result)
    return 0 if result.ok else 1


#: The longest line the demo prints (a path longer than this stays on its own line).
WIDTH = 100


def _wrap(text: str, indent: str = "    ") -> str:
    """``text`` in lines of at most :data:`WIDTH` characters, continuation lines indented."""
    import textwrap

    return textwrap.fill(text, WIDTH, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def print_results(summary_path: Path) -> None:
    """Accuracy and median latency per runner, a row each (from ``demo.json``'s report)."""
    import json

    from ..report import load_report, table_order

    summary = json.loads(Path(summary_path).read_text())
    if not summary.get("report"):
        return
    doc = load_report(summary["report"])
    batches = sorted({r["batch_size"] for e in doc["runners"] for r in e["latency"]})
    rows = []
    for e in table_order(doc):
        acc = e.get("accuracy") or {}
        lat = {r["batch_size"]: r["end_to_end"]["median_ms"] for r in e["latency"]
               if r.get("end_to_end")}
        rows.append([e["name"], "—" if acc.get("top1") is None else f"{100 * acc['top1']:.2f}%"]
                    + [f"{lat[b]:.2f}" if b in lat else "—" for b in batches])
    w = max(len(r[0]) for r in rows)
    head = ["top-1"] + [f"p50 ms b{b}" for b in batches]
    print(f"\n{'runner':<{w}}  " + "  ".join(f"{h:>10}" for h in head))
    for r in rows:
        print(f"{r[0]:<{w}}  " + "  ".join(f"{c:>10}" for c in r[1:]))
    verdict = summary.get("int8_verdict")
    if verdict:
        print(_wrap(verdict.replace("**", ""), indent=""))
    if any(e["name"] == "onnxruntime-int8" for e in doc["runners"]):
        print(_wrap("onnxruntime-int8 times int8.onnx, placed for TensorRT (the engines are "
                    "built from it): ONNX Runtime runs it slowly, the report says why.",
                    indent=""))


def print_next_steps(result) -> None:  # noqa: ANN001 - DemoResult
    """Where the artifacts are and three commands to try on them, each line short."""
    import shlex

    # the work folder's path stands alone on its line: however long it is, the text stays short
    print("\nartifacts, in the work folder:")
    print(f"  {result.workdir}")
    for what, where in (*result.artifacts, ("summary", result.summary.name)):
        print(_wrap(f"  {what + ':':<15}{where}", indent=" " * 17))
    if not result.engines_run_here and any(w == "engines" for w, _ in result.artifacts):
        print(_wrap("the engines need an NVIDIA GPU (see the report's Engines section); this "
                    "machine runs the ONNX variants, and a bundle carries the engines to a "
                    "device:", indent="  "))
    if not result.next_commands:
        return
    print("next, from the work folder:")
    print(f"  cd {shlex.quote(str(result.workdir))}")
    for command in result.next_commands:
        for part in command.split(" && "):
            print(_command_lines(part))


def _command_lines(command: str) -> str:
    """A shell command in lines of at most :data:`WIDTH` characters, continued with `` \\``
    before an option (an option and its values stay together), so that it still runs when
    pasted."""
    chunks: list[str] = []
    for word in command.split(" "):
        if word.startswith("-") or not chunks:
            chunks.append(word)
        else:
            chunks[-1] += " " + word
    lines, line = [], "  " + chunks[0]
    for chunk in chunks[1:]:
        if len(line) + 1 + len(chunk) + 2 > WIDTH:
            lines.append(line + " \\")
            line = "      " + chunk
        else:
            line += " " + chunk
    lines.append(line)
    return "\n".join(lines)
