"""PyTorch Xception -> clean ONNX, with metadata and a parity check against ONNX Runtime.

Exporter choice (torch 2.13 ships both):

* The TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) is the default for opsets
  up to 20. It still emits a canonical opset-17 graph (Conv with BatchNorm already folded,
  GlobalAveragePool, Flatten, Gemm; only Identity nodes to drop), and opset 17 is the newest
  opset TensorRT 8.6 (JetPack 5) parses. It is also a little cheaper (torch export of the full
  model: ~4.0 s CPU against ~4.8 s for dynamo, ``benchmarks/bench_export.py``). It is deprecated
  (torch says it "will be removed"), so:
* The dynamo exporter (``dynamo=True``, torch.export based) is used when asked, for opsets above
  20, or when the TorchScript exporter is gone. It emits opset >= 18 only (its down-conversion
  to 17 fails on ``Pad`` for TF-"same" models) and a ``ReduceMean`` + ``Reshape`` head.

Either graph then goes through :func:`xception_trt.graph.clean_graph`, which folds constants and
BatchNorm, drops Identity/Dropout, canonicalises the head to ``GlobalAveragePool -> Flatten`` and
names nodes deterministically, so both exporters give the same operator set and topology.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import InputFormat, ModelSpec, Precision
from .contract import relative_logit_diff
from .errors import ConfigError, ExportError, GraphError, renamed
from .extras import needs
from .fsio import atomic_path, check_writable_dir
from .graph import (
    MIN_OPSET,
    GraphReport,
    clean_graph,
    graph_report,
    max_supported_opset,
    uint8_nhwc_model,
)
from .jsonable import JsonMixin
from .onnx_meta import INPUT_NAME, OUTPUT_NAME, load_onnx, read_metadata, write_metadata

__all__ = [
    "PARITY_RTOL",
    "MIN_OPSET",
    "DEFAULT_OPSET",
    "EXPORTERS",
    "ExportResult",
    "ParityResult",
    "export_onnx",
    "verify_parity",
    "max_supported_opset",
    "parity_inputs",
    "state_dict_sha256",
    "read_export_settings",
]

log = logging.getLogger(__name__)

#: What the torch / ONNX imports here are for, in the message when the build extra is missing.
_PURPOSE = "exporting to ONNX"

#: Default opset: the newest TensorRT 8.6 (JetPack 5) parses; TensorRT 10 / RTX read it too.
DEFAULT_OPSET = 17
#: Newest opset the TorchScript exporter emits (torch.onnx._constants).
_TORCHSCRIPT_MAX_OPSET = 20
EXPORTERS = ("auto", "torchscript", "dynamo")
#: Dummy batch for a dynamic-batch export: not 1, so no exporter specialises the batch axis.
_TRACE_BATCH = 2

#: Parity bound: ONNX Runtime's logits may differ from PyTorch's by this fraction of the largest
#: PyTorch logit. Measured: ~5e-7 on random-weight narrow models, ~1e-5 on the full model with
#: a standardised head (benchmarks/bench_export.py); a wrong graph is off by ~1.
PARITY_RTOL = 1e-4


@dataclass(frozen=True)
class ParityResult(JsonMixin):
    """ONNX Runtime (CPU) vs PyTorch on the same inputs.

    Attributes:
        max_abs_diff: Largest absolute logit difference.
        mean_abs_diff: Mean absolute logit difference.
        top1_agreement: Fraction of samples whose arg-max class agrees (1.0 = all).
        num_samples: Samples compared.
        rtol: The bound on ``max_rel_diff``.
        input_format: Format the ONNX graph was fed (the torch model always gets float NCHW).
        max_abs_logit: Largest absolute PyTorch logit (the scale the difference is read
            against).
        max_rel_diff: ``max_abs_diff / max_abs_logit``
            (:func:`~xception_trt.contract.relative_logit_diff`).
    """

    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    num_samples: int
    rtol: float
    input_format: InputFormat = InputFormat.FLOAT_NCHW
    max_abs_logit: float = float("nan")
    max_rel_diff: float = float("nan")

    @property
    def passed(self) -> bool:
        """``max_rel_diff <= rtol`` and every top-1 class agrees."""
        return self.max_rel_diff <= self.rtol and self.top1_agreement == 1.0

    def summary(self) -> str:
        """One line: max/mean abs diff, top-1 agreement, verdict."""
        return (f"parity ({self.input_format}, {self.num_samples} samples, ORT CPU vs torch): "
                f"max |diff| {self.max_abs_diff:.3g}, mean |diff| {self.mean_abs_diff:.3g}, "
                f"top-1 agreement {self.top1_agreement:.1%}, max |logit| "
                f"{self.max_abs_logit:.3g}, relative {self.max_rel_diff:.3g} -> "
                f"{'OK' if self.passed else 'FAILED'} (bound {self.rtol:g} of max |logit|)")

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        return out | {"passed": self.passed}


@dataclass(frozen=True)
class ExportResult(JsonMixin):
    """What :func:`export_onnx` wrote.

    Attributes:
        path: The ONNX file.
        spec: The model's :class:`ModelSpec` (also in the file's metadata).
        input_format: What the graph takes as input.
        opset: ONNX opset of the graph.
        batch: ``"dynamic"`` or the fixed batch size.
        exporter: ``torchscript`` or ``dynamo``.
        clean: Whether the cleanup passes ran.
        report: Node counts / initialiser bytes before and after cleanup, file size.
        parity: The parity check run before the file was published (``None`` if skipped).
        source_sha256: SHA-256 of the checkpoint (or of the state dict) exported.
        seconds: Wall time of export + cleanup + checks, in seconds.
    """

    path: Path
    spec: ModelSpec
    input_format: InputFormat
    opset: int
    batch: int | str
    exporter: str
    clean: bool
    report: GraphReport
    parity: ParityResult | None
    source_sha256: str
    seconds: float
    precision: Precision = Precision.FP32


# ---------------------------------------------------------------------------------------------
# helpers


def state_dict_sha256(model: Any) -> str:
    """Hex SHA-256 over a module's state dict (names, dtypes, shapes and bytes, sorted by name)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _resolve_model(model_or_checkpoint: Any) -> tuple[Any, str]:
    from .model import Xception

    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        from .checkpoint import load_model

        model = load_model(model_or_checkpoint)  # CheckpointError names the problem
        return model, model.checkpoint_sha256
    if not isinstance(model_or_checkpoint, Xception):
        raise ExportError(f"cannot export a {type(model_or_checkpoint).__name__}: pass an "
                          "xception_trt Xception model or a checkpoint path")
    sha = getattr(model_or_checkpoint, "checkpoint_sha256", None)
    return model_or_checkpoint, sha or state_dict_sha256(model_or_checkpoint)


