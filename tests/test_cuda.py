"""The CUDA layer (the xception_trt/trt/cuda/ package).

On any machine: error-code translation (with an injected bindings module), backend selection,
sizes, ownership/use-after-close guards (with a recording backend), device-array parsing
(CUDA array interface dicts, real DLPack capsules of CPU tensors), and a real NVRTC compile (NVRTC
runs on the CPU). On an NVIDIA GPU (marked ``gpu``): the self-test's CUDA checks for every
installed backend -- the same code path as ``xception-trt selftest``.
"""

from __future__ import annotations

import enum
import gc
import importlib.util
import sys
import types

import numpy as np
import pytest

from xception_trt.errors import DependencyError, EngineError
from xception_trt.trt import cuda as xc
from xception_trt.trt.devices import query_devices

HAS_GPU = bool(query_devices().gpus)


# ------------------------------------------------------------------------------------------------
# error translation with an injected cuda-python runtime module
# ------------------------------------------------------------------------------------------------
class _Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidValue = 1
    cudaErrorNotReady = 600


def _fake_runtime(**overrides):
    """A module shaped like cuda.bindings.runtime: functions return (code, value...)."""
    ok = _Err.cudaSuccess
    rt = types.SimpleNamespace(
        cudaError_t=_Err,
        cudaGetDeviceCount=lambda: (ok, 1),
        cudaSetDevice=lambda d: (ok,),
        cudaFree=lambda p: (ok,),
        cudaGetErrorString=lambda e: (ok, {2: b"out of memory"}.get(int(e), b"bad")),
        cudaStreamQuery=lambda s: (ok,),
    )
    for k, v in overrides.items():
        setattr(rt, k, v)
    return rt


def test_failed_call_names_call_code_and_meaning():
    rt = _fake_runtime(cudaMalloc=lambda n: (_Err.cudaErrorMemoryAllocation, 0))
    be = xc.CudaPythonBackend(0, runtime=rt, driver=None)
    with pytest.raises(EngineError) as err:
        be.mem_alloc(1 << 30)
    msg = str(err.value)
    assert "cudaMalloc" in msg and "cudaErrorMemoryAllocation" in msg and "(2)" in msg
    assert "out of memory" in msg


def test_successful_calls_unpack_values():
    rt = _fake_runtime(cudaMalloc=lambda n: (_Err.cudaSuccess, 0x7000 + n),
                       cudaMemGetInfo=lambda: (_Err.cudaSuccess, 5, 9))
    be = xc.CudaPythonBackend(0, runtime=rt, driver=None)
    assert be.mem_alloc(16) == 0x7010
    assert be.mem_get_info() == (5, 9)
    be.mem_free(0x7010)  # cudaFree returns only a code: no value, no error


def test_binding_exception_becomes_engine_error():
    def boom(n):
        raise RuntimeError("libcudart.so not found")

    be = xc.CudaPythonBackend(0, runtime=_fake_runtime(cudaMalloc=boom), driver=None)
    with pytest.raises(EngineError, match=r"cudaMalloc could not run.*libcudart"):
        be.mem_alloc(4)


def test_query_distinguishes_not_ready_from_errors():
    codes = iter([_Err.cudaErrorNotReady, _Err.cudaSuccess, _Err.cudaErrorInvalidValue])
    be = xc.CudaPythonBackend(0, runtime=_fake_runtime(cudaStreamQuery=lambda s: (next(codes),)),
                              driver=None)
    assert be.stream_query(object()) is False
    assert be.stream_query(object()) is True
    with pytest.raises(EngineError, match="cudaStreamQuery.*cudaErrorInvalidValue"):
        be.stream_query(object())


def test_missing_device_ordinal_is_clear():
    with pytest.raises(EngineError, match=r"device 3 does not exist.*1 GPU.*device=0\.\.0"):
        xc.CudaPythonBackend(3, runtime=_fake_runtime(), driver=None)


