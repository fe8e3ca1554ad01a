"""Latency and accuracy measurement over any Runner (xception_trt.bench)."""

from __future__ import annotations

import numpy as np
import pytest

from xception_trt.bench import (
    BenchConfig,
    LatencyStats,
    benchmark_runner,
    evaluate,
    label_mapping,
    load_pixels,
    make_input,
    measure_latency,
    unique_names,
)
from xception_trt.config import ModelSpec, Precision
from xception_trt.errors import BenchError, ConfigError, DataError, EngineError
from xception_trt.runners import OnnxRuntimeRunner, TorchRunner


class FakeRunner:
    """Wraps a real runner: optional logit transform, a failure after N calls, a GPU time."""

    def __init__(self, base, *, name="fake", precision=Precision.FP16, transform=None,
                 fail_after=None, gpu_ms=None):
        self.base = base
        for attr in ("spec", "input_format", "input_spec", "output_spec", "max_batch", "device"):
            setattr(self, attr, getattr(base, attr))
        self.name, self.precision = name, precision
        self.transform, self.fail_after, self.gpu_ms = transform, fail_after, gpu_ms
        self.calls = 0
        self.last_gpu_time_ms = None

    def __call__(self, batch):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise EngineError("device lost (simulated)")
        out = self.base(batch)
        if self.gpu_ms is not None:
            self.last_gpu_time_ms = self.gpu_ms
        return self.transform(out) if self.transform else out

    def describe(self):
        return {"backend": "fake", "precision": self.precision.value, "device": self.device}

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(scope="module")
def torch_runner(tiny_model):
    with TorchRunner(tiny_model) as r:
        yield r


@pytest.fixture(scope="module")
def ort_runners(tiny_onnx_files):
    rs = [OnnxRuntimeRunner(tiny_onnx_files["float"], threads=1),
          OnnxRuntimeRunner(tiny_onnx_files["uint8"], threads=1, name="onnxruntime-uint8")]
    yield rs
    for r in rs:
        r.close()


def test_bench_config_validates():
    assert BenchConfig(batch_sizes=(8, 1)).batch_sizes == (1, 8)
    for bad in (dict(batch_sizes=()), dict(batch_sizes=(0,)), dict(batch_sizes=(1, 1)),
                dict(iterations=0), dict(warmup=-1), dict(batch_sizes=(1.5,))):
        with pytest.raises(ConfigError):
            BenchConfig(**bad)


def test_latency_stats_from_known_samples():
    s = LatencyStats.from_samples([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s.count, s.min_ms, s.max_ms, s.median_ms, s.mean_ms) == (5, 1.0, 5.0, 3.0, 3.0)
    assert s.p90_ms == pytest.approx(4.6) and s.p99_ms == pytest.approx(4.96)
    assert s.std_ms == pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1))
    with pytest.raises(BenchError, match="no timing samples"):
        LatencyStats.from_samples([])


def test_measure_latency_counts_and_orders(ort_runners):
    calls = []
    res = measure_latency(ort_runners[0], 2, iterations=4, warmup=2, progress=calls.append)
    s = res.end_to_end
    assert len(calls) == 6 and res.completed == 4 and res.error is None
    assert s.min_ms <= s.median_ms <= s.p90_ms <= s.p99_ms <= s.max_ms and s.min_ms > 0
    assert res.throughput_ips == pytest.approx(2 * 1000.0 / s.mean_ms)
    assert res.gpu is None and res.input_source == "random" and res.rss_peak_mib is None


def test_gpu_time_is_reported_when_the_runner_exposes_it(ort_runners):
    res = measure_latency(FakeRunner(ort_runners[0], gpu_ms=1.25), 1, iterations=3, warmup=0)
    assert res.gpu is not None and res.gpu.median_ms == 1.25 and res.gpu.count == 3


