"""The README and examples/ run as written, with the files a newcomer has.

A newcomer has the demo's work folder (its checkpoint ``models/*.safetensors``, its images
``data/calibration`` and ``data/validation/<digit>/*.png``, its ONNX variants under
``artifacts/``): the module fixture makes one with a small, fast demo configuration (only the
model's size and training differ from ``xception-trt demo``), and the README's Python block,
its pipeline commands and every script of ``examples/`` run in or on it. The block that loads
ImageNet weights by Hugging Face Hub id needs the network and is only checked for its form.
The README's two first-screen commands are the ones ``benchmarks/bench_demo.py`` times and
``.ci/run`` runs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
HUB_ID = "timm/legacy_xception.tf_in1k"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _blocks(title: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _section(title), re.S)


def _rtx() -> bool:
    from xception_trt.trt import available_flavours

    return any(f.name == "tensorrt_rtx" for f in available_flavours())


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """A demo work folder as ``xception-trt demo`` leaves it, from a small configuration."""
    from small_demo import SMALL_DEMO

    from xception_trt.demo import run_demo

    work = tmp_path_factory.mktemp("demo")
    result = run_demo(work, config=SMALL_DEMO)
    assert result.ok, [s.line() for s in result.steps]
    return work


# --- the first screen ------------------------------------------------------------------------

def test_readme_first_screen_is_what_bench_demo_times():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_demo", ROOT / "benchmarks" /
                                                  "bench_demo.py")
    bench_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_demo)
    (block,) = _blocks("Try it", "bash")
    assert block.strip() == bench_demo.first_screen_command()
    # the CPU wheel: a CPU machine gets no CUDA build of torch (docs/install.md)
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in block


def test_bench_demo_install_runs_the_readme_steps_in_a_scratch_copy(tmp_path, monkeypatch):
    """bench_demo.py --install times the README's install steps, in order, in a copy of this
    checkout, with the venv's pip (what `. .venv/bin/activate` makes `pip`) and no pip cache.
    pip and venv are replaced by a recorder: the bookkeeping is under test, not pip."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_demo", ROOT / "benchmarks" /
                                                  "bench_demo.py")
    bench_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_demo)
    calls = []

    def fake_run(argv, cwd=None, env=None, **kw):
        calls.append((argv, Path(cwd), env))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(bench_demo.subprocess, "run", fake_run)
    dest = tmp_path / "clone"
    got = bench_demo.install(dest)
    assert (dest / "pyproject.toml").is_file() and (dest / "xception_trt" / "cli").is_dir()
    venv_python = str(dest / ".venv" / "bin" / "python")
    assert [c[0] for c in calls] == [
        ["python3", "-m", "venv", ".venv"],
        [venv_python, "-m", "pip", "install", "torch==2.13.0", "--index-url",
         "https://download.pytorch.org/whl/cpu"],
        [venv_python, "-m", "pip", "install", "-e", ".[demo]"]]
    assert all(c[1] == dest and c[2]["PIP_NO_CACHE_DIR"] == "1" and "PYTHONPATH" not in c[2]
               for c in calls)
    assert [s["step"] for s in got["steps"]] == [s for s in bench_demo.INSTALL_STEPS
                                                 if not s.startswith(". ")]
    assert len(got["load_average_before"]) == 3 and got["executable"].endswith(
        "/.venv/bin/xception-trt")


def test_ci_runs_exactly_the_readme_test_command():
    """.ci/run's commands after its own pip upgrade are the README's test command, step by
    step, in the same order."""
    (block,) = _blocks("Run the tests", "bash")
    readme_steps = [s.strip() for s in block.strip().split(" && ")]
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci = [ln for ln in lines if ln and not ln.startswith("#") and not ln.startswith("set ")
          and not ln.startswith("cd ") and "pip install -q --upgrade pip" not in ln]
    ci_steps = [s.strip() for ln in ci for s in ln.split(" && ")]
    assert ci_steps == readme_steps
    assert ".venv-test" in readme_steps[0]  # not the demo's venv: [dev] pins numpy<2


def test_readme_stays_short_and_links_resolve():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for doc in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_nothing_refers_to_files_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    needles = ("../" + "shared", "shared/" + "DESIGN", "DESIGN" + ".md")  # not this file's text
    bad = []
    for name in files.stdout.splitlines():
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".toml", ".txt", ".cfg", ""} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if any(n in text for n in needles):
            bad.append(name)
    assert bad == [], f"these files refer to a file outside the repository: {bad}"


# --- the Python API ----------------------------------------------------------------------------

