"""Graph passes (one test per pass on a small hand-built graph, checked numerically with ONNX
Runtime), the operator and opset checks, the uint8-NHWC stem and the cleanup pipeline."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from xception_trt import graph as G
from xception_trt.config import ModelSpec
from xception_trt.errors import GraphError

RNG = np.random.default_rng(0)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _apply(model: onnx.ModelProto, *passes) -> onnx.ModelProto:
    graph = G.import_graph(model)
    for fn in passes:
        graph = fn(graph)
    out = G.export_graph(graph, like=model)
    onnx.checker.check_model(out, full_check=True)
    return out


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _conv_bn_model(*, bn_eps=1e-3) -> onnx.ModelProto:
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gamma = RNG.uniform(0.5, 1.5, 4).astype(np.float32)
    beta = RNG.standard_normal(4).astype(np.float32)
    mean = RNG.standard_normal(4).astype(np.float32) * 0.1
    var = RNG.uniform(0.5, 1.5, 4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"],
                              name="bn", epsilon=bn_eps)]
    return _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 6, 6])],
                  [_init("w", w), _init("g", gamma), _init("b", beta), _init("m", mean),
                   _init("v", var)])


# ---------------------------------------------------------------------------------------------
# passes


def test_fold_constants_folds_shape_arithmetic_into_a_constant():
    # Reshape target computed from constants (Concat of two constants) -> a single initializer.
    nodes = [helper.make_node("Concat", ["a", "b"], ["shape"], axis=0),
             helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    model = _model(nodes, [_vi("x", [2, 3, 4])], [_vi("y", [2, 12])],
                   [_init("a", np.array([2], np.int64)), _init("b", np.array([12], np.int64))])
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    out = _apply(model, G.fold_constants)
    assert _ops(out) == ["Relu", "Reshape"]
    np.testing.assert_array_equal(_run(out, x), _run(model, x))


def test_remove_identity_dropout_keeps_io_names():
    nodes = [helper.make_node("Identity", ["x"], ["i1"]),
             helper.make_node("Relu", ["i1"], ["r"]),
             helper.make_node("Dropout", ["r"], ["d"]),
             helper.make_node("Relu", ["d"], ["r2"]),
             helper.make_node("Identity", ["r2"], ["y"])]
    model = _model(nodes, [_vi("x", [2, 5])], [_vi("y", [2, 5])])
    x = RNG.standard_normal((2, 5)).astype(np.float32)
    out = _apply(model, G.remove_identity_dropout)
    assert _ops(out) == ["Relu", "Relu"]
    assert [i.name for i in out.graph.input] == ["x"]
    assert [o.name for o in out.graph.output] == ["y"]
    np.testing.assert_array_equal(_run(out, x), _run(model, x))


def test_remove_identity_keeps_dropout_whose_mask_is_used():
    nodes = [helper.make_node("Dropout", ["x"], ["d", "mask"]),
             helper.make_node("Cast", ["mask"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["d", "mf"], ["y"])]
    model = _model(nodes, [_vi("x", [2, 5])], [_vi("y", [2, 5])])
    assert "Dropout" in _ops(_apply(model, G.remove_identity_dropout))


def test_remove_dead_nodes_drops_unused_branches():
    nodes = [helper.make_node("Relu", ["x"], ["y"]),
             helper.make_node("Sigmoid", ["x"], ["dead"]),
             helper.make_node("Neg", ["dead"], ["dead2"])]
    model = _model(nodes, [_vi("x", [3])], [_vi("y", [3])])
    assert _ops(_apply(model, G.remove_dead_nodes)) == ["Relu"]


def test_toposort_orders_nodes():
    nodes = [helper.make_node("Neg", ["r"], ["y"]), helper.make_node("Relu", ["x"], ["r"])]
    model = _model(nodes, [_vi("x", [3])], [_vi("y", [3])])
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    assert _ops(_apply(model, G.toposort)) == ["Relu", "Neg"]


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("keepdims", [1, 0])
def test_canonicalize_head_reduce_mean_to_global_average_pool(opset, keepdims):
    inits = [_init("fcw", RNG.standard_normal((5, 6)).astype(np.float32))]
    if opset >= 18:
        inits.append(_init("axes", np.array([2, 3], np.int64)))
        rm = helper.make_node("ReduceMean", ["x", "axes"], ["p"], keepdims=keepdims)
    else:
        rm = helper.make_node("ReduceMean", ["x"], ["p"], axes=[-2, -1], keepdims=keepdims)
    nodes = [rm]
    if keepdims:  # dynamic-batch junk: Shape -> Gather -> Concat -> Reshape
        inits += [_init("zero", np.array(0, np.int64)), _init("minus1", np.array([-1], np.int64))]
        nodes += [helper.make_node("Shape", ["p"], ["s"]),
                  helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
                  helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
                  helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
                  helper.make_node("Reshape", ["p", "shape"], ["f"])]
        inits.append(_init("ax0", np.array([0], np.int64)))
    else:
        nodes += [helper.make_node("Identity", ["p"], ["f"])]
    nodes.append(helper.make_node("Gemm", ["f", "fcw"], ["y"], transB=1))
    model = _model(nodes, [_vi("x", ["batch", 6, 4, 4])], [_vi("y", ["batch", 5])], inits,
                   opset=opset)
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    x = RNG.standard_normal((3, 6, 4, 4)).astype(np.float32)
    out = _apply(model, G.remove_identity_dropout, G.canonicalize_head)
    assert _ops(out) == ["GlobalAveragePool", "Flatten", "Gemm"]
    np.testing.assert_allclose(_run(out, x), _run(model, x), rtol=1e-5, atol=1e-6)


def test_canonicalize_head_leaves_other_reductions_alone():
    nodes = [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)]
    model = _model(nodes, [_vi("x", [2, 6, 4, 4])], [_vi("y", [2, 1, 4, 4])])
    assert _ops(_apply(model, G.canonicalize_head)) == ["ReduceMean"]


@pytest.mark.parametrize("value, fused", [(-np.inf, True), (0.0, False)])
def test_fuse_pad_into_maxpool_only_for_minus_inf(value, fused):
    nodes = [helper.make_node("Pad", ["x", "pads", "v"], ["p"], mode="constant"),
             helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[3, 3], strides=[2, 2])]
    inits = [_init("pads", np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64)),
             _init("v", np.array(value, np.float32))]
    model = _model(nodes, [_vi("x", [1, 2, 8, 8])], [_vi("y", [1, 2, 4, 4])], inits)
    x = RNG.standard_normal((1, 2, 8, 8)).astype(np.float32) - 3  # all negative: pads matter
    out = _apply(model, G.fuse_pad_into_maxpool)
    assert _ops(out) == (["MaxPool"] if fused else ["Pad", "MaxPool"])
    np.testing.assert_array_equal(_run(out, x), _run(model, x))


def test_dedupe_initializers_merges_identical_weights():
    w = RNG.standard_normal((3, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]),
             helper.make_node("MatMul", ["a", "w2"], ["b"]),
             helper.make_node("MatMul", ["b", "w3"], ["y"])]
    inits = [_init("w1", w), _init("w2", w.copy()), _init("w3", w + 1)]
    model = _model(nodes, [_vi("x", [2, 3])], [_vi("y", [2, 3])], inits)
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    out = _apply(model, G.dedupe_initializers)
    assert len(out.graph.initializer) == 2
    assert G.graph_stats(out).initializer_bytes == 2 * w.nbytes
    np.testing.assert_array_equal(_run(out, x), _run(model, x))


def test_fold_batchnorm_into_conv_is_numerically_exact():
    model = _conv_bn_model()
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    out = _apply(model, G.fold_batchnorm)
    assert _ops(out) == ["Conv"]
    assert len(out.graph.node[0].input) == 3  # a bias was added
    np.testing.assert_allclose(_run(out, x), _run(model, x), rtol=1e-5, atol=1e-5)
    G.check_no_batchnorm(G.import_graph(out))


def test_unfoldable_batchnorm_is_a_graph_error_naming_the_node():
    c = 3
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "g", "b", "m", "v"], ["y"],
                              name="lonely_bn")]
    inits = [_init(n, np.ones(c, np.float32)) for n in ("g", "b", "m", "v")]
    model = _model(nodes, [_vi("x", [1, c, 4, 4])], [_vi("y", [1, c, 4, 4])], inits)
    graph = G.fold_batchnorm(G.import_graph(model))
    with pytest.raises(GraphError, match="lonely_bn"):
        G.check_no_batchnorm(graph)
    with pytest.raises(GraphError, match="lonely_bn"):
        G.clean_graph(model)


def test_check_ops_names_the_unexpected_node():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="ok"),
             helper.make_node("Softmax", ["r"], ["y"], name="head_softmax")]
    model = _model(nodes, [_vi("x", [2, 5])], [_vi("y", [2, 5])])
    with pytest.raises(GraphError, match="head_softmax.*Softmax"):
        G.check_ops(G.import_graph(model))
    G.check_ops(G.import_graph(model), allowed={"Relu", "Softmax"})


def test_check_ops_rejects_custom_domains():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="custom", domain="com.example")]
    graph = helper.make_graph(nodes, "g", [_vi("x", [2])], [_vi("y", [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    with pytest.raises(GraphError, match="custom.*com.example"):
        G.check_ops(G.import_graph(model))


def test_name_nodes_is_deterministic():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="/weird/0"),
             helper.make_node("Relu", ["a"], ["b"], name="x"),
             helper.make_node("Neg", ["b"], ["y"])]
    model = _model(nodes, [_vi("x", [2])], [_vi("y", [2])])
    out = _apply(model, G.name_nodes)
    assert [n.name for n in out.graph.node] == ["Relu_0", "Relu_1", "Neg_0"]


# ---------------------------------------------------------------------------------------------
# uint8-NHWC stem


def _stem_model(pads=(0, 0, 0, 0), with_bias=True) -> onnx.ModelProto:
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    inputs = ["input", "w"] + (["b"] if with_bias else [])
    inits = [_init("w", w)] + ([_init("b", RNG.standard_normal(4).astype(np.float32))]
                               if with_bias else [])
    nodes = [helper.make_node("Conv", inputs, ["c"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=list(pads)),
             helper.make_node("Relu", ["c"], ["logits"])]
    out_hw = 4 if not any(pads) else 5
    return _model(nodes, [_vi("input", ["batch", 3, 9, 9])],
                  [_vi("logits", ["batch", 4, out_hw, out_hw])], inits)


@pytest.mark.parametrize("with_bias", [True, False])
def test_uint8_nhwc_stem_matches_the_float_path_exactly(with_bias):
    from xception_trt.preprocess import normalize

    spec = ModelSpec(num_classes=4, input_size=71, mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225))
    model = _stem_model(with_bias=with_bias)
    out = G.uint8_nhwc_model(model, spec)
    (inp,) = out.graph.input
    assert inp.name == "input" and inp.type.tensor_type.elem_type == TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 9, 9, 3]
    assert _ops(out)[:2] == ["Cast", "Transpose"]
    pixels = RNG.integers(0, 256, size=(3, 9, 9, 3), dtype=np.uint8)
    ref = _run(model, normalize(pixels, spec))
    np.testing.assert_allclose(_run(out, pixels), ref, rtol=1e-5, atol=1e-4)


def test_uint8_nhwc_refuses_a_padded_first_conv():
    spec = ModelSpec(num_classes=4, input_size=71)
    with pytest.raises(GraphError, match="padded.*float-nchw"):
        G.uint8_nhwc_model(_stem_model(pads=(1, 1, 1, 1)), spec)


def test_uint8_nhwc_refuses_an_input_with_several_consumers():
    nodes = [helper.make_node("Relu", ["input"], ["a"]), helper.make_node("Neg", ["input"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["logits"])]
    model = _model(nodes, [_vi("input", [1, 3, 9, 9])], [_vi("logits", [1, 3, 9, 9])])
    with pytest.raises(GraphError, match="not one Conv"):
        G.uint8_nhwc_model(model, ModelSpec(num_classes=4, input_size=71))


# ---------------------------------------------------------------------------------------------
# checks on files, opsets, report


def test_check_onnx_bad_files(tmp_path):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(GraphError, match="does not exist"):
        G.check_onnx(missing)
    text = tmp_path / "text.onnx"
    text.write_text("this is not a protobuf\n" * 10)
    with pytest.raises(GraphError, match="not a valid ONNX|no nodes"):
        G.check_onnx(text)
    good = _conv_bn_model()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.SerializeToString()[:200])
    with pytest.raises(GraphError, match="truncated"):
        G.check_onnx(truncated)


@pytest.mark.parametrize("opset", [11, 99])
def test_check_onnx_rejects_opsets_tensorrt_cannot_read(tmp_path, opset):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    path = tmp_path / "m.onnx"
    onnx.save(_model(nodes, [_vi("x", [2])], [_vi("y", [2])], opset=opset), str(path))
    with pytest.raises(GraphError, match=f"opset {opset}.*--opset 17"):
        G.check_onnx(path)


def test_check_onnx_reports_leftover_batchnorm(tmp_path):
    path = tmp_path / "bn.onnx"
    onnx.save(_conv_bn_model(), str(path))
    with pytest.raises(GraphError, match="BatchNormalization node 'bn'"):
        G.check_onnx(path)


def test_graph_report_counts_ops_and_bytes():
    model = _conv_bn_model()
    cleaned = G.clean_graph(model)
    rep = G.graph_report(model, cleaned, file_size=1234)
    assert rep.before.ops == {"Conv": 1, "BatchNormalization": 1}
    assert rep.after.ops == {"Conv": 1}
    assert rep.before.initializer_bytes == (4 * 27 + 4 * 4) * 4
    assert rep.after.initializer_bytes == (4 * 27 + 4) * 4
    assert rep.after.num_initializers == 2
    text = rep.format()
    assert "BatchNormalization" in text and "1234" in text
    assert G.graph_report(model).after == rep.before


# ---------------------------------------------------------------------------------------------
# the pipeline on real exporter output


def _torchscript_raw(model, opset=17) -> onnx.ModelProto:
    import torch

    size = model.spec.input_size
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, 3, size, size),), buf, dynamo=False,
                          opset_version=opset, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return onnx.load_from_string(buf.getvalue())


def test_clean_graph_on_a_tf_same_model_folds_pad_arithmetic(tiny_spec):
    """TorchScript exports TF-"same" pooling as Shape/ConstantOfShape/Concat/Slice/Cast feeding
    Pad; cleanup folds all of it, leaving only TensorRT-friendly ops, with the same output."""
    import torch

    from xception_trt.model import build_xception

    torch.manual_seed(0)
    # 75 -> 37 -> 35 -> pool 18 (even: TF pads 0 before, 1 after) -> 9 -> 5 -> 3
    model = build_xception(spec=tiny_spec.replace(input_size=75, pool_padding="tf-same"))
    raw = _torchscript_raw(model)
    raw_ops = set(_ops(raw))
    assert {"ConstantOfShape", "Slice", "Identity"} <= raw_ops
    cleaned = G.clean_graph(raw)
    assert set(_ops(cleaned)) <= G.XCEPTION_OPS - {"Pad"}  # fused into the MaxPools
    pool_pads = [list(a.ints) for n in cleaned.graph.node if n.op_type == "MaxPool"
                 for a in n.attribute if a.name == "pads"]
    assert [0, 0, 1, 1] in pool_pads  # TF "same" on an even input: nothing before, 1 after
    x = RNG.standard_normal((2, 3, 75, 75)).astype(np.float32)
    np.testing.assert_allclose(_run(cleaned, x), _run(raw, x), rtol=1e-5, atol=1e-5)
    assert [n.name for n in cleaned.graph.node][0] == "Conv_0"


# ---------------------------------------------------------------------------------------------
# INT8 weight storage: to_int8_weights / to_float_weights


@pytest.fixture(scope="module")
def qdq_forms(tiny_onnx_files, image_folder, tmp_path_factory) -> dict:
    """The tiny model's TensorRT-placed INT8 graph, calibrated once, in both weight forms as
    the precision step writes them (the second run hits the calibration cache: same scales)."""
    from xception_trt.precision import quantize_int8

    root = tmp_path_factory.mktemp("int8w")
    kw = dict(num_images=8, cache_dir=root / "cache")
    qdq = quantize_int8(tiny_onnx_files["float"], image_folder, int8_weights=False,
                        output=root / "float.onnx", **kw)
    dq = quantize_int8(tiny_onnx_files["float"], image_folder, int8_weights=True,
                       output=root / "int8.onnx", **kw)
    assert dq.scales == qdq.scales
    return {"float": onnx.load(str(qdq.path)), "int8": onnx.load(str(dq.path)),
            "paths": (qdq.path, dq.path)}


def _arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _same_graph(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    assert [(n.op_type, list(n.input), list(n.output)) for n in a.graph.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in b.graph.node]
    x, y = _arrays(a), _arrays(b)
    assert x.keys() == y.keys()
    for name in x:
        assert x[name].dtype == y[name].dtype and np.array_equal(x[name], y[name]), name


def test_to_int8_weights_is_modelopts_qdq_to_dq(qdq_forms):
    # the precision step's int8_weights=True runs ModelOpt's qdq_to_dq: same nodes, same bytes
    mine = G.to_int8_weights(qdq_forms["float"])
    _same_graph(mine, qdq_forms["int8"])
    assert mine.metadata_props == qdq_forms["float"].metadata_props
    assert G.int8_weight_form(qdq_forms["float"]) == G.FLOAT_WEIGHTS
    assert G.int8_weight_form(mine) == G.INT8_WEIGHTS
    assert G.int8_weight_form(qdq_forms["float"]) == G.FLOAT_WEIGHTS  # input not modified


def test_both_weight_forms_compute_the_same(qdq_forms, tiny_spec):
    x = RNG.standard_normal((3, 3, tiny_spec.input_size, tiny_spec.input_size)).astype(
        np.float32)
    ref = _run(qdq_forms["float"], x)
    back = G.to_float_weights(qdq_forms["int8"])
    for model in (qdq_forms["int8"], back):
        np.testing.assert_allclose(_run(model, x), ref, rtol=0, atol=1e-6)
    # the float form again: quantizing its weights gives back the same INT8 values exactly
    assert G.int8_weight_form(back) == G.FLOAT_WEIGHTS
    assert sum(n.op_type == "QuantizeLinear" for n in back.graph.node) == \
        sum(n.op_type == "QuantizeLinear" for n in qdq_forms["float"].graph.node)
    _same_graph(G.to_int8_weights(back), qdq_forms["int8"])


def test_int8_weights_are_a_quarter_of_the_weight_bytes(qdq_forms):
    float_path, int8_path = qdq_forms["paths"]
    quantized = [a for a in _arrays(qdq_forms["int8"]).values() if a.dtype == np.int8
                 and a.ndim > 1]
    assert quantized and all(a.dtype == np.int8 for a in quantized)
    elements = sum(a.size for a in quantized)
    # each quantized weight element went from 4 bytes to 1 (the Q nodes went too)
    saved = float_path.stat().st_size - int8_path.stat().st_size
    assert 3 * elements <= saved < 3 * elements + 20_000


def test_int8_weight_graph_builds_with_tensorrt_rtx(qdq_forms, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds engines on the CPU")
    from xception_trt.config import BuildConfig
    from xception_trt.trt.builder import build_engine
    from xception_trt.trt.layers import check_engine_precision, tally_layers

    _, int8_path = qdq_forms["paths"]
    art = build_engine(int8_path, BuildConfig(flavour="tensorrt_rtx"),
                       output=tmp_path / "int8w.engine")
    check = check_engine_precision(art.sidecar, onnx_model=qdq_forms["int8"])
    assert check.ok and check.checked > 0, check.summary()
    assert tally_layers(art.sidecar).compute()["int8"] == check.checked


def _weight_qdq_model(shared: bool = False, zero: int = 0) -> onnx.ModelProto:
    """x -> Conv(W through Q/DQ, per output channel) [-> Conv(W as float) when shared]."""
    w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    scale = (np.abs(w).reshape(4, -1).max(axis=1) / 127).astype(np.float32)
    nodes = [helper.make_node("QuantizeLinear", ["W", "s", "z"], ["Wq"], axis=0),
             helper.make_node("DequantizeLinear", ["Wq", "s", "z"], ["Wdq"], axis=0),
             helper.make_node("Conv", ["x", "Wdq"], ["y"], pads=[1, 1, 1, 1])]
    outputs = [_vi("y", [1, 4, 5, 5])]
    if shared:
        nodes.append(helper.make_node("Conv", ["x", "W"], ["y2"], pads=[1, 1, 1, 1]))
        outputs.append(_vi("y2", [1, 4, 5, 5]))
    return _model(nodes, [_vi("x", [1, 2, 5, 5])], outputs,
                  [_init("W", w), _init("s", scale), _init("z", np.full(4, zero, np.int8))],
                  opset=19)


@pytest.mark.parametrize("zero", [0, 3])
def test_weight_forms_round_trip_on_a_hand_built_graph(zero):
    model = _weight_qdq_model(zero=zero)
    x = RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)
    small = G.to_int8_weights(model)
    assert [n.op_type for n in small.graph.node] == ["DequantizeLinear", "Conv"]
    assert _arrays(small)["W"].dtype == np.int8
    np.testing.assert_allclose(_run(small, x), _run(model, x), rtol=0, atol=1e-6)
    back = G.to_float_weights(small)
    assert [n.op_type for n in back.graph.node] == ["QuantizeLinear", "DequantizeLinear", "Conv"]
    assert [a.i for a in back.graph.node[0].attribute if a.name == "axis"] == [0]
    np.testing.assert_allclose(_run(back, x), _run(model, x), rtol=0, atol=1e-6)


def test_a_weight_read_elsewhere_keeps_its_float_copy():
    model = _weight_qdq_model(shared=True)
    x = RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)
    small = G.to_int8_weights(model)
    arrays = _arrays(small)
    assert arrays["W"].dtype == np.float32 and arrays["W_int8"].dtype == np.int8
    assert small.graph.node[0].input[0] == "W_int8"
    np.testing.assert_allclose(_run(small, x), _run(model, x), rtol=0, atol=1e-6)


def test_graphs_without_quantized_weights_are_left_alone():
    w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    plain = _model([helper.make_node("Conv", ["x", "W"], ["y"])], [_vi("x", [1, 2, 5, 5])],
                   [_vi("y", [1, 4, 3, 3])], [_init("W", w)])
    assert G.int8_weight_form(plain) is None
    for fn in (G.to_int8_weights, G.to_float_weights):
        out = fn(plain)
        assert out == plain and out is not plain
