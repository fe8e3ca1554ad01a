"""The Runner protocol: ONNX Runtime and torch runners agree, validate inputs, close cleanly;
open_runner picks the backend by file type."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from xception_trt.config import InputFormat, Precision
from xception_trt.contract import Runner, TensorSpec, check_batch
from xception_trt.errors import ConfigError, EngineError, GraphError
from xception_trt.preprocess import normalize
from xception_trt.runners import OnnxRuntimeRunner, TorchRunner, open_runner, runner_kind


@pytest.fixture(scope="module")
def pixels(tiny_spec) -> np.ndarray:
    rng = np.random.default_rng(3)
    s = tiny_spec.input_size
    return rng.integers(0, 256, size=(3, s, s, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ort_float(tiny_onnx_files):
    with OnnxRuntimeRunner(tiny_onnx_files["float"], threads=1) as r:
        yield r


@pytest.fixture(scope="module")
def torch_runner(tiny_model):
    with TorchRunner(tiny_model) as r:
        yield r


def test_tensor_spec_normalises_and_describes():
    spec = TensorSpec("input", [-1, 3, 71, 71], "float32")
    assert spec.shape == (-1, 3, 71, 71) and spec.dtype == np.float32
    assert spec.describe() == "input[N,3,71,71] float32"
    assert spec.to_dict() == {"name": "input", "shape": [-1, 3, 71, 71], "dtype": "float32"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"  # frozen


def test_runners_implement_the_protocol(ort_float, torch_runner, tiny_spec):
    for r in (ort_float, torch_runner):
        assert isinstance(r, Runner)
        assert r.spec.num_classes == tiny_spec.num_classes
        assert r.precision is Precision.FP32 and r.device == "cpu"
        assert r.input_spec == TensorSpec("input", (-1, 3, 71, 71), np.float32)
        assert r.output_spec == TensorSpec("logits", (-1, 4), np.float32)
        assert r.max_batch is None
        d = r.describe()
        assert d["backend"] in ("onnxruntime", "torch") and d["threads"]
    assert ort_float.describe()["provider"] == "CPUExecutionProvider"
    assert ort_float.describe()["threads"] == 1


def test_torch_and_ort_fp32_logits_agree(ort_float, torch_runner, pixels, tiny_spec):
    x = normalize(pixels, tiny_spec)
    a, b = ort_float(x), torch_runner(x)
    assert a.dtype == np.float32 and a.shape == (3, 4)
    assert np.abs(a - b).max() < 1e-4
    assert np.abs(a).max() > 1e-3  # real logits, not zeros
    # batch independence: row 0 alone equals row 0 in the batch
    assert np.abs(ort_float(np.ascontiguousarray(x[:1])) - a[:1]).max() < 1e-4


def test_uint8_nhwc_graph_takes_raw_pixels(tiny_onnx_files, torch_runner, pixels, tiny_spec):
    with OnnxRuntimeRunner(tiny_onnx_files["uint8"]) as r:
        assert r.input_format is InputFormat.UINT8_NHWC
        assert r.input_spec == TensorSpec("input", (-1, 71, 71, 3), np.uint8)
        out = r(pixels)
        ref = torch_runner(normalize(pixels, tiny_spec))
        assert np.abs(out - ref).max() < 1e-4
        with pytest.raises(EngineError, match="raw uint8 NHWC pixels"):
            r(normalize(pixels, tiny_spec).transpose(0, 2, 3, 1).copy())
        with pytest.raises(EngineError, match="looks like NCHW"):
            r(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))


def test_torch_runner_from_checkpoint_and_fp16(tiny_checkpoint, torch_runner, pixels, tiny_spec):
    x = normalize(pixels, tiny_spec)
    with TorchRunner(tiny_checkpoint) as r:
        assert np.abs(r(x) - torch_runner(x)).max() < 1e-5
        assert r.describe()["path"] == str(tiny_checkpoint)
    with TorchRunner(tiny_checkpoint, precision="fp16") as r16:
        assert r16.name == "torch-fp16" and r16.precision is Precision.FP16
        out = r16(x)
        assert out.dtype == np.float32
        assert np.abs(out - torch_runner(x)).max() < 5e-2
    with pytest.raises(ConfigError, match="OnnxRuntimeRunner"):
        TorchRunner(tiny_checkpoint, precision="int8")
    with pytest.raises(ConfigError, match="unknown torch device"):
        TorchRunner(tiny_checkpoint, device="tpu")
    with pytest.raises(EngineError, match="Xception"):
        TorchRunner(object())


@pytest.mark.parametrize("make, match", [
    (lambda x: x[0], r"rank 4 .*x\[None\]"),
    (lambda x: x.astype(np.float64), "dtype must be float32.*astype"),
    (lambda x: np.ascontiguousarray(x[:, :, :70, :70]), r"axis 2 is 70, expected 71"),
    (lambda x: np.ascontiguousarray(x.transpose(0, 2, 3, 1)), "looks like NHWC"),
    (lambda x: x[:, :, ::-1, :], "not C-contiguous"),
    (lambda x: x[:0], "empty"),
    (lambda x: x.tolist(), "numpy.ndarray"),
])
def test_bad_inputs_are_clear_errors(ort_float, torch_runner, pixels, tiny_spec, make, match):
    bad = make(normalize(pixels, tiny_spec))
    for r in (ort_float, torch_runner):
        with pytest.raises(EngineError, match=match):
            r(bad)


def test_nan_check_is_optional(tiny_onnx_files, pixels, tiny_spec):
    x = normalize(pixels, tiny_spec)
    x[0, 0, 0, 0] = np.nan
    with OnnxRuntimeRunner(tiny_onnx_files["float"], check_finite=True) as r:
        with pytest.raises(EngineError, match="NaN or Inf"):
            r(x)


def test_static_batch_graph_enforces_its_batch(tiny_onnx_files, pixels, tiny_spec):
    with OnnxRuntimeRunner(tiny_onnx_files["static2"]) as r:
        assert r.max_batch == 2 and r.input_spec.shape == (2, 3, 71, 71)
        x = normalize(pixels, tiny_spec)
        assert r(np.ascontiguousarray(x[:2])).shape == (2, 4)
        with pytest.raises(EngineError, match="axis 0 is 3, expected 2"):
            r(x)
    with pytest.raises(EngineError, match="exceeds this model's maximum batch 2"):
        check_batch(x, TensorSpec("input", (-1, 3, 71, 71), np.float32), max_batch=2)


def test_close_is_idempotent_and_use_after_close_fails(tiny_onnx_files, tiny_model, pixels,
                                                       tiny_spec):
    x = normalize(pixels, tiny_spec)
    for r in (OnnxRuntimeRunner(tiny_onnx_files["float"]), TorchRunner(tiny_model)):
        with r:
            r(x)
        assert r.closed
        r.close()
        r.close()
        with pytest.raises(EngineError, match="closed"):
            r(x)
        with pytest.raises(EngineError, match="closed"):
            with r:
                pass


def test_open_runner_picks_by_suffix(tiny_onnx_files, tiny_checkpoint):
    with open_runner(tiny_onnx_files["float"], threads=1) as r:
        assert isinstance(r, OnnxRuntimeRunner)
    with open_runner(tiny_checkpoint) as r:
        assert isinstance(r, TorchRunner)
    assert runner_kind("m.engine") == runner_kind("m.PLAN") == "tensorrt"
    assert runner_kind("m.onnx") == "onnxruntime" and runner_kind("m.pth") == "torch"


def test_registry_covers_every_runner_kind_and_names_them_all_in_errors():
    from xception_trt.contract import RunnerKind
    from xception_trt.runners import RUNNERS

    assert list(RUNNERS) == list(RunnerKind)
    assert isinstance(runner_kind("m.onnx"), RunnerKind)
    with pytest.raises(EngineError) as exc:
        runner_kind("m.tflite")
    for entry in RUNNERS.values():
        assert entry.describe in str(exc.value)
        assert all(sfx in str(exc.value) for sfx in entry.suffixes())


@pytest.mark.parametrize("path, kw, expected", [
    ("m.engine", dict(threads=2, device="cuda:1"), {"device": 1}),
    ("m.engine", dict(device=0), {"device": 0}),
    ("m.onnx", dict(threads=2), {"threads": 2}),
    ("m.onnx", dict(device="cuda"), {"device": "cuda"}),  # passed on: the runner refuses it
    ("m.pth", dict(threads=1, device=1), {"threads": 1, "device": "cuda:1"}),
    ("m.safetensors", dict(device="cpu"), {"device": "cpu"}),
    ("m.onnx", {}, {}),
])
def test_runner_options_fit_each_backend(path, kw, expected):
    from xception_trt.runners import runner_options

    assert runner_options(path, **kw) == expected


def test_runner_base_repr_survives_a_half_initialised_runner():
    from xception_trt.contract import RunnerBase

    class Half(RunnerBase):
        def __init__(self) -> None:
            self.name = "half"

    assert repr(Half()) == "<Half half (?)>"


def test_open_runner_bad_inputs(tmp_path, tiny_onnx_files):
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(EngineError, match=r"unknown model type '\.tflite'.*\.engine.*\.onnx"):
        open_runner(tmp_path / "model.tflite")
    with pytest.raises(EngineError, match="does not exist"):
        open_runner(tmp_path / "missing.onnx")
    with pytest.raises(ConfigError, match="does not take option.*device"):
        open_runner(tiny_onnx_files["float"], device="cuda")
    with pytest.raises(EngineError, match="not available in this onnxruntime"):
        open_runner(tiny_onnx_files["float"], providers=["NoSuchExecutionProvider"])
    with pytest.raises(ConfigError, match="threads"):
        open_runner(tiny_onnx_files["float"], threads=0)
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes(tiny_onnx_files["float"].read_bytes()[:200])
    with pytest.raises(GraphError, match="not a valid ONNX|not a usable ONNX"):
        open_runner(truncated)


def test_onnx_without_metadata_is_refused(tmp_path, tiny_onnx_files):
    import onnx

    proto = onnx.load(str(tiny_onnx_files["float"]))
    del proto.metadata_props[:]
    path = tmp_path / "plain.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(GraphError, match="xception-trt export"):
        OnnxRuntimeRunner(path)


def test_engine_suffix_goes_to_tensorrt_runtime(tmp_path):
    fake = tmp_path / "foreign.engine"
    fake.write_bytes(b"not an engine at all")
    # Either the TensorRT runtime is not installed here, or it rejects the foreign file; both
    # must be our clear error, never a crash.
    with pytest.raises(Exception) as info:
        open_runner(fake)
    from xception_trt.errors import XceptionTRTError

    assert isinstance(info.value, XceptionTRTError)


# ---------------------------------------------------------------------------------------------
# BuiltEngine: what xt.build's result.engine() returns (issue 25)


def _built(tmp_path, tiny_onnx_files, *, sidecar=True):
    """An engine file with a sidecar of NVIDIA TensorRT 10.3 on an Orin (sm 8.7), and the tiny
    FP32 graph as the graph it was built from."""
    from xception_trt.config import ModelSpec
    from xception_trt.runners import BuiltEngine

    engine = tmp_path / "x.fp32.engine"
    engine.write_bytes(b"plan")
    if sidecar:
        (tmp_path / "x.fp32.engine.json").write_text(json.dumps({
            "schema": 1, "tensorrt": {"flavour": "tensorrt", "version": "10.3.0.26"},
            "engine": {"file": "x.fp32.engine", "bytes": 4, "sha256": "0" * 64},
            "precision": "fp32", "input_format": "float-nchw",
            "model_spec": ModelSpec().to_dict(),
            "device": {"name": "Orin", "compute_capability": "8.7"}, "max_batch": 8,
            "rebuild_command": "xception-trt build x.onnx -o engines"}))
    return BuiltEngine(engine, tiny_onnx_files["float"])


def _machine(monkeypatch, *, gpu):
    """This machine's facts as the engine choice sees them: a CPU-only one, or an Orin with
    NVIDIA TensorRT 10.3 (the engine's own)."""
    from xception_trt.bundle import facts

    machine = facts.DeviceFacts(
        flavours=(facts.FlavourFact("tensorrt", "10.3.0.26"),) if gpu else (),
        gpus=(facts.GpuFact(0, "Orin", "8.7"),) if gpu else (), onnx=True,
        gpu_reason="" if gpu else "no NVIDIA driver found")
    monkeypatch.setattr(facts, "probe_facts", lambda: machine)


def test_built_engine_that_cannot_run_here_falls_back_to_its_onnx(tmp_path, tiny_onnx_files,
                                                                 pixels, tiny_spec, ort_float,
                                                                 monkeypatch, caplog):
    _machine(monkeypatch, gpu=False)
    built = _built(tmp_path, tiny_onnx_files)
    assert os.fspath(built) == str(built) == str(tmp_path / "x.fp32.engine")
    with caplog.at_level("WARNING", logger="xception_trt.runners"):
        runner = open_runner(built, threads=1)
    with runner:
        assert isinstance(runner, OnnxRuntimeRunner) and runner.path == tiny_onnx_files["float"]
        x = normalize(pixels, tiny_spec)
        assert np.array_equal(runner(x), ort_float(x))  # the graph, run as it is
    [record] = [r for r in caplog.records if "cannot run here" in r.getMessage()]
    assert "x.fp32.engine" in record.getMessage() and "not installed" in record.getMessage()
    assert "ONNX Runtime instead" in record.getMessage()


def test_built_engine_that_can_run_here_opens_the_engine_with_its_options_only(
        tmp_path, tiny_onnx_files, monkeypatch):
    import xception_trt.runners as runners

    _machine(monkeypatch, gpu=True)
    opened = {}

    class Recorder:  # stands for TensorRTRunner: records how it was opened
        def __init__(self, path, **kw):
            opened.update(path=path, kw=kw)

    entry = runners.RUNNERS[runners.RunnerKind.TENSORRT]
    monkeypatch.setitem(runners.RUNNERS, entry.kind,
                        dataclasses.replace(entry, runner_class=lambda: Recorder))
    runner = open_runner(_built(tmp_path, tiny_onnx_files), threads=2, cuda_graphs=True)
    assert isinstance(runner, Recorder)
    assert opened == {"path": tmp_path / "x.fp32.engine", "kw": {"cuda_graphs": True}}


def test_built_engine_errors_that_are_not_about_this_machine(tmp_path, tiny_onnx_files,
                                                             monkeypatch):
    from xception_trt.runners import BuiltEngine

    _machine(monkeypatch, gpu=False)
    built = _built(tmp_path, tiny_onnx_files)
    with pytest.raises(ConfigError, match="does not take option.*bogus"):  # a mistake
        open_runner(built, bogus=1)
    with pytest.raises(EngineError, match=r"cannot run here .*cuda_graphs asked for the engine"):
        open_runner(built, cuda_graphs=True)  # the engine was asked for: no silent fallback
    with pytest.raises(EngineError, match="does not exist"):  # a lost engine is reported
        open_runner(BuiltEngine(tmp_path / "gone.engine", tiny_onnx_files["float"]))
    with pytest.raises(EngineError, match="gone.onnx, does not exist"):  # nothing to fall back to
        open_runner(BuiltEngine(built.engine, tmp_path / "gone.onnx"))
    (tmp_path / "n").mkdir()
    no_sidecar = _built(tmp_path / "n", tiny_onnx_files, sidecar=False)
    with pytest.raises(EngineError, match="sidecar"):  # a broken engine is an error, not a cue
        open_runner(no_sidecar)
