"""DeepStream configuration export: an ``nvinfer`` configuration that runs the classifier as a
primary (full-frame) classifier, its ONNX graph and label file, and a ``deepstream-app``
configuration that runs it on a file, camera or stream.

nvinfer's preprocessing is ``y = net-scale-factor * (x - offsets[c])`` on 0..255 pixels.
Ours is ``y = (x / 255 - mean[c]) / std[c]``, so with one std for every channel
``net-scale-factor = 1 / (255 std)`` and ``offsets = 255 mean`` reproduce it exactly. With
per-channel std there is no single scale factor: the graph then takes raw 0..255 pixels with
the normalisation folded into its first convolution (:func:`xception_trt.graph.
add_uint8_nhwc_input`, whose uint8 Cast/Transpose stem is replaced by a float NCHW input,
since nvinfer always feeds float planar data), and nvinfer passes pixels through unchanged
(``net-scale-factor=1``, ``offsets=0``).

nvinfer's default classifier parser reads probabilities, so the exported graph ends in a
Softmax. nvinfer scales the whole frame to the network size; our centre crop is not
reproduced (crop upstream, e.g. with nvdspreprocess, for identical geometry).

UNVERIFIED: no DeepStream installation was available; the keys follow NVIDIA's documentation
and the configuration parsers' sources (see ``tests/test_deepstream.py``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import ModelSpec, Precision, StrEnum
from .contract import ENGINE_SUFFIXES, ONNX_SUFFIXES
from .errors import ConfigError, GraphError
from .fsio import atomic_write_bytes, atomic_write_text
from .onnx_meta import INPUT_NAME, OUTPUT_NAME

__all__ = ["NvinferPreprocess", "nvinfer_preprocess", "apply_nvinfer_preprocess",
           "pixel_input_graph", "DeepStreamExport", "export_deepstream", "SourceKind",
           "PROBABILITIES"]

log = logging.getLogger(__name__)

#: Name of the Softmax output appended for nvinfer's classifier parser.
PROBABILITIES = "probabilities"
#: nvinfer ``network-mode`` per precision.
NETWORK_MODE = {Precision.FP32: 0, Precision.INT8: 1, Precision.FP16: 2}


class SourceKind(StrEnum):
    """What the deepstream-app configuration reads."""

    URI = "uri"
    CAMERA = "camera"


@dataclass(frozen=True)
class NvinferPreprocess:
    """nvinfer's preprocessing parameters: ``y = net_scale_factor * (x - offsets[c])``.

    Attributes:
        net_scale_factor: The scale factor.
        offsets: Per-channel offsets in pixel units.
        folded: True when the normalisation lives in the graph (per-channel std), so nvinfer
            passes raw pixels (scale 1, offsets 0).
    """

    net_scale_factor: float
    offsets: tuple[float, ...]
    folded: bool


def nvinfer_preprocess(spec: ModelSpec) -> NvinferPreprocess:
    """The nvinfer parameters that reproduce ``spec``'s normalisation.

    Returns:
        Scale ``1 / (255 std)`` and offsets ``255 mean`` when every channel has the same std;
        otherwise the pass-through (``1``, zeros) with ``folded=True``.
    """
    if len(set(spec.std)) == 1:
        return NvinferPreprocess(1.0 / (255.0 * spec.std[0]),
                                 tuple(255.0 * m for m in spec.mean), False)
    return NvinferPreprocess(1.0, (0.0,) * spec.in_chans, True)


def apply_nvinfer_preprocess(pixels: np.ndarray, pre: NvinferPreprocess) -> np.ndarray:
    """What nvinfer feeds the network: uint8 NHWC pixels -> float32 NCHW
    ``net_scale_factor * (x - offsets)`` (nvinfer computes in float32)."""
    x = pixels.astype(np.float32)
    y = np.float32(pre.net_scale_factor) * (x - np.asarray(pre.offsets, dtype=np.float32))
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def _strip_uint8_stem(model: Any) -> Any:
    """Replace a uint8-nhwc graph's ``Cast -> Transpose`` stem by a float32 NCHW input of raw
    0..255 pixels (in place)."""
    import onnx

    g = model.graph
    inp = next((i for i in g.input if i.name == INPUT_NAME), None)
    users = [n for n in g.node if INPUT_NAME in n.input]
    if inp is None or len(users) != 1 or users[0].op_type != "Cast":
        raise GraphError("the uint8-nhwc graph does not start with the Cast of its input; "
                         "re-export it with `xception-trt export --input-format uint8-nhwc`")
    cast = users[0]
    after = [n for n in g.node if cast.output[0] in n.input]
    if len(after) != 1 or after[0].op_type != "Transpose":
        raise GraphError("the uint8-nhwc graph's Cast is not followed by its NHWC->NCHW "
                         "Transpose; re-export it")
    transpose = after[0]
    nchw = transpose.output[0]
    dims = [d for d in inp.type.tensor_type.shape.dim]  # N, H, W, C
    shape: list[Any] = [d.dim_param or d.dim_value for d in dims]
    new_shape = [shape[0], shape[3], shape[1], shape[2]]
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == nchw:
                node.input[i] = INPUT_NAME
    g.node.remove(cast)
    g.node.remove(transpose)
    g.input.remove(inp)
    g.input.insert(0, onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT,
                                                         new_shape))
    stale = {cast.output[0], nchw}
    for vi in [v for v in g.value_info if v.name in stale]:
        g.value_info.remove(vi)
    return model


def _append_softmax(model: Any) -> Any:
    """Make the graph output softmax probabilities (nvinfer's classifier parser reads them)."""
    import onnx

    g = model.graph
    out = next((o for o in g.output if o.name == OUTPUT_NAME), None)
    if out is None:
        raise GraphError(f"the graph has no {OUTPUT_NAME!r} output; re-export it")
    g.node.append(onnx.helper.make_node("Softmax", [OUTPUT_NAME], [PROBABILITIES],
                                        name="probabilities_softmax", axis=1))
    probs = onnx.helper.make_tensor_value_info(PROBABILITIES, out.type.tensor_type.elem_type,
                                               None)
    probs.type.CopyFrom(out.type)
    g.output.remove(out)
    g.output.append(probs)
    return model


def pixel_input_graph(model: Any, spec: ModelSpec, input_format: str) -> tuple[Any, bool]:
    """The graph nvinfer runs: float NCHW input, Softmax output, and (per-channel std, or a
    uint8-nhwc graph) the normalisation folded into the first convolution.

    Args:
        model: Our exported ``onnx.ModelProto`` (float-nchw or uint8-nhwc); not modified.
        spec: Its ModelSpec.
        input_format: Its input format (``float-nchw`` / ``uint8-nhwc``).

    Returns:
        ``(model, folded)``: the new model, and whether it takes raw pixels.

    Raises:
        GraphError: The graph does not have the structure our exporter writes.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    folded = nvinfer_preprocess(spec).folded
    if input_format == "float-nchw" and folded:
        from .graph import uint8_nhwc_model  # onnx-graphsurgeon: the [build] extra

        out = uint8_nhwc_model(out, spec, check=False)
    if input_format == "uint8-nhwc" or folded:
        out = _strip_uint8_stem(out)
        folded = True
    out = _append_softmax(out)
    del out.metadata_props[:]  # our readers must not take this variant for the original
    out.doc_string = ("xception-trt DeepStream variant: float NCHW input, softmax output"
                      + (", normalisation folded (raw 0..255 pixels)" if folded else ""))
    onnx.checker.check_model(out)
    return out, folded


@dataclass(frozen=True)
class DeepStreamExport:
    """What :func:`export_deepstream` wrote.

    Attributes:
        directory: The output folder.
        nvinfer_config: The ``[property]`` file for nvinfer (``config_infer_primary.txt``).
        app_config: The ``deepstream-app -c`` file.
        onnx: The graph nvinfer builds its engine from.
        labels: The label file (one line, ``;``-separated, as classifiers need).
        engine: Where nvinfer caches the engine it builds (``model-engine-file``).
        preprocess: The preprocessing parameters written.
    """

    directory: Path
    nvinfer_config: Path
    app_config: Path
    onnx: Path
    labels: Path
    engine: Path
    preprocess: NvinferPreprocess


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same double
    if isinstance(value, (tuple, list)):
        return ";".join(_fmt(v) for v in value)
    return str(value)


#: The source URI written when none is given: a placeholder to edit.
PLACEHOLDER_URI = "file:///path/to/video.mp4"
_MAX_INT32 = 2**31 - 1
#: Largest streammux/camera side in pixels (beyond 16K video).
_MAX_SIDE = 32768


def _ini(groups: dict[str, dict[str, Any]], header: str) -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for name, keys in groups.items():
        lines += ["", f"[{name}]"] + [f"{k}={_fmt(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


_HEADER = ("Written by xception-trt {version}. UNVERIFIED: not run with DeepStream here.\n"
           "{extra}")


def export_deepstream(model_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                      batch_size: int = 1, source: str | None = None,
                      source_kind: SourceKind | str = SourceKind.URI, camera: int = 0,
                      width: int = 1280, height: int = 720, threshold: float = 0.0,
                      gpu_id: int = 0) -> DeepStreamExport:
    """Write an nvinfer configuration, its graph and labels, and a deepstream-app configuration.

    Args:
        model_path: An ONNX file exported by xception-trt (FP32, FP16 or INT8 Q/DQ; either
            input format).
        out_dir: Folder to write into (created).
        batch_size: nvinfer/streammux batch size.
        source: The deepstream-app source URI (``file:///...``, ``rtsp://...``; ``None``: the
            placeholder :data:`PLACEHOLDER_URI` to edit). Not with ``camera`` sources.
        source_kind: ``uri`` or ``camera`` (V4L2 ``/dev/video<camera>``).
        camera: V4L2 device number for ``camera``.
        width, height: streammux resolution.
        threshold: ``classifier-threshold``: lowest probability attached as a label.
        gpu_id: GPU index.

    Returns:
        The paths written (:class:`DeepStreamExport`).

    Raises:
        ConfigError: An engine or checkpoint given, or a value out of range.
        GraphError: The ONNX file is not one of ours.
    """
    from . import __version__
    from .config import check_int
    from .onnx_meta import load_onnx, read_metadata

    path = Path(model_path)
    suffix = path.suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        raise ConfigError(f"{path} is a TensorRT engine; DeepStream needs the ONNX it was built "
                          "from (its graph must end in a softmax and take float pixels): run "
                          "`xception-trt deepstream MODEL.onnx -o DIR`, and nvinfer builds and "
                          "caches its own engine (model-engine-file)")
    if suffix not in ONNX_SUFFIXES:
        raise ConfigError(f"{path} is not an ONNX file; export it first with `xception-trt "
                          "export CHECKPOINT -o model.onnx`")
    from .config import MAX_BATCH

    # nvinfer and streammux read these as 32-bit integers: a batch of 10**12 was written as is
    check_int(batch_size, "batch_size", minimum=1, maximum=MAX_BATCH)
    check_int(width, "width", minimum=1, maximum=_MAX_SIDE)
    check_int(height, "height", minimum=1, maximum=_MAX_SIDE)
    check_int(gpu_id, "gpu_id", minimum=0, maximum=_MAX_INT32)
    check_int(camera, "camera", minimum=0, maximum=_MAX_INT32)
    kind = SourceKind.parse(source_kind)
    if kind is SourceKind.CAMERA and source is not None:
        raise ConfigError(f"a camera source reads /dev/video{camera}, not the URI {source!r}: "
                          "give either a URI (CLI --uri) or a camera (CLI --camera), not both")
    source = PLACEHOLDER_URI if source is None else source
    if not (isinstance(source, str) and source and source.isprintable()):
        # a line break in the value wrote new keys and sections into deepstream_app_config.txt
        raise ConfigError(f"source URI {str(source)[:80]!r} holds a line break or another "
                          "control character; give a plain URI such as file:///videos/a.mp4 "
                          "(percent-encode what a URI cannot hold)")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be a probability in [0, 1], got {threshold}")
    model = load_onnx(path)
    meta = read_metadata(model)
    spec = meta.spec
    graph, folded = pixel_input_graph(model, spec, meta.input_format.value)
    pre = nvinfer_preprocess(spec) if not folded else NvinferPreprocess(
        1.0, (0.0,) * spec.in_chans, True)
    mode = NETWORK_MODE[meta.precision]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{path.stem}.deepstream.onnx"
    atomic_write_bytes(onnx_path, graph.SerializeToString(), error=ConfigError)
    engine = out / f"{onnx_path.name}_b{batch_size}_gpu{gpu_id}_{meta.precision.value}.engine"
    labels = out / "labels.txt"
    names = [n.replace(";", ",") for n in spec.class_names()]
    atomic_write_text(labels, ";".join(names) + "\n", error=ConfigError)

    prop: dict[str, Any] = {
        "gpu-id": gpu_id,
        "net-scale-factor": pre.net_scale_factor,
        "offsets": pre.offsets,
        "model-color-format": 0 if spec.in_chans == 3 else 2,  # 0 RGB, 2 GRAY
        "onnx-file": onnx_path.name,
        "model-engine-file": engine.name,
        "labelfile-path": labels.name,
        "batch-size": batch_size,
        "network-mode": mode,  # 0 FP32, 1 INT8 (explicit Q/DQ: no calibration file), 2 FP16
        "network-type": 1,  # classifier
        "process-mode": 1,  # primary: the full frame
        "infer-dims": (spec.in_chans, spec.input_size, spec.input_size),
        "network-input-order": 0,  # NCHW
        "output-blob-names": PROBABILITIES,
        "classifier-threshold": float(threshold),
        "classifier-async-mode": 0,
        "gie-unique-id": 1,
        "maintain-aspect-ratio": 0,
    }
    how = ("normalisation folded into the first convolution: nvinfer passes raw pixels"
           if folded else f"y = (x/255 - mean)/std with mean={spec.mean} std={spec.std}")
    nvinfer_cfg = out / "config_infer_primary.txt"
    atomic_write_text(nvinfer_cfg, _ini({"property": prop}, _HEADER.format(
        version=__version__, extra=f"Preprocessing: {how}.\nnvinfer resizes the whole frame to "
                                   "infer-dims (no centre crop).")), error=ConfigError)

    if kind is SourceKind.CAMERA:
        src: dict[str, Any] = {"enable": 1, "type": 1, "camera-v4l2-dev-node": camera,
                               "camera-width": width, "camera-height": height,
                               "camera-fps-n": 30, "camera-fps-d": 1, "gpu-id": gpu_id}
    else:
        src = {"enable": 1, "type": 3, "uri": source, "num-sources": 1, "gpu-id": gpu_id}
    live = kind is SourceKind.CAMERA or not source.startswith("file:")
    app = {
        "application": {"enable-perf-measurement": 1, "perf-measurement-interval-sec": 5},
        "source0": src,
        "streammux": {"gpu-id": gpu_id, "live-source": int(live), "batch-size": batch_size,
                      "batched-push-timeout": 40000, "width": width, "height": height,
                      "enable-padding": 0},
        "primary-gie": {"enable": 1, "gpu-id": gpu_id, "batch-size": batch_size,
                        "gie-unique-id": 1, "config-file": nvinfer_cfg.name},
        "osd": {"enable": 1, "gpu-id": gpu_id, "text-size": 15},
        "sink0": {"enable": 1, "type": 1, "sync": 0},  # fakesink; 2 = EGL window
    }
    app_cfg = out / "deepstream_app_config.txt"
    atomic_write_text(app_cfg, _ini(app, _HEADER.format(
        version=__version__, extra="Run: deepstream-app -c deepstream_app_config.txt")),
        error=ConfigError)
    return DeepStreamExport(out, nvinfer_cfg, app_cfg, onnx_path, labels, engine, pre)
