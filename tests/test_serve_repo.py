"""Triton model repository generation and validation (no server needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from xception_trt.cli import main
from xception_trt.errors import ConfigError, ServeError
from xception_trt.fsio import sha256_file
from xception_trt.serve import python_model
from xception_trt.serve.repository import (
    RepositoryOptions,
    describe_model,
    plan_repository,
    validate_config_text,
    validate_repository,
    write_repository,
)

pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (the serve extra)")


def _cfg(repo: Path, name: str):
    return validate_config_text((repo / name / "config.pbtxt").read_text(), where=name)


@pytest.fixture(scope="module")
def engines(tiny_onnx_files, tmp_path_factory) -> dict:
    """Real TensorRT-RTX plans + sidecars of the tiny model (built on CPU), and a copy whose
    sidecar says it was built with NVIDIA TensorRT (what a user's GPU build records)."""
    pytest.importorskip("tensorrt_rtx", reason="needs TensorRT-RTX to build a plan on CPU")
    from xception_trt.config import BuildConfig
    from xception_trt.trt.builder import build_engine, sidecar_path

    root = tmp_path_factory.mktemp("serve_engines")
    rtx = BuildConfig(flavour="tensorrt_rtx")
    out = {
        "rtx": build_engine(tiny_onnx_files["float"], rtx.replace(opt_batch=4, max_batch=8),
                            output=root / "tiny.engine").path,
        "uint8_b2": build_engine(tiny_onnx_files["uint8"], rtx.replace(batch=2),
                                 output=root / "tiny_uint8_b2.engine").path,
        "min2": build_engine(tiny_onnx_files["float"], rtx.replace(min_batch=2, max_batch=4),
                             output=root / "tiny_min2.engine").path,
    }
    for key in ("rtx", "uint8_b2"):
        trt_dir = root / f"trt_{key}"
        trt_dir.mkdir()
        plan = trt_dir / out[key].name
        shutil.copyfile(out[key], plan)
        side = json.loads(sidecar_path(out[key]).read_text())
        side["tensorrt"]["flavour"] = "tensorrt"
        sidecar_path(plan).write_text(json.dumps(side))
        out[f"trt_{key}"] = plan
    return out


# ---------------------------------------------------------------------------------------------
# ONNX -> onnxruntime_onnx


def test_onnx_native_repository(tiny_onnx_files, tiny_spec, tmp_path):
    from tritonclient.grpc import model_config_pb2 as mc

    onnx = tiny_onnx_files["float"]
    opts = RepositoryOptions(name="tiny", preferred_batch_sizes=(8, 4), max_queue_delay_us=250,
                             instance_count=2, max_batch_size=16)
    info = write_repository(onnx, tmp_path / "repo", options=opts)
    assert info.models == ("tiny",)
    cfg = info.configs["tiny"]
    assert cfg.platform == "onnxruntime_onnx" and not cfg.backend
    assert cfg.max_batch_size == 16
    (inp,), (out,) = cfg.input, cfg.output
    assert (inp.name, list(inp.dims)) == ("input", [3, 71, 71])
    assert inp.data_type == mc.TYPE_FP32
    assert (out.name, list(out.dims), out.label_filename) == ("logits", [4], "labels.txt")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 250
    (group,) = cfg.instance_group
    assert group.count == 2
    repo = tmp_path / "repo"
    assert (repo / "tiny/labels.txt").read_text().splitlines() == list(tiny_spec.class_names())
    assert sha256_file(repo / "tiny/1/model.onnx") == sha256_file(onnx)
    assert not list(tmp_path.glob(".repo.*"))  # no temporary directory left behind


def test_onnx_dtypes_and_kinds(tiny_onnx_files, tmp_path):
    from tritonclient.grpc import model_config_pb2 as mc

    info = write_repository(tiny_onnx_files["uint8"], tmp_path / "u8",
                            options=RepositoryOptions(dynamic_batching=False))
    cfg = info.configs["xception"]
    assert cfg.input[0].data_type == mc.TYPE_UINT8
    assert list(cfg.input[0].dims) == [71, 71, 3]
    assert cfg.output[0].data_type == mc.TYPE_FP32
    assert not cfg.HasField("dynamic_batching")
    assert cfg.max_batch_size == 32  # default for a dynamic-batch graph
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_AUTO
    info = write_repository(tiny_onnx_files["float"], tmp_path / "gpu",
                            options=RepositoryOptions(instance_kind="gpu", gpus=(0, 1)))
    group = info.configs["xception"].instance_group[0]
    assert group.kind == mc.ModelInstanceGroup.KIND_GPU and list(group.gpus) == [0, 1]
    info = write_repository(tiny_onnx_files["float"], tmp_path / "auto",
                            options=RepositoryOptions(gpus=(2,), instance_count=3))
    group = info.configs["xception"].instance_group[0]  # naming GPUs implies GPU instances
    assert (group.kind, group.count, list(group.gpus)) == (mc.ModelInstanceGroup.KIND_GPU, 3, [2])


def test_static_batch_onnx(tiny_onnx_files, tmp_path):
    static = tiny_onnx_files["static2"]
    with pytest.raises(ServeError, match="fixed batch of 2.*--no-dynamic-batching"):
        write_repository(static, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    info = write_repository(static, tmp_path / "b",
                            options=RepositoryOptions(dynamic_batching=False))
    cfg = info.configs["xception"]
    assert cfg.max_batch_size == 0
    assert list(cfg.input[0].dims) == [2, 3, 71, 71]
    assert list(cfg.output[0].dims) == [2, 4]


# ---------------------------------------------------------------------------------------------
# engines -> tensorrt_plan


def test_engine_native_repository(engines, tmp_path):
    from tritonclient.grpc import model_config_pb2 as mc

    plan = engines["trt_rtx"]
    info = write_repository(plan, tmp_path / "repo",
                            options=RepositoryOptions(max_queue_delay_us=500, instance_count=2,
                                                      gpus=(1,)))
    cfg = info.configs["xception"]
    assert cfg.platform == "tensorrt_plan"
    assert cfg.default_model_filename == "model.plan"
    assert cfg.max_batch_size == 8  # the profile's max batch
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4]  # the profile's opt batch
    assert list(cfg.input[0].dims) == [3, 71, 71]
    group = cfg.instance_group[0]
    assert (group.kind, group.count, list(group.gpus)) == (mc.ModelInstanceGroup.KIND_GPU, 2, [1])
    assert sha256_file(tmp_path / "repo/xception/1/model.plan") == sha256_file(plan)
    assert (tmp_path / "repo/xception/labels.txt").read_text().count("\n") == 4


def test_engine_batch_limits(engines, tmp_path):
    with pytest.raises(ServeError, match="exceeds the engine profile's max batch 8"):
        write_repository(engines["trt_rtx"], tmp_path / "a",
                         options=RepositoryOptions(max_batch_size=16))
    with pytest.raises(ServeError, match="profile starts at batch 2"):
        describe_model(engines["min2"])
    info = write_repository(engines["trt_uint8_b2"], tmp_path / "b",
                            options=RepositoryOptions(dynamic_batching=False))
    cfg = info.configs["xception"]
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [2, 71, 71, 3]


def test_rtx_plan_is_refused_natively_but_served_by_python_backend(engines, tmp_path):
    with pytest.raises(ServeError, match="TensorRT-RTX.*--triton-backend python"):
        write_repository(engines["rtx"], tmp_path / "a")
    info = write_repository(engines["rtx"], tmp_path / "b",
                            options=RepositoryOptions(triton_backend="python"))
    version = tmp_path / "b/xception/1"
    assert (version / "tiny.engine").is_file() and (version / "tiny.engine.json").is_file()
    from tritonclient.grpc import model_config_pb2 as mc

    assert info.configs["xception"].instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU


def test_engine_without_sidecar(engines, tmp_path):
    lone = tmp_path / "lone.engine"
    shutil.copyfile(engines["rtx"], lone)
    with pytest.raises(ServeError, match="no sidecar"):
        write_repository(lone, tmp_path / "repo")


# ---------------------------------------------------------------------------------------------
# Python backend and the image ensemble


def test_python_backend_with_ensemble(tiny_onnx_files, tiny_spec, tmp_path):
    from tritonclient.grpc import model_config_pb2 as mc

    from xception_trt.config import ModelSpec

    opts = RepositoryOptions(triton_backend="python", ensemble=True, execution_env_path="/opt/env",
                             runner_options={"threads": 1}, preprocess_instances=2)
    info = write_repository(tiny_onnx_files["uint8"], tmp_path / "repo", options=opts)
    assert info.models == ("xception", "xception_image", "xception_preprocess")
    repo = tmp_path / "repo"
    cls = info.configs["xception"]
    assert cls.backend == "python" and not cls.platform
    params = {k: v.string_value for k, v in cls.parameters.items()}
    assert params == {"xception_trt.artifact": "tiny_uint8.onnx",
                      "xception_trt.runner_options": '{"threads": 1}',
                      "EXECUTION_ENV_PATH": "/opt/env"}
    assert cls.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert (repo / "xception/1/model.py").read_text() == Path(python_model.__file__).read_text()
    assert (repo / "xception/1/tiny_uint8.onnx").is_file()
    pre = info.configs["xception_preprocess"]
    assert pre.input[0].data_type == mc.TYPE_STRING and list(pre.input[0].dims) == [1]
    assert pre.output[0].data_type == mc.TYPE_UINT8 and list(pre.output[0].dims) == [71, 71, 3]
    assert pre.instance_group[0].count == 2
    spec = ModelSpec.from_json((repo / "xception_preprocess/1/model_spec.json").read_text())
    assert spec == tiny_spec
    ens = info.configs["xception_image"]
    assert ens.platform == "ensemble"
    steps = ens.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["xception_preprocess", "xception"]
    assert dict(steps[1].output_map) == {"logits": "logits"}
    assert ens.output[0].label_filename == "labels.txt"


def test_checkpoint_needs_python_backend(tiny_checkpoint, tmp_path):
    with pytest.raises(ServeError, match="checkpoint.*--triton-backend python"):
        write_repository(tiny_checkpoint, tmp_path / "a")
    info = write_repository(tiny_checkpoint, tmp_path / "b",
                            options=RepositoryOptions(triton_backend="python"))
    cfg = info.configs["xception"]
    assert cfg.max_batch_size == 32 and list(cfg.input[0].dims) == [3, 71, 71]
    assert (tmp_path / "b/xception/1" / tiny_checkpoint.name).is_file()


def test_python_model_batch_helpers():
    a, b = np.zeros((2, 3)), np.ones((1, 3))
    batch, counts = python_model.merge_requests([a, b])
    assert batch.shape == (3, 3) and counts == [2, 1]
    parts = python_model.split_results(batch * 2, counts)
    np.testing.assert_array_equal(parts[0], a)
    np.testing.assert_array_equal(parts[1], b * 2)
    with pytest.raises(RuntimeError, match="2 rows for 3 inputs"):
        python_model.split_results(batch[:2], counts)
    calls = []

    def runner(x):
        calls.append(x.shape[0])
        return x[:, :1] + 1

    out = python_model.run_chunked(runner, np.arange(10.0).reshape(5, 2), 2)
    assert calls == [2, 2, 1]
    np.testing.assert_array_equal(out[:, 0], np.arange(0.0, 10.0, 2) + 1)


# ---------------------------------------------------------------------------------------------
# validation: a typo or a wrong field fails in our code


@pytest.mark.parametrize("old, new, match", [
    ("max_batch_size: 32", "max_batchsize: 32", "no field named \"max_batchsize\""),
    ("data_type: TYPE_FP32", "data_type: TYPE_FLOAT32", "TYPE_FLOAT32"),
    ("kind: KIND_CPU", "kind: CPU", "CPU"),
    ("max_queue_delay_microseconds: 100", "max_queue_delay_microseconds: -5", "-5"),
    ('name: "xception"', 'name: "other"', "differs from its directory"),
    ("max_batch_size: 32", "max_batch_size: 2", "preferred_batch_size 4 is outside 1..2"),
    ("dims: [ 4 ]", "dims: [ 5 ]", "has 4 labels for 5 outputs"),
    ('label_filename: "labels.txt"', 'label_filename: "names.txt"', "names.txt' is missing"),
    ('default_model_filename: "model.py"', 'default_model_filename: "m.py"', "'m.py' is missing"),
])
def test_broken_config_is_rejected(tiny_onnx_files, tmp_path, old, new, match):
    repo = tmp_path / "repo"
    write_repository(tiny_onnx_files["float"], repo,
                     options=RepositoryOptions(triton_backend="python", preferred_batch_sizes=(4,),
                                               instance_kind="cpu"))
    config = repo / "xception/config.pbtxt"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    with pytest.raises(ServeError, match=match):
        validate_repository(repo)


def test_broken_ensemble_is_rejected(tiny_onnx_files, tmp_path):
    repo = tmp_path / "repo"
    write_repository(tiny_onnx_files["float"], repo,
                     options=RepositoryOptions(triton_backend="python", ensemble=True))
    config = repo / "xception_image/config.pbtxt"
    good = config.read_text()
    config.write_text(good.replace('key: "input" value: "preprocessed"',
                                   'key: "pixels" value: "preprocessed"'))
    with pytest.raises(ServeError, match="unknown input 'pixels'"):
        validate_repository(repo)
    config.write_text(good.replace('model_name: "xception"\n', 'model_name: "missing"\n'))
    with pytest.raises(ServeError, match="'missing', which is not in the repository"):
        validate_repository(repo)


def test_generation_error_never_publishes(tiny_onnx_files, tmp_path, monkeypatch):
    import xception_trt.serve.repository as repository

    real = repository.plan_repository

    def broken(source, options):
        files = real(source, options)
        key = f"{options.name}/config.pbtxt"
        files[key] = files[key].replace("max_batch_size", "max_batch_sise")
        return files

    monkeypatch.setattr(repository, "plan_repository", broken)
    with pytest.raises(ServeError, match="max_batch_sise"):
        write_repository(tiny_onnx_files["float"], tmp_path / "repo")
    assert list(tmp_path.iterdir()) == []  # neither the repository nor a temp dir


def test_no_clobber_and_force(tiny_onnx_files, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "keep.txt").write_text("mine")
    with pytest.raises(ServeError, match="not empty.*--force"):
        write_repository(tiny_onnx_files["float"], repo)
    assert (repo / "keep.txt").read_text() == "mine"
    write_repository(tiny_onnx_files["float"], repo, force=True)
    assert not (repo / "keep.txt").exists() and (repo / "xception/config.pbtxt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_repository(tiny_onnx_files["float"], empty)  # an empty directory is fine


def test_validate_repository_errors(tmp_path):
    with pytest.raises(ServeError, match="does not exist"):
        validate_repository(tmp_path / "nope")
    with pytest.raises(ServeError, match="holds no model"):
        validate_repository(tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="bad/name"), "not a valid Triton model name"),
    (dict(max_batch_size=4, preferred_batch_sizes=(8,)), "exceed max_batch_size 4"),
    (dict(dynamic_batching=False, preferred_batch_sizes=(2,)), "need dynamic batching"),
    (dict(instance_kind="cpu", gpus=(0,)), "GPU indices were given for CPU"),
    (dict(instance_count=0), "instance_count must be an integer >= 1"),
    (dict(max_queue_delay_us=-1), "max_queue_delay_us"),
    (dict(triton_backend="tensorrt"), "unknown ServeBackend"),
    (dict(runner_options={"x": object()}), "JSON-serialisable"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RepositoryOptions(**kwargs)


def test_describe_model_errors(tmp_path, tiny_onnx_files):
    with pytest.raises(ServeError, match="does not exist"):
        describe_model(tmp_path / "missing.onnx")
    odd = tmp_path / "model.txt"
    odd.write_text("x")
    with pytest.raises(ServeError, match="cannot serve a .txt file"):
        describe_model(odd)
    import onnx

    plain = tmp_path / "plain.onnx"
    model = onnx.load(str(tiny_onnx_files["float"]))
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    with pytest.raises(ServeError, match="no xception-trt ModelSpec"):
        describe_model(plain)
    external = tmp_path / "external.onnx"
    onnx.save(onnx.load(str(tiny_onnx_files["float"])), str(external),
              save_as_external_data=True, size_threshold=0)
    with pytest.raises(ServeError, match="external data files"):
        describe_model(external)


def test_plan_is_pure(tiny_onnx_files, tmp_path):
    source = describe_model(tiny_onnx_files["float"])
    files = plan_repository(source, RepositoryOptions(ensemble=True))
    assert sorted(files) == ["xception/1/model.onnx", "xception/config.pbtxt",
                             "xception/labels.txt", "xception_image/1/.keep",
                             "xception_image/config.pbtxt", "xception_image/labels.txt",
                             "xception_preprocess/1/model.py",
                             "xception_preprocess/1/model_spec.json",
                             "xception_preprocess/config.pbtxt"]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_triton_repo(tiny_onnx_files, tmp_path, capsys):
    out = tmp_path / "repo"
    assert main(["triton-repo", str(tiny_onnx_files["float"]), "-o", str(out), "--ensemble",
                 "--preferred-batch", "2", "4", "--max-queue-delay-us", "300", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["models"]["xception"]["platform"] == "onnxruntime_onnx"
    assert summary["models"]["xception_image"]["platform"] == "ensemble"
    cfg = _cfg(out, "xception")
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 300
    assert main(["triton-repo", str(tiny_onnx_files["float"]), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    assert main(["triton-repo", str(tiny_onnx_files["float"]), "-o", str(out), "--force",
                 "--triton-backend", "python", "--threads", "2"]) == 0
    text = capsys.readouterr().out
    assert "validated" in text and "xception-trt serve" in text
    params = _cfg(out, "xception").parameters
    assert params["xception_trt.runner_options"].string_value == '{"threads": 2}'


@pytest.mark.parametrize("argv, match", [
    (["--gpus", "0", "--instance-kind", "cpu"], "GPU indices were given for CPU"),
    (["--max-batch", "2", "--preferred-batch", "4"], "exceed max_batch_size 2"),
])
def test_cli_triton_repo_bad_flags(tiny_onnx_files, tmp_path, capsys, argv, match):
    code = main(["triton-repo", str(tiny_onnx_files["float"]), "-o", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and match in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("gpus", ["-1", "0,x", ","])
def test_cli_triton_repo_bad_gpu_list(tmp_path, capsys, gpus):
    with pytest.raises(SystemExit) as exc:
        main(["triton-repo", "m.onnx", "-o", str(tmp_path / "r"), f"--gpus={gpus}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --gpus: {gpus!r} is not a comma-separated list of GPU indices >= 0" in err


def test_cli_triton_repo_missing_model(tmp_path, capsys):
    assert main(["triton-repo", str(tmp_path / "x.onnx"), "-o", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_serve_package_exports_resolve_lazily():
    import subprocess
    import sys

    import xception_trt.serve as serve
    import xception_trt.serve.repository as repository

    for name in serve.__all__:
        assert getattr(serve, name) is not None
    for name in repository.__all__:
        assert getattr(repository, name) is not None
    assert serve.RepositoryOptions is repository.RepositoryOptions
    # The CLI reads the option enums while building its parser: that must not load numpy.
    code = ("import sys, xception_trt.serve.options as o; "
            "print(o.ServeBackend.choices(), 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['native', 'python'] False"
