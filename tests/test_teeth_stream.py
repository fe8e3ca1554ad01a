"""Tests with teeth for stream/ (issue 31): the unit of ``max_wait_ms`` (a partial batch runs
after milliseconds, not seconds), which percentile is p50 and which p99 (values 1..100, so a swap
shows), and which sources are live (cameras and live URL schemes; files, folders, iterables and
http are not). A fake runner stands for the model: these tests pin the pipeline, not a network.
"""

from __future__ import annotations

import contextlib
import os
import threading
from types import SimpleNamespace

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
        seen.update(target=target, live=live, fmt=fmt, name=name, timeout=timeout)
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


# ---------------------------------------------------------------------------------------------
# the sources themselves: a small lossless video, folders, iterables, FIFOs


def _video(path, n=5, fps=10, size=(24, 32)):
    av = pytest.importorskip("av", reason="the stream extra reads video")
    frames = [np.stack([np.full(size, 40 * i, np.uint8), np.full(size, 7, np.uint8),
                        np.full(size, 200 - 30 * i, np.uint8)], -1) for i in range(n)]
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "bgr0"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return frames


def test_a_video_file_gives_every_frame_in_order_with_times(tmp_path):
    frames = _video(tmp_path / "v.mkv")
    errors = []
    with open_source(tmp_path / "v.mkv") as src:
        assert src.live is False and src.fps == 10.0 and src.name == str(tmp_path / "v.mkv")
        got = list(src.frames(lambda i, m: errors.append((i, m))))
    assert errors == []
    assert [f.index for f in got] == [0, 1, 2, 3, 4]
    assert [f.timestamp for f in got] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    for f, want in zip(got, frames):
        assert f.image.shape == (24, 32, 3) and np.array_equal(f.image, want)
    src.close()  # idempotent


def test_a_file_that_is_not_video_is_a_data_error(tmp_path):
    pytest.importorskip("av", reason="the stream extra reads video")
    bad = tmp_path / "notes.mkv"
    bad.write_bytes(b"this is no video at all" * 10)
    with pytest.raises(DataError, match=rf"cannot open video source {bad}: .*check the path"):
        open_source(bad)
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"is an empty file"):
        open_source(empty)
    with pytest.raises(DataError, match=r"source .*nope.mkv .*give a video file"):
        open_source(tmp_path / "nope.mkv")
    with pytest.raises(DataError, match=r"cannot read frames from a float"):
        open_source(1.5)


def test_a_truncated_file_says_so(tmp_path, caplog):
    _video(tmp_path / "v.mkv", n=20)
    src = open_source(tmp_path / "v.mkv")
    with caplog.at_level("WARNING", logger="xception_trt.stream.source"):
        src._check_complete(0.5)   # the header announces 2.0 s
    assert "ended at 0.50 s of the 2.00 s" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="xception_trt.stream.source"):
        src._check_complete(1.9)   # the last frame (within 1.5 frame periods of the end)
        src.live = True
        src._check_complete(0.5)   # a live source has no end to compare with
    assert caplog.text == ""
    src.close()


def test_folder_frames_skip_unreadable_images_keeping_indices(tmp_path):
    from PIL import Image

    for i in (0, 2):
        Image.fromarray(_frame(50 * (i + 1))).save(tmp_path / f"{i}.png")
    (tmp_path / "1.png").write_bytes(b"not a png")
    errors = []
    src = open_source(tmp_path)
    assert src.live is False and src.name == str(tmp_path)
    got = list(src.frames(lambda i, m: errors.append((i, m))))
    assert [f.index for f in got] == [0, 2] and [f.timestamp for f in got] == [None, None]
    assert [int(f.image[0, 0, 0]) for f in got] == [50, 150]
    assert [i for i, _ in errors] == [1] and errors[0][1].startswith("frame 1 (")
    assert errors[0][1].endswith("; skipped")


