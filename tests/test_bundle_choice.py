"""The engine choice of a bundle: a pure function of (manifest, device facts, request), tested
over a table of machines and requests, including every kind of mismatch."""

from __future__ import annotations

import pytest

from xception_trt.bundle.choice import ChoiceKind, Request, choose, engine_mismatch
from xception_trt.bundle.facts import DeviceFacts, FlavourFact, GpuFact
from xception_trt.bundle.format import EngineEntry, Manifest, Member, VariantEntry
from xception_trt.config import InputFormat, ModelSpec, Precision
from xception_trt.errors import BundleError
from xception_trt.sidecar import EngineSidecar

RTX = "1.7.1.116"


def _sidecar(precision="fp16", flavour="tensorrt", version="10.3.0.26", cc="8.7", targets=None,
             max_batch=8, **options):
    return EngineSidecar.from_dict({
        "schema": 1, "tensorrt": {"flavour": flavour, "version": version},
        "engine": {"file": "m.engine", "bytes": 4, "sha256": "0" * 64},
        "precision": precision, "input_format": "float-nchw",
        "model_spec": ModelSpec().to_dict(),
        "device": None if cc is None else {"name": "GPU", "compute_capability": cc},
        "targets": targets, "build_options": options, "max_batch": max_batch,
        "rebuild_command": "xception-trt build m.onnx -o engines"})


def _manifest(*sidecars, precisions=("fp32", "fp16", "int8")):
    engines = tuple(EngineEntry(f"engines/e{i}.engine", f"engines/e{i}.engine.json", s)
                    for i, s in enumerate(sidecars))
    variants = {Precision(p): VariantEntry(Precision(p), f"onnx/{p}.onnx") for p in precisions}
    members = {n: Member(n, "0" * 64, 1) for n in
               [v.member for v in variants.values()]
               + [m for e in engines for m in (e.member, e.sidecar_member)]}
    return Manifest(ModelSpec(), InputFormat.FLOAT_NCHW, variants, engines, members)


def _facts(*flavours, gpus=(), onnx=True, ort=True, dla=0):
    return DeviceFacts(
        flavours=tuple(FlavourFact(*f.split(" ")) for f in flavours),
        gpus=tuple(GpuFact(i, *gpu) for i, gpu in enumerate(gpus)), dla_cores=dla,
        ort_version="1.32.0" if ort else None,
        ort_providers=("CPUExecutionProvider",) if ort else (), onnx=onnx,
        gpu_reason="" if gpus else "no NVIDIA driver found")


ORIN = ("Orin", "8.7", True)  # integrated (CU_DEVICE_ATTRIBUTE_INTEGRATED = 1)
RTX4090 = ("NVIDIA GeForce RTX 4090", "8.9")
RTX3090 = ("NVIDIA GeForce RTX 3090", "8.6")
H200 = ("NVIDIA H200", "9.0")
T4 = ("Tesla T4", "7.5")

