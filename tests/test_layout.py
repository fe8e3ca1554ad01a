"""ModelOpt's Q/DQ placement kept as a layout (:mod:`xception_trt.precision.layout`): a cache
hit needs no worker, a new method needs no ModelOpt placement, and a layout file that is not
ours, not current or not intact is never used."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest

from xception_trt.errors import CalibrationError
from xception_trt.precision import fastcalib, quantize_int8
from xception_trt.precision import int8 as int8_mod
from xception_trt.precision.layout import apply_layout, make_layout

KW = dict(num_images=8, batch_size=4)


@pytest.fixture(scope="module")
def first(fp32_path, calib_folder, tmp_path_factory):
    """A calibrating run (cache miss, ModelOpt places the graph) that keeps its layout."""
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("out") / "miss.onnx"
    res = quantize_int8(fp32_path, calib_folder, method="entropy", cache_dir=cache, output=out,
                        **KW)
    return res, cache


def _layout_files(cache):
    return sorted(cache.glob("*-layout-*.onnx")), sorted(cache.glob("*-layout-*.json"))


def test_a_miss_keeps_the_layout_small(first, fp32_path):
    res, cache = first
    onnx_files, entries = _layout_files(cache)
    assert res.cache == "miss" and len(onnx_files) == 1 and len(entries) == 1
    # The weights stay in the source graph: the layout holds the placement and weight scales.
    assert onnx_files[0].stat().st_size < 0.2 * fp32_path.stat().st_size


def test_a_hit_runs_no_worker_and_writes_the_same_bytes(first, fp32_path, calib_folder,
                                                        tmp_path, monkeypatch):
    res, cache = first

    def no_worker(*a, **k):
        raise AssertionError("a cache hit with a layout started the worker")

    monkeypatch.setattr(int8_mod, "run_worker", no_worker)
    hit = quantize_int8(fp32_path, calib_folder, method="entropy", cache_dir=cache,
                        output=tmp_path / "hit.onnx", **KW)
    assert hit.cache == "hit"
    assert hit.path.read_bytes() == res.path.read_bytes()
    assert hit.quantized_nodes == res.quantized_nodes and hit.scales == res.scales


@pytest.mark.parametrize("method,seed", [("max", 0), ("percentile", 0), ("entropy", 1)])
def test_a_new_method_calibrates_here_and_equals_modelopts_placement(
        method, seed, first, fp32_path, calib_folder, tmp_path, monkeypatch):
    """A miss on a graph with a layout: one pass in this process over the tensors the layout
    quantizes, no worker, and the bytes of a fresh run that ModelOpt places (entropy with
    another seed: another image set, so not the fixture's hit)."""
    _, cache = first
    fresh = quantize_int8(fp32_path, calib_folder, method=method, seed=seed,
                          cache_dir=tmp_path / "fresh", output=tmp_path / "b.onnx", **KW)
    measured = []
    real = fastcalib.calibrate_scales

    def spy(*a, **k):
        measured.extend(k["tensors"])
        return real(*a, **k)

    def no_worker(*a, **k):
        raise AssertionError("a miss with a layout started the worker")

    monkeypatch.setattr(fastcalib, "calibrate_scales", spy)
    monkeypatch.setattr(int8_mod, "run_worker", no_worker)
    with_layout = quantize_int8(fp32_path, calib_folder, method=method, seed=seed,
                                cache_dir=cache, output=tmp_path / "a.onnx", **KW)
    assert with_layout.cache == fresh.cache == "miss"
    assert with_layout.path.read_bytes() == fresh.path.read_bytes()
    assert with_layout.scales == fresh.scales
    # Only the quantized activations were measured (each one once).
    assert sorted(measured) == sorted(fresh.scales)


def test_a_miss_here_reports_its_progress(first, fp32_path, calib_folder, tmp_path):
    _, cache = first
    seen = []
    res = quantize_int8(fp32_path, calib_folder, method="max", seed=4, cache_dir=cache,
                        output=tmp_path / "a.onnx", progress=lambda *a: seen.append(a), **KW)
    assert res.cache == "miss"
    batches = KW["num_images"] // KW["batch_size"]
    assert [a for a in seen if a[0] == "calibrate max"] == [
        ("calibrate max", i, batches) for i in range(1, batches + 1)]


@pytest.mark.parametrize("text, shown", [("std::bad_alloc\nmore detail", "std::bad_alloc"),
                                         ("", "")])
def test_a_failing_pass_here_is_one_calibration_error(text, shown, first, fp32_path,
                                                     calib_folder, tmp_path, monkeypatch):
    _, cache = first

    def oom(*a, **k):
        raise MemoryError(text)

    monkeypatch.setattr(fastcalib, "calibrate_scales", oom)
    out = tmp_path / "a.onnx"
    with pytest.raises(CalibrationError,
                       match=r"^INT8 calibration failed in ONNX Runtime: MemoryError: "
                             + shown + "$"):
        quantize_int8(fp32_path, calib_folder, method="max", seed=3, cache_dir=cache,
                      output=out, **KW)
    assert not out.exists()


def test_modelopts_own_calibrators_still_run_in_the_worker(first, fp32_path, calib_folder,
                                                           tmp_path, monkeypatch):
    _, cache = first
    started = []
    real = int8_mod.run_worker

    def worker(*a, **k):
        started.append(a[0]["jobs"][0]["method"])
        return real(*a, **k)

    monkeypatch.setattr(int8_mod, "run_worker", worker)
    monkeypatch.setenv("XCEPTION_TRT_FAST_CALIBRATION", "0")
    res = quantize_int8(fp32_path, calib_folder, method="max", seed=2, cache_dir=cache,
                        output=tmp_path / "a.onnx", **KW)
    assert res.cache == "miss" and started == ["max"]


@pytest.mark.parametrize("damage", ["bytes", "key", "format"])
def test_a_damaged_or_foreign_layout_is_not_used(damage, first, fp32_path, calib_folder,
                                                 tmp_path, caplog):
    res, cache = first
    copy = tmp_path / "cache"
    copy.mkdir()
    for f in cache.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (onnx_file,), (entry_file,) = _layout_files(copy)
    if damage == "bytes":
        data = bytearray(onnx_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        onnx_file.write_bytes(bytes(data))
    else:
        entry = json.loads(entry_file.read_text())
        if damage == "key":
            entry["key"]["graph"] = "0" * 64
        else:
            entry["format"] = "something-else"
        entry_file.write_text(json.dumps(entry))
    with caplog.at_level(logging.WARNING, logger="xception_trt.precision"):
        again = quantize_int8(fp32_path, calib_folder, method="entropy", cache_dir=copy,
                              output=tmp_path / "again.onnx", **KW)
    assert "layout" in caplog.text and "ModelOpt places the graph again" in caplog.text
    assert again.path.read_bytes() == res.path.read_bytes()


def test_apply_layout_refuses_what_does_not_fit(first, fp32_path, calib_folder, tmp_path):
    _, cache = first
    source = onnx.load(str(fp32_path))
    # ModelOpt's output is the FP32-weight Q/DQ form (the INT8 weights are written after it)
    res = quantize_int8(fp32_path, calib_folder, method="entropy", cache_dir=cache,
                        int8_weights=False, output=tmp_path / "qdq.onnx", **KW)
    layout = make_layout(onnx.load(str(res.path)), source)
    with pytest.raises(CalibrationError, match="not a Q/DQ layout"):
        apply_layout(b"not onnx", source, res.scales)
    with pytest.raises(CalibrationError, match="MISSING-SCALES"):
        apply_layout(layout, source, dict(list(res.scales.items())[1:]))
    other = onnx.load(str(fp32_path))
    first_init = other.graph.initializer[0]
    first_init.dims[0] += 1  # same name, another shape
    with pytest.raises(CalibrationError, match="is not the source graph's"):
        apply_layout(layout, other, res.scales)
    evil = onnx.load_from_string(layout)
    evil.graph.node[0].op_type = "Loop"
    with pytest.raises(CalibrationError, match="adds op"):
        apply_layout(evil.SerializeToString(), source, res.scales)


def test_the_default_cache_is_per_user_not_the_current_folder(fp32_path, calib_folder, tmp_path,
                                                              monkeypatch):
    """Nothing is written outside the place named: without cache_dir the scales (and the
    layout) go to $XDG_CACHE_HOME/xception-trt/calibration, never ./calibration/cache."""
    from xception_trt.precision import DEFAULT_CACHE_DIR

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    res = quantize_int8(fp32_path, calib_folder, method="max", **KW)
    where = tmp_path / "xdg" / "xception-trt" / "calibration"
    assert res.cache_path is not None and res.cache_path.parent == where
    assert res.cache_path.is_file() and _layout_files(where)[0]
    assert list(work.iterdir()) == []
    assert str(DEFAULT_CACHE_DIR) == str(where)


# A small graph built here (no ModelOpt): seven ReLUs in a chain and a MatMul with a weight;
# "ModelOpt's placement" puts a QuantizeLinear/DequantizeLinear pair after each ReLU.
_N_ACT = 7


def _source():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes, prev = [], "x"
    for i in range(_N_ACT):
        nodes.append(helper.make_node("Relu", [prev], [f"a{i}"], name=f"Relu_{i}"))
        prev = f"a{i}"
    nodes.append(helper.make_node("MatMul", [prev, "w"], ["y"], name="MatMul_0"))
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _placed(source):
    import numpy as np
    from onnx import helper, numpy_helper

    placed = onnx.ModelProto()
    placed.CopyFrom(source)
    g = placed.graph
    nodes = []
    for node in g.node:
        nodes.append(node)
        if node.op_type != "Relu":
            continue
        a = node.output[0]
        node.output[0] = f"{a}_raw"
        nodes.append(helper.make_node("QuantizeLinear", [f"{a}_raw", f"{a}_scale", f"{a}_zp"],
                                      [f"{a}_q"], name=f"{a}_QuantizeLinear"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{a}_q", f"{a}_scale", f"{a}_zp"],
                                      [a], name=f"{a}_DequantizeLinear"))
        g.initializer.extend([numpy_helper.from_array(np.float32(1.0), f"{a}_scale"),
                              numpy_helper.from_array(np.int8(0), f"{a}_zp")])
    del g.node[:]
    g.node.extend(nodes)
    return placed


def _scales():
    return {f"a{i}_raw": 0.5 + i for i in range(_N_ACT)}


def test_apply_layout_rebuilds_the_placed_graph_with_the_scales():
    from onnx import numpy_helper

    source = _source()
    layout = make_layout(_placed(source), source)
    model = apply_layout(layout, source, _scales())
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert inits["w"].tolist() == numpy_helper.to_array(source.graph.initializer[0]).tolist()
    assert {f"a{i}_scale": float(inits[f"a{i}_scale"]) for i in range(_N_ACT)} == {
        f"a{i}_scale": 0.5 + i for i in range(_N_ACT)}
    assert [p.key for p in model.metadata_props] == []


@pytest.mark.parametrize("rename", ["input", "output"])
def test_apply_layout_refuses_other_inputs_or_outputs(rename):
    source = _source()
    layout = onnx.load_from_string(make_layout(_placed(source), source))
    getattr(layout.graph, rename)[0].name = "other"
    with pytest.raises(CalibrationError, match="^the layout's inputs/outputs are not the source "
                                               "graph's$"):
        apply_layout(layout.SerializeToString(), source, _scales())


@pytest.mark.parametrize("bend", ["absent", "type", "shape"])
def test_apply_layout_refuses_a_placeholder_the_source_lacks(bend):
    import numpy as np
    from onnx import numpy_helper

    source = _source()
    layout = make_layout(_placed(source), source)
    other = _source()
    weight = {"absent": numpy_helper.from_array(np.zeros((4, 4), np.float32), "v"),
              "type": numpy_helper.from_array(np.zeros((4, 4), np.float64), "w"),
              "shape": numpy_helper.from_array(np.zeros((4, 5), np.float32), "w")}[bend]
    other.graph.initializer[0].CopyFrom(weight)
    with pytest.raises(CalibrationError, match="^the layout's initializer 'w' is not the source "
                                               "graph's$"):
        apply_layout(layout, other, _scales())


def test_apply_layout_needs_each_scale_initializer():
    source = _source()
    layout = onnx.load_from_string(make_layout(_placed(source), source))
    for init in layout.graph.initializer:
        if init.name == "a3_scale":
            init.name = "a3_scale_gone"
    with pytest.raises(CalibrationError, match="^the layout has no scale initializer "
                                               "'a3_scale'$"):
        apply_layout(layout.SerializeToString(), source, _scales())


@pytest.mark.parametrize("given, text", [
    (2, "MISSING-SCALES 5 quantized activation(s) have no scale: a2_raw, a3_raw, a4_raw, "
        "a5_raw, a6_raw"),
    (1, "MISSING-SCALES 6 quantized activation(s) have no scale: a1_raw, a2_raw, a3_raw, "
        "a4_raw, a5_raw ..."),
])
def test_missing_scales_name_the_first_five(given, text):
    source = _source()
    layout = make_layout(_placed(source), source)
    scales = dict(list(_scales().items())[:given])
    with pytest.raises(CalibrationError) as err:
        apply_layout(layout, source, scales)
    assert str(err.value) == text


_KEY = {"graph": "ab" * 32, "exclusions": [], "modelopt": "0.1"}


def _messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "xception_trt.precision.layout"]


def test_read_layout_says_why_a_kept_layout_is_not_used(tmp_path, caplog):
    from xception_trt.precision.layout import layout_paths, read_layout, write_layout

    write_layout(tmp_path, _KEY, b"layout bytes")
    assert read_layout(tmp_path, _KEY) == b"layout bytes"
    entry, data = layout_paths(tmp_path, _KEY)
    data.write_bytes(b"layout bytez")
    with caplog.at_level(logging.WARNING, logger="xception_trt.precision.layout"):
        assert read_layout(tmp_path, _KEY) is None
        entry.write_text("{not json")
        assert read_layout(tmp_path, _KEY) is None
        entry.write_text(json.dumps({"format": "something-else"}))
        assert read_layout(tmp_path, _KEY) is None
    assert _messages(caplog) == [
        f"Q/DQ layout {data} does not match its entry's hash (changed or truncated); ModelOpt "
        "places the graph again",
        f"Q/DQ layout {entry} is unreadable; ModelOpt places the graph again",
        f"Q/DQ layout {entry} is not for this graph and options; ModelOpt places the graph "
        "again"]


def test_activation_quantizers_leave_out_weights_however_they_are_fed():
    """A QuantizeLinear of an initializer, of an Identity of one or of a Constant quantizes a
    weight (its scale is part of the layout); of the input, or of an Identity of an activation,
    an activation (its scale is calibrated)."""
    from onnx import TensorProto, helper, numpy_helper

    from xception_trt.precision.layout import activation_quantizers, layout_activations

    inits = [numpy_helper.from_array(np.ones((2, 2), np.float32), "W"),
             numpy_helper.from_array(np.ones((2, 2), np.float32), "V"),
             numpy_helper.from_array(np.float32(0.1), "s")]
    nodes = [
        helper.make_node("QuantizeLinear", ["X", "s"], ["Xq"], name="q_input"),
        helper.make_node("QuantizeLinear", ["W", "s"], ["Wq"], name="q_init"),
        helper.make_node("Identity", ["V"], ["Vi"]),
        helper.make_node("QuantizeLinear", ["Vi", "s"], ["Vq"], name="q_identity_of_init"),
        helper.make_node("Constant", [], ["C"],
                         value=numpy_helper.from_array(np.ones(2, np.float32))),
        helper.make_node("QuantizeLinear", ["C", "s"], ["Cq"], name="q_constant"),
        helper.make_node("Relu", ["X"], ["R"]),
        helper.make_node("Identity", ["R"], ["Ri"]),
        helper.make_node("QuantizeLinear", ["Ri", "s"], ["Rq"], name="q_identity_of_act"),
        helper.make_node("QuantizeLinear", ["Ri", "s"], ["Rq2"], name="q_again"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info(o, TensorProto.INT8, None)
         for o in ("Xq", "Wq", "Vq", "Cq", "Rq", "Rq2")], inits)
    model = helper.make_model(graph)
    assert [n.name for n in activation_quantizers(model)] == ["q_input", "q_identity_of_act",
                                                              "q_again"]
    assert layout_activations(model.SerializeToString()) == ["X", "Ri"]  # each once
    assert layout_activations(b"not a model") == []


def test_write_layout_failing_is_a_warning(tmp_path, caplog):
    from xception_trt.precision.layout import layout_paths, write_layout

    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder goes")
    with caplog.at_level(logging.WARNING, logger="xception_trt.precision.layout"):
        write_layout(blocker, _KEY, b"layout bytes")
    (message,) = _messages(caplog)
    _, data = layout_paths(blocker, _KEY)
    assert message.startswith(f"Q/DQ layout {data} could not be written (")
    assert message.endswith("); the next run places the graph with ModelOpt again")
