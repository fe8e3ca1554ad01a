"""The runner contract: what every inference backend takes and returns, and the lifecycle they
share. The lowest runner layer: :mod:`xception_trt.runners` (ONNX Runtime, torch, the registry),
:mod:`xception_trt.trt` (TensorRT, CUDA) and :mod:`xception_trt.classifier` build on it, and it
imports nothing above :mod:`xception_trt.config`.

A runner takes a preprocessed batch as a NumPy array and returns float32 logits
``(N, num_classes)``. Optional timing hook: a runner MAY expose ``last_gpu_time_ms: float |
None``, the GPU compute time of its most recent ``__call__`` measured with CUDA events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .config import InputFormat, ModelSpec, Precision, StrEnum
from .errors import EngineError
from .jsonable import JsonMixin
from .onnx_meta import INPUT_NAME, OUTPUT_NAME

__all__ = ["RunnerKind", "TensorSpec", "Runner", "RunnerBase", "check_batch", "input_spec_for",
           "output_spec_for", "check_axes", "relative_logit_diff", "ENGINE_SUFFIXES",
           "ONNX_SUFFIXES"]


class RunnerKind(StrEnum):
    """The inference backends (the keys of :data:`xception_trt.runners.RUNNERS`)."""

    TENSORRT = "tensorrt"
    ONNXRUNTIME = "onnxruntime"
    TORCH = "torch"


#: File suffixes of serialized TensorRT engines.
ENGINE_SUFFIXES = (".engine", ".plan")
#: File suffixes of ONNX graphs.
ONNX_SUFFIXES = (".onnx",)


@dataclass(frozen=True)
class TensorSpec(JsonMixin):
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
        return TensorSpec(INPUT_NAME, (batch, s, s, c), np.dtype(np.uint8))
    return TensorSpec(INPUT_NAME, (batch, c, s, s), np.dtype(np.float32))


def output_spec_for(spec: ModelSpec, batch: int = -1) -> TensorSpec:
    """The logits :class:`TensorSpec`: float32 ``(N, num_classes)``."""
    return TensorSpec(OUTPUT_NAME, (batch, spec.num_classes), np.dtype(np.float32))


def relative_logit_diff(logits: np.ndarray, reference: np.ndarray) -> float:
    """The largest absolute difference between two runners' logits, relative to the logit
    scale (the reference's largest absolute logit).

    An absolute bound means nothing across models: trained logits are ~10, a random-weight
    model's ~1e-4, and a bound of 1e-4 passes any output of the latter.

    Args:
        logits: ``(N, num_classes)`` logits to check.
        reference: The reference logits, same shape.

    Returns:
        ``max |logits - reference| / max |reference|`` (0.0 when both are all zero; ``inf``
        when only the reference is; ``nan`` when any value is NaN).
    """
    a = np.asarray(logits, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    diff = float(np.abs(a - ref).max()) if a.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


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


def check_axes(shape: tuple[int, ...], want: TensorSpec, *, runner: str, what: str = "input",
               hint: str = "") -> None:
    """Raise when an axis of ``shape`` differs from ``want`` (whose ``-1`` axes match anything).
    Ranks are checked by the caller.

    Raises:
        EngineError: Names the first differing axis, its size and the expected one.
    """
    for axis, (w, g) in enumerate(zip(want.shape, shape)):
        if w != -1 and w != g:
            raise EngineError(f"{runner}: {what} shape {tuple(shape)} does not match "
                              f"{want.describe()} (axis {axis} is {g}, expected {w}){hint}")


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
        if batch.dtype.newbyteorder("=") == want.dtype or batch.dtype.name == want.dtype.name:
            # same type, other byte order (e.g. '>f4' from a big-endian file): the names match
            order = "big" if batch.dtype.byteorder == ">" else "little"
            raise EngineError(f"{runner}: input is {batch.dtype.name} in {order}-endian byte "
                              f"order ({batch.dtype.str}); this machine's order is needed: "
                              f"convert with x.astype(numpy.{want.dtype.name})")
        if want.dtype == np.uint8:
            fix = ("this model takes raw uint8 NHWC pixels (input format uint8-nhwc); give "
                   "preprocess_uint8 output, not normalised floats")
        else:
            fix = f"convert with x.astype(numpy.{want.dtype.name})"
        raise EngineError(f"{runner}: input dtype must be {want.dtype.name}, got "
                          f"{batch.dtype.name}; {fix}")
    check_axes(batch.shape, want, runner=runner, hint=_layout_hint(batch, want))
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


class RunnerBase(Runner):
    """The lifecycle every runner shares: closed state, context manager, ``repr`` and input /
    output validation. ONNX Runtime, torch and the CUDA runners (TensorRT and the self-test's
    stand-in) all derive from it; subclasses override :meth:`close` and call ``super().close()``.
    It subclasses the :class:`Runner` protocol explicitly, so the attributes are declared once.
    """

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

    def _describe_common(self, backend: RunnerKind, path: Any) -> dict[str, Any]:
        """The keys every runner's ``describe()`` starts with."""
        return {
            "backend": backend.value,
            "name": self.name,
            "path": str(path) if path else None,
            "precision": self.precision.value,
            "input_format": self.input_format.value,
            "input": self.input_spec.to_dict(),
            "output": self.output_spec.to_dict(),
            "max_batch": self.max_batch,
            "device": self.device,
        }

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
        # Safe on a half-initialised runner (a failed __init__ may still be printed).
        state = "closed" if self._closed else getattr(self, "device", "?")
        name = getattr(self, "name", "?")
        ins, outs = getattr(self, "input_spec", None), getattr(self, "output_spec", None)
        io = (f" {ins.describe()} -> {outs.describe()}" if ins is not None and outs is not None
              else "")
        return f"<{type(self).__name__} {name}{io} ({state})>"


