"""CLI flags that would do nothing or contradict each other (refused with ``error:`` and exit 2
before any work; the option table ``cli/_options.RULES``), the runner flags ``--cuda-graphs`` /
``--providers`` / ``--threads``, checked against the runner registry, and one spelling per
concept (``--cc``, ``--flavour``, ``--cuda-binding``, ``--triton-backend``, ``--placement``) with
the old spellings as deprecated aliases."""

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
    (["quantize", "{onnx}", "--precision", "fp16", "--no-int8-weights", "-o", "{o}"],
     "--int8-weights only applies with --precision int8"),
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
     "--threads only applies with --triton-backend python"),
    (["triton-repo", "{onnx}", "-o", "{o}", "--providers", "CPUExecutionProvider"],
     "--providers only applies with --triton-backend python"),
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
    (["triton-repo", "{engine}", "--triton-backend", "python", "-o", "{o}", "--threads", "2"],
     "CPU threads need ONNX"),
    (["triton-repo", "{onnx}", "--triton-backend", "python", "-o", "{o}", "--providers", "Nope"],
     "execution provider(s) Nope not available"),
])
def test_runner_flags_a_model_cannot_use_are_refused(files, capsys, argv, message):
    assert message in _error(capsys, [a.format(**files) for a in argv])


def test_providers_flag_needs_names(files, capsys):
    with pytest.raises(SystemExit):
        main(["infer", files["onnx"], files["img"], "--providers", ","])
    assert "is not a comma-separated list of provider names" in capsys.readouterr().err


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
    rc = main(["triton-repo", str(tiny_onnx_files["float"]), "--triton-backend", "python", "-o",
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


# ---------------------------------------------------------------------------------------------
# one name per concept (issue 25): the one spelling in every command, old ones as hidden,
# deprecated aliases that warn once and still work


def _parse(argv):
    """Parse ``argv`` as main() does, up to and including the deprecated spellings."""
    from xception_trt.cli import build_parser
    from xception_trt.cli._options import resolve_deprecated

    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_deprecated(args, parser)
    return args


@pytest.mark.parametrize("argv, old, new, dest, value", [
    (["bundle", "m.onnx", "-o", "m.xtrt", "--engines", "sm86", "sm89"], "--engines", "--cc",
     "cc", ["sm86", "sm89"]),
    (["doctor", "--target", "sm89"], "--target", "--cc", "cc", ["sm89"]),
    (["build", "m.onnx", "-o", "e", "--backend", "tensorrt_rtx"], "--backend", "--flavour",
     "flavour", "tensorrt_rtx"),
    (["selftest", "--backend", "pycuda", "--backend", "cuda-python"], "--backend",
     "--cuda-binding", "cuda_binding", ["pycuda", "cuda-python"]),
    (["triton-repo", "m.onnx", "-o", "r", "--backend", "python"], "--backend",
     "--triton-backend", "triton_backend", "python"),
    (["quantize", "m.onnx", "-o", "q.onnx", "--precision", "int8", "--target", "onnxruntime"],
     "--target", "--placement", "placement", "onnxruntime"),
])
def test_old_spelling_warns_once_and_still_works(capsys, argv, old, new, dest, value):
    args = _parse(argv)
    assert getattr(args, dest) == value
    assert not any(k.startswith("deprecated_") for k in vars(args))
    err = capsys.readouterr().err
    assert err == f"warning: {old} is deprecated; use {new}\n"
    # the new spelling gives the same and says nothing
    new_argv = [new if a == old else a for a in argv]
    assert getattr(_parse(new_argv), dest) == value
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv, old, new", [
    (["bundle", "m.onnx", "-o", "m.xtrt", "--engines", "sm86", "--cc", "sm89"], "--engines",
     "--cc"),
    (["doctor", "--cc", "sm86", "--target", "sm89"], "--target", "--cc"),
    (["build", "m.onnx", "-o", "e", "--backend", "tensorrt", "--flavour", "tensorrt_rtx"],
     "--backend", "--flavour"),
    (["selftest", "--cuda-binding", "pycuda", "--backend", "pycuda"], "--backend",
     "--cuda-binding"),
    (["triton-repo", "m.onnx", "-o", "r", "--backend", "python", "--triton-backend", "python"],
     "--backend", "--triton-backend"),
    # the new flag given at its default value is given too (native is the default)
    (["triton-repo", "m.onnx", "-o", "r", "--triton-backend", "native", "--backend", "python"],
     "--backend", "--triton-backend"),
    (["quantize", "m.onnx", "-o", "q.onnx", "--precision", "int8", "--target", "onnxruntime",
      "--placement", "onnxruntime"], "--target", "--placement"),
])
def test_old_and_new_spelling_together_are_refused(capsys, argv, old, new):
    err = _error(capsys, argv)
    assert f"{old} and {new} are the same option ({old} is its deprecated spelling); give " \
           f"only {new}" in err