def _check_opset(opset: int, exporter: str) -> None:
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ExportError(f"opset must be an integer, got {opset!r}")
    newest = max_supported_opset()
    if not MIN_OPSET <= opset <= newest:
        raise ExportError(f"opset {opset} cannot be read by TensorRT's ONNX parser and the "
                          f"installed onnx (supported: {MIN_OPSET}..{newest}); use "
                          f"--opset {DEFAULT_OPSET}")
    if exporter == "torchscript" and opset > _TORCHSCRIPT_MAX_OPSET:
        raise ExportError(f"the TorchScript exporter writes opset <= {_TORCHSCRIPT_MAX_OPSET}, "
                          f"not {opset}; use exporter='dynamo' or a lower opset")
    if exporter == "dynamo" and opset < 18:
        raise ExportError(f"the dynamo exporter writes opset >= 18, not {opset}; use "
                          "exporter='torchscript' (or 'auto') for older opsets")


def _check_batch(batch: int | str) -> int | str:
    if isinstance(batch, str):
        if batch.lower() == "dynamic":
            return "dynamic"
        try:
            batch = int(batch)
        except ValueError:
            raise ExportError(f"batch must be 'dynamic' or a positive integer, got {batch!r}") \
                from None
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ExportError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    return batch


def _torchscript_available() -> bool:
    import inspect

    with needs(_PURPOSE, extra="build"):
        import torch.onnx

    return "dynamo" in inspect.signature(torch.onnx.export).parameters and hasattr(
        torch.onnx, "utils")


def _pick_exporter(exporter: str, opset: int) -> str:
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of: {', '.join(EXPORTERS)}")
    if exporter != "auto":
        return exporter
    if opset <= _TORCHSCRIPT_MAX_OPSET and _torchscript_available():
        return "torchscript"
    return "dynamo"


