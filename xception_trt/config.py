"""Configuration as data: frozen, validated dataclasses and the enums of closed sets.

:class:`ModelSpec` travels with the weights (checkpoint metadata, ONNX metadata props,
engine sidecar) and drives the architecture and the preprocessing everywhere.
"""

from __future__ import annotations

import enum
import json
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field, fields, replace
from typing import Any

from .errors import ConfigError, renamed, renamed_attribute, renamed_changes
from .jsonable import JsonMixin, json_field

__all__ = [
    "StrEnum",
    "check_int",
    "check_label",
    "Precision",
    "Flavour",
    "TensorRTBackend",
    "InputFormat",
    "Placement",
    "QuantTarget",
    "PoolPadding",
    "Interpolation",
    "ModelSpec",
    "MIN_INPUT_SIZE",
    "CHECKPOINT_SUFFIXES",
    "Optimizer",
    "AugmentConfig",
    "TrainConfig",
]

#: Smallest square input Xception accepts (Chollet 2017; Keras enforces the same bound).
MIN_INPUT_SIZE = 71

#: File suffixes recognised as checkpoints (anything else is not a checkpoint). Here, not in
#: ``checkpoint`` (which needs torch), so that the runtime can tell a checkpoint by its name.
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".h5", ".hdf5")


class StrEnum(str, enum.Enum):
    """A closed set of lowercase string values: prints as its value, parses with a clear error.

    Every closed set in the package (precisions, formats, calibration methods, runner kinds,
    TensorRT flavours, Triton choices) derives from this, and CLI ``choices=`` come from
    :meth:`choices`.
    """

    def __str__(self) -> str:  # argparse/help/json show the plain value
        return self.value

    @classmethod
    def choices(cls) -> list[str]:
        """The values, in declaration order (for argparse ``choices=`` and help texts)."""
        return [m.value for m in cls]

    @classmethod
    def parse(cls, value: "str | StrEnum") -> Any:
        """Return the member for ``value`` or raise :class:`ConfigError` listing the choices."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ConfigError(f"unknown {cls.__name__} {value!r}; choose one of: "
                              f"{choices}") from None


class Precision(StrEnum):
    """Numeric precision of an ONNX variant or engine."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Flavour(StrEnum):
    """The TensorRT flavours (Python module names): NVIDIA TensorRT and TensorRT-RTX
    (``--flavour``)."""

    TENSORRT = "tensorrt"
    TENSORRT_RTX = "tensorrt_rtx"


#: The old name of :class:`Flavour` (kept as an alias).
TensorRTBackend = Flavour


class InputFormat(StrEnum):
    """What the exported graph takes as input.

    ``float-nchw``: preprocessed float32 NCHW (normalised on the host).
    ``uint8-nhwc``: raw uint8 NHWC pixels after resize/crop; normalisation lives in the graph.
    """

    FLOAT_NCHW = "float-nchw"
    UINT8_NHWC = "uint8-nhwc"


class Placement(StrEnum):
    """The runtime an INT8 graph's Q/DQ placement is made for (``--placement``).

    ``tensorrt``: ModelOpt's placement (inputs of each Conv/Gemm quantized, symmetric INT8,
    outputs left in float), which TensorRT fuses. ``onnxruntime``: ONNX Runtime's placement
    (inputs and outputs quantized, asymmetric uint8 activations), which ONNX Runtime's CPU
    provider fuses into QLinearConv/QGemm kernels; TensorRT cannot build it (zero points).
    """

    TENSORRT = "tensorrt"
    ONNXRUNTIME = "onnxruntime"


#: The old name of :class:`Placement` (kept as an alias).
QuantTarget = Placement


class PoolPadding(StrEnum):
    """Padding semantics of the stride-2 3x3 max-pools.

    ``symmetric``: PyTorch ``padding=1`` on both sides (timm/Cadene ``legacy_xception``).
    ``tf-same``: TensorFlow/Keras ``padding='same'``; on an even-sized input the extra row and
    column of padding go to the bottom/right only, so outputs differ from ``symmetric``.
    """

    SYMMETRIC = "symmetric"
    TF_SAME = "tf-same"


