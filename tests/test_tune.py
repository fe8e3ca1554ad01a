"""``tune``: the candidates a machine can run (and the reasons for the rest, from the engine
choice over recorded machine facts), the sequential stop and the tie rule as pure functions, the
accuracy floor's boundary, and the whole search on a small bundle with one broken INT8
variant, through the library and the CLI."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from xception_trt.bundle.facts import DeviceFacts, FlavourFact, GpuFact
from xception_trt.bundle.format import MANIFEST, Bundle
from xception_trt.config import Precision
from xception_trt.errors import BundleError, ConfigError
from xception_trt.precision.targeted import Target
from xception_trt.tuning import (
    Candidate,
    Measured,
    SearchConfig,
    batch_sweep,
    bundle_candidates,
    energy_windows,
    engine_precision,
    interval_size,
    median_interval,
    passes_floor,
    pick,
    thread_counts,
    tune,
    verdict,
)


def _rtx():
    """TensorRT-RTX, which builds the small bundle's engines: the tests that need it skip
    without it; the pure ones (statistics, tie rule, floor) run anyway."""
    return pytest.importorskip("tensorrt_rtx", reason="the bundle's engines are built with "
                                                      "TensorRT-RTX (pip install tensorrt-rtx)")

#: This CPU machine: no GPU, ONNX Runtime present.
CPU = DeviceFacts(ort_version="1.x", ort_providers=("CPUExecutionProvider",), onnx=True,
                  gpu_reason="no NVIDIA driver found")


def _rtx_machine(cc: str, **kw) -> DeviceFacts:
    return DeviceFacts(flavours=(FlavourFact("tensorrt_rtx", _rtx().__version__),),
                       gpus=(GpuFact(0, f"RTX sm{cc.replace('.', '')}", cc),), onnx=True,
                       ort_version="1.x", ort_providers=("CPUExecutionProvider",), **kw)


# ---------------------------------------------------------------------------------------------
# the statistics (pure)


def test_median_interval_uses_the_binomial_order_statistics():
    xs = [float(i) for i in range(10, 0, -1)]  # unsorted on purpose
    assert median_interval(xs[:5]) is None  # n=5: P(B<=0)=1/32 > 0.025, no 95 % interval
    assert median_interval(xs[:6]) == (5.0, 10.0)  # n=6: x(1)..x(6)
    # n=10: P(B<=1)=11/1024 <= 0.025 < P(B<=2)=56/1024, so x(2)..x(9)
    assert median_interval(xs) == (2.0, 9.0)
    # a lower confidence narrows it: at 80 %, P(B<=2)=0.0547 <= 0.1 < P(B<=3)=0.172: x(3)..x(8)
    assert median_interval(xs, 0.80) == (3.0, 8.0)


def _cfg(**kw):
    return SearchConfig(**{"warmup": 0, "block": 10, "min_repeats": 10, "max_repeats": 30,
                           **kw})


def test_verdict_cuts_only_what_cannot_beat_the_best():
    # whole numbers, so that the boundary is exact: 10 calls -> interval [x(2), x(9)]
    best = [float(x) for x in range(100, 110)]      # interval [101, 108]
    slower = [float(x) for x in range(110, 120)]    # interval [111, 118]: wholly above
    touching = [float(x) for x in range(108, 118)]  # interval [109, 116]: just above 108
    overlap = [float(x) for x in range(107, 117)]   # interval [108, 115]: meets 108, no cut
    cfg = _cfg()
    assert verdict(slower, best, config=cfg) == "cut"
    assert verdict(touching, best, config=cfg) == "cut"
    assert verdict(overlap, best, config=cfg) == "continue"
    assert verdict(slower[:9], best, config=cfg) == "continue"  # fewer than min_repeats
    assert verdict(slower, None, config=cfg) == "continue"  # the first is never cut
    assert verdict(best * 3, best, config=cfg) == "done"  # max_repeats reached
    # the deadline: cut when even the median's lower bound is above it
    assert verdict(best, None, config=cfg, deadline_ms=100.0) == "deadline"
    assert verdict(best, None, config=cfg, deadline_ms=101.0) == "continue"


def _measured(threads: int, costs, *, batch=1, status="measured") -> Measured:
    c = Candidate("onnxruntime", Precision.INT8, batch, "onnx/int8-ort.onnx", threads=threads)
    return Measured(c, calls_ms=list(costs), costs=list(costs), status=status)


def test_a_tie_within_noise_goes_to_the_simpler_candidate():
    fast = _measured(2, [float(x) for x in range(100, 110)])   # interval [101, 108]
    close = _measured(1, [float(x) for x in range(107, 117)])  # [108, 115]: touches, a tie
    winner, tied = pick([fast, close])
    assert winner is close and set(map(id, tied)) == {id(fast), id(close)}
    far = _measured(1, [float(x) for x in range(108, 118)])  # [109, 116]: clearly slower
    winner, tied = pick([fast, far])
    assert winner is fast and tied == []
    # a candidate cut early is not in the running
    winner, _ = pick([_measured(1, [50.0] * 10, status="cut early"), far])
    assert winner is far
    # the deadline bounds the p99
    spiky = _measured(2, [100.0] * 9 + [900.0])
    winner, _ = pick([spiky, far], deadline_ms=500.0)
    assert winner is far


def test_simplicity_order():
    def c(**kw):
        base = dict(runner="tensorrt", precision=Precision.FP16, batch=1, graph="g")
        return Candidate(**{**base, **kw})

    # fewer threads first, then the smaller batch
    order = [c(runner="onnxruntime", threads=1, batch=1),
             c(runner="onnxruntime", threads=1, batch=2),
             c(runner="onnxruntime", threads=2, batch=1)]
    assert sorted(order, key=Candidate.simplicity) == order
    gpu, graphs, dla = c(cuda_graphs=False), c(cuda_graphs=True), c(cuda_graphs=False,
                                                                    dla_core=0)
    assert sorted([dla, graphs, gpu], key=Candidate.simplicity) == [gpu, dla, graphs]
    fp32, int8 = c(precision=Precision.FP32), c(precision=Precision.INT8)
    assert sorted([int8, fp32], key=Candidate.simplicity) == [fp32, int8]


def test_accuracy_floor_boundary():
    drop = Target(top1_drop=0.5)
    assert passes_floor(drop, top1=0.900, ref_top1=0.905, agreement=0.0)  # exactly 0.5 pp
    assert not passes_floor(drop, top1=0.8999, ref_top1=0.905, agreement=1.0)  # 0.51 pp
    agree = Target(agreement=0.99)
    assert passes_floor(agree, top1=None, ref_top1=None, agreement=0.99)
    assert not passes_floor(agree, top1=1.0, ref_top1=0.0, agreement=0.9899)
    with pytest.raises(ConfigError, match="labelled"):
        passes_floor(drop, top1=None, ref_top1=None, agreement=1.0)


def test_energy_windows_give_an_interval():
    assert interval_size(0.95) == 6 and interval_size(0.5) == 2
    assert median_interval([1.0] * (interval_size(0.99) - 1), 0.99) is None
    # defaults: 50 calls in blocks of 10 would be 5 windows, too few for an interval
    assert energy_windows(SearchConfig()) == (6, 12)
    assert energy_windows(SearchConfig(block=10, min_repeats=10, max_repeats=200)) == (6, 20)
    assert energy_windows(SearchConfig(block=5, min_repeats=40, max_repeats=50)) == (8, 16)


def test_thread_counts_and_batch_sweep():
    assert thread_counts(1) == (1,)
    assert thread_counts(2) == (1, 2)
    assert thread_counts(6) == (1, 2, 4, 6)
    assert batch_sweep(1, 8, "latency") == (1,)
    assert batch_sweep(1, 8, "throughput") == (1, 2, 4, 8)
    assert batch_sweep(2, 6, "energy") == (2, 4, 6)


# ---------------------------------------------------------------------------------------------
# candidates of a real small bundle, on recorded machines


@pytest.fixture(scope="module")
def small_bundle(tiny_checkpoint, flat_image_folder, tmp_path_factory):
    from xception_trt.bundler import write_bundle

    _rtx()

    root = tmp_path_factory.mktemp("tune")
    result = write_bundle(source=tiny_checkpoint, output=root / "tiny.xtrt",
                          precisions=["fp32", "int8"], calibration=flat_image_folder,
                          cc=["sm86"], max_batch=4, local_engines=False,
                          work_dir=root / "work", threads=1)
    return result.path


def test_candidates_on_a_cpu_machine(small_bundle):
    with Bundle(small_bundle) as b:
        m = b.manifest
    cands, excluded = bundle_candidates(m, CPU, threads=(1, 2))
    assert {(c.runner, c.precision.value, c.graph, c.threads, c.batch) for c in cands} == {
        ("onnxruntime", "fp32", "onnx/fp32.onnx", 1, 1), ("onnxruntime", "fp32",
                                                          "onnx/fp32.onnx", 2, 1),
        ("onnxruntime", "int8", "onnx/int8-ort.onnx", 1, 1),
        ("onnxruntime", "int8", "onnx/int8-ort.onnx", 2, 1)}
    why = {e.what: e.why for e in excluded}
    # the engine choice's own words (doctor's): no TensorRT here, and the INT8 graph placed
    # for TensorRT
    assert why["tensorrt fp32: prebuilt " + next(
        e.member for e in m.engines if e.precision is Precision.FP32) + " (" + next(
        e.describe() for e in m.engines if e.precision is Precision.FP32) + ")"] == \
        "built with tensorrt_rtx, which is not installed here"
    assert "placed for it (onnx/int8-ort.onnx)" in why["onnxruntime int8 (onnx/int8.onnx)"]
    # an engine of another precision is not a candidate of this one, so it is not listed
    assert not any(w.startswith("precision ") for w in why.values())
    # nor ONNX Runtime as a way of the TensorRT choice (it has its own "onnxruntime" entries)
    assert not any(w.startswith("tensorrt ") and "ONNX Runtime" in w for w in why), why
    no_ort = DeviceFacts(gpu_reason="no NVIDIA driver found")
    cands, excluded = bundle_candidates(m, no_ort, threads=(1,))
    assert cands == [] and any(e.what == "onnxruntime fp32" and "not installed" in e.why
                               for e in excluded)


def test_candidates_on_recorded_gpu_machines(small_bundle):
    with Bundle(small_bundle) as b:
        m = b.manifest
    # an RTX sm86 machine: the prebuilt engines, CUDA graphs off and on, batches of the profile
    cands, _ = bundle_candidates(m, _rtx_machine("8.6"), objective="throughput", threads=(1,))
    trt = {(c.precision.value, c.batch, c.cuda_graphs) for c in cands if c.runner == "tensorrt"}
    assert trt == {(p, b, g) for p in ("fp32", "int8") for b in (1, 2, 4) for g in (False, True)}
    assert {c.graph for c in cands if c.runner == "tensorrt" and c.precision is Precision.INT8} \
        == {e.member for e in m.engines if e.precision is Precision.INT8}
    # max_batch caps the sweep
    cands, _ = bundle_candidates(m, _rtx_machine("8.6"), objective="throughput", threads=(1,),
                                 max_batch=2)
    assert max(c.batch for c in cands) == 2
    # sm89: the sm86 engines do not load (the reason said), an engine is built here instead
    cands, excluded = bundle_candidates(m, _rtx_machine("8.9"), threads=(1,))
    built = {c.graph for c in cands if c.runner == "tensorrt"}
    assert built and all(g.startswith("build: tensorrt_rtx") and "SM89" in g for g in built)
    assert not any("prebuilt" in e.what for e in excluded)  # a build was possible: not listed
    # a Jetson-like board with DLA cores, the bundle without a DLA engine: said, once
    jetson = DeviceFacts(flavours=(FlavourFact("tensorrt", "10.3.0"),),
                         gpus=(GpuFact(0, "Orin", "8.7", integrated=True),), dla_cores=2,
                         onnx=True, ort_version="1.x", ort_providers=("CPUExecutionProvider",))
    cands, excluded = bundle_candidates(m, jetson, threads=(1,))
    dla = [e for e in excluded if e.what.startswith("DLA cores")]
    assert len(dla) == 1 and dla[0].what == "DLA cores 0..1" and "--dla-core" in dla[0].why
    assert any(c.runner == "tensorrt" and c.graph.startswith("build: tensorrt")
               for c in cands)


def test_dla_engines_are_candidates_without_cuda_graphs(small_bundle):
    from xception_trt.bundle.format import EngineEntry

    with Bundle(small_bundle) as b:
        m = b.manifest
    int8 = next(e for e in m.engines if e.precision is Precision.INT8)
    dla_side = dataclasses.replace(int8.sidecar,
                                   build_options={**int8.sidecar.build_options, "dla_core": 1})
    dla = EngineEntry("engines/int8-dla1.engine", "engines/int8-dla1.engine.json", dla_side)
    with_dla = dataclasses.replace(m, engines=(*m.engines, dla))
    cands, excluded = bundle_candidates(with_dla, _rtx_machine("8.6", dla_cores=2),
                                        objective="throughput", threads=(1,))
    on_dla = [c for c in cands if c.dla_core is not None]
    assert on_dla == [Candidate("tensorrt", Precision.INT8, 4, dla.member, cuda_graphs=False,
                                dla_core=1)]
    assert any(e.what == "tensorrt int8 dla1 with CUDA graphs" for e in excluded)
    assert {c.cuda_graphs for c in cands if c.graph == int8.member} == {False, True}
    # a bundle with an engine for a DLA core gets no "no engine built for a DLA core" note
    assert not any(e.what.startswith("DLA cores") for e in excluded)
    _, excluded = bundle_candidates(m, _rtx_machine("8.6", dla_cores=2), threads=(1,))
    assert [e.why for e in excluded if e.what == "DLA cores 0..1"] == [
        "the bundle has no engine built for a DLA core (build one on the board with "
        "`xception-trt build --dla-core N --batch N`)"]
    # a machine with one DLA core has no core 1: the engine choice's reason
    _, excluded = bundle_candidates(with_dla, _rtx_machine("8.6", dla_cores=1), threads=(1,))
    assert any(dla.member in e.what and "1 DLA core(s)" in e.why for e in excluded)


# ---------------------------------------------------------------------------------------------
# the whole search


def _break_int8(src: Path, dst: Path) -> Path:
    """A copy of the bundle whose INT8 graph placed for ONNX Runtime has broken scales (every
    weight's dequantization scale times 40), re-hashed so that the bundle itself is valid."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    with zipfile.ZipFile(src) as zin:
        manifest = json.loads(zin.read(MANIFEST))
        member = manifest["variants"]["int8"]["onnxruntime_member"]
        model = onnx.load_from_string(zin.read(member))
        inits = {i.name: i for i in model.graph.initializer}
        hit = 0
        for node in model.graph.node:
            if node.op_type == "DequantizeLinear" and node.input[0] in inits \
                    and inits[node.input[0]].data_type in (onnx.TensorProto.INT8,
                                                           onnx.TensorProto.UINT8):
                scale = inits[node.input[1]]
                scale.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(scale) * np.float32(40.0), scale.name))
                hit += 1
        assert hit > 0
        broken = model.SerializeToString()
        manifest["members"][member] = {"sha256": hashlib.sha256(broken).hexdigest(),
                                       "bytes": len(broken)}
        with zipfile.ZipFile(dst, "w") as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                if info.filename == MANIFEST:
                    data = json.dumps(manifest).encode()
                elif info.filename == member:
                    data = broken
                zout.writestr(info, data)
    return dst


