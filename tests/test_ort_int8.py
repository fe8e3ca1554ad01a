"""INT8 placed for ONNX Runtime (``quantize --placement onnxruntime``, issue 18): every Conv/Gemm
fused into ONNX Runtime's quantized CPU kernels, agreement with FP32, the calibration cache
keyed by target, the CLI's flag rules, the note for a TensorRT-placed graph run on ONNX
Runtime, the build refusing the ONNX Runtime placement, and the CPU's INT8 features.

Calibration runs in a subprocess (ONNX Runtime's quantizer here, ModelOpt for the TensorRT
placement; ~3-5 s each on 2 cores), so the variants are module-scoped fixtures.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from xception_trt.config import Placement
from xception_trt.errors import BuildError, ConfigError
from xception_trt.host import cpu_int8_features, int8_features_text
from xception_trt.onnx_meta import read_metadata
from xception_trt.precision import (
    evaluate_variants,
    fused_kernel_counts,
    ort_int8,
    quantize_int8,
)
from xception_trt.precision.cache import read_entry, stale_reasons


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ort-cache")


@pytest.fixture(scope="module")
def ort_variant(fp32_path, flat_image_folder, cache_dir):
    out = cache_dir.parent / "tiny.int8-ort.onnx"
    return ort_int8(fp32_path, flat_image_folder, method="max", num_images=8, batch_size=4,
                    cache_dir=cache_dir, output=out)


@pytest.fixture(scope="module")
def trt_variant(fp32_path, flat_image_folder, cache_dir):
    out = cache_dir.parent / "tiny.int8-trt.onnx"
    return quantize_int8(fp32_path, flat_image_folder, method="max", num_images=8, batch_size=4,
                         cache_dir=cache_dir, output=out)


def test_ort_placement_fuses_every_conv_and_gemm(ort_variant, trt_variant, fp32_path):
    fp32 = fused_kernel_counts(fp32_path)
    ort = fused_kernel_counts(ort_variant.path)
    trt = fused_kernel_counts(trt_variant.path)
    assert fp32.quantized == 0 and fp32.total > 0
    # Every Conv/Gemm of the FP32 graph is a quantized kernel in ONNX Runtime's optimised graph.
    assert ort.all_fused and ort.total == fp32.total, ort
    assert ort.quantized_gemm == 1 and ort.float_conv == ort.float_gemm == 0
    # The TensorRT placement leaves some of them in float on ONNX Runtime (why this exists).
    assert trt.quantized < trt.total, trt
    assert ort.to_dict()["fused"] == f"{ort.total}/{ort.total}"
    assert len(ort_variant.quantized_nodes) == fp32.total and not ort_variant.excluded_nodes


def test_metadata_records_the_target(ort_variant, trt_variant, fp32_path):
    assert read_metadata(ort_variant.path).placement is Placement.ONNXRUNTIME
    assert read_metadata(trt_variant.path).placement is Placement.TENSORRT
    assert read_metadata(fp32_path).placement is None
    calib = read_metadata(ort_variant.path).json_field("calibration")
    assert calib["target"] == "onnxruntime" and calib["tool"].startswith("onnxruntime ")
    assert ort_variant.summary()["target"] == "onnxruntime"
    # uint8 activations with zero points (what ONNX Runtime's x86 kernels fuse)
    assert ort_variant.zero_points and any(z != 0 for z in ort_variant.zero_points.values())


def test_ort_placement_agrees_with_fp32(ort_variant, trt_variant, fp32_path, image_folder):
    rows = evaluate_variants({"fp32": fp32_path, "ort": ort_variant.path,
                              "trt": trt_variant.path}, image_folder)
    by = {r.name: r for r in rows}
    import onnxruntime as ort

    x = np.random.default_rng(3).standard_normal((4, 3, 71, 71)).astype(np.float32)
    scale = np.abs(ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
                   .run(None, {"input": x})[0]).max()
    # The same function as FP32, about as close as the TensorRT placement of the same scales.
    assert 0 < by["ort"].max_abs_diff < 0.5 * scale
    assert by["ort"].mean_abs_diff < 2 * by["trt"].mean_abs_diff
    assert by["ort"].agreement >= by["trt"].agreement - 100 / by["ort"].images


def test_cache_is_keyed_by_target(ort_variant, trt_variant, fp32_path, flat_image_folder,
                                  cache_dir, tmp_path):
    # Same graph, images and method: two entries, one per target.
    assert ort_variant.cache == trt_variant.cache == "miss"
    assert ort_variant.cache_path != trt_variant.cache_path
    entry = read_entry(ort_variant.cache_path)
    assert entry["key"]["target"] == "onnxruntime" and "modelopt" not in entry["key"]
    assert entry["zero_points"] == ort_variant.zero_points
    assert "target" not in read_entry(trt_variant.cache_path)["key"]
    assert "placement target" in " ".join(stale_reasons(read_entry(trt_variant.cache_path)["key"],
                                                        entry["key"]))
    # A hit re-applies scales and zero points: the same file, bit for bit, without calibrating.
    again = ort_int8(fp32_path, flat_image_folder, method="max", num_images=8, batch_size=4,
                     cache_dir=cache_dir, output=tmp_path / "hit.onnx")
    assert again.cache == "hit" and again.num_images == 0
    assert again.path.read_bytes() == ort_variant.path.read_bytes()


def test_exclusions_and_auto_work_for_the_ort_target(fp32_path, flat_image_folder, tmp_path):
    from xception_trt.precision import auto_quantize_int8, depthwise_conv_nodes

    dw = depthwise_conv_nodes(fp32_path)
    res = quantize_int8(fp32_path, flat_image_folder, placement="onnxruntime", method="max",
                        num_images=8, batch_size=4, exclude_depthwise=True, cache_dir=None)
    assert sorted(res.excluded_nodes) == sorted(dw)
    path = tmp_path / "dw.onnx"
    from xception_trt.precision import save_model

    counts = fused_kernel_counts(save_model(res.model, path))
    # The excluded nodes run in float (a neighbour may too: ONNX Runtime fuses a Conv only
    # between quantized tensors), the rest in INT8.
    assert len(dw) <= counts.float_conv < counts.total and counts.quantized > 0
    auto = auto_quantize_int8(fp32_path, flat_image_folder, methods=["max", "percentile"],
                              num_images=8, batch_size=4, cache_dir=tmp_path / "c",
                              placement="onnxruntime")
    assert set(auto.results) == {"max", "percentile"}
    assert all(r.placement is Placement.ONNXRUNTIME for r in auto.results.values())
    assert read_metadata(auto.best.model).placement is Placement.ONNXRUNTIME


def test_uint8_input_graph_fuses_every_conv_too(tiny_onnx_files, flat_image_folder, tmp_path):
    res = ort_int8(tiny_onnx_files["uint8"], flat_image_folder, method="max", num_images=4,
                   batch_size=4, cache_dir=None, output=tmp_path / "u8-ort.onnx")
    assert fused_kernel_counts(res.path).all_fused
    assert read_metadata(res.path).input_format.value == "uint8-nhwc"


@pytest.mark.parametrize("kw, match", [
    (dict(high_precision="fp16"), "fp32"),
    (dict(int8_weights=True), "int8_weights"),
    (dict(import_cache="x.cache"), "calibration images"),
])
def test_options_that_do_not_apply_to_the_ort_target(fp32_path, flat_image_folder, kw, match):
    with pytest.raises(ConfigError, match=match):
        quantize_int8(fp32_path, flat_image_folder, placement="onnxruntime", cache_dir=None, **kw)
    with pytest.raises(ConfigError, match="always places for onnxruntime"):
        ort_int8(fp32_path, flat_image_folder, placement="tensorrt")


def test_cli_target_flag_rules(fp32_path, tmp_path, capsys):
    from xception_trt.cli import main

    out = tmp_path / "o.onnx"
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-8601-EntropyCalibration2\ninput: 3c010a14\n")
    ort = ["--precision", "int8", "--placement", "onnxruntime", "--calib", str(tmp_path)]
    cases = [
        (["--precision", "fp16", "--placement", "onnxruntime"],
         "--placement only applies with --precision int8"),
        ([*ort, "--int8-weights"],
         "--int8-weights cannot be combined with --placement onnxruntime"),
        ([*ort, "--no-int8-weights"],
         "--int8-weights cannot be combined with --placement onnxruntime"),
        ([*ort, "--high-precision", "fp32"], "--high-precision cannot be combined"),
        ([*ort, "--export-trt-cache", str(tmp_path / "t.cache")],
         "--export-trt-cache cannot be combined"),
        (["--precision", "int8", "--placement", "onnxruntime", "--import-cache", str(cache)],
         "--import-cache cannot be combined"),
    ]
    for extra, match in cases:
        rc = main(["quantize", str(fp32_path), "-o", str(out), "--no-cache", *extra])
        err = capsys.readouterr().err
        assert rc == 2, extra
        assert match in err and "Traceback" not in err, err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_cli_quantize_target_onnxruntime(fp32_path, flat_image_folder, tmp_path, capsys):
    from xception_trt.cli import main

    out = tmp_path / "m.int8-ort.onnx"
    rc = main(["quantize", str(fp32_path), "--precision", "int8", "--placement", "onnxruntime",
               "--calib", str(flat_image_folder), "--num-images", "8", "--batch-size", "4",
               "--no-cache", "-o", str(out), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["int8"]["target"] == "onnxruntime"
    assert fused_kernel_counts(out).all_fused


def test_note_for_a_tensorrt_placed_graph_on_onnx_runtime(trt_variant, ort_variant, fp32_path,
                                                          image_folder, tmp_path, capsys,
                                                          caplog):
    from xception_trt.cli import main
    from xception_trt.runners import OnnxRuntimeRunner, ort_int8_note

    cpu = ["CPUExecutionProvider"]
    note = ort_int8_note(trt_variant.path, providers=cpu)
    assert note and "--placement onnxruntime" in note and "\n" not in note
    assert ort_int8_note(ort_variant.path, providers=cpu) is None
    assert ort_int8_note(fp32_path, providers=cpu) is None
    with caplog.at_level(logging.INFO, logger="xception_trt.runners"):
        runner = OnnxRuntimeRunner(trt_variant.path, providers=cpu)
    assert runner.note == note and note in caplog.text
    runner.close()
    rc = main(["eval", str(fp32_path), str(trt_variant.path), str(ort_variant.path),
               "--data", str(image_folder), "--providers", "CPUExecutionProvider",
               "-o", str(tmp_path / "rep"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0
    lines = [ln for ln in err.splitlines() if ln.startswith("note: ")]
    assert lines == [note]  # one line, for the TensorRT-placed graph only
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert note[len("note: "):] in doc["notes"]
    assert "--note" not in doc["command"]


def test_build_refuses_the_ort_placement(ort_variant, tmp_path):
    from xception_trt.pipeline import build

    with pytest.raises(BuildError, match="placed for ONNX Runtime.*--placement tensorrt"):
        build(source=ort_variant.path, output=tmp_path / "out")


#: A recorded /proc/cpuinfo (one core of a Sapphire Rapids Xeon, flags shortened).
_CPUINFO_SPR = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx avx2 avx512f avx512bw avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8
"""
_CPUINFO_AVX2 = "model name\t: Intel(R) Core(TM) i7-6700\nflags\t\t: fpu sse avx avx2 fma\n"


