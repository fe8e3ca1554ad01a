"""One Runner protocol for every backend (TensorRT, ONNX Runtime, the torch reference) and the
application API on top of it (:class:`Classifier`).

A runner takes a preprocessed batch as a NumPy array and returns float32 logits
``(N, num_classes)``. Benchmarks, evaluation and comparisons treat every backend alike::

    with open_runner("xception_fp16.onnx") as runner:
        logits = runner(batch)          # batch: runner.input_spec.shape / .dtype

    clf = Classifier("xception.engine")
    clf.classify(["cat.jpg"], top_k=5)  # [[Prediction(label='tabby', index=281, probability=...)]]

Optional timing hook: a runner MAY expose ``last_gpu_time_ms: float | None``, the GPU compute
time of its most recent ``__call__`` measured with CUDA events (``None`` when not measured).
:mod:`xception_trt.bench` reports it next to the end-to-end wall time when present.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from .config import InputFormat, ModelSpec, Precision
from .errors import ConfigError, DataError, EngineError
from .onnx_meta import INPUT_NAME, OUTPUT_NAME

__all__ = ["TensorSpec", "Runner", "OnnxRuntimeRunner", "TorchRunner", "open_runner",
           "runner_kind", "check_batch", "input_spec_for", "output_spec_for",
           "ENGINE_SUFFIXES", "ONNX_SUFFIXES", "Prediction", "Classifier", "softmax"]

log = logging.getLogger(__name__)

#: File suffixes of serialized TensorRT engines.
ENGINE_SUFFIXES = (".engine", ".plan")
#: File suffixes of ONNX graphs.
ONNX_SUFFIXES = (".onnx",)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of a runner input or output.

    Attributes:
        name: Tensor name in the graph/engine (``input`` / ``logits``).
        shape: Dimensions; ``-1`` marks the dynamic batch axis.
        dtype: NumPy dtype (``float32`` or ``uint8``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    def describe(self) -> str:
        """``name[N,3,299,299] float32`` (``N`` for the dynamic batch)."""
        dims = ",".join("N" if d == -1 else str(d) for d in self.shape)
        return f"{self.name}[{dims}] {self.dtype.name}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype.name}


@runtime_checkable
class Runner(Protocol):
    """What every inference backend provides (TensorRT, ONNX Runtime, torch).

    Attributes:
        name: Short display name (``onnxruntime-fp16``, ``tensorrt-int8`` ...).
        spec: The model's architecture and preprocessing.
        input_format: ``float-nchw`` (normalised float32 NCHW) or ``uint8-nhwc`` (raw pixels).
        precision: Compute precision of the model variant.
        input_spec: The input tensor (``-1`` = dynamic batch).
        output_spec: The logits tensor, float32 ``(-1, num_classes)``.
        max_batch: Largest batch accepted, ``None`` when unbounded.
        device: ``"cpu"`` or ``"cuda:<i>"``.
    """

    name: str
    spec: ModelSpec
    input_format: InputFormat
    precision: Precision
    input_spec: TensorSpec
    output_spec: TensorSpec
    max_batch: int | None
    device: str

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; returns float32 logits ``(N, num_classes)``."""
        ...

    def describe(self) -> dict[str, Any]:
        """Backend, provider, threads, versions ... as a JSON-ready dict."""
        ...

    def close(self) -> None:
        """Release resources; calling it again does nothing."""
        ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> None: ...


# ---------------------------------------------------------------------------------------------
# shared pieces


def input_spec_for(spec: ModelSpec, input_format: InputFormat | str,
                   batch: int = -1) -> TensorSpec:
    """The input :class:`TensorSpec` of a model with ``spec`` taking ``input_format``.

    Args:
        spec: The model spec (channels, input size).
        input_format: ``float-nchw`` -> float32 ``(N, C, S, S)``; ``uint8-nhwc`` -> uint8
            ``(N, S, S, C)``.
        batch: Fixed batch size, or ``-1`` for a dynamic batch.
    """
    fmt = InputFormat.parse(input_format)
    s, c = spec.input_size, spec.in_chans
    if fmt is InputFormat.UINT8_NHWC:
        return TensorSpec(INPUT_NAME, (batch, s, s, c), np.uint8)
    return TensorSpec(INPUT_NAME, (batch, c, s, s), np.float32)


def output_spec_for(spec: ModelSpec, batch: int = -1) -> TensorSpec:
    """The logits :class:`TensorSpec`: float32 ``(N, num_classes)``."""
    return TensorSpec(OUTPUT_NAME, (batch, spec.num_classes), np.float32)