# (case, engines in the bundle, machine, request, expected kind, expected text in the reasons)
CASES = [
    ("same TensorRT and GPU: prebuilt", [_sidecar()],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN]), Request(Precision.FP16),
     ChoiceKind.PREBUILT, "loads here"),
    ("precision mismatch: build the asked one", [_sidecar()],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN]), Request(Precision.INT8),
     ChoiceKind.BUILD, "precision fp16, int8 asked"),
    ("TensorRT version mismatch", [_sidecar(version="10.3.0.26")],
     _facts("tensorrt 10.13.0.35", gpus=[ORIN]), Request(Precision.FP16),
     ChoiceKind.BUILD, "only load in the version that built them"),
    ("version-compatible engine runs on a later 10.x", [_sidecar(version_compatible=True)],
     _facts("tensorrt 10.13.0.35", gpus=[ORIN]), Request(Precision.FP16),
     ChoiceKind.PREBUILT, "loads here"),
    ("version-compatible engine, older runtime", [_sidecar(version_compatible=True)],
     _facts("tensorrt 10.0.1", gpus=[ORIN]), Request(Precision.FP16),
     ChoiceKind.BUILD, "same or a later TensorRT"),
    ("flavour mismatch: RTX engine, NVIDIA TensorRT here",
     [_sidecar(flavour="tensorrt_rtx", version=RTX, cc=None, targets=["SM86"])],
     _facts("tensorrt 10.3.0.26", gpus=[RTX3090]), Request(Precision.FP16),
     ChoiceKind.BUILD, "tensorrt_rtx, which is not installed here"),
    ("compute capability mismatch", [_sidecar(cc="8.6")],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN]), Request(Precision.FP16),
     ChoiceKind.BUILD, "only run on the GPU architecture that built them"),
    ("hardware-compatible engine on another Ampere+ GPU", [_sidecar(cc="8.6",
                                                                    hardware_compatible=True)],
     _facts("tensorrt 10.3.0.26", gpus=[RTX4090]), Request(Precision.FP16),
     ChoiceKind.PREBUILT, "loads here"),
    # issue 26 item 4: "Hardware compatibility ... is not supported on NVIDIA DRIVE OS or
    # JetPack" (TensorRT developer guide, "Hardware Compatibility"): the runner refuses it on
    # an integrated GPU (HWC-1), so the choice must not pick it there
    ("hardware-compatible engine on a Jetson (integrated GPU)",
     [_sidecar(cc="8.6", hardware_compatible=True)],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN]), Request(Precision.FP16),
     ChoiceKind.BUILD, "not supported on JetPack"),
    ("hardware-compatible engine on a pre-Ampere GPU", [_sidecar(cc="8.6",
                                                                 hardware_compatible=True)],
     _facts("tensorrt 10.3.0.26", gpus=[T4]), Request(Precision.FP16),
     ChoiceKind.BUILD, "Ampere or newer"),
    ("RTX target matches", [_sidecar(flavour="tensorrt_rtx", version=RTX, cc=None,
                                     targets=["SM86", "SM89"])],
     _facts(f"tensorrt_rtx {RTX}", gpus=[RTX4090]), Request(Precision.FP16),
     ChoiceKind.PREBUILT, "loads here"),
    ("RTX target missing: build for this cc", [_sidecar(flavour="tensorrt_rtx", version=RTX,
                                                        cc=None, targets=["SM86"])],
     _facts(f"tensorrt_rtx {RTX}", gpus=[RTX4090]), Request(Precision.FP16),
     ChoiceKind.BUILD, "targets compute capability 8.6"),
    ("RTX release mismatch", [_sidecar(flavour="tensorrt_rtx", version="1.2.0.54", cc=None,
                                       targets=["SM89"])],
     _facts(f"tensorrt_rtx {RTX}", gpus=[RTX4090]), Request(Precision.FP16),
     ChoiceKind.BUILD, "only load in the release that built them"),
    ("batch profile too small", [_sidecar(max_batch=4)],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN]), Request(Precision.FP16, max_batch=16),
     ChoiceKind.BUILD, "batch profile up to 4, batch 16 asked"),
    ("DLA engine on a machine without DLA", [_sidecar(dla_core=0)],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN], dla=0), Request(Precision.FP16),
     ChoiceKind.BUILD, "built for DLA core 0"),
    ("DLA engine where the DLA core exists", [_sidecar(dla_core=1)],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN], dla=2), Request(Precision.FP16),
     ChoiceKind.PREBUILT, "loads here"),
    ("backend restricted to the other flavour", [_sidecar(cc="8.6")],
     _facts("tensorrt 10.3.0.26", f"tensorrt_rtx {RTX}", gpus=[RTX3090]),
     Request(Precision.FP16, flavour="tensorrt_rtx"), ChoiceKind.BUILD,
     "flavour tensorrt_rtx asked"),
    ("no GPU: ONNX Runtime", [_sidecar()],
     _facts("tensorrt 10.3.0.26"), Request(Precision.FP16),
     ChoiceKind.ONNXRUNTIME, "needs an NVIDIA GPU"),
    ("no TensorRT at all, GPU present: ONNX Runtime", [],
     _facts(gpus=[ORIN]), Request(Precision.FP16), ChoiceKind.ONNXRUNTIME,
     "not installed here"),
    ("RTX cannot build for Hopper", [],
     _facts(f"tensorrt_rtx {RTX}", gpus=[H200]), Request(Precision.FP16),
     ChoiceKind.ONNXRUNTIME, "does not build for sm_90"),
    ("RTX cannot build for a Jetson GPU", [],
     _facts(f"tensorrt_rtx {RTX}", gpus=[ORIN]), Request(Precision.FP16),
     ChoiceKind.ONNXRUNTIME, "does not build for sm_87 (a Jetson GPU)"),
    ("building needs the onnx package", [],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN], onnx=False), Request(Precision.FP16),
     ChoiceKind.ONNXRUNTIME, "xception-trt[onnx]"),
    ("TensorRT too old to build", [],
     _facts("tensorrt 8.5.2", gpus=[ORIN]), Request(Precision.FP16),
     ChoiceKind.ONNXRUNTIME, "too old"),
    ("building not allowed", [_sidecar(cc="8.6")],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN]), Request(Precision.FP16, build=False),
     ChoiceKind.ONNXRUNTIME, "building was not allowed"),
    ("nothing can run it", [],
     _facts(ort=False), Request(Precision.FP16), ChoiceKind.NONE, "xception-trt[ort]"),
    ("GPU ordinal absent", [_sidecar()],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN]), Request(Precision.FP16, device=1),
     ChoiceKind.ONNXRUNTIME, "no NVIDIA GPU 1"),
    # a tuned choice of ONNX Runtime: it runs even where an engine loads or could be built
    ("ONNX Runtime asked where a prebuilt engine loads", [_sidecar()],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN]), Request(Precision.FP16, tensorrt=False),
     ChoiceKind.ONNXRUNTIME, "ONNX Runtime was asked for; running the bundled fp16 ONNX"),
    ("ONNX Runtime asked where one could be built", [],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN]), Request(Precision.FP16, tensorrt=False),
     ChoiceKind.ONNXRUNTIME, "build: TensorRT not asked for (ONNX Runtime was)"),
    ("ONNX Runtime asked but absent", [_sidecar()],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN], ort=False),
     Request(Precision.FP16, tensorrt=False), ChoiceKind.NONE, "TensorRT not asked for"),
    # a tuned DLA core: only the engine built for it
    ("no DLA core asked: the GPU engine before a DLA one", [_sidecar(dla_core=1), _sidecar()],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN], dla=2), Request(Precision.FP16),
     ChoiceKind.PREBUILT, "prebuilt engine engines/e1.engine"),
    ("no DLA core asked: a DLA engine where it is the only one", [_sidecar(dla_core=1)],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN], dla=2), Request(Precision.FP16),
     ChoiceKind.PREBUILT, "prebuilt engine engines/e0.engine"),
    ("DLA core asked: the GPU engine is passed over", [_sidecar(), _sidecar(dla_core=1)],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN], dla=2), Request(Precision.FP16, dla_core=1),
     ChoiceKind.PREBUILT, "built for the GPU, DLA core 1 asked"),
    ("DLA core asked: another core's engine is passed over, none is built",
     [_sidecar(dla_core=0)], _facts("tensorrt 10.3.0.26", gpus=[ORIN], dla=2),
     Request(Precision.FP16, dla_core=1), ChoiceKind.ONNXRUNTIME,
     "built for DLA core 0, DLA core 1 asked"),
    ("DLA core asked: an engine built here targets the GPU", [],
     _facts("tensorrt 10.3.0.26", gpus=[ORIN], dla=2), Request(Precision.FP16, dla_core=0),
     ChoiceKind.ONNXRUNTIME, "an engine built from a bundle targets the GPU"),
]


