"""Tests with teeth for bundle/ (issue 31): each pins a rule at its boundary, with values that
differ per field, so that the realistic bugs an outside mutation run planted fail here.

- format: a manifest of ``FORMAT_VERSION + 1`` is refused (not only 99), ``FORMAT_VERSION``
  opens; every engine and sidecar the manifest names must have a hash record.
- cache: the build key names the device as the builder records it (``"8.7"``, not ``SM87``).
- choice: TensorRT-RTX builds for 7.5/8.0/8.6/8.9/12.x only (not Jetson Thor's 10.x/11.x).
- doctor: the engine check honours the asked max batch (exactly the limit loads, one more not).
"""

from __future__ import annotations

import hashlib
import json
import os
from types import SimpleNamespace

import pytest
from bundle_forge import forge, manifest_dict

from xception_trt.bundle import cache
from xception_trt.bundle.choice import BuildTarget, rtx_can_build_for
from xception_trt.bundle.doctor import _bundle_prebuild, diagnose, format_report
from xception_trt.bundle.facts import DeviceFacts, FlavourFact, GpuFact
from xception_trt.bundle.format import FORMAT_VERSION, Bundle, Manifest
from xception_trt.config import ModelSpec, Precision
from xception_trt.errors import BundleError
from xception_trt.trt import builder as builder_mod
from xception_trt.trt.compat import engine_cache_key

# ---------------------------------------------------------------------------------------------
# format: the version boundary and the hash records


