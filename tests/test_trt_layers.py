"""trt/layers.py: per-precision layer tallies and the precision check, on engines TensorRT-RTX
builds here (FP32, FP16, INT8 of the tiny model) and on NVIDIA TensorRT engine-inspector JSON as
the checking double returns it (TensorRT 10's ``Format/Datatype``, 11's ``Format`` +
``DataType``, and the names-only form of an engine built without DETAILED verbosity)."""

from __future__ import annotations

import json

import onnx
import pytest

from xception_trt.config import BuildConfig, Precision
from xception_trt.errors import ConfigError
from xception_trt.trt.builder import parse_inspector_json
from xception_trt.trt.layers import (
    COMPUTE_OPS,
    LayerInfo,
    LayerRole,
    check_engine_precision,
    check_precision,
    dtype_precision,
    generated_kernels,
    intended_exclusions,
    sidecar_exclusions,
    tally_layers,
)

RTX = BuildConfig(flavour="tensorrt_rtx")


@pytest.fixture(scope="module")
def built(tiny_onnx_files, image_folder, tmp_path_factory) -> dict:
    """FP32, FP16 and INT8 (Q/DQ) graphs of the tiny model and their TensorRT-RTX engines."""
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds engines on the CPU")
    from xception_trt.precision import quantize_int8, to_fp16
    from xception_trt.trt.builder import build_engine

    root = tmp_path_factory.mktemp("layers")
    graphs = {"fp32": tiny_onnx_files["float"], "fp16": root / "fp16.onnx",
              "int8": root / "int8.onnx"}
    to_fp16(graphs["fp32"], output=graphs["fp16"])
    quantize_int8(graphs["fp32"], image_folder, num_images=8, output=graphs["int8"],
                  cache_dir=None)
    return {k: (onnx.load(str(p)), build_engine(p, RTX, output=root / f"{k}.engine").sidecar)
            for k, p in graphs.items()}


def _compute_nodes(model) -> int:
    return sum(n.op_type in COMPUTE_OPS for n in model.graph.node)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_float_engines_compute_in_their_precision(built, precision):
    model, side = built[precision]
    tally = tally_layers(side)
    # one compute layer per Conv/Gemm node of the graph, all at the precision asked for
    assert tally.compute() == {precision: _compute_nodes(model)}
    assert tally.total() == len(side.layers)
    check = check_engine_precision(side, onnx_model=model)
    assert check.ok and check.checked == _compute_nodes(model) and not check.excluded
    assert check.summary() == f"all {check.checked} compute layers run in {precision}"
    # the same engine held to another precision is flagged, layer by layer
    other = "fp16" if precision == "fp32" else "fp32"
    wrong = check_precision(side, other)
    assert not wrong.ok and len(wrong.mismatched) == check.checked
    assert {m.found for m in wrong.mismatched} == {precision}
    assert wrong.summary().startswith(f"{check.checked} of {check.checked} compute layers "
                                      f"are not {other}: ")


def test_int8_engine_runs_int8_except_the_graphs_own_exclusions(built):
    model, side = built["int8"]
    excluded = intended_exclusions(model, "int8")
    # the graph's Q/DQ placement and the metadata the sidecar carries agree; the output
    # Gemm is kept in high precision on purpose
    assert excluded == sidecar_exclusions(side) and "Gemm_0" in excluded
    assert excluded < {n.name for n in model.graph.node if n.op_type in COMPUTE_OPS}
    check = check_engine_precision(side)
    assert check.ok, check.summary()
    assert check.checked == _compute_nodes(model) - len(excluded)
    assert len(check.excluded) == len(excluded)
    assert check_engine_precision(side, onnx_model=model) == check
    tally = tally_layers(side)
    assert tally.compute() == {"int8": check.checked, "fp32": len(excluded)}
    # Q/DQ turns into quantize kernels: convert layers, not compute; each is a kernel
    # TensorRT-RTX generates (its source is kept in the plan), which FP32 has few of
    assert tally.total(LayerRole.CONVERT) > 0
    assert generated_kernels(side) >= tally.total(LayerRole.CONVERT)
    assert generated_kernels(side) > 3 * generated_kernels(built["fp32"][1]) > 0
    # without the exclusions the check flags exactly the excluded nodes' layers
    blind = check_precision(side, Precision.INT8)
    assert not blind.ok
    assert {n for m in blind.mismatched for n in m.onnx_nodes} & excluded == excluded
    assert {m.found for m in blind.mismatched} == {"fp32"}


def test_an_fp32_engine_is_flagged_as_int8(built):
    model, side = built["fp32"]
    check = check_precision(side, "int8", exclusions=intended_exclusions(built["int8"][0], "int8"))
    assert not check.ok and check.mismatched and check.excluded
    assert all(m.found == "fp32" for m in check.mismatched)


