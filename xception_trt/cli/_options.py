"""The CLI's vocabulary, shared flag groups and option rules, each declared once.

- **One spelling per concept** (:data:`CONCEPT_FLAGS`): ``--cc`` for compute capabilities,
  ``--flavour`` for the TensorRT flavour, ``--cuda-binding`` for the CUDA binding,
  ``--triton-backend`` for the Triton backend, ``--placement`` for the INT8 Q/DQ placement.
  An old spelling stays as a hidden alias (:func:`deprecated_alias`): it still works, and
  :func:`resolve_deprecated` prints one ``warning:`` line on stderr for it.
- **Flag groups** declared once and parsed into their config objects (Polygraphy's
  ``tools/args`` groups are the model): :class:`BatchProfileArgs`, :class:`BuildConfigArgs`
  (-> :class:`~xception_trt.config.BuildConfig`), :class:`RunnerArgs`
  (-> :class:`~xception_trt.runners.RunnerOptions`), :class:`CalibrationArgs`
  (-> :class:`~xception_trt.config.CalibrationOptions`).
- **Which option applies with what** (:data:`RULES`, a table like Ultralytics'
  ``export_formats()``): one row per rule, walked by one checker, :func:`check_rules`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..bundle.format import is_bundle
from ..errors import ConfigError
from ._common import _subparser

if TYPE_CHECKING:
    from ..config import BuildConfig, CalibrationOptions
    from ..runners import RunnerOptions

__all__ = ["CONCEPT_FLAGS", "deprecated_alias", "resolve_deprecated", "add_cc_flag",
           "BatchProfileArgs", "BuildConfigArgs", "RunnerArgs", "CalibrationArgs", "Rule",
           "RULES", "check_rules", "add_tuned_flag", "tuned_keywords"]

# ---------------------------------------------------------------------------------------------
# one spelling per concept, old spellings as hidden aliases

#: The one flag of each concept, and the old spellings that still work this release (hidden
#: from --help; a warning names the new flag). ``old`` maps a command to its old spelling.
CONCEPT_FLAGS: dict[str, dict[str, Any]] = {
    "compute capability": {"flag": "--cc", "old": {"bundle": "--engines", "doctor": "--target"}},
    "TensorRT flavour": {"flag": "--flavour", "old": {"build": "--backend"}},
    "CUDA binding": {"flag": "--cuda-binding", "old": {"selftest": "--backend"}},
    "Triton backend": {"flag": "--triton-backend", "old": {"triton-repo": "--backend"}},
    "INT8 placement": {"flag": "--placement", "old": {"quantize": "--target"}},
}


def deprecated_alias(p: argparse.ArgumentParser | Any, old: str, new: argparse.Action,
                     **kw: Any) -> argparse.Action:
    """Add ``old`` as a hidden, deprecated spelling of the flag ``new``.

    The old flag parses like the new one (``kw``: its ``choices``, ``nargs``, ``action`` ...)
    into a private destination; :func:`resolve_deprecated` moves the value over after parsing,
    with one warning, or refuses both spellings together.

    Returns:
        The new action (``old`` is in its ``deprecated_for``).
    """
    action = p.add_argument(old, dest=f"deprecated_{new.dest}", default=None,
                            help=argparse.SUPPRESS, **kw)
    action.deprecated_for = new  # type: ignore[attr-defined]
    return action


def resolve_deprecated(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Give each deprecated spelling's value to its new flag, with one ``warning:`` line on
    stderr per old flag used.

    Raises:
        ConfigError: The old and the new spelling were both given.
    """
    sub = _subparser(parser, getattr(args, "command", None) or "")
    if sub is None:
        return
    for action in sub._actions:
        new = getattr(action, "deprecated_for", None)
        if new is None or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        delattr(args, action.dest)
        if value is None:
            continue
        old_flag, new_flag = action.option_strings[0], new.option_strings[0]
        if getattr(args, new.dest) != new.default:
            raise ConfigError(f"{old_flag} and {new_flag} are the same option ({old_flag} is "
                              f"its deprecated spelling); give only {new_flag}")
        print(f"warning: {old_flag} is deprecated; use {new_flag}", file=sys.stderr)
        setattr(args, new.dest, value)


