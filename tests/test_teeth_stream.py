"""Tests with teeth for stream/ (issue 31): the unit of ``max_wait_ms`` (a partial batch runs
after milliseconds, not seconds), which percentile is p50 and which p99 (values 1..100, so a swap
shows), and which sources are live (cameras and live URL schemes; files, folders, iterables and
http are not). A fake runner stands for the model: these tests pin the pipeline, not a network.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from xception_trt.config import InputFormat, ModelSpec, Precision
from xception_trt.contract import input_spec_for, output_spec_for
from xception_trt.errors import DataError
from xception_trt.stream import source as source_mod
from xception_trt.stream.pipeline import StreamStats, _Counters, run_stream
from xception_trt.stream.source import IterableSource, open_source

SPEC = ModelSpec(num_classes=3, width=0.125, middle_blocks=0, input_size=71,
                 labels=("cat", "dog", "bird"))


class CountingRunner:
    """A runner of the contract that records each batch size and answers logits whose row
    ``i`` is ``[i, 0, 0]``."""

    name = "counting"
    spec = SPEC
    input_format = InputFormat.FLOAT_NCHW
    precision = Precision.FP32
    input_spec = input_spec_for(SPEC, InputFormat.FLOAT_NCHW)
    output_spec = output_spec_for(SPEC)
    device = "cpu"

    def __init__(self, max_batch: int | None = 8) -> None:
        self.max_batch = max_batch
        self.batches: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(int(x.shape[0]))
        out = np.zeros((x.shape[0], 3), np.float32)
        out[:, 0] = np.arange(x.shape[0])
        return out

    def describe(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def _frame(value: int) -> np.ndarray:
    return np.full((40, 50, 3), value, np.uint8)


def test_a_partial_batch_runs_after_max_wait_ms_not_seconds():
    """One frame, then the source waits for the test to see its result: with the wait taken as
    milliseconds the batch of 1 runs after 20 ms; taken as seconds (20 s) it would still be
    waiting when the 5 s stall timeout declares the stream stalled."""
    release = threading.Event()

    def one_then_wait():
        yield _frame(10)
        release.wait(30)  # ends the stream once the test has the first result

    runner = CountingRunner()
    got = []
    for out in run_stream(runner, IterableSource(one_then_wait(), live=False), batch=4,
                          max_wait_ms=20, stall_timeout=5.0):
        got.append(out.index)
        release.set()
    release.set()
    assert got == [0] and runner.batches == [1]


def test_a_full_batch_does_not_wait_and_outputs_keep_source_order():
    runner = CountingRunner(max_batch=3)
    frames = [_frame(i) for i in range(7)]
    outs = list(run_stream(runner, IterableSource(frames, live=False), batch=5,
                           max_wait_ms=600_000, stall_timeout=60))
    # batch capped at the runner's max_batch (3): 3 + 3 + the last one at the end of the stream
    assert runner.batches == [3, 3, 1]
    assert [o.index for o in outs] == list(range(7))
    assert [float(o.logits[0]) for o in outs] == [0, 1, 2, 0, 1, 2, 0]


def test_negative_max_wait_is_refused():
    from xception_trt.errors import ConfigError

    with pytest.raises(ConfigError, match="max_wait_ms must be >= 0"):
        next(run_stream(CountingRunner(), IterableSource([], live=False), max_wait_ms=-1))


def test_p50_and_p99_are_those_percentiles_in_milliseconds():
    c = _Counters()
    c.started()
    with c.lock:
        for ms in range(100, 0, -1):  # 100 .. 1 ms, in no sorted order of arrival
            c.frames += 1
            c.latencies.append(float(ms))
            c.window.append(float(ms) * 2)
    window = c.snapshot(window=True)
    total = c.snapshot(window=False)
    assert total.frames == 100
    assert total.p50_ms == pytest.approx(50.5) and total.p99_ms == pytest.approx(99.01)
    assert window.p50_ms == pytest.approx(101.0) and window.p99_ms == pytest.approx(198.02)
    d = total.to_dict()
    assert d["latency_p50_ms"] == pytest.approx(50.5)
    assert d["latency_p99_ms"] == pytest.approx(99.01)
    assert "latency p50 50.5 ms p99 99.0 ms" in total.format()
    assert c.snapshot(window=True).p50_ms is None  # the window was emptied


def test_status_line_without_results_and_with_counters():
    s = StreamStats(3, 2, 1, 4.0, 0.75, None, None)
    assert s.format() == ("3 frames  0.8 fps  latency p50 -- p99 --  dropped 2  errors 1  "
                          "(4.0 s)")


# ---------------------------------------------------------------------------------------------
# which sources are live


@pytest.fixture
def opened(monkeypatch):
    """VideoSource's open replaced by a recorder of what it was asked (PyAV is not needed),
    and /dev/video3 present."""
    seen: dict = {}

    def record(self, target, *, name, live, fmt=None, timeout=None):
        seen.clear()
        seen.update(target=target, live=live, fmt=fmt)
        self.name, self.live = name, live

    monkeypatch.setattr(source_mod.VideoSource, "__init__", record)
    real = os.path.exists
    monkeypatch.setattr(source_mod.os.path, "exists",
                        lambda p: p == "/dev/video3" or real(p))
    return seen


@pytest.mark.parametrize("given, live, fmt", [
    ("/dev/video3", True, "v4l2"),
    (3, True, "v4l2"),
    ("3", True, "v4l2"),
    ("rtsp://cam.local/stream", True, None),
    ("RTSP://cam.local/stream", True, None),
    ("udp://239.0.0.1:1234", True, None),
    ("srt://host:9000", True, None),
    ("http://host/video.mp4", False, None),
    ("https://host/video.mp4", False, None),
])
def test_cameras_and_live_url_schemes_are_live(opened, given, live, fmt):
    src = open_source(given)
    assert opened["live"] is live and opened["fmt"] == fmt
    assert src.live is live
    assert opened["target"] == (f"/dev/video{given}" if str(given).isdigit() else given)


@pytest.mark.parametrize("given", ["/dev/video3", "rtsp://cam.local/stream"])
def test_live_can_be_turned_off_and_a_file_on(opened, given, tmp_path):
    assert open_source(given, live=False).live is False
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\0" * 16)
    assert open_source(str(video)).live is False
    assert open_source(str(video), live=True).live is True


def test_a_missing_camera_is_refused(opened):
    with pytest.raises(DataError, match=r"camera /dev/video7 does not exist"):
        open_source("/dev/video7")


def test_folders_and_iterables_are_not_live_unless_asked(tmp_path):
    assert open_source([_frame(1)]).live is False
    assert open_source([_frame(1)], live=True).live is True
    src = IterableSource([], live=False)
    assert open_source(src, live=True) is src and src.live is True
