"""Reports (JSON schema, Markdown comparison tables, PNG plots, folder rules) and the
``bench`` / ``eval`` commands."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from xception_trt.bench import (
    AccuracyResult,
    AgreementResult,
    EvalResult,
    LatencyResult,
    LatencyStats,
    RunnerBenchmark,
    RunnerEvaluation,
)
from xception_trt.cli import main
from xception_trt.errors import BenchError
from xception_trt.report import (
    SCHEMA,
    SCHEMA_VERSION,
    build_report,
    check_report_dir,
    load_report,
    render_markdown,
    validate_report,
    write_report,
)

SYSTEM = {"cpu": "Test CPU", "cpu_count": 2, "platform": "test", "software": {
    "python": "3.x", "xception-trt": "0.1.0", "onnxruntime": "1.x", "torch": "2.x"},
    "devices": {"gpus": [], "driver": None, "reason": "no GPU in tests"}, "trt_importable": {}}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stats(median: float) -> LatencyStats:
    return LatencyStats(10, median, median, median * 1.1, median * 1.2, median * 0.9,
                        median * 1.3, 0.1)


def _bench(name: str, precision: str, medians: dict[int, float], error=None) -> RunnerBenchmark:
    lat = [LatencyResult(b, 10, 2, _stats(m), throughput_ips=b * 1000 / m) for b, m in
           medians.items()]
    return RunnerBenchmark(name, {"backend": name.split("-")[0], "precision": precision,
                                  "device": "cpu", "input_format": "float-nchw",
                                  "provider": "CPUExecutionProvider", "threads": 2},
                           lat, load_seconds=0.5, rss_after_load_mib=300.0,
                           rss_load_delta_mib=50.0, rss_peak_mib=320.0, error=error)


def _eval() -> EvalResult:
    def acc(top1, top5):
        return AccuracyResult(20, top1, top5, 5, {"cat": {"images": 10, "top1": top1},
                                                  "dog": {"images": 10, "top1": top1}})

    runners = [
        RunnerEvaluation("onnxruntime-fp32", {"backend": "onnxruntime", "precision": "fp32"},
                         acc(0.80, 0.95)),
        RunnerEvaluation("onnxruntime-int8", {"backend": "onnxruntime", "precision": "int8"},
                         acc(0.70, 0.90), AgreementResult("onnxruntime-fp32", 20, 0.85, 1.5,
                                                          0.2, 0.03, 0.4)),
    ]
    return EvalResult({"source": "/data", "images": 20, "classes": 2, "label_mapping": "name",
                       "unreadable": 1}, "onnxruntime-fp32", runners,
                      [("/data/cat/broken.jpg", "truncated")])


def _doc(name="r1", **kw):
    benches = [_bench("onnxruntime-fp32", "fp32", {1: 10.0, 8: 40.0}),
               _bench("onnxruntime-int8", "int8", {1: 5.0, 8: 16.0}),
               _bench("torch-fp32", "fp32", {1: 20.0}, error="batch 8: stopped after 3 of 10 "
                                                           "timed calls (timing): boom")]
    return build_report(name, kind="bench", benchmarks=benches, evaluation=_eval(),
                        config={"batch_sizes": [1, 8]}, notes=["random weights"],
                        **{"system": SYSTEM, **kw})


def test_report_document_schema():
    doc = _doc()
    assert doc["schema"] == SCHEMA and doc["schema_version"] == SCHEMA_VERSION == 2
    assert doc["reference"] == "onnxruntime-fp32"
    by = {e["name"]: e for e in doc["runners"]}
    assert set(by) == {"onnxruntime-fp32", "onnxruntime-int8", "torch-fp32"}
    int8 = by["onnxruntime-int8"]
    assert int8["precision"] == "int8" and int8["accuracy"]["top1"] == 0.7
    assert int8["agreement"]["top1_agreement"] == 0.85
    assert int8["latency"][0]["end_to_end"]["median_ms"] == 5.0
    assert by["torch-fp32"]["errors"] == ["batch 8: stopped after 3 of 10 timed calls "
                                          "(timing): boom"]
    assert by["torch-fp32"]["accuracy"] is None
    assert doc["unreadable_images"] == [{"path": "/data/cat/broken.jpg", "reason": "truncated"}]
    json.dumps(doc)  # JSON-ready


def test_validate_report_rejects_foreign_and_newer_documents():
    doc = _doc()
    with pytest.raises(BenchError, match="not an xception-trt benchmark report"):
        validate_report({**doc, "schema": "other"})
    with pytest.raises(BenchError, match="schema version 3 is not supported"):
        validate_report({**doc, "schema_version": 3})
    broken = dict(doc)
    del broken["runners"]
    with pytest.raises(BenchError, match=r"missing key\(s\) \['runners'\]"):
        validate_report(broken)
    with pytest.raises(BenchError, match="reference 'nope'"):
        _doc(reference="nope")
    with pytest.raises(BenchError, match="folder name"):
        _doc(name="../escape")


def test_markdown_comparison_has_deltas_vs_fp32_reference():
    md = render_markdown(_doc())
    # results first, then the notes
    assert md.index("## Comparison") < md.index("## Notes\n\n- random weights")
    assert "against the reference **onnxruntime-fp32**" in md
    int8_row = next(line for line in md.splitlines()
                    if line.startswith("| onnxruntime-int8 | onnxruntime | int8"))
    cells = [c.strip() for c in int8_row.strip("|").split("|")]
    # Top-1, Δ top-1, Top-5, Δ top-5, agreement, max |Δ logit|, KL, ms@b1, x@b1, ms@b8, x@b8
    assert cells[4:15] == ["70.00%", "-10.00 pp", "90.00%", "-5.00 pp", "85.00%", "1.5000",
                           "0.0300", "5.00", "2.00x", "16.00", "2.50x"]
    ref_row = next(line for line in md.splitlines() if line.startswith("| onnxruntime-fp32 |"))
    assert "| ref |" in ref_row
    torch_row = next(line for line in md.splitlines() if line.startswith("| torch-fp32 | torch"))
    assert "0.50x" in torch_row  # 10 ms reference vs 20 ms
    assert "## Problems" in md and "boom" in md and "broken.jpg" in md
    assert "![Latency vs batch](latency_vs_batch.png)" in md
    assert "![Accuracy by precision](accuracy_by_precision.png)" in md
    assert "Test CPU (2 logical cores)" in md


def test_write_report_files_and_overwrite_rules(tmp_path):
    doc = _doc()
    files = write_report(doc, tmp_path)
    assert files.directory == tmp_path / "r1"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o777 & ~umask
    assert load_report(files.directory) == json.loads(files.json.read_text())
    assert files.markdown.read_text().startswith("# xception-trt bench report: r1")
    assert {p.name for p in files.plots} == {"latency_vs_batch.png", "accuracy_by_precision.png"}
    for p in files.plots:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 10_000
    with pytest.raises(BenchError, match="already exists.*--force"):
        write_report(doc, tmp_path)
    with pytest.raises(BenchError, match="already exists"):
        check_report_dir(tmp_path, "r1")
    (files.directory / "stale.txt").write_text("old")
    write_report(doc, tmp_path, force=True)
    assert not (files.directory / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    with pytest.raises(BenchError, match="does not exist"):
        load_report(tmp_path / "nope")


def test_latency_plot_gives_each_runner_its_own_style_and_one_legend_for_both_panels():
    from xception_trt.report import latency_figure

    fig = latency_figure(_doc())
    ax_lat, ax_tp = fig.axes
    for ax in (ax_lat, ax_tp):
        handles, labels = ax.get_legend_handles_labels()
        lines = [h.lines[0] if hasattr(h, "lines") else h for h in handles]  # errorbar: data
        styles = [(line.get_color(), line.get_marker(), line.get_linestyle()) for line in lines]
        assert sorted(labels) == ["onnxruntime-fp32", "onnxruntime-int8", "torch-fp32"]
        # onnxruntime-fp32 and torch-fp32 (same precision) differ in colour and marker
        assert len(styles) == 3 and len({(c, m) for c, m, _ in styles}) == 3, styles
        assert len({c for c, _, _ in styles}) == 3
    # one legend for the figure, naming every runner (not only on the throughput panel)
    assert len(fig.legends) == 1 and ax_tp.get_legend() is None
    assert sorted(t.get_text() for t in fig.legends[0].get_texts()) == [
        "onnxruntime-fp32", "onnxruntime-int8", "torch-fp32"]


def test_runners_table_names_a_failure_instead_of_none():
    failed = RunnerBenchmark("tensorrt-fp16", {}, [], error="cannot open m.engine: no GPU")
    doc = build_report("f", kind="bench", system=SYSTEM,
                       benchmarks=[_bench("onnxruntime-fp32", "fp32", {1: 3.0}), failed])
    md = render_markdown(doc)
    runners = md[md.index("## Runners"):md.index("## Problems")]
    row = next(line for line in runners.splitlines() if line.startswith("| tensorrt-fp16 |"))
    assert "failed: cannot open m.engine: no GPU" in row and "None" not in row


def test_report_title_units_and_load_average(tmp_path):
    doc = _doc()
    assert doc["title"] == "xception-trt bench report: r1"
    md = render_markdown(doc)
    assert md.startswith("# xception-trt bench report: r1\n")
    assert "Load average (1/5/15 min) | not recorded" in md  # SYSTEM has none

    loaded = {**SYSTEM, "load_average": [1.5, 1.0, 0.25]}
    titled = _doc(name="r2", title="Demo: digits", system=loaded)
    md = render_markdown(titled)
    assert md.startswith("# Demo: digits\n")
    assert "| Load average (1/5/15 min) | 1.50 / 1.00 / 0.25 |" in md
    assert "measured with a load average of 1.50 / 1.00 / 0.25 on 2 logical cores" in md
    # sizes: MiB everywhere, in the JSON keys too
    text = json.dumps(titled)
    assert "_mb\"" not in text and "rss_peak_mib" in text and "peak_rss_mib" in text
    assert " MB" not in md and "MiB" in md


def test_system_facts_record_the_load_average():
    from xception_trt.sysinfo import system_facts

    load = system_facts(probe_gpus=False)["load_average"]
    if hasattr(os, "getloadavg"):
        assert len(load) == 3 and all(x >= 0 for x in load)
def test_write_report_sweeps_the_temp_folder_of_a_killed_writer(tmp_path):
    import subprocess
    import sys

    from xception_trt import fsio

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = fsio._host_tag()
    stale = tmp_path / f".r1.{dead.pid}-{host}-0123abcd.tmp"  # kill -9 mid-write left it
    stale.mkdir()
    (stale / "report.json").write_text("{")
    live = tmp_path / f".r1.{os.getpid()}-{host}-0123abcd.tmp"  # a writer still at work
    live.mkdir()
    write_report(_doc(), tmp_path)
    assert not stale.exists() and live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "r1"])


def test_report_without_matplotlib_has_tables_and_says_why(tmp_path, monkeypatch):
    # A device install (no plot extra): None in sys.modules makes the import fail as if absent.
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.patches"):
        monkeypatch.setitem(sys.modules, mod, None)
    files = write_report(_doc(), tmp_path)
    assert files.plots == ()
    assert sorted(p.name for p in files.directory.iterdir()) == ["report.json", "report.md"]
    md = files.markdown.read_text()
    assert "![" not in md and "## Latency" in md and "## Accuracy" in md
    assert md.count("matplotlib is not installed; pip install 'xception-trt[plot]'") == 2


def test_latency_only_report_has_no_accuracy_plot(tmp_path):
    doc = build_report("lat", kind="bench", system=SYSTEM,
                       benchmarks=[_bench("onnxruntime-fp32", "fp32", {1: 3.0})])
    files = write_report(doc, tmp_path)
    assert [p.name for p in files.plots] == ["latency_vs_batch.png"]
    assert "accuracy_by_precision" not in files.markdown.read_text()


# ---------------------------------------------------------------------------------------------
# CLI


@pytest.fixture()
def out(tmp_path):
    return tmp_path / "reports"


def _one_line_error(capsys, match: str) -> None:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and match in lines[0], err
    assert "Traceback" not in err


def test_bench_cli_writes_a_report(tiny_onnx_files, tiny_checkpoint, out, capsys):
    argv = ["bench", str(tiny_onnx_files["float"]), str(tiny_onnx_files["uint8"]),
            str(tiny_checkpoint), "--batch", "1", "2", "--iterations", "2", "--warmup", "0",
            "--threads", "1", "--out-dir", str(out), "--name", "t", "--no-progress"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "report written to" in stdout and "p50 ms" in stdout
    doc = load_report(out / "t")
    names = [e["name"] for e in doc["runners"]]
    assert names == ["onnxruntime-fp32 (tiny_float.onnx)", "onnxruntime-fp32 (tiny_uint8.onnx)",
                     "torch-fp32"]
    assert all(len(e["latency"]) == 2 and not e["errors"] for e in doc["runners"])
    assert doc["config"]["threads"] == 1 and doc["command"].startswith("xception-trt bench")
    assert (out / "t" / "latency_vs_batch.png").is_file()
    # an existing report is never silently overwritten
    assert main(argv) == 2
    _one_line_error(capsys, "already exists")
    assert main(argv + ["--force"]) == 0


def test_bench_cli_with_labelled_data_adds_accuracy(tiny_onnx_files, image_folder, out):
    assert main(["bench", str(tiny_onnx_files["float"]), "--batch", "2", "--iterations", "1",
                 "--warmup", "0", "--data", str(image_folder), "--out-dir", str(out),
                 "--name", "d", "--no-progress"]) == 0
    doc = load_report(out / "d")
    entry = doc["runners"][0]
    assert entry["latency"][0]["input_source"] == "data"
    assert entry["accuracy"]["images"] == 16
    assert (out / "d" / "accuracy_by_precision.png").is_file()


def test_bench_cli_runner_failing_midway_exits_1_with_report(tiny_onnx_files, out, capsys,
                                                              monkeypatch):
    from xception_trt.runners import OnnxRuntimeRunner

    real = OnnxRuntimeRunner.__call__
    calls = {"n": 0}

    def flaky(self, batch):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("simulated device loss")
        return real(self, batch)

    monkeypatch.setattr(OnnxRuntimeRunner, "__call__", flaky)
    assert main(["bench", str(tiny_onnx_files["float"]), "--batch", "1", "2", "--iterations",
                 "2", "--warmup", "0", "--out-dir", str(out), "--name", "f",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "warning: onnxruntime-fp32: batch 2: stopped after 0 of 2" in err
    doc = load_report(out / "f")
    lat = doc["runners"][0]["latency"]
    assert lat[0]["completed"] == 2 and lat[1]["completed"] == 0
    assert "simulated device loss" in (out / "f" / "report.md").read_text()


def test_bench_cli_bad_inputs(tmp_path, tiny_onnx_files, out, capsys):
    (tmp_path / "m.tflite").write_bytes(b"x")
    cases = [
        (["bench", str(tmp_path / "m.tflite")], "unknown model type"),
        (["bench", str(tmp_path / "missing.onnx")], "does not exist"),
        (["bench", str(tiny_onnx_files["float"]), "--warmup", "-1"], "warmup"),
        (["bench", str(tiny_onnx_files["float"]), "--name", "a/b"], "folder name"),
    ]
    for argv, match in cases:
        assert main(argv + ["--out-dir", str(out), "--no-progress"]) == 2
        _one_line_error(capsys, match)
    assert not out.exists()  # nothing written for a rejected command


def test_eval_cli(tiny_onnx_files, tiny_checkpoint, image_folder, out, capsys):
    assert main(["eval", str(tiny_onnx_files["uint8"]), str(tiny_checkpoint), "--data",
                 str(image_folder), "--reference", str(tiny_checkpoint), "--out-dir", str(out),
                 "--name", "e", "--no-progress", "--threads", "1"]) == 0
    stdout = capsys.readouterr().out
    assert "top-1" in stdout and "agreement 100.00%" in stdout
    doc = load_report(out / "e")
    assert doc["kind"] == "eval" and doc["reference"] == "torch-fp32"
    other = next(e for e in doc["runners"] if e["name"] != "torch-fp32")
    assert other["agreement"]["max_abs_logit_diff"] < 1e-4
    assert other["latency"] == []


def test_eval_cli_bad_inputs(tiny_onnx_files, flat_image_folder, tmp_path, out, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.bin2").write_bytes(b"not a model")
    model = str(tiny_onnx_files["float"])
    cases = [
        ([model, "--data", str(flat_image_folder)], "has no labels"),
        ([model, "--data", str(tmp_path / "empty")], "no images"),
        ([model, "--data", str(tmp_path / "missing")], "does not exist"),
        ([str(tmp_path / "x.bin2"), "--data", str(flat_image_folder)], "unknown model type"),
    ]
    for argv, match in cases:
        assert main(["eval", *argv, "--out-dir", str(out), "--no-progress"]) == 2
        _one_line_error(capsys, match)


def test_plot_functions_write_to_output_and_take_the_old_path_keyword_with_a_warning(tmp_path):
    from xception_trt.errors import ConfigError
    from xception_trt.report import plot_accuracy, plot_latency

    pytest.importorskip("matplotlib")
    doc = _doc()
    assert plot_latency(doc, output=tmp_path / "a.png") == tmp_path / "a.png"
    assert plot_accuracy(doc, tmp_path / "b.png") == tmp_path / "b.png"
    with pytest.warns(DeprecationWarning, match="plot_latency: path= is deprecated; use output=") \
            as rec:
        assert plot_latency(doc, path=tmp_path / "c.png") == tmp_path / "c.png"
    assert rec[0].filename == __file__
    for name in ("a.png", "b.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ConfigError, match="give only output="):
        plot_latency(doc, tmp_path / "d.png", path=tmp_path / "e.png")
    with pytest.raises(ConfigError, match="give output="):
        plot_latency(doc)


# ---------------------------------------------------------------------------------------------
# plots people can read (issue 28 item 4) and what a report tells first


def _table_rows(md: str, section: str) -> list[str]:
    """Runner names of the table under ``## <section>``, in order."""
    part = md[md.index(f"## {section}"):]
    part = part[:part.index("\n## ", 3)] if "\n## " in part[3:] else part
    return [line.split("|")[1].strip() for line in part.splitlines()
            if line.startswith("| ") and not line.startswith("| Runner")]


