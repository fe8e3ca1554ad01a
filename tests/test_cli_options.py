"""CLI flags that would do nothing or contradict each other (refused with ``error:`` and exit 2
before any work), and the runner flags ``--cuda-graphs`` / ``--providers`` / ``--threads``,
checked against the runner registry."""

from __future__ import annotations

import inspect
import json

import pytest

from xception_trt.cli import main
from xception_trt.errors import ConfigError, EngineError


def _error(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (argv, err)
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def files(tmp_path):
    """Empty model files of each kind (the flag checks run before any is opened)."""
    out = {}
    for key, name in (("onnx", "m.onnx"), ("engine", "m.engine"), ("ckpt", "m.safetensors")):
        (tmp_path / name).write_bytes(b"")
        out[key] = str(tmp_path / name)
    (tmp_path / "repo").mkdir()
    out["repo"] = str(tmp_path / "repo")
    (tmp_path / "x.png").write_bytes(b"")
    out["img"] = str(tmp_path / "x.png")
    out["o"] = str(tmp_path / "out")
    return out


# ---------------------------------------------------------------------------------------------
# silently ignored flags (issue 13, item 11)


@pytest.mark.parametrize("argv, message", [
    (["build", "{ckpt}", "-o", "{o}", "--no-gpu-fallback"],
     "--no-gpu-fallback only applies with --dla-core N (GPU fallback is a DLA setting); add "
     "--dla-core N or drop --no-gpu-fallback"),
    # DLA: fixed batch and FP16/INT8 only (NVIDIA "Working with DLA"; issue 21 items 3-4),
    # refused before the export instead of by the builder after it
    (["build", "{ckpt}", "-o", "{o}", "--dla-core", "0", "--precision", "fp16"],
     "--dla-core needs a fixed batch"),
    (["build", "{ckpt}", "-o", "{o}", "--dla-core", "0", "--precision", "fp16",
      "--min-batch", "1", "--max-batch", "8"], "--dla-core needs a fixed batch"),
    (["build", "{ckpt}", "-o", "{o}", "--dla-core", "0", "--batch", "4"],
     "--dla-core builds FP16 or INT8 engines only (DLA has no FP32): pass --precision fp16 "
     "and/or int8 (a checkpoint builds fp32 by default)"),
    (["build", "{onnx}", "-o", "{o}", "--dla-core", "0", "--batch", "4", "--precision", "fp32",
      "fp16"], "--dla-core builds FP16 or INT8 engines only"),
    (["build", "{ckpt}", "-o", "{o}", "--timing-cache", "{o}", "--no-timing-cache"],
     "--no-timing-cache cannot be combined with --timing-cache"),
    (["build", "{onnx}", "-o", "{o}", "--opset", "18"],
     "--opset only applies with a checkpoint SOURCE"),
    (["build", "{onnx}", "-o", "{o}", "--input-format", "uint8-nhwc"],
     "--input-format only applies with a checkpoint SOURCE"),
    (["quantize", "{onnx}", "--precision", "int8", "--calib", "{repo}", "--auto", "--method",
      "max", "-o", "{o}"],
     "--method cannot be combined with --auto (--auto tries every method and keeps the best); "
     "drop one of them"),
    (["quantize", "{onnx}", "--precision", "fp16", "--int8-weights", "-o", "{o}"],
     "--int8-weights only applies with --precision int8; add --precision int8 or drop "
     "--int8-weights"),
    (["quantize", "{onnx}", "--precision", "fp16", "--auto", "-o", "{o}"],
     "--auto only applies with --precision int8"),
    (["quantize", "{onnx}", "--precision", "fp16", "--high-precision", "fp16", "-o", "{o}"],
     "--high-precision only applies with --precision int8"),
    (["quantize", "{onnx}", "--precision", "int8", "--calib", "{repo}", "--percentile", "99",
      "-o", "{o}"], "--percentile only applies with --method percentile or --auto"),
    (["quantize", "{onnx}", "--precision", "int8", "--calib", "{repo}", "--compare-all",
      "-o", "{o}"], "--compare-all only applies with --val DIR"),
    (["quantize", "{onnx}", "--precision", "int8", "--calib", "{repo}", "--val-images", "3",
      "-o", "{o}"], "--val-images only applies with --val DIR or --auto"),
    (["quantize", "{onnx}", "--precision", "int8", "--calib", "{repo}", "--no-cache",
      "--cache-dir", "{repo}", "-o", "{o}"], "--no-cache cannot be combined with --cache-dir"),
    (["quantize", "{onnx}", "--precision", "int8", "--calib", "{repo}", "--auto",
      "--import-cache", "{onnx}", "-o", "{o}"],
     "--auto cannot be combined with --import-cache"),
    (["export", "{ckpt}", "-o", "{o}", "--no-parity", "--parity-samples", "8"],
     "--parity-samples cannot be combined with --no-parity"),
    (["train", "{repo}", "-o", "{o}", "--no-augment", "--no-flip"],
     "--no-flip cannot be combined with --no-augment"),
    (["train", "{repo}", "-o", "{o}", "--no-augment", "--crop-scale", "0.5", "1"],
     "--crop-scale cannot be combined with --no-augment"),
    (["triton-repo", "{onnx}", "-o", "{o}", "--threads", "2"],
     "--threads only applies with --backend python"),
    (["triton-repo", "{onnx}", "-o", "{o}", "--providers", "CPUExecutionProvider"],
     "--providers only applies with --backend python"),
])
def test_flags_that_would_do_nothing_are_refused(files, tmp_path, capsys, argv, message):
    err = _error(capsys, [a.format(**files) for a in argv])
    assert message in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# runner flags (item 23): the registry says which backend takes which


@pytest.mark.parametrize("argv, message", [
    (["infer", "{onnx}", "{img}", "--cuda-graphs"],
     "CUDA graphs need TensorRT engines (.engine, .plan); m.onnx (onnxruntime) would ignore"),
    (["infer", "{ckpt}", "{img}", "--cuda-graphs"], "CUDA graphs need TensorRT engines"),
    (["infer", "{engine}", "{img}", "--threads", "2"],
     "CPU threads need ONNX (.onnx) or checkpoints ("),
    (["infer", "{engine}", "{img}", "--providers", "CPUExecutionProvider"],
     "ONNX Runtime execution providers need ONNX (.onnx); m.engine (tensorrt) would ignore"),
    (["infer", "{onnx}", "{img}", "--providers", "CPUExecutionProvider,NoSuchEP"],
     "execution provider(s) NoSuchEP not available in this onnxruntime build; choose from: "),
    (["bench", "{onnx}", "{ckpt}", "--cuda-graphs"],
     "CUDA graphs need TensorRT engines"),
    (["bench", "{engine}", "--providers", "CPUExecutionProvider"],
     "ONNX Runtime execution providers need ONNX"),
    (["eval", "{engine}", "--data", "{repo}", "--providers", "CPUExecutionProvider"],
     "ONNX Runtime execution providers need ONNX"),
    (["triton-repo", "{engine}", "--backend", "python", "-o", "{o}", "--threads", "2"],
     "CPU threads need ONNX"),
    (["triton-repo", "{onnx}", "--backend", "python", "-o", "{o}", "--providers", "Nope"],
     "execution provider(s) Nope not available"),
])
def test_runner_flags_a_model_cannot_use_are_refused(files, capsys, argv, message):
    assert message in _error(capsys, [a.format(**files) for a in argv])


def test_providers_flag_needs_names(files, capsys):
    with pytest.raises(SystemExit):
        main(["infer", files["onnx"], files["img"], "--providers", ","])
    assert "is not a comma-separated list of provider names" in capsys.readouterr().err


def test_registry_options_are_keyword_options_of_each_runner():
    from xception_trt.runners import RUNNER_OPTIONS, RUNNERS

    for entry in RUNNERS.values():
        try:
            cls = entry.runner_class()
        except ImportError as exc:  # pragma: no cover - the TensorRT runner imports lazily
            pytest.skip(f"{entry.kind}: {exc}")
        params = inspect.signature(cls).parameters
        assert entry.options <= set(RUNNER_OPTIONS)
        for option in entry.options:
            assert params[option].kind is inspect.Parameter.KEYWORD_ONLY, (entry.kind, option)


@pytest.mark.parametrize("path, kw, expected", [
    ("m.engine", dict(cuda_graphs=True, providers=["CPUExecutionProvider"], threads=1),
     {"cuda_graphs": True}),
    ("m.onnx", dict(cuda_graphs=True, providers=["CPUExecutionProvider"]),
     {"providers": ["CPUExecutionProvider"]}),
    ("m.pth", dict(cuda_graphs=True, providers=["X"], threads=2), {"threads": 2}),
    ("m.engine", dict(cuda_graphs=False), {}),
])
def test_runner_options_pass_each_setting_to_the_backends_that_take_it(path, kw, expected):
    from xception_trt.runners import runner_options

    assert runner_options(path, **kw) == expected


def test_check_runner_options_allows_a_setting_some_model_takes():
    from xception_trt.runners import check_runner_options

    check_runner_options(["a.engine", "b.onnx"], cuda_graphs=True, threads=2,
                         providers=["CPUExecutionProvider"])
    with pytest.raises(ConfigError, match="CUDA graphs need TensorRT engines"):
        check_runner_options(["b.onnx", "c.pth"], cuda_graphs=True)
    with pytest.raises(EngineError, match="not available"):
        check_runner_options(["b.onnx"], providers=["CUDAExecutionProvider", "Nope"])
    with pytest.raises(EngineError, match=r"\(none\) not available"):
        check_runner_options(["b.onnx"], providers=[])


def test_infer_with_providers_runs_on_them(tiny_onnx_files, image_folder, capsys):
    img = str(next(image_folder.rglob("*.png")))
    rc = main(["infer", str(tiny_onnx_files["float"]), img, "--providers",
               "CPUExecutionProvider", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["runner"] == "onnxruntime-fp32"
    assert len(out["results"][0]["predictions"]) == 4


def test_bench_records_the_runner_flags(tiny_onnx_files, tmp_path, capsys):
    model = str(tiny_onnx_files["float"])
    rc = main(["bench", model, "--batch", "1", "--iterations", "2", "--warmup", "0",
               "--providers", "CPUExecutionProvider", "--threads", "1", "--out-dir",
               str(tmp_path), "--name", "r", "--no-progress"])
    capsys.readouterr()
    assert rc == 0
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["config"]["providers"] == ["CPUExecutionProvider"]
    assert doc["config"]["cuda_graphs"] is False and doc["config"]["threads"] == 1
    assert "--providers CPUExecutionProvider" in doc["command"]
    (entry,) = doc["runners"]
    assert entry["description"]["providers"] == ["CPUExecutionProvider"]


def test_python_backend_repository_carries_the_runner_flags(tiny_onnx_files, tmp_path, capsys):
    out = tmp_path / "repo"
    rc = main(["triton-repo", str(tiny_onnx_files["float"]), "--backend", "python", "-o",
               str(out), "--providers", "CPUExecutionProvider", "--threads", "1"])
    capsys.readouterr()
    assert rc == 0
    config = (out / "xception" / "config.pbtxt").read_text()
    assert "CPUExecutionProvider" in config and "threads" in config


def test_serve_refuses_runner_flags_with_a_repository_directory(files, capsys):
    from xception_trt.errors import ServeError
    from xception_trt.serve.server import find_tritonserver

    try:
        find_tritonserver()
    except ServeError as exc:
        pytest.skip(f"serve stops earlier here: {exc}")
    err = _error(capsys, ["serve", files["repo"], "--cuda-graphs"])
    assert "--cuda-graphs only applies with a model file (not a repository directory)" in err


@pytest.mark.parametrize("extra", [["--batch", "4"], ["--min-batch", "2", "--max-batch", "2"],
                                   ["--min-batch", "2", "--opt-batch", "2", "--max-batch", "2"]])
def test_dla_flags_with_a_fixed_batch_and_fp16_pass_the_early_check(files, extra):
    from xception_trt.cli import build_parser
    from xception_trt.cli.build import check_flags

    args = build_parser().parse_args(["build", files["ckpt"], "-o", files["o"], "--dla-core",
                                      "0", "--precision", "fp16", "int8", *extra])
    check_flags(args)  # raises ConfigError when refused