def add_cc_flag(p: argparse.ArgumentParser | Any, *, help: str,
                old: str | None = None) -> argparse.Action:
    """``--cc SM [SM ...]``: compute capabilities (``sm86 sm89 sm120``), the one spelling in
    every command; ``old`` is a command's deprecated spelling."""
    action = p.add_argument("--cc", nargs="+", default=[], metavar="SM", help=help)
    if old is not None:
        deprecated_alias(p, old, action, nargs="+", metavar="SM")
    return action


# ---------------------------------------------------------------------------------------------
# flag groups, each parsed into its config object


class BatchProfileArgs:
    """The optimisation profile's batch sizes: ``--batch`` (fixed) or ``--min-batch`` /
    ``--opt-batch`` / ``--max-batch``."""

    FLAGS = (("--batch", "fixed batch size (profile min = opt = max)"),
             ("--min-batch", "smallest batch of the profile (default: 1)"),
             ("--opt-batch", "batch TensorRT optimises for (default: --max-batch)"),
             ("--max-batch", "largest batch of the profile (default: 8)"))

    @classmethod
    def add(cls, p: argparse.ArgumentParser, *, only_max: str | None = None) -> None:
        """Add the group; ``only_max``: just ``--max-batch``, with this help."""
        from ._common import batch_size

        if only_max is not None:
            p.add_argument("--max-batch", type=batch_size, default=None, help=only_max)
            return
        group = p.add_argument_group("batch profile")
        for flag, text in cls.FLAGS:
            group.add_argument(flag, type=batch_size, default=None, help=text)

    @staticmethod
    def parse(args: argparse.Namespace) -> dict[str, int | None]:
        """``BuildConfig`` keywords of the profile (``None``: not given)."""
        return {name: getattr(args, name, None)
                for name in ("batch", "min_batch", "opt_batch", "max_batch")}


class BuildConfigArgs:
    """TensorRT build options (with the batch profile) -> :class:`BuildConfig`."""

    @staticmethod
    def add(p: argparse.ArgumentParser) -> None:
        """Add the batch profile and the ``TensorRT`` group."""
        from ..config import Flavour
        from ._common import path_argument, positive_int

        BatchProfileArgs.add(p)
        trt = p.add_argument_group("TensorRT")
        flavour = trt.add_argument(
            "--flavour", choices=Flavour.choices(), default=None,
            help="TensorRT flavour (default: NVIDIA TensorRT if it imports and a GPU is "
                 "present, else TensorRT-RTX)")
        deprecated_alias(trt, "--backend", flavour, choices=Flavour.choices())
        add_cc_flag(trt, help="TensorRT-RTX compute-capability targets, e.g. sm86 sm89 sm120, "
                              "or current (needs a GPU) (default: TensorRT-RTX's portable "
                              "Ampere+ set)")
        trt.add_argument("--workspace-mib", type=positive_int, default=None,
                         help="workspace memory pool limit in MiB (default: TensorRT's; try 256 "
                              "on a Jetson Nano)")
        trt.add_argument("--opt-level", type=int, choices=range(6), default=None, metavar="0-5",
                         help="builder optimisation level (default: TensorRT's, 3)")
        path_argument(trt, "--timing-cache", kind="output-dir", metavar="DIR", default=None,
                      help="timing-cache directory, one file per TensorRT version and GPU "
                           "(default: OUTPUT/timing-cache with NVIDIA TensorRT; TensorRT-RTX "
                           "has none)")
        trt.add_argument("--no-timing-cache", action="store_true",
                         help="do not use a timing cache")
        trt.add_argument("--dla-core", type=int, default=None,
                         help="build for this DLA core (Jetson), with GPU fallback; needs "
                              "--batch N and --precision fp16 and/or int8")
        trt.add_argument("--no-gpu-fallback", action="store_true",
                         help="with --dla-core: fail instead of running layers on the GPU")
        trt.add_argument("--version-compatible", action="store_true",
                         help="engine runs on later TensorRT runtimes (NVIDIA TensorRT 8.6+)")
        trt.add_argument("--hardware-compatible", action="store_true",
                         help="engine runs on any Ampere or newer GPU (NVIDIA TensorRT 8.6+)")
        trt.add_argument("--no-layer-info", action="store_true",
                         help="do not record per-layer information in the sidecar")

    @staticmethod
    def parse(args: argparse.Namespace) -> BuildConfig:
        """The :class:`BuildConfig` the flags give."""
        from ..config import BuildConfig

        return BuildConfig(
            flavour=args.flavour, **BatchProfileArgs.parse(args),
            workspace_mib=args.workspace_mib, optimization_level=args.opt_level,
            timing_cache_dir=args.timing_cache or None, dla_core=args.dla_core,
            gpu_fallback=not args.no_gpu_fallback, version_compatible=args.version_compatible,
            hardware_compatible=args.hardware_compatible, cc=tuple(args.cc or ()),
            layer_info=not args.no_layer_info)


