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
from types import SimpleNamespace

import pytest
from bundle_forge import forge, manifest_dict

from xception_trt.bundle import cache
from xception_trt.bundle.choice import BuildTarget, rtx_can_build_for
from xception_trt.bundle.doctor import _bundle_prebuild, diagnose
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