def test_cpu_int8_features_from_recorded_cpuinfo():
    spr = cpu_int8_features(_CPUINFO_SPR)
    assert spr == {"vnni": True, "amx": True,
                   "flags": ["avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"]}
    assert int8_features_text(spr) == ("VNNI yes, AMX yes (avx512_vnni, avx_vnni, amx_int8, "
                                       "amx_tile)")
    old = cpu_int8_features(_CPUINFO_AVX2)
    assert old == {"vnni": False, "amx": False, "flags": []}
    assert int8_features_text(old) == "VNNI no, AMX no"
    assert cpu_int8_features("processor : 0\n")["vnni"] is None  # no flags line (e.g. arm64)
    assert int8_features_text(None).startswith("unknown")


def test_info_and_reports_record_the_cpu_int8_features(capsys, monkeypatch):
    from xception_trt import host, sysinfo
    from xception_trt.cli import main
    from xception_trt.report import _system_rows

    monkeypatch.setattr(sysinfo, "cpu_int8_features",
                        lambda: host.cpu_int8_features(_CPUINFO_SPR))
    facts = sysinfo.system_facts(probe_gpus=False)
    assert facts["cpu_int8"]["amx"] is True
    rows = dict(_system_rows(facts))
    assert rows["CPU INT8 features"].startswith("VNNI yes, AMX yes")
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cpu_int8"]["vnni"] is True
    assert main(["info"]) == 0
    assert "VNNI yes, AMX yes" in capsys.readouterr().out