def test_format_version_one_newer_than_supported_is_refused_and_the_current_one_opens(tmp_path):
    newer = forge(tmp_path / "newer.xtrt",
                  edit=lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(BundleError, match=rf"format version {FORMAT_VERSION + 1}, newer than "
                                          rf"this xception-trt reads \({FORMAT_VERSION}\)"):
        Bundle(newer)
    current = forge(tmp_path / "current.xtrt",
                    edit=lambda m: m.update(format_version=FORMAT_VERSION))
    with Bundle(current) as b:
        assert b.manifest.format_version == FORMAT_VERSION


def _sidecar_json(max_batch: int = 8) -> bytes:
    data = b"plan" * 4
    return json.dumps({
        "schema": 1, "tensorrt": {"flavour": "tensorrt", "version": "10.3.0.30"},
        "engine": {"file": "a.engine", "bytes": len(data),
                   "sha256": hashlib.sha256(data).hexdigest()},
        "precision": "fp16", "input_format": "float-nchw", "model_spec": ModelSpec().to_dict(),
        "device": {"name": "NVIDIA GeForce RTX 3090", "compute_capability": "8.6"},
        "targets": None, "build_options": {}, "max_batch": max_batch,
        "rebuild_command": "xception-trt build m.onnx -o engines"}).encode()


ENGINE, SIDECAR = "engines/a.engine", "engines/a.engine.json"


@pytest.mark.parametrize("hashed, missing", [
    ((SIDECAR,), ENGINE),   # the engine has no hash record
    ((ENGINE,), SIDECAR),   # its sidecar has none
    ((ENGINE, SIDECAR), None),
])
def test_every_engine_and_sidecar_the_manifest_names_has_a_hash_record(hashed, missing):
    side = _sidecar_json()
    content = {ENGINE: b"plan" * 4, SIDECAR: side}
    members = {"onnx/fp32.onnx": b"graph", **{n: content[n] for n in hashed}}
    data = manifest_dict(members)
    data["engines"] = [{"member": ENGINE, "sidecar": SIDECAR}]
    if missing is None:
        m = Manifest.from_dict(data, sidecars={SIDECAR: side}, where="b.xtrt")
        assert [e.member for e in m.engines] == [ENGINE]
        assert m.engines[0].sidecar.max_batch == 8
    else:
        with pytest.raises(BundleError, match=rf"names {missing} but records no hash"):
            Manifest.from_dict(data, sidecars={SIDECAR: side}, where="b.xtrt")


# ---------------------------------------------------------------------------------------------
# cache: the build key is the key the builder records


ORIN = GpuFact(0, "NVIDIA Jetson AGX Orin", "8.7", True)


def _builder_key(monkeypatch, target: BuildTarget, precision: Precision, sha: str) -> str:
    """The cache key ``build_engine`` records for this target: its device from the builder's
    own probe (``_build_gpu``, which reports ``compute_capability`` as ``"8.7"``)."""
    monkeypatch.setattr(builder_mod, "_build_gpu", lambda device=0: {
        "index": target.gpu.index, "name": target.gpu.name,
        "compute_capability": target.gpu.compute_capability,
        "integrated": target.gpu.integrated})
    config = cache._build_config(target, precision)
    flavour = SimpleNamespace(is_rtx=target.flavour == "tensorrt_rtx", name=target.flavour,
                              version=target.version)
    gpu, targets = builder_mod._device_and_targets(flavour, config)  # type: ignore[arg-type]
    if gpu is not None:
        gpu.pop("integrated")
    options = config.to_dict()
    options["precision"] = precision.value
    return engine_cache_key(onnx_sha256=sha, options=options, flavour_name=target.flavour,
                            version=target.version, device=gpu, targets=targets)


@pytest.mark.parametrize("flavour, version, targets", [
    ("tensorrt", "10.3.0.30", None),            # NVIDIA TensorRT: keyed on the GPU ("8.7")
    ("tensorrt_rtx", "1.7.1.116", ("SM89",)),   # TensorRT-RTX: keyed on its targets
])
def test_build_key_matches_the_key_the_builder_records(monkeypatch, flavour, version, targets):
    sha = "ab" * 32
    target = BuildTarget(flavour, version, ORIN, targets, Precision.FP16, (1, 4, 8))
    key = cache.build_key(target, Precision.FP16, sha)
    assert key == _builder_key(monkeypatch, target, Precision.FP16, sha)
    # every input of the key counts: the GPU, the profile, the precision, the graph
    other_gpu = BuildTarget(flavour, version, GpuFact(0, ORIN.name, "8.6"), targets,
                            Precision.FP16, (1, 4, 8))
    assert (cache.build_key(other_gpu, Precision.FP16, sha) != key) is (targets is None)
    assert cache.build_key(BuildTarget(flavour, version, ORIN, targets, Precision.FP16,
                                       (1, 8, 8)), Precision.FP16, sha) != key
    assert cache.build_key(target, Precision.INT8, sha) != key
    assert cache.build_key(target, Precision.FP16, "cd" * 32) != key


def test_engine_folder_names_the_target_profile_and_both_hashes():
    sha = "ab" * 32
    target = BuildTarget("tensorrt", "10.3.0.30", ORIN, None, Precision.FP16, (1, 4, 8))
    key = cache.build_key(target, Precision.FP16, sha)
    assert cache.engine_folder(target, Precision.FP16, sha) == (
        f"tensorrt-10.3.0.30-sm87-fp16-b1-4-8-{sha[:12]}-{key[:12]}")
    rtx = BuildTarget("tensorrt_rtx", "1.7.1.116", ORIN, ("SM86", "SM89"), Precision.INT8,
                      (2, 3, 5))
    assert cache.engine_folder(rtx, Precision.INT8, sha).startswith(
        "tensorrt-rtx-1.7.1.116-sm86-sm89-int8-b2-3-5-")


# ---------------------------------------------------------------------------------------------
# choice: what TensorRT-RTX builds for


RTX_BUILDS = ["7.5", "8.0", "8.6", "8.9", "12.0", "12.1", "SM120", "sm_86"]
JETSON = ["7.2", "8.7", "11.0", "SM87"]
NEITHER = ["6.1", "7.0", "9.0", "10.0", "10.3", "11.1", "13.0", "8.8", "7.6"]


@pytest.mark.parametrize("cc", RTX_BUILDS + JETSON + NEITHER)
def test_rtx_builds_only_for_rtx_architectures(cc):
    why = rtx_can_build_for(cc)
    if cc in RTX_BUILDS:
        assert why is None
    elif cc in JETSON:
        assert why is not None and "(a Jetson GPU)" in why and "JetPack" in why
    else:
        assert why is not None and "install NVIDIA TensorRT" in why and "Jetson" not in why


def test_doctor_prebuild_uses_rtx_only_where_rtx_builds():
    got = _bundle_prebuild("b.xtrt", ["SM89", "SM100", "SM110", "SM87"])
    assert got["SM89"] == "xception-trt bundle b.xtrt --cc sm89 -o b.xtrt --force"
    for cc in ("SM100", "SM110", "SM87"):
        assert got[cc] == ("on the target machine (NVIDIA TensorRT builds for the GPU it runs "
                           "on): xception-trt bundle b.xtrt -o b.xtrt --force")


# ---------------------------------------------------------------------------------------------
# doctor: the asked max batch


def test_doctor_engine_check_honours_the_asked_max_batch(tmp_path):
    data = b"plan" * 4
    engine = tmp_path / "a.engine"
    engine.write_bytes(data)
    (tmp_path / "a.engine.json").write_bytes(_sidecar_json(max_batch=8))
    facts = DeviceFacts(flavours=(FlavourFact("tensorrt", "10.3.0.30"),),
                        gpus=(GpuFact(0, "NVIDIA GeForce RTX 3090", "8.6"),))
    for asked, loads in ((None, True), (1, True), (8, True), (9, False)):
        (row,) = diagnose(engine, facts=facts, max_batch=asked).engines
        assert row["loads"] is loads, (asked, row)
        assert row["max_batch"] == 8
        if not loads:
            assert row["why"] == "batch profile up to 8, batch 9 asked"
            assert "here" in diagnose(engine, facts=facts, max_batch=asked).prebuild


# ---------------------------------------------------------------------------------------------
# choice: each way not taken is said, in words, and the next flavour is still tried


def _manifest(*precisions: str) -> Manifest:
    from xception_trt.bundle.format import Member, VariantEntry
    from xception_trt.config import InputFormat

    variants = {Precision(p): VariantEntry(Precision(p), f"onnx/{p}.onnx") for p in precisions}
    members = {v.member: Member(v.member, "0" * 64, 1) for v in variants.values()}
    return Manifest(ModelSpec(), InputFormat.FLOAT_NCHW, variants, (), members,
                    batch_profile=(1, 4, 8))


def _machine(*flavours: str, gpus=(), onnx=True, ort="1.32.0", reason="no NVIDIA driver found"):
    return DeviceFacts(flavours=tuple(FlavourFact(*f.split(" ")) for f in flavours),
                       gpus=tuple(GpuFact(i, *g) for i, g in enumerate(gpus)),
                       ort_version=ort, ort_providers=("CPUExecutionProvider",) if ort else (),
                       onnx=onnx, gpu_reason="" if gpus else reason)


RTX_1 = "1.7.1.116"
ADA = ("NVIDIA GeForce RTX 4090", "8.9")
ORIN_GPU = ("Orin", "8.7", True)


def test_a_flavour_that_is_missing_or_refused_does_not_stop_the_next_one():
    from xception_trt.bundle.choice import ChoiceKind, Request, choose

    # NVIDIA TensorRT (tried first) is not installed: TensorRT-RTX still builds for the Ada GPU
    c = choose(_manifest("fp16"), _machine(f"tensorrt_rtx {RTX_1}", gpus=[ADA]),
               Request(Precision.FP16))
    assert c.kind is ChoiceKind.BUILD and c.build.flavour == "tensorrt_rtx"
    assert c.build.targets == ("SM89",) and c.build.profile == (1, 4, 8)
    assert [(r.what, r.why) for r in c.rejected] == [("build with tensorrt", "not installed here")]
    assert c.reason == (f"the bundle has no prebuilt engine here; building fp16 with "
                        f"tensorrt_rtx {RTX_1} for SM89 (NVIDIA GeForce RTX 4090), batch 1-8, "
                        "from the fp16 ONNX")
    # a larger batch asked than the bundle's profile: the built profile reaches it
    big = choose(_manifest("fp16"), _machine(f"tensorrt_rtx {RTX_1}", gpus=[ADA]),
                 Request(Precision.FP16, max_batch=32))
    assert big.build.profile == (1, 32, 32)


def test_onnx_package_missing_is_said_and_onnx_runtime_takes_over():
    from xception_trt.bundle.choice import ChoiceKind, Request, choose

    c = choose(_manifest("fp32"), _machine("tensorrt 10.3.0.30", gpus=[ADA], onnx=False),
               Request(Precision.FP32))
    assert c.kind is ChoiceKind.ONNXRUNTIME and c.precision is Precision.FP32
    assert c.variant.member == "onnx/fp32.onnx"
    onnx_why = ("building reads the bundled ONNX with the onnx package, which is not installed "
                "(pip install 'xception-trt[onnx]')")
    assert [(r.what, r.why) for r in c.rejected] == [
        ("build with tensorrt", onnx_why), ("build with tensorrt_rtx", "not installed here")]
    assert c.reason == ("no TensorRT engine can run here (build with tensorrt_rtx: not "
                        "installed here); running the bundled fp32 ONNX with ONNX Runtime 1.32.0")


def test_no_gpu_and_onnx_runtime_not_allowed_or_missing():
    from xception_trt.bundle.choice import ChoiceKind, Request, choose

    m = _manifest("int8")
    c = choose(m, _machine(), Request(Precision.INT8))
    assert c.kind is ChoiceKind.ONNXRUNTIME and c.precision is Precision.INT8
    assert c.reason == ("no TensorRT engine can run here (build: no NVIDIA GPU 0 here (no NVIDIA "
                        "driver found)); running the bundled int8 ONNX with ONNX Runtime 1.32.0")
    no = choose(m, _machine(), Request(Precision.INT8, onnxruntime=False))
    assert no.kind is ChoiceKind.NONE and no.precision is Precision.INT8
    assert [(r.what, r.why) for r in no.rejected] == [
        ("build", "no NVIDIA GPU 0 here (no NVIDIA driver found)"),
        ("ONNX Runtime", "not allowed")]
    assert no.reason == ("nothing here can run the bundle: build: no NVIDIA GPU 0 here (no "
                         "NVIDIA driver found); ONNX Runtime: not allowed")
    missing = choose(m, _machine(ort=None, reason=""), Request(Precision.INT8, build=False))
    assert missing.kind is ChoiceKind.NONE
    assert [(r.what, r.why) for r in missing.rejected] == [
        ("build", "building was not allowed"),
        ("ONNX Runtime", "not installed (pip install 'xception-trt[ort]')")]
    other_gpu = choose(m, _machine(gpus=[ADA], reason=""), Request(Precision.INT8, device=1))
    assert other_gpu.rejected[0].why == "no NVIDIA GPU 1 here"


def test_rtx_refuses_a_jetson_gpu_and_names_why():
    from xception_trt.bundle.choice import ChoiceKind, Request, choose

    c = choose(_manifest("fp16"), _machine(f"tensorrt_rtx {RTX_1}", gpus=[ORIN_GPU]),
               Request(Precision.FP16, flavour="tensorrt_rtx", onnxruntime=False))
    assert c.kind is ChoiceKind.NONE
    assert [(r.what, r.why) for r in c.rejected][0] == (
        "build with tensorrt_rtx", "TensorRT-RTX does not build for sm_87 (a Jetson GPU); "
        "JetPack's NVIDIA TensorRT builds on the device")


def test_request_takes_the_old_backend_keyword_with_a_warning_at_the_caller():
    import warnings

    from xception_trt.bundle.choice import Request

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = Request(Precision.FP16, backend="tensorrt_rtx")
    assert r.flavour == "tensorrt_rtx"
    (w,) = caught
    assert w.category is DeprecationWarning
    if "MUTANT_UNDER_TEST" not in os.environ:  # mutmut's trampoline adds a frame
        assert w.filename == __file__  # the warning points at the caller's line
    assert str(w.message) == "Request: backend= is deprecated; use flavour="
    assert Request(Precision.FP16, flavour="tensorrt").flavour == "tensorrt"


# ---------------------------------------------------------------------------------------------
# doctor: a whole report, word for word, for a bundle and an engine on a recorded machine


RTX3090_FACTS = DeviceFacts(
    flavours=(FlavourFact("tensorrt", "10.3.0.30"),),
    gpus=(GpuFact(0, "NVIDIA GeForce RTX 3090", "8.6"),), driver="580.1", dla_cores=0,
    ort_version="1.32.0", ort_providers=("CPUExecutionProvider",), onnx=True, host="ws1")


def _fp32_sidecar_json() -> bytes:
    return json.dumps(json.loads(_sidecar_json()) | {"precision": "fp32"}).encode()


@pytest.fixture
def doctor_bundle(tmp_path):
    return _doctor_bundle(tmp_path / "doc.xtrt", _sidecar_json())


@pytest.fixture
def fp32_engine_bundle(tmp_path):
    return _doctor_bundle(tmp_path / "e32.xtrt", _fp32_sidecar_json())


def _fp32_stand_in(precision: Precision = Precision.FP32, doc: str = "") -> bytes:
    """A one-node ONNX graph (Identity) carrying our metadata as the FP32 float-nchw variant
    (what doctor and the cache read of a graph: its metadata and its bytes, not its layers)."""
    from onnx import TensorProto, helper

    from xception_trt.config import InputFormat
    from xception_trt.onnx_meta import write_metadata

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 71, 71])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 71, 71])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y])
    model = helper.make_model(graph, doc_string=doc)
    write_metadata(model, {"model_spec": STAND_IN_SPEC, "precision": precision,
                           "input_format": InputFormat.FLOAT_NCHW})
    return model.SerializeToString()


