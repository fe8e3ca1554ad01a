"""The pipelined stream: decode -> preprocess -> (micro-batched) inference, each stage in its
own thread, joined by bounded queues.

- The decoder thread decodes a frame and resizes/crops it to the model's uint8 input at once
  (Pillow and FFmpeg release the GIL, so this runs beside inference).
- The inference thread gathers up to ``batch`` frames (waiting at most ``max_wait_ms`` for a
  batch to fill), writes them straight into the runner's input staging buffer when it offers
  one (the CUDA runners' pinned ``input_buffer``) and starts inference asynchronously when the
  runner can (``infer_async``), gathering the next batch while the GPU works. Other runners
  (ONNX Runtime, torch) run synchronously in this thread; they release the GIL, so decoding
  continues meanwhile.
- Live sources keep a short queue and drop the oldest frame when it is full (always classify
  the newest); files block the decoder instead and drop nothing.
- No frame for ``stall_timeout`` seconds is an error, never a hang.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import InputFormat, check_int
from ..contract import Runner
from ..errors import ConfigError, DataError
from ..jsonable import JsonMixin, json_field
from .source import Frame, FrameSource

__all__ = ["StreamStats", "FrameOutput", "run_stream"]

log = logging.getLogger(__name__)

_END = object()
#: Queue length per batch slot: enough to keep the runner fed without holding stale frames.
_QUEUE_BATCHES = 2
#: How often blocked threads look at the stop flag (seconds).
_POLL_S = 0.05


@dataclass(frozen=True)
class StreamStats(JsonMixin):
    """Counters of a stream so far.

    Attributes:
        frames: Frames classified.
        dropped: Live frames dropped because newer ones arrived first.
        errors: Frames that could not be decoded (skipped).
        elapsed_s: Seconds since the first frame was decoded.
        fps: Frames classified per second (over the last status interval for status lines,
            over the whole run for totals).
        p50_ms, p99_ms: Frame latency percentiles in milliseconds, decode done -> result ready
            (``None`` before the first result).
    """

    frames: int
    dropped: int
    errors: int
    elapsed_s: float = json_field(round=3)
    fps: float = json_field(round=2)
    p50_ms: float | None = json_field(key="latency_p50_ms")
    p99_ms: float | None = json_field(key="latency_p99_ms")

    def format(self) -> str:
        """One status line."""
        lat = ("latency p50 -- p99 --" if self.p50_ms is None else
               f"latency p50 {self.p50_ms:.1f} ms p99 {self.p99_ms:.1f} ms")
        return (f"{self.frames} frames  {self.fps:.1f} fps  {lat}  dropped {self.dropped}  "
                f"errors {self.errors}  ({self.elapsed_s:.1f} s)")


@dataclass(frozen=True)
class FrameOutput:
    """The runner's answer for one frame.

    Attributes:
        index, timestamp: As in :class:`~xception_trt.stream.source.Frame`.
        logits: Float32 ``(num_classes,)``.
        latency_ms: Decode done -> result ready, in milliseconds.
        image: The decoded RGB frame when ``keep_frames`` was asked, else ``None``.
        path: The image file of the frame (image folders), else ``None``.
    """

    index: int
    timestamp: float | None
    logits: np.ndarray
    latency_ms: float
    image: np.ndarray | None
    path: str | None = None


@dataclass
class _Item:
    index: int
    timestamp: float | None
    pixels: np.ndarray
    t0: float
    image: np.ndarray | None
    path: str | None = None


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _percentile(values: Any, q: float) -> float | None:
    return float(np.percentile(np.fromiter(values, dtype=np.float64), q)) if values else None


class _Counters:
    """Thread-safe counters and latency windows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames = self.dropped = self.errors = 0
        self.start: float | None = None
        self.latencies: deque[float] = deque(maxlen=200_000)  # totals' percentiles
        self.window: list[float] = []
        self.window_start = time.perf_counter()

    def started(self) -> None:
        with self.lock:
            if self.start is None:
                self.start = time.perf_counter()

    def snapshot(self, *, window: bool) -> StreamStats:
        now = time.perf_counter()
        with self.lock:
            elapsed = now - self.start if self.start is not None else 0.0
            if window:
                values: Any = self.window
                span = now - self.window_start
                fps = len(values) / span if span > 0 else 0.0
                self.window, self.window_start = [], now
            else:
                values = self.latencies
                fps = self.frames / elapsed if elapsed > 0 else 0.0
            return StreamStats(self.frames, self.dropped, self.errors, elapsed, fps,
                               _percentile(values, 50), _percentile(values, 99))


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Blocking put that gives up when ``stop`` is set; returns whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _decode_loop(src: FrameSource, prepare: Callable[[np.ndarray], np.ndarray],
                 frames_q: queue.Queue, stop: threading.Event, counters: _Counters,
                 keep_frames: bool) -> None:
    def on_error(index: int, message: str) -> None:
        log.warning("%s", message)
        with counters.lock:
            counters.errors += 1

    try:
        for frame in src.frames(on_error):
            if stop.is_set():
                return
            t0 = time.perf_counter()
            counters.started()
            item = _make_item(frame, prepare, t0, keep_frames, on_error)
            if item is None:
                continue
            if src.live:
                while True:  # newest wins: drop the oldest queued frame
                    try:
                        frames_q.put_nowait(item)
                        break
                    except queue.Full:
                        try:
                            frames_q.get_nowait()
                            with counters.lock:
                                counters.dropped += 1
                        except queue.Empty:
                            pass
            elif not _put(frames_q, item, stop):
                return
        _put(frames_q, _END, stop)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        _put(frames_q, _Failure(exc), stop)