def test_iterable_frames_check_each_item(tmp_path):
    from PIL import Image

    items = [_frame(1), np.zeros((4, 4, 3), np.float32), Image.new("L", (5, 6), 9),
             "x", np.zeros((4, 4), np.uint8), np.zeros((2, 2, 2, 3), np.uint8)]
    errors = []
    got = list(IterableSource(items, live=False).frames(lambda i, m: errors.append((i, m))))
    assert [f.index for f in got] == [0, 2, 4]
    assert got[1].image.shape == (6, 5, 3) and got[1].image.dtype == np.uint8  # PIL -> RGB
    assert [i for i, _ in errors] == [1, 3, 5]
    assert errors[0][1] == "frame 1 is not a uint8 HxWxC image (ndarray); skipped"
    assert errors[1][1] == "frame 3 is not a uint8 HxWxC image (str); skipped"
    assert IterableSource([], live=True).name == "<list>"


@contextlib.contextmanager
def _fifo_writer(fifo):
    """A writer thread that opens ``fifo`` (blocking until a reader opens it), writes one byte
    and holds the FIFO open until the block ends."""
    done = threading.Event()

    def write():
        fd = os.open(fifo, os.O_WRONLY)  # blocks until the reader opened it
        os.write(fd, b"x")
        done.wait(10)
        os.close(fd)

    t = threading.Thread(target=write)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


def test_a_fifo_without_data_times_out_and_one_with_data_opens(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"no data arrived on the FIFO .* within 0.2 s"):
        source_mod._wait_for_fifo(fifo, 0.2)
    with _fifo_writer(fifo):
        fd = source_mod._wait_for_fifo(fifo, 30)
        assert os.read(fd, 1) == b"x"
        os.close(fd)


def test_av_error_text_is_its_first_line():
    assert source_mod._av_text(OSError(2, "No such file\nmore")) == "No such file"
    assert source_mod._av_text(ValueError("bad\nworse")) == "bad"
    assert source_mod._av_text(ValueError("")) == "ValueError"


# ---------------------------------------------------------------------------------------------
# the pipeline's other rules: dropping, errors, kept frames, callbacks, stop, failures


def test_a_live_source_drops_the_oldest_frames_and_counts_them():
    gate = threading.Event()
    frames = [_frame(i) for i in range(30)]

    def burst():
        for i, f in enumerate(frames):
            yield f
            if i == 0:
                gate.wait(10)  # hold until the first result is out

    runner = CountingRunner(max_batch=1)
    got, totals = [], []
    for out in run_stream(runner, IterableSource(burst(), live=True), batch=1,
                          on_end=totals.append):
        got.append(out.index)
        gate.set()
    assert got[0] == 0 and got[-1] == 29 and got == sorted(got)
    assert totals[0].dropped == 30 - len(got) > 0 and totals[0].frames == len(got)


def test_undecodable_frames_are_counted_and_kept_frames_attached():
    items = [_frame(3), "junk", _frame(5)]
    totals = []
    outs = list(run_stream(CountingRunner(), IterableSource(items, live=False),
                           keep_frames=True, on_end=totals.append))
    assert [o.index for o in outs] == [0, 2]
    assert [int(o.image[0, 0, 0]) for o in outs] == [3, 5]
    assert totals[0].errors == 1 and totals[0].frames == 2 and totals[0].dropped == 0
    assert all(o.latency_ms >= 0 and o.logits.dtype == np.float32 for o in outs)
    plain = list(run_stream(CountingRunner(), IterableSource(items[:1], live=False)))
    assert plain[0].image is None


def test_status_callbacks_and_the_stop_event():
    stop = threading.Event()
    statuses, totals = [], []

    def endless():
        i = 0
        while True:
            yield _frame(i % 200)
            i += 1

    got = 0
    for _ in run_stream(CountingRunner(), IterableSource(endless(), live=False),
                        status_interval=0.001, on_status=statuses.append,
                        on_end=totals.append, stop_event=stop):
        got += 1
        if got == 20:
            stop.set()
    assert got == 20 and totals[0].frames == 20
    assert statuses and all(isinstance(s, StreamStats) for s in statuses)
    with pytest.raises(Exception, match="status_interval"):
        next(run_stream(CountingRunner(), IterableSource([], live=False), status_interval=0))
    with pytest.raises(Exception, match="stall_timeout"):
        next(run_stream(CountingRunner(), IterableSource([], live=False), stall_timeout=0))


