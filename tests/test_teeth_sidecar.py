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
