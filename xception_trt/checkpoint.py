"""Checkpoint formats: our ``.safetensors``, timm/Cadene ``legacy_xception`` state dicts and the
official Keras ImageNet HDF5 weights.

Readers are I/O at the edges; conversions are pure ``dict -> dict`` functions. Nothing here
unpickles arbitrary objects: ``.pth``/``.bin`` files are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import CHECKPOINT_SUFFIXES, ModelSpec
from .errors import CheckpointError, ConfigError, DependencyError
from .extras import needs
from .fsio import atomic_path, path_problem, sha256_file
from .hub import HubCheckpoint, download_checkpoint, parse_hub_id
from .model import Block, SeparableConv2d, Xception, build_xception, scaled_channels

with needs("reading and writing checkpoints"):
    import torch

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LoadedCheckpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "read_checkpoint",
    "convert_timm_state_dict",
    "convert_keras_weights",
    "read_keras_h5",
    "infer_spec_from_state_dict",
    "CHECKPOINT_SUFFIXES",
]

log = logging.getLogger(__name__)

FORMAT_NAME = "xception-trt"
FORMAT_VERSION = "1"


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read from disk, converted to our state-dict layout.

    Attributes:
        state_dict: Tensors keyed by our module names.
        spec: The :class:`ModelSpec` stored with the weights or inferred from them.
        source: ``xception-trt``, ``timm`` or ``keras``.
        path: The file read.
        sha256: Hex SHA-256 of the file.
        metadata: Extra string metadata stored in the file (ours; for a Hub model its
            ``hub_id`` and ``hub_commit``).
        name: How messages name it: the path, or the Hub id it was read by.
    """

    state_dict: dict[str, torch.Tensor]
    spec: ModelSpec
    source: str
    path: Path
    sha256: str
    metadata: dict[str, str]
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", str(self.path))


# ---------------------------------------------------------------------------------------------
# our format


def save_checkpoint(model: Xception, path: str | os.PathLike[str], *,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Save ``model`` as one ``.safetensors`` file with its :class:`ModelSpec` as metadata.

    Args:
        model: The model to save (its ``spec`` is stored).
        path: Destination; must end in ``.safetensors``. Written atomically.
        metadata: Extra string key/values to store (e.g. training details).

    Returns:
        The path written.

    Raises:
        CheckpointError: Bad suffix or unwritable destination.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoint path {path} must end in .safetensors")
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update(format=FORMAT_NAME, format_version=FORMAT_VERSION,
                model_spec=model.spec.to_json(), xception_trt_version=__version__)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Serialized here and written by Python: a full disk then raises OSError (ENOSPC), which
    # atomic_path reports; safetensors' own writer can fail without saying why.
    data = save(tensors, metadata=meta)
    with atomic_path(path, error=CheckpointError) as tmp:
        tmp.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# timm / Cadene

_PREFIXES = ("module.", "model.", "_orig_mod.")


def convert_timm_state_dict(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Map a timm or Cadene ``legacy_xception`` state dict onto our names.

    Strips ``module.``/``model.`` prefixes (DataParallel, Lightning), renames Cadene's
    ``last_linear`` to ``fc``, and reshapes 2-D pointwise weights of the original Cadene
    release to 4-D. Pure: the input is not modified.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state dict entry {key!r} is a {type(value).__name__}, not a "
                                  "tensor; this is not a model state dict")
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        key = re.sub(r"^last_linear\.", "fc.", key)
        if key.endswith("pointwise.weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[key] = value
    return out


def infer_spec_from_state_dict(state_dict: Mapping[str, torch.Tensor], **fields: Any) -> ModelSpec:
    """Infer ``num_classes``, ``width``, ``middle_blocks`` and ``in_chans`` from tensor shapes.

    Raises:
        CheckpointError: The tensors do not describe an Xception.
    """
    try:
        conv1 = state_dict["conv1.weight"]
    except KeyError:
        raise CheckpointError(
            "not an Xception state dict: 'conv1.weight' is missing (first keys: "
            f"{list(state_dict)[:5]}); expected timm/Cadene legacy_xception or xception-trt names"
        ) from None
    # The widest layer pins the multiplier; narrow layers are clamped to >= 8 channels.
    exit_conv = state_dict.get("conv4.pointwise.weight")
    width = (exit_conv.shape[0] / 2048.0) if exit_conv is not None else conv1.shape[0] / 32.0
    blocks = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"block(\d+)\.", k))})
    if len(blocks) < 4:
        raise CheckpointError(f"not an Xception state dict: found {len(blocks)} blocks, need >= 4")
    spec_kw: dict[str, Any] = dict(width=width, in_chans=int(conv1.shape[1]),
                                   middle_blocks=len(blocks) - 4)
    if "fc.weight" in state_dict:
        spec_kw["num_classes"] = int(state_dict["fc.weight"].shape[0])
    spec_kw.update(fields)
    if scaled_channels(32, width) != conv1.shape[0]:
        raise CheckpointError(f"conv1 has {conv1.shape[0]} channels, which does not match the "
                              f"width multiplier {width:g} of the exit flow; this is not an "
                              "Xception checkpoint")
    try:
        return ModelSpec(**spec_kw)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint describes an invalid model: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Keras

