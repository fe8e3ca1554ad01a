"""``xception-trt stream``: classify every frame of a video, camera, stream URL or image folder,
pipelined, with JSON lines or an annotated video as output."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator

from ..config import Precision
from ._common import HUB_HELP, add_command, arg_type, path_argument, positive_int
from ._options import RunnerArgs, add_tuned_flag, check_rules, tuned_keywords

ORDER = 61


def _seconds(text: str) -> float:
    return float(text)


positive_seconds = arg_type(_seconds, expected="a number of seconds",
                            check=lambda v: None if v > 0 else "must be > 0")
non_negative_ms = arg_type(_seconds, expected="a number of milliseconds",
                           check=lambda v: None if v >= 0 else "must be >= 0")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "stream", run=run,
        help="classify live video: a file, camera, stream URL or image folder",
        description="""Classify every frame of SOURCE with MODEL (an engine, ONNX file,
            bundle (.xtrt) or checkpoint, as 'infer' takes). Decoding (PyAV/FFmpeg),
            preprocessing and inference run in separate threads, overlapped. Live sources
            (cameras, rtsp/udp/... URLs) drop stale frames and always classify the newest; files
            drop nothing. A status line (fps, p50/p99 frame latency, dropped frames) goes to
            stderr every second; Ctrl-C or SIGTERM stops cleanly, prints the totals and finishes
            the output video. A frame that cannot be decoded is reported and skipped. Needs the
            'stream' extra for video.""",
        epilog="exit codes: 0 done, 2 a bad source/model or the stream failed or stalled "
               "(results before that are kept), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM)",
        output="write an annotated video (label and probability drawn on each frame; "
               ".mp4/.mkv/.mov: H.264, .avi: MPEG-4, .webm: VP9)",
        output_metavar="FILE", output_required=False, force="replace an existing --output file")
    path_argument(p, "model", kind="file", what="model", metavar="MODEL", hub=True,
                  help="model file (.engine, .plan, .onnx, .xtrt, .safetensors, .pth, .pt, .bin, "
                       f".h5), {HUB_HELP}")
    p.add_argument("--precision", choices=Precision.choices(), default=None,
                   help="a bundle's precision to run (default: the bundle's default)")
    # Not a path_argument: a camera index or URL is no path; open_source checks local paths.
    p.add_argument("stream_source", metavar="SOURCE",
                   help="a video file, an image folder, a camera (/dev/videoN or its index N) "
                        "or a URL FFmpeg reads (rtsp://, http://, udp://, ...)")
    p.add_argument("--top-k", type=positive_int, default=5,
                   help="classes per frame (default: 5)")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="frames per runner call (default: the batch size of a bundle's "
                        "throughput or energy tune, else 1, "
                        "lowest latency; capped at the model's max batch)")
    add_tuned_flag(p)
    p.add_argument("--max-wait-ms", type=non_negative_ms, default=10.0,
                   help="longest wait for a batch to fill, in ms (default: 10)")
    p.add_argument("--json-lines", action="store_true",
                   help="print one JSON object per frame on stdout (frame, file for an image "
                        "folder, timestamp, latency_ms, predictions), then one with the totals")
    p.add_argument("--stall-timeout", type=positive_seconds, default=10.0,
                   help="seconds without a frame before the stream counts as stalled; also "
                        "the longest wait to open a URL or for a FIFO's writer (default: 10)")
    p.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="drop stale frames (default: yes for cameras and live URLs, no for "
                        "files and folders)")
    RunnerArgs.add(p, threads="CPU threads for ONNX Runtime / torch (default: the library's "
                              "choice)",
                   device="as for 'infer': torch cpu/cuda[:i]; TensorRT GPU index",
                   cuda_graphs=False, providers=False)


def _emit_frame(args: argparse.Namespace, res) -> None:
    if args.json_lines:
        print(json.dumps(res.to_dict()), flush=True)
    elif args.output is None:
        top = res.predictions[0]
        # a video frame by its time, an image of a folder by its file
        where = (f"{res.timestamp:8.3f} s" if res.timestamp is not None
                 else res.path if res.path is not None else "")
        print(f"frame {res.index:6d} {where}  {top.probability:7.2%}  {top.label}  "
              f"({res.latency_ms:.1f} ms)", flush=True)


#: The signals that end a stream cleanly, and the exit code of each (128 + signal number, the
#: shell's convention): SIGTERM (what `kill`, systemd and docker stop send) as Ctrl-C, as
#: `serve` does.
_STOP_SIGNALS = {signal.SIGINT: 130, signal.SIGTERM: 143}


@contextlib.contextmanager
def _ctrl_c_sets(stop: threading.Event, received: list[int] | None = None) -> Iterator[None]:
    """The first Ctrl-C or SIGTERM sets ``stop`` (the stream ends after the frame in hand, so
    the output has every frame it reports, and the totals are printed); a second one
    interrupts at once. ``received`` gets the exit code of each signal taken."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if received is not None:
            received.append(_STOP_SIGNALS.get(signum, 130))
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, handler) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run(args: argparse.Namespace) -> int:
    from ..classifier import Classifier
    from ..stream.annotate import VideoWriter, draw_label
    from ..stream.source import open_source

    kw = RunnerArgs.parse(args).for_model(args.model)
    check_rules(args, "stream")
    if args.precision is not None:
        kw["precision"] = args.precision
    kw.update(tuned_keywords(args, args.model))
    totals: list = []

    def status(stats) -> None:
        print(f"stream: {stats.format()}", file=sys.stderr, flush=True)

    writer = None
    interrupted = False
    stop = threading.Event()
    received: list[int] = []
    with Classifier(args.model, **kw) as clf:
        # opened before the handlers are set: Ctrl-C while it waits (a FIFO without a writer,
        # a slow URL) interrupts at once (exit 130); the wait is bounded by --stall-timeout
        src = open_source(args.stream_source, live=args.live, timeout=args.stall_timeout)
        try:
            if args.output is not None:
                writer = VideoWriter(args.output, fps=src.fps)
        except BaseException:
            src.close()
            raise
        with _ctrl_c_sets(stop, received):
            results = clf.stream(src, top_k=args.top_k, batch=args.batch,
                                 max_wait_ms=args.max_wait_ms, stall_timeout=args.stall_timeout,
                                 keep_frames=writer is not None, on_status=status,
                                 on_end=totals.append, stop=stop)
            try:
                for res in results:
                    _emit_frame(args, res)
                    if writer is not None and res.image is not None:
                        top = res.predictions[0]
                        writer.write(draw_label(res.image, f"{top.label} {top.probability:.1%}"),
                                     res.timestamp)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                interrupted = interrupted or stop.is_set()
                results.close()  # stops the threads, closes the source, reports the totals
                if writer is not None:
                    writer.close()  # complete, playable file with every frame written so far
                if totals:
                    end = totals[0]
                    print(f"stream {'interrupted' if interrupted else 'ended'}: {end.format()}",
                          file=sys.stderr, flush=True)
                    if args.json_lines:
                        print(json.dumps({"totals": end.to_dict(),
                                          "interrupted": interrupted}), flush=True)
                if writer is not None and writer.done:
                    print(f"wrote {args.output} ({writer.frames} frames)", file=sys.stderr)
    return (received[0] if received else 130) if interrupted else 0
