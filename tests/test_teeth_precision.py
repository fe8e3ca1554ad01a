"""Tests with teeth for precision/ (issue 31): the KL direction against a value worked by hand,
unreadable validation images dropped so that records, pixels and labels stay lined up, held-out
rows measured on the held-out images only, and ONNX Runtime calibration cache entries keyed by the
onnxruntime version. The targeted search and the quantizer's worker are replaced by doubles where
they are not what is tested (the flow and the key are), so no calibration runs here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from xception_trt.config import InputFormat, ModelSpec
from xception_trt.errors import BenchError
from xception_trt.precision import int8 as int8_mod
from xception_trt.precision import targeted as targeted_mod
from xception_trt.precision.sensitivity import (
    EvalImages,
    NodeSensitivity,
    Scorer,
    load_images,
)
from xception_trt.precision.targeted import Target, split_images, targeted_int8

SPEC = ModelSpec(num_classes=3, width=0.125, middle_blocks=0, input_size=71,
                 labels=("cat", "dog", "bird"))
META = SimpleNamespace(spec=SPEC, input_format=InputFormat.FLOAT_NCHW)


def _scorer(reference: np.ndarray, labels=None) -> Scorer:
    """A Scorer with a given FP32 reference (its ONNX Runtime run is not what is tested)."""
    s = object.__new__(Scorer)
    s.images = EvalImages(np.zeros((len(reference), 1)), labels, None)
    s.reference = np.asarray(reference, dtype=np.float64)
    s.fp32_top1 = s._top1(s.reference)
    return s


def test_kl_is_from_fp32_to_the_variant_in_nats():
    # FP32 softmax (0.5, 0.5), variant (0.9, 0.1):
    # KL(P||Q) = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5108 nats; KL(Q||P) would be 0.3681
    ref = np.log([[0.5, 0.5], [0.5, 0.5]])
    variant = np.log([[0.9, 0.1], [0.5, 0.5]])
    row = _scorer(ref).compare(variant, node="n", op_type="Conv", module="m")
    expected = (0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)) / 2  # mean of 2 images
    assert row.kl_mean == pytest.approx(expected, rel=1e-9)
    assert row.kl_mean == pytest.approx(0.2554, abs=1e-4)


def test_compare_rows_agreement_diffs_and_top1():
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    var = np.array([[3.5, 1.0, 0.0], [0.0, 1.0, 3.0], [0.0, 0.0, 5.0], [0.0, 0.25, 0.0]])
    s = _scorer(ref, labels=np.array([0, 2, 2, 1]))
    row = s.compare(var, node="n", op_type="Conv", module="block1")
    assert (row.node, row.op_type, row.module) == ("n", "Conv", "block1")
    assert row.agreement == 0.5                  # images 0 and 2 keep FP32's class
    assert row.max_abs_diff == pytest.approx(2.0)
    assert row.mean_abs_diff == pytest.approx((0.5 + 1 + 2 + 1 + 0.25) / 12)
    assert s.fp32_top1 == 0.5 and row.top1 == 1.0
    same = s.compare(ref, node="fp32", op_type="-", module=None)
    assert same.kl_mean == 0.0 and same.agreement == 1.0 and same.max_abs_diff == 0.0


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 24, 3), value, np.uint8)).save(path)


@pytest.fixture
def folder_with_a_broken_image(tmp_path):
    _png(tmp_path / "cat" / "a.png", 10)
    (tmp_path / "cat" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # unreadable
    _png(tmp_path / "cat" / "c.png", 30)
    _png(tmp_path / "dog" / "d.png", 40)
    _png(tmp_path / "dog" / "e.png", 50)
    return tmp_path


def test_unreadable_validation_images_are_dropped_and_the_rest_line_up(
        folder_with_a_broken_image):
    got = load_images(folder_with_a_broken_image, META, num_images=None, seed=0)
    names = [r.path.name for r in got.dataset.records]
    assert names == ["a.png", "c.png", "d.png", "e.png"] and len(got) == 4
    assert got.labels.tolist() == [0, 0, 1, 1]  # cat, cat, dog, dog in the model's labels
    # the pixels of row i are those of record i (one grey level per image, increasing)
    means = got.x.reshape(4, -1).mean(axis=1)
    assert np.all(np.diff(means) > 0)
    assert got.dataset.class_names == ("cat", "dog")


def test_no_readable_validation_image_is_an_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.raises(BenchError, match="none of the 1 validation image"):
        load_images(tmp_path, META, num_images=None, seed=0)


# ---------------------------------------------------------------------------------------------
# targeted: the held-out rows


@pytest.fixture
def seven_images(tmp_path):
    for i in range(7):
        _png(tmp_path / f"{i}.png", 20 * i)
    return tmp_path


def test_split_is_disjoint_seeded_and_gives_heldout_the_odd_image(seven_images):
    images = load_images(seven_images, META, num_images=None, seed=0)
    sel, held = split_images(images, seed=3)
    sel_paths = {r.path for r in sel.dataset.records}
    held_paths = {r.path for r in held.dataset.records}
    assert len(sel) == 3 and len(held) == 4 and not sel_paths & held_paths
    assert sel_paths | held_paths == {r.path for r in images.dataset.records}
    again = split_images(images, seed=3)
    assert [r.path for r in again[1].dataset.records] == [r.path for r in held.dataset.records]
    # pixels travel with their records
    for part in (sel, held):
        order = [int(r.path.stem) for r in part.dataset.records]
        assert np.allclose(part.x.reshape(len(part), -1).mean(axis=1),
                           images.x[order].reshape(len(part), -1).mean(axis=1))


def test_heldout_rows_are_measured_on_the_heldout_images_only(seven_images, monkeypatch):
    """The scorer double reports, as ``kl_mean``, the share of its images that are held-out
    images: selection rows must show 0, held-out rows 1 (a leak of selection images shows)."""
    seed = 5
    images = load_images(seven_images, META, num_images=None, seed=seed)
    _, held = split_images(images, seed=seed)
    held_paths = {r.path for r in held.dataset.records}
    model = SimpleNamespace(ByteSize=lambda: 100)

    class ShareScorer:
        def __init__(self, fp32_model, imgs, *, threads=2):
            self.images = imgs
            self.share = np.mean([r.path in held_paths for r in imgs.dataset.records])
            self.reference = np.zeros((len(imgs), 3))
            self.fp32_top1 = None

        def score(self, m, *, node, op_type="", module=None):
            return NodeSensitivity(node, op_type, module, 1.0, float(self.share), 0.0, 0.0,
                                   None)

        def compare(self, logits, *, node, op_type, module):
            return self.score(None, node=node, op_type=op_type, module=module)

        def latency_ms(self, m, iterations=10):
            return 1.0

    qres = SimpleNamespace(model=model, scales={}, method=int8_mod.CalibrationMethod.MAX,
                           summary=lambda: {})
    for name, value in {
        "as_model": lambda m: (model, None), "check_source": lambda m: META,
        "calibrate_full": lambda *a, **k: qres, "quantized_nodes": lambda m: ["n1", "n2"],
        "graph_sha256": lambda m: "0" * 64, "Scorer": ShareScorer,
        "rank_nodes": lambda *a, **k: SimpleNamespace(rows=[SimpleNamespace(node="n1"),
                                                            SimpleNamespace(node="n2")]),
        "to_int8_weights": lambda m: m,
        "strip_qdq": lambda m, nodes: SimpleNamespace(ByteSize=lambda: 50 + len(nodes)),
        "_record_choice": lambda *a: None,
    }.items():
        monkeypatch.setattr(targeted_mod, name, value)
    res = targeted_int8("m.onnx", None, seven_images, target=Target(agreement=0.99), seed=seed)
    assert res.images == {"selection": 3, "heldout": 4}
    assert {k: r.kl_mean for k, r in res.heldout.items()} == {
        "fp32": 1.0, "int8": 1.0, "int8-targeted": 1.0}
    assert {k: r.kl_mean for k, r in res.selection.items()} == {
        "fp32": 0.0, "int8": 0.0, "int8-targeted": 0.0}
    assert res.met_on_heldout and res.kept == ()


# ---------------------------------------------------------------------------------------------
# ONNX Runtime placement: the calibration cache key


class _Stop(Exception):
    pass


def test_ort_calibration_cache_is_not_reused_across_onnxruntime_versions(
        fp32_path, flat_image_folder, tmp_path, monkeypatch):
    """An entry written under another onnxruntime is a miss, the same one a hit (the key is
    observed where the cache is consulted; the quantizer's worker is not run)."""
    from importlib.metadata import version

    from xception_trt.precision.cache import lookup_entry, write_entry

    seen = []

    def looked_up(path, key):
        seen.append((path, key, lookup_entry(path, key)))
        return seen[-1][2]

    def no_worker(*a, **k):
        raise _Stop

    monkeypatch.setattr(int8_mod, "lookup_entry", looked_up)
    monkeypatch.setattr(int8_mod, "run_worker", no_worker)

    def run():
        with pytest.raises(_Stop):
            int8_mod.ort_int8(fp32_path, flat_image_folder, method="max", num_images=4,
                              batch_size=2, cache_dir=tmp_path)
        return seen[-1]

    path, key, found = run()
    assert found is None and key["onnxruntime"] == version("onnxruntime")
    assert key["target"] == "onnxruntime" and "modelopt" not in key
    scales = {"input": 0.5}
    write_entry(path, {**key, "onnxruntime": "1.0.0"}, scales=scales, quantized_nodes=["c"],
                excluded_nodes=[], seconds=1.0, zero_points={"input": 0})
    assert run()[2] is None  # made by another onnxruntime: calibrate again
    write_entry(path, key, scales=scales, quantized_nodes=["c"], excluded_nodes=[],
                seconds=1.0, zero_points={"input": 0})
    assert run()[2] == scales


# ---------------------------------------------------------------------------------------------
# sensitivity on a hand-made Q/DQ graph (4x4 pixels; ONNX Runtime runs it in milliseconds)


def _qdq_graph():
    """input -Q/DQ(x, fine)-> conv1 (weight through Q/DQ) -> relu -Q/DQ(r, coarse)-> add
    (+ the same x pair) -> flatten -> logits. The coarse pair (scale 0.5) is read by ``add``
    only, so quantizing ``add`` alone moves the output much more than ``conv1`` alone."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def init(name, value, dtype=np.float32):
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s_x", "z_x"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "s_x", "z_x"], ["xd"], name="dq_x"),
        helper.make_node("QuantizeLinear", ["W", "s_w", "z_w"], ["wq"], name="q_w"),
        helper.make_node("DequantizeLinear", ["wq", "s_w", "z_w"], ["wd"], name="dq_w"),
        helper.make_node("Conv", ["xd", "wd"], ["/block1/rep/rep.0/conv1/Conv_output_0"],
                         name="conv1"),
        helper.make_node("Relu", ["/block1/rep/rep.0/conv1/Conv_output_0"], ["r"], name="relu"),
        helper.make_node("QuantizeLinear", ["r", "s_r", "z_r"], ["rq"], name="q_r"),
        helper.make_node("DequantizeLinear", ["rq", "s_r", "z_r"], ["rd"], name="dq_r"),
        helper.make_node("Add", ["rd", "xd"], ["sum"], name="add"),
        helper.make_node("Flatten", ["sum"], ["logits"], name="flatten"),
    ]
    inits = [init("W", [[[[0.9]]]]), init("s_x", 1 / 128), init("z_x", 0, np.int8),
             init("s_w", 1 / 128), init("z_w", 0, np.int8), init("s_r", 0.5),
             init("z_r", 0, np.int8)]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                     ["n", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _fp32_graph():
    from xception_trt.precision.sensitivity import strip_qdq

    return strip_qdq(_qdq_graph(), nodes={"conv1", "add"})


def _images(n=6, labels=None):
    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 0.6, size=(n, 1, 4, 4)).astype(np.float32)
    return EvalImages(x, labels, None)


def test_quantized_nodes_and_strip_qdq_keep_shared_pairs():
    from xception_trt.errors import GraphError
    from xception_trt.precision.sensitivity import quantized_nodes, strip_qdq

    model = _qdq_graph()
    assert quantized_nodes(model) == ["conv1", "add"]
    one = strip_qdq(model, nodes=["conv1"])
    conv = next(n for n in one.graph.node if n.name == "conv1")
    assert list(conv.input) == ["input", "W"]  # both inputs read before quantization
    names = [n.name for n in one.graph.node]
    assert "q_w" not in names and "dq_w" not in names  # nothing else read the weight's pair
    assert "q_x" in names and "dq_x" in names           # add still reads the input's pair
    assert quantized_nodes(one) == ["add"]
    assert sorted(i.name for i in one.graph.initializer) == ["W", "s_r", "s_x", "z_r", "z_x"]
    both = strip_qdq(model, nodes={"conv1", "add"})
    assert [n.op_type for n in both.graph.node] == ["Conv", "Relu", "Add", "Flatten"]
    assert [i.name for i in both.graph.initializer] == ["W"]
    conv = both.graph.node[0]
    assert list(conv.input) == ["input", "W"] and list(both.graph.node[2].input) == ["r", "input"]
    assert len(model.graph.node) == 10 and len(model.graph.initializer) == 7  # input untouched
    with pytest.raises(GraphError, match=r"node\(s\) nope, zz are not in this graph"):
        strip_qdq(model, nodes={"zz", "nope"})


def test_rank_nodes_runs_each_node_alone_and_ranks_by_kl():
    from xception_trt.errors import CalibrationError, ConfigError
    from xception_trt.precision.sensitivity import rank_nodes

    scorer = Scorer(_fp32_graph(), _images(labels=np.arange(6) % 16), threads=1)
    seen = []
    res = rank_nodes(_qdq_graph(), scorer, method="max",
                     progress=lambda *a: seen.append(a))
    assert [r.node for r in res.rows] == ["add", "conv1"]
    add, conv = res.rows
    assert add.kl_mean > conv.kl_mean >= 0 and add.op_type == "Add" and add.module is None
    assert conv.op_type == "Conv" and conv.module == "block1.rep.0.conv1"
    assert res.full_int8.node == "int8 (all nodes)" and res.full_int8.op_type == "-"
    assert res.full_int8.kl_mean >= add.kl_mean * 0.5
    assert res.images == 6 and res.method == "max" and res.fp32_top1 == scorer.fp32_top1
    assert seen == [("sensitivity", 1, 2), ("sensitivity", 2, 2)]
    only = rank_nodes(_qdq_graph(), scorer, nodes=["conv1"])
    assert [r.node for r in only.rows] == ["conv1"]
    assert only.rows[0].kl_mean == pytest.approx(conv.kl_mean)
    with pytest.raises(ConfigError, match=r"^relu is not a quantized node of this graph$"):
        rank_nodes(_qdq_graph(), scorer, nodes=["relu"])
    with pytest.raises(CalibrationError, match="has no quantized node to rank"):
        rank_nodes(_qdq_graph(), scorer, nodes=[])
    # FP32 against itself: nothing moves
    same = scorer.score(_fp32_graph(), node="fp32")
    assert same.kl_mean == 0.0 and same.agreement == 1.0 and same.max_abs_diff == 0.0


def test_sensitivity_result_json_and_markdown():
    from xception_trt.precision.sensitivity import SensitivityResult

    a = NodeSensitivity("add", "Add", None, 0.5, 0.25, 2.0, 0.5, 0.25)
    c = NodeSensitivity("conv1", "Conv", "block1.conv1", 1.0, 0.0125, 0.1, 0.05, 0.5)
    full = NodeSensitivity("int8 (all nodes)", "-", None, 0.75, 0.5, 3.0, 1.0, 0.25)
    res = SensitivityResult((a, c), 0.5, full, 8, "entropy", 4.0, {"cache": "hit"})
    d = res.to_dict()
    assert list(d)[:7] == ["method", "images", "fp32_top1", "seconds", "seconds_per_node",
                           "full_int8", "ranking"]
    assert d["seconds_per_node"] == 2.0 and [r["rank"] for r in d["ranking"]] == [1, 2]
    assert d["ranking"][0]["node"] == "add" and d["calibration"] == {"cache": "hit"}
    assert res.to_markdown().splitlines() == [
        "INT8 sensitivity (entropy scales, 8 images; one node quantized at a time, the rest "
        "FP32)", "",
        "| rank | node | module | op | agreement % | KL (nats) | max abs dlogit | top-1 % |",
        "|---:|---|---|---|---:|---:|---:|---:|",
        "| 1 | add | - | Add | 50.00 | 0.25 | 2 | 25.00 |",
        "| 2 | conv1 | block1.conv1 | Conv | 100.00 | 0.0125 | 0.1 | 50.00 |",
        "| all | int8 (all nodes) | - | - | 75.00 | 0.5 | 3 | 25.00 |", "",
        "FP32 top-1 on these images: 50.00%", "",
        "2 node(s) in 4.0 s (2.00 s per node)"]
    unlabelled = SensitivityResult((a,), None, full, 8, "max", 1.0)
    md = unlabelled.to_markdown()
    assert "top-1" not in md and md.splitlines()[3] == "|---:|---|---|---|---:|---:|---:|"
    assert md.endswith("1 node(s) in 1.0 s (1.00 s per node)\n")


def test_plot_sensitivity_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra draws it")
    from xception_trt.errors import ConfigError
    from xception_trt.precision.sensitivity import SensitivityResult, plot_sensitivity

    a = NodeSensitivity("add", "Add", None, 0.5, 0.0, 2.0, 0.5)
    c = NodeSensitivity("conv1", "Conv", "block1.conv1", 1.0, 0.0125, 0.1, 0.05)
    res = SensitivityResult((a, c), None, a, 8, "max", 1.0)
    out = plot_sensitivity(res, tmp_path / "s.png", top=1)
    assert out == tmp_path / "s.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.warns(DeprecationWarning, match="plot_sensitivity: path= is deprecated"):
        assert plot_sensitivity(res, path=tmp_path / "old.png").is_file()
    with pytest.raises(ConfigError, match="needs output="):
        plot_sensitivity(res)


@pytest.mark.parametrize("name, module", [
    ("/block1/rep/rep.0/conv1/Conv_output_0", "block1.rep.0.conv1"),
    ("/block12/rep/rep.3/Add_1_output_0", "block12.rep.3"),
    ("/fc/Gemm_output_0", "fc"),
    ("/Conv_output_0", None),
    ("conv1_out", None),
    ("/block1/conv1/Conv", None),
])
def test_module_names_from_scoped_output_names(name, module):
    from xception_trt.precision.sensitivity import module_name

    assert module_name(name) == module


def test_sensitivity_needs_validation_images_and_valid_counts():
    from xception_trt.errors import ConfigError
    from xception_trt.precision.sensitivity import sensitivity

    with pytest.raises(ConfigError, match=r"sensitivity needs validation images \(--val DIR\)"):
        sensitivity("m.onnx", "calib", None)
    for kw in ({"val_images": 0}, {"threads": 0}):
        with pytest.raises(ConfigError):
            sensitivity("m.onnx", "calib", "val", **kw)


# ---------------------------------------------------------------------------------------------
# targeted: the target's rule, the search, the cache entry, the report


@pytest.mark.parametrize("kw, ok", [
    ({"agreement": 1.0}, True), ({"agreement": 1e-9}, True), ({"agreement": 0.0}, False),
    ({"agreement": 1.0001}, False), ({"top1_drop": 0.0}, True), ({"top1_drop": 99.99}, True),
    ({"top1_drop": 100.0}, False), ({"top1_drop": -0.01}, False), ({}, False),
    ({"agreement": 0.9, "top1_drop": 0.3}, False),
])
def test_target_bounds(kw, ok):
    from xception_trt.errors import ConfigError

    if ok:
        Target(**kw)
    else:
        with pytest.raises(ConfigError):
            Target(**kw)


def _row(agreement=1.0, top1=None):
    return NodeSensitivity("n", "", None, agreement, 0.0, 0.0, 0.0, top1)


def test_target_met_at_exactly_its_limit():
    from xception_trt.errors import ConfigError

    t = Target(agreement=0.75)
    assert t.met(_row(0.75), None) and not t.met(_row(0.7499), None)
    assert t.describe() == "agreement >= 75%"
    d = Target(top1_drop=0.5)
    assert d.describe() == "top-1 drop <= 0.5 pp"
    assert d.met(_row(top1=0.800), 0.805) and not d.met(_row(top1=0.7949), 0.800)
    assert d.met(_row(top1=0.9), 0.8)  # better than FP32
    with pytest.raises(ConfigError, match="top-1 drop target needs labelled"):
        d.met(_row(top1=None), 0.8)
    with pytest.raises(ConfigError, match="top-1 drop target needs labelled"):
        d.met(_row(top1=0.8), None)
    assert Target(top1_drop=0.3).to_dict() == {"agreement": None, "top1_drop_pp": 0.3}


def test_choose_nodes_bisects_to_the_shortest_prefix():
    from xception_trt.precision.targeted import choose_nodes

    ranked = ["a", "b", "c", "d", "e", "f", "g", "h"]
    calls = []

    def needs(k):
        def meets(nodes):
            calls.append(tuple(nodes))
            return len(nodes) >= k
        return meets

    assert choose_nodes(ranked, needs(3)) == (("a", "b", "c"), 5)
    assert calls == [(), tuple(ranked), ("a", "b", "c", "d"), ("a", "b"), ("a", "b", "c")]
    assert choose_nodes(ranked, needs(0)) == ((), 1)
    assert choose_nodes(ranked, needs(9)) is None
    assert choose_nodes(ranked, needs(8)) == (tuple(ranked), 5)
    assert choose_nodes(ranked, needs(1)) == (("a",), 5)


def test_a_split_needs_two_images():
    from xception_trt.errors import CalibrationError

    one = EvalImages(np.zeros((1, 1)), None, SimpleNamespace(records=(1,), class_names=(),
                                                             root=None, ignored=()))
    with pytest.raises(CalibrationError, match=r"needs at least 2 validation images .*got 1"):
        split_images(one, seed=0)


def test_targeted_result_summary_and_table():
    from xception_trt.precision.targeted import TargetedResult

    rows = {"fp32": NodeSensitivity("fp32", "-", None, 1.0, 0.0, 0.0, 0.0, 0.5),
            "int8-targeted": NodeSensitivity("t", "", None, 0.875, 0.0123, 1.5, 0.1, None)}
    res = TargetedResult(None, Path("/m.onnx"), ("n1",), Target(agreement=0.8), "miss",
                         Path("/c.json"), rows, rows, True,
                         {"fp32": 3 * 2**20, "int8-targeted": 2**20},
                         {"fp32": 1.23456, "int8-targeted": 0.5},
                         {"selection": 4, "heldout": 5}, 3, None, {"cache": "hit"}, 2.34567)
    s = res.summary()
    assert s["path"] == "/m.onnx" and s["kept_nodes"] == ["n1"] and s["cache"] == "miss"
    assert s["cache_path"] == "/c.json" and s["evaluations"] == 3 and s["ranking"] is None
    assert s["ort_latency_ms"] == {"fp32": 1.235, "int8-targeted": 0.5}
    assert s["seconds"] == 2.346 and s["met_on_heldout"] is True
    assert s["size_bytes"] == {"fp32": 3 * 2**20, "int8-targeted": 2**20}
    assert s["target"] == {"agreement": 0.8, "top1_drop_pp": None}
    assert s["heldout"]["int8-targeted"]["agreement"] == 0.875
    assert res.format_table().splitlines() == [
        "held-out images: 5 (nodes chosen on 4 other images)",
        "variant         agree%        KL   max|d|   top1%     MiB  ORT ms",
        "-" * 65,
        "fp32            100.00         0        0   50.00    3.00    1.23",
        "int8-targeted    87.50    0.0123      1.5       -    1.00    0.50"]
    bare = TargetedResult(None, None, (), Target(agreement=0.8), "off", None, {}, {}, False,
                          {}, {}, {"selection": 1, "heldout": 1}, 0, None, {}, 0.0)
    assert bare.summary()["path"] is None and bare.summary()["cache_path"] is None


def test_read_choice_only_takes_an_entry_for_this_key(tmp_path):
    from xception_trt.precision.targeted import _CACHE_FORMAT, _CACHE_VERSION, _read_choice

    key = {"graph": "g", "seed": 1}
    path = tmp_path / "c.json"

    def write(**entry):
        path.write_text(json.dumps({"format": _CACHE_FORMAT, "version": _CACHE_VERSION,
                                    "key": key, "kept_nodes": ["a"]} | entry))

    write()
    assert _read_choice(path, key, {"a", "b"}) == ("a",)
    assert _read_choice(path, key | {"seed": 2}, {"a"}) is None
    assert _read_choice(path, key, {"b"}) is None  # a node this graph does not have
    write(version=_CACHE_VERSION + 1)
    assert _read_choice(path, key, {"a"}) is None
    write(format="other")
    assert _read_choice(path, key, {"a"}) is None
    write(kept_nodes="a")
    assert _read_choice(path, key, {"a"}) is None
    path.write_text("[1]")
    assert _read_choice(path, key, {"a"}) is None
    path.write_text("{nope")
    assert _read_choice(path, key, {"a"}) is None
    assert _read_choice(tmp_path / "missing.json", key, {"a"}) is None


# ---------------------------------------------------------------------------------------------
# ONNX Runtime placement: the options that do not apply, the version, the entry point


def test_ort_placement_refuses_options_that_do_not_apply():
    from xception_trt.config import Placement, Precision
    from xception_trt.errors import ConfigError

    check = int8_mod._check_target
    check(Placement.TENSORRT, high=Precision.FP16, int8_weights=True, import_cache="c")
    check(Placement.ONNXRUNTIME, high=Precision.FP32, int8_weights=False, import_cache=None)
    cases = [
        (dict(high=Precision.FP16, int8_weights=False, import_cache=None),
         "placement onnxruntime keeps what is not quantized in fp32 (ONNX Runtime's CPU provider "
         "has no fast fp16 kernels): drop high_precision=fp16, or use placement tensorrt for "
         "engines"),
        (dict(high=Precision.FP32, int8_weights=True, import_cache=None),
         "placement onnxruntime always stores the weights as INT8 initializers: drop "
         "int8_weights"),
        (dict(high=Precision.FP32, int8_weights=False, import_cache="c.json"),
         "an imported cache holds symmetric scales for the TensorRT placement; placement "
         "onnxruntime calibrates its own (asymmetric) ranges: give calibration images instead "
         "(its scales are cached in cache_dir)"),
    ]
    for kw, message in cases:
        with pytest.raises(ConfigError) as err:
            check(Placement.ONNXRUNTIME, **kw)
        assert str(err.value) == message
    for kw in ({"placement": "tensorrt"}, {"target": "tensorrt"}):
        with pytest.raises(ConfigError, match=r"^ort_int8 always places for onnxruntime; call "
                                              r"quantize_int8 with placement= for another "
                                              r"placement$"):
            int8_mod.ort_int8("m.onnx", "calib", **kw)


def test_ort_version_is_the_installed_one_or_unknown(monkeypatch):
    import importlib.metadata as md

    assert int8_mod._ort_version() == md.version("onnxruntime")

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "version", missing)
    assert int8_mod._ort_version() == "unknown"


def test_ort_int8_asks_quantize_int8_for_the_onnxruntime_placement(monkeypatch):
    from xception_trt.config import Placement

    seen = {}

    def fake(model, data, **kw):
        seen.update(model=model, data=data, **kw)
        return "result"

    monkeypatch.setattr(int8_mod, "quantize_int8", fake)
    assert int8_mod.ort_int8("m.onnx", "calib", method="max", num_images=3) == "result"
    assert seen == {"model": "m.onnx", "data": "calib", "placement": Placement.ONNXRUNTIME,
                    "method": "max", "num_images": 3}


def _mock_targeted(monkeypatch, held_paths=frozenset(), agreement_of=None, saved=None):
    """The targeted flow with its heavy parts replaced: images are real, calibration and ONNX
    Runtime are doubles. ``agreement_of(nodes)`` answers for a graph with those nodes kept."""
    model = SimpleNamespace(ByteSize=lambda: 100, kept=None)

    class Scorer2:
        def __init__(self, fp32_model, imgs, *, threads=2):
            self.images, self.threads = imgs, threads
            self.reference = np.zeros((len(imgs), 3))
            self.fp32_top1 = None

        def score(self, m, *, node, op_type="", module=None):
            kept = getattr(m, "kept", None)
            agree = 1.0 if agreement_of is None or kept is None else agreement_of(kept)
            return NodeSensitivity(node, op_type, module, agree, 0.0, 0.0, 0.0, None)

        def compare(self, logits, *, node, op_type, module):
            return NodeSensitivity(node, op_type, module, 1.0, 0.0, 0.0, 0.0, None)

        def latency_ms(self, m, iterations=10):
            return 2.0

    qres = SimpleNamespace(model=model, scales={"t": 0.5}, method=int8_mod.CalibrationMethod.MAX,
                           summary=lambda: {"cache": "off"})
    ranked = ["n1", "n2", "n3"]
    for name, value in {
        "as_model": lambda m: (model, None), "check_source": lambda m: META,
        "calibrate_full": lambda *a, **k: qres, "quantized_nodes": lambda m: ranked,
        "graph_sha256": lambda m: "ab" * 32, "Scorer": Scorer2,
        "rank_nodes": lambda *a, **k: SimpleNamespace(rows=[SimpleNamespace(node=n)
                                                            for n in ranked]),
        "to_int8_weights": lambda m: m,
        "strip_qdq": lambda m, nodes: SimpleNamespace(ByteSize=lambda: 50 + len(nodes),
                                                      kept=tuple(nodes)),
        "_record_choice": lambda *a: None,
        "save_model": lambda m, out: saved.append(out) or Path(out),
    }.items():
        monkeypatch.setattr(targeted_mod, name, value)


def test_targeted_search_caches_its_choice_and_reuses_it(seven_images, monkeypatch, tmp_path):
    saved = []
    # two nodes must stay in FP32 to reach the target
    _mock_targeted(monkeypatch, agreement_of=lambda kept: 0.5 + 0.25 * len(kept), saved=saved)
    t = Target(agreement=0.99)
    first = targeted_int8("m.onnx", None, seven_images, target=t, cache_dir=tmp_path,
                          output=tmp_path / "out.onnx")
    assert first.kept == ("n1", "n2") and first.cache == "miss" and first.evaluations == 4
    assert first.cache_path.parent == tmp_path and first.cache_path.name.startswith(
        "abababababababab-targeted-")
    entry = json.loads(first.cache_path.read_text())
    assert entry["kept_nodes"] == ["n1", "n2"] and entry["ranking"] == ["n1", "n2", "n3"]
    assert entry["key"]["target"] == {"agreement": 0.99, "top1_drop_pp": None}
    assert first.path == tmp_path / "out.onnx" and saved == [tmp_path / "out.onnx"]
    assert first.sizes == {"fp32": 100, "int8": 100, "int8-targeted": 52}
    assert first.latency_ms == {"fp32": 2.0, "int8": 2.0, "int8-targeted": 2.0}
    again = targeted_int8("m.onnx", None, seven_images, target=t, cache_dir=tmp_path)
    assert again.cache == "hit" and again.kept == ("n1", "n2") and again.evaluations == 0
    assert again.ranking is None and again.path is None
    other = targeted_int8("m.onnx", None, seven_images, target=Target(agreement=0.7),
                          cache_dir=tmp_path)  # another target: another key
    assert other.cache == "miss" and other.kept == ("n1",)
    assert targeted_int8("m.onnx", None, seven_images, target=t).cache == "off"


def test_an_unreachable_target_is_refused_with_what_was_reached(seven_images, monkeypatch):
    from xception_trt.errors import CalibrationError, ConfigError

    _mock_targeted(monkeypatch, agreement_of=lambda kept: 0.5)
    with pytest.raises(CalibrationError) as err:
        targeted_int8("m.onnx", None, seven_images, target=Target(agreement=0.99))
    assert str(err.value) == (
        "the target agreement >= 99% cannot be met on the 3 selection image(s) even with all 3 "
        "quantized nodes kept in FP32 (agreement 50.00%); relax the target, or use "
        "--precision fp16")
    with pytest.raises(ConfigError, match=r"needs labelled validation images"):
        targeted_int8("m.onnx", None, seven_images, target=Target(top1_drop=0.3))
    with pytest.raises(ConfigError, match=r"an accuracy target needs validation images"):
        targeted_int8("m.onnx", None, None, target=Target(agreement=0.9))
    with pytest.raises(ConfigError):
        targeted_int8("m.onnx", None, seven_images, target=Target(agreement=0.9), val_images=0)


# ---------------------------------------------------------------------------------------------
# what the sensitivity and targeted flows hand on (recorded by doubles)


def test_calibrate_full_hands_every_option_to_quantize_int8(monkeypatch):
    from xception_trt.precision import sensitivity as sens

    seen = {}
    monkeypatch.setattr(sens, "quantize_int8", lambda m, d, **kw: seen.update(m=m, d=d, **kw))
    progress = object()
    sens.calibrate_full("model", "calib", method="max", num_images=7, seed=3, batch_size=2,
                        cache_dir="c", progress=progress)
    assert seen == {"m": "model", "d": "calib", "method": "max", "num_images": 7, "seed": 3,
                    "batch_size": 2, "cache_dir": "c", "progress": progress,
                    "int8_weights": False}


def test_sensitivity_flow_passes_the_model_images_and_calibration(monkeypatch):
    from xception_trt.precision import sensitivity as sens

    calls = {}
    model = object()
    qres = SimpleNamespace(model="qdq", method=int8_mod.CalibrationMethod.ENTROPY,
                           summary=lambda: {"cache": "hit"})
    monkeypatch.setattr(sens, "as_model", lambda m: (model, None))
    monkeypatch.setattr(sens, "check_source", lambda m: META)
    monkeypatch.setattr(sens, "calibrate_full", lambda m, d, **kw: calls.update(
        cal=(m, d, kw)) or qres)
    monkeypatch.setattr(sens, "load_images", lambda v, meta, **kw: calls.update(
        img=(v, meta, kw)) or "images")
    monkeypatch.setattr(sens, "Scorer", lambda m, imgs, threads: calls.update(
        scorer=(m, imgs, threads)) or "scorer")
    monkeypatch.setattr(sens, "rank_nodes", lambda q, s, **kw: calls.update(
        rank=(q, s, kw)) or sens.SensitivityResult((), None, NodeSensitivity(
            "x", "-", None, 1.0, 0.0, 0.0, 0.0), 3, "entropy", 1.0))
    res = sens.sensitivity("m.onnx", "calib", "val", val_images=3, seed=5, threads=1,
                           num_images=9, batch_size=4, cache_dir="c")
    assert calls["cal"] == (model, "calib", {"method": sens.CalibrationMethod.ENTROPY,
                                             "num_images": 9, "seed": 5, "batch_size": 4,
                                             "cache_dir": "c", "progress": None})
    assert calls["img"] == ("val", META, {"num_images": 3, "seed": 5})
    assert calls["scorer"] == (model, "images", 1)
    assert calls["rank"] == ("qdq", "scorer", {"method": "entropy", "progress": None})
    assert res.calibration == {"cache": "hit"}


def test_plots_need_the_plot_extra(monkeypatch):
    import sys

    from xception_trt.errors import DependencyError
    from xception_trt.precision.sensitivity import SensitivityResult, plot_sensitivity

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    a = NodeSensitivity("add", "Add", None, 0.5, 0.0, 2.0, 0.5)
    with pytest.raises(DependencyError, match=r"xception-trt\[plot\]"):
        plot_sensitivity(SensitivityResult((a,), None, a, 8, "max", 1.0), "x.png")


def test_one_row_seconds_per_node_and_ranking_time():
    from xception_trt.precision.sensitivity import SensitivityResult, rank_nodes

    a = NodeSensitivity("add", "Add", None, 0.5, 0.0, 2.0, 0.5)
    assert SensitivityResult((a,), None, a, 8, "max", 3.0).to_dict()["seconds_per_node"] == 3.0
    assert SensitivityResult((), None, a, 8, "max", 3.0).to_dict()["seconds_per_node"] == 3.0
    res = rank_nodes(_qdq_graph(), Scorer(_fp32_graph(), _images(), threads=1))
    assert isinstance(res.seconds, float) and res.seconds > 0


def test_targeted_flow_reports_progress_logs_and_measures_each_variant(seven_images,
                                                                       monkeypatch, caplog):
    calls = {"rank": [], "latency": []}
    _mock_targeted(monkeypatch, agreement_of=lambda kept: 0.5 + 0.25 * len(kept))
    real_rank = targeted_mod.rank_nodes
    monkeypatch.setattr(targeted_mod, "rank_nodes", lambda q, s, **kw: calls["rank"].append(
        (q, s.images, kw)) or real_rank(q, s, **kw))
    real_scorer = targeted_mod.Scorer

    class Timing(real_scorer):
        def latency_ms(self, m, iterations=10):
            calls["latency"].append(m)
            return 2.0

    monkeypatch.setattr(targeted_mod, "Scorer", Timing)
    seen = []
    with caplog.at_level("INFO", logger="xception_trt.precision.targeted"):
        res = targeted_int8("m.onnx", None, seven_images, target=Target(agreement=0.99), seed=5,
                            progress=lambda *a: seen.append(a))
    (q, imgs, kw), = calls["rank"]
    assert q is not None and len(imgs) == 3 and kw["method"] == "max"
    assert [a for a in seen if a[0] == "choose nodes"] == [
        ("choose nodes", i, None) for i in range(1, 5)]
    assert len(calls["latency"]) == 3 and calls["latency"][2].kept == ("n1", "n2")
    msgs = [r.getMessage() for r in caplog.records]
    assert "targeted INT8: 0 node(s) kept -> agreement 0.5000, KL 0: misses" in msgs
    assert "targeted INT8: 2 node(s) kept -> agreement 1.0000, KL 0: meets" in msgs
    assert msgs[-1] == ("targeted INT8: 2 of 3 node(s) kept in FP32; held-out meets the target "
                        "(agreement >= 99%)")
    assert res.kept == ("n1", "n2")


def test_cache_key_and_split_keep_what_they_describe(seven_images, tmp_path, caplog):
    from xception_trt.precision.targeted import _cache_key, _read_choice

    images = load_images(seven_images, META, num_images=None, seed=0)
    sel, _ = split_images(images, seed=0)
    q1 = SimpleNamespace(scales={"a": 0.5}, method=int8_mod.CalibrationMethod.MAX)
    q2 = SimpleNamespace(scales={"a": 0.25}, method=int8_mod.CalibrationMethod.MAX)
    t = Target(agreement=0.9)
    k1 = _cache_key("g", q1, sel, t, 0)
    assert k1 != _cache_key("g", q2, sel, t, 0) and k1 == _cache_key("g", q1, sel, t, 0)
    assert k1["method"] == "max" and k1["seed"] == 0 and k1["graph"] == "g"
    (tmp_path / "c.json").write_text(json.dumps({"format": "x"}))
    with caplog.at_level("INFO", logger="xception_trt.precision.targeted"):
        assert _read_choice(tmp_path / "c.json", k1, {"a"}) is None
    assert caplog.records[-1].getMessage() == (
        f"targeted INT8: no usable cached choice in {tmp_path / 'c.json'}; searching")


def test_split_keeps_the_class_names(folder_with_a_broken_image):
    images = load_images(folder_with_a_broken_image, META, num_images=None, seed=0)
    for part in split_images(images, seed=1):
        assert part.dataset.class_names == ("cat", "dog")
        assert part.dataset.root == images.dataset.root


def test_record_choice_adds_the_kept_nodes_and_target_to_the_metadata():
    from onnx import TensorProto, helper

    from xception_trt.config import InputFormat, Precision
    from xception_trt.onnx_meta import read_metadata, write_metadata
    from xception_trt.precision.targeted import _record_choice

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 71, 71])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             ["N", 3, 71, 71])])
    model = helper.make_model(graph)
    write_metadata(model, {"model_spec": SPEC, "precision": Precision.INT8,
                           "input_format": InputFormat.FLOAT_NCHW,
                           "calibration": {"excluded_nodes": ["e"], "quantized_nodes": 10}})
    _record_choice(model, ("n1", "n2"), Target(top1_drop=0.5))
    calib = json.loads(read_metadata(model).raw["calibration"])
    assert calib["excluded_nodes"] == ["e", "n1", "n2"] and calib["quantized_nodes"] == 8
    assert calib["targeted"] == {"kept_nodes": ["n1", "n2"],
                                 "target": {"agreement": None, "top1_drop_pp": 0.5}}


def test_top1_target_message():
    from xception_trt.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        Target(top1_drop=0.5).met(_row(top1=None), 0.8)
    assert str(err.value) == ("a top-1 drop target needs labelled validation images (class "
                              "sub-folders); use --target-agreement for unlabelled images")