class Interpolation(StrEnum):
    """Resampling filter used when resizing images (PIL names)."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"


def check_int(value: Any, name: str, *, minimum: int | None = 1, maximum: int | None = None,
              error: type[Exception] = ConfigError) -> int:
    """Return ``value`` if it is an integer (not a bool) in ``minimum..maximum``, else raise.

    The one validated-integer check of the package (config dataclasses, library arguments and,
    through :func:`xception_trt.cli._common.bounded_int`, the CLI).

    Args:
        value: What the caller got.
        name: How the message names it (``"BuildConfig.max_batch"``, ``"top_k"``).
        minimum: Smallest accepted value, or ``None`` for no lower bound.
        maximum: Largest accepted value, or ``None`` for no upper bound.
        error: The exception class to raise (a :class:`~xception_trt.errors.XceptionTRTError`).

    Raises:
        error: ``value`` is not an int, is a bool, or is out of bounds; the message names
            ``name``, the bounds and the value.
    """
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or (minimum is not None and int(value) < minimum)
            or (maximum is not None and int(value) > maximum)):
        what = ("a positive integer (>= 1)" if minimum == 1 and maximum is None
                else f"an integer{_bounds_text(minimum, maximum)}")
        raise error(f"{name} must be {what}, got {value!r}")
    return int(value)


def _bounds_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def _as_float_tuple(name: str, value: Any, n: int) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except TypeError:
        raise ConfigError(f"{name} must be a sequence of {n} numbers, got {value!r}") from None
    if len(out) != n:
        raise ConfigError(f"{name} must have {n} values (one per input channel), got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{name} must be finite, got {out}")
    return out


#: Longest class label (characters).
MAX_LABEL_CHARS = 256


def check_label(value: Any) -> str:
    """``value`` if it can be a class label everywhere labels are written: a non-empty string
    of at most :data:`MAX_LABEL_CHARS` printable characters (``str.isprintable``: no line break,
    tab or other control character) without leading or trailing spaces.

    Why: the bundle's and Triton's ``labels.txt`` hold one label per line, DeepStream's
    classifier label file holds them on one line (nvinfer ``labelfile-path``), and a label with
    a newline made nvinfer read 3 labels for 4 classes. (A ``;``, DeepStream's separator, is
    allowed: the DeepStream writer spells it ``,``.)

    Raises:
        ConfigError: Anything else (the message names the label and the rule).
    """
    if not isinstance(value, str):
        raise ConfigError(f"class label {value!r} is not a string; give class names as text")
    ok = 0 < len(value) <= MAX_LABEL_CHARS and value.isprintable() and value == value.strip()
    if not ok:
        raise ConfigError(f"class label {value[:80]!r} is not usable: a label is 1 to "
                          f"{MAX_LABEL_CHARS} printable characters (no line break, tab or other "
                          "control character) without leading or trailing spaces (label files "
                          "hold one per line); fix the labels")
    return value


@dataclass(frozen=True)
class ModelSpec(JsonMixin):
    """Architecture, preprocessing and labels of one Xception model.

    Attributes:
        num_classes: Number of logits of the classifier.
        in_chans: Input channels (3 for RGB).
        width: Channel multiplier; 1.0 is the paper's Xception (narrow models for tests/demos).
        middle_blocks: Number of middle-flow blocks; 8 in the paper.
        input_size: Square input side in pixels (>= 71).
        mean, std: Per-channel normalisation applied to pixels scaled to [0, 1].
        crop_pct: Centre-crop fraction: the shorter side is resized to
            ``floor(input_size / crop_pct)`` then centre-cropped to ``input_size``.
            1.0 resizes straight to ``input_size`` (Keras convention).
        interpolation: Resampling filter for the resize.
        pool_padding: Max-pool padding semantics (depends on where the weights come from).
        bn_eps: BatchNorm epsilon (PyTorch 1e-5, Keras 1e-3).
        labels: Class names in logit order, or ``None`` (ImageNet names when
            ``num_classes == 1000``, ``class_<i>`` otherwise; see :meth:`class_names`).
        source: Where the weights come from (``xception-trt``, ``timm``, ``keras``, ``random``).
    """

    num_classes: int = 1000
    in_chans: int = 3
    width: float = 1.0
    middle_blocks: int = 8
    input_size: int = 299
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    crop_pct: float = 0.8975
    interpolation: Interpolation = Interpolation.BICUBIC
    pool_padding: PoolPadding = PoolPadding.SYMMETRIC
    bn_eps: float = 1e-5
    labels: tuple[str, ...] | None = field(default=None, repr=False)
    source: str = "xception-trt"

    def __post_init__(self) -> None:
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name in ("num_classes", "in_chans", "middle_blocks", "input_size"):
            check_int(getattr(self, name), f"ModelSpec.{name}", minimum=None)
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.in_chans < 1:
            raise ConfigError(f"in_chans must be >= 1, got {self.in_chans}")
        if self.middle_blocks < 0:
            raise ConfigError(f"middle_blocks must be >= 0, got {self.middle_blocks}")
        if self.input_size < MIN_INPUT_SIZE:
            raise ConfigError(
                f"input_size {self.input_size} is too small: Xception needs at least "
                f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels"
            )
        if not (float(self.width) > 0 and math.isfinite(float(self.width))):
            raise ConfigError(f"width must be a positive number, got {self.width!r}")
        set_("width", float(self.width))
        set_("mean", _as_float_tuple("mean", self.mean, self.in_chans))
        std = _as_float_tuple("std", self.std, self.in_chans)
        if any(s <= 0 for s in std):
            raise ConfigError(f"std must be > 0 for every channel, got {std}")
        set_("std", std)
        if not (0.0 < float(self.crop_pct) <= 1.0):
            raise ConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        set_("crop_pct", float(self.crop_pct))
        if not (0.0 < float(self.bn_eps) < 1.0):
            raise ConfigError(f"bn_eps must be in (0, 1), got {self.bn_eps!r}")
        set_("bn_eps", float(self.bn_eps))
        set_("interpolation", Interpolation.parse(self.interpolation))
        set_("pool_padding", PoolPadding.parse(self.pool_padding))
        if self.labels is not None:
            if isinstance(self.labels, (str, bytes)) or not isinstance(self.labels,
                                                                      (list, tuple)):
                raise ConfigError("labels must be a list of class names, one per class")
            labels = tuple(check_label(x) for x in self.labels)
            if len(labels) != self.num_classes:
                raise ConfigError(
                    f"{len(labels)} class labels given for num_classes={self.num_classes}; "
                    "give exactly one label per class"
                )
            set_("labels", labels)

    # ----------------------------------------------------------------------------------------
    @classmethod
    def timm(cls, **overrides: Any) -> "ModelSpec":
        """Spec of timm/Cadene ``legacy_xception`` ImageNet weights (bicubic, crop 0.8975)."""
        base = dict(crop_pct=0.8975, interpolation=Interpolation.BICUBIC,
                    pool_padding=PoolPadding.SYMMETRIC, bn_eps=1e-5, source="timm")
        return cls(**{**base, **overrides})

    @classmethod
    def keras(cls, **overrides: Any) -> "ModelSpec":
        """Spec of the official Keras ImageNet weights (TF 'same' pools, BN eps 1e-3, no crop)."""
        base = dict(crop_pct=1.0, interpolation=Interpolation.BILINEAR,
                    pool_padding=PoolPadding.TF_SAME, bn_eps=1e-3, source="keras")
        return cls(**{**base, **overrides})

    def class_names(self) -> tuple[str, ...]:
        """Names of the classes in logit order (never ``None``)."""
        if self.labels is not None:
            return self.labels
        if self.num_classes == 1000:
            from .labels import imagenet_class_names

            return imagenet_class_names()
        return tuple(f"class_{i}" for i in range(self.num_classes))

    @property
    def resize_size(self) -> int:
        """Shorter-side size before the centre crop, in pixels."""
        return int(math.floor(self.input_size / self.crop_pct))

    def replace(self, **changes: Any) -> "ModelSpec":
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    def to_json(self) -> str:
        """:meth:`to_dict` as compact, key-sorted JSON."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        """Inverse of :meth:`to_dict`; unknown keys are an error (they signal a newer format)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a ModelSpec must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown ModelSpec field(s) {unknown}; the file was written by a newer "
                "xception-trt — upgrade with: pip install -U xception-trt"
            )
        kwargs = dict(data)
        for key in ("mean", "std", "labels"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"invalid ModelSpec: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"ModelSpec metadata is not valid JSON: {exc}") from None
        return cls.from_dict(data)


# ---------------------------------------------------------------------------------------------
# engine building (owned by the builder: xception_trt/trt/builder.py)

__all__ += ["BuildConfig", "normalise_compute_capability"]

_CC_RE = re.compile(r"^(?:sm_?)?(\d+)(?:\.(\d+))?$", re.IGNORECASE)

#: Default size of the optimisation profile's largest batch when nothing is given.
DEFAULT_MAX_BATCH = 8
#: Largest batch of any profile: far above what fits in a GPU (one 299x299 float image is
#: 1 MiB, so 65536 are 64 GiB of input alone) and inside TensorRT 8.6's 32-bit ``Dims``; a
#: batch of 2**31 reached TensorRT as a TypeError.
MAX_BATCH = 1 << 16


def normalise_compute_capability(value: str) -> str:
    """Canonical TensorRT-RTX target name (``SM86``, ``SM120``, ``CURRENT``) of a user's spelling.

    Accepts ``sm86``, ``SM_86``, ``8.6``, ``86``, ``12.0``, ``current`` (any case).

    Raises:
        ConfigError: Not a compute capability.
    """
    text = str(value).strip()
    if text.lower() == "current":
        return "CURRENT"
    match = _CC_RE.match(text)
    # a bare number needs a major and a minor digit (86, 120); the major is at least 1
    if not match or (match.group(2) is None and len(match.group(1)) < 2) or (
            int(match.group(1)) == 0 if match.group(2) is not None
            else int(match.group(1)[:-1]) == 0):
        raise ConfigError(f"{value!r} is not a compute capability; write it like sm86, 8.6, "
                          "sm120 or current")
    major, minor = match.groups()
    return f"SM{major}{minor or ''}"


def _opt_int(name: str, value: Any, lo: int, hi: int | None = None) -> int | None:
    if value is None:
        return None
    return check_int(value, f"BuildConfig.{name}", minimum=lo, maximum=hi)


@dataclass(frozen=True)
class BuildConfig(JsonMixin):
    """How to build one TensorRT engine from one ONNX graph (trtexec/Polygraphy option parity).

    Attributes:
        precision: Engine precision; ``None`` takes the graph's own precision (its metadata).
            Strongly typed TensorRT (10.x, 11.x, TensorRT-RTX) builds exactly what the graph
            says, so the graph must be the matching variant; TensorRT 8.6 uses builder flags.
        flavour: ``tensorrt``, ``tensorrt_rtx`` or ``None`` (the first that imports; NVIDIA
            TensorRT preferred). Old name ``backend=`` (deprecated).
        batch: Fixed batch size: the profile is min = opt = max = ``batch``. Exclusive with
            ``min_batch``/``opt_batch``/``max_batch``.
        min_batch, opt_batch, max_batch: Optimisation profile of a dynamic-batch graph
            (defaults 1, ``max_batch``, 8).
        workspace_mib: Limit of the WORKSPACE memory pool in MiB (``None``: TensorRT's default,
            the device's memory). Small values (e.g. 256) for Jetson Nano-class devices.
        optimization_level: Builder optimisation level 0-5 (``None``: TensorRT's default, 3).
        timing_cache_dir: Directory of timing caches, one file per TensorRT flavour, version and
            device, loaded before and saved after every build; ``None``: no timing cache.
        dla_core: DLA core to build for (Jetson Xavier/Orin); ``None``: the GPU.
        gpu_fallback: With ``dla_core``, let layers the DLA cannot run fall back to the GPU.
        version_compatible: Build a version-compatible engine (runs on later TensorRT runtimes).
        hardware_compatible: Build for every Ampere-or-newer GPU (hardware compatibility level
            ``AMPERE_PLUS``) instead of the build GPU only.
        cc: TensorRT-RTX compute-capability targets (``SM86``, ``SM89``, ``SM120``,
            ``CURRENT``...); empty: TensorRT-RTX's default portable targets. ``CURRENT`` needs a
            GPU at build time. Old name ``compute_capabilities=`` (deprecated).
        layer_info: Record per-layer information (detailed profiling verbosity) in the sidecar.

    :meth:`to_dict` writes ``flavour`` and ``cc`` under their JSON keys ``backend`` and
    ``compute_capabilities`` (sidecars, cache keys and reports keep their layout).
    """

    precision: Precision | None = None
    # JSON keys as before the rename: engine sidecars and engine-cache keys stay identical.
    flavour: str | None = json_field(default=None, key="backend")
    batch: int | None = None
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    workspace_mib: int | None = None
    optimization_level: int | None = None
    timing_cache_dir: str | None = None
    dla_core: int | None = None
    gpu_fallback: bool = True
    version_compatible: bool = False
    hardware_compatible: bool = False
    cc: tuple[str, ...] = json_field(default=(), key="compute_capabilities")
    layer_info: bool = True
    # the old names of flavour and cc (deprecated): init-only, mapped in __post_init__
    backend: InitVar[str | None] = None
    compute_capabilities: InitVar[tuple[str, ...] | None] = None

    def __post_init__(self, backend: str | None,
                      compute_capabilities: tuple[str, ...] | None) -> None:
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        set_("flavour", renamed("backend", "flavour", backend, self.flavour,
                                where="BuildConfig", stacklevel=4))
        set_("cc", renamed("compute_capabilities", "cc", compute_capabilities,
                           self.cc or None, where="BuildConfig", stacklevel=4) or ())
        if self.precision is not None:
            set_("precision", Precision.parse(self.precision))
        if self.flavour is not None:  # stored as the plain value: it is part of cache keys
            set_("flavour", Flavour.parse(self.flavour).value)
        for name in ("batch", "min_batch", "opt_batch", "max_batch"):
            _opt_int(name, getattr(self, name), 1, MAX_BATCH)
        if self.batch is not None and any(
                getattr(self, n) is not None for n in ("min_batch", "opt_batch", "max_batch")):
            raise ConfigError("give either a fixed batch or a min/opt/max batch profile, not both")
        lo, opt, hi = self.profile
        if not lo <= opt <= hi:
            raise ConfigError(f"the batch profile needs min <= opt <= max, got min={lo}, "
                              f"opt={opt}, max={hi}")
        _opt_int("workspace_mib", self.workspace_mib, 1)
        _opt_int("optimization_level", self.optimization_level, 0, 5)
        _opt_int("dla_core", self.dla_core, 0)
        if self.timing_cache_dir is not None:
            set_("timing_cache_dir", str(self.timing_cache_dir))
        for name in ("gpu_fallback", "version_compatible", "hardware_compatible", "layer_info"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"BuildConfig.{name} must be True or False, "
                                  f"got {getattr(self, name)!r}")
        if isinstance(self.cc, str):
            raise ConfigError("cc must be a sequence of names like ('SM86',)")
        ccs = tuple(dict.fromkeys(normalise_compute_capability(c) for c in self.cc))
        if "CURRENT" in ccs and len(ccs) > 1:
            raise ConfigError("compute capability CURRENT cannot be combined with other targets")
        set_("cc", ccs)
        if self.dla_core is not None and self.hardware_compatible:
            raise ConfigError("hardware-compatible engines cannot run on a DLA; drop one of "
                              "dla_core / hardware_compatible")
        if self.dla_core is not None and self.version_compatible:
            raise ConfigError("version-compatible engines cannot run on a DLA; drop one of "
                              "dla_core / version_compatible")

    @property
    def profile(self) -> tuple[int, int, int]:
        """The (min, opt, max) batch sizes of the optimisation profile."""
        if self.batch is not None:
            return (self.batch, self.batch, self.batch)
        hi = self.max_batch if self.max_batch is not None else max(
            DEFAULT_MAX_BATCH, self.min_batch or 1, self.opt_batch or 1)
        lo = self.min_batch if self.min_batch is not None else 1
        opt = self.opt_batch if self.opt_batch is not None else hi
        return (lo, opt, hi)

    def replace(self, **changes: Any) -> "BuildConfig":
        """A copy with ``changes`` applied (validated again; the old keywords ``backend`` and
        ``compute_capabilities`` still work, with a DeprecationWarning)."""
        return replace(self, **renamed_changes(
            changes, {"backend": "flavour", "compute_capabilities": "cc"},
            where="BuildConfig.replace"))

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        return out | {"profile": list(self.profile)}


renamed_attribute(BuildConfig, "backend", "flavour")
renamed_attribute(BuildConfig, "compute_capabilities", "cc")


__all__ += ["CalibrationOptions"]


@dataclass(frozen=True)
class CalibrationOptions:
    """Where the INT8 (and FP16 range-check) calibration images come from, and how INT8
    ranges are chosen: the ``--calib`` / ``--calib-method`` flags of ``build`` and ``bundle``.

    Attributes:
        images: Folder of calibration images (``None``: none given).
        method: INT8 calibration method (``entropy``, ``max``, ``percentile``, or ``auto``
            where the caller tries each); ``None``: the caller's default (entropy).
    """

    images: str | None = None
    method: str | None = None

    def __post_init__(self) -> None:
        if self.images is not None:
            object.__setattr__(self, "images", str(self.images))
        if self.method is not None:
            object.__setattr__(self, "method", str(self.method))

    def keywords(self) -> dict[str, Any]:
        """``calibration=`` and ``calibration_method=`` for :func:`xception_trt.pipeline.build`
        and :func:`xception_trt.bundler.write_bundle`."""
        return {"calibration": self.images, "calibration_method": self.method}


# ---------------------------------------------------------------------------------------------
# training (xception_trt.train)


class Optimizer(StrEnum):
    """Optimizer used by :func:`xception_trt.train.train`."""

    SGD = "sgd"
    ADAMW = "adamw"


def _float_pair(name: str, value: Any, low: float, high: float) -> tuple[float, float]:
    pair = _as_float_tuple(name, value, 2)
    if not (low <= pair[0] <= pair[1] <= high) or pair[1] <= 0:
        raise ConfigError(f"{name} must be (min, max) with {low} <= min <= max <= {high}, "
                          f"got {pair}")
    return pair  # type: ignore[return-value]


@dataclass(frozen=True)
class AugmentConfig:
    """Light training augmentation on decoded uint8 pixels (before normalisation).

    Attributes:
        enabled: False trains on the evaluation preprocessing (resize + centre crop) only.
        scale: Area fraction range of the random crop of the whole image (random-resized-crop).
        ratio: Aspect-ratio range (width / height) of the random crop.
        hflip: Random horizontal flips (p = 0.5). Wrong for digits and text: turn it off there.
    """

    enabled: bool = True
    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _float_pair("augment scale", self.scale, 0.0, 1.0))
        object.__setattr__(self, "ratio", _float_pair("augment ratio", self.ratio, 1e-3, 1e3))

    @classmethod
    def off(cls) -> "AugmentConfig":
        """No augmentation."""
        return cls(enabled=False)


