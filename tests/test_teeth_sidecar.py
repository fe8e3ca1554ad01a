"""Tests with teeth for sidecar.py and deepstream.py (issue 31): a profile whose min, opt and max
all differ keeps each in its place (the recorded fixture has opt equal to max, so a swap hid);
the deepstream-app configuration marks network and camera sources live and file:// ones not.
"""

from __future__ import annotations

import configparser
import json

import pytest
from test_sidecar import _old

from xception_trt.deepstream import export_deepstream
from xception_trt.sidecar import EngineSidecar, Profile

MIN, OPT, MAX = (1, 3, 71, 71), (4, 3, 71, 71), (16, 3, 71, 71)


def test_profile_min_opt_max_keep_their_places():
    p = Profile(MIN, OPT, MAX)  # positional, as the builder makes it
    assert (p.min[0], p.opt[0], p.max[0]) == (1, 4, 16)
    assert p.to_dict() == {"min": list(MIN), "opt": list(OPT), "max": list(MAX)}
    raw = _old() | {"profile": {"max": list(MAX), "min": list(MIN), "opt": list(OPT)},
                    "max_batch": 16}
    side = EngineSidecar.from_dict(raw)
    assert side.profile == Profile(MIN, OPT, MAX)
    assert side.profile.opt == OPT and side.profile.max == MAX and side.max_batch == 16
    back = json.loads(side.to_json())
    assert back["profile"] == {"min": list(MIN), "opt": list(OPT), "max": list(MAX)}
    assert EngineSidecar.from_json(side.to_json()) == side


@pytest.mark.parametrize("kw, live", [
    ({"source": "rtsp://cam.local:8554/stream"}, 1),
    ({"source": "http://host/video.mp4"}, 1),
    ({"source": "file:///data/video.mp4"}, 0),
    ({}, 0),  # the placeholder is a file:// URI to edit
    ({"source_kind": "camera", "camera": 2}, 1),
])
def test_deepstream_live_source_flag(tiny_onnx_files, tmp_path, kw, live):
    res = export_deepstream(tiny_onnx_files["float"], tmp_path / "ds", **kw)
    app = configparser.ConfigParser()
    app.read(res.app_config)
    assert app["streammux"]["live-source"] == str(live)
    if "source" in kw:
        assert app["source0"]["uri"] == kw["source"] and app["source0"]["type"] == "3"
    if kw.get("source_kind") == "camera":
        assert app["source0"]["type"] == "1"
        assert app["source0"]["camera-v4l2-dev-node"] == "2"


def test_deepstream_configs_word_for_word(tiny_onnx_files, tmp_path):
    """Every value differs from its neighbour's default (batch 3, 640x480, GPU 1, threshold
    0.25), so a value written under the wrong key shows. The model normalises with mean 0.5 and
    std 0.5 on every channel: nvinfer's scale 1 / (255 x 0.5) and offsets 255 x 0.5."""
    from xception_trt import __version__

    res = export_deepstream(tiny_onnx_files["float"], tmp_path / "o", batch_size=3, width=640,
                            height=480, threshold=0.25, gpu_id=1, source="rtsp://h/s")
    head = f"# Written by xception-trt {__version__}. UNVERIFIED: not run with DeepStream here."
    assert res.nvinfer_config.read_text().splitlines() == [
        head,
        "# Preprocessing: y = (x/255 - mean)/std with mean=(0.5, 0.5, 0.5) std=(0.5, 0.5, 0.5).",
        "# nvinfer resizes the whole frame to infer-dims (no centre crop).", "", "[property]",
        "gpu-id=1", f"net-scale-factor={1 / (255 * 0.5)!r}", "offsets=127.5;127.5;127.5",
        "model-color-format=0", "onnx-file=tiny_float.deepstream.onnx",
        "model-engine-file=tiny_float.deepstream.onnx_b3_gpu1_fp32.engine",
        "labelfile-path=labels.txt", "batch-size=3", "network-mode=0", "network-type=1",
        "process-mode=1", "infer-dims=3;71;71", "network-input-order=0",
        "output-blob-names=probabilities", "classifier-threshold=0.25",
        "classifier-async-mode=0", "gie-unique-id=1", "maintain-aspect-ratio=0"]
    assert res.app_config.read_text().splitlines() == [
        head, "# Run: deepstream-app -c deepstream_app_config.txt", "",
        "[application]", "enable-perf-measurement=1", "perf-measurement-interval-sec=5", "",
        "[source0]", "enable=1", "type=3", "uri=rtsp://h/s", "num-sources=1", "gpu-id=1", "",
        "[streammux]", "gpu-id=1", "live-source=1", "batch-size=3",
        "batched-push-timeout=40000", "width=640", "height=480", "enable-padding=0", "",
        "[primary-gie]", "enable=1", "gpu-id=1", "batch-size=3", "gie-unique-id=1",
        "config-file=config_infer_primary.txt", "",
        "[osd]", "enable=1", "gpu-id=1", "text-size=15", "",
        "[sink0]", "enable=1", "type=1", "sync=0"]
    assert res.labels.read_text() == "cat;dog;fox;owl\n"
    assert res.directory == tmp_path / "o" and res.onnx == tmp_path / "o" / (
        "tiny_float.deepstream.onnx") and res.onnx.is_file()
    assert res.engine.name == "tiny_float.deepstream.onnx_b3_gpu1_fp32.engine"
    assert res.preprocess.offsets == (127.5, 127.5, 127.5) and not res.preprocess.folded
    cam = export_deepstream(tiny_onnx_files["float"], tmp_path / "c", source_kind="camera",
                            camera=4, width=320, height=240)
    app = configparser.ConfigParser()
    app.read(cam.app_config)
    assert dict(app["source0"]) == {
        "enable": "1", "type": "1", "camera-v4l2-dev-node": "4", "camera-width": "320",
        "camera-height": "240", "camera-fps-n": "30", "camera-fps-d": "1", "gpu-id": "0"}


