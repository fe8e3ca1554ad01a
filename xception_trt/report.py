# Over 600 lines on purpose: the JSON, Markdown and plot writers render the same report structure
# side by side.
"""Benchmark and evaluation reports: a versioned JSON document, a Markdown rendering with the
tables people paste into a review, and PNG plots, written into ``<root>/<name>/``.

Layout of a report directory::

    report.json              schema "xception-trt/bench-report", schema_version 2
    report.md                results first (comparison: deltas vs the FP32 reference, and
                             the findings under it), engines, notes, system, latency,
                             accuracy, memory, runner details, problems
    latency_vs_batch.png     median latency (p90/p99 as thin ticks) and mean throughput vs
                             batch size, per runner
    latency_vs_energy.png    median latency vs energy per image, a point per runner and batch
                             (only when power was measured)
    accuracy_by_precision.png  top-1/top-5 change from the reference in percentage points, and
                             top-1 disagreement with it
                             (plots need matplotlib, the ``plot`` extra; without it the
                             report has tables only and says so where each plot would be)

Every table lists the runners in one order (:func:`table_order`: the reference first, then by
precision, backend and name) and every plot draws each runner in one style
(:func:`runner_styles`: its colour, marker and line style), its legend in the table's order.

JSON schema (version 2; new optional keys may be added, a removed or renamed key bumps the
version; 2 renamed every ``*_mb`` key ``*_mib``: sizes are MiB everywhere)::

    {"schema": "xception-trt/bench-report", "schema_version": 2, "name": str,
     "title": str, "kind": "bench" | "eval", "created_utc": ISO-8601, "command": str | null,
     "notes": [str], "findings": [str] | absent, "engines": [{"path", "size_bytes",
     "precision", "built_with", "target", "max_batch", "runs_on", "command", and where the
     engine records its layers "layers", "precision_check", "generated_kernels"}] | absent,
     "system": {...sysinfo.system_facts(), incl. "load_average"...},
     "process": {"peak_rss_mib": float | null}, "config": {...}, "reference": str | null,
     "context": {...power.run_context()...} | absent,
     "power": {...PowerMonitor.describe()...} | null | absent,
     "dataset": {...} | null, "unreadable_images": [{"path", "reason"}],
     "runners": [{"name", "backend", "precision", "input_format", "device",
                  "description": {...}, "latency": [LatencyResult... (each with "power": {...
                  PowerReading.to_dict()...} | null)], "memory": {...} | null,
                  "accuracy": {...} | null, "agreement": {...} | null,
                  "eval_seconds": float | null, "errors": [str]}]}
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BenchError, ConfigError, DependencyError, renamed
from .extras import needs
from .host import int8_features_text

__all__ = ["SCHEMA", "SCHEMA_VERSION", "ReportFiles", "build_report", "validate_report",
           "load_report", "render_markdown", "latency_figure", "plot_latency", "plot_accuracy",
           "check_report_dir", "write_report", "default_report_name", "DEFAULT_ROOT",
           "plot_energy", "accuracy_figure", "table_order", "runner_styles"]

log = logging.getLogger(__name__)

SCHEMA = "xception-trt/bench-report"
SCHEMA_VERSION = 2
#: Where the CLI writes reports unless told otherwise: the working directory, in a new folder
#: named after the run (:func:`default_report_name`), as ``sensitivity`` writes its folder
#: there; never into a folder of the source tree the user did not name.
DEFAULT_ROOT = Path(".")

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_PRECISION_ORDER = {"fp32": 0, "fp16": 1, "int8": 2}
_PLOTS = "report plots"
_REQUIRED = ("schema", "schema_version", "name", "kind", "created_utc", "system", "config",
             "runners")


def default_report_name(kind: str) -> str:
    """``<kind>-YYYYmmdd-HHMMSS`` in UTC."""
    return f"{kind}-{_dt.datetime.now(_dt.timezone.utc):%Y%m%d-%H%M%S}"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise BenchError(f"report name {name!r} is not usable as a folder name; use letters, "
                         "digits, '.', '_' and '-' (at most 100 characters, no '/')")
    return name


# ---------------------------------------------------------------------------------------------
# the document


def _runner_entry(name: str, description: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": name, "backend": description.get("backend"),
            "precision": description.get("precision"),
            "input_format": description.get("input_format"),
            "device": description.get("device"), "description": dict(description),
            "latency": [], "memory": None, "accuracy": None, "agreement": None,
            "eval_seconds": None, "errors": []}


def build_report(name: str, *, kind: str, benchmarks: Sequence[Any] = (),
                 evaluation: Any = None, config: Mapping[str, Any] | None = None,
                 notes: Sequence[str] = (), system: Mapping[str, Any] | None = None,
                 command: str | None = None, reference: str | None = None,
                 title: str | None = None, context: Mapping[str, Any] | None = None,
                 power: Mapping[str, Any] | None = None, findings: Sequence[str] = (),
                 engines: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Assemble the JSON report from latency and/or evaluation results.

    Args:
        name: Report name (its folder name).
        kind: ``bench`` or ``eval``.
        title: The Markdown heading and plot title (default ``xception-trt <kind> report:
            <name>``).
        benchmarks: :class:`~xception_trt.bench.RunnerBenchmark` results.
        evaluation: An :class:`~xception_trt.bench.EvalResult` (or ``None``).
        config: Settings to record (batch sizes, iterations, data ...).
        notes: Free-text caveats, shown after the results (e.g. "random weights").
        findings: Sentences that read the results (why a runner is slow, whether INT8 is
            faster), shown right under the comparison table.
        engines: TensorRT engines the run built, one mapping each: ``path``, ``size_bytes``,
            ``precision``, ``built_with`` (flavour and version), ``target`` (compute
            capability or GPU), ``max_batch``, ``runs_on`` (where it can run) and ``command``
            (what to run it with); optionally ``layers`` (:func:`~xception_trt.trt.layers.
            tally_layers` summary), ``precision_check`` and ``generated_kernels``
            (TensorRT-RTX kernels the plan carries the source of: the size note under the
            table); the ``## Engines`` section.
        system: Machine facts (default: :func:`xception_trt.sysinfo.system_facts`, taken
            now: its load average covers the measurements just made).
        command: The command line that produced the report.
        reference: Name of the reference runner for latency deltas (default: the evaluation's
            reference, else the first FP32 runner).
        context: Conditions of the run (default: :func:`xception_trt.power.run_context` now;
            pass the one taken before measuring).
        power: The power monitor's ``describe()`` (``None``: power was not sampled).

    Returns:
        The report document (validated).

    Raises:
        BenchError: Bad name or kind.
    """
    from .bench import process_peak_rss_mib

    _check_name(name)
    if kind not in ("bench", "eval"):
        raise BenchError(f"report kind must be 'bench' or 'eval', got {kind!r}")
    if system is None:
        from .sysinfo import system_facts

        system = system_facts()
    runners: dict[str, dict[str, Any]] = {}
    for b in benchmarks:
        entry = runners.setdefault(b.name, _runner_entry(b.name, b.description))
        if b.description and not entry["description"]:
            runners[b.name] = entry = {**_runner_entry(b.name, b.description),
                                       "errors": entry["errors"]}
        d = b.to_dict()
        entry["latency"] = d["latency"]
        entry["memory"] = d["memory"]
        if b.error:
            entry["errors"].append(b.error)
    dataset = None
    failures: list[dict[str, str]] = []
    if evaluation is not None:
        dataset = evaluation.dataset
        failures = [{"path": p, "reason": r} for p, r in evaluation.failures]
        for ev in evaluation.runners:
            entry = runners.setdefault(ev.name, _runner_entry(ev.name, ev.description))
            d = ev.to_dict()
            entry["accuracy"], entry["agreement"] = d["accuracy"], d["agreement"]
            entry["eval_seconds"] = d["seconds"]
            if ev.error:
                entry["errors"].append(ev.error)
        reference = reference or evaluation.reference
    if reference is None:
        reference = next((n for n, e in runners.items() if e["precision"] == "fp32"
                          and not e["errors"]), next(iter(runners), None))
    if reference is not None and reference not in runners:
        raise BenchError(f"reference {reference!r} is not one of the runners "
                         f"{list(runners)}")
    doc = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": name,
        "title": title or f"xception-trt {kind} report: {name}", "kind": kind,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "notes": list(notes), "system": dict(system),
        "process": {"peak_rss_mib": _round(process_peak_rss_mib(), 1)},
        "config": dict(config or {}), "reference": reference, "dataset": dataset,
        "unreadable_images": failures, "runners": list(runners.values()),
        "context": dict(context) if context is not None else _run_context(),
        "power": dict(power) if power is not None else None,
    }
    if findings:
        doc["findings"] = list(findings)
    if engines:
        doc["engines"] = [dict(e) for e in engines]
    return validate_report(json.loads(json.dumps(doc, default=_json_default)))