def _providers(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise ValueError("no provider")
    return names


class RunnerArgs:
    """Runner options of the commands that run models -> :class:`RunnerOptions`."""

    @staticmethod
    def add(p: argparse.ArgumentParser, *, threads: str | None = None,
            device: str | None = None, cuda_graphs: bool = True,
            providers: bool = True) -> None:
        """Add the runner flags a command takes (``threads``/``device``: their help)."""
        from ._common import arg_type, positive_int

        if threads is not None:
            p.add_argument("--threads", type=positive_int, default=None, help=threads)
        if device is not None:
            p.add_argument("--device", default=None, help=device)
        if cuda_graphs:
            p.add_argument("--cuda-graphs", action="store_true",
                           help="TensorRT engines: capture and replay one CUDA graph per batch "
                                "size (lowest host overhead); an error for other model types")
        if providers:
            p.add_argument("--providers", type=arg_type(_providers, expected="a comma-separated "
                                                        "list of provider names"),
                           default=None, metavar="EP[,EP...]",
                           help="ONNX files: ONNX Runtime execution providers in priority "
                                "order, e.g. CPUExecutionProvider (default: CUDA if this "
                                "onnxruntime has it, then CPU); checked against "
                                "onnxruntime.get_available_providers()")

    @staticmethod
    def parse(args: argparse.Namespace) -> RunnerOptions:
        """The :class:`RunnerOptions` the flags give (absent flags: defaults)."""
        from ..runners import RunnerOptions

        providers = getattr(args, "providers", None)
        return RunnerOptions(threads=getattr(args, "threads", None),
                             device=getattr(args, "device", None),
                             cuda_graphs=getattr(args, "cuda_graphs", False),
                             providers=tuple(providers) if providers is not None else None)


class CalibrationArgs:
    """``--calib`` and ``--calib-method`` of the commands that make INT8 variants
    -> :class:`CalibrationOptions`."""

    @staticmethod
    def add(p: argparse.ArgumentParser, *, calib_kind: str, calib_help: str,
            methods: Sequence[str], method_help: str) -> None:
        from ._common import path_argument

        path_argument(p, "--calib", kind=calib_kind, metavar="DIR", default=None,
                      help=calib_help)
        p.add_argument("--calib-method", choices=list(methods), default=None, help=method_help)

    @staticmethod
    def parse(args: argparse.Namespace) -> CalibrationOptions:
        from ..config import CalibrationOptions

        return CalibrationOptions(images=args.calib, method=args.calib_method)


# ---------------------------------------------------------------------------------------------
# which option applies with what: the table and its one checker


def _flag(name: str) -> Callable[[argparse.Namespace], Any]:
    """Whether the flag with destination ``name`` was given (a value other than its unset
    default: ``None``, ``False``, ``[]``, ``()``)."""
    def given(args: argparse.Namespace) -> Any:
        value = getattr(args, name, None)
        return value if value not in (None, False, [], ()) else None
    return given


def _set(name: str) -> Callable[[argparse.Namespace], bool]:
    """Whether ``name`` was given at all (``0`` and ``0.0`` count)."""
    return lambda args: getattr(args, name, None) is not None


def _int8(args: argparse.Namespace) -> bool:
    return "int8" in (args.precision if isinstance(args.precision, list)
                      else [args.precision])


def _onnx_source(args: argparse.Namespace) -> bool:
    return str(args.source).lower().endswith(".onnx")


_never: Callable[[argparse.Namespace], bool] = lambda args: False  # noqa: E731


@dataclass(frozen=True)
class Rule:
    """One row of :data:`RULES`: where it is checked, and when a flag is refused.

    Attributes:
        at: The check points (a command, or ``command:stage``) that check this row.
        flag: The flag as typed (``"--no-gpu-fallback"``).
        given: Whether (truthy) the user gave ``flag``.
        kind: ``"needs"``: ``flag`` applies only with ``other``; ``"excludes"``: ``flag``
            cannot be combined with ``other``.
        other: The other side as said in messages (``"--dla-core N"``, ``"--precision int8"``).
        other_given: Whether (truthy) ``other`` holds.
        why: Why, for the message (optional for ``needs``).
    """

    at: tuple[str, ...]
    flag: str
    given: Callable[[argparse.Namespace], Any]
    kind: Literal["needs", "excludes"]
    other: str
    other_given: Callable[[argparse.Namespace], Any]
    why: str | None = None

    def problem(self, args: argparse.Namespace) -> str | None:
        """The error message when ``args`` break this rule, else ``None``."""
        if not self.given(args):
            return None
        has_other = bool(self.other_given(args))
        if self.kind == "needs" and not has_other:
            return (f"{self.flag} only applies with {self.other}"
                    + (f" ({self.why})" if self.why else "")
                    + f"; add {self.other} or drop {self.flag}")
        if self.kind == "excludes" and has_other:
            return (f"{self.flag} cannot be combined with {self.other} ({self.why}); drop one "
                    "of them")
        return None


def _needs(at: str | tuple[str, ...], flag: str, given: Callable[[argparse.Namespace], Any],
           other: str, other_given: Callable[[argparse.Namespace], Any],
           why: str | None = None) -> Rule:
    return Rule((at,) if isinstance(at, str) else at, flag, given, "needs", other, other_given,
                why)


def _excludes(at: str | tuple[str, ...], flag: str, given: Callable[[argparse.Namespace], Any],
              other: str, other_given: Callable[[argparse.Namespace], Any], why: str) -> Rule:
    return Rule((at,) if isinstance(at, str) else at, flag, given, "excludes", other,
                other_given, why)


def _given(name: str) -> Callable[[argparse.Namespace], Any]:
    """:func:`_flag`, or :func:`_set` for a flag whose ``False`` is a choice
    (``--no-int8-weights``)."""
    return _set(name) if name == "int8_weights" else _flag(name)


_ORT = ("--placement onnxruntime", lambda a: a.placement == "onnxruntime")
#: --int8-weights, also given as --no-int8-weights (argparse.BooleanOptionalAction).
_INT8_WEIGHTS = "--int8-weights"
_TARGETED_WHY = ("the targeted mode chooses the FP32 nodes itself from an FP32-weight Q/DQ "
                 "graph calibrated with images")
_TARGET_FLAGS = (("--target-agreement", "target_agreement"),
                 ("--target-top1-drop", "target_top1_drop"))
#: Why --precision needs a bundle (infer and triton-repo).
PRECISION_WHY = ("it chooses which of a bundle's variants runs; an engine, ONNX file or "
                 "checkpoint has one precision")
_RUNNER_FLAGS = (("--threads", "threads"), ("--cuda-graphs", "cuda_graphs"),
                 ("--providers", "providers"))

#: Which option applies with what, for every command: checked in this order by
#: :func:`check_rules` at each check point (the command, or ``command:stage`` where a command
#: checks some options later, after other checks).
RULES: tuple[Rule, ...] = (
    # build
    _needs("build", "--no-gpu-fallback", _flag("no_gpu_fallback"), "--dla-core N",
           _set("dla_core"), why="GPU fallback is a DLA setting"),
    _excludes("build", "--no-timing-cache", _flag("no_timing_cache"), "--timing-cache",
              _flag("timing_cache"), why="one turns off what the other sets"),
    *(_needs("build:source", flag, lambda a, d=dest: getattr(a, d) is not None
             and _onnx_source(a), "a checkpoint SOURCE", _never,
             why="it is an export setting; an ONNX source is already exported")
      for flag, dest in (("--input-format", "input_format"), ("--opset", "opset"))),
    # bundle
    _needs("bundle", "--calib-method", _flag("calib_method"), "--precision int8",
           lambda a: "int8" in (a.precision or []),
           why="it chooses how the INT8 variant is calibrated"),
    # export
    _excludes("export", "--parity-samples", _flag("parity_samples"), "--no-parity",
              _flag("no_parity"), why="there is no parity check to sample for"),
    # train
    *(_excludes("train", flag, _flag(dest), "--no-augment", _flag("no_augment"),
                why="--no-augment turns off the flips and crops this sets")
      for flag, dest in (("--no-flip", "no_flip"), ("--crop-scale", "crop_scale"))),
    # quantize: INT8-only flags, then combinations
    *(_needs("quantize", flag, given, "--precision int8", _int8)
      for flag, given in (("--placement", _flag("placement")), ("--auto", _flag("auto")),
                          ("--method", _flag("method")),
                          ("--import-cache", _flag("import_cache")),
                          ("--export-trt-cache", _flag("export_trt_cache")),
                          (_INT8_WEIGHTS, _set("int8_weights")),
                          ("--exclude-depthwise", _flag("exclude_depthwise")),
                          ("--high-precision", _flag("high_precision")),
                          ("--percentile", _set("percentile")),
                          ("--cache-dir", _flag("cache_dir")), ("--no-cache", _flag("no_cache")))),
    _excludes("quantize:combinations", "--auto", _flag("auto"), "--import-cache",
              _flag("import_cache"),
              why="--auto calibrates with images; an imported cache fixes the scales"),
    _excludes("quantize:combinations", "--method", _flag("method"), "--auto", _flag("auto"),
              why="--auto tries every method and keeps the best"),
    _excludes("quantize:combinations", "--no-cache", _flag("no_cache"), "--cache-dir",
              _flag("cache_dir"), why="--no-cache turns off the cache --cache-dir places"),
    _needs("quantize:combinations", "--percentile", _set("percentile"),
           "--method percentile or --auto", lambda a: a.method == "percentile" or a.auto),
    _needs("quantize:combinations", "--compare-all", _flag("compare_all"), "--val DIR",
           _flag("val"), why="it adds rows to the accuracy table measured on --val"),
    _needs("quantize:combinations", "--val-images", _flag("val_images"), "--val DIR or --auto",
           lambda a: a.val or a.auto),
    *(_excludes("quantize:combinations", flag, _given(dest), *_ORT, why=why)
      for flag, dest, why in (
          ("--import-cache", "import_cache", "an imported cache holds symmetric scales for the "
           "TensorRT placement; onnxruntime calibrates its own ranges (cached in --cache-dir)"),
          ("--export-trt-cache", "export_trt_cache", "its asymmetric scales are not a TensorRT "
           "calibration cache"),
          (_INT8_WEIGHTS, "int8_weights", "onnxruntime always stores INT8 weights"),
          ("--high-precision", "high_precision", "onnxruntime keeps the rest in fp32"))),
    _needs("quantize:threads", "--threads", _flag("threads"),
           "--target-agreement or --target-top1-drop",
           lambda a: a.target_agreement is not None or a.target_top1_drop is not None),
    *(rule for flag, dest in _TARGET_FLAGS for rule in (
        _excludes("quantize:targeted", flag, _set(dest), *_ORT,
                  why="the targeted mode keeps nodes of the TensorRT placement in FP32"),
        *(_excludes("quantize:targeted", flag, _set(dest), other, _given(other_dest),
                    why=_TARGETED_WHY)
          for other, other_dest in (("--auto", "auto"), ("--import-cache", "import_cache"),
                                    (_INT8_WEIGHTS, "int8_weights"),
                                    ("--high-precision", "high_precision"),
                                    ("--exclude", "exclude"),
                                    ("--exclude-op-type", "exclude_op_type"),
                                    ("--exclude-depthwise", "exclude_depthwise"),
                                    ("--compare-all", "compare_all"))))),
    # infer, stream, triton-repo: a precision picks one of a bundle's variants
    _needs(("infer", "stream", "triton-repo"), "--precision", _flag("precision"),
           "a bundle MODEL (.xtrt)", lambda a: is_bundle(a.model), why=PRECISION_WHY),
    # a tuned configuration is a bundle's (recorded by `tune` for it on this machine)
    _needs(("infer", "stream", "triton-repo", "serve:tuned"), "--no-tuned", _flag("no_tuned"),
           "a bundle MODEL (.xtrt)", lambda a: is_bundle(a.model),
           why="only a bundle has a tuned configuration"),
    _needs(("bench:tuned", "eval:tuned"), "--no-tuned", _flag("no_tuned"),
           "a bundle among the MODELs (.xtrt)",
           lambda a: any(is_bundle(m) for m in [*a.models, getattr(a, "reference", None) or ""]),
           why="only a bundle has a tuned configuration"),
    # triton-repo and serve: runner flags set our runner in Triton's Python backend (serve
    # always writes Python-backend models)
    *(_needs("triton-repo:runner", flag, _flag(dest), "--triton-backend python",
             lambda a: getattr(a, "triton_backend", "python") == "python",
             why="it sets our runner in Triton's Python backend")
      for flag, dest in _RUNNER_FLAGS),
    _needs("triton-repo:int8-calib", "--int8-calib", _set("int8_calib"),
           "an FP32 ONNX MODEL", lambda a: Path(a.model).suffix.lower() == ".onnx",
           why="it quantizes that graph for ONNX Runtime"),
    # serve: a repository directory's configs already fix how its runners are opened
    *(_needs("serve", flag, given, "a model file (not a repository directory)",
             lambda a: not Path(a.model).is_dir())
      for flag, given in (("--threads", _set("threads")),
                          ("--cuda-graphs", _flag("cuda_graphs")),
                          ("--providers", _set("providers")),
                          ("--int8-calib", _set("int8_calib")))),
)


def add_tuned_flag(p: argparse.ArgumentParser | Any) -> None:
    """``--no-tuned``: ignore the configuration ``xception-trt tune`` recorded for a bundle on
    this machine (the one spelling in every command that opens a bundle; Python:
    ``tuned=False``)."""
    p.add_argument("--no-tuned", action="store_true",
                   help="bundles: ignore the configuration `xception-trt tune` recorded for "
                        "this bundle on this machine (default: it fills the options not given, "
                        "said in one line on stderr)")


def tuned_keywords(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """``{"tuned": False}`` for a bundle with ``--no-tuned``, else nothing (open_runner's
    default uses the tuned configuration)."""
    return {"tuned": False} if getattr(args, "no_tuned", False) and is_bundle(model) else {}


def check_rules(args: argparse.Namespace, at: str) -> None:
    """Refuse, before any work, a flag that check point ``at``'s rows of :data:`RULES` say
    would be silently ignored or contradicts another.

    Raises:
        ConfigError: The first row broken, naming both sides, why, and the fix.
    """
    for rule in RULES:
        if at in rule.at and (problem := rule.problem(args)) is not None:
            raise ConfigError(problem)


def runner_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The generic runner settings a command's flags give (``threads``, ``cuda_graphs``,
    ``providers``), for :func:`xception_trt.runners.check_runner_options` and
    :func:`xception_trt.runners.runner_options` (and as reports record them)."""
    return RunnerArgs.parse(args).settings()
