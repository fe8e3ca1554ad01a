"""The pipeline API (xception_trt.pipeline): file layout, calibration fingerprint and method
choices, export / variant reuse rules and manifest, engines with callbacks and keep-going, and
the whole ``build`` (TensorRT-RTX builds on the CPU; those tests skip without it)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest

from xception_trt.config import BuildConfig, Precision
from xception_trt.errors import BuildError, ConfigError
from xception_trt.fsio import sha256_file
from xception_trt.onnx_meta import read_metadata
from xception_trt.pipeline import (
    AUTO_CALIBRATION,
    CALIBRATION_CHOICES,
    ArtifactLayout,
    PipelineCallbacks,
    build,
    build_engines,
    calibration_fingerprint,
    export_checkpoint,
    make_variant,
    parse_calibration_method,
)
from xception_trt.precision import CalibrationMethod


def _needs_rtx() -> None:
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds engines on the CPU")


# ---------------------------------------------------------------------------------------------
# pure parts


def test_layout_names():
    build_layout = ArtifactLayout.in_folder("out", stem="tiny")
    assert build_layout.onnx("fp32") == Path("out/tiny.onnx")
    assert build_layout.onnx(Precision.FP16) == Path("out/tiny.fp16.onnx")
    assert build_layout.manifest == Path("out/tiny.variants.json")
    assert build_layout.engine("int8") == Path("out/tiny.int8.engine")
    assert build_layout.calibration_cache_dir == Path("out/calibration-cache")
    demo_layout = ArtifactLayout(onnx_dir="a", engine_dir="a/engines")
    assert demo_layout.onnx("fp32") == Path("a/fp32.onnx")
    assert demo_layout.onnx("int8") == Path("a/int8.onnx")
    assert demo_layout.onnx("int8", "onnxruntime") == Path("a/int8-ort.onnx")
    assert build_layout.onnx("int8", "onnxruntime") == Path("out/tiny.int8-ort.onnx")
    with pytest.raises(ConfigError, match="only int8 has a placement"):
        demo_layout.onnx("fp16", "onnxruntime")
    assert demo_layout.manifest == Path("a/variants.json")
    assert demo_layout.engine("fp16") == Path("a/engines/fp16.engine")
    assert demo_layout.calibration_cache_dir is None
    with pytest.raises(ConfigError):
        demo_layout.onnx("fp8")


def test_calibration_method_choices():
    assert CALIBRATION_CHOICES == (*(m.value for m in CalibrationMethod), "auto")
    assert parse_calibration_method(None) is None
    assert parse_calibration_method(AUTO_CALIBRATION) == "auto"
    assert parse_calibration_method("max") == "max"
    value = parse_calibration_method(CalibrationMethod.PERCENTILE)
    assert value == "percentile" and type(value) is str
    with pytest.raises(ConfigError, match=r"calibration method 'minmax'.*entropy.*auto"):
        parse_calibration_method("minmax")


def test_calibration_fingerprint(tmp_path):
    assert calibration_fingerprint(None) is None
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"123")
    first = calibration_fingerprint(tmp_path)
    assert first == calibration_fingerprint(str(tmp_path)) and len(first) == 64
    (tmp_path / "a" / "y.png").write_bytes(b"4")
    second = calibration_fingerprint(tmp_path)
    assert second != first
    os.utime(tmp_path / "a" / "y.png", ns=(1, 1))  # same names and sizes, another time
    assert calibration_fingerprint(tmp_path) != second


# ---------------------------------------------------------------------------------------------
# export and variants


def test_export_is_reused_unless_forced(tiny_checkpoint, tmp_path):
    out = tmp_path / "m.onnx"
    first = export_checkpoint(checkpoint=tiny_checkpoint, output=out)
    assert not first.reused and first.result is not None and first.path == out
    meta = read_metadata(out)
    assert meta.raw["source_sha256"] == sha256_file(tiny_checkpoint)
    assert meta.json_field("export")["opset"] == 17
    mtime = out.stat().st_mtime_ns
    again = export_checkpoint(checkpoint=tiny_checkpoint, output=out)
    assert again.reused and again.result is None and out.stat().st_mtime_ns == mtime
    # another input format is another export
    other = export_checkpoint(checkpoint=tiny_checkpoint, output=out, input_format="uint8-nhwc")
    assert not other.reused and read_metadata(out).input_format.value == "uint8-nhwc"
    forced = export_checkpoint(checkpoint=tiny_checkpoint, output=out, input_format="uint8-nhwc",
                               force=True)
    assert not forced.reused
    out.write_bytes(b"not onnx")  # an unreadable file is exported again, not an error
    assert not export_checkpoint(checkpoint=tiny_checkpoint, output=out).reused


@pytest.fixture()
def fp32_graph(tiny_onnx_files, tmp_path) -> Path:
    path = tmp_path / "out" / "tiny.onnx"
    path.parent.mkdir()
    shutil.copy(tiny_onnx_files["float"], path)
    return path


def test_fp16_variant_manifest_and_reuse(fp32_graph, image_folder):
    layout = ArtifactLayout.in_folder(fp32_graph.parent, stem="tiny")
    first = make_variant(fp32_onnx=fp32_graph, precision="fp16", layout=layout,
                         calibration=image_folder)
    assert not first.reused and first.path == layout.onnx("fp16")
    assert read_metadata(first.path).precision is Precision.FP16
    manifest = json.loads(layout.manifest.read_text())
    assert set(manifest) == {"fp16"}
    assert manifest["fp16"] == {"recipe": {"from_sha256": sha256_file(fp32_graph),
                                           "calib": calibration_fingerprint(image_folder),
                                           "calib_method": None},
                                "sha256": sha256_file(first.path)}
    again = make_variant(fp32_onnx=fp32_graph, precision=Precision.FP16, layout=layout,
                         calibration=image_folder)
    assert again.reused and again.quantize is None and again.recipe == first.recipe
    # another recipe (a method chosen), a damaged file, or force: made again
    other = make_variant(fp32_onnx=fp32_graph, precision="fp16", layout=layout,
                         calibration=image_folder, calibration_method="max")
    assert not other.reused and other.recipe["calib_method"] == "max"
    first.path.write_bytes(first.path.read_bytes() + b"\0")
    assert not make_variant(fp32_onnx=fp32_graph, precision="fp16", layout=layout,
                            calibration=image_folder, calibration_method="max").reused
    assert not make_variant(fp32_onnx=fp32_graph, precision="fp16", layout=layout,
                            calibration=image_folder, calibration_method="max",
                            force=True).reused
    # a broken manifest is rewritten, not an error
    layout.manifest.write_text("{not json")
    assert not make_variant(fp32_onnx=fp32_graph, precision="fp16", layout=layout,
                            calibration=image_folder, calibration_method="max").reused
    assert set(json.loads(layout.manifest.read_text())) == {"fp16"}


def test_int8_variant_uses_the_calibration_cache(fp32_graph, image_folder):
    layout = ArtifactLayout(onnx_dir=fp32_graph.parent, engine_dir=fp32_graph.parent,
                            calibration_cache_dir=fp32_graph.parent / "cache")
    events: list[tuple[str, int, int | None]] = []
    first = make_variant(fp32_onnx=fp32_graph, precision="int8", layout=layout,
                         calibration=image_folder, calibration_method="max", num_images=8,
                         progress=lambda *e: events.append(e))
    # progress: every image decoded, then every calibration batch fed to ModelOpt (a worker
    # process: its WORKER-PROGRESS lines come back through the launcher)
    decode = [e for e in events if e[0] == "decode calibration images"]
    fed = [e for e in events if e[0] == "calibrate max"]
    assert decode and decode[-1][1:] == (8, 8)
    assert fed and fed[-1][1] == fed[-1][2] and all(0 < d <= t for _, d, t in fed)
    assert events.index(decode[-1]) < events.index(fed[0])
    assert first.path == fp32_graph.parent / "int8.onnx" and not first.reused
    assert first.quantize is not None and first.auto is None
    assert first.quantize.method.value == "max" and first.quantize.num_images == 8
    assert first.quantize.cache == "miss" and any((fp32_graph.parent / "cache").iterdir())
    assert first.recipe["num_images"] == 8 and first.recipe["calib_method"] == "max"
    assert read_metadata(first.path).precision is Precision.INT8
    assert make_variant(fp32_onnx=fp32_graph, precision="int8", layout=layout,
                        calibration=image_folder, calibration_method="max",
                        num_images=8).reused
    # a recipe change recalibrates, through the calibration cache when it still applies
    forced = make_variant(fp32_onnx=fp32_graph, precision="int8", layout=layout,
                          calibration=image_folder, calibration_method="max", num_images=8,
                          force=True)
    assert not forced.reused and forced.quantize is not None and forced.quantize.cache == "hit"
    # the same precision placed for ONNX Runtime: its own file and manifest entry, reused too,
    # and never the graph an engine is built from
    from xception_trt.config import Placement
    from xception_trt.pipeline import Steps

    steps = Steps(layout)
    steps.use(Precision.FP32, fp32_graph)
    ort = steps.variant(Precision.INT8, calibration=image_folder, calibration_method="max",
                        num_images=8, placement="onnxruntime")
    assert ort.step == "int8-ort" and ort.status == "ran"
    assert ort.value.path == fp32_graph.parent / "int8-ort.onnx"
    assert read_metadata(ort.value.path).placement is Placement.ONNXRUNTIME
    assert ort.value.recipe["placement"] == "onnxruntime"
    manifest = json.loads(layout.manifest.read_text())
    assert manifest["int8-ort"]["sha256"] == sha256_file(ort.value.path)
    assert "placement" not in manifest["int8"]["recipe"]
    with pytest.raises(BuildError, match="no int8 graph"):
        steps.graph(Precision.INT8)  # engines are built from the TensorRT placement only
    again = steps.variant(Precision.INT8, calibration=image_folder, calibration_method="max",
                          num_images=8, placement="onnxruntime")
    assert again.status == "cached" and again.value.reused
    assert make_variant(fp32_onnx=fp32_graph, precision="int8", layout=layout,
                        calibration=image_folder, calibration_method="max",
                        num_images=8).reused  # the TensorRT-placed entry is untouched
    with pytest.raises(ConfigError, match="only int8 has a placement"):
        make_variant(fp32_onnx=fp32_graph, precision="fp16", layout=layout,
                     calibration=image_folder, placement="onnxruntime")


def test_variant_bad_input(fp32_graph, image_folder):
    layout = ArtifactLayout.in_folder(fp32_graph.parent, stem="tiny")
    with pytest.raises(BuildError, match="--calib"):
        make_variant(fp32_onnx=fp32_graph, precision="int8", layout=layout)
    with pytest.raises(ConfigError, match="FP32 graph is the export"):
        make_variant(fp32_onnx=fp32_graph, precision="fp32", layout=layout)
    with pytest.raises(ConfigError, match="calibration method"):
        make_variant(fp32_onnx=fp32_graph, precision="int8", layout=layout,
                     calibration=image_folder, calibration_method="minmax")
    with pytest.raises(ConfigError, match="num_images must be a positive integer"):
        make_variant(fp32_onnx=fp32_graph, precision="int8", layout=layout,
                     calibration=image_folder, num_images=0)
    assert not layout.manifest.exists()


# ---------------------------------------------------------------------------------------------
# engines and the whole build (TensorRT-RTX on the CPU)


class _Recorder(PipelineCallbacks):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.stages: list[str] = []

    def on_progress(self, stage, done, total):
        if stage not in self.stages:
            self.stages.append(stage)

    def on_export(self, outcome):
        self.events.append(("export", "reused" if outcome.reused else "ran"))

    def on_variant(self, outcome):
        self.events.append(("variant", outcome.precision.value))

    @contextlib.contextmanager
    def engine_progress(self, precision):
        self.events.append(("progress", precision.value))
        try:
            yield None
        finally:
            self.events.append(("progress-end", precision.value))

    def on_engine(self, outcome):
        self.events.append(("engine", outcome.precision.value))


def test_build_checkpoint_to_engines_and_rerun(tiny_checkpoint, image_folder, tmp_path):
    _needs_rtx()
    rec = _Recorder()
    kw = dict(source=tiny_checkpoint, output=tmp_path / "e", precisions=["fp16", "fp32"],
              calibration=image_folder, config=BuildConfig(flavour="tensorrt_rtx", max_batch=2,
                                                           cc=("sm86",)))
    first = build(**kw, callbacks=rec)
    assert rec.events == [("export", "ran"), ("variant", "fp16"), ("progress", "fp16"),
                          ("progress-end", "fp16"), ("engine", "fp16"), ("progress", "fp32"),
                          ("progress-end", "fp32"), ("engine", "fp32")]
    assert rec.stages == ["export", "fp16 variant"]  # the steps before the engine builds
    assert [e.precision.value for e in first.engines] == ["fp16", "fp32"]
    assert first.layout == ArtifactLayout.in_folder(tmp_path / "e", stem="tiny")
    assert first.export is not None and first.export.path == tmp_path / "e" / "tiny.onnx"
    assert [v.path.name for v in first.variants] == ["tiny.fp16.onnx"]
    fp16 = first.engines[0]
    assert fp16.artifact.path == tmp_path / "e" / "tiny.fp16.engine"
    assert not fp16.artifact.cache_hit
    line = fp16.describe()
    assert line.startswith("fp16: ") and "targets SM86" in line and "max batch 2" in line
    assert "built in" in line
    record = fp16.to_dict()
    assert record["precision"] == "fp16" and record["engine"] == str(fp16.artifact.path)
    assert record["cache_hit"] is False and record["flavour"] == "tensorrt_rtx"
    json.dumps(record)
    assert not (tmp_path / "e" / "timing-cache").exists()  # TensorRT-RTX has none

    second = build(**kw)
    assert second.export is not None and second.export.reused
    assert all(v.reused for v in second.variants)
    assert all(e.artifact.cache_hit for e in second.engines)
    assert "reused (identical engine exists)" in second.engines[0].describe()
    forced = build(**kw, force=True)  # force rebuilds engines only
    assert forced.export is not None and forced.export.reused
    assert not any(e.artifact.cache_hit for e in forced.engines)


def test_build_engines_keep_going(tiny_onnx_files, tmp_path):
    _needs_rtx()
    layout = ArtifactLayout(onnx_dir=tmp_path, engine_dir=tmp_path / "engines")
    graphs = {"fp32": tiny_onnx_files["float"], Precision.FP16: tiny_onnx_files["float"]}
    cfg = BuildConfig(flavour="tensorrt_rtx", max_batch=2, cc=("sm86",))
    # the FP16 engine needs the FP16 graph: it fails, the FP32 engine is still built
    res = build_engines(onnx=graphs, config=cfg, layout=layout, keep_going=True)
    assert [e.precision.value for e in res.engines] == ["fp32"]
    assert res.engines[0].artifact.path == tmp_path / "engines" / "fp32.engine"
    (failure,) = res.failures
    assert failure.precision is Precision.FP16 and isinstance(failure.error, BuildError)
    assert "fp32 graph but a fp16 engine was asked" in str(failure.error)
    with pytest.raises(BuildError, match="fp16 engine was asked"):
        build_engines(onnx=graphs, config=cfg, layout=layout)


def test_build_refuses_before_long_steps(tiny_checkpoint, tmp_path):
    _needs_rtx()
    rtx = BuildConfig(flavour="tensorrt_rtx")
    with pytest.raises(BuildError, match="does not exist; give a checkpoint"):
        build(source=tmp_path / "nope.safetensors", output=tmp_path / "o", config=rtx)
    with pytest.raises(BuildError, match="calibration folder .* does not exist"):
        build(source=tiny_checkpoint, output=tmp_path / "o", calibration=tmp_path / "none",
              config=rtx)
    with pytest.raises(BuildError, match="int8 engine needs calibration images"):
        build(source=tiny_checkpoint, output=tmp_path / "o", precisions=["int8"], config=rtx)
    with pytest.raises(ConfigError):
        build(source=tiny_checkpoint, output=tmp_path / "o", precisions=["fp8"], config=rtx)
    assert not (tmp_path / "o").exists()  # nothing exported


def _count_reads(monkeypatch, *paths: Path) -> dict[str, dict[str, int]]:
    """Count, per file of ``paths`` from here on, its full parses (``onnx.load``), metadata
    reads (the top-level scan) and hashes (``sha256_file``, in every xception_trt module that
    imported it)."""
    import sys

    import onnx

    from xception_trt import fsio, onnx_meta

    counts = {Path(p).name: {"parse": 0, "scan": 0, "hash": 0} for p in paths}
    names = {Path(p).resolve(): Path(p).name for p in paths}

    def counting(kind, real):
        def wrapper(f, *a, **kw):
            if isinstance(f, (str, os.PathLike)) and Path(f).resolve() in names:
                counts[names[Path(f).resolve()]][kind] += 1
            return real(f, *a, **kw)
        return wrapper

    load = counting("parse", onnx.load)
    monkeypatch.setattr(onnx, "load", load)
    monkeypatch.setattr(onnx, "load_model", load)
    monkeypatch.setattr(onnx_meta, "_scan_metadata", counting("scan", onnx_meta._scan_metadata))
    real_hash = fsio.sha256_file
    for name, module in list(sys.modules.items()):
        if name.startswith("xception_trt") and getattr(module, "sha256_file", None) is real_hash:
            monkeypatch.setattr(module, "sha256_file", counting("hash", real_hash))
    return counts


def test_build_from_onnx_parses_and_hashes_the_source_once(tiny_onnx_files, tmp_path,
                                                           monkeypatch):
    _needs_rtx()
    import xception_trt.trt.builder  # noqa: F401 - imported before the counting starts

    source = tmp_path / "src" / "tiny.onnx"
    source.parent.mkdir()
    shutil.copy(tiny_onnx_files["float"], source)
    counts = _count_reads(monkeypatch, source)
    result = build(source, tmp_path / "e", config=BuildConfig(
        flavour="tensorrt_rtx", max_batch=2, cc=("sm86",)))
    assert [e.precision for e in result.engines] == [Precision.FP32]
    # one metadata read (the top-level fields, not the graph) and one hash; on the code
    # before this test: four full parses (onnx.load) and one hash
    assert counts == {"tiny.onnx": {"parse": 0, "scan": 1, "hash": 1}}
    side = result.engines[0].artifact.sidecar
    assert side.onnx["sha256"] == sha256_file(source)  # the digest carried is the file's


def test_build_reads_each_graph_once(tiny_checkpoint, image_folder, tmp_path, monkeypatch):
    """A rebuild from a checkpoint (export and variant reused, engines cached) parses no graph
    in full and hashes each once: the variant's manifest check and its engine share the
    digest."""
    _needs_rtx()
    import xception_trt.trt.builder  # noqa: F401 - imported before the counting starts

    kw = dict(precisions=["fp32", "fp16"], calibration=image_folder, config=BuildConfig(
        flavour="tensorrt_rtx", max_batch=2, cc=("sm86",)))
    first = build(tiny_checkpoint, tmp_path / "e", **kw)
    counts = _count_reads(monkeypatch, first.onnx("fp32"), first.onnx("fp16"))
    again = build(tiny_checkpoint, tmp_path / "e", **kw)
    assert all(e.artifact.cache_hit for e in again.engines)
    # the export's reuse check reads the FP32 metadata, the steps read it with its digest
    assert counts == {"tiny.onnx": {"parse": 0, "scan": 2, "hash": 1},
                      "tiny.fp16.onnx": {"parse": 0, "scan": 1, "hash": 1}}


def test_build_result_engine_and_onnx_by_precision(tiny_checkpoint, image_folder, tmp_path):
    _needs_rtx()
    result = build(tiny_checkpoint, tmp_path / "e", precisions=["fp16", "fp32"],
                   calibration=image_folder, config=BuildConfig(
                       flavour="tensorrt_rtx", max_batch=2, cc=("sm86",)))
    fp16 = result.engine("fp16")
    assert fp16.engine == tmp_path / "e" / "tiny.fp16.engine"
    assert fp16.onnx == tmp_path / "e" / "tiny.fp16.onnx"
    assert os.fspath(fp16) == str(fp16) == str(tmp_path / "e" / "tiny.fp16.engine")
    assert result.engine(Precision.FP32).engine == tmp_path / "e" / "tiny.fp32.engine"
    assert result.onnx("fp16") == tmp_path / "e" / "tiny.fp16.onnx"
    assert result.onnx("fp32") == tmp_path / "e" / "tiny.onnx"
    with pytest.raises(ConfigError, match=r"no int8 engine was built \(built: fp16, fp32\)"):
        result.engine("int8")
    with pytest.raises(ConfigError, match="no int8 engine"):
        result.onnx(Precision.INT8)


def test_step_runner_outcomes(tiny_checkpoint, tiny_onnx_files, image_folder, tmp_path):
    """Steps: each step says ran / cached / failed (with the reason) and keeps what it made
    for the next; run() is build's sequence."""
    _needs_rtx()
    from xception_trt.pipeline import CACHED, FAILED, RAN, EngineJob, Steps

    cfg = BuildConfig(flavour="tensorrt_rtx", max_batch=2, cc=("sm86",))
    layout = ArtifactLayout.in_folder(tmp_path / "e", stem="tiny")
    first = list(Steps(layout).run(tiny_checkpoint, [Precision.FP16], config=cfg,
                                   calibration=image_folder))
    assert [(o.step, o.status) for o in first] == [("export", RAN), ("fp16", RAN),
                                                  ("engines", RAN)]
    again = Steps(layout)
    second = list(again.run(tiny_checkpoint, [Precision.FP16], config=cfg,
                            calibration=image_folder))
    assert [(o.step, o.status) for o in second] == [("export", CACHED), ("fp16", CACHED),
                                                   ("engines", CACHED)]
    assert again.graphs == {Precision.FP32: layout.onnx("fp32"), Precision.FP16:
                            layout.onnx("fp16")}
    assert again.graph(Precision.FP16).meta.precision is Precision.FP16
    # an FP16 engine asked from the FP32 graph fails: recorded with keep_going, the other built
    steps = Steps(layout)
    steps.use(Precision.FP32, tiny_onnx_files["float"])
    steps.use(Precision.FP16, tiny_onnx_files["float"])
    out = steps.engines([EngineJob(Precision.FP16, cfg), EngineJob(Precision.FP32, cfg)],
                        keep_going=True)
    assert out.status == FAILED and "fp16: " in out.detail and "fp16 engine was asked" in out.detail
    assert [e.precision for e in out.value.engines] == [Precision.FP32]
    with pytest.raises(BuildError, match="no int8 graph"):
        steps.engines([EngineJob(Precision.INT8, cfg)])
