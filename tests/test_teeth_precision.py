"""Tests with teeth for precision/ (issue 31): the KL direction against a value worked by hand,
unreadable validation images dropped so that records, pixels and labels stay lined up, held-out
rows measured on the held-out images only, and ONNX Runtime calibration cache entries keyed by the
onnxruntime version. The targeted search and the quantizer's worker are replaced by doubles where
they are not what is tested (the flow and the key are), so no calibration runs here.
"""

from __future__ import annotations

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
