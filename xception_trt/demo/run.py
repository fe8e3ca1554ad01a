"""The demo's pipeline (:func:`run_demo`): each step recorded as ran / cached / skipped /
failed with the reason (see :mod:`xception_trt.demo`). The export, fp16, int8 and engines
steps run through the pipeline's step runner (:class:`xception_trt.pipeline.Steps`, as
``xception-trt build`` and the bundle writer do) and record the status of its outcome.

The int8 step makes two graphs from the same calibration images: ``int8.onnx``, placed for
TensorRT (the engines are built from it), and ``int8-ort.onnx``, placed for ONNX Runtime's CPU
kernels; both are evaluated and timed, and the report says why the first is slow on ONNX
Runtime and whether the second beats FP32 on this CPU."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import BuildConfig, Placement, Precision
from ..data import Dataset
from ..errors import CheckpointError, DataError, DependencyError, XceptionTRTError
from ..fsio import atomic_write_json, check_writable_dir, sha256_file
from ..pipeline import (
    CACHED,
    FAILED,
    RAN,
    SKIPPED,
    ArtifactLayout,
    EngineJob,
    PipelineCallbacks,
    Steps,
)
from ..train import load_resume_state, resume_path, train
from .config import (
    DEMO_SPEC_FIELDS,
    REPORT_NAME,
    STEP_NAMES,
    DemoCallbacks,
    DemoConfig,
    DemoResult,
    StepResult,
)
from .data import DIGITS_SPLITS, DemoData, materialise_digits

__all__ = ["run_demo"]

#: The demo's runner names: the reference and the INT8 graph placed for ONNX Runtime.
_FP32_ORT, _INT8_TRT, _INT8_ORT = "onnxruntime-fp32", "onnxruntime-int8", "onnxruntime-int8-ort"
#: The bundle file the demo's next commands write into its work folder.
BUNDLE_NAME = "digits.xtrt"

log = logging.getLogger(__name__)

#: What a step returns: status, detail, artifacts (name -> path) and, optionally, a short
#: summary for the terminal (the detail goes to the report and demo.json).
_Done = tuple[Any, ...]


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class _PipelineHooks(PipelineCallbacks):
    """The pipeline steps' hooks in the demo: INT8 calibration progress goes to the demo's
    ``on_progress``; a step's start (``("export", 0, None)``, ``("int8 variant", 0, None)``)
    does not, the demo announces its steps itself."""

    def __init__(self, callbacks: DemoCallbacks) -> None:
        self.callbacks = callbacks

    def on_progress(self, stage: str, done: int, total: int | None) -> None:
        if total is None and done == 0 and (stage == "export" or stage.endswith(" variant")):
            return
        self.callbacks.on_progress(stage, done, total)


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
        self.engine_rows: list[dict[str, Any]] = []  # the report's Engines section
        self.engines_runnable = False
        self.engine_run_reason = ""
        self.evaluation: Any = None
        self.benchmarks: list[Any] = []
        self.accuracy: dict[str, float] = {}
        self.report_dir: Path | None = None
        self.findings: list[str] = []  # the report's sentences under the comparison table
        self.int8_verdict: str | None = None  # the last of them: INT8 for ORT against FP32
        self._runners: list[tuple[str, Any]] | None = None
        self._runner_errors: list[str] = []
        self._steps: Steps | None = None

    # -- step driver -------------------------------------------------------------------------
    def status(self, name: str) -> str | None:
        return next((s.status for s in self.steps if s.name == name), None)

    def run(self, name: str, fn: Callable[[], _Done], needs: Sequence[str] = ()) -> StepResult:
        """Run step ``name`` (``fn`` returns status, detail, artifacts and optionally a short
        summary for the terminal) unless skipped or blocked by a step it needs."""
        index = STEP_NAMES.index(name) + 1
        t0 = time.perf_counter()
        if name in self.config.skip:
            result = StepResult(name, SKIPPED, 0.0, "skipped by configuration")
        else:
            blocked = [(n, self.status(n)) for n in needs
                       if self.status(n) not in (RAN, CACHED)]
            if blocked:
                dep, st = blocked[0]
                result = StepResult(name, SKIPPED, 0.0,
                                    f"needs the {dep} step, which was {st or 'not run'}")
            else:
                self.cb.on_step_start(name, index, len(STEP_NAMES))
                summary = ""
                try:
                    status, detail, artifacts, *more = fn()
                    summary = more[0] if more else ""
                except DependencyError as exc:
                    # An extra this installation lacks: not runnable here, like below.
                    log.warning("demo step %s cannot run: %s", name, exc)
                    status, detail, artifacts = SKIPPED, str(exc), {}
                except XceptionTRTError as exc:
                    log.warning("demo step %s failed: %s", name, exc)
                    status, detail, artifacts = FAILED, f"{type(exc).__name__}: {exc}", {}
                except ImportError as exc:
                    # A stage whose module or optional dependency is missing from this
                    # installation: say so instead of crashing the whole demo.
                    log.warning("demo step %s cannot run: %s", name, exc)
                    status, detail, artifacts = (SKIPPED, "this installation cannot import "
                                                 f"what the step needs ({exc})", {})
                result = StepResult(name, status, time.perf_counter() - t0, detail, artifacts,
                                    summary or None)
        self.steps.append(result)
        self.cb.on_step_end(result)
        return result

    def rel(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the work folder (as the report and the terminal name it)."""
        try:
            return Path(path).relative_to(self.work).as_posix()
        except ValueError:
            return str(path)

    # -- what earlier steps produced (run() calls a step only after the steps it needs) -------
    def need_data(self) -> DemoData:
        """The data step's folders."""
        if self.data is None:
            raise DataError("the demo data is not ready: the data step has not run")
        return self.data

    def need_checkpoint(self) -> Path:
        """The train step's checkpoint."""
        if self.checkpoint is None:
            raise CheckpointError("there is no demo checkpoint: the train step has not run")
        return self.checkpoint

    def pipeline(self) -> Steps:
        """The pipeline's step runner over ``artifacts/<checkpoint>/fp32.onnx`` ... (one folder
        per checkpoint, its engines in ``engines/``; the calibration cache shared by all)."""
        if self._steps is None:
            art = self.work / "artifacts" / sha256_file(self.need_checkpoint())[:12]
            self._steps = Steps(ArtifactLayout(
                onnx_dir=art, engine_dir=art / "engines",
                calibration_cache_dir=self.work / "calibration-cache"),
                callbacks=_PipelineHooks(self.cb))
        return self._steps

    # -- steps ---------------------------------------------------------------------------------
    def step_data(self) -> _Done:
        c = self.config
        d = materialise_digits(self.work / "data", val_fraction=c.val_fraction,
                               calib_fraction=c.calib_fraction, seed=c.data_seed,
                               force=self.force)
        self.data = d
        counts = {s: len(d.dataset(s)) for s in DIGITS_SPLITS}
        detail = (f"scikit-learn digits, {len(d.class_names)} classes: {counts['train']} train / "
                  f"{counts['calibration']} calibration / {counts['validation']} validation "
                  f"images (8x8 grey PNG) in {d.root}")
        summary = (f"{counts['train']} train / {counts['calibration']} calibration / "
                   f"{counts['validation']} validation images in data/")
        return (RAN if d.created else CACHED, detail,
                {s: str(d.root / s) for s in DIGITS_SPLITS}, summary)

    def _splits(self) -> tuple[Dataset, Dataset]:
        data, c = self.need_data(), self.config
        return (data.dataset("train").select(c.max_train_images, seed=c.data_seed),
                data.dataset("validation").select(c.max_val_images, seed=c.data_seed))

    def step_train(self) -> _Done:
        data, c = self.need_data(), self.config
        train_ds, val_ds = self._splits()
        train_cfg = c.train.to_dict()
        for volatile in ("workers", "device"):
            train_cfg.pop(volatile, None)
        key = _key({"data": data.fingerprint, "max_train": c.max_train_images,
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
                    return (CACHED, f"reused {ckpt.name} ({c.train.epochs} epochs{top1})",
                            {"checkpoint": str(ckpt)}, f"reused models/{ckpt.name}{top1}")
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
        summary = (f"{c.train.epochs} epoch(s) on {result.device}, models/{ckpt.name}"
                   + ("" if result.best_val_top1 is None
                      else f", validation top-1 {result.best_val_top1:.2%}"))
        return (RAN, detail, {"checkpoint": str(ckpt), "resume_state": str(state_path)},
                summary)

    def step_export(self) -> _Done:
        step = self.pipeline().export(self.need_checkpoint(), force=self.force)
        res = step.value
        self.onnx["fp32"] = res.path
        if res.result is None:
            return (step.status, f"reused {res.path}", {"fp32": str(res.path)},
                    f"reused {self.rel(res.path)}")
        exp, rep = res.result, res.result.report
        parity = f"; {exp.parity.summary()}" if exp.parity is not None else ""
        detail = (f"opset {exp.opset}, dynamic batch, {exp.exporter} exporter; cleanup "
                  f"{rep.before.num_nodes} -> {rep.after.num_nodes} nodes, "
                  f"{(rep.file_size or 0) / 2**20:.2f} MiB{parity}")
        ok = "" if exp.parity is None else "; matches torch" if exp.parity.passed else \
            "; DIFFERS from torch (see the report)"
        summary = (f"{self.rel(res.path)}, opset {exp.opset}, "
                   f"{(rep.file_size or 0) / 2**20:.2f} MiB{ok}")
        return step.status, detail, {"fp32": str(res.path)}, summary

    def step_fp16(self) -> _Done:
        step = self.pipeline().variant(Precision.FP16, calibration=self.need_data().calibration,
                                    force=self.force)
        v = step.value
        self.onnx["fp16"] = v.path
        meta = self.pipeline().graph(Precision.FP16).meta  # read once; its engine reuses it
        kept = (meta.json_field("fp16") or {}).get("fp32_nodes", [])
        size = f"{v.path.stat().st_size / 2**20:.2f} MiB"
        return step.status, (
            f"ModelOpt AutoCast: FP16 weights and activations, FP32 I/O, {len(kept)} node(s) "
            f"kept in FP32 ({size})"), {"fp16": str(v.path)}, \
            f"{self.rel(v.path)}, {size}, {len(kept)} node(s) kept in FP32"

    def step_int8(self) -> _Done:
        data, c = self.need_data(), self.config
        # at most the calibration split (asking the calibrator for more only logs a warning)
        num_images = min(c.calibration_images, len(data.dataset("calibration")))
        step = self.pipeline().variant(Precision.INT8, calibration=data.calibration,
                                       calibration_method=c.calibration_method,
                                       num_images=num_images, force=self.force)
        v = step.value
        self.onnx["int8"] = v.path
        # the same precision placed for ONNX Runtime's CPU kernels, from the same images: what
        # ONNX Runtime should run (no engine is built from it)
        ort_step = self.pipeline().variant(Precision.INT8, calibration=data.calibration,
                                           calibration_method=c.calibration_method,
                                           num_images=num_images, force=self.force,
                                           placement=Placement.ONNXRUNTIME)
        self.onnx["int8-ort"] = ort_step.value.path
        status = RAN if RAN in (step.status, ort_step.status) else CACHED
        artifacts = {"int8": str(v.path), "int8-ort": str(ort_step.value.path)}
        summary = (f"{self.rel(v.path)} (for TensorRT) and {Path(ort_step.value.path).name} "
                   "(for ONNX Runtime)")
        ort_note = (f"; {Path(ort_step.value.path).name}: the same images, Q/DQ placed for ONNX "
                    "Runtime's CPU kernels ("
                    + ("reused" if ort_step.status == CACHED else "calibrated") + ")")
        q = v.quantize
        if q is None:
            meta = self.pipeline().graph(Precision.INT8).meta  # read once; its engine reuses it
            calib = meta.json_field("calibration") or {}
            method = calib.get("method", c.calibration_method)
            return status, (f"reused the calibrated INT8 graph {v.path.name} "
                            f"(method {method}){ort_note}"), artifacts, summary
        if v.auto is not None:
            tried = ", ".join(f"{r.name} {r.top1:.2f}%" for r in v.auto.metrics
                              if r.top1 is not None)
            how = f"auto: tried {tried} on held-out calibration images, kept {q.method.value}"
        else:
            how = f"method {q.method.value}"
        cache = {"hit": "calibration cache hit", "miss": "calibrated, cache written",
                 "off": "no cache", "imported": "imported cache"}.get(q.cache, q.cache)
        detail = (f"ModelOpt PTQ Q/DQ placed for TensorRT, {how}: {len(q.quantized_nodes)} "
                  f"node(s) INT8, {len(q.excluded_nodes)} kept in high precision, "
                  f"{q.num_images} calibration images ({cache}){ort_note}")
        if q.cache_path:
            artifacts["cache"] = str(q.cache_path)
        return status, detail, artifacts, summary + f", {q.num_images} calibration images"

    def step_engines(self) -> _Done:
        from ..selftest import missing_requirements
        from ..sysinfo import flavours as available_flavours

        # The builder module first: an installation without it reports this step as not
        # runnable here (ImportError), whatever TensorRT is installed.
        importlib.import_module("xception_trt.trt.builder")
        flavours = {f.name: f for f in available_flavours()}
        if not flavours:
            return SKIPPED, ("no TensorRT flavour imports here; install TensorRT-RTX "
                             "(pip install 'xception-trt[rtx]') to build RTX engines on any "
                             "machine, or NVIDIA TensorRT on a GPU machine"), {}
        req = missing_requirements()
        if req.flavour is not None:
            backend = req.flavour
            targets: tuple[str, ...] = ("CURRENT",) if backend == "tensorrt_rtx" else ()
            self.engines_runnable = True
            where = f"for this GPU ({', '.join(req.gpus)})"
        elif "tensorrt_rtx" in flavours:
            backend, targets = "tensorrt_rtx", self.config.cc
            # Without a GPU, what is missing to run them (a driver, TensorRT, a CUDA binding)
            # cannot help here: say what this machine can do instead.
            self.engine_run_reason = (
                "; ".join(req.missing_engine) if req.gpus else
                "this machine has no NVIDIA GPU: it runs the ONNX variants, and `xception-trt "
                "bundle` packs the engines for a device")
            where = f"on the CPU for {', '.join(targets) or 'the default RTX targets'}"
        else:
            return SKIPPED, ("NVIDIA TensorRT is installed but builds only on the GPU that "
                             "runs the engine, and none is usable here: "
                             + "; ".join(req.missing_engine)), {}
        flavour = flavours[backend]
        steps = self.pipeline()
        engine_dir = steps.layout.engine_dir / f"{backend}-{'-'.join(targets) or 'gpu'}"
        config = BuildConfig(flavour=backend, max_batch=self.config.max_batch, cc=targets)
        layout = replace(steps.layout, engine_dir=engine_dir)
        precisions = [Precision.parse(p) for p in ("fp32", "fp16", "int8") if p in self.onnx]
        step = steps.engines([EngineJob(p, config, layout.engine(p)) for p in precisions],
                             force=self.force, keep_going=True)
        res = step.value
        built, artifacts = [], {}
        for e in res.engines:
            art, prec = e.artifact, e.precision.value
            self.engines[prec] = art.path
            artifacts[prec] = str(art.path)
            self.engine_rows.append(self._engine_row(art, flavour.name, flavour.version))
            built.append(f"{prec} {art.size_bytes / 2**20:.1f} MiB"
                         + (" (cached)" if art.cache_hit else f" ({art.seconds:.1f} s)"))
        failed = [f"{f.precision.value}: {f.error}" for f in res.failures]
        run_note = ("; the engines run in the evaluation below" if self.engines_runnable
                    else f"; not run here: {self.engine_run_reason}")
        detail = (f"{flavour.name} {flavour.version} {where}: "
                  + (", ".join(built) if built else "nothing built") + run_note
                  + ("" if not failed else "; FAILED: " + " | ".join(failed)))
        sizes = ", ".join(f"{e.precision.value} {e.artifact.size_bytes / 2**20:.1f}"
                          for e in res.engines)
        summary = (f"{self.rel(engine_dir)}/: {sizes or 'none'} MiB"
                   + (f"; FAILED: {', '.join(f.precision.value for f in res.failures)}"
                      if failed else "")
                   + ("" if self.engines_runnable or not req.gpus
                      else "; cannot run here (see the report)"))
        return step.status, detail, artifacts, summary

    def _engine_row(self, art: Any, flavour: str, version: str) -> dict[str, Any]:
        """The report's row for one engine: where it is, what it targets, how to run it."""
        side = art.sidecar
        if side.targets and side.targets != ("CURRENT",):
            ccs = [_cc_text(t) for t in side.targets]
            target = ", ".join(side.targets)
            runs_on = (f"an NVIDIA RTX GPU of compute capability {' or '.join(ccs)} "
                       "(TensorRT-RTX runtime)")
        elif side.device is not None:
            target = f"sm_{side.device.compute_capability.replace('.', '')}"
            runs_on = (f"{side.device.name} (compute capability "
                       f"{side.device.compute_capability}) with {flavour} {version}")
        else:
            target, runs_on = "this GPU", f"this machine's GPU with {flavour} {version}"
        if self.engines_runnable:
            runs_on += " - this machine"
        path = self.rel(art.path)
        row = {"path": path, "size_bytes": art.size_bytes, "precision": side.precision.value,
               "built_with": f"{flavour} {version}", "target": target,
               "max_batch": side.max_batch, "runs_on": runs_on,
               "command": f"xception-trt infer {path} IMAGE"}
        if side.layers:  # what the engine's layers compute in, from its own layer records
            from ..trt.layers import check_engine_precision, generated_kernels, tally_layers

            row.update(layers=tally_layers(side).summary(),
                       precision_check=check_engine_precision(side).summary(),
                       generated_kernels=generated_kernels(side))
        return row

    def runners(self) -> list[tuple[str, Any]]:
        """Open (once) every runner that can run here: torch, ONNX Runtime, TensorRT."""
        if self._runners is not None:
            return self._runners
        from ..runners import OnnxRuntimeRunner, TorchRunner, open_runner

        runners: list[tuple[str, Any]] = []
        runners.append(("torch-fp32", TorchRunner(self.need_checkpoint(), name="torch-fp32")))
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

    def step_evaluate(self) -> _Done:
        from ..bench import evaluate

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
        short = ", ".join(f"{n.removeprefix('onnxruntime-')} {a:.2f}%"
                          for n, a in self.accuracy.items() if n.startswith("onnxruntime-"))
        return ((FAILED if failed else RAN), detail, {},
                f"top-1 on {len(val_ds)} images: {short or 'none'}")

    def step_latency(self) -> _Done:
        from ..bench import BenchConfig, benchmark_runner, load_pixels

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
        self.findings = self._latency_findings()
        short = ", ".join(
            f"{b.name.removeprefix('onnxruntime-')} {b.latency[0].end_to_end.median_ms:.2f}"
            for b in self.benchmarks if b.name.startswith("onnxruntime-") and b.latency
            and b.latency[0].end_to_end is not None)
        return ((FAILED if failed else RAN), detail, {},
                f"p50 ms at batch {c.bench_batch_sizes[0]}: {short or 'none'}")

    def _latency_findings(self) -> list[str]:
        """The report's sentences under the comparison table: why the INT8 graph placed for
        TensorRT is slow on ONNX Runtime (the runner's own note, as ``bench`` prints it) and
        whether the one placed for ONNX Runtime beats FP32 here, and if not, why not."""
        from ..host import cpu_int8_features, load_average

        out = []
        runners = dict(self.runners())
        trt = runners.get(_INT8_TRT)
        note = getattr(trt, "note", None)
        if note and _INT8_TRT in {b.name for b in self.benchmarks}:
            out.append(f"**{_INT8_TRT}** times the graph the engines are built from: "
                       f"{note.removeprefix('note: ')} (**{_INT8_ORT}** here).")
        medians = {b.name: {r.batch_size: r.end_to_end.median_ms for r in b.latency
                            if r.end_to_end is not None} for b in self.benchmarks}
        fastest = {b.name: {r.batch_size: r.end_to_end.min_ms for r in b.latency
                            if r.end_to_end is not None} for b in self.benchmarks}
        fp32, ort = medians.get(_FP32_ORT, {}), medians.get(_INT8_ORT, {})
        path = self.onnx.get("int8-ort")
        if fp32 and ort and path is not None:
            from ..precision import fused_kernel_counts

            try:
                counts = fused_kernel_counts(path)
                fused: tuple[int, int] | None = (counts.quantized, counts.total)
            except XceptionTRTError as exc:
                log.warning("cannot count the fused kernels of %s: %s", path, exc)
                fused = None
            self.int8_verdict = int8_verdict(fp32, ort, cpu_int8=cpu_int8_features(),
                                             fused=fused, load=load_average(),
                                             cores=os.cpu_count(),
                                             fp32_min=fastest.get(_FP32_ORT),
                                             int8_min=fastest.get(_INT8_ORT))
            out.append(self.int8_verdict)
        return out

    def step_report(self) -> _Done:
        from ..report import build_report, write_report

        if self.evaluation is None and not self.benchmarks:
            return SKIPPED, "nothing was measured (evaluate and latency did not run)", {}
        notes = ["Built-in demo: an Xception trained briefly on scikit-learn's handwritten "
                 "digits (8x8 images upscaled), deployed through every stage of xception-trt. "
                 "Paths are relative to the work folder "
                 f"`{self.work}`; accuracy and timings depend on the machine (see System)."]
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
                           command="xception-trt demo", findings=self.findings,
                           engines=self.engine_rows,
                           title="xception-trt demo: handwritten digits, every precision")
        files = write_report(doc, self.work, force=True)
        self.report_dir = files.directory
        return RAN, f"{files.markdown} (+ report.json, {len(files.plots)} PNG plot(s))", {
            "markdown": str(files.markdown), "json": str(files.json),
            **{p.stem: str(p) for p in files.plots}}, \
            f"{self.rel(files.markdown)} (+ report.json, {len(files.plots)} PNG plot(s))"

    # -- what to try next --------------------------------------------------------------------
    def next_commands(self) -> tuple[str, ...]:
        """Three commands to run from the work folder on what the demo made: ``infer`` on one
        validation image, ``bundle`` (the variants and engines for a device) then ``doctor``
        on the bundle, and ``stream`` over a folder of validation images. Empty when the
        demo made no model to run."""
        import shlex

        if self.data is None or "fp32" not in self.onnx:
            return ()
        # what runs best here: the INT8 engine on a GPU, else INT8 placed for ONNX Runtime
        model = (self.engines.get("int8") if self.engines_runnable else None) or \
            self.onnx.get("int8-ort") or self.onnx["fp32"]
        folder = self.data.root / "validation"
        images = sorted(p for p in folder.rglob("*.png"))
        if not images:
            return ()
        q = shlex.quote
        infer = f"xception-trt infer {q(self.rel(model))} {q(self.rel(images[0]))}"
        precisions = [p for p in ("int8", "fp16") if p in self.onnx]
        bundle = [f"xception-trt bundle {q(self.rel(self.onnx['fp32']))}"]
        if precisions:
            bundle.append("--precision " + " ".join(precisions))
        if "int8" in self.onnx:
            bundle.append(f"--calib {q(self.rel(self.data.calibration))}")
        if self.engines and not self.engines_runnable:  # RTX engines for the demo's targets
            bundle.append("--cc " + " ".join(t.lower() for t in self.config.cc))
        bundle.append(f"-o {BUNDLE_NAME} --force")
        doctor = f"xception-trt doctor {BUNDLE_NAME}"
        stream = f"xception-trt stream {q(self.rel(model))} {q(self.rel(images[0].parent))}"
        return infer, " ".join(bundle) + " && " + doctor, stream

    def artifact_lines(self) -> tuple[tuple[str, str], ...]:
        """(what, where relative to the work folder) of everything the demo made."""
        out = []
        if self.report_dir is not None:
            out.append(("report", f"{self.rel(self.report_dir / 'report.md')}"))
        if self.onnx:
            folder = Path(next(iter(self.onnx.values()))).parent
            out.append(("ONNX variants", f"{self.rel(folder)}/ ("
                        + ", ".join(Path(p).name for p in self.onnx.values()) + ")"))
        if self.engines:
            folder = Path(next(iter(self.engines.values()))).parent
            out.append(("engines", f"{self.rel(folder)}/ ("
                        + ", ".join(Path(p).name for p in self.engines.values()) + ")"))
        if self.checkpoint is not None:
            out.append(("checkpoint", self.rel(self.checkpoint)))
        return tuple(out)


def int8_verdict(fp32: Mapping[int, float], int8: Mapping[int, float], *,
                 cpu_int8: Mapping[str, Any] | None, fused: tuple[int, int] | None,
                 load: Sequence[float] | None, cores: int | None,
                 fp32_min: Mapping[int, float] | None = None,
                 int8_min: Mapping[int, float] | None = None) -> str:
    """One sentence: how fast the INT8 graph placed for ONNX Runtime runs against FP32 on
    ONNX Runtime, per batch size, and, where it is not faster, why not (from what was
    measured: the CPU's INT8 instructions, how many Conv/Gemm ONNX Runtime fused into INT8
    kernels, the load and the fastest calls, which other work slows least).

    Args:
        fp32, int8: Median latency per call in ms, by batch size.
        cpu_int8: :func:`xception_trt.host.cpu_int8_features`.
        fused: (Conv/Gemm run as INT8 kernels, all Conv/Gemm) in ONNX Runtime's optimised
            graph (:func:`xception_trt.precision.fused_kernel_counts`), or ``None``.
        load: The 1/5/15-minute load averages; cores: logical cores.
        fp32_min, int8_min: The fastest call in ms, by batch size (optional).
    """
    from ..host import int8_features_text

    batches = sorted(set(fp32) & set(int8))
    ratio = {b: fp32[b] / int8[b] for b in batches if int8[b] > 0}
    speed = ", ".join(f"{ratio[b]:.2f}x at batch {b}" for b in ratio)
    who = f"**{_INT8_ORT}** (INT8 placed for ONNX Runtime)"
    slower = [b for b in ratio if ratio[b] < 1.0]
    if not slower:
        return (f"{who} is faster than **{_FP32_ORT}** on this CPU: {speed} (FP32 median / "
                f"INT8 median; INT8 features: {int8_features_text(cpu_int8)}).")
    best = {b: fp32_min[b] / int8_min[b] for b in slower
            if fp32_min and int8_min and b in fp32_min and int8_min.get(b)}
    why = []
    if cpu_int8 and cpu_int8.get("vnni") is False and not cpu_int8.get("amx"):
        why.append("this CPU has neither VNNI nor AMX, the instructions that make ONNX "
                   "Runtime's INT8 kernels faster than its FP32 ones")
    if fused is not None and fused[0] < fused[1]:
        why.append(f"only {fused[0]} of its {fused[1]} Conv/Gemm run as INT8 kernels")
    if load and cores and load[0] >= cores:
        busy = (f"the machine was busy (load average {load[0]:.2f} on {cores} cores), which "
                "slows the runners unevenly")
        if best and all(r >= 1.0 for r in best.values()):
            busy += ": the fastest calls, which other work slows least, are faster (" + \
                ", ".join(f"{r:.2f}x at batch {b}" for b, r in best.items()) + ")"
        why.append(busy)
    if not why:
        all_fused = (f"all {fused[1]} Conv/Gemm run as INT8 kernels" if fused is not None
                     else "its Conv/Gemm run as INT8 kernels")
        why.append(f"{all_fused} on a CPU with INT8 instructions, so what remains is the work "
                   "INT8 adds to every call (quantizing the input, dequantizing the output, "
                   "layout transposes), which on a model this small can outweigh the cheaper "
                   "convolutions")
    where = ", ".join(str(b) for b in slower)
    return (f"{who} is not faster than **{_FP32_ORT}** at batch {where} ({speed}; FP32 median "
            "/ INT8 median) because " + "; and ".join(why) + ".")


def _cc_text(target: str) -> str:
    """``SM86`` -> ``8.6``, ``SM120`` -> ``12.0`` (a TensorRT-RTX target as a compute
    capability)."""
    digits = target.upper().removeprefix("SM")
    return f"{digits[:-1]}.{digits[-1]}" if digits.isdigit() and len(digits) >= 2 else target


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
    next_commands = demo.next_commands()
    artifacts = demo.artifact_lines()
    summary = {"workdir": str(work), "seconds": round(seconds, 2), "ok": all(
        s.status != FAILED for s in demo.steps), "accuracy_top1_percent": demo.accuracy,
        "checkpoint": str(demo.checkpoint) if demo.checkpoint else None,
        "report": str(demo.report_dir) if demo.report_dir else None,
        "steps": [s.to_dict() for s in demo.steps], "config": config.to_dict(),
        "artifacts": dict(artifacts), "findings": demo.findings,
        "int8_verdict": demo.int8_verdict,
        "engines_run_here": demo.engines_runnable, "next_commands": list(next_commands),
        "xception_trt_version": __version__}
    summary_path = atomic_write_json(work / "demo.json", summary, error=DataError)
    return DemoResult(work, tuple(demo.steps), dict(demo.accuracy), demo.report_dir,
                      summary_path, seconds, artifacts=artifacts, next_commands=next_commands,
                      engines_run_here=demo.engines_runnable)