def test_tune_rejects_the_broken_int8_for_accuracy_and_reports(small_bundle, image_folder,
                                                               tmp_path):
    bad = _break_int8(small_bundle, tmp_path / "bad.xtrt")
    search = SearchConfig(warmup=1, block=6, min_repeats=6, max_repeats=12)
    result = tune(bad, image_folder, min_agreement=0.9, threads=(1,), search=search,
                  output=tmp_path / "report", record=False, cache_dir=tmp_path / "cache",
                  facts=CPU)
    doc = result.report
    rows = {r["name"]: r for r in doc["candidates"]}
    int8 = rows["onnxruntime int8 b1 t1"]
    assert int8["status"] == "below accuracy floor" and int8["repetitions"] == 0
    assert int8["agreement"] < 0.9 and "agreement >= 90%" in int8["reason"]
    fp32 = rows["onnxruntime fp32 b1 t1"]
    assert fp32["status"] == "measured" and 6 <= fp32["repetitions"] <= 12
    assert result.chosen is not None and result.chosen.precision is Precision.FP32
    assert doc["chosen"]["name"] == "onnxruntime fp32 b1 t1"
    files = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert files == ["pareto.png", "report.json", "report.md"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "**Chosen: onnxruntime fp32 b1 t1**" in md and "below accuracy floor" in md
    assert "The choice is not recorded" in md and doc["record"] is False
    assert doc["context"]["load_average"] is not None or doc["load_average_after"] is None
    # the good bundle keeps its INT8 in the running
    good = tune(small_bundle, image_folder, min_agreement=0.5, threads=(1,), search=search,
                record=False, cache_dir=tmp_path / "cache", facts=CPU)
    status = {r["name"]: r["status"] for r in good.report["candidates"]}
    assert status["onnxruntime int8 b1 t1"] != "below accuracy floor"


def test_engine_precision_refuses_a_silent_fallback(small_bundle):
    # the engines TensorRT-RTX built for the bundle, their layer records in the sidecar
    with Bundle(small_bundle) as b:
        engines = {e.precision: e for e in b.manifest.engines}

    class Engine:  # what engine_precision reads of a TensorRT runner: its sidecar
        def __init__(self, sidecar):
            self.sidecar = sidecar

    int8 = engines[Precision.INT8]
    cand = Candidate("tensorrt", Precision.INT8, 1, int8.member, cuda_graphs=False)
    refusal, note = engine_precision(Engine(int8.sidecar), cand)
    assert refusal is None and note.startswith("all ") and "int8" in note
    # an FP32 engine passed off as the INT8 one: its compute layers run in fp32
    fallback = dataclasses.replace(engines[Precision.FP32].sidecar, precision=Precision.INT8)
    refusal, note = engine_precision(Engine(fallback), cand)
    assert refusal is not None and "silent fallback" in refusal and "runs in fp32" in refusal
    ort = Candidate("onnxruntime", Precision.INT8, 1, "onnx/int8-ort.onnx", threads=1)
    assert engine_precision(Engine(fallback), ort) == (None, None)


def test_the_choice_is_recorded_for_the_bundle(small_bundle, image_folder, tmp_path):
    from xception_trt.bundle.tuned import recorded_choice

    search = SearchConfig(warmup=1, block=6, min_repeats=6, max_repeats=12)
    result = tune(small_bundle, image_folder, min_agreement=0.5, threads=(1,), search=search,
                  cache_dir=tmp_path / "cache", facts=CPU, output=tmp_path / "r")
    choice, notice = recorded_choice(small_bundle, cache_dir=tmp_path / "cache", facts=CPU)
    assert notice is None and choice is not None and result.recorded is not None
    c = result.chosen
    assert (choice.runner, choice.precision, choice.batch, choice.threads) == (
        c.runner, c.precision, c.batch, c.threads)
    assert choice.measured["median_ms"] == pytest.approx(result.report["chosen"]["median_ms"])
    assert choice.provider == "CPUExecutionProvider"  # the provider it ran on
    assert choice.report == str((tmp_path / "r" / "report.json").resolve())
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["record"] is True and doc["recorded"] == str(result.recorded)
    # a record that cannot be written: an error, and no report that says "recorded"
    (tmp_path / "cache2").mkdir()
    (tmp_path / "cache2" / "tuned").write_text("")  # a file where the records' folder goes
    with pytest.raises(BundleError, match="cannot create"):
        tune(small_bundle, image_folder, min_agreement=0.5, threads=(1,), search=search,
             cache_dir=tmp_path / "cache2", facts=CPU, output=tmp_path / "r2")
    assert not (tmp_path / "r2").exists()
    # nothing recorded for another cache, nor with record=False
    tune(small_bundle, image_folder, min_agreement=0.5, threads=(1,), search=search,
         cache_dir=tmp_path / "other", facts=CPU, record=False)
    assert recorded_choice(small_bundle, cache_dir=tmp_path / "other", facts=CPU) == (None, None)


def test_tensorrt_candidates_go_through_the_search(small_bundle, image_folder, tmp_path,
                                                   monkeypatch):
    """On a recorded RTX sm86 machine the bundle's prebuilt engines are candidates (CUDA graphs
    off and on); the engines are stood in for by their precision's ONNX on ONNX Runtime carrying
    the engine's sidecar (no GPU here), the INT8 one with an FP32 engine's layers: the check
    refuses it before timing, and the FP32 engine is timed both ways."""
    import xception_trt.tuning as tuning

    with Bundle(small_bundle) as b:
        m = b.manifest
        sidecars = {e.member: e.sidecar for e in m.engines}
    fp32_layers = next(e.sidecar for e in m.engines if e.precision is Precision.FP32)
    real_open = tuning._open
    opened, evaluated, evaluated_ort = [], [], []

    def engine_double(c, model, facts, *, cache_dir, device, threads=None, cuda_graphs=None):
        if c.runner != "tensorrt":
            if cuda_graphs is False:  # the accuracy pass's open
                evaluated_ort.append(threads)
            return real_open(c, model, facts, cache_dir=cache_dir, device=device,
                             threads=threads, cuda_graphs=cuda_graphs)
        opened.append((c.graph, cuda_graphs if cuda_graphs is not None else c.cuda_graphs))
        if cuda_graphs is False:  # the accuracy pass's open
            evaluated.append(threads)
        graph = m.variant(c.precision).for_onnxruntime().member
        runner = real_open(Candidate("onnxruntime", c.precision, c.batch, graph, threads=1),
                           model, facts, cache_dir=cache_dir, device=device)
        side = sidecars[c.graph]
        runner.sidecar = (dataclasses.replace(fp32_layers, precision=Precision.INT8)
                          if c.precision is Precision.INT8 else side)
        return runner

    monkeypatch.setattr(tuning, "_open", engine_double)
    search = SearchConfig(warmup=1, block=6, min_repeats=6, max_repeats=12)
    result = tune(small_bundle, image_folder, min_agreement=0.5, threads=(1,), search=search,
                  record=False, cache_dir=tmp_path / "cache", facts=_rtx_machine("8.6"))
    rows = {r["name"]: r for r in result.report["candidates"]}
    fp32_engine = next(e.member for e in m.engines if e.precision is Precision.FP32)
    int8_engine = next(e.member for e in m.engines if e.precision is Precision.INT8)
    i8, f32 = f"({Path(int8_engine).name})", f"({Path(fp32_engine).name})"
    assert rows[f"tensorrt int8 b1 {i8}"]["status"] == "below accuracy floor"
    assert "silent fallback" in rows[f"tensorrt int8 b1 {i8}"]["reason"]
    assert rows[f"tensorrt int8 b1 graphs {i8}"]["repetitions"] == 0
    for name in (f"tensorrt fp32 b1 {f32}", f"tensorrt fp32 b1 graphs {f32}"):
        assert rows[name]["status"] in ("measured", "cut early") and rows[name]["repetitions"]
    assert (fp32_engine, True) in opened and (fp32_engine, False) in opened
    # the accuracy pass: an engine takes no thread count, ONNX Runtime every core
    assert evaluated and set(evaluated) == {None}
    assert evaluated_ort and set(evaluated_ort) == {max(thread_counts())}
    graphs = {g["graph"]: g for g in result.report["graphs"]}
    assert graphs[fp32_engine]["precision_check"].startswith("all ")
    assert not any("prebuilt" in e["what"] for e in result.report["not_runnable"])


def _model_folder(small_bundle, tmp_path) -> Path:
    """The bundle's FP32 and INT8 (ONNX Runtime) graphs and its FP32 engine with its sidecar
    as loose files, and a file that is no model."""
    import shutil

    from xception_trt.bundle.cache import bundle_graph, prebuilt_engine
    from xception_trt.sidecar import sidecar_path

    folder = tmp_path / "models"
    folder.mkdir()
    for member in ("onnx/fp32.onnx", "onnx/int8-ort.onnx"):
        shutil.copy(bundle_graph(small_bundle, member, cache_dir=tmp_path / "cache"),
                    folder / Path(member).name)
    with Bundle(small_bundle) as b:
        engine = next(e.member for e in b.manifest.engines if e.precision is Precision.FP32)
    copied = prebuilt_engine(small_bundle, engine, cache_dir=tmp_path / "cache")
    shutil.copy(copied, folder / "fp32.engine")
    shutil.copy(sidecar_path(copied), sidecar_path(folder / "fp32.engine"))
    (folder / "notes.txt").write_text("not a model")
    return folder


def test_a_folder_of_model_files(small_bundle, image_folder, tmp_path):
    folder = _model_folder(small_bundle, tmp_path)
    search = SearchConfig(warmup=1, block=6, min_repeats=6, max_repeats=6)
    result = tune(folder, image_folder, min_agreement=0.5, threads=(1,), search=search,
                  facts=CPU, output=tmp_path / "r")
    doc = result.report
    assert doc["model"]["kind"] == "folder" and doc["reference"] == str(folder / "fp32.onnx")
    assert {r["path"] for r in doc["candidates"]} == {str(folder / "fp32.onnx"),
                                                      str(folder / "int8-ort.onnx")}
    assert doc["not_runnable"] == [{"what": "tensorrt fp32.engine", "why": "built with "
                                    "tensorrt_rtx, which is not installed here"}]
    assert result.chosen is not None and result.recorded is None  # a folder records nothing


def test_folder_candidates_of_engines_and_without_onnxruntime(small_bundle, tmp_path):
    """An engine that loads here is a candidate at the batches its sidecar records (its
    profile, else its max_batch, else 1 only), with its file's path; without ONNX Runtime each
    graph is listed as not runnable with the install command."""
    from xception_trt.sidecar import sidecar_path
    from xception_trt.tuning import folder_candidates

    folder = _model_folder(small_bundle, tmp_path)
    engine = folder / "fp32.engine"
    side = json.loads(sidecar_path(engine).read_text())
    bare = folder / "bare.engine"  # a sidecar that records no profile and no max_batch
    bare.write_bytes(engine.read_bytes())
    side.update(profile=None, max_batch=None)
    sidecar_path(bare).write_text(json.dumps(side))
    cands, excluded = folder_candidates(folder, _rtx_machine("8.6"), threads=(1,))
    trt = {(c.graph, c.batch, c.cuda_graphs, c.path) for c in cands if c.runner == "tensorrt"}
    assert trt == {(str(engine), 1, False, str(engine)), (str(engine), 1, True, str(engine)),
                   (str(bare), 1, False, str(bare)), (str(bare), 1, True, str(bare))}
    assert {c.name for c in cands if c.runner == "tensorrt"} >= {
        "tensorrt fp32 b1 (fp32.engine)", "tensorrt fp32 b1 graphs (bare.engine)"}
    no_ort = dataclasses.replace(_rtx_machine("8.6"), ort_version=None, ort_providers=())
    cands, excluded = folder_candidates(folder, no_ort, threads=(1,))
    assert {c.runner for c in cands} == {"tensorrt"}
    assert [e.to_dict() for e in excluded] == [
        {"what": f"onnxruntime {name}", "why": "not installed (pip install 'xception-trt[ort]')"}
        for name in ("fp32.onnx", "int8-ort.onnx")]


def test_cli_tune_writes_the_report_and_records(small_bundle, image_folder, tmp_path, capsys,
                                                monkeypatch):
    from xception_trt.bundle.tuned import recorded_choice

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    code, out, err = _cli(["tune", str(small_bundle), "--val", str(image_folder),
                           "--min-agreement", "0.5", "--threads", "1", "--iterations", "6",
                           "--warmup", "1", "--no-progress"], capsys)
    assert code == 0, err
    (folder,) = tmp_path.glob("tune-*")  # the default report folder, in the working directory
    assert sorted(p.name for p in folder.iterdir()) == ["pareto.png", "report.json",
                                                        "report.md"]
    doc = json.loads((folder / "report.json").read_text())
    assert f"chosen: {doc['chosen']['name']}: median " in out
    assert "recorded for tiny.xtrt" in out
    choice, _ = recorded_choice(small_bundle, cache_dir=tmp_path / "xdg" / "xception-trt" /
                                "bundles")
    assert choice is not None and choice.report == str(folder.resolve() / "report.json")
    assert doc["record"] is True and "The choice is recorded for this bundle" in (
        folder / "report.md").read_text()


class ConstantPower:
    """A power source as the Jetson INA3221 rails behave for ``PowerWindow`` (one total rail
    read in mW, no energy counter: energy is mean power x duration), at a constant 5 W."""

    name, rails, total_rail, notes = "constant-5w", ("VDD_IN",), "VDD_IN", ()

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def read_mw(self):
        return [5000.0]

    def energy_mj(self):
        return None

    def errors(self):
        return []

    def close(self):
        return None


def test_energy_objective_with_a_power_source(small_bundle, image_folder, tmp_path):
    from xception_trt.power import PowerMonitor

    search = SearchConfig(warmup=1, block=6, min_repeats=6, max_repeats=12)
    monitor = PowerMonitor(ConstantPower("module"), period_s=0.005)
    result = tune(small_bundle, image_folder, objective="energy", min_agreement=0.5,
                  threads=(1,), search=search, monitor=monitor, record=False,
                  cache_dir=tmp_path / "cache", facts=CPU, max_batch=2)
    doc = result.report
    assert doc["cost"] == "mJ per image" and doc["power"]["backend"] == "constant-5w"
    ch = doc["chosen"]
    assert ch["energy_per_image_mj"] > 0 and ch["batch"] in (1, 2)
    # one cost sample per power window, each at least 10 sampling periods (50 ms here) long,
    # and enough windows for the median's interval: the cut and the tie can decide
    timed = [r for r in doc["candidates"] if r["repetitions"]]
    assert {r["batch"] for r in doc["candidates"]} == {1, 2} and timed
    low, high = energy_windows(search)
    assert (low, high) == (6, 12)
    for r in timed:
        if r["status"] == "measured":
            assert r["cost_interval"] is not None
            assert r["repetitions"] * r["mean_ms"] >= low * 50.0 * 0.95
    # NVML measures the GPU only: a CPU runner's energy is not its energy, so no candidate
    gpu_only = PowerMonitor(ConstantPower("gpu"), period_s=0.005)
    with pytest.raises(ConfigError, match="measures the GPU only"):
        tune(small_bundle, image_folder, objective="energy", min_agreement=0.5, threads=(1,),
             search=search, monitor=gpu_only, record=False, cache_dir=tmp_path / "cache",
             facts=CPU)


def test_cli_nothing_meets_the_deadline_exit_1(small_bundle, image_folder, tmp_path, capsys):
    code, out, _ = _cli(["tune", str(small_bundle), "--val", str(image_folder),
                         "--min-agreement", "0.5", "--threads", "1", "--iterations", "6",
                         "--warmup", "0", "--deadline-ms", "0.000001", "--no-record",
                         "--no-progress", "-o", str(tmp_path / "r")], capsys)
    assert code == 1 and "no candidate met the accuracy floor and the deadline" in out
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["chosen"] is None and doc["deadline_ms"] == 0.000001
    assert {r["status"] for r in doc["candidates"]} == {"misses deadline"}
    assert all(r["repetitions"] == 6 and "surely above" in r["reason"]
               for r in doc["candidates"])


def test_an_engine_built_here_that_cannot_open_is_said_and_not_timed(small_bundle,
                                                                      image_folder, tmp_path):
    """A recorded RTX sm89 machine: the bundle's sm86 engines do not load, so TensorRT-RTX
    (installed here) really builds sm89 engines into the engine cache; this CPU cannot open
    them, which the report says per graph while the ONNX Runtime candidates are tuned."""
    search = SearchConfig(warmup=1, block=6, min_repeats=6, max_repeats=6)
    result = tune(small_bundle, image_folder, min_agreement=0.5, threads=(1,), search=search,
                  record=False, cache_dir=tmp_path / "cache", facts=_rtx_machine("8.9"),
                  output=tmp_path / "r")
    built = [g for g in result.report["graphs"] if g["graph"].startswith("build: ")]
    assert len(built) == 2 and all("SM89" in g["graph"] for g in built)
    assert all(not g["passes"] and g["why"].startswith("could not be opened: ") for g in built)
    assert list((tmp_path / "cache" / "engines").glob("tensorrt-rtx-*-sm89-*/model.engine"))
    rows = [r for r in result.report["candidates"] if r["runner"] == "tensorrt"]
    assert rows and all(r["repetitions"] == 0 for r in rows)
    assert result.chosen is not None and result.chosen.runner == "onnxruntime"
    assert "could not be opened" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.parametrize("kw, message", [
    ({"objective": "speed"}, "objective must be one of latency, throughput, energy"),
    ({"deadline_ms": 0}, "deadline must be a positive number"),
    ({"deadline_ms": float("nan")}, "deadline must be a positive number"),
    ({"max_batch": 0}, "max_batch must be an integer >= 1"),
    ({"threads": (0,)}, "thread counts must be integers >= 1"),
    ({"limit": 0}, "limit must be an integer >= 1"),
    ({"max_top1_drop": 0.5, "min_agreement": 0.99}, "give one target"),
    ({"min_agreement": 1.5}, "target agreement must be a fraction"),
])
def test_python_api_refuses_bad_arguments_before_any_work(kw, message, tmp_path):
    # nothing is read: the model and images do not even exist
    with pytest.raises(ConfigError, match=message):
        tune(tmp_path / "missing.xtrt", tmp_path / "none", **kw)


def _cli(argv, capsys):
    from xception_trt.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_bad_inputs_are_one_line_errors(small_bundle, image_folder, flat_image_folder,
                                            tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([str(onnx), "--val", str(image_folder)], "neither a bundle"),
        ([str(small_bundle), "--val", str(flat_image_folder)], "has no labels"),
        ([str(small_bundle), "--val", str(image_folder), "--objective", "energy"],
         "needs a power source"),
        ([str(empty), "--val", str(image_folder)], "holds no model files"),
        ([str(tmp_path), "--val", str(image_folder)], "not a valid ONNX file"),
    ]
    for argv, message in cases:
        code, _, err = _cli(["tune", *argv, "-o", str(tmp_path / "r")], capsys)
        lines = [x for x in err.splitlines() if x.strip()]
        assert code == 2 and lines[-1].startswith("error: ") and message in lines[-1], err
        assert not (tmp_path / "r").exists()
    (tmp_path / "exists").mkdir()
    code, _, err = _cli(["tune", str(small_bundle), "--val", str(image_folder), "-o",
                         str(tmp_path / "exists")], capsys)
    assert code == 2 and "already exists" in err and "--force" in err
    for flag, value in (("--deadline-ms", "0"), ("--max-top1-drop", "100"),
                        ("--min-agreement", "1.5")):
        with pytest.raises(SystemExit) as exc:
            _cli(["tune", str(small_bundle), "--val", str(image_folder), flag, value], capsys)
        assert exc.value.code == 2


def test_a_fast_candidate_that_misses_the_deadline_cuts_nothing(small_bundle, image_folder,
                                                                tmp_path, monkeypatch):
    """A: median 8 ms, p99 20 ms; the rest steady at 12 ms; deadline 15 ms. A is timed first
    (int8, 2 threads) but may not win, so it must not be the best the others are cut against:
    a steady one wins instead of nothing."""
    import xception_trt.tuning as tuning

    seen = []

    def fake_time(c, runner, best, *, objective, search, deadline_ms, monitor, progress):
        seen.append((c.name, best.candidate.name if best is not None else None))
        calls = ([8.0] * 9 + [20.0]) * 3 if (c.precision is Precision.INT8 and c.threads == 2) \
            else [12.0] * 30
        m = Measured(c, calls_ms=calls, costs=list(calls))
        if verdict(m.costs, best.costs if best else None, config=search) == "cut":
            m.status = "cut early"
        return m

    monkeypatch.setattr(tuning, "_time_candidate", fake_time)
    result = tune(small_bundle, image_folder, min_agreement=0.5, threads=(1, 2),
                  search=_cfg(), deadline_ms=15.0, record=False, facts=CPU,
                  cache_dir=tmp_path / "cache")
    assert seen[0] == ("onnxruntime int8 b1 t2", None)
    assert all(best != "onnxruntime int8 b1 t2" for _, best in seen)
    assert result.chosen is not None and result.chosen.name != "onnxruntime int8 b1 t2"
    spiky = next(r for r in result.report["candidates"] if r["name"] == "onnxruntime int8 b1 t2")
    assert spiky["status"] == "misses deadline" and spiky["p99_ms"] > 15.0
    assert spiky["reason"] == f"p99 {spiky['p99_ms']:.3f} ms is above the deadline 15 ms"


def test_a_tensorrt_choice_records_and_opens_its_engine(small_bundle, tmp_path, monkeypatch):
    """The winner's prebuilt engine (member and SHA-256) is recorded, and opening the bundle
    resolves exactly that engine; an engine the bundle lacks is no choice (nothing built); the
    candidate names tell two engines of one precision apart."""
    import xception_trt.tuning as tuning
    from xception_trt.bundle.cache import resolve
    from xception_trt.bundle.choice import ChoiceKind, Request, choose
    from xception_trt.bundle.tuned import recorded_choice, tuned_options

    facts = _rtx_machine("8.6")
    with Bundle(small_bundle) as b:
        m = b.manifest
    engine = next(e.member for e in m.engines if e.precision is Precision.FP32)
    c = Candidate("tensorrt", Precision.FP32, 1, engine, cuda_graphs=True)
    winner = Measured(c, calls_ms=[1.0] * 10, costs=[1.0] * 10)
    tuning._record(small_bundle, winner, {"top1_drop_pp": 0.0, "agreement": 1.0}, "latency",
                   None, cache_dir=tmp_path / "cache", facts=facts)
    choice, notice = recorded_choice(small_bundle, cache_dir=tmp_path / "cache", facts=facts)
    assert notice is None and choice.engine == engine
    assert choice.engine_sha256 == m.members[engine].sha256
    _, fill, _ = tuned_options(small_bundle, {}, cache_dir=tmp_path / "cache", facts=facts)
    assert fill["engine"] == engine and fill["cuda_graphs"] is True
    res = resolve(small_bundle, precision=fill["precision"], engine=fill["engine"],
                  cache_dir=tmp_path / "cache", facts=facts)
    assert res.choice.kind is ChoiceKind.PREBUILT and res.choice.engine.member == engine
    # an engine the bundle lacks: not built, not another engine
    none = choose(m, facts, Request(Precision.FP32, engine="engines/other.engine",
                                    onnxruntime=False))
    assert none.kind is ChoiceKind.NONE
    assert any(r.why == "the bundle has no such engine" for r in none.rejected)
    # two engines of one precision have two names
    other = dataclasses.replace(c, graph="engines/fp32-dla0.engine")
    assert c.name != other.name and c.name.endswith(f"({Path(engine).name})")
    assert Candidate("tensorrt", Precision.FP32, 1, "build: x").name.endswith("(built here)")


def test_engine_candidates_take_the_batches_of_the_engine_profile(small_bundle, tmp_path):
    """Batch sizes come from each engine's own profile: a GPU engine whose profile starts at 2
    has no batch-1 candidate (latency tries its smallest, 2); a DLA engine built for a fixed
    batch of 2 is tried at 2 (not the bundle's 1 or its max_batch 4); --max-batch below an
    engine's smallest leaves it out with the reason. A folder's engine likewise."""
    from xception_trt.bundle.format import EngineEntry
    from xception_trt.sidecar import Profile

    with Bundle(small_bundle) as b:
        m = b.manifest
    fp32 = next(e for e in m.engines if e.precision is Precision.FP32)
    int8 = next(e for e in m.engines if e.precision is Precision.INT8)

    def shaped(side, lo, hi):
        return dataclasses.replace(side, profile=Profile((lo, 3, 71, 71), (hi, 3, 71, 71),
                                                         (hi, 3, 71, 71)))

    gpu2 = EngineEntry(fp32.member, fp32.sidecar_member, shaped(fp32.sidecar, 2, 4))
    dla_side = dataclasses.replace(shaped(int8.sidecar, 2, 2),
                                   build_options={**int8.sidecar.build_options, "dla_core": 0})
    dla = EngineEntry("engines/int8-dla0.engine", "engines/int8-dla0.engine.json", dla_side)
    shaped_m = dataclasses.replace(m, engines=(gpu2, int8, dla))
    facts = _rtx_machine("8.6", dla_cores=1)
    cands, _ = bundle_candidates(shaped_m, facts, objective="latency", threads=(1,))
    trt = {(c.graph, c.batch) for c in cands if c.runner == "tensorrt"}
    assert trt == {(fp32.member, 2), (int8.member, 1), (dla.member, 2)}
    cands, _ = bundle_candidates(shaped_m, facts, objective="throughput", threads=(1,))
    assert {c.batch for c in cands if c.graph == fp32.member} == {2, 4}
    assert {c.batch for c in cands if c.graph == dla.member} == {2}
    cands, excluded = bundle_candidates(shaped_m, facts, objective="throughput", threads=(1,),
                                        max_batch=1)
    assert not any(c.graph in (fp32.member, dla.member) for c in cands)
    assert any("its smallest batch (2) is above --max-batch (1)" in e.why for e in excluded)


def test_a_dla_engine_alone_still_leaves_the_gpu_build(small_bundle):
    """Where the only engine that fits is a DLA engine, the GPU is tried too, through the
    engine opening the bundle would build (the GPU engines are for another GPU here)."""
    from xception_trt.bundle.format import EngineEntry

    with Bundle(small_bundle) as b:
        m = b.manifest
    int8 = next(e for e in m.engines if e.precision is Precision.INT8)
    # an sm89 board: the sm86 GPU engines do not load; a DLA engine built for sm89 does
    dla_side = dataclasses.replace(
        int8.sidecar, build_options={**int8.sidecar.build_options, "dla_core": 0},
        targets=("SM89",))
    dla = EngineEntry("engines/int8-dla0.engine", "engines/int8-dla0.engine.json", dla_side)
    with_dla = dataclasses.replace(m, engines=(*m.engines, dla))
    facts = _rtx_machine("8.9", dla_cores=1)
    cands, _ = bundle_candidates(with_dla, facts, threads=(1,))
    int8_trt = [c for c in cands if c.runner == "tensorrt" and c.precision is Precision.INT8]
    assert any(c.dla_core == 0 for c in int8_trt), int8_trt
    assert any(c.graph.startswith("build: ") and c.dla_core is None for c in int8_trt)


def test_one_candidate_set_per_onnxruntime_provider(small_bundle, tmp_path, monkeypatch):
    """With ONNX Runtime's CUDA provider and a GPU, each ONNX Runtime graph is also a CUDA
    candidate (no thread sweep: threads are a CPU setting); the CPU candidates are opened on
    the CPU provider exactly (ONNX Runtime's default would put CUDA first); CUDA without a
    GPU, and providers tune does not try, are said."""
    import xception_trt.runners as runners_mod
    import xception_trt.tuning as tuning

    with Bundle(small_bundle) as b:
        m = b.manifest
    gpu = DeviceFacts(gpus=(GpuFact(0, "RTX", "8.6"),), onnx=True, ort_version="1.x",
                      ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider",
                                     "AzureExecutionProvider"))
    cands, excluded = bundle_candidates(m, gpu, threads=(1, 2))
    ort = {(c.precision.value, c.threads, c.provider) for c in cands
           if c.runner == "onnxruntime"}
    assert ort == {(p, t, None) for p in ("fp32", "int8") for t in (1, 2)} | {
        (p, None, "CUDAExecutionProvider") for p in ("fp32", "int8")}
    assert "onnxruntime int8 b1 cuda" in {c.name for c in cands}
    assert any(e.what == "onnxruntime on AzureExecutionProvider" for e in excluded)
    no_gpu = dataclasses.replace(gpu, gpus=())
    cands, excluded = bundle_candidates(m, no_gpu, threads=(1,))
    assert not any(c.provider for c in cands)
    assert any(e.what == "onnxruntime on CUDAExecutionProvider" and e.why == "no GPU here"
               for e in excluded)
    # a CPU candidate opens on the CPU provider, whatever ONNX Runtime would put first
    seen = []
    real = runners_mod.open_runner

    def spy(path, **kw):
        seen.append(kw)
        return real(path, **kw)

    monkeypatch.setattr(runners_mod, "open_runner", spy)
    c = Candidate("onnxruntime", Precision.FP32, 1, "onnx/fp32.onnx", threads=1)
    tuning._open(c, small_bundle, CPU, cache_dir=tmp_path / "cache", device=0).close()
    assert seen == [{"providers": ["CPUExecutionProvider"], "threads": 1}]


