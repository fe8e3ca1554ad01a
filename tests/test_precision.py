"""FP16 (AutoCast) and INT8 Q/DQ (ModelOpt PTQ) variants, the calibration cache, TensorRT
cache import, CPU accuracy, the ``quantize`` CLI, and a TensorRT-RTX build of both variants.

ModelOpt runs in a subprocess per call (~5 s each on 2 cores), so the expensive results are
module-scoped fixtures shared by several tests.
"""

from __future__ import annotations

import json
import logging
import struct
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from xception_trt.errors import CalibrationError, GraphError
from xception_trt.graph import FLOAT_WEIGHTS, INT8_WEIGHTS, int8_weight_form
from xception_trt.onnx_meta import read_metadata
from xception_trt.precision import (
    CalibrationMethod,
    auto_quantize_int8,
    depthwise_conv_nodes,
    evaluate_variants,
    format_table,
    graph_sha256,
    quantize_int8,
    read_trt_calibration_cache,
    to_fp16,
    write_trt_calibration_cache,
)
from xception_trt.precision.cache import read_entry

# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def int8_entropy(fp32_path, calib_folder, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    out = cache.parent / "tiny.int8.onnx"
    return quantize_int8(fp32_path, calib_folder, method="entropy", num_images=8, batch_size=4,
                         cache_dir=cache, output=out)


@pytest.fixture(scope="module")
def fp16_model(fp32_path, calib_folder):
    return to_fp16(fp32_path, calib_folder, num_images=4)



def _inits(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def _activation_scales(model):
    inits, prod = _inits(model), _producers(model)
    out = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            src = prod.get(n.input[0])
            if src is not None and src.op_type in ("Identity", "Constant"):
                continue
            out[n.input[0]] = float(inits[n.input[1]])
    return out


# ---------------------------------------------------------------------------------------------
# INT8 graph structure


def test_int8_qdq_placement_is_what_tensorrt_fuses(int8_entropy, fp32_path):
    model = int8_entropy.model
    inits, prod = _inits(model), _producers(model)
    fp32 = onnx.load(str(fp32_path))
    # Weights: per-channel (axis 0), symmetric (zero point 0), one scale per out channel,
    # stored as INT8 initializers read by the DequantizeLinear (the default int8_weights).
    quantized = set(int8_entropy.quantized_nodes)
    assert quantized, "nothing was quantized"
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in inits
                   for n in model.graph.node)
    for node in model.graph.node:
        if node.name not in quantized or node.op_type != "Conv":
            continue
        w_dq = prod[node.input[1]]
        assert w_dq.op_type == "DequantizeLinear"
        weight = inits[w_dq.input[0]]
        assert weight.dtype == np.int8 and weight.ndim == 4, node.name
        scale, zp = inits[w_dq.input[1]], inits[w_dq.input[2]]
        assert scale.shape == (weight.shape[0],), node.name
        assert zp.dtype == np.int8 and not zp.any(), node.name
        assert {a.name: a.i for a in w_dq.attribute}.get("axis", 1) == 0, node.name
        # Activations: per-tensor symmetric int8.
        a_dq = prod[node.input[0]]
        assert a_dq.op_type == "DequantizeLinear", node.name
        a_zp = inits[a_dq.input[2]]
        assert inits[a_dq.input[1]].size == 1 and a_zp.dtype == np.int8 and not a_zp.any()
    # Depthwise convolutions are among the quantized nodes (excluding them is opt-in).
    assert set(depthwise_conv_nodes(fp32)) <= quantized
    # Residual Add: one input straight from a Conv (TensorRT fuses the add into it), the
    # other through Q/DQ.
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert adds
    for add in adds:
        kinds = sorted(prod[i].op_type for i in add.input)
        assert kinds == ["Conv", "DequantizeLinear"], (add.name, kinds)
    # No Q/DQ on the logits: FP32 output from the classifier Gemm, which stays unquantized.
    assert prod["logits"].op_type == "Gemm"
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert prod["logits"].name in int8_entropy.excluded_nodes
    # Metadata: precision and calibration facts.
    meta = read_metadata(model)
    assert meta.precision.value == "int8"
    calib = meta.json_field("calibration")
    assert calib["method"] == "entropy" and calib["num_images"] == 8
    assert calib["source_graph_sha256"] == graph_sha256(fp32)
    assert calib["quantized_nodes"] == len(quantized)
    assert meta.spec == read_metadata(fp32).spec
    onnx.checker.check_model(model)
    # Written to disk too, and the cache entry exists with the scales of the model.
    assert int8_entropy.path.is_file()
    entry = json.loads(int8_entropy.cache_path.read_text())
    assert entry["scales"] == pytest.approx(_activation_scales(model))
    assert int8_entropy.cache == "miss"


