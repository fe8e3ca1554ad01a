"""The engine runtime (xception_trt/trt/runtime.py).

On any machine:
- pure logic: engine I/O description, device-array and ``out=`` validation, sidecar facts;
- the shared per-call path (:class:`CudaRunnerBase`: staging, zero-copy device inputs, ``out=``,
  CUDA-graph cache, async handles, the lock, close) over an *emulating* CPU backend -- this
  checks our bookkeeping and data flow, not CUDA itself (the GPU tests do that);
- :class:`TensorRTRunner` opening errors that need no GPU: missing/empty/truncated/replaced engine
  files, no sidecar, an engine from another TensorRT flavour or version, no GPU.

On a GPU with TensorRT (marked ``trt``): the self-test's engine checks (the same code path as
``xception-trt selftest``) and foreign/truncated engine files in a subprocess (no segfault).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

from xception_trt.config import InputFormat, ModelSpec, Precision
from xception_trt.contract import TensorSpec, input_spec_for, output_spec_for
from xception_trt.errors import BuildError, EngineError
from xception_trt.sidecar import model_facts as model_facts_from_sidecar
from xception_trt.trt import cuda as xc
from xception_trt.trt.cuda_runner import CudaRunnerBase, check_device_batch, check_device_output
from xception_trt.trt.devices import query_devices
from xception_trt.trt.runtime import EngineIO, TensorRTRunner, describe_engine

HAS_GPU = bool(query_devices().gpus)
SPEC = ModelSpec(num_classes=4, width=0.125, middle_blocks=2, input_size=71,
                 labels=("cat", "dog", "fox", "owl"))
IN_SPEC = input_spec_for(SPEC, InputFormat.FLOAT_NCHW)


# ------------------------------------------------------------------------------------------------
# describe_engine with an object shaped like ICudaEngine
# ------------------------------------------------------------------------------------------------
_TRT = types.SimpleNamespace(TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"),
                             nptype=lambda dt: {"f32": np.float32, "u8": np.uint8}[dt])


class _Engine:
    def __init__(self, tensors, profile=((1, 3, 71, 71), (2, 3, 71, 71), (8, 3, 71, 71))):
        self.tensors, self.profile = tensors, profile  # name -> (mode, dtype, shape)
        self.num_io_tensors = len(tensors)

    def get_tensor_name(self, i):
        return list(self.tensors)[i]

    def get_tensor_mode(self, n):
        return self.tensors[n][0]

    def get_tensor_dtype(self, n):
        return self.tensors[n][1]

    def get_tensor_shape(self, n):
        return self.tensors[n][2]

    def get_tensor_profile_shape(self, n, i):
        assert (n, i) == ("input", 0)
        return self.profile


def _io(in_shape=(-1, 3, 71, 71), out_shape=(-1, 4), in_dtype="f32"):
    return {"input": ("in", in_dtype, in_shape), "logits": ("out", "f32", out_shape)}


def test_describe_dynamic_engine():
    io = describe_engine(_Engine(_io()), _TRT)
    assert io == EngineIO(TensorSpec("input", (-1, 3, 71, 71), np.float32),
                          TensorSpec("logits", (-1, 4), np.float32), 1, 2, 8)


def test_describe_static_uint8_engine():
    io = describe_engine(_Engine(_io((4, 71, 71, 3), (4, 4), "u8")), _TRT)
    assert (io.min_batch, io.max_batch, io.input.dtype) == (4, 4, np.uint8)


@pytest.mark.parametrize("tensors, match", [
    ({"images": ("in", "f32", (1, 3, 71, 71)), "logits": ("out", "f32", (1, 4))}, "inputs"),
    ({**_io(), "probs": ("out", "f32", (-1, 4))}, "exactly one input"),
    (_io((-1, 3, -1, -1)), "only the batch axis may be dynamic"),
])
def test_describe_rejects_foreign_engines(tensors, match):
    with pytest.raises(EngineError, match=match):
        describe_engine(_Engine(tensors), _TRT)


def test_describe_rejects_bad_profile():
    with pytest.raises(EngineError, match="profile"):
        describe_engine(_Engine(_io(), profile=((4, 3, 71, 71), (2, 3, 71, 71),
                                                (8, 3, 71, 71))), _TRT)


# ------------------------------------------------------------------------------------------------
# device input/output validation (pure)
# ------------------------------------------------------------------------------------------------
def _info(shape=(2, 3, 71, 71), dtype=np.float32, contiguous=True, kind="cuda", dev=None):
    return xc.DeviceArrayInfo(0x1000, shape, np.dtype(dtype), contiguous, kind, dev)


def test_device_batch_ok():
    assert check_device_batch(_info(), IN_SPEC, max_batch=4, device_id=0) == 2


@pytest.mark.parametrize("info, match", [
    (_info(kind="cpu"), "cpu memory, not on a CUDA device"),
    (_info(dev=1), "cuda:1 but the engine runs on cuda:0"),
    (_info(shape=(3, 71, 71)), "rank 4"),
    (_info(dtype=np.float16), "dtype must be float32, got float16"),
    (_info(shape=(2, 71, 71, 3)), "axis 1 is 71, expected 3"),
    (_info(shape=(8, 3, 71, 71)), "batch 8 exceeds the engine's maximum batch 4"),
    (_info(shape=(1, 3, 71, 71)), "below the engine's minimum batch 2"),
    (_info(contiguous=False), "not C-contiguous"),
])
def test_device_batch_errors(info, match):
    with pytest.raises(EngineError, match=match):
        check_device_batch(info, IN_SPEC, min_batch=2, max_batch=4, device_id=0, runner="r")


def test_device_output_checks():
    check_device_output(_info((2, 4)), 2, 4, device_id=0)
    for bad, match in [(_info((2, 5)), r"shape \(2, 4\)"), (_info((2, 4), np.float16), "float16"),
                       (_info((2, 4), contiguous=False), "not contiguous"),
                       (_info((2, 4), kind="cpu"), "CUDA device array")]:
        with pytest.raises(EngineError, match=match):
            check_device_output(bad, 2, 4, device_id=0)


def test_model_facts_from_sidecar():
    side = {"model_spec": SPEC.to_dict(), "input_format": "uint8-nhwc", "precision": "int8"}
    assert model_facts_from_sidecar(side) == (SPEC, InputFormat.UINT8_NHWC, Precision.INT8)
    with pytest.raises(EngineError, match="does not describe the model"):
        model_facts_from_sidecar({"precision": "fp16"})
    with pytest.raises(EngineError, match="does not describe the model"):
        model_facts_from_sidecar({**side, "precision": "int4"})


# ------------------------------------------------------------------------------------------------
# the per-call path over an emulating backend
# ------------------------------------------------------------------------------------------------
class EmuBackend(xc.CudaBackend):
    """Emulates device memory with NumPy and runs stream work at once (or records it while a
    stream is capturing, replaying it at graph launch). Counts what it is asked to do."""

    name = "emu"
    device = 0

    def __init__(self, *, fail_alloc_at: int | None = None):
        self.mem: dict[int, np.ndarray] = {}
        self.host: set[int] = set()
        self.streams: set[int] = set()
        self.events: set[int] = set()
        self.capturing: dict[int, list] = {}
        self.calls: list[tuple] = []
        self._next = 1 << 20
        self._allocs = 0
        self.fail_alloc_at = fail_alloc_at

    def _id(self, size=0x100):
        self._next = (self._next + size + 0x200) // 256 * 256  # cudaMalloc: 256-byte aligned
        return self._next

    def activate(self):
        pass

    def compute_capability(self):
        return (8, 6)

    def device_name(self):
        return "emulated"

    def versions(self):
        return {}

    def view(self, ptr, nbytes):
        for base, block in self.mem.items():
            if base <= ptr and ptr + nbytes <= base + block.size:
                return block[ptr - base: ptr - base + nbytes]
        raise AssertionError(f"access outside any allocation: {ptr:#x}+{nbytes}")

    def submit(self, stream, op, what):
        self.calls.append((what, stream))
        if stream in self.capturing:
            self.capturing[stream].append(op)
        else:
            op()

    def mem_alloc(self, nbytes):
        self._allocs += 1
        if self.fail_alloc_at is not None and self._allocs >= self.fail_alloc_at:
            raise EngineError("CUDA call cudaMalloc failed with cudaErrorMemoryAllocation (2)")
        p = self._id(nbytes)
        self.mem[p] = np.zeros(nbytes, np.uint8)
        return p

    def mem_free(self, ptr):
        del self.mem[ptr]

    def host_alloc(self, nbytes):
        arr = np.zeros(nbytes, np.uint8)
        self.host.add(id(arr))
        return arr, arr

    def host_free(self, token):
        self.host.remove(id(token))

    def memcpy_htod_async(self, dst, src, nbytes, stream):
        def op():
            self.view(dst, nbytes)[:] = src.reshape(-1).view(np.uint8)[:nbytes]
        self.submit(stream, op, "htod")

    def memcpy_dtoh_async(self, dst, src, nbytes, stream):
        def op():
            dst.reshape(-1).view(np.uint8)[:nbytes] = self.view(src, nbytes)
        self.submit(stream, op, "dtoh")

    def memcpy_dtod_async(self, dst, src, nbytes, stream):
        def op():
            self.view(dst, nbytes)[:] = self.view(src, nbytes)
        self.submit(stream, op, "dtod")

    def stream_create(self):
        s = self._id()
        self.streams.add(s)
        return s

    def stream_destroy(self, stream):
        self.streams.remove(stream)

    def stream_handle(self, stream):
        return stream

    def stream_synchronize(self, stream):
        pass

    def stream_wait_event(self, stream, event):
        self.calls.append(("wait", stream, event))

    def event_create(self, timing, blocking_sync=False):
        e = self._id()
        self.events.add(e)
        self.calls.append(("event_create", e, timing, blocking_sync))
        return e

    def event_destroy(self, event):
        self.events.remove(event)

    def event_record(self, event, stream):
        self.calls.append(("record", event, stream))

    def event_synchronize(self, event):
        pass

    def event_query(self, event):
        return True

    def event_elapsed_ms(self, start, end):
        return 0.25

    def begin_capture(self, stream):
        self.calls.append(("begin_capture", stream))
        self.capturing[stream] = []

    def end_capture(self, stream):
        return self.capturing.pop(stream)

    def graph_instantiate(self, graph):
        return tuple(graph)

    def graph_launch(self, graph_exec, stream):
        self.calls.append(("graph_launch", stream))
        for op in graph_exec:
            op()

    def graph_destroy(self, graph):
        pass

    def graph_exec_destroy(self, graph_exec):
        pass

    @property
    def live(self):
        return len(self.mem) + len(self.host) + len(self.streams) + len(self.events)


class EmuCompute:
    """``logits[n, k] = 2 * x[n].flat[k] + 0.5`` on emulated memory; detects concurrent use."""

    def __init__(self, be: EmuBackend, per_in: int, per_out: int):
        self.be, self.per_in, self.per_out = be, per_in, per_out
        self.bound = None
        self.binds = []
        self.busy = False
        self.overlaps = 0
        self.closed = 0

    def bind(self, shape, in_ptr, out_ptr):
        self.bound = (shape[0], in_ptr, out_ptr)
        self.binds.append(self.bound)

    def enqueue(self, stream):
        if self.busy:
            self.overlaps += 1
        self.busy = True
        time.sleep(1e-4)  # widen the window a missing lock would expose
        n, i_ptr, o_ptr = self.bound  # kernel arguments are fixed at launch/capture time

        def op():
            x = self.be.view(i_ptr, n * self.per_in * 4).view(np.float32).reshape(n, -1)
            y = self.be.view(o_ptr, n * self.per_out * 4).view(np.float32).reshape(n, -1)
            y[:] = 2.0 * x[:, :self.per_out] + 0.5
        self.be.submit(stream.handle, op, "kernel")
        self.busy = False

    def close(self):
        self.closed += 1


class EmuRunner(CudaRunnerBase):
    def __init__(self, be, *, max_batch=4, min_batch=1, cuda_graphs=False, check_finite=False,
                 gpu_timing=False):
        self.name, self.spec = "emu", SPEC
        self.input_format, self.precision = InputFormat.FLOAT_NCHW, Precision.FP32
        self.input_spec, self.output_spec = IN_SPEC, output_spec_for(SPEC)
        self.min_batch, self.max_batch = min_batch, max_batch
        self.cuda_graphs, self.check_finite, self.device = cuda_graphs, check_finite, "cuda:0"
        self._compute = self.emu = EmuCompute(be, 3 * 71 * 71, 4)
        self._setup(xc.CudaDevice(0, be), max_batch=max_batch, gpu_timing=gpu_timing)


def _ref(x):
    return 2.0 * x.reshape(x.shape[0], -1)[:, :4] + 0.5


def _x(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 71, 71)).astype(np.float32)


class _DeviceArr:
    """A device array of the emulated backend, as torch/CuPy would expose it."""

    def __init__(self, be, arr, stream=None):
        self.be, self.shape = be, arr.shape
        self.ptr = be.mem_alloc(arr.nbytes)
        be.view(self.ptr, arr.nbytes)[:] = arr.reshape(-1).view(np.uint8)
        self.__cuda_array_interface__ = {"shape": arr.shape, "typestr": arr.dtype.str,
                                         "data": (self.ptr, False), "version": 3,
                                         "strides": None, "stream": stream}

    def numpy(self, dtype=np.float32):
        n = int(np.prod(self.shape)) * np.dtype(dtype).itemsize
        return self.be.view(self.ptr, n).view(dtype).reshape(self.shape).copy()


@pytest.mark.parametrize("graphs", [False, True])
def test_numpy_batches_flow_through(graphs):
    be = EmuBackend()
    with EmuRunner(be, cuda_graphs=graphs) as r:
        for n, seed in [(1, 0), (4, 1), (2, 2), (1, 3)]:
            x = _x(n, seed)
            y = r(x)
            assert y.shape == (n, 4) and y.dtype == np.float32
            np.testing.assert_array_equal(y, _ref(x))
        keep = r(_x(1, 11))  # a result is the caller's own copy: later calls leave it alone
        r(_x(1, 12))
        np.testing.assert_array_equal(keep, _ref(_x(1, 11)))


def test_graphs_are_captured_once_per_batch_size():
    be = EmuBackend()
    with EmuRunner(be, cuda_graphs=True) as r:
        for n in (1, 1, 2, 1, 2, 3):
            np.testing.assert_array_equal(r(_x(n, n)), _ref(_x(n, n)))
        assert sorted(r._graphs) == [(1, True, True), (2, True, True), (3, True, True)]
        assert sum(c[0] == "begin_capture" for c in be.calls) == 3
        assert sum(c[0] == "graph_launch" for c in be.calls) == 6


def test_set_shape_and_addresses_only_when_they_change():
    be = EmuBackend()
    with EmuRunner(be) as r:
        for _ in range(5):
            r(_x(2))
        r(_x(3))
        assert len(r.emu.binds) == 2


def test_device_input_is_used_in_place():
    be = EmuBackend()
    with EmuRunner(be) as r:
        x = _x(3)
        dev = _DeviceArr(be, x)
        before = sum(c[0] == "htod" for c in be.calls)
        y = r.infer(dev)
        np.testing.assert_array_equal(y, _ref(x))
        assert sum(c[0] == "htod" for c in be.calls) == before  # no host copy
        assert r.emu.bound[1] == dev.ptr  # the engine read the caller's memory directly


def test_device_input_producer_stream_is_waited_for():
    be = EmuBackend()
    with EmuRunner(be) as r:
        dev = _DeviceArr(be, _x(1), stream=12345)
        r.infer(dev)
        recs = [c for c in be.calls if c[0] == "record" and c[2] == 12345]
        assert recs and ("wait", r._stream.ptr, recs[0][1]) in be.calls


@pytest.mark.parametrize("graphs", [False, True])
def test_device_output_and_device_input_with_graphs(graphs):
    be = EmuBackend()
    with EmuRunner(be, cuda_graphs=graphs) as r:
        x = _x(2, 5)
        out = _DeviceArr(be, np.zeros((2, 4), np.float32))
        res = r.infer(_DeviceArr(be, x), out=out)
        assert res is out
        np.testing.assert_array_equal(out.numpy(), _ref(x))
        with pytest.raises(EngineError, match=r"shape \(2, 4\)"):
            r.infer(x, out=_DeviceArr(be, np.zeros((3, 4), np.float32)))
        with pytest.raises(EngineError, match="out= must be a CUDA device array"):
            r.infer(x, out=np.zeros((2, 4), np.float32))


def test_bad_inputs_are_refused_before_any_gpu_work():
    be = EmuBackend()
    with EmuRunner(be, min_batch=2, check_finite=True) as r:
        n_calls = len(be.calls)
        nan = _x(2)
        nan[1, 0, 0, 0] = np.nan
        cases = [
            (_x(2)[0], "rank 4"), (_x(2).astype(np.float64), "dtype must be float32"),
            (np.zeros((2, 71, 71, 3), np.float32), "looks like NHWC"),
            (_x(5), "exceeds this model's maximum batch 4"),
            (_x(1), "below the engine's minimum batch 2"),
            (np.asfortranarray(_x(2)), "not C-contiguous"), (nan, "NaN or Inf"),
            ([[1.0]], "numpy.ndarray"),
            (_DeviceArr(be, _x(2).astype(np.float16)), "device input dtype must be float32"),
        ]
        for bad, match in cases:
            with pytest.raises(EngineError, match=match):
                r.infer(bad)
        assert not [c for c in be.calls[n_calls:] if c[0] in ("htod", "kernel")]


def test_cpu_dlpack_array_is_taken_as_host_input():
    torch = pytest.importorskip("torch")
    be = EmuBackend()
    with EmuRunner(be) as r:
        x = _x(2)
        np.testing.assert_array_equal(r.infer(torch.from_numpy(x)), _ref(x))


def test_async_handles_keep_their_own_results():
    be = EmuBackend()
    with EmuRunner(be, gpu_timing=True) as r:
        a, b = _x(1, 1), _x(2, 2)
        h1 = r.infer_async(a)
        h2 = r.infer_async(b)  # completes h1 first: h1's logits must survive
        assert h1.done() and h2.done()
        np.testing.assert_array_equal(h2.wait(timeout=1.0), _ref(b))
        np.testing.assert_array_equal(h1.wait(), _ref(a))
        assert r.last_gpu_time_ms == 0.25


def test_wait_timeout_is_an_error_not_a_hang():
    be = EmuBackend()
    be.event_query = lambda e: False  # the GPU "never finishes"
    with EmuRunner(be) as r:
        h = r.infer_async(_x(1))
        with pytest.raises(EngineError, match="did not finish within 0.01 s"):
            h.wait(timeout=0.01)
        be.event_query = lambda e: True


def test_concurrent_calls_are_serialised():
    be = EmuBackend()
    errors = []
    with EmuRunner(be) as r:
        def work(seed):
            for i in range(30):
                x = _x(1 + (seed + i) % 4, seed * 100 + i)
                if not np.array_equal(r(x), _ref(x)):
                    errors.append(seed)
        ts = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert r.emu.overlaps == 0 and not errors


def test_close_frees_everything_once_and_blocks_use():
    be = EmuBackend()
    r = EmuRunner(be, cuda_graphs=True)
    r(_x(1))
    h = r.infer_async(_x(2))
    assert be.live > 0
    r.close()
    r.close()
    assert be.live == 0 and r.emu.closed == 1 and not r._graphs
    np.testing.assert_array_equal(h.wait(), _ref(_x(2)))  # finished by close, result kept
    with pytest.raises(EngineError, match="closed"):
        r(_x(1))
    with pytest.raises(EngineError, match="closed"):
        r.infer_async(_x(1))


def test_failed_setup_frees_what_it_allocated():
    be = EmuBackend(fail_alloc_at=2)  # the second device allocation fails
    with pytest.raises(EngineError, match="cudaMalloc"):
        EmuRunner(be)
    assert be.live == 0


# ------------------------------------------------------------------------------------------------
# TensorRTRunner: errors that need no GPU
# ------------------------------------------------------------------------------------------------
def _rtx_version():
    trt = pytest.importorskip("tensorrt_rtx")
    return trt.__version__


def _engine(tmp_path, data=b"\x00ENGINE" * 64, **side):
    path = tmp_path / "tiny.engine"
    path.write_bytes(data)
    sidecar = {"schema": 1,
               "engine": {"file": path.name, "bytes": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()},
               "tensorrt": {"flavour": "tensorrt_rtx", "version": "0"},
               "device": None, "targets": ["SM86"], "precision": "fp32",
               "input_format": "float-nchw", "model_spec": SPEC.to_dict(), "build_options": {},
               "rebuild_command": "xception-trt build tiny.onnx -o ."}
    for key, value in side.items():
        if isinstance(value, dict) and isinstance(sidecar.get(key), dict):
            sidecar[key] = {**sidecar[key], **value}
        else:
            sidecar[key] = value
    (tmp_path / "tiny.engine.json").write_text(json.dumps(sidecar))
    return path


def test_missing_and_empty_engine_files(tmp_path):
    with pytest.raises(EngineError, match="does not exist"):
        TensorRTRunner(tmp_path / "nope.engine")
    (tmp_path / "empty.engine").write_bytes(b"")
    with pytest.raises(EngineError, match="empty"):
        TensorRTRunner(tmp_path / "empty.engine")


def test_engine_without_sidecar(tmp_path):
    (tmp_path / "bare.engine").write_bytes(b"1234")
    with pytest.raises(EngineError, match="no sidecar.*xception-trt build"):
        TensorRTRunner(tmp_path / "bare.engine")


def test_truncated_engine_file(tmp_path):
    path = _engine(tmp_path, tensorrt={"version": _rtx_version()})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(EngineError, match="has 100 bytes but its sidecar records 448.*truncated"):
        TensorRTRunner(path)


def test_replaced_engine_file(tmp_path):
    path = _engine(tmp_path, tensorrt={"version": _rtx_version()})
    path.write_bytes(b"\x01" * 448)
    with pytest.raises(EngineError, match="SHA-256"):
        TensorRTRunner(path)


def test_engine_of_another_tensorrt_release(tmp_path):
    path = _engine(tmp_path, tensorrt={"version": "1.0.0.1"})
    with pytest.raises(EngineError) as err:
        TensorRTRunner(path)
    msg = str(err.value)
    assert "built with tensorrt_rtx 1.0.0.1" in msg and "xception-trt build tiny.onnx" in msg


def test_engine_of_a_flavour_that_is_not_installed(tmp_path):
    if "tensorrt" in {f.name for f in __import__("xception_trt.trt").trt.available_flavours()}:
        pytest.skip("NVIDIA TensorRT is installed here")
    path = _engine(tmp_path, tensorrt={"flavour": "tensorrt", "version": "10.3.0"})
    with pytest.raises(BuildError, match="'tensorrt' is not installed"):
        TensorRTRunner(path)


def test_sidecar_without_model_facts(tmp_path):
    path = _engine(tmp_path, model_spec=None)
    with pytest.raises(EngineError, match="does not describe the model"):
        TensorRTRunner(path)


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU message; this machine has a GPU")
def test_matching_engine_without_gpu_says_so(tmp_path):
    path = _engine(tmp_path, tensorrt={"version": _rtx_version()})
    with pytest.raises(EngineError, match="no usable NVIDIA GPU"):
        TensorRTRunner(path)


def test_runner_kind_opens_tensorrt_runner(tmp_path):
    from xception_trt.runners import open_runner

    with pytest.raises(EngineError, match="SHA-256"):
        path = _engine(tmp_path, tensorrt={"version": _rtx_version()})
        path.write_bytes(b"\x02" * 448)
        open_runner(path, cuda_graphs=True)


# ------------------------------------------------------------------------------------------------
# real TensorRT on a GPU: the self-test's engine checks, and broken files in a subprocess
# ------------------------------------------------------------------------------------------------
def _flavour_or_skip():
    from xception_trt.selftest import missing_requirements

    req = missing_requirements()
    if req.flavour is None:
        pytest.skip("; ".join(req.missing_engine))
    return req.flavour


@pytest.mark.trt
def test_engine_checks_on_gpu(tmp_path):
    from xception_trt.selftest import run_engine_checks

    results = run_engine_checks(_flavour_or_skip(), workdir=tmp_path, iterations=50)
    failed = [f"{r.name}: {r.detail}" for r in results if r.status != "pass"]
    assert len(results) == 4 and not failed, "\n".join(failed)


_OPEN_SNIPPET = """
import sys
from xception_trt.errors import XceptionTRTError
from xception_trt.trt.runtime import TensorRTRunner
try:
    TensorRTRunner(sys.argv[1])
