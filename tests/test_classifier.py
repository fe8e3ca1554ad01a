"""Classifier (the application API) and the ``xception-trt infer`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xception_trt.classifier import Classifier, Prediction
from xception_trt.cli import main
from xception_trt.errors import ConfigError, DataError
from xception_trt.runners import TorchRunner


@pytest.fixture(scope="module")
def images(image_folder) -> list:
    return sorted(image_folder.rglob("*_0.*"))[:3] + sorted(image_folder.rglob("*_1.*"))[:1]


def test_classify_agrees_across_backends(tiny_checkpoint, tiny_onnx_files, images, tiny_spec):
    results = {}
    for key, path in (("torch", tiny_checkpoint), ("float", tiny_onnx_files["float"]),
                      ("uint8", tiny_onnx_files["uint8"])):
        with Classifier(path, batch_size=3) as clf:  # 4 images -> batches of 3 and 1
            results[key] = clf.classify(images, top_k=4)
    for preds in results["torch"]:
        assert len(preds) == 4
        probs = [p.probability for p in preds]
        assert probs == sorted(probs, reverse=True)
        assert abs(sum(probs) - 1.0) < 1e-6
        assert {p.label for p in preds} == set(tiny_spec.labels)
        assert all(p.label == tiny_spec.labels[p.index] for p in preds)
    for key in ("float", "uint8"):
        for a, b in zip(results["torch"], results[key]):
            assert [p.index for p in a] == [p.index for p in b]
            assert max(abs(p.probability - q.probability) for p, q in zip(a, b)) < 1e-4


def test_single_image_inputs_and_top_k(tiny_model, images):
    from PIL import Image

    runner = TorchRunner(tiny_model)
    clf = Classifier(runner)
    one = clf.classify(str(images[0]), top_k=2)
    assert len(one) == 1 and len(one[0]) == 2 and isinstance(one[0][0], Prediction)
    arr = np.asarray(Image.open(images[0]).convert("RGB"))
    assert [p.index for p in clf.classify(arr, top_k=2)[0]] == [p.index for p in one[0]]
    assert [p.index for p in clf.classify(images[0].read_bytes(), top_k=2)[0]] == \
        [p.index for p in one[0]]
    assert one[0][0].to_dict().keys() == {"label", "index", "probability"}
    clf.close()
    assert not runner.closed  # the caller owns a runner it passed in
    runner.close()


def test_classifier_bad_inputs(tiny_model, tmp_path, images):
    with Classifier(TorchRunner(tiny_model)) as clf:
        for k in (0, -1, 1.5, True):
            with pytest.raises(ConfigError, match="top_k must be a positive integer"):
                clf.classify(images, top_k=k)
        assert len(clf.classify(images[:1], top_k=9)[0]) == 4  # capped at the classes
        with pytest.raises(DataError, match="no images"):
            clf.classify([])
        with pytest.raises(DataError, match="does not exist"):
            clf.classify([tmp_path / "missing.jpg"])
        bad = tmp_path / "bad.jpg"
        bad.write_bytes(b"definitely not a jpeg")
        with pytest.raises(DataError, match="bad.jpg"):
            clf.classify([images[0], bad])
    with pytest.raises(ConfigError, match="batch_size"):
        Classifier(TorchRunner(tiny_model), batch_size=0)


def test_infer_cli_text_and_json(tiny_onnx_files, images, capsys, tiny_spec):
    argv = ["infer", str(tiny_onnx_files["float"]), str(images[0]), str(images[1]),
            "--top-k", "2", "--threads", "1"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    # one line per image with its top-k, then the summary (issue 28 item 7g)
    assert [ln.split("  ")[0] for ln in lines[:2]] == [str(images[0]), str(images[1])]
    assert all(ln.count("%") == 2 for ln in lines[:2])
    assert lines[2:] == ["2 of 2 image(s) classified with onnxruntime-fp32"]
    assert main(argv + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["runner"] == "onnxruntime-fp32"
    assert [r["image"] for r in doc["results"]] == [str(images[0]), str(images[1])]
    preds = doc["results"][0]["predictions"]
    assert len(preds) == 2 and preds[0]["label"] in tiny_spec.labels
    assert preds[0]["probability"] >= preds[1]["probability"]


def test_infer_cli_errors_exit_2(tmp_path, tiny_onnx_files, images, capsys):
    (tmp_path / "m.tflite").write_bytes(b"x")
    cases = [
        (["infer", str(tmp_path / "m.tflite"), str(images[0])], "unknown model type"),
        (["infer", str(tiny_onnx_files["float"]), str(tmp_path / "nope.png")], "does not exist"),
        (["infer", str(tiny_onnx_files["float"]), str(images[0]), "--device", "cuda"],
         "does not take option"),
    ]
    for argv, match in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and match in err
        assert "Traceback" not in err and err.count("\n") == 1