def test_a_runner_failure_reaches_the_caller_after_the_results_before_it():
    from xception_trt.errors import EngineError

    class Failing(CountingRunner):
        def __call__(self, x):
            if len(self.batches) == 2:
                raise EngineError("the engine failed")
            return super().__call__(x)

    got = []
    with pytest.raises(EngineError, match="the engine failed"):
        for out in run_stream(Failing(max_batch=1), IterableSource(
                [_frame(i) for i in range(5)], live=False), batch=1):
            got.append(out.index)
    assert got == [0, 1]


def test_a_source_failure_keeps_the_frames_before_it():
    def unplugged():
        yield _frame(1)
        yield _frame(2)
        raise DataError("camera unplugged")

    got = []
    with pytest.raises(DataError, match="camera unplugged"):
        for out in run_stream(CountingRunner(), IterableSource(unplugged(), live=False),
                              batch=4, max_wait_ms=600_000):
            got.append(out.index)
    assert got == [0, 1]


def test_frames_are_resized_and_normalised_for_the_runner():
    seen = []

    class Recording(CountingRunner):
        def __call__(self, x):
            seen.append(x.copy())
            return super().__call__(x)

    list(run_stream(Recording(), IterableSource([np.full((100, 140, 3), 255, np.uint8)],
                                                live=False)))
    (x,) = seen
    assert x.shape == (1, 3, 71, 71) and x.dtype == np.float32
    # white through our normalisation: (1 - mean) / std per channel
    want = (1.0 - np.array(SPEC.mean)) / np.array(SPEC.std)
    assert np.allclose(x[0, :, 0, 0], want, atol=1e-5)


def test_uint8_runners_get_raw_pixels_in_their_staging_buffer():
    class Uint8Staging(CountingRunner):
        input_format = InputFormat.UINT8_NHWC
        input_spec = input_spec_for(SPEC, InputFormat.UINT8_NHWC)

        def __init__(self):
            super().__init__(max_batch=4)
            self.buffers = {}
            self.seen = []

        def input_buffer(self, n):
            return self.buffers.setdefault(n, np.zeros((n, 71, 71, 3), np.uint8))

        def __call__(self, x):
            self.seen.append(x)
            return super().__call__(x)

    r = Uint8Staging()
    frames = [np.full((71, 71, 3), v, np.uint8) for v in (10, 20, 30)]
    list(run_stream(r, IterableSource(frames, live=False), batch=3, max_wait_ms=600_000))
    (x,) = r.seen
    assert x is r.buffers[3] and x.dtype == np.uint8 and x.shape == (3, 71, 71, 3)
    assert [int(x[i, 0, 0, 0]) for i in range(3)] == [10, 20, 30]


def test_float_staging_buffer_is_filled_in_place():
    class Staging(CountingRunner):
        def __init__(self):
            super().__init__()
            self.buf = np.full((2, 3, 71, 71), -99, np.float32)
            self.seen = []

        def input_buffer(self, n):
            return self.buf[:n]

        def __call__(self, x):
            self.seen.append(x)
            return super().__call__(x)

    r = Staging()
    list(run_stream(r, IterableSource([_frame(255), _frame(255)], live=False), batch=2,
                    max_wait_ms=600_000))
    (x,) = r.seen
    assert np.shares_memory(x, r.buf) and np.allclose(r.buf[:, 0, 0, 0], 1.0)  # (1-0.5)/0.5


def test_a_fixed_batch_runner_gets_a_padded_batch_and_one_output_per_frame():
    class Fixed2(CountingRunner):
        input_spec = input_spec_for(SPEC, InputFormat.FLOAT_NCHW, batch=2)

    class Min3(CountingRunner):
        min_batch = 3

    for runner, want in ((Fixed2(max_batch=2), [2]), (Min3(), [3])):
        outs = list(run_stream(runner, IterableSource([_frame(9)], live=False)))
        assert runner.batches == want and [o.index for o in outs] == [0]


