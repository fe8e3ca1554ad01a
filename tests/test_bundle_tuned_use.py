"""A recorded tuned configuration in use (issue 30, item 4): opening the same bundle on the same
machine — ``open_runner``, ``Classifier``, ``infer``, ``stream``, ``triton-repo`` — fills the
options the caller left unset from it and says so in one line; an option given wins;
``tuned=False`` / ``--no-tuned`` ignores it; it is forgotten, with a notice, when the bundle,
the ONNX Runtime version or the machine changes."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from xception_trt.bundle import tuned as tuned_mod
from xception_trt.bundle.choice import ChoiceKind
from xception_trt.bundle.facts import probe_facts
from xception_trt.bundle.tuned import TunedChoice, record_choice
from xception_trt.config import Precision
from xception_trt.errors import ConfigError

#: The bundle's default is fp16; the tuned choice says fp32 with one thread, batch 3.
CHOICE = TunedChoice(Precision.FP32, "onnxruntime", 3, threads=1, objective="throughput",
                     report="/tune/report.json", measured={"median_ms": 1.0})
NOTICE = ("using the tuned configuration of tiny.xtrt (fp32 on ONNX Runtime, 1 thread, batch 3) "
          "from /tune/report.json")
#: A latency tune measured only the smallest batch: its batch is no default.
LATENCY = TunedChoice(Precision.FP32, "onnxruntime", 3, threads=1, objective="latency")
HINT = "--no-tuned (Python: tuned=False) ignores it"
OTHER_PRECISION = ("not using the tuned configuration of tiny.xtrt (fp32 on ONNX Runtime, 1 "
                   "thread, batch 3): it was measured for fp32, and precision fp16 was given; "
                   "leave the precision unset to use it")


@pytest.fixture(scope="module")
def made(tiny_checkpoint, tmp_path_factory):
    from xception_trt.bundler import write_bundle

    root = tmp_path_factory.mktemp("tuned-use")
    write_bundle(source=tiny_checkpoint, output=root / "tiny.xtrt", precisions=["fp16", "fp32"],
                 local_engines=False, work_dir=root / "work")
    return root


@pytest.fixture
def bundle(made, tmp_path, monkeypatch) -> Path:
    """A private copy of the bundle, and a private per-user cache (XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "tiny.xtrt"
    shutil.copyfile(made / "tiny.xtrt", path)
    return path


def _notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "tuned configuration" in r.getMessage()]


def test_open_runner_uses_the_recorded_choice_and_says_so(bundle, caplog):
    from xception_trt.runners import open_runner

    record_choice(bundle, CHOICE)
    with caplog.at_level(logging.INFO, logger="xception_trt"), open_runner(bundle) as runner:
        assert runner.precision is Precision.FP32 and runner.threads == 1
        assert runner.tuned == CHOICE and runner.bundle.kind is ChoiceKind.ONNXRUNTIME
    assert _notices(caplog) == [f"{NOTICE}; {HINT}"]
    # ONNX Runtime was the tuned choice, not a fallback: no fallback warning besides it
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == [
        r for r in caplog.records if "tuned configuration" in r.getMessage()]


def test_options_given_win_and_tuned_false_ignores_it(bundle, caplog):
    from xception_trt.runners import open_runner

    record_choice(bundle, CHOICE)
    with caplog.at_level(logging.WARNING, logger="xception_trt"):
        with open_runner(bundle, threads=2) as runner:
            assert runner.precision is Precision.FP32 and runner.threads == 2
            assert runner.tuned == CHOICE  # the rest of it (ONNX Runtime) still applies
    assert _notices(caplog) == [f"{NOTICE}; given options win: threads 2; {HINT}"]
    caplog.clear()
    # another precision: the choice was measured for fp32, so none of it applies
    with caplog.at_level(logging.WARNING, logger="xception_trt"):
        with open_runner(bundle, precision="fp16") as runner:
            assert runner.precision is Precision.FP16 and runner.threads is None
            assert runner.tuned is None
    assert _notices(caplog) == [OTHER_PRECISION]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xception_trt"):
        with open_runner(bundle, tuned=False) as runner:
            assert runner.precision is Precision.FP16 and runner.threads is None  # defaults
            assert runner.tuned is None
    assert _notices(caplog) == []
    with pytest.raises(ConfigError, match="tuned must be True or False"):
        open_runner(bundle, tuned="no")


