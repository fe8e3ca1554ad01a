"""``xception-trt doctor``: what this machine has, which of a bundle's (or an engine's) engines
would load here and why not, what would be built instead, and the command that prebuilds for
a named target. Pure over :class:`~xception_trt.bundle.facts.DeviceFacts`, so recorded facts
of another machine give that machine's answer."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Precision, normalise_compute_capability
from ..errors import EngineError, renamed
from ..jsonable import JsonMixin, json_field
from ..sidecar import EngineSidecar, read_sidecar
from ..trt.compat import check_sidecar_compat
from .choice import Choice, ChoiceKind, Request, choose, engine_mismatch, rtx_can_build_for
from .facts import DeviceFacts
from .format import Bundle, is_bundle

__all__ = ["DoctorReport", "diagnose", "prebuild_command", "format_report", "recorded_facts",
           "engine_mismatch_any_precision"]


@dataclass(frozen=True)
class DoctorReport(JsonMixin):
    """The answer of ``doctor``.

    Attributes:
        facts: The machine.
        target: The file asked about (``None``: the machine only).
        kind: ``bundle``, ``engine`` or ``None``.
        summary: What the file is (format, members verified ...).
        engines: One row per engine: ``{"engine", "what", "loads", "why"}``.
        choices: Bundle only: per precision, what opening it would do.
        prebuild: Target name -> the command that prebuilds for it.
        covered: Bundle only: named targets with an engine for every precision already (no
            prebuild command is given for them).
        ort_placed: Bundle only: precisions whose ONNX Runtime graph is the one placed for
            ONNX Runtime (INT8), not the TensorRT-placed variant.
    """

    facts: DeviceFacts = json_field(key="machine")
    target: str | None = None
    kind: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    engines: tuple[dict[str, Any], ...] = ()
    choices: tuple[Choice, ...] = json_field(default=(), key="open", encode=lambda cs: [
        {"precision": c.precision, "uses": c.kind, "reason": c.reason,
         "engine": c.engine.member if c.engine else None,
         "build": c.build.describe() if c.build else None, "not_used": c.rejected}
        for c in cs])
    prebuild: dict[str, str] = field(default_factory=dict)
    covered: tuple[str, ...] = json_field(default=(), skip=True)
    ort_placed: tuple[Precision, ...] = json_field(default=(), skip=True)


def prebuild_command(bundle_path: str | os.PathLike[str], target: str, *,
                     flavour: str = "tensorrt_rtx") -> str:
    """The command that adds an engine for ``target`` to a bundle.

    TensorRT-RTX builds for a named compute capability on any machine; NVIDIA TensorRT builds
    only for the GPU it runs on, so for it the command is run on the target machine.
    """
    path = str(bundle_path)
    if flavour == "tensorrt_rtx":
        cc = normalise_compute_capability(target).lower()
        return " ".join(shlex.quote(a) for a in (
            "xception-trt", "bundle", path, "--cc", cc, "-o", path, "--force"))
    return ("on the target machine (NVIDIA TensorRT builds for the GPU it runs on): "
            + " ".join(shlex.quote(a) for a in ("xception-trt", "bundle", path, "-o", path,
                                                "--force")))


def _engine_row(name: str, side: EngineSidecar, facts: DeviceFacts,
                request: Request) -> dict[str, Any]:
    why = engine_mismatch_any_precision(side, facts, request)
    return {"engine": name, "precision": side.precision.value, "flavour": side.flavour,
            "version": side.tensorrt.version,
            "targets": list(side.targets) if side.targets else None,
            "compute_capability": side.device.compute_capability if side.device else None,
            "max_batch": side.max_batch, "loads": why is None, "why": why}


def engine_mismatch_any_precision(side: EngineSidecar, facts: DeviceFacts,
                                  request: Request) -> str | None:
    """Why an engine would not load here, whatever precision is asked (``None``: it loads)."""
    from .format import EngineEntry

    return engine_mismatch(EngineEntry("", "", side), facts,
                           Request(side.precision, device=request.device,
                                   max_batch=request.max_batch, flavour=request.flavour))


def _targets(facts: DeviceFacts, named: Sequence[str]) -> list[str]:
    """Named targets, else this machine's GPUs (``SM86`` ...)."""
    if named:
        return list(dict.fromkeys(normalise_compute_capability(t) for t in named))
    return list(dict.fromkeys(g.sm for g in facts.gpus))


def _bundle_prebuild(path: str | os.PathLike[str], targets: Sequence[str]) -> dict[str, str]:
    """TensorRT-RTX targets get the command that adds their engine anywhere; the others
    (Jetson, datacenter GPUs) are built by NVIDIA TensorRT on the target machine."""
    out = {}
    for t in targets:
        rtx_ok = rtx_can_build_for(t) is None
        out[t] = prebuild_command(path, t, flavour="tensorrt_rtx" if rtx_ok else "tensorrt")
    return out