STAND_IN_SPEC = ModelSpec(num_classes=4, width=0.125, middle_blocks=2, input_size=71,
                          labels=("cat", "dog", "fox", "owl"))


def _doctor_bundle(path, side):
    graph = _fp32_stand_in()
    members = {"onnx/fp32.onnx": graph, ENGINE: b"plan" * 4, SIDECAR: side}

    def edit(_):
        data = manifest_dict(members, spec=STAND_IN_SPEC)
        data["engines"] = [{"member": ENGINE, "sidecar": SIDECAR}]
        data["variants"]["fp32"]["accuracy"] = {"agreement": 99.25, "images": 64}
        data.update(source={"checkpoint": "tiny"}, batch_profile=[1, 4, 8])
        return data

    return forge(path, members, edit=edit), len(graph)


def test_doctor_on_a_bundle_reports_every_field(doctor_bundle):
    path, graph_bytes = doctor_bundle
    rep = diagnose(path, facts=RTX3090_FACTS, max_batch=9, cc=["sm89", "8.7", "sm89"])
    assert rep.kind == "bundle" and rep.target == str(path)
    s = rep.summary
    assert s["format_version"] == FORMAT_VERSION and s["members_verified"] == 3
    assert s["bytes"] == path.stat().st_size and s["made_with"] == "test"
    assert s["created"] == "now" and s["source"] == {"checkpoint": "tiny"}
    assert s["precisions"] == ["fp32"] and s["batch_profile"] == [1, 4, 8]
    assert s["accuracy"] == {"fp32": {"agreement": 99.25, "images": 64}}
    (row,) = rep.engines
    assert row == {"engine": ENGINE, "precision": "fp16", "flavour": "tensorrt",
                   "version": "10.3.0.30", "targets": None, "compute_capability": "8.6",
                   "max_batch": 8, "loads": False, "why": "batch profile up to 8, batch 9 asked"}
    (choice,) = rep.choices
    assert choice.precision is Precision.FP32 and choice.kind.value == "build"
    assert choice.build.profile == (1, 9, 9)
    assert list(rep.prebuild) == ["SM89", "SM87"]  # named targets, once each, in order
    assert rep.prebuild["SM89"] == (f"xception-trt bundle {path} --cc sm89 -o {path} --force")
    text = format_report(rep)
    mib = path.stat().st_size / 2**20
    assert text.splitlines() == [
        "machine: ws1",
        "  TensorRT:      tensorrt 10.3.0.30",
        "  driver:        580.1",
        "  GPUs:          0: NVIDIA GeForce RTX 3090 (compute capability 8.6, sm86)",
        "  DLA cores:     0",
        "  ONNX Runtime:  1.32.0 (CPUExecutionProvider)",
        "  onnx package:  installed (building from a bundle reads its ONNX)",
        f"bundle: {path} (format {FORMAT_VERSION}, 3 members verified, {mib:.1f} MiB, made by "
        "xception-trt test)",
        "  variant fp32 (default: what opening it runs without --precision): top-1 agreement "
        "with fp32 99.25 % on 64 images",
        "engines:",
        f"  {ENGINE} (fp16, tensorrt 10.3.0.30, sm_86): does not load here: batch profile up to "
        "8, batch 9 asked",
        "opening it here:",
        f"  fp32: builds an engine — {choice.reason}",
        "prebuild:",
        f"  SM89: xception-trt bundle {path} --cc sm89 -o {path} --force",
        "  SM87: on the target machine (NVIDIA TensorRT builds for the GPU it runs on): "
        f"xception-trt bundle {path} -o {path} --force",
    ]
    # this machine's own GPUs when no target is named
    assert list(diagnose(path, facts=RTX3090_FACTS).prebuild) == ["SM86"]
    ok = diagnose(path, facts=RTX3090_FACTS, max_batch=8)
    assert ok.engines[0]["loads"] is True and "loads here" in format_report(ok)