def test_without_a_record_nothing_changes(bundle, caplog):
    from xception_trt.runners import open_runner

    with caplog.at_level(logging.WARNING, logger="xception_trt"), open_runner(bundle) as runner:
        assert runner.precision is Precision.FP16 and runner.tuned is None
    assert _notices(caplog) == []


def test_classifier_takes_the_tuned_batch_unless_given(bundle, monkeypatch):
    import xception_trt.stream as stream_mod
    from xception_trt.classifier import Classifier

    record_choice(bundle, CHOICE)
    with Classifier(bundle) as clf:
        assert clf.batch_size == 3 and clf.runner.precision is Precision.FP32
        assert clf.tuned == CHOICE
    with Classifier(bundle, batch_size=5) as clf:
        assert clf.batch_size == 5
    with Classifier(bundle, precision="fp16") as clf:  # another precision: not the tuned batch
        assert clf.batch_size == 32 and clf.tuned is None
    record_choice(bundle, LATENCY)  # a latency tune: the rest applies, its batch does not
    with Classifier(bundle) as clf:
        assert clf.batch_size == 32 and clf.tuned == LATENCY
        assert clf.runner.precision is Precision.FP32
    record_choice(bundle, CHOICE)
    with Classifier(bundle, tuned=False) as clf:
        assert clf.batch_size == 32 and clf.runner.precision is Precision.FP16
        assert clf.tuned is None
    seen = []

    def fake_run_stream(runner, src, *, batch, **kw):  # records the batch the stream gets
        seen.append(batch)
        yield from ()

    monkeypatch.setattr(stream_mod, "run_stream", fake_run_stream)
    monkeypatch.setattr(stream_mod, "open_source", lambda *a, **kw: None)
    with Classifier(bundle) as clf:
        list(clf.stream("frames"))
        list(clf.stream("frames", batch=1))
    with Classifier(bundle, tuned=False) as clf:
        list(clf.stream("frames"))
    assert seen == [3, 1, 1]


def test_forgotten_when_the_bundle_is_remade(bundle, made, caplog):
    from xception_trt.bundler import write_bundle
    from xception_trt.runners import open_runner

    record_choice(bundle, CHOICE)
    # re-bundled in place (another default precision: the manifest, so the digest, differs)
    write_bundle(source=made / "work" / "onnx" / "model.onnx", output=bundle,
                 precisions=["fp32", "fp16"], local_engines=False, force=True)
    with caplog.at_level(logging.WARNING, logger="xception_trt"), open_runner(bundle) as runner:
        assert runner.tuned is None and runner.threads is None
    assert _notices(caplog) == [
        "not using the tuned configuration recorded for tiny.xtrt: the bundle changed since it "
        "was tuned (another digest); run `xception-trt tune` again"]


def test_forgotten_when_onnxruntime_or_the_machine_changes(bundle, caplog, monkeypatch):
    from xception_trt.runners import open_runner

    record_choice(bundle, CHOICE)
    here = probe_facts()
    newer = replace(here, ort_version=here.ort_version + ".1")
    with caplog.at_level(logging.WARNING, logger="xception_trt"):
        with open_runner(bundle, facts=newer) as runner:
            assert runner.tuned is None and runner.precision is Precision.FP16
        monkeypatch.setattr(tuned_mod, "host_cpu", lambda: {"cpu": "Another CPU",
                                                            "cpu_count": 1024, "arch": "x86_64"})
        with open_runner(bundle) as runner:
            assert runner.tuned is None
    notices = _notices(caplog)
    assert notices[0] == ("not using the tuned configuration recorded for tiny.xtrt: ONNX Runtime "
                          f"{here.ort_version} -> {newer.ort_version}; run `xception-trt tune` "
                          "again")
    assert notices[1].startswith("not using the tuned configuration recorded for tiny.xtrt: "
                                 "another machine (CPU ")
    assert len(notices) == 2


# ---------------------------------------------------------------------------------------------
# the CLI


def _main_out(argv, capsys) -> tuple[int, str, list[str]]:
    from xception_trt.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if "tuned configuration" in line]


def test_infer_uses_it_keeps_stdout_clean_and_no_tuned_ignores_it(bundle, image_folder, capsys):
    record_choice(bundle, CHOICE)
    code, out, notes = _main_out(["infer", str(bundle), str(image_folder), "--json"], capsys)
    assert code == 0 and json.loads(out)["runner"] == "tiny:onnxruntime-fp32"  # stdout: JSON
    assert notes == [f"{NOTICE}; {HINT}"]
    code, out, notes = _main_out(["infer", str(bundle), str(image_folder), "--json",
                                  "--precision", "fp16"], capsys)
    assert code == 0 and json.loads(out)["runner"] == "tiny:onnxruntime-fp16"
    assert notes == [OTHER_PRECISION]
    code, out, notes = _main_out(["infer", str(bundle), str(image_folder), "--json",
                                  "--no-tuned"], capsys)
    assert code == 0 and json.loads(out)["runner"] == "tiny:onnxruntime-fp16" and notes == []