@dataclass(frozen=True)
class TrainConfig(JsonMixin):
    """Settings of one fine-tuning / training run.

    Attributes:
        epochs: Passes over the training set (>= 1).
        batch_size: Images per optimisation step (>= 1).
        optimizer: ``sgd`` (Nesterov momentum) or ``adamw``.
        lr: Peak learning rate; ``None`` picks 0.05 for SGD and 1e-3 for AdamW.
        weight_decay: L2 / decoupled decay (not applied to BatchNorm and biases); ``None`` picks
            1e-4 for SGD and 0.05 for AdamW.
        momentum: SGD momentum.
        warmup_epochs: Linear warm-up length (epochs, may be fractional), then cosine to 0.
        label_smoothing: Cross-entropy label smoothing in [0, 1).
        augment: Training augmentation.
        seed: Seeds the model init, shuffling and augmentation (runs are repeatable on CPU).
        workers: Image-decoding threads (``None``: up to 4, bounded by the CPU count).
        device: ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    """

    epochs: int = 10
    batch_size: int = 32
    optimizer: Optimizer = Optimizer.SGD
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    workers: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed"):
            check_int(getattr(self, name), f"TrainConfig.{name}", minimum=None)
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise ConfigError(f"workers must be >= 1 or None, got {self.workers!r}")
        object.__setattr__(self, "optimizer", Optimizer.parse(self.optimizer))
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if value is not None:
                if not (math.isfinite(float(value)) and float(value) >= 0):
                    raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
                object.__setattr__(self, name, float(value))
        if self.lr is not None and self.lr == 0:
            raise ConfigError("lr must be > 0")
        if not (0.0 <= float(self.momentum) < 1.0):
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (0.0 <= float(self.warmup_epochs) <= self.epochs):
            raise ConfigError(f"warmup_epochs must be in [0, epochs={self.epochs}], "
                              f"got {self.warmup_epochs!r}")
        if not (0.0 <= float(self.label_smoothing) < 1.0):
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not isinstance(self.augment, AugmentConfig):
            raise ConfigError("augment must be an AugmentConfig")
        dev = str(self.device)
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:")
                                                   and dev[5:].isdigit())):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {dev!r}")

    @property
    def resolved_lr(self) -> float:
        """The peak learning rate actually used."""
        if self.lr is not None:
            return self.lr
        return 0.05 if self.optimizer is Optimizer.SGD else 1e-3

    @property
    def resolved_weight_decay(self) -> float:
        """The weight decay actually used."""
        if self.weight_decay is not None:
            return self.weight_decay
        return 1e-4 if self.optimizer is Optimizer.SGD else 0.05

    def _json_extras(self, out: dict[str, Any]) -> dict[str, Any]:
        # the values used, not None for "the optimizer's default"
        return out | {"lr": self.resolved_lr, "weight_decay": self.resolved_weight_decay}