def _make_item(frame: Frame, prepare: Callable[[np.ndarray], np.ndarray], t0: float,
               keep: bool, on_error: Callable[[int, str], None]) -> _Item | None:
    try:
        pixels = prepare(frame.image)
    except DataError as exc:
        on_error(frame.index, f"frame {frame.index}: {exc}; skipped")
        return None
    return _Item(frame.index, frame.timestamp, pixels, t0, frame.image if keep else None,
                 frame.path)


class _Batcher:
    """Assembles runner inputs: into the runner's staging buffer when it has one, padded up to
    the runner's minimum or fixed batch."""

    def __init__(self, runner: Runner) -> None:
        from ..preprocess import normalize

        self.runner = runner
        self.spec = runner.spec
        self.uint8 = runner.input_format is InputFormat.UINT8_NHWC
        self._normalize = normalize
        fixed = runner.input_spec.shape[0]
        self.min_n = max(int(getattr(runner, "min_batch", 1) or 1), fixed if fixed > 0 else 1)
        self.staging: Callable[[int], np.ndarray] | None = getattr(runner, "input_buffer", None)

    def build(self, items: list[_Item]) -> np.ndarray:
        pixels = [it.pixels for it in items]
        while len(pixels) < self.min_n:  # pad a short last batch; the extra rows are dropped
            pixels.append(pixels[-1])
        n = len(pixels)
        out = self.staging(n) if self.staging is not None else None
        if self.uint8:
            if out is None:
                return np.stack(pixels)
            np.stack(pixels, out=out)
            return out
        x = self._normalize(np.stack(pixels), self.spec)
        if out is None:
            return x
        np.copyto(out, x)
        return out


def _infer_loop(runner: Runner, frames_q: queue.Queue, out_q: queue.Queue,
                stop: threading.Event, batch: int, max_wait: float, stall_timeout: float,
                source_name: str) -> None:
    batcher = _Batcher(runner)
    start_async = getattr(runner, "infer_async", None)
    pending: tuple[Any, list[_Item]] | None = None

    def finish(handle: Any, items: list[_Item], logits: np.ndarray | None = None) -> bool:
        if logits is None:
            logits = handle.wait()
        done = time.perf_counter()
        for row, it in zip(np.asarray(logits), items):
            out = FrameOutput(it.index, it.timestamp, np.array(row, dtype=np.float32),
                              (done - it.t0) * 1000.0, it.image, it.path)
            if not _put(out_q, out, stop):
                return False
        return True

    try:
        ended = False
        # A stall is measured from the last frame received, whatever --max-wait-ms says: a
        # batch that waits to fill longer than the stall timeout still ends at the stall
        last_frame = time.perf_counter()
        while not ended and not stop.is_set():
            items: list[_Item] = []
            deadline = None
            failure: _Failure | None = None
            stalled = False
            while len(items) < batch:
                if pending is not None and frames_q.empty():
                    # Nothing to gather yet: hand out the batch in flight now rather than
                    # holding its results until the next frame arrives.
                    if not finish(*pending):
                        return
                    pending = None
                stall_at = last_frame + stall_timeout
                until = stall_at if deadline is None else min(deadline, stall_at)
                # Short waits so a stop request is seen at once, whatever the timeouts.
                wait = min(_POLL_S, max(0.0, until - time.perf_counter()))
                try:
                    got = frames_q.get(timeout=wait) if wait > 0 else frames_q.get_nowait()
                except queue.Empty:
                    if stop.is_set():
                        return
                    now = time.perf_counter()
                    if now < until:
                        continue
                    stalled = now >= stall_at
                    break  # the batch waited long enough (or the source stalled)
                if got is _END:
                    ended = True
                    break
                if isinstance(got, _Failure):
                    failure = got
                    break
                items.append(got)
                last_frame = time.perf_counter()
                if deadline is None:
                    deadline = last_frame + max_wait
            if pending is not None:
                if not finish(*pending):
                    return
                pending = None
            if items:  # every frame gathered is classified, also before a failure or stall
                x = batcher.build(items)
                if start_async is not None and failure is None and not stalled:
                    pending = (start_async(x), items)
                elif not finish(None, items, runner(x)):
                    return
            if failure is not None:
                _put(out_q, _Failure(failure.exc), stop)
                return
            if stalled:
                raise DataError(f"no frame from {source_name} for {stall_timeout:g} s: the "
                                "stream stalled; check the source (or raise "
                                "--stall-timeout); the results so far are kept")
        if pending is not None:
            finish(*pending)
        _put(out_q, _END, stop)
    except BaseException as exc:
        _put(out_q, _Failure(exc), stop)


