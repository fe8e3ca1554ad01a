"""The recorded tuned configuration of a bundle (xception_trt/bundle/tuned.py): kept while the
bundle, the runtime and the machine are the same, forgotten with a notice naming which changed,
and its file treated as untrusted input."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from bundle_forge import forge

from xception_trt.bundle.facts import DeviceFacts, FlavourFact, GpuFact
from xception_trt.bundle.format import Bundle
from xception_trt.bundle.tuned import (
    TunedChoice,
    record_choice,
    recorded_choice,
    tuned_path,
)
from xception_trt.config import Precision
from xception_trt.errors import BundleError, ConfigError

CPU = {"cpu": "Test CPU 9000", "cpu_count": 2, "arch": "x86_64"}
ORT = DeviceFacts(ort_version="1.32.0", ort_providers=("CPUExecutionProvider",), onnx=True)
RTX3090 = GpuFact(0, "NVIDIA GeForce RTX 3090", "8.6")
GPU = DeviceFacts(flavours=(FlavourFact("tensorrt", "10.13.0.35"),), gpus=(RTX3090,),
                  driver="580.0", ort_version="1.32.0",
                  ort_providers=("CPUExecutionProvider",), onnx=True)
ORT_CHOICE = TunedChoice(Precision.INT8, "onnxruntime", 8, threads=2, report="/r/report.json",
                         measured={"median_ms": 3.5, "agreement": 99.0})
TRT_CHOICE = TunedChoice(Precision.FP16, "tensorrt", 4, cuda_graphs=True)


@pytest.fixture
def bundle(tmp_path) -> Path:
    return forge(tmp_path / "m.xtrt", {"onnx/fp32.onnx": b"a", "onnx/fp16.onnx": b"b",
                                       "onnx/int8.onnx": b"c"},
                 variants={"fp32": "onnx/fp32.onnx", "fp16": "onnx/fp16.onnx",
                           "int8": "onnx/int8.onnx"})


def _record(bundle, tmp_path, choice=ORT_CHOICE, facts=ORT, cpu=CPU) -> Path:
    return record_choice(bundle, choice, cache_dir=tmp_path / "cache", facts=facts, cpu=cpu)


def _lookup(bundle, tmp_path, facts=ORT, cpu=CPU):
    return recorded_choice(bundle, cache_dir=tmp_path / "cache", facts=facts, cpu=cpu)


def test_nothing_recorded(bundle, tmp_path):
    assert _lookup(bundle, tmp_path) == (None, None)
    assert not (tmp_path / "cache").exists()  # looking writes nothing


def test_recorded_choice_round_trips_beside_the_engine_cache(bundle, tmp_path, monkeypatch):
    path = _record(bundle, tmp_path)
    assert path == tmp_path / "cache" / "tuned" / path.name == tuned_path(
        bundle, cache_dir=tmp_path / "cache")
    assert sorted(os.listdir(path.parent)) == [path.name]  # atomic: no temp file left
    data = json.loads(path.read_text())
    with Bundle(bundle) as b:
        assert data["bundle"] == {"path": str(bundle.resolve()), "digest": b.digest}
    assert data["runtime"] == {"name": "onnxruntime", "version": "1.32.0"}
    assert data["machine"] == {**CPU, "ort_version": "1.32.0",
                               "ort_providers": ["CPUExecutionProvider"], "tensorrt": [],
                               "gpus": [], "dla_cores": 0}
    choice, notice = _lookup(bundle, tmp_path)
    assert notice is None and choice == ORT_CHOICE
    assert choice.measured == {"median_ms": 3.5, "agreement": 99.0}
    # the same bundle named by a relative path, or opened, finds the same record
    monkeypatch.chdir(bundle.parent)
    assert _lookup(Path(bundle.name), tmp_path) == (ORT_CHOICE, None)
    with Bundle(bundle) as b:
        assert _lookup(b, tmp_path) == (ORT_CHOICE, None)


def test_a_new_record_replaces_the_old(bundle, tmp_path):
    _record(bundle, tmp_path)
    other = replace(ORT_CHOICE, threads=1, batch=2)
    _record(bundle, tmp_path, other)
    assert _lookup(bundle, tmp_path) == (other, None)


def test_forgotten_when_the_bundle_changes(bundle, tmp_path):
    _record(bundle, tmp_path)
    forge(bundle, {"onnx/fp32.onnx": b"a2", "onnx/int8.onnx": b"c"},  # re-bundled in place
          variants={"fp32": "onnx/fp32.onnx", "int8": "onnx/int8.onnx"})
    choice, notice = _lookup(bundle, tmp_path)
    assert choice is None
    assert notice.startswith("not using the tuned configuration recorded for m.xtrt: "
                             "the bundle changed since it was tuned")
    assert notice.endswith("run `xception-trt tune` again") and "\n" not in notice


def test_another_bundle_at_another_path_has_its_own_record(bundle, tmp_path):
    _record(bundle, tmp_path)
    copy = tmp_path / "copy.xtrt"
    copy.write_bytes(bundle.read_bytes())
    assert _lookup(copy, tmp_path) == (None, None)


@pytest.mark.parametrize("facts, text", [
    (replace(ORT, ort_version="1.33.0"), "ONNX Runtime 1.32.0 -> 1.33.0"),
    (replace(ORT, ort_version=None), "ONNX Runtime 1.32.0 is no longer installed"),
    (replace(ORT, ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider")),
     "ONNX Runtime's providers changed (CPUExecutionProvider -> CPUExecutionProvider, "
     "CUDAExecutionProvider)"),
])
def test_forgotten_when_onnxruntime_changes(bundle, tmp_path, facts, text):
    _record(bundle, tmp_path)
    choice, notice = _lookup(bundle, tmp_path, facts=facts)
    assert choice is None and f": {text}; run" in notice


@pytest.mark.parametrize("cpu, text", [
    ({**CPU, "cpu": "Other CPU"}, "another machine (CPU Test CPU 9000 -> Other CPU)"),
    ({**CPU, "cpu_count": 16}, "another machine (logical cores 2 -> 16)"),
    ({**CPU, "arch": "aarch64"}, "another machine (architecture x86_64 -> aarch64)"),
])
def test_onnxruntime_choice_forgotten_on_another_cpu(bundle, tmp_path, cpu, text):
    _record(bundle, tmp_path)
    choice, notice = _lookup(bundle, tmp_path, cpu=cpu)
    assert choice is None and f": {text}; run" in notice


@pytest.mark.parametrize("facts, text", [
    # the search would now try engines: an ONNX Runtime choice says nothing about them
    (replace(ORT, gpus=(RTX3090,)), "another machine (GPU no GPU -> NVIDIA GeForce RTX 3090 "
                                    "sm_86)"),
    (replace(ORT, flavours=(FlavourFact("tensorrt", "10.13.0.35"),)),
     "the TensorRT installed changed (none -> TensorRT 10.13.0.35)"),
    (replace(ORT, dla_cores=2), "another machine (DLA cores 0 -> 2)"),
])
def test_onnxruntime_choice_forgotten_when_tensorrt_or_a_gpu_arrives(bundle, tmp_path, facts,
                                                                     text):
    _record(bundle, tmp_path)
    choice, notice = _lookup(bundle, tmp_path, facts=facts)
    assert choice is None and f": {text}; run" in notice, notice


def test_tensorrt_choice_is_keyed_by_flavour_version_gpu_and_dla(bundle, tmp_path):
    path = _record(bundle, tmp_path, TRT_CHOICE, facts=GPU)
    data = json.loads(path.read_text())
    assert data["runtime"] == {"name": "tensorrt", "version": "10.13.0.35"}  # what builds it
    assert data["machine"] == {**CPU, "ort_version": "1.32.0",
                               "ort_providers": ["CPUExecutionProvider"],
                               "tensorrt": [{"name": "tensorrt", "version": "10.13.0.35"}],
                               "gpus": [{"name": "NVIDIA GeForce RTX 3090",
                                         "compute_capability": "8.6", "integrated": False}],
                               "dla_cores": 0}
    assert _lookup(bundle, tmp_path, facts=GPU) == (TRT_CHOICE, None)
    cases = [
        (replace(GPU, flavours=(FlavourFact("tensorrt", "10.14.1.0"),)),
         "TensorRT 10.13.0.35 -> 10.14.1.0"),
        (replace(GPU, flavours=()), "TensorRT 10.13.0.35 is no longer installed"),
        (replace(GPU, gpus=(GpuFact(0, "NVIDIA GeForce RTX 4090", "8.9"),)),
         "another machine (GPU NVIDIA GeForce RTX 3090 sm_86 -> NVIDIA GeForce RTX 4090 "
         "sm_89)"),
        (replace(GPU, gpus=()), "another machine (GPU NVIDIA GeForce RTX 3090 sm_86 -> no GPU)"),
        (replace(GPU, dla_cores=2), "another machine (DLA cores 0 -> 2)"),
        # the search also timed ONNX Runtime and its threads: those facts key it too
        (replace(GPU, ort_version="1.40.0"), "ONNX Runtime 1.32.0 -> 1.40.0"),
        (replace(GPU, ort_version=None), "ONNX Runtime 1.32.0 -> not installed"),
        (replace(GPU, ort_providers=()),
         "ONNX Runtime's providers changed (CPUExecutionProvider -> none)"),
        (GPU, None),
        (replace(GPU, flavours=(*GPU.flavours, FlavourFact("tensorrt_rtx", "1.2.0.54"))),
         "the TensorRT installed changed (TensorRT 10.13.0.35 -> TensorRT 10.13.0.35, "
         "TensorRT-RTX 1.2.0.54)"),
    ]
    cpu_moved = _lookup(bundle, tmp_path, facts=GPU, cpu={**CPU, "cpu": "x"})
    assert cpu_moved[0] is None and "another machine (CPU Test CPU 9000 -> x)" in cpu_moved[1]
    for facts, text in cases:
        choice, notice = _lookup(bundle, tmp_path, facts=facts)
        if text is None:
            assert (choice, notice) == (TRT_CHOICE, None)
        else:
            assert choice is None and f": {text}; run" in notice, (text, notice)


def test_tensorrt_choice_needs_a_tensorrt_that_runs_the_bundle(bundle, tmp_path):
    with pytest.raises(BundleError, match="cannot record a TensorRT choice for m.xtrt: "):
        _record(bundle, tmp_path, TRT_CHOICE, facts=ORT)
    with pytest.raises(BundleError, match="ONNX Runtime is not installed"):
        _record(bundle, tmp_path, facts=replace(ORT, ort_version=None))
    assert not tuned_path(bundle, cache_dir=tmp_path / "cache").exists()


def test_record_refuses_a_precision_the_bundle_lacks(tmp_path):
    only_fp32 = forge(tmp_path / "f.xtrt")
    with pytest.raises(BundleError, match="int8"):
        _record(only_fp32, tmp_path)
    with pytest.raises(ConfigError, match="needs a TunedChoice"):
        record_choice(only_fp32, {"precision": "fp32"}, cache_dir=tmp_path)  # type: ignore


def test_record_into_an_unwritable_cache_is_a_bundle_error(bundle, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder goes")
    with pytest.raises(BundleError):
        _record(bundle, tmp_path)


class Raw(str):
    """What an edit returns to replace the record's text."""