def _run_context() -> dict[str, Any]:
    from .power import run_context

    return run_context()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "value"):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:
        pass
    return str(obj)


def _round(x: float | None, nd: int) -> float | None:
    return None if x is None else round(float(x), nd)


def validate_report(doc: Any) -> dict[str, Any]:
    """Check a report document's schema and version; returns it.

    Raises:
        BenchError: Not a report, another schema, a newer version, or missing keys.
    """
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise BenchError(f"not an xception-trt benchmark report (expected schema {SCHEMA!r})")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise BenchError(f"report schema version {version!r} is not supported (this "
                         f"xception-trt reads version <= {SCHEMA_VERSION}); upgrade xception-trt")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise BenchError(f"report is missing key(s) {missing}; it is truncated or hand-edited")
    if not isinstance(doc["runners"], list):
        raise BenchError("report 'runners' must be a list")
    return doc


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``report.json`` (or a report folder) and validate it.

    Raises:
        BenchError: Missing/unreadable file or invalid report.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"report {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchError(f"cannot read report {path}: {exc}") from None
    return validate_report(doc)


# ---------------------------------------------------------------------------------------------
# Markdown


def _f(x: Any, nd: int = 2, suffix: str = "") -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and not math.isfinite(x):
        return "inf"
    return f"{x:.{nd}f}{suffix}"


def _ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3f}" if x < 1 else (f"{x:.2f}" if x < 100 else f"{x:.1f}")


def _pct(x: float | None, nd: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{nd}f}%"


def _pp(x: float | None, ref: float | None) -> str:
    if x is None or ref is None:
        return "—"
    return f"{100 * (x - ref):+.2f} pp"