def test_variants_run_on_cpu_and_track_fp32(fp32_path, int8_entropy, fp16_model, image_folder):
    rows = evaluate_variants({"fp32": fp32_path, "fp16": fp16_model,
                              "int8": int8_entropy.path}, image_folder)
    by = {r.name: r for r in rows}
    assert [r.name for r in rows] == ["fp32", "fp16", "int8"]
    assert by["fp32"].max_abs_diff == 0 and by["fp32"].agreement == 100
    assert all(r.images == 16 and r.top1 is not None for r in rows)
    assert by["fp32"].top5 is None  # 4 classes: top-5 is meaningless
    ref = onnx.load(str(fp32_path))
    import onnxruntime as ort

    x = np.random.default_rng(3).standard_normal((4, 3, 71, 71)).astype(np.float32)
    scale = np.abs(ort.InferenceSession(ref.SerializeToString(),
                                        providers=["CPUExecutionProvider"])
                   .run(None, {"input": x})[0]).max()
    # FP16 is close to FP32, INT8 further away but still the same function.
    assert by["fp16"].max_abs_diff < 1e-2 * scale
    assert by["fp16"].max_abs_diff < by["int8"].max_abs_diff < 0.5 * scale
    assert by["int8"].size_bytes < by["fp32"].size_bytes * 1.2
    assert by["fp16"].size_bytes < 0.6 * by["fp32"].size_bytes
    table = format_table(rows)
    assert "int8" in table and "agree%" in table


def test_variants_on_unlabelled_data_report_agreement_only(tiny_onnx_files, flat_image_folder):
    """Unlabelled images (the held-out part of a flat calibration folder): no top-1, but the
    agreement with the reference, from the same bench.evaluate pass as labelled data."""
    from xception_trt.errors import BenchError

    rows = evaluate_variants({"fp32": tiny_onnx_files["float"],
                              "fp32-uint8": tiny_onnx_files["uint8"],
                              "fp32-static2": tiny_onnx_files["static2"]},
                             flat_image_folder, num_images=5)
    assert [r.name for r in rows] == ["fp32", "fp32-uint8", "fp32-static2"]
    assert all(r.images == 5 and r.top1 is None and r.top5 is None for r in rows)
    assert all(r.precision == "fp32" and r.size_bytes > 0 for r in rows)
    # The same network fed raw pixels, or in fixed batches of 2 (the odd image padded).
    for r in rows[1:]:
        assert r.agreement == 100 and r.max_abs_diff < 1e-3, r
    with pytest.raises(BenchError, match="reference variant"):
        evaluate_variants({"int8": tiny_onnx_files["float"]}, flat_image_folder)


def test_fp16_keeps_fp32_io_and_out_of_range_nodes(fp16_model, fp32_path, calib_folder):
    assert fp16_model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert fp16_model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_w = [numpy_helper.to_array(i) for i in fp16_model.graph.initializer if len(i.dims) == 4]
    assert conv_w and all(w.dtype == np.float16 for w in conv_w)
    meta = read_metadata(fp16_model)
    assert meta.precision.value == "fp16"
    assert meta.json_field("fp16")["fp32_nodes"] == []
    # Every activation "exceeds FP16 range" at this threshold: the nodes must stay FP32.
    strict = to_fp16(fp32_path, calib_folder, num_images=4, max_activation=1e-3)
    kept = read_metadata(strict).json_field("fp16")["fp32_nodes"]
    assert len(kept) > 10
    assert any(n.op_type == "Conv" for n in strict.graph.node if n.name in kept)


