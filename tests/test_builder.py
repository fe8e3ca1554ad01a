"""Engine builder: real TensorRT-RTX builds on the CPU (float and uint8 graphs, fixed and dynamic
batch, FP32/FP16/INT8), sidecar, engine cache, failures, CLI. NVIDIA TensorRT paths are marked
``trt`` and skip here."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest

from xception_trt.cli import main
from xception_trt.config import BuildConfig, ModelSpec, Precision
from xception_trt.errors import BuildError, EngineError, GraphError
from xception_trt.fsio import default_file_mode, sha256_file
from xception_trt.onnx_meta import OnnxSource, read_metadata, write_metadata
from xception_trt.trt.builder import build_engine, read_sidecar, resolve_flavour, sidecar_path

trt_rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds engines on the CPU")

RTX = BuildConfig(flavour="tensorrt_rtx")


def _dtypes(sidecar: dict) -> set[str]:
    return {d for layer in sidecar["layers"] for d in layer["output_dtypes"]}


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def graphs(tiny_onnx_files, tiny_model, image_folder, tmp_path_factory) -> dict[str, Path]:
    """ONNX graphs of the tiny model: float/uint8 x dynamic/fixed batch, plus FP16 and INT8."""
    from xception_trt.export import export_onnx
    from xception_trt.precision import quantize_int8, to_fp16

    root = tmp_path_factory.mktemp("graphs")
    out = dict(tiny_onnx_files)
    out["uint8_static2"] = export_onnx(tiny_model, root / "tiny_uint8_static2.onnx", batch=2,
                                       input_format="uint8-nhwc", check_parity=False).path
    out["fp16"] = root / "tiny.fp16.onnx"
    to_fp16(out["float"], output=out["fp16"])
    out["int8"] = root / "tiny.int8.onnx"
    quantize_int8(out["float"], image_folder, num_images=8, output=out["int8"], cache_dir=None)
    return out


@pytest.fixture(scope="module")
def engines(graphs, tmp_path_factory) -> dict:
    """One engine per graph, built once for the module (TensorRT-RTX, CPU)."""
    root = tmp_path_factory.mktemp("engines")
    configs = {
        "float": RTX.replace(max_batch=4, cc=("sm86", "sm89")),
        "uint8": RTX.replace(min_batch=2, opt_batch=3, max_batch=6),
        "static2": RTX,
        "uint8_static2": RTX.replace(batch=2),
        "fp16": RTX,
        "int8": RTX,
    }
    return {key: build_engine(graphs[key], cfg, output=root / f"{key}.engine")
            for key, cfg in configs.items()}


# ---------------------------------------------------------------------------------------------
# real builds: issue 3's check that a TensorRT builder accepts every graph variant


def test_float_dynamic_engine_and_sidecar(engines, graphs, tiny_spec):
    art = engines["float"]
    assert not art.cache_hit and art.path.is_file() and art.sidecar_path == sidecar_path(art.path)
    side = art.sidecar.to_dict()
    # what is on disk is what was returned
    assert side == read_sidecar(art.path, verify=True).to_dict()
    assert side["tensorrt"]["flavour"] == "tensorrt_rtx"
    assert side["tensorrt"]["version"] == trt_rtx.__version__
    assert side["tensorrt"]["strongly_typed"] is True
    assert side["device"] is None and side["targets"] == ["SM86", "SM89"]
    assert side["host"]["platform"] and side["host"]["cpu"]
    assert side["precision"] == "fp32" and side["input_format"] == "float-nchw"
    assert side["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 3, 71, 71]}]
    assert side["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [-1, 4]}]
    assert side["profile"] == {"min": [1, 3, 71, 71], "opt": [4, 3, 71, 71],
                               "max": [4, 3, 71, 71]}
    assert side["max_batch"] == 4 and side["dynamic_batch"] is True
    assert side["onnx"]["sha256"] == sha256_file(graphs["float"])
    assert ModelSpec.from_dict(side["model_spec"]) == tiny_spec
    assert side["engine"]["bytes"] == art.path.stat().st_size == art.size_bytes
    assert side["engine"]["sha256"] == sha256_file(art.path)
    assert stat.S_IMODE(art.path.stat().st_mode) == default_file_mode()  # not mkstemp's 0600
    assert side["build_options"]["max_batch"] == 4 and side["build_seconds"] >= 0
    assert side["calibration"] is None
    assert side["layers_source"] == "builder log"
    assert _dtypes(side) == {"Float"}
    # the builder's layers map back to the graph's nodes (fusions name several)
    nodes = {n.name: n.op_type for n in onnx.load(str(graphs["float"])).graph.node}
    mapped = {name for layer in side["layers"] for name in layer["onnx_layers"]}
    assert mapped and mapped <= set(nodes)
    assert {n for n, op in nodes.items() if op == "Conv"} <= mapped
    assert "--cc SM86 SM89" in side["rebuild_command"]


def test_uint8_dynamic_engine(engines):
    side = engines["uint8"].sidecar.to_dict()
    assert side["input_format"] == "uint8-nhwc"
    assert side["inputs"] == [{"name": "input", "dtype": "uint8", "shape": [-1, 71, 71, 3]}]
    assert side["outputs"][0]["dtype"] == "float32"
    assert side["profile"] == {"min": [2, 71, 71, 3], "opt": [3, 71, 71, 3],
                               "max": [6, 71, 71, 3]}
    assert side["targets"] is None  # TensorRT-RTX's default portable targets


@pytest.mark.parametrize("key, shape", [("static2", [2, 3, 71, 71]),
                                        ("uint8_static2", [2, 71, 71, 3])])
def test_fixed_batch_graphs_need_no_profile(engines, key, shape):
    side = engines[key].sidecar.to_dict()
    assert side["inputs"][0]["shape"] == shape
    assert side["profile"] == {"min": shape, "opt": shape, "max": shape}
    assert side["dynamic_batch"] is False and side["max_batch"] == 2


def test_fixed_batch_profile_on_a_dynamic_graph(graphs, tmp_path):
    art = build_engine(graphs["float"], RTX.replace(batch=3), output=tmp_path / "b3.engine")
    profile = art.sidecar.to_dict()["profile"]
    assert profile["min"] == profile["max"] == [3, 3, 71, 71]
    assert "--batch 3" in art.sidecar.to_dict()["rebuild_command"]


def test_fixed_batch_graph_rejects_other_batches(graphs, tmp_path):
    with pytest.raises(BuildError, match="fixed batch of 2 but batch 4"):
        build_engine(graphs["static2"], RTX.replace(batch=4), output=tmp_path / "x.engine")
    with pytest.raises(BuildError, match="re-export with a dynamic batch"):
        build_engine(graphs["static2"], RTX.replace(max_batch=8),
                     output=tmp_path / "x.engine")
    assert list(tmp_path.iterdir()) == []


def test_fp16_engine_runs_in_half(engines):
    side = engines["fp16"].sidecar.to_dict()
    assert side["precision"] == "fp16"
    assert "Half" in _dtypes(side)
    assert side["inputs"][0]["dtype"] == side["outputs"][0]["dtype"] == "float32"  # FP32 I/O


def test_int8_engine_runs_in_int8_and_records_calibration(engines):
    side = engines["int8"].sidecar.to_dict()
    assert side["precision"] == "int8"
    assert "Int8" in _dtypes(side)
    assert side["calibration"]["method"] == "entropy"
    assert side["calibration"]["quantized_nodes"]
    assert side["outputs"][0]["dtype"] == "float32"


def test_strongly_typed_build_refuses_the_wrong_variant(graphs, tmp_path):
    with pytest.raises(BuildError, match="fp32 graph but a fp16 engine.*--precision fp16"):
        build_engine(graphs["float"], RTX.replace(precision="fp16"),
                     output=tmp_path / "x.engine")
    with pytest.raises(BuildError, match="int8 graph but a fp32 engine"):
        build_engine(graphs["int8"], RTX.replace(precision="fp32"),
                     output=tmp_path / "x.engine")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# engine cache


def test_cache_hit_and_invalidation(graphs, tmp_path):
    engine = tmp_path / "e.engine"
    cfg = RTX.replace(max_batch=2)
    first = build_engine(graphs["float"], cfg, output=engine)
    mtime = engine.stat().st_mtime_ns
    again = build_engine(graphs["float"], cfg, output=engine)
    assert again.cache_hit and again.sidecar == first.sidecar
    assert engine.stat().st_mtime_ns == mtime  # nothing was rewritten

    other_opts = build_engine(graphs["float"], cfg.replace(max_batch=3), output=engine)
    assert not other_opts.cache_hit and other_opts.sidecar.to_dict()["max_batch"] == 3
    assert other_opts.sidecar.to_dict()["cache_key"] != first.sidecar.to_dict()["cache_key"]

    other_target = build_engine(graphs["float"], cfg.replace(max_batch=3,
                                                             cc=("sm89",)),
                                output=engine)
    assert not other_target.cache_hit and other_target.sidecar.to_dict()["targets"] == ["SM89"]

    other_graph = build_engine(graphs["uint8"], cfg.replace(max_batch=3,
                                                            cc=("sm89",)),
                               output=engine)
    assert not other_graph.cache_hit
    assert other_graph.sidecar.to_dict()["input_format"] == "uint8-nhwc"

    forced = build_engine(graphs["uint8"], cfg.replace(max_batch=3,
                                                       cc=("sm89",)),
                          output=engine, force=True)
    assert not forced.cache_hit


def test_corrupt_engine_or_sidecar_is_rebuilt(graphs, tmp_path):
    engine = tmp_path / "e.engine"
    good = build_engine(graphs["float"], RTX, output=engine)
    engine.write_bytes(engine.read_bytes()[:1000])  # truncated plan
    with pytest.raises(EngineError, match="does not match its sidecar"):
        read_sidecar(engine, verify=True)
    rebuilt = build_engine(graphs["float"], RTX, output=engine)
    assert not rebuilt.cache_hit
    assert rebuilt.sidecar.to_dict()["cache_key"] == good.sidecar.to_dict()["cache_key"]
    assert read_sidecar(engine, verify=True) == rebuilt.sidecar
    sidecar_path(engine).write_text("{ not json")
    with pytest.raises(EngineError, match="unreadable"):
        read_sidecar(engine)
    assert not build_engine(graphs["float"], RTX, output=engine).cache_hit
    read_sidecar(engine, verify=True)


def test_read_sidecar_errors(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(EngineError, match="has no sidecar m.engine.json"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"schema": 99}))
    with pytest.raises(EngineError, match="newer than this"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps([1, 2]))
    with pytest.raises(EngineError, match="not an xception-trt engine sidecar"):
        read_sidecar(engine)


# ---------------------------------------------------------------------------------------------
# failures leave nothing behind


def test_failed_build_writes_nothing_and_keeps_the_old_engine(graphs, tmp_path):
    engine = tmp_path / "e.engine"
    # TensorRT-RTX cannot compile the FP32 classifier GEMM for Turing: a real builder failure.
    with pytest.raises(BuildError, match=r"(?s)failed to build.*SM75.*hint: check the compute"):
        build_engine(graphs["float"], RTX.replace(cc=("sm75",)),
                     output=engine)
    assert list(tmp_path.iterdir()) == []
    good = build_engine(graphs["float"], RTX, output=engine)
    with pytest.raises(BuildError):
        build_engine(graphs["float"], RTX.replace(cc=("sm75",)),
                     output=engine)
    assert read_sidecar(engine, verify=True) == good.sidecar
    assert _leftovers(tmp_path) == []


def _bad_graph(path: Path, spec: ModelSpec) -> Path:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 8, 8])
    nodes = [helper.make_node("FooBar", ["input"], ["a"], name="weird_a", domain="com.example"),
             helper.make_node("BazQux", ["input"], ["b"], name="weird_b", domain="com.example"),
             helper.make_node("Add", ["a", "b"], ["logits"], name="add")]
    model = helper.make_model(helper.make_graph(nodes, "bad", [x], [y]), opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    write_metadata(model, {"model_spec": spec, "precision": "fp32"})
    onnx.save(model, str(path))
    return path


def test_parser_errors_list_every_node(tmp_path, tiny_spec):
    bad = _bad_graph(tmp_path / "bad.onnx", tiny_spec)
    with pytest.raises(BuildError) as err:
        build_engine(bad, RTX, output=tmp_path / "bad.engine")
    text = str(err.value)
    assert "node 0 'weird_a' (FooBar)" in text and "node 1 'weird_b' (BazQux)" in text
    assert "hint:" in text and "xception-trt export" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_not_onnx_or_without_metadata(tmp_path, graphs):
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(graphs["float"].read_bytes()[:3000])
    with pytest.raises(GraphError, match="not a valid ONNX file|no nodes"):
        build_engine(truncated, RTX)
    plain = onnx.load(str(graphs["float"]))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(GraphError, match="xception-trt export"):
        build_engine(tmp_path / "plain.onnx", RTX)
    with pytest.raises(GraphError, match="does not exist"):
        build_engine(tmp_path / "missing.onnx", RTX)
    with pytest.raises(BuildError, match="ONNX file itself"):
        build_engine(graphs["float"], RTX, output=graphs["float"])


def test_onnx_source_reads_the_metadata_without_parsing_the_graph(graphs, tmp_path,
                                                                  monkeypatch):
    """OnnxSource reads the metadata from the file's top-level fields (no onnx.load of the
    graph and its weights) and hashes it once; a file it cannot read plainly gets the full
    parse's error."""
    expected = {k: read_metadata(graphs[k]) for k in ("float", "fp16", "int8")}

    def no_parse(*_a, **_kw):
        raise AssertionError("the graph was parsed")

    with monkeypatch.context() as m:
        m.setattr(onnx, "load", no_parse)
        m.setattr(onnx, "load_model", no_parse)
        for key, meta in expected.items():
            src = OnnxSource.read(graphs[key])
            assert src.meta == meta and src.path == graphs[key]
            assert src.sha256 == sha256_file(graphs[key])
            assert src.size == graphs[key].stat().st_size
    assert OnnxSource.of(src) is src
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(graphs["float"].read_bytes()[:3000])
    with pytest.raises(GraphError, match="not a valid ONNX file|no nodes"):
        OnnxSource.read(truncated)
    (tmp_path / "text.onnx").write_bytes(b"this is not an ONNX file")
    with pytest.raises(GraphError, match="not a valid ONNX file"):
        OnnxSource.read(tmp_path / "text.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(GraphError, match="is empty"):
        OnnxSource.read(tmp_path / "empty.onnx")
    with pytest.raises(GraphError, match="does not exist"):
        OnnxSource.read(tmp_path / "missing.onnx")
    plain = onnx.load(str(graphs["float"]))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(GraphError, match="xception-trt export"):
        OnnxSource.read(tmp_path / "plain.onnx")


def test_build_engine_takes_the_digest_the_source_carries(graphs, tmp_path):
    src = OnnxSource.read(graphs["static2"])
    carried = dataclasses.replace(src, sha256="ab" * 32)  # not the file's: proves no re-hash
    art = build_engine(carried, RTX, output=tmp_path / "s.engine")
    assert art.sidecar.onnx["sha256"] == "ab" * 32
    assert art.sidecar.onnx["path"] == str(graphs["static2"])
    assert build_engine(carried, RTX, output=tmp_path / "s.engine").cache_hit
    assert not build_engine(graphs["static2"], RTX, output=tmp_path / "s.engine").cache_hit


def test_options_tensorrt_rtx_cannot_honour(graphs, tmp_path):
    from xception_trt.trt.devices import query_devices

    for cfg, match in ((RTX.replace(dla_core=0), "DLA"),
                       (RTX.replace(version_compatible=True), "version-compatible"),
                       (RTX.replace(hardware_compatible=True), "--cc")):
        with pytest.raises(BuildError, match=match):
            build_engine(graphs["float"], cfg, output=tmp_path / "x.engine")
    if not query_devices().gpus:
        with pytest.raises(BuildError, match="CURRENT.*--cc sm86"):
            build_engine(graphs["float"], RTX.replace(cc=("current",)),
                         output=tmp_path / "x.engine")
    assert list(tmp_path.iterdir()) == []


def test_timing_cache_is_not_used_by_tensorrt_rtx(graphs, tmp_path):
    art = build_engine(graphs["float"], RTX.replace(timing_cache_dir=str(tmp_path / "tc")),
                       output=tmp_path / "e.engine")
    assert art.sidecar.to_dict()["timing_cache"]["used"] is False
    assert "ignores it" in art.sidecar.to_dict()["timing_cache"]["reason"]
    assert art.sidecar.to_dict()["warnings"] and not (tmp_path / "tc").exists()


# ---------------------------------------------------------------------------------------------
# progress monitor


class _Recorder:
    def __init__(self, fail_at: int | None = None) -> None:
        self.events: list[tuple] = []
        self.fail_at = fail_at

    def phase_start(self, name, parent, steps):
        self.events.append(("start", name, parent, steps))

    def step_complete(self, name, step):
        self.events.append(("step", name, step))
        if self.fail_at is not None and len(self.events) >= self.fail_at:
            raise KeyError("progress callback broke")

    def phase_finish(self, name):
        self.events.append(("finish", name))


def test_progress_monitor_reports_phases(graphs, tmp_path):
    rec = _Recorder()
    build_engine(graphs["float"], RTX, output=tmp_path / "e.engine", progress=rec)
    starts = [e for e in rec.events if e[0] == "start"]
    assert starts and starts[0][2] is None and starts[0][3] > 0  # a top-level phase first
    assert any(e[0] == "step" for e in rec.events)
    assert rec.events[-1] == ("finish", starts[0][1])


def test_progress_callback_error_is_reraised_after_the_build(graphs, tmp_path):
    rec = _Recorder(fail_at=3)
    with pytest.raises(KeyError, match="progress callback broke"):
        build_engine(graphs["float"], RTX, output=tmp_path / "e.engine", progress=rec)
    # the failing callback cancelled the build and was not called again
    assert sum(e[0] == "step" for e in rec.events) == 1
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_build_checkpoint_all_precisions(tiny_checkpoint, image_folder, tmp_path, capsys):
    out = tmp_path / "engines"
    argv = ["build", str(tiny_checkpoint), "-o", str(out), "--precision", "fp32", "fp16", "int8",
            "--calib", str(image_folder), "--max-batch", "4", "--flavour", "tensorrt_rtx",
            "--cc", "sm86", "--no-progress"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["fp32", "fp16", "int8"]
    assert all("built in" in line and "targets SM86" in line for line in lines)
    for precision in ("fp32", "fp16", "int8"):
        side = read_sidecar(out / f"tiny.{precision}.engine", verify=True).to_dict()
        assert side["precision"] == precision and side["max_batch"] == 4
        assert (out / (f"tiny.{precision}.onnx" if precision != "fp32" else "tiny.onnx")).is_file()
    # same command again: everything is reused (export, variants, engines)
    assert main(argv + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["cache_hit"] for r in report] == [True, True, True]
    assert _leftovers(out) == []


def test_cli_build_from_onnx(graphs, tmp_path, capsys):
    out = tmp_path / "e"
    assert main(["build", str(graphs["uint8"]), "-o", str(out), "--batch", "2", "--flavour",
                 "tensorrt_rtx", "--no-progress", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    side = read_sidecar(entry["engine"]).to_dict()
    assert side["inputs"][0]["dtype"] == "uint8" and side["profile"]["max"][0] == 2
    assert Path(entry["engine"]).name == "tiny_uint8.fp32.engine"
    # an FP16 graph builds an FP16 engine by default; an FP32 engine cannot come from it
    assert main(["build", str(graphs["fp16"]), "-o", str(out), "--flavour", "tensorrt_rtx",
                 "--no-progress"]) == 0
    assert "fp16: " in capsys.readouterr().out
    assert read_sidecar(out / "tiny.fp16.engine").precision == "fp16"
    assert main(["build", str(graphs["fp16"]), "-o", str(out), "--precision", "fp32",
                 "--flavour", "tensorrt_rtx", "--no-progress"]) == 2
    assert "made from the FP32 graph" in capsys.readouterr().err


@pytest.mark.parametrize("extra, match", [
    (["--precision", "int8"], "--calib"),
    (["--cc", "sm86", "--dla-core", "0"], "DLA"),
    (["--cc", "ampere"], "not a compute capability"),
    (["--batch", "2", "--max-batch", "4"], "either a fixed batch"),
])
def test_cli_bad_options_exit_2(tiny_checkpoint, tmp_path, capsys, extra, match):
    code = main(["build", str(tiny_checkpoint), "-o", str(tmp_path / "e"), "--flavour",
                 "tensorrt_rtx", "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert __import__("re").search(match, err)


def test_cli_missing_source_and_backend(tmp_path, capsys):
    assert main(["build", str(tmp_path / "nope.safetensors"), "-o", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.onnx").write_bytes(b"this is not an ONNX file")
    assert main(["build", str(tmp_path / "bad.onnx"), "-o", str(tmp_path / "e"), "--flavour",
                 "tensorrt_rtx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a valid ONNX file" in err and "Traceback" not in err
    assert not (tmp_path / "e").exists()
    if "tensorrt" not in {f.name for f in __import__("xception_trt.trt").trt.available_flavours()}:
        (tmp_path / "m.onnx").write_bytes(b"x")
        assert main(["build", str(tmp_path / "m.onnx"), "-o", str(tmp_path),
                     "--flavour", "tensorrt"]) == 2
        assert "'tensorrt' is not installed" in capsys.readouterr().err


def test_resolve_flavour_prefers_rtx_without_gpu():
    from xception_trt.trt.devices import query_devices

    flavour = resolve_flavour()
    if not query_devices().gpus:
        assert flavour.name == "tensorrt_rtx"


# ---------------------------------------------------------------------------------------------
# the full-size model


@pytest.mark.slow
def test_full_299_build(tmp_path):
    import torch

    from xception_trt.export import export_onnx
    from xception_trt.model import build_xception

    torch.manual_seed(0)
    model = build_xception(spec=ModelSpec()).eval()
    onnx_path = export_onnx(model, tmp_path / "xception.onnx", check_parity=False).path
    art = build_engine(onnx_path, RTX.replace(max_batch=8, cc=("sm86",)),
                       output=tmp_path / "xception.fp32.engine")
    side = art.sidecar.to_dict()
    assert side["inputs"][0]["shape"] == [-1, 3, 299, 299]
    assert side["outputs"][0]["shape"] == [-1, 1000]
    assert side["engine"]["bytes"] > 80e6  # 22.9 M FP32 weights live in the plan
    assert ModelSpec.from_dict(side["model_spec"]) == ModelSpec()


# ---------------------------------------------------------------------------------------------
# NVIDIA TensorRT on a GPU (Jetson / desktop): skipped here


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.parametrize("key", ["float", "fp16", "int8"])
def test_tensorrt_build_timing_cache_and_compat(graphs, tmp_path, key):
    import tensorrt as trt

    from xception_trt.trt.builder import check_sidecar_compat
    from xception_trt.trt.devices import query_devices

    cfg = BuildConfig(flavour="tensorrt", max_batch=4, timing_cache_dir=str(tmp_path / "tc"))
    first = build_engine(graphs[key], cfg, output=tmp_path / "a.engine")
    side = first.sidecar.to_dict()
    assert side["tensorrt"]["flavour"] == "tensorrt" and side["device"]["compute_capability"]
    assert side["layers_source"] == "engine inspector" and side["layers"]
    cache = Path(side["timing_cache"]["path"])
    assert cache.is_file() and side["timing_cache"]["saved_bytes"] == cache.stat().st_size > 0
    second = build_engine(graphs[key], cfg, output=tmp_path / "b.engine")
    assert second.sidecar.to_dict()["timing_cache"]["loaded_bytes"] > 0  # reused across builds
    gpu = query_devices().gpus[0]
    check_sidecar_compat(first.sidecar, "tensorrt", trt.__version__, gpu.compute_capability)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(first.path.read_bytes())
    assert engine is not None and engine.get_tensor_name(0) == "input"
    assert os.path.getsize(first.path) == side["engine"]["bytes"]
    assert np.dtype(trt.nptype(engine.get_tensor_dtype("logits"))) == np.float32


@pytest.mark.trt
@pytest.mark.gpu
def test_tensorrt_precision_flags_follow_the_version(graphs, tmp_path):
    import tensorrt as trt

    from xception_trt.trt.compat import parse_version

    art = build_engine(graphs["float"], BuildConfig(flavour="tensorrt", precision="fp16")
                       if parse_version(trt.__version__) < (10,) else
                       BuildConfig(flavour="tensorrt"), output=tmp_path / "e.engine")
    plan = art.sidecar.to_dict()["tensorrt"]
    if parse_version(trt.__version__) < (10,):
        assert plan["builder_flags"] == ["FP16"] and not plan["strongly_typed"]
    else:
        assert plan["strongly_typed"] and plan["builder_flags"] == []
    assert Precision.parse(art.sidecar.to_dict()["precision"])
