"""Our TensorRT calls against the real TensorRT Python APIs (8.6, 10.3, 10.13, 11.4, TensorRT-RTX).

The four NVIDIA binding wheels are fetched from PyPI once (cached; the tests skip where the
registry cannot be reached), imported on this CPU with stub libraries and dumped (trt_api/
wheels.py); TensorRT-RTX is dumped from the installed package. A checking double generated from
each dump (trt_api/double.py) replaces ``tensorrt`` / ``tensorrt_rtx`` in ``sys.modules`` -- the
seam our ``import_flavour`` imports through -- and our real builder, runtime, self-test and
sysinfo run against it. Every attribute, call, keyword, argument type and property write is
checked against the real member; the documented rules of trt_api/RULES.md are enforced by
trt_api/world.py. What this proves: the names, signatures and enum members we use exist in each
version and our calls fit them, and the listed rules hold. Not that an engine builds or runs.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from test_runtime import EmuBackend
from trt_api import wheels
from trt_api.double import ApiDouble, Mismatch
from trt_api.world import World

from xception_trt.config import BuildConfig
from xception_trt.errors import BuildError
from xception_trt.trt import builder as builder_mod

NVIDIA = [w.version for w in wheels.WHEELS]
ALL = [*NVIDIA, "rtx"]
GPU = {"index": 0, "name": "Double GPU", "compute_capability": "8.6"}  # EmuBackend's sm_86


def _dla(version: str) -> bool:
    from xception_trt.trt.compat import network_and_precision_plan

    return network_and_precision_plan("tensorrt", version, "fp16").dla


# ------------------------------------------------------------------------------------------------
# fixtures: dumps (session, cached on disk), the double in sys.modules, ONNX variants
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def dumps() -> dict[str, dict]:
    root = wheels.cache_dir()
    out: dict[str, dict] = {}
    try:
        for wheel in wheels.WHEELS:
            out[wheel.version] = wheels.dump_wheel(wheel, root)
    except wheels.FetchError as exc:
        pytest.skip(f"TensorRT binding wheels unavailable: {exc}")
    try:
        out["rtx"] = wheels.dump_installed("tensorrt_rtx", root)
    except Exception as exc:  # noqa: BLE001 - the [dev] extras install it; say so otherwise
        pytest.skip(f"tensorrt_rtx is not installed here: {exc}")
    return out


class Harness:
    """The double of one version installed as its module, plus what it saw."""

    def __init__(self, dump: dict, key: str, monkeypatch: pytest.MonkeyPatch, **world: object):
        self.name = "tensorrt_rtx" if key == "rtx" else "tensorrt"
        self.world = World(**world)  # type: ignore[arg-type]
        self.api = ApiDouble(dump, self.name, self.world)
        self.major = int(self.api.version.split(".")[0])
        monkeypatch.setitem(sys.modules, self.name, self.api.module)
        monkeypatch.setattr(builder_mod, "_build_gpu", lambda device=0: dict(
            GPU, compute_capability=self.world.build_cc, integrated=self.world.integrated))

    @property
    def mismatches(self) -> list[Mismatch]:
        return self.api.mismatches

    def assert_clean(self) -> None:
        assert not self.mismatches, "\n".join(map(str, self.mismatches))

    def config(self, **kw: object) -> BuildConfig:
        extra: dict = {"cc": ("sm86",)} if self.name == "tensorrt_rtx" else {}
        return BuildConfig(flavour=self.name, **(extra | kw))  # type: ignore[arg-type]


@pytest.fixture(params=ALL)
def key(request) -> str:
    return request.param


@pytest.fixture(params=NVIDIA)
def nvidia(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def onnx_variants(tiny_onnx_files, tmp_path_factory) -> dict[str, Path]:
    """float/uint8/static ONNX, the real FP16 conversion, and an ``int8``-labelled graph: the
    double reads a graph's inputs, outputs, node types and initializer types only, so one
    (unused) QuantizeLinear/DequantizeLinear pair marks it as Q/DQ INT8 (test_builder builds
    the real Q/DQ graph with TensorRT-RTX)."""
    import onnx
    from onnx import helper

    from xception_trt.onnx_meta import read_metadata, write_metadata
    from xception_trt.precision import to_fp16

    root = tmp_path_factory.mktemp("conformance")
    out = dict(tiny_onnx_files)
    out["fp16"] = root / "tiny.fp16.onnx"
    to_fp16(out["float"], output=out["fp16"])
    meta = read_metadata(out["float"])
    proto = onnx.load(str(out["float"]))
    write_metadata(proto, {"model_spec": meta.spec, "input_format": meta.input_format.value,
                           "precision": "int8"})
    proto.graph.initializer.extend([helper.make_tensor("qdq_scale", onnx.TensorProto.FLOAT, [],
                                                       [0.1]),
                                    helper.make_tensor("qdq_zero", onnx.TensorProto.INT8, [],
                                                       [0])])
    proto.graph.node.extend([
        helper.make_node("QuantizeLinear", ["input", "qdq_scale", "qdq_zero"], ["qdq_q"]),
        helper.make_node("DequantizeLinear", ["qdq_q", "qdq_scale", "qdq_zero"], ["qdq_dq"])])
    out["int8"] = root / "tiny.int8.onnx"
    onnx.save(proto, str(out["int8"]))
    return out


def _precisions(h: Harness) -> list[tuple[str, str]]:
    """(precision, ONNX variant) pairs this version builds (compat.network_and_precision_plan)."""
    if h.name == "tensorrt" and h.major < 10:
        return [("fp32", "float"), ("fp16", "float"), ("int8", "int8")]
    return [("fp32", "float"), ("fp16", "fp16"), ("int8", "int8")]


# ------------------------------------------------------------------------------------------------
# the builder
# ------------------------------------------------------------------------------------------------
class _Progress:
    def __init__(self) -> None:
        self.events: list[str] = []

    def phase_start(self, phase_name, parent_phase, num_steps):
        self.events.append(f"start {phase_name}")

    def step_complete(self, phase_name, step):
        self.events.append(f"step {step}")

    def phase_finish(self, phase_name):
        self.events.append("finish")


def test_builder_every_precision_and_option(dumps, key, onnx_variants, tmp_path, monkeypatch):
    h = Harness(dumps[key], key, monkeypatch)
    progress = _Progress()
    for precision, variant in _precisions(h):
        cfg = h.config(precision=precision, min_batch=1, opt_batch=2, max_batch=4,
                       workspace_mib=64, optimization_level=3, layer_info=True,
                       timing_cache_dir=str(tmp_path / "tc"))
        art = builder_mod.build_engine(onnx_variants[variant], cfg, progress=progress,
                                       output=tmp_path / f"{precision}.engine")
        built = h.world.built[-1]
        assert built["profiles"] == [{"input": [[1, 3, 71, 71], [2, 3, 71, 71], [4, 3, 71, 71]]}]
        assert built["pools"] == {"WORKSPACE": 64 << 20}
        # INSP-1: DETAILED verbosity was set, so the layers carry their types
        assert art.sidecar.layers and art.sidecar.layers[0]["type"] == "Convolution"
    # a fixed-batch graph needs no profile; a uint8 graph keeps its uint8 input
    builder_mod.build_engine(onnx_variants["static2"], h.config(),
                             output=tmp_path / "static.engine")
    assert h.world.built[-1]["profiles"] == []
    art = builder_mod.build_engine(onnx_variants["uint8"], h.config(max_batch=2),
                                   output=tmp_path / "u8.engine")
    assert art.sidecar.to_dict()["inputs"][0]["dtype"] == "uint8"
    if h.major >= 10 or h.name == "tensorrt_rtx":
        assert progress.events[:2] == ["start Building engine", "step 0"]
    h.assert_clean()


def test_engine_precision_check_reads_the_inspector(dumps, nvidia, onnx_variants, tmp_path,
                                                   monkeypatch):
    """trt/layers.py on layers the builder took from the inspector through the real API: the
    double's inspector reports one float convolution, which passes as FP32 and is flagged as a
    silent fallback when the engine was asked for INT8; an engine built without layer
    information cannot be checked, and the check says so."""
    from xception_trt.trt.layers import check_engine_precision, tally_layers

    h = Harness(dumps[nvidia], nvidia, monkeypatch)
    sides = {p: builder_mod.build_engine(onnx_variants[v], h.config(precision=p, layer_info=True),
                                         output=tmp_path / f"{p}.engine").sidecar
             for p, v in _precisions(h) if p != "fp16"}
    assert sides["fp32"].layers_source == "engine inspector"
    assert tally_layers(sides["fp32"]).compute() == {"fp32": 1}
    assert check_engine_precision(sides["fp32"]).ok
    flagged = check_engine_precision(sides["int8"])
    assert not flagged.ok and [m.found for m in flagged.mismatched] == ["fp32"]
    names_only = builder_mod.build_engine(onnx_variants["float"], h.config(layer_info=False),
                                          output=tmp_path / "plain.engine").sidecar
    assert not check_engine_precision(names_only).ok
    h.assert_clean()


def _int8_weight_graph(src: Path, dst: Path) -> Path:
    """A Q/DQ INT8 graph storing its weights as INT8: the first Conv's weight quantized per
    output channel (a real DequantizeLinear on an INT8 initializer, what `quantize` writes)."""
    import onnx
    from onnx import helper, numpy_helper

    from xception_trt.graph import to_int8_weights
    from xception_trt.onnx_meta import read_metadata, write_metadata

    meta = read_metadata(src)
    model = onnx.load(str(src))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
    w = numpy_helper.to_array(weight)
    scale = (np.abs(w).reshape(len(w), -1).max(axis=1) / 127).astype(np.float32)
    model.graph.initializer.extend([
        numpy_helper.from_array(scale, "w_scale"),
        numpy_helper.from_array(np.zeros(len(w), np.int8), "w_zero")])
    q = helper.make_node("QuantizeLinear", [weight.name, "w_scale", "w_zero"], ["w_q"], axis=0)
    dq = helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"], axis=0)
    conv.input[1] = "w_dq"
    model.graph.node.insert(0, dq)
    model.graph.node.insert(0, q)
    write_metadata(model, {"model_spec": meta.spec, "input_format": meta.input_format.value,
                           "precision": "int8"})
    onnx.save(to_int8_weights(model), str(dst))
    return dst


def test_int8_weights_reach_each_version_in_the_form_it_takes(dumps, key, onnx_variants,
                                                              tmp_path, monkeypatch):
    """QDQ-1: a graph storing INT8 weights is parsed as it is by TensorRT 10+ and TensorRT-RTX;
    TensorRT 8.6 gets its float-weight form, from a temporary file that is gone afterwards."""
    import onnx

    from xception_trt.graph import INT8_WEIGHTS, int8_weight_form

    graph = _int8_weight_graph(onnx_variants["float"], tmp_path / "int8w.onnx")
    h = Harness(dumps[key], key, monkeypatch)
    out = tmp_path / "engines"
    out.mkdir()
    art = builder_mod.build_engine(graph, h.config(precision="int8"), output=out / "e.engine")
    built = h.world.built[-1]
    takes_int8 = h.name == "tensorrt_rtx" or h.major >= 10
    assert built["int8_weights"] is takes_int8
    assert (built["onnx"] == str(graph)) is takes_int8
    assert art.sidecar.onnx["path"] == str(graph)  # the sidecar names the graph given
    assert int8_weight_form(onnx.load(str(graph))) == INT8_WEIGHTS  # the input is untouched
    assert sorted(p.name for p in out.iterdir()) == ["e.engine", "e.engine.json"]
    h.assert_clean()


def test_builder_flags_follow_the_version(dumps, nvidia, onnx_variants, tmp_path, monkeypatch):
    h = Harness(dumps[nvidia], nvidia, monkeypatch)
    builder_mod.build_engine(onnx_variants["float"], h.config(precision="fp16"),
                             output=tmp_path / "a.engine") if h.major < 10 else \
        builder_mod.build_engine(onnx_variants["fp16"], h.config(),
                                 output=tmp_path / "a.engine")
    built = h.world.built[-1]
    if h.major < 10:
        assert "FP16" in built["flags"] and built["network_flags"] == ["EXPLICIT_BATCH"]
    elif h.major == 10:
        assert built["network_flags"] == ["STRONGLY_TYPED"] and "FP16" not in built["flags"]
    else:
        assert built["network_flags"] == [] and "FP16" not in built["flags"]
    h.assert_clean()


def test_parser_errors_are_listed(dumps, key, onnx_variants, tmp_path, monkeypatch):
    h = Harness(dumps[key], key, monkeypatch, parse_errors=2)
    with pytest.raises(BuildError, match=r"could not parse[\s\S]*node 0 .*unsupported operator"):
        builder_mod.build_engine(onnx_variants["float"], h.config(),
                                 output=tmp_path / "e.engine")
    assert {"ParserError.node", "ParserError.desc", "ParserError.code"} <= h.api.calls
    h.assert_clean()


# ------------------------------------------------------------------------------------------------
# the runtime (EmuBackend stands in for CUDA; nothing computes)
# ------------------------------------------------------------------------------------------------
def _open_and_run(engine: Path, *, cuda_graphs: bool = False, world: World | None = None,
                  **kw):
    """Open a runner on the emulating backend and run batches min, max, min, max (alternating
    batch sizes: with CUDA graphs each replays its own graph)."""
    import numpy as np

    from xception_trt.trt.runtime import TensorRTRunner

    be = EmuBackend()
    if world is not None:  # the world sees which streams are capturing (GRAPH-1, RTX-2)
        world.capturing = lambda stream: stream in be.capturing
    with TensorRTRunner(engine, cuda_binding=be,  # type: ignore[arg-type]
                        cuda_graphs=cuda_graphs, **kw) as runner:
        for n in (runner.min_batch, runner.max_batch, runner.min_batch, runner.max_batch):
            out = runner.infer(np.zeros((n, 3, 71, 71), np.float32))
            assert out.shape == (n, runner.spec.num_classes)
        return runner.describe()


@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "cuda-graphs"])
def test_runtime_path(dumps, key, onnx_variants, tmp_path, monkeypatch, graphs):
    h = Harness(dumps[key], key, monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"], h.config(max_batch=4),
                                   output=tmp_path / "e.engine")
    if graphs and key != "rtx" and h.major < 9:  # PROF-1: refused for a dynamic batch
        from xception_trt.errors import EngineError

        with pytest.raises(EngineError, match="cuda_graphs=True needs a fixed-batch engine"):
            _open_and_run(art.path, cuda_graphs=graphs, world=h.world)
        h.assert_clean()
        return
    facts = _open_and_run(art.path, cuda_graphs=graphs, world=h.world)
    assert facts["tensorrt"] == h.api.version and facts["max_batch"] == 4
    assert h.world.executed >= (1 if graphs else 3)
    assert {"IExecutionContext.set_input_shape", "IExecutionContext.set_tensor_address",
            "IExecutionContext.execute_async_v3", "Runtime.deserialize_cuda_engine",
            "ICudaEngine.get_tensor_profile_shape"} <= h.api.calls
    h.assert_clean()


def test_each_cuda_graph_has_its_own_context_on_one_activation_buffer(dumps, nvidia,
                                                                      onnx_variants, tmp_path,
                                                                      monkeypatch):
    """Item 1 (GRAPH-1, MEM-1/2): "a CUDA graph depends on the state of the execution context
    ... use one execution context per captured graph" (TensorRT developer guide, "CUDA
    Graphs"). The contexts share one activation buffer: USER_MANAGED + set_device_memory on
    10.1+/11.x (TensorRT API reference, IExecutionContext / ICudaEngine). TensorRT 8.6 gives
    profile 0 to one context only (PROF-1): one context, a fixed-batch engine."""
    h = Harness(dumps[nvidia], nvidia, monkeypatch)
    kw: dict = {"batch": 4} if h.major < 9 else {"max_batch": 4}
    art = builder_mod.build_engine(onnx_variants["float"], h.config(**kw),
                                   output=tmp_path / "e.engine")
    _open_and_run(art.path, cuda_graphs=True, world=h.world)
    if h.major < 9:
        assert "ICudaEngine.create_execution_context_without_device_memory" not in h.api.calls
    else:
        assert "IExecutionContext.set_device_memory" in h.api.calls
    h.assert_clean()


def test_tensorrt_86_gives_profile_0_to_one_context_only(dumps, nvidia, onnx_variants, tmp_path,
                                                         monkeypatch):
    """Issue 26 item 1 (PROF-1): in TensorRT 8.6 only the first execution context of an engine
    gets optimization profile 0; later ones get -1 "and all calls to enqueueV2()/enqueueV3()/
    executeV2() will fail until a valid profile index has been set", and a second context
    cannot take profile 0 while another holds it ("Profile 0 has been chosen by another
    IExecutionContext"). Sources: TensorRT 8.6 include/NvInferRuntime.h
    (createExecutionContext, getOptimizationProfile); NVIDIA/TensorRT issue 846. 9.0+ gives
    every context profile 0. The double models this; the runner keeps one context on 8.6 and
    refuses cuda_graphs for a dynamic batch there (it used to capture each batch size from a
    new context: the second one could not run)."""
    from xception_trt.errors import EngineError

    h = Harness(dumps[nvidia], nvidia, monkeypatch)
    trt = h.api.module
    art = builder_mod.build_engine(onnx_variants["float"], h.config(max_batch=4),
                                   output=tmp_path / "e.engine")
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(art.path.read_bytes())
    first, second = engine.create_execution_context(), engine.create_execution_context()
    assert first.active_optimization_profile == 0
    if h.major >= 9:
        assert second.active_optimization_profile == 0
        return
    assert second.active_optimization_profile == -1
    assert second.set_optimization_profile_async(0, 0) is False  # held by `first`
    assert second.execute_async_v3(0) is False
    assert [m.problem for m in h.mismatches] == [
        "breaks a documented rule: PROF-1 TensorRT 8.6: this context has no optimization "
        "profile (profile 0 went to the engine's first context); every enqueue fails until one "
        "is set"]
    h.mismatches.clear()
    del first  # TensorRT frees a context with its last reference: profile 0 is free again
    assert second.set_optimization_profile_async(0, 0) is True
    # the runner: a dynamic batch with CUDA graphs is refused at open, with the fix named
    with pytest.raises(EngineError, match=r"TensorRT 8\.6\.1.*fixed batch.*--batch N"):
        _open_and_run(art.path, cuda_graphs=True, world=h.world)
    h.assert_clean()


@pytest.mark.parametrize("app_context", [False, True], ids=["alone", "under-autoinit"])
def test_pycuda_tensorrt_runner_closes_cleanly(dumps, onnx_variants, tmp_path, monkeypatch,
                                               app_context):
    """Issue 26 item 2: every `with TensorRTRunner(..., cuda_binding="pycuda")` raised on exit:
    close() released the pycuda backend inside its own scope; pycuda's context::detach removes
    the pushed context from its stack and the scope's pop then throws "cannot pop non-current
    context" (or pops the application's context under pycuda.autoinit). Source: pycuda
    src/cpp/cuda.hpp (context::detach, context::pop), modelled by test_cuda_rules' fake."""
    from test_cuda_rules import _FakePycuda, _PycudaScopedEmu

    from xception_trt.trt.runtime import TensorRTRunner

    h = Harness(dumps["10.3.0"], "10.3.0", monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"], h.config(max_batch=4),
                                   output=tmp_path / "e.engine")
    drv = _FakePycuda()
    if app_context:
        drv.Device(0).make_context()
    be = _PycudaScopedEmu(drv)
    import numpy as np

    with TensorRTRunner(art.path, cuda_binding=be) as runner:  # type: ignore[arg-type]
        runner.infer(np.zeros((2, 3, 71, 71), np.float32))
    assert drv.stack == (["secondary"] if app_context else [])
    assert drv.released == ["primary"] and be.live == 0
    h.assert_clean()


def test_rtx_cuda_graphs_use_the_runtime_strategy_not_manual_capture(dumps, onnx_variants,
                                                                     tmp_path, monkeypatch):
    """Item 2 (RTX-2): manual stream capture of a TensorRT-RTX engine needs
    REQUIRE_USER_ALLOCATION and is_stream_capturable (TensorRT-RTX 1.2 release notes); the
    runtime configuration's CUDA-graph strategy is the documented way ("Working with RTX CUDA
    Graphs"): we set WHOLE_GRAPH_CAPTURE and capture nothing ourselves."""
    h = Harness(dumps["rtx"], "rtx", monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"], h.config(max_batch=4),
                                   output=tmp_path / "e.engine")
    facts = _open_and_run(art.path, cuda_graphs=True, world=h.world)
    assert facts["cuda_graphs"] is True
    assert {"IRuntimeConfig.cuda_graph_strategy=", "IRuntimeConfig.set_runtime_cache"} \
        <= h.api.calls
    h.assert_clean()


def _without(dump: dict, *, classes: tuple[str, ...] = (),
             members: dict[str, tuple[str, ...]] | None = None) -> dict:
    """A copy of ``dump`` as an older release would have it: ``classes`` and ``members``
    (per class) removed, with the module values and nested types that name them."""
    import copy

    out = copy.deepcopy(dump)
    for name in classes:
        out["classes"].pop(name, None)
        out["values"] = {k: v for k, v in out["values"].items() if v.get("type") != name}
        for entry in out["classes"].values():
            entry["members"] = {k: v for k, v in entry["members"].items()
                                if v.get("type") != name}
    for cls, names in (members or {}).items():
        for name in names:
            out["classes"][cls]["members"].pop(name, None)
    return out


@pytest.mark.parametrize("release", ["1.1 (no CudaGraphStrategy)",
                                     "before IRuntimeConfig (no create_runtime_config)"])
def test_rtx_without_the_graph_strategy_refuses_cuda_graphs_clearly(dumps, onnx_variants,
                                                                      tmp_path, monkeypatch,
                                                                      release):
    """Issue 26 item 6: IRuntimeConfig (ICudaEngine.create_runtime_config) exists in
    TensorRT-RTX 1.0+, CudaGraphStrategy / IRuntimeConfig.cuda_graph_strategy only from 1.2
    (TensorRT-RTX release notes, "Working with RTX CUDA Graphs"). cuda_graphs=True on such a
    release used to end in an AttributeError (here: the double's MissingMember); now it is our
    error naming the upgrade, and the plain path runs (drives TensorRT-RTX without
    create_runtime_config too). Simulated on the real 1.7 API with those members removed."""
    from xception_trt.errors import EngineError

    if release.startswith("1.1"):
        dump = _without(dumps["rtx"], classes=("CudaGraphStrategy",),
                        members={"IRuntimeConfig": ("cuda_graph_strategy",)})
    else:
        dump = _without(dumps["rtx"], classes=("IRuntimeConfig", "IRuntimeCache",
                                               "CudaGraphStrategy"),
                        members={"ICudaEngine": ("create_runtime_config",)})
    h = Harness(dump, "rtx", monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"], h.config(max_batch=4),
                                   output=tmp_path / "e.engine")
    with pytest.raises(EngineError, match="no runtime CUDA-graph strategy.*upgrade TensorRT-RTX"):
        _open_and_run(art.path, cuda_graphs=True, world=h.world)
    facts = _open_and_run(art.path, world=h.world)
    assert facts["cuda_graphs"] is False
    h.assert_clean()


def test_rtx_runtime_cache_is_loaded_and_saved(dumps, onnx_variants, tmp_path, monkeypatch):
    """Item 9: TensorRT-RTX compiles kernels at run time and keeps them in a runtime cache
    (IRuntimeConfig.set_runtime_cache, IRuntimeCache.serialize/deserialize; TensorRT-RTX
    "Working with Runtime Cache"): a runner given a file writes it at close and loads it next
    time."""
    h = Harness(dumps["rtx"], "rtx", monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"], h.config(max_batch=4),
                                   output=tmp_path / "e.engine")
    cache = tmp_path / "rtx.runtime-cache"
    _open_and_run(art.path, runtime_cache=cache)
    assert cache.read_bytes().startswith(b"RTXCACHE")
    assert "IRuntimeCache.deserialize" not in h.api.calls
    _open_and_run(art.path, runtime_cache=cache)
    assert "IRuntimeCache.deserialize" in h.api.calls
    h.assert_clean()


def test_rtx_engine_validity_is_checked_before_deserializing(dumps, onnx_variants, tmp_path,
                                                            monkeypatch):
    """Item 9 (RTX-3): IRuntime::getEngineValidity reads the plan header and says why it cannot
    run here (old driver/runtime, compute capability, ...) before deserializing (TensorRT-RTX
    "Engine Compatibility", "Compatibility Checks")."""
    from xception_trt.errors import EngineError
    from xception_trt.trt.runtime import TensorRTRunner

    h = Harness(dumps["rtx"], "rtx", monkeypatch, engine_validity="INVALID",
                invalidity=int(_rtx_diagnostics(dumps)["OLD_CUDA_DRIVER"]) | 2)
    art = builder_mod.build_engine(onnx_variants["float"], h.config(max_batch=4),
                                   output=tmp_path / "e.engine")
    with pytest.raises(EngineError, match="not valid here.*UNSUPPORTED_CC.*OLD_CUDA_DRIVER|"
                                          "not valid here.*OLD_CUDA_DRIVER.*UNSUPPORTED_CC"):
        TensorRTRunner(art.path, cuda_binding=EmuBackend())  # type: ignore[arg-type]
    assert "Runtime.get_engine_validity" in h.api.calls
    assert "Runtime.deserialize_cuda_engine" not in h.api.calls
    h.assert_clean()


def _rtx_diagnostics(dumps: dict) -> dict[str, int]:
    """TensorRT-RTX's EngineInvalidityDiagnostics bit values, from the real API."""
    return dumps["rtx"]["classes"]["EngineInvalidityDiagnostics"]["enum"]


@pytest.mark.parametrize("version", [v for v in NVIDIA if _dla(v)])
def test_dla_needs_a_fixed_batch_and_fp16_or_int8(dumps, version, onnx_variants, tmp_path,
                                                  monkeypatch):
    """Items 3-4 (DLA-4, DLA-5): DLA needs min = opt = max and runs FP16/INT8 only ("Working
    with DLA", DLA supported layers and restrictions); with GPU fallback (our default) either
    mistake silently runs every layer on the GPU, so the build refuses them."""
    h = Harness(dumps[version], version, monkeypatch, num_dla_cores=1)
    fp16 = onnx_variants["float" if h.major < 10 else "fp16"]
    with pytest.raises(BuildError, match="DLA needs a fixed batch"):
        builder_mod.build_engine(fp16, h.config(dla_core=0, precision="fp16", max_batch=4),
                                 output=tmp_path / "dyn.engine")
    with pytest.raises(BuildError, match="DLA runs FP16 and INT8 only"):
        builder_mod.build_engine(onnx_variants["float"],
                                 h.config(dla_core=0, precision="fp32", batch=1),
                                 output=tmp_path / "fp32.engine")
    builder_mod.build_engine(fp16, h.config(dla_core=0, precision="fp16", batch=2),
                             output=tmp_path / "ok.engine")
    builder_mod.build_engine(onnx_variants["int8"], h.config(dla_core=0, precision="int8",
                                                             batch=2),
                             output=tmp_path / "int8.engine")
    h.assert_clean()


def test_fp32_builds_clear_tf32(dumps, key, onnx_variants, tmp_path, monkeypatch):
    """Item 6 (TF32-1): BuilderFlag.TF32 is on by default, so an "FP32" engine would round
    conv/GEMM inputs to TF32 on Ampere and newer (TensorRT API reference, BuilderFlag.TF32;
    developer guide "Reduced Precision", TF32). FP32 builds clear it; the others keep it."""
    h = Harness(dumps[key], key, monkeypatch)
    builder_mod.build_engine(onnx_variants["float"], h.config(precision="fp32"),
                             output=tmp_path / "fp32.engine")
    assert "TF32" not in h.world.built[-1]["flags"]
    fp16 = onnx_variants["float" if h.name == "tensorrt" and h.major < 10 else "fp16"]
    builder_mod.build_engine(fp16, h.config(precision="fp16"),
                             output=tmp_path / "fp16.engine")
    assert "TF32" in h.world.built[-1]["flags"]
    h.assert_clean()


def test_timing_cache_from_another_device_starts_fresh(dumps, nvidia, onnx_variants, tmp_path,
                                                       monkeypatch, caplog):
    """Item 7 (TC-1): set_timing_cache(cache, ignore_mismatch=False) refuses a cache whose
    device properties differ (TensorRT API reference, IBuilderConfig.set_timing_cache): the
    build warns, starts a fresh cache and replaces the file; it does not fail."""
    h = Harness(dumps[nvidia], nvidia, monkeypatch)
    cfg = h.config(timing_cache_dir=str(tmp_path / "tc"))
    art = builder_mod.build_engine(onnx_variants["float"], cfg, output=tmp_path / "a.engine")
    cache = Path(art.sidecar.to_dict()["timing_cache"]["path"])
    assert cache.read_bytes().startswith(b"TC[Double GPU, 8.6, 1410 MHz]")
    h.world.device_key = "Double GPU, 8.6, 1755 MHz"  # same name and SM, other clocks
    with caplog.at_level("WARNING"):
        art = builder_mod.build_engine(onnx_variants["float"], cfg, force=True,
                                       output=tmp_path / "a.engine")
    assert "another device configuration" in caplog.text
    assert art.sidecar.to_dict()["timing_cache"]["loaded_bytes"] == 0
    assert cache.read_bytes().startswith(b"TC[Double GPU, 8.6, 1755 MHz]")
    h.assert_clean()


class _OverlapProbe(_Progress):
    """A BuildProgress that notices being called by two threads at once: a call from a
    TensorRT thread waits briefly for another to come in."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = 0
        self.overlaps = 0
        self._mutex = threading.Lock()
        self._partner = threading.Event()

    def _enter(self) -> None:
        with self._mutex:
            self.inside += 1
            if self.inside > 1:
                self.overlaps += 1
                self._partner.set()
        if threading.current_thread() is not threading.main_thread():
            self._partner.wait(0.1)
        with self._mutex:
            self.inside -= 1

    def step_complete(self, phase_name, step):
        self._enter()
        super().step_complete(phase_name, step)


@pytest.mark.parametrize("key", ["10.13.0.35", "rtx"])
def test_progress_monitor_is_called_one_at_a_time(dumps, key, onnx_variants, tmp_path,
                                                  monkeypatch):
    """Item 8 (PROG-2): "the implementation of IProgressMonitor must be thread-safe so that it
    can be called from multiple internal threads" (TensorRT API reference, IProgressMonitor):
    our monitor serialises the calls into the user's BuildProgress."""
    h = Harness(dumps[key], key, monkeypatch)
    probe = _OverlapProbe()
    builder_mod.build_engine(onnx_variants["float"], h.config(), progress=probe,
                             output=tmp_path / "e.engine")
    assert probe.overlaps == 0 and probe.events.count("step 0") == 3
    h.assert_clean()


def test_hardware_compatibility_needs_ampere_and_no_jetpack(dumps, onnx_variants, tmp_path,
                                                            monkeypatch):
    """Item 5 (HWC-1): "hardware compatibility is only supported for Ampere and later device
    architectures and is not supported on NVIDIA DRIVE OS or JetPack" (TensorRT developer
    guide, "Hardware Compatibility"): refused at build on a pre-Ampere or integrated GPU, and
    a hardware-compatible engine is not loaded on an integrated (Jetson) GPU."""
    from xception_trt.errors import EngineError
    from xception_trt.trt.runtime import TensorRTRunner

    h = Harness(dumps["10.3.0"], "10.3.0", monkeypatch, build_cc="7.5")
    with pytest.raises(BuildError, match="Ampere or newer GPU.*7.5"):
        builder_mod.build_engine(onnx_variants["float"], h.config(hardware_compatible=True),
                                 output=tmp_path / "hw.engine")
    h.world.build_cc, h.world.integrated = "8.7", True
    with pytest.raises(BuildError, match="not supported on JetPack"):
        builder_mod.build_engine(onnx_variants["float"], h.config(hardware_compatible=True),
                                 output=tmp_path / "hw.engine")
    h.world.build_cc, h.world.integrated = "8.6", False
    art = builder_mod.build_engine(onnx_variants["float"], h.config(hardware_compatible=True),
                                   output=tmp_path / "hw.engine")

    class Orin(EmuBackend):
        def compute_capability(self):
            return (8, 7)

        def is_integrated(self):
            return True

    with pytest.raises(EngineError, match="not supported on JetPack"):
        TensorRTRunner(art.path, cuda_binding=Orin())  # type: ignore[arg-type]
    h.assert_clean()


def test_version_compatible_engine_loads(dumps, nvidia, onnx_variants, tmp_path, monkeypatch):
    """VC-1: the lean runtime is host code; the runner allows it for a plan that matches its
    sidecar's SHA-256 (and only then)."""
    h = Harness(dumps[nvidia], nvidia, monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"],
                                   h.config(version_compatible=True, hardware_compatible=True),
                                   output=tmp_path / "vc.engine")
    assert "VERSION_COMPATIBLE" in h.world.built[-1]["flags"]
    assert h.world.built[-1]["hardware_compatibility"] == "AMPERE_PLUS"
    _open_and_run(art.path)
    assert "Runtime.engine_host_code_allowed=" in h.api.calls
    h.assert_clean()


def test_version_compatible_engine_not_matching_its_sidecar_is_refused(dumps, onnx_variants,
                                                                        tmp_path, monkeypatch):
    """VC-2: host code runs only from a plan whose bytes match the sidecar's SHA-256, even when
    the caller switched the file hash check off."""
    from xception_trt.errors import EngineError
    from xception_trt.trt.runtime import TensorRTRunner

    h = Harness(dumps[NVIDIA[-1]], NVIDIA[-1], monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"], h.config(version_compatible=True),
                                   output=tmp_path / "vc.engine")
    data = art.path.read_bytes()
    art.path.write_bytes(data[:-1] + b" ")  # same size, other bytes: only the hash can tell
    h.api.calls.clear()
    with pytest.raises(EngineError, match="carries host code.*SHA-256"):
        TensorRTRunner(art.path, cuda_binding=EmuBackend(),  # type: ignore[arg-type]
                       verify_sha256=False)
    assert "Runtime.deserialize_cuda_engine" not in h.api.calls  # refused before TensorRT
    h.assert_clean()


@pytest.mark.parametrize("version", [v for v in NVIDIA if _dla(v)])
def test_dla_build_and_runtime_core(dumps, version, onnx_variants, tmp_path, monkeypatch):
    """DLA-1/DLA-2: build on core 1 of 2 with GPU fallback; the runtime selects core 1."""
    h = Harness(dumps[version], version, monkeypatch, num_dla_cores=2)
    # DLA runs FP16/INT8 only (DLA-5): 8.6 builds FP16 from the FP32 graph with the FP16
    # flag, 10.x (strongly typed) from the FP16 graph
    art = builder_mod.build_engine(onnx_variants["float" if h.major < 10 else "fp16"],
                                   h.config(dla_core=1, precision="fp16", batch=1),
                                   output=tmp_path / "dla.engine")
    assert "GPU_FALLBACK" in h.world.built[-1]["flags"] and h.world.built[-1]["dla_core"] == 1
    _open_and_run(art.path)
    assert "Runtime.DLA_core=" in h.api.calls
    h.assert_clean()


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_dla_engines_refuse_cuda_graphs(dumps, version, onnx_variants, tmp_path, monkeypatch):
    """Issue 26 item 3: "CUDA graphs and DLA offloading are not simultaneously supported"
    (trtexec disables the pair: TensorRT samples/common/sampleOptions.cpp; NVIDIA/TensorRT
    issue 3524). A DLA engine with cuda_graphs=True is refused when it opens, before any GPU
    work; without graphs it runs."""
    from xception_trt.errors import EngineError

    h = Harness(dumps[version], version, monkeypatch, num_dla_cores=2)
    art = builder_mod.build_engine(onnx_variants["float" if h.major < 10 else "fp16"],
                                   h.config(dla_core=0, precision="fp16", batch=1),
                                   output=tmp_path / "dla.engine")
    h.api.calls.clear()
    with pytest.raises(EngineError, match="CUDA graphs and DLA offloading are not supported "
                                          "together.*cuda_graphs=False"):
        _open_and_run(art.path, cuda_graphs=True, world=h.world)
    assert "Runtime.deserialize_cuda_engine" not in h.api.calls
    _open_and_run(art.path, world=h.world)
    h.assert_clean()


def test_dla_engine_on_a_device_without_that_core(dumps, onnx_variants, tmp_path, monkeypatch):
    from xception_trt.errors import EngineError
    from xception_trt.trt.runtime import TensorRTRunner

    h = Harness(dumps["10.3.0"], "10.3.0", monkeypatch, num_dla_cores=2)
    art = builder_mod.build_engine(onnx_variants["fp16"], h.config(dla_core=1, batch=1),
                                   output=tmp_path / "dla.engine")
    h.world.num_dla_cores = 1  # the engine moved to a device with one DLA core
    with pytest.raises(EngineError, match="built for DLA core 1 but this device has 1"):
        TensorRTRunner(art.path, cuda_binding=EmuBackend())  # type: ignore[arg-type]
    h.assert_clean()


@pytest.mark.parametrize("version, dla", [("8.6.1", True), ("10.3.0", True), ("10.7.0", True),
                                          ("10.8.0", False), ("10.13.0.35", False),
                                          ("11.4.0.106", False), ("11.4.1", True)])
def test_dla_releases_follow_nvidia_docs(version, dla):
    """DLA-3: 10.7 was the last 10.x with DLA; 11.0-11.4.0 have none on Jetson; 11.4.1 restores
    it on AGX Orin with JetPack 7.2.2+ ("Working with DLA", TensorRT 11.3.0 / 11.4.1 docs)."""
    from xception_trt.trt.compat import check_options, network_and_precision_plan

    plan = network_and_precision_plan("tensorrt", version, "fp16")
    assert plan.dla is dla
    if not dla:
        with pytest.raises(BuildError, match="cannot build for a DLA core.*10.7"):
            check_options(plan, BuildConfig(dla_core=0))


# ------------------------------------------------------------------------------------------------
# self-test and sysinfo
# ------------------------------------------------------------------------------------------------
def _onnx_runtime_engine(be: EmuBackend):
    """``World.compute``: run the engine's ONNX graph (the bytes parsed) with ONNX Runtime on
    the emulated device memory, as stream work (so CUDA-graph capture and replay see it like a
    kernel)."""
    import hashlib

    import numpy as np
    import onnxruntime as ort

    sessions: dict[str, ort.InferenceSession] = {}

    def compute(stream: int, tensors: dict, onnx: bytes) -> None:
        key = hashlib.sha256(onnx).hexdigest()
        if key not in sessions:
            sessions[key] = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        session = sessions[key]
        (in_ptr, in_shape, in_dt), (out_ptr, out_shape, out_dt) = (tensors["input"],
                                                                   tensors["logits"])

        def op() -> None:
            n_in = int(np.prod(in_shape)) * in_dt.itemsize
            x = be.view(in_ptr, n_in).view(in_dt).reshape(in_shape)
            y = session.run(None, {"input": x})[0].astype(out_dt)
            assert y.shape == out_shape, (y.shape, out_shape)
            be.view(out_ptr, y.nbytes)[:] = y.reshape(-1).view(np.uint8)
        be.submit(stream, op, "kernel")
    return compute


def test_selftest_engine_checks_and_sysinfo(dumps, key, tmp_path, monkeypatch):
    """The self-test's build, NumPy/device input, CUDA graph and threaded checks, end to end
    through the double (ONNX Runtime stands in for the engine, so the checks can pass)."""
    from xception_trt import selftest, sysinfo

    be = EmuBackend()
    h = Harness(dumps[key], key, monkeypatch, compute=_onnx_runtime_engine(be),
                capturing=lambda stream: stream in be.capturing)
    info = sysinfo.system_facts(probe_gpus=False)
    assert info["trt_importable"][h.name] == h.api.version
    results = selftest.run_engine_checks(h.name, cuda_binding=be,  # type: ignore[arg-type]
                                         workdir=tmp_path, iterations=2)
    status = {r.name: (r.status, r.detail) for r in results}
    graphs = ("engine: TensorRTRunner CUDA graphs vs ONNX Runtime",
              "engine: CUDA graphs vs plain, alternating batch sizes")
    if key != "rtx" and h.major < 9:  # PROF-1: one context per engine, a dynamic batch
        assert all(status[g][0] == "skip" and "profile 0 to one execution context" in
                   status[g][1] for g in graphs), status
        status = {k: v for k, v in status.items() if k not in graphs}
    failed = {k: v for k, v in status.items() if v[0] != "pass" and "DLA" not in k}
    assert len(results) >= 7 and not failed, failed
    # issue 21's device questions: answered here through the double, DLA skipped without DLA
    if graphs[1] in status:
        assert status[graphs[1]][1].startswith("answer: batches 1/4/1/4/2/3/1 alternating: "
                                               "CUDA graphs bit-identical to the plain path")
    assert status["engine: DLA placement (FP16)"][0] == "skip"
    assert "no DLA here" in status["engine: DLA placement (FP16)"][1]
    assert h.world.executed > 0
    h.assert_clean()


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_selftest_dla_questions(dumps, version, tmp_path, monkeypatch):
    """The self-test's DLA checks run where DLA exists and report their answer (how many
    layers the inspector places on the DLA; for 8.6 whether explicit Q/DQ INT8 builds for DLA);
    elsewhere they skip with the reason. Through the double: the answer here is the double's."""
    from xception_trt import selftest

    be = EmuBackend()
    h = Harness(dumps[version], version, monkeypatch, compute=_onnx_runtime_engine(be),
                capturing=lambda stream: stream in be.capturing, num_dla_cores=1)
    results = selftest.run_engine_checks(h.name, cuda_binding=be,  # type: ignore[arg-type]
                                         workdir=tmp_path, iterations=2)
    status = {r.name: (r.status, r.detail) for r in results}
    placement = status["engine: DLA placement (FP16)"]
    assert placement[0] == "pass" and placement[1].startswith("answer: ")
    assert ("strongly typed" in placement[1]) is (h.major >= 10)
    qdq = status["engine: explicit Q/DQ INT8 on DLA (TensorRT 8.6)"]
    assert qdq[0] == ("pass" if h.major < 10 else "skip"), qdq
    assert [b["dla_core"] for b in h.world.built if b["dla_core"] is not None] == \
        [0] * (2 if h.major < 10 else 1)
    h.assert_clean()


# ------------------------------------------------------------------------------------------------
# the double itself: a renamed call fails with version, call and our file:line
# ------------------------------------------------------------------------------------------------
def _renamed(dump: dict, cls: str, old: str, new: str) -> dict:
    mutated = json.loads(json.dumps(dump))
    members = mutated["classes"][cls]["members"]
    info = members.pop(old)
    info["signatures"] = [s.replace(f"{old}(", f"{new}(", 1) for s in info["signatures"]]
    members[new] = info
    return mutated


@pytest.mark.parametrize("old, new", [("execute_async_v3", "execute_async_v4"),
                                      ("set_input_shape", "set_input_shapes")])
def test_a_renamed_call_fails_with_version_call_and_location(dumps, onnx_variants, tmp_path,
                                                            monkeypatch, old, new):
    from xception_trt.errors import EngineError

    version = NVIDIA[1]
    h = Harness(_renamed(dumps[version], "IExecutionContext", old, new), version, monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"], h.config(max_batch=4),
                                   output=tmp_path / "e.engine")
    with pytest.raises((AttributeError, EngineError)):
        _open_and_run(art.path)
    text = "\n".join(map(str, h.mismatches))
    assert f"tensorrt {version}: IExecutionContext.{old} at xception_trt/trt/runtime.py:" in text
    assert f"IExecutionContext has no attribute {old!r}" in text


def test_wrong_arguments_and_members_are_caught(dumps, monkeypatch):
    """The checks the double applies, on the real 10.3 surface."""
    h = Harness(dumps[NVIDIA[1]], NVIDIA[1], monkeypatch)
    trt = h.api.module
    ctx = h.api.instance("IExecutionContext", _engine=None, _shapes={}, _addresses={})
    with pytest.raises(TypeError, match="takes 2 positional"):
        ctx.set_tensor_address("input", 256, 0)
    with pytest.raises(TypeError, match="no parameter named 'ptr'"):
        ctx.set_tensor_address("input", ptr=256)
    with pytest.raises(TypeError, match="argument 'name' is int"):
        ctx.set_tensor_address(0, 256)
    with pytest.raises(AttributeError, match="no member 'FP8X'"):
        _ = trt.BuilderFlag.FP8X
    runtime = trt.Runtime(trt.Logger())
    with pytest.raises(AttributeError, match="read-only"):
        runtime.num_DLA_cores = 2
    assert int(trt.ILogger.Severity.ERROR) == 1 and trt.Logger.WARNING.name == "WARNING"
    assert len(h.mismatches) == 5


def test_removed_members_per_version(dumps):
    """Facts our compat table relies on, read from the real APIs."""
    def has(key: str, cls: str, member: str) -> bool:
        entry = dumps[key]["classes"][cls]
        return member in entry.get("enum", {}) or member in entry["members"]
    assert has("8.6.1", "BuilderFlag", "FP16") and not has("11.4.0.106", "BuilderFlag", "FP16")
    assert not has("8.6.1", "NetworkDefinitionCreationFlag", "STRONGLY_TYPED")
    assert has("10.3.0", "NetworkDefinitionCreationFlag", "STRONGLY_TYPED")
    assert "IProgressMonitor" not in dumps["8.6.1"]["classes"]
    assert "IProgressMonitor" in dumps["10.3.0"]["classes"]
    assert not has("rtx", "BuilderFlag", "FP16") and "ComputeCapability" in dumps["rtx"]["classes"]
    for key in NVIDIA:
        assert has(key, "Runtime", "engine_host_code_allowed") and has(key, "Runtime", "DLA_core")


def test_unreachable_registry_is_a_skip_reason_not_a_failure(tmp_path, monkeypatch):
    """Without PyPI (no index, nothing in find-links) fetching raises FetchError, which the
    ``dumps`` fixture turns into a skip with that reason."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(wheels.FetchError, match="registry unreachable"):
        wheels.fetch_wheel(wheels.WHEELS[0], tmp_path / "cache")


def test_bundle_rebuild_for_gpu_1_builds_on_gpu_1(dumps, tiny_checkpoint, tmp_path, monkeypatch):
    """Issue 26 item 5: rebuilding a bundle's engine for device 1 built on GPU 0: the builder
    builds on (and records) whatever device is current ("To select the GPU, use
    cudaSetDevice() before calling the builder or deserializing the engine", TensorRT FAQ,
    quoted in NVIDIA/TensorRT issues 322 and 634); on a machine with two different GPUs the
    cache key then named the other GPU ("BundleError: ... report this"). Now the cache asks
    for the build on the request's GPU; the builder selects it and records it."""
    from xception_trt.bundle.cache import resolve
    from xception_trt.bundle.facts import DeviceFacts, FlavourFact, GpuFact
    from xception_trt.bundler import write_bundle
    from xception_trt.trt import cuda as trt_cuda
    from xception_trt.trt import devices

    bundle = write_bundle(source=tiny_checkpoint, output=tmp_path / "m.xtrt",
                          local_engines=False, max_batch=2).path
    real_build_gpu = builder_mod._build_gpu
    Harness(dumps["10.3.0"], "10.3.0", monkeypatch)
    monkeypatch.setattr(builder_mod, "_build_gpu", real_build_gpu)
    gpus = (devices.GpuInfo(0, "NVIDIA GeForce RTX 3090", "8.6", 24 << 30),
            devices.GpuInfo(1, "NVIDIA GeForce RTX 4090", "8.9", 24 << 30))
    monkeypatch.setattr(devices, "probed_devices",
                        lambda: devices.DeviceReport("580.95.05", "13.0", gpus, "test"))
    selected: list[int] = []
    monkeypatch.setattr(trt_cuda, "CudaPythonBackend", lambda device: selected.append(device))
    facts = DeviceFacts(flavours=(FlavourFact("tensorrt", "10.3.0"),),
                        gpus=tuple(GpuFact(g.index, g.name, g.compute_capability)
                                   for g in gpus), onnx=True)
    res = resolve(bundle, precision="fp32", device=1, facts=facts, cache_dir=tmp_path / "cache")
    from xception_trt.sidecar import read_sidecar

    side = read_sidecar(res.path)
    assert selected == [1]
    assert (side.device.name, side.device.compute_capability) == ("NVIDIA GeForce RTX 4090",
                                                                  "8.9")


# ------------------------------------------------------------------------------------------------
# the double behaves as the real bindings do (issue 26: fakes that behave like the real thing)
@pytest.fixture(scope="session")
def real_behaviour(dumps) -> dict[str, dict]:
    """trt_api/behaviour.py run on each real binding (imported with stub libraries, as for the
    dumps) and on the installed TensorRT-RTX: how their enums and callback bases behave."""
    from trt_api import behaviour as behaviour_mod

    out = {}
    for key in ALL:
        try:
            out[key] = json.loads(wheels.run_real(key, Path(behaviour_mod.__file__),
                                                  wheels.cache_dir()))
        except wheels.FetchError as exc:
            pytest.skip(f"real TensorRT bindings unavailable: {exc}")
    return out


def test_the_double_behaves_as_the_real_bindings(dumps, key, real_behaviour, monkeypatch):
    """Issue 26: the double's enums were IntEnums (``get_tensor_mode(n) == 1`` passed here and
    is always false on a device; ``bool()`` of a zero member, ``str()``, equality across two
    enums differed) and an ILogger / IProgressMonitor subclass that skipped the base
    ``__init__`` was accepted (the real bindings raise TypeError). Each behaviour is observed
    on the real bindings of every version (trt_api/behaviour.py) and must be the double's."""
    from trt_api.behaviour import behaviour

    h = Harness(dumps[key], key, monkeypatch)
    real = real_behaviour[key]
    ours = behaviour(h.api.module)
    assert real["INPUT == 1"] is False and real["bool(NONE)"] is True  # what we rely on
    assert ours == real
    h.mismatches.clear()  # the deliberate base-__init__ mistakes were recorded, as they must


def test_an_enum_compared_with_an_int_is_a_silent_bug_the_double_exposes(dumps, onnx_variants,
                                                                          tmp_path, monkeypatch):
    """The mutation the enum change catches: comparing get_tensor_mode with 1 instead of
    TensorIOMode.INPUT finds no input (always false with the real bindings)."""
    from xception_trt.errors import EngineError
    from xception_trt.trt import runtime as runtime_mod

    h = Harness(dumps["10.3.0"], "10.3.0", monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"], h.config(max_batch=4),
                                   output=tmp_path / "e.engine")
    trt = h.api.module
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(art.path.read_bytes())
    assert engine.get_tensor_mode("input") != 1  # as on a device
    runtime_mod.describe_engine(engine, trt)  # the real comparison works
    mutated = type("T", (), {"TensorIOMode": type("M", (), {"INPUT": 1}),
                             "nptype": trt.nptype})
    with pytest.raises(EngineError, match=r"has inputs \[\]"):
        runtime_mod.describe_engine(engine, mutated)
    h.assert_clean()


def test_a_logger_that_skips_the_base_init_is_refused_like_the_real_bindings(dumps, key,
                                                                             monkeypatch):
    """pybind11: "ILogger.__init__() must be called when overriding __init__" (TypeError, seen
    on every real binding above); recorded with our location when our code does it, and our
    logger (trt/logger.py) does call it."""
    from xception_trt.trt.logger import make_logger

    h = Harness(dumps[key], key, monkeypatch)
    logger = make_logger(h.api.module)
    h.api.module.Runtime(logger)
    logger.log(h.api.module.ILogger.Severity.ERROR, "an error")
    assert "an error" in logger.take()
    h.assert_clean()


def test_a_misspelt_read_next_to_a_probe_is_still_recorded(dumps, monkeypatch):
    """Issue 26: a misspelt read on a line that also holds ``hasattr(`` was taken for a probe
    and not recorded. Only the member a ``hasattr(x, "name")`` / ``getattr(x, "name", d)``
    names is a probe answer. (This test file stands in for our package's lines.)"""
    from trt_api import double as double_mod

    monkeypatch.setattr(double_mod, "_PACKAGE_DIR", str(Path(__file__)))
    h = Harness(dumps["10.3.0"], "10.3.0", monkeypatch)
    engine = h.api.instance("ICudaEngine")
    assert not hasattr(engine, "device_memory_size_v3")  # a probe: an answer, not recorded
    assert getattr(engine, "no_such_member", None) is None
    assert h.mismatches == []
    with pytest.raises(AttributeError):
        _ = hasattr(engine, "device_memory_size_v2") and engine.device_memroy_size
    assert [m.call for m in h.mismatches] == ["ICudaEngine.device_memroy_size"]


def test_setter_only_properties_are_type_checked(dumps, nvidia, monkeypatch):
    """Issue 26: a setter-only property (IExecutionContext.device_memory: the real setter is
    ``(arg0: IExecutionContext, arg1: int) -> None``, no getter: the dumps record the setter's
    signature) took anything: writing the allocation object instead of its address passed. Now
    the write is checked against the setter's type and a read is refused (pybind11:
    "unreadable attribute")."""
    from test_runtime import EmuBackend as _Emu

    from xception_trt.trt.cuda import CudaDevice

    h = Harness(dumps[nvidia], nvidia, monkeypatch)
    ctx = h.api.instance("IExecutionContext")
    with CudaDevice(0, _Emu()) as cuda, cuda.alloc(1 << 20) as buf:
        with pytest.raises(TypeError):
            ctx.device_memory = buf  # the object, not buf.ptr
        assert "device_memory takes" in h.mismatches[-1].problem
        h.mismatches.clear()
        ctx.device_memory = buf.ptr
        with pytest.raises(AttributeError):
            _ = ctx.device_memory
        assert "write-only" in h.mismatches[-1].problem


# ------------------------------------------------------------------------------------------------
# paths our users reach that no test drove (issue 26)
def test_fixed_batch_uint8_engine_with_device_output_and_the_stream_calls(dumps, key,
                                                                          onnx_variants,
                                                                          tmp_path, monkeypatch):
    """Opening a fixed-batch engine, running a uint8-input engine, ``out=`` device outputs
    (set_tensor_address with the caller's pointer) and ``input_buffer`` + ``infer_async`` as
    stream/ uses them, through every version's API."""
    import numpy as np
    from test_runtime import _DeviceArr

    from xception_trt.trt.runtime import TensorRTRunner

    h = Harness(dumps[key], key, monkeypatch)
    static = builder_mod.build_engine(onnx_variants["static2"], h.config(),
                                      output=tmp_path / "static.engine")
    u8 = builder_mod.build_engine(onnx_variants["uint8"], h.config(max_batch=2),
                                  output=tmp_path / "u8.engine")
    be = EmuBackend()
    with TensorRTRunner(static.path, cuda_binding=be) as r:  # type: ignore[arg-type]
        assert r.min_batch == r.max_batch == 2
        r.infer(np.zeros((2, 3, 71, 71), np.float32))
        out = _DeviceArr(be, np.zeros((2, r.spec.num_classes), np.float32))
        assert r.infer(np.zeros((2, 3, 71, 71), np.float32), out=out) is out
        ctx = r._compute._ctx
        assert ctx._state["_addresses"]["logits"] == out.ptr  # written in place, no copy
    with TensorRTRunner(u8.path, cuda_binding=be) as r:  # type: ignore[arg-type]
        assert r.input_spec.dtype == np.uint8
        buf = r.input_buffer(2)  # stream/: preprocess straight into the pinned buffer
        buf[...] = 7
        handle = r.infer_async(buf)
        assert handle.wait().shape == (2, r.spec.num_classes)
    h.assert_clean()


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0", "11.4.0.106"])
def test_dla_core_count_as_bundle_facts_read_it(dumps, version, monkeypatch):
    """bundle/facts.py reads the DLA core count through sysinfo.dla_cores ->
    trt.devices.query_dla_cores (Builder.num_DLA_cores), driven here through each API."""
    from xception_trt.trt import import_flavour
    from xception_trt.trt.devices import query_dla_cores

    h = Harness(dumps[version], version, monkeypatch, num_dla_cores=2)
    assert query_dla_cores(import_flavour("tensorrt")) == 2
    h.assert_clean()


def test_tensorrt_10_0_device_memory_property_path(dumps, onnx_variants, tmp_path, monkeypatch):
    """TensorRT 10.0 has USER_MANAGED contexts but no set_device_memory (10.1+): the runner
    writes IExecutionContext.device_memory (setter-only, an int address). Simulated on the real
    10.3 API without set_device_memory."""
    h = Harness(_without(dumps["10.3.0"], members={"IExecutionContext": ("set_device_memory",)}),
                "10.3.0", monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"], h.config(max_batch=4),
                                   output=tmp_path / "e.engine")
    _open_and_run(art.path, cuda_graphs=True, world=h.world)
    assert "IExecutionContext.device_memory=" in h.api.calls
    h.assert_clean()


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_dla_batch_above_the_dla_limit_is_refused(dumps, version, onnx_variants, tmp_path,
                                                  monkeypatch):
    """Issue 26 (suspected): Builder.max_DLA_batch_size was never compared with the fixed DLA
    batch ("the total volume of index dimensions ... should not exceed the value returned",
    IBuilder::getMaxDLABatchSize)."""
    h = Harness(dumps[version], version, monkeypatch, num_dla_cores=2, max_dla_batch=2)
    variant = onnx_variants["float" if h.major < 10 else "fp16"]
    with pytest.raises(BuildError, match=r"at most 2 \(Builder.max_DLA_batch_size\).*batch 4"):
        builder_mod.build_engine(variant, h.config(dla_core=0, precision="fp16", batch=4),
                                 output=tmp_path / "dla.engine")
    builder_mod.build_engine(variant, h.config(dla_core=0, precision="fp16", batch=2),
                             output=tmp_path / "dla.engine")
    assert "Builder.max_DLA_batch_size" in h.api.calls
    h.assert_clean()


class _PbUtils:
    """Triton's ``triton_python_backend_utils`` as far as our model uses it, with the
    documented semantics (triton-inference-server/python_backend README, "Usage"):
    ``get_input_tensor_by_name(request, name).as_numpy()``, ``Tensor(name, array)``,
    ``InferenceResponse(output_tensors=..., error=None)``, ``TritonError(message)``,
    ``get_output_config_by_name(model_config, name)`` (the output's config dict),
    ``triton_string_to_numpy("TYPE_FP32")`` and ``Logger.log_info``."""

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, np.asarray(array)

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class InferenceRequest:
        def __init__(self, tensors):
            self.tensors = tensors

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self.error = output_tensors, error

    class TritonError(Exception):
        pass

    class Logger:
        lines: list[str] = []

        @classmethod
        def log_info(cls, message):
            cls.lines.append(message)

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return next((t for t in request.tensors if t.name() == name), None)

    @staticmethod
    def get_output_config_by_name(model_config, name):
        return next((o for o in model_config.get("output", []) if o["name"] == name), None)

    @staticmethod
    def triton_string_to_numpy(type_string):
        return {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_UINT8": np.uint8,
                "TYPE_INT64": np.int64}[type_string]


def test_triton_python_model_opens_the_engine_with_the_options_triton_passes(
        dumps, onnx_variants, tmp_path, monkeypatch):
    """The Triton Python model (serve/python_model.py) as Triton drives it: ``initialize`` with
    the args Triton passes (all strings: model_config JSON, model_instance_kind "GPU",
    model_instance_device_id, model_repository, model_version, names; python_backend README),
    our runner_options (CUDA graphs), several requests merged into one batch, ``finalize``;
    the engine's TensorRT calls checked against the real 10.3 API, GPU 1 emulated."""
    from google.protobuf import json_format

    from xception_trt.serve import RepositoryOptions, python_model, write_repository
    from xception_trt.serve.validate import validate_config_text
    from xception_trt.trt import cuda as trt_cuda
    from xception_trt.trt import runtime as runtime_mod

    h = Harness(dumps["10.3.0"], "10.3.0", monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"], h.config(max_batch=4),
                                   output=tmp_path / "m.engine")
    repo = write_repository(art.path, tmp_path / "repo", options=RepositoryOptions(
        triton_backend="python", instance_kind="gpu", gpus=(1,),
        runner_options={"cuda_graphs": True})).root
    model_dir = repo / "xception"
    config = json_format.MessageToDict(
        validate_config_text((model_dir / "config.pbtxt").read_text()),
        preserving_proto_field_name=True)
    opened: list[int] = []

    def emulated(index, binding=None):
        be = EmuBackend()
        be.device = int(index)
        opened.append(int(index))
        return trt_cuda.CudaDevice(int(index), be)

    monkeypatch.setattr(runtime_mod, "CudaDevice", emulated)
    monkeypatch.setattr(python_model, "pb_utils", _PbUtils)
    h.world.capturing = None
    model = python_model.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_instance_kind": "GPU",
                      "model_instance_name": "xception_0_0", "model_instance_device_id": "1",
                      "model_repository": str(model_dir), "model_version": "1",
                      "model_name": "xception"})
    assert opened == [1] and model.runner.device == "cuda:1" and model.runner.cuda_graphs
    requests = [_PbUtils.InferenceRequest([_PbUtils.Tensor(
        "input", np.zeros((n, 3, 71, 71), np.float32))]) for n in (1, 2)]
    responses = model.execute(requests)
    assert [r.error for r in responses] == [None, None]
    assert [r.output_tensors[0].as_numpy().shape for r in responses] == [(1, 4), (2, 4)]
    model.finalize()
    h.assert_clean()


