"""Mutation testing: plant small realistic bugs in chosen modules and count what the tests catch.

The tool is mutmut 3 (``pip install mutmut==3.8.1``; in the ``dev`` extra). Why mutmut and not
cosmic-ray 8.7: mutmut 3 imports pytest and the test modules once, records which tests reach each
function, then forks one child per mutant that runs only those tests, the mutant switched on by
an environment variable (its "trampolines"). cosmic-ray starts the whole test command in a new
process for every mutant and mutates the source file in place; on our shared 2-core machines,
with torch/onnx imports costing seconds per process, that is many times slower, and an
interrupted run leaves a mutated file behind. mutmut works with our layout as it is (package
``xception_trt/`` at the root, tests in ``tests/``, pytest) through ``source_paths``,
``only_mutate`` and ``pytest_add_cli_args_test_selection``.

Nothing is run in the repository: for each module the tracked and untracked-but-not-ignored
files of the working tree are copied into a temporary folder (``--work``, default under the
system temp dir), a ``[tool.mutmut]`` section naming that module and its test files is appended
to the *copy's* ``pyproject.toml``, and mutmut runs there (its ``mutants/`` folder, caches and
logs stay in the copy, which is deleted at the end unless ``--keep``). The repository's sources
are never modified.

Per module the report gives mutants, killed (a test failed or timed out), survived, equivalent
(listed with a one-line reason each in ``benchmarks/mutation_equivalent.txt``: a mutant no test
can kill because the code behaves the same, reviewed by hand), no-tests (no selected test reaches
the function) and the kill rate over the non-equivalent mutants: killed / (mutants -
equivalent). Survivors are listed by name with their diff, to be read and answered with a
behaviour test (the rule, the unit, the boundary) or an explained entry in the equivalents file.

Sampling: by default ``DEFAULT_SAMPLE`` (40) mutants per module are drawn with
``random.Random(seed)`` from the sorted mutant names (seed ``--seed``, default 31): the same
sample for the same code, before and after new tests (tests do not change the mutants; a change
of the module's code does). ``--sample 0`` runs whole modules. The results file says, per module,
whether and how it was sampled.

Timeouts: mutmut limits each mutant's CPU time to ``timeout_multiplier`` x the clean run of its
tests + ``timeout_constant``; a child that must import torch or onnx first would hit mutmut's
1 s default constant and count as "killed by timeout" without any test failing, so the constant
is 20 s here. Timeouts count as killed (as in mutmut's own score: an endless loop is caught)
and are also counted apart (``timeouts``).

Usage (from the repository root, in the dev environment)::

    nice -n 5 python benchmarks/mutation.py                   # every module of MODULES
    nice -n 5 python benchmarks/mutation.py power/nvml.py     # one module (under xception_trt/)
    python benchmarks/mutation.py --list                       # the module -> tests mapping

Writes ``benchmarks/results/mutation.json`` and ``benchmarks/results/mutation.md`` (modules not
run this time keep their previous entry), with mutmut's version, the git commit, the machine's
load (``os.getloadavg``) and the wall time per module.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EQUIVALENT = ROOT / "benchmarks" / "mutation_equivalent.txt"

#: Module (path under xception_trt/) -> the test files that cover it. Chosen to be the files
#: whose tests exercise the module's rules; slow end-to-end files (engine builds, subprocess
#: CLIs) are left out where faster files pin the same behaviour.
MODULES: dict[str, list[str]] = {
    "bundle/choice.py": ["tests/test_bundle_choice.py", "tests/test_teeth_bundle.py"],
    "bundle/format.py": ["tests/test_bundle_hostile.py", "tests/test_teeth_bundle.py"],
    "bundle/cache.py": ["tests/test_bundle_hostile.py", "tests/test_teeth_bundle.py"],
    "bundle/doctor.py": ["tests/test_teeth_bundle.py"],
    "stream/pipeline.py": ["tests/test_teeth_stream.py"],
    "stream/source.py": ["tests/test_teeth_stream.py"],
    "power/jetson.py": ["tests/test_power.py", "tests/test_teeth_power.py"],
    "power/sampler.py": ["tests/test_power.py", "tests/test_teeth_power.py"],
    "power/nvml.py": ["tests/test_power.py", "tests/test_teeth_power.py"],
    "precision/sensitivity.py": ["tests/test_teeth_precision.py"],
    "precision/targeted.py": ["tests/test_teeth_precision.py"],
    "precision/int8.py": ["tests/test_teeth_precision.py", "tests/test_layout.py"],
    "deepstream.py": ["tests/test_deepstream.py", "tests/test_teeth_sidecar.py"],
    "sidecar.py": ["tests/test_sidecar.py", "tests/test_teeth_sidecar.py"],
    "tuning.py": ["tests/test_tune.py"],
    "bundle/tuned.py": ["tests/test_bundle_tuned.py", "tests/test_bundle_tuned_use.py"],
    "trt/layers.py": ["tests/test_trt_layers.py"],
    "precision/layout.py": ["tests/test_layout.py"],
    "precision/fastcalib.py": ["tests/test_fastcalib.py"],
}

#: Tests left out per module (a pytest ``-k`` expression): tests that run the CLI in a child
#: process, which cannot load mutmut's instrumented copy (its config is found from the cwd).
DESELECT: dict[str, str] = {
    "bundle/format.py": "not zip_bomb",
    "bundle/cache.py": "not zip_bomb",
}

#: How mutmut forks its mutant runs (default ``forkserver``, see ``_configure``). The stream
#: tests run threads that a broken pipeline leaves waiting: under the fork server such a run
#: was not stopped by mutmut's wall-clock limit; forked from mutmut's own process (these tests
#: import no torch) its timeout ends them.
ISOLATION: dict[str, str] = {
    "stream/pipeline.py": "fork",
    "stream/source.py": "fork",
}

#: Functions mutated, where a module holds more than the concern measured (``fnmatch`` patterns
#: over mutmut's mangled names; ``None``: the whole module). precision/int8.py: the ONNX
#: Runtime placement (its checks, the version in the cache key, the entry point) and the
#: calibration without a worker on a graph with a cached layout.
FUNCTIONS: dict[str, list[str] | None] = {
    "precision/int8.py": ["*x__check_target__mutmut_*", "*x__ort_version__mutmut_*",
                          "*x_ort_int8__mutmut_*", "*x__calibrate_with_layout__mutmut_*",
                          "*x__from_layout__mutmut_*"],
}

#: Mutants drawn per module by default (``--sample 0``: whole modules). A whole module is
#: several hundred mutants (mutmut also mutates strings and keyword arguments; power/nvml.py:
#: 359), about 15 minutes per module on our shared 2-core machines: a seeded sample of 40 per
#: module keeps a run of every module near half an hour.
DEFAULT_SAMPLE = 40


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def _copy_tree(dest: Path) -> None:
    """The working tree's tracked and untracked-not-ignored files, copied to ``dest``."""
    names = _git("ls-files", "-co", "--exclude-standard", "-z").split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if not src.is_file():
            continue
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out)


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _configure(work: Path, module: str, tests: list[str]) -> None:
    args = ["-p", "no:cacheprovider", "-q"]
    if module in DESELECT:
        args += ["-k", DESELECT[module]]
    cfg = (f"\n[tool.mutmut]\nsource_paths = [\"xception_trt/\"]\n"
           f"only_mutate = {_toml_list(['xception_trt/' + module])}\n"
           f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
           f"pytest_add_cli_args = {_toml_list(args)}\n"
           "use_git_change_detection = false\n"
           "timeout_constant = 20.0\n"
           # torch's thread pools do not survive a fork from a process that used them
           # (mutmut's docs: forkserver for setups that are not fork-safe, torch named)
           f"process_isolation = \"{ISOLATION.get(module, 'forkserver')}\"\n"
           # a fork server that imported the tests (numpy, onnx: their thread pools) forked
           # children that hung on a lock held by one of its threads; one that imported
           # nothing forks cleanly, and each child imports what its tests need
           "forkserver_warmup = \"none\"\n")
    with open(work / "pyproject.toml", "a", encoding="utf-8") as fh:
        fh.write(cfg)