def test_report_text_of_an_interval_and_of_json_values():
    """The report prints an interval as [low, high] (4 significant digits) and writes enums by
    value and paths as text."""
    from xception_trt.tuning import _iv, _json_default

    assert _iv((0.4201644, 0.4463581)) == "[0.4202, 0.4464]"
    assert _iv(None) == "(too few calls)"
    assert _json_default(Precision.INT8) == "int8"
    assert _json_default(Path("/a/b")) == "/a/b"


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two():
    """pick() ranks by the median cost: for an even count the mean of the two middle values."""
    assert _measured(1, [1.0, 2.0, 3.0, 10.0, 11.0, 40.0]).cost == 6.5
    assert _measured(1, [3.0, 1.0, 2.0]).cost == 2.0


# ---------------------------------------------------------------------------------------------
# timing one candidate, with the measurement stood in for (pure)


def _fake_latency(monkeypatch, call_ms: float, reading=None):
    """measure_latency as the search calls it: each call takes ``call_ms``, and the power
    window reports ``reading``."""
    import types

    import xception_trt.tuning as tuning

    def fake(runner, batch, *, iterations, warmup, samples, power=None, progress=None):
        warmups.append(warmup)
        samples.extend([call_ms] * iterations)
        return types.SimpleNamespace(error=None, skipped=None, power=reading)

    warmups: list[int] = []
    monkeypatch.setattr(tuning, "measure_latency", fake)
    return warmups


