"""DeepStream export: the nvinfer preprocessing it configures reproduces ours numerically, and
every key it writes is one NVIDIA documents. Running DeepStream itself is UNVERIFIED here."""

from __future__ import annotations

import configparser
import json

import numpy as np
import pytest

from xception_trt.cli import main
from xception_trt.config import ModelSpec
from xception_trt.deepstream import (
    PROBABILITIES,
    apply_nvinfer_preprocess,
    export_deepstream,
    nvinfer_preprocess,
)
from xception_trt.errors import ConfigError
from xception_trt.preprocess import normalize, preprocess_uint8

ort = pytest.importorskip("onnxruntime")

#: Keys of Gst-nvinfer's [property] group: the macros of gstnvinfer_property_parser.h
#: (DeepStream 6.x sources: github.com/hiennguyen9874/deepstream-sources,
#: sources/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.h), which are the keys of the
#: property table of https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/
#: DS_plugin_gst-nvinfer.html ("Gst-nvinfer Property Group Supported Keys").
NVINFER_KEYS = {
    "parse-func", "gie-unique-id", "process-mode", "interval", "labelfile-path", "gpu-id",
    "secondary-reinfer-interval", "output-tensor-meta", "enable-dla", "use-dla-core",
    "batch-size", "tensor-meta-pool-size", "network-mode", "model-engine-file",
    "int8-calib-file", "workspace-size", "output-blob-names", "is-classifier", "network-type",
    "force-implicit-batch-dim", "infer-dims", "output-io-formats", "layer-device-precision",
    "model-color-format", "net-scale-factor", "offsets", "mean-file", "maintain-aspect-ratio",
    "symmetric-padding", "scaling-filter", "scaling-compute-hw", "network-input-order",
    "input-tensor-from-meta", "custom-lib-path", "parse-bbox-func-name",
    "parse-bbox-instance-mask-func-name", "engine-create-func-name",
    "parse-classifier-func-name", "custom-network-config", "model-file", "proto-file",
    "uff-file", "uff-input-order", "input-dims", "uff-input-dims", "uff-input-blob-name",
    "tlt-encoded-model", "tlt-model-key", "onnx-file", "num-detected-classes", "enable-dbscan",
    "cluster-mode", "classifier-type", "classifier-threshold", "classifier-async-mode",
    "segmentation-threshold", "segmentation-output-order", "output-instance-mask",
    "input-object-min-width", "input-object-min-height", "input-object-max-width",
    "input-object-max-height", "operate-on-gie-id", "operate-on-class-ids",
    "filter-out-class-ids",
}
#: deepstream-app groups and keys: sources/apps/apps-common/src/deepstream_config_file_parser.c
#: (github.com/Kwull/deepstream-4.0.1) and, for [application], the reference application's
#: documentation https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/
#: DS_ref_app_deepstream.html (Configuration Groups).
APP_KEYS = {
    "application": {"enable-perf-measurement", "perf-measurement-interval-sec",
                    "gie-kitti-output-dir"},
    "source0": {"enable", "type", "camera-width", "camera-height", "camera-fps-n",
                "camera-fps-d", "camera-csi-sensor-id", "camera-v4l2-dev-node", "uri",
                "latency", "num-sources", "intra-decode-enable", "num-decode-surfaces",
                "num-extra-surfaces", "drop-frame-interval", "camera-id", "gpu-id",
                "nvbuf-memory-type"},
    "streammux": {"enable-padding", "width", "height", "batch-size", "batched-push-timeout",
                  "live-source", "gpu-id", "nvbuf-memory-type"},
    "primary-gie": {"enable", "batch-size", "model-engine-file", "config-file",
                    "labelfile-path", "gie-unique-id", "operate-on-gie-id", "bbox-border-color",
                    "bbox-bg-color", "operate-on-class-ids", "interval", "infer-raw-output-dir",
                    "gpu-id", "nvbuf-memory-type"},
    "osd": {"enable", "process-mode", "border-width", "border-color", "text-size",
            "text-color", "text-bg-color", "font", "show-clock", "clock-x-offset",
            "clock-y-offset", "clock-text-size", "clock-color", "gpu-id", "nvbuf-memory-type"},
    "sink0": {"enable", "type", "width", "height", "sync", "qos", "container", "codec",
              "bitrate", "iframeinterval", "output-file", "source-id", "rtsp-port", "udp-port",
              "display-id", "overlay-id", "offset-x", "offset-y", "gpu-id",
              "nvbuf-memory-type"},
}

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _read(path) -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(path)
    return cfg


def _configured(cfg: configparser.ConfigParser):
    """net-scale-factor and offsets as nvinfer reads them (float32)."""
    prop = cfg["property"]
    scale = np.float32(float(prop["net-scale-factor"]))
    offsets = np.array([float(v) for v in prop["offsets"].split(";")], dtype=np.float32)
    return scale, offsets


