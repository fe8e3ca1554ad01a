"""Calibration caches: our per-(graph, method, options) JSON entries and TensorRT's text cache.

Our cache (default :data:`DEFAULT_CACHE_DIR`: the per-user ``$XDG_CACHE_HOME/xception-trt/
calibration``, else ``~/.cache/xception-trt/calibration``, next to the bundles' engine cache;
nothing is written in the current folder): one JSON file per (graph, method, options) holding the
per-tensor activation scales (and, for the ONNX Runtime placement, their zero points). Its key
also covers the calibration set fingerprint, the preprocessing (ModelSpec + input format), image
count, seed, batch size, the placement target (``onnxruntime`` entries name it; no target means
``tensorrt``) and the version of the tool that calibrated (ModelOpt, or ONNX Runtime for its own
placement); a hit re-applies the scales without running calibration, a stale or foreign file is
never used (a log line says why) and is replaced after recalibration.

TensorRT's text cache (``TRT-<version>-EntropyCalibration2``, then ``tensor: <hex scale>``
lines) is read to import scales calibrated for TensorRT 8/10 implicit INT8 and written for
TensorRT 8.6, which still builds INT8 from an FP32 ONNX plus a calibrator.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import CalibrationError, ConfigError, renamed
from ..fsio import atomic_write_json, atomic_write_text

__all__ = ["DEFAULT_CACHE_DIR", "DEFAULT_CACHE_DIR_HELP", "default_cache_dir", "CACHE_FORMAT",
           "CACHE_VERSION", "read_trt_calibration_cache",
           "write_trt_calibration_cache", "load_import_cache", "read_entry", "stale_reasons",
           "entry_path", "lookup_entry", "lookup_zero_points", "write_entry"]

log = logging.getLogger(__name__)



def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/xception-trt/calibration`` (XDG base-directory spec), else
    ``~/.cache/xception-trt/calibration``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xception-trt" / "calibration"


class _DefaultCacheDir(os.PathLike):  # type: ignore[type-arg]
    """The per-user calibration cache, resolved each time it is used (so a changed
    ``$XDG_CACHE_HOME`` counts): pass it wherever a cache folder is taken."""

    def __fspath__(self) -> str:
        return str(default_cache_dir())

    def __str__(self) -> str:
        return self.__fspath__()

    def __repr__(self) -> str:
        return "DEFAULT_CACHE_DIR"


#: The default calibration cache folder (see :func:`default_cache_dir`).
DEFAULT_CACHE_DIR = _DefaultCacheDir()
#: How help texts name it.
DEFAULT_CACHE_DIR_HELP = ("$XDG_CACHE_HOME/xception-trt/calibration, else "
                          "~/.cache/xception-trt/calibration")
CACHE_FORMAT = "xception-trt-calibration-cache"
CACHE_VERSION = 1
_TRT_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
_TRT_LINE = re.compile(r"^(.+): ([0-9a-fA-F]{8})$")


def read_trt_calibration_cache(path: str | os.PathLike[str]) -> dict[str, float]:
    """Read a TensorRT text calibration cache (``TRT-<ver>-EntropyCalibration2`` header, then
    ``tensor: <big-endian float32 scale as 8 hex digits>`` lines) as {tensor: scale}.

    Raises:
        CalibrationError: Missing file, unknown header, malformed line (line number named),
            non-finite or non-positive scale, or no entries.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration cache {path} does not exist")
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise CalibrationError(f"{path} is not a TensorRT text calibration cache ({exc}); "
                               "give the file written by a TensorRT INT8 calibrator") from None
    if not lines or not _TRT_HEADER.match(lines[0].strip()):
        head = lines[0][:60] if lines else "<empty file>"
        raise CalibrationError(
            f"{path} is not a TensorRT text calibration cache: first line {head!r} is not "
            "'TRT-<version>-<Calibrator>' (e.g. TRT-8601-EntropyCalibration2)")
    scales: dict[str, float] = {}
    for lineno, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        m = _TRT_LINE.match(line)
        if not m:
            raise CalibrationError(f"{path}:{lineno}: expected 'tensor_name: 8-hex-digit scale', "
                                   f"got {line[:80]!r}")
        value = struct.unpack("!f", bytes.fromhex(m.group(2)))[0]
        if not math.isfinite(value) or value < 0:
            raise CalibrationError(f"{path}:{lineno}: scale of {m.group(1)!r} is {value}; a "
                                   "calibration scale must be a finite, non-negative number")
        scales[m.group(1)] = float(value)
    if not scales:
        raise CalibrationError(f"{path} holds no tensor scales")
    return scales