def test_rtx_multi_target_builds_and_the_bundle_cache_build(dumps, onnx_variants,
                                                            tiny_checkpoint, tmp_path,
                                                            monkeypatch):
    """TensorRT-RTX builds for several compute capabilities in one engine
    (num_compute_capabilities, then set_compute_capability(cc, index): RTX-1), and the bundle
    cache builds one for the GPU it runs on, through the real TensorRT-RTX API."""
    from xception_trt.bundle.cache import resolve
    from xception_trt.bundle.facts import DeviceFacts, FlavourFact, GpuFact
    from xception_trt.bundler import write_bundle
    from xception_trt.sidecar import read_sidecar

    bundle = write_bundle(source=tiny_checkpoint, output=tmp_path / "m.xtrt",
                          local_engines=False, max_batch=2).path
    h = Harness(dumps["rtx"], "rtx", monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"],
                                   h.config(cc=("sm86", "sm89", "sm120"), max_batch=2),
                                   output=tmp_path / "multi.engine")
    assert h.world.built[-1]["ccs"] == {0: "SM86", 1: "SM89", 2: "SM120"}
    assert art.sidecar.targets == ("SM86", "SM89", "SM120")
    facts = DeviceFacts(flavours=(FlavourFact("tensorrt_rtx", h.api.version),),
                        gpus=(GpuFact(0, "NVIDIA GeForce RTX 4090", "8.9"),), onnx=True)
    res = resolve(bundle, precision="fp32", facts=facts, cache_dir=tmp_path / "cache")
    assert res.built and read_sidecar(res.path).targets == ("SM89",)
    assert h.world.built[-1]["ccs"] == {0: "SM89"}
    h.assert_clean()


