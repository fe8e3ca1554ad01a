# Over 600 lines on purpose: the training loop, its data pipeline and its resume state are one
# unit; the config lives in config.py.
"""Fine-tune (or train from scratch) the reference Xception on a labelled image folder.

The classifier is re-initialised for the folder's classes; SGD (Nesterov) or AdamW with a linear
warm-up and a cosine schedule; light augmentation (random-resized-crop, optional flip) on uint8
pixels decoded by :mod:`xception_trt.preprocess`, so training and evaluation see the same
decoding and normalisation; validation after every epoch; the best checkpoint is saved in our
``.safetensors`` format (ModelSpec + class labels). Resumable: after every epoch a state file
``<output>.resume.pt`` (tensors and plain values only, ``torch.load(weights_only=True)``) holds
the current weights, optimizer, scheduler, epoch and history. Runs on CUDA when torch sees a GPU.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .config import AugmentConfig, ModelSpec, Optimizer, TrainConfig
from .data import BatchLoader, Dataset, open_dataset
from .errors import CheckpointError, ConfigError, DataError
from .extras import needs
from .fsio import atomic_path, sha256_file
from .model import Xception, build_xception
from .preprocess import PIL_FILTERS, normalize, open_image, resize_crop, to_rgb

with needs("training"):
    import torch
    from torch import nn

__all__ = ["EpochStats", "TrainResult", "TrainCallbacks", "train", "prepare_model",
           "split_dataset", "resume_path", "augment_image", "evaluate", "resolve_device",
           "load_resume_state", "RESUME_FORMAT"]

log = logging.getLogger(__name__)

RESUME_FORMAT = "xception-trt-resume"
_RESUME_VERSION = 1


# ---------------------------------------------------------------------------------------------
# results and callbacks


@dataclass(frozen=True)
class EpochStats:
    """What one epoch measured.

    Attributes:
        epoch: 1-based epoch number.
        train_loss: Mean training loss (with label smoothing) over the epoch.
        train_top1: Training top-1 accuracy in [0, 1] (on augmented images).
        val_loss: Validation cross-entropy (no smoothing), ``None`` without validation data.
        val_top1: Validation top-1 accuracy in [0, 1], ``None`` without validation data.
        lr: Learning rate at the end of the epoch.
        seconds: Wall time of the epoch including validation, in seconds.
        best: True when this epoch's weights were saved as the best checkpoint.
    """

    epoch: int
    train_loss: float
    train_top1: float
    val_loss: float | None
    val_top1: float | None
    lr: float
    seconds: float
    best: bool


@dataclass(frozen=True)
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        checkpoint: The best checkpoint (``.safetensors``).
        resume_state: The resume state file next to it.
        spec: ModelSpec of the trained model (labels = class folder names).
        best_epoch: Epoch whose weights are in ``checkpoint``.
        best_val_top1: Validation top-1 of those weights (``None`` without validation data).
        history: One :class:`EpochStats` per completed epoch (resumed epochs included).
        device: Where it trained (``cpu``, ``cuda:0``).
        resumed_from: Completed epochs found in the resume state (0 for a fresh run).
        seconds: Wall time of this call, in seconds.
        skipped_images: Images that could not be decoded (path, reason), left out.
    """

    checkpoint: Path
    resume_state: Path
    spec: ModelSpec
    best_epoch: int
    best_val_top1: float | None
    history: tuple[EpochStats, ...]
    device: str
    resumed_from: int
    seconds: float
    skipped_images: tuple[tuple[str, str], ...] = ()