def _sci(x: float | None) -> str:
    if x is None:
        return "—"
    if not math.isfinite(x):
        return "inf"
    return "0" if x == 0 else (f"{x:.2e}" if abs(x) < 1e-2 or abs(x) >= 1e4 else f"{x:.4f}")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(c: str) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def table_order(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The report's runners in the order of every table and legend: the reference first,
    then by precision (FP32, FP16, INT8), backend and name."""
    ref = doc.get("reference")
    return sorted(doc["runners"], key=lambda e: (
        e["name"] != ref, _PRECISION_ORDER.get(e.get("precision") or "", 9),
        str(e.get("backend")), e["name"]))


def _lat(entry: Mapping[str, Any], batch: int) -> Mapping[str, Any] | None:
    for r in entry.get("latency") or []:
        if r["batch_size"] == batch and r.get("end_to_end"):
            return r
    return None


def _batches(doc: Mapping[str, Any]) -> list[int]:
    return sorted({r["batch_size"] for e in doc["runners"] for r in e.get("latency") or []})


def _system_rows(sysf: Mapping[str, Any]) -> list[list[str]]:
    sw = sysf.get("software", {})
    dev = sysf.get("devices") or {}
    gpus = dev.get("gpus") or []
    gpu = "; ".join(f"{g.get('name')} (sm {g.get('compute_capability')})" for g in gpus) \
        or f"none ({dev.get('reason') or 'not probed'})"
    trt = sysf.get("trt_importable") or {}
    rows = [["CPU", f"{sysf.get('cpu')} ({sysf.get('cpu_count')} logical cores)"],
            ["CPU INT8 features", int8_features_text(sysf.get("cpu_int8"))],
            ["Load average (1/5/15 min)", _load(sysf)],
            ["GPU", gpu],
            ["NVIDIA driver", str(dev.get("driver") or "none")],
            ["TensorRT", ", ".join(f"{k} {v}" for k, v in trt.items()) or "not importable"],
            ["onnxruntime", str(sw.get("onnxruntime"))],
            ["torch", str(sw.get("torch"))],
            ["xception-trt", f"{sw.get('xception-trt')} (git {sysf.get('git_revision') or '?'})"],
            ["Python / platform", f"{sw.get('python')} / {sysf.get('platform')}"]]
    return rows


def _title(doc: Mapping[str, Any]) -> str:
    # reports of schema version 1 have no title
    return str(doc.get("title") or f"xception-trt {doc['kind']} report: {doc['name']}")


def _load(sysf: Mapping[str, Any]) -> str:
    load = sysf.get("load_average")
    return " / ".join(f"{x:.2f}" for x in load) if load else "not recorded"


def render_markdown(doc: Mapping[str, Any], *, plots: bool = True) -> str:
    """The report as Markdown (tables and links to the PNG plots next to it).

    Args:
        doc: The report.
        plots: Whether the PNG plots were drawn; without them each plot's place says why.
    """
    def figure(alt: str, fname: str) -> str:
        return (f"![{alt}]({fname})" if plots else
                f"({alt}: not drawn, matplotlib is not installed; "
                "pip install 'xception-trt[plot]')")

    validate_report(dict(doc))
    ref_name = doc.get("reference")
    runners = table_order(doc)
    ref = next((e for e in runners if e["name"] == ref_name), None)
    batches = _batches(doc)
    has_acc = any(e.get("accuracy") for e in runners)
    out: list[str] = [f"# {_title(doc)}", ""]
    out.append(f"Created {doc['created_utc']}" + (f" by `{doc['command']}`"
                                                 if doc.get("command") else "") + ".")
    out.append("")

    # results first: the comparison view and what it shows, then engines and notes
    out += ["## Comparison", ""]
    if ref is not None:
        out += [f"Deltas and speed-ups are against the reference **{ref_name}** "
                f"({ref.get('backend')}, {ref.get('precision')}). Speed-up = reference median "
                "latency / runner median latency at the same batch size, measured with a load "
                f"average of {_load(doc['system'])} on {doc['system'].get('cpu_count')} logical "
                "cores (other work on the machine slows every runner, not evenly).", ""]
    header = ["Runner", "Backend", "Precision", "Device"]
    if has_acc:
        header += ["Top-1", "Δ top-1", "Top-5", "Δ top-5", "Top-1 agree", "max |Δ logit|",
                   "KL mean"]
    for b in batches:
        header += [f"p50 ms @ b{b}", f"speed-up @ b{b}"]
    rows = []
    for e in runners:
        row = [e["name"], str(e.get("backend")), str(e.get("precision")), str(e.get("device"))]
        if has_acc:
            acc, ra = e.get("accuracy") or {}, (ref or {}).get("accuracy") or {}
            agr = e.get("agreement") or {}
            is_ref = e is ref
            row += [_pct(acc.get("top1")),
                    "ref" if is_ref else _pp(acc.get("top1"), ra.get("top1")),
                    _pct(acc.get("top5")),
                    "ref" if is_ref else _pp(acc.get("top5"), ra.get("top5")),
                    "ref" if is_ref else _pct(agr.get("top1_agreement")),
                    "ref" if is_ref else _sci(agr.get("max_abs_logit_diff")),
                    "ref" if is_ref else _sci(agr.get("kl_mean"))]
        for b in batches:
            mine, theirs = _lat(e, b), (_lat(ref, b) if ref else None)
            med = mine["end_to_end"]["median_ms"] if mine else None
            row.append(_ms(med))
            if e is ref:
                row.append("ref" if med is not None else "—")
            elif med and theirs:
                row.append(f"{theirs['end_to_end']['median_ms'] / med:.2f}x")
            else:
                row.append("—")
        rows.append(row)
    out += [_table(header, rows), ""]
    for finding in doc.get("findings") or []:
        out += [finding, ""]
    out += _engines_section(doc)
    notes = doc.get("notes") or []
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]

    out += ["## System", "", _table(["", ""], _system_rows(doc["system"])), ""]
    if doc.get("context"):
        out += ["## Run context", "", _table(["", ""], _context_rows(doc["context"])), ""]
    cfg = doc.get("config") or {}
    if cfg:
        out += ["Settings: " + ", ".join(f"{k}={v}" for k, v in cfg.items()), ""]

    # latency
    if batches:
        out += ["## Latency", "",
                "End-to-end host wall time per call (`time.perf_counter_ns`), in milliseconds: "
                "Median is p50, the typical call; the mean counts the slow calls too, and "
                "images/s = batch / mean. GPU = CUDA-event compute time where the runner "
                "exposes it.", ""]
        rows = []
        for e in runners:
            for r in e.get("latency") or []:
                s = r.get("end_to_end")
                g = r.get("gpu")
                if s is None:
                    why = r.get("skipped") or r.get("error") or "not measured"
                    rows.append([e["name"], str(r["batch_size"]), "0", "—", "—", "—", "—", "—",
                                 "—", "—", "—", why])
                    continue
                rows.append([e["name"], str(r["batch_size"]), f"{s['count']}/{r['iterations']}",
                             _ms(s["median_ms"]), f"{_ms(s['mean_ms'])} ± {_ms(s['std_ms'])}",
                             _ms(s["p90_ms"]), _ms(s["p99_ms"]), _ms(s["min_ms"]),
                             _ms(s["max_ms"]), _f(r.get("throughput_ips"), 1),
                             _ms(g["median_ms"]) if g else "—", r.get("error") or ""])
        out += [_table(["Runner", "Batch", "Calls", "Median", "Mean ± std", "p90", "p99", "Min",
                        "Max", "Images/s", "GPU median", "Note"], rows), ""]
        if any(_lat(e, b) for e in runners for b in batches):
            out += [figure("Latency vs batch", "latency_vs_batch.png"), ""]

    out += _power_section(doc, runners, figure)

    # accuracy
    if has_acc:
        ds = doc.get("dataset") or {}
        out += ["## Accuracy", "",
                f"Data: `{ds.get('source')}` — {ds.get('images')} images, {ds.get('classes')} "
                f"classes (labels mapped to logits by {ds.get('label_mapping')}), "
                f"{ds.get('unreadable', 0)} unreadable. All runners saw the same decoded pixels "
                "in one pass.", ""]
        rows = []
        for e in runners:
            acc, agr = e.get("accuracy") or {}, e.get("agreement") or {}
            rows.append([e["name"], str(acc.get("images", "—")), _pct(acc.get("top1")),
                         _pct(acc.get("top5")) + (f" (top-{acc['k']})" if acc.get("k", 5) != 5
                                                  else ""),
                         _pct(agr.get("top1_agreement")), _sci(agr.get("max_abs_logit_diff")),
                         _sci(agr.get("mean_abs_logit_diff")), _sci(agr.get("kl_mean")),
                         _sci(agr.get("kl_max"))])
        out += [_table(["Runner", "Images", "Top-1", "Top-5", "Top-1 agree", "max |Δ logit|",
                        "mean |Δ logit|", "KL mean", "KL max"], rows), ""]
        with_acc = [e for e in runners if e.get("accuracy")]
        class_names = list((with_acc[0]["accuracy"].get("per_class") or {}).keys())
        if class_names:
            basis = (ref if ref and ref.get("accuracy") else with_acc[0])["accuracy"]["per_class"]
            shown = class_names
            title = "Per-class top-1"
            if len(class_names) > 20:
                shown = sorted(class_names, key=lambda c: (basis[c]["top1"] is None,
                                                           basis[c]["top1"] or 0.0))[:10]
                title = (f"Per-class top-1 (the 10 weakest of {len(class_names)} classes for "
                         f"{(ref or with_acc[0])['name']})")
            rows = [[c, str(basis[c]["images"])] + [_pct(e["accuracy"]["per_class"].get(c, {})
                                                         .get("top1"), 1) for e in with_acc]
                    for c in shown]
            out += [f"### {title}", "",
                    _table(["Class", "Images"] + [e["name"] for e in with_acc], rows), ""]
        out += [figure("Accuracy by precision", "accuracy_by_precision.png"), ""]

    # memory
    mem_rows = []
    for e in runners:
        m = e.get("memory")
        if m:
            dm = m.get("device_memory_bytes")
            mem_rows.append([e["name"], _f(m.get("load_seconds"), 2),
                             _f(m.get("rss_after_load_mib"), 0), _f(m.get("rss_load_delta_mib"), 0),
                             _f(m.get("rss_peak_mib"), 0),
                             "—" if dm is None else f"{dm / 2**20:.0f}"])
    if mem_rows:
        peak = (doc.get("process") or {}).get("peak_rss_mib")
        out += ["## Memory", "",
                "Host RSS in MiB, sampled with psutil after each call (process-wide: it includes "
                f"Python, torch and every library loaded). Process peak RSS (kernel): "
                f"{_f(peak, 0)} MiB. Device memory where the runner reports it.", "",
                _table(["Runner", "Load s", "RSS after load", "RSS Δ load", "RSS peak",
                        "Device MiB"], mem_rows), ""]

    # runner details
    rows = []
    for e in runners:
        d = e.get("description") or {}
        versions = ", ".join(f"{k} {d[k]}" for k in ("onnxruntime", "torch", "tensorrt")
                             if d.get(k))
        errors = e.get("errors") or []
        # A runner that failed to open has no description: say so instead of "None".
        fmt = e.get("input_format") or (f"failed: {errors[0].splitlines()[0][:80]}" if errors
                                        else "—")
        rows.append([e["name"], str(d.get("provider") or "—"), str(d.get("threads", "—")),
                     str(fmt), versions or "—", f"`{d['path']}`" if d.get("path") else "—"])
    out += ["## Runners", "", _table(["Runner", "Provider", "Threads", "Input", "Versions",
                                      "Model file"], rows), ""]

    # problems
    problems = [f"- **{e['name']}**: {err}" for e in runners for err in e.get("errors") or []]
    problems += [f"- **{e['name']}** batch {r['batch_size']} skipped: {r['skipped']}"
                 for e in runners for r in e.get("latency") or [] if r.get("skipped")]
    problems += [f"- unreadable image `{f['path']}`: {f['reason']}"
                 for f in doc.get("unreadable_images") or []]
    out += ["## Problems", ""] + (problems or ["None."]) + [""]
    return "\n".join(out)


def _engines_section(doc: Mapping[str, Any]) -> list[str]:
    """``## Engines``: each engine the run built, its size and target, and how to run it."""
    engines = doc.get("engines") or []
    if not engines:
        return []
    layered = any(e.get("layers") for e in engines)
    rows = [[f"`{e.get('path')}`", str(e.get("precision")),
             "—" if e.get("size_bytes") is None else f"{e['size_bytes'] / 2**20:.1f} MiB",
             str(e.get("built_with")), str(e.get("target")), str(e.get("max_batch")),
             str(e.get("runs_on") or "—"), f"`{e['command']}`" if e.get("command") else "—"]
            + ([f"{e.get('layers') or '—'}" + (f" ({e['precision_check']})"
                                               if e.get("precision_check") else "")]
               if layered else [])
            for e in engines]
    head = ["Engine", "Precision", "Size", "Built with", "Target", "Max batch", "Runs on",
            "Run with"] + (["Layers (what they compute in)"] if layered else [])
    return ["## Engines", "", _table(head, rows), ""] + _engine_size_note(engines)


def _engine_size_note(engines: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why the engines' sizes differ, from their layer records: TensorRT-RTX keeps the CUDA
    source of each kernel it generates in the plan (``generated_kernels``)."""
    generated = {str(e.get("precision")): e["generated_kernels"] for e in engines
                 if isinstance(e.get("generated_kernels"), int) and e["generated_kernels"] > 0}
    if not generated:
        return []
    counts = ", ".join(f"{p} {n}" for p, n in generated.items())
    text = ("TensorRT-RTX keeps in each plan the CUDA source of every kernel it generates for "
            "the engine (compiled on the GPU when the engine first runs); layers running a "
            f"generated kernel: {counts}. An INT8 engine generates one for each layer that "
            "quantizes an activation (the convert layers)")
    size = {str(e.get("precision")): e.get("size_bytes") for e in engines}
    if isinstance(size.get("int8"), int) and isinstance(size.get("fp32"), int) \
            and size["int8"] > size["fp32"]:
        text += (": that source, not the weights, is why the INT8 engine here is larger than "
                 "the FP32 one although its weights take a quarter of the bytes")
    return [text + ".", ""]


def _context_rows(ctx: Mapping[str, Any]) -> list[list[str]]:
    """Power mode, clocks, governor and load of the run (from ``power.run_context``)."""
    load = ctx.get("load_average")
    cpu = ctx.get("cpu") or {}
    gov = cpu.get("governors")
    rows = [["Load average before the runs (1/5/15 min)",
             " / ".join(f"{v:.2f}" for v in load) if load else "not recorded"],
            ["CPU governor", ", ".join(f"{g} ×{n}" for g, n in gov.items()) if gov
             else f"— ({cpu.get('reason', 'unknown')})"]]
    j = ctx.get("jetson")
    if j:
        pm, gpu, emc = j.get("nvpmodel") or {}, j.get("gpu_devfreq") or {}, j.get("emc") or {}
        rows += [["Jetson", f"{j.get('model')} ({j.get('l4t') or 'L4T ?'})"],
                 ["Power mode (nvpmodel)", f"{pm.get('name')} (id {pm.get('id')})"
                  if pm.get("id") is not None else f"— ({pm.get('reason')})"],
                 ["jetson_clocks", str(j.get("jetson_clocks"))],
                 ["GPU clock", f"{_f(gpu.get('cur_mhz'), 0)} MHz (min {_f(gpu.get('min_mhz'), 0)}"
                  f", max {_f(gpu.get('max_mhz'), 0)}, {gpu.get('governor')})" if gpu else "—"],
                 ["EMC clock", f"{_f(emc.get('cur_mhz'), 0)} MHz" if emc.get("cur_mhz")
                  else f"— ({emc.get('reason')})"]]
    nv = ctx.get("nvml") or {}
    for g in nv.get("gpus") or []:
        c, m = g.get("clocks_mhz") or {}, g.get("max_clocks_mhz") or {}
        rows.append([f"GPU {g.get('index')} (NVML)",
                     f"{g.get('name')}: SM {c.get('sm')}/{m.get('sm')} MHz, memory "
                     f"{c.get('memory')}/{m.get('memory')} MHz, power limit "
                     f"{_f(g.get('power_limit_w'), 0)} W, persistence "
                     f"{g.get('persistence_mode')}, {g.get('performance_state')}"])
    if not j and not nv.get("gpus"):
        rows.append(["GPU clocks", f"— ({nv.get('reason') or 'no NVIDIA GPU seen'})"])
    return rows


def _power_section(doc: Mapping[str, Any], runners: Sequence[Mapping[str, Any]],
                   figure: Any) -> list[str]:
    """``## Power and energy``: per runner and batch, mean power per rail and in total,
    energy per image, samples; or the reason there are none."""
    mon = doc.get("power")
    readings = [(e, r, r["power"]) for e in runners for r in e.get("latency") or []
                if r.get("power")]
    if mon is None and not readings:
        return []
    out = ["## Power and energy", ""]
    if mon is not None and not mon.get("available"):
        why = str(mon.get("reason"))
        return out + ["Power: " + (why[len("power: "):] if why.startswith("power: ") else why), ""]
    if mon:
        out += [f"Backend `{mon.get('backend')}`, sampled every "
                f"{1000 * mon.get('period_s', 0):.0f} ms in a background thread during the "
                "timed calls only (warm-up excluded). "
                + " ".join(n.rstrip(".") + "." for n in mon.get("notes") or []), ""]
    rails = list(dict.fromkeys([*(mon or {}).get("rails", []),
                                *(k for _, _, p in readings for k in p.get("rails_w") or {})]))
    rows = []
    for e, r, p in readings:
        if not p.get("available"):
            rows.append([e["name"], str(r["batch_size"]), "0"] + ["—"] * (len(rails) + 2)
                        + [str(p.get("reason"))])
            continue
        rows.append([e["name"], str(r["batch_size"]), str(p.get("samples"))]
                    + [_f((p.get("rails_w") or {}).get(k), 2) for k in rails]
                    + [_f(p.get("total_w"), 2), _f(p.get("energy_per_image_mj"), 2),
                       "; ".join(p.get("notes") or [])])
    out += [_table(["Runner", "Batch", "Samples"] + [f"{k} W" for k in rails]
                   + ["Total W", "mJ / image", "Note"], rows), ""]
    bases = sorted({str(p.get("total_basis")) for _, _, p in readings if p.get("total_basis")})
    if bases:
        out += ["Total = " + "; ".join(bases) + ".", ""]
    if any(p.get("energy_per_image_mj") is not None for _, _, p in readings):
        out += [figure("Latency vs energy per image", "latency_vs_energy.png"), ""]
    return out


# ---------------------------------------------------------------------------------------------
# plots


def _figure(ncols: int, width: float = 11.0, height: float = 4.2):
    with needs(_PLOTS):
        from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


_BACKEND_MARKERS = {"tensorrt": "o", "onnxruntime": "s", "torch": "^"}
_PRECISION_LINES = {"fp32": "-", "fp16": "--", "int8": ":"}


def runner_styles(doc: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Each runner's style in every plot of the report: its own colour (tab10, in
    :func:`table_order`), marker = backend, line style = precision, so no two runners
    (torch-fp32 and onnxruntime-fp32, say) look alike and a colour means one runner in every
    plot. Keys: the runners' names; values: matplotlib ``color``, ``marker``, ``linestyle``."""
    return {e["name"]: {"color": f"C{i % 10}",
                        "marker": _BACKEND_MARKERS.get(e.get("backend") or "", "D"),
                        "linestyle": _PRECISION_LINES.get(e.get("precision") or "", "-.")}
            for i, e in enumerate(table_order(doc))}


def _spread(k: int, n: int, step: float = 0.045) -> float:
    """Factor that moves series ``k`` of ``n`` sideways on a log2 batch axis, so that the tails
    of runners at the same batch size do not hide each other."""
    return float(2 ** ((k - (n - 1) / 2) * step))


def _legend_columns(n: int) -> int:
    """Legend columns: one row up to 6 entries, so that it reads left to right in the tables'
    order (matplotlib fills a legend column by column)."""
    return n if n <= 6 else math.ceil(n / 2)


def latency_figure(doc: Mapping[str, Any]) -> Any:
    """The latency plot as a matplotlib ``Figure`` (see :func:`plot_latency`), or ``None``
    when nothing was measured."""
    series = []
    for e in table_order(doc):
        pts = [r for r in e.get("latency") or [] if r.get("end_to_end")]
        if pts:
            series.append((e, pts))
    if not series:
        return None
    styles = runner_styles(doc)
    fig, (ax_lat, ax_tp) = _figure(2, height=4.8)
    batches = _batches(doc)
    for k, (e, pts) in enumerate(series):
        style = styles[e["name"]]
        colour = style["color"]
        b = [r["batch_size"] * _spread(k, len(series)) for r in pts]
        med = [r["end_to_end"]["median_ms"] for r in pts]
        p90 = [r["end_to_end"]["p90_ms"] for r in pts]
        p99 = [r["end_to_end"]["p99_ms"] for r in pts]
        # the median carries the line and the marker; the tail is thin and drawn under it
        ax_lat.vlines(b, med, p99, colors=colour, linewidth=0.9, alpha=0.6, zorder=1)
        ax_lat.plot(b, p90, linestyle="none", marker="_", markersize=9, color=colour, zorder=2)
        ax_lat.plot(b, p99, linestyle="none", marker="x", markersize=4, color=colour, zorder=2)
        ax_lat.plot(b, med, label=e["name"], linewidth=1.8, markersize=6, zorder=3, **style)
        ax_tp.plot([r["batch_size"] for r in pts], [r["throughput_ips"] for r in pts],
                   label=e["name"], linewidth=1.8, markersize=6, **style)
    for ax in (ax_lat, ax_tp):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.set_xlabel("batch size (images per call)")
        ax.grid(True, which="both", alpha=0.3)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency per call, ms (log)")
    ax_lat.set_title("Latency: median (marker), p90 (—), p99 (×)", fontsize=10)
    ax_tp.set_ylabel("images/s (batch / mean latency)")
    ax_tp.set_title("Throughput from the mean latency", fontsize=10)
    # One legend for both panels, under them, in the tables' order (the same lines are in each).
    handles, labels = ax_lat.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside lower center",
               ncols=_legend_columns(len(labels)))
    cpu = doc["system"].get("cpu", "")
    gpus = (doc["system"].get("devices") or {}).get("gpus") or []
    where = gpus[0]["name"] if gpus else cpu
    fig.suptitle(f"{_title(doc)} — {where}, load average {_load(doc['system'])}", fontsize=10)
    return fig


def _plot_output(output: str | os.PathLike[str] | None, path: str | os.PathLike[str] | None,
                 where: str) -> str | os.PathLike[str]:
    """The PNG a plot function writes: ``output`` (old keyword ``path``, deprecated)."""
    output = renamed("path", "output", path, output, where=where, stacklevel=4)
    if output is None:
        raise ConfigError(f"{where}: give output=, the PNG file to write")
    return output


def plot_latency(doc: Mapping[str, Any], output: str | os.PathLike[str] | None = None, *,
                 path: str | os.PathLike[str] | None = None) -> Path | None:
    """Latency per call vs batch size (median: marker and line; p90 and p99: thin ticks above
    it; log scale) and throughput (batch / mean latency), one series per runner in its
    :func:`runner_styles` style, one legend for both panels in the tables' order.
    Returns the PNG path, or ``None`` when nothing was measured."""
    output = _plot_output(output, path, "plot_latency")
    fig = latency_figure(doc)
    if fig is None:
        return None
    png = Path(output)
    fig.savefig(png)
    return png


def _limits(values: Sequence[float], *, floor: float | None = None,
            min_span: float = 0.5) -> tuple[float, float]:
    """Axis limits around ``values`` (from ``floor`` when given) with room for the labels
    above: close values get a narrow axis (at least ``min_span`` wide), so their differences
    show."""
    lo = min(values) if floor is None else floor
    hi = max(values)
    if floor is None and hi - lo < min_span:  # widen evenly around the values
        lo -= (min_span - (hi - lo)) / 2
    span = max(hi - lo, min_span)
    return (lo if floor is not None else lo - 0.1 * span), lo + span + 0.3 * span


def accuracy_figure(doc: Mapping[str, Any]) -> Any:
    """The accuracy plot as a matplotlib ``Figure`` (see :func:`plot_accuracy`), or ``None``
    without accuracy results."""
    entries = [e for e in table_order(doc) if e.get("accuracy")]
    if not entries:
        return None
    styles = runner_styles(doc)
    ref_name = doc.get("reference")
    ref = next((e for e in entries if e["name"] == ref_name), None)
    fig, (ax_acc, ax_agr) = _figure(2, width=max(9.0, 1.5 * len(entries) + 4), height=4.8)
    xs = list(range(len(entries)))
    cols = [styles[e["name"]]["color"] for e in entries]
    top1 = [100 * e["accuracy"]["top1"] for e in entries]
    top5 = [100 * e["accuracy"]["top5"] for e in entries]
    w = 0.38
    if ref is not None:
        # the drop from the reference, in percentage points: bars from 0 that show a 0.2-point
        # difference as plainly as a 5-point one
        base1, base5 = 100 * ref["accuracy"]["top1"], 100 * ref["accuracy"]["top5"]
        d1 = [a - base1 for a in top1]
        d5 = [a - base5 for a in top5]
        ax_acc.bar([x - w / 2 for x in xs], d1, w, color=cols, edgecolor=cols)
        ax_acc.bar([x + w / 2 for x in xs], d5, w, color=cols, alpha=0.4, hatch="//",
                   edgecolor=cols)
        ax_acc.axhline(0, color="black", linewidth=0.8)
        # a tick at each bar's end, so that a change of 0 still shows the runner's colour
        ax_acc.scatter([x - w / 2 for x in xs], d1, marker="_", s=220, c=cols, linewidths=3,
                       zorder=3)
        lo, hi = _limits([*d1, *d5, 0.0])
        ax_acc.set_ylim(lo, hi)
        for x, a, d, e in zip(xs, top1, d1, entries):
            text = f"{a:.2f}%" if e is ref else f"{d:+.2f}\n{a:.2f}%"
            ax_acc.annotate(text, (x - w / 2, max(d, 0)), ha="center", va="bottom", fontsize=7)
        ax_acc.set_ylabel(f"change from {ref_name}, percentage points")
        ax_acc.set_title(f"Top-1 (solid, labelled) and top-5 (hatched) vs {ref_name}",
                         fontsize=10)
    else:
        # no reference accuracy: the values themselves, as points on a zoomed axis (bars cut
        # off at the bottom would exaggerate the differences)
        for x, a, b, c in zip(xs, top1, top5, cols):
            ax_acc.plot([x - w / 4], [a], marker="o", color=c, linestyle="none")
            ax_acc.plot([x + w / 4], [b], marker="o", markerfacecolor="none", color=c,
                        linestyle="none")
            ax_acc.annotate(f"{a:.2f}%", (x - w / 4, a), xytext=(0, 5),
                            textcoords="offset points", ha="center", fontsize=7)
        lo, hi = _limits([*top1, *top5])
        ax_acc.set_ylim(max(0.0, lo), min(100.5, hi))
        ax_acc.set_ylabel("accuracy, % (axis zoomed: it does not start at 0)")
        ax_acc.set_title("Top-1 (filled) and top-5 (hollow) accuracy", fontsize=10)
    agree = [None if e is ref or not e.get("agreement")
             else 100 * (1 - e["agreement"]["top1_agreement"]) for e in entries]
    heights = [a or 0.0 for a in agree]
    ax_agr.bar(xs, heights, 0.6, color=cols, edgecolor=cols)
    ax_agr.scatter(xs, heights, marker="_", s=400, c=cols, linewidths=3, zorder=3,
                   clip_on=False)
    for x, e, a in zip(xs, entries, agree):
        if e is ref or e["name"] == ref_name:
            label = "reference"
        elif a is None:
            label = "n/a"
        else:
            label = f"{a:.2f}%\nKL {_sci(e['agreement']['kl_mean'])}"
        ax_agr.annotate(label, (x, a or 0.0), ha="center", va="bottom", fontsize=7)
    ax_agr.set_ylim(*_limits(heights, floor=0.0))
    ax_agr.set_ylabel(f"top-1 differs from {ref_name}, % of images")
    ax_agr.set_title(f"Top-1 disagreement with {ref_name}", fontsize=10)
    for ax in (ax_acc, ax_agr):
        ax.set_xticks(xs)
        ax.set_xticklabels([e["name"] for e in entries], rotation=20, ha="right", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    with needs(_PLOTS):
        from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=c, label=e["name"]) for e, c in zip(entries, cols)],
               fontsize=8, loc="outside lower center", ncols=_legend_columns(len(entries)))
    ds = doc.get("dataset") or {}
    fig.suptitle(f"{_title(doc)} — accuracy ({ds.get('images')} images)", fontsize=10)
    return fig