def test_the_deadline_bounds_the_call_not_the_image(monkeypatch):
    """Throughput costs are per image (20 ms per call of 4 images: 5 ms); the deadline is per
    call, so a 10 ms deadline is missed."""
    from xception_trt.tuning import _time_candidate

    _fake_latency(monkeypatch, 20.0)
    c = Candidate("onnxruntime", Precision.FP32, 4, "onnx/fp32.onnx", threads=1)
    m = _time_candidate(c, None, None, objective="throughput", search=_cfg(), deadline_ms=10.0,
                        monitor=None, progress=None)
    assert m.costs == [5.0] * 10
    assert (m.status, m.reason) == ("misses deadline", "after 10 calls its median latency is "
                                                       "surely above 10 ms")
    warmups = _fake_latency(monkeypatch, 20.0)
    m = _time_candidate(c, None, None, objective="throughput", search=_cfg(warmup=3),
                        deadline_ms=25.0, monitor=None, progress=None)
    assert m.status == "measured" and len(m.calls_ms) == 30
    assert warmups == [3, 0, 0]  # warm-up calls before the first block only


def test_a_latency_tune_keeps_the_energy_a_power_source_measures(monkeypatch):
    from xception_trt.tuning import _time_candidate

    c = Candidate("onnxruntime", Precision.FP32, 2, "onnx/fp32.onnx", threads=1)
    _fake_latency(monkeypatch, 4.0, reading={"energy_per_image_mj": 3.0, "images": 20})
    m = _time_candidate(c, None, None, objective="latency", search=_cfg(), deadline_ms=None,
                        monitor=object(), progress=None)
    assert m.energy_mj == pytest.approx(3.0) and m.power_note is None
    _fake_latency(monkeypatch, 4.0, reading={"reason": "no power rail readable"})
    m = _time_candidate(c, None, None, objective="latency", search=_cfg(), deadline_ms=None,
                        monitor=object(), progress=None)
    assert m.energy_mj is None and m.power_note == "no power rail readable"


