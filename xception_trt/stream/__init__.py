"""Classify live video: frame sources (files, folders, cameras, URLs), a pipelined
decode -> preprocess -> inference loop and annotated output. The application API is
:meth:`xception_trt.classifier.Classifier.stream`; the CLI is ``xception-trt stream``.
Video decoding and encoding need PyAV (the ``stream`` extra)."""

from .pipeline import FrameOutput, StreamStats, run_stream
from .source import Frame, FrameSource, open_source

__all__ = ["Frame", "FrameSource", "open_source", "FrameOutput", "StreamStats", "run_stream"]