def read_keras_h5(path: str | os.PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
    """Read a Keras 2 legacy HDF5 weights file (``save_weights`` or full-model ``save``).

    Returns:
        ``{layer_name: {weight_short_name: array}}`` in the file's layer order, where the short
        name is e.g. ``kernel``, ``depthwise_kernel``, ``gamma``, ``moving_variance``.

    Raises:
        DependencyError: h5py is not installed.
        CheckpointError: The file is not a Keras HDF5 weights file.
    """
    try:
        import h5py
    except ImportError:
        raise DependencyError("h5py", "keras", "reading Keras .h5 weights") from None
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise CheckpointError(f"{path} is not a readable HDF5 file: {exc}") from None
    with fh:
        root = fh["model_weights"] if "model_weights" in fh else fh
        if "layer_names" not in root.attrs:
            raise CheckpointError(f"{path} is HDF5 but not a Keras weights file (no 'layer_names' "
                                  "attribute); use the Keras 2 .h5 weights file")
        layers: dict[str, dict[str, np.ndarray]] = {}
        for raw in root.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            group = root[name]
            weights: dict[str, np.ndarray] = {}
            for wraw in group.attrs.get("weight_names", []):
                wname = wraw.decode() if isinstance(wraw, bytes) else str(wraw)
                short = wname.split("/")[-1].split(":")[0]
                weights[short] = np.asarray(group[wname])
            if weights:
                layers[name] = weights
    return layers


def _bn(prefix: str, w: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
             "moving_variance": "running_var"}
    out = {f"{prefix}.{ours}": torch.from_numpy(np.ascontiguousarray(w[k], dtype=np.float32))
           for k, ours in names.items() if k in w}
    if len(out) != 4:
        raise CheckpointError(f"Keras BatchNormalization for {prefix} lacks some of "
                              f"{sorted(names)} (has {sorted(w)})")
    out[f"{prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out


def _conv(w: np.ndarray) -> torch.Tensor:  # (kh, kw, in, out) -> (out, in, kh, kw)
    return torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1), dtype=np.float32))


def _depthwise(w: np.ndarray) -> torch.Tensor:  # (kh, kw, in, 1) -> (in, 1, kh, kw)
    return torch.from_numpy(np.ascontiguousarray(w.transpose(2, 3, 0, 1), dtype=np.float32))