def test_driver_api_needs_driver_module():
    be = xc.CudaPythonBackend(0, runtime=_fake_runtime(), driver=None)
    with pytest.raises(EngineError, match="cuModuleLoadData"):
        be.module_load(b"\x7fELF")


@pytest.mark.skipif(HAS_GPU, reason="checks the no-driver message; this machine has a GPU")
def test_real_bindings_without_driver_name_the_call():
    pytest.importorskip("cuda.bindings")
    with pytest.raises(EngineError) as err:
        xc.CudaDevice(0)
    msg = str(err.value)
    # the words `info` and `selftest` use (issue 13 item 15), not the runtime's misleading
    # "CUDA driver version is insufficient"
    assert "no usable NVIDIA GPU: no NVIDIA driver found" in msg and "nvidia-smi" in msg
    assert "insufficient" not in msg
    assert query_devices().reason in msg


def _insufficient_driver_runtime():
    class Err(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInsufficientDriver = 35
        cudaErrorNotReady = 600

    return types.SimpleNamespace(
        cudaError_t=Err, cudaGetDeviceCount=lambda: (Err.cudaErrorInsufficientDriver, 0),
        cudaGetErrorString=lambda e: (Err.cudaSuccess,
                                      b"CUDA driver version is insufficient for CUDA runtime"))


def test_no_driver_is_worded_like_info(monkeypatch):
    from xception_trt.trt import devices

    monkeypatch.setattr(devices, "query_devices", lambda: devices.DeviceReport(
        None, None, (), "cuda-python", f"{devices.NO_DRIVER} (libcuda.so.1 cannot be loaded)"))
    with pytest.raises(EngineError) as err:
        xc.CudaPythonBackend(0, runtime=_insufficient_driver_runtime(), driver=None)
    assert str(err.value).startswith("no usable NVIDIA GPU: no NVIDIA driver found (libcuda.so.1")
    assert "insufficient" not in str(err.value)


def test_old_driver_keeps_the_runtime_words(monkeypatch):
    from xception_trt.trt import devices

    monkeypatch.setattr(devices, "query_devices", lambda: devices.DeviceReport(
        "470.1", "11.4", (devices.GpuInfo(0, "GPU", "8.6", 1 << 30),), "cuda-python", ""))
    with pytest.raises(EngineError) as err:
        xc.CudaPythonBackend(0, runtime=_insufficient_driver_runtime(), driver=None)
    msg = str(err.value)
    assert "cudaGetDeviceCount" in msg and "insufficient" in msg and "at least as new" in msg


# ------------------------------------------------------------------------------------------------
# backend selection
# ------------------------------------------------------------------------------------------------
def test_unknown_backend_lists_choices():
    with pytest.raises(EngineError, match="unknown CUDA backend 'cupy'.*cuda-python, pycuda"):
        xc.open_backend("cupy")


@pytest.mark.skipif(importlib.util.find_spec("pycuda") is not None, reason="pycuda installed")
def test_missing_pycuda_names_the_extra():
    with pytest.raises(DependencyError, match=r"pip install 'xception-trt\[pycuda\]'"):
        xc.open_backend("pycuda")
    assert "CUDA toolkit" in xc.backend_status()["pycuda"]


def test_missing_cuda_python_names_the_extra(monkeypatch):
    for mod in ("cuda.bindings", "cuda.cuda", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, mod, None)  # makes the import fail
    with pytest.raises(DependencyError, match=r"pip install 'xception-trt\[cuda\]'"):
        xc.open_backend("cuda-python")
    assert xc.backend_status()["cuda-python"] is not None


def test_nbytes_of():
    assert xc.nbytes_of((2, 3, 299, 299), np.float32) == 2 * 3 * 299 * 299 * 4
    assert xc.nbytes_of((4, 1000), np.uint8) == 4000
    with pytest.raises(EngineError, match="dynamic -1"):
        xc.nbytes_of((-1, 3), np.float32)
    assert xc.nbytes_of((np.int64(2), 3), np.float32) == 24  # NumPy integers are integers
    for bad in ((True, 3), (2.0, 3)):
        with pytest.raises(EngineError, match="every dimension must be an integer >= 0"):
            xc.nbytes_of(bad, np.float32)


# ------------------------------------------------------------------------------------------------
# ownership with a recording backend (no emulation of CUDA semantics: only the bookkeeping)
# ------------------------------------------------------------------------------------------------
class RecordingBackend(xc.CudaBackend):
    name = "recording"
    device = 0

    def __init__(self):
        self.calls: list[tuple] = []
        self.live: set[int] = set()
        self._next = 0x1000
        self.end_capture_result = "graph"

    def _new(self) -> int:
        self._next += 0x100
        return self._next

    def activate(self):
        pass

    def mem_alloc(self, nbytes):
        p = self._new()
        self.live.add(p)
        self.calls.append(("alloc", nbytes))
        return p

    def mem_free(self, ptr):
        self.live.remove(ptr)  # KeyError on a double free
        self.calls.append(("free", ptr))

    def host_alloc(self, nbytes):
        p = self._new()
        self.live.add(p)
        return np.zeros(nbytes, np.uint8), p

    def host_free(self, token):
        self.live.remove(token)

    def memcpy_htod_async(self, dst, src, nbytes, stream):
        self.calls.append(("htod", dst, nbytes))

    def memcpy_dtoh_async(self, dst, src, nbytes, stream):
        self.calls.append(("dtoh", src, nbytes))

    def stream_create(self):
        p = self._new()
        self.live.add(p)
        return p

    def stream_handle(self, stream):
        return stream

    def stream_destroy(self, stream):
        self.live.remove(stream)

    def event_create(self, timing, blocking_sync=False):
        p = self._new()
        self.live.add(p)
        return p

    def event_destroy(self, event):
        self.live.remove(event)

    def begin_capture(self, stream):
        self.calls.append(("begin_capture", stream))

    def end_capture(self, stream):
        self.calls.append(("end_capture", stream))
        return self.end_capture_result

    def graph_instantiate(self, graph):
        return ("exec", graph)

    def graph_destroy(self, graph):
        self.calls.append(("graph_destroy", graph))

    def graph_exec_destroy(self, graph_exec):
        self.calls.append(("graph_exec_destroy", graph_exec))


def test_backend_operations_left_out_raise_and_defaults_work():
    be = RecordingBackend()
    assert isinstance(be, xc.CudaBackend) and not isinstance("cuda-python", xc.CudaBackend)
    with pytest.raises(NotImplementedError, match=r"RecordingBackend does not implement "
                                                  r"CudaBackend\.stream_synchronize\(\)"):
        be.stream_synchronize(1)
    assert be.pack_args([np.int32(3)]) == (np.int32(3),) and be.close() is None


def test_device_buffer_single_owner_and_guards():
    be = RecordingBackend()
    with xc.DeviceBuffer(be, 64) as buf:
        ptr = buf.ptr
        assert ptr in be.live
    assert buf.closed and ptr not in be.live
    buf.close()  # idempotent: no second free (would raise KeyError)
    assert be.calls.count(("free", ptr)) == 1
    with pytest.raises(EngineError, match="used after close"):
        _ = buf.ptr
    with pytest.raises(EngineError, match="used after close"):
        buf.copy_from_device(0, 4, None)


def test_device_buffer_size_and_layout_checks():
    be = RecordingBackend()
    s = xc.Stream(be)
    with xc.DeviceBuffer(be, 16) as buf:
        with pytest.raises(EngineError, match="does not fit"):
            buf.copy_from_host(np.zeros(5, np.float32), s)
        with pytest.raises(EngineError, match="C-contiguous"):
            buf.copy_from_host(np.zeros((2, 2), np.float32).T, s)
        ro = np.zeros(4, np.float32)
        ro.flags.writeable = False
        with pytest.raises(EngineError, match="read-only"):
            buf.copy_to_host(ro, s)
        buf.copy_from_host(np.zeros(4, np.float32), s)
        assert ("htod", buf.ptr, 16) in be.calls
    for bad in (0, -1, 2.5, True):
        with pytest.raises(EngineError, match="positive size"):
            xc.DeviceBuffer(be, bad)
    s.close()
    assert not be.live


def test_pinned_buffer_view_and_close():
    be = RecordingBackend()
    pb = xc.PinnedBuffer(be, (2, 3, 4), np.float32)
    assert pb.nbytes == 96 and pb.array.shape == (2, 3, 4) and pb.array.dtype == np.float32
    pb.close()
    pb.close()
    with pytest.raises(EngineError, match="pinned host buffer was used after close"):
        _ = pb.array
    with pytest.raises(EngineError, match="empty"):
        xc.PinnedBuffer(be, (0, 3), np.float32)
    assert not be.live


def test_dropped_resources_are_freed_by_the_safety_net():
    be = RecordingBackend()
    buf, ev = xc.DeviceBuffer(be, 8), xc.Event(be)
    assert len(be.live) == 2
    del buf, ev
    gc.collect()
    assert not be.live


def test_event_timing_flag_checked():
    be = RecordingBackend()
    a, b = xc.Event(be), xc.Event(be, timing=True)
    with pytest.raises(EngineError, match="timing=True"):
        a.elapsed_ms(b)


def test_capture_ends_and_discards_graph_when_body_raises():
    be = RecordingBackend()
    s = xc.Stream(be)
    with pytest.raises(ValueError):
        with s.capture():
            raise ValueError("boom")
    assert ("end_capture", s.ptr) in be.calls and ("graph_destroy", "graph") in be.calls


def test_invalidated_capture_is_a_clear_error():
    be = RecordingBackend()
    be.end_capture_result = None
    s = xc.Stream(be)
    with pytest.raises(EngineError, match="capture was invalidated.*cuda_graphs=False"):
        with s.capture():
            pass


def test_graph_frees_exec_then_graph_once():
    be = RecordingBackend()
    s = xc.Stream(be)
    with s.capture() as cap:
        pass
    cap.graph.close()
    cap.graph.close()
    assert be.calls[-2:] == [("graph_exec_destroy", ("exec", "graph")),
                             ("graph_destroy", "graph")]
    with pytest.raises(EngineError, match="CUDA graph was used after close"):
        cap.graph.launch(s)


def test_kernel_arguments_need_explicit_c_types():
    be = RecordingBackend()
    be.module_load = lambda image: "mod"
    be.module_unload = lambda m: None
    be.module_function = lambda m, name: name
    launched = []
    be.launch = lambda f, g, b, packed, s: launched.append(packed)
    mod = xc.CudaModule(be, b"image")
    k = mod.kernel("f")
    s = xc.Stream(be)
    with pytest.raises(EngineError, match="NumPy scalars"):
        k.launch((1, 1, 1), (1, 1, 1), (1.0,), s)
    k.launch((1, 1, 1), (1, 1, 1), (np.float32(1.0), np.uint64(5)), s)
    packed = k.pack((np.int32(3),))
    k.launch((1, 1, 1), (1, 1, 1), packed, s)
    assert launched == [(np.float32(1.0), np.uint64(5)), (np.int32(3),)]
    mod.close()
    with pytest.raises(EngineError, match="CUDA module was used after close"):
        k.launch((1, 1, 1), (1, 1, 1), (np.float32(1.0),), s)


def test_device_factory_refuses_use_after_close():
    dev = xc.CudaDevice(0, RecordingBackend())
    dev.close()
    dev.close()
    with pytest.raises(EngineError, match="CudaDevice was used after close"):
        dev.alloc(4)


# ------------------------------------------------------------------------------------------------
# device arrays of other libraries
# ------------------------------------------------------------------------------------------------
class _CAI:
    def __init__(self, **iface):
        self.__cuda_array_interface__ = {"version": 3, "strides": None, "stream": None, **iface}


def test_cuda_array_interface_parsed_without_copy():
    info = xc.device_array_info(_CAI(shape=(2, 3, 71, 71), typestr="<f4", data=(0xDEAD00, False)))
    assert info.ptr == 0xDEAD00 and info.shape == (2, 3, 71, 71)
    assert info.dtype == np.float32 and info.c_contiguous and info.device_type == "cuda"
    assert info.nbytes == 2 * 3 * 71 * 71 * 4


def test_cuda_array_interface_strides_and_stream():
    # a transposed (2, 3) float32 view: strides (4, 8) -> not C-contiguous
    t = xc.device_array_info(_CAI(shape=(2, 3), typestr="<f4", data=(8, False), strides=(4, 8)))
    assert not t.c_contiguous
    c = xc.device_array_info(_CAI(shape=(2, 3), typestr="<f4", data=(8, False), strides=(12, 4),
                                  stream=7))
    assert c.c_contiguous and c.stream == 7
    with pytest.raises(EngineError, match="invalid producer stream 0"):
        xc.device_array_info(_CAI(shape=(1,), typestr="<f4", data=(8, False), stream=0))
    with pytest.raises(EngineError, match="mask"):
        xc.device_array_info(_CAI(shape=(1,), typestr="<f4", data=(8, False), mask=object()))
    with pytest.raises(EngineError, match="invalid __cuda_array_interface__"):
        xc.device_array_info(_CAI(shape=(1,), data=(8, False)))


def test_dlpack_capsule_parsed_from_a_real_cpu_tensor():
    torch = pytest.importorskip("torch")
    t = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    info = xc.device_array_info(t)
    assert info.device_type == "cpu" and info.ptr == t.data_ptr()
    assert info.shape == (2, 3, 4) and info.dtype == np.float32 and info.c_contiguous
    tt = xc.device_array_info(t.transpose(1, 2))
    assert tt.shape == (2, 4, 3) and not tt.c_contiguous
    base = torch.zeros((1, 5), dtype=torch.uint8)
    u8 = xc.device_array_info(base[:, 1:])
    assert u8.dtype == np.uint8 and u8.shape == (1, 4) and u8.ptr == base.data_ptr() + 1


def test_dlpack_byte_offset_is_applied():
    torch = pytest.importorskip("torch")
    base = torch.arange(10, dtype=torch.float32)
    info = xc.device_array_info(base[3:])
    assert info.ptr == base.data_ptr() + 3 * 4


def test_cuda_dlpack_is_preferred_and_gets_our_stream():
    torch = pytest.importorskip("torch")
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)

    class CudaLike:  # says "CUDA" through DLPack and also offers a (v2, stream-less) CAI
        seen = []
        __cuda_array_interface__ = {"shape": (9,), "typestr": "<f4", "data": (1, False),
                                    "version": 2}

        def __dlpack_device__(self):
            return (2, 0)

        def __dlpack__(self, stream=None):
            self.seen.append(stream)
            return t.__dlpack__()

    info = xc.device_array_info(CudaLike(), consumer_stream=77)
    assert CudaLike.seen == [77] and info.device_type == "cuda" and info.device_id == 0
    assert info.ptr == t.data_ptr() and info.shape == (2, 3)