def _layout_hint(batch: np.ndarray, want: TensorSpec) -> str:
    """A fix for the commonest mistake: NHWC given to an NCHW model or the reverse."""
    shape = batch.shape
    if len(shape) != 4 or len(want.shape) != 4:
        return ""
    if want.dtype == np.uint8 and shape[1:] == (want.shape[3], want.shape[1], want.shape[2]):
        return ("; the array looks like NCHW but this model takes raw NHWC uint8 pixels "
                "(xception_trt.preprocess.preprocess_uint8)")
    if want.dtype == np.float32 and shape[1:] == (want.shape[2], want.shape[3], want.shape[1]):
        return ("; the array looks like NHWC but this model takes NCHW — transpose with "
                "x.transpose(0, 3, 1, 2) or use xception_trt.preprocess.preprocess_batch")
    return ""


def check_batch(batch: Any, want: TensorSpec, *, max_batch: int | None = None,
                runner: str = "runner", check_finite: bool = False) -> np.ndarray:
    """Validate a batch against a runner's input spec; returns it unchanged.

    Args:
        batch: The array given to the runner.
        want: The runner's ``input_spec`` (``-1`` matches any batch size).
        max_batch: Largest batch accepted (``None``: unbounded).
        runner: Runner name for the message.
        check_finite: Also reject NaN/Inf (float inputs only; costs one pass over the data).

    Raises:
        EngineError: Not an ndarray, wrong rank/dtype/shape, empty batch, batch above
            ``max_batch``, not C-contiguous, or non-finite values; the message says the fix.
    """
    expected = f"{want.describe()}"
    if not isinstance(batch, np.ndarray):
        raise EngineError(f"{runner}: input must be a numpy.ndarray {expected}, got "
                          f"{type(batch).__name__}; convert with numpy.asarray(x)")
    if batch.ndim != len(want.shape):
        hint = " (add the batch axis with x[None])" if batch.ndim == len(want.shape) - 1 else ""
        raise EngineError(f"{runner}: input must have rank {len(want.shape)} {expected}, got "
                          f"rank {batch.ndim} with shape {batch.shape}{hint}")
    if batch.dtype != want.dtype:
        if want.dtype == np.uint8:
            fix = ("this model takes raw uint8 NHWC pixels (input format uint8-nhwc); give "
                   "preprocess_uint8 output, not normalised floats")
        else:
            fix = f"convert with x.astype(numpy.{want.dtype.name})"
        raise EngineError(f"{runner}: input dtype must be {want.dtype.name}, got "
                          f"{batch.dtype.name}; {fix}")
    for axis, (w, g) in enumerate(zip(want.shape, batch.shape)):
        if w != -1 and w != g:
            raise EngineError(f"{runner}: input shape {batch.shape} does not match {expected} "
                              f"(axis {axis} is {g}, expected {w}){_layout_hint(batch, want)}")
    n = batch.shape[0]
    if n < 1:
        raise EngineError(f"{runner}: the batch is empty (shape {batch.shape}); give at least "
                          "one image")
    if max_batch is not None and n > max_batch:
        raise EngineError(f"{runner}: batch {n} exceeds this model's maximum batch {max_batch}; "
                          "split the input into smaller batches or rebuild with a larger "
                          "maximum batch")
    if not batch.flags.c_contiguous:
        raise EngineError(f"{runner}: input array is not C-contiguous (a transposed or sliced "
                          "view); pass numpy.ascontiguousarray(x)")
    if check_finite and batch.dtype.kind == "f" and not np.isfinite(batch).all():
        raise EngineError(f"{runner}: input contains NaN or Inf values; check the "
                          "preprocessing")
    return batch


class _RunnerBase:
    """Closed-state handling, context manager and input validation shared by our runners."""

    name: str
    spec: ModelSpec
    input_format: InputFormat
    precision: Precision
    input_spec: TensorSpec
    output_spec: TensorSpec
    max_batch: int | None
    device: str
    check_finite: bool = False
    _closed: bool = False

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError(f"{self.name}: the runner is closed; open a new one with "
                              "open_runner(path)")

    def _validate(self, batch: Any) -> np.ndarray:
        self._check_open()
        return check_batch(batch, self.input_spec, max_batch=self.max_batch, runner=self.name,
                           check_finite=self.check_finite)

    def _check_output(self, out: Any, n: int) -> np.ndarray:
        out = np.asarray(out)
        if out.dtype != np.float32:
            out = out.astype(np.float32)
        if out.shape != (n, self.spec.num_classes):
            raise EngineError(f"{self.name}: the model returned shape {out.shape}, expected "
                              f"({n}, {self.spec.num_classes}); the file does not match its "
                              "metadata — re-export it")
        return out

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def close(self) -> None:
        """Release the backend's resources (idempotent)."""
        self._closed = True

    def __enter__(self) -> Any:
        self._check_open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.device
        return (f"<{type(self).__name__} {self.name} {self.input_spec.describe()} -> "
                f"{self.output_spec.describe()} ({state})>")


