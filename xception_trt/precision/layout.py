"""ModelOpt's Q/DQ placement, kept so that it is made once per graph and options.

ModelOpt's placement of a graph does not depend on the activation scales it is given (they are
written into the ``<tensor>_scale`` initializers of its QuantizeLinear/DequantizeLinear pairs at
the end, ``qdq_utils.replace_scale_values``). Its output is therefore kept as a *layout*: the
placed graph with every initializer that is the source graph's own (the weights: by far the
most bytes) replaced by an empty placeholder of the same name. Applying a layout to the source
graph and a set of scales rebuilds ModelOpt's output without ModelOpt -- no import, no
calibration run, no per-channel weight scales in Python.

A layout lives in the calibration cache folder as ``<graph sha[:16]>-layout-<key sha[:8]>.onnx``
with a JSON entry beside it; the entry's key names the graph, the exclusions and the ModelOpt
version, and holds the layout file's SHA-256. Both files are untrusted input: a layout is used
only when the entry is ours and current, the file's hash matches, every placeholder names an
initializer of the source graph with the same type and shape, and it adds no op but
QuantizeLinear/DequantizeLinear to the source's; anything else is ignored (a log line says why)
and ModelOpt places the graph again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationError
from ..fsio import atomic_write_bytes, atomic_write_json

__all__ = ["LAYOUT_FORMAT", "LAYOUT_VERSION", "make_layout", "apply_layout",
           "activation_quantizers", "layout_activations", "layout_paths", "read_layout",
           "write_layout"]

log = logging.getLogger(__name__)

LAYOUT_FORMAT = "xception-trt-qdq-layout"
LAYOUT_VERSION = 1
#: Metadata key of a layout model listing its placeholders (JSON list of names).
_BORROWED = "xception_trt.layout_borrowed"
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _same(a: Any, b: Any) -> bool:
    from onnx import numpy_helper

    if a.data_type != b.data_type or list(a.dims) != list(b.dims):
        return False
    return bool(np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b)))


def make_layout(placed: Any, source: Any) -> bytes:
    """The layout of ModelOpt's ``placed`` graph made from ``source`` (serialized ONNX): every
    initializer equal to the source's of the same name becomes a data-less placeholder."""
    import onnx

    src = {i.name: i for i in source.graph.initializer}
    layout = onnx.ModelProto()
    layout.CopyFrom(placed)
    borrowed = []
    for init in layout.graph.initializer:
        other = src.get(init.name)
        if other is not None and _same(init, other):
            dims, dtype = list(init.dims), init.data_type
            init.Clear()
            init.name, init.data_type = other.name, dtype
            init.dims.extend(dims)
            borrowed.append(other.name)
    entry = layout.metadata_props.add()
    entry.key, entry.value = _BORROWED, json.dumps(borrowed)
    return layout.SerializeToString()