def test_fp16_exclusions_come_from_the_graphs_types(built):
    model, _ = built["fp16"]
    assert intended_exclusions(model, "fp16") == frozenset()
    # the FP32 graph held to FP16: every compute node reads float32
    fp32 = built["fp32"][0]
    assert intended_exclusions(fp32, "fp16") == {n.name for n in fp32.graph.node
                                                 if n.op_type in COMPUTE_OPS}
    assert intended_exclusions(fp32, "fp32") == frozenset()


# ---------------------------------------------------------------------------------------------
# NVIDIA TensorRT: engine inspector JSON (as tests/trt_api's double and the real API return it)


def _inspector(layers: list, key: str = "Format/Datatype") -> list[dict]:
    def io(fmt: str) -> dict:
        return ({"Format/Datatype": fmt} if key == "Format/Datatype"
                else {"Format": "kLINEAR", "DataType": fmt})

    rows = []
    for name, kind, ins, outs, meta in layers:
        rows.append({"Name": name, "LayerType": kind, "Inputs": [io(f) for f in ins],
                     "Outputs": [io(f) for f in outs], "TacticName": "t",
                     "Metadata": "".join(f"[ONNX Layer: {m}]" for m in meta)})
    parsed = parse_inspector_json(json.dumps({"Layers": rows, "Bindings": ["input"]}))
    assert parsed is not None
    return parsed


_INT8_10 = [
    ("input_q", "Reformat", ["Row major linear FP32"],
     ["Thirty-two wide channel vectorized row major Int8 format"], ["input_QuantizeLinear"]),
    ("Conv_0 + Relu_0", "CaskConvolution",
     ["Thirty-two wide channel vectorized row major Int8 format"],
     ["Thirty-two wide channel vectorized row major Int8 format"],
     ["Conv_0", "Relu_0", "w0_DequantizeLinear"]),
    ("Conv_1", "CaskGemmConvolution", ["Channel major FP32 format"],
     ["Row major linear FP32"], ["Conv_1"]),
    ("shuffle", "Shuffle", ["Row major linear FP32"], ["Row major linear FP32"], ["Flatten_0"]),
    ("Gemm_0", "CaskGemmMatrixMultiply", ["Row major linear FP32"], ["Row major linear FP32"],
     ["Gemm_0"]),
    ("pool", "CaskPooling", ["Row major linear Int8 format"], ["Row major linear Int8 format"],
     ["MaxPool_0"]),
]


@pytest.mark.parametrize("key", ["Format/Datatype", "DataType"])
def test_inspector_json_tally_and_check(key):
    layers = _inspector(_INT8_10, key)
    tally = tally_layers(layers)
    assert tally.to_dict() == {"convert": {"fp32": 2}, "compute": {"int8": 1, "fp32": 2},
                               "other": {"int8": 1}}
    assert tally.summary() == "compute: 2 fp32, 1 int8; convert: 2; other: 1"
    assert generated_kernels(layers) == 0  # NVIDIA TensorRT: no TensorRT-RTX kernels
    ok = check_precision(layers, "int8", exclusions={"Conv_1", "Gemm_0"})
    assert ok.ok and ok.checked == 1 and ok.excluded == ("Conv_1", "Gemm_0")
    # Conv_1 is not an intended exclusion: a silent FP32 fallback
    flagged = check_precision(layers, "int8", exclusions={"Gemm_0"})
    assert not flagged.ok and [str(m) for m in flagged.mismatched] == ["Conv_1 (Conv_1) runs "
                                                                       "in fp32"]


def test_inspector_names_only_cannot_be_checked():
    # an engine built without ProfilingVerbosity.DETAILED (INSP-1): names, no types
    layers = parse_inspector_json(json.dumps({"Layers": ["conv", "gemm"], "Bindings": []}))
    check = check_precision(layers, "fp16")
    assert not check.ok and check.checked == 0 and check.unverifiable == ("conv", "gemm")
    assert "no compute layer could be checked" in check.summary()
    assert tally_layers(layers).to_dict() == {"unknown": {"unknown": 2}}
    assert not check_precision(None, "fp32").ok
    with pytest.raises(ConfigError, match="unknown Precision 'int4'"):
        check_precision(layers, "int4")


@pytest.mark.parametrize("text, want", [
    ("Float", "fp32"), ("Half", "fp16"), ("Int8", "int8"), ("BFloat16", "bf16"),
    ("Row major linear FP32", "fp32"), ("Channel major FP16 format where channel % 8 == 0",
                                        "fp16"),
    ("Thirty-two wide channel vectorized row major Int8 format", "int8"),
    ("Row major linear UInt8 format", "uint8"), ("Int32", "index"), ("Bool", "index"),
    ("FP8", "fp8"), ("", None), ("Row major linear", None), (None, None), (7, None)])
def test_dtype_precision(text, want):
    assert dtype_precision(text) == want


