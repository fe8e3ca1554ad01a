"""The CUDA layer against the documented rules it must keep (issue 21, items 12-18).

Each test names its source. They run on the CPU: with recording fakes of pycuda and
cuda-python, the emulating backend of test_runtime.py, and the real NVRTC (which runs on the
CPU). Each failed on the code before its fix (the commit message says how).
"""

from __future__ import annotations

import enum
import subprocess
import sys
import textwrap
import threading
import types

import numpy as np
import pytest
from test_runtime import EmuBackend, EmuRunner, _DeviceArr, _ref, _x

from xception_trt.errors import EngineError
from xception_trt.trt import cuda as xc
from xception_trt.trt.cuda import nvrtc as nvrtc_mod


# ------------------------------------------------------------------------------------------------
# a pycuda fake that keeps pycuda's per-thread context stack
# ------------------------------------------------------------------------------------------------
class _PycudaError(Exception):
    pass


class _FakeContext:
    """pycuda's ``context`` / ``primary_context`` (pycuda ``src/cpp/cuda.hpp``, v2026.1): valid
    until detached, remembers the thread that created it."""

    def __init__(self, fake: "_FakePycuda", name: str) -> None:
        self.fake, self.name = fake, name
        self.valid, self.detached, self.use_count = True, False, 1
        self.thread = threading.get_ident()

    def push(self) -> None:
        """``context_push``: onto this thread's stack (no thread check)."""
        self.fake._stack.append(self)
        self.use_count += 1

    def detach(self) -> None:
        """``context::detach``: an invalid context throws; the current one is released and
        removed from the stack (``current_context(this)`` pops it) and the context below it
        becomes current; a non-current one is released only on its own thread ("pop is
        implicit in detach"); from another thread nothing is released (a leak)."""
        fake = self.fake
        if not self.valid:
            raise _PycudaError("context::detach failed: invalid device context - cannot "
                               "detach from invalid context")
        active = fake.current() is self
        if active or self.thread == threading.get_ident():
            fake.released.append(self.name)
        else:
            fake.leaked.append(self.name)
        self.valid, self.detached = False, True
        if active:
            fake.current(except_=self)


class _FakePycuda:
    """``pycuda.driver`` as far as we use it, with pycuda's per-thread context stack as its C++
    source implements it (pycuda ``src/cpp/cuda.hpp``, v2026.1): ``context_stack`` is a
    ``boost::thread_specific_ptr`` (its destructor aborts the process when the stack is not
    empty); ``Context.pop()`` throws "cannot pop non-current context" on an empty stack and
    otherwise pops the top, whoever pushed it; ``current_context`` drops invalid (detached)
    contexts from the top; ``detach`` as :class:`_FakeContext` says. A context is pushed by
    ``push()`` and by ``make_context`` (not by ``retain_primary_context``)."""

    Error = _PycudaError
    event_flags = types.SimpleNamespace(DEFAULT=0, BLOCKING_SYNC=1, DISABLE_TIMING=2)

    def __init__(self) -> None:
        self._tls = threading.local()
        self.events: list[int] = []
        self.contexts: list = []
        self.released: list[str] = []
        self.leaked: list[str] = []
        self.memory: dict[int, tuple[str, bytes]] = {}
        fake = self

        class Device:
            def __init__(self, i):
                self.i = i

            @staticmethod
            def count():
                return 1

            def retain_primary_context(self):
                return _FakeContext(fake, "primary")

            def make_context(self):
                ctx = _FakeContext(fake, "secondary")
                fake.contexts.append(ctx)
                ctx.push()
                return ctx

        class Context:
            @staticmethod
            def pop():
                if not fake._stack:
                    raise _PycudaError("context::pop failed: invalid device context - cannot "
                                       "pop non-current context")
                current = fake.current()
                if current is not None:
                    current.use_count -= 1
                if fake._stack:
                    fake._stack.pop()

        class Event:
            def __init__(self, flags=0):
                fake.need_context("cuEventCreate")
                fake.events.append(flags)

        self.Device, self.Context, self.Event = Device, Context, Event

    @property
    def _stack(self) -> list[_FakeContext]:
        if not hasattr(self._tls, "stack"):
            self._tls.stack = []
        return self._tls.stack

    @property
    def stack(self) -> list[str]:
        """This thread's stack, bottom first, by context name."""
        return [c.name for c in self._stack]

    def current(self, except_: _FakeContext | None = None) -> _FakeContext | None:
        """``context::current_context(except)``: the top valid context; invalid ones (and
        ``except_``) are popped off the top on the way."""
        while self._stack:
            top = self._stack[-1]
            if top is not except_ and top.valid:
                return top
            self._stack.pop()
        return None

    def need_context(self, call: str) -> None:
        if self.current() is None:
            raise _PycudaError(f"{call} failed: invalid device context")

    def init(self):
        pass

    def mem_alloc(self, n):
        self.need_context("cuMemAlloc")
        fake, ptr = self, 0x1000 + 0x1000 * len(self.memory)
        self.memory[ptr] = (self.stack[-1], b"")

        class Alloc(int):
            def free(self):
                fake.need_context("cuMemFree")
                del fake.memory[int(self)]
        return Alloc(ptr)

    def memcpy_htod(self, dst, src):
        self.need_context("cuMemcpyHtoD")
        self.memory[int(dst)] = (self.stack[-1], src.tobytes())

    def mem_get_info(self):
        self.need_context("cuMemGetInfo")
        return (1, 2)


