"""Per-node INT8 sensitivity and accuracy-targeted INT8 (issue 15) on the narrow 71x71 Xception.

One ModelOpt calibration (module fixture) serves every test: the sensitivity and targeted code
work on its Q/DQ graph. A node whose activation scale is corrupted on purpose must rank first,
and the targeted mode must keep it in FP32.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import numpy_helper

from xception_trt.errors import CalibrationError, ConfigError
from xception_trt.onnx_meta import read_metadata
from xception_trt.precision import quantize_int8
from xception_trt.precision import targeted as targeted_mod
from xception_trt.precision.sensitivity import (
    Scorer,
    load_images,
    module_name,
    quantized_nodes,
    rank_nodes,
    sensitivity,
    strip_qdq,
)
from xception_trt.precision.targeted import Target, choose_nodes, split_images, targeted_int8

# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def fp32_path(tiny_onnx_files, image_folder, tmp_path_factory):
    """The tiny model with a sharpened classifier: the random tiny net predicts one class for
    every image (its logits barely depend on the input), so top-1 agreement could not move.
    The Gemm is rescaled to output 100 x (logits - their mean over the test images)."""
    import onnx

    src = tiny_onnx_files["float"]
    model = onnx.load(str(src))
    scorer = Scorer(model, load_images(image_folder, read_metadata(src), num_images=None,
                                       seed=0))
    mean = scorer.reference.mean(axis=0)
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    inits = {i.name: i for i in model.graph.initializer}
    w, b = (numpy_helper.to_array(inits[gemm.input[k]]) for k in (1, 2))
    inits[gemm.input[1]].CopyFrom(numpy_helper.from_array(
        (w * 100).astype(w.dtype), gemm.input[1]))
    inits[gemm.input[2]].CopyFrom(numpy_helper.from_array(
        ((b - mean) * 100).astype(b.dtype), gemm.input[2]))
    path = tmp_path_factory.mktemp("sharp") / "tiny_sharp.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def int8(fp32_path, calib_folder, tmp_path_factory):
    # FP32 weights through Q/DQ: the form sensitivity and strip_qdq work on (and its cache)
    return quantize_int8(fp32_path, calib_folder, method="max", num_images=8, batch_size=4,
                         cache_dir=tmp_path_factory.mktemp("cache15"), int8_weights=False)


@pytest.fixture(scope="module")
def broken(int8, fp32_path, image_folder):
    """The Q/DQ graph with one Conv's input DequantizeLinear scale 1000x its QuantizeLinear's
    (a corrupted scale: that input arrives 1000x too large), on the Conv the clean ranking
    puts last."""
    import onnx

    meta = read_metadata(fp32_path)
    images = load_images(image_folder, meta, num_images=None, seed=0)
    scorer = Scorer(onnx.load(str(fp32_path)), images)
    clean = rank_nodes(int8.model, scorer)
    victim = [r.node for r in clean.rows if r.op_type == "Conv"][-1]
    model = onnx.ModelProto()
    model.CopyFrom(int8.model)
    producers = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == victim)
    dq = producers[node.input[0]]
    scale = next(i for i in model.graph.initializer if i.name == dq.input[1])
    arr = numpy_helper.to_array(scale)
    model.graph.initializer.append(numpy_helper.from_array(
        np.asarray(arr * 1000, dtype=arr.dtype), scale.name + "_corrupt"))
    dq.input[1] = scale.name + "_corrupt"
    return model, victim, scorer, clean


# ---------------------------------------------------------------------------------------------
# graph surgery and names


def test_module_names_from_torchscript_scopes():
    assert module_name("/block1/rep/rep.0/conv1/Conv_output_0") == "block1.rep.0.conv1"
    assert module_name("/conv1/Conv_output_0") == "conv1"
    assert module_name("/fc/Gemm_output_0") == "fc"
    assert module_name("logits") is None
    assert module_name("onnx::Conv_12") is None


def test_strip_qdq_leaves_only_the_kept_nodes_quantized(int8):
    nodes = quantized_nodes(int8.model)
    convs = [n for n in nodes if n.startswith("Conv")]
    assert set(int8.quantized_nodes) <= set(nodes) and len(convs) >= 10
    one = strip_qdq(int8.model, nodes=set(nodes) - {convs[3]})
    assert quantized_nodes(one) == [convs[3]]
    ops = [n.op_type for n in one.graph.node]
    assert ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 2
    assert len(one.graph.initializer) < len(int8.model.graph.initializer)
    none = strip_qdq(int8.model, nodes=nodes)
    assert not {"QuantizeLinear", "DequantizeLinear"} & {n.op_type for n in none.graph.node}
    assert len(quantized_nodes(int8.model)) == len(nodes)  # the input is not changed


# ---------------------------------------------------------------------------------------------
# sensitivity


def test_a_broken_node_ranks_first(broken):
    model, victim, scorer, clean = broken
    result = rank_nodes(model, scorer)
    assert result.rows[0].node == victim
    assert result.rows[0].kl_mean > 10 * result.rows[1].kl_mean
    assert result.rows[0].module is not None  # the exporter's scope names the module
    assert [r.kl_mean for r in result.rows] == sorted((r.kl_mean for r in result.rows),
                                                      reverse=True)
    md = result.to_markdown()
    assert f"| 1 | {victim} |" in md and "| all | int8 (all nodes) |" in md
    doc = result.to_dict()
    assert doc["ranking"][0]["node"] == victim and doc["ranking"][0]["rank"] == 1


def test_sensitivity_reuses_the_calibration(fp32_path, calib_folder, image_folder, int8):
    result = sensitivity(fp32_path, calib_folder, image_folder, method="max", num_images=8,
                         batch_size=4, val_images=8, cache_dir=int8.cache_path.parent)
    assert result.calibration["cache"] == "hit" and result.images == 8
    assert {r.node for r in result.rows} == set(quantized_nodes(int8.model))
    assert result.fp32_top1 is not None and 0.0 <= result.full_int8.agreement <= 1.0


# ---------------------------------------------------------------------------------------------
# targeted mode


def test_choose_nodes_finds_the_shortest_prefix():
    ranked = [f"n{i}" for i in range(20)]
    for need in (set(), {"n0"}, {"n6"}, {"n2", "n13"}, {"n19"}):
        seen = []

        def meets(prefix, need=need, seen=seen):
            seen.append(len(prefix))
            return need <= set(prefix)

        prefix, evals = choose_nodes(ranked, meets)
        want = 0 if not need else 1 + max(int(n[1:]) for n in need)
        assert prefix == tuple(ranked[:want]) and evals == len(seen)
        assert evals <= 2 + 5  # bisection: log2(20) rounded up, plus the two ends
    assert choose_nodes(ranked, lambda prefix: False) is None


def test_target_checks():
    with pytest.raises(ConfigError, match="give one target"):
        Target()
    with pytest.raises(ConfigError, match="give one target"):
        Target(agreement=0.9, top1_drop=0.3)
    with pytest.raises(ConfigError, match="fraction"):
        Target(agreement=99.5)
    with pytest.raises(ConfigError, match="percentage points"):
        Target(top1_drop=-1)


def _patched(monkeypatch, int8, model):
    """Make the targeted mode use ``model`` as its fully quantized graph."""
    import dataclasses

    monkeypatch.setattr(targeted_mod, "calibrate_full",
                        lambda *a, **k: dataclasses.replace(int8, model=model))


def test_targeted_keeps_the_broken_node_and_meets_the_target_on_heldout(
        broken, int8, fp32_path, calib_folder, image_folder, tmp_path, monkeypatch):
    model, victim, _, _ = broken
    _patched(monkeypatch, int8, model)
    out = tmp_path / "t.onnx"
    kw = dict(target=Target(agreement=1.0), method="max", num_images=8, batch_size=4,
              cache_dir=tmp_path / "cache")
    result = targeted_int8(fp32_path, calib_folder, image_folder, output=out, **kw)
    assert victim in result.kept and result.cache == "miss" and result.evaluations >= 2
    assert result.images == {"selection": 8, "heldout": 8}
    assert result.selection["int8-targeted"].agreement == 1.0
    assert result.heldout["int8-targeted"].kl_mean < result.heldout["int8"].kl_mean
    assert result.met_on_heldout == (result.heldout["int8-targeted"].agreement == 1.0)
    assert result.met_on_heldout
    assert set(result.sizes) == set(result.latency_ms) == {"fp32", "int8", "int8-targeted"}
    calib = json.loads(read_metadata(out).raw["calibration"])
    assert calib["targeted"]["kept_nodes"] == list(result.kept)
    assert victim in calib["excluded_nodes"]
    assert "held-out images: 8 (nodes chosen on 8 other images)" in result.format_table()

    # The choice is cached: no ranking, no search the second time, the same nodes.
    def no_ranking(*a, **k):
        raise AssertionError("the ranking ran on a cache hit")

    monkeypatch.setattr(targeted_mod, "rank_nodes", no_ranking)
    again = targeted_int8(fp32_path, calib_folder, image_folder, **kw)
    assert again.cache == "hit" and again.kept == result.kept and again.evaluations == 0
    # Another target is another choice.
    with pytest.raises(AssertionError, match="ranking ran"):
        targeted_int8(fp32_path, calib_folder, image_folder,
                      **dict(kw, target=Target(agreement=0.5)))


def test_selection_and_heldout_images_never_overlap(fp32_path, image_folder):
    meta = read_metadata(fp32_path)
    images = load_images(image_folder, meta, num_images=None, seed=0)
    sel, held = split_images(images, seed=3)
    paths_sel = {r.path for r in sel.dataset.records}
    paths_held = {r.path for r in held.dataset.records}
    assert not paths_sel & paths_held and len(paths_sel) + len(paths_held) == len(images)
    assert len(sel) == len(sel.dataset) and np.array_equal(
        sel.labels, images.labels[[r in paths_sel for r in
                                   (rec.path for rec in images.dataset.records)]])


def test_unreachable_target_is_refused(broken, int8, fp32_path, calib_folder, image_folder,
                                       tmp_path, monkeypatch):
    model, _, _, _ = broken
    _patched(monkeypatch, int8, model)
    monkeypatch.setattr(targeted_mod, "choose_nodes", lambda ranked, meets: None)
    out = tmp_path / "t.onnx"
    with pytest.raises(CalibrationError, match="cannot be met .* even with all"):
        targeted_int8(fp32_path, calib_folder, image_folder, target=Target(agreement=1.0),
                      method="max", num_images=8, batch_size=4, cache_dir=None, output=out)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_sensitivity_writes_table_json_and_plot(fp32_path, calib_folder, image_folder,
                                                    int8, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from xception_trt.cli import main

    out = tmp_path / "sens"
    rc = main(["sensitivity", str(fp32_path), "--calib", str(calib_folder), "--val",
               str(image_folder), "--method", "max", "--num-images", "8", "--batch-size", "4",
               "--val-images", "4", "--cache-dir", str(int8.cache_path.parent), "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| rank | node | module |" in text
    doc = json.loads((out / "sensitivity.json").read_text())
    assert doc["images"] == 4 and doc["calibration"]["cache"] == "hit"
    assert len(doc["ranking"]) == len(quantized_nodes(int8.model))
    assert (out / "sensitivity.md").read_text().startswith("INT8 sensitivity")
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_targeted_quantize(broken, int8, fp32_path, calib_folder, image_folder, tmp_path,
                               capsys, monkeypatch):
    from xception_trt.cli import main

    model, victim, _, _ = broken
    _patched(monkeypatch, int8, model)
    out, report = tmp_path / "t.onnx", tmp_path / "r.json"
    rc = main(["quantize", str(fp32_path), "--precision", "int8", "--calib", str(calib_folder),
               "--val", str(image_folder), "--method", "max", "--num-images", "8",
               "--batch-size", "4", "--target-top1-drop", "0", "--cache-dir",
               str(tmp_path / "c"), "--report", str(report), "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "node(s) kept in FP32" in text and "int8-targeted" in text
    doc = json.loads(report.read_text())["targeted"]
    assert doc["target"] == {"agreement": None, "top1_drop_pp": 0.0}
    assert doc["images"] == {"selection": 8, "heldout": 8}


def test_cli_target_errors_exit_2(fp32_path, calib_folder, image_folder, flat_image_folder,
                                  tmp_path, capsys):
    from xception_trt.cli import main

    out = tmp_path / "o.onnx"
    base = ["quantize", str(fp32_path), "-o", str(out), "--calib", str(calib_folder),
            "--num-images", "8", "--batch-size", "4", "--no-cache"]
    cases = [
        (["--precision", "int8", "--target-agreement", "0.99"], "needs validation images"),
        (["--precision", "int8", "--val", str(image_folder), "--target-agreement", "0.99",
          "--target-top1-drop", "0.3"], "give one target"),
        (["--precision", "int8", "--val", str(image_folder), "--target-agreement", "99.5"],
         "fraction"),
        (["--precision", "fp16", "--val", str(image_folder), "--target-agreement", "0.99"],
         "need --precision int8"),
        (["--precision", "int8", "--val", str(image_folder), "--target-agreement", "0.99",
          "--int8-weights"], "--int8-weights"),
        (["--precision", "int8", "--val", str(flat_image_folder), "--target-top1-drop", "0.3"],
         "labelled validation images"),
        (["--precision", "int8", "--threads", "2"], "--threads only applies with --target"),
        (["--precision", "int8", "--val", str(image_folder), "--target-agreement", "0.99",
          "--placement", "onnxruntime"], "--placement onnxruntime"),
    ]
    for extra, match in cases:
        args = [*base, *extra]
        if "fp16" in extra:
            args.remove("--no-cache")  # an INT8-only flag, refused first
        rc = main(args)
        err = capsys.readouterr().err
        assert rc == 2, extra
        assert err.startswith("error: ") and match in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    rc = main(["sensitivity", str(fp32_path), "--calib", str(calib_folder)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: sensitivity needs --val") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_calibration_eps(monkeypatch):
    import onnxruntime as ort

    from xception_trt.precision.int8 import CALIBRATION_EPS_ENV, calibration_eps

    monkeypatch.delenv(CALIBRATION_EPS_ENV, raising=False)
    eps = calibration_eps()
    assert eps[-1] == "cpu"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert eps == ["cpu"]
    monkeypatch.setenv(CALIBRATION_EPS_ENV, "cuda:0, cpu")
    assert calibration_eps() == ["cuda:0", "cpu"]