class TrainCallbacks:
    """Progress hooks of :func:`train` (override what you need; the defaults do nothing).

    The library never prints; the CLI subclasses this to show a progress bar.
    """

    def on_train_start(self, *, epochs: int, start_epoch: int, steps_per_epoch: int,
                       train_images: int, val_images: int, device: str) -> None:
        """Called once before the first (or first resumed) epoch."""

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (1-based)."""

    def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        """Called after each optimisation step (1-based ``step`` of ``steps``)."""

    def on_validation_start(self, epoch: int, images: int) -> None:
        """Called before the validation pass of ``epoch``."""

    def on_epoch_end(self, stats: EpochStats) -> None:
        """Called after each epoch with its measurements."""


# ---------------------------------------------------------------------------------------------
# data


def split_dataset(dataset: Dataset, fraction: float, *, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split a labelled data set into (train, validation), stratified by class, deterministically.

    Every class keeps at least one training image; a class with >= 2 images gives
    ``round(n * fraction)`` (at least 1) of them to validation.

    Args:
        dataset: A labelled data set.
        fraction: Validation share in (0, 1).
        seed: Seeds the per-class shuffle.

    Returns:
        ``(train, validation)``, each in the original record order.

    Raises:
        ConfigError: ``fraction`` outside (0, 1).
        DataError: Unlabelled data, or no class has two images.
    """
    if not (0.0 < float(fraction) < 1.0):
        raise ConfigError(f"validation split must be in (0, 1), got {fraction!r}")
    if not dataset.labelled:
        raise DataError("a validation split needs labelled data (one sub-folder per class)")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, rec in enumerate(dataset.records):
        by_class.setdefault(int(rec.label), []).append(i)  # type: ignore[arg-type]
    val_idx: set[int] = set()
    for label in sorted(by_class):
        idx = by_class[label]
        if len(idx) < 2:
            continue
        k = min(len(idx) - 1, max(1, int(round(len(idx) * float(fraction)))))
        val_idx.update(idx[j] for j in rng.permutation(len(idx))[:k])
    if not val_idx:
        raise DataError(f"{dataset.root}: no class has two images; cannot split off validation "
                        "data — give a validation folder with --val")
    train = tuple(r for i, r in enumerate(dataset.records) if i not in val_idx)
    val = tuple(r for i, r in enumerate(dataset.records) if i in val_idx)
    return (Dataset(train, dataset.class_names, dataset.root),
            Dataset(val, dataset.class_names, dataset.root))


def _check_labelled(dataset: Dataset, what: str) -> None:
    if not dataset.labelled:
        raise DataError(
            f"{what} {dataset.root} is not labelled: training needs one sub-folder per class "
            "(e.g. data/cat/*.jpg, data/dog/*.jpg) or a file list with labels")
    if len(dataset.class_names) < 2:
        raise DataError(f"{what} {dataset.root} has {len(dataset.class_names)} class; training a "
                        "classifier needs at least 2 class sub-folders")


def _data_identity(dataset: Dataset) -> str:
    """SHA-256 of the relative paths, sizes and labels (stable when the folder is moved)."""
    digest = hashlib.sha256()
    root = dataset.root
    for rec in dataset.records:
        try:
            rel = rec.path.relative_to(root) if root is not None else rec.path
        except ValueError:
            rel = rec.path
        try:
            size = rec.path.stat().st_size
        except OSError:
            size = -1
        digest.update(f"{rel.as_posix()}\0{size}\0{rec.label}\n".encode())
    digest.update("\0".join(dataset.class_names).encode())
    return digest.hexdigest()