def test_pycuda_pushes_are_scoped_to_each_call():
    """Item 12: pycuda's context stack is per thread and a thread must not end with a pushed
    context (pycuda aborts: "context stack was not empty upon module cleanup", pycuda
    src/cpp/cuda.hpp). Every push is popped within the same call, on every thread."""
    drv = _FakePycuda()
    be = xc.PycudaBackend(0, driver=drv)
    assert drv.stack == []  # opening leaves nothing pushed (it used to push for good)
    left: list[list[str]] = []

    def worker() -> None:
        be.activate()
        be.mem_alloc(16)  # the call itself runs with the context current
        with be.scope():
            assert drv.stack == ["primary"]
            be.mem_get_info()  # nested: no second push
            assert drv.stack == ["primary"]
        left.append(list(drv.stack))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert left == [[]]
    be.close()


def test_runner_calls_run_inside_one_backend_scope():
    """Item 12: the runner makes its backend's context current for the whole public call (the
    TensorRT enqueue inside it needs it) and leaves none behind."""
    depth = {"now": 0, "seen": []}

    class ScopedEmu(EmuBackend):
        def scope(self):
            import contextlib

            @contextlib.contextmanager
            def cm():
                depth["now"] += 1
                try:
                    yield
                finally:
                    depth["now"] -= 1
            return cm()

    be = ScopedEmu()
    with EmuRunner(be) as r:
        enqueue = r.emu.enqueue
        r.emu.enqueue = lambda s: (depth["seen"].append(depth["now"]), enqueue(s))
        np.testing.assert_array_equal(r(_x(2)), _ref(_x(2)))
        h = r.infer_async(_x(1))
        h.wait()
    assert depth["seen"] == [1, 1] and depth["now"] == 0


def test_pycuda_fake_follows_pycudas_context_stack():
    """The fake keeps pycuda's rules (pycuda src/cpp/cuda.hpp, context::detach/context::pop):
    detaching the current context removes it from the stack, so the pop that should have
    removed it throws "cannot pop non-current context"; with an application context below
    (pycuda.autoinit), that pop would take the application's context instead."""
    drv = _FakePycuda()
    ctx = drv.Device(0).retain_primary_context()
    ctx.push()
    ctx.detach()
    assert drv.stack == [] and drv.released == ["primary"]
    with pytest.raises(_PycudaError, match="cannot pop non-current context"):
        drv.Context.pop()
    with pytest.raises(_PycudaError, match="cannot detach from invalid context"):
        ctx.detach()
    app = drv.Device(0).make_context()  # pycuda.autoinit
    ours = drv.Device(0).retain_primary_context()
    ours.push()
    ours.detach()
    assert drv.stack == ["secondary"]
    drv.Context.pop()  # the application's context is gone
    assert drv.stack == [] and app.valid


class _PycudaScopedEmu(EmuBackend):
    """The emulating backend for memory and streams, with a real :class:`PycudaBackend` over
    the pycuda fake for what pycuda decides: the context pushes of ``scope()`` and ``close()``
    (the primary-context release)."""

    name = "pycuda"

    def __init__(self, drv: _FakePycuda) -> None:
        super().__init__()
        self.pycuda = xc.PycudaBackend(0, driver=drv)

    def scope(self):
        return self.pycuda.scope()

    def close(self):
        self.pycuda.close()


