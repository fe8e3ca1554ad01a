"""``xception-trt train``: fine-tune (or train from scratch) Xception on a labelled folder."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import (
    HUB_HELP,
    add_command,
    arg_type,
    path_argument,
    positive_int,
    print_json,
)
from ._options import check_rules

ORDER = 4


#: argparse type: a number strictly between 0 and 1.
_fraction = arg_type(float, expected="a number",
                     check=lambda v: None if 0.0 < v < 1.0 else "must be between 0 and 1 "
                                                                "(exclusive)")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "train", run=run, json="the result", output_metavar="CKPT",
        output="best checkpoint (.safetensors); the resume state is CKPT's stem + .resume.pt",
        output_replaced_by=("force", "resume"),
        force="start a new run over an existing CKPT (replacing it and its resume state)",
        help="fine-tune or train Xception on a labelled image folder",
        description="""Train the reference Xception on a labelled image folder (one sub-folder
            per class). The classifier is re-initialised for the folder's classes; SGD or AdamW
            with a warm-up + cosine schedule; random-resized-crop (and optional flip)
            augmentation; validation after every epoch; the best checkpoint is saved as
            .safetensors with its ModelSpec and class labels, and a resume state next to it.
            Uses a GPU when torch sees one.""",
        epilog="examples:\n"
               "  xception-trt train data/train --val data/val --init imagenet.safetensors "
               "--epochs 10 -o pets.safetensors\n"
               "  xception-trt train data/ --val-split 0.1 --init scratch --width 0.5 "
               "--input-size 160 --optimizer adamw -o small.safetensors\n"
               "  xception-trt train data/ --val-split 0.1 -o small.safetensors --resume",
        raw_epilog=True)
    path_argument(p, "data", kind="any", what="training data", metavar="DATA",
                  help="labelled training images: a folder with one sub-folder per class, or a "
                       "labelled file list (.txt/.csv)")
    val = p.add_mutually_exclusive_group()
    path_argument(val, "--val", kind="any", metavar="DIR", default=None,
                     help="labelled validation images with the same class folders")
    val.add_argument("--val-split", type=_fraction, default=None, metavar="F",
                     help="hold out this fraction of DATA per class for validation (seeded)")
    path_argument(p, "--init", kind="file", allow=("scratch",), default="scratch",
                  metavar="CKPT|scratch", hub=True,
                  help="initial weights: a checkpoint (ours, timm .pth/.bin, Keras .h5, "
                       f"{HUB_HELP}; its classifier is replaced) or 'scratch' (default)")
    m = p.add_argument_group("model (from scratch; with --init they must match the checkpoint)")
    for flag, kind, text in (
            ("--width", float, "channel multiplier (default 1.0: the paper's Xception)"),
            ("--middle-blocks", int, "middle-flow blocks (default 8)"),
            ("--input-size", int, "square input size in pixels, >= 71 (default: 299, or the "
                                  "checkpoint's)"),
            ("--crop-pct", float, "evaluation centre-crop fraction (default 0.8975; 1.0 = no "
                                  "crop)")):
        m.add_argument(flag, type=kind, default=None, help=text)
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=positive_int, default=10, help="epochs (default 10)")
    o.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per step (default 32)")
    o.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd",
                   help="sgd (Nesterov momentum 0.9, default) or adamw")
    o.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 0.05 for sgd, 1e-3 for adamw)")
    o.add_argument("--weight-decay", type=float, default=None,
                   help="weight decay (default 1e-4 for sgd, 0.05 for adamw)")
    o.add_argument("--warmup-epochs", type=float, default=1.0,
                   help="linear warm-up epochs before the cosine decay (default 1)")
    o.add_argument("--label-smoothing", type=float, default=0.1,
                   help="label smoothing (default 0.1)")
    a = p.add_argument_group("augmentation")
    a.add_argument("--no-augment", action="store_true",
                   help="train on the evaluation preprocessing only")
    a.add_argument("--no-flip", action="store_true",
                   help="no horizontal flips (digits, text, anything with a handedness)")
    a.add_argument("--crop-scale", type=float, nargs=2, default=None,
                   metavar=("MIN", "MAX"),
                   help="area range of the random-resized crop (default 0.35 1.0)")
    r = p.add_argument_group("run")
    r.add_argument("--device", default="auto",
                   help="auto (GPU if torch sees one, default), cpu, cuda or cuda:N")
    r.add_argument("--workers", type=positive_int, default=None,
                   help="image-decoding threads (default: up to 4)")
    r.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its resume state (same arguments)")


def progress_hooks(base: type, *, enabled: bool) -> type:
    """A subclass of ``base`` (a :class:`~xception_trt.train.TrainCallbacks`) that draws a tqdm
    bar per epoch when stderr is a terminal and prints one line per epoch on stderr (silent when
    not ``enabled``)."""

    class Hooks(base):  # type: ignore[misc, valid-type]
        bar: Any = None
        steps = 0

        def on_train_start(self, *, epochs: int, start_epoch: int, steps_per_epoch: int,
                           train_images: int, val_images: int, device: str) -> None:
            self.steps = steps_per_epoch
            if enabled:
                resumed = f", resuming after epoch {start_epoch}" if start_epoch else ""
                print(f"training on {device}: {train_images} images, {val_images} validation "
                      f"images, {epochs} epochs{resumed}", file=sys.stderr)

        def on_epoch_start(self, epoch: int, epochs: int) -> None:
            if enabled:
                from tqdm import tqdm

                self.bar = tqdm(total=self.steps, desc=f"epoch {epoch}/{epochs}", unit="step",
                                leave=False, file=sys.stderr, dynamic_ncols=True,
                                disable=None)  # a bar only on a terminal, not in logs

        def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

        def on_epoch_end(self, stats: Any) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            if enabled:
                print(format_epoch(stats), file=sys.stderr)

    return Hooks


def format_epoch(stats: Any) -> str:
    """One line per epoch: losses, accuracies, learning rate, time, best marker."""
    val = ("" if stats.val_top1 is None
           else f"  val loss {stats.val_loss:.4f} top-1 {stats.val_top1:.2%}")
    return (f"epoch {stats.epoch:>3}  train loss {stats.train_loss:.4f} top-1 "
            f"{stats.train_top1:.2%}{val}  lr {stats.lr:.3g}  {stats.seconds:.1f} s"
            + ("  * saved" if stats.best else ""))


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..config import AugmentConfig, TrainConfig
    from ..train import TrainCallbacks, train

    check_rules(args, "train")
    augment = (AugmentConfig.off() if args.no_augment
               else AugmentConfig(scale=tuple(args.crop_scale or (0.35, 1.0)),
                                  hflip=not args.no_flip))
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                         optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                         warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
                         augment=augment, seed=args.seed, workers=args.workers,
                         device=args.device)
    spec_fields = {} if args.crop_pct is None else {"crop_pct": args.crop_pct}
    hooks = progress_hooks(TrainCallbacks, enabled=not args.json and not args.quiet)()
    result = train(args.data, args.output, config=config, init=args.init, val=args.val,
                   val_split=args.val_split, width=args.width, middle_blocks=args.middle_blocks,
                   input_size=args.input_size, spec_fields=spec_fields, resume=args.resume,
                   callbacks=hooks)
    if args.json:
        print_json({"checkpoint": str(result.checkpoint), "resume_state": str(result.resume_state),
                    "best_epoch": result.best_epoch, "best_val_top1": result.best_val_top1,
                    "device": result.device, "resumed_from": result.resumed_from,
                    "seconds": round(result.seconds, 2), "spec": result.spec.to_dict(),
                    "history": [asdict(h) for h in result.history],
                    "skipped_images": [list(s) for s in result.skipped_images]})
        return 0
    best = ("" if result.best_val_top1 is None
            else f", validation top-1 {result.best_val_top1:.2%}")
    print(f"best checkpoint: {result.checkpoint} (epoch {result.best_epoch}{best}; "
          f"{len(result.spec.class_names())} classes, {result.spec.input_size}x"
          f"{result.spec.input_size})")
    if result.skipped_images:
        print(f"warning: {len(result.skipped_images)} unreadable image(s) were left out, e.g. "
              f"{result.skipped_images[0][0]}: {result.skipped_images[0][1]}", file=sys.stderr)
    return 0