# ---------------------------------------------------------------------------------------------
# ONNX Runtime


class OnnxRuntimeRunner(_RunnerBase):
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
    """

    def __init__(self, onnx_path: str | os.PathLike[str], *, providers: Sequence[str] | None = None,
                 threads: int | None = None, name: str | None = None,
                 check_finite: bool = False) -> None:
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
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in available]
        providers = list(providers)
        unknown = [p for p in providers if p not in available]
        if not providers or unknown:
            raise EngineError(f"ONNX Runtime execution provider(s) {unknown or providers} not "
                              f"available in this onnxruntime build; available: "
                              f"{', '.join(available)}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # ORT warnings go to stderr, bypassing logging
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... classes
            raise EngineError(f"ONNX Runtime cannot load {self.path}: {exc}".splitlines()[0]
                              + " — re-export the model or check the onnxruntime version"
                              ) from None
        self.providers = list(self._session.get_providers())
        self.device = "cuda:0" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
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
            "backend": "onnxruntime",
            "name": self.name,
            "path": str(self.path),
            "precision": self.precision.value,
            "input_format": self.input_format.value,
            "input": self.input_spec.to_dict(),
            "output": self.output_spec.to_dict(),
            "max_batch": self.max_batch,
            "device": self.device,
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


# ---------------------------------------------------------------------------------------------
# torch reference


class TorchRunner(_RunnerBase):
    """Run the PyTorch reference Xception (from a checkpoint file or a model object).

    Args:
        checkpoint_or_model: A checkpoint path (any suffix in
            :data:`xception_trt.checkpoint.CHECKPOINT_SUFFIXES`) or an ``Xception`` module.
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
    """

    def __init__(self, checkpoint_or_model: Any, *, device: str = "cpu",
                 precision: Precision | str = Precision.FP32, threads: int | None = None,
                 name: str | None = None, check_finite: bool = False) -> None:
        import torch

        self.precision = Precision.parse(precision)
        if self.precision is Precision.INT8:
            raise ConfigError("the torch runner computes in fp32 or fp16; for INT8 run the "
                              "quantized ONNX with OnnxRuntimeRunner or a TensorRT engine")
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
            torch.set_num_threads(threads)
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
            model = load_model(self.path)
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

        self._model = copy.deepcopy(model).to(device=dev, dtype=dtype).eval()
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
            "backend": "torch",
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "precision": self.precision.value,
            "input_format": self.input_format.value,
            "input": self.input_spec.to_dict(),
            "output": self.output_spec.to_dict(),
            "max_batch": self.max_batch,
            "device": self.device,
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
# choosing a runner by file type


def runner_kind(path: str | os.PathLike[str]) -> str:
    """``"tensorrt"``, ``"onnxruntime"`` or ``"torch"`` for a model file, by suffix.

    Raises:
        EngineError: The suffix is not a supported model type (message lists the types).
    """
    from .checkpoint import CHECKPOINT_SUFFIXES

    suffix = Path(path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    if suffix in ONNX_SUFFIXES:
        return "onnxruntime"
    if suffix in CHECKPOINT_SUFFIXES:
        return "torch"
    raise EngineError(
        f"{path}: unknown model type {suffix or '(no suffix)'!r}; supported: TensorRT engines "
        f"({', '.join(ENGINE_SUFFIXES)}), ONNX ({', '.join(ONNX_SUFFIXES)}) and checkpoints "
        f"({', '.join(CHECKPOINT_SUFFIXES)})")


def _runner_class(kind: str) -> type:
    if kind == "tensorrt":
        try:
            from .trt.runtime import TensorRTRunner
        except ImportError as exc:
            raise EngineError(f"the TensorRT runtime is not available in this installation "
                              f"({exc}); update xception-trt") from None
        return TensorRTRunner
    return OnnxRuntimeRunner if kind == "onnxruntime" else TorchRunner


def open_runner(path: str | os.PathLike[str], **kw: Any) -> Runner:
    """Open the right runner for a model file.

    ``.engine``/``.plan`` -> ``xception_trt.trt.runtime.TensorRTRunner``; ``.onnx`` ->
    :class:`OnnxRuntimeRunner`; checkpoints -> :class:`TorchRunner`.

    Args:
        path: The model file.
        **kw: Options of that runner class (e.g. ``threads`` for ONNX Runtime and torch).

    Raises:
        EngineError: Missing file or unknown type.
        ConfigError: An option the chosen runner does not take.
    """
    path = Path(path)
    kind = runner_kind(path)
    if not path.exists():
        raise EngineError(f"model file {path} does not exist")
    if not path.is_file():
        raise EngineError(f"{path} is not a file")
    cls = _runner_class(kind)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        bad = sorted(k for k in kw if k not in params)
        if bad:
            ok = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY)
            raise ConfigError(f"the {kind} runner does not take option(s) {', '.join(bad)} "
                              f"(it takes: {', '.join(ok) or 'none'})")
    log.info("opening %s with %s", path, cls.__name__)
    return cls(path, **kw)


# ---------------------------------------------------------------------------------------------
# application API


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Prediction:
    """One class of a classification result.

    Attributes:
        label: Class name.
        index: Class index (logit position).
        probability: Softmax probability in [0, 1].
    """

    label: str
    index: int
    probability: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"label": self.label, "index": self.index, "probability": self.probability}


def _is_single_image(x: Any) -> bool:
    from PIL import Image

    if isinstance(x, (str, os.PathLike, bytes, Image.Image)):
        return True
    return isinstance(x, np.ndarray) and x.ndim in (2, 3)


class Classifier:
    """Classify images with any model file (engine, ONNX or checkpoint).

    Preprocessing follows the model's own :class:`ModelSpec` (from the checkpoint, the ONNX
    metadata or the engine sidecar) and the runner's input format (uint8 NHWC or normalised
    float NCHW), so every backend gets exactly what it expects.

    Args:
        path: A model file, or an already open :class:`Runner` (then the caller owns it).
        batch_size: Images per runner call (capped at the runner's ``max_batch``).
        **runner_kw: Options for :func:`open_runner`.

    Raises:
        EngineError / GraphError / CheckpointError: The model cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str] | Runner, *, batch_size: int = 32,
                 **runner_kw: Any) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(path, (str, os.PathLike)):
            self.runner: Runner = open_runner(path, **runner_kw)
            self._owns = True
        else:
            if runner_kw:
                raise ConfigError("runner options cannot be given with an already open runner")
            self.runner = path
            self._owns = False
        cap = self.runner.max_batch
        self.batch_size = min(batch_size, cap) if cap else batch_size
        self.spec = self.runner.spec
        self.class_names = self.spec.class_names()

    def preprocess(self, images: Sequence[Any]) -> np.ndarray:
        """Decode and preprocess images into the runner's input layout and dtype.

        Raises:
            DataError: An image cannot be read (the message names it).
        """
        from .preprocess import preprocess_batch

        return preprocess_batch(images, self.spec, self.runner.input_format)

    def logits(self, images_or_paths: Any) -> np.ndarray:
        """Float32 logits ``(N, num_classes)`` for one image or a sequence of images."""
        images = [images_or_paths] if _is_single_image(images_or_paths) else list(images_or_paths)
        if not images:
            raise DataError("no images to classify; give at least one image or path")
        out = []
        for start in range(0, len(images), self.batch_size):
            out.append(self.runner(self.preprocess(images[start:start + self.batch_size])))
        return np.concatenate(out, axis=0)

    def classify(self, images_or_paths: Any, top_k: int = 5) -> list[list[Prediction]]:
        """Top-``k`` classes of each image.

        Args:
            images_or_paths: One image or a sequence of images: paths, encoded bytes, PIL
                images or uint8 HxWxC arrays.
            top_k: Classes per image, most probable first (capped at the model's classes).

        Returns:
            One list of :class:`Prediction` per image, in input order.

        Raises:
            ConfigError: ``top_k`` out of range.
            DataError: No images, or an image cannot be read.
            EngineError: The runner fails.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
        top_k = min(top_k, self.spec.num_classes)
        probs = softmax(self.logits(images_or_paths))
        results = []
        for row in probs:
            idx = np.argsort(-row, kind="stable")[:top_k]
            results.append([Prediction(self.class_names[i], int(i), float(row[i])) for i in idx])
        return results

    def close(self) -> None:
        """Close the runner if this classifier opened it (idempotent)."""
        if self._owns:
            self.runner.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