@pytest.mark.parametrize("kw, match", [
    ({"batch_size": 0}, "batch_size"),
    ({"width": 0}, "width"), ({"width": 32769}, "width"), ({"height": 0}, "height"),
    ({"height": 32769}, "height"), ({"gpu_id": -1}, "gpu_id"), ({"camera": -1}, "camera"),
    ({"gpu_id": 2**31}, "gpu_id"), ({"camera": 2**31}, "camera"),
    ({"threshold": -0.01}, r"threshold must be a probability in \[0, 1\], got -0.01"),
    ({"threshold": 1.01}, r"threshold must be a probability in \[0, 1\], got 1.01"),
    ({"source": "file:///a.mp4\n[sink1]"}, "holds a line break"),
    ({"source": ""}, "holds a line break"),
    ({"source_kind": "camera", "source": "rtsp://x"},
     r"a camera source reads /dev/video0, not the URI 'rtsp://x'"),
])
def test_deepstream_refuses_values_out_of_range(tiny_onnx_files, tmp_path, kw, match):
    from xception_trt.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        export_deepstream(tiny_onnx_files["float"], tmp_path / "o", **kw)
    assert not (tmp_path / "o").exists()


def test_deepstream_limits_themselves_are_accepted(tiny_onnx_files, tmp_path):
    res = export_deepstream(tiny_onnx_files["float"], tmp_path / "o", width=32768, height=1,
                            threshold=1.0, gpu_id=0)
    app = configparser.ConfigParser()
    app.read(res.app_config)
    assert app["streammux"]["width"] == "32768" and app["streammux"]["height"] == "1"


def test_deepstream_wants_our_onnx_not_an_engine(tmp_path):
    from xception_trt.errors import ConfigError

    for name, match in (("m.engine", "is a TensorRT engine; DeepStream needs the ONNX"),
                        ("m.plan", "is a TensorRT engine"),
                        ("m.safetensors", "is not an ONNX file; export it first")):
        with pytest.raises(ConfigError, match=match):
            export_deepstream(tmp_path / name, tmp_path / "o")


# ---------------------------------------------------------------------------------------------
# the sidecar: every refusal says what and how to rebuild; the reader checks the engine itself


REBUILD = "rebuild the engine with `xception-trt build`"
FIX = "rebuild it with `xception-trt build MODEL.onnx -o DIR`"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: [1], "s.json is not an xception-trt engine sidecar; " + REBUILD),
    (lambda d: d | {"schema": 2}, "s.json has sidecar schema 2, newer than this xception-trt "
     "(1); upgrade: pip install -U xception-trt"),
    (lambda d: d | {"schema": "1"}, "s.json has sidecar schema '1', newer than this "
     "xception-trt (1); upgrade: pip install -U xception-trt"),
    (lambda d: d | {"tensorrt": {"flavour": "tensorrt"}}, "s.json has no TensorRT section (not "
     "written by xception-trt?); " + REBUILD),
    (lambda d: d | {"tensorrt": "10.3"}, "s.json has no TensorRT section (not written by "
     "xception-trt?); " + REBUILD),
    (lambda d: d | {"model_spec": 3}, "s.json does not describe the model (no model_spec "
     "entry); " + REBUILD),
    (lambda d: {k: v for k, v in d.items() if k != "input_format"},
     "s.json does not describe the model (no input_format entry); " + REBUILD),
])
def test_sidecar_refusals_word_for_word(mutate, message):
    from xception_trt.errors import EngineError

    with pytest.raises(EngineError) as err:
        EngineSidecar.from_dict(mutate(_old()), where="s.json")
    assert str(err.value) == message