def test_host_and_unknown_objects_are_not_device_arrays():
    assert xc.device_array_info(np.zeros(3)) is None
    assert xc.device_array_info([1, 2, 3]) is None


def test_device_array_view_round_trips_through_the_interface():
    be = RecordingBackend()
    with xc.DeviceBuffer(be, 24) as buf:
        arr = xc.DeviceArray(buf, (2, 3), np.float32)
        info = xc.device_array_info(arr)
        assert (info.ptr, info.shape, info.dtype) == (buf.ptr, (2, 3), np.float32)
        with pytest.raises(EngineError, match="needs 28 bytes"):
            xc.DeviceArray(buf, (7,), np.float32)


# ------------------------------------------------------------------------------------------------
# NVRTC (runs on the CPU)
# ------------------------------------------------------------------------------------------------
def _nvrtc_or_skip():
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    try:
        nvrtc.nvrtcVersion()
    except Exception as exc:
        pytest.skip(f"NVRTC library not installed (pip install nvidia-cuda-nvrtc): {exc}")


def test_standin_kernel_compiles_to_a_cubin():
    _nvrtc_or_skip()
    from xception_trt.selftest import STANDIN_SOURCE

    cubin = xc.compile_kernel(STANDIN_SOURCE, arch=(8, 6))
    assert cubin[:4] == b"\x7fELF" and b"xtrt_standin_affine" in cubin