def _sep(prefix: str, w: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    if "depthwise_kernel" not in w or "pointwise_kernel" not in w:
        raise CheckpointError(f"Keras SeparableConv2D for {prefix} lacks depthwise/pointwise "
                              f"kernels (has {sorted(w)})")
    return {f"{prefix}.conv1.weight": _depthwise(w["depthwise_kernel"]),
            f"{prefix}.pointwise.weight": _conv(w["pointwise_kernel"])}


def convert_keras_weights(layers: Mapping[str, Mapping[str, np.ndarray]]
                          ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Convert Keras Xception layer weights (see :func:`read_keras_h5`) to our state dict.

    Keras names the stem ``block1_*``, the entry/middle/exit residual blocks ``block2..``,
    the last two separable convs ``block<last>_sepconv1/2`` and the classifier
    ``predictions``; its residual 1x1 convs and their BatchNorms are unnamed
    (``conv2d_1``, ``batch_normalization_1`` ...) and are matched by order. Kernels are
    transposed from HWIO to OIHW; BatchNorm epsilon (1e-3) goes into the spec.

    Returns:
        ``(state_dict, spec_fields)`` where ``spec_fields`` holds what the shapes tell
        (``num_classes`` when a classifier is present, ``width``, ``middle_blocks``, ``in_chans``).

    Raises:
        CheckpointError: Layers are missing or the file is not an Xception.
    """
    def need(name: str) -> Mapping[str, np.ndarray]:
        if name not in layers:
            raise CheckpointError(f"Keras weights have no layer {name!r}; is this an Xception "
                                  f"weights file? (layers: {list(layers)[:8]} ...)")
        return layers[name]

    block_ids = sorted({int(m.group(1)) for k in layers if (m := re.match(r"block(\d+)_", k))})
    if not block_ids or block_ids[0] != 1 or len(block_ids) < 6:
        raise CheckpointError("Keras weights do not contain the Xception block1.. block layers")
    last = block_ids[-1]  # the exit-flow separable convs (block14 in the paper's model)
    n_res = last - 2      # residual blocks: Keras block2 .. block<last-1>
    residual_convs = [k for k, w in layers.items() if not k.startswith("block")
                      and "kernel" in w and w["kernel"].ndim == 4]
    residual_bns = [k for k, w in layers.items() if not k.startswith("block") and "gamma" in w]

    sd: dict[str, torch.Tensor] = {}
    stem = need("block1_conv1")["kernel"]
    sd["conv1.weight"] = _conv(stem)
    sd.update(_bn("bn1", need("block1_conv1_bn")))
    sd["conv2.weight"] = _conv(need("block1_conv2")["kernel"])
    sd.update(_bn("bn2", need("block1_conv2_bn")))

    width = need(f"block{last}_sepconv2")["pointwise_kernel"].shape[3] / 2048.0
    spec_fields: dict[str, Any] = dict(width=width, in_chans=int(stem.shape[2]),
                                       middle_blocks=n_res - 4)
    template = build_xception(num_classes=1, width=width, in_chans=int(stem.shape[2]),
                              middle_blocks=max(n_res - 4, 0), input_size=299)
    if template.num_blocks != n_res:
        raise CheckpointError(f"Keras weights have {n_res} residual blocks; an Xception needs "
                              "at least 4 (3 entry + exit)")
    res_i = 0
    for ours in range(1, n_res + 1):
        keras_block = ours + 1
        block: Block = getattr(template, f"block{ours}")
        seps = [n for n, m in block.rep.named_children() if isinstance(m, SeparableConv2d)]
        for k, rep_idx in enumerate(seps, start=1):
            sd.update(_sep(f"block{ours}.rep.{rep_idx}", need(f"block{keras_block}_sepconv{k}")))
            sd.update(_bn(f"block{ours}.rep.{int(rep_idx) + 1}",
                          need(f"block{keras_block}_sepconv{k}_bn")))
        if block.skip is not None:
            if res_i >= len(residual_convs) or res_i >= len(residual_bns):
                raise CheckpointError("Keras weights have fewer residual convolutions than the "
                                      f"Xception blocks need ({res_i} found)")
            sd[f"block{ours}.skip.weight"] = _conv(layers[residual_convs[res_i]]["kernel"])
            sd.update(_bn(f"block{ours}.skipbn", layers[residual_bns[res_i]]))
            res_i += 1
    sd.update({k.replace("block", "conv3", 1): v for k, v in
               _sep("block", need(f"block{last}_sepconv1")).items()})
    sd.update(_bn("bn3", need(f"block{last}_sepconv1_bn")))
    sd.update({k.replace("block", "conv4", 1): v for k, v in
               _sep("block", need(f"block{last}_sepconv2")).items()})
    sd.update(_bn("bn4", need(f"block{last}_sepconv2_bn")))
    if "predictions" in layers:
        pred = layers["predictions"]
        sd["fc.weight"] = torch.from_numpy(np.ascontiguousarray(pred["kernel"].T, dtype=np.float32))
        sd["fc.bias"] = torch.from_numpy(np.ascontiguousarray(pred["bias"], dtype=np.float32))
        spec_fields["num_classes"] = int(pred["kernel"].shape[1])
    return sd, spec_fields


# ---------------------------------------------------------------------------------------------
# reading any format


def _read_torch_file(path: Path) -> dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ...
        raise CheckpointError(
            f"cannot read {path} as a PyTorch state dict ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); only plain tensor state "
            "dicts are loaded (no pickled objects) — re-save with torch.save(model.state_dict())"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def read_checkpoint(path: str | os.PathLike[str], **spec_fields: Any) -> LoadedCheckpoint:
    """Read any supported checkpoint file into our state-dict layout and a :class:`ModelSpec`.

    Args:
        path: ``.safetensors`` (ours or timm), ``.pth``/``.pt``/``.bin`` (timm/Cadene),
            ``.h5``/``.hdf5`` (Keras), or a Hugging Face Hub model id
            (``hf-hub:org/name[@revision]``, or ``org/name`` when no such local path exists;
            e.g. ``timm/legacy_xception.tf_in1k``; see :mod:`xception_trt.hub`).
        **spec_fields: :class:`ModelSpec` fields to use where the file says nothing (for timm
            and Keras files, e.g. ``input_size``); ignored by our own format except labels.

    Raises:
        CheckpointError: Missing file, unknown suffix, unreadable or non-Xception content; for
            a Hub id also an unknown repository, offline with nothing cached, or a repository
            that holds no Xception.
        DependencyError: A Hub id without ``huggingface_hub`` (the ``hub`` extra).
    """
    hub_id = parse_hub_id(path)
    if hub_id is not None:
        return _read_hub_checkpoint(download_checkpoint(hub_id), spec_fields)
    path = Path(path)
    problem = path_problem(path)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} {problem}")
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(f"{path}: unknown checkpoint type {suffix!r}; expected one of "
                              f"{', '.join(CHECKPOINT_SUFFIXES)}")
    digest = sha256_file(path)
    metadata: dict[str, str] = {}
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as fh:
                metadata = dict(fh.metadata() or {})
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from None
        if metadata.get("format") == FORMAT_NAME:
            if metadata.get("format_version") != FORMAT_VERSION:
                raise CheckpointError(
                    f"{path} uses xception-trt checkpoint format {metadata.get('format_version')}"
                    f"; this version reads format {FORMAT_VERSION} — upgrade xception-trt")
            try:
                spec = ModelSpec.from_json(metadata["model_spec"])
            except (KeyError, ConfigError) as exc:
                raise CheckpointError(f"{path}: invalid ModelSpec metadata: {exc}") from None
            if spec_fields.get("labels") is not None:
                spec = spec.replace(labels=spec_fields["labels"])
            return LoadedCheckpoint(tensors, spec, FORMAT_NAME, path, digest, metadata)
        state = convert_timm_state_dict(tensors)
        source = "timm"
    elif suffix in (".h5", ".hdf5"):
        state, inferred = convert_keras_weights(read_keras_h5(path))
        fields = {**inferred, **spec_fields}
        try:
            spec = ModelSpec.keras(**fields)
        except ConfigError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        return LoadedCheckpoint(state, spec, "keras", path, digest, metadata)
    else:
        state = convert_timm_state_dict(_read_torch_file(path))
        source = "timm"
    spec = infer_spec_from_state_dict(state, **{**_timm_defaults(), **spec_fields})
    return LoadedCheckpoint(state, spec, source, path, digest, metadata)


def _read_hub_checkpoint(found: HubCheckpoint, spec_fields: dict[str, Any]) -> LoadedCheckpoint:
    """Read a Hub model's weights file; its ``config.json`` fills the spec where the caller
    did not. Errors name the Hub id (the cache path means nothing to the user)."""
    try:
        ckpt = read_checkpoint(found.weights, **{**found.spec_fields(), **spec_fields})
    except CheckpointError as exc:
        text = str(exc).replace(str(found.weights), "its weights")
        raise CheckpointError(f"{found.hub_id}: {text}; xception-trt loads Xception weights "
                              "(timm legacy_xception), e.g. timm/legacy_xception.tf_in1k"
                              ) from None
    meta = {**ckpt.metadata, "hub_id": str(found.hub_id)}
    if found.commit:
        meta["hub_commit"] = found.commit
    return replace(ckpt, metadata=meta, name=str(found.hub_id))


def _timm_defaults() -> dict[str, Any]:
    return {k: v for k, v in ModelSpec.timm().to_dict().items()
            if k in ("crop_pct", "interpolation", "pool_padding", "bn_eps", "source")}


def load_checkpoint(ckpt: LoadedCheckpoint, *, num_classes: int | None = None,
                    labels: tuple[str, ...] | list[str] | None = None,
                    reset_classifier: bool = False) -> Xception:
    """Build the model a :class:`LoadedCheckpoint` describes and load its weights strictly.

    Args:
        ckpt: What :func:`read_checkpoint` returned.
        num_classes: Expected number of classes. A checkpoint with another count is an error
            unless ``reset_classifier`` is set.
        labels: Class names (length ``num_classes``) to attach to the model.
        reset_classifier: Re-initialise the classifier for ``num_classes`` (fine-tuning);
            required when the checkpoint has no classifier (Keras ``_notop``).

    Returns:
        The model in eval mode.

    Raises:
        CheckpointError: Missing/unexpected keys, shape mismatches, or a classifier that does
            not match ``num_classes``.
    """
    spec = ckpt.spec
    state = dict(ckpt.state_dict)
    has_fc = "fc.weight" in state
    target_classes = num_classes if num_classes is not None else spec.num_classes
    if labels is not None:
        labels = tuple(labels)
        if num_classes is None:
            target_classes = len(labels)
    if not has_fc and not reset_classifier:
        raise CheckpointError(
            f"{ckpt.name} has no classifier (a 'notop'/feature-extractor file); pass "
            "num_classes and reset_classifier=True (CLI: --num-classes N --reset-classifier) "
            "to fine-tune a new head")
    if has_fc and target_classes != int(state["fc.weight"].shape[0]):
        if not reset_classifier:
            raise CheckpointError(
                f"{ckpt.name} has a {int(state['fc.weight'].shape[0])}-class classifier but "
                f"{target_classes} classes were asked for; pass reset_classifier=True (CLI: "
                "--reset-classifier) to re-initialise the head for fine-tuning")
    if reset_classifier:
        state.pop("fc.weight", None)
        state.pop("fc.bias", None)
    keep_labels = labels if labels is not None else (
        spec.labels if spec.labels is not None and target_classes == spec.num_classes else None)
    try:
        spec = spec.replace(num_classes=target_classes, labels=keep_labels)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    model = build_xception(spec=spec)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")
               and not (reset_classifier and k.startswith("fc."))]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:10])}"
                         + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:10])}"
                         + (" ..." if len(unexpected) > 10 else ""))
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:5])}")
        raise CheckpointError(f"{ckpt.name} does not match an Xception ({spec.source} layout, "
                              f"width {spec.width}, {spec.middle_blocks} middle blocks): "
                              + " | ".join(parts))
    for key, value in expected.items():
        if key not in state:
            state[key] = value  # num_batches_tracked / re-initialised head
        elif value.dtype.is_floating_point:
            state[key] = state[key].to(value.dtype)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def load_model(path: str | os.PathLike[str], *, num_classes: int | None = None,
               labels: tuple[str, ...] | list[str] | None = None,
               reset_classifier: bool = False, **spec_fields: Any) -> Xception:
    """Read a checkpoint of any supported format, or a Hugging Face Hub model id such as
    ``timm/legacy_xception.tf_in1k``, and return the model (eval mode).

    ``model.spec.source`` says where the weights came from; ``model.checkpoint_sha256`` holds
    the file's SHA-256. See :func:`read_checkpoint` and :func:`load_checkpoint` for arguments.
    """
    ckpt = read_checkpoint(path, **spec_fields)
    model = load_checkpoint(ckpt, num_classes=num_classes, labels=labels,
                            reset_classifier=reset_classifier)
    model.checkpoint_sha256 = ckpt.sha256  # type: ignore[attr-defined]
    model.checkpoint_path = str(ckpt.path)  # type: ignore[attr-defined]
    log.info("loaded %s checkpoint %s (%d classes, width %g)", ckpt.source, ckpt.name,
             model.spec.num_classes, model.spec.width)
    return model


def checkpoint_metadata_json(path: str | os.PathLike[str]) -> str:
    """The stored metadata of one of our checkpoints as pretty JSON (for ``info``-like tools)."""
    ckpt = read_checkpoint(path)
    return json.dumps({"source": ckpt.source, "sha256": ckpt.sha256,
                       "spec": ckpt.spec.to_dict(), "metadata": ckpt.metadata}, indent=2)
