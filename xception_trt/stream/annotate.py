"""Annotated output video: the top label and its probability drawn on each frame (Pillow's
ImageDraw), encoded with PyAV. The file is written under a temporary name and renamed when
closed, so a reader never sees a half-written video; closing after Ctrl-C still finalises it.

PyAV writes through a Python file object that this module owns (:class:`_Sink`), so a failed
write (``ENOSPC``: disk full) is a Python ``OSError`` that PyAV hands back from ``mux()``
(av/container/pyio: ``stash_exception``) instead of an FFmpeg error code it may lose. After
one, the file object is closed *before* ``container.close()``: PyAV then skips
``av_write_trailer`` (av/container/output.py ``close_output``: "If the underlying Python IO
file was already closed ... skip the trailer"), which on a muxer whose last write failed is
where the old path crashed (SIGSEGV).
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..extras import needs
from ..fsio import default_file_mode, environment_error_text, temp_sibling

__all__ = ["draw_label", "VideoWriter", "VIDEO_FORMATS"]

log = logging.getLogger(__name__)

#: Output suffix -> (FFmpeg container, codecs to try in order).
VIDEO_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".mp4": ("mp4", ("libx264", "mpeg4")),
    ".m4v": ("mp4", ("libx264", "mpeg4")),
    ".mov": ("mov", ("libx264", "mpeg4")),
    ".mkv": ("matroska", ("libx264", "mpeg4")),
    ".avi": ("avi", ("mpeg4",)),
    ".webm": ("webm", ("libvpx-vp9",)),
}


def draw_label(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` (uint8 RGB) with ``text`` on a dark band in its top-left corner (a copy)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(image).convert("RGB")
    size = max(10, img.height // 20)
    try:
        font: Any = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((4, 4), text, font=font)
    draw.rectangle((0, 0, box[2] + 4, box[3] + 4), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


class _Sink:
    """The temporary video file PyAV writes to (``write``/``seek``/``tell``/``close``, the
    methods av/container/pyio.py calls on a Python file object)."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, data: bytes) -> int:
        return self._fh.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def flush(self) -> None:
        self._fh.flush()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        self._fh.close()


class VideoWriter:
    """Encode RGB frames to a video file (H.264 in .mp4/.mov/.mkv, MPEG-4 in .avi, VP9 in
    .webm).

    Args:
        path: The output file; its suffix picks the container.
        fps: Nominal frame rate (used when frames carry no timestamps).

    Raises:
        ConfigError: An unsupported suffix.
        DependencyError: PyAV is not installed (the ``stream`` extra).
    """

    def __init__(self, path: str | os.PathLike[str], *, fps: float | None = None) -> None:
        with needs("writing annotated video", extra="stream"):
            import av
        self._av = av
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_FORMATS:
            raise ConfigError(f"cannot write video {self.path}: unknown suffix {suffix!r}; use "
                              f"one of {', '.join(VIDEO_FORMATS)}")
        self._fmt, codecs = VIDEO_FORMATS[suffix]
        self._codec = next((c for c in codecs if c in av.codecs_available), None)
        if self._codec is None:
            raise ConfigError(f"this PyAV build has none of the encoders {codecs} for {suffix}")
        self.fps = fps if fps and fps > 0 else 30.0
        self._tmp: Path | None = None
        self._sink: _Sink | None = None
        self._container: Any = None
        self._stream: Any = None
        self._last_pts = -1
        self.frames = 0
        #: The finished file was moved into place (a writer that failed or got no frame: no).
        self.done = False

    def _open(self, width: int, height: int) -> None:
        av = self._av
        self._tmp = temp_sibling(self.path)
        self._sink = _Sink(self._tmp)
        self._container = av.open(self._sink, "w", format=self._fmt)
        rate = Fraction(self.fps).limit_denominator(1000)
        self._stream = self._container.add_stream(self._codec, rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = Fraction(1, 1000)
        self._size = (width, height)

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        """Append one RGB frame (resized to the first frame's size, even sides for 4:2:0)."""
        av = self._av
        if self._container is None:
            h, w = image.shape[:2]
            self._open(max(2, w - w % 2), max(2, h - h % 2))
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:, :, :3]), format="rgb24")
        frame = frame.reformat(width=self._size[0], height=self._size[1], format="yuv420p")
        pts = (int(round(timestamp * 1000)) if timestamp is not None
               else int(round(self.frames * 1000 / self.fps)))
        pts = max(pts, self._last_pts + 1)  # strictly increasing, whatever the source says
        frame.pts, frame.time_base = pts, Fraction(1, 1000)
        self._last_pts = pts
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            self._fail(exc, f"frame {self.frames}")
        self.frames += 1

    def _fail(self, exc: BaseException, what: str) -> None:
        """Drop the partial file and raise one clear error for ``exc``."""
        self.abort()
        text = environment_error_text(exc, path=self.path) if isinstance(exc, OSError) else None
        raise DataError(text or f"cannot encode {what} to {self.path}: {exc}") from None

    def close(self) -> None:
        """Flush the encoder and move the finished file into place (idempotent). A writer
        that got no frame writes nothing; a write that fails (disk full) leaves nothing.

        Raises:
            DataError: Flushing or finalising the file failed (message names the cause).
        """
        if self._container is None:
            return
        av = self._av
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            container, self._container = self._container, None
            container.close()  # writes the trailer through the sink
            if self._sink is not None:
                self._sink.close()  # flushes: a full disk shows here, not after the rename
        except (av.FFmpegError, OSError) as exc:
            self._fail(exc, "the end of the video")
        if self._tmp is not None:
            os.chmod(self._tmp, default_file_mode())  # mkstemp's 0600 -> the umask's mode
            os.replace(self._tmp, self.path)
            self._tmp = None
            self.done = True
        log.info("wrote %s (%d frames)", self.path, self.frames)

    def abort(self) -> None:
        """Drop the partial file (after an encoding or write error). The file object is
        closed first, so PyAV does not write a trailer onto a failed muxer."""
        if self._sink is not None:
            try:
                self._sink.close()
            except OSError:  # the file is discarded anyway (close flushes: disk full again)
                pass
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            except Exception:  # the file is discarded anyway
                pass
        if self._tmp is not None:
            try:
                self._tmp.unlink()
            except FileNotFoundError:
                pass
            self._tmp = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