@pytest.mark.parametrize("record, role, precision", [
    # TensorRT-RTX builder log
    ({"name": "Conv_0_myl0_2", "type": "correlation", "input_dtypes": ["Int8"],
      "output_dtypes": ["Float"]}, LayerRole.COMPUTE, "int8"),
    ({"name": "__myl_FcAdd_myl0_50", "type": "runtime_fusion", "input_dtypes": ["Half"],
      "output_dtypes": ["Float"]}, LayerRole.COMPUTE, "fp16"),
    # dequantize fused before a float fully connected: computes in its output's precision
    ({"name": "__myl_CastMulFc_myl0_98", "type": "runtime_fusion", "input_dtypes": ["Int8"],
      "output_dtypes": ["Float"]}, LayerRole.COMPUTE, "fp32"),
    ({"name": "__myl_MulMinMaxRounCast_myl0_95", "type": "kgen", "input_dtypes": ["Float"],
      "output_dtypes": ["Int8"]}, LayerRole.CONVERT, "fp32"),
    ({"name": "__myl_MulAddRelu_myl0_3", "type": "kgen", "input_dtypes": ["Float"],
      "output_dtypes": ["Float"]}, LayerRole.OTHER, "fp32"),
    ({"name": "__mye1_myl0_6", "type": "signal", "input_dtypes": [], "output_dtypes": []},
     LayerRole.CONTROL, None),
    ({"name": "MaxPool_0_myl0_8", "type": "maxpool", "input_dtypes": ["Half"],
      "output_dtypes": ["Half"]}, LayerRole.OTHER, "fp16"),
    # NVIDIA TensorRT inspector types
    ({"name": "r", "type": "Reformat", "input_dtypes": ["Row major linear FP32"],
      "output_dtypes": ["Row major linear FP16"]}, LayerRole.CONVERT, "fp32"),
    ({"name": "n", "type": "NoOp", "input_dtypes": ["Half"], "output_dtypes": ["Half"]},
     LayerRole.CONTROL, "fp16"),
    ({"name": "d", "type": "CaskDeconvolution", "input_dtypes": ["Half"],
      "output_dtypes": ["Half"]}, LayerRole.COMPUTE, "fp16"),
    # untrusted records: no type, odd fields
    ({"name": "x", "type": None, "input_dtypes": "Float"}, LayerRole.UNKNOWN, None),
    ("just-a-name", LayerRole.UNKNOWN, None),
])
def test_layer_roles_and_precisions(record, role, precision):
    info = LayerInfo.from_record(record)
    assert info.role is role and info.precision == precision


def test_fused_quantize_nodes_are_not_named_as_the_layers_own():
    # TensorRT lists the Q/DQ nodes it fused into a layer with it: a mismatch names the layer's
    # own nodes only
    layer = {"name": "conv", "type": "CaskConvolution", "input_dtypes": ["Float"],
             "output_dtypes": ["Float"],
             "onnx_layers": ["x_QuantizeLinear", "Conv_3", "x_DequantizeLinear", "Relu_3"]}
    check = check_precision([layer], "int8")
    assert [m.onnx_nodes for m in check.mismatched] == [("Conv_3", "Relu_3")]
    assert check.summary() == ("1 of 1 compute layers are not int8: conv (Conv_3, Relu_3) runs "
                               "in fp32")


def test_control_layers_count_under_none_and_no_compute_is_empty():
    noop = {"name": "n", "type": "NoOp", "input_dtypes": ["Half"], "output_dtypes": ["Half"]}
    tally = tally_layers([noop, {**noop, "name": "m"}])
    assert tally.to_dict() == {"control": {"none": 2}}
    assert tally.compute() == {} and tally.summary() == "control: 2"


def test_the_tactic_is_read_from_the_record():
    assert LayerInfo.from_record({"name": "c", "type": "conv", "tactic": "0x1f"}).tactic == "0x1f"
    assert LayerInfo.from_record({"name": "c", "type": "conv", "tactic": 7}).tactic is None


def test_a_check_without_layer_information_says_so():
    check = check_precision([{"name": "x", "type": None}], "fp16")
    assert check.summary() == ("fp16: no compute layer could be checked (the engine's layer "
                               "information has no types or precisions)")


def _fp16_sidecar(onnx_section):
    from pathlib import Path

    from xception_trt.sidecar import EngineSidecar

    data = json.loads((Path(__file__).parent / "data" / "engine_sidecar_0.1.0.json").read_text())
    data["precision"] = "fp16"
    data["onnx"] = onnx_section
    return EngineSidecar.from_dict(data)


@pytest.mark.parametrize("metadata, want", [
    ({"fp16": json.dumps({"fp32_nodes": ["Gemm_0", 3]})}, {"Gemm_0"}),
    ({"fp16": {"fp32_nodes": ["Conv_0"]}}, {"Conv_0"}),
    ({"fp16": "{not json"}, set()),
    ({}, set()),
    # untrusted: a metadata section that is no mapping records nothing
    (["fp16"], set()),
    ("fp16", set()),
])
def test_sidecar_exclusions_of_an_fp16_engine(metadata, want):
    assert sidecar_exclusions(_fp16_sidecar({"metadata": metadata})) == want
