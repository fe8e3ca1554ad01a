"""What each install brings: the JetPack 6 resolution check and the measured footprints.

    python benchmarks/install_footprint.py resolve [--extras build] [--check]
        Resolves `pip install xception-trt[extras]` for JetPack 6 (Python 3.10, manylinux
        aarch64, glibc 2.35) with pip's dry run on the wheel built from this checkout, lists
        the packages, and with --check exits 1 when torch, triton or any NVIDIA CUDA wheel
        (nvidia-*) is among them (what the core install must never pull onto a Jetson).

    python benchmarks/install_footprint.py measure [--out benchmarks/results/install_footprint.json]
        Installs the core and the [build] extra into fresh virtual environments on this machine
        (torch==2.13.0 CPU first, as README does), and records each one's size on disk, its
        package count and the install time; [dev] is measured as the site-packages of the
        running interpreter's environment (the project's dev venv: installing it afresh takes
        minutes and the same packages). Also the import time of the runtime API in the core
        environment (median of 7 fresh interpreters, minus a bare interpreter's start) and the
        load average, since the machine is shared.

Both need the package registry; the tests run `resolve --check` and a core-only environment
(tests/test_install.py) and skip with the reason when the registry cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: JetPack 6: Ubuntu 22.04 (glibc 2.35), Python 3.10, aarch64. pip does not widen a --platform
#: tag to older glibc versions, so every tag the device accepts is listed.
JETPACK6 = ["--python-version", "3.10", "--implementation", "cp", "--only-binary=:all:"] + [
    arg for v in range(35, 16, -1) for arg in ("--platform", f"manylinux_2_{v}_aarch64")
] + ["--platform", "manylinux2014_aarch64"]
#: nvidia-* packages that are no CUDA library: ModelOpt (Python), the NVML binding.
_NOT_CUDA_LIBS = {"nvidia-modelopt", "nvidia-ml-py"}
#: The runtime API a device imports.
RUNTIME_IMPORT = ("import xception_trt.classifier, xception_trt.runners, "
                  "xception_trt.trt.runtime")


def clean_env() -> dict[str, str]:
    """This environment without what would let another environment see this checkout or
    this venv (PYTHONPATH, PYTHONHOME, VIRTUAL_ENV); pip's own settings stay."""
    return {k: v for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}}


def _pip(python: str | Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True,
                          timeout=timeout, env=clean_env(), cwd=tempfile.gettempdir())


def registry_problem() -> str | None:
    """``None`` when pip can download from the package registry, else why not (one line)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = _pip(sys.executable, "download", "--no-deps", "--only-binary=:all:", "-d",
                        tmp, *JETPACK6, "tqdm", timeout=120)
        except subprocess.TimeoutExpired:
            return "pip could not reach the package registry in 120 s"
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:]
        return "pip cannot download from the package registry: " + (tail[0] if tail else "?")
    return None


def build_wheel(dest: Path) -> Path:
    """The wheel of this checkout, built from a copy (the build leaves nothing in the tree)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, src / name)
        shutil.copytree(ROOT / "xception_trt", src / "xception_trt",
                        ignore=shutil.ignore_patterns("__pycache__"))
        # No build isolation when pyproject's setuptools is at hand: no download, a second
        # instead of ten.
        try:
            from importlib.metadata import version

            recent = int(version("setuptools").split(".")[0]) >= 68
        except Exception:  # noqa: BLE001 - not installed or an odd version: isolate
            recent = False
        isolation = ["--no-build-isolation"] if recent else []
        proc = _pip(sys.executable, "wheel", "-q", "--no-deps", *isolation, "-w", str(dest),
                    str(src))
        if proc.returncode != 0:
            raise RuntimeError(f"building the wheel failed:\n{proc.stderr[-3000:]}")
    return next(dest.glob("xception_trt-*.whl"))


def resolve_jetpack6(wheel: Path, extras: str = "") -> list[dict]:
    """What `pip install` of the wheel (with ``extras``, e.g. ``build``) would install on
    JetPack 6: [{"name", "version", "file"}], from pip's dry-run report."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        req = f"{wheel}[{extras}]" if extras else str(wheel)
        proc = _pip(sys.executable, "install", "--dry-run", "--ignore-installed", "-q",
                    "--report", str(report), "--target", str(Path(tmp) / "t"), *JETPACK6, req)
        if proc.returncode != 0:
            raise RuntimeError(f"pip cannot resolve {req} for JetPack 6:\n{proc.stderr[-3000:]}")
        doc = json.loads(report.read_text())
    return [{"name": i["metadata"]["name"], "version": i["metadata"]["version"],
             "file": i["download_info"]["url"].rsplit("/", 1)[-1]} for i in doc["install"]]


def forbidden_on_device(packages: list[dict]) -> list[str]:
    """The packages a Jetson must not get from PyPI: torch, triton, TensorRT and the NVIDIA
    CUDA library wheels (``nvidia-*``: ``-cu12`` / ``-cu13`` or unsuffixed)."""
    def bad(name: str) -> bool:
        n = name.lower().replace("_", "-")
        return (n in {"torch", "triton", "tensorrt", "onnxruntime-gpu"}
                or (n.startswith("nvidia-") and n not in _NOT_CUDA_LIBS))
    return sorted(p["name"] for p in packages if bad(p["name"]))


def make_venv(path: Path, wheel: Path, extras: str = "", *,
              first: tuple[str, ...] = ()) -> tuple[Path, float]:
    """A fresh venv with the wheel (and ``extras``) installed; returns its python and the
    install time in seconds (``first`` is installed before, as README installs torch)."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, env=clean_env())
    python = path / "bin" / "python"
    t0 = time.perf_counter()
    for reqs in ((list(first),) if first else ()) + ([f"{wheel}[{extras}]" if extras
                                                      else str(wheel)],):
        proc = _pip(python, "install", "-q", *reqs, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(reqs)} failed:\n{proc.stderr[-3000:]}")
    return python, time.perf_counter() - t0


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                          "['purelib'])"], capture_output=True, text=True, check=True,
                         env=clean_env())
    return Path(out.stdout.strip())


