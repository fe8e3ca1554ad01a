"""``xception-trt convert``: any supported checkpoint -> our ``.safetensors`` with its ModelSpec."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import HUB_HELP, add_command, path_argument, positive_int

ORDER = 5


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "convert", run=run, output="destination .safetensors",
        force="overwrite an existing output file",
        help="convert a timm/Cadene or Keras checkpoint to xception-trt .safetensors",
        description="""Read a checkpoint (xception-trt .safetensors, timm/Cadene legacy_xception
            .pth/.bin/.safetensors, or the Keras ImageNet .h5) and write it as one .safetensors
            file carrying its ModelSpec (preprocessing, labels, padding).""")
    path_argument(p, "checkpoint", kind="file", what="checkpoint", hub=True,
                  help=f"source checkpoint file, {HUB_HELP}")
    p.add_argument("--input-size", type=positive_int, default=None,
                   help="input size the model is meant for (default: 299, or the stored value)")
    p.add_argument("--num-classes", type=positive_int, default=None,
                   help="expected number of classes (default: what the checkpoint has)")
    path_argument(p, "--labels", kind="file", type=Path, default=None,
                   help="text file with one class name per line, in logit order")
    p.add_argument("--reset-classifier", action="store_true",
                   help="re-initialise the classifier (for fine-tuning to --num-classes/--labels)")


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model, save_checkpoint

    output = Path(args.output)  # checked before run (cli._common.check_paths)
    labels = None
    if args.labels is not None:
        labels = [ln.strip() for ln in args.labels.read_text(encoding="utf-8").splitlines()
                  if ln.strip()]
    fields = {"input_size": args.input_size} if args.input_size else {}
    model = load_model(args.checkpoint, num_classes=args.num_classes, labels=labels,
                       reset_classifier=args.reset_classifier, **fields)
    save_checkpoint(model, output, metadata={"converted_from": str(args.checkpoint),
                                                  "source_sha256": model.checkpoint_sha256})
    spec = model.spec
    print(f"wrote {output}: {spec.source} weights, {spec.num_classes} classes, "
          f"width {spec.width:g}, {spec.input_size}x{spec.input_size}, "
          f"pool padding {spec.pool_padding}, BN eps {spec.bn_eps:g}")
    return 0