def _bend(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    out = edit(data)  # a Raw replaces the record; anything else: data was edited in place
    path.write_text(out if isinstance(out, Raw) else json.dumps(data))


BENT = [
    ("not JSON", lambda d: Raw("{not json"), "not valid JSON"),
    ("an array", lambda d: Raw(json.dumps([d])), "not a JSON object"),
    ("another format", lambda d: d.update(format="x"), "its format is not"),
    ("a newer version", lambda d: d.update(format_version=3), "format version is 3"),
    ("the narrower key of version 1", lambda d: d.update(format_version=1),
     "format version is 1; this xception-trt reads version 2"),
    ("no runtime", lambda d: d.pop("runtime"), "'runtime' is missing"),
    ("runtime version a number", lambda d: d["runtime"].update(version=1.32),
     "runtime is not a name and a version"),
    ("no digest", lambda d: d["bundle"].pop("digest"), "bundle digest is missing"),
    ("machine a list", lambda d: d.update(machine=[]), "'machine' is missing or not"),
    ("unknown precision", lambda d: d["choice"].update(precision="int4"),
     "unknown Precision 'int4'"),
    ("precision a number", lambda d: d["choice"].update(precision=8),
     "precision must be a string"),
    ("runner torch", lambda d: d["choice"].update(runner="torch"), "runner must be one of"),
    ("batch as text", lambda d: d["choice"].update(batch="8"), "batch must be"),
    ("batch a fraction", lambda d: d["choice"].update(batch=8.5), "batch must be"),
    ("batch zero", lambda d: d["choice"].update(batch=0), "batch must be"),
    ("batch huge", lambda d: d["choice"].update(batch=10**9), "batch must be"),
    ("threads true", lambda d: d["choice"].update(threads=True), "threads must be"),
    ("threads zero", lambda d: d["choice"].update(threads=0), "threads must be"),
    ("cuda_graphs text", lambda d: d["choice"].update(runner="tensorrt", threads=None,
                                                       cuda_graphs="yes"), "cuda_graphs must be"),
    ("dla core negative", lambda d: d["choice"].update(runner="tensorrt", threads=None,
                                                        dla_core=-1), "dla_core must be"),
    ("threads on tensorrt", lambda d: d["choice"].update(runner="tensorrt"),
     "threads is an ONNX Runtime option"),
    ("instances (not searched: no key)", lambda d: d["choice"].update(instances=2),
     "unknown key"),
    ("unknown objective", lambda d: d["choice"].update(objective="speed"),
     "objective must be one of"),
    ("unknown key", lambda d: d["choice"].update(engine_path="/etc/passwd"),
     "unknown key(s) engine_path"),
    ("an engine without its hash", lambda d: d["choice"].update(runner="tensorrt",
                                                                engine="engines/x.engine"),
     "engine and engine_sha256 go together"),
    ("no batch", lambda d: d["choice"].pop("batch"), "lacks batch"),
    ("report with an escape", lambda d: d["choice"].update(report="r\x1b[2J.json"),
     "report must be printable"),
    ("measured nested", lambda d: d["choice"].update(measured={"a": {"b": 1}}),
     "must be a number, text"),
    ("measured infinite", lambda d: Raw(json.dumps(d).replace('"median_ms": 3.5',
                                                              '"median_ms": Infinity')),
     "must be finite"),
    ("choice a list", lambda d: d.update(choice=[1]), "'choice' is missing or not"),
]


@pytest.mark.parametrize("case, edit, text", BENT, ids=[b[0] for b in BENT])
def test_a_bent_record_is_ignored_with_a_notice(bundle, tmp_path, case, edit, text):
    path = _record(bundle, tmp_path)
    _bend(path, edit)
    choice, notice = _lookup(bundle, tmp_path)
    assert choice is None
    assert notice.startswith(f"not using the tuned configuration recorded for m.xtrt: the record "
                             f"{path} is unusable (")
    assert text in notice and notice.endswith("; remove it; run `xception-trt tune` again")
    assert "\n" not in notice and "\x1b" not in notice


def test_an_oversized_or_unreadable_record_is_ignored(bundle, tmp_path):
    path = _record(bundle, tmp_path)
    path.write_bytes(b" " * ((1 << 20) + 1))
    assert "larger than 1048576 bytes" in _lookup(bundle, tmp_path)[1]
    path.unlink()
    path.mkdir()  # is_file() is false: nothing recorded
    assert _lookup(bundle, tmp_path) == (None, None)


def test_a_record_for_another_path_under_the_same_name_is_not_this_bundles(bundle, tmp_path):
    path = _record(bundle, tmp_path)
    _bend(path, lambda d: d["bundle"].update(path="/elsewhere/m.xtrt"))
    assert _lookup(bundle, tmp_path) == (None, None)


def test_tuned_choice_checks_its_fields():
    assert TunedChoice("int8", "onnxruntime", 8).precision is Precision.INT8
    with pytest.raises(ConfigError, match="cuda_graphs, dla_core and engine are TensorRT opt"):
        TunedChoice(Precision.FP32, "onnxruntime", 1, dla_core=0)
    with pytest.raises(ConfigError, match="cuda_graphs, dla_core and engine are TensorRT opt"):
        TunedChoice(Precision.FP32, "onnxruntime", 1, engine="e", engine_sha256="0" * 64)
    with pytest.raises(ConfigError, match="threads is an ONNX Runtime option"):
        TunedChoice(Precision.FP16, "tensorrt", 1, threads=2)
    with pytest.raises(ConfigError, match="runner must be one of tensorrt, onnxruntime"):
        TunedChoice(Precision.FP16, "torch", 1)
    with pytest.raises(ConfigError, match="measured holds 65 entries"):
        TunedChoice(Precision.FP16, "tensorrt", 1, measured={str(i): i for i in range(65)})
    assert TunedChoice.from_dict(ORT_CHOICE.to_dict()) == ORT_CHOICE
    assert ORT_CHOICE.to_dict()["measured"] == {"median_ms": 3.5, "agreement": 99.0}


@pytest.mark.parametrize("choice, text", [
    (ORT_CHOICE, "int8 on ONNX Runtime, 2 threads, batch 8"),
    (TunedChoice(Precision.FP32, "onnxruntime", 1, threads=1), "fp32 on ONNX Runtime, 1 thread, "
                                                               "batch 1"),
    (TunedChoice(Precision.FP32, "onnxruntime", 4), "fp32 on ONNX Runtime, batch 4"),
    (TRT_CHOICE, "fp16 TensorRT engine, CUDA graphs, batch 4"),
    (TunedChoice(Precision.INT8, "tensorrt", 2, cuda_graphs=False, dla_core=1),
     "int8 TensorRT engine, DLA core 1, no CUDA graphs, batch 2"),
])
def test_describe(choice, text):
    assert choice.describe() == text


def test_a_dla_choice_needs_a_prebuilt_engine_of_that_core(bundle, tmp_path):
    dla = TunedChoice(Precision.FP16, "tensorrt", 4, dla_core=0)
    with pytest.raises(BundleError, match="DLA core 0 asked"):
        _record(bundle, tmp_path, dla, facts=replace(GPU, dla_cores=2))


def test_tuned_options_fill_only_what_is_unset(bundle, tmp_path):
    from xception_trt.bundle.tuned import IGNORE_HINT, tuned_options

    def opts(given, facts=ORT):
        return tuned_options(bundle, given, cache_dir=tmp_path / "cache", facts=facts, cpu=CPU)

    assert opts({}) == (None, {}, None)  # nothing recorded
    _record(bundle, tmp_path)
    choice, fill, notice = opts({})
    assert choice == ORT_CHOICE
    assert fill == {"precision": Precision.INT8, "tensorrt": False, "threads": 2}
    assert notice == ("using the tuned configuration of m.xtrt (int8 on ONNX Runtime, 2 threads, "
                      f"batch 8) from /r/report.json; {IGNORE_HINT}")
    # given options win (the same value given is no override); None counts as unset
    _, fill, notice = opts({"precision": "int8", "threads": None})
    assert fill == {"tensorrt": False, "threads": 2} and "given options win" not in notice
    _, fill, notice = opts({"threads": 1})
    assert fill == {"precision": Precision.INT8, "tensorrt": False}
    assert "; given options win: threads 1; " in notice
    # another precision: the choice was measured for int8, so none of it is used
    choice, fill, notice = opts({"precision": "fp32"})
    assert (choice, fill) == (None, {})
    assert notice == ("not using the tuned configuration of m.xtrt (int8 on ONNX Runtime, 2 "
                      "threads, batch 8): it was measured for int8, and precision fp32 was "
                      "given; leave the precision unset to use it")
    # an engine option, or tensorrt given, keeps the engine choice; so does onnxruntime=False
    for given, text in (({"device": 0}, "device (a TensorRT engine where one runs)"),
                        ({"cuda_graphs": True}, "cuda_graphs (a TensorRT engine"),
                        ({"tensorrt": True}, "tensorrt (a TensorRT engine"),
                        ({"onnxruntime": False}, "onnxruntime=False")):
        _, fill, notice = opts(given)
        assert "tensorrt" not in fill and f"given options win: {text}" in notice, notice
    _, fill, _ = opts({"cuda_graphs": False, "device": None})  # not asking for an engine
    assert fill["tensorrt"] is False
    # a TensorRT choice: CUDA graphs and the DLA core
    trt = TunedChoice(Precision.INT8, "tensorrt", 2, cuda_graphs=True, dla_core=None,
                      report=None)
    _record(bundle, tmp_path, trt, facts=GPU)
    choice, fill, notice = opts({}, facts=GPU)
    assert fill == {"precision": Precision.INT8, "cuda_graphs": True}
    assert notice.startswith("using the tuned configuration of m.xtrt (int8 TensorRT engine, "
                             "CUDA graphs, batch 2) recorded by `xception-trt tune`; ")
    _, fill, notice = opts({"cuda_graphs": False}, facts=GPU)
    assert "cuda_graphs" not in fill and "given options win: cuda_graphs False" in notice


def test_record_is_never_written_outside_the_cache(bundle, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "tuned").symlink_to(elsewhere)
    with pytest.raises(BundleError, match="leads outside the cache"):
        _record(bundle, tmp_path)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("edit", [
    lambda d: d["machine"].update(cpu="Evil\x1b[2J CPU"),
    lambda d: d["runtime"].update(version="1.32\x1b]0;x\x07"),
    lambda d: d["runtime"].update(name="\x1b[31mrt"),
])
def test_a_notice_shows_no_escape_from_the_record(bundle, tmp_path, edit):
    path = _record(bundle, tmp_path)
    _bend(path, edit)
    choice, notice = _lookup(bundle, tmp_path)
    assert choice is None and notice.isprintable() and "?" in notice


def test_only_a_throughput_or_energy_tune_gives_a_default_batch():
    assert TunedChoice(Precision.INT8, "onnxruntime", 8, objective="throughput").default_batch == 8
    assert TunedChoice(Precision.INT8, "onnxruntime", 8, objective="energy").default_batch == 8
    assert TunedChoice(Precision.INT8, "onnxruntime", 1, objective="latency").default_batch is None


def test_an_onnxruntime_choice_opens_on_its_provider(bundle, tmp_path):
    from xception_trt.bundle.tuned import tuned_options

    on_cpu = replace(ORT_CHOICE, provider="CPUExecutionProvider")
    _record(bundle, tmp_path, on_cpu)
    _, fill, _ = tuned_options(bundle, {}, cache_dir=tmp_path / "cache", facts=ORT, cpu=CPU)
    assert fill == {"precision": Precision.INT8, "tensorrt": False, "threads": 2,
                    "providers": ["CPUExecutionProvider"]}
    _, fill, notice = tuned_options(bundle, {"providers": ["CUDAExecutionProvider"]},
                                    cache_dir=tmp_path / "cache", facts=ORT, cpu=CPU)
    assert "providers" not in fill and "given options win: providers" in notice
    with pytest.raises(ConfigError, match="provider is an ONNX Runtime option"):
        TunedChoice(Precision.FP16, "tensorrt", 1, provider="CUDAExecutionProvider")


ENGINE = "engines/fp32.engine"
SIDECAR = Path(__file__).parent / "data" / "engine_sidecar_0.1.0.json"  # fp32 tensorrt_rtx SM86
RTX_FACTS = DeviceFacts(flavours=(FlavourFact("tensorrt_rtx", "1.7.1.116"),), gpus=(RTX3090,),
                        driver="580.0", ort_version="1.32.0",
                        ort_providers=("CPUExecutionProvider",), onnx=True)


@pytest.fixture
def engine_bundle(tmp_path) -> Path:
    """A bundle with one prebuilt engine member (fp32, TensorRT-RTX, SM86) and its sidecar."""
    def add_engine(d):
        d["engines"] = [{"member": ENGINE, "sidecar": ENGINE + ".json"}]

    return forge(tmp_path / "m.xtrt", {"onnx/fp32.onnx": b"a", ENGINE: b"engine bytes",
                                       ENGINE + ".json": SIDECAR.read_bytes()},
                 edit=add_engine)


def test_a_choice_of_a_prebuilt_engine_is_recorded_with_its_member(engine_bundle, tmp_path):
    import hashlib

    sha = hashlib.sha256(b"engine bytes").hexdigest()
    choice = TunedChoice(Precision.FP32, "tensorrt", 2, cuda_graphs=False, engine=ENGINE,
                         engine_sha256=sha)
    path = _record(engine_bundle, tmp_path, choice, facts=RTX_FACTS)
    data = json.loads(path.read_text())
    assert data["choice"]["engine"] == ENGINE and data["choice"]["engine_sha256"] == sha
    assert data["runtime"] == {"name": "tensorrt_rtx", "version": "1.7.1.116"}
    assert _lookup(engine_bundle, tmp_path, facts=RTX_FACTS) == (choice, None)
    # another SHA-256 than the member's: not the engine that was tuned
    with pytest.raises(BundleError, match=r"^the engine engines/fp32\.engine of m\.xtrt is not "
                                          r"the one tuned \(another SHA-256\)$"):
        _record(engine_bundle, tmp_path, replace(choice, engine_sha256="0" * 64),
                facts=RTX_FACTS)
    # a member that is no engine (the ONNX), and a name that is no member
    for name in ("onnx/fp32.onnx", "engines/other.engine"):
        with pytest.raises(BundleError, match=f"^m.xtrt has no prebuilt engine {name}$"):
            _record(engine_bundle, tmp_path, replace(choice, engine=name), facts=RTX_FACTS)


def test_the_record_says_when_it_was_made(bundle, tmp_path):
    import re

    data = json.loads(_record(bundle, tmp_path).read_text())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["recorded"])