def test_readme_python_block_runs_in_the_demo_folder(demo_dir, monkeypatch, capsys, caplog):
    """The three lines: FP16 and INT8 engines from the demo's checkpoint, calibrated on its
    images; classify three of its validation images with the FP16 one."""
    if not _rtx():
        pytest.skip("the block builds engines (TensorRT-RTX builds on the CPU)")
    code = _blocks("Python API", "python")[0]
    assert code.count("\n") == 3 and "xception_trt as xt" in code.splitlines()[0]
    monkeypatch.chdir(demo_dir)
    namespace: dict = {"__name__": "readme_main_job"}
    with caplog.at_level("WARNING", logger="xception_trt"):
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    result = namespace["result"]
    assert [e.precision.value for e in result.engines] == ["fp16", "int8"]
    for precision in ("fp16", "int8"):
        engine = result.engine(precision).engine
        assert engine.parent == Path("my-engines") and engine.is_file()
        assert (engine.parent / (engine.name + ".json")).is_file()  # the sidecar
    out = capsys.readouterr().out
    assert out.startswith("[[Prediction(") and out.count("Prediction(") == 6  # 3 images, top 2
    clf = namespace["clf"]
    if type(clf.runner).__name__ == "OnnxRuntimeRunner":  # no GPU: the FP16 graph ran, logged
        assert any("cannot run here" in r.getMessage() for r in caplog.records)


def test_readme_hub_block_names_the_hub_id_and_says_it_needs_network():
    blocks = _blocks("Python API", "python")
    assert len(blocks) == 2
    assert HUB_ID in blocks[1] and "needs network" in blocks[1]
    assert HUB_ID in _section("The pipeline, one command each")


def test_readme_python_block_has_no_unused_imports():
    code = _blocks("Python API", "python")[0]
    first = code.splitlines()[0]
    names = [part.split(" as ")[-1].strip() for part in first.removeprefix("import ").split(",")]
    for name in names:
        assert len(re.findall(rf"\b{name}\b", code)) > 1, f"{name} is imported but not used"


# --- the pipeline, one command each ------------------------------------------------------------

def test_readme_pipeline_commands_run_in_the_demo_folder(demo_dir, monkeypatch, capsys):
    """Every command of the pipeline block, in order, in the demo's folder (``serve`` starts a
    server that runs until stopped: its arguments are parsed, not run)."""
    if not _rtx():
        pytest.skip("the block builds engines (TensorRT-RTX builds on the CPU)")
    from xception_trt.cli import build_parser, main

    (block,) = _blocks("The pipeline, one command each", "bash")
    lines = [ln.split("  #")[0].strip() for ln in block.strip().splitlines()]
    assert lines[0].startswith("cd ~/.cache/xception-trt/demo && CKPT=$(ls models/")
    ckpt = str(sorted(Path(demo_dir).glob("models/*.safetensors"))[0].relative_to(demo_dir))
    monkeypatch.chdir(demo_dir)
    ran = []
    for line in lines[1:]:
        argv = shlex.split(line.replace("$CKPT", ckpt))
        assert argv[0] == "xception-trt", line
        if argv[1] == "serve":
            build_parser().parse_args(argv[1:])
            continue
        code = main(argv[1:])
        assert code == 0, (line, capsys.readouterr())
        ran.append(argv[1])
    assert ran == ["export", "quantize", "quantize", "build", "bundle", "doctor", "infer",
                   "stream", "eval", "bench", "tune"]
    for made in ("my/model.onnx", "my/model.fp16.onnx", "my/model.int8.onnx", "my/model.xtrt",
                 "my/eval/report.md", "my/bench/report.md", "my/tune/report.md"):
        assert Path(made).is_file(), made


# --- examples/ ---------------------------------------------------------------------------------

#: What each example prints when it worked (besides exiting 0).
EXPECT = {
    "stages.py": ["engine ", "logits float32 (2, 10)", "digit_"],
    "bundle.py": ["model.xtrt: ", "fp16: ", "int8: ", "digit_"],
    "stream_folder.py": ["frame 0: ", "frames, "],
    "accuracy_latency.py": ["fp32: top-1 ", "agrees with fp32", "batch 8 median"],
}


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES) == sorted(EXPECT)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_on_the_demo_folder(example, demo_dir, tmp_path):
    if not _rtx() and example.name in {"stages.py", "bundle.py"}:
        pytest.skip("the example builds engines (TensorRT-RTX builds on the CPU)")
    args = [sys.executable, str(example), "--demo", str(demo_dir)]
    if '"--out"' in example.read_text():
        args += ["--out", str(tmp_path / "out")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for needle in EXPECT[example.name]:
        assert needle in proc.stdout, (needle, proc.stdout)
    # nothing written outside the folder it was given
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["out"])