def diagnose(path: str | os.PathLike[str] | None, *, facts: DeviceFacts,
             cc: Sequence[str] = (), device: int = 0,
             max_batch: int | None = None, targets: Sequence[str] | None = None) -> DoctorReport:
    """Diagnose a bundle, an engine or (``path=None``) just the machine.

    Args:
        path: A ``.xtrt`` bundle, an engine (with its sidecar) or ``None``.
        facts: The machine (probed, or recorded facts of another one).
        cc: Compute capabilities to give the prebuild command for (default: this
            machine's RTX-buildable GPUs).
        device: CUDA ordinal considered.
        max_batch: Largest batch that must fit.
        targets: Old name of ``cc`` (deprecated).

    Returns:
        A :class:`DoctorReport`.

    Raises:
        BundleError: The bundle is unreadable, tampered with, or of a newer format.
        EngineError: The engine's sidecar is missing, invalid, or does not match the plan.
    """
    cc = renamed("targets", "cc", targets, tuple(cc) or None, where="diagnose") or ()
    names = _targets(facts, cc)
    if path is None:
        return DoctorReport(facts)
    if is_bundle(path):
        with Bundle(path) as bundle:
            checked = bundle.verify()
            manifest = bundle.manifest
            for prec, v in manifest.variants.items():  # what infer would refuse, doctor does
                for member in dict.fromkeys((v.member, v.onnxruntime_member)):
                    if member is not None:
                        bundle.check_graph(member, prec)
            choices = tuple(choose(manifest, facts, Request(p, device=device,
                                                            max_batch=max_batch))
                            for p in manifest.precisions)
            rows = tuple(_engine_row(e.member, e.sidecar, facts,
                                     Request(e.precision, device=device, max_batch=max_batch))
                         for e in manifest.engines)
            summary = {"format_version": manifest.format_version,
                       "members_verified": len(checked), "bytes": bundle.size_bytes(),
                       "made_with": manifest.xception_trt_version,
                       "created": manifest.created, "source": dict(manifest.source),
                       "precisions": [p.value for p in manifest.precisions],
                       "accuracy": {p.value: dict(v.accuracy) if v.accuracy else None
                                    for p, v in manifest.variants.items()},
                       "batch_profile": list(manifest.batch_profile)}
            # a target whose engines the bundle has for every precision needs no prebuild
            covered = tuple(t for t in names if all(
                any(e.precision is p and t in (e.sidecar.targets or ()) for e in manifest.engines)
                for p in manifest.precisions))
            ort_placed = tuple(c.precision for c in choices if c.variant is not None
                               and c.variant.member != manifest.variant(c.precision).member)
        prebuild = _bundle_prebuild(path, [t for t in names if t not in covered])
        return DoctorReport(facts, str(path), "bundle", summary, rows, choices, prebuild,
                            covered, ort_placed)
    side = read_sidecar(path, verify=True)
    row = _engine_row(str(path), side, facts, Request(side.precision, device=device,
                                                      max_batch=max_batch))
    flavour = facts.flavour(side.flavour)
    if flavour is not None and row["why"] is None:  # the runtime's own check, to be sure
        gpu = facts.gpu(device)
        try:
            check_sidecar_compat(side, flavour.name, flavour.version,
                                 gpu.compute_capability if gpu else None,
                                 integrated=gpu.integrated if gpu else False)
        except EngineError as exc:
            row["loads"], row["why"] = False, str(exc)
    prebuild = {t: f"{side.rebuild_command} --flavour tensorrt_rtx --cc {t.lower()}"
                for t in names if rtx_can_build_for(t) is None}
    if not row["loads"]:
        prebuild["here"] = (f"{side.rebuild_command} --flavour "
                            f"{facts.flavours[0].name if facts.flavours else 'tensorrt'}")
    summary = {"precision": side.precision.value, "bytes": side.engine.bytes,
               "rebuild_command": side.rebuild_command}
    return DoctorReport(facts, str(path), "engine", summary, (row,), (), prebuild)


def _machine_lines(facts: DeviceFacts) -> list[str]:
    trt = ", ".join(f"{f.name} {f.version}" for f in facts.flavours) or "none installed"
    gpus = ", ".join(f"{g.index}: {g.name} (compute capability {g.compute_capability}, "
                     f"{g.sm.lower()})" for g in facts.gpus) or f"none ({facts.gpu_reason})"
    ort = (f"{facts.ort_version} ({', '.join(facts.ort_providers)})" if facts.ort_version
           else "not installed (pip install 'xception-trt[ort]')")
    return [f"machine: {facts.host or 'this machine'}",
            f"  TensorRT:      {trt}",
            f"  driver:        {facts.driver or 'none'}",
            f"  GPUs:          {gpus}",
            f"  DLA cores:     {facts.dla_cores}",
            f"  ONNX Runtime:  {ort}",
            f"  onnx package:  {'installed' if facts.onnx else 'not installed'} (building "
            "from a bundle reads its ONNX)"]