def test_bench_precision_rtx_build_calls(dumps, onnx_variants, monkeypatch):
    """benchmarks/bench_precision.py calls tensorrt_rtx directly (its own logger, parser,
    profile, one compute-capability target): driven through the real TensorRT-RTX API."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_precision", Path(__file__).resolve().parents[1] / "benchmarks" /
        "bench_precision.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    h = Harness(dumps["rtx"], "rtx", monkeypatch)
    result = bench._rtx_build(onnx_variants["float"], 71)
    assert result["built"] is True and result["tensorrt_rtx"] == h.api.version
    assert h.world.built[-1]["ccs"] == {0: "SM86"}
    h.assert_clean()


def test_our_logger_with_every_severity_of_every_version(dumps, key, monkeypatch, caplog):
    """trt/logger.py as TensorRT drives it: ``log(severity, msg)`` with each real
    ``ILogger.Severity`` member (pybind11 enums, not ints): errors kept for the raised error,
    warnings to logging, the verbose layer summary kept when asked."""
    import logging

    from xception_trt.trt.logger import make_logger

    h = Harness(dumps[key], key, monkeypatch)
    sev = h.api.module.ILogger.Severity
    logger = make_logger(h.api.module, capture_layers=True)
    with caplog.at_level(logging.WARNING, logger="xception_trt.trt.logger"):
        for member, msg in ((sev.INTERNAL_ERROR, "internal"), (sev.ERROR, "error"),
                            (sev.WARNING, "warning"), (sev.INFO, "info"),
                            (sev.VERBOSE, "Layers:\nName: conv")):
            logger.log(sev(int(member)), msg)  # as TensorRT passes it: a new enum object
    assert logger.take() == "internal | error" and logger.errors == []
    assert logger.layers_text == "Layers:\nName: conv"
    assert [r.getMessage() for r in caplog.records] == ["TensorRT: warning"]
    h.assert_clean()


def test_a_failed_open_drops_tensorrt_objects_on_the_devices_context(dumps, onnx_variants,
                                                                     tmp_path, monkeypatch):
    """Issue 26 (suspected): after a failed open the runner dropped its TensorRT objects (engine,
    runtime) outside any CUDA context (_abort); TensorRT frees device memory when they go, which
    needs the engine's context current. Now they are dropped inside the backend's scope."""
    import weakref

    from test_cuda_rules import _DepthEmu

    from xception_trt.errors import EngineError
    from xception_trt.trt import runtime as runtime_mod

    h = Harness(dumps["10.3.0"], "10.3.0", monkeypatch)
    art = builder_mod.build_engine(onnx_variants["float"], h.config(max_batch=4),
                                   output=tmp_path / "e.engine")
    side = json.loads(art.sidecar_path.read_text())
    side["input_format"] = "uint8-nhwc"  # the sidecar of another engine: refused after loading
    art.sidecar_path.write_text(json.dumps(side))
    be = _DepthEmu()
    freed: list[int] = []
    real = runtime_mod.deserialize

    def watched(*a, **kw):
        logger, runtime, engine = real(*a, **kw)
        weakref.finalize(engine, lambda: freed.append(be.depth))
        return logger, runtime, engine

    monkeypatch.setattr(runtime_mod, "deserialize", watched)
    with pytest.raises(EngineError, match="its sidecar says"):
        runtime_mod.TensorRTRunner(art.path, cuda_binding=be)  # type: ignore[arg-type]
    assert freed == [1]
    h.assert_clean()
