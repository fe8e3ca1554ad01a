"""``xception-trt bench``: latency (and, with labelled ``--data``, accuracy) of one or more
models, written as a JSON + Markdown + PNG report."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._common import (
    HUB_HELP,
    add_command,
    path_argument,
    positive_int,
    progress,
)
from ._options import RunnerArgs, add_tuned_flag, check_rules, runner_settings, tuned_keywords

ORDER = 70


#: ``-o/--output`` and ``--force`` of ``bench`` and ``eval`` (for add_command).
REPORT_OUTPUT = dict(
    output="the report folder to write (default: OUT_DIR/NAME, i.e. ./COMMAND-<UTC time>/ in "
           "the current directory); the same as --out-dir with its parent and --name with its "
           "name, so it cannot be combined with them",
    output_metavar="DIR", output_kind="dir", output_required=False,
    force="replace an existing report folder")


def add_report_options(p: argparse.ArgumentParser, *, cuda_graphs: bool) -> None:
    """Options shared by ``bench`` and ``eval``: where the report goes (besides ``-o``, see
    :data:`REPORT_OUTPUT`) and runner settings (``--cuda-graphs`` only where asked)."""
    RunnerArgs.add(p, threads="CPU threads for ONNX Runtime and torch runners (default: the "
                              "library's choice; recorded in the report)",
                   cuda_graphs=cuda_graphs)
    p.add_argument("--name", default=None,
                   help="report folder name (default: <command>-<UTC timestamp>)")
    path_argument(p, "--out-dir", kind="output-dir", type=Path, default=None,
                  help="folder to create the report folder in (default: the current "
                       "directory)")
    p.add_argument("--note", action="append", default=[], metavar="TEXT",
                   help="a note shown at the top of the report (repeatable)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (shown on a terminal only, on stderr)")
    add_tuned_flag(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "bench", run=run, help="measure latency/throughput of models and write a report",
        **REPORT_OUTPUT,  # type: ignore[arg-type]
        description="""Measure latency and throughput of one or more models (.engine/.plan,
            .onnx, .xtrt bundle or checkpoint) over a batch-size sweep, and write report.json,
            report.md and PNG plots into a new folder ./bench-<UTC time>/ in the current
            directory (or -o DIR); an existing report folder is replaced only with --force.
            With --data, real images are the input, and a labelled folder also gives accuracy
            and agreement with the FP32 reference.""")
    path_argument(p, "models", kind="file", what="model", metavar="MODEL", nargs="+",
                  hub=True, help=f"model files to benchmark (a checkpoint: {HUB_HELP})")
    p.add_argument("--batch", type=positive_int, nargs="+", default=[1, 8, 32], metavar="N",
                   help="batch sizes of the sweep (default: 1 8 32)")
    p.add_argument("--iterations", type=positive_int, default=50,
                   help="timed calls per batch size (default: 50)")
    p.add_argument("--warmup", type=int, default=5,
                   help="untimed calls per batch size before timing (default: 5)")
    path_argument(p, "--data", kind="any", default=None, metavar="DIR",
                   help="images (folder or file list) to use as input; a labelled folder also "
                        "measures accuracy")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="with labelled --data: evaluate at most this many images")
    p.add_argument("--no-power", action="store_true",
                   help="do not sample power during the timed calls (default: the Jetson "
                        "INA3221 rails or NVML where available; the report says why not)")
    add_report_options(p, cuda_graphs=True)


def report_location(args: argparse.Namespace, command: str) -> tuple[Path, str]:
    """The report's (root folder, name) from ``-o DIR`` or ``--out-dir`` + ``--name``, checked
    before any measuring (an existing report needs ``--force``).

    Raises:
        ConfigError: ``-o`` combined with ``--out-dir`` or ``--name``.
        BenchError: Bad name, or the report folder exists without ``--force``.
    """
    from ..errors import ConfigError
    from ..report import DEFAULT_ROOT, check_report_dir, default_report_name

    if args.output is not None:
        if args.out_dir is not None or args.name is not None:
            raise ConfigError("-o/--output is the report folder itself; give it alone, or "
                              "--out-dir and --name instead")
        out = Path(args.output)
        root, name = out.parent, out.name
    else:
        root = args.out_dir or DEFAULT_ROOT
        name = args.name or default_report_name(command)
    check_report_dir(root, name, force=args.force)
    return root, name



def check_models(models: Sequence[str], args: argparse.Namespace) -> None:
    """Fail fast (before any measuring) on unknown model types, missing files and runner flags
    that no model would use; print (and add to the report's notes) a one-line note for an INT8
    graph placed for TensorRT that ONNX Runtime will run on the CPU."""
    from ..bundle.format import is_bundle
    from ..contract import RunnerKind
    from ..errors import BenchError, GraphError
    from ..runners import check_runner_options, is_model_file, ort_int8_note, runner_kind

    for m in models:
        if not is_model_file(m):
            runner_kind(m)  # raises, naming the supported types
        if not Path(m).is_file():
            raise BenchError(f"model file {m} does not exist")
    check_runner_options(models, **runner_settings(args))
    for m in models:
        # a bundle chooses its own graph for ONNX Runtime (bundle/choice.py)
        if is_bundle(m) or runner_kind(m) is not RunnerKind.ONNXRUNTIME:
            continue
        try:
            note = ort_int8_note(m, providers=runner_settings(args)["providers"])
        except GraphError:  # not ours: opening it says so, recorded in the report
            continue
        if note:
            print(note, file=sys.stderr)
            args.auto_notes = [*getattr(args, "auto_notes", []), note[len("note: "):]]


def report_notes(args: argparse.Namespace) -> list[str]:
    """The report's notes: the user's ``--note`` texts, then those :func:`check_models` found."""
    return [*args.note, *getattr(args, "auto_notes", [])]


def command_line(args: argparse.Namespace, command: str) -> str:
    """A readable reconstruction of the command for the report."""
    parts = ["xception-trt", command, *args.models]
    for key, value in sorted(vars(args).items()):
        if key in ("models", "func", "command", "verbose", "quiet", "no_progress", "auto_notes") \
                or value in (None, False, [], ()):
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif key == "providers":  # one comma-separated argument
            parts += [flag, ",".join(value)]
        elif isinstance(value, list):
            parts += [flag, *map(str, value)] if key != "note" else \
                [x for v in value for x in (flag, v)]
        else:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def finish(doc: dict, args: argparse.Namespace, root: Path) -> int:
    """Write the report, print where, and return 1 when a runner failed (report still kept)."""
    from ..report import write_report

    files = write_report(doc, root, force=args.force)
    print(f"report written to {files.directory}/ (report.md, report.json"
          + "".join(f", {p.name}" for p in files.plots) + ")")
    failed = [(e["name"], err) for e in doc["runners"] for err in e["errors"]]
    for name, err in failed:
        print(f"warning: {name}: {err}", file=sys.stderr)
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    from ..bench import BenchConfig, benchmark_runner, load_pixels, unique_names
    from ..data import open_dataset
    from ..report import build_report

    config = BenchConfig(batch_sizes=tuple(args.batch), iterations=args.iterations,
                         warmup=args.warmup)
    check_rules(args, "bench:tuned")
    check_models(args.models, args)
    root, name = report_location(args, "bench")
    dataset = open_dataset(args.data) if args.data else None
    pixels = None
    if dataset is not None:
        n = min(max(config.batch_sizes), 32)
        pixels = lambda spec: load_pixels(dataset, spec, limit=n)  # noqa: E731

    from ..power import PowerMonitor, open_monitor, run_context
    from ..runners import runner_options

    context = run_context()  # before measuring: the load and clocks the run started from
    monitor = (PowerMonitor(None, reason="power: not measured (--no-power)") if args.no_power
               else open_monitor(pci_bus_id=_cuda_gpu_bus_id(0)))
    results = []
    per_call = config.warmup + config.iterations
    with monitor:
        for model in args.models:
            total = per_call * len(config.batch_sizes)
            with progress(f"bench {Path(model).name}", total, unit="call",
                          enabled=not args.no_progress) as advance:
                results.append(benchmark_runner(
                    model, config, pixels=pixels, progress=advance, power=monitor,
                    runner_kw={**runner_options(model, **runner_settings(args)),
                               **tuned_keywords(args, model)}))
    labels = unique_names([r.name for r in results], args.models)
    for r, label in zip(results, labels):
        r.name = label
    evaluation = None
    if dataset is not None and dataset.labelled:
        evaluation = run_evaluation(args.models, labels, dataset, runner_settings(args),
                                    args.limit, no_progress=args.no_progress,
                                    tuned=not args.no_tuned)
    cfg = {**config.to_dict(), "data": args.data, **runner_settings(args)}
    doc = build_report(name, kind="bench", benchmarks=results, evaluation=evaluation,
                       config=cfg, notes=report_notes(args), command=command_line(args, "bench"),
                       context=context, power=monitor.describe())
    print_latency_summary(doc)
    return finish(doc, args, root)


def run_evaluation(models: Sequence[str], labels: Sequence[str] | None, dataset: Any,
                   settings: dict[str, Any], limit: int | None, *, reference: int | None = None,
                   batch_size: int = 32, no_progress: bool = False, tuned: bool = True) -> Any:
    """Open every model, evaluate them in one pass over ``dataset``, close them (``labels``:
    display names, default the runners' own names made unique; ``settings``: from
    :func:`runner_settings`; ``tuned=False``: ignore bundles' tuned configurations)."""
    from ..bench import evaluate, unique_names
    from ..bundle.format import is_bundle
    from ..runners import open_runner, runner_options

    runners = []
    try:
        for m in models:
            runners.append(open_runner(m, **runner_options(m, **settings),
                                       **({"tuned": False} if not tuned and is_bundle(m)
                                          else {})))
        if labels is None:
            labels = unique_names([r.name for r in runners], models)
        total = min(len(dataset), limit) if limit else len(dataset)
        with progress("eval", total, unit="img", enabled=not no_progress) as advance:
            return evaluate(runners, dataset, names=list(labels), reference=reference,
                            batch_size=batch_size, limit=limit, progress=advance)
    finally:
        for r in runners:
            r.close()


def print_latency_summary(doc: dict) -> None:
    """A compact table on stdout, each column naming its statistic: runner, batch, median
    (p50), mean and p99 ms per call, and images/s from the mean (batch / mean), so the last
    column follows from the mean beside it."""
    rows = []
    for e in doc["runners"]:
        for r in e["latency"]:
            s = r["end_to_end"]
            if s:
                rows.append((e["name"], r["batch_size"], s["median_ms"], s["mean_ms"],
                             s["p99_ms"], r["throughput_ips"]))
    if not rows:
        return
    w = max(len(r[0]) for r in rows)
    print(f"{'runner':<{w}}  batch   p50 ms  mean ms   p99 ms  img/s (mean)")
    for name, b, med, mean, p99, tp in rows:
        print(f"{name:<{w}}  {b:>5}  {med:>7.3f}  {mean:>7.3f}  {p99:>7.3f}  {tp:>12.1f}")
    print("ms per call; img/s = batch / mean ms (the median is the typical call, the mean "
          "counts the slow ones too)")


def _cuda_gpu_bus_id(device: int) -> str | None:
    """PCI bus id of CUDA device ``device`` (the runners' GPU), so that NVML measures that GPU
    and not NVML's own index ``device`` (issue 26 item 7); ``None`` where unknown."""
    from ..sysinfo import devices

    gpu = next((g for g in devices().gpus if g.index == device), None)
    return gpu.pci_bus_id if gpu is not None else None