# ---------------------------------------------------------------------------------------------
# the report's Markdown and figure (pure, from a report document)


def _row(name, runner, cost, drop, agreement, status="measured", chosen=False):
    return {"name": name, "runner": runner, "status": status, "reason": None,
            "repetitions": 10, "median_ms": cost, "p99_ms": cost, "images_per_s": 1000 / cost,
            "energy_per_image_mj": None, "cost": cost, "cost_interval": [cost, cost],
            "top1_drop_pp": drop, "agreement": agreement, "tie": False, "chosen": chosen}


def _report_doc(gpus=()):
    rows = [_row("onnxruntime int8 b1 t1", "onnxruntime", 2.0, 1.5, 0.97),
            _row("onnxruntime fp32 b1 t1", "onnxruntime", 4.0, 0.0, 1.0, chosen=True),
            _row("onnxruntime fp16 b1 t1", "onnxruntime", 3.0, 0.5, 0.99)]
    return {
        "model": {"path": "/m/tiny.xtrt"}, "objective": "latency",
        "cost": "median ms per call", "chosen": rows[1], "ties": [],
        "floor": {"top1_drop_pp": 1.0, "agreement": None, "describe": "top-1 drop <= 1 pp"},
        "reference": "onnx/fp32.onnx", "deadline_ms": None,
        "dataset": {"images": 8, "source": "/val"},
        "machine": {"host": None, "gpus": [{"name": n} for n in gpus]},
        "system": {"platform": "Linux-test", "cpu": "Test CPU 9000"},
        "context": {"load_average": [0.5, 0.4, 0.3]}, "load_average_after": [0.6, 0.4, 0.3],
        "power": {"backend": None, "reason": "no source"},
        "search": {"warmup": 1, "block": 10, "min_repeats": 10, "max_repeats": 30,
                   "rule": "the rule"},
        "seconds": 1.5, "record": False, "candidates": rows,
        "graphs": [{"graph": "onnx/fp32.onnx", "runner": "onnxruntime", "precision": "fp32",
                    "top1": 0.5, "top1_drop_pp": 0.0, "agreement": 1.0,
                    "precision_check": None, "passes": True, "why": None},
                   {"graph": "onnx/int8-ort.onnx", "runner": "onnxruntime",
                    "precision": "int8", "top1": 0.25, "top1_drop_pp": 25.0,
                    "agreement": 0.875, "precision_check": None, "passes": False,
                    "why": "below the floor (a | b)"}],
        "not_runnable": [], "command": None}