@pytest.mark.parametrize("app_context", [False, True], ids=["alone", "under-autoinit"])
def test_pycuda_runner_closes_without_breaking_the_context_stack(app_context):
    """Issue 26 item 2: close() released the pycuda backend inside the backend's own scope();
    pycuda's context::detach removes the pushed context from its stack, so the scope's pop
    then threw "cannot pop non-current context" (every pycuda runner raised on close), or,
    under an application context (pycuda.autoinit), popped the application's context (pycuda
    src/cpp/cuda.hpp). Now: the runner's resources are freed inside the scope, the backend
    released after it; the primary context is released once and the application's context
    stays current."""
    drv = _FakePycuda()
    if app_context:
        drv.Device(0).make_context()
    be = _PycudaScopedEmu(drv)
    with EmuRunner(be) as r:
        np.testing.assert_array_equal(r(_x(2)), _ref(_x(2)))
    assert drv.stack == (["secondary"] if app_context else [])
    assert drv.released == ["primary"] and be.live == 0
    r.close()  # idempotent


def test_pycuda_backend_refuses_to_close_inside_its_own_scope():
    """Releasing the primary context while it is pushed would break pycuda's stack (above):
    the backend says so instead, and leaves the stack as it was."""
    drv = _FakePycuda()
    be = xc.PycudaBackend(0, driver=drv)
    with be.scope():
        with pytest.raises(EngineError, match="inside its own scope"):
            be.close()
        assert drv.stack == ["primary"]
    be.close()
    assert drv.stack == [] and drv.released == ["primary"]


def test_pycuda_has_no_graph_api_and_runners_refuse_graphs_at_open():
    """Item 13: no pycuda release wraps stream capture or CUDA graphs (no cuStreamBeginCapture
    or cuGraph* in pycuda's src/wrapper/wrap_cudadrv.cpp, checked up to v2026.1), so
    cuda_graphs=True with pycuda is refused when the runner opens, not at the first call."""
    be = xc.PycudaBackend(0, driver=_FakePycuda())
    assert "no CUDA graph API" in be.graphs_unsupported()
    with pytest.raises(EngineError, match="no CUDA graph API"):
        be.begin_capture(object())

    class NoGraphs(EmuBackend):
        def graphs_unsupported(self):
            return "pycuda has no CUDA graph API"

    with pytest.raises(EngineError, match="cuda_graphs=True cannot work.*no CUDA graph API"):
        EmuRunner(NoGraphs(), cuda_graphs=True)
    EmuRunner(NoGraphs(), cuda_graphs=False).close()  # the plain path is fine


def test_pycuda_wait_event_blocks_without_spinning():
    """Item 18: the event wait() synchronises on is created with CU_EVENT_BLOCKING_SYNC
    (CUDA driver API cuEventCreate; pycuda event_flags.BLOCKING_SYNC)."""
    drv = _FakePycuda()
    be = xc.PycudaBackend(0, driver=drv)
    be.event_create(False, True)
    assert drv.events == [drv.event_flags.DISABLE_TIMING | drv.event_flags.BLOCKING_SYNC]


def test_secondary_context_array_leaves_no_context_pushed():
    """The self-test's non-primary-context question (issue 21): its array lives in a context of
    its own, and neither creating nor freeing it leaves a context pushed (pycuda aborts a
    thread that ends with one)."""
    drv = _FakePycuda()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    arr = xc.SecondaryContextArray(x, 0, driver=drv)
    assert drv.stack == []
    iface = arr.__cuda_array_interface__
    assert drv.memory[iface["data"][0]] == ("secondary", x.tobytes())
    assert iface["shape"] == (2, 3) and iface["typestr"] == "<f4"
    arr.close()
    arr.close()
    assert drv.stack == [] and drv.memory == {} and drv.contexts[0].detached


# ------------------------------------------------------------------------------------------------
# cuda-python with a recording runtime module
# ------------------------------------------------------------------------------------------------
class _Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorNotReady = 600
    cudaErrorStreamCaptureInvalidated = 901


