"""``xception-trt build``: checkpoint (or ONNX) -> ONNX -> precision variants -> TensorRT engines,
in one command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Any

from ._common import HUB_HELP, StageProgress, add_command, path_argument, print_json
from ._options import BuildConfigArgs, CalibrationArgs, check_rules

if TYPE_CHECKING:
    from ..config import Precision

ORDER = 30

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from ..config import InputFormat, Precision
    from ..precision import CalibrationMethod

    p = add_command(
        sub, "build", run=run, help="build TensorRT engines from a checkpoint or an ONNX file",
        output="output directory for ONNX variants, engines and sidecars",
        output_kind="dir",
        force="replace outputs in the folder that differ from what this build makes (without "
              "it they are refused) and rebuild engines even if identical ones exist",
        json="the results",
        description="""Build TensorRT engines in one command: export the checkpoint to a clean
            ONNX graph, make the FP16 / INT8 (Q/DQ, calibrated) variants asked for, and build
            one engine per precision with NVIDIA TensorRT (8.6, 10.x, 11.x) or TensorRT-RTX
            (builds on a CPU for RTX targets). Each engine gets a JSON sidecar; an identical
            existing output is reused, one that differs is replaced only with --force.""",
        epilog="example: xception-trt build model.safetensors --precision fp16 int8 "
               "--calib calibration/ --max-batch 8 -o engines/")
    path_argument(p, "source", kind="file", what="source", metavar="SOURCE", hub=True,
                  help=f"checkpoint (.safetensors, timm .pth/.bin, Keras .h5; {HUB_HELP}) "
                       "or ONNX file written by `xception-trt export`")
    p.add_argument("--precision", nargs="+", choices=Precision.choices(), default=None,
                   help="engine precision(s) to build (default: fp32 from a checkpoint, the "
                        "graph's own precision from an ONNX file)")
    CalibrationArgs.add(p, calib_kind="any",
                        calib_help="folder of calibration images (needed for int8; fp16 uses "
                                   "them for its range check, else random inputs)",
                        methods=CalibrationMethod.choices(),
                        method_help="INT8 calibration method (default: entropy)")
    p.add_argument("--name", default=None,
                   help="file stem of the outputs (default: the source file's stem)")
    p.add_argument("--input-format", choices=InputFormat.choices(), default=None,
                   help="checkpoint export only: float-nchw (default) or uint8-nhwc raw pixels")
    p.add_argument("--opset", type=int, default=None, help="checkpoint export only: ONNX opset "
                   "(default: 17)")
    BuildConfigArgs.add(p)
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (export, calibration: on a terminal only)")


class _TqdmProgress(contextlib.AbstractContextManager):
    """TensorRT's builder phases as a tqdm bar: the outermost phase's steps, the innermost
    phase's name as the postfix. Never raises into TensorRT (the builder guards it too). The
    pipeline enters it around one engine build; leaving it closes the bar."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: Any = None
        self.top: str | None = None

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        from tqdm import tqdm

        if parent_phase is None and self.bar is None:
            self.top = phase_name
            self.bar = tqdm(total=num_steps, desc=self.desc, unit="step", file=sys.stderr,
                            leave=False, dynamic_ncols=True, disable=None)  # terminal only
        elif self.bar is not None:
            self.bar.set_postfix_str(phase_name[:40], refresh=True)

    def step_complete(self, phase_name: str, step: int) -> None:
        if self.bar is not None and phase_name == self.top:
            self.bar.update(1)

    def phase_finish(self, phase_name: str) -> None:
        if self.bar is not None and phase_name == self.top:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags that would be silently ignored (before any work; :data:`RULES`)."""
    check_rules(args, "build")
    is_onnx = str(args.source).lower().endswith(".onnx")
    if args.dla_core is not None:
        _check_dla_flags(args, is_onnx=is_onnx)
    check_rules(args, "build:source")


def _check_dla_flags(args: argparse.Namespace, *, is_onnx: bool) -> None:
    # NVIDIA's "Working with DLA": DLA runs FP16 and INT8 only, and needs a fixed batch
    # (min = opt = max); otherwise GPU fallback silently runs every layer on the GPU. The
    # builder refuses both too (trt/compat.py), but only after the export: say it first.
    from ..errors import ConfigError

    sizes = {args.min_batch, args.opt_batch, args.max_batch} - {None}
    fixed = (args.batch is not None and not sizes) or (
        args.batch is None and args.min_batch is not None and args.max_batch is not None
        and len(sizes) == 1)
    if not fixed:
        raise ConfigError("--dla-core needs a fixed batch (DLA has no dynamic shapes; with GPU "
                          "fallback every layer would silently run on the GPU): pass --batch N")
    wanted = args.precision or ([] if is_onnx else ["fp32"])
    if "fp32" in wanted:
        raise ConfigError("--dla-core builds FP16 or INT8 engines only (DLA has no FP32): pass "
                          "--precision fp16 and/or int8"
                          + ("" if args.precision else " (a checkpoint builds fp32 by default)"))


def pipeline_hooks(args: argparse.Namespace, stages: StageProgress) -> Any:
    """The pipeline's progress as the CLI shows it (``build`` and ``bundle``): stage bars, an
    engine bar unless ``--no-progress``, one line per engine unless ``--json``."""
    from ..pipeline import EngineOutcome, PipelineCallbacks

    class Hooks(PipelineCallbacks):
        def on_progress(self, stage: str, done: int, total: int | None) -> None:
            stages(stage, done, total)

        def on_export(self, outcome: Any) -> None:
            stages.close()

        def on_variant(self, outcome: Any) -> None:
            stages.close()

        def engine_progress(self, precision: Precision) -> contextlib.AbstractContextManager:
            stages.close()
            if args.no_progress:
                return contextlib.nullcontext()
            return _TqdmProgress(f"{precision.value} engine")

        def on_engine(self, outcome: EngineOutcome) -> None:
            if not args.json:  # one line per engine as soon as it is there
                print(outcome.describe(), flush=True)

    return Hooks()


def run(args: argparse.Namespace) -> int:
    from ..config import InputFormat
    from ..pipeline import build

    check_flags(args)

    config = BuildConfigArgs.parse(args)
    calibration = CalibrationArgs.parse(args)

    stages = StageProgress(enabled=not (args.no_progress or getattr(args, "quiet", False)))

    with stages:
        result = build(source=args.source, output=args.output, precisions=args.precision,
                       **calibration.keywords(), name=args.name,
                       input_format=args.input_format or InputFormat.FLOAT_NCHW,
                       opset=args.opset, config=config, timing_cache=not args.no_timing_cache,
                       force=args.force,
                       callbacks=pipeline_hooks(args, stages))
    if args.json:
        print_json([e.to_dict() for e in result.engines])
    return 0
