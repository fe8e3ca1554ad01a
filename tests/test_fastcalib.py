"""One-pass calibration (:mod:`xception_trt.precision.fastcalib`) against ModelOpt's own
calibrators, on the narrow 71x71 Xception.

ModelOpt's own calibration runs once per method (module fixture, ``XCEPTION_TRT_FAST_CALIBRATION=0``
in the worker); every comparison reuses it. Each tensor of the test model is small enough to be
histogrammed whole, so the scales must be ModelOpt's to float rounding (``EXACT``); the sampled
histograms of the full model's large tensors are checked against the looser ``SAMPLED`` bound
by forcing sampling here.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from xception_trt.precision import evaluate_variants, fastcalib, quantize_int8
from xception_trt.precision._worker import FAST_CALIBRATION_ENV, FAST_MAX_ENV, fast_calibration
from xception_trt.precision.calibdata import select_calibration
from xception_trt.precision.source import as_model, check_source

#: Relative tolerance of a scale computed from the whole tensor (float32 rounding of the same
#: arithmetic: numpy's histogram and ONNX Runtime's threshold and scale functions).
EXACT = 1e-5
#: Sampled histograms (docs/int8.md): median and largest relative deviation per tensor.
SAMPLED_MEDIAN, SAMPLED_MAX = 0.01, 0.05
#: A non-default percentile, so a calibrator that ignores the option fails.
PERCENTILE = 99.9
KW = dict(num_images=12, batch_size=4, seed=0, cache_dir=None)
METHODS = ("max", "entropy", "percentile")


@pytest.fixture(scope="module")
def modelopt_own(fp32_path, calib_folder):
    """ModelOpt's own calibrator per method: {method: QuantizeResult}."""
    mp = pytest.MonkeyPatch()
    mp.setenv(FAST_CALIBRATION_ENV, "0")
    try:
        own = {m: quantize_int8(fp32_path, calib_folder, method=m, percentile=PERCENTILE, **KW)
               for m in METHODS}
        own["percentile 99"] = quantize_int8(fp32_path, calib_folder, method="percentile",
                                             percentile=99.0, **KW)
        return own
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def batches(fp32_path, calib_folder, tmp_path_factory):
    """The calibration batches quantize_int8 feeds the worker (same selection and order)."""
    model, _ = as_model(fp32_path)
    meta = check_source(model)
    folder = tmp_path_factory.mktemp("batches")
    select_calibration(calib_folder, meta, num_images=KW["num_images"], seed=0,
                       static_batch=None).write(meta, batch_size=KW["batch_size"],
                                                static_batch=None, directory=folder)
    return sorted(folder.glob("batch_*.npz"))


def _deviation(ours: dict, ref: dict) -> np.ndarray:
    assert set(ref) <= set(ours), sorted(set(ref) - set(ours))
    return np.array([abs(ours[k] / ref[k] - 1.0) for k in sorted(ref)])


@pytest.mark.parametrize("method", METHODS)
def test_one_pass_scales_are_modelopts(method, modelopt_own, fp32_path, batches):
    ours = fastcalib.calibrate_scales(str(fp32_path), batches, "input", method=method,
                                      percentile=PERCENTILE)
    dev = _deviation(ours, modelopt_own[method].scales)
    assert dev.max() <= EXACT, (method, dev.max())


@pytest.mark.parametrize("method", METHODS)
def test_a_model_object_gives_the_paths_scales_and_stays_unchanged(method, fp32_path,
                                                                   batches):
    """The calling process hands its loaded graph (a cache miss on a graph with a layout):
    the same scales as from the file, restricted to ``tensors`` when given, and the caller's
    graph is not touched (the pass adds its outputs to a copy)."""
    model = onnx.load(str(fp32_path))
    before = model.SerializeToString()
    from_path = fastcalib.calibrate_scales(str(fp32_path), batches, "input", method=method,
                                           percentile=PERCENTILE)
    some = sorted(from_path)[::3]
    from_model = fastcalib.calibrate_scales(model, batches, "input", method=method,
                                            percentile=PERCENTILE, tensors=some)
    assert from_model == {t: from_path[t] for t in some}
    assert model.SerializeToString() == before