def plot_accuracy(doc: Mapping[str, Any], output: str | os.PathLike[str] | None = None, *,
                  path: str | os.PathLike[str] | None = None) -> Path | None:
    """Top-1/top-5 accuracy as the change from the reference in percentage points (the values
    themselves on a zoomed axis when the reference has none) and the share of images whose
    top-1 differs from the reference's, one colour per runner (:func:`runner_styles`), the
    legend in the tables' order. Returns the PNG path, or ``None`` without accuracy
    results."""
    output = _plot_output(output, path, "plot_accuracy")
    fig = accuracy_figure(doc)
    if fig is None:
        return None
    png = Path(output)
    fig.savefig(png)
    return png


def plot_energy(doc: Mapping[str, Any], output: str | os.PathLike[str] | None = None, *,
                path: str | os.PathLike[str] | None = None) -> Path | None:
    """Median latency per call against energy per image, a point per runner and batch size
    (styled as in :func:`plot_latency`). Returns the PNG path, or ``None`` when no energy was
    measured."""
    output = _plot_output(output, path, "plot_energy")
    series = []
    for e in table_order(doc):
        pts = [(r["batch_size"], r["end_to_end"]["median_ms"], r["power"]["energy_per_image_mj"])
               for r in e.get("latency") or []
               if r.get("end_to_end") and (r.get("power") or {}).get("energy_per_image_mj")]
        if pts:
            series.append((e, pts))
    if not series:
        return None
    fig, (ax,) = _figure(1, width=7.5, height=5.0)
    with needs(_PLOTS):
        from matplotlib.ticker import LogFormatter

    styles = runner_styles(doc)
    for e, pts in series:
        ax.plot([p[2] for p in pts], [p[1] for p in pts], label=e["name"], **styles[e["name"]])
        for b, ms, mj in pts:
            ax.annotate(f"b{b}", (mj, ms), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not 10^x (after set_*scale)
        axis.set_major_formatter(LogFormatter())
        axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))  # thinned on wide ranges
    ax.set_xlabel("energy per image, mJ")
    ax.set_ylabel("latency per call, ms (median)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{_title(doc)} — latency vs energy "
                 f"({(doc.get('power') or {}).get('backend')})", fontsize=10)
    png = Path(output)
    fig.savefig(png)
    return png