def footprint(python: Path) -> dict:
    """Size on disk (MiB) and distribution count of an environment's site-packages."""
    sp = site_packages(python)
    size = sum(f.stat().st_size for f in sp.rglob("*") if f.is_file() and not f.is_symlink())
    dists = [d for d in sp.iterdir() if d.name.endswith(".dist-info")]
    return {"site_packages_mib": round(size / 2**20, 1), "distributions": len(dists)}


def import_ms(python: Path, statement: str, *, runs: int = 7) -> float:
    """Median wall time (ms) of `python -c statement` minus a bare interpreter's start."""
    def median(code: str) -> float:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([str(python), "-c", code], check=True, cwd=tempfile.gettempdir(),
                           env=clean_env())
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    return round((median(statement) - median("pass")) * 1000, 1)


def measure(out: Path) -> dict:
    load_before = os.getloadavg()
    result: dict = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": [round(x, 2) for x in load_before]}
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp) / "dist")
        result["jetpack6"] = {}
        for extras in ("", "build"):
            packages = resolve_jetpack6(wheel, extras)
            result["jetpack6"][extras or "core"] = {
                "packages": len(packages), "forbidden": forbidden_on_device(packages),
                "names": sorted(p["name"] for p in packages)}
        subprocess.run([sys.executable, "-m", "venv", str(Path(tmp) / "bare")], check=True,
                       env=clean_env())
        bare = footprint(Path(tmp) / "bare" / "bin" / "python")
        result["bare_venv"] = {**bare, "note": "what `python -m venv` alone puts in "
                               "site-packages (pip, setuptools); 'added_mib' excludes it"}

        def added(fp: dict) -> dict:
            return {**fp, "added_mib": round(fp["site_packages_mib"]
                                             - bare["site_packages_mib"], 1)}

        core, t_core = make_venv(Path(tmp) / "core", wheel)
        result["core"] = {**added(footprint(core)), "install_s": round(t_core, 1),
                          "runtime_import_ms": import_ms(core, RUNTIME_IMPORT),
                          "runtime_import": RUNTIME_IMPORT}
        shutil.rmtree(Path(tmp) / "core")
        build, t_build = make_venv(Path(tmp) / "build", wheel, "build",
                                   first=("torch==2.13.0",))
        result["build"] = {**added(footprint(build)), "install_s": round(t_build, 1),
                           "note": "torch==2.13.0 (CPU wheel) installed first, as README does"}
        result["dev"] = {**added(footprint(Path(sys.executable))),
                         "note": f"measured as the site-packages of {sys.prefix} (the [dev] "
                                 "venv this script ran in), not a fresh install"}
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("resolve", help="the JetPack 6 resolution of an install")
    r.add_argument("--extras", default="", help="extras to resolve too, e.g. build")
    r.add_argument("--check", action="store_true",
                   help="exit 1 if torch, triton or an nvidia-* CUDA wheel is resolved")
    r.add_argument("--json", action="store_true", help="print the packages as JSON")
    m = sub.add_parser("measure", help="install sizes and the runtime import time")
    m.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                   / "install_footprint.json")
    args = parser.parse_args(argv)
    if args.cmd == "resolve":
        with tempfile.TemporaryDirectory() as tmp:
            packages = resolve_jetpack6(build_wheel(Path(tmp)), args.extras)
        bad = forbidden_on_device(packages)
        if args.json:
            print(json.dumps({"packages": packages, "forbidden": bad}, indent=2))
        else:
            what = f"xception-trt[{args.extras}]" if args.extras else "xception-trt"
            print(f"{what} on JetPack 6 (Python 3.10, aarch64): {len(packages)} packages")
            for p in packages:
                print(f"  {p['name']} {p['version']}  ({p['file']})")
            print(f"torch / triton / nvidia-* wheels: {', '.join(bad) or 'none'}")
        return 1 if args.check and bad else 0
    print(json.dumps(measure(args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