def test_doctor_on_a_machine_without_anything(tmp_path):
    bare = DeviceFacts(gpu_reason="no NVIDIA driver found")
    rep = diagnose(None, facts=bare)
    assert rep.kind is None and rep.target is None and rep.engines == () and rep.prebuild == {}
    assert format_report(rep).splitlines() == [
        "machine: this machine",
        "  TensorRT:      none installed",
        "  driver:        none",
        "  GPUs:          none (no NVIDIA driver found)",
        "  DLA cores:     0",
        "  ONNX Runtime:  not installed (pip install 'xception-trt[ort]')",
        "  onnx package:  not installed (building from a bundle reads its ONNX)",
    ]


def test_doctor_on_an_engine_report_and_prebuild(tmp_path):
    data = b"plan" * 4
    engine = tmp_path / "a.engine"
    engine.write_bytes(data)
    (tmp_path / "a.engine.json").write_bytes(_sidecar_json(max_batch=8))
    rep = diagnose(engine, facts=RTX3090_FACTS, cc=["sm89", "sm87"])
    assert rep.kind == "engine" and rep.engines[0]["loads"] is True
    assert rep.summary == {"precision": "fp16", "bytes": 16,
                           "rebuild_command": "xception-trt build m.onnx -o engines"}
    # RTX targets only (NVIDIA TensorRT builds on the target itself), and no "here": it loads
    assert rep.prebuild == {"SM89": "xception-trt build m.onnx -o engines --flavour "
                                    "tensorrt_rtx --cc sm89"}
    assert format_report(rep).splitlines()[7:] == [
        f"engine: {engine} (fp16, 0.0 MiB)", "engines:",
        f"  {engine} (fp16, tensorrt 10.3.0.30, sm_86): loads here", "prebuild:",
        "  SM89: xception-trt build m.onnx -o engines --flavour tensorrt_rtx --cc sm89"]
    elsewhere = DeviceFacts(flavours=(FlavourFact("tensorrt", "10.3.0.30"),),
                            gpus=(GpuFact(0, "NVIDIA GeForce RTX 4090", "8.9"),))
    rep2 = diagnose(engine, facts=elsewhere)
    assert rep2.engines[0]["loads"] is False and "on sm_89" in rep2.engines[0]["why"]
    assert rep2.prebuild == {
        "SM89": "xception-trt build m.onnx -o engines --flavour tensorrt_rtx --cc sm89",
        "here": "xception-trt build m.onnx -o engines --flavour tensorrt"}
    nothing = diagnose(engine, facts=DeviceFacts())
    assert nothing.prebuild["here"].endswith("--flavour tensorrt")


def test_recorded_facts_files(tmp_path):
    from xception_trt.bundle.doctor import recorded_facts
    from xception_trt.errors import ConfigError

    facts = RTX3090_FACTS.to_dict()
    (tmp_path / "wrapped.json").write_text(json.dumps({"machine": facts, "other": 1}))
    (tmp_path / "bare.json").write_text(json.dumps(facts))
    assert recorded_facts(tmp_path / "wrapped.json") == RTX3090_FACTS
    assert recorded_facts(tmp_path / "bare.json") == RTX3090_FACTS
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"list.json holds no machine facts"):
        recorded_facts(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match=r"cannot read machine facts .*bad.json"):
        recorded_facts(tmp_path / "bad.json")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match=r"nested too deeply"):
        recorded_facts(tmp_path / "deep.json")
    with pytest.raises(ConfigError, match=r"cannot read machine facts"):
        recorded_facts(tmp_path / "missing.json")


def test_prebuild_command_quotes_paths():
    from xception_trt.bundle.doctor import prebuild_command

    assert prebuild_command("my b.xtrt", "8.9") == (
        "xception-trt bundle 'my b.xtrt' --cc sm89 -o 'my b.xtrt' --force")
    assert prebuild_command("b.xtrt", "sm_120", flavour="tensorrt") == (
        "on the target machine (NVIDIA TensorRT builds for the GPU it runs on): "
        "xception-trt bundle b.xtrt -o b.xtrt --force")


# ---------------------------------------------------------------------------------------------
# format: every refusal names the field and the fix, word for word; the limits are exact


REMAKE = "copy the bundle again or remake it with `xception-trt bundle`"
GOOD = {"onnx/fp32.onnx": b"not really onnx", "labels.txt": b"cat\ndog\nbird\n"}


def _bent(path, edit):
    return forge(path, dict(GOOD), edit=edit)


def _members(m):
    return m["members"]


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format="zip"),
     "{p} is not an xception-trt bundle (no xception-trt-bundle manifest); make one with "
     "`xception-trt bundle`"),
    (lambda m: m.update(format_version="1"), "{p} has no valid format_version; remake the bundle"),
    (lambda m: m.update(format_version=True), "{p} has no valid format_version; remake the bundle"),
    (lambda m: m.update(members=[]), "bundle {p} has no valid member list; " + REMAKE),
    (lambda m: m.update(members={"labels.txt": 1}), "bundle {p} has no valid member list; "
     + REMAKE),
    (lambda m: _members(m)["labels.txt"].update(sha256="A" * 64),
     "bundle {p}: member 'labels.txt' has an invalid SHA-256 '" + "A" * 64 + "' (64 lowercase "
     "hex digits expected); " + REMAKE),
    (lambda m: _members(m)["labels.txt"].update(sha256="0" * 63),
     "bundle {p}: member 'labels.txt' has an invalid SHA-256 '" + "0" * 63 + "' (64 lowercase "
     "hex digits expected); " + REMAKE),
    (lambda m: _members(m)["labels.txt"].update(bytes=-1),
     "bundle {p}: member 'labels.txt' has an invalid size '-1' (a byte count expected); "
     + REMAKE),
    (lambda m: _members(m)["labels.txt"].update(bytes=1 << 48),
     "bundle {p}: member 'labels.txt' has an invalid size '281474976710656' (a byte count "
     "expected); " + REMAKE),
    (lambda m: _members(m)["labels.txt"].update(bytes=True),
     "bundle {p}: member 'labels.txt' has an invalid size 'True' (a byte count expected); "
     + REMAKE),
    (lambda m: _members(m)["labels.txt"].update(bytes=14),
     "bundle {p}: member labels.txt is 13 bytes but its manifest says 14 (tampered with or "
     "corrupted); " + REMAKE),
    (lambda m: _members(m).update({"extra.bin": {"sha256": "0" * 64, "bytes": 1}}),
     "bundle {p} lacks member(s) extra.bin that its manifest lists; " + REMAKE),
    (lambda m: _members(m).update({"a/../b": {"sha256": "0" * 64, "bytes": 1}}),
     "bundle {p}: the manifest names an invalid member 'a/../b' (a relative path inside the "
     "bundle, without '..', expected); " + REMAKE),
    (lambda m: m.update(batch_profile=[2, 1, 4]),
     "{p} has an invalid batch_profile [2, 1, 4] (three integers 1 <= min <= opt <= max <= "
     "65536 expected); remake the bundle with `xception-trt bundle`"),
    (lambda m: m.update(batch_profile=[1, 1, 65537]),
     "{p} has an invalid batch_profile [1, 1, 65537] (three integers 1 <= min <= opt <= max <= "
     "65536 expected); remake the bundle with `xception-trt bundle`"),
    (lambda m: m.update(batch_profile=[0, 1, 1]),
     "{p} has an invalid batch_profile [0, 1, 1] (three integers 1 <= min <= opt <= max <= "
     "65536 expected); remake the bundle with `xception-trt bundle`"),
    (lambda m: m.update(batch_profile=[1, 2, True]),
     "{p} has an invalid batch_profile [1, 2, True] (three integers 1 <= min <= opt <= max <= "
     "65536 expected); remake the bundle with `xception-trt bundle`"),
    (lambda m: m.update(variants={}),
     "{p} has no ONNX variant (\"variants\" is empty); remake the bundle with "
     "`xception-trt bundle`"),
    (lambda m: m.update(variants={"fp32": {"member": "onnx/other.onnx"}}),
     "{p}: the manifest names onnx/other.onnx but records no hash for it; remake the bundle"),
    (lambda m: m.update(variants={"fp32": {}}),
     "{p} has an invalid manifest (KeyError: 'member'); remake the bundle with "
     "`xception-trt bundle`"),
])
def test_each_bent_manifest_is_refused_with_its_own_message(tmp_path, edit, message):
    import re

    path = _bent(tmp_path / "b.xtrt", edit)
    with pytest.raises(BundleError) as err:
        Bundle(path)
    assert str(err.value) == message.format(p=path), re.escape(str(err.value))


