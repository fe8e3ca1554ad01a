"""Frame sources for :mod:`xception_trt.stream`: video files, image folders, cameras, network
URLs and in-memory iterables, each giving decoded RGB frames in order.

Video decoding uses PyAV (FFmpeg's libraries in a self-contained wheel, the ``stream`` extra):
it reads files, V4L2 cameras and RTSP/HTTP/UDP URLs through one API, decodes on FFmpeg's own
threads, reports each frame's presentation time exactly (``pts * time_base``) and also encodes
the annotated output video. A frame the decoder rejects is reported and skipped; the frames
after it still come.
"""

from __future__ import annotations

import logging
import os
import re
import select
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..extras import needs
from ..fsio import path_problem

__all__ = ["Frame", "FrameSource", "open_source", "VIDEO_SUFFIXES"]

log = logging.getLogger(__name__)

#: Video container suffixes recognised as files (anything FFmpeg opens works; this list only
#: decides the wording of messages).
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mpg", ".mpeg")
#: URL schemes of live network streams (stale frames are dropped); other URLs are read in full.
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_CAMERA = re.compile(r"^/dev/video\d+$")

#: ``on_error(index, message)``: a frame that could not be decoded (skipped).
ErrorCallback = Callable[[int, str], None]


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: Position in the source (0-based; a frame that could not be decoded keeps its
            place, so indices match the source's own frame numbers).
        timestamp: Presentation time in seconds (``None`` for image folders and iterables).
        image: RGB pixels, uint8 ``(H, W, 3)`` (or ``(H, W)`` grey from an iterable).
        path: The image file the frame was read from (image folders; ``None`` otherwise).
    """

    index: int
    timestamp: float | None
    image: np.ndarray
    path: str | None = None


class FrameSource:
    """An opened source of frames. Iterate :meth:`frames` once; :meth:`close` is idempotent.

    Attributes:
        name: The source as the user gave it (for messages).
        live: Whether frames arrive in real time (a camera or live URL): the pipeline then
            drops stale frames instead of queueing them.
        fps: Nominal frame rate (``None`` when unknown).
    """

    name: str = "?"
    live: bool = False
    fps: float | None = None

    def frames(self, on_error: ErrorCallback) -> Iterator[Frame]:
        """Decoded frames in order; a bad frame calls ``on_error`` and is skipped.

        Raises:
            DataError: The source fails beyond one frame (a truncated container, a camera
                unplugged, a connection lost); frames before it were already given.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the source (idempotent)."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class VideoSource(FrameSource):
    """A video file, camera or URL decoded with PyAV.

    Args:
        target: What FFmpeg opens (a path, ``/dev/videoN`` or a URL).
        name: The source as given, for messages.
        live: Real-time source (drop stale frames).
        fmt: FFmpeg input format (``"v4l2"`` for cameras) or ``None`` to probe.
        timeout: Seconds FFmpeg waits on a network read before giving up.

    Raises:
        DataError: The source cannot be opened or has no video stream.
        DependencyError: PyAV is not installed (the ``stream`` extra).
    """

    def __init__(self, target: str, *, name: str, live: bool, fmt: str | None = None,
                 timeout: float | None = None) -> None:
        with needs("reading video", extra="stream"):
            import av
        self._av = av
        self.name, self.live = name, live
        try:
            self._container = av.open(target, format=fmt, timeout=timeout)
        except (av.FFmpegError, OSError) as exc:
            raise DataError(f"cannot open video source {name}: {_av_text(exc)}; check the "
                            "path, device or URL (and that FFmpeg can read this format)"
                            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise DataError(f"{name} has no video stream; give a video file, camera or "
                            "stream URL")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # FFmpeg's frame + slice threads
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None
        self._closed = False

    def frames(self, on_error: ErrorCallback) -> Iterator[Frame]:
        av = self._av
        index = 0
        last: float | None = None
        try:
            for packet in self._container.demux(self._stream):
                try:
                    decoded = packet.decode()
                except av.FFmpegError as exc:
                    # One corrupt packet is one lost frame: report it and keep decoding.
                    on_error(index, f"frame {index} of {self.name} cannot be decoded "
                                    f"({_av_text(exc)}); skipped")
                    index += 1
                    continue
                for frame in decoded:
                    last = float(frame.time) if frame.time is not None else None
                    yield Frame(index, last, frame.to_ndarray(format="rgb24"))
                    index += 1
        except (av.FFmpegError, OSError) as exc:
            raise DataError(f"{self.name} failed after {index} frame(s): {_av_text(exc)} "
                            "(a truncated file, an unplugged camera or a lost connection); "
                            "the results so far are kept") from None
        self._check_complete(last)

    def _check_complete(self, last: float | None) -> None:
        """FFmpeg ends a truncated file quietly: compare the last frame with the duration its
        header announces and say so."""
        duration = self._container.duration  # microseconds (AV_TIME_BASE), None if unknown
        if self.live or not duration or last is None or not self.fps:
            return
        total = duration / 1_000_000
        if last + 1.5 / self.fps < total:
            log.warning("%s ended at %.2f s of the %.2f s its header announces: the file looks "
                        "truncated; the results so far are kept", self.name, last, total)

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self._container.close()


class FolderSource(FrameSource):
    """The images of a folder (sub-folders included), in sorted order, as frames."""

    def __init__(self, root: Path) -> None:
        from ..data import scan_folder

        self.name = str(root)
        self._paths = [rec.path for rec in scan_folder(root).records]

    def frames(self, on_error: ErrorCallback) -> Iterator[Frame]:
        from ..preprocess import open_image, to_rgb

        for index, path in enumerate(self._paths):
            try:
                image = np.asarray(to_rgb(open_image(path)), dtype=np.uint8)
            except DataError as exc:
                on_error(index, f"frame {index} ({exc}); skipped")
                continue
            yield Frame(index, None, image, str(path))


class IterableSource(FrameSource):
    """Frames from any iterable of images (uint8 HxWxC arrays or PIL images)."""

    def __init__(self, images: Iterable[Any], *, live: bool) -> None:
        self.name = f"<{type(images).__name__}>"
        self.live = live
        self._images = images

    def frames(self, on_error: ErrorCallback) -> Iterator[Frame]:
        from PIL import Image

        for index, item in enumerate(self._images):
            if isinstance(item, Image.Image):
                item = np.asarray(item.convert("RGB"))
            ok = isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim in (2, 3)
            if not ok:
                on_error(index, f"frame {index} is not a uint8 HxWxC image "
                                f"({type(item).__name__}); skipped")
                continue
            yield Frame(index, None, item)


def _wait_for_fifo(path: Path, timeout: float | None) -> int:
    """Wait until a FIFO has data (or its writer hung up); returns a read descriptor that keeps
    the FIFO open meanwhile (the caller closes it).

    Opening a FIFO for reading blocks until a writer opens it (fifo(7)); FFmpeg's open did
    that with no limit. Opened with ``O_NONBLOCK`` it returns at once, and ``poll(2)`` waits
    for data with the stream's stall timeout (a FIFO that never had a writer reports no
    ``POLLHUP`` on Linux, so the wait is for a writer's first bytes). Ctrl-C interrupts the
    wait (PEP 475: the handler's exception propagates from ``poll``).

    Raises:
        DataError: No data within ``timeout`` seconds.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        deadline = None if timeout is None else time.monotonic() + timeout
        log.info("waiting for data on the FIFO %s (up to %s)", path,
                 "no limit" if timeout is None else f"{timeout:g} s")
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DataError(f"no data arrived on the FIFO {path} within {timeout:g} s (is "
                                "anything writing to it?); start the writer, or raise "
                                "--stall-timeout")
            if poller.poll(None if left is None else max(1, int(left * 1000))):
                return fd
    except BaseException:
        os.close(fd)
        raise


def _av_text(exc: BaseException) -> str:
    text = str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def open_source(source: Any, *, live: bool | None = None,
                timeout: float | None = 10.0) -> FrameSource:
    """Open a frame source.

    Args:
        source: A video file, a folder of images, a camera (``/dev/videoN`` or its index as an
            int or a digit string), a URL (``rtsp://...``, ``http://...``: whatever FFmpeg
            reads), an opened :class:`FrameSource`, or an iterable of uint8 HxWxC images.
        live: Drop stale frames (``None``: cameras and live URL schemes are live, files,
            folders and iterables are not).
        timeout: Seconds opening may wait: a network read before FFmpeg gives up, a FIFO for
            its writer's first data (``None``: no limit). The stream's stall timeout.

    Returns:
        The opened :class:`FrameSource` (the caller closes it).

    Raises:
        DataError: The source does not exist or cannot be opened (the message says why).
        DependencyError: A video source needs PyAV (the ``stream`` extra).
    """
    if isinstance(source, FrameSource):
        if live is not None:
            source.live = live
        return source
    if isinstance(source, int) and not isinstance(source, bool):
        source = f"/dev/video{source}"
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text.isdigit():
            text = f"/dev/video{text}"
        if _CAMERA.match(text):
            if not os.path.exists(text):
                raise DataError(f"camera {text} does not exist; list cameras with "
                                "`ls /dev/video*` (is it plugged in, and is this user in the "
                                "'video' group?)")
            return VideoSource(text, name=text, live=True if live is None else live,
                               fmt="v4l2")
        if _URL.match(text):
            scheme = text.split(":", 1)[0].lower()
            is_live = scheme in LIVE_SCHEMES if live is None else live
            return VideoSource(text, name=text, live=is_live, timeout=timeout)
        path = Path(text)
        problem = path_problem(path, want="any")
        if problem is not None and not path.is_fifo():  # a FIFO is a fine live pipe
            raise DataError(f"source {text} {problem}; give a video file, an image folder, "
                            "a camera (/dev/videoN or its index) or a stream URL")
        if path.is_dir():
            src: FrameSource = FolderSource(path)
            src.live = bool(live)
            return src
        if path.is_file() and path.stat().st_size == 0:
            raise DataError(f"source {text} is an empty file")
        if path.is_fifo():
            fd = _wait_for_fifo(path, timeout)
            try:  # a writer is there now: FFmpeg's open does not block
                return VideoSource(text, name=text, live=bool(live))
            finally:
                os.close(fd)
        return VideoSource(text, name=text, live=bool(live))
    if isinstance(source, Iterable):
        return IterableSource(source, live=bool(live))
    raise DataError(f"cannot read frames from a {type(source).__name__}; give a path, a camera "
                    "index, a URL or an iterable of images")