@pytest.mark.parametrize("what", ["entropy bins", "percentile bins", "percentile"])
def test_a_wrong_histogram_leaves_the_tolerance(what, modelopt_own, fp32_path, batches,
                                                monkeypatch):
    """The tolerance has teeth: ModelOpt's bin counts or another percentile move scales out."""
    method = "entropy" if what == "entropy bins" else "percentile"
    pct = PERCENTILE
    if what == "entropy bins":
        monkeypatch.setattr(fastcalib, "ENTROPY_BINS", 2 * fastcalib.ENTROPY_BINS)
    elif what == "percentile bins":
        monkeypatch.setattr(fastcalib, "PERCENTILE_BINS", fastcalib.PERCENTILE_BINS // 2)
    else:
        pct = 99.99
    ours = fastcalib.calibrate_scales(str(fp32_path), batches, "input", method=method,
                                      percentile=pct)
    assert _deviation(ours, modelopt_own[method].scales).max() > EXACT


def test_modelopts_own_percentile_honours_the_option(modelopt_own):
    """ModelOpt's calibrator factory drops the percentile it is given unless the worker passes
    it on (it used to calibrate 99.999 whatever was asked)."""
    dev = _deviation(modelopt_own["percentile 99"].scales, modelopt_own["percentile"].scales)
    assert dev.max() > 0.01


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_sampled_histograms_stay_within_the_stated_tolerance(method, modelopt_own, fp32_path,
                                                             batches):
    """Sampling (every large tensor here, as the full model's) keeps the scales near. The
    percentile is 99 here: the error of a sampled percentile grows as fewer sampled values lie
    above it (a few dozen above 99.9 % of this model's small tensors; docs/int8.md)."""
    ours = fastcalib.calibrate_scales(str(fp32_path), batches, "input", method=method,
                                      percentile=99.0, sample_limit=20_000)
    ref = modelopt_own["percentile 99" if method == "percentile" else method]
    dev = _deviation(ours, ref.scales)
    assert np.median(dev) <= SAMPLED_MEDIAN and dev.max() <= SAMPLED_MAX, (
        np.median(dev), dev.max())
    assert dev.max() > 0  # it did sample


@pytest.mark.parametrize("method", METHODS)
def test_one_pass_int8_is_modelopts_graph_and_accuracy(method, modelopt_own, fp32_path,
                                                       calib_folder, image_folder, monkeypatch):
    """End to end: same placement, same scales, same agreement with FP32 on held-out images."""
    monkeypatch.setenv(FAST_CALIBRATION_ENV, "1")
    fast = quantize_int8(fp32_path, calib_folder, method=method, percentile=PERCENTILE, **KW)
    slow = modelopt_own[method]
    assert fast.quantized_nodes == slow.quantized_nodes
    assert fast.excluded_nodes == slow.excluded_nodes
    assert [n.op_type for n in fast.model.graph.node] == [n.op_type for n in slow.model.graph.node]
    assert _deviation(fast.scales, slow.scales).max() <= EXACT
    rows = {r.name: r for r in evaluate_variants(
        {"fp32": fp32_path, "fast": fast.model, "modelopt": slow.model}, image_folder)}
    assert rows["fast"].agreement == rows["modelopt"].agreement
    # Scales equal to 1e-5 can still move a value across a rounding boundary: near, not equal.
    assert rows["fast"].mean_abs_diff == pytest.approx(rows["modelopt"].mean_abs_diff, rel=0.05)


@pytest.mark.parametrize("env, expected", [
    ({}, {"max": True, "entropy": True, "percentile": True}),
    ({FAST_CALIBRATION_ENV: "0"}, {"max": False, "entropy": False, "percentile": False}),
    ({FAST_MAX_ENV: "0"}, {"max": False, "entropy": True, "percentile": True}),
    ({FAST_CALIBRATION_ENV: "1", FAST_MAX_ENV: "1"}, {"max": True, "entropy": True,
                                                      "percentile": True}),
])
def test_the_switch(env, expected, monkeypatch):
    monkeypatch.delenv(FAST_CALIBRATION_ENV, raising=False)
    monkeypatch.delenv(FAST_MAX_ENV, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert {m: fast_calibration(m) for m in expected} == expected


def test_fp16_range_check_from_one_pass_is_autocasts(fp32_path, calib_folder, monkeypatch):
    """FP16: the nodes kept in FP32 because an activation exceeds ``max_activation`` are the
    ones AutoCast's own reference run keeps, and the graph is the same, byte for byte."""
    from xception_trt.precision import to_fp16

    made = {}
    for fast in ("0", "1"):
        monkeypatch.setenv(FAST_CALIBRATION_ENV, fast)
        made[fast] = to_fp16(fp32_path, calib_folder, num_images=8, batch_size=4,
                             max_activation=2.0)
    from xception_trt.onnx_meta import read_metadata

    kept = read_metadata(made["1"]).json_field("fp16")["fp32_nodes"]
    assert 0 < len(kept) < len(made["1"].graph.node) // 2  # the threshold splits the graph
    assert kept == read_metadata(made["0"]).json_field("fp16")["fp32_nodes"]
    assert made["1"].SerializeToString() == made["0"].SerializeToString()


def _batches_for(path, calib_folder, folder):
    model, _ = as_model(path)
    meta = check_source(model)
    select_calibration(calib_folder, meta, num_images=8, seed=0, static_batch=None).write(
        meta, batch_size=4, static_batch=None, directory=folder)
    return sorted(folder.glob("batch_*.npz"))


@pytest.mark.parametrize("key", ["float", "uint8"])
def test_tensor_ranges_are_every_tensors_min_and_max(key, tiny_onnx_files, calib_folder,
                                                      tmp_path):
    """The FP16 range pass: the min/max of every float tensor over the batches, exactly (the
    Relu outputs and the reshaped/transposed tensors it derives from their inputs included),
    against every tensor fetched from ONNX Runtime and reduced in numpy."""
    import onnx
    import onnxruntime as ort

    path = tiny_onnx_files[key]
    files = _batches_for(path, calib_folder, tmp_path)
    model = onnx.load(str(path))
    names, _ = fastcalib._float_tensors(model, "input")
    derived = fastcalib._derived(model, names)
    ops = {n.output[0]: n.op_type for n in model.graph.node}
    assert sum(ops[t] == "Relu" for t in derived) >= 10  # the rule is exercised ...
    assert any(ops[t] != "Relu" for t in derived)  # ... both of its kinds
    ranges, shapes = fastcalib.tensor_ranges(model, files, "input")
    assert list(ranges) == names

    every = onnx.ModelProto()
    every.CopyFrom(model)
    del every.graph.output[:]
    every.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT,
                                                                 None) for t in names)
    sess = ort.InferenceSession(every.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {"input": np.load(f)["input"]}) for f in files]
    for j, t in enumerate(names):
        lo = min(float(o[j].min()) for o in outs)
        hi = max(float(o[j].max()) for o in outs)
        assert ranges[t] == (lo, hi), t
        assert shapes[t] == outs[0][j].shape, t
    # Negative values reach the Relus, so clipping the derived minimum at 0 matters.
    assert any(ranges[src][0] < 0 for src, relu in derived.values() if relu)