def _equivalents() -> dict[str, str]:
    """``mutant-name  reason`` lines of the reviewed equivalents file."""
    out = {}
    if EQUIVALENT.is_file():
        for line in EQUIVALENT.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                out[name] = reason.strip()
    return out


def _mutmut(work: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(work), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _all_mutants(work: Path) -> list[str]:
    """Every mutant mutmut generated for the module (from its meta files)."""
    names = []
    for meta in (work / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        names += list(data.get("exit_code_by_key", {}))
    return sorted(names)


def _tail(text: str) -> str:
    """mutmut's output without its spinner lines, last lines first to read."""
    keep = [ln for ln in text.replace("\r", "\n").splitlines()
            if ln.strip() and not re.match(r"^\W*(Generating mutants|Running stats|Running "
                                           r"clean tests)", ln.strip())]
    return "\n".join(keep[-40:])


def run_module(module: str, *, snapshot: Path, work_root: Path, sample: int | None, seed: int,
               max_children: int, keep: bool) -> dict:
    tests = MODULES[module]
    work = Path(tempfile.mkdtemp(prefix="mutation-", dir=work_root))
    t0 = time.perf_counter()
    try:
        shutil.copytree(snapshot, work, dirs_exist_ok=True)
        _configure(work, module, tests)
        # first pass: generate the mutants and the test mapping; select what to run
        gen = _mutmut(work, "run", "--max-children", str(max_children), "__none__*")
        names = _all_mutants(work)
        patterns = FUNCTIONS.get(module)
        if patterns:
            names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
        if not names:
            raise RuntimeError(f"{module}: mutmut generated no mutant (do the tests pass?):\n"
                               f"{_tail(gen.stdout)}\n{_tail(gen.stderr)}")
        sampled = sample is not None and sample < len(names)
        chosen = sorted(random.Random(seed).sample(names, sample)) if sampled else names
        run = _mutmut(work, "run", "--max-children", str(max_children), *chosen)
        if run.returncode != 0:
            raise RuntimeError(f"{module}: mutmut run failed (do the tests pass?):\n"
                               f"{_tail(run.stdout)}\n{_tail(run.stderr)}")
        res = _mutmut(work, "results", "--all", "true")
        status = {}
        for line in res.stdout.splitlines():
            m = re.match(r"\s+(\S+): (.+)$", line)
            if m and m.group(1) in chosen:
                status[m.group(1)] = m.group(2).strip()
        diffs = {}
        for name, st in status.items():
            if st not in ("killed", "timeout"):
                diffs[name] = _mutmut(work, "show", name).stdout
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    eq = _equivalents()
    killed = sorted(n for n, s in status.items() if s in ("killed", "timeout"))
    equivalent = {n: eq[n] for n, s in status.items() if n in eq and n not in killed}
    survived = sorted(n for n in status if n not in killed and n not in equivalent)
    counted = len(status) - len(equivalent)
    return {
        "module": f"xception_trt/{module}", "tests": tests, "deselect": DESELECT.get(module),
        "functions": FUNCTIONS.get(module), "sampled": sampled,
        "sample": {"n": len(chosen), "of": len(names), "seed": seed} if sampled else None,
        "mutants": len(status), "killed": len(killed), "survived": len(survived),
        "equivalent": len(equivalent),
        "no_tests": sum(1 for s in status.values() if s == "no tests"),
        "timeouts": sum(1 for s in status.values() if s == "timeout"),
        "kill_rate": round(len(killed) / counted, 4) if counted else None,
        "equivalent_mutants": equivalent,
        "survivors": {n: {"status": status[n], "diff": _short_diff(diffs.get(n, ""))}
                      for n in survived},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _short_diff(text: str) -> list[str]:
    """The changed lines of a mutant's diff, after the hunk header that places them."""
    keep = [ln for ln in text.splitlines() if ln.startswith(("@@", "+", "-"))
            and not ln.startswith(("+++", "---"))]
    return keep[:7]


def _write(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "mutation.json"
    path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    lines = [f"# Mutation testing ({results['tool']})", "",
             f"Commit {results['commit']}, {results['machine']}. Kill rate = killed / (mutants -"
             " equivalent). Made by `benchmarks/mutation.py`; equivalent mutants and their "
             "reasons: `benchmarks/mutation_equivalent.txt`.", "",
             "| module | mutants | killed | survived | equivalent | kill rate | sampled | "
             "load (1 min) | s |", "|---|---|---|---|---|---|---|---|---|"]
    for m in results["modules"].values():
        rate = "-" if m["kill_rate"] is None else f"{100 * m['kill_rate']:.1f} %"
        smp = (f"{m['sample']['n']} of {m['sample']['of']} (seed {m['sample']['seed']})"
               if m["sampled"] else "whole" + (" (ORT placement functions)"
                                               if m.get("functions") else ""))
        lines.append(f"| {m['module']} | {m['mutants']} | {m['killed']} | {m['survived']} | "
                     f"{m['equivalent']} | {rate} | {smp} | {m.get('load_1min', '-')} | "
                     f"{m['seconds']} |")
    surv = [(m["module"], n, s) for m in results["modules"].values()
            for n, s in m["survivors"].items()]
    if surv:
        lines += ["", "## Survivors", ""]
        for _mod, n, s in surv:
            lines.append(f"- `{n}` ({s['status']}): " + " / ".join(
                f"`{d.strip()[:110]}`" for d in s["diff"][:3]))
    (RESULTS / "mutation.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="paths under xception_trt/ (default: all)")
    ap.add_argument("--sample", type=int, default=None,
                    help=f"mutants per module, drawn with the seed (default "
                         f"{DEFAULT_SAMPLE}; 0: whole modules)")
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--max-children", type=int, default=2, help="parallel mutant runs")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the temporary copies go (outside the repository)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies")
    ap.add_argument("--list", action="store_true", help="print the module -> tests mapping")
    args = ap.parse_args(argv)
    if args.list:
        for mod, tests in MODULES.items():
            print(f"xception_trt/{mod}: {' '.join(tests)}")
        return 0
    mods = [m.removeprefix("xception_trt/") for m in args.modules] or list(MODULES)
    unknown = [m for m in mods if m not in MODULES]
    if unknown:
        print(f"error: no test mapping for {', '.join(unknown)}; add it to MODULES in "
              f"{Path(__file__).name}", file=sys.stderr)
        return 2
    if ROOT in args.work.resolve().parents or args.work.resolve() == ROOT:
        print("error: --work must be outside the repository", file=sys.stderr)
        return 2
    from importlib.metadata import version

    path = RESULTS / "mutation.json"
    results = json.loads(path.read_text()) if path.is_file() else {"modules": {}}
    results.update(tool=f"mutmut {version('mutmut')}", commit=_git("rev-parse", "HEAD"),
                   dirty=bool(_git("status", "--porcelain", "--untracked-files=no")),
                   machine=f"{platform.node()} ({os.cpu_count()} CPUs)",
                   date=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # one snapshot of the working tree for every module: edits made while it runs do not mix in
    snapshot = Path(tempfile.mkdtemp(prefix="mutation-snapshot-", dir=args.work))
    try:
        _copy_tree(snapshot)
        _run_all(mods, results, snapshot, args)
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
    return 0


def _run_all(mods: list[str], results: dict, snapshot: Path, args: argparse.Namespace) -> None:
    for mod in mods:
        load = os.getloadavg()[0]
        sample = DEFAULT_SAMPLE if args.sample is None else (args.sample or None)
        print(f"{mod}: running mutmut ...", flush=True)
        r = run_module(mod, snapshot=snapshot, work_root=args.work, sample=sample, seed=args.seed,
                       max_children=args.max_children, keep=args.keep)
        r["load_1min"] = round(load, 2)
        r["commit"] = _git("rev-parse", "HEAD")  # the run's tests: the working tree at start
        r["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        results["modules"][r["module"]] = r
        rate = "-" if r["kill_rate"] is None else f"{100 * r['kill_rate']:.1f} %"
        print(f"  {r['mutants']} mutants, {r['killed']} killed, {r['survived']} survived, "
              f"{r['equivalent']} equivalent: kill rate {rate} ({r['seconds']} s)", flush=True)
        for n, s in r["survivors"].items():
            print(f"    survived: {n}: {' | '.join(s['diff'][:3])}")
        _write(results)


if __name__ == "__main__":
    sys.exit(main())