def test_no_tuned_needs_a_bundle(made, image_folder, capsys):
    onnx = str(made / "work" / "onnx" / "model.onnx")
    for argv in (["infer", onnx, str(image_folder), "--no-tuned"],
                 ["stream", onnx, str(image_folder), "--no-tuned"],
                 ["triton-repo", onnx, "-o", str(made / "never"), "--no-tuned"]):
        from xception_trt.cli import main

        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["error: --no-tuned only applies with a bundle MODEL (.xtrt) (only a "
                       "bundle has a tuned configuration); add a bundle MODEL (.xtrt) or drop "
                       "--no-tuned"], err
    assert not (made / "never").exists()


def test_infer_forgets_it_when_the_bundle_changes(bundle, made, image_folder, capsys):
    from xception_trt.bundler import write_bundle

    record_choice(bundle, CHOICE)
    write_bundle(source=made / "work" / "onnx" / "model.onnx", output=bundle,
                 precisions=["fp16", "fp32"], local_engines=False, force=True)
    code, out, notes = _main_out(["infer", str(bundle), str(image_folder), "--json"], capsys)
    assert code == 0 and json.loads(out)["runner"] == "tiny:onnxruntime-fp16"
    assert notes == ["not using the tuned configuration recorded for tiny.xtrt: the bundle "
                     "changed since it was tuned (another digest); run `xception-trt tune` again"]


def test_stream_uses_it(bundle, image_folder, capsys):
    record_choice(bundle, CHOICE)
    code, out, notes = _main_out(["stream", str(bundle), str(image_folder), "--json-lines"],
                                 capsys)
    assert code == 0 and notes == [f"{NOTICE}; {HINT}"]
    frames = [json.loads(line) for line in out.splitlines()]  # stdout: JSON lines only
    assert len(frames) == 17 and "totals" in frames[-1]


def _config(repo: Path):
    from xception_trt.serve.repository import validate_config_text

    return validate_config_text((repo / "xception" / "config.pbtxt").read_text(),
                                where="xception")


def test_triton_repo_takes_the_tuned_batch_as_default(bundle, tmp_path, capsys):
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (the serve extra)")
    from xception_trt.onnx_meta import read_metadata

    record_choice(bundle, CHOICE)
    code, _, notes = _main_out(["triton-repo", str(bundle), "-o", str(tmp_path / "r1")], capsys)
    assert code == 0 and notes == [f"{NOTICE}; {HINT}"]
    cfg = _config(tmp_path / "r1")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [3]
    assert cfg.instance_group[0].count == 1  # instance counts are not searched
    assert read_metadata(tmp_path / "r1" / "xception" / "1" / "model.onnx").precision \
        is Precision.FP32
    # given flags win
    code, _, notes = _main_out(["triton-repo", str(bundle), "-o", str(tmp_path / "r2"),
                                "--instances", "2", "--preferred-batch", "2", "--precision",
                                "fp16"], capsys)
    assert code == 0
    cfg = _config(tmp_path / "r2")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2]
    assert cfg.instance_group[0].count == 2
    assert read_metadata(tmp_path / "r2" / "xception" / "1" / "model.onnx").precision \
        is Precision.FP16
    # another precision alone: none of the choice (batch, instances) is used
    code, _, notes = _main_out(["triton-repo", str(bundle), "-o", str(tmp_path / "r5"),
                                "--precision", "fp16"], capsys)
    assert code == 0 and notes == [OTHER_PRECISION]
    cfg = _config(tmp_path / "r5")
    assert list(cfg.dynamic_batching.preferred_batch_size) == []
    assert cfg.instance_group[0].count == 1
    # a latency tune's batch (the profile's smallest) is no preferred batch
    record_choice(bundle, LATENCY)
    assert _main_out(["triton-repo", str(bundle), "-o", str(tmp_path / "r6")], capsys)[0] == 0
    assert list(_config(tmp_path / "r6").dynamic_batching.preferred_batch_size) == []
    assert read_metadata(tmp_path / "r6" / "xception" / "1" / "model.onnx").precision \
        is Precision.FP32
    record_choice(bundle, CHOICE)
    # a tuned batch above a given --max-batch is not preferred
    assert _main_out(["triton-repo", str(bundle), "-o", str(tmp_path / "r3"), "--max-batch",
                      "2"], capsys)[0] == 0
    assert list(_config(tmp_path / "r3").dynamic_batching.preferred_batch_size) == []
    # --no-tuned: today's defaults
    code, _, notes = _main_out(["triton-repo", str(bundle), "-o", str(tmp_path / "r4"),
                                "--no-tuned"], capsys)
    assert code == 0 and notes == []
    cfg = _config(tmp_path / "r4")
    assert list(cfg.dynamic_batching.preferred_batch_size) == []
    assert cfg.instance_group[0].count == 1
    assert read_metadata(tmp_path / "r4" / "xception" / "1" / "model.onnx").precision \
        is Precision.FP16