def test_an_async_runner_overlaps_and_keeps_the_order():
    class Handle:
        def __init__(self, out):
            self.out = out

        def wait(self):
            return self.out

    class Async(CountingRunner):
        def __init__(self):
            super().__init__(max_batch=2)
            self.async_calls = 0

        def infer_async(self, x):
            self.async_calls += 1
            return Handle(self(x))

    r = Async()
    outs = list(run_stream(r, IterableSource([_frame(i) for i in range(5)], live=False),
                           batch=2, max_wait_ms=600_000))
    assert [o.index for o in outs] == [0, 1, 2, 3, 4]
    assert [float(o.logits[0]) for o in outs] == [0, 1, 0, 1, 0]
    assert r.async_calls >= 2


def test_a_stall_names_the_source_and_its_timeout():
    release = threading.Event()

    def stalls():
        yield _frame(1)
        release.wait(30)

    got = []
    try:
        with pytest.raises(DataError) as err:
            for out in run_stream(CountingRunner(), IterableSource(stalls(), live=False),
                                  stall_timeout=0.2):
                got.append(out.index)
    finally:
        release.set()
    assert got == [0]
    assert str(err.value) == ("no frame from <generator> for 0.2 s: the stream stalled; check "
                              "the source (or raise --stall-timeout); the results so far are "
                              "kept")


class TrackedSource(source_mod.FrameSource):
    """A frame source that counts its closes; ``frames`` is given as a generator function."""

    def __init__(self, frames, live=False):
        self.name, self.live, self._frames, self.closed = "tracked", live, frames, 0

    def frames(self, on_error):
        yield from self._frames()

    def close(self):
        self.closed += 1


def test_leaving_the_loop_stops_the_threads_and_closes_the_source():
    def endless():
        i = 0
        while True:
            yield source_mod.Frame(i, None, _frame(i % 250))
            i += 1

    src = TrackedSource(endless)
    totals = []
    gen = run_stream(CountingRunner(), src, on_end=totals.append)
    got = [next(gen).index for _ in range(3)]
    gen.close()
    assert got == [0, 1, 2] and src.closed == 1
    assert len(totals) == 1 and totals[0].frames == 3


def test_a_decoder_blocked_in_a_read_is_left_and_the_source_not_closed_under_it():
    release = threading.Event()
    stop = threading.Event()

    def blocked():
        release.wait(30)
        return
        yield  # a generator that never yields before the release

    src = TrackedSource(blocked)
    stop.set()  # asked to stop before any frame
    assert list(run_stream(CountingRunner(), src, stop_event=stop)) == []
    assert src.closed == 0  # its reader thread is still inside frames()
    release.set()


def test_live_sources_queue_at_most_one_batch():
    """The newest frames win: with the runner held on its first batch, a live source of 2-frame
    batches keeps only the last frames (the queue holds one batch) and counts the rest."""
    gate = threading.Event()

    class Held(CountingRunner):
        def __call__(self, x):
            gate.wait(10)
            return super().__call__(x)

    def burst():
        for i in range(12):
            yield source_mod.Frame(i, None, _frame(i))
        gate.set()

    totals = []
    outs = list(run_stream(Held(max_batch=2), TrackedSource(burst, live=True), batch=2,
                           max_wait_ms=0, on_end=totals.append))
    got = [o.index for o in outs]
    assert got[-1] == 11 and got == sorted(got)
    # at most the batch held in the runner (2) and one queued batch (2) come through
    assert totals[0].dropped == 12 - len(got) >= 8