def _legend(fig) -> list[str]:
    assert len(fig.legends) == 1
    return [t.get_text() for t in fig.legends[0].get_texts()]


def _torch_reference_doc():
    """Reference torch-fp32 (not first by precision/backend/name): table order puts it first."""
    return _doc(name="t", reference="torch-fp32")


@pytest.mark.parametrize("mapping", ["the report's", "a replaced"])
@pytest.mark.parametrize("reference", ["onnxruntime-fp32", "torch-fp32"])
def test_one_colour_per_runner_in_every_plot_from_one_mapping(mapping, reference, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_hex

    from xception_trt import report
    from xception_trt.report import accuracy_figure, latency_figure, runner_styles

    # torch-fp32 has latency but no accuracy: the plots hold different runners
    doc = _doc(reference=reference)
    styles = runner_styles(doc)
    assert set(styles) == {e["name"] for e in doc["runners"]}
    assert len({s["color"] for s in styles.values()}) == len(styles)  # one colour each
    if mapping == "a replaced":  # every plot takes its colours from runner_styles
        styles = {n: {**st, "color": f"#0000{i + 1:02x}"} for i, (n, st) in
                  enumerate(styles.items())}
        monkeypatch.setattr(report, "runner_styles", lambda doc: styles)
    lat = latency_figure(doc)
    seen = {}
    for line in lat.axes[0].get_lines() + lat.axes[1].get_lines():
        if not line.get_label().startswith("_"):
            seen.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
    acc = accuracy_figure(doc)
    for patch in acc.legends[0].get_patches():
        seen.setdefault(patch.get_label(), set()).add(to_hex(patch.get_facecolor()))
    for bar, name in zip(acc.axes[1].patches, [e["name"] for e in doc["runners"]
                                              if e.get("accuracy")]):
        seen[name].add(to_hex(bar.get_facecolor()))
    assert set(seen) == set(styles)
    for name, colours in seen.items():
        assert colours == {to_hex(styles[name]["color"])}, (name, colours)


def test_legend_order_is_the_table_order():
    pytest.importorskip("matplotlib")
    from xception_trt.report import accuracy_figure, latency_figure, table_order

    doc = _torch_reference_doc()
    md = render_markdown(doc)
    order = [e["name"] for e in table_order(doc)]
    assert order[0] == "torch-fp32"  # the reference first
    assert _table_rows(md, "Comparison") == order
    assert _legend(latency_figure(doc)) == order
    accuracy = [n for n in order if next(e for e in doc["runners"] if e["name"] == n)
                .get("accuracy")]
    assert _legend(accuracy_figure(doc)) == accuracy


def _close_accuracy_doc(reference="onnxruntime-fp32", **kw):
    ev = _eval()
    ev.runners[0].accuracy = AccuracyResult(20, 0.9833, 0.998, 5, {})
    ev.runners[1].accuracy = AccuracyResult(20, 0.9814, 0.998, 5, {})
    ev.reference = reference
    return build_report("close", kind="eval", evaluation=ev, system=SYSTEM, **kw)


def test_accuracy_axis_shows_small_differences():
    pytest.importorskip("matplotlib")
    from xception_trt.report import accuracy_figure

    ax_acc, ax_agr = accuracy_figure(_close_accuracy_doc()).axes
    lo, hi = ax_acc.get_ylim()
    # the change from the reference in points: -0.19 pp fills the axis, not 0..100 %
    assert "percentage points" in ax_acc.get_ylabel()
    assert lo < -0.19 and hi > 0 and hi - lo < 2
    heights = sorted(round(p.get_height(), 2) for p in ax_acc.patches)
    assert heights[0] == -0.19
    lo, hi = ax_agr.get_ylim()
    assert lo == 0 and 15 < hi < 40  # 15 % of images disagree: the axis is not 0..100
    # without a reference accuracy: the values on a zoomed axis that says so
    doc = _close_accuracy_doc()
    for e in doc["runners"]:
        if e["name"] == "onnxruntime-fp32":
            e["accuracy"] = None
    doc["runners"].append({**doc["runners"][1], "name": "other-int8"})
    ax_acc = accuracy_figure(doc).axes[0]
    lo, hi = ax_acc.get_ylim()
    assert 97 < lo < 98.14 and 99.8 < hi <= 100.5 and "zoomed" in ax_acc.get_ylabel()


def test_latency_plot_shows_the_median_and_the_tail_apart():
    pytest.importorskip("matplotlib")
    from matplotlib.collections import LineCollection

    from xception_trt.report import latency_figure

    doc = _doc()
    ax = latency_figure(doc).axes[0]
    assert ax.get_yscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    tails = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(tails) == len(doc["runners"])
    for e in doc["runners"]:
        pts = [r for r in e["latency"] if r.get("end_to_end")]
        med = lines[e["name"]]  # the labelled line is the median
        assert list(med.get_ydata()) == [r["end_to_end"]["median_ms"] for r in pts]
        assert med.get_marker() not in (None, "", "None")
    width = min(line.get_linewidth() for line in lines.values() if not line.get_label()
                .startswith("_"))
    for tail in tails:  # thinner than every median line, from the median up to p99
        assert max(tail.get_linewidths()) < width
    int8 = next(e for e in doc["runners"] if e["name"] == "onnxruntime-int8")
    p90 = [r["end_to_end"]["p90_ms"] for r in int8["latency"]]
    p99 = [r["end_to_end"]["p99_ms"] for r in int8["latency"]]
    marks = [list(line.get_ydata()) for line in ax.get_lines() if line.get_label()
             .startswith("_")]
    assert p90 in marks and p99 in marks  # each tail statistic its own marker
    assert "min" not in ax.get_title() and "p99" in ax.get_title()


def test_findings_engines_and_notes_follow_the_results():
    engines = [{"path": "artifacts/a/engines/x/int8.engine", "size_bytes": 6 * 2**20 + 1,
                "precision": "int8", "built_with": "tensorrt_rtx 1.7.1", "target": "SM86",
                "max_batch": 8, "runs_on": "an NVIDIA RTX GPU of compute capability 8.6",
                "command": "xception-trt infer artifacts/a/engines/x/int8.engine IMAGE"}]
    doc = _doc(findings=["INT8 is slow here because of X."], engines=engines)
    assert load_report_roundtrip(doc)["engines"] == engines
    md = render_markdown(doc)
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings[:3] == ["## Comparison", "## Engines", "## Notes"]
    comparison = md[md.index("## Comparison"):md.index("## Engines")]
    assert comparison.rstrip().endswith("INT8 is slow here because of X.")
    row = next(line for line in md.splitlines() if "`artifacts/a/engines/x/int8.engine`" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:7] == ["int8", "6.0 MiB", "tensorrt_rtx 1.7.1", "SM86", "8",
                          "an NVIDIA RTX GPU of compute capability 8.6"]
    assert cells[7] == "`xception-trt infer artifacts/a/engines/x/int8.engine IMAGE`"
    assert "Layers" not in md and "generated kernel" not in md  # no layer records given
    # without them: no empty sections
    md = render_markdown(_doc())
    assert "## Engines" not in md


@pytest.mark.parametrize("int8_bytes, larger", [(12 * 2**20, True), (3 * 2**20, False)])
def test_engines_section_explains_sizes_from_the_layer_records(int8_bytes, larger):
    def row(prec, size, generated):
        return {"path": f"{prec}.engine", "size_bytes": size, "precision": prec,
                "built_with": "tensorrt_rtx 1.7.1", "target": "SM86", "max_batch": 8,
                "runs_on": "x", "command": "c", "layers": f"compute: 39 {prec}",
                "precision_check": f"all 39 compute layers run in {prec}",
                "generated_kernels": generated}

    doc = _doc(engines=[row("fp32", 6 * 2**20, 8), row("int8", int8_bytes, 41)])
    md = render_markdown(doc)
    table = md[md.index("## Engines"):]
    assert "| Layers (what they compute in) |" in table
    assert "| compute: 39 int8 (all 39 compute layers run in int8) |" in table
    assert "layers running a generated kernel: fp32 8, int8 41. An INT8 engine" in table
    assert ("INT8 engine here is larger than the FP32 one" in table) is larger
    # NVIDIA TensorRT engines generate none: no note
    doc = _doc(engines=[row("fp32", 6 * 2**20, 0), row("int8", int8_bytes, 0)])
    assert "generated kernel" not in render_markdown(doc)


def load_report_roundtrip(doc):
    return validate_report(json.loads(json.dumps(doc)))


def test_bench_terminal_table_names_each_statistic(capsys):
    from xception_trt.cli.bench import print_latency_summary

    # a skewed run: the mean (3 ms) is far from the median (1 ms), as with a few slow calls
    skewed = LatencyResult(4, 10, 2, LatencyStats(10, 3.0, 1.0, 1.2, 20.0, 0.9, 21.0, 6.0),
                           throughput_ips=4 * 1000 / 3.0)
    doc = build_report("s", kind="bench", system=SYSTEM, benchmarks=[
        RunnerBenchmark("onnxruntime-fp32", {"backend": "onnxruntime", "precision": "fp32"},
                        [skewed])])
    print_latency_summary(doc)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["runner", "batch", "p50", "ms", "mean", "ms", "p99", "ms", "img/s",
                              "(mean)"]
    assert "img/s = batch / mean ms" in out[-1]
    rows = [line.split() for line in out[1:-1]]
    assert rows == [["onnxruntime-fp32", "4", "1.000", "3.000", "20.000", "1333.3"]]
    for row in rows:
        batch, p50, mean, p99, ips = int(row[1]), *map(float, row[2:6])
        assert ips == pytest.approx(batch * 1000 / mean, rel=1e-3)  # from the mean beside it
        assert p50 <= p99
