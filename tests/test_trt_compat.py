"""Pure TensorRT version logic (xception_trt.trt.compat) and BuildConfig: no TensorRT needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xception_trt.config import BuildConfig, ModelSpec, Precision, normalise_compute_capability
from xception_trt.errors import BuildError, ConfigError, EngineError
from xception_trt.sidecar import EngineSidecar
from xception_trt.trt.builder import (
    load_timing_cache,
    parse_inspector_json,
    parse_layer_log,
    parser_error_lines,
    save_timing_cache,
)
from xception_trt.trt.compat import (
    RTX_DEFAULT_TARGETS,
    check_options,
    check_sidecar_compat,
    compute_capability_tuple,
    engine_cache_key,
    network_and_precision_plan,
    parse_version,
    rebuild_command,
    timing_cache_filename,
)

P = Precision


# ---------------------------------------------------------------------------------------------
# the one version function


@pytest.mark.parametrize("precision, flags, sources", [
    ("fp32", (), (P.FP32,)),
    ("fp16", ("FP16",), (P.FP32, P.FP16)),
    ("int8", ("INT8",), (P.INT8,)),
])
def test_plan_tensorrt_86_uses_weak_typing_flags(precision, flags, sources):
    plan = network_and_precision_plan("tensorrt", "8.6.2.3", precision)
    assert not plan.strongly_typed
    assert plan.network_flags == ("EXPLICIT_BATCH",)
    assert plan.builder_flags == flags
    assert plan.onnx_precisions == sources
    assert not plan.progress_monitor  # IProgressMonitor arrived in 10.0
    assert plan.timing_cache and plan.dla and not plan.compute_capabilities


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_plan_tensorrt_10_is_strongly_typed(precision):
    plan = network_and_precision_plan("tensorrt", "10.3.0.26", precision)
    assert plan.strongly_typed
    assert plan.network_flags == ("STRONGLY_TYPED",)
    assert plan.builder_flags == ()
    assert plan.onnx_precisions == (P.parse(precision),)
    assert plan.progress_monitor and plan.timing_cache and plan.dla
    assert plan.version_compatible and plan.hardware_compatible


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_plan_tensorrt_11_always_strongly_typed_without_flags(precision):
    plan = network_and_precision_plan("tensorrt", "11.1.0", precision)
    assert plan.strongly_typed
    assert plan.network_flags == ()  # STRONGLY_TYPED is deprecated and ignored in 11
    assert plan.builder_flags == ()  # FP16/INT8 flags were removed in 11
    assert plan.onnx_precisions == (P.parse(precision),)
    assert not plan.dla


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_plan_tensorrt_rtx(precision):
    plan = network_and_precision_plan("tensorrt_rtx", "1.7.1.116", precision)
    assert plan.strongly_typed and plan.network_flags == () and plan.builder_flags == ()
    assert plan.onnx_precisions == (P.parse(precision),)
    assert plan.compute_capabilities and plan.progress_monitor
    assert not plan.timing_cache and not plan.dla and not plan.version_compatible


def test_plan_rejects_old_and_unknown():
    with pytest.raises(BuildError, match="8.6"):
        network_and_precision_plan("tensorrt", "8.5.3.1", "fp32")
    with pytest.raises(BuildError, match="unknown TensorRT flavour"):
        network_and_precision_plan("onnxruntime", "1.20", "fp32")
    with pytest.raises(ConfigError, match="bf16"):
        network_and_precision_plan("tensorrt", "10.0", "bf16")


def test_plan_version_boundaries():
    assert not network_and_precision_plan("tensorrt", "9.3.0", "fp16").strongly_typed
    assert network_and_precision_plan("tensorrt", "10.0.0", "fp16").strongly_typed
    assert network_and_precision_plan("tensorrt", "10.16.1", "fp16").network_flags == (
        "STRONGLY_TYPED",)
    assert network_and_precision_plan("tensorrt", "11.0.0", "fp16").network_flags == ()


def test_parse_version():
    assert parse_version("10.3.0.26") == (10, 3, 0, 26)
    assert parse_version("8.6.1.post1") == (8, 6, 1)
    assert parse_version("11.0.0rc2") == (11, 0, 0)
    assert parse_version((1, 7)) == (1, 7)
    with pytest.raises(BuildError):
        parse_version("dev")


# ---------------------------------------------------------------------------------------------
# options the flavour cannot honour


def test_check_options():
    rtx = network_and_precision_plan("tensorrt_rtx", "1.7.1", "fp32")
    trt10 = network_and_precision_plan("tensorrt", "10.3.0", "fp32")
    trt11 = network_and_precision_plan("tensorrt", "11.1.0", "fp32")
    with pytest.raises(BuildError, match="DLA"):
        check_options(rtx, BuildConfig(dla_core=0))
    with pytest.raises(BuildError, match="DLA"):
        check_options(trt11, BuildConfig(dla_core=0))
    fp16_10 = network_and_precision_plan("tensorrt", "10.3.0", "fp16")
    assert check_options(fp16_10, BuildConfig(dla_core=1)) == []
    # issue 21 item 4: DLA runs FP16 and INT8 only ("Working with DLA")
    with pytest.raises(BuildError, match="DLA runs FP16 and INT8 only"):
        check_options(trt10, BuildConfig(dla_core=1))
    with pytest.raises(BuildError, match="TensorRT-RTX option"):
        check_options(trt10, BuildConfig(cc=("sm86",)))
    with pytest.raises(BuildError, match="version-compatible"):
        check_options(rtx, BuildConfig(version_compatible=True))
    with pytest.raises(BuildError, match="--cc"):
        check_options(rtx, BuildConfig(hardware_compatible=True))
    assert check_options(trt10, BuildConfig(version_compatible=True,
                                            hardware_compatible=True)) == []
    warnings = check_options(rtx, BuildConfig(timing_cache_dir="/tmp/tc"))
    assert len(warnings) == 1 and "timing cache" in warnings[0]
    assert check_options(trt10, BuildConfig(timing_cache_dir="/tmp/tc")) == []


# ---------------------------------------------------------------------------------------------
# BuildConfig


def test_build_config_profile_defaults_and_fixed_batch():
    assert BuildConfig().profile == (1, 8, 8)
    assert BuildConfig(max_batch=4).profile == (1, 4, 4)
    assert BuildConfig(min_batch=2, opt_batch=4, max_batch=16).profile == (2, 4, 16)
    assert BuildConfig(batch=3).profile == (3, 3, 3)
    assert BuildConfig(min_batch=16).profile == (16, 16, 16)


@pytest.mark.parametrize("kwargs, match", [
    ({"batch": 4, "max_batch": 8}, "either a fixed batch"),
    ({"min_batch": 4, "max_batch": 2}, "min <= opt <= max"),
    ({"opt_batch": 9, "max_batch": 8}, "min <= opt <= max"),
    ({"batch": 0}, r"\[1, 65536\]"),
    ({"max_batch": 2**31}, r"\[1, 65536\]"),  # issue 27 item 8: reached TensorRT
    ({"max_batch": 2.5}, "integer"),
    ({"optimization_level": 6}, r"\[0, 5\]"),
    ({"workspace_mib": 0}, ">= 1"),
    ({"dla_core": -1}, ">= 0"),
    ({"precision": "fp8"}, "fp32, fp16, int8"),
    ({"flavour": "onnxruntime"}, "tensorrt_rtx"),
    ({"cc": "sm86"}, "sequence"),
    ({"cc": ("ampere",)}, "not a compute capability"),
    ({"cc": ("current", "sm86")}, "CURRENT"),
    ({"dla_core": 0, "hardware_compatible": True}, "DLA"),
    ({"dla_core": 0, "version_compatible": True}, "DLA"),
    ({"layer_info": "yes"}, "True or False"),
])
def test_build_config_rejects(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BuildConfig(**kwargs)


def test_build_config_normalises_and_serialises():
    cfg = BuildConfig(precision="FP16", cc=["8.6", "sm_89", "SM86", "12.0"])
    assert cfg.precision is P.FP16
    assert cfg.cc == ("SM86", "SM89", "SM120")
    data = cfg.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["precision"] == "fp16" and data["profile"] == [1, 8, 8]
    assert cfg.replace(max_batch=2).profile == (1, 2, 2)
    assert normalise_compute_capability("Current") == "CURRENT"
    assert normalise_compute_capability("121") == "SM121"


def test_compute_capability_tuple():
    assert compute_capability_tuple("8.7") == (8, 7)
    assert compute_capability_tuple("sm_86") == (8, 6)
    assert compute_capability_tuple("SM120") == (12, 0)
    with pytest.raises(EngineError):
        compute_capability_tuple("CURRENT")


# ---------------------------------------------------------------------------------------------
# caches and the rebuild command


def test_timing_cache_filename_is_keyed_by_flavour_version_and_device():
    names = {
        timing_cache_filename("tensorrt", "10.3.0.26", "Orin-sm8.7"),
        timing_cache_filename("tensorrt", "10.3.0.30", "Orin-sm8.7"),
        timing_cache_filename("tensorrt", "10.3.0.26", "NVIDIA RTX 4090-sm8.9"),
        timing_cache_filename("tensorrt_rtx", "10.3.0.26", "Orin-sm8.7"),
    }
    assert len(names) == 4
    for name in names:
        assert "/" not in name and " " not in name and name.endswith(".timing-cache")


def test_engine_cache_key_changes_with_every_input():
    base = dict(onnx_sha256="a" * 64, options=BuildConfig().to_dict(), flavour_name="tensorrt",
                version="10.3.0", device={"name": "Orin", "compute_capability": "8.7"},
                targets=None)
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**base)
    variants = [
        {"onnx_sha256": "b" * 64},
        {"options": BuildConfig(max_batch=4).to_dict()},
        {"options": BuildConfig(precision="fp16").to_dict()},
        {"flavour_name": "tensorrt_rtx"},
        {"version": "10.3.1"},
        {"device": {"name": "Orin", "compute_capability": "8.6"}},
        {"targets": ["SM86"]},
    ]
    keys = {engine_cache_key(**{**base, **v}) for v in variants}
    assert key not in keys and len(keys) == len(variants)
    # where the timing cache lives does not change the engine
    assert engine_cache_key(**{**base, "options": BuildConfig(
        timing_cache_dir="/x").to_dict()}) == key


def test_rebuild_command():
    cmd = rebuild_command("m dir/model.fp16.onnx", "engines/model.fp16.engine",
                          BuildConfig(max_batch=4, cc=("sm86",),
                                      workspace_mib=256), precision=P.FP16)
    assert cmd.startswith("xception-trt build 'm dir/model.fp16.onnx' -o engines")
    assert "--precision fp16" in cmd and "--max-batch 4" in cmd and "--cc SM86" in cmd
    assert "--workspace-mib 256" in cmd
    fixed = rebuild_command("m.onnx", "e.engine", BuildConfig(batch=2, dla_core=0,
                                                              gpu_fallback=False))
    assert "--batch 2" in fixed and "--dla-core 0 --no-gpu-fallback" in fixed
    assert "-o ." in fixed


# ---------------------------------------------------------------------------------------------
# can this runtime load that engine?


def _sidecar(flavour="tensorrt", version="10.3.0.26", cc="8.7", targets=None, **options):
    return EngineSidecar.from_dict({
        "schema": 1, "tensorrt": {"flavour": flavour, "version": version},
        "engine": {"file": "m.fp16.engine", "bytes": 4, "sha256": "0" * 64},
        "precision": "fp16", "input_format": "float-nchw", "model_spec": ModelSpec().to_dict(),
        "device": None if cc is None else {"name": "GPU", "compute_capability": cc},
        "targets": targets, "build_options": options,
        "rebuild_command": "xception-trt build m.onnx -o engines --precision fp16"})


def test_compat_same_everything_passes():
    assert check_sidecar_compat(_sidecar(), "tensorrt", "10.3.0.26", "8.7") is None


def test_compat_flavour_mismatch_gives_rebuild_command():
    with pytest.raises(EngineError) as err:
        check_sidecar_compat(_sidecar(), "tensorrt_rtx", "1.7.1", "8.6")
    text = str(err.value)
    assert "tensorrt 10.3.0.26" in text and "tensorrt_rtx 1.7.1" in text
    assert "xception-trt build m.onnx -o engines --precision fp16 --flavour tensorrt_rtx" in text


@pytest.mark.parametrize("runtime, ok", [("10.3.0.26", True), ("10.3.0.30", False),
                                         ("10.3.1", False), ("10.4.0", False), ("10.2.0", False)])
def test_compat_plain_engine_needs_same_release(runtime, ok):
    """Issue 21 item 10: without version compatibility the runtime must match the build's
    version "in major, minor, patch, and build" (TensorRT release notes, "Serialized engines are
    not generally portable ...")."""
    call = lambda: check_sidecar_compat(_sidecar(), "tensorrt", runtime, "8.7")  # noqa: E731
    if ok:
        call()
    else:
        with pytest.raises(EngineError, match="only load in the version that built them"):
            call()


@pytest.mark.parametrize("built, runtime, ok", [
    ("10.3.0", "10.3.0", True), ("10.3.0", "10.8.0", True), ("10.8.0", "10.3.0", False),
    ("8.6.1", "10.0.1", True), ("8.6.1", "9.3.0", True), ("8.6.1", "11.0.0", False),
    ("10.3.0", "11.1.0", True), ("11.1.0", "10.9.0", False),
])
def test_compat_version_compatible_rules(built, runtime, ok):
    side = _sidecar(version=built, version_compatible=True)
    if ok:
        check_sidecar_compat(side, "tensorrt", runtime, "8.7")
    else:
        with pytest.raises(EngineError, match="version-compatible"):
            check_sidecar_compat(side, "tensorrt", runtime, "8.7")


def test_compat_device_rules():
    with pytest.raises(EngineError, match="needs an NVIDIA GPU"):
        check_sidecar_compat(_sidecar(), "tensorrt", "10.3.0.26", None)
    with pytest.raises(EngineError, match="--hardware-compatible"):
        check_sidecar_compat(_sidecar(cc="8.7"), "tensorrt", "10.3.0.26", "8.6")
    hw = _sidecar(cc="8.6", hardware_compatible=True)
    check_sidecar_compat(hw, "tensorrt", "10.3.0.26", "8.9")
    check_sidecar_compat(hw, "tensorrt", "10.3.0.26", "9.0")
    with pytest.raises(EngineError, match="Ampere"):
        check_sidecar_compat(hw, "tensorrt", "10.3.0.26", "7.5")


def test_compat_rtx_targets():
    explicit = _sidecar("tensorrt_rtx", "1.7.1.116", cc=None, targets=["SM86", "SM89"])
    check_sidecar_compat(explicit, "tensorrt_rtx", "1.7.1.116", "8.9")
    with pytest.raises(EngineError, match="sm120"):
        check_sidecar_compat(explicit, "tensorrt_rtx", "1.7.1.116", "12.0")
    with pytest.raises(EngineError, match="release that built them"):
        check_sidecar_compat(explicit, "tensorrt_rtx", "1.8.0.1", "8.6")
    default = _sidecar("tensorrt_rtx", "1.7.1.116", cc=None, targets=None)
    for cc in ("8.0", "8.6", "8.9", "12.0", "12.1"):
        check_sidecar_compat(default, "tensorrt_rtx", "1.7.1.116", cc)
    for cc in ("7.5", "9.0"):
        with pytest.raises(EngineError, match="compute capability"):
            check_sidecar_compat(default, "tensorrt_rtx", "1.7.1.116", cc)
    current = _sidecar("tensorrt_rtx", "1.7.1.116", cc="8.9", targets=["CURRENT"])
    check_sidecar_compat(current, "tensorrt_rtx", "1.7.1.116", "8.9")
    with pytest.raises(EngineError):
        check_sidecar_compat(current, "tensorrt_rtx", "1.7.1.116", "8.6")
    assert RTX_DEFAULT_TARGETS == ("SM80", "SM86", "SM89", "SM120")


def test_compat_rejects_foreign_sidecar():
    with pytest.raises(EngineError, match="no TensorRT section"):
        EngineSidecar.from_dict({"schema": 1})


# ---------------------------------------------------------------------------------------------
# per-layer information parsers


RTX_LAYER_LOG = (
    "Layers:\n"
    "Name: __mye1753_0_myl0_0, LayerType: shape_call, Inputs: [], Constants: [], Outputs: [], "
    "TacticName: , StreamId: 0, Metadata: \n"
    "Name: /conv1/Conv_myl0_2, LayerType: correlation, Inputs: [ { Name: x, Dimensions: "
    "[-1,3,71,71], Datatype: Float, Format: (NHWC) Channel major format }], Constants: [ { Name: "
    "w, Datatype: Half, Format: x }], Outputs: [ { Name: y, Dimensions: [-1,8,35,35], Datatype: "
    "Half, Format: (NHWC) Channel major format }], TacticName: __myelin_CASK_STUB, StreamId: 0, "
    "Metadata: [ONNX Layer: /conv1/Conv][ONNX Layer: /act1/Relu]\n")


def test_parse_layer_log():
    layers = parse_layer_log(RTX_LAYER_LOG)
    assert [layer["name"] for layer in layers] == ["__mye1753_0_myl0_0", "/conv1/Conv_myl0_2"]
    conv = layers[1]
    assert conv["type"] == "correlation"
    assert conv["input_dtypes"] == ["Float"]  # constants are not inputs
    assert conv["output_dtypes"] == ["Half"]
    assert conv["onnx_layers"] == ["/conv1/Conv", "/act1/Relu"]
    assert conv["tactic"] == "__myelin_CASK_STUB"
    assert parse_layer_log(None) is None and parse_layer_log("Layers:\n") is None


def test_parse_inspector_json_trt10_and_trt11_layouts():
    trt10 = {"Layers": [{"Name": "conv", "LayerType": "CaskConvolution",
                         "Inputs": [{"Name": "input", "Format/Datatype": "Row major linear FP32"}],
                         "Outputs": [{"Name": "t", "Format/Datatype": "Channel major FP16"}],
                         "TacticName": "sm80_xmma", "Metadata": "[ONNX Layer: /conv1/Conv]"}],
             "Bindings": ["input", "logits"]}
    trt11 = {"Layers": [{"Name": "conv", "LayerType": "CaskConvolution",
                         "Inputs": [{"Name": "input", "Format": "Linear", "DataType": "FP32"}],
                         "Outputs": [{"Name": "t", "Format": "CHW32", "DataType": "Int8"}]}],
             "I/O Tensors": ["input", "logits"]}
    a = parse_inspector_json(json.dumps(trt10))[0]
    assert a["output_dtypes"] == ["Channel major FP16"] and a["onnx_layers"] == ["/conv1/Conv"]
    b = parse_inspector_json(json.dumps(trt11))[0]
    assert b["input_dtypes"] == ["FP32"] and b["output_dtypes"] == ["Int8"]
    names = parse_inspector_json(json.dumps({"Layers": ["a", "b"]}))
    assert [n["name"] for n in names] == ["a", "b"]
    assert parse_inspector_json("not json") is None


# ---------------------------------------------------------------------------------------------
# timing cache file handling (against the documented IBuilderConfig/ITimingCache API; a real
# round trip through NVIDIA TensorRT is in test_builder.py, marked ``trt``)


class _FakeCache:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def serialize(self) -> bytes:
        return self.blob + b"+new-timings"


class _FakeBuilderConfig:
    """Mimics IBuilderConfig.create_timing_cache/set_timing_cache/get_timing_cache."""

    def __init__(self, accept: bool = True) -> None:
        self.accept, self.cache, self.created = accept, None, []

    def create_timing_cache(self, blob: bytes):
        self.created.append(bytes(blob))
        return None if blob.startswith(b"garbage") else _FakeCache(bytes(blob))

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False  # a cache of another device must not be merged
        self.cache = cache
        return self.accept

    def get_timing_cache(self):
        return self.cache


def test_timing_cache_round_trip(tmp_path: Path):
    path = tmp_path / "tc" / "tensorrt-10.3-orin.timing-cache"
    first = _FakeBuilderConfig()
    assert load_timing_cache(first, path) == 0  # no file yet: empty cache
    assert save_timing_cache(first, path) == len(b"+new-timings")
    assert path.read_bytes() == b"+new-timings"
    second = _FakeBuilderConfig()
    assert load_timing_cache(second, path) == len(b"+new-timings")
    assert second.created == [b"+new-timings"]
    save_timing_cache(second, path)
    assert path.read_bytes() == b"+new-timings+new-timings"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_timing_cache_unreadable_starts_empty(tmp_path: Path, caplog):
    path = tmp_path / "bad.timing-cache"
    path.write_bytes(b"garbage from another TensorRT")
    cfg = _FakeBuilderConfig()
    assert load_timing_cache(cfg, path) == 0
    assert cfg.created[-1] == b"" and "unreadable" in caplog.text
    with pytest.raises(BuildError, match="refused the timing cache"):
        load_timing_cache(_FakeBuilderConfig(accept=False), tmp_path / "none")


# ---------------------------------------------------------------------------------------------
# parser error reports across TensorRT versions


class _Err:
    def __init__(self, node: int, desc: str, code: str = "ErrorCode.UNSUPPORTED_NODE") -> None:
        self._node, self._desc, self._code = node, desc, code

    def node(self):
        return self._node

    def desc(self):
        return self._desc

    def code(self):
        return self._code


class _ErrWithNames(_Err):  # TensorRT 10+ / TensorRT-RTX
    def node_name(self):
        return "from_trt"

    def node_operator(self):
        return "OpFromTrt"


class _Parser:
    def __init__(self, errors) -> None:
        self.errors = errors

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, i):
        return self.errors[i]


def test_parser_error_lines_name_every_node():
    nodes = [("Conv_0", "Conv"), ("weird", "FooBar"), ("Relu_0", "Relu")]
    # TensorRT 8.6 gives only the node index: names and ops come from the graph
    errors = [_Err(1, "no importer"), _Err(2, "bad input"),
              _Err(-1, "model broken", "ErrorCode.MODEL_DESERIALIZE_FAILED")]
    lines = parser_error_lines(_Parser(errors), nodes)
    assert lines == ["node 1 'weird' (FooBar): no importer [ErrorCode.UNSUPPORTED_NODE]",
                     "node 2 'Relu_0' (Relu): bad input [ErrorCode.UNSUPPORTED_NODE]",
                     "model: model broken [ErrorCode.MODEL_DESERIALIZE_FAILED]"]
    # newer TensorRT names them itself
    assert parser_error_lines(_Parser([_ErrWithNames(0, "x")]), nodes) == [
        "node 0 'from_trt' (OpFromTrt): x [ErrorCode.UNSUPPORTED_NODE]"]
    assert parser_error_lines(_Parser([_Err(7, "x")]), nodes) == [
        "node 7 '' (): x [ErrorCode.UNSUPPORTED_NODE]"]
