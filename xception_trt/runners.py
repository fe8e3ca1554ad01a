"""The inference backends behind the runner contract (:mod:`xception_trt.contract`): ONNX Runtime
and the torch reference here, TensorRT in :mod:`xception_trt.trt.runtime`, and the registry that
picks one for a model file::

    with open_runner("xception_fp16.onnx") as runner:
        logits = runner(batch)          # batch: runner.input_spec.shape / .dtype

A new backend is one :class:`RunnerKind` member plus one :data:`RUNNERS` entry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bundle.format import BUNDLE_SUFFIXES, is_bundle
from .config import (
    CHECKPOINT_SUFFIXES,
    InputFormat,
    ModelSpec,
    Placement,
    Precision,
    check_int,
)
from .contract import (
    ENGINE_SUFFIXES,
    ONNX_SUFFIXES,
    Runner,
    RunnerBase,
    RunnerKind,
    input_spec_for,
    output_spec_for,
)
from .errors import (
    ConfigError,
    EngineError,
    XceptionTRTError,
    renamed,
)
from .extras import needs
from .fsio import path_problem
from .hub import is_hub_id
from .onnx_meta import INPUT_NAME, OUTPUT_NAME

__all__ = ["OnnxRuntimeRunner", "TorchRunner", "BuiltEngine", "RunnerEntry", "RUNNERS",
           "RUNNER_OPTIONS", "RunnerOptions",
           "open_runner", "runner_kind", "runner_options", "check_runner_options",
           "check_providers", "is_model_file", "ort_int8_note", "TENSORRT_PLACEMENT_ON_ORT"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# ONNX Runtime


class OnnxRuntimeRunner(RunnerBase):
    """Run an xception-trt ONNX file (FP32, FP16 or Q/DQ INT8) with ONNX Runtime.

    Args:
        onnx_path: An ONNX file carrying xception-trt metadata (:mod:`xception_trt.onnx_meta`).
        providers: ONNX Runtime execution providers in priority order. ``None``: the CUDA EP
            when this onnxruntime build has it, then the CPU EP.
        threads: Intra-op threads (``None``: ONNX Runtime's default, one per physical core).
        name: Display name (default ``onnxruntime-<precision>``).
        check_finite: Reject inputs holding NaN/Inf.

    Raises:
        GraphError: Not an ONNX file or no xception-trt metadata.
        EngineError: Unknown provider, or ONNX Runtime cannot load the graph, or the graph's
            input/output do not match the metadata.
        DependencyError: onnxruntime or onnx is not installed (the ``ort`` extra).
    """

    def __init__(self, onnx_path: str | os.PathLike[str], *, providers: Sequence[str] | None = None,
                 threads: int | None = None, name: str | None = None,
                 check_finite: bool = False) -> None:
        with needs("the ONNX Runtime runner", extra="ort"):
            import onnx  # noqa: F401 - read_metadata's; named here so the message says [ort]
            import onnxruntime as ort

        from .onnx_meta import read_metadata

        self.path = Path(onnx_path)
        meta = read_metadata(self.path)
        self.spec = meta.spec
        self.input_format = meta.input_format
        self.precision = meta.precision
        self.metadata = dict(meta.raw)
        self.check_finite = check_finite
        self.name = name or f"onnxruntime-{self.precision.value}"
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in available]
        providers = check_providers(providers)
        if threads is not None:
            check_int(threads, "threads")
        self.threads = threads
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # ORT warnings go to stderr, bypassing logging
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            text = str(self.path)
            model: str | bytes = text
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # a path that is not UTF-8 (os.fsdecode's surrogates): ORT's binding takes only
                # UTF-8 text, so hand it the bytes (our graphs hold no external data)
                model = self.path.read_bytes()
            self._session = ort.InferenceSession(model, opts, providers=providers)
        except OSError as exc:
            raise EngineError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... classes
            raise EngineError(f"ONNX Runtime cannot load {self.path}: {exc}".splitlines()[0]
                              + " — re-export the model or check the onnxruntime version"
                              ) from None
        self.providers = list(self._session.get_providers())
        self.device = "cuda:0" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        #: A one-line note when this is a slow INT8 placement for this provider, else None.
        self.note = ort_int8_note(self.path, meta.placement, self.providers)
        if self.note:
            log.info("%s", self.note)
        self._ort_version = ort.__version__
        self._bind_io()

    def _bind_io(self) -> None:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise EngineError(f"{self.path}: expected one input named {INPUT_NAME!r}, found "
                              f"{[i.name for i in inputs]}; re-export with xception-trt")
        if OUTPUT_NAME not in [o.name for o in outputs]:
            raise EngineError(f"{self.path}: no output named {OUTPUT_NAME!r} (found "
                              f"{[o.name for o in outputs]}); re-export with xception-trt")
        dim0 = inputs[0].shape[0] if inputs[0].shape else None
        static = dim0 if isinstance(dim0, int) and dim0 > 0 else None
        self.max_batch = static
        self.input_spec = input_spec_for(self.spec, self.input_format,
                                         batch=static if static else -1)
        want = self.input_spec
        got_type = inputs[0].type  # e.g. 'tensor(float)'
        want_type = "tensor(uint8)" if want.dtype == np.uint8 else "tensor(float)"
        if got_type != want_type:
            raise EngineError(f"{self.path}: the graph input is {got_type} but the metadata "
                              f"says {self.input_format.value} ({want_type}); re-export it")
        self.output_spec = output_spec_for(self.spec, batch=static if static else -1)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; returns float32 logits ``(N, num_classes)``.

        Raises:
            EngineError: Bad input (see :func:`check_batch`), closed runner, or an ONNX Runtime
                failure.
        """
        batch = self._validate(batch)
        try:
            out = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        except Exception as exc:
            raise EngineError(f"{self.name}: ONNX Runtime failed: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                              ) from None
        return self._check_output(out, batch.shape[0])

    def describe(self) -> dict[str, Any]:
        """Backend facts: provider(s), threads, versions, file."""
        return {
            **self._describe_common(RunnerKind.ONNXRUNTIME, self.path),
            "provider": self.providers[0] if self.providers else None,
            "providers": self.providers,
            "threads": self.threads if self.threads is not None else "default",
            "onnxruntime": self._ort_version,
            "xception_trt_version": self.metadata.get("version"),
            "source_sha256": self.metadata.get("source_sha256"),
        }

    def close(self) -> None:
        """Drop the ONNX Runtime session (idempotent)."""
        if not self._closed:
            self._session = None
        super().close()


def check_providers(providers: Sequence[str]) -> list[str]:
    """Check ONNX Runtime execution provider names against this onnxruntime build.

    Args:
        providers: Provider names in priority order (``CPUExecutionProvider`` ...).

    Returns:
        The names, as a list.

    Raises:
        EngineError: No name, or a name this onnxruntime build does not have (the message lists
            the ones it has).
        DependencyError: onnxruntime is not installed (the ``ort`` extra).
    """
    with needs("ONNX Runtime execution providers", extra="ort"):
        import onnxruntime as ort

    available = ort.get_available_providers()
    providers = list(providers)
    unknown = [p for p in providers if p not in available]
    if not providers or unknown:
        raise EngineError(f"ONNX Runtime execution provider(s) {', '.join(unknown) or '(none)'} "
                          f"not available in this onnxruntime build; choose from: "
                          f"{', '.join(available)}")
    return providers


#: Why ONNX Runtime's CPU provider runs an INT8 graph placed for TensorRT slowly (one source for
#: :func:`ort_int8_note`, which ``bench``, ``triton-repo`` and the runner print, and the demo
#: report); measured by ``benchmarks/bench_ort_int8.py`` (fused kernel counts).
TENSORRT_PLACEMENT_ON_ORT = (
    "its Q/DQ nodes quantize only the inputs of each Conv (what TensorRT fuses), so ONNX "
    "Runtime fuses only some Conv into INT8 kernels and runs the others in float, between extra "
    "quantize, dequantize and transpose nodes")


def ort_int8_note(path: str | os.PathLike[str], placement: Placement | None = None,
                  providers: Sequence[str] | None = None, *,
                  target: Placement | None = None) -> str | None:
    """The one-line note for an INT8 graph placed for TensorRT that ONNX Runtime runs on the
    CPU (where a graph placed for ONNX Runtime is much faster), else ``None``.

    Args:
        path: The ONNX file.
        placement: Its INT8 placement (``None``: read from its metadata; not INT8 -> no
            note).
        providers: The execution providers it runs with (``None``: this onnxruntime build's
            default, the CUDA EP when it has one).
        target: Old name of ``placement`` (deprecated).

    Raises:
        GraphError: The file carries no xception-trt metadata.
    """
    placement = renamed("target", "placement", target, placement, where="ort_int8_note")
    if placement is None:
        from .onnx_meta import read_metadata

        placement = read_metadata(path).placement
    if placement is not Placement.TENSORRT:
        return None
    if providers is None:
        with needs("ONNX Runtime execution providers", extra="ort"):
            import onnxruntime as ort
        providers = ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in \
            ort.get_available_providers() else ["CPUExecutionProvider"]
    if not providers or providers[0] != "CPUExecutionProvider":
        return None
    return (f"note: {Path(path).name} is INT8 placed for TensorRT, which ONNX Runtime's CPU "
            f"kernels run slowly: {TENSORRT_PLACEMENT_ON_ORT}; `xception-trt quantize --precision "
            "int8 --placement onnxruntime` makes a faster variant for ONNX Runtime")


# ---------------------------------------------------------------------------------------------
# torch reference


class TorchRunner(RunnerBase):
    """Run the PyTorch reference Xception (from a checkpoint file or a model object).

    Args:
        checkpoint_or_model: A checkpoint path (any suffix in
            :data:`xception_trt.config.CHECKPOINT_SUFFIXES`), a Hugging Face Hub model id
            (:mod:`xception_trt.hub`) or an ``Xception`` module.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:<i>"``.
        precision: ``fp32`` or ``fp16`` (``model.half()``; logits are returned as float32).
            INT8 is an ONNX/TensorRT variant: use :class:`OnnxRuntimeRunner` on the INT8 ONNX.
        threads: torch intra-op threads. torch's setting is process-wide, so this changes it
            for the whole process (``None`` leaves it alone).
        name: Display name (default ``torch-<precision>``).
        check_finite: Reject inputs holding NaN/Inf.

    Raises:
        CheckpointError: The checkpoint cannot be read.
        EngineError: CUDA asked for but not available; not an Xception model.
        ConfigError: Unsupported precision or bad thread count.
        DependencyError: torch is not installed (the ``build`` extra).
    """

    def __init__(self, checkpoint_or_model: Any, *, device: str = "cpu",
                 precision: Precision | str = Precision.FP32, threads: int | None = None,
                 name: str | None = None, check_finite: bool = False) -> None:
        with needs("the torch runner"):
            import torch

        self.precision = Precision.parse(precision)
        if self.precision is Precision.INT8:
            raise ConfigError("the torch runner computes in fp32 or fp16; for INT8 run the "
                              "quantized ONNX with OnnxRuntimeRunner or a TensorRT engine")
        if threads is not None:
            torch.set_num_threads(check_int(threads, "threads"))
        self.threads = threads
        dev = str(device)
        if dev.startswith("cuda"):
            if not torch.cuda.is_available():
                raise EngineError(f"device {dev!r} asked for but torch sees no CUDA GPU "
                                  f"(torch {torch.__version__}); use device='cpu'")
            dev = "cuda:0" if dev == "cuda" else dev
        elif dev != "cpu":
            raise ConfigError(f"unknown torch device {device!r}; use 'cpu' or 'cuda[:i]'")
        self.device = dev
        if isinstance(checkpoint_or_model, (str, os.PathLike)):
            from .checkpoint import load_model

            self.path: Path | None = Path(checkpoint_or_model)
            model = load_model(checkpoint_or_model)  # a Hub id keeps its spelling
        else:
            self.path = None
            model = checkpoint_or_model
        spec = getattr(model, "spec", None)
        if not isinstance(model, torch.nn.Module) or not isinstance(spec, ModelSpec):
            raise EngineError(f"TorchRunner needs an xception_trt Xception model or a checkpoint "
                              f"path, got {type(checkpoint_or_model).__name__}")
        self.spec = spec
        self.input_format = InputFormat.FLOAT_NCHW
        self.input_spec = input_spec_for(spec, self.input_format)
        self.output_spec = output_spec_for(spec)
        self.max_batch = None
        self.check_finite = check_finite
        self.name = name or f"torch-{self.precision.value}"
        self._torch = torch
        dtype = torch.float16 if self.precision is Precision.FP16 else torch.float32
        self._dtype = dtype
        # A copy, so the caller's model keeps its dtype/device.
        import copy

        self._model: Any = copy.deepcopy(model).to(device=dev, dtype=dtype).eval()
        self.last_gpu_time_ms: float | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; returns float32 logits ``(N, num_classes)``.

        On CUDA, :attr:`last_gpu_time_ms` holds the forward pass time measured with CUDA events.

        Raises:
            EngineError: Bad input (see :func:`check_batch`) or a closed runner.
        """
        batch = self._validate(batch)
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(device=self.device, dtype=self._dtype)
            if self.device.startswith("cuda"):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                y = self._model(x)
                end.record()
                out = y.float().cpu().numpy()  # synchronises
                self.last_gpu_time_ms = float(start.elapsed_time(end))
            else:
                out = self._model(x).float().numpy()
        return self._check_output(out, batch.shape[0])

    def describe(self) -> dict[str, Any]:
        """Backend facts: device, threads, torch version, checkpoint."""
        torch = self._torch
        return {
            **self._describe_common(RunnerKind.TORCH, self.path),
            "provider": f"torch-{self.device.split(':')[0]}",
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }

    def close(self) -> None:
        """Drop the model (idempotent)."""
        if not self._closed:
            self._model = None
        super().close()


# ---------------------------------------------------------------------------------------------
# the registry: choosing a runner by file type


def _tensorrt_runner() -> type:
    from .trt.runtime import TensorRTRunner

    return TensorRTRunner


def _gpu_ordinal(device: str | int) -> Any:
    """``cuda:1`` / ``1`` -> ``1`` (the TensorRT runner takes a CUDA ordinal)."""
    text = str(device)
    text = text.split(":", 1)[1] if text.startswith("cuda:") else text
    return int(text) if text.isdigit() else device


def _torch_device(device: str | int) -> Any:
    """``1`` -> ``cuda:1``; ``cpu`` / ``cuda`` / ``cuda:1`` unchanged."""
    return f"cuda:{device}" if isinstance(device, int) or str(device).isdigit() else device


@dataclass(frozen=True)
class RunnerEntry:
    """How the registry opens one kind of model file.

    Attributes:
        kind: The backend.
        describe: What the files are, for messages (``"TensorRT engines"``).
        suffixes: A callable returning the file suffixes this backend opens (lazy, so that
            the registry itself imports nothing heavy).
        runner_class: A callable returning the Runner class (imported on first use).
        options: The generic settings (:data:`RUNNER_OPTIONS`) this runner takes.
        device_option: Turns a device (``cuda:1`` or an ordinal) into this runner's
            ``device=`` value; ``None`` when the runner has no device option.
        keywords: Every keyword option the runner class takes (declared here, checked against
            its signature by the tests): :func:`open_runner` refuses others, and a bundle
            drops those meant for the runner it did not open with.
    """

    kind: RunnerKind
    describe: str
    suffixes: Callable[[], tuple[str, ...]]
    runner_class: Callable[[], type]
    options: frozenset[str]
    device_option: Callable[[str | int], Any] | None
    keywords: frozenset[str] = frozenset()


#: Deprecated keyword spellings a runner still takes (with a DeprecationWarning).
_DEPRECATED_KEYWORDS = {RunnerKind.TENSORRT: frozenset({"cuda_backend"})}

#: Every backend, in the order suffixes are matched. Add a backend here (and in RunnerKind).
RUNNERS: dict[RunnerKind, RunnerEntry] = {
    e.kind: e for e in (
        RunnerEntry(RunnerKind.TENSORRT, "TensorRT engines", lambda: ENGINE_SUFFIXES,
                    _tensorrt_runner, options=frozenset({"cuda_graphs"}),
                    device_option=_gpu_ordinal,
                    keywords=frozenset({"device", "cuda_binding", "cuda_graphs", "check_finite",
                                        "gpu_timing", "name", "verify_sha256", "runtime_cache"})),
        RunnerEntry(RunnerKind.ONNXRUNTIME, "ONNX", lambda: ONNX_SUFFIXES,
                    lambda: OnnxRuntimeRunner, options=frozenset({"threads", "providers"}),
                    device_option=None,
                    keywords=frozenset({"providers", "threads", "name", "check_finite"})),
        RunnerEntry(RunnerKind.TORCH, "checkpoints", lambda: CHECKPOINT_SUFFIXES,
                    lambda: TorchRunner, options=frozenset({"threads"}),
                    device_option=_torch_device,
                    keywords=frozenset({"device", "precision", "threads", "name",
                                        "check_finite"})),
    )
}

#: The generic runner settings (:func:`runner_options`), as said in messages.
RUNNER_OPTIONS = {"threads": "CPU threads", "cuda_graphs": "CUDA graphs",
                  "providers": "ONNX Runtime execution providers"}


@dataclass(frozen=True)
class RunnerOptions:
    """The generic runner settings of a run (the CLI's runner flags, Triton's Python backend),
    whatever model opens with them; which runner takes which is declared in :data:`RUNNERS`.

    Attributes:
        threads: CPU threads (ONNX Runtime, torch).
        device: ``cpu``, ``cuda[:i]`` or a GPU ordinal (torch, TensorRT).
        cuda_graphs: Replay CUDA graphs (TensorRT engines).
        providers: ONNX Runtime execution providers in priority order.
        cuda_binding: ``cuda-python`` or ``pycuda`` (TensorRT engines; ``None``: the runner's
            default).
    """

    threads: int | None = None
    device: str | int | None = None
    cuda_graphs: bool = False
    providers: tuple[str, ...] | None = None
    cuda_binding: str | None = None

    def __post_init__(self) -> None:
        if self.providers is not None:
            object.__setattr__(self, "providers", tuple(self.providers))

    def settings(self) -> dict[str, Any]:
        """``threads``, ``cuda_graphs`` and ``providers`` (as recorded in reports)."""
        return {"threads": self.threads, "cuda_graphs": self.cuda_graphs,
                "providers": list(self.providers) if self.providers is not None else None}

    def check(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        """:func:`check_runner_options` for these settings."""
        check_runner_options(paths, threads=self.threads, cuda_graphs=self.cuda_graphs,
                             providers=self.providers)

    def for_model(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """The keyword options of ``path``'s runner (:func:`runner_options`), plus
        ``cuda_binding`` for a TensorRT engine or a bundle."""
        kw = runner_options(path, threads=self.threads, device=self.device,
                            cuda_graphs=self.cuda_graphs, providers=self.providers)
        if self.cuda_binding is not None and (
                is_bundle(path) or "cuda_binding" in RUNNERS[runner_kind(path)].keywords):
            kw["cuda_binding"] = self.cuda_binding
        return kw


def _entry_types(entries: Sequence[RunnerEntry], joiner: str = " or ") -> str:
    """``TensorRT engines (.engine, .plan) or ...`` for messages."""
    return joiner.join(f"{e.describe} ({', '.join(e.suffixes())})" for e in entries)


def runner_kind(path: str | os.PathLike[str]) -> RunnerKind:
    """The backend that opens a model file, by suffix (a :class:`RunnerKind`, equal to its
    string value: ``"tensorrt"``, ``"onnxruntime"`` or ``"torch"``).

    A bundle (``.xtrt``) is not one backend: which one runs it is decided when it is opened
    (:func:`open_runner`); use :func:`is_model_file` to accept every model file.

    Raises:
        EngineError: The suffix is not a supported model type (message lists the types).
    """
    if is_hub_id(path):  # a Hugging Face Hub model id names a checkpoint
        return RunnerKind.TORCH
    suffix = Path(path).suffix.lower()
    for entry in RUNNERS.values():
        if suffix in entry.suffixes():
            return entry.kind
    raise EngineError(f"{path}: unknown model type {suffix or '(no suffix)'!r}; supported: "
                      f"{_entry_types(list(RUNNERS.values()), ', ')}, bundles "
                      f"({', '.join(BUNDLE_SUFFIXES)})")


def is_model_file(path: str | os.PathLike[str]) -> bool:
    """Whether :func:`open_runner` opens this file type (a bundle or a backend's file)."""
    if is_bundle(path):
        return True
    try:
        runner_kind(path)
    except EngineError:
        return False
    return True


def runner_options(path: str | os.PathLike[str], *, threads: int | None = None,
                   device: str | int | None = None, cuda_graphs: bool = False,
                   providers: Sequence[str] | None = None) -> dict[str, Any]:
    """Runner keyword options for a model file from generic settings (CLI flags, Triton).

    ``threads``, ``cuda_graphs`` and ``providers`` are passed only to backends that take them
    (:attr:`RunnerEntry.options`; :func:`check_runner_options` refuses settings that no model
    of a run takes); ``device`` is converted to what the backend takes (a CUDA ordinal for
    TensorRT, ``cuda:<i>`` for torch) and passed unchanged to a backend without a device
    option, which then refuses it with a clear error.

    Raises:
        EngineError: Unknown model type.
    """
    if is_bundle(path):  # the backend is chosen on opening; open_runner drops what it ignores
        return {k: v for k, v in (("threads", threads), ("device", device),
                                  ("cuda_graphs", cuda_graphs or None),
                                  ("providers", list(providers) if providers is not None
                                   else None)) if v is not None}
    entry = RUNNERS[runner_kind(path)]
    given = {"threads": threads, "cuda_graphs": cuda_graphs or None,
             "providers": list(providers) if providers is not None else None}
    kw: dict[str, Any] = {k: v for k, v in given.items() if v is not None and k in entry.options}
    if device is not None:
        kw["device"] = entry.device_option(device) if entry.device_option else device
    return kw


def check_runner_options(paths: Sequence[str | os.PathLike[str]], *,
                         threads: int | None = None, cuda_graphs: bool = False,
                         providers: Sequence[str] | None = None) -> None:
    """Refuse a generic runner setting that none of ``paths`` would use (it would be silently
    dropped by :func:`runner_options`), and provider names this onnxruntime lacks.

    Args:
        paths: The model files of one run.
        threads: CPU threads (ONNX Runtime, torch).
        cuda_graphs: CUDA graph replay (TensorRT engines).
        providers: ONNX Runtime execution providers.

    A bundle (``.xtrt``) may open as an engine or with ONNX Runtime, so it takes every setting
    (the one its backend ignores is dropped when it opens).

    Raises:
        ConfigError: A setting given that no model's backend takes (names the backends that do).
        EngineError: Unknown model type or an unavailable provider.
    """
    bundles = [p for p in paths if is_bundle(p)]
    paths = [p for p in paths if not is_bundle(p)]
    entries = [RUNNERS[runner_kind(p)] for p in paths]
    given = {"threads": threads is not None, "cuda_graphs": bool(cuda_graphs),
             "providers": providers is not None}
    for option, on in given.items():
        if on and not bundles and not any(option in e.options for e in entries):
            takers = [e for e in RUNNERS.values() if option in e.options]
            names = ", ".join(f"{Path(p).name} ({e.kind})" for p, e in zip(paths, entries))
            raise ConfigError(f"{RUNNER_OPTIONS[option]} need {_entry_types(takers)}; "
                              f"{names} would ignore them — drop the option or give such a "
                              "model")
    if cuda_graphs:
        _refuse_dla_graphs(paths)
    if providers is not None:
        check_providers(providers)


def _refuse_dla_graphs(paths: Sequence[str | os.PathLike[str]]) -> None:
    """CUDA graphs and DLA offloading do not go together (trtexec refuses the pair: TensorRT
    ``samples/common/sampleOptions.cpp``; NVIDIA/TensorRT issue 3524): refuse ``cuda_graphs``
    for an engine whose sidecar records a DLA core, before any work (the runner refuses it
    too when it opens). An engine whose sidecar cannot be read is left to the runner's
    own, fuller error."""
    from .sidecar import read_sidecar

    for p in paths:
        if runner_kind(p) is not RunnerKind.TENSORRT:
            continue
        try:
            core = read_sidecar(Path(p)).option("dla_core")
        except XceptionTRTError:
            continue
        if core is not None:
            raise ConfigError(f"--cuda-graphs cannot be used with {Path(p).name}: it runs on "
                              f"DLA core {core}, and CUDA graphs and DLA offloading are not "
                              "supported together (as trtexec says) — drop --cuda-graphs, or "
                              "use an engine built without --dla-core")


@dataclass(frozen=True)
class BuiltEngine:
    """An engine with the ONNX graph it was built from: what
    :meth:`xception_trt.pipeline.BuildResult.engine` returns.

    :func:`open_runner` (and so :class:`~xception_trt.classifier.Classifier`) opens it by a
    bundle's rule: the engine where this machine can run it, else — no TensorRT that can run
    it, no GPU, an engine built for another GPU or TensorRT — its ONNX graph with ONNX Runtime,
    with a warning that says why. ``os.fspath()`` / ``str()`` give the engine's path; opening
    that path opens the engine and nothing else.

    Attributes:
        engine: The plan file (its sidecar is ``<engine>.json``).
        onnx: The ONNX graph it was built from (same precision).
    """

    engine: Path
    onnx: Path

    def __fspath__(self) -> str:
        return os.fspath(self.engine)

    def __str__(self) -> str:
        return str(self.engine)


#: Engine options that only an engine honours: asking for one means "run the engine", so a
#: built engine that cannot run here is an error then, not a fallback to ONNX Runtime.
_ENGINE_ONLY = ("device", "cuda_graphs", "cuda_binding", "gpu_timing", "runtime_cache")


def _why_not_here(engine: Path, device: int) -> str | None:
    """Why this machine cannot run ``engine`` (``None``: it can), decided before opening it by
    the rule a bundle's prebuilt engines follow (:func:`xception_trt.bundle.choice.
    engine_mismatch`): its flavour installed, a GPU, the plan's GPU / TensorRT release."""
    from .bundle.choice import Request, engine_mismatch
    from .bundle.facts import probe_facts
    from .bundle.format import EngineEntry
    from .sidecar import read_sidecar, sidecar_path

    sidecar = read_sidecar(engine)  # a missing or broken sidecar is an error, not this machine
    return engine_mismatch(EngineEntry(engine.name, sidecar_path(engine).name, sidecar),
                           probe_facts(), Request(sidecar.precision, device=device))


def _open_built(built: BuiltEngine, kw: dict[str, Any]) -> Runner:
    """Open a :class:`BuiltEngine`: the engine, or its ONNX graph where this machine cannot
    run the engine (no TensorRT of its flavour, no GPU, built for another GPU or release).
    A damaged engine, or one that fails for another reason, is an error as for any engine."""
    engine_entry = RUNNERS[RunnerKind.TENSORRT]
    onnx_entry = RUNNERS[RunnerKind.ONNXRUNTIME]
    takes = (engine_entry.keywords | onnx_entry.keywords
             | _DEPRECATED_KEYWORDS.get(engine_entry.kind, frozenset()))
    bad = sorted(k for k in kw if k not in takes)
    if bad:
        raise ConfigError(f"a built engine does not take option(s) {', '.join(bad)} (it takes "
                          f"those of the {engine_entry.kind} and {onnx_entry.kind} runners: "
                          f"{', '.join(sorted(engine_entry.keywords | onnx_entry.keywords))})")
    problem = path_problem(built.engine)
    if problem is not None:  # a lost file is a mistake to report, not a machine to work around
        raise EngineError(f"engine file {built.engine} {problem}")
    device = _gpu_ordinal(kw["device"]) if kw.get("device") is not None else 0
    why = _why_not_here(built.engine, device if isinstance(device, int) else 0)
    if why is None:
        return open_runner(built.engine, **{k: v for k, v in kw.items()
                                            if k not in onnx_entry.keywords
                                            or k in engine_entry.keywords})
    asked = [k for k in _ENGINE_ONLY if kw.get(k) not in (None, False)]
    if asked:
        raise EngineError(f"{built.engine} cannot run here ({why}), and {', '.join(asked)} "
                          f"asked for the engine; drop {', '.join(asked)} to run the graph it "
                          f"was built from ({built.onnx}) with ONNX Runtime, or run it where "
                          "it can run")
    problem = path_problem(built.onnx)
    if problem is not None:
        raise EngineError(f"{built.engine} cannot run here ({why}), and the graph it was built "
                          f"from, {built.onnx}, {problem}")
    log.warning("%s cannot run here (%s); running the graph it was built from, %s, with "
                "ONNX Runtime instead", built.engine.name, why, built.onnx)
    return open_runner(built.onnx, **{k: v for k, v in kw.items()
                                      if k in onnx_entry.keywords})


def open_runner(path: str | os.PathLike[str], **kw: Any) -> Runner:
    """Open the right runner for a model file (see :data:`RUNNERS`).

    ``.engine``/``.plan`` -> ``xception_trt.trt.runtime.TensorRTRunner``; ``.onnx`` ->
    :class:`OnnxRuntimeRunner`; checkpoints and Hugging Face Hub model ids ->
    :class:`TorchRunner`; a bundle (``.xtrt``) ->
    the engine that fits this machine (prebuilt, or built into the engine cache) or, without
    a usable TensorRT/GPU, its ONNX with ONNX Runtime (:func:`xception_trt.bundle.cache.resolve`).

    Args:
        path: The model file, or a :class:`BuiltEngine` (the engine, or its ONNX graph where
            the engine cannot run here).
        **kw: Options of that runner class (e.g. ``threads`` for ONNX Runtime and torch). For a
            bundle also ``precision``, ``max_batch``, ``flavour`` (old name ``backend``,
            deprecated), ``build``, ``onnxruntime``, ``tensorrt``, ``dla_core``,
            ``engine``, ``cache_dir`` and ``facts`` (see ``resolve``), and ``tuned`` (default
            ``True``:
            the configuration ``xception-trt tune`` recorded for the bundle on this machine
            fills the options left unset, said in one line; the runner's ``tuned`` attribute
            is that :class:`~xception_trt.bundle.tuned.TunedChoice` or ``None``; ``False``:
            ignore it); ``threads`` and ``device`` are passed on only to the runner that
            takes them.

    Raises:
        EngineError: Missing file or unknown type (a BundleError for a bad bundle).
        ConfigError: An option the chosen runner does not take.
    """
    if isinstance(path, BuiltEngine):
        return _open_built(path, kw)
    path = Path(path)
    problem = path_problem(path)
    if is_bundle(path):
        if problem is not None:
            raise EngineError(f"bundle {path} {problem}")
        if "backend" in kw:
            kw["flavour"] = renamed("backend", "flavour", kw.pop("backend"),
                                    kw.pop("flavour", None), where="open_runner")
        return _open_bundle(path, kw)
    kind = runner_kind(path)
    if problem is not None and not is_hub_id(path):  # a Hub id: the torch runner reads it
        raise EngineError(f"model file {path} {problem}")
    entry = RUNNERS[kind]
    bad = sorted(k for k in kw if k not in entry.keywords
                 and k not in _DEPRECATED_KEYWORDS.get(kind, ()))
    if bad:
        raise ConfigError(f"the {kind} runner does not take option(s) {', '.join(bad)} "
                          f"(it takes: {', '.join(sorted(entry.keywords)) or 'none'})")
    cls = entry.runner_class()
    log.info("opening %s with %s", path, cls.__name__)
    return cls(path, **kw)


#: open_runner options that belong to the bundle, not to the runner it resolves to.
_BUNDLE_OPTIONS = ("precision", "max_batch", "flavour", "build", "onnxruntime", "cache_dir",
                   "facts", "tensorrt", "dla_core", "engine")


def _open_bundle(path: Path, kw: dict[str, Any]) -> Runner:
    """Resolve a bundle (:func:`xception_trt.bundle.cache.resolve`) and open the file it
    resolved to. Options meant for the other backend are dropped (logged): ``threads`` for an
    engine; ``device``, ``cuda_graphs`` ... when ONNX Runtime runs it.

    The configuration ``xception-trt tune`` recorded for this bundle on this machine
    (:mod:`xception_trt.bundle.tuned`) fills the options the caller left unset, said in one
    line; ``tuned=False`` ignores it."""
    from .bundle.cache import resolve
    from .bundle.tuned import tuned_options

    use_tuned = kw.pop("tuned", True)
    if not isinstance(use_tuned, bool):
        raise ConfigError(f"tuned must be True or False, got {use_tuned!r}")
    choice = None
    if use_tuned:
        choice, fill, notice = tuned_options(path, kw, cache_dir=kw.get("cache_dir"),
                                             facts=kw.get("facts"))
        if notice is not None:
            log.warning("%s", notice)
        kw.update(fill)
    bundle_kw = {k: kw.pop(k) for k in _BUNDLE_OPTIONS if k in kw}
    if kw.get("device") is not None and isinstance(_gpu_ordinal(kw["device"]), int):
        bundle_kw["device"] = _gpu_ordinal(kw["device"])
    resolution = resolve(path, **bundle_kw)
    entry = RUNNERS[runner_kind(resolution.path)]
    others = [e for e in RUNNERS.values() if e.kind is not entry.kind]
    for key in list(kw):
        if key not in entry.keywords and any(
                key in e.keywords | _DEPRECATED_KEYWORDS.get(e.kind, frozenset()) for e in others):
            log.info("%s: option %s does not apply to the %s runner it opened with; ignored",
                     path.name, key, entry.kind)
            del kw[key]
    if "device" in kw and entry.device_option is not None:
        kw["device"] = entry.device_option(kw["device"])
    runner = open_runner(resolution.path, **kw)
    runner.bundle = resolution  # type: ignore[attr-defined]  # where it came from (describe)
    runner.tuned = choice  # type: ignore[attr-defined]  # the tuned configuration it used
    runner.name = f"{path.stem}:{runner.name}"  # type: ignore[misc]
    return runner