def test_runner_failing_midway_keeps_what_was_measured(ort_runners):
    res = measure_latency(FakeRunner(ort_runners[0], fail_after=3), 1, iterations=5, warmup=1)
    assert res.completed == 2 and res.end_to_end.count == 2
    assert "stopped after 2 of 5 timed calls" in res.error and "device lost" in res.error
    sweep = benchmark_runner(FakeRunner(ort_runners[0], fail_after=4), BenchConfig(
        batch_sizes=(1, 2), iterations=3, warmup=0))
    assert [r.batch_size for r in sweep.latency] == [1, 2]  # stops at the failing size
    assert sweep.latency[0].completed == 3 and sweep.latency[1].completed == 1
    assert sweep.error.startswith("batch 2: stopped after 1 of 3")


def test_fixed_and_max_batch_are_skipped_with_a_reason(tiny_onnx_files, torch_runner):
    with OnnxRuntimeRunner(tiny_onnx_files["static2"]) as r:
        res = benchmark_runner(r, BenchConfig(batch_sizes=(1, 2), iterations=1, warmup=0))
    assert res.latency[0].skipped == "the model has a fixed batch of 2"
    assert res.latency[1].completed == 1 and res.error is None
    capped = FakeRunner(torch_runner)
    capped.max_batch = 2
    assert "maximum batch 2" in measure_latency(capped, 4, iterations=1, warmup=0).skipped


def test_make_input_matches_each_runner(ort_runners, image_folder, tiny_spec):
    f, u = ort_runners
    xu, xf = make_input(u, 3, seed=1), make_input(f, 3, seed=1)
    assert xu.dtype == np.uint8 and xu.shape == (3, 71, 71, 3)
    assert xf.dtype == np.float32 and xf.shape == (3, 3, 71, 71) and xf.flags.c_contiguous
    from xception_trt.preprocess import normalize

    np.testing.assert_array_equal(xf, normalize(xu, tiny_spec))  # same pixels, both layouts
    pix = load_pixels(image_folder, tiny_spec, limit=2)
    x = make_input(u, 5, pixels=pix)
    np.testing.assert_array_equal(x[2], pix[0])  # real images repeated to fill the batch


def test_benchmark_runner_from_path_records_load_and_memory(tiny_onnx_files, tmp_path):
    cfg = BenchConfig(batch_sizes=(1,), iterations=2, warmup=1)
    res = benchmark_runner(tiny_onnx_files["float"], cfg, runner_kw={"threads": 1})
    assert res.name == "onnxruntime-fp32" and res.error is None
    assert res.load_seconds > 0 and res.rss_after_load_mib > 0
    assert res.rss_peak_mib >= res.latency[0].rss_peak_mib > 0
    assert res.description["threads"] == 1 and res.description["provider"]
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"garbage")
    res = benchmark_runner(broken, cfg)
    assert res.latency == [] and "could not open" in res.error


def test_unique_names():
    assert unique_names(["a", "b", "a"], ["x/m1.onnx", "m2", "y/m3.onnx"]) == \
        ["a (m1.onnx)", "b", "a (m3.onnx)"]
    assert unique_names(["a", "a"]) == ["a #1", "a #2"]


def test_evaluate_one_pass_accuracy_and_agreement(torch_runner, ort_runners, image_folder,
                                                  monkeypatch):
    import xception_trt.data as data_mod

    decoded = []
    real = data_mod.preprocess_uint8
    monkeypatch.setattr(data_mod, "preprocess_uint8",
                        lambda src, spec: decoded.append(src) or real(src, spec))
    shifted = FakeRunner(torch_runner, name="shifted", transform=lambda y: y + 0.5)
    runners = [shifted, *ort_runners, torch_runner]
    res = evaluate(runners, image_folder, batch_size=5)
    assert len(decoded) == 16  # every image decoded once for all four runners
    assert res.reference == "onnxruntime-fp32"  # the first FP32 runner
    by = {r.name: r for r in res.runners}
    ref = by["onnxruntime-fp32"]
    assert ref.agreement is None and ref.accuracy.images == 16 and ref.error is None
    assert sum(c["images"] for c in ref.accuracy.per_class.values()) == 16
    for name in ("onnxruntime-uint8", "torch-fp32"):
        a = by[name]
        assert a.accuracy.top1 == ref.accuracy.top1 and a.accuracy.top5 == ref.accuracy.top5
        assert a.agreement.top1_agreement == 1.0 and a.agreement.max_abs_logit_diff < 1e-4
        assert a.agreement.kl_mean < 1e-8
    s = by["shifted"].agreement  # a constant shift: same softmax, logits off by 0.5
    assert s.top1_agreement == 1.0 and s.kl_mean < 1e-9
    assert s.max_abs_logit_diff == pytest.approx(0.5, abs=1e-4)
    assert s.mean_abs_logit_diff == pytest.approx(0.5, abs=1e-4)
    assert res.dataset["images"] == 16 and res.dataset["label_mapping"] == "name"
    assert res.dataset["source"] == str(image_folder)
    assert ref.accuracy.k == 4  # top-5 capped at the 4 classes -> always a hit
    assert ref.accuracy.top5 == 1.0