def _torch_export(model: Any, *, opset: int, batch: int | str, exporter: str) -> Any:
    """Run a torch exporter; return the raw ``onnx.ModelProto``."""
    with needs(_PURPOSE, extra="build"):
        import onnx
        import torch

    size, chans = model.spec.input_size, model.spec.in_chans
    n = _TRACE_BATCH if batch == "dynamic" else int(batch)
    dummy = torch.zeros(n, chans, size, size, dtype=torch.float32)
    with warnings.catch_warnings():
        # Deprecation notices about the exporters themselves, not about our model.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        # TF-"same" pooling reads int(x.shape[-2:]): the spatial size is fixed by the ModelSpec
        # (only the batch is dynamic), so tracing it as a constant is intended; the Slice
        # arithmetic torch declines to fold is folded by the cleanup.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        try:
            if exporter == "torchscript":
                buf = io.BytesIO()
                axes = ({INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
                        if batch == "dynamic" else None)
                torch.onnx.export(model, (dummy,), buf, dynamo=False, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes=axes, do_constant_folding=True,
                                  training=torch.onnx.TrainingMode.EVAL)
                return onnx.load_from_string(buf.getvalue())
            shapes = ({"x": {0: torch.export.Dim("batch", min=1)}}
                      if batch == "dynamic" else None)
            program = torch.onnx.export(model, (dummy,), None, dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes=shapes, verbose=False, optimize=True)
            proto = program.model_proto
        except ExportError:
            raise
        except Exception as exc:  # torch raises a zoo of types; all mean "export failed"
            raise ExportError(f"torch.onnx.export ({exporter}) failed: {type(exc).__name__}: "
                              f"{exc}") from exc
    got = {o.domain: o.version for o in proto.opset_import}.get("", None)
    if got != opset:
        raise ExportError(f"the dynamo exporter produced opset {got}, not {opset}; use "
                          f"opset {got} or exporter='torchscript'")
    return proto


def _fix_batch_dims(model: Any, batch: int | str) -> None:
    """Name the batch dim ``batch`` (dynamic) or pin it (fixed) on graph I/O, in place."""
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if batch == "dynamic":
            dim.Clear()
            dim.dim_param = "batch"
        else:
            dim.Clear()
            dim.dim_value = int(batch)


def parity_inputs(spec: ModelSpec, input_format: InputFormat | str, *, n: int = 4,
                  seed: int = 0) -> np.ndarray:
    """Random, realistic inputs for a parity check: seeded uint8 pixels (as-is for
    ``uint8-nhwc``, normalised to float32 NCHW for ``float-nchw``)."""
    from .preprocess import normalize

    fmt = InputFormat.parse(input_format)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, spec.input_size, spec.input_size, spec.in_chans),
                          dtype=np.uint8)
    return pixels if fmt is InputFormat.UINT8_NHWC else normalize(pixels, spec)


def _onnx_input_format(session: Any) -> InputFormat:
    inp = session.get_inputs()[0]
    return InputFormat.UINT8_NHWC if inp.type == "tensor(uint8)" else InputFormat.FLOAT_NCHW