def test_triton_repo_python_backend_takes_the_tuned_threads(bundle, tmp_path, capsys):
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (the serve extra)")
    from xception_trt.serve.options import PARAM_PREFIX

    record_choice(bundle, CHOICE)
    code, _, _ = _main_out(["triton-repo", str(bundle), "-o", str(tmp_path / "r"),
                            "--triton-backend", "python"], capsys)
    assert code == 0
    params = _config(tmp_path / "r").parameters
    assert json.loads(params[PARAM_PREFIX + "runner_options"].string_value) == {"threads": 1}


def test_bench_and_eval_open_it_too_and_no_tuned_ignores_it(bundle, made, image_folder,
                                                           tmp_path, capsys):
    record_choice(bundle, CHOICE)
    onnx = str(made / "work" / "onnx" / "model.onnx")
    for flags, runner in (([], "onnxruntime-fp32"), (["--no-tuned"], "onnxruntime-fp16")):
        out = tmp_path / f"bench{len(flags)}"
        code, _, notes = _main_out(["bench", str(bundle), "--batch", "1", "--iterations", "1",
                                    "--warmup", "0", "--no-power", "-o", str(out), *flags],
                                   capsys)
        assert code == 0 and notes == ([f"{NOTICE}; {HINT}"] if not flags else [])
        doc = json.loads((out / "report.json").read_text())
        assert runner in json.dumps(doc["runners"])
        assert ("--no-tuned" in doc["command"]) == bool(flags)
    code, _, notes = _main_out(["eval", str(bundle), "--data", str(image_folder), "-o",
                                str(tmp_path / "eval"), "--no-tuned"], capsys)
    assert code == 0 and notes == []
    doc = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert "onnxruntime-fp16" in json.dumps(doc["runners"])
    from xception_trt.cli import main

    assert main(["eval", onnx, "--data", str(image_folder), "-o", str(tmp_path / "e2"),
                 "--no-tuned"]) == 2
    assert "--no-tuned only applies with a bundle among the MODELs (.xtrt)" in \
        capsys.readouterr().err
    assert not (tmp_path / "e2").exists()
    # a bundle given as the --reference counts
    assert main(["eval", onnx, "--reference", str(bundle), "--data", str(image_folder), "-o",
                 str(tmp_path / "e3"), "--no-tuned"]) == 0


def test_serve_writes_the_tuned_configuration(bundle, tmp_path, capsys, monkeypatch):
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (the serve extra)")
    from xception_trt.cli import serve as serve_cli
    from xception_trt.errors import ServeError
    from xception_trt.serve.options import PARAM_PREFIX
    from xception_trt.serve.server import find_tritonserver

    try:
        find_tritonserver()
    except ServeError as exc:
        pytest.skip(f"no local Triton server here: {exc}")
    record_choice(bundle, CHOICE)
    served = []
    monkeypatch.setattr(serve_cli, "_serve", lambda args, repo, hint: served.append(repo) or 0)
    code, _, notes = _main_out(["serve", str(bundle), "--repository", str(tmp_path / "repo")],
                               capsys)
    assert code == 0 and notes == [f"{NOTICE}; {HINT}"] and served == [tmp_path / "repo"]
    cfg = _config(tmp_path / "repo")
    assert cfg.instance_group[0].count == 1  # instance counts are not searched
    assert list(cfg.dynamic_batching.preferred_batch_size) == [3]
    assert json.loads(cfg.parameters[PARAM_PREFIX + "runner_options"].string_value) == {
        "threads": 1}