def test_compile_error_carries_the_compiler_log():
    _nvrtc_or_skip()
    with pytest.raises(EngineError, match=r"could not compile bad\.cu for sm_80.*error"):
        xc.compile_kernel('extern "C" __global__ void f() { undefined_symbol(); }', arch=(8, 0),
                          name="bad.cu")


# ------------------------------------------------------------------------------------------------
# real GPU: the self-test's CUDA checks, per installed backend
# ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda-python", "pycuda"])
def test_cuda_layer_on_gpu(backend):
    from xception_trt.selftest import run_cuda_checks

    if xc.backend_status()[backend] is not None:
        pytest.skip(xc.backend_status()[backend])
    results = run_cuda_checks(backend, calls=2000)
    failed = [f"{r.name}: {r.detail}" for r in results if r.status == "fail"]
    assert len(results) == 11 and not failed, "\n".join(failed)
    skipped = {r.name.split(": ", 1)[1] for r in results if r.status == "skip"}
    # pycuda has no CUDA graph API; only pycuda makes non-primary contexts (issue 21)
    assert skipped == ({"runner path (CUDA graphs)", "graph capture/replay"} if backend == "pycuda"
                       else {"device pointers from a non-primary context"})


def test_nvrtc_status_explains_a_missing_library(monkeypatch):
    pytest.importorskip("cuda.bindings")
    import cuda.bindings

    def missing():
        raise RuntimeError('Failure finding "libnvrtc.so.13"')

    fake = types.SimpleNamespace(nvrtcVersion=missing)
    monkeypatch.setitem(sys.modules, "cuda.bindings.nvrtc", fake)
    monkeypatch.setattr(cuda.bindings, "nvrtc", fake, raising=False)
    assert "pip install nvidia-cuda-nvrtc" in xc.nvrtc_status()