def verify_parity(model: Any, onnx_path: str | os.PathLike[str], inputs: np.ndarray, *,
                  rtol: float = PARITY_RTOL) -> ParityResult:
    """Compare ONNX Runtime (CPU) on ``onnx_path`` with the PyTorch ``model`` on ``inputs``.

    A ``uint8-nhwc`` graph gets the uint8 pixels while torch gets the same pixels through the
    float path (:func:`xception_trt.preprocess.normalize`), so the folded normalisation is
    checked too.

    Args:
        model: The reference :class:`~xception_trt.model.Xception` (eval mode is used).
        onnx_path: The ONNX file to check.
        inputs: A batch in the graph's input format: float32 ``(N, C, S, S)`` normalised, or
            uint8 ``(N, S, S, C)`` pixels.
        rtol: Bound on the max logit difference relative to the logit scale
            (:func:`~xception_trt.contract.relative_logit_diff`) for
            :attr:`ParityResult.passed`.

    Returns:
        The :class:`ParityResult` (it does not raise on a mismatch; check ``passed``).

    Raises:
        GraphError: ``onnx_path`` is missing, not ONNX or truncated.
        ExportError: ``inputs`` do not match the graph's input format, or ORT fails to run it.
    """
    with needs("the ONNX Runtime parity check", extra="build"):
        import onnxruntime as ort
        import torch

    from .preprocess import normalize

    load_onnx(onnx_path)  # clear GraphError for missing / not-ONNX / truncated files
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise GraphError(f"ONNX Runtime cannot load {onnx_path}: {exc}") from None
    fmt = _onnx_input_format(session)
    inputs = np.asarray(inputs)
    size, chans = model.spec.input_size, model.spec.in_chans
    expected = ((np.uint8, (size, size, chans)) if fmt is InputFormat.UINT8_NHWC
                else (np.float32, (chans, size, size)))
    if inputs.ndim != 4 or inputs.dtype != expected[0] or inputs.shape[1:] != expected[1]:
        raise ExportError(f"{onnx_path} takes {fmt} input {np.dtype(expected[0]).name} "
                          f"(N, {', '.join(map(str, expected[1]))}); got {inputs.dtype} "
                          f"{inputs.shape}")
    torch_in = normalize(inputs, model.spec) if fmt is InputFormat.UINT8_NHWC else inputs
    try:
        got = _run_ort(session, inputs)
    except Exception as exc:  # onnxruntime's Fail / InvalidArgument
        raise ExportError(f"ONNX Runtime failed to run {onnx_path}: {exc}") from None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(torch.from_numpy(np.ascontiguousarray(torch_in))).numpy()
    finally:
        model.train(was_training)
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    agree = float(np.mean(got.argmax(axis=1) == ref.argmax(axis=1)))
    return ParityResult(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
                        top1_agreement=agree, num_samples=int(len(inputs)), rtol=float(rtol),
                        input_format=fmt, max_abs_logit=float(np.abs(ref).max()),
                        max_rel_diff=relative_logit_diff(got, ref))


def _run_ort(session: Any, inputs: np.ndarray) -> np.ndarray:
    """Run ``inputs`` through an ORT session; a fixed-batch graph gets chunks of its batch size
    (the last one padded by repeating its final sample, the padding dropped afterwards)."""
    dim = session.get_inputs()[0].shape[0]
    if not isinstance(dim, int) or dim == len(inputs):
        return session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]
    outs = []
    for start in range(0, len(inputs), dim):
        chunk = inputs[start:start + dim]
        real = len(chunk)
        if real < dim:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], dim - real, axis=0)])
        outs.append(session.run([OUTPUT_NAME], {INPUT_NAME: chunk})[0][:real])
    return np.concatenate(outs)


# ---------------------------------------------------------------------------------------------
# export