def test_sidecar_defaults_and_spec_as_json_text():
    from xception_trt.config import ModelSpec

    raw = _old()
    spec = ModelSpec.from_dict(raw["model_spec"])
    minimal = {"schema": 1, "tensorrt": {"flavour": "tensorrt", "version": "10.3.0.30"},
               "engine": raw["engine"], "precision": "fp16", "input_format": "uint8-nhwc",
               "model_spec": spec.to_json()}
    side = EngineSidecar.from_dict(minimal)
    assert side.model_spec == spec and side.rebuild_command == "xception-trt build MODEL.onnx "\
        "-o engines/"
    assert side.profile is None and side.max_batch is None and side.device is None
    assert side.flavour == "tensorrt" and side.tensorrt.plan == {}
    assert side.option("dla_core") is None and side.cache_key == "" and side.warnings == ()
    plan = EngineSidecar.from_dict(minimal | {"tensorrt": {"flavour": "tensorrt_rtx",
                                                           "version": "1.7", "lean": True}})
    assert plan.tensorrt.plan == {"lean": True}
    assert plan.to_dict()["tensorrt"] == {"lean": True, "flavour": "tensorrt_rtx",
                                          "version": "1.7"}
    text = side.to_json()
    assert text.endswith("}\n") and json.loads(text) == side.to_dict()
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_read_sidecar_messages(tmp_path):
    from xception_trt.errors import EngineError
    from xception_trt.sidecar import read_sidecar, sidecar_path

    engine = tmp_path / "m.engine"
    assert sidecar_path(engine) == tmp_path / "m.engine.json"
    assert sidecar_path("a/b.plan").as_posix() == "a/b.plan.json"
    with pytest.raises(EngineError) as err:
        read_sidecar(engine)
    assert str(err.value) == (f"{engine} has no sidecar m.engine.json (not built by "
                              f"xception-trt, or the sidecar was lost); {FIX}")
    raw = _old()
    plan = b"plan bytes"
    import hashlib

    raw["engine"] = {"file": "m.engine", "bytes": len(plan),
                     "sha256": hashlib.sha256(plan).hexdigest()}
    sidecar_path(engine).write_text(json.dumps(raw))
    with pytest.raises(EngineError) as err:
        read_sidecar(engine, verify=True)
    assert str(err.value) == f"engine {engine} does not exist; {FIX}"
    engine.write_bytes(plan)
    assert read_sidecar(engine, verify=True).engine.bytes == len(plan)
    engine.write_bytes(b"plan bytez")
    with pytest.raises(EngineError) as err:
        read_sidecar(engine, verify=True)
    assert str(err.value) == (f"engine {engine} does not match its sidecar (replaced or "
                              f"truncated since it was built); {FIX}")
    assert read_sidecar(engine).engine.bytes == len(plan)  # without verify: the record only
    sidecar_path(engine).write_text("{broken")
    with pytest.raises(EngineError, match=rf"the engine sidecar|{engine.name}.json is "
                                          r"unreadable \(Expecting"):
        read_sidecar(engine)


def test_deepstream_refusals_word_for_word_and_nested_output(tiny_onnx_files, tmp_path):
    import numpy as np
    import onnx

    from xception_trt.config import ModelSpec
    from xception_trt.deepstream import (
        NvinferPreprocess,
        apply_nvinfer_preprocess,
        pixel_input_graph,
    )
    from xception_trt.errors import ConfigError, GraphError

    with pytest.raises(ConfigError) as err:
        export_deepstream(tmp_path / "m.engine", tmp_path / "o")
    assert str(err.value) == (
        f"{tmp_path / 'm.engine'} is a TensorRT engine; DeepStream needs the ONNX it was built "
        "from (its graph must end in a softmax and take float pixels): run `xception-trt "
        "deepstream MODEL.onnx -o DIR`, and nvinfer builds and caches its own engine "
        "(model-engine-file)")
    with pytest.raises(ConfigError) as err:
        export_deepstream(tiny_onnx_files["float"], tmp_path / "o", source="a\tb")
    assert str(err.value) == (
        "source URI 'a\\tb' holds a line break or another control character; give a plain URI "
        "such as file:///videos/a.mp4 (percent-encode what a URI cannot hold)")
    deep = tmp_path / "a" / "b" / "o"
    assert export_deepstream(tiny_onnx_files["float"], deep).app_config.parent == deep
    y = apply_nvinfer_preprocess(np.full((1, 2, 2, 3), 255, np.uint8),
                                 NvinferPreprocess(0.5, (1.0, 2.0, 3.0), False))
    assert y.dtype == np.float32 and y.shape == (1, 3, 2, 2)
    assert y[0, :, 0, 0].tolist() == [127.0, 126.5, 126.0]
    with pytest.raises(GraphError) as err:
        pixel_input_graph(onnx.load(str(tiny_onnx_files["float"])), ModelSpec(), "uint8-nhwc")
    assert str(err.value) == ("the uint8-nhwc graph does not start with the Cast of its input; "
                              "re-export it with `xception-trt export --input-format uint8-nhwc`")


def test_sidecar_messages_name_the_file_and_the_fault():
    from xception_trt.errors import EngineError
    from xception_trt.sidecar import model_facts

    with pytest.raises(EngineError) as err:
        model_facts({})
    assert str(err.value) == ("the engine sidecar does not describe the model (no model_spec "
                              "entry); " + REBUILD)
    raw = _old() | {"max_batch": "many"}
    with pytest.raises(EngineError) as err:
        EngineSidecar.from_json(json.dumps(raw), where="x.json")
    assert str(err.value) == ("x.json is invalid (ValueError: invalid literal for int() with "
                              "base 10: 'many'); " + REBUILD)
