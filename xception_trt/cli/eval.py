"""``xception-trt eval``: accuracy of one or more models on a labelled data set, with agreement
against a reference model, written as a JSON + Markdown + PNG report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import HUB_HELP, add_command, path_argument, positive_int
from ._options import check_rules, runner_settings
from .bench import (
    REPORT_OUTPUT,
    add_report_options,
    check_models,
    command_line,
    finish,
    report_location,
    report_notes,
    run_evaluation,
)

ORDER = 71


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "eval", run=run, **REPORT_OUTPUT,  # type: ignore[arg-type]
        help="measure accuracy of models on labelled images and write a report",
        description="""Evaluate one or more models (.engine/.plan, .onnx, .xtrt bundle or
            checkpoint) on a labelled folder (one sub-folder per class) or file list in one pass:
            top-1, top-5, per-class accuracy and agreement with a reference model (top-1
            agreement, logit differences, KL divergence). Writes report.json, report.md and PNG
            plots into a new folder ./eval-<UTC time>/ in the current directory (or -o DIR); an
            existing report folder is replaced only with --force.""")
    path_argument(p, "models", kind="file", what="model", metavar="MODEL", nargs="+",
                  hub=True, help=f"model files to evaluate (a checkpoint: {HUB_HELP})")
    path_argument(p, "--data", kind="any", required=True, metavar="DIR",
                   help="labelled image folder or file list (.txt/.csv with labels)")
    path_argument(p, "--reference", kind="file", default=None, metavar="MODEL", hub=True,
                   help="model the others are compared with (default: the first FP32 model)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images decoded per step (default: 32)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="evaluate a deterministic subset of this many images")
    add_report_options(p, cuda_graphs=False)


def run(args: argparse.Namespace) -> int:
    from ..data import open_dataset
    from ..errors import DataError
    from ..report import build_report

    check_rules(args, "eval:tuned")
    models = list(args.models)
    reference = None
    if args.reference is not None:
        ref = Path(args.reference).resolve()
        matches = [i for i, m in enumerate(models) if Path(m).resolve() == ref]
        if matches:
            reference = matches[0]
        else:
            models.insert(0, args.reference)
            reference = 0
    check_models(models, args)
    root, name = report_location(args, "eval")
    dataset = open_dataset(args.data)
    if not len(dataset):
        raise DataError(f"{args.data} holds no images")
    if not dataset.labelled:
        raise DataError(f"{args.data} has no labels; eval needs a folder with one sub-folder per "
                        "class, or a file list with a label on every line")
    evaluation = run_evaluation(models, None, dataset, runner_settings(args), args.limit,
                                reference=reference, batch_size=args.batch_size,
                                no_progress=args.no_progress, tuned=not args.no_tuned)
    cfg = {"data": args.data, "limit": args.limit, "batch_size": args.batch_size,
           "reference": args.reference, **runner_settings(args)}
    doc = build_report(name, kind="eval", evaluation=evaluation, config=cfg,
                       notes=report_notes(args), command=command_line(args, "eval"))
    for e in doc["runners"]:
        acc, agr = e["accuracy"] or {}, e["agreement"] or {}
        line = f"{e['name']}: "
        line += (f"top-1 {100 * acc['top1']:.2f}%  top-5 {100 * acc['top5']:.2f}%  "
                 f"({acc['images']} images)") if acc else "no result"
        if agr:
            line += f"  agreement {100 * agr['top1_agreement']:.2f}%  KL {agr['kl_mean']:.3g}"
        print(line)
    return finish(doc, args, root)