def test_the_markdown_names_the_machine_and_each_graphs_verdict():
    from xception_trt.tuning import render_markdown

    md = render_markdown(_report_doc())
    assert "- Machine: Linux-test; CPU Test CPU 9000; GPUs: none\n" in md
    assert ("| `onnx/fp32.onnx` | onnxruntime | fp32 | 50.00 | 0.00 | 100.00 | — | passes |"
            in md)
    assert ("| `onnx/int8-ort.onnx` | onnxruntime | int8 | 25.00 | 25.00 | 87.50 | — | "
            "below the floor (a / b) |" in md)
    assert "- Validation: 8 images from `/val`\n" in md
    assert "- Power: none (no source)\n" in md
    md = render_markdown(_report_doc(gpus=("RTX A", "RTX B")))
    assert "; CPU Test CPU 9000; GPUs: RTX A, RTX B\n" in md


def test_the_pareto_front_is_drawn_against_the_accuracy_loss():
    pytest.importorskip("matplotlib")
    from xception_trt.tuning import pareto_figure

    fig = pareto_figure(_report_doc())
    (front,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "Pareto front"]
    # x: top-1 drop (pp), y: cost; every point here is on the front
    assert list(front.get_xdata()) == [0.0, 0.5, 1.5]
    assert list(front.get_ydata()) == [4.0, 3.0, 2.0]


