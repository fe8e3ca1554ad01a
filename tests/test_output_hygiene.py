"""Output hygiene of the CLI (issue 28 item 7): the one output rule for ``build``, progress bars
only on a terminal, one notice per fact, file names in ``stream``'s lines, ``doctor``'s grouped
reasons, ``bench``'s default report folder, and ``infer`` over many images."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sys
from pathlib import Path

import pytest

from xception_trt.cli import main


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# -- a. build follows the one output rule ----------------------------------------------------

def test_build_does_not_replace_a_differing_engine_without_force(tiny_onnx_files, tmp_path,
                                                                 capsys):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds engines on the CPU")
    from xception_trt.sidecar import read_sidecar

    out = tmp_path / "engines"
    argv = ["build", str(tiny_onnx_files["float"]), "-o", str(out), "--flavour",
            "tensorrt_rtx", "--cc", "sm86", "--no-progress"]
    assert main(argv + ["--max-batch", "2"]) == 0
    engine = out / "tiny_float.fp32.engine"
    before = (_digest(engine), _digest(Path(f"{engine}.json")))
    capsys.readouterr()
    # the same build again: the identical engine is reused, nothing is refused
    assert main(argv + ["--max-batch", "2"]) == 0
    assert "reused" in capsys.readouterr().out
    # other options would make another engine of the same name: refused, the file untouched
    assert main(argv + ["--max-batch", "4"]) == 2
    err = _one_line_error(capsys)
    assert str(engine) in err and "--force" in err
    assert (_digest(engine), _digest(Path(f"{engine}.json"))) == before
    # with --force it is replaced
    assert main(argv + ["--max-batch", "4", "--force"]) == 0
    assert read_sidecar(engine).to_dict()["max_batch"] == 4


def test_build_does_not_replace_a_foreign_file_without_force(tiny_onnx_files, tmp_path, capsys):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds engines on the CPU")
    out = tmp_path / "engines"
    out.mkdir()
    mine = out / "tiny_float.fp32.engine"
    mine.write_bytes(b"someone else's plan")
    assert main(["build", str(tiny_onnx_files["float"]), "-o", str(out), "--flavour",
                 "tensorrt_rtx", "--cc", "sm86", "--no-progress"]) == 2
    assert "--force" in _one_line_error(capsys)
    assert mine.read_bytes() == b"someone else's plan"


def test_build_does_not_replace_an_export_of_another_checkpoint_without_force(
        tiny_checkpoint, tiny_model, tmp_path, capsys):
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX builds engines on the CPU")
    import torch

    from xception_trt.checkpoint import save_checkpoint

    other = tmp_path / "other" / "tiny.safetensors"  # the same stem, other weights
    other.parent.mkdir()
    model = __import__("copy").deepcopy(tiny_model)
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    save_checkpoint(model, other)
    out = tmp_path / "engines"
    argv = ["-o", str(out), "--flavour", "tensorrt_rtx", "--cc", "sm86", "--no-progress"]
    assert main(["build", str(tiny_checkpoint), *argv]) == 0
    graph = out / "tiny.onnx"
    before = _digest(graph)
    capsys.readouterr()
    assert main(["build", str(other), *argv]) == 2
    err = _one_line_error(capsys)
    assert str(graph) in err and "--force" in err
    assert _digest(graph) == before


# -- b. progress bars only on a terminal ------------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bars_only_when_stderr_is_a_terminal(terminal, monkeypatch):
    from xception_trt.cli._common import progress

    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with progress("work", 3, unit="img") as advance:
        for _ in range(3):
            advance(1)
    assert ("work" in stream.getvalue()) is terminal


def test_bench_and_build_print_no_bar_into_a_log(tiny_onnx_files, tmp_path, capsys,
                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", str(tiny_onnx_files["float"]), "--batch", "1", "--iterations", "2",
                 "--warmup", "0", "--threads", "1", "-o", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "bench tiny_float" not in err and "it/s" not in err and "call/s" not in err
    if __import__("importlib").util.find_spec("tensorrt_rtx") is not None:
        assert main(["build", str(tiny_onnx_files["float"]), "-o", str(tmp_path / "e"),
                     "--flavour", "tensorrt_rtx", "--cc", "sm86"]) == 0
        err = capsys.readouterr().err
        assert "engine:" not in err and "step/s" not in err and "%|" not in err


# -- c. one notice per fact ------------------------------------------------------------------

def test_a_repeated_warning_is_said_once(capsys):
    from xception_trt.cli import _setup_logging

    _setup_logging(0, False)
    log = logging.getLogger("xception_trt.precision.calibdata")
    for _ in range(2):  # the TensorRT- and the ONNX Runtime-placed INT8 of a bundle
        log.warning("calibration: only %d image(s) available (asked for %d)", 6, 512)
    log.warning("calibration: only %d image(s) available (asked for %d)", 6, 32)
    err = capsys.readouterr().err
    assert err.count("only 6 image(s) available (asked for 512)") == 1
    assert err.count("only 6 image(s) available (asked for 32)") == 1


def test_bundle_says_the_calibration_shortfall_once(tiny_checkpoint, flat_image_folder,
                                                    tmp_path, capsys):
    """bundle calibrates two INT8 graphs (TensorRT- and ONNX Runtime-placed) on the same 12
    images: the shortfall of the default 512 is one fact, said once."""
    assert main(["bundle", str(tiny_checkpoint), "--precision", "int8", "--calib",
                 str(flat_image_folder), "-o", str(tmp_path / "t.xtrt")]) == 0
    err = capsys.readouterr().err
    assert err.count("only 12 image(s) available") == 1, err


# -- d. stream names the files of an image folder ---------------------------------------------

def test_stream_on_a_folder_names_each_file(tiny_onnx_files, flat_image_folder, capsys):
    assert main(["stream", str(tiny_onnx_files["float"]), str(flat_image_folder)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("frame")]
    names = sorted(p.name for p in flat_image_folder.iterdir())
    assert len(lines) == len(names)
    for line, name in zip(lines, names):
        assert str(flat_image_folder / name) in line
    assert main(["stream", str(tiny_onnx_files["float"]), str(flat_image_folder),
                 "--json-lines"]) == 0
    frames = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [Path(f["file"]).name for f in frames if "frame" in f] == names


# -- e. doctor: reasons grouped, the default precision, the graph INT8 runs, no prebuild of
# what the bundle has ---------------------------------------------------------------------------

def test_doctor_groups_reasons_and_names_what_runs(tiny_checkpoint, flat_image_folder,
                                                   tmp_path, capsys):
    pytest.importorskip("tensorrt_rtx", reason="the bundle's engines are built with TensorRT-RTX")
    bundle = tmp_path / "t.xtrt"
    assert main(["bundle", str(tiny_checkpoint), "--precision", "fp32", "int8", "--calib",
                 str(flat_image_folder), "--cc", "sm86", "sm89", "--max-batch", "2",
                 "-o", str(bundle)]) == 0
    capsys.readouterr()
    facts = str(Path(__file__).parent / "data" / "machines" / "cpu-only-ci.json")
    assert main(["doctor", str(bundle), "--facts", facts, "--cc", "sm89", "sm120"]) == 0
    out = capsys.readouterr().out
    # four engines, one reason: said once
    assert "4 engines do not load here: " in out
    assert out.count("needs an NVIDIA GPU") == 1
    # the default precision, and the graph ONNX Runtime runs for INT8
    assert "variant fp32 (default" in out and "variant int8 (default" not in out
    assert "int8: ONNX Runtime — runs the INT8 graph placed for ONNX Runtime" in out
    assert out.count("no TensorRT engine can run here") == 1
    # SM89 engines are in the bundle: no prebuild command for it; SM120 gets one
    assert "SM89: the bundle has engines for it" in out
    assert "--cc sm89" not in out and "--cc sm120" in out


# -- f. bench's default report folder --------------------------------------------------------

def test_bench_writes_its_default_report_into_a_new_folder_of_the_current_directory(
        tiny_onnx_files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", str(tiny_onnx_files["float"]), "--batch", "1", "--iterations", "2",
                 "--warmup", "0", "--threads", "1"]) == 0
    (folder,) = [p for p in tmp_path.iterdir()]
    assert folder.name.startswith("bench-") and (folder / "report.json").is_file()
    assert not (tmp_path / "benchmarks").exists()
    assert f"report written to {folder.name}/" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "./bench-<UTC time>/ in the current directory" in " ".join(
        capsys.readouterr().out.split())


# -- g. infer over many images ---------------------------------------------------------------

def test_infer_goes_on_past_an_unreadable_image(tiny_onnx_files, flat_image_folder, tmp_path,
                                                capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    good = sorted(flat_image_folder.iterdir())[:3]
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "img_01b.png").write_bytes(b"not a png")  # sorts between two good ones
    assert main(["infer", str(tiny_onnx_files["float"]), str(folder), "--top-k", "2",
                 "--batch-size", "2"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == len(good) + 1  # one line per readable image, then the summary
    for line, p in zip(lines, good):
        assert line.startswith(str(folder / p.name)) and line.count("%") == 2
    assert lines[-1] == "3 of 4 image(s) classified with onnxruntime-fp32; 1 could not be " \
                        "read (error lines above)"
    (err,) = captured.err.strip().splitlines()
    assert err.startswith("error: ") and "img_01b.png" in err
    # --json: the same, the failure as an entry, and the summary
    assert main(["infer", str(tiny_onnx_files["float"]), str(folder), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"] == {"images": 4, "classified": 3, "failed": 1}
    assert [("error" in r) for r in doc["results"]] == [False, False, True, False]
    # every image readable: exit 0, the summary says so
    assert main(["infer", str(tiny_onnx_files["float"]), str(good[0])]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("1 of 1 image(s) classified")