def write_trt_calibration_cache(scales: Mapping[str, float],
                                output: str | os.PathLike[str] | None = None, *,
                                header: str = "TRT-8601-EntropyCalibration2",
                                path: str | os.PathLike[str] | None = None) -> Path:
    """Write {tensor: scale} to ``output`` as a TensorRT text calibration cache (atomically;
    ``path=`` is its old name, deprecated).

    Useful for TensorRT 8.6 (JetPack 5), which builds INT8 from an FP32 ONNX plus a calibrator
    that reads this cache.
    """
    output = renamed("path", "output", path, output, where="write_trt_calibration_cache")
    if output is None:
        raise ConfigError("write_trt_calibration_cache needs output=, the file to write")
    if not _TRT_HEADER.match(header):
        raise ConfigError(f"header {header!r} is not 'TRT-<version>-<Calibrator>'")
    lines = [header] + [f"{k}: {struct.pack('!f', float(v)).hex()}" for k, v in scales.items()]
    return atomic_write_text(output, "\n".join(lines) + "\n", error=CalibrationError)


def _graph_tensor_names(model: Any) -> set[str]:
    names = {i.name for i in model.graph.input}
    for node in model.graph.node:
        names.update(node.output)
    return names


def load_import_cache(path: Path, model: Any, gsha: str) -> dict[str, float]:
    """Scales from an explicit cache file: our JSON (graph hash checked) or TensorRT text.

    Args:
        path: The file (``--import-cache``).
        model: The FP32 graph the scales are for (TensorRT names must be its tensors).
        gsha: That graph's :func:`~xception_trt.precision.source.graph_sha256`.

    Raises:
        CalibrationError: Missing or unreadable file, an entry for another graph, no tensor
            of this graph named, or a zero scale.
    """
    if not path.is_file():
        raise CalibrationError(f"calibration cache {path} does not exist")
    try:
        head = path.read_bytes()[:1]
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration cache {path}: {exc.strerror}") from None
    if head == b"{":
        entry = read_entry(path)
        if entry is None:
            raise CalibrationError(f"{path} is not an xception-trt calibration cache (unknown "
                                   "format or version); recalibrate with images")
        if entry["key"]["graph"] != gsha:
            raise CalibrationError(
                f"calibration cache {path} was written for another graph (sha256 "
                f"{entry['key']['graph'][:12]}..., this graph is {gsha[:12]}...); recalibrate "
                "with images or give the cache of this model")
        return {k: float(v) for k, v in entry["scales"].items()}
    scales = read_trt_calibration_cache(path)
    known = _graph_tensor_names(model)
    matched = {k: v for k, v in scales.items() if k in known}
    if not matched:
        raise CalibrationError(
            f"none of the {len(scales)} tensor names in {path} exist in this graph: the cache "
            "was written for another graph; recalibrate with images")
    if len(matched) < len(scales):
        log.info("TensorRT cache %s: %d of %d entries name tensors of this graph (the rest are "
                 "ignored)", path, len(matched), len(scales))
    zero = [k for k, v in matched.items() if v == 0.0]
    if zero:
        raise CalibrationError(f"{path}: tensor(s) {', '.join(zero[:5])} have scale 0, which "
                               "cannot be used for Q/DQ; recalibrate with images")
    return matched


# ---------------------------------------------------------------------------------------------
# our calibration cache