def test_evaluate_disagreement_metrics(torch_runner, image_folder):
    flipped = FakeRunner(torch_runner, name="flipped", precision=Precision.INT8,
                         transform=lambda y: -y)
    res = evaluate([torch_runner, flipped], image_folder, batch_size=8)
    agr = res.runners[1].agreement
    assert agr.top1_agreement == 0.0 and agr.kl_mean > 0 and agr.kl_max >= agr.kl_mean


def test_evaluate_runner_failing_midway(torch_runner, image_folder):
    dying = FakeRunner(torch_runner, name="dying", fail_after=1)
    res = evaluate([torch_runner, dying], image_folder, batch_size=6)
    d = res.runners[1]
    assert d.error.startswith("stopped after 6 images") and "device lost" in d.error
    assert d.accuracy.images == 6 and d.agreement.images == 6
    assert res.runners[0].accuracy.images == 16 and res.runners[0].error is None


def test_evaluate_fixed_batch_runner_is_padded(tiny_onnx_files, torch_runner, image_folder):
    with OnnxRuntimeRunner(tiny_onnx_files["static2"]) as fixed:
        res = evaluate([torch_runner, fixed], image_folder, batch_size=5, limit=7)
    assert res.runners[1].accuracy.images == 7
    assert res.runners[1].agreement.max_abs_logit_diff < 1e-4


def test_evaluate_bad_inputs(torch_runner, flat_image_folder, tmp_path, tiny_model):
    with pytest.raises(DataError, match="no labels"):
        evaluate([torch_runner], flat_image_folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        evaluate([torch_runner], tmp_path / "empty")
    with pytest.raises(BenchError, match="no runners"):
        evaluate([], flat_image_folder)
    other = FakeRunner(torch_runner, name="big")
    other.spec = torch_runner.spec.replace(input_size=99)
    with pytest.raises(BenchError, match="preprocess images differently"):
        evaluate([torch_runner, other], flat_image_folder)
    with pytest.raises(BenchError, match="reference index 3"):
        evaluate([torch_runner], flat_image_folder, reference=3)


def test_label_mapping_modes(tiny_spec):
    m, how = label_mapping(["dog", "cat"], tiny_spec)
    assert how == "name" and m.tolist() == [1, 0]
    imagenet = ModelSpec(num_classes=1000, width=0.125, middle_blocks=0, input_size=71)
    m, how = label_mapping(["n01443537", "n01440764"], imagenet)
    assert how == "wnid" and m.tolist() == [1, 0]
    m, how = label_mapping(["a", "b"], tiny_spec)
    assert how == "index" and m.tolist() == [0, 1]
    with pytest.raises(DataError, match="5 classes but the model only 4"):
        label_mapping(list("abcde"), tiny_spec)


def test_evaluate_reports_unreadable_images(torch_runner, image_folder, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    (data / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    res = evaluate([torch_runner], data, batch_size=8)
    assert res.runners[0].accuracy.images == 16 and res.dataset["unreadable"] == 1
    assert res.failures[0][0].endswith("broken.jpg") and "broken.jpg" in res.failures[0][1]