class _Runtime:
    """``cuda.bindings.runtime`` as far as these tests need: a per-thread current device, and a
    sticky last error that ``cudaGetLastError`` returns and resets (CUDA Runtime API,
    "Error Handling")."""

    cudaError_t = _Err
    cudaEventDefault, cudaEventBlockingSync, cudaEventDisableTiming = 0, 1, 2
    cudaStreamNonBlocking = 1
    cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def __init__(self) -> None:
        self.current = 0
        self.calls: list[tuple] = []
        self.last_error = _Err.cudaSuccess
        self.end_capture_code = _Err.cudaSuccess

    def cudaGetDeviceCount(self):
        return (_Err.cudaSuccess, 2)

    def cudaSetDevice(self, d):
        self.calls.append(("cudaSetDevice", d))
        self.current = d
        return (_Err.cudaSuccess,)

    def cudaGetDevice(self):
        return (_Err.cudaSuccess, self.current)

    def cudaFree(self, p):
        return (_Err.cudaSuccess,)

    def cudaGetErrorString(self, e):
        return (_Err.cudaSuccess, b"error")

    def cudaEventCreateWithFlags(self, flags):
        self.calls.append(("cudaEventCreateWithFlags", flags))
        return (_Err.cudaSuccess, 0xE0)

    def cudaStreamCreateWithFlags(self, flags):
        return (_Err.cudaSuccess, 0x50)

    def cudaStreamDestroy(self, s):
        return (_Err.cudaSuccess,)

    def cudaStreamBeginCapture(self, s, mode):
        return (_Err.cudaSuccess,)

    def cudaStreamEndCapture(self, s):
        if self.end_capture_code != _Err.cudaSuccess:
            self.last_error = self.end_capture_code
            return (self.end_capture_code, None)
        return (_Err.cudaSuccess, "graph")

    def cudaGetLastError(self):
        err, self.last_error = self.last_error, _Err.cudaSuccess
        return (err,)


def test_cuda_python_sets_the_device_again_when_something_changed_it():
    """Item 15: the current device is per host thread and anyone may change it (torch, a
    runner on another GPU; CUDA Runtime API cudaSetDevice). activate() checks it each time."""
    rt = _Runtime()
    be = xc.CudaPythonBackend(0, runtime=rt, driver=None)
    be.activate()
    rt.current = 1  # e.g. torch.cuda.set_device(1) between two of our calls
    be.activate()
    assert rt.current == 0
    n = len(rt.calls)
    be.activate()  # already right: no cudaSetDevice
    assert len(rt.calls) == n


def test_cuda_python_wait_event_blocks_without_spinning():
    """Item 18: cudaEventBlockingSync makes cudaEventSynchronize sleep, not spin a core."""
    rt = _Runtime()
    be = xc.CudaPythonBackend(0, runtime=rt, driver=None)
    xc.Event(be, blocking_sync=True)
    xc.Event(be)
    assert [c for c in rt.calls if c[0] == "cudaEventCreateWithFlags"] == [
        ("cudaEventCreateWithFlags", 2 | 1), ("cudaEventCreateWithFlags", 2)]


def test_invalidated_capture_is_clear_and_clears_the_sticky_error():
    """Item 17: cudaStreamEndCapture returns cudaErrorStreamCaptureInvalidated for an
    invalidated capture (CUDA Runtime API "Stream Management"); that must become our clear
    message, and the thread's last error must be cleared (cudaGetLastError) so that TensorRT's
    next check does not find it."""
    rt = _Runtime()
    be = xc.CudaPythonBackend(0, runtime=rt, driver=None)
    rt.end_capture_code = _Err.cudaErrorStreamCaptureInvalidated
    s = xc.Stream(be)
    with pytest.raises(EngineError, match="capture was invalidated.*cuda_graphs=False"):
        with s.capture():
            pass
    assert rt.last_error == _Err.cudaSuccess
    rt.end_capture_code = _Err.cudaErrorInvalidValue  # other codes stay errors
    with pytest.raises(EngineError, match="cudaStreamEndCapture failed with "
                                          "cudaErrorInvalidValue"):
        with s.capture():
            pass


# ------------------------------------------------------------------------------------------------
# the runner's per-call path (emulating backend)
# ------------------------------------------------------------------------------------------------
def test_device_output_producer_stream_is_waited_for():
    """Item 14: CUDA Array Interface v3: "the consumer must ... synchronize on the stream"
    for every array it is handed, outputs included (numba docs, CUDA Array Interface v3,
    "Synchronization")."""
    be = EmuBackend()
    with EmuRunner(be) as r:
        out = _DeviceArr(be, np.zeros((2, 4), np.float32), stream=4242)
        r.infer(_x(2), out=out)
        recs = [c for c in be.calls if c[0] == "record" and c[2] == 4242]
        assert recs and ("wait", r._stream.ptr, recs[0][1]) in be.calls
        # ... before anything writes the output
        first_write = next(i for i, c in enumerate(be.calls) if c[0] == "kernel")
        assert be.calls.index(("wait", r._stream.ptr, recs[0][1])) < first_write
        np.testing.assert_array_equal(out.numpy(), _ref(_x(2)))