def export_onnx(model_or_checkpoint: Any, output: str | os.PathLike[str] | None = None, *,
                opset: int = DEFAULT_OPSET, batch: int | str = "dynamic",
                input_format: InputFormat | str = InputFormat.FLOAT_NCHW, clean: bool = True,
                check_parity: bool = True, parity_samples: int = 2, rtol: float = PARITY_RTOL,
                exporter: str = "auto",
                path: str | os.PathLike[str] | None = None) -> ExportResult:
    """Export an Xception to a clean, checked ONNX file with xception-trt metadata.

    The file is written to a temporary name and renamed only after ``onnx.checker`` (full check),
    shape inference and, if asked, the parity check pass: an error never leaves a file behind.

    Args:
        model_or_checkpoint: An :class:`~xception_trt.model.Xception` or a checkpoint path
            (any format :func:`~xception_trt.checkpoint.load_model` reads).
        output: Destination ``.onnx`` file (required).
        opset: ONNX opset (``MIN_OPSET`` .. :func:`max_supported_opset`; default 17).
        batch: ``"dynamic"`` (dim named ``batch``) or a fixed batch size >= 1.
        input_format: ``float-nchw`` (normalised float32) or ``uint8-nhwc`` (raw pixels;
            normalisation folded into the first convolution).
        clean: Run the onnx-graphsurgeon cleanup (:func:`~xception_trt.graph.clean_graph`).
        check_parity: Compare ONNX Runtime with torch on ``parity_samples`` random inputs before
            publishing the file.
        parity_samples: Random samples for the parity check.
        rtol: Bound on the max logit difference relative to the largest PyTorch logit
            (default :data:`PARITY_RTOL`).
        exporter: ``auto`` (TorchScript for opset <= 20, see the module docstring),
            ``torchscript`` or ``dynamo``.
        path: Old name of ``output`` (deprecated).

    Returns:
        An :class:`ExportResult`.

    Raises:
        CheckpointError: The checkpoint is missing, unreadable or not an Xception.
        ExportError: Bad arguments, unwritable destination, the exporter failed, or parity
            failed (the message gives the figures).
        GraphError: Cleanup failed or left an operator TensorRT does not parse.
    """
    with needs(_PURPOSE, extra="build"):
        import onnx
        import torch

    start = time.perf_counter()
    output = renamed("path", "output", path, output, where="export_onnx")
    if output is None:
        raise ExportError("export_onnx needs output=, the .onnx file to write")
    path = Path(output)
    if path.suffix.lower() != ".onnx":
        raise ExportError(f"output path {path} must end in .onnx")
    if path.is_dir():
        raise ExportError(f"output path {path} is a directory; give a file name ending in .onnx")
    check_writable_dir(path.parent if str(path.parent) else Path("."), error=ExportError)
    try:
        fmt = InputFormat.parse(input_format)
    except ConfigError as exc:
        raise ExportError(str(exc)) from None
    batch = _check_batch(batch)
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of: {', '.join(EXPORTERS)}")
    _check_opset(opset, exporter)
    chosen = _pick_exporter(exporter, opset)
    _check_opset(opset, chosen)
    if fmt is InputFormat.UINT8_NHWC and not clean:
        log.info("uint8-nhwc without cleanup: the stem is added to the raw export")

    model, source_sha = _resolve_model(model_or_checkpoint)
    spec: ModelSpec = model.spec
    was_training = model.training
    model.eval()
    try:
        raw = _torch_export(model, opset=opset, batch=batch, exporter=chosen)
    finally:
        model.train(was_training)
    log.info("exported with the %s exporter (opset %d, batch %s)", chosen, opset, batch)

    # The final model is checked once below; the intermediate checks would re-serialise ~86 MiB.
    out = clean_graph(raw, check=False) if clean else raw
    if fmt is InputFormat.UINT8_NHWC:
        out = uint8_nhwc_model(out, spec, check=False)
    _fix_batch_dims(out, batch)
    settings = {"opset": opset, "batch": batch, "input_format": fmt.value, "clean": clean,
                "exporter": chosen, "torch": torch.__version__, "onnx": onnx.__version__}
    write_metadata(out, {"model_spec": spec, "input_format": fmt, "precision": Precision.FP32,
                         "source_sha256": source_sha, "version": __version__,
                         "export": settings, "labels": list(spec.class_names())})
    out.producer_name, out.producer_version = "xception-trt", __version__
    out.doc_string = (f"Xception ({spec.num_classes} classes, {spec.input_size}x"
                      f"{spec.input_size}, width {spec.width:g}) exported by xception-trt "
                      f"{__version__}")
    data = out.SerializeToString()  # once: checked, then written
    try:
        # full_check includes strict shape inference (types and shapes must be consistent).
        onnx.checker.check_model(data, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the exported graph fails the ONNX checker: {exc}") from None

    parity = None
    with atomic_path(path, error=ExportError) as tmp:
        tmp.write_bytes(data)
        if check_parity:
            parity = verify_parity(model, tmp, parity_inputs(spec, fmt, n=parity_samples),
                                   rtol=rtol)
            if not parity.passed:
                raise ExportError(f"exported graph does not match the PyTorch model: "
                                  f"{parity.summary()}; nothing was written")
    report = graph_report(raw, out, file_size=len(data))
    seconds = time.perf_counter() - start
    log.info("wrote %s (%d -> %d nodes, %.1f s)", path, report.before.num_nodes,
             report.after.num_nodes, seconds)
    return ExportResult(path=path, spec=spec, input_format=fmt, opset=opset, batch=batch,
                        exporter=chosen, clean=clean, report=report, parity=parity,
                        source_sha256=source_sha, seconds=seconds)


def read_export_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The export settings stored in an ONNX file we wrote (``{}`` if absent).

    Raises:
        GraphError: Not ONNX, truncated, or not written by xception-trt.
    """
    meta = read_metadata(path)
    return meta.json_field("export") or {}
