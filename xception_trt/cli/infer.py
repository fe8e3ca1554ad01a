"""``xception-trt infer``: classify images with an engine, an ONNX file or a checkpoint."""

from __future__ import annotations

import argparse
import sys

from ..config import Precision
from ..errors import DataError
from ._common import HUB_HELP, add_command, path_argument, positive_int, print_json
from ._options import PRECISION_WHY, RunnerArgs, add_tuned_flag, check_rules, tuned_keywords

ORDER = 60

#: Why --precision needs a bundle (also said by triton-repo; kept for importers).
_PRECISION_WHY = PRECISION_WHY


#: Exit code when some images could not be read (the others are classified), as ``bench``
#: returns 1 when a runner failed and its report is still written.
EXIT_SOME_FAILED = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "infer", run=run, json="the results",
        help="classify images with a model (.engine/.plan, .onnx, .xtrt bundle or checkpoint)",
        description="""Classify images with any model file: a TensorRT engine (.engine/.plan),
            an ONNX file (run with ONNX Runtime), a bundle (.xtrt: the engine that fits this
            machine, built into the engine cache if needed, else its ONNX with ONNX Runtime)
            or a checkpoint (run with PyTorch). Preprocessing follows the model's own
            metadata. Prints one line per image (its top-k classes) and a summary; an image
            that cannot be read gets an error line on stderr and the others go on.""",
        epilog="exit codes: 0 every image classified, 1 some image(s) could not be read (the "
               "others were classified), 2 a bad model, option or path")
    path_argument(p, "model", kind="file", what="model", metavar="MODEL", hub=True,
                  help="model file (.engine, .plan, .onnx, .xtrt, .safetensors, .pth, .pt, "
                       f".bin, .h5), {HUB_HELP}")
    p.add_argument("--precision", choices=Precision.choices(), default=None,
                   help="a bundle's precision to run (default: the bundle's default)")
    path_argument(p, "images", kind="any", what="image", metavar="IMAGE", nargs="+",
                  help="image files to classify, or folders: every image in them (sub-folders "
                       "included), in sorted order")
    p.add_argument("--top-k", type=positive_int, default=5,
                   help="classes to show per image (default: 5)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per runner call (default: the batch size of a bundle's "
                        "throughput or energy tune, else 32; "
                        "capped at the model's max batch)")
    add_tuned_flag(p)
    RunnerArgs.add(p, threads="CPU threads for ONNX Runtime / torch (default: the library's "
                              "choice)",
                   device="torch checkpoints: cpu or cuda[:i]; TensorRT engines: GPU index "
                          "(default: cpu / GPU 0); ONNX files choose with --providers")


def expand_images(paths: list[str]) -> list[str]:
    """Image files as given, with each folder replaced by its images (sorted; class
    sub-folders included).

    Raises:
        DataError: A folder holds no images.
    """
    import os

    from ..data import scan_folder

    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            out.extend(str(rec.path) for rec in scan_folder(path).records)
        else:
            out.append(path)
    return out


def run(args: argparse.Namespace) -> int:
    from ..classifier import Classifier
    runner = RunnerArgs.parse(args)
    runner.check([args.model])
    images = expand_images(args.images)
    kw = runner.for_model(args.model)
    check_rules(args, "infer")
    if args.precision is not None:
        kw["precision"] = args.precision
    kw.update(tuned_keywords(args, args.model))
    results, failed = [], 0
    with Classifier(args.model, batch_size=args.batch_size, **kw) as clf:
        name = clf.runner.name
        for img, preds in clf.classify_each(images, top_k=args.top_k):
            if isinstance(preds, DataError):
                failed += 1
                results.append({"image": img, "error": str(preds)})
                print(f"error: {preds}", file=sys.stderr, flush=True)
                continue
            results.append({"image": img, "predictions": [p.to_dict() for p in preds]})
            if not args.json:  # one line per image, as soon as its batch is done
                print(f"{img}  " + "  ".join(f"{p.probability:.1%} {p.label} ({p.index})"
                                             for p in preds), flush=True)
    summary = {"images": len(images), "classified": len(images) - failed, "failed": failed}
    if args.json:
        print_json({"model": args.model, "runner": name, "results": results,
                    "summary": summary})
    else:
        print(f"{summary['classified']} of {len(images)} image(s) classified with {name}"
              + (f"; {failed} could not be read (error lines above)" if failed else ""))
    return EXIT_SOME_FAILED if failed else 0