@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "cuda-graphs"])
def test_read_only_device_output_is_refused(graphs):
    """Issue 26 item 8: CUDA Array Interface v3, "data: (integer, boolean) ... The second
    element is the read-only flag" (numba docs, CUDA Array Interface v3). A read-only out=
    is refused before any GPU work and its memory stays as it was; a read-only *input* is fine
    (it is only read)."""
    be = EmuBackend()
    with EmuRunner(be, cuda_graphs=graphs) as r:
        out = _DeviceArr(be, np.full((2, 4), 7, np.float32))
        out.__cuda_array_interface__["data"] = (out.ptr, True)
        before = len(be.calls)
        with pytest.raises(EngineError, match="out= is read-only"):
            r.infer(_x(2), out=out)
        assert be.calls[before:] == []
        np.testing.assert_array_equal(out.numpy(), np.full((2, 4), 7, np.float32))
        x = _DeviceArr(be, _x(2))
        x.__cuda_array_interface__["data"] = (x.ptr, True)
        np.testing.assert_array_equal(r.infer(x), _ref(_x(2)))


def test_wait_event_is_blocking_sync():
    """Item 18: the event InferenceHandle.wait() synchronises on is a blocking-sync event."""
    be = EmuBackend()
    with EmuRunner(be) as r:
        created = {c[1]: c[3] for c in be.calls if c[0] == "event_create"}
        assert created[r._done.handle] is True
        assert created[r._producer_ready.handle] is False


def test_first_graph_call_gpu_time_excludes_the_capture():
    """Item 18: with gpu_timing, the first call of a batch size captures its graph; the warm-up
    enqueue and capture happen before the call's start event, so last_gpu_time_ms is the
    replay only."""
    be = EmuBackend()
    with EmuRunner(be, cuda_graphs=True, gpu_timing=True) as r:
        r(_x(1))
        start = r._timers[0].handle
        i_start = next(i for i, c in enumerate(be.calls) if c[:2] == ("record", start))
        i_capture = next(i for i, c in enumerate(be.calls) if c[0] == "begin_capture")
        assert i_capture < i_start
        assert [c[0] for c in be.calls[i_start:]].count("kernel") == 0  # only the replay
        assert ("graph_launch", r._stream.ptr) in be.calls[i_start:]


def test_dlpack_runtime_error_becomes_engine_error():
    """Item 18: the DLPack standard says __dlpack__ raises BufferError when it cannot export;
    torch < 2.2 raises RuntimeError (e.g. a tensor that requires grad). Both are our
    EngineError with the fix."""
    class OldTorchTensor:
        def __dlpack_device__(self):
            return (2, 0)

        def __dlpack__(self, stream=None):
            raise RuntimeError("Can't export tensors that require gradient, use "
                               "tensor.detach()")

    with pytest.raises(EngineError, match=r"could not be exported through DLPack.*detach"):
        xc.device_array_info(OldTorchTensor(), consumer_stream=1)


# ------------------------------------------------------------------------------------------------
# NVRTC (the real library runs on the CPU)
# ------------------------------------------------------------------------------------------------
def _real_nvrtc():
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    try:
        nvrtc.nvrtcVersion()
    except Exception as exc:
        pytest.skip(f"NVRTC library not installed (pip install nvidia-cuda-nvrtc): {exc}")
    return nvrtc


def test_nvrtc_empty_log_does_not_overwrite_the_shared_one_byte_object():
    """Item 16: nvrtcGetProgramLog writes into the buffer it is given (NVRTC API). For an
    empty log the size is 1 and ``b" " * 1`` is CPython's one shared ``b" "`` object: NVRTC
    would turn every ``b" "`` in the process into ``b"\\x00"``. In a subprocess, with the real
    NVRTC, a compile that fails with an empty log."""
    _real_nvrtc()
    script = textwrap.dedent('''
        import cuda.bindings.nvrtc as real
        from xception_trt.errors import EngineError
        from xception_trt.trt.cuda import nvrtc as mod

        class Proxy:  # the real NVRTC; the compile succeeds (empty log) but reports failure
            def __getattr__(self, name):
                return getattr(real, name)

            def nvrtcCompileProgram(self, prog, n, opts):
                real.nvrtcCompileProgram(prog, n, opts)
                return (real.nvrtcResult.NVRTC_ERROR_COMPILATION,)

        import cuda.bindings, sys
        sys.modules["cuda.bindings.nvrtc"] = cuda.bindings.nvrtc = Proxy()
        try:
            mod.compile_kernel('extern "C" __global__ void f() {}', arch=(8, 6))
        except EngineError as exc:
            print("error:", "empty compiler log" in str(exc))
        print("space:", b" "[0])
    ''')
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "error: True" in out.stdout and "space: 32" in out.stdout, out.stdout