def test_a_full_queue_makes_the_decoder_wait_not_drop(monkeypatch):
    """A file source faster than the runner: the decoder waits for room (no frame lost). The
    runner holds its first batch until a put found the queue full."""
    import queue as queue_mod

    from xception_trt.stream import pipeline

    was_full = threading.Event()

    class RecordingQueue(queue_mod.Queue):
        def put(self, item, block=True, timeout=None):
            try:
                return super().put(item, block, timeout)
            except queue_mod.Full:
                was_full.set()
                raise

    monkeypatch.setattr(pipeline, "queue", SimpleNamespace(
        Queue=RecordingQueue, Full=queue_mod.Full, Empty=queue_mod.Empty))

    class Held(CountingRunner):
        def __call__(self, x):
            if not self.batches:
                assert was_full.wait(10)
            return super().__call__(x)

    outs = list(run_stream(Held(max_batch=1), IterableSource([_frame(i) for i in range(12)],
                                                             live=False), batch=1))
    assert [o.index for o in outs] == list(range(12))


def test_fps_is_frames_per_second_and_decode_errors_are_logged(caplog):
    totals, statuses = [], []
    with caplog.at_level("WARNING", logger="xception_trt.stream.pipeline"):
        outs = list(run_stream(CountingRunner(), IterableSource(
            [_frame(1), "junk", _frame(2), _frame(3)], live=False), on_end=totals.append))
    assert len(outs) == 3
    (t,) = totals
    assert t.elapsed_s > 0 and t.fps == pytest.approx(t.frames / t.elapsed_s)
    assert [r.getMessage() for r in caplog.records] == [
        "frame 1 is not a uint8 HxWxC image (str); skipped"]
    import time

    c = _Counters()
    with c.lock:  # 3 results in a window opened 2 s ago; 8 frames since a start 4 s ago
        c.window.extend([1.0, 2.0, 3.0])
        c.window_start = time.perf_counter() - 2.0
        c.start = time.perf_counter() - 4.0
        c.frames = 8
    assert c.snapshot(window=True).fps == pytest.approx(1.5, rel=1e-3)
    total = c.snapshot(window=False)
    assert total.fps == pytest.approx(2.0, rel=1e-3) and total.elapsed_s == pytest.approx(4.0,
                                                                                         rel=1e-3)
    assert statuses == []


def test_sources_are_named_as_given_and_urls_wait_the_default_timeout(opened, tmp_path, caplog):
    src = open_source("/dev/video3")
    assert opened["name"] == "/dev/video3" and src.name == "/dev/video3"
    open_source("rtsp://cam/s")
    assert opened["timeout"] == 10.0 and opened["name"] == "rtsp://cam/s"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with _fifo_writer(fifo), caplog.at_level("INFO", logger="xception_trt.stream.source"):
        open_source(str(fifo), timeout=7.5)
    assert opened["name"] == str(fifo) and opened["live"] is False
    assert f"waiting for data on the FIFO {fifo} (up to 7.5 s)" in [
        r.getMessage() for r in caplog.records]


def test_video_open_passes_the_timeout_and_needs_the_stream_extra(monkeypatch, tmp_path):
    import sys

    from xception_trt.errors import DependencyError

    av = pytest.importorskip("av", reason="the stream extra reads video")
    seen = {}

    def refuse(target, format=None, timeout=None):
        seen.update(target=target, format=format, timeout=timeout)
        raise OSError("Connection refused")

    monkeypatch.setattr(av, "open", refuse)
    with pytest.raises(DataError, match=r"cannot open video source cam: Connection refused"):
        source_mod.VideoSource("rtsp://h/s", name="cam", live=True, fmt=None, timeout=2.5)
    assert seen == {"target": "rtsp://h/s", "format": None, "timeout": 2.5}
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(DependencyError, match=r"xception-trt\[stream\]"):
        source_mod.VideoSource("x.mkv", name="x", live=False)
    half = object.__new__(source_mod.VideoSource)  # its open failed: nothing to close
    half.close()


# --- VideoSource against a container that behaves like PyAV's (survivors of the mutation run) --

class _Packet:
    def __init__(self, frames=None, error=None):
        self._frames, self._error = frames or [], error

    def decode(self):
        if self._error is not None:
            raise self._error
        return self._frames


class _AvFrame:
    def __init__(self, t, value):
        self.time, self._value = t, value

    def to_ndarray(self, format):  # noqa: A002 - PyAV's keyword
        assert format == "rgb24"
        return np.full((4, 6, 3), self._value, np.uint8)