# ---------------------------------------------------------------------------------------------
# writing


@dataclass(frozen=True)
class ReportFiles:
    """Where a report was written."""

    directory: Path
    json: Path
    markdown: Path
    plots: tuple[Path, ...]


def check_report_dir(root: str | os.PathLike[str], name: str, *, force: bool = False) -> Path:
    """The report folder ``root/name``, checked before any measuring starts.

    Raises:
        BenchError: Bad name, or the folder exists and ``force`` is not set.
    """
    target = Path(root) / _check_name(name)
    if target.exists() and not force:
        raise BenchError(f"report folder {target} already exists; choose another --name or "
                         "pass --force to replace it")
    if target.exists() and not target.is_dir():
        raise BenchError(f"{target} exists and is not a folder; choose another --name")
    return target


@contextlib.contextmanager
def staged_report_dir(target: Path) -> Iterator[Path]:
    """A new folder beside ``target`` for the caller to fill; when the block ends normally it is
    renamed to ``target`` (an existing ``target`` is removed only after that), otherwise it is
    removed: a report folder is never half-written, and a killed write leaves a sibling named
    after its process that the next write sweeps (:func:`xception_trt.fsio.temp_sibling`; not
    mkdtemp, whose folder is private: a report is an ordinary, umask-governed folder).

    Raises:
        BenchError: The parent folder is not writable, or writing fails (an ``OSError``).
    """
    from .fsio import check_writable_dir, temp_sibling

    check_writable_dir(target.parent, what="report", error=BenchError)
    try:
        tmp = temp_sibling(target, directory=True)
    except OSError as exc:
        raise BenchError(f"cannot create a folder in {target.parent}: {exc}") from None
    try:
        yield tmp
        old = None
        if target.exists():
            old = temp_sibling(target, directory=True, suffix=".old")
            old.rmdir()
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BenchError(f"cannot write the report into {target}: {exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_report(doc: Mapping[str, Any], root: str | os.PathLike[str] = DEFAULT_ROOT, *,
                 force: bool = False) -> ReportFiles:
    """Write ``report.json``, ``report.md`` and the PNG plots into ``root/<doc name>/``.

    The folder is assembled next to its destination and renamed into place, so a failure never
    leaves a half-written report; with ``force`` an existing folder is replaced only after the
    new one is complete.

    Raises:
        BenchError: The folder exists (without ``force``), the name is bad, or it cannot be
            written.
    """
    doc = validate_report(dict(doc))
    target = check_report_dir(root, doc["name"], force=force)
    with staged_report_dir(target) as tmp:
        (tmp / "report.json").write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n",
                                         encoding="utf-8")
        plots = []
        drawn = True
        try:
            for fn, fname in ((plot_latency, "latency_vs_batch.png"),
                              (plot_accuracy, "accuracy_by_precision.png"),
                              (plot_energy, "latency_vs_energy.png")):
                p = fn(doc, tmp / fname)
                if p is not None:
                    plots.append(fname)
        except DependencyError as exc:
            # A device install (no plot extra) still writes the tables.
            log.warning("%s; the report has no plots", exc)
            drawn = False
        md = render_markdown(doc, plots=drawn)
        (tmp / "report.md").write_text(md, encoding="utf-8")
    log.info("report written to %s", target)
    return ReportFiles(target, target / "report.json", target / "report.md",
                       tuple(target / p for p in plots))