def read_entry(path: Path) -> dict[str, Any] | None:
    """The cache entry at ``path``, or ``None`` when it is unreadable, foreign, of another
    format version, or holds a scale that is not a finite positive number."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT
            or entry.get("version") != CACHE_VERSION or not isinstance(entry.get("key"), dict)
            or not isinstance(entry.get("scales"), dict)):
        return None
    try:
        if not all(math.isfinite(float(v)) and float(v) > 0 for v in entry["scales"].values()):
            return None
    except (TypeError, ValueError):
        return None
    return entry


_KEY_REASONS = {
    "graph": "it was written for another graph",
    "data": "the calibration images changed (names, sizes or mtimes)",
    "preprocessing": "the preprocessing (ModelSpec or input format) changed",
    "method": "the calibration method differs",
    "options": "the quantization options (exclusions, percentile, ...) differ",
    "num_images": "the number of calibration images differs",
    "seed": "the selection seed differs",
    "batch_size": "the calibration batch size differs",
    "modelopt": "the ModelOpt version differs",
    "target": "the Q/DQ placement target (tensorrt / onnxruntime) differs",
    "onnxruntime": "the ONNX Runtime version differs",
}


def stale_reasons(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Why an entry with key ``old`` does not serve a request with key ``new`` (one phrase per
    differing key field)."""
    return [_KEY_REASONS.get(k, f"{k} differs") for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def entry_path(cache_dir: str | os.PathLike[str], graph_sha: str, method: str,
               options_sha: str) -> Path:
    """Where the entry for (graph, method, options) lives in ``cache_dir``."""
    return Path(cache_dir) / f"{graph_sha[:16]}-{method}-{options_sha[:8]}.json"


def lookup_entry(path: Path, key: Mapping[str, Any]) -> dict[str, float] | None:
    """The scales of the entry at ``path`` when it is valid and was written for ``key``.

    Returns:
        {tensor: scale}, or ``None`` (a log line says why: no entry, a foreign or corrupt file,
        or a stale entry with the key fields that differ).
    """
    if not path.exists():
        log.info("no calibration cache entry %s; calibrating", path)
        return None
    if not path.is_file():
        log.warning("calibration cache entry %s is not a file (a directory?); calibrating, and "
                    "the scales cannot be cached there until it is removed", path)
        return None
    entry = read_entry(path)
    if entry is None:
        log.warning("calibration cache %s is not a valid xception-trt cache (foreign, corrupt "
                    "or an old format); ignoring it and recalibrating", path)
        return None
    if entry["key"] != key:
        log.warning("calibration cache %s is stale (%s); recalibrating", path,
                    "; ".join(stale_reasons(entry["key"], key)))
        return None
    log.info("calibration cache hit: %s", path)
    return {k: float(v) for k, v in entry["scales"].items()}


def lookup_zero_points(path: Path) -> dict[str, int]:
    """The activation zero points of the (valid) entry at ``path``; empty when it has none
    (entries for the TensorRT placement: symmetric, every zero point is 0)."""
    entry = read_entry(path)
    zps = entry.get("zero_points") if entry is not None else None
    return {k: int(v) for k, v in zps.items()} if isinstance(zps, dict) else {}


def write_entry(path: Path, key: Mapping[str, Any], *, scales: Mapping[str, float],
                quantized_nodes: Sequence[str], excluded_nodes: Sequence[str],
                seconds: float, zero_points: Mapping[str, int] | None = None) -> bool:
    """Write (atomically) the entry for ``key`` with the scales (and, for asymmetric
    activations, the zero points) one calibration produced.

    A cache that cannot be written never costs the result: a warning says why and the caller
    goes on with the scales it has.

    Returns:
        Whether the entry was written.
    """
    try:
        _write_entry(path, key, scales=scales, quantized_nodes=quantized_nodes,
                     excluded_nodes=excluded_nodes, seconds=seconds, zero_points=zero_points)
    except (CalibrationError, OSError) as exc:
        log.warning("calibration cache entry %s could not be written (%s); the result is kept, "
                    "but the next run calibrates again", path, exc)
        return False
    return True


def _write_entry(path: Path, key: Mapping[str, Any], *, scales: Mapping[str, float],
                 quantized_nodes: Sequence[str], excluded_nodes: Sequence[str],
                 seconds: float, zero_points: Mapping[str, int] | None = None) -> None:
    extra = {"zero_points": dict(zero_points)} if zero_points else {}
    atomic_write_json(path, {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "key": dict(key),
        "scales": dict(scales), **extra, "quantized_nodes": list(quantized_nodes),
        "excluded_nodes": list(excluded_nodes), "written_by": f"xception-trt {__version__}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "calibration_seconds": round(seconds, 3)}, error=CalibrationError)
    log.info("calibration cache written: %s", path)