class _Container:
    """What VideoSource uses of an ``av.container.InputContainer``."""

    def __init__(self, packets, *, fps=2, duration=None, fail_after=None):
        self.streams = SimpleNamespace(video=[SimpleNamespace(
            average_rate=fps, guessed_rate=None, thread_type=None)])
        self.duration, self._packets, self._fail_after = duration, packets, fail_after
        self.closed = 0

    def demux(self, stream):
        import av

        for i, packet in enumerate(self._packets):
            if self._fail_after is not None and i == self._fail_after:
                raise av.FFmpegError(5, "Input/output error")
            yield packet

    def close(self):
        self.closed += 1


def _video_source(monkeypatch, container, *, live=False):
    import av

    monkeypatch.setattr(av, "open", lambda target, format=None, timeout=None: container)
    return source_mod.VideoSource("clip.mkv", name="clip.mkv", live=live)


def test_a_corrupt_packet_is_one_lost_frame_named_and_decoding_goes_on(monkeypatch):
    import av

    container = _Container([_Packet([_AvFrame(0.0, 1)]),
                            _Packet(error=av.FFmpegError(5, "Invalid data found")),
                            _Packet([_AvFrame(1.0, 3)])])
    src = _video_source(monkeypatch, container)
    errors = []
    frames = list(src.frames(lambda i, msg: errors.append((i, msg))))
    got = [(f.index, f.timestamp, int(f.image[0, 0, 0])) for f in frames]
    assert got == [(0, 0.0, 1), (2, 1.0, 3)]
    assert errors == [(1, "frame 1 of clip.mkv cannot be decoded (Invalid data found); skipped")]


def test_a_demux_failure_says_how_far_it_got_and_keeps_the_results(monkeypatch):
    container = _Container([_Packet([_AvFrame(0.0, 1)]), _Packet([_AvFrame(0.5, 2)]),
                            _Packet([_AvFrame(1.0, 3)])], fail_after=2)
    src = _video_source(monkeypatch, container)
    got = []
    with pytest.raises(DataError) as info:
        for frame in src.frames(lambda i, m: None):
            got.append(frame.index)
    assert got == [0, 1]
    assert str(info.value) == (
        "clip.mkv failed after 2 frame(s): Input/output error (a truncated file, an unplugged "
        "camera or a lost connection); the results so far are kept")


def test_close_closes_the_container_once(monkeypatch):
    container = _Container([])
    src = _video_source(monkeypatch, container)
    assert container.closed == 0
    src.close()
    assert container.closed == 1
    src.close()  # idempotent: a second close does not reach the container
    assert container.closed == 1


@pytest.mark.parametrize(("duration_us", "warned"), [
    (2_000_000, False),   # last frame + 1.5 frame periods == the header's duration: complete
    (2_000_001, True),    # one microsecond more announced: truncated
])
def test_truncation_boundary_is_one_and_a_half_frame_periods(monkeypatch, caplog, duration_us,
                                                             warned):
    # fps 2: 1.5 / 2 = 0.75 s exactly; the last frame at 1.25 s ends the file at 2.0 s
    container = _Container([_Packet([_AvFrame(1.25, 1)])], fps=2, duration=duration_us)
    src = _video_source(monkeypatch, container)
    with caplog.at_level("WARNING", logger=source_mod.__name__):
        list(src.frames(lambda i, m: None))
    assert ("looks truncated" in caplog.text) is warned


def test_a_fifo_wait_ends_when_the_time_left_is_exactly_zero(tmp_path, monkeypatch):
    """The deadline is reached when no time is left (``<= 0``), not only once it is passed: a
    clock that stands still at the deadline must not make the wait poll forever."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    calls = []

    def clock():
        calls.append(1)
        if len(calls) > 5:
            raise AssertionError("the wait went on past its deadline")
        return 100.0

    monkeypatch.setattr(source_mod.time, "monotonic", clock)
    with pytest.raises(DataError, match=r"no data arrived on the FIFO .* within 0 s"):
        source_mod._wait_for_fifo(fifo, 0)