def test_triton_repo_serves_int8_placed_for_onnx_runtime(ort_variant, trt_variant, fp32_path,
                                                         flat_image_folder, tiny_checkpoint,
                                                         tmp_path, capsys, monkeypatch):
    from xception_trt.cli import main

    # The ORT-placed file is served as it is (onnxruntime_onnx), without a note.
    out = tmp_path / "repo-ort"
    assert main(["triton-repo", str(ort_variant.path), "-o", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["models"]["xception"]["platform"] == "onnxruntime_onnx"
    assert "note:" not in cap.err
    assert (out / "xception/1/model.onnx").read_bytes() == ort_variant.path.read_bytes()
    # A TensorRT-placed INT8 file for CPU instances: served, with the one-line note.
    assert main(["triton-repo", str(trt_variant.path), "-o", str(tmp_path / "repo-trt")]) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note: ")]
    assert len(notes) == 1 and "--placement onnxruntime" in notes[0] and "--int8-calib" in notes[0]
    # The FP32 ONNX with --int8-calib: the repository gets the ORT-placed INT8 variant.
    monkeypatch.chdir(tmp_path)  # nothing may land in the current folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # its scales are cached there
    out = tmp_path / "repo-made"
    assert main(["triton-repo", str(fp32_path), "-o", str(out),
                 "--int8-calib", str(flat_image_folder)]) == 0
    assert "INT8 placed for ONNX Runtime" in capsys.readouterr().err
    served = out / "xception/1/model.onnx"
    assert read_metadata(served).placement is Placement.ONNXRUNTIME
    assert fused_kernel_counts(served).all_fused
    assert list((tmp_path / "xdg" / "xception-trt" / "calibration").glob("*.json"))
    assert not (tmp_path / "calibration").exists()
    # --int8-calib needs an FP32 ONNX MODEL.
    for model, match in ((tiny_checkpoint, "--int8-calib only applies with an FP32 ONNX"),
                         (ort_variant.path, "INT8 variant")):
        rc = main(["triton-repo", str(model), "-o", str(tmp_path / "bad"), "--triton-backend",
                   "python", "--int8-calib", str(flat_image_folder)])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and match in err, err
        assert not (tmp_path / "bad").exists()