def test_a_report_without_plotting_says_so(tmp_path, monkeypatch, caplog):
    import logging

    import xception_trt.tuning as tuning
    from xception_trt.errors import DependencyError

    missing = DependencyError("matplotlib", "plot", "report plots")

    def no_plot(doc):
        raise missing

    monkeypatch.setattr(tuning, "pareto_figure", no_plot)
    with caplog.at_level(logging.WARNING, logger="xception_trt.tuning"):
        out = tuning.write_tune_report(_report_doc(), tmp_path / "r")
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    assert [r.getMessage() for r in caplog.records if r.name == "xception_trt.tuning"] == [
        f"{missing}; the report has no plot"]
    assert f"(no plot: {missing})" in (out / "report.md").read_text()


def test_a_candidate_that_failed_before_any_call_has_no_numbers():
    from xception_trt.tuning import _row

    c = Candidate("onnxruntime", Precision.FP32, 2, "onnx/fp32.onnx", threads=1)
    row = _row(Measured(c, status="failed", reason="could not open"), {}, 0.95)
    assert (row["status"], row["reason"], row["repetitions"]) == ("failed", "could not open", 0)
    assert [row[k] for k in ("median_ms", "mean_ms", "p99_ms", "images_per_s", "cost",
                             "cost_interval")] == [None] * 6


def test_a_candidates_interval_is_at_the_confidence_asked():
    costs = [float(x) for x in range(1, 21)]
    m = _measured(1, costs)
    assert m.interval(0.95) == median_interval(costs, 0.95)
    assert m.interval(0.5) == median_interval(costs, 0.5) != m.interval(0.95)


def test_enums_go_to_json_by_value():
    import enum

    from xception_trt.tuning import _json_default

    class Kind(enum.Enum):  # no str mix-in: str() would give "Kind.GPU"
        GPU = "gpu"

    assert _json_default(Kind.GPU) == "gpu"


def test_a_folder_without_model_files_is_refused(tmp_path):
    from xception_trt.tuning import folder_candidates

    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ConfigError) as err:
        folder_candidates(tmp_path, CPU)
    assert str(err.value) == (f"{tmp_path} holds no model files (.onnx, .engine, .plan); give a "
                              "bundle (.xtrt) or a folder of xception-trt ONNX graphs or engines")