class _PycudaError(Exception):
    pass


def _fake_pycuda(count=1, init_error=None):
    def init():
        if init_error:
            raise _PycudaError(init_error)

    class Device:
        def __init__(self, i):
            self.i = i

        @staticmethod
        def count():
            return count

        def retain_primary_context(self):
            return types.SimpleNamespace(push=lambda: None, detach=lambda: None)

    def mem_alloc(n):
        raise _PycudaError("cuMemAlloc failed: out of memory")

    return types.SimpleNamespace(Error=_PycudaError, init=init, Device=Device,
                                 mem_alloc=mem_alloc, Context=types.SimpleNamespace(pop=lambda: 0))


def test_pycuda_errors_become_engine_errors():
    with pytest.raises(EngineError, match=r"cuInit \(pycuda\) failed: cuInit failed: no CUDA"):
        xc.PycudaBackend(0, driver=_fake_pycuda(init_error="cuInit failed: no CUDA-capable "
                                                           "device is detected"))
    with pytest.raises(EngineError, match="device 1 does not exist"):
        xc.PycudaBackend(1, driver=_fake_pycuda(count=1))
    be = xc.PycudaBackend(0, driver=_fake_pycuda())
    with pytest.raises(EngineError, match=r"cuMemAlloc \(pycuda\) failed: .*out of memory"):
        be.mem_alloc(1 << 40)
    with pytest.raises(EngineError, match="was not allocated here"):
        be.mem_free(0x1234)
    be.close()