def test_the_limits_themselves_are_accepted(tmp_path):
    long_name = "d/" + "x" * 253  # 255 characters: the longest member name
    members = dict(GOOD, **{long_name: b"1"})
    path = forge(tmp_path / "ok.xtrt", members,
                 edit=lambda m: m.update(batch_profile=[1, 65536, 65536]))
    with Bundle(path) as b:
        assert b.manifest.batch_profile == (1, 65536, 65536)
        assert b.member(long_name).bytes == 1 and b.read(long_name) == b"1"
    too_long = dict(GOOD, **{"d/" + "x" * 254: b"1"})
    with pytest.raises(BundleError, match="names an invalid member"):
        Bundle(forge(tmp_path / "long.xtrt", too_long))


@pytest.mark.parametrize("name", [
    "manifest.json", "/abs", "a//b", "./a", "a/./b", "a\\b", "c:x", "a\nb", "", "a/", "..",
])
def test_member_names_that_could_reach_a_path_are_refused(name):
    from xception_trt.bundle.format import check_member_name

    with pytest.raises(BundleError, match=r"^w names an invalid member .* \(a relative path "):
        check_member_name(name, "w")
    assert check_member_name("onnx/fp32.onnx", "w") == "onnx/fp32.onnx"
    with pytest.raises(BundleError, match=r"^w names an invalid member '3'"):
        check_member_name(3, "w")


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")
def test_archive_level_refusals(tmp_path):
    import zipfile

    with pytest.raises(BundleError, match=rf"^bundle {tmp_path}/none.xtrt does not exist$"):
        Bundle(tmp_path / "none.xtrt")
    (tmp_path / "junk.xtrt").write_bytes(b"PK junk")
    with pytest.raises(BundleError, match=r"is not a readable bundle \(.*; truncated or not made "
                                          r"by xception-trt\); copy the bundle again"):
        Bundle(tmp_path / "junk.xtrt")
    with zipfile.ZipFile(tmp_path / "empty.xtrt", "w") as zf:
        zf.writestr("labels.txt", b"x")
    with pytest.raises(BundleError, match=r"empty.xtrt has no manifest.json; copy the bundle"):
        Bundle(tmp_path / "empty.xtrt")
    with zipfile.ZipFile(tmp_path / "badjson.xtrt", "w") as zf:
        zf.writestr("manifest.json", b"{nope")
    with pytest.raises(BundleError, match=r"badjson.xtrt: manifest.json is unreadable \(Expecting"):
        Bundle(tmp_path / "badjson.xtrt")
    with zipfile.ZipFile(tmp_path / "deep.xtrt", "w") as zf:
        zf.writestr("manifest.json", b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(BundleError, match=r"manifest.json is unreadable \(nested too deeply\)"):
        Bundle(tmp_path / "deep.xtrt")
    dup = forge(tmp_path / "dup.xtrt", dict(GOOD), extra=[("labels.txt", b"cat\ndog\nbird\n")])
    with pytest.raises(BundleError, match=r"holds member 'labels.txt' twice \(tampered with or "
                                          r"corrupted\); copy the bundle again"):
        Bundle(dup)
    info = zipfile.ZipInfo("odd.bin")
    info.compress_type = zipfile.ZIP_BZIP2
    odd = forge(tmp_path / "odd.xtrt", dict(GOOD), extra=[(info, b"x")])
    with pytest.raises(BundleError, match=r"member 'odd.bin' uses compression method 12 "
                                          r"\(xception-trt writes stored or deflated members "
                                          r"only\)"):
        Bundle(odd)


def test_manifest_size_limit_is_exact(tmp_path, monkeypatch):
    from xception_trt.bundle import format as fmt

    path = forge(tmp_path / "b.xtrt", dict(GOOD))
    import zipfile

    size = zipfile.ZipFile(path).getinfo("manifest.json").file_size
    monkeypatch.setattr(fmt, "MAX_MANIFEST_BYTES", size)
    Bundle(path).close()
    monkeypatch.setattr(fmt, "MAX_MANIFEST_BYTES", size - 1)
    with pytest.raises(BundleError, match=rf"manifest.json inflates to {size} bytes \(at most "
                                          rf"{size - 1}\)"):
        Bundle(path)


def test_members_are_verified_read_extracted_and_listed(tmp_path, monkeypatch):
    from xception_trt.bundle import format as fmt

    path = forge(tmp_path / "b.xtrt", dict(GOOD))
    with Bundle(path) as b:
        assert b.verify() == ["labels.txt", "onnx/fp32.onnx"]
        assert b.read("labels.txt") == b"cat\ndog\nbird\n"
        assert b.check("labels.txt").sha256 == hashlib.sha256(GOOD["labels.txt"]).hexdigest()
        out = b.extract("onnx/fp32.onnx", tmp_path / "x" / "g.onnx")
        assert out == tmp_path / "x" / "g.onnx" and out.read_bytes() == b"not really onnx"
        assert b.size_bytes() == path.stat().st_size
        with pytest.raises(BundleError, match=rf"^bundle {path} has no member nope; {REMAKE}$"):
            b.member("nope")
        monkeypatch.setattr(fmt, "MAX_READ_BYTES", 13)
        assert b.read("labels.txt") == b"cat\ndog\nbird\n"  # exactly the limit
        monkeypatch.setattr(fmt, "MAX_READ_BYTES", 12)
        with pytest.raises(BundleError, match=r"member labels.txt is 13 bytes, more than is read "
                                              r"into memory \(12\)"):
            b.read("labels.txt")


def test_a_member_whose_bytes_differ_is_refused_on_every_read(tmp_path):
    # same size, other bytes: the hash tells
    path = forge(tmp_path / "b.xtrt", dict(GOOD), edit=lambda m: _members(m)["labels.txt"].update(
        sha256=hashlib.sha256(b"dog\ncat\nbird\n").hexdigest()))
    with Bundle(path) as b:
        msg = (f"bundle {path}: member labels.txt does not match the SHA-256 in its manifest "
               f"(tampered with or corrupted); {REMAKE}")
        for call in (lambda: b.read("labels.txt"), lambda: b.check("labels.txt"), b.verify,
                     lambda: b.extract("labels.txt", tmp_path / "l.txt")):
            with pytest.raises(BundleError) as err:
                call()
            assert str(err.value) == msg
        assert not (tmp_path / "l.txt").exists()


def test_manifest_round_trip_precisions_and_variants():
    from xception_trt.bundle.format import EngineEntry, Member, VariantEntry
    from xception_trt.config import InputFormat
    from xception_trt.sidecar import EngineSidecar

    v8 = VariantEntry(Precision.INT8, "onnx/int8.onnx", {"agreement": 99.0},
                      "onnx/int8-ort.onnx", {"agreement": 99.5})
    v16 = VariantEntry(Precision.FP16, "onnx/fp16.onnx")
    side = EngineSidecar.from_json(_sidecar_json().decode())
    eng = EngineEntry(ENGINE, SIDECAR, side)
    members = {n: Member(n, "ab" * 32, 3) for n in
               ("onnx/int8.onnx", "onnx/int8-ort.onnx", "onnx/fp16.onnx", ENGINE, SIDECAR)}
    m = Manifest(ModelSpec(), InputFormat.UINT8_NHWC, {Precision.FP16: v16, Precision.INT8: v8},
                 (eng,), members, batch_profile=(2, 4, 6), default_precision=Precision.INT8,
                 source={"name": "c.safetensors"}, bundle_command="xception-trt bundle c",
                 xception_trt_version="9.9", created="2026-01-01")
    assert m.precisions == (Precision.INT8, Precision.FP16)
    d = m.to_dict()
    assert d["format"] == "xception-trt-bundle" and d["default_precision"] == "int8"
    assert d["variants"]["fp16"] == {"member": "onnx/fp16.onnx", "accuracy": None}
    assert d["variants"]["int8"]["onnxruntime_member"] == "onnx/int8-ort.onnx"
    assert d["preprocessing"] == {"input_format": "uint8-nhwc", "input_size": 299,
                                  "in_chans": 3, "mean": [0.5, 0.5, 0.5],
                                  "std": [0.5, 0.5, 0.5], "crop_pct": 0.8975,
                                  "interpolation": "bicubic"}
    assert list(d["members"]) == sorted(members)
    back = Manifest.from_dict(json.loads(json.dumps(d)), sidecars={SIDECAR: _sidecar_json()},
                              where="b")
    assert back.variants == m.variants and back.batch_profile == (2, 4, 6)
    assert back.default_precision is Precision.INT8 and back.source == m.source
    assert (back.bundle_command, back.xception_trt_version, back.created) == (
        "xception-trt bundle c", "9.9", "2026-01-01")
    assert back.engines[0].sidecar == side and back.engines[0].precision is Precision.FP16
    assert v8.for_onnxruntime() == VariantEntry(Precision.INT8, "onnx/int8-ort.onnx",
                                                {"agreement": 99.5})
    assert v16.for_onnxruntime() is v16
    with pytest.raises(BundleError, match=r"^the bundle has no fp32 variant \(it has fp16, int8\); "
                                          r"open it with one of those, or make a bundle with "
                                          r"--precision fp32$"):
        m.variant("fp32")
    no_default = Manifest(ModelSpec(), InputFormat.FLOAT_NCHW, {Precision.FP16: v16}, (), {},
                          default_precision=Precision.INT8)
    assert no_default.precisions == (Precision.FP16,)
    assert no_default.to_dict()["default_precision"] == "fp16"  # the first it has


def test_engine_entry_describes_where_it_runs():
    from xception_trt.bundle.format import EngineEntry
    from xception_trt.sidecar import EngineSidecar

    base = json.loads(_sidecar_json())
    cases = [({}, "fp16 tensorrt 10.3.0.30 sm_86"),
             ({"targets": ["SM86", "SM89"], "device": None}, "fp16 tensorrt 10.3.0.30 SM86,SM89"),
             ({"device": None}, "fp16 tensorrt 10.3.0.30 default targets"),
             ({"build_options": {"hardware_compatible": True}},
              "fp16 tensorrt 10.3.0.30 Ampere+ (hardware-compatible)")]
    for change, text in cases:
        side = EngineSidecar.from_dict(base | change)
        assert EngineEntry("e", "s", side).describe() == text


def test_is_bundle_by_suffix():
    from xception_trt.bundle.format import is_bundle

    assert is_bundle("a.xtrt") and is_bundle("A.XTRT") and not is_bundle("a.onnx")
    assert not is_bundle("xtrt")


# ---------------------------------------------------------------------------------------------
# cache: opening a bundle fills the cache once, verifies what it reuses, and says why


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_cache_dir() == tmp_path / "xdg" / "xception-trt" / "bundles"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.default_cache_dir() == tmp_path / "home" / ".cache" / "xception-trt" / "bundles"


def test_onnx_runtime_fallback_copies_the_graph_once(doctor_bundle, tmp_path, caplog):
    path, _ = doctor_bundle
    cpu = DeviceFacts(ort_version="1.32.0", ort_providers=("CPUExecutionProvider",), onnx=True,
                      gpu_reason="no NVIDIA driver found")
    root = tmp_path / "cache"
    with caplog.at_level("WARNING", logger="xception_trt.bundle.cache"):
        first = cache.resolve(path, facts=cpu, cache_dir=root)
    assert first.kind.value == "onnxruntime" and not first.cache_hit and not first.built
    with Bundle(path) as b:
        sha = b.member("onnx/fp32.onnx").sha256
        graph = b.read("onnx/fp32.onnx") if b.member("onnx/fp32.onnx").bytes < 1 << 26 else None
    assert first.path == root / "onnx" / f"{sha[:16]}.fp32.onnx"
    assert first.path.read_bytes() == graph
    assert sorted(p.name for p in root.iterdir()) == ["engines", "onnx", "prebuilt"]
    warned = [r for r in caplog.records if "running the bundled fp32 ONNX" in r.getMessage()]
    assert len(warned) == 1  # said once per bundle and process
    caplog.clear()
    with caplog.at_level("WARNING", logger="xception_trt.bundle.cache"):
        again = cache.resolve(path, facts=cpu, cache_dir=root)
    assert again.cache_hit and again.path == first.path and caplog.records == []
    first.path.write_bytes(b"changed")  # a damaged cache copy is replaced, not used
    fixed = cache.resolve(path, facts=cpu, cache_dir=root)
    assert not fixed.cache_hit and fixed.path.read_bytes() == graph
    assert fixed.seconds >= 0 and fixed.choice.precision is Precision.FP32


def test_nothing_that_can_run_it_is_one_error_naming_the_fixes(doctor_bundle, tmp_path):
    path, _ = doctor_bundle
    with pytest.raises(BundleError) as err:
        cache.resolve(path, facts=DeviceFacts(gpu_reason="no NVIDIA driver found"),
                      cache_dir=tmp_path / "c")
    assert str(err.value) == (
        f"{path}: nothing here can run the bundle: prebuilt engines/a.engine (fp16 tensorrt "
        "10.3.0.30 sm_86): precision fp16, fp32 asked; build: no NVIDIA GPU 0 here (no NVIDIA "
        "driver found); ONNX Runtime: not installed (pip install 'xception-trt[ort]'); install "
        "NVIDIA TensorRT or TensorRT-RTX with a matching GPU, or ONNX Runtime for the CPU (pip "
        "install 'xception-trt[ort]')")
    assert not (tmp_path / "c").exists()  # nothing written for a bundle that cannot run


def test_a_prebuilt_engine_is_copied_out_verified_and_reused(fp32_engine_bundle, tmp_path):
    path, _ = fp32_engine_bundle
    root = tmp_path / "cache"
    first = cache.resolve(path, facts=RTX3090_FACTS, cache_dir=root)
    sha = hashlib.sha256(b"plan" * 4).hexdigest()
    assert first.kind.value == "prebuilt" and not first.cache_hit and not first.built
    assert first.path == root / "prebuilt" / sha[:16] / "a.engine"
    assert (root / "prebuilt" / f"{sha[:16]}.lock").is_file()
    assert first.path.read_bytes() == b"plan" * 4
    assert (root / "prebuilt" / sha[:16] / "a.engine.json").read_bytes() == _fp32_sidecar_json()
    again = cache.resolve(path, facts=RTX3090_FACTS, cache_dir=root)
    assert again.cache_hit and again.path == first.path
    first.path.write_bytes(b"PLAN" * 4)  # same size, other bytes: not reused
    fixed = cache.resolve(path, facts=RTX3090_FACTS, cache_dir=root)
    assert not fixed.cache_hit and fixed.path.read_bytes() == b"plan" * 4
    with pytest.warns(DeprecationWarning, match="resolve: backend= is deprecated"):
        old = cache.resolve(path, precision="fp32", facts=RTX3090_FACTS, cache_dir=root,
                            backend="tensorrt")
    assert old.cache_hit


def test_a_built_engine_lands_in_its_keyed_folder_and_is_reused(doctor_bundle, tmp_path,
                                                                monkeypatch):
    from xception_trt.sidecar import EngineSidecar

    path, _ = doctor_bundle
    ada = DeviceFacts(flavours=(FlavourFact("tensorrt", "10.3.0.30"),),
                      gpus=(GpuFact(0, "NVIDIA GeForce RTX 4090", "8.9"),),
                      ort_version="1.32.0", onnx=True)
    builds = []
    wrong_key = []

    def fake_build(source, config, *, output, device):
        """Stands for build_engine: writes the plan and its sidecar with the builder's key."""
        builds.append((config, device, source.sha256))
        plan = b"built" * 3
        output.write_bytes(plan)
        side = json.loads(_sidecar_json()) | {
            "precision": "fp32", "engine": {"file": output.name, "bytes": len(plan),
                                            "sha256": hashlib.sha256(plan).hexdigest()},
            "device": {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"},
            "cache_key": "0" * 64 if wrong_key else key}
        (output.parent / (output.name + ".json")).write_text(json.dumps(side))
        return SimpleNamespace(sidecar=EngineSidecar.from_dict(side))

    monkeypatch.setattr(builder_mod, "build_engine", fake_build)
    with Bundle(path) as b:
        onnx_sha = b.member("onnx/fp32.onnx").sha256
    target = BuildTarget("tensorrt", "10.3.0.30", ada.gpus[0], None, Precision.FP32, (1, 4, 8))
    key = cache.build_key(target, Precision.FP32, onnx_sha)
    root = tmp_path / "cache"
    first = cache.resolve(path, facts=ada, cache_dir=root)
    folder = root / "engines" / cache.engine_folder(target, Precision.FP32, onnx_sha)
    assert first.kind.value == "build" and first.built and not first.cache_hit
    assert first.path == folder / "model.engine"
    (config, device, built_from), = builds
    assert (config.min_batch, config.opt_batch, config.max_batch) == (1, 4, 8)
    assert config.precision is Precision.FP32 and device == 0 and built_from == onnx_sha
    assert config.flavour == "tensorrt" and tuple(config.cc) == ()
    assert (root / "engines" / (folder.name + ".lock")).is_file()
    again = cache.resolve(path, facts=ada, cache_dir=root)
    assert again.cache_hit and not again.built and len(builds) == 1
    (folder / "model.engine.json").unlink()
    wrong_key.append(True)
    with pytest.raises(BundleError, match=r"has cache key 000000000000, expected "
                                          rf"{key[:12]}; report this"):
        cache.resolve(path, facts=ada, cache_dir=root)


def test_an_engine_cache_that_is_a_file_is_refused(doctor_bundle, tmp_path):
    path, _ = doctor_bundle
    (tmp_path / "file").write_text("x")
    cpu = DeviceFacts(ort_version="1.32.0", onnx=True)
    with pytest.raises(BundleError, match=r"the bundle needs a writable engine cache: set "
                                          r"XDG_CACHE_HOME to a writable folder \(Python: pass "
                                          r"cache_dir=\)"):
        cache.resolve(path, facts=cpu, cache_dir=tmp_path / "file")


def test_a_tensorrt_too_old_to_plan_does_not_stop_tensorrt_rtx():
    from xception_trt.bundle.choice import ChoiceKind, Request, choose

    c = choose(_manifest("fp16"), _machine("tensorrt 8.5.1", f"tensorrt_rtx {RTX_1}",
                                           gpus=[ADA]), Request(Precision.FP16))
    assert c.kind is ChoiceKind.BUILD and c.build.flavour == "tensorrt_rtx"
    (what, why), = [(r.what, r.why) for r in c.rejected]
    assert what == "build with tensorrt 8.5.1" and why == (
        "TensorRT 8.5.1 is too old: xception-trt needs TensorRT 8.6 (JetPack 5) or newer; "
        "upgrade TensorRT/JetPack")


def test_onnx_runtime_runs_the_graph_placed_for_it(tmp_path):
    trt_graph = _fp32_stand_in(Precision.INT8, doc="placed for TensorRT")
    ort_graph = _fp32_stand_in(Precision.INT8, doc="placed for ONNX Runtime")
    members = {"onnx/int8.onnx": trt_graph, "onnx/int8-ort.onnx": ort_graph}

    def edit(_):
        data = manifest_dict(members, spec=STAND_IN_SPEC, variants={"int8": "onnx/int8.onnx"})
        data["variants"]["int8"]["onnxruntime_member"] = "onnx/int8-ort.onnx"
        return data

    path = forge(tmp_path / "i8.xtrt", members, edit=edit)
    cpu = DeviceFacts(ort_version="1.32.0", onnx=True)
    res = cache.resolve(path, facts=cpu, cache_dir=tmp_path / "c")
    sha = hashlib.sha256(ort_graph).hexdigest()
    assert res.path == tmp_path / "c" / "onnx" / f"{sha[:16]}.int8.onnx"
    assert res.path.read_bytes() == ort_graph
    assert (tmp_path / "c" / "onnx" / f"{sha[:16]}.int8.onnx.lock").is_file()


def test_resolve_logs_what_it_did_not_use_and_what_it_chose(doctor_bundle, tmp_path, caplog):
    path, _ = doctor_bundle
    cpu = DeviceFacts(ort_version="1.32.0", onnx=True, gpu_reason="no driver")
    with caplog.at_level("INFO", logger="xception_trt.bundle.cache"):
        res = cache.resolve(path, facts=cpu, cache_dir=tmp_path / "c")
    msgs = [r.getMessage() for r in caplog.records]
    assert "doc.xtrt: not using build: no NVIDIA GPU 0 here (no driver)" in msgs
    assert msgs[-1] == f"doc.xtrt -> {res.path} ({res.choice.reason})"


def test_a_reused_built_engine_is_logged(doctor_bundle, tmp_path, monkeypatch, caplog):
    from xception_trt.sidecar import EngineSidecar

    path, _ = doctor_bundle
    ada = DeviceFacts(flavours=(FlavourFact("tensorrt", "10.3.0.30"),),
                      gpus=(GpuFact(0, "NVIDIA GeForce RTX 4090", "8.9"),), onnx=True)
    with Bundle(path) as b:
        onnx_sha = b.member("onnx/fp32.onnx").sha256
    target = BuildTarget("tensorrt", "10.3.0.30", ada.gpus[0], None, Precision.FP32, (1, 4, 8))
    key = cache.build_key(target, Precision.FP32, onnx_sha)

    def fake_build(source, config, *, output, device):
        plan = b"built"
        output.write_bytes(plan)
        side = json.loads(_sidecar_json()) | {
            "precision": "fp32", "cache_key": key,
            "engine": {"file": output.name, "bytes": 5, "sha256": hashlib.sha256(plan).hexdigest()}}
        (output.parent / (output.name + ".json")).write_text(json.dumps(side))
        return SimpleNamespace(sidecar=EngineSidecar.from_dict(side))

    monkeypatch.setattr(builder_mod, "build_engine", fake_build)
    first = cache.resolve(path, facts=ada, cache_dir=tmp_path / "c")
    with caplog.at_level("INFO", logger="xception_trt.bundle.cache"):
        cache.resolve(path, facts=ada, cache_dir=tmp_path / "c")
    assert f"using the engine built earlier from doc.xtrt: {first.path}" in [
        r.getMessage() for r in caplog.records]


def test_a_cache_copy_that_changes_during_the_build_is_refused(doctor_bundle, tmp_path,
                                                               monkeypatch):
    from xception_trt.onnx_meta import OnnxSource

    path, _ = doctor_bundle
    ada = DeviceFacts(flavours=(FlavourFact("tensorrt", "10.3.0.30"),),
                      gpus=(GpuFact(0, "NVIDIA GeForce RTX 4090", "8.9"),), onnx=True)
    real = OnnxSource.read

    def swapped(p):
        src = real(p)
        return SimpleNamespace(sha256="f" * 64, path=src.path, meta=src.meta)

    monkeypatch.setattr(OnnxSource, "read", staticmethod(swapped))
    monkeypatch.setattr(builder_mod, "build_engine", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(BundleError, match=r"the cached copy .*\.fp32\.onnx of onnx/fp32.onnx "
                                          r"changed while it was used; run the command again "
                                          r"\(it is extracted afresh\)"):
        cache.resolve(path, facts=ada, cache_dir=tmp_path / "c")


def test_prebuilt_lock_and_slug():
    assert cache._slug("///") == "x" and cache._slug("A b/C") == "a-b-c"
    assert cache._slug("tensorrt_rtx-1.7") == "tensorrt-rtx-1.7"


def test_a_cache_folder_linked_elsewhere_is_named_with_the_fix(doctor_bundle, tmp_path):
    path, _ = doctor_bundle
    root = tmp_path / "c"
    (root / "onnx").parent.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "onnx").symlink_to(tmp_path / "elsewhere")
    cpu = DeviceFacts(ort_version="1.32.0", onnx=True)
    with pytest.raises(BundleError) as err:
        cache.resolve(path, facts=cpu, cache_dir=root)
    with Bundle(path) as b:
        sha = b.member("onnx/fp32.onnx").sha256
    link = root / "onnx" / f"{sha[:16]}.fp32.onnx"
    assert str(err.value) == (
        f"engine cache {root}: {link} leads outside the cache (to "
        f"{(tmp_path / 'elsewhere' / link.name).resolve()}); remove the link, or set "
        "XDG_CACHE_HOME to another folder (Python: pass cache_dir=)")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_doctor_report_details(tmp_path):
    """Two flavours on the machine line, a variant without accuracy, an engine's size in MiB,
    RTX targets as the engine's place, and the GPU asked by ordinal."""
    plan = b"p" * (3 << 20)  # 3 MiB
    engine = tmp_path / "r.engine"
    engine.write_bytes(plan)
    side = json.loads(_sidecar_json()) | {
        "tensorrt": {"flavour": "tensorrt_rtx", "version": RTX_1}, "device": None,
        "targets": ["SM86", "SM89"],
        "engine": {"file": "r.engine", "bytes": len(plan),
                   "sha256": hashlib.sha256(plan).hexdigest()}}
    (tmp_path / "r.engine.json").write_text(json.dumps(side))
    two = DeviceFacts(flavours=(FlavourFact("tensorrt", "10.3.0.30"),
                                FlavourFact("tensorrt_rtx", RTX_1)),
                      gpus=(GpuFact(0, "Orin", "8.7", True),
                            GpuFact(1, "NVIDIA GeForce RTX 3090", "8.6")))
    on_3090 = diagnose(engine, facts=two, device=1)
    on_orin = diagnose(engine, facts=two, device=0)
    assert on_3090.engines[0]["loads"] is True and on_orin.engines[0]["loads"] is False
    lines = format_report(on_3090).splitlines()
    assert lines[1] == f"  TensorRT:      tensorrt 10.3.0.30, tensorrt_rtx {RTX_1}"
    assert lines[3] == ("  GPUs:          0: Orin (compute capability 8.7, sm87), 1: NVIDIA "
                        "GeForce RTX 3090 (compute capability 8.6, sm86)")
    assert f"engine: {engine} (fp16, 3.0 MiB)" in lines
    assert f"  {engine} (fp16, tensorrt_rtx {RTX_1}, SM86,SM89): loads here" in lines
    assert on_3090.engines[0]["targets"] == ["SM86", "SM89"]
    assert on_3090.engines[0]["compute_capability"] is None


def test_doctor_variant_without_accuracy_and_old_targets_keyword(tmp_path):
    members = {"onnx/fp32.onnx": _fp32_stand_in()}
    path = forge(tmp_path / "plain.xtrt", members,
                 edit=lambda _: manifest_dict(members, spec=STAND_IN_SPEC))
    with pytest.warns(DeprecationWarning, match=r"^diagnose: targets= is deprecated; use cc=$"):
        rep = diagnose(path, facts=RTX3090_FACTS, targets=["sm89"])
    assert list(rep.prebuild) == ["SM89"]
    assert ("  variant fp32 (default: what opening it runs without --precision)"
            in format_report(rep).splitlines())
    assert rep.summary["accuracy"] == {"fp32": None}


def test_recorded_facts_nested_too_deeply_says_what_a_facts_file_is(tmp_path):
    from xception_trt.bundle.doctor import recorded_facts
    from xception_trt.errors import ConfigError

    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError) as err:
        recorded_facts(tmp_path / "deep.json")
    assert str(err.value) == (f"cannot read machine facts {tmp_path / 'deep.json'}: its JSON is "
                              "nested too deeply (a facts file is a flat object as "
                              "`xception-trt doctor --json` writes under 'machine')")