@pytest.mark.parametrize("mean,std", [((0.5,) * 3, (0.5,) * 3), ((0.4, 0.5, 0.6), (0.25,) * 3),
                                      ((0.485, 0.456, 0.406), (0.226,) * 3)])
def test_scale_and_offsets_reproduce_our_normalisation(mean, std):
    spec = ModelSpec(num_classes=4, width=0.125, middle_blocks=2, input_size=71, mean=mean,
                     std=std)
    pre = nvinfer_preprocess(spec)
    assert not pre.folded
    pixels = np.random.default_rng(0).integers(0, 256, (2, 71, 71, 3), dtype=np.uint8)
    np.testing.assert_allclose(apply_nvinfer_preprocess(pixels, pre), normalize(pixels, spec),
                               rtol=0, atol=2e-6)


def test_per_channel_std_is_folded():
    spec = ModelSpec(num_classes=4, width=0.125, middle_blocks=2, input_size=71, **IMAGENET)
    pre = nvinfer_preprocess(spec)
    assert pre.folded and pre.net_scale_factor == 1.0 and pre.offsets == (0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def imagenet_std_onnx(tmp_path_factory):
    """A tiny float-nchw model whose per-channel std differs (ImageNet normalisation)."""
    import torch

    from xception_trt.export import export_onnx
    from xception_trt.model import build_xception

    spec = ModelSpec(num_classes=4, width=0.125, middle_blocks=2, input_size=71,
                     labels=("cat", "dog", "fox", "o;wl"), **IMAGENET)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ds") / "imagenet_std.onnx"
    export_onnx(build_xception(spec=spec).eval(), path, check_parity=False)
    return path


@pytest.mark.parametrize("key", ["float", "uint8", "imagenet"])
def test_configured_pipeline_reproduces_our_runner(key, tiny_onnx_files, imagenet_std_onnx,
                                                   image_folder, tmp_path):
    """Pixels -> the configured y = scale * (x - offsets) -> the exported graph gives our
    runner's probabilities."""
    from xception_trt.classifier import Classifier, softmax

    model = imagenet_std_onnx if key == "imagenet" else tiny_onnx_files[key]
    res = export_deepstream(model, tmp_path / "ds", batch_size=2)
    images = sorted(p for p in image_folder.rglob("*") if p.is_file())[:6]
    with Classifier(model) as clf:
        want = softmax(clf.logits([str(p) for p in images]))
        spec = clf.spec
    scale, offsets = _configured(_read(res.nvinfer_config))
    assert res.preprocess.folded is (key != "float")
    pixels = np.stack([preprocess_uint8(p, spec) for p in images]).astype(np.float32)
    fed = np.ascontiguousarray((scale * (pixels - offsets)).transpose(0, 3, 1, 2))
    sess = ort.InferenceSession(str(res.onnx), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == [PROBABILITIES]
    got = sess.run(None, {"input": fed})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_every_key_is_documented(tiny_onnx_files, tmp_path):
    for kw in ({}, {"source_kind": "camera", "camera": 1}):
        res = export_deepstream(tiny_onnx_files["float"], tmp_path / str(len(kw)), **kw)
        nvinfer = _read(res.nvinfer_config)
        assert nvinfer.sections() == ["property"]
        assert set(nvinfer["property"]) <= NVINFER_KEYS, set(nvinfer["property"]) - NVINFER_KEYS
        prop = nvinfer["property"]
        assert prop["network-type"] == "1" and prop["infer-dims"] == "3;71;71"
        assert prop["network-mode"] == "0" and prop["model-color-format"] == "0"
        assert (res.directory / prop["onnx-file"]).is_file()
        assert (res.directory / prop["labelfile-path"]).is_file()
        app = _read(res.app_config)
        for group in app.sections():
            assert group in APP_KEYS, group
            assert set(app[group]) <= APP_KEYS[group], (group, set(app[group]) - APP_KEYS[group])
        assert app["primary-gie"]["config-file"] == res.nvinfer_config.name
        assert app["source0"]["type"] == ("1" if kw else "3")


def test_labels_are_one_line_for_a_classifier(imagenet_std_onnx, tmp_path):
    res = export_deepstream(imagenet_std_onnx, tmp_path / "ds")
    text = res.labels.read_text()
    assert text == "cat;dog;fox;o,wl\n"  # a ';' inside a name would split it


def test_deepstream_cli(tiny_onnx_files, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["deepstream", str(tiny_onnx_files["uint8"]), "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["folded"] is True and info["verified"] is False
    assert (out / "config_infer_primary.txt").is_file()
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    for model, needle in ((engine, "needs the ONNX it was built from"),
                          (tiny_checkpoint, "export it first")):
        assert main(["deepstream", str(model), "-o", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err
    with pytest.raises(ConfigError, match="threshold"):
        export_deepstream(tiny_onnx_files["float"], tmp_path / "y", threshold=2.0)