@pytest.mark.skipif(HAS_GPU, reason="would run bogus handles against a real driver")
def test_installed_bindings_accept_every_call_we_make():
    """Each cuda-python call of the backend passes the installed bindings' argument conversion
    (arity, types) and reaches CUDA, which answers "no driver" here. A changed signature in a
    new cuda-python release shows up as a TypeError."""
    bindings = pytest.importorskip("cuda.bindings")
    import threading

    from cuda.bindings import driver as drv
    from cuda.bindings import runtime as rt

    be = object.__new__(xc.CudaPythonBackend)  # skip __init__: it would stop at "no GPU"
    be._rt, be._drv, be.device, be._local = rt, drv, 0, threading.local()
    be._success, be._not_ready = rt.cudaError_t.cudaSuccess, rt.cudaError_t.cudaErrorNotReady
    s, e, h = rt.cudaStream_t(0x1234), rt.cudaEvent_t(0x5678), np.zeros(16, np.uint8)
    g, ge = rt.cudaGraph_t(0x99), rt.cudaGraphExec_t(0x98)
    calls = [
        lambda: be.mem_alloc(16), lambda: be.mem_free(0x1000), be.mem_get_info,
        lambda: be.host_alloc(16), lambda: be.host_free(0x1000),
        lambda: be.memcpy_htod_async(0x1000, h, 16, s),
        lambda: be.memcpy_dtoh_async(h, 0x1000, 16, s),
        lambda: be.memcpy_dtod_async(0x1000, 0x2000, 16, s),
        lambda: be.memset_async(0x1000, 0, 16, s), be.stream_create,
        lambda: be.stream_destroy(s), lambda: be.stream_synchronize(s),
        lambda: be.stream_query(s), lambda: be.stream_wait_event(s, e),
        lambda: be.event_create(False), lambda: be.event_create(True),
        lambda: be.event_destroy(e), lambda: be.event_record(e, s), lambda: be.event_record(e, 2),
        lambda: be.event_synchronize(e), lambda: be.event_query(e),
        lambda: be.event_elapsed_ms(e, e), lambda: be.begin_capture(s),
        lambda: be.end_capture(s), lambda: be.graph_instantiate(g),
        lambda: be.graph_launch(ge, s), lambda: be.graph_destroy(g),
        lambda: be.graph_exec_destroy(ge), be.activate, be.device_name, be.compute_capability,
        lambda: be.module_load(b"\x7fELF"), lambda: be.module_function(drv.CUmodule(7), "f"),
        lambda: be.module_unload(drv.CUmodule(7)),
        lambda: be.launch(drv.CUfunction(6), (1, 1, 1), (32, 1, 1),
                          be.pack_args([np.uint64(1), np.float32(2), np.int32(3)]), s),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(EngineError) as err:
            call()
        msg = str(err.value)
        assert "TypeError" not in msg and ("failed with" in msg or "LibNotFound" in msg), (i, msg)
    assert be.versions()["cuda-bindings"] == bindings.__version__


def test_cuda_python_kernel_params_point_at_typed_values():
    be = object.__new__(xc.CudaPythonBackend)
    storage, params, address = be.pack_args([np.uint64(0xABC), np.float32(1.5), np.int32(-7)])
    assert address == params.ctypes.data and params.dtype == np.uint64
    import ctypes

    assert ctypes.c_uint64.from_address(int(params[0])).value == 0xABC
    assert ctypes.c_float.from_address(int(params[1])).value == 1.5
    assert ctypes.c_int32.from_address(int(params[2])).value == -7