def test_nvrtc_buffers_are_mutable(monkeypatch):
    """Item 16: the cubin buffer NVRTC fills is a bytearray too (writing into ``bytes`` breaks
    their immutability: hashes, interning)."""
    real = _real_nvrtc()
    seen = []

    class Proxy:
        def __getattr__(self, name):
            return getattr(real, name)

        def nvrtcGetCUBIN(self, prog, buf):
            seen.append(type(buf))
            return real.nvrtcGetCUBIN(prog, buf)

    import cuda.bindings

    proxy = Proxy()
    monkeypatch.setitem(sys.modules, "cuda.bindings.nvrtc", proxy)
    monkeypatch.setattr(cuda.bindings, "nvrtc", proxy, raising=False)
    cubin = xc.compile_kernel('extern "C" __global__ void f() {}', arch=(8, 6))
    assert seen == [bytearray] and cubin[:4] == b"\x7fELF"


@pytest.mark.parametrize("arch, supported, want", [
    ((8, 9), [75, 80, 86], 86),        # newer minor than NVRTC knows: the same-major newest
    ((8, 6), [75, 80, 86, 87, 89], 86),  # never a newer minor than the device
    ((12, 1), [90, 100, 120], 120),
])
def test_nvrtc_architecture_is_clamped_to_what_it_supports(arch, supported, want):
    """Item 18: NVRTC compiles only for the architectures nvrtcGetSupportedArchs lists; a cubin
    for X.y runs on X.z with z >= y (CUDA C++ Programming Guide, "Binary Compatibility")."""
    assert nvrtc_mod._clamp_arch(arch, supported) == want


def test_nvrtc_without_a_compatible_architecture_says_so(monkeypatch):
    """Item 18: NVRTC 13 supports sm_75 and newer: a Jetson Xavier (sm_72) needs CUDA 12's."""
    real = _real_nvrtc()
    supported = real.nvrtcGetSupportedArchs()[1]
    with pytest.raises(EngineError, match="cannot compile for sm_72"):
        nvrtc_mod._clamp_arch((7, 2), [a for a in supported if a >= 75])
    # end to end through compile_kernel, with this NVRTC's own list
    if 72 not in supported:
        with pytest.raises(EngineError, match="cannot compile for sm_72"):
            xc.compile_kernel('extern "C" __global__ void f() {}', arch=(7, 2))
    else:
        assert xc.compile_kernel('extern "C" __global__ void f() {}', arch=(7, 2))[:4] == \
            b"\x7fELF"


def test_pycuda_backend_closed_on_another_thread_says_it_cannot_release(caplog):
    """Issue 26 (suspected): pycuda's context::detach releases nothing from a thread other
    than the one that made the context (pycuda src/cpp/cuda.hpp: "this context's managing
    thread has exited"): closing from another thread keeps the primary-context retain. The
    fake models it; the backend says so instead of pretending."""
    import logging

    drv = _FakePycuda()
    be = xc.PycudaBackend(0, driver=drv)
    with caplog.at_level(logging.WARNING, logger="xception_trt.trt.cuda.pycuda_backend"):
        t = threading.Thread(target=be.close)
        t.start()
        t.join()
    assert drv.leaked == ["primary"] and drv.released == []
    assert "closed on another" in caplog.text


class _DepthEmu(EmuBackend):
    """The emulating backend recording whether each event query and each TensorRT object's
    release happens inside the backend's scope (its context current), as the CUDA rules
    require: every CUDA/TensorRT call on the runner's context."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.query_depths: list[int] = []

    def scope(self):
        import contextlib

        @contextlib.contextmanager
        def cm():
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
        return cm()

    def event_query(self, event):
        self.query_depths.append(self.depth)
        return super().event_query(event)


def test_done_queries_its_event_on_the_runners_context():
    """Issue 26 (suspected): InferenceHandle.done() queried its event outside the device scope
    (cuEventQuery needs the event's context current on the calling thread)."""
    be = _DepthEmu()
    with EmuRunner(be) as r:
        h = r.infer_async(_x(1))
        done: list[bool] = []
        t = threading.Thread(target=lambda: done.append(h.done()))
        t.start()
        t.join()
        h.wait()
    assert done == [True] and be.query_depths and all(d >= 1 for d in be.query_depths)
