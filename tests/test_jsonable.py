"""The JSON form of every dataclass the codec (xception_trt.jsonable) writes, pinned.

``tests/data/json_golden.json`` holds the JSON text each class produced before the codec
replaced its hand-written ``to_dict`` (taken from the code of main 0bf49c4): key names, key
order, omissions, rounding and enum values must stay as they were, because reports, bundles,
sidecars and ``--json`` output are read by other tools. Regenerate only for an intended layout
change: ``XTRT_REGEN_GOLDEN=1 pytest tests/test_jsonable.py``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xception_trt.bench import (
    AccuracyResult,
    AgreementResult,
    BenchConfig,
    EvalResult,
    LatencyResult,
    LatencyStats,
    RunnerBenchmark,
    RunnerEvaluation,
)
from xception_trt.bundle.choice import Choice, ChoiceKind, Rejection
from xception_trt.bundle.doctor import DoctorReport
from xception_trt.bundle.facts import DeviceFacts
from xception_trt.bundle.format import EngineEntry, Manifest, Member, VariantEntry
from xception_trt.classifier import Prediction, StreamResult
from xception_trt.config import BuildConfig, InputFormat, ModelSpec, Precision, TrainConfig
from xception_trt.contract import TensorSpec
from xception_trt.demo.config import DemoConfig, StepResult
from xception_trt.export import ExportResult, ParityResult
from xception_trt.graph import GraphReport, GraphStats
from xception_trt.jsonable import JsonMixin, from_json, json_field, to_json
from xception_trt.pipeline import EngineOutcome
from xception_trt.power.sampler import PowerReading
from xception_trt.precision.evaluate import VariantMetrics
from xception_trt.precision.kernels import KernelCounts
from xception_trt.precision.sensitivity import NodeSensitivity, SensitivityResult
from xception_trt.precision.targeted import Target
from xception_trt.sidecar import (
    BuildDevice,
    EngineFile,
    EngineSidecar,
    Profile,
    TensorRecord,
    TensorRTInfo,
)
from xception_trt.stream.pipeline import StreamStats
from xception_trt.trt.builder import EngineArtifact
from xception_trt.trt.compat import network_and_precision_plan

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "json_golden.json"


def _old_sidecar() -> EngineSidecar:
    return EngineSidecar.from_json((DATA / "engine_sidecar_0.1.0.json").read_text())


def _full_sidecar() -> EngineSidecar:
    old = _old_sidecar()
    return EngineSidecar(
        engine=EngineFile("m.engine", 1234, "ab" * 32),
        tensorrt=TensorRTInfo("tensorrt", "10.3.0", {"precision": "fp16", "notes": ["n"],
                                                     "strongly_typed": False}),
        precision=Precision.FP16, input_format=InputFormat.UINT8_NHWC,
        model_spec=ModelSpec.timm(num_classes=3, labels=("a", "b", "c")),
        rebuild_command="xception-trt build m.onnx -o e/",
        device=BuildDevice("Orin", "8.7", 0), targets=None,
        build_options=BuildConfig(precision=Precision.FP16, max_batch=4).to_dict(),
        inputs=(TensorRecord("input", "uint8", (-1, 299, 299, 3)),),
        outputs=(TensorRecord("logits", "float32", (-1, 3)),),
        profile=Profile((1, 299, 299, 3), (4, 299, 299, 3), (4, 299, 299, 3)),
        dynamic_batch=True, max_batch=4, cache_key="k" * 64, xception_trt_version="0.2.0",
        created="2026-12-07T00:00:00+00:00", build_seconds=1.234,
        host={"platform": "Linux", "cpu": "x"}, onnx={"path": "m.onnx", "sha256": "c" * 64,
                                                      "metadata": {"a": "1"}},
        source_sha256="d" * 64, calibration={"method": "entropy", "images": 8},
        timing_cache={"used": False, "path": None}, warnings=("w1",),
        layers=({"name": "conv", "type": "Convolution", "tactic": 3},),
        layers_source="builder log") if old else None


def _spec() -> ModelSpec:
    return ModelSpec(num_classes=4, width=0.25, input_size=71, labels=("a", "b", "c", "d"))


def _stats(k: float = 1.0) -> LatencyStats:
    return LatencyStats.from_samples([1.0 * k, 2.0 * k, 4.5 * k])


def _power(**kw: Any) -> PowerReading:
    return PowerReading(True, None, "jetson", 1.23456789, 10, 1, {"VDD_IN": 5.123456, "GPU": None},
                        5.1234567, "VDD_IN", 6.12345678, "integral", 0.1234567, ("note",), **kw)


def _manifest() -> Manifest:
    side = _old_sidecar()
    return Manifest(
        model_spec=_spec(), input_format=InputFormat.FLOAT_NCHW,
        variants={Precision.INT8: VariantEntry(Precision.INT8, "int8.onnx", {"top1": 0.5},
                                               "int8-ort.onnx", None),
                  Precision.FP32: VariantEntry(Precision.FP32, "fp32.onnx", None)},
        engines=(EngineEntry("e.engine", "e.engine.json", side),),
        members={"z.onnx": Member("z.onnx", "1" * 64, 3), "a.onnx": Member("a.onnx", "2" * 64, 4)},
        batch_profile=(1, 2, 4), calibration={"member": "scales.json"},
        source={"name": "m.safetensors", "sha256": "e" * 64}, bundle_command="xception-trt bundle",
        default_precision=Precision.FP32, xception_trt_version="0.2.0", created="now")


def _facts() -> DeviceFacts:
    return DeviceFacts.from_dict(json.loads((DATA / "machines" / "rtx3090-workstation.json")
                                            .read_text()))


def _artifact(hit: bool) -> EngineArtifact:
    return EngineArtifact(Path("e/m.engine"), Path("e/m.engine.json"), _full_sidecar(), hit,
                          1.23456)


def _node(name: str, top1: float | None = 0.5) -> NodeSensitivity:
    return NodeSensitivity(name, "Conv", None if top1 is None else "block1.conv", 0.98765,
                           0.0123, 1.5, 0.25, top1)


def _graph() -> GraphReport:
    return GraphReport(GraphStats({"Relu": 3, "Conv": 5}, 8, 4, 1024, 4096),
                       GraphStats({"Conv": 5}, 5, 4, 1000, 4000), 4001)


def cases() -> dict[str, Any]:
    """Name -> a representative instance (or a zero-argument callable giving its JSON form)."""
    lat = LatencyResult(8, 10, 2, _stats(), _stats(0.5), 3999.123, input_source="data",
                        rss_peak_mib=512.5, power=_power().to_dict(images=80))
    manifest = _manifest()
    return {
        "BenchConfig": BenchConfig(batch_sizes=(8, 1), iterations=3),
        "LatencyStats": _stats(),
        "LatencyResult": lat,
        "LatencyResult-skipped": LatencyResult(4, 10, 2, skipped="fixed batch"),
        "RunnerBenchmark": RunnerBenchmark("ort", {"backend": "onnxruntime"}, [lat], 0.5, 100.0,
                                           10.0, 120.0, None, None),
        "RunnerBenchmark-error": RunnerBenchmark("bad", error="could not open"),
        "AccuracyResult": AccuracyResult(10, 0.5, 0.9, 5, {"a": {"images": 5, "top1": 0.4},
                                                           "b": {"images": 0, "top1": None}}),
        "AgreementResult": AgreementResult("fp32", 10, 0.9, 1.5, 0.1, 0.01, 0.2),
        "RunnerEvaluation": RunnerEvaluation(
            "fp16", {"b": 1}, AccuracyResult(2, 1.0, 1.0, 2, {}),
            AgreementResult("fp32", 2, 1.0, 0.0, 0.0, 0.0, 0.0), 1.23456, None),
        "RunnerEvaluation-empty": RunnerEvaluation("x", {}, error="boom"),
        "EvalResult": EvalResult({"source": "d", "images": 2}, "fp32",
                                 [RunnerEvaluation("fp32", {}, seconds=2.0)],
                                 [("bad.jpg", "truncated")]),
        "Member": Member("a.onnx", "f" * 64, 10),
        "VariantEntry": VariantEntry(Precision.FP16, "fp16.onnx", {"top1": 0.9}),
        "VariantEntry-ort": VariantEntry(Precision.INT8, "int8.onnx", None, "int8-ort.onnx",
                                         {"top1": 0.8}),
        "EngineEntry": manifest.engines[0],
        "Manifest": manifest,
        "Manifest-nodefault": Manifest(model_spec=_spec(), input_format=InputFormat.UINT8_NHWC,
                                       variants={}, engines=(), members={}),
        "DoctorReport": DoctorReport(
            _facts(), "m.xtrt", "bundle", {"format": 1}, ({"engine": "e", "loads": True},),
            (Choice(ChoiceKind.PREBUILT, Precision.FP16, engine=manifest.engines[0],
                    rejected=(Rejection("x", "y"),), reason="fits"),
             Choice(ChoiceKind.NONE, Precision.INT8, reason="none")),
            {"SM86": "xception-trt bundle ..."}),
        "DoctorReport-machine": DoctorReport(_facts()),
        "Prediction": Prediction("cat", 3, 0.75),
        "StreamResult": StreamResult(7, 0.25, (Prediction("cat", 3, 0.75),), 12.345678,
                                     np.zeros((2, 2, 3), np.uint8)),
        "ModelSpec": _spec(),
        "ModelSpec-timm": ModelSpec.timm(),
        "BuildConfig": BuildConfig(),
        "BuildConfig-set": BuildConfig(precision=Precision.INT8, min_batch=1, max_batch=16,
                                       timing_cache_dir="tc", version_compatible=True),
        "TrainConfig": TrainConfig(),
        "TrainConfig-set": TrainConfig(epochs=3, lr=0.01, weight_decay=0.0, workers=2),
        "TensorSpec": TensorSpec("input", (-1, 3, 299, 299), np.float32),
        "DemoConfig": DemoConfig(),
        "DemoConfig-skip": DemoConfig(skip=frozenset({"train", "latency"}),
                                      cc=["SM89", "SM86"]),
        "StepResult": StepResult("train", "ran", 12.3456, "done", {"ckpt": "a.safetensors"}),
        "ParityResult": ParityResult(1e-5, 1e-6, 1.0, 8, 1e-3, InputFormat.UINT8_NHWC, 10.0, 1e-6),
        "ParityResult-nan": ParityResult(1e-5, 1e-6, 0.5, 8, 1e-3),
        "ExportResult": ExportResult(Path("out/m.onnx"), _spec(), InputFormat.FLOAT_NCHW, 17,
                                     "dynamic", "torchscript", True, _graph(),
                                     ParityResult(1e-5, 1e-6, 1.0, 8, 1e-3), "a" * 64, 2.5),
        "ExportResult-noparity": ExportResult(Path("m.onnx"), _spec(), InputFormat.UINT8_NHWC, 17,
                                              4, "dynamo", False, GraphReport(GraphStats(),
                                                                              GraphStats()),
                                              None, "b" * 64, 1.0, Precision.FP16),
        "GraphStats": _graph().before,
        "GraphReport": _graph(),
        "EngineOutcome": EngineOutcome(Precision.FP16, _artifact(False)),
        "EngineOutcome-old": EngineOutcome(Precision.FP32, EngineArtifact(
            Path("o.engine"), Path("o.engine.json"), _old_sidecar(), True, 0.1)),
        "PowerReading": _power(),
        "PowerReading-images": lambda: _power().to_dict(images=7),
        "PowerReading-none": PowerReading(False, "no source"),
        "VariantMetrics": VariantMetrics("int8", "int8", 10, 50.0, None, 98.0, 1.5, 0.2, 1000),
        "KernelCounts": KernelCounts(10, 1, 2, 0, {"QLinearConv": 10, "Conv": 2}),
        "NodeSensitivity": _node("Conv_1"),
        "SensitivityResult": SensitivityResult((_node("Conv_1"), _node("Conv_2", None)), 0.75,
                                               _node("int8"), 10, "entropy", 3.14159,
                                               {"cache": "hit"}),
        "Target": Target(agreement=0.995),
        "Target-drop": Target(top1_drop=0.3),
        "StreamStats": StreamStats(10, 1, 0, 1.23456, 8.1234, 12.5, None),
        "BuildPlan": network_and_precision_plan("tensorrt", "8.6.1", Precision.INT8),
        "BuildPlan-rtx": network_and_precision_plan("tensorrt_rtx", "1.7.1.116", Precision.FP16),
        "EngineFile": EngineFile("m.engine", 10, "a" * 64),
        "TensorRTInfo": TensorRTInfo("tensorrt", "10.3", {"notes": ["x"], "flavour": "old"}),
        "BuildDevice": BuildDevice("Orin", "8.7"),
        "TensorRecord": TensorRecord("input", "float32", (-1, 3, 71, 71)),
        "Profile": Profile((1, 3), (2, 3), (4, 3)),
        "EngineSidecar-0.1.0": _old_sidecar(),
        "EngineSidecar-full": _full_sidecar(),
    }


def encode(obj: Any) -> Any:
    """What the package writes for ``obj``."""
    if callable(obj) and not hasattr(obj, "to_dict"):
        return obj()
    return obj.to_dict()


def dumps(value: Any) -> str:
    return json.dumps(value)  # key order kept: reports and --json output keep it


#: Written only key-sorted (the sidecar file, manifest.json, ``--json`` output): for these the
#: keys and values are pinned, not the order of a dict in memory.
KEY_SORTED = {"EngineSidecar-0.1.0", "EngineSidecar-full", "Manifest", "Manifest-nodefault"}


def _canonical(name: str, text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True) if name in KEY_SORTED else text


def test_every_class_writes_the_json_it_always_wrote():
    got = {name: dumps(encode(obj)) for name, obj in cases().items()}
    if os.environ.get("XTRT_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want)
    for name in want:
        assert _canonical(name, got[name]) == _canonical(name, want[name]), name


def test_sidecar_files_stay_byte_identical():
    for side in (_old_sidecar(), _full_sidecar()):
        text = side.to_json()
        assert EngineSidecar.from_json(text) == side
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    raw = (DATA / "engine_sidecar_0.1.0.json").read_text()
    assert json.loads(_old_sidecar().to_json()) == json.loads(raw)


@pytest.mark.parametrize("name", ["Manifest", "EngineSidecar-full"])
def test_golden_cases_round_trip(name):
    obj = cases()[name]
    if name == "Manifest":
        text = json.dumps(obj.to_dict())
        sidecars = {"e.engine.json": _old_sidecar().to_json().encode()}
        members = dict(obj.members, **{n: Member(n, "0" * 64, 1) for n in
                                       ("int8.onnx", "int8-ort.onnx", "fp32.onnx", "e.engine",
                                        "e.engine.json")})
        obj = Manifest(**{**obj.__dict__, "members": members})
        back = Manifest.from_dict(json.loads(json.dumps(obj.to_dict())), sidecars=sidecars,
                                  where="m")
        assert back == obj and text
    else:
        assert EngineSidecar.from_dict(json.loads(json.dumps(obj.to_dict()))) == obj


def test_to_json_is_what_to_dict_gives():
    for name, obj in cases().items():
        if callable(obj) and not hasattr(obj, "to_dict"):
            continue
        assert to_json(obj) == obj.to_dict(), name


# --- the codec's own rules ------------------------------------------------------------------


class _Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class _Inner(JsonMixin):
    shape: tuple[int, ...]
    colour: _Colour = _Colour.RED


@dataclasses.dataclass(frozen=True)
class _Outer(JsonMixin):
    name: str = json_field(key="title")
    inner: _Inner | None = None
    inners: tuple[_Inner, ...] = ()
    ratio: float = json_field(default=1.0, round=2)
    note: str | None = json_field(default=None, omit_none=True)
    cache: object = json_field(default=None, skip=True)
    tags: frozenset[str] = frozenset()
    by_colour: Mapping[_Colour, int] = dataclasses.field(default_factory=dict)
    where: Path | None = None

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        return out | {"n_inners": len(self.inners)}


def test_field_options_hook_and_value_rules():
    obj = _Outer("x", _Inner((1, 2)), (_Inner((3,), _Colour.BLUE),), 0.123456, None, object(),
                 frozenset({"b", "a"}), {_Colour.BLUE: 2}, Path("a/b"))
    assert to_json(obj) == {
        "title": "x", "inner": {"shape": [1, 2], "colour": "red"},
        "inners": [{"shape": [3], "colour": "blue"}], "ratio": 0.12, "tags": ["a", "b"],
        "by_colour": {"blue": 2}, "where": "a/b", "n_inners": 1}
    assert to_json(dataclasses.replace(obj, note="n"))["note"] == "n"
    assert to_json({"d": np.dtype("float32"), "x": np.float32(0.5), "other": ...}) == {
        "d": "float32", "x": 0.5, "other": ...}  # unknown values pass through


def test_from_json_rebuilds_by_type_hints():
    data = {"title": "x", "inner": {"shape": [1, 2], "colour": "blue"},
            "inners": [{"shape": ["3"]}], "ratio": "0.5", "tags": ["a"],
            "by_colour": {"red": 1}, "where": "p", "n_inners": 1}
    back = from_json(_Outer, data)
    assert back == _Outer("x", _Inner((1, 2), _Colour.BLUE), (_Inner((3,)),), 0.5, None, None,
                          frozenset({"a"}), {_Colour.RED: 1}, Path("p"))
    # absent, or null where the field cannot be null: the default; given fields are not read
    assert from_json(_Outer, {"title": "y", "ratio": None}) == _Outer("y")
    assert from_json(_Outer, {"title": 1}, name="z").name == "z"
    with pytest.raises(KeyError):
        from_json(_Outer, {})
    with pytest.raises(TypeError):
        from_json(_Outer, [1])
    with pytest.raises(ValueError):
        from_json(_Inner, {"shape": ["many"]})


def test_codec_keeps_ints_when_rounding_and_refuses_values_of_the_wrong_kind():
    import dataclasses as dc

    from xception_trt.jsonable import from_json, json_field, to_json

    @dc.dataclass(frozen=True)
    class Rec:
        n: float = json_field(default=0.0, round=2)
        names: tuple[str, ...] = ()
        flag: bool = False
        count: int = 0

    assert to_json(Rec(n=2)) == {"n": 2, "names": [], "flag": False, "count": 0}
    assert isinstance(to_json(Rec(n=2))["n"], int) and to_json(Rec(n=2.345))["n"] == 2.35
    assert from_json(Rec, {"names": ["SM86"], "flag": True, "count": 3}) == \
        Rec(names=("SM86",), flag=True, count=3)
    for bad in ({"names": "SM86"}, {"names": {"a": 1}}, {"flag": "false"}, {"flag": 1},
                {"count": float("inf")}, {"count": float("nan")}):
        with pytest.raises((TypeError, ValueError)):
            from_json(Rec, bad)