@pytest.mark.parametrize("case,engines,facts,request_,kind,text", CASES,
                         ids=[c[0] for c in CASES])
def test_choice_table(case, engines, facts, request_, kind, text):
    choice = choose(_manifest(*engines), facts, request_)
    assert choice.kind is kind, (case, choice)
    words = choice.reason + " | " + " | ".join(f"{r.what}: {r.why}" for r in choice.rejected)
    assert text in words, words
    if kind is ChoiceKind.ONNXRUNTIME:  # the bundled graph of the precision asked
        assert choice.variant.precision is request_.precision
    if kind is ChoiceKind.PREBUILT:
        assert engine_mismatch(choice.engine, facts, request_) is None
    else:  # never a mismatched engine: every rejected prebuilt one has a reason
        for entry in _manifest(*engines).engines:
            assert engine_mismatch(entry, facts, request_) is not None


def test_choice_prefers_a_fitting_prebuilt_engine_over_others():
    fits = _sidecar(cc="8.7")
    manifest = _manifest(_sidecar(cc="8.6"), _sidecar(precision="int8"), fits)
    choice = choose(manifest, _facts("tensorrt 10.3.0.26", gpus=[ORIN]), Request(Precision.FP16))
    assert choice.kind is ChoiceKind.PREBUILT and choice.engine.sidecar is fits
    assert len(choice.rejected) == 2


def test_build_targets_the_gpu_with_the_bundles_profile():
    manifest = _manifest()
    rtx = choose(manifest, _facts(f"tensorrt_rtx {RTX}", gpus=[RTX4090]),
                 Request(Precision.INT8))
    assert rtx.build.targets == ("SM89",) and rtx.build.flavour == "tensorrt_rtx"
    assert rtx.build.profile == manifest.batch_profile
    trt = choose(manifest, _facts("tensorrt 10.3.0.26", f"tensorrt_rtx {RTX}", gpus=[ORIN]),
                 Request(Precision.FP16, max_batch=32))
    assert trt.build.flavour == "tensorrt" and trt.build.targets is None
    assert trt.build.profile == (1, 32, 32)


def test_tensorrt_86_builds_fp16_from_the_fp32_graph_when_the_bundle_lacks_fp16_onnx():
    manifest = _manifest(precisions=("fp32", "fp16"))
    # TensorRT 8.6 takes FP16 from either graph; it prefers the FP32 one (its plan's order)
    choice = choose(manifest, _facts("tensorrt 8.6.2", gpus=[ORIN]), Request(Precision.FP16))
    assert choice.kind is ChoiceKind.BUILD and choice.build.onnx_precision is Precision.FP32


def test_a_precision_the_bundle_lacks_is_an_error():
    with pytest.raises(BundleError, match="no int8 variant .*fp32, fp16"):
        choose(_manifest(precisions=("fp32", "fp16")), _facts(), Request(Precision.INT8))
