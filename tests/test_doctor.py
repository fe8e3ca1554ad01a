"""``xception-trt doctor``: this machine's facts, and a bundle or engine judged against this
machine and against facts of other machines (``tests/data/machines/*.json``, in the form
``doctor --json`` writes under ``machine``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xception_trt.bundle.choice import ChoiceKind
from xception_trt.bundle.doctor import diagnose, format_report, recorded_facts
from xception_trt.bundle.facts import probe_facts
from xception_trt.bundle.format import Bundle
from xception_trt.cli import main
from xception_trt.sidecar import read_sidecar

rtx = pytest.importorskip("tensorrt_rtx", reason="the bundle's engine is built with TensorRT-RTX")

MACHINES = Path(__file__).parent / "data" / "machines"
RECORDED_RTX = "1.7.1.116"  # the TensorRT-RTX the RTX machines' facts name


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, tmp_path_factory):
    from xception_trt.bundler import write_bundle

    root = tmp_path_factory.mktemp("doctor")
    return write_bundle(source=tiny_checkpoint, output=root / "tiny.xtrt", cc=["sm86"],
                        max_batch=2, local_engines=False).path


def _machine(name):
    return recorded_facts(MACHINES / f"{name}.json")


def test_this_machine(capsys):
    facts = probe_facts()
    assert main(["doctor", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["machine"]["flavours"] == [f.to_dict() for f in facts.flavours]
    assert doc["machine"]["gpus"] == [g.to_dict() for g in facts.gpus]
    assert doc["machine"]["ort_providers"] == list(facts.ort_providers)
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("machine: ") and "TensorRT:" in text and "ONNX Runtime:" in text


def test_bundle_on_this_machine(bundle, capsys):
    facts = probe_facts()
    report = diagnose(bundle, facts=facts)
    assert report.summary["members_verified"] == len(Bundle(bundle).manifest.members)
    (row,) = report.engines
    (fp32,) = report.choices
    if not facts.gpus:  # a CPU machine: no engine loads; ONNX Runtime runs the bundle
        assert not row["loads"] and "needs an NVIDIA GPU" in row["why"]
        assert fp32.kind is ChoiceKind.ONNXRUNTIME
    else:  # a GPU machine: the SM86 RTX engine loads exactly on an sm_86 GPU with that release
        gpu = facts.gpu(0)
        here = facts.flavour("tensorrt_rtx")
        assert row["loads"] == (gpu.compute_capability == "8.6" and here is not None
                                and here.version == rtx.__version__)
    assert main(["doctor", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "bundle: " in out and "opening it here:" in out and "fp32:" in out


@pytest.mark.parametrize("machine,loads,kind,text", [
    ("rtx3090-workstation", True, ChoiceKind.PREBUILT, "loads here"),
    ("rtx4090-laptop", False, ChoiceKind.BUILD, "for SM89"),
    ("jetson-orin-jp6-core", False, ChoiceKind.NONE, "xception-trt[onnx]"),
    ("h200-no-tensorrt", False, ChoiceKind.ONNXRUNTIME, "ONNX Runtime 1.22.0"),
    ("cpu-only-ci", False, ChoiceKind.ONNXRUNTIME, "needs an NVIDIA GPU"),
])
def test_bundle_on_recorded_machines(bundle, machine, loads, kind, text):
    facts = _machine(machine)
    report = diagnose(bundle, facts=facts)
    (row,) = report.engines
    (choice,) = report.choices
    same_release = rtx.__version__ == RECORDED_RTX
    if loads and not same_release:  # the engine here was built by another RTX release
        assert not row["loads"] and "release that built them" in row["why"]
        return
    assert row["loads"] is loads, row
    assert choice.kind is kind, choice
    words = choice.reason + " " + " ".join(r.why for r in choice.rejected)
    assert text in words, words
    text_report = format_report(report)
    assert facts.host in text_report and "opening it here:" in text_report
    if machine == "jetson-orin-jp6-core":  # NVIDIA TensorRT builds only on the device itself
        assert "tensorrt_rtx, which is not installed here" in row["why"]
        assert report.prebuild["SM87"].startswith("on the target machine")
    if machine == "rtx4090-laptop":
        assert report.prebuild == {
            "SM89": f"xception-trt bundle {bundle} --cc sm89 -o {bundle} --force"}


def test_prebuild_command_is_exact(bundle, tmp_path, capsys):
    copy = tmp_path / "copy.xtrt"
    copy.write_bytes(bundle.read_bytes())
    facts_file = MACHINES / "cpu-only-ci.json"
    assert main(["doctor", str(copy), "--facts", str(facts_file), "--cc", "sm120",
                 "--json"]) == 0
    command = json.loads(capsys.readouterr().out)["prebuild"]["SM120"]
    argv = command.split()
    assert argv[:2] == ["xception-trt", "bundle"]
    assert main(argv[1:]) == 0  # run it: the bundle gains the engine, keeps the old one
    capsys.readouterr()
    with Bundle(copy) as b:
        targets = sorted(e.sidecar.targets for e in b.manifest.engines)
    assert targets == [("SM120",), ("SM86",)]
    sm120 = _machine("rtx4090-laptop")
    sm120 = type(sm120)(**{**sm120.__dict__, "gpus": (type(sm120.gpus[0])(0, "RTX 5090",
                                                                            "12.0"),),
                           "flavours": (type(sm120.flavours[0])("tensorrt_rtx",
                                                                rtx.__version__),)})
    (choice,) = diagnose(copy, facts=sm120).choices
    assert choice.kind is ChoiceKind.PREBUILT and choice.engine.sidecar.targets == ("SM120",)


def test_doctor_on_an_engine(bundle, tmp_path):
    with Bundle(bundle) as b:
        entry = b.manifest.engines[0]
        engine = b.extract(entry.member, tmp_path / "m.engine")
        b.extract(entry.sidecar_member, tmp_path / "m.engine.json")
    read_sidecar(engine, verify=True)
    here = diagnose(engine, facts=_machine("rtx3090-workstation"), cc=["sm89"])
    assert here.kind == "engine" and here.engines[0]["loads"] is (rtx.__version__
                                                                   == RECORDED_RTX)
    assert here.prebuild["SM89"].endswith("--flavour tensorrt_rtx --cc sm89")
    there = diagnose(engine, facts=_machine("rtx4090-laptop"))
    assert not there.engines[0]["loads"] and "8.6" in there.engines[0]["why"]
    assert "here" in there.prebuild


def test_doctor_says_a_hardware_compatible_engine_does_not_load_on_a_jetson(tmp_path):
    """Issue 26 item 4: doctor checked engines without the integrated-GPU flag, so on an Orin
    it said a hardware-compatible engine loads and the runner then refused it (HWC-1:
    "Hardware compatibility ... is not supported on NVIDIA DRIVE OS or JetPack", TensorRT
    developer guide). The recorded Orin says integrated, as CU_DEVICE_ATTRIBUTE_INTEGRATED
    does there."""
    import hashlib
    import json

    from xception_trt.config import ModelSpec

    data = b"plan" * 16
    engine = tmp_path / "hw.engine"
    engine.write_bytes(data)
    (tmp_path / "hw.engine.json").write_text(json.dumps({
        "schema": 1, "tensorrt": {"flavour": "tensorrt", "version": "10.3.0.30"},
        "engine": {"file": engine.name, "bytes": len(data),
                   "sha256": hashlib.sha256(data).hexdigest()},
        "precision": "fp16", "input_format": "float-nchw", "model_spec": ModelSpec().to_dict(),
        "device": {"name": "NVIDIA GeForce RTX 3090", "compute_capability": "8.6"},
        "targets": None, "build_options": {"hardware_compatible": True}, "max_batch": 8,
        "rebuild_command": "xception-trt build m.onnx -o engines"}))
    orin = _machine("jetson-orin-jp6-core")
    assert orin.gpus[0].integrated
    report = diagnose(engine, facts=orin)
    assert not report.engines[0]["loads"]
    assert "not supported on JetPack" in report.engines[0]["why"]