def test_old_spelling_runs_the_command(files, capsys):
    # doctor for the machine only: the old --target still names the prebuild targets
    assert main(["doctor", "--target", "sm89", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "warning: --target is deprecated; use --cc\n"
    assert json.loads(out)["machine"] is not None
    # a refused combination reports the flag by its one spelling, after the one warning
    rc = main(["quantize", files["onnx"], "-o", files["o"], "--precision", "fp16", "--target",
               "onnxruntime"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and err[0] == "warning: --target is deprecated; use --placement"
    assert err[1].startswith("error: ") and "--placement only applies with --precision int8" \
        in err[1] and len(err) == 2


def _subparsers():
    import argparse

    from xception_trt.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_every_command_spells_each_concept_the_same():
    """grep of every parser: a compute capability, TensorRT flavour, CUDA binding, Triton
    backend or INT8 placement has one flag, the same in every command; old spellings exist
    only as hidden deprecated aliases of it."""
    import argparse

    from xception_trt.cli._options import CONCEPT_FLAGS
    from xception_trt.config import Flavour, Placement
    from xception_trt.serve.options import ServeBackend

    def concept(action):
        choices = list(action.choices or ())
        if action.metavar == "SM" or action.dest.endswith("cc"):
            return "compute capability"
        if choices == Flavour.choices():
            return "TensorRT flavour"
        if "cuda-python" in choices:
            return "CUDA binding"
        if choices == ServeBackend.choices():
            return "Triton backend"
        if choices == Placement.choices():
            return "INT8 placement"
        return None

    seen = {name: set() for name in CONCEPT_FLAGS}
    old_seen = set()
    for command, parser in _subparsers().items():
        for action in parser._actions:
            name = concept(action)
            if action.help == argparse.SUPPRESS:
                new = action.deprecated_for
                assert name == concept(new), (command, action.option_strings)
                (old,) = action.option_strings
                assert CONCEPT_FLAGS[name]["old"][command] == old
                old_seen.add((command, old))
                continue
            for flag in action.option_strings:  # no visible flag keeps an old, ambiguous name
                assert flag not in ("--backend", "--target", "--engines"), (command, flag)
            if name is not None:
                assert action.option_strings == [CONCEPT_FLAGS[name]["flag"]], (command, name)
                seen[name].add(command)
            elif action.option_strings:  # and the one spelling means nothing else
                assert not set(action.option_strings) & {c["flag"] for c in
                                                         CONCEPT_FLAGS.values()}, command
    assert seen == {"compute capability": {"build", "bundle", "doctor"},
                    "TensorRT flavour": {"build"}, "CUDA binding": {"selftest"},
                    "Triton backend": {"triton-repo"}, "INT8 placement": {"quantize"}}
    assert old_seen == {(c, old) for v in CONCEPT_FLAGS.values() for c, old in v["old"].items()}


# ---------------------------------------------------------------------------------------------
# the option table (issue 25): every rule's both branches, and its flags exist where checked

#: How each non-flag condition a rule names is made true and false.
_CONDITIONS = {
    "a checkpoint SOURCE": ({"source": "m.safetensors"}, {"source": "m.onnx"}),
    "a bundle MODEL (.xtrt)": ({"model": "m.xtrt"}, {"model": "m.onnx"}),
    "a bundle among the MODELs (.xtrt)": ({"models": ["m.onnx", "m.xtrt"]},
                                          {"models": ["m.onnx", "m.pth"], "reference": None}),
    "a model file (not a repository directory)": ({"model": "m.onnx"}, {"model": "."}),
    "an FP32 ONNX MODEL": ({"model": "m.onnx"}, {"model": "m.pth"}),
    "--triton-backend python": ({"triton_backend": "python"}, {"triton_backend": "native"}),
    "--placement onnxruntime": ({"placement": "onnxruntime"}, {"placement": "tensorrt"}),
    "--precision int8": ({"precision": "int8"}, {"precision": "fp16"}),
    "--method percentile or --auto": ({"method": "percentile"}, {"method": "max",
                                                                  "auto": False}),
    "--val DIR": ({"val": "v"}, {"val": None}),
    "--val DIR or --auto": ({"auto": True}, {"val": None, "auto": False}),
    "--target-agreement or --target-top1-drop": ({"target_top1_drop": 0.3},
                                                 {"target_agreement": None,
                                                  "target_top1_drop": None}),
    "--dla-core N": ({"dla_core": 0}, {"dla_core": None}),
}


def _given_value(action):
    import argparse

    if isinstance(action, argparse._StoreTrueAction):
        return True
    value = action.choices[0] if action.choices else "1"
    many = action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction)
    return [value] if many else value


def _rule_cases():
    from xception_trt.cli._options import RULES

    for i, rule in enumerate(RULES):
        for at in rule.at:
            yield pytest.param(rule, at, id=f"{i}-{at}-{rule.flag}-{rule.kind}")


@pytest.mark.parametrize("rule, at", list(_rule_cases()))
def test_option_table_rule_both_branches(rule, at):
    import argparse

    parser = _subparsers()[at.split(":")[0]]
    actions = {f: a for a in parser._actions for f in a.option_strings}
    assert rule.flag in actions, f"{at}: {rule.flag} is no flag of that command"
    base = {a.dest: a.default for a in parser._actions}
    base.update(model="m.onnx", source="m.safetensors")
    if rule.other in _CONDITIONS:
        other_on, other_off = _CONDITIONS[rule.other]
    else:  # another flag of the command
        other = actions[rule.other]
        other_on, other_off = {other.dest: _given_value(other)}, {other.dest: other.default}
    given = {actions[rule.flag].dest: _given_value(actions[rule.flag])}

    def problem(*parts):
        return rule.problem(argparse.Namespace(**{k: v for p in (base, *parts)
                                                  for k, v in p.items()}))

    assert problem(other_on) is None and problem(other_off) is None  # flag not given
    refused = problem(given, other_off if rule.kind == "needs" else other_on)
    allowed = problem(given, other_on if rule.kind == "needs" else other_off)
    assert allowed is None
    assert refused is not None and refused.startswith(rule.flag) and rule.other in refused
    assert ("only applies with" if rule.kind == "needs" else "cannot be combined with") \
        in refused


def test_check_rules_raises_the_first_broken_rule():
    import argparse

    from xception_trt.cli._options import check_rules

    args = argparse.Namespace(no_gpu_fallback=True, dla_core=None, no_timing_cache=True,
                              timing_cache="tc")
    with pytest.raises(ConfigError, match="^--no-gpu-fallback only applies with --dla-core N"):
        check_rules(args, "build")
    check_rules(argparse.Namespace(no_gpu_fallback=True, dla_core=0, no_timing_cache=False,
                                   timing_cache=None), "build")


def test_every_check_point_is_checked_by_a_command():
    """Each row's check point is one a command calls (no row is dead)."""
    import pathlib
    import re

    from xception_trt.cli import _options

    source = "".join(p.read_text() for p in pathlib.Path(_options.__file__).parent.glob("*.py"))
    called = set(re.findall(r'check_rules\(args, "([^"]+)"\)', source))
    assert {at for rule in _options.RULES for at in rule.at} == called


# ---------------------------------------------------------------------------------------------
# runner options: declared per runner, not read from signatures


def test_runner_keywords_are_declared_as_each_runner_takes_them():
    from xception_trt.runners import _DEPRECATED_KEYWORDS, RUNNER_OPTIONS, RUNNERS

    for entry in RUNNERS.values():
        try:
            cls = entry.runner_class()
        except ImportError as exc:  # pragma: no cover - the TensorRT runner imports lazily
            pytest.skip(f"{entry.kind}: {exc}")
        params = inspect.signature(cls).parameters
        taken = {k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert entry.keywords | _DEPRECATED_KEYWORDS.get(entry.kind, frozenset()) == taken
        # the generic settings a runner takes are keyword options of it
        assert entry.options <= set(RUNNER_OPTIONS) and entry.options <= taken, entry.kind
        assert entry.options <= entry.keywords


def test_runner_options_object():
    from xception_trt.runners import RunnerOptions

    opts = RunnerOptions(threads=2, cuda_graphs=True, providers=["CPUExecutionProvider"],
                         cuda_binding="pycuda", device="cuda:1")
    assert opts.settings() == {"threads": 2, "cuda_graphs": True,
                               "providers": ["CPUExecutionProvider"]}
    assert opts.for_model("m.engine") == {"cuda_graphs": True, "device": 1,
                                          "cuda_binding": "pycuda"}
    assert opts.for_model("m.onnx") == {"threads": 2, "providers": ["CPUExecutionProvider"],
                                        "device": "cuda:1"}
    assert opts.for_model("m.pth") == {"threads": 2, "device": "cuda:1"}
    with pytest.raises(ConfigError, match="CUDA graphs need TensorRT engines"):
        opts.check(["m.pth"])


def test_open_runner_refuses_an_option_no_runner_declares(tmp_path):
    from xception_trt.runners import open_runner

    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"onnxruntime runner does not take option\(s\) "
                                          r"cuda_graphs \(it takes: check_finite, name, "
                                          r"providers, threads\)"):
        open_runner(tmp_path / "m.onnx", cuda_graphs=True)


@pytest.mark.parametrize("command", ["bench", "infer"])
def test_cuda_graphs_with_a_dla_engine_is_refused_before_any_work(tmp_path, capsys, command):
    """Issue 26 item 3: "CUDA graphs and DLA offloading are not simultaneously supported"
    (trtexec refuses the pair: TensorRT samples/common/sampleOptions.cpp; NVIDIA/TensorRT
    issue 3524). The CLI refuses --cuda-graphs for an engine whose sidecar records a DLA core,
    with one error line, before opening anything (no report is written)."""
    from test_runtime import _engine

    engine = _engine(tmp_path, build_options={"dla_core": 1})
    (tmp_path / "x.png").write_bytes(b"")
    argv = ([command, str(engine), str(tmp_path / "x.png"), "--cuda-graphs"] if command == "infer"
            else [command, str(engine), "--cuda-graphs", "-o", str(tmp_path / "out")])
    err = _error(capsys, argv)
    assert "--cuda-graphs cannot be used with tiny.engine: it runs on DLA core 1" in err
    assert not (tmp_path / "out").exists()