def test_float_activations_are_the_range_pass_tensors(tiny_onnx_files):
    """The worker reuses the ranges measured before ModelOpt's import only when they cover
    exactly the float tensors of AutoCast's type-inferred graph."""
    import onnx

    from xception_trt.precision._worker import _float_activations

    for path in tiny_onnx_files.values():
        model = onnx.load(str(path))
        names, _ = fastcalib._float_tensors(model, "input")
        inferred = onnx.shape_inference.infer_shapes(model)
        assert _float_activations(inferred) == set(names)
        del inferred.graph.value_info[-1]  # a tensor without a type: measure AutoCast's graph
        assert _float_activations(inferred) is None


@pytest.mark.parametrize("key, kw", [
    ("uint8", dict(max_activation=2.0)),
    ("float", dict(max_activation=8.0, exclude_nodes=["Conv_3"], exclude_op_types=["Gemm"])),
    ("static2", dict(max_activation=512.0)),
])
def test_fp16_fast_path_makes_autocasts_graph(key, kw, tiny_onnx_files, calib_folder,
                                              monkeypatch):
    """FP16 with the range pass measured while ModelOpt is imported (and Relu outputs
    derived) gives the graph AutoCast's own reference run gives, byte for byte: uint8 input,
    exclusions, a fixed batch."""
    from xception_trt.onnx_meta import read_metadata
    from xception_trt.precision import to_fp16

    made = {}
    for fast in ("0", "1"):
        monkeypatch.setenv(FAST_CALIBRATION_ENV, fast)
        made[fast] = to_fp16(tiny_onnx_files[key], calib_folder, num_images=8, batch_size=4,
                             **kw)
    kept = read_metadata(made["1"]).json_field("fp16")["fp32_nodes"]
    assert kept == read_metadata(made["0"]).json_field("fp16")["fp32_nodes"]
    if "exclude_nodes" in kw:
        assert {"Conv_3", "Gemm_0"} <= set(kept)
    assert made["1"].SerializeToString() == made["0"].SerializeToString()