def apply_layout(layout_bytes: bytes, source: Any, scales: Mapping[str, float]) -> Any:
    """ModelOpt's placed graph rebuilt from a layout, the source graph and activation scales.

    Args:
        layout_bytes: A layout from :func:`make_layout`.
        source: The FP32 graph it was made from (its initializers fill the placeholders).
        scales: {activation tensor: scale}; every activation the layout quantizes needs one.

    Returns:
        The Q/DQ ``onnx.ModelProto``.

    Raises:
        CalibrationError: The layout does not fit the source graph (``MISSING-SCALES`` in the
            message when only scales are missing).
    """
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load_from_string(layout_bytes)
        meta = {p.key: p.value for p in model.metadata_props}
        borrowed = set(json.loads(meta[_BORROWED]))
    except Exception as exc:  # any parse failure of an untrusted file
        raise CalibrationError(f"not a Q/DQ layout ({type(exc).__name__})") from None
    src = {i.name: i for i in source.graph.initializer}
    extra_ops = {n.op_type for n in model.graph.node} - {n.op_type for n in source.graph.node}
    if extra_ops - set(_QDQ):
        raise CalibrationError(f"the layout adds op(s) {sorted(extra_ops - set(_QDQ))}")
    if ([i.name for i in model.graph.input] != [i.name for i in source.graph.input]
            or [o.name for o in model.graph.output] != [o.name for o in source.graph.output]):
        raise CalibrationError("the layout's inputs/outputs are not the source graph's")
    for init in model.graph.initializer:
        if init.name not in borrowed:
            continue
        other = src.get(init.name)
        if other is None or other.data_type != init.data_type or list(other.dims) != list(
                init.dims):
            raise CalibrationError(f"the layout's initializer {init.name!r} is not the source "
                                   "graph's")
        init.CopyFrom(other)
    del model.metadata_props[[p.key for p in model.metadata_props].index(_BORROWED)]
    inits = {i.name: n for n, i in enumerate(model.graph.initializer)}
    missing = []
    for node in activation_quantizers(model):
        x, scale_name = node.input[0], node.input[1]
        if x not in scales:
            missing.append(x)
            continue
        if scale_name not in inits:
            raise CalibrationError(f"the layout has no scale initializer {scale_name!r}")
        # As ModelOpt's replace_scale_values writes it.
        model.graph.initializer[inits[scale_name]].CopyFrom(
            numpy_helper.from_array(np.float32(scales[x]), scale_name))
    if missing:
        raise CalibrationError(
            f"MISSING-SCALES {len(missing)} quantized activation(s) have no scale: "
            + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    return model


def activation_quantizers(model: Any) -> list[Any]:
    """The QuantizeLinear nodes of ``model`` that quantize an activation, in node order; a
    weight's (fed by an initializer, or by a Constant/Identity of initializers) are left out:
    its per-channel scale is part of the placement, not calibrated."""
    inits = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    found = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        src_node = producers.get(node.input[0])
        if node.input[0] in inits or (
                src_node is not None and src_node.op_type in ("Constant", "Identity")
                and all(i in inits for i in src_node.input)):
            continue
        found.append(node)
    return found


def layout_activations(layout_bytes: bytes) -> list[str]:
    """The activations a layout quantizes (each needs a scale in :func:`apply_layout`), in
    node order without repeats; ``[]`` for bytes that are not a model."""
    import onnx

    try:
        model = onnx.load_from_string(layout_bytes)
    except Exception:  # untrusted bytes: apply_layout says what is wrong with them
        return []
    return list(dict.fromkeys(node.input[0] for node in activation_quantizers(model)))


def layout_paths(cache_dir: str | os.PathLike[str], key: Mapping[str, Any]) -> tuple[Path, Path]:
    """(entry JSON, layout ONNX) for ``key`` in ``cache_dir``."""
    ksha = hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()
    stem = f"{str(key['graph'])[:16]}-layout-{ksha[:8]}"
    folder = Path(cache_dir)
    return folder / f"{stem}.json", folder / f"{stem}.onnx"


def read_layout(cache_dir: str | os.PathLike[str], key: Mapping[str, Any]) -> bytes | None:
    """The layout cached for ``key``, or ``None`` (absent, foreign, stale or corrupt: a log line
    says which)."""
    entry_path, onnx_path = layout_paths(cache_dir, key)
    if not entry_path.is_file() or not onnx_path.is_file():
        return None
    try:
        entry = json.loads(entry_path.read_text(encoding="utf-8"))
        data = onnx_path.read_bytes()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        log.warning("Q/DQ layout %s is unreadable; ModelOpt places the graph again", entry_path)
        return None
    if (not isinstance(entry, dict) or entry.get("format") != LAYOUT_FORMAT
            or entry.get("version") != LAYOUT_VERSION or entry.get("key") != dict(key)):
        log.warning("Q/DQ layout %s is not for this graph and options; ModelOpt places the "
                    "graph again", entry_path)
        return None
    if entry.get("sha256") != hashlib.sha256(data).hexdigest():
        log.warning("Q/DQ layout %s does not match its entry's hash (changed or truncated); "
                    "ModelOpt places the graph again", onnx_path)
        return None
    return data


def write_layout(cache_dir: str | os.PathLike[str], key: Mapping[str, Any], data: bytes) -> None:
    """Keep a layout for ``key`` (atomically; a failure is a warning, never an error)."""
    entry_path, onnx_path = layout_paths(cache_dir, key)
    try:
        atomic_write_bytes(onnx_path, data, error=CalibrationError)
        atomic_write_json(entry_path, {"format": LAYOUT_FORMAT, "version": LAYOUT_VERSION,
                                       "key": dict(key),
                                       "sha256": hashlib.sha256(data).hexdigest()},
                          error=CalibrationError)
    except (CalibrationError, OSError) as exc:
        log.warning("Q/DQ layout %s could not be written (%s); the next run places the graph "
                    "with ModelOpt again", onnx_path, exc)