def test_a_machine_fact_of_no_known_kind_is_another_machine(bundle, tmp_path):
    path = _record(bundle, tmp_path)
    _bend(path, lambda d: d["machine"].update(hostname="elsewhere"))
    choice, notice = _lookup(bundle, tmp_path)
    assert choice is None and notice == ("not using the tuned configuration recorded for m.xtrt: "
                                         "another machine; run `xception-trt tune` again")


def test_tuned_choice_messages_name_the_field():
    with pytest.raises(ConfigError, match=r"^TunedChoice\.threads is an ONNX Runtime option; "
                                          r"the tensorrt runner takes none$"):
        TunedChoice(Precision.FP16, "tensorrt", 1, threads=2)
    with pytest.raises(ConfigError, match=r"^TunedChoice\.measured must be a mapping, got list$"):
        TunedChoice(Precision.FP16, "tensorrt", 1, measured=[("median_ms", 1.0)])
    assert TunedChoice(Precision.FP16, "tensorrt", 1,
                       measured={"note": "ok"}).measured == {"note": "ok"}
    with pytest.raises(ConfigError, match=r"^TunedChoice\.measured\['note'\] must be printable "
                                          r"text of at most 4096 characters$"):
        TunedChoice(Precision.FP16, "tensorrt", 1, measured={"note": "a\x1b[2J"})