def test_fp16_worker_reads_the_callers_file_and_refuses_one_changed_meanwhile(
        fp32_path, tmp_path, monkeypatch):
    """Given a path, the worker reads that file (no second copy of the graph is written);
    given a model, a copy; a file rewritten while the worker runs is refused, not mixed with
    the metadata read before."""
    import os
    import shutil

    from xception_trt.precision import fp16

    src = tmp_path / "m.onnx"
    shutil.copyfile(fp32_path, src)
    real, seen = fp16.run_worker, []

    def worker(request, **kw):
        seen.append(request["onnx"])
        result = real(request, **kw)
        if touch:
            st = os.stat(src)
            os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        return result

    monkeypatch.setattr(fp16, "run_worker", worker)
    touch = False
    from_file = to_fp16(src)
    from_model = to_fp16(onnx.load(str(src)))
    assert seen[0] == str(src.resolve()) and seen[1] != seen[0]
    assert from_file.SerializeToString() == from_model.SerializeToString()
    touch = True
    with pytest.raises(GraphError, match=r"m\.onnx changed while it was being converted"):
        to_fp16(src, output=tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


# ---------------------------------------------------------------------------------------------
# calibration cache


def test_cache_hit_skips_calibration_and_reproduces_the_model(int8_entropy, fp32_path,
                                                              calib_folder, tmp_path):
    again = quantize_int8(fp32_path, calib_folder, method="entropy", num_images=8,
                          batch_size=4, cache_dir=int8_entropy.cache_path.parent,
                          output=tmp_path / "hit.int8.onnx")
    assert int8_entropy.cache == "miss"
    assert again.cache == "hit" and again.num_images == 0
    assert again.cache_path == int8_entropy.cache_path
    a, b = _inits(int8_entropy.model), _inits(again.model)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # Bit for bit: the artifact records no run-dependent fact (cache hit/miss), so an engine
    # keyed on the ONNX hash is reused after a cache hit.
    assert again.path.read_bytes() == int8_entropy.path.read_bytes()
    assert "cache" not in read_metadata(again.path).json_field("calibration")


def test_stale_cache_is_never_used(int8_entropy, fp32_path, calib_folder, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    stale = cache_dir / int8_entropy.cache_path.name
    entry = json.loads(int8_entropy.cache_path.read_text())
    entry["key"]["data"] = "0" * 64  # written for other calibration images
    entry["scales"] = {k: v * 100 for k, v in entry["scales"].items()}
    stale.write_text(json.dumps(entry))
    with caplog.at_level(logging.WARNING, logger="xception_trt.precision"):
        res = quantize_int8(fp32_path, calib_folder, method="entropy", num_images=8,
                            batch_size=4, cache_dir=cache_dir)
    assert res.cache == "miss"
    assert "stale" in caplog.text and "calibration images changed" in caplog.text
    assert res.scales == pytest.approx(int8_entropy.scales)
    rewritten = json.loads(stale.read_text())
    assert rewritten["key"] == json.loads(int8_entropy.cache_path.read_text())["key"]


def test_foreign_cache_entries_are_rejected(tmp_path):
    bad = tmp_path / "x.json"
    for text in ("not json", json.dumps({"format": "other"}),
                 json.dumps({"format": "xception-trt-calibration-cache", "version": 1,
                             "key": {}, "scales": {"a": float("nan")}})):
        bad.write_text(text)
        assert read_entry(bad) is None


def test_import_cache_written_for_another_graph_is_an_error(int8_entropy, fp32_path, tmp_path):
    entry = json.loads(int8_entropy.cache_path.read_text())
    entry["key"]["graph"] = "f" * 64
    other = tmp_path / "other.json"
    other.write_text(json.dumps(entry))
    out = tmp_path / "out.onnx"
    with pytest.raises(CalibrationError, match="another graph"):
        quantize_int8(fp32_path, import_cache=other, output=out)
    trt_cache = tmp_path / "other.cache"
    trt_cache.write_text("TRT-8601-EntropyCalibration2\nconv_999_out: 3c010a14\n")
    with pytest.raises(CalibrationError, match="another graph"):
        quantize_int8(fp32_path, import_cache=trt_cache, output=out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.cache", "other.json"]


def test_tensorrt_calibration_cache_import(int8_entropy, fp32_path, tmp_path):
    # A TensorRT 8/10 text cache: header, then tensor: big-endian float32 scale in hex.
    scales = {k: v * 2.0 for k, v in int8_entropy.scales.items()}
    lines = ["TRT-8601-EntropyCalibration2"]
    lines += [f"{k}: {struct.pack('>f', v).hex()}" for k, v in scales.items()]
    lines.append("tensor_not_in_this_graph: 3c010a14")
    path = tmp_path / "calib.cache"
    path.write_text("\n".join(lines) + "\n")
    res = quantize_int8(fp32_path, import_cache=path, int8_weights=True)
    assert res.cache == "imported" and res.num_images == 0
    # int8_weights: Conv weights are INT8 initializers read through DequantizeLinear only.
    inits = {i.name: i for i in res.model.graph.initializer}
    prod = _producers(res.model)
    w_dq = [prod[n.input[1]] for n in res.model.graph.node
            if n.op_type == "Conv" and n.name in res.quantized_nodes]
    assert w_dq and all(d.op_type == "DequantizeLinear" for d in w_dq)
    assert all(inits[d.input[0]].data_type == onnx.TensorProto.INT8 for d in w_dq)
    floats = quantize_int8(fp32_path, import_cache=path, int8_weights=False)
    assert int8_weight_form(floats.model) == FLOAT_WEIGHTS
    assert int8_weight_form(res.model) == INT8_WEIGHTS
    assert res.model.ByteSize() < 0.6 * floats.model.ByteSize()
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((2, 3, 71, 71)).astype(np.float32)
    y = ort.InferenceSession(res.model.SerializeToString(),
                             providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert y.shape == (2, 4) and np.isfinite(y).all()
    got = _activation_scales(res.model)
    assert got.keys() == scales.keys()
    for k, v in scales.items():
        assert got[k] == pytest.approx(v, rel=1e-6)
    # Round trip through our writer.
    back = write_trt_calibration_cache(res.scales, tmp_path / "back.cache")
    assert read_trt_calibration_cache(back) == pytest.approx(res.scales, rel=1e-6)


@pytest.mark.parametrize("text, match", [
    ("", "first line"),
    ("hello\nx: 3c010a14\n", "first line"),
    ("TRT-8601-EntropyCalibration2\nx 3c010a14\n", ":2: expected"),
    ("TRT-8601-EntropyCalibration2\nx: zz010a14\n", ":2: expected"),
    ("TRT-8601-EntropyCalibration2\nx: 7fc00000\n", "finite"),
    ("TRT-8601-EntropyCalibration2\n", "no tensor scales"),
])
def test_malformed_tensorrt_cache(tmp_path, text, match):
    path = tmp_path / "bad.cache"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=match):
        read_trt_calibration_cache(path)


# ---------------------------------------------------------------------------------------------
# methods and --auto


def test_auto_tries_every_method_and_keeps_the_best(fp32_path, image_folder, tmp_path):
    auto = auto_quantize_int8(fp32_path, image_folder, num_images=8, batch_size=4,
                              cache_dir=tmp_path / "cache", output=tmp_path / "best.onnx")
    assert set(auto.results) == {"max", "entropy", "percentile"}
    assert [r.name for r in auto.metrics] == ["fp32", "int8-max", "int8-entropy",
                                             "int8-percentile"]
    assert auto.criterion == "top1"  # class folders: labelled held-out split
    assert all(r.images == 8 for r in auto.metrics)  # 16 images: 8 calibrate, 8 validate
    best_row = max(auto.metrics[1:], key=lambda r: (r.top1, r.agreement, -r.mean_abs_diff))
    assert best_row.name == f"int8-{auto.best.method.value}"
    assert (tmp_path / "best.onnx").is_file()
    # Percentile and entropy clip: no scale above max calibration's, some strictly below.
    mx = auto.results["max"].scales
    for method in ("percentile", "entropy"):
        other = auto.results[method].scales
        assert other.keys() == mx.keys()
        assert all(other[k] <= mx[k] * (1 + 1e-6) for k in mx)
        assert any(other[k] < mx[k] * 0.999 for k in mx)


def test_method_parse():
    assert CalibrationMethod.parse("MAX") is CalibrationMethod.MAX
    with pytest.raises(Exception, match="choose one of"):
        CalibrationMethod.parse("minmax")


def test_integer_options_are_checked(fp32_path, calib_folder):
    from xception_trt.errors import ConfigError

    for bad in (0, True, 2.0):
        with pytest.raises(ConfigError, match="num_images must be a positive integer"):
            quantize_int8(fp32_path, calib_folder, num_images=bad, cache_dir=None)
        with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
            to_fp16(fp32_path, calib_folder, batch_size=bad)
    with pytest.raises(ConfigError, match="high_precision must be fp32 or fp16"):
        quantize_int8(fp32_path, calib_folder, high_precision="int8", cache_dir=None)


# ---------------------------------------------------------------------------------------------
# bad input


def _save_odd_images(folder):
    folder.mkdir()
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(90, 80, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "ok.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    deep = (rng.integers(0, 65536, size=(90, 80))).astype(np.uint16)
    Image.fromarray(deep).save(folder / "deep16.tif")
    assert Image.open(folder / "deep16.tif").mode.startswith("I;16")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def test_odd_images_fewer_than_one_batch_uint8_graph_fp16_rest(tiny_onnx_files, tmp_path):
    folder = tmp_path / "odd"
    _save_odd_images(folder)
    # One call covers: a uint8-nhwc graph, 3 usable images for a batch of 8, a corrupt file,
    # 16-bit TIFF and CMYK images, and FP16 for everything that is not quantized.
    res = quantize_int8(tiny_onnx_files["uint8"], folder, method="max", batch_size=8,
                        high_precision="fp16", exclude_depthwise=True, cache_dir=None)
    # 16-bit TIFF and CMYK go through preprocessing; the corrupt file is skipped and named.
    assert res.num_images == 3 and res.cache == "off"
    assert [p.rsplit("/", 1)[-1] for p, _ in res.skipped_images] == ["corrupt.jpg"]
    model = res.model
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    # Exactly the depthwise convs are kept out (plus the classifier Gemm and the two stem
    # convs ModelOpt skips by its own rules here): names match whole, "Conv_1" is not
    # "Conv_10" (ModelOpt's own matching is a prefix match).
    depthwise = set(depthwise_conv_nodes(tiny_onnx_files["uint8"]))
    assert len(depthwise) >= 10 and res.quantized_nodes
    assert not depthwise & set(res.quantized_nodes)
    assert len(set(res.excluded_nodes) - depthwise) <= 3, res.excluded_nodes
    import onnxruntime as ort

    x = np.random.default_rng(0).integers(0, 256, (2, 71, 71, 3), dtype=np.uint8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x})[0]
    assert y.dtype == np.float32 and y.shape == (2, 4) and np.isfinite(y).all()


def test_empty_and_unreadable_calibration_folders(fp32_path, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out.onnx"
    with pytest.raises(CalibrationError, match="no images found"):
        quantize_int8(fp32_path, empty, output=out, cache_dir=tmp_path / "cache")
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"b{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(CalibrationError, match="none of the 3 calibration image"):
        quantize_int8(fp32_path, bad, output=out, cache_dir=tmp_path / "cache")
    with pytest.raises(CalibrationError, match="needs calibration images"):
        quantize_int8(fp32_path, None, output=out)
    assert not out.exists()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_fixed_batch_graph_with_too_few_images(tiny_onnx_files, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    Image.new("RGB", (80, 80), (10, 20, 30)).save(one / "a.png")
    with pytest.raises(CalibrationError, match="fixed batch 2"):
        quantize_int8(tiny_onnx_files["static2"], one, cache_dir=None)


def test_refuses_non_fp32_sources(int8_entropy, fp16_model, calib_folder):
    with pytest.raises(GraphError, match="Q/DQ"):
        quantize_int8(int8_entropy.model, calib_folder, cache_dir=None)
    with pytest.raises(GraphError, match="fp16 variant"):
        to_fp16(fp16_model)


def test_exclusions_that_match_nothing(fp32_path, calib_folder):
    from xception_trt.errors import ConfigError

    with pytest.raises(ConfigError, match="matches no node"):
        quantize_int8(fp32_path, calib_folder, exclude_nodes=["no_such_node"], cache_dir=None)
    with pytest.raises(ConfigError, match="do not occur"):
        to_fp16(fp32_path, exclude_op_types=["Softmax"])


def test_bad_calibration_array(fp32_path):
    with pytest.raises(CalibrationError, match="shape"):
        quantize_int8(fp32_path, np.zeros((4, 71, 71, 3), np.float32), cache_dir=None)
    with pytest.raises(CalibrationError, match="NaN"):
        quantize_int8(fp32_path, np.full((2, 3, 71, 71), np.nan, np.float32), cache_dir=None)


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_int8_with_table_and_report(fp32_path, calib_folder, image_folder, int8_entropy,
                                        tmp_path, capsys):
    from xception_trt.cli import main

    out, report = tmp_path / "m.int8.onnx", tmp_path / "report.json"
    trt_cache = tmp_path / "m.cache"
    rc = main(["quantize", str(fp32_path), "--precision", "int8", "--calib", str(calib_folder),
               "--num-images", "8", "--batch-size", "4", "--val", str(image_folder),
               "--cache-dir", str(int8_entropy.cache_path.parent),
               "--export-trt-cache", str(trt_cache), "--report", str(report),
               "--no-int8-weights", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    # same graph, images and options as the int8_entropy fixture: how the weights are stored
    # is not part of the cache key
    assert "cache hit" in text
    assert int8_weight_form(onnx.load(str(out))) == FLOAT_WEIGHTS
    for row in ("fp32", "int8"):
        assert any(line.startswith(row + " ") for line in text.splitlines()), row
    data = json.loads(report.read_text())
    assert [r["name"] for r in data["table"]] == ["fp32", "int8"]
    assert data["table"][1]["images"] == 16 and data["table"][1]["top1"] is not None
    assert data["int8"]["cache"] == "hit"
    assert read_metadata(out).precision.value == "int8"
    assert read_trt_calibration_cache(trt_cache) == pytest.approx(int8_entropy.scales, rel=1e-6)


def test_cli_int8_progress_on_a_terminal_keeps_json_clean(fp32_path, calib_folder, tmp_path,
                                                         capsys, monkeypatch):
    from xception_trt.cli import main

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # tqdm shows bars on terminals only
    out = tmp_path / "m.int8.onnx"
    args = ["quantize", str(fp32_path), "--precision", "int8", "--calib", str(calib_folder),
            "--num-images", "8", "--batch-size", "4", "--no-cache", "--json", "-o", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout is the JSON document and nothing else
    assert report["int8"]["num_images"] == 8
    assert int8_weight_form(onnx.load(str(out))) == INT8_WEIGHTS  # the default
    assert "decode calibration images" in captured.err and "8/8" in captured.err
    assert "calibrate entropy" in captured.err and "2/2" in captured.err  # 8 images / 4
    args[-1] = str(tmp_path / "again.int8.onnx")
    assert main([*args, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "calibrate" not in captured.err and json.loads(captured.out)["int8"]


def test_stage_progress_is_silent_off_a_terminal(capsys):
    from xception_trt.cli._common import StageProgress

    with StageProgress() as bars:  # capsys: stderr is not a terminal
        for i in range(1, 4):
            bars("calibrate max", i, 3)
    assert capsys.readouterr().err == ""


def test_cli_choices_come_from_the_enums():
    from xception_trt.cli import build_parser
    from xception_trt.config import Precision
    from xception_trt.precision import HIGH_PRECISIONS

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    opts = {a.dest: a for a in sub.choices["quantize"]._actions}
    assert opts["method"].choices == CalibrationMethod.choices() == ["max", "entropy",
                                                                     "percentile"]
    assert opts["method"].default is None and "default: entropy" in opts["method"].help
    assert opts["high_precision"].choices == [p.value for p in HIGH_PRECISIONS]
    assert set(opts["precision"].choices) == set(Precision.choices()) - {"fp32"}


def test_cli_bad_inputs_exit_2_without_traceback(fp32_path, tmp_path, capsys):
    from xception_trt.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "o.onnx"
    cases = [
        (["--precision", "int8", "--calib", str(empty)], "no images found"),
        (["--precision", "int8"], "--calib"),
        (["--precision", "fp16", "--auto"], "--auto only applies with --precision int8"),
        (["--precision", "int8", "--import-cache", str(tmp_path / "none.cache")],
         "does not exist"),
    ]
    for extra, match in cases:
        rc = main(["quantize", str(fp32_path), "-o", str(out), "--no-cache", *extra])
        err = capsys.readouterr().err
        assert rc == 2, extra
        assert err.startswith("error: ") and match in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# TensorRT-RTX build check (CPU-only build for SM86)


def test_variants_build_with_tensorrt_rtx(fp32_path, int8_entropy, fp16_model, tmp_path,
                                          record_property):
    trt = pytest.importorskip("tensorrt_rtx")

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages = []

        def log(self, severity, msg):
            self.messages.append(msg)

    def build(model):
        logger = Logger()
        logger.min_severity = trt.ILogger.Severity.VERBOSE
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        assert parser.parse(model.SerializeToString()), [
            parser.get_error(i).desc() for i in range(parser.num_errors)]
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        profile.set_shape("input", (1, 3, 71, 71), (2, 3, 71, 71), (4, 3, 71, 71))
        config.add_optimization_profile(profile)
        config.num_compute_capabilities = 1
        config.set_compute_capability(trt.ComputeCapability.SM86, 0)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        plan = builder.build_serialized_network(network, config)
        assert plan is not None and plan.nbytes > 0
        layers = next((m for m in logger.messages if m.startswith("Layers:")), "")
        return [ln for ln in layers.splitlines() if ln.startswith("Name: ")]

    for name, model in (("fp32", onnx.load(str(fp32_path))), ("fp16", fp16_model),
                        ("int8", int8_entropy.model)):
        layers = build(model)
        int8_layers = [ln for ln in layers if "Datatype: Int8" in ln
                       and ("LayerType: correlation" in ln or "LayerType: Convolution" in ln)]
        record_property(f"{name}_int8_conv_layers", len(int8_layers))
        if name == "int8":
            # Information, not a requirement: does TensorRT-RTX keep INT8 convolutions?
            print(f"TensorRT-RTX {trt.__version__} SM86: {len(int8_layers)} of "
                  f"{sum('correlation' in ln or 'Convolution' in ln for ln in layers)} "
                  "conv layers take INT8 inputs")
        else:
            assert not int8_layers


def test_cli_build_takes_a_qdq_graph_without_calibration(int8_entropy, calib_folder, tmp_path,
                                                         capsys):
    """``build`` on the output of ``quantize`` (already Q/DQ) needs no --calib and refuses one
    it would not use."""
    from xception_trt.cli import main

    src = str(int8_entropy.path)
    for extra, match in ((["--calib", str(calib_folder)], "the calibration images would not "
                          "be used — drop --calib"),
                         (["--calib-method", "max"], "drop --calib-method")):
        assert main(["build", src, "-o", str(tmp_path / "no"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and match in err and "int8 graph" in err, err
    assert not (tmp_path / "no").exists()
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds engines on the CPU")
    rc = main(["build", src, "-o", str(tmp_path / "e"), "--flavour", "tensorrt_rtx", "--cc",
               "sm86", "--max-batch", "2", "--json", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    (engine,) = json.loads(out)
    assert engine["precision"] == "int8" and engine["engine"].endswith("tiny.int8.engine")