def run_stream(runner: Runner, src: FrameSource, *, batch: int = 1, max_wait_ms: float = 10.0,
               stall_timeout: float = 10.0, keep_frames: bool = False,
               on_status: Callable[[StreamStats], None] | None = None,
               status_interval: float = 1.0,
               on_end: Callable[[StreamStats], None] | None = None,
               stop_event: threading.Event | None = None
               ) -> Generator[FrameOutput, None, None]:
    """Classify the frames of ``src`` with ``runner``, pipelined; yields one output per frame.

    Closing the generator (``break``, Ctrl-C, garbage collection) stops the threads and
    closes ``src``.

    Args:
        runner: Any runner of the contract (its ``max_batch`` caps ``batch``).
        src: An opened :class:`FrameSource`.
        batch: Frames per runner call (micro-batching; 1 for the lowest latency).
        max_wait_ms: How long a batch may wait to fill before it runs anyway (ms).
        stall_timeout: Seconds without a frame after which the stream is declared stalled.
        keep_frames: Attach each decoded frame to its output (for annotated video).
        on_status: Called every ``status_interval`` seconds with the stats of that interval.
        status_interval: Seconds between ``on_status`` calls.
        on_end: Called once with the totals when the stream ends, fails or is stopped.
        stop_event: Set it (from a signal handler, another thread) to end the stream cleanly
            after the frame being handled: no frame is cut in half.

    Yields:
        :class:`FrameOutput`, in source order.

    Raises:
        ConfigError: A parameter out of range.
        DataError: The source failed or stalled (after every result before it was yielded).
        EngineError: The runner failed.
    """
    check_int(batch, "batch")
    if max_wait_ms < 0 or stall_timeout <= 0 or status_interval <= 0:
        raise ConfigError("max_wait_ms must be >= 0 and stall_timeout, status_interval > 0 "
                          f"(got {max_wait_ms}, {stall_timeout}, {status_interval})")
    if runner.max_batch:
        batch = min(batch, runner.max_batch)
    from ..preprocess import resize_crop, to_rgb

    spec = runner.spec

    def prepare(image: np.ndarray) -> np.ndarray:
        from PIL import Image

        img = resize_crop(to_rgb(Image.fromarray(image), spec.in_chans), spec)
        arr = np.asarray(img, dtype=np.uint8)
        return np.ascontiguousarray(arr[:, :, None] if arr.ndim == 2 else arr)

    depth = max(2, batch * _QUEUE_BATCHES) if not src.live else max(1, batch)
    frames_q: queue.Queue = queue.Queue(maxsize=depth)
    out_q: queue.Queue = queue.Queue(maxsize=max(2, batch * _QUEUE_BATCHES))
    stop = threading.Event()
    counters = _Counters()
    decoder = threading.Thread(target=_decode_loop, name="xtrt-decode", daemon=True,
                               args=(src, prepare, frames_q, stop, counters, keep_frames))
    infer = threading.Thread(target=_infer_loop, name="xtrt-infer", daemon=True,
                             args=(runner, frames_q, out_q, stop, batch, max_wait_ms / 1000.0,
                                   stall_timeout, src.name))
    decoder.start()
    infer.start()
    next_status = time.perf_counter() + status_interval
    try:
        while stop_event is None or not stop_event.is_set():
            try:
                got = out_q.get(timeout=min(status_interval, 0.25))
            except queue.Empty:
                got = None
            if on_status is not None and time.perf_counter() >= next_status:
                next_status = time.perf_counter() + status_interval
                on_status(counters.snapshot(window=True))
            if got is None:
                continue
            if got is _END:
                return
            if isinstance(got, _Failure):
                raise got.exc
            with counters.lock:
                counters.frames += 1
                counters.latencies.append(got.latency_ms)
                counters.window.append(got.latency_ms)
            yield got
    finally:
        stop.set()
        for q in (frames_q, out_q):  # unblock puts so the threads see the stop flag
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
        infer.join(timeout=5.0)
        decoder.join(timeout=0.5)
        if decoder.is_alive():
            # Blocked inside a read of a stalled source: closing the container under it is
            # unsafe, so it is left (a daemon thread) to end with the read.
            log.debug("decoder thread of %s still blocked in a read; left to finish", src.name)
        else:
            src.close()
        if on_end is not None:
            on_end(counters.snapshot(window=False))