def format_report(report: DoctorReport) -> str:
    """The report as text (what ``doctor`` prints)."""
    lines = _machine_lines(report.facts)
    s = report.summary
    if report.kind == "bundle":
        lines.append(f"bundle: {report.target} (format {s['format_version']}, "
                     f"{s['members_verified']} members verified, {s['bytes'] / 2**20:.1f} MiB, "
                     f"made by xception-trt {s['made_with']})")
        for i, prec in enumerate(s["precisions"]):  # the default first
            acc = s["accuracy"].get(prec)
            extra = (f": top-1 agreement with fp32 {acc['agreement']:.2f} % on "
                     f"{acc['images']} images" if acc else "")
            default = " (default: what opening it runs without --precision)" if i == 0 else ""
            lines.append(f"  variant {prec}{default}{extra}")
    elif report.kind == "engine":
        lines.append(f"engine: {report.target} ({s['precision']}, {s['bytes'] / 2**20:.1f} MiB)")
    if report.engines:
        lines.append("engines:")
        lines.extend(_engine_lines(report.engines))
    if report.choices:
        lines.append("opening it here:")
        lines.extend(_choice_lines(report))
    if report.prebuild or report.covered:
        lines.append("prebuild:")
        lines.extend(f"  {target}: the bundle has engines for it (every precision)"
                     for target in report.covered)
        lines.extend(f"  {target}: {cmd}" for target, cmd in report.prebuild.items())
    return "\n".join(lines)


def _engine_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Engines grouped by verdict: a reason shared by several engines is said once."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        verdict = "loads here" if row["loads"] else f"does not load here: {row['why']}"
        groups.setdefault(verdict, []).append(row)
    lines = []
    for verdict, members in groups.items():
        names = [f"{row['engine']} ({row['precision']}, {row['flavour']} {row['version']}, "
                 + (",".join(row["targets"]) if row["targets"] else
                    f"sm_{row['compute_capability'].replace('.', '')}"
                    if row["compute_capability"] else "?") + ")" for row in members]
        if len(names) == 1:
            lines.append(f"  {names[0]}: {verdict}")
            continue
        plural = verdict.replace("does not load", "do not load", 1)
        lines.append(f"  {len(names)} engines {plural}:")
        lines.extend(f"    {name}" for name in names)
    return lines


def _choice_lines(report: DoctorReport) -> list[str]:
    """Per precision what opening the bundle runs; the reason ONNX Runtime runs every one of
    them is said once, and the graph it runs is named (INT8: the one placed for it)."""
    ort = [c for c in report.choices if c.kind is ChoiceKind.ONNXRUNTIME]
    shared = len(ort) > 1 and len({c.cause for c in ort}) == 1 and bool(ort[0].cause)
    lines = [f"  ONNX Runtime runs each precision: {ort[0].cause}"] if shared else []
    for c in report.choices:
        what = {ChoiceKind.PREBUILT: "prebuilt engine", ChoiceKind.BUILD: "builds an engine",
                ChoiceKind.ONNXRUNTIME: "ONNX Runtime", ChoiceKind.NONE: "cannot run"}[c.kind]
        if c.kind is ChoiceKind.ONNXRUNTIME and c.variant is not None:
            graph = (f"the {c.precision.value.upper()} graph placed for ONNX Runtime "
                     f"({c.variant.member}), not the one placed for TensorRT"
                     if c.precision in report.ort_placed else f"{c.variant.member}")
            detail = f"runs {graph}" if shared else f"{c.reason}; it runs {graph}"
        else:
            detail = c.reason
        lines.append(f"  {c.precision.value}: {what} — {detail}")
    return lines


def recorded_facts(path: str | os.PathLike[str]) -> DeviceFacts:
    """Recorded facts of a machine (``doctor --json``'s ``machine`` or a bare facts file).

    Raises:
        ConfigError: Unreadable or invalid file.
    """
    import json

    from ..errors import ConfigError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read machine facts {path}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"cannot read machine facts {path}: its JSON is nested too deeply "
                          "(a facts file is a flat object as `xception-trt doctor --json` "
                          "writes under 'machine')") from None
    if isinstance(data, dict) and isinstance(data.get("machine"), dict):
        data = data["machine"]
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds no machine facts (a JSON object as `xception-trt "
                          "doctor --json` writes under 'machine')")
    return DeviceFacts.from_dict(data)
