"""Run a serialized TensorRT engine from Python: :class:`TensorRTRunner`.

Written against the TensorRT >= 8.5 name-based API, identical in TensorRT 10.x, 11.x and
TensorRT-RTX: ``Runtime.deserialize_cuda_engine``, ``num_io_tensors`` / ``get_tensor_name`` /
``get_tensor_mode`` / ``get_tensor_dtype`` / ``get_tensor_profile_shape``,
``create_execution_context``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``.

The per-call path (buffers, stream, CUDA graphs, device arrays) is
:class:`~xception_trt.trt.cuda_runner.CudaRunnerBase`, shared with the NVRTC stand-in of
:mod:`xception_trt.selftest` so that the stand-in measures exactly this code's host overhead;
here the computation is ``set_input_shape`` + ``set_tensor_address`` (only when they change) +
``execute_async_v3`` on the engine's execution context.

Thread safety: one runner owns one execution context, one stream and one set of buffers; every
public method takes the runner's lock, so concurrent calls from several threads are serialised
(safe, not parallel). For parallel inference open one runner per thread.

CUDA graphs (NVIDIA TensorRT: one execution context per captured graph, since a graph depends on
the state of the context it was captured from): NVIDIA TensorRT 10.x/11.x captures each batch
size from its own execution context; the contexts share one activation buffer (user-managed
device memory: ``ExecutionContextAllocationStrategy.USER_MANAGED``), which is safe because the
runner runs one call at a time on one stream. TensorRT 8.6 gives optimization profile 0 to one
execution context only (later ones get -1 and every enqueue fails until they hold a profile;
8.6 ``NvInferRuntime.h``), so with 8.6 the runner keeps one context and refuses
``cuda_graphs=True`` for an engine whose batch is not fixed (one graph per batch size would need
one profile per batch size). TensorRT-RTX captures nothing by hand (manual capture
needs engines built with ``REQUIRE_USER_ALLOCATION``): it uses its runtime configuration's
CUDA-graph strategy (``CudaGraphStrategy.WHOLE_GRAPH_CAPTURE``) and a runtime cache for the
kernels it compiles at run time, after checking the plan header with
``Runtime.get_engine_validity``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import RunnerKind, TensorSpec, input_spec_for, output_spec_for
from ..errors import EngineError, renamed
from ..fsio import path_problem, sha256_bytes
from ..onnx_meta import INPUT_NAME, OUTPUT_NAME
from ..sidecar import EngineSidecar, read_sidecar
from .compat import profile_zero_for_one_context
from .cuda import CudaDevice, Stream
from .cuda_runner import Compute, CudaRunnerBase
from .logger import make_logger

__all__ = ["TensorRTRunner", "EngineIO", "describe_engine", "deserialize"]

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------
# Pure logic: engine I/O, sidecar facts
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineIO:
    """The input/output tensors and batch range of an engine's optimisation profile 0.

    Attributes:
        input: The input tensor (``-1`` = dynamic batch).
        output: The logits tensor.
        min_batch, opt_batch, max_batch: The profile's batch range (equal for a static engine).
    """

    input: TensorSpec
    output: TensorSpec
    min_batch: int
    opt_batch: int
    max_batch: int


def describe_engine(engine: Any, trt: Any) -> EngineIO:
    """Read the I/O tensors and profile of a deserialized engine.

    Args:
        engine: A ``ICudaEngine``.
        trt: The TensorRT module that created it (``tensorrt`` or ``tensorrt_rtx``).

    Raises:
        EngineError: Not exactly one input ``input`` and one output ``logits`` (not an
            xception-trt engine), an unsupported dtype, or non-batch dimensions left dynamic.
    """
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise EngineError(f"the engine has inputs {inputs} and outputs {outputs}; an xception-trt "
                          f"engine has exactly one input {INPUT_NAME!r} and one output "
                          f"{OUTPUT_NAME!r} — build it with `xception-trt build`")

    def spec(name: str) -> TensorSpec:
        try:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        except TypeError:
            raise EngineError(f"tensor {name!r} has data type {engine.get_tensor_dtype(name)}, "
                              "which NumPy cannot hold; rebuild with FP32 I/O") from None
        return TensorSpec(name, tuple(int(d) for d in engine.get_tensor_shape(name)), dtype)

    inp, out = spec(INPUT_NAME), spec(OUTPUT_NAME)
    if any(d < 0 for d in inp.shape[1:]) or any(d < 0 for d in out.shape[1:]):
        raise EngineError(f"only the batch axis may be dynamic; the engine has {inp.describe()} "
                          f"-> {out.describe()}")
    if inp.shape[0] < 0:
        try:
            lo, opt, hi = (tuple(int(d) for d in dims)
                           for dims in engine.get_tensor_profile_shape(INPUT_NAME, 0))
        except Exception as exc:
            raise EngineError(f"cannot read the engine's optimisation profile 0: {exc}") from None
        lo_b, opt_b, hi_b = lo[0], opt[0], hi[0]
    else:
        lo_b = opt_b = hi_b = inp.shape[0]
    if not 1 <= lo_b <= opt_b <= hi_b:
        raise EngineError(f"the engine's batch profile ({lo_b}, {opt_b}, {hi_b}) is invalid")
    return EngineIO(inp, out, lo_b, opt_b, hi_b)


# ------------------------------------------------------------------------------------------------
# TensorRT
# ------------------------------------------------------------------------------------------------
def deserialize(trt: Any, data: bytes | memoryview, *, source: str = "engine",
                host_code_allowed: bool = False, dla_core: int | None = None,
                logger: Any = None) -> tuple[Any, Any, Any]:
    """Deserialize a plan with TensorRT, turning its refusal into a clear error.

    TensorRT checks the plan's header (magic tag, serialization version, recorded size) before
    using it and returns ``None`` for a foreign or truncated file; its log says why. TensorRT-RTX
    is asked first with ``Runtime.get_engine_validity`` (old driver/runtime, compute capability,
    malformed plan).

    Args:
        trt: The TensorRT module (``tensorrt`` or ``tensorrt_rtx``).
        data: The plan bytes.
        source: Name of the file for messages.
        host_code_allowed: Set ``Runtime.engine_host_code_allowed``: a version-compatible plan
            carries the lean runtime as executable host code and TensorRT refuses it otherwise
            (TensorRT "Version Compatibility"). Only for plans whose hash was checked.
        dla_core: Set ``Runtime.DLA_core`` (the DLA core the engine runs on) before
            deserializing; ``None`` for GPU engines.
        logger: A logger from :func:`~xception_trt.trt.logger.make_logger` (default: a new one).

    Returns:
        (logger, runtime, engine); keep all three alive as long as the engine is used.

    Raises:
        EngineError: TensorRT refused the plan (message quotes TensorRT's reason), TensorRT-RTX
            says it is not valid here (with its diagnostics), or the plan needs a DLA core this
            device lacks.
    """
    logger = logger if logger is not None else make_logger(trt)
    runtime = trt.Runtime(logger)
    if runtime is None:
        raise EngineError(f"TensorRT could not create a runtime: {logger.take()}")
    if hasattr(runtime, "get_engine_validity"):  # TensorRT-RTX 1.1+
        _check_engine_validity(trt, runtime, data, source, logger)
    if host_code_allowed:
        runtime.engine_host_code_allowed = True
    if dla_core is not None:
        cores = int(runtime.num_DLA_cores)
        if not 0 <= dla_core < cores:
            raise EngineError(f"{source} was built for DLA core {dla_core} but this device has "
                              f"{cores} DLA core(s); rebuild it with `xception-trt build` and "
                              f"--dla-core 0..{max(cores - 1, 0)}, or without --dla-core")
        runtime.DLA_core = dla_core
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise EngineError(f"TensorRT could not deserialize {source} "
                          f"({logger.take() or 'not an engine of this TensorRT'}); "
                          "rebuild it with `xception-trt build`")
    return logger, runtime, engine


def _check_engine_validity(trt: Any, runtime: Any, data: bytes | memoryview, source: str,
                           logger: Any) -> None:
    """TensorRT-RTX's header check before deserializing (``IRuntime::getEngineValidity``,
    TensorRT-RTX "Engine Compatibility"): it sees what our sidecar rules cannot (an old CUDA
    driver or runtime, an unsupported compute capability, too little GPU memory).

    Raises:
        EngineError: The plan is invalid here; the message lists TensorRT-RTX's diagnostics.
    """
    answer = runtime.get_engine_validity(data)
    validity, diagnostics = (answer[0], answer[1] if len(answer) > 1 else 0) \
        if isinstance(answer, tuple) else (answer, 0)
    name = getattr(validity, "name", str(validity))
    flags = getattr(getattr(trt, "EngineInvalidityDiagnostics", None), "__members__", {})
    reasons = [n for n, m in flags.items() if int(diagnostics) & int(m)] or \
        ([f"diagnostics {int(diagnostics):#x}"] if int(diagnostics) else [])
    if name == "INVALID":
        why = ", ".join(reasons) or logger.take() or "no diagnostics"
        raise EngineError(f"TensorRT-RTX says {source} is not valid here ({why}): rebuild it with "
                          "`xception-trt build` for this TensorRT-RTX and GPU, or update the "
                          "NVIDIA driver / CUDA runtime if it says OLD_CUDA_*")
    if name == "SUBOPTIMAL":
        log.warning("TensorRT-RTX: %s is valid here but may run slower (%s); rebuilding it on "
                    "this machine can help", source, ", ".join(reasons) or "no diagnostics")


class _TrtCompute:
    """``set_input_shape`` + ``set_tensor_address`` + ``execute_async_v3`` on one context."""

    def __init__(self, context: Any, logger: Any, name: str) -> None:
        self._ctx = context
        self._logger = logger
        self._name = name

    def bind(self, input_shape: tuple[int, ...], in_ptr: int, out_ptr: int) -> None:
        ctx = self._ctx
        if not ctx.set_input_shape(INPUT_NAME, input_shape):
            raise EngineError(f"{self._name}: set_input_shape{input_shape} was refused: "
                              f"{self._logger.take() or 'shape outside the profile'}")
        if not (ctx.set_tensor_address(INPUT_NAME, in_ptr)
                and ctx.set_tensor_address(OUTPUT_NAME, out_ptr)):
            raise EngineError(f"{self._name}: set_tensor_address was refused: "
                              f"{self._logger.take() or 'unaligned or invalid address'}")

    def enqueue(self, stream: Stream) -> None:
        if not self._ctx.execute_async_v3(stream.ptr):
            raise EngineError(f"{self._name}: execute_async_v3 failed: "
                              f"{self._logger.take() or 'see the TensorRT log (-vv)'}")

    def close(self) -> None:
        self._ctx = None  # TensorRT frees the context with its last reference


class TensorRTRunner(CudaRunnerBase):
    """Run an xception-trt TensorRT engine (``.engine``/``.plan`` + its ``.json`` sidecar).

    Implements the Runner protocol of :mod:`xception_trt.runners` plus :meth:`infer_async`,
    device inputs/outputs and CUDA graphs. Thread safe: calls are serialised by a lock.

    Args:
        engine_path: The serialized engine; its sidecar ``<engine>.json`` must sit next to it.
        device: CUDA device ordinal.
        cuda_binding: ``cuda-python`` (default) or ``pycuda``; old name ``cuda_backend=``
            (deprecated).
        cuda_graphs: Replay CUDA graphs (lowest host overhead): NVIDIA TensorRT captures one
            graph per batch size, each from its own execution context (sharing one activation
            buffer); TensorRT-RTX uses its runtime CUDA-graph strategy. Refused at open with the
            pycuda backend (pycuda has no graph API), with TensorRT 8.6 for an engine without a
            fixed batch (one context per engine holds profile 0), and for DLA engines.
        check_finite: Reject NumPy inputs holding NaN/Inf.
        gpu_timing: Measure each call's GPU time with CUDA events into
            :attr:`last_gpu_time_ms` (two extra event records per call).
        name: Display name (default ``tensorrt-<precision>``).
        verify_sha256: Hash the engine file and compare with the sidecar before deserializing
            (catches truncated/replaced files; costs one read of the file). A
            version-compatible engine is always hashed: TensorRT runs the host code it carries
            (``Runtime.engine_host_code_allowed``) only when the bytes match the sidecar. A DLA
            engine runs on the DLA core its sidecar records (``Runtime.DLA_core``).
        runtime_cache: TensorRT-RTX only: a file for the runtime cache of the kernels
            TensorRT-RTX compiles at run time; loaded when it exists, written (atomically) by
            :meth:`close`. ``None``: an in-memory cache for this runner's lifetime.

    Raises:
        EngineError: Missing/empty/truncated/foreign engine file, missing sidecar, engine from
            another TensorRT version or GPU (message gives the rebuild command), no GPU, a DLA
            core this device lacks, a version-compatible plan not matching its sidecar, or
            TensorRT cannot deserialize it.
        BuildError: The TensorRT flavour that built the engine is not installed.
        DependencyError: The CUDA backend's package is missing.
    """

    def __init__(self, engine_path: str | os.PathLike[str], *, device: int = 0,
                 cuda_binding: str | None = None, cuda_graphs: bool = False,
                 check_finite: bool = False, gpu_timing: bool = False, name: str | None = None,
                 verify_sha256: bool = True,
                 runtime_cache: str | os.PathLike[str] | None = None,
                 cuda_backend: str | None = None) -> None:
        from .compat import check_sidecar_compat

        cuda_binding = renamed("cuda_backend", "cuda_binding", cuda_backend, cuda_binding,
                               where="TensorRTRunner") or "cuda-python"

        path = Path(engine_path)
        self.path = path
        problem = path_problem(path)
        if problem is not None:
            raise EngineError(f"engine file {path} {problem}")
        size = path.stat().st_size
        if size == 0:
            raise EngineError(f"engine file {path} is empty; rebuild it with `xception-trt build`")
        sidecar = read_sidecar(path)
        self.sidecar = sidecar
        self.spec, self.input_format, self.precision = (sidecar.model_spec, sidecar.input_format,
                                                        sidecar.precision)
        if cuda_graphs and sidecar.option("dla_core") is not None:
            raise EngineError(
                f"engine file {path} runs on DLA core {sidecar.option('dla_core')}, and CUDA "
                "graphs and DLA offloading are not supported together (trtexec refuses the pair: "
                "TensorRT samples/common/sampleOptions.cpp): pass cuda_graphs=False (CLI: drop "
                "--cuda-graphs), or use an engine built without --dla-core")
        # Read once: hashed here (the sidecar check and, for a version-compatible plan, the
        # host-code check use the one digest), deserialized below.
        data = path.read_bytes()
        digest = (sha256_bytes(data) if verify_sha256 or sidecar.option("version_compatible")
                  else None)
        _verify_engine_file(path, size, sidecar, digest if verify_sha256 else None)
        self._runtime_cache_path = Path(runtime_cache) if runtime_cache is not None else None
        from . import import_flavour

        flavour = import_flavour(sidecar.flavour)
        trt = flavour.module
        try:
            cuda = CudaDevice(device, cuda_binding)
        except EngineError as device_error:
            # Without a usable GPU, a version/flavour mismatch is still worth reporting first:
            # it needs a rebuild whatever GPU the engine will eventually run on.
            try:
                check_sidecar_compat(sidecar, flavour.name, flavour.version, None)
            except EngineError as compat_error:
                if "none found" not in str(compat_error):
                    raise compat_error from None
            raise device_error
        try:
            # TensorRT deserializes and creates contexts on the thread's current CUDA context
            with cuda.backend.scope():
                cc = cuda.compute_capability
                check_sidecar_compat(sidecar, flavour.name, flavour.version, f"{cc[0]}.{cc[1]}",
                                     integrated=cuda.backend.is_integrated())
                self._init_engine(path, data, digest, trt, flavour, cuda, name=name,
                                  cuda_graphs=cuda_graphs, check_finite=check_finite,
                                  gpu_timing=gpu_timing)
        except BaseException:
            self._abort(cuda)
            raise

    def _init_engine(self, path: Path, data: bytes, digest: str | None, trt: Any, flavour: Any,
                     cuda: CudaDevice, *, name: str | None, cuda_graphs: bool,
                     check_finite: bool, gpu_timing: bool) -> None:
        self._trt_version = flavour.version
        self._flavour = flavour.name
        host_code = _host_code_allowed(self.sidecar, digest, path)
        self._logger, self._runtime, self._engine = deserialize(
            trt, data, source=str(path), host_code_allowed=host_code,
            dla_core=self.sidecar.option("dla_core"))
        io = describe_engine(self._engine, trt)
        want = input_spec_for(self.spec, self.input_format)
        if io.input.dtype != want.dtype or io.input.shape[1:] != want.shape[1:]:
            raise EngineError(f"the engine takes {io.input.describe()} but its sidecar says "
                              f"{want.describe()}; the sidecar belongs to another engine — "
                              "rebuild with `xception-trt build`")
        if io.output.shape[1:] != (self.spec.num_classes,) or io.output.dtype != np.float32:
            raise EngineError(f"the engine returns {io.output.describe()}, expected float32 "
                              f"(N, {self.spec.num_classes}); rebuild with `xception-trt build`")
        self.io = io
        self.input_spec = input_spec_for(self.spec, self.input_format,
                                         batch=-1 if io.input.shape[0] < 0 else io.max_batch)
        self.output_spec = output_spec_for(self.spec,
                                           batch=-1 if io.output.shape[0] < 0 else io.max_batch)
        self.min_batch, self.max_batch = io.min_batch, io.max_batch
        self.name = name or f"tensorrt-{self.precision.value}"
        self.device = f"cuda:{cuda.index}"
        self.cuda_graphs = bool(cuda_graphs)
        self.check_finite = bool(check_finite)
        self._trt = trt
        self._native_graphs = self.cuda_graphs and flavour.is_rtx
        self._one_context = profile_zero_for_one_context(flavour.name, flavour.version)
        if self.cuda_graphs and self._one_context and io.min_batch != io.max_batch:
            raise EngineError(
                f"{self.name}: cuda_graphs=True needs a fixed-batch engine with TensorRT "
                f"{flavour.version}: before TensorRT 9.0 only one execution context of an engine "
                "gets optimization profile 0 (NvInferRuntime.h, createExecutionContext / "
                "getOptimizationProfile) and a CUDA graph per batch size needs a context per "
                f"batch size; this engine takes batch {io.min_batch}..{io.max_batch}. Rebuild it "
                "with a fixed batch (`xception-trt build --batch N`), or pass cuda_graphs=False "
                "(CLI: drop --cuda-graphs)")
        if flavour.is_rtx:
            self._runtime_config, self._rtx_cache = self._rtx_runtime_config(trt)
        elif self.cuda_graphs and not self._one_context:
            # one context per captured graph, all on one activation buffer (module docstring)
            engine = self._engine
            size = int(engine.device_memory_size_v2 if hasattr(engine, "device_memory_size_v2")
                       else engine.device_memory_size)
            self._activation = cuda.alloc(max(size, 1))
        self._compute = _TrtCompute(self._new_context(), self._logger, self.name)
        self._setup(cuda, max_batch=io.max_batch, gpu_timing=gpu_timing)
        self._gpu_name = cuda.name

    _runtime_config: Any = None
    _rtx_cache: Any = None
    _activation: Any = None
    _one_context = False

    def _rtx_runtime_config(self, trt: Any) -> tuple[Any, Any]:
        """TensorRT-RTX: a runtime configuration with a runtime cache (loaded from
        ``runtime_cache`` when given) and, for ``cuda_graphs``, its CUDA-graph strategy
        (TensorRT-RTX "Working with Runtime Cache", "Working with RTX CUDA Graphs")."""
        engine = self._engine
        # IRuntimeConfig is in TensorRT-RTX 1.0+, its CUDA-graph strategy only from 1.2
        if self.cuda_graphs and not (hasattr(engine, "create_runtime_config")
                                     and hasattr(trt, "CudaGraphStrategy")):
            raise EngineError(f"{self.name}: TensorRT-RTX {self._trt_version} has no runtime "
                              "CUDA-graph strategy (CudaGraphStrategy, TensorRT-RTX 1.2+): "
                              "upgrade TensorRT-RTX, or pass cuda_graphs=False (CLI: drop "
                              "--cuda-graphs)")
        if not hasattr(engine, "create_runtime_config"):
            return None, None
        config = engine.create_runtime_config()
        cache = (config.create_runtime_cache() if hasattr(config, "create_runtime_cache")
                 else None)
        path = self._runtime_cache_path
        if cache is not None and path is not None and path.is_file():
            if not cache.deserialize(path.read_bytes()):
                log.warning("TensorRT-RTX refused the runtime cache %s (another TensorRT-RTX "
                            "or GPU?); starting an empty one", path)
        if cache is not None and not config.set_runtime_cache(cache):
            log.warning("TensorRT-RTX did not accept a runtime cache; kernels compiled at run "
                        "time are not kept")
            cache = None
        if self.cuda_graphs:
            config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        return config, cache

    def _new_context(self) -> Any:
        """A new execution context: with the RTX runtime configuration, or on the shared
        activation buffer (CUDA graphs), or with its own memory.

        TensorRT 9.0+ (10.x, 11.x, TensorRT-RTX): every context runs profile 0, selected by
        default; several contexts may share a profile as long as they are not in use
        concurrently, and the runner runs one call at a time. TensorRT 8.6: only the first
        context of an engine gets profile 0; later ones get -1 and cannot take profile 0 while
        another holds it (8.6 ``NvInferRuntime.h``, ``createExecutionContext`` /
        ``getOptimizationProfile``; NVIDIA/TensorRT issue 846), so with 8.6 the runner creates
        exactly one context (:attr:`_one_context`).
        """
        engine, trt = self._engine, self._trt
        if self._runtime_config is not None:
            context = engine.create_execution_context(self._runtime_config)
        elif self._activation is None:
            context = engine.create_execution_context()
        else:  # 10.0+ (8.6 has one context only: no shared activation buffer)
            context = engine.create_execution_context(
                trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if context is not None:
                if hasattr(context, "set_device_memory"):  # 10.1+: with its size
                    context.set_device_memory(self._activation.ptr, self._activation.nbytes)
                else:
                    context.device_memory = self._activation.ptr
        if context is None:
            raise EngineError(f"TensorRT could not create an execution context "
                              f"({self._logger.take() or 'out of GPU memory?'})")
        return context

    def _graph_compute(self, key: tuple[int, bool, bool]) -> Compute:
        # A captured graph depends on its context's state; changing that context afterwards is
        # undefined behaviour (TensorRT developer guide, "CUDA Graphs"): one context per graph.
        # TensorRT 8.6 (one context holds profile 0): a fixed-batch engine (checked at open),
        # so every graph is captured from the one context with the same shape and addresses.
        if self._one_context:
            return self._engine_compute
        return _TrtCompute(self._new_context(), self._logger, self.name)

    def _abort(self, cuda: CudaDevice) -> None:
        """Undo a half-finished __init__ (nothing leaks when opening fails)."""
        if not self._closed:  # _setup finished: the normal close frees everything
            try:
                self.close()
            except EngineError as exc:
                log.debug("cleanup after a failed open: %s", exc)
            return
        def drop() -> None:  # contexts, their memory, engine, runtime: on the device's context
            self._compute = None
            self._runtime_config = self._rtx_cache = None
            if self._activation is not None:
                self._activation.close()
                self._activation = None
            self._engine = None
            self._runtime = None

        try:
            with cuda.backend.scope():
                drop()
        except Exception as exc:  # the context could not be made current: drop them anyway
            log.debug("cleanup after a failed open: %s", exc)
            drop()
        try:  # after the scope (pycuda: see CudaRunnerBase.close)
            cuda.close()
        except Exception as exc:
            log.debug("cleanup after a failed open: %s", exc)

    def _close_extra(self, errors: list[str]) -> None:
        # Order matters: contexts (already dropped) before their memory, engine, runtime.
        if self._rtx_cache is not None and self._runtime_cache_path is not None:
            try:
                from ..fsio import atomic_write_bytes

                atomic_write_bytes(self._runtime_cache_path,
                                   bytes(memoryview(self._rtx_cache.serialize())),
                                   error=EngineError)
            except Exception as exc:  # reported by close(); the engine itself is fine
                errors.append(f"runtime cache {self._runtime_cache_path}: {exc}")
        self._runtime_config = self._rtx_cache = None
        if self._activation is not None:
            try:
                self._activation.close()
            except Exception as exc:
                errors.append(str(exc))
            self._activation = None
        self._engine = None
        self._runtime = None

    def describe(self) -> dict[str, Any]:
        """Backend facts: TensorRT flavour/version, GPU, CUDA backend, profile, graphs."""
        self._check_open()
        backend = self._cuda.backend
        return {
            **self._describe_common(RunnerKind.TENSORRT, self.path),
            "min_batch": self.min_batch,
            "opt_batch": self.io.opt_batch,
            "gpu": self._gpu_name,
            "compute_capability": "{}.{}".format(*backend.compute_capability()),
            "provider": self._flavour,
            "tensorrt": self._trt_version,
            "cuda_backend": backend.name,
            "cuda": backend.versions(),
            "cuda_graphs": self.cuda_graphs,
            "threads": "n/a (GPU)",
        }


def _host_code_allowed(sidecar: EngineSidecar, digest: str | None, path: Path) -> bool:
    """Whether TensorRT may run the host code (lean runtime) a version-compatible plan carries:
    only when the very bytes we deserialize (``digest``: their SHA-256) match the SHA-256 their
    sidecar records.

    Raises:
        EngineError: A version-compatible plan whose bytes do not match its sidecar.
    """
    if not sidecar.option("version_compatible"):
        return False
    if digest is None or digest != sidecar.engine.sha256:
        raise EngineError(f"engine file {path} is version-compatible, so it carries host code "
                          "that TensorRT would execute, and it does not match the SHA-256 in "
                          "its sidecar (checked even with verify_sha256=False): refusing to "
                          "load it — rebuild it with `xception-trt build`")
    return True


def _verify_engine_file(path: Path, size: int, sidecar: EngineSidecar,
                        digest: str | None) -> None:
    """Compare the engine file with the size/hash its sidecar records (truncation, swaps);
    ``digest`` is the SHA-256 of its bytes, ``None`` to skip the hash check."""
    if sidecar.engine.bytes != size:
        raise EngineError(f"engine file {path} has {size} bytes but its sidecar records "
                          f"{sidecar.engine.bytes}: the file is truncated or was replaced — "
                          "rebuild it with `xception-trt build`")
    if digest is not None and digest != sidecar.engine.sha256:
        raise EngineError(f"engine file {path} does not match the SHA-256 in its sidecar: "
                          "it is corrupted or belongs to another build — rebuild it with "
                          "`xception-trt build`")