def augment_image(img: Image.Image, spec: ModelSpec, aug: AugmentConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """Random-resized-crop (+ optional flip) of a decoded image to uint8 HWC ``input_size``.

    With ``aug.enabled`` False this is exactly the evaluation preprocessing (resize + centre
    crop). The crop covers ``aug.scale`` of the image area with an aspect ratio in ``aug.ratio``
    (log-uniform), like timm's RandomResizedCrop; after 10 failed draws it falls back to the
    evaluation crop.

    Args:
        img: A decoded image already converted with :func:`~xception_trt.preprocess.to_rgb`.
        spec: Gives ``input_size`` and the resampling filter.
        aug: Augmentation settings.
        rng: Random source (one per image keeps runs repeatable with several threads).

    Returns:
        uint8 array ``(input_size, input_size, channels)``.
    """
    size = spec.input_size
    if not aug.enabled:
        out = resize_crop(img, spec)
    else:
        w, h = img.size
        box = None
        for _ in range(10):
            area = w * h * rng.uniform(aug.scale[0], aug.scale[1])
            ratio = math.exp(rng.uniform(math.log(aug.ratio[0]), math.log(aug.ratio[1])))
            cw = int(round(math.sqrt(area * ratio)))
            ch = int(round(math.sqrt(area / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                x0 = int(rng.integers(0, w - cw + 1))
                y0 = int(rng.integers(0, h - ch + 1))
                box = (x0, y0, x0 + cw, y0 + ch)
                break
        if box is None:
            out = resize_crop(img, spec)
        else:
            out = img.resize((size, size), PIL_FILTERS[spec.interpolation], box=box)
        if aug.hflip and rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(out, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


class _TrainLoader:
    """Shuffled, augmented training batches (float32 NCHW + int64 labels), decoded on threads,
    one batch prefetched. Shuffle and augmentation are seeded by (seed, epoch, image index)."""

    def __init__(self, dataset: Dataset, spec: ModelSpec, config: TrainConfig) -> None:
        self.records = dataset.records
        self.spec = spec
        self.config = config
        self.batch_size = min(config.batch_size, len(self.records))
        # Drop the last partial batch: a batch of 1 breaks BatchNorm in training mode.
        self.steps = len(self.records) // self.batch_size
        self.workers = config.workers or max(1, min(4, os.cpu_count() or 1))
        self.failures: dict[str, str] = {}

    def _load(self, epoch: int, index: int) -> np.ndarray | None:
        rec = self.records[index]
        rng = np.random.default_rng([self.config.seed, epoch, index])
        try:
            img = to_rgb(open_image(rec.path), self.spec.in_chans)
            return augment_image(img, self.spec, self.config.augment, rng)
        except DataError as exc:
            if str(rec.path) not in self.failures:
                log.warning("skipping unreadable training image: %s", exc)
            self.failures[str(rec.path)] = str(exc)
            return None

    def _batch(self, pool: ThreadPoolExecutor, epoch: int,
               indices: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        arrays = list(pool.map(lambda i: self._load(epoch, int(i)), indices))
        keep = [k for k, a in enumerate(arrays) if a is not None]
        if not keep:
            return None
        pixels = np.stack([arrays[k] for k in keep])
        labels = np.asarray([self.records[int(indices[k])].label for k in keep], dtype=np.int64)
        return normalize(pixels, self.spec), labels

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.random.default_rng([self.config.seed, epoch, 1 << 20]).permutation(
            len(self.records))
        chunks = [order[s * self.batch_size:(s + 1) * self.batch_size] for s in range(self.steps)]
        with ThreadPoolExecutor(max_workers=self.workers) as pool, \
                ThreadPoolExecutor(max_workers=1) as ahead:
            pending: Future | None = ahead.submit(self._batch, pool, epoch, chunks[0])
            for s in range(self.steps):
                batch = pending.result()  # type: ignore[union-attr]
                pending = (ahead.submit(self._batch, pool, epoch, chunks[s + 1])
                           if s + 1 < self.steps else None)
                if batch is not None:
                    yield batch


# ---------------------------------------------------------------------------------------------
# model, optimizer, schedule


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device for ``auto``/``cpu``/``cuda``/``cuda:N``.

    Raises:
        ConfigError: CUDA was asked for and torch sees no GPU.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but torch sees no CUDA GPU "
                          f"(torch {torch.__version__}); use --device cpu or auto")
    return torch.device(device)


def prepare_model(init: str | os.PathLike[str] | Xception, *, class_names: Sequence[str],
                  width: float | None = None, middle_blocks: int | None = None,
                  input_size: int | None = None, seed: int = 0,
                  spec_fields: dict[str, Any] | None = None) -> Xception:
    """The model to train: a checkpoint (or model) with a fresh classifier, or a new one.

    Args:
        init: ``"scratch"`` for random weights, a checkpoint path (ours, timm, Keras), or a
            model. The classifier is re-initialised for ``class_names`` unless it already has
            exactly these labels (then training continues from it).
        class_names: Class names in label order (the data set's class folders).
        width: Channel multiplier of a scratch model (default 1.0); with a checkpoint it must
            match the checkpoint or be omitted.
        middle_blocks: Middle-flow blocks of a scratch model (default 8); same rule as width.
        input_size: Training/deployment input size in pixels (>= 71); default 299 for scratch,
            the checkpoint's otherwise. Xception is fully convolutional, so any size works.
        seed: Seeds the random initialisation.
        spec_fields: Further ModelSpec fields (preprocessing: ``crop_pct``, ``mean`` ...).

    Returns:
        The model (eval mode) whose spec carries the class names as labels.

    Raises:
        ConfigError: Bad sizes, or width/middle_blocks that contradict the checkpoint.
        CheckpointError: The checkpoint cannot be read.
    """
    labels = tuple(str(c) for c in class_names)
    extra = dict(spec_fields or {})
    if input_size is not None:
        extra["input_size"] = input_size
    torch.manual_seed(seed)
    if isinstance(init, str) and init == "scratch":
        spec = ModelSpec(num_classes=len(labels), labels=labels,
                         width=1.0 if width is None else width,
                         middle_blocks=8 if middle_blocks is None else middle_blocks, **extra)
        return build_xception(spec=spec)
    if isinstance(init, Xception):
        model = init
    else:
        model = load_checkpoint(read_checkpoint(init), reset_classifier=True,
                                num_classes=len(labels), labels=labels)
    for name, value in (("width", width), ("middle_blocks", middle_blocks)):
        if value is not None and getattr(model.spec, name) != value:
            raise ConfigError(
                f"--{name.replace('_', '-')} {value} contradicts the initial checkpoint "
                f"({name}={getattr(model.spec, name)}); omit it when fine-tuning a checkpoint")
    if model.spec.labels == labels:
        new_spec = model.spec.replace(**extra) if extra else model.spec
    else:
        model.reset_classifier(len(labels), labels)
        new_spec = model.spec.replace(labels=labels, **extra)
    model.spec = new_spec
    return model.eval()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)  # BN weights/biases and fc.bias
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, config.resolved_weight_decay)
    if config.optimizer is Optimizer.SGD:
        return torch.optim.SGD(groups, lr=config.resolved_lr, momentum=config.momentum,
                               nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.resolved_lr)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to 0 at ``total`` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


# ---------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 64,
             device: torch.device | str = "cpu", workers: int | None = None,
             on_error: str = "skip") -> tuple[float, float, int]:
    """Cross-entropy and top-1 of ``model`` on a labelled data set with the eval preprocessing.

    Returns:
        ``(mean_loss, top1 in [0, 1], images evaluated)``.

    Raises:
        DataError: Unlabelled data, or no image could be read.
    """
    if not dataset.labelled:
        raise DataError(f"{dataset.root}: evaluation needs labelled data")
    spec: ModelSpec = model.spec  # type: ignore[assignment]
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    loader = BatchLoader(dataset, spec, batch_size=batch_size, on_error=on_error,
                         workers=workers)
    for batch in loader:
        x = torch.from_numpy(batch.data).to(device)
        y = torch.from_numpy(batch.labels).to(device)  # type: ignore[arg-type]
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        seen += int(y.numel())
    model.train(was_training)
    if seen == 0:
        raise DataError(f"{dataset.root}: none of the {len(dataset)} validation images could be "
                        "read")
    return loss_sum / seen, correct / seen, seen


# ---------------------------------------------------------------------------------------------
# resume state


def resume_path(output: str | os.PathLike[str]) -> Path:
    """The resume state file that belongs to checkpoint ``output`` (``x.safetensors`` ->
    ``x.resume.pt``)."""
    output = Path(output)
    return output.with_name(output.name[: -len(output.suffix)] + ".resume.pt"
                            if output.suffix else output.name + ".resume.pt")


def load_resume_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a resume state file safely (``weights_only=True``) and check its format.

    Raises:
        CheckpointError: Missing, unreadable or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no resume state at {path}; train without --resume to start "
                              "a new run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/foreign files
        raise CheckpointError(f"cannot read resume state {path} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it and "
                              "train without --resume") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"{path} is not an xception-trt resume state; delete it and train "
                              "without --resume")
    if state.get("version") != _RESUME_VERSION:
        raise CheckpointError(f"{path} is resume state version {state.get('version')}; this "
                              f"xception-trt reads version {_RESUME_VERSION}")
    return state


def _run_identity(spec: ModelSpec, config: TrainConfig, train_id: str, val_id: str | None,
                  init_id: str) -> str:
    cfg = config.to_dict()
    for volatile in ("workers", "device"):  # may change between a run and its resumption
        cfg.pop(volatile, None)
    blob = json.dumps({"spec": spec.to_dict(), "config": cfg, "train": train_id, "val": val_id,
                       "init": init_id}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# the training loop


def train(data: str | os.PathLike[str] | Dataset, output: str | os.PathLike[str], *,
          config: TrainConfig = TrainConfig(),
          init: str | os.PathLike[str] | Xception = "scratch",
          val: str | os.PathLike[str] | Dataset | None = None,
          val_split: float | None = None,
          width: float | None = None, middle_blocks: int | None = None,
          input_size: int | None = None, spec_fields: dict[str, Any] | None = None,
          resume: bool = False, callbacks: TrainCallbacks | None = None) -> TrainResult:
    """Train Xception on a labelled image folder and save the best checkpoint.

    Args:
        data: Labelled training images: a folder with one sub-folder per class, a labelled
            file list, or a :class:`~xception_trt.data.Dataset`.
        output: Best-checkpoint path (``.safetensors``); the resume state goes next to it.
        config: Optimiser, schedule, augmentation, batch size, epochs, seed, device.
        init: ``"scratch"``, a checkpoint path or a model (see :func:`prepare_model`).
        val: Labelled validation images with the same class folders.
        val_split: Instead of ``val``: hold out this fraction of ``data`` (stratified, seeded).
            Neither: no validation; the last epoch is saved.
        width, middle_blocks, input_size, spec_fields: Architecture / preprocessing of the
            model (see :func:`prepare_model`).
        resume: Continue from ``<output>.resume.pt`` (same data, model and settings required).
        callbacks: Progress hooks.

    Returns:
        A :class:`TrainResult` (best checkpoint, per-epoch history, device).

    Raises:
        DataError: Missing/unlabelled data, class folders of ``val`` differ from ``data``.
        ConfigError: Bad settings (input size < 71, ``val`` and ``val_split`` together, ...).
        CheckpointError: Unwritable output, unreadable ``init``, or resume state from another
            run.
    """
    t_start = time.perf_counter()
    cb = callbacks or TrainCallbacks()
    output = Path(output)
    if output.suffix != ".safetensors":
        raise ConfigError(f"output {output} must end in .safetensors")
    if val is not None and val_split is not None:
        raise ConfigError("give either a validation folder (--val) or --val-split, not both")
    train_set = open_dataset(data)
    _check_labelled(train_set, "training data")
    if val_split is not None:
        train_set, val_set = split_dataset(train_set, val_split, seed=config.seed)
    elif val is not None:
        val_set = open_dataset(val, class_names=train_set.class_names)
        _check_labelled(val_set, "validation data")
        if tuple(val_set.class_names) != tuple(train_set.class_names):
            raise DataError(
                f"validation classes {list(val_set.class_names)} differ from training classes "
                f"{list(train_set.class_names)}; both folders need the same class sub-folders")
    else:
        val_set = None
    if len(train_set) < 2:
        raise DataError(f"training needs at least 2 images, {train_set.root} has "
                        f"{len(train_set)}")

    model = prepare_model(init, class_names=train_set.class_names, width=width,
                          middle_blocks=middle_blocks, input_size=input_size, seed=config.seed,
                          spec_fields=spec_fields)
    spec = model.spec
    device = resolve_device(config.device)
    if isinstance(init, Xception):
        init_id = "model"
    elif str(init) == "scratch":
        init_id = "scratch"
    else:
        init_id = f"sha256:{sha256_file(init)}"
    run_id = _run_identity(spec, config, _data_identity(train_set),
                           _data_identity(val_set) if val_set is not None else None, init_id)

    loader = _TrainLoader(train_set, spec, config)
    steps = loader.steps
    total_steps = steps * config.epochs
    warmup = int(round(config.warmup_epochs * steps))
    model.to(device)
    optimizer = _make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, total_steps, warmup))
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    state_path = resume_path(output)
    history: list[EpochStats] = []
    start_epoch = 0
    best_epoch, best_key = 0, (-math.inf, -math.inf)
    if resume:
        state = load_resume_state(state_path)
        if state.get("run_id") != run_id:
            raise CheckpointError(
                f"resume state {state_path} belongs to another run (different data, model or "
                "settings); use the same arguments as the first run, or train without --resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"])
        best_epoch = int(state["best_epoch"])
        best_key = (float(state["best_top1"]), float(state["best_neg_loss"]))
        history = [EpochStats(**h) for h in json.loads(state["history"])]
        if best_epoch and not output.is_file():
            raise CheckpointError(f"resume state says epoch {best_epoch} was saved to {output}, "
                                  "but that file is gone; train without --resume")
        log.info("resuming %s after epoch %d of %d", output, start_epoch, config.epochs)

    cb.on_train_start(epochs=config.epochs, start_epoch=start_epoch, steps_per_epoch=steps,
                      train_images=len(train_set),
                      val_images=len(val_set) if val_set is not None else 0,
                      device=str(device))
    for epoch in range(start_epoch + 1, config.epochs + 1):
        t_epoch = time.perf_counter()
        cb.on_epoch_start(epoch, config.epochs)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for step, (xb, yb) in enumerate(loader.epoch(epoch), start=1):
            x = torch.from_numpy(xb).to(device, non_blocking=True)
            y = torch.from_numpy(yb).to(device, non_blocking=True)
            logits = model(x)
            loss = criterion(logits, y)
            if not torch.isfinite(loss):
                raise ConfigError(f"training diverged at epoch {epoch}, step {step} (loss "
                                  f"{float(loss)}); lower the learning rate (now "
                                  f"{config.resolved_lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            n = int(y.numel())
            loss_sum += float(loss.detach()) * n
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += n
            cb.on_step(epoch, step, steps, float(loss.detach()))
        if seen == 0:
            raise DataError(f"no training image of {train_set.root} could be read")
        val_loss = val_top1 = None
        if val_set is not None:
            cb.on_validation_start(epoch, len(val_set))
            val_loss, val_top1, _ = evaluate(model, val_set, batch_size=max(config.batch_size, 64),
                                             device=device, workers=config.workers)
            key = (val_top1, -val_loss)
        else:
            key = (float(epoch), 0.0)  # no validation: the latest epoch is the best
        is_best = key > best_key
        if is_best:
            best_key, best_epoch = key, epoch
            meta = {"training": json.dumps({
                "epoch": epoch, "epochs": config.epochs, "val_top1": val_top1,
                "val_loss": val_loss, "train_images": len(train_set),
                "val_images": len(val_set) if val_set is not None else 0,
                "config": config.to_dict(), "init": init_id}, sort_keys=True)}
            model.eval()
            save_checkpoint(model, output, metadata=meta)
        stats = EpochStats(epoch=epoch, train_loss=loss_sum / seen, train_top1=correct / seen,
                           val_loss=val_loss, val_top1=val_top1,
                           lr=float(optimizer.param_groups[0]["lr"]),
                           seconds=time.perf_counter() - t_epoch, best=is_best)
        history.append(stats)
        _save_resume_state(state_path, model, optimizer, scheduler, epoch=epoch, run_id=run_id,
                           best_epoch=best_epoch, best_key=best_key, history=history, spec=spec)
        log.info("epoch %d/%d: train loss %.4f top1 %.4f, val top1 %s", epoch, config.epochs,
                 stats.train_loss, stats.train_top1,
                 "n/a" if val_top1 is None else f"{val_top1:.4f}")
        cb.on_epoch_end(stats)
    model.eval()
    best_stats = next((h for h in history if h.epoch == best_epoch), None)
    return TrainResult(
        checkpoint=output, resume_state=state_path, spec=spec, best_epoch=best_epoch,
        best_val_top1=best_stats.val_top1 if best_stats else None, history=tuple(history),
        device=str(device), resumed_from=start_epoch, seconds=time.perf_counter() - t_start,
        skipped_images=tuple(sorted(loader.failures.items())))


def _save_resume_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: Any, *, epoch: int, run_id: str, best_epoch: int,
                       best_key: tuple[float, float], history: list[EpochStats],
                       spec: ModelSpec) -> None:
    state = {
        "format": RESUME_FORMAT, "version": _RESUME_VERSION, "run_id": run_id, "epoch": epoch,
        "best_epoch": best_epoch, "best_top1": float(best_key[0]),
        "best_neg_loss": float(best_key[1]), "spec": spec.to_json(),
        "history": json.dumps([asdict(h) for h in history]),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": _to_cpu(optimizer.state_dict()),
        "scheduler": scheduler.state_dict(),
    }
    # Serialized in memory, written by Python: on a full disk torch's own file writer fails
    # with an unrelated "unexpected pos" RuntimeError; a Python write raises ENOSPC, which
    # atomic_path reports as such.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path, error=CheckpointError) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
