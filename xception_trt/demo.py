"""The built-in demo: scikit-learn's handwritten digits through the whole SDK pipeline.

Data set: the UCI "Optical Recognition of Handwritten Digits" test set as shipped inside the
scikit-learn wheel (``sklearn/datasets/data/digits.csv.gz``: 1,797 8x8 grey images, 10 classes,
pixel values 0-16). Nothing is downloaded. It is materialised as ordinary labelled image folders
(``train/``, ``calibration/``, ``validation/``, one PNG per image in class sub-folders), so the
demo reads it with exactly the data code a user's own folders go through.

Pipeline (:func:`run_demo`), each step recorded as ran / cached / skipped / failed with the
reason: data -> train (a narrow Xception, cached by data + settings) -> export + graph cleanup
-> FP16 -> INT8 (calibrated Q/DQ, calibration cache) -> engines (whichever TensorRT flavour
imports; TensorRT-RTX builds on a CPU for explicit targets) -> evaluate (accuracy of every
variant that can run here: torch + ONNX Runtime on the CPU, TensorRT on a GPU that can run
it) -> latency -> report (JSON / Markdown / PNG). Nothing is faked: a step that cannot run
here is reported as skipped with the reason, a step that fails as failed with the error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from . import __version__
from .config import AugmentConfig, ModelSpec, TrainConfig
from .data import Dataset, scan_folder
from .errors import CheckpointError, ConfigError, DataError, DependencyError, XceptionTRTError
from .fsio import atomic_write_json, atomic_write_text, check_writable_dir, sha256_file
from .train import TrainCallbacks, load_resume_state, resume_path, train

__all__ = ["DIGITS_SPLITS", "STEP_NAMES", "DemoData", "DemoConfig", "DemoResult", "StepResult",
           "DemoCallbacks", "default_train_config", "load_digits_arrays", "materialise_digits",
           "run_demo"]

log = logging.getLogger(__name__)

#: The folders the digits are split into, in this order.
DIGITS_SPLITS = ("train", "calibration", "validation")
_MANIFEST = "manifest.json"
_DATA_VERSION = 1


@dataclass(frozen=True)
class DemoData:
    """The materialised demo data set.

    Attributes:
        root: Folder holding ``train/``, ``calibration/``, ``validation/`` and the manifest.
        train, calibration, validation: The three labelled splits (disjoint).
        class_names: ``"0"`` ... ``"9"``.
        fingerprint: SHA-256 of every image's bytes and label, in split order (content key for
            caches: the same data on any machine gives the same fingerprint).
        created: True when this call wrote the folders, False when it reused them.
    """

    root: Path
    train: Path
    calibration: Path
    validation: Path
    class_names: tuple[str, ...]
    fingerprint: str
    created: bool

    def dataset(self, split: str) -> Dataset:
        """One split as a :class:`~xception_trt.data.Dataset`."""
        if split not in DIGITS_SPLITS:
            raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(DIGITS_SPLITS)}")
        return scan_folder(self.root / split)


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as uint8 images ``(N, 8, 8)`` (ink bright, 0-255) and int labels.

    Raises:
        DependencyError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DependencyError("scikit-learn", "demo", "the built-in demo data set") from None
    bunch = load_digits()
    # 0..16 counts of set pixels in 4x4 cells -> 0..255 grey levels, exactly reversible.
    images = np.round(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0))
    return images.astype(np.uint8), np.asarray(bunch.target, dtype=np.int64)


def _split_indices(labels: np.ndarray, *, val_fraction: float, calib_fraction: float,
                   seed: int) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {name: [] for name in DIGITS_SPLITS}
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(len(idx) * val_fraction))
        n_cal = int(round(len(idx) * calib_fraction))
        out["validation"].extend(int(i) for i in idx[:n_val])
        out["calibration"].extend(int(i) for i in idx[n_val:n_val + n_cal])
        out["train"].extend(int(i) for i in idx[n_val + n_cal:])
    return {k: sorted(v) for k, v in out.items()}


def materialise_digits(root: str | os.PathLike[str], *, val_fraction: float = 0.3,
                       calib_fraction: float = 0.1, seed: int = 0,
                       force: bool = False) -> DemoData:
    """Write the digits as labelled PNG folders ``train/``, ``calibration/``, ``validation/``.

    The split is stratified by class and seeded, so every machine gets the same folders (and
    byte-identical PNGs). The folders are written into a temporary directory and renamed into
    place, then a manifest is written; a complete folder with a matching manifest is reused.

    Args:
        root: Destination folder (created).
        val_fraction: Share of each class held out for validation.
        calib_fraction: Share of each class for INT8 calibration (disjoint from validation).
        seed: Seeds the split.
        force: Rewrite even when a matching copy exists.

    Returns:
        The :class:`DemoData`.

    Raises:
        ConfigError: Fractions outside (0, 1) or adding up to >= 1.
        DataError: ``root`` exists and is not a folder.
        DependencyError: scikit-learn is missing.
    """
    if not (0 < val_fraction < 1 and 0 < calib_fraction < 1 and val_fraction + calib_fraction < 1):
        raise ConfigError(f"val_fraction ({val_fraction}) and calib_fraction ({calib_fraction}) "
                          "must be in (0, 1) and add up to less than 1")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"demo data location {root} exists and is not a folder")
    settings = {"data_version": _DATA_VERSION, "source": "sklearn.datasets.load_digits",
                "val_fraction": val_fraction, "calib_fraction": calib_fraction, "seed": seed}
    manifest_path = root / _MANIFEST
    if not force and manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError):
            manifest = {}
        if manifest.get("settings") == settings and all(
                (root / s).is_dir() for s in DIGITS_SPLITS):
            log.info("reusing demo data in %s", root)
            return _demo_data(root, manifest, created=False)

    images, labels = load_digits_arrays()
    splits = _split_indices(labels, val_fraction=val_fraction, calib_fraction=calib_fraction,
                            seed=seed)
    class_names = tuple(str(c) for c in range(int(labels.max()) + 1))
    root.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # from here on the copy is incomplete
    digest = hashlib.sha256()
    counts: dict[str, int] = {}
    for split in DIGITS_SPLITS:
        tmp = Path(tempfile.mkdtemp(prefix=f".{split}.", dir=root))
        try:
            for name in class_names:
                (tmp / name).mkdir()
            for i in splits[split]:
                rel = f"{labels[i]}/digit_{i:04d}.png"
                Image.fromarray(images[i]).save(tmp / rel, optimize=False)
                digest.update(f"{split}/{rel}\0".encode() + images[i].tobytes())
            final = root / split
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        counts[split] = len(splits[split])
    manifest = {"settings": settings, "class_names": list(class_names), "counts": counts,
                "fingerprint": digest.hexdigest(),
                "description": "UCI optical recognition of handwritten digits (test set, 1,797 "
                               "8x8 images) as shipped by scikit-learn; 0-16 pixel counts scaled "
                               "to 0-255 grey PNG"}
    atomic_write_json(manifest_path, manifest, error=DataError)
    log.info("wrote demo data to %s: %s", root, counts)
    return _demo_data(root, manifest, created=True)


def _demo_data(root: Path, manifest: dict, *, created: bool) -> DemoData:
    return DemoData(root=root, train=root / "train", calibration=root / "calibration",
                    validation=root / "validation",
                    class_names=tuple(manifest["class_names"]),
                    fingerprint=str(manifest["fingerprint"]), created=created)


# ---------------------------------------------------------------------------------------------
# the pipeline

#: The demo's steps, in order.
STEP_NAMES = ("data", "train", "export", "fp16", "int8", "engines", "evaluate", "latency",
              "report")
#: Preprocessing of the demo model: the 8x8 digits are upscaled whole (no centre crop).
DEMO_SPEC_FIELDS: dict[str, Any] = {"crop_pct": 1.0, "interpolation": "bicubic"}
_CALIBRATION_METHODS = ("auto", "entropy", "max", "percentile")
#: The report's name: it is written to ``<workdir>/demo-report/`` (replaced on every run).
REPORT_NAME = "demo-report"


def default_train_config() -> TrainConfig:
    """The demo's training settings: 8 epochs of SGD (Nesterov, lr 0.05, cosine), batch 32,
    random-resized-crop over 60-100 % of the digit, no flips (a flipped digit is another
    digit or none)."""
    return TrainConfig(epochs=8, batch_size=32, optimizer="sgd", lr=0.05, warmup_epochs=1.0,
                       label_smoothing=0.1, seed=0,
                       augment=AugmentConfig(scale=(0.6, 1.0), ratio=(0.8, 1.25), hflip=False))


@dataclass(frozen=True)
class DemoConfig:
    """Settings of :func:`run_demo` (the defaults are the README's demo).

    Attributes:
        width, middle_blocks, input_size: The Xception trained (narrow, 2 middle blocks, 71 px:
            the paper's architecture scaled down so the whole demo fits a 2-core CPU).
        train: Training settings (:func:`default_train_config`).
        val_fraction, calib_fraction, data_seed: The digits split (see
            :func:`materialise_digits`).
        max_train_images, max_val_images: Use a seeded subset (``None``: all; for quick tests).
        calibration_method: ``entropy``, ``max``, ``percentile`` or ``auto`` (each method,
            keep the best on calibration images held out from calibration).
        calibration_images: INT8 calibration images (at most the calibration split's size).
        max_batch: Largest batch of the engines' optimisation profile.
        rtx_targets: TensorRT-RTX compute-capability targets when engines are built on a CPU.
        bench_batch_sizes, bench_iterations, bench_warmup: The latency sweep.
        skip: Step names not to run (reported as skipped by configuration).
    """

    width: float = 0.25
    middle_blocks: int = 2
    input_size: int = 71
    train: TrainConfig = field(default_factory=default_train_config)
    val_fraction: float = 0.3
    calib_fraction: float = 0.1
    data_seed: int = 0
    max_train_images: int | None = None
    max_val_images: int | None = None
    calibration_method: str = "entropy"
    calibration_images: int = 512
    max_batch: int = 8
    rtx_targets: tuple[str, ...] = ("SM86",)
    bench_batch_sizes: tuple[int, ...] = (1, 8)
    bench_iterations: int = 30
    bench_warmup: int = 3
    skip: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        ModelSpec(num_classes=10, width=self.width, middle_blocks=self.middle_blocks,
                  input_size=self.input_size, **DEMO_SPEC_FIELDS)  # validates the sizes
        if not isinstance(self.train, TrainConfig):
            raise ConfigError("DemoConfig.train must be a TrainConfig")
        if self.calibration_method not in _CALIBRATION_METHODS:
            raise ConfigError(f"unknown calibration method {self.calibration_method!r}; choose "
                              f"one of: {', '.join(_CALIBRATION_METHODS)}")
        for name in ("max_train_images", "max_val_images"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 2):
                raise ConfigError(f"{name} must be an integer >= 2 or None, got {value!r}")
        for name in ("calibration_images", "max_batch", "bench_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        object.__setattr__(self, "skip", frozenset(self.skip))
        unknown = sorted(self.skip - set(STEP_NAMES))
        if unknown:
            raise ConfigError(f"unknown demo step(s) {unknown}; steps are: "
                              f"{', '.join(STEP_NAMES)}")
        object.__setattr__(self, "rtx_targets", tuple(self.rtx_targets))
        object.__setattr__(self, "bench_batch_sizes", tuple(self.bench_batch_sizes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["train"] = self.train.to_dict()
        out["skip"] = sorted(self.skip)
        out["rtx_targets"] = list(self.rtx_targets)
        out["bench_batch_sizes"] = list(self.bench_batch_sizes)
        return out


@dataclass(frozen=True)
class StepResult:
    """What one demo step did.

    Attributes:
        name: One of :data:`STEP_NAMES`.
        status: ``ran``, ``cached`` (reused a previous run's output), ``skipped`` or
            ``failed``.
        seconds: Wall time of the step, in seconds.
        detail: What it produced, why it was skipped, or the error.
        artifacts: Files it produced or reused (name -> path).
    """

    name: str
    status: str
    seconds: float
    detail: str
    artifacts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 2),
                "detail": self.detail, "artifacts": dict(self.artifacts)}

    def line(self) -> str:
        """One human-readable line."""
        return f"{self.name}: {self.status} ({self.seconds:.1f} s) - {self.detail}"


@dataclass(frozen=True)
class DemoResult:
    """Outcome of :func:`run_demo`.

    Attributes:
        workdir: Where everything was written.
        steps: One :class:`StepResult` per step, in order.
        accuracy: Validation top-1 in percent per evaluated runner (e.g. ``onnxruntime-int8``).
        report_dir: The report folder (``report.md``, ``report.json``, PNGs), if written.
        summary: ``demo.json`` (steps, accuracy, settings).
        seconds: Wall time of the whole demo, in seconds.
    """

    workdir: Path
    steps: tuple[StepResult, ...]
    accuracy: dict[str, float]
    report_dir: Path | None
    summary: Path
    seconds: float

    @property
    def ok(self) -> bool:
        """True when no step failed."""
        return all(s.status != "failed" for s in self.steps)

    def step(self, name: str) -> StepResult:
        """The result of step ``name``."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)


class DemoCallbacks(TrainCallbacks):
    """Progress hooks of :func:`run_demo` (the training hooks of :class:`TrainCallbacks` plus
    one per step). The defaults do nothing."""

    def on_step_start(self, name: str, index: int, total: int) -> None:
        """Called before step ``index`` (1-based) of ``total`` runs."""

    def on_step_end(self, result: StepResult) -> None:
        """Called after every step, including skipped ones."""


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".key")


def _reusable(path: Path, key: str) -> bool:
    """True when ``path`` exists and was made with ``key`` (its marker file says so)."""
    try:
        return path.is_file() and _marker(path).read_text("utf-8").strip() == key
    except OSError:
        return False


def _mark(path: Path, key: str) -> None:
    atomic_write_text(_marker(path), key + "\n")


class _Demo:
    """The pipeline's state: what each step produced, for the steps after it."""

    def __init__(self, workdir: Path, config: DemoConfig, force: bool,
                 callbacks: DemoCallbacks) -> None:
        self.work = workdir
        self.config = config
        self.force = force
        self.cb = callbacks
        self.steps: list[StepResult] = []
        self.data: DemoData | None = None
        self.checkpoint: Path | None = None
        self.onnx: dict[str, Path] = {}
        self.engines: dict[str, Path] = {}
        self.engines_runnable = False
        self.engine_run_reason = ""
        self.evaluation: Any = None
        self.benchmarks: list[Any] = []
        self.accuracy: dict[str, float] = {}
        self.report_dir: Path | None = None
        self._runners: list[tuple[str, Any]] | None = None
        self._runner_errors: list[str] = []

    # -- step driver -------------------------------------------------------------------------
    def status(self, name: str) -> str | None:
        return next((s.status for s in self.steps if s.name == name), None)

    def run(self, name: str, fn: Callable[[], tuple[str, str, dict[str, str]]],
            needs: Sequence[str] = ()) -> StepResult:
        index = STEP_NAMES.index(name) + 1
        t0 = time.perf_counter()
        if name in self.config.skip:
            result = StepResult(name, "skipped", 0.0, "skipped by configuration")
        else:
            blocked = [(n, self.status(n)) for n in needs
                       if self.status(n) not in ("ran", "cached")]
            if blocked:
                dep, st = blocked[0]
                result = StepResult(name, "skipped", 0.0,
                                    f"needs the {dep} step, which was {st or 'not run'}")
            else:
                self.cb.on_step_start(name, index, len(STEP_NAMES))
                try:
                    status, detail, artifacts = fn()
                except XceptionTRTError as exc:
                    log.warning("demo step %s failed: %s", name, exc)
                    status, detail, artifacts = "failed", f"{type(exc).__name__}: {exc}", {}
                except ImportError as exc:
                    # A stage whose module or optional dependency is missing from this
                    # installation: say so instead of crashing the whole demo.
                    log.warning("demo step %s cannot run: %s", name, exc)
                    status, detail, artifacts = ("skipped", "this installation cannot import "
                                                 f"what the step needs ({exc})", {})
                result = StepResult(name, status, time.perf_counter() - t0, detail, artifacts)
        self.steps.append(result)
        self.cb.on_step_end(result)
        return result

    # -- steps ---------------------------------------------------------------------------------
    def step_data(self) -> tuple[str, str, dict[str, str]]:
        c = self.config
        d = materialise_digits(self.work / "data", val_fraction=c.val_fraction,
                               calib_fraction=c.calib_fraction, seed=c.data_seed,
                               force=self.force)
        self.data = d
        counts = {s: len(d.dataset(s)) for s in DIGITS_SPLITS}
        detail = (f"scikit-learn digits, {len(d.class_names)} classes: {counts['train']} train / "
                  f"{counts['calibration']} calibration / {counts['validation']} validation "
                  f"images (8x8 grey PNG) in {d.root}")
        return ("ran" if d.created else "cached", detail,
                {s: str(d.root / s) for s in DIGITS_SPLITS})

    def _splits(self) -> tuple[Dataset, Dataset]:
        assert self.data is not None
        c = self.config
        return (self.data.dataset("train").select(c.max_train_images, seed=c.data_seed),
                self.data.dataset("validation").select(c.max_val_images, seed=c.data_seed))

    def step_train(self) -> tuple[str, str, dict[str, str]]:
        assert self.data is not None
        c = self.config
        train_ds, val_ds = self._splits()
        train_cfg = c.train.to_dict()
        for volatile in ("workers", "device"):
            train_cfg.pop(volatile, None)
        key = _key({"data": self.data.fingerprint, "max_train": c.max_train_images,
                    "max_val": c.max_val_images, "width": c.width,
                    "middle_blocks": c.middle_blocks, "input_size": c.input_size,
                    "spec": DEMO_SPEC_FIELDS, "train": train_cfg, "checkpoint_format": 1})
        ckpt = self.work / "models" / f"digits-{key[:12]}.safetensors"
        state_path = resume_path(ckpt)
        resume = False
        if not self.force and ckpt.is_file() and state_path.is_file():
            try:
                state = load_resume_state(state_path)
            except CheckpointError as exc:
                log.warning("ignoring the demo's training state: %s", exc)
            else:
                if int(state["epoch"]) >= c.train.epochs:
                    self.checkpoint = ckpt
                    history = json.loads(state["history"])
                    best = next((h for h in history if h["epoch"] == int(state["best_epoch"])),
                                None)
                    top1 = (f", validation top-1 {best['val_top1']:.2%} at epoch {best['epoch']}"
                            if best and best["val_top1"] is not None else "")
                    return ("cached", f"reused {ckpt.name} ({c.train.epochs} epochs{top1})",
                            {"checkpoint": str(ckpt)})
                resume = True
        try:
            result = train(train_ds, ckpt, config=c.train, val=val_ds, width=c.width,
                           middle_blocks=c.middle_blocks, input_size=c.input_size,
                           spec_fields=DEMO_SPEC_FIELDS, resume=resume, callbacks=self.cb)
        except CheckpointError as exc:
            if not resume:
                raise
            log.warning("cannot resume (%s); training from the start", exc)
            result = train(train_ds, ckpt, config=c.train, val=val_ds, width=c.width,
                           middle_blocks=c.middle_blocks, input_size=c.input_size,
                           spec_fields=DEMO_SPEC_FIELDS, resume=False, callbacks=self.cb)
        self.checkpoint = result.checkpoint
        top1 = ("" if result.best_val_top1 is None
                else f", best validation top-1 {result.best_val_top1:.2%} at epoch "
                     f"{result.best_epoch}")
        resumed = f", resumed after epoch {result.resumed_from}" if result.resumed_from else ""
        detail = (f"Xception width {c.width:g}, {c.middle_blocks} middle blocks, "
                  f"{c.input_size}x{c.input_size}: {c.train.epochs} epochs on {result.device} "
                  f"({len(train_ds)} images){resumed}{top1}")
        return "ran", detail, {"checkpoint": str(ckpt), "resume_state": str(state_path)}

    def _artifacts(self) -> Path:
        assert self.checkpoint is not None
        return self.work / "artifacts" / sha256_file(self.checkpoint)[:12]

    def step_export(self) -> tuple[str, str, dict[str, str]]:
        from .export import DEFAULT_OPSET, export_onnx

        assert self.checkpoint is not None
        out = self._artifacts() / "fp32.onnx"
        key = _key({"checkpoint": sha256_file(self.checkpoint), "opset": DEFAULT_OPSET,
                    "batch": "dynamic", "clean": True, "version": __version__})
        if not self.force and _reusable(out, key):
            self.onnx["fp32"] = out
            return "cached", f"reused {out}", {"fp32": str(out)}
        res = export_onnx(self.checkpoint, out)
        _mark(out, key)
        self.onnx["fp32"] = out
        rep = res.report
        parity = f"; {res.parity.summary()}" if res.parity is not None else ""
        detail = (f"opset {res.opset}, dynamic batch, {res.exporter} exporter; cleanup "
                  f"{rep.before.num_nodes} -> {rep.after.num_nodes} nodes, "
                  f"{(rep.file_size or 0) / 2**20:.2f} MiB{parity}")
        return "ran", detail, {"fp32": str(out)}

    def step_fp16(self) -> tuple[str, str, dict[str, str]]:
        from .onnx_meta import read_metadata
        from .precision import to_fp16

        assert self.data is not None
        src = self.onnx["fp32"]
        out = src.with_name("fp16.onnx")
        key = _key({"fp32": sha256_file(src), "data": self.data.fingerprint,
                    "version": __version__})
        status = "cached"
        if self.force or not _reusable(out, key):
            to_fp16(src, self.data.calibration, output=out)
            _mark(out, key)
            status = "ran"
        self.onnx["fp16"] = out
        kept = (read_metadata(out).json_field("fp16") or {}).get("fp32_nodes", [])
        return status, (f"ModelOpt AutoCast: FP16 weights and activations, FP32 I/O, "
                        f"{len(kept)} node(s) kept in FP32 ({out.stat().st_size / 2**20:.2f} "
                        "MiB)"), {"fp16": str(out)}

    def step_int8(self) -> tuple[str, str, dict[str, str]]:
        from .onnx_meta import read_metadata
        from .precision import auto_quantize_int8, quantize_int8

        assert self.data is not None
        c = self.config
        src = self.onnx["fp32"]
        out = src.with_name("int8.onnx")
        key = _key({"fp32": sha256_file(src), "data": self.data.fingerprint,
                    "method": c.calibration_method, "images": c.calibration_images,
                    "version": __version__})
        cache_dir = self.work / "calibration-cache"
        # at most the calibration split (asking the calibrator for more only logs a warning)
        num_images = min(c.calibration_images, len(self.data.dataset("calibration")))
        if not self.force and _reusable(out, key):
            self.onnx["int8"] = out
            calib = read_metadata(out).json_field("calibration") or {}
            method = calib.get("method", c.calibration_method)
            return "cached", (f"reused the calibrated INT8 graph {out.name} "
                              f"(method {method})"), {"int8": str(out)}
        if c.calibration_method == "auto":
            auto = auto_quantize_int8(src, self.data.calibration, None,
                                      num_images=num_images, cache_dir=cache_dir, output=out)
            q = auto.best
            tried = ", ".join(f"{r.name} {r.top1:.2f}%" for r in auto.metrics
                              if r.top1 is not None)
            how = f"auto: tried {tried} on held-out calibration images, kept {q.method.value}"
        else:
            q = quantize_int8(src, self.data.calibration, method=c.calibration_method,
                              num_images=num_images, cache_dir=cache_dir, output=out)
            how = f"method {q.method.value}"
        _mark(out, key)
        self.onnx["int8"] = out
        cache = {"hit": "calibration cache hit", "miss": "calibrated, cache written",
                 "off": "no cache", "imported": "imported cache"}.get(q.cache, q.cache)
        detail = (f"ModelOpt PTQ Q/DQ, {how}: {len(q.quantized_nodes)} node(s) INT8, "
                  f"{len(q.excluded_nodes)} kept in high precision, {q.num_images} calibration "
                  f"images ({cache})")
        return "ran", detail, {"int8": str(out),
                               **({"cache": str(q.cache_path)} if q.cache_path else {})}

    def step_engines(self) -> tuple[str, str, dict[str, str]]:
        from .config import BuildConfig
        from .selftest import missing_requirements
        from .trt import available_flavours
        from .trt.builder import build_engine

        flavours = {f.name: f for f in available_flavours()}
        if not flavours:
            return "skipped", ("no TensorRT flavour imports here; install TensorRT-RTX "
                               "(pip install 'xception-trt[rtx]') to build RTX engines on any "
                               "machine, or NVIDIA TensorRT on a GPU machine"), {}
        req = missing_requirements()
        if req.flavour is not None:
            backend = req.flavour
            targets: tuple[str, ...] = ("CURRENT",) if backend == "tensorrt_rtx" else ()
            self.engines_runnable = True
            where = f"for this GPU ({', '.join(req.gpus)})"
        elif "tensorrt_rtx" in flavours:
            backend, targets = "tensorrt_rtx", self.config.rtx_targets
            self.engine_run_reason = "; ".join(req.missing_engine) or "no GPU can run them here"
            where = f"on the CPU for {', '.join(targets) or 'the default RTX targets'}"
        else:
            return "skipped", ("NVIDIA TensorRT is installed but builds only on the GPU that "
                               "runs the engine, and none is usable here: "
                               + "; ".join(req.missing_engine)), {}
        flavour = flavours[backend]
        out_dir = self._artifacts() / "engines" / f"{backend}-{'-'.join(targets) or 'gpu'}"
        built, failed, hits, artifacts = [], [], 0, {}
        for prec, onnx_path in self.onnx.items():
            cfg = BuildConfig(backend=backend, max_batch=self.config.max_batch,
                              compute_capabilities=targets)
            try:
                art = build_engine(onnx_path, cfg, engine_path=out_dir / f"{prec}.engine",
                                   force=self.force)
            except XceptionTRTError as exc:
                failed.append(f"{prec}: {exc}")
                continue
            hits += art.cache_hit
            self.engines[prec] = art.path
            artifacts[prec] = str(art.path)
            built.append(f"{prec} {art.size_bytes / 2**20:.1f} MiB"
                         + (" (cached)" if art.cache_hit else f" ({art.seconds:.1f} s)"))
        run_note = ("; the engines run in the evaluation below" if self.engines_runnable
                    else f"; not run here: {self.engine_run_reason}")
        detail = (f"{flavour.name} {flavour.version} {where}: "
                  + (", ".join(built) if built else "nothing built") + run_note
                  + ("" if not failed else "; FAILED: " + " | ".join(failed)))
        if failed:
            return "failed", detail, artifacts
        return ("cached" if built and hits == len(built) else "ran"), detail, artifacts

    def runners(self) -> list[tuple[str, Any]]:
        """Open (once) every runner that can run here: torch, ONNX Runtime, TensorRT."""
        if self._runners is not None:
            return self._runners
        from .runners import OnnxRuntimeRunner, TorchRunner, open_runner

        assert self.checkpoint is not None
        runners: list[tuple[str, Any]] = []
        runners.append(("torch-fp32", TorchRunner(self.checkpoint, name="torch-fp32")))
        for prec, path in self.onnx.items():
            name = f"onnxruntime-{prec}"
            try:
                runners.append((name, OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"],
                                                        name=name)))
            except XceptionTRTError as exc:
                self._runner_errors.append(f"{name}: {exc}")
        if self.engines_runnable:
            for prec, path in self.engines.items():
                name = f"tensorrt-{prec}"
                try:
                    runners.append((name, open_runner(path)))
                except XceptionTRTError as exc:
                    self._runner_errors.append(f"{name}: {exc}")
        self._runners = runners
        return runners

    def close(self) -> None:
        for _, r in self._runners or []:
            try:
                r.close()
            except Exception as exc:  # noqa: BLE001 - closing must not hide the results
                log.warning("closing %s failed: %s", getattr(r, "name", r), exc)

    def step_evaluate(self) -> tuple[str, str, dict[str, str]]:
        from .bench import evaluate

        _, val_ds = self._splits()
        runners = self.runners()
        names = [n for n, _ in runners]
        ev = evaluate([r for _, r in runners], val_ds, names=names, reference=0)
        self.evaluation = ev
        parts = []
        for r in ev.runners:
            if r.accuracy is not None:
                self.accuracy[r.name] = round(r.accuracy.top1 * 100, 2)
                parts.append(f"{r.name} {r.accuracy.top1:.2%}")
            if r.error:
                parts.append(f"{r.name} stopped: {r.error}")
        fp32 = self.accuracy.get("onnxruntime-fp32", self.accuracy.get("torch-fp32"))
        drops = [f"{n.split('-', 1)[1]} {fp32 - a:.2f} points"
                 for n, a in self.accuracy.items()
                 if fp32 is not None and n.startswith("onnxruntime-")
                 and not n.endswith("fp32")]
        detail = (f"validation top-1 on {len(val_ds)} images: " + ", ".join(parts)
                  + (f"; drop vs FP32: {', '.join(drops)}" if drops else ""))
        if not self.engines_runnable and self.engines:
            detail += "; TensorRT engines not evaluated (they cannot run here, see engines)"
        if self._runner_errors:
            detail += "; could not open: " + " | ".join(self._runner_errors)
        failed = bool(self._runner_errors) or any(r.error for r in ev.runners)
        return ("failed" if failed else "ran"), detail, {}

    def step_latency(self) -> tuple[str, str, dict[str, str]]:
        from .bench import BenchConfig, benchmark_runner, load_pixels

        c = self.config
        cfg = BenchConfig(batch_sizes=c.bench_batch_sizes, iterations=c.bench_iterations,
                          warmup=c.bench_warmup)
        _, val_ds = self._splits()
        pixels = None
        parts, failed = [], False
        for name, runner in self.runners():
            if pixels is None:
                pixels = load_pixels(val_ds, runner.spec, limit=max(c.bench_batch_sizes))
            b = benchmark_runner(runner, cfg, name=name, pixels=pixels)
            self.benchmarks.append(b)
            first = b.latency[0] if b.latency else None
            if first is not None and first.end_to_end is not None:
                parts.append(f"{name} {first.end_to_end.median_ms:.2f} ms")
            if b.error:
                failed = True
                parts.append(f"{name} failed: {b.error}")
        detail = (f"median latency at batch {c.bench_batch_sizes[0]} "
                  f"({c.bench_iterations} iterations): " + ", ".join(parts))
        return ("failed" if failed else "ran"), detail, {}

    def step_report(self) -> tuple[str, str, dict[str, str]]:
        from .report import build_report, write_report

        if self.evaluation is None and not self.benchmarks:
            return "skipped", "nothing was measured (evaluate and latency did not run)", {}
        notes = ["Built-in demo: an Xception trained briefly on scikit-learn's handwritten "
                 "digits (8x8 images upscaled), deployed through every stage of xception-trt."]
        notes += [f"step {s.line()}" for s in self.steps]
        c = self.config
        config = {"model": f"Xception width {c.width:g}, {c.middle_blocks} middle blocks, "
                           f"{c.input_size}x{c.input_size}, 10 classes",
                  "training": f"{c.train.epochs} epochs {c.train.optimizer.value} lr "
                              f"{c.train.resolved_lr:g}, batch {c.train.batch_size}",
                  "int8 calibration": f"{c.calibration_method}, up to "
                                      f"{c.calibration_images} images",
                  "checkpoint": str(self.checkpoint),
                  "engines": ", ".join(sorted(self.engines)) or "none",
                  "full settings": str(self.work / "demo.json")}
        doc = build_report(REPORT_NAME, kind="eval", benchmarks=self.benchmarks,
                           evaluation=self.evaluation, config=config, notes=notes,
                           command="xception-trt demo")
        files = write_report(doc, self.work, force=True)
        self.report_dir = files.directory
        return "ran", f"{files.markdown} (+ report.json, {len(files.plots)} PNG plot(s))", {
            "markdown": str(files.markdown), "json": str(files.json),
            **{p.stem: str(p) for p in files.plots}}


def run_demo(workdir: str | os.PathLike[str], *, config: DemoConfig | None = None,
             force: bool = False, callbacks: DemoCallbacks | None = None) -> DemoResult:
    """Run the whole pipeline on the digits and write a report (see the module docstring).

    Every step records whether it ran, reused a cached result, was skipped (and why) or failed
    (and the error); a failed step does not stop the independent steps after it. Re-running
    with the same ``workdir`` reuses the data, checkpoint, ONNX variants, calibration and
    engines; evaluation and latency are measured again.

    Args:
        workdir: Folder for the data, checkpoint, ONNX files, engines, caches, the report
            (``demo-report/``, replaced on every run) and the summary ``demo.json``.
        config: Settings (default: the README demo).
        force: Ignore every cache: rewrite the data, retrain, re-export, recalibrate, rebuild.
        callbacks: Progress hooks.

    Returns:
        A :class:`DemoResult`.

    Raises:
        ConfigError: Bad settings.
        DataError / BenchError: The work folder cannot be written.
    """
    t0 = time.perf_counter()
    config = config or DemoConfig()
    work = Path(workdir)
    check_writable_dir(work, what="demo work", error=DataError)
    demo = _Demo(work, config, force, callbacks or DemoCallbacks())
    try:
        demo.run("data", demo.step_data)
        demo.run("train", demo.step_train, needs=("data",))
        demo.run("export", demo.step_export, needs=("train",))
        demo.run("fp16", demo.step_fp16, needs=("export",))
        demo.run("int8", demo.step_int8, needs=("export",))
        demo.run("engines", demo.step_engines, needs=("export",))
        demo.run("evaluate", demo.step_evaluate, needs=("train",))
        demo.run("latency", demo.step_latency, needs=("train",))
        demo.run("report", demo.step_report)
    finally:
        demo.close()
    seconds = time.perf_counter() - t0
    summary = {"workdir": str(work), "seconds": round(seconds, 2), "ok": all(
        s.status != "failed" for s in demo.steps), "accuracy_top1_percent": demo.accuracy,
        "checkpoint": str(demo.checkpoint) if demo.checkpoint else None,
        "report": str(demo.report_dir) if demo.report_dir else None,
        "steps": [s.to_dict() for s in demo.steps], "config": config.to_dict(),
        "xception_trt_version": __version__}
    summary_path = atomic_write_json(work / "demo.json", summary, error=DataError)
    return DemoResult(work, tuple(demo.steps), dict(demo.accuracy), demo.report_dir,
                      summary_path, seconds)