except XceptionTRTError as exc:
    print("ERROR:", exc)
    sys.exit(2)
sys.exit(0)
"""


@pytest.mark.trt
@pytest.mark.parametrize("damage", ["foreign", "truncated"])
def test_broken_engine_file_errors_without_crashing(tmp_path, damage):
    from xception_trt.selftest import run_engine_checks
    from xception_trt.sidecar import read_sidecar, sidecar_path

    flavour = _flavour_or_skip()
    run_engine_checks(flavour, workdir=tmp_path, iterations=1)
    engine = tmp_path / "selftest.engine"
    data = engine.read_bytes()
    data = (np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes()
            if damage == "foreign" else data[: len(data) // 2])
    engine.write_bytes(data)
    side = read_sidecar(engine).to_dict()
    side["engine"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    sidecar_path(engine).write_text(json.dumps(side))
    proc = subprocess.run([sys.executable, "-c", _OPEN_SNIPPET, str(engine)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "could not deserialize" in proc.stdout



def test_input_buffer_skips_the_staging_copy(monkeypatch):
    be = EmuBackend()
    with EmuRunner(be, max_batch=4, min_batch=1) as r:
        buf = r.input_buffer(2)
        x = _x(2, 7)
        buf[...] = x
        copies = []
        real = np.copyto
        monkeypatch.setattr(np, "copyto", lambda *a, **k: (copies.append(1), real(*a, **k)))
        np.testing.assert_array_equal(r(buf), _ref(x))
        assert copies == []
        r(x)
        assert copies == [1]
        assert r.input_buffer(2).ctypes.data == buf.ctypes.data
        with pytest.raises(EngineError, match=r"outside the engine's profile \[1, 4\]"):
            r.input_buffer(5)


def test_unaligned_device_arrays_are_staged():
    be = EmuBackend()
    with EmuRunner(be) as r:
        x = _x(3, 4)
        dev = _DeviceArr(be, np.concatenate([np.zeros(1, np.float32), x.reshape(-1)]))
        sliced = types.SimpleNamespace(__cuda_array_interface__={
            "shape": x.shape, "typestr": "<f4", "data": (dev.ptr + 4, False), "version": 3})
        out = _DeviceArr(be, np.zeros(2 + 3 * 4, np.float32))
        out_view = types.SimpleNamespace(__cuda_array_interface__={
            "shape": (3, 4), "typestr": "<f4", "data": (out.ptr + 8, False), "version": 3})
        r.infer(sliced, out=out_view)
        assert r.emu.bound[1] == r._dev_in.ptr and r.emu.bound[2] == r._dev_out.ptr
        np.testing.assert_array_equal(out.numpy()[2:].reshape(3, 4), _ref(x))


# ------------------------------------------------------------------------------------------------
# real TensorRT-RTX on the CPU: it builds engines and checks plans before touching the GPU
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rtx_engine(tiny_onnx_files, tmp_path_factory):
    pytest.importorskip("tensorrt_rtx")
    from xception_trt.config import BuildConfig
    from xception_trt.trt.builder import build_engine

    cfg = BuildConfig(flavour="tensorrt_rtx", max_batch=4, cc=("sm86",),
                      layer_info=False)
    return build_engine(tiny_onnx_files["float"], cfg,
                        output=tmp_path_factory.mktemp("rt") / "tiny.engine").path


@pytest.mark.parametrize("damage", ["foreign", "truncated", "header only"])
def test_tensorrt_refuses_broken_plans_cleanly(rtx_engine, damage):
    import tensorrt_rtx as trt

    from xception_trt.trt.runtime import deserialize

    data = rtx_engine.read_bytes()
    blob = {"foreign": bytes(range(256)) * 16, "truncated": data[: len(data) // 2],
            "header only": data[:64]}[damage]
    # TensorRT-RTX's header check (get_engine_validity, issue 21 item 9) refuses them first;
    # "foreign" with its MALFORMED_ENGINE diagnostic (the real TensorRT-RTX, on this CPU)
    with pytest.raises(EngineError, match=r"TensorRT-RTX says bad\.engine is not valid here "
                                          r"\(.+\): rebuild it with `xception-trt build`"):
        deserialize(trt, blob, source="bad.engine")
    if damage == "foreign":
        with pytest.raises(EngineError, match="MALFORMED_ENGINE"):
            deserialize(trt, blob, source="bad.engine")


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU message; this machine has a GPU")
def test_real_engine_and_sidecar_without_gpu(rtx_engine):
    with pytest.raises(EngineError, match="no usable NVIDIA GPU"):
        TensorRTRunner(rtx_engine)


def test_one_tensorrt_logger_keeps_errors_and_the_layer_summary(caplog):
    """builder and runtime share trt/logger.py: errors are kept for the raised message (DEBUG in
    the log), warnings are logged as warnings, and the RTX layer summary is captured on request."""
    trt = pytest.importorskip("tensorrt_rtx")
    import logging

    from xception_trt.trt.logger import make_logger

    sev = trt.ILogger.Severity
    logger = make_logger(trt, capture_layers=True)
    with caplog.at_level(logging.DEBUG, logger="xception_trt.trt.logger"):
        logger.log(sev.ERROR, "first\n")
        logger.log(sev.INTERNAL_ERROR, "second")
        logger.log(sev.WARNING, "careful")
        logger.log(sev.VERBOSE, "Layers:\n[conv]")
        logger.log(sev.VERBOSE, "noise")
    assert logger.errors == ["first", "second"]
    assert logger.layers_text == "Layers:\n[conv]"
    assert [r.levelname for r in caplog.records if "careful" in r.message] == ["WARNING"]
    assert logger.take() == "first | second" and logger.errors == []
    quiet = make_logger(trt)
    quiet.log(sev.VERBOSE, "Layers:\n[conv]")
    assert quiet.layers_text is None
