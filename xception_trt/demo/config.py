"""The demo's settings (:class:`DemoConfig`), step and run results, and progress hooks."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

from ..config import AugmentConfig, ModelSpec, Optimizer, TrainConfig, check_int
from ..errors import ConfigError, renamed, renamed_attribute
from ..jsonable import JsonMixin, json_field
from ..pipeline import CALIBRATION_CHOICES, parse_calibration_method
from ..train import TrainCallbacks

__all__ = ["STEP_NAMES", "DEMO_SPEC_FIELDS", "REPORT_NAME", "DemoConfig", "DemoResult",
           "StepResult", "DemoCallbacks", "default_train_config"]

#: The demo's steps, in order.
STEP_NAMES = ("data", "train", "export", "fp16", "int8", "engines", "evaluate", "latency",
              "report")
#: Preprocessing of the demo model: the 8x8 digits are upscaled whole (no centre crop).
DEMO_SPEC_FIELDS: dict[str, Any] = {"crop_pct": 1.0, "interpolation": "bicubic"}
#: The report's name: it is written to ``<workdir>/demo-report/`` (replaced on every run).
REPORT_NAME = "demo-report"


def default_train_config() -> TrainConfig:
    """The demo's training settings: 8 epochs of SGD (Nesterov, lr 0.05, cosine), batch 32,
    random-resized-crop over 60-100 % of the digit, no flips (a flipped digit is another
    digit or none)."""
    return TrainConfig(epochs=8, batch_size=32, optimizer=Optimizer.SGD, lr=0.05, warmup_epochs=1.0,
                       label_smoothing=0.1, seed=0,
                       augment=AugmentConfig(scale=(0.6, 1.0), ratio=(0.8, 1.25), hflip=False))


@dataclass(frozen=True)
class DemoConfig(JsonMixin):
    """Settings of :func:`run_demo` (the defaults are the README's demo).

    Attributes:
        width, middle_blocks, input_size: The Xception trained (narrow, 2 middle blocks, 71 px:
            the paper's architecture scaled down so the whole demo fits a 2-core CPU).
        train: Training settings (:func:`default_train_config`).
        val_fraction, calib_fraction, data_seed: The digits split (see
            :func:`materialise_digits`).
        max_train_images, max_val_images: Use a seeded subset (``None``: all; for quick tests).
        calibration_method: A :class:`~xception_trt.precision.CalibrationMethod` value
            (``entropy``, ``max``, ``percentile``) or ``auto`` (each method, keep the best on
            calibration images held out from calibration).
        calibration_images: INT8 calibration images (at most the calibration split's size).
        max_batch: Largest batch of the engines' optimisation profile.
        cc: TensorRT-RTX compute-capability targets when engines are built on a CPU (the
            ``--cc`` of ``build``; old name ``rtx_targets``, deprecated; the JSON key stays
            ``rtx_targets``).
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
    # None: not given (so that it and the old keyword together are refused), then ("SM86",)
    cc: tuple[str, ...] = json_field(default=None, key="rtx_targets")
    bench_batch_sizes: tuple[int, ...] = (1, 8)
    bench_iterations: int = 30
    bench_warmup: int = 3
    skip: frozenset[str] = frozenset()
    rtx_targets: InitVar[tuple[str, ...] | None] = None

    def __post_init__(self, rtx_targets: tuple[str, ...] | None = None) -> None:
        cc = renamed("rtx_targets", "cc", rtx_targets, self.cc, where="DemoConfig", stacklevel=4)
        object.__setattr__(self, "cc", ("SM86",) if cc is None else tuple(cc))
        ModelSpec(num_classes=10, width=self.width, middle_blocks=self.middle_blocks,
                  input_size=self.input_size, **DEMO_SPEC_FIELDS)  # validates the sizes
        if not isinstance(self.train, TrainConfig):
            raise ConfigError("DemoConfig.train must be a TrainConfig")
        if self.calibration_method is None:  # the pipeline's "default method": not a choice here
            raise ConfigError("DemoConfig.calibration_method must be one of: "
                              + ", ".join(CALIBRATION_CHOICES))
        # a CalibrationMethod member becomes its plain value (to_dict is JSON as is)
        object.__setattr__(self, "calibration_method",
                           parse_calibration_method(self.calibration_method))
        for name in ("max_train_images", "max_val_images"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=2)
        for name in ("calibration_images", "max_batch", "bench_iterations"):
            check_int(getattr(self, name), name)
        object.__setattr__(self, "skip", frozenset(self.skip))
        unknown = sorted(self.skip - set(STEP_NAMES))
        if unknown:
            raise ConfigError(f"unknown demo step(s) {unknown}; steps are: "
                              f"{', '.join(STEP_NAMES)}")
        object.__setattr__(self, "bench_batch_sizes", tuple(self.bench_batch_sizes))


renamed_attribute(DemoConfig, "rtx_targets", "cc")


@dataclass(frozen=True)
class StepResult(JsonMixin):
    """What one demo step did.

    Attributes:
        name: One of :data:`STEP_NAMES`.
        status: ``ran``, ``cached`` (reused a previous run's output), ``skipped`` or
            ``failed``.
        seconds: Wall time of the step, in seconds.
        detail: What it produced, why it was skipped, or the error (the report's step note).
        artifacts: Files it produced or reused (name -> path).
        summary: What it produced in a few words, for a terminal line (``None``: use
            ``detail``; left out of the JSON then).
    """

    name: str
    status: str
    seconds: float = json_field(round=2)
    detail: str = json_field()
    artifacts: dict[str, str] = field(default_factory=dict)
    summary: str | None = json_field(default=None, omit_none=True)

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
        summary: ``demo.json`` (steps, accuracy, settings, artifacts, next commands).
        seconds: Wall time of the whole demo, in seconds.
        artifacts: (what, path relative to ``workdir``) of the report, the ONNX variants, the
            engines and the checkpoint.
        next_commands: Commands to try next on the demo's outputs, each to run in
            ``workdir``: ``infer``, ``bundle`` + ``doctor``, ``stream``.
        engines_run_here: Whether this machine can run the engines the demo built.
    """

    workdir: Path
    steps: tuple[StepResult, ...]
    accuracy: dict[str, float]
    report_dir: Path | None
    summary: Path
    seconds: float
    artifacts: tuple[tuple[str, str], ...] = ()
    next_commands: tuple[str, ...] = ()
    engines_run_here: bool = False

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

    def on_progress(self, stage: str, done: int, total: int | None) -> None:
        """Called as INT8 calibration images are decoded and batches fed (``done`` of
        ``total`` in ``stage``; see :func:`xception_trt.precision.quantize_int8`)."""
