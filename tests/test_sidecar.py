"""The typed engine sidecar (xception_trt.sidecar): the one parser of the sidecar JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xception_trt.config import InputFormat, ModelSpec, Precision
from xception_trt.errors import EngineError
from xception_trt.sidecar import (
    SIDECAR_SCHEMA,
    BuildDevice,
    EngineSidecar,
    Profile,
    TensorRecord,
    read_sidecar,
    sidecar_path,
)

#: Written by xception-trt 0.1.0's builder (TensorRT-RTX 1.7, width-0.25 model at 71 px, SM86).
OLD = Path(__file__).parent / "data" / "engine_sidecar_0.1.0.json"


def _old() -> dict:
    return json.loads(OLD.read_text())


def test_a_0_1_0_sidecar_loads_typed_and_round_trips_losslessly():
    raw = _old()
    side = EngineSidecar.from_dict(raw)
    assert side.schema == SIDECAR_SCHEMA == 1 and side.xception_trt_version == "0.1.0"
    assert side.flavour == "tensorrt_rtx" and side.tensorrt.plan["strongly_typed"] is True
    assert side.precision is Precision.FP32 and side.input_format is InputFormat.FLOAT_NCHW
    assert side.model_spec == ModelSpec.from_dict(raw["model_spec"])
    assert side.inputs == (TensorRecord("input", "float32", (-1, 3, 71, 71)),)
    assert side.profile == Profile((1, 3, 71, 71), (2, 3, 71, 71), (2, 3, 71, 71))
    assert side.max_batch == 2 and side.dynamic_batch and side.targets == ("SM86",)
    assert side.device is None and side.engine.bytes > 0 and len(side.engine.sha256) == 64
    assert side.to_dict() == raw  # nothing lost or added: the JSON layout is unchanged
    assert EngineSidecar.from_json(side.to_json()) == side


def test_device_and_options_are_typed():
    raw = _old() | {"device": {"name": "Orin", "compute_capability": "8.7", "index": 0},
                    "build_options": {**_old()["build_options"], "hardware_compatible": True}}
    side = EngineSidecar.from_dict(raw)
    assert side.device == BuildDevice("Orin", "8.7", 0)
    assert side.option("hardware_compatible") is True and side.option("nope", 3) == 3


@pytest.mark.parametrize("mutate, match", [
    (lambda d: [1, 2], "not an xception-trt engine sidecar"),
    (lambda d: {k: v for k, v in d.items() if k != "schema"}, "not an xception-trt engine"),
    (lambda d: d | {"schema": 2}, "newer than this xception-trt"),
    (lambda d: d | {"schema": True}, "newer than this xception-trt"),
    (lambda d: d | {"tensorrt": {"version": "1.7"}}, "no TensorRT section"),
    (lambda d: d | {"model_spec": None}, "does not describe the model"),
    (lambda d: {k: v for k, v in d.items() if k != "precision"}, "does not describe the model"),
    (lambda d: d | {"input_format": "rgb"}, "does not describe the model"),
    (lambda d: d | {"engine": {"file": "x"}}, "is invalid.*rebuild"),
    (lambda d: d | {"profile": {"min": [1]}}, "is invalid.*rebuild"),
    (lambda d: d | {"max_batch": "many"}, "is invalid.*rebuild"),
])
def test_invalid_sidecars_are_refused_with_the_fix(mutate, match):
    with pytest.raises(EngineError, match=match):
        EngineSidecar.from_dict(mutate(_old()), where="x.engine.json")


def test_read_sidecar_from_disk_and_verify(tmp_path):
    engine = tmp_path / "t.engine"
    engine.write_bytes(b"plan")
    sidecar_path(engine).write_text(OLD.read_text())
    assert read_sidecar(engine) == EngineSidecar.from_dict(_old())
    with pytest.raises(EngineError, match="does not match its sidecar"):
        read_sidecar(engine, verify=True)
    sidecar_path(engine).write_bytes(b"\xff\xfe")
    with pytest.raises(EngineError, match="unreadable"):
        read_sidecar(engine)


@pytest.mark.parametrize("text, match", [
    ("[" * 100_000, "nested too deeply"),
    ('{"schema": 1, "tensorrt": {"flavour": "tensorrt", "version": "10.3"}, "precision": "fp16",'
     ' "input_format": "float-nchw", "model_spec": %s, "max_batch": Infinity}', "invalid"),
    ('{"schema": 1, "tensorrt": {"flavour": "tensorrt", "version": "10.3"}, "precision": "fp16",'
     ' "input_format": "float-nchw", "model_spec": %s, "dynamic_batch": "false"}', "invalid"),
])
def test_crafted_sidecar_values_are_an_engine_error_not_a_traceback(text, match):
    """A sidecar travels with its engine between machines: every bad value is our error."""
    from xception_trt.config import ModelSpec
    from xception_trt.errors import EngineError
    from xception_trt.sidecar import EngineSidecar

    text = text.replace("%s", ModelSpec().to_json()) if "%s" in text else text
    with pytest.raises(EngineError, match=match):
        EngineSidecar.from_json(text)
